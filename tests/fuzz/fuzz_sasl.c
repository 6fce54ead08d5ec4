/*
 * Fuzz target for proto/sasl: whole exchanges of every mechanism with
 * client lines taken from the input, against a lookup that returns fixed
 * credentials (the RFC 7677 user's SCRAM keys for password "pencil", the
 * RFC 2195 CRAM-MD5 secret) for every name not starting with "unknown".
 *
 * Input: one flag byte, then client lines separated by '\n'.
 *   flag & 3     mechanism: PLAIN, LOGIN, SCRAM-SHA-256, CRAM-MD5
 *   flag & 4     no initial response (the first step gets in == NULL)
 *   flag & 8     raw: lines are fed as they are (exercises base64);
 *                otherwise each line is base64-encoded first, so the
 *                mechanisms' own parsers see the fuzzer's bytes
 *   flag & 16    the password check (PLAIN, LOGIN) succeeds
 * Server nonces are fixed (RFC 7677's, RFC 2195's) so the seeds can reach
 * success.
 *
 * Invariants (abort() on violation): what the server sends is canonical
 * base64; a strictly decodable line re-encodes to itself; the user name
 * fits its limits; CHECK_PASSWORD only for PLAIN and LOGIN, with a 1..255
 * octet password; OK for PLAIN and LOGIN only after a successful check;
 * SCRAM's OK carries "v=" and 44 base64 characters; once an exchange has
 * ended every further step is SASL_FAIL.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "proto/sasl.h"

#define MAX_STEPS 8

static struct sasl_creds fixed;

static void init_creds(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    static const unsigned char salt[] = {0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12,
                                         0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14,
                                         0x12, 0x36, 0xfa, 0x81};
    unsigned char salted[32], ck[32];
    unsigned int l;
    PKCS5_PBKDF2_HMAC("pencil", 6, salt, sizeof(salt), 4096, EVP_sha256(), 32,
                      salted);
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10, ck, &l);
    EVP_Digest(ck, 32, fixed.scram_stored_key, &l, EVP_sha256(), NULL);
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Server Key", 10,
         fixed.scram_server_key, &l);
    memcpy(fixed.scram_salt, salt, sizeof(salt));
    fixed.scram_salt_len = sizeof(salt);
    fixed.scram_iterations = 4096;
    fixed.has_scram = true;
    memcpy(fixed.cram_secret, "tanstaaftanstaaf", 17);
}

static int lookup(void *arg, const char *authcid, struct sasl_creds *creds_r)
{
    (void)arg;
    if (strlen(authcid) > SASL_NAME_MAX)
        abort();
    if (strncmp(authcid, "unknown", 7) == 0)
        return -1;
    *creds_r = fixed;
    return 0;
}

/* out must be canonical base64 */
static void check_out(const struct buf *out)
{
    static unsigned char dec[SASL_LINE_MAX];
    long n = sasl_b64_decode(out->data ? out->data : "", out->len, dec, sizeof(dec));
    if (n < 0)
        abort();
    struct buf again;
    buf_init(&again, SASL_LINE_MAX * 2);
    sasl_b64_encode(dec, (size_t)n, &again);
    if (again.len != out->len || (out->len > 0 && memcmp(again.data, out->data, out->len) != 0))
        abort();
    buf_free(&again);
}

/* A line that decodes strictly must be the one encoding of its bytes. */
static void check_canonical(const char *line, size_t len)
{
    static unsigned char dec[SASL_LINE_MAX];
    long n = sasl_b64_decode(line, len, dec, sizeof(dec));
    if (n < 0)
        return;
    struct buf b;
    buf_init(&b, SASL_LINE_MAX * 2);
    sasl_b64_encode(dec, (size_t)n, &b);
    if (b.len != len || (len > 0 && memcmp(b.data, line, len) != 0))
        abort();
    buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4 * SASL_LINE_MAX)
        return 0;
    init_creds();
    unsigned flag = data[0];
    static const enum sasl_mech mechs[4] = {SASL_MECH_PLAIN, SASL_MECH_LOGIN,
                                            SASL_MECH_SCRAM_SHA_256,
                                            SASL_MECH_CRAM_MD5};
    enum sasl_mech mech = mechs[flag & 3];
    bool no_ir = (flag & 4) != 0, raw = (flag & 8) != 0, check_ok = (flag & 16) != 0;
    bool cram = mech == SASL_MECH_CRAM_MD5;
    bool plaintext = mech == SASL_MECH_PLAIN || mech == SASL_MECH_LOGIN;

    struct sasl_server *s = sasl_server_new(
        mech, cram ? "postoffice.reston.mci.net" : "mail.example.test", lookup, NULL);
    if (s == NULL)
        abort();
    sasl_server_set_nonce(s, cram ? "1896.697170952" : "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    struct buf out, line;
    buf_init(&out, 4096);
    buf_init(&line, 8 * SASL_LINE_MAX);

    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    bool ended = false, checked_true = false;
    for (int step = 0; step < MAX_STEPS; step++) {
        enum sasl_step r;
        if (step == 0 && no_ir) {
            r = sasl_server_step(s, NULL, 0, &out);
        } else {
            if (p > end)
                break;
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t llen = (size_t)((nl != NULL ? nl : end) - p);
            buf_reset(&line);
            if (raw) {
                if (buf_append(&line, p, llen) < 0)
                    abort();
                check_canonical(p, llen);
            } else {
                sasl_b64_encode((const unsigned char *)p, llen, &line);
                if (llen > 0 && line.len == 0)
                    abort();
            }
            p = nl != NULL ? nl + 1 : end + 1;
            r = sasl_server_step(s, line.data ? line.data : "", line.len, &out);
        }
        if (ended) {
            if (r != SASL_FAIL)
                abort();
            break;
        }
        check_out(&out);
        if (strlen(sasl_server_user(s)) > SASL_NAME_MAX)
            abort();
        if (r == SASL_CHECK_PASSWORD) {
            const char *pw = sasl_server_password(s);
            if (!plaintext || pw == NULL || strlen(pw) == 0 || strlen(pw) > SASL_NAME_MAX)
                abort();
            checked_true = check_ok;
            r = sasl_server_checked(s, check_ok);
            if (r != (check_ok ? SASL_OK : SASL_FAIL) || sasl_server_password(s) != NULL)
                abort();
        } else if (sasl_server_password(s) != NULL) {
            abort();
        }
        if (r == SASL_OK) {
            if (plaintext && !checked_true)
                abort();
            if (mech == SASL_MECH_SCRAM_SHA_256) {
                unsigned char v[128];
                long n = sasl_b64_decode(out.data, out.len, v, sizeof(v));
                if (n != 46 || memcmp(v, "v=", 2) != 0)
                    abort();
            }
        }
        if (r != SASL_CONTINUE)
            ended = true;
    }
    if (ended) {
        /* one more step after the end: always SASL_FAIL */
        if (sasl_server_step(s, "=", 1, &out) != SASL_FAIL)
            abort();
    }
    sasl_server_free(s);
    buf_free(&out);
    buf_free(&line);
    return 0;
}
