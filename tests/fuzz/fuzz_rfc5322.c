/*
 * Fuzz target for proto/rfc5322.
 *
 * Input: bytes 0-1 pick header_max, byte 2 seeds the split points, the
 * rest is the message. Checked, abort() on violation: feeding whole, one
 * byte at a time and in seeded random chunks give the same results; a slow
 * line-by-line reference model agrees; done/truncated/header_end/counts
 * are consistent with each other.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/rfc5322.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* mode: 0 whole, 1 one byte, 2 random chunks. Each chunk is an
 * exact-size copy so that a read past it is caught. */
static void feed(const char *in, size_t len, size_t max, int mode,
                 uint32_t seed, struct hdr_scan *s)
{
    size_t start = 0;
    hdr_scan_init(s, max);
    do {
        size_t n = len - start;
        char *c;
        if (mode == 1 && n > 1)
            n = 1;
        if (mode == 2 && n > 0) {
            size_t k = 1 + rng_next(&seed) % 17;
            if (k < n)
                n = k;
        }
        if (mode == 1 && n == 1) {
            /* Exact size already; allocating per byte only fills ASan's
             * quarantine. */
            char one = in[start];
            hdr_scan_feed(s, &one, 1);
        } else {
            c = malloc(n ? n : 1);
            if (c == NULL)
                abort();
            memcpy(c, in + start, n);
            hdr_scan_feed(s, c, n);
            free(c);
        }
        start += n;
    } while (start < len);
}

static void same_or_abort(const struct hdr_scan *a, const struct hdr_scan *b)
{
    if (a->offset != b->offset || a->done != b->done ||
        (a->done && a->header_end != b->header_end) ||
        a->truncated != b->truncated || a->fields != b->fields ||
        a->received != b->received || a->malformed != b->malformed ||
        a->has_date != b->has_date || a->has_message_id != b->has_message_id ||
        a->has_from != b->has_from || a->has_bcc != b->has_bcc ||
        a->has_return_path != b->has_return_path)
        abort();
}

static bool ftext(unsigned char c)
{
    return c >= 33 && c <= 126 && c != ':';
}

/* Line by line over the first min(len, max) octets; see test_rfc5322.c. */
static void ref_scan(const char *in, size_t len, size_t max, struct hdr_scan *s)
{
    size_t lim = len < max ? len : max, pos = 0;

    memset(s, 0, sizeof *s);
    s->max = max;
    s->offset = len;
    while (pos < lim) {
        const char *lf = memchr(in + pos, '\n', lim - pos);
        size_t end = lf ? (size_t)(lf - in) + 1 : lim, i = pos;
        unsigned char c0 = (unsigned char)in[pos];

        if (c0 == '\n') {
            s->done = true;
            s->header_end = pos + 1;
            break;
        }
        if (c0 == '\r') {
            if (pos + 1 < lim && in[pos + 1] == '\n') {
                s->done = true;
                s->header_end = pos + 2;
                break;
            }
            if (pos + 1 < lim)
                s->malformed++;
        } else if (c0 == ' ' || c0 == '\t') {
            if (pos == 0)
                s->malformed++;
        } else {
            char name[64];
            size_t nl = 0;
            while (i < end && ftext((unsigned char)in[i])) {
                if (nl < sizeof name)
                    name[nl] = (char)(in[i] >= 'A' && in[i] <= 'Z'
                                          ? in[i] + 32 : in[i]);
                nl++;
                i++;
            }
            while (nl > 0 && i < end && (in[i] == ' ' || in[i] == '\t'))
                i++;
            if (nl > 0 && i < end && in[i] == ':') {
                s->fields++;
                if (nl == 8 && memcmp(name, "received", 8) == 0)
                    s->received++;
                if (nl == 4 && memcmp(name, "date", 4) == 0)
                    s->has_date = true;
                if (nl == 10 && memcmp(name, "message-id", 10) == 0)
                    s->has_message_id = true;
                if (nl == 4 && memcmp(name, "from", 4) == 0)
                    s->has_from = true;
                if (nl == 3 && memcmp(name, "bcc", 3) == 0)
                    s->has_bcc = true;
                if (nl == 11 && memcmp(name, "return-path", 11) == 0)
                    s->has_return_path = true;
            } else if (i < end) {
                s->malformed++;
            }
        }
        pos = end;
    }
    s->truncated = !s->done && len > max;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct hdr_scan whole, x, f;
    size_t max, len;
    uint32_t seed;
    const char *in;

    if (size < 3)
        return 0;
    max = (size_t)data[0] << 8 | data[1];
    if (max == 0xffff)
        max = SIZE_MAX;
    seed = data[2] * 2654435761u + 1;
    in = (const char *)data + 3;
    len = size - 3;

    feed(in, len, max, 0, 0, &whole);
    if (whole.offset != len || whole.max != max)
        abort();
    if (whole.done && (whole.truncated || whole.header_end > len ||
                       whole.header_end > max || whole.header_end == 0))
        abort();
    if (whole.done && in[whole.header_end - 1] != '\n')
        abort();
    if (whole.truncated != (!whole.done && len > max))
        abort();
    if (whole.received > whole.fields)
        abort();

    ref_scan(in, len, max, &f);
    same_or_abort(&f, &whole);
    feed(in, len, max, 1, 0, &x);
    same_or_abort(&whole, &x);
    feed(in, len, max, 2, seed, &x);
    same_or_abort(&whole, &x);
    return 0;
}
