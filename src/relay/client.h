/*
 * client: the SMTP client side of one outbound connection (RFC 5321 as a
 * client; RFC 2920 PIPELINING, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531
 * SMTPUTF8, RFC 3461 DSN, RFC 3030 CHUNKING, RFC 3207 STARTTLS, RFC 4954
 * AUTH to a smarthost). The relay (relay.c) connects the socket, hands it
 * here, and gets events back; this file knows the protocol and nothing of
 * routing or the queue's bookkeeping.
 *
 * Life of a client:
 *   client_new(fd)      greeting, EHLO (HELO if refused), STARTTLS per the
 *                       policy, EHLO again, AUTH if configured
 *   cb->ready           the session is usable: client_send() a message, or
 *                       client_quit()
 *   client_send(m)      MAIL, RCPT (at most relay-recipients per
 *                       transaction: more go in further transactions on
 *                       the same connection), DATA or BDAT, the body read
 *                       from the queue and dot-stuffed on the fly
 *   cb->done(m)         every recipient of m has an outcome; the session
 *                       is usable again (client_send or client_quit)
 *   cb->closed          the connection is gone; if a message was in
 *                       flight, done() came first with CLIENT_TEMP for each
 *                       recipient that had no outcome. Then client_free(),
 *                       but never from inside a callback: the relay frees
 *                       closed clients from its own deferred event.
 *
 * Every reply goes through proto/smtp_reply (bounded lines, lines and
 * size): a hostile server gets a temporary failure, never a crash. Replies
 * stored for DSNs are sanitized there. Timeouts are RFC 5321 4.5.3.2's
 * (the limits table). Callbacks are never made from inside client_new,
 * client_send or client_quit.
 */
#ifndef ESTAFETA_RELAY_CLIENT_H
#define ESTAFETA_RELAY_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"

struct event_base;
struct queue;
struct tls_client;
struct smtp_client;

enum client_outcome {
    CLIENT_NONE = 0,   /* not tried yet (internal) */
    CLIENT_OK,         /* accepted by the peer after the final dot */
    CLIENT_TEMP,       /* 4xx, connection lost, timeout: retry later */
    CLIENT_PERM,       /* 5xx, or a need the peer cannot meet: bounce */
};

struct client_rcpt {
    const char *address;
    const char *orcpt;         /* "" or "rfc822;xtext" */
    unsigned notify;           /* SMTP_NOTIFY_* */
    enum client_outcome outcome;   /* set by the client */
    char reply[512];           /* the peer's reply or our reason, one line */
};

struct client_msg {
    struct queue *q;           /* the body is read with queue_body_open */
    const char *id;
    const char *sender;        /* "" = null reverse-path */
    int ret;                   /* SMTP_RET_* */
    const char *envid;         /* "" or xtext */
    uint64_t size;             /* body octets (SIZE=) */
    bool body_8bit;            /* BODY=8BITMIME declared and 8-bit octets present */
    bool need_smtputf8;        /* an envelope address is not ASCII */
    bool smtputf8;             /* SMTPUTF8 was given on our MAIL */
    struct client_rcpt *rcpts;
    size_t nrcpts;
    bool peer_dsn;             /* out: the peer offered DSN (NOTIFY passed on) */
};

struct client_params {
    const struct config *cfg;  /* limits and hostname; must outlive the client */
    struct tls_client *tls;    /* NULL: no STARTTLS possible */
    enum tls_policy policy;
    const char *host;          /* the peer's name (MX host), for SNI,
                                  verification and logs */
    const char *addr;          /* "[192.0.2.1]:25", for logs */
    bool no_tls;               /* TLS failed here lately: plaintext (policy may) */
    const char *auth_user;     /* NULL: no AUTH */
    const char *password;
};

struct client_cb {
    void (*ready)(struct smtp_client *cl, void *arg);
    void (*done)(struct smtp_client *cl, struct client_msg *m, void *arg);
    /* how: CLIENT_TEMP normally; reason is one line ("421 4.3.2 ...",
     * "connect timeout", "TLS handshake failed") for logs and DSNs.
     * tls_failed: the STARTTLS handshake itself failed. */
    void (*closed)(struct smtp_client *cl, enum client_outcome how,
                   const char *reason, bool tls_failed, void *arg);
};

/* fd is a connected socket (ownership passes to the client). */
struct smtp_client *client_new(struct event_base *base, int fd,
                               const struct client_params *p,
                               const struct client_cb *cb, void *arg);
void client_send(struct smtp_client *cl, struct client_msg *m);
void client_quit(struct smtp_client *cl);
void client_free(struct smtp_client *cl);
bool client_tls_active(const struct smtp_client *cl);
/* The session has ended (closed() was or is being called). */
bool client_closed(const struct smtp_client *cl);
/* Messages sent on this connection so far. */
size_t client_messages(const struct smtp_client *cl);

#endif
