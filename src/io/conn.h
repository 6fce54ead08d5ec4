/*
 * conn: one client connection on the event loop. The only code in estafeta
 * that reads and writes client sockets (TLS will live here too, issue 3).
 * Protocol code sees a small event vocabulary (OpenSMTPD's ioev.h idea):
 *
 *   CONN_EV_INPUT     new bytes are in conn_input(); consume what you used
 *                     with buf_consume(). Also delivered after conn_resume()
 *                     so a session can continue on bytes already buffered.
 *   CONN_EV_TIMEOUT   no input for the time set by conn_set_timeout(); the
 *                     connection still works (the owner answers 421 and
 *                     closes, say)
 *   CONN_EV_CLOSED    the socket failed, or a close the owner asked for is
 *                     complete (or timed out)
 *
 * End of input (the peer's FIN) is not CLOSED: the peer may have half-closed
 * after its last command (QUIT, or the end of DATA) and still be waiting for
 * the replies. conn_eof() becomes true, reading stops, and CONN_EV_INPUT is
 * delivered so the owner finishes what is buffered and then closes.
 *
 * After CONN_EV_CLOSED nothing more is delivered; the owner calls
 * conn_free() (at once or later, when its own work is done; conn_free() from
 * inside a callback is deferred until the callback returns).
 *
 * Output: conn_write() queues bytes (never blocks); conn_flush() tries to
 * write them now; the rest is written when the socket is writable. While more
 * than high_water bytes are queued, input is not read, so a client that
 * pipelines without reading replies cannot grow our memory. The input
 * buffer is capped at in_max; when full, reading stops until the owner
 * consumes.
 *
 * TLS: conn_start_tls(c, ts) first writes what is queued (the "220 Ready
 * to start TLS" reply) in plaintext, then discards every input byte
 * buffered so far (security.md 3: nothing sent before the handshake may be
 * read as a command afterwards) and runs the handshake; CONN_EV_TLS_READY
 * follows, or CONN_EV_CLOSED if the handshake fails (the owner's timeout
 * covers a stalled one). From then on input and output go through TLS.
 *
 * conn_pause() stops delivering input events (the session is waiting for
 * the disk, say); conn_resume() restarts them and re-delivers CONN_EV_INPUT
 * if bytes are buffered. conn_close_after_flush() writes what is queued,
 * then shuts the socket; the owner gets CONN_EV_CLOSED once that is done,
 * or after `close_timeout` seconds if the peer does not read (input that
 * arrives meanwhile does not extend it).
 */
#ifndef ESTAFETA_IO_CONN_H
#define ESTAFETA_IO_CONN_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"

struct event_base;
struct conn;

enum conn_event { CONN_EV_INPUT, CONN_EV_TIMEOUT, CONN_EV_CLOSED,
                  CONN_EV_TLS_READY, CONN_EV_DRAINED };

typedef void (*conn_cb)(struct conn *c, enum conn_event ev, void *arg);

struct conn *conn_new(struct event_base *base, int fd, size_t in_max,
                      size_t high_water, conn_cb cb, void *arg);
void conn_free(struct conn *c);

struct buf *conn_input(struct conn *c);
void conn_write(struct conn *c, const void *p, size_t n);
void conn_printf(struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void conn_flush(struct conn *c);
size_t conn_output_pending(const struct conn *c);

void conn_set_timeout(struct conn *c, unsigned seconds);
void conn_pause(struct conn *c);
void conn_resume(struct conn *c);
void conn_close_after_flush(struct conn *c, unsigned close_timeout);
/* Drops the connection now, unsent output included (a failed or stalled
 * TLS handshake, where nothing can be sent); CONN_EV_CLOSED follows. */
void conn_abort(struct conn *c);
int conn_fd(const struct conn *c);
bool conn_eof(const struct conn *c);
/* Asks for one CONN_EV_DRAINED (from the loop, never re-entrantly) once
 * queued output is below high water: how a sender of a large response
 * (POP3 RETR) writes it piece by piece without holding it in memory. */
void conn_want_drained(struct conn *c);

struct tls_server;
void conn_start_tls(struct conn *c, struct tls_server *ts);
/* Client side (relay): after our STARTTLS got its 220, input buffered so
 * far is discarded (a server cannot inject replies that would be read as
 * protected) and the handshake starts; CONN_EV_TLS_READY or CLOSED follow. */
struct tls_client;
void conn_start_tls_client(struct conn *c, struct tls_client *tcl,
                           const char *sni, const char *verify_name);
/* After TLS_READY on a client connection: see tls_conn_verified(). */
bool conn_tls_verified(const struct conn *c, const char **why_r);
bool conn_tls_active(const struct conn *c);
/* "TLSv1.3" and cipher name, or NULL without TLS. */
const char *conn_tls_version(const struct conn *c);
const char *conn_tls_cipher(const struct conn *c);
int conn_tls_bits(const struct conn *c);

#endif
