/*
 * hash: FNV-1a over a NUL-terminated string, for the small tables that only
 * balance load (per-client counts, failed logins, mailbox lock stripes).
 * Not for anything an attacker must not steer: a peer controls at most its
 * own key.
 */
#ifndef ESTAFETA_LIB_HASH_H
#define ESTAFETA_LIB_HASH_H

#include <stdint.h>

static inline uint32_t hash_fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

#endif
