/*
 * Tests for proto/msgfix: the submission header fix-ups.
 *
 * Each case gives an input and the exact expected output. Every case is
 * run fed whole, split in two at every position, split in three at every
 * pair of positions (short inputs), one octet at a time and in chunks; the
 * output and results must be the same each time. A slow line-by-line
 * reference model is checked against the table and against generated
 * messages.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "proto/msgfix.h"

#define DATE "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
#define MSGID "Message-ID: <1.2@sub.test>\r\n"
#define ALL (MSGFIX_REMOVE_BCC | MSGFIX_ADD_DATE | MSGFIX_ADD_MESSAGE_ID)

struct result {
    char *out;
    size_t len;
    unsigned bcc_removed;
    bool has_date, has_message_id, has_from, header_done, truncated;
};

static void result_free(struct result *r)
{
    free(r->out);
    r->out = NULL;
}

/* Feeds in[] cut at cuts[0..ncuts), each chunk an exact-size copy so that
 * ASan sees a read past it; checks the output capacity contract. */
static void run_cuts(const char *in, size_t len, unsigned flags, size_t max,
                     const size_t *cuts, size_t ncuts, struct result *r)
{
    struct msgfix f;
    size_t start = 0, k, cap_extra = MSGFIX_OUT_SLACK + strlen(DATE) +
                                      strlen(MSGID);
    size_t o, total = 0, cap = len + (ncuts + 2) * cap_extra;

    r->out = malloc(cap);
    if (r->out == NULL)
        abort();
    msgfix_init(&f, flags, max);
    msgfix_set_additions(&f, DATE, MSGID);
    for (k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : len, n = end - start;
        char *chunk = malloc(n + 1);
        /* Exactly the promised capacity for this call. */
        char *o_buf = malloc(n + cap_extra);
        if (chunk == NULL || o_buf == NULL)
            abort();
        memcpy(chunk, in + start, n);
        msgfix_feed(&f, chunk, n, o_buf, &o);
        if (o > n + cap_extra)
            abort();
        memcpy(r->out + total, o_buf, o);
        total += o;
        free(chunk);
        free(o_buf);
        start = end;
    }
    {
        char *o_buf = malloc(cap_extra);
        if (o_buf == NULL)
            abort();
        msgfix_finish(&f, o_buf, &o);
        memcpy(r->out + total, o_buf, o);
        total += o;
        free(o_buf);
    }
    r->len = total;
    r->bcc_removed = f.bcc_removed;
    r->has_date = f.has_date;
    r->has_message_id = f.has_message_id;
    r->has_from = f.has_from;
    r->header_done = f.header_done;
    r->truncated = f.truncated;
}

static void run_chunks(const char *in, size_t len, unsigned flags, size_t max,
                       size_t chunk, struct result *r)
{
    size_t ncuts = len / chunk, k;
    size_t *cuts = malloc((ncuts + 1) * sizeof *cuts);
    if (cuts == NULL)
        abort();
    for (k = 0; k < ncuts; k++)
        cuts[k] = (k + 1) * chunk;
    if (ncuts > 0 && cuts[ncuts - 1] == len)
        ncuts--;
    run_cuts(in, len, flags, max, cuts, ncuts, r);
    free(cuts);
}

static bool same(const struct result *a, const struct result *b)
{
    return a->len == b->len && memcmp(a->out, b->out, a->len) == 0 &&
           a->bcc_removed == b->bcc_removed && a->has_date == b->has_date &&
           a->has_message_id == b->has_message_id &&
           a->has_from == b->has_from && a->header_done == b->header_done &&
           a->truncated == b->truncated;
}

/* ---- reference model: one line at a time over the whole input ---- */

static bool ci_prefix(const char *p, size_t n, const char *lower)
{
    size_t k, l = strlen(lower);
    if (n < l)
        return false;
    for (k = 0; k < l; k++) {
        char c = p[k];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        if (c != lower[k])
            return false;
    }
    return true;
}

/* Is the line the field `lower` (name, WSP, colon)? *wsp_r: SP/HT run. */
static bool is_field(const char *p, size_t n, const char *lower, size_t *wsp_r)
{
    size_t l = strlen(lower), k;
    if (!ci_prefix(p, n, lower))
        return false;
    for (k = l; k < n && (p[k] == ' ' || p[k] == '\t'); k++)
        ;
    *wsp_r = k - l;
    return k < n && p[k] == ':';
}

static bool ref_is_bcc(const char *p, size_t n)
{
    size_t wsp, k;
    if (is_field(p, n, "bcc", &wsp))
        return wsp <= MSGFIX_HOLD_MAX - 3;
    if (!ci_prefix(p, n, "bcc"))
        return false;
    for (k = 3; k < n && (p[k] == ' ' || p[k] == '\t'); k++)
        ;
    return k - 3 > MSGFIX_HOLD_MAX - 3;
}

static void ref_run(const char *in, size_t len, unsigned flags, size_t max,
                    struct result *r)
{
    size_t pos = 0, o = 0, wsp;
    bool cur_bcc = false;

    memset(r, 0, sizeof *r);
    r->out = malloc(len + 2 + strlen(DATE) + strlen(MSGID) + 1);
    if (r->out == NULL)
        abort();
    while (pos < len) {
        const char *lf = memchr(in + pos, '\n', len - pos);
        size_t e = lf ? (size_t)(lf - in) + 1 : len, n = e - pos;
        const char *p = in + pos;
        bool wsp0 = p[0] == ' ' || p[0] == '\t';

        if (pos >= max)
            r->truncated = true;
        if (r->truncated && !(cur_bcc && wsp0)) {
            memcpy(r->out + o, p, len - pos);
            o += len - pos;
            break;
        }
        if ((n == 1 && p[0] == '\n') ||
            (n == 2 && p[0] == '\r' && p[1] == '\n')) {
            if (e > max) {
                r->truncated = true;
            } else {
                if ((flags & MSGFIX_ADD_DATE) && !r->has_date) {
                    memcpy(r->out + o, DATE, strlen(DATE));
                    o += strlen(DATE);
                }
                if ((flags & MSGFIX_ADD_MESSAGE_ID) && !r->has_message_id) {
                    memcpy(r->out + o, MSGID, strlen(MSGID));
                    o += strlen(MSGID);
                }
                r->header_done = true;
            }
            memcpy(r->out + o, p, len - pos);
            o += len - pos;
            break;
        }
        if (e > max)
            r->truncated = true;
        if (wsp0) {
            if (!cur_bcc) {
                memcpy(r->out + o, p, n);
                o += n;
            }
        } else if ((flags & MSGFIX_REMOVE_BCC) && ref_is_bcc(p, n)) {
            cur_bcc = true;
            r->bcc_removed++;
        } else {
            cur_bcc = false;
            /* Past header_max only a possible Bcc is still looked at: a
             * field counts if its colon came before. */
            if (is_field(p, n, "date", &wsp) && pos + 4 + wsp < max)
                r->has_date = true;
            if (is_field(p, n, "message-id", &wsp) && pos + 10 + wsp < max)
                r->has_message_id = true;
            if (is_field(p, n, "from", &wsp) && pos + 4 + wsp < max)
                r->has_from = true;
            memcpy(r->out + o, p, n);
            o += n;
        }
        pos = e;
    }
    if (!r->header_done && !r->truncated &&
        (((flags & MSGFIX_ADD_DATE) && !r->has_date) ||
         ((flags & MSGFIX_ADD_MESSAGE_ID) && !r->has_message_id))) {
        if (o > 0 && r->out[o - 1] != '\n') {
            memcpy(r->out + o, "\r\n", 2);
            o += 2;
        }
        if ((flags & MSGFIX_ADD_DATE) && !r->has_date) {
            memcpy(r->out + o, DATE, strlen(DATE));
            o += strlen(DATE);
        }
        if ((flags & MSGFIX_ADD_MESSAGE_ID) && !r->has_message_id) {
            memcpy(r->out + o, MSGID, strlen(MSGID));
            o += strlen(MSGID);
        }
    }
    r->len = o;
}

/* Every way of feeding gives `whole`; the reference model agrees. */
static int check_splits(const char *in, size_t len, unsigned flags,
                        size_t max)
{
    struct result whole, x;
    size_t a, b, cuts[2];
    int bad = 0;

    run_cuts(in, len, flags, max, NULL, 0, &whole);
    ref_run(in, len, flags, max, &x);
    if (!same(&whole, &x)) {
        fprintf(stderr, "reference differs: [%.*s] vs ref [%.*s]\n",
                (int)whole.len, whole.out, (int)x.len, x.out);
        bad = 1;
    }
    result_free(&x);
    for (a = 0; a <= len && !bad; a++) {
        cuts[0] = a;
        run_cuts(in, len, flags, max, cuts, 1, &x);
        if (!same(&whole, &x)) {
            fprintf(stderr, "split at %zu differs\n", a);
            bad = 1;
        }
        result_free(&x);
        if (len <= 120) {
            for (b = a; b <= len && !bad; b++) {
                cuts[1] = b;
                run_cuts(in, len, flags, max, cuts, 2, &x);
                if (!same(&whole, &x)) {
                    fprintf(stderr, "split at %zu,%zu differs\n", a, b);
                    bad = 1;
                }
                result_free(&x);
            }
        }
    }
    for (a = 1; a <= 7 && !bad; a++) {
        run_chunks(in, len, flags, max, a, &x);
        if (!same(&whole, &x)) {
            fprintf(stderr, "chunks of %zu differ\n", a);
            bad = 1;
        }
        result_free(&x);
    }
    result_free(&whole);
    return bad;
}

struct tcase {
    const char *in;
    unsigned flags;
    size_t max;
    const char *out;
    unsigned bcc_removed;
    bool header_done, truncated;
};

#define NOMAX SIZE_MAX

static const struct tcase cases[] = {
    /* Nothing asked: copied unchanged. */
    {"From: a@x.test\r\nBcc: b@y.test\r\n\r\nbody\r\n", 0, NOMAX,
     "From: a@x.test\r\nBcc: b@y.test\r\n\r\nbody\r\n", 0, true, false},
    /* Bcc dropped, Date and Message-ID added before the empty line. */
    {"From: a@x.test\r\nBcc: b@y.test\r\nTo: c@z.test\r\n\r\nbody\r\n",
     ALL, NOMAX,
     "From: a@x.test\r\nTo: c@z.test\r\n" DATE MSGID "\r\nbody\r\n", 1, true,
     false},
    /* Case and obs-optional WSP before the colon; continuation lines. */
    {"bcc : a@x.test,\r\n b@x.test,\r\n\tc@x.test\r\nBCC\t:d\r\nX: 1\r\n"
     "\r\n",
     MSGFIX_REMOVE_BCC, NOMAX, "X: 1\r\n\r\n", 2, true, false},
    /* Continuations of other fields stay; Bcc continuation goes. */
    {"To: a,\r\n b\r\nBcc: c,\r\n d\r\nCc: e,\r\n f\r\n\r\n",
     MSGFIX_REMOVE_BCC, NOMAX, "To: a,\r\n b\r\nCc: e,\r\n f\r\n\r\n", 1,
     true, false},
    /* Names that only look like Bcc. */
    {"Bccx: 1\r\nBc: 2\r\nBc c: 3\r\nX-Bcc: 4\r\nB: 5\r\nbcc\r\n"
     "Bcc-Copy: 6\r\n\r\n",
     MSGFIX_REMOVE_BCC, NOMAX,
     "Bccx: 1\r\nBc: 2\r\nBc c: 3\r\nX-Bcc: 4\r\nB: 5\r\nbcc\r\n"
     "Bcc-Copy: 6\r\n\r\n", 0, true, false},
    /* "Bcc:" in the body is body. */
    {"Subject: s\r\n\r\nBcc: keep@x.test\r\n", ALL, NOMAX,
     "Subject: s\r\n" DATE MSGID "\r\nBcc: keep@x.test\r\n", 0, true, false},
    /* Present fields are not added again (any case, WSP before colon). */
    {"DATE : today\r\nmessage-id: <a@b>\r\nFrom: x\r\n\r\n", ALL, NOMAX,
     "DATE : today\r\nmessage-id: <a@b>\r\nFrom: x\r\n\r\n", 0, true, false},
    {"Date: today\r\n\r\n", ALL, NOMAX, "Date: today\r\n" MSGID "\r\n", 0,
     true, false},
    /* A field in the body does not count. */
    {"X: 1\r\n\r\nDate: x\r\n", MSGFIX_ADD_DATE, NOMAX,
     "X: 1\r\n" DATE "\r\nDate: x\r\n", 0, true, false},
    /* Only Bcc: the header becomes empty. */
    {"Bcc: a\r\n\r\nb", MSGFIX_REMOVE_BCC, NOMAX, "\r\nb", 1, true, false},
    /* No header at all: additions before the empty line. */
    {"\r\nbody", ALL, NOMAX, DATE MSGID "\r\nbody", 0, true, false},
    /* Header only, with and without a final CRLF. */
    {"Subject: s\r\n", ALL, NOMAX, "Subject: s\r\n" DATE MSGID, 0, false,
     false},
    {"Subject: s", ALL, NOMAX, "Subject: s\r\n" DATE MSGID, 0, false, false},
    {"Subject: s\r\nBcc: x", ALL, NOMAX, "Subject: s\r\n" DATE MSGID, 1,
     false, false},
    {"Subject: s\r\nBcc", ALL, NOMAX, "Subject: s\r\nBcc\r\n" DATE MSGID, 0,
     false, false},
    {"Subject: s\r\n\r", ALL, NOMAX, "Subject: s\r\n\r\r\n" DATE MSGID, 0,
     false, false},
    {"", ALL, NOMAX, DATE MSGID, 0, false, false},
    {"Bcc: x\r\n", ALL, NOMAX, DATE MSGID, 1, false, false},
    /* Bare LF line ends. */
    {"To: a\nBcc: b\n c\n\nbody\n", ALL, NOMAX,
     "To: a\n" DATE MSGID "\nbody\n", 1, true, false},
    /* A line starting with a bare CR is neither empty nor Bcc. */
    {"\rBcc: x\r\nBcc: y\r\n\r\n", MSGFIX_REMOVE_BCC, NOMAX,
     "\rBcc: x\r\n\r\n", 1, true, false},
    /* Continuation as the very first line, malformed lines. */
    {" x\r\nno colon here\r\n:empty name\r\n\r\n", MSGFIX_REMOVE_BCC, NOMAX,
     " x\r\nno colon here\r\n:empty name\r\n\r\n", 0, true, false},
    /* A long name is released; "Bcc" plus 61 WSP is still decided. */
    {"Bcc                                                             :x\r\n"
     "\r\n", MSGFIX_REMOVE_BCC, NOMAX, "\r\n", 1, true, false},
    /* 62 WSP: more than the hold: dropped as Bcc (or malformed). */
    {"Bcc                                                              x\r\n"
     " more\r\nTo: t\r\n\r\n", MSGFIX_REMOVE_BCC, NOMAX, "To: t\r\n\r\n", 1,
     true, false},
    /* header_max: the line in progress is decided, then pass through. */
    {"To: a\r\nBcc: b\r\n c\r\nBcc: d\r\n\r\n", ALL, 10,
     "To: a\r\nBcc: d\r\n\r\n", 1, false, true},
    {"To: a\r\nBcc: b\r\n\r\n", ALL, 7, "To: a\r\nBcc: b\r\n\r\n", 0, false,
     true},
    {"To: a\r\n\r\n", ALL, 8, "To: a\r\n\r\n", 0, false, true},
    {"To: a\r\n\r\n", ALL, 9, "To: a\r\n" DATE MSGID "\r\n", 0, true, false},
    {"To: a\r\n", ALL, 3, "To: a\r\n", 0, false, true},
    {"To: a\r\n", ALL, 7, "To: a\r\n" DATE MSGID, 0, false, false},
    {"X: 1\r\n\r\n", ALL, 0, "X: 1\r\n\r\n", 0, false, true},
    /* Bcc after the first line, inside the limit on its first octet. */
    {"To: a\r\nBcc: secret\r\n\r\n", MSGFIX_REMOVE_BCC, 8, "To: a\r\n\r\n", 1,
     false, true},
};

TEST(table)
{
    size_t k;
    for (k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const struct tcase *t = &cases[k];
        struct result r;
        size_t len = strlen(t->in);

        run_cuts(t->in, len, t->flags, t->max, NULL, 0, &r);
        if (r.len != strlen(t->out) || memcmp(r.out, t->out, r.len) != 0 ||
            r.bcc_removed != t->bcc_removed ||
            r.header_done != t->header_done || r.truncated != t->truncated) {
            fprintf(stderr, "case %zu: got [%.*s] bcc=%u done=%d trunc=%d\n",
                    k, (int)r.len, r.out, r.bcc_removed, r.header_done,
                    r.truncated);
            CHECK(0);
        }
        result_free(&r);
        CHECK_EQ_INT(check_splits(t->in, len, t->flags, t->max), 0);
    }
}

TEST(results)
{
    struct result r;
    const char *in = "From: a\r\nDate: d\r\n\r\nMessage-ID: body\r\n";
    run_cuts(in, strlen(in), 0, NOMAX, NULL, 0, &r);
    CHECK(r.has_from);
    CHECK(r.has_date);
    CHECK(!r.has_message_id);
    CHECK(r.header_done);
    result_free(&r);
}

TEST(additions_validated)
{
    struct msgfix f;
    char out[64 + MSGFIX_OUT_SLACK + 2 * MSGFIX_ADDITION_MAX];
    char big[MSGFIX_ADDITION_MAX + 4];
    size_t o;

    /* No CRLF at the end: ignored, or the body would become header. */
    msgfix_init(&f, ALL, NOMAX);
    msgfix_set_additions(&f, "Date: x", "Message-ID: <y>\r\n");
    msgfix_feed(&f, "\r\nb", 3, out, &o);
    CHECK_EQ_INT(o, strlen("Message-ID: <y>\r\n\r\nb"));
    CHECK(memcmp(out, "Message-ID: <y>\r\n\r\nb", o) == 0);

    /* Too long, NULL, "": ignored. */
    memset(big, 'a', sizeof big);
    big[sizeof big - 3] = '\r';
    big[sizeof big - 2] = '\n';
    big[sizeof big - 1] = '\0';
    msgfix_init(&f, ALL, NOMAX);
    msgfix_set_additions(&f, big, NULL);
    msgfix_feed(&f, "\r\n", 2, out, &o);
    CHECK_EQ_INT(o, 2);
    msgfix_init(&f, ALL, NOMAX);
    msgfix_set_additions(&f, "", "");
    msgfix_feed(&f, "X: 1", 4, out, &o);
    CHECK_EQ_INT(o, 4);
    msgfix_finish(&f, out, &o);
    CHECK_EQ_INT(o, 0);

    /* The longest accepted line. */
    big[MSGFIX_ADDITION_MAX - 3] = '\r';
    big[MSGFIX_ADDITION_MAX - 2] = '\n';
    big[MSGFIX_ADDITION_MAX - 1] = '\0';
    CHECK_EQ_INT(strlen(big), MSGFIX_ADDITION_MAX - 1);
    msgfix_init(&f, MSGFIX_ADD_DATE, NOMAX);
    msgfix_set_additions(&f, big, NULL);
    msgfix_feed(&f, "\r\n", 2, out, &o);
    CHECK_EQ_INT(o, MSGFIX_ADDITION_MAX + 1);
}

TEST(finish_once)
{
    struct msgfix f;
    char out[MSGFIX_OUT_SLACK + 2 * MSGFIX_ADDITION_MAX + 16];
    size_t o;

    msgfix_init(&f, ALL, NOMAX);
    msgfix_set_additions(&f, DATE, MSGID);
    msgfix_feed(&f, "Bc", 2, out, &o);
    CHECK_EQ_INT(o, 0);
    msgfix_finish(&f, out, &o);
    CHECK_EQ_INT(o, strlen("Bc\r\n" DATE MSGID));
    msgfix_finish(&f, out, &o);
    CHECK_EQ_INT(o, 0);
    msgfix_feed(&f, "more", 4, out, &o);
    CHECK_EQ_INT(o, 0);
}

/* Generated messages from a small alphabet of line pieces, against the
 * reference model and split feeding. */
static uint32_t rng(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

TEST(generated)
{
    static const char *const pieces[] = {
        "Bcc: x\r\n", "bcc :y\r\n", " cont\r\n", "\tcont\r\n", "To: t\r\n",
        "Date: d\r\n", "Message-ID: m\r\n", "\r\n", "\n", "\r", "Bcc",
        "B", ":", " ", "body", "From: f\n", "Bcc\t\t:\n", "x\r\n",
        "Bcc                                                  ",
    };
    uint32_t seed = 12345;
    int iter, failures = 0;

    for (iter = 0; iter < 20000 && failures == 0; iter++) {
        char msg[512];
        size_t len = 0, n = 1 + rng(&seed) % 12, k, max;
        unsigned flags = rng(&seed) % 8;
        for (k = 0; k < n; k++) {
            const char *p = pieces[rng(&seed) % (sizeof pieces /
                                                 sizeof pieces[0])];
            size_t l = strlen(p);
            if (len + l > sizeof msg)
                break;
            memcpy(msg + len, p, l);
            len += l;
        }
        max = rng(&seed) % 4 == 0 ? rng(&seed) % (len + 2) : NOMAX;
        {
            struct result a, b;
            size_t c;
            run_cuts(msg, len, flags, max, NULL, 0, &a);
            ref_run(msg, len, flags, max, &b);
            if (!same(&a, &b)) {
                fprintf(stderr, "got [%.*s] ref [%.*s] trunc %d/%d\n",
                        (int)a.len, a.out, (int)b.len, b.out, a.truncated,
                        b.truncated);
                failures++;
            }
            result_free(&b);
            for (c = 0; c <= len; c += 1 + rng(&seed) % 5) {
                run_cuts(msg, len, flags, max, &c, 1, &b);
                if (!same(&a, &b))
                    failures++;
                result_free(&b);
            }
            run_chunks(msg, len, flags, max, 1, &b);
            if (!same(&a, &b))
                failures++;
            result_free(&b);
            result_free(&a);
        }
        if (failures)
            fprintf(stderr, "generated case %d: [%.*s] flags %u max %zu\n",
                    iter, (int)len, msg, flags, max);
    }
    CHECK_EQ_INT(failures, 0);
}

/* Large input: linear, bounded memory, body untouched. */
TEST(large)
{
    size_t n = 4u << 20, hdr = 2000000, k, o;
    char *in = malloc(n), *out = malloc(n + MSGFIX_OUT_SLACK +
                                        2 * MSGFIX_ADDITION_MAX);
    struct msgfix f;

    if (in == NULL || out == NULL)
        abort();
    /* A header of many Bcc fields with long continuation lines. */
    for (k = 0; k < hdr; k += 100) {
        memset(in + k, ' ', 100);
        memcpy(in + k, k % 1000 == 0 ? "Bcc:" : "    ", 4);
        memcpy(in + k + 98, "\r\n", 2);
    }
    memcpy(in + hdr, "\r\n", 2);
    memset(in + hdr + 2, 'B', n - hdr - 2);
    msgfix_init(&f, ALL, NOMAX);
    msgfix_feed(&f, in, n, out, &o);
    CHECK(f.header_done);
    CHECK_EQ_INT(f.bcc_removed, hdr / 1000);
    CHECK_EQ_INT(o, n - hdr);
    CHECK(memcmp(out, in + hdr, o) == 0);

    /* One huge field name, one huge line: copied. */
    memset(in, 'x', n);
    msgfix_init(&f, ALL, NOMAX);
    msgfix_feed(&f, in, n, out, &o);
    CHECK_EQ_INT(o, n);
    CHECK(memcmp(out, in, n) == 0);
    free(in);
    free(out);
}

int main(void)
{
    RUN(table);
    RUN(results);
    RUN(additions_validated);
    RUN(finish_once);
    RUN(generated);
    RUN(large);
    return harness_done("test_msgfix");
}
