/*
 * deliver_maildir: the Maildir backend's delivery, in the two steps of
 * store.h (store_deliver_begin, store_deliver_commit; store_deliver is the
 * two for one message): the unique name, the unnamed (or tmp/) file and
 * its content, then the flush (an fsync, or one syncfs for a batch), the
 * name in new/, the shared fsync of new/, the index row and the usage
 * line. The order, and what a crash between any two steps leaves, are in
 * doc/store.md "Delivery" and "Batched delivery"; the invariant is that a
 * name appears in new/ only for a file whose data is already on disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/random.h"
#include "lib/xalloc.h"
#include "store/store_backend.h"

#define COPY_CHUNK (64u * 1024u)
/* ",S=" + 20 digits + ",W=" + 20 digits + NUL */
#define SIZES_ROOM 47
/* A syncfs that takes longer than this is logged: the filesystem holds
 * someone else's unwritten data too (doc/store.md "Batched delivery"). */
#define SYNCFS_SLOW_MS 1000

static struct mdstore *MD(struct store *s) { return (struct mdstore *)s; }

/* What unique names take from the system without a system call per
 * delivery: the pid, remembered (a forked child forgets its parent's), and
 * the R part from random_fill_unique's pool. */
static _Atomic pid_t md_pid_cached;
static pthread_once_t md_pid_once = PTHREAD_ONCE_INIT;

static void md_forget_at_fork(void)
{
    atomic_store(&md_pid_cached, 0);
}

static void md_pid_init(void)
{
    pthread_atfork(NULL, NULL, md_forget_at_fork);
}

static pid_t md_pid(void)
{
    pid_t pid = atomic_load_explicit(&md_pid_cached, memory_order_relaxed);
    if (pid == 0) {
        pthread_once(&md_pid_once, md_pid_init);
        pid = getpid();
        atomic_store_explicit(&md_pid_cached, pid, memory_order_relaxed);
    }
    return pid;
}

static uint64_t md_random64(void)
{
    uint64_t v;
    random_fill_unique(&v, sizeof(v)); /* never fails */
    return v;
}

/* One step of a delivery on the folder's directories: a descriptor or 0
 * on success, -1 with errno. */
typedef int (*md_dir_op)(const struct md_dir *d, const void *arg);

/* Runs op on *d. A folder removed since the cache's check (ENOENT: a
 * mailbox deleted) gets a fresh walk, which makes the Maildir again, and op
 * one more try; *d is replaced then (NULL if the walk fails). */
static int md_on_fresh_dir(struct mdstore *s, const struct mdpath *p,
                           struct md_dir **d, md_dir_op op, const void *arg)
{
    for (int attempt = 0;; attempt++) {
        int r = op(*d, arg);
        if (r >= 0 || errno != ENOENT || attempt == 1)
            return r;
        md_dir_put(s, *d, true);
        if ((*d = md_dir_get(s, p, true)) == NULL)
            return -1;
    }
}

/* tmp/<name>, the classic Maildir way. */
static int md_op_create_tmp(const struct md_dir *d, const void *name)
{
    return openat(d->tmpfd, name,
                  O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
}

/*
 * An unnamed file in the folder's new/ (O_TMPFILE): it gets its name there
 * with md_op_link_anon once it is complete and on disk, so a delivery makes
 * one directory entry instead of a tmp/ entry and a rename, and a crash
 * leaves nothing behind (doc/store.md "Delivery"). -1 with errno EOPNOTSUPP,
 * EISDIR or EINVAL where the filesystem or kernel cannot (the caller uses
 * tmp/).
 */
static int md_op_create_anon(const struct md_dir *d, const void *unused)
{
    (void)unused;
    return openat(d->newfd, ".", O_WRONLY | O_TMPFILE | O_CLOEXEC, 0600);
}

struct md_link {
    int fd;
    const char *name;
};

/* Names the unnamed file new/<name>: linkat through /proc (no capability
 * needed, unlike AT_EMPTY_PATH), which never replaces a name (EEXIST). */
static int md_op_link_anon(const struct md_dir *d, const void *arg)
{
    const struct md_link *l = arg;
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", l->fd);
    return linkat(AT_FDCWD, path, d->newfd, l->name, AT_SYMLINK_FOLLOW);
}

/* Whether the folder has an index: one fstatat on the directory we hold,
 * so a folder without one (mailboxes get it when POP3 or IMAP first opens
 * them) costs no SQLite open. Anything but a clear "no such file" counts
 * as yes, and SQLite decides; *known_r says whether sb_r is the file. */
static bool md_has_index(const struct md_dir *d, struct stat *sb_r,
                         bool *known_r)
{
    *known_r = md_index_stat(d, sb_r) == 0;
    return *known_r || errno != ENOENT;
}


/* ================= the flusher (store.h store_flush_new) ================= */

/* syncfs reports writeback errors (through the descriptor it is given)
 * since Linux 5.8; before, it returned 0 whatever happened. */
static bool md_syncfs_reports_errors(void)
{
    struct utsname u;
    unsigned major = 0, minor = 0;
    if (uname(&u) < 0 || sscanf(u.release, "%u.%u", &major, &minor) != 2)
        return false;
    return major > 5 || (major == 5 && minor >= 8);
}

struct store_flush *store_flush_new(void)
{
    struct store_flush *fl = xcalloc(1, sizeof(*fl));
    fl->syncfs_ok = md_syncfs_reports_errors();
    return fl;
}

void store_flush_free(struct store_flush *fl)
{
    if (fl == NULL)
        return;
    for (size_t i = 0; i < fl->n; i++)
        if (fl->fd[i] >= 0)
            close(fl->fd[i]);
    free(fl);
}

/* Filesystems whose syncfs writes every dirty page and inode to stable
 * storage and reports the errors on the way (doc/store.md "Batched
 * delivery"). Not FUSE (its syncfs sends the daemon no flush, its fsync
 * does), not overlayfs (older kernels lose the upper layer's errors), not
 * network filesystems: there every message gets its own fsync. */
static bool md_syncfs_trusted(int fd)
{
    struct statfs sf;
    if (fstatfs(fd, &sf) < 0)
        return false;
    switch ((unsigned long)sf.f_type) {
    case EXT4_SUPER_MAGIC: /* ext2, ext3 and ext4 share it */
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC:
    case TMPFS_MAGIC:
        return true;
    default:
        return false;
    }
}

int store_flush_slot(struct store_flush *fl, dev_t dev, int dirfd)
{
    if (fl == NULL || !fl->syncfs_ok)
        return -1;
    for (size_t i = 0; i < fl->n; i++)
        if (fl->dev[i] == dev)
            return fl->fd[i] >= 0 ? (int)i : -1;
    if (fl->n == STORE_FLUSH_DEVS)
        return -1;
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    /* The descriptor must be on the file's own filesystem (a tmp/ can be
     * a mount of its own), and one whose syncfs is trusted; a filesystem
     * that is not keeps a slot with no descriptor, so it is asked once. */
    struct stat sb;
    if (fstat(fd, &sb) < 0 || sb.st_dev != dev) {
        close(fd);
        return -1;
    }
    if (!md_syncfs_trusted(fd)) {
        close(fd);
        fd = -1;
    }
    fl->dev[fl->n] = dev;
    fl->fd[fl->n] = fd;
    fl->n++;
    return fd >= 0 ? (int)fl->n - 1 : -1;
}

/* ================= begin ================= */

/* A message written and not yet named (store_deliver_begin). */
struct md_pending {
    struct store_pending base;
    struct mdpath p;
    struct md_dir *d;          /* held until commit or abort */
    int fd;                    /* the file; -1 once closed */
    bool anon;                 /* unnamed in new/, else tmp/<tmpname> */
    int slot;                  /* its filesystem's flusher slot, or -1 */
    uint64_t size, vsize;
    char tmpname[NAME_MAX + 1];
    char name[NAME_MAX + 32];  /* its name in new/ */
    /* commit's state */
    int err;
    bool named;                /* the name is in new/ */
    bool dir_synced;           /* new/ fsync'd after the name */
};

/* Closes and removes what a pending delivery wrote: an unnamed file goes
 * with its descriptor, a tmp/ file is unlinked. The name in new/, if any,
 * is the caller's. */
static void md_pending_unwrite(struct md_pending *mp)
{
    if (mp->fd >= 0)
        close(mp->fd);
    mp->fd = -1;
    if (!mp->anon && mp->d != NULL)
        unlinkat(mp->d->tmpfd, mp->tmpname, 0);
}

static void md_pending_free(struct mdstore *s, struct md_pending *mp)
{
    /* ENOENT: the folder went away under us; the next delivery walks. */
    md_dir_put(s, mp->d, mp->err == ENOENT);
    free(mp);
}

int md_deliver_begin(struct store *st, struct store_flush *fl,
                     const char *mailbox, const char *folder,
                     const char *prefix, size_t prefix_len, store_read_fn rd,
                     void *rd_arg, size_t uid_cap, struct store_pending **p_r)
{
    struct mdstore *s = MD(st);
    struct md_pending *mp = xcalloc(1, sizeof(*mp));
    mp->base.store = st;
    mp->fd = -1;
    mp->slot = -1;
    int err = 0;
    char *chunk = NULL;

    if (md_names(mailbox, folder, &mp->p) < 0) {
        free(mp);
        return -1;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    unsigned long q = atomic_fetch_add(&s->counter, 1);
    pid_t pid = md_pid();
    uint64_t rnd = md_random64();
    int n = snprintf(mp->tmpname, sizeof(mp->tmpname), "%lld.M%06ldP%ldQ%luR%016llx.%s",
                     (long long)tv.tv_sec, (long)tv.tv_usec, (long)pid, q,
                     (unsigned long long)rnd, s->host);
    /* ",S=" and ",W=" with up to 20 digits each must still fit, in the
     * name and in a uid of STORE_UID_SIZE. */
    if (n < 0 || (size_t)n + SIZES_ROOM > sizeof(mp->tmpname) ||
        (size_t)n + SIZES_ROOM > STORE_UID_SIZE) {
        free(mp);
        errno = ENAMETOOLONG;
        return -1;
    }
    if (uid_cap != 0 && uid_cap < (size_t)n + SIZES_ROOM) {
        free(mp);
        errno = ERANGE;
        return -1;
    }
    if ((mp->d = md_dir_get(s, &mp->p, true)) == NULL) {
        err = errno;
        free(mp);
        errno = err;
        return -1;
    }
    /* Unnamed in new/ where /proc is there to name it (the cache knows:
     * it read the folder's path there), else the classic tmp/ file. */
    mp->anon = mp->d->real != NULL;
    if (mp->anon) {
        mp->fd = md_on_fresh_dir(s, &mp->p, &mp->d, md_op_create_anon, NULL);
        if (mp->fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL) &&
            mp->d != NULL)
            mp->anon = false;
    }
    if (!mp->anon)
        mp->fd = md_on_fresh_dir(s, &mp->p, &mp->d, md_op_create_tmp, mp->tmpname);
    if (mp->fd < 0) {
        err = errno;
        goto fail_nofile;
    }
    /* The flusher's descriptor for this filesystem exists before the
     * first byte is written, so its syncfs reports any error in it. */
    struct stat sb;
    if (fl != NULL && fstat(mp->fd, &sb) == 0)
        mp->slot = store_flush_slot(fl, sb.st_dev, mp->d->newfd);

    struct store_crlf crlf;
    store_crlf_init(&crlf);
    store_crlf_feed(&crlf, prefix, prefix_len);
    chunk = xmalloc(COPY_CHUNK);
    /* A short prefix goes out with the first piece of the body: one write
     * for a small message. */
    size_t fill = 0;
    if (prefix_len > 0 && prefix_len <= COPY_CHUNK / 2) {
        memcpy(chunk, prefix, prefix_len);
        fill = prefix_len;
    } else if (prefix_len > 0 && fs_write_all(mp->fd, prefix, prefix_len) < 0) {
        err = errno;
        goto fail;
    }
    mp->size = prefix_len;
    for (;;) {
        ssize_t r = rd(rd_arg, chunk + fill, COPY_CHUNK - fill);
        if (r < 0 || (size_t)r > COPY_CHUNK - fill) {
            err = r < 0 && errno != 0 ? errno : EIO;
            goto fail;
        }
        if ((size_t)r + fill > 0 && fs_write_all(mp->fd, chunk, fill + (size_t)r) < 0) {
            err = errno;
            goto fail;
        }
        store_crlf_feed(&crlf, chunk + fill, (size_t)r);
        fill = 0;
        if (r == 0)
            break;
        mp->size += (uint64_t)r;
    }
    free(chunk);
    /* Fits in NAME_MAX: SIZES_ROOM bytes were kept free above. W= is the
     * size as CRLF text (Dovecot's virtual size): equal to S= for what
     * SMTP gave us, but written always, as Dovecot does, so a reader never
     * has to read the file to know it. */
    mp->vsize = store_crlf_finish(&crlf);
    snprintf(mp->name, sizeof(mp->name), "%s,S=%llu,W=%llu", mp->tmpname,
             (unsigned long long)mp->size, (unsigned long long)mp->vsize);
    *p_r = &mp->base;
    return 0;
fail:
    free(chunk);
    md_pending_unwrite(mp);
fail_nofile: /* nothing of ours to remove: a tmp/ name that failed O_EXCL
                is someone else's */
    mp->err = err;
    md_pending_free(s, mp);
    errno = err;
    return -1;
}

void md_deliver_abort(struct store_pending *p)
{
    struct md_pending *mp = (struct md_pending *)p;
    md_pending_unwrite(mp);
    md_pending_free(MD(p->store), mp);
}

/* ================= commit ================= */

/* Step 1: every file's data on disk. Two or more messages on one
 * filesystem of the flusher: one syncfs for them all (its error fails each
 * of them); any other: its own fsync. A tmp/ file is closed then (its
 * error counts: NFS reports write errors there). */
static void md_commit_flush(struct store_flush *fl, struct md_pending **mp, size_t n)
{
    size_t count[STORE_FLUSH_DEVS] = {0};
    int slot_err[STORE_FLUSH_DEVS] = {0};
    bool slot_done[STORE_FLUSH_DEVS] = {false};
    for (size_t i = 0; i < n; i++)
        if (mp[i]->slot >= 0)
            count[mp[i]->slot]++;
    for (size_t i = 0; i < n; i++) {
        int slot = mp[i]->slot, err = 0;
        if (slot >= 0 && count[slot] >= 2) {
            if (!slot_done[slot]) {
                struct timespec t0, t1;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                if (syncfs(fl->fd[slot]) < 0)
                    slot_err[slot] = errno != 0 ? errno : EIO;
                clock_gettime(CLOCK_MONOTONIC, &t1);
                slot_done[slot] = true;
                long long ms = (long long)(t1.tv_sec - t0.tv_sec) * 1000 +
                               (t1.tv_nsec - t0.tv_nsec) / 1000000;
                if (ms >= SYNCFS_SLOW_MS) {
                    char text[32];
                    snprintf(text, sizeof(text), "%lld", ms);
                    log_kv(LOG_WARN, "store.syncfs_slow", "ms", text, "hint",
                           "the filesystem holds other unwritten data; "
                           "limit delivery-batch 1 flushes each message alone",
                           NULL);
                }
            }
            err = slot_err[slot];
        } else if (fsync(mp[i]->fd) < 0) {
            err = errno != 0 ? errno : EIO;
        }
        if (err == 0 && !mp[i]->anon) {
            int cfd = mp[i]->fd;
            mp[i]->fd = -1;
            if (close(cfd) < 0)
                err = errno != 0 ? errno : EIO;
        }
        if (err != 0) {
            md_pending_unwrite(mp[i]);
            mp[i]->err = err;
        }
    }
}

/* Gives a flushed file its name in new/: never replaces one (the name is
 * unique by construction, and the kernel checks it: linkat always,
 * renameat2 where the filesystem supports it). 0, or -1 with errno and
 * nothing named. */
static int md_commit_name(struct mdstore *s, struct md_pending *mp)
{
    if (mp->anon) {
        struct md_link link = {mp->fd, mp->name};
        if (md_on_fresh_dir(s, &mp->p, &mp->d, md_op_link_anon, &link) < 0)
            return -1;
        int cfd = mp->fd;
        mp->fd = -1;
        if (close(cfd) < 0) { /* its error counts (NFS): take the name back */
            int err = errno;
            unlinkat(mp->d->newfd, mp->name, 0);
            errno = err;
            return -1;
        }
    } else if (renameat2(mp->d->tmpfd, mp->tmpname, mp->d->newfd, mp->name,
                         RENAME_NOREPLACE) < 0) {
        if ((errno != EINVAL && errno != ENOSYS) ||
            renameat(mp->d->tmpfd, mp->tmpname, mp->d->newfd, mp->name) < 0)
            return -1;
    }
    mp->named = true;
    return 0;
}

/* After a failure to name or to fsync new/: nothing of it stays, so the
 * caller's retry makes no second copy. */
static void md_commit_fail(struct md_pending *mp, int err)
{
    if (mp->named)
        unlinkat(mp->d->newfd, mp->name, 0);
    mp->named = false;
    md_pending_unwrite(mp);
    mp->err = err != 0 ? err : EIO;
}

/* A folder with an index: its write lock spans the name and the fsync of
 * new/, so a reader syncing the index never sees the file without its row
 * (doc/store.md "UIDs at delivery"). One message at a time. */
static void md_commit_indexed(struct mdstore *s, struct md_pending *mp,
                              const struct stat *isb)
{
    struct md_itx *itx = md_index_begin(s, &mp->p, mp->d, isb);
    if (md_commit_name(s, mp) < 0) {
        md_commit_fail(mp, errno);
    } else if (md_dir_sync_new(mp->d) < 0) {
        md_commit_fail(mp, errno);
    } else {
        mp->dir_synced = true;
        md_index_end(itx, mp->name, mp->size, mp->vsize, true);
        return;
    }
    md_index_end(itx, NULL, 0, 0, false);
}

/* The first of mp[0..i] in the same folder as mp[i] (i itself if none);
 * with `ok`, among those delivered only. */
static size_t md_first_in_folder(struct md_pending **mp, size_t i, bool ok)
{
    for (size_t k = 0; k < i; k++)
        if (mp[k]->d == mp[i]->d && (!ok || mp[k]->err == 0))
            return k;
    return i;
}

void md_deliver_commit(struct store *st, struct store_flush *fl,
                       struct store_commit *v, struct store_qstate *qs, size_t n)
{
    struct mdstore *s = MD(st);
    struct md_pending **mp = xcalloc(n, sizeof(*mp));
    for (size_t i = 0; i < n; i++) {
        mp[i] = (struct md_pending *)v[i].p;
        mp[i]->err = 0;
    }
    md_commit_flush(fl, mp, n);

    /* Names, then one fsync of each new/ for all the names in it; a
     * folder with an index takes its messages one at a time. Without an
     * index the next open assigns the UID; an index made by a reader
     * after this look gives it at its next sync. */
    bool *indexed = xcalloc(n, sizeof(*indexed));
    bool *looked = xcalloc(n, sizeof(*looked));
    struct stat *isb = xcalloc(n, sizeof(*isb));
    bool *isb_known = xcalloc(n, sizeof(*isb_known));
    for (size_t i = 0; i < n; i++) {
        if (mp[i]->err != 0)
            continue;
        /* One look for the index per folder and batch. */
        size_t f = md_first_in_folder(mp, i, false);
        if (!looked[f]) {
            indexed[f] = md_has_index(mp[f]->d, &isb[f], &isb_known[f]);
            looked[f] = true;
        }
        indexed[i] = indexed[f];
        isb[i] = isb[f];
        isb_known[i] = isb_known[f];
        if (!indexed[i] && md_commit_name(s, mp[i]) < 0)
            md_commit_fail(mp[i], errno);
    }
    for (size_t i = 0; i < n; i++) {
        if (mp[i]->err != 0 || indexed[i] || mp[i]->dir_synced)
            continue;
        /* One fsync, started after every name given above, covers all the
         * messages of the batch in this folder. */
        int r = md_dir_sync_new(mp[i]->d), err = errno;
        for (size_t k = i; k < n; k++) {
            if (mp[k]->err != 0 || indexed[k] || mp[k]->d != mp[i]->d)
                continue;
            if (r < 0)
                md_commit_fail(mp[k], err);
            else
                mp[k]->dir_synced = true;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (mp[i]->err == 0 && indexed[i])
            md_commit_indexed(s, mp[i], isb_known[i] ? &isb[i] : NULL);

    /* The usage line and the quota warning state: once per folder for
     * the batch's messages in it. */
    for (size_t i = 0; i < n; i++) {
        struct md_pending *m = mp[i];
        v[i].err = m->err;
        if (m->err != 0)
            continue;
        /* Fits: begin kept the name within STORE_UID_SIZE. */
        size_t len = strnlen(m->name, sizeof(v[i].uid) - 1);
        memcpy(v[i].uid, m->name, len);
        v[i].uid[len] = '\0';
        size_t f = md_first_in_folder(mp, i, true);
        if (f != i) {
            qs[i] = qs[f];
            continue;
        }
        int64_t bytes = 0, count = 0;
        for (size_t k = i; k < n; k++) {
            if (mp[k]->err == 0 && mp[k]->d == m->d && mp[k]->size <= INT64_MAX / 2 &&
                bytes <= INT64_MAX / 2) {
                bytes += (int64_t)mp[k]->size;
                count++;
            }
        }
        md_usage_add(m->d->newfd, true, m->p.folder[0] != '\0', bytes, count);
        /* The quota warning state sits in the INBOX Maildir: the parent
         * of this new/, or of its folder. */
        if (md_quota_state_peek_at(m->d->newfd,
                                   m->p.folder[0] == '\0'
                                       ? "../" MD_QUOTA_STATE_FILE
                                       : "../../" MD_QUOTA_STATE_FILE,
                                   &qs[i]) < 0)
            qs[i] = (struct store_qstate){STORE_QWARN_ARMED, 0, 0};
    }
    for (size_t i = 0; i < n; i++) {
        md_pending_free(s, mp[i]);
        v[i].p = NULL;
    }
    free(indexed);
    free(looked);
    free(isb);
    free(isb_known);
    free(mp);
}
