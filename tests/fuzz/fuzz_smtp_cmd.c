/*
 * Fuzz target for proto/smtp_cmd: the input is a client's byte stream.
 * It goes through the line reader whole and again in splits derived from
 * the data; both must give the same results at the same offsets. Each line
 * is split into a command; MAIL/RCPT arguments are parsed under several
 * option sets, HELO/EHLO arguments validated, and the results checked:
 * strings terminated within their arrays, no control characters, replies
 * from the documented set, format -> parse round trip. abort() on any
 * violation.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp_cmd.h"

#define MAX_INPUT 16384

struct event {
    enum smtp_line_result r;
    size_t off;          /* OK: offset of the line in the whole input */
    size_t len;          /* OK: its length */
    size_t end;          /* input offset just after the line's LF; for
                            TOO_LONG the start is not known (discarded) */
};

struct run {
    struct event *ev;
    size_t n, cap;
};

static void run_add(struct run *run, enum smtp_line_result r, size_t off,
                    size_t len, size_t end)
{
    if (run->n == run->cap)
        abort();         /* at most one event per input byte, plus one */
    run->ev[run->n++] = (struct event){ r, off, len, end };
}

/*
 * Plays the caller of the contract: a buffer that keeps unconsumed bytes,
 * fed chunk by chunk. chunk sizes come from seed (0: all at once).
 */
static void read_lines(const uint8_t *data, size_t size, size_t max,
                       uint32_t seed, struct run *run, char *buf)
{
    struct smtp_line_reader lr;
    size_t have = 0, base = 0, pos = 0;   /* base: input offset of buf[0] */
    smtp_line_init(&lr, max);
    while (pos < size || have > 0) {
        size_t chunk = size - pos;
        if (seed != 0 && chunk > 0) {
            seed = seed * 1103515245u + 12345u;
            size_t c = 1 + (seed >> 16) % 37;
            if (c < chunk)
                chunk = c;
        }
        memcpy(buf + have, data + pos, chunk);
        have += chunk;
        pos += chunk;
        for (;;) {
            const char *line;
            size_t line_len, consumed;
            enum smtp_line_result r =
                smtp_line_next(&lr, buf, have, &line, &line_len, &consumed);
            if (consumed > have)
                abort();
            if (r == SMTP_LINE_OK) {
                if (line != buf || line_len >= max || line_len >= consumed ||
                    memchr(line, '\r', line_len) || memchr(line, '\0', line_len))
                    abort();
                run_add(run, r, base, line_len, base + consumed);
            } else if (r == SMTP_LINE_NEED_MORE) {
                if (consumed == 0 && have >= max)
                    abort();   /* the caller would have to hold > max */
            } else {
                if (consumed == 0)
                    abort();
                run_add(run, r, 0, 0, base + consumed);
            }
            memmove(buf, buf + consumed, have - consumed);
            have -= consumed;
            base += consumed;
            if (r == SMTP_LINE_NEED_MORE)
                break;
        }
        if (pos == size)
            break;
    }
}

static void check_status(const struct smtp_status *st)
{
    if (st->text == NULL || st->enh == NULL || strpbrk(st->text, "\r\n"))
        abort();
    if (st->code != 501 && st->code != 552 && st->code != 553 &&
        st->code != 555)
        abort();
}

static void check_cstr(const char *s, size_t cap, bool allow_8bit)
{
    size_t n = strnlen(s, cap);
    if (n == cap)
        abort();         /* not terminated within its array */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || (c >= 0x80 && !allow_8bit))
            abort();
    }
}

static void check_addr(const struct smtp_addr *a, bool utf8_allowed)
{
    check_cstr(a->local, sizeof a->local, utf8_allowed);
    check_cstr(a->domain, sizeof a->domain, utf8_allowed);
    if (a->null && (a->local[0] || a->domain[0]))
        abort();
    if (!a->null && !a->postmaster && (a->local[0] == '\0' || a->domain[0] == '\0'))
        abort();
    if (a->domain_literal && a->domain[0] != '[')
        abort();
    /* round trip: the formatted address parses back to the same one */
    char out[400], wrapped[410];
    long n = smtp_addr_format(a, out, sizeof out);
    if (n < 0 || (size_t)n != strlen(out))
        abort();
    if (a->null || a->postmaster)
        return;
    size_t w = (size_t)n + 2;
    wrapped[0] = '<';
    memcpy(wrapped + 1, out, (size_t)n);
    wrapped[w - 1] = '>';
    struct smtp_addr b;
    size_t used;
    if (smtp_path_parse(wrapped, w, SMTP_PATH_ALLOW_UTF8, &b, &used) !=
            SMTP_PATH_OK || used != w)
        abort();
    if (strcmp(a->local, b.local) != 0 || strcmp(a->domain, b.domain) != 0)
        abort();
}

static const struct smtp_parse_opts opt_sets[] = {
    { false, false, false, false, 0 },
    { true, false, false, false, 0 },
    { true, true, true, true, 1000000 },
    { true, true, false, false, 10 },
};

static void parse_line(const char *line, size_t len)
{
    struct smtp_cmd cmd;
    smtp_cmd_parse(line, len, &cmd);
    if (cmd.verb_text != line || cmd.verb_len > len)
        abort();
    if (cmd.arg != NULL) {
        if (cmd.arg < line + cmd.verb_len + 1 || cmd.arg_len == 0 ||
            cmd.arg + cmd.arg_len > line + len)
            abort();
        char last = cmd.arg[cmd.arg_len - 1];
        if (last == ' ' || last == '\t')
            abort();
    }
    if ((unsigned)cmd.verb >= SMTP_CMD__COUNT)
        abort();
    if (cmd.verb != SMTP_CMD_UNKNOWN &&
        strlen(smtp_verb_name(cmd.verb)) != cmd.verb_len)
        abort();

    /* Parse the argument of any verb both ways, so that random lines reach
     * the address code even when the verb is not MAIL/RCPT. */
    for (size_t i = 0; i < sizeof opt_sets / sizeof opt_sets[0]; i++) {
        const struct smtp_parse_opts *o = &opt_sets[i];
        struct smtp_mail_args m;
        struct smtp_rcpt_args r;
        const struct smtp_status *st;

        st = smtp_parse_mail(cmd.arg, cmd.arg_len, o, &m);
        if (st != NULL) {
            check_status(st);
        } else {
            check_addr(&m.from, o->smtputf8);
            check_cstr(m.envid, sizeof m.envid, false);
            check_cstr(m.auth, sizeof m.auth, false);
            if (m.envid[0] && smtp_xtext_decode(m.envid, strlen(m.envid), NULL, 0) < 0)
                abort();
            if (m.from.utf8 && !m.smtputf8)
                abort();
            if (o->max_size && m.size_given && m.size > o->max_size)
                abort();
            if (m.body == SMTP_BODY_BINARYMIME && !o->binarymime)
                abort();
            if (!o->esmtp && (m.size_given || m.body || m.smtputf8 || m.ret ||
                              m.envid[0] || m.auth[0]))
                abort();
        }
        st = smtp_parse_rcpt(cmd.arg, cmd.arg_len, o, &r);
        if (st != NULL) {
            check_status(st);
        } else {
            check_addr(&r.to, o->smtputf8);
            if (r.to.null)
                abort();
            check_cstr(r.orcpt, sizeof r.orcpt, false);
            if ((r.notify & SMTP_NOTIFY_NEVER) && r.notify != SMTP_NOTIFY_NEVER)
                abort();
            if (!o->dsn && (r.notify || r.orcpt[0]))
                abort();
        }
    }

    if (cmd.arg != NULL && smtp_helo_valid(cmd.arg, cmd.arg_len)) {
        for (size_t i = 0; i < cmd.arg_len; i++) {
            unsigned char c = (unsigned char)cmd.arg[i];
            if (c <= 0x20 || c >= 0x7f)
                abort();
        }
    }

    /* xtext: validating and decoding agree; output is printable */
    char dec[600];
    size_t xl = len < 512 ? len : 512;
    long a = smtp_xtext_decode(line, xl, NULL, 0);
    long b = smtp_xtext_decode(line, xl, dec, sizeof dec);
    if (a != b)
        abort();
    if (b >= 0)
        check_cstr(dec, sizeof dec, false);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > MAX_INPUT)
        return 0;
    /* data[0] picks the line limit (small ones exercise the discarding
     * path), data[1] the split pattern. */
    static const size_t maxes[] = { 512, 512, 1024, 64, 16, 8, 3, 1 };
    size_t max = maxes[data[0] & 7];
    uint32_t seed = (uint32_t)data[1] * 2654435761u + 1u;
    data += 2;
    size -= 2;

    char *buf = malloc(size + 1);
    struct run whole = { malloc((size + 1) * sizeof(struct event)), 0, size + 1 };
    struct run split = { malloc((size + 1) * sizeof(struct event)), 0, size + 1 };
    if (buf == NULL || whole.ev == NULL || split.ev == NULL)
        abort();

    read_lines(data, size, max, 0, &whole, buf);
    read_lines(data, size, max, seed, &split, buf);
    if (whole.n != split.n)
        abort();
    for (size_t i = 0; i < whole.n; i++)
        if (whole.ev[i].r != split.ev[i].r || whole.ev[i].off != split.ev[i].off ||
            whole.ev[i].len != split.ev[i].len || whole.ev[i].end != split.ev[i].end)
            abort();

    for (size_t i = 0; i < whole.n; i++)
        if (whole.ev[i].r == SMTP_LINE_OK)
            parse_line((const char *)data + whole.ev[i].off, whole.ev[i].len);

    free(buf);
    free(whole.ev);
    free(split.ev);
    return 0;
}
