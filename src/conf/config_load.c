/*
 * config_load: the I/O half of the configuration (read the files, resolve
 * relative paths) and the cross-reference check. See config.h.
 *
 * Order matters for the messages: the configuration file is parsed and its
 * own duplicates found first; then the users file (its entries checked
 * against the configuration's users and aliases); then the aliases file
 * (checked against all users and the configuration's aliases); each file
 * names its own lines. Only then are targets followed, since an alias may
 * name a user from the users file.
 */
#include "conf/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/users.h"
#include "lib/fsutil.h"
#include "lib/xalloc.h"

/* ---- aliases-file: "name: target, target  # comment" ---- */

static int aliases_parse(struct config *cfg, const char *text, size_t len,
                         const char *filename, struct buf *err)
{
    char *line = xmalloc(CONFIG_LINE_MAX + 1);
    char t[CONFIG_ADDRESS_MAX], name[CONFIG_ADDRESS_MAX];
    size_t pos = 0, lineno = 0, llen;
    const char *l;
    int rc = 0;
    while (rc == 0 && config_next_line(text, len, &pos, &l, &llen)) {
        lineno++;
        const char *why = config_check_line(l, llen);
        if (why != NULL) {
            rc = config_errf(err, "%s:%zu: %s", filename, lineno, why);
            break;
        }
        memcpy(line, l, llen);
        line[llen] = '\0';
        char *s = line + strspn(line, " \t");
        if (*s == '\0' || *s == '#')
            continue;
        char *colon = strchr(s, ':');
        if (colon == NULL) {
            rc = config_errf(err, "%s:%zu: expected 'name: target, target'",
                             filename, lineno);
            break;
        }
        size_t nlen = (size_t)(colon - s);
        while (nlen > 0 && (s[nlen - 1] == ' ' || s[nlen - 1] == '\t'))
            nlen--;
        if ((why = config_check_mailbox(s, nlen, name, sizeof(name))) != NULL) {
            rc = config_errf(err, "%s:%zu: invalid alias name: %s", filename,
                             lineno, why);
            break;
        }
        struct cfg_alias *a = config_add_alias(cfg, name, false, lineno);
        /* targets: separated by spaces, tabs or commas; '#' starts a comment
         * at the beginning of a word */
        for (char *c = colon + 1;;) {
            c += strspn(c, " \t,");
            if (*c == '\0' || *c == '#')
                break;
            size_t n = strcspn(c, " \t,");
            if ((why = config_check_target(c, n, t, sizeof(t))) != NULL) {
                rc = config_errf(err, "%s:%zu: alias '%s': invalid target: %s",
                                 filename, lineno, name, why);
                break;
            }
            config_alias_add_target(a, t);
            c += n;
        }
        if (rc == 0 && a->ntargets == 0)
            rc = config_errf(err, "%s:%zu: alias '%s' has no targets", filename,
                             lineno, name);
    }
    free(line);
    if (rc != 0)
        return rc;

    /* Whole-file checks, reporting the lowest line. Sorting puts the
     * configuration's aliases before this file's for equal names. */
    size_t bad_line = 0;
    config_sort(cfg);
    for (size_t i = 0; i < cfg->naliases; i++) {
        const struct cfg_alias *a = &cfg->aliases[i];
        if (a->in_config || (bad_line != 0 && a->line >= bad_line))
            continue;
        const char *dom = strrchr(a->name, '@') + 1;
        const struct cfg_user *u;
        if (i > 0 && strcmp(a->name, a[-1].name) == 0) {
            bad_line = a->line;
            config_errf(err, "%s:%zu: duplicate alias '%s' (first at %s:%zu)",
                        filename, a->line, a->name,
                        a[-1].in_config ? cfg->source : filename, a[-1].line);
        } else if (config_domain(cfg, dom, strlen(dom)) == NULL) {
            bad_line = a->line;
            config_errf(err, "%s:%zu: alias '%s' is not in a local domain",
                        filename, a->line, a->name);
        } else if ((u = config_user(cfg, a->name, strlen(a->name))) != NULL) {
            bad_line = a->line;
            config_errf(err,
                        "%s:%zu: alias '%s' has the name of a user (%s:%zu)",
                        filename, a->line, a->name,
                        u->in_config ? cfg->source : cfg->users_file, u->line);
        }
    }
    return bad_line != 0 ? -1 : 0;
}

/* ---- cross references ---- */

enum { REF_NEW, REF_ACTIVE, REF_DONE };

struct refs {
    const struct config *cfg;
    struct buf *err;
    unsigned char *state;   /* per alias */
    size_t *height;         /* per alias, when DONE */
    size_t limit;           /* LIM_ALIAS_DEPTH */
};

/* Who owns the target being followed, for the message. */
struct owner {
    const char *file;
    size_t line;
    const char *what;       /* "alias", "postmaster", "catch-all of" */
    const char *name;
    const char *via;        /* the postmaster@ or catch-all address that led
                               here, or NULL */
};

static long ref_alias(struct refs *r, size_t i, size_t depth,
                      const struct owner *via, const char *via_target);

__attribute__((format(printf, 3, 4)))
static long owner_err(struct refs *r, const struct owner *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_reset(r->err);
    buf_appendf(r->err, "%s:%zu: %s '%s': ", o->file, o->line, o->what, o->name);
    if (o->via != NULL)
        buf_appendf(r->err, "through '%s': ", o->via);
    buf_vappendf(r->err, fmt, ap);
    va_end(ap);
    return -1;
}

/* How many expansions lie below target: 0 for a mailbox or a remote
 * address. depth bounds the recursion when no alias is involved
 * (catch-all or postmaster pointing back at itself). */
static long ref_target(struct refs *r, const char *target, size_t depth,
                       const struct owner *o)
{
    const char *at = strrchr(target, '@');
    if (at == NULL)
        return owner_err(r, o, "target '%s' is not an address", target);
    if (config_domain(r->cfg, at + 1, strlen(at + 1)) == NULL)
        return 0;
    if (depth > r->limit)
        return owner_err(r, o, "target '%s' loops or nests deeper than "
                         "alias-depth (%zu)", target, r->limit);
    struct cfg_match m;
    config_match(r->cfg, target, (size_t)(at - target), at + 1, strlen(at + 1), &m);
    long h;
    switch (m.kind) {
    case CFG_MATCH_USER:
    case CFG_MATCH_NOT_LOCAL:
        return 0;
    case CFG_MATCH_ALIAS:
        return ref_alias(r, (size_t)(m.alias - r->cfg->aliases), depth + 1, o,
                         target);
    case CFG_MATCH_POSTMASTER:
    case CFG_MATCH_CATCH_ALL: {
        struct owner through = *o;
        if (through.via == NULL && strcmp(target, m.target) != 0)
            through.via = target;
        h = ref_target(r, m.target, depth + 1, &through);
        return h < 0 ? -1 : h + 1;
    }
    case CFG_MATCH_ROUTING:
        return owner_err(r, o, "target '%s' holds a routing character (%%, ! "
                         "or @) and cannot resolve", target);
    case CFG_MATCH_NONE:
        break;
    }
    return owner_err(r, o, "target '%s' does not resolve (no such user or "
                     "alias, and no catch-all)", target);
}

static long ref_alias(struct refs *r, size_t i, size_t depth,
                      const struct owner *via, const char *via_target)
{
    const struct cfg_alias *a = &r->cfg->aliases[i];
    if (r->state[i] == REF_DONE)
        return (long)r->height[i];
    if (r->state[i] == REF_ACTIVE)
        return owner_err(r, via, "target '%s' makes a loop", via_target);
    if (depth > r->limit)
        return owner_err(r, via, "target '%s' nests deeper than alias-depth "
                         "(%zu)", via_target, r->limit);
    struct owner o = {a->in_config ? r->cfg->source : r->cfg->aliases_file,
                      a->line, "alias", a->name, NULL};
    r->state[i] = REF_ACTIVE;
    size_t h = 0;
    for (size_t j = 0; j < a->ntargets; j++) {
        long t = ref_target(r, a->targets[j], depth, &o);
        if (t < 0)
            return -1;
        if ((size_t)t > h)
            h = (size_t)t;
    }
    h++;
    if (h > r->limit) {
        buf_reset(r->err);
        buf_appendf(r->err, "%s:%zu: alias '%s' expands through %zu levels of "
                    "aliases, more than alias-depth (%zu)", o.file, o.line,
                    a->name, h, r->limit);
        return -1;
    }
    r->state[i] = REF_DONE;
    r->height[i] = h;
    return (long)h;
}

/* The postmaster or a catch-all: its target resolves, and reaching it (itself
 * one expansion) stays within alias-depth. 0 or -1. */
static int ref_reach(struct refs *r, const char *target, const struct owner *o)
{
    long h = ref_target(r, target, 1, o);
    if (h < 0)
        return -1;
    if ((size_t)h + 1 > r->limit)
        return (int)owner_err(r, o, "reaching '%s' takes more levels than "
                              "alias-depth (%zu)", target, r->limit);
    return 0;
}

int config_check_refs(const struct config *cfg, struct buf *err_r)
{
    struct refs r = {cfg, err_r, xcalloc(cfg->naliases + 1, 1),
                     xcalloc(cfg->naliases + 1, sizeof(size_t)),
                     cfg->limits[LIM_ALIAS_DEPTH]};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < cfg->naliases; i++) {
        const struct cfg_alias *a = &cfg->aliases[i];
        struct owner o = {a->in_config ? cfg->source : cfg->aliases_file,
                          a->line, "alias", a->name, NULL};
        if (ref_alias(&r, i, 1, &o, a->name) < 0)
            rc = -1;
    }
    if (rc == 0 && cfg->postmaster != NULL) {
        struct owner o = {cfg->source, cfg->postmaster_line, "postmaster",
                          cfg->postmaster, NULL};
        rc = ref_reach(&r, cfg->postmaster, &o);
    }
    for (size_t i = 0; rc == 0 && i < cfg->ndomains; i++) {
        const struct cfg_domain *d = &cfg->domains[i];
        if (d->catch_all == NULL)
            continue;
        struct owner o = {cfg->source, d->line, "catch-all of domain", d->name,
                          NULL};
        rc = ref_reach(&r, d->catch_all, &o);
    }
    free(r.state);
    free(r.height);
    return rc;
}

/* ---- paths ---- */

/* base "/" rel, without "./" noise; rel absolute is returned as is. */
static char *path_join(const char *base, const char *rel)
{
    if (rel[0] == '/')
        return xstrdup(rel);
    while (rel[0] == '.' && rel[1] == '/')
        rel += 2 + strspn(rel + 2, "/");
    size_t blen = strlen(base);
    while (blen > 1 && base[blen - 1] == '/')
        blen--;
    if (strcmp(rel, ".") == 0 || rel[0] == '\0')
        return xstrndup(base, blen);
    size_t rlen = strlen(rel), n;
    while (rlen > 1 && rel[rlen - 1] == '/')
        rlen--;
    if (!size_add(blen, rlen, &n) || !size_add(n, 2, &n))
        abort();
    char *p = xmalloc(n);
    snprintf(p, n, "%.*s/%.*s", (int)blen, base, (int)rlen, rel);
    return p;
}

/* The whole file into text (*found_r true); when it does not exist and
 * need not, 0 with *found_r false; else -1 with the message in err. */
static int read_optional(const char *path, bool must_exist, struct buf *text,
                         bool *found_r, struct buf *err)
{
    *found_r = false;
    if (fs_read_file(path, CONFIG_FILE_MAX, text) == 0) {
        *found_r = true;
        return 0;
    }
    if (errno == ENOENT && !must_exist)
        return 0;
    return config_errf(err, "%s: cannot read: %s", path,
                       errno == EFBIG ? "larger than 16 MiB" : strerror(errno));
}

struct config *config_load(const char *path,
                           const struct config_overrides *ov,
                           struct buf *err_r)
{
    struct buf text;
    struct config *cfg;
    bool found;
    if (path == NULL) {
        cfg = config_parse(config_embedded_default,
                           strlen(config_embedded_default),
                           "(embedded default)", err_r);
    } else {
        if (read_optional(path, true, &text, &found, err_r) < 0)
            return NULL;
        cfg = config_parse(text.data != NULL ? text.data : "", text.len, path,
                           err_r);
        buf_free(&text);
    }
    if (cfg == NULL)
        return NULL;

    if (ov != NULL && ov->data_dir != NULL && ov->data_dir[0] != '\0') {
        free(cfg->data_dir);
        cfg->data_dir = xstrdup(ov->data_dir);
    }
    if (cfg->data_dir == NULL) {
        config_errf(err_r, "%s: no data-dir: set 'data-dir' or give --data-dir",
                    cfg->source);
        goto fail;
    }
    if (cfg->data_dir[0] != '/') {
        char *cwd = getcwd(NULL, 0);
        if (cwd == NULL) {
            config_errf(err_r, "%s: data-dir '%s' is relative and the current "
                        "directory is unknown: %s", cfg->source, cfg->data_dir,
                        strerror(errno));
            goto fail;
        }
        char *abs = path_join(cwd, cfg->data_dir);
        free(cwd);
        free(cfg->data_dir);
        cfg->data_dir = abs;
    } else {
        char *clean = path_join(cfg->data_dir, ".");
        free(cfg->data_dir);
        cfg->data_dir = clean;
    }
    /* The local submission socket lives in public/, the one directory
     * of data-dir that other local users may reach (doc/config.md). */
    if (cfg->local_socket == NULL) {
        cfg->local_socket = path_join(cfg->data_dir, "public/submit.sock");
    } else if (cfg->local_socket[0] == '\0') {
        free(cfg->local_socket);
        cfg->local_socket = NULL;
    } else {
        char *p = path_join(cfg->data_dir, cfg->local_socket);
        free(cfg->local_socket);
        cfg->local_socket = p;
    }
    for (size_t i = 0; i < cfg->ntls_certs; i++) {
        char *c = path_join(cfg->data_dir, cfg->tls_certs[i].cert);
        char *k = path_join(cfg->data_dir, cfg->tls_certs[i].key);
        free(cfg->tls_certs[i].cert);
        free(cfg->tls_certs[i].key);
        cfg->tls_certs[i].cert = c;
        cfg->tls_certs[i].key = k;
    }
    if (cfg->users_file != NULL) {
        char *p = path_join(cfg->data_dir, cfg->users_file);
        free(cfg->users_file);
        cfg->users_file = p;
    }
    if (cfg->aliases_file != NULL) {
        char *p = path_join(cfg->data_dir, cfg->aliases_file);
        free(cfg->aliases_file);
        cfg->aliases_file = p;
    }

    char **rel[2] = {&cfg->relay_tls_ca, &cfg->dns_trust_anchor};
    for (size_t i = 0; i < 2; i++)
        if (*rel[i] != NULL) {
            char *p = path_join(cfg->data_dir, *rel[i]);
            free(*rel[i]);
            *rel[i] = p;
        }
    /* A smarthost password is read now, so a SIGHUP picks up a new one and
     * a missing file is a configuration error, not a failed delivery. */
    for (size_t i = 0; i < cfg->nroutes; i++) {
        struct cfg_route *r = &cfg->routes[i];
        if (r->password_file == NULL)
            continue;
        char *p = path_join(cfg->data_dir, r->password_file);
        free(r->password_file);
        r->password_file = p;
        if (read_optional(p, true, &text, &found, err_r) < 0)
            goto fail;
        size_t n = strcspn(text.data != NULL ? text.data : "", "\r\n");
        if (n == 0 || n > 512 || memchr(text.data, '\0', n) != NULL) {
            explicit_bzero(text.data, text.len);
            buf_free(&text);
            config_errf(err_r, "%s: the first line must hold the password for "
                        "route %s (line %zu)", p, r->domain, r->line);
            goto fail;
        }
        r->password = xstrndup(text.data, n);
        explicit_bzero(text.data, text.len);
        buf_free(&text);
    }

    /* A missing users file is an empty one: `estafeta user add` creates it. */
    if (cfg->users_file != NULL) {
        if (read_optional(cfg->users_file, false, &text, &found, err_r) < 0)
            goto fail;
        if (found) {
            int r = users_parse(cfg, text.data != NULL ? text.data : "",
                                text.len, cfg->users_file, err_r);
            buf_free(&text);
            if (r < 0)
                goto fail;
        }
    }
    if (cfg->aliases_file != NULL) {
        if (read_optional(cfg->aliases_file, true, &text, &found, err_r) < 0)
            goto fail;
        int r = aliases_parse(cfg, text.data != NULL ? text.data : "",
                              text.len, cfg->aliases_file, err_r);
        buf_free(&text);
        if (r < 0)
            goto fail;
    }
    config_sort(cfg);
    if (!(ov != NULL && ov->no_ref_check) && config_check_refs(cfg, err_r) < 0)
        goto fail;
    return cfg;
fail:
    config_free(cfg);
    return NULL;
}

const char *config_choose_path(const char *given)
{
    if (given != NULL && given[0] != '\0')
        return given;
    const char *env = getenv("ESTAFETA_CONFIG");
    if (env != NULL && env[0] != '\0')
        return env;
    if (access(CONFIG_SYSTEM_PATH, F_OK) == 0)
        return CONFIG_SYSTEM_PATH;
    return NULL;
}
