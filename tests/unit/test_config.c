/* Unit tests for conf/config: parser, lookups, match, config_load. */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/config.h"
#include "harness.h"
#include "lib/fsutil.h"
#include "lib/log.h"

/* five lines; tests append from line 6 */
#define BASE "hostname mx.example.test\n"  \
             "listen 127.0.0.1:2525 mx\n"  \
             "domain example.test\n"       \
             "postmaster pm@example.test\n" \
             "user pm@example.test\n"

static struct buf err;

static struct config *parse(const char *text)
{
    buf_reset(&err);
    return config_parse(text, strlen(text), "t.conf", &err);
}

/* text must fail with an error containing want (e.g. "t.conf:6: ..."). */
static int expect_err_at(const char *text, const char *want, int line)
{
    struct config *cfg = parse(text);
    if (cfg != NULL) {
        fprintf(stderr, "%d: expected error '%s', parse succeeded\n", line, want);
        config_free(cfg);
        return 0;
    }
    if (strstr(buf_cstr(&err), want) == NULL) {
        fprintf(stderr, "%d: expected error '%s', got '%s'\n", line, want,
                buf_cstr(&err));
        return 0;
    }
    return 1;
}
#define EXPECT_ERR(text, want) CHECK(expect_err_at((text), (want), __LINE__))

static int expect_ok_at(const char *text, int line)
{
    struct config *cfg = parse(text);
    if (cfg == NULL) {
        fprintf(stderr, "%d: unexpected error '%s'\n", line, buf_cstr(&err));
        return 0;
    }
    config_free(cfg);
    return 1;
}
#define EXPECT_OK(text) CHECK(expect_ok_at((text), __LINE__))

TEST(minimal_and_defaults)
{
    struct config *cfg = parse(BASE);
    CHECK(cfg != NULL);
    if (cfg == NULL)
        return;
    CHECK_EQ_STR(cfg->source, "t.conf");
    CHECK_EQ_STR(cfg->hostname, "mx.example.test");
    CHECK(cfg->data_dir == NULL);
    CHECK(cfg->run_as == NULL);
    CHECK(cfg->users_file == NULL);
    CHECK(cfg->aliases_file == NULL);
    CHECK_EQ_INT(cfg->log_level, LOG_INFO);
    CHECK_EQ_STR(cfg->recipient_delimiter, "+");
    CHECK(!cfg->vrfy);
    CHECK(!cfg->expn);
    CHECK_EQ_INT(cfg->nlisteners, 1);
    CHECK_EQ_INT(cfg->ndomains, 1);
    CHECK_EQ_INT(cfg->nusers, 1);
    CHECK_EQ_INT(cfg->naliases, 0);
    CHECK_EQ_STR(cfg->postmaster, "pm@example.test");
    CHECK_EQ_INT(cfg->postmaster_line, 4);
    for (int i = 0; i < LIM__COUNT; i++)
        CHECK_EQ_INT(cfg->limits[i], limit_table[i].def);
    config_free(cfg);
    config_free(NULL);
}

TEST(every_directive)
{
    const char *text =
        "# a full file\n"
        "hostname MX.Example.TEST   # comment after words\n"
        "data-dir /var/lib/estafeta\n"
        "run-as estafeta\n"
        "log-level debug\n"
        "listen 127.0.0.1:25 mx\n"
        "listen [::1]:587 submission\n"
        "\tlisten 0.0.0.0:465\tsubmissions\n"
        "domain Example.TEST\n"
        "domain example.org catch-all=pm@example.test\n"
        "user pm@example.test\n"
        "user Alice@Example.Test $argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHQ$aGFzaA\n"
        "users-file users\n"
        "alias team@example.test alice@example.test, pm@example.test\n"
        "alias fwd@example.org Someone@Remote.Example\n"
        "aliases-file /etc/estafeta/aliases\n"
        "postmaster pm@example.test\n"
        "recipient-delimiter +-\n"
        "vrfy on\n"
        "expn off\n"
        "limit message-size 10M\n"
        "limit timeout-command 5m\n"
        "\n"
        "   # indented comment\n";
    struct config *cfg = parse(text);
    CHECK(cfg != NULL);
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", buf_cstr(&err));
        return;
    }
    CHECK_EQ_STR(cfg->hostname, "mx.example.test");
    CHECK_EQ_STR(cfg->data_dir, "/var/lib/estafeta");
    CHECK_EQ_STR(cfg->run_as, "estafeta");
    CHECK_EQ_INT(cfg->log_level, LOG_DEBUG);
    CHECK_EQ_INT(cfg->nlisteners, 3);
    CHECK_EQ_STR(cfg->listeners[0].host, "127.0.0.1");
    CHECK_EQ_INT(cfg->listeners[0].port, 25);
    CHECK_EQ_INT(cfg->listeners[0].role, ROLE_MX);
    CHECK_EQ_STR(cfg->listeners[1].host, "::1");
    CHECK_EQ_INT(cfg->listeners[1].port, 587);
    CHECK_EQ_INT(cfg->listeners[1].role, ROLE_SUBMISSION);
    CHECK_EQ_STR(cfg->listeners[2].host, "0.0.0.0");
    CHECK_EQ_INT(cfg->listeners[2].role, ROLE_SUBMISSIONS);
    CHECK_EQ_INT(cfg->ndomains, 2);
    /* in file order: the first is the primary domain */
    CHECK_EQ_STR(cfg->domains[0].name, "example.test");
    CHECK(cfg->domains[0].catch_all == NULL);
    CHECK_EQ_INT(cfg->domains[0].line, 9);
    CHECK_EQ_STR(cfg->domains[1].name, "example.org");
    CHECK_EQ_STR(cfg->domains[1].catch_all, "pm@example.test");
    CHECK_EQ_INT(cfg->nusers, 2);
    CHECK_EQ_STR(cfg->users[0].address, "alice@example.test");
    CHECK_EQ_STR(cfg->users[0].local, "alice");
    CHECK_EQ_STR(cfg->users[0].domain, "example.test");
    CHECK(cfg->users[0].password_hash != NULL &&
          strncmp(cfg->users[0].password_hash, "$argon2id$", 10) == 0);
    CHECK(cfg->users[0].in_config);
    CHECK_EQ_INT(cfg->users[0].line, 12);
    CHECK_EQ_STR(cfg->users[1].address, "pm@example.test");
    CHECK(cfg->users[1].password_hash == NULL);
    CHECK_EQ_STR(cfg->users_file, "users");
    CHECK_EQ_STR(cfg->aliases_file, "/etc/estafeta/aliases");
    CHECK_EQ_INT(cfg->naliases, 2);
    CHECK_EQ_STR(cfg->aliases[0].name, "fwd@example.org");
    CHECK_EQ_INT(cfg->aliases[0].ntargets, 1);
    /* local part of a target kept as written, domain folded */
    CHECK_EQ_STR(cfg->aliases[0].targets[0], "Someone@remote.example");
    CHECK_EQ_STR(cfg->aliases[1].name, "team@example.test");
    CHECK_EQ_INT(cfg->aliases[1].ntargets, 2);
    CHECK_EQ_STR(cfg->aliases[1].targets[0], "alice@example.test");
    CHECK_EQ_STR(cfg->aliases[1].targets[1], "pm@example.test");
    CHECK_EQ_STR(cfg->postmaster, "pm@example.test");
    CHECK_EQ_STR(cfg->recipient_delimiter, "+-");
    CHECK(cfg->vrfy);
    CHECK(!cfg->expn);
    CHECK_EQ_INT(cfg->limits[LIM_MESSAGE_SIZE], 10 * 1024 * 1024);
    CHECK_EQ_INT(cfg->limits[LIM_TIMEOUT_COMMAND], 300);
    CHECK_EQ_STR(listener_role_name(ROLE_MX), "mx");
    CHECK_EQ_STR(listener_role_name(ROLE_SUBMISSION), "submission");
    CHECK_EQ_STR(listener_role_name(ROLE_SUBMISSIONS), "submissions");

    /* lookups: any case, by length, no NUL needed */
    const char *k = "ALICE@EXAMPLE.TESTxyz";
    CHECK(config_user(cfg, k, 18) == &cfg->users[0]);
    CHECK(config_user(cfg, k, 17) == NULL);
    CHECK(config_user(cfg, k, 19) == NULL);
    CHECK(config_domain(cfg, "EXAMPLE.ORG", 11) == &cfg->domains[1]);
    CHECK(config_domain(cfg, "example.test", 12) == &cfg->domains[0]);
    CHECK(config_domain(cfg, "example.or", 10) == NULL);
    CHECK(config_domain(cfg, "example.org\0", 12) == NULL);
    CHECK(config_alias(cfg, "Team@Example.Test", 17) == &cfg->aliases[1]);
    CHECK(config_alias(cfg, "team@example.test", 0) == NULL);
    config_free(cfg);
}

TEST(errors_name_file_and_line)
{
    EXPECT_ERR(BASE "listn 1.2.3.4:25 mx\n", "t.conf:6: unknown directive 'listn'");
    EXPECT_ERR("\n\n# c\nfoo\n", "t.conf:4: unknown directive 'foo'");
    EXPECT_ERR(BASE "hostname a.example\n", "t.conf:6: 'hostname' given twice (first on line 1)");
    EXPECT_ERR(BASE "hostname\n", "t.conf:6: 'hostname' takes 1 argument, not 0");
    EXPECT_ERR(BASE "hostname a b\n", "t.conf:6: 'hostname' takes 1 argument, not 2");
    EXPECT_ERR(BASE "listen 127.0.0.1:26\n", "t.conf:6: 'listen' takes 2 arguments");
    EXPECT_ERR(BASE "alias a@example.test\n", "t.conf:6: 'alias' takes at least 2 arguments");
    EXPECT_ERR(BASE "domain a.test b c\n", "t.conf:6: 'domain' takes 1 to 2 arguments");
    EXPECT_ERR(BASE "data-dir /a\ndata-dir /b\n", "t.conf:7: 'data-dir' given twice (first on line 6)");
    EXPECT_ERR(BASE "run-as -x\n", "t.conf:6: invalid user name");
    EXPECT_ERR(BASE "run-as a/b\n", "t.conf:6: invalid user name");
    EXPECT_ERR(BASE "log-level loud\n", "t.conf:6: unknown log level 'loud'");
    EXPECT_ERR(BASE "vrfy yes\n", "t.conf:6: vrfy: expected on or off");
    EXPECT_ERR(BASE "expn 1\n", "t.conf:6: expn: expected on or off");
    EXPECT_ERR(BASE "postmaster x\n", "t.conf:6: 'postmaster' given twice");
    EXPECT_ERR("postmaster nobody\n", "t.conf:1: invalid postmaster address 'nobody'");
    /* a peculiar word is quoted safely in the message */
    EXPECT_ERR(BASE "f\xc3\xa9o'\n", "t.conf:6: unknown directive 'f\\xc3\\xa9o\\x27'");
}

TEST(missing_required)
{
    EXPECT_ERR("listen 127.0.0.1:25 mx\ndomain a.test\npostmaster p@a.test\n",
               "t.conf:3: missing required directive 'hostname'");
    EXPECT_ERR("hostname h.test\ndomain a.test\npostmaster p@a.test\n",
               "missing required directive 'listen'");
    EXPECT_ERR("hostname h.test\nlisten 127.0.0.1:25 mx\npostmaster p@x.test\n",
               "missing required directive 'domain'");
    EXPECT_ERR("hostname h.test\nlisten 127.0.0.1:25 mx\ndomain a.test\n",
               "missing required directive 'postmaster'");
    EXPECT_ERR("", "t.conf:1: missing required directive");
    /* data-dir is required only by config_load (it can be overridden) */
    EXPECT_OK("hostname h.test\nlisten 127.0.0.1:25 mx\ndomain a.test\n"
              "postmaster p@remote.test\n");
}

TEST(listeners)
{
    struct config *cfg = parse(BASE "listen [0:0::1]:2526 mx\nlisten [::]:2527 submission\n");
    CHECK(cfg != NULL);
    if (cfg != NULL) {
        CHECK_EQ_STR(cfg->listeners[1].host, "::1");
        CHECK_EQ_STR(cfg->listeners[2].host, "::");
        config_free(cfg);
    }
    EXPECT_ERR(BASE "listen 127.0.0.1 mx\n", "t.conf:6: invalid listen address '127.0.0.1'");
    EXPECT_ERR(BASE "listen 127.0.0.1:0 mx\n", "t.conf:6: invalid port '0'");
    EXPECT_ERR(BASE "listen 127.0.0.1:65536 mx\n", "invalid port '65536'");
    EXPECT_ERR(BASE "listen 127.0.0.1:2x mx\n", "invalid port '2x'");
    EXPECT_ERR(BASE "listen 127.0.0.1: mx\n", "invalid port ''");
    EXPECT_ERR(BASE "listen 127.0.0.1:000025000 mx\n", "invalid port");
    EXPECT_ERR(BASE "listen ::1:25 mx\n", "t.conf:6: IPv6 listen address '::1:25' needs brackets");
    EXPECT_ERR(BASE "listen [::1:25 mx\n", "invalid listen address");
    EXPECT_ERR(BASE "listen []:25 mx\n", "invalid listen address");
    EXPECT_ERR(BASE "listen localhost:25 mx\n", "t.conf:6: listen address 'localhost' is not an IPv4 address");
    EXPECT_ERR(BASE "listen [1.2.3.4]:25 mx\n", "is not an IPv6 address");
    EXPECT_ERR(BASE "listen 127.0.0.1:26 relay\n", "t.conf:6: unknown listener role 'relay'");
    EXPECT_ERR(BASE "listen 127.0.0.1:2525 submission\n",
               "t.conf:6: listener 127.0.0.1:2525 collides with the one on line 2");
    EXPECT_ERR(BASE "listen 0.0.0.0:2525 submission\n", "t.conf:6: listener 0.0.0.0:2525 collides");
    EXPECT_ERR(BASE "listen [::1]:99 mx\nlisten [0::1]:99 mx\n", "t.conf:7: listener [::1]:99 collides with the one on line 6");
    EXPECT_ERR(BASE "listen [::]:99 mx\nlisten [::1]:99 mx\n", "t.conf:7: listener [::1]:99 collides");
    /* other port or other family: fine */
    EXPECT_OK(BASE "listen 127.0.0.2:2525 mx\nlisten [::]:2525 mx\nlisten 127.0.0.1:2526 mx\n");

    char text[8192];
    size_t n = (size_t)snprintf(text, sizeof(text), "%s", BASE);
    for (int i = 1; i < CONFIG_LISTENERS_MAX; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "listen 10.0.0.1:%d mx\n", i);
    EXPECT_OK(text);
    snprintf(text + n, sizeof(text) - n, "listen 10.0.0.2:1 mx\n");
    EXPECT_ERR(text, "too many listeners");
}

TEST(domains)
{
    EXPECT_ERR(BASE "domain -a.test\n", "t.conf:6: invalid domain name '-a.test'");
    EXPECT_ERR(BASE "domain a-.test\n", "invalid domain name");
    EXPECT_ERR(BASE "domain a..test\n", "invalid domain name");
    EXPECT_ERR(BASE "domain .a.test\n", "invalid domain name");
    EXPECT_ERR(BASE "domain a.test.\n", "invalid domain name");
    EXPECT_ERR(BASE "domain 10.0.0.1\n", "invalid domain name");
    EXPECT_ERR(BASE "domain [10.0.0.1]\n", "invalid domain name");
    EXPECT_ERR(BASE "domain a_b.test\n", "invalid domain name");
    char label[200];
    snprintf(label, sizeof(label), BASE "domain %064d.test\n", 0);
    EXPECT_ERR(label, "invalid domain name");
    snprintf(label, sizeof(label), BASE "domain %063d.test\n", 0);
    EXPECT_OK(label);
    /* 253 octets ok, 254 not */
    char longd[600], text[900];
    memset(longd, 0, sizeof(longd));
    for (int i = 0; i < 4; i++)
        memcpy(longd + i * 62, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.", 62);
    memcpy(longd + 248, "tests", 5);   /* 253 */
    snprintf(text, sizeof(text), BASE "domain %s\n", longd);
    EXPECT_OK(text);
    memcpy(longd + 248, "testss", 6);  /* 254 */
    snprintf(text, sizeof(text), BASE "domain %s\n", longd);
    EXPECT_ERR(text, "invalid domain name");
    EXPECT_OK(BASE "domain localhost\ndomain 1a.test\ndomain xn--bcher-kva.test\n");
    EXPECT_ERR(BASE "domain EXAMPLE.test\n", "t.conf:6: duplicate domain 'example.test' (first on line 3)");
    EXPECT_ERR(BASE "domain b.test catchall=pm@example.test\n", "t.conf:6: unknown domain option 'catchall=pm@example.test'");
    EXPECT_ERR(BASE "domain b.test catch-all=nobody\n", "t.conf:6: invalid catch-all 'nobody'");
    EXPECT_ERR(BASE "domain b.test catch-all=\n", "invalid catch-all ''");
    EXPECT_OK(BASE "domain b.test catch-all=someone@remote.test\n");
}

TEST(users_inline)
{
    EXPECT_OK(BASE "user a.b_c+d=e-f@example.test\nuser 0@example.test\n");
    EXPECT_ERR(BASE "user a/b@example.test\n", "t.conf:6: invalid user address 'a/b@example.test'");
    EXPECT_ERR(BASE "user .a@example.test\n", "t.conf:6: invalid user address");
    EXPECT_ERR(BASE "user a.@example.test\n", "invalid user address");
    EXPECT_ERR(BASE "user a..b@example.test\n", "invalid user address");
    EXPECT_ERR(BASE "user ..@example.test\n", "invalid user address");
    EXPECT_ERR(BASE "user a\"b@example.test\n", "invalid user address");
    EXPECT_ERR(BASE "user a%b@example.test\n", "invalid user address");
    EXPECT_ERR(BASE "user a!b@example.test\n", "invalid user address");
    EXPECT_ERR(BASE "user a@b@example.test\n", "invalid user address");
    EXPECT_ERR(BASE "user @example.test\n", "invalid user address");
    EXPECT_ERR(BASE "user example.test\n", "invalid user address");
    EXPECT_ERR(BASE "user a@\n", "invalid user address");
    char text[400];
    snprintf(text, sizeof(text), BASE "user %065d@example.test\n", 0);
    EXPECT_ERR(text, "longer than 64");
    snprintf(text, sizeof(text), BASE "user %064d@example.test\n", 0);
    EXPECT_OK(text);
    EXPECT_ERR(BASE "user PM@Example.Test\n", "t.conf:6: duplicate user 'pm@example.test' (first on line 5)");
    EXPECT_ERR(BASE "user a@other.test\n", "t.conf:6: user 'a@other.test' is not in a local domain");
    /* domain declared after the user: fine */
    EXPECT_OK(BASE "user a@late.test\ndomain late.test\n");
    EXPECT_ERR(BASE "user a@example.test plaintext\n", "t.conf:6: user 'a@example.test': unsupported password hash");
    EXPECT_ERR(BASE "user a@example.test $6$x:y\n", "t.conf:6: user 'a@example.test': password hash holds");
    EXPECT_OK(BASE "user a@example.test $6$salt$abcdef\n");
    /* the lowest line wins among end-of-file errors */
    EXPECT_ERR(BASE "user b@nowhere.test\nuser pm@example.test\n", "t.conf:6: user 'b@nowhere.test'");
    EXPECT_ERR(BASE "user pm@example.test\nuser b@nowhere.test\n", "t.conf:6: duplicate user");
}

TEST(aliases_inline)
{
    const char *forms[] = {
        "alias l@example.test a@example.test, b@example.test\n",
        "alias l@example.test a@example.test,b@example.test\n",
        "alias l@example.test a@example.test , b@example.test\n",
        "alias l@example.test a@example.test b@example.test\n",
        "alias l@example.test ,a@example.test,,b@example.test,\n",
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(*forms); i++) {
        char text[512];
        snprintf(text, sizeof(text), BASE "%s", forms[i]);
        struct config *cfg = parse(text);
        CHECK(cfg != NULL);
        if (cfg == NULL)
            continue;
        CHECK_EQ_INT(cfg->naliases, 1);
        CHECK_EQ_INT(cfg->aliases[0].ntargets, 2);
        CHECK_EQ_STR(cfg->aliases[0].targets[0], "a@example.test");
        CHECK_EQ_STR(cfg->aliases[0].targets[1], "b@example.test");
        CHECK_EQ_INT(cfg->aliases[0].line, 6);
        CHECK(cfg->aliases[0].in_config);
        config_free(cfg);
    }
    EXPECT_ERR(BASE "alias l@example.test ,\n", "t.conf:6: alias 'l@example.test' has no targets");
    EXPECT_ERR(BASE "alias l@example.test a@x.test # b@x.test\nfoo\n", "t.conf:7: unknown");
    EXPECT_ERR(BASE "alias l/x@example.test a@x.test\n", "t.conf:6: invalid alias name 'l/x@example.test'");
    EXPECT_ERR(BASE "alias l@example.test a@x.test,nobody\n", "t.conf:6: alias 'l@example.test': invalid target 'nobody'");
    EXPECT_ERR(BASE "alias l@example.test a\"b@x.test\n", "invalid target");
    EXPECT_ERR(BASE "alias l@example.test a@[1.2.3.4]\n", "invalid target");
    /* remote targets with atext are fine: forwarding */
    EXPECT_OK(BASE "alias l@example.test x!y%z@remote.test {a}@remote.test\n");
    EXPECT_ERR(BASE "alias l@example.test a@x.test\nalias L@EXAMPLE.TEST b@x.test\n",
               "t.conf:7: duplicate alias 'l@example.test' (first on line 6)");
    EXPECT_ERR(BASE "alias pm@example.test a@x.test\n", "t.conf:6: alias 'pm@example.test' has the name of the user on line 5");
    EXPECT_ERR(BASE "alias l@other.test a@x.test\n", "t.conf:6: alias 'l@other.test' is not in a local domain");
}

TEST(limits)
{
    struct config *cfg = parse(BASE
        "limit message-size 64K\n"
        "limit header-section 2m\n"
        "limit output-high-water 1M\n"
        "limit timeout-data 1h\n"
        "limit queue-lifetime 2d\n"
        "limit timeout-shutdown 0s\n"
        "limit retry-max 90m\n"
        "limit smtp-recipients 250\n"
        "limit smtp-text-line 1000\n");
    CHECK(cfg != NULL);
    if (cfg != NULL) {
        CHECK_EQ_INT(cfg->limits[LIM_MESSAGE_SIZE], 65536);
        CHECK_EQ_INT(cfg->limits[LIM_HEADER_SECTION], 2 * 1024 * 1024);
        CHECK_EQ_INT(cfg->limits[LIM_OUTPUT_HIGH_WATER], 1024 * 1024);
        CHECK_EQ_INT(cfg->limits[LIM_TIMEOUT_DATA], 3600);
        CHECK_EQ_INT(cfg->limits[LIM_QUEUE_LIFETIME], 2 * 86400);
        CHECK_EQ_INT(cfg->limits[LIM_TIMEOUT_SHUTDOWN], 0);
        CHECK_EQ_INT(cfg->limits[LIM_RETRY_MAX], 5400);
        CHECK_EQ_INT(cfg->limits[LIM_SMTP_RECIPIENTS], 250);
        CHECK_EQ_INT(cfg->limits[LIM_CONNECTIONS], limit_table[LIM_CONNECTIONS].def);
        config_free(cfg);
    }
    /* every limit accepts its min and max and refuses one beyond */
    for (int i = 0; i < LIM__COUNT; i++) {
        char text[512];
        const struct limit_def *d = &limit_table[i];
        snprintf(text, sizeof(text), BASE "limit %s %zu\n", d->name, d->min);
        if (i == LIM_RETRY_MAX)   /* must stay >= retry-min */
            snprintf(text, sizeof(text), BASE "limit retry-min 1\nlimit %s %zu\n",
                     d->name, d->min);
        EXPECT_OK(text);
        snprintf(text, sizeof(text), BASE "limit %s %zu\n", d->name, d->max);
        if (i == LIM_RETRY_MIN)
            snprintf(text, sizeof(text), BASE "limit retry-max %zu\nlimit %s %zu\n",
                     d->max, d->name, d->max);
        EXPECT_OK(text);
        snprintf(text, sizeof(text), BASE "limit %s %zu\n", d->name, d->max + 1);
        EXPECT_ERR(text, "t.conf:6: limit");
        EXPECT_ERR(text, "must be between");
        if (d->min > 0) {
            snprintf(text, sizeof(text), BASE "limit %s %zu\n", d->name, d->min - 1);
            EXPECT_ERR(text, "must be between");
        }
    }
    EXPECT_ERR(BASE "limit message-size 1K\n", "t.conf:6: limit 'message-size' must be between 65536 and 2147483648, not 1024");
    EXPECT_ERR(BASE "limit message-size 3G\n", "must be between");
    EXPECT_ERR(BASE "limit no-such 1\n", "t.conf:6: unknown limit 'no-such'");
    EXPECT_ERR(BASE "limit message-size 10X\n", "t.conf:6: limit 'message-size': invalid value '10X'");
    EXPECT_ERR(BASE "limit message-size 10s\n", "invalid value");
    EXPECT_ERR(BASE "limit message-size 10KB\n", "invalid value");
    EXPECT_ERR(BASE "limit message-size M\n", "invalid value");
    EXPECT_ERR(BASE "limit message-size -1\n", "invalid value");
    EXPECT_ERR(BASE "limit message-size +1\n", "invalid value");
    EXPECT_ERR(BASE "limit message-size 1.5M\n", "invalid value");
    EXPECT_ERR(BASE "limit message-size 99999999999999999999999\n", "invalid value");
    EXPECT_ERR(BASE "limit message-size 18014398509481984K\n", "invalid value");
    EXPECT_ERR(BASE "limit timeout-data 1M\n", "invalid value");
    EXPECT_ERR(BASE "limit timeout-data 1K\n", "invalid value");
    EXPECT_ERR(BASE "limit smtp-recipients 1K\n", "invalid value");
    EXPECT_ERR(BASE "limit smtp-recipients 200\nlimit smtp-recipients 300\n",
               "t.conf:7: limit 'smtp-recipients' given twice (first on line 6)");
    EXPECT_ERR(BASE "limit retry-min 100\nlimit retry-max 50\n",
               "t.conf:7: limit 'retry-min' (100) is above 'retry-max' (50)");
    EXPECT_ERR(BASE "limit message-size\n", "'limit' takes 2 arguments, not 1");
}

TEST(delimiter)
{
    struct config *cfg = parse(BASE "recipient-delimiter none\n");
    CHECK(cfg != NULL && cfg->recipient_delimiter[0] == '\0');
    config_free(cfg);
    cfg = parse(BASE "recipient-delimiter \"\"\n");
    CHECK(cfg != NULL && cfg->recipient_delimiter[0] == '\0');
    config_free(cfg);
    cfg = parse(BASE "recipient-delimiter +-=_~#$\n");
    CHECK(cfg != NULL && strcmp(cfg->recipient_delimiter, "+-=_~#$") == 0);
    config_free(cfg);
    EXPECT_ERR(BASE "recipient-delimiter +-=_~#$&\n", "t.conf:6: recipient-delimiter: at most 7 characters");
    EXPECT_ERR(BASE "recipient-delimiter @\n", "t.conf:6: recipient-delimiter: '@' is not allowed");
    EXPECT_ERR(BASE "recipient-delimiter .\n", "is not allowed");
    EXPECT_ERR(BASE "recipient-delimiter %\n", "is not allowed");
    EXPECT_ERR(BASE "recipient-delimiter a\n", "is not allowed");
    EXPECT_ERR(BASE "recipient-delimiter +/\n", "is not allowed");
    EXPECT_ERR(BASE "recipient-delimiter # comment\n", "'recipient-delimiter' takes 1 argument, not 0");
}

TEST(log_levels)
{
    const char *names[] = {"debug", "info", "warn", "error"};
    const int want[] = {LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERR};
    for (int i = 0; i < 4; i++) {
        char text[300];
        snprintf(text, sizeof(text), BASE "log-level %s\n", names[i]);
        struct config *cfg = parse(text);
        CHECK(cfg != NULL && cfg->log_level == want[i]);
        config_free(cfg);
    }
}

TEST(hostile_bytes)
{
    char text[8192];
    /* NUL in a line */
    static const char nul[] = BASE "domain a\0b.test\n";
    buf_reset(&err);
    CHECK(config_parse(nul, sizeof(nul) - 1, "t.conf", &err) == NULL);
    CHECK(strstr(buf_cstr(&err), "t.conf:6: line holds a NUL byte") != NULL);
    static const char nul_comment[] = BASE "# \0\n";
    buf_reset(&err);
    CHECK(config_parse(nul_comment, sizeof(nul_comment) - 1, "t.conf", &err) == NULL);
    CHECK(strstr(buf_cstr(&err), "t.conf:6: line holds a NUL byte") != NULL);
    /* control characters, even in comments */
    EXPECT_ERR(BASE "# bell \a\n", "t.conf:6: line holds a control character");
    EXPECT_ERR(BASE "vrfy on\x7f\n", "t.conf:6: line holds a control character");
    EXPECT_ERR(BASE "vrfy \ron\n", "t.conf:6: line holds a control character");
    EXPECT_ERR(BASE "vrfy on\x1b[2J\n", "control character");
    EXPECT_ERR(BASE "vrfy\von\n", "control character");
    /* CRLF, TAB, non-ASCII in a comment, no final newline: fine */
    EXPECT_OK("hostname h.test\r\nlisten\t127.0.0.1:25\tmx\r\ndomain a.test # caf\xc3\xa9\n"
              "postmaster p@a.test");
    /* '#' inside a word is not a comment */
    EXPECT_ERR(BASE "vrfy on#x\n", "t.conf:6: vrfy: expected on or off, not 'on#x'");
    /* 4096 bytes is the longest line */
    size_t n = (size_t)snprintf(text, sizeof(text), "%s#", BASE);
    memset(text + n, 'x', 4095);
    memcpy(text + n + 4095, "\n", 2);
    EXPECT_OK(text);
    memcpy(text + n + 4095, "x\n", 3);
    EXPECT_ERR(text, "t.conf:6: line longer than 4096 bytes");
    memcpy(text + n + 4095, "x", 2);   /* also without newline at the end */
    EXPECT_ERR(text, "t.conf:6: line longer than 4096 bytes");
    memcpy(text + n + 4095, "\r\n", 3); /* the CR of CRLF does not count */
    EXPECT_OK(text);
    /* a line of 2048 one-letter words */
    n = (size_t)snprintf(text, sizeof(text), "%s", BASE);
    for (int i = 0; i < 2047; i++) {
        text[n++] = 'x';
        text[n++] = ' ';
    }
    memcpy(text + n, "y\n", 3);
    EXPECT_ERR(text, "t.conf:6: unknown directive 'x'");
    /* an alias with as many targets as fit on a line */
    n = (size_t)snprintf(text, sizeof(text), BASE "alias l@example.test");
    while (n < 4000)
        n += (size_t)snprintf(text + n, sizeof(text) - n, " ,a@b.test");
    memcpy(text + n, "\n", 2);
    EXPECT_OK(text);
}

/* Every prefix and every single-byte change of a valid file: no crash, no
 * leak (ASan), and an error always names t.conf and a line. */
TEST(prefixes_and_mutations)
{
    const char *text =
        "hostname h.test\n"
        "data-dir d\n"
        "listen [::1]:25 mx\n"
        "domain a.test catch-all=p@a.test\n"
        "user p@a.test $6$s$h\n"
        "alias l@a.test p@a.test, x@r.test\n"
        "postmaster p@a.test\n"
        "recipient-delimiter +\n"
        "limit message-size 1M\n";
    size_t len = strlen(text);
    char *copy = malloc(len);
    for (size_t i = 0; i <= len; i++) {
        buf_reset(&err);
        struct config *cfg = config_parse(text, i, "t.conf", &err);
        if (cfg == NULL)
            CHECK(strncmp(buf_cstr(&err), "t.conf:", 7) == 0);
        config_free(cfg);
    }
    static const char repl[] = {'\0', '\n', ' ', '#', '@', ',', ':', '[', 'A', '\xff', '\r'};
    for (size_t i = 0; i < len; i++)
        for (size_t j = 0; j < sizeof(repl); j++) {
            memcpy(copy, text, len);
            copy[i] = repl[j];
            buf_reset(&err);
            struct config *cfg = config_parse(copy, len, "t.conf", &err);
            if (cfg == NULL)
                CHECK(strncmp(buf_cstr(&err), "t.conf:", 7) == 0);
            else
                CHECK(cfg->hostname != NULL && cfg->postmaster != NULL &&
                      cfg->ndomains > 0 && cfg->nlisteners > 0);
            config_free(cfg);
        }
    free(copy);
}

TEST(match_order)
{
    struct config *cfg = parse(
        "hostname h.test\nlisten 127.0.0.1:25 mx\n"
        "domain a.test\ndomain c.test catch-all=ca@a.test\n"
        "user u@a.test\nuser u+x@a.test\nuser ca@a.test\nuser pm@a.test\n"
        "alias al@a.test u@a.test\n"
        "postmaster pm@a.test\n"
        "recipient-delimiter +-\n");
    CHECK(cfg != NULL);
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", buf_cstr(&err));
        return;
    }
    struct cfg_match m;
#define M(l, d) config_match(cfg, l, strlen(l), d, strlen(d), &m)
    M("u", "other.test");
    CHECK_EQ_INT(m.kind, CFG_MATCH_NOT_LOCAL);
    CHECK(m.domain == NULL);
    M("u%x", "a.test");
    CHECK_EQ_INT(m.kind, CFG_MATCH_ROUTING);
    M("x!u", "A.TEST");
    CHECK_EQ_INT(m.kind, CFG_MATCH_ROUTING);
    M("u@x", "a.test");
    CHECK_EQ_INT(m.kind, CFG_MATCH_ROUTING);
    M("AL", "a.test");
    CHECK_EQ_INT(m.kind, CFG_MATCH_ALIAS);
    CHECK(m.alias != NULL && strcmp(m.alias->name, "al@a.test") == 0);
    M("U", "a.test");
    CHECK_EQ_INT(m.kind, CFG_MATCH_USER);
    CHECK(m.detail == NULL);
    /* exact user wins over the delimiter */
    M("u+x", "a.test");
    CHECK_EQ_INT(m.kind, CFG_MATCH_USER);
    CHECK_EQ_STR(m.user->address, "u+x@a.test");
    M("u+y+z", "a.test");
    CHECK_EQ_INT(m.kind, CFG_MATCH_USER);
    CHECK_EQ_STR(m.user->address, "u@a.test");
    CHECK(m.detail != NULL && m.detail_len == 3 && memcmp(m.detail, "y+z", 3) == 0);
    M("u-", "a.test");
    CHECK_EQ_INT(m.kind, CFG_MATCH_USER);
    CHECK(m.detail_len == 0);
    M("al-list", "a.test");
    CHECK_EQ_INT(m.kind, CFG_MATCH_ALIAS);
    /* only the first delimiter: "zz-u+x" is "zz", unknown */
    M("zz-u+x", "a.test");
    CHECK_EQ_INT(m.kind, CFG_MATCH_NONE);
    M("+u", "a.test");
    CHECK_EQ_INT(m.kind, CFG_MATCH_NONE);
    M("PostMaster", "a.test");
    CHECK_EQ_INT(m.kind, CFG_MATCH_POSTMASTER);
    CHECK_EQ_STR(m.target, "pm@a.test");
    M("postmaster", "c.test");
    CHECK_EQ_INT(m.kind, CFG_MATCH_POSTMASTER);
    M("anyone", "c.test");
    CHECK_EQ_INT(m.kind, CFG_MATCH_CATCH_ALL);
    CHECK_EQ_STR(m.target, "ca@a.test");
    M("anyone", "a.test");
    CHECK_EQ_INT(m.kind, CFG_MATCH_NONE);
    CHECK(m.domain != NULL && strcmp(m.domain->name, "a.test") == 0);
    config_match(cfg, "u\0x", 3, "a.test", 6, &m);
    CHECK_EQ_INT(m.kind, CFG_MATCH_NONE);
    char big[200];
    memset(big, 'u', sizeof(big));
    config_match(cfg, big, sizeof(big), "a.test", 6, &m);
    CHECK_EQ_INT(m.kind, CFG_MATCH_NONE);
#undef M
    config_free(cfg);
}

/* ---- config_load ---- */

static char tmpdir[64];

static void write_file(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    CHECK(fs_write_file_atomic(path, text, strlen(text), 0600) == 0);
}

static struct config *load(const char *name, bool refs)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    struct config_overrides ov = {.data_dir = NULL, .no_ref_check = !refs};
    buf_reset(&err);
    return config_load(path, &ov, &err);
}

static int load_err_at(const char *conf, const char *want, int line)
{
    write_file("c.conf", conf);
    struct config *cfg = load("c.conf", true);
    if (cfg != NULL) {
        fprintf(stderr, "%d: expected error '%s', load succeeded\n", line, want);
        config_free(cfg);
        return 0;
    }
    if (strstr(buf_cstr(&err), want) == NULL) {
        fprintf(stderr, "%d: expected error '%s', got '%s'\n", line, want,
                buf_cstr(&err));
        return 0;
    }
    return 1;
}
#define LOAD_ERR(conf, want) CHECK(load_err_at((conf), (want), __LINE__))

static int load_ok_at(const char *conf, int line)
{
    write_file("c.conf", conf);
    struct config *cfg = load("c.conf", true);
    if (cfg == NULL) {
        fprintf(stderr, "%d: unexpected error '%s'\n", line, buf_cstr(&err));
        return 0;
    }
    config_free(cfg);
    return 1;
}
#define LOAD_OK(conf) CHECK(load_ok_at((conf), __LINE__))

TEST(embedded_default)
{
    CHECK(strstr(config_embedded_default, "hostname mail.example.test\n") != NULL);
    struct config *cfg = parse(config_embedded_default);
    CHECK(cfg != NULL);
    config_free(cfg);

    /* relative data-dir is made absolute against the current directory */
    char old[4096];
    CHECK(getcwd(old, sizeof(old)) != NULL);
    CHECK(chdir(tmpdir) == 0);
    buf_reset(&err);
    cfg = config_load(NULL, NULL, &err);
    CHECK(cfg != NULL);
    if (cfg != NULL) {
        char want[256];
        snprintf(want, sizeof(want), "%s/estafeta-data", tmpdir);
        CHECK_EQ_STR(cfg->source, "(embedded default)");
        CHECK_EQ_STR(cfg->data_dir, want);
        snprintf(want, sizeof(want), "%s/estafeta-data/users", tmpdir);
        CHECK_EQ_STR(cfg->users_file, want);
        CHECK_EQ_INT(cfg->nlisteners, 5);
        CHECK_EQ_INT(cfg->listeners[3].role, ROLE_POP3);
        CHECK_EQ_INT(cfg->listeners[4].role, ROLE_POP3S);
        CHECK_EQ_INT(cfg->listeners[0].port, 2525);
        CHECK_EQ_INT(cfg->listeners[0].role, ROLE_MX);
        CHECK_EQ_INT(cfg->listeners[1].port, 2587);
        CHECK_EQ_INT(cfg->listeners[1].role, ROLE_SUBMISSION);
        CHECK_EQ_INT(cfg->listeners[2].port, 2465);
        CHECK_EQ_INT(cfg->listeners[2].role, ROLE_SUBMISSIONS);
        snprintf(want, sizeof(want), "%s/estafeta-data/public/submit.sock", tmpdir);
        CHECK_EQ_STR(cfg->local_socket, want);
        CHECK(cfg->sender_login_match);
        CHECK(config_user(cfg, "demo@example.test", 17) != NULL);
        CHECK(config_alias(cfg, "team@example.test", 17) != NULL);
        CHECK_EQ_STR(cfg->recipient_delimiter, "+");
        config_free(cfg);
    }
    /* the override wins, and is made absolute too */
    struct config_overrides ov = {.data_dir = "./other//"};
    buf_reset(&err);
    cfg = config_load(NULL, &ov, &err);
    CHECK(cfg != NULL);
    if (cfg != NULL) {
        char want[256];
        snprintf(want, sizeof(want), "%s/other", tmpdir);
        CHECK_EQ_STR(cfg->data_dir, want);
        config_free(cfg);
    }
    CHECK(chdir(old) == 0);
}

TEST(load_files)
{
    char conf[1024];
    snprintf(conf, sizeof(conf),
             "hostname h.test\ndata-dir %s\nlisten 127.0.0.1:25 mx\n"
             "domain a.test\nusers-file users\naliases-file sub/aliases\n"
             "user inl@a.test\npostmaster pm@a.test\n"
             "alias cfg@a.test list@a.test\n", tmpdir);
    CHECK(fs_mkdir_p(tmpdir, 0700) == 0);
    char sub[128];
    snprintf(sub, sizeof(sub), "%s/sub", tmpdir);
    CHECK(fs_mkdir_p(sub, 0700) == 0);
    write_file("users", "# users\n\npm@a.test:\nU1@A.test:$6$s$h:extra:fields\n");
    write_file("sub/aliases", "# aliases\nlist@a.test: u1@a.test, inl@a.test # c\n"
                              "  fwd@a.test :someone@remote.test\n");
    write_file("c.conf", conf);
    struct config *cfg = load("c.conf", true);
    CHECK(cfg != NULL);
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", buf_cstr(&err));
        return;
    }
    CHECK_EQ_INT(cfg->nusers, 3);
    const struct cfg_user *u = config_user(cfg, "u1@a.test", 9);
    CHECK(u != NULL && !u->in_config && u->line == 4 &&
          strcmp(u->password_hash, "$6$s$h") == 0);
    u = config_user(cfg, "pm@a.test", 9);
    CHECK(u != NULL && u->password_hash == NULL);
    CHECK(config_user(cfg, "inl@a.test", 10)->in_config);
    CHECK_EQ_INT(cfg->naliases, 3);
    const struct cfg_alias *a = config_alias(cfg, "list@a.test", 11);
    CHECK(a != NULL && a->ntargets == 2 && !a->in_config && a->line == 2);
    a = config_alias(cfg, "fwd@a.test", 10);
    CHECK(a != NULL && a->ntargets == 1 && strcmp(a->targets[0], "someone@remote.test") == 0);
    char want[256];
    snprintf(want, sizeof(want), "%s/sub/aliases", tmpdir);
    CHECK_EQ_STR(cfg->aliases_file, want);
    config_free(cfg);

    /* errors name the file they are in */
    write_file("users", "pm@a.test:\nbad\n");
    cfg = load("c.conf", true);
    snprintf(want, sizeof(want), "%s/users:2: expected address:hash", tmpdir);
    CHECK(cfg == NULL && strcmp(buf_cstr(&err), want) == 0);
    write_file("users", "pm@a.test:\ninl@a.test:\n");
    cfg = load("c.conf", true);
    snprintf(want, sizeof(want), "%s/users:2: duplicate user 'inl@a.test' (first at %s/c.conf:7)",
             tmpdir, tmpdir);
    CHECK(cfg == NULL && strcmp(buf_cstr(&err), want) == 0);
    write_file("users", "pm@a.test:\nu1@a.test:\ncfg@a.test:\n");
    cfg = load("c.conf", true);
    CHECK(cfg == NULL && strstr(buf_cstr(&err), "/users:3: user 'cfg@a.test' has the name of an alias") != NULL);
    write_file("users", "pm@a.test:\nu1@a.test:\n");
    write_file("sub/aliases", "list@a.test: u1@a.test\nlist@a.test: pm@a.test\n");
    cfg = load("c.conf", true);
    CHECK(cfg == NULL && strstr(buf_cstr(&err), "/sub/aliases:2: duplicate alias 'list@a.test' (first at ") != NULL);
    write_file("sub/aliases", "list@a.test: u1@a.test\ncfg@a.test: pm@a.test\n");
    cfg = load("c.conf", true);
    CHECK(cfg == NULL && strstr(buf_cstr(&err), "/sub/aliases:2: duplicate alias 'cfg@a.test'") != NULL);
    write_file("sub/aliases", "list@a.test: u1@a.test\nu1@a.test: pm@a.test\n");
    cfg = load("c.conf", true);
    CHECK(cfg == NULL && strstr(buf_cstr(&err), "/sub/aliases:2: alias 'u1@a.test' has the name of a user") != NULL);
    write_file("sub/aliases", "list@a.test u1@a.test\n");
    cfg = load("c.conf", true);
    CHECK(cfg == NULL && strstr(buf_cstr(&err), "/sub/aliases:1: expected 'name: target, target'") != NULL);
    write_file("sub/aliases", "list@a.test:\n");
    cfg = load("c.conf", true);
    CHECK(cfg == NULL && strstr(buf_cstr(&err), "/sub/aliases:1: alias 'list@a.test' has no targets") != NULL);
    write_file("sub/aliases", "list@b.test: u1@a.test\n");
    cfg = load("c.conf", true);
    CHECK(cfg == NULL && strstr(buf_cstr(&err), "/sub/aliases:1: alias 'list@b.test' is not in a local domain") != NULL);
    write_file("sub/aliases", "list@a.test: u1@a.test\n\x01\n");
    cfg = load("c.conf", true);
    CHECK(cfg == NULL && strstr(buf_cstr(&err), "/sub/aliases:2: line holds a control character") != NULL);

    /* a missing users file is empty; a missing aliases file is an error */
    snprintf(want, sizeof(want), "%s/users", tmpdir);
    CHECK(unlink(want) == 0);
    write_file("sub/aliases", "list@a.test: inl@a.test\n");
    snprintf(conf, sizeof(conf),
             "hostname h.test\ndata-dir %s\nlisten 127.0.0.1:25 mx\n"
             "domain a.test\nusers-file users\naliases-file sub/aliases\n"
             "user inl@a.test\npostmaster inl@a.test\n", tmpdir);
    LOAD_OK(conf);
    snprintf(want, sizeof(want), "%s/sub/aliases", tmpdir);
    CHECK(unlink(want) == 0);
    LOAD_ERR(conf, "/sub/aliases: cannot read: No such file or directory");

    /* unreadable main file, no data-dir */
    cfg = load("nonexistent.conf", true);
    CHECK(cfg == NULL && strstr(buf_cstr(&err), "nonexistent.conf: cannot read") != NULL);
    LOAD_ERR("hostname h.test\nlisten 127.0.0.1:25 mx\ndomain a.test\n"
             "postmaster p@r.test\n", "c.conf: no data-dir");
}

TEST(cross_references)
{
    char head[512];
    snprintf(head, sizeof(head),
             "hostname h.test\ndata-dir %s\nlisten 127.0.0.1:25 mx\n"
             "domain a.test\nuser u@a.test\n", tmpdir);
    char conf[2048];
#define C(tail) (snprintf(conf, sizeof(conf), "%s%s", head, tail), conf)
    LOAD_OK(C("postmaster u@a.test\n"));
    LOAD_OK(C("postmaster someone@remote.test\n"));
    LOAD_OK(C("postmaster u+pm@a.test\n"));
    LOAD_ERR(C("postmaster x@a.test\n"),
             "c.conf:6: postmaster 'x@a.test': target 'x@a.test' does not resolve");
    LOAD_ERR(C("postmaster postmaster@a.test\n"), "c.conf:6: postmaster 'postmaster@a.test': target 'postmaster@a.test' loops");
    LOAD_ERR(C("postmaster u@a.test\nalias l@a.test u@a.test, nobody@a.test\n"),
             "c.conf:7: alias 'l@a.test': target 'nobody@a.test' does not resolve");
    LOAD_ERR(C("postmaster u@a.test\nalias l@a.test x%y@a.test\n"),
             "c.conf:7: alias 'l@a.test': target 'x%y@a.test' holds a routing character");
    /* nested: the error names the alias holding the bad target */
    LOAD_ERR(C("postmaster u@a.test\nalias l@a.test m@a.test\nalias m@a.test zz@a.test\n"),
             "c.conf:8: alias 'm@a.test': target 'zz@a.test' does not resolve");
    LOAD_ERR(C("postmaster u@a.test\nalias l@a.test m@a.test\nalias m@a.test l@a.test\n"),
             "makes a loop");
    LOAD_ERR(C("postmaster u@a.test\nalias l@a.test l@a.test\n"),
             "c.conf:7: alias 'l@a.test': target 'l@a.test' makes a loop");
    LOAD_ERR(C("postmaster l@a.test\nalias l@a.test u@a.test, postmaster@a.test\n"), "loop");
    /* a target reached through postmaster@ or a catch-all says so */
    LOAD_ERR(C("postmaster x@a.test\nalias l@a.test postmaster@a.test\n"),
             "c.conf:7: alias 'l@a.test': through 'postmaster@a.test': target 'x@a.test' does not resolve");
    /* catch-all */
    LOAD_OK(C("postmaster u@a.test\ndomain b.test catch-all=u@a.test\n"));
    LOAD_OK(C("postmaster u@a.test\ndomain b.test catch-all=x@remote.test\n"));
    LOAD_OK(C("postmaster u@a.test\ndomain b.test catch-all=u@b.test\nuser u@b.test\n"));
    LOAD_ERR(C("postmaster u@a.test\ndomain b.test catch-all=x@b.test\n"),
             "c.conf:7: catch-all of domain 'b.test': target 'x@b.test' loops");
    LOAD_ERR(C("postmaster u@a.test\ndomain b.test catch-all=x@a.test\n"),
             "c.conf:7: catch-all of domain 'b.test': target 'x@a.test' does not resolve");
    /* an alias target may rely on a catch-all or the delimiter */
    LOAD_OK(C("postmaster u@a.test\ndomain b.test catch-all=u@a.test\nalias l@a.test any@b.test, u+tag@a.test\n"));
    /* depth: a chain of alias-depth aliases is fine, one more is not */
    LOAD_OK(C("postmaster u@a.test\nlimit alias-depth 3\n"
              "alias a1@a.test a2@a.test\nalias a2@a.test a3@a.test\nalias a3@a.test u@a.test\n"));
    LOAD_ERR(C("postmaster u@a.test\nlimit alias-depth 3\n"
               "alias a1@a.test a2@a.test\nalias a2@a.test a3@a.test\nalias a3@a.test a4@a.test\n"
               "alias a4@a.test u@a.test\n"), "alias-depth (3)");
    /* reaching an alias through the postmaster counts one more level */
    LOAD_ERR(C("postmaster a1@a.test\nlimit alias-depth 2\n"
               "alias a1@a.test a2@a.test\nalias a2@a.test u@a.test\n"),
             "c.conf:6: postmaster 'a1@a.test': reaching 'a1@a.test' takes more levels");
    /* the check can be skipped (estafeta user) */
    write_file("c.conf", C("postmaster x@a.test\n"));
    struct config *cfg = load("c.conf", false);
    CHECK(cfg != NULL);
    if (cfg != NULL) {
        buf_reset(&err);
        CHECK(config_check_refs(cfg, &err) == -1);
        CHECK(strstr(buf_cstr(&err), "does not resolve") != NULL);
        config_free(cfg);
    }
#undef C
}

/* Many aliases sharing targets: the check stays linear (would take
 * forever if every path were walked). */
TEST(cross_references_wide)
{
    struct buf text;
    buf_init(&text, 1 << 20);
    buf_appendf(&text, "hostname h.test\ndata-dir %s\nlisten 127.0.0.1:25 mx\n"
                "domain a.test\nuser u@a.test\npostmaster u@a.test\n", tmpdir);
    for (int level = 0; level < 9; level++) {
        buf_appendf(&text, "alias l%d@a.test", level);
        for (int k = 0; k < 50; k++)
            buf_appendf(&text, " l%d@a.test", level + 1);
        buf_appendf(&text, "\n");
    }
    buf_appendf(&text, "alias l9@a.test u@a.test\n");
    LOAD_OK(buf_cstr(&text));
    buf_free(&text);
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Outbound delivery: routes, TLS policy, resolvers (config_relay.h). */
TEST(relay_directives)
{
    struct config *cfg = parse(BASE
        "route * [smtp.provider.example]:587 tls=verify auth=me@provider.example "
        "password-file=/etc/estafeta/pw\n"
        "route Example.ORG mx tls=encrypt\n"
        "route lit.test [2001:db8::1]:2525\n"
        "route host.test relay.host.test:26\n"
        "relay-tls none\nrelay-tls-ca ca.pem\n"
        "dns-resolver 127.0.0.1@5353 ::1 [::1]@53\n"
        "dns-trust-anchor /usr/share/dns/root.key\n"
        "mx-port 2525\netrn-networks 10.0.0.0/8 ::1/128\n");
    CHECK(cfg != NULL);
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", buf_cstr(&err));
        return;
    }
    CHECK_EQ_INT((int)cfg->nroutes, 4);
    const struct cfg_route *r = config_route_find(cfg, "anything.test");
    CHECK(r != NULL && strcmp(r->domain, "*") == 0);
    if (r != NULL) {
        CHECK_EQ_STR(r->host, "smtp.provider.example");
        CHECK(r->literal);
        CHECK_EQ_INT(r->port, 587);
        CHECK_EQ_INT(r->tls, TLS_POLICY_VERIFY);
        CHECK_EQ_STR(r->auth_user, "me@provider.example");
    }
    r = config_route_find(cfg, "example.org");
    CHECK(r != NULL && r->host == NULL && r->tls == TLS_POLICY_ENCRYPT && r->tls_set);
    r = config_route_find(cfg, "lit.test");
    CHECK(r != NULL && r->literal && r->port == 2525 && strcmp(r->host, "2001:db8::1") == 0);
    r = config_route_find(cfg, "host.test");
    CHECK(r != NULL && !r->literal && r->port == 26 && !r->tls_set);
    CHECK_EQ_INT(cfg->relay_tls, TLS_POLICY_NONE);
    CHECK_EQ_INT((int)cfg->ndns_servers, 3);
    CHECK_EQ_STR(cfg->dns_servers[0], "127.0.0.1@5353");
    CHECK_EQ_STR(cfg->dns_servers[1], "::1@53");
    CHECK_EQ_STR(cfg->dns_servers[2], "::1@53");
    CHECK_EQ_INT(cfg->mx_port, 2525);
    CHECK(config_etrn_peer(cfg, "10.1.2.3"));
    CHECK(config_etrn_peer(cfg, "::1"));
    CHECK(!config_etrn_peer(cfg, "192.0.2.1"));
    config_free(cfg);

    /* defaults */
    cfg = parse(BASE);
    CHECK(cfg != NULL);
    if (cfg != NULL) {
        CHECK_EQ_INT(cfg->relay_tls, TLS_POLICY_MAY);
        CHECK_EQ_INT(cfg->mx_port, 25);
        CHECK(config_route_find(cfg, "x.test") == NULL);
        CHECK(!config_etrn_peer(cfg, "127.0.0.1"));
        config_free(cfg);
    }

    EXPECT_ERR(BASE "route example.org 192.0.2.1\n", "in brackets");
    EXPECT_ERR(BASE "route example.org [192.0.2.1]:0\n", "invalid port");
    EXPECT_ERR(BASE "route bad_domain mx\n", "invalid route domain");
    EXPECT_ERR(BASE "route x.test mx tls=sometimes\n", "tls=none|may|encrypt|verify");
    EXPECT_ERR(BASE "route x.test mx auth=u password-file=f\n", "smarthost");
    EXPECT_ERR(BASE "route x.test h.test auth=u\n", "go together");
    EXPECT_ERR(BASE "route x.test h.test tls=none auth=u password-file=f\n", "plaintext");
    EXPECT_ERR(BASE "route x.test h.test bogus=1\n", "unknown or repeated route option");
    EXPECT_ERR(BASE "route x.test h.test\nroute X.test mx\n", "given twice");
    EXPECT_ERR(BASE "relay-tls maybe\n", "relay-tls must be");
    EXPECT_ERR(BASE "dns-resolver dns.example\n", "invalid resolver");
    EXPECT_ERR(BASE "dns-resolver 127.0.0.1@99999\n", "invalid resolver");
    EXPECT_ERR(BASE "mx-port 0\n", "invalid mx-port");
    EXPECT_ERR(BASE "etrn-networks 10.0.0.0/33\n", "prefix");
}

int main(void)
{
    buf_init(&err, 4096);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/estafeta-test-config-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    RUN(minimal_and_defaults);
    RUN(every_directive);
    RUN(errors_name_file_and_line);
    RUN(missing_required);
    RUN(listeners);
    RUN(domains);
    RUN(users_inline);
    RUN(aliases_inline);
    RUN(limits);
    RUN(delimiter);
    RUN(log_levels);
    RUN(hostile_bytes);
    RUN(prefixes_and_mutations);
    RUN(match_order);
    RUN(embedded_default);
    RUN(load_files);
    RUN(cross_references);
    RUN(cross_references_wide);
    RUN(relay_directives);
    buf_free(&err);
    if (nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return harness_done("test_config");
}
