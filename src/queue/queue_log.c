/*
 * queue_log: the accept log (doc/queue.md "The accept log"). Segments are
 * log/<seq> (16 hex digits), done records log/<seq>.done; the index maps
 * each live id to its segment, offset and length.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>
#ifdef HAVE_ISAL
#include <isa-l/crc.h>
#endif

#include "lib/fsutil.h"
#include "lib/hash.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/qfile.h"
#include "queue/queue_log.h"

#define SEQ_DIGITS 16
#define REC_MAGIC "EQLOGR02"
/* Done files are read whole at open; one line per message of a segment
 * of QLOG_SEGMENT_MAX, far below this. */
#define DONE_FILE_MAX (64u * 1024u * 1024u)

struct qseg {
    uint64_t seq;
    int fd;
    int donefd;        /* -1 until the first done record */
    uint64_t size;     /* end of the last record appended or scanned */
    size_t live;       /* live records */
    size_t pins;       /* qlog_ref outstanding */
    bool sealed;       /* never appended to again */
    bool writable;     /* made by this process (O_RDWR): may be reused */
    struct qseg *next; /* in seq order */
};

struct qent {
    char id[QUEUE_ID_SIZE];
    struct qseg *seg;
    uint64_t off, len;
    uint32_t crc;
    bool last;          /* the last record a scan found in its segment */
    struct qent *next;
};

struct qlog {
    pthread_mutex_t mu;
    pthread_mutex_t append_mu; /* one appender at a time: smtpd's commit
                                * thread, and delivery threads queueing
                                * a remainder or a DSN */
    int dirfd;
    struct qseg *segs;   /* oldest first */
    struct qseg *cur;    /* the segment appended to, or NULL */
    struct qseg *spare;  /* emptied, kept for reuse (at most QLOG_SPARE_MAX) */
    size_t nspare;
    struct qent **tab;
    size_t tabcap, count;
    uint64_t next_seq;
    bool owner;
};

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint32_t qlog_crc(uint32_t crc, const void *p, size_t n)
{
#ifdef HAVE_ISAL
    /* The same CRC as zlib's crc32 (reflected IEEE, pre- and post-
     * inverted), folded with carry-less multiplies: the event loop takes
     * it over every body byte it accepts. */
    return crc32_gzip_refl(crc, p, (uint64_t)n);
#else
    const unsigned char *c = p;
    while (n > 0) { /* zlib takes a uInt length */
        uInt k = n > (size_t)UINT_MAX ? UINT_MAX : (uInt)n;
        crc = (uint32_t)crc32(crc, c, k);
        c += k;
        n -= k;
    }
    return crc;
#endif
}

/* doc/queue.md "Segments": magic, image length, the segment's sequence
 * number, id, CRC of the 48 bytes before it, CRC of the image, zeros. */
uint32_t qlog_crc_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b)
{
    /* z_off_t is 64 bits with _FILE_OFFSET_BITS=64 or on LP64; message
     * bodies are far below its range anyway (message-size <= 2 GiB). */
    return (uint32_t)crc32_combine(crc_a, crc_b, (z_off_t)len_b);
}

static void rec_header(const char *id, uint64_t len, uint64_t seq,
                       uint32_t image_crc, unsigned char h[QLOG_REC_HEADER_SIZE])
{
    memset(h, 0, QLOG_REC_HEADER_SIZE);
    memcpy(h, REC_MAGIC, 8);
    put_u64(h + 8, len);
    put_u64(h + 16, seq);
    memcpy(h + 24, id, strlen(id));
    put_u32(h + 48, qfile_crc32(0, h, 48));
    put_u32(h + 52, image_crc);
}

/* The id of a valid header written for segment seq, or false: a record
 * left from the file's earlier life as another segment is not valid. */
static bool rec_header_parse(const unsigned char h[QLOG_REC_HEADER_SIZE],
                             uint64_t seq, char id_r[QUEUE_ID_SIZE],
                             uint64_t *len_r, uint32_t *crc_r)
{
    if (memcmp(h, REC_MAGIC, 8) != 0 || get_u32(h + 48) != qfile_crc32(0, h, 48) ||
        get_u64(h + 16) != seq)
        return false;
    for (size_t i = 56; i < QLOG_REC_HEADER_SIZE; i++)
        if (h[i] != 0)
            return false;
    *crc_r = get_u32(h + 52);
    memcpy(id_r, h + 24, QUEUE_ID_SIZE - 1);
    id_r[QUEUE_ID_SIZE - 1] = '\0';
    if (h[24 + QUEUE_ID_SIZE - 1] != 0 || !qfile_id_valid(id_r))
        return false;
    *len_r = get_u64(h + 8);
    return true;
}

static void seg_name(uint64_t seq, bool done, char out[SEQ_DIGITS + 6])
{
    snprintf(out, SEQ_DIGITS + 6, "%016" PRIx64 "%s", seq, done ? ".done" : "");
}

/* 16 lower-case hex digits, optionally followed by ".done". */
static bool seg_parse_name(const char *name, uint64_t *seq_r, bool *done_r)
{
    size_t len = strlen(name);
    if (len != SEQ_DIGITS && !(len == SEQ_DIGITS + 5 &&
                               strcmp(name + SEQ_DIGITS, ".done") == 0))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < SEQ_DIGITS; i++) {
        char c = name[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return false;
        v = v << 4 | (uint64_t)d;
    }
    *seq_r = v;
    *done_r = len != SEQ_DIGITS;
    return true;
}

/* ---- the index (caller holds mu) ---- */

static struct qent **ent_slot(struct qlog *l, const char *id)
{
    struct qent **p = &l->tab[hash_fnv1a(id) & (l->tabcap - 1)];
    while (*p != NULL && strcmp((*p)->id, id) != 0)
        p = &(*p)->next;
    return p;
}

static void ent_grow(struct qlog *l)
{
    size_t ncap = l->tabcap * 2;
    struct qent **nt = xcalloc(ncap, sizeof(*nt));
    for (size_t i = 0; i < l->tabcap; i++) {
        struct qent *e = l->tab[i];
        while (e != NULL) {
            struct qent *next = e->next;
            size_t h = hash_fnv1a(e->id) & (ncap - 1);
            e->next = nt[h];
            nt[h] = e;
            e = next;
        }
    }
    free(l->tab);
    l->tab = nt;
    l->tabcap = ncap;
}

/* False if id is already live (then nothing is added). */
static struct qent *ent_add(struct qlog *l, const char *id, struct qseg *seg,
                            uint64_t off, uint64_t len, uint32_t crc)
{
    struct qent **slot = ent_slot(l, id);
    if (*slot != NULL)
        return NULL;
    struct qent *e = xcalloc(1, sizeof(*e));
    snprintf(e->id, sizeof(e->id), "%s", id);
    e->seg = seg;
    e->off = off;
    e->len = len;
    e->crc = crc;
    *slot = e;
    seg->live++;
    if (++l->count > l->tabcap)
        ent_grow(l);
    return e;
}

/* ---- segments (caller holds mu) ---- */

static void seg_unlink(struct qlog *l, uint64_t seq)
{
    char name[SEQ_DIGITS + 6];
    seg_name(seq, false, name);
    if (unlinkat(l->dirfd, name, 0) < 0 && errno != ENOENT)
        log_kv(LOG_WARN, "queue.log.unlink_failed", "segment", name, "error",
               strerror(errno), NULL);
    /* After the segment: a done file without its segment is harmless and
     * removed at the next recovery; the other way round is a duplicate. */
    seg_name(seq, true, name);
    unlinkat(l->dirfd, name, 0);
}

static void seg_free(struct qseg *seg)
{
    if (seg->fd >= 0)
        close(seg->fd);
    if (seg->donefd >= 0)
        close(seg->donefd);
    free(seg);
}

/* Retires a sealed segment nobody needs any more (owner only): kept as a
 * spare for seg_create to reuse, or deleted. A spare keeps its name and
 * its done file, which marks every record in it done, until it is reused:
 * a restart meanwhile finds nothing live in it. */
static void seg_maybe_delete(struct qlog *l, struct qseg *seg)
{
    if (!l->owner || !seg->sealed || seg->live > 0 || seg->pins > 0)
        return;
    struct qseg **p = &l->segs;
    while (*p != NULL && *p != seg)
        p = &(*p)->next;
    if (*p == NULL)
        return;
    *p = seg->next;
    if (l->cur == seg)
        l->cur = NULL;
    if (seg->writable && l->nspare < QLOG_SPARE_MAX) {
        if (seg->donefd >= 0)
            close(seg->donefd);
        seg->donefd = -1;
        seg->next = l->spare;
        l->spare = seg;
        l->nspare++;
        return;
    }
    seg_unlink(l, seg->seq);
    seg_free(seg);
}

static void seg_append_list(struct qlog *l, struct qseg *seg)
{
    struct qseg **p = &l->segs;
    while (*p != NULL)
        p = &(*p)->next;
    *p = seg;
}

/* The segment's done file, opened (created) the first time; -1 if it
 * cannot be. The caller holds mu. */
static int seg_done_fd(struct qlog *l, struct qseg *seg)
{
    if (seg->donefd < 0) {
        char name[SEQ_DIGITS + 6];
        seg_name(seg->seq, true, name);
        seg->donefd = openat(l->dirfd, name,
                             O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
                             0600);
    }
    return seg->donefd;
}

/* One done line into fd (-1: none could be opened). O_APPEND and one
 * write, so lines of concurrent callers never mix. */
static void done_line_write(int fd, const char *id)
{
    char line[QUEUE_ID_SIZE + 1];
    size_t n = (size_t)snprintf(line, sizeof(line), "%s\n", id);
    if (fd < 0 || fs_write_all(fd, line, n) < 0)
        log_kv(LOG_WARN, "queue.log.done_failed", "id", id, "error",
               strerror(errno), NULL); /* a duplicate after a crash, at worst */
}

/* One done record; the caller holds mu. */
static void seg_write_done(struct qlog *l, struct qseg *seg, const char *id)
{
    done_line_write(seg_done_fd(l, seg), id);
}

/* ---- open: scan ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The ids of a done file, sorted (for bsearch); torn or bad lines are
 * skipped. */
static char **done_read(int dirfd, uint64_t seq, size_t *n_r)
{
    char name[SEQ_DIGITS + 6];
    struct buf b;
    char **ids = NULL;
    size_t n = 0, cap = 0;
    *n_r = 0;
    seg_name(seq, true, name);
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    buf_init(&b, DONE_FILE_MAX);
    char chunk[16384];
    ssize_t r;
    while ((r = read(fd, chunk, sizeof(chunk))) > 0)
        if (buf_append(&b, chunk, (size_t)r) < 0)
            break;
    close(fd);
    size_t start = 0;
    for (size_t i = 0; i < b.len; i++) {
        if (b.data[i] != '\n')
            continue;
        size_t len = i - start;
        if (len > 0 && len < QUEUE_ID_SIZE) {
            char id[QUEUE_ID_SIZE];
            memcpy(id, b.data + start, len);
            id[len] = '\0';
            if (qfile_id_valid(id)) {
                if (n == cap) {
                    cap = cap ? cap * 2 : 64;
                    ids = xreallocarray(ids, cap, sizeof(*ids));
                }
                ids[n++] = xstrdup(id);
            }
        }
        start = i + 1;
    }
    buf_free(&b);
    if (n > 0)
        qsort(ids, n, sizeof(*ids), cmp_str);
    *n_r = n;
    return ids;
}

static void scan_segment(struct qlog *l, struct qseg *seg)
{
    size_t ndone;
    char **done = done_read(l->dirfd, seg->seq, &ndone);
    struct stat st;
    uint64_t off = 0, fsize;
    struct qent *last = NULL;
    if (fstat(seg->fd, &st) < 0 || st.st_size < 0) {
        fsize = 0;
    } else {
        fsize = (uint64_t)st.st_size;
    }
    while (fsize - off >= QLOG_REC_HEADER_SIZE) {
        unsigned char h[QLOG_REC_HEADER_SIZE];
        char id[QUEUE_ID_SIZE];
        uint64_t len;
        uint32_t crc;
        if (pread(seg->fd, h, sizeof(h), (off_t)off) != (ssize_t)sizeof(h) ||
            !rec_header_parse(h, seg->seq, id, &len, &crc) ||
            len > fsize - off - QLOG_REC_HEADER_SIZE)
            break;
        const char *key = id;
        last = NULL;
        if (ndone == 0 || bsearch(&key, done, ndone, sizeof(*done), cmp_str) == NULL)
            last = ent_add(l, id, seg, off + QLOG_REC_HEADER_SIZE, len, crc);
        off += QLOG_REC_HEADER_SIZE + len;
    }
    if (last != NULL)
        last->last = true;
    seg->size = off;
    for (size_t i = 0; i < ndone; i++)
        free(done[i]);
    free(done);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

struct qlog *qlog_open(int dirfd)
{
    if (mkdirat(dirfd, "log", 0700) == 0) {
        if (fsync(dirfd) < 0)
            return NULL;
    } else if (errno != EEXIST) {
        return NULL;
    }
    int fd = fs_open_subdir(dirfd, "log");
    if (fd < 0)
        return NULL;
    char **names;
    size_t n;
    if (fs_dir_names(fd, &names, &n) < 0) {
        fs_close_keep_errno(fd);
        return NULL;
    }
    struct qlog *l = xcalloc(1, sizeof(*l));
    pthread_mutex_init(&l->mu, NULL);
    pthread_mutex_init(&l->append_mu, NULL);
    l->dirfd = fd;
    l->tabcap = 64;
    l->tab = xcalloc(l->tabcap, sizeof(*l->tab));
    uint64_t *seqs = xcalloc(n ? n : 1, sizeof(*seqs));
    size_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t seq;
        bool done;
        if (!seg_parse_name(names[i], &seq, &done))
            continue;
        if (seq >= l->next_seq)
            l->next_seq = seq + 1;
        if (!done)
            seqs[ns++] = seq;
    }
    fs_names_free(names, n);
    qsort(seqs, ns, sizeof(*seqs), cmp_u64);
    for (size_t i = 0; i < ns; i++) {
        char name[SEQ_DIGITS + 6];
        seg_name(seqs[i], false, name);
        int sfd = openat(fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (sfd < 0) {
            log_kv(LOG_WARN, "queue.log.open_failed", "segment", name, "error",
                   strerror(errno), NULL);
            continue;
        }
        struct qseg *seg = xcalloc(1, sizeof(*seg));
        seg->seq = seqs[i];
        seg->fd = sfd;
        seg->donefd = -1;
        seg->sealed = true; /* only ever appended to by the process that made it */
        seg_append_list(l, seg);
        scan_segment(l, seg);
    }
    free(seqs);
    return l;
}

/* Forgets every record and segment (the files stay). */
static void qlog_forget_all(struct qlog *l)
{
    for (size_t i = 0; i < l->tabcap; i++) {
        struct qent *e = l->tab[i];
        while (e != NULL) {
            struct qent *next = e->next;
            free(e);
            e = next;
        }
        l->tab[i] = NULL;
    }
    l->count = 0;
    struct qseg *s = l->segs;
    while (s != NULL) {
        struct qseg *next = s->next;
        seg_free(s);
        s = next;
    }
    l->segs = NULL;
    l->cur = NULL;
    s = l->spare;
    while (s != NULL) {
        struct qseg *next = s->next;
        seg_free(s);
        s = next;
    }
    l->spare = NULL;
    l->nspare = 0;
}

void qlog_close(struct qlog *l)
{
    if (l == NULL)
        return;
    qlog_forget_all(l);
    free(l->tab);
    close(l->dirfd);
    pthread_mutex_destroy(&l->mu);
    pthread_mutex_destroy(&l->append_mu);
    free(l);
}

void qlog_set_owner(struct qlog *l)
{
    pthread_mutex_lock(&l->mu);
    l->owner = true;
    pthread_mutex_unlock(&l->mu);
}

bool qlog_is_owner(const struct qlog *l) { return l->owner; }

/* ---- append ---- */

/*
 * A spare under the new sequence number seq (doc/queue.md "Segments"): the
 * rename is made durable before the old done file goes, so a crash never
 * leaves the old records under their old name without their done records.
 * NULL (the spare deleted) if it cannot be done.
 */
static struct qseg *seg_reuse(struct qlog *l, uint64_t seq)
{
    pthread_mutex_lock(&l->mu);
    struct qseg *seg = l->spare;
    if (seg != NULL) {
        l->spare = seg->next;
        l->nspare--;
    }
    pthread_mutex_unlock(&l->mu);
    if (seg == NULL)
        return NULL;
    char from[SEQ_DIGITS + 6], to[SEQ_DIGITS + 6], done[SEQ_DIGITS + 6];
    seg_name(seg->seq, false, from);
    seg_name(seq, false, to);
    seg_name(seg->seq, true, done);
    if (renameat(l->dirfd, from, l->dirfd, to) < 0 || fsync(l->dirfd) < 0) {
        log_kv(LOG_WARN, "queue.log.reuse_failed", "segment", from, "error",
               strerror(errno), NULL);
        pthread_mutex_lock(&l->mu);
        seg_unlink(l, seg->seq);
        seg_unlink(l, seq);
        pthread_mutex_unlock(&l->mu);
        seg_free(seg);
        return NULL;
    }
    unlinkat(l->dirfd, done, 0);
    seg->seq = seq;
    seg->size = 0;
    seg->live = 0;
    seg->pins = 0;
    seg->sealed = false;
    seg->next = NULL;
    return seg;
}

/* A new segment, durable by name before anything is appended to it: a
 * spare reused, else a new file. */
static struct qseg *seg_create(struct qlog *l)
{
    char name[SEQ_DIGITS + 6];
    uint64_t seq = l->next_seq++;
    struct qseg *reused = seg_reuse(l, seq);
    if (reused != NULL)
        return reused;
    seg_name(seq, false, name);
    int fd = openat(l->dirfd, name,
                    O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return NULL;
    if (fsync(l->dirfd) < 0) {
        int saved = errno;
        close(fd);
        unlinkat(l->dirfd, name, 0);
        errno = saved;
        return NULL;
    }
    struct qseg *seg = xcalloc(1, sizeof(*seg));
    seg->seq = seq;
    seg->fd = fd;
    seg->donefd = -1;
    seg->writable = true;
    return seg;
}

/* pwritev of the whole vector at off, resuming after short writes. */
static int pwritev_all(int fd, struct iovec *iov, size_t cnt, uint64_t off)
{
    while (cnt > 0) {
        int c = cnt > IOV_MAX ? IOV_MAX : (int)cnt;
        ssize_t w = pwritev(fd, iov, c, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        off += (uint64_t)w;
        size_t left = (size_t)w;
        while (cnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

static void fail_all(int *results_r, size_t n, int err)
{
    for (size_t i = 0; i < n; i++)
        results_r[i] = err;
}

static int qlog_append_locked(struct qlog *l, const struct qlog_rec *recs,
                              size_t n, int *results_r);

int qlog_append(struct qlog *l, const struct qlog_rec *recs, size_t n,
                int *results_r)
{
    if (n == 0)
        return 0;
    pthread_mutex_lock(&l->append_mu);
    int r = qlog_append_locked(l, recs, n, results_r);
    int saved = errno;
    pthread_mutex_unlock(&l->append_mu);
    errno = saved;
    return r;
}

static int qlog_append_locked(struct qlog *l, const struct qlog_rec *recs,
                              size_t n, int *results_r)
{
    if (!l->owner)
        qlog_set_owner(l); /* only the server commits */
    /* Only the holder of append_mu changes cur; others read it under mu. */
    struct qseg *seg = l->cur;
    if (seg == NULL || seg->sealed || seg->size >= QLOG_SEGMENT_MAX) {
        struct qseg *fresh = seg_create(l);
        if (fresh == NULL) {
            int err = errno != 0 ? errno : EIO;
            log_kv(LOG_ERR, "queue.log.create_failed", "error", strerror(err), NULL);
            fail_all(results_r, n, err);
            errno = err;
            return -1;
        }
        pthread_mutex_lock(&l->mu);
        if (seg != NULL) {
            seg->sealed = true;
            seg_maybe_delete(l, seg);
        }
        seg_append_list(l, fresh);
        l->cur = fresh;
        pthread_mutex_unlock(&l->mu);
        seg = fresh;
    }

    size_t cnt = n;
    for (size_t i = 0; i < n; i++)
        if (!size_add(cnt, recs[i].iovcnt, &cnt))
            abort(); /* a handful of iovecs per message of one batch */
    struct iovec *iov = xreallocarray(NULL, cnt, sizeof(*iov));
    unsigned char (*hdrs)[QLOG_REC_HEADER_SIZE] = xreallocarray(NULL, n, sizeof(*hdrs));
    uint64_t start = seg->size, end = start;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        rec_header(recs[i].id, recs[i].len, seg->seq, recs[i].crc, hdrs[i]);
        iov[k++] = (struct iovec){hdrs[i], QLOG_REC_HEADER_SIZE};
        for (size_t j = 0; j < recs[i].iovcnt; j++)
            iov[k++] = recs[i].iov[j];
        end += QLOG_REC_HEADER_SIZE + recs[i].len;
    }
    int err = 0;
    if (pwritev_all(seg->fd, iov, cnt, start) < 0) {
        err = errno != 0 ? errno : EIO;
        /* Cut the partial batch off, so no acknowledged record can ever
         * follow a torn one; if that fails, never append here again. */
        if (ftruncate(seg->fd, (off_t)start) < 0) {
            pthread_mutex_lock(&l->mu);
            seg->sealed = true;
            pthread_mutex_unlock(&l->mu);
        }
    } else if (fdatasync(seg->fd) < 0) {
        err = errno != 0 ? errno : EIO;
        /* The bytes may or may not be on disk: their clients get a 4xx and
         * send again, so a restart must not deliver them too. */
        pthread_mutex_lock(&l->mu);
        seg->size = end;
        seg->sealed = true;
        for (size_t i = 0; i < n; i++)
            seg_write_done(l, seg, recs[i].id);
        pthread_mutex_unlock(&l->mu);
    }
    free(iov);
    free(hdrs);
    if (err != 0) {
        log_kv(LOG_ERR, "queue.log.append_failed", "error", strerror(err), NULL);
        fail_all(results_r, n, err);
        errno = err;
        return -1;
    }
    pthread_mutex_lock(&l->mu);
    uint64_t off = start;
    for (size_t i = 0; i < n; i++) {
        /* The caller checked the id is not live; if it were, the older
         * record wins and this one is marked done. */
        if (!ent_add(l, recs[i].id, seg, off + QLOG_REC_HEADER_SIZE, recs[i].len,
                     recs[i].crc)) {
            seg_write_done(l, seg, recs[i].id);
            results_r[i] = EEXIST;
        } else {
            results_r[i] = 0;
        }
        off += QLOG_REC_HEADER_SIZE + recs[i].len;
    }
    seg->size = end;
    pthread_mutex_unlock(&l->mu);
    for (size_t i = 0; i < n; i++)
        if (results_r[i] != 0) {
            errno = results_r[i];
            return -1;
        }
    return 0;
}

/* ---- lookups ---- */

bool qlog_has(struct qlog *l, const char *id)
{
    pthread_mutex_lock(&l->mu);
    bool has = *ent_slot(l, id) != NULL;
    pthread_mutex_unlock(&l->mu);
    return has;
}

int qlog_pin(struct qlog *l, const char *id, struct qlog_ref *ref_r)
{
    pthread_mutex_lock(&l->mu);
    struct qent *e = *ent_slot(l, id);
    if (e == NULL) {
        pthread_mutex_unlock(&l->mu);
        errno = ENOENT;
        return -1;
    }
    e->seg->pins++;
    *ref_r = (struct qlog_ref){.fd = e->seg->fd, .off = e->off, .len = e->len,
                               .crc = e->crc, .seg = e->seg};
    pthread_mutex_unlock(&l->mu);
    return 0;
}

void qlog_unpin(struct qlog *l, struct qlog_ref *ref)
{
    if (ref == NULL || ref->seg == NULL)
        return;
    pthread_mutex_lock(&l->mu);
    struct qseg *seg = ref->seg;
    seg->pins--;
    seg_maybe_delete(l, seg);
    pthread_mutex_unlock(&l->mu);
    ref->seg = NULL;
    ref->fd = -1;
}

int qlog_done(struct qlog *l, const char *id)
{
    pthread_mutex_lock(&l->mu);
    struct qent **slot = ent_slot(l, id);
    struct qent *e = *slot;
    if (e == NULL) {
        pthread_mutex_unlock(&l->mu);
        errno = ENOENT;
        return -1;
    }
    *slot = e->next;
    l->count--;
    struct qseg *seg = e->seg;
    bool owner = l->owner;
    int fd = owner ? seg_done_fd(l, seg) : -1;
    pthread_mutex_unlock(&l->mu);
    /* The write is made outside the lock, which the event loop and the
     * commit thread take for every message, so a delivery thread preempted
     * in it (they run at a lower priority) holds up nobody. The segment
     * cannot retire meanwhile, and so its done file cannot close: this
     * record still counts as live in it until the line is written. */
    if (owner)
        done_line_write(fd, id);
    pthread_mutex_lock(&l->mu);
    seg->live--;
    seg_maybe_delete(l, seg);
    pthread_mutex_unlock(&l->mu);
    free(e);
    return 0;
}

int qlog_list(struct qlog *l, void (*cb)(const char *id, void *arg), void *arg)
{
    pthread_mutex_lock(&l->mu);
    size_t n = 0;
    char (*ids)[QUEUE_ID_SIZE] = xreallocarray(NULL, l->count ? l->count : 1,
                                               sizeof(*ids));
    for (size_t i = 0; i < l->tabcap; i++)
        for (struct qent *e = l->tab[i]; e != NULL; e = e->next)
            memcpy(ids[n++], e->id, QUEUE_ID_SIZE);
    pthread_mutex_unlock(&l->mu);
    for (size_t i = 0; i < n; i++)
        cb(ids[i], arg);
    free(ids);
    return 0;
}

/* ---- recovery ---- */

int qlog_recover(struct qlog *l,
                 int (*copy)(const char *id, const struct qlog_ref *ref, void *arg),
                 int (*flush)(void *arg), void *arg)
{
    size_t copied = 0;
    pthread_mutex_lock(&l->mu);
    for (struct qseg *seg = l->segs; seg != NULL; seg = seg->next) {
        for (size_t i = 0; i < l->tabcap; i++) {
            for (struct qent *e = l->tab[i]; e != NULL; e = e->next) {
                if (e->seg != seg)
                    continue;
                struct qlog_ref ref = {.fd = seg->fd, .off = e->off, .len = e->len,
                                       .crc = e->crc, .last = e->last, .seg = seg};
                if (copy(e->id, &ref, arg) < 0) {
                    int saved = errno;
                    pthread_mutex_unlock(&l->mu);
                    errno = saved;
                    return -1;
                }
                copied++;
            }
        }
    }
    pthread_mutex_unlock(&l->mu);
    if (copied > 0 && flush(arg) < 0)
        return -1;

    /* Every record is now a file in msg/ (or was one already): the log's
     * files go, done files and strays included. */
    pthread_mutex_lock(&l->mu);
    qlog_forget_all(l);
    pthread_mutex_unlock(&l->mu);
    char **names;
    size_t n;
    if (fs_dir_names(l->dirfd, &names, &n) < 0)
        return -1;
    bool changed = false;
    for (size_t i = 0; i < n; i++) {
        uint64_t seq;
        bool done;
        if (!seg_parse_name(names[i], &seq, &done)) {
            log_kv(LOG_WARN, "queue.recover.unknown", "dir", "log", "name",
                   names[i], NULL);
            continue;
        }
        if (unlinkat(l->dirfd, names[i], 0) < 0)
            log_kv(LOG_ERR, "queue.recover.error", "dir", "log", "name", names[i],
                   "error", strerror(errno), NULL);
        changed = true;
    }
    fs_names_free(names, n);
    if (changed && fsync(l->dirfd) < 0)
        return -1;
    if (copied > 0) {
        char num[24];
        snprintf(num, sizeof(num), "%zu", copied);
        log_kv(LOG_INFO, "queue.recover.log", "messages", num, NULL);
    }
    return 0;
}
