/*
 * dotstuff: the wire form of a message body for DATA (RFC 5321 4.5.2) and
 * BDAT (RFC 3030). Pure: no I/O, no globals, no allocation of its own.
 *
 * The queue stores bodies with CRLF line ends and no dot-stuffing, but what
 * goes on the wire must hold regardless (shared/design/security.md 2):
 *  - every line end on the wire is CRLF: a bare CR and a bare LF each
 *    become CRLF, CRLF stays CRLF;
 *  - with stuff_dots, a '.' at the start of a line is doubled, where "start
 *    of a line" is the start of the body or just after any line end of the
 *    input, bare ones included (Dovecot CVE-2026-33604 missed the dot after
 *    a bare CR);
 *  - so only our own final "<CRLF>.<CRLF>" ends the data: a receiver that
 *    honours only CRLF.CRLF reads back exactly the CRLF-normalised body.
 * Other octets (NUL, 8-bit) are passed through unchanged; 8-bit ones are
 * noted so the caller can check the peer's 8BITMIME.
 *
 * A CR's CRLF is emitted as soon as the CR is seen; an LF that follows it,
 * in this call or the next, is then swallowed. This is the same output as
 * holding the CR back until the next octet decides, with nothing held.
 *
 * Output sizes, for sizing `out`: dotstuff_feed writes at most 2*len octets
 * (each input octet gives at most two), dotstuff_end at most 5.
 */
#ifndef ESTAFETA_PROTO_DOTSTUFF_H
#define ESTAFETA_PROTO_DOTSTUFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

#define DOTSTUFF_END_MAX 5   /* "\r\n" + ".\r\n" */

struct dotstuff {
    bool stuff_dots;
    bool bol;          /* at the start of a line (of the output) */
    bool skip_lf;      /* the last octet was a CR, already output as CRLF */
    bool saw_8bit;
    uint64_t in_octets;   /* read-only for callers: body octets fed */
    uint64_t out_octets;  /* read-only for callers: octets appended to out */
};

/* stuff_dots: true for DATA; false for BDAT (line ends normalised, dots
 * left alone, no terminator). */
void dotstuff_init(struct dotstuff *d, bool stuff_dots);

/*
 * Appends the wire form of in[0..len) to out. Returns 0, or -1 if out's cap
 * would be exceeded: then out and *d are unchanged, so the caller can flush
 * out and feed the same input again.
 */
int dotstuff_feed(struct dotstuff *d, const void *in, size_t len,
                  struct buf *out);

/*
 * Ends the body: CRLF if the last line was not terminated (nothing for an
 * empty body), then ".\r\n" if stuff_dots. Same return convention. After 0
 * the body is complete; dotstuff_init before the next one.
 */
int dotstuff_end(struct dotstuff *d, struct buf *out);

bool dotstuff_saw_8bit(const struct dotstuff *d);

#endif
