/*
 * relay: outbound delivery. A thread with its own event loop that takes
 * queued messages whose pending recipients are all outside our domains,
 * routes each recipient domain (a configured route, else DNS MX: dns.h),
 * talks SMTP to the next hop (client.h), and records each recipient's
 * outcome durably in the queue. Retry timing, expiry, bounces and removal
 * stay with the queue manager (qmgr.h), which owns every message's life:
 * the relay only makes attempts.
 *
 * Rules (doc/relay.md has the reasons):
 *  - one attempt per message at a time; a message handed over is the
 *    relay's until `done` is called for it;
 *  - recipients of one message are grouped per destination (one
 *    transaction carries all recipients of a domain, up to
 *    relay-recipients each); a destination is the route's next hop, so
 *    domains sharing a smarthost share its connections;
 *  - connections are reused for further messages to the same destination
 *    (up to relay-messages-per-connection, idle at most relay-idle);
 *    at most relay-connections-per-destination per destination and
 *    relay-connections in total;
 *  - a recipient is marked done only after the peer's 2xx to the final dot
 *    (or BDAT LAST): killing the server at any moment may send a message
 *    twice, never lose it;
 *  - MX hosts are tried in preference order, addresses in order, at most
 *    mx-addresses per attempt; a host that is this server itself ends the
 *    list (RFC 5321 5.1).
 *
 * Contract: relay_start spawns the thread. relay_submit may be called from
 * any thread. done(id, pending, arg) is called on the relay thread once the
 * attempt's outcomes are in the queue: pending is true if some recipient is
 * still to be retried. relay_stop finishes nothing in flight: open
 * connections are dropped (their recipients stay pending, so they are sent
 * again after a restart) and the thread is joined.
 */
#ifndef ESTAFETA_RELAY_RELAY_H
#define ESTAFETA_RELAY_RELAY_H

#include <stdbool.h>

#include "conf/cfgref.h"
#include "lib/buf.h"

struct queue;
struct relay;

typedef void (*relay_done_fn)(const char *id, bool pending, void *arg);

struct relay *relay_start(struct queue *q, struct cfgref *cfg, relay_done_fn done,
                          void *done_arg, struct buf *err_r);
void relay_submit(struct relay *r, const char *id);
void relay_set_config(struct relay *r, struct cfgref *cfg);
void relay_stop(struct relay *r);

/*
 * Status texts the relay stores for recipients (queue_rcpt_update), which
 * the queue manager reads back when a message is finished, so that DSNs
 * can be made after a restart too:
 *   "250 2.0.0 sent to HOST[ADDR]: REPLY"      next hop has DSN: it reports
 *   "250 2.0.0 relayed to HOST[ADDR]: REPLY"   next hop lacks DSN: we send a
 *                                              "relayed" DSN if SUCCESS asked
 *   "REPLY (remote HOST[ADDR])"                a failure with the peer's reply
 * relay_status_remote() finds HOST in such a text ("" if none).
 */
void relay_status_remote(const char *status, char *host_r, size_t cap);

#endif
