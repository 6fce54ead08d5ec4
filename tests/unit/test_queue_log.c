/*
 * Tests of the fs queue's accept log (doc/queue.md "The accept log"): a
 * message's life in a segment, recovery with damaged, torn and torn-tail
 * records, spill to files by size and by memory, rotation and reuse of
 * spare segments, and the body checksum of queue files.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "harness.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/qfile.h"
#include "queue/queue.h"
#include "queue/queue_fs_int.h"
#include "queue/queue_log.h"
#include "queue_testlib.h"

/* ---- the body checksum ---- */

/* qlog_crc (ISA-L's where built with it) is zlib's CRC-32 for every length
 * and alignment, fed whole or in pieces, and qlog_crc_combine joins it: a
 * queue written by one build is read by the other. */
TEST(qlog_crc_is_zlibs)
{
    CHECK_EQ_INT(qlog_crc(0, "123456789", 9), 0xCBF43926u); /* the check value */
    CHECK_EQ_INT(qlog_crc(0, "", 0), 0);
    enum { N = 200 * 1024 + 77 };
    unsigned char *b = xmalloc(N);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        b[i] = (unsigned char)x;
    }
    static const size_t lens[] = {1, 2, 3, 7, 15, 16, 17, 31, 63, 64, 65, 127, 255,
                                  256, 1000, 4095, 4096, 65536, 102400, N - 64};
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++)
        for (size_t off = 0; off < 64; off += 13) {
            size_t n = lens[k];
            uint32_t want = (uint32_t)crc32(0, b + off, (uInt)n);
            CHECK_EQ_INT(qlog_crc(0, b + off, n), want);
            CHECK_EQ_INT(qfile_crc32(0, b + off, n < 4096 ? n : 0),
                         n < 4096 ? want : 0);
            size_t half = n / 3;
            uint32_t a = qlog_crc(0, b + off, half);
            CHECK_EQ_INT(qlog_crc(a, b + off + half, n - half), want);
            uint32_t c = qlog_crc(0, b + off + half, n - half);
            CHECK_EQ_INT(qlog_crc_combine(a, c, n - half), want);
        }
    free(b);
}

/* ---- the accept log (doc/queue.md "The accept log") ---- */

/* The only segment's path in dir/log (the first name without ".done"). */
static bool log_segment(const char *dir, char *out, size_t cap)
{
    char p[2048];
    snprintf(p, sizeof(p), "%s/log", dir);
    DIR *d = opendir(p);
    bool found = false;
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL)
        if (de->d_name[0] != '.' && strchr(de->d_name, '.') == NULL && !found) {
            snprintf(out, cap, "%s/%s", p, de->d_name);
            found = true;
        }
    if (d != NULL)
        closedir(d);
    return found;
}

static int log_segments(const char *dir)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/log", dir);
    DIR *d = opendir(p);
    int n = 0;
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL)
        n += de->d_name[0] != '.' && strchr(de->d_name, '.') == NULL;
    if (d != NULL)
        closedir(d);
    return n;
}

/* Listed exactly once by queue_list. */
static bool id_listed(struct queue *q, const char *id)
{
    struct idlist l = {.n = 0};
    queue_list(q, collect, &l);
    int hits = 0;
    for (int i = 0; i < l.n; i++)
        hits += strcmp(l.ids[i], id) == 0;
    return hits == 1;
}

static bool body_is(struct queue *q, const char *id, const void *want, size_t n)
{
    unsigned char *p;
    size_t len;
    if (read_body(q, id, &p, &len) < 0)
        return false;
    bool same = len == n && memcmp(p, want, n) == 0;
    free(p);
    return same;
}


TEST(fs_log_lifecycle)
{
    char *dir;
    struct queue *q = queue_new_in_tmp(&dir, true);
    if (q == NULL)
        return;
    char a[QUEUE_ID_SIZE], b[QUEUE_ID_SIZE], c[QUEUE_ID_SIZE], d[QUEUE_ID_SIZE];
    CHECK(queue_one(q, (const unsigned char *)HOSTILE, sizeof(HOSTILE) - 1, 2, a) == 0);
    CHECK(queue_one(q, (const unsigned char *)"b\r\n", 3, 1, b) == 0);
    CHECK(queue_one(q, (const unsigned char *)"c\r\n", 3, 1, c) == 0);
    /* In the log: no file of their own, anywhere. */
    CHECK_EQ_INT(count_dir(dir, "msg"), 0);
    CHECK_EQ_INT(count_dir(dir, "incoming"), 0);
    CHECK_EQ_INT(log_segments(dir), 1);
    CHECK(id_listed(q, a) && id_listed(q, b) && id_listed(q, c));
    struct queue_env *env = NULL;
    CHECK(queue_load(q, a, &env) == 0);
    if (env != NULL) {
        CHECK_EQ_STR(env->id, a);
        CHECK(env->nrcpts == 2 && env->body_size == sizeof(HOSTILE) - 1);
    }
    queue_env_free(env);
    CHECK(body_is(q, a, HOSTILE, sizeof(HOSTILE) - 1));

    /* A state: the message becomes a file first, with its .st. */
    CHECK(queue_rcpt_update(q, a, 0, QUEUE_RCPT_DONE, "250 ok") == 0);
    char p[4096];
    struct stat st;
    path_of(p, sizeof(p), dir, "msg", a);
    CHECK(stat(p, &st) == 0);
    env = NULL;
    CHECK(queue_load(q, a, &env) == 0);
    if (env != NULL)
        CHECK(env->rcpts[0].state == QUEUE_RCPT_DONE &&
              env->rcpts[1].state == QUEUE_RCPT_PENDING);
    queue_env_free(env);
    CHECK(body_is(q, a, HOSTILE, sizeof(HOSTILE) - 1));
    CHECK(id_listed(q, a)); /* once, not from the log too */

    /* Keep: a file with the same bytes; remove: gone. */
    CHECK(queue_keep(q, b) == 0);
    path_of(p, sizeof(p), dir, "msg", b);
    struct buf f;
    CHECK(fs_read_file(p, 1 << 20, &f) == 0);
    env = NULL;
    struct qfile_footer ft;
    CHECK(qfile_parse(f.data, f.len, &env, &ft) == 0);
    if (env != NULL)
        CHECK_EQ_STR(env->id, b);
    queue_env_free(env);
    buf_free(&f);
    CHECK(queue_keep(q, b) == 0); /* nothing left to do */
    CHECK(queue_remove(q, c) == 0);
    env = NULL;
    CHECK(queue_load(q, c, &env) == -1 && errno == ENOENT);
    CHECK(!id_listed(q, c));

    /* Another process (the admin command) sees the log, changes nothing
     * in it. */
    CHECK(queue_one(q, (const unsigned char *)"d\r\n", 3, 1, d) == 0);
    struct queue *admin = fs_open_mode(dir, true);
    CHECK(admin != NULL);
    if (admin != NULL) {
        CHECK(id_listed(admin, d));
        CHECK(!id_listed(admin, c));
        CHECK(body_is(admin, d, "d\r\n", 3));
        CHECK(queue_hold(admin, d) == -1 && errno == EBUSY);
        CHECK(queue_remove(admin, d) == -1 && errno == EBUSY);
        CHECK(queue_rcpt_update(admin, d, 0, QUEUE_RCPT_FAILED, "x") == -1 &&
              errno == EBUSY);
        CHECK(queue_set_aside(admin, d, "x") == -1 && errno == EBUSY);
        CHECK(queue_keep(admin, d) == 0); /* not its to do */
        path_of(p, sizeof(p), dir, "msg", d);
        CHECK(stat(p, &st) == -1);
        /* Once the server made it a file, the admin can hold it. */
        CHECK(queue_keep(q, d) == 0);
        CHECK(queue_hold(admin, d) == 0);
        path_of(p, sizeof(p), dir, "hold", d);
        CHECK(stat(p, &st) == 0);
        queue_close(admin);
    }
    env = NULL;
    CHECK(queue_load(q, d, &env) == -1 && errno == ENOENT); /* held */
    queue_close(q);
    rm_rf(dir);
    free(dir);
}

TEST(fs_log_recovery)
{
    char *dir;
    struct queue *q = queue_new_in_tmp(&dir, true);
    if (q == NULL)
        return;
    char ids[5][QUEUE_ID_SIZE];
    unsigned char *big;
    size_t bigsz = make_body(&big, 100000);
    for (int i = 0; i < 5; i++)
        CHECK(queue_one(q, big, bigsz - (size_t)i, 1, ids[i]) == 0);
    CHECK(queue_remove(q, ids[1]) == 0);
    CHECK(queue_keep(q, ids[2]) == 0);
    queue_close(q); /* a crash: the segment stays as it is */

    /* Damage: record 3's footer, a byte in the middle of record 4's body (a
     * page that did not reach the disk: only the record's CRC over the
     * whole image can tell), and a torn tail after the last record. */
    char seg[8192];
    CHECK(log_segment(dir, seg, sizeof(seg)));
    struct buf f;
    CHECK(fs_read_file(seg, 8 << 20, &f) == 0);
    size_t off = 0, rec = 0, foot3 = 0, body4 = 0;
    const size_t H = QLOG_REC_HEADER_SIZE;
    while (off + H <= f.len && memcmp(f.data + off, "EQLOGR02", 8) == 0) {
        uint64_t len = 0;
        for (int k = 0; k < 8; k++)
            len = len << 8 | (unsigned char)f.data[off + 8 + (size_t)k];
        if (rec == 3)
            foot3 = off + H + (size_t)len - 10;
        if (rec == 4)
            body4 = off + H + 16 + 50000;
        off += H + (size_t)len;
        rec++;
    }
    CHECK(rec == 5 && off == f.len);
    buf_free(&f);
    int fd = open(seg, O_WRONLY);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(pwrite(fd, "X", 1, (off_t)foot3) == 1);
        CHECK(pwrite(fd, "\0", 1, (off_t)body4) == 1);
        CHECK(pwrite(fd, "EQLOGR02\0\0\0\0\0\0\0\x10garbage", 23, (off_t)off) == 23);
        close(fd);
    }

    q = fs_open_mode(dir, true);
    CHECK(q != NULL);
    if (q != NULL) {
        CHECK(queue_recover(q) == 0);
        CHECK_EQ_INT(count_dir(dir, "log"), 0);
        CHECK_EQ_INT(count_dir(dir, "incoming"), 0);
        /* 0 and 2 (kept before) are files; 3 (torn, whole records after
         * it) is set aside; 4 (torn, the last: an append cut short) and 1
         * (removed) are gone. */
        CHECK_EQ_INT(count_dir(dir, "msg"), 2);
        CHECK_EQ_INT(count_dir(dir, "corrupt"), 1);
        CHECK(body_is(q, ids[0], big, bigsz));
        CHECK(body_is(q, ids[2], big, bigsz - 2));
        char p4[4096];
        struct stat st4;
        path_of(p4, sizeof(p4), dir, "corrupt", ids[3]);
        CHECK(stat(p4, &st4) == 0);
        path_of(p4, sizeof(p4), dir, "corrupt", ids[4]);
        CHECK(stat(p4, &st4) == -1);
        struct queue_env *env = NULL;
        CHECK(queue_load(q, ids[1], &env) == -1 && errno == ENOENT);
        CHECK(queue_recover(q) == 0); /* idempotent */
        CHECK_EQ_INT(count_dir(dir, "msg"), 2);
        /* New messages go to a new segment. */
        char id[QUEUE_ID_SIZE];
        CHECK(queue_one(q, (const unsigned char *)"n\r\n", 3, 1, id) == 0);
        CHECK_EQ_INT(log_segments(dir), 1);
        CHECK(body_is(q, id, "n\r\n", 3));
        queue_close(q);
    }
    free(big);
    rm_rf(dir);
    free(dir);
}

/* A message's buffer is handed to the next message (not regrown from 8
 * KiB): a small message in a big one's buffer holds only its own bytes,
 * the buffers kept are bounded in number and size, none is counted in the
 * memory cap while kept, and one the cap cannot take is not used. */
TEST(fs_log_buffers_reused)
{
    char *dir;
    struct queue *q = queue_new_in_tmp(&dir, true);
    if (q == NULL)
        return;
    struct fsq *fq = FSQ(q);
    unsigned char *big;
    (void)make_body(&big, 700000);
    char id[QUEUE_ID_SIZE], id2[QUEUE_ID_SIZE];

    CHECK(queue_one(q, big, 100000, 1, id) == 0);
    CHECK_EQ_INT(fq->nspare, 1);
    CHECK_EQ_INT(atomic_load(&fq->log_mem), 0);
    size_t cap = fq->spare[0].cap;
    CHECK(cap >= QFILE_HEADER_SIZE + 100000);
    CHECK(queue_one(q, big + 5, 10, 1, id2) == 0);
    CHECK(body_is(q, id2, big + 5, 10));
    CHECK(body_is(q, id, big, 100000));
    CHECK_EQ_INT(fq->nspare, 1);
    CHECK_EQ_INT(fq->spare[0].cap, cap);

    /* Taken: counted in the cap while the message lives. */
    struct queue_msg *m[20];
    CHECK(queue_msg_open(q, &m[0]) == 0);
    CHECK_EQ_INT(fq->nspare, 0);
    CHECK_EQ_INT(atomic_load(&fq->log_mem), cap);
    queue_msg_abort(m[0]);
    CHECK_EQ_INT(fq->nspare, 1);
    CHECK_EQ_INT(atomic_load(&fq->log_mem), 0);

    /* At most FSQ_MEM_SPARES kept. */
    struct queue_env envs[20];
    struct queue_rcpt r[20][1];
    int res[20];
    for (int i = 0; i < 20; i++) {
        CHECK(queue_msg_open(q, &m[i]) == 0);
        CHECK(queue_msg_write(m[i], big, 1000 + (size_t)i) == 0);
        fill_env(&envs[i], r[i], 1);
    }
    CHECK(queue_commit(q, m, envs, 20, res) == 0);
    CHECK_EQ_INT(fq->nspare, FSQ_MEM_SPARES);
    CHECK_EQ_INT(atomic_load(&fq->log_mem), 0);

    /* One over FSQ_MEM_SPARE_MAX is freed, not kept. */
    queue_fs_tune(q, 1024 * 1024, 64u << 20);
    struct queue_msg *one;
    CHECK(queue_msg_open(q, &one) == 0);
    CHECK(queue_msg_write(one, big, 600000) == 0);
    queue_msg_abort(one); /* it had taken a kept one, and grew past the line */
    CHECK_EQ_INT(fq->nspare, FSQ_MEM_SPARES - 1);
    for (size_t i = 0; i < fq->nspare; i++)
        CHECK(fq->spare[i].cap <= FSQ_MEM_SPARE_MAX);

    /* A kept buffer bigger than the cap allows: the message gets a fresh
     * 8 KiB one, in memory still. */
    queue_fs_tune(q, 256 * 1024, 20000);
    fq->spare[fq->nspare - 1].cap = 100000; /* as if it had grown */
    fq->spare[fq->nspare - 1].p = xrealloc(fq->spare[fq->nspare - 1].p, 100000);
    CHECK(queue_msg_open(q, &one) == 0);
    snprintf(id2, sizeof(id2), "%s", queue_msg_id(one));
    CHECK_EQ_INT(count_dir(dir, "incoming"), 0);
    CHECK_EQ_INT(atomic_load(&fq->log_mem), 8 * 1024);
    CHECK(queue_msg_write(one, big, 3000) == 0);
    fill_env(&envs[0], r[0], 1);
    CHECK(queue_commit(q, &one, envs, 1, res) == 0 && res[0] == 0);
    CHECK(body_is(q, id2, big, 3000));
    CHECK_EQ_INT(atomic_load(&fq->log_mem), 0);
    free(big);
    queue_close(q);
    rm_rf(dir);
    free(dir);
}

TEST(fs_log_spill_and_rotation)
{
    char *dir;
    struct queue *q = queue_new_in_tmp(&dir, true);
    if (q == NULL)
        return;
    unsigned char *big;
    (void)make_body(&big, 300000);
    char id[QUEUE_ID_SIZE], p[4096];
    struct stat st;

    /* Over queue-log-message: a file of its own. */
    queue_fs_tune(q, 1000, 64u << 20);
    CHECK(queue_one(q, big, 1001, 1, id) == 0);
    path_of(p, sizeof(p), dir, "msg", id);
    CHECK(stat(p, &st) == 0);
    CHECK(body_is(q, id, big, 1001));
    CHECK(queue_one(q, big, 1000, 1, id) == 0);
    path_of(p, sizeof(p), dir, "msg", id);
    CHECK(stat(p, &st) == -1);
    CHECK(body_is(q, id, big, 1000));

    /* Over queue-log-memory: the messages that do not fit go to files
     * while received; all of them commit. */
    queue_fs_tune(q, 256 * 1024, 20000);
    struct queue_msg *m[3];
    struct queue_env envs[3];
    struct queue_rcpt r[3][1];
    int res[3];
    char mids[3][QUEUE_ID_SIZE];
    for (int i = 0; i < 3; i++) {
        CHECK(queue_msg_open(q, &m[i]) == 0);
        snprintf(mids[i], QUEUE_ID_SIZE, "%s", queue_msg_id(m[i]));
        fill_env(&envs[i], r[i], 1);
    }
    CHECK_EQ_INT(count_dir(dir, "incoming"), 1); /* 8 KiB each: 2 fit */
    for (int i = 0; i < 3; i++)
        CHECK(queue_msg_write(m[i], big, 9000) == 0);
    /* The first outgrew its 8 KiB with no room left to grow; the second
     * then had the room. */
    CHECK_EQ_INT(count_dir(dir, "incoming"), 2);
    CHECK(queue_commit(q, m, envs, 3, res) == 0);
    CHECK(res[0] == 0 && res[1] == 0 && res[2] == 0);
    CHECK_EQ_INT(count_dir(dir, "incoming"), 0);
    /* An abort of a message in memory leaves nothing. */
    struct queue_msg *ab;
    CHECK(queue_msg_open(q, &ab) == 0);
    CHECK(queue_msg_write(ab, "x", 1) == 0);
    queue_msg_abort(ab);
    CHECK_EQ_INT(count_dir(dir, "incoming"), 0);

    for (int i = 0; i < 3; i++)
        CHECK(body_is(q, mids[i], big, 9000));
    queue_close(q);
    rm_rf(dir);

    /* Segments are sealed at 8 MiB and deleted once nothing in them is
     * live. */
    q = fs_open_mode(dir, true);
    CHECK(q != NULL);
    if (q == NULL) {
        free(big);
        free(dir);
        return;
    }
    char ids[40][QUEUE_ID_SIZE];
    for (int i = 0; i < 40; i++)
        CHECK(queue_one(q, big, 250000, 1, ids[i]) == 0);
    CHECK(log_segments(dir) >= 2);
    for (int i = 0; i < 40; i++)
        CHECK(queue_remove(q, ids[i]) == 0);
    /* The one being appended to, and the emptied ones kept for reuse. */
    int files = log_segments(dir);
    CHECK(files >= 2 && files <= 1 + (int)QLOG_SPARE_MAX);
    /* Reused, not added to: 80 more messages, the first 60 removed as they
     * go, leave no more files than the live ones need plus the spares, and
     * a restart finds only what is live: the records left from a reused
     * file's earlier life are not. */
    char more[80][QUEUE_ID_SIZE];
    for (int i = 0; i < 80; i++) {
        CHECK(queue_one(q, big, 250000, 1, more[i]) == 0);
        if (i < 60)
            CHECK(queue_remove(q, more[i]) == 0);
    }
    int need = (int)(20u * 250200u / QLOG_SEGMENT_MAX) + 2;
    CHECK(log_segments(dir) <= need + (int)QLOG_SPARE_MAX);
    queue_close(q); /* a crash: segments and spares stay */
    q = fs_open_mode(dir, true);
    CHECK(q != NULL);
    if (q != NULL) {
        struct idlist l = {.n = 0};
        queue_list(q, collect, &l);
        CHECK_EQ_INT(l.n, 20); /* the last 20 of the 80 */
        CHECK(queue_recover(q) == 0);
        CHECK_EQ_INT(count_dir(dir, "msg"), 20);
        CHECK_EQ_INT(count_dir(dir, "corrupt"), 0);
        CHECK(body_is(q, more[79], big, 250000));
        struct queue_env *env = NULL;
        CHECK(queue_load(q, more[0], &env) == -1 && errno == ENOENT);
        CHECK(queue_load(q, ids[0], &env) == -1 && errno == ENOENT);
        queue_close(q);
    }
    free(big);
    rm_rf(dir);
    free(dir);
}

/* Flips the octet at off in path (its first one is 0). */
static void flip_at(const char *path, uint64_t off)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    unsigned char c = 0;
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK(pread(fd, &c, 1, (off_t)off) == 1);
    c ^= 0x20;
    CHECK(pwrite(fd, &c, 1, (off_t)off) == 1);
    close(fd);
}

/* A queue file whose body lost a page in a crash (a byte changed here)
 * passes every check made at each load, but recovery reads the body against
 * the footer's CRC and sets it aside: never delivered. */
TEST(fs_recover_body_checksum)
{
    char *dir;
    struct queue *q = queue_new_in_tmp(&dir, false);
    if (q == NULL)
        return;
    unsigned char *big;
    size_t bigsz = make_body(&big, 200000);
    char good[QUEUE_ID_SIZE], bad[QUEUE_ID_SIZE], small[QUEUE_ID_SIZE], p[4096];
    CHECK(queue_one(q, big, bigsz, 1, good) == 0);
    CHECK(queue_one(q, big, bigsz, 1, bad) == 0);
    /* One small enough to be read whole (FSQ_IMAGE_WHOLE_MAX): its body
     * is checked from the image in hand. */
    CHECK(queue_one(q, big, 100, 1, small) == 0);
    queue_close(q);
    path_of(p, sizeof(p), dir, "msg", bad);
    int fd = open(p, O_WRONLY);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(pwrite(fd, "\0\0\0\0", 4, QFILE_HEADER_SIZE + 150000) == 4);
        close(fd);
    }
    path_of(p, sizeof(p), dir, "msg", small);
    flip_at(p, QFILE_HEADER_SIZE + 10);
    q = fs_open(dir);
    CHECK(q != NULL);
    if (q != NULL) {
        struct queue_env *env = NULL;
        CHECK(queue_load(q, bad, &env) == 0); /* the cheap checks pass */
        queue_env_free(env);
        env = NULL;
        CHECK(queue_load(q, small, &env) == 0);
        queue_env_free(env);
        CHECK(queue_recover(q) == 0);
        struct stat st;
        const char *damaged[] = {bad, small};
        for (int i = 0; i < 2; i++) {
            env = NULL;
            CHECK(queue_load(q, damaged[i], &env) == -1 && errno == ENOENT);
            path_of(p, sizeof(p), dir, "corrupt", damaged[i]);
            CHECK(stat(p, &st) == 0);
        }
        CHECK(body_is(q, good, big, bigsz));
        /* A clean stop leaves a marker: everything was flushed, so the next
         * recovery reads no bodies (a byte changed by hand meanwhile is not
         * what the check is for, and is not seen); the marker is gone after
         * it, so a crash after that start is checked again. */
        path_of(p, sizeof(p), dir, "msg", good);
        fd = open(p, O_WRONLY);
        CHECK(fd >= 0 && pwrite(fd, "\0", 1, QFILE_HEADER_SIZE + 10) == 1);
        if (fd >= 0)
            close(fd);
        CHECK(queue_fs_mark_clean(q) == 0);
        queue_close(q);
        char marker[4200];
        snprintf(marker, sizeof(marker), "%s/clean", dir);
        CHECK(stat(marker, &st) == 0);
        q = fs_open(dir);
        CHECK(q != NULL && queue_recover(q) == 0);
        CHECK(stat(marker, &st) == -1);
        env = NULL;
        CHECK(q != NULL && queue_load(q, good, &env) == 0);
        queue_env_free(env);
        queue_close(q);
        q = fs_open(dir); /* no marker: as after a crash */
        CHECK(q != NULL && queue_recover(q) == 0);
        env = NULL;
        CHECK(q != NULL && queue_load(q, good, &env) == -1 && errno == ENOENT);
        if (q != NULL)
            queue_close(q);
    }
    free(big);
    rm_rf(dir);
    free(dir);
}

/* Where the only message's image lies: in its file (0, the file's size)
 * or in the log's only segment (after the first record's header, the
 * length that header gives). */
static bool image_place(const char *dir, const char *id, bool in_log, char *path,
                        size_t cap, uint64_t *off_r, uint64_t *len_r)
{
    struct stat st;
    if (!in_log) {
        path_of(path, cap, dir, "msg", id);
        *off_r = 0;
        *len_r = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
        return *len_r > 0;
    }
    unsigned char h[QLOG_REC_HEADER_SIZE];
    int fd = log_segment(dir, path, cap) ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    bool ok = fd >= 0 && pread(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h);
    if (fd >= 0)
        close(fd);
    uint64_t len = 0;
    for (int i = 8; i < 16; i++)
        len = len << 8 | h[i];
    *off_r = QLOG_REC_HEADER_SIZE;
    *len_r = len;
    return ok && memcmp(h, "EQLOGR02", 8) == 0;
}

/*
 * A seam to count reads: queue_fs.c's pread() calls bind to this program's
 * own definition, which counts while pread_count is armed (>= 0) and
 * passes every call on to libc's (or the sanitizer's) pread.
 */
static int pread_count = -1;

ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
    static ssize_t (*real)(int, void *, size_t, off_t);
    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "pread");
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    if (pread_count >= 0)
        pread_count++;
    return real(fd, buf, n, off);
}

/* Octets an image adds to its body (header, envelope of queue_one with 2
 * recipients, footer), measured on a first message in the log. */
static size_t image_overhead(void)
{
    char *dir, id[QUEUE_ID_SIZE], path[4096];
    uint64_t off = 0, ilen = 0;
    struct queue *q = queue_new_in_tmp(&dir, true);
    if (q == NULL)
        return 0;
    CHECK(queue_one(q, (const unsigned char *)"x\r\n", 3, 2, id) == 0);
    CHECK(image_place(dir, id, true, path, sizeof(path), &off, &ilen));
    queue_close(q);
    rm_rf(dir);
    free(dir);
    return ilen > 3 ? (size_t)ilen - 3 : 0;
}

/* Small images are read whole in one go, larger ones a part at a time
 * (FSQ_IMAGE_WHOLE_MAX, queue_fs_int.h): on both sides of that line and
 * on it, in the log and in a file, the envelope and the body come back as
 * written, each reader takes the number of reads its path should, and a
 * damaged header or footer is refused by both readers. */
TEST(fs_image_whole_or_in_parts)
{
    size_t over = image_overhead();
    CHECK(over > 0 && over < 2048);
    if (over == 0 || over >= 2048)
        return;
    const size_t line = FSQ_IMAGE_WHOLE_MAX;
    const size_t sizes[] = {1, 100, line - over - 1, line - over, line - over + 1,
                            line + 1000, 70 * 1024};
    for (int in_log = 0; in_log < 2; in_log++) {
        for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
            for (int damage = 0; damage < 3; damage++) {
                char *dir, id[QUEUE_ID_SIZE], path[4096];
                struct queue *q = queue_new_in_tmp(&dir, in_log != 0);
                if (q == NULL)
                    return;
                unsigned char *body;
                size_t len = make_body(&body, sizes[k]);
                CHECK(queue_one(q, body, len, 2, id) == 0);
                uint64_t off = 0, ilen = 0;
                CHECK(image_place(dir, id, in_log != 0, path, sizeof(path), &off, &ilen));
                CHECK_EQ_INT(ilen, len + over);
                bool whole = ilen <= line;
                if (damage == 1)
                    flip_at(path, off + 3);                 /* the header */
                else if (damage == 2)
                    flip_at(path, off + ilen - 30);          /* the footer */
                struct queue_env *env = NULL;
                struct queue_body *b = NULL;
                if (damage == 0) {
                    pread_count = 0;
                    CHECK(queue_load(q, id, &env) == 0);
                    CHECK_EQ_INT(pread_count, whole ? 1 : 3); /* image; header, footer, envelope */
                    if (env != NULL)
                        CHECK(env->body_size == len && env->nrcpts == 2 &&
                              strcmp(env->id, id) == 0);
                    pread_count = 0;
                    CHECK(queue_body_open(q, id, &b) == 0);
                    CHECK_EQ_INT(pread_count, whole ? 1 : 2); /* image; header, footer */
                    if (b != NULL)
                        queue_body_close(b);
                    pread_count = -1;
                    CHECK(body_is(q, id, body, len));
                } else {
                    errno = 0;
                    CHECK(queue_load(q, id, &env) == -2 && errno == EBADMSG);
                    errno = 0;
                    CHECK(queue_body_open(q, id, &b) == -1 && errno == EBADMSG);
                }
                queue_env_free(env);
                free(body);
                queue_close(q);
                rm_rf(dir);
                free(dir);
            }
        }
    }
}

int main(void)
{
    log_set_level(LOG_CRIT); /* recovery logs are expected here */
    RUN(qlog_crc_is_zlibs);
    RUN(fs_log_lifecycle);
    RUN(fs_log_recovery);
    RUN(fs_log_spill_and_rotation);
    RUN(fs_log_buffers_reused);
    RUN(fs_recover_body_checksum);
    RUN(fs_image_whole_or_in_parts);
    return harness_done("test_queue_log");
}
