/* random: see random.h. */
#include "lib/random.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

int random_fill(void *p, size_t n)
{
    unsigned char *c = p;
    while (n > 0) {
        ssize_t r = getrandom(c, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

void random_fill_unique(void *p, size_t n)
{
    static _Atomic uint64_t counter;
    if (random_fill(p, n) == 0)
        return;
    unsigned char *c = p;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = ((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
                  ((uint64_t)getpid() << 40) ^ atomic_fetch_add(&counter, 1)) *
                 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        c[i] = (unsigned char)(x >> 56);
    }
}
