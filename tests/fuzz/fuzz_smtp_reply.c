/*
 * Fuzz target for proto/smtp_reply.
 *
 * Input: bytes 0-1 pick the limits, bytes 2-3 seed the split points, the
 * rest is what a server sends. A model of the caller feeds it and writes a
 * transcript (every reply, then the final status). Checked, abort() on
 * violation:
 *  - whole, one octet at a time and seeded random chunks give the same
 *    transcript;
 *  - a slow reference written from the rules gives it too;
 *  - every DONE reply keeps the contract: code 200..559, text NUL-free with
 *    no control octets besides TAB and '\n', text_len == strlen(text),
 *    nlines and sizes within the limits, enhanced code of the code's class;
 *  - the caller never holds line_max octets or more after MORE;
 *  - smtp_reply_format and smtp_ehlo_parse stay within their bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "proto/smtp_reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void must(int ok)
{
    if (!ok)
        abort();
}

static void tr_reply(struct buf *tr, int code, const char *enh, size_t nlines,
                     const char *text, size_t text_len)
{
    buf_appendf(tr, "D%d|%s|%zu|%zu|", code, enh, nlines, text_len);
    buf_append(tr, text, text_len);
    buf_putc(tr, '\n');
}

static void check_ehlo(const struct smtp_reply *r)
{
    struct smtp_ehlo c;
    size_t i, n;

    smtp_ehlo_parse(r, &c);
    n = strnlen(c.auth_mechs, sizeof c.auth_mechs);
    must(n < sizeof c.auth_mechs);
    for (i = 0; i < n; i++) {
        char ch = c.auth_mechs[i];
        must((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '-' || ch == '_' || ch == ' ');
    }
    must(n == 0 || (c.auth_mechs[0] != ' ' && c.auth_mechs[n - 1] != ' '));
    if (r->code != 250)
        must(!c.pipelining && !c.size_advertised && n == 0);
}

static void check_reply(const struct smtp_reply *r,
                        const struct smtp_reply_limits *lim)
{
    struct buf out;
    size_t i;

    must(r->code >= 200 && r->code <= 559);
    must(r->text != NULL && strlen(r->text) == r->text_len);
    must(r->nlines >= 1 && r->nlines <= lim->lines_max);
    must(r->text_len <= lim->size_max);
    for (i = 0; i < r->text_len; i++) {
        unsigned char c = (unsigned char)r->text[i];
        must(!((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f));
    }
    must(strnlen(r->enhanced, sizeof r->enhanced) < sizeof r->enhanced);
    if (r->enhanced[0] != '\0')
        must(r->enhanced[0] == '0' + r->code / 100 && r->code / 100 != 3);

    buf_init(&out, 3 + 1 + 9 + 1 + r->text_len);
    must(smtp_reply_format(r, &out) == 0);
    must(out.len >= 3 && memchr(out.data, '\n', out.len) == NULL);
    buf_free(&out);
    buf_init(&out, 2);
    must(smtp_reply_format(r, &out) == -1 && out.len == 0);
    buf_free(&out);
    check_ehlo(r);
}

/* mode: 0 whole, 1 one octet, 2 random chunks. Returns the transcript. */
static void drive(const char *in, size_t len,
                  const struct smtp_reply_limits *lim, int mode, uint32_t seed,
                  struct buf *tr)
{
    struct smtp_reply_parser p;
    struct buf pend;
    size_t start = 0, consumed = 0;

    smtp_reply_parser_init(&p, lim);
    buf_init(&pend, SIZE_MAX / 2);
    buf_init(tr, SIZE_MAX / 2);
    while (start < len || (len == 0 && start == 0)) {
        size_t n = len - start;
        if (mode == 1 && n > 1)
            n = 1;
        if (mode == 2 && n > 0) {
            size_t c = 1 + rng_next(&seed) % (1 + (seed >> 27) * 16);
            if (c < n)
                n = c;
        }
        buf_append(&pend, in + start, n);
        start += n;
        for (;;) {
            struct smtp_reply r;
            const char *err = NULL;
            size_t used = SIZE_MAX;
            char *copy = malloc(pend.len ? pend.len : 1);
            enum smtp_reply_status st;
            must(copy != NULL);
            if (pend.len > 0)
                memcpy(copy, pend.data, pend.len);
            st = smtp_reply_parse(&p, copy, pend.len, &used, &r, &err);
            free(copy);
            must(used <= pend.len);
            consumed += used;
            if (st == SMTP_REPLY_BAD) {
                must(err != NULL);
                buf_appendf(tr, "B:%s@%zu", err, consumed);
                goto done;
            }
            buf_consume(&pend, used);
            if (st == SMTP_REPLY_MORE) {
                must(pend.len == 0 || pend.len < lim->line_max);
                break;
            }
            must(st == SMTP_REPLY_DONE && used > 0);
            check_reply(&r, lim);
            tr_reply(tr, r.code, r.enhanced, r.nlines, r.text, r.text_len);
            smtp_reply_clear(&r);
        }
        if (len == 0)
            break;
    }
    buf_appendf(tr, "M%zu", pend.len);
done:
    smtp_reply_parser_free(&p);
    buf_free(&pend);
}

/* ---- the reference: the rules applied to the whole input ---- */

static size_t ref_enhanced(const char *s, size_t n, int cls)
{
    size_t i, a, b;
    if (!(cls == 2 || cls == 4 || cls == 5) || n < 5 || s[0] != '0' + cls ||
        s[1] != '.')
        return 0;
    for (i = 2; i < n && s[i] >= '0' && s[i] <= '9'; i++)
        ;
    a = i - 2;
    if (a < 1 || a > 3 || i >= n || s[i] != '.')
        return 0;
    for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
        ;
    b = i - 3 - a;
    if (b < 1 || b > 3 || (i < n && s[i] != ' '))
        return 0;
    return i;
}

static void reference(const char *in, size_t len,
                      const struct smtp_reply_limits *lim, struct buf *tr)
{
    size_t pos = 0, nlines = 0, raw = 0;
    int code = 0;
    char enh[16] = "";
    struct buf text;

    buf_init(tr, SIZE_MAX / 2);
    buf_init(&text, SIZE_MAX / 2);
    for (;;) {
        const char *lf = memchr(in + pos, '\n', len - pos);
        size_t n, e, t, el, i;
        int c;
        bool last;

        if (lf == NULL) {
            if (len - pos > 0 && len - pos >= lim->line_max)
                buf_appendf(tr, "B:reply line too long@%zu", pos);
            else
                buf_appendf(tr, "M%zu", len - pos);
            break;
        }
        n = (size_t)(lf - in) - pos + 1;
#define BAD(why) do { buf_appendf(tr, "B:%s@%zu", why, pos); goto out; } while (0)
        if (n > lim->line_max)
            BAD("reply line too long");
        if (memchr(in + pos, 0, n))
            BAD("NUL byte in reply");
        e = n - 1;
        if (e >= 1 && in[pos + e - 1] == '\r')
            e--;
        if (e < 3 || !strchr("2345", in[pos]) || !strchr("012345", in[pos + 1]) ||
            !(in[pos + 2] >= '0' && in[pos + 2] <= '9') || in[pos] == 0 ||
            in[pos + 1] == 0)
            BAD("malformed reply code");
        if (e > 3 && in[pos + 3] != ' ' && in[pos + 3] != '-')
            BAD("malformed reply line");
        last = e == 3 || in[pos + 3] == ' ';
        c = (in[pos] - '0') * 100 + (in[pos + 1] - '0') * 10 + (in[pos + 2] - '0');
        if (code != 0 && c != code)
            BAD("reply codes differ between lines");
        if (nlines + 1 > lim->lines_max)
            BAD("too many reply lines");
        if (raw + n > lim->size_max)
            BAD("reply too large");
        t = e == 3 ? 3 : 4;
        el = ref_enhanced(in + pos + t, e - t, c / 100);
        if (el > 0 && nlines == 0) {
            memcpy(enh, in + pos + t, el);
            enh[el] = 0;
        }
        if (el > 0)
            t += el + (t + el < e);
        if (nlines > 0)
            buf_putc(&text, '\n');
        for (i = t; i < e; i++) {
            unsigned char ch = (unsigned char)in[pos + i];
            buf_putc(&text, (ch < 0x20 && ch != '\t') || ch == 0x7f ? '?'
                                                                  : (char)ch);
        }
        code = c;
        nlines++;
        raw += n;
        pos += n;
        if (last) {
            tr_reply(tr, code, enh, nlines, buf_cstr(&text), text.len);
            buf_reset(&text);
            code = 0;
            nlines = 0;
            raw = 0;
            enh[0] = 0;
        }
#undef BAD
    }
out:
    buf_free(&text);
}

static void same(const struct buf *a, const struct buf *b)
{
    must(a->len == b->len &&
         (a->len == 0 || memcmp(a->data, b->data, a->len) == 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct smtp_reply_limits lim;
    struct buf whole, x;
    uint32_t seed;
    const char *in;
    size_t len;

    if (size < 4)
        return 0;
    if (data[0] & 0x80) {
        lim.line_max = 2048;
        lim.lines_max = 100;
        lim.size_max = 65536;
    } else {
        lim.line_max = (size_t)(data[0] & 0x7f);
        lim.lines_max = (size_t)(data[1] & 0x0f);
        lim.size_max = (size_t)(data[1] >> 4) * 24;
    }
    seed = ((uint32_t)data[2] << 8 | data[3]) * 2654435761u + 1;
    in = (const char *)data + 4;
    len = size - 4;

    drive(in, len, &lim, 0, 0, &whole);
    reference(in, len, &lim, &x);
    same(&whole, &x);
    buf_free(&x);
    drive(in, len, &lim, 1, 0, &x);
    same(&whole, &x);
    buf_free(&x);
    drive(in, len, &lim, 2, seed, &x);
    same(&whole, &x);
    buf_free(&x);
    drive(in, len, &lim, 2, seed ^ 0x5bd1e995u, &x);
    same(&whole, &x);
    buf_free(&x);
    buf_free(&whole);
    return 0;
}
