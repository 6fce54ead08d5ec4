/*
 * dns: MX routing with libunbound in a libevent loop. Contract in dns.h,
 * reasons and the status mapping in doc/dns.md.
 *
 * Shape: a dns_query owns its outstanding libunbound queries (struct
 * dns_sub, the mydata of ub_resolve_async). libunbound's thread resolves;
 * its answers arrive on ub_fd(), our read event calls ub_process(), which
 * calls ub_answer() for each. When nothing is outstanding (or the timer
 * fires) the route is built and a per-query event is activated; the user's
 * callback runs from that event, never from inside ub_process(), so it may
 * free the struct dns (ub_ctx_delete inside ub_process would be a
 * use-after-free in libunbound).
 *
 * Cancelling: in threaded mode ub_cancel() only marks the query, and
 * ub_process() then drops its answer without a callback. If ub_cancel()
 * ever fails the callback may still come, so the dns_sub is kept on an
 * orphan list (q = NULL) until it does, or until dns_free.
 */
#include "relay/dns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <unbound.h>

#include "lib/limits.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#define RR_A 1
#define RR_MX 15
#define RR_AAAA 28
#define RR_CLASS_IN 1

#define RCODE_NXDOMAIN 3

#define WHY_MAX 160

enum sub_kind { SUB_MX, SUB_A, SUB_AAAA };

struct dns_sub {
    struct dns_query *q;          /* NULL once orphaned */
    struct dns *d;
    enum sub_kind kind;
    size_t host;                  /* index in q->hosts (SUB_A, SUB_AAAA) */
    int async_id;
    struct dns_sub *prev, *next;  /* in q->subs, or in d->orphans */
};

/* One address family of one host: 0 is A, 1 is AAAA. */
struct qfam {
    bool done;
    enum dns_status status;
    bool secure;
    struct dns_addr *addrs;
    size_t n;
    char why[WHY_MAX];            /* without the host name */
};

struct qhost {
    char *name;
    unsigned pref;
    struct qfam f[2];
};

struct dns_query {
    struct dns *d;
    dns_route_cb cb;
    void *arg;
    char name[DNS_NAME_MAX + 1];
    bool mx;                      /* dns_lookup_mx, else dns_lookup_host */
    bool done;                    /* route built, done_ev active */
    enum dns_status mx_status;    /* of the MX lookup itself */
    bool mx_secure;
    bool implicit;
    char mx_why[WHY_MAX];
    struct qhost *hosts;
    size_t nhosts;
    struct dns_sub *subs;
    struct dns_route *route;
    struct event *timer, *done_ev;
    struct dns_query *prev, *next;
};

struct dns {
    struct event_base *base;
    struct ub_ctx *ctx;
    struct event *ev;
    unsigned timeout;
    size_t max_addresses, max_hosts;
    bool started;                 /* libunbound's thread exists */
    bool broken;                  /* the pipe from that thread failed */
    struct dns_query *queries;
    struct dns_sub *orphans;
    FILE *ublog;                  /* libunbound's log, into log_kv */
    uint8_t rnd[64];
    size_t rnd_left;
    uint32_t rnd_fallback;
};

static void ub_answer(void *arg, int err, struct ub_result *r);

const char *dns_status_name(enum dns_status s)
{
    switch (s) {
    case DNS_OK: return "ok";
    case DNS_NOTFOUND: return "notfound";
    case DNS_NULLMX: return "nullmx";
    case DNS_TEMPFAIL: return "tempfail";
    case DNS_BOGUS: return "bogus";
    }
    return "unknown";
}

/* ---- names ---- */

/* Validates in (dns.h "Names") and writes it lower case without the
 * trailing dot to out (may be in). */
static bool name_normalize(const char *in, char out[DNS_NAME_MAX + 1])
{
    size_t len = strnlen(in, DNS_NAME_MAX + 2);
    if (len > DNS_NAME_MAX + 1)
        return false;
    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0 || len > DNS_NAME_MAX)
        return false;
    size_t lab = 0;
    char prev = '.';
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '.') {
            if (lab == 0 || prev == '-')
                return false;
            lab = 0;
        } else {
            if (c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
            bool ldh = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                       c == '-';
            if (!ldh || (c == '-' && lab == 0) || ++lab > 63)
                return false;
        }
        out[i] = c;
        prev = c;
    }
    if (lab == 0 || prev == '-')
        return false;
    out[len] = '\0';
    return true;
}

bool dns_name_valid(const char *name)
{
    char tmp[DNS_NAME_MAX + 1];
    return name != NULL && name_normalize(name, tmp);
}

/* An uncompressed wire-format name filling p[0..len) exactly (libunbound
 * hands out rdata with names decompressed). Returns 1 and the normalized
 * text in out, 0 for the root name, -1 for anything malformed or not LDH. */
static int wire_name(const uint8_t *p, size_t len, char out[DNS_NAME_MAX + 1])
{
    size_t i = 0, o = 0;
    for (;;) {
        if (i >= len)
            return -1;
        size_t l = p[i++];
        if (l == 0)
            break;
        if (l > 63 || l > len - i)   /* also rejects compression pointers */
            return -1;
        if (o != 0)
            out[o++] = '.';
        if (l > DNS_NAME_MAX - o)
            return -1;
        for (size_t k = 0; k < l; k++) {
            uint8_t c = p[i + k];
            if (c == '.' || c == '\0')   /* would change the label split */
                return -1;
            out[o++] = (char)c;
        }
        i += l;
    }
    if (i != len)
        return -1;
    if (o == 0)
        return 0;
    out[o] = '\0';
    return name_normalize(out, out) ? 1 : -1;
}

/* Bracketed or bare IPv4/IPv6 literal. */
static bool addr_literal(const char *s, struct dns_addr *a, char *text,
                         size_t textsize)
{
    char tmp[INET6_ADDRSTRLEN + 2];
    size_t len = strnlen(s, sizeof tmp);
    if (len == sizeof tmp || len == 0)
        return false;
    if (s[0] == '[') {
        if (len < 3 || s[len - 1] != ']')
            return false;
        memcpy(tmp, s + 1, len - 2);
        tmp[len - 2] = '\0';
    } else {
        memcpy(tmp, s, len + 1);
    }
    memset(a, 0, sizeof *a);
    struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
    if (inet_pton(AF_INET, tmp, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        a->len = sizeof *sin;
    } else if (inet_pton(AF_INET6, tmp, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        a->len = sizeof *sin6;
    } else {
        return false;
    }
    snprintf(text, textsize, "%s", tmp);
    return true;
}

/* Text from resolvers (why_bogus) may hold anything: keep it printable. */
static void sanitize(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            *s = '?';
}

/* ---- randomness for equal preferences ---- */

static uint32_t dns_rand(void *arg)
{
    struct dns *d = arg;
    if (d->rnd_left < 4) {
        ssize_t r = getrandom(d->rnd, sizeof d->rnd, GRND_NONBLOCK);
        if (r != (ssize_t)sizeof d->rnd) {
            /* Only load balancing depends on it: a weak fallback will do. */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            d->rnd_fallback = d->rnd_fallback * 1103515245u + 12345u +
                              (uint32_t)ts.tv_nsec;
            return d->rnd_fallback;
        }
        d->rnd_left = sizeof d->rnd;
    }
    uint32_t v;
    memcpy(&v, d->rnd + sizeof d->rnd - d->rnd_left, sizeof v);
    d->rnd_left -= sizeof v;
    return v;
}

struct sortkey {
    unsigned pref;
    uint32_t r;
    size_t idx;
};

static int sortkey_cmp(const void *a, const void *b)
{
    const struct sortkey *x = a, *y = b;
    if (x->pref != y->pref)
        return x->pref < y->pref ? -1 : 1;
    if (x->r != y->r)
        return x->r < y->r ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* A random key per host and a total order on (pref, key, index): qsort's
 * instability cannot matter, and equal preferences come out shuffled. */
void dns_hosts_sort(struct dns_host *h, size_t n,
                    uint32_t (*rand_fn)(void *), void *rand_arg)
{
    if (n < 2)
        return;
    struct sortkey *k = xreallocarray(NULL, n, sizeof *k);
    for (size_t i = 0; i < n; i++) {
        k[i].pref = h[i].pref;
        k[i].r = rand_fn(rand_arg);
        k[i].idx = i;
    }
    qsort(k, n, sizeof *k, sortkey_cmp);
    struct dns_host *tmp = xreallocarray(NULL, n, sizeof *tmp);
    for (size_t i = 0; i < n; i++)
        tmp[i] = h[k[i].idx];
    memcpy(h, tmp, n * sizeof *tmp);
    free(tmp);
    free(k);
}

/* ---- libunbound queries ---- */

static void sub_link(struct dns_sub **head, struct dns_sub *s)
{
    s->prev = NULL;
    s->next = *head;
    if (*head)
        (*head)->prev = s;
    *head = s;
}

static void sub_unlink(struct dns_sub **head, struct dns_sub *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

static const char *kind_type(enum sub_kind k)
{
    return k == SUB_MX ? "MX" : k == SUB_A ? "A" : "AAAA";
}

/* Starts one query; 0 or a libunbound error code. */
static int sub_start(struct dns_query *q, enum sub_kind kind, size_t host,
                     const char *name)
{
    struct dns *d = q->d;
    if (d->broken)
        return UB_PIPE;
    struct dns_sub *s = xcalloc(1, sizeof *s);
    s->q = q;
    s->d = d;
    s->kind = kind;
    s->host = host;
    int type = kind == SUB_MX ? RR_MX : kind == SUB_A ? RR_A : RR_AAAA;
    /* The first call creates libunbound's thread, which inherits our
     * signal mask: block everything so that process signals are never
     * delivered to it. */
    sigset_t all, old;
    bool masked = false;
    if (!d->started) {
        sigfillset(&all);
        masked = pthread_sigmask(SIG_BLOCK, &all, &old) == 0;
    }
    int r = ub_resolve_async(d->ctx, name, type, RR_CLASS_IN, s, ub_answer,
                             &s->async_id);
    if (masked)
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        free(s);
        return r;
    }
    d->started = true;
    sub_link(&q->subs, s);
    return 0;
}

/* Stops every outstanding query of q. */
static void subs_cancel(struct dns_query *q)
{
    while (q->subs) {
        struct dns_sub *s = q->subs;
        sub_unlink(&q->subs, s);
        if (ub_cancel(q->d->ctx, s->async_id) == 0) {
            free(s);
        } else {
            s->q = NULL;
            sub_link(&q->d->orphans, s);
        }
    }
}

/* Status of one answer; why gets a reason without the name. */
static enum dns_status classify(int err, const struct ub_result *r,
                                const char *type, char *why, size_t whysize)
{
    if (err != 0 || r == NULL) {
        snprintf(why, whysize, "resolver error (%s, type %s)",
                 ub_strerror(err), type);
        return DNS_TEMPFAIL;
    }
    if (r->bogus) {
        snprintf(why, whysize, "DNSSEC validation failed (type %s): %s", type,
                 r->why_bogus ? r->why_bogus : "bogus");
        sanitize(why);
        return DNS_BOGUS;
    }
    if (r->nxdomain || r->rcode == RCODE_NXDOMAIN) {
        snprintf(why, whysize, "host not found (NXDOMAIN, type %s)", type);
        return DNS_NOTFOUND;
    }
    if (r->rcode != 0) {
        static const char *const rcodes[] = {"NOERROR", "FORMERR", "SERVFAIL",
                                             "NXDOMAIN", "NOTIMP", "REFUSED"};
        if (r->rcode > 0 && r->rcode < 6)
            snprintf(why, whysize, "temporary DNS failure (%s, type %s)",
                     rcodes[r->rcode], type);
        else
            snprintf(why, whysize, "temporary DNS failure (rcode %d, type %s)",
                     r->rcode, type);
        return DNS_TEMPFAIL;
    }
    if (!r->havedata) {
        snprintf(why, whysize, "no %s record", type);
        return DNS_NOTFOUND;
    }
    why[0] = '\0';
    return DNS_OK;
}

static void take_addrs(struct qfam *f, int fam, const struct ub_result *r,
                       size_t cap)
{
    size_t want = fam == 0 ? 4 : 16, n = 0;
    for (size_t i = 0; r->data[i] != NULL; i++)
        if (r->len[i] >= 0 && (size_t)r->len[i] == want)
            n++;
    if (n > cap)
        n = cap;
    if (n == 0)
        return;
    f->addrs = xcalloc(n, sizeof *f->addrs);
    for (size_t i = 0; r->data[i] != NULL && f->n < n; i++) {
        if (r->len[i] < 0 || (size_t)r->len[i] != want)
            continue;
        struct dns_addr *a = &f->addrs[f->n++];
        if (fam == 0) {
            struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
            sin->sin_family = AF_INET;
            memcpy(&sin->sin_addr, r->data[i], 4);
            a->len = sizeof *sin;
        } else {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
            sin6->sin6_family = AF_INET6;
            memcpy(&sin6->sin6_addr, r->data[i], 16);
            a->len = sizeof *sin6;
        }
    }
}

static void host_add(struct dns_query *q, const char *name, unsigned pref)
{
    q->hosts = xreallocarray(q->hosts, q->nhosts + 1, sizeof *q->hosts);
    struct qhost *h = &q->hosts[q->nhosts++];
    memset(h, 0, sizeof *h);
    h->name = xstrdup(name);
    h->pref = pref;
}

/* A and AAAA queries of every host. */
static void hosts_start(struct dns_query *q)
{
    for (size_t i = 0; i < q->nhosts; i++) {
        for (int fam = 0; fam < 2; fam++) {
            enum sub_kind k = fam == 0 ? SUB_A : SUB_AAAA;
            int r = sub_start(q, k, i, q->hosts[i].name);
            if (r != 0) {
                struct qfam *f = &q->hosts[i].f[fam];
                f->done = true;
                f->status = DNS_TEMPFAIL;
                snprintf(f->why, sizeof f->why, "resolver error (%s, type %s)",
                         ub_strerror(r), kind_type(k));
            }
        }
    }
}

static void host_answer(struct dns_query *q, size_t hi, int fam, int err,
                        const struct ub_result *r)
{
    if (hi >= q->nhosts)
        return;
    struct qfam *f = &q->hosts[hi].f[fam];
    f->done = true;
    f->status = classify(err, r, fam == 0 ? "A" : "AAAA", f->why,
                         sizeof f->why);
    f->secure = r != NULL && r->secure;
    if (f->status == DNS_OK) {
        take_addrs(f, fam, r, q->d->max_addresses);
        if (f->n == 0) {
            f->status = DNS_NOTFOUND;
            snprintf(f->why, sizeof f->why, "no usable %s record",
                     fam == 0 ? "A" : "AAAA");
        }
    }
}

static void mx_answer(struct dns_query *q, int err, const struct ub_result *r)
{
    enum dns_status st = classify(err, r, "MX", q->mx_why, sizeof q->mx_why);
    q->mx_secure = r != NULL && r->secure;
    if (st == DNS_NOTFOUND && !r->nxdomain && r->rcode != RCODE_NXDOMAIN) {
        /* NODATA: RFC 5321 5.1 implicit MX, the domain is its own host. */
        q->implicit = true;
        host_add(q, q->name, 0);
        hosts_start(q);
        return;
    }
    if (st != DNS_OK) {
        q->mx_status = st;
        return;
    }
    size_t count = 0;
    while (r->data[count] != NULL)
        count++;
    struct dns_host *cand = xcalloc(count, sizeof *cand);
    size_t ncand = 0, nroot = 0, nbad = 0;
    char name[DNS_NAME_MAX + 1];
    for (size_t i = 0; i < count; i++) {
        const uint8_t *p = (const uint8_t *)r->data[i];
        size_t len = r->len[i] < 0 ? 0 : (size_t)r->len[i];
        int w = len < 3 ? -1 : wire_name(p + 2, len - 2, name);
        if (w < 0) {
            nbad++;
        } else if (w == 0) {
            nroot++;   /* "0 .": null MX, ignored among real MX records */
        } else {
            cand[ncand].name = xstrdup(name);
            cand[ncand].pref = (unsigned)p[0] << 8 | p[1];
            ncand++;
        }
    }
    if (ncand == 0) {
        free(cand);
        if (nroot > 0 && nbad == 0) {
            q->mx_status = DNS_NULLMX;
            snprintf(q->mx_why, sizeof q->mx_why,
                     "domain does not accept mail (null MX, RFC 7505)");
        } else {
            /* Deferred rather than bounced: our name check is stricter
             * than DNS, and the owner may fix the records. */
            q->mx_status = DNS_TEMPFAIL;
            snprintf(q->mx_why, sizeof q->mx_why,
                     "no MX record names a valid host");
        }
        return;
    }
    dns_hosts_sort(cand, ncand, dns_rand, q->d);
    for (size_t i = 0; i < ncand && q->nhosts < q->d->max_hosts; i++) {
        bool dup = false;
        for (size_t j = 0; j < q->nhosts && !dup; j++)
            dup = strcmp(q->hosts[j].name, cand[i].name) == 0;
        if (!dup)
            host_add(q, cand[i].name, cand[i].pref);
    }
    for (size_t i = 0; i < ncand; i++)
        free(cand[i].name);
    free(cand);
    hosts_start(q);
}

/* ---- building the route ---- */

static bool addr_equal(const struct dns_addr *a, const struct dns_addr *b)
{
    if (a->ss.ss_family != b->ss.ss_family)
        return false;
    if (a->ss.ss_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)&a->ss)->sin_addr,
                      &((const struct sockaddr_in *)&b->ss)->sin_addr, 4) == 0;
    return memcmp(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr,
                  &((const struct sockaddr_in6 *)&b->ss)->sin6_addr, 16) == 0;
}

/* Status of a host and the reason (which family decided it). */
static enum dns_status host_status(const struct qhost *h, const char **why)
{
    static const enum dns_status order[] = {DNS_TEMPFAIL, DNS_BOGUS};
    *why = "";
    if (h->f[0].n + h->f[1].n > 0)
        return DNS_OK;
    for (size_t o = 0; o < 2; o++)
        for (int fam = 0; fam < 2; fam++)
            if (h->f[fam].status == order[o]) {
                *why = h->f[fam].why;
                return order[o];
            }
    for (int fam = 0; fam < 2; fam++)
        if (strncmp(h->f[fam].why, "host not found", 14) == 0) {
            *why = h->f[fam].why;
            return DNS_NOTFOUND;
        }
    *why = "no A or AAAA record";
    return DNS_NOTFOUND;
}

/* Names run up to 253 octets and error holds 200: a long one is cut. */
static void route_error(struct dns_route *rt, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void route_error(struct dns_route *rt, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rt->error, sizeof rt->error, fmt, ap);
    va_end(ap);
    sanitize(rt->error);
}

static struct dns_route *route_build(struct dns_query *q)
{
    struct dns_route *rt = xcalloc(1, sizeof *rt);
    rt->implicit = q->implicit;
    if (q->mx && q->mx_status != DNS_OK) {
        rt->status = q->mx_status;
        /* A validated NXDOMAIN or null MX is secure too. */
        rt->secure = q->mx_secure && q->mx_status != DNS_TEMPFAIL &&
                     q->mx_status != DNS_BOGUS;
        route_error(rt, "%s: %s", q->name, q->mx_why);
        return rt;
    }
    rt->hosts = xcalloc(q->nhosts ? q->nhosts : 1, sizeof *rt->hosts);
    rt->nhosts = q->nhosts;
    rt->secure = q->mx ? q->mx_secure : true;
    size_t total = 0, max = q->d->max_addresses;
    bool any_temp = false, any_bogus = false;
    const char *why_temp = NULL, *why_bogus = NULL, *why_nf = NULL;
    size_t hi_temp = 0, hi_bogus = 0, hi_nf = 0;
    for (size_t i = 0; i < q->nhosts; i++) {
        struct qhost *qh = &q->hosts[i];
        struct dns_host *h = &rt->hosts[i];
        const char *why;
        h->name = qh->name;
        qh->name = NULL;
        h->pref = qh->pref;
        h->status = host_status(qh, &why);
        h->secure = qh->f[0].done && qh->f[1].done &&
                    qh->f[0].secure && qh->f[1].secure &&
                    (qh->f[0].status == DNS_OK ||
                     qh->f[0].status == DNS_NOTFOUND) &&
                    (qh->f[1].status == DNS_OK ||
                     qh->f[1].status == DNS_NOTFOUND);
        if (h->status == DNS_OK) {
            rt->secure = rt->secure && h->secure;
        } else if (h->status == DNS_TEMPFAIL && !any_temp) {
            any_temp = true, why_temp = why, hi_temp = i;
        } else if (h->status == DNS_BOGUS && !any_bogus) {
            any_bogus = true, why_bogus = why, hi_bogus = i;
        } else if (h->status == DNS_NOTFOUND && why_nf == NULL) {
            why_nf = why, hi_nf = i;
        }
        size_t room = total < max ? max - total : 0;
        size_t avail = qh->f[0].n + qh->f[1].n;
        if (room == 0 || avail == 0)
            continue;
        h->addrs = xcalloc(avail < room ? avail : room, sizeof *h->addrs);
        for (int fam = 0; fam < 2; fam++) {
            for (size_t k = 0; k < qh->f[fam].n && total < max; k++) {
                const struct dns_addr *a = &qh->f[fam].addrs[k];
                bool dup = false;
                for (size_t j = 0; j <= i && !dup; j++)
                    for (size_t m = 0; m < rt->hosts[j].naddrs && !dup; m++)
                        dup = addr_equal(&rt->hosts[j].addrs[m], a);
                if (dup)
                    continue;
                h->addrs[h->naddrs++] = *a;
                total++;
            }
        }
    }
    if (total > 0) {
        rt->status = DNS_OK;
        return rt;
    }
    rt->secure = false;
    const char *why;
    size_t hi = 0;
    if (any_temp) {
        rt->status = DNS_TEMPFAIL, why = why_temp, hi = hi_temp;
    } else if (any_bogus) {
        rt->status = DNS_BOGUS, why = why_bogus, hi = hi_bogus;
    } else {
        rt->status = DNS_NOTFOUND, hi = hi_nf;
        why = why_nf ? why_nf : "no host";
    }
    if (q->nhosts == 0)
        route_error(rt, "%s: no host to look up", q->name);
    else if (q->mx && !q->implicit)
        route_error(rt, "%s: no address for any MX host (%s: %s)", q->name,
                    rt->hosts[hi].name, why);
    else if (rt->status == DNS_NOTFOUND && q->implicit &&
             strcmp(why, "no A or AAAA record") == 0)
        route_error(rt, "%s: no MX, A or AAAA record (RFC 5321 5.1)",
                    q->name);
    else
        route_error(rt, "%s: %s", q->name, why);
    return rt;
}

/* Builds the route and schedules the callback. */
static void finish(struct dns_query *q)
{
    if (q->done)
        return;
    subs_cancel(q);
    if (q->timer)
        evtimer_del(q->timer);
    q->route = route_build(q);
    q->done = true;
    event_active(q->done_ev, EV_TIMEOUT, 0);
}

static void maybe_finish(struct dns_query *q)
{
    if (!q->done && q->subs == NULL)
        finish(q);
}

/* Marks whatever is still outstanding as failed with why. */
static void fail_pending(struct dns_query *q, const char *why)
{
    for (struct dns_sub *s = q->subs; s; s = s->next) {
        const char *type = kind_type(s->kind);
        if (s->kind == SUB_MX) {
            q->mx_status = DNS_TEMPFAIL;
            snprintf(q->mx_why, sizeof q->mx_why, "%s (type %s)", why, type);
        } else if (s->host < q->nhosts) {
            struct qfam *f = &q->hosts[s->host].f[s->kind == SUB_A ? 0 : 1];
            f->done = true;
            f->status = DNS_TEMPFAIL;
            snprintf(f->why, sizeof f->why, "%s (type %s)", why, type);
        }
    }
}

static void ub_answer(void *arg, int err, struct ub_result *r)
{
    struct dns_sub *s = arg;
    struct dns_query *q = s->q;
    if (q == NULL) {
        sub_unlink(&s->d->orphans, s);
        free(s);
        ub_resolve_free(r);
        return;
    }
    sub_unlink(&q->subs, s);
    enum sub_kind kind = s->kind;
    size_t host = s->host;
    free(s);
    if (!q->done) {
        if (kind == SUB_MX)
            mx_answer(q, err, r);
        else
            host_answer(q, host, kind == SUB_A ? 0 : 1, err, r);
    }
    ub_resolve_free(r);
    maybe_finish(q);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct dns_query *q = arg;
    char why[64];
    snprintf(why, sizeof why, "DNS lookup timed out after %u s",
             q->d->timeout);
    fail_pending(q, why);
    finish(q);
}

static void query_free(struct dns_query *q, bool ctx_alive)
{
    struct dns *d = q->d;
    if (ctx_alive)
        subs_cancel(q);
    else
        while (q->subs) {
            struct dns_sub *s = q->subs;
            sub_unlink(&q->subs, s);
            free(s);
        }
    if (q->timer)
        event_free(q->timer);
    if (q->done_ev)
        event_free(q->done_ev);
    for (size_t i = 0; i < q->nhosts; i++) {
        free(q->hosts[i].name);
        free(q->hosts[i].f[0].addrs);
        free(q->hosts[i].f[1].addrs);
    }
    free(q->hosts);
    dns_route_free(q->route);
    if (q->prev)
        q->prev->next = q->next;
    else
        d->queries = q->next;
    if (q->next)
        q->next->prev = q->prev;
    free(q);
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct dns_query *q = arg;
    struct dns_route *rt = q->route;
    dns_route_cb cb = q->cb;
    void *cbarg = q->arg;
    q->route = NULL;
    query_free(q, true);
    cb(rt, cbarg);
}

static struct dns_query *query_new(struct dns *d, const char *name, bool mx,
                                   dns_route_cb cb, void *arg)
{
    struct dns_query *q = xcalloc(1, sizeof *q);
    q->d = d;
    q->cb = cb;
    q->arg = arg;
    q->mx = mx;
    snprintf(q->name, sizeof q->name, "%s", name);
    q->done_ev = event_new(d->base, -1, 0, done_cb, q);
    q->timer = evtimer_new(d->base, timer_cb, q);
    if (q->done_ev == NULL || q->timer == NULL) {
        log_kv(LOG_CRIT, "dns.event", "error", "event_new failed", NULL);
        abort();
    }
    q->next = d->queries;
    if (d->queries)
        d->queries->prev = q;
    d->queries = q;
    struct timeval tv = {.tv_sec = d->timeout, .tv_usec = 0};
    evtimer_add(q->timer, &tv);
    return q;
}

/* ---- the event loop side ---- */

static void ub_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct dns *d = arg;
    int r = ub_process(d->ctx);
    if (r == 0)
        return;
    /* libunbound's thread is gone: fail what is outstanding now rather
     * than at each timeout, and every later lookup at once. */
    log_kv(LOG_ERR, "dns.resolver", "error", ub_strerror(r), NULL);
    event_del(d->ev);
    d->broken = true;
    for (struct dns_query *q = d->queries; q; q = q->next) {
        if (!q->done) {
            fail_pending(q, "resolver failure");
            finish(q);
        }
    }
}

/* libunbound prints its errors ("udp connect failed: ...") to stderr;
 * estafeta's log is key=value lines (lib/log.h). A stream whose lines
 * become log_kv calls is handed to ub_ctx_debugout. libunbound keeps that
 * stream in a process-wide variable, which ub_ctx_delete resets whenever a
 * context that set it is deleted; our stream is closed only after our
 * context is deleted, so the variable never points to a closed stream. */
struct ublog {
    char line[512];
    size_t len;
};

static void ublog_flush(struct ublog *u)
{
    while (u->len > 0 && (u->line[u->len - 1] == '\n' ||
                          u->line[u->len - 1] == '\r'))
        u->len--;
    if (u->len > 0) {
        u->line[u->len] = '\0';
        log_kv(LOG_WARN, "dns.unbound", "msg", u->line, NULL);
    }
    u->len = 0;
}

static ssize_t ublog_write(void *cookie, const char *p, size_t n)
{
    struct ublog *u = cookie;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n' || u->len == sizeof u->line - 1) {
            ublog_flush(u);
            if (p[i] == '\n')
                continue;
        }
        u->line[u->len++] = p[i];
    }
    return (ssize_t)n;
}

static int ublog_close(void *cookie)
{
    ublog_flush(cookie);
    free(cookie);
    return 0;
}

static FILE *ublog_open(void)
{
    struct ublog *u = xcalloc(1, sizeof *u);
    cookie_io_functions_t io = {.write = ublog_write, .close = ublog_close};
    FILE *f = fopencookie(u, "w", io);
    if (f == NULL) {
        free(u);
        return NULL;
    }
    setvbuf(f, NULL, _IONBF, 0);
    return f;
}

struct dns *dns_new(struct event_base *base, const struct dns_config *c,
                    struct buf *err_r)
{
    struct dns *d = xcalloc(1, sizeof *d);
    d->base = base;
    d->timeout = c->timeout ? c->timeout
                            : (unsigned)limit_table[LIM_TIMEOUT_DNS].def;
    d->max_addresses = c->max_addresses ? c->max_addresses
                                        : limit_table[LIM_MX_ADDRESSES].def;
    d->max_hosts = c->max_hosts ? c->max_hosts : DNS_MAX_HOSTS_DEFAULT;
    d->ctx = ub_ctx_create();
    if (d->ctx == NULL) {
        buf_appendf(err_r, "cannot create the resolver: %s", strerror(errno));
        free(d);
        return NULL;
    }
    int r;
    const char *what = NULL;
    d->ublog = ublog_open();
    if (d->ublog)
        ub_ctx_debugout(d->ctx, d->ublog);
    /* Threads, not fork: see dns.h. */
    if ((r = ub_ctx_async(d->ctx, 1)) != 0)
        what = "async mode";
    /* Our resolvers are forwarders, often on loopback (tests, a local
     * unbound or systemd-resolved); unbound refuses to query localhost
     * by default. */
    else if ((r = ub_ctx_set_option(d->ctx, "do-not-query-localhost:",
                                    "no")) != 0)
        what = "do-not-query-localhost";
    /* unbound answers "test." itself by default (RFC 6761); test setups
     * serve it from their own DNS server. "invalid.", "onion." and
     * "localhost." stay local. */
    else if ((r = ub_ctx_set_option(d->ctx, "local-zone:",
                                    "test. transparent")) != 0)
        what = "local-zone";
    if (what) {
        buf_appendf(err_r, "resolver option %s: %s", what, ub_strerror(r));
        goto fail;
    }
    if (c->trust_anchor_file == NULL) {
        /* No anchor: no validator at all, so nothing can be bogus. */
        if ((r = ub_ctx_set_option(d->ctx, "module-config:", "iterator"))) {
            buf_appendf(err_r, "resolver option module-config: %s",
                        ub_strerror(r));
            goto fail;
        }
    } else {
        /* Opened here for a clear message about a missing file (its
         * content is checked below). Read-only (add_ta_file, not
         * add_ta_autr): we never rewrite the system's anchor. */
        int fd = open(c->trust_anchor_file, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            buf_appendf(err_r, "trust anchor %s: %s", c->trust_anchor_file,
                        strerror(errno));
            goto fail;
        }
        close(fd);
        if ((r = ub_ctx_add_ta_file(d->ctx, c->trust_anchor_file)) != 0) {
            buf_appendf(err_r, "trust anchor %s: %s", c->trust_anchor_file,
                        ub_strerror(r));
            goto fail;
        }
    }
    for (size_t i = 0; i < c->nservers; i++) {
        if ((r = ub_ctx_set_fwd(d->ctx, c->servers[i])) != 0) {
            char shown[80];
            snprintf(shown, sizeof shown, "%s", c->servers[i]);
            sanitize(shown);
            buf_appendf(err_r, "resolver address \"%s\": %s "
                        "(expected IP or IP@port)", shown, ub_strerror(r));
            goto fail;
        }
    }
    if (c->nservers == 0 && (r = ub_ctx_resolvconf(d->ctx, NULL)) != 0) {
        if (r != UB_READFILE) {
            buf_appendf(err_r, "/etc/resolv.conf: %s", ub_strerror(r));
            goto fail;
        }
        /* No resolv.conf (a bare container): unbound then resolves from
         * the root servers itself, which works anywhere with a network. */
        log_kv(LOG_WARN, "dns.no_resolv_conf", "error", strerror(errno),
               "action", "resolving from the root servers", NULL);
    }
    /* libunbound applies the configuration (reads the trust anchor, sets
     * up the modules) at the first query, and a failure there would turn
     * every lookup into a DNS_TEMPFAIL. Apply it now, so that a broken
     * configuration fails at start-up: removing the local data of a name
     * that has none is the API's only way to do that. */
    if ((r = ub_ctx_data_remove(d->ctx, "estafeta-finalize.invalid.")) != 0) {
        buf_appendf(err_r, "resolver configuration: %s%s", ub_strerror(r),
                    c->trust_anchor_file ? " (check the trust anchor file)"
                                         : "");
        goto fail;
    }
    int fd = ub_fd(d->ctx);
    if (fd < 0) {
        buf_appendf(err_r, "resolver has no file descriptor");
        goto fail;
    }
    /* Children exec'd by the server need not inherit it. */
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    d->ev = event_new(base, fd, EV_READ | EV_PERSIST, ub_readable, d);
    if (d->ev == NULL || event_add(d->ev, NULL) != 0) {
        buf_appendf(err_r, "cannot watch the resolver's descriptor");
        goto fail;
    }
    return d;
fail:
    if (d->ev)
        event_free(d->ev);
    ub_ctx_delete(d->ctx);
    if (d->ublog)
        fclose(d->ublog);
    free(d);
    return NULL;
}

void dns_free(struct dns *d)
{
    if (d == NULL)
        return;
    if (d->ev)
        event_free(d->ev);
    /* Stops and joins libunbound's thread; no callback runs after it. */
    ub_ctx_delete(d->ctx);
    if (d->ublog)
        fclose(d->ublog);
    while (d->queries)
        query_free(d->queries, false);
    while (d->orphans) {
        struct dns_sub *s = d->orphans;
        sub_unlink(&d->orphans, s);
        free(s);
    }
    free(d);
}

struct dns_query *dns_lookup_mx(struct dns *d, const char *domain,
                                dns_route_cb cb, void *arg)
{
    char name[DNS_NAME_MAX + 1];
    if (domain == NULL || !name_normalize(domain, name))
        return NULL;
    struct dns_query *q = query_new(d, name, true, cb, arg);
    int r = sub_start(q, SUB_MX, 0, q->name);
    if (r != 0) {
        q->mx_status = DNS_TEMPFAIL;
        snprintf(q->mx_why, sizeof q->mx_why, "resolver error (%s, type MX)",
                 ub_strerror(r));
        finish(q);
    }
    return q;
}

struct dns_query *dns_lookup_host(struct dns *d, const char *host,
                                  dns_route_cb cb, void *arg)
{
    char name[DNS_NAME_MAX + 1];
    struct dns_addr lit;
    if (host == NULL)
        return NULL;
    if (addr_literal(host, &lit, name, sizeof name)) {
        struct dns_query *q = query_new(d, name, false, cb, arg);
        host_add(q, name, 0);
        struct qfam *f = &q->hosts[0].f[lit.ss.ss_family == AF_INET ? 0 : 1];
        f->addrs = xmalloc(sizeof *f->addrs);
        f->addrs[0] = lit;
        f->n = 1;
        f->status = DNS_OK;
        finish(q);
        return q;
    }
    if (!name_normalize(host, name))
        return NULL;
    struct dns_query *q = query_new(d, name, false, cb, arg);
    host_add(q, name, 0);
    hosts_start(q);
    maybe_finish(q);
    return q;
}

void dns_cancel(struct dns_query *q)
{
    if (q != NULL)
        query_free(q, true);
}

void dns_route_free(struct dns_route *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nhosts; i++) {
        free(r->hosts[i].name);
        free(r->hosts[i].addrs);
    }
    free(r->hosts);
    free(r);
}
