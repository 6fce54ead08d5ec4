/* Tests of the queue file format (src/queue/qfile.c, doc/queue.md). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "lib/xalloc.h"
#include "queue/qfile.h"

/* Bytes that would break a line- or delimiter-based format. */
static const char HOSTILE[] = "\r\n.\r\nZ\x01\x02\xff\xfe\x80 QUIT\r\n\nX\rP\x7f";

static struct queue_env *sample_env(const char *s)
{
    struct queue_env *e = xcalloc(1, sizeof(*e));
    strcpy(e->id, "0ABCdef123xyz");
    e->sender = xstrdup(s);
    e->created = -1234567890123LL;
    e->flags = QUEUE_F_SMTPUTF8 | QUEUE_F_8BITMIME;
    e->ret = -7;
    e->envid = xstrdup(s);
    e->client_addr = xstrdup(s);
    e->client_helo = xstrdup(s);
    e->session_id = xstrdup(s);
    e->auth_user = xstrdup(s);
    e->nrcpts = 3;
    e->rcpts = xcalloc(3, sizeof(*e->rcpts));
    for (size_t i = 0; i < 3; i++) {
        e->rcpts[i].address = xstrdup(s);
        e->rcpts[i].orcpt = xstrdup(s);
        e->rcpts[i].notify = (unsigned)(i * 5 + 1);
        e->rcpts[i].state = (enum queue_rcpt_state)i;
        e->rcpts[i].status = xstrdup(s);
    }
    return e;
}

/* Pointers to the 9 string fields (6 envelope + 3 of recipient 1). */
static char **field(struct queue_env *e, int k)
{
    switch (k) {
    case 0: return &e->sender;
    case 1: return &e->envid;
    case 2: return &e->client_addr;
    case 3: return &e->client_helo;
    case 4: return &e->session_id;
    case 5: return &e->auth_user;
    case 6: return &e->rcpts[1].address;
    case 7: return &e->rcpts[1].orcpt;
    default: return &e->rcpts[1].status;
    }
}

/* encode -> decode -> equal, and the encoding is canonical. */
static int round_trip(const struct queue_env *e)
{
    struct buf b, b2;
    struct queue_env *d = NULL;
    int ok = 0;
    buf_init(&b, QFILE_ENV_MAX);
    buf_init(&b2, QFILE_ENV_MAX);
    if (qfile_env_encode(e, &b) == 0 && qfile_env_decode(b.data, b.len, &d) == 0 &&
        qfile_env_equal(e, d) && qfile_env_encode(d, &b2) == 0 &&
        b.len == b2.len && memcmp(b.data, b2.data, b.len) == 0)
        ok = 1;
    queue_env_free(d);
    buf_free(&b);
    buf_free(&b2);
    return ok;
}

TEST(crc32_known_value)
{
    CHECK(qfile_crc32(0, "123456789", 9) == 0xCBF43926u);
    CHECK(qfile_crc32(0, "", 0) == 0);
    /* Incremental equals whole. */
    uint32_t c = qfile_crc32(0, "1234", 4);
    CHECK(qfile_crc32(c, "56789", 5) == 0xCBF43926u);
}

TEST(id_validation)
{
    CHECK(qfile_id_valid("a"));
    CHECK(qfile_id_valid("0123456789ABCDEFGHIJabc")); /* 23 */
    CHECK(!qfile_id_valid("0123456789ABCDEFGHIJabcd")); /* 24 */
    CHECK(!qfile_id_valid(""));
    CHECK(!qfile_id_valid(NULL));
    CHECK(!qfile_id_valid("../x"));
    CHECK(!qfile_id_valid("ab.st"));
    CHECK(!qfile_id_valid("a b"));
    CHECK(!qfile_id_valid("a\xff"));
}

TEST(round_trip_hostile_every_field)
{
    struct queue_env *e = sample_env("plain");
    CHECK(round_trip(e));
    for (int k = 0; k < 9; k++) {
        char **f = field(e, k);
        char *old = *f;
        *f = xstrdup(HOSTILE);
        CHECK(round_trip(e));
        free(*f);
        /* every byte value 1..255 */
        char all[256];
        for (int i = 0; i < 255; i++)
            all[i] = (char)(i + 1);
        all[255] = '\0';
        *f = xstrdup(all);
        CHECK(round_trip(e));
        free(*f);
        /* longest allowed */
        *f = xmalloc(QFILE_STR_MAX + 1);
        memset(*f, '\n', QFILE_STR_MAX);
        (*f)[QFILE_STR_MAX] = '\0';
        CHECK(round_trip(e));
        free(*f);
        /* empty */
        *f = xstrdup("");
        CHECK(round_trip(e));
        free(*f);
        *f = old;
    }
    queue_env_free(e);
}

TEST(too_long_refused_cleanly)
{
    struct queue_env *e = sample_env("x");
    for (int k = 0; k < 9; k++) {
        char **f = field(e, k);
        char *old = *f;
        *f = xmalloc(QFILE_STR_MAX + 2);
        memset(*f, 'a', QFILE_STR_MAX + 1);
        (*f)[QFILE_STR_MAX + 1] = '\0';
        struct buf b;
        buf_init(&b, QFILE_ENV_MAX);
        buf_append(&b, "keep", 4);
        errno = 0;
        CHECK(qfile_env_encode(e, &b) == -1);
        CHECK(errno == EINVAL);
        CHECK(b.len == 4 && memcmp(b.data, "keep", 4) == 0);
        buf_free(&b);
        free(*f);
        *f = old;
    }
    /* A cap on the output buffer: EFBIG, buffer unchanged. */
    struct buf small;
    buf_init(&small, 20);
    CHECK(qfile_env_encode(e, &small) == -1 && errno == EFBIG);
    CHECK(small.len == 0);
    buf_free(&small);
    /* Bad id, bad state. */
    struct buf b;
    buf_init(&b, QFILE_ENV_MAX);
    char saved[QUEUE_ID_SIZE];
    memcpy(saved, e->id, sizeof(saved));
    strcpy(e->id, "bad/id");
    CHECK(qfile_env_encode(e, &b) == -1 && errno == EINVAL);
    memcpy(e->id, saved, sizeof(saved));
    e->rcpts[2].state = (enum queue_rcpt_state)3;
    CHECK(qfile_env_encode(e, &b) == -1 && errno == EINVAL);
    e->rcpts[2].state = QUEUE_RCPT_FAILED;
    CHECK(b.len == 0);
    buf_free(&b);
    queue_env_free(e);
}

TEST(no_recipients_and_null_strings)
{
    struct queue_env e;
    memset(&e, 0, sizeof(e));
    strcpy(e.id, "Z");
    /* NULL strings encode as "" and come back as "". */
    struct buf b;
    buf_init(&b, QFILE_ENV_MAX);
    CHECK(qfile_env_encode(&e, &b) == 0);
    struct queue_env *d = NULL;
    CHECK(qfile_env_decode(b.data, b.len, &d) == 0);
    if (d != NULL) {
        CHECK_EQ_STR(d->sender, "");
        CHECK_EQ_STR(d->auth_user, "");
        CHECK(d->nrcpts == 0 && d->rcpts == NULL);
        CHECK(qfile_env_equal(&e, d));
    }
    queue_env_free(d);
    buf_free(&b);
}

TEST(truncated_at_every_length)
{
    struct queue_env *e = sample_env(HOSTILE);
    struct buf b;
    buf_init(&b, QFILE_ENV_MAX);
    CHECK(qfile_env_encode(e, &b) == 0);
    for (size_t len = 0; len < b.len; len++) {
        /* A fresh copy of just len bytes, so ASan catches any over-read. */
        char *p = xmalloc(len ? len : 1);
        memcpy(p, b.data, len);
        struct queue_env *d = (struct queue_env *)1;
        CHECK(qfile_env_decode(p, len, &d) == -1);
        CHECK(d == NULL);
        free(p);
    }
    /* And extra bytes after the end record. */
    buf_append(&b, "Z\0\0\0\0", 5);
    struct queue_env *d = NULL;
    CHECK(qfile_env_decode(b.data, b.len, &d) == -1);
    buf_free(&b);
    queue_env_free(e);
}

/* A whole file, built as queue_fs builds it. */
static void build_file(const struct queue_env *e, const char *body, size_t blen,
                       struct buf *f)
{
    struct buf env;
    struct qfile_footer ft;
    unsigned char foot[QFILE_FOOTER_SIZE];
    buf_init(&env, QFILE_ENV_MAX);
    qfile_env_encode(e, &env);
    qfile_footer_make(blen, qfile_crc32(0, body, blen), env.data, env.len, &ft);
    qfile_footer_encode(&ft, foot);
    buf_init(f, SIZE_MAX - 1);
    buf_append(f, QFILE_HEADER, QFILE_HEADER_SIZE);
    buf_append(f, body, blen);
    buf_append(f, env.data, env.len);
    buf_append(f, foot, sizeof(foot));
    buf_free(&env);
}

TEST(whole_file_parse_and_truncation)
{
    struct queue_env *e = sample_env(HOSTILE);
    /* The body holds a fake footer and fake records: it must not matter. */
    struct buf f0;
    build_file(e, "x", 1, &f0);
    struct buf f;
    build_file(e, f0.data, f0.len, &f);
    struct queue_env *d = NULL;
    struct qfile_footer ft;
    CHECK(qfile_parse(f.data, f.len, &d, &ft) == 0);
    if (d != NULL) {
        CHECK(d->body_size == f0.len);
        d->body_size = 0;
        CHECK(qfile_env_equal(e, d));
    }
    CHECK(ft.body_len == f0.len);
    CHECK(ft.env_off == QFILE_HEADER_SIZE + f0.len);
    queue_env_free(d);
    for (size_t len = 0; len < f.len; len++) {
        char *p = xmalloc(len ? len : 1);
        memcpy(p, f.data, len);
        d = NULL;
        CHECK(qfile_parse(p, len, &d, NULL) == -1);
        CHECK(d == NULL);
        free(p);
    }
    buf_free(&f0);
    buf_free(&f);
    queue_env_free(e);
}

TEST(bit_flips_detected)
{
    struct queue_env *e = sample_env("a\r\nb");
    const char body[] = "Subject: x\r\n\r\nbody\r\n";
    struct buf f;
    build_file(e, body, sizeof(body) - 1, &f);
    size_t body_end = QFILE_HEADER_SIZE + sizeof(body) - 1;
    size_t failures = 0, flips = 0;
    for (size_t i = 0; i < f.len; i++) {
        if (i >= QFILE_HEADER_SIZE && i < body_end)
            continue; /* the body is not checksummed (doc/queue.md) */
        for (int bit = 0; bit < 8; bit++) {
            struct queue_env *d = NULL;
            f.data[i] ^= (char)(1 << bit);
            flips++;
            if (qfile_parse(f.data, f.len, &d, NULL) == -1 && d == NULL)
                failures++;
            queue_env_free(d);
            f.data[i] ^= (char)(1 << bit);
        }
    }
    CHECK(flips > 0);
    CHECK_EQ_INT(failures, flips);
    struct queue_env *d = NULL;
    CHECK(qfile_parse(f.data, f.len, &d, NULL) == 0);
    queue_env_free(d);
    buf_free(&f);
    queue_env_free(e);
}

/* Version 2 footers carry the body's CRC: a body byte changed after the
 * footer was written (a page lost in a crash) fails the parse; version 1
 * footers (older files) still decode and re-encode to the same bytes. */
TEST(footer_versions_and_body_crc)
{
    struct queue_env *e = sample_env("x");
    struct buf f;
    build_file(e, "hello body\r\n", 12, &f);
    struct queue_env *d = NULL;
    struct qfile_footer ft;
    CHECK(qfile_parse(f.data, f.len, &d, &ft) == 0);
    CHECK(ft.version == 2 && ft.body_crc == qfile_crc32(0, "hello body\r\n", 12));
    queue_env_free(d);
    d = NULL;
    f.data[QFILE_HEADER_SIZE + 3] ^= 0x01;
    CHECK(qfile_parse(f.data, f.len, &d, NULL) == -1 && d == NULL);
    /* The same file with a version 1 footer: no body CRC to check. */
    ft.version = 1;
    unsigned char foot[QFILE_FOOTER_SIZE], again[QFILE_FOOTER_SIZE];
    qfile_footer_encode(&ft, foot);
    CHECK(memcmp(foot, "EQFOOT01", 8) == 0);
    memcpy(f.data + f.len - QFILE_FOOTER_SIZE, foot, QFILE_FOOTER_SIZE);
    CHECK(qfile_parse(f.data, f.len, &d, &ft) == 0 && ft.version == 1);
    queue_env_free(d);
    qfile_footer_encode(&ft, again);
    CHECK(memcmp(foot, again, QFILE_FOOTER_SIZE) == 0);
    /* Version 2 with its reserved bytes set is not a footer. */
    ft.version = 2;
    qfile_footer_encode(&ft, foot);
    foot[13] = 1;
    struct qfile_footer g;
    CHECK(qfile_footer_decode(foot, f.len, &g) == -1);
    buf_free(&f);
    queue_env_free(e);
}

TEST(footer_checks)
{
    struct qfile_footer f, g;
    unsigned char p[QFILE_FOOTER_SIZE];
    qfile_footer_make(100, 0, "env", 3, &f);
    qfile_footer_encode(&f, p);
    uint64_t size = QFILE_HEADER_SIZE + 100 + 3 + QFILE_FOOTER_SIZE;
    CHECK(qfile_footer_decode(p, size, &g) == 0);
    CHECK(g.body_len == 100 && g.env_len == 3 && g.env_off == 116);
    CHECK(g.env_crc == qfile_crc32(0, "env", 3));
    CHECK(qfile_footer_decode(p, size + 1, &g) == -1);
    CHECK(qfile_footer_decode(p, size - 1, &g) == -1);
    /* Lengths that overflow 64 bits with a correct CRC. */
    f.body_len = UINT64_MAX - 5;
    f.env_off = QFILE_HEADER_SIZE + f.body_len; /* wraps */
    qfile_footer_encode(&f, p);
    CHECK(qfile_footer_decode(p, f.env_off + 3 + QFILE_FOOTER_SIZE, &g) == -1);
    /* Envelope bigger than the cap. */
    qfile_footer_make(0, 0, "", 0, &f);
    f.env_len = (uint64_t)QFILE_ENV_MAX + 1;
    qfile_footer_encode(&f, p);
    CHECK(qfile_footer_decode(p, QFILE_HEADER_SIZE + f.env_len + QFILE_FOOTER_SIZE,
                              &g) == -1);
}

/* Hand-built envelopes the encoder would never write. */
static void rec(struct buf *b, char t, const void *p, uint32_t n)
{
    unsigned char h[5] = {(unsigned char)t, (unsigned char)(n >> 24),
                          (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                          (unsigned char)n};
    buf_append(b, h, 5);
    buf_append(b, p, n);
}

static void u32be(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* A valid envelope with no recipients except where `tweak` changes it. */
static int decode_variant(int tweak)
{
    struct buf b;
    unsigned char v[8] = {0};
    buf_init(&b, 1 << 20);
    u32be(v, tweak == 1 ? 2 : 1);
    rec(&b, 'V', v, 4);
    rec(&b, 'I', tweak == 2 ? "a/b" : "abc", 3);
    rec(&b, 'S', tweak == 3 ? "a\0b" : "a b", 3);
    memset(v, 0, 8);
    rec(&b, 'T', v, tweak == 4 ? 7 : 8);
    rec(&b, 'F', v, 4);
    rec(&b, 'R', v, 4);
    const char *order = tweak == 5 ? "EAHUN" : "EAHNU";
    for (int i = 0; i < 5; i++)
        rec(&b, order[i], "", 0);
    u32be(v, tweak == 6 ? 1000000u : tweak == 7 ? 1 : 0);
    rec(&b, 'C', v, 4);
    if (tweak == 7) { /* one recipient, state 3 */
        unsigned char p[17] = {0};
        p[4] = 3;
        rec(&b, 'P', p, 17);
    }
    if (tweak != 8)
        rec(&b, 'Z', "", 0);
    struct queue_env *d = NULL;
    int r = qfile_env_decode(b.data, b.len, &d);
    queue_env_free(d);
    buf_free(&b);
    return r;
}

TEST(decode_refuses_non_canonical)
{
    CHECK(decode_variant(0) == 0);   /* the baseline is valid */
    CHECK(decode_variant(1) == -1);  /* unknown version */
    CHECK(decode_variant(2) == -1);  /* id with '/' */
    CHECK(decode_variant(3) == -1);  /* NUL inside a string */
    CHECK(decode_variant(4) == -1);  /* integer of the wrong width */
    CHECK(decode_variant(5) == -1);  /* records out of order */
    CHECK(decode_variant(6) == -1);  /* count larger than what follows */
    CHECK(decode_variant(7) == -1);  /* recipient state out of range */
    CHECK(decode_variant(8) == -1);  /* no end record */
    struct queue_env *d = NULL;
    CHECK(qfile_env_decode("", 0, &d) == -1);
    CHECK(qfile_env_decode("V\xff\xff\xff\xff", 5, &d) == -1);
}

TEST(state_records_round_trip_and_trickle)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    CHECK(qfile_st_encode(0, QUEUE_RCPT_DONE, "250 ok", 6, &b) == 0);
    CHECK(qfile_st_encode(7, QUEUE_RCPT_FAILED, HOSTILE, strlen(HOSTILE), &b) == 0);
    CHECK(qfile_st_encode(UINT32_MAX, QUEUE_RCPT_PENDING, "", 0, &b) == 0);
    char big[QFILE_STATUS_MAX];
    memset(big, '\r', sizeof(big));
    CHECK(qfile_st_encode(3, QUEUE_RCPT_PENDING, big, sizeof(big), &b) == 0);
    CHECK(qfile_st_encode(3, QUEUE_RCPT_PENDING, big, sizeof(big) + 1, &b) == -1);
    CHECK(qfile_st_encode(3, (enum queue_rcpt_state)3, "", 0, &b) == -1);
    CHECK(qfile_st_encode(3, QUEUE_RCPT_DONE, "a\0b", 3, &b) == -1);

    /* Whole buffer. */
    struct qfile_st_rec r;
    size_t used, pos = 0;
    int n = 0;
    while (qfile_st_decode(b.data + pos, b.len - pos, &r, &used) == 1) {
        pos += used;
        n++;
        if (n == 2) {
            CHECK(r.index == 7 && r.state == QUEUE_RCPT_FAILED);
            CHECK(r.status_len == strlen(HOSTILE));
            CHECK(memcmp(r.status, HOSTILE, r.status_len) == 0);
        }
        if (n == 3)
            CHECK(r.index == UINT32_MAX && r.status_len == 0);
    }
    CHECK_EQ_INT(n, 4);
    CHECK(pos == b.len);

    /* Byte by byte: every prefix of a record is "need more", never a
     * record and never invalid; the same records come out. */
    size_t start = 0;
    int m = 0;
    for (size_t end = 0; end <= b.len; end++) {
        char *p = xmalloc(end - start + 1);
        memcpy(p, b.data + start, end - start);
        int d = qfile_st_decode(p, end - start, &r, &used);
        free(p);
        CHECK(d >= 0);
        if (d == 1) {
            CHECK(used == end - start);
            start = end;
            m++;
        }
    }
    CHECK_EQ_INT(m, 4);
    buf_free(&b);
}

TEST(state_record_flips)
{
    struct buf b;
    buf_init(&b, 1024);
    qfile_st_encode(2, QUEUE_RCPT_DONE, "250 2.0.0 ok", 12, &b);
    struct qfile_st_rec r;
    size_t used;
    for (size_t i = 0; i < b.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            b.data[i] ^= (char)(1 << bit);
            CHECK(qfile_st_decode(b.data, b.len, &r, &used) != 1);
            b.data[i] ^= (char)(1 << bit);
        }
    }
    CHECK(qfile_st_decode(b.data, b.len, &r, &used) == 1);
    CHECK(qfile_st_decode("xx", 2, &r, &used) == -1);
    CHECK(qfile_st_decode("s", 1, &r, &used) == 0);
    CHECK(qfile_st_decode("", 0, &r, &used) == 0);
    buf_free(&b);
}

TEST(dup_and_equal)
{
    struct queue_env *e = sample_env(HOSTILE);
    e->body_size = 42;
    e->attempts = 3;
    struct queue_env *d = qfile_env_dup(e);
    CHECK(qfile_env_equal(e, d));
    d->rcpts[2].state = QUEUE_RCPT_PENDING;
    CHECK(!qfile_env_equal(e, d));
    queue_env_free(d);
    queue_env_free(e);
    queue_env_free(NULL);
}

int main(void)
{
    RUN(crc32_known_value);
    RUN(id_validation);
    RUN(round_trip_hostile_every_field);
    RUN(too_long_refused_cleanly);
    RUN(no_recipients_and_null_strings);
    RUN(truncated_at_every_length);
    RUN(whole_file_parse_and_truncation);
    RUN(bit_flips_detected);
    RUN(footer_checks);
    RUN(footer_versions_and_body_crc);
    RUN(decode_refuses_non_canonical);
    RUN(state_records_round_trip_and_trickle);
    RUN(state_record_flips);
    RUN(dup_and_equal);
    return harness_done("test_qfile");
}
