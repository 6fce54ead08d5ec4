/*
 * auth.c: SMTP AUTH (RFC 4954) on the submission listeners, driving the
 * pure SASL exchanges of proto/sasl.h. Replies: doc/smtp.md.
 *
 * Password checks (argon2id: tens of milliseconds and 64 MiB on purpose)
 * never run on the event loop: the session pauses in SS_AUTH_WAIT and the
 * check runs on the auth worker thread (io/batch). A failed login is
 * answered only after auth-delay seconds, still paused, and is counted per
 * client address; past auth-failures the address gets 454 for
 * auth-lockout seconds whatever it sends (security.md 7). An unknown user
 * costs the same check against a dummy hash, so timing does not tell
 * whether a user exists.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "conf/users.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "smtpd/session.h"

static bool auth_plain_ok(const struct session *s)
{
    return conn_tls_active(s->conn) || config_plaintext_peer(s->cfg, s->peer);
}

static bool auth_offered_role(const struct session *s)
{
    return s->role == ROLE_SUBMISSION || s->role == ROLE_SUBMISSIONS;
}

const char *auth_mechanisms_offered(const struct session *s, char *buf, size_t cap)
{
    buf[0] = '\0';
    if (!auth_offered_role(s) || s->authenticated)
        return buf;
    sasl_mech_list(s->cfg->auth_mechs, auth_plain_ok(s), buf, cap);
    return buf;
}

static int auth_lookup(void *arg, const char *authcid, struct sasl_creds *creds_r)
{
    const struct session *s = arg;
    const struct cfg_user *u = config_user(s->cfg, authcid, strlen(authcid));
    if (u == NULL)
        return -1;
    return users_sasl_creds(u, creds_r);
}

static void auth_end(struct session *s)
{
    smtp_line_init(&s->lr, session_limit(s, LIM_SMTP_COMMAND_LINE));
    sasl_server_free(s->sasl);
    s->sasl = NULL;
    s->sasl_final = false;
    if (s->state == SS_AUTH || s->state == SS_AUTH_WAIT)
        s->state = SS_CMD;
}

void auth_abort(struct session *s)
{
    auth_end(s);
}

static void auth_success(struct session *s)
{
    const char *user = sasl_server_user(s->sasl);
    s->authenticated = true;
    snprintf(s->auth_user, sizeof(s->auth_user), "%s", user);
    for (char *p = s->auth_user; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    smtpd_auth_succeeded(s->srv, s);
    log_kv(LOG_INFO, "smtp.auth_ok", "sid", s->sid, "client", s->peer, "user",
           s->auth_user, NULL);
    auth_end(s);
    session_reply(s, 235, "2.7.0", "Authentication successful");
}

static void auth_on_delay(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct session *s = arg;
    smtpd_session_enter(s);
    if (s->state == SS_AUTH_WAIT) {
        auth_end(s);
        session_reply(s, 535, "5.7.8", "Authentication credentials invalid");
        conn_resume(s->conn);
        conn_flush(s->conn);
    }
    smtpd_session_leave(s);
}

/* A failed login: counted now, answered after auth-delay. */
static void auth_failure(struct session *s)
{
    smtpd_auth_failed(s->srv, s);
    log_kv(LOG_WARN, "smtp.auth_failed", "sid", s->sid, "client", s->peer, "user",
           s->sasl ? sasl_server_user(s->sasl) : NULL, NULL);
    size_t delay = session_limit(s, LIM_AUTH_DELAY);
    if (delay == 0) {
        auth_end(s);
        session_reply(s, 535, "5.7.8", "Authentication credentials invalid");
        return;
    }
    s->state = SS_AUTH_WAIT;
    conn_pause(s->conn);
    if (s->auth_timer == NULL)
        s->auth_timer = evtimer_new(smtpd_base(s->srv), auth_on_delay, s);
    struct timeval tv = {.tv_sec = (time_t)delay, .tv_usec = 0};
    evtimer_add(s->auth_timer, &tv);
}

static void auth_reply_step(struct session *s, enum sasl_step st, struct buf *out)
{
    switch (st) {
    case SASL_CONTINUE:
        /* RFC 4954 4: client responses may be up to 12288 octets. */
        if (s->state != SS_AUTH)
            smtp_line_init(&s->lr, SASL_LINE_MAX + 2);
        s->state = SS_AUTH;
        conn_printf(s->conn, "334 %s\r\n", buf_cstr(out));
        break;
    case SASL_CHECK_PASSWORD:
        s->state = SS_AUTH_WAIT;
        conn_pause(s->conn);
        smtpd_submit_auth(s->srv, s);
        break;
    case SASL_OK:
        if (out->len > 0) {
            /* RFC 4954 4: additional data with success goes in a 334
             * challenge answered by an empty line, then 235. */
            s->state = SS_AUTH;
            s->sasl_final = true;
            conn_printf(s->conn, "334 %s\r\n", buf_cstr(out));
        } else {
            auth_success(s);
        }
        break;
    case SASL_FAIL:
    case SASL_AUTHZ_DENIED:
        auth_failure(s);
        break;
    case SASL_BAD_SYNTAX:
        auth_end(s);
        session_reply(s, 501, "5.5.2", "Cannot decode response");
        break;
    case SASL_CANCELLED:
        auth_end(s);
        session_reply(s, 501, "5.7.0", "Authentication cancelled");
        break;
    }
}

void auth_begin(struct session *s, const struct smtp_cmd *cmd)
{
    if (!auth_offered_role(s)) {
        session_reply(s, 503, "5.5.1", "Error: authentication not enabled");
        return;
    }
    if (!s->helo_seen || !s->esmtp) {
        session_reply(s, 503, "5.5.1", "Error: send EHLO first");
        return;
    }
    if (s->authenticated) {
        session_reply(s, 503, "5.5.1", "Error: already authenticated");
        return;
    }
    if (s->in_tx) {
        session_reply(s, 503, "5.5.1", "Error: AUTH not allowed during a mail transaction");
        return;
    }
    if (cmd->arg == NULL) {
        session_reply(s, 501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
        return;
    }
    const char *sp = memchr(cmd->arg, ' ', cmd->arg_len);
    size_t mlen = sp ? (size_t)(sp - cmd->arg) : cmd->arg_len;
    int mech = sasl_mech_lookup(cmd->arg, mlen);
    if (mech < 0 || mech == SASL_MECH_DIGEST_MD5 ||
        !(s->cfg->auth_mechs & (1u << mech))) {
        session_reply(s, 504, "5.5.4", "Unrecognized authentication type");
        return;
    }
    if (sasl_mech_plaintext((enum sasl_mech)mech) && !auth_plain_ok(s)) {
        session_reply(s, 538, "5.7.11",
                      "Encryption required for requested authentication mechanism");
        return;
    }
    if (smtpd_auth_locked(s->srv, s)) {
        log_kv(LOG_WARN, "smtp.auth_locked", "sid", s->sid, "client", s->peer, NULL);
        session_reply(s, 454, "4.7.0",
                      "Temporary authentication failure: too many failures, try later");
        return;
    }
    s->sasl = sasl_server_new((enum sasl_mech)mech, s->cfg->hostname, auth_lookup, s);
    if (s->sasl == NULL) {
        session_reply(s, 454, "4.7.0", "Temporary authentication failure");
        return;
    }
    struct buf out;
    buf_init(&out, SASL_LINE_MAX * 2);
    enum sasl_step st;
    if (sp != NULL) {
        const char *ir = sp + 1;
        size_t irlen = cmd->arg_len - mlen - 1;
        st = sasl_server_step(s->sasl, ir, irlen, &out);
    } else {
        st = sasl_server_step(s->sasl, NULL, 0, &out);
    }
    auth_reply_step(s, st, &out);
    buf_free(&out);
}

void auth_line(struct session *s, const char *line, size_t len)
{
    if (s->sasl_final) {
        /* Only an empty line (or a cancel) may answer the final data. */
        if (len == 1 && line[0] == '*') {
            auth_end(s);
            session_reply(s, 501, "5.7.0", "Authentication cancelled");
        } else if (len == 0) {
            auth_success(s);
        } else {
            auth_end(s);
            session_reply(s, 501, "5.5.2", "Cannot decode response");
        }
        return;
    }
    struct buf out;
    buf_init(&out, SASL_LINE_MAX * 2);
    enum sasl_step st = sasl_server_step(s->sasl, line, len, &out);
    auth_reply_step(s, st, &out);
    buf_free(&out);
}

/* Worker thread: one password check per job. Reads only the session's SASL
 * state and configuration, which the loop does not touch while paused. */
void auth_check_password(struct batch_job *job)
{
    struct session *s = job->arg;
    job->result = users_check_login(s->cfg, sasl_server_user(s->sasl),
                                    sasl_server_password(s->sasl));
}

void auth_checked(struct session *s, int ok)
{
    if (s->state != SS_AUTH_WAIT || s->sasl == NULL)
        return;
    s->state = SS_AUTH;
    enum sasl_step st = sasl_server_checked(s->sasl, ok != 0);
    struct buf out;
    buf_init(&out, 64);
    auth_reply_step(s, st, &out);
    buf_free(&out);
    if (s->state != SS_AUTH_WAIT && !s->conn_gone)
        conn_resume(s->conn);
}

void auth_session_free(struct session *s)
{
    sasl_server_free(s->sasl);
    s->sasl = NULL;
    if (s->auth_timer != NULL)
        event_free(s->auth_timer);
    s->auth_timer = NULL;
}
