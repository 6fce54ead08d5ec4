/*
 * queue: the public queue.h functions, dispatched to the backends through
 * their function tables (queue_backend.h), and queue ids.
 */
#include <time.h>

#include "lib/random.h"
#include "queue/queue_backend.h"

/* ================= dispatch (queue.h) ================= */

void queue_close(struct queue *q)
{
    if (q != NULL)
        q->ops->close(q);
}

int queue_msg_open(struct queue *q, struct queue_msg **m_r)
{
    return q->ops->msg_open(q, m_r);
}

const char *queue_msg_id(const struct queue_msg *m) { return m->id; }
uint64_t queue_msg_size(const struct queue_msg *m) { return m->size; }

int queue_msg_write(struct queue_msg *m, const void *p, size_t n)
{
    return m->q->ops->msg_write(m, p, n);
}

void queue_msg_abort(struct queue_msg *m)
{
    if (m != NULL)
        m->q->ops->msg_abort(m);
}

int queue_commit(struct queue *q, struct queue_msg **msgs,
                 const struct queue_env *envs, size_t n, int *results_r)
{
    return q->ops->commit(q, msgs, envs, n, results_r);
}

int queue_list(struct queue *q, void (*cb)(const char *id, void *arg), void *arg)
{
    return q->ops->list(q, cb, arg);
}

int queue_recover(struct queue *q) { return q->ops->recover(q); }

int queue_load(struct queue *q, const char *id, struct queue_env **env_r)
{
    return q->ops->load(q, id, env_r);
}

int queue_body_open(struct queue *q, const char *id, struct queue_body **b_r)
{
    return q->ops->body_open(q, id, b_r);
}

ssize_t queue_body_read(struct queue_body *b, void *p, size_t n)
{
    return b->q->ops->body_read(b, p, n);
}

void queue_body_close(struct queue_body *b)
{
    if (b != NULL)
        b->q->ops->body_close(b);
}

int queue_rcpt_update(struct queue *q, const char *id, size_t index,
                      enum queue_rcpt_state state, const char *status)
{
    return q->ops->rcpt_update(q, id, index, state, status);
}

int queue_remove(struct queue *q, const char *id)
{
    return q->ops->remove(q, id);
}

int queue_keep(struct queue *q, const char *id)
{
    return q->ops->keep(q, id);
}

int queue_set_aside(struct queue *q, const char *id, const char *reason)
{
    return q->ops->set_aside(q, id, reason);
}

int queue_hold(struct queue *q, const char *id) { return q->ops->hold(q, id); }

int queue_release(struct queue *q, const char *id)
{
    return q->ops->release(q, id);
}

int queue_list_held(struct queue *q, void (*cb)(const char *id, void *arg),
                    void *arg)
{
    return q->ops->list_held(q, cb, arg);
}

int queue_load_any(struct queue *q, const char *id, struct queue_env **env_r,
                   bool *held_r)
{
    bool held;
    int r = q->ops->load_any(q, id, env_r, &held);
    if (held_r != NULL)
        *held_r = held;
    return r;
}

int queue_body_open_any(struct queue *q, const char *id,
                        struct queue_body **b_r, bool *held_r)
{
    bool held;
    int r = q->ops->body_open_any(q, id, b_r, &held);
    if (held_r != NULL)
        *held_r = held;
    return r;
}

/* ================= ids ================= */

void queue_id_new(char id_r[QUEUE_ID_SIZE])
{
    static const char b36[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    static const char b62[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    for (int i = 10; i >= 0; i--, us /= 36)
        id_r[i] = b36[us % 36];
    unsigned char rnd[12];
    random_fill_unique(rnd, sizeof(rnd));
    for (int i = 0; i < 12; i++)
        id_r[11 + i] = b62[rnd[i] % 62];
    id_r[23] = '\0';
}
