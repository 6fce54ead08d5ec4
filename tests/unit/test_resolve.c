/* Unit tests for deliver/resolve: the order of resolve.h, step by step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config.h"
#include "deliver/resolve.h"
#include "harness.h"

/* config_parse does not follow references, so dangling targets and loops
 * can be set up here to see what the resolver makes of them. */
static const char base_text[] =
    "hostname h.test\n"
    "listen 127.0.0.1:25 mx\n"
    "domain a.test\n"
    "domain b.test catch-all=catch@a.test\n"
    "domain c.test catch-all=fwd@remote.test\n"
    "domain d.test catch-all=x@d.test\n"
    "user u@a.test\n"
    "user v@a.test\n"
    "user catch@a.test\n"
    "user pm@a.test\n"
    "user w@b.test\n"
    "alias list@a.test u@a.test, v@a.test, U@A.TEST\n"
    "alias nest@a.test list@a.test, w@b.test, pm@a.test\n"
    "alias diamond@a.test list@a.test nest@a.test list@a.test\n"
    "alias fwd@a.test someone@remote.test, Someone@remote.test, someone@remote.test, u@a.test\n"
    "alias loop1@a.test loop2@a.test\n"
    "alias loop2@a.test u@a.test, loop1@a.test\n"
    "alias self@a.test u@a.test, self@a.test\n"
    "alias half@a.test u@a.test, gone@a.test, x%y@a.test\n"
    "alias dead@a.test gone@a.test\n"
    "alias viapm@a.test postmaster@a.test\n"
    "alias viacatch@a.test anything@b.test\n"
    "alias sub@a.test v+folder@a.test\n"
    "postmaster pm@a.test\n"
    "recipient-delimiter +\n";

static struct config *cfg;

static struct config *make(const char *extra)
{
    struct buf err;
    buf_init(&err, 4096);
    size_t n = strlen(base_text) + strlen(extra);
    char *text = malloc(n + 1);
    snprintf(text, n + 1, "%s%s", base_text, extra);
    struct config *c = config_parse(text, n, "r.conf", &err);
    if (c == NULL)
        fprintf(stderr, "config: %s\n", buf_cstr(&err));
    free(text);
    buf_free(&err);
    return c;
}

static struct resolve_result res;

static enum resolve_status rs(const struct config *c, const char *addr)
{
    const char *at = strrchr(addr, '@');
    resolve_result_free(&res);
    return resolve_address(c, addr, (size_t)(at - addr), at + 1, strlen(at + 1), &res);
}

/* The result as "m1 m2 | r1 r2" (in result order) for compact checks. */
static const char *show(void)
{
    static char s[4096];
    size_t n = 0;
    s[0] = '\0';
    for (size_t i = 0; i < res.nmailboxes; i++)
        n += (size_t)snprintf(s + n, sizeof(s) - n, "%s%s", i ? " " : "", res.mailboxes[i]);
    if (res.nremote > 0) {
        n += (size_t)snprintf(s + n, sizeof(s) - n, " |");
        for (size_t i = 0; i < res.nremote; i++)
            n += (size_t)snprintf(s + n, sizeof(s) - n, " %s", res.remote[i]);
    }
    return s;
}

static bool empty(void)
{
    return res.nmailboxes == 0 && res.nremote == 0 && res.mailboxes == NULL &&
           res.remote == NULL;
}

TEST(step1_not_local)
{
    CHECK_EQ_INT(rs(cfg, "u@other.test"), RESOLVE_NOT_LOCAL);
    CHECK(empty());
    CHECK_EQ_INT(rs(cfg, "u@a.test.other"), RESOLVE_NOT_LOCAL);
    CHECK_EQ_INT(rs(cfg, "u@test"), RESOLVE_NOT_LOCAL);
    CHECK_EQ_INT(rs(cfg, "u@[127.0.0.1]"), RESOLVE_NOT_LOCAL);
    /* routing characters in a foreign domain are simply not ours */
    CHECK_EQ_INT(rs(cfg, "u%a.test@other.test"), RESOLVE_NOT_LOCAL);
    CHECK_EQ_INT(rs(cfg, "postmaster@other.test"), RESOLVE_NOT_LOCAL);
    CHECK_EQ_INT(rs(cfg, "u@"), RESOLVE_NOT_LOCAL);
}

TEST(step2_routing)
{
    CHECK_EQ_INT(rs(cfg, "u%other.test@a.test"), RESOLVE_ROUTING);
    CHECK(empty());
    CHECK_EQ_INT(rs(cfg, "other.test!u@a.test"), RESOLVE_ROUTING);
    /* "u@other.test"@a.test arrives with the quotes removed */
    CHECK_EQ_INT(rs(cfg, "u@other.test@a.test"), RESOLVE_ROUTING);
    CHECK_EQ_INT(rs(cfg, "\"u@other.test\"@a.test"), RESOLVE_ROUTING);
    /* even where a catch-all or an alias would take it */
    CHECK_EQ_INT(rs(cfg, "x%y@b.test"), RESOLVE_ROUTING);
    CHECK_EQ_INT(rs(cfg, "list%x@a.test"), RESOLVE_ROUTING);
    CHECK_EQ_INT(rs(cfg, "u+a%b@a.test"), RESOLVE_ROUTING);
    CHECK_EQ_INT(rs(cfg, "postmaster%x@a.test"), RESOLVE_ROUTING);
    CHECK_EQ_INT(rs(cfg, "%@A.TEST"), RESOLVE_ROUTING);
}

TEST(step3_4_alias_and_user)
{
    CHECK_EQ_INT(rs(cfg, "u@a.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "u@a.test");
    CHECK_EQ_INT(res.unknown, 0);
    CHECK_EQ_INT(rs(cfg, "U@A.Test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "u@a.test");
    CHECK_EQ_INT(rs(cfg, "w@B.TEST"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "w@b.test");
    /* list with a duplicate in another case */
    CHECK_EQ_INT(rs(cfg, "LIST@a.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "u@a.test v@a.test");
    CHECK_EQ_INT(rs(cfg, "nest@a.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "u@a.test v@a.test w@b.test pm@a.test");
    CHECK_EQ_INT(rs(cfg, "diamond@a.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "u@a.test v@a.test w@b.test pm@a.test");
    /* forwarding: remote targets collected, de-duplicated exactly (remote
     * local parts are case-sensitive), local ones resolved */
    CHECK_EQ_INT(rs(cfg, "fwd@a.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "u@a.test | someone@remote.test Someone@remote.test");
    /* an alias may reach the postmaster, a catch-all, a subaddress */
    CHECK_EQ_INT(rs(cfg, "viapm@a.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "pm@a.test");
    CHECK_EQ_INT(rs(cfg, "viacatch@a.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "catch@a.test");
    CHECK_EQ_INT(rs(cfg, "sub@a.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "v@a.test");
}

TEST(step5_subaddress)
{
    CHECK_EQ_INT(rs(cfg, "u+tag@a.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "u@a.test");
    CHECK_EQ_INT(rs(cfg, "U+Tag+More@a.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "u@a.test");
    CHECK_EQ_INT(rs(cfg, "u+@a.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "u@a.test");
    CHECK_EQ_INT(rs(cfg, "list+x@a.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "u@a.test v@a.test");
    CHECK_EQ_INT(rs(cfg, "+u@a.test"), RESOLVE_UNKNOWN_USER);
    CHECK_EQ_INT(rs(cfg, "nobody+u@a.test"), RESOLVE_UNKNOWN_USER);
    CHECK_EQ_INT(rs(cfg, "u-tag@a.test"), RESOLVE_UNKNOWN_USER);
    /* an unknown base in a catch-all domain goes to the catch-all */
    CHECK_EQ_INT(rs(cfg, "nobody+x@b.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "catch@a.test");
    CHECK_EQ_INT(rs(cfg, "w+x@b.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "w@b.test");

    struct config *c = make("");
    CHECK(c != NULL);
    if (c == NULL)
        return;
    /* other delimiter sets, and none */
    memcpy(c->recipient_delimiter, "-=", 3);
    CHECK_EQ_INT(rs(c, "u-x@a.test"), RESOLVE_OK);
    CHECK_EQ_INT(rs(c, "u=x@a.test"), RESOLVE_OK);
    CHECK_EQ_INT(rs(c, "u+x@a.test"), RESOLVE_UNKNOWN_USER);
    c->recipient_delimiter[0] = '\0';
    CHECK_EQ_INT(rs(c, "u-x@a.test"), RESOLVE_UNKNOWN_USER);
    CHECK_EQ_INT(rs(c, "u@a.test"), RESOLVE_OK);
    config_free(c);
}

TEST(step6_postmaster)
{
    const char *forms[] = {"postmaster@a.test", "POSTMASTER@a.test",
                           "PostMaster@A.TEST", "postmaster@b.test",
                           "postmaster@c.test", "postmaster@d.test"};
    for (size_t i = 0; i < sizeof(forms) / sizeof(*forms); i++) {
        CHECK_EQ_INT(rs(cfg, forms[i]), RESOLVE_OK);
        CHECK_EQ_STR(show(), "pm@a.test");
    }
    CHECK_EQ_INT(rs(cfg, "postmasters@a.test"), RESOLVE_UNKNOWN_USER);
    CHECK_EQ_INT(rs(cfg, "postmaste@a.test"), RESOLVE_UNKNOWN_USER);
    /* an explicit alias or user takes precedence (steps 3-4 come first) */
    struct config *c = make("alias postmaster@b.test u@a.test\n");
    CHECK(c != NULL);
    if (c != NULL) {
        CHECK_EQ_INT(rs(c, "Postmaster@b.test"), RESOLVE_OK);
        CHECK_EQ_STR(show(), "u@a.test");
        CHECK_EQ_INT(rs(c, "postmaster@a.test"), RESOLVE_OK);
        CHECK_EQ_STR(show(), "pm@a.test");
        config_free(c);
    }
    /* a remote postmaster is forwarded */
    c = make("");
    if (c != NULL) {
        free(c->postmaster);
        c->postmaster = strdup("hostmaster@remote.test");
        CHECK_EQ_INT(rs(c, "postmaster@a.test"), RESOLVE_OK);
        CHECK_EQ_STR(show(), " | hostmaster@remote.test");
        config_free(c);
    }
}

TEST(step7_catch_all)
{
    CHECK_EQ_INT(rs(cfg, "anyone@b.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "catch@a.test");
    CHECK_EQ_INT(rs(cfg, "ANYONE@B.TEST"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "catch@a.test");
    /* catch-all to a remote address */
    CHECK_EQ_INT(rs(cfg, "anyone@c.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), " | fwd@remote.test");
    /* a catch-all pointing into its own domain at nobody loops */
    CHECK_EQ_INT(rs(cfg, "anyone@d.test"), RESOLVE_LOOP);
    CHECK(empty());
    /* odd local parts still reach a catch-all: they are mail for us */
    CHECK_EQ_INT(rs(cfg, "@b.test"), RESOLVE_OK);
    char big[300];
    memset(big, 'q', 200);
    snprintf(big + 200, sizeof(big) - 200, "@b.test");
    CHECK_EQ_INT(rs(cfg, big), RESOLVE_OK);
    CHECK_EQ_STR(show(), "catch@a.test");
}

TEST(step8_unknown)
{
    CHECK_EQ_INT(rs(cfg, "nobody@a.test"), RESOLVE_UNKNOWN_USER);
    CHECK(empty());
    CHECK_EQ_INT(rs(cfg, "@a.test"), RESOLVE_UNKNOWN_USER);
    char big[300];
    memset(big, 'u', 200);
    snprintf(big + 200, sizeof(big) - 200, "@a.test");
    CHECK_EQ_INT(rs(cfg, big), RESOLVE_UNKNOWN_USER);
    /* a NUL inside the local part never matches "u" */
    resolve_result_free(&res);
    CHECK_EQ_INT(resolve_address(cfg, "u\0", 2, "a.test", 6, &res), RESOLVE_UNKNOWN_USER);
    /* local targets that go nowhere are counted and skipped */
    CHECK_EQ_INT(rs(cfg, "half@a.test"), RESOLVE_OK);
    CHECK_EQ_STR(show(), "u@a.test");
    CHECK_EQ_INT(res.unknown, 2);
    CHECK_EQ_INT(rs(cfg, "dead@a.test"), RESOLVE_UNKNOWN_USER);
    CHECK_EQ_INT(res.unknown, 1);
    CHECK(empty());
}

TEST(loops)
{
    CHECK_EQ_INT(rs(cfg, "loop1@a.test"), RESOLVE_LOOP);
    CHECK(empty());
    CHECK_EQ_INT(rs(cfg, "loop2@a.test"), RESOLVE_LOOP);
    CHECK_EQ_INT(rs(cfg, "self@a.test"), RESOLVE_LOOP);
    CHECK(empty());
    /* the postmaster pointing at postmaster@ loops too */
    struct config *c = make("");
    if (c != NULL) {
        free(c->postmaster);
        c->postmaster = strdup("postmaster@a.test");
        CHECK_EQ_INT(rs(c, "postmaster@b.test"), RESOLVE_LOOP);
        config_free(c);
    }
}

TEST(depth_limit)
{
    /* a chain of n aliases needs depth n */
    char chain[4096];
    size_t n = 0;
    for (int i = 1; i <= 10; i++)
        n += (size_t)snprintf(chain + n, sizeof(chain) - n,
                              "alias c%d@a.test c%d@a.test\n", i, i + 1);
    snprintf(chain + n, sizeof(chain) - n, "alias c11@a.test u@a.test\n");
    struct config *c = make(chain);
    CHECK(c != NULL);
    if (c == NULL)
        return;
    CHECK_EQ_INT(c->limits[LIM_ALIAS_DEPTH], 10);
    CHECK_EQ_INT(rs(c, "c2@a.test"), RESOLVE_OK);    /* 10 levels */
    CHECK_EQ_STR(show(), "u@a.test");
    CHECK_EQ_INT(rs(c, "c1@a.test"), RESOLVE_LOOP);  /* 11 levels */
    CHECK(empty());
    c->limits[LIM_ALIAS_DEPTH] = 1;
    CHECK_EQ_INT(rs(c, "list@a.test"), RESOLVE_OK);
    CHECK_EQ_INT(rs(c, "nest@a.test"), RESOLVE_LOOP);
    CHECK_EQ_INT(rs(c, "anyone@b.test"), RESOLVE_OK);   /* catch-all: 1 */
    CHECK_EQ_INT(rs(c, "viacatch@a.test"), RESOLVE_LOOP);
    config_free(c);
}

TEST(expansion_limit)
{
    struct config *c = make("limit alias-expansion 2\n");
    CHECK(c != NULL);
    if (c == NULL)
        return;
    CHECK_EQ_INT(rs(c, "list@a.test"), RESOLVE_OK);      /* 2, after dedup */
    CHECK_EQ_STR(show(), "u@a.test v@a.test");
    CHECK_EQ_INT(rs(c, "nest@a.test"), RESOLVE_TOO_MANY);
    CHECK(empty());
    /* remote addresses count too */
    CHECK_EQ_INT(rs(c, "fwd@a.test"), RESOLVE_TOO_MANY);
    c->limits[LIM_ALIAS_EXPANSION] = 3;
    CHECK_EQ_INT(rs(c, "fwd@a.test"), RESOLVE_OK);
    config_free(c);
}

/* Ten levels of fifty-way lists all naming the next level: 50^10 paths,
 * resolved in linear time because each alias is expanded once. */
TEST(wide_lists_are_linear)
{
    char *text = malloc(64 * 1024);
    size_t n = 0;
    for (int level = 0; level < 9; level++) {
        n += (size_t)snprintf(text + n, 64 * 1024 - n, "alias l%d@a.test", level);
        for (int k = 0; k < 50; k++)
            n += (size_t)snprintf(text + n, 64 * 1024 - n, " l%d@a.test, u%d@a.test",
                                  level + 1, k);
        n += (size_t)snprintf(text + n, 64 * 1024 - n, "\n");
    }
    for (int k = 0; k < 50; k++)
        n += (size_t)snprintf(text + n, 64 * 1024 - n, "user u%d@a.test\n", k);
    snprintf(text + n, 64 * 1024 - n, "alias l9@a.test u@a.test\n");
    struct config *c = make(text);
    free(text);
    CHECK(c != NULL);
    if (c == NULL)
        return;
    CHECK_EQ_INT(rs(c, "l0@a.test"), RESOLVE_OK);
    CHECK_EQ_INT(res.nmailboxes, 51);
    config_free(c);
}

TEST(inputs_need_no_nul)
{
    const char buf[] = "xxU+tagyyA.TESTzz";
    resolve_result_free(&res);
    CHECK_EQ_INT(resolve_address(cfg, buf + 2, 5, buf + 9, 6, &res), RESOLVE_OK);
    CHECK_EQ_STR(show(), "u@a.test");
    resolve_result_free(&res);
    CHECK_EQ_INT(resolve_address(cfg, buf + 2, 5, buf + 9, 7, &res), RESOLVE_NOT_LOCAL);
    CHECK(empty());
}

TEST(names_and_free)
{
    CHECK_EQ_STR(resolve_status_name(RESOLVE_OK), "ok");
    CHECK_EQ_STR(resolve_status_name(RESOLVE_NOT_LOCAL), "not-local");
    CHECK_EQ_STR(resolve_status_name(RESOLVE_ROUTING), "routing");
    CHECK_EQ_STR(resolve_status_name(RESOLVE_UNKNOWN_USER), "unknown-user");
    CHECK_EQ_STR(resolve_status_name(RESOLVE_LOOP), "loop");
    CHECK_EQ_STR(resolve_status_name(RESOLVE_TOO_MANY), "too-many");
    struct resolve_result r;
    memset(&r, 0x5a, sizeof(r));        /* garbage in: always initialised */
    CHECK_EQ_INT(resolve_address(cfg, "u", 1, "other.test", 10, &r), RESOLVE_NOT_LOCAL);
    CHECK(r.mailboxes == NULL && r.nmailboxes == 0 && r.remote == NULL && r.unknown == 0);
    resolve_result_free(&r);
    resolve_result_free(&r);
    resolve_result_free(NULL);
}

int main(void)
{
    cfg = make("");
    if (cfg == NULL)
        return 1;
    RUN(step1_not_local);
    RUN(step2_routing);
    RUN(step3_4_alias_and_user);
    RUN(step5_subaddress);
    RUN(step6_postmaster);
    RUN(step7_catch_all);
    RUN(step8_unknown);
    RUN(loops);
    RUN(depth_limit);
    RUN(expansion_limit);
    RUN(wide_lists_are_linear);
    RUN(inputs_need_no_nul);
    RUN(names_and_free);
    resolve_result_free(&res);
    config_free(cfg);
    return harness_done("test_resolve");
}
