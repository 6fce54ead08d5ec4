/*
 * dns: mail routing through DNS (RFC 5321 5.1, RFC 7505) with libunbound,
 * driven by a libevent loop.
 *
 * A lookup of a domain asks for its MX records, then for the A and AAAA
 * records of the best MX hosts (in parallel), and hands back one
 * struct dns_route: the hosts by preference, their addresses, a status that
 * says whether to deliver, bounce or defer, and whether every answer used
 * was DNSSEC-validated. doc/dns.md explains the status mapping.
 *
 * Threads and processes:
 *  - A struct dns belongs to the thread that runs its event_base: create,
 *    use and free it there (or before the loop runs). It is not shared.
 *  - libunbound resolves in a thread of its own (ub_ctx_async(ctx, 1); its
 *    fork mode is never used, because forking a multi-threaded process is
 *    unsafe). That thread is created at the first lookup, with every signal
 *    blocked, and answers come back through a pipe (ub_fd) that the event
 *    loop watches; callbacks always run on the loop's thread.
 *  - After fork() the child must not use a struct dns (its resolver thread
 *    does not exist there); exec or _exit.
 *
 * Callbacks are never called from inside dns_lookup_* or from inside
 * libunbound: the result is delivered by an event of its own, so a
 * callback may call dns_free, dns_cancel or start new lookups.
 *
 * Names: a domain or host is a DNS name of LDH labels (letters, digits,
 * hyphen; no label starts or ends with a hyphen), 1..63 octets per label,
 * at most 253 octets, no empty labels; one trailing dot is allowed. It is
 * looked up as an absolute name (no search list), in lower case. MX targets
 * received from DNS must pass the same check or they are ignored.
 * /etc/hosts is never read.
 */
#ifndef ESTAFETA_RELAY_DNS_H
#define ESTAFETA_RELAY_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "lib/buf.h"

struct event_base;

/* MX hosts looked up per domain when dns_config.max_hosts is 0. */
#define DNS_MAX_HOSTS_DEFAULT 20
/* Longest name in text form without the trailing dot (RFC 1035 2.3.4). */
#define DNS_NAME_MAX 253

struct dns_config {
    /* nservers resolver addresses "127.0.0.1", "127.0.0.1@5353",
     * "::1@53"; 0 servers: the nameservers of /etc/resolv.conf. They are
     * used as forwarders (they must do recursion). */
    const char *const *servers;
    size_t nservers;
    /* NULL: no DNSSEC validation (answers are never "secure"); else a root
     * key file (unbound-anchor format, e.g. /usr/share/dns/root.key) and
     * answers are validated. The file is only read, never updated. */
    const char *trust_anchor_file;
    /* Seconds for one whole lookup (MX + addresses); past it: DNS_TEMPFAIL
     * (or the hosts that did resolve, see dns_route). 0: the default of
     * LIM_TIMEOUT_DNS. */
    unsigned timeout;
    /* Cap on addresses returned across all hosts (LIM_MX_ADDRESSES).
     * 0: the default of LIM_MX_ADDRESSES. */
    size_t max_addresses;
    /* Added: cap on the MX hosts looked up, best preferences first.
     * 0: DNS_MAX_HOSTS_DEFAULT. */
    size_t max_hosts;
};

struct dns;

/* NULL and a reason in err_r when the configuration is unusable (bad
 * server address, unreadable trust anchor, resolv.conf unreadable...). */
struct dns *dns_new(struct event_base *base, const struct dns_config *c,
                    struct buf *err_r);
/* Cancels outstanding lookups; their callbacks are not called. Joins
 * libunbound's thread. NULL is fine. */
void dns_free(struct dns *d);

enum dns_status {
    DNS_OK,
    DNS_NOTFOUND,  /* permanent: NXDOMAIN, or no MX and no A/AAAA (RFC 5321
                      5.1), or every MX host does not exist */
    DNS_NULLMX,    /* permanent: RFC 7505 null MX ("0 ." as the only MX) */
    DNS_TEMPFAIL,  /* SERVFAIL, REFUSED, timeout, network error: retry
                      later */
    DNS_BOGUS,     /* DNSSEC validation failed: temporary (RFC 7672 treats
                      it as a failure to defer) */
};

/* port 0: the caller sets it */
struct dns_addr { struct sockaddr_storage ss; socklen_t len; };

struct dns_host {
    char *name;            /* MX target (lower case, no trailing dot), or the
                              domain itself for an implicit MX */
    unsigned pref;
    enum dns_status status;   /* of this host's A/AAAA lookups: DNS_OK when
                                 it has an address */
    bool secure;           /* both its A and AAAA answers were validated */
    struct dns_addr *addrs;   /* IPv4 and IPv6, A first then AAAA */
    size_t naddrs;
};

/*
 * The route. hosts holds every MX host that was looked up (at most
 * max_hosts), in the order to try them; a host whose lookups failed stays in
 * the list with its status and naddrs 0, so it is skipped by trying
 * addresses in order, and can still be named in logs. An address that two
 * hosts share is listed once (under the better host); the total across
 * hosts is at most max_addresses, so hosts late in the list may have none.
 *
 * status: DNS_OK when at least one address was found (even if other hosts
 * failed or timed out); else DNS_TEMPFAIL if any host failed temporarily,
 * else DNS_BOGUS if any failed validation, else DNS_NOTFOUND. For
 * DNS_NULLMX, DNS_NOTFOUND from the MX lookup itself, and failures of the
 * MX lookup, hosts is empty.
 */
struct dns_route {
    enum dns_status status;
    bool secure;           /* every answer used was DNSSEC-validated (for
                              DANE later) */
    bool implicit;         /* no MX: the domain's own A/AAAA (RFC 5321 5.1) */
    struct dns_host *hosts; /* by preference, random order among equal
                               preferences */
    size_t nhosts;
    char error[200];       /* human text when status != DNS_OK, for logs and
                              DSNs, e.g. "example.invalid: host not found
                              (NXDOMAIN, type MX)"; "" when DNS_OK. Printable
                              ASCII only. */
};

/* The callback owns r: dns_route_free. */
typedef void (*dns_route_cb)(struct dns_route *r, void *arg);

struct dns_query;

/* MX lookup of domain then A/AAAA of the hosts (in parallel). Never calls cb
 * before returning (always from the event loop), even for an immediate
 * error. Returns NULL only for an invalid domain (then nothing is called).
 * The returned handle is valid until cb is called or dns_cancel. */
struct dns_query *dns_lookup_mx(struct dns *d, const char *domain,
                                dns_route_cb cb, void *arg);
/* A/AAAA of one host name (a configured smarthost): one dns_host with pref
 * 0, implicit=false. Added: an IPv4 or IPv6 address literal, bare or in
 * brackets ("192.0.2.1", "::1", "[::1]"), is returned as that address
 * without a query (secure=false). NULL only for an invalid name. */
struct dns_query *dns_lookup_host(struct dns *d, const char *host,
                                  dns_route_cb cb, void *arg);
/* cb will not be called. Only for a query whose cb has not run yet. */
void dns_cancel(struct dns_query *q);
/* NULL is fine. */
void dns_route_free(struct dns_route *r);

/* Pure, for tests: stable sort by pref with random order among equals
 * using rand_fn. */
void dns_hosts_sort(struct dns_host *h, size_t n,
                    uint32_t (*rand_fn)(void *), void *rand_arg);

/* Added, pure: whether name is a valid domain as described above. */
bool dns_name_valid(const char *name);

/* Added: short text for a status ("ok", "notfound", "nullmx", "tempfail",
 * "bogus"), for logs. */
const char *dns_status_name(enum dns_status s);

#endif
