/*
 * session.c: I/O events, the command loop and replies of one SMTP session.
 *
 * Sessions follow "parse queue -> execute -> reply queue": every complete
 * command line in the input buffer is executed in order and its reply is
 * queued; replies are written when no complete command is left (RFC 2920
 * PIPELINING: the client may send a whole group in one write and reads
 * the replies in one go). Commands whose outcome depends on the disk (end
 * of DATA/BDAT) pause the loop until the commit worker answers; pipelined
 * commands after them wait in the buffer.
 */
#include "smtpd/session.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "lib/log.h"
#include "lib/xalloc.h"

size_t session_limit(const struct session *s, int lim)
{
    return s->cfg->limits[lim];
}

void session_reply(struct session *s, int code, const char *enh,
                   const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (n < 0)
        text[0] = '\0';
    /* Reply text never carries CR or LF, whatever went into it. */
    for (char *p = text; *p; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';
    if (enh != NULL)
        conn_printf(s->conn, "%d %s %s\r\n", code, enh, text);
    else
        conn_printf(s->conn, "%d %s\r\n", code, text);
    /* Only the client's mistakes count (5xx); a 4xx is our own temporary
     * trouble or a limit (452 too many recipients). */
    if (code >= 500)
        session_count_error(s);
}

void session_reply_status(struct session *s, const struct smtp_status *st)
{
    session_reply(s, st->code, st->enh, "%s", st->text);
}

void session_close(struct session *s, int code, const char *enh,
                   const char *text)
{
    if (s->state == SS_CLOSED)
        return;
    data_abort(s);
    if (enh != NULL)
        conn_printf(s->conn, "%d %s %s %s\r\n", code, enh, s->cfg->hostname, text);
    else
        conn_printf(s->conn, "%d %s %s\r\n", code, s->cfg->hostname, text);
    s->state = SS_CLOSED;
    conn_close_after_flush(s->conn, (unsigned)session_limit(s, LIM_TIMEOUT_CLOSE));
}

void session_count_error(struct session *s)
{
    s->errors++;
    if (s->errors > session_limit(s, LIM_SMTP_BAD_COMMANDS) &&
        s->state != SS_CLOSED) {
        log_kv(LOG_INFO, "smtp.too_many_errors", "sid", s->sid, "client",
               s->peer, NULL);
        session_close(s, 421, "4.7.0", "Too many errors, closing connection");
    }
}

void session_reset_tx(struct session *s)
{
    data_abort(s);
    s->in_tx = false;
    memset(&s->mail, 0, sizeof(s->mail));
    s->sender[0] = '\0';
    s->nrcpts = 0;
    s->bdat_used = false;
}

static void session_handle_line(struct session *s, const char *line, size_t len)
{
    struct smtp_cmd cmd;
    smtp_cmd_parse(line, len, &cmd);
    cmd_dispatch(s, &cmd);
}

void session_process(struct session *s)
{
    struct buf *in = conn_input(s->conn);
    size_t high_water = session_limit(s, LIM_OUTPUT_HIGH_WATER);
    bool stalled = false;
    while (in->len > 0) {
        /* Stop at high water even inside one read: conn re-delivers the
         * rest once the client has read enough (a pipelining client that
         * never reads cannot grow our memory with replies). */
        if (conn_output_pending(s->conn) >= high_water) {
            conn_flush(s->conn);
            if (s->state == SS_CLOSED)
                break;
            if (conn_output_pending(s->conn) >= high_water) {
                stalled = true;
                break;
            }
        }
        if (s->state == SS_DATA) {
            data_feed(s, in);
            continue;
        }
        if (s->state == SS_BDAT) {
            bdat_feed(s, in);
            continue;
        }
        if (s->state != SS_CMD && s->state != SS_AUTH)
            break;
        const char *line;
        size_t line_len, consumed;
        enum smtp_line_result r =
            smtp_line_next(&s->lr, in->data, in->len, &line, &line_len, &consumed);
        if (r == SMTP_LINE_NEED_MORE) {
            buf_consume(in, consumed);
            break;
        }
        if (r == SMTP_LINE_OK && s->state == SS_AUTH)
            auth_line(s, line, line_len);
        else if (r == SMTP_LINE_OK)
            session_handle_line(s, line, line_len);
        else if (r == SMTP_LINE_TOO_LONG || r == SMTP_LINE_BAD) {
            /* RFC 4954 4: any reply but 334 ends an AUTH exchange. */
            if (s->state == SS_AUTH)
                auth_abort(s);
            session_reply(s, 500, "5.5.2", r == SMTP_LINE_TOO_LONG
                                               ? "Error: line too long"
                                               : "Error: bad character in command");
        }
        buf_consume(in, consumed);
    }
    if (s->state == SS_CMD && s->shutdown) {
        session_close(s, 421, "4.3.2", "Service shutting down");
        return;
    }
    /* The client half-closed: everything it sent has been answered (or is
     * waiting for the disk, then we come back here); a message cut short
     * is dropped. */
    if (conn_eof(s->conn) && !stalled &&
        (s->state == SS_CMD || s->state == SS_DATA || s->state == SS_BDAT)) {
        data_abort(s);
        s->state = SS_CLOSED;
        conn_close_after_flush(s->conn, (unsigned)session_limit(s, LIM_TIMEOUT_CLOSE));
        return;
    }
    if (s->state == SS_CMD)
        conn_set_timeout(s->conn, (unsigned)session_limit(s, LIM_TIMEOUT_COMMAND));
    else if (s->state == SS_DATA || s->state == SS_BDAT)
        conn_set_timeout(s->conn, (unsigned)session_limit(s, LIM_TIMEOUT_DATA));
    conn_flush(s->conn);
}
