/*
 * tls: the server side of TLS (OpenSSL), used by io/conn for STARTTLS
 * (RFC 3207, POP3 STLS and IMAP STARTTLS later) and implicit TLS (RFC 8314).
 *
 * Policy (one place): TLS 1.2 and 1.3 only; TLS 1.2 suites are ECDHE/DHE
 * with AES-GCM or ChaCha20-Poly1305 only; server preference; no compression;
 * no renegotiation. Several certificates: the first is the default, SNI
 * selects another whose names (subjectAltName DNS entries, else the CN)
 * match, "*.example.org" wildcards included.
 *
 * Contract:
 *  - tls_server_new(certs, n, err_r): loads every certificate chain and key
 *    (checking that they match). NULL with "FILE: reason" in err_r.
 *  - A tls_server is reference-counted: each connection that uses it holds
 *    a reference (tls_server_ref/unref), so SIGHUP can install a new one
 *    while handshakes on the old one finish.
 *  - tls_selfsigned_ensure(dir, hostname, ...) creates dir/cert.pem and
 *    dir/key.pem (EC P-256, CN and SAN = hostname, 10 years) unless both
 *    exist; returns 0 and the paths (malloc'd), or -1 with err_r.
 *  - tls_conn_* are the per-connection calls io/conn makes; protocol code
 *    never calls OpenSSL.
 */
#ifndef ESTAFETA_IO_TLS_H
#define ESTAFETA_IO_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "conf/config.h"
#include "lib/buf.h"

struct tls_server;
struct tls_conn;
struct tls_client;

struct tls_server *tls_server_new(const struct cfg_tls_cert *certs, size_t n,
                                  struct buf *err_r);
struct tls_server *tls_server_ref(struct tls_server *ts);
void tls_server_unref(struct tls_server *ts);

int tls_selfsigned_ensure(const char *dir, const char *hostname, char **cert_r,
                          char **key_r, struct buf *err_r);

enum tls_io {
    TLS_IO_OK,          /* done (or n bytes moved) */
    TLS_IO_WANT_READ,   /* wait until the socket is readable */
    TLS_IO_WANT_WRITE,  /* wait until the socket is writable */
    TLS_IO_EOF,         /* clean close_notify or EOF */
    TLS_IO_ERROR,       /* protocol or socket error: drop the connection */
};

struct tls_conn *tls_conn_new(struct tls_server *ts, int fd);
void tls_conn_free(struct tls_conn *tc);
enum tls_io tls_conn_handshake(struct tls_conn *tc);
enum tls_io tls_conn_read(struct tls_conn *tc, void *p, size_t n, size_t *got_r);
enum tls_io tls_conn_write(struct tls_conn *tc, const void *p, size_t n,
                           size_t *put_r);
/*
 * The client side, for outbound SMTP (relay). Same protocol policy (TLS
 * 1.2+, AEAD suites, no compression, no renegotiation). The handshake never
 * fails for an unverifiable certificate: the caller reads
 * tls_conn_verified() afterwards and applies its per-destination policy
 * (opportunistic TLS must not fail on a self-signed certificate, RFC 7435).
 *  - tls_client_new(ca_file, err_r): ca_file NULL = the system store.
 *  - tls_conn_new_client(tcl, fd, sni, verify_name): sni for the
 *    ClientHello (NULL for none, e.g. an address), verify_name the name
 *    the certificate must carry for tls_conn_verified() to be true.
 */
struct tls_client *tls_client_new(const char *ca_file, struct buf *err_r);
struct tls_client *tls_client_ref(struct tls_client *tcl);
void tls_client_unref(struct tls_client *tcl);
struct tls_conn *tls_conn_new_client(struct tls_client *tcl, int fd,
                                     const char *sni, const char *verify_name);
/* After the handshake: the chain verified against the CA store and the
 * certificate names verify_name. why_r (may be NULL) gets OpenSSL's reason. */
bool tls_conn_verified(const struct tls_conn *tc, const char **why_r);

/* Bytes already decrypted and waiting inside OpenSSL. */
size_t tls_conn_pending(const struct tls_conn *tc);
/* "TLSv1.3", "TLS_AES_256_GCM_SHA384", bits; valid after the handshake. */
const char *tls_conn_version(const struct tls_conn *tc);
const char *tls_conn_cipher(const struct tls_conn *tc);
int tls_conn_bits(const struct tls_conn *tc);

#endif
