/*
 * dircache_maildir: the Maildir backend's cache of open folder directories
 * (store_backend.h "the directory cache", doc/store.md "The directory
 * cache"). A delivery used to open root, domain, local part, folder, tmp/
 * and new/ and close them again for every message; with the cache it makes
 * two cheap checks on directories it already holds.
 *
 * Why the check is enough. The entry holds new/ open, so its inode cannot
 * be freed and its number cannot go to a new directory while we hold it.
 * 1. fstatat of "<root>/<key>/new" (the configured root, followed like
 *    the walk follows it) must give our st_dev/st_ino: the path names the
 *    directory we hold. A folder removed, renamed away or replaced by
 *    another directory fails this.
 * 2. readlink of /proc/self/fd/<new/> must be the real path the entry
 *    recorded when the walk made it: the directory still sits at that place,
 *    and since the kernel gives the path of real directory entries, a
 *    symbolic link put in the way since (which 1 would follow) fails this.
 * Anything else (an error, /proc missing) means no cache: the walk of
 * md_walk, with its O_NOFOLLOW at every level, as before.
 *
 * tmp/ is not checked: a file there is invisible until it is renamed into
 * the checked new/; a tmp/ removed makes the create fail with ENOENT, which
 * the caller answers by dropping the entry and walking again.
 *
 * Locking: one mutex for the table, the LRU list and the reference counts;
 * no system call is made while it is held except the closes of an
 * eviction, which are done after it is released.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/fsutil.h"
#include "lib/hash.h"
#include "lib/xalloc.h"
#include "store/index_sqlite.h"
#include "store/store_backend.h"

#define NBUCKETS 512 /* a power of two, at least 2 * MD_DIRCACHE_MAX */
/* "domain/local/.folder" */
#define KEY_MAX (STORE_DOMAIN_MAX + 1 + STORE_LOCAL_MAX + 1 + STORE_FOLDER_MAX + 2)

struct md_dent {
    struct md_dir pub;   /* first: md_dir_put casts back */
    char *key;           /* domain/local[/.folder] */
    char *check;         /* <root>/<key>/new, for the fstatat */
    char *realnew;       /* new/'s real path when the walk opened it */
    size_t realnew_len;
    dev_t dev;
    ino_t ino;
    uint32_t hash;
    unsigned refs;       /* users holding it */
    /* Group commit of new/ (md_dir_sync_new): renames counted, the count
     * the last good fsync covered, the count the last failed one should
     * have covered, and whether one is running. */
    pthread_mutex_t smu;
    pthread_cond_t scv;
    uint64_t renamed, synced, failed;
    int fail_err;
    bool syncing;
    /* The folder's index connection kept for the next delivery
     * (md_dir_index_take), under smu, and the index file it is on. */
    struct idx *ix;
    dev_t ix_dev;
    ino_t ix_ino;
    struct md_dircache *cache;
    bool listed;         /* in the table (else freed at refs == 0) */
    struct md_dent *hnext, *prev, *next; /* bucket chain; LRU list */
};

struct md_dircache {
    pthread_mutex_t mu;
    size_t cap, n;
    /* Index connections kept in entries, and how many may be. */
    atomic_size_t ix_n;
    size_t ix_cap;
    struct md_dent *bucket[NBUCKETS];
    struct md_dent *mru, *lru;
};

static struct md_dent *DENT(struct md_dir *d) { return (struct md_dent *)d; }

struct md_dircache *md_dircache_new(void)
{
    struct md_dircache *c = xcalloc(1, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    /* Two descriptors an entry, at most a sixteenth of the limit (an
     * eighth of the descriptors), so a server with the usual 1024 keeps
     * room for its sessions: 64 entries then. */
    struct rlimit rl;
    c->cap = MD_DIRCACHE_MAX;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur / 16 < c->cap)
        c->cap = (size_t)(rl.rlim_cur / 16);
    /* Three descriptors a connection (database, WAL, shared memory). */
    c->ix_cap = c->cap / 4 < MD_INDEX_KEEP_MAX ? c->cap / 4 : MD_INDEX_KEEP_MAX;
    atomic_init(&c->ix_n, 0);
    return c;
}

static void dent_free(struct md_dent *e)
{
    if (e->ix != NULL) {
        idx_close(e->ix);
        atomic_fetch_sub(&e->cache->ix_n, 1);
    }
    pthread_mutex_destroy(&e->smu);
    pthread_cond_destroy(&e->scv);
    if (e->pub.tmpfd >= 0)
        close(e->pub.tmpfd);
    if (e->pub.newfd >= 0)
        close(e->pub.newfd);
    free((char *)e->pub.real);
    free(e->key);
    free(e->check);
    free(e->realnew);
    free(e);
}

/* ---- table and LRU list (mutex held) ---- */

static struct md_dent **bucket_of(struct md_dircache *c, uint32_t h)
{
    return &c->bucket[h & (NBUCKETS - 1)];
}

static struct md_dent *find(struct md_dircache *c, const char *key, uint32_t h)
{
    for (struct md_dent *e = *bucket_of(c, h); e != NULL; e = e->hnext)
        if (e->hash == h && strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static void lru_unlink(struct md_dircache *c, struct md_dent *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        c->mru = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        c->lru = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(struct md_dircache *c, struct md_dent *e)
{
    e->prev = NULL;
    e->next = c->mru;
    if (c->mru != NULL)
        c->mru->prev = e;
    c->mru = e;
    if (c->lru == NULL)
        c->lru = e;
}

/* Out of the table; onto *dead (chained through hnext) when nobody holds
 * it, to be freed once the mutex is released. */
static void unlist(struct md_dircache *c, struct md_dent *e,
                   struct md_dent **dead)
{
    struct md_dent **pp = bucket_of(c, e->hash);
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    e->hnext = NULL;
    lru_unlink(c, e);
    e->listed = false;
    c->n--;
    if (e->refs == 0) {
        e->hnext = *dead;
        *dead = e;
    }
}

static void free_dead(struct md_dent *dead)
{
    while (dead != NULL) {
        struct md_dent *next = dead->hnext;
        dent_free(dead);
        dead = next;
    }
}

/* ---- opening ---- */

static void make_key(const struct mdpath *p, char key[KEY_MAX + 1])
{
    if (p->folder[0] == '\0')
        snprintf(key, KEY_MAX + 1, "%s/%s", p->domain, p->local);
    else
        snprintf(key, KEY_MAX + 1, "%s/%s/%s", p->domain, p->local, p->folder);
}

/* The Maildir's tmp/ and new/ descriptors by a walk (md_walk: no link
 * followed below root), creating it if missing and asked to. */
static int walk_open(struct mdstore *s, const struct mdpath *p, bool create,
                     int *tmp_r, int *new_r)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = md_walk(s, p);
        if (fd >= 0) {
            int tfd = fs_open_subdir(fd, "tmp");
            int nfd = tfd >= 0 ? fs_open_subdir(fd, "new") : -1;
            fs_close_keep_errno(fd);
            if (nfd >= 0) {
                *tmp_r = tfd;
                *new_r = nfd;
                return 0;
            }
            if (tfd >= 0)
                fs_close_keep_errno(tfd);
        }
        /* Only a missing piece is created; a symlink (ELOOP, ENOTDIR) or
         * a permission problem is an error. */
        if (errno != ENOENT || !create || attempt == 1 || md_create(s, p) < 0)
            return -1;
    }
    return -1;
}

/* The real path of an open directory, from /proc (malloc'd), or NULL. */
static char *fd_path(int fd, size_t *len_r)
{
    char link[32], buf[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, buf, sizeof(buf));
    if (n <= 0 || (size_t)n >= sizeof(buf) || buf[0] != '/')
        return NULL;
    *len_r = (size_t)n;
    return xstrndup(buf, (size_t)n);
}

/* The two checks of the file comment. */
static bool still_valid(const struct md_dent *e)
{
    struct stat sb;
    if (fstatat(AT_FDCWD, e->check, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
        sb.st_dev != e->dev || sb.st_ino != e->ino)
        return false;
    char link[32], buf[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", e->pub.newfd);
    ssize_t n = readlink(link, buf, sizeof(buf));
    return n > 0 && (size_t)n == e->realnew_len &&
           memcmp(buf, e->realnew, (size_t)n) == 0;
}

/* A fresh walk, then into the table (replacing an entry another thread
 * made meanwhile, evicting the least recently used beyond the cap). */
static struct md_dir *walk_new(struct mdstore *s, const struct mdpath *p,
                               const char *key, uint32_t h, bool create)
{
    struct md_dircache *c = s->dcache;
    int tfd, nfd;
    if (walk_open(s, p, create, &tfd, &nfd) < 0) {
        if (errno != EMFILE && errno != ENFILE)
            return NULL;
        /* Our idle descriptors must not be what makes a delivery fail. */
        md_dircache_flush(c);
        if (walk_open(s, p, create, &tfd, &nfd) < 0)
            return NULL;
    }
    struct md_dent *e = xcalloc(1, sizeof(*e));
    pthread_mutex_init(&e->smu, NULL);
    pthread_cond_init(&e->scv, NULL);
    e->cache = c;
    e->pub.tmpfd = tfd;
    e->pub.newfd = nfd;
    e->hash = h;
    e->refs = 1;
    struct stat sb;
    bool cacheable = c->cap > 0 && fstat(nfd, &sb) == 0 &&
                     (e->realnew = fd_path(nfd, &e->realnew_len)) != NULL &&
                     e->realnew_len > 4 &&
                     strcmp(e->realnew + e->realnew_len - 4, "/new") == 0;
    if (e->realnew != NULL && e->realnew_len > 4)
        e->pub.real = xstrndup(e->realnew, e->realnew_len - 4);
    if (!cacheable)
        return &e->pub; /* used once, closed by md_dir_put */
    e->dev = sb.st_dev;
    e->ino = sb.st_ino;
    e->key = xstrdup(key);
    size_t len;
    if (!size_add(strlen(s->root), strlen(key) + 6, &len))
        abort();
    e->check = xmalloc(len);
    snprintf(e->check, len, "%s/%s/new", s->root, key);

    struct md_dent *dead = NULL;
    pthread_mutex_lock(&c->mu);
    struct md_dent *old = find(c, key, h);
    if (old != NULL)
        unlist(c, old, &dead);
    struct md_dent **b = bucket_of(c, h);
    e->hnext = *b;
    *b = e;
    lru_push(c, e);
    e->listed = true;
    c->n++;
    while (c->n > c->cap)
        unlist(c, c->lru, &dead);
    pthread_mutex_unlock(&c->mu);
    free_dead(dead);
    return &e->pub;
}

struct md_dir *md_dir_get(struct mdstore *s, const struct mdpath *p,
                          bool create)
{
    struct md_dircache *c = s->dcache;
    char key[KEY_MAX + 1];
    make_key(p, key);
    uint32_t h = hash_fnv1a(key);
    pthread_mutex_lock(&c->mu);
    struct md_dent *e = find(c, key, h);
    if (e != NULL) {
        e->refs++;
        lru_unlink(c, e);
        lru_push(c, e);
    }
    pthread_mutex_unlock(&c->mu);
    if (e != NULL) {
        if (still_valid(e))
            return &e->pub;
        md_dir_put(s, &e->pub, true);
    }
    return walk_new(s, p, key, h, create);
}

void md_dir_put(struct mdstore *s, struct md_dir *d, bool stale)
{
    if (d == NULL)
        return;
    struct md_dircache *c = s->dcache;
    struct md_dent *e = DENT(d), *dead = NULL;
    pthread_mutex_lock(&c->mu);
    e->refs--;
    if (e->listed && stale)
        unlist(c, e, &dead);
    else if (!e->listed && e->refs == 0)
        dead = e;
    pthread_mutex_unlock(&c->mu);
    free_dead(dead);
}

void md_dir_hold(struct mdstore *s, struct md_dir *d)
{
    pthread_mutex_lock(&s->dcache->mu);
    DENT(d)->refs++;
    pthread_mutex_unlock(&s->dcache->mu);
}

/* The kept connection, if it is on the file sb describes; a stale one is
 * closed (outside the lock: closing the last connection checkpoints). */
struct idx *md_dir_index_take(struct md_dir *d, const struct stat *sb)
{
    struct md_dent *e = DENT(d);
    pthread_mutex_lock(&e->smu);
    struct idx *ix = e->ix;
    bool same = ix != NULL && e->ix_dev == sb->st_dev && e->ix_ino == sb->st_ino;
    e->ix = NULL;
    pthread_mutex_unlock(&e->smu);
    if (ix == NULL)
        return NULL;
    atomic_fetch_sub(&e->cache->ix_n, 1);
    if (same)
        return ix;
    idx_close(ix);
    return NULL;
}

void md_dir_index_keep(struct md_dir *d, struct idx *ix, const struct stat *sb)
{
    struct md_dent *e = DENT(d);
    struct md_dircache *c = e->cache;
    bool kept = false;
    pthread_mutex_lock(&e->smu);
    if (e->ix == NULL && atomic_fetch_add(&c->ix_n, 1) < c->ix_cap) {
        e->ix = ix;
        e->ix_dev = sb->st_dev;
        e->ix_ino = sb->st_ino;
        kept = true;
    } else if (e->ix == NULL) {
        atomic_fetch_sub(&c->ix_n, 1);
    }
    pthread_mutex_unlock(&e->smu);
    if (!kept)
        idx_close(ix);
}

void md_dircache_flush(struct md_dircache *c)
{
    struct md_dent *dead = NULL;
    pthread_mutex_lock(&c->mu);
    for (struct md_dent *e = c->lru, *prev; e != NULL; e = prev) {
        prev = e->prev;
        if (e->refs == 0)
            unlist(c, e, &dead);
    }
    pthread_mutex_unlock(&c->mu);
    free_dead(dead);
}

void md_dircache_free(struct md_dircache *c)
{
    if (c == NULL)
        return;
    md_dircache_flush(c);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/*
 * Group commit of a new/ (doc/store.md "Delivery"): every thread that
 * renamed a file into it needs an fsync of the directory that started after
 * its rename. One thread runs the fsync; those whose renames it covers
 * return with it, and a thread that renamed meanwhile waits for the next
 * one, so k deliveries into one folder cost about one directory flush
 * instead of k. An fsync that fails fails every delivery it was to cover
 * (a retried fsync may report success without the data: the error is not
 * handed to a later one).
 */
int md_dir_sync_new(struct md_dir *d)
{
    struct md_dent *e = DENT(d);
    pthread_mutex_lock(&e->smu);
    uint64_t mine = ++e->renamed;
    for (;;) {
        if (e->synced >= mine) {
            pthread_mutex_unlock(&e->smu);
            return 0;
        }
        if (e->failed >= mine) {
            int err = e->fail_err;
            pthread_mutex_unlock(&e->smu);
            errno = err;
            return -1;
        }
        if (e->syncing) {
            pthread_cond_wait(&e->scv, &e->smu);
            continue;
        }
        e->syncing = true;
        uint64_t target = e->renamed;
        pthread_mutex_unlock(&e->smu);
        int r = fsync(e->pub.newfd);
        int err = errno != 0 ? errno : EIO;
        pthread_mutex_lock(&e->smu);
        e->syncing = false;
        if (r == 0) {
            if (target > e->synced)
                e->synced = target;
        } else if (target > e->failed) {
            e->failed = target;
            e->fail_err = err;
        }
        pthread_cond_broadcast(&e->scv);
    }
}
