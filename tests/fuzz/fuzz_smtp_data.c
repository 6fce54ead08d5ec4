/*
 * Fuzz target for proto/smtp_data.
 *
 * Input: byte 0 picks max_line, bytes 1-2 seed the split points, the rest
 * is the data stream. Checked, abort() on violation:
 *  - feeding whole, one byte at a time and in seeded random chunks give the
 *    same output, end position, flags and reader state;
 *  - a slow reference model of the rules agrees;
 *  - out_total equals the octets output; output stays within the contract;
 *  - an END is exactly at "\r\n.\r\n" (or ".\r\n" at the start);
 *  - without bare CR/LF the output has CRLF line ends only;
 *  - re-stuffing the output and adding ".\r\n" reads back to the same output.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
    enum smtp_data_result res;
    size_t consumed;
    char *out;
    size_t out_len;
    struct smtp_data_reader r;
};

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* chunk_mode: 0 whole, 1 one byte, 2 random chunks from seed. */
static void run_feed(const char *in, size_t len, size_t max_line, int mode,
                     uint32_t seed, struct run *x)
{
    size_t start = 0;
    /* One-byte feeding reuses exact-size buffers (1 in, 1 + slack out):
     * allocating per byte only fills ASan's quarantine. */
    char in1[1], *out1 = malloc(1 + SMTP_DATA_OUT_SLACK);

    memset(x, 0, sizeof *x);
    x->out = malloc(len + SMTP_DATA_OUT_SLACK);
    if (x->out == NULL || out1 == NULL)
        abort();
    smtp_data_init(&x->r, max_line);
    x->res = SMTP_DATA_MORE;
    do {
        size_t n = len - start, out_len, consumed;
        char *ib, *ob;
        if (mode == 1 && n > 1)
            n = 1;
        if (mode == 2 && n > 0) {
            size_t c = 1 + rng_next(&seed) % (1 + (seed >> 28) * 8);
            if (c < n)
                n = c;
        }
        if (mode == 1 && n == 1) {
            in1[0] = in[start];
            ib = in1;
            ob = out1;
        } else {
            /* Exact-size copies so that ASan sees any access past them. */
            ib = malloc(n ? n : 1);
            ob = malloc(n + SMTP_DATA_OUT_SLACK);
            if (ib == NULL || ob == NULL)
                abort();
            memcpy(ib, in + start, n);
        }
        x->res = smtp_data_feed(&x->r, ib, n, ob, &out_len, &consumed);
        if (out_len > n + SMTP_DATA_OUT_SLACK || consumed > n ||
            x->out_len + out_len > len + SMTP_DATA_OUT_SLACK)
            abort();
        memcpy(x->out + x->out_len, ob, out_len);
        x->out_len += out_len;
        if (ib != in1) {
            free(ib);
            free(ob);
        }
        if (x->res == SMTP_DATA_END) {
            x->consumed = start + consumed;
            free(out1);
            return;
        }
        if (consumed != n)
            abort();
        start += n;
    } while (start < len);
    x->consumed = len;
    free(out1);
}

static void same_or_abort(const struct run *a, const struct run *b)
{
    const struct smtp_data_reader *p = &a->r, *q = &b->r;
    if (a->res != b->res || a->consumed != b->consumed ||
        a->out_len != b->out_len || memcmp(a->out, b->out, a->out_len) != 0)
        abort();
    if (p->state != q->state || p->line_len != q->line_len ||
        p->out_total != q->out_total || p->lines != q->lines ||
        p->bare_cr != q->bare_cr || p->bare_lf != q->bare_lf ||
        p->long_line != q->long_line || p->has_nul != q->has_nul ||
        p->has_8bit != q->has_8bit)
        abort();
}

/* The rules applied to the whole input; flags read off the output. */
static void ref_check(const char *in, size_t len, size_t max_line,
                      const struct run *x)
{
    char *out = malloc(len + 1);
    size_t i = 0, o = 0, j, cur = 0;
    enum smtp_data_result res = SMTP_DATA_MORE;
    uint64_t lines = 0;
    bool bare_cr = false, bare_lf = false, long_line = false, nul = false,
         high = false;

    if (out == NULL)
        abort();
    while (i < len) {
        bool bol = i == 0 || (i >= 2 && in[i - 2] == '\r' && in[i - 1] == '\n');
        if (bol && in[i] == '.') {
            if (i + 1 == len || (in[i + 1] == '\r' && i + 2 == len)) {
                i = len;
                break;
            }
            if (in[i + 1] == '\r' && in[i + 2] == '\n') {
                i += 3;
                res = SMTP_DATA_END;
                break;
            }
            i++;
            continue;
        }
        out[o++] = in[i++];
    }
    for (j = 0; j < o; j++) {
        unsigned char c = (unsigned char)out[j];
        bool crlf = c == '\r' && j + 1 < o && out[j + 1] == '\n';
        if (c == '\r' && j + 1 < o && !crlf)
            bare_cr = true;
        if (c == '\n' && (j == 0 || out[j - 1] != '\r'))
            bare_lf = true;
        lines += crlf;
        nul |= c == 0;
        high |= c >= 0x80;
        if (++cur > max_line)
            long_line = true;
        if (c == '\n' && j > 0 && out[j - 1] == '\r')
            cur = 0;
    }
    if (res != x->res || i != x->consumed || o != x->out_len ||
        memcmp(out, x->out, o) != 0 || lines != x->r.lines ||
        bare_cr != x->r.bare_cr || bare_lf != x->r.bare_lf ||
        long_line != x->r.long_line || nul != x->r.has_nul ||
        high != x->r.has_8bit)
        abort();
    free(out);
}

static void invariants(const char *in, const struct run *x)
{
    size_t j;

    if (x->r.out_total != x->out_len)
        abort();
    if (x->res == SMTP_DATA_END) {
        size_t c = x->consumed;
        if (c < 3 || memcmp(in + c - 3, ".\r\n", 3) != 0)
            abort();
        if (c != 3 && (c < 5 || memcmp(in + c - 5, "\r\n", 2) != 0))
            abort();
        if (x->out_len != 0 &&
            (x->out_len < 2 || memcmp(x->out + x->out_len - 2, "\r\n", 2)))
            abort();
    }
    if (!x->r.bare_cr && !x->r.bare_lf) {
        for (j = 0; j < x->out_len; j++) {
            if (x->out[j] == '\n' && (j == 0 || x->out[j - 1] != '\r'))
                abort();
            if (x->out[j] == '\r' && j + 1 < x->out_len &&
                x->out[j + 1] != '\n')
                abort();
        }
    }
}

/* Stuff the output again, end it, and read it back: the same message. */
static void round_trip(const struct run *x)
{
    char *wire = malloc(2 * x->out_len + 3);
    size_t w = 0, j;
    struct run y;

    if (wire == NULL)
        abort();
    for (j = 0; j < x->out_len; j++) {
        bool bol = j == 0 || (j >= 2 && x->out[j - 2] == '\r' &&
                              x->out[j - 1] == '\n');
        if (bol && x->out[j] == '.')
            wire[w++] = '.';
        wire[w++] = x->out[j];
    }
    memcpy(wire + w, ".\r\n", 3);
    w += 3;
    run_feed(wire, w, x->r.max_line, 0, 0, &y);
    if (y.res != SMTP_DATA_END || y.consumed != w || y.out_len != x->out_len ||
        memcmp(y.out, x->out, x->out_len) != 0 || y.r.lines != x->r.lines ||
        y.r.bare_cr != x->r.bare_cr || y.r.bare_lf != x->r.bare_lf ||
        y.r.long_line != x->r.long_line)
        abort();
    free(y.out);
    free(wire);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t max_line;
    uint32_t seed;
    const char *in;
    size_t len;
    struct run whole, x;

    if (size < 3)
        return 0;
    max_line = data[0] == 0 ? 1000 : data[0] % 64;
    seed = ((uint32_t)data[1] << 8 | data[2]) * 2654435761u + 1;
    in = (const char *)data + 3;
    len = size - 3;

    run_feed(in, len, max_line, 0, 0, &whole);
    invariants(in, &whole);
    ref_check(in, len, max_line, &whole);

    run_feed(in, len, max_line, 1, 0, &x);
    same_or_abort(&whole, &x);
    free(x.out);
    run_feed(in, len, max_line, 2, seed, &x);
    same_or_abort(&whole, &x);
    free(x.out);
    run_feed(in, len, max_line, 2, seed ^ 0x5bd1e995u, &x);
    same_or_abort(&whole, &x);
    free(x.out);

    if (whole.res == SMTP_DATA_END)
        round_trip(&whole);
    free(whole.out);
    return 0;
}
