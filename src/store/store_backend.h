/*
 * store_backend: the private function table behind store.h and mailbox.h,
 * the name validation every backend shares (doc/store.md "Names are
 * validated"), and the pieces of the Maildir backend shared by its files
 * (store_maildir.c: delivery; mailbox_maildir.c: mailboxes and the index).
 * Not for use outside src/store.
 */
#ifndef ESTAFETA_STORE_STORE_BACKEND_H
#define ESTAFETA_STORE_STORE_BACKEND_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "store/mailbox.h"
#include "store/store.h"

#define STORE_LOCAL_MAX 64
#define STORE_DOMAIN_MAX 255
#define STORE_FOLDER_MAX 200

/* The flag bits that exist (mailbox.h STORE_F_*). */
#define STORE_F_ALL 63u

/* The quota warning state of a user (doc/store.md "Quota"). */
enum store_qwarn {
    STORE_QWARN_ARMED = 0,  /* below the threshold when last seen */
    STORE_QWARN_DUE = 1,    /* the next delivery crosses it: warn after it */
    STORE_QWARN_SENT = 2,   /* warned; armed again once seen below */
};
struct store_qstate {
    enum store_qwarn state;
    uint64_t max_bytes, max_messages; /* the limits when it became DUE */
};
struct store_ops {
    void (*free)(struct store *s);
    /* store_deliver for a backend that writes and names in one step (the
     * in-memory one); NULL where deliver_begin is set. In addition, when
     * qs_r is not NULL and the delivery succeeded, *qs_r is the user's
     * quota warning state as quota_state_peek reads it just after the
     * delivery (ARMED when none is kept or it cannot be read), so that a
     * backend reads it through the directories it already holds. */
    int (*deliver)(struct store *s, const char *mailbox, const char *folder,
                   const char *prefix, size_t prefix_len, store_read_fn read,
                   void *read_arg, char *uid_r, size_t uid_cap,
                   struct store_qstate *qs_r);
    /* store_deliver_begin, _commit and _abort (store.h) for a backend
     * that writes first and makes durable later (the Maildir one). begin
     * refuses with ERANGE, before anything is written, a uid that would
     * not fit in uid_cap (0: no check); (*p_r)->mailbox is the caller's
     * to set. commit sets qs[i] as deliver's qs_r for each v[i] that
     * succeeded, and frees every v[i].p but its mailbox (the
     * dispatch's). */
    int (*deliver_begin)(struct store *s, struct store_flush *fl,
                         const char *mailbox, const char *folder,
                         const char *prefix, size_t prefix_len,
                         store_read_fn read, void *read_arg, size_t uid_cap,
                         struct store_pending **p_r);
    void (*deliver_commit)(struct store *s, struct store_flush *fl,
                           struct store_commit *v, struct store_qstate *qs,
                           size_t n);
    void (*deliver_abort)(struct store_pending *p);
    int (*mailbox_path)(struct store *s, const char *mailbox, char *out,
                        size_t out_cap);
    int (*clean_tmp)(struct store *s, const char *mailbox, const char *folder,
                     long max_age);
    /* mailbox.h; the dispatch in store_maildir.c has already checked
     * message numbers and flag bits. */
    int (*mailbox_open)(struct store *s, const char *user, const char *folder,
                        unsigned open_flags, struct store_mailbox **mb_r);
    void (*mailbox_close)(struct store_mailbox *mb);
    int (*mailbox_refresh)(struct store_mailbox *mb);
    int (*msg_open)(struct store_mailbox *mb, size_t i, int *fd_r);
    /* keep_keywords: SET changes only the system flags (store_msg_set_flags);
     * keywords are already validated (store_keyword_valid). */
    int (*msg_update_flags)(struct store_mailbox *mb, size_t i,
                            enum store_flags_op op, unsigned flags,
                            bool keep_keywords, const char *const *keywords,
                            size_t nkeywords);
    /* idx: sorted, no duplicates, all < count. */
    int (*mailbox_expunge)(struct store_mailbox *mb, const size_t *idx,
                           size_t n);
    int (*quota_usage)(struct store *s, const char *user, uint64_t *bytes_r,
                       uint64_t *messages_r);
    /* Optional: the backend's running total, which may lag other
     * programs' changes (store_quota_usage_cached). */
    int (*quota_usage_cached)(struct store *s, const char *user,
                              uint64_t *bytes_r, uint64_t *messages_r);
    int (*quota_usage_files)(struct store *s, const char *user,
                             uint64_t *bytes_r, uint64_t *messages_r);
    int (*user_create)(struct store *s, const char *user);
    /* The user's quota warning state (quota.c). peek reads it without a
     * lock (ENOENT: none kept, i.e. armed); lock takes the user's state
     * lock (creating the record if `create`; else ENOENT when none) and
     * reads it; unlock writes *st durably when st is not NULL, then
     * releases. Between lock and unlock the caller may deliver. */
    int (*quota_state_peek)(struct store *s, const char *user,
                            struct store_qstate *st_r);
    int (*quota_state_lock)(struct store *s, const char *user, bool create,
                            void **h_r, struct store_qstate *st_r);
    int (*quota_state_unlock)(void *h, const struct store_qstate *st);
};

struct store {
    const struct store_ops *ops;
};

/* A delivery begun and not yet committed: the first member of the
 * backend's own struct. */
struct store_pending {
    struct store *store;
    char *mailbox;   /* the dispatch's copy, for the quota warning */
};

/* A delivering thread's flusher (store.h store_flush_new): per filesystem
 * (st_dev) a descriptor of its own, opened before anything of a batch is
 * written on it, so that the errors syncfs reports through it (per open
 * file, Linux 5.8 and later) cover everything the batch wrote there. */
#define STORE_FLUSH_DEVS 4
struct store_flush {
    bool syncfs_ok;                  /* the kernel reports syncfs errors */
    size_t n;
    dev_t dev[STORE_FLUSH_DEVS];
    int fd[STORE_FLUSH_DEVS];        /* -1: a filesystem without a trusted
                                        syncfs (FUSE, NFS, overlayfs...) */
};
/* The slot of `dev` in fl, opening a descriptor for it from dirfd (a
 * directory on that filesystem) if it has none; -1 when fl is NULL,
 * cannot use syncfs, is full, the open fails, dirfd is on another
 * filesystem, or the filesystem's syncfs is not trusted (ext2/3/4, XFS,
 * Btrfs and tmpfs are): the message is then fsync'd alone. */
int store_flush_slot(struct store_flush *fl, dev_t dev, int dirfd);

/* The part of an open mailbox every backend shares (first member of the
 * backend's own struct): the snapshot, read by the generic accessors. The
 * backend owns msgs[] and the unique strings. */
struct store_mailbox {
    struct store *store;
    uint32_t uidvalidity, uidnext;
    struct store_msg *msgs;
    size_t n, cap;
    /* The folder's keyword names by slot (NULL: none, or not a valid
     * name), owned by the backend. */
    char *kw[STORE_KEYWORDS_MAX];
};

/* 0 with the position of the '@' in *at_r, or -1 EINVAL. */
int store_check_mailbox(const char *mailbox, size_t *at_r);
/* 0 (with *inbox_r true for NULL or "INBOX" in any case), or -1 EINVAL. */
int store_check_folder(const char *folder, bool *inbox_r);

/* store_deliver without the quota warning: *qs_r (when not NULL) is the
 * state the backend peeked, as store_ops.deliver's qs_r. */
int store_deliver_peek(struct store *s, const char *mailbox, const char *folder,
                       const char *prefix, size_t prefix_len, store_read_fn read,
                       void *read_arg, char *uid_r, size_t uid_cap,
                       struct store_qstate *qs_r);

/* After a successful delivery to `mailbox` (store_deliver), given the
 * state the backend's deliver peeked: sends the quota warning if one is
 * due (quota.c). */
void store_quota_delivered(struct store *s, const char *mailbox,
                           const struct store_qstate *peeked);

/* The standard folders store_user_create makes besides the INBOX. */
extern const char *const store_std_folders[];
#define STORE_STD_FOLDERS 5

/* ---- Maildir backend internals ---- */

#define MD_HOST_MAX 100

struct md_dircache;

struct mdstore {
    struct store base;
    char *root;                 /* absolute, as configured */
    char host[MD_HOST_MAX + 1]; /* escaped for a file name */
    atomic_ulong counter;
    struct md_dircache *dcache; /* delivery's open directories */
};

struct mdpath {
    char domain[STORE_DOMAIN_MAX + 1];
    char local[STORE_LOCAL_MAX + 1];
    char folder[STORE_FOLDER_MAX + 2]; /* ".Name", or "" for the INBOX */
};

/* Validated names into *p; -1 EINVAL. */
int md_names(const char *mailbox, const char *folder, struct mdpath *p);
/* deliver_maildir.c: the ops of store_deliver_begin, _commit, _abort. */
int md_deliver_begin(struct store *s, struct store_flush *fl,
                     const char *mailbox, const char *folder,
                     const char *prefix, size_t prefix_len, store_read_fn rd,
                     void *rd_arg, size_t uid_cap, struct store_pending **p_r);
void md_deliver_commit(struct store *s, struct store_flush *fl,
                       struct store_commit *v, struct store_qstate *qs,
                       size_t n);
void md_deliver_abort(struct store_pending *p);
/* The folder's Maildir directory, opened one level at a time without
 * following links; a descriptor or -1/errno. */
int md_walk(struct mdstore *s, const struct mdpath *p);
/* Creates the Maildir (and the folder with its maildirfolder marker). */
int md_create(struct mdstore *s, const struct mdpath *p);

/* ---- the directory cache (dircache_maildir.c; doc/store.md "The
 * directory cache") ----
 *
 * Delivery keeps the tmp/ and new/ of recently used folders open instead
 * of walking root/domain/local[/.folder] for every message. Thread-safe
 * (one mutex, held only for the table's bookkeeping, never over a system
 * call that can block on the disk). At most MD_DIRCACHE_MAX entries, fewer
 * when the descriptor limit is low (two descriptors an entry, at most a
 * sixteenth of RLIMIT_NOFILE), the least recently used evicted first. An
 * entry handed out is counted: eviction or invalidation only unlists it,
 * and its descriptors are closed when the last user gives it back.
 *
 * Before a cached entry is handed out it is checked: the path
 * <root>/<domain>/<local>[/.folder]/new must lead to the very directory
 * held open (same st_dev and st_ino), and that directory's real path (from
 * /proc/self/fd) must still be the one the walk found, so a folder
 * removed, renamed, replaced, or reached through a symbolic link now is
 * never used: the entry is dropped and the walk done afresh, with every
 * check of md_walk (and the Maildir created again when it is gone). */
#define MD_DIRCACHE_MAX 256

struct md_dir {
    int tmpfd, newfd;
    /* The folder's real path (no symbolic link in it), for SQLite; NULL
     * when it could not be learnt (the entry is then not cached). */
    const char *real;
};
struct md_dircache *md_dircache_new(void);
/* Every entry must have been given back. */
void md_dircache_free(struct md_dircache *c);
/* The folder's tmp/ and new/, checked as above, or walked afresh (creating
 * the Maildir, and the folder with its maildirfolder marker, when
 * `create` and a piece is missing); one reference for the caller. NULL
 * with errno (EINVAL never: p is validated; ENOENT when !create and the
 * folder is missing; ELOOP/ENOTDIR for a link in the way). */
struct md_dir *md_dir_get(struct mdstore *s, const struct mdpath *p,
                          bool create);
/* Gives the reference back. `stale`: using the directories failed with
 * ENOENT (removed since the check): unlist the entry so the next
 * md_dir_get walks afresh. */
void md_dir_put(struct mdstore *s, struct md_dir *d, bool stale);
/* fsync of the folder's new/ after a rename into it, shared with the
 * other deliveries into the same folder at the same moment (group commit):
 * 0, or -1 with the errno of the fsync that was to cover this rename. */
int md_dir_sync_new(struct md_dir *d);
/* One more reference on d, given back with md_dir_put. */
void md_dir_hold(struct mdstore *s, struct md_dir *d);
/* The folder's index connection kept with its entry (doc/store.md "The
 * directory cache"). md_dir_index_take hands it over (nobody else can use
 * it until it is given back) when it is on the file `sb` describes, the
 * index just found beside new/; else NULL: none kept, another delivery
 * has it, or a stale one (closed here). md_dir_index_keep gives a
 * connection, out of any transaction, back for the next delivery, `sb`
 * the file it is on; it is closed instead when one is kept already or
 * the cache keeps MD_INDEX_KEEP_MAX (fewer with a small cache: a quarter
 * of its entries). Kept connections are closed with their entries. */
#define MD_INDEX_KEEP_MAX 32
struct idx;
struct idx *md_dir_index_take(struct md_dir *d, const struct stat *sb);
void md_dir_index_keep(struct md_dir *d, struct idx *ix, const struct stat *sb);
/* Closes every cached entry nobody is using (tests; and when the process
 * runs out of descriptors). */
void md_dircache_flush(struct md_dircache *c);

/* mailbox.h for Maildir (mailbox_maildir.c), see struct store_ops. */
int md_mailbox_open(struct store *s, const char *user, const char *folder,
                    unsigned open_flags, struct store_mailbox **mb_r);
void md_mailbox_close(struct store_mailbox *mb);
int md_mailbox_refresh(struct store_mailbox *mb);
int md_msg_open(struct store_mailbox *mb, size_t i, int *fd_r);
int md_msg_update_flags(struct store_mailbox *mb, size_t i,
                        enum store_flags_op op, unsigned flags,
                        bool keep_keywords, const char *const *keywords,
                        size_t nkeywords);
int md_mailbox_expunge(struct store_mailbox *mb, const size_t *idx, size_t n);
int md_quota_usage(struct store *s, const char *user, uint64_t *bytes_r,
                   uint64_t *messages_r);
/* Adds a folder's bytes and messages after syncing its index
 * (mailbox_maildir.c); -1 ENOENT if there is no such Maildir. */
int md_folder_usage(struct mdstore *s, const struct mdpath *p,
                    uint64_t *bytes, uint64_t *msgs);
/* The running total of estafeta.usage (doc/store.md "The usage file"):
 * 0, or -1 with errno (ENOENT: no Maildir or no file; ESTALE: a file not
 * to be trusted now: too old, too large, torn or not ours). */
int md_quota_usage_cached(struct store *s, const char *user, uint64_t *bytes_r,
                          uint64_t *messages_r);
/* Appends a change of the usage, when the file is there: dirfd is the
 * folder's new/ (from_new) or the folder's directory, of the INBOX or of a
 * folder in it. Errors are ignored: the file is a cache. */
void md_usage_add(int dirfd, bool from_new, bool in_folder, int64_t bytes,
                  int64_t msgs);
#define MD_USAGE_FILE "estafeta.usage"
int md_quota_usage_files(struct store *s, const char *user,
                         uint64_t *bytes_r, uint64_t *messages_r);
int md_user_create(struct store *s, const char *user);
int md_quota_state_peek(struct store *s, const char *user,
                        struct store_qstate *st_r);
/* The warning state file `rel` (estafeta.quota, or a relative path ending
 * in it, e.g. "../estafeta.quota" from a new/) opened under dirfd and read
 * without a lock, as md_quota_state_peek: 0, or -1/errno (ENOENT: none). */
int md_quota_state_peek_at(int dirfd, const char *rel,
                           struct store_qstate *st_r);
/* The state file's name, for md_quota_state_peek_at's rel. */
#define MD_QUOTA_STATE_FILE "estafeta.quota"
int md_quota_state_lock(struct store *s, const char *user, bool create,
                        void **h_r, struct store_qstate *st_r);
int md_quota_state_unlock(void *h, const struct store_qstate *st);

/* ---- dovecot-keywords (keywords_maildir.c) ---- */

#define MD_KEYWORDS_FILE "dovecot-keywords"

/* A folder's keyword table as its dovecot-keywords file has it: the name
 * of each slot as written (NULL: free), valid keyword or not, so that a
 * rewrite keeps every entry other tools made. */
struct md_kwtable {
    char *name[STORE_KEYWORDS_MAX];
};
/* Reads dirfd's dovecot-keywords the way Dovecot does ("N name" lines;
 * other lines ignored); a missing file is an empty table. 0 or -1/errno. */
int md_kw_read(int dirfd, struct md_kwtable *t);
/* Writes the table as Dovecot does ("N name\n" by slot), atomically
 * (temp file, fsync, rename, fsync of the directory), with an mtime later
 * than the file it replaces (Dovecot rereads it when the mtime changes). */
int md_kw_write(int dirfd, const struct md_kwtable *t);
void md_kw_free(struct md_kwtable *t);
/* The slot of a valid name, compared without regard to case; -1 if none. */
int md_kw_lookup(const struct md_kwtable *t, const char *name);
/* The exposed table (valid names only) into mb->kw, replacing it. */
void md_kw_expose(const struct md_kwtable *t, struct store_mailbox *mb);
/* The keyword bit mask of a string of info letters (a..z with a valid
 * name in mb->kw). */
uint32_t md_kw_mask(const struct store_mailbox *mb, const char *letters);

/* Delivery's part of the index (mailbox_maildir.c): md_index_begin takes
 * the index's write lock before the message becomes visible, so no reader
 * can see the file without its row; NULL when there is no index yet, or it
 * cannot be used now (the next open assigns the UID). d is the delivery's
 * folder (held until md_index_end); `isb` the index file found beside its
 * new/ just now, or NULL if that look failed (no connection is then kept).
 * The connection comes from d's entry when it is on that file, else it is
 * opened (by d->real when known, else from the root). md_index_end inserts
 * the row and commits when `visible`, else rolls back; it gives a clean
 * connection back to d (md_dir_index_keep) or closes it, and always
 * frees. */
/* fstatat of the folder's index file, beside d's new/ (never through a
 * link): 0 with *sb_r, or -1 with errno (ENOENT: no index yet). */
int md_index_stat(const struct md_dir *d, struct stat *sb_r);
struct md_itx;
struct md_itx *md_index_begin(struct mdstore *s, const struct mdpath *p,
                              struct md_dir *d, const struct stat *isb);
void md_index_end(struct md_itx *t, const char *name, uint64_t size,
                  uint64_t vsize, bool visible);

#endif
