/*
 * resolve: expansion of a recipient into mailboxes and remote addresses.
 * See resolve.h for the order; each single step is config_match() (so the
 * order has one definition, shared with config_check_refs).
 *
 * Cost is linear in the configuration, whatever the lists look like: each
 * alias is expanded at most once per call (a second mention adds nothing,
 * since the results are de-duplicated anyway), de-duplication is a hash
 * set, and the number of results is capped by LIM_ALIAS_EXPANSION. An alias
 * met again while it is being expanded is a loop.
 */
#include "deliver/resolve.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/xalloc.h"

/* Open-addressing set of strings owned elsewhere (the result arrays). */
struct strset {
    const char **slot;
    size_t cap;     /* power of two, or 0 */
    size_t n;
};

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603u;      /* FNV-1a */
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211u;
    }
    return h;
}

static bool strset_has(const struct strset *set, const char *s)
{
    if (set->cap == 0)
        return false;
    for (size_t i = (size_t)str_hash(s) & (set->cap - 1);;
         i = (i + 1) & (set->cap - 1)) {
        if (set->slot[i] == NULL)
            return false;
        if (strcmp(set->slot[i], s) == 0)
            return true;
    }
}

static void strset_put(struct strset *set, const char *s)
{
    if ((set->n + 1) * 2 > set->cap) {
        size_t ncap = set->cap == 0 ? 16 : set->cap * 2;
        const char **ns = xcalloc(ncap, sizeof(*ns));
        for (size_t i = 0; i < set->cap; i++) {
            if (set->slot[i] == NULL)
                continue;
            size_t j = (size_t)str_hash(set->slot[i]) & (ncap - 1);
            while (ns[j] != NULL)
                j = (j + 1) & (ncap - 1);
            ns[j] = set->slot[i];
        }
        free(set->slot);
        set->slot = ns;
        set->cap = ncap;
    }
    size_t i = (size_t)str_hash(s) & (set->cap - 1);
    while (set->slot[i] != NULL)
        i = (i + 1) & (set->cap - 1);
    set->slot[i] = s;
    set->n++;
}

enum { AL_NEW, AL_ACTIVE, AL_DONE };

struct rctx {
    const struct config *cfg;
    struct resolve_result *r;
    struct strset seen_mailbox, seen_remote;
    unsigned char *alias_state;     /* per cfg->aliases entry, lazily */
    size_t max_depth, max_results;
};

static enum resolve_status add_result(struct rctx *c, char ***arr, size_t *n,
                                      struct strset *seen, const char *s)
{
    if (strset_has(seen, s))
        return RESOLVE_OK;
    if (c->r->nmailboxes + c->r->nremote >= c->max_results)
        return RESOLVE_TOO_MANY;
    /* doubling: a list of thousands must not cost a copy per member */
    if (*n == 0 || (*n >= 8 && (*n & (*n - 1)) == 0))
        *arr = xreallocarray(*arr, *n == 0 ? 8 : *n * 2, sizeof(**arr));
    (*arr)[*n] = xstrdup(s);
    strset_put(seen, (*arr)[*n]);
    (*n)++;
    return RESOLVE_OK;
}

static enum resolve_status resolve_one(struct rctx *c, const char *local,
                                       size_t llen, const char *domain,
                                       size_t dlen, size_t depth, bool top);

static enum resolve_status expand(struct rctx *c, char *const *targets,
                                  size_t n, size_t depth)
{
    if (depth > c->max_depth)
        return RESOLVE_LOOP;
    for (size_t i = 0; i < n; i++) {
        const char *t = targets[i];
        const char *at = strrchr(t, '@');
        enum resolve_status st;
        if (at == NULL) {
            c->r->unknown++;
            continue;
        }
        if (config_domain(c->cfg, at + 1, strlen(at + 1)) == NULL)
            st = add_result(c, &c->r->remote, &c->r->nremote, &c->seen_remote, t);
        else
            st = resolve_one(c, t, (size_t)(at - t), at + 1, strlen(at + 1),
                             depth, false);
        if (st != RESOLVE_OK)
            return st;
    }
    return RESOLVE_OK;
}

static enum resolve_status resolve_one(struct rctx *c, const char *local,
                                       size_t llen, const char *domain,
                                       size_t dlen, size_t depth, bool top)
{
    struct cfg_match m;
    config_match(c->cfg, local, llen, domain, dlen, &m);
    switch (m.kind) {
    case CFG_MATCH_NOT_LOCAL:
        return top ? RESOLVE_NOT_LOCAL : RESOLVE_OK;
    case CFG_MATCH_ROUTING:
        if (top)
            return RESOLVE_ROUTING;
        c->r->unknown++;
        return RESOLVE_OK;
    case CFG_MATCH_NONE:
        if (top)
            return RESOLVE_UNKNOWN_USER;
        c->r->unknown++;
        return RESOLVE_OK;
    case CFG_MATCH_USER:
        return add_result(c, &c->r->mailboxes, &c->r->nmailboxes,
                          &c->seen_mailbox, m.user->address);
    case CFG_MATCH_ALIAS: {
        size_t i = (size_t)(m.alias - c->cfg->aliases);
        if (c->alias_state == NULL)
            c->alias_state = xcalloc(c->cfg->naliases, 1);
        if (c->alias_state[i] == AL_DONE)
            return RESOLVE_OK;
        if (c->alias_state[i] == AL_ACTIVE)
            return RESOLVE_LOOP;
        c->alias_state[i] = AL_ACTIVE;
        enum resolve_status st = expand(c, m.alias->targets, m.alias->ntargets,
                                        depth + 1);
        c->alias_state[i] = AL_DONE;
        return st;
    }
    case CFG_MATCH_POSTMASTER:
    case CFG_MATCH_CATCH_ALL: {
        char *t = (char *)m.target;
        return expand(c, &t, 1, depth + 1);
    }
    }
    return RESOLVE_UNKNOWN_USER;
}

static void result_clear(struct resolve_result *r)
{
    for (size_t i = 0; i < r->nmailboxes; i++)
        free(r->mailboxes[i]);
    for (size_t i = 0; i < r->nremote; i++)
        free(r->remote[i]);
    free(r->mailboxes);
    free(r->remote);
    r->mailboxes = r->remote = NULL;
    r->nmailboxes = r->nremote = 0;
}

enum resolve_status resolve_address(const struct config *cfg,
                                    const char *local, size_t local_len,
                                    const char *domain, size_t domain_len,
                                    struct resolve_result *r)
{
    memset(r, 0, sizeof(*r));
    struct rctx c = {
        .cfg = cfg, .r = r,
        .max_depth = cfg->limits[LIM_ALIAS_DEPTH],
        .max_results = cfg->limits[LIM_ALIAS_EXPANSION],
    };
    enum resolve_status st = resolve_one(&c, local, local_len, domain,
                                         domain_len, 0, true);
    if (st == RESOLVE_OK && r->nmailboxes + r->nremote == 0)
        st = RESOLVE_UNKNOWN_USER;
    free(c.seen_mailbox.slot);
    free(c.seen_remote.slot);
    free(c.alias_state);
    /* Partial expansions are never delivered: a loop or an oversized list
     * is refused as a whole. */
    if (st != RESOLVE_OK)
        result_clear(r);
    return st;
}

void resolve_result_free(struct resolve_result *r)
{
    if (r == NULL)
        return;
    result_clear(r);
    r->unknown = 0;
}

const char *resolve_status_name(enum resolve_status st)
{
    switch (st) {
    case RESOLVE_OK: return "ok";
    case RESOLVE_NOT_LOCAL: return "not-local";
    case RESOLVE_ROUTING: return "routing";
    case RESOLVE_UNKNOWN_USER: return "unknown-user";
    case RESOLVE_LOOP: return "loop";
    case RESOLVE_TOO_MANY: return "too-many";
    }
    return "?";
}
