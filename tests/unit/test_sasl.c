/* Unit tests for proto/sasl: base64, PLAIN, LOGIN, SCRAM-SHA-256, CRAM-MD5. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "harness.h"
#include "proto/sasl.h"

/* ---- helpers ---- */

static struct buf out;              /* what the server sent (base64) */
static unsigned char dec[16384];    /* ... decoded */
static long declen;

/* Feeds the line exactly as given (NULL: no initial response). */
static enum sasl_step feed_line(struct sasl_server *s, const char *line)
{
    enum sasl_step r = sasl_server_step(s, line, line ? strlen(line) : 0, &out);
    declen = sasl_b64_decode(out.data ? out.data : "", out.len, dec, sizeof(dec) - 1);
    if (declen >= 0)
        dec[declen] = '\0';
    return r;
}

/* Feeds raw octets, base64-encoded as a client would. */
static enum sasl_step feed(struct sasl_server *s, const void *raw, size_t len)
{
    struct buf b;
    buf_init(&b, 4 * SASL_LINE_MAX);
    sasl_b64_encode(raw, len, &b);
    enum sasl_step r = sasl_server_step(s, b.data ? b.data : "", b.len, &out);
    buf_free(&b);
    declen = sasl_b64_decode(out.data ? out.data : "", out.len, dec, sizeof(dec) - 1);
    if (declen >= 0)
        dec[declen] = '\0';
    return r;
}

static enum sasl_step feeds(struct sasl_server *s, const char *text)
{
    return feed(s, text, strlen(text));
}

/* A table of users for the lookup callback. */
struct tuser {
    const char *name;
    struct sasl_creds creds;
};
static struct tuser users[8];
static size_t nusers;
static int lookups;

static int lookup(void *arg, const char *authcid, struct sasl_creds *creds_r)
{
    (void)arg;
    lookups++;
    for (size_t i = 0; i < nusers; i++) {
        if (strcmp(users[i].name, authcid) == 0) {
            *creds_r = users[i].creds;
            return 0;
        }
    }
    return -1;
}

static void add_user(const char *name, const struct sasl_creds *c)
{
    users[nusers].name = name;
    users[nusers].creds = *c;
    nusers++;
}

static size_t unb64(const char *s, unsigned char *o, size_t cap)
{
    long n = sasl_b64_decode(s, strlen(s), o, cap);
    CHECK(n >= 0);
    return n < 0 ? 0 : (size_t)n;
}

/* SCRAM keys for a password with a given salt (what the client computes,
 * and what a users file would hold). */
static void scram_keys(const char *pw, const unsigned char *salt, size_t slen,
                       unsigned iter, unsigned char salted[32],
                       struct sasl_creds *c)
{
    unsigned char ck[32];
    unsigned int l;
    memset(c, 0, sizeof(*c));
    CHECK(PKCS5_PBKDF2_HMAC(pw, (int)strlen(pw), salt, (int)slen, (int)iter,
                            EVP_sha256(), 32, salted) == 1);
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10, ck, &l);
    EVP_Digest(ck, 32, c->scram_stored_key, &l, EVP_sha256(), NULL);
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Server Key", 10,
         c->scram_server_key, &l);
    memcpy(c->scram_salt, salt, slen);
    c->scram_salt_len = slen;
    c->scram_iterations = iter;
    c->has_scram = true;
}

/* Client side of one SCRAM exchange: returns the final step; *v_ok tells
 * whether the server's signature checked out. */
static enum sasl_step scram_login(struct sasl_server *s, const char *gs2,
                                  const char *user, const char *pw,
                                  bool *v_ok)
{
    static char first_bare[512], first[600], final_wp[1024], final[1200],
                am[sizeof(first_bare) + sizeof(dec) + sizeof(final_wp) + 4];
    snprintf(first_bare, sizeof(first_bare), "n=%s,r=clientnonce123", user);
    snprintf(first, sizeof(first), "%s%s", gs2, first_bare);
    *v_ok = false;
    enum sasl_step r = feeds(s, first);
    if (r != SASL_CONTINUE)
        return r;
    static char sfirst[sizeof(dec)];
    snprintf(sfirst, sizeof(sfirst), "%s", (const char *)dec);
    /* r=NONCE,s=SALT,i=ITER */
    char nonce[400] = "", salt64[200] = "";
    unsigned iter = 0;
    const char *sp = strstr(sfirst, ",s="), *ip = strstr(sfirst, ",i=");
    CHECK(strncmp(sfirst, "r=clientnonce123", 16) == 0 && sp && ip);
    if (!sp || !ip)
        return SASL_FAIL;
    snprintf(nonce, sizeof(nonce), "%.*s", (int)(sp - sfirst - 2), sfirst + 2);
    snprintf(salt64, sizeof(salt64), "%.*s", (int)(ip - sp - 3), sp + 3);
    iter = (unsigned)strtoul(ip + 3, NULL, 10);
    unsigned char salt[64], salted[32];
    size_t slen = unb64(salt64, salt, sizeof(salt));
    struct sasl_creds c;
    scram_keys(pw, salt, slen, iter, salted, &c);
    struct buf cb;
    buf_init(&cb, 1024);
    sasl_b64_encode((const unsigned char *)gs2, strlen(gs2), &cb);
    snprintf(final_wp, sizeof(final_wp), "c=%s,r=%s", cb.data, nonce);
    buf_free(&cb);
    snprintf(am, sizeof(am), "%s,%s,%s", first_bare, sfirst, final_wp);
    unsigned char ck[32], csig[32], proof[32], ssig[32];
    unsigned int l;
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10, ck, &l);
    HMAC(EVP_sha256(), c.scram_stored_key, 32, (const unsigned char *)am,
         strlen(am), csig, &l);
    for (int i = 0; i < 32; i++)
        proof[i] = ck[i] ^ csig[i];
    HMAC(EVP_sha256(), c.scram_server_key, 32, (const unsigned char *)am,
         strlen(am), ssig, &l);
    struct buf pb, vb;
    buf_init(&pb, 100);
    buf_init(&vb, 100);
    sasl_b64_encode(proof, 32, &pb);
    buf_appends(&vb, "v=");
    sasl_b64_encode(ssig, 32, &vb);
    snprintf(final, sizeof(final), "%s,p=%s", final_wp, pb.data);
    r = feeds(s, final);
    *v_ok = declen >= 0 && strcmp((const char *)dec, vb.data) == 0;
    buf_free(&pb);
    buf_free(&vb);
    return r;
}

static struct sasl_server *new_server(enum sasl_mech m)
{
    return sasl_server_new(m, "mail.example.test", lookup, NULL);
}

/* ---- base64 ---- */

TEST(b64_vectors)
{
    static const char *const v[][2] = {
        {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(*v); i++) {
        struct buf b;
        buf_init(&b, 64);
        sasl_b64_encode((const unsigned char *)v[i][0], strlen(v[i][0]), &b);
        CHECK_EQ_STR(buf_cstr(&b), v[i][1]);
        buf_free(&b);
        unsigned char o[16];
        CHECK_EQ_INT(sasl_b64_decode(v[i][1], strlen(v[i][1]), o, sizeof(o)),
                     strlen(v[i][0]));
        CHECK(memcmp(o, v[i][0], strlen(v[i][0])) == 0);
    }
    /* every byte value, every length up to 40, round trip */
    unsigned char raw[40], back[40];
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (unsigned char)(i * 37 + 200);
    for (size_t len = 0; len <= sizeof(raw); len++) {
        struct buf b;
        buf_init(&b, 100);
        sasl_b64_encode(raw, len, &b);
        CHECK_EQ_INT(b.len, (len + 2) / 3 * 4);
        CHECK_EQ_INT(sasl_b64_decode(b.data ? b.data : "", b.len, back, sizeof(back)), len);
        CHECK(memcmp(raw, back, len) == 0);
        buf_free(&b);
    }
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    struct buf b;
    buf_init(&b, 400);
    sasl_b64_encode(all, 256, &b);
    unsigned char o[256];
    CHECK_EQ_INT(sasl_b64_decode(b.data, b.len, o, sizeof(o)), 256);
    CHECK(memcmp(o, all, 256) == 0);
    buf_free(&b);
}

TEST(b64_strict)
{
    static const char *const bad[] = {
        "abc", "Zg=", "Zg", "Z", "Zh==", "Zm9=", " Zg==", "Zg== ", "Zg==\n",
        "Zg\r\n==", "Z===", "====", "Zg==Zg==", "Zm 9", "Zm9v\n", "Zm9-",
        "Zm9_", "=Zm9", "Zm=v", "\0\0\0\0", "Zm9v====",
    };
    unsigned char o[64];
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        size_t len = strlen(bad[i]);
        if (i == 19)
            len = 4;
        long r = sasl_b64_decode(bad[i], len, o, sizeof(o));
        if (r != -1)
            fprintf(stderr, "accepted '%s'\n", bad[i]);
        CHECK_EQ_INT(r, -1);
    }
    /* output capacity is respected */
    CHECK_EQ_INT(sasl_b64_decode("Zm9vYmFy", 8, o, 5), -1);
    CHECK_EQ_INT(sasl_b64_decode("Zm9vYmFy", 8, o, 6), 6);
    CHECK_EQ_INT(sasl_b64_decode("", 0, NULL, 0), 0);
    /* encode leaves a buffer alone when the result would not fit */
    struct buf b;
    buf_init(&b, 7);
    buf_appends(&b, "ab");
    sasl_b64_encode((const unsigned char *)"foob", 4, &b);
    CHECK_EQ_STR(buf_cstr(&b), "ab");
    sasl_b64_encode((const unsigned char *)"f", 1, &b);
    CHECK_EQ_STR(buf_cstr(&b), "abZg==");
    buf_free(&b);
}

/* ---- PLAIN ---- */

TEST(plain_ok)
{
    struct sasl_server *s = new_server(SASL_MECH_PLAIN);
    CHECK(sasl_server_password(s) == NULL);
    CHECK_EQ_INT(feed(s, "\0alice@example.test\0secret", 26), SASL_CHECK_PASSWORD);
    CHECK_EQ_STR(sasl_server_user(s), "alice@example.test");
    CHECK_EQ_STR(sasl_server_password(s), "secret");
    CHECK_EQ_INT(sasl_server_checked(s, true), SASL_OK);
    CHECK(sasl_server_password(s) == NULL);
    CHECK_EQ_STR(sasl_server_user(s), "alice@example.test");
    /* nothing after the end */
    CHECK_EQ_INT(feed(s, "\0a\0b", 4), SASL_FAIL);
    CHECK_EQ_INT(sasl_server_checked(s, true), SASL_FAIL);
    sasl_server_free(s);

    /* wrong password */
    s = new_server(SASL_MECH_PLAIN);
    CHECK_EQ_INT(feed(s, "\0u\0p", 4), SASL_CHECK_PASSWORD);
    CHECK_EQ_INT(sasl_server_checked(s, false), SASL_FAIL);
    sasl_server_free(s);

    /* no initial response: an empty challenge, then the message */
    s = new_server(SASL_MECH_PLAIN);
    CHECK_EQ_INT(feed_line(s, NULL), SASL_CONTINUE);
    CHECK_EQ_INT(out.len, 0);
    CHECK_EQ_INT(feed(s, "u\0u\0p w", 7), SASL_CHECK_PASSWORD);
    CHECK_EQ_STR(sasl_server_password(s), "p w");
    /* steps while the password is checked are misuse */
    CHECK_EQ_INT(feed(s, "\0u\0p", 4), SASL_FAIL);
    CHECK(sasl_server_password(s) == NULL);
    sasl_server_free(s);

    /* authzid equal to authcid, in any case */
    s = new_server(SASL_MECH_PLAIN);
    CHECK_EQ_INT(feed(s, "U@X.test\0u@x.TEST\0pw", 20), SASL_CHECK_PASSWORD);
    CHECK_EQ_STR(sasl_server_user(s), "u@x.TEST");
    sasl_server_free(s);

    /* 255 octets of password and of name are accepted; 8-bit too */
    char msg[600];
    msg[0] = '\0';
    memset(msg + 1, 'n', 255);
    msg[256] = '\0';
    memset(msg + 257, '\xe9', 255);
    s = new_server(SASL_MECH_PLAIN);
    CHECK_EQ_INT(feed(s, msg, 512), SASL_CHECK_PASSWORD);
    CHECK_EQ_INT(strlen(sasl_server_password(s)), 255);
    CHECK_EQ_INT(strlen(sasl_server_user(s)), 255);
    sasl_server_free(s);
}

static enum sasl_step plain_once(const void *raw, size_t len)
{
    struct sasl_server *s = new_server(SASL_MECH_PLAIN);
    enum sasl_step r = feed(s, raw, len);
    sasl_server_free(s);
    return r;
}

static enum sasl_step plain_line(const char *line)
{
    struct sasl_server *s = new_server(SASL_MECH_PLAIN);
    enum sasl_step r = feed_line(s, line);
    sasl_server_free(s);
    return r;
}

TEST(plain_failures)
{
    CHECK_EQ_INT(plain_line("abc"), SASL_BAD_SYNTAX);
    CHECK_EQ_INT(plain_line("AHUAcA"), SASL_BAD_SYNTAX);   /* no padding */
    CHECK_EQ_INT(plain_line("AHUAcA== "), SASL_BAD_SYNTAX);
    CHECK_EQ_INT(plain_line("*"), SASL_CANCELLED);
    CHECK_EQ_INT(plain_line("="), SASL_BAD_SYNTAX);        /* empty message */
    CHECK_EQ_INT(plain_line(""), SASL_BAD_SYNTAX);
    CHECK_EQ_INT(plain_line("AHUAcA=="), SASL_CHECK_PASSWORD);
    CHECK_EQ_INT(plain_once("other\0u\0p", 9), SASL_AUTHZ_DENIED);
    CHECK_EQ_INT(plain_once("u\0p", 3), SASL_BAD_SYNTAX);         /* one NUL */
    CHECK_EQ_INT(plain_once("up", 2), SASL_BAD_SYNTAX);
    CHECK_EQ_INT(plain_once("\0u\0p\0q", 6), SASL_BAD_SYNTAX);    /* NUL in pw */
    CHECK_EQ_INT(plain_once("\0u\0p\0", 5), SASL_BAD_SYNTAX);
    CHECK_EQ_INT(plain_once("\0\0p", 3), SASL_BAD_SYNTAX);        /* no authcid */
    CHECK_EQ_INT(plain_once("\0u\0", 3), SASL_BAD_SYNTAX);        /* no password */
    CHECK_EQ_INT(plain_once("\0\0", 2), SASL_BAD_SYNTAX);
    CHECK_EQ_INT(plain_once("\0u\nx\0p", 6), SASL_BAD_SYNTAX);    /* control */
    CHECK_EQ_INT(plain_once("a\tb\0u\0p", 7), SASL_BAD_SYNTAX);
    CHECK_EQ_INT(plain_once("\0u\x7f\0p", 5), SASL_BAD_SYNTAX);
    char msg[700];
    memset(msg, 'x', sizeof(msg));
    msg[0] = '\0';
    msg[257] = '\0';          /* 256-octet name */
    CHECK_EQ_INT(plain_once(msg, 300), SASL_BAD_SYNTAX);
    msg[257] = 'x';
    msg[2] = '\0';            /* 1-octet name, 297-octet password */
    CHECK_EQ_INT(plain_once(msg, 300), SASL_BAD_SYNTAX);
    CHECK_EQ_INT(plain_once(msg, 259), SASL_BAD_SYNTAX);  /* 256 */
    CHECK_EQ_INT(plain_once(msg, 258), SASL_CHECK_PASSWORD);  /* 255 */

    /* overlong line: refused before decoding */
    char *line = malloc(SASL_LINE_MAX + 5);
    memset(line, 'A', SASL_LINE_MAX + 4);
    line[SASL_LINE_MAX + 4] = '\0';
    CHECK_EQ_INT(plain_line(line), SASL_BAD_SYNTAX);
    line[SASL_LINE_MAX] = '\0';     /* at the cap: decodes (to NULs: bad) */
    CHECK_EQ_INT(plain_line(line), SASL_BAD_SYNTAX);
    free(line);

    /* in == NULL only at the start */
    struct sasl_server *s = new_server(SASL_MECH_PLAIN);
    CHECK_EQ_INT(feed_line(s, NULL), SASL_CONTINUE);
    CHECK_EQ_INT(feed_line(s, NULL), SASL_BAD_SYNTAX);
    sasl_server_free(s);
    /* cancel after the empty challenge */
    s = new_server(SASL_MECH_PLAIN);
    CHECK_EQ_INT(feed_line(s, NULL), SASL_CONTINUE);
    CHECK_EQ_INT(feed_line(s, "*"), SASL_CANCELLED);
    sasl_server_free(s);
}

TEST(plain_truncated_and_flipped)
{
    static const char full[] = "\0bob@example.test\0hunter2";
    size_t len = sizeof(full) - 1;
    for (size_t cut = 0; cut < len; cut++) {
        struct sasl_server *s = new_server(SASL_MECH_PLAIN);
        enum sasl_step r = feed(s, full, cut);
        CHECK(r == SASL_BAD_SYNTAX ||
              (r == SASL_CHECK_PASSWORD && strcmp(sasl_server_password(s), "hunter2") != 0));
        sasl_server_free(s);
    }
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            char m[sizeof(full)];
            memcpy(m, full, sizeof(full));
            m[i] = (char)(m[i] ^ (1 << bit));
            struct sasl_server *s = new_server(SASL_MECH_PLAIN);
            enum sasl_step r = feed(s, m, len);
            CHECK(r == SASL_BAD_SYNTAX || r == SASL_AUTHZ_DENIED ||
                  (r == SASL_CHECK_PASSWORD &&
                   (strcmp(sasl_server_password(s), "hunter2") != 0 ||
                    strcmp(sasl_server_user(s), "bob@example.test") != 0)));
            sasl_server_free(s);
        }
    }
}

/* ---- LOGIN ---- */

TEST(login)
{
    struct sasl_server *s = new_server(SASL_MECH_LOGIN);
    CHECK_EQ_INT(feed_line(s, NULL), SASL_CONTINUE);
    CHECK_EQ_STR(buf_cstr(&out), "VXNlcm5hbWU6");
    CHECK_EQ_STR((const char *)dec, "Username:");
    CHECK_EQ_INT(feeds(s, "carol@example.test"), SASL_CONTINUE);
    CHECK_EQ_STR(buf_cstr(&out), "UGFzc3dvcmQ6");
    CHECK_EQ_STR(sasl_server_user(s), "carol@example.test");
    CHECK_EQ_INT(feeds(s, "pass word"), SASL_CHECK_PASSWORD);
    CHECK_EQ_STR(sasl_server_password(s), "pass word");
    CHECK_EQ_INT(sasl_server_checked(s, true), SASL_OK);
    sasl_server_free(s);

    /* the initial response carries the user name */
    s = new_server(SASL_MECH_LOGIN);
    CHECK_EQ_INT(feeds(s, "dave"), SASL_CONTINUE);
    CHECK_EQ_STR((const char *)dec, "Password:");
    CHECK_EQ_INT(feeds(s, "x"), SASL_CHECK_PASSWORD);
    CHECK_EQ_INT(sasl_server_checked(s, false), SASL_FAIL);
    sasl_server_free(s);

    /* failures */
    s = new_server(SASL_MECH_LOGIN);
    CHECK_EQ_INT(feed_line(s, "="), SASL_BAD_SYNTAX);      /* empty user */
    sasl_server_free(s);
    s = new_server(SASL_MECH_LOGIN);
    CHECK_EQ_INT(feed_line(s, NULL), SASL_CONTINUE);
    CHECK_EQ_INT(feed_line(s, ""), SASL_BAD_SYNTAX);
    sasl_server_free(s);
    s = new_server(SASL_MECH_LOGIN);
    CHECK_EQ_INT(feeds(s, "u"), SASL_CONTINUE);
    CHECK_EQ_INT(feed_line(s, "*"), SASL_CANCELLED);
    sasl_server_free(s);
    s = new_server(SASL_MECH_LOGIN);
    CHECK_EQ_INT(feeds(s, "u"), SASL_CONTINUE);
    CHECK_EQ_INT(feed(s, "p\0q", 3), SASL_BAD_SYNTAX);
    sasl_server_free(s);
    s = new_server(SASL_MECH_LOGIN);
    CHECK_EQ_INT(feed(s, "u\0", 2), SASL_BAD_SYNTAX);
    sasl_server_free(s);
    s = new_server(SASL_MECH_LOGIN);
    CHECK_EQ_INT(feeds(s, "u"), SASL_CONTINUE);
    CHECK_EQ_INT(feed_line(s, "cA"), SASL_BAD_SYNTAX);
    sasl_server_free(s);
    s = new_server(SASL_MECH_LOGIN);
    CHECK_EQ_INT(feeds(s, "u"), SASL_CONTINUE);
    CHECK_EQ_INT(feed_line(s, ""), SASL_BAD_SYNTAX);       /* empty password */
    sasl_server_free(s);
    char big[300];
    memset(big, 'a', sizeof(big));
    s = new_server(SASL_MECH_LOGIN);
    CHECK_EQ_INT(feed(s, big, 256), SASL_BAD_SYNTAX);
    sasl_server_free(s);
    s = new_server(SASL_MECH_LOGIN);
    CHECK_EQ_INT(feeds(s, "u"), SASL_CONTINUE);
    CHECK_EQ_INT(feed(s, big, 256), SASL_BAD_SYNTAX);
    sasl_server_free(s);
}

/* ---- SCRAM-SHA-256 ---- */

#define RFC_CFIRST "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_SFIRST "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0," \
                   "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CFINAL "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0," \
                   "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SFINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static void rfc7677_user(void)
{
    unsigned char salt[16], salted[32];
    size_t slen = unb64("W22ZaJ0SNY7soEsUEjb6gQ==", salt, sizeof(salt));
    struct sasl_creds c;
    scram_keys("pencil", salt, slen, 4096, salted, &c);
    add_user("user", &c);
}

static struct sasl_server *rfc_server(void)
{
    struct sasl_server *s = new_server(SASL_MECH_SCRAM_SHA_256);
    sasl_server_set_nonce(s, RFC_SNONCE);
    return s;
}

TEST(scram_rfc7677)
{
    struct sasl_server *s = rfc_server();
    CHECK_EQ_INT(feeds(s, RFC_CFIRST), SASL_CONTINUE);
    CHECK_EQ_STR((const char *)dec, RFC_SFIRST);
    CHECK_EQ_STR(sasl_server_user(s), "user");
    CHECK_EQ_INT(feeds(s, RFC_CFINAL), SASL_OK);
    CHECK_EQ_STR((const char *)dec, RFC_SFINAL);
    CHECK_EQ_STR(sasl_server_user(s), "user");
    CHECK_EQ_INT(feeds(s, RFC_CFINAL), SASL_FAIL);      /* over */
    sasl_server_free(s);

    /* without an initial response: an empty challenge first */
    s = rfc_server();
    CHECK_EQ_INT(feed_line(s, NULL), SASL_CONTINUE);
    CHECK_EQ_INT(out.len, 0);
    CHECK_EQ_INT(feeds(s, RFC_CFIRST), SASL_CONTINUE);
    CHECK_EQ_STR((const char *)dec, RFC_SFIRST);
    CHECK_EQ_INT(feeds(s, RFC_CFINAL), SASL_OK);
    CHECK_EQ_STR((const char *)dec, RFC_SFINAL);
    sasl_server_free(s);

    /* a wrong password (proof off by one bit) */
    s = rfc_server();
    CHECK_EQ_INT(feeds(s, RFC_CFIRST), SASL_CONTINUE);
    CHECK_EQ_INT(feeds(s, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                          "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVU="), SASL_FAIL);
    CHECK_EQ_INT(out.len, 0);
    sasl_server_free(s);
}

/* Runs the RFC exchange with client-first cf and client-final ff. */
static enum sasl_step rfc_run(const char *cf, size_t cflen, const char *ff, size_t fflen)
{
    struct sasl_server *s = rfc_server();
    enum sasl_step r = feed(s, cf, cflen);
    if (r == SASL_CONTINUE)
        r = feed(s, ff, fflen);
    sasl_server_free(s);
    return r;
}

TEST(scram_truncated_and_flipped)
{
    const char *cf = RFC_CFIRST, *ff = RFC_CFINAL;
    size_t cl = strlen(cf), fl = strlen(ff);
    CHECK_EQ_INT(rfc_run(cf, cl, ff, fl), SASL_OK);
    for (size_t cut = 0; cut < fl; cut++) {
        enum sasl_step r = rfc_run(cf, cl, ff, cut);
        CHECK(r == SASL_FAIL || r == SASL_BAD_SYNTAX);
    }
    for (size_t cut = 0; cut < cl; cut++) {
        enum sasl_step r = rfc_run(cf, cut, ff, fl);
        CHECK(r == SASL_FAIL || r == SASL_BAD_SYNTAX);
    }
    for (size_t i = 0; i < fl; i++) {
        for (int bit = 0; bit < 8; bit++) {
            char m[256];
            memcpy(m, ff, fl);
            m[i] = (char)(m[i] ^ (1 << bit));
            enum sasl_step r = rfc_run(cf, cl, m, fl);
            if (r == SASL_OK)
                fprintf(stderr, "final flip %zu/%d accepted\n", i, bit);
            CHECK(r == SASL_FAIL || r == SASL_BAD_SYNTAX);
        }
    }
    for (size_t i = 0; i < cl; i++) {
        for (int bit = 0; bit < 8; bit++) {
            char m[256];
            memcpy(m, cf, cl);
            m[i] = (char)(m[i] ^ (1 << bit));
            enum sasl_step r = rfc_run(m, cl, ff, fl);
            if (r == SASL_OK)
                fprintf(stderr, "first flip %zu/%d accepted\n", i, bit);
            CHECK(r == SASL_FAIL || r == SASL_BAD_SYNTAX || r == SASL_AUTHZ_DENIED);
        }
    }
}

static enum sasl_step scram_first_only(const char *cf)
{
    struct sasl_server *s = rfc_server();
    enum sasl_step r = feeds(s, cf);
    sasl_server_free(s);
    return r;
}

TEST(scram_first_syntax)
{
    CHECK_EQ_INT(scram_first_only("n,,n=user,r=abc"), SASL_CONTINUE);
    CHECK_EQ_INT(scram_first_only("y,,n=user,r=abc"), SASL_CONTINUE);
    CHECK_EQ_INT(scram_first_only("n,a=user,n=user,r=abc"), SASL_CONTINUE);
    CHECK_EQ_INT(scram_first_only("n,a=USER,n=user,r=abc"), SASL_CONTINUE);
    CHECK_EQ_INT(scram_first_only("n,,n=user,r=abc,x=ext,y=z"), SASL_CONTINUE);
    CHECK_EQ_INT(scram_first_only("n,a=other,n=user,r=abc"), SASL_AUTHZ_DENIED);
    CHECK_EQ_INT(scram_first_only("p=tls-unique,,n=user,r=abc"), SASL_FAIL);
    CHECK_EQ_INT(scram_first_only("p=tls-exporter,a=user,n=user,r=abc"), SASL_FAIL);
    CHECK_EQ_INT(scram_first_only("n,,m=ext,n=user,r=abc"), SASL_FAIL);
    static const char *const bad[] = {
        "", "n", "n,", "n,,", "x,,n=user,r=abc", "nn,,n=user,r=abc",
        "n,b=user,n=user,r=abc", "n,a=,n=user,r=abc", "n,a=user",
        "n,,user,r=abc", "n,,n=,r=abc", "n,,n=user", "n,,n=user,",
        "n,,n=user,r=", "n,,n=user,r", "n,,n=user,x=abc", "n,,r=abc,n=user",
        "n,,n=us=er,r=abc", "n,,n=us=2,r=abc", "n,,n=us=2c,r=abc",
        "n,,n=user,r=a b", "n,,n=user,r=a\x7f", "n,,n=user,r=abc,",
        "n,,n=user,r=abc,=x", "n,,n=user,r=abc,1=x", "n,,n=user,r=abc,x",
        "n,,n=u\tser,r=abc", "n,,n=user,r=abc\xff",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        enum sasl_step r = scram_first_only(bad[i]);
        if (r != SASL_BAD_SYNTAX)
            fprintf(stderr, "'%s': %d\n", bad[i], (int)r);
        CHECK_EQ_INT(r, SASL_BAD_SYNTAX);
    }
    struct sasl_server *s = rfc_server();
    CHECK_EQ_INT(feed(s, "n,,n=user\0,r=abc", 16), SASL_BAD_SYNTAX);
    sasl_server_free(s);
    /* escapes decode; a ',' or '=' in a name just makes an unknown user */
    s = rfc_server();
    CHECK_EQ_INT(feeds(s, "n,a=a=2Cb=3D,n=a=2Cb=3D,r=abc"), SASL_CONTINUE);
    CHECK_EQ_STR(sasl_server_user(s), "a,b=");
    sasl_server_free(s);
    /* client nonce cap */
    char cf[400];
    int n = snprintf(cf, sizeof(cf), "n,,n=user,r=");
    memset(cf + n, 'x', 256);
    cf[n + 256] = '\0';
    CHECK_EQ_INT(scram_first_only(cf), SASL_CONTINUE);
    cf[n + 256] = 'x';
    cf[n + 257] = '\0';
    CHECK_EQ_INT(scram_first_only(cf), SASL_BAD_SYNTAX);
    /* name cap: 255 decoded octets */
    n = snprintf(cf, sizeof(cf), "n,,n=");
    memset(cf + n, 'u', 255);
    snprintf(cf + n + 255, sizeof(cf) - (size_t)n - 255, ",r=abc");
    CHECK_EQ_INT(scram_first_only(cf), SASL_CONTINUE);
    memset(cf + n, 'u', 256);
    snprintf(cf + n + 256, sizeof(cf) - (size_t)n - 256, ",r=abc");
    CHECK_EQ_INT(scram_first_only(cf), SASL_BAD_SYNTAX);
}

static enum sasl_step rfc_final(const char *ff)
{
    struct sasl_server *s = rfc_server();
    enum sasl_step r = feeds(s, RFC_CFIRST);
    CHECK_EQ_INT(r, SASL_CONTINUE);
    r = feeds(s, ff);
    sasl_server_free(s);
    return r;
}

TEST(scram_final_syntax)
{
#define N "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define P "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    CHECK_EQ_INT(rfc_final("c=biws," N "," P), SASL_OK);
    /* channel binding data other than the gs2 header we saw */
    CHECK_EQ_INT(rfc_final("c=eSws," N "," P), SASL_FAIL);
    CHECK_EQ_INT(rfc_final("c=," N "," P), SASL_FAIL);
    /* nonce not ours, or only the client's half */
    CHECK_EQ_INT(rfc_final("c=biws,r=rOprNGfwEbeRWgbNEkqO," P), SASL_FAIL);
    CHECK_EQ_INT(rfc_final("c=biws," N "x," P), SASL_FAIL);
    /* an extension changes AuthMessage: the proof no longer matches */
    CHECK_EQ_INT(rfc_final("c=biws," N ",x=y," P), SASL_FAIL);
    static const char *const bad[] = {
        "c=biws," N, "c=biws," N ",p=", "c=biws," N ",p=abc",
        "c=biws," N ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",
        "c=biws," N ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=y",
        "c=biws," N ",p=ZGVhZA==", "c=biws," P, N ",c=biws," P, "c=biw," N "," P,
        "c=biws," N ",," P, "c=biws," N ",1=x," P, "x=biws," N "," P,
        "c=biws,n=x," P, "", ",p=", "p=",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        enum sasl_step r = rfc_final(bad[i]);
        if (r != SASL_BAD_SYNTAX)
            fprintf(stderr, "'%s': %d\n", bad[i], (int)r);
        CHECK_EQ_INT(r, SASL_BAD_SYNTAX);
    }
    struct sasl_server *s = rfc_server();
    CHECK_EQ_INT(feeds(s, RFC_CFIRST), SASL_CONTINUE);
    CHECK_EQ_INT(feed(s, "c=biws\0," N "," P, 7 + strlen(N "," P)), SASL_BAD_SYNTAX);
    sasl_server_free(s);
    s = rfc_server();
    CHECK_EQ_INT(feeds(s, RFC_CFIRST), SASL_CONTINUE);
    CHECK_EQ_INT(feed_line(s, "*"), SASL_CANCELLED);
    sasl_server_free(s);
    s = rfc_server();
    CHECK_EQ_INT(feeds(s, RFC_CFIRST), SASL_CONTINUE);
    CHECK_EQ_INT(feed_line(s, "Yz1i aXdz"), SASL_BAD_SYNTAX);
    sasl_server_free(s);
#undef N
#undef P
}

TEST(scram_roundtrip)
{
    struct sasl_creds c;
    CHECK(sasl_scram_derive("correct horse", 4096, &c) == 0);
    CHECK(c.has_scram && c.scram_salt_len == 16 && c.scram_iterations == 4096);
    add_user("alice@example.test", &c);
    struct sasl_creds c2;
    CHECK(sasl_scram_derive("correct horse", 4096, &c2) == 0);
    CHECK(memcmp(c.scram_salt, c2.scram_salt, 16) != 0);     /* fresh salt */
    CHECK(memcmp(c.scram_stored_key, c2.scram_stored_key, 32) != 0);
    /* the keys are the RFC 5802 ones for that salt */
    unsigned char salted[32];
    struct sasl_creds c3;
    scram_keys("correct horse", c.scram_salt, 16, 4096, salted, &c3);
    CHECK(memcmp(c3.scram_stored_key, c.scram_stored_key, 32) == 0);
    CHECK(memcmp(c3.scram_server_key, c.scram_server_key, 32) == 0);
    CHECK(sasl_scram_derive("x", 4095, &c3) == -1);
    CHECK(sasl_scram_derive("x", 10000001, &c3) == -1);
    CHECK(sasl_scram_derive(NULL, 4096, &c3) == -1);
    CHECK(!c3.has_scram);

    bool v_ok;
    struct sasl_server *s = new_server(SASL_MECH_SCRAM_SHA_256);
    CHECK_EQ_INT(scram_login(s, "n,,", "alice@example.test", "correct horse", &v_ok),
                 SASL_OK);
    CHECK(v_ok);
    sasl_server_free(s);
    s = new_server(SASL_MECH_SCRAM_SHA_256);
    CHECK_EQ_INT(scram_login(s, "y,,", "alice@example.test", "correct horse", &v_ok),
                 SASL_OK);
    CHECK(v_ok);
    sasl_server_free(s);
    s = new_server(SASL_MECH_SCRAM_SHA_256);
    CHECK_EQ_INT(scram_login(s, "n,a=alice@example.test,", "alice@example.test",
                             "correct horse", &v_ok), SASL_OK);
    sasl_server_free(s);
    s = new_server(SASL_MECH_SCRAM_SHA_256);
    CHECK_EQ_INT(scram_login(s, "n,,", "alice@example.test", "correct hors", &v_ok),
                 SASL_FAIL);
    CHECK(!v_ok);
    sasl_server_free(s);

    /* our nonce: random, 32 base64 characters after the client's */
    char n1[128], n2[128];
    s = new_server(SASL_MECH_SCRAM_SHA_256);
    CHECK_EQ_INT(feeds(s, "n,,n=alice@example.test,r=abc"), SASL_CONTINUE);
    snprintf(n1, sizeof(n1), "%.*s", (int)strcspn((char *)dec, ","), (char *)dec);
    sasl_server_free(s);
    s = new_server(SASL_MECH_SCRAM_SHA_256);
    CHECK_EQ_INT(feeds(s, "n,,n=alice@example.test,r=abc"), SASL_CONTINUE);
    snprintf(n2, sizeof(n2), "%.*s", (int)strcspn((char *)dec, ","), (char *)dec);
    sasl_server_free(s);
    CHECK_EQ_INT(strlen(n1), 5 + 32);
    CHECK(strncmp(n1, "r=abc", 5) == 0 && strcmp(n1, n2) != 0);
    /* test-only nonces that are not valid are ignored */
    s = new_server(SASL_MECH_SCRAM_SHA_256);
    sasl_server_set_nonce(s, "a,b");
    CHECK_EQ_INT(feeds(s, "n,,n=alice@example.test,r=abc"), SASL_CONTINUE);
    CHECK_EQ_INT(strcspn((char *)dec, ","), 5 + 32);
    sasl_server_free(s);
}

/* "r=...,s=SALT,i=ITER" -> the part after the nonce */
static const char *after_nonce(const char *sf)
{
    const char *p = strstr(sf, ",s=");
    return p != NULL ? p : "";
}

TEST(scram_unknown_user)
{
    struct sasl_creds c;
    CHECK(sasl_scram_derive("pw", SASL_SCRAM_ITERATIONS, &c) == 0);
    add_user("known@example.test", &c);
    struct sasl_creds none;
    memset(&none, 0, sizeof(none));
    add_user("nokeys@example.test", &none);

    char known[200], unk1[200], unk2[200], unk3[200], nokeys[200], otherhost[200];
    struct {
        const char *user, *host;
        char *dst;
    } runs[] = {
        {"known@example.test", "mail.example.test", known},
        {"ghost@example.test", "mail.example.test", unk1},
        {"ghost@example.test", "mail.example.test", unk2},
        {"phantom@example.test", "mail.example.test", unk3},
        {"nokeys@example.test", "mail.example.test", nokeys},
        {"ghost@example.test", "other.example.test", otherhost},
    };
    for (size_t i = 0; i < sizeof(runs) / sizeof(*runs); i++) {
        struct sasl_server *s = sasl_server_new(SASL_MECH_SCRAM_SHA_256, runs[i].host,
                                                lookup, NULL);
        char cf[200];
        snprintf(cf, sizeof(cf), "n,,n=%s,r=abcdef", runs[i].user);
        CHECK_EQ_INT(feeds(s, cf), SASL_CONTINUE);
        snprintf(runs[i].dst, 200, "%s", after_nonce((const char *)dec));
        CHECK_EQ_INT(strcspn((const char *)dec, ","), 8 + 32);
        /* any proof fails; the same way a wrong password does */
        bool v_ok;
        CHECK_EQ_INT(feeds(s, "c=biws,r=x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
                     SASL_FAIL);
        sasl_server_free(s);
        if (i > 0) {
            s = sasl_server_new(SASL_MECH_SCRAM_SHA_256, runs[i].host, lookup, NULL);
            CHECK_EQ_INT(scram_login(s, "n,,", runs[i].user, "pw", &v_ok), SASL_FAIL);
            CHECK(!v_ok);
            sasl_server_free(s);
        }
    }
    /* same shape: ",s=" 24 base64 characters ",i=10000" */
    CHECK_EQ_INT(strlen(known), strlen(unk1));
    CHECK(strncmp(unk1, ",s=", 3) == 0 && strcmp(unk1 + 27, ",i=10000") == 0);
    CHECK(strcmp(known + 27, ",i=10000") == 0);
    CHECK_EQ_INT(strlen(nokeys), strlen(unk1));
    /* stable per user and host, different otherwise */
    CHECK_EQ_STR(unk1, unk2);
    CHECK(strcmp(unk1, unk3) != 0);
    CHECK(strcmp(unk1, otherhost) != 0);
    CHECK(strcmp(unk1, known) != 0);
    /* the known user still logs in */
    bool v_ok;
    struct sasl_server *s = new_server(SASL_MECH_SCRAM_SHA_256);
    CHECK_EQ_INT(scram_login(s, "n,,", "known@example.test", "pw", &v_ok), SASL_OK);
    CHECK(v_ok);
    sasl_server_free(s);
    /* non-ASCII names are never looked up, and still get a fake salt */
    s = new_server(SASL_MECH_SCRAM_SHA_256);
    int before = lookups;
    CHECK_EQ_INT(feeds(s, "n,,n=j\xc3\xb6rg,r=abc"), SASL_CONTINUE);
    CHECK_EQ_INT(lookups, before);
    CHECK(strstr((const char *)dec, ",i=10000") != NULL);
    sasl_server_free(s);
}

/* ---- CRAM-MD5 ---- */

TEST(cram_rfc2195)
{
    struct sasl_creds c;
    memset(&c, 0, sizeof(c));
    /* RFC 2195 5: the HMAC-MD5 contexts of "tanstaaftanstaaf". */
    snprintf(c.cram_secret, sizeof(c.cram_secret), "%s",
             "54b21152711fb604ca3e035e7015116bd06d4e1b26fccaa4b0b61801132340a3");
    add_user("tim", &c);
    const char *resp[] = {"tim b913a602c7eda7a495b4e6e7334d3890",
                          "tim B913A602C7EDA7A495B4E6E7334D3890"};
    for (int i = 0; i < 2; i++) {
        struct sasl_server *s = sasl_server_new(SASL_MECH_CRAM_MD5,
                                                "postoffice.reston.mci.net",
                                                lookup, NULL);
        sasl_server_set_nonce(s, "1896.697170952");
        CHECK_EQ_INT(feed_line(s, NULL), SASL_CONTINUE);
        CHECK_EQ_STR((const char *)dec, "<1896.697170952@postoffice.reston.mci.net>");
        CHECK_EQ_STR(buf_cstr(&out),
                     "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+");
        CHECK_EQ_INT(feeds(s, resp[i]), SASL_OK);
        CHECK_EQ_STR(sasl_server_user(s), "tim");
        sasl_server_free(s);
    }
}

static enum sasl_step cram_run(const char *resp, size_t len)
{
    struct sasl_server *s = sasl_server_new(SASL_MECH_CRAM_MD5,
                                            "postoffice.reston.mci.net", lookup, NULL);
    sasl_server_set_nonce(s, "1896.697170952");
    CHECK_EQ_INT(feed_line(s, NULL), SASL_CONTINUE);
    enum sasl_step r = feed(s, resp, len);
    sasl_server_free(s);
    return r;
}

TEST(cram_failures)
{
    struct sasl_creds c;
    memset(&c, 0, sizeof(c));
    add_user("nosecret", &c);
    const char *good = "tim b913a602c7eda7a495b4e6e7334d3890";
    size_t gl = strlen(good);
    CHECK_EQ_INT(cram_run(good, gl), SASL_OK);
    CHECK_EQ_INT(cram_run("tim b913a602c7eda7a495b4e6e7334d3891", gl), SASL_FAIL);
    CHECK_EQ_INT(cram_run("tom b913a602c7eda7a495b4e6e7334d3890", gl), SASL_FAIL);
    CHECK_EQ_INT(cram_run("nosecret b913a602c7eda7a495b4e6e7334d3890", gl + 5), SASL_FAIL);
    CHECK_EQ_INT(cram_run("tim  b913a602c7eda7a495b4e6e7334d3890", gl + 1), SASL_FAIL);
    CHECK_EQ_INT(cram_run("timb913a602c7eda7a495b4e6e7334d3890", gl - 1), SASL_BAD_SYNTAX);
    CHECK_EQ_INT(cram_run("tim b913a602c7eda7a495b4e6e7334d389g", gl), SASL_BAD_SYNTAX);
    CHECK_EQ_INT(cram_run("tim b913a602c7eda7a495b4e6e7334d389", gl - 1), SASL_BAD_SYNTAX);
    CHECK_EQ_INT(cram_run(" b913a602c7eda7a495b4e6e7334d3890", gl - 3), SASL_BAD_SYNTAX);
    CHECK_EQ_INT(cram_run("t\0m b913a602c7eda7a495b4e6e7334d3890", gl), SASL_BAD_SYNTAX);
    CHECK_EQ_INT(cram_run("", 0), SASL_BAD_SYNTAX);
    for (size_t cut = 0; cut < gl; cut++) {
        enum sasl_step r = cram_run(good, cut);
        CHECK(r == SASL_BAD_SYNTAX || r == SASL_FAIL);
    }
    for (size_t i = 0; i < gl; i++) {
        for (int bit = 0; bit < 8; bit++) {
            char m[64];
            memcpy(m, good, gl);
            m[i] = (char)(m[i] ^ (1 << bit));
            enum sasl_step r = cram_run(m, gl);
            /* the case bit of a hex letter is the one harmless flip */
            bool hexcase = i > 3 && m[i] >= 'A' && m[i] <= 'F' && bit == 5;
            CHECK(hexcase ? r == SASL_OK : (r == SASL_BAD_SYNTAX || r == SASL_FAIL));
        }
    }
    /* CRAM-MD5 has no initial response */
    struct sasl_server *s = new_server(SASL_MECH_CRAM_MD5);
    CHECK_EQ_INT(feeds(s, good), SASL_BAD_SYNTAX);
    sasl_server_free(s);
    /* cancel */
    s = new_server(SASL_MECH_CRAM_MD5);
    CHECK_EQ_INT(feed_line(s, NULL), SASL_CONTINUE);
    CHECK_EQ_INT(feed_line(s, "*"), SASL_CANCELLED);
    sasl_server_free(s);
    /* a random challenge: <digits.digits@host> */
    s = new_server(SASL_MECH_CRAM_MD5);
    CHECK_EQ_INT(feed_line(s, NULL), SASL_CONTINUE);
    const char *ch = (const char *)dec;
    size_t d1 = strspn(ch + 1, "0123456789");
    size_t d2 = strspn(ch + 2 + d1, "0123456789");
    CHECK(ch[0] == '<' && d1 > 0 && ch[1 + d1] == '.' && d2 > 0 &&
          strcmp(ch + 2 + d1 + d2, "@mail.example.test>") == 0);
    sasl_server_free(s);
}

/* ---- misuse ---- */

TEST(misuse)
{
    CHECK(sasl_server_new(SASL_MECH_DIGEST_MD5, "h", lookup, NULL) == NULL);
    CHECK(sasl_server_new(SASL_MECH__COUNT, "h", lookup, NULL) == NULL);
    CHECK(sasl_server_new((enum sasl_mech)-1, "h", lookup, NULL) == NULL);
    sasl_server_free(NULL);
    CHECK_EQ_INT(sasl_server_step(NULL, "x", 1, &out), SASL_FAIL);
    CHECK_EQ_INT(sasl_server_checked(NULL, true), SASL_FAIL);
    CHECK(sasl_server_password(NULL) == NULL);
    CHECK_EQ_STR(sasl_server_user(NULL), "");
    /* checked() before any password */
    struct sasl_server *s = new_server(SASL_MECH_PLAIN);
    CHECK_EQ_STR(sasl_server_user(s), "");
    CHECK_EQ_INT(sasl_server_checked(s, true), SASL_FAIL);
    CHECK_EQ_INT(feed(s, "\0u\0p", 4), SASL_FAIL);
    sasl_server_free(s);
    /* no lookup callback: SCRAM and CRAM-MD5 fail, never crash */
    s = sasl_server_new(SASL_MECH_SCRAM_SHA_256, NULL, NULL, NULL);
    CHECK_EQ_INT(feeds(s, "n,,n=user,r=abc"), SASL_CONTINUE);
    sasl_server_free(s);
    s = sasl_server_new(SASL_MECH_CRAM_MD5, NULL, NULL, NULL);
    CHECK_EQ_INT(feed_line(s, NULL), SASL_CONTINUE);
    CHECK(strstr((const char *)dec, "@localhost>") != NULL);
    CHECK_EQ_INT(feeds(s, "tim b913a602c7eda7a495b4e6e7334d3890"), SASL_FAIL);
    sasl_server_free(s);
    /* an output buffer too small for the challenge */
    struct buf tiny;
    buf_init(&tiny, 8);
    s = new_server(SASL_MECH_LOGIN);
    CHECK_EQ_INT(sasl_server_step(s, NULL, 0, &tiny), SASL_FAIL);
    sasl_server_free(s);
    buf_free(&tiny);
    /* a long host name is cut, not overrun */
    char host[600];
    memset(host, 'h', sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    s = sasl_server_new(SASL_MECH_CRAM_MD5, host, lookup, NULL);
    CHECK_EQ_INT(feed_line(s, NULL), SASL_CONTINUE);
    CHECK(declen > 255 && declen < 320);
    sasl_server_free(s);
}

int main(void)
{
    buf_init(&out, 4096);
    rfc7677_user();
    RUN(b64_vectors);
    RUN(b64_strict);
    RUN(plain_ok);
    RUN(plain_failures);
    RUN(plain_truncated_and_flipped);
    RUN(login);
    RUN(scram_rfc7677);
    RUN(scram_truncated_and_flipped);
    RUN(scram_first_syntax);
    RUN(scram_final_syntax);
    RUN(scram_roundtrip);
    RUN(scram_unknown_user);
    RUN(cram_rfc2195);
    RUN(cram_failures);
    RUN(misuse);
    buf_free(&out);
    return harness_done("test_sasl");
}
