/* qmgr: see qmgr.h for the contract and the rules. */
#include "deliver/qmgr.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deliver/resolve.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/queue.h"
#include "store/store.h"

struct qmgr_item {
    struct qmgr_item *next;
    char id[QUEUE_ID_SIZE];
    time_t due;
    unsigned tries;
};

struct qmgr {
    struct queue *queue;
    struct store *store;
    struct cfgref *cfg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct qmgr_item *ready_head, *ready_tail;  /* due now, FIFO */
    struct qmgr_item *waiting;                  /* retries, unordered */
    bool stopping;
};

struct qmgr_body {
    struct queue_body *b;
};

static ssize_t qmgr_body_read(void *arg, void *p, size_t n)
{
    struct qmgr_body *qb = arg;
    return queue_body_read(qb->b, p, n);
}

/* One mailbox, one copy: 0 on success, -1 (errno) on a temporary failure. */
static int qmgr_deliver_mailbox(struct queue *q, struct store *st,
                                const struct queue_env *env, const char *mailbox)
{
    struct queue_body *b;
    if (queue_body_open(q, env->id, &b) < 0)
        return -1;
    struct buf prefix;
    buf_init(&prefix, 4096);
    buf_appendf(&prefix, "Return-Path: <%s>\r\n", env->sender);
    struct qmgr_body qb = {.b = b};
    char uid[256];
    int r = store_deliver(st, mailbox, NULL, prefix.data, prefix.len,
                          qmgr_body_read, &qb, uid, sizeof(uid));
    int saved = errno;
    queue_body_close(b);
    buf_free(&prefix);
    if (r == 0)
        log_kv(LOG_INFO, "deliver.ok", "qid", env->id, "mailbox", mailbox, "uid",
               uid, NULL);
    else
        log_kv(LOG_WARN, "deliver.tempfail", "qid", env->id, "mailbox", mailbox,
               "error", strerror(saved), NULL);
    errno = saved;
    return r;
}

/* Index of s in list[0..n), or n. */
static size_t qmgr_find(char **list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return i;
    return n;
}

int qmgr_deliver_one(struct queue *q, struct store *st, const struct config *cfg,
                     const char *id)
{
    struct queue_env *env;
    int lr = queue_load(q, id, &env);
    if (lr == -2) {
        log_kv(LOG_ERR, "queue.corrupt", "qid", id, NULL);
        queue_set_aside(q, id, "cannot parse queue file");
        return 1;
    }
    if (lr < 0)
        return -1;

    time_t now = time(NULL);
    bool expired = (uint64_t)(now - env->created) >
                   (uint64_t)cfg->limits[LIM_QUEUE_LIFETIME];
    size_t n = env->nrcpts;
    /* Per recipient: its resolution; then the set of distinct mailboxes. */
    struct resolve_result *res = xcalloc(n ? n : 1, sizeof(*res));
    enum resolve_status *rst = xcalloc(n ? n : 1, sizeof(*rst));
    char **boxes = NULL;
    int *box_ok = NULL;
    size_t nboxes = 0;
    for (size_t i = 0; i < n; i++) {
        struct queue_rcpt *r = &env->rcpts[i];
        if (r->state != QUEUE_RCPT_PENDING)
            continue;
        const char *at = strrchr(r->address, '@');
        if (at == NULL) {
            rst[i] = RESOLVE_UNKNOWN_USER;
            memset(&res[i], 0, sizeof(res[i]));
            continue;
        }
        rst[i] = resolve_address(cfg, r->address, (size_t)(at - r->address),
                                 at + 1, strlen(at + 1), &res[i]);
        if (rst[i] != RESOLVE_OK)
            continue;
        for (size_t k = 0; k < res[i].nmailboxes; k++) {
            if (qmgr_find(boxes, nboxes, res[i].mailboxes[k]) < nboxes)
                continue;
            boxes = xreallocarray(boxes, nboxes + 1, sizeof(*boxes));
            boxes[nboxes++] = res[i].mailboxes[k];
        }
    }
    box_ok = xcalloc(nboxes ? nboxes : 1, sizeof(*box_ok));
    for (size_t k = 0; k < nboxes; k++)
        box_ok[k] = qmgr_deliver_mailbox(q, st, env, boxes[k]) == 0;

    int status = 1;
    for (size_t i = 0; i < n; i++) {
        struct queue_rcpt *r = &env->rcpts[i];
        if (r->state != QUEUE_RCPT_PENDING)
            continue;
        enum queue_rcpt_state ns = QUEUE_RCPT_PENDING;
        const char *text = "";
        char why[128];
        if (rst[i] != RESOLVE_OK) {
            ns = QUEUE_RCPT_FAILED;
            snprintf(why, sizeof(why), "550 5.1.1 recipient no longer valid (%s)",
                     resolve_status_name(rst[i]));
            text = why;
        } else {
            bool all = true;
            for (size_t k = 0; k < res[i].nmailboxes; k++)
                if (!box_ok[qmgr_find(boxes, nboxes, res[i].mailboxes[k])])
                    all = false;
            if (res[i].nremote > 0) {
                /* Forwarding needs the relay (issue 5). */
                log_kv(LOG_WARN, "deliver.deferred", "qid", id, "rcpt", r->address,
                       "reason", "forwarding to remote address needs relay", NULL);
                all = false;
            }
            if (all) {
                ns = QUEUE_RCPT_DONE;
                text = "250 2.0.0 delivered";
            } else if (expired) {
                ns = QUEUE_RCPT_FAILED;
                text = "451 4.4.7 delivery time expired";
            }
        }
        if (ns == QUEUE_RCPT_PENDING) {
            status = 0;
            continue;
        }
        if (queue_rcpt_update(q, id, i, ns, text) < 0) {
            status = -1;
            continue;
        }
        if (ns == QUEUE_RCPT_FAILED)
            log_kv(LOG_WARN, "deliver.failed", "qid", id, "rcpt", r->address,
                   "status", text, NULL);
    }
    if (status == 1) {
        if (queue_remove(q, id) < 0)
            status = -1;
        else
            log_kv(LOG_INFO, "queue.removed", "qid", id, NULL);
    }
    for (size_t i = 0; i < n; i++)
        resolve_result_free(&res[i]);
    free(res);
    free(rst);
    free(boxes);
    free(box_ok);
    queue_env_free(env);
    return status;
}

static void qmgr_push_ready(struct qmgr *m, struct qmgr_item *it)
{
    it->next = NULL;
    if (m->ready_tail)
        m->ready_tail->next = it;
    else
        m->ready_head = it;
    m->ready_tail = it;
}

/* Moves due retries to the ready list; returns the earliest future due time
 * (0 if none). Called with the lock held. */
static time_t qmgr_promote(struct qmgr *m, time_t now)
{
    time_t next = 0;
    struct qmgr_item **pp = &m->waiting;
    while (*pp) {
        struct qmgr_item *it = *pp;
        if (it->due <= now) {
            *pp = it->next;
            qmgr_push_ready(m, it);
        } else {
            if (next == 0 || it->due < next)
                next = it->due;
            pp = &it->next;
        }
    }
    return next;
}

static void *qmgr_thread(void *arg)
{
    struct qmgr *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stopping) {
        time_t now = time(NULL);
        time_t next = qmgr_promote(m, now);
        struct qmgr_item *it = m->ready_head;
        if (it == NULL) {
            if (next == 0) {
                pthread_cond_wait(&m->cv, &m->mu);
            } else {
                struct timespec ts = {.tv_sec = next, .tv_nsec = 0};
                pthread_cond_timedwait(&m->cv, &m->mu, &ts);
            }
            continue;
        }
        m->ready_head = it->next;
        if (m->ready_head == NULL)
            m->ready_tail = NULL;
        struct cfgref *cfg = cfgref_get(m->cfg);
        pthread_mutex_unlock(&m->mu);

        int r = qmgr_deliver_one(m->queue, m->store, cfg->cfg, it->id);

        pthread_mutex_lock(&m->mu);
        if (r == 1) {
            free(it);
        } else {
            /* Exponential backoff between retry-min and retry-max. */
            uint64_t delay = cfg->cfg->limits[LIM_RETRY_MIN];
            for (unsigned k = 0; k < it->tries && delay < cfg->cfg->limits[LIM_RETRY_MAX]; k++)
                delay *= 2;
            if (delay > cfg->cfg->limits[LIM_RETRY_MAX])
                delay = cfg->cfg->limits[LIM_RETRY_MAX];
            it->tries++;
            it->due = time(NULL) + (time_t)delay;
            it->next = m->waiting;
            m->waiting = it;
            log_kv(LOG_INFO, "queue.retry_scheduled", "qid", it->id, NULL);
        }
        cfgref_put(cfg);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

static void qmgr_list_cb(const char *id, void *arg)
{
    qmgr_notify(arg, id);
}

struct qmgr *qmgr_start(struct queue *q, struct store *st, struct cfgref *cfg)
{
    struct qmgr *m = xcalloc(1, sizeof(*m));
    m->queue = q;
    m->store = st;
    m->cfg = cfgref_get(cfg);
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    queue_list(q, qmgr_list_cb, m);
    if (pthread_create(&m->thread, NULL, qmgr_thread, m) != 0) {
        log_kv(LOG_CRIT, "qmgr.thread", "error", "pthread_create failed", NULL);
        abort();
    }
    return m;
}

void qmgr_notify(struct qmgr *m, const char *id)
{
    struct qmgr_item *it = xcalloc(1, sizeof(*it));
    snprintf(it->id, sizeof(it->id), "%s", id);
    pthread_mutex_lock(&m->mu);
    qmgr_push_ready(m, it);
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

void qmgr_set_config(struct qmgr *m, struct cfgref *cfg)
{
    pthread_mutex_lock(&m->mu);
    struct cfgref *old = m->cfg;
    m->cfg = cfgref_get(cfg);
    pthread_mutex_unlock(&m->mu);
    cfgref_put(old);
}

void qmgr_stop(struct qmgr *m)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thread, NULL);
    struct qmgr_item *lists[2] = {m->ready_head, m->waiting};
    for (int i = 0; i < 2; i++) {
        while (lists[i]) {
            struct qmgr_item *it = lists[i];
            lists[i] = it->next;
            free(it);
        }
    }
    cfgref_put(m->cfg);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
}
