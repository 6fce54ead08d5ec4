/*
 * smtp_cmd: pure parsing of the SMTP command channel (RFC 5321 4.1, ESMTP
 * parameters of RFC 1870, 6152, 6531, 3030, 3461, 4954). No I/O, no globals,
 * no allocation: results point into the caller's input or into fixed-size
 * fields of the result structs, so memory use is bounded by construction.
 *
 * 1. Line reader. smtp_line_next() finds one command line in a byte buffer.
 *    A line ends at CRLF; a bare LF also ends a command line (as Postfix and
 *    Exim accept from hand-typed sessions) but a CR not followed by LF inside
 *    a command line makes it SMTP_LINE_BAD. This policy applies to the
 *    command channel only; message data is read by smtp_data.h, where only
 *    <CRLF>.<CRLF> ends the message.
 *
 * 2. Command split. smtp_cmd_parse() maps the verb (case-insensitive) and
 *    gives the argument (text after the single SP).
 *
 * 3. MAIL/RCPT arguments. smtp_parse_mail()/smtp_parse_rcpt() parse the path
 *    and ESMTP parameters and return NULL on success or the reply the client
 *    deserves (a static struct smtp_status).
 */
#ifndef ESTAFETA_PROTO_SMTP_CMD_H
#define ESTAFETA_PROTO_SMTP_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/smtp_status.h"

/* ---- 1. line reader ---- */

enum smtp_line_result {
    SMTP_LINE_NEED_MORE,  /* no complete line yet; *consumed_r bytes may be dropped */
    SMTP_LINE_OK,         /* *line_r,*line_len_r: the line without its end */
    SMTP_LINE_TOO_LONG,   /* a line longer than max ended here: reply 500 5.5.2 */
    SMTP_LINE_BAD,        /* line holds a bare CR or a NUL: reply 500 5.5.2 */
};

struct smtp_line_reader {
    size_t max;        /* longest line including CRLF (LIM_SMTP_COMMAND_LINE) */
    bool discarding;   /* inside an over-long line, dropping bytes until LF */
};

void smtp_line_init(struct smtp_line_reader *lr, size_t max);

/*
 * Looks at in[0..len). Always sets *consumed_r: the number of bytes the
 * caller must drop from the front of its buffer after handling the result
 * (the line and its terminator for OK/TOO_LONG/BAD; for NEED_MORE, bytes of an
 * over-long line already discarded, else 0). Never reads beyond len. With
 * NEED_MORE and *consumed_r == 0 the caller must not hold more than max bytes:
 * when len >= max and no LF is present the reader switches to discarding
 * and consumes them.
 */
enum smtp_line_result smtp_line_next(struct smtp_line_reader *lr,
                                     const char *in, size_t len,
                                     const char **line_r, size_t *line_len_r,
                                     size_t *consumed_r);

/* ---- 2. commands ---- */

enum smtp_verb {
    SMTP_CMD_UNKNOWN = 0,
    SMTP_CMD_HELO, SMTP_CMD_EHLO, SMTP_CMD_MAIL, SMTP_CMD_RCPT,
    SMTP_CMD_DATA, SMTP_CMD_BDAT, SMTP_CMD_RSET, SMTP_CMD_NOOP,
    SMTP_CMD_QUIT, SMTP_CMD_VRFY, SMTP_CMD_EXPN, SMTP_CMD_HELP,
    SMTP_CMD_STARTTLS, SMTP_CMD_AUTH,
    /* RFC 821 commands, recognised and refused (RFC 5321 4.2.4: 502) */
    SMTP_CMD_TURN, SMTP_CMD_SEND, SMTP_CMD_SOML, SMTP_CMD_SAML,
    SMTP_CMD_ETRN, SMTP_CMD_ATRN,
    SMTP_CMD__COUNT
};

struct smtp_cmd {
    enum smtp_verb verb;
    const char *verb_text;  /* points into the line */
    size_t verb_len;
    const char *arg;        /* after the first SP, or NULL when there is none */
    size_t arg_len;         /* trailing SP/HT are not counted */
};

/* Splits a line; never fails (an unknown verb is SMTP_CMD_UNKNOWN).
 * Trailing SP/HT of the line are ignored first, so "QUIT " is QUIT with
 * arg NULL: an argument that is empty after trimming is reported as none.
 * The verb is everything before the first SP: "DATAX" and "DATA\t" are
 * UNKNOWN. */
void smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd_r);
/* Upper-case verb name ("MAIL") for logs and HELP; "" for UNKNOWN. */
const char *smtp_verb_name(enum smtp_verb verb);

/* ---- 3. addresses and parameters ---- */

#define SMTP_LOCAL_MAX 64     /* RFC 5321 4.5.3.1.1 */
#define SMTP_DOMAIN_MAX 255   /* RFC 5321 4.5.3.1.2 */
#define SMTP_ENVID_MAX 100    /* RFC 3461 4.4 */
#define SMTP_ORCPT_MAX 500    /* RFC 3461 4.2 */
#define SMTP_AUTH_PARAM_MAX 513 /* RFC 4954 5: a mailbox as xtext, bounded by the command line */
#define SMTP_PATH_MAX 256     /* RFC 5321 4.5.3.1.3, including "<" and ">" */

struct smtp_addr {
    bool null;               /* "<>" (reverse-path only) */
    bool quoted;             /* local part was a quoted-string */
    bool source_route;       /* "<@a,@b:user@dom>" was given (route dropped) */
    bool domain_literal;     /* domain is "[...]" */
    bool utf8;               /* contains non-ASCII (valid UTF-8, RFC 6531) */
    bool postmaster;         /* "<Postmaster>" with no domain (RCPT only) */
    char local[SMTP_LOCAL_MAX + 1];   /* quoted-pairs resolved, no quotes */
    char domain[SMTP_DOMAIN_MAX + 1]; /* as given; literal keeps brackets;
                                         "" for null/postmaster */
};

enum smtp_body { SMTP_BODY_UNSPEC = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME,
                 SMTP_BODY_BINARYMIME };
enum smtp_ret { SMTP_RET_UNSPEC = 0, SMTP_RET_FULL, SMTP_RET_HDRS };

#define SMTP_NOTIFY_NEVER   1u
#define SMTP_NOTIFY_SUCCESS 2u
#define SMTP_NOTIFY_FAILURE 4u
#define SMTP_NOTIFY_DELAY   8u

struct smtp_mail_args {
    struct smtp_addr from;
    bool size_given;
    uint64_t size;                     /* SIZE=, RFC 1870 */
    enum smtp_body body;               /* BODY=, RFC 6152 / 3030 */
    bool smtputf8;                     /* SMTPUTF8, RFC 6531 */
    enum smtp_ret ret;                 /* RET=, RFC 3461 */
    char envid[SMTP_ENVID_MAX + 1];    /* ENVID= as received (xtext), "" if none */
    char auth[SMTP_AUTH_PARAM_MAX + 1];     /* AUTH= (RFC 4954) as xtext, "" if none */
};

struct smtp_rcpt_args {
    struct smtp_addr to;
    unsigned notify;                   /* SMTP_NOTIFY_* bits, 0 if not given */
    char orcpt[SMTP_ORCPT_MAX + 1];    /* ORCPT= as received: "rfc822;xtext",
                                          "" if none */
};

/*
 * What the session allows at this point; the parser refuses a parameter
 * whose extension is not offered (555 5.5.4) instead of silently accepting it.
 */
struct smtp_parse_opts {
    bool esmtp;            /* EHLO was used (parameters allowed at all) */
    bool smtputf8;         /* SMTPUTF8 offered; for RCPT: MAIL had SMTPUTF8.
                              A non-ASCII MAIL FROM also needs the SMTPUTF8
                              parameter on the same command (RFC 6531 3.4) */
    bool dsn;              /* DSN offered */
    bool binarymime;       /* BINARYMIME offered */
    uint64_t max_size;     /* SIZE= above this: 552 5.3.4; 0 = unlimited */
};

/*
 * Parse the argument of MAIL (everything after "MAIL", i.e. "FROM:<...> ...")
 * or RCPT ("TO:<...> ..."). Return NULL and fill *r on success, else the
 * reply to send (501 5.5.2 syntax, 501 5.1.7 bad sender, 501 5.1.3 bad
 * recipient, 553 5.1.x address too long, 555 5.5.4 unknown or unoffered
 * parameter, 501 5.5.4 bad or repeated parameter value, 552 5.3.4 SIZE over
 * max_size, 553 5.6.7 non-ASCII without SMTPUTF8). Rules:
 *  - the path must be in angle brackets; one SP after the colon is tolerated
 *    (common client bug), no other space inside the path;
 *  - local part: dot-string or quoted-string (RFC 5321 4.1.2), at most 64
 *    octets; no control characters or NUL even when quoted;
 *  - domain: dot-separated labels of letters, digits, hyphen (or UTF-8 with
 *    SMTPUTF8), each 1..63, or an address literal [IPv4] / [IPv6:...];
 *  - xtext values (ENVID, ORCPT, AUTH) must be valid RFC 3461 xtext and must
 *    decode to printable US-ASCII, so no CR, LF or NUL can ever reach the
 *    queue through them (Exim CVE-2020-28026).
 * arg may be NULL (no argument: 501 5.5.2). After an error *r is partly
 * filled and must not be used. Relay forms (user%other@local, source routes,
 * quoted "a@b" local parts, other!user@local) are parsed, not refused: the
 * recipient resolver decides on them.
 */
const struct smtp_status *smtp_parse_mail(const char *arg, size_t len,
                                          const struct smtp_parse_opts *opts,
                                          struct smtp_mail_args *r);
const struct smtp_status *smtp_parse_rcpt(const char *arg, size_t len,
                                          const struct smtp_parse_opts *opts,
                                          struct smtp_rcpt_args *r);

/*
 * Parses the path at the start of in[0..len): "<" [route ":"] mailbox ">",
 * or "<>" / "<Postmaster>" when flags allow. Used by smtp_parse_mail/rcpt,
 * which map the result to their replies; exposed for other callers that take
 * an address from a peer. On SMTP_PATH_OK fills *a_r and sets *used_r to the
 * path's length including both brackets (the caller checks what follows).
 * The local part's length limit is applied to its form on the wire (quotes
 * and backslashes included); an empty quoted local part ("") is refused.
 * "<Postmaster>" (any case) gives postmaster=true, local "postmaster" and
 * domain "".
 */
enum smtp_path_result {
    SMTP_PATH_OK,
    SMTP_PATH_SYNTAX,    /* no "<" at the start, or no closing ">" */
    SMTP_PATH_BAD,       /* inside the brackets: not a valid path */
    SMTP_PATH_TOO_LONG,  /* path > SMTP_PATH_MAX or local part > SMTP_LOCAL_MAX */
    SMTP_PATH_UTF8,      /* non-ASCII where SMTP_PATH_ALLOW_UTF8 was not given */
};
#define SMTP_PATH_ALLOW_NULL       1u  /* "<>" (reverse-path) */
#define SMTP_PATH_ALLOW_POSTMASTER 2u  /* "<Postmaster>" (forward-path) */
#define SMTP_PATH_ALLOW_UTF8       4u  /* RFC 6531 UTF-8 local part / U-labels */

enum smtp_path_result smtp_path_parse(const char *in, size_t len, unsigned flags,
                                      struct smtp_addr *a_r, size_t *used_r);

/*
 * Decode RFC 3461 xtext in[0..len) into out (capacity out_cap, NUL added).
 * Returns the decoded length, or -1 if the xtext is malformed, decodes to a
 * byte outside 0x20..0x7e, or does not fit. out may be NULL (out_cap is then
 * ignored) to validate only. hexchar needs UPPER-case hex digits ("+2B").
 */
long smtp_xtext_decode(const char *in, size_t len, char *out, size_t out_cap);

/* Formats an address as "local@domain" (quoting the local part again when
 * needed) into out; returns the length, or -1 if out_cap is too small. "" for
 * the null path. */
long smtp_addr_format(const struct smtp_addr *a, char *out, size_t out_cap);

/* Validates a HELO/EHLO argument: a domain or address literal (RFC 5321
 * 4.1.1.1), also a bare IPv4 dotted quad and '_' in labels, both common in
 * the wild; never spaces, controls or 8-bit bytes. Returns true if acceptable. Used only to decide the reply; the
 * text is recorded in Received: in a form that cannot break the header. */
bool smtp_helo_valid(const char *arg, size_t len);

#endif
