/*
 * Tests for proto/rfc5322_addr: address-list parsing.
 *
 * Table-driven: each header value (real-world forms, the RFC 5322
 * appendix A examples, obsolete syntax, hostile input) with the expected
 * return, the addresses reported (joined with '|') and the count of bad
 * elements. Each value is parsed from an exact-size heap copy, so a read
 * past its end is caught, and every address reported must be a slice of
 * it.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "proto/rfc5322_addr.h"

struct collect {
    const char *base;
    size_t base_len;
    char joined[8192];
    size_t len;
    long calls;
    bool outside;
};

static void collect_cb(const char *addr, size_t len, void *arg)
{
    struct collect *c = arg;
    if (addr < c->base || len > c->base_len ||
        (size_t)(addr - c->base) > c->base_len - len)
        c->outside = true;
    if (c->len + len + 2 < sizeof c->joined) {
        if (c->calls > 0)
            c->joined[c->len++] = '|';
        memcpy(c->joined + c->len, addr, len);
        c->len += len;
        c->joined[c->len] = '\0';
    }
    c->calls++;
}

static long parse(const char *value, size_t len, struct collect *c,
                  size_t *bad_r)
{
    char *copy = malloc(len ? len : 1);
    long r;

    if (copy == NULL)
        abort();
    memcpy(copy, value, len);
    memset(c, 0, sizeof *c);
    c->base = copy;
    c->base_len = len;
    r = rfc5322_addr_list_ex(copy, len, collect_cb, c, bad_r);
    free(copy);
    c->base = NULL;
    return r;
}

struct tcase {
    const char *in;
    long ret;
    const char *addrs;
    size_t bad;
};

static const struct tcase cases[] = {
    /* Everyday forms. */
    {"\"Doe, John\" <john@x.test>, jane@y.test (Jane)", 2,
     "john@x.test|jane@y.test", 0},
    {"undisclosed-recipients:;", 0, "", 0},
    {"Undisclosed recipients:;", 0, "", 0},
    {"undisclosed-recipients: (none) ;", 0, "", 0},
    {"Team: a@x.test, b@y.test;, c@z.test", 3, "a@x.test|b@y.test|c@z.test",
     0},
    {"<@route.test:u@x.test>", 1, "u@x.test", 0},
    {"<@a.test,@b.test:u@x.test>", 1, "u@x.test", 0},
    {"Name <,@a.test, ,@b.test:u@x.test>", 1, "u@x.test", 0},
    {"\"quoted\\\"local\"@x.test", 1, "\"quoted\\\"local\"@x.test", 0},
    {"u@[1.2.3.4]", 1, "u@[1.2.3.4]", 0},
    {"u@[IPv6:2001:db8::1]", 1, "u@[IPv6:2001:db8::1]", 0},
    {"John Smith <john.smith@example.com>", 1, "john.smith@example.com", 0},
    {"john.smith@example.com", 1, "john.smith@example.com", 0},
    {"<john@x.test>", 1, "john@x.test", 0},
    {"  <john@x.test>  ", 1, "john@x.test", 0},
    {"< john@x.test >", 1, "john@x.test", 0},
    {"=?UTF-8?B?5byg5LiJ?= <zhang@example.cn>", 1, "zhang@example.cn", 0},
    {"=?iso-8859-1?q?J=F6rg_M=FCller?= <joerg@example.de>, "
     "=?utf-8?Q?Ren=C3=A9?= <rene@x.test>",
     2, "joerg@example.de|rene@x.test", 0},
    {"J\xc3\xb6rg <j\xc3\xb6rg@ex\xc3\xa4mple.test>", 1,
     "j\xc3\xb6rg@ex\xc3\xa4mple.test", 0},
    {"Alice <alice@x.test>,\r\n Bob <bob@y.test>,\r\n\tcarol@z.test", 3,
     "alice@x.test|bob@y.test|carol@z.test", 0},
    {"(lead) john (middle (nested)) <john@x.test> (trail), "
     "(c)jane@y.test(c)",
     2, "john@x.test|jane@y.test", 0},
    {"\"a b\"@x.test", 1, "\"a b\"@x.test", 0},
    {"a.\"b\".c@x.test", 1, "a.\"b\".c@x.test", 0},
    {"foo..bar@docomo.test, foo.@docomo.test", 2,
     "foo..bar@docomo.test|foo.@docomo.test", 0},
    {"a+tag@x.test, o'neil@y.test, {x}@z.test", 3,
     "a+tag@x.test|o'neil@y.test|{x}@z.test", 0},
    {"a@b.test,\r\n", 1, "a@b.test", 0},
    /* RFC 5322 appendix A. */
    {"\"Joe Q. Public\" <john.q.public@example.com>", 1,
     "john.q.public@example.com", 0},
    {"Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>", 3,
     "mary@x.test|jdoe@example.org|one@y.test", 0},
    {"<boss@nil.test>, \"Giant; \\\"Big\\\" Box\" <sysservices@example.net>",
     2, "boss@nil.test|sysservices@example.net", 0},
    {"A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;", 3,
     "c@a.test|joe@where.test|jdoe@one.test", 0},
    {"Pete(A nice \\) chap) <pete@silly.test>", 1, "pete@silly.test", 0},
    {"A Group(Some people)\r\n     :Chris Jones <c@(Chris's host.)public."
     "example>,\r\n         joe@example.org,\r\n  John <jdoe@one.test> "
     "(my dear friend); (the end of the group)",
     2, "joe@example.org|jdoe@one.test", 1},
    {"Joe Q. Public <john.q.public@example.com>", 1,
     "john.q.public@example.com", 0},
    {"Mary Smith <@node.test:mary@example.net>, , jdoe@test  . example", 1,
     "mary@example.net", 1},
    {"John Doe <jdoe@machine(comment).  example>", 0, "", 1},
    {"Mary Smith\r\n  \r\n <mary@example.net>", 1, "mary@example.net", 0},
    /* CFWS inside an addr-spec (obsolete): not one slice, bad. */
    {"Pete <pete(his account)@silly.test(his host)>", 0, "", 1},
    {"john @ x.test, jane@y.test", 1, "jane@y.test", 1},
    {"john@\r\n x.test", 0, "", 1},
    /* Empty elements. */
    {"", 0, "", 0},
    {"   \r\n ", 0, "", 0},
    {"(only a comment)", 0, "", 0},
    {",,,a@b.test,,, ,(c), ", 1, "a@b.test", 0},
    {"G: ,a@b.test,,;", 1, "a@b.test", 0},
    /* Leniency: an addr-spec as display name. */
    {"shown@x.test <real@y.test>", 1, "real@y.test", 0},
    /* Bad elements, skipped and counted. */
    {"john", 0, "", 1},
    {"Doe, John <john@x.test>", 1, "john@x.test", 1},
    {"a@b.test c@d.test, e@f.test", 1, "e@f.test", 1},
    {"<>", 0, "", 1},
    {"<>, a@b.test", 1, "a@b.test", 1},
    {"a@b.test; c@d.test", 0, "", 1},
    {"a@b.test>, c@d.test", 1, "c@d.test", 1},
    {"a@b.test), c@d.test", 1, "c@d.test", 1},
    {"Name <a@b.test> junk, c@d.test", 1, "c@d.test", 1},
    {"<a@b.test, c@d.test>, e@f.test", 1, "e@f.test", 1},
    {"<<a@b.test>>, e@f.test", 1, "e@f.test", 1},
    {"a@b.test., a@.b, @b.test, a@, a@b..c, x@y.test", 1, "x@y.test", 5},
    {"@r.test:u@x.test", 0, "", 1},
    {"a\\b@x.test", 0, "", 1},
    {"\"a\r\n b\"@x.test, \"Name\r\n Folded\" <n@x.test>", 1, "n@x.test", 1},
    {"\"a\tb\"@x.test", 0, "", 1},
    {"a@[1.2.3.4 ]", 0, "", 1},
    {"a@[a[b]", 0, "", 1},
    {"a@b.test <c@d.test> <e@f.test>", 0, "", 1},
    {"G: a@b.test", 1, "a@b.test", 1},
    {"G: H: a@b.test;;", 0, "", 2},
    {"G:;H:;", 0, "", 1},
    {"G:; x", 0, "", 1},
    {";a@b.test, c@d.test", 1, "c@d.test", 1},
    {": a@b.test;", 0, "", 1},
    /* Unrecoverable: -1, after what came before. */
    {"\"Doe <a@b.test>", -1, "", 0},
    {"x@y.test, \"Doe <a@b.test>", -1, "x@y.test", 0},
    {"a@b.test, (comment", -1, "a@b.test", 0},
    {"a@b.test, (comment \\)", -1, "a@b.test", 0},
    {"x@y.test, <a@b.test", -1, "x@y.test", 0},
    {"Name <a@b.test", -1, "", 0},
    {"a@b.test, Name <c@d.test, e@f.test", -1, "a@b.test", 0},
    {"a@b.test junk <", -1, "", 0},
    {"a@[1.2", -1, "", 0},
    {"\"abc\\", -1, "", 0},
    {"a@b.test, x\"y", -1, "a@b.test", 0},
};

TEST(table)
{
    size_t k;
    for (k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const struct tcase *t = &cases[k];
        struct collect c;
        size_t bad = 99;
        long r = parse(t->in, strlen(t->in), &c, &bad);
        bool ok = r == t->ret && strcmp(c.joined, t->addrs) == 0 &&
                  !c.outside && (t->ret < 0 || c.calls == r) &&
                  (t->ret < 0 || bad == t->bad);
        if (!ok) {
            fprintf(stderr, "case %zu [%s]: ret %ld addrs [%s] bad %zu\n", k,
                    t->in, r, c.joined, bad);
            CHECK(0);
        }
        /* The plain entry point agrees. */
        CHECK_EQ_INT(rfc5322_addr_list(t->in, strlen(t->in), NULL, NULL),
                     t->ret);
    }
}

TEST(nul_bytes)
{
    static const char in[] = "a@b.test\0, c@d.test, \"x\0y\"@e.test, f\0@g";
    struct collect c;
    size_t bad;
    long r = parse(in, sizeof in - 1, &c, &bad);
    CHECK_EQ_INT(r, 1);
    CHECK_EQ_STR(c.joined, "c@d.test");
    CHECK_EQ_INT(bad, 3);
    CHECK(!c.outside);
    CHECK_EQ_INT(rfc5322_addr_list(NULL, 0, NULL, NULL), 0);
    CHECK_EQ_INT(rfc5322_addr_list(in, 0, NULL, NULL), 0);
}

/* A prefix of a value is parsed within the prefix only. */
TEST(prefix_bound)
{
    static const char in[] = "a@b.test, c@d.test";
    struct collect c;
    size_t bad;
    long r = parse(in, 12, &c, &bad);  /* "a@b.test, c@" */
    CHECK_EQ_INT(r, 1);
    CHECK_EQ_STR(c.joined, "a@b.test");
    CHECK_EQ_INT(bad, 1);
    r = parse(in, 16, &c, &bad);       /* "...c@d.te" */
    CHECK_EQ_INT(r, 2);
    CHECK_EQ_STR(c.joined, "a@b.test|c@d.te");
}

TEST(comment_depth)
{
    char in[200];
    struct collect c;
    size_t n = 0, k, bad;

    for (k = 0; k < RFC5322_ADDR_COMMENT_DEPTH; k++)
        in[n++] = '(';
    for (k = 0; k < RFC5322_ADDR_COMMENT_DEPTH; k++)
        in[n++] = ')';
    memcpy(in + n, "a@b.test", 8);
    n += 8;
    CHECK_EQ_INT(parse(in, n, &c, &bad), 1);
    CHECK_EQ_STR(c.joined, "a@b.test");

    n = 0;
    memcpy(in, "x@y.test, ", 10);
    n = 10;
    for (k = 0; k <= RFC5322_ADDR_COMMENT_DEPTH; k++)
        in[n++] = '(';
    for (k = 0; k <= RFC5322_ADDR_COMMENT_DEPTH; k++)
        in[n++] = ')';
    CHECK_EQ_INT(parse(in, n, &c, &bad), -1);
    CHECK_EQ_STR(c.joined, "x@y.test");
}

TEST(address_length)
{
    char in[400];
    struct collect c;
    size_t bad;

    /* 313 + "@x.test" = 320: the longest. */
    memset(in, 'a', 313);
    memcpy(in + 313, "@x.test", 7);
    CHECK_EQ_INT(parse(in, 320, &c, &bad), 1);
    CHECK_EQ_INT(strlen(c.joined), 320);
    memset(in, 'a', 314);
    memcpy(in + 314, "@x.test", 7);
    CHECK_EQ_INT(parse(in, 321, &c, &bad), -1);
    CHECK_EQ_INT(c.calls, 0);
    /* Inside angle brackets the same. */
    in[0] = '<';
    in[321] = '>';
    CHECK_EQ_INT(parse(in, 322, &c, &bad), 1);
    memset(in, 'a', 400);
    in[0] = '<';
    memcpy(in + 315, "@x.test>", 8);
    CHECK_EQ_INT(parse(in, 323, &c, &bad), -1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Hostile sizes: linear time, right answers. */
TEST(hostile)
{
    size_t n = 1u << 20, k, bad;
    char *in = malloc(n);
    struct collect c;
    double t0;

    if (in == NULL)
        abort();
    /* 10k commas then one address; and a million. */
    memset(in, ',', 10000);
    memcpy(in + 10000, "a@b.test", 8);
    CHECK_EQ_INT(parse(in, 10008, &c, &bad), 1);
    CHECK_EQ_INT(bad, 0);
    memset(in, ',', n);
    t0 = now();
    CHECK_EQ_INT(parse(in, n, &c, &bad), 0);

    /* Many addresses. */
    for (k = 0; k + 9 <= n; k += 9)
        memcpy(in + k, "a@b.test,", 9);
    CHECK_EQ_INT(parse(in, k, &c, &bad), (long)(k / 9));
    CHECK_EQ_INT(bad, 0);

    /* Comments 32 deep, over and over. */
    for (k = 0; k + 64 <= n; k += 64) {
        memset(in + k, '(', 32);
        memset(in + k + 32, ')', 32);
    }
    CHECK_EQ_INT(parse(in, k, &c, &bad), 0);

    /* One huge unterminated comment, quote, angle. */
    memset(in, 'x', n);
    in[0] = '(';
    CHECK_EQ_INT(parse(in, n, &c, &bad), -1);
    in[0] = '"';
    CHECK_EQ_INT(parse(in, n, &c, &bad), -1);
    in[0] = '<';
    CHECK_EQ_INT(parse(in, n, &c, &bad), -1);
    /* One huge atom: bad, not an address. */
    in[0] = 'x';
    CHECK_EQ_INT(parse(in, n, &c, &bad), 0);
    CHECK_EQ_INT(bad, 1);
    /* Many group starts and ends, many angles. */
    for (k = 0; k + 4 <= n; k += 4)
        memcpy(in + k, "g:;,", 4);
    CHECK_EQ_INT(parse(in, k, &c, &bad), 0);
    CHECK_EQ_INT(bad, 0);
    for (k = 0; k + 3 <= n; k += 3)
        memcpy(in + k, "<>,", 3);
    CHECK_EQ_INT(parse(in, k, &c, &bad), 0);
    CHECK_EQ_INT(bad, k / 3);
    /* Everything above took well under a second even with sanitizers. */
    CHECK(now() - t0 < 10.0);
    free(in);
}

int main(void)
{
    RUN(table);
    RUN(nul_bytes);
    RUN(prefix_bound);
    RUN(comment_depth);
    RUN(address_length);
    RUN(hostile);
    return harness_done("test_rfc5322_addr");
}
