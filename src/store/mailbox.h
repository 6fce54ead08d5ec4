/*
 * mailbox: reading and changing a mailbox (one Maildir folder) through its
 * index, for POP3 now and IMAP later. Part of the store interface
 * (store.h): protocol code never touches files or the index directly, so a
 * PostgreSQL store can implement the same calls.
 *
 * The index (doc/store.md; one SQLite database per folder, WAL mode)
 * records per folder a UIDVALIDITY and the next UID, and per message its
 * UID, unique id (the Maildir base name, stable forever), size, flags,
 * keywords and modseq. UIDs are assigned strictly increasing in delivery
 * order (store_deliver assigns one as it makes the message visible) and are
 * never reused. The Maildir files stay the source of truth: flags live in
 * the ":2,FLAGS" suffix; a message without an index row (delivered by
 * another tool, or a crash between rename and index) gets the next UID when
 * the mailbox is opened, in file-name (= delivery time) order; a lost or
 * damaged index is rebuilt from the files with a new UIDVALIDITY.
 *
 * Contract:
 *  - store_mailbox_open(s, user, folder, flags, mb_r): folder NULL is INBOX.
 *    STORE_OPEN_EXCLUSIVE takes the mailbox's POP3 lock (flock on a lock
 *    file): a second exclusive open fails with EWOULDBLOCK, so POP3 answers
 *    -ERR [IN-USE]. Delivery never needs the lock.
 *    The open takes a snapshot: messages 1..count as they are now (new
 *    deliveries appear only after store_mailbox_refresh()). Returns 0 or -1
 *    with errno (ENOENT: no such user/folder; EWOULDBLOCK; EIO).
 *  - Message numbers are 0-based indexes into the snapshot.
 *  - store_msg_open() gives a read-only fd on the message file (the caller
 *    closes it); the content is what was delivered, CRLF line ends.
 *  - store_msg_set_flags() renames the file's ":2," part and bumps modseq;
 *    store_mailbox_expunge() unlinks the files of the given messages and
 *    removes their rows; both are durable on return.
 *  - All calls are safe while deliveries and other sessions run on the
 *    same mailbox: no flag, message or UID is lost or given twice.
 *  - store_quota_usage(): bytes and messages of every folder of the user.
 */
#ifndef ESTAFETA_STORE_MAILBOX_H
#define ESTAFETA_STORE_MAILBOX_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define STORE_OPEN_EXCLUSIVE 1u

/* Maildir flags (the letters of ":2,"), as bits. */
#define STORE_F_DRAFT    1u   /* D */
#define STORE_F_FLAGGED  2u   /* F */
#define STORE_F_PASSED   4u   /* P */
#define STORE_F_REPLIED  8u   /* R (\Answered) */
#define STORE_F_SEEN     16u  /* S */
#define STORE_F_TRASHED  32u  /* T (\Deleted) */

struct store_msg {
    uint32_t uid;
    const char *unique;      /* Maildir base name: the UIDL, stable forever */
    uint64_t size;           /* octets as stored (= RFC 822 size, CRLF) */
    unsigned flags;          /* STORE_F_* */
    uint64_t modseq;
};

struct store_mailbox;

int store_mailbox_open(struct store *s, const char *user, const char *folder,
                       unsigned open_flags, struct store_mailbox **mb_r);
void store_mailbox_close(struct store_mailbox *mb);
uint32_t store_mailbox_uidvalidity(const struct store_mailbox *mb);
uint32_t store_mailbox_uidnext(const struct store_mailbox *mb);
size_t store_mailbox_count(const struct store_mailbox *mb);
const struct store_msg *store_mailbox_msg(const struct store_mailbox *mb, size_t i);
/* Adds messages delivered since the snapshot (at the end, higher UIDs). */
int store_mailbox_refresh(struct store_mailbox *mb);
int store_msg_open(struct store_mailbox *mb, size_t i, int *fd_r);
int store_msg_set_flags(struct store_mailbox *mb, size_t i, unsigned flags);
int store_mailbox_expunge(struct store_mailbox *mb, const size_t *idx, size_t n);

int store_quota_usage(struct store *s, const char *user, uint64_t *bytes_r,
                      uint64_t *messages_r);
/* Creates the standard folders of a new user (INBOX, Sent, Drafts, Trash,
 * Junk, Archive); existing ones are left alone. */
int store_user_create(struct store *s, const char *user);

#endif
