/*
 * fuzz_config: config_parse (and users_parse) on arbitrary bytes.
 *
 * Invariants checked (abort() on violation):
 *  - parsing is deterministic: the same bytes give the same verdict and
 *    the same message;
 *  - LF and CRLF line ends give the same verdict and message;
 *  - every error starts with "FILE:LINE: ";
 *  - an accepted configuration is self-consistent: required fields set,
 *    arrays sorted, every user and alias in a local domain and found by the
 *    lookups;
 *  - resolving any user, alias, postmaster@ and catch-all address never
 *    crashes and yields only known mailboxes and non-local remote addresses,
 *    without duplicates.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config.h"
#include "conf/users.h"
#include "deliver/resolve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ASSERT(c) do { if (!(c)) { fprintf(stderr, "violated: %s\n", #c); abort(); } } while (0)

static void check_error(const struct buf *err, const char *file)
{
    const char *e = buf_cstr(err);
    size_t fl = strlen(file);
    ASSERT(strncmp(e, file, fl) == 0 && e[fl] == ':');
    const char *p = e + fl + 1;
    ASSERT(*p >= '1' && *p <= '9');
    while (*p >= '0' && *p <= '9')
        p++;
    ASSERT(p[0] == ':' && p[1] == ' ');
}

static void check_resolve(const struct config *cfg, const char *addr)
{
    const char *at = strrchr(addr, '@');
    if (at == NULL)
        return;
    struct resolve_result r;
    enum resolve_status st = resolve_address(cfg, addr, (size_t)(at - addr), at + 1,
                                             strlen(at + 1), &r);
    ASSERT(st == RESOLVE_OK || (r.nmailboxes == 0 && r.nremote == 0));
    if (st == RESOLVE_OK)
        ASSERT(r.nmailboxes + r.nremote > 0);
    ASSERT(r.nmailboxes + r.nremote <= cfg->limits[LIM_ALIAS_EXPANSION]);
    for (size_t i = 0; i < r.nmailboxes; i++) {
        ASSERT(config_user(cfg, r.mailboxes[i], strlen(r.mailboxes[i])) != NULL);
        for (size_t j = 0; j < i; j++)
            ASSERT(strcmp(r.mailboxes[i], r.mailboxes[j]) != 0);
    }
    for (size_t i = 0; i < r.nremote; i++) {
        const char *d = strrchr(r.remote[i], '@');
        ASSERT(d != NULL && config_domain(cfg, d + 1, strlen(d + 1)) == NULL);
        for (size_t j = 0; j < i; j++)
            ASSERT(strcmp(r.remote[i], r.remote[j]) != 0);
    }
    resolve_result_free(&r);
}

static void check_config(const struct config *cfg)
{
    ASSERT(cfg->hostname != NULL && cfg->postmaster != NULL);
    ASSERT(cfg->ndomains > 0 && cfg->nlisteners > 0);
    ASSERT(config_domain_valid(cfg->hostname, strlen(cfg->hostname)));
    for (size_t i = 0; i < cfg->ndomains; i++) {
        const struct cfg_domain *d = &cfg->domains[i];
        ASSERT(config_domain(cfg, d->name, strlen(d->name)) == d);
        ASSERT(i == 0 || strcmp(cfg->domains[cfg->domain_index[i - 1]].name,
                                cfg->domains[cfg->domain_index[i]].name) < 0);
    }
    for (size_t i = 0; i < cfg->nusers; i++) {
        const struct cfg_user *u = &cfg->users[i];
        ASSERT(i == 0 || strcmp(u[-1].address, u->address) < 0);
        ASSERT(config_user(cfg, u->address, strlen(u->address)) == u);
        ASSERT(config_domain(cfg, u->domain, strlen(u->domain)) != NULL);
        ASSERT(config_alias(cfg, u->address, strlen(u->address)) == NULL);
        ASSERT(strchr(u->local, '/') == NULL && u->local[0] != '.');
        check_resolve(cfg, u->address);
    }
    for (size_t i = 0; i < cfg->naliases; i++) {
        const struct cfg_alias *a = &cfg->aliases[i];
        ASSERT(i == 0 || strcmp(a[-1].name, a->name) < 0);
        ASSERT(config_alias(cfg, a->name, strlen(a->name)) == a);
        ASSERT(a->ntargets > 0);
        check_resolve(cfg, a->name);
    }
    char addr[CONFIG_ADDRESS_MAX + 16];
    for (size_t i = 0; i < cfg->ndomains; i++) {
        snprintf(addr, sizeof(addr), "PostMaster@%s", cfg->domains[i].name);
        check_resolve(cfg, addr);
        snprintf(addr, sizeof(addr), "x+y%%z@%s", cfg->domains[i].name);
        check_resolve(cfg, addr);
        snprintf(addr, sizeof(addr), "nobody+tag@%s", cfg->domains[i].name);
        check_resolve(cfg, addr);
    }
    struct buf err;
    buf_init(&err, 4096);
    if (config_check_refs(cfg, &err) < 0)
        ASSERT(err.len > 0);
    buf_free(&err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct buf e1, e2;
    buf_init(&e1, 4096);
    buf_init(&e2, 4096);

    struct config *a = config_parse(text, size, "f.conf", &e1);
    struct config *b = config_parse(text, size, "f.conf", &e2);
    ASSERT((a == NULL) == (b == NULL));
    if (a == NULL) {
        check_error(&e1, "f.conf");
        ASSERT(strcmp(buf_cstr(&e1), buf_cstr(&e2)) == 0);
    } else {
        check_config(a);
    }
    config_free(b);

    /* CRLF line ends mean the same as LF (only when there is no CR to
     * begin with, and the copy stays small) */
    if (size < 65536 && memchr(data, '\r', size) == NULL) {
        char *crlf = malloc(size * 2 + 1);
        size_t n = 0;
        for (size_t i = 0; i < size; i++) {
            if (text[i] == '\n')
                crlf[n++] = '\r';
            crlf[n++] = text[i];
        }
        buf_reset(&e2);
        struct config *c = config_parse(crlf, n, "f.conf", &e2);
        ASSERT((a == NULL) == (c == NULL));
        if (a == NULL)
            ASSERT(strcmp(buf_cstr(&e1), buf_cstr(&e2)) == 0);
        else
            ASSERT(c->nusers == a->nusers && c->naliases == a->naliases &&
                   c->ndomains == a->ndomains && strcmp(c->hostname, a->hostname) == 0);
        config_free(c);
        free(crlf);
    }

    /* the same bytes as a users file, against a fixed configuration */
    static const char base[] = "hostname h.test\nlisten 127.0.0.1:25 mx\n"
                               "domain a.test\nuser x@a.test\n"
                               "alias al@a.test x@a.test\npostmaster x@a.test\n";
    struct config *u = config_parse(base, sizeof(base) - 1, "base", &e2);
    ASSERT(u != NULL);
    buf_reset(&e2);
    if (users_parse(u, text, size, "users", &e2) < 0) {
        check_error(&e2, "users");
    } else {
        for (size_t i = 0; i < u->nusers; i++) {
            ASSERT(i == 0 || strcmp(u->users[i - 1].address, u->users[i].address) < 0);
            const char *h = u->users[i].password_hash;
            ASSERT(h == NULL || config_check_hash(h) == NULL);
        }
    }
    config_free(u);

    config_free(a);
    buf_free(&e1);
    buf_free(&e2);
    return 0;
}
