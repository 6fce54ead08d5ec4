/* client: see client.h for the contract. */
#include "relay/client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "io/conn.h"
#include "io/tls.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "proto/dotstuff.h"
#include "proto/sasl.h"
#include "proto/smtp_cmd.h"
#include "proto/smtp_reply.h"
#include "queue/queue.h"

/* What the next reply answers. */
enum client_state {
    ST_GREETING,
    ST_EHLO,
    ST_HELO,
    ST_STARTTLS,
    ST_HANDSHAKE,
    ST_AUTH,          /* AUTH PLAIN, or AUTH LOGIN's first step */
    ST_AUTH_USER,     /* AUTH LOGIN: user name sent */
    ST_AUTH_PASS,     /* AUTH LOGIN: password sent */
    ST_IDLE,          /* no reply expected */
    ST_TXN,           /* MAIL / RCPT / DATA replies (cl->expect) */
    ST_BODY,          /* body being written, then the final-dot reply */
    ST_BDAT,          /* a BDAT chunk's reply */
    ST_RSET,
    ST_QUIT,
    ST_CLOSED,
};

/* Commands of one transaction, in sending order. */
enum txn_cmd { T_MAIL, T_RCPT, T_DATA };

#define CLIENT_CHUNK 65536u

struct smtp_client {
    struct conn *conn;
    struct client_params p;
    char *host, *addr, *auth_user, *password;
    struct client_cb cb;
    void *arg;
    const struct config *cfg;

    enum client_state st;
    struct smtp_reply_parser rp;
    struct smtp_ehlo caps;
    bool ehlo_done_tls;        /* EHLO repeated after TLS */
    bool in_callback;
    bool closed_called;
    struct event *kick;        /* starts a transaction from the loop */
    size_t nmessages;

    /* the message in flight */
    struct client_msg *m;
    size_t first, last;        /* rcpts of this transaction: [first, last) */
    size_t nsent, ngot;        /* commands of the txn sent / answered */
    size_t accepted;           /* RCPTs accepted in this transaction */
    bool mail_failed;
    char mail_reply[512];
    enum client_outcome mail_outcome;
    bool *rcpt_ok;             /* per rcpt of the message: accepted in this txn */
    struct queue_body *body;
    struct dotstuff ds;
    bool body_done;
    struct buf wire;
    bool bdat_last;
    bool data_refused_after_354; /* 354 with nobody accepted: dot sent */
};

static void client_fail(struct smtp_client *cl, enum client_outcome how,
                        const char *reason, bool tls_failed);
static void client_on_kick(evutil_socket_t fd, short what, void *arg);

/* ---- small helpers ---- */

static void client_cmd(struct smtp_client *cl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void client_cmd(struct smtp_client *cl, const char *fmt, ...)
{
    char line[1200];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line) - 2)
        n = (int)sizeof(line) - 3; /* never: our commands are bounded */
    line[n++] = '\r';
    line[n++] = '\n';
    conn_write(cl->conn, line, (size_t)n);
}

static void reply_text(const struct smtp_reply *r, char *out, size_t cap)
{
    struct buf b;
    buf_init(&b, cap - 1);
    if (smtp_reply_format(r, &b) < 0) {
        /* too long for the DSN field: keep its start */
        snprintf(out, cap, "%d %s", r->code, r->text != NULL ? r->text : "");
        for (char *p = out; *p; p++)
            if (*p == '\n')
                *p = ' ';
    } else {
        snprintf(out, cap, "%s", buf_cstr(&b));
    }
    buf_free(&b);
}

static void set_timeout(struct smtp_client *cl, enum limit_id lim)
{
    conn_set_timeout(cl->conn, (unsigned)cl->cfg->limits[lim]);
}

static bool is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

/* ---- session set-up ---- */

static void client_ehlo(struct smtp_client *cl)
{
    client_cmd(cl, "EHLO %s", cl->cfg->hostname);
    cl->st = ST_EHLO;
    set_timeout(cl, LIM_TIMEOUT_GREETING);
}

static void client_auth(struct smtp_client *cl)
{
    if (!conn_tls_active(cl->conn) && cl->p.policy != TLS_POLICY_NONE) {
        client_fail(cl, CLIENT_TEMP, "4.7.10 TLS is required before AUTH to a "
                                     "smarthost, and the session is not encrypted",
                    false);
        return;
    }
    bool plain = strstr(cl->caps.auth_mechs, "PLAIN") != NULL;
    bool login = strstr(cl->caps.auth_mechs, "LOGIN") != NULL;
    if (!plain && !login) {
        client_fail(cl, CLIENT_TEMP, "4.7.0 the smarthost offers neither AUTH "
                                     "PLAIN nor LOGIN", false);
        return;
    }
    struct buf b;
    buf_init(&b, 4096);
    if (plain) {
        size_t ul = strlen(cl->auth_user), pl = strlen(cl->password);
        unsigned char raw[1100];
        if (ul + pl + 2 > sizeof(raw)) {
            buf_free(&b);
            client_fail(cl, CLIENT_TEMP, "4.7.0 smarthost credentials too long", false);
            return;
        }
        raw[0] = '\0';
        memcpy(raw + 1, cl->auth_user, ul);
        raw[1 + ul] = '\0';
        memcpy(raw + 2 + ul, cl->password, pl);
        sasl_b64_encode(raw, ul + pl + 2, &b);
        explicit_bzero(raw, sizeof(raw));
        client_cmd(cl, "AUTH PLAIN %s", buf_cstr(&b));
    } else {
        client_cmd(cl, "AUTH LOGIN");
    }
    explicit_bzero(b.data != NULL ? b.data : (char[1]){0}, b.len);
    buf_free(&b);
    cl->st = ST_AUTH;
    set_timeout(cl, LIM_TIMEOUT_GREETING);
}

static void client_ready(struct smtp_client *cl)
{
    cl->st = ST_IDLE;
    conn_set_timeout(cl->conn, (unsigned)cl->cfg->limits[LIM_TIMEOUT_GREETING]);
    cl->in_callback = true;
    cl->cb.ready(cl, cl->arg);
    cl->in_callback = false;
}

/* After an EHLO/HELO reply: STARTTLS, AUTH or ready. */
static void client_after_hello(struct smtp_client *cl)
{
    bool tls_on = conn_tls_active(cl->conn);
    enum tls_policy pol = cl->p.policy;
    if (!tls_on && pol != TLS_POLICY_NONE && cl->p.tls != NULL) {
        bool required = pol == TLS_POLICY_ENCRYPT || pol == TLS_POLICY_VERIFY;
        if (cl->caps.starttls && (!cl->p.no_tls || required)) {
            client_cmd(cl, "STARTTLS");
            cl->st = ST_STARTTLS;
            set_timeout(cl, LIM_TIMEOUT_GREETING);
            return;
        }
        if (required) {
            client_fail(cl, CLIENT_TEMP, "4.7.10 TLS is required for this "
                                         "destination and the server does not "
                                         "offer STARTTLS", false);
            return;
        }
    }
    if (cl->auth_user != NULL) {
        client_auth(cl);
        return;
    }
    client_ready(cl);
}

/* ---- transactions ---- */

static void client_txn_begin(struct smtp_client *cl);

static size_t txn_ncmds(const struct smtp_client *cl)
{
    /* MAIL, the RCPTs, and DATA unless BDAT is used */
    return 1 + (cl->last - cl->first) + (cl->caps.chunking ? 0 : 1);
}

static void txn_send_cmd(struct smtp_client *cl, size_t k)
{
    struct client_msg *m = cl->m;
    if (k == 0) {
        char params[400] = "";
        size_t len = 0;
        if (cl->caps.size_advertised)
            len += (size_t)snprintf(params + len, sizeof(params) - len,
                                    " SIZE=%llu", (unsigned long long)m->size);
        if (m->body_8bit && cl->caps.eightbitmime)
            len += (size_t)snprintf(params + len, sizeof(params) - len,
                                    " BODY=8BITMIME");
        if (m->smtputf8 && cl->caps.smtputf8)
            len += (size_t)snprintf(params + len, sizeof(params) - len, " SMTPUTF8");
        if (cl->caps.dsn && m->ret != SMTP_RET_UNSPEC)
            len += (size_t)snprintf(params + len, sizeof(params) - len, " RET=%s",
                                    m->ret == SMTP_RET_FULL ? "FULL" : "HDRS");
        if (cl->caps.dsn && m->envid[0] != '\0')
            (void)snprintf(params + len, sizeof(params) - len, " ENVID=%s", m->envid);
        client_cmd(cl, "MAIL FROM:<%s>%s", m->sender, params);
        return;
    }
    size_t i = cl->first + (k - 1);
    if (i < cl->last) {
        const struct client_rcpt *r = &m->rcpts[i];
        char params[600] = "";
        if (cl->caps.dsn && r->notify != 0) {
            size_t len = (size_t)snprintf(params, sizeof(params), " NOTIFY=");
            if (r->notify & SMTP_NOTIFY_NEVER) {
                len += (size_t)snprintf(params + len, sizeof(params) - len, "NEVER");
            } else {
                const char *sep = "";
                static const struct { unsigned bit; const char *name; } names[] = {
                    {SMTP_NOTIFY_SUCCESS, "SUCCESS"}, {SMTP_NOTIFY_FAILURE, "FAILURE"},
                    {SMTP_NOTIFY_DELAY, "DELAY"}};
                for (size_t j = 0; j < 3; j++)
                    if (r->notify & names[j].bit) {
                        len += (size_t)snprintf(params + len, sizeof(params) - len,
                                                "%s%s", sep, names[j].name);
                        sep = ",";
                    }
            }
            if (r->orcpt[0] != '\0')
                (void)snprintf(params + len, sizeof(params) - len, " ORCPT=%s", r->orcpt);
        } else if (cl->caps.dsn && r->orcpt[0] != '\0') {
            (void)snprintf(params, sizeof(params), " ORCPT=%s", r->orcpt);
        }
        client_cmd(cl, "RCPT TO:<%s>%s", r->address, params);
        return;
    }
    client_cmd(cl, "DATA");
}

static enum txn_cmd txn_kind(const struct smtp_client *cl, size_t k)
{
    if (k == 0)
        return T_MAIL;
    return cl->first + (k - 1) < cl->last ? T_RCPT : T_DATA;
}

static void txn_timeout(struct smtp_client *cl)
{
    enum txn_cmd kind = txn_kind(cl, cl->ngot);
    set_timeout(cl, kind == T_MAIL ? LIM_TIMEOUT_MAIL
                    : kind == T_RCPT ? LIM_TIMEOUT_RCPT : LIM_TIMEOUT_DATA_INIT);
}

static void outcome_set(struct client_rcpt *r, enum client_outcome o, const char *why)
{
    if (r->outcome != CLIENT_NONE)
        return;
    r->outcome = o;
    snprintf(r->reply, sizeof(r->reply), "%s", why);
}

/* The transaction is over: the next one, or the message is done. */
static void client_txn_end(struct smtp_client *cl, bool need_rset)
{
    if (cl->body != NULL) {
        queue_body_close(cl->body);
        cl->body = NULL;
    }
    if (need_rset) {
        client_cmd(cl, "RSET");
        cl->st = ST_RSET;
        set_timeout(cl, LIM_TIMEOUT_GREETING);
        return;
    }
    struct client_msg *m = cl->m;
    if (cl->last < m->nrcpts) {
        cl->first = cl->last;
        client_txn_begin(cl);
        return;
    }
    cl->m = NULL;
    cl->nmessages++;
    cl->st = ST_IDLE;
    conn_set_timeout(cl->conn, (unsigned)cl->cfg->limits[LIM_TIMEOUT_GREETING]);
    m->peer_dsn = cl->caps.dsn;
    cl->in_callback = true;
    cl->cb.done(cl, m, cl->arg);
    cl->in_callback = false;
}

static void client_body_pump(struct smtp_client *cl);

static void client_txn_begin(struct smtp_client *cl)
{
    struct client_msg *m = cl->m;
    size_t max = cl->cfg->limits[LIM_RELAY_RECIPIENTS];
    cl->last = m->nrcpts - cl->first > max ? cl->first + max : m->nrcpts;
    cl->nsent = cl->ngot = cl->accepted = 0;
    cl->mail_failed = false;
    cl->data_refused_after_354 = false;
    for (size_t i = cl->first; i < cl->last; i++)
        cl->rcpt_ok[i] = false;

    /* What the peer cannot take is refused before anything is sent. */
    const char *refuse = NULL;
    char why[200];
    if (cl->caps.size_advertised && cl->caps.size_max > 0 && m->size > cl->caps.size_max) {
        snprintf(why, sizeof(why), "552 5.3.4 message size %llu exceeds the fixed "
                 "limit of %llu octets of the receiving server",
                 (unsigned long long)m->size, (unsigned long long)cl->caps.size_max);
        refuse = why;
    } else if (m->need_smtputf8 && !cl->caps.smtputf8) {
        refuse = "553 5.6.7 the receiving server does not support SMTPUTF8 and an "
                 "address of this message needs it (RFC 6531 3.4)";
    } else if (m->body_8bit && !cl->caps.eightbitmime) {
        refuse = "554 5.6.3 the message has 8-bit content, the receiving server "
                 "does not support 8BITMIME, and conversion to 7 bit is not "
                 "supported (RFC 6152 3)";
    }
    if (refuse != NULL) {
        for (size_t i = cl->first; i < cl->last; i++)
            outcome_set(&m->rcpts[i], CLIENT_PERM, refuse);
        client_txn_end(cl, false);
        return;
    }
    cl->st = ST_TXN;
    size_t n = txn_ncmds(cl);
    if (cl->caps.pipelining) {
        for (size_t k = 0; k < n; k++)
            txn_send_cmd(cl, k);
        cl->nsent = n;
    } else {
        txn_send_cmd(cl, 0);
        cl->nsent = 1;
    }
    txn_timeout(cl);
}

static void client_body_start(struct smtp_client *cl, bool dots)
{
    if (queue_body_open(cl->m->q, cl->m->id, &cl->body) < 0) {
        /* Cannot read our own copy: give up this connection's attempt; the
         * message is retried (and set aside by the queue if corrupt). */
        cl->body = NULL;
        client_fail(cl, CLIENT_TEMP, "4.3.0 cannot read the queued message", false);
        return;
    }
    dotstuff_init(&cl->ds, dots);
    cl->body_done = false;
    if (dots) {
        cl->st = ST_BODY;
        set_timeout(cl, LIM_TIMEOUT_DATA_BLOCK);
    }
    client_body_pump(cl);
}

/* DATA: writes body chunks while the output is below high water. BDAT:
 * sends one chunk and waits for its reply. */
static void client_body_pump(struct smtp_client *cl)
{
    size_t hw = cl->cfg->limits[LIM_OUTPUT_HIGH_WATER];
    char chunk[CLIENT_CHUNK / 2];
    for (;;) {
        if (cl->st == ST_BODY && conn_output_pending(cl->conn) >= hw) {
            conn_want_drained(cl->conn);
            return;
        }
        ssize_t n = queue_body_read(cl->body, chunk, sizeof(chunk));
        if (n < 0) {
            client_fail(cl, CLIENT_TEMP, "4.3.0 error reading the queued message", false);
            return;
        }
        buf_reset(&cl->wire);
        if (n > 0)
            (void)dotstuff_feed(&cl->ds, chunk, (size_t)n, &cl->wire);
        else
            (void)dotstuff_end(&cl->ds, &cl->wire);
        if (cl->st == ST_BODY) {
            conn_write(cl->conn, cl->wire.data != NULL ? cl->wire.data : "", cl->wire.len);
            if (n == 0) {
                cl->body_done = true;
                set_timeout(cl, LIM_TIMEOUT_DATA_DONE);
                conn_flush(cl->conn);
                return;
            }
            continue;
        }
        /* BDAT: one chunk per command; an empty last chunk is allowed. */
        cl->bdat_last = n == 0;
        client_cmd(cl, "BDAT %zu%s", cl->wire.len, cl->bdat_last ? " LAST" : "");
        if (cl->wire.len > 0)
            conn_write(cl->conn, cl->wire.data, cl->wire.len);
        cl->st = ST_BDAT;
        set_timeout(cl, cl->bdat_last ? LIM_TIMEOUT_DATA_DONE : LIM_TIMEOUT_DATA_BLOCK);
        conn_flush(cl->conn);
        return;
    }
}

/* The final reply of a transaction (the dot's, or BDAT LAST's). */
static void txn_final(struct smtp_client *cl, const struct smtp_reply *r, bool rset)
{
    char text[512];
    reply_text(r, text, sizeof(text));
    enum client_outcome o = r->code < 300 ? CLIENT_OK
                            : r->code < 500 ? CLIENT_TEMP : CLIENT_PERM;
    for (size_t i = cl->first; i < cl->last; i++)
        if (cl->rcpt_ok[i])
            outcome_set(&cl->m->rcpts[i], o, text);
    client_txn_end(cl, rset);
}

static void on_txn_reply(struct smtp_client *cl, const struct smtp_reply *r)
{
    struct client_msg *m = cl->m;
    size_t k = cl->ngot++;
    enum txn_cmd kind = txn_kind(cl, k);
    char text[512];
    reply_text(r, text, sizeof(text));
    enum client_outcome o = r->code < 400 ? CLIENT_OK
                            : r->code < 500 ? CLIENT_TEMP : CLIENT_PERM;
    if (kind == T_MAIL) {
        if (r->code >= 300) {
            cl->mail_failed = true;
            for (size_t i = cl->first; i < cl->last; i++)
                outcome_set(&m->rcpts[i], o, text);
        }
    } else if (kind == T_RCPT) {
        size_t i = cl->first + (k - 1);
        if (!cl->mail_failed) {
            if (r->code >= 200 && r->code < 300) {
                cl->rcpt_ok[i] = true;
                cl->accepted++;
            } else {
                outcome_set(&m->rcpts[i], r->code < 400 ? CLIENT_TEMP : o, text);
            }
        }
    } else { /* DATA */
        if (r->code == 354) {
            if (cl->mail_failed || cl->accepted == 0) {
                /* RFC 2920 3.1: DATA went out pipelined although nobody
                 * was accepted; end it at once with no content. */
                conn_write(cl->conn, ".\r\n", 3);
                cl->data_refused_after_354 = true;
                cl->st = ST_RSET; /* the dot's reply, then RSET's */
                set_timeout(cl, LIM_TIMEOUT_DATA_DONE);
                return;
            }
            client_body_start(cl, true);
            return;
        }
        if (!cl->mail_failed)
            for (size_t i = cl->first; i < cl->last; i++)
                if (cl->rcpt_ok[i])
                    outcome_set(&m->rcpts[i], r->code < 400 ? CLIENT_TEMP : o, text);
        client_txn_end(cl, true);
        return;
    }
    if (cl->ngot < cl->nsent) {
        txn_timeout(cl);   /* pipelined: more replies to come */
        return;
    }
    size_t n = txn_ncmds(cl);
    if (cl->mail_failed) {
        client_txn_end(cl, false);
        return;
    }
    bool rcpts_answered = cl->ngot >= 1 + (cl->last - cl->first);
    if (rcpts_answered && cl->accepted == 0) {
        client_txn_end(cl, true);
        return;
    }
    if (cl->ngot < n) {
        txn_send_cmd(cl, cl->nsent++);
        txn_timeout(cl);
        return;
    }
    client_body_start(cl, false);   /* CHUNKING: BDAT after the RCPTs */
}

/* ---- replies ---- */

/* A refused login is the configuration's problem, not the message's:
 * deferred, with the smarthost's words. */
static void client_auth_failed(struct smtp_client *cl, const char *reply)
{
    char why[600];
    snprintf(why, sizeof(why), "authentication to the smarthost failed: %s", reply);
    client_fail(cl, CLIENT_TEMP, why, false);
}

static void on_reply(struct smtp_client *cl, const struct smtp_reply *r)
{
    char text[512];
    reply_text(r, text, sizeof(text));
    if (r->code == 421 && cl->st != ST_QUIT) {
        /* RFC 5321 3.8: the server is closing; everything is temporary. */
        client_fail(cl, CLIENT_TEMP, text, false);
        return;
    }
    switch (cl->st) {
    case ST_GREETING:
        if (r->code != 220) {
            client_fail(cl, CLIENT_TEMP, text, false);
            return;
        }
        client_ehlo(cl);
        return;
    case ST_EHLO:
        if (r->code == 250) {
            smtp_ehlo_parse(r, &cl->caps);
            client_after_hello(cl);
        } else if (r->code >= 500 && !conn_tls_active(cl->conn)) {
            memset(&cl->caps, 0, sizeof(cl->caps));
            client_cmd(cl, "HELO %s", cl->cfg->hostname);
            cl->st = ST_HELO;
        } else {
            client_fail(cl, CLIENT_TEMP, text, false);
        }
        return;
    case ST_HELO:
        if (r->code != 250) {
            client_fail(cl, CLIENT_TEMP, text, false);
            return;
        }
        client_after_hello(cl);
        return;
    case ST_STARTTLS:
        if (r->code == 220) {
            cl->st = ST_HANDSHAKE;
            set_timeout(cl, LIM_TIMEOUT_TLS);
            bool literal = cl->host[0] == '[';
            conn_start_tls_client(cl->conn, cl->p.tls, literal ? NULL : cl->host,
                                  literal ? NULL : cl->host);
            return;
        }
        if (cl->p.policy == TLS_POLICY_MAY) {
            /* RFC 3207 4: the client may go on without TLS. */
            cl->p.no_tls = true;
            if (cl->auth_user != NULL)
                client_auth(cl);
            else
                client_ready(cl);
            return;
        }
        client_fail(cl, CLIENT_TEMP, text, false);
        return;
    case ST_AUTH:
        if (r->code == 235) {
            client_ready(cl);
        } else if (r->code == 334 && strstr(cl->caps.auth_mechs, "PLAIN") == NULL) {
            struct buf b;
            buf_init(&b, 2048);
            sasl_b64_encode((const unsigned char *)cl->auth_user,
                            strlen(cl->auth_user), &b);
            client_cmd(cl, "%s", buf_cstr(&b));
            buf_free(&b);
            cl->st = ST_AUTH_USER;
        } else {
            client_auth_failed(cl, text);
        }
        return;
    case ST_AUTH_USER:
        if (r->code == 334) {
            struct buf b;
            buf_init(&b, 2048);
            sasl_b64_encode((const unsigned char *)cl->password, strlen(cl->password), &b);
            client_cmd(cl, "%s", buf_cstr(&b));
            explicit_bzero(b.data != NULL ? b.data : (char[1]){0}, b.len);
            buf_free(&b);
            cl->st = ST_AUTH_PASS;
            return;
        }
        client_fail(cl, CLIENT_TEMP, text, false);
        return;
    case ST_AUTH_PASS:
        if (r->code == 235) {
            client_ready(cl);
            return;
        }
        client_auth_failed(cl, text);
        return;
    case ST_TXN:
        on_txn_reply(cl, r);
        return;
    case ST_BODY:
        if (!cl->body_done) {
            client_fail(cl, CLIENT_TEMP, text, false);
            return;
        }
        txn_final(cl, r, false);
        return;
    case ST_BDAT:
        if (cl->bdat_last || r->code >= 300) {
            /* RFC 3030 2: a failed chunk ends the transaction; RSET makes
             * sure the server has dropped what it got. */
            txn_final(cl, r, !cl->bdat_last);
            return;
        }
        client_body_pump(cl);
        return;
    case ST_RSET:
        if (cl->data_refused_after_354) {
            cl->data_refused_after_354 = false;
            client_txn_end(cl, true);
            return;
        }
        if (r->code != 250) {
            client_fail(cl, CLIENT_TEMP, text, false);
            return;
        }
        client_txn_end(cl, false);
        return;
    case ST_QUIT:
        conn_close_after_flush(cl->conn, (unsigned)cl->cfg->limits[LIM_TIMEOUT_CLOSE]);
        cl->st = ST_CLOSED;
        return;
    case ST_IDLE:
    case ST_HANDSHAKE:
    case ST_CLOSED:
        break;
    }
    char why[600];
    snprintf(why, sizeof(why), "unexpected reply from the server: %s", text);
    client_fail(cl, CLIENT_TEMP, why, false);
}

static void client_closed_cb(struct smtp_client *cl, enum client_outcome how,
                             const char *reason, bool tls_failed)
{
    if (cl->closed_called)
        return;
    cl->closed_called = true;
    struct client_msg *m = cl->m;
    cl->m = NULL;
    if (cl->body != NULL) {
        queue_body_close(cl->body);
        cl->body = NULL;
    }
    cl->st = ST_CLOSED;
    cl->in_callback = true;
    if (m != NULL) {
        for (size_t i = 0; i < m->nrcpts; i++)
            if (m->rcpts[i].outcome == CLIENT_NONE)
                outcome_set(&m->rcpts[i], CLIENT_TEMP, reason);
        m->peer_dsn = cl->caps.dsn;
        cl->cb.done(cl, m, cl->arg);
    }
    cl->cb.closed(cl, how, reason, tls_failed, cl->arg);
    cl->in_callback = false;
}

/* Ends the session with a failure: the rest of the message (if any) gets
 * `how`, and the connection is dropped (QUIT is sent when the session is
 * still in step, as RFC 5321 4.1.1.10 wants). */
static void client_fail(struct smtp_client *cl, enum client_outcome how,
                        const char *reason, bool tls_failed)
{
    if (cl->st == ST_CLOSED || cl->closed_called)
        return;
    log_kv(LOG_INFO, "relay.session_failed", "peer", cl->addr, "host", cl->host,
           "reason", reason, NULL);
    bool polite = cl->st != ST_BODY && cl->st != ST_HANDSHAKE && cl->st != ST_BDAT &&
                  !conn_eof(cl->conn);
    if (cl->m != NULL)
        for (size_t i = 0; i < cl->m->nrcpts; i++)
            outcome_set(&cl->m->rcpts[i], how, reason);
    cl->st = ST_CLOSED;
    if (polite) {
        conn_write(cl->conn, "QUIT\r\n", 6);
        conn_close_after_flush(cl->conn, (unsigned)cl->cfg->limits[LIM_TIMEOUT_CLOSE]);
    } else {
        conn_abort(cl->conn);
    }
    client_closed_cb(cl, how, reason, tls_failed);
}

static void client_on_event_inner(struct conn *c, enum conn_event ev,
                                  struct smtp_client *cl);

/* Commands are queued by the handlers and written once per event, so a
 * pipelined group goes out in one write. */
static void client_on_event(struct conn *c, enum conn_event ev, void *arg)
{
    struct smtp_client *cl = arg;
    client_on_event_inner(c, ev, cl);
    if (!cl->closed_called && ev != CONN_EV_CLOSED)
        conn_flush(c);
}

static void client_on_event_inner(struct conn *c, enum conn_event ev,
                                  struct smtp_client *cl)
{
    switch (ev) {
    case CONN_EV_INPUT: {
        struct buf *in = conn_input(c);
        while (cl->st != ST_CLOSED && in->len > 0) {
            struct smtp_reply r;
            const char *err = NULL;
            size_t used = 0;
            enum smtp_reply_status st = smtp_reply_parse(&cl->rp, in->data, in->len,
                                                         &used, &r, &err);
            buf_consume(in, used);
            if (st == SMTP_REPLY_MORE)
                break;
            if (st == SMTP_REPLY_BAD) {
                char why[200];
                snprintf(why, sizeof(why), "4.5.0 malformed reply from the server (%s)",
                         err != NULL ? err : "?");
                client_fail(cl, CLIENT_TEMP, why, false);
                return;
            }
            if (cl->st == ST_HANDSHAKE || cl->st == ST_IDLE) {
                /* Nothing was asked: a server talking out of turn (or a
                 * 421 while idle). */
                char text[512], why[600];
                reply_text(&r, text, sizeof(text));
                smtp_reply_clear(&r);
                snprintf(why, sizeof(why), "unsolicited reply from the server: %s", text);
                client_fail(cl, CLIENT_TEMP, why, false);
                return;
            }
            on_reply(cl, &r);
            smtp_reply_clear(&r);
        }
        if (cl->st != ST_CLOSED && conn_eof(c)) {
            client_fail(cl, CLIENT_TEMP, "4.4.2 connection closed by the server", false);
        }
        return;
    }
    case CONN_EV_TLS_READY: {
        const char *why = NULL;
        bool verified = conn_tls_verified(c, &why);
        log_kv(LOG_INFO, "relay.tls", "peer", cl->addr, "host", cl->host,
               "version", conn_tls_version(c), "cipher", conn_tls_cipher(c),
               "verified", verified ? "yes" : "no",
               "verify_error", verified ? "" : why, NULL);
        if (cl->p.policy == TLS_POLICY_VERIFY && !verified) {
            char text[300];
            snprintf(text, sizeof(text), "4.7.5 certificate of %s not verified: %s",
                     cl->host, why);
            client_fail(cl, CLIENT_TEMP, text, false);
            return;
        }
        memset(&cl->caps, 0, sizeof(cl->caps));
        client_ehlo(cl);
        return;
    }
    case CONN_EV_DRAINED:
        if (cl->st == ST_BODY && !cl->body_done) {
            set_timeout(cl, LIM_TIMEOUT_DATA_BLOCK);
            client_body_pump(cl);
        }
        return;
    case CONN_EV_TIMEOUT: {
        static const char *const what[] = {
            [ST_GREETING] = "the greeting", [ST_EHLO] = "the EHLO reply",
            [ST_HELO] = "the HELO reply", [ST_STARTTLS] = "the STARTTLS reply",
            [ST_HANDSHAKE] = "the TLS handshake", [ST_AUTH] = "the AUTH reply",
            [ST_AUTH_USER] = "the AUTH reply", [ST_AUTH_PASS] = "the AUTH reply",
            [ST_IDLE] = "a command", [ST_TXN] = "a MAIL, RCPT or DATA reply",
            [ST_BODY] = "the end of data reply", [ST_BDAT] = "a BDAT reply",
            [ST_RSET] = "the RSET reply", [ST_QUIT] = "the QUIT reply",
            [ST_CLOSED] = "nothing"};
        char why[200];
        snprintf(why, sizeof(why), "4.4.2 timeout waiting for %s", what[cl->st]);
        if (cl->st == ST_IDLE) {
            client_quit(cl);
            return;
        }
        client_fail(cl, CLIENT_TEMP, why, false);
        return;
    }
    case CONN_EV_CLOSED:
        /* st is ST_CLOSED when client_fail is closing the connection
         * itself (the event can come from inside conn_abort): it reports
         * its own reason. */
        if (!cl->closed_called && cl->st != ST_CLOSED) {
            bool tls = cl->st == ST_HANDSHAKE;
            client_closed_cb(cl, CLIENT_TEMP,
                             tls ? "4.7.5 TLS handshake failed"
                             : cl->st == ST_QUIT ? "closed after QUIT"
                             : "4.4.2 connection lost", tls);
        }
        return;
    }
}

struct smtp_client *client_new(struct event_base *base, int fd,
                               const struct client_params *p,
                               const struct client_cb *cb, void *arg)
{
    struct smtp_client *cl = xcalloc(1, sizeof(*cl));
    cl->p = *p;
    cl->cfg = p->cfg;
    cl->host = xstrdup(p->host);
    cl->addr = xstrdup(p->addr);
    cl->auth_user = p->auth_user != NULL ? xstrdup(p->auth_user) : NULL;
    cl->password = p->password != NULL ? xstrdup(p->password) : NULL;
    cl->p.host = cl->host;
    cl->p.addr = cl->addr;
    cl->cb = *cb;
    cl->arg = arg;
    struct smtp_reply_limits lim = {
        .line_max = p->cfg->limits[LIM_SMTP_REPLY_LINE],
        .lines_max = p->cfg->limits[LIM_SMTP_REPLY_LINES],
        .size_max = p->cfg->limits[LIM_SMTP_REPLY_SIZE],
    };
    smtp_reply_parser_init(&cl->rp, &lim);
    buf_init(&cl->wire, 2 * CLIENT_CHUNK + 16);
    /* Input: a reply at most; output: a pipelined group or body chunks. */
    size_t in_max = p->cfg->limits[LIM_SMTP_REPLY_SIZE] + p->cfg->limits[LIM_SMTP_REPLY_LINE];
    cl->conn = conn_new(base, fd, in_max, p->cfg->limits[LIM_OUTPUT_HIGH_WATER],
                        client_on_event, cl);
    cl->kick = evtimer_new(base, client_on_kick, cl);
    cl->st = ST_GREETING;
    set_timeout(cl, LIM_TIMEOUT_GREETING);
    return cl;
}

void client_send(struct smtp_client *cl, struct client_msg *m)
{
    if (cl->st != ST_IDLE || cl->m != NULL)
        abort(); /* the relay's bug: one message at a time, only when ready */
    cl->m = m;
    cl->first = 0;
    free(cl->rcpt_ok);
    cl->rcpt_ok = xcalloc(m->nrcpts ? m->nrcpts : 1, sizeof(*cl->rcpt_ok));
    for (size_t i = 0; i < m->nrcpts; i++) {
        m->rcpts[i].outcome = CLIENT_NONE;
        m->rcpts[i].reply[0] = '\0';
        if (!is_ascii(m->rcpts[i].address))
            m->need_smtputf8 = true;
    }
    if (!is_ascii(m->sender))
        m->need_smtputf8 = true;
    /* From the loop, so no callback is made inside client_send. */
    static const struct timeval now = {0, 0};
    evtimer_add(cl->kick, &now);
}

static void client_on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct smtp_client *cl = arg;
    if (cl->st != ST_IDLE || cl->m == NULL)
        return;
    client_txn_begin(cl);
    if (!cl->closed_called)
        conn_flush(cl->conn);
}

void client_quit(struct smtp_client *cl)
{
    if (cl->st == ST_CLOSED || cl->st == ST_QUIT)
        return;
    client_cmd(cl, "QUIT");
    cl->st = ST_QUIT;
    conn_set_timeout(cl->conn, (unsigned)cl->cfg->limits[LIM_TIMEOUT_CLOSE]);
    conn_flush(cl->conn);
}

void client_free(struct smtp_client *cl)
{
    if (cl == NULL)
        return;
    if (cl->body != NULL)
        queue_body_close(cl->body);
    event_free(cl->kick);
    conn_free(cl->conn);
    smtp_reply_parser_free(&cl->rp);
    buf_free(&cl->wire);
    free(cl->rcpt_ok);
    free(cl->host);
    free(cl->addr);
    free(cl->auth_user);
    if (cl->password != NULL) {
        explicit_bzero(cl->password, strlen(cl->password));
        free(cl->password);
    }
    free(cl);
}

bool client_tls_active(const struct smtp_client *cl)
{
    return conn_tls_active(cl->conn);
}

bool client_closed(const struct smtp_client *cl)
{
    return cl->closed_called;
}

size_t client_messages(const struct smtp_client *cl)
{
    return cl->nmessages;
}
