/*
 * users: the users file and password hashing. See users.h.
 *
 * SECURITY: hashes are argon2id (t=3, m=64 MiB, p=1, 16-byte salt from
 * getrandom) so a stolen users file costs an attacker real memory per
 * guess. SHA-512-crypt ("$6$") is accepted for verification only, so
 * existing shadow-style hashes can be imported; it is computed here over
 * OpenSSL's SHA-512 (Drepper's specification, checked against its test
 * vectors and libcrypt) so estafeta needs no libcrypt. Every comparison of
 * a computed hash with the stored one is constant-time. The file is
 * rewritten atomically and under a lock, keeping its owner and mode, so a
 * crash or two administrators at once cannot leave it half-written or lose
 * one of the two updates.
 *
 * SCRAM keys are checked in full when the file is read (iteration range,
 * base64, salt and key lengths), so users_sasl_creds() cannot fail for a
 * user of this file and a bad line is reported with its number instead of
 * surfacing as a failed login. A cram-md5= secret is the password in clear:
 * buffers that held one are wiped before they are freed.
 */
#include "conf/users.h"

#include <argon2.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "lib/fsutil.h"
#include "lib/xalloc.h"
#include "lib/random.h"

#define ARGON2_T 3
#define ARGON2_M_KIB 65536
#define ARGON2_P 1
#define ARGON2_SALT 16
#define ARGON2_HASHLEN 32

/* ---- parsing ---- */

/* The fields after the hash, as spans of the line. */
struct user_fields {
    const char *scram;  /* value after "scram-sha-256=", or NULL */
    size_t scram_len;
    const char *cram;   /* value after "cram-md5=", or NULL */
    size_t cram_len;
};

/* Decodes "ITER,SALT,STOREDKEY,SERVERKEY" (syntax already checked by
 * config_check_scram) into creds. NULL, or why not. */
static const char *scram_decode(const char *v, struct sasl_creds *c)
{
    memset(c, 0, sizeof(*c));
    char *end;
    unsigned long iter = strtoul(v, &end, 10);
    if (end == v || *end != ',' || iter < 4096 || iter > 10000000)
        return "scram-sha-256= must start with an iteration count of 4096 or more";
    const char *f[3];
    size_t len[3];
    for (int i = 0; i < 3; i++) {
        f[i] = end + 1;
        len[i] = strcspn(f[i], ",");
        end = (char *)f[i] + len[i];
    }
    unsigned char key[64];
    long n = sasl_b64_decode(f[0], len[0], c->scram_salt, sizeof(c->scram_salt));
    if (n < 1)
        return "scram-sha-256= salt must be 1 to 64 octets in base64";
    c->scram_salt_len = (size_t)n;
    if (sasl_b64_decode(f[1], len[1], key, sizeof(key)) != 32)
        goto bad_key;
    memcpy(c->scram_stored_key, key, 32);
    if (sasl_b64_decode(f[2], len[2], key, sizeof(key)) != 32)
        goto bad_key;
    memcpy(c->scram_server_key, key, 32);
    explicit_bzero(key, sizeof(key));
    c->scram_iterations = (uint32_t)iter;
    c->has_scram = true;
    return NULL;
bad_key:
    explicit_bzero(key, sizeof(key));
    explicit_bzero(c, sizeof(*c));
    return "scram-sha-256= keys must be 32 octets each in base64";
}

/* Full check of a scram-sha-256= value of len bytes. NULL, or why not. */
static const char *check_scram(const char *v, size_t len)
{
    if (len > CONFIG_LINE_MAX)
        return "scram-sha-256= value too long";
    char copy[CONFIG_LINE_MAX + 1];
    memcpy(copy, v, len);
    copy[len] = '\0';
    struct sasl_creds c;
    const char *why = config_check_scram(copy);
    if (why == NULL)
        why = scram_decode(copy, &c);
    explicit_bzero(&c, sizeof(c));
    return why;
}

/* Splits and checks f[0..len), the ':'-separated fields after the hash.
 * Other fields are skipped, so a file written by a later version still
 * loads. NULL, or why not; the message never quotes a value, which may be
 * a secret. */
static const char *check_fields(const char *f, size_t len,
                                struct user_fields *r)
{
    memset(r, 0, sizeof(*r));
    const char *end = f + len;
    while (f < end) {
        const char *colon = memchr(f, ':', (size_t)(end - f));
        size_t flen = (size_t)((colon != NULL ? colon : end) - f);
        if (flen >= 14 && memcmp(f, "scram-sha-256=", 14) == 0) {
            if (r->scram != NULL)
                return "field 'scram-sha-256=' given twice";
            const char *why = check_scram(f + 14, flen - 14);
            if (why != NULL)
                return why;
            r->scram = f + 14;
            r->scram_len = flen - 14;
        } else if (flen >= 9 && memcmp(f, "cram-md5=", 9) == 0) {
            if (r->cram != NULL)
                return "field 'cram-md5=' given twice";
            char ctx[SASL_CRAM_CONTEXT_LEN + 1];
            if (flen - 9 != SASL_CRAM_CONTEXT_LEN)
                return "cram-md5= needs 64 hex digits (HMAC-MD5 contexts)";
            memcpy(ctx, f + 9, SASL_CRAM_CONTEXT_LEN);
            ctx[SASL_CRAM_CONTEXT_LEN] = '\0';
            if (!sasl_cram_context_valid(ctx))
                return "cram-md5= needs 64 hex digits (HMAC-MD5 contexts)";
            r->cram = f + 9;
            r->cram_len = flen - 9;
        }
        f += flen + (colon != NULL);
    }
    return NULL;
}

/* Trim spaces and tabs at both ends of s[0..*len). */
static const char *trim(const char *s, size_t *len)
{
    while (*len > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        (*len)--;
    }
    while (*len > 0 && (s[*len - 1] == ' ' || s[*len - 1] == '\t'))
        (*len)--;
    return s;
}

int users_parse(struct config *cfg, const char *text, size_t len,
                const char *filename, struct buf *err_r)
{
    char addr[CONFIG_ADDRESS_MAX], hash[CONFIG_LINE_MAX + 1];
    size_t pos = 0, lineno = 0, llen;
    const char *l;
    while (config_next_line(text, len, &pos, &l, &llen)) {
        lineno++;
        const char *why = config_check_line(l, llen);
        if (why != NULL)
            return config_errf(err_r, "%s:%zu: %s", filename, lineno, why);
        l = trim(l, &llen);
        if (llen == 0 || l[0] == '#')
            continue;
        const char *colon = memchr(l, ':', llen);
        if (colon == NULL)
            return config_errf(err_r, "%s:%zu: expected address:hash",
                               filename, lineno);
        size_t alen = (size_t)(colon - l);
        if ((why = config_check_mailbox(l, alen, addr, sizeof(addr))) != NULL)
            return config_errf(err_r, "%s:%zu: invalid user address: %s",
                               filename, lineno, why);
        const char *h = colon + 1;
        const char *hend = memchr(h, ':', llen - alen - 1);
        size_t hlen = hend != NULL ? (size_t)(hend - h) : llen - alen - 1;
        memcpy(hash, h, hlen);
        hash[hlen] = '\0';
        if (hlen > 0 && (why = config_check_hash(hash)) != NULL)
            return config_errf(err_r, "%s:%zu: user '%s': %s", filename,
                               lineno, addr, why);
        struct user_fields f;
        if (hend != NULL &&
            (why = check_fields(hend + 1, (size_t)(l + llen - hend - 1), &f)) != NULL)
            return config_errf(err_r, "%s:%zu: user '%s': %s", filename,
                               lineno, addr, why);
        if (hend == NULL)
            memset(&f, 0, sizeof(f));
        const char *dom = strrchr(addr, '@') + 1;
        if (config_domain(cfg, dom, strlen(dom)) == NULL)
            return config_errf(err_r,
                               "%s:%zu: user '%s' is not in a local domain",
                               filename, lineno, addr);
        struct cfg_user *u = config_add_user(cfg, addr, hlen > 0 ? hash : NULL,
                                             false, lineno);
        u->scram = f.scram != NULL ? xstrndup(f.scram, f.scram_len) : NULL;
        u->cram_secret = f.cram != NULL ? xstrndup(f.cram, f.cram_len) : NULL;
    }

    /* Duplicates and clashes with aliases, lowest line first. Sorting puts
     * users of the configuration file before this file's for equal names. */
    size_t bad_line = 0;
    config_sort(cfg);
    for (size_t i = 0; i < cfg->nusers; i++) {
        const struct cfg_user *u = &cfg->users[i];
        if (u->in_config || (bad_line != 0 && u->line >= bad_line))
            continue;
        const struct cfg_alias *a;
        if (i > 0 && strcmp(u->address, u[-1].address) == 0) {
            bad_line = u->line;
            config_errf(err_r, "%s:%zu: duplicate user '%s' (first at %s:%zu)",
                        filename, u->line, u->address,
                        u[-1].in_config ? cfg->source : filename, u[-1].line);
        } else if ((a = config_alias(cfg, u->address, strlen(u->address))) != NULL) {
            bad_line = u->line;
            config_errf(err_r,
                        "%s:%zu: user '%s' has the name of an alias (%s:%zu)",
                        filename, u->line, u->address,
                        a->in_config ? cfg->source
                        : cfg->aliases_file != NULL ? cfg->aliases_file
                        : "aliases-file",
                        a->line);
        }
    }
    return bad_line != 0 ? -1 : 0;
}

/* ---- rewriting the file ---- */

/* Does this line define `address`? (case-insensitive, as the parser sees it) */
static bool line_is_user(const char *l, size_t llen, const char *address)
{
    if (llen > 0 && l[llen - 1] == '\r')
        llen--;
    l = trim(l, &llen);
    if (llen == 0 || l[0] == '#')
        return false;
    const char *colon = memchr(l, ':', llen);
    size_t alen = colon != NULL ? (size_t)(colon - l) : llen;
    return alen == strlen(address) && strncasecmp(l, address, alen) == 0;
}

static int write_replacing(const char *path, const char *tmp,
                           const struct buf *out, const struct stat *old,
                           struct buf *err_r)
{
    mode_t mode = old != NULL ? (old->st_mode & 07777) : 0600;
    /* We hold the lock, so a leftover temporary file is from a crash. */
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return config_errf(err_r, "%s: cannot create: %s", tmp,
                           strerror(errno));
    /* Keep the owner, so a file the daemon's user owns stays readable to it
     * when root runs `estafeta user`; failing that (not root) is fine. */
    if (old != NULL && fchown(fd, old->st_uid, old->st_gid) < 0 && errno != EPERM)
        goto fail;
    if (fchmod(fd, mode) < 0 ||
        fs_write_all(fd, out->data != NULL ? out->data : "", out->len) < 0 ||
        fsync(fd) < 0)
        goto fail;
    if (close(fd) < 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0)
        goto fail;
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    const char *d = slash == NULL ? "." : slash == dir ? "/" : (*slash = '\0', dir);
    int r = fs_fsync_dir(d);
    int saved = errno;
    free(dir);
    if (r < 0)
        return config_errf(err_r, "%s: fsync of the directory failed: %s", path,
                           strerror(saved));
    return 0;
fail:;
    int e = errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return config_errf(err_r, "%s: cannot write: %s", path, strerror(e));
}

/* Is "hash[:field...]" what users_parse accepts after "address:"? */
static const char *check_entry(const char *addr, const char *fields)
{
    size_t len = strlen(fields);
    const char *why = config_check_line(fields, len);
    if (why != NULL)
        return why;
    if (strlen(addr) + 1 + len > CONFIG_LINE_MAX)
        return "entry longer than a line of the users file may be";
    size_t hlen = strcspn(fields, ":");
    if (hlen > 0) {
        char hash[CONFIG_LINE_MAX + 1];
        memcpy(hash, fields, hlen);
        hash[hlen] = '\0';
        if ((why = config_check_hash(hash)) != NULL)
            return why;
    }
    struct user_fields f;
    return fields[hlen] == ':'
           ? check_fields(fields + hlen + 1, len - hlen - 1, &f) : NULL;
}

/* Frees a buffer that may have held a secret. */
static void buf_wipe_free(struct buf *b)
{
    if (b->data != NULL)
        explicit_bzero(b->data, b->alloc);
    buf_free(b);
}

int users_file_update(const char *path, const char *address,
                      const char *fields, struct buf *err_r)
{
    char addr[CONFIG_ADDRESS_MAX];
    const char *why = config_check_mailbox(address, strlen(address), addr,
                                           sizeof(addr));
    if (why != NULL)
        return config_errf(err_r, "invalid user address '%s': %s", address,
                           why);
    if (fields != NULL &&
        (why = check_entry(addr, fields)) != NULL)
        return config_errf(err_r, "%s", why);

    size_t plen = strlen(path), n;
    if (!size_add(plen, 32, &n))
        return config_errf(err_r, "path too long");
    char *lock = xmalloc(n), *tmp = xmalloc(n);
    snprintf(lock, n, "%s.lock", path);
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());

    /* The file itself is replaced by rename, so the lock is a separate,
     * stable file. */
    int rc = -1;
    struct buf old, out;
    buf_init(&old, CONFIG_FILE_MAX);
    buf_init(&out, CONFIG_FILE_MAX + CONFIG_LINE_MAX);
    int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lfd < 0) {
        config_errf(err_r, "%s: cannot open: %s", lock, strerror(errno));
        goto done;
    }
    while (flock(lfd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            config_errf(err_r, "%s: cannot lock: %s", lock, strerror(errno));
            goto done;
        }
    }

    struct stat st;
    bool exists = stat(path, &st) == 0;
    if (exists && !S_ISREG(st.st_mode)) {
        config_errf(err_r, "%s: not a regular file", path);
        goto done;
    }
    if (exists && fs_read_file(path, CONFIG_FILE_MAX, &old) < 0) {
        config_errf(err_r, "%s: cannot read: %s", path,
                    errno == EFBIG ? "larger than 16 MiB" : strerror(errno));
        goto done;
    }

    /* Copy every line byte for byte except the ones for address; the first
     * of those becomes the new entry (the old fields go with it: they derive
     * from the old password). */
    bool found = false, oflow = false;
    size_t pos = 0;
    const char *text = old.data != NULL ? old.data : "";
    while (pos < old.len) {
        const char *l = text + pos;
        const char *nl = memchr(l, '\n', old.len - pos);
        size_t full = nl != NULL ? (size_t)(nl - l) + 1 : old.len - pos;
        size_t llen = nl != NULL ? full - 1 : full;
        pos += full;
        if (!line_is_user(l, llen, addr)) {
            oflow |= buf_append(&out, l, full) < 0;
            continue;
        }
        if (!found && fields != NULL)
            oflow |= buf_appendf(&out, "%s:%s\n", addr, fields) < 0;
        found = true;
    }
    if (!found && fields == NULL) {
        config_errf(err_r, "%s: no user '%s' in this file", path, addr);
        goto done;
    }
    if (!found) {
        if (out.len > 0 && out.data[out.len - 1] != '\n')
            oflow |= buf_putc(&out, '\n') < 0;
        oflow |= buf_appendf(&out, "%s:%s\n", addr, fields) < 0;
    }
    if (oflow) {
        config_errf(err_r, "%s: file would grow past 16 MiB", path);
        goto done;
    }
    rc = write_replacing(path, tmp, &out, exists ? &st : NULL, err_r);
done:
    if (lfd >= 0)
        close(lfd);     /* releases the lock */
    buf_wipe_free(&old);
    buf_wipe_free(&out);
    free(lock);
    free(tmp);
    return rc;
}

/* ---- SASL credentials ---- */

int users_sasl_creds(const struct cfg_user *u, struct sasl_creds *creds_r)
{
    memset(creds_r, 0, sizeof(*creds_r));
    int rc = 0;
    if (u->scram != NULL) {
        struct sasl_creds c;
        if (check_scram(u->scram, strlen(u->scram)) == NULL &&
            scram_decode(u->scram, &c) == NULL)
            *creds_r = c;
        else
            rc = -1;
        explicit_bzero(&c, sizeof(c));
    }
    if (u->cram_secret != NULL) {
        size_t len = strlen(u->cram_secret);
        if (len > 0 && len < sizeof(creds_r->cram_secret))
            memcpy(creds_r->cram_secret, u->cram_secret, len + 1);
        else
            rc = -1;
    }
    return rc;
}

int users_format_scram(const struct sasl_creds *c, char *out, size_t out_cap)
{
    if (!c->has_scram || c->scram_salt_len == 0 ||
        c->scram_salt_len > sizeof(c->scram_salt))
        return -1;
    struct buf b;
    buf_init(&b, 512);
    int r = buf_appendf(&b, "scram-sha-256=%lu,", (unsigned long)c->scram_iterations);
    size_t before = b.len;
    sasl_b64_encode(c->scram_salt, c->scram_salt_len, &b);
    r |= b.len == before ? -1 : buf_putc(&b, ',');
    before = b.len;
    sasl_b64_encode(c->scram_stored_key, sizeof(c->scram_stored_key), &b);
    r |= b.len == before ? -1 : buf_putc(&b, ',');
    before = b.len;
    sasl_b64_encode(c->scram_server_key, sizeof(c->scram_server_key), &b);
    r |= b.len == before ? -1 : 0;
    if (r == 0 && b.len < out_cap)
        memcpy(out, b.data, b.len + 1);
    else
        r = -1;
    buf_wipe_free(&b);
    return r;
}

/* ---- hashing ---- */

int password_hash(const char *password, char *out, size_t out_cap)
{
    if (password == NULL)
        return -1;
    size_t need = argon2_encodedlen(ARGON2_T, ARGON2_M_KIB, ARGON2_P,
                                    ARGON2_SALT, ARGON2_HASHLEN, Argon2_id);
    if (out_cap < need)
        return -1;
    unsigned char salt[ARGON2_SALT];
    if (random_fill(salt, sizeof(salt)) < 0)
        return -1;
    int r = argon2id_hash_encoded(ARGON2_T, ARGON2_M_KIB, ARGON2_P, password,
                                  strlen(password), salt, sizeof(salt),
                                  ARGON2_HASHLEN, out, out_cap);
    explicit_bzero(salt, sizeof(salt));
    return r == ARGON2_OK ? 0 : -1;
}

/* Compares the whole length whatever the contents, so the time taken does
 * not tell how many leading bytes matched. */
static bool const_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    volatile unsigned char diff = (unsigned char)(la != lb);
    size_t n = la < lb ? la : lb;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

/* ---- SHA-512-crypt ("$6$"), verification only ---- */

#define SHA512_LEN 64
#define SHACRYPT_SALT_MAX 16
#define SHACRYPT_ROUNDS_DEFAULT 5000
#define SHACRYPT_ROUNDS_MIN 1000
#define SHACRYPT_ROUNDS_MAX 999999999UL

static int sha_add(EVP_MD_CTX *c, const void *p, size_t n)
{
    return EVP_DigestUpdate(c, p, n) == 1 ? 0 : -1;
}

static int sha_begin(EVP_MD_CTX *c)
{
    return EVP_DigestInit_ex(c, EVP_sha512(), NULL) == 1 ? 0 : -1;
}

static int sha_end(EVP_MD_CTX *c, unsigned char *out)
{
    return EVP_DigestFinal_ex(c, out, NULL) == 1 ? 0 : -1;
}

/* Adds `len` bytes made of repeats of the 64-byte digest d. */
static int sha_add_repeat(EVP_MD_CTX *c, const unsigned char *d, size_t len)
{
    for (; len > SHA512_LEN; len -= SHA512_LEN)
        if (sha_add(c, d, SHA512_LEN) < 0)
            return -1;
    return sha_add(c, d, len);
}

/* Computes the crypt string for key under setting ("$6$[rounds=N$]salt...")
 * into out (cap >= 128). 0 or -1. */
static int sha512_crypt(const char *key, const char *setting, char *out,
                        size_t out_cap)
{
    static const char itoa64[] =
        "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    const char *salt = setting + 3;
    unsigned long rounds = SHACRYPT_ROUNDS_DEFAULT;
    bool custom = false;
    if (strncmp(salt, "rounds=", 7) == 0 && salt[7] >= '0' && salt[7] <= '9') {
        char *end;
        errno = 0;
        unsigned long r = strtoul(salt + 7, &end, 10);
        if (*end == '$') {
            if (errno == ERANGE || r > SHACRYPT_ROUNDS_MAX)
                r = SHACRYPT_ROUNDS_MAX;
            rounds = r < SHACRYPT_ROUNDS_MIN ? SHACRYPT_ROUNDS_MIN : r;
            custom = true;
            salt = end + 1;
        }
    }
    size_t slen = strcspn(salt, "$");
    if (slen > SHACRYPT_SALT_MAX)
        slen = SHACRYPT_SALT_MAX;
    size_t klen = strlen(key);

    int rc = -1;
    unsigned char a[SHA512_LEN], b[SHA512_LEN], dp[SHA512_LEN], ds[SHA512_LEN];
    unsigned char *p = xmalloc(klen + 1), s[SHACRYPT_SALT_MAX];
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (c == NULL)
        goto out;
    /* B = H(key salt key) */
    if (sha_begin(c) < 0 || sha_add(c, key, klen) < 0 ||
        sha_add(c, salt, slen) < 0 || sha_add(c, key, klen) < 0 ||
        sha_end(c, b) < 0)
        goto out;
    /* A = H(key salt B-repeated-to-klen, then per bit of klen B or key) */
    if (sha_begin(c) < 0 || sha_add(c, key, klen) < 0 ||
        sha_add(c, salt, slen) < 0 || sha_add_repeat(c, b, klen) < 0)
        goto out;
    for (size_t n = klen; n > 0; n >>= 1)
        if ((n & 1) != 0 ? sha_add(c, b, SHA512_LEN) < 0 : sha_add(c, key, klen) < 0)
            goto out;
    if (sha_end(c, a) < 0)
        goto out;
    /* P: H(key repeated klen times), stretched to klen bytes */
    if (sha_begin(c) < 0)
        goto out;
    for (size_t i = 0; i < klen; i++)
        if (sha_add(c, key, klen) < 0)
            goto out;
    if (sha_end(c, dp) < 0)
        goto out;
    for (size_t i = 0; i < klen; i++)
        p[i] = dp[i % SHA512_LEN];
    /* S: H(salt repeated 16 + A[0] times), cut to the salt's length */
    if (sha_begin(c) < 0)
        goto out;
    for (size_t i = 0; i < 16u + a[0]; i++)
        if (sha_add(c, salt, slen) < 0)
            goto out;
    if (sha_end(c, ds) < 0)
        goto out;
    memcpy(s, ds, slen);
    for (unsigned long r = 0; r < rounds; r++) {
        if (sha_begin(c) < 0 ||
            ((r & 1) ? sha_add(c, p, klen) : sha_add(c, a, SHA512_LEN)) < 0 ||
            (r % 3 != 0 && sha_add(c, s, slen) < 0) ||
            (r % 7 != 0 && sha_add(c, p, klen) < 0) ||
            ((r & 1) ? sha_add(c, a, SHA512_LEN) : sha_add(c, p, klen)) < 0 ||
            sha_end(c, a) < 0)
            goto out;
    }

    int n = custom ? snprintf(out, out_cap, "$6$rounds=%lu$%.*s$", rounds, (int)slen, salt)
                   : snprintf(out, out_cap, "$6$%.*s$", (int)slen, salt);
    if (n < 0 || (size_t)n + 87 >= out_cap)
        goto out;
    char *o = out + n;
    /* 21 groups of 3 bytes (k, k+21, k+42 rotated by k mod 3), then a[63] */
    for (int k = 0; k < 21; k++) {
        unsigned char t[3] = {a[k], a[k + 21], a[k + 42]};
        int rot = k % 3;
        unsigned w = (unsigned)t[rot] << 16 | (unsigned)t[(rot + 1) % 3] << 8 |
                     t[(rot + 2) % 3];
        for (int i = 0; i < 4; i++, w >>= 6)
            *o++ = itoa64[w & 0x3f];
    }
    unsigned w = a[63];
    for (int i = 0; i < 2; i++, w >>= 6)
        *o++ = itoa64[w & 0x3f];
    *o = '\0';
    rc = 0;
out:
    EVP_MD_CTX_free(c);
    explicit_bzero(a, sizeof(a));
    explicit_bzero(b, sizeof(b));
    explicit_bzero(dp, sizeof(dp));
    explicit_bzero(ds, sizeof(ds));
    explicit_bzero(s, sizeof(s));
    explicit_bzero(p, klen + 1);
    free(p);
    return rc;
}

int password_verify(const char *password, const char *hash)
{
    if (password == NULL || hash == NULL)
        return -1;
    if (strncmp(hash, "$argon2id$", 10) == 0)
        return argon2id_verify(hash, password, strlen(password)) == ARGON2_OK
               ? 0 : -1;
    if (strncmp(hash, "$6$", 3) == 0) {
        char computed[160];
        int ok = sha512_crypt(password, hash, computed, sizeof(computed)) == 0 &&
                 const_eq(computed, hash);
        explicit_bzero(computed, sizeof(computed));
        return ok ? 0 : -1;
    }
    return -1;
}

/* argon2id of a random password nobody knows: verifying against it costs
 * what checking a real user's password costs. */
static const char users_dummy_hash[] =
    "$argon2id$v=19$m=65536,t=3,p=1$ZXN0YWZldGFkdW1teTE2Yg$"
    "UnVAsTNYK3LO2qL3s3lI5af85TO3zZyBMo4a+2MvRro";

bool users_check_login(const struct config *cfg, const char *user,
                       const char *password)
{
    const struct cfg_user *u = config_user(cfg, user, strlen(user));
    bool real = u != NULL && u->password_hash != NULL;
    const char *hash = real ? u->password_hash : users_dummy_hash;
    bool ok = password != NULL && password_verify(password, hash) == 0;
    return ok && real;
}
