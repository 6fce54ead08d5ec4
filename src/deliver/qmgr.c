/* qmgr: see qmgr.h for the contract and the rules. */
#include "deliver/qmgr.h"

#include <errno.h>
#include <pthread.h>
#include <search.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "deliver/resolve.h"
#include "lib/buf.h"
#include "proto/smtp_cmd.h"
#include "relay/bounce.h"
#include "relay/relay.h"
#include "lib/log.h"
#include "lib/timeheap.h"
#include "lib/xalloc.h"
#include "queue/queue.h"
#include "store/mailbox.h"
#include "store/store.h"
#include "lib/hash.h"

#define QMGR_BOX_LOCKS 64

struct qmgr_item {
    struct qmgr_item *next;
    char id[QUEUE_ID_SIZE];
    time_t due;
    unsigned tries;          /* local delivery attempts (backoff) */
    unsigned relay_tries;    /* relay attempts (relay backoff) */
    time_t relay_due;        /* not handed to the relay before this */
    bool warned;             /* delay DSN sent (kept in memory only:
                                after a restart it may be sent again) */
    uint64_t ready_ms;       /* when it last became ready (monotonic) */
};

/* How long a ready message may wait for the awake workers before an idle
 * one (the standby) takes it: the wake policy leaves work to the awake
 * workers, and one of them may be stuck in a slow delivery (a huge
 * message, an index locked by a reader, a slow disk). A pass of 32 small
 * messages takes a few milliseconds. */
#define QMGR_STALL_MS 20

/* How long a worker woken for fewer than half a batch waits for more
 * (from when the oldest became ready), so that a trickle of messages (one
 * client sending one after another) is made durable a dozen at a time
 * instead of each with two flushes of its own, flushes that also hold up
 * the accept log's (doc/performance.md "Gathering a batch"). Under load a
 * batch is ready sooner; with delivery-batch 1 there is nothing to gather. */
#define QMGR_GATHER_MS 5

struct qmgr {
    struct queue *queue;
    struct store *store;
    struct cfgref *cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct qmgr_item *ready_head, *ready_tail;  /* due now, FIFO */
    size_t nready;
    /* Retries by due time, so taking the due ones is O(log n) each and
     * not a walk of every deferred message for every message delivered (a
     * queue deferred by a remote outage can hold 100,000, and this lock is
     * the event loop's too). */
    struct timeheap waiting;
    /* Handed to the relay, by id (tsearch): the relay reports by id, and
     * a list walked for each report cost O(n) each with n in flight. */
    void *in_relay;
    char (*current)[QUEUE_ID_SIZE];             /* per worker, `batch`
                                                   each: being delivered */
    pthread_t *threads;
    size_t nthreads;
    size_t batch;            /* delivery-batch: messages per worker pass */
    /* Waking (qmgr_wake): workers waiting for work, and wake-ups sent to
     * them that none has taken yet; whether an idle worker is the standby
     * (QMGR_STALL_MS). */
    size_t idle, signaled;
    bool standby, standby_wanted;
    /* A worker waits for gather_n ready messages (QMGR_GATHER_MS); no
     * other is woken for fewer meanwhile. */
    bool gathering;
    size_t gather_n;
    int nice;                /* delivery-nice, applied by each worker */
    /* With a quota, the check and the delivery of one mailbox must not
     * interleave with another worker's (or both could pass the check and
     * overfill it): striped locks by mailbox name. */
    pthread_mutex_t box_locks[QMGR_BOX_LOCKS];
    struct relay *relay;
    bool flush;                                 /* qmgr_flush asked */
    bool stopping;
};

/* Marks a recipient whose DSN has been queued, so that it is reported
 * once, whenever the message is looked at again (after a restart too). */
#define QMGR_REPORTED " [reported]"
#define QMGR_STATUS_MAX 3100

struct qmgr_body {
    struct queue_body *b;
};

static ssize_t qmgr_body_read(void *arg, void *p, size_t n)
{
    struct qmgr_body *qb = arg;
    return queue_body_read(qb->b, p, n);
}

/* Index of s in list[0..n), or n. */
static size_t qmgr_find(char **list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return i;
    return n;
}

/* Growable set of distinct strings (borrowed pointers). */
struct qmgr_set {
    char **v;
    size_t n;
};

static void qmgr_set_add(struct qmgr_set *set, char *s)
{
    if (qmgr_find(set->v, set->n, s) < set->n)
        return;
    set->v = xreallocarray(set->v, set->n + 1, sizeof(*set->v));
    set->v[set->n++] = s;
}

/* One mailbox's copy, written (store_deliver_begin): 0 with *pend_r, to be
 * committed with the worker's batch, or -1 (errno) on failure; EDQUOT
 * when the user is over quota (the caller decides temporary or not).
 * `seen`: the mailboxes this batch already made sure exist (NULL: none);
 * mailbox is added to it (borrowed: the job's, alive for the batch). */
static int qmgr_box_begin(struct queue *q, struct store *st, const struct config *cfg,
                          struct store_flush *fl, const struct queue_env *env,
                          char *mailbox, struct qmgr_set *seen,
                          struct store_pending **pend_r)
{
    if ((cfg->quota_bytes || cfg->quota_messages) &&
        store_deliver_quota(st, mailbox, cfg->quota_bytes, cfg->quota_messages,
                            env->body_size) < 0 && errno == EDQUOT) {
        log_kv(LOG_WARN, "deliver.over_quota", "qid", env->id, "mailbox", mailbox,
               NULL);
        errno = EDQUOT;
        return -1;
    }
    /* A user's first message: create the standard folders (Sent, Drafts,
     * Trash, Junk, Archive) with the mailbox, as mail clients expect. */
    char path[4096];
    if (seen == NULL || qmgr_find(seen->v, seen->n, mailbox) == seen->n) {
        bool made = true;
        if (store_mailbox_path(st, mailbox, path, sizeof(path)) == 0 &&
            access(path, F_OK) < 0 && errno == ENOENT &&
            store_user_create(st, mailbox) < 0) {
            log_kv(LOG_WARN, "deliver.user_create_failed", "mailbox", mailbox, "error",
                   strerror(errno), NULL);
            made = false; /* the batch's next message for it tries again */
        }
        if (made && seen != NULL)
            qmgr_set_add(seen, mailbox);
    }
    struct queue_body *b;
    if (queue_body_open(q, env->id, &b) < 0) {
        int err = errno;
        log_kv(LOG_WARN, "deliver.tempfail", "qid", env->id, "mailbox", mailbox,
               "error", strerror(err), NULL);
        errno = err;
        return -1;
    }
    struct buf prefix;
    buf_init(&prefix, 4096);
    buf_appendf(&prefix, "Return-Path: <%s>\r\n", env->sender);
    struct qmgr_body qb = {.b = b};
    int r = store_deliver_begin(st, fl, mailbox, NULL, prefix.data, prefix.len,
                                qmgr_body_read, &qb, pend_r);
    int saved = errno;
    queue_body_close(b);
    buf_free(&prefix);
    if (r < 0)
        log_kv(LOG_WARN, "deliver.tempfail", "qid", env->id, "mailbox", mailbox,
               "error", strerror(saved), NULL);
    errno = saved;
    return r;
}

/*
 * Queues a new message with the same sender, body and DSN data as env, for
 * the addresses in rest. Used when part of a recipient's expansion is done
 * and part is not: the original recipient can then be marked done, and a
 * retry never delivers the done part again (Postfix re-injects forwarded
 * mail the same way). Returns 0 and the new id, or -1.
 */
static int qmgr_reinject_rcpts(struct queue *q, const struct queue_env *env,
                               const struct queue_rcpt *rcpts, size_t n, char *id_r);

static int qmgr_reinject(struct queue *q, const struct queue_env *env,
                         const struct qmgr_set *rest, char *id_r)
{
    struct queue_rcpt *r = xcalloc(rest->n ? rest->n : 1, sizeof(*r));
    for (size_t i = 0; i < rest->n; i++)
        r[i] = (struct queue_rcpt){.address = rest->v[i], .orcpt = (char *)"",
                                   .state = QUEUE_RCPT_PENDING, .status = (char *)""};
    int rc = qmgr_reinject_rcpts(q, env, r, rest->n, id_r);
    free(r);
    return rc;
}

static int qmgr_reinject_rcpts(struct queue *q, const struct queue_env *env,
                               const struct queue_rcpt *rcpts, size_t nr, char *id_r)
{
    struct queue_msg *m;
    if (queue_msg_open(q, &m) < 0)
        return -1;
    snprintf(id_r, QUEUE_ID_SIZE, "%s", queue_msg_id(m));
    struct queue_body *b;
    if (queue_body_open(q, env->id, &b) < 0) {
        queue_msg_abort(m);
        return -1;
    }
    char chunk[65536];
    ssize_t n;
    while ((n = queue_body_read(b, chunk, sizeof(chunk))) > 0) {
        if (queue_msg_write(m, chunk, (size_t)n) < 0) {
            n = -1;
            break;
        }
    }
    queue_body_close(b);
    if (n < 0) {
        queue_msg_abort(m);
        return -1;
    }
    struct queue_env ne = *env;
    ne.rcpts = (struct queue_rcpt *)rcpts;
    ne.nrcpts = nr;
    int result = 0;
    int rc = queue_commit(q, &m, &ne, 1, &result);
    if (rc < 0)
        errno = result;
    return rc;
}

static int qmgr_report(struct qmgr *m, struct queue *q, const struct config *cfg,
                       struct queue_env *env, bool *dirty);

/*
 * Records a recipient's new state in env; qmgr_flush_states writes what
 * changed at the end of the pass, unless the message is then removed: a
 * message finished in one pass never gets a state file (two fsyncs, a file
 * and an unlink saved per message). A crash before the removal delivers it
 * again, which the at-least-once rule of doc/queue.md allows; a crash can
 * never lose it, since nothing is removed before its copies are durable.
 */
static void qmgr_set_state(struct queue_env *env, bool *dirty, size_t i,
                           enum queue_rcpt_state ns, const char *text)
{
    env->rcpts[i].state = ns;
    free(env->rcpts[i].status);
    env->rcpts[i].status = xstrdup(text);
    dirty[i] = true;
}

static int qmgr_flush_states(struct queue *q, const struct queue_env *env, bool *dirty)
{
    int rc = 0;
    for (size_t i = 0; i < env->nrcpts; i++) {
        if (!dirty[i])
            continue;
        if (queue_rcpt_update(q, env->id, i, env->rcpts[i].state,
                              env->rcpts[i].status) < 0)
            rc = -1;
        else
            dirty[i] = false;
    }
    return rc;
}

/*
 * One pass over a message, in phases, so that a worker writes the copies
 * of several messages and makes them durable together (doc/store.md
 * "Batched delivery"): qmgr_job_load reads and resolves it, qmgr_job_lock
 * takes its mailboxes' quota locks, qmgr_job_write writes each mailbox's
 * copy (store_deliver_begin), the worker commits the batch
 * (qmgr_batch_commit: store_deliver_commit), and qmgr_job_finish records
 * the recipients' states, DSNs and what becomes of the message.
 */
#define QMGR_JOB_LIVE 3

struct qmgr_job {
    char id[QUEUE_ID_SIZE];
    struct qmgr_item *it;       /* NULL for qmgr_deliver_one */
    int status;                 /* QMGR_JOB_LIVE, or the pass's result when
                                   loading ended it */
    struct queue_env *env;
    time_t now;
    bool expired;
    size_t n;                   /* env->nrcpts */
    /* Per recipient: its resolution; an address outside our domains is
     * its own (remote) target, for the relay. */
    struct resolve_result *res;
    enum resolve_status *rst;
    struct qmgr_set boxes;      /* the distinct mailboxes */
    /* Per box: 1 delivered, 0 temporary failure, -1 over quota with
     * quota-exceeded permanent (the recipient fails). */
    int *box_ok;
    struct store_pending **pend; /* per box: written, to be committed */
    size_t stripes[QMGR_BOX_LOCKS]; /* quota locks held, ascending */
    size_t nstripes;
};

/* Reads and resolves j->id; j->status says whether the pass goes on. */
static void qmgr_job_load(struct qmgr_job *j, struct queue *q, const struct config *cfg)
{
    const char *id = j->id;
    struct queue_env *env;
    int lr = queue_load(q, id, &env);
    j->status = QMGR_JOB_LIVE;
    if (lr == -2) {
        log_kv(LOG_ERR, "queue.corrupt", "qid", id, NULL);
        queue_set_aside(q, id, "cannot parse queue file");
        j->status = 1;
        return;
    }
    if (lr < 0 && errno == ENOENT) {
        /* Removed meanwhile (by hand, or delivered by another run). */
        log_kv(LOG_WARN, "queue.vanished", "qid", id, NULL);
        j->status = 1;
        return;
    }
    if (lr < 0) {
        j->status = -1;
        return;
    }
    j->env = env;
    j->now = time(NULL);
    /* Signed: a clock that went backwards makes nothing expire early. */
    j->expired = (int64_t)j->now - env->created >
                 (int64_t)cfg->limits[LIM_QUEUE_LIFETIME];
    size_t n = j->n = env->nrcpts;
    j->res = xcalloc(n ? n : 1, sizeof(*j->res));
    j->rst = xcalloc(n ? n : 1, sizeof(*j->rst));
    for (size_t i = 0; i < n; i++) {
        struct queue_rcpt *r = &env->rcpts[i];
        if (r->state != QUEUE_RCPT_PENDING)
            continue;
        const char *at = strrchr(r->address, '@');
        if (at == NULL) {
            j->rst[i] = RESOLVE_UNKNOWN_USER;
            continue;
        }
        j->rst[i] = resolve_address(cfg, r->address, (size_t)(at - r->address),
                                    at + 1, strlen(at + 1), &j->res[i]);
        if (j->rst[i] == RESOLVE_NOT_LOCAL) {
            resolve_result_free(&j->res[i]);
            memset(&j->res[i], 0, sizeof(j->res[i]));
            j->res[i].remote = xcalloc(1, sizeof(*j->res[i].remote));
            j->res[i].remote[0] = xstrdup(r->address);
            j->res[i].nremote = 1;
            j->rst[i] = RESOLVE_OK;
        }
        if (j->rst[i] != RESOLVE_OK)
            continue;
        /* Each distinct mailbox gets one copy, however many recipients
         * lead to it. */
        for (size_t k = 0; k < j->res[i].nmailboxes; k++)
            qmgr_set_add(&j->boxes, j->res[i].mailboxes[k]);
    }
    j->box_ok = xcalloc(j->boxes.n ? j->boxes.n : 1, sizeof(*j->box_ok));
    j->pend = xcalloc(j->boxes.n ? j->boxes.n : 1, sizeof(*j->pend));
}

/*
 * With a quota, the check and the delivery of one mailbox must not
 * interleave with another worker's (both could pass the check and
 * overfill it): the job's mailboxes' striped locks are held from the
 * check until its batch is committed. `block` false: only if every one is
 * free now (a worker that holds other jobs' locks must not wait for
 * another's: it commits its batch first, then waits holding none); a
 * stripe this worker already holds is not free either, so two messages to
 * one mailbox never share a batch's check. Taken in ascending order.
 */
static bool qmgr_job_lock(struct qmgr *m, const struct config *cfg,
                          struct qmgr_job *j, bool block)
{
    if (m == NULL || j->status != QMGR_JOB_LIVE ||
        !(cfg->quota_bytes || cfg->quota_messages) || j->boxes.n == 0)
        return true;
    bool want[QMGR_BOX_LOCKS] = {false};
    for (size_t k = 0; k < j->boxes.n; k++)
        want[hash_fnv1a(j->boxes.v[k]) % QMGR_BOX_LOCKS] = true;
    j->nstripes = 0;
    for (size_t k = 0; k < QMGR_BOX_LOCKS; k++) {
        if (!want[k])
            continue;
        if (block) {
            pthread_mutex_lock(&m->box_locks[k]);
        } else if (pthread_mutex_trylock(&m->box_locks[k]) != 0) {
            while (j->nstripes > 0)
                pthread_mutex_unlock(&m->box_locks[j->stripes[--j->nstripes]]);
            return false;
        }
        j->stripes[j->nstripes++] = k;
    }
    return true;
}

static void qmgr_job_unlock(struct qmgr *m, struct qmgr_job *j)
{
    while (j->nstripes > 0)
        pthread_mutex_unlock(&m->box_locks[j->stripes[--j->nstripes]]);
}

/* Each mailbox's copy written, not yet durable (qmgr_box_begin). */
static void qmgr_job_write(struct qmgr_job *j, struct queue *q, struct store *st,
                           const struct config *cfg, struct store_flush *fl,
                           struct qmgr_set *seen)
{
    if (j->status != QMGR_JOB_LIVE)
        return;
    for (size_t k = 0; k < j->boxes.n; k++) {
        if (qmgr_box_begin(q, st, cfg, fl, j->env, j->boxes.v[k], seen, &j->pend[k]) < 0) {
            j->pend[k] = NULL;
            if (errno == EDQUOT && cfg->quota_permanent)
                j->box_ok[k] = -1;
        }
    }
}

/* Makes the written copies of jobs[0..n) durable and visible together
 * (store_deliver_commit: one flush of the filesystem for the batch) and
 * records each box's outcome. */
static void qmgr_batch_commit(struct store *st, struct store_flush *fl,
                              struct qmgr_job *jobs, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; jobs[i].status == QMGR_JOB_LIVE && k < jobs[i].boxes.n; k++)
            total += jobs[i].pend[k] != NULL;
    if (total == 0)
        return;
    struct store_commit *v = xcalloc(total, sizeof(*v));
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; jobs[i].status == QMGR_JOB_LIVE && k < jobs[i].boxes.n; k++)
            if (jobs[i].pend[k] != NULL)
                v[c++].p = jobs[i].pend[k];
    store_deliver_commit(st, fl, v, total);
    c = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; jobs[i].status == QMGR_JOB_LIVE && k < jobs[i].boxes.n; k++) {
            if (jobs[i].pend[k] == NULL)
                continue;
            jobs[i].pend[k] = NULL;
            const char *box = jobs[i].boxes.v[k];
            if (v[c].err == 0) {
                jobs[i].box_ok[k] = 1;
                log_kv(LOG_INFO, "deliver.ok", "qid", jobs[i].id, "mailbox", box,
                       "uid", v[c].uid, NULL);
            } else {
                log_kv(LOG_WARN, "deliver.tempfail", "qid", jobs[i].id, "mailbox", box,
                       "error", strerror(v[c].err), NULL);
            }
            c++;
        }
    }
    free(v);
}

/*
 * The end of a pass (after its batch's commit). Returns 1 when the message
 * is finished (removed), 0 when recipients are pending (retry later), 2
 * when what is pending is all remote and has been handed to the relay
 * (m->relay), -1 on a queue error. `it` (NULL in unit tests) carries the
 * relay schedule and the delay warning flag. Frees what the job holds.
 */
static int qmgr_job_finish(struct qmgr *m, struct queue *q, const struct config *cfg,
                           struct qmgr_job *j)
{
    if (m != NULL)
        qmgr_job_unlock(m, j);
    if (j->status != QMGR_JOB_LIVE)
        return j->status;
    const char *id = j->id;
    struct qmgr_item *it = j->it;
    struct queue_env *env = j->env;
    time_t now = j->now;
    bool expired = j->expired;
    size_t n = j->n;
    struct resolve_result *res = j->res;
    enum resolve_status *rst = j->rst;
    struct qmgr_set boxes = j->boxes;
    int *box_ok = j->box_ok;
    for (size_t k = 0; k < boxes.n; k++)
        store_deliver_abort(j->pend[k]); /* none: the batch committed them */
    free(j->pend);

    /* What is left of recipients that are partly done (or need the relay)
     * goes into one new message; those recipients are then done here. */
    struct qmgr_set rest = {NULL, 0};
    bool *split = xcalloc(n ? n : 1, sizeof(*split));
    for (size_t i = 0; i < n; i++) {
        if (env->rcpts[i].state != QUEUE_RCPT_PENDING || rst[i] != RESOLVE_OK)
            continue;
        size_t ok = 0, total = res[i].nmailboxes;
        for (size_t k = 0; k < total; k++)
            ok += box_ok[qmgr_find(boxes.v, boxes.n, res[i].mailboxes[k])] == 1;
        bool local_only_rcpt = res[i].nremote == 1 && total == 0 &&
                               strcmp(res[i].remote[0], env->rcpts[i].address) == 0;
        if ((ok == total && res[i].nremote == 0) || local_only_rcpt)
            continue; /* all done, or a plain remote recipient: no split */
        if (ok == 0 && res[i].nremote == 0)
            continue; /* nothing done: retry it whole */
        split[i] = true;
        for (size_t k = 0; k < total; k++)
            if (box_ok[qmgr_find(boxes.v, boxes.n, res[i].mailboxes[k])] == 0)
                qmgr_set_add(&rest, res[i].mailboxes[k]);
        for (size_t k = 0; k < res[i].nremote; k++)
            qmgr_set_add(&rest, res[i].remote[k]);
    }
    char newid[QUEUE_ID_SIZE] = "";
    bool reinjected = false;
    if (rest.n > 0) {
        if (qmgr_reinject(q, env, &rest, newid) == 0) {
            reinjected = true;
            log_kv(LOG_INFO, "queue.reinjected", "qid", id, "new_qid", newid, NULL);
            if (m != NULL)
                qmgr_notify(m, newid);
        } else {
            log_kv(LOG_WARN, "queue.reinject_failed", "qid", id, "error",
                   strerror(errno), NULL);
        }
    }

    int status = 1;
    size_t remote_pending = 0, local_pending = 0;
    bool *remote = xcalloc(n ? n : 1, sizeof(*remote));
    bool *dirty = xcalloc(n ? n : 1, sizeof(*dirty));
    for (size_t i = 0; i < n; i++) {
        struct queue_rcpt *r = &env->rcpts[i];
        if (r->state != QUEUE_RCPT_PENDING)
            continue;
        enum queue_rcpt_state ns = QUEUE_RCPT_PENDING;
        const char *text = "";
        char why[600];
        bool plain_remote = false;
        if (rst[i] != RESOLVE_OK) {
            ns = QUEUE_RCPT_FAILED;
            snprintf(why, sizeof(why), "550 5.1.1 recipient no longer valid (%s)",
                     resolve_status_name(rst[i]));
            text = why;
        } else if (split[i] && reinjected) {
            ns = QUEUE_RCPT_DONE;
            snprintf(why, sizeof(why), "250 2.0.0 delivered in part, rest queued as %s",
                     newid);
            text = why;
        } else if (!split[i]) {
            bool all = true, full = false;
            for (size_t k = 0; k < res[i].nmailboxes; k++) {
                int b = box_ok[qmgr_find(boxes.v, boxes.n, res[i].mailboxes[k])];
                all = all && b == 1;
                full = full || b == -1;
            }
            if (full && res[i].nmailboxes == 1) {
                ns = QUEUE_RCPT_FAILED;
                text = "552 5.2.2 mailbox full";
            }
            if (res[i].nremote > 0) {
                plain_remote = true;   /* the relay's (issue 5) */
                all = false;
            }
            if (all) {
                ns = QUEUE_RCPT_DONE;
                text = "250 2.0.0 delivered";
            }
        }
        if (ns == QUEUE_RCPT_PENDING && expired) {
            ns = QUEUE_RCPT_FAILED;
            if (r->status != NULL && r->status[0] != '\0') {
                snprintf(why, sizeof(why), "451 4.4.7 delivery time expired; last "
                         "error: %.400s", r->status);
                text = why;
            } else {
                text = "451 4.4.7 delivery time expired";
            }
        }
        if (ns == QUEUE_RCPT_PENDING) {
            status = 0;
            if (plain_remote) {
                remote[i] = true;
                remote_pending++;
            } else {
                local_pending++;
            }
            continue;
        }
        qmgr_set_state(env, dirty, i, ns, text);
        if (ns == QUEUE_RCPT_FAILED)
            log_kv(LOG_WARN, "deliver.failed", "qid", id, "rcpt", r->address,
                   "status", text, NULL);
    }

    /* Remote recipients of a message that also waits for a local mailbox
     * go on alone, so neither waits for the other. */
    struct relay *relay = m != NULL ? m->relay : NULL;
    if (status == 0 && relay != NULL && remote_pending > 0 && local_pending > 0) {
        struct queue_rcpt *rr = xcalloc(remote_pending, sizeof(*rr));
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (remote[i])
                rr[k++] = (struct queue_rcpt){
                    .address = env->rcpts[i].address, .orcpt = env->rcpts[i].orcpt,
                    .notify = env->rcpts[i].notify, .state = QUEUE_RCPT_PENDING,
                    .status = (char *)""};
        char rid[QUEUE_ID_SIZE];
        if (qmgr_reinject_rcpts(q, env, rr, remote_pending, rid) == 0) {
            char text[100];
            snprintf(text, sizeof(text), "250 2.0.0 queued for the relay as %s", rid);
            for (size_t i = 0; i < n; i++)
                if (remote[i])
                    qmgr_set_state(env, dirty, i, QUEUE_RCPT_DONE, text);
            remote_pending = 0;
            log_kv(LOG_INFO, "queue.reinjected", "qid", id, "new_qid", rid, NULL);
            qmgr_notify(m, rid);
        }
        free(rr);
    }

    time_t age = now - (time_t)env->created;
    if (status == 0 && it != NULL && !it->warned && cfg->limits[LIM_DELAY_WARNING] > 0 &&
        age >= (time_t)cfg->limits[LIM_DELAY_WARNING]) {
        /* RFC 3464 "delayed" report for the recipients that asked for it
         * (or did not say: RFC 3461 4.1 leaves it to us; Postfix sends). */
        struct bounce_rcpt *br = xcalloc(n ? n : 1, sizeof(*br));
        char (*hosts)[256] = xcalloc(n ? n : 1, sizeof(*hosts));
        size_t nb = 0;
        for (size_t i = 0; i < n; i++) {
            struct queue_rcpt *r = &env->rcpts[i];
            if (r->state != QUEUE_RCPT_PENDING || !bounce_wanted(r->notify, BOUNCE_DELAYED))
                continue;
            relay_status_remote(r->status, hosts[i], sizeof(hosts[i]));
            br[nb++] = (struct bounce_rcpt){
                .address = r->address, .orcpt = r->orcpt, .action = BOUNCE_DELAYED,
                .remote_mta = hosts[i][0] ? hosts[i] : NULL,
                .diagnostic = r->status[0] ? r->status : NULL,
                .last_attempt = (int64_t)now,
                .retry_until = env->created + (int64_t)cfg->limits[LIM_QUEUE_LIFETIME]};
        }
        char did[QUEUE_ID_SIZE] = "";
        if (bounce_send(q, cfg, env, br, nb, did) == 0) {
            it->warned = true;
            if (did[0] != '\0') {
                log_kv(LOG_INFO, "dsn.delayed", "qid", id, "dsn_qid", did, NULL);
                qmgr_notify(m, did);
            }
        }
        free(br);
        free(hosts);
    }

    /* Failed (and successful, where asked) recipients not yet reported. */
    if (qmgr_report(m, q, cfg, env, dirty) < 0 && status == 1)
        status = 0; /* keep the message until its DSN is queued */

    /* A message that stays leaves the accept log for a file of its own
     * before anything else happens to it (doc/queue.md "The accept log").
     * States are written before the relay loads the message (it must see
     * local recipients done), and whenever the message stays. */
    if (status != 1 && queue_keep(q, id) < 0)
        status = -1;
    if (status != 1 && status != -1 && qmgr_flush_states(q, env, dirty) < 0)
        status = -1;
    if (status == 0 && relay != NULL && remote_pending > 0 && local_pending == 0 &&
        (it == NULL || it->relay_due <= now)) {
        status = 2; /* the caller hands it to the relay (qmgr_thread) */
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
    free(boxes.v);
    free(rest.v);
    free(split);
    free(box_ok);
    free(remote);
    free(dirty);
    queue_env_free(env);
    return status;
}

/*
 * DSNs for what happened to recipients since the message was last looked
 * at: failures (NOTIFY FAILURE or not given), and successes where SUCCESS
 * was asked: "delivered" into a mailbox here, "relayed" to a next hop
 * without DSN support (RFC 3461 4.1). Recipients reported are marked
 * durably. Returns 1 if a DSN was queued, 0 if none was needed, -1 if one
 * could not be queued (the recipients stay unreported: tried again).
 */
static int qmgr_report(struct qmgr *m, struct queue *q, const struct config *cfg,
                       struct queue_env *env, bool *dirty)
{
    size_t n = env->nrcpts, nb = 0;
    struct bounce_rcpt *br = xcalloc(n ? n : 1, sizeof(*br));
    size_t *which = xcalloc(n ? n : 1, sizeof(*which));
    char (*hosts)[256] = xcalloc(n ? n : 1, sizeof(*hosts));
    size_t rl = strlen(QMGR_REPORTED);
    for (size_t i = 0; i < n; i++) {
        struct queue_rcpt *r = &env->rcpts[i];
        const char *stt = r->status != NULL ? r->status : "";
        size_t sl = strlen(stt);
        if (sl >= rl && strcmp(stt + sl - rl, QMGR_REPORTED) == 0)
            continue;
        enum bounce_action act;
        if (r->state == QUEUE_RCPT_FAILED)
            act = BOUNCE_FAILED;
        else if (r->state == QUEUE_RCPT_DONE && strncmp(stt, "250 2.0.0 delivered", 19) == 0 &&
                 strncmp(stt, "250 2.0.0 delivered in part", 27) != 0)
            act = BOUNCE_DELIVERED;
        else if (r->state == QUEUE_RCPT_DONE && strncmp(stt, "250 2.0.0 relayed", 17) == 0)
            act = BOUNCE_RELAYED;
        else
            continue;
        if (!bounce_wanted(r->notify, act))
            continue;
        relay_status_remote(stt, hosts[i], sizeof(hosts[i]));
        which[nb] = i;
        br[nb++] = (struct bounce_rcpt){
            .address = r->address, .orcpt = r->orcpt, .action = act,
            .remote_mta = hosts[i][0] ? hosts[i] : NULL,
            .diagnostic = stt[0] ? stt : NULL,
            .last_attempt = (int64_t)time(NULL)};
    }
    int rc = 0;
    if (nb > 0) {
        char did[QUEUE_ID_SIZE] = "";
        if (bounce_send(q, cfg, env, br, nb, did) < 0) {
            log_kv(LOG_WARN, "dsn.failed", "qid", env->id, "error", strerror(errno), NULL);
            rc = -1;
        } else {
            if (did[0] != '\0')
                log_kv(LOG_INFO, "dsn.queued", "qid", env->id, "dsn_qid", did,
                       "action", bounce_action_name(br[0].action), NULL);
            rc = did[0] != '\0' ? 1 : 0;
            for (size_t k = 0; k < nb; k++) {
                struct queue_rcpt *r = &env->rcpts[which[k]];
                char text[QMGR_STATUS_MAX];
                snprintf(text, sizeof(text), "%.3000s%s", r->status, QMGR_REPORTED);
                qmgr_set_state(env, dirty, which[k], r->state, text);
            }
            if (did[0] != '\0' && m != NULL)
                qmgr_notify(m, did);
        }
    }
    free(br);
    free(which);
    free(hosts);
    return rc;
}

/* One message, alone, outside the threads: the phases of a worker's
 * pass for a batch of one, with no quota locks (no other worker) and no
 * flusher (an fsync of its own). */
int qmgr_deliver_one(struct queue *q, struct store *st, const struct config *cfg,
                     const char *id)
{
    struct qmgr_job j = {.it = NULL};
    snprintf(j.id, sizeof(j.id), "%s", id);
    qmgr_job_load(&j, q, cfg);
    qmgr_job_write(&j, q, st, cfg, NULL, NULL);
    qmgr_batch_commit(st, NULL, &j, 1);
    return qmgr_job_finish(NULL, q, cfg, &j);
}

static int qmgr_item_cmp(const void *a, const void *b)
{
    return strcmp(((const struct qmgr_item *)a)->id, ((const struct qmgr_item *)b)->id);
}

static uint64_t qmgr_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void qmgr_push_ready(struct qmgr *m, struct qmgr_item *it)
{
    it->next = NULL;
    if (m->ready_tail)
        m->ready_tail->next = it;
    else
        m->ready_head = it;
    m->ready_tail = it;
    m->nready++;
    it->ready_ms = qmgr_now_ms();
}

/* Moves due retries to the ready list; returns the earliest future due time
 * (0 if none). Called with the lock held. */
static time_t qmgr_promote(struct qmgr *m, time_t now)
{
    time_t due;
    while (timeheap_peek(&m->waiting, &due) != NULL && due <= now)
        qmgr_push_ready(m, timeheap_pop(&m->waiting));
    return timeheap_peek(&m->waiting, &due) != NULL ? due : 0;
}

static void qmgr_do_flush(struct qmgr *m);

/* Exponential backoff: min doubled per earlier try, at most max. */
static time_t qmgr_backoff(uint64_t min, uint64_t max, unsigned tries)
{
    uint64_t delay = min;
    for (unsigned k = 0; k < tries && delay < max; k++)
        delay *= 2;
    return (time_t)(delay > max ? max : delay);
}

struct qmgr_worker {
    struct qmgr *m;
    size_t index;
};

/*
 * Lowers the calling worker's CPU priority (Linux: setpriority on a thread
 * id changes that thread only). A client waits on the loop thread and the
 * commit thread for every reply; a delivery only has to keep up, so on a
 * busy machine the scheduler should run those first (doc/performance.md
 * "delivery at a lower priority", with its price under a flood).
 */
static void qmgr_thread_nice(int nice)
{
    if (nice <= 0)
        return;
    /* Relative to where the thread starts (the server's own nice, which an
     * admin may have set): on Linux, "who" 0 is the calling thread. -1 is
     * a valid nice value, so errno tells a failure. */
    errno = 0;
    int base = getpriority(PRIO_PROCESS, 0);
    if (base == -1 && errno != 0) {
        log_kv(LOG_WARN, "qmgr.nice_failed", "error", strerror(errno), NULL);
        return;
    }
    int want = base + nice > 19 ? 19 : base + nice;
    if (want > base && setpriority(PRIO_PROCESS, 0, want) < 0)
        log_kv(LOG_WARN, "qmgr.nice_failed", "error", strerror(errno), NULL);
}

/* What becomes of an item after its pass (result r of qmgr_job_finish).
 * Called with the lock held. */
static void qmgr_item_done(struct qmgr *m, struct qmgr_item *it, int r,
                           const struct config *cfg)
{
    if (r == 1) {
        free(it);
    } else if (r == 2) {
        /* The relay's until it calls qmgr_relay_done: in the tree
         * before the relay has it, so that a report, however quick,
         * finds it. */
        void **node = tsearch(it, &m->in_relay, qmgr_item_cmp);
        if (node == NULL)
            abort(); /* out of memory, as xalloc */
        if (*node == it) {
            char id[QUEUE_ID_SIZE];
            snprintf(id, sizeof(id), "%s", it->id);
            pthread_mutex_unlock(&m->mu);
            relay_submit(m->relay, id);
            pthread_mutex_lock(&m->mu);
        } else {
            free(it); /* the relay has it already: one is enough */
        }
    } else {
        time_t now = time(NULL);
        it->due = now + qmgr_backoff(cfg->limits[LIM_RETRY_MIN],
                                     cfg->limits[LIM_RETRY_MAX], it->tries);
        it->tries++;
        /* Waiting for the relay's next attempt: no later than that. */
        if (it->relay_tries > 0 && it->relay_due > now && it->relay_due < it->due)
            it->due = it->relay_due;
        timeheap_push(&m->waiting, it->due, it);
        log_kv(LOG_INFO, "queue.retry_scheduled", "qid", it->id, NULL);
    }
}

/*
 * A worker's pass over jobs[0..n): each loaded, its copies written, and
 * the batch committed together (one flush of the filesystem), then each
 * finished. A job whose quota locks are not free at once ends the batch
 * before it: the batch is committed and finished (its locks given back),
 * then the job waits for its locks and starts the next batch. r[i] is
 * job i's result (qmgr_job_finish).
 */
static void qmgr_batch(struct qmgr *m, const struct config *cfg, struct store_flush *fl,
                       struct qmgr_job *jobs, size_t n, int *r)
{
    for (size_t i = 0; i < n; i++)
        qmgr_job_load(&jobs[i], m->queue, cfg);
    /* Mailboxes made sure of in this batch: one access() each, not one a
     * message. Their names are the live jobs', so it empties with them. */
    struct qmgr_set seen = {NULL, 0};
    size_t first = 0;
    for (size_t i = 0; i < n; i++) {
        if (!qmgr_job_lock(m, cfg, &jobs[i], false)) {
            qmgr_batch_commit(m->store, fl, jobs + first, i - first);
            for (size_t k = first; k < i; k++)
                r[k] = qmgr_job_finish(m, m->queue, cfg, &jobs[k]);
            first = i;
            seen.n = 0;
            qmgr_job_lock(m, cfg, &jobs[i], true);
        }
        qmgr_job_write(&jobs[i], m->queue, m->store, cfg, fl, &seen);
    }
    qmgr_batch_commit(m->store, fl, jobs + first, n - first);
    for (size_t k = first; k < n; k++)
        r[k] = qmgr_job_finish(m, m->queue, cfg, &jobs[k]);
    free(seen.v);
}

/*
 * Wakes a worker for work just made ready, when it needs one: none is
 * awake, or more is waiting than the awake ones take in a pass. A worker
 * that is awake takes everything ready (up to a batch) before it sleeps,
 * so a message is never left without one; fewer workers taking more each
 * is what lets a batch share its flushes (with a batch of 1 every ready
 * message wakes one, as before batches). Called with the lock held.
 */
static void qmgr_wake(struct qmgr *m)
{
    /* A signal wakes at least one waiting worker, which takes one back
     * from `signaled`; none is sent with nobody left to wake, so the
     * count never waits for a taker that is not there. */
    if (m->idle <= m->signaled)
        return;
    if (m->gathering) {
        /* Half a batch is ready: the gather is over, whoever else is
         * busy (the gatherer, or another idle worker, takes it). */
        if (m->nready == m->gather_n) {
            m->signaled++;
            pthread_cond_signal(&m->cv);
        }
        return;
    }
    size_t busy = m->nthreads - m->idle + m->signaled;
    if (busy == 0 || m->batch == 1 || m->nready > busy * m->batch) {
        m->signaled++;
        pthread_cond_signal(&m->cv);
    }
}

/* The condition's clock (CLOCK_MONOTONIC: a step of the wall clock must
 * not stretch a wait) ms from now. */
static struct timespec qmgr_deadline(uint64_t ms)
{
    struct timespec at;
    clock_gettime(CLOCK_MONOTONIC, &at);
    at.tv_sec += (time_t)(ms / 1000u);
    at.tv_nsec += (long)(ms % 1000u) * 1000000L;
    if (at.tv_nsec >= 1000000000L) {
        at.tv_sec++;
        at.tv_nsec -= 1000000000L;
    }
    return at;
}

/* Sleeps as an idle worker (the lock held) until signalled or, when at is
 * not NULL, until then; the pthread_cond_(timed)wait result. The one place
 * that keeps `idle` and `signaled` for a waiter (qmgr_wake). */
static int qmgr_sleep(struct qmgr *m, const struct timespec *at)
{
    m->idle++;
    int rc = at == NULL ? pthread_cond_wait(&m->cv, &m->mu)
                        : pthread_cond_timedwait(&m->cv, &m->mu, at);
    m->idle--;
    if (m->signaled > 0)
        m->signaled--;
    return rc;
}

/*
 * A worker waits for work (the lock held): until signalled, or until
 * `next` (a retry falls due, 0: none). While other workers are awake, one
 * idle worker is the standby and also wakes QMGR_STALL_MS after the oldest
 * ready message became ready (`waited` ms ago), so a message never waits
 * long for a worker stuck in a slow pass; *timer_r tells it that its
 * timer (or a handed watch), not a signal, woke it, *standby_r that it
 * was the standby.
 */
static void qmgr_wait(struct qmgr *m, time_t next, uint64_t waited, bool *timer_r,
                      bool *standby_r)
{
    bool standby = !m->standby && m->idle + 1 < m->nthreads;
    /* next is wall-clock seconds (a retry's due time): as a delay. */
    time_t now = time(NULL);
    uint64_t next_ms = next == 0 ? UINT64_MAX
                       : next > now ? (uint64_t)(next - now) * 1000u
                                    : 0;
    if (standby) {
        m->standby = true;
        uint64_t ms = waited < QMGR_STALL_MS ? QMGR_STALL_MS - waited : 1;
        if (ms < next_ms)
            next_ms = ms;
    }
    struct timespec at;
    if (next_ms != UINT64_MAX)
        at = qmgr_deadline(next_ms);
    int rc = qmgr_sleep(m, next_ms == UINT64_MAX ? NULL : &at);
    *timer_r = standby && rc == ETIMEDOUT;
    *standby_r = standby;
    if (standby) {
        m->standby = false;
    } else if (m->standby_wanted && rc == 0) {
        /* Handed the watch (qmgr_standby_handoff): as if by a timer. */
        m->standby_wanted = false;
        *timer_r = true;
    }
}

/* The standby takes work: another idle worker takes over its watch (woken
 * by a signal it treats as its timer), or none would keep it while this
 * one is busy. Called with the lock held. */
static void qmgr_standby_handoff(struct qmgr *m)
{
    if (m->idle > m->signaled) {
        m->standby_wanted = true;
        m->signaled++;
        pthread_cond_signal(&m->cv);
    }
}

/* A worker found fewer than gather_n messages ready, the oldest `waited`
 * ms ago: it waits, as an idle worker, until QMGR_GATHER_MS after that or
 * until gather_n are ready (qmgr_wake then signals), and looks again.
 * Called with the lock held, and not while another worker gathers. */
static void qmgr_gather(struct qmgr *m, uint64_t waited)
{
    struct timespec at = qmgr_deadline(QMGR_GATHER_MS - waited);
    m->gathering = true;
    int rc = qmgr_sleep(m, &at);
    m->gathering = false;
    /* The signal may have been a standby hand-off meant for an idle
     * worker (qmgr_standby_handoff): pass it on, or the flag would make
     * some later, unrelated wake-up look like a standby's timer. */
    if (rc == 0 && m->standby_wanted) {
        m->standby_wanted = false;
        qmgr_standby_handoff(m);
    }
}

static void *qmgr_thread(void *arg)
{
    struct qmgr_worker *w = arg;
    struct qmgr *m = w->m;
    char (*current)[QUEUE_ID_SIZE] = m->current + w->index * m->batch;
    free(w);
    /* "deliver" in ps -L and top -H, so an admin can tell them apart. */
    pthread_setname_np(pthread_self(), "deliver");
    qmgr_thread_nice(m->nice);
    struct store_flush *fl = store_flush_new();
    struct qmgr_job *jobs = xcalloc(m->batch, sizeof(*jobs));
    int *results = xcalloc(m->batch, sizeof(*results));
    bool standby_timer = false; /* woken as the standby, by its timer */
    bool was_standby = false;   /* the last wait was the standby's */
    pthread_mutex_lock(&m->mu);
    while (!m->stopping) {
        if (m->flush) {
            m->flush = false;
            qmgr_do_flush(m);
            continue;
        }
        time_t now = time(NULL);
        time_t next = qmgr_promote(m, now);
        /* The standby, woken by its timer, takes only what has waited
         * QMGR_STALL_MS for the awake workers; else it waits again. */
        uint64_t waited = m->ready_head != NULL
                              ? qmgr_now_ms() - m->ready_head->ready_ms : 0;
        if (m->ready_head == NULL || (standby_timer && waited < QMGR_STALL_MS)) {
            qmgr_wait(m, next, waited, &standby_timer, &was_standby);
            continue;
        }
        /* A trickle: wait a little for more to share the flushes. Not
         * the standby, whose messages have waited for the others already;
         * while one worker gathers, the others leave them to it. */
        if (!standby_timer && !was_standby && m->nready < m->gather_n &&
            waited < QMGR_GATHER_MS) {
            if (m->gathering) /* another worker gathers these */
                qmgr_wait(m, next, waited, &standby_timer, &was_standby);
            else
                qmgr_gather(m, waited);
            continue;
        }
        if (was_standby || standby_timer)
            qmgr_standby_handoff(m);
        standby_timer = was_standby = false;
        size_t n = 0;
        while (n < m->batch && m->ready_head != NULL) {
            struct qmgr_item *it = m->ready_head;
            m->ready_head = it->next;
            if (m->ready_head == NULL)
                m->ready_tail = NULL;
            m->nready--;
            jobs[n] = (struct qmgr_job){.it = it};
            snprintf(jobs[n].id, sizeof(jobs[n].id), "%s", it->id);
            snprintf(current[n], QUEUE_ID_SIZE, "%s", it->id);
            n++;
        }
        /* More than this pass takes: another worker may start on it. */
        if (m->ready_head != NULL)
            qmgr_wake(m);
        struct cfgref *cfg = cfgref_get(m->cfg);
        pthread_mutex_unlock(&m->mu);

        qmgr_batch(m, cfg->cfg, fl, jobs, n, results);

        pthread_mutex_lock(&m->mu);
        for (size_t i = 0; i < n; i++) {
            current[i][0] = '\0';
            qmgr_item_done(m, jobs[i].it, results[i], cfg->cfg);
        }
        cfgref_put(cfg);
    }
    pthread_mutex_unlock(&m->mu);
    free(jobs);
    free(results);
    store_flush_free(fl);
    return NULL;
}

static void qmgr_list_cb(const char *id, void *arg)
{
    qmgr_notify(arg, id);
}

/* The relay finished an attempt (relay thread). Failures it recorded are
 * reported at once; the next attempt waits for the relay backoff. */
static void qmgr_relay_done(const char *id, bool pending, void *arg)
{
    struct qmgr *m = arg;
    pthread_mutex_lock(&m->mu);
    struct qmgr_item key, *it = NULL;
    snprintf(key.id, sizeof(key.id), "%s", id);
    void **node = tfind(&key, &m->in_relay, qmgr_item_cmp);
    if (node != NULL) {
        it = *node;
        tdelete(it, &m->in_relay, qmgr_item_cmp);
    }
    if (it == NULL) {
        it = xcalloc(1, sizeof(*it));
        snprintf(it->id, sizeof(it->id), "%s", id);
    }
    const struct config *cfg = m->cfg->cfg;
    time_t delay = qmgr_backoff(cfg->limits[LIM_RELAY_RETRY_MIN],
                                cfg->limits[LIM_RELAY_RETRY_MAX], it->relay_tries);
    it->relay_tries++;
    it->relay_due = pending ? time(NULL) + delay : 0;
    it->tries = 0;
    qmgr_push_ready(m, it);
    qmgr_wake(m);
    pthread_mutex_unlock(&m->mu);
}

struct qmgr_rescan {
    char **ids;
    size_t n;
};

static void qmgr_rescan_cb(const char *id, void *arg)
{
    struct qmgr_rescan *rs = arg;
    rs->ids = xreallocarray(rs->ids, rs->n + 1, sizeof(*rs->ids));
    rs->ids[rs->n++] = xstrdup(id);
}

static int qmgr_cmp_id(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Marks the scanned id equal to id (rs->ids sorted) as one we have. */
static void qmgr_mark_known(struct qmgr_rescan *rs, bool *known, const char *id)
{
    if (rs->n == 0)
        return;
    char **hit = bsearch(&id, rs->ids, rs->n, sizeof(*rs->ids), qmgr_cmp_id);
    if (hit != NULL)
        known[hit - rs->ids] = true;
}

struct qmgr_known {
    struct qmgr_rescan *rs;
    bool *known;
};

static void qmgr_mark_known_node(const void *node, VISIT v, void *arg)
{
    struct qmgr_known *kn = arg;
    if (v == postorder || v == leaf)
        qmgr_mark_known(kn->rs, kn->known, (*(struct qmgr_item *const *)node)->id);
}

/* On the delivery thread (called with the lock held; drops it while the
 * queue directory is read). The ids read are sorted first, so telling the
 * new ones from those already in hand costs a binary search per message
 * in hand, under the lock (which the event loop takes for every message
 * it accepts), not a walk of every list per message read: a flush (ETRN,
 * which any client may send) of a queue of 100,000 must not stop the
 * server for minutes. */
static void qmgr_do_flush(struct qmgr *m)
{
    pthread_mutex_unlock(&m->mu);
    struct qmgr_rescan rs = {NULL, 0};
    queue_list(m->queue, qmgr_rescan_cb, &rs);
    if (rs.n > 1)
        qsort(rs.ids, rs.n, sizeof(*rs.ids), qmgr_cmp_id);
    /* Listed twice (a message moving from the log to its file while the
     * queue was read): one item. */
    size_t u = 0;
    for (size_t i = 0; i < rs.n; i++) {
        if (u > 0 && strcmp(rs.ids[i], rs.ids[u - 1]) == 0)
            free(rs.ids[i]);
        else
            rs.ids[u++] = rs.ids[i];
    }
    rs.n = u;
    bool *known = xcalloc(rs.n ? rs.n : 1, sizeof(*known));
    pthread_mutex_lock(&m->mu);
    /* Deferred messages are retried now, the relay's too. */
    for (size_t k = 0; k < timeheap_count(&m->waiting); k++) {
        struct qmgr_item *it = timeheap_at(&m->waiting, k);
        it->relay_due = 0;
        it->due = 0;
        qmgr_push_ready(m, it);
    }
    timeheap_clear(&m->waiting);
    /* What is in hand now: being delivered, ready, or the relay's. */
    for (size_t k = 0; k < m->nthreads * m->batch; k++)
        if (m->current[k][0] != '\0')
            qmgr_mark_known(&rs, known, m->current[k]);
    for (struct qmgr_item *it = m->ready_head; it != NULL; it = it->next)
        qmgr_mark_known(&rs, known, it->id);
    struct qmgr_known kn = {&rs, known};
    twalk_r(m->in_relay, qmgr_mark_known_node, &kn);
    size_t added = 0;
    for (size_t i = 0; i < rs.n; i++) {
        if (!known[i]) {
            struct qmgr_item *it = xcalloc(1, sizeof(*it));
            snprintf(it->id, sizeof(it->id), "%s", rs.ids[i]);
            qmgr_push_ready(m, it);
            added++;
        }
        free(rs.ids[i]);
    }
    free(rs.ids);
    free(known);
    char count[32];
    snprintf(count, sizeof(count), "%zu", added);
    log_kv(LOG_INFO, "queue.flush", "new", count, NULL);
}

void qmgr_flush(struct qmgr *m)
{
    /* Cheap for the caller (the event loop: ETRN, SIGUSR1): the delivery
     * thread reads the queue directory. */
    pthread_mutex_lock(&m->mu);
    m->flush = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

struct qmgr *qmgr_start(struct queue *q, struct store *st, struct cfgref *cfg,
                        bool with_relay, struct buf *err_r)
{
    struct qmgr *m = xcalloc(1, sizeof(*m));
    m->queue = q;
    m->store = st;
    m->cfg = cfgref_get(cfg);
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    for (size_t k = 0; k < QMGR_BOX_LOCKS; k++)
        pthread_mutex_init(&m->box_locks[k], NULL);
    if (with_relay) {
        m->relay = relay_start(q, cfg, qmgr_relay_done, m, err_r);
        if (m->relay == NULL) {
            cfgref_put(m->cfg);
            pthread_mutex_destroy(&m->mu);
            pthread_cond_destroy(&m->cv);
            free(m);
            return NULL;
        }
    }
    queue_list(q, qmgr_list_cb, m);
    /* Several workers, so that one message's fsyncs overlap another's;
     * a message is only ever in one worker's hands (it is in exactly one
     * list or `current`). */
    m->nthreads = cfg->cfg->limits[LIM_DELIVERY_THREADS];
    m->nice = (int)cfg->cfg->limits[LIM_DELIVERY_NICE];
    m->batch = cfg->cfg->limits[LIM_DELIVERY_BATCH];
    m->gather_n = m->batch / 2; /* 0 with a batch of 1: never gathers */
    m->current = xcalloc(m->nthreads * m->batch, sizeof(*m->current));
    m->threads = xcalloc(m->nthreads, sizeof(*m->threads));
    for (size_t k = 0; k < m->nthreads; k++) {
        struct qmgr_worker *w = xcalloc(1, sizeof(*w));
        w->m = m;
        w->index = k;
        if (pthread_create(&m->threads[k], NULL, qmgr_thread, w) != 0) {
            log_kv(LOG_CRIT, "qmgr.thread", "error", "pthread_create failed", NULL);
            abort();
        }
    }
    return m;
}

void qmgr_notify(struct qmgr *m, const char *id)
{
    struct qmgr_item *it = xcalloc(1, sizeof(*it));
    snprintf(it->id, sizeof(it->id), "%s", id);
    pthread_mutex_lock(&m->mu);
    qmgr_push_ready(m, it);
    qmgr_wake(m);
    pthread_mutex_unlock(&m->mu);
}

void qmgr_set_config(struct qmgr *m, struct cfgref *cfg)
{
    pthread_mutex_lock(&m->mu);
    struct cfgref *old = m->cfg;
    m->cfg = cfgref_get(cfg);
    pthread_mutex_unlock(&m->mu);
    cfgref_put(old);
    if (m->relay != NULL)
        relay_set_config(m->relay, cfg);
}

void qmgr_stop(struct qmgr *m)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    for (size_t k = 0; k < m->nthreads; k++)
        pthread_join(m->threads[k], NULL);
    free(m->threads);
    free(m->current);
    /* No more submissions; what the relay has in flight is dropped (its
     * recipients stay pending in the queue). */
    relay_stop(m->relay);
    while (m->ready_head != NULL) {
        struct qmgr_item *it = m->ready_head;
        m->ready_head = it->next;
        m->nready--;
        free(it);
    }
    tdestroy(m->in_relay, free);
    for (size_t k = 0; k < timeheap_count(&m->waiting); k++)
        free(timeheap_at(&m->waiting, k));
    timeheap_free(&m->waiting);
    cfgref_put(m->cfg);
    pthread_mutex_destroy(&m->mu);
    for (size_t k = 0; k < QMGR_BOX_LOCKS; k++)
        pthread_mutex_destroy(&m->box_locks[k]);
    pthread_cond_destroy(&m->cv);
    free(m);
}
