/*
 * config_relay: the outbound-delivery part of the configuration (issue 5):
 * routes (smarthosts and per-domain transports), the TLS policy for
 * outbound connections, and the DNS resolver. Kept apart from config.c so
 * that file stays a readable size; config.c calls these for the directives
 *
 *   route DOMAIN NEXTHOP [tls=POLICY] [auth=USER] [password-file=FILE]
 *   relay-tls POLICY            default policy: none|may|encrypt|verify
 *   relay-tls-ca FILE           CA bundle for `verify` (default: system store)
 *   dns-resolver ADDR[@PORT]... resolvers (default: /etc/resolv.conf)
 *   dns-trust-anchor FILE|none  DNSSEC validation (default: none)
 *   mx-port PORT                port of MX hosts (default 25; tests)
 *
 * Contract: pure (no I/O); each function returns 0, or -1 with a message
 * in err (capacity errlen) for config.c to prefix with FILE:LINE.
 */
#ifndef ESTAFETA_CONF_CONFIG_RELAY_H
#define ESTAFETA_CONF_CONFIG_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tls_policy {
    TLS_POLICY_NONE,     /* never STARTTLS */
    TLS_POLICY_MAY,      /* STARTTLS when offered; plaintext otherwise */
    TLS_POLICY_ENCRYPT,  /* STARTTLS required, certificate not checked */
    TLS_POLICY_VERIFY,   /* STARTTLS required, certificate verified against
                            the CA store and the next-hop name */
};

struct cfg_route {
    char *domain;         /* lower case; "*" = every domain without a route */
    char *host;           /* NULL: MX of the recipient domain; else a host
                             name (MX lookup, as Postfix's relayhost) or,
                             with literal, a name or address used as is */
    bool literal;         /* [host]: no MX lookup */
    uint16_t port;        /* 0: mx-port */
    enum tls_policy tls;
    bool tls_set;         /* tls= given; else the relay-tls default */
    char *auth_user;      /* NULL: no AUTH */
    char *password_file;  /* with auth_user; read by config_load */
    char *password;       /* filled by config_load (first line of the file) */
    size_t line;
};

struct config;

int config_route_parse(char **words, size_t n, struct cfg_route *r_r,
                       char *err, size_t errlen);
void config_route_free(struct cfg_route *r);
int config_tls_policy_parse(const char *s, enum tls_policy *p_r);
const char *config_tls_policy_name(enum tls_policy p);
/* "127.0.0.1", "::1", "127.0.0.1@5353", "[::1]@53" -> canonical "addr@port"
 * as libunbound takes it, malloc'd into *out_r. */
int config_dns_server_parse(const char *s, char **out_r, char *err, size_t errlen);
/* The route for a recipient domain (lower case): its own, else "*", else
 * NULL (DNS MX with the default policy). */
const struct cfg_route *config_route_find(const struct config *cfg,
                                          const char *domain);

#endif
