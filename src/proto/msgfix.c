/*
 * msgfix: the submission header fix-ups. See msgfix.h for the contract.
 *
 * One state per position within a line, as in rfc5322.c. The only octets
 * ever held back are those whose fate is open: the start of a line that
 * may still become "Bcc:" (a prefix of "bcc", then SP/HT), and a CR at a
 * line start (the additions go before the empty line, so its CR waits for
 * the next octet). Everything else is written as soon as it is read, and
 * the rest of a line is copied or skipped with memchr, so time is linear
 * and memory constant.
 *
 * Split independence: every decision depends only on the octets read so
 * far, never on where a call ended, and held octets are written at exactly
 * the point the whole-buffer run would write them.
 */
#include "proto/msgfix.h"

#include <string.h>

enum {
    S_BOL,       /* beginning of a line */
    S_BOL_CR,    /* a line holding one CR so far: the empty line? */
    S_NAME,      /* in a field name */
    S_NAME_WSP,  /* SP/HT after a field name */
    S_REST,      /* copy the rest of the line */
    S_DROP,      /* drop the rest of the line (a Bcc field) */
    S_PASS,      /* copy everything: body, or header past header_max */
    S_FINISHED,
};

static bool is_wsp(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* ftext (RFC 5322 3.6.8): printable US-ASCII except ':'. */
static bool is_ftext(unsigned char c)
{
    return c >= 33 && c <= 126 && c != ':';
}

static bool name_is(const struct msgfix *f, const char *lower)
{
    size_t n = strlen(lower);
    return f->name_len == n && memcmp(f->name, lower, n) == 0;
}

/* Still possibly "bcc" (only when we are asked to drop it). */
static bool bcc_candidate(const struct msgfix *f)
{
    return (f->flags & MSGFIX_REMOVE_BCC) && f->name_len <= 3 &&
           memcmp(f->name, "bcc", f->name_len) == 0;
}

static void put(char *out, size_t *o, const char *p, size_t n)
{
    memcpy(out + *o, p, n);
    *o += n;
}

static void flush_hold(struct msgfix *f, char *out, size_t *o)
{
    put(out, o, f->hold, f->hold_len);
    f->hold_len = 0;
}

static void put_additions(struct msgfix *f, char *out, size_t *o)
{
    if ((f->flags & MSGFIX_ADD_DATE) && !f->has_date)
        put(out, o, f->date_line, strlen(f->date_line));
    if ((f->flags & MSGFIX_ADD_MESSAGE_ID) && !f->has_message_id)
        put(out, o, f->msgid_line, strlen(f->msgid_line));
}

static bool have_additions(const struct msgfix *f)
{
    return ((f->flags & MSGFIX_ADD_DATE) && !f->has_date &&
            f->date_line[0] != '\0') ||
           ((f->flags & MSGFIX_ADD_MESSAGE_ID) && !f->has_message_id &&
            f->msgid_line[0] != '\0');
}

/* The empty line (its LF at in[i]; a held CR before it). */
static size_t end_of_header(struct msgfix *f, char *out, size_t *o)
{
    if (!f->truncated) {
        put_additions(f, out, o);
        f->header_done = true;
    }
    flush_hold(f, out, o);
    put(out, o, "\n", 1);
    f->state = S_PASS;
    return 1;
}

static void start_drop(struct msgfix *f)
{
    f->hold_len = 0;
    if (f->bcc_removed < (unsigned)-1)
        f->bcc_removed++;
    f->cur_bcc = true;
    f->state = S_DROP;
}

/* The colon ending a field name. */
static void field_colon(struct msgfix *f, char *out, size_t *o)
{
    if ((f->flags & MSGFIX_REMOVE_BCC) && name_is(f, "bcc")) {
        start_drop(f);
        return;
    }
    if (name_is(f, "date"))
        f->has_date = true;
    else if (name_is(f, "message-id"))
        f->has_message_id = true;
    else if (name_is(f, "from"))
        f->has_from = true;
    flush_hold(f, out, o);
    put(out, o, ":", 1);
    f->state = S_REST;
}

/*
 * Processes in[i..m) from the current state, at least one octet or one
 * state change that makes progress; returns the new position. Octets at
 * m and beyond are for the next call (m is where header_max is crossed).
 */
static size_t step(struct msgfix *f, const char *in, size_t i, size_t m,
                   char *out, size_t *o)
{
    unsigned char c = (unsigned char)in[i];

    switch (f->state) {
    case S_PASS:
        put(out, o, in + i, m - i);
        return m;

    case S_REST:
    case S_DROP: {
        const char *lf = memchr(in + i, '\n', m - i);
        size_t e = lf != NULL ? (size_t)(lf - in) + 1 : m;
        if (f->state == S_REST)
            put(out, o, in + i, e - i);
        if (lf != NULL)
            f->state = S_BOL;
        return e;
    }

    case S_BOL:
        if (f->truncated && !(f->cur_bcc && is_wsp(c))) {
            f->state = S_PASS;
            return i;
        }
        if (c == '\n')
            return i + end_of_header(f, out, o);
        if (c == '\r') {
            f->hold[f->hold_len++] = '\r';
            f->state = S_BOL_CR;
            return i + 1;
        }
        if (is_wsp(c)) {
            /* A continuation line belongs to the field before it. */
            f->state = f->cur_bcc ? S_DROP : S_REST;
            return i;
        }
        f->cur_bcc = false;
        f->name_len = 0;
        f->state = is_ftext(c) ? S_NAME : S_REST;
        return i;

    case S_BOL_CR:
        if (c == '\n')
            return i + end_of_header(f, out, o);
        /* A line starting with a bare CR: neither empty nor a field. */
        flush_hold(f, out, o);
        f->cur_bcc = false;
        f->state = f->truncated ? S_PASS : S_REST;
        return i;

    case S_NAME:
        if (f->truncated && f->hold_len == 0) {
            f->state = S_PASS;
            return i;
        }
        if (is_ftext(c)) {
            if (f->name_len < sizeof f->name)
                f->name[f->name_len] =
                    (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            if (f->name_len <= sizeof f->name)
                f->name_len++;
            if (bcc_candidate(f)) {
                f->hold[f->hold_len++] = (char)c;
            } else {
                flush_hold(f, out, o);
                put(out, o, in + i, 1);
            }
            return i + 1;
        }
        if (c == ':') {
            field_colon(f, out, o);
            return i + 1;
        }
        if (is_wsp(c)) {
            if (!((f->flags & MSGFIX_REMOVE_BCC) && name_is(f, "bcc")))
                flush_hold(f, out, o);
            f->state = S_NAME_WSP;
            return i;
        }
        /* CR, LF, control or 8-bit octet before any colon: malformed. */
        flush_hold(f, out, o);
        f->state = S_REST;
        return i;

    case S_NAME_WSP:
        if (f->truncated && f->hold_len == 0) {
            f->state = S_PASS;
            return i;
        }
        if (is_wsp(c)) {
            /* Octets are held only after a name that is "bcc". */
            if (f->hold_len == 0) {
                put(out, o, in + i, 1);
            } else if (f->hold_len < MSGFIX_HOLD_MAX) {
                f->hold[f->hold_len++] = (char)c;
            } else {
                start_drop(f);
                return i;
            }
            return i + 1;
        }
        if (c == ':') {
            field_colon(f, out, o);
            return i + 1;
        }
        flush_hold(f, out, o);
        f->state = S_REST;
        return i;

    default:
        return m;
    }
}

void msgfix_init(struct msgfix *f, unsigned flags, size_t header_max)
{
    memset(f, 0, sizeof *f);
    f->flags = flags;
    f->header_max = header_max;
    f->state = S_BOL;
}

static void set_line(char *dst, const char *line)
{
    size_t n = line != NULL ? strlen(line) : 0;

    dst[0] = '\0';
    if (n < 2 || n >= MSGFIX_ADDITION_MAX || line[n - 2] != '\r' ||
        line[n - 1] != '\n')
        return;
    memcpy(dst, line, n + 1);
}

void msgfix_set_additions(struct msgfix *f, const char *date_line,
                          const char *msgid_line)
{
    set_line(f->date_line, date_line);
    set_line(f->msgid_line, msgid_line);
}

void msgfix_feed(struct msgfix *f, const char *in, size_t len, char *out,
                 size_t *out_len_r)
{
    uint64_t start = f->seen_octets;
    size_t i = 0, o = 0;

    f->seen_octets = start > UINT64_MAX - len ? UINT64_MAX : start + len;
    if (f->state == S_FINISHED) {
        *out_len_r = 0;
        return;
    }
    while (i < len) {
        size_t m = len;
        if (!f->truncated && !f->header_done) {
            uint64_t pos = start > UINT64_MAX - i ? UINT64_MAX : start + i;
            if (pos >= f->header_max)
                f->truncated = true;
            else if (f->header_max - pos < len - i)
                m = i + (size_t)(f->header_max - pos);
        }
        i = step(f, in, i, m, out, &o);
    }
    if (o > 0) {
        f->any_out = true;
        f->last_out = out[o - 1];
    }
    *out_len_r = o;
}

void msgfix_finish(struct msgfix *f, char *out, size_t *out_len_r)
{
    size_t o = 0;

    if (f->state == S_FINISHED) {
        *out_len_r = 0;
        return;
    }
    /* Held octets of an unfinished line: no colon came, so no field. */
    flush_hold(f, out, &o);
    if (o > 0) {
        f->any_out = true;
        f->last_out = out[o - 1];
    }
    if (!f->header_done && !f->truncated && have_additions(f)) {
        if (f->any_out && f->last_out != '\n')
            put(out, &o, "\r\n", 2);
        put_additions(f, out, &o);
    }
    f->state = S_FINISHED;
    *out_len_r = o;
}
