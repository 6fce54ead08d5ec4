/*
 * Tests of the queue (src/queue, doc/queue.md), for both backends: the fs
 * one in a mkdtemp directory, the in-memory one. Backend-independent
 * behaviour is checked by the same functions for both; crash leftovers
 * (incomplete incoming files, torn state records, corrupt files) are made
 * by hand for the fs backend. The accept log's own tests are in
 * test_queue_log.c; the helpers both use in queue_testlib.h.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "testlib.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/qfile.h"
#include "queue/queue.h"
#include "queue/queue_log.h"
#include "queue_testlib.h"

/* ---- backend-independent checks ---- */

static void check_basic(struct queue *q)
{
    unsigned char *body, *got = NULL;
    size_t len = make_body(&body, 200000), glen = 0;
    char id[QUEUE_ID_SIZE];
    CHECK(queue_one(q, body, len, 3, id) == 0);
    CHECK(qfile_id_valid(id));
    CHECK(strlen(id) == 23);
    CHECK_EQ_INT(list_count(q, id), 1);

    struct queue_env *env = NULL;
    CHECK(queue_load(q, id, &env) == 0);
    if (env != NULL) {
        struct queue_env want;
        struct queue_rcpt r[3];
        fill_env(&want, r, 3);
        strcpy(want.id, id);
        want.body_size = len;
        want.attempts = 0;
        CHECK(qfile_env_equal(&want, env));
        CHECK_EQ_STR(env->client_helo, "helo\r\nX-Injected: yes");
    }
    queue_env_free(env);
    CHECK(read_body(q, id, &got, &glen) == 0);
    CHECK(glen == len);
    CHECK(got != NULL && memcmp(got, body, len) == 0);
    free(got);

    /* An empty body is a body too. */
    char id2[QUEUE_ID_SIZE];
    CHECK(queue_one(q, body, 0, 1, id2) == 0);
    CHECK(strcmp(id, id2) != 0);
    CHECK(read_body(q, id2, &got, &glen) == 0);
    CHECK(glen == 0);
    free(got);
    CHECK(queue_remove(q, id2) == 0);

    /* Bad ids never reach the filesystem. */
    env = NULL;
    errno = 0;
    CHECK(queue_load(q, "../msg/x", &env) == -1 && errno == EINVAL);
    CHECK(queue_load(q, "NoSuchId", &env) == -1 && errno == ENOENT);
    CHECK(queue_rcpt_update(q, "NoSuchId", 0, QUEUE_RCPT_DONE, "x") == -1);
    CHECK(errno == ENOENT);
    CHECK(queue_remove(q, "NoSuchId") == -1);
    CHECK(queue_remove(q, id) == 0);
    CHECK_EQ_INT(list_count(q, NULL), 0);
    free(body);
}

static void check_abort(struct queue *q)
{
    struct queue_msg *m;
    CHECK(queue_msg_open(q, &m) == 0);
    CHECK(queue_msg_write(m, "hello\r\n", 7) == 0);
    queue_msg_abort(m);
    CHECK_EQ_INT(list_count(q, NULL), 0);
    /* Opened, nothing written. */
    CHECK(queue_msg_open(q, &m) == 0);
    queue_msg_abort(m);
    CHECK_EQ_INT(list_count(q, NULL), 0);
}

static void check_states(struct queue *q)
{
    char id[QUEUE_ID_SIZE];
    CHECK(queue_one(q, (const unsigned char *)"x\r\n", 3, 3, id) == 0);
    CHECK(queue_rcpt_update(q, id, 1, QUEUE_RCPT_PENDING, "451 4.3.0 try later") == 0);
    CHECK(queue_rcpt_update(q, id, 0, QUEUE_RCPT_DONE, "250 2.0.0 delivered") == 0);
    CHECK(queue_rcpt_update(q, id, 1, QUEUE_RCPT_FAILED, HOSTILE) == 0);
    CHECK(queue_rcpt_update(q, id, 2, QUEUE_RCPT_PENDING, NULL) == 0);
    CHECK(queue_rcpt_update(q, id, 0, (enum queue_rcpt_state)7, "") == -1);
    CHECK(errno == EINVAL);
    struct queue_env *env = NULL;
    CHECK(queue_load(q, id, &env) == 0);
    if (env != NULL) {
        CHECK(env->rcpts[0].state == QUEUE_RCPT_DONE);
        CHECK_EQ_STR(env->rcpts[0].status, "250 2.0.0 delivered");
        CHECK(env->rcpts[1].state == QUEUE_RCPT_FAILED);
        CHECK_EQ_STR(env->rcpts[1].status, HOSTILE);
        CHECK(env->rcpts[2].state == QUEUE_RCPT_PENDING);
        CHECK_EQ_STR(env->rcpts[2].status, "");
        CHECK_EQ_INT(env->attempts, 2); /* recipient 1 was tried twice */
        CHECK(env->body_size == 3);
    }
    queue_env_free(env);

    /* A long status is cut, not refused. */
    char *longst = xmalloc(QFILE_STATUS_MAX * 2 + 1);
    memset(longst, 'x', QFILE_STATUS_MAX * 2);
    longst[QFILE_STATUS_MAX * 2] = '\0';
    CHECK(queue_rcpt_update(q, id, 2, QUEUE_RCPT_PENDING, longst) == 0);
    free(longst);
    env = NULL;
    CHECK(queue_load(q, id, &env) == 0);
    if (env != NULL)
        CHECK(strlen(env->rcpts[2].status) == QFILE_STATUS_MAX);
    queue_env_free(env);
    CHECK(queue_remove(q, id) == 0);
    CHECK(queue_load(q, id, &env) == -1);
}

static void check_batch(struct queue *q)
{
    enum { N = 6 };
    struct queue_msg *m[N];
    struct queue_env e[N];
    struct queue_rcpt r[N][2];
    int res[N];
    char ids[N][QUEUE_ID_SIZE];
    char body[N][32];
    for (int i = 0; i < N; i++) {
        CHECK(queue_msg_open(q, &m[i]) == 0);
        snprintf(ids[i], QUEUE_ID_SIZE, "%s", queue_msg_id(m[i]));
        snprintf(body[i], sizeof(body[i]), "message %d\r\n", i);
        CHECK(queue_msg_write(m[i], body[i], strlen(body[i])) == 0);
        fill_env(&e[i], r[i], 2);
        res[i] = -99;
    }
    /* Message 3 has an envelope the format refuses: it alone fails. */
    char *huge = xmalloc(QFILE_STR_MAX + 2);
    memset(huge, 'h', QFILE_STR_MAX + 1);
    huge[QFILE_STR_MAX + 1] = '\0';
    e[3].client_helo = huge;
    CHECK(queue_commit(q, m, e, N, res) == -1);
    free(huge);
    for (int i = 0; i < N; i++) {
        if (i == 3) {
            CHECK(res[i] == EINVAL);
            continue;
        }
        CHECK(res[i] == 0);
        unsigned char *got = NULL;
        size_t glen = 0;
        CHECK(read_body(q, ids[i], &got, &glen) == 0);
        CHECK(glen == strlen(body[i]) && memcmp(got, body[i], glen) == 0);
        free(got);
    }
    CHECK_EQ_INT(list_count(q, NULL), N - 1);
    struct queue_env *env;
    CHECK(queue_load(q, ids[3], &env) == -1 && errno == ENOENT);
    for (int i = 0; i < N; i++)
        if (i != 3)
            CHECK(queue_remove(q, ids[i]) == 0);
    CHECK_EQ_INT(list_count(q, NULL), 0);
    CHECK(queue_commit(q, NULL, NULL, 0, NULL) == 0);
}

struct thr {
    struct queue *q;
    int ok;
};

static void *thr_main(void *arg)
{
    struct thr *t = arg;
    t->ok = 0;
    for (int i = 0; i < 15; i++) {
        char id[QUEUE_ID_SIZE];
        char body[64];
        int n = snprintf(body, sizeof(body), "thread body %d\r\n", i);
        if (queue_one(t->q, (const unsigned char *)body, (size_t)n, 1, id) == 0)
            t->ok++;
    }
    return NULL;
}

static void check_threads(struct queue *q)
{
    pthread_t th[4];
    struct thr t[4];
    for (int i = 0; i < 4; i++) {
        t[i].q = q;
        pthread_create(&th[i], NULL, thr_main, &t[i]);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += t[i].ok;
    }
    CHECK_EQ_INT(total, 60);
    struct idlist l = {.n = 0};
    CHECK(queue_list(q, collect, &l) == 0);
    CHECK_EQ_INT(l.n, 60);
    for (int i = 0; i < l.n; i++)
        CHECK(queue_remove(q, l.ids[i]) == 0);
}

static void check_set_aside(struct queue *q)
{
    char id[QUEUE_ID_SIZE];
    CHECK(queue_one(q, (const unsigned char *)"y", 1, 1, id) == 0);
    CHECK(queue_rcpt_update(q, id, 0, QUEUE_RCPT_DONE, "ok") == 0);
    CHECK(queue_set_aside(q, id, "test \"reason\"\r\n") == 0);
    struct queue_env *env;
    CHECK(queue_load(q, id, &env) == -1);
    CHECK_EQ_INT(list_count(q, NULL), 0);
    CHECK(queue_set_aside(q, id, "again") == -1);
}

static int held_count(struct queue *q, const char *want)
{
    return list_count_by(q, queue_list_held, want);
}

/* Hold and release (doc/queue.md "Hold and release"): a held message is out
 * of the active queue but keeps its body and recipient states. */
static void check_hold(struct queue *q)
{
    char a[QUEUE_ID_SIZE], b[QUEUE_ID_SIZE];
    const unsigned char body[] = "Subject: held\r\n\r\nbody\r\n";
    CHECK(queue_one(q, body, sizeof(body) - 1, 2, a) == 0);
    CHECK(queue_one(q, body, 3, 1, b) == 0);
    CHECK(queue_rcpt_update(q, a, 0, QUEUE_RCPT_DONE, "250 2.0.0 ok") == 0);
    CHECK_EQ_INT(held_count(q, NULL), 0);

    CHECK(queue_hold(q, a) == 0);
    CHECK_EQ_INT(list_count(q, b), 1);   /* only b stays active */
    CHECK_EQ_INT(held_count(q, a), 1);
    struct queue_env *env = NULL;
    struct queue_body *qb = NULL;
    errno = 0;
    CHECK(queue_load(q, a, &env) == -1 && errno == ENOENT && env == NULL);
    CHECK(queue_body_open(q, a, &qb) == -1 && errno == ENOENT && qb == NULL);
    CHECK(queue_rcpt_update(q, a, 1, QUEUE_RCPT_DONE, "x") == -1);
    CHECK(errno == ENOENT);
    CHECK(queue_hold(q, a) == -1 && errno == ENOENT);     /* already held */
    CHECK(queue_release(q, b) == -1 && errno == ENOENT);  /* not held */
    CHECK(queue_hold(q, "../msg/x") == -1 && errno == EINVAL);
    CHECK(queue_release(q, "a/b") == -1 && errno == EINVAL);
    CHECK(queue_hold(q, "NoSuchId") == -1 && errno == ENOENT);

    /* The admin still sees it whole. */
    bool held = false;
    CHECK(queue_load_any(q, a, &env, &held) == 0 && held);
    if (env != NULL) {
        CHECK_EQ_STR(env->id, a);
        CHECK(env->nrcpts == 2);
        CHECK(env->rcpts[0].state == QUEUE_RCPT_DONE);
        CHECK_EQ_STR(env->rcpts[0].status, "250 2.0.0 ok");
        CHECK(env->rcpts[1].state == QUEUE_RCPT_PENDING);
        CHECK(env->body_size == sizeof(body) - 1);
        CHECK_EQ_INT(env->attempts, 1);
    }
    queue_env_free(env);
    env = NULL;
    held = true;
    CHECK(queue_load_any(q, b, &env, &held) == 0 && !held);
    queue_env_free(env);
    env = NULL;
    CHECK(queue_load_any(q, "NoSuchId", &env, NULL) == -1 && errno == ENOENT);
    CHECK(queue_load_any(q, "../x", &env, NULL) == -1 && errno == EINVAL);
    CHECK(queue_body_open_any(q, a, &qb, &held) == 0 && held);
    if (qb != NULL) {
        unsigned char got[64];
        ssize_t n = queue_body_read(qb, got, sizeof(got));
        CHECK(n == (ssize_t)sizeof(body) - 1 && memcmp(got, body, (size_t)n) == 0);
        queue_body_close(qb);
    }
    CHECK(queue_body_open_any(q, "NoSuchId", &qb, NULL) == -1 && errno == ENOENT);

    /* Released: active again, with the states it had. */
    CHECK(queue_release(q, a) == 0);
    CHECK_EQ_INT(held_count(q, NULL), 0);
    CHECK_EQ_INT(list_count(q, a), 2);
    CHECK(queue_release(q, a) == -1 && errno == ENOENT);
    CHECK(queue_load(q, a, &env) == 0);
    if (env != NULL) {
        CHECK(env->rcpts[0].state == QUEUE_RCPT_DONE);
        CHECK(env->rcpts[1].state == QUEUE_RCPT_PENDING);
    }
    queue_env_free(env);
    env = NULL;
    CHECK(queue_rcpt_update(q, a, 1, QUEUE_RCPT_FAILED, "550 5.0.0 bounced") == 0);

    /* A held message can be removed (estafeta queue delete). */
    CHECK(queue_hold(q, a) == 0);
    CHECK(queue_remove(q, a) == 0);
    CHECK_EQ_INT(held_count(q, NULL), 0);
    CHECK(queue_load_any(q, a, &env, NULL) == -1 && errno == ENOENT);
    CHECK(queue_remove(q, a) == -1 && errno == ENOENT);
    CHECK(queue_remove(q, b) == 0);
    CHECK_EQ_INT(list_count(q, NULL), 0);
}

/* ---- in-memory backend ---- */

TEST(mem_all)
{
    struct queue *q = queue_mem_new();
    check_basic(q);
    check_abort(q);
    check_states(q);
    check_batch(q);
    check_threads(q);
    check_set_aside(q);
    check_hold(q);
    CHECK(queue_recover(q) == 0);
    queue_close(q);
}

TEST(mem_injected_failures)
{
    struct queue *q = queue_mem_new();
    char id[QUEUE_ID_SIZE];
    struct queue_msg *m;
    queue_mem_fail(q, QUEUE_MEM_FAIL_OPEN, ENOSPC);
    CHECK(queue_msg_open(q, &m) == -1 && errno == ENOSPC);
    queue_mem_fail(q, QUEUE_MEM_FAIL_COMMIT, EIO);
    CHECK(queue_one(q, (const unsigned char *)"x", 1, 1, id) == -1);
    CHECK_EQ_INT(list_count(q, NULL), 0);
    queue_mem_fail(q, QUEUE_MEM_FAIL_WRITE, EDQUOT);
    CHECK(queue_msg_open(q, &m) == 0);
    CHECK(queue_msg_write(m, "x", 1) == -1 && errno == EDQUOT);
    queue_mem_fail(q, 0, 0);
    /* The write error sticks to the message, as in the fs backend. */
    CHECK(queue_msg_write(m, "x", 1) == -1 && errno == EDQUOT);
    struct queue_env e;
    struct queue_rcpt r[1];
    int res = 0;
    fill_env(&e, r, 1);
    CHECK(queue_commit(q, &m, &e, 1, &res) == -1 && res == EDQUOT);
    CHECK_EQ_INT(list_count(q, NULL), 0);

    CHECK(queue_one(q, (const unsigned char *)"x", 1, 1, id) == 0);
    queue_mem_fail(q, QUEUE_MEM_FAIL_UPDATE | QUEUE_MEM_FAIL_REMOVE, EIO);
    CHECK(queue_rcpt_update(q, id, 0, QUEUE_RCPT_DONE, "") == -1 && errno == EIO);
    CHECK(queue_remove(q, id) == -1 && errno == EIO);
    queue_mem_fail(q, 0, 0);
    CHECK(queue_rcpt_update(q, id, 1, QUEUE_RCPT_DONE, "") == -1 && errno == EINVAL);
    struct queue_env *env;
    CHECK(queue_mem_corrupt(q, id) == 0);
    CHECK(queue_load(q, id, &env) == -2);
    CHECK(queue_mem_corrupt(q, "nope") == -1);
    CHECK(queue_set_aside(q, id, "corrupt") == 0);
    CHECK_EQ_INT(list_count(q, NULL), 0);
    queue_close(q);
}

/* ---- fs backend ---- */
static void fs_all_mode(bool with_log)
{
    char *dir = make_tmpdir();
    CHECK(dir != NULL);
    if (dir == NULL)
        return;
    char sub[4096];
    snprintf(sub, sizeof(sub), "%s/q", dir); /* created by queue_fs_open */
    struct queue *q = fs_open_mode(sub, with_log);
    CHECK(q != NULL);
    if (q != NULL) {
        struct stat st;
        char p[4200];
        snprintf(p, sizeof(p), "%s/msg", sub);
        CHECK(stat(p, &st) == 0 && (st.st_mode & 0777) == 0700);
        check_basic(q);
        check_abort(q);
        CHECK_EQ_INT(count_dir(sub, "incoming"), 0);
        check_states(q);
        check_batch(q);
        CHECK_EQ_INT(count_dir(sub, "incoming"), 0);
        check_threads(q);
        check_set_aside(q);
        CHECK_EQ_INT(count_dir(sub, "corrupt"), 2); /* message and its .st */
        CHECK_EQ_INT(count_dir(sub, "msg"), 0);
        check_hold(q);
        CHECK_EQ_INT(count_dir(sub, "msg"), 0);
        CHECK_EQ_INT(count_dir(sub, "hold"), 0);
        snprintf(p, sizeof(p), "%s/hold", sub);
        CHECK(stat(p, &st) == 0 && (st.st_mode & 0777) == 0700);
        CHECK(queue_recover(q) == 0);
        queue_close(q);
    }
    rm_rf(dir);
    free(dir);
}

TEST(fs_all)
{
    fs_all_mode(false);
    fs_all_mode(true);
}

TEST(fs_file_layout)
{
    char *dir;
    struct queue *q = queue_new_in_tmp(&dir, false);
    if (q == NULL)
        return;
    char id[QUEUE_ID_SIZE], p[4096];
    CHECK(queue_one(q, (const unsigned char *)"body\r\n", 6, 2, id) == 0);
    path_of(p, sizeof(p), dir, "msg", id);
    struct buf f;
    CHECK(fs_read_file(p, 1 << 20, &f) == 0);
    struct queue_env *env = NULL;
    struct qfile_footer ft;
    CHECK(qfile_parse(f.data, f.len, &env, &ft) == 0);
    CHECK(ft.body_len == 6);
    CHECK(memcmp(f.data + QFILE_HEADER_SIZE, "body\r\n", 6) == 0);
    if (env != NULL)
        CHECK_EQ_STR(env->id, id);
    queue_env_free(env);
    buf_free(&f);
    struct stat st;
    CHECK(stat(p, &st) == 0 && (st.st_mode & 0777) == 0600);
    queue_close(q);
    rm_rf(dir);
    free(dir);
}

/* Appends raw bytes to a file (to fake a torn record). */
static void append_raw(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
    if (fd >= 0) {
        if (write(fd, p, n) != (ssize_t)n)
            fprintf(stderr, "append_raw: short write\n");
        close(fd);
    }
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

TEST(fs_torn_state_record)
{
    char *dir = make_tmpdir();
    if (dir == NULL)
        return;
    struct queue *q = fs_open(dir);
    if (q == NULL) {
        rm_rf(dir);
        free(dir);
        return;
    }
    char id[QUEUE_ID_SIZE], st[4096], name[64];
    CHECK(queue_one(q, (const unsigned char *)"z", 1, 2, id) == 0);
    CHECK(queue_rcpt_update(q, id, 0, QUEUE_RCPT_DONE, "250 ok") == 0);
    snprintf(name, sizeof(name), "%s.st", id);
    path_of(st, sizeof(st), dir, "msg", name);
    off_t good = file_size(st);
    CHECK(good > 0);

    /* A crash in the middle of the next record: a prefix of it. */
    struct buf rec;
    buf_init(&rec, 1024);
    qfile_st_encode(1, QUEUE_RCPT_DONE, "250 ok too", 10, &rec);
    append_raw(st, rec.data, rec.len - 3);
    struct queue_env *env = NULL;
    CHECK(queue_load(q, id, &env) == 0);
    if (env != NULL) {
        CHECK(env->rcpts[0].state == QUEUE_RCPT_DONE);
        CHECK(env->rcpts[1].state == QUEUE_RCPT_PENDING); /* torn: ignored */
        CHECK_EQ_INT(env->attempts, 1);
    }
    queue_env_free(env);

    /* Recovery cuts the torn tail; a later update is then seen. */
    CHECK(queue_recover(q) == 0);
    CHECK(file_size(st) == good);
    CHECK(queue_rcpt_update(q, id, 1, QUEUE_RCPT_FAILED, "550 no") == 0);
    env = NULL;
    CHECK(queue_load(q, id, &env) == 0);
    if (env != NULL) {
        CHECK(env->rcpts[1].state == QUEUE_RCPT_FAILED);
        CHECK_EQ_STR(env->rcpts[1].status, "550 no");
    }
    queue_env_free(env);

    /* Garbage of full record length (zeros, as after a crash on some
     * filesystems) is ignored the same way. */
    char zeros[40] = {0};
    good = file_size(st);
    append_raw(st, zeros, sizeof(zeros));
    env = NULL;
    CHECK(queue_load(q, id, &env) == 0);
    if (env != NULL)
        CHECK(env->rcpts[1].state == QUEUE_RCPT_FAILED);
    queue_env_free(env);
    CHECK(queue_recover(q) == 0);
    CHECK(file_size(st) == good);

    /* A record for a recipient that does not exist is ignored. */
    CHECK(queue_rcpt_update(q, id, 9, QUEUE_RCPT_DONE, "") == 0);
    env = NULL;
    CHECK(queue_load(q, id, &env) == 0);
    if (env != NULL)
        CHECK(env->nrcpts == 2 && env->rcpts[0].state == QUEUE_RCPT_DONE);
    queue_env_free(env);

    /* Removal takes the state file along. */
    CHECK(queue_remove(q, id) == 0);
    CHECK(access(st, F_OK) == -1 && errno == ENOENT);
    CHECK_EQ_INT(count_dir(dir, "msg"), 0);
    buf_free(&rec);
    queue_close(q);
    rm_rf(dir);
    free(dir);
}

static void write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
        if (write(fd, p, n) != (ssize_t)n)
            fprintf(stderr, "write_file: short write\n");
        close(fd);
    }
}

TEST(fs_recover)
{
    char *dir = make_tmpdir();
    if (dir == NULL)
        return;
    struct queue *q = fs_open(dir);
    if (q == NULL) {
        rm_rf(dir);
        free(dir);
        return;
    }
    char good[QUEUE_ID_SIZE], flip[QUEUE_ID_SIZE], cut[QUEUE_ID_SIZE];
    char good2[QUEUE_ID_SIZE], p[4096];
    const unsigned char body[] = "Subject: hi\r\n\r\nhello\r\n";
    CHECK(queue_one(q, body, sizeof(body) - 1, 2, good) == 0);
    CHECK(queue_one(q, body, sizeof(body) - 1, 2, flip) == 0);
    CHECK(queue_one(q, body, sizeof(body) - 1, 2, cut) == 0);
    CHECK(queue_one(q, body, sizeof(body) - 1, 1, good2) == 0);
    CHECK(queue_rcpt_update(q, good, 1, QUEUE_RCPT_DONE, "250") == 0);
    CHECK(queue_rcpt_update(q, flip, 0, QUEUE_RCPT_DONE, "250") == 0);

    /* One byte of the envelope flipped. */
    path_of(p, sizeof(p), dir, "msg", flip);
    struct buf f;
    CHECK(fs_read_file(p, 1 << 20, &f) == 0);
    f.data[QFILE_HEADER_SIZE + sizeof(body) - 1 + 8] ^= 0x20;
    write_file(p, f.data, f.len);
    buf_free(&f);
    /* Another cut short (its footer gone). */
    path_of(p, sizeof(p), dir, "msg", cut);
    CHECK(truncate(p, file_size(p) - 10) == 0);
    /* A message still being received when the "crash" happened. */
    struct queue_msg *m;
    CHECK(queue_msg_open(q, &m) == 0);
    CHECK(queue_msg_write(m, "partial", 7) == 0);
    char pending[QUEUE_ID_SIZE];
    snprintf(pending, sizeof(pending), "%s", queue_msg_id(m));
    /* Two more leftovers in incoming/: complete and empty. */
    path_of(p, sizeof(p), dir, "incoming", "0000000000000000000000A");
    write_file(p, "x", 1);
    path_of(p, sizeof(p), dir, "incoming", "stray");
    write_file(p, "", 0);
    /* An orphan state file and an unknown file in msg/. */
    path_of(p, sizeof(p), dir, "msg", "0000000000000000000000B.st");
    write_file(p, "st", 2);
    path_of(p, sizeof(p), dir, "msg", "README.txt");
    write_file(p, "admin notes", 11);

    struct queue_env *env = NULL;
    CHECK(queue_load(q, flip, &env) == -2);
    CHECK(queue_load(q, cut, &env) == -2);
    struct queue_body *b;
    CHECK(queue_body_open(q, cut, &b) == -1);

    /* "Restart": a new handle, as after a crash; the open message's file
     * descriptor is a leftover of the dead process. */
    struct queue *q2 = fs_open(dir);
    CHECK(q2 != NULL);
    if (q2 != NULL) {
        CHECK(queue_recover(q2) == 0);
        CHECK_EQ_INT(count_dir(dir, "incoming"), 0);
        CHECK_EQ_INT(count_dir(dir, "corrupt"), 3); /* flip, flip.st, cut */
        path_of(p, sizeof(p), dir, "corrupt", flip);
        CHECK(access(p, F_OK) == 0);
        path_of(p, sizeof(p), dir, "corrupt", cut);
        CHECK(access(p, F_OK) == 0);
        path_of(p, sizeof(p), dir, "msg", "0000000000000000000000B.st");
        CHECK(access(p, F_OK) == -1);
        path_of(p, sizeof(p), dir, "msg", "README.txt");
        CHECK(access(p, F_OK) == 0);
        struct idlist l = {.n = 0};
        CHECK(queue_list(q2, collect, &l) == 0);
        CHECK_EQ_INT(l.n, 2);
        CHECK(list_count(q2, good) == 2 && list_count(q2, good2) == 2);
        env = NULL;
        CHECK(queue_load(q2, good, &env) == 0);
        if (env != NULL)
            CHECK(env->rcpts[1].state == QUEUE_RCPT_DONE);
        queue_env_free(env);
        unsigned char *got;
        size_t glen;
        CHECK(read_body(q2, good2, &got, &glen) == 0);
        CHECK(glen == sizeof(body) - 1 && memcmp(got, body, glen) == 0);
        free(got);
        /* Idempotent. */
        CHECK(queue_recover(q2) == 0);
        CHECK_EQ_INT(list_count(q2, NULL), 2);
        queue_close(q2);
    }
    /* The old process's message cannot be committed any more. */
    struct queue_env e;
    struct queue_rcpt r[1];
    int res = 0;
    fill_env(&e, r, 1);
    CHECK(queue_commit(q, &m, &e, 1, &res) == -1 && res == ENOENT);
    queue_close(q);
    rm_rf(dir);
    free(dir);
}

/* Renames dir/from/name to dir/to/name (a step of hold or release done by
 * hand, to leave what a crash between the steps leaves). */
static int move(const char *dir, const char *from, const char *to,
                const char *name)
{
    char a[4096], b[4096];
    path_of(a, sizeof(a), dir, from, name);
    path_of(b, sizeof(b), dir, to, name);
    return rename(a, b);
}

static bool exists(const char *dir, const char *sub, const char *name)
{
    char p[4096];
    path_of(p, sizeof(p), dir, sub, name);
    return access(p, F_OK) == 0;
}

/* The state of recipient 0 as the admin sees it: 1 done, 0 pending, -1
 * not found; *held_r where. */
static int rcpt0_done(struct queue *q, const char *id, bool *held_r)
{
    struct queue_env *env = NULL;
    if (queue_load_any(q, id, &env, held_r) < 0)
        return -1;
    int r = env->rcpts[0].state == QUEUE_RCPT_DONE;
    queue_env_free(env);
    return r;
}

TEST(fs_hold_files)
{
    char *dir = make_tmpdir();
    if (dir == NULL)
        return;
    struct queue *q = fs_open(dir);
    if (q == NULL) {
        rm_rf(dir);
        free(dir);
        return;
    }
    char id[QUEUE_ID_SIZE], id2[QUEUE_ID_SIZE], st[64];
    CHECK(queue_one(q, (const unsigned char *)"x\r\n", 3, 2, id) == 0);
    CHECK(queue_one(q, (const unsigned char *)"y\r\n", 3, 1, id2) == 0);
    snprintf(st, sizeof(st), "%s.st", id);
    CHECK(queue_rcpt_update(q, id, 0, QUEUE_RCPT_DONE, "250") == 0);
    CHECK(queue_hold(q, id) == 0);
    CHECK(exists(dir, "hold", id) && exists(dir, "hold", st));
    CHECK(!exists(dir, "msg", id) && !exists(dir, "msg", st));
    /* held without a state file */
    CHECK(queue_hold(q, id2) == 0);
    CHECK(exists(dir, "hold", id2));
    CHECK_EQ_INT(count_dir(dir, "msg"), 0);
    CHECK_EQ_INT(count_dir(dir, "hold"), 3);
    /* Recovery leaves held messages as they are. */
    CHECK(queue_recover(q) == 0);
    CHECK_EQ_INT(count_dir(dir, "hold"), 3);
    CHECK_EQ_INT(held_count(q, NULL), 2);
    CHECK_EQ_INT(list_count(q, NULL), 0);
    /* A new handle (a restart) sees them held too. */
    struct queue *q2 = fs_open(dir);
    CHECK(q2 != NULL);
    if (q2 != NULL) {
        CHECK_EQ_INT(held_count(q2, id), 2);
        bool held = false;
        CHECK(rcpt0_done(q2, id, &held) == 1 && held);
        queue_close(q2);
    }
    CHECK(queue_release(q, id) == 0);
    CHECK(exists(dir, "msg", id) && exists(dir, "msg", st));
    CHECK(!exists(dir, "hold", id) && !exists(dir, "hold", st));
    CHECK(queue_release(q, id2) == 0);
    CHECK_EQ_INT(count_dir(dir, "hold"), 0);
    CHECK_EQ_INT(count_dir(dir, "msg"), 3); /* id, its .st, id2 */

    /* A stray hold/<id>.st must not replace an active message's records
     * when someone asks to release a message that is not held. */
    char p[4096];
    path_of(p, sizeof(p), dir, "hold", st);
    write_file(p, "junk", 4);
    CHECK(queue_release(q, id) == -1 && errno == ENOENT);
    bool held = true;
    CHECK(rcpt0_done(q, id, &held) == 1 && !held);
    CHECK(exists(dir, "hold", st));
    unlink(p);

    /* Hold: the state file cannot follow (a directory is in the way): the
     * message goes back and the call fails. */
    CHECK(mkdir(p, 0700) == 0);
    CHECK(queue_hold(q, id) == -1);
    CHECK(exists(dir, "msg", id) && exists(dir, "msg", st));
    CHECK(!exists(dir, "hold", id));
    CHECK(rmdir(p) == 0);
    /* Release: the message cannot go back (a directory named like it in
     * msg/): its state file returns to hold/ with it. */
    CHECK(queue_hold(q, id2) == 0);
    CHECK(queue_hold(q, id) == 0);
    path_of(p, sizeof(p), dir, "msg", id);
    CHECK(mkdir(p, 0700) == 0);
    char sub[4200];
    snprintf(sub, sizeof(sub), "%s/keep", p);
    CHECK(mkdir(sub, 0700) == 0);
    CHECK(queue_release(q, id) == -1);
    CHECK(exists(dir, "hold", id) && exists(dir, "hold", st));
    CHECK(!exists(dir, "msg", st));
    rmdir(sub);
    rmdir(p);
    CHECK(queue_release(q, id) == 0);
    CHECK(rcpt0_done(q, id, &held) == 1 && !held);
    CHECK(queue_remove(q, id) == 0);
    CHECK(queue_remove(q, id2) == 0); /* held */
    CHECK_EQ_INT(count_dir(dir, "hold"), 0);
    CHECK_EQ_INT(count_dir(dir, "msg"), 0);
    queue_close(q);
    rm_rf(dir);
    free(dir);
}

/*
 * A crash between the two renames of a hold or a release, or after both
 * with only one of them on disk: every combination is made by hand, and
 * recovery must put each state file beside its message (doc/queue.md
 * "Hold and release", the table).
 */
TEST(fs_hold_crash_recovery)
{
    char *dir = make_tmpdir();
    if (dir == NULL)
        return;
    struct queue *q = fs_open(dir);
    if (q == NULL) {
        rm_rf(dir);
        free(dir);
        return;
    }
    enum { N = 7 };
    char id[N][QUEUE_ID_SIZE], st[N][64];
    for (int i = 0; i < N; i++) {
        CHECK(queue_one(q, (const unsigned char *)"m\r\n", 3, 2, id[i]) == 0);
        CHECK(queue_rcpt_update(q, id[i], 0, QUEUE_RCPT_DONE, "250 done") == 0);
        snprintf(st[i], sizeof(st[i]), "%.23s.st", id[i]);
    }
    /* 0: hold cut after step 1: hold/<id>, msg/<id>.st */
    CHECK(move(dir, "msg", "hold", id[0]) == 0);
    /* 1: release cut after step 1 (or a hold with only the .st rename on
     * disk): msg/<id>, hold/<id>.st */
    CHECK(move(dir, "msg", "hold", st[1]) == 0);
    /* 2: held, and a stray state file left in msg/ (the delivery thread's
     * race): the one beside the message wins */
    CHECK(queue_hold(q, id[2]) == 0);
    char p[4096];
    path_of(p, sizeof(p), dir, "msg", st[2]);
    struct buf rec;
    buf_init(&rec, 1024);
    CHECK(qfile_st_encode(0, QUEUE_RCPT_PENDING, "stray", 5, &rec) == 0);
    write_file(p, rec.data, rec.len);
    /* 3: in both directories at once (a filesystem whose rename is not
     * atomic across a crash): the held copy stays */
    char a[4096], b[4096];
    path_of(a, sizeof(a), dir, "msg", id[3]);
    path_of(b, sizeof(b), dir, "hold", id[3]);
    CHECK(link(a, b) == 0);
    /* 4: held, its state file with a torn tail */
    CHECK(queue_hold(q, id[4]) == 0);
    path_of(p, sizeof(p), dir, "hold", st[4]);
    off_t good = file_size(p);
    append_raw(p, rec.data, rec.len - 2);
    /* 5: held and corrupt (cut short): set aside with its state file */
    CHECK(queue_hold(q, id[5]) == 0);
    path_of(p, sizeof(p), dir, "hold", id[5]);
    CHECK(truncate(p, file_size(p) - 5) == 0);
    /* 6: hold cut after step 1 and the .st torn too: moved, then cut */
    CHECK(move(dir, "msg", "hold", id[6]) == 0);
    path_of(p, sizeof(p), dir, "msg", st[6]);
    append_raw(p, rec.data, 3);
    /* An orphan state file and an unknown file in hold/. */
    path_of(p, sizeof(p), dir, "hold", "0000000000000000000000C.st");
    write_file(p, rec.data, rec.len);
    path_of(p, sizeof(p), dir, "hold", "notes.txt");
    write_file(p, "x", 1);
    buf_free(&rec);

    struct queue *q2 = fs_open(dir); /* the restart */
    CHECK(q2 != NULL);
    if (q2 == NULL) {
        queue_close(q);
        rm_rf(dir);
        free(dir);
        return;
    }
    CHECK(queue_recover(q2) == 0);
    bool held = false;
    CHECK(exists(dir, "hold", st[0]) && !exists(dir, "msg", st[0]));
    CHECK(rcpt0_done(q2, id[0], &held) == 1 && held);
    CHECK(exists(dir, "msg", st[1]) && !exists(dir, "hold", st[1]));
    CHECK(rcpt0_done(q2, id[1], &held) == 1 && !held);
    CHECK(!exists(dir, "msg", st[2]) && exists(dir, "hold", st[2]));
    CHECK(rcpt0_done(q2, id[2], &held) == 1 && held);
    CHECK(!exists(dir, "msg", id[3]) && exists(dir, "hold", id[3]));
    CHECK(!exists(dir, "msg", st[3]) && exists(dir, "hold", st[3]));
    CHECK(rcpt0_done(q2, id[3], &held) == 1 && held);
    path_of(p, sizeof(p), dir, "hold", st[4]);
    CHECK(file_size(p) == good);
    CHECK(exists(dir, "corrupt", id[5]) && exists(dir, "corrupt", st[5]));
    CHECK(!exists(dir, "hold", id[5]) && !exists(dir, "hold", st[5]));
    CHECK(exists(dir, "hold", st[6]));
    path_of(p, sizeof(p), dir, "hold", st[6]);
    CHECK(file_size(p) == good);
    CHECK(rcpt0_done(q2, id[6], &held) == 1 && held);
    CHECK(!exists(dir, "hold", "0000000000000000000000C.st"));
    CHECK(exists(dir, "hold", "notes.txt"));
    CHECK_EQ_INT(list_count(q2, id[1]), 1);
    CHECK_EQ_INT(held_count(q2, NULL), 5); /* 0, 2, 3, 4, 6 */
    /* Idempotent. */
    CHECK(queue_recover(q2) == 0);
    CHECK_EQ_INT(count_dir(dir, "msg"), 2);   /* 1 and its .st */
    CHECK_EQ_INT(count_dir(dir, "hold"), 11); /* 5 x 2 + notes.txt */
    /* And each of them can be released and delivered normally. */
    for (int i = 0; i < N; i++) {
        if (i == 1 || i == 5)
            continue;
        CHECK(queue_release(q2, id[i]) == 0);
        CHECK(rcpt0_done(q2, id[i], &held) == 1 && !held);
    }
    CHECK_EQ_INT(list_count(q2, NULL), 6);
    queue_close(q2);
    queue_close(q);
    rm_rf(dir);
    free(dir);
}

TEST(fs_remove_order_leaves_no_resurrection)
{
    /* Simulate the crash between "unlink message + fsync" and "unlink
     * state": only the .st is left; recovery must delete it and never
     * produce a message. */
    char *dir = make_tmpdir();
    if (dir == NULL)
        return;
    struct queue *q = fs_open(dir);
    if (q == NULL) {
        rm_rf(dir);
        free(dir);
        return;
    }
    char id[QUEUE_ID_SIZE], p[4096], name[64];
    CHECK(queue_one(q, (const unsigned char *)"a", 1, 1, id) == 0);
    CHECK(queue_rcpt_update(q, id, 0, QUEUE_RCPT_DONE, "250") == 0);
    path_of(p, sizeof(p), dir, "msg", id);
    CHECK(unlink(p) == 0);
    CHECK_EQ_INT(list_count(q, NULL), 0);
    CHECK(queue_recover(q) == 0);
    CHECK_EQ_INT(count_dir(dir, "msg"), 0);
    snprintf(name, sizeof(name), "%s.st", id);
    path_of(p, sizeof(p), dir, "msg", name);
    CHECK(access(p, F_OK) == -1);
    queue_close(q);
    rm_rf(dir);
    free(dir);
}

TEST(fs_commit_failure_no_msg_dir)
{
    char *dir = make_tmpdir();
    if (dir == NULL)
        return;
    struct queue *q = fs_open(dir);
    if (q == NULL) {
        rm_rf(dir);
        free(dir);
        return;
    }
    struct queue_msg *m[2];
    struct queue_env e[2];
    struct queue_rcpt r[2][1];
    int res[2] = {-1, -1};
    for (int i = 0; i < 2; i++) {
        CHECK(queue_msg_open(q, &m[i]) == 0);
        CHECK(queue_msg_write(m[i], "data\r\n", 6) == 0);
        fill_env(&e[i], r[i], 1);
    }
    /* The msg/ directory disappears under the queue: rename fails. */
    char p[4096];
    snprintf(p, sizeof(p), "%s/msg", dir);
    CHECK(rmdir(p) == 0);
    CHECK(queue_commit(q, m, e, 2, res) == -1);
    CHECK(res[0] != 0 && res[1] != 0);
    CHECK_EQ_INT(count_dir(dir, "incoming"), 0);
    queue_close(q);
    rm_rf(dir);
    free(dir);
}

TEST(fs_commit_failure_unwritable_msg_dir)
{
    if (geteuid() == 0) {
        /* root ignores directory permissions: this case cannot be made to
         * fail by chmod; fs_commit_failure_no_msg_dir covers the path. */
        fprintf(stderr, "note: running as root, chmod 0500 test skipped\n");
        return;
    }
    char *dir = make_tmpdir();
    if (dir == NULL)
        return;
    struct queue *q = fs_open(dir);
    if (q == NULL) {
        rm_rf(dir);
        free(dir);
        return;
    }
    char p[4096], id[QUEUE_ID_SIZE];
    snprintf(p, sizeof(p), "%s/msg", dir);
    CHECK(chmod(p, 0500) == 0);
    CHECK(queue_one(q, (const unsigned char *)"x", 1, 1, id) == -1);
    CHECK_EQ_INT(count_dir(dir, "incoming"), 0);
    CHECK(chmod(p, 0700) == 0);
    CHECK_EQ_INT(count_dir(dir, "msg"), 0);
    queue_close(q);
    rm_rf(dir);
    free(dir);
}

TEST(fs_write_error_sticks)
{
    /* A file size limit makes write() fail with EFBIG, like a full disk:
     * the error must surface at write or commit, and nothing remain. */
    char *dir = make_tmpdir();
    if (dir == NULL)
        return;
    struct queue *q = fs_open(dir);
    if (q == NULL) {
        rm_rf(dir);
        free(dir);
        return;
    }
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 100000;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    struct queue_msg *m;
    CHECK(queue_msg_open(q, &m) == 0);
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    char chunk[10000];
    memset(chunk, 'a', sizeof(chunk));
    int failed = 0;
    for (int i = 0; i < 30 && !failed; i++)
        if (queue_msg_write(m, chunk, sizeof(chunk)) < 0)
            failed = errno;
    CHECK(failed == EFBIG);
    CHECK(queue_msg_write(m, "x", 1) == -1 && errno == EFBIG);
    struct queue_env e;
    struct queue_rcpt r[1];
    int res = 0;
    fill_env(&e, r, 1);
    CHECK(queue_commit(q, &m, &e, 1, &res) == -1 && res == EFBIG);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    CHECK_EQ_INT(count_dir(dir, "incoming"), 0);
    CHECK_EQ_INT(count_dir(dir, "msg"), 0);
    queue_close(q);
    rm_rf(dir);
    free(dir);
}

TEST(fs_open_failure_message)
{
    struct buf err;
    buf_init(&err, 1024);
    CHECK(queue_fs_open("/proc/version/q", &err) == NULL);
    CHECK(strstr(buf_cstr(&err), "/proc/version/q") != NULL);
    buf_free(&err);
}

int main(void)
{
    log_set_level(LOG_CRIT); /* recovery logs are expected here */
    RUN(mem_all);
    RUN(mem_injected_failures);
    RUN(fs_all);
    RUN(fs_file_layout);
    RUN(fs_torn_state_record);
    RUN(fs_recover);
    RUN(fs_hold_files);
    RUN(fs_hold_crash_recovery);
    RUN(fs_remove_order_leaves_no_resurrection);
    RUN(fs_commit_failure_no_msg_dir);
    RUN(fs_commit_failure_unwritable_msg_dir);
    RUN(fs_write_error_sticks);
    RUN(fs_open_failure_message);
    return harness_done("test_queue");
}
