/*
 * sasl_cram: CRAM-MD5 (RFC 2195) without storing the password. RFC 2195 5
 * allows keeping the intermediate HMAC-MD5 contexts instead: the MD5 state
 * after the key XOR ipad block and after the key XOR opad block. They
 * authenticate like the password (CRAM-MD5 cannot do better) but do not
 * reveal it, so a password reused elsewhere is not exposed by the users
 * file. Stored form: 64 lower-case hex digits (inner A B C D, outer A B C
 * D, each 32-bit word little-endian), as Dovecot's CRAM-MD5 scheme does.
 *
 * OpenSSL 3 keeps the MD5 state structure only in its deprecated low-level
 * API, which is the one place estafeta uses it.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/crypto.h>
#include <openssl/md5.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "proto/sasl.h"

#define CRAM_BLOCK 64

static void cram_put32(uint32_t v, char *hex)
{
    for (int i = 0; i < 4; i++)
        snprintf(hex + 2 * i, 3, "%02x", (unsigned)((v >> (8 * i)) & 0xff));
}

static int cram_get32(const char *hex, uint32_t *v_r)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned b;
        if (sscanf(hex + 2 * i, "%2x", &b) != 1)
            return -1;
        v |= (uint32_t)b << (8 * i);
    }
    *v_r = v;
    return 0;
}

int sasl_cram_derive(const char *password, char *out, size_t cap)
{
    if (cap < SASL_CRAM_CONTEXT_LEN + 1)
        return -1;
    unsigned char key[CRAM_BLOCK], pad[CRAM_BLOCK];
    size_t klen = strlen(password);
    memset(key, 0, sizeof(key));
    if (klen > CRAM_BLOCK) {
        MD5((const unsigned char *)password, klen, key);
    } else {
        memcpy(key, password, klen);
    }
    MD5_CTX ctx[2];
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < CRAM_BLOCK; i++)
            pad[i] = key[i] ^ (k == 0 ? 0x36 : 0x5c);
        MD5_Init(&ctx[k]);
        MD5_Update(&ctx[k], pad, CRAM_BLOCK);
    }
    cram_put32(ctx[0].A, out);
    cram_put32(ctx[0].B, out + 8);
    cram_put32(ctx[0].C, out + 16);
    cram_put32(ctx[0].D, out + 24);
    cram_put32(ctx[1].A, out + 32);
    cram_put32(ctx[1].B, out + 40);
    cram_put32(ctx[1].C, out + 48);
    cram_put32(ctx[1].D, out + 56);
    out[SASL_CRAM_CONTEXT_LEN] = '\0';
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(ctx, sizeof(ctx));
    return 0;
}

bool sasl_cram_context_valid(const char *hex)
{
    if (strlen(hex) != SASL_CRAM_CONTEXT_LEN)
        return false;
    return strspn(hex, "0123456789abcdef") == SASL_CRAM_CONTEXT_LEN;
}

/* MD5 context after one processed 64-byte block, from stored words. */
static int cram_resume(const char *hex, MD5_CTX *c)
{
    memset(c, 0, sizeof(*c));
    if (cram_get32(hex, &c->A) < 0 || cram_get32(hex + 8, &c->B) < 0 ||
        cram_get32(hex + 16, &c->C) < 0 || cram_get32(hex + 24, &c->D) < 0)
        return -1;
    c->Nl = CRAM_BLOCK * 8;
    return 0;
}

int sasl_cram_hmac(const char *context_hex, const void *msg, size_t len,
                   unsigned char digest_r[16])
{
    if (!sasl_cram_context_valid(context_hex))
        return -1;
    MD5_CTX c;
    unsigned char inner[16];
    if (cram_resume(context_hex, &c) < 0)
        return -1;
    MD5_Update(&c, msg, len);
    MD5_Final(inner, &c);
    if (cram_resume(context_hex + 32, &c) < 0)
        return -1;
    MD5_Update(&c, inner, sizeof(inner));
    MD5_Final(digest_r, &c);
    OPENSSL_cleanse(&c, sizeof(c));
    return 0;
}
