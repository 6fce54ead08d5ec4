/* authfail: see authfail.h for the contract. */
#include "lib/authfail.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/xalloc.h"
#include "lib/hash.h"

#define AUTHFAIL_BUCKETS 4096

struct authfail_entry {
    struct authfail_entry *next;
    char addr[64];
    unsigned count;
    time_t first;
    time_t locked_until;
};

struct authfail {
    struct authfail_entry *buckets[AUTHFAIL_BUCKETS];
    size_t n;
};

static size_t authfail_hash(const char *addr)
{
    return hash_fnv1a(addr) % AUTHFAIL_BUCKETS;
}

struct authfail *authfail_new(void)
{
    return xcalloc(1, sizeof(struct authfail));
}

void authfail_free(struct authfail *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < AUTHFAIL_BUCKETS; i++) {
        while (t->buckets[i]) {
            struct authfail_entry *e = t->buckets[i];
            t->buckets[i] = e->next;
            free(e);
        }
    }
    free(t);
}

/* The slot for addr in its bucket, dropping stale entries on the way. */
static struct authfail_entry **authfail_find(struct authfail *t, const char *addr,
                                             time_t now, size_t window)
{
    struct authfail_entry **pp = &t->buckets[authfail_hash(addr)];
    while (*pp != NULL) {
        struct authfail_entry *e = *pp;
        if (e->locked_until <= now && (size_t)(now - e->first) > window) {
            *pp = e->next;
            free(e);
            t->n--;
            continue;
        }
        if (strcmp(e->addr, addr) == 0)
            return pp;
        pp = &e->next;
    }
    return pp;
}

bool authfail_locked(struct authfail *t, const char *addr, time_t now, size_t window)
{
    struct authfail_entry **pp = authfail_find(t, addr, now, window);
    return *pp != NULL && (*pp)->locked_until > now;
}

void authfail_failed(struct authfail *t, const char *addr, time_t now,
                     size_t limit, size_t window)
{
    struct authfail_entry **pp = authfail_find(t, addr, now, window);
    struct authfail_entry *e = *pp;
    if (e == NULL) {
        if (t->n >= AUTHFAIL_MAX_ENTRIES)
            return;
        e = xcalloc(1, sizeof(*e));
        snprintf(e->addr, sizeof(e->addr), "%s", addr);
        e->first = now;
        *pp = e;
        t->n++;
    }
    e->count++;
    if (e->count >= limit)
        e->locked_until = now + (time_t)window;
}

void authfail_succeeded(struct authfail *t, const char *addr, time_t now,
                        size_t window)
{
    struct authfail_entry **pp = authfail_find(t, addr, now, window);
    if (*pp != NULL) {
        struct authfail_entry *e = *pp;
        *pp = e->next;
        free(e);
        t->n--;
    }
}
