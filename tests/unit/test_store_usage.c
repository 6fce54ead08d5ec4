/* Tests of the Maildir store's usage file (doc/store.md "The usage file"):
 * the running total agrees with the folders through deliveries and
 * expunges, a total that cannot be trusted is never used, and the quota
 * check uses it only to let mail in well below the limits. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "lib/fsutil.h"
#include "lib/xalloc.h"
#include "store/mailbox.h"
#include "store/store.h"
#include "store_testlib.h"

#define USER "alice@example.org"

/*
 * A seam for "a delivery in the middle of an exact reading": the reading
 * lists each folder through fdopendir(), and this program's own
 * definition is found before libc's. While scan_append_to names a usage
 * file, the first call appends one line to it, as a delivery by another
 * thread or process would (md_usage_add: one O_APPEND write), then
 * disarms.
 */
static const char *scan_append_to;

DIR *fdopendir(int fd)
{
    static DIR *(*real)(int);
    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "fdopendir");
    if (real == NULL) {
        errno = ENOSYS;
        return NULL;
    }
    if (scan_append_to != NULL) {
        const char *path = scan_append_to;
        scan_append_to = NULL;
        int afd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (afd >= 0) {
            CHECK(write(afd, "5 1\n", 4) == 4);
            close(afd);
        }
    }
    return real(fd);
}

/* The cached total equals the exact one (asserted), returned in *b, *m. */
static void check_agree(struct store *s, uint64_t *b_r, uint64_t *m_r)
{
    uint64_t cb = 1, cm = 1, b = 2, m = 2;
    CHECK(store_quota_usage_cached(s, USER, &cb, &cm) == 0);
    CHECK(store_quota_usage(s, USER, &b, &m) == 0);
    CHECK_EQ_INT(cb, b);
    CHECK_EQ_INT(cm, m);
    *b_r = b;
    *m_r = m;
}

static void read_text(const char *path, char *out, size_t cap)
{
    struct buf f;
    out[0] = '\0';
    if (fs_read_file(path, cap - 1, &f) == 0) {
        memcpy(out, f.data, f.len);
        out[f.len] = '\0';
        buf_free(&f);
    }
}

static void write_text(const char *path, const char *text)
{
    CHECK(fs_write_file_atomic(path, text, strlen(text), 0600) == 0);
}

/* A store in a new directory with USER's folders; usage_r the path of
 * the user's usage file. NULL if no directory could be made. */
static struct store *usage_setup(char **root_r, char *usage_r, size_t cap)
{
    *root_r = make_tmpdir();
    if (*root_r == NULL)
        return NULL;
    struct store *s = store_maildir_new(*root_r, "h");
    box_dir(*root_r, "estafeta.usage", usage_r, cap);
    CHECK(store_user_create(s, USER) == 0);
    return s;
}

/* usage_setup, then one message of 7 octets and an exact reading, which
 * makes the usage file "7 1". */
static struct store *usage_setup_one(char **root_r, char *usage_r, size_t cap)
{
    char text[512];
    uint64_t b, m;
    struct store *s = usage_setup(root_r, usage_r, cap);
    if (s == NULL)
        return NULL;
    CHECK(deliver(s, USER, NULL, "12345\r\n", NULL, 0) == 0);
    CHECK(store_quota_usage(s, USER, &b, &m) == 0);
    read_text(usage_r, text, sizeof(text));
    CHECK_EQ_STR(text, "estafeta-usage 1\n7 1\n");
    return s;
}

static void usage_teardown(struct store *s, char *root)
{
    store_free(s);
    rm_rf(root);
    free(root);
}

/* Deliveries (INBOX and folders) and expunges keep the total. */
TEST(usage_follows_deliveries_and_expunges)
{
    char *root, path[4096], text[8192];
    uint64_t b, m;
    struct store *s = usage_setup(&root, path, sizeof(path));
    if (s == NULL)
        return;
    /* None until an exact reading makes it; deliveries never create it. */
    CHECK(deliver(s, USER, NULL, "12345\r\n", NULL, 0) == 0); /* 7 */
    CHECK(access(path, F_OK) == -1);
    CHECK(store_quota_usage_cached(s, USER, &b, &m) == -1 && errno == ENOENT);
    CHECK(store_quota_usage(s, USER, &b, &m) == 0);
    CHECK_EQ_INT(b, 7);
    read_text(path, text, sizeof(text));
    CHECK_EQ_STR(text, "estafeta-usage 1\n7 1\n");
    CHECK(deliver(s, USER, NULL, "1\r\n", NULL, 0) == 0);             /* 3 */
    CHECK(deliver(s, USER, "Sent", "123456789\r\n", NULL, 0) == 0);   /* 11 */
    CHECK(deliver(s, USER, "Lists.x", "ab\r\n", NULL, 0) == 0);       /* 4 */
    read_text(path, text, sizeof(text));
    CHECK_EQ_STR(text, "estafeta-usage 1\n7 1\n3 1\n11 1\n4 1\n");
    check_agree(s, &b, &m);
    CHECK_EQ_INT(b, 25);
    CHECK_EQ_INT(m, 4);
    /* Expunges in the INBOX and in a folder. */
    CHECK(deliver(s, USER, NULL, "x\r\n", NULL, 0) == 0);
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb != NULL) {
        size_t two[2] = {0, 1};
        CHECK(store_mailbox_count(mb) == 3);
        CHECK(store_mailbox_expunge(mb, two, 2) == 0);
        store_mailbox_close(mb);
    }
    mb = NULL;
    CHECK(store_mailbox_open(s, USER, "Sent", 0, &mb) == 0);
    if (mb != NULL) {
        size_t zero = 0;
        CHECK(store_mailbox_expunge(mb, &zero, 1) == 0);
        store_mailbox_close(mb);
    }
    check_agree(s, &b, &m);
    CHECK_EQ_INT(m, 2); /* one left in the INBOX, one in Lists.x */
    usage_teardown(s, root);
}

/* A total that cannot be trusted is not used: garbage, another format,
 * a torn line, a negative sum, too large, too old, not a regular file. */
TEST(usage_untrusted)
{
    char *root, path[4096], big[6000];
    uint64_t b, m;
    struct store *s = usage_setup_one(&root, path, sizeof(path));
    if (s == NULL)
        return;
    static const char *const bad[] = {
        "",
        "garbage\n",
        "100S,10C\n7 1\n",               /* a Maildir++ maildirsize */
        "estafeta-usage 2\n7 1\n",
        "estafeta-usage 1\n7 1\n3",      /* torn */
        "estafeta-usage 1\n7 1\n3 1",
        "estafeta-usage 1\n7\n",
        "estafeta-usage 1\n7 1 \n",
        "estafeta-usage 1\n+7 1\n",
        "estafeta-usage 1\n7 1\n-8 -1\n", /* below zero */
        "estafeta-usage 1\n1234567890123456789 1\n",
        "estafeta-usage 1\n?\n",          /* an exact reading's placeholder */
        "estafeta-usage 1\n?\n7 1\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_text(path, bad[i]);
        errno = 0;
        CHECK(store_quota_usage_cached(s, USER, &b, &m) == -1 && errno == ESTALE);
    }
    write_text(path, "estafeta-usage 1\n7 1\n-7 -1\n5 1\n");
    CHECK(store_quota_usage_cached(s, USER, &b, &m) == 0 && b == 5 && m == 1);
    /* Lines that sum beyond 64 bits. */
    size_t o = (size_t)snprintf(big, sizeof(big), "estafeta-usage 1\n");
    for (int i = 0; i < 11; i++)
        o += (size_t)snprintf(big + o, sizeof(big) - o, "999999999999999999 1\n");
    write_text(path, big);
    CHECK(store_quota_usage_cached(s, USER, &b, &m) == -1 && errno == ESTALE);
    /* A second name for it (a hard link) is not ours to trust. */
    write_text(path, "estafeta-usage 1\n7 1\n");
    char other[4200];
    snprintf(other, sizeof(other), "%s.link", path);
    CHECK(link(path, other) == 0);
    CHECK(store_quota_usage_cached(s, USER, &b, &m) == -1 && errno == ESTALE);
    CHECK(unlink(other) == 0);
    CHECK(store_quota_usage_cached(s, USER, &b, &m) == 0 && b == 7 && m == 1);
    /* Exactly 5,120 octets: appends stop there, so it is not trusted. */
    o = (size_t)snprintf(big, sizeof(big), "estafeta-usage 1\n");
    while (o + 4 <= 5120)
        o += (size_t)snprintf(big + o, sizeof(big) - o, "0 0\n");
    while (o < 5120)
        o += (size_t)snprintf(big + o, sizeof(big) - o, "\n");
    big[5119] = '\n';
    CHECK_EQ_INT(o, 5120);
    write_text(path, big);
    CHECK(store_quota_usage_cached(s, USER, &b, &m) == -1 && errno == ESTALE);
    /* Over 5,120 octets. */
    o = (size_t)snprintf(big, sizeof(big), "estafeta-usage 1\n");
    while (o + 4 < 5200)
        o += (size_t)snprintf(big + o, sizeof(big) - o, "0 0\n");
    write_text(path, big);
    CHECK(store_quota_usage_cached(s, USER, &b, &m) == -1 && errno == ESTALE);
    /* And a delivery does not make it grow further. */
    CHECK(deliver(s, USER, NULL, "1\r\n", NULL, 0) == 0);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (size_t)sb.st_size == o);
    /* Older than 15 minutes. */
    write_text(path, "estafeta-usage 1\n7 1\n");
    struct timespec old[2] = {{time(NULL) - 16 * 60, 0}, {time(NULL) - 16 * 60, 0}};
    CHECK(utimensat(AT_FDCWD, path, old, 0) == 0);
    CHECK(store_quota_usage_cached(s, USER, &b, &m) == -1 && errno == ESTALE);
    /* A delivery does not append to it: that would make it look fresh. */
    CHECK(deliver(s, USER, NULL, "1\r\n", NULL, 0) == 0);
    char text0[256];
    read_text(path, text0, sizeof(text0));
    CHECK_EQ_STR(text0, "estafeta-usage 1\n7 1\n");
    CHECK(store_quota_usage_cached(s, USER, &b, &m) == -1 && errno == ESTALE);
    /* A symbolic link is not followed, a directory is not a total. */
    char target[4200];
    snprintf(target, sizeof(target), "%s.target", path);
    write_text(target, "estafeta-usage 1\n7 1\n");
    CHECK(unlink(path) == 0 && symlink(target, path) == 0);
    CHECK(store_quota_usage_cached(s, USER, &b, &m) == -1);
    CHECK(deliver(s, USER, NULL, "1\r\n", NULL, 0) == 0);
    char text[256];
    read_text(target, text, sizeof(text));
    CHECK_EQ_STR(text, "estafeta-usage 1\n7 1\n"); /* not appended through */
    CHECK(unlink(path) == 0 && mkdir(path, 0700) == 0);
    CHECK(store_quota_usage_cached(s, USER, &b, &m) == -1);
    CHECK(rmdir(path) == 0);
    /* The exact reading makes a good one again. */
    CHECK(store_quota_usage(s, USER, &b, &m) == 0);
    uint64_t cb, cm;
    CHECK(store_quota_usage_cached(s, USER, &cb, &cm) == 0 && cb == b && cm == m);
    CHECK_EQ_INT(m, 4);
    usage_teardown(s, root);
}

/* The quota check: well below the limits the total lets mail in without
 * reading the folders (the file keeps its appended lines); near or over a
 * limit it reads them, so mail deleted by another program is seen at once
 * and a refusal is never made on the total. */
TEST(usage_quota_check)
{
    char *root, path[4096], cur[4096], newd[4096], text[512];
    uint64_t b, m;
    struct store *s = usage_setup(&root, path, sizeof(path));
    if (s == NULL)
        return;
    box_dir(root, "cur", cur, sizeof(cur));
    box_dir(root, "new", newd, sizeof(newd));
    CHECK(store_quota_usage(s, USER, &b, &m) == 0);
    for (int i = 0; i < 3; i++)
        CHECK(deliver(s, USER, NULL, "abc\r\n", NULL, 0) == 0);
    read_text(path, text, sizeof(text));
    CHECK_EQ_STR(text, "estafeta-usage 1\n0 0\n5 1\n5 1\n5 1\n");
    /* 3 of 100 messages: let in on the total, the file untouched. */
    CHECK(store_deliver_quota(s, USER, 0, 100, 5) == 0);
    read_text(path, text, sizeof(text));
    CHECK_EQ_STR(text, "estafeta-usage 1\n0 0\n5 1\n5 1\n5 1\n");
    /* 3 (+1) of 4: at the threshold, so the folders are read (the file is
     * made afresh), and it fits. */
    CHECK(store_deliver_quota(s, USER, 0, 4, 5) == 0);
    read_text(path, text, sizeof(text));
    CHECK_EQ_STR(text, "estafeta-usage 1\n15 3\n");
    /* (That check, at 90%, made the warning due: forget it, so that the
     * next delivery is not followed by one.) */
    char state[4096];
    box_dir(root, "estafeta.quota", state, sizeof(state));
    CHECK(unlink(state) == 0);
    /* The total says 5 of 5, but another program deleted two: the exact
     * reading lets the message in. */
    CHECK(deliver(s, USER, NULL, "abc\r\n", NULL, 0) == 0);
    CHECK(deliver(s, USER, NULL, "abc\r\n", NULL, 0) == 0);
    CHECK(store_quota_usage_cached(s, USER, &b, &m) == 0 && m == 5);
    for (int i = 0; i < 2; i++) {
        char first[512], p[8192];
        const char *dir = dir_list(newd, first, sizeof(first)) > 0 ? newd : cur;
        CHECK(dir_list(dir, first, sizeof(first)) > 0);
        snprintf(p, sizeof(p), "%s/%s", dir, first);
        CHECK(unlink(p) == 0);
    }
    CHECK(store_deliver_quota(s, USER, 0, 5, 5) == 0); /* 3 of 5: fits */
    read_text(path, text, sizeof(text));
    CHECK_EQ_STR(text, "estafeta-usage 1\n15 3\n");
    /* Near a limit the total is not what refuses: it says 2 of 3, the
     * folders 3 of 3. */
    write_text(path, "estafeta-usage 1\n10 2\n");
    errno = 0;
    CHECK(store_deliver_quota(s, USER, 0, 3, 5) == -1 && errno == EDQUOT);
    /* Made afresh, then the warning that refusal sent (full already: no
     * delivery would carry it) appended its own line. */
    read_text(path, text, sizeof(text));
    CHECK(strncmp(text, "estafeta-usage 1\n15 3\n", 22) == 0 &&
          strchr(text + 22, '\n') != NULL);
    check_agree(s, &b, &m);
    CHECK_EQ_INT(m, 4);
    /* The warning was sent (just now): a total that says the mailbox is
     * nearly empty does not decide whether to arm it again; the folders
     * are read (the file made afresh), and on their count (4 of 100) it
     * is armed again. */
    char st_text[256];
    box_dir(root, "estafeta.quota", state, sizeof(state));
    read_text(state, st_text, sizeof(st_text));
    CHECK(strncmp(st_text, "estafeta-quota 1 sent ", 22) == 0);
    write_text(path, "estafeta-usage 1\n1 1\n");
    errno = 0;
    CHECK(store_deliver_quota(s, USER, 0, 100, 5) == 0); /* 4 of 100: fits */
    read_text(path, text, sizeof(text));
    CHECK(strncmp(text, "estafeta-usage 1\n", 17) == 0 &&
          strcmp(text, "estafeta-usage 1\n1 1\n") != 0); /* read again */
    read_text(state, st_text, sizeof(st_text));
    CHECK(strncmp(st_text, "estafeta-quota 1 armed", 22) == 0); /* 4 of 100 */
    usage_teardown(s, root);
}

/* A delivery during an exact reading: the reading leaves its placeholder
 * (the total it counted may miss that message), so the total is not
 * trusted until the next exact reading, which gets it right. */
TEST(usage_delivery_during_reading)
{
    char *root, path[4096], text[512];
    uint64_t b, m, cb, cm;
    struct store *s = usage_setup_one(&root, path, sizeof(path));
    if (s == NULL)
        return;
    scan_append_to = path;
    CHECK(store_quota_usage(s, USER, &b, &m) == 0);
    CHECK(scan_append_to == NULL); /* the seam was reached */
    CHECK_EQ_INT(b, 7);
    CHECK_EQ_INT(m, 1);
    read_text(path, text, sizeof(text));
    CHECK_EQ_STR(text, "estafeta-usage 1\n?\n5 1\n"); /* placeholder kept */
    errno = 0;
    CHECK(store_quota_usage_cached(s, USER, &cb, &cm) == -1 && errno == ESTALE);
    /* A real delivery now does not make it trusted either. */
    CHECK(deliver(s, USER, NULL, "1\r\n", NULL, 0) == 0); /* 3 */
    CHECK(store_quota_usage_cached(s, USER, &cb, &cm) == -1 && errno == ESTALE);
    CHECK(store_quota_usage(s, USER, &b, &m) == 0);
    read_text(path, text, sizeof(text));
    CHECK_EQ_STR(text, "estafeta-usage 1\n10 2\n");
    check_agree(s, &b, &m);
    usage_teardown(s, root);
}

/* A line that does not go in whole (the disk full, here the file size
 * limit) would leave a wrong total: the file goes, the next check reads
 * the folders, and the delivery itself stands. */
TEST(usage_short_append)
{
    char *root, path[4096];
    uint64_t b, m;
    struct store *s = usage_setup_one(&root, path, sizeof(path));
    if (s == NULL)
        return;
    /* The exact reading made the INBOX's index; without it the delivery
     * below writes nothing but its message and the usage line (an index
     * needs far more than the limit allows, and its failure is another
     * test's business). */
    static const char *const idx[] = {"estafeta.index", "estafeta.index-wal",
                                      "estafeta.index-shm"};
    for (size_t i = 0; i < sizeof(idx) / sizeof(idx[0]); i++) {
        char p[4096];
        box_dir(root, idx[i], p, sizeof(p));
        CHECK(unlink(p) == 0 || errno == ENOENT);
    }
    /* The file has 21 octets. Room for the 3-octet message but for only 2 of the 4 of "3 1\n". */
    struct rlimit old, lim;
    CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
    void (*was)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 23;
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    int r = deliver(s, USER, NULL, "1\r\n", NULL, 0);
    CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
    signal(SIGXFSZ, was);
    CHECK(r == 0);
    CHECK(access(path, F_OK) == -1 && errno == ENOENT);
    errno = 0;
    CHECK(store_quota_usage_cached(s, USER, &b, &m) == -1 && errno == ENOENT);
    CHECK(store_quota_usage(s, USER, &b, &m) == 0);
    CHECK_EQ_INT(b, 10);
    CHECK_EQ_INT(m, 2);
    check_agree(s, &b, &m);
    usage_teardown(s, root);
}

int main(void)
{
    RUN(usage_follows_deliveries_and_expunges);
    RUN(usage_untrusted);
    RUN(usage_quota_check);
    RUN(usage_delivery_during_reading);
    RUN(usage_short_append);
    return harness_done("test_store_usage");
}
