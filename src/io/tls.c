/* tls: see tls.h for the contract and the policy. */
#include "io/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "lib/fsutil.h"
#include "lib/xalloc.h"

/* TLS 1.2 suites: forward secrecy and AEAD only. TLS 1.3 suites are
 * OpenSSL's defaults (all AEAD). */
#define TLS_CIPHERS_12 \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:" \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "DHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256"

struct tls_cert_ctx {
    SSL_CTX *ctx;
    char **names;       /* lower-case DNS names of the certificate */
    size_t nnames;
};

struct tls_server {
    _Atomic unsigned refs;
    struct tls_cert_ctx *certs;
    size_t ncerts;
};

struct tls_client {
    _Atomic unsigned refs;
    SSL_CTX *ctx;
};

struct tls_conn {
    SSL *ssl;
    struct tls_server *ts;     /* server side, else NULL */
    struct tls_client *tcl;    /* client side, else NULL */
};

static void tls_err(struct buf *err_r, const char *file, const char *what)
{
    unsigned long e = ERR_get_error();
    char detail[256] = "";
    if (e != 0)
        ERR_error_string_n(e, detail, sizeof(detail));
    ERR_clear_error();
    buf_reset(err_r);
    buf_appendf(err_r, "%s: %s%s%s", file, what, detail[0] ? ": " : "", detail);
}

static bool tls_name_match(const char *pattern, const char *name)
{
    if (strcasecmp(pattern, name) == 0)
        return true;
    /* "*.example.org" matches exactly one more label. */
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *dot = strchr(name, '.');
        return dot != NULL && dot != name && strcasecmp(pattern + 1, dot) == 0;
    }
    return false;
}

static int tls_on_servername(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    struct tls_server *ts = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < ts->ncerts; i++)
        for (size_t k = 0; k < ts->certs[i].nnames; k++)
            if (tls_name_match(ts->certs[i].names[k], name)) {
                if (i > 0)
                    SSL_set_SSL_CTX(ssl, ts->certs[i].ctx);
                return SSL_TLSEXT_ERR_OK;
            }
    return SSL_TLSEXT_ERR_OK; /* unknown name: the default certificate */
}

/* The DNS names a certificate is valid for: SAN DNS entries, else the CN. */
static void tls_cert_names(X509 *x, struct tls_cert_ctx *cc)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int n = sans ? sk_GENERAL_NAME_num(sans) : 0;
    for (int i = 0; i < n; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_DNS)
            continue;
        const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
        int len = ASN1_STRING_length(g->d.dNSName);
        if (len <= 0 || len > 255 || memchr(d, 0, (size_t)len) != NULL)
            continue;
        cc->names = xreallocarray(cc->names, cc->nnames + 1, sizeof(*cc->names));
        cc->names[cc->nnames++] = xstrndup((const char *)d, (size_t)len);
    }
    GENERAL_NAMES_free(sans);
    if (cc->nnames == 0) {
        char cn[256];
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
                                      sizeof(cn)) > 0) {
            cc->names = xcalloc(1, sizeof(*cc->names));
            cc->names[cc->nnames++] = xstrdup(cn);
        }
    }
}

static SSL_CTX *tls_ctx_new(const struct cfg_tls_cert *c, struct buf *err_r)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        tls_err(err_r, c->cert, "cannot create TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) != 1) {
        tls_err(err_r, c->cert, "cannot set ciphers");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_dh_auto(ctx, 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, c->cert) != 1) {
        tls_err(err_r, c->cert, "cannot load certificate chain");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, c->key, SSL_FILETYPE_PEM) != 1) {
        tls_err(err_r, c->key, "cannot load private key");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_err(err_r, c->key, "private key does not match the certificate");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static void tls_server_destroy(struct tls_server *ts)
{
    for (size_t i = 0; i < ts->ncerts; i++) {
        SSL_CTX_free(ts->certs[i].ctx);
        for (size_t k = 0; k < ts->certs[i].nnames; k++)
            free(ts->certs[i].names[k]);
        free(ts->certs[i].names);
    }
    free(ts->certs);
    free(ts);
}

struct tls_server *tls_server_new(const struct cfg_tls_cert *certs, size_t n,
                                  struct buf *err_r)
{
    if (n == 0) {
        buf_reset(err_r);
        buf_appends(err_r, "no TLS certificate configured");
        return NULL;
    }
    struct tls_server *ts = xcalloc(1, sizeof(*ts));
    ts->refs = 1;
    ts->certs = xcalloc(n, sizeof(*ts->certs));
    for (size_t i = 0; i < n; i++) {
        SSL_CTX *ctx = tls_ctx_new(&certs[i], err_r);
        if (ctx == NULL) {
            tls_server_destroy(ts);
            return NULL;
        }
        ts->certs[ts->ncerts].ctx = ctx;
        tls_cert_names(SSL_CTX_get0_certificate(ctx), &ts->certs[ts->ncerts]);
        ts->ncerts++;
    }
    SSL_CTX_set_tlsext_servername_callback(ts->certs[0].ctx, tls_on_servername);
    SSL_CTX_set_tlsext_servername_arg(ts->certs[0].ctx, ts);
    return ts;
}

struct tls_server *tls_server_ref(struct tls_server *ts)
{
    ts->refs++;
    return ts;
}

void tls_server_unref(struct tls_server *ts)
{
    if (ts != NULL && --ts->refs == 0)
        tls_server_destroy(ts);
}

/* ---- self-signed certificate for the embedded default ---- */

static int tls_write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *x)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        return -1;
    }
    int ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
                 : PEM_write_X509(f, x);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        ok = 0;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) < 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int tls_selfsigned_ensure(const char *dir, const char *hostname, char **cert_r,
                          char **key_r, struct buf *err_r)
{
    char cert[4096], key[4096];
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    *cert_r = xstrdup(cert);
    *key_r = xstrdup(key);
    if (access(cert, R_OK) == 0 && access(key, R_OK) == 0)
        return 0;
    if (fs_mkdir_p(dir, 0700) < 0) {
        buf_reset(err_r);
        buf_appendf(err_r, "%s: %s", dir, strerror(errno));
        goto fail;
    }
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    int ok = pk != NULL && x != NULL;
    if (ok) {
        unsigned char serial[16];
        ok = RAND_bytes(serial, sizeof(serial)) == 1;
        serial[0] &= 0x7f;
        BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
        ok = ok && bn != NULL && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
        BN_free(bn);
        ok = ok && X509_set_version(x, 2);
        ok = ok && X509_gmtime_adj(X509_getm_notBefore(x), -3600);
        ok = ok && X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
        ok = ok && X509_set_pubkey(x, pk);
        X509_NAME *name = X509_get_subject_name(x);
        ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                              (const unsigned char *)hostname, -1, -1, 0);
        ok = ok && X509_set_issuer_name(x, name);
        char san[300];
        snprintf(san, sizeof(san), "DNS:%s", hostname);
        X509V3_CTX v3;
        X509V3_set_ctx_nodb(&v3);
        X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
        X509_EXTENSION *ext = ok ? X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san)
                                 : NULL;
        ok = ok && ext != NULL && X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
        ok = ok && X509_sign(x, pk, EVP_sha256()) > 0;
    }
    if (ok)
        ok = tls_write_pem(key, 0600, pk, NULL) == 0 &&
             tls_write_pem(cert, 0644, NULL, x) == 0 && fs_fsync_dir(dir) == 0;
    if (!ok)
        tls_err(err_r, cert, "cannot create a self-signed certificate");
    EVP_PKEY_free(pk);
    X509_free(x);
    if (ok)
        return 0;
fail:
    free(*cert_r);
    free(*key_r);
    *cert_r = *key_r = NULL;
    return -1;
}

/* ---- per connection ---- */

struct tls_conn *tls_conn_new(struct tls_server *ts, int fd)
{
    SSL *ssl = SSL_new(ts->certs[0].ctx);
    if (ssl == NULL)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_accept_state(ssl);
    struct tls_conn *tc = xcalloc(1, sizeof(*tc));
    tc->ssl = ssl;
    tc->ts = tls_server_ref(ts);
    return tc;
}

void tls_conn_free(struct tls_conn *tc)
{
    if (tc == NULL)
        return;
    SSL_free(tc->ssl);
    if (tc->ts != NULL)
        tls_server_unref(tc->ts);
    if (tc->tcl != NULL)
        tls_client_unref(tc->tcl);
    free(tc);
}

/* ---- client side ---- */

struct tls_client *tls_client_new(const char *ca_file, struct buf *err_r)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        tls_err(err_r, "tls", "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) != 1) {
        tls_err(err_r, "tls", "cipher list");
        SSL_CTX_free(ctx);
        return NULL;
    }
    int ok = ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                             : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        tls_err(err_r, ca_file != NULL ? ca_file : "tls", "loading CA certificates");
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* Verification is judged after the handshake (tls_conn_verified). */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    struct tls_client *tcl = xcalloc(1, sizeof(*tcl));
    tcl->refs = 1;
    tcl->ctx = ctx;
    return tcl;
}

struct tls_client *tls_client_ref(struct tls_client *tcl)
{
    tcl->refs++;
    return tcl;
}

void tls_client_unref(struct tls_client *tcl)
{
    if (tcl == NULL || --tcl->refs > 0)
        return;
    SSL_CTX_free(tcl->ctx);
    free(tcl);
}

struct tls_conn *tls_conn_new_client(struct tls_client *tcl, int fd,
                                     const char *sni, const char *verify_name)
{
    SSL *ssl = SSL_new(tcl->ctx);
    if (ssl == NULL)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1 ||
        (sni != NULL && SSL_set_tlsext_host_name(ssl, sni) != 1) ||
        (verify_name != NULL && SSL_set1_host(ssl, verify_name) != 1)) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_connect_state(ssl);
    struct tls_conn *tc = xcalloc(1, sizeof(*tc));
    tc->ssl = ssl;
    tc->tcl = tls_client_ref(tcl);
    return tc;
}

bool tls_conn_verified(const struct tls_conn *tc, const char **why_r)
{
    long r = X509_V_ERR_UNSPECIFIED;
    X509 *peer = SSL_get1_peer_certificate(tc->ssl);
    if (peer != NULL) {
        r = SSL_get_verify_result(tc->ssl);
        X509_free(peer);
    }
    if (why_r != NULL)
        *why_r = peer == NULL ? "no certificate" : X509_verify_cert_error_string(r);
    return r == X509_V_OK;
}

static enum tls_io tls_result(struct tls_conn *tc, int r)
{
    switch (SSL_get_error(tc->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return TLS_IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TLS_IO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_IO_EOF;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        return errno == 0 ? TLS_IO_EOF : TLS_IO_ERROR;
    default:
        ERR_clear_error();
        return TLS_IO_ERROR;
    }
}

enum tls_io tls_conn_handshake(struct tls_conn *tc)
{
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(tc->ssl);
    return r == 1 ? TLS_IO_OK : tls_result(tc, r);
}

enum tls_io tls_conn_read(struct tls_conn *tc, void *p, size_t n, size_t *got_r)
{
    ERR_clear_error();
    errno = 0;
    *got_r = 0;
    int r = SSL_read_ex(tc->ssl, p, n, got_r);
    return r == 1 ? TLS_IO_OK : tls_result(tc, r);
}

enum tls_io tls_conn_write(struct tls_conn *tc, const void *p, size_t n,
                           size_t *put_r)
{
    ERR_clear_error();
    errno = 0;
    *put_r = 0;
    int r = SSL_write_ex(tc->ssl, p, n, put_r);
    return r == 1 ? TLS_IO_OK : tls_result(tc, r);
}

size_t tls_conn_pending(const struct tls_conn *tc)
{
    int n = SSL_pending(tc->ssl);
    return n > 0 ? (size_t)n : 0;
}

const char *tls_conn_version(const struct tls_conn *tc)
{
    return SSL_get_version(tc->ssl);
}

const char *tls_conn_cipher(const struct tls_conn *tc)
{
    return SSL_get_cipher_name(tc->ssl);
}

int tls_conn_bits(const struct tls_conn *tc)
{
    return SSL_get_cipher_bits(tc->ssl, NULL);
}
