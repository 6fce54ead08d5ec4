/*
 * queue_fs: the filesystem queue backend (recovery is in
 * queue_fs_recover.c, the accept log in queue_log.c). The on-disk states, the order of every
 * write/fsync/rename and what a crash between any two leaves behind are in
 * doc/queue.md: this file implements that document, step by step.
 *
 * Everything is done relative to directory descriptors opened once
 * (openat/renameat/unlinkat), and the only names are validated queue ids,
 * so no path is ever built from bytes a peer sent.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/qfile.h"
#include "queue/queue_backend.h"
#include "queue/queue_fs_int.h"
#include "queue/queue_log.h"
#include "lib/random.h"
#include <stdatomic.h>
#include <sys/uio.h>

/* ================= fs backend ================= */

#define WBUF_SIZE (64u * 1024u)

/* Defaults of queue_fs_tune (the limit table's queue-log-message and
 * queue-log-memory). */
#define LOG_MESSAGE_DEFAULT (256u * 1024u)
#define LOG_MEMORY_DEFAULT (64u * 1024u * 1024u)
/* First allocation of a message kept in memory: a typical message fits. */
#define MEM_INITIAL (8u * 1024u)

struct fsmsg {
    struct queue_msg base;
    int fd;               /* -1 while the message is kept in memory */
    int err;              /* sticky write error (errno), 0 if none */
    size_t wlen;
    unsigned char *wbuf;
    unsigned char *mem;   /* in memory: header + body so far */
    size_t mlen, mcap;    /* mcap is counted in fsq.log_mem */
    uint32_t body_crc;    /* of the body so far, for the footer */
};

struct fsbody {
    struct queue_body base;
    int fd;
    uint64_t off, end;
    struct qlog_ref ref;  /* a record of the log: fd is the segment's */
    bool in_log;
    unsigned char *img;   /* a small image read whole (fs_check_image), or NULL */
    uint64_t img_base;    /* the file offset of img[0] */
};


int fsq_st_name(const char *id, char out[QUEUE_ID_SIZE + 3])
{
    snprintf(out, QUEUE_ID_SIZE + 3, "%s.st", id);
    return 0;
}

/* ---- receiving ---- */

static int fs_flush(struct fsmsg *m)
{
    if (m->wlen > 0 && fs_write_all(m->fd, m->wbuf, m->wlen) < 0) {
        m->err = errno;
        return -1;
    }
    m->wlen = 0;
    return 0;
}

/* Buffered append; the body, the envelope and the footer all go through it. */
static int fs_append(struct fsmsg *m, const void *p, size_t n)
{
    if (m->err != 0) {
        errno = m->err;
        return -1;
    }
    if (n > WBUF_SIZE - m->wlen) {
        if (fs_flush(m) < 0)
            return -1;
        if (n >= WBUF_SIZE) {
            if (fs_write_all(m->fd, p, n) < 0) {
                m->err = errno;
                return -1;
            }
            return 0;
        }
    }
    memcpy(m->wbuf + m->wlen, p, n);
    m->wlen += n;
    return 0;
}

bool fsq_exists_at(int dirfd, const char *name)
{
    struct stat st;
    return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* An id still present in msg/, hold/, corrupt/ or the log is never reused
 * (doc/queue.md "Queue ids"). */
static bool id_taken(struct fsq *fq, const char *id)
{
    return fsq_exists_at(fq->msgfd, id) || fsq_exists_at(fq->holdfd, id) ||
           fsq_exists_at(fq->badfd, id) || qlog_has(fq->log, id);
}

/* Memory for messages kept in memory: taken from queue-log-memory, or
 * refused (the message then goes to a file). */
static bool mem_reserve(struct fsq *fq, size_t n)
{
    uint64_t now = atomic_fetch_add(&fq->log_mem, (uint64_t)n) + n;
    if (now <= fq->log_mem_max)
        return true;
    atomic_fetch_sub(&fq->log_mem, (uint64_t)n);
    return false;
}

static void mem_release(struct fsq *fq, struct fsmsg *m)
{
    if (m->mem == NULL)
        return;
    atomic_fetch_sub(&fq->log_mem, (uint64_t)m->mcap);
    bool kept = false;
    if (m->mcap <= FSQ_MEM_SPARE_MAX) {
        pthread_mutex_lock(&fq->spare_lock);
        if (fq->nspare < FSQ_MEM_SPARES) {
            fq->spare[fq->nspare++] = (struct fsq_spare){m->mem, m->mcap};
            kept = true;
        }
        pthread_mutex_unlock(&fq->spare_lock);
    }
    if (!kept)
        free(m->mem);
    m->mem = NULL;
    m->mlen = m->mcap = 0;
}

/* A buffer for a new message: the last one given back if there is one,
 * else MEM_INITIAL bytes; counted in log_mem. false when the memory cap
 * is reached (the message then goes to a file). */
static bool mem_take(struct fsq *fq, struct fsmsg *m)
{
    struct fsq_spare sp = {NULL, MEM_INITIAL};
    pthread_mutex_lock(&fq->spare_lock);
    if (fq->nspare > 0)
        sp = fq->spare[--fq->nspare];
    pthread_mutex_unlock(&fq->spare_lock);
    if (!mem_reserve(fq, sp.cap)) {
        free(sp.p);
        sp = (struct fsq_spare){NULL, MEM_INITIAL};
        if (!mem_reserve(fq, sp.cap))
            return false;
    }
    m->mem = sp.p != NULL ? sp.p : xmalloc(sp.cap);
    m->mcap = sp.cap;
    return true;
}

static void mem_spares_free(struct fsq *fq)
{
    for (size_t i = 0; i < fq->nspare; i++)
        free(fq->spare[i].p);
    fq->nspare = 0;
    pthread_mutex_destroy(&fq->spare_lock);
}

/* From memory to incoming/<id>: the file path of doc/queue.md "Receive". */
static int fs_spill(struct fsq *fq, struct fsmsg *m)
{
    if (id_taken(fq, m->base.id)) {
        errno = EEXIST;
        return -1;
    }
    int fd = openat(fq->infd, m->base.id,
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    m->fd = fd;
    m->wbuf = xmalloc(WBUF_SIZE);
    m->wlen = 0;
    int r = 0;
    if (m->mem != NULL)
        r = fs_append(m, m->mem, m->mlen);
    else
        r = fs_append(m, QFILE_HEADER, QFILE_HEADER_SIZE);
    mem_release(fq, m);
    return r;
}

static int fs_msg_open(struct queue *q, struct queue_msg **m_r)
{
    struct fsq *fq = FSQ(q);
    struct fsmsg *m = xcalloc(1, sizeof(*m));
    m->base.q = q;
    m->fd = -1;
    *m_r = NULL;
    for (int tries = 0;; tries++) {
        if (tries == 16) {
            free(m);
            errno = EEXIST;
            return -1;
        }
        queue_id_new(m->base.id);
        /* Checked again at the commit, where it matters for the log. */
        if (!qlog_has(fq->log, m->base.id))
            break;
    }
    if (fq->log_msg_max > 0 && mem_take(fq, m)) {
        memcpy(m->mem, QFILE_HEADER, QFILE_HEADER_SIZE);
        m->mlen = QFILE_HEADER_SIZE;
    } else if (fs_spill(fq, m) < 0) {
        int saved = errno;
        if (m->fd >= 0) {
            close(m->fd);
            unlinkat(fq->infd, m->base.id, 0);
        }
        free(m->wbuf);
        free(m);
        errno = saved;
        return -1;
    }
    *m_r = &m->base;
    return 0;
}

/* Appends to a message kept in memory; 1 if it no longer fits there (the
 * caller spills it), 0 when appended. */
static int mem_append(struct fsq *fq, struct fsmsg *m, const void *p, size_t n,
                      uint64_t size)
{
    if (size > fq->log_msg_max)
        return 1;
    size_t need = m->mlen + n; /* <= header + log_msg_max: no overflow */
    if (need > m->mcap) {
        size_t ncap = m->mcap * 2;
        if (ncap < need)
            ncap = need;
        if (ncap > QFILE_HEADER_SIZE + fq->log_msg_max)
            ncap = QFILE_HEADER_SIZE + (size_t)fq->log_msg_max;
        if (!mem_reserve(fq, ncap - m->mcap))
            return 1;
        m->mem = xrealloc(m->mem, ncap);
        m->mcap = ncap;
    }
    memcpy(m->mem + m->mlen, p, n);
    m->mlen = need;
    return 0;
}

static int fs_msg_write(struct queue_msg *qm, const void *p, size_t n)
{
    struct fsmsg *m = (struct fsmsg *)qm;
    struct fsq *fq = FSQ(qm->q);
    uint64_t size;
    if (m->err != 0) {
        errno = m->err;
        return -1;
    }
    if (__builtin_add_overflow(m->base.size, (uint64_t)n, &size)) {
        m->err = EFBIG;
        errno = EFBIG;
        return -1;
    }
    m->body_crc = qlog_crc(m->body_crc, p, n);
    if (m->fd < 0) {
        if (mem_append(fq, m, p, n, size) == 0) {
            m->base.size = size;
            return 0;
        }
        if (fs_spill(fq, m) < 0) {
            m->err = errno != 0 ? errno : EIO;
            return -1;
        }
    }
    if (fs_append(m, p, n) < 0)
        return -1;
    m->base.size = size;
    return 0;
}

static void fsmsg_free(struct fsmsg *m)
{
    if (m->fd >= 0)
        close(m->fd);
    mem_release(FSQ(m->base.q), m);
    free(m->wbuf);
    free(m);
}

static void fs_msg_abort(struct queue_msg *qm)
{
    struct fsmsg *m = (struct fsmsg *)qm;
    int saved = errno;
    if (m->fd >= 0)
        unlinkat(FSQ(qm->q)->infd, qm->id, 0);
    fsmsg_free(m);
    errno = saved;
}

/* Steps 1-3 of doc/queue.md "Commit" for one message (the flush of step 4
 * is one syncfs for the whole batch, in fs_commit): 0 or an errno. */
static int fs_commit_one(struct fsmsg *m, const struct queue_env *env)
{
    struct queue_env e = *env;
    struct buf eb;
    struct qfile_footer f;
    unsigned char foot[QFILE_FOOTER_SIZE];
    int err = 0;

    if (m->err != 0)
        return m->err;
    memcpy(e.id, m->base.id, sizeof(e.id));
    buf_init(&eb, QFILE_ENV_MAX);
    if (qfile_env_encode(&e, &eb) < 0) {
        err = errno;
        buf_free(&eb);
        return err;
    }
    qfile_footer_make(m->base.size, m->body_crc, eb.data, eb.len, &f);
    qfile_footer_encode(&f, foot);
    if (fs_append(m, eb.data, eb.len) < 0 ||
        fs_append(m, foot, sizeof(foot)) < 0 || fs_flush(m) < 0)
        err = errno != 0 ? errno : EIO;
    buf_free(&eb);
    return err;
}

/* Closes the batch's files; step 4's flush is one syncfs in fs_commit. */
static void fs_commit_close(struct queue_msg **msgs, size_t n, int *results_r)
{
    for (size_t i = 0; i < n; i++) {
        struct fsmsg *m = (struct fsmsg *)msgs[i];
        if (m->fd < 0)
            continue;
        int fd = m->fd;
        m->fd = -1;
        if (close(fd) < 0 && results_r[i] == 0)
            results_r[i] = errno != 0 ? errno : EIO;
    }
}

/* The messages of the batch kept in memory: each becomes a queue-file image
 * (the same bytes as a file: header, body, envelope, footer) and all of
 * them one append to the log with one fdatasync (doc/queue.md "The accept
 * log"). */
static void fs_commit_log(struct fsq *fq, struct queue_msg **msgs,
                          const struct queue_env *envs, size_t n, int *results_r)
{
    struct qlog_rec *recs = xcalloc(n, sizeof(*recs));
    struct iovec (*iov)[3] = xcalloc(n, sizeof(*iov));
    struct buf *ebs = xcalloc(n, sizeof(*ebs));
    unsigned char (*foot)[QFILE_FOOTER_SIZE] = xcalloc(n, sizeof(*foot));
    size_t *which = xcalloc(n, sizeof(*which));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct fsmsg *m = (struct fsmsg *)msgs[i];
        if (m->wbuf != NULL)
            continue; /* a file */
        if (m->err != 0) {
            results_r[i] = m->err;
            continue;
        }
        if (id_taken(fq, m->base.id)) {
            results_r[i] = EEXIST;
            continue;
        }
        struct queue_env e = envs[i];
        struct qfile_footer f;
        memcpy(e.id, m->base.id, sizeof(e.id));
        buf_init(&ebs[i], QFILE_ENV_MAX);
        if (qfile_env_encode(&e, &ebs[i]) < 0) {
            results_r[i] = errno != 0 ? errno : EINVAL;
            continue;
        }
        qfile_footer_make(m->base.size, m->body_crc, ebs[i].data, ebs[i].len, &f);
        qfile_footer_encode(&f, foot[i]);
        iov[i][0] = (struct iovec){m->mem, m->mlen};
        iov[i][1] = (struct iovec){ebs[i].data, ebs[i].len};
        iov[i][2] = (struct iovec){foot[i], QFILE_FOOTER_SIZE};
        /* The image's CRC from the body's, already computed as it came in:
         * no second pass over the body. */
        uint32_t crc = qlog_crc(0, m->mem, QFILE_HEADER_SIZE);
        crc = qlog_crc_combine(crc, m->body_crc, m->base.size);
        crc = qlog_crc(crc, ebs[i].data, ebs[i].len);
        crc = qlog_crc(crc, foot[i], QFILE_FOOTER_SIZE);
        recs[k] = (struct qlog_rec){.id = m->base.id, .iov = iov[i], .iovcnt = 3,
                                    .len = (uint64_t)m->mlen + ebs[i].len +
                                           QFILE_FOOTER_SIZE,
                                    .crc = crc};
        which[k++] = i;
    }
    if (k > 0) {
        int *res = xcalloc(k, sizeof(*res));
        qlog_append(fq->log, recs, k, res);
        for (size_t j = 0; j < k; j++)
            results_r[which[j]] = res[j];
        free(res);
    }
    for (size_t i = 0; i < n; i++)
        buf_free(&ebs[i]);
    free(recs);
    free(iov);
    free(ebs);
    free(foot);
    free(which);
}

static int fs_commit(struct queue *q, struct queue_msg **msgs,
                     const struct queue_env *envs, size_t n, int *results_r)
{
    struct fsq *fq = FSQ(q);
    size_t renamed = 0;
    int first_err = 0;

    for (size_t i = 0; i < n; i++)
        results_r[i] = 0;
    fs_commit_log(fq, msgs, envs, n, results_r);
    for (size_t i = 0; i < n; i++)
        if (((struct fsmsg *)msgs[i])->wbuf != NULL)
            results_r[i] = fs_commit_one((struct fsmsg *)msgs[i], &envs[i]);
    fs_commit_close(msgs, n, results_r);
    for (size_t i = 0; i < n; i++) {
        struct fsmsg *m = (struct fsmsg *)msgs[i];
        if (m->wbuf == NULL)
            continue;
        if (results_r[i] == 0 &&
            renameat(fq->infd, m->base.id, fq->msgfd, m->base.id) < 0)
            results_r[i] = errno != 0 ? errno : EIO;
        if (results_r[i] != 0)
            unlinkat(fq->infd, m->base.id, 0);
        else
            renamed++;
    }
    /* Group commit: one syncfs makes every file's data, inode and rename
     * durable at once (doc/queue.md "Commit": one journal commit and one
     * device flush for the whole batch). */
    if (renamed > 0 && syncfs(fq->msgfd) < 0) {
        int err = errno != 0 ? errno : EIO;
        log_kv(LOG_ERR, "queue.commit.fsync_failed", "error", strerror(err),
               NULL);
        for (size_t i = 0; i < n; i++) {
            if (results_r[i] == 0 && ((struct fsmsg *)msgs[i])->wbuf != NULL) {
                unlinkat(fq->msgfd, msgs[i]->id, 0);
                results_r[i] = err;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (results_r[i] != 0 && first_err == 0)
            first_err = results_r[i];
        fsmsg_free((struct fsmsg *)msgs[i]);
    }
    if (first_err != 0) {
        errno = first_err;
        return -1;
    }
    return 0;
}

/* ---- reading ---- */

/* pread exactly n bytes: 0, -1 (I/O error, errno), -2 (file too short). */
static int pread_full(int fd, void *p, size_t n, uint64_t off)
{
    unsigned char *c = p;
    while (n > 0) {
        if (off > (uint64_t)INT64_MAX) {
            errno = EBADMSG;
            return -2;
        }
        ssize_t r = pread(fd, c, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0) {
            errno = EBADMSG;
            return -2;
        }
        c += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* Header and footer of a queue-file image of `size` bytes at `base` in
 * fd (a queue file: base 0; a record of the log): 0, -1 (I/O), -2
 * (corrupt). With img_r, an image of at most FSQ_IMAGE_WHOLE_MAX is read
 * whole into *img_r (malloc'd: the caller frees it); else *img_r is
 * NULL. */
static int fs_check_image(int fd, uint64_t base, uint64_t size,
                          struct qfile_footer *f_r, const char **why_r,
                          unsigned char **img_r)
{
    unsigned char head[QFILE_HEADER_SIZE], foot[QFILE_FOOTER_SIZE];
    const unsigned char *h = head, *ft = foot;
    unsigned char *img = NULL;
    int r;
    if (img_r != NULL)
        *img_r = NULL;
    *why_r = "too short";
    if (size < (uint64_t)(QFILE_HEADER_SIZE + QFILE_FOOTER_SIZE))
        return -2;
    if (img_r != NULL && size <= FSQ_IMAGE_WHOLE_MAX) {
        img = xmalloc((size_t)size);
        *why_r = "truncated";
        if ((r = pread_full(fd, img, (size_t)size, base)) != 0) {
            free(img);
            return r;
        }
        h = img;
        ft = img + size - QFILE_FOOTER_SIZE;
    } else {
        *why_r = "bad header";
        if ((r = pread_full(fd, head, sizeof(head), base)) != 0)
            return r;
        *why_r = "bad footer";
        r = pread_full(fd, foot, sizeof(foot), base + size - QFILE_FOOTER_SIZE);
        if (r != 0)
            return r;
    }
    *why_r = "bad header";
    if (memcmp(h, QFILE_HEADER, QFILE_HEADER_SIZE) != 0) {
        free(img);
        return -2;
    }
    *why_r = "bad footer";
    if (qfile_footer_decode(ft, size, f_r) < 0) {
        free(img);
        return -2;
    }
    if (img_r != NULL)
        *img_r = img;
    return 0;
}

/* fs_check_image for a whole queue file. */
static int fs_check_frame(int fd, struct qfile_footer *f_r, const char **why_r,
                          unsigned char **img_r)
{
    if (img_r != NULL)
        *img_r = NULL;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -1;
    *why_r = "not a regular file";
    if (!S_ISREG(st.st_mode) || st.st_size < 0)
        return -2;
    return fs_check_image(fd, 0, (uint64_t)st.st_size, f_r, why_r, img_r);
}

/* Reads len bytes at off in `from` a chunk at a time, writing them to `to`
 * unless it is -1; *crc_r their CRC (qlog_crc). 0, -1 (I/O error, errno),
 * -2 (shorter than len: EBADMSG), as pread_full. */
static int range_crc(int from, uint64_t off, uint64_t len, int to, uint32_t *crc_r)
{
    unsigned char chunk[65536];
    uint32_t crc = 0;
    while (len > 0) {
        size_t n = len > sizeof(chunk) ? sizeof(chunk) : (size_t)len;
        int r = pread_full(from, chunk, n, off);
        if (r != 0)
            return r;
        if (to >= 0 && fs_write_all(to, chunk, n) < 0)
            return -1;
        crc = qlog_crc(crc, chunk, n);
        off += n;
        len -= n;
    }
    *crc_r = crc;
    return 0;
}

/* Full validation (doc/queue.md "The queue file") of the image at
 * base/size in fd, or of the whole file when size is UINT64_MAX: 0 with
 * the envelope, -1 (I/O error, errno), -2 (corrupt, *why_r says how).
 * check_body: also read the body against a version 2 footer's CRC (after
 * a crash a page may be missing; a version 1 file has no CRC and passes). */
static int fs_read_valid_at(int fd, uint64_t base, uint64_t size, const char *id,
                            bool check_body, struct queue_env **env_r,
                            const char **why_r)
{
    struct qfile_footer f;
    unsigned char *img;
    *env_r = NULL;
    int r = size == UINT64_MAX ? fs_check_frame(fd, &f, why_r, &img)
                               : fs_check_image(fd, base, size, &f, why_r, &img);
    if (r != 0) {
        if (r == -2)
            errno = EBADMSG;
        return r;
    }
    unsigned char *eb;
    if (img != NULL) {
        eb = img + f.env_off; /* within the image: qfile_footer_decode */
    } else {
        eb = xmalloc(f.env_len > 0 ? (size_t)f.env_len : 1);
        r = pread_full(fd, eb, (size_t)f.env_len, base + f.env_off);
    }
    if (r == 0 && qfile_crc32(0, eb, (size_t)f.env_len) != f.env_crc) {
        *why_r = "envelope checksum";
        r = -2;
    } else if (r == 0 && qfile_env_decode(eb, (size_t)f.env_len, env_r) < 0) {
        *why_r = "envelope format";
        r = -2;
    } else if (r == 0 && strcmp((*env_r)->id, id) != 0) {
        *why_r = "id does not match file name";
        r = -2;
    } else if (r == -2) {
        *why_r = "envelope truncated";
    }
    uint32_t crc;
    if (r == 0 && check_body && f.version >= 2) {
        /* A small image is in hand: its body is not read a second time. */
        *why_r = "body truncated";
        if (img != NULL)
            crc = qlog_crc(0, img + QFILE_HEADER_SIZE, (size_t)f.body_len);
        else
            r = range_crc(fd, base + QFILE_HEADER_SIZE, f.body_len, -1, &crc);
        if (r == 0 && crc != f.body_crc) {
            *why_r = "body checksum";
            r = -2;
        }
    }
    free(img != NULL ? img : eb);
    if (r != 0) {
        queue_env_free(*env_r);
        *env_r = NULL;
    }
    if (r == 0)
        (*env_r)->body_size = f.body_len;
    if (r == -2)
        errno = EBADMSG;
    return r;
}

int fsq_read_valid(int fd, const char *id, bool check_body,
                   struct queue_env **env_r, const char **why_r)
{
    return fs_read_valid_at(fd, 0, UINT64_MAX, id, check_body, env_r, why_r);
}

/* <id>.st in dirfd, opened for reading: a descriptor, -1 with errno ENOENT
 * if there is none (no records), or -1 with another errno. */
static int st_open(int dirfd, const char *id)
{
    char name[QUEUE_ID_SIZE + 3];
    fsq_st_name(id, name);
    return openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
}

/*
 * Replays the state records read from fd (an <id>.st, doc/queue.md
 * "Per-recipient state") into env when env is not NULL. *valid_r is the
 * length of the valid prefix and *torn_r whether anything follows it.
 * 0, or -1 with errno on an I/O error. fd is left open.
 */
int fsq_read_st(int fd, const char *id, struct queue_env *env,
                      uint64_t *valid_r, bool *torn_r)
{
    *valid_r = 0;
    *torn_r = false;
    unsigned *counts = NULL;
    if (env != NULL && env->nrcpts > 0)
        counts = xcalloc(env->nrcpts, sizeof(*counts));
    struct buf b;
    char chunk[8192];
    bool stop = false, ignored = false;
    int rc = 0;
    /* The leftover between reads is less than one record. */
    buf_init(&b, QFILE_ST_REC_MAX + sizeof(chunk));
    while (!stop) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -1;
            break;
        }
        if (n == 0)
            break;
        if (buf_append(&b, chunk, (size_t)n) < 0) {
            errno = EIO; /* cannot happen: see the cap above */
            rc = -1;
            break;
        }
        size_t pos = 0, used = 0;
        struct qfile_st_rec rec;
        int d;
        while ((d = qfile_st_decode(b.data + pos, b.len - pos, &rec, &used)) == 1) {
            pos += used;
            if (env == NULL)
                continue;
            if (rec.index >= env->nrcpts) {
                ignored = true;
                continue;
            }
            struct queue_rcpt *r = &env->rcpts[rec.index];
            r->state = rec.state;
            free(r->status);
            r->status = xstrndup(rec.status, rec.status_len);
            counts[rec.index]++;
        }
        if (d < 0)
            stop = true;
        *valid_r += pos;
        buf_consume(&b, pos);
    }
    if (rc == 0 && (stop || b.len > 0))
        *torn_r = true;
    buf_free(&b);
    if (rc == 0 && env != NULL) {
        env->attempts = 0;
        for (size_t i = 0; i < env->nrcpts; i++)
            if (counts[i] > env->attempts)
                env->attempts = counts[i];
        if (ignored)
            log_kv(LOG_WARN, "queue.state.bad_index", "id", id, NULL);
    }
    free(counts);
    return rc;
}

/*
 * A message and its records from dirfd (msg/ or hold/). The state file is
 * opened before the message: a hold or release moving both between the two
 * opens then makes the second fail (ENOENT) instead of giving the message
 * without its records, every recipient pending (doc/queue.md "Hold and
 * release").
 */
static int fs_load_in(int dirfd, const char *id, struct queue_env **env_r)
{
    const char *why = NULL;
    uint64_t valid;
    bool torn;
    *env_r = NULL;
    if (!qfile_id_valid(id)) {
        errno = EINVAL;
        return -1;
    }
    int sfd = st_open(dirfd, id);
    if (sfd < 0 && errno != ENOENT)
        return -1;
    int fd = openat(dirfd, id, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int r = errno == ELOOP ? (errno = EBADMSG, -2) : -1;
        if (sfd >= 0)
            fs_close_keep_errno(sfd);
        return r;
    }
    struct queue_env *env;
    int r = fsq_read_valid(fd, id, false, &env, &why);
    fs_close_keep_errno(fd);
    if (r == 0 && sfd >= 0 && fsq_read_st(sfd, id, env, &valid, &torn) < 0) {
        int saved = errno;
        queue_env_free(env);
        env = NULL;
        errno = saved;
        r = -1;
    }
    if (sfd >= 0)
        fs_close_keep_errno(sfd);
    if (r == 0)
        *env_r = env;
    return r;
}

/* A message of the accept log: as fs_load_in. */
static int fs_log_load(struct fsq *fq, const char *id, struct queue_env **env_r)
{
    struct qlog_ref ref;
    const char *why = NULL;
    *env_r = NULL;
    if (qlog_pin(fq->log, id, &ref) < 0)
        return -1;
    int r = fs_read_valid_at(ref.fd, ref.off, ref.len, id, false, env_r, &why);
    int saved = errno;
    qlog_unpin(fq->log, &ref);
    errno = saved;
    return r;
}

static int fs_body_open_in(struct queue *q, int dirfd, const char *id,
                           struct queue_body **b_r)
{
    struct qfile_footer f;
    const char *why;
    *b_r = NULL;
    if (!qfile_id_valid(id)) {
        errno = EINVAL;
        return -1;
    }
    int fd = openat(dirfd, id, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    unsigned char *img;
    int r = fs_check_frame(fd, &f, &why, &img);
    if (r != 0) {
        if (r == -2)
            errno = EBADMSG;
        fs_close_keep_errno(fd);
        return -1;
    }
    struct fsbody *b = xcalloc(1, sizeof(*b));
    b->base.q = q;
    b->fd = fd;
    b->off = QFILE_HEADER_SIZE;
    b->end = QFILE_HEADER_SIZE + f.body_len;
    b->img = img;
    b->img_base = 0;
    *b_r = &b->base;
    return 0;
}

static int fs_log_body_open(struct queue *q, const char *id,
                            struct queue_body **b_r)
{
    struct fsq *fq = FSQ(q);
    struct qlog_ref ref;
    struct qfile_footer f;
    const char *why;
    *b_r = NULL;
    if (qlog_pin(fq->log, id, &ref) < 0)
        return -1;
    unsigned char *img;
    int r = fs_check_image(ref.fd, ref.off, ref.len, &f, &why, &img);
    if (r != 0) {
        int err = r == -2 ? EBADMSG : errno;
        qlog_unpin(fq->log, &ref); /* may unlink and close: errno saved */
        errno = err;
        return -1;
    }
    struct fsbody *b = xcalloc(1, sizeof(*b));
    b->base.q = q;
    b->fd = ref.fd;
    b->off = ref.off + QFILE_HEADER_SIZE;
    b->end = b->off + f.body_len;
    b->ref = ref;
    b->in_log = true;
    b->img = img;
    b->img_base = ref.off;
    *b_r = &b->base;
    return 0;
}

/*
 * One way of reading a message (its envelope, or its body): from a record
 * of the accept log, or from a file in a directory (msg/ or hold/). `out`
 * is the caller's env_r or b_r.
 */
struct fs_reader {
    int (*from_log)(struct queue *q, const char *id, void *out);
    int (*from_dir)(struct queue *q, int dirfd, const char *id, void *out);
};

/*
 * An active message is in msg/ or in the log (doc/queue.md "The log and
 * the other operations"). The server's own index of the log is exact, so it
 * looks there first; another process's is a snapshot taken at open, and a
 * message kept as a file since then is read from the file (with its
 * states).
 */
static int fs_read_active(struct queue *q, const char *id, const struct fs_reader *rd,
                          void *out)
{
    struct fsq *fq = FSQ(q);
    if (!qfile_id_valid(id)) {
        errno = EINVAL;
        return -1;
    }
    if (qlog_is_owner(fq->log)) {
        int r = rd->from_log(q, id, out);
        if (r == -1 && errno == ENOENT)
            r = rd->from_dir(q, fq->msgfd, id, out);
        return r;
    }
    int r = rd->from_dir(q, fq->msgfd, id, out);
    if (r == -1 && errno == ENOENT) {
        r = rd->from_log(q, id, out);
        if (r == -1)
            errno = ENOENT;
    }
    return r;
}

/* An active message, else a held one (*held_r). */
static int fs_read_any(struct queue *q, const char *id, const struct fs_reader *rd,
                       void *out, bool *held_r)
{
    *held_r = false;
    int r = fs_read_active(q, id, rd, out);
    if (r == -1 && errno == ENOENT) {
        *held_r = true;
        r = rd->from_dir(q, FSQ(q)->holdfd, id, out);
        if (r == -1 && errno == ENOENT)
            *held_r = false;
    }
    return r;
}

static int fs_env_from_log(struct queue *q, const char *id, void *out)
{
    return fs_log_load(FSQ(q), id, out);
}

static int fs_env_from_dir(struct queue *q, int dirfd, const char *id, void *out)
{
    (void)q;
    return fs_load_in(dirfd, id, out);
}

static int fs_body_from_log(struct queue *q, const char *id, void *out)
{
    return fs_log_body_open(q, id, out);
}

static int fs_body_from_dir(struct queue *q, int dirfd, const char *id, void *out)
{
    return fs_body_open_in(q, dirfd, id, out);
}

static const struct fs_reader fs_env_reader = {fs_env_from_log, fs_env_from_dir};
static const struct fs_reader fs_body_reader = {fs_body_from_log, fs_body_from_dir};

static int fs_load(struct queue *q, const char *id, struct queue_env **env_r)
{
    return fs_read_active(q, id, &fs_env_reader, env_r);
}

static int fs_load_any(struct queue *q, const char *id, struct queue_env **env_r,
                       bool *held_r)
{
    return fs_read_any(q, id, &fs_env_reader, env_r, held_r);
}

static int fs_body_open(struct queue *q, const char *id, struct queue_body **b_r)
{
    return fs_read_active(q, id, &fs_body_reader, b_r);
}

static int fs_body_open_any(struct queue *q, const char *id,
                            struct queue_body **b_r, bool *held_r)
{
    return fs_read_any(q, id, &fs_body_reader, b_r, held_r);
}

static ssize_t fs_body_read(struct queue_body *qb, void *p, size_t n)
{
    struct fsbody *b = (struct fsbody *)qb;
    uint64_t left = b->end - b->off;
    if (n > left)
        n = (size_t)left;
    if (n > SSIZE_MAX)
        n = SSIZE_MAX;
    if (n == 0)
        return 0;
    if (b->img != NULL) {
        memcpy(p, b->img + (b->off - b->img_base), n);
        b->off += (uint64_t)n;
        return (ssize_t)n;
    }
    for (;;) {
        ssize_t r = pread(b->fd, p, n, (off_t)b->off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0) {
            errno = EIO; /* shorter than its footer says */
            return -1;
        }
        if (r > 0)
            b->off += (uint64_t)r;
        return r;
    }
}

static void fs_body_close(struct queue_body *qb)
{
    struct fsbody *b = (struct fsbody *)qb;
    if (b->in_log)
        qlog_unpin(FSQ(qb->q)->log, &b->ref);
    else
        close(b->fd);
    free(b->img);
    free(b);
}

/* ---- from the log to a file (doc/queue.md "queue_keep") ---- */

/* Copies len bytes at off in from into to (at its start). With want_crc,
 * bytes whose CRC (qlog_crc) differs fail it with EBADMSG: a record torn
 * by a crash (doc/queue.md "Segments"). */
static int copy_range(int from, uint64_t off, uint64_t len, int to,
                      const uint32_t *want_crc)
{
    uint32_t crc;
    int r = range_crc(from, off, len, to, &crc);
    if (r != 0) {
        if (r == -2)
            errno = EIO;
        return -1;
    }
    if (want_crc != NULL && crc != *want_crc) {
        errno = EBADMSG;
        return -1;
    }
    return 0;
}

/*
 * The record's image as the file `todir`/<id>, through incoming/<id>
 * (msg/: queue_keep and recovery; corrupt/: set aside). durable: fsync the
 * file and todir (recovery does one syncfs for all instead). A file
 * already there under that name is the same message from an earlier keep:
 * 0, nothing written.
 */
int fsq_log_copy(struct fsq *fq, const char *id, const struct qlog_ref *ref,
                       int todir, bool durable)
{
    if (fsq_exists_at(todir, id))
        return 0;
    unlinkat(fq->infd, id, 0); /* a stale one from a keep cut short */
    int fd = openat(fq->infd, id,
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    /* Into corrupt/, the bytes whatever they are; elsewhere only a record
     * whose image is whole. */
    if (copy_range(ref->fd, ref->off, ref->len, fd,
                   todir == fq->badfd ? NULL : &ref->crc) < 0 ||
        (durable && fsync(fd) < 0)) {
        fs_close_keep_errno(fd);
        unlinkat(fq->infd, id, 0);
        return -1;
    }
    if (close(fd) < 0) {
        unlinkat(fq->infd, id, 0);
        return -1;
    }
    if (renameat2(fq->infd, id, todir, id, RENAME_NOREPLACE) < 0) {
        int saved = errno;
        if (saved == EEXIST) {
            unlinkat(fq->infd, id, 0);
            return 0;
        }
        if ((saved != EINVAL && saved != ENOSYS) ||
            renameat(fq->infd, id, todir, id) < 0) {
            saved = errno;
            unlinkat(fq->infd, id, 0);
            errno = saved;
            return -1;
        }
    }
    if (durable && fsync(todir) < 0)
        return -1;
    return 0;
}

/* A message of the log becomes msg/<id>, durably, then leaves the log. Not
 * in the log: nothing to do. Only in the server's process. */
static int fs_keep(struct queue *q, const char *id)
{
    struct fsq *fq = FSQ(q);
    struct qlog_ref ref;
    if (!qfile_id_valid(id)) {
        errno = EINVAL;
        return -1;
    }
    if (!qlog_is_owner(fq->log))
        return 0;
    if (qlog_pin(fq->log, id, &ref) < 0)
        return 0;
    int r = fsq_log_copy(fq, id, &ref, fq->msgfd, true);
    int saved = errno;
    qlog_unpin(fq->log, &ref);
    if (r < 0) {
        log_kv(LOG_ERR, "queue.keep_failed", "id", id, "error", strerror(saved),
               NULL);
        errno = saved;
        return -1;
    }
    qlog_done(fq->log, id);
    return 0;
}

/* For another process, a message only in the log cannot be changed: the
 * server is delivering it (doc/queue.md). -1/EBUSY then, else 0. */
static int fs_log_busy(struct fsq *fq, const char *id)
{
    if (!qlog_is_owner(fq->log) && !fsq_exists_at(fq->msgfd, id) &&
        qlog_has(fq->log, id)) {
        errno = EBUSY;
        return -1;
    }
    return 0;
}

/* ---- state changes ---- */

static int fs_rcpt_update(struct queue *q, const char *id, size_t index,
                          enum queue_rcpt_state state, const char *status)
{
    struct fsq *fq = FSQ(q);
    char name[QUEUE_ID_SIZE + 3];
    struct stat st;
    struct buf rec;
    bool created = false;
    if (!qfile_id_valid(id) || index >= QFILE_RCPTS_MAX ||
        (unsigned)state > QUEUE_RCPT_FAILED) {
        errno = EINVAL;
        return -1;
    }
    /* A record has no .st: it becomes a file first. */
    if (fs_keep(q, id) < 0 || fs_log_busy(fq, id) < 0)
        return -1;
    if (fstatat(fq->msgfd, id, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -1;
    if (status == NULL)
        status = "";
    size_t sl = strlen(status);
    if (sl > QFILE_STATUS_MAX)
        sl = QFILE_STATUS_MAX; /* a status text, not data: cut, not refused */
    buf_init(&rec, QFILE_ST_REC_MAX);
    if (qfile_st_encode(index, state, status, sl, &rec) < 0) {
        buf_free(&rec);
        return -1;
    }

    fsq_st_name(id, name);
    int fd = -1;
    /* Another process (the admin command bouncing this message) may create
     * the file between our two opens: then open it again (EEXIST). */
    for (int tries = 0; tries < 4; tries++) {
        fd = openat(fq->msgfd, name, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0 || errno != ENOENT)
            break;
        fd = openat(fq->msgfd, name,
                    O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    0600);
        if (fd >= 0) {
            created = true;
            break;
        }
        if (errno != EEXIST)
            break;
    }
    if (fd < 0) {
        buf_free(&rec);
        return -1;
    }
    int rc = 0;
    if (fstat(fd, &st) < 0) {
        rc = -1;
    } else if (fs_write_all(fd, rec.data, rec.len) < 0 || fsync(fd) < 0) {
        /* Cut off a half-written record so it cannot hide later ones. */
        int saved = errno;
        if (ftruncate(fd, st.st_size) == 0)
            fsync(fd);
        errno = saved;
        rc = -1;
    }
    buf_free(&rec);
    if (close(fd) < 0 && rc == 0)
        rc = -1;
    if (rc == 0 && created && fsync(fq->msgfd) < 0)
        rc = -1;
    return rc;
}

static int fs_remove(struct queue *q, const char *id)
{
    struct fsq *fq = FSQ(q);
    char name[QUEUE_ID_SIZE + 3];
    if (!qfile_id_valid(id)) {
        errno = EINVAL;
        return -1;
    }
    /* In the server's log: a done record (doc/queue.md "Done records"). */
    if (qlog_is_owner(fq->log) && qlog_done(fq->log, id) == 0)
        return 0;
    if (fs_log_busy(fq, id) < 0)
        return -1;
    /* Message first, fsync, then its state (doc/queue.md "Removal"); an
     * active message, else a held one. Without a state file there is
     * nothing to order, and no fsync. */
    fsq_st_name(id, name);
    int dirfd = fq->msgfd;
    bool has_st = faccessat(dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0 ||
                  errno != ENOENT;
    if (unlinkat(dirfd, id, 0) < 0) {
        if (errno != ENOENT)
            return -1;
        dirfd = fq->holdfd;
        has_st = true; /* held: rare, keep the careful order */
        if (unlinkat(dirfd, id, 0) < 0)
            return -1;
    }
    if (!has_st)
        return 0;
    if (fsync(dirfd) < 0)
        return -1; /* keep the .st: if the unlink is lost, so are no states */
    if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
        log_kv(LOG_WARN, "queue.remove.state_left", "id", id, "error",
               strerror(errno), NULL); /* an orphan: recovery removes it */
    return 0;
}

/* From dirfd (msg/, or hold/ at recovery) to corrupt/. */
int fsq_set_aside_from(struct fsq *fq, int dirfd, const char *id,
                             const char *reason)
{
    char name[QUEUE_ID_SIZE + 3];
    if (!qfile_id_valid(id)) {
        errno = EINVAL;
        return -1;
    }
    if (renameat(dirfd, id, fq->badfd, id) < 0)
        return -1;
    fsq_st_name(id, name);
    if (renameat(dirfd, name, fq->badfd, name) < 0 && errno != ENOENT)
        log_kv(LOG_WARN, "queue.set_aside.state_left", "id", id, "error",
               strerror(errno), NULL);
    log_kv(LOG_WARN, "queue.set_aside", "id", id, "reason", reason, NULL);
    if (fsync(fq->badfd) < 0 || fsync(dirfd) < 0)
        return -1;
    return 0;
}

static int fs_set_aside(struct queue *q, const char *id, const char *reason)
{
    struct fsq *fq = FSQ(q);
    struct qlog_ref ref;
    if (!qfile_id_valid(id)) {
        errno = EINVAL;
        return -1;
    }
    if (qlog_is_owner(fq->log) && qlog_pin(fq->log, id, &ref) == 0) {
        /* The record's bytes, whatever they are, for the admin. */
        int r = fsq_log_copy(fq, id, &ref, fq->badfd, true);
        int saved = errno;
        qlog_unpin(fq->log, &ref);
        if (r < 0) {
            errno = saved;
            return -1;
        }
        qlog_done(fq->log, id);
        log_kv(LOG_WARN, "queue.set_aside", "id", id, "reason", reason, NULL);
        return 0;
    }
    if (fs_log_busy(fq, id) < 0)
        return -1;
    return fsq_set_aside_from(fq, fq->msgfd, id, reason);
}

/* ---- hold and release (doc/queue.md "Hold and release") ---- */

static int fs_hold(struct queue *q, const char *id)
{
    struct fsq *fq = FSQ(q);
    char name[QUEUE_ID_SIZE + 3];
    if (!qfile_id_valid(id)) {
        errno = EINVAL;
        return -1;
    }
    if (fs_keep(q, id) < 0 || fs_log_busy(fq, id) < 0)
        return -1;
    /* The message leaves msg/ first: from then on the delivery thread
     * cannot start on it, and its records follow. */
    if (renameat(fq->msgfd, id, fq->holdfd, id) < 0)
        return -1;
    fsq_st_name(id, name);
    if (renameat(fq->msgfd, name, fq->holdfd, name) < 0 && errno != ENOENT) {
        int saved = errno;
        /* Undo, so the records are not left apart from their message. */
        if (renameat(fq->holdfd, id, fq->msgfd, id) < 0)
            log_kv(LOG_ERR, "queue.hold.state_left", "id", id, "error",
                   strerror(saved), NULL); /* recovery reunites them */
        errno = saved;
        return -1;
    }
    if (fsync(fq->holdfd) < 0 || fsync(fq->msgfd) < 0)
        return -1;
    log_kv(LOG_INFO, "queue.held", "id", id, NULL);
    return 0;
}

static int fs_release(struct queue *q, const char *id)
{
    struct fsq *fq = FSQ(q);
    char name[QUEUE_ID_SIZE + 3];
    struct stat st;
    if (!qfile_id_valid(id)) {
        errno = EINVAL;
        return -1;
    }
    /* Not held: touch nothing (a stray hold/<id>.st must not replace the
     * records of an active message). */
    if (fstatat(fq->holdfd, id, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -1;
    /* The records go first, so the message never appears in msg/ without
     * them. */
    fsq_st_name(id, name);
    bool moved = true;
    if (renameat(fq->holdfd, name, fq->msgfd, name) < 0) {
        if (errno != ENOENT)
            return -1;
        moved = false;
    }
    if (renameat(fq->holdfd, id, fq->msgfd, id) < 0) {
        int saved = errno;
        if (moved && renameat(fq->msgfd, name, fq->holdfd, name) < 0)
            log_kv(LOG_ERR, "queue.release.state_left", "id", id, "error",
                   strerror(saved), NULL);
        errno = saved;
        return -1;
    }
    if (fsync(fq->msgfd) < 0 || fsync(fq->holdfd) < 0)
        return -1;
    log_kv(LOG_INFO, "queue.released", "id", id, NULL);
    return 0;
}

/* ---- listing and recovery ---- */

static int fs_list_in(int dirfd, void (*cb)(const char *id, void *arg),
                      void *arg)
{
    char **names;
    size_t n;
    if (fs_dir_names(dirfd, &names, &n) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (qfile_id_valid(names[i]))
            cb(names[i], arg);
    fs_names_free(names, n);
    return 0;
}

struct log_list_arg {
    struct fsq *fq;
    void (*cb)(const char *id, void *arg);
    void *arg;
};

/* A message kept as a file since the snapshot is listed once, from msg/. */
static void log_list_cb(const char *id, void *arg)
{
    struct log_list_arg *a = arg;
    if (!fsq_exists_at(a->fq->msgfd, id))
        a->cb(id, a->arg);
}

static int fs_list(struct queue *q, void (*cb)(const char *id, void *arg),
                   void *arg)
{
    struct fsq *fq = FSQ(q);
    if (fs_list_in(fq->msgfd, cb, arg) < 0)
        return -1;
    struct log_list_arg a = {fq, cb, arg};
    return qlog_list(fq->log, log_list_cb, &a);
}

static int fs_list_held(struct queue *q, void (*cb)(const char *id, void *arg),
                        void *arg)
{
    return fs_list_in(FSQ(q)->holdfd, cb, arg);
}

static void fs_close(struct queue *q)
{
    struct fsq *fq = FSQ(q);
    qlog_close(fq->log);
    close(fq->infd);
    close(fq->msgfd);
    close(fq->holdfd);
    close(fq->badfd);
    close(fq->dirfd);
    mem_spares_free(fq);
    free(fq);
}

static const struct queue_ops fs_ops = {
    .close = fs_close,
    .msg_open = fs_msg_open,
    .msg_write = fs_msg_write,
    .msg_abort = fs_msg_abort,
    .commit = fs_commit,
    .list = fs_list,
    .recover = fsq_recover,
    .load = fs_load,
    .body_open = fs_body_open,
    .body_read = fs_body_read,
    .body_close = fs_body_close,
    .rcpt_update = fs_rcpt_update,
    .remove = fs_remove,
    .set_aside = fs_set_aside,
    .hold = fs_hold,
    .release = fs_release,
    .list_held = fs_list_held,
    .load_any = fs_load_any,
    .body_open_any = fs_body_open_any,
    .keep = fs_keep,
};

int queue_fs_mark_clean(struct queue *q)
{
    if (q == NULL || q->ops != &fs_ops)
        return 0;
    struct fsq *fq = FSQ(q);
    if (syncfs(fq->dirfd) < 0 ||
        fs_create_synced(fq->dirfd, FSQ_CLEAN_MARKER, 0600) < 0)
        return -1;
    return fsync(fq->dirfd);
}

void queue_fs_tune(struct queue *q, uint64_t log_message_max,
                   uint64_t log_memory_max)
{
    if (q == NULL || q->ops != &fs_ops)
        return;
    struct fsq *fq = FSQ(q);
    fq->log_msg_max = log_message_max;
    fq->log_mem_max = log_memory_max;
}

static int open_sub(int dirfd, const char *sub)
{
    if (mkdirat(dirfd, sub, 0700) == 0) {
        if (fsync(dirfd) < 0)
            return -1;
    } else if (errno != EEXIST) {
        return -1;
    }
    return fs_open_subdir(dirfd, sub);
}

struct queue *queue_fs_open(const char *dir, struct buf *err_r)
{
    static const char *const subs[] = {"incoming", "msg", "hold", "corrupt"};
    int fds[4] = {-1, -1, -1, -1};
    const char *what = dir;
    int dirfd = -1;

    if (fs_mkdir_p(dir, 0700) < 0)
        goto fail;
    dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        goto fail;
    for (int i = 0; i < 4; i++) {
        what = subs[i];
        if ((fds[i] = open_sub(dirfd, subs[i])) < 0)
            goto fail;
    }
    what = "log";
    struct qlog *log = qlog_open(dirfd);
    if (log == NULL)
        goto fail;
    struct fsq *fq = xcalloc(1, sizeof(*fq));
    fq->base.ops = &fs_ops;
    fq->log = log;
    fq->log_msg_max = LOG_MESSAGE_DEFAULT;
    fq->log_mem_max = LOG_MEMORY_DEFAULT;
    pthread_mutex_init(&fq->spare_lock, NULL);
    fq->dirfd = dirfd;
    fq->infd = fds[0];
    fq->msgfd = fds[1];
    fq->holdfd = fds[2];
    fq->badfd = fds[3];
    return &fq->base;
fail:;
    int err = errno;
    if (err_r != NULL) {
        if (what == dir)
            buf_appendf(err_r, "queue: %s: %s", dir, strerror(err));
        else
            buf_appendf(err_r, "queue: %s/%s: %s", dir, what, strerror(err));
    }
    for (int i = 0; i < 4; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (dirfd >= 0)
        close(dirfd);
    errno = err;
    return NULL;
}
