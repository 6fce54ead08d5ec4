/* relay: see relay.h for the contract and doc/relay.md for the reasons. */
#include "relay/relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conf/config.h"
#include "conf/config_relay.h"
#include "io/tls.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/queue.h"
#include "relay/client.h"
#include "relay/dns.h"

/* How long a destination's route (DNS answer) is reused. */
#define RELAY_ROUTE_TTL 60
/* How long an address whose STARTTLS handshake failed gets plaintext under
 * the `may` policy (Postfix does the same: RFC 7435 opportunistic TLS must
 * not make mail undeliverable). */
#define RELAY_NOTLS_TTL 3600
#define RELAY_NOTLS_MAX 256

struct rmsg;
struct rdest;
struct rconn;

/* The recipients of one message that go to one destination. */
struct rjob {
    struct rjob *next;          /* in the destination's queue */
    struct rmsg *msg;
    struct rdest *dest;
    size_t *index;              /* positions in msg->env->rcpts */
    struct client_msg cm;
    char *domain;
    char *where;                /* "host[addr]:port" of the last peer */
};

struct rmsg {
    struct rmsg *all_next;      /* relay->msgs */
    struct relay *relay;
    struct cfgref *cfg;
    struct queue_env *env;
    struct rjob **jobs;
    size_t njobs, outstanding;
};

struct raddr {
    struct dns_addr a;
    char *host;                 /* name for SNI/verification/logs */
    char text[80];              /* "[192.0.2.1]:25" */
};

struct rdest {
    struct rdest *next;
    char *key;                  /* "mx:example.net" or "host:smtp.example.com:587" */
    struct relay *relay;
    /* route */
    char *lookup;               /* domain or host to resolve */
    bool lookup_mx;             /* MX lookup (else A/AAAA of `lookup`) */
    bool literal_addr;          /* lookup is an IP address */
    uint16_t port;
    enum tls_policy policy;
    char *auth_user, *password;
    /* state */
    struct dns_query *query;
    bool resolved;
    time_t resolved_at;
    struct raddr *addrs; size_t naddrs;
    char route_error[300];      /* when the route failed */
    enum client_outcome route_outcome; /* CLIENT_NONE, or how the route failed */
    struct rjob *head, *tail;   /* waiting jobs */
    size_t njobs;
    size_t nconns;              /* connecting or connected */
    size_t nopening;            /* of which not ready yet */
    struct rconn *idle;         /* ready, no job */
};

struct rconn {
    struct rconn *next;         /* idle list / reap list */
    struct rconn *all_next;     /* relay->conns */
    struct rdest *dest;
    struct relay *relay;
    struct cfgref *cfg;         /* the client keeps pointers into it */
    int fd;
    struct event *ev;           /* connect wait, then idle timer */
    size_t addr_i;              /* address being tried */
    size_t tried;
    bool plaintext;             /* TLS failed on this address: retry without */
    struct smtp_client *cl;
    struct rjob *job;
    bool ready;                 /* the session reached `ready` at least once */
    char last_error[300];
};

struct notls {
    char addr[80];
    time_t until;
};

struct relay {
    struct queue *queue;
    struct cfgref *cfg;         /* current configuration */
    relay_done_fn done;
    void *done_arg;
    pthread_t thread;
    pthread_mutex_t mu;
    char **incoming; size_t nincoming;   /* ids submitted (under mu) */
    struct cfgref *new_cfg;              /* under mu */
    bool stopping;                       /* under mu */
    int wake_fd;
    struct event_base *base;
    struct event *wake_ev, *reap_ev;
    struct dns *dns;
    struct tls_client *tls;
    struct rdest *dests;
    size_t nconns;              /* all destinations */
    struct rconn *reap;         /* closed connections to free */
    struct rconn *conns;        /* every live connection */
    struct rmsg *msgs;          /* every message in hand */
    struct notls notls[RELAY_NOTLS_MAX];
};

static void dest_run(struct rdest *d);
static void relay_run_all(struct relay *r);

static const struct config *relay_cfg(const struct relay *r)
{
    return r->cfg->cfg;
}

/* ---- status texts ---- */

void relay_status_remote(const char *status, char *host_r, size_t cap)
{
    host_r[0] = '\0';
    const char *p = strstr(status, " (remote ");
    if (p == NULL) {
        p = strstr(status, " to ");
        if (p == NULL || strncmp(status, "250 ", 4) != 0)
            return;
        p += 4;
    } else {
        p += 9;
    }
    size_t n = strcspn(p, "[ )");
    if (n >= cap)
        n = cap - 1;
    memcpy(host_r, p, n);
    host_r[n] = '\0';
}

/* "451 X.Y.Z text" from a reason that may start with a reply code
 * ("421 4.3.2 ...", "554 5.7.1 ..."), an enhanced code ("4.7.5 ...") or
 * neither; the class is always 4: a destination problem is retried. */
static void relay_defer_text(const char *err, char *out, size_t cap)
{
    const char *p = err;
    if (p[0] >= '2' && p[0] <= '5' && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' &&
        p[2] <= '9' && (p[3] == ' ' || p[3] == '-'))
        p += 4;
    char enh[16] = "4.4.1";
    size_t n = strspn(p, "0123456789.");
    if (n >= 5 && n < sizeof(enh) && (p[0] == '2' || p[0] == '4' || p[0] == '5') &&
        p[1] == '.' && (p[n] == ' ' || p[n] == '\0')) {
        memcpy(enh, p, n);
        enh[n] = '\0';
        enh[0] = '4';
        p += n;
        while (*p == ' ')
            p++;
    }
    snprintf(out, cap, "451 %s %.*s", enh, (int)(cap > 40 ? cap - 40 : 1), p);
}

/* ---- TLS fallback memory ---- */

static bool notls_has(struct relay *r, const char *addr)
{
    time_t now = time(NULL);
    for (size_t i = 0; i < RELAY_NOTLS_MAX; i++)
        if (r->notls[i].until > now && strcmp(r->notls[i].addr, addr) == 0)
            return true;
    return false;
}

static void notls_add(struct relay *r, const char *addr)
{
    size_t oldest = 0;
    for (size_t i = 0; i < RELAY_NOTLS_MAX; i++)
        if (r->notls[i].until < r->notls[oldest].until)
            oldest = i;
    snprintf(r->notls[oldest].addr, sizeof(r->notls[oldest].addr), "%s", addr);
    r->notls[oldest].until = time(NULL) + RELAY_NOTLS_TTL;
}

/* ---- messages ---- */

static void rmsg_free(struct rmsg *m)
{
    for (size_t i = 0; i < m->njobs; i++) {
        struct rjob *j = m->jobs[i];
        free(j->index);
        free(j->cm.rcpts);
        free(j->domain);
        free(j->where);
        free(j);
    }
    free(m->jobs);
    queue_env_free(m->env);
    cfgref_put(m->cfg);
    free(m);
}

/* Every job of the message has outcomes: record them durably, hand the
 * message back to the queue manager. */
static void rmsg_finish(struct rmsg *m)
{
    struct relay *r = m->relay;
    const char *id = m->env->id;
    bool pending = false;
    for (size_t k = 0; k < m->njobs; k++) {
        struct rjob *j = m->jobs[k];
        for (size_t i = 0; i < j->cm.nrcpts; i++) {
            struct client_rcpt *cr = &j->cm.rcpts[i];
            enum queue_rcpt_state st = QUEUE_RCPT_PENDING;
            char text[800];
            switch (cr->outcome) {
            case CLIENT_OK:
                st = QUEUE_RCPT_DONE;
                snprintf(text, sizeof(text), "250 2.0.0 %s to %s: %s",
                         j->cm.peer_dsn ? "sent" : "relayed",
                         j->where != NULL ? j->where : "?", cr->reply);
                break;
            case CLIENT_PERM:
                st = QUEUE_RCPT_FAILED;
                snprintf(text, sizeof(text), "%s", cr->reply);
                break;
            default:
                pending = true;
                snprintf(text, sizeof(text), "%s", cr->reply[0] ? cr->reply
                         : "451 4.4.0 not attempted");
                break;
            }
            if (queue_rcpt_update(r->queue, id, j->index[i], st, text) < 0) {
                log_kv(LOG_WARN, "relay.update_failed", "qid", id, "rcpt", cr->address,
                       "error", strerror(errno), NULL);
                pending = true;
            }
            log_kv(st == QUEUE_RCPT_DONE ? LOG_INFO : LOG_WARN,
                   st == QUEUE_RCPT_DONE ? "relay.sent"
                   : st == QUEUE_RCPT_FAILED ? "relay.failed" : "relay.deferred",
                   "qid", id, "rcpt", cr->address, "status", text, NULL);
        }
    }
    r->done(id, pending, r->done_arg);
    for (struct rmsg **pp = &r->msgs; *pp != NULL; pp = &(*pp)->all_next)
        if (*pp == m) {
            *pp = m->all_next;
            break;
        }
    rmsg_free(m);
}

static void job_done(struct rjob *j)
{
    struct rmsg *m = j->msg;
    if (--m->outstanding == 0)
        rmsg_finish(m);
}

/* Fails a job without a connection (route failure, unreachable). */
static void job_fail(struct rjob *j, enum client_outcome how, const char *why)
{
    for (size_t i = 0; i < j->cm.nrcpts; i++)
        if (j->cm.rcpts[i].outcome == CLIENT_NONE) {
            j->cm.rcpts[i].outcome = how;
            snprintf(j->cm.rcpts[i].reply, sizeof(j->cm.rcpts[i].reply), "%s", why);
        }
    job_done(j);
}

/* ---- destinations ---- */

static struct rdest *dest_find(struct relay *r, const char *domain)
{
    const struct config *cfg = relay_cfg(r);
    const struct cfg_route *rt = config_route_find(cfg, domain);
    char key[600];
    if (rt != NULL && rt->host != NULL)
        snprintf(key, sizeof(key), "%s:%s:%u", rt->literal ? "host" : "mx", rt->host,
                 (unsigned)(rt->port ? rt->port : cfg->mx_port));
    else
        snprintf(key, sizeof(key), "mx:%s:%u", domain,
                 (unsigned)(rt != NULL && rt->port ? rt->port : cfg->mx_port));
    /* the TLS policy is part of a destination */
    enum tls_policy pol = rt != NULL && rt->tls_set ? rt->tls : cfg->relay_tls;
    size_t kl = strlen(key);
    snprintf(key + kl, sizeof(key) - kl, ":%s", config_tls_policy_name(pol));
    for (struct rdest *d = r->dests; d != NULL; d = d->next)
        if (strcmp(d->key, key) == 0)
            return d;
    struct rdest *d = xcalloc(1, sizeof(*d));
    d->key = xstrdup(key);
    d->relay = r;
    d->policy = pol;
    d->port = rt != NULL && rt->port ? rt->port : cfg->mx_port;
    if (rt != NULL && rt->host != NULL) {
        d->lookup = xstrdup(rt->host);
        d->lookup_mx = !rt->literal;
        unsigned char a[16];
        d->literal_addr = rt->literal && (inet_pton(AF_INET, rt->host, a) == 1 ||
                                          inet_pton(AF_INET6, rt->host, a) == 1);
        if (rt->auth_user != NULL) {
            d->auth_user = xstrdup(rt->auth_user);
            d->password = xstrdup(rt->password != NULL ? rt->password : "");
        }
    } else {
        d->lookup = xstrdup(domain);
        d->lookup_mx = true;
        /* RFC 5321 4.1.3 address literal as the domain: no DNS */
        size_t n = strlen(domain);
        if (n > 2 && domain[0] == '[' && domain[n - 1] == ']') {
            free(d->lookup);
            const char *a = domain + 1;
            if (strncasecmp(a, "IPv6:", 5) == 0)
                a += 5;
            d->lookup = xstrndup(a, (size_t)(domain + n - 1 - a));
            d->lookup_mx = false;
            d->literal_addr = true;
        }
    }
    d->next = r->dests;
    r->dests = d;
    return d;
}

static void dest_clear_addrs(struct rdest *d)
{
    for (size_t i = 0; i < d->naddrs; i++)
        free(d->addrs[i].host);
    free(d->addrs);
    d->addrs = NULL;
    d->naddrs = 0;
}

static void dest_free(struct rdest *d)
{
    if (d->query != NULL)
        dns_cancel(d->query);
    dest_clear_addrs(d);
    free(d->key);
    free(d->lookup);
    free(d->auth_user);
    if (d->password != NULL) {
        explicit_bzero(d->password, strlen(d->password));
        free(d->password);
    }
    free(d);
}

static void dest_enqueue(struct rdest *d, struct rjob *j)
{
    j->next = NULL;
    j->dest = d;
    if (d->tail != NULL)
        d->tail->next = j;
    else
        d->head = j;
    d->tail = j;
    d->njobs++;
}

static struct rjob *dest_dequeue(struct rdest *d)
{
    struct rjob *j = d->head;
    if (j != NULL) {
        d->head = j->next;
        if (d->head == NULL)
            d->tail = NULL;
        d->njobs--;
        j->next = NULL;
    }
    return j;
}

static void dest_fail_all(struct rdest *d, enum client_outcome how, const char *why)
{
    struct rjob *j;
    while ((j = dest_dequeue(d)) != NULL)
        job_fail(j, how, why);
}

/* Is this address one of ours (a listener of this server on that port)? */
static bool addr_is_self(const struct config *cfg, const struct dns_addr *a, uint16_t port)
{
    char text[INET6_ADDRSTRLEN];
    const void *raw = a->ss.ss_family == AF_INET
                          ? (const void *)&((const struct sockaddr_in *)&a->ss)->sin_addr
                          : (const void *)&((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
    if (inet_ntop(a->ss.ss_family, raw, text, sizeof(text)) == NULL)
        return false;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct cfg_listener *l = &cfg->listeners[i];
        if (l->role == ROLE_MX && l->port == port && strcmp(l->host, text) == 0)
            return true;
    }
    return false;
}

static void dest_add_addr(struct rdest *d, const struct dns_addr *a, const char *host)
{
    d->addrs = xreallocarray(d->addrs, d->naddrs + 1, sizeof(*d->addrs));
    struct raddr *ra = &d->addrs[d->naddrs++];
    memset(ra, 0, sizeof(*ra));
    ra->a = *a;
    ra->host = xstrdup(host);
    char text[INET6_ADDRSTRLEN] = "?";
    if (a->ss.ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ra->a.ss;
        sin->sin_port = htons(d->port);
        inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text));
        snprintf(ra->text, sizeof(ra->text), "[%s]:%u", text, (unsigned)d->port);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ra->a.ss;
        sin6->sin6_port = htons(d->port);
        inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof(text));
        snprintf(ra->text, sizeof(ra->text), "[%s]:%u", text, (unsigned)d->port);
    }
}

static void dest_on_route(struct dns_route *rt, void *arg)
{
    struct rdest *d = arg;
    struct relay *r = d->relay;
    const struct config *cfg = relay_cfg(r);
    d->query = NULL;
    d->resolved = true;
    d->resolved_at = time(NULL);
    dest_clear_addrs(d);
    d->route_outcome = CLIENT_NONE;
    d->route_error[0] = '\0';
    switch (rt->status) {
    case DNS_OK: {
        /* RFC 5321 5.1: if this server is one of the MX hosts, only hosts
         * with a lower preference number may be used. */
        size_t nhosts = rt->nhosts;
        for (size_t h = 0; h < rt->nhosts && nhosts == rt->nhosts; h++) {
            bool self = strcasecmp(rt->hosts[h].name, cfg->hostname) == 0;
            for (size_t k = 0; k < rt->hosts[h].naddrs && !self; k++)
                self = addr_is_self(cfg, &rt->hosts[h].addrs[k], d->port);
            if (self) {
                nhosts = h;
                while (nhosts > 0 && rt->hosts[nhosts - 1].pref == rt->hosts[h].pref)
                    nhosts--;
            }
        }
        size_t max = cfg->limits[LIM_MX_ADDRESSES];
        for (size_t h = 0; h < nhosts; h++)
            for (size_t k = 0; k < rt->hosts[h].naddrs && d->naddrs < max; k++)
                dest_add_addr(d, &rt->hosts[h].addrs[k], rt->hosts[h].name);
        if (nhosts == 0 && rt->nhosts > 0) {
            d->route_outcome = CLIENT_PERM;
            snprintf(d->route_error, sizeof(d->route_error),
                     "554 5.4.6 mail for %s loops back to myself (this server "
                     "is its best MX host)", d->lookup);
        } else if (d->naddrs == 0) {
            d->route_outcome = CLIENT_TEMP;
            snprintf(d->route_error, sizeof(d->route_error),
                     "451 4.4.4 no usable address for %s", d->lookup);
        }
        break;
    }
    case DNS_NOTFOUND:
        d->route_outcome = CLIENT_PERM;
        snprintf(d->route_error, sizeof(d->route_error),
                 "550 5.1.2 host or domain name not found: %s", rt->error);
        break;
    case DNS_NULLMX:
        d->route_outcome = CLIENT_PERM;
        snprintf(d->route_error, sizeof(d->route_error),
                 "556 5.1.10 %s does not accept mail (null MX, RFC 7505)", d->lookup);
        break;
    case DNS_TEMPFAIL:
    case DNS_BOGUS:
    default:
        d->route_outcome = CLIENT_TEMP;
        snprintf(d->route_error, sizeof(d->route_error),
                 "451 4.4.3 DNS lookup failed, will retry: %s", rt->error);
        break;
    }
    log_kv(d->route_outcome == CLIENT_NONE ? LOG_DEBUG : LOG_INFO, "relay.route",
           "destination", d->key, "addresses", d->naddrs > 0 ? d->addrs[0].text : "",
           "secure", rt->secure ? "yes" : "no", "error", d->route_error, NULL);
    dns_route_free(rt);
    /* A failed route is not cached: the next message tries again. */
    if (d->route_outcome != CLIENT_NONE) {
        d->resolved = false;
        dest_fail_all(d, d->route_outcome, d->route_error);
        return;
    }
    dest_run(d);
}

static void dest_resolve(struct rdest *d)
{
    struct relay *r = d->relay;
    if (d->query != NULL)
        return;
    if (d->literal_addr) {
        struct dns_addr a;
        memset(&a, 0, sizeof(a));
        struct sockaddr_in *sin = (struct sockaddr_in *)&a.ss;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.ss;
        if (inet_pton(AF_INET, d->lookup, &sin->sin_addr) == 1) {
            sin->sin_family = AF_INET;
            a.len = sizeof(*sin);
        } else if (inet_pton(AF_INET6, d->lookup, &sin6->sin6_addr) == 1) {
            sin6->sin6_family = AF_INET6;
            a.len = sizeof(*sin6);
        } else {
            dest_fail_all(d, CLIENT_PERM, "553 5.1.3 invalid address literal");
            return;
        }
        dest_clear_addrs(d);
        char name[80];
        snprintf(name, sizeof(name), "[%s]", d->lookup);
        dest_add_addr(d, &a, name);
        d->resolved = true;
        d->resolved_at = time(NULL);
        dest_run(d);
        return;
    }
    d->query = d->lookup_mx ? dns_lookup_mx(r->dns, d->lookup, dest_on_route, d)
                            : dns_lookup_host(r->dns, d->lookup, dest_on_route, d);
    if (d->query == NULL)
        dest_fail_all(d, CLIENT_PERM, "553 5.1.2 invalid domain name");
}

/* ---- connections ---- */

static void conn_on_ready(struct smtp_client *cl, void *arg);
static void conn_on_done(struct smtp_client *cl, struct client_msg *m, void *arg);
static void conn_on_closed(struct smtp_client *cl, enum client_outcome how,
                           const char *reason, bool tls_failed, void *arg);
static void conn_try(struct rconn *c);

static const struct client_cb conn_cbs = {conn_on_ready, conn_on_done, conn_on_closed};

/* Takes c off its destination's idle list (if it is there). */
static void idle_remove(struct rconn *c)
{
    for (struct rconn **pp = &c->dest->idle; *pp != NULL; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    c->next = NULL;
}

static void rconn_retire(struct rconn *c)
{
    struct relay *r = c->relay;
    struct rdest *d = c->dest;
    if (c->ev != NULL) {
        event_free(c->ev);
        c->ev = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    idle_remove(c);
    d->nconns--;
    r->nconns--;
    if (!c->ready)
        d->nopening--;
    for (struct rconn **pp = &r->conns; *pp != NULL; pp = &(*pp)->all_next)
        if (*pp == c) {
            *pp = c->all_next;
            break;
        }
    c->next = r->reap;
    r->reap = c;
    static const struct timeval now = {0, 0};
    evtimer_add(r->reap_ev, &now);
}

static void relay_on_reap(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct relay *r = arg;
    while (r->reap != NULL) {
        struct rconn *c = r->reap;
        r->reap = c->next;
        client_free(c->cl);
        cfgref_put(c->cfg);
        free(c);
    }
    relay_run_all(r);
}

/* All addresses failed before a session: the waiting jobs are deferred
 * unless another connection to the destination is working on them. */
static void conn_give_up(struct rconn *c)
{
    struct rdest *d = c->dest;
    /* Whatever went wrong (no answer, a refused or broken session), it is
     * about the destination, not a recipient: deferred, keeping the
     * enhanced code of the reason when it has one. */
    char why[400];
    relay_defer_text(c->last_error[0] ? c->last_error
                     : "no server of the destination answered", why, sizeof(why));
    bool others = d->nconns > 1;
    if (c->job != NULL) {
        struct rjob *j = c->job;
        c->job = NULL;
        job_fail(j, CLIENT_TEMP, why);
    }
    rconn_retire(c);
    if (!others) {
        d->resolved = false; /* look the route up again next time */
        dest_fail_all(d, CLIENT_TEMP, why);
    }
}

static void conn_next_address(struct rconn *c)
{
    c->addr_i++;
    c->tried++;
    c->plaintext = false;
    if (c->addr_i >= c->dest->naddrs ||
        c->tried >= relay_cfg(c->relay)->limits[LIM_MX_ADDRESSES]) {
        conn_give_up(c);
        return;
    }
    conn_try(c);
}

static void conn_on_connect(evutil_socket_t fd, short what, void *arg)
{
    struct rconn *c = arg;
    struct rdest *d = c->dest;
    struct relay *r = c->relay;
    const struct raddr *ra = &d->addrs[c->addr_i];
    int err = ETIMEDOUT;
    if (what & EV_WRITE) {
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
    }
    event_free(c->ev);
    c->ev = NULL;
    if (err != 0) {
        snprintf(c->last_error, sizeof(c->last_error), "connect to %s%s: %s",
                 ra->host, ra->text, strerror(err));
        log_kv(LOG_INFO, "relay.connect_failed", "destination", d->key,
               "peer", ra->text, "error", strerror(err), NULL);
        close(c->fd);
        c->fd = -1;
        conn_next_address(c);
        return;
    }
    const struct config *cfg = c->cfg->cfg;
    struct client_params p = {
        .cfg = cfg,
        .tls = r->tls,
        .policy = d->policy,
        .host = ra->host,
        .addr = ra->text,
        .no_tls = c->plaintext || notls_has(r, ra->text),
        .auth_user = d->auth_user,
        .password = d->password,
    };
    int sock = c->fd;
    c->fd = -1;
    c->cl = client_new(r->base, sock, &p, &conn_cbs, c);
}

static void conn_try(struct rconn *c)
{
    struct rdest *d = c->dest;
    const struct raddr *ra = &d->addrs[c->addr_i];
    int fd = socket(ra->a.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(c->last_error, sizeof(c->last_error), "socket: %s", strerror(errno));
        conn_next_address(c);
        return;
    }
    c->fd = fd;
    if (connect(fd, (const struct sockaddr *)&ra->a.ss, ra->a.len) < 0 &&
        errno != EINPROGRESS) {
        snprintf(c->last_error, sizeof(c->last_error), "connect to %s%s: %s",
                 ra->host, ra->text, strerror(errno));
        close(fd);
        c->fd = -1;
        conn_next_address(c);
        return;
    }
    c->ev = event_new(c->relay->base, fd, EV_WRITE, conn_on_connect, c);
    struct timeval tv = {(time_t)relay_cfg(c->relay)->limits[LIM_TIMEOUT_CONNECT], 0};
    event_add(c->ev, &tv);
}

static void conn_open(struct rdest *d)
{
    struct relay *r = d->relay;
    struct rconn *c = xcalloc(1, sizeof(*c));
    c->dest = d;
    c->relay = r;
    c->cfg = cfgref_get(r->cfg);
    c->fd = -1;
    d->nconns++;
    d->nopening++;
    r->nconns++;
    c->all_next = r->conns;
    r->conns = c;
    conn_try(c);
}

static void conn_on_idle_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rconn *c = arg;
    idle_remove(c);
    client_quit(c->cl);   /* closed() follows and retires it */
}

/* A ready connection: the next job, or idle for a while. */
static void conn_take_job(struct rconn *c)
{
    struct rdest *d = c->dest;
    const struct config *cfg = relay_cfg(c->relay);
    if (c->ev != NULL) {
        event_free(c->ev);
        c->ev = NULL;
    }
    if (client_messages(c->cl) >= cfg->limits[LIM_RELAY_MESSAGES_PER_CONNECTION]) {
        client_quit(c->cl);
        return;
    }
    struct rjob *j = dest_dequeue(d);
    if (j != NULL) {
        c->job = j;
        /* the id shown in logs; sent status texts say where it went */
        client_send(c->cl, &j->cm);
        return;
    }
    if (cfg->limits[LIM_RELAY_IDLE] == 0) {
        client_quit(c->cl);
        return;
    }
    c->next = d->idle;
    d->idle = c;
    c->ev = evtimer_new(c->relay->base, conn_on_idle_timeout, c);
    struct timeval tv = {(time_t)cfg->limits[LIM_RELAY_IDLE], 0};
    evtimer_add(c->ev, &tv);
}

static void conn_on_ready(struct smtp_client *cl, void *arg)
{
    (void)cl;
    struct rconn *c = arg;
    if (!c->ready)
        c->dest->nopening--;
    c->ready = true;
    conn_take_job(c);
}

static void conn_on_done(struct smtp_client *cl, struct client_msg *m, void *arg)
{
    (void)cl;
    (void)m;
    struct rconn *c = arg;
    struct rjob *j = c->job;
    c->job = NULL;
    if (j == NULL)
        return;
    /* Where it went, for the status texts (rmsg_finish). */
    const struct raddr *ra = &c->dest->addrs[c->addr_i];
    char where[400];
    snprintf(where, sizeof(where), "%s%s", ra->host, ra->text);
    for (size_t i = 0; i < j->cm.nrcpts; i++) {
        struct client_rcpt *cr = &j->cm.rcpts[i];
        if (cr->outcome == CLIENT_PERM || cr->outcome == CLIENT_TEMP) {
            size_t n = strlen(cr->reply);
            if (n + strlen(where) + 12 < sizeof(cr->reply) && cr->reply[0] != '\0' &&
                cr->reply[0] >= '2' && cr->reply[0] <= '5' && strstr(cr->reply, "(remote ") == NULL)
                snprintf(cr->reply + n, sizeof(cr->reply) - n, " (remote %s)", where);
        }
    }
    free(j->where);
    j->where = xstrdup(where);
    job_done(j);
    if (!client_closed(c->cl))
        conn_take_job(c);
}

static void conn_on_closed(struct smtp_client *cl, enum client_outcome how,
                           const char *reason, bool tls_failed, void *arg)
{
    (void)cl;
    (void)how;
    struct rconn *c = arg;
    struct relay *r = c->relay;
    struct rdest *d = c->dest;
    if (c->ev != NULL) {
        event_free(c->ev);
        c->ev = NULL;
    }
    idle_remove(c);
    if (c->ready) {
        rconn_retire(c);
        return;
    }
    /* The session never started: the next address (or this one again in
     * plaintext after a failed handshake under the `may` policy). */
    const struct raddr *ra = &d->addrs[c->addr_i];
    snprintf(c->last_error, sizeof(c->last_error), "%s (%s%s)", reason, ra->host, ra->text);
    struct smtp_client *old = c->cl;
    c->cl = NULL;
    /* freed from the reap event, never inside its own callback */
    struct rconn *husk = xcalloc(1, sizeof(*husk));
    husk->cl = old;
    husk->cfg = cfgref_get(c->cfg);
    husk->next = r->reap;
    r->reap = husk;
    static const struct timeval now = {0, 0};
    evtimer_add(r->reap_ev, &now);
    if (tls_failed && d->policy == TLS_POLICY_MAY && !c->plaintext) {
        notls_add(r, ra->text);
        c->plaintext = true;
        conn_try(c);
        return;
    }
    conn_next_address(c);
}

/* ---- scheduling ---- */

static void dest_run(struct rdest *d)
{
    struct relay *r = d->relay;
    const struct config *cfg = relay_cfg(r);
    if (d->head == NULL)
        return;
    if (!d->resolved || time(NULL) - d->resolved_at > RELAY_ROUTE_TTL) {
        if (d->nconns == 0) {
            d->resolved = false;
            dest_resolve(d);
            return;
        }
    }
    while (d->head != NULL && d->idle != NULL) {
        struct rconn *c = d->idle;
        d->idle = c->next;
        c->next = NULL;
        conn_take_job(c);
    }
    /* New connections for the jobs no connection is being opened for,
     * within the limits. */
    size_t per_dest = cfg->limits[LIM_RELAY_CONNECTIONS_PER_DESTINATION];
    size_t total = cfg->limits[LIM_RELAY_CONNECTIONS];
    while (d->resolved && d->naddrs > 0 && d->nopening < d->njobs &&
           d->nconns < per_dest && r->nconns < total)
        conn_open(d);
}

static void relay_run_all(struct relay *r)
{
    struct rdest **pp = &r->dests;
    while (*pp != NULL) {
        struct rdest *d = *pp;
        if (d->head == NULL && d->nconns == 0 && d->query == NULL &&
            (!d->resolved || time(NULL) - d->resolved_at > RELAY_ROUTE_TTL)) {
            *pp = d->next;
            dest_free(d);
            continue;
        }
        dest_run(d);
        pp = &d->next;
    }
}

/* Loads a message and queues its pending recipients per destination. */
static void relay_take(struct relay *r, const char *id)
{
    struct queue_env *env;
    int lr = queue_load(r->queue, id, &env);
    if (lr < 0) {
        log_kv(LOG_WARN, "relay.load_failed", "qid", id, "error",
               lr == -2 ? "corrupt" : strerror(errno), NULL);
        r->done(id, lr != -2 && errno != ENOENT, r->done_arg);
        return;
    }
    struct rmsg *m = xcalloc(1, sizeof(*m));
    m->relay = r;
    m->cfg = cfgref_get(r->cfg);
    m->env = env;
    bool body_8bit = false;
    if (env->flags & (QUEUE_F_8BITMIME | QUEUE_F_BINARYMIME)) {
        struct queue_body *b;
        if (queue_body_open(r->queue, id, &b) == 0) {
            char chunk[16384];
            ssize_t n;
            while (!body_8bit && (n = queue_body_read(b, chunk, sizeof(chunk))) > 0)
                for (ssize_t i = 0; i < n && !body_8bit; i++)
                    body_8bit = (unsigned char)chunk[i] >= 0x80;
            queue_body_close(b);
        }
    }
    for (size_t i = 0; i < env->nrcpts; i++) {
        struct queue_rcpt *qr = &env->rcpts[i];
        if (qr->state != QUEUE_RCPT_PENDING)
            continue;
        const char *at = strrchr(qr->address, '@');
        char domain[300];
        snprintf(domain, sizeof(domain), "%s", at != NULL ? at + 1 : "");
        for (char *p = domain; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        struct rjob *j = NULL;
        for (size_t k = 0; k < m->njobs; k++)
            if (strcmp(m->jobs[k]->domain, domain) == 0)
                j = m->jobs[k];
        if (j == NULL) {
            j = xcalloc(1, sizeof(*j));
            j->msg = m;
            j->domain = xstrdup(domain);
            j->cm = (struct client_msg){
                .q = r->queue, .id = env->id, .sender = env->sender, .ret = env->ret,
                .envid = env->envid, .size = env->body_size, .body_8bit = body_8bit,
                .smtputf8 = (env->flags & QUEUE_F_SMTPUTF8) != 0,
            };
            m->jobs = xreallocarray(m->jobs, m->njobs + 1, sizeof(*m->jobs));
            m->jobs[m->njobs++] = j;
        }
        j->index = xreallocarray(j->index, j->cm.nrcpts + 1, sizeof(*j->index));
        j->cm.rcpts = xreallocarray(j->cm.rcpts, j->cm.nrcpts + 1, sizeof(*j->cm.rcpts));
        j->index[j->cm.nrcpts] = i;
        struct client_rcpt *cr = &j->cm.rcpts[j->cm.nrcpts++];
        memset(cr, 0, sizeof(*cr));
        cr->address = qr->address;
        cr->orcpt = qr->orcpt;
        cr->notify = qr->notify;
    }
    if (m->njobs == 0) {
        r->done(id, false, r->done_arg);
        rmsg_free(m);
        return;
    }
    m->all_next = r->msgs;
    r->msgs = m;
    /* Destinations first, then run them; the extra count keeps a job that
     * fails at once (a bad domain) from finishing the message while the
     * others are being queued. */
    m->outstanding = m->njobs + 1;
    for (size_t k = 0; k < m->njobs; k++)
        dest_enqueue(dest_find(r, m->jobs[k]->domain), m->jobs[k]);
    for (size_t k = 0; k < m->njobs; k++)
        dest_run(m->jobs[k]->dest);
    if (--m->outstanding == 0)
        rmsg_finish(m);
}

static void relay_on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct relay *r = arg;
    uint64_t v;
    if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        log_kv(LOG_WARN, "relay.wake", "error", strerror(errno), NULL);
    pthread_mutex_lock(&r->mu);
    char **ids = r->incoming;
    size_t n = r->nincoming;
    r->incoming = NULL;
    r->nincoming = 0;
    struct cfgref *nc = r->new_cfg;
    r->new_cfg = NULL;
    bool stop = r->stopping;
    pthread_mutex_unlock(&r->mu);
    if (nc != NULL) {
        cfgref_put(r->cfg);
        r->cfg = nc;
    }
    for (size_t i = 0; i < n; i++) {
        if (!stop)
            relay_take(r, ids[i]);
        free(ids[i]);
    }
    free(ids);
    if (stop)
        event_base_loopbreak(r->base);
}

static void *relay_thread(void *arg)
{
    struct relay *r = arg;
    pthread_setname_np(pthread_self(), "relay"); /* ps -L, top -H */
    event_base_dispatch(r->base);
    return NULL;
}

static void relay_wake(struct relay *r)
{
    uint64_t one = 1;
    if (write(r->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_kv(LOG_WARN, "relay.wake", "error", strerror(errno), NULL);
}

struct relay *relay_start(struct queue *q, struct cfgref *cfg, relay_done_fn done,
                          void *done_arg, struct buf *err_r)
{
    struct relay *r = xcalloc(1, sizeof(*r));
    r->queue = q;
    r->cfg = cfgref_get(cfg);
    r->done = done;
    r->done_arg = done_arg;
    pthread_mutex_init(&r->mu, NULL);
    r->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    r->base = event_base_new();
    const struct config *c = cfg->cfg;
    struct dns_config dc = {
        .servers = (const char *const *)c->dns_servers,
        .nservers = c->ndns_servers,
        .trust_anchor_file = c->dns_trust_anchor,
        .timeout = (unsigned)c->limits[LIM_TIMEOUT_DNS],
        .max_addresses = c->limits[LIM_MX_ADDRESSES],
    };
    if (r->wake_fd < 0 || r->base == NULL) {
        buf_appendf(err_r, "relay: %s", strerror(errno));
        goto fail;
    }
    r->dns = dns_new(r->base, &dc, err_r);
    if (r->dns == NULL)
        goto fail;
    r->tls = tls_client_new(c->relay_tls_ca, err_r);
    if (r->tls == NULL)
        goto fail;
    r->wake_ev = event_new(r->base, r->wake_fd, EV_READ | EV_PERSIST, relay_on_wake, r);
    r->reap_ev = evtimer_new(r->base, relay_on_reap, r);
    event_add(r->wake_ev, NULL);
    if (pthread_create(&r->thread, NULL, relay_thread, r) != 0) {
        buf_appendf(err_r, "relay: cannot start its thread");
        goto fail;
    }
    return r;
fail:
    if (r->wake_ev != NULL)
        event_free(r->wake_ev);
    if (r->reap_ev != NULL)
        event_free(r->reap_ev);
    if (r->dns != NULL)
        dns_free(r->dns);
    tls_client_unref(r->tls);
    if (r->base != NULL)
        event_base_free(r->base);
    if (r->wake_fd >= 0)
        close(r->wake_fd);
    cfgref_put(r->cfg);
    pthread_mutex_destroy(&r->mu);
    free(r);
    return NULL;
}

void relay_submit(struct relay *r, const char *id)
{
    pthread_mutex_lock(&r->mu);
    r->incoming = xreallocarray(r->incoming, r->nincoming + 1, sizeof(*r->incoming));
    r->incoming[r->nincoming++] = xstrdup(id);
    pthread_mutex_unlock(&r->mu);
    relay_wake(r);
}

void relay_set_config(struct relay *r, struct cfgref *cfg)
{
    pthread_mutex_lock(&r->mu);
    if (r->new_cfg != NULL)
        cfgref_put(r->new_cfg);
    r->new_cfg = cfgref_get(cfg);
    pthread_mutex_unlock(&r->mu);
    relay_wake(r);
}

void relay_stop(struct relay *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_mutex_unlock(&r->mu);
    relay_wake(r);
    pthread_join(r->thread, NULL);
    /* Everything in flight is dropped: recipients stay pending in the
     * queue and are sent after the next start. */
    for (size_t i = 0; i < r->nincoming; i++)
        free(r->incoming[i]);
    free(r->incoming);
    if (r->new_cfg != NULL)
        cfgref_put(r->new_cfg);
    /* Connections first (they point at jobs and destinations), then the
     * messages (which own the jobs), then the destinations. */
    while (r->conns != NULL) {
        struct rconn *c = r->conns;
        r->conns = c->all_next;
        if (c->ev != NULL)
            event_free(c->ev);
        if (c->fd >= 0)
            close(c->fd);
        client_free(c->cl);
        cfgref_put(c->cfg);
        free(c);
    }
    while (r->msgs != NULL) {
        struct rmsg *m = r->msgs;
        r->msgs = m->all_next;
        rmsg_free(m);
    }
    while (r->dests != NULL) {
        struct rdest *d = r->dests;
        r->dests = d->next;
        dest_free(d);
    }
    r->nconns = 0;
    relay_on_reap(-1, 0, r);
    event_free(r->wake_ev);
    event_free(r->reap_ev);
    dns_free(r->dns);
    tls_client_unref(r->tls);
    event_base_free(r->base);
    close(r->wake_fd);
    cfgref_put(r->cfg);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
