/*
 * Fuzz target for proto/pop3.
 *
 * Input: byte 0 picks the command line limit, byte 1 the split pattern,
 * byte 2 the mode of the stuffing writer (RETR or TOP n); the rest is used
 * twice, as a client's command stream and as a stored message.
 *
 * Checked, abort() on violation:
 *  - line reader: fed whole and in seeded chunks, with the limit switched
 *    to POP3_AUTH_LINE_MAX after an AUTH command as a session does, both
 *    runs give the same results at the same offsets; the contract's rules
 *    on consumed bytes and buffered bytes hold;
 *  - command parser, on each line and on the raw input: rc, error and
 *    reason agree; results point into the line; numbers match their
 *    digits; string arguments hold no control characters (HT and SP only
 *    in PASS), the eightbit flag is right; the keyword matches the verb;
 *  - stuffing writer: fed whole, one byte at a time and in seeded chunks,
 *    same output, same DONE and same consumed count; each call within
 *    2 * len + POP3_STUFF_OUT_SLACK; a slow reference model agrees; TOP
 *    stops just after a line end;
 *  - read back by the SMTP DATA reader (smtp_data.h reads exactly this
 *    format), the RETR output ends exactly at its ".\r\n", holds no bare
 *    CR or LF, and gives back the input with line ends made CRLF and a
 *    final CRLF ensured.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/pop3.h"
#include "proto/smtp_data.h"

#define MAX_INPUT 16384

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* ------------------------------------------------------------------ */
/* commands                                                            */

static char upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

static void check_string(const char *line, size_t len, const char *p,
                         size_t n, bool password, bool eightbit)
{
    bool high = false;
    if (p < line || n > len || p + n > line + len)
        abort();
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c == 0x7f) {
            if (!(password && c == '\t'))
                abort();
        }
        if (c == ' ' && !password)
            abort();
        if (c >= 0x80)
            high = true;
    }
    if (high != eightbit)
        abort();
}

static void check_num(const char *line, size_t len, uint32_t v)
{
    /* the digits of v appear in the line as an argument */
    char buf[16];
    size_t n = 0;
    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n / 2; i++) {
        char t = buf[i];
        buf[i] = buf[n - 1 - i];
        buf[n - 1 - i] = t;
    }
    if (n > len || memmem(line, len, buf, n) == NULL)
        abort();
}

static void parse_check(const char *line, size_t len)
{
    struct pop3_cmd r;
    int rc = pop3_cmd_parse(line, len, &r);
    if (rc != 0 && rc != -1)
        abort();
    if ((unsigned)r.verb >= POP3_CMD__COUNT || r.reason == NULL ||
        strpbrk(r.reason, "\r\n") != NULL || strlen(r.reason) > 80)
        abort();
    if ((rc == 0) != (r.error == POP3_ERR_NONE) ||
        (rc == 0) != (r.reason[0] == '\0'))
        abort();
    if (r.verb_text != line || r.verb_len > len)
        abort();
    if (r.verb == POP3_CMD_UNKNOWN) {
        if (rc != -1 || r.error != POP3_ERR_UNKNOWN)
            abort();
        return;
    }
    const char *name = pop3_verb_name(r.verb);
    if (strlen(name) != r.verb_len)
        abort();
    for (size_t i = 0; i < r.verb_len; i++)
        if (upper(line[i]) != name[i])
            abort();
    if (r.verb_len < len && line[r.verb_len] != ' ' && line[r.verb_len] != '\t')
        abort();
    if (rc != 0)
        return;

    if (r.nnum > 2)
        abort();
    for (unsigned i = 0; i < r.nnum; i++)
        check_num(line, len, r.num[i]);
    switch (r.verb) {
    case POP3_CMD_LIST:
    case POP3_CMD_UIDL:
    case POP3_CMD_RETR:
    case POP3_CMD_DELE:
    case POP3_CMD_TOP:
        if (r.arg || r.arg2)
            abort();
        if (r.nnum >= 1 && r.num[0] == 0)
            abort();
        if ((r.verb == POP3_CMD_RETR || r.verb == POP3_CMD_DELE) && r.nnum != 1)
            abort();
        if (r.verb == POP3_CMD_TOP && r.nnum != 2)
            abort();
        if ((r.verb == POP3_CMD_LIST || r.verb == POP3_CMD_UIDL) && r.nnum > 1)
            abort();
        break;
    case POP3_CMD_USER:
    case POP3_CMD_PASS:
        if (r.nnum || r.arg == NULL || r.arg_len == 0 || r.arg2)
            abort();
        check_string(line, len, r.arg, r.arg_len, r.verb == POP3_CMD_PASS,
                     r.eightbit);
        if (r.verb == POP3_CMD_PASS && r.arg + r.arg_len != line + len)
            abort();   /* the whole rest of the line */
        break;
    case POP3_CMD_APOP:
        if (r.nnum || r.arg == NULL || r.arg2 == NULL || r.arg2_len != 32)
            abort();
        check_string(line, len, r.arg, r.arg_len, false, r.eightbit);
        check_string(line, len, r.arg2, r.arg2_len, false, false);
        break;
    case POP3_CMD_AUTH:
        if (r.nnum || (r.arg2 && !r.arg) || r.eightbit)
            abort();
        if (r.arg) {
            if (r.arg_len < 1 || r.arg_len > 20)
                abort();
            check_string(line, len, r.arg, r.arg_len, false, false);
        }
        if (r.arg2) {
            if (r.arg2_len < 1)
                abort();
            check_string(line, len, r.arg2, r.arg2_len, false, false);
        }
        break;
    default:
        if (r.nnum || r.arg || r.arg2)
            abort();
        break;
    }
}

/* ------------------------------------------------------------------ */
/* line reader                                                         */

struct event {
    enum pop3_line_result r;
    size_t off, len, end;
};

struct run {
    struct event *ev;
    size_t n, cap;
};

static bool is_auth(const char *line, size_t len)
{
    struct pop3_cmd c;
    return pop3_cmd_parse(line, len, &c) == 0 && c.verb == POP3_CMD_AUTH &&
           c.arg != NULL && c.arg2 == NULL;
}

/* The session: a buffer that keeps unconsumed bytes, fed chunk by chunk
 * (seed 0: all at once); the line after "AUTH mech" is read with the AUTH
 * limit, then the command limit again. */
static void read_lines(const uint8_t *data, size_t size, size_t max,
                       uint32_t seed, struct run *run, char *buf)
{
    struct pop3_line_reader lr;
    size_t have = 0, base = 0, pos = 0, cur = max;
    pop3_line_init(&lr, max);
    while (pos < size) {
        size_t chunk = size - pos;
        if (seed != 0) {
            size_t c = 1 + rng_next(&seed) % 41;
            if (c < chunk)
                chunk = c;
        }
        memcpy(buf + have, data + pos, chunk);
        have += chunk;
        pos += chunk;
        for (;;) {
            const char *line;
            size_t line_len, consumed;
            enum pop3_line_result r =
                pop3_line_next(&lr, buf, have, &line, &line_len, &consumed);
            if (consumed > have)
                abort();
            if (r == POP3_LINE_NEED_MORE) {
                if (consumed == 0 && have >= cur)
                    abort();
            } else {
                if (consumed == 0 || run->n == run->cap)
                    abort();
                struct event *e = &run->ev[run->n++];
                e->r = r;
                e->off = r == POP3_LINE_OK ? base : 0;
                e->len = line_len;
                e->end = base + consumed;
                if (r == POP3_LINE_OK) {
                    if (line != buf || line_len >= cur || line_len >= consumed ||
                        memchr(line, '\r', line_len) ||
                        memchr(line, '\0', line_len))
                        abort();
                    size_t next = is_auth(line, line_len) ? POP3_AUTH_LINE_MAX
                                                          : max;
                    if (next != cur) {
                        cur = next;
                        pop3_line_set_max(&lr, cur);
                    }
                } else if (cur != max) {
                    cur = max;
                    pop3_line_set_max(&lr, cur);
                }
            }
            memmove(buf, buf + consumed, have - consumed);
            have -= consumed;
            base += consumed;
            if (r == POP3_LINE_NEED_MORE)
                break;
        }
    }
}

static void fuzz_lines(const uint8_t *data, size_t size, size_t max,
                       uint32_t seed)
{
    char *buf = malloc(size + 1);
    struct run whole = { malloc((size + 1) * sizeof(struct event)), 0, size + 1 };
    struct run split = { malloc((size + 1) * sizeof(struct event)), 0, size + 1 };
    if (buf == NULL || whole.ev == NULL || split.ev == NULL)
        abort();
    read_lines(data, size, max, 0, &whole, buf);
    read_lines(data, size, max, seed | 1u, &split, buf);
    if (whole.n != split.n)
        abort();
    for (size_t i = 0; i < whole.n; i++)
        if (whole.ev[i].r != split.ev[i].r || whole.ev[i].off != split.ev[i].off ||
            whole.ev[i].len != split.ev[i].len || whole.ev[i].end != split.ev[i].end)
            abort();
    for (size_t i = 0; i < whole.n; i++)
        if (whole.ev[i].r == POP3_LINE_OK)
            parse_check((const char *)data + whole.ev[i].off, whole.ev[i].len);
    free(buf);
    free(whole.ev);
    free(split.ev);
}

/* ------------------------------------------------------------------ */
/* stuffing writer                                                     */

#define RETR (-1L)

struct sout {
    char *out;
    size_t out_len, consumed;
    bool done;
};

/* mode 0 whole, 1 byte by byte, 2 seeded chunks. Exact-size buffers so
 * that ASan sees any access beyond the contract. */
static void stuff_run(long top, const char *in, size_t len, int mode,
                      uint32_t seed, struct sout *x)
{
    struct pop3_stuff s;
    size_t pos = 0;
    char in1[1], out1[2 + POP3_STUFF_OUT_SLACK];
    x->out = malloc(2 * len + (len + 1) * POP3_STUFF_OUT_SLACK +
                    POP3_STUFF_FINISH_MAX);
    x->out_len = x->consumed = 0;
    x->done = false;
    if (x->out == NULL)
        abort();
    if (top == RETR)
        pop3_stuff_init(&s);
    else
        pop3_stuff_init_top(&s, (uint32_t)top);
    do {
        size_t n = len - pos, out_len, consumed;
        if (mode == 1 && n > 1)
            n = 1;
        if (mode == 2) {
            size_t c = rng_next(&seed) % 67;   /* empty feeds too */
            if (c < n)
                n = c;
        }
        /* one-byte feeds reuse their buffers: a malloc per byte only
         * fills ASan's quarantine */
        char *ib = mode == 1 && n == 1 ? in1 : malloc(n ? n : 1);
        char *ob = mode == 1 && n == 1 ? out1 : malloc(2 * n + POP3_STUFF_OUT_SLACK);
        if (ib == NULL || ob == NULL)
            abort();
        memcpy(ib, in + pos, n);
        enum pop3_stuff_result res =
            pop3_stuff_feed(&s, ib, n, ob, &out_len, &consumed);
        if (out_len > 2 * n + POP3_STUFF_OUT_SLACK || consumed > n ||
            (res == POP3_STUFF_MORE && consumed != n))
            abort();
        memcpy(x->out + x->out_len, ob, out_len);
        x->out_len += out_len;
        x->consumed += consumed;
        pos += n;
        if (ib != in1)
            free(ib);
        if (ob != out1)
            free(ob);
        if (res == POP3_STUFF_DONE) {
            x->done = true;
            break;
        }
    } while (pos < len);
    char fin[POP3_STUFF_FINISH_MAX];
    size_t f = pop3_stuff_finish(&s, fin);
    if (f < 3 || f > POP3_STUFF_FINISH_MAX)
        abort();
    memcpy(x->out + x->out_len, fin, f);
    x->out_len += f;
    if (s.out_total != x->out_len || pop3_stuff_finish(&s, fin) != 0)
        abort();
}

/* Slow reference: lines end at CRLF, bare LF or bare CR. */
static size_t ref_stuff(long top, const char *in, size_t len, char *out,
                        bool unstuffed)
{
    size_t i = 0, o = 0;
    bool in_body = false, stop = false;
    uint64_t left = top == RETR ? 0 : (uint64_t)top;
    while (i < len && !stop) {
        size_t start = i;
        while (i < len && in[i] != '\r' && in[i] != '\n')
            i++;
        size_t n = i - start;
        if (i < len) {
            if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
                i++;
            i++;
        }
        if (!unstuffed && n > 0 && in[start] == '.')
            out[o++] = '.';
        memcpy(out + o, in + start, n);
        o += n;
        out[o++] = '\r';
        out[o++] = '\n';
        if (top == RETR)
            continue;
        if (!in_body) {
            if (n == 0) {
                in_body = true;
                stop = left == 0;
            }
        } else if (--left == 0) {
            stop = true;
        }
    }
    if (!unstuffed) {
        memcpy(out + o, ".\r\n", 3);
        o += 3;
    }
    return o;
}

static void fuzz_stuff(const char *in, size_t len, long top, uint32_t seed)
{
    struct sout whole, one, chunks;
    char *ref = malloc(3 * len + 8);
    if (ref == NULL)
        abort();

    stuff_run(top, in, len, 0, 0, &whole);
    stuff_run(top, in, len, 1, 0, &one);
    stuff_run(top, in, len, 2, seed | 1u, &chunks);
    const struct sout *runs[2] = { &one, &chunks };
    for (int k = 0; k < 2; k++)
        if (runs[k]->out_len != whole.out_len ||
            memcmp(runs[k]->out, whole.out, whole.out_len) != 0 ||
            runs[k]->done != whole.done || runs[k]->consumed != whole.consumed)
            abort();
    size_t rl = ref_stuff(top, in, len, ref, false);
    if (rl != whole.out_len || memcmp(ref, whole.out, rl) != 0)
        abort();

    if (top == RETR && (whole.done || whole.consumed != len))
        abort();
    if (whole.done) {
        /* stopped just after a line end, never inside a CRLF */
        size_t c = whole.consumed;
        if (c == 0 || (in[c - 1] != '\n' && in[c - 1] != '\r'))
            abort();
        if (in[c - 1] == '\r' && c < len && in[c] == '\n')
            abort();
    } else if (whole.consumed != len) {
        abort();
    }

    /* read back as SMTP DATA */
    struct smtp_data_reader r;
    char *back = malloc(whole.out_len + SMTP_DATA_OUT_SLACK);
    size_t bl, consumed;
    if (back == NULL)
        abort();
    smtp_data_init(&r, SIZE_MAX);
    if (smtp_data_feed(&r, whole.out, whole.out_len, back, &bl, &consumed) !=
            SMTP_DATA_END || consumed != whole.out_len || r.bare_cr || r.bare_lf)
        abort();
    size_t ul = ref_stuff(top, in, len, ref, true);
    if (ul != bl || memcmp(ref, back, bl) != 0)
        abort();
    if (top == RETR) {
        /* without bare CR/LF in the input, the input comes back itself */
        bool crlf_only = true;
        for (size_t i = 0; i < len && crlf_only; i++) {
            if (in[i] == '\r' && !(i + 1 < len && in[i + 1] == '\n'))
                crlf_only = false;
            if (in[i] == '\n' && !(i > 0 && in[i - 1] == '\r'))
                crlf_only = false;
        }
        if (crlf_only) {
            bool ends = len == 0 || (len >= 2 && in[len - 1] == '\n');
            if (bl != len + (ends ? 0 : 2) || memcmp(back, in, len) != 0)
                abort();
        }
    }
    free(back);
    free(ref);
    free(whole.out);
    free(one.out);
    free(chunks.out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3 || size > MAX_INPUT)
        return 0;
    static const size_t maxes[] = { POP3_CMD_LINE_MAX, POP3_CMD_LINE_MAX,
                                    POP3_AUTH_LINE_MAX, 64, 16, 8, 3, 1 };
    size_t max = maxes[data[0] & 7];
    uint32_t seed = (uint32_t)data[1] * 2654435761u + 1u;
    long top = data[2] >= 0xf0 ? RETR
             : data[2] >= 0xe0 ? (long)UINT32_MAX
             : (long)(data[2] % 8);
    const char *in = (const char *)data + 3;
    size -= 3;

    fuzz_lines((const uint8_t *)in, size, max, seed);
    parse_check(in, size < 300 ? size : 300);
    fuzz_stuff(in, size, top, seed);
    return 0;
}
