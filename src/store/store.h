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
 *  - returns 0 and writes the unique id into uid_r (capacity uid_cap), or -1
 *    with errno (temporary failure: the caller retries).
 *  - thread-safe: may be called concurrently for the same mailbox.
 */
#ifndef ESTAFETA_STORE_STORE_H
#define ESTAFETA_STORE_STORE_H

#include <stddef.h>
#include <sys/types.h>

struct store;

typedef ssize_t (*store_read_fn)(void *arg, void *p, size_t n);

struct store *store_maildir_new(const char *root, const char *hostname);
struct store *store_mem_new(void);
void store_free(struct store *s);

int store_deliver(struct store *s, const char *mailbox, const char *folder,
                  const char *prefix, size_t prefix_len,
                  store_read_fn read, void *read_arg,
                  char *uid_r, size_t uid_cap);

/* Absolute path of a mailbox's Maildir (for tests and tools); -1 EINVAL for
 * a bad name. Does not create it. */
int store_mailbox_path(struct store *s, const char *mailbox, char *out,
                       size_t out_cap);

/* In-memory backend inspection for tests: number of messages in mailbox,
 * and a copy of message i (malloc'd, *len_r set); NULL if out of range. */
size_t store_mem_count(struct store *s, const char *mailbox);
char *store_mem_get(struct store *s, const char *mailbox, size_t i,
                    size_t *len_r);

#endif
