/*
 * timeheap: things to do at a time, earliest first (a binary min-heap).
 * qmgr keeps its deferred messages in one: taking the due ones costs
 * O(log n) each, where a list cost a walk of every deferred message for
 * every message delivered.
 *
 * Contract:
 *  - timeheap_push(h, due, p): adds p (not owned: the caller frees what
 *    it put in). Memory grows by doubling; exhausted memory aborts
 *    (xalloc), like every allocation here.
 *  - timeheap_peek(h, &due): the earliest entry's pointer (its time in
 *    *due), or NULL when empty. timeheap_pop(h): removes and returns it
 *    (NULL when empty). Entries with equal times come out in no set order.
 *  - timeheap_count, timeheap_at(h, i) for i < count: every entry, in no
 *    order (to look at or hand out all of them); timeheap_clear empties it
 *    without freeing what the entries point to; timeheap_free releases
 *    the array.
 *  - Not thread-safe: the caller locks.
 */
#ifndef ESTAFETA_LIB_TIMEHEAP_H
#define ESTAFETA_LIB_TIMEHEAP_H

#include <stddef.h>
#include <time.h>

struct timeheap_ent {
    time_t due;
    void *p;
};

struct timeheap {
    struct timeheap_ent *v;
    size_t n, cap;
};

void timeheap_push(struct timeheap *h, time_t due, void *p);
void *timeheap_peek(const struct timeheap *h, time_t *due_r);
void *timeheap_pop(struct timeheap *h);
size_t timeheap_count(const struct timeheap *h);
void *timeheap_at(const struct timeheap *h, size_t i);
void timeheap_clear(struct timeheap *h);
void timeheap_free(struct timeheap *h);

#endif
