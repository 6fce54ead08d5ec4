/*
 * queue_log: the accept log of the fs queue backend (doc/queue.md "The
 * accept log"): segments under <queue>/log/ holding small messages during
 * their first delivery pass, appended a batch at a time with one
 * fdatasync. Not for use outside src/queue; queue_fs.c is its only caller
 * and owns the decisions (what goes here, keep, recovery).
 *
 * Threads: every function may be called from any thread; one mutex guards
 * the index and the segment list, another serializes appends (the commit
 * thread and the delivery threads all commit). qlog_append only in the
 * process that owns the queue (the server).
 *
 * Return values: 0, or -1 with errno, unless said otherwise.
 */
#ifndef ESTAFETA_QUEUE_QUEUE_LOG_H
#define ESTAFETA_QUEUE_QUEUE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "queue/queue.h"

#define QLOG_REC_HEADER_SIZE 64u
/* A segment is sealed at this size. Not a limit on a peer: large enough
 * that a busy batch never straddles many segments, small enough that a
 * segment pinned by one slow message wastes little disk. */
#define QLOG_SEGMENT_MAX (8u * 1024u * 1024u)
/* Emptied segments kept for reuse (doc/queue.md "Segments": overwriting
 * blocks a file already has makes each fdatasync cheaper than growing
 * it); beyond this many they are deleted. */
#define QLOG_SPARE_MAX 4u

struct qlog;

/* A live record, pinned (its segment stays open) until qlog_unpin. */
struct qlog_ref {
    int fd;            /* the segment, readable with pread */
    uint64_t off;      /* where the queue-file image starts */
    uint64_t len;      /* its length */
    uint32_t crc;      /* zlib CRC-32 of the image, as the header says */
    bool last;         /* qlog_recover: the last record of its segment */
    void *seg;         /* opaque */
};

/* One message to append: its id and its queue-file image as iovecs
 * (the caller keeps them alive during the call). */
struct qlog_rec {
    const char *id;
    const struct iovec *iov;
    size_t iovcnt;
    uint64_t len;      /* sum of the iov lengths */
    uint32_t crc;      /* zlib CRC-32 of those bytes (qlog_crc) */
};

/* The CRC-32 a record's header carries for its image (zlib's crc32: the
 * whole image, body included, so a record torn by a crash can be told at
 * recovery). Start with crc 0 and feed the pieces in order. Computed by
 * ISA-L where the build has it (HAVE_ISAL), with the same result. */
uint32_t qlog_crc(uint32_t crc, const void *p, size_t n);
/* The CRC of A followed by B from crc_a, crc_b and B's length (zlib's
 * crc32_combine). */
uint32_t qlog_crc_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

/* Opens log/ under dirfd (created if missing, with an fsync of dirfd) and
 * scans its segments and done files into the index (a snapshot for a
 * process that is not the server). NULL with errno. */
struct qlog *qlog_open(int dirfd);
void qlog_close(struct qlog *l);

/* The server's process (recovery calls it, and so does the first append:
 * only the server commits): its index is exact, so lookups trust it, and
 * segments whose records are all done are deleted. */
void qlog_set_owner(struct qlog *l);
bool qlog_is_owner(const struct qlog *l);

/*
 * Appends n records to the newest segment (a new one if there is none or
 * it is full), then one fdatasync. results_r[i] is 0 or an errno for each;
 * on success the records are live in the index. Returns 0 if all
 * succeeded, else -1 with errno = the first error. On failure the appended
 * bytes are cut off (or the segment sealed) and the ids written as done
 * (doc/queue.md "Segments").
 */
int qlog_append(struct qlog *l, const struct qlog_rec *recs, size_t n,
                int *results_r);

/* Whether id is a live record. */
bool qlog_has(struct qlog *l, const char *id);
/* Pins the live record of id: 0, or -1 with errno ENOENT. */
int qlog_pin(struct qlog *l, const char *id, struct qlog_ref *ref_r);
void qlog_unpin(struct qlog *l, struct qlog_ref *ref);
/*
 * The record of id is no longer live: its done record is appended (not
 * fsync'd) and, in the owner, its segment deleted if it was the last live
 * record of a sealed segment. 0, or -1 with errno ENOENT if id is not
 * live. A failure to write the done record is logged, not returned: it
 * can only cause a duplicate after a crash.
 */
int qlog_done(struct qlog *l, const char *id);

/* Calls cb for each live id, in no particular order, outside the lock on
 * a copy of the ids. */
int qlog_list(struct qlog *l, void (*cb)(const char *id, void *arg), void *arg);

/* Recovery (owner, at start, nothing else running): calls copy(ref) for
 * each live record in segment order; then, if every copy returned 0,
 * flush() (one syncfs), then unlinks every segment and done file and fsyncs
 * log/. A copy that fails stops it (segments kept: the next start retries).
 * 0 or -1 with errno. */
int qlog_recover(struct qlog *l,
                 int (*copy)(const char *id, const struct qlog_ref *ref, void *arg),
                 int (*flush)(void *arg), void *arg);

#endif
