/*
 * rfc5322: a pure, incremental scanner of a message's header section
 * (RFC 5322 2.2), fed with the message bytes as they are stored (CRLF line
 * ends). It allocates nothing and keeps counts only, so a huge or hostile
 * header costs constant memory and linear time.
 *
 * It answers what the server needs to decide about a message:
 *  - how many Received: fields there are (loop detection, RFC 5321 6.3);
 *  - whether Date:, Message-ID:, From:, Bcc: fields are present (for
 *    submission fix-ups later);
 *  - where the header section ends (offset of the empty line) and whether
 *    it exceeded the configured size (the scan then stops counting and sets
 *    `truncated`).
 * Field names are matched case-insensitively; a field is counted once at
 * its first line, continuation lines (starting with SP/HT) are not fields.
 * A line that is neither a field nor a continuation (no colon) ends nothing
 * but is counted in `malformed`.
 *
 * Precisely (the tests hold these):
 *  - A line ends at LF, with or without a CR before it (the scanner may be
 *    fed anything). The empty line is "\r\n" or "\n" at a line start;
 *    header_end is the offset just after its LF.
 *  - A field line is a field name (ftext: printable ASCII but ':'), then
 *    optional SP/HT (obs-optional, RFC 5322 4.5.3: "Received :"), then ':'.
 *    A name longer than sizeof name is still a field, just not a known one.
 *  - Malformed: a line whose field-name position holds no such name and
 *    colon (no colon, empty name, a control/8-bit octet, "From foo"), and a
 *    continuation line with nothing before it (the very first line).
 *  - Header size counts every octet up to and including the empty line.
 *    `truncated` is set when an octet at offset >= header_max arrives
 *    before the end; counts then stay as they were. A message without an
 *    empty line leaves done false (and truncated false if it is short).
 *  - `offset` counts every octet fed, also after done/truncated.
 *  - Counters saturate at UINT_MAX. Results do not depend on how the input
 *    is split into calls.
 */
#ifndef ESTAFETA_PROTO_RFC5322_H
#define ESTAFETA_PROTO_RFC5322_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hdr_scan {
    /* private state */
    int state;
    size_t name_len;
    char name[32];
    /* results */
    uint64_t offset;          /* octets seen so far */
    uint64_t header_end;      /* offset just after the empty line, valid when done */
    bool done;                /* the empty line ending the header was seen */
    bool truncated;           /* header_max exceeded before the end */
    size_t max;               /* header_max given at init */
    unsigned fields;
    unsigned received;
    unsigned malformed;
    bool has_date, has_message_id, has_from, has_bcc, has_return_path;
};

void hdr_scan_init(struct hdr_scan *s, size_t header_max);
/* Feed the next bytes of the message; cheap to call with bytes after the
 * header (they are ignored once done or truncated). */
void hdr_scan_feed(struct hdr_scan *s, const char *p, size_t n);

#endif
