/*
 * Tests for proto/pop3: the line reader (whole, split at every position,
 * byte by byte, switching to the AUTH line limit), the command parser (a
 * table of every command and argument error, hostile lines), and the
 * stuffing writer (a table fed whole, split once and twice everywhere, byte
 * by byte; random messages against a reference model; the output read back
 * by the SMTP DATA reader, which reads exactly this format).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "proto/pop3.h"
#include "proto/smtp_data.h"

/* ------------------------------------------------------------------ */
/* line reader                                                         */

#define BUFCAP 16384

/* The caller the contract describes: keeps unconsumed bytes and appends.
 * Records each result as text: "OK:<line>|", "LONG|", "BAD|". */
struct sim {
    struct pop3_line_reader lr;
    size_t max;
    char buf[BUFCAP];
    size_t len;
    char events[BUFCAP];
    size_t elen;
    int violations;
};

static void ev_add(struct sim *s, const char *t, size_t n)
{
    if (s->elen + n < sizeof s->events) {
        memcpy(s->events + s->elen, t, n);
        s->elen += n;
        s->events[s->elen] = '\0';
    } else {
        s->violations++;
    }
}

static void sim_init(struct sim *s, size_t max)
{
    memset(s, 0, sizeof *s);
    s->max = max;
    pop3_line_init(&s->lr, max);
}

static void sim_set_max(struct sim *s, size_t max)
{
    s->max = max;
    pop3_line_set_max(&s->lr, max);
}

/* Handles lines until NEED_MORE; returns after the first OK line if
 * one_line (the session switching limits between two lines). */
static void sim_drain(struct sim *s, bool one_line)
{
    for (;;) {
        const char *line;
        size_t line_len, consumed;
        enum pop3_line_result r =
            pop3_line_next(&s->lr, s->buf, s->len, &line, &line_len, &consumed);
        if (consumed > s->len)
            s->violations++;
        switch (r) {
        case POP3_LINE_OK:
            if (line != s->buf || line_len >= s->max || line_len >= consumed ||
                memchr(line, '\r', line_len) || memchr(line, '\0', line_len))
                s->violations++;
            ev_add(s, "OK:", 3);
            ev_add(s, line, line_len);
            ev_add(s, "|", 1);
            break;
        case POP3_LINE_TOO_LONG:
            ev_add(s, "LONG|", 5);
            break;
        case POP3_LINE_BAD:
            ev_add(s, "BAD|", 4);
            break;
        case POP3_LINE_NEED_MORE:
            if (consumed == 0 && s->len >= s->max)
                s->violations++;
            break;
        }
        if (r != POP3_LINE_NEED_MORE && consumed == 0)
            s->violations++;     /* would loop forever */
        memmove(s->buf, s->buf + consumed, s->len - consumed);
        s->len -= consumed;
        if (r == POP3_LINE_NEED_MORE || (one_line && r == POP3_LINE_OK))
            break;
    }
}

static void sim_feed(struct sim *s, const char *in, size_t n)
{
    if (s->len + n > sizeof s->buf) {
        s->violations++;
        return;
    }
    memcpy(s->buf + s->len, in, n);
    s->len += n;
    sim_drain(s, false);
}

struct line_case {
    const char *in;
    size_t len;
    size_t max;
    const char *events;
    size_t left;         /* bytes still buffered at the end */
};

#define LC(s, max, ev, left) { s, sizeof(s) - 1, max, ev, left }

static const struct line_case line_cases[] = {
    LC("USER bob\r\n", 255, "OK:USER bob|", 0),
    LC("\r\n", 255, "OK:|", 0),
    LC("\n", 255, "OK:|", 0),
    LC("STAT\nLIST\r\n", 255, "OK:STAT|OK:LIST|", 0),
    LC("PASS a\rb\r\nNOOP\r\n", 255, "BAD|OK:NOOP|", 0),
    LC("PASS a\r\r\n", 255, "BAD|", 0),
    LC("\r\r\n", 255, "BAD|", 0),
    LC("PASS a\0b\r\nQUIT\r\n", 255, "BAD|OK:QUIT|", 0),
    LC("\0\n", 255, "BAD|", 0),
    LC("RETR 1\r", 255, "", 7),
    LC("NOOP\r\nQU", 255, "OK:NOOP|", 2),
    LC("a\n\nb\r\n\r\n", 255, "OK:a|OK:|OK:b|OK:|", 0),
    /* exactly max including CRLF / LF, and one more */
    LC("123456\r\n", 8, "OK:123456|", 0),
    LC("1234567\n", 8, "OK:1234567|", 0),
    LC("1234567\r\n", 8, "LONG|", 0),
    LC("12345678\n", 8, "LONG|", 0),
    LC("12345678\nOK\r\n", 8, "LONG|OK:OK|", 0),
    LC("0123456789abcdefXYZ\r\nNOOP\r\n", 16, "LONG|OK:NOOP|", 0),
    /* an over-long line holding CR and NUL is reported once, as LONG */
    LC("0123456789\r\0abcdefXYZ\r\nNOOP\r\n", 16, "LONG|OK:NOOP|", 0),
    LC("0123456789abcdefXYZ", 16, "", 0),
    LC("a\r.\r\nb\r\n", 255, "BAD|OK:b|", 0),
};

static void run_line_case(const struct line_case *c, const size_t *cuts,
                          size_t ncuts, const char *how)
{
    struct sim *s = malloc(sizeof *s);
    size_t pos = 0;
    if (s == NULL)
        abort();
    sim_init(s, c->max);
    for (size_t k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : c->len;
        if (end < pos)
            end = pos;
        sim_feed(s, c->in + pos, end - pos);
        pos = end;
    }
    if (strcmp(s->events, c->events) != 0 || s->len != c->left ||
        s->violations != 0) {
        fprintf(stderr, "line case %s (%s): got \"%s\" left %zu viol %d\n",
                c->events, how, s->events, s->len, s->violations);
        harness_cur_failed = 1;
    }
    free(s);
}

TEST(line_reader_whole)
{
    for (size_t i = 0; i < sizeof line_cases / sizeof line_cases[0]; i++)
        run_line_case(&line_cases[i], NULL, 0, "whole");
}

TEST(line_reader_split_everywhere)
{
    for (size_t i = 0; i < sizeof line_cases / sizeof line_cases[0]; i++) {
        const struct line_case *c = &line_cases[i];
        for (size_t k = 0; k <= c->len; k++)
            run_line_case(c, &k, 1, "split once");
        for (size_t a = 1; a < c->len; a++)
            for (size_t b = a; b < c->len; b++) {
                size_t cuts[2] = { a, b };
                run_line_case(c, cuts, 2, "split twice");
            }
    }
}

TEST(line_reader_trickle)
{
    for (size_t i = 0; i < sizeof line_cases / sizeof line_cases[0]; i++) {
        const struct line_case *c = &line_cases[i];
        size_t cuts[128];
        size_t n = c->len < 128 ? c->len : 128;
        for (size_t k = 0; k < n; k++)
            cuts[k] = k;
        run_line_case(c, cuts, n, "one byte at a time");
    }
}

TEST(line_reader_rfc2449_limit)
{
    /* 255 octets including CRLF (RFC 2449 4) is a command; 256 is not. */
    char in[600];
    struct sim *s = malloc(sizeof *s);
    memset(in, 'x', sizeof in);
    memcpy(in + 253, "\r\n", 2);
    memcpy(in + 255 + 254, "\r\nQUIT\r\n", 8);
    sim_init(s, POP3_CMD_LINE_MAX);
    for (size_t i = 0; i < 255 + 254 + 8; i++)
        sim_feed(s, in + i, 1);
    CHECK(strncmp(s->events, "OK:xxx", 6) == 0);
    CHECK(strstr(s->events, "|LONG|OK:QUIT|") != NULL);
    CHECK_EQ_INT(strlen(s->events), 3 + 253 + 1 + 5 + 8);
    CHECK_EQ_INT(s->violations, 0);
    CHECK_EQ_INT(s->len, 0);
    free(s);
}

/* The session reads "AUTH PLAIN" with the command limit, then the base64
 * response with the AUTH limit, then commands again; all three may arrive
 * in one read (pipelined) or byte by byte. */
TEST(line_reader_auth_limit_switch)
{
    size_t b64 = POP3_AUTH_LINE_MAX - 2;
    size_t total = 12 + b64 + 2 + 6 + 300 + 2 + 6;
    char *in = malloc(total);
    struct sim *s = malloc(sizeof *s);
    size_t o = 0;
    memcpy(in + o, "AUTH PLAIN\r\n", 12), o += 12;
    memset(in + o, 'A', b64), o += b64;
    memcpy(in + o, "\r\n", 2), o += 2;
    memcpy(in + o, "STAT\r\n", 6), o += 6;
    memset(in + o, 'B', 300), o += 300;     /* too long for a command */
    memcpy(in + o, "\r\n", 2), o += 2;
    memcpy(in + o, "QUIT\r\n", 6), o += 6;
    CHECK_EQ_INT(o, total);

    for (int trickle = 0; trickle < 2; trickle++) {
        size_t pos = 0;
        int step = 0;   /* 0: command, 1: auth line, 2: commands */
        sim_init(s, POP3_CMD_LINE_MAX);
        while (pos < total) {
            size_t n = trickle ? 1 : total - pos;
            if (s->len + n > sizeof s->buf)
                n = sizeof s->buf - s->len;
            memcpy(s->buf + s->len, in + pos, n);
            s->len += n;
            pos += n;
            /* lines already buffered are handled with the limit in force */
            for (;;) {
                size_t before = s->elen;
                sim_drain(s, step < 2);
                if (s->elen == before)
                    break;
                if (step == 0) {
                    sim_set_max(s, POP3_AUTH_LINE_MAX);
                    step = 1;
                } else if (step == 1) {
                    sim_set_max(s, POP3_CMD_LINE_MAX);
                    step = 2;
                }
            }
        }
        CHECK_EQ_INT(step, 2);
        CHECK(strncmp(s->events, "OK:AUTH PLAIN|OK:AAAA", 21) == 0);
        CHECK(strstr(s->events, "A|OK:STAT|LONG|OK:QUIT|") != NULL);
        CHECK_EQ_INT(s->elen, 14 + 3 + b64 + 1 + 8 + 5 + 8);
        CHECK_EQ_INT(s->violations, 0);
        CHECK_EQ_INT(s->len, 0);
    }
    /* one octet more than the AUTH limit is too long */
    sim_init(s, POP3_AUTH_LINE_MAX);
    memset(in, 'A', b64 + 1);
    memcpy(in + b64 + 1, "\r\n", 2);
    sim_feed(s, in, b64 + 3);
    CHECK_EQ_STR(s->events, "LONG|");
    CHECK_EQ_INT(s->violations, 0);
    free(in);
    free(s);
}

TEST(line_reader_contract_edges)
{
    struct pop3_line_reader lr;
    const char *line = "x";
    size_t ll = 9, consumed = 9;
    pop3_line_init(&lr, POP3_CMD_LINE_MAX);
    CHECK_EQ_INT(pop3_line_next(&lr, NULL, 0, &line, &ll, &consumed),
                 POP3_LINE_NEED_MORE);
    CHECK(line == NULL);
    CHECK_EQ_INT(ll, 0);
    CHECK_EQ_INT(consumed, 0);
    /* max 0: every line is too long, and nothing crashes */
    pop3_line_init(&lr, 0);
    CHECK_EQ_INT(pop3_line_next(&lr, "ab\n", 3, &line, &ll, &consumed),
                 POP3_LINE_TOO_LONG);
    CHECK_EQ_INT(consumed, 3);
    /* a line being discarded stays discarded after the limit grows */
    pop3_line_init(&lr, 4);
    CHECK_EQ_INT(pop3_line_next(&lr, "abcdef", 6, &line, &ll, &consumed),
                 POP3_LINE_NEED_MORE);
    CHECK_EQ_INT(consumed, 6);
    pop3_line_set_max(&lr, 100);
    CHECK_EQ_INT(pop3_line_next(&lr, "gh\r\nok\r\n", 8, &line, &ll, &consumed),
                 POP3_LINE_TOO_LONG);
    CHECK_EQ_INT(consumed, 4);
    CHECK_EQ_INT(pop3_line_next(&lr, "ok\r\n", 4, &line, &ll, &consumed),
                 POP3_LINE_OK);
    CHECK_EQ_INT(ll, 2);
}

/* ------------------------------------------------------------------ */
/* commands                                                            */

#define NONE (-1L)

struct cmd_case {
    const char *line;
    size_t len;              /* 0: strlen(line) */
    int rc;
    enum pop3_verb verb;
    enum pop3_err err;
    unsigned nnum;
    long num0, num1;
    const char *arg;         /* NULL: none */
    const char *arg2;
    bool eightbit;
};

#define OK0(l, v) { l, 0, 0, v, POP3_ERR_NONE, 0, 0, 0, NULL, NULL, false }
#define OKN1(l, v, a) { l, 0, 0, v, POP3_ERR_NONE, 1, a, 0, NULL, NULL, false }
#define OKN2(l, v, a, b) { l, 0, 0, v, POP3_ERR_NONE, 2, a, b, NULL, NULL, false }
#define OKS(l, v, s, s2, e) { l, 0, 0, v, POP3_ERR_NONE, 0, 0, 0, s, s2, e }
#define BAD(l, v, err) { l, 0, -1, v, err, 0, 0, 0, NULL, NULL, false }
#define BADL(l, v, err) { l, sizeof(l) - 1, -1, v, err, 0, 0, 0, NULL, NULL, false }

static const struct cmd_case cmd_cases[] = {
    /* no-argument commands, any case, trailing blanks ignored */
    OK0("STAT", POP3_CMD_STAT),
    OK0("stat", POP3_CMD_STAT),
    OK0("StAt \t ", POP3_CMD_STAT),
    OK0("NOOP", POP3_CMD_NOOP),
    OK0("RSET", POP3_CMD_RSET),
    OK0("QUIT", POP3_CMD_QUIT),
    OK0("QUIT\t", POP3_CMD_QUIT),
    OK0("CAPA", POP3_CMD_CAPA),
    OK0("STLS", POP3_CMD_STLS),
    OK0("utf8", POP3_CMD_UTF8),
    BAD("STAT 1", POP3_CMD_STAT, POP3_ERR_SYNTAX),
    BAD("NOOP x", POP3_CMD_NOOP, POP3_ERR_SYNTAX),
    BAD("RSET x", POP3_CMD_RSET, POP3_ERR_SYNTAX),
    BAD("QUIT now", POP3_CMD_QUIT, POP3_ERR_SYNTAX),
    BAD("CAPA x", POP3_CMD_CAPA, POP3_ERR_SYNTAX),
    BAD("STLS x", POP3_CMD_STLS, POP3_ERR_SYNTAX),
    BAD("UTF8 x", POP3_CMD_UTF8, POP3_ERR_SYNTAX),
    OK0("STAT  ", POP3_CMD_STAT),

    /* unknown keywords */
    BAD("", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),
    BAD("   ", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),
    BAD(" STAT", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),
    BAD("\tSTAT", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),
    BAD("ST", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),
    BAD("STATS", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),
    BAD("STAT\tx", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),
    BAD("LANG", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),
    BAD("LANG fr", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),
    BAD("XTND XMIT", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),
    BAD("LAST", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),
    BAD("HELO x", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),
    BAD("STARTTLS", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),
    BADL("ST\0T", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),
    BAD("ST\xc3\x84T", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),

    /* LIST / UIDL [msg] */
    OK0("LIST", POP3_CMD_LIST),
    OK0("uidl", POP3_CMD_UIDL),
    OKN1("LIST 1", POP3_CMD_LIST, 1),
    OKN1("LIST 42 ", POP3_CMD_LIST, 42),
    OKN1("UIDL 7", POP3_CMD_UIDL, 7),
    OKN1("LIST 0000000001", POP3_CMD_LIST, 1),
    OKN1("LIST 4294967295", POP3_CMD_LIST, 4294967295L),
    BAD("LIST 0", POP3_CMD_LIST, POP3_ERR_NUMBER),
    BAD("LIST 4294967296", POP3_CMD_LIST, POP3_ERR_NUMBER),
    BAD("LIST 9999999999", POP3_CMD_LIST, POP3_ERR_NUMBER),
    BAD("LIST 00000000001", POP3_CMD_LIST, POP3_ERR_NUMBER),
    BAD("LIST 99999999999999999999999999", POP3_CMD_LIST, POP3_ERR_NUMBER),
    BAD("LIST -1", POP3_CMD_LIST, POP3_ERR_NUMBER),
    BAD("LIST +1", POP3_CMD_LIST, POP3_ERR_NUMBER),
    BAD("LIST 1.0", POP3_CMD_LIST, POP3_ERR_NUMBER),
    BAD("LIST 0x1", POP3_CMD_LIST, POP3_ERR_NUMBER),
    BAD("LIST 1a", POP3_CMD_LIST, POP3_ERR_NUMBER),
    BAD("LIST one", POP3_CMD_LIST, POP3_ERR_NUMBER),
    BAD("LIST 1\t2", POP3_CMD_LIST, POP3_ERR_NUMBER),
    BADL("LIST 1\0", POP3_CMD_LIST, POP3_ERR_NUMBER),
    BAD("LIST \xd9\xa1", POP3_CMD_LIST, POP3_ERR_NUMBER),   /* Arabic-Indic 1 */
    BAD("LIST 1 2", POP3_CMD_LIST, POP3_ERR_SYNTAX),
    BAD("LIST  1", POP3_CMD_LIST, POP3_ERR_SYNTAX),
    BAD("UIDL 0", POP3_CMD_UIDL, POP3_ERR_NUMBER),
    BAD("UIDL 1 2", POP3_CMD_UIDL, POP3_ERR_SYNTAX),

    /* RETR / DELE msg */
    OKN1("RETR 1", POP3_CMD_RETR, 1),
    OKN1("retr 12345", POP3_CMD_RETR, 12345),
    OKN1("DELE 3", POP3_CMD_DELE, 3),
    BAD("RETR", POP3_CMD_RETR, POP3_ERR_SYNTAX),
    BAD("RETR ", POP3_CMD_RETR, POP3_ERR_SYNTAX),
    BAD("RETR  1", POP3_CMD_RETR, POP3_ERR_SYNTAX),
    BAD("RETR 1 2", POP3_CMD_RETR, POP3_ERR_SYNTAX),
    BAD("RETR 0", POP3_CMD_RETR, POP3_ERR_NUMBER),
    BAD("RETR 00", POP3_CMD_RETR, POP3_ERR_NUMBER),
    BAD("RETR x", POP3_CMD_RETR, POP3_ERR_NUMBER),
    BAD("DELE", POP3_CMD_DELE, POP3_ERR_SYNTAX),
    BAD("DELE 0", POP3_CMD_DELE, POP3_ERR_NUMBER),
    BAD("DELE 1 1", POP3_CMD_DELE, POP3_ERR_SYNTAX),

    /* TOP msg n */
    OKN2("TOP 1 0", POP3_CMD_TOP, 1, 0),
    OKN2("top 2 10", POP3_CMD_TOP, 2, 10),
    OKN2("TOP 1 4294967295", POP3_CMD_TOP, 1, 4294967295L),
    BAD("TOP", POP3_CMD_TOP, POP3_ERR_SYNTAX),
    BAD("TOP 1", POP3_CMD_TOP, POP3_ERR_SYNTAX),
    BAD("TOP 1 2 3", POP3_CMD_TOP, POP3_ERR_SYNTAX),
    BAD("TOP 1  2", POP3_CMD_TOP, POP3_ERR_SYNTAX),
    BAD("TOP 0 1", POP3_CMD_TOP, POP3_ERR_NUMBER),
    BAD("TOP 1 -1", POP3_CMD_TOP, POP3_ERR_NUMBER),
    BAD("TOP 1 4294967296", POP3_CMD_TOP, POP3_ERR_NUMBER),
    BAD("TOP 1 x", POP3_CMD_TOP, POP3_ERR_NUMBER),
    BAD("TOP x 1", POP3_CMD_TOP, POP3_ERR_NUMBER),

    /* USER name */
    OKS("USER bob", POP3_CMD_USER, "bob", NULL, false),
    OKS("user bob@example.org", POP3_CMD_USER, "bob@example.org", NULL, false),
    OKS("USER bob  ", POP3_CMD_USER, "bob", NULL, false),
    OKS("USER j\xc3\xbcrgen", POP3_CMD_USER, "j\xc3\xbcrgen", NULL, true),
    OKS("USER \xf0\x9f\x93\xa7", POP3_CMD_USER, "\xf0\x9f\x93\xa7", NULL, true),
    BAD("USER", POP3_CMD_USER, POP3_ERR_SYNTAX),
    BAD("USER ", POP3_CMD_USER, POP3_ERR_SYNTAX),
    BAD("USER  bob", POP3_CMD_USER, POP3_ERR_SYNTAX),
    BAD("USER bob smith", POP3_CMD_USER, POP3_ERR_SYNTAX),
    BAD("USER bo\tb", POP3_CMD_USER, POP3_ERR_SYNTAX),
    BAD("USER bob\x7f", POP3_CMD_USER, POP3_ERR_SYNTAX),
    BAD("USER bob\x01", POP3_CMD_USER, POP3_ERR_SYNTAX),
    BADL("USER bo\0b", POP3_CMD_USER, POP3_ERR_SYNTAX),
    BAD("USER bo\rb", POP3_CMD_USER, POP3_ERR_SYNTAX),
    BAD("USER bo\nb", POP3_CMD_USER, POP3_ERR_SYNTAX),
    BAD("USER \xff", POP3_CMD_USER, POP3_ERR_SYNTAX),
    BAD("USER \xc3", POP3_CMD_USER, POP3_ERR_SYNTAX),           /* truncated */
    BAD("USER \xc3x", POP3_CMD_USER, POP3_ERR_SYNTAX),
    BAD("USER \xc0\xaf", POP3_CMD_USER, POP3_ERR_SYNTAX),       /* overlong / */
    BAD("USER \xe0\x80\xaf", POP3_CMD_USER, POP3_ERR_SYNTAX),   /* overlong */
    BAD("USER \xed\xa0\x80", POP3_CMD_USER, POP3_ERR_SYNTAX),   /* surrogate */
    BAD("USER \xf4\x90\x80\x80", POP3_CMD_USER, POP3_ERR_SYNTAX), /* > U+10FFFF */
    BAD("USER \xf0\x9f\x93", POP3_CMD_USER, POP3_ERR_SYNTAX),   /* truncated */

    /* PASS: the rest of the line, exactly */
    OKS("PASS secret", POP3_CMD_PASS, "secret", NULL, false),
    OKS("pass secret", POP3_CMD_PASS, "secret", NULL, false),
    OKS("PASS two words", POP3_CMD_PASS, "two words", NULL, false),
    OKS("PASS  lead and trail  ", POP3_CMD_PASS, " lead and trail  ", NULL, false),
    OKS("PASS  ", POP3_CMD_PASS, " ", NULL, false),
    OKS("PASS a\tb", POP3_CMD_PASS, "a\tb", NULL, false),
    OKS("PASS \t", POP3_CMD_PASS, "\t", NULL, false),
    OKS("PASS p\xc3\xa4ss", POP3_CMD_PASS, "p\xc3\xa4ss", NULL, true),
    OKS("PASS 1 2 3", POP3_CMD_PASS, "1 2 3", NULL, false),
    BAD("PASS", POP3_CMD_PASS, POP3_ERR_SYNTAX),
    BAD("PASS ", POP3_CMD_PASS, POP3_ERR_SYNTAX),
    BAD("PASS\t", POP3_CMD_PASS, POP3_ERR_SYNTAX),
    BAD("PASS\tx", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),
    BAD("PASSx y", POP3_CMD_UNKNOWN, POP3_ERR_UNKNOWN),
    BADL("PASS a\0b", POP3_CMD_PASS, POP3_ERR_SYNTAX),
    BAD("PASS a\rb", POP3_CMD_PASS, POP3_ERR_SYNTAX),
    BAD("PASS a\nb", POP3_CMD_PASS, POP3_ERR_SYNTAX),
    BAD("PASS a\x1b", POP3_CMD_PASS, POP3_ERR_SYNTAX),
    BAD("PASS a\x7f", POP3_CMD_PASS, POP3_ERR_SYNTAX),
    BAD("PASS \xe9t\xe9", POP3_CMD_PASS, POP3_ERR_SYNTAX),     /* Latin-1 */

    /* APOP name digest (RFC 1939 7 example) */
    OKS("APOP mrose c4c9334bac560ecc979e58001b3e22fb", POP3_CMD_APOP,
        "mrose", "c4c9334bac560ecc979e58001b3e22fb", false),
    OKS("APOP mrose C4C9334BAC560ECC979E58001B3E22FB", POP3_CMD_APOP,
        "mrose", "C4C9334BAC560ECC979E58001B3E22FB", false),
    BAD("APOP", POP3_CMD_APOP, POP3_ERR_SYNTAX),
    BAD("APOP mrose", POP3_CMD_APOP, POP3_ERR_SYNTAX),
    BAD("APOP mrose c4c9", POP3_CMD_APOP, POP3_ERR_SYNTAX),
    BAD("APOP mrose c4c9334bac560ecc979e58001b3e22fb0", POP3_CMD_APOP, POP3_ERR_SYNTAX),
    BAD("APOP mrose g4c9334bac560ecc979e58001b3e22fb", POP3_CMD_APOP, POP3_ERR_SYNTAX),
    BAD("APOP mrose c4c9334bac560ecc979e58001b3e22fb x", POP3_CMD_APOP, POP3_ERR_SYNTAX),
    BAD("APOP  mrose c4c9334bac560ecc979e58001b3e22fb", POP3_CMD_APOP, POP3_ERR_SYNTAX),
    BAD("APOP \xff c4c9334bac560ecc979e58001b3e22fb", POP3_CMD_APOP, POP3_ERR_SYNTAX),

    /* AUTH [mech [initial-response]] (RFC 5034) */
    OKS("AUTH", POP3_CMD_AUTH, NULL, NULL, false),
    OKS("AUTH PLAIN", POP3_CMD_AUTH, "PLAIN", NULL, false),
    OKS("auth plain", POP3_CMD_AUTH, "plain", NULL, false),
    OKS("AUTH SCRAM-SHA-256", POP3_CMD_AUTH, "SCRAM-SHA-256", NULL, false),
    OKS("AUTH X_Y-1", POP3_CMD_AUTH, "X_Y-1", NULL, false),
    OKS("AUTH PLAIN AGJvYgBzZWNyZXQ=", POP3_CMD_AUTH, "PLAIN", "AGJvYgBzZWNyZXQ=", false),
    OKS("AUTH PLAIN =", POP3_CMD_AUTH, "PLAIN", "=", false),
    OKS("AUTH PLAIN a+/9 ", POP3_CMD_AUTH, "PLAIN", "a+/9", false),
    OKS("AUTH ABCDEFGHIJKLMNOPQRST", POP3_CMD_AUTH, "ABCDEFGHIJKLMNOPQRST", NULL, false),
    BAD("AUTH ABCDEFGHIJKLMNOPQRSTU", POP3_CMD_AUTH, POP3_ERR_SYNTAX),
    BAD("AUTH PL@IN", POP3_CMD_AUTH, POP3_ERR_SYNTAX),
    BAD("AUTH PL.AIN", POP3_CMD_AUTH, POP3_ERR_SYNTAX),
    BAD("AUTH PLAIN dG!z", POP3_CMD_AUTH, POP3_ERR_SYNTAX),
    BAD("AUTH PLAIN *", POP3_CMD_AUTH, POP3_ERR_SYNTAX),
    BAD("AUTH PLAIN a b", POP3_CMD_AUTH, POP3_ERR_SYNTAX),
    BAD("AUTH  PLAIN", POP3_CMD_AUTH, POP3_ERR_SYNTAX),
    BAD("AUTH PLAIN  abc", POP3_CMD_AUTH, POP3_ERR_SYNTAX),
    BAD("AUTH PL\xc3\x84IN", POP3_CMD_AUTH, POP3_ERR_SYNTAX),
};

static void check_cmd_case(const struct cmd_case *c)
{
    struct pop3_cmd r;
    size_t len = c->len ? c->len : strlen(c->line);
    int rc = pop3_cmd_parse(c->line, len, &r);
    bool bad = rc != c->rc || r.verb != c->verb || r.error != c->err ||
               r.verb_text != c->line || r.reason == NULL ||
               strpbrk(r.reason, "\r\n") != NULL ||
               (rc == 0) != (r.reason[0] == '\0');
    if (rc == 0) {
        size_t alen = c->arg ? strlen(c->arg) : 0;
        size_t a2len = c->arg2 ? strlen(c->arg2) : 0;
        if (r.nnum != c->nnum || (c->nnum >= 1 && r.num[0] != (uint32_t)c->num0) ||
            (c->nnum >= 2 && r.num[1] != (uint32_t)c->num1) ||
            (c->arg == NULL) != (r.arg == NULL) ||
            (c->arg && (r.arg_len != alen || memcmp(r.arg, c->arg, alen) != 0)) ||
            (c->arg2 == NULL) != (r.arg2 == NULL) ||
            (c->arg2 && (r.arg2_len != a2len ||
                         memcmp(r.arg2, c->arg2, a2len) != 0)) ||
            r.eightbit != c->eightbit ||
            r.verb_len != strlen(pop3_verb_name(r.verb)))
            bad = true;
        /* results point into the line */
        if (r.arg && (r.arg < c->line || r.arg + r.arg_len > c->line + len))
            bad = true;
        if (r.arg2 && (r.arg2 < c->line || r.arg2 + r.arg2_len > c->line + len))
            bad = true;
    }
    if (bad) {
        fprintf(stderr, "cmd case \"%s\": rc %d verb %d err %d reason \"%s\"\n",
                c->line, rc, r.verb, r.error, r.reason ? r.reason : "(null)");
        harness_cur_failed = 1;
    }
}

TEST(cmd_table)
{
    for (size_t i = 0; i < sizeof cmd_cases / sizeof cmd_cases[0]; i++)
        check_cmd_case(&cmd_cases[i]);
}

TEST(cmd_reasons)
{
    struct pop3_cmd r;
    CHECK_EQ_INT(pop3_cmd_parse("RETR", 4, &r), -1);
    CHECK_EQ_STR(r.reason, "Syntax: RETR msg");
    CHECK_EQ_INT(pop3_cmd_parse("RETR 0", 6, &r), -1);
    CHECK_EQ_STR(r.reason, "Invalid message number");
    CHECK_EQ_INT(pop3_cmd_parse("TOP 1 x", 7, &r), -1);
    CHECK_EQ_STR(r.reason, "Invalid line count");
    CHECK_EQ_INT(pop3_cmd_parse("FOO", 3, &r), -1);
    CHECK_EQ_STR(r.reason, "Unknown command");
    CHECK_EQ_INT(r.verb_len, 3);
    CHECK_EQ_INT(pop3_cmd_parse("USER \xff", 6, &r), -1);
    CHECK_EQ_STR(r.reason, "Invalid user name");
    CHECK_EQ_INT(pop3_cmd_parse("NOOP", 4, &r), 0);
    CHECK_EQ_STR(r.reason, "");
}

TEST(verb_names)
{
    CHECK_EQ_STR(pop3_verb_name(POP3_CMD_UNKNOWN), "");
    CHECK_EQ_STR(pop3_verb_name(POP3_CMD_TOP), "TOP");
    CHECK_EQ_STR(pop3_verb_name(POP3_CMD_UTF8), "UTF8");
    CHECK_EQ_STR(pop3_verb_name(POP3_CMD__COUNT), "");
    CHECK_EQ_STR(pop3_verb_name((enum pop3_verb)-1), "");
    /* every name parses back to its verb */
    for (int v = 1; v < POP3_CMD__COUNT; v++) {
        struct pop3_cmd r;
        const char *n = pop3_verb_name((enum pop3_verb)v);
        pop3_cmd_parse(n, strlen(n), &r);
        CHECK_EQ_INT(r.verb, v);
    }
}

/* Long and hostile lines: never crash, never point outside the line. */
TEST(cmd_hostile)
{
    size_t n = 100000;
    char *big = malloc(n);
    struct pop3_cmd r;
    memcpy(big, "PASS ", 5);
    memset(big + 5, 'x', n - 5);
    CHECK_EQ_INT(pop3_cmd_parse(big, n, &r), 0);
    CHECK_EQ_INT(r.arg_len, n - 5);
    memcpy(big, "AUTH PLAIN ", 11);
    memset(big + 11, 'A', n - 11);
    CHECK_EQ_INT(pop3_cmd_parse(big, n, &r), 0);
    CHECK_EQ_INT(r.arg2_len, n - 11);
    memcpy(big, "RETR ", 5);
    memset(big + 5, '9', n - 5);
    CHECK_EQ_INT(pop3_cmd_parse(big, n, &r), -1);
    CHECK_EQ_INT(r.error, POP3_ERR_NUMBER);
    memset(big, ' ', n);
    memcpy(big, "TOP", 3);
    CHECK_EQ_INT(pop3_cmd_parse(big, n, &r), -1);  /* blanks are no arguments */
    CHECK_EQ_INT(r.verb, POP3_CMD_TOP);
    CHECK_EQ_INT(r.error, POP3_ERR_SYNTAX);
    memset(big, 0, n);
    CHECK_EQ_INT(pop3_cmd_parse(big, n, &r), -1);
    CHECK_EQ_INT(r.error, POP3_ERR_UNKNOWN);
    /* every byte value after a keyword */
    for (int c = 0; c < 256; c++) {
        char l[8] = "USER a";
        l[6] = (char)c;
        int rc = pop3_cmd_parse(l, 7, &r);
        CHECK_EQ_INT(rc, (c > 0x20 && c < 0x7f) ? 0 : (c == ' ' || c == '\t') ? 0 : -1);
    }
    free(big);
}

/* ------------------------------------------------------------------ */
/* stuffing writer                                                     */

#define RETR (-1L)

struct stuff_case {
    long top;            /* RETR or n */
    const char *in;
    size_t len;
    const char *out;
    size_t out_len;
    bool done;           /* POP3_STUFF_DONE reported */
    size_t consumed;     /* input used (len unless done) */
};

#define SC(t, in, out, done, consumed) \
    { t, in, sizeof(in) - 1, out, sizeof(out) - 1, done, consumed }
#define SCA(t, in, out) SC(t, in, out, false, sizeof(in) - 1)

#define MSG "H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\nb3\r\n"

static const struct stuff_case stuff_cases[] = {
    /* RETR */
    SCA(RETR, "", ".\r\n"),
    SCA(RETR, "a\r\n", "a\r\n.\r\n"),
    SCA(RETR, "a", "a\r\n.\r\n"),
    SCA(RETR, "\r\n", "\r\n.\r\n"),
    SCA(RETR, ".\r\n", "..\r\n.\r\n"),
    SCA(RETR, "..\r\n", "...\r\n.\r\n"),
    SCA(RETR, ".", "..\r\n.\r\n"),
    SCA(RETR, "a\r\n.b\r\n..c\r\nd.\r\n", "a\r\n..b\r\n...c\r\nd.\r\n.\r\n"),
    SCA(RETR, ".\r\n.\r\n", "..\r\n..\r\n.\r\n"),
    SCA(RETR, "x\r\n.", "x\r\n..\r\n.\r\n"),
    SCA(RETR, "x\r\n.\r", "x\r\n..\r\n.\r\n"),
    /* bare LF and bare CR become CRLF; the line after them is stuffed */
    SCA(RETR, "\n", "\r\n.\r\n"),
    SCA(RETR, "\r", "\r\n.\r\n"),
    SCA(RETR, "a\n.\n", "a\r\n..\r\n.\r\n"),
    SCA(RETR, "a\r.\r", "a\r\n..\r\n.\r\n"),
    SCA(RETR, "a\r.\r\n", "a\r\n..\r\n.\r\n"),
    SCA(RETR, "\r\r\n", "\r\n\r\n.\r\n"),
    SCA(RETR, "\n\r", "\r\n\r\n.\r\n"),
    SCA(RETR, "\r\r", "\r\n\r\n.\r\n"),
    SCA(RETR, "\n\n", "\r\n\r\n.\r\n"),
    SCA(RETR, "a\r\n\rb", "a\r\n\r\nb\r\n.\r\n"),
    SCA(RETR, "\r\n.\n.\r\n", "\r\n..\r\n..\r\n.\r\n"),
    /* other octets pass through */
    SCA(RETR, "\0.\t\x80\xff\r\n", "\0.\t\x80\xff\r\n.\r\n"),
    SCA(RETR, MSG, MSG ".\r\n"),

    /* TOP */
    SC(0, MSG, "H: 1\r\nH: 2\r\n\r\n.\r\n", true, 14),
    SC(1, MSG, "H: 1\r\nH: 2\r\n\r\nb1\r\n.\r\n", true, 18),
    SC(2, MSG, "H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\n.\r\n", true, 22),
    SC(3, MSG, MSG ".\r\n", true, 26),
    SCA(4, MSG, MSG ".\r\n"),
    SCA(4294967295L, MSG, MSG ".\r\n"),
    SCA(0, "H: 1\r\nH: 2\r\n", "H: 1\r\nH: 2\r\n.\r\n"),
    SCA(0, "H: 1\r\nH: 2", "H: 1\r\nH: 2\r\n.\r\n"),
    SCA(0, "", ".\r\n"),
    SCA(5, "", ".\r\n"),
    SC(0, "\r\nbody\r\n", "\r\n.\r\n", true, 2),
    SC(1, "\r\nbody\r\nmore\r\n", "\r\nbody\r\n.\r\n", true, 8),
    SC(0, ".H\r\n\r\nb\r\n", "..H\r\n\r\n.\r\n", true, 6),
    /* a lone "." line is not the empty line that ends the headers */
    SC(0, "H\r\n.\r\n\r\nb\r\n", "H\r\n..\r\n\r\n.\r\n", true, 8),
    SC(2, "H\r\n\r\n.x\r\n..\r\n.\r\n", "H\r\n\r\n..x\r\n...\r\n.\r\n", true, 13),
    /* bare LF / CR as line ends */
    SC(2, "H: 1\n\nb1\nb2\nb3\n", "H: 1\r\n\r\nb1\r\nb2\r\n.\r\n", true, 12),
    SC(0, "H: 1\n\nb1\n", "H: 1\r\n\r\n.\r\n", true, 6),
    SC(0, "H: 1\r\rb1\n", "H: 1\r\n\r\n.\r\n", true, 6),
    SC(1, "H\r\n\r\nb1\rb2", "H\r\n\r\nb1\r\n.\r\n", true, 8),
    SC(1, "H\r\n\r\nb1\r.b2", "H\r\n\r\nb1\r\n.\r\n", true, 8),
    SCA(1, "H\r\n\r\nb1\r", "H\r\n\r\nb1\r\n.\r\n"),
    SCA(1, "H\r\n\r\nb1", "H\r\n\r\nb1\r\n.\r\n"),
    SC(1, "H\r\n\r\nb1\r\r\n", "H\r\n\r\nb1\r\n.\r\n", true, 8),
    SC(1, "H\r\n\r\n\r\n\r\n", "H\r\n\r\n\r\n.\r\n", true, 7),
};

struct stuff_out {
    char *out;
    size_t out_len;
    size_t consumed;
    bool done;
    bool violation;
};

/*
 * Feeds in[0..len) in the pieces given by cuts (sorted; repeated cuts make
 * empty feeds), each piece in an exact-size buffer and each output into
 * exactly 2 * n + POP3_STUFF_OUT_SLACK bytes, so ASan catches any access
 * beyond the contract. Stops at DONE like the server, then finishes.
 */
static void stuff_run(long top, const char *in, size_t len, const size_t *cuts,
                      size_t ncuts, struct stuff_out *x)
{
    struct pop3_stuff s;
    size_t pos = 0;
    memset(x, 0, sizeof *x);
    x->out = malloc(2 * len + (ncuts + 1) * POP3_STUFF_OUT_SLACK +
                    POP3_STUFF_FINISH_MAX + 1);
    if (x->out == NULL)
        abort();
    if (top == RETR)
        pop3_stuff_init(&s);
    else
        pop3_stuff_init_top(&s, (uint32_t)top);
    for (size_t k = 0; k <= ncuts && !x->done; k++) {
        size_t end = k < ncuts ? cuts[k] : len;
        if (end < pos)
            end = pos;
        size_t n = end - pos, out_len = 99, consumed = 99;
        char *ib = malloc(n ? n : 1);
        char *ob = malloc(2 * n + POP3_STUFF_OUT_SLACK);
        if (ib == NULL || ob == NULL)
            abort();
        memcpy(ib, in + pos, n);
        enum pop3_stuff_result res =
            pop3_stuff_feed(&s, ib, n, ob, &out_len, &consumed);
        if (out_len > 2 * n + POP3_STUFF_OUT_SLACK || consumed > n ||
            (res == POP3_STUFF_MORE && consumed != n))
            x->violation = true;
        memcpy(x->out + x->out_len, ob, out_len);
        x->out_len += out_len;
        x->consumed += consumed;
        x->done = res == POP3_STUFF_DONE;
        pos = end;
        free(ib);
        free(ob);
    }
    if (x->done) {
        size_t o = 99, c = 99;
        char ob[1];
        if (pop3_stuff_feed(&s, "x", 1, ob, &o, &c) != POP3_STUFF_DONE ||
            o != 0 || c != 0)
            x->violation = true;
    }
    char fin[POP3_STUFF_FINISH_MAX];
    size_t f = pop3_stuff_finish(&s, fin);
    if (f > POP3_STUFF_FINISH_MAX || f < 3)
        x->violation = true;
    memcpy(x->out + x->out_len, fin, f);
    x->out_len += f;
    if (s.out_total != x->out_len)
        x->violation = true;
    /* finished: nothing more, ever */
    if (pop3_stuff_finish(&s, fin) != 0)
        x->violation = true;
    size_t o = 99, c = 99;
    char ob[3];
    if (pop3_stuff_feed(&s, "a", 1, ob, &o, &c) != POP3_STUFF_DONE || o || c)
        x->violation = true;
}

static void run_stuff_case(const struct stuff_case *c, const size_t *cuts,
                           size_t ncuts, const char *how)
{
    struct stuff_out x;
    stuff_run(c->top, c->in, c->len, cuts, ncuts, &x);
    if (x.violation || x.out_len != c->out_len ||
        memcmp(x.out, c->out, c->out_len) != 0 || x.done != c->done ||
        x.consumed != c->consumed) {
        fprintf(stderr, "stuff case top %ld \"%s\" (%s): out_len %zu/%zu "
                "done %d consumed %zu/%zu violation %d\n", c->top, c->in, how,
                x.out_len, c->out_len, x.done, x.consumed, c->consumed,
                x.violation);
        harness_cur_failed = 1;
    }
    free(x.out);
}

TEST(stuff_table_whole)
{
    for (size_t i = 0; i < sizeof stuff_cases / sizeof stuff_cases[0]; i++)
        run_stuff_case(&stuff_cases[i], NULL, 0, "whole");
}

TEST(stuff_table_split_everywhere)
{
    for (size_t i = 0; i < sizeof stuff_cases / sizeof stuff_cases[0]; i++) {
        const struct stuff_case *c = &stuff_cases[i];
        for (size_t k = 0; k <= c->len; k++)
            run_stuff_case(c, &k, 1, "split once");
        for (size_t a = 0; a <= c->len; a++)
            for (size_t b = a; b <= c->len; b++) {
                size_t cuts[2] = { a, b };
                run_stuff_case(c, cuts, 2, "split twice");
            }
    }
}

TEST(stuff_table_trickle)
{
    for (size_t i = 0; i < sizeof stuff_cases / sizeof stuff_cases[0]; i++) {
        const struct stuff_case *c = &stuff_cases[i];
        size_t cuts[64];
        CHECK(c->len < 64);
        for (size_t k = 0; k < c->len; k++)
            cuts[k] = k + 1;
        run_stuff_case(c, cuts, c->len, "one byte at a time");
    }
}

/*
 * Reference model, written the slow obvious way: cut the input into lines
 * (a line ends at CRLF, a bare LF or a bare CR), stop after the header
 * section and n body lines for TOP, write each line with a dot added when
 * it starts with one, CRLF after each, ".\r\n" at the end.
 */
static size_t ref_stuff(long top, const char *in, size_t len, char *out)
{
    size_t i = 0, o = 0;
    bool in_body = false;
    uint64_t left = top == RETR ? UINT64_MAX : (uint64_t)top;
    bool stop = false;
    while (i < len && !stop) {
        size_t start = i;
        while (i < len && in[i] != '\r' && in[i] != '\n')
            i++;
        size_t n = i - start;
        if (i < len) {
            if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
                i++;
            i++;
        }
        if (n > 0 && in[start] == '.')
            out[o++] = '.';
        memcpy(out + o, in + start, n);
        o += n;
        out[o++] = '\r';
        out[o++] = '\n';
        if (top == RETR)
            continue;
        if (!in_body) {
            if (n == 0) {
                in_body = true;
                stop = left == 0;
            }
        } else if (--left == 0) {
            stop = true;
        }
    }
    memcpy(out + o, ".\r\n", 3);
    return o + 3;
}

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

TEST(stuff_random_against_reference)
{
    static const char alphabet[] = { '\r', '\n', '.', 'a', ' ', '\r', '\n', '.' };
    uint32_t seed = 0x9e3779b9u;
    char in[200], ref[500];
    for (int iter = 0; iter < 3000; iter++) {
        size_t len = rng_next(&seed) % sizeof in;
        for (size_t i = 0; i < len; i++)
            in[i] = alphabet[rng_next(&seed) % sizeof alphabet];
        long top = (iter % 3 == 0) ? RETR : (long)(rng_next(&seed) % 6);
        size_t rl = ref_stuff(top, in, len, ref);
        size_t cuts[8];
        size_t ncuts = rng_next(&seed) % 8;
        for (size_t k = 0; k < ncuts; k++)
            cuts[k] = len ? rng_next(&seed) % (len + 1) : 0;
        for (size_t a = 0; a < ncuts; a++)          /* sort */
            for (size_t b = a + 1; b < ncuts; b++)
                if (cuts[b] < cuts[a]) {
                    size_t t = cuts[a];
                    cuts[a] = cuts[b];
                    cuts[b] = t;
                }
        struct stuff_out whole, split;
        stuff_run(top, in, len, NULL, 0, &whole);
        stuff_run(top, in, len, cuts, ncuts, &split);
        CHECK(!whole.violation && !split.violation);
        CHECK_EQ_INT(whole.out_len, rl);
        CHECK(whole.out_len == rl && memcmp(whole.out, ref, rl) == 0);
        CHECK(split.out_len == rl && memcmp(split.out, ref, rl) == 0);
        CHECK_EQ_INT(whole.done, split.done);
        CHECK_EQ_INT(whole.consumed, split.consumed);
        if (top == RETR)
            CHECK(!whole.done && whole.consumed == len);
        free(whole.out);
        free(split.out);
        if (harness_cur_failed) {
            fprintf(stderr, "iteration %d top %ld len %zu\n", iter, top, len);
            break;
        }
    }
}

/*
 * The SMTP DATA reader reads exactly the format of a multi-line reply
 * body. Reading the output back gives the message with CRLF line ends and
 * a final CRLF, never a bare CR or LF, and ends exactly at ".\r\n".
 */
TEST(stuff_read_back_by_smtp_data)
{
    static const char alphabet[] = { '\r', '\n', '.', 'x', '\r', '\n', '.', '\0' };
    uint32_t seed = 12345;
    char in[300], ref[700];
    for (int iter = 0; iter < 2000; iter++) {
        size_t len = rng_next(&seed) % sizeof in;
        for (size_t i = 0; i < len; i++)
            in[i] = alphabet[rng_next(&seed) % sizeof alphabet];
        struct stuff_out x;
        stuff_run(RETR, in, len, NULL, 0, &x);

        /* expected: the lines of the reference without stuffing */
        size_t rl = ref_stuff(RETR, in, len, ref);
        char *want = malloc(rl), *got = malloc(x.out_len + SMTP_DATA_OUT_SLACK);
        size_t wl = 0;
        bool bol = true;
        for (size_t i = 0; i < rl - 3; i++) {      /* without ".\r\n" */
            if (bol && ref[i] == '.') {
                bol = false;
                continue;
            }
            want[wl++] = ref[i];
            bol = ref[i] == '\n';
        }

        struct smtp_data_reader r;
        size_t gl, consumed;
        smtp_data_init(&r, 1u << 20);
        enum smtp_data_result res =
            smtp_data_feed(&r, x.out, x.out_len, got, &gl, &consumed);
        CHECK_EQ_INT(res, SMTP_DATA_END);
        CHECK_EQ_INT(consumed, x.out_len);
        CHECK(!r.bare_cr && !r.bare_lf);
        CHECK(gl == wl && memcmp(got, want, wl) == 0);
        /* CRLF-only input comes back unchanged, plus a final CRLF */
        bool crlf_only = true;
        for (size_t i = 0; i < len; i++) {
            if (in[i] == '\r' && !(i + 1 < len && in[i + 1] == '\n'))
                crlf_only = false;
            if (in[i] == '\n' && !(i > 0 && in[i - 1] == '\r'))
                crlf_only = false;
        }
        if (crlf_only) {
            bool ends = len >= 2 && in[len - 2] == '\r' && in[len - 1] == '\n';
            size_t extra = (len == 0 || ends) ? 0 : 2;
            CHECK(gl == len + extra && memcmp(got, in, len) == 0);
        }
        free(want);
        free(got);
        free(x.out);
        if (harness_cur_failed) {
            fprintf(stderr, "iteration %d len %zu\n", iter, len);
            break;
        }
    }
}

/* Worst cases for size and time: all dots, all bare LFs, alternating
 * CR and dots. Output stays within 2 * len + slack and the run is linear. */
TEST(stuff_worst_cases)
{
    size_t n = 1u << 20;
    char *in = malloc(n);
    char *out = malloc(2 * n + POP3_STUFF_OUT_SLACK);
    static const char *const fills[] = { ".\n", "\n", "\r.", ".", "\r" };
    for (size_t f = 0; f < sizeof fills / sizeof fills[0]; f++) {
        size_t fl = strlen(fills[f]);
        for (size_t i = 0; i < n; i++)
            in[i] = fills[f][i % fl];
        struct pop3_stuff s;
        size_t ol, c;
        pop3_stuff_init(&s);
        CHECK_EQ_INT(pop3_stuff_feed(&s, in, n, out, &ol, &c), POP3_STUFF_MORE);
        CHECK_EQ_INT(c, n);
        CHECK(ol <= 2 * n + POP3_STUFF_OUT_SLACK);
        /* TOP with a large n over the same input stops after n body lines */
        pop3_stuff_init_top(&s, 1000);
        enum pop3_stuff_result res = pop3_stuff_feed(&s, in, n, out, &ol, &c);
        if (fills[f][0] == '.') {
            /* header lines only ("." or ".."), never the empty line */
            CHECK_EQ_INT(res, POP3_STUFF_MORE);
        } else {
            CHECK_EQ_INT(res, POP3_STUFF_DONE);
            CHECK(c < n);
        }
    }
    CHECK_EQ_INT(pop3_stuff_in_max(0), 0);
    CHECK_EQ_INT(pop3_stuff_in_max(2), 0);
    CHECK_EQ_INT(pop3_stuff_in_max(3), 1);
    CHECK_EQ_INT(pop3_stuff_in_max(4), 1);
    CHECK_EQ_INT(pop3_stuff_in_max(8192), 4095);
    CHECK_EQ_INT(pop3_stuff_in_max(SIZE_MAX), (SIZE_MAX - 1) / 2);
    free(in);
    free(out);
}

int main(void)
{
    RUN(line_reader_whole);
    RUN(line_reader_split_everywhere);
    RUN(line_reader_trickle);
    RUN(line_reader_rfc2449_limit);
    RUN(line_reader_auth_limit_switch);
    RUN(line_reader_contract_edges);
    RUN(cmd_table);
    RUN(cmd_reasons);
    RUN(verb_names);
    RUN(cmd_hostile);
    RUN(stuff_table_whole);
    RUN(stuff_table_split_everywhere);
    RUN(stuff_table_trickle);
    RUN(stuff_random_against_reference);
    RUN(stuff_read_back_by_smtp_data);
    RUN(stuff_worst_cases);
    return harness_done("test_pop3");
}
