/*
 * sasl: server side of PLAIN, LOGIN, SCRAM-SHA-256 and CRAM-MD5, strict
 * base64, and SCRAM key derivation. See sasl.h for the contract.
 *
 * Each exchange is a small state machine over decoded client messages. Every
 * message is decoded into a stack buffer of SASL_LINE_MAX * 3 / 4 octets
 * that is wiped before the step returns (it may hold a password); what must
 * survive a step (the SCRAM messages that make up AuthMessage) is copied
 * into the exchange, each bounded by the line cap.
 *
 * SECURITY:
 *  - No step reads past the decoded message: every parser walks [p, end)
 *    and a NUL inside a SCRAM or CRAM-MD5 message is a syntax error.
 *  - SCRAM proofs and CRAM-MD5 digests are compared with CRYPTO_memcmp.
 *  - An unknown user (or one without SCRAM keys) gets a server-first message
 *    of the same shape as a real one: a 16-byte salt derived from the user
 *    name and our host name (HMAC-SHA-256, so it is stable across attempts
 *    and cannot be told from a random salt without knowing the derivation),
 *    the default iteration count, and then SASL_FAIL at the proof. Since the
 *    derivation is public and the host name is known, a determined attacker
 *    can still recognise a fake salt; a per-installation secret would close
 *    that, but this module keeps no state beyond one exchange (no globals).
 *  - Only gs2 flags "n" and "y" are accepted: we do not offer
 *    SCRAM-SHA-256-PLUS, so "p=" (channel binding requested) fails, and "y"
 *    (client could bind but thinks we cannot) is correct as it stands.
 */
#include "proto/sasl.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "lib/xalloc.h"
#include "lib/random.h"

#define DECODED_MAX (SASL_LINE_MAX / 4 * 3)
#define SCRAM_KEY 32                /* SHA-256 output */
#define SCRAM_SALT_LEN 16           /* what we derive and fake */
#define SCRAM_NONCE_RAW 24          /* random octets in our nonce (RFC 5802
                                       asks for enough entropy; 192 bits) */
#define SCRAM_CNONCE_MAX 256        /* client nonce; real ones are ~24-32 */
#define SCRAM_ITER_MIN 4096
#define SCRAM_ITER_MAX 10000000u
#define FIXED_NONCE_MAX 64
#define GS2_HEADER_MAX (2 + 2 + 3 * SASL_NAME_MAX + 1)
#define CRAM_CHALLENGE_MAX 400     /* "<" nonce "@" hostname ">" */

enum state {
    ST_START,           /* nothing fed yet */
    ST_PLAIN,           /* PLAIN: empty challenge sent, waiting for message */
    ST_LOGIN_USER,      /* LOGIN: "Username:" sent */
    ST_LOGIN_PASS,      /* LOGIN: "Password:" sent */
    ST_SCRAM_FIRST,     /* SCRAM: empty challenge sent, wait client-first */
    ST_SCRAM_FINAL,     /* SCRAM: server-first sent, wait client-final */
    ST_CRAM,            /* CRAM-MD5: challenge sent */
    ST_CHECK,           /* waiting for sasl_server_checked() */
    ST_DONE,            /* ended, successfully or not */
};

struct sasl_server {
    enum sasl_mech mech;
    enum state state;
    sasl_lookup_fn lookup;
    void *arg;
    char hostname[256];
    char fixed_nonce[FIXED_NONCE_MAX + 1];  /* test only; "" = random */
    char user[SASL_NAME_MAX + 1];
    char password[SASL_NAME_MAX + 1];
    bool has_password;

    /* SCRAM */
    struct sasl_creds creds;
    bool known;                 /* creds are a real user's */
    char gs2_header[GS2_HEADER_MAX + 1];
    size_t gs2_len;
    char nonce[SCRAM_CNONCE_MAX + FIXED_NONCE_MAX + 1]; /* client + server */
    size_t nonce_len;
    char *client_first_bare;    /* heap, at most DECODED_MAX */
    size_t cfb_len;
    char *server_first;
    size_t sf_len;

    /* CRAM-MD5 */
    char challenge[CRAM_CHALLENGE_MAX];
};

/* ---- base64 ---- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long sasl_b64_decode(const char *in, size_t len, unsigned char *out, size_t out_cap)
{
    if (len % 4 != 0 || len / 4 > (size_t)LONG_MAX / 3)
        return -1;
    size_t pad = 0;
    if (len > 0 && in[len - 1] == '=')
        pad = (in[len - 2] == '=') ? 2 : 1;
    size_t n = len / 4 * 3 - pad;
    if (n > out_cap)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        bool last = i + 4 == len;
        size_t real = last ? 4 - pad : 4;
        int v[4] = {0, 0, 0, 0};
        for (size_t j = 0; j < real; j++)
            if ((v[j] = b64_value((unsigned char)in[i + j])) < 0)
                return -1;
        /* The bits under the padding must be zero: only one encoding of
         * any octet string is accepted. */
        if ((pad == 2 && last && (v[1] & 0x0f) != 0) ||
            (pad == 1 && last && (v[2] & 0x03) != 0))
            return -1;
        unsigned long w = (unsigned long)v[0] << 18 | (unsigned long)v[1] << 12 |
                          (unsigned long)v[2] << 6 | (unsigned long)v[3];
        out[o++] = (unsigned char)(w >> 16);
        if (real >= 3)
            out[o++] = (unsigned char)(w >> 8);
        if (real == 4)
            out[o++] = (unsigned char)w;
    }
    return (long)o;
}

/* Appends the encoding of in, or nothing and -1 if it would not fit. */
static int b64_put(const unsigned char *in, size_t len, struct buf *out)
{
    size_t need;
    if (!size_mul(len / 3 + (len % 3 != 0), 4, &need) ||
        out->len > out->max || need > out->max - out->len)
        return -1;
    for (size_t i = 0; i < len; i += 3) {
        size_t left = len - i;
        unsigned long w = (unsigned long)in[i] << 16;
        if (left > 1)
            w |= (unsigned long)in[i + 1] << 8;
        if (left > 2)
            w |= in[i + 2];
        char q[4] = {b64_alphabet[(w >> 18) & 63], b64_alphabet[(w >> 12) & 63],
                     left > 1 ? b64_alphabet[(w >> 6) & 63] : '=',
                     left > 2 ? b64_alphabet[w & 63] : '='};
        if (buf_append(out, q, 4) < 0)
            return -1;
    }
    return 0;
}

void sasl_b64_encode(const unsigned char *in, size_t len, struct buf *out)
{
    (void)b64_put(in, len, out);
}

/* ---- helpers ---- */

static int hmac_sha256(const void *key, size_t klen, const void *data,
                       size_t dlen, unsigned char out[SCRAM_KEY])
{
    unsigned int olen = 0;
    if (klen > INT_MAX ||
        HMAC(EVP_sha256(), key, (int)klen, data, dlen, out, &olen) == NULL ||
        olen != SCRAM_KEY)
        return -1;
    return 0;
}

static int sha256(const void *data, size_t len, unsigned char out[SCRAM_KEY])
{
    unsigned int olen = 0;
    if (EVP_Digest(data, len, out, &olen, EVP_sha256(), NULL) != 1 ||
        olen != SCRAM_KEY)
        return -1;
    return 0;
}

/* A user name: 1..SASL_NAME_MAX octets, no control character (they would
 * reach logs), no NUL. */
static bool name_ok(const unsigned char *p, size_t len)
{
    if (len == 0 || len > SASL_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return false;
    return true;
}

static void set_user(struct sasl_server *s, const void *p, size_t len)
{
    memcpy(s->user, p, len);
    s->user[len] = '\0';
}

/* Same user? Addresses are case-insensitive here (conf folds them). */
static bool same_name(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}

static void wipe_password(struct sasl_server *s)
{
    explicit_bzero(s->password, sizeof(s->password));
    s->has_password = false;
}

/* Ends the exchange with r (anything but CONTINUE / CHECK_PASSWORD). */
static enum sasl_step finish(struct sasl_server *s, enum sasl_step r)
{
    s->state = ST_DONE;
    wipe_password(s);
    explicit_bzero(&s->creds, sizeof(s->creds));
    return r;
}

/* out = base64(text); SASL_CONTINUE, or SASL_FAIL if out is too small. */
static enum sasl_step challenge(struct sasl_server *s, const void *text,
                                size_t len, struct buf *out, enum state next)
{
    if (b64_put(text, len, out) < 0)
        return finish(s, SASL_FAIL);
    s->state = next;
    return SASL_CONTINUE;
}

/* ---- PLAIN (RFC 4616) and LOGIN ---- */

static enum sasl_step got_password(struct sasl_server *s, const unsigned char *p,
                                   size_t len)
{
    if (len == 0 || len > SASL_NAME_MAX || memchr(p, '\0', len) != NULL)
        return finish(s, SASL_BAD_SYNTAX);
    memcpy(s->password, p, len);
    s->password[len] = '\0';
    s->has_password = true;
    s->state = ST_CHECK;
    return SASL_CHECK_PASSWORD;
}

/* message = [authzid] NUL authcid NUL passwd */
static enum sasl_step plain_message(struct sasl_server *s,
                                    const unsigned char *m, size_t n)
{
    const unsigned char *nul1 = memchr(m, '\0', n);
    if (nul1 == NULL)
        return finish(s, SASL_BAD_SYNTAX);
    const unsigned char *cid = nul1 + 1, *end = m + n;
    const unsigned char *nul2 = memchr(cid, '\0', (size_t)(end - cid));
    if (nul2 == NULL)
        return finish(s, SASL_BAD_SYNTAX);
    size_t zlen = (size_t)(nul1 - m), clen = (size_t)(nul2 - cid);
    if ((zlen > 0 && !name_ok(m, zlen)) || !name_ok(cid, clen))
        return finish(s, SASL_BAD_SYNTAX);
    set_user(s, cid, clen);
    const unsigned char *pw = nul2 + 1;
    size_t plen = (size_t)(end - pw);
    if (plen == 0 || plen > SASL_NAME_MAX || memchr(pw, '\0', plen) != NULL)
        return finish(s, SASL_BAD_SYNTAX);
    if (zlen > 0) {
        char authzid[SASL_NAME_MAX + 1];
        memcpy(authzid, m, zlen);
        authzid[zlen] = '\0';
        if (!same_name(authzid, s->user))
            return finish(s, SASL_AUTHZ_DENIED);
    }
    return got_password(s, pw, plen);
}

static enum sasl_step login_user(struct sasl_server *s, const unsigned char *m,
                                 size_t n, struct buf *out)
{
    if (!name_ok(m, n))
        return finish(s, SASL_BAD_SYNTAX);
    set_user(s, m, n);
    return challenge(s, "Password:", 9, out, ST_LOGIN_PASS);
}

/* ---- CRAM-MD5 (RFC 2195) ---- */

static enum sasl_step cram_start(struct sasl_server *s, struct buf *out)
{
    int n;
    if (s->fixed_nonce[0] != '\0') {
        n = snprintf(s->challenge, sizeof(s->challenge), "<%s@%s>",
                     s->fixed_nonce, s->hostname);
    } else {
        unsigned long long r;
        if (random_fill(&r, sizeof(r)) < 0)
            return finish(s, SASL_FAIL);
        n = snprintf(s->challenge, sizeof(s->challenge), "<%llu.%lld@%s>", r,
                     (long long)time(NULL), s->hostname);
    }
    if (n < 0 || (size_t)n >= sizeof(s->challenge))
        return finish(s, SASL_FAIL);
    return challenge(s, s->challenge, (size_t)n, out, ST_CRAM);
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* response = user SP 32 hex digits of HMAC-MD5(secret, challenge) */
static enum sasl_step cram_response(struct sasl_server *s,
                                    const unsigned char *m, size_t n)
{
    enum { MD5_LEN = 16 };
    if (n < 2 + 2 * MD5_LEN || m[n - 2 * MD5_LEN - 1] != ' ')
        return finish(s, SASL_BAD_SYNTAX);
    size_t ulen = n - 2 * MD5_LEN - 1;
    if (!name_ok(m, ulen))
        return finish(s, SASL_BAD_SYNTAX);
    unsigned char given[MD5_LEN], want[MD5_LEN];
    for (size_t i = 0; i < MD5_LEN; i++) {
        int hi = hexval(m[ulen + 1 + 2 * i]), lo = hexval(m[ulen + 2 + 2 * i]);
        if (hi < 0 || lo < 0)
            return finish(s, SASL_BAD_SYNTAX);
        given[i] = (unsigned char)(hi << 4 | lo);
    }
    set_user(s, m, ulen);
    memset(&s->creds, 0, sizeof(s->creds));
    bool ok = s->lookup != NULL && s->lookup(s->arg, s->user, &s->creds) == 0;
    s->creds.cram_secret[sizeof(s->creds.cram_secret) - 1] = '\0';
    /* Computed for a missing secret too (against a fixed context), so
     * both cost the same. */
    static const char none[] =
        "00000000000000000000000000000000"
        "00000000000000000000000000000000";
    const char *ctx = s->creds.cram_secret;
    ok = ok && sasl_cram_context_valid(ctx);
    if (sasl_cram_hmac(ok ? ctx : none, s->challenge, strlen(s->challenge), want) < 0)
        ok = false;
    ok = CRYPTO_memcmp(given, want, MD5_LEN) == 0 && ok;
    explicit_bzero(want, sizeof(want));
    return finish(s, ok ? SASL_OK : SASL_FAIL);
}

/* ---- SCRAM-SHA-256 (RFC 5802, RFC 7677) ---- */

/* saslname: "=2C" is ',', "=3D" is '=', any other '=' is invalid. Writes a
 * NUL-terminated name into out (SASL_NAME_MAX + 1), or leaves it alone and
 * returns -1 if invalid, empty or longer than SASL_NAME_MAX. */
static int saslname_decode(const char *p, size_t len, char *out_r)
{
    char out[SASL_NAME_MAX + 1];
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (c == '=') {
            if (len - i < 3)
                return -1;
            if (p[i + 1] == '2' && p[i + 2] == 'C')
                c = ',';
            else if (p[i + 1] == '3' && p[i + 2] == 'D')
                c = '=';
            else
                return -1;
            i += 2;
        }
        if (o >= SASL_NAME_MAX)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    if (!name_ok((const unsigned char *)out, o))
        return -1;
    memcpy(out_r, out, o + 1);
    return 0;
}

/* Walks the ','-separated attributes of [p, end). */
struct attrs {
    const char *p, *end;
    bool done;          /* the last attribute has been returned */
};

/* Next attribute into *a / *alen; false when there is none left. After it,
 * c->done tells whether that attribute ended the text (no ',' after it). */
static bool next_attr(struct attrs *c, const char **a, size_t *alen)
{
    if (c->done)
        return false;
    const char *comma = memchr(c->p, ',', (size_t)(c->end - c->p));
    *a = c->p;
    if (comma == NULL) {
        *alen = (size_t)(c->end - c->p);
        c->p = c->end;
        c->done = true;
    } else {
        *alen = (size_t)(comma - c->p);
        c->p = comma + 1;
    }
    return true;
}

/* attr-val = ALPHA "=" value, for extensions we ignore. */
static bool ext_ok(const char *a, size_t len)
{
    return len >= 2 && ((a[0] >= 'a' && a[0] <= 'z') || (a[0] >= 'A' && a[0] <= 'Z')) &&
           a[1] == '=';
}

static bool printable_no_comma(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] < 0x21 || p[i] > 0x7e || p[i] == ',')
            return false;
    return true;
}

static bool ascii(const char *p)
{
    for (; *p != '\0'; p++)
        if ((unsigned char)*p >= 0x80)
            return false;
    return true;
}

/* The salt an unknown user gets: stable for (host, user), so repeated
 * attempts see the same one, as for a real user. */
static int fake_creds(struct sasl_server *s)
{
    unsigned char mac[SCRAM_KEY] = {0};
    struct buf msg;
    buf_init(&msg, 16 + SASL_NAME_MAX + 1);
    int r = buf_appends(&msg, "estafeta-scram:") < 0 ||
            buf_append(&msg, s->user, strlen(s->user) + 1) < 0 ||
            hmac_sha256(s->hostname, strlen(s->hostname), msg.data, msg.len,
                        mac) < 0 ? -1 : 0;
    buf_free(&msg);
    memset(&s->creds, 0, sizeof(s->creds));
    memcpy(s->creds.scram_salt, mac, SCRAM_SALT_LEN);
    s->creds.scram_salt_len = SCRAM_SALT_LEN;
    s->creds.scram_iterations = SASL_SCRAM_ITERATIONS;
    /* Keys nobody can match: random, and `known` stays false anyway. */
    if (random_fill(s->creds.scram_stored_key, SCRAM_KEY) < 0 ||
        random_fill(s->creds.scram_server_key, SCRAM_KEY) < 0)
        r = -1;
    s->creds.has_scram = true;
    s->known = false;
    return r;
}

/*
 * client-first-message = gs2-header client-first-message-bare
 * gs2-header = ("n" / "y" / "p=" cb-name) "," ["a=" saslname] ","
 * client-first-message-bare = ["m=" ext ","] "n=" saslname "," "r=" c-nonce
 *                             ["," extensions]
 */
static enum sasl_step scram_first(struct sasl_server *s, const char *m, size_t n,
                                  struct buf *out)
{
    if (memchr(m, '\0', n) != NULL)
        return finish(s, SASL_BAD_SYNTAX);
    struct attrs c = {m, m + n, false};
    const char *a;
    size_t alen;
    if (!next_attr(&c, &a, &alen) || c.done)
        return finish(s, SASL_BAD_SYNTAX);
    if (alen >= 2 && a[0] == 'p' && a[1] == '=')
        return finish(s, SASL_FAIL);        /* no -PLUS offered */
    if (alen != 1 || (a[0] != 'n' && a[0] != 'y'))
        return finish(s, SASL_BAD_SYNTAX);
    char authzid[SASL_NAME_MAX + 1] = "";
    if (!next_attr(&c, &a, &alen) || c.done)  /* gs2 header ends in ',' */
        return finish(s, SASL_BAD_SYNTAX);
    if (alen > 0 && (alen < 2 || a[0] != 'a' || a[1] != '=' ||
                     saslname_decode(a + 2, alen - 2, authzid) < 0))
        return finish(s, SASL_BAD_SYNTAX);
    s->gs2_len = (size_t)(c.p - m);
    memcpy(s->gs2_header, m, s->gs2_len);   /* <= GS2_HEADER_MAX by the above */
    s->gs2_header[s->gs2_len] = '\0';

    const char *bare = c.p;
    if (!next_attr(&c, &a, &alen))
        return finish(s, SASL_BAD_SYNTAX);
    if (alen >= 2 && a[0] == 'm' && a[1] == '=')
        return finish(s, SASL_FAIL);        /* mandatory extension: unknown */
    if (alen < 2 || a[0] != 'n' || a[1] != '=' ||
        saslname_decode(a + 2, alen - 2, s->user) < 0)
        return finish(s, SASL_BAD_SYNTAX);
    if (!next_attr(&c, &a, &alen) || alen < 3 || a[0] != 'r' ||
        a[1] != '=' || alen - 2 > SCRAM_CNONCE_MAX ||
        !printable_no_comma(a + 2, alen - 2))
        return finish(s, SASL_BAD_SYNTAX);
    memcpy(s->nonce, a + 2, alen - 2);
    s->nonce_len = alen - 2;
    while (next_attr(&c, &a, &alen))
        if (!ext_ok(a, alen))
            return finish(s, SASL_BAD_SYNTAX);
    if (authzid[0] != '\0' && !same_name(authzid, s->user))
        return finish(s, SASL_AUTHZ_DENIED);

    s->cfb_len = (size_t)(m + n - bare);
    s->client_first_bare = xstrndup(bare, s->cfb_len);

    memset(&s->creds, 0, sizeof(s->creds));
    s->known = ascii(s->user) && s->lookup != NULL &&
               s->lookup(s->arg, s->user, &s->creds) == 0 &&
               s->creds.has_scram && s->creds.scram_salt_len > 0 &&
               s->creds.scram_salt_len <= SASL_SCRAM_SALT_MAX &&
               s->creds.scram_iterations > 0;
    if (!s->known && fake_creds(s) < 0)
        return finish(s, SASL_FAIL);

    /* our half of the nonce */
    char snonce[FIXED_NONCE_MAX + 1];
    if (s->fixed_nonce[0] != '\0') {
        memcpy(snonce, s->fixed_nonce, sizeof(snonce));
    } else {
        unsigned char raw[SCRAM_NONCE_RAW];
        struct buf b;
        buf_init(&b, FIXED_NONCE_MAX);
        if (random_fill(raw, sizeof(raw)) < 0 || b64_put(raw, sizeof(raw), &b) < 0) {
            buf_free(&b);
            return finish(s, SASL_FAIL);
        }
        memcpy(snonce, b.data, b.len + 1);
        buf_free(&b);
    }
    size_t slen = strlen(snonce);
    memcpy(s->nonce + s->nonce_len, snonce, slen + 1);
    s->nonce_len += slen;

    struct buf sf;
    buf_init(&sf, sizeof(s->nonce) + 128);
    if (buf_appends(&sf, "r=") < 0 || buf_append(&sf, s->nonce, s->nonce_len) < 0 ||
        buf_appends(&sf, ",s=") < 0 ||
        b64_put(s->creds.scram_salt, s->creds.scram_salt_len, &sf) < 0 ||
        buf_appendf(&sf, ",i=%lu", (unsigned long)s->creds.scram_iterations) < 0) {
        buf_free(&sf);
        return finish(s, SASL_FAIL);
    }
    s->server_first = sf.data;              /* ownership moves */
    s->sf_len = sf.len;
    return challenge(s, s->server_first, s->sf_len, out, ST_SCRAM_FINAL);
}

/*
 * client-final-message = "c=" base64(gs2-header) "," "r=" nonce
 *                        ["," extensions] "," "p=" base64(ClientProof)
 */
static enum sasl_step scram_final(struct sasl_server *s, const char *m, size_t n,
                                  struct buf *out)
{
    if (memchr(m, '\0', n) != NULL)
        return finish(s, SASL_BAD_SYNTAX);
    /* The proof is the last attribute; base64 holds no ',', so the last
     * ",p=" starts it. */
    size_t k = n;
    while (k >= 3 && !(m[k - 3] == ',' && m[k - 2] == 'p' && m[k - 1] == '='))
        k--;
    if (k < 3)
        return finish(s, SASL_BAD_SYNTAX);
    size_t wp_len = k - 3;                  /* client-final-without-proof */
    unsigned char proof[SCRAM_KEY];
    if (sasl_b64_decode(m + k, n - k, proof, sizeof(proof)) != SCRAM_KEY)
        return finish(s, SASL_BAD_SYNTAX);

    struct attrs c = {m, m + wp_len, false};
    const char *a;
    size_t alen;
    unsigned char cb[GS2_HEADER_MAX];
    long cblen;
    if (!next_attr(&c, &a, &alen) || alen < 2 || a[0] != 'c' || a[1] != '=' ||
        (cblen = sasl_b64_decode(a + 2, alen - 2, cb, sizeof(cb))) < 0)
        return finish(s, SASL_BAD_SYNTAX);
    bool cb_ok = (size_t)cblen == s->gs2_len && memcmp(cb, s->gs2_header, s->gs2_len) == 0;
    if (!next_attr(&c, &a, &alen) || alen < 2 || a[0] != 'r' || a[1] != '=')
        return finish(s, SASL_BAD_SYNTAX);
    bool nonce_ok = alen - 2 == s->nonce_len && memcmp(a + 2, s->nonce, s->nonce_len) == 0;
    while (next_attr(&c, &a, &alen))
        if (!ext_ok(a, alen))
            return finish(s, SASL_BAD_SYNTAX);
    if (!cb_ok || !nonce_ok)
        return finish(s, SASL_FAIL);

    /* AuthMessage = client-first-bare "," server-first "," final-without-proof */
    size_t am_len;
    if (!size_add(s->cfb_len, s->sf_len, &am_len) || !size_add(am_len, wp_len, &am_len) ||
        !size_add(am_len, 2, &am_len))
        return finish(s, SASL_FAIL);
    char *am = xmalloc(am_len);
    memcpy(am, s->client_first_bare, s->cfb_len);
    am[s->cfb_len] = ',';
    memcpy(am + s->cfb_len + 1, s->server_first, s->sf_len);
    am[s->cfb_len + 1 + s->sf_len] = ',';
    memcpy(am + s->cfb_len + 2 + s->sf_len, m, wp_len);

    unsigned char sig[SCRAM_KEY], key[SCRAM_KEY], stored[SCRAM_KEY], ssig[SCRAM_KEY];
    bool ok = hmac_sha256(s->creds.scram_stored_key, SCRAM_KEY, am, am_len, sig) == 0;
    for (size_t i = 0; i < SCRAM_KEY; i++)
        key[i] = proof[i] ^ sig[i];
    ok = ok && sha256(key, SCRAM_KEY, stored) == 0;
    ok = CRYPTO_memcmp(stored, s->creds.scram_stored_key, SCRAM_KEY) == 0 && ok &&
         s->known;
    ok = ok && hmac_sha256(s->creds.scram_server_key, SCRAM_KEY, am, am_len, ssig) == 0;
    free(am);
    explicit_bzero(key, sizeof(key));
    explicit_bzero(sig, sizeof(sig));
    if (!ok)
        return finish(s, SASL_FAIL);
    /* server-final-message = "v=" base64(ServerSignature) */
    struct buf v;
    buf_init(&v, 64);
    int r = buf_appends(&v, "v=") < 0 || b64_put(ssig, SCRAM_KEY, &v) < 0 ||
            b64_put((const unsigned char *)v.data, v.len, out) < 0 ? -1 : 0;
    buf_free(&v);
    return finish(s, r == 0 ? SASL_OK : SASL_FAIL);
}

/* ---- the exchange ---- */

struct sasl_server *sasl_server_new(enum sasl_mech mech, const char *hostname,
                                    sasl_lookup_fn lookup, void *arg)
{
    if (mech != SASL_MECH_PLAIN && mech != SASL_MECH_LOGIN &&
        mech != SASL_MECH_SCRAM_SHA_256 && mech != SASL_MECH_CRAM_MD5)
        return NULL;
    struct sasl_server *s = xcalloc(1, sizeof(*s));
    s->mech = mech;
    s->state = ST_START;
    s->lookup = lookup;
    s->arg = arg;
    snprintf(s->hostname, sizeof(s->hostname), "%s",
             hostname != NULL ? hostname : "localhost");
    return s;
}

void sasl_server_set_nonce(struct sasl_server *s, const char *nonce)
{
    if (s == NULL || nonce == NULL || s->state != ST_START)
        return;
    size_t len = strlen(nonce);
    if (len == 0 || len > FIXED_NONCE_MAX || !printable_no_comma(nonce, len))
        return;
    memcpy(s->fixed_nonce, nonce, len + 1);
}

static enum sasl_step dispatch(struct sasl_server *s, const unsigned char *m,
                               size_t n, bool given, struct buf *out)
{
    switch (s->state) {
    case ST_START:
        switch (s->mech) {
        case SASL_MECH_PLAIN:
            return given ? plain_message(s, m, n)
                         : challenge(s, "", 0, out, ST_PLAIN);
        case SASL_MECH_LOGIN:
            return given ? login_user(s, m, n, out)
                         : challenge(s, "Username:", 9, out, ST_LOGIN_USER);
        case SASL_MECH_SCRAM_SHA_256:
            return given ? scram_first(s, (const char *)m, n, out)
                         : challenge(s, "", 0, out, ST_SCRAM_FIRST);
        case SASL_MECH_CRAM_MD5:
            /* RFC 2195: the server speaks first; no initial response. */
            return given ? finish(s, SASL_BAD_SYNTAX) : cram_start(s, out);
        default:
            return finish(s, SASL_FAIL);
        }
    case ST_PLAIN:
        return plain_message(s, m, n);
    case ST_LOGIN_USER:
        return login_user(s, m, n, out);
    case ST_LOGIN_PASS:
        return got_password(s, m, n);
    case ST_SCRAM_FIRST:
        return scram_first(s, (const char *)m, n, out);
    case ST_SCRAM_FINAL:
        return scram_final(s, (const char *)m, n, out);
    case ST_CRAM:
        return cram_response(s, m, n);
    default:
        return finish(s, SASL_FAIL);
    }
}

enum sasl_step sasl_server_step(struct sasl_server *s, const char *in, size_t len,
                                struct buf *out)
{
    buf_reset(out);
    if (s == NULL)
        return SASL_FAIL;
    if (s->state == ST_DONE || s->state == ST_CHECK)
        return finish(s, SASL_FAIL);
    if (in == NULL && s->state != ST_START)
        return finish(s, SASL_BAD_SYNTAX);
    if (in == NULL)
        return dispatch(s, NULL, 0, false, out);
    if (len == 1 && in[0] == '*')
        return finish(s, SASL_CANCELLED);
    if (len > SASL_LINE_MAX)
        return finish(s, SASL_BAD_SYNTAX);
    if (len == 1 && in[0] == '=')           /* empty response (RFC 4954 4) */
        len = 0;
    unsigned char dec[DECODED_MAX + 1];
    long n = sasl_b64_decode(in, len, dec, DECODED_MAX);
    enum sasl_step r;
    /* An empty message is refused by every mechanism's parser (PLAIN
     * needs two NULs, LOGIN non-empty fields, SCRAM and CRAM-MD5 fixed
     * parts), so it needs no case of its own. */
    if (n < 0) {
        r = finish(s, SASL_BAD_SYNTAX);
    } else {
        dec[n] = '\0';
        r = dispatch(s, dec, (size_t)n, true, out);
    }
    /* A failed decode may have written part of a password, too. */
    explicit_bzero(dec, len / 4 * 3 + 1);
    return r;
}

const char *sasl_server_password(const struct sasl_server *s)
{
    return s != NULL && s->state == ST_CHECK && s->has_password ? s->password
                                                                : NULL;
}

enum sasl_step sasl_server_checked(struct sasl_server *s, bool ok)
{
    if (s == NULL)
        return SASL_FAIL;
    if (s->state != ST_CHECK)
        return finish(s, SASL_FAIL);
    return finish(s, ok ? SASL_OK : SASL_FAIL);
}

const char *sasl_server_user(const struct sasl_server *s)
{
    return s != NULL ? s->user : "";
}

void sasl_server_free(struct sasl_server *s)
{
    if (s == NULL)
        return;
    if (s->client_first_bare != NULL) {
        explicit_bzero(s->client_first_bare, s->cfb_len);
        free(s->client_first_bare);
    }
    if (s->server_first != NULL) {
        explicit_bzero(s->server_first, s->sf_len);
        free(s->server_first);
    }
    explicit_bzero(s, sizeof(*s));
    free(s);
}

/* ---- key derivation for the users file ---- */

int sasl_scram_derive(const char *password, uint32_t iterations,
                      struct sasl_creds *creds_r)
{
    memset(creds_r, 0, sizeof(*creds_r));
    if (password == NULL || iterations < SCRAM_ITER_MIN ||
        iterations > SCRAM_ITER_MAX || strlen(password) > INT_MAX)
        return -1;
    unsigned char salted[SCRAM_KEY], client_key[SCRAM_KEY];
    int rc = -1;
    if (random_fill(creds_r->scram_salt, SCRAM_SALT_LEN) < 0 ||
        PKCS5_PBKDF2_HMAC(password, (int)strlen(password), creds_r->scram_salt,
                          SCRAM_SALT_LEN, (int)iterations, EVP_sha256(),
                          SCRAM_KEY, salted) != 1 ||
        hmac_sha256(salted, SCRAM_KEY, "Client Key", 10, client_key) < 0 ||
        sha256(client_key, SCRAM_KEY, creds_r->scram_stored_key) < 0 ||
        hmac_sha256(salted, SCRAM_KEY, "Server Key", 10,
                    creds_r->scram_server_key) < 0)
        goto out;
    creds_r->scram_salt_len = SCRAM_SALT_LEN;
    creds_r->scram_iterations = iterations;
    creds_r->has_scram = true;
    rc = 0;
out:
    explicit_bzero(salted, sizeof(salted));
    explicit_bzero(client_key, sizeof(client_key));
    if (rc < 0)
        explicit_bzero(creds_r, sizeof(*creds_r));
    return rc;
}
