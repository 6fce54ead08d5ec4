/*
 * bounce: delivery status notifications about a queued message, queued in
 * turn as a new message (RFC 3461 semantics, RFC 3464 format; the text
 * itself is built by proto/dsn.h). Called from the relay and the queue
 * manager's delivery thread; doc/bounces.md says when DSNs are sent.
 *
 * Contract:
 *  - bounce_wanted(): RFC 3461 4.1. notify is the recipient's SMTP_NOTIFY_*
 *    bits as stored (0 = NOTIFY not given: FAILURE and DELAY). NEVER gives
 *    false for everything; SUCCESS covers delivered, relayed and expanded.
 *    The caller filters its recipients with it before bounce_send.
 *  - bounce_send(): builds one DSN about message env for rcpts[0..n) (one
 *    action kind or mixed: the Subject follows the worst, failure before
 *    delay before success) and commits it to q as a new message: sender ""
 *    (null reverse-path), one recipient env->sender with NOTIFY=NEVER,
 *    flags SMTPUTF8 when the original had it and 8BITMIME when any 8-bit
 *    octet went into the DSN. The original's body is read with
 *    queue_body_open(q, env->id, ...) and streamed into the new message in
 *    64 KiB chunks, never held whole; env->body_size (as queue_load sets
 *    it) decides in advance whether it fits bounce-size, and a body found
 *    larger while copying makes the DSN start again with headers only.
 *    Part 3 is the whole original only for a failure report with RET not
 *    HDRS, not BINARYMIME, and at most cfg->limits[LIM_BOUNCE_SIZE] octets;
 *    else its header section (at most LIM_HEADER_SECTION octets; part 1
 *    says why and whether it was cut).
 *    Returns 0 with the new id in newid_r; 0 with newid_r "" and nothing
 *    queued when env->sender is "" (never a DSN about a DSN: RFC 5321
 *    4.5.5) or n == 0; -1 with errno on a queue error (open, write,
 *    body read, commit), and then nothing of the DSN is left in the queue.
 *    The caller keeps the recipient states; it should mark recipients
 *    reported only after 0.
 *  - Strings in bounce_rcpt are the caller's; diagnostics from a remote
 *    server must have been stripped of control characters already (they
 *    are also capped and cleaned again here).
 *  - Thread-safe as far as the queue is: no state of its own.
 */
#ifndef ESTAFETA_RELAY_BOUNCE_H
#define ESTAFETA_RELAY_BOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"
#include "queue/queue.h"

enum bounce_action { BOUNCE_FAILED, BOUNCE_DELAYED, BOUNCE_DELIVERED, BOUNCE_RELAYED, BOUNCE_EXPANDED };

struct bounce_rcpt {
    const char *address;     /* final recipient "local@domain" */
    const char *orcpt;       /* "" or as stored: "rfc822;xtext" */
    enum bounce_action action;
    const char *status;      /* RFC 3463 "5.1.1"; when NULL it is taken from diagnostic's enhanced code, else derived from the action (5.0.0 / 4.0.0 / 2.0.0) */
    const char *remote_mta;  /* host name of the server that answered, or NULL */
    const char *diagnostic;  /* the remote reply "550 5.1.1 <x@y>: no such user" or our own reason, or NULL */
    int64_t last_attempt;    /* unix seconds, 0 = unknown */
    int64_t retry_until;     /* for DELAYED: when we give up */
};

/* Which recipients need a DSN of this action per RFC 3461 4.1 (NOTIFY absent = FAILURE and DELAY for failed/delayed only; NEVER = none; SUCCESS for delivered/relayed/expanded only when asked). */
bool bounce_wanted(unsigned notify, enum bounce_action action);

/* Builds the DSN about message env (its body read with queue_body_open(q, env->id, ...)) for the n recipients (all of one action kind or mixed) and commits it to q as a new message: sender "" (null reverse-path), one recipient env->sender, NOTIFY=NEVER. Returns 0 with the new id in newid_r; 0 with newid_r "" and nothing queued when env->sender is "" (never a DSN about a DSN) or n == 0; -1 with errno on a queue error (nothing left behind). */
int bounce_send(struct queue *q, const struct config *cfg, const struct queue_env *env, const struct bounce_rcpt *rcpts, size_t n, char newid_r[QUEUE_ID_SIZE]);

/* "failed", "delayed", "delivered", "relayed", "expanded" (for logs). */
const char *bounce_action_name(enum bounce_action action);

#endif
