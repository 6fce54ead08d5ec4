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
 * Text runs are found with memchr for CR and LF. The positions found are
 * kept for the rest of the call, so input full of bare LFs (or with no CR
 * at all) is still scanned in linear time.
 */
#include "proto/smtp_data.h"

#include <string.h>

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
 * NUL and 8-bit detection over a text run, a word at a time: the classic
 * "has a zero byte" test and the high bits, accumulated and tested once.
 */
static void scan_octets(struct smtp_data_reader *r, const unsigned char *p,
                        size_t n)
{
    const uint64_t ones = 0x0101010101010101ULL;
    const uint64_t highs = 0x8080808080808080ULL;
    uint64_t zero = 0, high = 0;
    size_t i = 0;

    if (r->has_nul && r->has_8bit)
        return;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, sizeof w);
        zero |= (w - ones) & ~w & highs;
        high |= w & highs;
    }
    for (; i < n; i++) {
        if (p[i] == 0)
            zero = 1;
        high |= p[i] & 0x80u;
    }
    if (zero)
        r->has_nul = true;
    if (high)
        r->has_8bit = true;
}

enum smtp_data_result smtp_data_feed(struct smtp_data_reader *r,
                                     const char *in, size_t len,
                                     char *out, size_t *out_len_r,
                                     size_t *consumed_r)
{
    size_t i = 0, o = 0;
    /* Next CR / LF at or after i (len if none); valid while >= i. */
    size_t cr_at = 0, lf_at = 0;
    bool cr_known = false, lf_known = false;
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
            size_t stop, n;
            if (!cr_known || cr_at < i) {
                const char *q = memchr(in + i, '\r', len - i);
                cr_at = q ? (size_t)(q - in) : len;
                cr_known = true;
            }
            if (!lf_known || lf_at < i) {
                const char *q = memchr(in + i, '\n', len - i);
                lf_at = q ? (size_t)(q - in) : len;
                lf_known = true;
            }
            stop = cr_at < lf_at ? cr_at : lf_at;
            n = stop - i;
            if (n > 0) {
                memcpy(out + o, in + i, n);
                scan_octets(r, (const unsigned char *)in + i, n);
                line_add(r, n);
                o += n;
                i = stop;
            }
            if (i == len)
                break;
            /* in[i] is CR or LF. A bare LF is content and does not end the
             * line: only CRLF does. */
            out[o++] = in[i];
            line_add(r, 1);
            if (in[i] == '\r')
                r->state = S_CR;
            else
                r->bare_lf = true;
            i++;
            break;
        }

        default: /* S_DONE cannot be reached inside the loop */
            goto out;
        }
    }
out:
    r->out_total += o;
    *out_len_r = o;
    *consumed_r = i;
    return res;
}
