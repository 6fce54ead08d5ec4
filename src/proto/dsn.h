/*
 * dsn: the text of delivery status notifications (RFC 3464 message/
 * delivery-status inside an RFC 6522 multipart/report, RFC 6533 for
 * SMTPUTF8 messages), as pure functions: no I/O, no clock, no randomness.
 * The caller (relay/bounce.c) supplies the time, the random tokens and the
 * original message's bytes, so the tests can check every octet.
 *
 * A report is written in three steps:
 *   dsn_writer_init/next  everything before the original's bytes: the
 *                         header, part 1 (human text), part 2 (the
 *                         delivery-status fields) and the headers of part 3,
 *                         one bounded piece at a time so a report about
 *                         100,000 recipients is never held whole;
 *   dsn_copy_init/feed    the original, streamed through a filter that cuts
 *                         it at the end of its header section (headers-only
 *                         return), watches for the boundary, for 8-bit
 *                         octets, and for a size beyond the limit;
 *   dsn_write_end         the end of part 3 and the closing delimiter.
 *
 * What every report holds (the tests check each):
 *  - Every line ends in CRLF; no header line and no line of parts 1 and 2
 *    is longer than DSN_LINE_MAX octets (long fields are folded at spaces
 *    near 78 columns; a single word too long for a line is broken).
 *  - Peer-supplied text (diagnostics, host names, HELO, addresses) is
 *    cleaned: control characters become '?', and so does every non-ASCII
 *    octet unless the report is SMTPUTF8 (then valid UTF-8 is kept and
 *    invalid sequences become '?'); each is cut to its cap with "...".
 *  - ENVID and ORCPT are decoded from xtext (RFC 3461 4.2, 4.4); a value
 *    that does not decode is left out rather than reported wrongly.
 *  - Status (RFC 3463): the recipient's own if valid, else the enhanced code
 *    of its diagnostic ("550 5.1.1 ..." gives 5.1.1), else 5.0.0 for failed,
 *    4.0.0 for delayed, 2.0.0 otherwise.
 *  - Parts: text/plain (charset us-ascii, or utf-8 for SMTPUTF8 reports),
 *    message/delivery-status (message/global-delivery-status), and
 *    message/rfc822 or text/rfc822-headers (message/global or
 *    message/global-headers). report-type names the second part's subtype.
 */
#ifndef ESTAFETA_PROTO_DSN_H
#define ESTAFETA_PROTO_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

#define DSN_LINE_MAX 998        /* RFC 5322 2.1.1, without the CRLF */
#define DSN_FOLD_AT 78          /* RFC 5322 2.1.1 SHOULD */
#define DSN_DIAG_MAX 900        /* octets of a diagnostic kept */
#define DSN_ADDR_MAX 512        /* octets of an address kept (path 256, ORCPT 500) */
#define DSN_HOST_MAX 255        /* octets of a host name / HELO kept */
#define DSN_DATE_SIZE 40        /* "Sun, 24 Nov 2026 12:00:00 +0000" + NUL */
#define DSN_STATUS_SIZE 12      /* "5.123.123" + NUL */
#define DSN_RANDOM_BYTES 24     /* random octets in a boundary (about 142 bits) */
#define DSN_BOUNDARY_SIZE 48    /* "=_estafeta_" + 24 chars + NUL, fits RFC 2046's 70 */
#define DSN_TOKEN_MAX 64        /* longest message-id token accepted */

enum dsn_action { DSN_FAILED, DSN_DELAYED, DSN_DELIVERED, DSN_RELAYED, DSN_EXPANDED };
/* What the report is about as a whole (Subject, the rules for part 3). */
enum dsn_kind { DSN_KIND_FAILURE, DSN_KIND_DELAY, DSN_KIND_SUCCESS };
/* What part 3 holds, and when headers, why (said in part 1). */
enum dsn_return {
    DSN_RETURN_FULL,        /* the whole original */
    DSN_RETURN_HDRS,        /* headers: RET=HDRS was asked */
    DSN_RETURN_HDRS_REPORT, /* headers: not a failure report */
    DSN_RETURN_HDRS_SIZE,   /* headers: the original is over bounce-size */
    DSN_RETURN_HDRS_BINARY, /* headers: BODY=BINARYMIME cannot be carried */
};

struct dsn_rcpt {
    const char *address;     /* final recipient "local@domain" */
    const char *orcpt;       /* "" / NULL, or as stored: "rfc822;xtext" */
    enum dsn_action action;
    const char *status;      /* "5.1.1" or NULL: see the rules above */
    const char *remote_mta;  /* NULL / "" when not known */
    const char *diagnostic;  /* NULL / "" when none */
    int64_t last_attempt;    /* unix seconds, 0 = unknown */
    int64_t retry_until;     /* DSN_DELAYED: when we give up; 0 = unknown */
};

struct dsn_report {
    const char *hostname;       /* Reporting-MTA, From, Message-ID */
    const char *queue_id;       /* the original's id ("" = none) */
    const char *sender;         /* the original envelope sender: To: */
    const char *envid;          /* "" / NULL, or ENVID as stored (xtext) */
    const char *client_helo;    /* "" / NULL when not known */
    const char *client_addr;    /* an IP address, else Received-From-MTA is
                                   left out (local submissions) */
    int64_t arrival;            /* Arrival-Date; 0 = unknown */
    int64_t now;                /* Date: */
    bool smtputf8;              /* RFC 6533 variant */
    bool eightbit;              /* the original was declared 8-bit
                                   (8BITMIME or SMTPUTF8): part 3 and the
                                   whole are labelled 8bit */
    enum dsn_return ret;        /* from dsn_return_mode */
    size_t bounce_size;         /* for the note about DSN_RETURN_HDRS_SIZE */
    bool header_cut;            /* the header section passed header_max:
                                   say so in part 1 */
    size_t header_max;          /* for that note */
    const char *boundary;       /* from dsn_boundary */
    const char *message_id;     /* token; written <token@hostname> */
    const struct dsn_rcpt *rcpts;
    size_t nrcpts;
};

/* RFC 3461 4.1: whether a recipient with these NOTIFY bits (0 = not given:
 * FAILURE and DELAY) gets a DSN for this action. NEVER gives none. */
bool dsn_wanted(unsigned notify, enum dsn_action action);
/* Failure if any recipient failed, else delay if any is delayed, else
 * success (also for n == 0). */
enum dsn_kind dsn_kind_of(const struct dsn_rcpt *rcpts, size_t n);
const char *dsn_subject(enum dsn_kind kind);
/* "failed", "delayed", "delivered", "relayed", "expanded". */
const char *dsn_action_name(enum dsn_action action);

/*
 * What part 3 holds. ret is SMTP_RET_* (0 unspecified, 1 FULL, 2 HDRS).
 * The whole original only for a failure report, when RET is not HDRS, the
 * body is not binary and body_size <= bounce_size; else headers with the
 * reason.
 */
enum dsn_return dsn_return_mode(int ret, enum dsn_kind kind, bool binary,
                                uint64_t body_size, size_t bounce_size);

/* RFC 5322 3.3 date in UTC: "Sun, 24 Nov 2026 12:00:00 +0000". A time out
 * of range for the calendar gives the epoch. */
void dsn_date(int64_t t, char out[DSN_DATE_SIZE]);
/* The status this recipient is reported with (rules above). */
void dsn_status_of(const struct dsn_rcpt *r, char out[DSN_STATUS_SIZE]);
/* True if s is an RFC 3463 status code "c.s.d" (class 2/4/5, 1-3 digits). */
bool dsn_status_valid(const char *s, size_t len);

/* Random octets as letters and digits (one char per octet, mod 62): at
 * most cap - 1 chars and a NUL; returns the length. */
size_t dsn_token(const unsigned char *rnd, size_t n, char *out, size_t cap);
/* "=_estafeta_" + dsn_token of DSN_RANDOM_BYTES octets. "=_" cannot occur
 * in base64 or quoted-printable text, and the random part cannot be
 * guessed by whoever wrote the original. */
void dsn_boundary(const unsigned char rnd[DSN_RANDOM_BYTES],
                  char out[DSN_BOUNDARY_SIZE]);

/* ---- the head: everything before the original's bytes ---- */

struct dsn_writer {
    /* private */
    const struct dsn_report *r;
    int phase;
    int group;
    size_t i;
    bool eightbit;
};

void dsn_writer_init(struct dsn_writer *w, const struct dsn_report *r);
/*
 * Appends the next piece (a few KiB at most: one recipient's lines, or one
 * fixed section) to out. Returns 1 when a piece was added, 0 when the head
 * is complete (nothing added), -1 if out's cap was reached (out unchanged;
 * flush it and call again). The report must stay unchanged meanwhile.
 */
int dsn_writer_next(struct dsn_writer *w, struct buf *out);
/* True if any octet of the head written so far is 8-bit. */
bool dsn_writer_8bit(const struct dsn_writer *w);
/* The whole head in one call (tests, small reports): 0 or -1 (cap). */
int dsn_write_head(const struct dsn_report *r, struct buf *out);

/* ---- part 3: the original, streamed ---- */

#define DSN_COPY_SLACK 2   /* out capacity needed beyond the input length */

struct dsn_copy {
    /* private */
    bool headers;              /* cut at the end of the header section */
    int state;
    uint64_t max;              /* octets of the original to take at most */
    char boundary[DSN_BOUNDARY_SIZE];
    size_t blen;
    char tail[DSN_BOUNDARY_SIZE];
    size_t tail_len;
    /* results */
    uint64_t in;               /* octets fed */
    uint64_t out;              /* octets written to the report */
    char last;                 /* last octet written (0 if none) */
    bool done;                 /* nothing more is wanted */
    bool cut;                  /* headers-only: header_max reached first */
    bool over;                 /* full: more than max octets arrived */
    bool eightbit;             /* an octet >= 0x80 was written */
    bool boundary_seen;        /* the boundary occurs in what was written */
};

/*
 * Full copy (headers false): every octet is passed; past max octets `over`
 * is set and nothing more is written (the caller starts again with headers
 * only). Headers-only (headers true): octets up to the end of the header
 * section are passed, without the empty line that ends it (CRLF, or a bare
 * LF, at a line start); a message without one is passed whole. If max
 * octets arrive before that end, the copy stops there and `cut` is set.
 */
void dsn_copy_init(struct dsn_copy *c, bool headers, uint64_t max,
                   const char *boundary);
/* Consumes in[0..len) and writes what belongs in the report to out
 * (capacity len + DSN_COPY_SLACK); the output never depends on how the
 * input is split into calls. */
void dsn_copy_feed(struct dsn_copy *c, const char *in, size_t len, char *out,
                   size_t *out_len_r);
/* Appends what ends part 3 (a CRLF when the copy did not end in one), the
 * closing delimiter and a final CRLF: 0 or -1 (cap). c may be NULL when
 * nothing was copied. */
int dsn_write_end(const struct dsn_report *r, const struct dsn_copy *c,
                  struct buf *out);

#endif
