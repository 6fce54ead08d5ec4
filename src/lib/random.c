/* random: see random.h. */
#include "lib/random.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
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

/* random_fill_unique's bytes for small requests come from a pool per
 * thread, refilled by one getrandom() per RANDOM_POOL bytes: a queue id
 * per message and a Maildir name per delivery then cost no system call
 * each. A forked child empties the forking thread's pool (it would
 * otherwise hand out the same bytes as its parent). */
#define RANDOM_POOL 256
#define RANDOM_POOLED_MAX 32
static _Thread_local struct {
    unsigned char b[RANDOM_POOL];
    size_t left;
} random_pool;
static pthread_once_t random_pool_once = PTHREAD_ONCE_INIT;

static void random_pool_forget(void)
{
    random_pool.left = 0;
}

static void random_pool_init(void)
{
    pthread_atfork(NULL, NULL, random_pool_forget);
}

static void random_from_clock(void *p, size_t n)
{
    static _Atomic uint64_t counter;
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

void random_fill_unique(void *p, size_t n)
{
    if (n > RANDOM_POOLED_MAX) {
        if (random_fill(p, n) < 0)
            random_from_clock(p, n);
        return;
    }
    pthread_once(&random_pool_once, random_pool_init);
    if (random_pool.left < n) {
        if (random_fill(random_pool.b, sizeof(random_pool.b)) < 0) {
            random_from_clock(p, n);
            return;
        }
        random_pool.left = sizeof(random_pool.b);
    }
    /* Taken from the end and never handed out twice. */
    random_pool.left -= n;
    memcpy(p, random_pool.b + random_pool.left, n);
}
