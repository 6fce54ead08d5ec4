/* Tests of the mailbox store (src/store, doc/store.md), both backends. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "proto/pop3.h"
#include "store/mailbox.h"
#include "store/store.h"

/* ---- helpers ---- */

#include "store_testlib.h"

static unsigned char *make_content(size_t len)
{
    unsigned char *p = xmalloc(len ? len : 1);
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(i * 13 + i / 7);
    return p;
}

/* The CRLF size the slow, obvious way: the message as CRLF lines (a bare
 * CR or LF ends a line too, CRLF is one line end), the last line ended. */
static uint64_t ref_crlf(const unsigned char *p, size_t n)
{
    uint64_t out = 0;
    size_t i = 0;
    bool open_line = false;
    while (i < n) {
        if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') {
            out += 2;
            i += 2;
            open_line = false;
        } else if (p[i] == '\r' || p[i] == '\n') {
            out += 2;
            i++;
            open_line = false;
        } else {
            out++;
            i++;
            open_line = true;
        }
    }
    return open_line ? out + 2 : out;
}

static const char PREFIX[] = "Return-Path: <s@example.org>\r\n"
                             "Delivered-To: alice@example.org\r\n";

/* ---- Maildir ---- */

TEST(maildir_deliver_byte_exact)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "mx.example.org");
    size_t len = 300000;
    unsigned char *content = make_content(len);
    struct src src = {content, len, 0, 5000, 0, 0};
    char uid[STORE_UID_SIZE];
    CHECK(store_deliver(s, "alice@example.org", NULL, PREFIX, strlen(PREFIX),
                        src_read, &src, uid, sizeof(uid)) == 0);

    char mbox[4096], path[8192], name[512];
    CHECK(store_mailbox_path(s, "alice@example.org", mbox, sizeof(mbox)) == 0);
    snprintf(path, sizeof(path), "%s/example.org/alice", root);
    CHECK_EQ_STR(mbox, path);
    snprintf(path, sizeof(path), "%s/new", mbox);
    CHECK_EQ_INT(dir_list(path, name, sizeof(name)), 1);
    CHECK_EQ_STR(name, uid);
    snprintf(path, sizeof(path), "%s/tmp", mbox);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 0);
    snprintf(path, sizeof(path), "%s/cur", mbox);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 0);

    /* Name: <secs>.M<usec>P<pid>Q<n>R<16 hex>.<host>,S=<size>,W=<vsize> */
    size_t total = strlen(PREFIX) + len;
    char want_tail[128];
    unsigned char *whole = xmalloc(total);
    memcpy(whole, PREFIX, strlen(PREFIX));
    memcpy(whole + strlen(PREFIX), content, len);
    snprintf(want_tail, sizeof(want_tail), ".mx.example.org,S=%zu,W=%llu", total,
             (unsigned long long)ref_crlf(whole, total));
    free(whole);
    CHECK(strlen(uid) > strlen(want_tail) &&
          strcmp(uid + strlen(uid) - strlen(want_tail), want_tail) == 0);
    CHECK(strstr(uid, ".M") != NULL && strstr(uid, "P") != NULL &&
          strstr(uid, "Q") != NULL && strstr(uid, "R") != NULL);
    CHECK(strchr(uid, ':') == NULL && strchr(uid, '/') == NULL);

    snprintf(path, sizeof(path), "%s/new/%s", mbox, uid);
    struct buf f;
    CHECK(fs_read_file(path, 1 << 20, &f) == 0);
    CHECK(f.len == total);
    CHECK(memcmp(f.data, PREFIX, strlen(PREFIX)) == 0);
    CHECK(memcmp(f.data + strlen(PREFIX), content, len) == 0);
    buf_free(&f);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(stat(mbox, &st) == 0 && (st.st_mode & 0777) == 0700);

    /* Empty content, no prefix: S=0; uid_r may be NULL. */
    src = (struct src){content, 0, 0, 1, 0, 0};
    CHECK(store_deliver(s, "alice@example.org", "INBOX", NULL, 0, src_read,
                        &src, NULL, 0) == 0);
    snprintf(path, sizeof(path), "%s/new", mbox);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 2);
    free(content);
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(maildir_invalid_names)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    static const char *const bad[] = {
        "../x@d", "a/b@d", ".x@d", "x@d/e", "", "x", "@d", "x@", "x@@d",
        "x@d@e", "X@d", "x@D", "x\x01@d", "x@d\x7f", "x\r\n@d", "x@.d",
        "x@d..e", "x..y@d", "x@d/../../etc", "x y@d", "x@d\xc3\xa9",
        "x%y@d", "x!y@d", "x@[127.0.0.1]", "x:y@d", "x@d:25", "x\\y@d",
        ("0123456789012345678901234567890123456789012345678901234567890123"
         "4@d"), /* 65 */
    };
    char uid[STORE_UID_SIZE], out[4096];
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        struct src src = {(const unsigned char *)"x", 1, 0, 1, 0, 0};
        errno = 0;
        CHECK(store_deliver(s, bad[i], NULL, "", 0, src_read, &src, uid,
                            sizeof(uid)) == -1);
        CHECK(errno == EINVAL);
        CHECK(store_mailbox_path(s, bad[i], out, sizeof(out)) == -1);
        CHECK(store_clean_tmp(s, bad[i], NULL, 0) == -1);
    }
    /* A 256-byte domain. */
    char longd[300];
    memset(longd, 'a', sizeof(longd));
    memcpy(longd, "x@", 2);
    longd[2 + 256] = '\0';
    struct src src = {(const unsigned char *)"x", 1, 0, 1, 0, 0};
    CHECK(store_deliver(s, longd, NULL, "", 0, src_read, &src, uid,
                        sizeof(uid)) == -1 && errno == EINVAL);
    CHECK(store_deliver(s, NULL, NULL, "", 0, src_read, &src, uid,
                        sizeof(uid)) == -1 && errno == EINVAL);
    /* Nothing was created anywhere. */
    CHECK_EQ_INT(dir_list(root, NULL, 0), 0);
    /* The allowed characters and lengths. */
    char okl[80];
    memset(okl, 'l', 64);
    snprintf(okl + 64, sizeof(okl) - 64, "@d");
    static const char *const good[] = {"a.b+c=d_e-f@x-y.example.org", "0@1"};
    for (size_t i = 0; i < 3; i++) {
        src = (struct src){(const unsigned char *)"x", 1, 0, 1, 0, 0};
        CHECK(store_deliver(s, i < 2 ? good[i] : okl, NULL, "", 0, src_read,
                            &src, uid, sizeof(uid)) == 0);
    }
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(maildir_folders)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[STORE_UID_SIZE], mbox[4096], path[8192];
    struct src src = {(const unsigned char *)"m\r\n", 3, 0, 3, 0, 0};
    CHECK(store_deliver(s, "bob@d.org", "Sent", "", 0, src_read, &src, uid,
                        sizeof(uid)) == 0);
    CHECK(store_mailbox_path(s, "bob@d.org", mbox, sizeof(mbox)) == 0);
    snprintf(path, sizeof(path), "%s/.Sent/new/%s", mbox, uid);
    CHECK(access(path, F_OK) == 0);
    snprintf(path, sizeof(path), "%s/.Sent/maildirfolder", mbox);
    CHECK(access(path, F_OK) == 0);
    static const char *const subs[] = {"cur", "new", "tmp", ".Sent/cur",
                                       ".Sent/tmp"};
    for (size_t i = 0; i < 5; i++) {
        snprintf(path, sizeof(path), "%s/%s", mbox, subs[i]);
        struct stat st;
        CHECK(stat(path, &st) == 0 && S_ISDIR(st.st_mode));
    }
    /* The INBOX is untouched by a folder delivery. */
    snprintf(path, sizeof(path), "%s/new", mbox);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 0);

    src.off = 0;
    CHECK(store_deliver(s, "bob@d.org", "Lists.estafeta dev_1", "", 0, src_read,
                        &src, uid, sizeof(uid)) == 0);
    snprintf(path, sizeof(path), "%s/.Lists.estafeta dev_1/new/%s", mbox, uid);
    CHECK(access(path, F_OK) == 0);
    src.off = 0;
    CHECK(store_deliver(s, "bob@d.org", "inbox", "", 0, src_read, &src, uid,
                        sizeof(uid)) == 0);
    snprintf(path, sizeof(path), "%s/new/%s", mbox, uid);
    CHECK(access(path, F_OK) == 0);

    static const char *const bad[] = {"../x", "a/b", ".x", "x.", "a..b", "",
                                      "x\n", "a\x01", "caf\xc3\xa9", "a:b",
                                      "a\\b", "*", "%"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        src.off = 0;
        errno = 0;
        CHECK(store_deliver(s, "bob@d.org", bad[i], "", 0, src_read, &src, uid,
                            sizeof(uid)) == -1);
        CHECK(errno == EINVAL);
    }
    /* Only .Sent and .Lists.estafeta dev_1 were made next to cur/new/tmp. */
    CHECK_EQ_INT(dir_list(mbox, NULL, 0), 5);
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(maildir_read_failure_leaves_nothing)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    unsigned char *content = make_content(200000);
    struct src src = {content, 200000, 0, 4096, 100000, 1};
    char uid[STORE_UID_SIZE], mbox[4096], path[8192];
    errno = 0;
    CHECK(store_deliver(s, "c@d", NULL, PREFIX, strlen(PREFIX), src_read, &src,
                        uid, sizeof(uid)) == -1);
    CHECK(errno == EIO);
    CHECK(store_mailbox_path(s, "c@d", mbox, sizeof(mbox)) == 0);
    snprintf(path, sizeof(path), "%s/new", mbox);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 0);
    snprintf(path, sizeof(path), "%s/tmp", mbox);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 0);
    /* Too small a uid buffer: refused before anything is written. */
    src = (struct src){content, 10, 0, 10, 0, 0};
    CHECK(store_deliver(s, "c@d", NULL, "", 0, src_read, &src, uid, 20) == -1);
    CHECK(errno == ERANGE);
    CHECK_EQ_INT(src.off, 0); /* not even read */
    snprintf(path, sizeof(path), "%s/new", mbox);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 0);
    free(content);
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(maildir_hostname_escaped)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "evil/host:1,x\n");
    char uid[STORE_UID_SIZE];
    struct src src = {(const unsigned char *)"abc", 3, 0, 3, 0, 0};
    CHECK(store_deliver(s, "e@d", NULL, "", 0, src_read, &src, uid,
                        sizeof(uid)) == 0);
    CHECK(strstr(uid, ".evil\\057host\\0721\\054x\\012,S=3") != NULL);
    CHECK(strchr(uid, '/') == NULL && strchr(uid, ':') == NULL);
    store_free(s);
    /* Empty hostname: the system's, still one clean name. */
    s = store_maildir_new(root, "");
    src.off = 0;
    CHECK(store_deliver(s, "e@d", NULL, "", 0, src_read, &src, uid,
                        sizeof(uid)) == 0);
    CHECK(strchr(uid, '/') == NULL && strstr(uid, ",S=3") != NULL);
    store_free(s);
    /* A very long hostname is cut so the name stays a valid file name. */
    char longh[1000];
    memset(longh, 'h', sizeof(longh) - 1);
    longh[sizeof(longh) - 1] = '\0';
    s = store_maildir_new(root, longh);
    src.off = 0;
    CHECK(store_deliver(s, "e@d", NULL, "", 0, src_read, &src, uid,
                        sizeof(uid)) == 0);
    CHECK(strlen(uid) < 255);
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(maildir_refuses_symlinks)
{
    char *root = make_tmpdir();
    char *other = make_tmpdir();
    if (root == NULL || other == NULL)
        return;
    char path[4096];
    snprintf(path, sizeof(path), "%s/d", root);
    CHECK(mkdir(path, 0700) == 0);
    snprintf(path, sizeof(path), "%s/d/evil", root);
    CHECK(symlink(other, path) == 0);
    snprintf(path, sizeof(path), "%s/link.org", root);
    CHECK(symlink(other, path) == 0);
    struct store *s = store_maildir_new(root, "h");
    char uid[STORE_UID_SIZE];
    struct src src = {(const unsigned char *)"abc", 3, 0, 3, 0, 0};
    CHECK(store_deliver(s, "evil@d", NULL, "", 0, src_read, &src, uid,
                        sizeof(uid)) == -1);
    src.off = 0;
    CHECK(store_deliver(s, "x@link.org", NULL, "", 0, src_read, &src, uid,
                        sizeof(uid)) == -1);
    CHECK_EQ_INT(dir_list(other, NULL, 0), 0);
    store_free(s);
    rm_rf(root);
    rm_rf(other);
    free(root);
    free(other);
}

struct thr {
    struct store *s;
    int ok;
};

static void *thr_main(void *arg)
{
    struct thr *t = arg;
    for (int i = 0; i < 25; i++) {
        char uid[STORE_UID_SIZE];
        struct src src = {(const unsigned char *)"same\r\n", 6, 0, 6, 0, 0};
        if (store_deliver(t->s, "many@d", i % 2 ? "Box" : NULL, "", 0, src_read,
                          &src, uid, sizeof(uid)) == 0)
            t->ok++;
    }
    return NULL;
}

TEST(maildir_concurrent)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    pthread_t th[4];
    struct thr t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = (struct thr){s, 0};
        pthread_create(&th[i], NULL, thr_main, &t[i]);
    }
    int ok = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ok += t[i].ok;
    }
    CHECK_EQ_INT(ok, 100);
    char mbox[4096], path[8192];
    store_mailbox_path(s, "many@d", mbox, sizeof(mbox));
    snprintf(path, sizeof(path), "%s/new", mbox);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 52);  /* 4 threads x 13 */
    snprintf(path, sizeof(path), "%s/.Box/new", mbox);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 48);
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(maildir_clean_tmp)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    CHECK(store_clean_tmp(s, "t@d", NULL, 3600) == 0); /* no mailbox yet */
    char uid[STORE_UID_SIZE], mbox[4096], path[8192];
    struct src src = {(const unsigned char *)"abc", 3, 0, 3, 0, 0};
    CHECK(store_deliver(s, "t@d", NULL, "", 0, src_read, &src, uid,
                        sizeof(uid)) == 0);
    store_mailbox_path(s, "t@d", mbox, sizeof(mbox));
    snprintf(path, sizeof(path), "%s/tmp/old", mbox);
    int fd = open(path, O_WRONLY | O_CREAT, 0600);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    struct timespec times[2] = {{time(NULL) - 200000, 0}, {time(NULL) - 200000, 0}};
    CHECK(utimensat(AT_FDCWD, path, times, 0) == 0);
    snprintf(path, sizeof(path), "%s/tmp/fresh", mbox);
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    if (fd >= 0)
        close(fd);
    CHECK_EQ_INT(store_clean_tmp(s, "t@d", NULL, 36 * 3600), 1);
    snprintf(path, sizeof(path), "%s/tmp", mbox);
    char first[256];
    CHECK_EQ_INT(dir_list(path, first, sizeof(first)), 1);
    CHECK_EQ_STR(first, "fresh");
    snprintf(path, sizeof(path), "%s/new", mbox);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 1); /* delivered mail untouched */
    store_free(s);
    rm_rf(root);
    free(root);
}

/* ---- the index at delivery (doc/store.md "UIDs at delivery") ---- */

/* The rows of an index as "uid:uniq;..." and its uidnext, read directly. */
TEST(maildir_delivery_assigns_uid)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[2][STORE_UID_SIZE], mbox[4096], path[8192], dump[2048], want[1024];
    CHECK(store_user_create(s, "u@d") == 0);
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, "u@d", NULL, 0, &mb) == 0); /* makes the index */
    store_mailbox_close(mb);
    for (int i = 0; i < 2; i++) {
        struct src src = {(const unsigned char *)"abc\r\n", 5, 0, 5, 0, 0};
        CHECK(store_deliver(s, "u@d", NULL, "", 0, src_read, &src, uid[i],
                            sizeof(uid[i])) == 0);
    }
    /* The rows are there before any reader looked. */
    CHECK(store_mailbox_path(s, "u@d", mbox, sizeof(mbox)) == 0);
    snprintf(path, sizeof(path), "%s/estafeta.index", mbox);
    long next = 0;
    CHECK(index_dump(path, dump, sizeof(dump), &next) == 0);
    snprintf(want, sizeof(want), "1:%s;2:%s;", uid[0], uid[1]);
    CHECK_EQ_STR(dump, want);
    CHECK_EQ_INT(next, 3);
    /* A folder without an index yet: delivery leaves it to the first open. */
    struct src src = {(const unsigned char *)"abc\r\n", 5, 0, 5, 0, 0};
    CHECK(store_deliver(s, "u@d", "Sent", "", 0, src_read, &src, uid[0],
                        sizeof(uid[0])) == 0);
    snprintf(path, sizeof(path), "%s/.Sent/estafeta.index", mbox);
    CHECK(access(path, F_OK) == -1);
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(maildir_delivery_survives_bad_index)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[STORE_UID_SIZE], mbox[4096], path[8192];
    struct src src = {(const unsigned char *)"abc\r\n", 5, 0, 5, 0, 0};
    CHECK(store_deliver(s, "u@d", NULL, "", 0, src_read, &src, uid,
                        sizeof(uid)) == 0);
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, "u@d", NULL, 0, &mb) == 0);
    store_mailbox_close(mb);
    CHECK(store_mailbox_path(s, "u@d", mbox, sizeof(mbox)) == 0);
    snprintf(path, sizeof(path), "%s/estafeta.index", mbox);
    CHECK(fs_write_file_atomic(path, "garbage, not SQLite\n", 20, 0600) == 0);
    /* The index cannot take the row: the delivery succeeds anyway. */
    src.off = 0;
    CHECK(store_deliver(s, "u@d", NULL, "", 0, src_read, &src, uid,
                        sizeof(uid)) == 0);
    snprintf(path, sizeof(path), "%s/new/%s", mbox, uid);
    CHECK(access(path, F_OK) == 0);
    /* ...and the message gets its UID when the mailbox is next opened. */
    mb = NULL;
    CHECK(store_mailbox_open(s, "u@d", NULL, 0, &mb) == 0);
    if (mb != NULL) {
        CHECK_EQ_INT(store_mailbox_count(mb), 2);
        CHECK_EQ_STR(store_mailbox_msg(mb, 1)->unique, uid);
        CHECK_EQ_INT(store_mailbox_msg(mb, 1)->uid, 2);
        store_mailbox_close(mb);
    }
    store_free(s);
    rm_rf(root);
    free(root);
}

/* ---- in memory ---- */

TEST(mem_backend)
{
    struct store *s = store_mem_new();
    size_t len = 70000, glen = 0;
    unsigned char *content = make_content(len);
    struct src src = {content, len, 0, 999, 0, 0};
    char uid[STORE_UID_SIZE];
    CHECK(store_deliver(s, "alice@example.org", NULL, PREFIX, strlen(PREFIX),
                        src_read, &src, uid, sizeof(uid)) == 0);
    CHECK(strstr(uid, ",S=") != NULL);
    CHECK(store_mem_count(s, "alice@example.org") == 1);
    char *got = store_mem_get(s, "alice@example.org", 0, &glen);
    CHECK(got != NULL && glen == strlen(PREFIX) + len);
    if (got != NULL) {
        CHECK(memcmp(got, PREFIX, strlen(PREFIX)) == 0);
        CHECK(memcmp(got + strlen(PREFIX), content, len) == 0);
    }
    free(got);
    CHECK(store_mem_get(s, "alice@example.org", 1, &glen) == NULL);
    CHECK(store_mem_get(s, "nobody@example.org", 0, &glen) == NULL);

    /* Folders are kept apart; "INBOX" is the INBOX. */
    src.off = 0;
    CHECK(store_deliver(s, "alice@example.org", "Sent", "", 0, src_read, &src,
                        uid, sizeof(uid)) == 0);
    src.off = 0;
    CHECK(store_deliver(s, "alice@example.org", "INBOX", "", 0, src_read, &src,
                        uid, sizeof(uid)) == 0);
    CHECK(store_mem_count(s, "alice@example.org") == 2);
    CHECK(store_mem_count(s, "alice@example.org/Sent") == 1);

    /* A failing read keeps nothing. */
    src = (struct src){content, len, 0, 1000, 5000, 1};
    CHECK(store_deliver(s, "alice@example.org", NULL, "", 0, src_read, &src,
                        uid, sizeof(uid)) == -1);
    CHECK(errno == EIO);
    CHECK(store_mem_count(s, "alice@example.org") == 2);

    /* Same validation as the Maildir backend. */
    src = (struct src){content, 1, 0, 1, 0, 0};
    CHECK(store_deliver(s, "../x@d", NULL, "", 0, src_read, &src, uid,
                        sizeof(uid)) == -1 && errno == EINVAL);
    CHECK(store_deliver(s, "x@d", "../up", "", 0, src_read, &src, uid,
                        sizeof(uid)) == -1 && errno == EINVAL);
    char out[256];
    CHECK(store_mailbox_path(s, "x@d", out, sizeof(out)) == -1 && errno == ENOTSUP);
    CHECK(store_mailbox_path(s, "x/@d", out, sizeof(out)) == -1 && errno == EINVAL);
    CHECK(store_clean_tmp(s, "x@d", NULL, 0) == 0);

    /* The quota hook: 0 limits are unlimited. */
    CHECK(store_deliver_quota(s, "alice@example.org", 0, 0, SIZE_MAX) == 0);
    CHECK(store_deliver_quota(s, "alice@example.org", 0, 4, 1) == 0); /* 3 held */
    CHECK(store_deliver_quota(s, "alice@example.org", 0, 3, 1) == -1 &&
          errno == EDQUOT);

    /* The inspection functions refuse a store of another backend. */
    struct store *md = store_maildir_new("/nonexistent-estafeta", "h");
    CHECK(store_mem_count(md, "alice@example.org") == 0);
    CHECK(store_mem_get(md, "alice@example.org", 0, &glen) == NULL);
    store_free(md);
    free(content);
    store_free(s);
}

/* ---- sizes as CRLF text ---- */

/* The octets a POP3 client receives for RETR, unstuffed: the stuffing
 * writer's output without the final ".\r\n" and the stuffed dots. */
static uint64_t pop3_octets(const unsigned char *p, size_t n)
{
    struct pop3_stuff st;
    pop3_stuff_init(&st);
    size_t cap = 2 * n + POP3_STUFF_OUT_SLACK + POP3_STUFF_FINISH_MAX + 8;
    char *out = xmalloc(cap);
    size_t olen = 0, used = 0;
    pop3_stuff_feed(&st, (const char *)p, n, out, &olen, &used);
    olen += pop3_stuff_finish(&st, out + olen);
    uint64_t octets = olen - 3, dots = 0;
    bool bol = true;
    for (size_t i = 0; i + 3 < olen; i++) {
        if (bol && out[i] == '.')
            dots++;
        bol = out[i] == '\n';
    }
    free(out);
    return octets - dots;
}

TEST(crlf_size)
{
    static const struct {
        const char *in;
        uint64_t want;
    } cases[] = {
        {"", 0},
        {"a", 3},
        {"a\r\n", 3},
        {"a\n", 3},
        {"a\r", 3},
        {"\r\n", 2},
        {"\n\n", 4},
        {"\r\r", 4},
        {"\n\r", 4},
        {"\r\n\r\n", 4},
        {"x\r.\r\n", 6},
        {"Subject: lf\n\nline\n.dot\n", 27},
        {"a\rb\r\n\r", 8},
        {"no end", 8},
        {".", 3},
        {"..\n.\r\n", 7},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        const char *in = cases[k].in;
        size_t n = strlen(in);
        /* Split at every point (and byte by byte): the same answer. */
        for (size_t cut = 0; cut <= n; cut++) {
            struct store_crlf c;
            store_crlf_init(&c);
            store_crlf_feed(&c, in, cut);
            store_crlf_feed(&c, in + cut, n - cut);
            CHECK_EQ_INT(store_crlf_finish(&c), cases[k].want);
        }
        struct store_crlf c;
        store_crlf_init(&c);
        for (size_t i = 0; i < n; i++)
            store_crlf_feed(&c, in + i, 1);
        CHECK_EQ_INT(store_crlf_finish(&c), cases[k].want);
        CHECK_EQ_INT(ref_crlf((const unsigned char *)in, n), cases[k].want);
        CHECK_EQ_INT(pop3_octets((const unsigned char *)in, n), cases[k].want);
    }
    /* Hostile mixes of CR, LF, dots and other octets: the counter, the
     * reference and what the POP3 writer sends always agree. */
    unsigned seed = 12345;
    static const char alphabet[] = "\r\n.a\0";
    for (int round = 0; round < 2000; round++) {
        unsigned char buf[64];
        size_t n = (size_t)(round % 64);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = (unsigned char)alphabet[(seed >> 16) % 5];
        }
        struct store_crlf c;
        store_crlf_init(&c);
        size_t cut = n ? (size_t)(seed % n) : 0;
        store_crlf_feed(&c, buf, cut);
        store_crlf_feed(&c, buf + cut, n - cut);
        uint64_t got = store_crlf_finish(&c);
        CHECK_EQ_INT(got, ref_crlf(buf, n));
        CHECK_EQ_INT(got, pop3_octets(buf, n));
    }
    /* From a descriptor. */
    char tmpl[] = "/tmp/estafeta-test-crlf-XXXXXX";
    int fd = mkstemp(tmpl);
    CHECK(fd >= 0);
    if (fd >= 0) {
        unlink(tmpl);
        CHECK(write(fd, "a\nb\r\nc", 6) == 6);
        CHECK(lseek(fd, 0, SEEK_SET) == 0);
        uint64_t v = 0;
        CHECK(store_crlf_fd(fd, &v) == 0 && v == 9);
        close(fd);
    }
}

/* ---- quota ---- */

TEST(quota_arithmetic)
{
    CHECK(store_quota_fits(0, 0, 0, 0, UINT64_MAX));
    CHECK(store_quota_fits(10, 0, 20, 0, 10));
    CHECK(!store_quota_fits(10, 0, 20, 0, 11));
    CHECK(!store_quota_fits(30, 0, 20, 0, 0));
    CHECK(!store_quota_fits(UINT64_MAX, 0, UINT64_MAX, 0, 1));
    CHECK(store_quota_fits(0, 4, 0, 5, 1));
    CHECK(!store_quota_fits(0, 5, 0, 5, 1));
    /* 90%, rounded up: 9 of 10, 14 of 15, 90 of 100, 1 of 1. */
    CHECK(!store_quota_high(0, 8, 0, 10));
    CHECK(store_quota_high(0, 9, 0, 10));
    CHECK(!store_quota_high(0, 13, 0, 15));
    CHECK(store_quota_high(0, 14, 0, 15));
    CHECK(!store_quota_high(89, 0, 100, 0));
    CHECK(store_quota_high(90, 0, 100, 0));
    CHECK(store_quota_high(0, 1, 0, 1));
    CHECK(!store_quota_high(0, 0, 0, 1));
    CHECK(!store_quota_high(UINT64_MAX - 1, UINT64_MAX - 1, 0, 0));
    CHECK(store_quota_high(UINT64_MAX, 0, UINT64_MAX, 0));
    CHECK(!store_quota_high(UINT64_MAX / 10 * 8, 0, UINT64_MAX, 0));
    char out[128];
    CHECK_EQ_STR(store_size_format(out, sizeof(out), 0), "0 B");
    CHECK_EQ_STR(store_size_format(out, sizeof(out), 1023), "1023 B");
    CHECK_EQ_STR(store_size_format(out, sizeof(out), 1024), "1 KiB");
    CHECK_EQ_STR(store_size_format(out, sizeof(out), 34 * 1024 + 100), "34 KiB");
    CHECK_EQ_STR(store_size_format(out, sizeof(out), 1536 * 1024), "1.5 MiB");
    CHECK_EQ_STR(store_size_format(out, sizeof(out), 100u << 20), "100 MiB");
    CHECK(strstr(store_size_format(out, sizeof(out), UINT64_MAX), "PiB") != NULL);
    CHECK_EQ_STR(store_quota_describe(out, sizeof(out), 34 * 1024 + 100, 12,
                                      100u << 20, 0),
                 "12 messages, 34 KiB of 100 MiB (0%)");
    CHECK_EQ_STR(store_quota_describe(out, sizeof(out), 95u << 20, 1,
                                      100u << 20, 0),
                 "1 message, 95 MiB of 100 MiB (95%)");
    CHECK_EQ_STR(store_quota_describe(out, sizeof(out), 2048, 950, 100u << 20,
                                      1000),
                 "950 of 1000 messages, 2 KiB of 100 MiB (95%)");
    CHECK_EQ_STR(store_quota_describe(out, sizeof(out), 2048, 5, 0, 10),
                 "5 of 10 messages, 2 KiB (50%)");
    CHECK_EQ_STR(store_quota_describe(out, sizeof(out), 0, 0, 0, 0),
                 "0 messages, 0 B (no quota)");
    CHECK_EQ_STR(store_quota_describe(out, sizeof(out), 3000, 3, 1000, 0),
                 "3 messages, 2.9 KiB of 1000 B (300%)");
    char tiny[8];
    store_quota_describe(tiny, sizeof(tiny), 1, 1, 1, 1);
    CHECK(strlen(tiny) == 7);
}

#define WUSER "wendy@example.org"
#define WARN_SUBJECT "Subject: Your mailbox is almost full\r\n"

/* What the delivery code does: the quota check, then the delivery. 0
 * delivered, 1 refused (EDQUOT), -1 error. */
static int qdeliver(struct store *s, const char *text, uint64_t max_bytes,
                    uint64_t max_messages)
{
    size_t len = strlen(text);
    if (store_deliver_quota(s, WUSER, max_bytes, max_messages, len) < 0)
        return errno == EDQUOT ? 1 : -1;
    struct src src = {(const unsigned char *)text, len, 0, len, 0, 0};
    return store_deliver(s, WUSER, NULL, "", 0, src_read, &src, NULL, 0);
}

/* Warnings in the INBOX (by their Subject), and the last one's text. */
static int count_warnings(struct store *s, char *last, size_t cap)
{
    struct store_mailbox *mb = NULL;
    if (store_mailbox_open(s, WUSER, NULL, 0, &mb) < 0)
        return -1;
    int n = 0;
    for (size_t i = 0; i < store_mailbox_count(mb); i++) {
        int fd;
        char buf[4096];
        if (store_msg_open(mb, i, &fd) < 0)
            continue;
        ssize_t k = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        buf[k > 0 ? k : 0] = '\0';
        if (strstr(buf, WARN_SUBJECT) != NULL) {
            n++;
            if (last != NULL)
                snprintf(last, cap, "%s", buf);
        }
    }
    store_mailbox_close(mb);
    return n;
}

/* Expunges every message that is not a warning. */
static void expunge_all_but_warnings(struct store *s)
{
    struct store_mailbox *mb = NULL;
    if (store_mailbox_open(s, WUSER, NULL, 0, &mb) < 0)
        return;
    size_t idx[64], n = 0;
    for (size_t i = 0; i < store_mailbox_count(mb) && n < 64; i++) {
        int fd;
        char buf[512];
        if (store_msg_open(mb, i, &fd) < 0)
            continue;
        ssize_t k = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        buf[k > 0 ? k : 0] = '\0';
        if (strstr(buf, WARN_SUBJECT) == NULL)
            idx[n++] = i;
    }
    CHECK(store_mailbox_expunge(mb, idx, n) == 0);
    store_mailbox_close(mb);
}

/* The warning arrives once when a delivery takes the user to 90% of a
 * limit, not again while above, and again only after usage was seen
 * below 90%; the state survives a new store (it is on disk). */
static void quota_warning_once(bool maildir)
{
    char *root = maildir ? make_tmpdir() : NULL;
    if (maildir && root == NULL)
        return;
    struct store *s = maildir ? store_maildir_new(root, "h") : store_mem_new();
    char last[4096] = "";
    /* 10 messages allowed: 8 are fine, the 9th crosses 90%. */
    for (int i = 0; i < 8; i++)
        CHECK_EQ_INT(qdeliver(s, "m\r\n", 0, 10), 0);
    CHECK_EQ_INT(count_warnings(s, NULL, 0), 0);
    CHECK_EQ_INT(qdeliver(s, "m\r\n", 0, 10), 0);
    CHECK_EQ_INT(count_warnings(s, last, sizeof(last)), 1);
    CHECK(strstr(last, "Return-Path: <>\r\n") == last);
    CHECK(strstr(last, "From: Mail System <postmaster@example.org>\r\n") != NULL);
    CHECK(strstr(last, "To: <" WUSER ">\r\n") != NULL);
    CHECK(strstr(last, "Auto-Submitted: auto-generated\r\n") != NULL);
    CHECK(strstr(last, "Your mailbox " WUSER " is almost full.") != NULL);
    CHECK(strstr(last, "  Messages: 9 of 10 (90%)\r\n") != NULL);
    CHECK(strstr(last, "empty the Trash") != NULL);
    CHECK(strstr(last, "\r\n\r\n") != NULL && strstr(last, "\n\n") == NULL);
    /* The warning itself is one of the 10: the next is refused, no second
     * warning however often it is tried. */
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(qdeliver(s, "m\r\n", 0, 10), 1);
    if (maildir) {
        store_free(s);
        s = store_maildir_new(root, "h");
    }
    CHECK_EQ_INT(qdeliver(s, "m\r\n", 0, 10), 1);
    CHECK_EQ_INT(count_warnings(s, NULL, 0), 1);
    /* Down to 1 message (the warning): seen below at the next check,
     * which re-arms; crossing again warns again. */
    expunge_all_but_warnings(s);
    for (int i = 0; i < 7; i++)
        CHECK_EQ_INT(qdeliver(s, "m\r\n", 0, 10), 0);
    CHECK_EQ_INT(count_warnings(s, NULL, 0), 1);
    CHECK_EQ_INT(qdeliver(s, "m\r\n", 0, 10), 0); /* 9 + ... */
    CHECK_EQ_INT(count_warnings(s, last, sizeof(last)), 2);
    /* By bytes: 100 octets allowed. Start afresh (below: re-arm). */
    expunge_all_but_warnings(s);
    CHECK_EQ_INT(qdeliver(s, "0123456789\r\n", 10000, 0), 0);
    store_free(s);
    if (maildir) {
        rm_rf(root);
        free(root);
    }
}

TEST(quota_warning_maildir) { quota_warning_once(true); }
TEST(quota_warning_mem) { quota_warning_once(false); }

/* A user already past 90% whose next message is refused (a lowered
 * limit, a big message) is warned at once: nothing else would tell. */
TEST(quota_warning_when_refused)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char big[200];
    memset(big, 'x', sizeof(big) - 3);
    memcpy(big + sizeof(big) - 3, "\r\n", 3);
    CHECK_EQ_INT(qdeliver(s, big, 0, 0), 0); /* 199 octets, no quota */
    CHECK_EQ_INT(count_warnings(s, NULL, 0), 0);
    /* A big message refused while at 50%: no warning (not "almost full"). */
    char huge[300];
    memset(huge, 'y', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    CHECK_EQ_INT(qdeliver(s, huge, 400, 0), 1);
    CHECK_EQ_INT(count_warnings(s, NULL, 0), 0);
    /* The limit lowered below the usage: refused, warned once. */
    char last[4096];
    CHECK_EQ_INT(qdeliver(s, "m\r\n", 200, 0), 1);
    CHECK_EQ_INT(count_warnings(s, last, sizeof(last)), 1);
    CHECK(strstr(last, "  Space:    199 B used of 200 B (99%)\r\n") != NULL);
    CHECK_EQ_INT(qdeliver(s, "m\r\n", 200, 0), 1);
    CHECK_EQ_INT(qdeliver(s, "m\r\n", 150, 0), 1);
    CHECK_EQ_INT(count_warnings(s, NULL, 0), 1);
    /* The state is a file in the INBOX Maildir, ours (no dot: not a
     * folder, not in new/ or cur/: not a message). */
    char path[4096];
    snprintf(path, sizeof(path), "%s/example.org/wendy/estafeta.quota", root);
    struct buf f;
    CHECK(fs_read_file(path, 4096, &f) == 0);
    CHECK(f.len > 0 && strncmp(f.data, "estafeta-quota 1 sent ", 22) == 0);
    buf_free(&f);
    /* Garbage in it counts as armed (a torn write): at worst one more. */
    CHECK(fs_write_file_atomic(path, "\x01garbage", 8, 0600) == 0);
    CHECK_EQ_INT(qdeliver(s, "m\r\n", 200, 0), 1);
    CHECK_EQ_INT(count_warnings(s, NULL, 0), 2);
    store_free(s);
    rm_rf(root);
    free(root);
}

struct qthread {
    struct store *s;
    int result;
};

static void *quota_thread(void *arg)
{
    struct qthread *t = arg;
    t->result = qdeliver(t->s, "0123456789\r\n", 100, 0);
    return NULL;
}

/* Two deliveries crossing 90% at the same time: one warning. When each
 * check alone stays below (both see 72, each predicts 84) and together
 * they cross, the warning comes with the next check (doc/store.md). */
TEST(quota_warning_concurrent)
{
    for (int round = 0; round < 8; round++) {
        bool maildir = round % 2 == 0, both_below = round >= 4;
        char *root = maildir ? make_tmpdir() : NULL;
        if (maildir && root == NULL)
            return;
        struct store *s = maildir ? store_maildir_new(root, "h") : store_mem_new();
        /* 84 of 100 octets (each next one predicts 96), or 72. */
        for (int i = 0; i < (both_below ? 6 : 7); i++)
            CHECK_EQ_INT(qdeliver(s, "0123456789\r\n", 100, 0), 0);
        struct qthread t[2] = {{s, -1}, {s, -1}};
        pthread_t th[2];
        for (int i = 0; i < 2; i++)
            CHECK(pthread_create(&th[i], NULL, quota_thread, &t[i]) == 0);
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        if (!both_below) {
            /* One is in; the other too if its check ran before the
             * first delivery (check and delivery are not one step; the
             * delivery thread is one, so that takes two processes). */
            CHECK(t[0].result >= 0 && t[1].result >= 0 &&
                  t[0].result + t[1].result <= 1);
        } else {
            CHECK(t[0].result == 0 && t[1].result == 0);
            CHECK(count_warnings(s, NULL, 0) <= 1);
            CHECK_EQ_INT(qdeliver(s, "0123456789\r\n", 100, 0), 1);
        }
        CHECK_EQ_INT(count_warnings(s, NULL, 0), 1);
        store_free(s);
        if (maildir) {
            rm_rf(root);
            free(root);
        }
    }
}

#define USER "alice@example.org"

TEST(quota_warning_after_folder_delivery)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    for (int i = 0; i < 9; i++)
        CHECK(deliver(s, WUSER, NULL, "m\r\n", NULL, 0) == 0);
    char path[4096];
    snprintf(path, sizeof(path), "%s/example.org/wendy/estafeta.quota", root);
    const char *due = "estafeta-quota 1 due 0 10\n";
    CHECK(fs_write_file_atomic(path, due, strlen(due), 0600) == 0);
    CHECK(deliver(s, WUSER, "Sent", "m\r\n", NULL, 0) == 0);
    CHECK_EQ_INT(count_warnings(s, NULL, 0), 1);
    struct buf f;
    CHECK(fs_read_file(path, 4096, &f) == 0);
    CHECK(f.len > 0 && strncmp(f.data, "estafeta-quota 1 sent ", 22) == 0);
    buf_free(&f);
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(vsize_of_lf_files)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[STORE_UID_SIZE], cur[4096], newd[4096];
    CHECK(deliver(s, USER, NULL, "Subject: a\r\n\r\nbody\r\n", uid, sizeof(uid)) == 0);
    char want[64];
    snprintf(want, sizeof(want), ",S=%d,W=%d", 20, 20);
    CHECK(strlen(uid) > strlen(want) &&
          strcmp(uid + strlen(uid) - strlen(want), want) == 0);
    /* Our own message without a final CRLF (BDAT may give one). */
    CHECK(deliver(s, USER, NULL, "Subject: b\r\n\r\nno end", uid, sizeof(uid)) == 0);
    CHECK(strstr(uid, ",S=20,W=22") != NULL);
    box_dir(root, "new", newd, sizeof(newd));
    box_dir(root, "cur", cur, sizeof(cur));
    put_file(newd, "1500000000.M1P1.lf,S=1", "Subject: lf\n\nline\n.dot\n");
    put_file(cur, "1500000001.M1P1.cr:2,S", "a\rb\r\n\r");
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb == NULL)
        goto out;
    CHECK_EQ_INT(store_mailbox_count(mb), 4);
    for (size_t i = 0; i < store_mailbox_count(mb); i++) {
        const struct store_msg *m = store_mailbox_msg(mb, i);
        if (strstr(m->unique, ".lf,") != NULL) {
            CHECK_EQ_INT(m->size, 23);
            CHECK_EQ_INT(m->vsize, 27);
        } else if (strstr(m->unique, ".cr") != NULL) {
            CHECK_EQ_INT(m->size, 6);
            CHECK_EQ_INT(m->vsize, 8);
        } else if (strstr(m->unique, "W=22") != NULL) {
            CHECK_EQ_INT(m->size, 20);
            CHECK_EQ_INT(m->vsize, 22);
        } else {
            CHECK_EQ_INT(m->vsize, m->size);
        }
    }
    store_mailbox_close(mb);
    mb = NULL;
    /* Recorded in the index: make the file lie about its content (same
     * name) and the stored value is still given. */
    char p[8192];
    snprintf(p, sizeof(p), "%s/1500000000.M1P1.lf,S=1", newd);
    unlink(p);
    put_file(newd, "1500000000.M1P1.lf,S=1", "Subject: lf\r\n\r\nline\r\n.dot\r\n");
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    for (size_t i = 0; mb != NULL && i < store_mailbox_count(mb); i++)
        if (strstr(store_mailbox_msg(mb, i)->unique, ".lf,") != NULL)
            CHECK_EQ_INT(store_mailbox_msg(mb, i)->vsize, 27);
out:
    store_mailbox_close(mb);
    store_free(s);
    rm_rf(root);
    free(root);
}

/* An index of version 1 (before vsize) is upgraded in place: same
 * UIDVALIDITY and UIDs, the sizes filled from the files. */
TEST(index_upgrade_from_v1)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char newd[4096], idx[4096];
    box_dir(root, "new", newd, sizeof(newd));
    CHECK(deliver(s, USER, NULL, "warm\r\n", NULL, 0) == 0); /* the Maildir */
    char uid[STORE_UID_SIZE];
    CHECK(deliver(s, USER, NULL, "m\r\n", uid, sizeof(uid)) == 0);
    put_file(newd, "1400000000.M1P1.old,S=4", "a\nb\n");
    box_dir(root, "estafeta.index", idx, sizeof(idx));
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(idx, &db) == SQLITE_OK);
    char sql[2048];
    /* The version-1 schema, with rows for both files. */
    snprintf(sql, sizeof(sql),
             "PRAGMA journal_mode=WAL;"
             "CREATE TABLE meta(id INTEGER PRIMARY KEY CHECK (id = 1),"
             " uidvalidity INTEGER NOT NULL, uidnext INTEGER NOT NULL,"
             " highestmodseq INTEGER NOT NULL);"
             "CREATE TABLE messages(uid INTEGER PRIMARY KEY,"
             " uniq TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,"
             " flags INTEGER NOT NULL, keywords TEXT NOT NULL DEFAULT '',"
             " modseq INTEGER NOT NULL, fname TEXT NOT NULL,"
             " incur INTEGER NOT NULL);"
             "INSERT INTO meta VALUES (1, 1234567, 10, 5);"
             "INSERT INTO messages VALUES (7, '%s', 3, 0, '', 4, '%s', 0);"
             "INSERT INTO messages VALUES (8, '1400000000.M1P1.old,S=4', 4, 0,"
             " '', 5, '1400000000.M1P1.old,S=4', 0);"
             "PRAGMA user_version = 1;",
             uid, uid);
    CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb != NULL) {
        CHECK_EQ_INT(store_mailbox_uidvalidity(mb), 1234567);
        CHECK(store_mailbox_count(mb) == 3);
        for (size_t i = 0; i < store_mailbox_count(mb); i++) {
            const struct store_msg *m = store_mailbox_msg(mb, i);
            if (strcmp(m->unique, uid) == 0)
                CHECK(m->uid == 7 && m->vsize == 3);
            else if (strstr(m->unique, ".old,") != NULL)
                CHECK(m->uid == 8 && m->vsize == 6 && m->size == 4);
            else
                CHECK(m->uid == 10 && m->vsize == 6);
        }
        store_mailbox_close(mb);
    }
    CHECK(sqlite3_open(idx, &db) == SQLITE_OK);
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_prepare_v2(db, "SELECT count(*) FROM messages WHERE vsize < 0",
                             -1, &st, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == 0);
    sqlite3_finalize(st);
    CHECK(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == 2);
    sqlite3_finalize(st);
    sqlite3_close(db);
    store_free(s);
    rm_rf(root);
    free(root);
}

/* ---- keywords (the Maildir side is in test_mailbox.c) ---- */

static int kw_add(struct store_mailbox *mb, size_t i, const char *kw)
{
    const char *k[1] = {kw};
    return store_msg_update_flags(mb, i, STORE_FLAGS_ADD, 0, k, 1);
}

TEST(keyword_names)
{
    static const char *const good[] = {
        "$Forwarded", "Junk", "$MDNSent", "a", "NonJunk", "x-y.z_1+2=3",
        "!#&'+,-./:;<=>?@[^_`|}~",
        "1234567890123456789012345678901234567890123456789012345678901234",
    };
    static const char *const bad[] = {
        "", "a b", "(x", "x)", "{3}", "50%", "wild*", "\"q\"", "\\Seen",
        "x]", "caf\xc3\xa9", "tab\there", "nl\n", "del\x7f",
        "12345678901234567890123456789012345678901234567890123456789012345",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        CHECK(store_keyword_valid(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(!store_keyword_valid(bad[i]));
    CHECK(!store_keyword_valid(NULL));
}

TEST(mem_keywords)
{
    struct store *s = store_mem_new();
    char uid[STORE_UID_SIZE];
    CHECK(deliver(s, USER, NULL, "x\r\n", uid, sizeof(uid)) == 0);
    CHECK(deliver(s, USER, NULL, "y\r\n", uid, sizeof(uid)) == 0);
    struct store_mailbox *mb = NULL, *mb2 = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb2) == 0);
    if (mb == NULL || mb2 == NULL)
        goto out;
    const char *k[] = {"Junk", "$Label1"};
    uint64_t ms = store_mailbox_msg(mb, 0)->modseq;
    CHECK(store_msg_update_flags(mb, 0, STORE_FLAGS_ADD, STORE_F_SEEN, k, 2) == 0);
    CHECK_EQ_INT(store_mailbox_msg(mb, 0)->keywords, 3);
    CHECK(store_mailbox_msg(mb, 0)->modseq > ms);
    CHECK_EQ_STR(store_mailbox_keyword(mb, 1), "$Label1");
    CHECK(kw_add(mb2, 1, "junk") == 0);
    CHECK_EQ_INT(store_mailbox_msg(mb2, 1)->keywords, 1);
    CHECK(store_mailbox_refresh(mb) == 0);
    CHECK_EQ_INT(store_mailbox_msg(mb, 1)->keywords, 1);
    CHECK(store_msg_set_flags(mb, 1, STORE_F_FLAGGED) == 0);
    CHECK_EQ_INT(store_mailbox_msg(mb, 1)->keywords, 1);
    const char *rm[] = {"JUNK", "unknown"};
    CHECK(store_msg_update_flags(mb, 1, STORE_FLAGS_REMOVE, 0, rm, 2) == 0);
    CHECK_EQ_INT(store_mailbox_msg(mb, 1)->keywords, 0);
    char kw[24][16];
    for (int i = 0; i < 24; i++) {
        snprintf(kw[i], sizeof(kw[i]), "k%d", i);
        CHECK(kw_add(mb, 0, kw[i]) == 0);
    }
    errno = 0;
    CHECK(kw_add(mb, 0, "k-the-27th") == -1 && errno == EMLINK);
    const char *bad[] = {"no good"};
    CHECK(store_msg_update_flags(mb, 0, STORE_FLAGS_ADD, 0, bad, 1) == -1 &&
          errno == EINVAL);
    const char *set[] = {"K3"};
    CHECK(store_msg_update_flags(mb, 0, STORE_FLAGS_SET, 0, set, 1) == 0);
    CHECK_EQ_INT(store_mailbox_msg(mb, 0)->keywords, 1u << 5);
out:
    store_mailbox_close(mb);
    store_mailbox_close(mb2);
    store_free(s);
}

int main(void)
{
    log_set_level(LOG_ERR); /* the damaged index is logged at warn */
    RUN(maildir_deliver_byte_exact);
    RUN(maildir_invalid_names);
    RUN(maildir_folders);
    RUN(maildir_read_failure_leaves_nothing);
    RUN(maildir_hostname_escaped);
    RUN(maildir_refuses_symlinks);
    RUN(maildir_concurrent);
    RUN(maildir_clean_tmp);
    RUN(maildir_delivery_assigns_uid);
    RUN(maildir_delivery_survives_bad_index);
    RUN(mem_backend);
    RUN(crlf_size);
    RUN(quota_arithmetic);
    RUN(quota_warning_maildir);
    RUN(quota_warning_mem);
    RUN(quota_warning_when_refused);
    RUN(quota_warning_concurrent);
    RUN(vsize_of_lf_files);
    RUN(index_upgrade_from_v1);
    RUN(keyword_names);
    RUN(mem_keywords);
    RUN(quota_warning_after_folder_delivery);
    return harness_done("test_store");
}
