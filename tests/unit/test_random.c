/* Tests of lib/random.c: random_fill_unique's pool per thread never hands
 * the same bytes out twice, also across a refill, and a forked child does
 * not repeat its parent's (the pool is emptied in the child). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "lib/random.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* 4,000 ids of 8 bytes (125 refills of the pool), and some of odd sizes in
 * between: no two of the 8-byte ones equal. */
TEST(unique_across_refills)
{
    enum { N = 4000 };
    uint64_t *v = calloc(N, sizeof(*v));
    CHECK(v != NULL);
    if (v == NULL)
        return;
    for (size_t i = 0; i < N; i++) {
        random_fill_unique(&v[i], sizeof(v[i]));
        unsigned char odd[13];
        if (i % 7 == 0)
            random_fill_unique(odd, sizeof(odd));
    }
    qsort(v, N, sizeof(*v), cmp_u64);
    size_t same = 0;
    for (size_t i = 1; i < N; i++)
        same += v[i] == v[i - 1];
    CHECK_EQ_INT(same, 0);
    free(v);
}

/* More than the pooled size comes straight from the kernel. */
TEST(large_request)
{
    unsigned char a[100], b[100];
    random_fill_unique(a, sizeof(a));
    random_fill_unique(b, sizeof(b));
    CHECK(memcmp(a, b, sizeof(a)) != 0);
}

/* After fork, the child's next id differs from the parent's next one
 * (both would take the same pool bytes if the child kept its copy). */
TEST(fork_forgets_the_pool)
{
    uint64_t warm;
    random_fill_unique(&warm, sizeof(warm)); /* the pool is full now */
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        uint64_t c;
        random_fill_unique(&c, sizeof(c));
        _exit(write(fds[1], &c, sizeof(c)) == (ssize_t)sizeof(c) ? 0 : 1);
    }
    uint64_t parent, child = 0;
    random_fill_unique(&parent, sizeof(parent));
    close(fds[1]);
    CHECK(read(fds[0], &child, sizeof(child)) == (ssize_t)sizeof(child));
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(parent != child);
}

int main(void)
{
    RUN(unique_across_refills);
    RUN(large_request);
    RUN(fork_forgets_the_pool);
    return harness_done("test_random");
}
