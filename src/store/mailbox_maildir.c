/*
 * mailbox_maildir: mailbox.h for the Maildir backend: opening a folder
 * through its index (index_sqlite.h), keeping the index in step with the
 * files, flags as file names, expunge, quota, the standard folders, and
 * delivery's half of UID assignment. doc/store.md "The index" has the
 * reasoning; the rules this file keeps:
 *
 *  - The files are the truth. Every change to a folder's files that the
 *    index must agree with (delivery's rename into new/, a flag rename, an
 *    expunge, and the sync that reads the directories) happens while the
 *    index's write lock is held (BEGIN IMMEDIATE), so no index user sees a
 *    file half-way: a reader cannot meet a delivered file before its row,
 *    nor take a row for a vanished file while a rename is in flight.
 *  - Whatever the index misses (another tool's changes, a crash between a
 *    rename and a commit, a busy index at delivery) the next sync repairs:
 *    new files get the next UIDs in name (= delivery time) order, rows of
 *    vanished files go, changed ":2," parts become flag changes.
 *  - A damaged index is renamed aside and rebuilt from the files with a new
 *    UIDVALIDITY; the flags survive because they are in the names.
 *
 * SECURITY: folder directories are reached with md_walk (no symbolic
 * links), message files opened O_NOFOLLOW|O_NONBLOCK and checked to be
 * regular files, and names read from directories are only ever used as one
 * component relative to a directory descriptor.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "store/index_sqlite.h"
#include "store/store_backend.h"

#define POP3_LOCK_FILE "estafeta.pop3lock"
#define REBUILD_LOCK_FILE "estafeta.index.lock"
/* The Maildir spec's advice for stale tmp/ files. */
#define TMP_MAX_AGE (36L * 3600L)
/* Flag letters in ASCII order with their bits (the ":2," info part). */
static const struct {
    char c;
    unsigned bit;
} FLAG_LETTERS[] = {
    {'D', STORE_F_DRAFT},  {'F', STORE_F_FLAGGED}, {'P', STORE_F_PASSED},
    {'R', STORE_F_REPLIED}, {'S', STORE_F_SEEN},   {'T', STORE_F_TRASHED},
};
#define NFLAGS (sizeof(FLAG_LETTERS) / sizeof(FLAG_LETTERS[0]))

struct md_loc {
    char *fname; /* the file's name as last seen */
    bool incur;
};

struct md_mailbox {
    struct store_mailbox base;
    int dirfd, newfd, curfd, lockfd;
    bool infolder; /* a folder of the INBOX, not the INBOX */
    char *dir;    /* the folder's path, for SQLite */
    struct idx *ix;
    struct md_loc *locs; /* parallel to base.msgs, capacity base.cap */
};

static struct md_mailbox *MB(struct store_mailbox *mb)
{
    return (struct md_mailbox *)mb;
}

static int fmt_path(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fmt_path(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* The folder's path for SQLite, which opens by name: from the root with
 * its links resolved (SQLITE_OPEN_NOFOLLOW refuses a link anywhere in the
 * path, and the configured root may be one), then the validated parts. */
static int md_dir_path(struct mdstore *s, const struct mdpath *p, char *out,
                       size_t cap)
{
    char real[PATH_MAX];
    if (realpath(s->root, real) == NULL)
        return -1;
    if (p->folder[0] == '\0')
        return fmt_path(out, cap, "%s/%s/%s", real, p->domain, p->local);
    return fmt_path(out, cap, "%s/%s/%s/%s", real, p->domain, p->local,
                    p->folder);
}

/* ================= file names ================= */

/* Splits a Maildir file name: the unique part's length (up to the first
 * ':'), and from a ":2," info part the flags and the other letters (ASCII
 * order, no repeats; kw has room for 53). */
static void name_parse(const char *name, size_t *ulen_r, unsigned *flags_r,
                       char kw[64])
{
    const char *colon = strchr(name, ':');
    *ulen_r = colon != NULL ? (size_t)(colon - name) : strlen(name);
    *flags_r = 0;
    kw[0] = '\0';
    if (colon == NULL || strncmp(colon, ":2,", 3) != 0)
        return;
    bool seen[128] = {false};
    for (const char *c = colon + 3; *c != '\0'; c++) {
        unsigned char u = (unsigned char)*c;
        if (u < 128 && ((u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z')))
            seen[u] = true;
    }
    size_t k = 0;
    for (unsigned u = 'A'; u <= 'z'; u++) {
        if (!seen[u])
            continue;
        bool flag = false;
        for (size_t i = 0; i < NFLAGS; i++)
            if (FLAG_LETTERS[i].c == (char)u) {
                *flags_r |= FLAG_LETTERS[i].bit;
                flag = true;
            }
        if (!flag)
            kw[k++] = (char)u;
    }
    kw[k] = '\0';
}

/* uniq ":2," and the flag and keyword letters merged in ASCII order. */
static char *name_build(const char *uniq, unsigned flags, const char *kw)
{
    char info[64 + NFLAGS];
    bool seen[128] = {false};
    for (size_t i = 0; i < NFLAGS; i++)
        if (flags & FLAG_LETTERS[i].bit)
            seen[(unsigned char)FLAG_LETTERS[i].c] = true;
    for (const char *c = kw != NULL ? kw : ""; *c != '\0'; c++)
        if ((unsigned char)*c < 128)
            seen[(unsigned char)*c] = true;
    size_t k = 0;
    for (unsigned u = 'A'; u <= 'z' && k + 1 < sizeof(info); u++)
        if (seen[u])
            info[k++] = (char)u;
    info[k] = '\0';
    size_t ulen = strlen(uniq), len;
    if (!size_add(ulen, k + 4, &len))
        abort();
    char *out = xmalloc(len);
    snprintf(out, len, "%s:2,%s", uniq, info);
    return out;
}

/* The ",W=<n>" field of a file name's unique part (Dovecot writes the
 * CRLF size there, and so do we), or -1 when it has none. */
static int64_t name_vsize(const char *name)
{
    size_t ulen = strcspn(name, ":");
    for (const char *p = name; (p = strstr(p, ",W=")) != NULL; p += 3) {
        if ((size_t)(p - name) >= ulen)
            break;
        const char *d = p + 3;
        uint64_t v = 0;
        size_t nd = 0;
        while (d[nd] >= '0' && d[nd] <= '9' && nd < 19)
            v = v * 10 + (uint64_t)(d[nd++] - '0');
        if (nd > 0 && (d[nd] == ',' || d[nd] == ':' || d[nd] == '\0'))
            return (int64_t)v;
    }
    return -1;
}

/* ================= directory scans ================= */

struct md_ent {
    char *uniq;
    char *fname;
    bool incur;
    unsigned flags;
    char kw[64];
};

static void ents_free(struct md_ent *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(e[i].uniq);
        free(e[i].fname);
    }
    free(e);
}

/* By unique name; of two files with one unique name (another tool
 * half-way through moving it) the one in cur/ first. */
static int ent_cmp(const void *a, const void *b)
{
    const struct md_ent *x = a, *y = b;
    int c = strcmp(x->uniq, y->uniq);
    return c != 0 ? c : (int)y->incur - (int)x->incur;
}

/* Every message file name in new/ and cur/, sorted and unique by unique
 * name. Dot files are not messages (the Maildir spec). */
static int md_scan(struct md_mailbox *mb, struct md_ent **ents_r, size_t *n_r)
{
    struct md_ent *ents = NULL;
    size_t n = 0, cap = 0;
    for (int d = 0; d < 2; d++) {
        char **names;
        size_t nn;
        if (fs_dir_names(d ? mb->curfd : mb->newfd, &names, &nn) < 0) {
            int err = errno;
            ents_free(ents, n);
            errno = err;
            return -1;
        }
        for (size_t i = 0; i < nn; i++) {
            if (names[i][0] == '.')
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                ents = xreallocarray(ents, cap, sizeof(*ents));
            }
            struct md_ent *e = &ents[n++];
            size_t ulen;
            name_parse(names[i], &ulen, &e->flags, e->kw);
            e->uniq = xstrndup(names[i], ulen);
            e->fname = names[i];
            names[i] = NULL;
            e->incur = d == 1;
        }
        fs_names_free(names, nn);
    }
    if (n > 0)
        qsort(ents, n, sizeof(*ents), ent_cmp);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k > 0 && strcmp(ents[k - 1].uniq, ents[i].uniq) == 0) {
            free(ents[i].uniq);
            free(ents[i].fname);
            continue;
        }
        ents[k++] = ents[i];
    }
    *ents_r = ents;
    *n_r = k;
    return 0;
}

static struct md_ent *ent_find(struct md_ent *ents, size_t n, const char *uniq)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ents[mid].uniq, uniq);
        if (c == 0)
            return &ents[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Where the file of a unique name is now (another tool may have moved or
 * renamed it): 0 with *loc updated, or -1 ENOENT. */
static int md_locate(struct md_mailbox *mb, const char *uniq,
                     struct md_loc *loc)
{
    struct md_ent *ents;
    size_t n;
    if (md_scan(mb, &ents, &n) < 0)
        return -1;
    struct md_ent *e = ent_find(ents, n, uniq);
    if (e == NULL) {
        ents_free(ents, n);
        errno = ENOENT;
        return -1;
    }
    free(loc->fname);
    loc->fname = e->fname;
    loc->incur = e->incur;
    e->fname = NULL;
    ents_free(ents, n);
    return 0;
}

/* ================= the index: open, rebuild, sync ================= */

/* Moves a damaged index (and its WAL and shared-memory files, which belong
 * to it and must not be replayed into the new one) aside, kept for a look
 * by the operator. Called with the rebuild lock held. */
static void md_index_aside(int dirfd, const char *dir, const char *why)
{
    char base[96], from[128], to[160];
    snprintf(base, sizeof(base), IDX_FILE ".damaged.%lld.%ld",
             (long long)time(NULL), (long)getpid());
    static const char *const sfx[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(from, sizeof(from), IDX_FILE "%s", sfx[i]);
        snprintf(to, sizeof(to), "%s%s", base, sfx[i]);
        if (renameat(dirfd, from, dirfd, to) < 0 && errno != ENOENT)
            unlinkat(dirfd, from, 0);
    }
    fsync(dirfd);
    log_kv(LOG_WARN, "store.index_rebuild", "folder", dir, "reason", why,
           "aside", base, NULL);
}

/* Opens the folder's index, rebuilding it if it is damaged (or `force`:
 * found damaged later, by a sync). The rebuild lock makes one process do
 * the rebuild while the others wait and then use its result. */
static int md_index_open(struct md_mailbox *mb, bool force)
{
    char path[PATH_MAX];
    if (fmt_path(path, sizeof(path), "%s/" IDX_FILE, mb->dir) < 0)
        return -1;
    int r = force ? IDX_DAMAGED
                  : idx_open(path, mb->dirfd, true, true, &mb->ix);
    if (r == IDX_OK)
        return 0;
    if (r != IDX_DAMAGED)
        return -1;
    int lfd = openat(mb->dirfd, REBUILD_LOCK_FILE,
                     O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (lfd < 0)
        return -1;
    while (flock(lfd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            fs_close_keep_errno(lfd);
            return -1;
        }
    }
    r = force ? IDX_DAMAGED : idx_open(path, mb->dirfd, true, true, &mb->ix);
    if (r == IDX_DAMAGED) {
        md_index_aside(mb->dirfd, mb->dir, force ? "sync" : "open");
        r = idx_open(path, mb->dirfd, true, true, &mb->ix);
    }
    close(lfd); /* releases the lock */
    if (r == IDX_DAMAGED)
        errno = EIO;
    return r == IDX_OK ? 0 : -1;
}

static int row_ptr_cmp(const void *a, const void *b)
{
    const struct idx_row *x = *(struct idx_row *const *)a;
    const struct idx_row *y = *(struct idx_row *const *)b;
    return strcmp(x->uniq, y->uniq);
}

/* The row now says what the file says; a flag or keyword change gets a
 * new modseq. */
static int row_follow(struct idx *ix, struct idx_row *row, struct md_ent *e)
{
    bool moved = row->incur != e->incur || strcmp(row->fname, e->fname) != 0;
    bool changed = row->flags != e->flags || strcmp(row->keywords, e->kw) != 0;
    if (!moved && !changed)
        return IDX_OK;
    free(row->fname);
    row->fname = xstrdup(e->fname);
    row->incur = e->incur;
    row->flags = e->flags;
    free(row->keywords);
    row->keywords = xstrdup(e->kw);
    return idx_update(ix, row, changed);
}

/* Under the write lock: rows for files without one (by name), rows of
 * vanished files removed (after a second look: another tool may have been
 * moving the file while we read), renames and flag changes picked up.
 * On IDX_OK *rows_r holds every row by UID. */
static int md_sync_locked(struct md_mailbox *mb, struct idx_row **rows_r,
                          size_t *n_r)
{
    struct md_ent *ents = NULL, *again = NULL;
    size_t nents = 0, nagain = 0, nrows = 0;
    struct idx_row *rows = NULL, **byname = NULL;
    bool *gone = NULL;
    int r;

    if (md_scan(mb, &ents, &nents) < 0) {
        log_kv(LOG_WARN, "store.scan", "folder", mb->dir, "error",
               strerror(errno), NULL);
        errno = EIO;
        return IDX_FAIL;
    }
    if ((r = idx_rows(mb->ix, &rows, &nrows)) != IDX_OK)
        goto out;
    byname = xreallocarray(NULL, nrows ? nrows : 1, sizeof(*byname));
    gone = xcalloc(nrows ? nrows : 1, sizeof(*gone));
    for (size_t j = 0; j < nrows; j++)
        byname[j] = &rows[j];
    if (nrows > 0)
        qsort(byname, nrows, sizeof(*byname), row_ptr_cmp);
    bool *matched = xcalloc(nents ? nents : 1, sizeof(*matched));
    size_t i = 0, j = 0, missing = 0;
    while (r == IDX_OK && (i < nents || j < nrows)) {
        int c = i == nents   ? 1
                : j == nrows ? -1
                             : strcmp(ents[i].uniq, byname[j]->uniq);
        if (c == 0) {
            matched[i] = true;
            r = row_follow(mb->ix, byname[j], &ents[i]);
            i++;
            j++;
        } else if (c < 0) {
            i++;
        } else {
            gone[byname[j] - rows] = true;
            missing++;
            j++;
        }
    }
    if (r == IDX_OK && missing > 0) {
        if (md_scan(mb, &again, &nagain) < 0) {
            errno = EIO;
            r = IDX_FAIL;
        }
        for (size_t k = 0; r == IDX_OK && k < nrows; k++) {
            if (!gone[k])
                continue;
            struct md_ent *e = ent_find(again, nagain, rows[k].uniq);
            if (e != NULL) {
                gone[k] = false;
                r = row_follow(mb->ix, &rows[k], e);
            } else {
                r = idx_delete(mb->ix, rows[k].uniq);
            }
        }
    }
    /* New files in name order, which is delivery-time order. */
    size_t cap = nrows;
    for (size_t k = 0; r == IDX_OK && k < nents; k++) {
        if (matched[k])
            continue;
        struct md_ent *e = &ents[k];
        struct stat sb;
        if (fstatat(e->incur ? mb->curfd : mb->newfd, e->fname, &sb,
                    AT_SYMLINK_NOFOLLOW) < 0 ||
            !S_ISREG(sb.st_mode))
            continue; /* moved on meanwhile (the next sync), or no message */
        if (nrows == cap) {
            cap = cap ? cap * 2 : 64;
            rows = xreallocarray(rows, cap, sizeof(*rows));
            gone = xreallocarray(gone, cap, sizeof(*gone));
        }
        struct idx_row *row = &rows[nrows];
        *row = (struct idx_row){0};
        row->uniq = e->uniq;
        row->fname = e->fname;
        row->keywords = xstrdup(e->kw);
        row->incur = e->incur;
        row->size = (uint64_t)sb.st_size;
        row->vsize = name_vsize(e->fname); /* else read after the sync */
        row->flags = e->flags;
        e->uniq = NULL;
        e->fname = NULL;
        gone[nrows] = false;
        nrows++;
        r = idx_insert(mb->ix, row);
    }
    free(matched);
    if (r == IDX_OK) {
        size_t k = 0;
        for (size_t m = 0; m < nrows; m++) {
            if (gone[m]) {
                idx_row_clear(&rows[m]);
                continue;
            }
            rows[k++] = rows[m];
        }
        nrows = k;
    }
out:
    free(byname);
    free(gone);
    ents_free(ents, nents);
    ents_free(again, nagain);
    if (r != IDX_OK) {
        idx_rows_free(rows, nrows);
        return r;
    }
    *rows_r = rows;
    *n_r = nrows;
    return IDX_OK;
}

/* The folder's keyword table, read under the write lock (so it matches
 * the names the sync reads). A file we cannot read keeps the table we
 * had: keywords must not vanish from the view for a passing error. */
static void md_kw_refresh(struct md_mailbox *mb)
{
    struct md_kwtable t;
    if (md_kw_read(mb->dirfd, &t) < 0) {
        log_kv(LOG_WARN, "store.keywords_read", "folder", mb->dir, "error",
               strerror(errno), NULL);
        return;
    }
    md_kw_expose(&t, &mb->base);
    md_kw_free(&t);
}

static int md_sync_once(struct md_mailbox *mb, struct idx_row **rows_r,
                        size_t *n_r)
{
    int r = idx_begin(mb->ix);
    if (r != IDX_OK)
        return r;
    md_kw_refresh(mb);
    r = md_sync_locked(mb, rows_r, n_r);
    if (r == IDX_OK && (r = idx_commit(mb->ix)) != IDX_OK)
        idx_rows_free(*rows_r, *n_r);
    if (r != IDX_OK)
        idx_rollback(mb->ix);
    return r;
}

/* The CRLF sizes the index does not know yet (files of other tools
 * without ",W=", rows of a version-1 index): read from the files outside
 * the write lock, since Maildir files never change and reading many
 * must not hold up deliveries, then recorded in one short transaction.
 * A file that cannot be read now is tried at the next sync. */
static void md_fill_vsizes(struct md_mailbox *mb, struct idx_row *rows,
                           size_t n)
{
    size_t found = 0;
    for (size_t k = 0; k < n; k++) {
        if (rows[k].vsize >= 0)
            continue;
        int fd = openat(rows[k].incur ? mb->curfd : mb->newfd, rows[k].fname,
                        O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC |
                            O_NOCTTY);
        struct stat sb;
        uint64_t v;
        if (fd >= 0 && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) &&
            store_crlf_fd(fd, &v) == 0 && v <= INT64_MAX) {
            rows[k].vsize = (int64_t)v;
            found++;
        }
        if (fd >= 0)
            close(fd);
    }
    if (found == 0 || idx_begin(mb->ix) != IDX_OK)
        return;
    int r = IDX_OK;
    for (size_t k = 0; r == IDX_OK && k < n; k++)
        r = idx_set_vsize(mb->ix, rows[k].uniq, rows[k].vsize);
    if (r != IDX_OK || idx_commit(mb->ix) != IDX_OK)
        idx_rollback(mb->ix);
}

/* Sync, rebuilding the index once if it turns out damaged. */
static int md_sync(struct md_mailbox *mb, struct idx_row **rows_r, size_t *n_r)
{
    int r = md_sync_once(mb, rows_r, n_r);
    if (r == IDX_DAMAGED) {
        idx_close(mb->ix);
        mb->ix = NULL;
        if (md_index_open(mb, true) < 0)
            return -1;
        r = md_sync_once(mb, rows_r, n_r);
    }
    if (r == IDX_DAMAGED)
        errno = EIO;
    if (r == IDX_OK)
        md_fill_vsizes(mb, *rows_r, *n_r);
    return r == IDX_OK ? 0 : -1;
}

/* ================= snapshot ================= */

static void snap_reserve(struct md_mailbox *mb, size_t want)
{
    if (want <= mb->base.cap)
        return;
    size_t cap = mb->base.cap ? mb->base.cap : 16;
    while (cap < want)
        if (!size_mul(cap, 2, &cap))
            abort();
    mb->base.msgs = xreallocarray(mb->base.msgs, cap, sizeof(*mb->base.msgs));
    mb->locs = xreallocarray(mb->locs, cap, sizeof(*mb->locs));
    mb->base.cap = cap;
}

/* Takes uniq and fname from the row. */
static void snap_set(struct md_mailbox *mb, size_t i, struct idx_row *row,
                     bool fresh)
{
    struct store_msg *m = &mb->base.msgs[i];
    struct md_loc *l = &mb->locs[i];
    if (fresh) {
        m->unique = row->uniq;
        row->uniq = NULL;
    }
    free(l->fname);
    l->fname = row->fname;
    row->fname = NULL;
    l->incur = row->incur;
    m->uid = row->uid;
    m->size = row->size;
    /* Not known only if the file could not be read just now. */
    m->vsize = row->vsize >= 0 ? (uint64_t)row->vsize : row->size;
    m->flags = row->flags;
    m->keywords = md_kw_mask(&mb->base, row->keywords);
    m->modseq = row->modseq;
}

static void snap_meta(struct md_mailbox *mb)
{
    mb->base.uidvalidity = idx_uidvalidity(mb->ix);
    mb->base.uidnext = idx_uidnext(mb->ix);
}

static int snap_idx_cmp(const void *a, const void *b, void *arg)
{
    const struct store_msg *msgs = arg;
    return strcmp(msgs[*(const size_t *)a].unique,
                  msgs[*(const size_t *)b].unique);
}

/* Merges a sync's rows into the snapshot: messages already in it keep
 * their numbers and take the current flags, modseq and place (and UID,
 * should the index have been rebuilt); the others are appended, by UID. */
static void snap_merge(struct md_mailbox *mb, struct idx_row *rows, size_t n)
{
    size_t old = mb->base.n;
    size_t *order = xreallocarray(NULL, old ? old : 1, sizeof(*order));
    for (size_t i = 0; i < old; i++)
        order[i] = i;
    if (old > 0)
        qsort_r(order, old, sizeof(*order), snap_idx_cmp, mb->base.msgs);
    for (size_t r = 0; r < n; r++) {
        size_t lo = 0, hi = old;
        bool found = false;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            int c = strcmp(mb->base.msgs[order[mid]].unique, rows[r].uniq);
            if (c == 0) {
                snap_set(mb, order[mid], &rows[r], false);
                found = true;
                break;
            }
            if (c < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (!found) {
            snap_reserve(mb, mb->base.n + 1);
            mb->locs[mb->base.n].fname = NULL;
            snap_set(mb, mb->base.n, &rows[r], true);
            mb->base.n++;
        }
    }
    free(order);
}

/* ================= mailbox.h ================= */

static void md_mb_free(struct md_mailbox *mb)
{
    for (size_t i = 0; i < mb->base.n; i++) {
        free((char *)mb->base.msgs[i].unique);
        free(mb->locs[i].fname);
    }
    free(mb->base.msgs);
    free(mb->locs);
    for (size_t i = 0; i < STORE_KEYWORDS_MAX; i++)
        free(mb->base.kw[i]);
    idx_close(mb->ix);
    if (mb->lockfd >= 0)
        close(mb->lockfd); /* releases the POP3 lock */
    if (mb->newfd >= 0)
        close(mb->newfd);
    if (mb->curfd >= 0)
        close(mb->curfd);
    if (mb->dirfd >= 0)
        close(mb->dirfd);
    free(mb->dir);
    free(mb);
}

/* Opens the folder p (validated, or a folder directory name read from the
 * user's Maildir), syncs and takes the snapshot. */
static int md_open_path(struct mdstore *s, const struct mdpath *p,
                        unsigned open_flags, struct md_mailbox **mb_r)
{
    struct md_mailbox *mb = xcalloc(1, sizeof(*mb));
    char dir[PATH_MAX];
    struct idx_row *rows = NULL;
    size_t n = 0;
    mb->base.store = &s->base;
    mb->newfd = mb->curfd = mb->lockfd = -1;
    mb->infolder = p->folder[0] != '\0';
    mb->dirfd = md_walk(s, p);
    if (mb->dirfd < 0 ||
        (mb->newfd = fs_open_subdir(mb->dirfd, "new")) < 0 ||
        (mb->curfd = fs_open_subdir(mb->dirfd, "cur")) < 0)
        goto fail;
    if (open_flags & STORE_OPEN_EXCLUSIVE) {
        mb->lockfd = openat(mb->dirfd, POP3_LOCK_FILE,
                            O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (mb->lockfd < 0)
            goto fail;
        /* flock: per open file description, so a second open in this
         * process conflicts too; released by close, also at exit. */
        int fr;
        while ((fr = flock(mb->lockfd, LOCK_EX | LOCK_NB)) < 0 && errno == EINTR)
            ;
        if (fr < 0)
            goto fail; /* EWOULDBLOCK */
    }
    if (md_dir_path(s, p, dir, sizeof(dir)) < 0)
        goto fail;
    mb->dir = xstrdup(dir);
    if (md_index_open(mb, false) < 0 || md_sync(mb, &rows, &n) < 0)
        goto fail;
    snap_meta(mb);
    snap_merge(mb, rows, n);
    idx_rows_free(rows, n);
    *mb_r = mb;
    return 0;
fail:;
    int err = errno;
    md_mb_free(mb);
    errno = err == ENOTDIR ? ENOENT : err;
    return -1;
}

int md_mailbox_open(struct store *st, const char *user,
                           const char *folder, unsigned open_flags,
                           struct store_mailbox **mb_r)
{
    struct mdstore *s = (struct mdstore *)st;
    struct mdpath p;
    struct md_mailbox *mb;
    if (md_names(user, folder, &p) < 0)
        return -1;
    if (md_open_path(s, &p, open_flags, &mb) < 0)
        return -1;
    /* Deliveries cut short by a crash; best effort, as the reader opens. */
    store_clean_tmp(st, user, folder, TMP_MAX_AGE);
    *mb_r = &mb->base;
    return 0;
}

void md_mailbox_close(struct store_mailbox *mb)
{
    md_mb_free(MB(mb));
}

int md_mailbox_refresh(struct store_mailbox *b)
{
    struct md_mailbox *mb = MB(b);
    struct idx_row *rows;
    size_t n;
    if (md_sync(mb, &rows, &n) < 0)
        return -1;
    snap_meta(mb);
    snap_merge(mb, rows, n);
    idx_rows_free(rows, n);
    return 0;
}

int md_msg_open(struct store_mailbox *b, size_t i, int *fd_r)
{
    struct md_mailbox *mb = MB(b);
    struct md_loc *l = &mb->locs[i];
    for (int attempt = 0; attempt < 2; attempt++) {
        /* O_NONBLOCK: a FIFO planted under a message's name must not hang
         * the session; it is refused below. */
        int fd = openat(l->incur ? mb->curfd : mb->newfd, l->fname,
                        O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC |
                            O_NOCTTY);
        if (fd >= 0) {
            struct stat sb;
            if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
                close(fd);
                errno = EIO;
                return -1;
            }
            int fl = fcntl(fd, F_GETFL);
            if (fl >= 0)
                fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
            *fd_r = fd;
            return 0;
        }
        /* Renamed by a flag change elsewhere, or expunged. */
        if (errno != ENOENT || attempt == 1 ||
            md_locate(mb, b->msgs[i].unique, l) < 0)
            return -1;
    }
    return -1;
}

/* The new flags and info letters of a row under op: system flags by
 * op; keyword letters a..z for the slots given in `want` (SET: every
 * slot with a name is set to want[], letters without a name stay; ADD /
 * REMOVE: the wanted slots are set / cleared); every other letter of the
 * row (those we do not know) is kept. letters_r has room for 64. */
static unsigned kw_apply(const struct idx_row *row, const struct md_kwtable *t,
                         enum store_flags_op op, unsigned flags,
                         bool keep_keywords, const bool want[STORE_KEYWORDS_MAX],
                         char letters_r[64])
{
    unsigned nf = op == STORE_FLAGS_SET ? flags
                  : op == STORE_FLAGS_ADD ? row->flags | flags
                                          : row->flags & ~flags;
    bool seen[128] = {false};
    for (const char *c = row->keywords; *c != '\0'; c++)
        if ((unsigned char)*c < 128)
            seen[(unsigned char)*c] = true;
    for (size_t k = 0; !keep_keywords && k < STORE_KEYWORDS_MAX; k++) {
        bool named = t->name[k] != NULL && store_keyword_valid(t->name[k]);
        if (op == STORE_FLAGS_SET && named)
            seen['a' + k] = want[k];
        else if (op == STORE_FLAGS_ADD && want[k])
            seen['a' + k] = true;
        else if (op == STORE_FLAGS_REMOVE && want[k])
            seen['a' + k] = false;
    }
    size_t n = 0;
    for (unsigned u = 'A'; u <= 'z' && n < 63; u++)
        if (seen[u])
            letters_r[n++] = (char)u;
    letters_r[n] = '\0';
    return nf;
}

/* The slots of the given keyword names in t, adding the names t does not
 * have yet (unless op is REMOVE) to free slots whose letter no message of
 * the folder uses (a letter whose name was lost must not come to mean
 * something else). *added_r tells whether t changed. Index lock held. */
static int kw_slots(struct idx *ix, struct md_kwtable *t,
                    enum store_flags_op op, const char *const *keywords,
                    size_t n, bool want[STORE_KEYWORDS_MAX], bool *added_r)
{
    char used[27];
    bool have_used = false;
    *added_r = false;
    for (size_t j = 0; j < n; j++) {
        int slot = md_kw_lookup(t, keywords[j]);
        if (slot < 0 && op == STORE_FLAGS_REMOVE)
            continue;
        if (slot < 0) {
            if (!have_used) {
                int r = idx_keyword_letters(ix, used);
                if (r != IDX_OK) {
                    errno = EIO;
                    return -1;
                }
                have_used = true;
            }
            for (int k = 0; k < STORE_KEYWORDS_MAX && slot < 0; k++)
                if (t->name[k] == NULL && strchr(used, 'a' + k) == NULL)
                    slot = k;
            if (slot < 0) {
                errno = EMLINK;
                return -1;
            }
            t->name[slot] = xstrdup(keywords[j]);
            *added_r = true;
        }
        want[slot] = true;
    }
    return 0;
}

int md_msg_update_flags(struct store_mailbox *b, size_t i,
                        enum store_flags_op op, unsigned flags,
                        bool keep_keywords, const char *const *keywords,
                        size_t nkeywords)
{
    struct md_mailbox *mb = MB(b);
    struct store_msg *m = &b->msgs[i];
    struct idx_row row;
    struct md_kwtable t;
    int r = idx_begin(mb->ix);
    if (r != IDX_OK) {
        errno = EIO;
        return -1;
    }
    /* The row, not the snapshot: another session may have renamed it or
     * changed its flags; what we change is computed from what it has now,
     * under the lock, so no concurrent change is lost. */
    r = idx_find(mb->ix, m->unique, &row);
    if (r != IDX_OK) {
        int err = r == IDX_FAIL ? errno : EIO;
        idx_rollback(mb->ix);
        errno = err; /* ENOENT: expunged meanwhile */
        return -1;
    }
    /* The keyword table as it is now: another session may just have
     * added a name (doc/store.md "Keywords": the index lock serialises
     * every writer of dovecot-keywords). */
    if (md_kw_read(mb->dirfd, &t) < 0) {
        int err = errno;
        idx_rollback(mb->ix);
        idx_row_clear(&row);
        errno = err;
        return -1;
    }
    struct md_loc at = {row.fname, row.incur};
    row.fname = NULL;
    int err = 0;
    char *name = NULL;
    bool want[STORE_KEYWORDS_MAX] = {false}, added = false;
    if (!keep_keywords &&
        kw_slots(mb->ix, &t, op, keywords, nkeywords, want, &added) < 0) {
        err = errno;
        goto fail;
    }
    char letters[64];
    unsigned nf = kw_apply(&row, &t, op, flags, keep_keywords, want, letters);
    /* Named before any file carries its letter, so a crash in between
     * leaves at most an unused name. */
    if (added && md_kw_write(mb->dirfd, &t) < 0) {
        err = errno;
        goto fail;
    }
    name = name_build(row.uniq, nf, letters);
    /* A message in new/ without flags stays there: reading (POP3) must
     * not change names; in cur/ the name says whether anything changes. */
    bool stays = at.incur ? strcmp(name, at.fname) == 0
                          : nf == 0 && letters[0] == '\0';
    if (!stays) {
        for (int attempt = 0;; attempt++) {
            if (renameat(at.incur ? mb->curfd : mb->newfd, at.fname,
                         mb->curfd, name) == 0)
                break;
            /* Moved by another tool since the last sync: find it. */
            if (errno != ENOENT || attempt == 1 ||
                md_locate(mb, row.uniq, &at) < 0) {
                err = errno;
                goto fail;
            }
        }
        /* Durable on return: both directories that changed. */
        if (fsync(mb->curfd) < 0 || (!at.incur && fsync(mb->newfd) < 0))
            err = errno;
        free(at.fname);
        at.fname = name;
        name = NULL;
        at.incur = true;
        row.fname = xstrdup(at.fname);
        row.incur = true;
        row.flags = nf;
        free(row.keywords);
        row.keywords = xstrdup(letters);
        r = idx_update(mb->ix, &row, true);
        if (r == IDX_OK)
            r = idx_commit(mb->ix);
        if (r != IDX_OK)
            idx_rollback(mb->ix); /* the next sync reads it from the name */
    } else {
        idx_rollback(mb->ix);
    }
    md_kw_expose(&t, b);
    md_kw_free(&t);
    m->flags = nf;
    m->keywords = md_kw_mask(b, letters);
    m->modseq = row.modseq;
    free(mb->locs[i].fname);
    mb->locs[i] = at;
    free(name);
    idx_row_clear(&row);
    if (err != 0) {
        errno = err;
        return -1;
    }
    return 0;
fail:
    idx_rollback(mb->ix);
    md_kw_free(&t);
    free(at.fname);
    free(name);
    idx_row_clear(&row);
    errno = err;
    return -1;
}

int md_mailbox_expunge(struct store_mailbox *b, const size_t *idx,
                              size_t n)
{
    struct md_mailbox *mb = MB(b);
    if (idx_begin(mb->ix) != IDX_OK) {
        errno = EIO;
        return -1;
    }
    bool *done = xcalloc(n, sizeof(*done));
    int err = 0;
    uint64_t freed = 0, nfreed = 0; /* what we unlinked, for the usage */
    for (size_t k = 0; k < n; k++) {
        size_t i = idx[k];
        struct md_loc *l = &mb->locs[i];
        for (int attempt = 0;; attempt++) {
            if (unlinkat(l->incur ? mb->curfd : mb->newfd, l->fname, 0) == 0) {
                done[k] = true;
                freed += b->msgs[i].size;
                nfreed++;
                break;
            }
            if (errno != ENOENT) {
                err = errno;
                break;
            }
            /* Renamed elsewhere, or already gone: both fine. */
            if (attempt == 1 || md_locate(mb, b->msgs[i].unique, l) < 0) {
                done[k] = true;
                break;
            }
        }
    }
    /* The unlinks are durable before the rows go, so a power loss cannot
     * bring back a file whose UID was already forgotten. */
    if (fsync(mb->newfd) < 0 || fsync(mb->curfd) < 0)
        err = errno;
    if (nfreed > 0 && freed <= INT64_MAX)
        md_usage_add(mb->dirfd, false, mb->infolder, -(int64_t)freed,
                     -(int64_t)nfreed);
    int r = IDX_OK;
    for (size_t k = 0; r == IDX_OK && k < n; k++)
        if (done[k])
            r = idx_delete(mb->ix, b->msgs[idx[k]].unique);
    if (r == IDX_OK)
        r = idx_commit(mb->ix);
    if (r != IDX_OK)
        idx_rollback(mb->ix); /* the next sync drops the rows */
    /* Out of the snapshot; the others keep their order. */
    size_t w = 0, k = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (k < n && idx[k] == i) {
            bool gone = done[k++];
            if (gone) {
                free((char *)b->msgs[i].unique);
                free(mb->locs[i].fname);
                continue;
            }
        }
        b->msgs[w] = b->msgs[i];
        mb->locs[w] = mb->locs[i];
        w++;
    }
    b->n = w;
    free(done);
    if (err != 0) {
        errno = err;
        return -1;
    }
    return 0;
}

int md_folder_usage(struct mdstore *s, const struct mdpath *p,
                    uint64_t *bytes, uint64_t *msgs)
{
    struct md_mailbox *mb;
    if (md_open_path(s, p, 0, &mb) < 0)
        return -1;
    for (size_t i = 0; i < mb->base.n; i++) {
        *bytes += mb->base.msgs[i].size;
        (*msgs)++;
    }
    md_mb_free(mb);
    return 0;
}

int md_user_create(struct store *st, const char *user)
{
    struct mdstore *s = (struct mdstore *)st;
    struct mdpath p;
    if (md_names(user, NULL, &p) < 0 || md_create(s, &p) < 0)
        return -1;
    for (size_t i = 0; i < STORE_STD_FOLDERS; i++)
        if (md_names(user, store_std_folders[i], &p) < 0 ||
            md_create(s, &p) < 0)
            return -1;
    return 0;
}

/* ================= delivery ================= */

struct md_itx {
    struct idx *ix;
    struct mdstore *s;
    struct md_dir *d;  /* held: a clean connection goes back to it */
    bool keep;         /* the connection is on the file in sb */
    struct stat sb;
};

int md_index_stat(const struct md_dir *d, struct stat *sb_r)
{
    return fstatat(d->newfd, "../" IDX_FILE, sb_r, AT_SYMLINK_NOFOLLOW);
}

/* The index file beside d's new/ is still the one md_deliver looked up. */
static bool md_index_same(const struct md_dir *d, const struct stat *isb)
{
    struct stat sb;
    return md_index_stat(d, &sb) == 0 && sb.st_dev == isb->st_dev &&
           sb.st_ino == isb->st_ino;
}

struct md_itx *md_index_begin(struct mdstore *s, const struct mdpath *p,
                              struct md_dir *d, const struct stat *isb)
{
    char dir[PATH_MAX], path[PATH_MAX];
    struct idx *ix = isb != NULL ? md_dir_index_take(d, isb) : NULL;
    bool keep = ix != NULL;
    if (ix == NULL) {
        /* d->real: the directory cache learnt it from the kernel, no link
         * in it (and checked just now); else resolved from the root. */
        if (d->real == NULL && md_dir_path(s, p, dir, sizeof(dir)) < 0)
            return NULL;
        if (fmt_path(path, sizeof(path), "%s/" IDX_FILE,
                     d->real != NULL ? d->real : dir) < 0)
            return NULL;
        /* No index yet: the first open makes it and numbers every file. A
         * damaged one is the reader's to rebuild. */
        if (idx_open(path, -1, false, false, &ix) != IDX_OK)
            return NULL;
        /* Kept for later deliveries only if the path still names the file
         * looked up before the open: the one a later check compares. */
        keep = isb != NULL && md_index_same(d, isb);
    }
    if (idx_begin(ix) != IDX_OK) {
        idx_close(ix);
        return NULL;
    }
    struct md_itx *t = xcalloc(1, sizeof(*t));
    t->ix = ix;
    t->s = s;
    t->d = d;
    t->keep = keep;
    if (keep)
        t->sb = *isb;
    md_dir_hold(s, d);
    return t;
}

void md_index_end(struct md_itx *t, const char *name, uint64_t size,
                  uint64_t vsize, bool visible)
{
    if (t == NULL)
        return;
    bool clean = true;
    if (visible) {
        struct idx_row row = {0};
        row.uniq = (char *)name;
        row.fname = (char *)name;
        row.keywords = (char *)"";
        row.size = size;
        row.vsize = vsize <= INT64_MAX ? (int64_t)vsize : -1;
        int r = idx_insert(t->ix, &row);
        if (r == IDX_OK)
            r = idx_commit(t->ix);
        /* The message is delivered either way; without its row it gets
         * its UID at the next open. */
        if (r != IDX_OK) {
            clean = false;
            log_kv(LOG_WARN, "store.index_deliver", "unique", name, "result",
                   "uid deferred to next open", NULL);
        }
    } else {
        idx_rollback(t->ix);
    }
    if (clean && t->keep && idx_idle(t->ix))
        md_dir_index_keep(t->d, t->ix, &t->sb);
    else
        idx_close(t->ix); /* rolls back what is not committed */
    md_dir_put(t->s, t->d, false);
    free(t);
}
