/*
 * sendmail_msg: what `estafeta sendmail` takes from its caller, before any
 * SMTP (private to the command: cmd_sendmail.c, sendmail_msg.c). The
 * recipients of the command line and of To:/Cc:/Bcc: (-t), checked and
 * qualified; standard input with its line ends made CRLF and the lone "."
 * line honoured; the header section held (capped) for -t and -F; the
 * From: line made from -F.
 *
 * SECURITY: addresses and the full name come from the caller and end up in
 * SMTP commands and a header line: control characters (CR, LF, NUL) are
 * refused, never passed on.
 */
#ifndef ESTAFETA_ESTAFETA_SENDMAIL_MSG_H
#define ESTAFETA_ESTAFETA_SENDMAIL_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "lib/buf.h"

#define SM_CHUNK ((size_t)64 * 1024)
#define SM_FULLNAME_MAX 256

/* The recipients: checked, qualified, in order (sm_arg_list adds the
 * command line's, sm_head_fields those of -t; sm_rcpts_finish drops
 * repeats and enforces the count). */
struct rcpts {
    char **v;
    size_t n;
    size_t max;             /* LIM_SMTP_RECIPIENTS, checked at the end */
    size_t path_max;        /* LIM_PATH: "<address>" */
    const char *domain;     /* for unqualified addresses */
    const char *err;        /* first problem, static text */
    char *err_addr;         /* the address it concerns (owned) */
};

/* Line-end normalizer for what local programs write: LF, CRLF and a bare
 * CR each become CRLF, a last line without an end gets one, and (without
 * -i) a line holding only "." ends the input. Output is at most 2 bytes per
 * input byte, plus 2 at finish. */
struct norm {
    bool dots_ok;
    bool bol;       /* the output is at the beginning of a line */
    bool cr;        /* a CR is pending (is it CRLF or bare?) */
    bool dot;       /* a "." at the beginning of a line is held */
    bool ended;     /* the lone "." line was seen */
};

/* The header section of the message as normalized, and what follows it
 * that was read along. */
struct head {
    struct buf pre;     /* normalized bytes read so far */
    size_t pos;         /* next line to look at */
    size_t skip;        /* bytes of a leading "From " line, dropped */
    size_t end;         /* offset where the header fields end */
    bool done;          /* end is known */
    bool need_blank;    /* the header ended at a non-header line: insert an
                           empty line before it */
    bool any_field;
    bool too_big;       /* no end within header-section: sent unchanged */
    bool eof;           /* standard input is finished (or the lone dot) */
};

/* What sm_head_fields found. */
struct head_info {
    bool has_from;
    const char *bad_field;  /* a To/Cc/Bcc field whose addresses cannot all
                               be read */
    const char *bad_why;    /* and why */
};

/* Validates one address (already without display name and angle brackets,
 * trimmed): no control character, no space or '<' '>' outside a quoted
 * local part, qualified with the primary domain when it has no '@'.
 * Returns the malloc'd address or NULL with *why_r set. */
char *sm_addr_clean(const char *a, size_t len, const char *domain,
                    size_t path_max, const char **why_r);

/* Drops repeated addresses (the first stays, order kept) in n log n, then
 * enforces smtp-recipients. 0, or -1 with r->err set. */
int sm_rcpts_finish(struct rcpts *r);

void sm_rcpts_free(struct rcpts *r);

/* Space or tab (RFC 5322 WSP). */
bool sm_is_wsp(char c);

/* A recipient argument: a comma-separated list (commas inside quotes or
 * angle brackets do not separate). */
void sm_arg_list(struct rcpts *r, const char *s);

/* Normalizes len bytes of input into out (room for 2 * len). */
void sm_norm_feed(struct norm *n, const char *in, size_t len, char *out,
                  size_t *out_len_r);

/* The end of input: the pending CR, or a last line without its end,
 * gets CRLF (out: room for 2); a held dot ends the input. */
void sm_norm_finish(struct norm *n, char *out, size_t *out_len_r);

/* read() until n bytes or end of input; -1 on error. */
ssize_t sm_read_some(int fd, char *p, size_t n);

/* The next piece of standard input (up to SM_CHUNK octets into in),
 * normalized into out (room for 2 * SM_CHUNK + 2), *out_len_r octets; at
 * the end of input the normalizer is finished. The octets read (0 at the
 * end), or -1 with errno. */
ssize_t sm_read_normalized(struct norm *n, char *in, char *out, size_t *out_len_r);

/* Reads standard input until the header section is complete (or input
 * ends, or it exceeds hmax). 0, or -1 on a read error (errno). */
int sm_head_read(struct head *h, struct norm *n, size_t hmax);

/* Looks at every field in [skip, end): From: present?, and for -t the
 * recipients of To:, Cc:, Bcc: (added to r). */
void sm_head_fields(const struct head *h, struct rcpts *r, bool extract,
                    struct head_info *info_r);

/* "From: NAME <addr>\r\n": the name as an atom phrase, a quoted string, or
 * RFC 2047 encoded words (8-bit text), folded between encoded words.
 * NULL on success, else why the name is refused. */
const char *sm_from_line(struct buf *out, const char *name,
                         const char *addr);

#endif
