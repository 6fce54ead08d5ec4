/*
 * Tests for proto/smtp_reply: the SMTP client's reply parser and EHLO
 * keyword reader.
 *
 * Most inputs are run through a model of the caller (drive() below): it
 * keeps an input buffer, appends the input in chunks, calls the parser
 * until it needs more, drops what it used, and writes a transcript of
 * every reply and the final status. The same transcript is expected for
 * the input fed whole, split at every position, split at every pair of
 * positions (short inputs) and one octet at a time. Each call gets an
 * exact-size copy of the caller's buffer so ASan sees any read past it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "lib/buf.h"
#include "proto/smtp_reply.h"

#define S(lit) lit, (sizeof(lit) - 1)

static const struct smtp_reply_limits lim_default = {2048, 100, 65536};
static const struct smtp_reply_limits lim_small = {16, 3, 40};

static void tr_escape(struct buf *tr, const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            buf_appends(tr, "\\n");
        else if (c == '\\')
            buf_appends(tr, "\\\\");
        else if (c < 0x20 || c >= 0x7f)
            buf_appendf(tr, "\\x%02x", c);
        else
            buf_putc(tr, (char)c);
    }
}

/* The contract's promises about every DONE reply. */
static int reply_ok(const struct smtp_reply *r,
                    const struct smtp_reply_limits *lim)
{
    size_t i;
    if (r->code < 200 || r->code > 559 || r->text == NULL ||
        strlen(r->text) != r->text_len || r->nlines < 1 ||
        r->nlines > lim->lines_max || r->text_len > lim->size_max)
        return 0;
    for (i = 0; i < r->text_len; i++) {
        unsigned char c = (unsigned char)r->text[i];
        if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f)
            return 0;
    }
    if (r->enhanced[0] != '\0' && r->enhanced[0] != '0' + r->code / 100)
        return 0;
    return 1;
}

/*
 * Feeds in[0..len) cut at cuts[0..ncuts) (increasing, inside (0, len)) and
 * returns the transcript (malloc'd): "D<code>|<enhanced>|<nlines>|<text>\n"
 * per reply, then "M<held>" or "B:<reason>@<absolute offset>".
 */
static char *drive(const char *in, size_t len,
                   const struct smtp_reply_limits *lim, const size_t *cuts,
                   size_t ncuts)
{
    struct smtp_reply_parser p;
    struct buf pend, tr;
    size_t start = 0, k, consumed = 0;
    char *out;

    smtp_reply_parser_init(&p, lim);
    buf_init(&pend, SIZE_MAX / 2);
    buf_init(&tr, SIZE_MAX / 2);
    for (k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : len;
        buf_append(&pend, in + start, end - start);
        start = end;
        for (;;) {
            struct smtp_reply r;
            const char *err = "unset";
            size_t used = 99999999;
            char *copy = malloc(pend.len ? pend.len : 1);
            enum smtp_reply_status st;
            memcpy(copy, pend.data ? pend.data : "", pend.len);
            memset(&r, 0, sizeof r);
            st = smtp_reply_parse(&p, copy, pend.len, &used, &r, &err);
            free(copy);
            if (used > pend.len) {
                buf_appends(&tr, "X used past the input");
                goto done;
            }
            consumed += used;
            if (st == SMTP_REPLY_BAD) {
                buf_appendf(&tr, "B:%s@%zu", err, consumed);
                goto done;
            }
            buf_consume(&pend, used);
            if (st == SMTP_REPLY_MORE) {
                if (pend.len >= lim->line_max)
                    buf_appends(&tr, "X held a line too long\n");
                break;
            }
            if (!reply_ok(&r, lim))
                buf_appends(&tr, "X reply breaks the contract\n");
            buf_appendf(&tr, "D%d|%s|%zu|", r.code, r.enhanced, r.nlines);
            tr_escape(&tr, r.text, r.text_len);
            buf_putc(&tr, '\n');
            smtp_reply_clear(&r);
        }
    }
    buf_appendf(&tr, "M%zu", pend.len);
done:
    smtp_reply_parser_free(&p);
    buf_free(&pend);
    out = strdup(buf_cstr(&tr));
    buf_free(&tr);
    return out;
}

/* Whole, every split, every pair of splits (short inputs), byte by byte:
 * all must give `expect`. */
static void check_all(const char *in, size_t len,
                      const struct smtp_reply_limits *lim, const char *expect)
{
    size_t i, j, *cuts;
    char *t = drive(in, len, lim, NULL, 0);
    CHECK_EQ_STR(t, expect);
    free(t);
    for (i = 1; i < len; i++) {
        t = drive(in, len, lim, &i, 1);
        if (strcmp(t, expect) != 0) {
            fprintf(stderr, "split at %zu:\n", i);
            CHECK_EQ_STR(t, expect);
        }
        free(t);
    }
    if (len <= 48) {
        for (i = 1; i < len; i++) {
            for (j = i + 1; j < len; j++) {
                size_t c2[2] = {i, j};
                t = drive(in, len, lim, c2, 2);
                if (strcmp(t, expect) != 0) {
                    fprintf(stderr, "split at %zu,%zu:\n", i, j);
                    CHECK_EQ_STR(t, expect);
                }
                free(t);
            }
        }
    }
    cuts = malloc((len ? len : 1) * sizeof *cuts);
    for (i = 1; i < len; i++)
        cuts[i - 1] = i;
    t = drive(in, len, lim, cuts, len ? len - 1 : 0);
    CHECK_EQ_STR(t, expect);
    free(t);
    free(cuts);
}

/* One reply from a whole string, for the EHLO and format tests. */
static int parse_one(const char *s, struct smtp_reply *r)
{
    struct smtp_reply_parser p;
    size_t used;
    const char *err;
    enum smtp_reply_status st;

    smtp_reply_parser_init(&p, &lim_default);
    st = smtp_reply_parse(&p, s, strlen(s), &used, r, &err);
    smtp_reply_parser_free(&p);
    return st == SMTP_REPLY_DONE && used == strlen(s) ? 0 : -1;
}

/* ---- well-formed replies ---- */

TEST(single_line)
{
    check_all(S("250 OK\r\n"), &lim_default, "D250||1|OK\nM0");
    check_all(S("220 mx.example.org ESMTP ready\r\n"), &lim_default,
              "D220||1|mx.example.org ESMTP ready\nM0");
    check_all(S("550 5.1.1 <u@example.org>: Recipient address rejected\r\n"),
              &lim_default,
              "D550|5.1.1|1|<u@example.org>: Recipient address rejected\nM0");
    check_all(S("421 4.7.0 Try again later\r\n"), &lim_default,
              "D421|4.7.0|1|Try again later\nM0");
}

TEST(multi_line)
{
    check_all(S("250-first\r\n250-second\r\n250 last\r\n"), &lim_default,
              "D250||3|first\\nsecond\\nlast\nM0");
    check_all(S("550-5.7.1 Policy\r\n550-5.7.1 says no\r\n550 5.7.1 bye\r\n"),
              &lim_default, "D550|5.7.1|3|Policy\\nsays no\\nbye\nM0");
    /* Enhanced code only from the first line, stripped wherever valid. */
    check_all(S("451-temporary\r\n451 4.3.0 later\r\n"), &lim_default,
              "D451||2|temporary\\nlater\nM0");
}

TEST(bare_code_and_empty_text)
{
    check_all(S("250\r\n"), &lim_default, "D250||1|\nM0");
    check_all(S("250 \r\n"), &lim_default, "D250||1|\nM0");
    check_all(S("250-\r\n250\r\n"), &lim_default, "D250||2|\\n\nM0");
    /* CVE-2020-8794's shape: a three-octet last line after a continuation. */
    check_all(S("250-a\r\n250\r\n"), &lim_default, "D250||2|a\\n\nM0");
    check_all(S("250-a\n250\n"), &lim_default, "D250||2|a\\n\nM0");
    check_all(S("354\n"), &lim_default, "D354||1|\nM0");
}

TEST(line_ends)
{
    check_all(S("220 hi\n"), &lim_default, "D220||1|hi\nM0");
    /* Only one CR before the LF is part of the line end. */
    check_all(S("220 hi\r\r\n"), &lim_default, "D220||1|hi?\nM0");
    /* A bare CR inside a line is text, made safe. */
    check_all(S("220 a\rb\r\n"), &lim_default, "D220||1|a?b\nM0");
    check_all(S("250-a\n250-b\r\n250 c\n"), &lim_default,
              "D250||3|a\\nb\\nc\nM0");
}

TEST(text_is_cleaned)
{
    check_all(S("250 a\tb\x01" "c\x7f\xc3\xa9\x1b[31m\r\n"), &lim_default,
              "D250||1|a\\x09b?c?\\xc3\\xa9?[31m\nM0");
}

TEST(enhanced_codes)
{
    check_all(S("250 2.0.0\r\n"), &lim_default, "D250|2.0.0|1|\nM0");
    check_all(S("250 2.0.0 \r\n"), &lim_default, "D250|2.0.0|1|\nM0");
    check_all(S("250 2.0.0  two spaces\r\n"), &lim_default,
              "D250|2.0.0|1| two spaces\nM0");
    check_all(S("550 5.100.999 x\r\n"), &lim_default, "D550|5.100.999|1|x\nM0");
    /* Wrong class: kept as text. */
    check_all(S("550 4.1.1 x\r\n"), &lim_default, "D550||1|4.1.1 x\nM0");
    check_all(S("250 5.0.0 x\r\n"), &lim_default, "D250||1|5.0.0 x\nM0");
    /* No RFC 3463 class 3. */
    check_all(S("354 3.0.0 go ahead\r\n"), &lim_default,
              "D354||1|3.0.0 go ahead\nM0");
    /* Malformed ones: kept as text. */
    check_all(S("250 2.0.0x\r\n"), &lim_default, "D250||1|2.0.0x\nM0");
    check_all(S("250 2.1000.0 x\r\n"), &lim_default, "D250||1|2.1000.0 x\nM0");
    check_all(S("250 2.0.1000 x\r\n"), &lim_default, "D250||1|2.0.1000 x\nM0");
    check_all(S("250 2..0 x\r\n"), &lim_default, "D250||1|2..0 x\nM0");
    check_all(S("250 2.0. x\r\n"), &lim_default, "D250||1|2.0. x\nM0");
    check_all(S("250 2.0\r\n"), &lim_default, "D250||1|2.0\nM0");
    check_all(S("250 2.0.0\t\r\n"), &lim_default, "D250||1|2.0.0\\x09\nM0");
    check_all(S("250 22.0.0 x\r\n"), &lim_default, "D250||1|22.0.0 x\nM0");
}

TEST(pipelined_replies)
{
    check_all(S("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with "
                "<CR><LF>.<CR><LF>\r\n"),
              &lim_default,
              "D250|2.1.0|1|Ok\nD250|2.1.5|1|Ok\n"
              "D354||1|End data with <CR><LF>.<CR><LF>\nM0");
    /* A partial reply after complete ones is held by the caller. */
    check_all(S("250 a\r\n550-b\r\n550 c"), &lim_default,
              "D250||1|a\nM5");
    check_all(S("250 a\r\n452 4.5.3 Too many\r\n250-x\r\n250 y\r\n"),
              &lim_default,
              "D250||1|a\nD452|4.5.3|1|Too many\nD250||2|x\\ny\nM0");
}

TEST(used_stops_after_reply)
{
    struct smtp_reply_parser p;
    struct smtp_reply r;
    const char *err = NULL;
    size_t used = 0;
    const char in[] = "250 a\r\n251 b\r\n";

    smtp_reply_parser_init(&p, &lim_default);
    CHECK_EQ_INT(smtp_reply_parse(&p, in, sizeof in - 1, &used, &r, &err),
                 SMTP_REPLY_DONE);
    CHECK_EQ_INT(used, 7);
    CHECK_EQ_STR(r.text, "a");
    smtp_reply_clear(&r);
    CHECK(r.text == NULL);
    smtp_reply_clear(&r);   /* twice is safe */
    CHECK_EQ_INT(smtp_reply_parse(&p, in + 7, 7, &used, &r, &err),
                 SMTP_REPLY_DONE);
    CHECK_EQ_INT(used, 7);
    CHECK_EQ_INT(r.code, 251);
    smtp_reply_clear(&r);
    /* Empty input: more, nothing used. */
    CHECK_EQ_INT(smtp_reply_parse(&p, "", 0, &used, &r, &err),
                 SMTP_REPLY_MORE);
    CHECK_EQ_INT(used, 0);
    /* A partial line is not consumed, a complete one is. */
    CHECK_EQ_INT(smtp_reply_parse(&p, "250-x\r\n25", 9, &used, &r, &err),
                 SMTP_REPLY_MORE);
    CHECK_EQ_INT(used, 7);
    smtp_reply_parser_free(&p);   /* frees the partial reply */
}

/* ---- hostile replies ---- */

TEST(malformed_codes)
{
    check_all(S("999 x\r\n"), &lim_default, "B:malformed reply code@0");
    check_all(S("25\r\n"), &lim_default, "B:malformed reply code@0");
    check_all(S("25 x\r\n"), &lim_default, "B:malformed reply code@0");
    check_all(S("\r\n"), &lim_default, "B:malformed reply code@0");
    check_all(S("\n"), &lim_default, "B:malformed reply code@0");
    check_all(S("2a0 x\r\n"), &lim_default, "B:malformed reply code@0");
    check_all(S("150 x\r\n"), &lim_default, "B:malformed reply code@0");
    check_all(S("600 x\r\n"), &lim_default, "B:malformed reply code@0");
    check_all(S("260 x\r\n"), &lim_default, "B:malformed reply code@0");
    check_all(S(" 250 x\r\n"), &lim_default, "B:malformed reply code@0");
    check_all(S("250x\r\n"), &lim_default, "B:malformed reply line@0");
    check_all(S("2500 x\r\n"), &lim_default, "B:malformed reply line@0");
    check_all(S("250\tx\r\n"), &lim_default, "B:malformed reply line@0");
    check_all(S("250\r\r\n"), &lim_default, "B:malformed reply line@0");
    /* After a good line, the offset points at the bad one. */
    check_all(S("250-a\r\n25\r\n"), &lim_default, "B:malformed reply code@7");
    check_all(S("250 a\r\nxyz\r\n"), &lim_default,
              "D250||1|a\nB:malformed reply code@7");
    /* Valid bounds. */
    check_all(S("200 x\r\n559 x\r\n"), &lim_default,
              "D200||1|x\nD559||1|x\nM0");
}

TEST(mixed_codes)
{
    check_all(S("250-a\r\n251 b\r\n"), &lim_default,
              "B:reply codes differ between lines@7");
    check_all(S("250-a\r\n550 b\r\n"), &lim_default,
              "B:reply codes differ between lines@7");
    check_all(S("250-a\r\n250-b\r\n250-c\r\n450 d\r\n"), &lim_default,
              "B:reply codes differ between lines@21");
}

TEST(nul_byte)
{
    check_all(S("250 a\0b\r\n"), &lim_default, "B:NUL byte in reply@0");
    check_all(S("250-ok\r\n\0\r\n"), &lim_default, "B:NUL byte in reply@8");
    /* NUL before the code is still NUL first. */
    check_all(S("\0" "250 x\r\n"), &lim_default, "B:NUL byte in reply@0");
}

TEST(line_length)
{
    /* lim_small.line_max is 16 including the line end. */
    check_all(S("250 0123456789a\n"), &lim_small, "D250||1|0123456789a\nM0");
    check_all(S("250 0123456789\r\n"), &lim_small, "D250||1|0123456789\nM0");
    check_all(S("250 0123456789a\r\n"), &lim_small,
              "B:reply line too long@0");
    check_all(S("250 0123456789ab\n"), &lim_small, "B:reply line too long@0");
    /* A partial line of 15 may still end in time, of 16 may not. */
    check_all(S("250 0123456789a"), &lim_small, "M15");
    check_all(S("250 0123456789ab"), &lim_small, "B:reply line too long@0");
    check_all(S("250-a\r\n250 0123456789abcdef"), &lim_small,
              "B:reply line too long@7");
}

TEST(no_line_end_ever)
{
    /* 1 MB without an LF: refused once line_max octets are held, however
     * the server trickles them. */
    size_t n = 1u << 20, cuts[4] = {100, 2047, 2048, 5000};
    char *in = malloc(n), *t;
    memset(in, 'A', n);
    memcpy(in, "250 ", 4);
    t = drive(in, n, &lim_default, NULL, 0);
    CHECK_EQ_STR(t, "B:reply line too long@0");
    free(t);
    t = drive(in, n, &lim_default, cuts, 4);
    CHECK_EQ_STR(t, "B:reply line too long@0");
    free(t);
    /* 2047 octets held: still waiting. */
    t = drive(in, 2047, &lim_default, cuts, 1);
    CHECK_EQ_STR(t, "M2047");
    free(t);
    free(in);
}

static char *repeat(const char *unit, size_t count, const char *tail,
                    size_t *len_r)
{
    size_t u = strlen(unit), tl = strlen(tail), i;
    char *s = malloc(u * count + tl + 1);
    for (i = 0; i < count; i++)
        memcpy(s + i * u, unit, u);
    memcpy(s + u * count, tail, tl + 1);
    *len_r = u * count + tl;
    return s;
}

TEST(million_continuation_lines)
{
    size_t len, cuts[300], i;
    char *in = repeat("250-x\r\n", 1000000, "250 end\r\n", &len), *t;
    struct smtp_reply_limits many_lines = {2048, 10000000, 65536};
    char expect[64];

    /* lines_max 100: the 101st line is refused. */
    snprintf(expect, sizeof expect, "B:too many reply lines@%d", 100 * 7);
    t = drive(in, len, &lim_default, NULL, 0);
    CHECK_EQ_STR(t, expect);
    free(t);
    for (i = 0; i < 300; i++)
        cuts[i] = 13 * (i + 1);
    t = drive(in, len, &lim_default, cuts, 300);
    CHECK_EQ_STR(t, expect);
    free(t);
    /* With lines allowed, the size cap stops it: 9362 lines fit 65536. */
    snprintf(expect, sizeof expect, "B:reply too large@%d", 9362 * 7);
    t = drive(in, len, &many_lines, NULL, 0);
    CHECK_EQ_STR(t, expect);
    free(t);
    t = drive(in, len, &many_lines, cuts, 300);
    CHECK_EQ_STR(t, expect);
    free(t);
    free(in);
}

TEST(limits_small)
{
    /* lines_max 3, size_max 40 octets as received. */
    check_all(S("250-a\r\n250-b\r\n250 c\r\n"), &lim_small,
              "D250||3|a\\nb\\nc\nM0");
    check_all(S("250-a\r\n250-b\r\n250-c\r\n250 d\r\n"), &lim_small,
              "B:too many reply lines@21");
    /* 13 + 13 + 14 = 40 fits; one more octet does not. */
    check_all(S("250-abcdefg\r\n250-abcdefg\r\n250 abcdefgh\r\n"), &lim_small,
              "D250||3|abcdefg\\nabcdefg\\nabcdefgh\nM0");
    check_all(S("250-abcdefg\r\n250-abcdefg\r\n250 abcdefghi\r\n"), &lim_small,
              "B:reply too large@26");
    /* Limits are per reply. */
    check_all(S("250-a\r\n250-b\r\n250 c\r\n250-a\r\n250-b\r\n250 c\r\n"),
              &lim_small, "D250||3|a\\nb\\nc\nD250||3|a\\nb\\nc\nM0");
}

TEST(reuse_after_bad)
{
    struct smtp_reply_parser p;
    struct smtp_reply r;
    const char *err = NULL;
    size_t used;

    smtp_reply_parser_init(&p, &lim_default);
    CHECK_EQ_INT(smtp_reply_parse(&p, S("250-a\r\n550 b\r\n"), &used, &r,
                                  &err),
                 SMTP_REPLY_BAD);
    CHECK_EQ_STR(err, "reply codes differ between lines");
    CHECK_EQ_INT(used, 7);
    CHECK_EQ_INT(smtp_reply_parse(&p, S("220 ok\r\n"), &used, &r, &err),
                 SMTP_REPLY_DONE);
    CHECK_EQ_INT(r.nlines, 1);
    CHECK_EQ_STR(r.text, "ok");
    smtp_reply_clear(&r);
    smtp_reply_parser_free(&p);
}

/* ---- EHLO ---- */

TEST(ehlo_postfix)
{
    static const char in[] =
        "250-mail.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
        "250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n"
        "250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
    struct smtp_reply r;
    struct smtp_ehlo c;

    check_all(S(in), &lim_default,
              "D250||11|mail.example.org\\nPIPELINING\\nSIZE 10240000\\nVRFY"
              "\\nETRN\\nSTARTTLS\\nENHANCEDSTATUSCODES\\n8BITMIME\\nDSN"
              "\\nSMTPUTF8\\nCHUNKING\nM0");
    CHECK(parse_one(in, &r) == 0);
    smtp_ehlo_parse(&r, &c);
    CHECK(c.pipelining && c.starttls && c.enhancedstatuscodes &&
          c.eightbitmime && c.dsn && c.smtputf8 && c.chunking);
    CHECK(!c.binarymime);
    CHECK(c.size_advertised);
    CHECK_EQ_INT(c.size_max, 10240000);
    CHECK_EQ_STR(c.auth_mechs, "");
    smtp_reply_clear(&r);
}

TEST(ehlo_exim)
{
    struct smtp_reply r;
    struct smtp_ehlo c;

    CHECK(parse_one("250-mx.example.net Hello foo [192.0.2.1]\r\n"
                    "250-SIZE 52428800\r\n250-8BITMIME\r\n250-PIPELINING\r\n"
                    "250-PIPE_CONNECT\r\n250-AUTH PLAIN LOGIN\r\n"
                    "250-CHUNKING\r\n250-STARTTLS\r\n250-PRDR\r\n250 HELP\r\n",
                    &r) == 0);
    smtp_ehlo_parse(&r, &c);
    CHECK(c.pipelining && c.eightbitmime && c.chunking && c.starttls);
    CHECK(!c.dsn && !c.smtputf8 && !c.enhancedstatuscodes);
    CHECK_EQ_INT(c.size_max, 52428800);
    CHECK_EQ_STR(c.auth_mechs, "PLAIN LOGIN");
    smtp_reply_clear(&r);
}

TEST(ehlo_gmail_like)
{
    struct smtp_reply r;
    struct smtp_ehlo c;

    CHECK(parse_one("250-mx.google.com at your service, [192.0.2.1]\r\n"
                    "250-SIZE 157286400\r\n250-8BITMIME\r\n250-STARTTLS\r\n"
                    "250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n"
                    "250-CHUNKING\r\n250 SMTPUTF8\r\n",
                    &r) == 0);
    smtp_ehlo_parse(&r, &c);
    CHECK(c.pipelining && c.eightbitmime && c.chunking && c.starttls &&
          c.smtputf8 && c.enhancedstatuscodes);
    CHECK(!c.dsn && !c.binarymime);
    CHECK_EQ_INT(c.size_max, 157286400);
    smtp_reply_clear(&r);
}

TEST(ehlo_old_auth_and_case)
{
    struct smtp_reply r;
    struct smtp_ehlo c;

    CHECK(parse_one("250-host\r\n250-AUTH=LOGIN PLAIN\r\n"
                    "250-AUTH LOGIN PLAIN CRAM-MD5\r\n250-auth digest-md5\r\n"
                    "250-pipelining\r\n250-BinaryMime\r\n250-dsn\r\n"
                    "250 size\r\n",
                    &r) == 0);
    smtp_ehlo_parse(&r, &c);
    CHECK_EQ_STR(c.auth_mechs, "LOGIN PLAIN CRAM-MD5 DIGEST-MD5");
    CHECK(c.pipelining && c.binarymime && c.dsn);
    CHECK(c.size_advertised);
    CHECK_EQ_INT(c.size_max, 0);
    smtp_reply_clear(&r);
}

TEST(ehlo_junk)
{
    struct smtp_reply r;
    struct smtp_ehlo c;

    CHECK(parse_one("250-host\r\n250-\r\n250- \r\n250-PIPELININGX\r\n"
                    "250-SIZE abc\r\n250-SIZE 100\r\n"
                    "250-AUTH bad/name TOOLONGNAMEXXXXXXXXXXXXXX ok_1 AUTH=X\r\n"
                    "250-AUTH=\r\n250-8BITMIME=yes\r\n250-\tDSN\r\n"
                    "250 \x01STARTTLS\r\n",
                    &r) == 0);
    smtp_ehlo_parse(&r, &c);
    CHECK(!c.pipelining && !c.starttls && !c.eightbitmime);
    CHECK(c.dsn);   /* leading blanks are tolerated */
    CHECK(c.size_advertised);
    CHECK_EQ_INT(c.size_max, 0);   /* the first SIZE line counts */
    CHECK_EQ_STR(c.auth_mechs, "OK_1");
    smtp_reply_clear(&r);

    /* The greeting line is not a keyword line. */
    CHECK(parse_one("250 PIPELINING\r\n", &r) == 0);
    smtp_ehlo_parse(&r, &c);
    CHECK(!c.pipelining);
    smtp_reply_clear(&r);

    /* Not a 250: nothing. */
    CHECK(parse_one("550-host\r\n550 PIPELINING\r\n", &r) == 0);
    smtp_ehlo_parse(&r, &c);
    CHECK(!c.pipelining);
    smtp_reply_clear(&r);
}

TEST(ehlo_size_values)
{
    struct smtp_reply r;
    struct smtp_ehlo c;

    CHECK(parse_one("250-h\r\n250 SIZE 18446744073709551615\r\n", &r) == 0);
    smtp_ehlo_parse(&r, &c);
    CHECK(c.size_max == UINT64_MAX);
    smtp_reply_clear(&r);
    CHECK(parse_one("250-h\r\n250 SIZE 18446744073709551616\r\n", &r) == 0);
    smtp_ehlo_parse(&r, &c);
    CHECK(c.size_advertised && c.size_max == 0);
    smtp_reply_clear(&r);
    CHECK(parse_one("250-h\r\n250 SIZE 0\r\n", &r) == 0);
    smtp_ehlo_parse(&r, &c);
    CHECK(c.size_advertised && c.size_max == 0);
    smtp_reply_clear(&r);
    CHECK(parse_one("250-h\r\n250 SIZE -5\r\n", &r) == 0);
    smtp_ehlo_parse(&r, &c);
    CHECK(c.size_advertised && c.size_max == 0);
    smtp_reply_clear(&r);
}

TEST(ehlo_auth_fits)
{
    struct buf in;
    struct smtp_reply r;
    struct smtp_ehlo c;
    int i;

    /* 40 names of 11 octets: 21 fit in 255 with their spaces. */
    buf_init(&in, 4096);
    buf_appends(&in, "250-h\r\n250 AUTH");
    for (i = 0; i < 40; i++)
        buf_appendf(&in, " MECHANISM%02d", i);
    buf_appends(&in, " LOGIN\r\n");
    CHECK(parse_one(buf_cstr(&in), &r) == 0);
    smtp_ehlo_parse(&r, &c);
    CHECK(strlen(c.auth_mechs) < sizeof c.auth_mechs);
    CHECK_EQ_INT(strlen(c.auth_mechs), 21 * 12 - 1);
    CHECK(strncmp(c.auth_mechs, "MECHANISM00 MECHANISM01", 23) == 0);
    CHECK(strcmp(c.auth_mechs + strlen(c.auth_mechs) - 11, "MECHANISM20") == 0);
    smtp_reply_clear(&r);
    buf_free(&in);

    /* A prefix of a listed name is not a duplicate. */
    CHECK(parse_one("250-h\r\n250 AUTH SCRAM-SHA-256 SCRAM-SHA-1 SCRAM "
                    "scram-sha-1\r\n", &r) == 0);
    smtp_ehlo_parse(&r, &c);
    CHECK_EQ_STR(c.auth_mechs, "SCRAM-SHA-256 SCRAM-SHA-1 SCRAM");
    smtp_reply_clear(&r);
}

/* ---- format ---- */

TEST(format)
{
    struct smtp_reply r;
    struct buf out;

    buf_init(&out, 1024);
    CHECK(parse_one("550-5.1.1 first\r\n550 5.1.1 second\r\n", &r) == 0);
    CHECK_EQ_INT(smtp_reply_format(&r, &out), 0);
    CHECK_EQ_STR(buf_cstr(&out), "550 5.1.1 first second");
    smtp_reply_clear(&r);

    buf_reset(&out);
    CHECK(parse_one("250 OK\r\n", &r) == 0);
    CHECK_EQ_INT(smtp_reply_format(&r, &out), 0);
    CHECK_EQ_STR(buf_cstr(&out), "250 OK");
    smtp_reply_clear(&r);

    buf_reset(&out);
    CHECK(parse_one("250\r\n", &r) == 0);
    CHECK_EQ_INT(smtp_reply_format(&r, &out), 0);
    CHECK_EQ_STR(buf_cstr(&out), "250");
    smtp_reply_clear(&r);

    /* Appends; the cap is exact. */
    buf_free(&out);
    buf_init(&out, 21);
    buf_appends(&out, "x=");
    CHECK(parse_one("451 4.3.0 temporary\r\n", &r) == 0);
    CHECK_EQ_INT(smtp_reply_format(&r, &out), 0);
    CHECK_EQ_STR(buf_cstr(&out), "x=451 4.3.0 temporary");
    buf_free(&out);
    buf_init(&out, 21);
    buf_appends(&out, "xy=");
    CHECK_EQ_INT(smtp_reply_format(&r, &out), -1);
    CHECK_EQ_STR(buf_cstr(&out), "xy=");
    CHECK_EQ_INT(out.len, 3);
    smtp_reply_clear(&r);
    buf_free(&out);
}

int main(void)
{
    RUN(single_line);
    RUN(multi_line);
    RUN(bare_code_and_empty_text);
    RUN(line_ends);
    RUN(text_is_cleaned);
    RUN(enhanced_codes);
    RUN(pipelined_replies);
    RUN(used_stops_after_reply);
    RUN(malformed_codes);
    RUN(mixed_codes);
    RUN(nul_byte);
    RUN(line_length);
    RUN(no_line_end_ever);
    RUN(million_continuation_lines);
    RUN(limits_small);
    RUN(reuse_after_bad);
    RUN(ehlo_postfix);
    RUN(ehlo_exim);
    RUN(ehlo_gmail_like);
    RUN(ehlo_old_auth_and_case);
    RUN(ehlo_junk);
    RUN(ehlo_size_values);
    RUN(ehlo_auth_fits);
    RUN(format);
    return harness_done("test_smtp_reply");
}
