/* Tests of lib/timeheap: entries come out earliest first, whatever order
 * they went in and however pushes and pops are mixed; peek, at, clear. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "lib/timeheap.h"

static int cmp_time(const void *a, const void *b)
{
    time_t x = *(const time_t *)a, y = *(const time_t *)b;
    return (x > y) - (x < y);
}

TEST(empty)
{
    struct timeheap h = {0};
    time_t due = 7;
    CHECK(timeheap_peek(&h, &due) == NULL && due == 7);
    CHECK(timeheap_pop(&h) == NULL);
    CHECK(timeheap_count(&h) == 0 && timeheap_at(&h, 0) == NULL);
    timeheap_free(&h);
}

/* Random times (with many equal ones), pushed in random order, popped
 * after every few pushes: each pop is the least time still in. */
TEST(random_mixed)
{
    enum { N = 5000 };
    static time_t due[N], in[N];
    struct timeheap h = {0};
    unsigned seed = 4242;
    size_t nin = 0;
    for (size_t i = 0; i < N; i++) {
        seed = seed * 1103515245u + 12345u;
        due[i] = (time_t)((seed >> 8) % 700);
    }
    for (size_t i = 0; i < N; i++) {
        timeheap_push(&h, due[i], &due[i]);
        in[nin++] = due[i];
        if (i % 3 == 2) {
            qsort(in, nin, sizeof(*in), cmp_time);
            time_t t = -1;
            time_t *p = timeheap_peek(&h, &t);
            CHECK(p != NULL && t == in[0] && *p == in[0]);
            CHECK(timeheap_pop(&h) == p);
            memmove(in, in + 1, (nin - 1) * sizeof(*in));
            nin--;
        }
    }
    CHECK_EQ_INT(timeheap_count(&h), nin);
    /* Every entry is reachable by index. */
    size_t seen = 0;
    for (size_t i = 0; i < timeheap_count(&h); i++)
        seen += timeheap_at(&h, i) != NULL;
    CHECK_EQ_INT(seen, nin);
    qsort(in, nin, sizeof(*in), cmp_time);
    for (size_t i = 0; i < nin; i++) {
        time_t *p = timeheap_pop(&h);
        CHECK(p != NULL && *p == in[i]);
    }
    CHECK(timeheap_pop(&h) == NULL);
    timeheap_free(&h);
}

TEST(clear_keeps_memory)
{
    struct timeheap h = {0};
    int x[3];
    for (int i = 0; i < 3; i++)
        timeheap_push(&h, 10 - i, &x[i]);
    CHECK(timeheap_peek(&h, NULL) == &x[2]);
    timeheap_clear(&h);
    CHECK(timeheap_count(&h) == 0 && timeheap_pop(&h) == NULL);
    timeheap_push(&h, 5, &x[0]);
    CHECK(timeheap_pop(&h) == &x[0]);
    timeheap_free(&h);
    CHECK(h.v == NULL && h.n == 0 && h.cap == 0);
}

int main(void)
{
    RUN(empty);
    RUN(random_mixed);
    RUN(clear_keeps_memory);
    return harness_done("test_timeheap");
}
