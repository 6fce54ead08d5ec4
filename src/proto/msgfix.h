/*
 * msgfix: the submission fix-ups of a message's header section (RFC 6409
 * 8: the submission server may add Date: and Message-ID: when missing, and
 * RFC 5322 3.6.3: Bcc: is removed from the copies sent to To:/Cc:
 * recipients), done as a pure streaming filter over the message bytes as
 * they arrive, so the message is never held in memory.
 *
 * Contract:
 *  - msgfix_init(f, flags, header_max): MSGFIX_REMOVE_BCC drops every Bcc:
 *    field (with its continuation lines); the other flags ask that the
 *    corresponding field be added when the header section lacks it.
 *  - msgfix_feed(f, in, len, out, out_len_r): consumes all of in; writes
 *    the filtered bytes to out (capacity: len + MSGFIX_OUT_SLACK + the
 *    length of what msgfix_set_additions gave). Bytes of a field whose
 *    fate is not yet known (a line that may be "Bcc:" but is not complete)
 *    are held inside f (at most MSGFIX_HOLD_MAX octets; a longer field name
 *    cannot be Bcc and is released).
 *  - At the empty line ending the header section, the additions (already
 *    formatted "Date: ...\r\nMessage-ID: <...>\r\n", given beforehand with
 *    msgfix_set_additions) are written for each requested field that was
 *    not seen, before the empty line. A message without a header/body
 *    separator gets them at msgfix_finish().
 *  - msgfix_finish(f, out, out_len_r) flushes held bytes at end of message.
 *  - After header_max octets of header the filter stops looking (passes
 *    everything through) and sets `truncated`.
 *  - Line ends: input is CRLF (the DATA reader guarantees it for accepted
 *    messages); a bare LF is treated as a line end too, never crashes.
 *
 * Precisely (the tests hold these; the output never depends on how the
 * input is split into msgfix_feed calls):
 *  - A line ends at LF. The empty line ("\r\n" or "\n" at a line start)
 *    ends the header section; everything after it (the body) is copied
 *    unchanged.
 *  - A field line is a name (printable ASCII but ':'), optional SP/HT
 *    (obs-optional, RFC 5322 4.5.3: "bcc :"), then ':'. Names compare
 *    ASCII case-insensitively. A Bcc field is dropped from its first octet
 *    through its LF, with every following line that starts with SP/HT.
 *    "Bcc" followed by more SP/HT than the hold can keep (61 octets) is
 *    dropped as a Bcc field: it is either one or a malformed line, and
 *    leaking a Bcc is the worse mistake.
 *  - Any other line (other fields, malformed lines, a line starting with a
 *    bare CR) is copied unchanged. has_date/has_message_id/has_from report
 *    the fields seen (their colon before header_max).
 *  - header_max: `truncated` is set when an octet at offset >= header_max
 *    arrives before the empty line. The line in progress is still decided
 *    (a Bcc field at the boundary is still dropped, with its continuation
 *    lines); after it everything is copied and nothing is added.
 *  - Additions: at the empty line (when not truncated), date_line if
 *    MSGFIX_ADD_DATE was asked and no Date: was seen, then msgid_line if
 *    MSGFIX_ADD_MESSAGE_ID was asked and no Message-ID: was seen. Without
 *    an empty line (and not truncated), msgfix_finish writes them at the
 *    end, after a CRLF if the output so far does not end with LF.
 *  - msgfix_set_additions ignores a line that is longer than
 *    MSGFIX_ADDITION_MAX - 1 or does not end in CRLF (it would otherwise
 *    merge with the empty line and turn the body into header).
 *  - After msgfix_finish, feed and finish write nothing.
 */
#ifndef ESTAFETA_PROTO_MSGFIX_H
#define ESTAFETA_PROTO_MSGFIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MSGFIX_REMOVE_BCC      1u
#define MSGFIX_ADD_DATE        2u
#define MSGFIX_ADD_MESSAGE_ID  4u
#define MSGFIX_HOLD_MAX 64
#define MSGFIX_OUT_SLACK (MSGFIX_HOLD_MAX + 8)
#define MSGFIX_ADDITION_MAX 512

struct msgfix {
    /* private */
    unsigned flags;
    int state;
    size_t header_max;
    uint64_t seen_octets;
    char hold[MSGFIX_HOLD_MAX + 8];
    size_t hold_len;
    char date_line[MSGFIX_ADDITION_MAX];
    char msgid_line[MSGFIX_ADDITION_MAX];
    char name[12];          /* lower-cased start of the field name */
    size_t name_len;        /* saturates at sizeof name + 1 */
    bool cur_bcc;           /* the current field is a dropped Bcc */
    bool any_out;           /* something was written */
    char last_out;          /* the last octet written */
    /* results */
    bool has_date, has_message_id, has_from;
    unsigned bcc_removed;
    bool header_done;
    bool truncated;
};

void msgfix_init(struct msgfix *f, unsigned flags, size_t header_max);
/* The exact lines to add, each ending in CRLF (or "" / NULL for none). */
void msgfix_set_additions(struct msgfix *f, const char *date_line,
                          const char *msgid_line);
void msgfix_feed(struct msgfix *f, const char *in, size_t len, char *out,
                 size_t *out_len_r);
void msgfix_finish(struct msgfix *f, char *out, size_t *out_len_r);

#endif
