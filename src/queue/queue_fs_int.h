/*
 * queue_fs_int: what queue_fs.c and queue_fs_recover.c share (the fs
 * backend's state and the steps recovery reuses). Not for use outside
 * src/queue. Return values as the static functions they were: see each
 * definition in queue_fs.c.
 */
#ifndef ESTAFETA_QUEUE_QUEUE_FS_INT_H
#define ESTAFETA_QUEUE_QUEUE_FS_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "queue/queue_backend.h"
#include "queue/queue_log.h"

#define FSQ_MEM_SPARES 16
#define FSQ_MEM_SPARE_MAX (512u * 1024u)

struct fsq {
    struct queue base;
    int dirfd, infd, msgfd, holdfd, badfd;
    struct qlog *log;           /* the accept log (doc/queue.md) */
    uint64_t log_msg_max;       /* body octets; 0: no message goes there */
    uint64_t log_mem_max;
    _Atomic uint64_t log_mem;   /* bytes allocated by messages in memory */
    /* Buffers of messages gone (committed, aborted, spilled), reused by
     * the next ones: a message does not regrow its buffer from 8 KiB by
     * reallocs, nor fault in fresh pages (doc/queue.md "The accept log").
     * At most FSQ_MEM_SPARES of at most FSQ_MEM_SPARE_MAX each; not
     * counted in log_mem until a message takes one. */
    pthread_mutex_t spare_lock;
    size_t nspare;
    struct fsq_spare {
        unsigned char *p;
        size_t cap;
    } spare[FSQ_MEM_SPARES];
};

static inline struct fsq *FSQ(struct queue *q) { return (struct fsq *)q; }

/* A queue-file image this small is read whole, in one pread, by whoever
 * wants its envelope or its body: a delivery of a small message then reads
 * it twice (the envelope, the body) instead of six times (header, footer
 * and envelope; header, footer and body). Beyond it, the parts are read
 * where they lie, so a large body is not read to get at its envelope. */
#define FSQ_IMAGE_WHOLE_MAX (16u * 1024u)

/* <queue>/clean: left by queue_fs_mark_clean, removed by recovery. */
#define FSQ_CLEAN_MARKER "clean"

/* "<id>.st" into out. */
int fsq_st_name(const char *id, char out[QUEUE_ID_SIZE + 3]);
bool fsq_exists_at(int dirfd, const char *name);
/* Validation of a whole queue file, with check_body its body against
 * the footer's CRC too (recovery after a crash): 0, -1 (I/O, errno), -2
 * (corrupt, *why_r). */
int fsq_read_valid(int fd, const char *id, bool check_body,
                   struct queue_env **env_r, const char **why_r);
/* Replays an <id>.st into env (or only measures it when env is NULL). */
int fsq_read_st(int fd, const char *id, struct queue_env *env,
                uint64_t *valid_r, bool *torn_r);
/* dirfd/<id> (and its .st) to corrupt/, fsync'd. */
int fsq_set_aside_from(struct fsq *fq, int dirfd, const char *id,
                       const char *reason);
/* A log record as the file todir/<id> through incoming/ (doc/queue.md
 * "queue_keep"). */
int fsq_log_copy(struct fsq *fq, const char *id, const struct qlog_ref *ref,
                 int todir, bool durable);
/* queue_recover. */
int fsq_recover(struct queue *q);

#endif
