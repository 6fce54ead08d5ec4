/* batch: see batch.h for the contract. */
#include "io/batch.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/log.h"
#include "lib/xalloc.h"

struct batch {
    batch_run_fn run;
    void *arg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct batch_job *pending_head, *pending_tail;  /* loop -> worker */
    struct batch_job *done_head, *done_tail;        /* worker -> loop */
    size_t in_flight;                               /* submitted, done() not yet run */
    bool stopping;
    char name[16];           /* the worker's, for ps -L and top -H */
    int pipe_rd, pipe_wr;    /* wakes the loop when jobs are done */
    struct event *ev_done;
};

static void batch_list_push(struct batch_job **head, struct batch_job **tail,
                            struct batch_job *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

static void *batch_thread(void *arg)
{
    struct batch *b = arg;
    struct batch_job *jobs[BATCH_MAX];
    /* Named by itself (prctl): naming another thread goes through /proc. */
    pthread_setname_np(pthread_self(), b->name);
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (b->pending_head == NULL && !b->stopping)
            pthread_cond_wait(&b->cv, &b->mu);
        if (b->pending_head == NULL && b->stopping)
            break;
        size_t n = 0;
        while (b->pending_head != NULL && n < BATCH_MAX) {
            jobs[n++] = b->pending_head;
            b->pending_head = b->pending_head->next;
        }
        if (b->pending_head == NULL)
            b->pending_tail = NULL;
        pthread_mutex_unlock(&b->mu);

        b->run(jobs, n, b->arg);

        pthread_mutex_lock(&b->mu);
        for (size_t i = 0; i < n; i++)
            batch_list_push(&b->done_head, &b->done_tail, jobs[i]);
        char one = 1;
        /* The pipe is non-blocking: a full pipe already means "wake up". */
        ssize_t w = write(b->pipe_wr, &one, 1);
        (void)w;
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* Runs done callbacks on the loop thread. */
static void batch_reap(struct batch *b)
{
    pthread_mutex_lock(&b->mu);
    struct batch_job *list = b->done_head;
    b->done_head = b->done_tail = NULL;
    pthread_mutex_unlock(&b->mu);
    while (list != NULL) {
        struct batch_job *next = list->next;
        b->in_flight--;
        list->done(list);
        list = next;
    }
}

static void batch_on_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    char drain[256];
    while (read(fd, drain, sizeof(drain)) > 0)
        ;
    batch_reap(arg);
}

struct batch *batch_new(struct event_base *base, batch_run_fn run, void *arg,
                        const char *name)
{
    struct batch *b = xcalloc(1, sizeof(*b));
    snprintf(b->name, sizeof(b->name), "%s", name);
    b->run = run;
    b->arg = arg;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) {
        log_kv(LOG_CRIT, "batch.pipe", "error", "pipe2 failed", NULL);
        abort();
    }
    b->pipe_rd = p[0];
    b->pipe_wr = p[1];
    b->ev_done = event_new(base, b->pipe_rd, EV_READ | EV_PERSIST,
                           batch_on_done, b);
    event_add(b->ev_done, NULL);
    if (pthread_create(&b->thread, NULL, batch_thread, b) != 0) {
        log_kv(LOG_CRIT, "batch.thread", "error", "pthread_create failed", NULL);
        abort();
    }
    return b;
}

void batch_submit(struct batch *b, struct batch_job *job)
{
    pthread_mutex_lock(&b->mu);
    batch_list_push(&b->pending_head, &b->pending_tail, job);
    b->in_flight++;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void batch_free(struct batch *b)
{
    if (b == NULL)
        return;
    pthread_mutex_lock(&b->mu);
    b->stopping = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    batch_reap(b);
    event_free(b->ev_done);
    close(b->pipe_rd);
    close(b->pipe_wr);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
}
