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
 * Delivery order (doc/queue.md): write to tmp/, fsync the file, rename into
 * new/, fsync new/. A crash leaves the message either absent (a stale tmp/
 * file, cleaned up later) or complete. Never a partial file in new/.
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
 *    small, checked before anything is written).
 *  - thread-safe: may be called concurrently for the same mailbox.
 */
#ifndef ESTAFETA_STORE_STORE_H
#define ESTAFETA_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct store;

/* A uid_r of this capacity always suffices (a uid is one file name). */
#define STORE_UID_SIZE 256

typedef ssize_t (*store_read_fn)(void *arg, void *p, size_t n);

struct store *store_maildir_new(const char *root, const char *hostname);
struct store *store_mem_new(void);
void store_free(struct store *s);

int store_deliver(struct store *s, const char *mailbox, const char *folder,
                  const char *prefix, size_t prefix_len,
                  store_read_fn read, void *read_arg,
                  char *uid_r, size_t uid_cap);

/* Quota hook, called by the delivery code before store_deliver(): 0 if a
 * message of incoming_size octets fits within max_bytes and max_messages
 * (0 = unlimited) on top of what the user has in all folders
 * (store_quota_usage, mailbox.h), or -1 with errno EDQUOT when it would
 * exceed one of them (other errno: usage unknown, a temporary failure). */
int store_deliver_quota(struct store *s, const char *user, uint64_t max_bytes,
                        uint64_t max_messages, uint64_t incoming_size);

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
