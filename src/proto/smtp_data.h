/*
 * smtp_data: the DATA reader (RFC 5321 4.1.1.4, 4.5.2), pure.
 *
 * Bytes in, message bytes out. Only <CRLF>.<CRLF> ends the message (the
 * CRLF before the dot may be the one that ended the DATA command: the
 * reader starts "at the beginning of a line"). Every other sequence listed
 * in shared/design/security.md 2 (\n.\n, \r.\r, \r\n.\r followed by anything
 * but \n, ...) is message content: the reader keeps reading and records
 * that the message held a bare CR or bare LF, so that the session rejects
 * it at the real end (550 5.6.0) and never reads the rest as commands.
 *
 * Output: the message with dot-stuffing removed (a line starting ".." loses
 * its first dot), line ends exactly as received, without the final ".\r\n".
 * If no bare CR/LF was seen (the only messages the session accepts),
 * the output therefore has CRLF line ends only.
 *
 * Precisely (the tests hold these):
 *  - "Beginning of a line" is the start of the data or just after CRLF;
 *    never after a bare LF or bare CR. A dot there is never output: it is
 *    the terminator's or a stuffing dot (also before a bare CR/LF, e.g.
 *    "\r\n.\r\r\n" outputs "\r\n\r\r\n"; the message is rejected anyway).
 *  - A line ends only at CRLF. `lines` counts CRLFs output (the CRLF before
 *    the terminator is output and counted). `long_line` is set when a line
 *    has more than max_line octets including its CRLF, not counting a
 *    stuffing dot (RFC 5321 4.5.3.1.6).
 *  - bare_cr is set once the octet after a CR is known not to be LF; a CR
 *    at the end of the fed input so far is not yet bare.
 *  - has_nul / has_8bit cover message octets (not the terminator).
 *  - After SMTP_DATA_END, further calls return SMTP_DATA_END, consuming
 *    and outputting nothing.
 * Results (output bytes, flags, end position) do not depend on how the
 * input is split into calls.
 *
 * Memory: no allocation; state is a few bytes. The caller gives an output
 * buffer of at least len + SMTP_DATA_OUT_SLACK bytes for len input bytes
 * (bytes held back across calls, such as a pending CR, come out later).
 */
#ifndef ESTAFETA_PROTO_SMTP_DATA_H
#define ESTAFETA_PROTO_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_DATA_OUT_SLACK 4

enum smtp_data_result {
    SMTP_DATA_MORE,   /* all input consumed; the message continues */
    SMTP_DATA_END,    /* end seen; *consumed_r bytes were used (the rest of
                         the input is the next command, e.g. pipelined QUIT) */
};

struct smtp_data_reader {
    int state;               /* private */
    size_t max_line;         /* LIM_SMTP_TEXT_LINE, including CRLF */
    size_t line_len;         /* private: octets in the current line so far */
    uint64_t out_total;      /* message octets output so far */
    uint64_t lines;          /* lines output so far */
    bool bare_cr;            /* a CR not followed by LF was seen */
    bool bare_lf;            /* an LF not preceded by CR was seen */
    bool long_line;          /* a line exceeded max_line */
    bool has_nul;            /* a NUL octet was seen */
    bool has_8bit;           /* an octet >= 0x80 was seen */
};

void smtp_data_init(struct smtp_data_reader *r, size_t max_line);

/*
 * Feed in[0..len). Writes message bytes to out (capacity as above) and sets
 * *out_len_r and *consumed_r. After SMTP_DATA_END the reader must be
 * re-initialised before it is used again.
 */
enum smtp_data_result smtp_data_feed(struct smtp_data_reader *r,
                                     const char *in, size_t len,
                                     char *out, size_t *out_len_r,
                                     size_t *consumed_r);

#endif
