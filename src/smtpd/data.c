/*
 * data.c: message content. DATA (dot-stuffed, ended only by <CRLF>.<CRLF>,
 * proto/smtp_data.h) and BDAT (RFC 3030 chunks, counted), the Received:
 * header, the checks made at the end of the message, and the hand-over to
 * the commit worker. The 250 is sent only from data_committed(), i.e. after
 * the queue reports the message and its envelope on stable storage.
 *
 * Content goes straight from the input buffer to the queue file: memory per
 * session stays bounded whatever the message size (RFC 1870: oversized
 * content is read and dropped, then refused at the end).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "smtpd/session.h"

#define DATA_CHUNK 65536

void data_abort(struct session *s)
{
    if (s->msg != NULL) {
        queue_msg_abort(s->msg);
        s->msg = NULL;
    }
}

/* Reduces client text to what may stand in a Received: comment: printable
 * ASCII without "(", ")", "\\" (which would end or escape the comment). */
static void data_sanitize(const char *in, char *out, size_t cap)
{
    size_t j = 0;
    for (size_t i = 0; in[i] != '\0' && j + 1 < cap; i++) {
        unsigned char c = (unsigned char)in[i];
        out[j++] = (c > ' ' && c < 0x7f && c != '(' && c != ')' && c != '\\')
                       ? (char)c
                       : '?';
    }
    out[j] = '\0';
}

static void data_store(struct session *s, const char *p, size_t n)
{
    if (s->too_big || s->write_errno != 0 || n == 0)
        return;
    if (queue_msg_write(s->msg, p, n) < 0)
        s->write_errno = errno ? errno : EIO;
}

static void data_write(struct session *s, const char *p, size_t n)
{
    hdr_scan_feed(&s->hs, p, n);
    uint64_t total = s->msg_size + n;
    s->msg_size = total;
    if (total > session_limit(s, LIM_MESSAGE_SIZE))
        s->too_big = true;
    if (s->too_big || s->write_errno != 0 || n == 0)
        return;
    if (!s->fixing) {
        data_store(s, p, n);
        return;
    }
    /* Submission fix-ups, in bounded pieces. */
    char out[8192 + MSGFIX_OUT_SLACK + 2 * MSGFIX_ADDITION_MAX];
    while (n > 0) {
        size_t k = n < 8192 ? n : 8192, olen = 0;
        msgfix_feed(&s->fix, p, k, out, &olen);
        data_store(s, out, olen);
        p += k;
        n -= k;
    }
}

/* End of content: what the fix-up filter still holds. */
static void data_write_end(struct session *s)
{
    if (!s->fixing)
        return;
    char out[MSGFIX_OUT_SLACK + 2 * MSGFIX_ADDITION_MAX + 8];
    size_t olen = 0;
    msgfix_finish(&s->fix, out, &olen);
    data_store(s, out, olen);
}

/* Opens the queue message and writes our Received: header (RFC 5321 4.4). */
static bool data_open(struct session *s)
{
    s->msg_size = 0;
    s->too_big = false;
    s->write_errno = 0;
    hdr_scan_init(&s->hs, session_limit(s, LIM_HEADER_SECTION));
    if (queue_msg_open(smtpd_queue(s->srv), &s->msg) < 0) {
        log_kv(LOG_ERR, "queue.open_failed", "sid", s->sid, "error",
               strerror(errno), NULL);
        s->msg = NULL;
        return false;
    }
    snprintf(s->qid, sizeof(s->qid), "%s", queue_msg_id(s->msg));

    char helo[256], date[64];
    data_sanitize(s->helo, helo, sizeof(helo));
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
    /* RFC 3848 / RFC 6531 protocol names: S = TLS, A = authenticated. */
    bool tls = conn_tls_active(s->conn);
    bool auth = s->authenticated && !s->local;
    char proto[16];
    snprintf(proto, sizeof(proto), "%s%s%s",
             s->mail.smtputf8 ? "UTF8SMTP" : s->esmtp ? "ESMTP" : "SMTP",
             tls ? "S" : "", auth ? "A" : "");
    bool v6 = strchr(s->peer, ':') != NULL;
    struct buf h;
    buf_init(&h, 4096);
    if (s->local)
        buf_appendf(&h, "Received: from localhost (local %s)\r\n\tby %s (estafeta) "
                        "with %s id %s", s->peer, s->cfg->hostname, proto, s->qid);
    else
        buf_appendf(&h, "Received: from %s ([%s%s])\r\n\tby %s (estafeta) with %s id %s",
                    helo, v6 ? "IPv6:" : "", s->peer, s->cfg->hostname, proto, s->qid);
    if (tls)
        buf_appendf(&h, "\r\n\t(using %s with cipher %s (%d bits))",
                    conn_tls_version(s->conn), conn_tls_cipher(s->conn),
                    conn_tls_bits(s->conn));
    if (auth)
        buf_appends(&h, " (authenticated)");
    if (s->nrcpts == 1)
        buf_appendf(&h, "\r\n\tfor <%s>", s->rcpts[0].address);
    buf_appendf(&h, "; %s\r\n", date);
    /* Our own header is not the client's content: not counted in SIZE nor
     * scanned for Received: loops, but written first. */
    if (queue_msg_write(s->msg, h.data, h.len) < 0)
        s->write_errno = errno ? errno : EIO;
    buf_free(&h);

    /* RFC 6409 8: submissions get Date and Message-ID if missing, and
     * lose Bcc. Mail arriving from other MTAs is left as it is. */
    s->fixing = cmd_may_submit(s);
    if (s->fixing) {
        char dline[128], mline[QUEUE_ID_SIZE + 300];
        snprintf(dline, sizeof(dline), "Date: %s\r\n", date);
        snprintf(mline, sizeof(mline), "Message-ID: <%s@%s>\r\n", s->qid,
                 s->cfg->hostname);
        msgfix_init(&s->fix, MSGFIX_REMOVE_BCC | MSGFIX_ADD_DATE |
                             MSGFIX_ADD_MESSAGE_ID,
                    session_limit(s, LIM_HEADER_SECTION));
        msgfix_set_additions(&s->fix, dline, mline);
    }
    return true;
}

static bool data_check_start(struct session *s, bool bdat)
{
    if (!s->in_tx) {
        session_reply(s, 503, "5.5.1", "Error: need MAIL command");
        return false;
    }
    if (s->nrcpts == 0) {
        session_reply(s, 554, "5.5.1", "Error: no valid recipients");
        return false;
    }
    if (!bdat && s->bdat_used) {
        session_reply(s, 503, "5.5.1", "Error: DATA after BDAT");
        return false;
    }
    return true;
}

void data_begin(struct session *s)
{
    if (!data_check_start(s, false))
        return;
    if (!data_open(s)) {
        session_reply(s, 451, "4.3.0", "Error: queue file write error");
        return;
    }
    smtp_data_init(&s->dr, session_limit(s, LIM_SMTP_TEXT_LINE));
    s->state = SS_DATA;
    conn_printf(s->conn, "354 End data with <CR><LF>.<CR><LF>\r\n");
}

/* Every check made once the whole message is in; on a refusal the
 * transaction ends, the message is dropped and the reply is sent. */
static const struct smtp_status *data_verdict(struct session *s, bool bare_eol,
                                              bool long_line)
{
    static const struct smtp_status write_err = {451, "4.3.0",
        "Error: queue file write error"};
    static const struct smtp_status no_space = {452, "4.3.1",
        "Error: insufficient system storage"};
    static const struct smtp_status too_big = {552, "5.3.4",
        "Error: message too big"};
    static const struct smtp_status bare = {550, "5.6.0",
        "Error: bare CR or LF in message; only CRLF line ends are allowed"};
    static const struct smtp_status loop = {554, "5.4.6",
        "Error: too many Received: headers (mail loop)"};
    static struct smtp_status long_st = {550, "5.6.0", NULL};

    if (s->write_errno == ENOSPC || s->write_errno == EDQUOT)
        return &no_space;
    if (s->write_errno != 0)
        return &write_err;
    if (s->too_big)
        return &too_big;
    if (bare_eol)
        return &bare;
    if (long_line) {
        /* The text names the configured limit; only the loop thread uses
         * this buffer. */
        static char text[80];
        snprintf(text, sizeof(text), "Error: message line longer than %zu octets",
                 session_limit(s, LIM_SMTP_TEXT_LINE));
        long_st.text = text;
        return &long_st;
    }
    if (s->hs.received > session_limit(s, LIM_RECEIVED_HEADERS))
        return &loop;
    return NULL;
}

static void data_finish(struct session *s, bool bare_eol, bool long_line)
{
    data_write_end(s);
    const struct smtp_status *st = data_verdict(s, bare_eol, long_line);
    if (st != NULL) {
        log_kv(LOG_INFO, "smtp.reject", "sid", s->sid, "qid", s->qid, "reason",
               st->text, NULL);
        session_reset_tx(s);
        s->state = SS_CMD;
        session_reply_status(s, st);
        return;
    }
    /* Envelope for the queue; strings point into the session, which stays
     * untouched (input paused) until data_committed(). */
    struct queue_env *e = &s->env;
    memset(e, 0, sizeof(*e));
    s->env_rcpts = xreallocarray(s->env_rcpts, s->nrcpts, sizeof(*s->env_rcpts));
    for (size_t i = 0; i < s->nrcpts; i++) {
        s->env_rcpts[i] = (struct queue_rcpt){
            .address = s->rcpts[i].address,
            .orcpt = s->rcpts[i].orcpt,
            .notify = s->rcpts[i].notify,
            .state = QUEUE_RCPT_PENDING,
            .status = (char *)"",
        };
    }
    e->sender = s->sender;
    e->created = (int64_t)time(NULL);
    e->flags = (s->mail.smtputf8 ? QUEUE_F_SMTPUTF8 : 0) |
               (s->mail.body == SMTP_BODY_8BITMIME ? QUEUE_F_8BITMIME : 0);
    e->ret = (int)s->mail.ret;
    e->envid = s->mail.envid;
    e->client_addr = s->peer;
    e->client_helo = s->helo;
    e->session_id = s->sid;
    e->auth_user = (char *)"";
    e->rcpts = s->env_rcpts;
    e->nrcpts = s->nrcpts;
    s->state = SS_COMMIT;
    conn_pause(s->conn);
    smtpd_submit_commit(s->srv, s);
}

void data_committed(struct session *s, int result)
{
    s->msg = NULL; /* consumed by queue_commit */
    s->state = SS_CMD;
    if (result == 0) {
        char size[32], nrcpt[32];
        snprintf(size, sizeof(size), "%llu", (unsigned long long)s->msg_size);
        snprintf(nrcpt, sizeof(nrcpt), "%zu", s->nrcpts);
        log_kv(LOG_INFO, "smtp.queued", "sid", s->sid, "qid", s->qid, "from",
               s->sender, "size", size, "nrcpt", nrcpt, NULL);
        smtpd_notify_committed(s->srv, s->qid);
        if (!s->conn_gone)
            session_reply(s, 250, "2.0.0", "Ok: queued as %s", s->qid);
    } else {
        log_kv(LOG_ERR, "smtp.commit_failed", "sid", s->sid, "qid", s->qid,
               "error", strerror(result), NULL);
        if (!s->conn_gone) {
            if (result == ENOSPC || result == EDQUOT)
                session_reply(s, 452, "4.3.1", "Error: insufficient system storage");
            else
                session_reply(s, 451, "4.3.0", "Error: queue file write error");
        }
    }
    s->in_tx = false;
    memset(&s->mail, 0, sizeof(s->mail));
    s->sender[0] = '\0';
    s->nrcpts = 0;
    s->bdat_used = false;
    if (!s->conn_gone) {
        conn_set_timeout(s->conn, (unsigned)session_limit(s, LIM_TIMEOUT_COMMAND));
        conn_resume(s->conn);
    }
}

void data_feed(struct session *s, struct buf *in)
{
    char out[DATA_CHUNK + SMTP_DATA_OUT_SLACK];
    size_t n = in->len < DATA_CHUNK ? in->len : DATA_CHUNK;
    size_t out_len = 0, consumed = 0;
    enum smtp_data_result r = smtp_data_feed(&s->dr, in->data, n, out, &out_len,
                                             &consumed);
    data_write(s, out, out_len);
    buf_consume(in, consumed);
    if (r == SMTP_DATA_END)
        data_finish(s, s->dr.bare_cr || s->dr.bare_lf, s->dr.long_line);
}

/* ---- BDAT (RFC 3030) ---- */

static bool bdat_parse(const struct smtp_cmd *cmd, uint64_t *size_r, bool *last_r)
{
    if (cmd->arg == NULL)
        return false;
    const char *p = cmd->arg, *end = cmd->arg + cmd->arg_len;
    uint64_t v = 0;
    size_t digits = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (__builtin_mul_overflow(v, 10, &v) ||
            __builtin_add_overflow(v, (uint64_t)(*p - '0'), &v))
            return false;
        p++;
        digits++;
    }
    if (digits == 0 || digits > 20)
        return false;
    *last_r = false;
    if (p == end) {
        *size_r = v;
        return true;
    }
    if (*p != ' ')
        return false;
    p++;
    if (end - p == 4 && strncasecmp(p, "LAST", 4) == 0) {
        *last_r = true;
        *size_r = v;
        return true;
    }
    return false;
}

void bdat_begin(struct session *s, const struct smtp_cmd *cmd)
{
    uint64_t size;
    bool last;
    if (!bdat_parse(cmd, &size, &last)) {
        /* The chunk length is unknown, so the bytes that follow cannot be
         * told apart from commands: answer and close (security.md 2). */
        session_reply(s, 501, "5.5.4", "Syntax: BDAT size [LAST]");
        session_close(s, 421, "4.5.0", "Closing connection after bad BDAT");
        return;
    }
    if (size > session_limit(s, LIM_MESSAGE_SIZE)) {
        /* Larger than any message we take: refuse without reading the
         * chunk, and close, since its bytes cannot be read as commands. */
        session_reply(s, 552, "5.3.4", "Error: message too big");
        session_close(s, 421, "4.3.4", "Closing connection after oversized BDAT");
        return;
    }
    s->bdat_left = size;
    s->bdat_chunk = size;
    s->bdat_last = last;
    s->bdat_discard = false;
    s->bdat_error = NULL;
    static const struct smtp_status no_mail = {503, "5.5.1", "Error: need MAIL command"};
    static const struct smtp_status no_rcpt = {554, "5.5.1", "Error: no valid recipients"};
    static const struct smtp_status write_err = {451, "4.3.0", "Error: queue file write error"};
    if (!s->in_tx) {
        s->bdat_discard = true;
        s->bdat_error = &no_mail;
    } else if (s->nrcpts == 0) {
        s->bdat_discard = true;
        s->bdat_error = &no_rcpt;
    } else if (!s->bdat_used) {
        s->bdat_used = true;
        s->bdat_prev_cr = false;
        s->bdat_bad_eol = false;
        s->bdat_long_line = false;
        s->bdat_line_len = 0;
        if (!data_open(s)) {
            s->bdat_discard = true;
            s->bdat_error = &write_err;
        }
    }
    s->state = SS_BDAT;
    if (size == 0)
        bdat_feed(s, conn_input(s->conn));
}

/* BDAT content is counted, not parsed, but what is stored must still have
 * CRLF line ends only and lines within the limit (we do not offer
 * BINARYMIME). */
static void bdat_scan(struct session *s, const char *p, size_t n)
{
    size_t max = session_limit(s, LIM_SMTP_TEXT_LINE);
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (s->bdat_prev_cr && c != '\n')
            s->bdat_bad_eol = true;
        if (c == '\n') {
            if (!s->bdat_prev_cr)
                s->bdat_bad_eol = true;
            s->bdat_line_len = 0;
        } else if (++s->bdat_line_len + 1 > max) {
            s->bdat_long_line = true;
        }
        s->bdat_prev_cr = c == '\r';
    }
}

void bdat_feed(struct session *s, struct buf *in)
{
    size_t n = in->len;
    if ((uint64_t)n > s->bdat_left)
        n = (size_t)s->bdat_left;
    if (!s->bdat_discard && n > 0) {
        bdat_scan(s, in->data, n);
        data_write(s, in->data, n);
    }
    buf_consume(in, n);
    s->bdat_left -= n;
    if (s->bdat_left > 0)
        return;
    s->state = SS_CMD;
    if (s->bdat_discard) {
        const struct smtp_status *err = s->bdat_error;
        if (s->in_tx && s->bdat_used)
            session_reset_tx(s);
        session_reply_status(s, err);
        return;
    }
    if (!s->bdat_last) {
        if (s->too_big || s->write_errno != 0) {
            /* Refuse now rather than after more chunks we would drop. */
            data_finish(s, false, false);
            return;
        }
        session_reply(s, 250, "2.0.0", "%llu octets received",
                      (unsigned long long)s->bdat_chunk);
        return;
    }
    data_finish(s, s->bdat_bad_eol || s->bdat_prev_cr, s->bdat_long_line);
}
