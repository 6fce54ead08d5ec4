/*
 * config: the pure parser (text -> struct config), the lookups and the
 * one-step address match. See config.h for the contract and doc/config.md
 * for the format.
 *
 * The parser copies each line (at most CONFIG_LINE_MAX bytes) into a local
 * buffer and splits it into words in place, so no input byte is ever read
 * past its line and every word is a NUL-terminated C string. Checks that
 * need the whole file (a user's domain may be declared after the user,
 * duplicates) run at the end and report the offending line with the lowest
 * number, so the message does not depend on sort order.
 */
#include "conf/config.h"
#include "proto/sasl.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/log.h"
#include "lib/xalloc.h"

const char config_embedded_default[] =
    "# estafeta embedded default: a demo domain on loopback, unprivileged\n"
    "# ports, state in ./estafeta-data. See estafeta.conf(5).\n"
    "hostname mail.example.test\n"
    "data-dir estafeta-data\n"
    "listen 127.0.0.1:2525 mx\n"
    "listen 127.0.0.1:2587 submission\n"
    "listen 127.0.0.1:2465 submissions\n"
    "listen 127.0.0.1:2110 pop3\n"
    "listen 127.0.0.1:2995 pop3s\n"
    "domain example.test\n"
    "# the demo user's password is \"demo\"\n"
    "user demo@example.test"
    " $argon2id$v=19$m=65536,t=3,p=1$Qjj576cj63/3ciEk6MI9PA$"
    "Dt6OUiJI/GuaBTxaZTI15x7vxPE5YTpzwOas2eAVUFU"
    " scram-sha-256=10000,GSbPOIMbBaNImM0lw2o9ug==,"
    "+2MT762+Nqxd07eAxJKmlxztAFU5D0TQBKYJyVE4m2A=,"
    "gm27kBsgu5aNtEYKva9EOXRPaYdWAmUsSICh2zkACQk=\n"
    "users-file users\n"
    "postmaster demo@example.test\n"
    "alias team@example.test demo@example.test\n"
    "recipient-delimiter +\n";

/* ---- small helpers ---- */

static int fold(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

static bool is_alnum(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9');
}

/* Compare key[0..klen) folded to lower case with the lower-case C string s,
 * in the order strcmp gives lower-case strings (so sorted arrays of stored
 * names can be searched with any-case keys). A NUL inside the key never
 * matches. */
static int cmp_fold(const char *key, size_t klen, const char *s)
{
    for (size_t i = 0; i < klen; i++) {
        if (s[i] == '\0')
            return 1;
        int a = fold((unsigned char)key[i]), b = (unsigned char)s[i];
        if (a != b)
            return a < b ? -1 : 1;
    }
    return s[klen] == '\0' ? 0 : -1;
}

/* Binary search over n structs of `size` bytes at base whose char * member
 * at offset `off` is the key, in name order: the array's own order, or
 * base[index[0]], base[index[1]]... when index is not NULL. */
static const void *lookup(const void *base, size_t n, size_t size, size_t off,
                          const size_t *index, const char *key, size_t klen)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *elem =
            (const char *)base + (index != NULL ? index[mid] : mid) * size;
        const char *s = *(char *const *)(const void *)(elem + off);
        int c = cmp_fold(key, klen, s);
        if (c == 0)
            return elem;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const struct cfg_domain *config_domain(const struct config *cfg,
                                       const char *name, size_t len)
{
    return lookup(cfg->domains,
                  cfg->domain_index != NULL ? cfg->ndomains : 0,
                  sizeof(*cfg->domains), offsetof(struct cfg_domain, name),
                  cfg->domain_index, name, len);
}

const struct cfg_user *config_user(const struct config *cfg,
                                   const char *address, size_t len)
{
    return lookup(cfg->users, cfg->nusers, sizeof(*cfg->users),
                  offsetof(struct cfg_user, address), NULL, address, len);
}

const struct cfg_alias *config_alias(const struct config *cfg,
                                     const char *name, size_t len)
{
    return lookup(cfg->aliases, cfg->naliases, sizeof(*cfg->aliases),
                  offsetof(struct cfg_alias, name), NULL, name, len);
}

const char *listener_role_name(enum listener_role role)
{
    switch (role) {
    case ROLE_MX: return "mx";
    case ROLE_SUBMISSION: return "submission";
    case ROLE_SUBMISSIONS: return "submissions";
    case ROLE_POP3: return "pop3";
    case ROLE_POP3S: return "pop3s";
    case ROLE_LOCAL: return "local";
    }
    return "?";
}

/* ---- validation shared with users.c, config_load.c and `estafeta user` ---- */

bool config_domain_valid(const char *s, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    size_t label = 0;
    bool numeric = true;     /* the current label is all digits so far */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            numeric = true;
            continue;
        }
        if (!is_alnum(c) && c != '-')
            return false;
        if (c == '-' && label == 0)
            return false;
        if (!(c >= '0' && c <= '9'))
            numeric = false;
        if (++label > 63)
            return false;
    }
    /* "1.2.3.4" is an address, not a domain we could own. */
    return label > 0 && s[len - 1] != '-' && !numeric;
}

static bool is_mailbox_char(int c)
{
    c = fold(c);
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '+' || c == '=' || c == '-';
}

/* RFC 5322 atext */
static bool is_atext(int c)
{
    return is_alnum(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* Splits at the last '@' and checks the parts common to both kinds. */
static const char *split_address(const char *in, size_t len, size_t *at_r)
{
    const char *at = NULL;
    for (size_t i = len; i > 0; i--)
        if (in[i - 1] == '@') {
            at = in + i - 1;
            break;
        }
    if (at == NULL)
        return "expected local@domain";
    size_t llen = (size_t)(at - in), dlen = len - llen - 1;
    if (llen == 0)
        return "empty local part";
    if (llen > 64)
        return "local part longer than 64 octets";
    if (!config_domain_valid(at + 1, dlen))
        return "invalid domain";
    /* a dot-atom local part: no leading, trailing or double dot */
    if (in[0] == '.' || in[llen - 1] == '.')
        return "local part begins or ends with '.'";
    for (size_t i = 1; i < llen; i++)
        if (in[i] == '.' && in[i - 1] == '.')
            return "local part holds \"..\"";
    *at_r = llen;
    return NULL;
}

/* What a target's dot-atom local part may hold: atext and '.' */
static bool is_target_char(int c)
{
    return c == '.' || is_atext(c);
}

/* Both kinds of address: they differ only in what the local part may hold
 * (local_ok, else why_local) and in whether it is lower-cased too. */
static const char *check_address(const char *in, size_t len,
                                 bool (*local_ok)(int c), const char *why_local,
                                 bool fold_local, char *out, size_t out_cap)
{
    size_t llen;
    const char *why = split_address(in, len, &llen);
    if (why != NULL)
        return why;
    for (size_t i = 0; i < llen; i++)
        if (!local_ok((unsigned char)in[i]))
            return why_local;
    if (len >= out_cap)
        return "address too long";
    size_t fold_from = fold_local ? 0 : llen + 1;
    for (size_t i = 0; i < len; i++)
        out[i] = i < fold_from ? in[i] : (char)fold((unsigned char)in[i]);
    out[len] = '\0';
    return NULL;
}

const char *config_check_mailbox(const char *in, size_t len, char *out,
                                 size_t out_cap)
{
    return check_address(in, len, is_mailbox_char,
                         "local part may hold only a-z 0-9 . _ + = -", true,
                         out, out_cap);
}

const char *config_check_target(const char *in, size_t len, char *out,
                                size_t out_cap)
{
    /* only the domain is folded: a target's local part is case-sensitive */
    return check_address(in, len, is_target_char,
                         "local part holds a character that needs quoting",
                         false, out, out_cap);
}

const char *config_check_hash(const char *hash)
{
    if (strncmp(hash, "$argon2id$", 10) != 0 && strncmp(hash, "$6$", 3) != 0)
        return "unsupported password hash (expected $argon2id$... or $6$...)";
    for (const char *c = hash; *c != '\0'; c++)
        if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f || *c == ':')
            return "password hash holds a character that is not allowed";
    if (strlen(hash) > 512)
        return "password hash too long";
    return NULL;
}

const char *config_check_line(const char *s, size_t len)
{
    if (len > CONFIG_LINE_MAX)
        return "line longer than 4096 bytes";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\0')
            return "line holds a NUL byte";
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return "line holds a control character";
    }
    return NULL;
}

bool config_next_line(const char *text, size_t len, size_t *pos,
                      const char **line_r, size_t *len_r)
{
    if (*pos >= len)
        return false;
    const char *start = text + *pos;
    size_t rest = len - *pos;
    const char *nl = memchr(start, '\n', rest);
    size_t n = nl != NULL ? (size_t)(nl - start) : rest;
    *pos += nl != NULL ? n + 1 : n;
    if (n > 0 && start[n - 1] == '\r')
        n--;
    *line_r = start;
    *len_r = n;
    return true;
}

int config_errf(struct buf *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_reset(err);
    buf_vappendf(err, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- building the struct ---- */

/* Room for element n of an array that holds n elements. The capacity is
 * implied by n (8, then powers of two), so the arrays in struct config need
 * no capacity fields and a 16 MiB users file does not cost a copy per line. */
static void *grow(void *p, size_t n, size_t size)
{
    if (n == 0)
        return xreallocarray(p, 8, size);
    if (n >= 8 && (n & (n - 1)) == 0) {
        size_t cap;
        if (!size_mul(n, 2, &cap))
            abort();
        return xreallocarray(p, cap, size);
    }
    return p;
}

struct cfg_user *config_add_user(struct config *cfg, const char *address,
                                 const char *hash, bool in_config, size_t line)
{
    cfg->users = grow(cfg->users, cfg->nusers, sizeof(*cfg->users));
    struct cfg_user *u = &cfg->users[cfg->nusers++];
    const char *at = strrchr(address, '@');
    size_t llen = at != NULL ? (size_t)(at - address) : strlen(address);
    u->address = xstrdup(address);
    u->local = xstrndup(address, llen);
    u->domain = xstrdup(at != NULL ? at + 1 : "");
    u->password_hash = hash != NULL && *hash != '\0' ? xstrdup(hash) : NULL;
    u->scram = NULL;
    u->cram_secret = NULL;
    u->line = line;
    u->in_config = in_config;
    return u;
}

struct cfg_alias *config_add_alias(struct config *cfg, const char *name,
                                   bool in_config, size_t line)
{
    cfg->aliases = grow(cfg->aliases, cfg->naliases, sizeof(*cfg->aliases));
    struct cfg_alias *a = &cfg->aliases[cfg->naliases++];
    a->name = xstrdup(name);
    a->targets = NULL;
    a->ntargets = 0;
    a->line = line;
    a->in_config = in_config;
    return a;
}

void config_alias_add_target(struct cfg_alias *a, const char *target)
{
    a->targets = grow(a->targets, a->ntargets, sizeof(*a->targets));
    a->targets[a->ntargets++] = xstrdup(target);
}

/* Equal names sort definitions in the configuration file first, then by
 * line, so the second of a pair is the one to complain about. */
static int cmp_defined(const char *na, bool ca, size_t la, const char *nb,
                       bool cb, size_t lb)
{
    int c = strcmp(na, nb);
    if (c != 0)
        return c;
    if (ca != cb)
        return ca ? -1 : 1;
    return (la > lb) - (la < lb);
}

static int cmp_domain_index(const void *x, const void *y, void *arg)
{
    const struct cfg_domain *doms = arg;
    const struct cfg_domain *a = &doms[*(const size_t *)x];
    const struct cfg_domain *b = &doms[*(const size_t *)y];
    return cmp_defined(a->name, false, a->line, b->name, false, b->line);
}

static int cmp_user(const void *x, const void *y)
{
    const struct cfg_user *a = x, *b = y;
    return cmp_defined(a->address, a->in_config, a->line, b->address,
                       b->in_config, b->line);
}

static int cmp_alias(const void *x, const void *y)
{
    const struct cfg_alias *a = x, *b = y;
    return cmp_defined(a->name, a->in_config, a->line, b->name, b->in_config,
                       b->line);
}

void config_sort(struct config *cfg)
{
    free(cfg->domain_index);
    cfg->domain_index = xreallocarray(NULL, cfg->ndomains + 1, sizeof(size_t));
    for (size_t i = 0; i < cfg->ndomains; i++)
        cfg->domain_index[i] = i;
    if (cfg->ndomains > 1)
        qsort_r(cfg->domain_index, cfg->ndomains, sizeof(size_t),
                cmp_domain_index, cfg->domains);
    if (cfg->nusers > 1)
        qsort(cfg->users, cfg->nusers, sizeof(*cfg->users), cmp_user);
    if (cfg->naliases > 1)
        qsort(cfg->aliases, cfg->naliases, sizeof(*cfg->aliases), cmp_alias);
}

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->source);
    free(cfg->hostname);
    free(cfg->data_dir);
    free(cfg->run_as);
    free(cfg->users_file);
    free(cfg->aliases_file);
    free(cfg->postmaster);
    for (size_t i = 0; i < cfg->nlisteners; i++)
        free(cfg->listeners[i].host);
    free(cfg->listeners);
    for (size_t i = 0; i < cfg->ndomains; i++) {
        free(cfg->domains[i].name);
        free(cfg->domains[i].catch_all);
    }
    free(cfg->domains);
    free(cfg->domain_index);
    for (size_t i = 0; i < cfg->nusers; i++) {
        struct cfg_user *u = &cfg->users[i];
        free(u->address);
        free(u->local);
        free(u->domain);
        if (u->password_hash != NULL) {
            explicit_bzero(u->password_hash, strlen(u->password_hash));
            free(u->password_hash);
        }
        if (u->scram != NULL) {
            explicit_bzero(u->scram, strlen(u->scram));
            free(u->scram);
        }
        if (u->cram_secret != NULL) {
            explicit_bzero(u->cram_secret, strlen(u->cram_secret));
            free(u->cram_secret);
        }
    }
    free(cfg->users);
    for (size_t i = 0; i < cfg->ntls_certs; i++) {
        free(cfg->tls_certs[i].cert);
        free(cfg->tls_certs[i].key);
    }
    free(cfg->tls_certs);
    free(cfg->plaintext_nets);
    free(cfg->etrn_nets);
    free(cfg->local_socket);
    for (size_t i = 0; i < cfg->nroutes; i++)
        config_route_free(&cfg->routes[i]);
    free(cfg->routes);
    free(cfg->relay_tls_ca);
    for (size_t i = 0; i < cfg->ndns_servers; i++)
        free(cfg->dns_servers[i]);
    free(cfg->dns_servers);
    free(cfg->dns_trust_anchor);
    for (size_t i = 0; i < cfg->naliases; i++) {
        for (size_t j = 0; j < cfg->aliases[i].ntargets; j++)
            free(cfg->aliases[i].targets[j]);
        free(cfg->aliases[i].targets);
        free(cfg->aliases[i].name);
    }
    free(cfg->aliases);
    free(cfg);
}

/* ---- the one-step match (resolve.h order) ---- */

/* alias or user "local@<dom->name>"; true when found */
static bool match_exact(const struct config *cfg, const struct cfg_domain *dom,
                        const char *local, size_t llen, struct cfg_match *m)
{
    char key[CONFIG_ADDRESS_MAX];
    size_t dlen = strlen(dom->name);
    if (llen > 64 || llen + 1 + dlen >= sizeof(key))
        return false;
    memcpy(key, local, llen);
    key[llen] = '@';
    memcpy(key + llen + 1, dom->name, dlen);
    size_t klen = llen + 1 + dlen;
    if ((m->alias = config_alias(cfg, key, klen)) != NULL) {
        m->kind = CFG_MATCH_ALIAS;
        return true;
    }
    if ((m->user = config_user(cfg, key, klen)) != NULL) {
        m->kind = CFG_MATCH_USER;
        return true;
    }
    return false;
}

void config_match(const struct config *cfg, const char *local, size_t local_len,
                  const char *domain, size_t domain_len, struct cfg_match *m_r)
{
    memset(m_r, 0, sizeof(*m_r));
    m_r->domain = config_domain(cfg, domain, domain_len);
    if (m_r->domain == NULL) {
        m_r->kind = CFG_MATCH_NOT_LOCAL;
        return;
    }
    for (size_t i = 0; i < local_len; i++)
        if (local[i] == '%' || local[i] == '!' || local[i] == '@') {
            m_r->kind = CFG_MATCH_ROUTING;
            return;
        }
    if (match_exact(cfg, m_r->domain, local, local_len, m_r))
        return;
    for (size_t i = 0; i < local_len; i++) {
        if (local[i] == '\0' || strchr(cfg->recipient_delimiter, local[i]) == NULL)
            continue;
        /* only the first delimiter counts: "a+b+c" is "a" with tag "b+c" */
        if (i > 0 && match_exact(cfg, m_r->domain, local, i, m_r)) {
            m_r->detail = local + i + 1;
            m_r->detail_len = local_len - i - 1;
            return;
        }
        break;
    }
    if (local_len == 10 && strncasecmp(local, "postmaster", 10) == 0 &&
        cfg->postmaster != NULL) {
        m_r->kind = CFG_MATCH_POSTMASTER;
        m_r->target = cfg->postmaster;
        return;
    }
    if (m_r->domain->catch_all != NULL) {
        m_r->kind = CFG_MATCH_CATCH_ALL;
        m_r->target = m_r->domain->catch_all;
        return;
    }
    m_r->kind = CFG_MATCH_NONE;
}

/* ---- the parser ---- */

#define MAX_WORDS (CONFIG_LINE_MAX / 2 + 1)

enum directive_id {
    D_HOSTNAME, D_DATA_DIR, D_RUN_AS, D_LOG_LEVEL, D_LISTEN, D_DOMAIN, D_USER,
    D_USERS_FILE, D_ALIAS, D_ALIASES_FILE, D_POSTMASTER, D_DELIMITER, D_VRFY,
    D_EXPN, D_LIMIT, D_TLS_CERT, D_AUTH_MECHS, D_PLAINTEXT_NETS,
    D_SENDER_MATCH, D_LOCAL_SOCKET, D_QUOTA, D_QUOTA_EXCEEDED,
    D_ROUTE, D_RELAY_TLS, D_RELAY_TLS_CA, D_DNS_RESOLVER, D_DNS_TRUST_ANCHOR,
    D_MX_PORT, D_ETRN_NETS, D__COUNT
};

struct parser {
    const char *file;
    size_t line;
    struct buf *err;
    struct config *cfg;
    size_t seen[D__COUNT];              /* line of first use, 0 = unused */
    size_t limit_line[LIM__COUNT];
    size_t listener_line[CONFIG_LISTENERS_MAX];
    size_t deferred_line;               /* lowest line with a deferred error */
};

/* A word for a message: printable ASCII kept, anything else as \xNN,
 * truncated so one message stays short. */
static const char *qw(char *tmp, size_t cap, const char *w)
{
    size_t o = 0;
    for (const unsigned char *c = (const unsigned char *)w; *c != '\0'; c++) {
        if (o + 8 >= cap) {
            memcpy(tmp + o, "...", 4);
            return tmp;
        }
        if (*c >= 0x20 && *c < 0x7f && *c != '\'' && *c != '\\')
            tmp[o++] = (char)*c;
        else
            o += (size_t)snprintf(tmp + o, cap - o, "\\x%02x", *c);
    }
    tmp[o] = '\0';
    return tmp;
}

#define Q(w) qw((char[100]){0}, 100, (w))

__attribute__((format(printf, 3, 0)))
static int verr(struct parser *p, size_t line, const char *fmt, va_list ap)
{
    buf_reset(p->err);
    buf_appendf(p->err, "%s:%zu: ", p->file, line);
    buf_vappendf(p->err, fmt, ap);
    return -1;
}

__attribute__((format(printf, 2, 3)))
static int perr(struct parser *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verr(p, p->line, fmt, ap);
    va_end(ap);
    return -1;
}

/* Keeps the error with the lowest line among the end-of-file checks. */
__attribute__((format(printf, 3, 4)))
static void defer(struct parser *p, size_t line, const char *fmt, ...)
{
    if (p->deferred_line != 0 && p->deferred_line <= line)
        return;
    p->deferred_line = line;
    va_list ap;
    va_start(ap, fmt);
    verr(p, line, fmt, ap);
    va_end(ap);
}

static int set_string(char **dst, const char *s)
{
    free(*dst);
    *dst = xstrdup(s);
    return 0;
}

static int d_hostname(struct parser *p, char **a, size_t n)
{
    (void)n;
    size_t len = strlen(a[0]);
    if (!config_domain_valid(a[0], len))
        return perr(p, "invalid hostname '%s'", Q(a[0]));
    char low[256];
    for (size_t i = 0; i <= len; i++)
        low[i] = (char)fold((unsigned char)a[0][i]);
    return set_string(&p->cfg->hostname, low);
}

static int d_path(struct parser *p, char **dst, const char *what, const char *s)
{
    /* words cannot be empty; refuse what would be a surprise as a path */
    if (strlen(s) > 1024)
        return perr(p, "%s path too long", what);
    return set_string(dst, s);
}

static int d_data_dir(struct parser *p, char **a, size_t n)
{
    (void)n;
    return d_path(p, &p->cfg->data_dir, "data-dir", a[0]);
}

static int d_users_file(struct parser *p, char **a, size_t n)
{
    (void)n;
    return d_path(p, &p->cfg->users_file, "users-file", a[0]);
}

static int d_aliases_file(struct parser *p, char **a, size_t n)
{
    (void)n;
    return d_path(p, &p->cfg->aliases_file, "aliases-file", a[0]);
}

static int d_run_as(struct parser *p, char **a, size_t n)
{
    (void)n;
    size_t len = strlen(a[0]);
    bool ok = len > 0 && len <= 32 && a[0][0] != '-';
    for (size_t i = 0; ok && i < len; i++)
        ok = is_alnum((unsigned char)a[0][i]) || a[0][i] == '_' ||
             a[0][i] == '-' || a[0][i] == '.';
    if (!ok)
        return perr(p, "invalid user name '%s' for run-as", Q(a[0]));
    return set_string(&p->cfg->run_as, a[0]);
}

static int d_log_level(struct parser *p, char **a, size_t n)
{
    (void)n;
    int lv = log_level_parse(a[0]);
    if (lv < 0)
        return perr(p, "unknown log level '%s' (expected debug, info, warn "
                       "or error)", Q(a[0]));
    p->cfg->log_level = lv;
    return 0;
}

static int parse_port(const char *s, uint16_t *port_r)
{
    size_t len = strlen(s);
    if (len == 0 || len > 5)
        return -1;
    unsigned long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *port_r = (uint16_t)v;
    return 0;
}

static bool host_is_wildcard(const char *h)
{
    return strcmp(h, "0.0.0.0") == 0 || strcmp(h, "::") == 0;
}

static int d_listen(struct parser *p, char **a, size_t n)
{
    (void)n;
    struct config *cfg = p->cfg;
    char host[64];
    const char *w = a[0], *port_s;
    size_t hlen;
    int af;
    if (w[0] == '[') {
        const char *close = strchr(w, ']');
        if (close == NULL || close[1] != ':')
            return perr(p, "invalid listen address '%s' (expected HOST:PORT "
                           "or [IPv6]:PORT)", Q(w));
        hlen = (size_t)(close - w - 1);
        w++;
        port_s = close + 2;
        af = AF_INET6;
    } else {
        const char *colon = strrchr(w, ':');
        if (colon == NULL)
            return perr(p, "invalid listen address '%s' (expected HOST:PORT "
                           "or [IPv6]:PORT)", Q(w));
        hlen = (size_t)(colon - w);
        if (memchr(w, ':', hlen) != NULL)
            return perr(p, "IPv6 listen address '%s' needs brackets: "
                           "[ADDRESS]:PORT", Q(a[0]));
        port_s = colon + 1;
        af = AF_INET;
    }
    if (hlen == 0 || hlen >= sizeof(host))
        return perr(p, "invalid listen address '%s'", Q(a[0]));
    memcpy(host, w, hlen);
    host[hlen] = '\0';
    unsigned char bin[16];
    char norm[INET6_ADDRSTRLEN];
    if (inet_pton(af, host, bin) != 1 ||
        inet_ntop(af, bin, norm, sizeof(norm)) == NULL)
        return perr(p, "listen address '%s' is not an IP%s address", Q(host),
                    af == AF_INET ? "v4" : "v6");
    uint16_t port;
    if (parse_port(port_s, &port) < 0)
        return perr(p, "invalid port '%s' (expected 1-65535)", Q(port_s));

    enum listener_role role;
    if (strcmp(a[1], "mx") == 0)
        role = ROLE_MX;
    else if (strcmp(a[1], "submission") == 0)
        role = ROLE_SUBMISSION;
    else if (strcmp(a[1], "submissions") == 0)
        role = ROLE_SUBMISSIONS;
    else if (strcmp(a[1], "pop3") == 0)
        role = ROLE_POP3;
    else if (strcmp(a[1], "pop3s") == 0)
        role = ROLE_POP3S;
    else
        return perr(p, "unknown listener role '%s' (expected mx, submission, "
                       "submissions, pop3 or pop3s)", Q(a[1]));

    bool v6 = af == AF_INET6;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct cfg_listener *l = &cfg->listeners[i];
        bool lv6 = strchr(l->host, ':') != NULL;
        if (l->port != port || lv6 != v6)
            continue;
        /* a wildcard bind takes the port on every address of its family */
        if (strcmp(l->host, norm) == 0 || host_is_wildcard(l->host) ||
            host_is_wildcard(norm))
            return perr(p, "listener %s%s%s:%u collides with the one on "
                           "line %zu", v6 ? "[" : "", norm, v6 ? "]" : "",
                        port, p->listener_line[i]);
    }
    if (cfg->nlisteners >= CONFIG_LISTENERS_MAX)
        return perr(p, "too many listeners (at most %d)", CONFIG_LISTENERS_MAX);
    p->listener_line[cfg->nlisteners] = p->line;
    cfg->listeners = xreallocarray(cfg->listeners, cfg->nlisteners + 1,
                                   sizeof(*cfg->listeners));
    cfg->listeners[cfg->nlisteners++] = (struct cfg_listener){
        .host = xstrdup(norm), .port = port, .role = role};
    return 0;
}

static int d_domain(struct parser *p, char **a, size_t n)
{
    struct config *cfg = p->cfg;
    size_t len = strlen(a[0]);
    if (!config_domain_valid(a[0], len))
        return perr(p, "invalid domain name '%s'", Q(a[0]));
    char *catch_all = NULL;
    for (size_t i = 1; i < n; i++) {
        if (strncmp(a[i], "catch-all=", 10) != 0) {
            free(catch_all);
            return perr(p, "unknown domain option '%s' (expected "
                           "catch-all=ADDRESS)", Q(a[i]));
        }
        char addr[CONFIG_ADDRESS_MAX];
        const char *v = a[i] + 10;
        const char *why = catch_all != NULL ? "given twice"
                          : config_check_target(v, strlen(v), addr, sizeof(addr));
        if (why != NULL) {
            free(catch_all);
            return perr(p, "invalid catch-all '%s': %s", Q(v), why);
        }
        catch_all = xstrdup(addr);
    }
    cfg->domains = grow(cfg->domains, cfg->ndomains, sizeof(*cfg->domains));
    struct cfg_domain *d = &cfg->domains[cfg->ndomains++];
    d->name = xstrdup(a[0]);
    for (char *c = d->name; *c != '\0'; c++)
        *c = (char)fold((unsigned char)*c);
    d->catch_all = catch_all;
    d->line = p->line;
    return 0;
}

static int d_user(struct parser *p, char **a, size_t n)
{
    char addr[CONFIG_ADDRESS_MAX];
    const char *why = config_check_mailbox(a[0], strlen(a[0]), addr, sizeof(addr));
    if (why != NULL)
        return perr(p, "invalid user address '%s': %s", Q(a[0]), why);
    /* Optional words: a password hash, then key=value secrets. */
    const char *hash = NULL, *scram = NULL, *cram = NULL;
    for (size_t i = 1; i < n; i++) {
        if (strncmp(a[i], "scram-sha-256=", 14) == 0 && scram == NULL) {
            scram = a[i] + 14;
        } else if (strncmp(a[i], "cram-md5=", 9) == 0 && cram == NULL) {
            cram = a[i] + 9;
        } else if (i == 1) {
            hash = a[i];
        } else {
            return perr(p, "user '%s': unexpected word '%s' (expected HASH, "
                           "scram-sha-256=... or cram-md5=...)", addr, Q(a[i]));
        }
    }
    if (hash != NULL && (why = config_check_hash(hash)) != NULL)
        return perr(p, "user '%s': %s", addr, why);
    if (scram != NULL && (why = config_check_scram(scram)) != NULL)
        return perr(p, "user '%s': %s", addr, why);
    if (cram != NULL && !sasl_cram_context_valid(cram))
        return perr(p, "user '%s': cram-md5= needs 64 hex digits (HMAC-MD5 "
                       "contexts)", addr);
    struct cfg_user *u = config_add_user(p->cfg, addr, hash, true, p->line);
    u->scram = scram ? xstrdup(scram) : NULL;
    u->cram_secret = cram ? xstrdup(cram) : NULL;
    return 0;
}

static int d_alias(struct parser *p, char **a, size_t n)
{
    char name[CONFIG_ADDRESS_MAX], t[CONFIG_ADDRESS_MAX];
    const char *why = config_check_mailbox(a[0], strlen(a[0]), name, sizeof(name));
    if (why != NULL)
        return perr(p, "invalid alias name '%s': %s", Q(a[0]), why);
    struct cfg_alias *al = config_add_alias(p->cfg, name, true, p->line);
    for (size_t i = 1; i < n; i++) {
        /* commas separate too: "a@x,b@y", "a@x, b@y" and "a@x , b@y" */
        for (char *s = a[i], *e; *s != '\0'; s = *e != '\0' ? e + 1 : e) {
            e = strchrnul(s, ',');
            if (e == s)
                continue;
            if ((why = config_check_target(s, (size_t)(e - s), t, sizeof(t))) != NULL) {
                char save = *e;
                *e = '\0';
                perr(p, "alias '%s': invalid target '%s': %s", name, Q(s), why);
                *e = save;
                return -1;
            }
            config_alias_add_target(al, t);
        }
    }
    if (al->ntargets == 0)
        return perr(p, "alias '%s' has no targets", name);
    return 0;
}

static int d_postmaster(struct parser *p, char **a, size_t n)
{
    (void)n;
    char addr[CONFIG_ADDRESS_MAX];
    const char *why = config_check_target(a[0], strlen(a[0]), addr, sizeof(addr));
    if (why != NULL)
        return perr(p, "invalid postmaster address '%s': %s", Q(a[0]), why);
    p->cfg->postmaster_line = p->line;
    return set_string(&p->cfg->postmaster, addr);
}

static int d_delimiter(struct parser *p, char **a, size_t n)
{
    (void)n;
    char *d = p->cfg->recipient_delimiter;
    if (strcmp(a[0], "none") == 0 || strcmp(a[0], "\"\"") == 0) {
        d[0] = '\0';
        return 0;
    }
    size_t len = strlen(a[0]);
    if (len >= sizeof(p->cfg->recipient_delimiter))
        return perr(p, "recipient-delimiter: at most %zu characters",
                    sizeof(p->cfg->recipient_delimiter) - 1);
    /* atext that is not a routing character, '.' or '/' */
    for (size_t i = 0; i < len; i++)
        if (strchr("#$&'*+-=?^_`{|}~", a[0][i]) == NULL)
            return perr(p, "recipient-delimiter: '%s' is not allowed (use "
                           "characters of #$&'*+-=?^_`{|}~)", Q(a[0]));
    memcpy(d, a[0], len + 1);
    return 0;
}

static int on_off(struct parser *p, const char *what, const char *v, bool *r)
{
    if (strcmp(v, "on") == 0)
        *r = true;
    else if (strcmp(v, "off") == 0)
        *r = false;
    else
        return perr(p, "%s: expected on or off, not '%s'", what, Q(v));
    return 0;
}

static int d_vrfy(struct parser *p, char **a, size_t n)
{
    (void)n;
    return on_off(p, "vrfy", a[0], &p->cfg->vrfy);
}

static int d_expn(struct parser *p, char **a, size_t n)
{
    (void)n;
    return on_off(p, "expn", a[0], &p->cfg->expn);
}

/* "123", sizes "64K" "10M" "2G" (powers of 1024), times "30s" "5m" "2h" "5d" */
static int parse_limit_value(const char *s, enum limit_unit kind, size_t *v_r)
{
    size_t v = 0, i = 0;
    for (; s[i] >= '0' && s[i] <= '9'; i++)
        if (!size_mul(v, 10, &v) || !size_add(v, (size_t)(s[i] - '0'), &v))
            return -1;
    if (i == 0)
        return -1;
    size_t mult = 1;
    if (s[i] != '\0') {
        if (s[i + 1] != '\0')
            return -1;
        int c = s[i];
        if (kind == LIMIT_SIZE && (c == 'k' || c == 'K'))
            mult = 1024;
        else if (kind == LIMIT_SIZE && (c == 'm' || c == 'M'))
            mult = 1024 * 1024;
        else if (kind == LIMIT_SIZE && (c == 'g' || c == 'G'))
            mult = 1024 * 1024 * 1024;
        else if (kind == LIMIT_TIME && c == 's')
            mult = 1;
        else if (kind == LIMIT_TIME && c == 'm')
            mult = 60;
        else if (kind == LIMIT_TIME && c == 'h')
            mult = 3600;
        else if (kind == LIMIT_TIME && c == 'd')
            mult = 86400;
        else
            return -1;
    }
    return size_mul(v, mult, v_r) ? 0 : -1;
}

static int d_limit(struct parser *p, char **a, size_t n)
{
    (void)n;
    int id = limit_lookup(a[0]);
    if (id < 0)
        return perr(p, "unknown limit '%s'", Q(a[0]));
    if (p->limit_line[id] != 0)
        return perr(p, "limit '%s' given twice (first on line %zu)", a[0],
                    p->limit_line[id]);
    enum limit_unit kind = limit_table[id].unit;
    size_t v;
    if (parse_limit_value(a[1], kind, &v) < 0)
        return perr(p, "limit '%s': invalid value '%s'%s", a[0], Q(a[1]),
                    kind == LIMIT_SIZE ? " (a number, optionally with K, M or G)"
                    : kind == LIMIT_TIME ? " (a number, optionally with s, m, h or d)"
                    : " (a number)");
    const struct limit_def *def = &limit_table[id];
    if (v < def->min || v > def->max)
        return perr(p, "limit '%s' must be between %zu and %zu, not %zu",
                    a[0], def->min, def->max, v);
    p->cfg->limits[id] = v;
    p->limit_line[id] = p->line;
    return 0;
}

static int d_tls_cert(struct parser *p, char **a, size_t n)
{
    (void)n;
    struct config *cfg = p->cfg;
    if (strlen(a[0]) > 1024 || strlen(a[1]) > 1024)
        return perr(p, "tls-certificate path too long");
    cfg->tls_certs = xreallocarray(cfg->tls_certs, cfg->ntls_certs + 1,
                                   sizeof(*cfg->tls_certs));
    cfg->tls_certs[cfg->ntls_certs++] = (struct cfg_tls_cert){
        .cert = xstrdup(a[0]), .key = xstrdup(a[1])};
    return 0;
}

static int d_auth_mechs(struct parser *p, char **a, size_t n)
{
    unsigned mechs = 0;
    for (size_t i = 0; i < n; i++) {
        int m = sasl_mech_lookup(a[i], strlen(a[i]));
        if (m < 0)
            return perr(p, "unknown SASL mechanism '%s' (expected PLAIN, LOGIN, "
                           "SCRAM-SHA-256 or CRAM-MD5)", Q(a[i]));
        if (m == SASL_MECH_DIGEST_MD5)
            return perr(p, "DIGEST-MD5 is not supported (RFC 6331 made it "
                           "Historic)");
        mechs |= 1u << m;
    }
    p->cfg->auth_mechs = mechs;
    return 0;
}

static int parse_nets(struct parser *p, char **a, size_t n, struct cfg_net **nets,
                      size_t *nnets);

static int d_plaintext_nets(struct parser *p, char **a, size_t n)
{
    return parse_nets(p, a, n, &p->cfg->plaintext_nets, &p->cfg->nplaintext_nets);
}

static int d_etrn_nets(struct parser *p, char **a, size_t n)
{
    return parse_nets(p, a, n, &p->cfg->etrn_nets, &p->cfg->netrn_nets);
}

static int parse_nets(struct parser *p, char **a, size_t n, struct cfg_net **nets,
                      size_t *nnets)
{
    for (size_t i = 0; i < n; i++) {
        char host[INET6_ADDRSTRLEN + 1];
        const char *slash = strchr(a[i], '/');
        size_t hlen = slash ? (size_t)(slash - a[i]) : strlen(a[i]);
        if (hlen == 0 || hlen >= sizeof(host))
            return perr(p, "invalid network '%s' (expected ADDRESS/PREFIX)", Q(a[i]));
        memcpy(host, a[i], hlen);
        host[hlen] = '\0';
        struct cfg_net net;
        memset(&net, 0, sizeof(net));
        unsigned max;
        if (inet_pton(AF_INET, host, net.addr) == 1) {
            net.family = AF_INET;
            max = 32;
        } else if (inet_pton(AF_INET6, host, net.addr) == 1) {
            net.family = AF_INET6;
            max = 128;
        } else {
            return perr(p, "invalid network '%s' (expected ADDRESS/PREFIX)", Q(a[i]));
        }
        net.prefix = max;
        if (slash != NULL) {
            char *end;
            unsigned long v = strtoul(slash + 1, &end, 10);
            if (slash[1] == '\0' || *end != '\0' || v > max)
                return perr(p, "invalid prefix length in '%s'", Q(a[i]));
            net.prefix = (unsigned)v;
        }
        *nets = xreallocarray(*nets, *nnets + 1, sizeof(**nets));
        (*nets)[(*nnets)++] = net;
    }
    return 0;
}

static int d_sender_match(struct parser *p, char **a, size_t n)
{
    (void)n;
    return on_off(p, "sender-login-match", a[0], &p->cfg->sender_login_match);
}

static int d_local_socket(struct parser *p, char **a, size_t n)
{
    (void)n;
    free(p->cfg->local_socket);
    p->cfg->local_socket = NULL;
    if (strcmp(a[0], "none") == 0) {
        p->cfg->local_socket = xstrdup("");
        return 0;
    }
    return d_path(p, &p->cfg->local_socket, "local-socket", a[0]);
}

/* "ITER,SALT,STOREDKEY,SERVERKEY": iterations in decimal (4096 at least,
 * RFC 7677 4), then three non-empty standard base64 fields. */
const char *config_check_scram(const char *v)
{
    char *end;
    unsigned long iter = strtoul(v, &end, 10);
    if (end == v || *end != ',' || iter < 4096 || iter > 10000000)
        return "scram-sha-256= must start with an iteration count of 4096 or more";
    for (int field = 0; field < 3; field++) {
        const char *f = end + 1;
        size_t len = strcspn(f, ",");
        if (len == 0 || len > 200 || strspn(f, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                               "abcdefghijklmnopqrstuvwxyz"
                                               "0123456789+/=") < len)
            return "scram-sha-256= needs ITER,SALT,STOREDKEY,SERVERKEY in base64";
        end = (char *)f + len;
        if ((field < 2 && *end != ',') || (field == 2 && *end != '\0'))
            return "scram-sha-256= needs ITER,SALT,STOREDKEY,SERVERKEY in base64";
    }
    return NULL;
}

/* quota BYTES MESSAGES: per user over all folders; 0 = unlimited. */
static int d_quota(struct parser *p, char **a, size_t n)
{
    (void)n;
    size_t bytes, msgs;
    if (parse_limit_value(a[0], LIMIT_SIZE, &bytes) < 0)
        return perr(p, "invalid quota size '%s' (e.g. 1G, 500M, 0 for none)", Q(a[0]));
    if (parse_limit_value(a[1], LIMIT_COUNT, &msgs) < 0)
        return perr(p, "invalid quota message count '%s'", Q(a[1]));
    p->cfg->quota_bytes = bytes;
    p->cfg->quota_messages = msgs;
    return 0;
}

static int d_quota_exceeded(struct parser *p, char **a, size_t n)
{
    (void)n;
    if (strcmp(a[0], "temporary") == 0)
        p->cfg->quota_permanent = false;
    else if (strcmp(a[0], "permanent") == 0)
        p->cfg->quota_permanent = true;
    else
        return perr(p, "quota-exceeded is 'temporary' or 'permanent', not '%s'", Q(a[0]));
    return 0;
}

static bool peer_in(const struct cfg_net *nets, size_t n, const char *peer)
{
    unsigned char addr[16];
    int family = strchr(peer, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(family, peer, addr) != 1)
        return false;
    return config_net_match(nets, n, family, addr);
}

bool config_plaintext_peer(const struct config *cfg, const char *peer)
{
    return peer_in(cfg->plaintext_nets, cfg->nplaintext_nets, peer);
}

bool config_etrn_peer(const struct config *cfg, const char *peer)
{
    return peer_in(cfg->etrn_nets, cfg->netrn_nets, peer);
}

bool config_net_match(const struct cfg_net *nets, size_t n, int family,
                      const unsigned char *addr)
{
    for (size_t i = 0; i < n; i++) {
        if (nets[i].family != family)
            continue;
        unsigned bits = nets[i].prefix, k = 0;
        bool match = true;
        for (; bits >= 8 && match; bits -= 8, k++)
            match = nets[i].addr[k] == addr[k];
        if (match && bits > 0) {
            unsigned char mask = (unsigned char)(0xff << (8 - bits));
            match = (nets[i].addr[k] & mask) == (addr[k] & mask);
        }
        if (match)
            return true;
    }
    return false;
}

static int d_route(struct parser *p, char **a, size_t n)
{
    struct cfg_route r;
    char err[200];
    if (config_route_parse(a, n, &r, err, sizeof(err)) < 0)
        return perr(p, "%s", err);
    for (size_t i = 0; i < p->cfg->nroutes; i++)
        if (strcmp(p->cfg->routes[i].domain, r.domain) == 0) {
            size_t first = p->cfg->routes[i].line;
            config_route_free(&r);
            return perr(p, "route for '%s' given twice (first on line %zu)",
                        Q(a[0]), first);
        }
    r.line = p->line;
    p->cfg->routes = xreallocarray(p->cfg->routes, p->cfg->nroutes + 1,
                                   sizeof(*p->cfg->routes));
    p->cfg->routes[p->cfg->nroutes++] = r;
    return 0;
}

static int d_relay_tls(struct parser *p, char **a, size_t n)
{
    (void)n;
    if (config_tls_policy_parse(a[0], &p->cfg->relay_tls) < 0)
        return perr(p, "relay-tls must be none, may, encrypt or verify, not '%s'",
                    Q(a[0]));
    return 0;
}

static int d_relay_tls_ca(struct parser *p, char **a, size_t n)
{
    (void)n;
    return d_path(p, &p->cfg->relay_tls_ca, "relay-tls-ca", a[0]);
}

static int d_dns_resolver(struct parser *p, char **a, size_t n)
{
    if (n > 8)
        return perr(p, "at most 8 resolvers");
    for (size_t i = 0; i < n; i++) {
        char *s, err[160];
        if (config_dns_server_parse(a[i], &s, err, sizeof(err)) < 0)
            return perr(p, "%s", err);
        p->cfg->dns_servers = xreallocarray(p->cfg->dns_servers,
                                            p->cfg->ndns_servers + 1,
                                            sizeof(*p->cfg->dns_servers));
        p->cfg->dns_servers[p->cfg->ndns_servers++] = s;
    }
    return 0;
}

static int d_dns_trust_anchor(struct parser *p, char **a, size_t n)
{
    (void)n;
    free(p->cfg->dns_trust_anchor);
    p->cfg->dns_trust_anchor = NULL;
    if (strcmp(a[0], "none") == 0)
        return 0;
    return d_path(p, &p->cfg->dns_trust_anchor, "dns-trust-anchor", a[0]);
}

static int d_mx_port(struct parser *p, char **a, size_t n)
{
    (void)n;
    if (parse_port(a[0], &p->cfg->mx_port) < 0)
        return perr(p, "invalid mx-port '%s'", Q(a[0]));
    return 0;
}

struct directive {
    const char *name;
    size_t min_args, max_args;
    bool once;
    int (*fn)(struct parser *p, char **args, size_t nargs);
};

static const struct directive directives[D__COUNT] = {
    [D_HOSTNAME] = {"hostname", 1, 1, true, d_hostname},
    [D_DATA_DIR] = {"data-dir", 1, 1, true, d_data_dir},
    [D_RUN_AS] = {"run-as", 1, 1, true, d_run_as},
    [D_LOG_LEVEL] = {"log-level", 1, 1, true, d_log_level},
    [D_LISTEN] = {"listen", 2, 2, false, d_listen},
    [D_DOMAIN] = {"domain", 1, 2, false, d_domain},
    [D_USER] = {"user", 1, 4, false, d_user},
    [D_USERS_FILE] = {"users-file", 1, 1, true, d_users_file},
    [D_ALIAS] = {"alias", 2, MAX_WORDS, false, d_alias},
    [D_ALIASES_FILE] = {"aliases-file", 1, 1, true, d_aliases_file},
    [D_POSTMASTER] = {"postmaster", 1, 1, true, d_postmaster},
    [D_DELIMITER] = {"recipient-delimiter", 1, 1, true, d_delimiter},
    [D_VRFY] = {"vrfy", 1, 1, true, d_vrfy},
    [D_EXPN] = {"expn", 1, 1, true, d_expn},
    [D_LIMIT] = {"limit", 2, 2, false, d_limit},
    [D_TLS_CERT] = {"tls-certificate", 2, 2, false, d_tls_cert},
    [D_AUTH_MECHS] = {"auth-mechanisms", 1, MAX_WORDS, true, d_auth_mechs},
    [D_PLAINTEXT_NETS] = {"auth-plaintext-networks", 1, MAX_WORDS, true, d_plaintext_nets},
    [D_SENDER_MATCH] = {"sender-login-match", 1, 1, true, d_sender_match},
    [D_LOCAL_SOCKET] = {"local-socket", 1, 1, true, d_local_socket},
    [D_QUOTA] = {"quota", 2, 2, true, d_quota},
    [D_QUOTA_EXCEEDED] = {"quota-exceeded", 1, 1, true, d_quota_exceeded},
    [D_ROUTE] = {"route", 2, 5, false, d_route},
    [D_RELAY_TLS] = {"relay-tls", 1, 1, true, d_relay_tls},
    [D_RELAY_TLS_CA] = {"relay-tls-ca", 1, 1, true, d_relay_tls_ca},
    [D_DNS_RESOLVER] = {"dns-resolver", 1, MAX_WORDS, true, d_dns_resolver},
    [D_DNS_TRUST_ANCHOR] = {"dns-trust-anchor", 1, 1, true, d_dns_trust_anchor},
    [D_MX_PORT] = {"mx-port", 1, 1, true, d_mx_port},
    [D_ETRN_NETS] = {"etrn-networks", 1, MAX_WORDS, true, d_etrn_nets},
};

static int parse_line(struct parser *p, char *line, char **words)
{
    size_t n = 0;
    for (char *c = line;;) {
        while (*c == ' ' || *c == '\t')
            c++;
        if (*c == '\0' || *c == '#')
            break;
        words[n++] = c;
        while (*c != '\0' && *c != ' ' && *c != '\t')
            c++;
        if (*c == '\0')
            break;
        *c++ = '\0';
    }
    if (n == 0)
        return 0;
    for (size_t i = 0; i < D__COUNT; i++) {
        const struct directive *d = &directives[i];
        if (strcmp(words[0], d->name) != 0)
            continue;
        size_t nargs = n - 1;
        if (nargs < d->min_args || nargs > d->max_args) {
            if (d->min_args == d->max_args)
                return perr(p, "'%s' takes %zu argument%s, not %zu", d->name,
                            d->min_args, d->min_args == 1 ? "" : "s", nargs);
            if (d->max_args == MAX_WORDS)
                return perr(p, "'%s' takes at least %zu arguments", d->name,
                            d->min_args);
            return perr(p, "'%s' takes %zu to %zu arguments, not %zu", d->name,
                        d->min_args, d->max_args, nargs);
        }
        if (d->once && p->seen[i] != 0)
            return perr(p, "'%s' given twice (first on line %zu)", d->name,
                        p->seen[i]);
        if (p->seen[i] == 0)
            p->seen[i] = p->line;
        return d->fn(p, words + 1, nargs);
    }
    return perr(p, "unknown directive '%s'", Q(words[0]));
}

/* The checks that need the whole file. Arrays are sorted here. */
static int finish(struct parser *p)
{
    struct config *cfg = p->cfg;
    static const enum directive_id required[] = {D_HOSTNAME, D_POSTMASTER,
                                                 D_DOMAIN, D_LISTEN};
    for (size_t i = 0; i < sizeof(required) / sizeof(*required); i++)
        if (p->seen[required[i]] == 0)
            defer(p, p->line, "missing required directive '%s'",
                  directives[required[i]].name);

    config_sort(cfg);
    for (size_t i = 1; i < cfg->ndomains; i++) {
        const struct cfg_domain *d = &cfg->domains[cfg->domain_index[i]];
        const struct cfg_domain *prev = &cfg->domains[cfg->domain_index[i - 1]];
        if (strcmp(d->name, prev->name) == 0)
            defer(p, d->line, "duplicate domain '%s' (first on line %zu)",
                  d->name, prev->line);
    }
    for (size_t i = 0; i < cfg->nusers; i++) {
        const struct cfg_user *u = &cfg->users[i];
        if (i > 0 && strcmp(u->address, u[-1].address) == 0)
            defer(p, u->line, "duplicate user '%s' (first on line %zu)",
                  u->address, u[-1].line);
        if (config_domain(cfg, u->domain, strlen(u->domain)) == NULL)
            defer(p, u->line, "user '%s' is not in a local domain (add "
                  "'domain %s')", u->address, u->domain);
    }
    for (size_t i = 0; i < cfg->naliases; i++) {
        const struct cfg_alias *a = &cfg->aliases[i];
        if (i > 0 && strcmp(a->name, a[-1].name) == 0)
            defer(p, a->line, "duplicate alias '%s' (first on line %zu)",
                  a->name, a[-1].line);
        const char *dom = strrchr(a->name, '@') + 1;
        if (config_domain(cfg, dom, strlen(dom)) == NULL)
            defer(p, a->line, "alias '%s' is not in a local domain (add "
                  "'domain %s')", a->name, dom);
        const struct cfg_user *u = config_user(cfg, a->name, strlen(a->name));
        if (u != NULL)
            defer(p, a->line, "alias '%s' has the name of the user on line %zu",
                  a->name, u->line);
    }
    if (cfg->limits[LIM_RETRY_MIN] > cfg->limits[LIM_RETRY_MAX])
        defer(p, p->limit_line[LIM_RETRY_MIN] > p->limit_line[LIM_RETRY_MAX]
                 ? p->limit_line[LIM_RETRY_MIN] : p->limit_line[LIM_RETRY_MAX],
              "limit 'retry-min' (%zu) is above 'retry-max' (%zu)",
              cfg->limits[LIM_RETRY_MIN], cfg->limits[LIM_RETRY_MAX]);
    return p->deferred_line != 0 ? -1 : 0;
}

struct config *config_parse(const char *text, size_t len, const char *filename,
                            struct buf *err_r)
{
    struct config *cfg = xcalloc(1, sizeof(*cfg));
    cfg->source = xstrdup(filename);
    cfg->log_level = LOG_INFO;
    memcpy(cfg->recipient_delimiter, "+", 2);
    cfg->sender_login_match = true;
    cfg->auth_mechs = (1u << SASL_MECH_PLAIN) | (1u << SASL_MECH_LOGIN) |
                      (1u << SASL_MECH_SCRAM_SHA_256);
    for (int i = 0; i < LIM__COUNT; i++)
        cfg->limits[i] = limit_table[i].def;
    cfg->relay_tls = TLS_POLICY_MAY;
    cfg->mx_port = 25;

    struct parser *p = xcalloc(1, sizeof(*p));
    p->file = filename;
    p->err = err_r;
    p->cfg = cfg;
    char *line = xmalloc(CONFIG_LINE_MAX + 1);
    char **words = xreallocarray(NULL, MAX_WORDS, sizeof(*words));
    int rc = 0;

    size_t pos = 0;
    const char *l;
    size_t llen;
    while (rc == 0 && config_next_line(text, len, &pos, &l, &llen)) {
        p->line++;
        const char *why = config_check_line(l, llen);
        if (why != NULL) {
            rc = perr(p, "%s", why);
            break;
        }
        memcpy(line, l, llen);
        line[llen] = '\0';
        rc = parse_line(p, line, words);
    }
    if (p->line == 0)
        p->line = 1;
    if (rc == 0)
        rc = finish(p);

    free(words);
    free(line);
    free(p);
    if (rc != 0) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
}
