/*
 * resolve: what a recipient address means here. Pure: reads only the
 * configuration, so the same answer is given at RCPT time (to accept or
 * refuse) and at delivery time (to expand).
 *
 * Order, for local@domain with domain compared case-insensitively and the
 * local part folded to lower case:
 *   1. domain not one of ours            -> RESOLVE_NOT_LOCAL (no relay: 554 5.7.1)
 *   2. local part holds '%', '!' or '@'  -> RESOLVE_ROUTING   (relay hack: 554 5.7.1)
 *   3. an alias local@domain             -> its targets, expanded recursively
 *   4. a user local@domain               -> that mailbox
 *   5. local part with a recipient-delimiter char: retry 3-4 with the part
 *      before the first delimiter ("user+tag" -> "user"); the tag is returned
 *      in detail_r-free form (see struct) for folder delivery later
 *   6. "postmaster" (any case)           -> cfg->postmaster, expanded
 *   7. the domain's catch-all            -> expanded
 *   8.                                   -> RESOLVE_UNKNOWN_USER (550 5.1.1)
 * Expansion: a target in a local domain is resolved again (depth at most
 * LIM_ALIAS_DEPTH, else RESOLVE_LOOP); a target elsewhere is a remote
 * address (forwarding, delivered by the relay later). Mailboxes are
 * de-duplicated; more than LIM_ALIAS_EXPANSION results gives RESOLVE_TOO_MANY.
 * A local target that resolves to nothing is skipped and counted in
 * `unknown`; if nothing at all is deliverable the result is
 * RESOLVE_UNKNOWN_USER.
 */
#ifndef ESTAFETA_DELIVER_RESOLVE_H
#define ESTAFETA_DELIVER_RESOLVE_H

#include <stddef.h>

#include "conf/config.h"

enum resolve_status {
    RESOLVE_OK,
    RESOLVE_NOT_LOCAL,
    RESOLVE_ROUTING,
    RESOLVE_UNKNOWN_USER,
    RESOLVE_LOOP,
    RESOLVE_TOO_MANY,
};

struct resolve_result {
    char **mailboxes;   /* owned: user addresses ("local@domain") to deliver to */
    size_t nmailboxes;
    char **remote;      /* owned: addresses outside our domains (forwarding) */
    size_t nremote;
    size_t unknown;     /* local targets that resolved to nothing */
};

/* local/domain need not be NUL-terminated. r is always initialised (and must
 * be freed with resolve_result_free) whatever the status. */
enum resolve_status resolve_address(const struct config *cfg,
                                    const char *local, size_t local_len,
                                    const char *domain, size_t domain_len,
                                    struct resolve_result *r);
void resolve_result_free(struct resolve_result *r);
const char *resolve_status_name(enum resolve_status st);

#endif
