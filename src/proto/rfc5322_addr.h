/*
 * rfc5322_addr: extracts the addr-specs from an address-list header value
 * (RFC 5322 3.4: To:, Cc:, Bcc:, and From:/Sender: for sendmail), pure.
 * Handles display names (atoms and quoted strings), angle addresses, groups
 * ("undisclosed-recipients:;"), comments (nested, RFC 5322 3.2.2), folding
 * whitespace, and obsolete forms seen in the wild (empty list elements).
 * Source routes in angle addresses are dropped.
 *
 * Contract: rfc5322_addr_list(value, len, cb, arg) calls cb(addr, addr_len,
 * arg) for each addr-spec in order ("local@domain", the local part as
 * written, quotes kept; no display name) and returns the number found, or -1
 * on a syntax error it cannot recover from (callbacks made before the error
 * stand). Comments nest at most 32 deep; an address longer than 320
 * octets is an error. No allocation; linear time.
 *
 * Precisely (the tests hold these):
 *  - addr points into value: each address is one contiguous slice of it,
 *    reported only once its list element is complete (so a bad element
 *    reports nothing). cb may be NULL (count only).
 *  - -1 (unrecoverable): an unterminated quoted string, comment, domain
 *    literal or angle address ("<" with no ">" before the end), comments
 *    nested deeper than RFC5322_ADDR_COMMENT_DEPTH, an address longer than
 *    RFC5322_ADDR_MAX. Addresses of the elements completed before stand.
 *  - Recoverable: a list element that is not a mailbox or a group (no
 *    "@", missing ",", trailing garbage, "<>", a group inside a group, a
 *    stray ";" or ">", control characters) is skipped up to the next ","
 *    outside angle brackets (or the ";" closing the group it is in), and
 *    counted in *bad_r by rfc5322_addr_list_ex. Empty elements (",,", as
 *    RFC 5322 4.4 obs-addr-list allows) are not bad.
 *  - An addr-spec is local-part "@" domain with nothing between its
 *    tokens: CFWS around it is fine, CFWS inside it (the obsolete
 *    "a . b @ c" of RFC 5322 4.4) cannot be one slice and makes the element
 *    bad. The local part is a run of atoms, quoted strings and dots (dots
 *    are not checked: "a..b" and "a." exist in the wild; the SMTP address
 *    check decides); quoted strings in it may hold SP but no other control
 *    character. The domain is atoms separated by single dots, or a domain
 *    literal without SP or control characters.
 *  - Display names are phrases of atoms, quoted strings and dots (obs-
 *    phrase); encoded words (RFC 2047) and 8-bit octets (RFC 6532) are
 *    atom text. Leniency seen in the wild: an unquoted addr-spec as the
 *    display name ("a@b.test <a@b.test>") is accepted; the angle address
 *    is the one reported.
 *  - Groups: display-name ":" [mailboxes] ";" ; the group's addresses are
 *    reported. A group left open at the end reports its addresses and
 *    counts as bad.
 *  - Source routes ("<@a.test,@b.test:u@c.test>") are dropped: u@c.test.
 */
#ifndef ESTAFETA_PROTO_RFC5322_ADDR_H
#define ESTAFETA_PROTO_RFC5322_ADDR_H

#include <stddef.h>

typedef void (*rfc5322_addr_fn)(const char *addr, size_t len, void *arg);

#define RFC5322_ADDR_MAX 320
#define RFC5322_ADDR_COMMENT_DEPTH 32

long rfc5322_addr_list(const char *value, size_t len, rfc5322_addr_fn cb,
                       void *arg);
/* The same, and *bad_r (if not NULL) = the number of list elements skipped
 * as bad, so that a caller who must see every address (a From: check, a
 * recipient list) can refuse the header when it is not 0. */
long rfc5322_addr_list_ex(const char *value, size_t len, rfc5322_addr_fn cb,
                          void *arg, size_t *bad_r);

#endif
