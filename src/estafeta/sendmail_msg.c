/*
 * sendmail_msg.c: the recipients, the message's header section and the
 * From: line of `estafeta sendmail` (sendmail_msg.h).
 */
#include "estafeta/sendmail_msg.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/xalloc.h"
#include "proto/rfc5322_addr.h"

/* ------------------------------------------------------------ addresses */

/* Validates one address (already without display name and angle brackets,
 * trimmed): no control character, no space or '<' '>' outside a quoted
 * local part, qualified with the primary domain when it has no '@'.
 * Returns the malloc'd address or NULL with *why_r set. */
char *sm_addr_clean(const char *a, size_t len, const char *domain,
                    size_t path_max, const char **why_r)
{
    if (len == 0) {
        *why_r = "empty address";
        return NULL;
    }
    bool inq = false, inlit = false, at = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c < 0x20 || c == 0x7f) {
            *why_r = "control character in address";
            return NULL;
        }
        if (inq) {
            if (c == '\\' && i + 1 < len)
                i++;
            else if (c == '"')
                inq = false;
            continue;
        }
        if (inlit) {                /* a domain literal: "[IPv6:::1]" */
            if (c == ']')
                inlit = false;
            else if (c == '[' || c == '\\' || c == ' ')
                return *why_r = "bad domain literal", NULL;
            continue;
        }
        if (c == '"') {
            inq = true;
        } else if (c == '[' && at) {
            inlit = true;
        } else if (c == '@') {
            at = true;
        } else if (strchr(" <>,():;[]\\", c) != NULL) {
            /* a group, a comment or a list: not one address */
            *why_r = "not a single address";
            return NULL;
        }
    }
    if (inlit) {
        *why_r = "unterminated domain literal";
        return NULL;
    }
    if (inq) {
        *why_r = "unterminated quoted string in address";
        return NULL;
    }
    size_t total = len, n;
    if (!at && !size_add(total, 1 + strlen(domain), &total))
        abort();
    if (!size_add(total, 2, &n) || n > path_max) {
        *why_r = "address too long";
        return NULL;
    }
    char *out = xmalloc(total + 1);
    if (at)
        snprintf(out, total + 1, "%.*s", (int)len, a);
    else
        snprintf(out, total + 1, "%.*s@%s", (int)len, a, domain);
    return out;
}

static void rcpts_add(struct rcpts *r, const char *a, size_t len)
{
    if (r->err != NULL)
        return;
    const char *why;
    char *addr = sm_addr_clean(a, len, r->domain, r->path_max, &why);
    if (addr == NULL) {
        r->err = why;
        r->err_addr = xstrndup(a, len);
        return;
    }
    r->v = xreallocarray(r->v, r->n + 1, sizeof(*r->v));
    r->v[r->n++] = addr;
}

struct rcpt_ref {
    const char *s;
    size_t i;
};

static int rcpt_ref_cmp(const void *a, const void *b)
{
    const struct rcpt_ref *x = a, *y = b;
    int c = strcmp(x->s, y->s);
    return c != 0 ? c : (x->i > y->i) - (x->i < y->i);
}

/* Drops repeated addresses (the first stays, order kept) in n log n, then
 * enforces smtp-recipients. 0, or -1 with r->err set. */
int sm_rcpts_finish(struct rcpts *r)
{
    if (r->n > 1) {
        struct rcpt_ref *refs = xreallocarray(NULL, r->n, sizeof(*refs));
        for (size_t i = 0; i < r->n; i++)
            refs[i] = (struct rcpt_ref){r->v[i], i};
        qsort(refs, r->n, sizeof(*refs), rcpt_ref_cmp);
        /* mark first, free after: equal neighbours are compared again */
        for (size_t i = r->n - 1; i > 0; i--)
            if (strcmp(refs[i].s, refs[i - 1].s) == 0)
                r->v[refs[i].i] = NULL;
        for (size_t i = 1; i < r->n; i++)
            if (r->v[refs[i].i] == NULL)
                free((char *)refs[i].s);
        free(refs);
        size_t k = 0;
        for (size_t i = 0; i < r->n; i++)
            if (r->v[i] != NULL)
                r->v[k++] = r->v[i];
        r->n = k;
    }
    if (r->n > r->max) {
        r->err = "more recipients than smtp-recipients allows";
        r->err_addr = xstrdup(r->v[r->max]);
        return -1;
    }
    return 0;
}

void sm_rcpts_free(struct rcpts *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i]);
    free(r->v);
    free(r->err_addr);
}

static void rcpt_cb(const char *addr, size_t len, void *arg)
{
    rcpts_add(arg, addr, len);
}

bool sm_is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* Steps over s[*i] when it belongs to a quoted string: an opening or
 * closing quote, or a character or a \-escape inside one (*i then past
 * the escape); true then. *inq carries the state from call to call. */
static bool quote_step(const char *s, size_t len, size_t *i, bool *inq)
{
    if (*inq) {
        if (s[*i] == '\\' && *i + 1 < len)
            (*i)++;
        else if (s[*i] == '"')
            *inq = false;
        return true;
    }
    if (s[*i] == '"') {
        *inq = true;
        return true;
    }
    return false;
}

/* One command-line element: "addr", "<addr>" or "Name <addr>". */
static void arg_element(struct rcpts *r, const char *s, size_t len)
{
    while (len > 0 && sm_is_wsp(s[0]))
        s++, len--;
    while (len > 0 && sm_is_wsp(s[len - 1]))
        len--;
    if (len == 0)
        return;     /* "a@b," : empty list elements are ignored */
    bool inq = false;
    for (size_t i = 0; i < len; i++) {
        if (quote_step(s, len, &i, &inq)) {
            continue;
        } else if (s[i] == '<') {
            const char *end = memchr(s + i, '>', len - i);
            if (end == NULL || (size_t)(end - s) != len - 1) {
                r->err = "unbalanced '<' in address";
                r->err_addr = xstrndup(s, len);
                return;
            }
            s += i + 1;
            len = (size_t)(end - s);
            break;
        }
    }
    rcpts_add(r, s, len);
}

/* A recipient argument: a comma-separated list (commas inside quotes or
 * angle brackets do not separate). */
void sm_arg_list(struct rcpts *r, const char *s)
{
    size_t start = 0, i, len = strlen(s);
    bool inq = false, angle = false;
    for (i = 0; i < len; i++) {
        if (quote_step(s, len, &i, &inq)) {
            continue;
        } else if (s[i] == '<') {
            angle = true;
        } else if (s[i] == '>') {
            angle = false;
        } else if (s[i] == ',' && !angle) {
            arg_element(r, s + start, i - start);
            start = i + 1;
        }
    }
    arg_element(r, s + start, i - start);
}

/* ------------------------------------------------------------ input */

void sm_norm_feed(struct norm *n, const char *in, size_t len, char *out,
                  size_t *out_len_r)
{
    size_t o = 0;
    for (size_t i = 0; i < len && !n->ended; i++) {
        char c = in[i];
        if (n->dot) {
            n->dot = false;
            if (c == '\n' || c == '\r') {
                n->ended = true;
                break;
            }
            out[o++] = '.';
            n->bol = false;
        }
        if (n->cr) {
            n->cr = false;
            out[o++] = '\r';
            out[o++] = '\n';
            n->bol = true;
            if (c == '\n')
                continue;
        }
        if (c == '\r') {
            n->cr = true;
        } else if (c == '\n') {
            out[o++] = '\r';
            out[o++] = '\n';
            n->bol = true;
        } else if (c == '.' && n->bol && !n->dots_ok) {
            n->dot = true;
            n->bol = false;
        } else {
            out[o++] = c;
            n->bol = false;
        }
    }
    *out_len_r = o;
}

void sm_norm_finish(struct norm *n, char *out, size_t *out_len_r)
{
    size_t o = 0;
    if (n->dot) {           /* "." then end of input: the lone dot line */
        n->dot = false;
        n->ended = true;
    } else if (n->cr || !n->bol) {
        out[o++] = '\r';
        out[o++] = '\n';
        n->cr = false;
        n->bol = true;
    }
    *out_len_r = o;
}

/* read() until n bytes or end of input; -1 on error. */
ssize_t sm_read_some(int fd, char *p, size_t n)
{
    for (;;) {
        ssize_t r = read(fd, p, n);
        if (r >= 0 || errno != EINTR)
            return r;
    }
}

ssize_t sm_read_normalized(struct norm *n, char *in, char *out, size_t *out_len_r)
{
    ssize_t r = sm_read_some(0, in, SM_CHUNK);
    if (r < 0)
        return -1;
    if (r == 0)
        sm_norm_finish(n, out, out_len_r);
    else
        sm_norm_feed(n, in, (size_t)r, out, out_len_r);
    return r;
}


/* A field line: a name of printable ASCII but ':', optional WSP, ':'. */
static bool is_field_line(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && s[i] > ' ' && s[i] < 0x7f && s[i] != ':')
        i++;
    if (i == 0)
        return false;
    while (i < len && sm_is_wsp(s[i]))
        i++;
    return i < len && s[i] == ':';
}

static void head_scan(struct head *h)
{
    const char *d = h->pre.data;
    while (!h->done && h->pos < h->pre.len) {
        const char *lf = memchr(d + h->pos, '\n', h->pre.len - h->pos);
        if (lf == NULL)
            return;
        size_t start = h->pos, next = (size_t)(lf - d) + 1;
        size_t llen = next - start;
        if (start == 0 && llen >= 5 && memcmp(d, "From ", 5) == 0 &&
            !is_field_line(d, llen)) {
            /* an mbox "From " line some programs write first */
            h->skip = h->pos = next;
            continue;
        }
        if (llen == 2) {                    /* the empty line */
            h->end = start;
            h->done = true;
        } else if (sm_is_wsp(d[start]) && h->any_field) {
            h->pos = next;
        } else if (is_field_line(d + start, llen)) {
            h->any_field = true;
            h->pos = next;
        } else {                            /* body text without a separator */
            h->end = start;
            h->need_blank = true;
            h->done = true;
        }
    }
}

/* Reads standard input until the header section is complete (or input
 * ends, or it exceeds hmax). 0, or -1 on a read error (errno). */
int sm_head_read(struct head *h, struct norm *n, size_t hmax)
{
    size_t cap;
    if (!size_add(hmax, 2 * SM_CHUNK + 16, &cap))
        abort();
    buf_init(&h->pre, cap);
    char *in = xmalloc(SM_CHUNK), *out = xmalloc(2 * SM_CHUNK + 8);
    int rc = 0;
    while (!h->done) {
        if (h->pre.len > hmax) {
            h->too_big = true;
            break;
        }
        size_t olen;
        ssize_t r = sm_read_normalized(n, in, out, &olen);
        if (r < 0) {
            rc = -1;
            break;
        }
        if (buf_append(&h->pre, out, olen) < 0)
            abort();    /* cannot happen: pre.len <= hmax before, cap above */
        head_scan(h);
        if (r == 0 || n->ended) {
            h->eof = true;
            break;
        }
    }
    if (rc == 0 && !h->done && !h->too_big) {
        /* only header lines until the end (every line is complete now) */
        h->end = h->pre.len;
        h->done = true;
    }
    if (h->too_big)
        h->end = h->skip;
    free(in);
    free(out);
    return rc;
}

static bool name_is(const char *s, size_t len, const char *name)
{
    return strlen(name) == len && strncasecmp(s, name, len) == 0;
}


/* The addresses of one To/Cc/Bcc value (unfolded, NUL-terminated) into
 * tmp: the RFC 5322 parser first; if it skipped an element, the simple
 * command-line parser, which also takes unqualified names ("To: root", as
 * scripts write them). NULL, or why neither could read every address. */
static const char *field_addrs(struct rcpts *tmp, const char *v, size_t len)
{
    size_t bad = 0;
    long n = rfc5322_addr_list_ex(v, len, rcpt_cb, tmp, &bad);
    if (n >= 0 && bad == 0 && tmp->err == NULL)
        return NULL;
    for (size_t i = 0; i < tmp->n; i++)
        free(tmp->v[i]);
    free(tmp->err_addr);
    tmp->n = 0;
    tmp->err = NULL;
    tmp->err_addr = NULL;
    if (memchr(v, '\0', len) != NULL)
        return "NUL in the field";
    sm_arg_list(tmp, v);
    return tmp->err;
}

/* Looks at every field in [skip, end): From: present?, and for -t the
 * recipients of To:, Cc:, Bcc: (added to r). */
void sm_head_fields(const struct head *h, struct rcpts *r, bool extract,
                    struct head_info *info_r)
{
    memset(info_r, 0, sizeof(*info_r));
    if (h->too_big)
        return;
    const char *d = h->pre.data;
    struct buf val;
    buf_init(&val, h->end + 1);
    size_t pos = h->skip;
    while (pos < h->end && r->err == NULL && info_r->bad_field == NULL) {
        /* one field: its first line and the continuation lines */
        size_t fstart = pos;
        do {
            const char *lf = memchr(d + pos, '\n', h->end - pos);
            pos = lf != NULL ? (size_t)(lf - d) + 1 : h->end;
        } while (pos < h->end && sm_is_wsp(d[pos]));
        const char *colon = memchr(d + fstart, ':', pos - fstart);
        if (colon == NULL)
            continue;
        size_t nlen = (size_t)(colon - (d + fstart));
        while (nlen > 0 && sm_is_wsp(d[fstart + nlen - 1]))
            nlen--;
        const char *name = d + fstart;
        if (name_is(name, nlen, "from")) {
            info_r->has_from = true;
            continue;
        }
        const char *which = name_is(name, nlen, "to") ? "To"
                            : name_is(name, nlen, "cc") ? "Cc"
                            : name_is(name, nlen, "bcc") ? "Bcc" : NULL;
        if (!extract || which == NULL)
            continue;
        /* unfold: drop every CR and LF (only CRLF WSP occurs inside) */
        buf_reset(&val);
        for (const char *p = colon + 1; p < d + pos; p++)
            if (*p != '\r' && *p != '\n')
                buf_putc(&val, *p);
        struct rcpts tmp = {.path_max = r->path_max, .domain = r->domain};
        const char *why = field_addrs(&tmp, buf_cstr(&val), val.len);
        if (why != NULL) {
            info_r->bad_field = which;
            info_r->bad_why = why;
        }
        for (size_t i = 0; why == NULL && i < tmp.n; i++)
            rcpts_add(r, tmp.v[i], strlen(tmp.v[i]));
        sm_rcpts_free(&tmp);
    }
    buf_free(&val);
}

/* ------------------------------------------------------------ From: line */

static bool is_atext_or_space(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == ' ' ||
           strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static void b64_append(struct buf *b, const unsigned char *p, size_t n)
{
    static const char t[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        buf_putc(b, t[(v >> 18) & 63]);
        buf_putc(b, t[(v >> 12) & 63]);
        buf_putc(b, i + 1 < n ? t[(v >> 6) & 63] : '=');
        buf_putc(b, i + 2 < n ? t[v & 63] : '=');
    }
}

/* "From: NAME <addr>\r\n": the name as an atom phrase, a quoted string, or
 * RFC 2047 encoded words (8-bit text), folded between encoded words.
 * NULL on success, else why the name is refused. */
const char *sm_from_line(struct buf *out, const char *name,
                         const char *addr)
{
    size_t len = strlen(name);
    bool plain = true, ascii = true;
    if (len > SM_FULLNAME_MAX)
        return "full name longer than 256 octets";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f)
            return "control character in full name";
        if (c >= 0x80)
            ascii = false;
        if (!is_atext_or_space(c))
            plain = false;
    }
    buf_appends(out, "From: ");
    if (len == 0) {
        buf_appendf(out, "<%s>\r\n", addr);
        return NULL;
    }
    if (plain && name[0] != ' ' && name[len - 1] != ' ') {
        buf_appends(out, name);
    } else if (ascii) {
        buf_putc(out, '"');
        for (size_t i = 0; i < len; i++) {
            if (name[i] == '"' || name[i] == '\\')
                buf_putc(out, '\\');
            buf_putc(out, name[i]);
        }
        buf_putc(out, '"');
    } else {
        /* words of at most 45 octets (60 base64 characters: each encoded
         * word stays within 75, RFC 2047 2), never splitting a UTF-8
         * sequence */
        size_t i = 0;
        while (i < len) {
            size_t n = len - i < 45 ? len - i : 45;
            while (n > 1 && i + n < len &&
                   ((unsigned char)name[i + n] & 0xc0) == 0x80)
                n--;
            if (i > 0)
                buf_appends(out, "\r\n ");
            buf_appends(out, "=?UTF-8?B?");
            b64_append(out, (const unsigned char *)name + i, n);
            buf_appends(out, "?=");
            i += n;
        }
    }
    buf_appendf(out, " <%s>\r\n", addr);
    return NULL;
}
