/*
 * pop3d.c: POP3 sessions. See pop3d.h for the behaviour and doc/pop3.md for
 * the replies. The session shape follows smtpd: every entry from the loop
 * (I/O event, worker answer, timer) goes through enter/leave, and a session
 * is freed only when no entry is active and no worker job is out.
 *
 * Slow work never runs on the loop: a login's password check (argon2id)
 * and the opening of the mailbox (index sync) run on the login worker
 * thread; the session waits paused (P3_WAIT).
 *
 * Sizes (STAT, LIST, "+OK n octets") are the store's vsize, the message as
 * CRLF text, which is exactly what RETR sends before byte-stuffing (RFC
 * 1939 11) also for a file another tool wrote with LF line ends.
 */
#include "pop3d/pop3d.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>

#include "conf/users.h"
#include "io/batch.h"
#include "io/conn.h"
#include "io/tls.h"
#include "lib/authfail.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "proto/pop3.h"
#include "proto/sasl.h"
#include "store/mailbox.h"
#include "store/store.h"

#define P3_IN_MAX (64u * 1024)
#define P3_CHUNK 32768

enum p3_state { P3_AUTHZ, P3_SASL, P3_WAIT, P3_TRANS, P3_TLS, P3_CLOSED };

enum p3_login {            /* worker results */
    P3_LOGIN_OK = 0,
    P3_LOGIN_BAD = 1,      /* wrong user or password */
    P3_LOGIN_IN_USE = 2,   /* another session holds the mailbox */
    P3_LOGIN_ERROR = 3,    /* the mailbox cannot be opened */
};

struct p3_session {
    struct pop3d *srv;
    struct p3_session *prev, *next;
    struct cfgref *cfgref;
    const struct config *cfg;
    struct conn *conn;
    enum listener_role role;
    char sid[24];
    char peer[64];
    enum p3_state state;
    unsigned busy;
    bool finished, conn_gone, worker_pending, shutdown, greeted;
    unsigned errors;
    struct pop3_line_reader lr;

    /* AUTHORIZATION */
    bool have_user;
    char user[SASL_NAME_MAX + 1];
    char password[SASL_NAME_MAX + 1];
    bool check_password;       /* worker: check user/password (else SASL did) */
    struct sasl_server *sasl;
    bool sasl_final;
    struct batch_job job;
    struct event *delay_timer;

    /* TRANSACTION */
    char login[SASL_NAME_MAX + 1];
    struct store_mailbox *mb;
    size_t nmsgs;
    bool *deleted;

    /* RETR/TOP streaming */
    bool streaming;
    int fd;
    struct pop3_stuff stuff;
};

struct pop3d {
    struct event_base *base;
    struct store *store;
    struct cfgref *cfg;
    struct authfail *fails;
    struct tls_server *tls;
    struct batch *worker;
    struct p3_session *sessions;
    size_t nsessions;
    uint32_t sid_prefix;
    uint64_t sid_counter;
    bool shutting_down;
    void (*all_closed)(void *arg);
    void *all_closed_arg;
    struct event *ev_all_closed;
};

static size_t p3_limit(const struct p3_session *s, int lim)
{
    return s->cfg->limits[lim];
}

/* ---- replies ---- */

static void p3_ok(struct p3_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void p3_ok(struct p3_session *s, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    conn_printf(s->conn, "+OK%s%s\r\n", text[0] ? " " : "", text);
}

static void p3_close(struct p3_session *s)
{
    if (s->state == P3_CLOSED)
        return;
    s->state = P3_CLOSED;
    conn_close_after_flush(s->conn, (unsigned)p3_limit(s, LIM_TIMEOUT_CLOSE));
}

static void p3_err(struct p3_session *s, bool client_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void p3_err(struct p3_session *s, bool client_error, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    for (char *p = text; *p; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';
    conn_printf(s->conn, "-ERR %s\r\n", text);
    if (client_error && ++s->errors > p3_limit(s, LIM_SMTP_BAD_COMMANDS)) {
        conn_printf(s->conn, "-ERR Too many errors, closing connection\r\n");
        p3_close(s);
    }
}

/* ---- session lifetime ---- */

static void p3_free(struct p3_session *s)
{
    struct pop3d *srv = s->srv;
    log_kv(LOG_INFO, "pop3.disconnect", "sid", s->sid, "client", s->peer, NULL);
    if (s->fd >= 0)
        close(s->fd);
    if (s->mb != NULL)
        store_mailbox_close(s->mb);   /* no UPDATE: nothing is removed */
    free(s->deleted);
    sasl_server_free(s->sasl);
    explicit_bzero(s->password, sizeof(s->password));
    if (s->delay_timer)
        event_free(s->delay_timer);
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    srv->nsessions--;
    if (s->conn)
        conn_free(s->conn);
    cfgref_put(s->cfgref);
    free(s);
    if (srv->shutting_down && srv->nsessions == 0)
        event_active(srv->ev_all_closed, 0, 0);
}

static void p3_enter(struct p3_session *s) { s->busy++; }

static void p3_leave(struct p3_session *s)
{
    if (--s->busy == 0 && s->finished && !s->worker_pending)
        p3_free(s);
}

/* ---- capabilities ---- */

static bool p3_plain_ok(const struct p3_session *s)
{
    return conn_tls_active(s->conn) || config_plaintext_peer(s->cfg, s->peer);
}

static bool p3_stls_offered(const struct p3_session *s)
{
    return s->role == ROLE_POP3 && s->srv->tls != NULL && !conn_tls_active(s->conn);
}

static void p3_mechs(const struct p3_session *s, char *buf, size_t cap)
{
    sasl_mech_list(s->cfg->auth_mechs, p3_plain_ok(s), buf, cap);
}

static void p3_capa(struct p3_session *s)
{
    char mechs[128];
    p3_mechs(s, mechs, sizeof(mechs));
    conn_printf(s->conn, "+OK Capability list follows\r\nTOP\r\nUIDL\r\n");
    if (s->state == P3_AUTHZ && p3_plain_ok(s))
        conn_printf(s->conn, "USER\r\n");
    if (s->state == P3_AUTHZ && mechs[0] != '\0')
        conn_printf(s->conn, "SASL %s\r\n", mechs);
    conn_printf(s->conn, "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
    if (s->state == P3_AUTHZ && p3_stls_offered(s))
        conn_printf(s->conn, "STLS\r\n");
    conn_printf(s->conn, "UTF8 USER\r\nIMPLEMENTATION estafeta\r\n.\r\n");
}

/* ---- login ---- */

/* Worker thread: check the password (unless SASL already proved the
 * user), then open the mailbox exclusively. Reads only the session's
 * login fields and configuration, which the loop leaves alone meanwhile. */
static void p3_worker_run(struct batch_job **jobs, size_t n, void *arg)
{
    struct pop3d *srv = arg;
    for (size_t i = 0; i < n; i++) {
        struct p3_session *s = jobs[i]->arg;
        if (s->check_password &&
            !users_check_login(s->cfg, s->login, s->password)) {
            jobs[i]->result = P3_LOGIN_BAD;
            continue;
        }
        struct store_mailbox *mb = NULL;
        int r = store_mailbox_open(srv->store, s->login, NULL, STORE_OPEN_EXCLUSIVE, &mb);
        if (r < 0 && errno == ENOENT && store_user_create(srv->store, s->login) == 0)
            r = store_mailbox_open(srv->store, s->login, NULL, STORE_OPEN_EXCLUSIVE, &mb);
        if (r == 0) {
            s->mb = mb;
            jobs[i]->result = P3_LOGIN_OK;
        } else {
            jobs[i]->result = errno == EWOULDBLOCK ? P3_LOGIN_IN_USE : P3_LOGIN_ERROR;
        }
    }
}

static void p3_process(struct p3_session *s);

static void p3_on_delay(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct p3_session *s = arg;
    p3_enter(s);
    if (s->state == P3_WAIT && !s->conn_gone) {
        s->state = P3_AUTHZ;
        p3_err(s, false, "[AUTH] Authentication failed");
        if (s->shutdown) {
            p3_err(s, false, "[SYS/TEMP] Server shutting down");
            p3_close(s);
        } else {
            conn_resume(s->conn);
            conn_flush(s->conn);
        }
    }
    p3_leave(s);
}

static void p3_login_failed(struct p3_session *s)
{
    time_t now = time(NULL);
    authfail_failed(s->srv->fails, s->peer, now, p3_limit(s, LIM_AUTH_FAILURES),
                    p3_limit(s, LIM_AUTH_LOCKOUT));
    log_kv(LOG_WARN, "pop3.auth_failed", "sid", s->sid, "client", s->peer, "user",
           s->login, NULL);
    size_t delay = p3_limit(s, LIM_AUTH_DELAY);
    if (delay == 0) {
        s->state = P3_AUTHZ;
        p3_err(s, false, "[AUTH] Authentication failed");
        return;
    }
    s->state = P3_WAIT;
    conn_pause(s->conn);
    if (s->delay_timer == NULL)
        s->delay_timer = evtimer_new(s->srv->base, p3_on_delay, s);
    struct timeval tv = {.tv_sec = (time_t)delay, .tv_usec = 0};
    evtimer_add(s->delay_timer, &tv);
}

static void p3_worker_done(struct batch_job *job)
{
    struct p3_session *s = job->arg;
    p3_enter(s);
    s->worker_pending = false;
    explicit_bzero(s->password, sizeof(s->password));
    if (s->conn_gone || s->shutdown) {
        if (s->mb != NULL) {
            store_mailbox_close(s->mb);
            s->mb = NULL;
        }
        if (!s->conn_gone) {
            p3_err(s, false, "[SYS/TEMP] Server shutting down");
            p3_close(s);
        }
        p3_leave(s);
        return;
    }
    s->state = P3_AUTHZ;
    switch ((enum p3_login)job->result) {
    case P3_LOGIN_OK:
        authfail_succeeded(s->srv->fails, s->peer, time(NULL),
                           p3_limit(s, LIM_AUTH_LOCKOUT));
        s->nmsgs = store_mailbox_count(s->mb);
        s->deleted = xcalloc(s->nmsgs ? s->nmsgs : 1, sizeof(*s->deleted));
        s->state = P3_TRANS;
        log_kv(LOG_INFO, "pop3.login", "sid", s->sid, "client", s->peer, "user",
               s->login, NULL);
        p3_ok(s, "Logged in");
        break;
    case P3_LOGIN_BAD:
        p3_login_failed(s);
        break;
    case P3_LOGIN_IN_USE:
        p3_err(s, false, "[IN-USE] Mailbox is locked by another POP3 session");
        break;
    case P3_LOGIN_ERROR:
        log_kv(LOG_ERR, "pop3.mailbox_error", "sid", s->sid, "user", s->login, NULL);
        p3_err(s, false, "[SYS/TEMP] Cannot open the mailbox, try later");
        break;
    }
    if (s->state != P3_WAIT) {
        conn_resume(s->conn);
        conn_flush(s->conn);
    }
    p3_leave(s);
}

/* Hands the login to the worker; login/password already set. */
static void p3_login_submit(struct p3_session *s, bool check_password)
{
    for (char *p = s->login; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    s->check_password = check_password;
    s->state = P3_WAIT;
    conn_pause(s->conn);
    s->job.done = p3_worker_done;
    s->job.arg = s;
    s->job.result = P3_LOGIN_ERROR;
    s->worker_pending = true;
    batch_submit(s->srv->worker, &s->job);
}

static bool p3_locked_out(struct p3_session *s)
{
    if (!authfail_locked(s->srv->fails, s->peer, time(NULL),
                         p3_limit(s, LIM_AUTH_LOCKOUT)))
        return false;
    log_kv(LOG_WARN, "pop3.auth_locked", "sid", s->sid, "client", s->peer, NULL);
    p3_err(s, false, "[SYS/TEMP] Too many failed logins, try later");
    return true;
}

static int p3_sasl_lookup(void *arg, const char *authcid, struct sasl_creds *creds_r)
{
    const struct p3_session *s = arg;
    const struct cfg_user *u = config_user(s->cfg, authcid, strlen(authcid));
    return u == NULL ? -1 : users_sasl_creds(u, creds_r);
}

static void p3_sasl_end(struct p3_session *s)
{
    sasl_server_free(s->sasl);
    s->sasl = NULL;
    s->sasl_final = false;
    pop3_line_set_max(&s->lr, POP3_CMD_LINE_MAX);
    if (s->state == P3_SASL)
        s->state = P3_AUTHZ;
}

static void p3_sasl_result(struct p3_session *s, enum sasl_step st, struct buf *out)
{
    switch (st) {
    case SASL_CONTINUE:
        s->state = P3_SASL;
        pop3_line_set_max(&s->lr, POP3_AUTH_LINE_MAX);
        conn_printf(s->conn, "+ %s\r\n", buf_cstr(out));
        return;
    case SASL_CHECK_PASSWORD: {
        snprintf(s->login, sizeof(s->login), "%s", sasl_server_user(s->sasl));
        const char *pw = sasl_server_password(s->sasl);
        snprintf(s->password, sizeof(s->password), "%s", pw ? pw : "");
        p3_sasl_end(s);
        p3_login_submit(s, true);
        return;
    }
    case SASL_OK:
        if (out->len > 0 && !s->sasl_final) {
            /* RFC 5034 4: success data in a continuation, answered by an
             * empty line. */
            s->state = P3_SASL;
            s->sasl_final = true;
            conn_printf(s->conn, "+ %s\r\n", buf_cstr(out));
            return;
        }
        snprintf(s->login, sizeof(s->login), "%s", sasl_server_user(s->sasl));
        p3_sasl_end(s);
        p3_login_submit(s, false);
        return;
    case SASL_FAIL:
    case SASL_AUTHZ_DENIED:
        snprintf(s->login, sizeof(s->login), "%s",
                 s->sasl ? sasl_server_user(s->sasl) : "");
        p3_sasl_end(s);
        p3_login_failed(s);
        return;
    case SASL_BAD_SYNTAX:
        p3_sasl_end(s);
        p3_err(s, true, "Cannot decode response");
        return;
    case SASL_CANCELLED:
        p3_sasl_end(s);
        p3_err(s, false, "Authentication cancelled");
        return;
    }
}

static void p3_sasl_line(struct p3_session *s, const char *line, size_t len)
{
    if (s->sasl_final) {
        if (len == 0) {
            p3_sasl_result(s, SASL_OK, &(struct buf){0});
        } else {
            p3_sasl_end(s);
            p3_err(s, false, len == 1 && line[0] == '*' ? "Authentication cancelled"
                                                        : "Cannot decode response");
        }
        return;
    }
    struct buf out;
    buf_init(&out, SASL_LINE_MAX * 2);
    p3_sasl_result(s, sasl_server_step(s->sasl, line, len, &out), &out);
    buf_free(&out);
}

static void p3_auth(struct p3_session *s, const struct pop3_cmd *c)
{
    if (c->arg == NULL) {
        /* RFC 1734-era clients ask for the list this way. */
        char mechs[128];
        p3_mechs(s, mechs, sizeof(mechs));
        conn_printf(s->conn, "+OK\r\n");
        for (char *m = strtok(mechs, " "); m; m = strtok(NULL, " "))
            conn_printf(s->conn, "%s\r\n", m);
        conn_printf(s->conn, ".\r\n");
        return;
    }
    int mech = sasl_mech_lookup(c->arg, c->arg_len);
    if (mech < 0 || mech == SASL_MECH_DIGEST_MD5 ||
        !(s->cfg->auth_mechs & (1u << mech))) {
        p3_err(s, true, "Unsupported authentication mechanism");
        return;
    }
    if (sasl_mech_plaintext((enum sasl_mech)mech) && !p3_plain_ok(s)) {
        p3_err(s, false, "[AUTH] Plaintext authentication disallowed on "
                         "non-secure connection, use STLS");
        return;
    }
    if (p3_locked_out(s))
        return;
    s->sasl = sasl_server_new((enum sasl_mech)mech, s->cfg->hostname,
                              p3_sasl_lookup, s);
    if (s->sasl == NULL) {
        p3_err(s, false, "[SYS/TEMP] Authentication not available");
        return;
    }
    struct buf out;
    buf_init(&out, SASL_LINE_MAX * 2);
    p3_sasl_result(s, sasl_server_step(s->sasl, c->arg2, c->arg2 ? c->arg2_len : 0,
                                       &out), &out);
    buf_free(&out);
}

/* ---- TRANSACTION ---- */

/*
 * The UIDL of a message (RFC 1939 7: 1 to 70 characters in 0x21..0x7E):
 * the store's unique id itself when it fits, else "h" and the first 32 hex
 * digits of its SHA-256. Either way a pure function of the unique id, so
 * stable forever.
 */
static const char *p3_uidl(const struct store_msg *m, char *buf, size_t cap)
{
    size_t len = strlen(m->unique);
    bool fits = len >= 1 && len <= 70;
    for (size_t i = 0; fits && i < len; i++)
        fits = (unsigned char)m->unique[i] > 0x20 && (unsigned char)m->unique[i] < 0x7f;
    if (fits)
        return m->unique;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_Digest(m->unique, len, md, &mdlen, EVP_sha256(), NULL);
    size_t o = (size_t)snprintf(buf, cap, "h");
    for (unsigned i = 0; i < 16 && o + 2 < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%02x", md[i]);
    return buf;
}

/* Message argument n (1-based) -> index, or -1 after replying -ERR. */
static long p3_msg(struct p3_session *s, uint32_t n)
{
    if (n == 0 || n > s->nmsgs) {
        p3_err(s, false, "No such message");
        return -1;
    }
    if (s->deleted[n - 1]) {
        p3_err(s, false, "Message %u already deleted", n);
        return -1;
    }
    return (long)n - 1;
}

static void p3_stream(struct p3_session *s)
{
    size_t high = p3_limit(s, LIM_OUTPUT_HIGH_WATER);
    char in[P3_CHUNK], out[2 * P3_CHUNK + POP3_STUFF_OUT_SLACK + POP3_STUFF_FINISH_MAX];
    while (s->streaming && conn_output_pending(s->conn) < high) {
        ssize_t n = read(s->fd, in, sizeof(in));
        size_t olen = 0, used = 0;
        enum pop3_stuff_result r = POP3_STUFF_MORE;
        if (n < 0) {
            /* The reply has started: all we can do is drop the client. */
            log_kv(LOG_ERR, "pop3.read_failed", "sid", s->sid, "error",
                   strerror(errno), NULL);
            s->streaming = false;
            close(s->fd);
            s->fd = -1;
            conn_abort(s->conn);
            return;
        }
        if (n > 0)
            r = pop3_stuff_feed(&s->stuff, in, (size_t)n, out, &olen, &used);
        if (n == 0 || r == POP3_STUFF_DONE) {
            olen += pop3_stuff_finish(&s->stuff, out + olen);
            s->streaming = false;
            close(s->fd);
            s->fd = -1;
        }
        conn_write(s->conn, out, olen);
    }
    conn_flush(s->conn);
    if (s->streaming) {
        conn_want_drained(s->conn);
    } else if (s->shutdown) {
        p3_err(s, false, "[SYS/TEMP] Server shutting down");
        p3_close(s);
    } else {
        conn_resume(s->conn);
    }
}

static void p3_retr(struct p3_session *s, uint32_t n, bool top, uint32_t lines)
{
    long i = p3_msg(s, n);
    if (i < 0)
        return;
    int fd;
    if (store_msg_open(s->mb, (size_t)i, &fd) < 0) {
        p3_err(s, false, "[SYS/TEMP] Cannot read message %u", n);
        return;
    }
    const struct store_msg *m = store_mailbox_msg(s->mb, (size_t)i);
    if (top)
        pop3_stuff_init_top(&s->stuff, lines);
    else
        pop3_stuff_init(&s->stuff);
    if (top)
        p3_ok(s, "Top of message follows");
    else
        p3_ok(s, "%llu octets", (unsigned long long)m->vsize);
    s->fd = fd;
    s->streaming = true;
    conn_pause(s->conn);
    p3_stream(s);
}

static void p3_update(struct p3_session *s)
{
    size_t *idx = xcalloc(s->nmsgs ? s->nmsgs : 1, sizeof(*idx));
    size_t n = 0;
    for (size_t i = 0; i < s->nmsgs; i++)
        if (s->deleted[i])
            idx[n++] = i;
    int r = n > 0 ? store_mailbox_expunge(s->mb, idx, n) : 0;
    free(idx);
    char count[32];
    snprintf(count, sizeof(count), "%zu", n);
    log_kv(LOG_INFO, "pop3.update", "sid", s->sid, "user", s->login, "deleted",
           count, "result", r == 0 ? "ok" : "failed", NULL);
    if (r == 0)
        p3_ok(s, "Logging out, %zu message%s deleted", n, n == 1 ? "" : "s");
    else
        p3_err(s, false, "[SYS/TEMP] Some deleted messages were not removed");
    store_mailbox_close(s->mb);
    s->mb = NULL;
    p3_close(s);
}

static void p3_transaction(struct p3_session *s, const struct pop3_cmd *c)
{
    switch (c->verb) {
    case POP3_CMD_STAT: {
        size_t count = 0;
        uint64_t size = 0;
        for (size_t i = 0; i < s->nmsgs; i++)
            if (!s->deleted[i]) {
                count++;
                size += store_mailbox_msg(s->mb, i)->vsize;
            }
        p3_ok(s, "%zu %llu", count, (unsigned long long)size);
        break;
    }
    case POP3_CMD_LIST:
    case POP3_CMD_UIDL: {
        bool uidl = c->verb == POP3_CMD_UIDL;
        if (c->nnum == 1) {
            long i = p3_msg(s, c->num[0]);
            if (i < 0)
                break;
            const struct store_msg *m = store_mailbox_msg(s->mb, (size_t)i);
            char u[40];
            if (uidl)
                p3_ok(s, "%u %s", c->num[0], p3_uidl(m, u, sizeof(u)));
            else
                p3_ok(s, "%u %llu", c->num[0], (unsigned long long)m->vsize);
            break;
        }
        conn_printf(s->conn, "+OK\r\n");
        for (size_t i = 0; i < s->nmsgs; i++) {
            if (s->deleted[i])
                continue;
            const struct store_msg *m = store_mailbox_msg(s->mb, i);
            char u[40];
            if (uidl)
                conn_printf(s->conn, "%zu %s\r\n", i + 1, p3_uidl(m, u, sizeof(u)));
            else
                conn_printf(s->conn, "%zu %llu\r\n", i + 1,
                            (unsigned long long)m->vsize);
        }
        conn_printf(s->conn, ".\r\n");
        break;
    }
    case POP3_CMD_RETR:
        p3_retr(s, c->num[0], false, 0);
        break;
    case POP3_CMD_TOP:
        p3_retr(s, c->num[0], true, c->num[1]);
        break;
    case POP3_CMD_DELE: {
        long i = p3_msg(s, c->num[0]);
        if (i < 0)
            break;
        s->deleted[i] = true;
        p3_ok(s, "Message %u deleted", c->num[0]);
        break;
    }
    case POP3_CMD_RSET:
        memset(s->deleted, 0, s->nmsgs * sizeof(*s->deleted));
        conn_printf(s->conn, "+OK\r\n");
        break;
    case POP3_CMD_NOOP:
        conn_printf(s->conn, "+OK\r\n");
        break;
    case POP3_CMD_QUIT:
        p3_update(s);
        break;
    case POP3_CMD_CAPA:
        p3_capa(s);
        break;
    default:
        p3_err(s, true, "Command not valid in this state");
        break;
    }
}

/* ---- AUTHORIZATION ---- */

static void p3_authorization(struct p3_session *s, const struct pop3_cmd *c)
{
    switch (c->verb) {
    case POP3_CMD_CAPA:
        p3_capa(s);
        break;
    case POP3_CMD_QUIT:
        p3_ok(s, "Bye");
        p3_close(s);
        break;
    case POP3_CMD_NOOP:
        p3_err(s, true, "Command not valid in this state");
        break;
    case POP3_CMD_STLS:
        if (conn_tls_active(s->conn)) {
            p3_err(s, true, "TLS already active");
        } else if (!p3_stls_offered(s)) {
            p3_err(s, true, "STLS not available");
        } else {
            p3_ok(s, "Begin TLS negotiation");
            s->state = P3_TLS;
            conn_set_timeout(s->conn, (unsigned)p3_limit(s, LIM_TIMEOUT_TLS));
            conn_start_tls(s->conn, s->srv->tls);
        }
        break;
    case POP3_CMD_UTF8:
        p3_ok(s, "UTF8 enabled");
        break;
    case POP3_CMD_APOP:
        p3_err(s, true, "APOP not supported");
        break;
    case POP3_CMD_USER:
        if (!p3_plain_ok(s)) {
            p3_err(s, false, "[AUTH] Plaintext authentication disallowed on "
                             "non-secure connection, use STLS");
            break;
        }
        if (c->arg_len >= sizeof(s->user)) {
            p3_err(s, true, "User name too long");
            break;
        }
        memcpy(s->user, c->arg, c->arg_len);
        s->user[c->arg_len] = '\0';
        s->have_user = true;
        p3_ok(s, "Send your password");
        break;
    case POP3_CMD_PASS:
        if (!s->have_user) {
            p3_err(s, true, "Send USER first");
            break;
        }
        s->have_user = false;
        if (c->arg_len >= sizeof(s->password)) {
            p3_err(s, false, "[AUTH] Authentication failed");
            break;
        }
        if (p3_locked_out(s))
            break;
        snprintf(s->login, sizeof(s->login), "%s", s->user);
        memcpy(s->password, c->arg, c->arg_len);
        s->password[c->arg_len] = '\0';
        p3_login_submit(s, true);
        break;
    case POP3_CMD_AUTH:
        p3_auth(s, c);
        break;
    default:
        p3_err(s, true, "Command not valid in this state");
        break;
    }
}

static void p3_process(struct p3_session *s)
{
    struct buf *in = conn_input(s->conn);
    size_t high = p3_limit(s, LIM_OUTPUT_HIGH_WATER);
    while (in->len > 0 && (s->state == P3_AUTHZ || s->state == P3_TRANS ||
                           s->state == P3_SASL) && !s->streaming) {
        if (conn_output_pending(s->conn) >= high) {
            conn_flush(s->conn);
            if (conn_output_pending(s->conn) >= high)
                break;
        }
        const char *line;
        size_t len, consumed;
        enum pop3_line_result r = pop3_line_next(&s->lr, in->data, in->len, &line,
                                                 &len, &consumed);
        if (r == POP3_LINE_NEED_MORE) {
            buf_consume(in, consumed);
            break;
        }
        if (r != POP3_LINE_OK) {
            if (s->state == P3_SASL)
                p3_sasl_end(s);
            p3_err(s, true, r == POP3_LINE_TOO_LONG ? "Line too long"
                                                    : "Bad character in command");
        } else if (s->state == P3_SASL) {
            p3_sasl_line(s, line, len);
        } else {
            struct pop3_cmd c;
            if (pop3_cmd_parse(line, len, &c) < 0)
                p3_err(s, true, "%s", c.reason);
            else if (s->state == P3_TRANS)
                p3_transaction(s, &c);
            else
                p3_authorization(s, &c);
        }
        buf_consume(in, consumed);
    }
    if (s->shutdown && (s->state == P3_AUTHZ || s->state == P3_TRANS) && !s->streaming) {
        p3_err(s, false, "[SYS/TEMP] Server shutting down");
        p3_close(s);
        return;
    }
    if (conn_eof(s->conn) && !s->streaming &&
        (s->state == P3_AUTHZ || s->state == P3_TRANS || s->state == P3_SASL)) {
        /* The client went away: no UPDATE, nothing is removed. */
        s->state = P3_CLOSED;
        conn_close_after_flush(s->conn, (unsigned)p3_limit(s, LIM_TIMEOUT_CLOSE));
        return;
    }
    if (s->state == P3_AUTHZ || s->state == P3_TRANS || s->state == P3_SASL)
        conn_set_timeout(s->conn, (unsigned)p3_limit(s, LIM_POP3_TIMEOUT));
    conn_flush(s->conn);
}

static void p3_greet(struct p3_session *s)
{
    s->greeted = true;
    p3_ok(s, "estafeta POP3 server ready");
    conn_set_timeout(s->conn, (unsigned)p3_limit(s, LIM_POP3_TIMEOUT));
    conn_flush(s->conn);
}

static void p3_tls_ready(struct p3_session *s)
{
    if (s->state != P3_TLS)
        return;
    /* RFC 2595 4: forget what came before TLS. */
    s->have_user = false;
    s->state = P3_AUTHZ;
    pop3_line_init(&s->lr, POP3_CMD_LINE_MAX);
    log_kv(LOG_INFO, "pop3.tls", "sid", s->sid, "version", conn_tls_version(s->conn),
           "cipher", conn_tls_cipher(s->conn), NULL);
    if (!s->greeted)
        p3_greet(s);
    else
        conn_set_timeout(s->conn, (unsigned)p3_limit(s, LIM_POP3_TIMEOUT));
}

static void p3_on_conn(struct conn *c, enum conn_event ev, void *arg)
{
    (void)c;
    struct p3_session *s = arg;
    p3_enter(s);
    switch (ev) {
    case CONN_EV_INPUT:
        if (s->state != P3_CLOSED && s->state != P3_WAIT && s->state != P3_TLS)
            p3_process(s);
        break;
    case CONN_EV_DRAINED:
        if (s->streaming)
            p3_stream(s);
        break;
    case CONN_EV_TLS_READY:
        p3_tls_ready(s);
        break;
    case CONN_EV_TIMEOUT:
        if (s->state == P3_WAIT) {
            conn_set_timeout(s->conn, (unsigned)p3_limit(s, LIM_POP3_TIMEOUT));
            break;
        }
        /* RFC 1939 3: autologout closes without UPDATE and without a reply. */
        log_kv(LOG_INFO, "pop3.timeout", "sid", s->sid, "client", s->peer, NULL);
        s->state = P3_CLOSED;
        conn_abort(s->conn);
        break;
    case CONN_EV_CLOSED:
        s->conn_gone = true;
        s->finished = true;
        break;
    }
    p3_leave(s);
}

void pop3d_accept(struct pop3d *srv, int fd, const char *peer, enum listener_role role)
{
    struct p3_session *s = xcalloc(1, sizeof(*s));
    s->srv = srv;
    s->fd = -1;
    s->cfgref = cfgref_get(srv->cfg);
    s->cfg = s->cfgref->cfg;
    s->role = role;
    snprintf(s->peer, sizeof(s->peer), "%s", peer);
    snprintf(s->sid, sizeof(s->sid), "p%07x%08llx", srv->sid_prefix & 0xfffffff,
             (unsigned long long)++srv->sid_counter);
    pop3_line_init(&s->lr, POP3_CMD_LINE_MAX);
    s->conn = conn_new(srv->base, fd, P3_IN_MAX, p3_limit(s, LIM_OUTPUT_HIGH_WATER),
                       p3_on_conn, s);
    s->next = srv->sessions;
    if (srv->sessions)
        srv->sessions->prev = s;
    srv->sessions = s;
    srv->nsessions++;
    p3_enter(s);
    log_kv(LOG_INFO, "pop3.connect", "sid", s->sid, "client", s->peer, "role",
           listener_role_name(role), NULL);
    if (srv->shutting_down || srv->nsessions > p3_limit(s, LIM_CONNECTIONS)) {
        p3_err(s, false, "[SYS/TEMP] Server busy or shutting down, try later");
        p3_close(s);
    } else if (role == ROLE_POP3S) {
        if (srv->tls == NULL) {
            s->state = P3_CLOSED;
            conn_abort(s->conn);
        } else {
            s->state = P3_TLS;
            conn_set_timeout(s->conn, (unsigned)p3_limit(s, LIM_TIMEOUT_TLS));
            conn_start_tls(s->conn, srv->tls);
        }
    } else {
        p3_greet(s);
    }
    p3_leave(s);
}

static void pop3d_on_all_closed(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pop3d *srv = arg;
    if (srv->all_closed)
        srv->all_closed(srv->all_closed_arg);
}

struct pop3d *pop3d_new(struct event_base *base, struct store *store,
                        struct cfgref *cfg, struct authfail *fails)
{
    struct pop3d *srv = xcalloc(1, sizeof(*srv));
    srv->base = base;
    srv->store = store;
    srv->cfg = cfgref_get(cfg);
    srv->fails = fails;
    srv->sid_prefix = (uint32_t)getpid() ^ (uint32_t)time(NULL);
    srv->worker = batch_new(base, p3_worker_run, srv, "pop3");
    srv->ev_all_closed = event_new(base, -1, 0, pop3d_on_all_closed, srv);
    return srv;
}

void pop3d_set_config(struct pop3d *srv, struct cfgref *cfg)
{
    struct cfgref *old = srv->cfg;
    srv->cfg = cfgref_get(cfg);
    cfgref_put(old);
}

void pop3d_set_tls(struct pop3d *srv, struct tls_server *ts)
{
    struct tls_server *old = srv->tls;
    srv->tls = ts ? tls_server_ref(ts) : NULL;
    tls_server_unref(old);
}

size_t pop3d_session_count(const struct pop3d *srv) { return srv->nsessions; }

void pop3d_shutdown(struct pop3d *srv, void (*all_closed)(void *arg), void *arg)
{
    srv->shutting_down = true;
    srv->all_closed = all_closed;
    srv->all_closed_arg = arg;
    if (srv->nsessions == 0) {
        event_active(srv->ev_all_closed, 0, 0);
        return;
    }
    struct p3_session *s = srv->sessions;
    while (s != NULL) {
        struct p3_session *next = s->next;
        p3_enter(s);
        s->shutdown = true;
        if (s->state == P3_TLS || s->state == P3_SASL) {
            s->state = P3_CLOSED;
            conn_abort(s->conn);
        } else if ((s->state == P3_AUTHZ || s->state == P3_TRANS) && !s->streaming) {
            p3_err(s, false, "[SYS/TEMP] Server shutting down");
            p3_close(s);
        }
        /* P3_WAIT: the worker's answer or the delay timer closes it;
         * streaming: it ends the message, then closes, but a client that
         * stops reading gets only timeout-close more (nothing is removed). */
        if (s->streaming)
            conn_set_timeout(s->conn, (unsigned)p3_limit(s, LIM_TIMEOUT_CLOSE));
        p3_leave(s);
        s = next;
    }
}

void pop3d_free(struct pop3d *srv)
{
    if (srv == NULL)
        return;
    batch_free(srv->worker);
    while (srv->sessions) {
        struct p3_session *s = srv->sessions;
        s->busy = 0;
        s->worker_pending = false;
        p3_free(s);
    }
    tls_server_unref(srv->tls);
    event_free(srv->ev_all_closed);
    cfgref_put(srv->cfg);
    free(srv);
}
