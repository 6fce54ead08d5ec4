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
 *  - err_r must have been set up with buf_init() by the caller; it is reset
 *    before a message is written.
 *  - Limits on the text: lines of at most CONFIG_LINE_MAX bytes, no NUL and
 *    no control character but TAB (a CR right before the LF is accepted),
 *    at most CONFIG_LISTENERS_MAX listeners; files read by config_load are
 *    capped at CONFIG_FILE_MAX bytes.
 */
#ifndef ESTAFETA_CONF_CONFIG_H
#define ESTAFETA_CONF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config_relay.h"
#include "lib/buf.h"
#include "lib/limits.h"

enum listener_role {
    ROLE_MX,            /* port 25: mail for our domains, no relay */
    ROLE_SUBMISSION,    /* port 587: STARTTLS + AUTH (issue 3) */
    ROLE_SUBMISSIONS,   /* port 465: implicit TLS + AUTH (issue 3) */
    ROLE_POP3,          /* port 110: POP3 with STLS (issue 4) */
    ROLE_POP3S,         /* port 995: POP3 over implicit TLS */
    ROLE_LOCAL,         /* the local-socket (estafeta sendmail); never from
                           a `listen` line: the peer's uid is its identity */
};

struct cfg_listener {
    char *host;         /* "127.0.0.1", "::1", "0.0.0.0" or "::" */
    uint16_t port;
    enum listener_role role;
};

struct cfg_domain {
    char *name;         /* lower case */
    char *catch_all;    /* NULL, or the address that gets unknown recipients */
    size_t line;        /* where it was defined, for messages */
};

struct cfg_user {
    char *address;      /* lower case "local@domain", domain is a local domain */
    char *local;        /* lower case local part (points into address storage is
                           not assumed: own string) */
    char *domain;       /* lower case domain */
    char *password_hash;/* "$argon2id$..." or "$6$..." or NULL (no login) */
    char *scram;        /* "scram-sha-256=ITER,SALT,STOREDKEY,SERVERKEY" value
                           (base64 parts), or NULL: no SCRAM for this user */
    char *cram_secret;  /* reversible secret for CRAM-MD5, or NULL */
    size_t line;        /* where it was defined, for messages */
    bool in_config;     /* defined by `user` in the configuration file itself
                           (else it came from users-file) */
};

struct cfg_alias {
    char *name;         /* lower case "local@domain" */
    char **targets;     /* addresses as written (lower-cased domains) */
    size_t ntargets;
    size_t line;        /* where it was defined, for messages */
    bool in_config;     /* defined by `alias` (else it came from aliases-file) */
};

struct cfg_tls_cert {
    char *cert;         /* PEM certificate chain file */
    char *key;          /* PEM private key file */
};

struct cfg_net {
    int family;         /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    unsigned prefix;    /* CIDR prefix length */
};

struct config {
    char *source;           /* file name, or "(embedded default)" */
    char *hostname;         /* our name in greetings and Received: */
    char *data_dir;         /* absolute after config_load */
    char *run_as;           /* user to switch to when started as root, or NULL */
    char *users_file;       /* NULL or path */
    char *aliases_file;     /* NULL or path */
    char *postmaster;       /* address that postmaster@<each domain> reaches */
    size_t postmaster_line; /* for messages */
    int log_level;          /* enum log_level */
    char recipient_delimiter[8]; /* set of chars, "" = no subaddressing */
    bool vrfy;              /* answer VRFY for anonymous clients */
    bool expn;              /* answer EXPN for anonymous clients */
    bool sender_login_match;/* authenticated users send only as themselves
                               (or aliases that reach them); default on */
    unsigned auth_mechs;    /* bit (1u << enum sasl_mech) per mechanism offered */
    uint64_t quota_bytes;   /* per user, all folders; 0 = unlimited */
    uint64_t quota_messages;/* per user; 0 = unlimited */
    bool quota_permanent;   /* over quota: 552 5.2.2 (else 452 4.2.2, retried) */
    char *local_socket;     /* UNIX socket for `estafeta sendmail`, absolute
                               after config_load; NULL = none */

    struct cfg_tls_cert *tls_certs; size_t ntls_certs; /* first = default */
    struct cfg_net *plaintext_nets; size_t nplaintext_nets; /* PLAIN/LOGIN
                               allowed without TLS from these networks */
    struct cfg_net *etrn_nets; size_t netrn_nets; /* ETRN allowed without
                               authentication from these networks */

    struct cfg_listener *listeners; size_t nlisteners;
    struct cfg_domain *domains;     size_t ndomains; /* in file order: the
                                       first is the primary domain */
    size_t *domain_index;   /* positions in domains[] in name order, for
                               config_domain() */
    struct cfg_user *users;         size_t nusers;   /* sorted by address */
    struct cfg_alias *aliases;      size_t naliases; /* sorted by name */

    /* Outbound delivery (config_relay.h). */
    struct cfg_route *routes;       size_t nroutes;
    enum tls_policy relay_tls;      /* default TLS policy; may */
    char *relay_tls_ca;             /* CA bundle for verify; NULL = system */
    char **dns_servers;             size_t ndns_servers; /* "addr@port" */
    char *dns_trust_anchor;         /* NULL: no DNSSEC validation */
    uint16_t mx_port;               /* 25 */

    size_t limits[LIM__COUNT];
};

struct config_overrides {
    const char *data_dir;   /* NULL = as configured */
    bool no_ref_check;      /* skip config_check_refs: `estafeta user` must be
                               able to add the user the postmaster or an alias
                               names before that user exists */
};

#define CONFIG_LINE_MAX 4096
#define CONFIG_FILE_MAX ((size_t)16 * 1024 * 1024)
#define CONFIG_LISTENERS_MAX 64
/* "local@domain" at most: 64 + 1 + 255, plus the NUL */
#define CONFIG_ADDRESS_MAX (64 + 1 + 255 + 1)

/* The configuration used when no file is given: demo domain and user on
 * 127.0.0.1 with unprivileged ports, state under ./estafeta-data. */
extern const char config_embedded_default[];

/*
 * Which configuration a command uses: the path it was given (-c), else
 * $ESTAFETA_CONFIG, else CONFIG_SYSTEM_PATH if that file exists, else NULL
 * (the embedded default). Empty strings count as not given.
 */
#define CONFIG_SYSTEM_PATH "/etc/estafeta/estafeta.conf"
const char *config_choose_path(const char *given);

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
/* True if the address (AF_INET/AF_INET6 bytes) is in one of the networks. */
bool config_net_match(const struct cfg_net *nets, size_t n, int family,
                      const unsigned char *addr);
/* True if a client address as text ("192.0.2.1", "2001:db8::1") is in
 * auth-plaintext-networks; false for anything that is not an address. */
bool config_plaintext_peer(const struct config *cfg, const char *peer);
/* The same for etrn-networks. */
bool config_etrn_peer(const struct config *cfg, const char *peer);

/*
 * What local@domain means here, one step only: steps 1-8 of the order in
 * deliver/resolve.h, which this function is the single definition of (the
 * resolver expands the result; config_check_refs walks it to find dangling
 * targets and loops). local/domain need not be NUL-terminated.
 */
enum cfg_match_kind {
    CFG_MATCH_NOT_LOCAL,    /* 1. domain not ours */
    CFG_MATCH_ROUTING,      /* 2. '%', '!' or '@' in the local part */
    CFG_MATCH_ALIAS,        /* 3. (or 5.) m->alias */
    CFG_MATCH_USER,         /* 4. (or 5.) m->user */
    CFG_MATCH_POSTMASTER,   /* 6. m->target is cfg->postmaster */
    CFG_MATCH_CATCH_ALL,    /* 7. m->target is the domain's catch-all */
    CFG_MATCH_NONE,         /* 8. unknown user */
};

struct cfg_match {
    enum cfg_match_kind kind;
    const struct cfg_domain *domain;  /* NULL only for NOT_LOCAL */
    const struct cfg_alias *alias;
    const struct cfg_user *user;
    const char *target;
    const char *detail;     /* step 5: the tag after the delimiter (points into
                               local), else NULL */
    size_t detail_len;
};

void config_match(const struct config *cfg, const char *local, size_t local_len,
                  const char *domain, size_t domain_len, struct cfg_match *m_r);

/*
 * Cross-reference validation (config_load runs it unless told not to):
 * every alias target, catch-all and the postmaster, when in a local domain,
 * resolves; no alias loop; no chain of expansions deeper than
 * LIM_ALIAS_DEPTH. 0, or -1 with "FILE:LINE: message" naming the alias.
 */
int config_check_refs(const struct config *cfg, struct buf *err_r);

/* ---- shared by the conf/ files and `estafeta user` ---- */

/* A mailbox address (user or alias name): local part of [a-z0-9._+=-]
 * (no leading or trailing '.', no ".."), 1..64 octets, '@', a valid domain
 * name. Upper case is folded. Writes the lower-case form into out (cap at
 * least CONFIG_ADDRESS_MAX) and returns NULL, or returns why it is invalid. */
const char *config_check_mailbox(const char *in, size_t len, char *out,
                                 size_t out_cap);
/* A target address (alias target, catch-all, postmaster): a dot-atom local
 * part (RFC 5322 atext), '@', a valid domain name. Only the domain is
 * lower-cased. NULL, or why it is invalid. */
const char *config_check_target(const char *in, size_t len, char *out,
                                size_t out_cap);
/* A domain name: letters, digits and '-' in dot-separated labels of 1..63,
 * at most 253 octets, not all-numeric at the end (that is an IP address). */
bool config_domain_valid(const char *s, size_t len);
/* A stored password hash: "$argon2id$..." or "$6$...", printable, no ':'.
 * NULL, or why not. */
const char *config_check_hash(const char *hash);
/* Syntax of a "scram-sha-256=" value (users file or `user`); NULL if fine. */
const char *config_check_scram(const char *v);
/* One line of a configuration, users or aliases file: NULL, or why it is
 * refused (longer than CONFIG_LINE_MAX, NUL, control character but TAB). */
const char *config_check_line(const char *s, size_t len);
/* Next line of text[*pos..len) without its LF (and a CR before it);
 * false at the end. */
bool config_next_line(const char *text, size_t len, size_t *pos,
                      const char **line_r, size_t *len_r);
/* Append a user / alias (strings are copied; the caller has validated
 * them). Arrays are no longer sorted until config_sort(). */
struct cfg_user *config_add_user(struct config *cfg, const char *address,
                                 const char *hash, bool in_config, size_t line);
struct cfg_alias *config_add_alias(struct config *cfg, const char *name,
                                   bool in_config, size_t line);
void config_alias_add_target(struct cfg_alias *a, const char *target);
/* Sorts users and aliases, and indexes domains, for the lookups. */
void config_sort(struct config *cfg);
/* Replaces what err holds with the formatted message and returns -1, so an
 * error path reads `return config_errf(err, ...)`. */
int config_errf(struct buf *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
