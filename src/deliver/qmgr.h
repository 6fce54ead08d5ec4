/*
 * qmgr: the queue manager. Delivery threads (delivery-threads of them)
 * take committed messages from the queue and deliver each local recipient
 * into its mailbox (store.h), expanding aliases, lists, subaddresses and
 * catch-all (resolve.h), and remove a message once every recipient is
 * done. A thread takes up to delivery-batch waiting messages at a time and
 * makes their copies durable together (store_deliver_commit; doc/store.md
 * "Batched delivery"); a recipient is marked done only after that commit
 * succeeded for every copy it expands to.
 *
 * Rules (doc/queue.md has the crash-safety argument):
 *  - a recipient is marked done (durably, queue_rcpt_update) only after
 *    every mailbox it expands to has the message on stable storage;
 *  - a temporary failure leaves it pending and the message is retried
 *    after retry-min seconds, doubling up to retry-max, until
 *    queue-lifetime has passed since it was queued; then the recipient is
 *    marked failed (a bounce is sent by the relay work, issue 5);
 *  - a recipient that no longer resolves (user removed since RCPT) fails
 *    permanently;
 *  - within one message each mailbox gets one copy, however many recipients
 *    lead to it ("demo" and "demo+tag" both reach demo once);
 *  - when only part of a recipient's expansion is done (one mailbox of a
 *    list failed, or the list also forwards to remote addresses), what is
 *    left is queued as a new message (same sender, body and DSN data) and
 *    the recipient is marked done, so a retry never delivers a copy twice;
 *  - recipients outside our domains go to the relay (relay.h) once every
 *    local recipient of the message is done; a message with both local
 *    recipients still waiting and remote ones has the remote ones queued
 *    as a new message, so neither waits for the other; the relay's
 *    retries follow relay-retry-min/-max;
 *  - DSNs (relay/bounce.h): failed recipients are reported (unless NOTIFY
 *    says otherwise) after each pass, successes when NOTIFY=SUCCESS asked
 *    ("delivered" here, "relayed" to a next hop without DSN), a "delayed"
 *    report once after delay-warning; each recipient is marked reported
 *    durably, and a message is removed only after its DSN is queued.
 *
 * Contract: qmgr_start() spawns the threads and schedules every message
 * already in the queue (recovery). qmgr_notify() may be called from any
 * thread. qmgr_set_config() swaps the configuration used for the next
 * batch. qmgr_stop() finishes the batches in hand and joins the threads.
 */
#ifndef ESTAFETA_DELIVER_QMGR_H
#define ESTAFETA_DELIVER_QMGR_H

#include <stdbool.h>

#include "conf/cfgref.h"
#include "lib/buf.h"

struct queue;
struct store;
struct qmgr;

/* with_relay: start the relay thread (estafeta serve); NULL with err_r
 * when it cannot start (bad DNS or TLS settings). */
struct qmgr *qmgr_start(struct queue *q, struct store *st, struct cfgref *cfg,
                        bool with_relay, struct buf *err_r);
/* SIGUSR1 / `estafeta queue flush`: every deferred message is retried now
 * and messages in the queue not yet known (released from hold) are
 * scheduled. Any thread. */
void qmgr_flush(struct qmgr *m);
void qmgr_notify(struct qmgr *m, const char *id);
void qmgr_set_config(struct qmgr *m, struct cfgref *cfg);
void qmgr_stop(struct qmgr *m);

/* Delivers one message now (the thread's unit of work, exposed for unit
 * tests with the in-memory queue and store). Returns 1 if the message is
 * finished (removed), 0 if recipients remain pending, -1 on a queue error. */
int qmgr_deliver_one(struct queue *q, struct store *st, const struct config *cfg,
                     const char *id);

#endif
