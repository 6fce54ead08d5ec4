/*
 * users: the users file (one "address:password-hash[:extra...]" per line,
 * '#' comments; extra fields are kept for SCRAM keys later), and password
 * hashing with argon2id (libargon2).
 *
 * Contract:
 *  - users_parse() is pure: adds the entries to cfg (appending to
 *    cfg->users, which config_load sorts afterwards); returns 0, or -1 with
 *    "FILE:LINE: message" in err_r (bad address, domain not local,
 *    duplicate user, field with a control character).
 *  - users_file_update() rewrites the file atomically (write a temporary
 *    file next to it, fsync, rename, fsync the directory) with the entry for
 *    address set to hash (hash NULL removes it). Returns 0, or -1 with a
 *    message in err_r. Lines it does not touch are kept byte for byte.
 *  - password_hash() produces an argon2id encoded hash with a random salt;
 *    password_verify() checks argon2id and SHA-512-crypt ("$6$") hashes in
 *    constant time. Both return 0 on success / match, -1 otherwise.
 */
#ifndef ESTAFETA_CONF_USERS_H
#define ESTAFETA_CONF_USERS_H

#include <stddef.h>

#include "conf/config.h"
#include "lib/buf.h"

int users_parse(struct config *cfg, const char *text, size_t len,
                const char *filename, struct buf *err_r);
int users_file_update(const char *path, const char *address, const char *hash,
                      struct buf *err_r);
int password_hash(const char *password, char *out, size_t out_cap);
int password_verify(const char *password, const char *hash);

#endif
