/* Unit tests for conf/users: the users file, its atomic update, hashing. */
#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "conf/users.h"
#include "harness.h"
#include "lib/fsutil.h"

static struct buf err;
static char tmpdir[64];

static struct config *base_config(void)
{
    static const char text[] =
        "hostname h.test\nlisten 127.0.0.1:25 mx\n"
        "domain a.test\ndomain b.test\n"
        "user inl@a.test\n"
        "alias al@a.test inl@a.test\n"
        "postmaster inl@a.test\n";
    buf_reset(&err);
    struct config *cfg = config_parse(text, strlen(text), "c.conf", &err);
    CHECK(cfg != NULL);
    return cfg;
}

static int parse_at(const char *text, const char *want_err, int line)
{
    struct config *cfg = base_config();
    if (cfg == NULL)
        return 0;
    buf_reset(&err);
    int r = users_parse(cfg, text, strlen(text), "users", &err);
    config_free(cfg);
    if (want_err == NULL) {
        if (r != 0)
            fprintf(stderr, "%d: unexpected error '%s'\n", line, buf_cstr(&err));
        return r == 0;
    }
    if (r != -1 || strstr(buf_cstr(&err), want_err) == NULL) {
        fprintf(stderr, "%d: expected '%s', got r=%d '%s'\n", line, want_err, r,
                buf_cstr(&err));
        return 0;
    }
    return 1;
}
#define PARSE_OK(text) CHECK(parse_at((text), NULL, __LINE__))
#define PARSE_ERR(text, want) CHECK(parse_at((text), (want), __LINE__))

TEST(parse_valid)
{
    struct config *cfg = base_config();
    if (cfg == NULL)
        return;
    const char *text =
        "# comment\n"
        "\n"
        "   \t\n"
        "  # indented comment\n"
        "Bob@A.Test:$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA\n"
        "carol@b.test:\r\n"
        "  dave@a.test:$6$salt$hash::  \n"
        "eve@a.test";    /* no colon at all: an error, tested below */
    buf_reset(&err);
    CHECK(users_parse(cfg, text, strlen(text) - strlen("eve@a.test"), "users", &err) == 0);
    CHECK_EQ_INT(cfg->nusers, 4);
    const struct cfg_user *u = config_user(cfg, "bob@a.test", 10);
    CHECK(u != NULL && !u->in_config && u->line == 5);
    CHECK(u != NULL && strncmp(u->password_hash, "$argon2id$", 10) == 0);
    u = config_user(cfg, "carol@b.test", 12);
    CHECK(u != NULL && u->password_hash == NULL && u->line == 6);
    CHECK_EQ_STR(u->local, "carol");
    CHECK_EQ_STR(u->domain, "b.test");
    u = config_user(cfg, "dave@a.test", 11);
    CHECK(u != NULL && strcmp(u->password_hash, "$6$salt$hash") == 0);
    CHECK(config_user(cfg, "inl@a.test", 10)->in_config);
    /* still sorted for lookups */
    for (size_t i = 1; i < cfg->nusers; i++)
        CHECK(strcmp(cfg->users[i - 1].address, cfg->users[i].address) < 0);
    config_free(cfg);
    PARSE_OK("");
    PARSE_OK("\n\n# only comments\n");
}

TEST(parse_errors)
{
    PARSE_ERR("a@a.test:\neve@a.test\n", "users:2: expected address:hash");
    PARSE_ERR("a/b@a.test:\n", "users:1: invalid user address");
    PARSE_ERR(":$6$x$y\n", "users:1: invalid user address");
    PARSE_ERR("a b@a.test:\n", "users:1: invalid user address");
    PARSE_ERR(" a@a.test :x\n", "users:1: invalid user address");
    PARSE_ERR("a@c.test:\n", "users:1: user 'a@c.test' is not in a local domain");
    PARSE_ERR("a@a.test:plain\n", "users:1: user 'a@a.test': unsupported password hash");
    PARSE_ERR("a@a.test:$6$ x\n", "users:1: user 'a@a.test': password hash holds");
    PARSE_ERR("a@a.test:\nb@a.test:\x01\n", "users:2: line holds a control character");
    struct config *cfg = base_config();
    if (cfg != NULL) {
        static const char nul[] = "a@a.test:\nb@a.test:\0\n";
        buf_reset(&err);
        CHECK(users_parse(cfg, nul, sizeof(nul) - 1, "users", &err) == -1);
        CHECK(strstr(buf_cstr(&err), "users:2: line holds a NUL byte") != NULL);
        config_free(cfg);
    }
    PARSE_ERR("a@a.test:\nb@a.test:\nA@A.TEST:\n", "users:3: duplicate user 'a@a.test' (first at users:1)");
    PARSE_ERR("x@a.test:\nINL@a.test:\n", "users:2: duplicate user 'inl@a.test' (first at c.conf:5)");
    PARSE_ERR("al@a.test:\n", "users:1: user 'al@a.test' has the name of an alias (c.conf:6)");
    /* lowest line first, whichever check finds it */
    PARSE_ERR("x@a.test:\ny@a.test:\nal@a.test:\ny@a.test:\n", "users:3:");
    char line[5000];
    memset(line, 'x', sizeof(line));
    memcpy(line, "a@a.test:", 9);
    line[sizeof(line) - 1] = '\0';
    PARSE_ERR(line, "users:1: line longer than 4096 bytes");
}

/* ---- SCRAM and CRAM-MD5 fields ---- */

/* Valid keys: 16-byte salt, 32-byte keys (values do not matter here). */
#define SALT "GSbPOIMbBaNImM0lw2o9ug=="
#define KEY1 "+2MT762+Nqxd07eAxJKmlxztAFU5D0TQBKYJyVE4m2A="
#define KEY2 "gm27kBsgu5aNtEYKva9EOXRPaYdWAmUsSICh2zkACQk="
#define SCRAM "scram-sha-256=4096," SALT "," KEY1 "," KEY2

TEST(fields_parse)
{
    struct config *cfg = base_config();
    if (cfg == NULL)
        return;
    const char *text =
        "a@a.test:$6$s$h:" SCRAM "\n"
        "b@a.test:$6$s$h:cram-md5=48c76fedc6a3f688e05650ca8e55c07389f9bd7c98e27f78cfaf14642b7ae3b9:" SCRAM "\n"
        "c@a.test::cram-md5=9ec2f73406e54c2f552a0c2d80a9b6b03fa6b9228c4111e9115c0f733ccefd45\n"
        "d@a.test:$6$s$h\n"
        "e@a.test:$6$s$h::" SCRAM "::\n";
    buf_reset(&err);
    CHECK(users_parse(cfg, text, strlen(text), "users", &err) == 0);
    const struct cfg_user *u = config_user(cfg, "a@a.test", 8);
    CHECK(u != NULL && u->scram != NULL && u->cram_secret == NULL);
    CHECK_EQ_STR(u->scram, "4096," SALT "," KEY1 "," KEY2);
    struct sasl_creds c;
    CHECK(users_sasl_creds(u, &c) == 0);
    CHECK(c.has_scram && c.scram_iterations == 4096 && c.scram_salt_len == 16);
    unsigned char k[32];
    CHECK(sasl_b64_decode(KEY1, strlen(KEY1), k, sizeof(k)) == 32);
    CHECK(memcmp(k, c.scram_stored_key, 32) == 0);
    CHECK(sasl_b64_decode(KEY2, strlen(KEY2), k, sizeof(k)) == 32);
    CHECK(memcmp(k, c.scram_server_key, 32) == 0);
    CHECK_EQ_STR(c.cram_secret, "");
    u = config_user(cfg, "b@a.test", 8);
    CHECK(u != NULL && u->scram != NULL);
    CHECK_EQ_STR(u->cram_secret, "48c76fedc6a3f688e05650ca8e55c07389f9bd7c98e27f78cfaf14642b7ae3b9");
    CHECK(users_sasl_creds(u, &c) == 0);
    CHECK(c.has_scram);
    CHECK_EQ_STR(c.cram_secret, "48c76fedc6a3f688e05650ca8e55c07389f9bd7c98e27f78cfaf14642b7ae3b9");
    u = config_user(cfg, "c@a.test", 8);
    CHECK(u != NULL && u->password_hash == NULL && u->scram == NULL);
    CHECK_EQ_STR(u->cram_secret, "9ec2f73406e54c2f552a0c2d80a9b6b03fa6b9228c4111e9115c0f733ccefd45");
    u = config_user(cfg, "d@a.test", 8);
    CHECK(u != NULL && u->scram == NULL && u->cram_secret == NULL);
    CHECK(users_sasl_creds(u, &c) == 0);
    CHECK(!c.has_scram && c.cram_secret[0] == '\0');
    u = config_user(cfg, "e@a.test", 8);
    CHECK(u != NULL && u->scram != NULL);
    /* what only the `user` directive's syntax check let through is refused
     * here, not crashed on */
    struct cfg_user fake = {.address = (char *)"x@a.test"};
    fake.scram = (char *)"4096," SALT ",AAAA," KEY2;
    CHECK(users_sasl_creds(&fake, &c) == -1);
    CHECK(!c.has_scram);
    fake.scram = (char *)"4096,,,";
    CHECK(users_sasl_creds(&fake, &c) == -1);
    char longsecret[300];
    memset(longsecret, 'x', sizeof(longsecret) - 1);
    longsecret[sizeof(longsecret) - 1] = '\0';
    fake.scram = NULL;
    fake.cram_secret = longsecret;
    CHECK(users_sasl_creds(&fake, &c) == -1);
    CHECK_EQ_STR(c.cram_secret, "");
    config_free(cfg);

    /* users_format_scram writes what users_parse reads */
    struct sasl_creds d;
    CHECK(sasl_scram_derive("pw", 4096, &d) == 0);
    char f[256];
    CHECK(users_format_scram(&d, f, sizeof(f)) == 0);
    CHECK(strncmp(f, "scram-sha-256=4096,", 19) == 0);
    char line[400];
    snprintf(line, sizeof(line), "z@a.test:$6$s$h:%s\n", f);
    cfg = base_config();
    buf_reset(&err);
    CHECK(users_parse(cfg, line, strlen(line), "users", &err) == 0);
    u = config_user(cfg, "z@a.test", 8);
    CHECK(u != NULL && users_sasl_creds(u, &c) == 0);
    CHECK(c.has_scram && c.scram_salt_len == 16 &&
          memcmp(c.scram_salt, d.scram_salt, 16) == 0 &&
          memcmp(c.scram_stored_key, d.scram_stored_key, 32) == 0 &&
          memcmp(c.scram_server_key, d.scram_server_key, 32) == 0);
    config_free(cfg);
    CHECK(users_format_scram(&d, f, 100) == -1);
    d.has_scram = false;
    CHECK(users_format_scram(&d, f, sizeof(f)) == -1);
}

TEST(fields_errors)
{
    PARSE_ERR("a@a.test:$6$s$h:scram-sha-256=4095," SALT "," KEY1 "," KEY2 "\n",
              "users:1: user 'a@a.test': scram-sha-256= must start with an iteration count");
    PARSE_ERR("a@a.test:$6$s$h:scram-sha-256=\n",
              "users:1: user 'a@a.test': scram-sha-256= must start");
    PARSE_ERR("\nb@a.test:\na@a.test:$6$s$h:scram-sha-256=4096," SALT "," KEY1 "\n",
              "users:3: user 'a@a.test': scram-sha-256= needs ITER,SALT,STOREDKEY,SERVERKEY");
    PARSE_ERR("a@a.test:$6$s$h:scram-sha-256=4096," SALT "," KEY1 "," KEY2 ",x\n",
              "users:1: user 'a@a.test': scram-sha-256= needs");
    PARSE_ERR("a@a.test:$6$s$h:scram-sha-256=4096,GSbPOIMbBaNImM0lw2o9ug=," KEY1 "," KEY2 "\n",
              "users:1: user 'a@a.test': scram-sha-256= salt must be 1 to 64 octets");
    PARSE_ERR("a@a.test:$6$s$h:scram-sha-256=4096," KEY1 KEY1 KEY1 "," KEY1 "," KEY2 "\n",
              "users:1: user 'a@a.test': scram-sha-256= salt must be 1 to 64 octets");
    PARSE_ERR("a@a.test:$6$s$h:scram-sha-256=4096," SALT "," SALT "," KEY2 "\n",
              "users:1: user 'a@a.test': scram-sha-256= keys must be 32 octets");
    PARSE_ERR("a@a.test:$6$s$h:scram-sha-256=4096," SALT "," KEY1 ",+2MT762+Nqxd07eAxJKmlxztAFU5D0TQBKYJyVE4m2B=\n",
              "users:1: user 'a@a.test': scram-sha-256= keys must be 32 octets");
    PARSE_ERR("a@a.test:$6$s$h:" SCRAM ":" SCRAM "\n",
              "users:1: user 'a@a.test': field 'scram-sha-256=' given twice");
    PARSE_ERR("a@a.test:$6$s$h:cram-md5=9ec2f73406e54c2f552a0c2d80a9b6b03fa6b9228c4111e9115c0f733ccefd45:cram-md5=9ec2f73406e54c2f552a0c2d80a9b6b03fa6b9228c4111e9115c0f733ccefd45\n",
              "users:1: user 'a@a.test': field 'cram-md5=' given twice");
    PARSE_ERR("a@a.test:$6$s$h:cram-md5=\n",
              "users:1: user 'a@a.test': cram-md5= needs 64 hex digits (HMAC-MD5 contexts)");
    /* other fields are skipped (a later version's file still loads) */
    PARSE_OK("a@a.test:$6$s$h:future=1:scram-sha-256:whatever\n");
    struct config *cfg = base_config();
    if (cfg != NULL) {
        buf_reset(&err);
        const char *t = "a@a.test:$6$s$h:cram_md5=topsecret:" SCRAM "\n";
        CHECK(users_parse(cfg, t, strlen(t), "users", &err) == 0);
        const struct cfg_user *u = config_user(cfg, "a@a.test", 8);
        CHECK(u != NULL && u->cram_secret == NULL && u->scram != NULL);
        config_free(cfg);
    }
    /* a bad value is reported without the value (it may be a secret) */
    cfg = base_config();
    if (cfg != NULL) {
        buf_reset(&err);
        const char *t = "a@a.test:$6$s$h:cram-md5=topsecret:cram-md5=topsecret\n";
        CHECK(users_parse(cfg, t, strlen(t), "users", &err) == -1);
        CHECK(strstr(buf_cstr(&err), "topsecret") == NULL);
        config_free(cfg);
    }
    char line[400];
    memset(line, 'a', sizeof(line));
    memcpy(line, "a@a.test:$6$s$h:cram-md5=", 25);
    line[25 + 65] = '\0';
    PARSE_ERR(line, "cram-md5= needs 64 hex digits (HMAC-MD5 contexts)");
    line[25 + 63] = '\0';
    PARSE_ERR(line, "cram-md5= needs 64 hex digits (HMAC-MD5 contexts)");
    line[25 + 63] = 'a';
    line[25 + 64] = '\0';
    PARSE_OK(line);
    line[25 + 10] = 'g';
    PARSE_ERR(line, "cram-md5= needs 64 hex digits (HMAC-MD5 contexts)");
}

/* The embedded default's demo user logs in with "demo": by argon2id for
 * PLAIN/LOGIN and by its SCRAM keys. */
TEST(embedded_demo_user)
{
    buf_reset(&err);
    struct config *cfg = config_parse(config_embedded_default,
                                      strlen(config_embedded_default),
                                      "(embedded default)", &err);
    CHECK(cfg != NULL);
    if (cfg == NULL)
        return;
    const struct cfg_user *u = config_user(cfg, "demo@example.test", 17);
    CHECK(u != NULL && u->password_hash != NULL);
    if (u == NULL || u->password_hash == NULL) {
        config_free(cfg);
        return;
    }
    CHECK(password_verify("demo", u->password_hash) == 0);
    CHECK(password_verify("Demo", u->password_hash) == -1);
    struct sasl_creds c;
    CHECK(users_sasl_creds(u, &c) == 0);
    CHECK(c.has_scram && c.scram_iterations == SASL_SCRAM_ITERATIONS);
    unsigned char salted[32], ck[32], stored[32], sk[32];
    unsigned int l;
    CHECK(PKCS5_PBKDF2_HMAC("demo", 4, c.scram_salt, (int)c.scram_salt_len,
                            (int)c.scram_iterations, EVP_sha256(), 32, salted) == 1);
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10, ck, &l);
    EVP_Digest(ck, 32, stored, &l, EVP_sha256(), NULL);
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Server Key", 10, sk, &l);
    CHECK(memcmp(stored, c.scram_stored_key, 32) == 0);
    CHECK(memcmp(sk, c.scram_server_key, 32) == 0);
    config_free(cfg);
}

/* ---- users_file_update ---- */

static char path[128];

static char *slurp(void)
{
    struct buf b;
    if (fs_read_file(path, 1 << 20, &b) < 0)
        return NULL;
    char *s = strdup(b.data != NULL ? b.data : "");
    buf_free(&b);
    return s;
}

static void put(const char *text)
{
    CHECK(fs_write_file_atomic(path, text, strlen(text), 0640) == 0);
}

static int count_tmp_files(void)
{
    DIR *d = opendir(tmpdir);
    int n = 0;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp.") != NULL)
            n++;
    if (d != NULL)
        closedir(d);
    return n;
}

TEST(update)
{
    snprintf(path, sizeof(path), "%s/users", tmpdir);
    unlink(path);
    /* creates the file */
    buf_reset(&err);
    CHECK(users_file_update(path, "A@a.test", "$6$s$h", &err) == 0);
    char *s = slurp();
    CHECK(s != NULL && strcmp(s, "a@a.test:$6$s$h\n") == 0);
    free(s);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);

    /* untouched lines are kept byte for byte; the mode too */
    const char *orig =
        "# users of a.test\n"
        "\n"
        "  b@a.test:$6$b$b:extra  \r\n"
        "c@a.test:$6$c$c:scram\n"
        "garbage line kept as is\n"
        "#a@a.test:commented\n"
        "d@a.test:";               /* no final newline */
    put(orig);
    CHECK(users_file_update(path, "e@a.test", "$6$e$e", &err) == 0);
    s = slurp();
    char want[1024];
    snprintf(want, sizeof(want), "%s\ne@a.test:$6$e$e\n", orig);
    CHECK(s != NULL && strcmp(s, want) == 0);
    free(s);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0640);

    /* replace: extras dropped (they belong to the old password), in place */
    CHECK(users_file_update(path, "C@A.test", "$argon2id$new", &err) == 0);
    s = slurp();
    CHECK(s != NULL && strcmp(s,
          "# users of a.test\n"
          "\n"
          "  b@a.test:$6$b$b:extra  \r\n"
          "c@a.test:$argon2id$new\n"
          "garbage line kept as is\n"
          "#a@a.test:commented\n"
          "d@a.test:\n"
          "e@a.test:$6$e$e\n") == 0);
    free(s);
    /* a line with CRLF and spaces is still recognised */
    CHECK(users_file_update(path, "b@a.test", "$6$n$n", &err) == 0);
    s = slurp();
    CHECK(s != NULL && strstr(s, "\nb@a.test:$6$n$n\nc@a.test:") != NULL);
    CHECK(s != NULL && strstr(s, "$6$b$b") == NULL);
    free(s);
    /* remove */
    CHECK(users_file_update(path, "c@a.test", NULL, &err) == 0);
    CHECK(users_file_update(path, "d@a.test", NULL, &err) == 0);
    s = slurp();
    CHECK(s != NULL && strcmp(s,
          "# users of a.test\n"
          "\n"
          "b@a.test:$6$n$n\n"
          "garbage line kept as is\n"
          "#a@a.test:commented\n"
          "e@a.test:$6$e$e\n") == 0);
    free(s);
    /* duplicates of one address collapse to one entry */
    put("x@a.test:$6$1$1\ny@a.test:\nx@a.test:$6$2$2\n");
    CHECK(users_file_update(path, "x@a.test", "$6$3$3", &err) == 0);
    s = slurp();
    CHECK(s != NULL && strcmp(s, "x@a.test:$6$3$3\ny@a.test:\n") == 0);
    free(s);
    /* an empty hash is allowed: the user exists but cannot log in */
    CHECK(users_file_update(path, "z@a.test", "", &err) == 0);
    s = slurp();
    CHECK(s != NULL && strcmp(s, "x@a.test:$6$3$3\ny@a.test:\nz@a.test:\n") == 0);
    free(s);

    /* refusals leave the file alone */
    buf_reset(&err);
    CHECK(users_file_update(path, "nobody@a.test", NULL, &err) == -1);
    CHECK(strstr(buf_cstr(&err), "no user 'nobody@a.test'") != NULL);
    CHECK(users_file_update(path, "a/b@a.test", "$6$x$x", &err) == -1);
    CHECK(users_file_update(path, "x@a.test", "$6$a:scram-sha-256=x", &err) == -1);
    CHECK(users_file_update(path, "x@a.test", "$6$a\nb", &err) == -1);
    CHECK(users_file_update(path, "x@a.test", "plain", &err) == -1);
    s = slurp();
    CHECK(s != NULL && strcmp(s, "x@a.test:$6$3$3\ny@a.test:\nz@a.test:\n") == 0);
    free(s);
    CHECK(users_file_update(path, "x@a.test", "$6$3$3:scram-sha-256=1,a,b,c", &err) == -1);
    CHECK(strstr(buf_cstr(&err), "scram-sha-256= must start") != NULL);
    CHECK(users_file_update(path, "x@a.test", "$6$3$3:cram-md5=", &err) == -1);
    CHECK(users_file_update(path, "x@a.test", "$6$3$3:cram-md5=a:cram-md5=b", &err) == -1);
    s = slurp();
    CHECK(s != NULL && strcmp(s, "x@a.test:$6$3$3\ny@a.test:\nz@a.test:\n") == 0);
    free(s);
    char bad[160];
    snprintf(bad, sizeof(bad), "%s/no/such/dir/users", tmpdir);
    CHECK(users_file_update(bad, "x@a.test", "$6$x$x", &err) == -1);
    CHECK(count_tmp_files() == 0);

    /* what update writes, parse reads back */
    struct config *cfg = base_config();
    s = slurp();
    if (cfg != NULL && s != NULL) {
        buf_reset(&err);
        CHECK(users_parse(cfg, s, strlen(s), path, &err) == 0);
        CHECK(config_user(cfg, "z@a.test", 8) != NULL);
    }
    free(s);
    config_free(cfg);
}

TEST(update_fields)
{
    snprintf(path, sizeof(path), "%s/users2", tmpdir);
    unlink(path);
    put("# keep\nb@a.test:$6$b$b:cram-md5=9ec2f73406e54c2f552a0c2d80a9b6b03fa6b9228c4111e9115c0f733ccefd45\n");
    buf_reset(&err);
    CHECK(users_file_update(path, "a@a.test", "$6$a$a:cram-md5=48c76fedc6a3f688e05650ca8e55c07389f9bd7c98e27f78cfaf14642b7ae3b9:" SCRAM, &err) == 0);
    /* passwd replaces every field: the old secret goes */
    CHECK(users_file_update(path, "b@a.test", "$6$n$n:" SCRAM, &err) == 0);
    CHECK(users_file_update(path, "c@a.test", ":cram-md5=9ec2f73406e54c2f552a0c2d80a9b6b03fa6b9228c4111e9115c0f733ccefd45", &err) == 0);
    char *s = slurp();
    CHECK(s != NULL && strcmp(s,
          "# keep\n"
          "b@a.test:$6$n$n:" SCRAM "\n"
          "a@a.test:$6$a$a:cram-md5=48c76fedc6a3f688e05650ca8e55c07389f9bd7c98e27f78cfaf14642b7ae3b9:" SCRAM "\n"
          "c@a.test::cram-md5=9ec2f73406e54c2f552a0c2d80a9b6b03fa6b9228c4111e9115c0f733ccefd45\n") == 0);
    struct config *cfg = base_config();
    if (cfg != NULL && s != NULL) {
        buf_reset(&err);
        CHECK(users_parse(cfg, s, strlen(s), path, &err) == 0);
        const struct cfg_user *u = config_user(cfg, "a@a.test", 8);
        struct sasl_creds c;
        CHECK(u != NULL && users_sasl_creds(u, &c) == 0);
        CHECK(c.has_scram && strcmp(c.cram_secret, "48c76fedc6a3f688e05650ca8e55c07389f9bd7c98e27f78cfaf14642b7ae3b9") == 0);
        CHECK_EQ_STR(u->password_hash, "$6$a$a");
        u = config_user(cfg, "b@a.test", 8);
        CHECK(u != NULL && u->cram_secret == NULL && u->scram != NULL);
        u = config_user(cfg, "c@a.test", 8);
        CHECK(u != NULL && u->password_hash == NULL && u->scram == NULL &&
              strcmp(u->cram_secret, "9ec2f73406e54c2f552a0c2d80a9b6b03fa6b9228c4111e9115c0f733ccefd45") == 0);
    }
    free(s);
    config_free(cfg);
    /* an entry longer than a line is refused */
    char big[5000];
    memset(big, 'x', sizeof(big));
    memcpy(big, "$6$x$x:cram-md5=", 16);
    big[4090] = '\0';
    CHECK(users_file_update(path, "a@a.test", big, &err) == -1);
    unlink(path);
}

/* ---- hashing (argon2id costs 64 MiB and some time: few calls) ---- */

TEST(hash_verify)
{
    char h[256], h2[256];
    CHECK(password_hash("correct horse", h, sizeof(h)) == 0);
    CHECK(strncmp(h, "$argon2id$v=19$m=65536,t=3,p=1$", 31) == 0);
    CHECK(config_check_hash(h) == NULL);
    CHECK(password_verify("correct horse", h) == 0);
    CHECK(password_verify("correct hors", h) == -1);
    CHECK(password_verify("", h) == -1);
    /* a fresh salt each time */
    CHECK(password_hash("correct horse", h2, sizeof(h2)) == 0);
    CHECK(strcmp(h, h2) != 0);
    /* too small a buffer is refused, not overrun */
    char small[32];
    CHECK(password_hash("x", small, sizeof(small)) == -1);
    CHECK(password_hash(NULL, h, sizeof(h)) == -1);
    /* a damaged hash never verifies */
    h[strlen(h) - 2] = h[strlen(h) - 2] == 'A' ? 'B' : 'A';
    CHECK(password_verify("correct horse", h) == -1);
}

TEST(verify_sha512_crypt)
{
    /* the test vectors of Drepper's SHA-crypt specification: default and
     * custom rounds, salt cut at 16, long keys, rounds below the minimum */
    static const char *const vec[][2] = {
        {"Hello world!", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQ"
         "JuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
        {"Hello world!", "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0"
         "sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."},
        {"This is just a test", "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKays"
         "CLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"},
        {"a very much longer text to encrypt.  This one even stretches over more"
         "than one line.", "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/"
         "pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"},
        {"we have a short salt string but not a short password", "$6$rounds=77777$short$"
         "WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5Cxt"
         "gfiAc0"},
        {"a short string", "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4"
         "oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1"},
        {"the minimum number is still observed", "$6$rounds=1000$roundstoolow$kUMsbe306n21"
         "p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."},
    };
    for (size_t i = 0; i < sizeof(vec) / sizeof(*vec); i++) {
        CHECK(password_verify(vec[i][0], vec[i][1]) == 0);
        CHECK(config_check_hash(vec[i][1]) == NULL);
        /* one bit off in the password, or in the hash: no */
        char pw[128], h[160];
        snprintf(pw, sizeof(pw), "%s", vec[i][0]);
        pw[0] ^= 1;
        CHECK(password_verify(pw, vec[i][1]) == -1);
        snprintf(h, sizeof(h), "%s", vec[i][1]);
        h[strlen(h) - 1] ^= 1;
        CHECK(password_verify(vec[i][0], h) == -1);
        h[strlen(h) - 1] = '\0';
        CHECK(password_verify(vec[i][0], h) == -1);
    }
    const char *v = vec[0][1];
    CHECK(password_verify("Hello world", v) == -1);
    CHECK(password_verify("", v) == -1);
    CHECK(password_verify("Hello world!", "$6$saltstring$") == -1);
    CHECK(password_verify("Hello world!", "$6$") == -1);
    CHECK(password_verify("x", "$1$abc$def") == -1);
    CHECK(password_verify("x", "$argon2id$garbage") == -1);
    CHECK(password_verify("x", "") == -1);
    CHECK(password_verify("x", NULL) == -1);
    CHECK(password_verify(NULL, v) == -1);
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

int main(void)
{
    buf_init(&err, 4096);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/estafeta-test-users-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    RUN(parse_valid);
    RUN(parse_errors);
    RUN(fields_parse);
    RUN(fields_errors);
    RUN(embedded_demo_user);
    RUN(update);
    RUN(update_fields);
    RUN(hash_verify);
    RUN(verify_sha512_crypt);
    buf_free(&err);
    if (nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return harness_done("test_users");
}
