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
 *  - store_msg_set_flags() sets the system flags (keeping keywords) and
 *    store_msg_update_flags() sets, adds or removes flags and keywords (IMAP
 *    STORE FLAGS / +FLAGS / -FLAGS): the file's ":2," part is renamed and
 *    modseq bumped. The change is computed against the index row inside
 *    the index's write lock, so two sessions changing one message at once
 *    both take effect. store_mailbox_expunge() unlinks the files of the
 *    given messages and removes their rows. All durable on return.
 *  - Keywords (doc/store.md "Keywords") are kept as Dovecot keeps them: the
 *    lower-case letters a..z of the ":2," part, letter 'a'+n standing for
 *    line "n name" of the folder's dovecot-keywords file. So a folder has at
 *    most STORE_KEYWORDS_MAX keywords; a message's keywords are a bit mask
 *    over the folder's keyword table (store_mailbox_keyword). Letters that
 *    dovecot-keywords does not name are kept in the file name untouched and
 *    not reported.
 *  - All calls are safe while deliveries and other sessions run on the
 *    same mailbox: no flag, keyword, message or UID is lost or given twice.
 *  - store_quota_usage(): bytes and messages of every folder of the user
 *    (the quota read function, also for IMAP GETQUOTA).
 */
#ifndef ESTAFETA_STORE_MAILBOX_H
#define ESTAFETA_STORE_MAILBOX_H

#include <stdbool.h>
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

/* A folder knows at most 26 keywords: the letters a..z (Dovecot). */
#define STORE_KEYWORDS_MAX 26
/* Longest keyword name we create or report (octets). */
#define STORE_KEYWORD_MAX 64

struct store_msg {
    uint32_t uid;
    const char *unique;      /* Maildir base name: the UIDL, stable forever */
    uint64_t size;           /* octets in the file (what quota counts) */
    uint64_t vsize;          /* octets as CRLF text: RFC 822 size, what POP3
                                LIST/RETR and IMAP RFC822.SIZE give; = size
                                for mail we delivered */
    unsigned flags;          /* STORE_F_* */
    uint32_t keywords;       /* bit n: the folder's keyword n */
    uint64_t modseq;
};

/* How store_msg_update_flags combines with what the message has. */
enum store_flags_op {
    STORE_FLAGS_SET,    /* flags and keywords become exactly the given ones */
    STORE_FLAGS_ADD,    /* the given ones are added */
    STORE_FLAGS_REMOVE, /* the given ones are removed */
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
/*
 * Changes message i's flags (STORE_F_* bits) and keywords (names) by op.
 * Keyword names are IMAP atoms (store_keyword_valid), matched without
 * regard to case against the folder's keywords; a name the folder does not
 * know yet is added to it (ADD and SET only; REMOVE ignores it).
 * Returns 0 (the snapshot's message i and keyword table are updated), or
 * -1 with errno: EINVAL (flag bits or a keyword name not valid), EMLINK
 * (the folder already has STORE_KEYWORDS_MAX keywords: IMAP answers
 * NO [LIMIT]), ENOENT (expunged meanwhile), EIO/ENOSPC (try again).
 */
int store_msg_update_flags(struct store_mailbox *mb, size_t i,
                           enum store_flags_op op, unsigned flags,
                           const char *const *keywords, size_t nkeywords);
/* The folder's keyword table as of the snapshot (refresh and
 * store_msg_update_flags bring it up to date): keyword n's name, or NULL
 * for a slot without a (valid) name; n < STORE_KEYWORDS_MAX. */
const char *store_mailbox_keyword(const struct store_mailbox *mb, size_t n);
/* Keyword names of message i, in slot order, into names_r (capacity
 * STORE_KEYWORDS_MAX); returns how many. Pointers valid until the next
 * call on the mailbox. */
size_t store_msg_keywords(const struct store_mailbox *mb, size_t i,
                          const char **names_r);
/* Whether kw may be a keyword: an RFC 3501 atom (flag-keyword) of 1 to
 * STORE_KEYWORD_MAX octets: no control, space, 8-bit octet or any of
 * ( ) { % * " \ ]. */
bool store_keyword_valid(const char *kw);
int store_mailbox_expunge(struct store_mailbox *mb, const size_t *idx, size_t n);

/* Bytes (file sizes) and messages in every folder of the user, after a
 * sync of each folder's index (so it may write the indexes, and the usage
 * file: call it as the server's user). A user without a Maildir yet uses
 * nothing. */
int store_quota_usage(struct store *s, const char *user, uint64_t *bytes_r,
                      uint64_t *messages_r);
/* The usage as the backend keeps it running (Maildir: estafeta.usage,
 * doc/store.md "The usage file"), without reading the folders: it may lag
 * what other programs did to them, so it is only good for letting mail in
 * well below the limits (store_deliver_quota). 0, or -1 with errno
 * (ENOTSUP: the backend keeps none; ENOENT or ESTALE: none to trust now,
 * the next store_quota_usage makes it again). */
int store_quota_usage_cached(struct store *s, const char *user,
                             uint64_t *bytes_r, uint64_t *messages_r);
/* The same from the files alone, writing nothing: for tools that run as
 * another user (estafeta user list). */
int store_quota_usage_files(struct store *s, const char *user,
                            uint64_t *bytes_r, uint64_t *messages_r);
/* Creates the standard folders of a new user (INBOX, Sent, Drafts, Trash,
 * Junk, Archive); existing ones are left alone. */
int store_user_create(struct store *s, const char *user);

#endif
