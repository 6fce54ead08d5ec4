/*
 * Tests for proto/dotstuff: the wire form of a message body.
 *
 * Checked for every input: byte-exact expectations where given; agreement
 * with a slow reference (normalise line ends, then double leading dots);
 * the same output when the input is split at every position, at every
 * pair of positions (short inputs) and fed one octet at a time; and the
 * key invariant: the server's own DATA reader (proto/smtp_data) reads the
 * wire form back as exactly the CRLF-normalised body and stops exactly at
 * our final dot, and the wire form holds no bare CR or LF.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "lib/buf.h"
#include "proto/dotstuff.h"
#include "proto/smtp_data.h"

#define S(lit) lit, (sizeof(lit) - 1)

/* memcmp that accepts NULL for empty buffers. */
static bool same(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static bool ds_eq(const struct dotstuff *a, const struct dotstuff *b)
{
    return a->stuff_dots == b->stuff_dots && a->bol == b->bol &&
           a->skip_lf == b->skip_lf && a->saw_8bit == b->saw_8bit &&
           a->in_octets == b->in_octets && a->out_octets == b->out_octets;
}

/* Feed in[0..len) cut at cuts[0..ncuts); returns the wire form in *out
 * (caller frees), or -1 if a call broke the contract. */
static int stuff_cuts(const char *in, size_t len, bool dots,
                      const size_t *cuts, size_t ncuts, struct buf *out,
                      bool *saw8_r)
{
    struct dotstuff d;
    size_t start = 0, k;

    buf_init(out, SIZE_MAX / 2);
    dotstuff_init(&d, dots);
    for (k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : len;
        size_t before = out->len;
        char *copy = malloc(end - start ? end - start : 1);
        memcpy(copy, in + start, end - start);
        if (dotstuff_feed(&d, copy, end - start, out) != 0 ||
            out->len - before > 2 * (end - start)) {
            free(copy);
            return -1;
        }
        free(copy);
        start = end;
    }
    {
        size_t before = out->len;
        if (dotstuff_end(&d, out) != 0 ||
            out->len - before > DOTSTUFF_END_MAX)
            return -1;
    }
    if (d.in_octets != len || d.out_octets != out->len)
        return -1;
    *saw8_r = dotstuff_saw_8bit(&d);
    return 0;
}

/* The rules, slowly: normalise line ends, end the last line, then double
 * a dot at the start of each line and add the terminator. */
static void reference(const char *in, size_t len, bool dots, struct buf *norm,
                      struct buf *wire)
{
    size_t i;

    buf_init(norm, SIZE_MAX / 2);
    buf_init(wire, SIZE_MAX / 2);
    for (i = 0; i < len; i++) {
        if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
            continue;   /* its LF writes the CRLF */
        if (in[i] == '\r' || in[i] == '\n')
            buf_append(norm, "\r\n", 2);
        else
            buf_putc(norm, in[i]);
    }
    if (norm->len > 0 && (norm->len < 2 ||
                          memcmp(norm->data + norm->len - 2, "\r\n", 2) != 0))
        buf_append(norm, "\r\n", 2);
    for (i = 0; i < norm->len; i++) {
        bool bol = i == 0 || norm->data[i - 1] == '\n';
        if (dots && bol && norm->data[i] == '.')
            buf_putc(wire, '.');
        buf_putc(wire, norm->data[i]);
    }
    if (dots)
        buf_append(wire, ".\r\n", 3);
}

/* The invariant: wire is clean and reads back as norm through smtp_data. */
static int reads_back(const struct buf *wire, const struct buf *norm)
{
    struct smtp_data_reader r;
    char *out = malloc(wire->len + SMTP_DATA_OUT_SLACK);
    size_t out_len = 0, consumed = 0, j;
    enum smtp_data_result res;
    int ok = 1;

    for (j = 0; j < wire->len; j++) {
        if (wire->data[j] == '\n' && (j == 0 || wire->data[j - 1] != '\r'))
            ok = 0;
        if (wire->data[j] == '\r' &&
            (j + 1 == wire->len || wire->data[j + 1] != '\n'))
            ok = 0;
        if (j + 5 < wire->len && memcmp(wire->data + j, "\r\n.\r\n", 5) == 0)
            ok = 0;   /* an end before the end */
    }
    smtp_data_init(&r, 1000);
    res = smtp_data_feed(&r, wire->data, wire->len, out, &out_len, &consumed);
    if (res != SMTP_DATA_END || consumed != wire->len ||
        !same(out, out_len, norm->data, norm->len) ||
        r.bare_cr || r.bare_lf)
        ok = 0;
    free(out);
    return ok;
}

/* All checks on one input; expect may be NULL (reference only). */
static void check_one(const char *in, size_t len, bool dots,
                      const char *expect, size_t expect_len)
{
    struct buf whole, norm, ref, x;
    size_t i, j, *cuts;
    bool saw8 = false, saw8x;
    bool want8 = false;

    for (i = 0; i < len; i++)
        want8 |= (unsigned char)in[i] >= 0x80;
    CHECK(stuff_cuts(in, len, dots, NULL, 0, &whole, &saw8) == 0);
    CHECK(saw8 == want8);
    if (expect != NULL) {
        CHECK_EQ_INT(whole.len, expect_len);
        CHECK(same(whole.data, whole.len, expect, expect_len));
    }
    reference(in, len, dots, &norm, &ref);
    CHECK(same(whole.data, whole.len, ref.data, ref.len));
    if (dots)
        CHECK(reads_back(&whole, &norm));
    buf_free(&norm);
    buf_free(&ref);

    for (i = 1; i < len; i++) {
        CHECK(stuff_cuts(in, len, dots, &i, 1, &x, &saw8x) == 0);
        CHECK(same(x.data, x.len, whole.data, whole.len));
        CHECK(saw8x == saw8);
        buf_free(&x);
    }
    if (len <= 24) {
        for (i = 1; i < len; i++) {
            for (j = i + 1; j < len; j++) {
                size_t c2[2] = {i, j};
                CHECK(stuff_cuts(in, len, dots, c2, 2, &x, &saw8x) == 0);
                CHECK(same(x.data, x.len, whole.data, whole.len));
                buf_free(&x);
            }
        }
    }
    cuts = malloc((len ? len : 1) * sizeof *cuts);
    for (i = 1; i < len; i++)
        cuts[i - 1] = i;
    CHECK(stuff_cuts(in, len, dots, cuts, len ? len - 1 : 0, &x, &saw8x) == 0);
    CHECK(same(x.data, x.len, whole.data, whole.len));
    buf_free(&x);
    free(cuts);
    buf_free(&whole);
}

#define DATA(in, out) check_one(S(in), true, S(out))
#define BDAT(in, out) check_one(S(in), false, S(out))

TEST(data_plain)
{
    DATA("", ".\r\n");
    DATA("abc", "abc\r\n.\r\n");
    DATA("abc\r\n", "abc\r\n.\r\n");
    DATA("Subject: x\r\n\r\nbody\r\n", "Subject: x\r\n\r\nbody\r\n.\r\n");
    DATA("a.b\r\n", "a.b\r\n.\r\n");
    DATA("a\0b\r\n", "a\0b\r\n.\r\n");
}

TEST(data_dots)
{
    DATA(".", "..\r\n.\r\n");
    DATA(".\r\n", "..\r\n.\r\n");
    DATA("a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n");
    DATA("..x\r\n", "...x\r\n.\r\n");
    DATA(".a\r\n.b\r\n", "..a\r\n..b\r\n.\r\n");
    DATA("a\r\n.", "a\r\n..\r\n.\r\n");
    DATA("a\r\n..\r\n", "a\r\n...\r\n.\r\n");
}

TEST(data_bare_line_ends)
{
    DATA("\r", "\r\n.\r\n");
    DATA("\n", "\r\n.\r\n");
    DATA("a\nb\n", "a\r\nb\r\n.\r\n");
    DATA("a\rb\r", "a\r\nb\r\n.\r\n");
    DATA("a\r\r\n", "a\r\n\r\n.\r\n");
    DATA("a\n\r", "a\r\n\r\n.\r\n");
    DATA("a\n\r\n", "a\r\n\r\n.\r\n");
    DATA("\r\r", "\r\n\r\n.\r\n");
    /* A dot after a bare CR or LF starts a line: stuffed (Dovecot
     * CVE-2026-33604). */
    DATA("a\r.b", "a\r\n..b\r\n.\r\n");
    DATA("a\n.b\n", "a\r\n..b\r\n.\r\n");
}

TEST(data_smuggling_sequences)
{
    /* security.md 2: none of these may end the data on the far side. */
    DATA("x\n.\ny", "x\r\n..\r\ny\r\n.\r\n");
    DATA("x\n.\r\ny", "x\r\n..\r\ny\r\n.\r\n");
    DATA("x\r\n.\ny", "x\r\n..\r\ny\r\n.\r\n");
    DATA("x\r.\ry", "x\r\n..\r\ny\r\n.\r\n");
    DATA("x\r.\ny", "x\r\n..\r\ny\r\n.\r\n");
    DATA("x\n.\ry", "x\r\n..\r\ny\r\n.\r\n");
    DATA("x\r.\r\ny", "x\r\n..\r\ny\r\n.\r\n");
    DATA("x\r\n.\rMAIL", "x\r\n..\r\nMAIL\r\n.\r\n");
    DATA("x\r\n\0.\r\ny", "x\r\n\0.\r\ny\r\n.\r\n");
    DATA("x\r\n.\r\r\ny", "x\r\n..\r\n\r\ny\r\n.\r\n");
    DATA("x\r\r\n.\r\r\ny", "x\r\n\r\n..\r\n\r\ny\r\n.\r\n");
    DATA("x\r\n.\r\nMAIL FROM:<a@b>\r\n",
         "x\r\n..\r\nMAIL FROM:<a@b>\r\n.\r\n");
}

TEST(data_8bit)
{
    DATA("caf\xc3\xa9\r\n", "caf\xc3\xa9\r\n.\r\n");
    DATA("\xff", "\xff\r\n.\r\n");
    DATA("0123456789abcdef0123456789abcdef\x80", 
         "0123456789abcdef0123456789abcdef\x80\r\n.\r\n");
    DATA("0123456789abcdef0123456789abcdef\r\n",
         "0123456789abcdef0123456789abcdef\r\n.\r\n");
}

TEST(bdat)
{
    BDAT("", "");
    BDAT("abc", "abc\r\n");
    BDAT(".x\n", ".x\r\n");
    BDAT("a\r", "a\r\n");
    BDAT("a\r\n.\r\n", "a\r\n.\r\n");
    BDAT("a\r.\n.", "a\r\n.\r\n.\r\n");
}

/* Every string of up to 7 octets over CR, LF, '.', 'a', 0x80: reference,
 * trickle and read-back. */
TEST(exhaustive_short)
{
    static const char alpha[] = {'\r', '\n', '.', 'a', (char)0x80};
    char in[8];
    size_t len, i;
    int failed_before = harness_cur_failed;

    for (len = 0; len <= 7; len++) {
        size_t total = 1, n;
        for (i = 0; i < len; i++)
            total *= sizeof alpha;
        for (n = 0; n < total; n++) {
            size_t v = n;
            for (i = 0; i < len; i++) {
                in[i] = alpha[v % sizeof alpha];
                v /= sizeof alpha;
            }
            check_one(in, len, true, NULL, 0);
            if (len <= 5)
                check_one(in, len, false, NULL, 0);
            if (harness_cur_failed && !failed_before) {
                fprintf(stderr, "exhaustive: failed at len %zu case %zu\n",
                        len, n);
                return;
            }
        }
    }
}

TEST(cap_refused_unchanged)
{
    struct dotstuff d, saved;
    struct buf out;

    dotstuff_init(&d, true);
    buf_init(&out, 8);
    buf_appends(&out, "xyz");
    saved = d;
    /* ".ab\n" needs 6 octets; 5 left. */
    CHECK_EQ_INT(dotstuff_feed(&d, S(".ab\n"), &out), -1);
    CHECK_EQ_STR(buf_cstr(&out), "xyz");
    CHECK(ds_eq(&d, &saved));
    CHECK_EQ_INT(dotstuff_feed(&d, S(".a\n"), &out), 0);
    CHECK_EQ_STR(buf_cstr(&out), "xyz..a\r\n");
    /* Full: the end does not fit either, and changes nothing. */
    saved = d;
    CHECK_EQ_INT(dotstuff_end(&d, &out), -1);
    CHECK_EQ_STR(buf_cstr(&out), "xyz..a\r\n");
    CHECK(ds_eq(&d, &saved));
    buf_reset(&out);
    CHECK_EQ_INT(dotstuff_end(&d, &out), 0);
    CHECK_EQ_STR(buf_cstr(&out), ".\r\n");
    buf_free(&out);
}

/* The caller's loop: a small output buffer flushed whenever a feed is
 * refused, then the same input fed again. */
TEST(cap_flush_and_retry)
{
    static const char in[] = "line one\n.dot\r\n\r.x\r\r\nend.";
    struct dotstuff d;
    struct buf out, wire, norm, ref;
    size_t pos = 0, chunk = 3, retries = 0;

    dotstuff_init(&d, true);
    buf_init(&out, 2 * chunk);
    buf_init(&wire, 4096);
    while (pos < sizeof in - 1) {
        size_t n = sizeof in - 1 - pos < chunk ? sizeof in - 1 - pos : chunk;
        if (dotstuff_feed(&d, in + pos, n, &out) < 0) {
            retries++;
            buf_append(&wire, out.data, out.len);
            buf_reset(&out);
            CHECK_EQ_INT(dotstuff_feed(&d, in + pos, n, &out), 0);
        }
        pos += n;
    }
    if (dotstuff_end(&d, &out) < 0) {
        buf_append(&wire, out.data, out.len);
        buf_reset(&out);
        CHECK_EQ_INT(dotstuff_end(&d, &out), 0);
    }
    buf_append(&wire, out.data, out.len);
    CHECK(retries > 0);
    reference(in, sizeof in - 1, true, &norm, &ref);
    CHECK(wire.len == ref.len && memcmp(wire.data, ref.data, ref.len) == 0);
    CHECK(reads_back(&wire, &norm));
    CHECK_EQ_INT(d.in_octets, sizeof in - 1);
    CHECK_EQ_INT(d.out_octets, wire.len);
    buf_free(&out);
    buf_free(&wire);
    buf_free(&norm);
    buf_free(&ref);
}

TEST(output_bound)
{
    /* The worst case is exactly 2*len: every octet a line end or a dot
     * that starts a line. */
    struct dotstuff d;
    struct buf out;

    dotstuff_init(&d, true);
    buf_init(&out, 8);
    CHECK_EQ_INT(dotstuff_feed(&d, S("\n\n\n\n"), &out), 0);
    CHECK_EQ_INT(out.len, 8);
    buf_free(&out);
    dotstuff_init(&d, true);
    buf_init(&out, 4);
    CHECK_EQ_INT(dotstuff_feed(&d, S(".\r"), &out), 0);
    CHECK_EQ_INT(out.len, 4);
    CHECK_EQ_INT(dotstuff_feed(&d, S("\n"), &out), 0);   /* swallowed */
    CHECK_EQ_INT(out.len, 4);
    CHECK_EQ_INT(dotstuff_feed(&d, NULL, 0, &out), 0);
    buf_free(&out);
}

TEST(large_body)
{
    /* 1 MiB of mixed lines, fed whole and in odd chunks. */
    size_t len = 1u << 20, i, cuts[64];
    char *in = malloc(len);
    uint32_t s = 12345;
    struct buf a, b, norm, ref;
    bool e1, e2;

    for (i = 0; i < len; i++) {
        s = s * 1103515245u + 12345u;
        switch ((s >> 16) % 16) {
        case 0: in[i] = '\r'; break;
        case 1: in[i] = '\n'; break;
        case 2: case 3: in[i] = '.'; break;
        default: in[i] = (char)('a' + (s >> 20) % 26); break;
        }
    }
    for (i = 0; i < 64; i++)
        cuts[i] = (i + 1) * 16381;
    CHECK(stuff_cuts(in, len, true, NULL, 0, &a, &e1) == 0);
    CHECK(stuff_cuts(in, len, true, cuts, 64, &b, &e2) == 0);
    CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    reference(in, len, true, &norm, &ref);
    CHECK(a.len == ref.len && memcmp(a.data, ref.data, a.len) == 0);
    CHECK(reads_back(&a, &norm));
    buf_free(&a);
    buf_free(&b);
    buf_free(&norm);
    buf_free(&ref);
    free(in);
}

int main(void)
{
    RUN(data_plain);
    RUN(data_dots);
    RUN(data_bare_line_ends);
    RUN(data_smuggling_sequences);
    RUN(data_8bit);
    RUN(bdat);
    RUN(exhaustive_short);
    RUN(cap_refused_unchanged);
    RUN(cap_flush_and_retry);
    RUN(output_bound);
    RUN(large_body);
    return harness_done("test_dotstuff");
}
