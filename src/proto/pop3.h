/*
 * pop3: pure parsing of the POP3 command channel (RFC 1939, extensions of
 * RFC 2449 CAPA, RFC 5034 AUTH, RFC 2595 STLS, RFC 6856 UTF8) and the
 * byte-stuffing writer for RETR/TOP replies (RFC 1939 3). No I/O, no
 * globals, no allocation: results point into the caller's line.
 *
 * 1. Line reader. pop3_line_next() has exactly the contract of
 *    smtp_line_next() (proto/smtp_cmd.h) and is implemented by it, so the
 *    CR/LF policy is decided in one place: a line ends at CRLF or a bare LF;
 *    a CR elsewhere or a NUL makes the line POP3_LINE_BAD; a line longer
 *    than max (counting its CRLF) is POP3_LINE_TOO_LONG, reported once at
 *    its LF, without holding more than max bytes. Commands are read with
 *    POP3_CMD_LINE_MAX; AUTH continuation lines (base64, RFC 5034 4) with
 *    POP3_AUTH_LINE_MAX: the server switches with pop3_line_set_max()
 *    between two calls.
 *
 * 2. Commands. pop3_cmd_parse() maps the keyword (case-insensitive) and
 *    checks the arguments of each command strictly: arguments are separated
 *    by one SP; trailing SP/HT of the line are ignored, except for PASS,
 *    whose argument is the rest of the line exactly (RFC 1939 7: a password
 *    may hold spaces). Numbers are 1..10 decimal digits, no sign, at most
 *    UINT32_MAX; message numbers are >= 1. String arguments never hold
 *    control characters; 8-bit octets must be well-formed UTF-8 (RFC 6856
 *    allows UTF-8 user names and passwords after UTF8; the parser reports
 *    eightbit and the session decides whether UTF8 mode is on).
 *
 * 3. Stuffing writer. pop3_stuff_feed() turns message bytes as stored into
 *    the body of a multi-line reply: every line starting with "." gets one
 *    more "."; line ends come out as CRLF whatever they were (a bare LF or a
 *    bare CR ends a line and is written as CRLF, so the client never sees a
 *    bare CR or LF, and a line after a bare CR is stuffed too: the Dovecot
 *    CVE-2026-33604 lesson); pop3_stuff_finish() ends the last line if it
 *    was not ended and adds ".\r\n". In TOP mode the writer passes the
 *    header section, the empty line after it, then n body lines, and then
 *    reports POP3_STUFF_DONE so the server stops reading the message.
 *    Output is the same whatever the split of the input into calls.
 */
#ifndef ESTAFETA_PROTO_POP3_H
#define ESTAFETA_PROTO_POP3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/smtp_cmd.h"

/* RFC 2449 4: a command is at most 255 octets including CRLF. */
#define POP3_CMD_LINE_MAX 255
/* RFC 5034 4: a client response line holds up to 12288 octets of base64
 * (SASL_LINE_MAX in proto/sasl.h), plus CRLF. */
#define POP3_AUTH_LINE_MAX (12288 + 2)

/* ---- 1. line reader ---- */

enum pop3_line_result {
    POP3_LINE_NEED_MORE,  /* no complete line yet; *consumed_r bytes may be dropped */
    POP3_LINE_OK,         /* *line_r,*line_len_r: the line without its end */
    POP3_LINE_TOO_LONG,   /* a line longer than max ended here: -ERR */
    POP3_LINE_BAD,        /* the line holds a bare CR or a NUL: -ERR */
};

struct pop3_line_reader {
    struct smtp_line_reader lr;   /* private: the shared line policy */
};

void pop3_line_init(struct pop3_line_reader *lr, size_t max);
/* Changes the longest line accepted from the next call on. An over-long
 * line being discarded is still discarded up to its LF. */
void pop3_line_set_max(struct pop3_line_reader *lr, size_t max);

/*
 * Looks at in[0..len). Always sets *consumed_r: the number of bytes the
 * caller must drop from the front of its buffer after handling the result
 * (the line and its terminator for OK/TOO_LONG/BAD; for NEED_MORE, bytes of
 * an over-long line already discarded, else 0). Never reads beyond len.
 * With NEED_MORE and *consumed_r == 0 the caller holds fewer than max
 * bytes: when len >= max and no LF is present the reader switches to
 * discarding and consumes them.
 */
enum pop3_line_result pop3_line_next(struct pop3_line_reader *lr,
                                     const char *in, size_t len,
                                     const char **line_r, size_t *line_len_r,
                                     size_t *consumed_r);

/* ---- 2. commands ---- */

/* (Named pop3_verb, not pop3_cmd: enum and struct tags share one name
 * space in C, and struct pop3_cmd is the parse result.) */
enum pop3_verb {
    POP3_CMD_UNKNOWN = 0,
    POP3_CMD_USER,   /* USER name                      arg */
    POP3_CMD_PASS,   /* PASS string                    arg (rest of line) */
    POP3_CMD_APOP,   /* APOP name digest               arg, arg2 (32 hex) */
    POP3_CMD_STAT,
    POP3_CMD_LIST,   /* LIST [msg]                     num[0] if nnum == 1 */
    POP3_CMD_RETR,   /* RETR msg                       num[0] */
    POP3_CMD_DELE,   /* DELE msg                       num[0] */
    POP3_CMD_NOOP,
    POP3_CMD_RSET,
    POP3_CMD_QUIT,
    POP3_CMD_TOP,    /* TOP msg n                      num[0], num[1] (n may be 0) */
    POP3_CMD_UIDL,   /* UIDL [msg]                     num[0] if nnum == 1 */
    POP3_CMD_CAPA,
    POP3_CMD_AUTH,   /* AUTH [mech [initial-response]] arg, arg2 */
    POP3_CMD_STLS,
    POP3_CMD_UTF8,
    POP3_CMD__COUNT
};

enum pop3_err {
    POP3_ERR_NONE = 0,
    POP3_ERR_UNKNOWN,   /* keyword not recognised (LANG, XTND, garbage...) */
    POP3_ERR_SYNTAX,    /* wrong number or form of arguments */
    POP3_ERR_NUMBER,    /* a number that is not 1..10 digits, is too large,
                           or a message number 0 */
};

struct pop3_cmd {
    enum pop3_verb verb;     /* set even when the arguments are wrong */
    const char *verb_text;   /* the keyword as sent, points into the line */
    size_t verb_len;
    unsigned nnum;           /* numeric arguments given: 0, 1 or 2 */
    uint32_t num[2];         /* 0 where not given */
    /* USER/APOP name, PASS password, AUTH mechanism; NULL if none. */
    const char *arg;
    size_t arg_len;
    /* APOP digest, AUTH initial response ("=" is an empty one, RFC 5034 4:
     * decoding is proto/sasl.h's job); NULL if none. */
    const char *arg2;
    size_t arg2_len;
    bool eightbit;           /* arg holds UTF-8 beyond ASCII (RFC 6856) */
    enum pop3_err error;     /* POP3_ERR_NONE on success */
    const char *reason;      /* static text to send after "-ERR ", no CR/LF;
                                "" on success */
};

/*
 * Parses one line from the line reader (without its CRLF). Returns 0 with
 * *r filled, or -1 with r->error and r->reason set (r->verb tells which
 * command it was, for the session's error counting; other fields are then
 * unspecified). Rules beyond the header comment:
 *  - the keyword is everything before the first SP: "QUIT\tx" is
 *    unknown (after trimming, "QUIT\t" is QUIT);
 *  - STAT NOOP RSET QUIT CAPA STLS UTF8 take no argument;
 *  - USER name, APOP name: one token of printable ASCII or UTF-8, no SP;
 *  - PASS: everything after "PASS ", non-empty; no control characters but
 *    HT; 8-bit octets must be UTF-8;
 *  - APOP digest: 32 hex digits (RFC 1939 7 says lower case; either case
 *    is taken, the session compares without case);
 *  - AUTH mech: 1..20 of A-Z a-z 0-9 - _ (RFC 4422 3.1); initial
 *    response: base64 characters and "=" only.
 * Never reads beyond len; a line holding NUL or CR (not from the reader)
 * fails, never crashes.
 */
int pop3_cmd_parse(const char *line, size_t len, struct pop3_cmd *r);

/* Upper-case keyword ("RETR") for logs; "" for POP3_CMD_UNKNOWN. */
const char *pop3_verb_name(enum pop3_verb verb);

/* ---- 3. stuffing writer (RETR, TOP) ---- */

/*
 * Output capacity: a call with len input bytes writes at most
 * 2 * len + POP3_STUFF_OUT_SLACK bytes (a "." at the start of a line and a
 * bare LF each become two bytes; a bare CR held from the previous call
 * adds its LF). pop3_stuff_in_max() gives the largest len for a capacity.
 * pop3_stuff_finish() writes at most POP3_STUFF_FINISH_MAX bytes.
 */
#define POP3_STUFF_OUT_SLACK 1
#define POP3_STUFF_FINISH_MAX 5   /* "\r\n.\r\n" */

enum pop3_stuff_result {
    POP3_STUFF_MORE,   /* all input consumed; feed more or finish */
    POP3_STUFF_DONE,   /* TOP: the last wanted line was written; *consumed_r
                          bytes were used, the rest of the message is not
                          wanted. Call pop3_stuff_finish(). */
};

struct pop3_stuff {
    int state;             /* private */
    bool top;              /* private: TOP mode */
    bool in_body;          /* private: the empty line after the headers passed */
    bool line_empty;       /* private: no octet yet in the current line */
    uint64_t lines_left;   /* private: TOP body lines still to write */
    uint64_t out_total;    /* octets written so far (finish included) */
};

/* RETR: the whole message. */
void pop3_stuff_init(struct pop3_stuff *s);
/* TOP msg n: the header section, the empty line, then n body lines. A
 * message without an empty line is all header and is written whole. */
void pop3_stuff_init_top(struct pop3_stuff *s, uint32_t n);

/*
 * Feeds in[0..len); writes to out (capacity as above) and sets *out_len_r
 * and *consumed_r (len for POP3_STUFF_MORE). After POP3_STUFF_DONE or
 * pop3_stuff_finish() further feeds consume and write nothing.
 */
enum pop3_stuff_result pop3_stuff_feed(struct pop3_stuff *s,
                                       const char *in, size_t len,
                                       char *out, size_t *out_len_r,
                                       size_t *consumed_r);

/*
 * Ends the reply: CRLF if the last line was not ended, then ".\r\n".
 * Returns the bytes written to out (at most POP3_STUFF_FINISH_MAX); 0 if
 * already finished. The writer must be re-initialised to be used again.
 */
size_t pop3_stuff_finish(struct pop3_stuff *s, char *out);

/* Largest len a call may feed with out_cap bytes of output space
 * (0 when out_cap < 2 + POP3_STUFF_OUT_SLACK). */
size_t pop3_stuff_in_max(size_t out_cap);

#endif
