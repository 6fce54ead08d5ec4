/*
 * Fuzz target for proto/dotstuff.
 *
 * Input: byte 0 picks DATA (stuff dots) or BDAT and the output cap, bytes
 * 1-2 seed the split points, the rest is the body. Checked, abort() on
 * violation:
 *  - whole, one octet at a time, seeded random chunks, and random chunks
 *    through a small output buffer flushed whenever a call is refused
 *    (which must leave out and the state unchanged), all give the same
 *    wire form and 8-bit flag;
 *  - each call writes at most 2*len octets (dotstuff_end at most 5);
 *  - the wire form equals a slow reference (normalise line ends, end the
 *    last line, double leading dots, add ".\r\n");
 *  - the wire form has no bare CR or LF, and for DATA no "\r\n.\r\n"
 *    before its end;
 *  - for DATA, the server's DATA reader (proto/smtp_data) reads it back as
 *    exactly the CRLF-normalised body, without bare CR/LF flags, and stops
 *    exactly at the last octet.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "proto/dotstuff.h"
#include "proto/smtp_data.h"

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

static bool same(const struct buf *a, const struct buf *b)
{
    return a->len == b->len &&
           (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static bool ds_eq(const struct dotstuff *a, const struct dotstuff *b)
{
    return a->stuff_dots == b->stuff_dots && a->bol == b->bol &&
           a->skip_lf == b->skip_lf && a->saw_8bit == b->saw_8bit &&
           a->in_octets == b->in_octets && a->out_octets == b->out_octets;
}

/* Appends via a buffer of `cap` octets (0: unlimited), flushing it into
 * wire when a call is refused and retrying once. */
static void put_through(struct dotstuff *d, const char *in, size_t n,
                        bool end, struct buf *tmp, struct buf *wire)
{
    size_t before = tmp->len;
    int rc;

    for (;;) {
        struct dotstuff saved = *d;
        size_t tlen = tmp->len;
        rc = end ? dotstuff_end(d, tmp) : dotstuff_feed(d, in, n, tmp);
        if (rc == 0)
            break;
        must(rc == -1 && ds_eq(d, &saved) && tmp->len == tlen);
        /* Refused only when the bound might not fit; never when empty
         * (run() keeps the cap at least the bound). */
        must(tmp->len > 0);
        must(tmp->len + (end ? (size_t)DOTSTUFF_END_MAX : 2 * n) > tmp->max);
        buf_append(wire, tmp->data, tmp->len);
        buf_reset(tmp);
        before = 0;
    }
    must(tmp->len - before <= (end ? (size_t)DOTSTUFF_END_MAX : 2 * n));
}

/* mode: 0 whole, 1 one octet, 2 random chunks; cap 0 = unlimited. */
static void run(const char *in, size_t len, bool dots, int mode,
                uint32_t seed, size_t cap, struct buf *wire, bool *saw8_r)
{
    struct dotstuff d;
    struct buf tmp;
    size_t start = 0;
    /* One-octet feeding reuses one exact-size buffer: a malloc per octet
     * only fills ASan's quarantine. */
    char *one = malloc(1);

    must(one != NULL);

    dotstuff_init(&d, dots);
    buf_init(wire, SIZE_MAX / 2);
    buf_init(&tmp, cap ? cap : SIZE_MAX / 2);
    while (start < len) {
        size_t n = len - start;
        char *copy;
        if (mode == 1 && n > 1)
            n = 1;
        if (mode == 2) {
            size_t c = 1 + rng_next(&seed) % (1 + (seed >> 27) * 8);
            if (c < n)
                n = c;
        }
        /* The contract: out must be able to take 2*n once flushed. */
        if (cap != 0 && 2 * n > cap)
            n = cap / 2;
        copy = n == 1 ? one : malloc(n);
        must(copy != NULL);
        memcpy(copy, in + start, n);
        put_through(&d, copy, n, false, &tmp, wire);
        if (copy != one)
            free(copy);
        start += n;
    }
    free(one);
    put_through(&d, NULL, 0, true, &tmp, wire);
    buf_append(wire, tmp.data, tmp.len);
    buf_free(&tmp);
    must(d.in_octets == len && d.out_octets == wire->len);
    *saw8_r = dotstuff_saw_8bit(&d);
}

static void reference(const char *in, size_t len, bool dots, struct buf *norm,
                      struct buf *wire)
{
    size_t i;

    buf_init(norm, SIZE_MAX / 2);
    buf_init(wire, SIZE_MAX / 2);
    for (i = 0; i < len; i++) {
        if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
            continue;
        if (in[i] == '\r' || in[i] == '\n')
            buf_append(norm, "\r\n", 2);
        else
            buf_putc(norm, in[i]);
    }
    if (norm->len > 0 && norm->data[norm->len - 1] != '\n')
        buf_append(norm, "\r\n", 2);
    for (i = 0; i < norm->len; i++) {
        if (dots && norm->data[i] == '.' &&
            (i == 0 || norm->data[i - 1] == '\n'))
            buf_putc(wire, '.');
        buf_putc(wire, norm->data[i]);
    }
    if (dots)
        buf_append(wire, ".\r\n", 3);
}

static void wire_clean(const struct buf *w, bool dots)
{
    size_t j;

    for (j = 0; j < w->len; j++) {
        if (w->data[j] == '\n')
            must(j > 0 && w->data[j - 1] == '\r');
        if (w->data[j] == '\r')
            must(j + 1 < w->len && w->data[j + 1] == '\n');
        if (dots && j + 5 < w->len)
            must(memcmp(w->data + j, "\r\n.\r\n", 5) != 0);
    }
}

static void reads_back(const struct buf *w, const struct buf *norm)
{
    struct smtp_data_reader r;
    char *out = malloc(w->len + SMTP_DATA_OUT_SLACK);
    size_t out_len = 0, consumed = 0;

    must(out != NULL);
    smtp_data_init(&r, 1000);
    must(smtp_data_feed(&r, w->data, w->len, out, &out_len, &consumed) ==
         SMTP_DATA_END);
    must(consumed == w->len && out_len == norm->len &&
         (out_len == 0 || memcmp(out, norm->data, out_len) == 0));
    must(!r.bare_cr && !r.bare_lf);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool dots, saw8, saw8x, want8 = false;
    size_t cap, len, i;
    uint32_t seed;
    const char *in;
    struct buf whole, x, norm, ref;

    if (size < 3)
        return 0;
    dots = (data[0] & 1) == 0;
    cap = 8 + (size_t)(data[0] >> 1) * 2;
    seed = ((uint32_t)data[1] << 8 | data[2]) * 2654435761u + 1;
    in = (const char *)data + 3;
    len = size - 3;
    for (i = 0; i < len; i++)
        want8 |= (unsigned char)in[i] >= 0x80;

    run(in, len, dots, 0, 0, 0, &whole, &saw8);
    must(saw8 == want8);
    reference(in, len, dots, &norm, &ref);
    must(same(&whole, &ref));
    wire_clean(&whole, dots);
    if (dots)
        reads_back(&whole, &norm);
    else
        must(same(&whole, &norm));
    buf_free(&norm);
    buf_free(&ref);

    run(in, len, dots, 1, 0, 0, &x, &saw8x);
    must(same(&whole, &x) && saw8x == saw8);
    buf_free(&x);
    run(in, len, dots, 2, seed, 0, &x, &saw8x);
    must(same(&whole, &x) && saw8x == saw8);
    buf_free(&x);
    run(in, len, dots, 2, seed ^ 0x5bd1e995u, cap, &x, &saw8x);
    must(same(&whole, &x) && saw8x == saw8);
    buf_free(&x);
    buf_free(&whole);
    return 0;
}
