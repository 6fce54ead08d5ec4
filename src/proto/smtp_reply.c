/*
 * smtp_reply: the SMTP client's reply parser. See smtp_reply.h for the
 * contract.
 *
 * Shape: find one line (bounded memchr for LF), check it whole, then take
 * its text. A line is never looked at before its LF has arrived except to
 * see that it is already too long, which is what makes the results the same
 * however the input is split, and why every check has a fixed order.
 *
 * CVE-2020-8794 came from assuming a continuation line has at least four
 * octets ("250-") and reading text at line + 4. Here the separator is read
 * only when the line has more than three octets before its end, and text
 * offsets are always computed against the line's own end.
 */
#include "proto/smtp_reply.h"

#include <stdlib.h>
#include <string.h>

#include "lib/xalloc.h"

/* Longest RFC 3463 code: "c.sss.ddd". */
#define ENHANCED_MAX 9

/* A SASL mechanism name (RFC 4422 3.1) is at most 20 characters. */
#define SASL_NAME_MAX 20

static void parser_reset(struct smtp_reply_parser *p)
{
    buf_free(&p->text);
    buf_init(&p->text, p->lim.size_max);
    p->raw = 0;
    p->nlines = 0;
    p->code = 0;
    p->enhanced[0] = '\0';
    p->scanned = 0;
}

void smtp_reply_parser_init(struct smtp_reply_parser *p,
                            const struct smtp_reply_limits *lim)
{
    memset(p, 0, sizeof *p);
    p->lim = *lim;
    buf_init(&p->text, lim->size_max);
}

void smtp_reply_parser_free(struct smtp_reply_parser *p)
{
    parser_reset(p);
}

void smtp_reply_clear(struct smtp_reply *r)
{
    free(r->text);
    memset(r, 0, sizeof *r);
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* 1-3 digits at s[*i..n); advances *i. */
static bool digits_1_3(const unsigned char *s, size_t n, size_t *i)
{
    size_t start = *i;
    while (*i < n && *i - start < 4 && is_digit(s[*i]))
        (*i)++;
    return *i - start >= 1 && *i - start <= 3;
}

/*
 * Length of an RFC 3463 code of class `cls` at the start of s[0..n),
 * followed by SP or the end; 0 if there is none.
 */
static size_t enhanced_len(const unsigned char *s, size_t n, int cls)
{
    size_t i = 2;

    if (cls != 2 && cls != 4 && cls != 5)
        return 0;
    if (n < 5 || s[0] != (unsigned char)('0' + cls) || s[1] != '.')
        return 0;
    if (!digits_1_3(s, n, &i) || i >= n || s[i] != '.')
        return 0;
    i++;
    if (!digits_1_3(s, n, &i))
        return 0;
    if (i < n && s[i] != ' ')
        return 0;
    return i;
}

/* Appends s[0..n) with control octets other than TAB as '?'. */
static int append_clean(struct buf *b, const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t j = i;
        while (j < n && ((s[j] >= 0x20 && s[j] != 0x7f) || s[j] == '\t'))
            j++;
        if (j > i && buf_append(b, s + i, j - i) < 0)
            return -1;
        if (j < n && buf_putc(b, '?') < 0)
            return -1;
        i = j + 1;
    }
    return 0;
}

/*
 * Takes one complete line l[0..n) (n counts the LF). Returns NULL and sets
 * *last_r, or the reason the reply is bad.
 */
static const char *line_take(struct smtp_reply_parser *p,
                             const unsigned char *l, size_t n, bool *last_r)
{
    size_t e, t, raw, elen;
    int code;

    if (n > p->lim.line_max)
        return "reply line too long";
    if (memchr(l, '\0', n) != NULL)
        return "NUL byte in reply";
    e = n - 1;
    if (e > 0 && l[e - 1] == '\r')
        e--;
    if (e < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '5' ||
        !is_digit(l[2]))
        return "malformed reply code";
    if (e == 3) {
        *last_r = true;
        t = 3;
    } else if (l[3] == ' ' || l[3] == '-') {
        *last_r = l[3] == ' ';
        t = 4;
    } else {
        return "malformed reply line";
    }
    code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
    if (p->code != 0 && code != p->code)
        return "reply codes differ between lines";
    if (p->nlines >= p->lim.lines_max)
        return "too many reply lines";
    if (!size_add(p->raw, n, &raw) || raw > p->lim.size_max)
        return "reply too large";

    elen = enhanced_len(l + t, e - t, code / 100);
    if (elen > 0) {
        if (p->nlines == 0) {
            memcpy(p->enhanced, l + t, elen);
            p->enhanced[elen] = '\0';
        }
        t += elen;
        if (t < e)   /* the SP after it */
            t++;
    }
    /* Text never outgrows the octets received (each line loses at least
     * its code), so the cap of size_max cannot be hit; checked anyway. */
    if ((p->nlines > 0 && buf_putc(&p->text, '\n') < 0) ||
        append_clean(&p->text, l + t, e - t) < 0)
        return "reply too large";
    p->code = code;
    p->raw = raw;
    p->nlines++;
    return NULL;
}

enum smtp_reply_status smtp_reply_parse(struct smtp_reply_parser *p,
                                        const void *in, size_t len,
                                        size_t *used_r, struct smtp_reply *r,
                                        const char **err_r)
{
    const unsigned char *b = in;
    size_t pos = 0, skip = p->scanned;

    p->scanned = 0;
    while (pos < len) {
        /* Look for the LF no further than line_max octets in: a line
         * without one there is too long whatever follows. */
        size_t avail = len - pos;
        size_t window = avail < p->lim.line_max ? avail : p->lim.line_max;
        size_t from = skip < window ? skip : window;
        const unsigned char *lf;
        const char *err;
        bool last = false;
        size_t n;

        skip = 0;
        lf = memchr(b + pos + from, '\n', window - from);
        if (lf == NULL) {
            if (avail >= p->lim.line_max) {
                *err_r = "reply line too long";
                goto bad;
            }
            p->scanned = avail;
            *used_r = pos;
            return SMTP_REPLY_MORE;
        }
        n = (size_t)(lf - (b + pos)) + 1;
        err = line_take(p, b + pos, n, &last);
        if (err != NULL) {
            *err_r = err;
            goto bad;
        }
        pos += n;
        if (last) {
            r->code = p->code;
            memcpy(r->enhanced, p->enhanced, sizeof r->enhanced);
            r->text_len = p->text.len;
            r->text = p->text.data != NULL ? p->text.data : xstrdup("");
            r->nlines = p->nlines;
            /* The text now belongs to *r. */
            buf_init(&p->text, p->lim.size_max);
            parser_reset(p);
            *used_r = pos;
            return SMTP_REPLY_DONE;
        }
    }
    *used_r = pos;
    return SMTP_REPLY_MORE;
bad:
    parser_reset(p);
    *used_r = pos;
    return SMTP_REPLY_BAD;
}

int smtp_reply_format(const struct smtp_reply *r, struct buf *out)
{
    size_t elen = strlen(r->enhanced), need = 3, i, start;

    if (elen > 0)
        need += 1 + elen;
    if (r->text_len > 0 && !size_add(need, 1 + r->text_len, &need))
        return -1;
    if (out->len > out->max || need > out->max - out->len)
        return -1;
    /* Room was checked above: none of these can fail. */
    if (buf_appendf(out, "%03d", r->code < 0 || r->code > 999 ? 0 : r->code) < 0)
        return -1;
    if (elen > 0 && (buf_putc(out, ' ') < 0 ||
                     buf_append(out, r->enhanced, elen) < 0))
        return -1;
    if (r->text_len == 0)
        return 0;
    if (buf_putc(out, ' ') < 0)
        return -1;
    for (i = start = 0; i <= r->text_len; i++) {
        if (i < r->text_len && r->text[i] != '\n')
            continue;
        if (buf_append(out, r->text + start, i - start) < 0 ||
            (i < r->text_len && buf_putc(out, ' ') < 0))
            return -1;
        start = i + 1;
    }
    return 0;
}

/* ---- EHLO keywords ---- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

static char upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

/* Word s[0..n) equals the upper-case keyword kw, ignoring case. */
static bool word_is(const char *s, size_t n, const char *kw)
{
    size_t i;

    if (strlen(kw) != n)
        return false;
    for (i = 0; i < n; i++)
        if (upper(s[i]) != kw[i])
            return false;
    return true;
}

/* Next word of s[*i..n) into *w and *wn; false at the end. */
static bool next_word(const char *s, size_t n, size_t *i, const char **w,
                      size_t *wn)
{
    size_t j;

    while (*i < n && is_space(s[*i]))
        (*i)++;
    if (*i >= n)
        return false;
    j = *i;
    while (j < n && !is_space(s[j]))
        j++;
    *w = s + *i;
    *wn = j - *i;
    *i = j;
    return true;
}

static void add_mech(struct smtp_ehlo *c, const char *w, size_t n)
{
    char name[SASL_NAME_MAX + 1];
    size_t have = strlen(c->auth_mechs), i, need;
    const char *p;

    if (n == 0 || n > SASL_NAME_MAX)
        return;
    for (i = 0; i < n; i++) {
        char u = upper(w[i]);
        if (!((u >= 'A' && u <= 'Z') || is_digit((unsigned char)u) ||
              u == '-' || u == '_'))
            return;
        name[i] = u;
    }
    name[n] = '\0';
    /* De-duplicate against whole names already listed. */
    for (p = c->auth_mechs; *p != '\0';) {
        size_t k = strcspn(p, " ");
        if (k == n && memcmp(p, name, n) == 0)
            return;
        p += k;
        if (*p == ' ')
            p++;
    }
    need = have + (have > 0) + n;
    if (need >= sizeof c->auth_mechs)
        return;
    if (have > 0)
        c->auth_mechs[have++] = ' ';
    memcpy(c->auth_mechs + have, name, n + 1);
}

static uint64_t parse_size(const char *w, size_t n)
{
    uint64_t v = 0;
    size_t i;

    if (n == 0)
        return 0;
    for (i = 0; i < n; i++) {
        if (!is_digit((unsigned char)w[i]))
            return 0;
        if (__builtin_mul_overflow(v, 10, &v) ||
            __builtin_add_overflow(v, (uint64_t)(w[i] - '0'), &v))
            return 0;
    }
    return v;
}

static void ehlo_line(struct smtp_ehlo *c, const char *s, size_t n)
{
    size_t i = 0, wn;
    const char *w;

    if (!next_word(s, n, &i, &w, &wn))
        return;
    if (word_is(w, wn, "PIPELINING"))
        c->pipelining = true;
    else if (word_is(w, wn, "8BITMIME"))
        c->eightbitmime = true;
    else if (word_is(w, wn, "SMTPUTF8"))
        c->smtputf8 = true;
    else if (word_is(w, wn, "DSN"))
        c->dsn = true;
    else if (word_is(w, wn, "CHUNKING"))
        c->chunking = true;
    else if (word_is(w, wn, "BINARYMIME"))
        c->binarymime = true;
    else if (word_is(w, wn, "STARTTLS"))
        c->starttls = true;
    else if (word_is(w, wn, "ENHANCEDSTATUSCODES"))
        c->enhancedstatuscodes = true;
    else if (word_is(w, wn, "SIZE")) {
        if (!c->size_advertised) {
            c->size_advertised = true;
            c->size_max = next_word(s, n, &i, &w, &wn) ? parse_size(w, wn) : 0;
        }
    } else if (word_is(w, wn, "AUTH") ||
               (wn > 5 && word_is(w, 5, "AUTH="))) {
        /* Old servers (before RFC 2554 was final) say "AUTH=LOGIN PLAIN". */
        if (wn > 5)
            add_mech(c, w + 5, wn - 5);
        while (next_word(s, n, &i, &w, &wn))
            add_mech(c, w, wn);
    }
}

void smtp_ehlo_parse(const struct smtp_reply *r, struct smtp_ehlo *caps_r)
{
    const char *s = r->text, *end;
    bool first = true;

    memset(caps_r, 0, sizeof *caps_r);
    if (r->code != 250 || s == NULL)
        return;
    end = s + r->text_len;
    for (;;) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        if (!first)
            ehlo_line(caps_r, s, (size_t)((nl != NULL ? nl : end) - s));
        first = false;
        if (nl == NULL)
            break;
        s = nl + 1;
    }
}
