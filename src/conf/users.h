/*
 * users: the users file (one "address:hash[:field...]" per line, '#'
 * comments), and password hashing with argon2id (libargon2).
 *
 * Fields after the hash, each at most once, in any order:
 *   scram-sha-256=ITER,SALT,STOREDKEY,SERVERKEY   (RFC 5802 keys; base64
 *       salt of 1..64 octets, 32-octet keys, ITER 4096..10000000)
 *   cram-md5=SECRET   (the password itself, stored reversibly because
 *       CRAM-MD5 needs it; 1..255 octets, no ':')
 * Other fields are ignored (a file written by a later version still loads).
 *
 * Contract:
 *  - users_parse() is pure: adds the entries to cfg (appending to
 *    cfg->users, which config_load sorts afterwards), with ->scram holding
 *    the value after "scram-sha-256=" and ->cram_secret the one after
 *    "cram-md5=" (as the `user` directive does); returns 0, or -1 with
 *    "FILE:LINE: message" in err_r (bad address, domain not local,
 *    duplicate user, field with a control character, bad scram-sha-256= or
 *    cram-md5= field, either given twice).
 *  - users_file_update() rewrites the file atomically (write a temporary
 *    file next to it, fsync, rename, fsync the directory) with the entry for
 *    address set to `fields` ("hash[:field...]" as above, hash may be
 *    empty; NULL removes the entry). The fields are checked as users_parse
 *    would. Returns 0, or -1 with a message in err_r. Lines it does not
 *    touch are kept byte for byte.
 *  - users_sasl_creds() turns a user's stored secrets into what the SASL
 *    exchange needs (has_scram false and cram_secret "" when there are
 *    none). Returns 0, or -1 when a stored value cannot be decoded (only
 *    possible for values users_parse did not check): what could be decoded
 *    is still filled in, the rest left empty.
 *  - users_format_scram() writes the "scram-sha-256=..." field for creds
 *    into out; 0, or -1 if it does not fit.
 *  - password_hash() produces an argon2id encoded hash with a random salt;
 *    password_verify() checks argon2id and SHA-512-crypt ("$6$") hashes in
 *    constant time. Both return 0 on success / match, -1 otherwise.
 */
#ifndef ESTAFETA_CONF_USERS_H
#define ESTAFETA_CONF_USERS_H

#include <stdbool.h>
#include <stddef.h>

#include "conf/config.h"
#include "lib/buf.h"
#include "proto/sasl.h"

int users_parse(struct config *cfg, const char *text, size_t len,
                const char *filename, struct buf *err_r);
int users_file_update(const char *path, const char *address,
                      const char *fields, struct buf *err_r);
int users_sasl_creds(const struct cfg_user *u, struct sasl_creds *creds_r);
int users_format_scram(const struct sasl_creds *creds, char *out, size_t out_cap);
int password_hash(const char *password, char *out, size_t out_cap);
int password_verify(const char *password, const char *hash);

/*
 * The password check of a login (PLAIN, LOGIN, POP3 USER/PASS): true if
 * user (any case) exists, has a password hash, and password matches it.
 * An unknown user or one without a hash costs the same argon2id check
 * against a dummy hash, so the time taken does not tell whether a user
 * exists. Slow on purpose: call it off the event loop.
 */
bool users_check_login(const struct config *cfg, const char *user,
                       const char *password);

#endif
