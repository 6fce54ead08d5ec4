/*
 * pop3d: the POP3 server (RFC 1939 with CAPA RFC 2449, AUTH RFC 5034, STLS
 * RFC 2595, UTF8 RFC 6856, response codes RFC 2449/3206), on the same event
 * loop, connection layer, TLS, SASL and failed-login table as SMTP, reading
 * mailboxes only through store/mailbox.h.
 *
 * Behaviour (doc/pop3.md has the reply table):
 *  - one session per mailbox: the mailbox is opened exclusively at login; a
 *    second login gets -ERR [IN-USE];
 *  - DELE only marks; the messages are removed when QUIT enters the UPDATE
 *    state; a dropped connection removes nothing;
 *  - RETR/TOP stream the file through the byte-stuffing writer, a piece at
 *    a time as the client reads (never the whole message in memory);
 *  - USER/PASS and AUTH PLAIN/LOGIN only over TLS or from
 *    auth-plaintext-networks; failures delayed (auth-delay) and counted
 *    per address with SMTP's (auth-failures, auth-lockout);
 *  - UIDL is the store's unique id (the Maildir base name), stable forever.
 *
 * Contract: as smtpd.h: pop3d_accept takes the fd; pop3d_shutdown closes
 * every session (sessions in UPDATE finish it first) and calls all_closed.
 */
#ifndef ESTAFETA_POP3D_POP3D_H
#define ESTAFETA_POP3D_POP3D_H

#include <stddef.h>

#include "conf/cfgref.h"
#include "conf/config.h"

struct event_base;
struct store;
struct authfail;
struct tls_server;
struct pop3d;

struct pop3d *pop3d_new(struct event_base *base, struct store *store,
                        struct cfgref *cfg, struct authfail *fails);
void pop3d_set_config(struct pop3d *srv, struct cfgref *cfg);
void pop3d_set_tls(struct pop3d *srv, struct tls_server *ts);
void pop3d_accept(struct pop3d *srv, int fd, const char *peer,
                  enum listener_role role);
void pop3d_shutdown(struct pop3d *srv, void (*all_closed)(void *arg), void *arg);
size_t pop3d_session_count(const struct pop3d *srv);
void pop3d_free(struct pop3d *srv);

#endif
