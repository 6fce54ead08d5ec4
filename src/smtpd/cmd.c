/*
 * cmd.c: the SMTP commands other than DATA and BDAT. Each command first
 * checks state and arguments and replies on error, then does its work
 * (OpenSMTPD's smtp_check_<cmd> / smtp_proceed_<cmd> split, kept inside one
 * function each because the checks are short). Replies: doc/smtp.md.
 *
 * RCPT's quota check reads the user's mailbox indexes, which can block:
 * it runs on the quota worker (smtpd.c) while the session is paused in
 * SS_RCPT_WAIT, and the reply is written when the answer comes back.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "deliver/resolve.h"
#include "store/mailbox.h"
#include "store/store.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "smtpd/session.h"

static bool cmd_starttls_offered(const struct session *s)
{
    return (s->role == ROLE_MX || s->role == ROLE_SUBMISSION) &&
           smtpd_tls(s->srv) != NULL && !conn_tls_active(s->conn);
}

/* Authenticated users and local programs may send to any domain. */
bool cmd_may_submit(const struct session *s)
{
    return s->authenticated;
}

static void cmd_starttls(struct session *s, const struct smtp_cmd *cmd)
{
    if (conn_tls_active(s->conn)) {
        session_reply(s, 503, "5.5.1", "Error: TLS already active");
        return;
    }
    if (!cmd_starttls_offered(s)) {
        session_reply(s, 502, "5.5.1", "Error: command not implemented");
        return;
    }
    if (cmd->arg != NULL) {
        session_reply(s, 501, "5.5.4", "Syntax: STARTTLS");
        return;
    }
    conn_printf(s->conn, "220 2.0.0 Ready to start TLS\r\n");
    /* Everything after this line in the input buffer is plaintext the
     * client sent before the handshake: conn_start_tls discards it. */
    s->state = SS_TLS;
    conn_set_timeout(s->conn, (unsigned)session_limit(s, LIM_TIMEOUT_TLS));
    conn_start_tls(s->conn, smtpd_tls(s->srv));
}

void cmd_tls_ready(struct session *s)
{
    if (s->state != SS_TLS)
        return;
    /* RFC 3207 4.2: forget everything learnt before TLS. */
    session_reset_tx(s);
    s->helo_seen = false;
    s->esmtp = false;
    s->helo[0] = '\0';
    if (!s->local) {
        s->authenticated = false;
        s->auth_user[0] = '\0';
    }
    s->state = SS_CMD;
    smtp_line_init(&s->lr, session_limit(s, LIM_SMTP_COMMAND_LINE));
    log_kv(LOG_INFO, "smtp.tls", "sid", s->sid, "version",
           conn_tls_version(s->conn), "cipher", conn_tls_cipher(s->conn), NULL);
    if (!s->greeted)
        smtpd_greet(s);
    else
        conn_set_timeout(s->conn, (unsigned)session_limit(s, LIM_TIMEOUT_COMMAND));
}

/* May the logged-in user use this envelope sender (RFC 6409 6.1)? Its own
 * address, a subaddress of it, or an alias whose expansion reaches it. */
static bool cmd_sender_owned(const struct session *s, const struct smtp_addr *from)
{
    if (s->local || !s->cfg->sender_login_match)
        return true;
    if (from->null)
        return false;
    struct resolve_result rr;
    enum resolve_status st = resolve_address(s->cfg, from->local, strlen(from->local),
                                             from->domain, strlen(from->domain), &rr);
    bool owned = false;
    for (size_t i = 0; st == RESOLVE_OK && i < rr.nmailboxes; i++)
        if (strcasecmp(rr.mailboxes[i], s->auth_user) == 0)
            owned = true;
    resolve_result_free(&rr);
    return owned;
}

static bool cmd_etrn_allowed(const struct session *s);

static void cmd_helo(struct session *s, const struct smtp_cmd *cmd, bool esmtp)
{
    if (cmd->arg == NULL || cmd->arg_len == 0 ||
        !smtp_helo_valid(cmd->arg, cmd->arg_len) ||
        cmd->arg_len >= sizeof(s->helo)) {
        session_reply(s, 501, "5.5.4", "Syntax: %s hostname",
                      esmtp ? "EHLO" : "HELO");
        return;
    }
    /* RFC 5321 4.1.4: EHLO/HELO in a session resets any transaction. */
    session_reset_tx(s);
    memcpy(s->helo, cmd->arg, cmd->arg_len);
    s->helo[cmd->arg_len] = '\0';
    s->helo_seen = true;
    s->esmtp = esmtp;
    const char *host = s->cfg->hostname;
    if (!esmtp) {
        conn_printf(s->conn, "250 %s\r\n", host);
        return;
    }
    char mechs[128];
    auth_mechanisms_offered(s, mechs, sizeof(mechs));
    conn_printf(s->conn,
                "250-%s Hello %s\r\n"
                "250-PIPELINING\r\n"
                "250-SIZE %zu\r\n"
                "250-8BITMIME\r\n"
                "250-ENHANCEDSTATUSCODES\r\n"
                "250-SMTPUTF8\r\n"
                "250-CHUNKING\r\n",
                host, s->helo, session_limit(s, LIM_MESSAGE_SIZE));
    if (cmd_starttls_offered(s))
        conn_printf(s->conn, "250-STARTTLS\r\n");
    if (mechs[0] != '\0')
        conn_printf(s->conn, "250-AUTH %s\r\n", mechs);
    if (mechs[0] != '\0' || cmd_etrn_allowed(s))
        conn_printf(s->conn, "250-ETRN\r\n");
    conn_printf(s->conn, "250 DSN\r\n");
}

static void cmd_mail(struct session *s, const struct smtp_cmd *cmd)
{
    if (!s->helo_seen) {
        session_reply(s, 503, "5.5.1", "Error: send HELO/EHLO first");
        return;
    }
    if (s->in_tx) {
        session_reply(s, 503, "5.5.1", "Error: nested MAIL command");
        return;
    }
    if (cmd->arg == NULL) {
        session_reply(s, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
        return;
    }
    if ((s->role == ROLE_SUBMISSION || s->role == ROLE_SUBMISSIONS) &&
        !s->authenticated) {
        session_reply(s, 530, "5.7.0", "Authentication required");
        return;
    }
    struct smtp_parse_opts opts = {
        .esmtp = s->esmtp,
        .smtputf8 = true,
        .dsn = true,
        .binarymime = false,
        .max_size = session_limit(s, LIM_MESSAGE_SIZE),
    };
    const struct smtp_status *err =
        smtp_parse_mail(cmd->arg, cmd->arg_len, &opts, &s->mail);
    if (err != NULL) {
        memset(&s->mail, 0, sizeof(s->mail));
        session_reply_status(s, err);
        return;
    }
    if (smtp_addr_format(&s->mail.from, s->sender, sizeof(s->sender)) < 0) {
        memset(&s->mail, 0, sizeof(s->mail));
        session_reply(s, 553, "5.1.7", "Error: sender address too long");
        return;
    }
    if (s->authenticated && !cmd_sender_owned(s, &s->mail.from)) {
        session_reply(s, 553, "5.7.1",
                      "<%s>: Sender address rejected: not owned by user %s",
                      s->sender, s->auth_user);
        memset(&s->mail, 0, sizeof(s->mail));
        s->sender[0] = '\0';
        return;
    }
    s->in_tx = true;
    s->nrcpts = 0;
    log_kv(LOG_DEBUG, "smtp.mail", "sid", s->sid, "from", s->sender, NULL);
    session_reply(s, 250, "2.1.0", "Ok");
}

/* Maps a resolver verdict to a reply; returns true if the recipient is accepted. */
static bool cmd_rcpt_verdict(struct session *s, enum resolve_status st,
                             const char *addr)
{
    switch (st) {
    case RESOLVE_OK:
        return true;
    case RESOLVE_NOT_LOCAL:
    case RESOLVE_ROUTING:
        session_reply(s, 554, "5.7.1", "<%s>: Relay access denied", addr);
        return false;
    case RESOLVE_UNKNOWN_USER:
        session_reply(s, 550, "5.1.1",
                      "<%s>: Recipient address rejected: User unknown", addr);
        return false;
    case RESOLVE_LOOP:
        session_reply(s, 550, "5.4.6",
                      "<%s>: Recipient address rejected: alias loop", addr);
        return false;
    case RESOLVE_TOO_MANY:
        session_reply(s, 552, "5.5.3",
                      "<%s>: too many recipients after expansion", addr);
        return false;
    }
    return false;
}

/* Whether one more message (of the size MAIL FROM announced) fits. */
static bool cmd_quota_fits(const struct session *s, uint64_t bytes,
                           uint64_t msgs)
{
    return store_quota_fits(bytes, msgs, s->cfg->quota_bytes,
                            s->cfg->quota_messages,
                            s->mail.size_given ? s->mail.size : 0);
}

/* An accepted recipient counts in the cached usage until it expires. */
static void cmd_quota_charge(struct session *s, const char *mailbox)
{
    smtpd_quota_charge(s->srv, mailbox, s->mail.size_given ? s->mail.size : 0);
}

/* The reply to RCPT once everything is known, and the recipient kept. */
static void cmd_rcpt_finish(struct session *s, enum resolve_status st,
                            const struct session_rcpt *r, bool over_quota)
{
    const char *addr = r->address;
    if (over_quota) {
        log_kv(LOG_INFO, "smtp.rcpt", "sid", s->sid, "from", s->sender, "to", addr,
               "result", "over-quota", NULL);
        if (s->cfg->quota_permanent)
            session_reply(s, 552, "5.2.2", "<%s>: Mailbox full", addr);
        else
            session_reply(s, 452, "4.2.2", "<%s>: Mailbox full, try again later", addr);
        return;
    }
    log_kv(LOG_INFO, "smtp.rcpt", "sid", s->sid, "from", s->sender, "to", addr,
           "result", resolve_status_name(st), NULL);
    if (!cmd_rcpt_verdict(s, st, addr))
        return;
    if (s->nrcpts == s->rcpts_alloc) {
        size_t n = s->rcpts_alloc ? s->rcpts_alloc * 2 : 8;
        s->rcpts = xreallocarray(s->rcpts, n, sizeof(*s->rcpts));
        s->rcpts_alloc = n;
    }
    s->rcpts[s->nrcpts++] = *r;
    session_reply(s, 250, "2.1.5", "Ok");
}

static void cmd_rcpt(struct session *s, const struct smtp_cmd *cmd)
{
    if (!s->in_tx) {
        session_reply(s, 503, "5.5.1", "Error: need MAIL command");
        return;
    }
    if (cmd->arg == NULL) {
        session_reply(s, 501, "5.5.4", "Syntax: RCPT TO:<address>");
        return;
    }
    struct smtp_parse_opts opts = {
        .esmtp = s->esmtp,
        .smtputf8 = s->mail.smtputf8,
        .dsn = true,
        .binarymime = false,
        .max_size = 0,
    };
    struct smtp_rcpt_args r;
    const struct smtp_status *err = smtp_parse_rcpt(cmd->arg, cmd->arg_len, &opts, &r);
    if (err != NULL) {
        session_reply_status(s, err);
        return;
    }
    if (s->nrcpts >= session_limit(s, LIM_SMTP_RECIPIENTS)) {
        session_reply(s, 452, "4.5.3", "Error: too many recipients");
        return;
    }
    /* "<Postmaster>" without a domain (RFC 5321 4.5.1) reaches the
     * postmaster of our first domain. */
    if (r.to.postmaster) {
        if (s->cfg->ndomains == 0) {
            session_reply(s, 550, "5.1.1", "<postmaster>: no local domain");
            return;
        }
        snprintf(r.to.local, sizeof(r.to.local), "postmaster");
        snprintf(r.to.domain, sizeof(r.to.domain), "%s", s->cfg->domains[0].name);
        r.to.postmaster = false; /* now an ordinary postmaster@domain */
    }
    struct session_rcpt sr = {.notify = r.notify};
    if (smtp_addr_format(&r.to, sr.address, sizeof(sr.address)) < 0) {
        session_reply(s, 553, "5.1.3", "Error: recipient address too long");
        return;
    }
    snprintf(sr.orcpt, sizeof(sr.orcpt), "%s", r.orcpt);
    /* RFC 5321 4.1.1.3 lets us decline the relaying a source route
     * implies. Address literals resolve like names: they are ours only if
     * configured as a domain. */
    enum resolve_status st = RESOLVE_NOT_LOCAL;
    char mailbox[SESSION_ADDR_MAX] = "";
    if (!r.to.source_route) {
        struct resolve_result rr;
        st = resolve_address(s->cfg, r.to.local, strlen(r.to.local),
                             r.to.domain, strlen(r.to.domain), &rr);
        /* A single mailbox that is full refuses now (a list delivers to
         * the members that have room and retries the others). */
        if (st == RESOLVE_OK && rr.nmailboxes == 1 && rr.nremote == 0 &&
            (s->cfg->quota_bytes || s->cfg->quota_messages) &&
            smtpd_store(s->srv) != NULL)
            snprintf(mailbox, sizeof(mailbox), "%s", rr.mailboxes[0]);
        resolve_result_free(&rr);
    }
    /* Submission: other domains are relayed (queued for the relay). */
    if (st == RESOLVE_NOT_LOCAL && !r.to.source_route && cmd_may_submit(s))
        st = RESOLVE_OK;
    if (mailbox[0] == '\0') {
        cmd_rcpt_finish(s, st, &sr, false);
        return;
    }
    /* The usage comes from the user's indexes (SQLite, which may wait
     * seconds for a lock): never on the loop. The cache only ever says
     * yes: a usage read in the last SMTPD_QUOTA_CACHE_MS, counting every
     * recipient accepted since as delivered, that still has room answers
     * at once; anything else (a refusal included) is read afresh. Then
     * the session pauses, and pipelined commands after this RCPT wait in
     * the input buffer, so replies stay in command order (RFC 2920). The
     * check at delivery is the one that counts; this one spares the queue
     * mail that cannot be delivered. */
    uint64_t bytes, msgs;
    if (smtpd_quota_cached(s->srv, mailbox, &bytes, &msgs) &&
        cmd_quota_fits(s, bytes, msgs)) {
        cmd_quota_charge(s, mailbox);
        cmd_rcpt_finish(s, st, &sr, false);
        return;
    }
    s->quota_rcpt = sr;
    snprintf(s->quota_mailbox, sizeof(s->quota_mailbox), "%s", mailbox);
    s->quota_err = 0;
    s->state = SS_RCPT_WAIT;
    conn_pause(s->conn);
    smtpd_submit_quota(s->srv, s);
}

/* Quota worker thread: the mailbox's usage. Reads only quota_mailbox, the
 * limits and MAIL's SIZE (none of which change while the session waits)
 * and the store (set before the server starts), writes only the answer.
 * Well below the limits the store's running total answers; else the
 * folders are read (doc/store.md "The usage file"). */
void cmd_quota_run(struct batch_job *job)
{
    struct session *s = job->arg;
    uint64_t bytes = 0, msgs = 0;
    errno = 0;
    if (store_quota_usage_for(smtpd_store(s->srv), s->quota_mailbox,
                              s->cfg->quota_bytes, s->cfg->quota_messages,
                              s->mail.size_given ? s->mail.size : 0, true, &bytes,
                              &msgs) == 0) {
        s->quota_bytes = bytes;
        s->quota_msgs = msgs;
        s->quota_err = 0;
    } else {
        s->quota_err = errno != 0 ? errno : EIO;
    }
}

/* Loop thread: the usage is known; the RCPT gets its reply and reading
 * resumes (the next pipelined command). An unknown usage accepts: the
 * delivery checks again and decides. */
void cmd_rcpt_quota_done(struct session *s)
{
    if (s->state != SS_RCPT_WAIT)
        return;
    s->state = SS_CMD;
    bool over = false;
    if (s->quota_err == 0) {
        smtpd_quota_remember(s->srv, s->quota_mailbox, s->quota_bytes,
                             s->quota_msgs);
        over = !cmd_quota_fits(s, s->quota_bytes, s->quota_msgs);
        if (!over)
            cmd_quota_charge(s, s->quota_mailbox);
    } else {
        log_kv(LOG_WARN, "smtp.quota_unknown", "sid", s->sid, "mailbox",
               s->quota_mailbox, "error", strerror(s->quota_err), NULL);
    }
    cmd_rcpt_finish(s, RESOLVE_OK, &s->quota_rcpt, over);
    conn_set_timeout(s->conn, (unsigned)session_limit(s, LIM_TIMEOUT_COMMAND));
    conn_resume(s->conn);
}

/* VRFY/EXPN argument: "<addr>", "addr" or a bare local part. */
static bool cmd_split_address(const struct smtp_cmd *cmd, char *local, size_t lcap,
                              char *domain, size_t dcap)
{
    if (cmd->arg == NULL || cmd->arg_len == 0 || cmd->arg_len >= 512)
        return false;
    char tmp[512];
    size_t n = cmd->arg_len;
    const char *a = cmd->arg;
    if (n >= 2 && a[0] == '<' && a[n - 1] == '>') {
        a++;
        n -= 2;
    }
    memcpy(tmp, a, n);
    tmp[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)tmp[i] <= ' ' || (unsigned char)tmp[i] == 0x7f)
            return false;
    char *at = strrchr(tmp, '@');
    size_t llen = at ? (size_t)(at - tmp) : n;
    size_t dlen = at ? n - llen - 1 : 0;
    if (llen == 0 || llen >= lcap || dlen >= dcap)
        return false;
    memcpy(local, tmp, llen);
    local[llen] = '\0';
    if (at != NULL)
        memcpy(domain, at + 1, dlen);
    domain[dlen] = '\0';
    return true;
}

static void cmd_vrfy_expn(struct session *s, const struct smtp_cmd *cmd, bool expn)
{
    if (!expn && !s->cfg->vrfy) {
        session_reply(s, 252, "2.5.0",
                      "Cannot VRFY user, but will accept message and attempt delivery");
        return;
    }
    if (expn && !s->cfg->expn) {
        session_reply(s, 502, "5.5.1", "Error: EXPN command is disabled");
        return;
    }
    char local[SMTP_LOCAL_MAX + 1], domain[SMTP_DOMAIN_MAX + 1];
    if (!cmd_split_address(cmd, local, sizeof(local), domain, sizeof(domain))) {
        session_reply(s, 501, "5.5.4", "Syntax: %s address", expn ? "EXPN" : "VRFY");
        return;
    }
    if (domain[0] == '\0' && s->cfg->ndomains > 0)
        snprintf(domain, sizeof(domain), "%s", s->cfg->domains[0].name);
    struct resolve_result rr;
    enum resolve_status st = resolve_address(s->cfg, local, strlen(local), domain,
                                             strlen(domain), &rr);
    if (st == RESOLVE_NOT_LOCAL || st == RESOLVE_ROUTING) {
        session_reply(s, 252, "2.5.0",
                      "Cannot VRFY user, but will accept message and attempt delivery");
    } else if (st != RESOLVE_OK) {
        session_reply(s, 550, "5.1.1", "<%s@%s>: User unknown", local, domain);
    } else if (!expn) {
        session_reply(s, 250, "2.1.5", "<%s@%s>", local, domain);
    } else {
        size_t total = rr.nmailboxes + rr.nremote;
        for (size_t i = 0; i < total; i++) {
            const char *m = i < rr.nmailboxes ? rr.mailboxes[i]
                                              : rr.remote[i - rr.nmailboxes];
            conn_printf(s->conn, "250%c2.1.5 <%s>\r\n", i + 1 < total ? '-' : ' ', m);
        }
    }
    resolve_result_free(&rr);
}

/* ETRN (RFC 1985) for authenticated clients and etrn-networks: the whole
 * deferred queue is retried now (a flush is cheap and covers the node),
 * so the reply is always "started". */
static bool cmd_etrn_allowed(const struct session *s)
{
    return s->authenticated || config_etrn_peer(s->cfg, s->peer);
}

static void cmd_etrn(struct session *s, const struct smtp_cmd *cmd)
{
    if (!s->helo_seen) {
        session_reply(s, 503, "5.5.1", "Error: send HELO/EHLO first");
        return;
    }
    if (s->in_tx) {
        session_reply(s, 503, "5.5.1", "Error: ETRN not allowed in a mail transaction");
        return;
    }
    const char *a = cmd->arg;
    size_t n = cmd->arg_len;
    if (a != NULL && n > 0 && (a[0] == '@' || a[0] == '#')) {
        a++;
        n--;
    }
    if (a == NULL || n == 0 || n > 255 || !smtp_helo_valid(a, n)) {
        session_reply(s, 501, "5.5.4", "Syntax: ETRN [@]domain | #queue");
        return;
    }
    char node[256];
    memcpy(node, a, n);
    node[n] = '\0';
    if (!cmd_etrn_allowed(s)) {
        session_reply(s, 459, "4.7.1", "<%s>: ETRN is only for authenticated "
                      "clients", node);
        return;
    }
    if (!smtpd_request_flush(s->srv, node)) {
        session_reply(s, 458, "4.3.0", "Unable to queue messages for node <%s>", node);
        return;
    }
    log_kv(LOG_INFO, "smtp.etrn", "sid", s->sid, "client", s->peer, "node", node, NULL);
    session_reply(s, 250, "2.0.0", "Queuing for node <%s> started", node);
}

static void cmd_help(struct session *s)
{
    conn_printf(s->conn,
                "214-2.0.0 estafeta SMTP server. Commands:\r\n"
                "214-2.0.0   HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT\r\n"
                "214-2.0.0   VRFY EXPN HELP\r\n"
                "214-2.0.0 Not implemented: TURN SEND SOML SAML ETRN ATRN\r\n"
                "214 2.0.0 End of HELP\r\n");
}

void cmd_dispatch(struct session *s, const struct smtp_cmd *cmd)
{
    switch (cmd->verb) {
    case SMTP_CMD_HELO:
        cmd_helo(s, cmd, false);
        break;
    case SMTP_CMD_EHLO:
        cmd_helo(s, cmd, true);
        break;
    case SMTP_CMD_MAIL:
        cmd_mail(s, cmd);
        break;
    case SMTP_CMD_RCPT:
        cmd_rcpt(s, cmd);
        break;
    case SMTP_CMD_DATA:
        if (cmd->arg != NULL) {
            session_reply(s, 501, "5.5.4", "Syntax: DATA");
            break;
        }
        data_begin(s);
        break;
    case SMTP_CMD_BDAT:
        bdat_begin(s, cmd);
        break;
    case SMTP_CMD_RSET:
        session_reset_tx(s);
        session_reply(s, 250, "2.0.0", "Ok");
        break;
    case SMTP_CMD_NOOP:
        session_reply(s, 250, "2.0.0", "Ok");
        break;
    case SMTP_CMD_QUIT:
        session_reset_tx(s);
        conn_printf(s->conn, "221 2.0.0 Bye\r\n");
        s->state = SS_CLOSED;
        conn_close_after_flush(s->conn, (unsigned)session_limit(s, LIM_TIMEOUT_CLOSE));
        break;
    case SMTP_CMD_VRFY:
        cmd_vrfy_expn(s, cmd, false);
        break;
    case SMTP_CMD_EXPN:
        cmd_vrfy_expn(s, cmd, true);
        break;
    case SMTP_CMD_HELP:
        cmd_help(s);
        break;
    case SMTP_CMD_AUTH:
        auth_begin(s, cmd);
        break;
    case SMTP_CMD_STARTTLS:
        cmd_starttls(s, cmd);
        break;
    case SMTP_CMD_ETRN:
        cmd_etrn(s, cmd);
        break;
    case SMTP_CMD_TURN:
    case SMTP_CMD_SEND:
    case SMTP_CMD_SOML:
    case SMTP_CMD_SAML:
    case SMTP_CMD_ATRN:
        /* RFC 5321 4.2.4: recognised but not implemented. TURN stays
         * refused: it would hand mail to an unauthenticated peer. */
        session_reply(s, 502, "5.5.1", "Error: command not implemented");
        break;
    case SMTP_CMD_UNKNOWN:
    case SMTP_CMD__COUNT:
    default:
        session_reply(s, 500, "5.5.2", "Error: command not recognized");
        break;
    }
}
