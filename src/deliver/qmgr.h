/*
 * qmgr: the queue manager. A delivery thread that takes committed messages
 * from the queue and delivers each local recipient into its mailbox
 * (store.h), expanding aliases, lists, subaddresses and catch-all
 * (resolve.h), and removes a message once every recipient is done.
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
 *  - recipients outside our domains stay pending until the relay exists
 *    (issue 5) and are logged as deferred.
 *
 * Contract: qmgr_start() spawns the thread and schedules every message
 * already in the queue (recovery). qmgr_notify() may be called from any
 * thread. qmgr_set_config() swaps the configuration used for the next
 * message. qmgr_stop() finishes the message in hand and joins the thread.
 */
#ifndef ESTAFETA_DELIVER_QMGR_H
#define ESTAFETA_DELIVER_QMGR_H

#include "conf/cfgref.h"

struct queue;
struct store;
struct qmgr;

struct qmgr *qmgr_start(struct queue *q, struct store *st, struct cfgref *cfg);
void qmgr_notify(struct qmgr *m, const char *id);
void qmgr_set_config(struct qmgr *m, struct cfgref *cfg);
void qmgr_stop(struct qmgr *m);

/* Delivers one message now (the thread's unit of work, exposed for unit
 * tests with the in-memory queue and store). Returns 1 if the message is
 * finished (removed), 0 if recipients remain pending, -1 on a queue error. */
int qmgr_deliver_one(struct queue *q, struct store *st, const struct config *cfg,
                     const char *id);

#endif
