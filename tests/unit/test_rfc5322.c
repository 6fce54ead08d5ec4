/*
 * Tests for proto/rfc5322: the header section scanner.
 *
 * Each input is checked against explicit expectations, against a slow
 * line-by-line reference model, and fed split at every position, twice
 * (short inputs), in chunks and one byte at a time: all results must match
 * feeding it whole.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "proto/rfc5322.h"

#define S(lit) lit, (sizeof(lit) - 1)

static void feed_cuts(const char *in, size_t len, size_t max,
                      const size_t *cuts, size_t ncuts, struct hdr_scan *s)
{
    size_t start = 0, k;
    hdr_scan_init(s, max);
    for (k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : len;
        /* A copy of exactly the chunk, so ASan sees reads past it. */
        char *chunk = malloc(end - start + 1);
        if (chunk == NULL)
            abort();
        memcpy(chunk, in + start, end - start);
        hdr_scan_feed(s, chunk, end - start);
        free(chunk);
        start = end;
    }
}

static void feed_chunks(const char *in, size_t len, size_t max, size_t chunk,
                        struct hdr_scan *s)
{
    size_t p;
    hdr_scan_init(s, max);
    for (p = 0; p < len; p += chunk) {
        size_t n = len - p < chunk ? len - p : chunk;
        char *c = malloc(n);
        if (c == NULL)
            abort();
        memcpy(c, in + p, n);
        hdr_scan_feed(s, c, n);
        free(c);
    }
}

/* Results only (the private name buffer may hold leftovers). */
static int results_same(const struct hdr_scan *a, const struct hdr_scan *b)
{
    return a->offset == b->offset && a->done == b->done &&
           (!a->done || a->header_end == b->header_end) &&
           a->truncated == b->truncated && a->max == b->max &&
           a->fields == b->fields && a->received == b->received &&
           a->malformed == b->malformed && a->has_date == b->has_date &&
           a->has_message_id == b->has_message_id &&
           a->has_from == b->has_from && a->has_bcc == b->has_bcc &&
           a->has_return_path == b->has_return_path;
}

static void show(const char *what, const struct hdr_scan *s)
{
    fprintf(stderr,
            "  %s: offset %llu done %d end %llu trunc %d fields %u rcvd %u "
            "bad %u date %d mid %d from %d bcc %d rp %d\n",
            what, (unsigned long long)s->offset, s->done,
            (unsigned long long)s->header_end, s->truncated, s->fields,
            s->received, s->malformed, s->has_date, s->has_message_id,
            s->has_from, s->has_bcc, s->has_return_path);
}

static void dump(const char *p, size_t n)
{
    size_t i;
    fprintf(stderr, "  input (%zu): \"", n);
    for (i = 0; i < n && i < 200; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r')
            fputs("\\r", stderr);
        else if (c == '\n')
            fputs("\\n", stderr);
        else if (c < 32 || c >= 127)
            fprintf(stderr, "\\x%02x", c);
        else
            fputc(c, stderr);
    }
    fputs(n > 200 ? "...\"\n" : "\"\n", stderr);
}

/*
 * The reference: look at the first min(len, max) octets line by line.
 * A line cut off by the limit (or by the end of the input) counts only if
 * what is there already decides it.
 */
static bool ftext(unsigned char c)
{
    return c >= 33 && c <= 126 && c != ':';
}

static void ref_scan(const char *in, size_t len, size_t max, struct hdr_scan *s)
{
    size_t lim = len < max ? len : max, pos = 0;

    memset(s, 0, sizeof *s);
    s->max = max;
    s->offset = len;
    while (pos < lim) {
        const char *lf = memchr(in + pos, '\n', lim - pos);
        size_t end = lf ? (size_t)(lf - in) + 1 : lim; /* line is [pos,end) */
        size_t i = pos;
        unsigned char c0 = (unsigned char)in[pos];

        if (c0 == '\n') {
            s->done = true;
            s->header_end = pos + 1;
            break;
        }
        if (c0 == '\r') {
            if (pos + 1 < lim && in[pos + 1] == '\n') {
                s->done = true;
                s->header_end = pos + 2;
                break;
            }
            if (pos + 1 < lim)
                s->malformed++;
        } else if (c0 == ' ' || c0 == '\t') {
            if (pos == 0)
                s->malformed++;
        } else {
            char name[64];
            size_t nl = 0;
            while (i < end && ftext((unsigned char)in[i])) {
                if (nl < sizeof name)
                    name[nl] = (char)(in[i] >= 'A' && in[i] <= 'Z'
                                          ? in[i] + 32 : in[i]);
                nl++;
                i++;
            }
            while (nl > 0 && i < end && (in[i] == ' ' || in[i] == '\t'))
                i++;
            if (nl > 0 && i < end && in[i] == ':') {
                s->fields++;
                if (nl == 8 && memcmp(name, "received", 8) == 0)
                    s->received++;
                if (nl == 4 && memcmp(name, "date", 4) == 0)
                    s->has_date = true;
                if (nl == 10 && memcmp(name, "message-id", 10) == 0)
                    s->has_message_id = true;
                if (nl == 4 && memcmp(name, "from", 4) == 0)
                    s->has_from = true;
                if (nl == 3 && memcmp(name, "bcc", 3) == 0)
                    s->has_bcc = true;
                if (nl == 11 && memcmp(name, "return-path", 11) == 0)
                    s->has_return_path = true;
            } else if (i < end) {
                s->malformed++;
            }
            /* else: cut off in the name or the WSP after it: undecided */
        }
        pos = end;
    }
    s->truncated = !s->done && len > max;
}

static int check_splits(const char *in, size_t len, size_t max,
                        struct hdr_scan *whole)
{
    struct hdr_scan x, f;
    size_t a, b, cuts[2];
    static const size_t chunks[] = {1, 2, 3, 5, 8, 13};
    int bad = 0;

    feed_cuts(in, len, max, NULL, 0, whole);
    ref_scan(in, len, max, &f);
    if (!results_same(&f, whole)) {
        fprintf(stderr, "reference disagrees with whole feed\n");
        show("ref", &f);
        show("got", whole);
        bad++;
    }
    for (a = 1; a < len; a++) {
        cuts[0] = a;
        feed_cuts(in, len, max, cuts, 1, &x);
        if (!results_same(whole, &x)) {
            if (!bad)
                fprintf(stderr, "split at %zu differs\n", a);
            bad++;
        }
    }
    if (len <= 40) {
        for (a = 1; a < len; a++)
            for (b = a + 1; b < len; b++) {
                cuts[0] = a;
                cuts[1] = b;
                feed_cuts(in, len, max, cuts, 2, &x);
                if (!results_same(whole, &x)) {
                    if (!bad)
                        fprintf(stderr, "split at %zu,%zu differs\n", a, b);
                    bad++;
                }
            }
    }
    for (a = 0; a < sizeof chunks / sizeof chunks[0]; a++) {
        feed_chunks(in, len, max, chunks[a], &x);
        if (!results_same(whole, &x)) {
            if (!bad)
                fprintf(stderr, "chunks of %zu differ\n", chunks[a]);
            bad++;
        }
    }
    if (bad)
        dump(in, len);
    return bad;
}

static struct hdr_scan scan(const char *in, size_t len, size_t max)
{
    struct hdr_scan s;
    if (check_splits(in, len, max, &s) != 0) {
        fprintf(stderr, "  (split/reference check failed)\n");
        harness_cur_failed = 1;
    }
    return s;
}

TEST(basic_counts)
{
    static const char msg[] =
        "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        "Received: from c\r\n"
        "\tby d\r\n"
        " with ESMTP; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        "From: a@b\r\n"
        "Message-ID: <x@y>\r\n"
        "Subject: hi\r\n"
        "\r\n"
        "body\r\n"
        "Received: in the body is not a field\r\n"
        "Bcc: nor this\r\n";
    size_t hlen = strstr(msg, "\r\n\r\n") - msg + 4;
    struct hdr_scan s = scan(S(msg), 1 << 20);

    CHECK(s.done);
    CHECK(!s.truncated);
    CHECK_EQ_INT(s.header_end, hlen);
    CHECK_EQ_INT(s.offset, sizeof msg - 1);
    CHECK_EQ_INT(s.fields, 6);
    CHECK_EQ_INT(s.received, 2);
    CHECK_EQ_INT(s.malformed, 0);
    CHECK(s.has_date && s.has_from && s.has_message_id);
    CHECK(!s.has_bcc && !s.has_return_path);
}

TEST(name_case_and_obs_wsp)
{
    static const char msg[] =
        "RECEIVED: 1\r\n"
        "received: 2\r\n"
        "ReCeIvEd: 3\r\n"
        "received : 4\r\n"
        "Received\t: 5\r\n"
        "Received \t  : 6\r\n"
        "X-Received: no\r\n"
        "Received-SPF: no\r\n"
        "Receive: no\r\n"
        "Receiveds: no\r\n"
        "BCC: x\r\n"
        "return-PATH: <>\r\n"
        "\r\n";
    struct hdr_scan s = scan(S(msg), 1 << 20);

    CHECK(s.done);
    CHECK_EQ_INT(s.fields, 12);
    CHECK_EQ_INT(s.received, 6);
    CHECK_EQ_INT(s.malformed, 0);
    CHECK(s.has_bcc && s.has_return_path);
    CHECK(!s.has_date && !s.has_from && !s.has_message_id);
}

TEST(continuations_are_not_fields)
{
    static const char msg[] =
        "Subject: a\r\n"
        " Received: folded, not a field\r\n"
        "\tDate: nor this\r\n"
        "Received: real\r\n"
        "  \r\n"           /* a line of only WSP: a continuation */
        "\r\n";
    struct hdr_scan s = scan(S(msg), 1 << 20);

    CHECK(s.done);
    CHECK_EQ_INT(s.fields, 2);
    CHECK_EQ_INT(s.received, 1);
    CHECK(!s.has_date);
    CHECK_EQ_INT(s.malformed, 0);
    CHECK_EQ_INT(s.header_end, sizeof msg - 1);
}

TEST(malformed_lines)
{
    struct hdr_scan s;

    s = scan(S("From someone@example Mon Jan  1 00:00:00 2024\r\n"
               "NoColonHere\r\n"
               ": empty name\r\n"
               "Na\x01me: control\r\n"
               "N\xc3\xa4me: 8bit\r\n"
               "Date x: text between name and colon\r\n"
               "\r\r\n"
               "Received: ok\r\n"
               "\r\n"), 1 << 20);
    CHECK(s.done);
    CHECK_EQ_INT(s.malformed, 7);
    CHECK_EQ_INT(s.fields, 1);
    CHECK_EQ_INT(s.received, 1);
    CHECK(!s.has_from && !s.has_date);

    /* A continuation with nothing before it. */
    s = scan(S(" folded: x\r\nA: b\r\n\r\n"), 1 << 20);
    CHECK_EQ_INT(s.malformed, 1);
    CHECK_EQ_INT(s.fields, 1);

    /* A message without any header, straight into text. */
    s = scan(S("Hello there,\r\nhow are you\r\n"), 1 << 20);
    CHECK(!s.done && !s.truncated);
    CHECK_EQ_INT(s.malformed, 2);
    CHECK_EQ_INT(s.fields, 0);
}

TEST(header_end_and_separators)
{
    struct hdr_scan s;

    s = scan(S("\r\nbody\r\n"), 1000);
    CHECK(s.done);
    CHECK_EQ_INT(s.header_end, 2);
    CHECK_EQ_INT(s.fields, 0);

    s = scan(S("A: b\r\n\r\n"), 1000);
    CHECK(s.done);
    CHECK_EQ_INT(s.header_end, 8);

    /* Bare LF line ends are understood. */
    s = scan(S("A: b\nDate: x\n\nReceived: body\n"), 1000);
    CHECK(s.done);
    CHECK_EQ_INT(s.header_end, 14);
    CHECK_EQ_INT(s.fields, 2);
    CHECK(s.has_date);
    CHECK_EQ_INT(s.received, 0);

    s = scan(S("A: b\r\n\nx"), 1000);
    CHECK(s.done);
    CHECK_EQ_INT(s.header_end, 7);

    /* No separator: never done. */
    s = scan(S("A: b\r\nReceived: c\r\n"), 1000);
    CHECK(!s.done && !s.truncated);
    CHECK_EQ_INT(s.fields, 2);
    CHECK_EQ_INT(s.received, 1);

    s = scan("", 0, 1000);
    CHECK(!s.done && !s.truncated);
    CHECK_EQ_INT(s.offset, 0);

    /* A bare CR inside a field body is just text. */
    s = scan(S("A: b\rc\r\nB: d\r\n\r\n"), 1000);
    CHECK(s.done);
    CHECK_EQ_INT(s.fields, 2);
    CHECK_EQ_INT(s.malformed, 0);
}

TEST(truncation)
{
    static const char msg[] = "Received: 1\r\nReceived: 2\r\n\r\nbody\r\n";
    size_t hlen = 28;
    struct hdr_scan s;

    CHECK_EQ_INT(strstr(msg, "\r\n\r\n") - msg + 4, hlen);
    /* Exactly fitting: done. */
    s = scan(S(msg), hlen);
    CHECK(s.done && !s.truncated);
    CHECK_EQ_INT(s.header_end, hlen);
    CHECK_EQ_INT(s.received, 2);

    /* One short: truncated, the counts seen so far stay. */
    s = scan(S(msg), hlen - 1);
    CHECK(!s.done && s.truncated);
    CHECK_EQ_INT(s.received, 2);
    CHECK_EQ_INT(s.offset, sizeof msg - 1);

    /* Cut inside the second name: it is not counted. */
    s = scan(S(msg), 18);
    CHECK(s.truncated);
    CHECK_EQ_INT(s.received, 1);
    CHECK_EQ_INT(s.fields, 1);

    /* Cut just before the colon of the second field. */
    s = scan(S(msg), 21);
    CHECK_EQ_INT(s.received, 1);
    s = scan(S(msg), 22);
    CHECK_EQ_INT(s.received, 2);

    s = scan(S(msg), 0);
    CHECK(s.truncated && !s.done);
    CHECK_EQ_INT(s.fields, 0);

    /* Not truncated while no octet beyond the limit has arrived. */
    s = scan("Received: 1\r\n", 13, 13);
    CHECK(!s.truncated && !s.done);
    CHECK_EQ_INT(s.received, 1);
}

static void long_name(size_t n, const char *suffix, struct hdr_scan *s)
{
    char buf[256];
    size_t sl = strlen(suffix);
    memset(buf, 'x', n);
    memcpy(buf + n, suffix, sl);
    *s = scan(buf, n + sl, 1 << 20);
}

TEST(long_field_names)
{
    struct hdr_scan s;
    size_t n;

    for (n = 28; n <= 40; n++) {
        long_name(n, ": v\r\n\r\n", &s);
        CHECK(s.done);
        CHECK_EQ_INT(s.fields, 1);
        CHECK_EQ_INT(s.malformed, 0);
    }
    long_name(200, ": v\r\nReceived: x\r\n\r\n", &s);
    CHECK_EQ_INT(s.fields, 2);
    CHECK_EQ_INT(s.received, 1);
    /* A long name that ends like a known one is not it. */
    {
        char buf[128];
        memset(buf, 'x', 40);
        memcpy(buf + 40, "received: v\r\n\r\n", 16);
        s = scan(buf, 56, 1 << 20);
        CHECK_EQ_INT(s.fields, 1);
        CHECK_EQ_INT(s.received, 0);
    }
}

TEST(many_received)
{
    size_t n = 0, k;
    char *buf = malloc(200 * 40);
    struct hdr_scan s, x;

    if (buf == NULL)
        abort();
    for (k = 0; k < 150; k++)
        n += (size_t)sprintf(buf + n, "Received: from h%zu\r\n by x\r\n", k);
    memcpy(buf + n, "\r\nReceived: body\r\n", 18);
    n += 18;
    feed_cuts(buf, n, 1 << 20, NULL, 0, &s);
    CHECK(s.done);
    CHECK_EQ_INT(s.received, 150);
    CHECK_EQ_INT(s.fields, 150);
    feed_chunks(buf, n, 1 << 20, 1, &x);
    CHECK(results_same(&s, &x));
    feed_chunks(buf, n, 1 << 20, 7, &x);
    CHECK(results_same(&s, &x));
    free(buf);
}

static uint64_t rng_state = 0x2545f4914f6cdd1dULL;

static unsigned rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state >> 32);
}

TEST(random_against_reference)
{
    static const char *const pieces[] = {
        "\r\n", "\n", "\r", ":", " ", "\t", "Received", "rEcEiVeD", "Date",
        "From", "bcc", "Message-ID", "Return-Path", "x", "\x80", "\x01",
        "Subject: s\r\n", " cont\r\n", "Received: r\r\n", "a",
    };
    char in[400];
    int iter, bad = 0;

    for (iter = 0; iter < 4000 && bad == 0; iter++) {
        size_t len = 0, npieces = rng() % 12, k;
        size_t max = rng() % 3 == 0 ? rng() % 40 : 1000;
        struct hdr_scan w;
        for (k = 0; k < npieces; k++) {
            const char *p = pieces[rng() % (sizeof pieces / sizeof pieces[0])];
            size_t pl = strlen(p);
            memcpy(in + len, p, pl);
            len += pl;
        }
        bad += check_splits(in, len, max, &w);
    }
    CHECK_EQ_INT(bad, 0);
}

int main(void)
{
    RUN(basic_counts);
    RUN(name_case_and_obs_wsp);
    RUN(continuations_are_not_fields);
    RUN(malformed_lines);
    RUN(header_end_and_separators);
    RUN(truncation);
    RUN(long_field_names);
    RUN(many_received);
    RUN(random_against_reference);
    return harness_done("test_rfc5322");
}
