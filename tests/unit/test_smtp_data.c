/*
 * Tests for proto/smtp_data: the DATA reader.
 *
 * Every input is checked three ways: against explicit expectations, against
 * a slow reference model written straight from the rules (below), and fed
 * split at every position, split twice (short inputs), in fixed-size chunks
 * and one byte at a time, all of which must give the same output, flags,
 * end position and final reader state as feeding it whole.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "proto/smtp_data.h"

#define S(lit) lit, (sizeof(lit) - 1)

struct run {
    enum smtp_data_result res;
    size_t consumed;       /* total input used */
    char *out;
    size_t out_len;
    struct smtp_data_reader r;
    int contract_bad;      /* MORE with consumed != len, or out over cap */
};

static void run_free(struct run *x)
{
    free(x->out);
    x->out = NULL;
}

/* Feed in[0..len) cut at cuts[0..ncuts) (increasing, inside (0, len)). */
static void run_cuts(const char *in, size_t len, size_t max_line,
                     const size_t *cuts, size_t ncuts, struct run *x)
{
    size_t start = 0, k;

    memset(x, 0, sizeof *x);
    x->out = malloc(len + SMTP_DATA_OUT_SLACK);
    if (x->out == NULL)
        abort();
    smtp_data_init(&x->r, max_line);
    x->res = SMTP_DATA_MORE;
    for (k = 0; k <= ncuts && start <= len; k++) {
        size_t end = k < ncuts ? cuts[k] : len;
        size_t n = end - start, out_len = 99999, consumed = 99999;
        /* Exactly the contracted capacity, so ASan sees any overrun. */
        char *buf = malloc(n + SMTP_DATA_OUT_SLACK);
        if (buf == NULL)
            abort();
        x->res = smtp_data_feed(&x->r, in + start, n, buf, &out_len,
                                &consumed);
        if (out_len > n + SMTP_DATA_OUT_SLACK || consumed > n ||
            x->out_len + out_len > len + SMTP_DATA_OUT_SLACK) {
            x->contract_bad = 1;
            free(buf);
            return;
        }
        memcpy(x->out + x->out_len, buf, out_len);
        x->out_len += out_len;
        free(buf);
        if (x->res == SMTP_DATA_END) {
            x->consumed = start + consumed;
            return;
        }
        if (consumed != n)
            x->contract_bad = 1;
        start = end;
    }
    x->consumed = len;
}

static void run_chunks(const char *in, size_t len, size_t max_line,
                       size_t chunk, struct run *x)
{
    size_t ncuts = 0, p;
    size_t *cuts = malloc((len / chunk + 1) * sizeof *cuts);
    if (cuts == NULL)
        abort();
    for (p = chunk; p < len; p += chunk)
        cuts[ncuts++] = p;
    run_cuts(in, len, max_line, cuts, ncuts, x);
    free(cuts);
}

static int reader_same(const struct smtp_data_reader *a,
                       const struct smtp_data_reader *b)
{
    return a->state == b->state && a->max_line == b->max_line &&
           a->line_len == b->line_len && a->out_total == b->out_total &&
           a->lines == b->lines && a->bare_cr == b->bare_cr &&
           a->bare_lf == b->bare_lf && a->long_line == b->long_line &&
           a->has_nul == b->has_nul && a->has_8bit == b->has_8bit;
}

static int run_same(const struct run *a, const struct run *b)
{
    return !a->contract_bad && !b->contract_bad && a->res == b->res &&
           a->consumed == b->consumed && a->out_len == b->out_len &&
           memcmp(a->out, b->out, a->out_len) == 0 && reader_same(&a->r, &b->r);
}

/*
 * The reference model: the rules applied to the whole input at once.
 * Beginning of line = offset 0 or just after "\r\n". There, ".\r\n" ends
 * the data and any other '.' is dropped; a trailing "." or ".\r" is held
 * (consumed, not yet output). Every flag is then read off the output.
 */
struct ref {
    enum smtp_data_result res;
    size_t consumed;
    char *out;
    size_t out_len;
    uint64_t lines;
    bool bare_cr, bare_lf, long_line, has_nul, has_8bit;
};

static void ref_run(const char *in, size_t len, size_t max_line, struct ref *f)
{
    size_t i = 0, o = 0, j, cur = 0;

    memset(f, 0, sizeof *f);
    f->out = malloc(len + 1);
    if (f->out == NULL)
        abort();
    f->res = SMTP_DATA_MORE;
    while (i < len) {
        bool bol = i == 0 || (i >= 2 && in[i - 2] == '\r' && in[i - 1] == '\n');
        if (bol && in[i] == '.') {
            if (i + 1 == len || (in[i + 1] == '\r' && i + 2 == len)) {
                i = len;
                break;
            }
            if (in[i + 1] == '\r' && in[i + 2] == '\n') {
                i += 3;
                f->res = SMTP_DATA_END;
                break;
            }
            i++;
            continue;
        }
        f->out[o++] = in[i++];
    }
    f->consumed = i;
    f->out_len = o;
    for (j = 0; j < o; j++) {
        unsigned char c = (unsigned char)f->out[j];
        if (c == '\r' && j + 1 < o && f->out[j + 1] != '\n')
            f->bare_cr = true;
        if (c == '\n' && (j == 0 || f->out[j - 1] != '\r'))
            f->bare_lf = true;
        if (c == '\r' && j + 1 < o && f->out[j + 1] == '\n')
            f->lines++;
        if (c == 0)
            f->has_nul = true;
        if (c >= 0x80)
            f->has_8bit = true;
        cur++;
        if (cur > max_line)
            f->long_line = true;
        if (c == '\n' && j > 0 && f->out[j - 1] == '\r')
            cur = 0;
    }
}

static int ref_same(const struct ref *f, const struct run *x)
{
    return !x->contract_bad && f->res == x->res &&
           f->consumed == x->consumed && f->out_len == x->out_len &&
           memcmp(f->out, x->out, f->out_len) == 0 &&
           x->r.out_total == x->out_len && f->lines == x->r.lines &&
           f->bare_cr == x->r.bare_cr && f->bare_lf == x->r.bare_lf &&
           f->long_line == x->r.long_line && f->has_nul == x->r.has_nul &&
           f->has_8bit == x->r.has_8bit;
}

static void dump(const char *what, const char *p, size_t n)
{
    size_t i;
    fprintf(stderr, "  %s (%zu): \"", what, n);
    for (i = 0; i < n && i < 200; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r')
            fputs("\\r", stderr);
        else if (c == '\n')
            fputs("\\n", stderr);
        else if (c < 32 || c >= 127)
            fprintf(stderr, "\\x%02x", c);
        else
            fputc(c, stderr);
    }
    fputs(n > 200 ? "...\"\n" : "\"\n", stderr);
}

/*
 * Run in whole and every split; compare each with the whole run and the
 * whole run with the reference. Returns the whole run (caller frees).
 * Returns the number of disagreements.
 */
static int check_splits(const char *in, size_t len, size_t max_line,
                        struct run *whole)
{
    struct run x;
    struct ref f;
    size_t a, b, cuts[2];
    static const size_t chunks[] = {1, 2, 3, 7, 8, 9, 64};
    int bad = 0;

    run_cuts(in, len, max_line, NULL, 0, whole);
    ref_run(in, len, max_line, &f);
    if (!ref_same(&f, whole)) {
        fprintf(stderr, "reference disagrees with whole feed\n");
        dump("input", in, len);
        dump("ref out", f.out, f.out_len);
        dump("out", whole->out, whole->out_len);
        fprintf(stderr, "  res %d/%d consumed %zu/%zu\n", f.res, whole->res,
                f.consumed, whole->consumed);
        bad++;
    }
    free(f.out);

    for (a = 1; a < len; a++) {
        cuts[0] = a;
        run_cuts(in, len, max_line, cuts, 1, &x);
        if (!run_same(whole, &x)) {
            if (!bad)
                fprintf(stderr, "split at %zu differs\n", a);
            bad++;
        }
        run_free(&x);
    }
    if (len <= 48) {
        for (a = 1; a < len; a++) {
            for (b = a + 1; b < len; b++) {
                cuts[0] = a;
                cuts[1] = b;
                run_cuts(in, len, max_line, cuts, 2, &x);
                if (!run_same(whole, &x)) {
                    if (!bad)
                        fprintf(stderr, "split at %zu,%zu differs\n", a, b);
                    bad++;
                }
                run_free(&x);
            }
        }
    }
    for (a = 0; a < sizeof chunks / sizeof chunks[0]; a++) {
        run_chunks(in, len, max_line, chunks[a], &x);
        if (!run_same(whole, &x)) {
            if (!bad)
                fprintf(stderr, "chunks of %zu differ\n", chunks[a]);
            bad++;
        }
        run_free(&x);
    }
    if (bad)
        dump("input", in, len);
    return bad;
}

struct expect {
    enum smtp_data_result res;
    size_t consumed;
    const char *out;
    size_t out_len;
    uint64_t lines;
    bool bare_cr, bare_lf, long_line, has_nul, has_8bit;
};

static int check_one(const char *in, size_t len, size_t max_line,
                     const struct expect *e)
{
    struct run w;
    int bad = check_splits(in, len, max_line, &w);

    if (w.res != e->res || w.consumed != e->consumed ||
        w.out_len != e->out_len || memcmp(w.out, e->out, e->out_len) != 0 ||
        w.r.out_total != e->out_len || w.r.lines != e->lines ||
        w.r.bare_cr != e->bare_cr || w.r.bare_lf != e->bare_lf ||
        w.r.long_line != e->long_line || w.r.has_nul != e->has_nul ||
        w.r.has_8bit != e->has_8bit) {
        fprintf(stderr, "unexpected result\n");
        dump("input", in, len);
        dump("want", e->out, e->out_len);
        dump("got", w.out, w.out_len);
        fprintf(stderr,
                "  res %d/%d consumed %zu/%zu lines %llu/%llu cr %d/%d "
                "lf %d/%d long %d/%d nul %d/%d 8bit %d/%d\n",
                e->res, w.res, e->consumed, w.consumed,
                (unsigned long long)e->lines, (unsigned long long)w.r.lines,
                e->bare_cr, w.r.bare_cr, e->bare_lf, w.r.bare_lf,
                e->long_line, w.r.long_line, e->has_nul, w.r.has_nul,
                e->has_8bit, w.r.has_8bit);
        bad++;
    }
    run_free(&w);
    return bad;
}

/* ---- the smuggling sequences (security.md 2) ---- */

struct smuggle {
    const char *seq;
    size_t seq_len;
    const char *out;     /* output for "A" seq "B\r\n" */
    size_t out_len;
    uint64_t lines;
    bool bare_cr, bare_lf, has_nul;
};

static const struct smuggle smuggles[] = {
    {S("\n.\n"), S("A\n.\nB\r\n"), 1, false, true, false},
    {S("\n.\r\n"), S("A\n.\r\nB\r\n"), 2, false, true, false},
    {S("\r\n.\n"), S("A\r\n\nB\r\n"), 2, false, true, false},
    {S("\r.\r"), S("A\r.\rB\r\n"), 1, true, false, false},
    {S("\r.\n"), S("A\r.\nB\r\n"), 1, true, true, false},
    {S("\n.\r"), S("A\n.\rB\r\n"), 1, true, true, false},
    {S("\r.\r\n"), S("A\r.\r\nB\r\n"), 2, true, false, false},
    {S("\r\n.\rX"), S("A\r\n\rXB\r\n"), 2, true, false, false},
    {S("\r\n.\r."), S("A\r\n\r.B\r\n"), 2, true, false, false},
    {S("\r\n.\r "), S("A\r\n\r B\r\n"), 2, true, false, false},
    {S("\r\n.\r\r"), S("A\r\n\r\rB\r\n"), 2, true, false, false},
    {S("\r\n.\r\0"), S("A\r\n\r\0B\r\n"), 2, true, false, true},
    {S("\r\n\0.\r\n"), S("A\r\n\0.\r\nB\r\n"), 3, false, false, true},
    {S("\r\n.\r\r\n"), S("A\r\n\r\r\nB\r\n"), 3, true, false, false},
    {S("\r\r\n.\r\r\n"), S("A\r\r\n\r\r\nB\r\n"), 3, true, false, false},
};

TEST(smuggling_sequences_are_content)
{
    size_t k;
    for (k = 0; k < sizeof smuggles / sizeof smuggles[0]; k++) {
        const struct smuggle *m = &smuggles[k];
        char in[128];
        size_t len = 0;
        struct expect e;

        /* "A" seq "B\r\n" ".\r\n" "QUIT\r\n": the real end is found, and
         * the pipelined QUIT is left unread. */
        in[len++] = 'A';
        memcpy(in + len, m->seq, m->seq_len);
        len += m->seq_len;
        memcpy(in + len, "B\r\n.\r\nQUIT\r\n", 12);
        len += 12;
        memset(&e, 0, sizeof e);
        e.res = SMTP_DATA_END;
        e.consumed = len - 6;
        e.out = m->out;
        e.out_len = m->out_len;
        e.lines = m->lines;
        e.bare_cr = m->bare_cr;
        e.bare_lf = m->bare_lf;
        e.has_nul = m->has_nul;
        if (check_one(in, len, 1000, &e)) {
            fprintf(stderr, "  smuggling case %zu\n", k);
            CHECK(0);
        }
    }
}

TEST(smuggling_sequences_at_start_and_without_end)
{
    size_t k;
    for (k = 0; k < sizeof smuggles / sizeof smuggles[0]; k++) {
        const struct smuggle *m = &smuggles[k];
        char in[128];
        size_t len;
        struct run w;

        /* Right after the DATA line, then the real end. */
        memcpy(in, m->seq, m->seq_len);
        len = m->seq_len;
        memcpy(in + len, "B\r\n.\r\nQUIT\r\n", 12);
        len += 12;
        CHECK(check_splits(in, len, 1000, &w) == 0);
        CHECK(w.res == SMTP_DATA_END);
        CHECK_EQ_INT(w.consumed, len - 6);
        CHECK(w.r.bare_cr || w.r.bare_lf || w.r.has_nul);
        CHECK(memmem(w.out, w.out_len, "QUIT", 4) == NULL);
        run_free(&w);

        /* The sequence alone, followed by a command: never an end. */
        len = 0;
        in[len++] = 'A';
        memcpy(in + len, m->seq, m->seq_len);
        len += m->seq_len;
        memcpy(in + len, "RCPT TO:<x@y>\r\n", 15);
        len += 15;
        CHECK(check_splits(in, len, 1000, &w) == 0);
        CHECK(w.res == SMTP_DATA_MORE);
        CHECK_EQ_INT(w.consumed, len);
        CHECK(w.r.bare_cr || w.r.bare_lf || w.r.has_nul);
        run_free(&w);
    }
}

/* ---- ordinary messages ---- */

TEST(simple_and_empty)
{
    struct expect e;

    memset(&e, 0, sizeof e);
    e.res = SMTP_DATA_END;
    e.consumed = 3;
    e.out = "";
    CHECK(check_one(S(".\r\n"), 1000, &e) == 0);
    CHECK(check_one(S(".\r\nQUIT\r\n"), 1000, &e) == 0);

    memset(&e, 0, sizeof e);
    e.res = SMTP_DATA_END;
    e.consumed = 10;
    e.out = "Hello\r\n";
    e.out_len = 7;
    e.lines = 1;
    CHECK(check_one(S("Hello\r\n.\r\n"), 1000, &e) == 0);

    /* An empty line before the end is a line of the message. */
    memset(&e, 0, sizeof e);
    e.res = SMTP_DATA_END;
    e.consumed = 5;
    e.out = "\r\n";
    e.out_len = 2;
    e.lines = 1;
    CHECK(check_one(S("\r\n.\r\n"), 1000, &e) == 0);

    memset(&e, 0, sizeof e);
    e.res = SMTP_DATA_END;
    e.consumed = 25;
    e.out = "Subject: t\r\n\r\nbody\r\n\r\n";
    e.out_len = 22;
    e.lines = 4;
    CHECK(check_one(S("Subject: t\r\n\r\nbody\r\n\r\n.\r\n\r\n.\r\n"), 1000,
                    &e) == 0);
}

TEST(pipelined_commands_after_end)
{
    struct expect e;
    memset(&e, 0, sizeof e);
    e.res = SMTP_DATA_END;
    e.consumed = 7;
    e.out = "Hi\r\n";
    e.out_len = 4;
    e.lines = 1;
    CHECK(check_one(S("Hi\r\n.\r\nQUIT\r\n"), 1000, &e) == 0);
    /* A second message after the end is not ours to read. */
    CHECK(check_one(S("Hi\r\n.\r\nMAIL FROM:<a@b>\r\nDATA\r\nx\r\n.\r\n"),
                    1000, &e) == 0);
    /* Garbage, bare LFs, anything after the end: still not read. */
    CHECK(check_one(S("Hi\r\n.\r\n\n.\n\r\0\xff"), 1000, &e) == 0);
}

TEST(dot_unstuffing)
{
    struct expect e;

    memset(&e, 0, sizeof e);
    e.res = SMTP_DATA_END;
    e.consumed = 15;
    e.out = ".foo\r\n..\r\n";
    e.out_len = 10;
    e.lines = 2;
    CHECK(check_one(S("..foo\r\n...\r\n.\r\n"), 1000, &e) == 0);

    memset(&e, 0, sizeof e);
    e.res = SMTP_DATA_END;
    e.consumed = 7;
    e.out = ".\r\n";
    e.out_len = 3;
    e.lines = 1;
    CHECK(check_one(S("..\r\n.\r\n"), 1000, &e) == 0);

    /* Only the first dot of the line, and only at line start. */
    memset(&e, 0, sizeof e);
    e.res = SMTP_DATA_END;
    e.consumed = 19;
    e.out = "a.b\r\nx\r\n. y.\r\n";
    e.out_len = 14;
    e.lines = 3;
    CHECK(check_one(S("a.b\r\n.x\r\n.. y.\r\n.\r\n"), 1000, &e) == 0);

    /* A line that is ". " or ".x" is not the end. */
    memset(&e, 0, sizeof e);
    e.res = SMTP_DATA_END;
    e.consumed = 11;
    e.out = " \r\nx\r\n";
    e.out_len = 6;
    e.lines = 2;
    CHECK(check_one(S(". \r\n.x\r\n.\r\n"), 1000, &e) == 0);

    /* A dot after a bare LF is content: kept. */
    memset(&e, 0, sizeof e);
    e.res = SMTP_DATA_END;
    e.consumed = 9;
    e.out = "a\n.b\r\n";
    e.out_len = 6;
    e.lines = 1;
    e.bare_lf = true;
    CHECK(check_one(S("a\n.b\r\n.\r\n"), 1000, &e) == 0);

    /* A dot after a bare CR is content: kept. */
    memset(&e, 0, sizeof e);
    e.res = SMTP_DATA_END;
    e.consumed = 9;
    e.out = "a\r.b\r\n";
    e.out_len = 6;
    e.lines = 1;
    e.bare_cr = true;
    CHECK(check_one(S("a\r.b\r\n.\r\n"), 1000, &e) == 0);
}

TEST(incomplete_input)
{
    struct expect e;

    /* A trailing "." or ".\r" at line start is held back, not output. */
    memset(&e, 0, sizeof e);
    e.res = SMTP_DATA_MORE;
    e.consumed = 5;
    e.out = "Hi\r\n";
    e.out_len = 4;
    e.lines = 1;
    CHECK(check_one(S("Hi\r\n."), 1000, &e) == 0);
    e.consumed = 6;
    CHECK(check_one(S("Hi\r\n.\r"), 1000, &e) == 0);

    /* A trailing CR is output but not yet bare. */
    memset(&e, 0, sizeof e);
    e.res = SMTP_DATA_MORE;
    e.consumed = 3;
    e.out = "Hi\r";
    e.out_len = 3;
    CHECK(check_one(S("Hi\r"), 1000, &e) == 0);

    memset(&e, 0, sizeof e);
    e.res = SMTP_DATA_MORE;
    e.consumed = 0;
    e.out = "";
    CHECK(check_one("", 0, 1000, &e) == 0);
}

TEST(held_cr_comes_out_later)
{
    struct smtp_data_reader r;
    char out[16];
    size_t out_len, consumed;

    smtp_data_init(&r, 1000);
    CHECK(smtp_data_feed(&r, ".", 1, out, &out_len, &consumed) ==
          SMTP_DATA_MORE);
    CHECK_EQ_INT(out_len, 0);
    CHECK(smtp_data_feed(&r, "\r", 1, out, &out_len, &consumed) ==
          SMTP_DATA_MORE);
    CHECK_EQ_INT(out_len, 0);
    CHECK(!r.bare_cr);
    /* Now the held CR is known to be bare: it comes out with the 'x'. */
    CHECK(smtp_data_feed(&r, "x", 1, out, &out_len, &consumed) ==
          SMTP_DATA_MORE);
    CHECK_EQ_INT(out_len, 2);
    CHECK(memcmp(out, "\rx", 2) == 0);
    CHECK(r.bare_cr);
    CHECK_EQ_INT(r.out_total, 2);
}

TEST(after_end_nothing_more)
{
    struct smtp_data_reader r;
    char out[32];
    size_t out_len = 7, consumed = 7;

    smtp_data_init(&r, 1000);
    CHECK(smtp_data_feed(&r, S("a\r\n.\r\nQUIT\r\n"), out, &out_len,
                         &consumed) == SMTP_DATA_END);
    CHECK_EQ_INT(consumed, 6);
    CHECK(smtp_data_feed(&r, S("QUIT\r\n"), out, &out_len, &consumed) ==
          SMTP_DATA_END);
    CHECK_EQ_INT(consumed, 0);
    CHECK_EQ_INT(out_len, 0);
    CHECK_EQ_INT(r.out_total, 3);
}

/* ---- limits and octet classes ---- */

static char *make_line(size_t text, const char *prefix, const char *suffix,
                       size_t *len_r)
{
    size_t pl = strlen(prefix), sl = strlen(suffix);
    char *p = malloc(pl + text + sl + 1);
    if (p == NULL)
        abort();
    memcpy(p, prefix, pl);
    memset(p + pl, 'x', text);
    memcpy(p + pl + text, suffix, sl);
    *len_r = pl + text + sl;
    return p;
}

static bool long_for(size_t text, const char *prefix, const char *suffix,
                     size_t max_line, int *bad)
{
    size_t len;
    char *in = make_line(text, prefix, suffix, &len);
    struct run w;
    bool l;

    *bad += check_splits(in, len, max_line, &w);
    l = w.r.long_line;
    run_free(&w);
    free(in);
    return l;
}

TEST(long_lines)
{
    int bad = 0;

    /* max 10 including CRLF: 8 octets of text fit, 9 do not. */
    CHECK(!long_for(8, "", "\r\n.\r\n", 10, &bad));
    CHECK(long_for(9, "", "\r\n.\r\n", 10, &bad));
    /* Same as the second line of a message. */
    CHECK(!long_for(8, "ab\r\n", "\r\n.\r\n", 10, &bad));
    CHECK(long_for(9, "ab\r\n", "\r\n.\r\n", 10, &bad));
    /* The stuffing dot does not count (RFC 5321 4.5.3.1.6). */
    CHECK(!long_for(8, "ab\r\n.", "\r\n.\r\n", 10, &bad));
    CHECK(long_for(9, "ab\r\n.", "\r\n.\r\n", 10, &bad));
    /* Known long before its end arrives. */
    CHECK(long_for(11, "", "", 10, &bad));
    CHECK(!long_for(10, "", "", 10, &bad));
    /* A bare LF does not end a line. */
    CHECK(long_for(4, "xxxx\n", "\r\n.\r\n", 10, &bad));
    /* Real sizes. */
    CHECK(!long_for(998, "", "\r\n.\r\n", 1000, &bad));
    CHECK(long_for(999, "", "\r\n.\r\n", 1000, &bad));
    CHECK(!long_for(998, "", "\r\nshort\r\n.\r\n", 1000, &bad));
    CHECK_EQ_INT(bad, 0);
}

TEST(octet_classes)
{
    char in[64];
    size_t pos;
    int bad = 0;

    /* NUL and 8-bit at every position of a line, so word-at-a-time
     * scanning is checked at every alignment and in the tail. */
    for (pos = 0; pos < 40; pos++) {
        struct run w;
        memset(in, 'a', 40);
        memcpy(in + 40, "\r\n.\r\n", 5);
        in[pos] = 0;
        bad += check_splits(in, 45, 1000, &w);
        CHECK(w.res == SMTP_DATA_END);
        CHECK(w.r.has_nul);
        CHECK(!w.r.has_8bit);
        run_free(&w);

        in[pos] = (char)0x80;
        bad += check_splits(in, 45, 1000, &w);
        CHECK(w.r.has_8bit);
        CHECK(!w.r.has_nul);
        run_free(&w);

        in[pos] = (char)0xff;
        bad += check_splits(in, 45, 1000, &w);
        CHECK(w.r.has_8bit);
        CHECK(!w.r.has_nul);
        run_free(&w);

        in[pos] = 0x7f;
        bad += check_splits(in, 45, 1000, &w);
        CHECK(!w.r.has_8bit);
        CHECK(!w.r.has_nul);
        run_free(&w);
    }
    /* Octets after the end do not count. */
    {
        struct run w;
        bad += check_splits(S("a\r\n.\r\n\0\x80"), 1000, &w);
        CHECK(!w.r.has_nul && !w.r.has_8bit);
        run_free(&w);
    }
    {
        struct expect e;
        memset(&e, 0, sizeof e);
        e.res = SMTP_DATA_END;
        e.consumed = 10;
        e.out = "caf\xc3\xa9\r\n";
        e.out_len = 7;
        e.lines = 1;
        e.has_8bit = true;
        CHECK(check_one(S("caf\xc3\xa9\r\n.\r\nX"), 1000, &e) == 0);
    }
    CHECK_EQ_INT(bad, 0);
}

/* ---- random inputs against the reference ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static unsigned rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state >> 32);
}

TEST(random_against_reference)
{
    static const char alphabet[] = {'\r', '\n', '.', 'a', '\0', (char)0xc3,
                                    '\r', '\n', '.', ' '};
    char in[300];
    int iter, bad = 0;

    for (iter = 0; iter < 3000 && bad == 0; iter++) {
        size_t len = rng() % (iter < 2000 ? 24 : 300), k, cuts[8], ncuts;
        size_t max_line = 1 + rng() % 12;
        struct run w, x;
        for (k = 0; k < len; k++)
            in[k] = alphabet[rng() % sizeof alphabet];
        if (len <= 24) {
            bad += check_splits(in, len, max_line, &w);
            run_free(&w);
            continue;
        }
        /* Longer inputs: whole vs reference, 1-byte, and random cuts. */
        {
            struct ref f;
            run_cuts(in, len, max_line, NULL, 0, &w);
            ref_run(in, len, max_line, &f);
            if (!ref_same(&f, &w)) {
                dump("reference mismatch", in, len);
                bad++;
            }
            free(f.out);
        }
        run_chunks(in, len, max_line, 1, &x);
        bad += !run_same(&w, &x);
        run_free(&x);
        ncuts = rng() % 8;
        for (k = 0; k < ncuts; k++)
            cuts[k] = 1 + rng() % (len - 1);
        /* sort the few cuts, drop duplicates */
        for (k = 1; k < ncuts; k++) {
            size_t v = cuts[k], j = k;
            while (j > 0 && cuts[j - 1] > v) {
                cuts[j] = cuts[j - 1];
                j--;
            }
            cuts[j] = v;
        }
        {
            size_t u = 0;
            for (k = 0; k < ncuts; k++)
                if (u == 0 || cuts[u - 1] != cuts[k])
                    cuts[u++] = cuts[k];
            ncuts = u;
        }
        run_cuts(in, len, max_line, cuts, ncuts, &x);
        if (!run_same(&w, &x)) {
            dump("random cuts differ", in, len);
            bad++;
        }
        run_free(&x);
        run_free(&w);
    }
    CHECK_EQ_INT(bad, 0);
}

TEST(large_message)
{
    /* A 1 MB message of 76-octet lines with some stuffed dots. */
    size_t n = 0, cap = 1100000, line = 0;
    char *in = malloc(cap);
    struct run w, x;
    int bad = 0;

    if (in == NULL)
        abort();
    while (n + 100 < cap - 10) {
        if (line % 17 == 0)
            in[n++] = '.';
        memset(in + n, 'm', 74);
        n += 74;
        in[n++] = '\r';
        in[n++] = '\n';
        line++;
    }
    memcpy(in + n, ".\r\n", 3);
    n += 3;
    run_cuts(in, n, 1000, NULL, 0, &w);
    CHECK(w.res == SMTP_DATA_END);
    CHECK_EQ_INT(w.consumed, n);
    CHECK_EQ_INT(w.r.lines, line);
    CHECK_EQ_INT(w.out_len, n - 3 - (line + 16) / 17);
    CHECK(!w.r.long_line && !w.r.bare_cr && !w.r.bare_lf);
    {
        struct ref f;
        ref_run(in, n, 1000, &f);
        bad += !ref_same(&f, &w);
        free(f.out);
    }
    run_chunks(in, n, 1000, 4093, &x);
    bad += !run_same(&w, &x);
    run_free(&x);
    run_chunks(in, n, 1000, 1, &x);
    bad += !run_same(&w, &x);
    run_free(&x);
    run_free(&w);
    free(in);
    CHECK_EQ_INT(bad, 0);
}

int main(void)
{
    RUN(smuggling_sequences_are_content);
    RUN(smuggling_sequences_at_start_and_without_end);
    RUN(simple_and_empty);
    RUN(pipelined_commands_after_end);
    RUN(dot_unstuffing);
    RUN(incomplete_input);
    RUN(held_cr_comes_out_later);
    RUN(after_end_nothing_more);
    RUN(long_lines);
    RUN(octet_classes);
    RUN(random_against_reference);
    RUN(large_message);
    return harness_done("test_smtp_data");
}
