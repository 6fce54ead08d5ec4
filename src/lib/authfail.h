/*
 * authfail: failed logins per client address, shared by every protocol
 * (SMTP AUTH, POP3, IMAP later) so that guessing over one protocol counts
 * against the others (security.md 7). Entries survive disconnects (an
 * attacker reconnects), expire after the lockout window, and are bounded
 * in number (AUTHFAIL_MAX_ENTRIES: beyond it, new addresses are not
 * counted rather than memory growing).
 *
 * Contract: single-threaded (the event loop). authfail_locked() is true
 * while the address is locked out; authfail_failed() counts one failure and
 * locks the address for `window` seconds once `limit` failures fall inside
 * the window; authfail_succeeded() forgets the address.
 */
#ifndef ESTAFETA_LIB_AUTHFAIL_H
#define ESTAFETA_LIB_AUTHFAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define AUTHFAIL_MAX_ENTRIES 65536

struct authfail;

struct authfail *authfail_new(void);
void authfail_free(struct authfail *t);
bool authfail_locked(struct authfail *t, const char *addr, time_t now, size_t window);
void authfail_failed(struct authfail *t, const char *addr, time_t now,
                     size_t limit, size_t window);
void authfail_succeeded(struct authfail *t, const char *addr, time_t now,
                        size_t window);

#endif
