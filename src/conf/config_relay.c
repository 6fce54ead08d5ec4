/* config_relay: see config_relay.h. */
#include "conf/config_relay.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/config.h"
#include "lib/xalloc.h"

static const char *const policy_names[] = {
    [TLS_POLICY_NONE] = "none", [TLS_POLICY_MAY] = "may",
    [TLS_POLICY_ENCRYPT] = "encrypt", [TLS_POLICY_VERIFY] = "verify",
};

int config_tls_policy_parse(const char *s, enum tls_policy *p_r)
{
    for (size_t i = 0; i < sizeof(policy_names) / sizeof(policy_names[0]); i++)
        if (strcmp(s, policy_names[i]) == 0) {
            *p_r = (enum tls_policy)i;
            return 0;
        }
    return -1;
}

const char *config_tls_policy_name(enum tls_policy p)
{
    return (unsigned)p < sizeof(policy_names) / sizeof(policy_names[0])
               ? policy_names[p] : "?";
}

/* LDH labels, 1..253 octets: what may follow RCPT TO's @ and what DNS can
 * look up. */
static bool domain_ok(const char *s)
{
    size_t n = strlen(s), label = 0;
    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!(c == '-' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
              (c >= 'A' && c <= 'Z')))
            return false;
        if (label == 0 && c == '-')
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0 && s[n - 1] != '-';
}

static int parse_port(const char *s, uint16_t *port_r)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v == 0 || v > 65535 || s[0] == '0')
        return -1;
    *port_r = (uint16_t)v;
    return 0;
}

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

/* NEXTHOP: "mx", "host", "host:port", "[host]", "[host]:port",
 * "[2001:db8::1]:25". */
static int parse_nexthop(const char *s, struct cfg_route *r, char *err, size_t errlen)
{
    if (strcmp(s, "mx") == 0)
        return 0;
    const char *host = s, *port = NULL;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close == s + 1)
            goto bad;
        host = s + 1;
        hlen = (size_t)(close - host);
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            goto bad;
        r->literal = true;
    } else {
        const char *colon = strchr(s, ':');
        hlen = colon ? (size_t)(colon - s) : strlen(s);
        if (colon)
            port = colon + 1;
    }
    if (hlen == 0 || hlen > 253)
        goto bad;
    r->host = xstrndup(host, hlen);
    lower(r->host);
    unsigned char a[16];
    bool is_addr = inet_pton(AF_INET, r->host, a) == 1 ||
                   inet_pton(AF_INET6, r->host, a) == 1;
    if (is_addr && !r->literal) {
        snprintf(err, errlen, "an address as next hop must be in brackets: [%s]",
                 r->host);
        return -1;
    }
    if (!is_addr && !domain_ok(r->host))
        goto bad;
    if (port != NULL && parse_port(port, &r->port) < 0) {
        snprintf(err, errlen, "invalid port in next hop '%s'", s);
        return -1;
    }
    return 0;
bad:
    snprintf(err, errlen, "invalid next hop '%s' (expected mx, HOST, HOST:PORT, "
                          "[HOST] or [ADDRESS]:PORT)", s);
    return -1;
}

int config_route_parse(char **w, size_t n, struct cfg_route *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    if (n < 2) {
        snprintf(err, errlen, "route needs DOMAIN and NEXTHOP");
        return -1;
    }
    r->domain = xstrdup(w[0]);
    lower(r->domain);
    if (strcmp(r->domain, "*") != 0 && !domain_ok(r->domain)) {
        snprintf(err, errlen, "invalid route domain '%.100s' (a domain or *)", w[0]);
        goto fail;
    }
    if (parse_nexthop(w[1], r, err, errlen) < 0)
        goto fail;
    for (size_t i = 2; i < n; i++) {
        if (strncmp(w[i], "tls=", 4) == 0) {
            if (config_tls_policy_parse(w[i] + 4, &r->tls) < 0) {
                snprintf(err, errlen, "invalid %.60s (tls=none|may|encrypt|verify)", w[i]);
                goto fail;
            }
            r->tls_set = true;
        } else if (strncmp(w[i], "auth=", 5) == 0 && w[i][5] != '\0' &&
                   r->auth_user == NULL && strlen(w[i]) <= 5 + 320) {
            r->auth_user = xstrdup(w[i] + 5);
        } else if (strncmp(w[i], "password-file=", 14) == 0 && w[i][14] != '\0' &&
                   r->password_file == NULL && strlen(w[i]) <= 14 + 1024) {
            r->password_file = xstrdup(w[i] + 14);
        } else {
            snprintf(err, errlen, "unknown or repeated route option '%.60s' "
                                  "(tls=, auth=, password-file=)", w[i]);
            goto fail;
        }
    }
    if ((r->auth_user == NULL) != (r->password_file == NULL)) {
        snprintf(err, errlen, "auth= and password-file= go together");
        goto fail;
    }
    if (r->auth_user != NULL && r->host == NULL) {
        snprintf(err, errlen, "auth= needs a next-hop host (a smarthost), not mx");
        goto fail;
    }
    if (r->auth_user != NULL && r->tls_set && r->tls == TLS_POLICY_NONE) {
        snprintf(err, errlen, "auth= with tls=none would send the password in "
                              "plaintext; use tls=encrypt or verify");
        goto fail;
    }
    return 0;
fail:
    config_route_free(r);
    return -1;
}

void config_route_free(struct cfg_route *r)
{
    free(r->domain);
    free(r->host);
    free(r->auth_user);
    free(r->password_file);
    if (r->password != NULL) {
        explicit_bzero(r->password, strlen(r->password));
        free(r->password);
    }
    memset(r, 0, sizeof(*r));
}

int config_dns_server_parse(const char *s, char **out_r, char *err, size_t errlen)
{
    char host[64];
    const char *at = strchr(s, '@');
    size_t hlen = at ? (size_t)(at - s) : strlen(s);
    if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
        s++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof(host))
        goto bad;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    unsigned char a[16];
    if (inet_pton(AF_INET, host, a) != 1 && inet_pton(AF_INET6, host, a) != 1)
        goto bad;
    uint16_t port = 53;
    if (at != NULL && parse_port(at + 1, &port) < 0)
        goto bad;
    char out[96];
    snprintf(out, sizeof(out), "%s@%u", host, (unsigned)port);
    *out_r = xstrdup(out);
    return 0;
bad:
    snprintf(err, errlen, "invalid resolver '%.100s' (an IP address, optionally "
                          "@PORT)", s);
    return -1;
}

const struct cfg_route *config_route_find(const struct config *cfg, const char *domain)
{
    const struct cfg_route *star = NULL;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        if (strcasecmp(cfg->routes[i].domain, domain) == 0)
            return &cfg->routes[i];
        if (strcmp(cfg->routes[i].domain, "*") == 0)
            star = &cfg->routes[i];
    }
    return star;
}
