/*
 * config: estafeta's configuration, parsed by a pure parser into one
 * immutable struct. Nothing in estafeta keeps configuration in globals:
 * code receives a `const struct config *`; SIGHUP builds a new struct and
 * swaps the pointer, sessions keep the one they started with.
 *
 * The file format is documented in doc/config.md and estafeta.conf(5).
 *
 * Contract:
 *  - config_parse(): text in, struct out; no I/O at all (so it is fuzzed).
 *    Returns NULL on the first error and writes "FILE:LINE: message" into
 *    err_r. Paths are stored as written (relative ones are resolved by
 *    config_load against data-dir).
 *  - config_load(): reads the file (or uses the embedded default when path
 *    is NULL), applies overrides, resolves relative paths against data-dir,
 *    reads users-file and aliases-file (errors name those files), and
 *    validates cross-references (every alias target in a local domain
 *    exists, postmaster resolves, listeners do not collide).
 *  - config_free(NULL) is a no-op. The struct and all it points to are owned
 *    by the config and freed together.
 *  - Lookups (config_domain, config_user, config_alias) are case-insensitive
 *    and take lengths, not NUL-terminated strings, so callers need no copies.
 */
#ifndef ESTAFETA_CONF_CONFIG_H
#define ESTAFETA_CONF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/limits.h"

enum listener_role {
    ROLE_MX,            /* port 25: mail for our domains, no relay */
    ROLE_SUBMISSION,    /* port 587: STARTTLS + AUTH (issue 3) */
    ROLE_SUBMISSIONS,   /* port 465: implicit TLS + AUTH (issue 3) */
};

struct cfg_listener {
    char *host;         /* "127.0.0.1", "::1", "0.0.0.0" or "::" */
    uint16_t port;
    enum listener_role role;
};

struct cfg_domain {
    char *name;         /* lower case */
    char *catch_all;    /* NULL, or the address that gets unknown recipients */
};

struct cfg_user {
    char *address;      /* lower case "local@domain", domain is a local domain */
    char *local;        /* lower case local part (points into address storage is
                           not assumed: own string) */
    char *domain;       /* lower case domain */
    char *password_hash;/* "$argon2id$..." or "$6$..." or NULL (no login) */
};

struct cfg_alias {
    char *name;         /* lower case "local@domain" */
    char **targets;     /* addresses as written (lower-cased domains) */
    size_t ntargets;
};

struct config {
    char *source;           /* file name, or "(embedded default)" */
    char *hostname;         /* our name in greetings and Received: */
    char *data_dir;         /* absolute after config_load */
    char *run_as;           /* user to switch to when started as root, or NULL */
    char *users_file;       /* NULL or path */
    char *aliases_file;     /* NULL or path */
    char *postmaster;       /* address that postmaster@<each domain> reaches */
    int log_level;          /* enum log_level */
    char recipient_delimiter[8]; /* set of chars, "" = no subaddressing */
    bool vrfy;              /* answer VRFY for anonymous clients */
    bool expn;              /* answer EXPN for anonymous clients */

    struct cfg_listener *listeners; size_t nlisteners;
    struct cfg_domain *domains;     size_t ndomains;
    struct cfg_user *users;         size_t nusers;   /* sorted by address */
    struct cfg_alias *aliases;      size_t naliases; /* sorted by name */

    size_t limits[LIM__COUNT];
};

struct config_overrides {
    const char *data_dir;   /* NULL = as configured */
};

/* The configuration used when no file is given: demo domain and user on
 * 127.0.0.1 with unprivileged ports, state under ./estafeta-data. */
extern const char config_embedded_default[];

struct config *config_parse(const char *text, size_t len, const char *filename,
                            struct buf *err_r);
struct config *config_load(const char *path,
                           const struct config_overrides *ov,
                           struct buf *err_r);
void config_free(struct config *cfg);

const struct cfg_domain *config_domain(const struct config *cfg,
                                       const char *name, size_t len);
const struct cfg_user *config_user(const struct config *cfg,
                                   const char *address, size_t len);
const struct cfg_alias *config_alias(const struct config *cfg,
                                     const char *name, size_t len);
const char *listener_role_name(enum listener_role role);

#endif
