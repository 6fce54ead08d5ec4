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
