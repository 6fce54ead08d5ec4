/*
 * smtpd.c: the server side of src/smtpd: accepting clients (with the
 * connection limits), the per-client connection table, session lifetime,
 * the commit worker (group commit through io/batch), the workers for
 * password and RCPT quota checks, and shutdown.
 *
 * Session lifetime: a session is entered from the loop through
 * smtpd_on_conn() (I/O), smtpd_commit_done() (disk), the answers of the
 * auth and quota workers, and the shutdown paths. Any of them may learn
 * that the connection is gone; the session is freed only when no entry is
 * active (busy == 0) and no worker job (commit, password check, quota
 * check) is in flight, so no code ever touches a freed session.
 */
#include "smtpd/smtpd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "io/batch.h"
#include "io/conn.h"
#include "io/tls.h"
#include "lib/authfail.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/queue.h"
#include "smtpd/session.h"
#include "lib/hash.h"

#define CLIENT_BUCKETS 4096
/* RCPT quota answers remembered (direct-mapped by mailbox). */
#define QUOTA_CACHE_SLOTS 256
/* Input held per session: room for pipelined commands and a DATA chunk. */
#define SESSION_IN_MAX (64u * 1024)

struct client_slot {
    struct client_slot *next;
    unsigned count;
    char addr[64];
};

struct quota_cache_slot {
    char mailbox[SESSION_ADDR_MAX];
    uint64_t bytes, msgs;
    struct timespec at;   /* CLOCK_MONOTONIC; tv_sec 0: empty */
};

struct smtpd {
    struct event_base *base;
    struct tls_server *tls;
    struct store *store;
    struct batch *auth_worker;
    struct batch *quota_worker;  /* RCPT quota checks (index reads) */
    struct quota_cache_slot *qcache;
    struct authfail *fails;     /* shared with the other protocols */
    struct queue *queue;
    struct cfgref *cfg;
    smtpd_committed_fn committed;
    void *committed_arg;
    void (*flush)(const char *node, void *arg);   /* ETRN */
    void *flush_arg;
    struct batch *committer;
    struct session *sessions;
    size_t nsessions;
    struct client_slot *clients[CLIENT_BUCKETS];
    uint32_t sid_prefix;
    uint64_t sid_counter;
    bool shutting_down;
    void (*all_closed)(void *arg);
    void *all_closed_arg;
    struct event *ev_all_closed;
};

static size_t client_hash(const char *addr)
{
    /* FNV-1a; the table only balances counts, it is not a security boundary
     * (a peer controls only its own address). */
    return hash_fnv1a(addr) % CLIENT_BUCKETS;
}

static struct client_slot *client_get(struct smtpd *srv, const char *addr)
{
    size_t b = client_hash(addr);
    for (struct client_slot *c = srv->clients[b]; c; c = c->next)
        if (strcmp(c->addr, addr) == 0)
            return c;
    struct client_slot *c = xcalloc(1, sizeof(*c));
    snprintf(c->addr, sizeof(c->addr), "%s", addr);
    c->next = srv->clients[b];
    srv->clients[b] = c;
    return c;
}

static void client_put(struct smtpd *srv, struct client_slot *slot)
{
    if (slot == NULL || --slot->count > 0)
        return;
    size_t b = client_hash(slot->addr);
    for (struct client_slot **pp = &srv->clients[b]; *pp; pp = &(*pp)->next) {
        if (*pp == slot) {
            *pp = slot->next;
            free(slot);
            return;
        }
    }
}

struct queue *smtpd_queue(struct smtpd *srv) { return srv->queue; }
struct tls_server *smtpd_tls(struct smtpd *srv) { return srv->tls; }
struct store *smtpd_store(struct smtpd *srv) { return srv->store; }
void smtpd_set_store(struct smtpd *srv, struct store *st) { srv->store = st; }

void smtpd_set_flush(struct smtpd *srv, void (*flush)(const char *node, void *arg),
                     void *arg)
{
    srv->flush = flush;
    srv->flush_arg = arg;
}

bool smtpd_request_flush(struct smtpd *srv, const char *node)
{
    if (srv->flush == NULL)
        return false;
    srv->flush(node, srv->flush_arg);
    return true;
}
struct event_base *smtpd_base(struct smtpd *srv) { return srv->base; }

void smtpd_set_tls(struct smtpd *srv, struct tls_server *ts)
{
    struct tls_server *old = srv->tls;
    srv->tls = ts ? tls_server_ref(ts) : NULL;
    tls_server_unref(old);
}

/* ---- failed logins (lib/authfail.h, shared across protocols) ---- */

bool smtpd_auth_locked(struct smtpd *srv, const struct session *s)
{
    return authfail_locked(srv->fails, s->peer, time(NULL),
                           session_limit(s, LIM_AUTH_LOCKOUT));
}

void smtpd_auth_failed(struct smtpd *srv, const struct session *s)
{
    authfail_failed(srv->fails, s->peer, time(NULL),
                    session_limit(s, LIM_AUTH_FAILURES),
                    session_limit(s, LIM_AUTH_LOCKOUT));
}

void smtpd_auth_succeeded(struct smtpd *srv, const struct session *s)
{
    authfail_succeeded(srv->fails, s->peer, time(NULL),
                       session_limit(s, LIM_AUTH_LOCKOUT));
}

void smtpd_notify_committed(struct smtpd *srv, const char *id)
{
    if (srv->committed)
        srv->committed(id, srv->committed_arg);
}

static void smtpd_on_all_closed(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct smtpd *srv = arg;
    if (srv->all_closed)
        srv->all_closed(srv->all_closed_arg);
}

static void session_free(struct session *s)
{
    struct smtpd *srv = s->srv;
    log_kv(LOG_INFO, "smtp.disconnect", "sid", s->sid, "client", s->peer, NULL);
    data_abort(s);
    auth_session_free(s);
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    srv->nsessions--;
    client_put(srv, s->client);
    if (s->conn)
        conn_free(s->conn);
    if (s->shutdown_timer)
        event_free(s->shutdown_timer);
    cfgref_put(s->cfgref);
    free(s->rcpts);
    free(s->env_rcpts);
    free(s);
    if (srv->shutting_down && srv->nsessions == 0)
        event_active(srv->ev_all_closed, 0, 0);
}

/* Every entry into session code goes through enter/leave. A session
 * waiting for a worker thread (commit, password check) is freed only when
 * the worker's answer has come back. */
static void session_enter(struct session *s) { s->busy++; }

static void session_leave(struct session *s)
{
    if (--s->busy == 0 && s->finished && s->state != SS_COMMIT &&
        !s->auth_pending && !s->quota_pending)
        session_free(s);
}

void smtpd_session_enter(struct session *s) { session_enter(s); }
void smtpd_session_leave(struct session *s) { session_leave(s); }

static void smtpd_on_conn(struct conn *c, enum conn_event ev, void *arg)
{
    (void)c;
    struct session *s = arg;
    session_enter(s);
    switch (ev) {
    case CONN_EV_INPUT:
        if (s->state != SS_CLOSED && s->state != SS_COMMIT &&
            s->state != SS_RCPT_WAIT)
            session_process(s);
        break;
    case CONN_EV_TLS_READY:
        cmd_tls_ready(s);
        break;
    case CONN_EV_DRAINED:
        break; /* SMTP replies are small: never asked for */
    case CONN_EV_TIMEOUT:
        if (s->state == SS_TLS) {
            /* Nothing can be said in the middle of a handshake. */
            log_kv(LOG_INFO, "smtp.tls_timeout", "sid", s->sid, "client", s->peer, NULL);
            s->state = SS_CLOSED;
            conn_abort(s->conn);
            break;
        }
        if (s->state == SS_COMMIT || s->state == SS_AUTH_WAIT ||
            s->state == SS_RCPT_WAIT) {
            /* Our own disk is slow, not the client: wait for the commit. */
            conn_set_timeout(s->conn, (unsigned)session_limit(s, LIM_TIMEOUT_COMMAND));
            break;
        }
        log_kv(LOG_INFO, "smtp.timeout", "sid", s->sid, "client", s->peer, NULL);
        session_close(s, 421, "4.4.2", "Timeout, closing connection");
        break;
    case CONN_EV_CLOSED:
        s->conn_gone = true;
        s->finished = true;
        break;
    }
    session_leave(s);
}

static void smtpd_accept_impl(struct smtpd *srv, int fd, const char *peer,
                              enum listener_role role, const char *local_name)
{
    struct session *s = xcalloc(1, sizeof(*s));
    if (local_name != NULL) {
        s->local = true;
        s->authenticated = true;
        snprintf(s->auth_user, sizeof(s->auth_user), "%s", local_name);
    }
    s->srv = srv;
    s->cfgref = cfgref_get(srv->cfg);
    s->cfg = s->cfgref->cfg;
    s->role = role;
    snprintf(s->peer, sizeof(s->peer), "%s", peer);
    snprintf(s->sid, sizeof(s->sid), "%08x%08llx", srv->sid_prefix,
             (unsigned long long)++srv->sid_counter);
    smtp_line_init(&s->lr, session_limit(s, LIM_SMTP_COMMAND_LINE));
    s->conn = conn_new(srv->base, fd, SESSION_IN_MAX,
                       session_limit(s, LIM_OUTPUT_HIGH_WATER), smtpd_on_conn, s);
    s->next = srv->sessions;
    if (srv->sessions)
        srv->sessions->prev = s;
    srv->sessions = s;
    srv->nsessions++;
    s->client = client_get(srv, peer);
    s->client->count++;

    session_enter(s);
    log_kv(LOG_INFO, "smtp.connect", "sid", s->sid, "client", s->peer, "role",
           listener_role_name(role), NULL);
    if (srv->shutting_down) {
        session_close(s, 421, "4.3.2", "Service shutting down");
    } else if (srv->nsessions > session_limit(s, LIM_CONNECTIONS) ||
               s->client->count > session_limit(s, LIM_CONNECTIONS_PER_CLIENT)) {
        log_kv(LOG_WARN, "smtp.overload", "sid", s->sid, "client", s->peer, NULL);
        session_close(s, 421, "4.7.0", "Too many connections, try again later");
    } else if (role == ROLE_SUBMISSIONS) {
        if (srv->tls == NULL) {
            s->state = SS_CLOSED;
            conn_abort(s->conn);
        } else {
            /* RFC 8314: TLS first, the greeting comes over it. */
            s->state = SS_TLS;
            conn_set_timeout(s->conn, (unsigned)session_limit(s, LIM_TIMEOUT_TLS));
            conn_start_tls(s->conn, srv->tls);
        }
    } else {
        smtpd_greet(s);
    }
    session_leave(s);
}

void smtpd_greet(struct session *s)
{
    s->greeted = true;
    conn_printf(s->conn, "220 %s ESMTP estafeta\r\n", s->cfg->hostname);
    conn_set_timeout(s->conn, (unsigned)session_limit(s, LIM_TIMEOUT_COMMAND));
    conn_flush(s->conn);
}

void smtpd_accept(struct smtpd *srv, int fd, const char *peer,
                  enum listener_role role)
{
    smtpd_accept_impl(srv, fd, peer, role, NULL);
}

void smtpd_accept_local(struct smtpd *srv, int fd, unsigned uid, const char *name)
{
    char peer[64];
    snprintf(peer, sizeof(peer), "uid=%u", uid);
    smtpd_accept_impl(srv, fd, peer, ROLE_LOCAL, name);
}

/* Worker thread: one queue_commit call for the whole batch. */
static void smtpd_commit_run(struct batch_job **jobs, size_t n, void *arg)
{
    struct smtpd *srv = arg;
    struct queue_msg *msgs[BATCH_MAX];
    struct queue_env *envs = xcalloc(n, sizeof(*envs));
    int results[BATCH_MAX];
    for (size_t i = 0; i < n; i++) {
        struct session *s = jobs[i]->arg;
        msgs[i] = s->msg;
        envs[i] = s->env;
    }
    queue_commit(srv->queue, msgs, envs, n, results);
    for (size_t i = 0; i < n; i++)
        jobs[i]->result = results[i];
    free(envs);
}

static void smtpd_commit_done(struct batch_job *job)
{
    struct session *s = job->arg;
    session_enter(s);
    data_committed(s, job->result);
    if (s->shutdown && !s->conn_gone && s->state == SS_CMD)
        session_close(s, 421, "4.3.2", "Service shutting down");
    else if (!s->conn_gone)
        conn_flush(s->conn);
    session_leave(s);
}

static void smtpd_auth_run(struct batch_job **jobs, size_t n, void *arg)
{
    (void)arg;
    for (size_t i = 0; i < n; i++)
        auth_check_password(jobs[i]);
}

static void smtpd_auth_done(struct batch_job *job)
{
    struct session *s = job->arg;
    session_enter(s);
    s->auth_pending = false;
    if (!s->conn_gone) {
        auth_checked(s, job->result);
        if (s->shutdown && s->state == SS_CMD)
            session_close(s, 421, "4.3.2", "Service shutting down");
        else
            conn_flush(s->conn);
    }
    session_leave(s);
}

void smtpd_submit_auth(struct smtpd *srv, struct session *s)
{
    s->auth_job.done = smtpd_auth_done;
    s->auth_job.arg = s;
    s->auth_job.result = 0;
    s->auth_pending = true;
    batch_submit(srv->auth_worker, &s->auth_job);
}

/* ---- RCPT quota checks ---- */

static void smtpd_quota_run(struct batch_job **jobs, size_t n, void *arg)
{
    (void)arg;
    for (size_t i = 0; i < n; i++)
        cmd_quota_run(jobs[i]);
}

static void smtpd_quota_done(struct batch_job *job)
{
    struct session *s = job->arg;
    session_enter(s);
    s->quota_pending = false;
    if (!s->conn_gone) {
        cmd_rcpt_quota_done(s);
        if (s->shutdown && s->state == SS_CMD)
            session_close(s, 421, "4.3.2", "Service shutting down");
        else
            conn_flush(s->conn);
    }
    session_leave(s);
}

void smtpd_submit_quota(struct smtpd *srv, struct session *s)
{
    s->quota_job.done = smtpd_quota_done;
    s->quota_job.arg = s;
    s->quota_job.result = 0;
    s->quota_pending = true;
    batch_submit(srv->quota_worker, &s->quota_job);
}

static long ms_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)(now.tv_sec - t->tv_sec) * 1000L +
           (now.tv_nsec - t->tv_nsec) / 1000000L;
}

bool smtpd_quota_cached(struct smtpd *srv, const char *mailbox,
                        uint64_t *bytes_r, uint64_t *msgs_r)
{
    struct quota_cache_slot *q = &srv->qcache[hash_fnv1a(mailbox) % QUOTA_CACHE_SLOTS];
    if (q->at.tv_sec == 0 || strcmp(q->mailbox, mailbox) != 0)
        return false;
    long age = ms_since(&q->at);
    if (age < 0 || age >= SMTPD_QUOTA_CACHE_MS)
        return false;
    *bytes_r = q->bytes;
    *msgs_r = q->msgs;
    return true;
}

void smtpd_quota_charge(struct smtpd *srv, const char *mailbox, uint64_t bytes)
{
    struct quota_cache_slot *q = &srv->qcache[hash_fnv1a(mailbox) % QUOTA_CACHE_SLOTS];
    if (q->at.tv_sec == 0 || strcmp(q->mailbox, mailbox) != 0)
        return;
    q->msgs++;
    q->bytes = bytes > UINT64_MAX - q->bytes ? UINT64_MAX : q->bytes + bytes;
}

void smtpd_quota_remember(struct smtpd *srv, const char *mailbox,
                          uint64_t bytes, uint64_t msgs)
{
    struct quota_cache_slot *q = &srv->qcache[hash_fnv1a(mailbox) % QUOTA_CACHE_SLOTS];
    snprintf(q->mailbox, sizeof(q->mailbox), "%s", mailbox);
    q->bytes = bytes;
    q->msgs = msgs;
    clock_gettime(CLOCK_MONOTONIC, &q->at);
    if (q->at.tv_sec == 0)
        q->at.tv_sec = 1; /* 0 means empty */
}

void smtpd_submit_commit(struct smtpd *srv, struct session *s)
{
    s->job.done = smtpd_commit_done;
    s->job.arg = s;
    s->job.result = 0;
    batch_submit(srv->committer, &s->job);
}

struct smtpd *smtpd_new(struct event_base *base, struct queue *queue,
                        struct cfgref *cfg, struct authfail *fails,
                        smtpd_committed_fn committed, void *arg)
{
    struct smtpd *srv = xcalloc(1, sizeof(*srv));
    srv->fails = fails;
    srv->base = base;
    srv->queue = queue;
    srv->cfg = cfgref_get(cfg);
    srv->committed = committed;
    srv->committed_arg = arg;
    if (getrandom(&srv->sid_prefix, sizeof(srv->sid_prefix), 0) !=
        (ssize_t)sizeof(srv->sid_prefix))
        srv->sid_prefix = (uint32_t)getpid();
    srv->committer = batch_new(base, smtpd_commit_run, srv, "commit");
    srv->auth_worker = batch_new(base, smtpd_auth_run, srv, "auth");
    srv->quota_worker = batch_new(base, smtpd_quota_run, srv, "quota");
    srv->qcache = xcalloc(QUOTA_CACHE_SLOTS, sizeof(*srv->qcache));
    srv->ev_all_closed = event_new(base, -1, 0, smtpd_on_all_closed, srv);
    return srv;
}

void smtpd_set_config(struct smtpd *srv, struct cfgref *cfg)
{
    struct cfgref *old = srv->cfg;
    srv->cfg = cfgref_get(cfg);
    cfgref_put(old);
}

static void smtpd_on_shutdown_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct session *s = arg;
    session_enter(s);
    if (s->state == SS_DATA || s->state == SS_BDAT || s->state == SS_CMD ||
        s->state == SS_AUTH) {
        session_close(s, 421, "4.3.2", "Service shutting down");
    } else if (s->state == SS_TLS) {
        s->state = SS_CLOSED;
        conn_abort(s->conn);
    }
    session_leave(s);
}

void smtpd_shutdown(struct smtpd *srv, void (*all_closed)(void *arg), void *arg)
{
    srv->shutting_down = true;
    srv->all_closed = all_closed;
    srv->all_closed_arg = arg;
    if (srv->nsessions == 0) {
        event_active(srv->ev_all_closed, 0, 0);
        return;
    }
    for (struct session *s = srv->sessions; s; s = s->next) {
        s->shutdown = true;
        unsigned grace = 0;
        if (s->state == SS_DATA || s->state == SS_BDAT)
            grace = (unsigned)session_limit(s, LIM_TIMEOUT_SHUTDOWN);
        else if (s->state != SS_CMD && s->state != SS_AUTH && s->state != SS_TLS)
            continue; /* a worker's answer is due, or already closing */
        /* Through the loop, so no session is closed while we walk the list. */
        s->shutdown_timer = evtimer_new(srv->base, smtpd_on_shutdown_timer, s);
        struct timeval tv = {.tv_sec = grace, .tv_usec = 0};
        evtimer_add(s->shutdown_timer, &tv);
    }
}

void smtpd_free(struct smtpd *srv)
{
    if (srv == NULL)
        return;
    /* Finish workers first: their callbacks still use sessions. */
    batch_free(srv->committer);
    batch_free(srv->auth_worker);
    batch_free(srv->quota_worker);
    while (srv->sessions) {
        struct session *s = srv->sessions;
        s->busy = 0;
        s->state = SS_CLOSED;
        session_free(s);
    }
    for (size_t i = 0; i < CLIENT_BUCKETS; i++) {
        while (srv->clients[i]) {
            struct client_slot *c = srv->clients[i];
            srv->clients[i] = c->next;
            free(c);
        }
    }
    tls_server_unref(srv->tls);
    event_free(srv->ev_all_closed);
    cfgref_put(srv->cfg);
    free(srv->qcache);
    free(srv);
}
