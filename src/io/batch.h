/*
 * batch: hands blocking work (fsync!) from the event loop to one worker
 * thread, in batches, and brings the results back to the loop thread.
 *
 * This is how group commit works: while the worker fsyncs one batch, new
 * jobs gather; the next call of run() takes all of them, so one directory
 * fsync (and, later, one journal fsync) covers every message completed in
 * that window, and each client is answered after the fsync that covers it.
 *
 * Contract:
 *  - batch_new(base, run, arg, name): run(jobs, n, arg) is called on the
 *    worker thread (named name for ps -L and top -H: at most 15
 *    characters) with up to BATCH_MAX jobs; it fills each job's result.
 *  - batch_submit(b, job) from the loop thread. The job is owned by the
 *    caller and must stay valid until its done(job) callback runs on the
 *    loop thread.
 *  - batch_free(b) finishes every submitted job (their done callbacks run)
 *    and stops the thread.
 */
#ifndef ESTAFETA_IO_BATCH_H
#define ESTAFETA_IO_BATCH_H

#include <stddef.h>

struct event_base;
struct batch;

#define BATCH_MAX 256

struct batch_job {
    void (*done)(struct batch_job *job);  /* on the loop thread */
    void *arg;
    int result;                           /* set by run() */
    struct batch_job *next;               /* private */
};

typedef void (*batch_run_fn)(struct batch_job **jobs, size_t n, void *arg);

struct batch *batch_new(struct event_base *base, batch_run_fn run, void *arg,
                        const char *name);
void batch_submit(struct batch *b, struct batch_job *job);
void batch_free(struct batch *b);

#endif
