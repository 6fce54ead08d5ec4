/*
 * smtp_data: the DATA reader. See smtp_data.h for the contract.
 *
 * The state machine has five live states. Only two facts about the past
 * matter: whether we are at the beginning of a line (just after CRLF, or at
 * the start), and whether the previous octet was a CR. A dot at the
 * beginning of a line is never output (it is either the first octet of the
 * terminator or a stuffing dot), so it is never held back; the only octet
 * ever held back across calls is a CR that follows such a dot, because it
 * may still turn out to be part of ".\r\n". Everywhere else a CR is output
 * at once and the state just remembers it.
 *
 * Why "beginning of a line" means only "after CRLF": the smuggling attacks
 * (security.md 2) all rely on a receiver that takes some other line end as
 * the start of the terminator line. Here a bare LF or a bare CR is plain
 * content; the flags make the session reject the message at the real end.
 *
 * Text is taken in runs: everything up to the next dot at the beginning of
 * a line (or the end of the input) is copied at once, its CRs and LFs found
 * 16 octets at a time on the way (line lengths, line count, bare CR/LF);
 * CRLF is copied as it is. Each octet is looked at a bounded number of
 * times, so any input (all bare LFs, no CR at all) is read in linear time.
 * NUL and 8-bit octets are looked for once per call over what was
 * consumed: stuffing dots, CR, LF and the terminator are neither, so that
 * is exactly the message's octets. The DATA reader is on the event loop's
 * path for every body octet (doc/performance.md "The DATA reader").
 */
#include "proto/smtp_data.h"

#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

enum {
    S_BOL,     /* at the beginning of a line, nothing pending */
    S_DOT,     /* beginning of a line, '.' seen (dropped) */
    S_DOT_CR,  /* beginning of a line, ".\r" seen; the CR is held back */
    S_TEXT,    /* inside a line, previous octet not a CR */
    S_CR,      /* inside a line, previous octet was a CR (already output) */
    S_DONE,    /* the terminator was seen */
};

void smtp_data_init(struct smtp_data_reader *r, size_t max_line)
{
    memset(r, 0, sizeof *r);
    r->state = S_BOL;
    r->max_line = max_line;
}

static void line_add(struct smtp_data_reader *r, size_t n)
{
    /* Saturate: a line this long is flagged anyway; the count must not wrap. */
    r->line_len = r->line_len > SIZE_MAX - n ? SIZE_MAX : r->line_len + n;
    if (r->line_len > r->max_line)
        r->long_line = true;
}

/*
 * NUL and 8-bit detection over p[0..n): the "has a zero byte" test and the
 * high bits, accumulated and tested once (16 octets a step with SSE2, 8
 * without).
 */
static void scan_octets(struct smtp_data_reader *r, const unsigned char *p,
                        size_t n)
{
    size_t i = 0;
    unsigned zero = 0, high = 0;

    if (r->has_nul && r->has_8bit)
        return;
#if defined(__SSE2__)
    __m128i z = _mm_setzero_si128(), h = _mm_setzero_si128();
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
        z = _mm_or_si128(z, _mm_cmpeq_epi8(v, _mm_setzero_si128()));
        h = _mm_or_si128(h, v);
    }
    zero = (unsigned)_mm_movemask_epi8(z);
    high = (unsigned)_mm_movemask_epi8(h);
#else
    const uint64_t ones = 0x0101010101010101ULL;
    const uint64_t highs = 0x8080808080808080ULL;
    uint64_t wz = 0, wh = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, sizeof w);
        wz |= (w - ones) & ~w & highs;
        wh |= w & highs;
    }
    zero = wz != 0;
    high = wh != 0;
#endif
    for (; i < n; i++) {
        zero |= p[i] == 0;
        high |= p[i] & 0x80u;
    }
    if (zero)
        r->has_nul = true;
    if (high)
        r->has_8bit = true;
}

/* The position of the first CR or LF in p[i..len), or len. */
static size_t find_cr_lf(const char *p, size_t i, size_t len)
{
#if defined(__SSE2__)
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
    for (; i + 16 <= len; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)));
        if (m != 0)
            return i + (size_t)__builtin_ctz(m);
    }
#else
    const uint64_t ones = 0x0101010101010101ULL;
    const uint64_t highs = 0x8080808080808080ULL;
    for (; i + 8 <= len; i += 8) {
        uint64_t w, a, b;
        memcpy(&w, p + i, sizeof w);
        a = w ^ (ones * '\r');
        b = w ^ (ones * '\n');
        if ((((a - ones) & ~a) | ((b - ones) & ~b)) & highs)
            break; /* one is in these 8: the loop below finds it */
    }
#endif
    for (; i < len; i++)
        if (p[i] == '\r' || p[i] == '\n')
            return i;
    return len;
}

enum smtp_data_result smtp_data_feed(struct smtp_data_reader *r,
                                     const char *in, size_t len,
                                     char *out, size_t *out_len_r,
                                     size_t *consumed_r)
{
    size_t i = 0, o = 0;
    enum smtp_data_result res = SMTP_DATA_MORE;

    if (r->state == S_DONE) {
        *out_len_r = 0;
        *consumed_r = 0;
        return SMTP_DATA_END;
    }

    while (i < len) {
        switch (r->state) {
        case S_BOL:
            if (in[i] == '.') {
                i++;
                r->state = S_DOT;
            } else {
                r->state = S_TEXT;
            }
            break;

        case S_DOT:
            if (in[i] == '\r') {
                i++;
                r->state = S_DOT_CR;
            } else {
                /* Stuffing dot (or a dot before a bare LF: rejected anyway). */
                r->state = S_TEXT;
            }
            break;

        case S_DOT_CR:
            if (in[i] == '\n') {
                i++;
                r->state = S_DONE;
                res = SMTP_DATA_END;
                goto out;
            }
            /* ".\r" then not LF: the CR is a bare CR inside the message. */
            out[o++] = '\r';
            line_add(r, 1);
            r->bare_cr = true;
            r->state = S_TEXT;
            break;

        case S_CR:
            if (in[i] == '\n') {
                out[o++] = '\n';
                i++;
                line_add(r, 1);
                r->lines++;
                r->line_len = 0;
                r->state = S_BOL;
            } else {
                r->bare_cr = true;
                r->state = S_TEXT;
            }
            break;

        case S_TEXT: {
            /* A run up to the next dot at the beginning of a line, or the
             * end of the input. A bare LF or bare CR is content and does
             * not end the line: only CRLF does. */
            size_t start = i;
            for (;;) {
                size_t at = find_cr_lf(in, i, len);
                line_add(r, at - i);
                i = at;
                if (i == len)
                    break;
                if (in[i] == '\n') {
                    r->bare_lf = true;
                    line_add(r, 1);
                    i++;
                    continue;
                }
                if (i + 1 == len) { /* a CR last: LF or not is still unknown */
                    line_add(r, 1);
                    i++;
                    r->state = S_CR;
                    break;
                }
                if (in[i + 1] != '\n') {
                    r->bare_cr = true;
                    line_add(r, 1);
                    i++;
                    continue;
                }
                line_add(r, 2);
                r->lines++;
                r->line_len = 0;
                i += 2;
                if (i == len || in[i] == '.') {
                    r->state = S_BOL;
                    break;
                }
            }
            memcpy(out + o, in + start, i - start);
            o += i - start;
            break;
        }

        default: /* S_DONE cannot be reached inside the loop */
            goto out;
        }
    }
out:
    scan_octets(r, (const unsigned char *)in, i);
    r->out_total += o;
    *out_len_r = o;
    *consumed_r = i;
    return res;
}
