/*
 * rfc5322: the header section scanner. See rfc5322.h for the contract.
 *
 * One state per position within a line. The field name is kept lower-cased
 * in s->name (up to its size; a longer name only keeps counting name_len
 * and cannot be one of the names we look for). The rest of a line (a field
 * body, a continuation, a malformed line) is skipped with memchr for LF, so
 * the cost is linear in the header size. A line ends at LF whether or not a
 * CR precedes it: the stored message has CRLF only, but the scanner must
 * stay sane on anything.
 */
#include "proto/rfc5322.h"

#include <limits.h>
#include <string.h>

enum {
    H_BOL,       /* beginning of a line */
    H_BOL_CR,    /* a line that so far holds one CR: the empty line? */
    H_NAME,      /* in a field name */
    H_NAME_WSP,  /* WSP after a field name (obs-optional, RFC 5322 4.5.3) */
    H_REST,      /* rest of the line: skip to LF */
    H_DONE,      /* the empty line was seen */
    H_TRUNC,     /* header_max exceeded first */
};

void hdr_scan_init(struct hdr_scan *s, size_t header_max)
{
    memset(s, 0, sizeof *s);
    s->state = H_BOL;
    s->max = header_max;
}

static void inc(unsigned *c)
{
    if (*c < UINT_MAX)
        (*c)++;
}

/* ftext (RFC 5322 3.6.8): printable US-ASCII except ':'. */
static bool is_ftext(unsigned char c)
{
    return c >= 33 && c <= 126 && c != ':';
}

static bool name_is(const struct hdr_scan *s, const char *lower)
{
    size_t n = strlen(lower);
    return s->name_len == n && memcmp(s->name, lower, n) == 0;
}

static void field_done(struct hdr_scan *s)
{
    inc(&s->fields);
    if (s->name_len > sizeof s->name)
        return;
    if (name_is(s, "received"))
        inc(&s->received);
    else if (name_is(s, "date"))
        s->has_date = true;
    else if (name_is(s, "message-id"))
        s->has_message_id = true;
    else if (name_is(s, "from"))
        s->has_from = true;
    else if (name_is(s, "bcc"))
        s->has_bcc = true;
    else if (name_is(s, "return-path"))
        s->has_return_path = true;
}

void hdr_scan_feed(struct hdr_scan *s, const char *p, size_t n)
{
    uint64_t start = s->offset;
    size_t m, i = 0;

    s->offset = start > UINT64_MAX - n ? UINT64_MAX : start + n;
    if (s->state == H_DONE || s->state == H_TRUNC)
        return;

    /* Octets at offsets >= max may not be part of the header. */
    m = n;
    if (start >= s->max)
        m = 0;
    else if (s->max - start < n)
        m = (size_t)(s->max - start);

    while (i < m) {
        unsigned char c = (unsigned char)p[i];

        switch (s->state) {
        case H_BOL:
            if (c == '\n') {
                s->done = true;
                s->header_end = start + i + 1;
                s->state = H_DONE;
                return;
            }
            if (c == '\r') {
                s->state = H_BOL_CR;
            } else if (c == ' ' || c == '\t') {
                /* A continuation line, unless nothing precedes it. */
                if (start + i == 0)
                    inc(&s->malformed);
                s->state = H_REST;
            } else if (is_ftext(c)) {
                s->name[0] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
                s->name_len = 1;
                s->state = H_NAME;
            } else {
                inc(&s->malformed);
                s->state = H_REST;
            }
            i++;
            break;

        case H_BOL_CR:
            if (c == '\n') {
                s->done = true;
                s->header_end = start + i + 1;
                s->state = H_DONE;
                return;
            }
            /* A line starting with a bare CR: look at c again as text. */
            inc(&s->malformed);
            s->state = H_REST;
            break;

        case H_NAME:
            if (is_ftext(c)) {
                /* The name's octets in a tight loop; name_len stops at
                 * sizeof name + 1, which already means "not a known name". */
                do {
                    if (s->name_len < sizeof s->name)
                        s->name[s->name_len] =
                            (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
                    if (s->name_len <= sizeof s->name)
                        s->name_len++;
                    i++;
                } while (i < m && is_ftext(c = (unsigned char)p[i]));
            } else if (c == ':') {
                field_done(s);
                s->state = H_REST;
                i++;
            } else if (c == ' ' || c == '\t') {
                s->state = H_NAME_WSP;
                i++;
            } else {
                /* CR, LF, control or 8-bit octet before any colon. */
                inc(&s->malformed);
                s->state = H_REST;
            }
            break;

        case H_NAME_WSP:
            if (c == ' ' || c == '\t') {
                i++;
            } else if (c == ':') {
                field_done(s);
                s->state = H_REST;
                i++;
            } else {
                inc(&s->malformed);
                s->state = H_REST;
            }
            break;

        case H_REST: {
            const char *q = memchr(p + i, '\n', m - i);
            if (q == NULL) {
                i = m;
            } else {
                i = (size_t)(q - p) + 1;
                s->state = H_BOL;
            }
            break;
        }

        default:
            return;
        }
    }
    if (m < n) {
        s->truncated = true;
        s->state = H_TRUNC;
    }
}
