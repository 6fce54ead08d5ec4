/*
 * store: the mailbox store. The Maildir backend (store_maildir.c) is the
 * default and the source of truth; an in-memory backend (store_mem.c) serves
 * tests; a PostgreSQL backend can be added later behind the same interface.
 * POP3 and IMAP (later issues) reach mailboxes only through this module.
 *
 * Layout of the Maildir backend (doc/store.md): <root>/<domain>/<local>/ is
 * a Maildir (tmp/ new/ cur/), Maildir++ folders as .Name subdirectories.
 * Messages are stored byte for byte as delivered, CRLF line ends (as
 * Dovecot's mail_save_crlf), so sizes are RFC 822 sizes.
 * The unique file name (without the ":2,FLAGS" info part) is the message's
 * stable unique id: it never changes when flags change or the message moves
 * from new/ to cur/, so UIDL and IMAP UIDs can be keyed on it.
 *
 * Delivery order (doc/store.md "Delivery"): write an unnamed file (or one
 * in tmp/), flush it (fsync, or one syncfs for a batch), name it in new/,
 * fsync new/. A crash leaves the message either absent (a stale tmp/ file,
 * cleaned up later) or complete. Never a partial file in new/.
 *
 * Unique names carry ",S=<size>,W=<CRLF size>" as Dovecot writes them, so
 * other tools (and a rebuilt index) know both sizes without reading.
 *
 * Contract of store_deliver():
 *  - mailbox is a user address from the configuration ("local@domain");
 *    the backend still refuses a name that could escape its directory
 *    ('/', leading '.', "..", control characters, empty parts): -1 EINVAL.
 *  - folder NULL means INBOX; otherwise a Maildir++ folder name, created
 *    if missing.
 *  - the content is prefix[0..prefix_len) followed by what read() returns
 *    until it returns 0; a read() of -1 aborts the delivery (nothing remains).
 *  - returns 0 and writes the unique id into uid_r (capacity uid_cap, at
 *    most STORE_UID_SIZE is ever needed; uid_r may be NULL), or -1 with
 *    errno (temporary failure: the caller retries; ERANGE if uid_cap is too
 *    small, checked before anything is visible: nothing is delivered).
 *  - thread-safe: may be called concurrently for the same mailbox.
 */
#ifndef ESTAFETA_STORE_STORE_H
#define ESTAFETA_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct store;

/* A uid_r of this capacity always suffices (a uid is one file name). */
#define STORE_UID_SIZE 256

typedef ssize_t (*store_read_fn)(void *arg, void *p, size_t n);

/* The Maildir backend keeps the tmp/ and new/ of up to 256 recently used
 * folders open for delivery (two descriptors each, fewer entries when
 * RLIMIT_NOFILE is low), checked before each use against removal, renames
 * and symbolic links (doc/store.md "The directory cache"); store_free
 * closes them. */
struct store *store_maildir_new(const char *root, const char *hostname);
struct store *store_mem_new(void);
void store_free(struct store *s);

int store_deliver(struct store *s, const char *mailbox, const char *folder,
                  const char *prefix, size_t prefix_len,
                  store_read_fn read, void *read_arg,
                  char *uid_r, size_t uid_cap);

/*
 * Batched delivery (doc/store.md "Batched delivery"): store_deliver in two
 * steps, so that one thread writes several messages and then makes them
 * all durable with one flush of their filesystem instead of one each.
 *
 * store_deliver_begin: the checks of store_deliver, then the message
 *   (prefix, then what read() returns) written into a file nobody sees yet
 *   and that is not yet durable: 0 with *p_r, or -1 with errno (nothing
 *   left behind). fl: the calling thread's flusher, or NULL (the message
 *   then gets an fsync of its own at commit).
 * store_deliver_commit: v[0..n), each from store_deliver_begin on this
 *   store with the same fl, made durable and visible: the data flushed
 *   (syncfs, once per filesystem, when fl and two or more messages share
 *   it; else an fsync each), each file named in new/, each new/ fsync'd
 *   once. Sets every v[i].err (0: delivered, v[i].uid its unique id, and
 *   the quota warning sent if due, as store_deliver does; else an errno,
 *   a temporary failure with nothing of it visible) and consumes every
 *   v[i].p. A failed flush fails exactly the messages it was to cover.
 * store_deliver_abort: gives up a begun delivery; nothing of it remains.
 *
 * A flusher serves one thread at a time: syncfs reports a write error once
 * per open file, so each flusher keeps descriptors of its own, opened
 * before its batch writes anything (an error anywhere on the filesystem
 * since then fails the whole batch: retried, never lost).
 */
struct store_pending;
struct store_flush;
struct store_commit {
    struct store_pending *p;    /* in; consumed by store_deliver_commit */
    int err;                    /* out: 0, or the errno of the failure */
    char uid[STORE_UID_SIZE];   /* out, when err is 0 */
};
/* Never NULL (aborts when out of memory, as xalloc); syncfs is used only
 * on kernels that report its errors (Linux 5.8 and later). */
struct store_flush *store_flush_new(void);
void store_flush_free(struct store_flush *fl);
int store_deliver_begin(struct store *s, struct store_flush *fl,
                        const char *mailbox, const char *folder,
                        const char *prefix, size_t prefix_len,
                        store_read_fn read, void *read_arg,
                        struct store_pending **p_r);
void store_deliver_commit(struct store *s, struct store_flush *fl,
                          struct store_commit *v, size_t n);
void store_deliver_abort(struct store_pending *p);

/* Quota hook, called by the delivery code before store_deliver(): 0 if a
 * message of incoming_size octets fits within max_bytes and max_messages
 * (0 = unlimited) on top of what the user has in all folders
 * (store_quota_usage, mailbox.h), or -1 with errno EDQUOT when it would
 * exceed one of them (other errno: usage unknown, a temporary failure).
 *
 * It also keeps the user's quota warning (doc/store.md "Quota"): when the
 * delivery will take the user to STORE_QUOTA_WARN_PERCENT of a limit, the
 * next successful store_deliver() to that user puts one "Your mailbox is
 * almost full" message into the INBOX (at once if the message is refused
 * and the user is already that full); no second one until usage has been
 * seen below the threshold. The state is kept in the store, not memory. */
int store_deliver_quota(struct store *s, const char *user, uint64_t max_bytes,
                        uint64_t max_messages, uint64_t incoming_size);

#define STORE_QUOTA_WARN_PERCENT 90

/* Pure quota arithmetic, shared by the delivery check, the SMTP RCPT
 * check and the tools (no sum can wrap): */
/* Whether one more message of incoming octets fits (0 limits: unlimited). */
bool store_quota_fits(uint64_t bytes, uint64_t messages, uint64_t max_bytes,
                      uint64_t max_messages, uint64_t incoming);
/* Whether usage is at or above STORE_QUOTA_WARN_PERCENT of a limit. */
bool store_quota_high(uint64_t bytes, uint64_t messages, uint64_t max_bytes,
                      uint64_t max_messages);
/* The usage to decide on one more message of `incoming` octets with: the
 * backend's running total (store_quota_usage_cached, which may lag) when
 * `total_ok` and it lets the message in below the warning threshold, else
 * the exact reading (store_quota_usage), so a refusal never rests on a
 * stale total (doc/store.md "The usage file"). 0, or -1 with errno. */
int store_quota_usage_for(struct store *s, const char *user, uint64_t max_bytes,
                          uint64_t max_messages, uint64_t incoming, bool total_ok,
                          uint64_t *bytes_r, uint64_t *messages_r);
/* "12 messages, 34 KiB of 100 MiB (0%)": usage next to the limits (the
 * percentage is of the fuller one); "12 messages, 34 KiB (no quota)"
 * without limits. Always NUL-terminated; returns out. */
char *store_quota_describe(char *out, size_t cap, uint64_t bytes,
                           uint64_t messages, uint64_t max_bytes,
                           uint64_t max_messages);
/* Octets as "512 B", "34 KiB", "1.5 MiB", "100 MiB". */
char *store_size_format(char *out, size_t cap, uint64_t bytes);

/* The octets of a message as CRLF text, its RFC 822 size (Dovecot's
 * "virtual size"): what POP3 RETR sends before byte-stuffing and IMAP
 * RFC822.SIZE counts. A bare LF or bare CR counts as CRLF, and a last line
 * without a line end gets one (the proto/pop3.h writer does the same).
 * Fed in any pieces, the result is the same. */
struct store_crlf {
    uint64_t n;
    bool cr;   /* the last octet was a CR */
    bool bol;  /* at the start of a line: the last octet was a LF, or none */
};
void store_crlf_init(struct store_crlf *c);
void store_crlf_feed(struct store_crlf *c, const void *p, size_t len);
uint64_t store_crlf_finish(const struct store_crlf *c);
/* The CRLF size of what fd reads to its end; -1 with errno. */
int store_crlf_fd(int fd, uint64_t *vsize_r);

/* Absolute path of a mailbox's Maildir (for tests and tools); -1 EINVAL for
 * a bad name. Does not create it. */
int store_mailbox_path(struct store *s, const char *mailbox, char *out,
                       size_t out_cap);

/* Unlinks regular files older than max_age seconds in the tmp/ of a
 * mailbox's INBOX (folder NULL) or folder: deliveries cut short by a crash
 * (doc/store.md). Returns the number removed, or -1 with errno; a mailbox
 * that does not exist yet has nothing to clean (0). */
int store_clean_tmp(struct store *s, const char *mailbox, const char *folder,
                    long max_age);

/* In-memory backend inspection for tests: number of messages in mailbox,
 * and a copy of message i (malloc'd, NUL-terminated for convenience, *len_r
 * set to its length); NULL if out of range. `mailbox` is "local@domain" for
 * the INBOX or "local@domain/Folder" for a folder. 0 / NULL for a store of
 * another backend. */
size_t store_mem_count(struct store *s, const char *mailbox);
char *store_mem_get(struct store *s, const char *mailbox, size_t i,
                    size_t *len_r);

#endif
