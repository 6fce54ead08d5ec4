/*
 * queue_mem: the in-memory queue backend, for tests of the code above the
 * queue. Same observable semantics as queue_fs (doc/queue.md, last section):
 * envelopes are kept in their encoded form so the same limits apply and a
 * load is a decode; per-recipient states replay like the .st file (last
 * update wins, attempts = most updates of any recipient). One mutex guards
 * the whole queue; nothing survives the process. A held message stays in
 * the live list with its `held` flag set; the functions of the active queue
 * skip it, as the fs backend's do not look in hold/.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/qfile.h"
#include "queue/queue_backend.h"

struct mem_entry {
    char id[QUEUE_ID_SIZE];
    struct buf env;           /* encoded envelope */
    char *body;
    size_t body_len;
    size_t nrcpts;
    enum queue_rcpt_state *state;
    char **status;            /* NULL: never updated (the envelope's stands) */
    unsigned *count;
    bool corrupt;
    bool held;                /* out of the active queue (queue_hold) */
};

struct memq {
    struct queue base;
    pthread_mutex_t mu;
    struct mem_entry **live, **aside;
    size_t nlive, naside, caplive, capaside;
    unsigned fail_ops;
    int fail_err;
};

struct memmsg {
    struct queue_msg base;
    struct buf body;
    int err;              /* sticky write error, as in queue_fs */
};

struct membody {
    struct queue_body base;
    char *data;
    size_t len, off;
};

static struct memq *MQ(struct queue *q) { return (struct memq *)q; }

/* Called with the lock held: true (errno set) if op is made to fail. */
static bool injected(struct memq *mq, unsigned op)
{
    if ((mq->fail_ops & op) == 0 || mq->fail_err == 0)
        return false;
    errno = mq->fail_err;
    return true;
}

/* Releases the lock without losing the errno of the error being returned. */
static void unlock_keep_errno(struct memq *mq)
{
    int saved = errno;
    pthread_mutex_unlock(&mq->mu);
    errno = saved;
}

static bool check_injected(struct memq *mq, unsigned op)
{
    pthread_mutex_lock(&mq->mu);
    bool r = injected(mq, op);
    unlock_keep_errno(mq);
    return r;
}

static void entry_free(struct mem_entry *e)
{
    if (e == NULL)
        return;
    buf_free(&e->env);
    free(e->body);
    for (size_t i = 0; i < e->nrcpts; i++)
        free(e->status[i]);
    free(e->status);
    free(e->state);
    free(e->count);
    free(e);
}

enum mem_which { MEM_ACTIVE, MEM_HELD, MEM_ANY };

/* Index of id in the live list, held or not as `which` says, or -1; lock
 * held. */
static ssize_t find_in(struct memq *mq, const char *id, enum mem_which which)
{
    for (size_t i = 0; i < mq->nlive; i++)
        if (strcmp(mq->live[i]->id, id) == 0) {
            if (which == MEM_ANY || mq->live[i]->held == (which == MEM_HELD))
                return (ssize_t)i;
            return -1;
        }
    return -1;
}

static ssize_t find_live(struct memq *mq, const char *id)
{
    return find_in(mq, id, MEM_ANY);
}

/*
 * Takes the lock and finds id in the live list (held or not as `which`
 * says): its index with the lock held, or -1 with the lock released and
 * errno set, to the injected error when op is made to fail (op 0 never
 * is), else to ENOENT.
 */
static ssize_t lock_which(struct memq *mq, const char *id, unsigned op,
                          enum mem_which which)
{
    pthread_mutex_lock(&mq->mu);
    ssize_t k = find_in(mq, id, which);
    if (injected(mq, op))
        k = -1;
    else if (k < 0)
        errno = ENOENT;
    if (k < 0)
        unlock_keep_errno(mq);
    return k;
}

/* The active queue only. */
static ssize_t lock_live(struct memq *mq, const char *id, unsigned op)
{
    return lock_which(mq, id, op, MEM_ACTIVE);
}

static bool id_known(struct memq *mq, const char *id)
{
    if (find_live(mq, id) >= 0)
        return true;
    for (size_t i = 0; i < mq->naside; i++)
        if (strcmp(mq->aside[i]->id, id) == 0)
            return true;
    return false;
}

static void push(struct mem_entry ***v, size_t *n, size_t *cap,
                 struct mem_entry *e)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *v = xreallocarray(*v, *cap, sizeof(**v));
    }
    (*v)[(*n)++] = e;
}

static int mem_msg_open(struct queue *q, struct queue_msg **m_r)
{
    struct memq *mq = MQ(q);
    *m_r = NULL;
    struct memmsg *m = xcalloc(1, sizeof(*m));
    pthread_mutex_lock(&mq->mu);
    if (injected(mq, QUEUE_MEM_FAIL_OPEN)) {
        int saved = errno;
        pthread_mutex_unlock(&mq->mu);
        free(m);
        errno = saved;
        return -1;
    }
    do
        queue_id_new(m->base.id);
    while (id_known(mq, m->base.id));
    pthread_mutex_unlock(&mq->mu);
    m->base.q = q;
    buf_init(&m->body, SIZE_MAX - 1);
    *m_r = &m->base;
    return 0;
}

static int mem_msg_write(struct queue_msg *qm, const void *p, size_t n)
{
    struct memmsg *m = (struct memmsg *)qm;
    if (m->err != 0) {
        errno = m->err;
        return -1;
    }
    if (check_injected(MQ(qm->q), QUEUE_MEM_FAIL_WRITE)) {
        m->err = errno;
        return -1;
    }
    if (buf_append(&m->body, p, n) < 0) {
        m->err = errno = EFBIG;
        return -1;
    }
    m->base.size = m->body.len;
    return 0;
}

static void mem_msg_abort(struct queue_msg *qm)
{
    struct memmsg *m = (struct memmsg *)qm;
    buf_free(&m->body);
    free(m);
}

static int mem_commit(struct queue *q, struct queue_msg **msgs,
                      const struct queue_env *envs, size_t n, int *results_r)
{
    struct memq *mq = MQ(q);
    int first_err = 0;
    pthread_mutex_lock(&mq->mu);
    bool fail = injected(mq, QUEUE_MEM_FAIL_COMMIT);
    int fail_err = errno;
    for (size_t i = 0; i < n; i++) {
        struct memmsg *m = (struct memmsg *)msgs[i];
        struct queue_env e = envs[i];
        struct mem_entry *ent = xcalloc(1, sizeof(*ent));
        results_r[i] = 0;
        memcpy(e.id, m->base.id, sizeof(e.id));
        buf_init(&ent->env, QFILE_ENV_MAX);
        if (fail)
            results_r[i] = fail_err;
        else if (m->err != 0)
            results_r[i] = m->err;
        else if (qfile_env_encode(&e, &ent->env) < 0)
            results_r[i] = errno;
        if (results_r[i] != 0) {
            if (first_err == 0)
                first_err = results_r[i];
            entry_free(ent);
        } else {
            memcpy(ent->id, m->base.id, sizeof(ent->id));
            ent->body_len = m->body.len;
            ent->body = m->body.data; /* ownership moves to the entry */
            m->body.data = NULL;
            ent->nrcpts = e.nrcpts;
            if (e.nrcpts > 0) {
                ent->state = xcalloc(e.nrcpts, sizeof(*ent->state));
                ent->status = xcalloc(e.nrcpts, sizeof(*ent->status));
                ent->count = xcalloc(e.nrcpts, sizeof(*ent->count));
            }
            push(&mq->live, &mq->nlive, &mq->caplive, ent);
        }
        buf_free(&m->body);
        free(m);
    }
    pthread_mutex_unlock(&mq->mu);
    if (first_err != 0) {
        errno = first_err;
        return -1;
    }
    return 0;
}

static int mem_list_which(struct queue *q, bool held,
                          void (*cb)(const char *id, void *arg), void *arg)
{
    struct memq *mq = MQ(q);
    pthread_mutex_lock(&mq->mu);
    size_t n = 0;
    char (*ids)[QUEUE_ID_SIZE] = xreallocarray(NULL, mq->nlive ? mq->nlive : 1,
                                               sizeof(*ids));
    for (size_t i = 0; i < mq->nlive; i++)
        if (mq->live[i]->held == held)
            memcpy(ids[n++], mq->live[i]->id, QUEUE_ID_SIZE);
    pthread_mutex_unlock(&mq->mu);
    /* Outside the lock: the callback may call back into the queue. */
    for (size_t i = 0; i < n; i++)
        cb(ids[i], arg);
    free(ids);
    return 0;
}

static int mem_list(struct queue *q, void (*cb)(const char *id, void *arg),
                    void *arg)
{
    return mem_list_which(q, false, cb, arg);
}

static int mem_list_held(struct queue *q, void (*cb)(const char *id, void *arg),
                         void *arg)
{
    return mem_list_which(q, true, cb, arg);
}

static int mem_recover(struct queue *q)
{
    (void)q; /* nothing in memory survives a crash */
    return 0;
}

static int mem_load_which(struct queue *q, const char *id,
                          struct queue_env **env_r, enum mem_which which,
                          bool *held_r)
{
    struct memq *mq = MQ(q);
    int rc = 0;
    *env_r = NULL;
    *held_r = false;
    if (!qfile_id_valid(id)) {
        errno = EINVAL;
        return -1;
    }
    ssize_t k = lock_which(mq, id, QUEUE_MEM_FAIL_LOAD, which);
    if (k < 0)
        return -1;
    *held_r = mq->live[k]->held;
    if (mq->live[k]->corrupt) {
        errno = EBADMSG;
        rc = -2;
    } else {
        struct mem_entry *e = mq->live[k];
        struct queue_env *env;
        if (qfile_env_decode(e->env.data, e->env.len, &env) < 0) {
            rc = -2; /* cannot happen: we encoded it */
        } else {
            env->body_size = e->body_len;
            env->attempts = 0;
            for (size_t i = 0; i < e->nrcpts && i < env->nrcpts; i++) {
                if (e->status[i] != NULL) {
                    env->rcpts[i].state = e->state[i];
                    free(env->rcpts[i].status);
                    env->rcpts[i].status = xstrdup(e->status[i]);
                }
                if (e->count[i] > env->attempts)
                    env->attempts = e->count[i];
            }
            *env_r = env;
        }
    }
    unlock_keep_errno(mq);
    return rc;
}

static int mem_load(struct queue *q, const char *id, struct queue_env **env_r)
{
    bool held;
    return mem_load_which(q, id, env_r, MEM_ACTIVE, &held);
}

static int mem_load_any(struct queue *q, const char *id,
                        struct queue_env **env_r, bool *held_r)
{
    return mem_load_which(q, id, env_r, MEM_ANY, held_r);
}

static int mem_body_open_which(struct queue *q, const char *id,
                               struct queue_body **b_r, enum mem_which which,
                               bool *held_r)
{
    struct memq *mq = MQ(q);
    *b_r = NULL;
    *held_r = false;
    if (!qfile_id_valid(id)) {
        errno = EINVAL;
        return -1;
    }
    ssize_t k = lock_which(mq, id, 0, which);
    if (k < 0)
        return -1;
    *held_r = mq->live[k]->held;
    struct membody *b = xcalloc(1, sizeof(*b));
    b->base.q = q;
    b->len = mq->live[k]->body_len;
    /* A copy, like an open file keeps its inode after queue_remove. */
    b->data = xmalloc(b->len > 0 ? b->len : 1);
    if (b->len > 0)
        memcpy(b->data, mq->live[k]->body, b->len);
    pthread_mutex_unlock(&mq->mu);
    *b_r = &b->base;
    return 0;
}

static int mem_body_open(struct queue *q, const char *id, struct queue_body **b_r)
{
    bool held;
    return mem_body_open_which(q, id, b_r, MEM_ACTIVE, &held);
}

static int mem_body_open_any(struct queue *q, const char *id,
                             struct queue_body **b_r, bool *held_r)
{
    return mem_body_open_which(q, id, b_r, MEM_ANY, held_r);
}

static ssize_t mem_body_read(struct queue_body *qb, void *p, size_t n)
{
    struct membody *b = (struct membody *)qb;
    size_t left = b->len - b->off;
    if (n > left)
        n = left;
    if (n > SSIZE_MAX)
        n = SSIZE_MAX;
    if (n > 0)
        memcpy(p, b->data + b->off, n);
    b->off += n;
    return (ssize_t)n;
}

static void mem_body_close(struct queue_body *qb)
{
    struct membody *b = (struct membody *)qb;
    free(b->data);
    free(b);
}

static int mem_rcpt_update(struct queue *q, const char *id, size_t index,
                           enum queue_rcpt_state state, const char *status)
{
    struct memq *mq = MQ(q);
    int rc = 0;
    if (!qfile_id_valid(id) || (unsigned)state > QUEUE_RCPT_FAILED) {
        errno = EINVAL;
        return -1;
    }
    if (status == NULL)
        status = "";
    ssize_t k = lock_live(mq, id, QUEUE_MEM_FAIL_UPDATE);
    if (k < 0)
        return -1;
    if (index >= mq->live[k]->nrcpts) {
        errno = EINVAL;
        rc = -1;
    } else {
        struct mem_entry *e = mq->live[k];
        size_t sl = strlen(status);
        e->state[index] = state;
        free(e->status[index]);
        e->status[index] = xstrndup(status, sl > QFILE_STATUS_MAX ?
                                                QFILE_STATUS_MAX : sl);
        e->count[index]++;
    }
    unlock_keep_errno(mq);
    return rc;
}

/* Takes entry k out of the live list; lock held. */
static struct mem_entry *take_live(struct memq *mq, size_t k)
{
    struct mem_entry *e = mq->live[k];
    mq->live[k] = mq->live[--mq->nlive];
    return e;
}

static int mem_remove(struct queue *q, const char *id)
{
    struct memq *mq = MQ(q);
    if (!qfile_id_valid(id)) {
        errno = EINVAL;
        return -1;
    }
    ssize_t k = lock_which(mq, id, QUEUE_MEM_FAIL_REMOVE, MEM_ANY);
    if (k < 0)
        return -1;
    struct mem_entry *gone = take_live(mq, (size_t)k);
    pthread_mutex_unlock(&mq->mu);
    entry_free(gone);
    return 0;
}

static int mem_set_aside(struct queue *q, const char *id, const char *reason)
{
    struct memq *mq = MQ(q);
    ssize_t k = lock_live(mq, id, 0);
    if (k < 0)
        return -1;
    push(&mq->aside, &mq->naside, &mq->capaside, take_live(mq, (size_t)k));
    pthread_mutex_unlock(&mq->mu);
    log_kv(LOG_WARN, "queue.set_aside", "id", id, "reason", reason, NULL);
    return 0;
}

/* Active -> held (held true) or back. */
static int mem_set_held(struct queue *q, const char *id, bool held)
{
    struct memq *mq = MQ(q);
    if (!qfile_id_valid(id)) {
        errno = EINVAL;
        return -1;
    }
    ssize_t k = lock_which(mq, id, 0, held ? MEM_ACTIVE : MEM_HELD);
    if (k < 0)
        return -1;
    mq->live[k]->held = held;
    pthread_mutex_unlock(&mq->mu);
    return 0;
}

static int mem_hold(struct queue *q, const char *id)
{
    return mem_set_held(q, id, true);
}

static int mem_release(struct queue *q, const char *id)
{
    return mem_set_held(q, id, false);
}

static void mem_close(struct queue *q)
{
    struct memq *mq = MQ(q);
    for (size_t i = 0; i < mq->nlive; i++)
        entry_free(mq->live[i]);
    for (size_t i = 0; i < mq->naside; i++)
        entry_free(mq->aside[i]);
    free(mq->live);
    free(mq->aside);
    pthread_mutex_destroy(&mq->mu);
    free(mq);
}

/* Everything here is already as durable as it gets. */
static int mem_keep(struct queue *q, const char *id)
{
    (void)q;
    if (!qfile_id_valid(id)) {
        errno = EINVAL;
        return -1;
    }
    return 0;
}

static const struct queue_ops mem_ops = {
    .close = mem_close,
    .msg_open = mem_msg_open,
    .msg_write = mem_msg_write,
    .msg_abort = mem_msg_abort,
    .commit = mem_commit,
    .list = mem_list,
    .recover = mem_recover,
    .load = mem_load,
    .body_open = mem_body_open,
    .body_read = mem_body_read,
    .body_close = mem_body_close,
    .rcpt_update = mem_rcpt_update,
    .remove = mem_remove,
    .set_aside = mem_set_aside,
    .hold = mem_hold,
    .release = mem_release,
    .list_held = mem_list_held,
    .load_any = mem_load_any,
    .body_open_any = mem_body_open_any,
    .keep = mem_keep,
};

struct queue *queue_mem_new(void)
{
    struct memq *mq = xcalloc(1, sizeof(*mq));
    mq->base.ops = &mem_ops;
    pthread_mutex_init(&mq->mu, NULL);
    return &mq->base;
}

void queue_mem_fail(struct queue *q, unsigned ops, int err)
{
    if (q == NULL || q->ops != &mem_ops)
        return;
    struct memq *mq = MQ(q);
    pthread_mutex_lock(&mq->mu);
    mq->fail_ops = err != 0 ? ops : 0;
    mq->fail_err = err;
    pthread_mutex_unlock(&mq->mu);
}

int queue_mem_corrupt(struct queue *q, const char *id)
{
    if (q == NULL || q->ops != &mem_ops) {
        errno = EINVAL;
        return -1;
    }
    struct memq *mq = MQ(q);
    ssize_t k = lock_live(mq, id, 0);
    if (k < 0)
        return -1;
    mq->live[k]->corrupt = true;
    pthread_mutex_unlock(&mq->mu);
    return 0;
}
