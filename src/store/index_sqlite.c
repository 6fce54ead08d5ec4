/*
 * index_sqlite: see index_sqlite.h for the contract, doc/store.md "The
 * index" for why SQLite in WAL mode and how the index stays in step with
 * the Maildir files.
 */
#include "store/index_sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/xalloc.h"

/* 2 added messages.vsize; a version-1 index is upgraded in place (the
 * column starts unknown, -1, and the next sync fills it), never rebuilt:
 * a rebuild would change UIDVALIDITY. */
#define IDX_VERSION 2
#define IDX_BUSY_MS 5000

struct idx {
    sqlite3 *db;
    char *path;
    bool in_tx;
    bool meta_dirty;
    uint32_t uidvalidity, uidnext;
    uint64_t highestmodseq;
    struct timespec busy_since;
    unsigned seed;
};

/* SQLite's own busy handler sleeps up to 100 ms between tries, and its
 * locks have no queue: a session syncing in a loop then starves a
 * delivery for seconds. Short, jittered sleeps keep a waiter's chance
 * close to fair; the total wait is still bounded by IDX_BUSY_MS. */
static int idx_busy(void *arg, int count)
{
    struct idx *ix = arg;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (count == 0)
        ix->busy_since = now;
    long long ms = (now.tv_sec - ix->busy_since.tv_sec) * 1000LL +
                   (now.tv_nsec - ix->busy_since.tv_nsec) / 1000000LL;
    if (ms >= IDX_BUSY_MS)
        return 0;
    ix->seed = ix->seed * 1103515245u + 12345u;
    struct timespec d = {0, 100000L + (long)((ix->seed >> 8) % 900000u)};
    nanosleep(&d, NULL);
    return 1;
}

static const char SCHEMA[] =
    "CREATE TABLE meta("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " uidvalidity INTEGER NOT NULL,"
    " uidnext INTEGER NOT NULL,"
    " highestmodseq INTEGER NOT NULL);"
    "CREATE TABLE messages("
    " uid INTEGER PRIMARY KEY,"
    " uniq TEXT NOT NULL UNIQUE,"
    " size INTEGER NOT NULL,"
    " flags INTEGER NOT NULL,"
    " keywords TEXT NOT NULL DEFAULT '',"
    " modseq INTEGER NOT NULL,"
    " fname TEXT NOT NULL,"
    " incur INTEGER NOT NULL,"
    " vsize INTEGER NOT NULL DEFAULT -1);";

#define ROW_COLS "uid, uniq, size, flags, keywords, modseq, fname, incur, vsize"

/* ---- errors ---- */

static bool rc_damaged(int rc)
{
    int p = rc & 0xff;
    return p == SQLITE_CORRUPT || p == SQLITE_NOTADB;
}

/* Maps a failed SQLite call to IDX_FAIL (errno) or IDX_DAMAGED, logging
 * it: the index is a cache the files can rebuild, but an operator wants
 * to know why a mailbox was slow or rebuilt. */
static int idx_err(struct idx *ix, int rc, const char *what)
{
    char code[16];
    snprintf(code, sizeof(code), "%d", rc);
    int p = rc & 0xff;
    log_kv(p == SQLITE_BUSY || p == SQLITE_LOCKED ? LOG_INFO : LOG_WARN,
           "store.index_error", "path", ix->path, "op", what, "code", code,
           "error", ix->db != NULL ? sqlite3_errmsg(ix->db) : sqlite3_errstr(rc),
           NULL);
    if (rc_damaged(rc))
        return IDX_DAMAGED;
    errno = p == SQLITE_FULL ? ENOSPC : p == SQLITE_NOMEM ? ENOMEM : EIO;
    return IDX_FAIL;
}

/* A statement of ours that does not prepare means the tables are not the
 * ones we made: a schema mismatch, hence damage. */
static int idx_prepare(struct idx *ix, const char *sql, sqlite3_stmt **st_r)
{
    int rc = sqlite3_prepare_v2(ix->db, sql, -1, st_r, NULL);
    if (rc == SQLITE_OK)
        return IDX_OK;
    *st_r = NULL;
    int r = idx_err(ix, rc, "prepare");
    if ((rc & 0xff) == SQLITE_ERROR)
        return IDX_DAMAGED;
    return r;
}

static int idx_exec(struct idx *ix, const char *sql, const char *what)
{
    int rc = sqlite3_exec(ix->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? IDX_OK : idx_err(ix, rc, what);
}

/* Steps a statement that returns no rows and finalizes it. */
static int idx_done(struct idx *ix, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? IDX_OK : idx_err(ix, rc, what);
}

/* A one-row, one-column text result (PRAGMAs) into out. */
static int idx_pragma(struct idx *ix, const char *sql, char *out, size_t cap)
{
    sqlite3_stmt *st;
    int r = idx_prepare(ix, sql, &st);
    if (r != IDX_OK)
        return r;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(out, cap, "%s", t != NULL ? (const char *)t : "");
        rc = SQLITE_DONE;
    } else if (rc == SQLITE_DONE) {
        out[0] = '\0';
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? IDX_OK : idx_err(ix, rc, sql);
}

/* ---- UIDVALIDITY record ---- */

/* The next UIDVALIDITY of this folder: the clock, but above the last one
 * (RFC 9051: a new UIDVALIDITY must be greater than any before, or clients
 * keep stale UIDs), recorded durably before it is used. */
static int idx_new_uidvalidity(int folder_fd, uint32_t *uv_r)
{
    uint32_t last = 0;
    int fd = openat(folder_fd, IDX_UIDVALIDITY_FILE,
                    O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        char b[32];
        ssize_t n = read(fd, b, sizeof(b) - 1);
        close(fd);
        if (n > 0) {
            b[n] = '\0';
            char *end;
            unsigned long long v = strtoull(b, &end, 10);
            if (end != b && v <= UINT32_MAX)
                last = (uint32_t)v;
        }
    } else if (errno != ENOENT) {
        return -1;
    }
    time_t now = time(NULL);
    uint32_t uv = now > 0 && (uint64_t)now < UINT32_MAX ? (uint32_t)now : 1;
    if (uv <= last)
        uv = last < UINT32_MAX ? last + 1 : 1;

    char tmp[64], text[16];
    snprintf(tmp, sizeof(tmp), IDX_UIDVALIDITY_FILE ".%ld.%ld", (long)getpid(),
             (long)gettid());
    int len = snprintf(text, sizeof(text), "%" PRIu32 "\n", uv);
    fd = openat(folder_fd, tmp,
                O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (fs_write_all(fd, text, (size_t)len) < 0 || fsync(fd) < 0) {
        fs_close_keep_errno(fd);
        unlinkat(folder_fd, tmp, 0);
        return -1;
    }
    if (close(fd) < 0 ||
        renameat(folder_fd, tmp, folder_fd, IDX_UIDVALIDITY_FILE) < 0) {
        int err = errno;
        unlinkat(folder_fd, tmp, 0);
        errno = err;
        return -1;
    }
    if (fsync(folder_fd) < 0)
        return -1;
    *uv_r = uv;
    return 0;
}

/* ---- open ---- */

/* Lock held (BEGIN IMMEDIATE): makes the tables of an empty database. */
static int idx_create_schema(struct idx *ix, int folder_fd)
{
    uint32_t uv;
    if (idx_new_uidvalidity(folder_fd, &uv) < 0) {
        log_kv(LOG_ERR, "store.index_uidvalidity", "path", ix->path, "error",
               strerror(errno), NULL);
        errno = EIO;
        return IDX_FAIL;
    }
    char sql[160];
    snprintf(sql, sizeof(sql),
             "INSERT INTO meta(id, uidvalidity, uidnext, highestmodseq) "
             "VALUES (1, %" PRIu32 ", 1, 0); PRAGMA user_version = %d;",
             uv, IDX_VERSION);
    int r = idx_exec(ix, SCHEMA, "create");
    if (r == IDX_OK)
        r = idx_exec(ix, sql, "create");
    if (r == IDX_OK) {
        char uvs[16];
        snprintf(uvs, sizeof(uvs), "%" PRIu32, uv);
        log_kv(LOG_INFO, "store.index_create", "path", ix->path,
               "uidvalidity", uvs, NULL);
    }
    return r;
}

/* Version 1 -> 2: the vsize column, unknown (-1) until the next sync
 * reads it from the name (,W=) or the file. Under the write lock, after
 * looking again: another connection may have just done it. */
static int idx_upgrade_v1(struct idx *ix)
{
    int r = idx_exec(ix, "BEGIN IMMEDIATE", "begin");
    if (r != IDX_OK)
        return r;
    char v[32];
    r = idx_pragma(ix, "PRAGMA user_version", v, sizeof(v));
    if (r == IDX_OK && strtol(v, NULL, 10) == 1) {
        int rc = sqlite3_exec(ix->db, "ALTER TABLE messages ADD COLUMN "
                                      "vsize INTEGER NOT NULL DEFAULT -1;"
                                      "PRAGMA user_version = 2;",
                              NULL, NULL, NULL);
        if (rc == SQLITE_OK) {
            log_kv(LOG_INFO, "store.index_upgrade", "path", ix->path, "to",
                   "2", NULL);
        } else {
            r = idx_err(ix, rc, "upgrade");
            if ((rc & 0xff) == SQLITE_ERROR)
                r = IDX_DAMAGED; /* not the version-1 tables we made */
        }
    }
    if (r == IDX_OK)
        return idx_exec(ix, "COMMIT", "commit");
    sqlite3_exec(ix->db, "ROLLBACK", NULL, NULL, NULL);
    return r;
}

/* Creates the tables if the database is empty, else checks that they are
 * ours (user_version, and that our statements prepare). */
static int idx_setup(struct idx *ix, int folder_fd, bool create)
{
    /* Only a creator needs the write lock (two must not both create). */
    int r = idx_exec(ix, create ? "BEGIN IMMEDIATE" : "BEGIN", "begin");
    if (r != IDX_OK)
        return r;
    char v[32];
    r = idx_pragma(ix, "SELECT count(*) FROM sqlite_master", v, sizeof(v));
    if (r == IDX_OK && strcmp(v, "0") == 0) {
        if (create) {
            r = idx_create_schema(ix, folder_fd);
        } else {
            errno = ENOENT; /* being created by someone else: not yet */
            r = IDX_FAIL;
        }
    } else if (r == IDX_OK) {
        r = idx_pragma(ix, "PRAGMA user_version", v, sizeof(v));
        if (r == IDX_OK && strtol(v, NULL, 10) == 1) {
            sqlite3_exec(ix->db, "ROLLBACK", NULL, NULL, NULL);
            if ((r = idx_upgrade_v1(ix)) != IDX_OK)
                return r;
            return idx_setup(ix, folder_fd, create);
        }
        if (r == IDX_OK && strtol(v, NULL, 10) != IDX_VERSION) {
            log_kv(LOG_WARN, "store.index_version", "path", ix->path,
                   "version", v, NULL);
            r = IDX_DAMAGED;
        }
    }
    sqlite3_stmt *st;
    if (r == IDX_OK &&
        (r = idx_prepare(ix, "SELECT " ROW_COLS " FROM messages", &st)) == IDX_OK)
        sqlite3_finalize(st);
    if (r == IDX_OK &&
        (r = idx_prepare(ix, "SELECT uidvalidity, uidnext, highestmodseq "
                             "FROM meta WHERE id = 1", &st)) == IDX_OK)
        sqlite3_finalize(st);
    if (r == IDX_OK)
        return idx_exec(ix, "COMMIT", "commit");
    sqlite3_exec(ix->db, "ROLLBACK", NULL, NULL, NULL);
    return r;
}

int idx_open(const char *path, int folder_fd, bool create, bool check,
             struct idx **ix_r)
{
    struct idx *ix = xcalloc(1, sizeof(*ix));
    ix->path = xstrdup(path);
    /* NOMUTEX: one thread at a time per connection (the contract);
     * NOFOLLOW: no symbolic link anywhere in the path, like the rest of
     * the store. */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX |
                SQLITE_OPEN_NOFOLLOW | (create ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(path, &ix->db, flags, NULL);
    int r;
    if (rc != SQLITE_OK) {
        int p = rc & 0xff;
        struct stat sb;
        if (!create && p == SQLITE_CANTOPEN && stat(path, &sb) < 0 &&
            errno == ENOENT) {
            r = IDX_FAIL; /* errno ENOENT */
        } else {
            r = idx_err(ix, rc, "open");
        }
        goto fail;
    }
    sqlite3_extended_result_codes(ix->db, 1);
    ix->seed = (unsigned)getpid() ^ (unsigned)(uintptr_t)ix;
    sqlite3_busy_handler(ix->db, idx_busy, ix);
    char mode[32];
    if (create) {
        /* Persistent in the file; a no-op once set. */
        r = idx_pragma(ix, "PRAGMA journal_mode=WAL", mode, sizeof(mode));
        if (r != IDX_OK)
            goto fail;
        if (strcmp(mode, "wal") != 0) {
            log_kv(LOG_WARN, "store.index_error", "path", path, "op",
                   "journal_mode", "error", mode, NULL);
            errno = EIO;
            r = IDX_FAIL;
            goto fail;
        }
    }
    /* FULL: a commit is on disk when it returns, so a UID handed out is
     * never handed out again after a power loss. */
    r = idx_exec(ix, "PRAGMA synchronous=FULL", "synchronous");
    if (r != IDX_OK)
        goto fail;
    if (check) {
        char res[64];
        r = idx_pragma(ix, "PRAGMA quick_check", res, sizeof(res));
        if (r == IDX_OK && strcmp(res, "ok") != 0) {
            log_kv(LOG_WARN, "store.index_check", "path", path, "result", res,
                   NULL);
            r = IDX_DAMAGED;
        }
        if (r != IDX_OK)
            goto fail;
    }
    r = idx_setup(ix, folder_fd, create);
    if (r != IDX_OK)
        goto fail;
    *ix_r = ix;
    return IDX_OK;
fail:;
    int err = errno;
    idx_close(ix);
    errno = err;
    return r;
}

void idx_close(struct idx *ix)
{
    if (ix == NULL)
        return;
    if (ix->in_tx)
        idx_rollback(ix);
    sqlite3_close_v2(ix->db);
    free(ix->path);
    free(ix);
}

/* ---- transactions ---- */

int idx_begin(struct idx *ix)
{
    int r = idx_exec(ix, "BEGIN IMMEDIATE", "begin");
    if (r != IDX_OK)
        return r;
    ix->in_tx = true;
    ix->meta_dirty = false;
    sqlite3_stmt *st;
    r = idx_prepare(ix, "SELECT uidvalidity, uidnext, highestmodseq "
                        "FROM meta WHERE id = 1", &st);
    if (r != IDX_OK)
        goto fail;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        sqlite3_int64 uv = sqlite3_column_int64(st, 0);
        sqlite3_int64 next = sqlite3_column_int64(st, 1);
        sqlite3_int64 hms = sqlite3_column_int64(st, 2);
        sqlite3_finalize(st);
        if (uv < 1 || uv > UINT32_MAX || next < 1 || next > UINT32_MAX ||
            hms < 0) {
            log_kv(LOG_WARN, "store.index_meta", "path", ix->path, NULL);
            r = IDX_DAMAGED;
            goto fail;
        }
        ix->uidvalidity = (uint32_t)uv;
        ix->uidnext = (uint32_t)next;
        ix->highestmodseq = (uint64_t)hms;
        return IDX_OK;
    }
    sqlite3_finalize(st);
    r = rc == SQLITE_DONE ? IDX_DAMAGED : idx_err(ix, rc, "meta");
fail:
    idx_rollback(ix);
    return r;
}

int idx_commit(struct idx *ix)
{
    int r = IDX_OK;
    if (ix->meta_dirty) {
        sqlite3_stmt *st;
        r = idx_prepare(ix, "UPDATE meta SET uidnext = ?, highestmodseq = ? "
                            "WHERE id = 1", &st);
        if (r == IDX_OK) {
            sqlite3_bind_int64(st, 1, ix->uidnext);
            sqlite3_bind_int64(st, 2, (sqlite3_int64)ix->highestmodseq);
            r = idx_done(ix, st, "meta");
        }
    }
    if (r == IDX_OK)
        r = idx_exec(ix, "COMMIT", "commit");
    if (r != IDX_OK) {
        idx_rollback(ix);
        return r;
    }
    ix->in_tx = false;
    ix->meta_dirty = false;
    return IDX_OK;
}

void idx_rollback(struct idx *ix)
{
    if (sqlite3_get_autocommit(ix->db) == 0)
        sqlite3_exec(ix->db, "ROLLBACK", NULL, NULL, NULL);
    ix->in_tx = false;
    ix->meta_dirty = false;
}

bool idx_idle(const struct idx *ix)
{
    return sqlite3_get_autocommit(ix->db) != 0;
}

uint32_t idx_uidvalidity(const struct idx *ix) { return ix->uidvalidity; }
uint32_t idx_uidnext(const struct idx *ix) { return ix->uidnext; }
uint64_t idx_highestmodseq(const struct idx *ix) { return ix->highestmodseq; }

/* ---- rows ---- */

static char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return xstrdup(t != NULL ? (const char *)t : "");
}

/* One row of ROW_COLS; IDX_DAMAGED for values we never write. */
static int row_read(struct idx *ix, sqlite3_stmt *st, struct idx_row *r)
{
    sqlite3_int64 uid = sqlite3_column_int64(st, 0);
    sqlite3_int64 size = sqlite3_column_int64(st, 2);
    sqlite3_int64 flags = sqlite3_column_int64(st, 3);
    sqlite3_int64 modseq = sqlite3_column_int64(st, 5);
    sqlite3_int64 vsize = sqlite3_column_int64(st, 8);
    if (uid < 1 || uid >= ix->uidnext || size < 0 || flags < 0 ||
        flags > 63 || modseq < 0 || vsize < -1 ||
        sqlite3_column_text(st, 1) == NULL ||
        sqlite3_column_text(st, 6) == NULL) {
        log_kv(LOG_WARN, "store.index_row", "path", ix->path, NULL);
        return IDX_DAMAGED;
    }
    r->uid = (uint32_t)uid;
    r->uniq = col_text(st, 1);
    r->size = (uint64_t)size;
    r->flags = (unsigned)flags;
    r->keywords = col_text(st, 4);
    r->modseq = (uint64_t)modseq;
    r->fname = col_text(st, 6);
    r->incur = sqlite3_column_int(st, 7) != 0;
    r->vsize = vsize;
    return IDX_OK;
}

int idx_rows(struct idx *ix, struct idx_row **rows_r, size_t *n_r)
{
    sqlite3_stmt *st;
    int r = idx_prepare(ix, "SELECT " ROW_COLS " FROM messages ORDER BY uid",
                        &st);
    if (r != IDX_OK)
        return r;
    struct idx_row *rows = NULL;
    size_t n = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            rows = xreallocarray(rows, cap, sizeof(*rows));
        }
        memset(&rows[n], 0, sizeof(rows[n]));
        if ((r = row_read(ix, st, &rows[n])) != IDX_OK)
            break;
        n++;
    }
    if (r == IDX_OK && rc != SQLITE_DONE)
        r = idx_err(ix, rc, "select");
    sqlite3_finalize(st);
    if (r != IDX_OK) {
        idx_rows_free(rows, n);
        return r;
    }
    *rows_r = rows;
    *n_r = n;
    return IDX_OK;
}

int idx_find(struct idx *ix, const char *uniq, struct idx_row *row_r)
{
    sqlite3_stmt *st;
    int r = idx_prepare(ix, "SELECT " ROW_COLS " FROM messages WHERE uniq = ?",
                        &st);
    if (r != IDX_OK)
        return r;
    sqlite3_bind_text(st, 1, uniq, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    memset(row_r, 0, sizeof(*row_r));
    if (rc == SQLITE_ROW) {
        r = row_read(ix, st, row_r);
    } else if (rc == SQLITE_DONE) {
        errno = ENOENT;
        r = IDX_FAIL;
    } else {
        r = idx_err(ix, rc, "select");
    }
    sqlite3_finalize(st);
    return r;
}

int idx_insert(struct idx *ix, struct idx_row *row)
{
    /* UIDs are 32 bits (IMAP); at the end a rebuild starts a new
     * UIDVALIDITY from 1. Not reachable in practice. */
    if (ix->uidnext >= UINT32_MAX || row->size > INT64_MAX ||
        row->vsize < -1 ||
        ix->highestmodseq >= INT64_MAX)
        return IDX_DAMAGED;
    sqlite3_stmt *st;
    int r = idx_prepare(ix, "INSERT INTO messages(" ROW_COLS ") "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", &st);
    if (r != IDX_OK)
        return r;
    uint32_t uid = ix->uidnext;
    uint64_t modseq = ix->highestmodseq + 1;
    sqlite3_bind_int64(st, 1, uid);
    sqlite3_bind_text(st, 2, row->uniq, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)row->size);
    sqlite3_bind_int64(st, 4, row->flags);
    sqlite3_bind_text(st, 5, row->keywords != NULL ? row->keywords : "", -1,
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)modseq);
    sqlite3_bind_text(st, 7, row->fname, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 8, row->incur);
    sqlite3_bind_int64(st, 9, row->vsize >= 0 ? row->vsize : -1);
    r = idx_done(ix, st, "insert");
    if (r != IDX_OK)
        return r;
    ix->uidnext = uid + 1;
    ix->highestmodseq = modseq;
    ix->meta_dirty = true;
    row->uid = uid;
    row->modseq = modseq;
    return IDX_OK;
}

int idx_update(struct idx *ix, struct idx_row *row, bool bump)
{
    if (bump && ix->highestmodseq >= INT64_MAX)
        return IDX_DAMAGED;
    sqlite3_stmt *st;
    int r = idx_prepare(ix, "UPDATE messages SET fname = ?, incur = ?, "
                            "flags = ?, keywords = ?, "
                            "modseq = coalesce(?, modseq) WHERE uniq = ?", &st);
    if (r != IDX_OK)
        return r;
    uint64_t modseq = ix->highestmodseq + 1;
    sqlite3_bind_text(st, 1, row->fname, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, row->incur);
    sqlite3_bind_int64(st, 3, row->flags);
    sqlite3_bind_text(st, 4, row->keywords != NULL ? row->keywords : "", -1,
                      SQLITE_STATIC);
    if (bump)
        sqlite3_bind_int64(st, 5, (sqlite3_int64)modseq);
    else
        sqlite3_bind_null(st, 5);
    sqlite3_bind_text(st, 6, row->uniq, -1, SQLITE_STATIC);
    r = idx_done(ix, st, "update");
    if (r == IDX_OK && bump) {
        ix->highestmodseq = modseq;
        ix->meta_dirty = true;
        row->modseq = modseq;
    }
    return r;
}

int idx_set_vsize(struct idx *ix, const char *uniq, int64_t vsize)
{
    if (vsize < 0)
        return IDX_OK;
    sqlite3_stmt *st;
    int r = idx_prepare(ix, "UPDATE messages SET vsize = ? WHERE uniq = ?", &st);
    if (r != IDX_OK)
        return r;
    sqlite3_bind_int64(st, 1, vsize);
    sqlite3_bind_text(st, 2, uniq, -1, SQLITE_STATIC);
    return idx_done(ix, st, "vsize");
}

int idx_keyword_letters(struct idx *ix, char letters_r[27])
{
    sqlite3_stmt *st;
    int r = idx_prepare(ix, "SELECT DISTINCT keywords FROM messages "
                            "WHERE keywords != ''", &st);
    if (r != IDX_OK)
        return r;
    bool seen[26] = {false};
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        for (; t != NULL && *t != '\0'; t++)
            if (*t >= 'a' && *t <= 'z')
                seen[*t - 'a'] = true;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return idx_err(ix, rc, "select");
    size_t k = 0;
    for (int i = 0; i < 26; i++)
        if (seen[i])
            letters_r[k++] = (char)('a' + i);
    letters_r[k] = '\0';
    return IDX_OK;
}

int idx_delete(struct idx *ix, const char *uniq)
{
    if (ix->highestmodseq >= INT64_MAX)
        return IDX_DAMAGED;
    sqlite3_stmt *st;
    int r = idx_prepare(ix, "DELETE FROM messages WHERE uniq = ?", &st);
    if (r != IDX_OK)
        return r;
    sqlite3_bind_text(st, 1, uniq, -1, SQLITE_STATIC);
    r = idx_done(ix, st, "delete");
    if (r == IDX_OK) {
        /* An expunge is a change too (RFC 7162: HIGHESTMODSEQ moves). */
        ix->highestmodseq++;
        ix->meta_dirty = true;
    }
    return r;
}

void idx_row_clear(struct idx_row *row)
{
    free(row->uniq);
    free(row->fname);
    free(row->keywords);
    memset(row, 0, sizeof(*row));
}

void idx_rows_free(struct idx_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        idx_row_clear(&rows[i]);
    free(rows);
}
