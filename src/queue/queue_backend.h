/*
 * queue_backend: the private function table behind queue.h (OpenSMTPD's
 * queue_backend.c). Each backend's struct queue / queue_msg / queue_body
 * starts with the common part below; the public functions in queue_fs.c
 * dispatch through q->ops. Not for use outside src/queue.
 */
#ifndef ESTAFETA_QUEUE_QUEUE_BACKEND_H
#define ESTAFETA_QUEUE_QUEUE_BACKEND_H

#include "queue/queue.h"

struct queue_ops {
    void (*close)(struct queue *q);
    int (*msg_open)(struct queue *q, struct queue_msg **m_r);
    int (*msg_write)(struct queue_msg *m, const void *p, size_t n);
    void (*msg_abort)(struct queue_msg *m);
    int (*commit)(struct queue *q, struct queue_msg **msgs,
                  const struct queue_env *envs, size_t n, int *results_r);
    int (*list)(struct queue *q, void (*cb)(const char *id, void *arg),
                void *arg);
    int (*recover)(struct queue *q);
    int (*load)(struct queue *q, const char *id, struct queue_env **env_r);
    int (*body_open)(struct queue *q, const char *id, struct queue_body **b_r);
    ssize_t (*body_read)(struct queue_body *b, void *p, size_t n);
    void (*body_close)(struct queue_body *b);
    int (*rcpt_update)(struct queue *q, const char *id, size_t index,
                       enum queue_rcpt_state state, const char *status);
    int (*remove)(struct queue *q, const char *id);
    int (*set_aside)(struct queue *q, const char *id, const char *reason);
    int (*hold)(struct queue *q, const char *id);
    int (*release)(struct queue *q, const char *id);
    int (*list_held)(struct queue *q, void (*cb)(const char *id, void *arg),
                     void *arg);
    int (*load_any)(struct queue *q, const char *id, struct queue_env **env_r,
                    bool *held_r);
    int (*body_open_any)(struct queue *q, const char *id,
                         struct queue_body **b_r, bool *held_r);
    int (*keep)(struct queue *q, const char *id);
};

struct queue {
    const struct queue_ops *ops;
};

struct queue_msg {
    struct queue *q;
    char id[QUEUE_ID_SIZE];
    uint64_t size;      /* body bytes accepted by queue_msg_write */
};

struct queue_body {
    struct queue *q;
};

/* A fresh id (doc/queue.md "Queue ids"): time-ordered, 71 random bits. */
void queue_id_new(char id_r[QUEUE_ID_SIZE]);

#endif
