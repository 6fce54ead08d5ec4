/*
 * smtpd: the SMTP server (RFC 5321 with the ESMTP set listed in
 * doc/smtp.md, which is the contract for every reply).
 *
 * One struct smtpd per process, on the event loop thread. It owns the
 * sessions, the per-client connection counts, and the commit worker that
 * makes messages durable before their 250 (io/batch.h: group commit).
 *
 * Contract:
 *  - smtpd_new(): the queue is shared (not owned); committed(id, arg) is
 *    called on the loop thread for every message that got its 250, so the
 *    delivery side can start on it.
 *  - smtpd_accept(): takes ownership of fd.
 *  - smtpd_set_config(): new sessions use the new configuration; running
 *    sessions keep theirs.
 *  - smtpd_shutdown(): idle sessions get 421 4.3.2 at once; sessions in
 *    DATA/BDAT get timeout-shutdown seconds to finish, then 421 4.3.2;
 *    sessions waiting for the disk get their answer first. all_closed(arg)
 *    runs (on the loop) when no session is left.
 *  - smtpd_free() after all_closed.
 */
#ifndef ESTAFETA_SMTPD_SMTPD_H
#define ESTAFETA_SMTPD_SMTPD_H

#include <stddef.h>

#include <stdbool.h>

#include "conf/cfgref.h"
#include "conf/config.h"

struct event_base;
struct queue;
struct smtpd;

typedef void (*smtpd_committed_fn)(const char *id, void *arg);

/* fails: the failed-login table shared with the other protocols (not
 * owned). */
struct authfail;
struct smtpd *smtpd_new(struct event_base *base, struct queue *queue,
                        struct cfgref *cfg, struct authfail *fails,
                        smtpd_committed_fn committed, void *arg);
void smtpd_set_config(struct smtpd *srv, struct cfgref *cfg);
/* The mailbox store, for quota checks at RCPT time (not owned). */
struct store;
void smtpd_set_store(struct smtpd *srv, struct store *st);
/* ETRN (RFC 1985) from an authenticated client or one in etrn-networks
 * calls flush(node, arg) on the event loop: it must not block. */
void smtpd_set_flush(struct smtpd *srv, void (*flush)(const char *node, void *arg),
                     void *arg);
void smtpd_accept(struct smtpd *srv, int fd, const char *peer,
                  enum listener_role role);
/* A client of the local submission socket, identified by its uid. */
void smtpd_accept_local(struct smtpd *srv, int fd, unsigned uid, const char *name);
/* The TLS certificates for STARTTLS and implicit TLS (a reference is
 * taken); NULL: no TLS offered. Running sessions keep the one they use. */
struct tls_server;
void smtpd_set_tls(struct smtpd *srv, struct tls_server *ts);
void smtpd_shutdown(struct smtpd *srv, void (*all_closed)(void *arg), void *arg);
size_t smtpd_session_count(const struct smtpd *srv);
void smtpd_free(struct smtpd *srv);

#endif
