/* listener: see listener.h for the contract. */
#include "io/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/log.h"
#include "lib/xalloc.h"

#define LISTEN_BACKLOG 4096

/* Out of descriptors: the socket stays readable, so accepting again at once
 * would spin. Pause the listener this long instead. */
#define LISTEN_PAUSE_SECONDS 1

struct listener {
    int fd;
    uint16_t port;
    struct event *ev;
    struct event *ev_pause;     /* re-enables accepting after EMFILE */
    bool stopped;
    listener_accept_fn fn;
    void *arg;
};

struct listener *listener_bind(const char *host, uint16_t port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        sl = sizeof(*s4);
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        sl = sizeof(*s6);
    } else {
        errno = EINVAL;
        return NULL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return NULL;
    }
    struct listener *l = xcalloc(1, sizeof(*l));
    l->fd = fd;
    l->port = port;
    if (port == 0) {
        struct sockaddr_storage got;
        socklen_t gl = sizeof(got);
        if (getsockname(fd, (struct sockaddr *)&got, &gl) == 0)
            l->port = ntohs(got.ss_family == AF_INET
                                ? ((struct sockaddr_in *)&got)->sin_port
                                : ((struct sockaddr_in6 *)&got)->sin6_port);
    }
    return l;
}

struct listener *listener_bind_unix(const char *path)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            errno = EEXIST;
            return NULL;
        }
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
        chmod(path, 0666) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return NULL;
    }
    struct listener *l = xcalloc(1, sizeof(*l));
    l->fd = fd;
    return l;
}

static void listener_on_accept(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct listener *l = arg;
    /* Bounded per wake-up so one busy listener cannot starve the loop. */
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage peer;
        socklen_t pl = sizeof(peer);
        int cfd = accept4(fd, (struct sockaddr *)&peer, &pl,
                          SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                log_kv(LOG_ERR, "listener.paused", "error", strerror(errno),
                       "action", "not accepting for a second", NULL);
                event_del(l->ev);
                struct timeval tv = {.tv_sec = LISTEN_PAUSE_SECONDS, .tv_usec = 0};
                evtimer_add(l->ev_pause, &tv);
            }
            return;
        }
        if (peer.ss_family == AF_INET || peer.ss_family == AF_INET6) {
            /* Replies are written whole and pipelined ones together, so
             * Nagle only adds delayed-ACK stalls (a slow RETR reader). */
            int one = 1;
            setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        char text[INET6_ADDRSTRLEN] = "?";
        if (peer.ss_family == AF_UNIX)
            snprintf(text, sizeof(text), "local");
        else if (peer.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&peer)->sin_addr, text,
                      sizeof(text));
        else if (peer.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&peer)->sin6_addr, text,
                      sizeof(text));
        l->fn(cfd, &peer, text, l->arg);
    }
}

static void listener_on_pause_end(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct listener *l = arg;
    if (!l->stopped)
        event_add(l->ev, NULL);
}

void listener_start(struct listener *l, struct event_base *base,
                    listener_accept_fn fn, void *arg)
{
    l->fn = fn;
    l->arg = arg;
    l->ev = event_new(base, l->fd, EV_READ | EV_PERSIST, listener_on_accept, l);
    l->ev_pause = evtimer_new(base, listener_on_pause_end, l);
    event_add(l->ev, NULL);
}

void listener_stop(struct listener *l)
{
    l->stopped = true;
    if (l->ev)
        event_del(l->ev);
    if (l->ev_pause)
        event_del(l->ev_pause);
}

void listener_free(struct listener *l)
{
    if (l == NULL)
        return;
    if (l->ev)
        event_free(l->ev);
    if (l->ev_pause)
        event_free(l->ev_pause);
    close(l->fd);
    free(l);
}

uint16_t listener_port(const struct listener *l) { return l->port; }
