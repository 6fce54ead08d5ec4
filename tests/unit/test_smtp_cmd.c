/*
 * Tests for proto/smtp_cmd: line reader (whole, split at every position,
 * byte by byte), verb split, MAIL/RCPT paths and parameters, xtext,
 * address formatting, HELO validation. Tables first, then the loops.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "proto/smtp_cmd.h"

/* ------------------------------------------------------------------ */
/* line reader                                                         */

#define BUFCAP 8192

/* The caller the contract describes: keeps unconsumed bytes and appends.
 * Records each result as text: "OK:<line>|", "LONG|", "BAD|". */
struct sim {
    struct smtp_line_reader lr;
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
    }
}

static void sim_init(struct sim *s, size_t max)
{
    memset(s, 0, sizeof *s);
    smtp_line_init(&s->lr, max);
}

static void sim_feed(struct sim *s, const char *in, size_t n)
{
    if (s->len + n > sizeof s->buf) {
        s->violations++;
        return;
    }
    memcpy(s->buf + s->len, in, n);
    s->len += n;
    for (;;) {
        const char *line;
        size_t line_len, consumed;
        enum smtp_line_result r =
            smtp_line_next(&s->lr, s->buf, s->len, &line, &line_len, &consumed);
        if (consumed > s->len)
            s->violations++;
        switch (r) {
        case SMTP_LINE_OK:
            if (line != s->buf || line_len >= s->lr.max ||
                memchr(line, '\r', line_len) || memchr(line, '\0', line_len))
                s->violations++;
            ev_add(s, "OK:", 3);
            ev_add(s, line, line_len);
            ev_add(s, "|", 1);
            break;
        case SMTP_LINE_TOO_LONG:
            ev_add(s, "LONG|", 5);
            break;
        case SMTP_LINE_BAD:
            ev_add(s, "BAD|", 4);
            break;
        case SMTP_LINE_NEED_MORE:
            if (consumed == 0 && s->len >= s->lr.max)
                s->violations++;
            break;
        }
        if (r != SMTP_LINE_NEED_MORE && consumed == 0)
            s->violations++;     /* would loop forever */
        memmove(s->buf, s->buf + consumed, s->len - consumed);
        s->len -= consumed;
        if (r == SMTP_LINE_NEED_MORE)
            break;
    }
}

struct line_case {
    const char *in;
    size_t len;          /* 0: strlen(in) */
    size_t max;
    const char *events;
    size_t left;         /* bytes still buffered at the end */
};

#define LC(s, max, ev, left) { s, sizeof(s) - 1, max, ev, left }

static const struct line_case line_cases[] = {
    LC("HELO a\r\n", 512, "OK:HELO a|", 0),
    LC("\r\n", 512, "OK:|", 0),
    LC("\n", 512, "OK:|", 0),
    LC("A\nB\r\n", 512, "OK:A|OK:B|", 0),
    LC("A\rB\r\nNOOP\r\n", 512, "BAD|OK:NOOP|", 0),
    LC("A\r\r\n", 512, "BAD|", 0),
    LC("\r\r\n", 512, "BAD|", 0),
    LC("A\0B\r\nQUIT\r\n", 512, "BAD|OK:QUIT|", 0),
    LC("\0\n", 512, "BAD|", 0),
    LC("A\rB", 512, "", 3),
    LC("NOOP\r\nQU", 512, "OK:NOOP|", 2),
    LC("NOOP\r", 512, "", 5),
    LC("a\n\nb\r\n\r\n", 512, "OK:a|OK:|OK:b|OK:|", 0),
    /* exactly max including CRLF / LF, and one more */
    LC("123456\r\n", 8, "OK:123456|", 0),
    LC("1234567\n", 8, "OK:1234567|", 0),
    LC("1234567\r\n", 8, "LONG|", 0),
    LC("12345678\n", 8, "LONG|", 0),
    LC("12345678\nOK\r\n", 8, "LONG|OK:OK|", 0),
    LC("0123456789abcdefXYZ\r\nNOOP\r\n", 16, "LONG|OK:NOOP|", 0),
    /* an over-long line holding CR and NUL is reported once, as LONG */
    LC("0123\r456\0" "789abcdefXYZ\r\nNOOP\r\n", 16, "LONG|OK:NOOP|", 0),
    LC("0123456789abcdefghijklmnopqrstuvwxyz0123456789\nA\nB\n", 16,
       "LONG|OK:A|OK:B|", 0),
    LC("0123456789abcdefghij\n0123456789abcdefghij\nX\r\n", 16,
       "LONG|LONG|OK:X|", 0),
    LC("0123456789abcdefghij", 16, "", 0),     /* discarding, nothing kept */
    LC("0123456789abcdefghij\r", 16, "", 0),
    LC("A\rB\n0123456789abcdefghij\nA\0\nok\n", 16, "BAD|LONG|BAD|OK:ok|", 0),
};

static void run_line_case(const struct line_case *c, const size_t *cuts,
                          size_t ncuts, const char *how)
{
    struct sim *s = malloc(sizeof *s);
    size_t pos = 0;
    sim_init(s, c->max);
    for (size_t i = 0; i < ncuts; i++) {
        sim_feed(s, c->in + pos, cuts[i] - pos);
        pos = cuts[i];
    }
    sim_feed(s, c->in + pos, c->len - pos);
    if (strcmp(s->events, c->events) != 0 || s->len != c->left ||
        s->violations != 0) {
        fprintf(stderr, "line case %zu bytes (%s): got \"%s\" left %zu "
                "violations %d, want \"%s\" left %zu\n", c->len, how,
                s->events, s->len, s->violations, c->events, c->left);
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

TEST(line_reader_real_limit)
{
    /* 512 octets including CRLF (RFC 5321 4.5.3.1.4) is fine; 513 is not */
    char in[1200];
    struct sim *s = malloc(sizeof *s);
    memset(in, 'x', sizeof in);
    memcpy(in + 510, "\r\n", 2);
    memcpy(in + 512 + 511, "\r\nQUIT\r\n", 8);
    sim_init(s, 512);
    for (size_t i = 0; i < 512 + 511 + 8; i++)
        sim_feed(s, in + i, 1);
    CHECK(strncmp(s->events, "OK:xxx", 6) == 0);
    CHECK(strstr(s->events, "|LONG|OK:QUIT|") != NULL);
    CHECK_EQ_INT(strlen(s->events), 3 + 510 + 1 + 5 + 8);
    CHECK_EQ_INT(s->violations, 0);
    CHECK_EQ_INT(s->len, 0);
    free(s);
}

TEST(line_reader_contract_edges)
{
    struct smtp_line_reader lr;
    const char *line = "x";
    size_t ll = 9, consumed = 9;
    smtp_line_init(&lr, 512);
    CHECK_EQ_INT(smtp_line_next(&lr, NULL, 0, &line, &ll, &consumed),
                 SMTP_LINE_NEED_MORE);
    CHECK(line == NULL);
    CHECK_EQ_INT(ll, 0);
    CHECK_EQ_INT(consumed, 0);
    /* max 0: every line is too long, and nothing crashes */
    smtp_line_init(&lr, 0);
    CHECK_EQ_INT(smtp_line_next(&lr, "ab\n", 3, &line, &ll, &consumed),
                 SMTP_LINE_TOO_LONG);
    CHECK_EQ_INT(consumed, 3);
    CHECK(!lr.discarding);
}

/* ------------------------------------------------------------------ */
/* verbs                                                               */

struct cmd_case {
    const char *line;
    enum smtp_verb verb;
    size_t verb_len;
    const char *arg;     /* NULL: none */
};

static const struct cmd_case cmd_cases[] = {
    { "MAIL FROM:<a@b>", SMTP_CMD_MAIL, 4, "FROM:<a@b>" },
    { "mail from:<>", SMTP_CMD_MAIL, 4, "from:<>" },
    { "MaIl FROM:<>", SMTP_CMD_MAIL, 4, "FROM:<>" },
    { "RCPT TO:<a@b>  \t ", SMTP_CMD_RCPT, 4, "TO:<a@b>" },
    { "DATA", SMTP_CMD_DATA, 4, NULL },
    { "DATA ", SMTP_CMD_DATA, 4, NULL },
    { "data\t", SMTP_CMD_DATA, 4, NULL },
    { "DATAX", SMTP_CMD_UNKNOWN, 5, NULL },
    { "DAT", SMTP_CMD_UNKNOWN, 3, NULL },
    { "DATA\tX", SMTP_CMD_UNKNOWN, 6, NULL },
    { "\tDATA", SMTP_CMD_UNKNOWN, 5, NULL },
    { " DATA", SMTP_CMD_UNKNOWN, 0, "DATA" },
    { "", SMTP_CMD_UNKNOWN, 0, NULL },
    { "   ", SMTP_CMD_UNKNOWN, 0, NULL },
    { "QUIT now", SMTP_CMD_QUIT, 4, "now" },
    { "EHLO  x.y", SMTP_CMD_EHLO, 4, " x.y" },
    { "HELO x", SMTP_CMD_HELO, 4, "x" },
    { "BDAT 100 LAST", SMTP_CMD_BDAT, 4, "100 LAST" },
    { "RSET", SMTP_CMD_RSET, 4, NULL },
    { "NOOP hello", SMTP_CMD_NOOP, 4, "hello" },
    { "VRFY user", SMTP_CMD_VRFY, 4, "user" },
    { "EXPN list", SMTP_CMD_EXPN, 4, "list" },
    { "HELP", SMTP_CMD_HELP, 4, NULL },
    { "starttls", SMTP_CMD_STARTTLS, 8, NULL },
    { "STARTTLSX", SMTP_CMD_UNKNOWN, 9, NULL },
    { "AUTH PLAIN", SMTP_CMD_AUTH, 4, "PLAIN" },
    { "TURN", SMTP_CMD_TURN, 4, NULL },
    { "SEND FROM:<a@b>", SMTP_CMD_SEND, 4, "FROM:<a@b>" },
    { "SOML", SMTP_CMD_SOML, 4, NULL },
    { "SAML", SMTP_CMD_SAML, 4, NULL },
    { "ETRN example.com", SMTP_CMD_ETRN, 4, "example.com" },
    { "ATRN", SMTP_CMD_ATRN, 4, NULL },
    { "M\xc3\xa4IL x", SMTP_CMD_UNKNOWN, 5, "x" },
};

TEST(cmd_parse_table)
{
    for (size_t i = 0; i < sizeof cmd_cases / sizeof cmd_cases[0]; i++) {
        const struct cmd_case *c = &cmd_cases[i];
        struct smtp_cmd cmd;
        smtp_cmd_parse(c->line, strlen(c->line), &cmd);
        int bad = cmd.verb != c->verb || cmd.verb_text != c->line ||
                  cmd.verb_len != c->verb_len;
        if (c->arg == NULL)
            bad |= cmd.arg != NULL || cmd.arg_len != 0;
        else
            bad |= cmd.arg == NULL || cmd.arg_len != strlen(c->arg) ||
                   memcmp(cmd.arg, c->arg, cmd.arg_len) != 0;
        if (bad) {
            fprintf(stderr, "cmd case \"%s\": verb %d len %zu arg %.*s\n",
                    c->line, cmd.verb, cmd.verb_len,
                    cmd.arg ? (int)cmd.arg_len : 6,
                    cmd.arg ? cmd.arg : "(null)");
            harness_cur_failed = 1;
        }
    }
}

TEST(verb_names)
{
    CHECK_EQ_STR(smtp_verb_name(SMTP_CMD_UNKNOWN), "");
    CHECK_EQ_STR(smtp_verb_name(SMTP_CMD_MAIL), "MAIL");
    CHECK_EQ_STR(smtp_verb_name(SMTP_CMD_STARTTLS), "STARTTLS");
    CHECK_EQ_STR(smtp_verb_name(SMTP_CMD__COUNT), "");
    CHECK_EQ_STR(smtp_verb_name((enum smtp_verb)-1), "");
    /* every verb's name parses back to itself */
    for (int v = 1; v < SMTP_CMD__COUNT; v++) {
        const char *n = smtp_verb_name((enum smtp_verb)v);
        struct smtp_cmd cmd;
        CHECK(n[0] != '\0');
        smtp_cmd_parse(n, strlen(n), &cmd);
        CHECK_EQ_INT(cmd.verb, v);
    }
}

/* ------------------------------------------------------------------ */
/* MAIL / RCPT                                                         */

enum { O_PLAIN, O_ESMTP, O_ALL, O_ALL_NOBIN, O_UTF8 };

static struct smtp_parse_opts opts_for(int which)
{
    struct smtp_parse_opts o = { 0 };
    switch (which) {
    case O_PLAIN:
        break;
    case O_ESMTP:
        o.esmtp = true;
        break;
    case O_ALL:
        o.esmtp = o.smtputf8 = o.dsn = o.binarymime = true;
        o.max_size = 1000000;
        break;
    case O_ALL_NOBIN:
        o.esmtp = o.smtputf8 = o.dsn = true;
        break;
    case O_UTF8:
        o.esmtp = o.smtputf8 = true;
        break;
    }
    return o;
}

#define F_NULL 1u
#define F_QUOTED 2u
#define F_ROUTE 4u
#define F_LIT 8u
#define F_UTF8 16u
#define F_PM 32u

struct addr_case {
    const char *arg;
    int opts;
    int code;            /* 0: accepted */
    const char *enh;
    const char *local;   /* when accepted */
    const char *domain;
    unsigned flags;
};

static const struct addr_case mail_cases[] = {
    /* forms of the command */
    { "FROM:<a@b.c>", O_PLAIN, 0, NULL, "a", "b.c", 0 },
    { "from:<a@b.c>", O_PLAIN, 0, NULL, "a", "b.c", 0 },
    { "From:<User.Name+tag@Example.COM>", O_PLAIN, 0, NULL, "User.Name+tag",
      "Example.COM", 0 },
    { "FROM: <a@b.c>", O_PLAIN, 0, NULL, "a", "b.c", 0 },
    { "FROM:<a@b.c>   ", O_PLAIN, 0, NULL, "a", "b.c", 0 },
    { " FROM:<a@b.c>", O_PLAIN, 0, NULL, "a", "b.c", 0 },
    { "FROM:  <a@b.c>", O_PLAIN, 501, "5.5.2", NULL, NULL, 0 },
    { "FROM:a@b.c", O_PLAIN, 501, "5.5.2", NULL, NULL, 0 },
    { "FROM<a@b.c>", O_PLAIN, 501, "5.5.2", NULL, NULL, 0 },
    { "FROM :<a@b.c>", O_PLAIN, 501, "5.5.2", NULL, NULL, 0 },
    { "TO:<a@b.c>", O_PLAIN, 501, "5.5.2", NULL, NULL, 0 },
    { "FROM:<a@b.c", O_PLAIN, 501, "5.5.2", NULL, NULL, 0 },
    { "FROM:<a@b.c>x", O_PLAIN, 501, "5.5.2", NULL, NULL, 0 },
    { "FROM:<a@b.c><d@e>", O_PLAIN, 501, "5.5.2", NULL, NULL, 0 },
    { "FROM:", O_PLAIN, 501, "5.5.2", NULL, NULL, 0 },
    { "", O_PLAIN, 501, "5.5.2", NULL, NULL, 0 },
    { "FROM:<>", O_PLAIN, 0, NULL, "", "", F_NULL },
    { "FROM:<> ", O_PLAIN, 0, NULL, "", "", F_NULL },
    { "FROM:< >", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    /* local part: dot-string */
    { "FROM:<a.b.c@d>", O_PLAIN, 0, NULL, "a.b.c", "d", 0 },
    { "FROM:<!#$%&'*+-/=?^_`{|}~@d>", O_PLAIN, 0, NULL, "!#$%&'*+-/=?^_`{|}~",
      "d", 0 },
    { "FROM:<.a@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a.@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a..b@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a b@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a(b)@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a,b@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a\\b@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a\tb@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a\x7f@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<Postmaster>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<postmaster@d>", O_PLAIN, 0, NULL, "postmaster", "d", 0 },
    /* local part: quoted string */
    { "FROM:<\"a b\"@d>", O_PLAIN, 0, NULL, "a b", "d", F_QUOTED },
    { "FROM:<\"abc\"@d>", O_PLAIN, 0, NULL, "abc", "d", F_QUOTED },
    { "FROM:<\"a\\\"b\"@d>", O_PLAIN, 0, NULL, "a\"b", "d", F_QUOTED },
    { "FROM:<\"a\\\\b\"@d>", O_PLAIN, 0, NULL, "a\\b", "d", F_QUOTED },
    { "FROM:<\"\\a\\ \"@d>", O_PLAIN, 0, NULL, "a ", "d", F_QUOTED },
    { "FROM:<\"a>b\"@d>", O_PLAIN, 0, NULL, "a>b", "d", F_QUOTED },
    { "FROM:<\"a@b\"@d>", O_PLAIN, 0, NULL, "a@b", "d", F_QUOTED },
    { "FROM:<\"\"@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<\"a\tb\"@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<\"a\\\tb\"@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<\"a\x01\"@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<\"a\x7f\"@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<\"a\"b@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a\"b\"@d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<\"a\">", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<\"abc@d>", O_PLAIN, 501, "5.5.2", NULL, NULL, 0 },
    { "FROM:<\"a\\\">", O_PLAIN, 501, "5.5.2", NULL, NULL, 0 },
    /* domain */
    { "FROM:<a@localhost>", O_PLAIN, 0, NULL, "a", "localhost", 0 },
    { "FROM:<a@x-1.example>", O_PLAIN, 0, NULL, "a", "x-1.example", 0 },
    { "FROM:<a@1.2.3.4>", O_PLAIN, 0, NULL, "a", "1.2.3.4", 0 },
    { "FROM:<a@b.c.>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@.b.c>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@b..c>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@-b.c>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@b-.c>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@b_c.d>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@b c>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@b@c>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@b:c>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    /* address literals */
    { "FROM:<a@[1.2.3.4]>", O_PLAIN, 0, NULL, "a", "[1.2.3.4]", F_LIT },
    { "FROM:<a@[255.255.255.255]>", O_PLAIN, 0, NULL, "a",
      "[255.255.255.255]", F_LIT },
    { "FROM:<a@[0.0.0.0]>", O_PLAIN, 0, NULL, "a", "[0.0.0.0]", F_LIT },
    { "FROM:<a@[256.1.1.1]>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@[1.2.3]>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@[1.2.3.4.5]>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@[1.2.3.0004]>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@[1..3.4]>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@[1.2.3.4 ]>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@[]>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@[1.2.3.4>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@[1.2.3.4]x>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@[IPv6:::1]>", O_PLAIN, 0, NULL, "a", "[IPv6:::1]", F_LIT },
    { "FROM:<a@[ipv6:2001:db8::1]>", O_PLAIN, 0, NULL, "a",
      "[ipv6:2001:db8::1]", F_LIT },
    { "FROM:<a@[IPv6:::ffff:1.2.3.4]>", O_PLAIN, 0, NULL, "a",
      "[IPv6:::ffff:1.2.3.4]", F_LIT },
    { "FROM:<a@[IPv6:1:2:3:4:5:6:7:8]>", O_PLAIN, 0, NULL, "a",
      "[IPv6:1:2:3:4:5:6:7:8]", F_LIT },
    { "FROM:<a@[IPv6:1:2:3:4:5:6:7:8:9]>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@[IPv6:1.2.3.4]>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@[IPv6:12345::]>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@[IPv6:::g]>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@[IPv6:]>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@[x400:foo]>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@[tag:1.2.3.4]>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    /* source routes: parsed, route dropped */
    { "FROM:<@a.b,@c.d:user@dom>", O_PLAIN, 0, NULL, "user", "dom", F_ROUTE },
    { "FROM:<@a.b:user@dom>", O_PLAIN, 0, NULL, "user", "dom", F_ROUTE },
    { "FROM:<@a.b,c.d:user@dom>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<@:user@dom>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<@a..b:user@dom>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<@a.b,:user@dom>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<@a.b:>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<@a.b user@dom>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<@[1.2.3.4]:user@dom>", O_PLAIN, 501, "5.1.7", NULL, NULL, 0 },
    /* UTF-8 (RFC 6531): needs the offer and, on MAIL, the parameter */
    { "FROM:<j\303\266e@ex\xc3\xa4mple.com> SMTPUTF8", O_UTF8, 0, NULL,
      "j\303\266e", "ex\xc3\xa4mple.com", F_UTF8 },
    { "FROM:<\"j\xc3\xb6 e\"@d> SMTPUTF8", O_UTF8, 0, NULL, "j\xc3\xb6 e", "d",
      F_UTF8 | F_QUOTED },
    { "FROM:<\xe2\x82\xac\xf0\x9f\x98\x80@d> SMTPUTF8", O_UTF8, 0, NULL,
      "\xe2\x82\xac\xf0\x9f\x98\x80", "d", F_UTF8 },
    { "FROM:<a@b> SMTPUTF8", O_UTF8, 0, NULL, "a", "b", 0 },
    { "FROM:<j\303\266e@d>", O_UTF8, 553, "5.6.7", NULL, NULL, 0 },
    { "FROM:<j\303\266e@d>", O_ESMTP, 553, "5.6.7", NULL, NULL, 0 },
    { "FROM:<a@ex\xc3\xa4mple.com>", O_PLAIN, 553, "5.6.7", NULL, NULL, 0 },
    { "FROM:<\"j\xc3\xb6\"@d>", O_PLAIN, 553, "5.6.7", NULL, NULL, 0 },
    { "FROM:<a\xc0\xaf@d> SMTPUTF8", O_UTF8, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a\xe0\x80\xaf@d> SMTPUTF8", O_UTF8, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a\xed\xa0\x80@d> SMTPUTF8", O_UTF8, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a\xf4\x90\x80\x80@d> SMTPUTF8", O_UTF8, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a\xf5\x80\x80\x80@d> SMTPUTF8", O_UTF8, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a\xc3@d> SMTPUTF8", O_UTF8, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a\x80@d> SMTPUTF8", O_UTF8, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a\xc2\x85@d> SMTPUTF8", O_UTF8, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<a@d\xc3> SMTPUTF8", O_UTF8, 501, "5.1.7", NULL, NULL, 0 },
    { "FROM:<\"a\\\xc3\xb6\"@d> SMTPUTF8", O_UTF8, 501, "5.1.7", NULL, NULL, 0 },
};

static const struct addr_case rcpt_cases[] = {
    { "TO:<a@b.c>", O_PLAIN, 0, NULL, "a", "b.c", 0 },
    { "to: <a@b.c>", O_PLAIN, 0, NULL, "a", "b.c", 0 },
    { "TO:<>", O_PLAIN, 501, "5.1.3", NULL, NULL, 0 },
    { "TO:a@b.c", O_PLAIN, 501, "5.5.2", NULL, NULL, 0 },
    { "FROM:<a@b.c>", O_PLAIN, 501, "5.5.2", NULL, NULL, 0 },
    { "TO:<a@b.c>junk", O_PLAIN, 501, "5.5.2", NULL, NULL, 0 },
    { "TO:<Postmaster>", O_PLAIN, 0, NULL, "postmaster", "", F_PM },
    { "TO:<POSTMASTER>", O_PLAIN, 0, NULL, "postmaster", "", F_PM },
    { "TO:<postmaster>", O_PLAIN, 0, NULL, "postmaster", "", F_PM },
    { "TO:<postmaster@example.com>", O_PLAIN, 0, NULL, "postmaster",
      "example.com", 0 },
    { "TO:<postmasterx>", O_PLAIN, 501, "5.1.3", NULL, NULL, 0 },
    { "TO:<\"Postmaster\">", O_PLAIN, 501, "5.1.3", NULL, NULL, 0 },
    { "TO:<@a:Postmaster>", O_PLAIN, 501, "5.1.3", NULL, NULL, 0 },
    { "TO:<a..b@c>", O_PLAIN, 501, "5.1.3", NULL, NULL, 0 },
    /* security.md 5: every relay form parses faithfully */
    { "TO:<user%other@local>", O_PLAIN, 0, NULL, "user%other", "local", 0 },
    { "TO:<@local:user@other>", O_PLAIN, 0, NULL, "user", "other", F_ROUTE },
    { "TO:<@local,@x.y:user@other>", O_PLAIN, 0, NULL, "user", "other", F_ROUTE },
    { "TO:<user@other@local>", O_PLAIN, 501, "5.1.3", NULL, NULL, 0 },
    { "TO:<\"user@other\"@local>", O_PLAIN, 0, NULL, "user@other", "local",
      F_QUOTED },
    { "TO:<\"user%other\"@local>", O_PLAIN, 0, NULL, "user%other", "local",
      F_QUOTED },
    { "TO:<other!user@local>", O_PLAIN, 0, NULL, "other!user", "local", 0 },
    { "TO:<user@[192.0.2.1]>", O_PLAIN, 0, NULL, "user", "[192.0.2.1]", F_LIT },
    { "TO:<user@other.example.>", O_PLAIN, 501, "5.1.3", NULL, NULL, 0 },
    /* UTF-8: opts->smtputf8 means "MAIL had SMTPUTF8" here */
    { "TO:<\xce\xb4\xce\xbf\xce\xba\xce\xb9\xce\xbc\xce\xae@"
      "\xcf\x80\xce\xb1\xcf\x81\xce\xac.\xce\xb4\xce\xbf>", O_UTF8, 0, NULL,
      "\xce\xb4\xce\xbf\xce\xba\xce\xb9\xce\xbc\xce\xae",
      "\xcf\x80\xce\xb1\xcf\x81\xce\xac.\xce\xb4\xce\xbf", F_UTF8 },
    { "TO:<\xce\xb4@d>", O_ESMTP, 553, "5.6.7", NULL, NULL, 0 },
    { "TO:<a@\xce\xb4>", O_PLAIN, 553, "5.6.7", NULL, NULL, 0 },
    { "TO:<a@\xed\xbf\xbf>", O_UTF8, 501, "5.1.3", NULL, NULL, 0 },
};

static void check_addr(const struct addr_case *c, const struct smtp_status *st,
                       const struct smtp_addr *a, const char *what)
{
    int bad = 0;
    if (c->code == 0) {
        unsigned f = (a->null ? F_NULL : 0) | (a->quoted ? F_QUOTED : 0) |
                     (a->source_route ? F_ROUTE : 0) |
                     (a->domain_literal ? F_LIT : 0) | (a->utf8 ? F_UTF8 : 0) |
                     (a->postmaster ? F_PM : 0);
        bad = st != NULL || strcmp(a->local, c->local) != 0 ||
              strcmp(a->domain, c->domain) != 0 || f != c->flags;
    } else {
        bad = st == NULL || st->code != c->code || strcmp(st->enh, c->enh) != 0;
    }
    if (st != NULL && (st->text == NULL || strpbrk(st->text, "\r\n") != NULL))
        bad = 1;
    if (bad) {
        fprintf(stderr, "%s case \"%s\": got %d %s (%s) local \"%s\" domain "
                "\"%s\"\n", what, c->arg, st ? st->code : 0,
                st ? st->enh : "-", st ? st->text : "-", a->local, a->domain);
        harness_cur_failed = 1;
    }
}

TEST(mail_addresses)
{
    for (size_t i = 0; i < sizeof mail_cases / sizeof mail_cases[0]; i++) {
        const struct addr_case *c = &mail_cases[i];
        struct smtp_parse_opts o = opts_for(c->opts);
        struct smtp_mail_args r;
        const struct smtp_status *st = smtp_parse_mail(c->arg, strlen(c->arg), &o, &r);
        check_addr(c, st, &r.from, "MAIL");
    }
}

TEST(rcpt_addresses)
{
    for (size_t i = 0; i < sizeof rcpt_cases / sizeof rcpt_cases[0]; i++) {
        const struct addr_case *c = &rcpt_cases[i];
        struct smtp_parse_opts o = opts_for(c->opts);
        struct smtp_rcpt_args r;
        const struct smtp_status *st = smtp_parse_rcpt(c->arg, strlen(c->arg), &o, &r);
        check_addr(c, st, &r.to, "RCPT");
    }
}

TEST(addresses_with_nul)
{
    static const char mail[] = "FROM:<a\0b@d>";
    static const char qmail[] = "FROM:<\"a\0b\"@d>";
    static const char dom[] = "TO:<a@d\0.e>";
    static const char tail[] = "TO:<a@d>\0";
    struct smtp_parse_opts o = opts_for(O_ALL);
    struct smtp_mail_args m;
    struct smtp_rcpt_args r;
    const struct smtp_status *st;
    st = smtp_parse_mail(mail, sizeof mail - 1, &o, &m);
    CHECK(st != NULL && st->code == 501);
    st = smtp_parse_mail(qmail, sizeof qmail - 1, &o, &m);
    CHECK(st != NULL && st->code == 501);
    st = smtp_parse_rcpt(dom, sizeof dom - 1, &o, &r);
    CHECK(st != NULL && st->code == 501);
    st = smtp_parse_rcpt(tail, sizeof tail - 1, &o, &r);
    CHECK(st != NULL && st->code == 501);
    /* NULL argument (no argument at all) is a syntax error, not a crash */
    st = smtp_parse_rcpt(NULL, 0, &o, &r);
    CHECK(st != NULL && st->code == 501 && strcmp(st->enh, "5.5.2") == 0);
}

/* Builds "<prefix:<local>@<domain>>" with a local of llen 'l' and a domain
 * of dlen octets in labels of 63. */
static size_t build_path(char *out, const char *prefix, size_t llen, size_t dlen,
                         bool quoted)
{
    size_t n = 0;
    n += (size_t)sprintf(out, "%s<", prefix);
    if (quoted) {
        out[n++] = '"';
        memset(out + n, 'q', llen - 2);
        n += llen - 2;
        out[n++] = '"';
    } else {
        memset(out + n, 'l', llen);
        n += llen;
    }
    out[n++] = '@';
    for (size_t i = 0; i < dlen; i++)
        out[n + i] = (i % 64 == 63) ? '.' : 'd';
    if (dlen > 0 && out[n + dlen - 1] == '.')
        out[n + dlen - 1] = 'e';
    n += dlen;
    out[n++] = '>';
    out[n] = '\0';
    return n;
}

TEST(address_lengths)
{
    char buf[1024];
    struct smtp_parse_opts o = opts_for(O_ESMTP);
    struct smtp_mail_args m;
    struct smtp_rcpt_args r;
    const struct smtp_status *st;
    size_t n;

    n = build_path(buf, "FROM:", 64, 10, false);
    CHECK(smtp_parse_mail(buf, n, &o, &m) == NULL);
    CHECK_EQ_INT(strlen(m.from.local), 64);
    n = build_path(buf, "FROM:", 65, 10, false);
    st = smtp_parse_mail(buf, n, &o, &m);
    CHECK(st != NULL && st->code == 553 && strcmp(st->enh, "5.1.7") == 0);
    n = build_path(buf, "TO:", 65, 10, false);
    st = smtp_parse_rcpt(buf, n, &o, &r);
    CHECK(st != NULL && st->code == 553 && strcmp(st->enh, "5.1.3") == 0);
    /* quoted: 64 on the wire including the quotes */
    n = build_path(buf, "TO:", 64, 10, true);
    CHECK(smtp_parse_rcpt(buf, n, &o, &r) == NULL);
    CHECK_EQ_INT(strlen(r.to.local), 62);
    n = build_path(buf, "TO:", 65, 10, true);
    st = smtp_parse_rcpt(buf, n, &o, &r);
    CHECK(st != NULL && st->code == 553);
    /* path: 256 octets with the brackets */
    n = build_path(buf, "TO:", 64, 256 - 2 - 64 - 1, false);
    CHECK_EQ_INT(n, 3 + 256);
    st = smtp_parse_rcpt(buf, n, &o, &r);
    CHECK(st == NULL);
    CHECK_EQ_INT(strlen(r.to.domain), 189);
    n = build_path(buf, "TO:", 64, 256 - 2 - 64, false);
    st = smtp_parse_rcpt(buf, n, &o, &r);
    CHECK(st != NULL && st->code == 553 && strcmp(st->enh, "5.1.3") == 0);
    n = build_path(buf, "FROM:", 10, 600, false);
    st = smtp_parse_mail(buf, n, &o, &m);
    CHECK(st != NULL && st->code == 553 && strcmp(st->enh, "5.1.7") == 0);
    /* labels: 63 fine, 64 not */
    n = (size_t)sprintf(buf, "TO:<a@%.*s.com>", 63,
                        "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd");
    CHECK(smtp_parse_rcpt(buf, n, &o, &r) == NULL);
    n = (size_t)sprintf(buf, "TO:<a@%.*s.com>", 64,
                        "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd");
    st = smtp_parse_rcpt(buf, n, &o, &r);
    CHECK(st != NULL && st->code == 501 && strcmp(st->enh, "5.1.3") == 0);
}

struct param_case {
    const char *arg;
    int opts;
    int code;
    const char *enh;
};

static const struct param_case mail_param_cases[] = {
    { "FROM:<a@b> SIZE=1000", O_PLAIN, 555, "5.5.4" },
    { "FROM:<a@b> SIZE=1000", O_ESMTP, 0, NULL },
    { "FROM:<a@b>  SIZE=1000   BODY=8BITMIME ", O_ESMTP, 0, NULL },
    { "FROM:<a@b> size=1000", O_ESMTP, 0, NULL },
    { "FROM:<a@b> SIZE=1000000", O_ALL, 0, NULL },
    { "FROM:<a@b> SIZE=1000001", O_ALL, 552, "5.3.4" },
    { "FROM:<a@b> SIZE=0", O_ALL, 0, NULL },
    { "FROM:<a@b> SIZE=18446744073709551615", O_ESMTP, 0, NULL },
    { "FROM:<a@b> SIZE=18446744073709551616", O_ESMTP, 501, "5.5.4" },
    { "FROM:<a@b> SIZE=99999999999999999999", O_ESMTP, 501, "5.5.4" },
    { "FROM:<a@b> SIZE=000000000000000000001", O_ESMTP, 501, "5.5.4" },
    { "FROM:<a@b> SIZE=00000000000000000001", O_ESMTP, 0, NULL },
    { "FROM:<a@b> SIZE=", O_ESMTP, 501, "5.5.4" },
    { "FROM:<a@b> SIZE", O_ESMTP, 501, "5.5.4" },
    { "FROM:<a@b> SIZE=12a", O_ESMTP, 501, "5.5.4" },
    { "FROM:<a@b> SIZE=-1", O_ESMTP, 501, "5.5.4" },
    { "FROM:<a@b> SIZE=+1", O_ESMTP, 501, "5.5.4" },
    { "FROM:<a@b> SIZE=1=2", O_ESMTP, 501, "5.5.4" },
    { "FROM:<a@b> SIZE=1 SIZE=2", O_ESMTP, 501, "5.5.4" },
    { "FROM:<a@b> SIZE=1 size=1", O_ESMTP, 501, "5.5.4" },
    { "FROM:<a@b> BODY=7BIT", O_ESMTP, 0, NULL },
    { "FROM:<a@b> body=8bitmime", O_ESMTP, 0, NULL },
    { "FROM:<a@b> BODY=BINARYMIME", O_ALL, 0, NULL },
    { "FROM:<a@b> BODY=BINARYMIME", O_ALL_NOBIN, 555, "5.5.4" },
    { "FROM:<a@b> BODY=9BIT", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> BODY", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> BODY=7BIT BODY=7BIT", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> SMTPUTF8", O_UTF8, 0, NULL },
    { "FROM:<a@b> smtputf8", O_UTF8, 0, NULL },
    { "FROM:<a@b> SMTPUTF8", O_ESMTP, 555, "5.5.4" },
    { "FROM:<a@b> SMTPUTF8=yes", O_UTF8, 501, "5.5.4" },
    { "FROM:<a@b> SMTPUTF8 SMTPUTF8", O_UTF8, 501, "5.5.4" },
    { "FROM:<a@b> RET=FULL", O_ALL, 0, NULL },
    { "FROM:<a@b> RET=hdrs", O_ALL, 0, NULL },
    { "FROM:<a@b> RET=NONE", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> RET", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> RET=FULL", O_ESMTP, 555, "5.5.4" },
    { "FROM:<a@b> ENVID=abc", O_ESMTP, 555, "5.5.4" },
    { "FROM:<a@b> ENVID=abc+2Bdef", O_ALL, 0, NULL },
    { "FROM:<a@b> ENVID=+0D+0A", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> ENVID=ab+0d", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> ENVID=ab+2b", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> ENVID=a+2", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> ENVID=a+", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> ENVID=a+00", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> ENVID=a+7F", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> ENVID=a+C3+A4", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> ENVID=", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> ENVID", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> ENVID=\xc3\xa4", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> AUTH=<>", O_ESMTP, 0, NULL },
    { "FROM:<a@b> AUTH=user+40example.com", O_ESMTP, 0, NULL },
    { "FROM:<a@b> AUTH=+00", O_ESMTP, 501, "5.5.4" },
    { "FROM:<a@b> AUTH=a+0Ab", O_ESMTP, 501, "5.5.4" },
    { "FROM:<a@b> AUTH", O_ESMTP, 501, "5.5.4" },
    { "FROM:<a@b> AUTH=<>", O_PLAIN, 555, "5.5.4" },
    { "FROM:<a@b> FOO=bar", O_ALL, 555, "5.5.4" },
    { "FROM:<a@b> FOO", O_ALL, 555, "5.5.4" },
    { "FROM:<a@b> NOTIFY=NEVER", O_ALL, 555, "5.5.4" },
    { "FROM:<a@b> ORCPT=rfc822;a", O_ALL, 555, "5.5.4" },
    { "FROM:<a@b> SIZEX=1", O_ALL, 555, "5.5.4" },
    { "FROM:<a@b> =x", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> -X", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> X_Y=1", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> X-Y=1", O_ALL, 555, "5.5.4" },
    { "FROM:<a@b> X-Y=a\x01", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> SIZE=1\tBODY=7BIT", O_ALL, 501, "5.5.4" },
    { "FROM:<a@b> SIZE=10000000 FOO", O_ALL, 552, "5.3.4" },
    { "FROM:<a@b> FOO SIZE=10000000", O_ALL, 555, "5.5.4" },
};

TEST(mail_parameters_table)
{
    for (size_t i = 0; i < sizeof mail_param_cases / sizeof mail_param_cases[0]; i++) {
        const struct param_case *c = &mail_param_cases[i];
        struct smtp_parse_opts o = opts_for(c->opts);
        struct smtp_mail_args r;
        const struct smtp_status *st = smtp_parse_mail(c->arg, strlen(c->arg), &o, &r);
        int bad = c->code == 0 ? st != NULL
                               : (st == NULL || st->code != c->code ||
                                  strcmp(st->enh, c->enh) != 0);
        if (bad) {
            fprintf(stderr, "MAIL param case \"%s\": got %d %s %s\n", c->arg,
                    st ? st->code : 0, st ? st->enh : "", st ? st->text : "");
            harness_cur_failed = 1;
        }
    }
}

TEST(mail_parameters_values)
{
    struct smtp_parse_opts o = opts_for(O_ALL);
    struct smtp_mail_args r;
    const char *a = "FROM:<a@b> SIZE=123 BODY=8BITMIME SMTPUTF8 RET=HDRS "
                    "ENVID=QQ+2Bx AUTH=u+40d";
    CHECK(smtp_parse_mail(a, strlen(a), &o, &r) == NULL);
    CHECK(r.size_given);
    CHECK_EQ_INT(r.size, 123);
    CHECK_EQ_INT(r.body, SMTP_BODY_8BITMIME);
    CHECK(r.smtputf8);
    CHECK_EQ_INT(r.ret, SMTP_RET_HDRS);
    CHECK_EQ_STR(r.envid, "QQ+2Bx");
    CHECK_EQ_STR(r.auth, "u+40d");

    a = "FROM:<a@b>";
    CHECK(smtp_parse_mail(a, strlen(a), &o, &r) == NULL);
    CHECK(!r.size_given);
    CHECK_EQ_INT(r.body, SMTP_BODY_UNSPEC);
    CHECK_EQ_INT(r.ret, SMTP_RET_UNSPEC);
    CHECK(!r.smtputf8);
    CHECK_EQ_STR(r.envid, "");
    CHECK_EQ_STR(r.auth, "");

    a = "FROM:<> BODY=binarymime RET=full AUTH=<>";
    CHECK(smtp_parse_mail(a, strlen(a), &o, &r) == NULL);
    CHECK(r.from.null);
    CHECK_EQ_INT(r.body, SMTP_BODY_BINARYMIME);
    CHECK_EQ_INT(r.ret, SMTP_RET_FULL);
    CHECK_EQ_STR(r.auth, "<>");

    o.max_size = 0;
    a = "FROM:<a@b> SIZE=18446744073709551615";
    CHECK(smtp_parse_mail(a, strlen(a), &o, &r) == NULL);
    CHECK(r.size == UINT64_MAX);

    /* ENVID: at most 100 as received */
    char buf[400];
    int n = sprintf(buf, "FROM:<a@b> ENVID=%0100d", 7);
    CHECK(smtp_parse_mail(buf, (size_t)n, &o, &r) == NULL);
    CHECK_EQ_INT(strlen(r.envid), 100);
    n = sprintf(buf, "FROM:<a@b> ENVID=%0101d", 7);
    const struct smtp_status *st = smtp_parse_mail(buf, (size_t)n, &o, &r);
    CHECK(st != NULL && st->code == 501);
    /* AUTH: at most 513 */
    char big[700];
    memcpy(big, "FROM:<a@b> AUTH=", 16);
    memset(big + 16, 'x', 513);
    CHECK(smtp_parse_mail(big, 16 + 513, &o, &r) == NULL);
    CHECK_EQ_INT(strlen(r.auth), 513);
    memset(big + 16, 'x', 514);
    st = smtp_parse_mail(big, 16 + 514, &o, &r);
    CHECK(st != NULL && st->code == 501);
    /* SIZE over max: the reply the RFC 1870 text names */
    o.max_size = 10;
    a = "FROM:<a@b> SIZE=11";
    st = smtp_parse_mail(a, strlen(a), &o, &r);
    CHECK(st != NULL && st->code == 552);
    CHECK(st != NULL && strcmp(st->text, "Message size exceeds fixed maximum "
                               "message size") == 0);
}

static const struct param_case rcpt_param_cases[] = {
    { "TO:<a@b> NOTIFY=NEVER", O_ALL, 0, NULL },
    { "TO:<a@b> NOTIFY=SUCCESS,FAILURE,DELAY", O_ALL, 0, NULL },
    { "TO:<a@b> notify=delay,success", O_ALL, 0, NULL },
    { "TO:<a@b> NOTIFY=NEVER", O_ESMTP, 555, "5.5.4" },
    { "TO:<a@b> NOTIFY=NEVER", O_PLAIN, 555, "5.5.4" },
    { "TO:<a@b> NOTIFY=never,success", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> NOTIFY=SUCCESS,NEVER", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> NOTIFY=", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> NOTIFY", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> NOTIFY=SUCCESS,", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> NOTIFY=,SUCCESS", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> NOTIFY=SUCCESS,,DELAY", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> NOTIFY=SUCCESS,SUCCESS", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> NOTIFY=FOO", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> NOTIFY=NEVER NOTIFY=NEVER", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> ORCPT=rfc822;user+40example.com", O_ALL, 0, NULL },
    { "TO:<a@b> ORCPT=utf-8;us\\x{E9}r+40example.com", O_ALL, 0, NULL },
    { "TO:<a@b> ORCPT=rfc822;a", O_ESMTP, 555, "5.5.4" },
    { "TO:<a@b> ORCPT=rfc822", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> ORCPT=;abc", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> ORCPT=rfc822;", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> ORCPT=rfc822;a+0Ab", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> ORCPT=rfc822;a+0D+0Ab", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> ORCPT=rfc822;a+0a", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> ORCPT=rf(c;x", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> ORCPT=rf.c;x", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> ORCPT=rfc822;a ORCPT=rfc822;a", O_ALL, 501, "5.5.4" },
    { "TO:<a@b> NOTIFY=NEVER ORCPT=rfc822;a+40b", O_ALL, 0, NULL },
    { "TO:<a@b> SIZE=1", O_ALL, 555, "5.5.4" },
    { "TO:<a@b> BODY=8BITMIME", O_ALL, 555, "5.5.4" },
    { "TO:<a@b> FOO", O_ALL, 555, "5.5.4" },
    { "TO:<a@b> ", O_PLAIN, 0, NULL },
};

TEST(rcpt_parameters_table)
{
    for (size_t i = 0; i < sizeof rcpt_param_cases / sizeof rcpt_param_cases[0]; i++) {
        const struct param_case *c = &rcpt_param_cases[i];
        struct smtp_parse_opts o = opts_for(c->opts);
        struct smtp_rcpt_args r;
        const struct smtp_status *st = smtp_parse_rcpt(c->arg, strlen(c->arg), &o, &r);
        int bad = c->code == 0 ? st != NULL
                               : (st == NULL || st->code != c->code ||
                                  strcmp(st->enh, c->enh) != 0);
        if (bad) {
            fprintf(stderr, "RCPT param case \"%s\": got %d %s %s\n", c->arg,
                    st ? st->code : 0, st ? st->enh : "", st ? st->text : "");
            harness_cur_failed = 1;
        }
    }
}

TEST(rcpt_parameters_values)
{
    struct smtp_parse_opts o = opts_for(O_ALL);
    struct smtp_rcpt_args r;
    const char *a = "TO:<a@b> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a+40b";
    CHECK(smtp_parse_rcpt(a, strlen(a), &o, &r) == NULL);
    CHECK_EQ_INT(r.notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_DELAY);
    CHECK_EQ_STR(r.orcpt, "rfc822;a+40b");
    a = "TO:<a@b> NOTIFY=never";
    CHECK(smtp_parse_rcpt(a, strlen(a), &o, &r) == NULL);
    CHECK_EQ_INT(r.notify, SMTP_NOTIFY_NEVER);
    CHECK_EQ_STR(r.orcpt, "");
    a = "TO:<a@b>";
    CHECK(smtp_parse_rcpt(a, strlen(a), &o, &r) == NULL);
    CHECK_EQ_INT(r.notify, 0);

    /* ORCPT: the whole value at most 500 */
    char buf[700];
    memcpy(buf, "TO:<a@b> ORCPT=rfc822;", 22);
    memset(buf + 22, 'x', 493);          /* "rfc822;" + 493 = 500 */
    CHECK(smtp_parse_rcpt(buf, 22 + 493, &o, &r) == NULL);
    CHECK_EQ_INT(strlen(r.orcpt), 500);
    memset(buf + 22, 'x', 494);
    const struct smtp_status *st = smtp_parse_rcpt(buf, 22 + 494, &o, &r);
    CHECK(st != NULL && st->code == 501);
}

/* ------------------------------------------------------------------ */
/* xtext                                                               */

struct xtext_case {
    const char *in;
    long want;           /* -1: refused */
    const char *out;
};

static const struct xtext_case xtext_cases[] = {
    { "", 0, "" },
    { "abc", 3, "abc" },
    { "+2B", 1, "+" },
    { "+3D", 1, "=" },
    { "+20", 1, " " },
    { "+7E", 1, "~" },
    { "a+2Bb+3Dc", 5, "a+b=c" },
    { "<>", 2, "<>" },
    { "!~", 2, "!~" },
    { "+0D+0A", -1, NULL },
    { "+0A", -1, NULL },
    { "+00", -1, NULL },
    { "+1F", -1, NULL },
    { "+7F", -1, NULL },
    { "+80", -1, NULL },
    { "+FF", -1, NULL },
    { "+0a", -1, NULL },
    { "+2b", -1, NULL },
    { "+", -1, NULL },
    { "a+", -1, NULL },
    { "+4", -1, NULL },
    { "+G0", -1, NULL },
    { "a=b", -1, NULL },
    { "a b", -1, NULL },
    { "a\tb", -1, NULL },
    { "a\x7f", -1, NULL },
    { "a\xc3\xa4", -1, NULL },
};

TEST(xtext_decode_table)
{
    for (size_t i = 0; i < sizeof xtext_cases / sizeof xtext_cases[0]; i++) {
        const struct xtext_case *c = &xtext_cases[i];
        char out[32];
        long n = smtp_xtext_decode(c->in, strlen(c->in), out, sizeof out);
        long v = smtp_xtext_decode(c->in, strlen(c->in), NULL, 0);
        if (n != c->want || v != c->want ||
            (c->want >= 0 && strcmp(out, c->out) != 0)) {
            fprintf(stderr, "xtext \"%s\": got %ld/%ld\n", c->in, n, v);
            harness_cur_failed = 1;
        }
    }
}

TEST(xtext_decode_capacity)
{
    char out[4];
    static const char nul[] = "a\0b";
    CHECK_EQ_INT(smtp_xtext_decode("abc", 3, out, 4), 3);
    CHECK_EQ_STR(out, "abc");
    CHECK_EQ_INT(smtp_xtext_decode("abcd", 4, out, 4), -1);
    CHECK_EQ_INT(smtp_xtext_decode("+41+42+43", 9, out, 4), 3);
    CHECK_EQ_STR(out, "ABC");
    CHECK_EQ_INT(smtp_xtext_decode("", 0, out, 1), 0);
    CHECK_EQ_STR(out, "");
    CHECK_EQ_INT(smtp_xtext_decode("", 0, out, 0), -1);
    CHECK_EQ_INT(smtp_xtext_decode(nul, 3, out, 4), -1);
}

/* ------------------------------------------------------------------ */
/* formatting                                                          */

TEST(addr_format)
{
    struct smtp_addr a;
    char out[400];

    memset(&a, 0, sizeof a);
    a.null = true;
    CHECK_EQ_INT(smtp_addr_format(&a, out, sizeof out), 0);
    CHECK_EQ_STR(out, "");

    memset(&a, 0, sizeof a);
    a.postmaster = true;
    strcpy(a.local, "postmaster");
    CHECK_EQ_INT(smtp_addr_format(&a, out, sizeof out), 10);
    CHECK_EQ_STR(out, "postmaster");

    memset(&a, 0, sizeof a);
    strcpy(a.local, "user.name");
    strcpy(a.domain, "example.com");
    CHECK_EQ_INT(smtp_addr_format(&a, out, sizeof out), 21);
    CHECK_EQ_STR(out, "user.name@example.com");
    CHECK_EQ_INT(smtp_addr_format(&a, out, 22), 21);
    CHECK_EQ_INT(smtp_addr_format(&a, out, 21), -1);
    CHECK_EQ_STR(out, "");
    CHECK_EQ_INT(smtp_addr_format(&a, out, 0), -1);

    static const struct { const char *local, *want; } q[] = {
        { "user@other", "\"user@other\"@d" },
        { "a b", "\"a b\"@d" },
        { "a\"b", "\"a\\\"b\"@d" },
        { "a\\b", "\"a\\\\b\"@d" },
        { ".a", "\".a\"@d" },
        { "a.", "\"a.\"@d" },
        { "a..b", "\"a..b\"@d" },
        { "", "\"\"@d" },
        { "user%other", "user%other@d" },
        { "j\303\266e", "j\303\266e@d" },
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        memset(&a, 0, sizeof a);
        strcpy(a.local, q[i].local);
        strcpy(a.domain, "d");
        long n = smtp_addr_format(&a, out, sizeof out);
        CHECK_EQ_INT(n, (long)strlen(q[i].want));
        CHECK_EQ_STR(out, q[i].want);
    }

    /* never emits control characters, whatever the struct holds */
    memset(&a, 0, sizeof a);
    strcpy(a.local, "a\r\nb");
    strcpy(a.domain, "d");
    CHECK_EQ_INT(smtp_addr_format(&a, out, sizeof out), -1);
    strcpy(a.local, "a");
    strcpy(a.domain, "d\n");
    CHECK_EQ_INT(smtp_addr_format(&a, out, sizeof out), -1);
    /* an unterminated local is not read past its array */
    memset(a.local, 'x', sizeof a.local);
    CHECK_EQ_INT(smtp_addr_format(&a, out, sizeof out), -1);
}

/* parse -> format -> parse gives the same address */
TEST(addr_format_round_trip)
{
    static const char *const paths[] = {
        "<a@b>", "<\"a b\"@c>", "<\"a\\\"b\\\\c\"@d.e>", "<\"abc\"@d>",
        "<\"user@other\"@local>", "<@r.s:x@y>", "<a@[1.2.3.4]>",
        "<a@[IPv6:::1]>", "<j\303\266e@ex\xc3\xa4mple.com>",
        "<\"\\q\\ \"@d>", "<!#$%&'*+-/=?^_`{|}~@d>",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        struct smtp_addr a, b;
        size_t used;
        char out[300], wrapped[310];
        unsigned fl = SMTP_PATH_ALLOW_UTF8;
        CHECK_EQ_INT(smtp_path_parse(paths[i], strlen(paths[i]), fl, &a, &used),
                     SMTP_PATH_OK);
        CHECK_EQ_INT(used, strlen(paths[i]));
        long n = smtp_addr_format(&a, out, sizeof out);
        CHECK(n > 0);
        int w = snprintf(wrapped, sizeof wrapped, "<%s>", out);
        CHECK_EQ_INT(smtp_path_parse(wrapped, (size_t)w, fl, &b, &used),
                     SMTP_PATH_OK);
        CHECK_EQ_STR(a.local, b.local);
        CHECK_EQ_STR(a.domain, b.domain);
    }
}

TEST(path_parse_direct)
{
    struct smtp_addr a;
    size_t used = 99;
    CHECK_EQ_INT(smtp_path_parse("", 0, 0, &a, &used), SMTP_PATH_SYNTAX);
    CHECK_EQ_INT(used, 0);
    CHECK_EQ_INT(smtp_path_parse("<>", 2, 0, &a, &used), SMTP_PATH_BAD);
    CHECK_EQ_INT(smtp_path_parse("<>", 2, SMTP_PATH_ALLOW_NULL, &a, &used),
                 SMTP_PATH_OK);
    CHECK(a.null);
    CHECK_EQ_INT(smtp_path_parse("<a@b> rest", 10, 0, &a, &used), SMTP_PATH_OK);
    CHECK_EQ_INT(used, 5);
    CHECK_EQ_INT(smtp_path_parse("<Postmaster>", 12, 0, &a, &used), SMTP_PATH_BAD);
    CHECK_EQ_INT(smtp_path_parse("<Postmaster>", 12, SMTP_PATH_ALLOW_POSTMASTER,
                                 &a, &used), SMTP_PATH_OK);
    CHECK(a.postmaster);
    CHECK_EQ_INT(smtp_path_parse("<\xc3\xa4@b>", 6, 0, &a, &used), SMTP_PATH_UTF8);
}

/* ------------------------------------------------------------------ */
/* HELO                                                                */

struct helo_case {
    const char *arg;
    bool ok;
};

static const struct helo_case helo_cases[] = {
    { "mail.example.com", true },
    { "localhost", true },
    { "MAIL.Example.COM", true },
    { "[192.0.2.1]", true },
    { "192.0.2.1", true },
    { "[IPv6:2001:db8::1]", true },
    { "my_host.example", true },
    { "_dmarc.example", true },
    { "x-1.example", true },
    { "", false },
    { "a b", false },
    { "a\tb", false },
    { "a\r", false },
    { "a\n", false },
    { "ex\xc3\xa4mple.com", false },
    { "-a.com", false },
    { "a-.com", false },
    { "a.com.", false },
    { ".a.com", false },
    { "a..com", false },
    { "[tag:x]", false },
    { "[192.0.2.256]", false },
    { "[192.0.2.1", false },
    { "192.0.2.1]", false },
    { "[IPv6:zz::1]", false },
    { "a/b", false },
    { "a@b", false },
    { "a:25", false },
    { "a\x7f", false },
};

TEST(helo_table)
{
    for (size_t i = 0; i < sizeof helo_cases / sizeof helo_cases[0]; i++) {
        const struct helo_case *c = &helo_cases[i];
        if (smtp_helo_valid(c->arg, strlen(c->arg)) != c->ok) {
            fprintf(stderr, "helo case \"%s\": want %d\n", c->arg, c->ok);
            harness_cur_failed = 1;
        }
    }
}

TEST(helo_limits)
{
    char buf[300];
    static const char nul[] = "a\0b";
    CHECK(!smtp_helo_valid(nul, 3));
    CHECK(!smtp_helo_valid(NULL, 0));
    memset(buf, 'a', 63);
    CHECK(smtp_helo_valid(buf, 63));
    memset(buf, 'a', 64);
    CHECK(!smtp_helo_valid(buf, 64));
    /* 255 octets in all is the most */
    for (size_t i = 0; i < 255; i++)
        buf[i] = (i % 64 == 63) ? '.' : 'h';
    CHECK(smtp_helo_valid(buf, 255));
    buf[255] = 'h';
    CHECK(!smtp_helo_valid(buf, 256));
}

/* ------------------------------------------------------------------ */
/* the whole path: bytes -> lines -> commands -> arguments              */

TEST(pipeline_session)
{
    static const char in[] =
        "EHLO client.example\r\n"
        "MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME\r\n"
        "RCPT TO:<Postmaster>\n"
        "RCPT TO:<user%other@local> NOTIFY=FAILURE\r\n"
        "DATA\r\n";
    struct smtp_parse_opts o = opts_for(O_ALL);
    for (size_t step = 1; step <= sizeof in; step++) {
        struct sim *s = malloc(sizeof *s);
        sim_init(s, 512);
        for (size_t pos = 0; pos < sizeof in - 1; pos += step) {
            size_t n = sizeof in - 1 - pos < step ? sizeof in - 1 - pos : step;
            sim_feed(s, in + pos, n);
        }
        CHECK_EQ_INT(s->violations, 0);
        /* walk the recorded lines */
        const char *p = s->events;
        int nmail = 0, nrcpt = 0, nother = 0;
        while (strncmp(p, "OK:", 3) == 0) {
            const char *line = p + 3, *bar = strchr(line, '|');
            struct smtp_cmd cmd;
            smtp_cmd_parse(line, (size_t)(bar - line), &cmd);
            if (cmd.verb == SMTP_CMD_MAIL) {
                struct smtp_mail_args m;
                CHECK(smtp_parse_mail(cmd.arg, cmd.arg_len, &o, &m) == NULL);
                CHECK_EQ_INT(m.size, 100);
                nmail++;
            } else if (cmd.verb == SMTP_CMD_RCPT) {
                struct smtp_rcpt_args r;
                CHECK(smtp_parse_rcpt(cmd.arg, cmd.arg_len, &o, &r) == NULL);
                nrcpt++;
            } else {
                CHECK(cmd.verb == SMTP_CMD_EHLO || cmd.verb == SMTP_CMD_DATA);
                if (cmd.verb == SMTP_CMD_EHLO)
                    CHECK(smtp_helo_valid(cmd.arg, cmd.arg_len));
                nother++;
            }
            p = bar + 1;
        }
        CHECK(*p == '\0');
        CHECK_EQ_INT(nmail, 1);
        CHECK_EQ_INT(nrcpt, 2);
        CHECK_EQ_INT(nother, 2);
        free(s);
    }
}

int main(void)
{
    RUN(line_reader_whole);
    RUN(line_reader_split_everywhere);
    RUN(line_reader_trickle);
    RUN(line_reader_real_limit);
    RUN(line_reader_contract_edges);
    RUN(cmd_parse_table);
    RUN(verb_names);
    RUN(mail_addresses);
    RUN(rcpt_addresses);
    RUN(addresses_with_nul);
    RUN(address_lengths);
    RUN(mail_parameters_table);
    RUN(mail_parameters_values);
    RUN(rcpt_parameters_table);
    RUN(rcpt_parameters_values);
    RUN(xtext_decode_table);
    RUN(xtext_decode_capacity);
    RUN(addr_format);
    RUN(addr_format_round_trip);
    RUN(path_parse_direct);
    RUN(helo_table);
    RUN(helo_limits);
    RUN(pipeline_session);
    return harness_done("test_smtp_cmd");
}
