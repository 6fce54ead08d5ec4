/*
 * smtp_reply: the SMTP client's reply parser (RFC 5321 4.2, 4.5.3.1.5;
 * RFC 3463 enhanced status codes as carried by RFC 2034) and the reader of
 * EHLO keywords. Pure: no I/O, no globals.
 *
 * Every byte comes from a server that may be hostile (OpenSMTPD
 * CVE-2020-8794 was an out-of-bounds read on a short continuation line).
 * A bad reply gives SMTP_REPLY_BAD with a static reason; the caller drops
 * the connection and treats the attempt as a temporary failure. Memory is
 * bounded by the caller's limits (lib/limits.h: LIM_SMTP_REPLY_LINE,
 * LIM_SMTP_REPLY_LINES, LIM_SMTP_REPLY_SIZE); nothing here caps input
 * except the fixed fields of struct smtp_reply/smtp_ehlo.
 *
 * Lines. A line is 3 digits, then ' ' (last line) or '-' (more follow),
 * then text, then CRLF. A bare "250" CRLF is a valid last line; "250-"
 * CRLF is a continuation with empty text. LF alone also ends a line (one CR
 * before it is stripped); any other CR or control octet inside the text is
 * kept as '?' (see text below). First digit 2-5, second 0-5, third 0-9;
 * every line of one reply has the first line's code. A NUL anywhere in a
 * line is BAD.
 *
 * Limits, all checked on complete lines only, so that the result never
 * depends on how the input was split:
 *  - line_max: octets of one line including its line end ("250 ok\r\n" is
 *    8). A partial line (no LF yet) of line_max octets or more cannot end
 *    within the limit, so it is BAD at once: the caller never holds more
 *    than line_max - 1 unconsumed octets.
 *  - lines_max: lines of one reply.
 *  - size_max: octets of one reply as received (codes and line ends
 *    included); the stored text is never longer than that.
 * Checks on a complete line, in this order: line too long, NUL byte,
 * malformed line, code differs from the first line's, too many lines,
 * reply too large.
 *
 * Enhanced codes: "c.sss.ddd" at the start of a line's text, with class c
 * one of 2, 4, 5 (RFC 3463) and equal to the reply code's first digit,
 * subject and detail 1-3 digits, followed by SP or the end of the line.
 * Where present on a line, it and one SP after it are removed from that
 * line's text. The first line's code is kept in `enhanced`.
 */
#ifndef ESTAFETA_PROTO_SMTP_REPLY_H
#define ESTAFETA_PROTO_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

struct smtp_reply_limits {
    size_t line_max;    /* LIM_SMTP_REPLY_LINE, including the line end */
    size_t lines_max;   /* LIM_SMTP_REPLY_LINES */
    size_t size_max;    /* LIM_SMTP_REPLY_SIZE, octets as received */
};

struct smtp_reply {
    int code;              /* 200..559 */
    char enhanced[16];     /* "5.1.1" from the first line if present and of
                              the code's class, else "" */
    char *text;            /* owned (free with smtp_reply_clear), NUL-
                              terminated: each line's text (code, separator
                              and enhanced code removed) joined by '\n';
                              control octets other than TAB are '?', so it
                              is safe for logs and DSNs; 8-bit octets kept.
                              Never contains NUL, so strlen(text) == text_len. */
    size_t text_len;
    size_t nlines;         /* >= 1 */
};

/* Private state; copies nothing from the caller's input between calls
 * except the reply assembled so far (in `text`, capped by size_max). */
struct smtp_reply_parser {
    struct smtp_reply_limits lim;
    struct buf text;       /* the reply's text so far */
    size_t raw;            /* octets of the reply's complete lines so far */
    size_t nlines;
    int code;              /* the first line's code, 0 before it */
    char enhanced[16];
    size_t scanned;        /* octets at the front of the next input already
                              known to hold no LF (the partial line the
                              caller kept): spares rescanning it when a
                              server trickles one octet at a time */
};

void smtp_reply_parser_init(struct smtp_reply_parser *p,
                            const struct smtp_reply_limits *lim);
/* Frees a partially read reply; the parser may be init'ed again. */
void smtp_reply_parser_free(struct smtp_reply_parser *p);

enum smtp_reply_status { SMTP_REPLY_MORE, SMTP_REPLY_DONE, SMTP_REPLY_BAD };

/*
 * Consumes complete lines from in[0..len) and sets *used_r to the octets
 * consumed; the caller drops them from its input buffer and calls again
 * with the rest plus new octets.
 *  MORE: need more input. A partial last line is not consumed (the caller
 *        keeps it) unless it is already too long to end within line_max,
 *        which is BAD.
 *  DONE: *r filled (free with smtp_reply_clear); the parser is reset for
 *        the next reply; octets after the reply are not consumed (the
 *        replies to pipelined commands: call again with them).
 *  BAD:  *err_r is a static string saying why; *used_r covers the lines
 *        before the offending one. The parser is reset, but the stream is
 *        out of step: the caller drops the connection (temporary failure).
 * *r is written only on DONE; *err_r only on BAD.
 */
enum smtp_reply_status smtp_reply_parse(struct smtp_reply_parser *p,
                                        const void *in, size_t len,
                                        size_t *used_r, struct smtp_reply *r,
                                        const char **err_r);

/* Frees r->text and zeroes *r (safe on a zeroed reply and twice). */
void smtp_reply_clear(struct smtp_reply *r);

/*
 * Appends the one-line form "550 5.1.1 text..." (lines joined by a space;
 * no enhanced code or text parts when empty) to out, for logs and the DSN
 * Diagnostic-Code. Returns 0, or -1 if out's cap would be exceeded (out
 * unchanged).
 */
int smtp_reply_format(const struct smtp_reply *r, struct buf *out);

struct smtp_ehlo {
    bool pipelining, eightbitmime, smtputf8, dsn, chunking, binarymime,
        starttls, enhancedstatuscodes;
    bool size_advertised;
    uint64_t size_max;       /* SIZE n; 0 = no limit given (no or bad
                                number, or one beyond uint64_t) */
    char auth_mechs[256];    /* space-separated upper-case SASL names from
                                "AUTH ..." and old "AUTH=..." lines, de-
                                duplicated, only whole names that fit */
};

/*
 * Reads the keywords of a 250 EHLO reply into *caps_r (zeroed first; left
 * zeroed for any other code). Line 1 is the greeting and is skipped.
 * Keywords are case-insensitive and must be the whole first word of their
 * line (SP or TAB separate words); other lines are ignored. SIZE: the first
 * SIZE line counts. SASL names: 1-20 of A-Z 0-9 '-' '_' (RFC 4422 3.1),
 * others ignored.
 */
void smtp_ehlo_parse(const struct smtp_reply *r, struct smtp_ehlo *caps_r);

#endif
