/*
 * Unit tests for relay/dns: host sorting, name checks, and live lookups
 * through libunbound against tests/integration/dnsserver.py, run as a child
 * process on loopback (the working directory is the repository root).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "harness.h"
#include "lib/buf.h"
#include "relay/dns.h"

/* ---- dns_hosts_sort ---- */

static uint32_t xorshift(void *arg)
{
    uint32_t *s = arg;
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static uint32_t zero_rand(void *arg)
{
    (void)arg;
    return 0;
}

TEST(sort_by_pref_shuffles_equals)
{
    static const unsigned prefs[] = {10, 10, 10, 20, 20, 5, 30, 10};
    enum { N = sizeof prefs / sizeof prefs[0] };
    char names[N][4];
    uint32_t seed = 12345;
    int first_of_10[N] = {0};   /* which pref-10 host came first, counts */
    bool orders_differ = false;
    char first_order[N + 1] = "";
    for (int round = 0; round < 200; round++) {
        struct dns_host h[N];
        memset(h, 0, sizeof h);
        for (int i = 0; i < N; i++) {
            snprintf(names[i], sizeof names[i], "%c", 'a' + i);
            h[i].name = names[i];
            h[i].pref = prefs[i];
        }
        dns_hosts_sort(h, N, xorshift, &seed);
        char order[N + 1];
        bool seen[N] = {false};
        for (int i = 0; i < N; i++) {
            if (i > 0)
                CHECK(h[i - 1].pref <= h[i].pref);
            int idx = h[i].name[0] - 'a';
            CHECK(idx >= 0 && idx < N);
            if (idx < 0 || idx >= N)
                return;
            CHECK(!seen[idx]);
            seen[idx] = true;
            CHECK_EQ_INT(h[i].pref, prefs[idx]);   /* pairs kept together */
            order[i] = h[i].name[0];
        }
        order[N] = '\0';
        CHECK_EQ_STR(h[0].name, "f");   /* the single pref 5 */
        CHECK_EQ_STR(h[N - 1].name, "g");   /* the single pref 30 */
        first_of_10[h[1].name[0] - 'a']++;
        if (round == 0)
            memcpy(first_order, order, sizeof order);
        else if (strcmp(order, first_order) != 0)
            orders_differ = true;
    }
    CHECK(orders_differ);
    /* Each of the four pref-10 hosts (a, b, c, h) leads sometimes. */
    CHECK(first_of_10[0] > 20);
    CHECK(first_of_10[1] > 20);
    CHECK(first_of_10[2] > 20);
    CHECK(first_of_10[7] > 20);
    CHECK_EQ_INT(first_of_10[0] + first_of_10[1] + first_of_10[2] +
                     first_of_10[7], 200);
}

TEST(sort_equal_keys_keep_order)
{
    struct dns_host h[5] = {
        {.name = "a", .pref = 20}, {.name = "b", .pref = 10},
        {.name = "c", .pref = 20}, {.name = "d", .pref = 10},
        {.name = "e", .pref = 0},
    };
    dns_hosts_sort(h, 5, zero_rand, NULL);
    CHECK_EQ_STR(h[0].name, "e");
    CHECK_EQ_STR(h[1].name, "b");
    CHECK_EQ_STR(h[2].name, "d");
    CHECK_EQ_STR(h[3].name, "a");
    CHECK_EQ_STR(h[4].name, "c");
    dns_hosts_sort(h, 0, zero_rand, NULL);
    dns_hosts_sort(h, 1, zero_rand, NULL);
    CHECK_EQ_STR(h[0].name, "e");
    /* Extreme preferences compare correctly. */
    struct dns_host x[3] = {{.name = "max", .pref = 65535},
                            {.name = "zero", .pref = 0},
                            {.name = "mid", .pref = 32768}};
    dns_hosts_sort(x, 3, zero_rand, NULL);
    CHECK_EQ_STR(x[0].name, "zero");
    CHECK_EQ_STR(x[1].name, "mid");
    CHECK_EQ_STR(x[2].name, "max");
}

/* ---- names ---- */

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

TEST(name_validation)
{
    static const char *const good[] = {
        "example.com", "EXAMPLE.Com.", "a", "a.b", "1.2.3.4", "xn--bcher-kva.example",
        "mx-1.example.net", "0a.9z", "localhost",
    };
    static const char *const bad[] = {
        "", ".", "..", "a..b", ".a", "a.b..", "-a.com", "a-.com", "a.-b",
        "a.b-", "a_b.com", "a b", "a\tb", "exa\nmple.com", "\xc3\xa9.com",
        "[1.2.3.4]", "a.com/", "user@a.com", "a,b", "*.example.com",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (!dns_name_valid(good[i]))
            fprintf(stderr, "should be valid: \"%s\"\n", good[i]);
        CHECK(dns_name_valid(good[i]));
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (dns_name_valid(bad[i]))
            fprintf(stderr, "should be invalid: \"%s\"\n", bad[i]);
        CHECK(!dns_name_valid(bad[i]));
    }
    CHECK(!dns_name_valid(NULL));
    /* Label length 63 is the maximum. */
    char *l63 = repeat('a', 63), *l64 = repeat('a', 64);
    char buf[600];
    snprintf(buf, sizeof buf, "%s.com", l63);
    CHECK(dns_name_valid(buf));
    snprintf(buf, sizeof buf, "%s.com", l64);
    CHECK(!dns_name_valid(buf));
    /* 253 octets is the maximum (four labels of 63 minus 1, plus dots). */
    snprintf(buf, sizeof buf, "%s.%s.%s.%.61s", l63, l63, l63, l63);
    CHECK_EQ_INT(strlen(buf), 253);
    CHECK(dns_name_valid(buf));
    strcat(buf, ".");
    CHECK(dns_name_valid(buf));   /* trailing dot does not count */
    snprintf(buf, sizeof buf, "%s.%s.%s.%.62s", l63, l63, l63, l63);
    CHECK_EQ_INT(strlen(buf), 254);
    CHECK(!dns_name_valid(buf));
    free(l63);
    free(l64);
    /* A huge string is rejected without reading it all. */
    char *huge = repeat('a', 100000);
    CHECK(!dns_name_valid(huge));
    free(huge);
    CHECK_EQ_STR(dns_status_name(DNS_NULLMX), "nullmx");
    CHECK_EQ_STR(dns_status_name(DNS_BOGUS), "bogus");
}

/* ---- the test DNS server ---- */

static pid_t server_pid = -1;
static int server_port;
static char zone_path[] = "/tmp/estafeta-test-dns-zone-XXXXXX";
static char port_path[64];

/* Every name the live tests use. */
static const char zone_json[] =
    "{\n"
    " \"example.net\": {\"MX\": [[20, \"mx2.example.net\"], [10, \"MX1.Example.Net.\"]]},\n"
    " \"mx1.example.net\": {\"A\": [\"127.0.0.2\"], \"AAAA\": [\"::1\", \"2001:db8::2\"]},\n"
    " \"mx2.example.net\": {\"A\": [\"127.0.0.3\", \"127.0.0.4\"]},\n"
    " \"implicit.test\": {\"A\": [\"127.0.0.5\"], \"AAAA\": [\"2001:db8::5\"]},\n"
    " \"nullmx.test\": {\"MX\": [[0, \".\"]], \"A\": [\"127.0.0.6\"]},\n"
    " \"mixed.test\": {\"MX\": [[0, \".\"], [10, \"mx2.example.net\"]]},\n"
    " \"broken.test\": \"SERVFAIL\",\n"
    " \"refused.test\": \"REFUSED\",\n"
    " \"slow.test\": \"TIMEOUT\",\n"
    " \"dangling.test\": {\"MX\": [[10, \"gone.test\"], [20, \"gone2.test\"]]},\n"
    " \"partial.test\": {\"MX\": [[10, \"mxbad.test\"], [20, \"mx2.example.net\"]]},\n"
    " \"mxbad.test\": {\"A\": \"SERVFAIL\", \"AAAA\": \"SERVFAIL\"},\n"
    " \"alltemp.test\": {\"MX\": [[10, \"mxbad.test\"], [20, \"gone.test\"]]},\n"
    " \"halfv6.test\": {\"A\": [\"127.0.0.7\"], \"AAAA\": \"SERVFAIL\"},\n"
    " \"empty.test\": {\"TXT\": [\"nothing here\"]},\n"
    " \"cname.test\": {\"MX\": [[10, \"alias.test\"]]},\n"
    " \"alias.test\": {\"CNAME\": \"mx1.example.net\"},\n"
    " \"cdomain.test\": {\"CNAME\": \"example.net\"},\n"
    " \"same.test\": {\"MX\": [[10, \"mx1.example.net\"], [20, \"dup.test\"], [30, \"mx1.example.net\"]]},\n"
    " \"dup.test\": {\"A\": [\"127.0.0.2\"], \"AAAA\": [\"::1\"]},\n"
    " \"badname.test\": {\"MX\": [[10, \"bad_name.test\"]]},\n"
    " \"bad_name.test\": {\"A\": [\"127.0.0.8\"]},\n"
    " \"slowhost.test\": {\"MX\": [[10, \"slow.test\"], [20, \"mx2.example.net\"]]},\n"
    " \"big.test\": {\"MX\": [BIGMX]},\n"
    " BIGA\n"
    "}\n";

static bool server_start(void)
{
    int fd = mkstemp(zone_path);
    if (fd < 0)
        return false;
    /* 60 MX records (TCP fallback: too big for UDP), hosts mx0..mx59 with
     * one address each. */
    struct buf mx, a, text;
    buf_init(&mx, 1 << 16);
    buf_init(&a, 1 << 16);
    buf_init(&text, 1 << 17);
    for (int i = 0; i < 60; i++) {
        buf_appendf(&mx, "%s[%d, \"mx%d.big.test\"]", i ? ", " : "", i, i);
        buf_appendf(&a, "\"mx%d.big.test\": {\"A\": [\"127.1.0.%d\"]},\n", i,
                    i + 1);
    }
    const char *z = zone_json;
    const char *p1 = strstr(z, "BIGMX"), *p2 = strstr(z, " BIGA\n");
    buf_append(&text, z, (size_t)(p1 - z));
    buf_appends(&text, buf_cstr(&mx));
    buf_append(&text, p1 + 5, (size_t)(p2 - (p1 + 5)));
    /* drop the last ",\n" of the A list: JSON has no trailing comma */
    buf_append(&text, buf_cstr(&a), a.len - 2);
    buf_appends(&text, p2 + 5);
    bool ok = write(fd, text.data, text.len) == (ssize_t)text.len;
    close(fd);
    buf_free(&mx);
    buf_free(&a);
    buf_free(&text);
    if (!ok)
        return false;
    snprintf(port_path, sizeof port_path, "%s.port", zone_path);
    unlink(port_path);
    char *argv[] = {"/usr/bin/python3", "tests/integration/dnsserver.py",
                    "--zone", zone_path, "--port-file", port_path, NULL};
    pid_t parent = getpid();
    server_pid = fork();
    if (server_pid < 0)
        return false;
    if (server_pid == 0) {
        /* A test that crashes must not leave its server behind. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        execv(argv[0], argv);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {   /* 20 s */
        FILE *f = fopen(port_path, "r");
        if (f) {
            int n = fscanf(f, "%d", &server_port);
            fclose(f);
            if (n == 1 && server_port > 0)
                return true;
        }
        int st;
        if (waitpid(server_pid, &st, WNOHANG) == server_pid) {
            server_pid = -1;
            return false;
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

static void server_stop(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        int st;
        waitpid(server_pid, &st, 0);
        server_pid = -1;
    }
    unlink(zone_path);
    unlink(port_path);
}

/* ---- running lookups ---- */

static struct event_base *base;

struct result {
    bool called;
    int calls;
    struct dns_route *r;
};

static void on_route(struct dns_route *r, void *arg)
{
    struct result *res = arg;
    res->calls++;
    res->called = true;
    if (res->r)
        dns_route_free(res->r);
    res->r = r;
}

static struct dns *make_dns(unsigned timeout, size_t max_addresses,
                            size_t max_hosts, const char *anchor)
{
    char server[64];
    snprintf(server, sizeof server, "127.0.0.1@%d", server_port);
    const char *servers[] = {server};
    struct dns_config c = {
        .servers = servers, .nservers = 1, .trust_anchor_file = anchor,
        .timeout = timeout, .max_addresses = max_addresses,
        .max_hosts = max_hosts,
    };
    struct buf err;
    buf_init(&err, 512);
    struct dns *d = dns_new(base, &c, &err);
    if (d == NULL)
        fprintf(stderr, "dns_new: %s\n", buf_cstr(&err));
    buf_free(&err);
    return d;
}

static void loop_until(struct result *res, int seconds)
{
    time_t end = time(NULL) + seconds;
    while (!res->called && time(NULL) < end) {
        struct timeval tv = {0, 50 * 1000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
}

/* Runs the loop for about ms milliseconds. */
static void loop_for(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static struct dns_route *lookup(struct dns *d, const char *name, bool host)
{
    struct result res = {0};
    struct dns_query *q = host ? dns_lookup_host(d, name, on_route, &res)
                               : dns_lookup_mx(d, name, on_route, &res);
    CHECK(q != NULL);
    if (q == NULL)
        return NULL;
    CHECK(!res.called);   /* never before returning */
    loop_until(&res, 30);
    CHECK(res.called);
    CHECK_EQ_INT(res.calls, 1);
    if (res.r == NULL)
        fprintf(stderr, "no answer for %s\n", name);
    return res.r;
}

static const char *addr_text(const struct dns_addr *a, char *buf, size_t n)
{
    const void *p = a->ss.ss_family == AF_INET
        ? (const void *)&((const struct sockaddr_in *)&a->ss)->sin_addr
        : (const void *)&((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
    if (inet_ntop(a->ss.ss_family, p, buf, (socklen_t)n) == NULL)
        snprintf(buf, n, "?");
    return buf;
}

static bool has_addr(const struct dns_host *h, size_t i, const char *want)
{
    char b[INET6_ADDRSTRLEN];
    return i < h->naddrs && strcmp(addr_text(&h->addrs[i], b, sizeof b),
                                   want) == 0;
}

/* unbound rotates the records of an RRset (rrset-roundrobin): the order
 * within one type is not fixed, A before AAAA is. */
static bool has_addr_in(const struct dns_host *h, size_t from, size_t to,
                        const char *want)
{
    for (size_t i = from; i < to && i < h->naddrs; i++)
        if (has_addr(h, i, want))
            return true;
    return false;
}

static size_t total_addrs(const struct dns_route *r)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nhosts; i++)
        n += r->hosts[i].naddrs;
    return n;
}

static struct dns *D;   /* shared resolver for the quick tests */

/* ---- live tests ---- */

TEST(mx_preferences_and_addresses)
{
    struct dns_route *r = lookup(D, "Example.NET.", false);
    if (!r)
        return;
    CHECK_EQ_INT(r->status, DNS_OK);
    CHECK_EQ_STR(r->error, "");
    CHECK(!r->implicit);
    CHECK(!r->secure);   /* no trust anchor: never secure */
    CHECK_EQ_INT(r->nhosts, 2);
    if (r->nhosts == 2) {
        struct dns_host *h = &r->hosts[0];
        CHECK_EQ_STR(h->name, "mx1.example.net");
        CHECK_EQ_INT(h->pref, 10);
        CHECK_EQ_INT(h->status, DNS_OK);
        CHECK_EQ_INT(h->naddrs, 3);
        CHECK(has_addr(h, 0, "127.0.0.2"));   /* A first */
        CHECK(has_addr_in(h, 1, 3, "::1"));
        CHECK(has_addr_in(h, 1, 3, "2001:db8::2"));
        for (size_t i = 0; i < h->naddrs; i++) {
            const struct dns_addr *a = &h->addrs[i];
            if (a->ss.ss_family == AF_INET) {
                CHECK_EQ_INT(a->len, sizeof(struct sockaddr_in));
                CHECK_EQ_INT(((const struct sockaddr_in *)&a->ss)->sin_port, 0);
            } else {
                CHECK_EQ_INT(a->ss.ss_family, AF_INET6);
                CHECK_EQ_INT(a->len, sizeof(struct sockaddr_in6));
                CHECK_EQ_INT(((const struct sockaddr_in6 *)&a->ss)->sin6_port, 0);
            }
        }
        h = &r->hosts[1];
        CHECK_EQ_STR(h->name, "mx2.example.net");
        CHECK_EQ_INT(h->pref, 20);
        CHECK_EQ_INT(h->status, DNS_OK);
        CHECK_EQ_INT(h->naddrs, 2);
        CHECK(has_addr_in(h, 0, 2, "127.0.0.3"));
        CHECK(has_addr_in(h, 0, 2, "127.0.0.4"));
    }
    dns_route_free(r);
}

TEST(implicit_mx)
{
    struct dns_route *r = lookup(D, "implicit.test", false);
    if (!r)
        return;
    CHECK_EQ_INT(r->status, DNS_OK);
    CHECK(r->implicit);
    CHECK_EQ_INT(r->nhosts, 1);
    if (r->nhosts == 1) {
        CHECK_EQ_STR(r->hosts[0].name, "implicit.test");
        CHECK_EQ_INT(r->hosts[0].pref, 0);
        CHECK_EQ_INT(r->hosts[0].naddrs, 2);
        CHECK(has_addr(&r->hosts[0], 0, "127.0.0.5"));
        CHECK(has_addr(&r->hosts[0], 1, "2001:db8::5"));
    }
    dns_route_free(r);
    /* A only, AAAA failing: still deliverable over IPv4. */
    r = lookup(D, "halfv6.test", false);
    if (!r)
        return;
    CHECK_EQ_INT(r->status, DNS_OK);
    CHECK(r->implicit);
    CHECK_EQ_INT(r->nhosts, 1);
    if (r->nhosts == 1) {
        CHECK_EQ_INT(r->hosts[0].naddrs, 1);
        CHECK(has_addr(&r->hosts[0], 0, "127.0.0.7"));
    }
    dns_route_free(r);
    /* Neither MX nor A nor AAAA. */
    r = lookup(D, "empty.test", false);
    if (!r)
        return;
    CHECK_EQ_INT(r->status, DNS_NOTFOUND);
    CHECK(r->implicit);
    CHECK_EQ_STR(r->error, "empty.test: no MX, A or AAAA record (RFC 5321 5.1)");
    dns_route_free(r);
}

TEST(null_mx)
{
    struct dns_route *r = lookup(D, "nullmx.test", false);
    if (!r)
        return;
    /* The A record of the domain must not be used as an implicit MX. */
    CHECK_EQ_INT(r->status, DNS_NULLMX);
    CHECK_EQ_INT(r->nhosts, 0);
    CHECK(!r->implicit);
    CHECK_EQ_STR(r->error, "nullmx.test: domain does not accept mail "
                           "(null MX, RFC 7505)");
    dns_route_free(r);
}

TEST(null_mx_among_real_mx_is_ignored)
{
    struct dns_route *r = lookup(D, "mixed.test", false);
    if (!r)
        return;
    CHECK_EQ_INT(r->status, DNS_OK);
    CHECK_EQ_INT(r->nhosts, 1);
    if (r->nhosts == 1) {
        CHECK_EQ_STR(r->hosts[0].name, "mx2.example.net");
        CHECK_EQ_INT(r->hosts[0].naddrs, 2);
    }
    dns_route_free(r);
}

TEST(nxdomain)
{
    struct dns_route *r = lookup(D, "nope.test", false);
    if (!r)
        return;
    CHECK_EQ_INT(r->status, DNS_NOTFOUND);
    CHECK_EQ_INT(r->nhosts, 0);
    CHECK_EQ_STR(r->error, "nope.test: host not found (NXDOMAIN, type MX)");
    dns_route_free(r);
    r = lookup(D, "nope.test", true);
    if (!r)
        return;
    CHECK_EQ_INT(r->status, DNS_NOTFOUND);
    CHECK_EQ_INT(r->nhosts, 1);
    CHECK_EQ_STR(r->error, "nope.test: host not found (NXDOMAIN, type A)");
    dns_route_free(r);
}

TEST(servfail_and_refused_defer)
{
    struct dns_route *r = lookup(D, "broken.test", false);
    if (!r)
        return;
    CHECK_EQ_INT(r->status, DNS_TEMPFAIL);
    CHECK_EQ_INT(r->nhosts, 0);
    CHECK_EQ_STR(r->error, "broken.test: temporary DNS failure (SERVFAIL, type MX)");
    dns_route_free(r);
    r = lookup(D, "refused.test", false);
    if (!r)
        return;
    /* unbound turns a forwarder's REFUSED into SERVFAIL. */
    CHECK_EQ_INT(r->status, DNS_TEMPFAIL);
    CHECK(strncmp(r->error, "refused.test: temporary DNS failure", 35) == 0);
    dns_route_free(r);
}

TEST(mx_hosts_missing_or_failing)
{
    struct dns_route *r = lookup(D, "dangling.test", false);
    if (!r)
        return;
    CHECK_EQ_INT(r->status, DNS_NOTFOUND);
    CHECK_EQ_INT(r->nhosts, 2);
    if (r->nhosts == 2) {
        CHECK_EQ_STR(r->hosts[0].name, "gone.test");
        CHECK_EQ_INT(r->hosts[0].status, DNS_NOTFOUND);
        CHECK_EQ_INT(r->hosts[0].naddrs, 0);
        CHECK_EQ_INT(r->hosts[1].status, DNS_NOTFOUND);
    }
    CHECK_EQ_STR(r->error, "dangling.test: no address for any MX host "
                           "(gone.test: host not found (NXDOMAIN, type A))");
    dns_route_free(r);

    /* The best MX fails temporarily, the next one works: deliver. */
    r = lookup(D, "partial.test", false);
    if (!r)
        return;
    CHECK_EQ_INT(r->status, DNS_OK);
    CHECK_EQ_INT(r->nhosts, 2);
    if (r->nhosts == 2) {
        CHECK_EQ_STR(r->hosts[0].name, "mxbad.test");
        CHECK_EQ_INT(r->hosts[0].status, DNS_TEMPFAIL);
        CHECK_EQ_INT(r->hosts[0].naddrs, 0);
        CHECK_EQ_INT(r->hosts[1].status, DNS_OK);
        CHECK_EQ_INT(r->hosts[1].naddrs, 2);
    }
    dns_route_free(r);

    /* One host fails temporarily, the other does not exist: defer. */
    r = lookup(D, "alltemp.test", false);
    if (!r)
        return;
    CHECK_EQ_INT(r->status, DNS_TEMPFAIL);
    CHECK_EQ_STR(r->error, "alltemp.test: no address for any MX host "
                           "(mxbad.test: temporary DNS failure (SERVFAIL, type A))");
    dns_route_free(r);

    /* An MX target that is not a host name is not looked up. */
    r = lookup(D, "badname.test", false);
    if (!r)
        return;
    CHECK_EQ_INT(r->status, DNS_TEMPFAIL);
    CHECK_EQ_INT(r->nhosts, 0);
    CHECK_EQ_STR(r->error, "badname.test: no MX record names a valid host");
    dns_route_free(r);
}

TEST(cname)
{
    /* MX target that is a CNAME (followed by unbound). */
    struct dns_route *r = lookup(D, "cname.test", false);
    if (!r)
        return;
    CHECK_EQ_INT(r->status, DNS_OK);
    CHECK_EQ_INT(r->nhosts, 1);
    if (r->nhosts == 1) {
        CHECK_EQ_STR(r->hosts[0].name, "alias.test");   /* as the MX says */
        CHECK_EQ_INT(r->hosts[0].naddrs, 3);
        CHECK(has_addr(&r->hosts[0], 0, "127.0.0.2"));
    }
    dns_route_free(r);
    /* The domain itself is a CNAME to a domain with MX records. */
    r = lookup(D, "cdomain.test", false);
    if (!r)
        return;
    CHECK_EQ_INT(r->status, DNS_OK);
    CHECK(!r->implicit);
    CHECK_EQ_INT(r->nhosts, 2);
    if (r->nhosts == 2)
        CHECK_EQ_STR(r->hosts[0].name, "mx1.example.net");
    dns_route_free(r);
}

TEST(duplicates)
{
    /* mx1 twice (pref 10 and 30) and dup.test with mx1's addresses. */
    struct dns_route *r = lookup(D, "same.test", false);
    if (!r)
        return;
    CHECK_EQ_INT(r->status, DNS_OK);
    CHECK_EQ_INT(r->nhosts, 2);
    if (r->nhosts == 2) {
        CHECK_EQ_STR(r->hosts[0].name, "mx1.example.net");
        CHECK_EQ_INT(r->hosts[0].pref, 10);
        CHECK_EQ_INT(r->hosts[0].naddrs, 3);
        CHECK_EQ_STR(r->hosts[1].name, "dup.test");
        CHECK_EQ_INT(r->hosts[1].status, DNS_OK);
        CHECK_EQ_INT(r->hosts[1].naddrs, 0);   /* both already listed */
    }
    dns_route_free(r);
}

TEST(caps_and_tcp)
{
    /* 60 MX records need TCP; 20 hosts looked up, addresses capped. */
    struct dns *d = make_dns(20, 5, 0, NULL);
    CHECK(d != NULL);
    if (!d)
        return;
    struct dns_route *r = lookup(d, "big.test", false);
    if (r) {
        CHECK_EQ_INT(r->status, DNS_OK);
        CHECK_EQ_INT(r->nhosts, DNS_MAX_HOSTS_DEFAULT);
        CHECK_EQ_INT(total_addrs(r), 5);
        for (size_t i = 0; i < r->nhosts; i++) {
            char want[32];
            snprintf(want, sizeof want, "mx%zu.big.test", i);
            CHECK_EQ_STR(r->hosts[i].name, want);   /* distinct prefs */
            CHECK_EQ_INT(r->hosts[i].pref, i);
            CHECK_EQ_INT(r->hosts[i].naddrs, i < 5 ? 1 : 0);
            CHECK_EQ_INT(r->hosts[i].status, DNS_OK);
        }
        dns_route_free(r);
    }
    dns_free(d);
    d = make_dns(20, 100, 3, NULL);
    CHECK(d != NULL);
    if (!d)
        return;
    r = lookup(d, "big.test", false);
    if (r) {
        CHECK_EQ_INT(r->nhosts, 3);
        CHECK_EQ_INT(total_addrs(r), 3);
        dns_route_free(r);
    }
    dns_free(d);
}

TEST(lookup_host)
{
    struct dns_route *r = lookup(D, "MX1.example.net", true);
    if (!r)
        return;
    CHECK_EQ_INT(r->status, DNS_OK);
    CHECK(!r->implicit);
    CHECK_EQ_INT(r->nhosts, 1);
    if (r->nhosts == 1) {
        CHECK_EQ_STR(r->hosts[0].name, "mx1.example.net");
        CHECK_EQ_INT(r->hosts[0].pref, 0);
        CHECK_EQ_INT(r->hosts[0].naddrs, 3);
    }
    dns_route_free(r);
    /* Address literals need no query. */
    static const char *const lits[][2] = {
        {"127.0.0.9", "127.0.0.9"}, {"[127.0.0.10]", "127.0.0.10"},
        {"::1", "::1"}, {"[2001:db8::7]", "2001:db8::7"},
    };
    for (size_t i = 0; i < 4; i++) {
        r = lookup(D, lits[i][0], true);
        if (!r)
            continue;
        CHECK_EQ_INT(r->status, DNS_OK);
        CHECK(!r->secure);
        CHECK_EQ_INT(r->nhosts, 1);
        if (r->nhosts == 1) {
            CHECK_EQ_STR(r->hosts[0].name, lits[i][1]);
            CHECK_EQ_INT(r->hosts[0].naddrs, 1);
            CHECK(has_addr(&r->hosts[0], 0, lits[i][1]));
        }
        dns_route_free(r);
    }
    struct result res = {0};
    CHECK(dns_lookup_host(D, "[::1", on_route, &res) == NULL);
    CHECK(dns_lookup_host(D, "a_b.test", on_route, &res) == NULL);
    CHECK(dns_lookup_host(D, NULL, on_route, &res) == NULL);
    CHECK(dns_lookup_mx(D, "a..b", on_route, &res) == NULL);
    CHECK(dns_lookup_mx(D, "", on_route, &res) == NULL);
    CHECK(dns_lookup_mx(D, "[127.0.0.1]", on_route, &res) == NULL);
    loop_for(100);
    CHECK(!res.called);
}

TEST(timeout_defers)
{
    /* A resolver of its own: unbound's server statistics stay per
     * context. */
    struct dns *d = make_dns(1, 0, 0, NULL);
    CHECK(d != NULL);
    if (!d)
        return;
    time_t t0 = time(NULL);
    struct dns_route *r = lookup(d, "slow.test", false);
    time_t t1 = time(NULL);
    CHECK(t1 - t0 <= 4);
    if (r) {
        CHECK_EQ_INT(r->status, DNS_TEMPFAIL);
        CHECK_EQ_STR(r->error, "slow.test: DNS lookup timed out after 1 s (type MX)");
        dns_route_free(r);
    }
    /* The best MX times out, the second answers: deliver to it. */
    r = lookup(d, "slowhost.test", false);
    if (r) {
        CHECK_EQ_INT(r->status, DNS_OK);
        CHECK_EQ_INT(r->nhosts, 2);
        if (r->nhosts == 2) {
            CHECK_EQ_STR(r->hosts[0].name, "slow.test");
            CHECK_EQ_INT(r->hosts[0].status, DNS_TEMPFAIL);
            CHECK_EQ_INT(r->hosts[1].status, DNS_OK);
            CHECK_EQ_INT(r->hosts[1].naddrs, 2);
        }
        dns_route_free(r);
    }
    /* The same resolver still answers after the timeouts. */
    r = lookup(d, "example.net", false);
    if (r) {
        CHECK_EQ_INT(r->status, DNS_OK);
        dns_route_free(r);
    }
    dns_free(d);
}

TEST(cancel)
{
    struct result res = {0}, res2 = {0}, res3 = {0};
    struct dns_query *q = dns_lookup_mx(D, "example.net", on_route, &res);
    struct dns_query *q2 = dns_lookup_mx(D, "slow.test", on_route, &res2);
    /* Completed at once (a literal), cancelled before its event runs. */
    struct dns_query *q3 = dns_lookup_host(D, "127.0.0.1", on_route, &res3);
    CHECK(q && q2 && q3);
    if (!q || !q2 || !q3)
        return;
    dns_cancel(q);
    dns_cancel(q3);
    loop_for(300);
    CHECK(!res.called);
    CHECK(!res3.called);
    /* Cancel while the MX answer is in and host lookups are out:
     * slowhost.test's best MX (slow.test) never answers. */
    dns_cancel(q2);
    struct result res4 = {0};
    struct dns_query *q4 = dns_lookup_mx(D, "slowhost.test", on_route, &res4);
    CHECK(q4 != NULL);
    loop_for(500);
    CHECK(!res4.called);
    if (q4 && !res4.called)
        dns_cancel(q4);
    loop_for(300);
    CHECK(!res.called && !res2.called && !res3.called && !res4.called);
    if (res4.r)
        dns_route_free(res4.r);
    /* The resolver keeps working after cancellations. */
    struct dns_route *r = lookup(D, "example.net", false);
    if (r) {
        CHECK_EQ_INT(r->status, DNS_OK);
        dns_route_free(r);
    }
}

TEST(free_with_lookups_in_flight)
{
    struct dns *d = make_dns(5, 0, 0, NULL);
    CHECK(d != NULL);
    if (!d)
        return;
    struct result res[4] = {{0}};
    CHECK(dns_lookup_mx(d, "example.net", on_route, &res[0]) != NULL);
    CHECK(dns_lookup_mx(d, "slow.test", on_route, &res[1]) != NULL);
    CHECK(dns_lookup_mx(d, "big.test", on_route, &res[2]) != NULL);
    CHECK(dns_lookup_host(d, "::1", on_route, &res[3]) != NULL);
    loop_for(20);   /* some answers may be in, others not */
    for (int i = 0; i < 4; i++)
        if (res[i].r) {
            dns_route_free(res[i].r);
            res[i].r = NULL;
            res[i].called = false;
        }
    dns_free(d);
    loop_for(200);
    for (int i = 0; i < 4; i++)
        CHECK(!res[i].called);
    /* Free before the first query ever reached libunbound's thread. */
    d = make_dns(5, 0, 0, NULL);
    CHECK(d != NULL);
    if (!d)
        return;
    CHECK(dns_lookup_mx(d, "example.net", on_route, &res[0]) != NULL);
    dns_free(d);
    /* And a resolver never used. */
    dns_free(make_dns(5, 0, 0, NULL));
    dns_free(NULL);
    loop_for(100);
    CHECK(!res[0].called);
}

/* A callback that frees the resolver while other lookups are out. */
struct freer {
    struct dns *d;
    int calls;
};

static void free_in_cb(struct dns_route *r, void *arg)
{
    struct freer *f = arg;
    f->calls++;
    dns_route_free(r);
    dns_free(f->d);
    f->d = NULL;
}

TEST(free_from_callback)
{
    struct freer f = {0};
    f.d = make_dns(5, 0, 0, NULL);
    CHECK(f.d != NULL);
    if (!f.d)
        return;
    /* A literal completes first; slow.test is still out when it does. */
    CHECK(dns_lookup_mx(f.d, "slow.test", free_in_cb, &f) != NULL);
    CHECK(dns_lookup_mx(f.d, "example.net", free_in_cb, &f) != NULL);
    CHECK(dns_lookup_host(f.d, "127.0.0.1", free_in_cb, &f) != NULL);
    for (int i = 0; i < 100 && f.calls == 0; i++)
        loop_for(50);
    loop_for(200);
    CHECK_EQ_INT(f.calls, 1);
    CHECK(f.d == NULL);
}

TEST(dnssec_anchor_without_dnssec_is_bogus)
{
    /* Our test server has no signatures: with the root key configured,
     * every answer fails validation. This is why validation is off by
     * default (doc/dns.md). */
    const char *anchor = "/usr/share/dns/root.key";
    if (access(anchor, R_OK) != 0) {
        fprintf(stderr, "skipping: no %s\n", anchor);
        return;
    }
    struct dns *d = make_dns(10, 0, 0, anchor);
    CHECK(d != NULL);
    if (!d)
        return;
    struct dns_route *r = lookup(d, "example.net", false);
    if (r) {
        CHECK_EQ_INT(r->status, DNS_BOGUS);
        CHECK(!r->secure);
        CHECK(strncmp(r->error, "example.net: DNSSEC validation failed (type MX)",
                      47) == 0);
        dns_route_free(r);
    }
    dns_free(d);
}

TEST(config_errors)
{
    struct buf err;
    buf_init(&err, 512);
    const char *bad[] = {"not-an-address"};
    struct dns_config c = {.servers = bad, .nservers = 1};
    CHECK(dns_new(base, &c, &err) == NULL);
    CHECK(strstr(buf_cstr(&err), "not-an-address") != NULL);
    buf_reset(&err);
    const char *ok[] = {"127.0.0.1@53", "::1"};
    c = (struct dns_config){.servers = ok, .nservers = 2,
                            .trust_anchor_file = "/nonexistent/root.key"};
    CHECK(dns_new(base, &c, &err) == NULL);
    CHECK(strstr(buf_cstr(&err), "/nonexistent/root.key") != NULL);
    buf_reset(&err);
    /* A file that is not a trust anchor fails now, not at every lookup. */
    char bad_anchor[] = "/tmp/estafeta-test-dns-anchor-XXXXXX";
    int fd = mkstemp(bad_anchor);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, "garbage here\n", 13) == 13);
        close(fd);
        c.trust_anchor_file = bad_anchor;
        CHECK(dns_new(base, &c, &err) == NULL);
        CHECK(strstr(buf_cstr(&err), "trust anchor") != NULL);
        unlink(bad_anchor);
    }
    buf_reset(&err);
    /* /etc/resolv.conf mode builds (it may name no server at all). */
    c = (struct dns_config){0};
    struct dns *d = dns_new(base, &c, &err);
    if (d == NULL)
        fprintf(stderr, "resolv.conf mode: %s\n", buf_cstr(&err));
    dns_free(d);
    buf_free(&err);
}

TEST(unreachable_server_defers)
{
    /* Nothing listens on port 9 of loopback (discard, normally off). */
    const char *servers[] = {"127.0.0.1@9"};
    struct dns_config c = {.servers = servers, .nservers = 1, .timeout = 2};
    struct buf err;
    buf_init(&err, 512);
    struct dns *d = dns_new(base, &c, &err);
    buf_free(&err);
    CHECK(d != NULL);
    if (!d)
        return;
    struct dns_route *r = lookup(d, "example.net", false);
    if (r) {
        CHECK_EQ_INT(r->status, DNS_TEMPFAIL);
        dns_route_free(r);
    }
    dns_free(d);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    RUN(sort_by_pref_shuffles_equals);
    RUN(sort_equal_keys_keep_order);
    RUN(name_validation);

    base = event_base_new();
    if (base == NULL || !server_start()) {
        fprintf(stderr, "cannot start tests/integration/dnsserver.py\n");
        server_stop();
        harness_fail++;
        return harness_done("test_dns");
    }
    D = make_dns(20, 0, 0, NULL);
    if (D == NULL) {
        harness_fail++;
    } else {
        RUN(mx_preferences_and_addresses);
        RUN(implicit_mx);
        RUN(null_mx);
        RUN(null_mx_among_real_mx_is_ignored);
        RUN(nxdomain);
        RUN(servfail_and_refused_defer);
        RUN(mx_hosts_missing_or_failing);
        RUN(cname);
        RUN(duplicates);
        RUN(caps_and_tcp);
        RUN(lookup_host);
        RUN(cancel);
        RUN(timeout_defers);
        RUN(free_with_lookups_in_flight);
        RUN(free_from_callback);
        RUN(dnssec_anchor_without_dnssec_is_bogus);
        RUN(config_errors);
        RUN(unreachable_server_defers);
        dns_free(D);
    }
    server_stop();
    event_base_free(base);
    return harness_done("test_dns");
}
