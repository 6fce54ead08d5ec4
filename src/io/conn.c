/* conn: see conn.h for the contract. */
#include "io/conn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "io/tls.h"
#include "lib/xalloc.h"

/* Output is capped far above high_water: replies are small and input stops
 * at high_water, so hitting this means a bug or a hostile pattern; the
 * connection is then closed rather than allowed to grow. */
#define CONN_OUT_HARD_MAX (64u * 1024 * 1024)
#define CONN_READ_CHUNK 16384

struct conn {
    struct event_base *base;
    int fd;
    struct event *ev_read;
    struct event *ev_write;
    struct event *ev_timer;
    struct event *ev_resume;   /* deferred re-delivery after conn_resume */
    struct event *ev_drained;  /* deferred CONN_EV_DRAINED */
    bool want_drained;
    struct buf in;
    struct buf out;
    size_t high_water;
    unsigned timeout;
    conn_cb cb;
    void *arg;
    bool paused;
    bool closing;              /* close after flush requested */
    bool dead;                 /* CLOSED/TIMEOUT delivered; no more events */
    bool reading;              /* ev_read is added */
    bool eof;                  /* the peer sent FIN; no more reads */
    struct tls_conn *tls;      /* NULL for plaintext */
    bool tls_active;           /* handshake done */
    struct tls_server *tls_next; /* STARTTLS: handshake once output is out */
    struct tls_client *tls_next_client; /* the same, as a client */
    char *tls_sni, *tls_verify_name;
    unsigned in_callback;      /* nesting of owner callbacks */
    bool free_pending;         /* conn_free() called from inside a callback */
};

static void conn_destroy(struct conn *c);

static void conn_update_read(struct conn *c);

/*
 * Calls the owner. The owner may call conn_free() from inside; the conn is
 * then destroyed here once the outermost callback returns. Returns false
 * when the conn no longer exists, and every caller then returns at once.
 */
static bool conn_deliver(struct conn *c, enum conn_event ev)
{
    if (c->dead)
        return true;
    if (ev == CONN_EV_CLOSED) {
        c->dead = true;
        event_del(c->ev_read);
        event_del(c->ev_write);
        event_del(c->ev_timer);
        event_del(c->ev_resume);
        event_del(c->ev_drained);
        c->reading = false;
    }
    c->in_callback++;
    c->cb(c, ev, c->arg);
    c->in_callback--;
    if (c->free_pending && c->in_callback == 0) {
        conn_destroy(c);
        return false;
    }
    return !c->free_pending;
}

static void conn_arm_timer(struct conn *c)
{
    if (c->timeout == 0 || c->dead) {
        event_del(c->ev_timer);
        return;
    }
    struct timeval tv = {.tv_sec = c->timeout, .tv_usec = 0};
    event_add(c->ev_timer, &tv);
}

static void conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    /* A close that could not flush in time is over. */
    (void)conn_deliver(c, c->closing ? CONN_EV_CLOSED : CONN_EV_TIMEOUT);
}

/* One step of the TLS handshake; returns false if the conn is gone. */
static bool conn_tls_step(struct conn *c)
{
    switch (tls_conn_handshake(c->tls)) {
    case TLS_IO_OK:
        c->tls_active = true;
        event_del(c->ev_write);
        if (!conn_deliver(c, CONN_EV_TLS_READY))
            return false;
        conn_update_read(c);
        if (c->out.len > 0)
            event_add(c->ev_write, NULL);
        return true;
    case TLS_IO_WANT_READ:
        event_del(c->ev_write);
        conn_update_read(c);
        return true;
    case TLS_IO_WANT_WRITE:
        event_add(c->ev_write, NULL);
        return true;
    case TLS_IO_EOF:
    case TLS_IO_ERROR:
        break;
    }
    return conn_deliver(c, CONN_EV_CLOSED);
}

static bool conn_tls_begin(struct conn *c)
{
    struct tls_server *ts = c->tls_next;
    struct tls_client *tcl = c->tls_next_client;
    c->tls_next = NULL;
    c->tls_next_client = NULL;
    /* Whatever arrived before the handshake is discarded (security.md 3). */
    buf_reset(&c->in);
    if (ts != NULL) {
        c->tls = tls_conn_new(ts, c->fd);
        tls_server_unref(ts);
    } else {
        c->tls = tls_conn_new_client(tcl, c->fd, c->tls_sni, c->tls_verify_name);
        tls_client_unref(tcl);
    }
    if (c->tls == NULL)
        return conn_deliver(c, CONN_EV_CLOSED);
    return conn_tls_step(c);
}

/* Reads into the input buffer through TLS; returns bytes read, 0 for
 * "nothing now", -1 for EOF, -2 for an error. */
static ssize_t conn_tls_read(struct conn *c, char *chunk, size_t room)
{
    size_t got = 0;
    switch (tls_conn_read(c->tls, chunk, room, &got)) {
    case TLS_IO_OK:
        return (ssize_t)got;
    case TLS_IO_WANT_READ:
        return 0;
    case TLS_IO_WANT_WRITE:
        event_add(c->ev_write, NULL);
        return 0;
    case TLS_IO_EOF:
        return -1;
    case TLS_IO_ERROR:
        break;
    }
    return -2;
}

static void conn_on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct conn *c = arg;
    if (c->tls != NULL && !c->tls_active) {
        (void)conn_tls_step(c);
        return;
    }
    if (c->tls_next != NULL || c->tls_next_client != NULL) {
        /* STARTTLS accepted, reply not yet out: read nothing meanwhile. */
        conn_update_read(c);
        return;
    }
    char chunk[CONN_READ_CHUNK];
    size_t room = c->in.max - c->in.len;
    if (room == 0) {
        conn_update_read(c);
        return;
    }
    if (room > sizeof(chunk))
        room = sizeof(chunk);
    ssize_t n;
    if (c->tls != NULL) {
        n = conn_tls_read(c, chunk, room);
        if (n == 0)
            return;
        if (n == -2) {
            (void)conn_deliver(c, CONN_EV_CLOSED);
            return;
        }
        if (n == -1)
            n = 0;
    } else {
        n = read(fd, chunk, room);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            (void)conn_deliver(c, CONN_EV_CLOSED);
            return;
        }
    }
    if (n == 0) {
        c->eof = true;
        conn_update_read(c);
        if (!c->closing && !c->paused)
            (void)conn_deliver(c, CONN_EV_INPUT);
        return;
    }
    buf_append(&c->in, chunk, (size_t)n);
    if (c->closing) {
        /* Closing: input after our last reply is ignored. */
        buf_reset(&c->in);
        return;
    }
    conn_arm_timer(c);
    if (!c->paused && !conn_deliver(c, CONN_EV_INPUT))
        return;
    /* Records already decrypted inside OpenSSL raise no socket event. */
    if (c->tls != NULL && tls_conn_pending(c->tls) > 0 && c->in.len < c->in.max)
        event_active(c->ev_read, EV_READ, 0);
    conn_update_read(c);
}

static void conn_try_write(struct conn *c)
{
    if (c->tls != NULL && !c->tls_active) {
        (void)conn_tls_step(c);
        return;
    }
    bool was_high = c->out.len >= c->high_water;
    while (c->out.len > 0) {
        ssize_t n;
        if (c->tls != NULL) {
            size_t put = 0;
            enum tls_io r = tls_conn_write(c->tls, c->out.data, c->out.len, &put);
            if (r == TLS_IO_WANT_WRITE || r == TLS_IO_WANT_READ)
                break;
            if (r != TLS_IO_OK) {
                buf_reset(&c->out);
                (void)conn_deliver(c, CONN_EV_CLOSED);
                return;
            }
            n = (ssize_t)put;
        } else {
            n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            buf_reset(&c->out);
            (void)conn_deliver(c, CONN_EV_CLOSED);
            return;
        }
        buf_consume(&c->out, (size_t)n);
    }
    if (c->out.len == 0 && (c->tls_next != NULL || c->tls_next_client != NULL)) {
        (void)conn_tls_begin(c);
        return;
    }
    if (c->dead)
        return;
    if (c->want_drained && c->out.len < c->high_water) {
        c->want_drained = false;
        event_active(c->ev_drained, 0, 0);
    }
    /* The owner stopped at high water with commands still buffered. */
    if (was_high && c->out.len < c->high_water && !c->paused && !c->closing &&
        (c->in.len > 0 || c->eof))
        event_active(c->ev_resume, 0, 0);
    if (c->out.len > 0) {
        event_add(c->ev_write, NULL);
    } else {
        event_del(c->ev_write);
        if (c->closing) {
            shutdown(c->fd, SHUT_WR);
            (void)conn_deliver(c, CONN_EV_CLOSED);
            return;
        }
    }
    conn_update_read(c);
}

static void conn_on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_try_write(arg);
}

static void conn_on_drained(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    if (!c->dead && !c->closing)
        (void)conn_deliver(c, CONN_EV_DRAINED);
}

void conn_want_drained(struct conn *c)
{
    if (c->dead)
        return;
    if (c->out.len < c->high_water) {
        event_active(c->ev_drained, 0, 0);
        return;
    }
    c->want_drained = true;
    event_add(c->ev_write, NULL);
}

static void conn_on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    if (!c->paused && !c->closing && (c->in.len > 0 || c->eof) &&
        !conn_deliver(c, CONN_EV_INPUT))
        return;
    conn_update_read(c);
}

/* Read only when there is room, output is below high water, and the
 * owner is not paused. */
static void conn_update_read(struct conn *c)
{
    if (c->dead)
        return;
    bool want = c->in.len < c->in.max && c->out.len < c->high_water &&
                (!c->paused || c->in.len < c->in.max);
    if (c->closing)
        want = true; /* keep draining so EOF/RST is noticed */
    if (c->eof || c->tls_next != NULL || c->tls_next_client != NULL)
        want = false;
    if (c->tls != NULL && !c->tls_active)
        want = true; /* the handshake reads whatever the owner's state */
    if (want && !c->reading) {
        event_add(c->ev_read, NULL);
        c->reading = true;
    } else if (!want && c->reading) {
        event_del(c->ev_read);
        c->reading = false;
    }
}

struct conn *conn_new(struct event_base *base, int fd, size_t in_max,
                      size_t high_water, conn_cb cb, void *arg)
{
    struct conn *c = xcalloc(1, sizeof(*c));
    c->base = base;
    c->fd = fd;
    c->cb = cb;
    c->arg = arg;
    c->high_water = high_water;
    buf_init(&c->in, in_max);
    buf_init(&c->out, CONN_OUT_HARD_MAX);
    evutil_make_socket_nonblocking(fd);
    c->ev_read = event_new(base, fd, EV_READ | EV_PERSIST, conn_on_read, c);
    c->ev_write = event_new(base, fd, EV_WRITE | EV_PERSIST, conn_on_write, c);
    c->ev_timer = evtimer_new(base, conn_on_timer, c);
    c->ev_resume = event_new(base, -1, 0, conn_on_resume, c);
    c->ev_drained = event_new(base, -1, 0, conn_on_drained, c);
    conn_update_read(c);
    return c;
}

void conn_free(struct conn *c)
{
    if (c == NULL)
        return;
    if (c->in_callback > 0) {
        c->free_pending = true;
        c->dead = true;
        event_del(c->ev_read);
        event_del(c->ev_write);
        event_del(c->ev_timer);
        event_del(c->ev_resume);
        event_del(c->ev_drained);
        return;
    }
    conn_destroy(c);
}

static void conn_destroy(struct conn *c)
{
    tls_conn_free(c->tls);
    tls_server_unref(c->tls_next);
    tls_client_unref(c->tls_next_client);
    free(c->tls_sni);
    free(c->tls_verify_name);
    event_free(c->ev_read);
    event_free(c->ev_write);
    event_free(c->ev_timer);
    event_free(c->ev_resume);
    event_free(c->ev_drained);
    close(c->fd);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

struct buf *conn_input(struct conn *c) { return &c->in; }
int conn_fd(const struct conn *c) { return c->fd; }
bool conn_eof(const struct conn *c) { return c->eof; }
size_t conn_output_pending(const struct conn *c) { return c->out.len; }

void conn_write(struct conn *c, const void *p, size_t n)
{
    if (c->dead || c->closing)
        return;
    if (buf_append(&c->out, p, n) < 0) {
        /* A client that never reads; see CONN_OUT_HARD_MAX. */
        c->closing = true;
        buf_reset(&c->out);
        (void)conn_deliver(c, CONN_EV_CLOSED);
    }
}

void conn_printf(struct conn *c, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line))
        n = (int)sizeof(line) - 1;
    conn_write(c, line, (size_t)n);
}

void conn_flush(struct conn *c)
{
    if (!c->dead)
        conn_try_write(c);
}

void conn_set_timeout(struct conn *c, unsigned seconds)
{
    c->timeout = seconds;
    conn_arm_timer(c);
}

void conn_pause(struct conn *c)
{
    c->paused = true;
    conn_update_read(c);
}

void conn_resume(struct conn *c)
{
    if (c->dead)
        return;
    c->paused = false;
    /* Deferred through the loop so the owner is not re-entered. */
    event_active(c->ev_resume, 0, 0);
}

void conn_close_after_flush(struct conn *c, unsigned close_timeout)
{
    if (c->dead || c->closing)
        return;
    c->closing = true;
    buf_reset(&c->in);
    c->timeout = close_timeout;
    conn_arm_timer(c);
    conn_try_write(c);
}

void conn_start_tls(struct conn *c, struct tls_server *ts)
{
    if (c->dead || c->closing || c->tls != NULL || c->tls_next != NULL)
        return;
    c->tls_next = tls_server_ref(ts);
    buf_reset(&c->in);
    conn_update_read(c);
    conn_try_write(c); /* begins the handshake once the reply is out */
}

void conn_start_tls_client(struct conn *c, struct tls_client *tcl,
                           const char *sni, const char *verify_name)
{
    if (c->dead || c->closing || c->tls != NULL || c->tls_next != NULL ||
        c->tls_next_client != NULL)
        return;
    c->tls_next_client = tls_client_ref(tcl);
    free(c->tls_sni);
    free(c->tls_verify_name);
    c->tls_sni = sni != NULL ? xstrdup(sni) : NULL;
    c->tls_verify_name = verify_name != NULL ? xstrdup(verify_name) : NULL;
    buf_reset(&c->in);
    conn_update_read(c);
    conn_try_write(c); /* begins the handshake once output is out */
}

bool conn_tls_verified(const struct conn *c, const char **why_r)
{
    if (!c->tls_active) {
        if (why_r != NULL)
            *why_r = "no TLS";
        return false;
    }
    return tls_conn_verified(c->tls, why_r);
}

bool conn_tls_active(const struct conn *c) { return c->tls_active; }

const char *conn_tls_version(const struct conn *c)
{
    return c->tls_active ? tls_conn_version(c->tls) : NULL;
}

const char *conn_tls_cipher(const struct conn *c)
{
    return c->tls_active ? tls_conn_cipher(c->tls) : NULL;
}

void conn_abort(struct conn *c)
{
    if (!c->dead) {
        buf_reset(&c->out);
        (void)conn_deliver(c, CONN_EV_CLOSED);
    }
}

int conn_tls_bits(const struct conn *c)
{
    return c->tls_active ? tls_conn_bits(c->tls) : 0;
}
