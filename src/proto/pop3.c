/*
 * pop3: the POP3 line reader, command parser and stuffing writer (contract
 * in pop3.h).
 *
 * The line reader is smtp_line_next() under another name: POP3 and SMTP
 * command lines follow the same CR/LF rules, and two copies of that policy
 * would drift apart (anchors.md: "the bare-CR/bare-LF policy is decided
 * once, in the line reader").
 *
 * The stuffing writer is a four-state machine. Its only memory of the past
 * is whether the output is at the start of a line and whether the last
 * octet was a CR whose LF has not been seen. That CR is written at once;
 * if the next octet is not an LF the writer adds the LF itself, so every
 * line end the client sees is CRLF. Text runs are copied with memchr for CR
 * and LF, positions kept for the whole call so that input full of line
 * ends is still linear.
 */
#include "proto/pop3.h"

#include <string.h>

/* ------------------------------------------------------------------ */
/* line reader                                                         */

void pop3_line_init(struct pop3_line_reader *lr, size_t max)
{
    smtp_line_init(&lr->lr, max);
}

void pop3_line_set_max(struct pop3_line_reader *lr, size_t max)
{
    lr->lr.max = max;
}

enum pop3_line_result pop3_line_next(struct pop3_line_reader *lr,
                                     const char *in, size_t len,
                                     const char **line_r, size_t *line_len_r,
                                     size_t *consumed_r)
{
    switch (smtp_line_next(&lr->lr, in, len, line_r, line_len_r, consumed_r)) {
    case SMTP_LINE_OK:
        return POP3_LINE_OK;
    case SMTP_LINE_TOO_LONG:
        return POP3_LINE_TOO_LONG;
    case SMTP_LINE_BAD:
        return POP3_LINE_BAD;
    case SMTP_LINE_NEED_MORE:
        break;
    }
    return POP3_LINE_NEED_MORE;
}

/* ------------------------------------------------------------------ */
/* commands                                                            */

static const char *const verb_names[POP3_CMD__COUNT] = {
    [POP3_CMD_UNKNOWN] = "",
    [POP3_CMD_USER] = "USER",
    [POP3_CMD_PASS] = "PASS",
    [POP3_CMD_APOP] = "APOP",
    [POP3_CMD_STAT] = "STAT",
    [POP3_CMD_LIST] = "LIST",
    [POP3_CMD_RETR] = "RETR",
    [POP3_CMD_DELE] = "DELE",
    [POP3_CMD_NOOP] = "NOOP",
    [POP3_CMD_RSET] = "RSET",
    [POP3_CMD_QUIT] = "QUIT",
    [POP3_CMD_TOP] = "TOP",
    [POP3_CMD_UIDL] = "UIDL",
    [POP3_CMD_CAPA] = "CAPA",
    [POP3_CMD_AUTH] = "AUTH",
    [POP3_CMD_STLS] = "STLS",
    [POP3_CMD_UTF8] = "UTF8",
};

/* What a client gets after -ERR for wrong arguments. */
static const char *const verb_usage[POP3_CMD__COUNT] = {
    [POP3_CMD_UNKNOWN] = "Unknown command",
    [POP3_CMD_USER] = "Syntax: USER name",
    [POP3_CMD_PASS] = "Syntax: PASS password",
    [POP3_CMD_APOP] = "Syntax: APOP name digest",
    [POP3_CMD_STAT] = "Syntax: STAT",
    [POP3_CMD_LIST] = "Syntax: LIST [msg]",
    [POP3_CMD_RETR] = "Syntax: RETR msg",
    [POP3_CMD_DELE] = "Syntax: DELE msg",
    [POP3_CMD_NOOP] = "Syntax: NOOP",
    [POP3_CMD_RSET] = "Syntax: RSET",
    [POP3_CMD_QUIT] = "Syntax: QUIT",
    [POP3_CMD_TOP] = "Syntax: TOP msg n",
    [POP3_CMD_UIDL] = "Syntax: UIDL [msg]",
    [POP3_CMD_CAPA] = "Syntax: CAPA",
    [POP3_CMD_AUTH] = "Syntax: AUTH [mechanism [initial-response]]",
    [POP3_CMD_STLS] = "Syntax: STLS",
    [POP3_CMD_UTF8] = "Syntax: UTF8",
};

const char *pop3_verb_name(enum pop3_verb verb)
{
    if ((unsigned)verb >= POP3_CMD__COUNT)
        return "";
    return verb_names[verb];
}

static char ascii_upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

static enum pop3_verb verb_lookup(const char *p, size_t n)
{
    /* RFC 1939 3: keywords are three or four characters. */
    if (n < 3 || n > 4)
        return POP3_CMD_UNKNOWN;
    for (int v = 1; v < POP3_CMD__COUNT; v++) {
        const char *name = verb_names[v];
        if (strlen(name) != n)
            continue;
        size_t i = 0;
        while (i < n && ascii_upper(p[i]) == name[i])
            i++;
        if (i == n)
            return (enum pop3_verb)v;
    }
    return POP3_CMD_UNKNOWN;
}

/*
 * Well-formed UTF-8 (RFC 3629 4): no overlong forms, no surrogates,
 * nothing above U+10FFFF.
 */
static bool utf8_valid(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        size_t more;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f;
        } else {
            return false;
        }
        if (n - i - 1 < more)
            return false;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= more; k++)
            if (p[i + k] < 0x80 || p[i + k] > 0xbf)
                return false;
        i += more + 1;
    }
    return true;
}

static bool has_8bit(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] >= 0x80)
            return true;
    return false;
}

/* A user name: no controls, no SP (tokens never hold one), UTF-8. */
static bool name_valid(const char *p, size_t n)
{
    const unsigned char *u = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++)
        if (u[i] <= 0x20 || u[i] == 0x7f)
            return false;
    return utf8_valid(u, n);
}

/* A password: anything printable, SP and HT included, UTF-8. */
static bool password_valid(const char *p, size_t n)
{
    const unsigned char *u = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++)
        if ((u[i] < 0x20 && u[i] != '\t') || u[i] == 0x7f)
            return false;
    return utf8_valid(u, n);
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
           (c >= 'A' && c <= 'F');
}

static bool digest_valid(const char *p, size_t n)
{
    if (n != 32)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_hex(p[i]))
            return false;
    return true;
}

/* RFC 4422 3.1: sasl-mech = 1*20mech-char; lower case taken as well. */
static bool mech_valid(const char *p, size_t n)
{
    if (n < 1 || n > 20)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = ascii_upper(p[i]);
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_'))
            return false;
    }
    return true;
}

static bool base64_chars(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '='))
            return false;
    }
    return true;
}

/* 1..10 decimal digits, no sign, at most UINT32_MAX. */
static bool parse_num(const char *p, size_t n, uint32_t *v_r)
{
    uint64_t v = 0;
    if (n < 1 || n > 10)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');   /* 10 digits fit in 64 bits */
    }
    if (v > UINT32_MAX)
        return false;
    *v_r = (uint32_t)v;
    return true;
}

#define MAX_TOKENS 3   /* one more than any command takes: "too many" */

struct tokens {
    size_t n;
    const char *p[MAX_TOKENS];
    size_t len[MAX_TOKENS];
    bool empty;        /* two SPs in a row, or a leading SP */
};

static void split_args(const char *p, size_t n, struct tokens *t)
{
    size_t start = 0;
    t->n = 0;
    t->empty = false;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && p[i] != ' ')
            continue;
        if (i == start)
            t->empty = true;
        if (t->n == MAX_TOKENS)
            return;
        t->p[t->n] = p + start;
        t->len[t->n] = i - start;
        t->n++;
        start = i + 1;
    }
}

static int fail(struct pop3_cmd *r, enum pop3_err err, const char *reason)
{
    r->error = err;
    r->reason = reason;
    return -1;
}

static int parse_msg_args(struct pop3_cmd *r, const struct tokens *t,
                          size_t min, size_t max)
{
    if (t->empty || t->n < min || t->n > max)
        return fail(r, POP3_ERR_SYNTAX, verb_usage[r->verb]);
    for (size_t i = 0; i < t->n; i++) {
        if (!parse_num(t->p[i], t->len[i], &r->num[i]))
            return fail(r, POP3_ERR_NUMBER,
                        i == 0 ? "Invalid message number" : "Invalid line count");
        /* Message numbers start at 1 (RFC 1939 5); TOP's n may be 0. */
        if (i == 0 && r->num[0] == 0)
            return fail(r, POP3_ERR_NUMBER, "Invalid message number");
    }
    r->nnum = (unsigned)t->n;
    return 0;
}

int pop3_cmd_parse(const char *line, size_t len, struct pop3_cmd *r)
{
    size_t vlen = 0;
    struct tokens t;

    memset(r, 0, sizeof *r);
    r->reason = "";
    r->verb_text = line;

    while (vlen < len && line[vlen] != ' ')
        vlen++;

    /* PASS first, on the untrimmed line: its argument is the rest of the
     * line exactly, trailing spaces included (RFC 1939 7). */
    if (vlen < len && verb_lookup(line, vlen) == POP3_CMD_PASS) {
        r->verb = POP3_CMD_PASS;
        r->verb_len = vlen;
        const char *pw = line + vlen + 1;
        size_t pw_len = len - vlen - 1;
        if (pw_len == 0)
            return fail(r, POP3_ERR_SYNTAX, verb_usage[POP3_CMD_PASS]);
        if (!password_valid(pw, pw_len))
            return fail(r, POP3_ERR_SYNTAX, "Invalid password syntax");
        r->arg = pw;
        r->arg_len = pw_len;
        r->eightbit = has_8bit((const unsigned char *)pw, pw_len);
        return 0;
    }

    while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    vlen = 0;
    while (vlen < len && line[vlen] != ' ')
        vlen++;
    r->verb_len = vlen;
    r->verb = verb_lookup(line, vlen);
    if (r->verb == POP3_CMD_UNKNOWN)
        return fail(r, POP3_ERR_UNKNOWN, verb_usage[POP3_CMD_UNKNOWN]);

    if (vlen < len)
        split_args(line + vlen + 1, len - vlen - 1, &t);
    else
        t = (struct tokens){ .n = 0 };

    switch (r->verb) {
    case POP3_CMD_STAT:
    case POP3_CMD_NOOP:
    case POP3_CMD_RSET:
    case POP3_CMD_QUIT:
    case POP3_CMD_CAPA:
    case POP3_CMD_STLS:
    case POP3_CMD_UTF8:
        if (t.n != 0)
            return fail(r, POP3_ERR_SYNTAX, verb_usage[r->verb]);
        return 0;

    case POP3_CMD_LIST:
    case POP3_CMD_UIDL:
        return parse_msg_args(r, &t, 0, 1);
    case POP3_CMD_RETR:
    case POP3_CMD_DELE:
        return parse_msg_args(r, &t, 1, 1);
    case POP3_CMD_TOP:
        return parse_msg_args(r, &t, 2, 2);

    case POP3_CMD_USER:
    case POP3_CMD_APOP:
        if (t.empty || t.n != (r->verb == POP3_CMD_USER ? 1u : 2u))
            return fail(r, POP3_ERR_SYNTAX, verb_usage[r->verb]);
        if (!name_valid(t.p[0], t.len[0]))
            return fail(r, POP3_ERR_SYNTAX, "Invalid user name");
        r->arg = t.p[0];
        r->arg_len = t.len[0];
        r->eightbit = has_8bit((const unsigned char *)t.p[0], t.len[0]);
        if (r->verb == POP3_CMD_APOP) {
            if (!digest_valid(t.p[1], t.len[1]))
                return fail(r, POP3_ERR_SYNTAX, "Invalid APOP digest");
            r->arg2 = t.p[1];
            r->arg2_len = t.len[1];
        }
        return 0;

    case POP3_CMD_PASS:
        /* Only reached without an SP after the keyword. */
        return fail(r, POP3_ERR_SYNTAX, verb_usage[POP3_CMD_PASS]);

    case POP3_CMD_AUTH:
        if (t.empty || t.n > 2)
            return fail(r, POP3_ERR_SYNTAX, verb_usage[POP3_CMD_AUTH]);
        if (t.n >= 1) {
            if (!mech_valid(t.p[0], t.len[0]))
                return fail(r, POP3_ERR_SYNTAX, "Invalid mechanism name");
            r->arg = t.p[0];
            r->arg_len = t.len[0];
        }
        if (t.n == 2) {
            if (!base64_chars(t.p[1], t.len[1]))
                return fail(r, POP3_ERR_SYNTAX, "Invalid initial response");
            r->arg2 = t.p[1];
            r->arg2_len = t.len[1];
        }
        return 0;

    case POP3_CMD_UNKNOWN:
    case POP3_CMD__COUNT:
        break;
    }
    return fail(r, POP3_ERR_UNKNOWN, verb_usage[POP3_CMD_UNKNOWN]);
}

/* ------------------------------------------------------------------ */
/* stuffing writer                                                     */

enum {
    S_BOL,    /* at the start of a line, nothing pending */
    S_TEXT,   /* inside a line */
    S_CR,     /* a CR was written; its LF is not written yet */
    S_DONE,   /* TOP reached its last line (at the start of a line) */
    S_FINISHED, /* pop3_stuff_finish() was called */
};

void pop3_stuff_init(struct pop3_stuff *s)
{
    memset(s, 0, sizeof *s);
    s->state = S_BOL;
    s->line_empty = true;
}

void pop3_stuff_init_top(struct pop3_stuff *s, uint32_t n)
{
    pop3_stuff_init(s);
    s->top = true;
    s->lines_left = n;
}

/* A line and its CRLF were written. Returns true when TOP wants no more. */
static bool line_done(struct pop3_stuff *s)
{
    bool was_empty = s->line_empty;
    s->line_empty = true;
    s->state = S_BOL;
    if (!s->in_body) {
        if (was_empty)
            s->in_body = true;
        /* TOP 0: the empty line was the last one wanted. */
        if (s->in_body && s->top && s->lines_left == 0) {
            s->state = S_DONE;
            return true;
        }
        return false;
    }
    if (s->top && --s->lines_left == 0) {
        s->state = S_DONE;
        return true;
    }
    return false;
}

enum pop3_stuff_result pop3_stuff_feed(struct pop3_stuff *s,
                                       const char *in, size_t len,
                                       char *out, size_t *out_len_r,
                                       size_t *consumed_r)
{
    size_t i = 0, o = 0;
    /* Next CR / LF at or after i (len if none); valid while >= i. */
    size_t cr_at = 0, lf_at = 0;
    bool cr_known = false, lf_known = false;
    enum pop3_stuff_result res = POP3_STUFF_MORE;

    if (s->state == S_DONE || s->state == S_FINISHED) {
        *out_len_r = 0;
        *consumed_r = 0;
        return POP3_STUFF_DONE;
    }

    while (i < len) {
        switch (s->state) {
        case S_BOL:
            if (in[i] == '.') {
                out[o++] = '.';
                out[o++] = '.';
                s->line_empty = false;
                i++;
            }
            s->state = S_TEXT;
            break;

        case S_CR:
            out[o++] = '\n';
            /* A bare CR ends the line too: the octet after it is not
             * consumed here and starts the next line (and is stuffed if it
             * is a dot). */
            if (in[i] == '\n')
                i++;
            if (line_done(s)) {
                res = POP3_STUFF_DONE;
                goto out;
            }
            break;

        case S_TEXT: {
            if (!cr_known || cr_at < i) {
                const char *q = memchr(in + i, '\r', len - i);
                cr_at = q ? (size_t)(q - in) : len;
                cr_known = true;
            }
            if (!lf_known || lf_at < i) {
                const char *q = memchr(in + i, '\n', len - i);
                lf_at = q ? (size_t)(q - in) : len;
                lf_known = true;
            }
            size_t stop = cr_at < lf_at ? cr_at : lf_at;
            if (stop > i) {
                memcpy(out + o, in + i, stop - i);
                o += stop - i;
                s->line_empty = false;
                i = stop;
            }
            if (i == len)
                break;
            out[o++] = '\r';
            if (in[i] == '\r') {
                i++;
                s->state = S_CR;
                break;
            }
            /* A bare LF: written as CRLF. */
            out[o++] = '\n';
            i++;
            if (line_done(s)) {
                res = POP3_STUFF_DONE;
                goto out;
            }
            break;
        }

        default: /* S_DONE, S_FINISHED: not reached inside the loop */
            goto out;
        }
    }
out:
    s->out_total += o;
    *out_len_r = o;
    *consumed_r = i;
    return res;
}

size_t pop3_stuff_finish(struct pop3_stuff *s, char *out)
{
    size_t o = 0;
    if (s->state == S_FINISHED)
        return 0;
    if (s->state == S_TEXT && !s->line_empty) {
        out[o++] = '\r';
        out[o++] = '\n';
    } else if (s->state == S_CR) {
        out[o++] = '\n';
    }
    out[o++] = '.';
    out[o++] = '\r';
    out[o++] = '\n';
    s->state = S_FINISHED;
    s->out_total += o;
    return o;
}

size_t pop3_stuff_in_max(size_t out_cap)
{
    if (out_cap < 2 + POP3_STUFF_OUT_SLACK)
        return 0;
    return (out_cap - POP3_STUFF_OUT_SLACK) / 2;
}
