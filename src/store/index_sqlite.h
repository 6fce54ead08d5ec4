/*
 * index_sqlite: the index of one Maildir folder (doc/store.md "The index"),
 * a SQLite database `<folder>/estafeta.index` in WAL mode. It records the
 * folder's UIDVALIDITY, next UID and highest modseq, and per message its
 * UID, unique name, size, CRLF size, flags, keyword letters, modseq and
 * where the file is now.
 * The Maildir files stay the source of truth; this is the durable UID map
 * and a cache of what the names say (mailbox_maildir.c keeps it in step).
 *
 * Contract:
 *  - One struct idx is one SQLite connection, used by one thread at a time
 *    (the library is built thread-safe; WAL plus a 5 s busy timeout let
 *    many connections in many threads and processes share the file).
 *  - Every change happens between idx_begin (BEGIN IMMEDIATE: the write
 *    lock, so changes of the folder's files made under it are serialised
 *    with every other index user) and idx_commit / idx_rollback. The
 *    connection runs synchronous=FULL: a commit is durable on return.
 *  - Results: IDX_OK, IDX_FAIL with errno (EIO for a database error that
 *    may pass: busy, disk full, I/O; ENOENT when !create and no index), or
 *    IDX_DAMAGED: the file is not a database, is corrupt, fails the quick
 *    check, has another schema, or holds impossible values. The caller
 *    rebuilds (renames it aside, starts afresh) on IDX_DAMAGED only.
 *  - A new index gets a UIDVALIDITY from the clock, but always above the
 *    last one handed out in this folder (kept in `estafeta.uidvalidity`,
 *    so an index deleted and rebuilt in the same second still changes it).
 *  - idx_delete also moves HIGHESTMODSEQ (an expunge is a change).
 *  - Rows returned are malloc'd (idx_rows_free / idx_row_clear).
 */
#ifndef ESTAFETA_STORE_INDEX_SQLITE_H
#define ESTAFETA_STORE_INDEX_SQLITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { IDX_OK = 0, IDX_FAIL = -1, IDX_DAMAGED = -2 };

#define IDX_FILE "estafeta.index"
#define IDX_UIDVALIDITY_FILE "estafeta.uidvalidity"

struct idx_row {
    uint32_t uid;
    char *uniq;      /* the Maildir base name (no info part) */
    char *fname;     /* the file's name now: uniq, maybe ":2,<info>" */
    bool incur;      /* in cur/ (else new/) */
    uint64_t size;
    unsigned flags;  /* STORE_F_* */
    char *keywords;  /* other info letters, ASCII order (kept on rename):
                        a..z are keywords (dovecot-keywords), the rest
                        letters we do not know */
    uint64_t modseq;
    int64_t vsize;   /* octets as CRLF text; -1: not known yet */
};

struct idx;

/* Opens the index at path (creating it when `create`); folder_fd is the
 * folder's directory, for the UIDVALIDITY record. `check` runs SQLite's
 * quick_check. *ix_r is set only on IDX_OK. */
int idx_open(const char *path, int folder_fd, bool create, bool check,
             struct idx **ix_r);
void idx_close(struct idx *ix);

int idx_begin(struct idx *ix);
int idx_commit(struct idx *ix);
void idx_rollback(struct idx *ix);
/* Whether the connection is out of any transaction (a failed ROLLBACK can
 * leave one open): only such a connection may be kept for later use. */
bool idx_idle(const struct idx *ix);

/* Valid between idx_begin and the end of the transaction (and after it,
 * as last seen). */
uint32_t idx_uidvalidity(const struct idx *ix);
uint32_t idx_uidnext(const struct idx *ix);
uint64_t idx_highestmodseq(const struct idx *ix);

/* Every row, by ascending UID. */
int idx_rows(struct idx *ix, struct idx_row **rows_r, size_t *n_r);
/* The row of a unique name: IDX_OK, or IDX_FAIL with ENOENT if none. */
int idx_find(struct idx *ix, const char *uniq, struct idx_row *row_r);
/* Inserts row (uniq, fname, incur, size, flags, keywords) with the next
 * UID and modseq, which it writes into row->uid and row->modseq. */
int idx_insert(struct idx *ix, struct idx_row *row);
/* Updates fname, incur, flags, keywords of the row of row->uniq; `bump`
 * gives it a new modseq (written into row->modseq). */
int idx_update(struct idx *ix, struct idx_row *row, bool bump);
int idx_delete(struct idx *ix, const char *uniq);
/* Records the CRLF size of a message (no modseq: the content of a Maildir
 * file never changes). A negative vsize does nothing. */
int idx_set_vsize(struct idx *ix, const char *uniq, int64_t vsize);
/* The keyword letters a..z that some row holds, in order, into letters_r. */
int idx_keyword_letters(struct idx *ix, char letters_r[27]);

void idx_row_clear(struct idx_row *row);
void idx_rows_free(struct idx_row *rows, size_t n);

#endif
