/*
 * dotstuff: the wire form of a message body. See dotstuff.h for the
 * contract.
 *
 * One routine, run(), both measures and writes, so the measured size is
 * the written size by construction: dotstuff_feed runs it once on a copy of
 * the state to learn the exact output size, refuses if out cannot take it
 * (out and state untouched, as the contract promises), then runs it for
 * real. Text between line ends is copied in runs found with memchr; the
 * positions found are kept for the rest of the call, so a body of bare LFs
 * is still scanned in linear time.
 */
#include "proto/dotstuff.h"

#include <stdlib.h>
#include <string.h>

void dotstuff_init(struct dotstuff *d, bool stuff_dots)
{
    memset(d, 0, sizeof *d);
    d->stuff_dots = stuff_dots;
    d->bol = true;
}

bool dotstuff_saw_8bit(const struct dotstuff *d)
{
    return d->saw_8bit;
}

static void put(struct buf *out, const void *p, size_t n)
{
    /* The caller checked the room for exactly what run() writes: a failure
     * here is a bug in this file, not something input can cause. */
    if (out != NULL && buf_append(out, p, n) < 0)
        abort();
}

static bool any_8bit(const unsigned char *p, size_t n)
{
    const uint64_t highs = 0x8080808080808080ULL;
    uint64_t acc = 0;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, sizeof w);
        acc |= w;
    }
    if (acc & highs)
        return true;
    for (; i < n; i++)
        if (p[i] & 0x80u)
            return true;
    return false;
}

/* Wire form of in[0..len) from state *d; writes to out unless NULL.
 * Returns the octets produced. */
static size_t run(struct dotstuff *d, const unsigned char *in, size_t len,
                  struct buf *out)
{
    size_t i = 0, o = 0, cr_at = 0, lf_at = 0;
    bool cr_known = false, lf_known = false;

    while (i < len) {
        unsigned char c = in[i];
        size_t stop, n;

        if (d->skip_lf) {
            d->skip_lf = false;
            if (c == '\n') {   /* the LF of a CRLF already output */
                i++;
                continue;
            }
        }
        if (c == '\r' || c == '\n') {
            put(out, "\r\n", 2);
            o += 2;
            d->bol = true;
            d->skip_lf = c == '\r';
            i++;
            continue;
        }
        if (d->bol && c == '.' && d->stuff_dots) {
            put(out, ".", 1);
            o++;
        }
        d->bol = false;
        if (!cr_known || cr_at < i) {
            const unsigned char *q = memchr(in + i, '\r', len - i);
            cr_at = q != NULL ? (size_t)(q - in) : len;
            cr_known = true;
        }
        if (!lf_known || lf_at < i) {
            const unsigned char *q = memchr(in + i, '\n', len - i);
            lf_at = q != NULL ? (size_t)(q - in) : len;
            lf_known = true;
        }
        stop = cr_at < lf_at ? cr_at : lf_at;
        n = stop - i;
        put(out, in + i, n);
        if (out != NULL && !d->saw_8bit && any_8bit(in + i, n))
            d->saw_8bit = true;
        o += n;
        i = stop;
    }
    return o;
}

static bool room(const struct buf *out, size_t n)
{
    return out->len <= out->max && n <= out->max - out->len;
}

int dotstuff_feed(struct dotstuff *d, const void *in, size_t len,
                  struct buf *out)
{
    struct dotstuff probe = *d;
    size_t n;

    if (len == 0)
        return 0;
    n = run(&probe, in, len, NULL);
    if (!room(out, n))
        return -1;
    run(d, in, len, out);
    d->in_octets += len;
    d->out_octets += n;
    return 0;
}

int dotstuff_end(struct dotstuff *d, struct buf *out)
{
    size_t n = (d->bol ? 0 : 2) + (d->stuff_dots ? 3 : 0);

    if (!room(out, n))
        return -1;
    if (!d->bol)
        put(out, "\r\n", 2);
    if (d->stuff_dots)
        put(out, ".\r\n", 3);
    d->bol = true;
    d->skip_lf = false;
    d->out_octets += n;
    return 0;
}
