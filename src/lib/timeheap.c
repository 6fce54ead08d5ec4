/* timeheap: a binary min-heap by time (timeheap.h). */
#include "lib/timeheap.h"

#include <stdlib.h>

#include "lib/xalloc.h"

static void swap(struct timeheap *h, size_t a, size_t b)
{
    struct timeheap_ent t = h->v[a];
    h->v[a] = h->v[b];
    h->v[b] = t;
}

void timeheap_push(struct timeheap *h, time_t due, void *p)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap : 64;
        if (h->cap != 0 && !size_mul(cap, 2, &cap))
            abort(); /* more entries than memory can hold */
        h->v = xreallocarray(h->v, cap, sizeof(*h->v));
        h->cap = cap;
    }
    size_t i = h->n++;
    h->v[i] = (struct timeheap_ent){due, p};
    while (i > 0 && h->v[(i - 1) / 2].due > h->v[i].due) {
        swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

void *timeheap_peek(const struct timeheap *h, time_t *due_r)
{
    if (h->n == 0)
        return NULL;
    if (due_r != NULL)
        *due_r = h->v[0].due;
    return h->v[0].p;
}

void *timeheap_pop(struct timeheap *h)
{
    if (h->n == 0)
        return NULL;
    void *top = h->v[0].p;
    h->v[0] = h->v[--h->n];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, min = i;
        if (l < h->n && h->v[l].due < h->v[min].due)
            min = l;
        if (r < h->n && h->v[r].due < h->v[min].due)
            min = r;
        if (min == i)
            break;
        swap(h, i, min);
        i = min;
    }
    return top;
}

size_t timeheap_count(const struct timeheap *h)
{
    return h->n;
}

void *timeheap_at(const struct timeheap *h, size_t i)
{
    return i < h->n ? h->v[i].p : NULL;
}

void timeheap_clear(struct timeheap *h)
{
    h->n = 0;
}

void timeheap_free(struct timeheap *h)
{
    free(h->v);
    *h = (struct timeheap){NULL, 0, 0};
}
