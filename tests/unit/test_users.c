/* Unit tests for conf/users: the users file, its atomic update, hashing. */
#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
        "  dave@a.test:$6$salt$hash:scram-sha-256:whatever  \n"
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
    CHECK(users_file_update(path, "x@a.test", "$6$a:b", &err) == -1);
    CHECK(users_file_update(path, "x@a.test", "$6$a\nb", &err) == -1);
    CHECK(users_file_update(path, "x@a.test", "plain", &err) == -1);
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
    RUN(update);
    RUN(hash_verify);
    RUN(verify_sha512_crypt);
    buf_free(&err);
    if (nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return harness_done("test_users");
}
