/* Tests of batched delivery (store.h store_deliver_begin/_commit, doc/store.md
 * "Batched delivery"): a batch on one filesystem costs one syncfs and one
 * fsync per new/ instead of an fsync per file, every message of it lands
 * whole, and a failed flush fails exactly the messages it was to cover,
 * leaving nothing visible. */
#include <dirent.h>
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "harness.h"
#include "lib/fsutil.h"
#include "lib/xalloc.h"
#include "store/mailbox.h"
#include "store/store.h"
#include "store/store_backend.h" /* struct store_flush, to check when its descriptor opens */
#include "store_testlib.h"

#define ALICE "alice@example.org"
#define BOB "bob@example.org"

/*
 * Seams: this program's fsync and syncfs are found before libc's, so the
 * store's flushes are counted here and can be made to fail (files and
 * directories apart), as a disk would.
 */
static int n_fsync_file, n_fsync_dir, n_syncfs;
static int fail_fsync_file, fail_fsync_dir, fail_syncfs; /* errno, or 0 */
static ino_t fail_dir_ino; /* this directory's fsync fails (EIO) */

int fsync(int fd)
{
    struct stat sb;
    bool dir = fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (dir)
        n_fsync_dir++;
    else
        n_fsync_file++;
    int fail = dir ? fail_fsync_dir : fail_fsync_file;
    if (dir && fail_dir_ino != 0 && sb.st_ino == fail_dir_ino)
        fail = EIO;
    if (fail != 0) {
        errno = fail;
        return -1;
    }
    return (int)syscall(SYS_fsync, fd);
}

int syncfs(int fd)
{
    n_syncfs++;
    if (fail_syncfs != 0) {
        errno = fail_syncfs;
        return -1;
    }
    return (int)syscall(SYS_syncfs, fd);
}

static void counters_reset(void)
{
    n_fsync_file = n_fsync_dir = n_syncfs = 0;
    fail_fsync_file = fail_fsync_dir = fail_syncfs = 0;
    fail_dir_ino = 0;
}

/* The messages of one batch: where each goes and what it says. */
struct item {
    const char *mailbox, *folder, *sub; /* sub: its Maildir under root */
    char text[64];
};

static struct item items[] = {
    {ALICE, NULL, "example.org/alice", ""},
    {ALICE, NULL, "example.org/alice", ""},
    {ALICE, "Work", "example.org/alice/.Work", ""},
    {BOB, NULL, "example.org/bob", ""},
    {ALICE, NULL, "example.org/alice", ""},
    {BOB, NULL, "example.org/bob", ""},
};
#define NITEMS (sizeof(items) / sizeof(items[0]))

/* A store with both users and one message already in each folder (the
 * directories exist and are cached: only the batch's flushes are
 * counted). */
static struct store *batch_store(const char *root)
{
    struct store *s = store_maildir_new(root, "h");
    char uid[STORE_UID_SIZE];
    CHECK(deliver(s, ALICE, NULL, "warm\r\n", uid, sizeof(uid)) == 0);
    CHECK(deliver(s, ALICE, "Work", "warm\r\n", uid, sizeof(uid)) == 0);
    CHECK(deliver(s, BOB, NULL, "warm\r\n", uid, sizeof(uid)) == 0);
    for (size_t i = 0; i < NITEMS; i++)
        snprintf(items[i].text, sizeof(items[i].text), "Subject: %zu\r\n\r\nbody %zu\r\n",
                 i, i);
    return s;
}

/* A test's store, in a directory of its own, and its flusher. */
struct fixture {
    char *root;
    struct store *s;
    struct store_flush *fl;
};

static bool fixture_setup(struct fixture *f)
{
    f->root = make_tmpdir();
    if (f->root == NULL)
        return false;
    f->s = batch_store(f->root);
    f->fl = store_flush_new();
    counters_reset();
    return true;
}

static void fixture_teardown(struct fixture *f)
{
    store_flush_free(f->fl);
    store_free(f->s);
    rm_rf(f->root);
    free(f->root);
}

/* Begins every item (all must succeed) into v. */
static void batch_begin(struct store *s, struct store_flush *fl, struct store_commit *v)
{
    for (size_t i = 0; i < NITEMS; i++) {
        size_t len = strlen(items[i].text);
        struct src src = {(const unsigned char *)items[i].text, len, 0, 7, 0, 0};
        v[i] = (struct store_commit){.p = NULL};
        CHECK(store_deliver_begin(s, fl, items[i].mailbox, items[i].folder,
                                  "Return-Path: <a@b>\r\n", 20, src_read, &src,
                                  &v[i].p) == 0);
    }
}

/* How many files a folder's new/ and tmp/ hold. */
static int count_in(const char *root, const char *sub, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s/%s", root, sub, dir);
    return dir_list(path, NULL, 0);
}

/* Each delivered item is in its new/ under its uid, whole. */
static void check_landed(const char *root, const struct store_commit *v)
{
    for (size_t i = 0; i < NITEMS; i++) {
        CHECK_EQ_INT(v[i].err, 0);
        char path[8192], want[256];
        snprintf(path, sizeof(path), "%s/%s/new/%s", root, items[i].sub, v[i].uid);
        snprintf(want, sizeof(want), "Return-Path: <a@b>\r\n%s", items[i].text);
        struct buf f;
        CHECK(fs_read_file(path, 4096, &f) == 0);
        if (f.data != NULL) {
            CHECK(f.len == strlen(want) && memcmp(f.data, want, f.len) == 0);
            buf_free(&f);
        }
        for (size_t k = 0; k < i; k++)
            CHECK(strcmp(v[i].uid, v[k].uid) != 0);
    }
}

/* Whether this machine batches with syncfs (Linux 5.8 or later, a
 * filesystem whose syncfs is trusted); if not, the batch v is committed
 * and the fixture torn down, and the test stops there (it checks the
 * syncfs path only). Either way the flusher's descriptor was opened by
 * begin, before the batch's first byte was written (never at commit:
 * syncfs would not report an error from before its open). */
static bool syncfs_used; /* the last fixture's flusher had a descriptor */

static bool syncfs_here(struct fixture *f, struct store_commit *v)
{
    if (f->fl->syncfs_ok)
        CHECK_EQ_INT(f->fl->n, 1);
    if (f->fl->syncfs_ok && f->fl->n == 1 && f->fl->fd[0] >= 0)
        return true;
    fprintf(stderr, "note: syncfs not used here, its checks skipped\n");
    store_deliver_commit(f->s, f->fl, v, NITEMS);
    fixture_teardown(f);
    return false;
}

/* Six messages into three folders on one filesystem: one syncfs, one fsync
 * of each new/, none of a file; every message whole under its uid; tmp/
 * stays empty. */
TEST(batch_one_syncfs)
{
    struct fixture f;
    if (!fixture_setup(&f))
        return;
    struct store_commit v[NITEMS];
    batch_begin(f.s, f.fl, v);
    if (!syncfs_here(&f, v))
        return;
    store_deliver_commit(f.s, f.fl, v, NITEMS);
    CHECK_EQ_INT(n_syncfs, 1);
    CHECK_EQ_INT(n_fsync_file, 0);
    CHECK_EQ_INT(n_fsync_dir, 3);
    check_landed(f.root, v);
    CHECK_EQ_INT(count_in(f.root, "example.org/alice", "new"), 4);
    CHECK_EQ_INT(count_in(f.root, "example.org/alice/.Work", "new"), 2);
    CHECK_EQ_INT(count_in(f.root, "example.org/bob", "new"), 3);
    CHECK_EQ_INT(count_in(f.root, "example.org/alice", "tmp"), 0);
    for (size_t i = 0; i < NITEMS; i++)
        CHECK(v[i].p == NULL);
    fixture_teardown(&f);
}

/* Without a flusher, and for a batch of one with it: an fsync of each file,
 * as store_deliver does; new/ still once per folder. */
TEST(batch_fsync_each)
{
    struct fixture f;
    if (!fixture_setup(&f))
        return;
    struct store_commit v[NITEMS];
    batch_begin(f.s, NULL, v);
    store_deliver_commit(f.s, NULL, v, NITEMS);
    CHECK_EQ_INT(n_syncfs, 0);
    CHECK_EQ_INT(n_fsync_file, (int)NITEMS);
    CHECK_EQ_INT(n_fsync_dir, 3);
    check_landed(f.root, v);

    counters_reset();
    struct src src = {(const unsigned char *)"one\r\n", 5, 0, 5, 0, 0};
    CHECK(store_deliver_begin(f.s, f.fl, ALICE, NULL, "", 0, src_read, &src, &v[0].p) == 0);
    store_deliver_commit(f.s, f.fl, v, 1);
    CHECK_EQ_INT(v[0].err, 0);
    CHECK_EQ_INT(n_syncfs, 0);
    CHECK_EQ_INT(n_fsync_file, 1);
    CHECK_EQ_INT(n_fsync_dir, 1);
    fixture_teardown(&f);
}

/*
 * A batch whose flush fails (*knob set to EIO for its commit): every
 * message fails with the error, none is visible (a name given before the
 * failed fsync of new/ is taken back: the retry must not make a second
 * copy), nothing is left in tmp/, and the next batch delivers. The flush
 * counters of the failed commit are left in *file_r and *dir_r.
 */
static bool batch_fails_whole(int *knob, int *file_r, int *dir_r)
{
    struct fixture f;
    if (!fixture_setup(&f))
        return false;
    struct store_commit v[NITEMS];
    batch_begin(f.s, f.fl, v);
    if (knob == &fail_syncfs && !syncfs_here(&f, v))
        return false;
    syncfs_used = f.fl->n == 1 && f.fl->fd[0] >= 0;
    *knob = EIO;
    store_deliver_commit(f.s, f.fl, v, NITEMS);
    *knob = 0;
    *file_r = n_fsync_file;
    *dir_r = n_fsync_dir;
    for (size_t i = 0; i < NITEMS; i++)
        CHECK_EQ_INT(v[i].err, EIO);
    CHECK_EQ_INT(count_in(f.root, "example.org/alice", "new"), 1);
    CHECK_EQ_INT(count_in(f.root, "example.org/alice/.Work", "new"), 1);
    CHECK_EQ_INT(count_in(f.root, "example.org/bob", "new"), 1);
    CHECK_EQ_INT(count_in(f.root, "example.org/alice", "tmp"), 0);
    CHECK_EQ_INT(count_in(f.root, "example.org/bob", "tmp"), 0);
    batch_begin(f.s, f.fl, v);
    store_deliver_commit(f.s, f.fl, v, NITEMS);
    check_landed(f.root, v);
    fixture_teardown(&f);
    return true;
}

/* The batch's syncfs fails: and no fsync of a file follows that could
 * report "ok" for data the failed flush lost. */
TEST(batch_syncfs_fails)
{
    int files = -1, dirs = -1;
    if (!batch_fails_whole(&fail_syncfs, &files, &dirs))
        return;
    CHECK_EQ_INT(files, 0);
    CHECK_EQ_INT(dirs, 0);
}

/* The fsync of new/ fails, after the names were given. */
TEST(batch_dir_fsync_fails)
{
    int files = -1, dirs = -1;
    if (!batch_fails_whole(&fail_fsync_dir, &files, &dirs))
        return;
    CHECK_EQ_INT(files, syncfs_used ? 0 : (int)NITEMS);
    CHECK_EQ_INT(dirs, 3);
}

/* One folder's fsync of new/ fails: its messages fail and leave nothing,
 * the other folders' land. */
TEST(batch_one_folder_fails)
{
    struct fixture f;
    if (!fixture_setup(&f))
        return;
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/example.org/bob/new", f.root);
    CHECK(stat(path, &sb) == 0);
    struct store_commit v[NITEMS];
    batch_begin(f.s, f.fl, v);
    fail_dir_ino = sb.st_ino;
    store_deliver_commit(f.s, f.fl, v, NITEMS);
    fail_dir_ino = 0;
    for (size_t i = 0; i < NITEMS; i++)
        CHECK_EQ_INT(v[i].err, strcmp(items[i].mailbox, BOB) == 0 ? EIO : 0);
    CHECK_EQ_INT(count_in(f.root, "example.org/bob", "new"), 1);
    CHECK_EQ_INT(count_in(f.root, "example.org/bob", "tmp"), 0);
    CHECK_EQ_INT(count_in(f.root, "example.org/alice", "new"), 4);
    CHECK_EQ_INT(count_in(f.root, "example.org/alice/.Work", "new"), 2);
    fixture_teardown(&f);
}

/* A begun delivery given up leaves nothing; the rest of the batch lands. */
TEST(batch_abort)
{
    struct fixture f;
    if (!fixture_setup(&f))
        return;
    struct store_commit v[NITEMS];
    batch_begin(f.s, f.fl, v);
    store_deliver_abort(v[1].p);
    store_deliver_abort(v[3].p);
    v[1] = v[4];
    v[3] = v[5];
    store_deliver_commit(f.s, f.fl, v, 4);
    for (size_t i = 0; i < 4; i++)
        CHECK_EQ_INT(v[i].err, 0);
    CHECK_EQ_INT(count_in(f.root, "example.org/alice", "new"), 3);
    CHECK_EQ_INT(count_in(f.root, "example.org/bob", "new"), 2);
    CHECK_EQ_INT(count_in(f.root, "example.org/alice", "tmp"), 0);
    CHECK_EQ_INT(count_in(f.root, "example.org/bob", "tmp"), 0);
    fixture_teardown(&f);
}

/* A folder with an index: the batch's messages get their rows and UIDs in
 * order, each under the index's lock. */
TEST(batch_indexed_folder)
{
    struct fixture f;
    if (!fixture_setup(&f))
        return;
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(f.s, ALICE, NULL, 0, &mb) == 0); /* the index */
    struct store_commit v[NITEMS];
    batch_begin(f.s, f.fl, v);
    store_deliver_commit(f.s, f.fl, v, NITEMS);
    check_landed(f.root, v);
    char idx[4096], dump[4096], want[4096];
    long next = 0;
    snprintf(idx, sizeof(idx), "%s/example.org/alice/estafeta.index", f.root);
    CHECK(index_dump(idx, dump, sizeof(dump), &next) == 0);
    /* The warm-up message has UID 1; the batch's three INBOX ones follow
     * in batch order. */
    snprintf(want, sizeof(want), "2:%s;3:%s;4:%s;", v[0].uid, v[1].uid, v[4].uid);
    CHECK(strstr(dump, want) != NULL);
    CHECK_EQ_INT(next, 5);
    if (mb != NULL) {
        CHECK(store_mailbox_refresh(mb) == 0);
        CHECK_EQ_INT(store_mailbox_count(mb), 4);
        store_mailbox_close(mb);
    }
    fixture_teardown(&f);
}

/* The usage file (doc/store.md "The usage file") gets one line per folder
 * and batch, with the batch's bytes and messages there; the running total
 * still equals an exact reading. */
TEST(batch_usage_one_line_per_folder)
{
    struct fixture f;
    if (!fixture_setup(&f))
        return;
    uint64_t b0, m0, b, m, cb, cm;
    CHECK(store_quota_usage(f.s, ALICE, &b0, &m0) == 0); /* makes the file */
    CHECK_EQ_INT(m0, 2);
    struct store_commit v[NITEMS];
    batch_begin(f.s, f.fl, v);
    store_deliver_commit(f.s, f.fl, v, NITEMS);
    check_landed(f.root, v);
    char path[4096];
    snprintf(path, sizeof(path), "%s/example.org/alice/estafeta.usage", f.root);
    struct buf text;
    CHECK(fs_read_file(path, 4096, &text) == 0);
    size_t lines = 0;
    for (size_t i = 0; text.data != NULL && i < text.len; i++)
        lines += text.data[i] == '\n';
    /* The header, the reading's total, then the INBOX's three messages and
     * Work's one: a line each for the two folders. */
    CHECK_EQ_INT(lines, 4);
    buf_free(&text);
    CHECK(store_quota_usage_cached(f.s, ALICE, &cb, &cm) == 0);
    CHECK(store_quota_usage(f.s, ALICE, &b, &m) == 0);
    CHECK_EQ_INT(cm, m);
    CHECK_EQ_INT(cb, b);
    CHECK_EQ_INT(m, 6);
    fixture_teardown(&f);
}

/* The in-memory backend takes batches too (kept in memory until commit). */
TEST(batch_mem_backend)
{
    struct store *s = store_mem_new();
    struct store_flush *fl = store_flush_new();
    struct store_commit v[3];
    for (size_t i = 0; i < 3; i++) {
        struct src src = {(const unsigned char *)"hello\r\n", 7, 0, 3, 0, 0};
        CHECK(store_deliver_begin(s, fl, ALICE, NULL, "P: 1\r\n", 6, src_read, &src,
                                  &v[i].p) == 0);
    }
    CHECK_EQ_INT(store_mem_count(s, ALICE), 0);
    store_deliver_commit(s, fl, v, 3);
    for (size_t i = 0; i < 3; i++)
        CHECK_EQ_INT(v[i].err, 0);
    CHECK_EQ_INT(store_mem_count(s, ALICE), 3);
    size_t len = 0;
    char *m = store_mem_get(s, ALICE, 2, &len);
    CHECK(m != NULL && len == 13 && memcmp(m, "P: 1\r\nhello\r\n", 13) == 0);
    free(m);
    struct src bad = {(const unsigned char *)"x", 1, 0, 1, 0, 1};
    struct store_pending *p = NULL;
    CHECK(store_deliver_begin(s, fl, ALICE, NULL, "", 0, src_read, &bad, &p) == -1);
    CHECK(p == NULL);
    store_flush_free(fl);
    store_free(s);
}

int main(void)
{
    RUN(batch_one_syncfs);
    RUN(batch_fsync_each);
    RUN(batch_syncfs_fails);
    RUN(batch_dir_fsync_fails);
    RUN(batch_one_folder_fails);
    RUN(batch_abort);
    RUN(batch_indexed_folder);
    RUN(batch_usage_one_line_per_folder);
    RUN(batch_mem_backend);
    return harness_done("test_store_batch");
}
