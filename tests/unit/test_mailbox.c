/* Tests of mailbox.h (src/store/mailbox_maildir.c, index_sqlite.c,
 * store_mem.c; doc/store.md "The index"): UIDs, snapshots, flags, expunge,
 * locking, rebuilds, quota, and concurrent delivery. */
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
#include "store_testlib.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "store/mailbox.h"
#include "store/store.h"

/* ---- helpers ---- */

/* This test binary, for the child of exclusive_open (not /proc/self/exe:
 * under valgrind that is valgrind itself). */
static char self_path[4096];

/* Whether the directory holds an entry starting with prefix. */
static bool dir_has_prefix(const char *path, const char *prefix)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return false;
    bool found = false;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
            found = true;
    closedir(d);
    return found;
}

static void msg_text(size_t i, char *out, size_t cap)
{
    snprintf(out, cap, "Subject: message %zu\r\n\r\nbody %zu%s\r\n", i, i,
             i % 3 == 0 ? " and a longer line for size variety" : "");
}

/* Reads a message through store_msg_open into out. */
static ssize_t read_msg(struct store_mailbox *mb, size_t i, char *out,
                        size_t cap)
{
    int fd;
    if (store_msg_open(mb, i, &fd) < 0)
        return -1;
    ssize_t n = read(fd, out, cap - 1);
    close(fd);
    if (n >= 0)
        out[n] = '\0';
    return n;
}

#define USER "alice@example.org"

/* ---- Maildir: basics ---- */

TEST(uids_in_delivery_order)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[3][STORE_UID_SIZE], text[3][128];
    for (size_t i = 0; i < 3; i++) {
        msg_text(i, text[i], sizeof(text[i]));
        CHECK(deliver(s, USER, NULL, text[i], uid[i], sizeof(uid[i])) == 0);
    }
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb == NULL)
        goto out;
    CHECK_EQ_INT(store_mailbox_count(mb), 3);
    CHECK(store_mailbox_uidvalidity(mb) != 0);
    CHECK_EQ_INT(store_mailbox_uidnext(mb), 4);
    for (size_t i = 0; i < 3 && i < store_mailbox_count(mb); i++) {
        const struct store_msg *m = store_mailbox_msg(mb, i);
        CHECK_EQ_INT(m->uid, i + 1);
        CHECK_EQ_STR(m->unique, uid[i]);
        CHECK_EQ_INT(m->size, strlen(text[i]));
        CHECK_EQ_INT(m->flags, 0);
        CHECK(m->modseq > 0);
        char got[256];
        CHECK_EQ_INT(read_msg(mb, i, got, sizeof(got)), strlen(text[i]));
        CHECK_EQ_STR(got, text[i]);
    }
    CHECK(store_mailbox_msg(mb, 3) == NULL);
    /* The index is a WAL database next to new/ and cur/, nothing moved. */
    char path[4096];
    box_dir(root, "estafeta.index", path, sizeof(path));
    CHECK(access(path, F_OK) == 0);
    box_dir(root, "new", path, sizeof(path));
    CHECK_EQ_INT(dir_list(path, NULL, 0), 3);
    box_dir(root, "cur", path, sizeof(path));
    CHECK_EQ_INT(dir_list(path, NULL, 0), 0);
    store_mailbox_close(mb);
out:
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(snapshot_and_refresh)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[STORE_UID_SIZE];
    for (int i = 0; i < 3; i++)
        CHECK(deliver(s, USER, NULL, "x\r\n", uid, sizeof(uid)) == 0);
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb == NULL)
        goto out;
    uint32_t uv = store_mailbox_uidvalidity(mb);
    CHECK(deliver(s, USER, NULL, "fourth\r\n", uid, sizeof(uid)) == 0);
    CHECK_EQ_INT(store_mailbox_count(mb), 3);
    CHECK_EQ_INT(store_mailbox_uidnext(mb), 4);
    CHECK(store_mailbox_refresh(mb) == 0);
    CHECK_EQ_INT(store_mailbox_count(mb), 4);
    const struct store_msg *m = store_mailbox_msg(mb, 3);
    CHECK(m != NULL && m->uid == 4 && strcmp(m->unique, uid) == 0 &&
          m->size == 8);
    CHECK_EQ_INT(store_mailbox_uidnext(mb), 5);
    CHECK_EQ_INT(store_mailbox_uidvalidity(mb), uv);
    /* Nothing new: refresh changes nothing. */
    CHECK(store_mailbox_refresh(mb) == 0);
    CHECK_EQ_INT(store_mailbox_count(mb), 4);
    store_mailbox_close(mb);
out:
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(flags_rename_into_cur)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[2][STORE_UID_SIZE], path[4096], file[8192];
    CHECK(deliver(s, USER, NULL, "one\r\n", uid[0], sizeof(uid[0])) == 0);
    CHECK(deliver(s, USER, NULL, "two\r\n", uid[1], sizeof(uid[1])) == 0);
    struct store_mailbox *mb = NULL, *mb2 = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb2) == 0);
    if (mb == NULL || mb2 == NULL)
        goto out;
    uint64_t ms0 = store_mailbox_msg(mb, 0)->modseq;
    uint64_t ms1 = store_mailbox_msg(mb, 1)->modseq;

    /* Flags 0 on a message in new/ change nothing (POP3 reads). */
    CHECK(store_msg_set_flags(mb, 1, 0) == 0);
    box_dir(root, "new", path, sizeof(path));
    snprintf(file, sizeof(file), "%s/%s", path, uid[1]);
    CHECK(access(file, F_OK) == 0);
    CHECK_EQ_INT(store_mailbox_msg(mb, 1)->modseq, ms1);

    CHECK(store_msg_set_flags(mb, 0, STORE_F_SEEN) == 0);
    snprintf(file, sizeof(file), "%s/%s", path, uid[0]);
    CHECK(access(file, F_OK) == -1 && errno == ENOENT);
    box_dir(root, "cur", path, sizeof(path));
    snprintf(file, sizeof(file), "%s/%s:2,S", path, uid[0]);
    CHECK(access(file, F_OK) == 0);
    CHECK_EQ_INT(store_mailbox_msg(mb, 0)->flags, STORE_F_SEEN);
    uint64_t ms0b = store_mailbox_msg(mb, 0)->modseq;
    CHECK(ms0b > ms0 && ms0b > ms1);

    /* Letters in ASCII order; the content is unchanged. */
    CHECK(store_msg_set_flags(mb, 0, STORE_F_SEEN | STORE_F_FLAGGED |
                                         STORE_F_REPLIED | STORE_F_DRAFT) == 0);
    snprintf(file, sizeof(file), "%s/%s:2,DFRS", path, uid[0]);
    CHECK(access(file, F_OK) == 0);
    CHECK(store_mailbox_msg(mb, 0)->modseq > ms0b);
    char got[64];
    CHECK_EQ_INT(read_msg(mb, 0, got, sizeof(got)), 5);
    CHECK_EQ_STR(got, "one\r\n");
    /* The same flags again: no rename, no new modseq. */
    uint64_t ms0c = store_mailbox_msg(mb, 0)->modseq;
    CHECK(store_msg_set_flags(mb, 0, STORE_F_SEEN | STORE_F_FLAGGED |
                                         STORE_F_REPLIED | STORE_F_DRAFT) == 0);
    CHECK_EQ_INT(store_mailbox_msg(mb, 0)->modseq, ms0c);

    /* The other session's snapshot still opens the renamed file, and sees
     * the flags after a refresh; a new open sees them at once. */
    CHECK_EQ_INT(store_mailbox_msg(mb2, 0)->flags, 0);
    CHECK_EQ_INT(read_msg(mb2, 0, got, sizeof(got)), 5);
    CHECK(store_mailbox_refresh(mb2) == 0);
    CHECK_EQ_INT(store_mailbox_msg(mb2, 0)->flags,
                 STORE_F_SEEN | STORE_F_FLAGGED | STORE_F_REPLIED |
                     STORE_F_DRAFT);
    CHECK_EQ_INT(store_mailbox_msg(mb2, 0)->modseq, ms0c);
    /* mb2 changes a message mb renamed: it goes by the index, not by its
     * stale snapshot, so nothing is lost. */
    CHECK(store_msg_set_flags(mb2, 0, STORE_F_TRASHED) == 0);
    snprintf(file, sizeof(file), "%s/%s:2,T", path, uid[0]);
    CHECK(access(file, F_OK) == 0);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 1);
    struct store_mailbox *mb3 = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb3) == 0);
    if (mb3 != NULL) {
        CHECK_EQ_INT(store_mailbox_msg(mb3, 0)->flags, STORE_F_TRASHED);
        CHECK_EQ_INT(store_mailbox_msg(mb3, 1)->flags, 0);
        store_mailbox_close(mb3);
    }
    /* Clearing every flag keeps it in cur/ with an empty info part. */
    CHECK(store_msg_set_flags(mb, 0, 0) == 0);
    snprintf(file, sizeof(file), "%s/%s:2,", path, uid[0]);
    CHECK(access(file, F_OK) == 0);

    /* Bad arguments. */
    CHECK(store_msg_set_flags(mb, 2, STORE_F_SEEN) == -1 && errno == EINVAL);
    CHECK(store_msg_set_flags(mb, 0, 64) == -1 && errno == EINVAL);
    int fd;
    CHECK(store_msg_open(mb, 2, &fd) == -1 && errno == EINVAL && fd == -1);
out:
    store_mailbox_close(mb);
    store_mailbox_close(mb2);
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(expunge_and_no_uid_reuse)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[5][STORE_UID_SIZE], path[4096];
    for (int i = 0; i < 4; i++)
        CHECK(deliver(s, USER, NULL, "m\r\n", uid[i], sizeof(uid[i])) == 0);
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, STORE_OPEN_EXCLUSIVE, &mb) == 0);
    if (mb == NULL)
        goto out;
    CHECK(store_msg_set_flags(mb, 1, STORE_F_SEEN) == 0); /* one in cur/ */
    uint64_t before = store_mailbox_msg(mb, 0)->modseq;
    size_t del[] = {3, 1, 3}; /* unsorted, with a repeat */
    CHECK(store_mailbox_expunge(mb, del, 3) == 0);
    CHECK_EQ_INT(store_mailbox_count(mb), 2);
    CHECK_EQ_STR(store_mailbox_msg(mb, 0)->unique, uid[0]);
    CHECK_EQ_STR(store_mailbox_msg(mb, 1)->unique, uid[2]);
    CHECK_EQ_INT(store_mailbox_msg(mb, 1)->uid, 3);
    CHECK(store_mailbox_msg(mb, 0)->modseq == before);
    box_dir(root, "new", path, sizeof(path));
    CHECK_EQ_INT(dir_list(path, NULL, 0), 2);
    CHECK(!dir_has_prefix(path, uid[3]));
    box_dir(root, "cur", path, sizeof(path));
    CHECK_EQ_INT(dir_list(path, NULL, 0), 0);
    size_t bad = 2;
    CHECK(store_mailbox_expunge(mb, &bad, 1) == -1 && errno == EINVAL);
    CHECK(store_mailbox_expunge(mb, NULL, 0) == 0);
    store_mailbox_close(mb);

    /* UID 4 was the highest and is gone: the next delivery gets 5. */
    CHECK(deliver(s, USER, NULL, "again\r\n", uid[4], sizeof(uid[4])) == 0);
    mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb == NULL)
        goto out;
    CHECK_EQ_INT(store_mailbox_count(mb), 3);
    if (store_mailbox_count(mb) == 3) {
        CHECK_EQ_INT(store_mailbox_msg(mb, 0)->uid, 1);
        CHECK_EQ_INT(store_mailbox_msg(mb, 1)->uid, 3);
        CHECK_EQ_INT(store_mailbox_msg(mb, 2)->uid, 5);
        CHECK_EQ_STR(store_mailbox_msg(mb, 2)->unique, uid[4]);
    }
    CHECK_EQ_INT(store_mailbox_uidnext(mb), 6);
    /* Expunge everything. */
    size_t all[] = {0, 1, 2};
    CHECK(store_mailbox_expunge(mb, all, 3) == 0);
    CHECK_EQ_INT(store_mailbox_count(mb), 0);
    store_mailbox_close(mb);
    box_dir(root, "new", path, sizeof(path));
    CHECK_EQ_INT(dir_list(path, NULL, 0), 0);
out:
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(expunged_elsewhere)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[STORE_UID_SIZE];
    for (int i = 0; i < 2; i++)
        CHECK(deliver(s, USER, NULL, "m\r\n", uid, sizeof(uid)) == 0);
    struct store_mailbox *a = NULL, *b = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &a) == 0);
    CHECK(store_mailbox_open(s, USER, NULL, 0, &b) == 0);
    if (a == NULL || b == NULL)
        goto out;
    size_t one = 0;
    CHECK(store_mailbox_expunge(a, &one, 1) == 0);
    /* b's snapshot keeps its numbering; the message is just gone. */
    int fd;
    CHECK(store_msg_open(b, 0, &fd) == -1 && errno == ENOENT);
    CHECK(store_msg_set_flags(b, 0, STORE_F_SEEN) == -1 && errno == ENOENT);
    CHECK(store_mailbox_refresh(b) == 0);
    CHECK_EQ_INT(store_mailbox_count(b), 2);
    /* Expunging it again is not an error. */
    CHECK(store_mailbox_expunge(b, &one, 1) == 0);
    CHECK_EQ_INT(store_mailbox_count(b), 1);
    CHECK(store_msg_open(b, 0, &fd) == 0);
    if (fd >= 0)
        close(fd);
out:
    store_mailbox_close(a);
    store_mailbox_close(b);
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(exclusive_open)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[STORE_UID_SIZE];
    CHECK(deliver(s, USER, NULL, "m\r\n", uid, sizeof(uid)) == 0);
    struct store_mailbox *a = NULL, *b = NULL, *c = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, STORE_OPEN_EXCLUSIVE, &a) == 0);
    errno = 0;
    CHECK(store_mailbox_open(s, USER, "INBOX", STORE_OPEN_EXCLUSIVE, &b) == -1);
    CHECK(errno == EWOULDBLOCK);
    CHECK(b == NULL);
    /* Delivery and a plain open do not need the lock. */
    CHECK(deliver(s, USER, NULL, "m2\r\n", uid, sizeof(uid)) == 0);
    CHECK(store_mailbox_open(s, USER, NULL, 0, &c) == 0);
    CHECK(c != NULL && store_mailbox_count(c) == 2);
    store_mailbox_close(c);
    /* Another folder has its own lock. */
    CHECK(deliver(s, USER, "Sent", "m\r\n", uid, sizeof(uid)) == 0);
    CHECK(store_mailbox_open(s, USER, "Sent", STORE_OPEN_EXCLUSIVE, &c) == 0);
    store_mailbox_close(c);
    /* Another process is refused too. It is this binary run again (exec,
     * not a bare fork), so it starts clean: under valgrind a forked copy
     * would report the parent's live allocations as its own leaks. */
    pid_t pid = fork();
    if (pid == 0) {
        execl(self_path, "test_mailbox", "--try-lock", root, (char *)NULL);
        _exit(2);
    }
    int status = -1;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    store_mailbox_close(a);
    CHECK(store_mailbox_open(s, USER, NULL, STORE_OPEN_EXCLUSIVE, &b) == 0);
    store_mailbox_close(b);
    /* Bad flags, names, missing mailboxes. */
    CHECK(store_mailbox_open(s, USER, NULL, 2, &b) == -1 && errno == EINVAL);
    CHECK(store_mailbox_open(s, "../x@d", NULL, 0, &b) == -1 && errno == EINVAL);
    CHECK(store_mailbox_open(s, USER, "../x", 0, &b) == -1 && errno == EINVAL);
    CHECK(store_mailbox_open(s, "nobody@example.org", NULL, 0, &b) == -1 &&
          errno == ENOENT);
    CHECK(store_mailbox_open(s, USER, "Nope", 0, &b) == -1 && errno == ENOENT);
    CHECK(b == NULL);
    store_free(s);
    rm_rf(root);
    free(root);
}

/* ---- rebuilds ---- */

static void index_files_remove(const char *root)
{
    char path[4096];
    static const char *const f[] = {"estafeta.index", "estafeta.index-wal",
                                    "estafeta.index-shm"};
    for (int i = 0; i < 3; i++) {
        box_dir(root, f[i], path, sizeof(path));
        unlink(path);
    }
}

/* Delivers 3, flags the second, returns the uniques and the UIDVALIDITY. */
static uint32_t setup_three(struct store *s, char uid[3][STORE_UID_SIZE])
{
    for (int i = 0; i < 3; i++)
        CHECK(deliver(s, USER, NULL, "abc\r\n", uid[i], STORE_UID_SIZE) == 0);
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb == NULL)
        return 0;
    CHECK(store_msg_set_flags(mb, 1, STORE_F_SEEN | STORE_F_REPLIED) == 0);
    uint32_t uv = store_mailbox_uidvalidity(mb);
    store_mailbox_close(mb);
    return uv;
}

static void check_three(struct store *s, char uid[3][STORE_UID_SIZE],
                        uint32_t old_uv)
{
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb == NULL)
        return;
    CHECK(store_mailbox_uidvalidity(mb) > old_uv);
    CHECK_EQ_INT(store_mailbox_count(mb), 3);
    for (size_t i = 0; i < 3 && i < store_mailbox_count(mb); i++) {
        const struct store_msg *m = store_mailbox_msg(mb, i);
        CHECK_EQ_STR(m->unique, uid[i]);
        CHECK_EQ_INT(m->uid, i + 1);
        CHECK_EQ_INT(m->size, 5);
        CHECK_EQ_INT(m->flags, i == 1 ? STORE_F_SEEN | STORE_F_REPLIED : 0);
    }
    /* And it works as an index again. */
    CHECK(store_msg_set_flags(mb, 2, STORE_F_FLAGGED) == 0);
    store_mailbox_close(mb);
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb != NULL) {
        CHECK_EQ_INT(store_mailbox_msg(mb, 2)->flags, STORE_F_FLAGGED);
        store_mailbox_close(mb);
    }
}

TEST(rebuild_after_delete)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[3][STORE_UID_SIZE];
    uint32_t uv = setup_three(s, uid);
    index_files_remove(root);
    /* Within the same second still a new, greater UIDVALIDITY. */
    check_three(s, uid, uv);
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(rebuild_after_garbage)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[3][STORE_UID_SIZE], path[4096], dir[4096];
    uint32_t uv = setup_three(s, uid);
    index_files_remove(root);
    box_dir(root, "estafeta.index", path, sizeof(path));
    static const char garbage[] = "this is not a SQLite database at all, "
                                  "just some bytes\n";
    char big[8192];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = garbage[i % (sizeof(garbage) - 1)];
    CHECK(fs_write_file_atomic(path, big, sizeof(big), 0600) == 0);
    check_three(s, uid, uv);
    box_dir(root, "", dir, sizeof(dir));
    CHECK(dir_has_prefix(dir, "estafeta.index.damaged."));
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(rebuild_after_corrupt_page)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[3][STORE_UID_SIZE], path[4096];
    uint32_t uv = setup_three(s, uid);
    /* A valid header, the pages after it overwritten. */
    box_dir(root, "estafeta.index", path, sizeof(path));
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size >= 4096);
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0);
    if (fd >= 0) {
        char junk[4096];
        memset(junk, 0xa5, sizeof(junk));
        for (off_t off = 100; off + 512 <= st.st_size; off += 1024)
            CHECK(pwrite(fd, junk, 512, off) == 512);
        close(fd);
    }
    check_three(s, uid, uv);
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(rebuild_after_schema_mismatch)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[3][STORE_UID_SIZE], path[4096];
    uint32_t uv = setup_three(s, uid);
    box_dir(root, "estafeta.index", path, sizeof(path));
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL) ==
          SQLITE_OK);
    sqlite3_close(db);
    check_three(s, uid, uv);
    /* Tables that are not ours. */
    index_files_remove(root);
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "CREATE TABLE other(x); PRAGMA user_version = 1",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    CHECK(mb != NULL && store_mailbox_count(mb) == 3);
    store_mailbox_close(mb);
    store_free(s);
    rm_rf(root);
    free(root);
}

/* ---- files changed by other tools, crashes ---- */

TEST(other_tools_and_crashes)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[STORE_UID_SIZE], newd[4096], curd[4096], tmpd[4096];
    char from[8192], to[8192];
    CHECK(deliver(s, USER, NULL, "first\r\n", uid, sizeof(uid)) == 0);
    box_dir(root, "new", newd, sizeof(newd));
    box_dir(root, "cur", curd, sizeof(curd));
    box_dir(root, "tmp", tmpd, sizeof(tmpd));
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    store_mailbox_close(mb);

    /* A crash between rename and index: the file is in new/ without a
     * row. Two such, named out of order, plus one in cur/ with flags, and
     * things that are not messages. */
    put_file(tmpd, "9999999999.M2P1.crash", "crash two\r\n");
    snprintf(from, sizeof(from), "%s/9999999999.M2P1.crash", tmpd);
    snprintf(to, sizeof(to), "%s/9999999999.M2P1.crash,S=11", newd);
    CHECK(rename(from, to) == 0);
    put_file(newd, "9999999999.M1P1.crash", "crash one\r\n");
    put_file(curd, "9999999999.M3P1.mutt:2,SR", "read by mutt\r\n");
    put_file(newd, ".hidden", "not a message");
    snprintf(to, sizeof(to), "%s/9999999999.M4P1.fifo", newd);
    CHECK(mkfifo(to, 0600) == 0);
    snprintf(to, sizeof(to), "%s/9999999999.M5P1.link", newd);
    CHECK(symlink("/etc/passwd", to) == 0);

    mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb == NULL)
        goto out;
    CHECK_EQ_INT(store_mailbox_count(mb), 4);
    if (store_mailbox_count(mb) == 4) {
        const struct store_msg *m = store_mailbox_msg(mb, 1);
        CHECK_EQ_INT(m->uid, 2);
        CHECK_EQ_STR(m->unique, "9999999999.M1P1.crash");
        CHECK_EQ_INT(m->size, 11);
        m = store_mailbox_msg(mb, 2);
        CHECK_EQ_INT(m->uid, 3);
        CHECK_EQ_STR(m->unique, "9999999999.M2P1.crash,S=11");
        m = store_mailbox_msg(mb, 3);
        CHECK_EQ_INT(m->uid, 4);
        CHECK_EQ_STR(m->unique, "9999999999.M3P1.mutt");
        CHECK_EQ_INT(m->flags, STORE_F_SEEN | STORE_F_REPLIED);
        CHECK_EQ_INT(m->size, 14);
    }
    /* Another tool renames (flags, keyword letters) and deletes. */
    snprintf(from, sizeof(from), "%s/9999999999.M3P1.mutt:2,SR", curd);
    snprintf(to, sizeof(to), "%s/9999999999.M3P1.mutt:2,Tab", curd);
    CHECK(rename(from, to) == 0);
    snprintf(from, sizeof(from), "%s/9999999999.M1P1.crash", newd);
    snprintf(to, sizeof(to), "%s/9999999999.M1P1.crash:2,F", curd);
    CHECK(rename(from, to) == 0);
    snprintf(from, sizeof(from), "%s/%s", newd, uid);
    CHECK(unlink(from) == 0);
    uint64_t ms = store_mailbox_msg(mb, 3)->modseq;
    /* The stale snapshot still finds the moved file. */
    char got[64];
    CHECK_EQ_INT(read_msg(mb, 1, got, sizeof(got)), 11);
    CHECK(store_mailbox_refresh(mb) == 0);
    CHECK_EQ_INT(store_mailbox_count(mb), 4);
    CHECK_EQ_INT(store_mailbox_msg(mb, 3)->flags, STORE_F_TRASHED);
    CHECK(store_mailbox_msg(mb, 3)->modseq > ms);
    CHECK_EQ_INT(store_mailbox_msg(mb, 1)->flags, STORE_F_FLAGGED);
    /* Our rename keeps the other tool's keyword letters. */
    CHECK(store_msg_set_flags(mb, 3, STORE_F_SEEN) == 0);
    snprintf(to, sizeof(to), "%s/9999999999.M3P1.mutt:2,Sab", curd);
    CHECK(access(to, F_OK) == 0);
    store_mailbox_close(mb);

    mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb != NULL) {
        /* The deleted first message is gone from the index. */
        CHECK_EQ_INT(store_mailbox_count(mb), 3);
        CHECK_EQ_INT(store_mailbox_msg(mb, 0)->uid, 2);
        CHECK_EQ_INT(store_mailbox_uidnext(mb), 5);
        store_mailbox_close(mb);
    }
out:
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(delivered_before_index_exists)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[5][STORE_UID_SIZE];
    for (int i = 0; i < 5; i++)
        CHECK(deliver(s, USER, "Archive", "m\r\n", uid[i], sizeof(uid[i])) == 0);
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, "Archive", 0, &mb) == 0);
    if (mb != NULL) {
        CHECK_EQ_INT(store_mailbox_count(mb), 5);
        for (size_t i = 0; i < 5 && i < store_mailbox_count(mb); i++) {
            CHECK_EQ_INT(store_mailbox_msg(mb, i)->uid, i + 1);
            CHECK_EQ_STR(store_mailbox_msg(mb, i)->unique, uid[i]);
        }
        store_mailbox_close(mb);
    }
    store_free(s);
    rm_rf(root);
    free(root);
}

/* ---- quota, folders ---- */

TEST(user_create_folders)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[STORE_UID_SIZE], path[4096];
    CHECK(deliver(s, USER, "Sent", "kept\r\n", uid, sizeof(uid)) == 0);
    CHECK(store_user_create(s, USER) == 0);
    CHECK(store_user_create(s, USER) == 0); /* again: nothing changes */
    static const char *const f[] = {".Sent", ".Drafts", ".Trash", ".Junk",
                                    ".Archive"};
    static const char *const sub[] = {"tmp", "new", "cur", "maildirfolder"};
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) {
            char rel[64];
            snprintf(rel, sizeof(rel), "%s/%s", f[i], sub[j]);
            box_dir(root, rel, path, sizeof(path));
            CHECK(access(path, F_OK) == 0);
        }
    box_dir(root, "new", path, sizeof(path));
    CHECK_EQ_INT(dir_list(path, NULL, 0), 0);
    box_dir(root, ".Sent/new", path, sizeof(path));
    CHECK_EQ_INT(dir_list(path, NULL, 0), 1);
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, "Trash", 0, &mb) == 0);
    CHECK(mb != NULL && store_mailbox_count(mb) == 0);
    store_mailbox_close(mb);
    CHECK(store_user_create(s, "bad/@x") == -1 && errno == EINVAL);
    store_free(s);
    rm_rf(root);
    free(root);
}

TEST(quota_over_folders)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    uint64_t bytes = 1, msgs = 1;
    /* No mailbox yet: nothing used. */
    CHECK(store_quota_usage(s, USER, &bytes, &msgs) == 0);
    CHECK(bytes == 0 && msgs == 0);
    CHECK(store_user_create(s, USER) == 0);
    char uid[STORE_UID_SIZE], path[4096];
    CHECK(deliver(s, USER, NULL, "12345\r\n", uid, sizeof(uid)) == 0);   /* 7 */
    CHECK(deliver(s, USER, NULL, "1\r\n", uid, sizeof(uid)) == 0);       /* 3 */
    CHECK(deliver(s, USER, "Sent", "123456789\r\n", uid, sizeof(uid)) == 0);
    CHECK(deliver(s, USER, "Lists.x", "ab\r\n", uid, sizeof(uid)) == 0); /* 4 */
    /* Another tool's folder, and its message without a row. */
    box_dir(root, ".Other", path, sizeof(path));
    CHECK(mkdir(path, 0700) == 0);
    static const char *const sub[] = {"tmp", "new", "cur"};
    for (int i = 0; i < 3; i++) {
        char p2[8192];
        snprintf(p2, sizeof(p2), "%s/%s", path, sub[i]);
        CHECK(mkdir(p2, 0700) == 0);
    }
    char p3[8192];
    snprintf(p3, sizeof(p3), "%s/cur", path);
    put_file(p3, "1.other:2,S", "xyz\r\n"); /* 5 */
    /* A directory that is not a folder is skipped. */
    box_dir(root, ".notafolder", path, sizeof(path));
    CHECK(mkdir(path, 0700) == 0);
    CHECK(store_quota_usage(s, USER, &bytes, &msgs) == 0);
    CHECK_EQ_INT(bytes, 7 + 3 + 11 + 4 + 5);
    CHECK_EQ_INT(msgs, 5);

    /* Expunge lowers it. */
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, "Sent", 0, &mb) == 0);
    size_t zero = 0;
    CHECK(mb != NULL && store_mailbox_expunge(mb, &zero, 1) == 0);
    store_mailbox_close(mb);
    CHECK(store_quota_usage(s, USER, &bytes, &msgs) == 0);
    CHECK_EQ_INT(bytes, 7 + 3 + 4 + 5);
    CHECK_EQ_INT(msgs, 4);
    /* The files alone (for tools) say the same, and write nothing. */
    uint64_t fb = 0, fm = 0;
    CHECK(store_quota_usage_files(s, USER, &fb, &fm) == 0);
    CHECK_EQ_INT(fb, 19);
    CHECK_EQ_INT(fm, 4);
    CHECK(store_quota_usage_files(s, "nobody@example.org", &fb, &fm) == 0 &&
          fb == 0 && fm == 0);

    /* The delivery hook. */
    CHECK(store_deliver_quota(s, USER, 0, 0, 1000000) == 0);
    CHECK(store_deliver_quota(s, USER, 40, 0, 21) == 0);
    errno = 0;
    CHECK(store_deliver_quota(s, USER, 40, 0, 22) == -1 && errno == EDQUOT);
    CHECK(store_deliver_quota(s, USER, 0, 5, 1) == 0);
    errno = 0;
    CHECK(store_deliver_quota(s, USER, 0, 4, 1) == -1 && errno == EDQUOT);
    CHECK(store_deliver_quota(s, USER, 18, 0, 0) == -1 && errno == EDQUOT);
    CHECK(store_deliver_quota(s, USER, UINT64_MAX, 0, UINT64_MAX) == -1 &&
          errno == EDQUOT);
    CHECK(store_deliver_quota(s, "nobody@example.org", 1, 1, 1) == 0);
    CHECK(store_deliver_quota(s, "bad/@x", 1, 1, 1) == -1 && errno == EINVAL);

    store_free(s);
    rm_rf(root);
    free(root);
}

/* ---- concurrency ---- */

#define CONC_N 200

struct conc {
    struct store *s;
    char uids[CONC_N][STORE_UID_SIZE];
    int delivered;
    _Atomic int done;
    /* Flags the other thread set last, by delivery number. */
    unsigned flags[CONC_N];
    int rounds, flag_ops, errors;
};

static void *conc_deliver(void *arg)
{
    struct conc *c = arg;
    for (int i = 0; i < CONC_N; i++) {
        char text[64];
        snprintf(text, sizeof(text), "Subject: %d\r\n\r\n%d\r\n", i, i);
        if (deliver(c->s, USER, NULL, text, c->uids[i], STORE_UID_SIZE) == 0)
            c->delivered++;
    }
    c->done = 1;
    return NULL;
}

/* Which delivery a unique belongs to (the subject says). */
static int conc_which(struct store_mailbox *mb, size_t i)
{
    char got[128];
    if (read_msg(mb, i, got, sizeof(got)) < 0)
        return -1;
    int n = -1;
    if (sscanf(got, "Subject: %d", &n) != 1 || n < 0 || n >= CONC_N)
        return -1;
    return n;
}

static void *conc_reader(void *arg)
{
    struct conc *c = arg;
    unsigned seed = 7;
    while (!c->done || c->rounds < 3) {
        struct store_mailbox *mb = NULL;
        if (store_mailbox_open(c->s, USER, NULL, 0, &mb) < 0) {
            c->errors++;
            continue;
        }
        for (int k = 0; k < 3; k++) {
            size_t n = store_mailbox_count(mb);
            for (int f = 0; f < 4 && n > 0; f++) {
                seed = seed * 1103515245u + 12345u;
                size_t i = (seed >> 8) % n;
                unsigned fl = (seed >> 4) & 63u;
                int which = conc_which(mb, i);
                if (which < 0 || store_msg_set_flags(mb, i, fl) < 0) {
                    c->errors++;
                    continue;
                }
                c->flags[which] = fl;
                c->flag_ops++;
            }
            if (store_mailbox_refresh(mb) < 0)
                c->errors++;
        }
        store_mailbox_close(mb);
        c->rounds++;
    }
    return NULL;
}

TEST(concurrent_delivery_and_sessions)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct conc *c = xcalloc(1, sizeof(*c));
    c->s = store_maildir_new(root, "h");
    /* The index exists before deliveries start, so each gets its UID as
     * it is delivered. */
    char uid[STORE_UID_SIZE];
    CHECK(store_user_create(c->s, USER) == 0);
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(c->s, USER, NULL, 0, &mb) == 0);
    store_mailbox_close(mb);
    (void)uid;
    pthread_t td, tr;
    pthread_create(&td, NULL, conc_deliver, c);
    pthread_create(&tr, NULL, conc_reader, c);
    pthread_join(td, NULL);
    pthread_join(tr, NULL);
    CHECK_EQ_INT(c->delivered, CONC_N);
    CHECK_EQ_INT(c->errors, 0);
    CHECK(c->flag_ops > 0);

    mb = NULL;
    CHECK(store_mailbox_open(c->s, USER, NULL, 0, &mb) == 0);
    if (mb != NULL) {
        CHECK_EQ_INT(store_mailbox_count(mb), CONC_N);
        uint32_t last = 0;
        int bad_order = 0, bad_flags = 0;
        for (size_t i = 0; i < store_mailbox_count(mb) && i < CONC_N; i++) {
            const struct store_msg *m = store_mailbox_msg(mb, i);
            /* Increasing UIDs, in delivery order, one per message. */
            if (m->uid <= last || strcmp(m->unique, c->uids[i]) != 0)
                bad_order++;
            last = m->uid;
            if (m->flags != c->flags[i])
                bad_flags++;
        }
        CHECK_EQ_INT(bad_order, 0);
        CHECK_EQ_INT(bad_flags, 0);
        CHECK_EQ_INT(store_mailbox_uidnext(mb), CONC_N + 1);
        store_mailbox_close(mb);
    }
    store_free(c->s);
    free(c);
    rm_rf(root);
    free(root);
}

/* Two processes delivering while a third thread reads: UIDs stay unique. */
TEST(concurrent_processes)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    struct store_mailbox *mb = NULL;
    CHECK(store_user_create(s, USER) == 0);
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    store_mailbox_close(mb);
    pid_t pid = fork();
    if (pid == 0) {
        int bad = 0;
        for (int i = 0; i < 30; i++) {
            char uid[STORE_UID_SIZE];
            if (deliver(s, USER, NULL, "child\r\n", uid, sizeof(uid)) < 0)
                bad++;
        }
        _exit(bad);
    }
    int opens = 0;
    for (int i = 0; i < 30; i++) {
        char uid[STORE_UID_SIZE];
        CHECK(deliver(s, USER, NULL, "parent\r\n", uid, sizeof(uid)) == 0);
        mb = NULL;
        if (store_mailbox_open(s, USER, NULL, 0, &mb) == 0) {
            opens++;
            store_mailbox_close(mb);
        }
    }
    int status = -1;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_EQ_INT(opens, 30);
    mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb != NULL) {
        CHECK_EQ_INT(store_mailbox_count(mb), 60);
        int bad = 0;
        for (size_t i = 0; i < store_mailbox_count(mb); i++)
            if (store_mailbox_msg(mb, i)->uid != i + 1)
                bad++;
        CHECK_EQ_INT(bad, 0);
        store_mailbox_close(mb);
    }
    store_free(s);
    rm_rf(root);
    free(root);
}

/* ---- in memory ---- */

TEST(mem_mailbox)
{
    struct store *s = store_mem_new();
    char uid[4][STORE_UID_SIZE];
    struct store_mailbox *mb = NULL, *mb2 = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == -1 && errno == ENOENT);
    for (int i = 0; i < 3; i++)
        CHECK(deliver(s, USER, NULL, i == 1 ? "two\r\n" : "m\r\n", uid[i],
                      sizeof(uid[i])) == 0);
    CHECK(store_mailbox_open(s, USER, NULL, STORE_OPEN_EXCLUSIVE, &mb) == 0);
    if (mb == NULL)
        goto out;
    CHECK(store_mailbox_open(s, USER, NULL, STORE_OPEN_EXCLUSIVE, &mb2) == -1 &&
          errno == EWOULDBLOCK);
    CHECK(store_mailbox_uidvalidity(mb) != 0);
    CHECK_EQ_INT(store_mailbox_count(mb), 3);
    for (size_t i = 0; i < 3; i++) {
        CHECK_EQ_INT(store_mailbox_msg(mb, i)->uid, i + 1);
        CHECK_EQ_STR(store_mailbox_msg(mb, i)->unique, uid[i]);
    }
    char got[64];
    CHECK_EQ_INT(read_msg(mb, 1, got, sizeof(got)), 5);
    CHECK_EQ_STR(got, "two\r\n");
    int fd;
    CHECK(store_msg_open(mb, 1, &fd) == 0);
    CHECK(write(fd, "x", 1) == -1); /* read-only */
    close(fd);
    CHECK(deliver(s, USER, NULL, "four\r\n", uid[3], sizeof(uid[3])) == 0);
    CHECK_EQ_INT(store_mailbox_count(mb), 3);
    CHECK(store_mailbox_refresh(mb) == 0);
    CHECK_EQ_INT(store_mailbox_count(mb), 4);
    CHECK_EQ_INT(store_mailbox_msg(mb, 3)->uid, 4);
    uint64_t ms = store_mailbox_msg(mb, 0)->modseq;
    CHECK(store_msg_set_flags(mb, 0, STORE_F_SEEN) == 0);
    CHECK(store_mailbox_msg(mb, 0)->modseq > ms);
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb2) == 0);
    CHECK(mb2 != NULL && store_mailbox_msg(mb2, 0)->flags == STORE_F_SEEN);
    size_t del[] = {3, 0};
    CHECK(store_mailbox_expunge(mb, del, 2) == 0);
    CHECK_EQ_INT(store_mailbox_count(mb), 2);
    CHECK_EQ_INT(store_mem_count(s, USER), 2);
    CHECK(store_msg_open(mb2, 0, &fd) == -1 && errno == ENOENT);
    store_mailbox_close(mb2);
    mb2 = NULL;
    store_mailbox_close(mb);
    mb = NULL;
    CHECK(deliver(s, USER, NULL, "five\r\n", uid[0], sizeof(uid[0])) == 0);
    CHECK(store_mailbox_open(s, USER, NULL, STORE_OPEN_EXCLUSIVE, &mb) == 0);
    if (mb != NULL) {
        CHECK_EQ_INT(store_mailbox_count(mb), 3);
        CHECK_EQ_INT(store_mailbox_msg(mb, 2)->uid, 5);
    }
    /* Folders and quota. */
    uint64_t bytes, msgs;
    CHECK(store_user_create(s, USER) == 0);
    CHECK(store_mailbox_open(s, USER, "Junk", 0, &mb2) == 0);
    CHECK(mb2 != NULL && store_mailbox_count(mb2) == 0);
    store_mailbox_close(mb2);
    CHECK(deliver(s, USER, "Sent", "123\r\n", uid[1], sizeof(uid[1])) == 0);
    CHECK(deliver(s, "alice2@example.org", NULL, "zz\r\n", uid[1],
                  sizeof(uid[1])) == 0);
    CHECK(store_quota_usage(s, USER, &bytes, &msgs) == 0);
    CHECK_EQ_INT(bytes, 5 + 3 + 6 + 5);
    CHECK_EQ_INT(msgs, 4);
    CHECK(store_deliver_quota(s, USER, 20, 0, 1) == 0);
    CHECK(store_deliver_quota(s, USER, 20, 0, 2) == -1 && errno == EDQUOT);
    CHECK(store_deliver_quota(s, USER, 0, 4, 2) == -1 && errno == EDQUOT);
    CHECK(store_mailbox_open(s, USER, "../x", 0, &mb2) == -1 && errno == EINVAL);
out:
    store_mailbox_close(mb);
    store_free(s);
}

/* ---- keywords (doc/store.md "Keywords") ---- */

/* The whole content of a file (static buffer), or "" if unreadable. */
static const char *slurp(const char *path)
{
    static char buf[8192];
    buf[0] = '\0';
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return buf;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static bool has_file(const char *root, const char *sub, const char *name)
{
    char path[8192];
    box_dir(root, sub, path, sizeof(path));
    size_t len = strlen(path);
    snprintf(path + len, sizeof(path) - len, "/%s", name);
    return access(path, F_OK) == 0;
}

static int kw_add(struct store_mailbox *mb, size_t i, const char *kw)
{
    const char *k[1] = {kw};
    return store_msg_update_flags(mb, i, STORE_FLAGS_ADD, 0, k, 1);
}

TEST(keywords_in_names)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[2][STORE_UID_SIZE], path[4096], name[STORE_UID_SIZE + 16];
    CHECK(deliver(s, USER, NULL, "one\r\n", uid[0], sizeof(uid[0])) == 0);
    CHECK(deliver(s, USER, NULL, "two\r\n", uid[1], sizeof(uid[1])) == 0);
    struct store_mailbox *mb = NULL, *mb2 = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb2) == 0);
    if (mb == NULL || mb2 == NULL)
        goto out;
    for (size_t n = 0; n < STORE_KEYWORDS_MAX; n++)
        CHECK(store_mailbox_keyword(mb, n) == NULL);
    uint64_t ms = store_mailbox_msg(mb, 0)->modseq;

    /* Flags and two new keywords at once: letters a, b after the flags. */
    const char *k2[] = {"$Forwarded", "Junk"};
    CHECK(store_msg_update_flags(mb, 0, STORE_FLAGS_ADD, STORE_F_SEEN, k2, 2) == 0);
    snprintf(name, sizeof(name), "%s:2,Sab", uid[0]);
    CHECK(has_file(root, "cur", name));
    box_dir(root, "dovecot-keywords", path, sizeof(path));
    CHECK_EQ_STR(slurp(path), "0 $Forwarded\n1 Junk\n");
    const struct store_msg *m = store_mailbox_msg(mb, 0);
    CHECK_EQ_INT(m->flags, STORE_F_SEEN);
    CHECK_EQ_INT(m->keywords, 3);
    CHECK(m->modseq > ms);
    CHECK_EQ_STR(store_mailbox_keyword(mb, 0), "$Forwarded");
    CHECK_EQ_STR(store_mailbox_keyword(mb, 1), "Junk");
    CHECK(store_mailbox_keyword(mb, 2) == NULL);
    const char *names[STORE_KEYWORDS_MAX];
    CHECK_EQ_INT(store_msg_keywords(mb, 0, names), 2);
    CHECK_EQ_STR(names[0], "$Forwarded");
    CHECK_EQ_STR(names[1], "Junk");

    /* Known names are matched without regard to case; nothing is added
     * to the file. The other session sees the change on refresh. */
    CHECK(kw_add(mb2, 1, "JUNK") == 0);
    snprintf(name, sizeof(name), "%s:2,b", uid[1]);
    CHECK(has_file(root, "cur", name));
    CHECK_EQ_STR(slurp(path), "0 $Forwarded\n1 Junk\n");
    CHECK_EQ_INT(store_mailbox_msg(mb2, 1)->keywords, 2);
    CHECK(store_mailbox_refresh(mb) == 0);
    CHECK_EQ_INT(store_mailbox_msg(mb, 1)->keywords, 2);

    /* Setting the same again changes nothing (no new modseq). */
    ms = store_mailbox_msg(mb, 1)->modseq;
    CHECK(kw_add(mb, 1, "junk") == 0);
    CHECK_EQ_INT(store_mailbox_msg(mb, 1)->modseq, ms);

    /* REMOVE; an unknown name there is no error and adds nothing. */
    const char *rm[] = {"jUnK", "NeverSeen"};
    CHECK(store_msg_update_flags(mb, 1, STORE_FLAGS_REMOVE, 0, rm, 2) == 0);
    snprintf(name, sizeof(name), "%s:2,", uid[1]);
    CHECK(has_file(root, "cur", name));
    CHECK_EQ_INT(store_mailbox_msg(mb, 1)->keywords, 0);
    CHECK(store_mailbox_msg(mb, 1)->modseq > ms);
    CHECK_EQ_STR(slurp(path), "0 $Forwarded\n1 Junk\n");

    /* SET: exactly these flags and keywords (a new one takes slot c). */
    const char *set[] = {"Work"};
    CHECK(store_msg_update_flags(mb, 0, STORE_FLAGS_SET, STORE_F_FLAGGED, set,
                                 1) == 0);
    snprintf(name, sizeof(name), "%s:2,Fc", uid[0]);
    CHECK(has_file(root, "cur", name));
    CHECK_EQ_STR(slurp(path), "0 $Forwarded\n1 Junk\n2 Work\n");
    CHECK_EQ_INT(store_mailbox_msg(mb, 0)->keywords, 4);
    CHECK_EQ_INT(store_mailbox_msg(mb, 0)->flags, STORE_F_FLAGGED);

    /* store_msg_set_flags keeps the keywords. */
    CHECK(store_msg_set_flags(mb, 0, STORE_F_SEEN) == 0);
    snprintf(name, sizeof(name), "%s:2,Sc", uid[0]);
    CHECK(has_file(root, "cur", name));
    CHECK_EQ_INT(store_mailbox_msg(mb, 0)->keywords, 4);

    /* Bad arguments change nothing. */
    const char *badk[] = {"ok", "not ok"};
    errno = 0;
    CHECK(store_msg_update_flags(mb, 0, STORE_FLAGS_ADD, 0, badk, 2) == -1 &&
          errno == EINVAL);
    CHECK(store_msg_update_flags(mb, 0, STORE_FLAGS_ADD, 64, NULL, 0) == -1 &&
          errno == EINVAL);
    CHECK(store_msg_update_flags(mb, 0, (enum store_flags_op)7, 0, NULL, 0) == -1 &&
          errno == EINVAL);
    CHECK(store_msg_update_flags(mb, 5, STORE_FLAGS_ADD, 0, NULL, 0) == -1 &&
          errno == EINVAL);
    CHECK(has_file(root, "cur", name));
    CHECK_EQ_STR(slurp(path), "0 $Forwarded\n1 Junk\n2 Work\n");

    /* Expunged by the other session: ENOENT, nothing written. */
    size_t zero = 0;
    CHECK(store_mailbox_refresh(mb2) == 0);
    CHECK(store_mailbox_expunge(mb2, &zero, 1) == 0);
    errno = 0;
    CHECK(kw_add(mb, 0, "Late") == -1 && errno == ENOENT);
    CHECK_EQ_STR(slurp(path), "0 $Forwarded\n1 Junk\n2 Work\n");
out:
    store_mailbox_close(mb);
    store_mailbox_close(mb2);
    store_free(s);
    rm_rf(root);
    free(root);
}

/* The index lost: keywords come back from the names and dovecot-keywords
 * (with a new UIDVALIDITY, as every rebuild). */
TEST(keywords_survive_rebuild)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[3][STORE_UID_SIZE];
    for (int i = 0; i < 3; i++)
        CHECK(deliver(s, USER, NULL, "x\r\n", uid[i], sizeof(uid[i])) == 0);
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb == NULL)
        goto out;
    const char *k0[] = {"Alpha", "Beta"}, *k2[] = {"Gamma"};
    CHECK(store_msg_update_flags(mb, 0, STORE_FLAGS_ADD, STORE_F_SEEN, k0, 2) == 0);
    CHECK(store_msg_update_flags(mb, 2, STORE_FLAGS_ADD, 0, k2, 1) == 0);
    uint32_t uv = store_mailbox_uidvalidity(mb);
    store_mailbox_close(mb);
    mb = NULL;
    sleep(1); /* a new UIDVALIDITY is the clock's, or one more */
    index_files_remove(root);
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb == NULL)
        goto out;
    CHECK(store_mailbox_uidvalidity(mb) > uv);
    CHECK_EQ_INT(store_mailbox_count(mb), 3);
    const char *names[STORE_KEYWORDS_MAX];
    for (size_t i = 0; i < store_mailbox_count(mb); i++) {
        const struct store_msg *m = store_mailbox_msg(mb, i);
        size_t n = store_msg_keywords(mb, i, names);
        if (strcmp(m->unique, uid[0]) == 0) {
            CHECK_EQ_INT(m->flags, STORE_F_SEEN);
            CHECK(n == 2 && strcmp(names[0], "Alpha") == 0 &&
                  strcmp(names[1], "Beta") == 0);
        } else if (strcmp(m->unique, uid[2]) == 0) {
            CHECK(n == 1 && strcmp(names[0], "Gamma") == 0);
        } else {
            CHECK_EQ_INT(n, 0);
        }
    }
out:
    store_mailbox_close(mb);
    store_free(s);
    rm_rf(root);
    free(root);
}

/* A folder Dovecot (or another tool) has used: its dovecot-keywords with
 * a hole, an entry that is no atom, letters without an entry. We read
 * what it names, keep what we do not know, and add in its format. */
TEST(keywords_dovecot_folder)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[STORE_UID_SIZE], path[4096], cur[4096], kwf[4096];
    CHECK(deliver(s, USER, NULL, "x\r\n", uid, sizeof(uid)) == 0);
    box_dir(root, "cur", cur, sizeof(cur));
    box_dir(root, "dovecot-keywords", kwf, sizeof(kwf));
    put_file(cur, "1000000000.M1P1.dovecot,S=4,W=4:2,Sabcz", "hi\r\n");
    /* Slot 1 (b) has no entry; slot 4 (e) is not an atom; a line without
     * a number and one out of range are ignored, as Dovecot does. */
    char dir[4096];
    box_dir(root, "", dir, sizeof(dir));
    put_file(dir, "dovecot-keywords",
             "0 $Junk\n2 NonJunk\nfoo\n4 has space(\n30 Far\n");
    struct stat st0;
    CHECK(stat(kwf, &st0) == 0);
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb == NULL)
        goto out;
    CHECK_EQ_STR(store_mailbox_keyword(mb, 0), "$Junk");
    CHECK(store_mailbox_keyword(mb, 1) == NULL);
    CHECK_EQ_STR(store_mailbox_keyword(mb, 2), "NonJunk");
    CHECK(store_mailbox_keyword(mb, 4) == NULL);
    size_t dv = 0;
    for (size_t i = 0; i < store_mailbox_count(mb); i++)
        if (strncmp(store_mailbox_msg(mb, i)->unique, "1000000000.", 11) == 0)
            dv = i;
    const struct store_msg *m = store_mailbox_msg(mb, dv);
    CHECK_EQ_INT(m->flags, STORE_F_SEEN);
    CHECK_EQ_INT(m->keywords, (1u << 0) | (1u << 2)); /* a, c */
    CHECK_EQ_INT(m->vsize, 4);
    /* A new keyword: not slot 1, whose letter b a file still carries
     * (its meaning lost, it must not come to mean something else), not
     * slot 4 (taken), so slot 3 (d). */
    size_t ours = dv == 0 ? 1 : 0;
    CHECK(kw_add(mb, ours, "Newer") == 0);
    CHECK_EQ_STR(slurp(kwf), "0 $Junk\n2 NonJunk\n3 Newer\n4 has space(\n");
    struct stat st1;
    CHECK(stat(kwf, &st1) == 0);
    CHECK(st1.st_mtim.tv_sec > st0.st_mtim.tv_sec); /* Dovecot rereads it */
    snprintf(path, sizeof(path), "%s:2,d", uid);
    CHECK(has_file(root, "cur", path));
    /* SET on the Dovecot message: named keywords change, the letters b
     * and z (no name) stay untouched. */
    const char *set[] = {"Newer"};
    CHECK(store_msg_update_flags(mb, dv, STORE_FLAGS_SET, STORE_F_SEEN, set,
                                 1) == 0);
    CHECK(has_file(root, "cur", "1000000000.M1P1.dovecot,S=4,W=4:2,Sbdz"));
    CHECK_EQ_INT(store_mailbox_msg(mb, dv)->keywords, 1u << 3);
out:
    store_mailbox_close(mb);
    store_free(s);
    rm_rf(root);
    free(root);
}

/* 26 keywords per folder (a..z): the 27th is refused with EMLINK and
 * nothing changes; removing a keyword does not free its slot (files may
 * still carry its letter), but known names keep working. */
TEST(keywords_limit)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[STORE_UID_SIZE], kwf[4096], name[STORE_UID_SIZE + 64];
    CHECK(deliver(s, USER, NULL, "x\r\n", uid, sizeof(uid)) == 0);
    CHECK(deliver(s, USER, NULL, "y\r\n", NULL, 0) == 0);
    box_dir(root, "dovecot-keywords", kwf, sizeof(kwf));
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb == NULL)
        goto out;
    char kw[STORE_KEYWORDS_MAX][16];
    const char *all[STORE_KEYWORDS_MAX];
    for (int i = 0; i < STORE_KEYWORDS_MAX; i++) {
        snprintf(kw[i], sizeof(kw[i]), "kw%02d", i);
        all[i] = kw[i];
    }
    /* 25 one by one, then the 26th and a 27th in one call: refused as a
     * whole. */
    for (int i = 0; i < 25; i++)
        CHECK(kw_add(mb, 0, kw[i]) == 0);
    const char *two[] = {kw[25], "one-too-many"};
    errno = 0;
    CHECK(store_msg_update_flags(mb, 1, STORE_FLAGS_ADD, 0, two, 2) == -1 &&
          errno == EMLINK);
    CHECK(store_mailbox_keyword(mb, 25) == NULL);
    CHECK(kw_add(mb, 1, kw[25]) == 0);
    errno = 0;
    CHECK(kw_add(mb, 1, "one-too-many") == -1 && errno == EMLINK);
    CHECK(kw_add(mb, 0, "ANOTHER") == -1 && errno == EMLINK);
    /* All 26 on one message: letters a..z after the flags. */
    CHECK(store_msg_update_flags(mb, 0, STORE_FLAGS_SET, STORE_F_SEEN, all,
                                 STORE_KEYWORDS_MAX) == 0);
    snprintf(name, sizeof(name), "%s:2,Sabcdefghijklmnopqrstuvwxyz", uid);
    CHECK(has_file(root, "cur", name));
    CHECK_EQ_INT(store_mailbox_msg(mb, 0)->keywords, 0x3ffffff);
    const char *f = slurp(kwf);
    CHECK(strncmp(f, "0 kw00\n1 kw01\n", 14) == 0);
    CHECK(strstr(f, "25 kw25\n") != NULL && strstr(f, "many") == NULL);
    /* Removing leaves the table full; a known name still works. */
    const char *rm[] = {"KW03"};
    CHECK(store_msg_update_flags(mb, 0, STORE_FLAGS_REMOVE, 0, rm, 1) == 0);
    CHECK(kw_add(mb, 0, "one-too-many") == -1 && errno == EMLINK);
    CHECK(kw_add(mb, 0, "Kw03") == 0);
    CHECK_EQ_INT(store_mailbox_msg(mb, 0)->keywords, 0x3ffffff);
out:
    store_mailbox_close(mb);
    store_free(s);
    rm_rf(root);
    free(root);
}

#define KWC_N 12

/* Child of keywords_concurrent: adds KWC_N keywords named <tag>NN to
 * messages 0 and 1 (alternating), one call each. */
static int kwc_child(const char *root, char tag)
{
    struct store *s = store_maildir_new(root, "h");
    struct store_mailbox *mb = NULL;
    int bad = 0;
    if (store_mailbox_open(s, USER, NULL, 0, &mb) < 0)
        bad = 100;
    for (int i = 0; mb != NULL && i < KWC_N; i++) {
        char kw[16];
        snprintf(kw, sizeof(kw), "%c%02d", tag, i);
        /* Both on message 0 (a read-modify-write race), every other one
         * also on message 1. */
        if (kw_add(mb, 0, kw) < 0 || (i % 2 == 0 && kw_add(mb, 1, kw) < 0))
            bad++;
    }
    store_mailbox_close(mb);
    store_free(s);
    return bad;
}

/* Two processes adding keywords at once: none lost, no letter given
 * twice, every name once in dovecot-keywords. */
TEST(keywords_concurrent)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[2][STORE_UID_SIZE];
    CHECK(deliver(s, USER, NULL, "x\r\n", uid[0], sizeof(uid[0])) == 0);
    CHECK(deliver(s, USER, NULL, "y\r\n", uid[1], sizeof(uid[1])) == 0);
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    store_mailbox_close(mb);
    mb = NULL;
    pid_t pid[2];
    for (int c = 0; c < 2; c++) {
        pid[c] = fork();
        if (pid[c] == 0) {
            char tag[2] = {c == 0 ? 'p' : 'q', '\0'};
            execl(self_path, self_path, "--kw-child", root, tag, (char *)NULL);
            _exit(127);
        }
    }
    for (int c = 0; c < 2; c++) {
        int status = -1;
        CHECK(pid[c] > 0 && waitpid(pid[c], &status, 0) == pid[c]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb == NULL)
        goto out;
    /* 2 * KWC_N names in distinct slots, each exactly once. */
    size_t named = 0;
    for (size_t n = 0; n < STORE_KEYWORDS_MAX; n++) {
        const char *k = store_mailbox_keyword(mb, n);
        if (k == NULL)
            continue;
        named++;
        for (size_t j = 0; j < n; j++)
            CHECK(store_mailbox_keyword(mb, j) == NULL ||
                  strcmp(store_mailbox_keyword(mb, j), k) != 0);
    }
    CHECK_EQ_INT(named, 2 * KWC_N);
    char kwf[4096];
    box_dir(root, "dovecot-keywords", kwf, sizeof(kwf));
    const char *f = slurp(kwf);
    size_t lines = 0;
    for (const char *c = f; *c; c++)
        lines += *c == '\n';
    CHECK_EQ_INT(lines, 2 * KWC_N);
    const char *names[STORE_KEYWORDS_MAX];
    CHECK_EQ_INT(store_msg_keywords(mb, 0, names), 2 * KWC_N);
    CHECK_EQ_INT(store_msg_keywords(mb, 1, names), KWC_N);
    for (size_t i = 0; i < store_msg_keywords(mb, 1, names); i++) {
        int num = atoi(names[i] + 1);
        CHECK(num % 2 == 0);
    }
out:
    store_mailbox_close(mb);
    store_free(s);
    rm_rf(root);
    free(root);
}

/* Child of exclusive_open: 0 if the lock is refused with EWOULDBLOCK. */
static int try_lock(const char *root)
{
    struct store *s = store_maildir_new(root, "h");
    struct store_mailbox *x = NULL;
    int r = store_mailbox_open(s, USER, NULL, STORE_OPEN_EXCLUSIVE, &x);
    int ok = r == -1 && errno == EWOULDBLOCK;
    if (x != NULL)
        store_mailbox_close(x);
    store_free(s);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--try-lock") == 0)
        return try_lock(argv[2]);
    if (argc == 4 && strcmp(argv[1], "--kw-child") == 0)
        return kwc_child(argv[2], argv[3][0]);
    if (argc < 1 || realpath(argv[0], self_path) == NULL)
        return 1;
    log_set_level(LOG_ERR); /* rebuilds are logged at warn: expected here */
    RUN(uids_in_delivery_order);
    RUN(snapshot_and_refresh);
    RUN(flags_rename_into_cur);
    RUN(expunge_and_no_uid_reuse);
    RUN(expunged_elsewhere);
    RUN(exclusive_open);
    RUN(rebuild_after_delete);
    RUN(rebuild_after_garbage);
    RUN(rebuild_after_corrupt_page);
    RUN(rebuild_after_schema_mismatch);
    RUN(other_tools_and_crashes);
    RUN(delivered_before_index_exists);
    RUN(user_create_folders);
    RUN(quota_over_folders);
    RUN(concurrent_delivery_and_sessions);
    RUN(concurrent_processes);
    RUN(mem_mailbox);
    RUN(keywords_in_names);
    RUN(keywords_survive_rebuild);
    RUN(keywords_dovecot_folder);
    RUN(keywords_limit);
    RUN(keywords_concurrent);
    return harness_done("test_mailbox");
}
