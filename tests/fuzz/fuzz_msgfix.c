/*
 * Fuzz target for proto/msgfix.
 *
 * Input: byte 0 picks the flags, bytes 1-2 header_max (0xffff: none),
 * byte 3 seeds the split points, the rest is the message. Checked, abort()
 * on violation: feeding whole, one octet at a time and in seeded random
 * chunks give the same output and results; each call stays within the
 * promised output capacity; with MSGFIX_REMOVE_BCC and no truncation no
 * line of the output's header section is a Bcc field; the body (after the
 * empty line) is the input's body unchanged; a slow line-by-line
 * reference model gives the same output.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/msgfix.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DATE "Date: Thu, 1 Feb 2024 10:00:00 +0000\r\n"
#define MSGID "Message-ID: <fuzz@sub.test>\r\n"
#define EXTRA (MSGFIX_OUT_SLACK + sizeof DATE + sizeof MSGID)

struct run {
    char *out;
    size_t len;
    unsigned bcc_removed;
    bool has_date, has_message_id, has_from, header_done, truncated;
};

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* mode: 0 whole, 1 one octet, 2 random chunks. */
static void feed(const char *in, size_t len, unsigned flags, size_t max,
                 int mode, uint32_t seed, struct run *r)
{
    struct msgfix f;
    size_t start = 0, o;
    /* Worst case per call is the chunk plus EXTRA. */
    char *obuf;

    r->out = malloc(len + 2 * EXTRA + 1);
    obuf = malloc(len + EXTRA + 1);
    if (r->out == NULL || obuf == NULL)
        abort();
    r->len = 0;
    msgfix_init(&f, flags, max);
    msgfix_set_additions(&f, DATE, MSGID);
    while (start < len) {
        size_t n = len - start;
        if (mode == 1)
            n = 1;
        if (mode == 2) {
            size_t k = 1 + rng_next(&seed) % 23;
            if (k < n)
                n = k;
        }
        if (mode == 1) {
            char one = in[start];
            msgfix_feed(&f, &one, 1, obuf, &o);
        } else {
            char *c = malloc(n);
            if (c == NULL)
                abort();
            memcpy(c, in + start, n);
            msgfix_feed(&f, c, n, obuf, &o);
            free(c);
        }
        if (o > n + EXTRA || r->len + o > len + 2 * EXTRA)
            abort();
        memcpy(r->out + r->len, obuf, o);
        r->len += o;
        start += n;
    }
    msgfix_finish(&f, obuf, &o);
    if (o > EXTRA)
        abort();
    memcpy(r->out + r->len, obuf, o);
    r->len += o;
    free(obuf);
    r->bcc_removed = f.bcc_removed;
    r->has_date = f.has_date;
    r->has_message_id = f.has_message_id;
    r->has_from = f.has_from;
    r->header_done = f.header_done;
    r->truncated = f.truncated;
}

static void same_or_abort(const struct run *a, const struct run *b)
{
    if (a->len != b->len || memcmp(a->out, b->out, a->len) != 0 ||
        a->bcc_removed != b->bcc_removed || a->has_date != b->has_date ||
        a->has_message_id != b->has_message_id ||
        a->has_from != b->has_from || a->header_done != b->header_done ||
        a->truncated != b->truncated)
        abort();
}

static bool ci_prefix(const char *p, size_t n, const char *lower)
{
    size_t k, l = strlen(lower);
    if (n < l)
        return false;
    for (k = 0; k < l; k++) {
        char c = p[k];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        if (c != lower[k])
            return false;
    }
    return true;
}

static size_t wsp_run(const char *p, size_t n, size_t k)
{
    size_t s = k;
    while (k < n && (p[k] == ' ' || p[k] == '\t'))
        k++;
    return k - s;
}

/* The field `lower` (name, SP/HT, colon); *colon_r: the colon's index. */
static bool is_field(const char *p, size_t n, const char *lower,
                     size_t *colon_r)
{
    size_t l = strlen(lower), k;
    if (!ci_prefix(p, n, lower))
        return false;
    k = l + wsp_run(p, n, l);
    *colon_r = k;
    return k < n && p[k] == ':';
}

static void add(struct run *r, const char *s, size_t n)
{
    memcpy(r->out + r->len, s, n);
    r->len += n;
}

static void add_missing(struct run *r, unsigned flags)
{
    if ((flags & MSGFIX_ADD_DATE) && !r->has_date)
        add(r, DATE, strlen(DATE));
    if ((flags & MSGFIX_ADD_MESSAGE_ID) && !r->has_message_id)
        add(r, MSGID, strlen(MSGID));
}

static void ref_run(const char *in, size_t len, unsigned flags, size_t max,
                    struct run *r)
{
    size_t pos = 0, colon;
    bool cur_bcc = false;

    memset(r, 0, sizeof *r);
    r->out = malloc(len + 2 * EXTRA);
    if (r->out == NULL)
        abort();
    while (pos < len) {
        const char *lf = memchr(in + pos, '\n', len - pos);
        size_t e = lf ? (size_t)(lf - in) + 1 : len, n = e - pos;
        const char *p = in + pos;
        bool wsp0 = p[0] == ' ' || p[0] == '\t';
        bool bcc;

        if (pos >= max)
            r->truncated = true;
        if (r->truncated && !(cur_bcc && wsp0)) {
            add(r, p, len - pos);
            break;
        }
        if ((n == 1 && p[0] == '\n') ||
            (n == 2 && p[0] == '\r' && p[1] == '\n')) {
            if (e > max) {
                r->truncated = true;
            } else {
                add_missing(r, flags);
                r->header_done = true;
            }
            add(r, p, len - pos);
            break;
        }
        if (e > max)
            r->truncated = true;
        /* "bcc" + up to 61 SP/HT + ":", or more SP/HT than that. */
        bcc = (flags & MSGFIX_REMOVE_BCC) && ci_prefix(p, n, "bcc") &&
              (wsp_run(p, n, 3) > MSGFIX_HOLD_MAX - 3 ||
               is_field(p, n, "bcc", &colon));
        if (wsp0) {
            if (!cur_bcc)
                add(r, p, n);
        } else if (bcc) {
            cur_bcc = true;
            r->bcc_removed++;
        } else {
            cur_bcc = false;
            if (is_field(p, n, "date", &colon) && pos + colon < max)
                r->has_date = true;
            if (is_field(p, n, "message-id", &colon) && pos + colon < max)
                r->has_message_id = true;
            if (is_field(p, n, "from", &colon) && pos + colon < max)
                r->has_from = true;
            add(r, p, n);
        }
        pos = e;
    }
    if (!r->header_done && !r->truncated) {
        bool want = ((flags & MSGFIX_ADD_DATE) && !r->has_date) ||
                    ((flags & MSGFIX_ADD_MESSAGE_ID) && !r->has_message_id);
        if (want && r->len > 0 && r->out[r->len - 1] != '\n')
            add(r, "\r\n", 2);
        add_missing(r, flags);
    }
}

/* Independent of the model: no Bcc field line before the empty line. */
static void check_no_bcc(const struct run *r)
{
    size_t pos = 0, colon;
    while (pos < r->len) {
        const char *lf = memchr(r->out + pos, '\n', r->len - pos);
        size_t e = lf ? (size_t)(lf - r->out) + 1 : r->len, n = e - pos;
        const char *p = r->out + pos;
        if (p[0] == '\n' || (n >= 2 && p[0] == '\r' && p[1] == '\n'))
            return;
        if (is_field(p, n, "bcc", &colon))
            abort();
        pos = e;
    }
}

/* The body is the input's body, byte for byte. */
static void check_body(const char *in, size_t len, const struct run *r)
{
    const char *a = NULL, *b = NULL;
    size_t pos = 0;
    /* The first empty line of each. */
    while (pos < len) {
        const char *lf = memchr(in + pos, '\n', len - pos);
        size_t e = lf ? (size_t)(lf - in) + 1 : len;
        if (e - pos <= 2 && lf && (e - pos == 1 || in[pos] == '\r')) {
            a = in + e;
            break;
        }
        pos = e;
    }
    pos = 0;
    while (pos < r->len) {
        const char *lf = memchr(r->out + pos, '\n', r->len - pos);
        size_t e = lf ? (size_t)(lf - r->out) + 1 : r->len;
        if (e - pos <= 2 && lf && (e - pos == 1 || r->out[pos] == '\r')) {
            b = r->out + e;
            break;
        }
        pos = e;
    }
    if (a == NULL || b == NULL)
        abort();
    if ((size_t)(in + len - a) != (size_t)(r->out + r->len - b) ||
        memcmp(a, b, (size_t)(in + len - a)) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct run whole, x;
    unsigned flags;
    size_t max, len;
    uint32_t seed;
    const char *in;

    if (size < 4)
        return 0;
    flags = data[0] & 7u;
    max = (size_t)data[1] << 8 | data[2];
    if (max == 0xffff)
        max = SIZE_MAX;
    seed = data[3] * 2654435761u + 1;
    in = (const char *)data + 4;
    len = size - 4;

    feed(in, len, flags, max, 0, 0, &whole);
    if (whole.header_done && whole.truncated)
        abort();
    if ((flags & MSGFIX_REMOVE_BCC) && !whole.truncated)
        check_no_bcc(&whole);
    if (whole.header_done)
        check_body(in, len, &whole);
    if (!(flags & MSGFIX_REMOVE_BCC) && whole.bcc_removed != 0)
        abort();
    /* Nothing to do: a copy. */
    if (flags == 0 && (whole.len != len || memcmp(whole.out, in, len) != 0))
        abort();

    ref_run(in, len, flags, max, &x);
    same_or_abort(&x, &whole);
    free(x.out);
    feed(in, len, flags, max, 1, 0, &x);
    same_or_abort(&whole, &x);
    free(x.out);
    feed(in, len, flags, max, 2, seed, &x);
    same_or_abort(&whole, &x);
    free(x.out);
    free(whole.out);
    return 0;
}
