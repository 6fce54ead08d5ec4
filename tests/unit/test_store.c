/* Tests of the mailbox store (src/store, doc/store.md), both backends. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "store/mailbox.h"
#include "store/store.h"

/* ---- helpers ---- */

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/estafeta-test-store-XXXXXX";
    char *d = mkdtemp(tmpl);
    return d != NULL ? xstrdup(d) : NULL;
}

static void rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d != NULL) {
            struct dirent *de;
            while ((de = readdir(d)) != NULL) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                    continue;
                char sub[4096];
                snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
                rm_rf(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* Number of entries of a directory and the first name (if any). */
static int dir_list(const char *path, char *first, size_t cap)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *de;
    if (first != NULL && cap > 0)
        first[0] = '\0';
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (n == 0 && first != NULL)
            snprintf(first, cap, "%s", de->d_name);
        n++;
    }
    closedir(d);
    return n;
}

/* A reader over a memory buffer, handing out at most `step` bytes a call,
 * failing (-1, EIO) after fail_after bytes if fail_after is set. */
struct src {
    const unsigned char *p;
    size_t len, off, step;
    size_t fail_after;
    int fail;
};

static ssize_t src_read(void *arg, void *p, size_t n)
{
    struct src *s = arg;
    if (s->fail && s->off >= s->fail_after) {
        errno = EIO;
        return -1;
    }
    size_t k = s->len - s->off;
    if (k > n)
        k = n;
    if (k > s->step)
        k = s->step;
    memcpy(p, s->p + s->off, k);
    s->off += k;
    return (ssize_t)k;
}

static unsigned char *make_content(size_t len)
{
    unsigned char *p = xmalloc(len ? len : 1);
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(i * 13 + i / 7);
    return p;
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

    /* Name: <secs>.M<usec>P<pid>Q<n>R<16 hex>.<host>,S=<size> */
    size_t total = strlen(PREFIX) + len;
    char want_tail[128];
    snprintf(want_tail, sizeof(want_tail), ".mx.example.org,S=%zu", total);
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
static int index_dump(const char *path, char *out, size_t cap, long *next_r)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    out[0] = '\0';
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT uid, uniq FROM messages ORDER BY uid",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return -1;
    }
    size_t o = 0;
    while (sqlite3_step(st) == SQLITE_ROW && o < cap)
        o += (size_t)snprintf(out + o, cap - o, "%lld:%s;",
                              (long long)sqlite3_column_int64(st, 0),
                              (const char *)sqlite3_column_text(st, 1));
    sqlite3_finalize(st);
    *next_r = -1;
    if (sqlite3_prepare_v2(db, "SELECT uidnext FROM meta", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        *next_r = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return 0;
}

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
    return harness_done("test_store");
}
