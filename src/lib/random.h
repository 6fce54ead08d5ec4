/*
 * random: bytes from the kernel (getrandom), in one place.
 *
 * Contract:
 *  - random_fill(p, n): n bytes of getrandom(2), retried on EINTR and
 *    short reads. 0, or -1 with errno when the kernel cannot give them
 *    (secrets: salts, nonces, keys must then fail).
 *  - random_fill_unique(p, n): the same, but never fails: without
 *    getrandom (a very old kernel) the bytes come from the clock, the pid and
 *    a process-wide counter. For names and ids that must be unique and hard
 *    to guess in advance (queue ids, Maildir names, MIME boundaries), where
 *    O_EXCL / RENAME_NOREPLACE / a boundary check catch the rare collision.
 *    Up to 32 bytes come from a pool per thread (one getrandom per 256
 *    bytes; a forked child empties its copy): never for secrets.
 */
#ifndef ESTAFETA_LIB_RANDOM_H
#define ESTAFETA_LIB_RANDOM_H

#include <stddef.h>

int random_fill(void *p, size_t n);
void random_fill_unique(void *p, size_t n);

#endif
