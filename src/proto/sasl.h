/*
 * sasl: server side of the SASL mechanisms estafeta offers (RFC 4422) for
 * SMTP AUTH (RFC 4954), POP3 AUTH (RFC 5034) and IMAP AUTHENTICATE:
 * PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login), SCRAM-SHA-256
 * (RFC 5802, RFC 7677) and CRAM-MD5 (RFC 2195, only when a reversible
 * secret is configured). DIGEST-MD5 is Historic (RFC 6331): recognised by
 * sasl_mech_lookup() so the caller can answer "unsupported", never run.
 *
 * Pure: no I/O, no globals, bounded memory. The protocol layer feeds the
 * client's base64 lines (or the initial response) and sends back what the
 * exchange returns. Base64 is strict (RFC 4648, no whitespace, padding
 * required); "=" alone is an empty initial response (RFC 4954 4); "*" is
 * the client's cancel.
 *
 * Password checking is slow on purpose (argon2id), so it never runs inside
 * the exchange: PLAIN and LOGIN stop with SASL_CHECK_PASSWORD and the caller
 * verifies sasl_server_password() against the user's hash off the event loop
 * (conf/users.h password_verify), then calls sasl_server_checked(). SCRAM and
 * CRAM-MD5 need only HMACs and finish inside the exchange, using the
 * credentials the lookup callback returns. A failed exchange for an unknown
 * user takes the same path as a wrong password (no user enumeration): SCRAM
 * fakes a salt derived from the user name.
 *
 * Limits: every input line at most SASL_LINE_MAX base64 octets; user names
 * and passwords at most 255 octets each; no NUL inside them (authzid, authcid,
 * password are separated by NUL in PLAIN, RFC 4616 2).
 */
#ifndef ESTAFETA_PROTO_SASL_H
#define ESTAFETA_PROTO_SASL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

#define SASL_LINE_MAX 12288   /* base64 octets per client line (RFC 4954 4: 12288 for AUTH) */
#define SASL_NAME_MAX 255
#define SASL_SCRAM_SALT_MAX 64
#define SASL_SCRAM_ITERATIONS 10000 /* what `estafeta user` writes, and what
                                       the fake exchange of an unknown user
                                       shows (RFC 7677 4: at least 4096) */

enum sasl_mech {
    SASL_MECH_PLAIN,
    SASL_MECH_LOGIN,
    SASL_MECH_SCRAM_SHA_256,
    SASL_MECH_CRAM_MD5,
    SASL_MECH_DIGEST_MD5,      /* recognised, refused */
    SASL_MECH__COUNT
};

/* Case-insensitive name -> mechanism; -1 if unknown. */
int sasl_mech_lookup(const char *name, size_t len);
const char *sasl_mech_name(enum sasl_mech mech);
/* True for mechanisms that send the password in the clear (PLAIN, LOGIN):
 * offered and accepted only over TLS unless the network is trusted. */
bool sasl_mech_plaintext(enum sasl_mech mech);
/* The space-separated names of the mechanisms in `mechs` (bits 1u << mech)
 * a client may use now: the plaintext ones only if plaintext_ok. Writes ""
 * when none; a name that does not fit in buf is left out with the rest. */
void sasl_mech_list(unsigned mechs, bool plaintext_ok, char *buf, size_t cap);

/* What the server knows of a user, filled by the lookup callback. */
struct sasl_creds {
    bool has_scram;
    unsigned char scram_salt[SASL_SCRAM_SALT_MAX];
    size_t scram_salt_len;
    uint32_t scram_iterations;
    unsigned char scram_stored_key[32];
    unsigned char scram_server_key[32];
    char cram_secret[256];     /* CRAM-MD5 HMAC contexts (sasl_cram_derive,
                                  64 hex digits), "" when none */
};

/* Returns 0 and fills *creds_r if authcid is a user, -1 if not. */
typedef int (*sasl_lookup_fn)(void *arg, const char *authcid,
                              struct sasl_creds *creds_r);

enum sasl_step {
    SASL_CONTINUE,        /* send out (base64) as a 334 challenge, read a line */
    SASL_CHECK_PASSWORD,  /* verify the password, then sasl_server_checked() */
    SASL_OK,              /* authenticated as sasl_server_user(); out may hold
                             final server data (SCRAM "v=") to send with 235 */
    SASL_FAIL,            /* bad credentials: 535 5.7.8 */
    SASL_BAD_SYNTAX,      /* not base64, or a malformed message: 501 5.5.2 */
    SASL_CANCELLED,       /* the client sent "*": 501 5.7.0 */
    SASL_AUTHZ_DENIED,    /* authzid differs from authcid: 535 5.7.8 */
};

struct sasl_server;

/* hostname (at most 255 octets are used) appears in CRAM-MD5 challenges
 * and keys the fake SCRAM salt of unknown users. Returns NULL for
 * DIGEST-MD5 or an unknown mechanism (the caller answers "unsupported").
 * Nonces and challenges come from getrandom(). */
struct sasl_server *sasl_server_new(enum sasl_mech mech, const char *hostname,
                                    sasl_lookup_fn lookup, void *arg);
/* TEST ONLY, for reproducible vectors (RFC 7677 3, RFC 2195): the SCRAM
 * server nonce, or for CRAM-MD5 the part of the challenge before '@'
 * ("<NONCE@hostname>"). 1..64 printable ASCII characters without ','; any
 * other value is ignored. Call before the first step. Never in the server. */
void sasl_server_set_nonce(struct sasl_server *s, const char *nonce);
/* Feeds one client line (base64, without CRLF), or the initial response
 * (in == NULL: none was given; only valid for the first step). out receives
 * the base64 challenge or final data (reset first; SASL_CONTINUE with an
 * empty out is an empty challenge, "334 "). Every result but SASL_CONTINUE
 * and SASL_CHECK_PASSWORD ends the exchange: later steps return SASL_FAIL.
 * out needs room for about 1 KiB. */
enum sasl_step sasl_server_step(struct sasl_server *s, const char *in, size_t len,
                                struct buf *out);
/* After SASL_CHECK_PASSWORD: the password to verify for sasl_server_user()
 * (the authcid). NULL in any other state, so a confused caller verifies
 * nothing. */
const char *sasl_server_password(const struct sasl_server *s);
/* Result of the caller's verification; returns SASL_OK or SASL_FAIL (also
 * when called in any other state than after SASL_CHECK_PASSWORD). Wipes the
 * password. */
enum sasl_step sasl_server_checked(struct sasl_server *s, bool ok);
/* The authenticated (or, before that, the claimed) user name. */
const char *sasl_server_user(const struct sasl_server *s);
/* Wipes secrets and frees; NULL is fine. */
void sasl_server_free(struct sasl_server *s);

/* Derives SCRAM-SHA-256 keys from a password (RFC 5802 3) for the users
 * file: random 16-byte salt, `iterations` rounds (4096..10000000, the range
 * the users file accepts). The password is used as given: SASLprep
 * (RFC 4013) of printable ASCII is the identity; a non-ASCII password may
 * not match what a client that normalises it derives. 0 or -1. */
int sasl_scram_derive(const char *password, uint32_t iterations,
                      struct sasl_creds *creds_r);

/* CRAM-MD5 without the password (RFC 2195 5): the HMAC-MD5 inner and
 * outer contexts as SASL_CRAM_CONTEXT_LEN hex digits. derive: 0 or -1;
 * hmac: HMAC-MD5(password, msg) from the contexts, 0 or -1 for a bad
 * context string. */
#define SASL_CRAM_CONTEXT_LEN 64
int sasl_cram_derive(const char *password, char *out, size_t cap);
bool sasl_cram_context_valid(const char *hex);
int sasl_cram_hmac(const char *context_hex, const void *msg, size_t len,
                   unsigned char digest_r[16]);

/* Strict base64 (RFC 4648 4): length a multiple of 4, padding required,
 * no whitespace, unused bits zero. decode returns the length or -1 (also
 * when out_cap is too small). encode appends to out, or leaves it unchanged
 * if the result would not fit under its cap. */
long sasl_b64_decode(const char *in, size_t len, unsigned char *out, size_t out_cap);
void sasl_b64_encode(const unsigned char *in, size_t len, struct buf *out);

#endif
