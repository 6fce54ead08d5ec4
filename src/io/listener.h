/*
 * listener: listening sockets. listener_bind() runs before privileges are
 * dropped (ports below 1024); listener_start() attaches the socket to the
 * loop later and calls on_accept(fd, peer address text, arg) per new client.
 * The backlog is large (4096) so bursts of connections are not refused.
 */
#ifndef ESTAFETA_IO_LISTENER_H
#define ESTAFETA_IO_LISTENER_H

#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct listener;

typedef void (*listener_accept_fn)(int fd, const struct sockaddr_storage *peer,
                                   const char *peer_text, void *arg);

/* Returns NULL and sets errno on failure (EADDRINUSE, EACCES, EINVAL for a
 * host that is not a numeric address). */
struct listener *listener_bind(const char *host, uint16_t port);
/* A UNIX stream socket at path, mode 0666 (who may connect is decided by
 * the directory it is in). A stale socket file is replaced; anything else
 * at path is an error (EEXIST). */
struct listener *listener_bind_unix(const char *path);
void listener_start(struct listener *l, struct event_base *base,
                    listener_accept_fn fn, void *arg);
void listener_stop(struct listener *l);    /* stop accepting, keep socket */
void listener_free(struct listener *l);
uint16_t listener_port(const struct listener *l);

#endif
