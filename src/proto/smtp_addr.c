/*
 * smtp_addr: SMTP paths, domains and address literals (RFC 5321 4.1.2,
 * 4.1.3, 4.5.3.1; RFC 6531 for UTF-8). Contract in smtp_cmd.h.
 *
 * The parser refuses whatever the grammar does not allow rather than
 * repairing it, with two tolerances listed in smtp_cmd.h (one SP after the
 * colon; "<Postmaster>"). Relay-shaped addresses (user%other@local,
 * other!user@local, "user@other"@local, source routes) are valid syntax and
 * are returned faithfully, flagged where relevant, so that the resolver can
 * refuse them; the parser itself never guesses which host is meant.
 *
 * Beyond the RFC 6531 grammar, UTF-8 is validated strictly (no overlongs,
 * surrogates or code points above U+10FFFF) and C1 controls (U+0080..U+009F)
 * are refused: they are control characters in every context an address
 * reaches (logs, headers, file names).
 */
#include "proto/smtp_cmd.h"

#include <arpa/inet.h>
#include <string.h>

enum addr_err { AE_OK, AE_SYNTAX, AE_LONG, AE_UTF8 };

#define DOM_UTF8 1u        /* U-labels allowed (SMTPUTF8) */
#define DOM_UNDERSCORE 2u  /* '_' allowed in labels (HELO names in the wild) */

static bool is_alpha(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool ascii_caseeq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ascii_lower(a[i]) != ascii_lower(b[i]))
            return false;
    return true;
}

/* RFC 5322 3.2.3 atext. */
static bool is_atext(unsigned char c)
{
    if (is_alpha(c) || is_digit(c))
        return true;
    return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/*
 * Length of the valid UTF-8 sequence (2..4 octets) starting s[0] >= 0x80,
 * or 0 when it is malformed, overlong, a surrogate, above U+10FFFF, or a C1
 * control.
 */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xbf;   /* bounds of the second octet */

    if (c >= 0xc2 && c <= 0xdf) {
        need = 2;
        if (c == 0xc2)
            lo = 0xa0;                    /* U+0080..U+009F: C1 controls */
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        if (c == 0xe0)
            lo = 0xa0;                    /* overlong */
        else if (c == 0xed)
            hi = 0x9f;                    /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        if (c == 0xf0)
            lo = 0x90;                    /* overlong */
        else if (c == 0xf4)
            hi = 0x8f;                    /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < need || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return need;
}

/*
 * The one rule for a non-ASCII octet s[0] (>= 0x80) of s[0..n) in a domain
 * or local part: AE_UTF8 where UTF-8 is not allowed, AE_SYNTAX for an
 * invalid sequence (utf8_seq), else AE_OK with the sequence's length in
 * *len_r and *utf8_r set.
 */
static enum addr_err utf8_char(const unsigned char *s, size_t n, bool allowed,
                               bool *utf8_r, size_t *len_r)
{
    if (!allowed)
        return AE_UTF8;
    size_t len = utf8_seq(s, n);
    if (len == 0)
        return AE_SYNTAX;
    *utf8_r = true;
    *len_r = len;
    return AE_OK;
}

/*
 * Checks a domain name: labels of letters, digits and hyphens (plus U-labels
 * or '_' by flags), no hyphen at either end of a label, 1..63 octets each,
 * at most SMTP_DOMAIN_MAX in all, no empty label (so no trailing dot).
 * *utf8_r is set when non-ASCII was seen.
 */
static enum addr_err domain_check(const char *s, size_t len, unsigned flags,
                                  bool *utf8_r)
{
    const unsigned char *u = (const unsigned char *)s;
    if (len == 0)
        return AE_SYNTAX;
    if (len > SMTP_DOMAIN_MAX)
        return AE_LONG;
    size_t label_start = 0;
    for (size_t i = 0; i <= len; ) {
        if (i == len || u[i] == '.') {
            size_t llen = i - label_start;
            if (llen == 0 || llen > 63)
                return AE_SYNTAX;
            if (u[label_start] == '-' || u[i - 1] == '-')
                return AE_SYNTAX;
            label_start = i + 1;
            i++;
            continue;
        }
        unsigned char c = u[i];
        if (is_alpha(c) || is_digit(c) || c == '-' ||
            (c == '_' && (flags & DOM_UNDERSCORE))) {
            i++;
        } else if (c >= 0x80) {
            size_t n;
            enum addr_err e = utf8_char(u + i, len - i, (flags & DOM_UTF8) != 0,
                                        utf8_r, &n);
            if (e != AE_OK)
                return e;
            i += n;
        } else {
            return AE_SYNTAX;
        }
    }
    return AE_OK;
}

/* RFC 5321 4.1.3 IPv4-address-literal: Snum 3("." Snum), Snum 0..255. */
static bool ipv4_valid(const char *s, size_t len)
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= len || s[i] != '.')
                return false;
            i++;
        }
        unsigned v = 0;
        size_t digits = 0;
        while (i < len && is_digit((unsigned char)s[i]) && digits < 3) {
            v = v * 10 + (unsigned)(s[i] - '0');
            i++;
            digits++;
        }
        if (digits == 0 || v > 255)
            return false;
    }
    return i == len;
}

/* IPv6-address-literal after its "IPv6:" tag; inet_pton does the grammar
 * once we know the text is short and holds only hex digits, ':' and '.'
 * (so that an embedded NUL cannot hide a tail from it). */
static bool ipv6_valid(const char *s, size_t len)
{
    char buf[INET6_ADDRSTRLEN];
    struct in6_addr a6;
    if (len < 2 || len >= sizeof buf)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
              c == ':' || c == '.'))
            return false;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, &a6) == 1;
}

/* "[1.2.3.4]" or "[IPv6:...]"; General-address-literal ("[tag:...]") is
 * refused: nothing we could deliver to is named that way. */
static bool literal_valid(const char *s, size_t len)
{
    if (len < 2 || s[0] != '[' || s[len - 1] != ']')
        return false;
    s++;
    len -= 2;
    if (len >= 5 && ascii_caseeq(s, "IPv6:", 5))
        return ipv6_valid(s + 5, len - 5);
    return ipv4_valid(s, len);
}

/*
 * Local-part at m[0..mlen) up to its '@' (RFC 5321 4.1.2: Dot-string or
 * Quoted-string). Resolved text goes to a->local; *at_r is the index of '@'.
 */
static enum addr_err local_parse(const char *m, size_t mlen, bool utf8_ok,
                                 struct smtp_addr *a, size_t *at_r)
{
    const unsigned char *u = (const unsigned char *)m;
    size_t o = 0, i;

    if (mlen == 0)
        return AE_SYNTAX;
    if (u[0] == '"') {
        a->quoted = true;
        for (i = 1; ; ) {
            if (i >= mlen)
                return AE_SYNTAX;          /* unterminated */
            unsigned char c = u[i];
            if (c == '"')
                break;
            if (c == '\\') {
                /* quoted-pairSMTP: backslash and one of %d32-126 */
                if (i + 1 >= mlen || u[i + 1] < 32 || u[i + 1] > 126)
                    return AE_SYNTAX;
                c = u[i + 1];
                i += 2;
            } else if (c >= 32 && c <= 126) {
                i++;
            } else if (c >= 0x80) {
                size_t n;
                enum addr_err e = utf8_char(u + i, mlen - i, utf8_ok, &a->utf8,
                                            &n);
                if (e != AE_OK)
                    return e;
                for (size_t k = 0; k < n; k++, o++)
                    if (o < SMTP_LOCAL_MAX)
                        a->local[o] = (char)u[i + k];
                i += n;
                continue;
            } else {
                return AE_SYNTAX;          /* controls, DEL, NUL */
            }
            if (o < SMTP_LOCAL_MAX)
                a->local[o] = (char)c;
            o++;
        }
        i++;                               /* closing quote */
        /* An empty local part names no mailbox, and downstream it would be
         * an empty path component; refuse it though the grammar allows it. */
        if (o == 0)
            return AE_SYNTAX;
        if (i >= mlen || u[i] != '@')
            return AE_SYNTAX;
    } else {
        bool prev_dot = true;              /* no leading dot */
        for (i = 0; i < mlen && u[i] != '@'; ) {
            unsigned char c = u[i];
            if (c == '.') {
                if (prev_dot)
                    return AE_SYNTAX;
                prev_dot = true;
                i++;
            } else if (is_atext(c)) {
                prev_dot = false;
                i++;
            } else if (c >= 0x80) {
                size_t n;
                enum addr_err e = utf8_char(u + i, mlen - i, utf8_ok, &a->utf8,
                                            &n);
                if (e != AE_OK)
                    return e;
                prev_dot = false;
                i += n;
            } else {
                return AE_SYNTAX;
            }
        }
        if (i == 0 || prev_dot || i >= mlen)
            return AE_SYNTAX;              /* empty, trailing dot, no '@' */
        o = i;
        if (o <= SMTP_LOCAL_MAX)
            memcpy(a->local, m, o);
    }
    /* The limit is on the Local-part as it appears on the wire. */
    if (i > SMTP_LOCAL_MAX)
        return AE_LONG;
    a->local[o] = '\0';
    *at_r = i;
    return AE_OK;
}

/* A-d-l = At-domain *( "," At-domain ), At-domain = "@" Domain. */
static enum addr_err route_check(const char *s, size_t len, unsigned dflags)
{
    size_t i = 0;
    bool utf8 = false;
    for (;;) {
        if (i >= len || s[i] != '@')
            return AE_SYNTAX;
        i++;
        const char *comma = memchr(s + i, ',', len - i);
        size_t end = comma != NULL ? (size_t)(comma - s) : len;
        enum addr_err e = domain_check(s + i, end - i, dflags, &utf8);
        if (e != AE_OK)
            return e == AE_LONG ? AE_SYNTAX : e;
        if (comma == NULL)
            return AE_OK;
        i = end + 1;
    }
}

static enum smtp_path_result path_result(enum addr_err e)
{
    switch (e) {
    case AE_OK:     return SMTP_PATH_OK;
    case AE_LONG:   return SMTP_PATH_TOO_LONG;
    case AE_UTF8:   return SMTP_PATH_UTF8;
    case AE_SYNTAX: break;
    }
    return SMTP_PATH_BAD;
}

enum smtp_path_result smtp_path_parse(const char *in, size_t len, unsigned flags,
                                      struct smtp_addr *a_r, size_t *used_r)
{
    memset(a_r, 0, sizeof *a_r);
    *used_r = 0;
    if (len == 0 || in[0] != '<')
        return SMTP_PATH_SYNTAX;

    /* Find the closing '>', stepping over quoted strings, whose content may
     * hold '>'. A quote in a place the grammar does not allow fails later. */
    size_t end = 1;
    bool inq = false;
    for (; end < len; end++) {
        char c = in[end];
        if (inq) {
            if (c == '\\' && end + 1 < len)
                end++;
            else if (c == '"')
                inq = false;
        } else if (c == '"') {
            inq = true;
        } else if (c == '>') {
            break;
        }
    }
    if (end >= len)
        return SMTP_PATH_SYNTAX;
    if (end + 1 > SMTP_PATH_MAX)
        return SMTP_PATH_TOO_LONG;
    *used_r = end + 1;

    const char *p = in + 1;
    size_t plen = end - 1;
    unsigned dflags = (flags & SMTP_PATH_ALLOW_UTF8) ? DOM_UTF8 : 0;
    bool utf8_ok = (flags & SMTP_PATH_ALLOW_UTF8) != 0;

    if (plen == 0) {
        if (!(flags & SMTP_PATH_ALLOW_NULL))
            return SMTP_PATH_BAD;
        a_r->null = true;
        return SMTP_PATH_OK;
    }
    if ((flags & SMTP_PATH_ALLOW_POSTMASTER) && plen == 10 &&
        ascii_caseeq(p, "postmaster", 10)) {
        a_r->postmaster = true;
        memcpy(a_r->local, "postmaster", sizeof "postmaster");
        return SMTP_PATH_OK;
    }

    if (p[0] == '@') {
        /* Domains hold no ':', so the first one ends the route. */
        const char *colon = memchr(p, ':', plen);
        if (colon == NULL)
            return SMTP_PATH_BAD;
        size_t rlen = (size_t)(colon - p);
        enum addr_err e = route_check(p, rlen, dflags);
        if (e != AE_OK)
            return path_result(e);
        a_r->source_route = true;
        p += rlen + 1;
        plen -= rlen + 1;
    }

    size_t at;
    enum addr_err e = local_parse(p, plen, utf8_ok, a_r, &at);
    if (e != AE_OK)
        return path_result(e);

    const char *d = p + at + 1;
    size_t dlen = plen - at - 1;
    if (dlen == 0)
        return SMTP_PATH_BAD;
    if (d[0] == '[') {
        if (!literal_valid(d, dlen))
            return SMTP_PATH_BAD;
        a_r->domain_literal = true;
    } else {
        bool utf8 = false;
        e = domain_check(d, dlen, dflags, &utf8);
        if (e != AE_OK)
            return path_result(e);
        if (utf8)
            a_r->utf8 = true;
    }
    if (dlen > SMTP_DOMAIN_MAX)
        return SMTP_PATH_TOO_LONG;
    memcpy(a_r->domain, d, dlen);
    a_r->domain[dlen] = '\0';
    return SMTP_PATH_OK;
}

/* Dot-string test for re-quoting; bytes >= 0x80 count as atext because
 * they were validated as UTF-8 when the address was parsed. */
static bool dot_string(const char *s, size_t n)
{
    bool prev_dot = true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (prev_dot)
                return false;
            prev_dot = true;
        } else if (is_atext(c) || c >= 0x80) {
            prev_dot = false;
        } else {
            return false;
        }
    }
    return n > 0 && !prev_dot;
}

struct outbuf {
    char *p;
    size_t cap, len;
    bool overflow;
};

static void out_put(struct outbuf *o, char c)
{
    if (o->len + 1 < o->cap)
        o->p[o->len++] = c;
    else
        o->overflow = true;
}

long smtp_addr_format(const struct smtp_addr *a, char *out, size_t out_cap)
{
    struct outbuf o = { out, out_cap, 0, false };
    if (out_cap == 0)
        return -1;
    out[0] = '\0';
    if (a->null)
        return 0;
    const char *local = a->postmaster ? "postmaster" : a->local;
    size_t llen = strnlen(local, SMTP_LOCAL_MAX + 1);
    size_t dlen = a->postmaster ? 0 : strnlen(a->domain, SMTP_DOMAIN_MAX + 1);
    if (llen > SMTP_LOCAL_MAX || dlen > SMTP_DOMAIN_MAX)
        return -1;
    /* Never produce text that could break a header or a log line, even from
     * a struct that did not come from the parser. */
    for (size_t i = 0; i < llen; i++)
        if ((unsigned char)local[i] < 0x20 || local[i] == 0x7f)
            return -1;
    for (size_t i = 0; i < dlen; i++)
        if ((unsigned char)a->domain[i] <= 0x20 || a->domain[i] == 0x7f)
            return -1;

    if (dot_string(local, llen)) {
        for (size_t i = 0; i < llen; i++)
            out_put(&o, local[i]);
    } else {
        out_put(&o, '"');
        for (size_t i = 0; i < llen; i++) {
            if (local[i] == '"' || local[i] == '\\')
                out_put(&o, '\\');
            out_put(&o, local[i]);
        }
        out_put(&o, '"');
    }
    if (dlen > 0) {
        out_put(&o, '@');
        for (size_t i = 0; i < dlen; i++)
            out_put(&o, a->domain[i]);
    }
    if (o.overflow) {
        out[0] = '\0';
        return -1;
    }
    out[o.len] = '\0';
    return (long)o.len;
}

bool smtp_helo_valid(const char *arg, size_t len)
{
    bool utf8 = false;
    if (arg == NULL || len == 0)
        return false;
    if (arg[0] == '[')
        return literal_valid(arg, len);
    if (ipv4_valid(arg, len))
        return true;
    return domain_check(arg, len, DOM_UNDERSCORE, &utf8) == AE_OK;
}
