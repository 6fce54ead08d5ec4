/*
 * queue: the durable mail queue, behind a small interface so that the
 * filesystem backend (queue_fs.c, the default), an in-memory backend for
 * tests (queue_mem.c), and later a PostgreSQL backend are interchangeable.
 * The crash-safety invariants the fs backend keeps are written down in
 * doc/queue.md; read it before changing queue_fs.c.
 *
 * Life of a message:
 *   queue_msg_open()     new message in the incoming area, id assigned
 *   queue_msg_write()*   body bytes, as they arrive (never held in memory)
 *   queue_commit()       envelope + body made durable; only after it returns 0
 *                        may the server answer 250. Takes a batch, so one
 *                        directory fsync covers many messages (group commit).
 *   -- or queue_msg_abort(): nothing of it remains
 *   queue_list()         committed messages (recovery, queue listing)
 *   queue_load()         envelope with per-recipient state
 *   queue_body_open/read/close
 *   queue_rcpt_update()  durable per-recipient state change
 *   queue_keep()         after a delivery pass that leaves the message in
 *                        the queue: a message of the fs backend's accept
 *                        log becomes a queue file of its own
 *   queue_remove()       when every recipient is done
 *   queue_set_aside()    unreadable message moved out of the way, kept for
 *                        the admin
 *   queue_hold()/queue_release()  out of the active queue and back, by the
 *                        admin (below)
 *
 * Threads: one struct queue is shared by the event loop (open/write/abort),
 * the commit worker (commit) and the delivery threads (the rest). Calls on
 * different messages may run concurrently; calls on the same message are
 * never made concurrently by estafeta. All functions return 0 on success and
 * -1 on failure with errno set (ENOSPC, EDQUOT, EIO, ...) and, where an err_r
 * is taken, a message in it; queue_load returns -2 for a message that exists
 * but cannot be parsed (corrupt: set it aside).
 */
#ifndef ESTAFETA_QUEUE_QUEUE_H
#define ESTAFETA_QUEUE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lib/buf.h"

#define QUEUE_ID_SIZE 24   /* id text is at most 23 chars of [0-9A-Za-z] + NUL */

enum queue_rcpt_state {
    QUEUE_RCPT_PENDING = 0,
    QUEUE_RCPT_DONE = 1,      /* delivered */
    QUEUE_RCPT_FAILED = 2,    /* permanent failure (bounce, issue 5) */
};

#define QUEUE_F_SMTPUTF8 1u
#define QUEUE_F_8BITMIME 2u
#define QUEUE_F_BINARYMIME 4u

struct queue_rcpt {
    char *address;        /* "local@domain" as accepted at RCPT */
    char *orcpt;          /* "" or "rfc822;xtext" as received */
    unsigned notify;      /* SMTP_NOTIFY_* bits */
    enum queue_rcpt_state state;
    char *status;         /* last status text ("" if none); e.g. "250 2.0.0 delivered" */
};

struct queue_env {
    char id[QUEUE_ID_SIZE];
    char *sender;          /* "" for the null reverse-path */
    int64_t created;       /* unix seconds */
    unsigned flags;        /* QUEUE_F_* */
    int ret;               /* SMTP_RET_* */
    char *envid;           /* "" or xtext as received */
    char *client_addr;     /* for logs and DSNs */
    char *client_helo;
    char *session_id;
    char *auth_user;       /* "" unless authenticated */
    struct queue_rcpt *rcpts;
    size_t nrcpts;
    uint64_t body_size;    /* set by queue_load */
    unsigned attempts;     /* delivery attempts so far (queue_load) */
};

struct queue;
struct queue_msg;
struct queue_body;

/* Backends. `dir` is created (with incoming/, msg/, hold/, corrupt/) if
 * missing. */
struct queue *queue_fs_open(const char *dir, struct buf *err_r);
struct queue *queue_mem_new(void);
void queue_close(struct queue *q);

int queue_msg_open(struct queue *q, struct queue_msg **m_r);
const char *queue_msg_id(const struct queue_msg *m);
int queue_msg_write(struct queue_msg *m, const void *p, size_t n);
uint64_t queue_msg_size(const struct queue_msg *m);
void queue_msg_abort(struct queue_msg *m);

/*
 * Commit n messages with their envelopes (env[i].id is ignored: the id is
 * the message's). results_r[i] is 0 or an errno value for each. Every
 * message is consumed (freed) whatever its result; a failed one leaves
 * nothing behind. Returns 0 if all succeeded, else -1.
 */
int queue_commit(struct queue *q, struct queue_msg **msgs,
                 const struct queue_env *envs, size_t n, int *results_r);

/* Calls cb for each committed message id, in no particular order. */
int queue_list(struct queue *q, void (*cb)(const char *id, void *arg), void *arg);
/* Removes incomplete incoming messages left by a crash (logged), sets aside
 * committed messages that fail validation (logged). Call before queue_list
 * at start-up, while nothing else uses the queue. */
int queue_recover(struct queue *q);

int queue_load(struct queue *q, const char *id, struct queue_env **env_r);
void queue_env_free(struct queue_env *env);

int queue_body_open(struct queue *q, const char *id, struct queue_body **b_r);
/* Returns bytes read (0 at end) or -1 with errno. */
ssize_t queue_body_read(struct queue_body *b, void *p, size_t n);
void queue_body_close(struct queue_body *b);

/* Durably records the state of recipient `index` and counts one attempt. */
int queue_rcpt_update(struct queue *q, const char *id, size_t index,
                      enum queue_rcpt_state state, const char *status);
int queue_remove(struct queue *q, const char *id);
/*
 * The accept log (doc/queue.md) holds a message only for its first
 * delivery pass: call queue_keep when that pass leaves anything to do, so
 * everything after it (states, retries, the relay, hold) works on a queue
 * file. 0 (also when there is nothing to do: not in the log, another
 * backend, or another process than the server), -1 with errno.
 */
int queue_keep(struct queue *q, const char *id);
/*
 * fs backend: the accept log's limits (the limit table's queue-log-message
 * and queue-log-memory): a message whose body exceeds log_message_max, or
 * that would take the memory of all messages being received beyond
 * log_memory_max, is written to a file of its own; 0 sends every message
 * there. No effect on other backends. Call before the queue is used.
 */
void queue_fs_tune(struct queue *q, uint64_t log_message_max,
                   uint64_t log_memory_max);
/*
 * fs backend, at a clean stop, once nothing uses the queue any more: flush
 * everything and leave a marker, so the next queue_recover need not read
 * every queued body against its CRC (only a crash can lose a page; doc/
 * queue.md "Recovery"). 0 or -1 with errno (then the next start checks
 * every body). No effect on other backends.
 */
int queue_fs_mark_clean(struct queue *q);
int queue_set_aside(struct queue *q, const char *id, const char *reason);

/*
 * Administration (`estafeta queue`, doc/queue.md "Hold and release"). In a
 * process other than the server, a message that is only in the accept log
 * is being delivered: queue_hold, queue_remove, queue_set_aside and
 * queue_rcpt_update fail with EBUSY for it. A held
 * message is out of the active queue: queue_list, queue_load,
 * queue_body_open and queue_rcpt_update do not see it (ENOENT), so nothing
 * delivers it. The admin command may run while the server does: these are
 * safe against the server's calls on the same message (doc/queue.md says
 * what a race can cost: a recipient delivered twice, never a loss).
 *  - queue_hold: active -> held; -1/ENOENT if not in the active queue.
 *  - queue_release: held -> active; -1/ENOENT if not held. The server
 *    learns of it at its next queue scan (SIGUSR1) or start.
 *  - queue_list_held: cb for each held message id, in no particular order.
 *  - queue_load_any / queue_body_open_any: queue_load / queue_body_open
 *    for a message that is active or held; *held_r (may be NULL) says
 *    which.
 * queue_remove removes a held message too. Ids are checked as everywhere
 * (EINVAL).
 */
int queue_hold(struct queue *q, const char *id);
int queue_release(struct queue *q, const char *id);
int queue_list_held(struct queue *q, void (*cb)(const char *id, void *arg),
                    void *arg);
int queue_load_any(struct queue *q, const char *id, struct queue_env **env_r,
                   bool *held_r);
int queue_body_open_any(struct queue *q, const char *id,
                        struct queue_body **b_r, bool *held_r);

/*
 * Test hooks of the in-memory backend (no effect on other backends), so the
 * delivery logic and smtpd can be tested on the failure paths:
 *  - queue_mem_fail(q, ops, err): from now on the operations in `ops`
 *    (QUEUE_MEM_FAIL_* bits) fail with errno err (a commit reports err for
 *    every message and keeps none); err 0 clears it.
 *  - queue_mem_corrupt(q, id): queue_load returns -2 for that message from
 *    now on, as the fs backend does for a file that fails validation.
 */
#define QUEUE_MEM_FAIL_OPEN 1u
#define QUEUE_MEM_FAIL_WRITE 2u
#define QUEUE_MEM_FAIL_COMMIT 4u
#define QUEUE_MEM_FAIL_UPDATE 8u
#define QUEUE_MEM_FAIL_REMOVE 16u
#define QUEUE_MEM_FAIL_LOAD 32u
void queue_mem_fail(struct queue *q, unsigned ops, int err);
int queue_mem_corrupt(struct queue *q, const char *id);

#endif
