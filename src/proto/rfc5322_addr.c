/*
 * rfc5322_addr: address-list parsing. See rfc5322_addr.h for the contract.
 *
 * Two layers. The lexer turns the value into tokens (atoms, quoted
 * strings, domain literals, the specials of RFC 5322 3.2.3) and swallows
 * CFWS, remembering only whether some preceded a token (`gap`): that is
 * all the parser needs to know that an addr-spec is one slice of the
 * input. The lexer is where unterminated quotes, comments and literals
 * and the comment depth are found, so those are the fatal errors.
 *
 * The parser reads one list element at a time with one token of
 * lookahead and never backs up: a phrase is collected without knowing yet
 * whether it is a display name, a group name or a local part, and the
 * token after it decides. A bad element is skipped token by token to its
 * end. Every token is read once, so time is linear in the input; state is
 * a few words, so nothing is allocated.
 */
#include "proto/rfc5322_addr.h"

#include <stdbool.h>
#include <string.h>

enum tok_type {
    T_EOF,
    T_ATOM,   /* 1*atext, 8-bit octets included (RFC 6532) */
    T_QSTR,   /* "..." with its quotes */
    T_DLIT,   /* [...] with its brackets */
    T_DOT,
    T_LT,
    T_GT,
    T_COLON,
    T_SEMI,
    T_AT,
    T_COMMA,
    T_BAD,    /* one octet that starts no token: ) ] \ controls */
};

struct tok {
    enum tok_type type;
    size_t start, end;   /* the token is value[start..end) */
    bool gap;            /* CFWS came before it */
    bool clean;          /* QSTR: no control but SP; DLIT: no SP/control */
};

struct parser {
    const char *p;
    size_t len, pos;
    struct tok t;        /* the lookahead */
    rfc5322_addr_fn cb;
    void *arg;
    long count;
    size_t bad;
};

enum { R_FATAL = -1, R_BAD = 0, R_ADDR, R_GROUP };

static bool is_atext(unsigned char c)
{
    if (c >= 0x80)
        return true;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static bool is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* At '(': skips the comment with the ones nested in it. */
static int skip_comment(struct parser *ps)
{
    unsigned depth = 0;

    while (ps->pos < ps->len) {
        char c = ps->p[ps->pos];
        if (c == '(') {
            if (++depth > RFC5322_ADDR_COMMENT_DEPTH)
                return -1;
        } else if (c == ')') {
            if (--depth == 0) {
                ps->pos++;
                return 0;
            }
        } else if (c == '\\') {
            if (ps->len - ps->pos < 2)
                return -1;
            ps->pos++;
        }
        ps->pos++;
    }
    return -1;
}

/* At the opening '"' or '[': scans to the closing `close`. */
static int scan_quoted(struct parser *ps, char close, bool sp_ok)
{
    ps->t.clean = true;
    ps->pos++;
    while (ps->pos < ps->len) {
        unsigned char c = (unsigned char)ps->p[ps->pos];
        if (c == (unsigned char)close) {
            ps->pos++;
            return 0;
        }
        if (c == '\\') {
            if (ps->len - ps->pos < 2)
                return -1;
            ps->pos++;
            c = (unsigned char)ps->p[ps->pos];
        } else if (close == ']' && c == '[') {
            ps->t.clean = false;
        }
        if (is_ctl(c) || (c == ' ' && !sp_ok))
            ps->t.clean = false;
        ps->pos++;
    }
    return -1;
}

/* Reads the next token into ps->t; -1 on a fatal error. */
static int lex_next(struct parser *ps)
{
    struct tok *t = &ps->t;
    unsigned char c;

    t->gap = false;
    t->clean = true;
    while (ps->pos < ps->len) {
        c = (unsigned char)ps->p[ps->pos];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            ps->pos++;
        } else if (c == '(') {
            if (skip_comment(ps) < 0)
                return -1;
        } else {
            break;
        }
        t->gap = true;
    }
    t->start = ps->pos;
    if (ps->pos >= ps->len) {
        t->type = T_EOF;
        t->end = ps->pos;
        return 0;
    }
    c = (unsigned char)ps->p[ps->pos];
    if (is_atext(c)) {
        do
            ps->pos++;
        while (ps->pos < ps->len &&
               is_atext((unsigned char)ps->p[ps->pos]));
        t->type = T_ATOM;
    } else if (c == '"') {
        if (scan_quoted(ps, '"', true) < 0)
            return -1;
        t->type = T_QSTR;
    } else if (c == '[') {
        if (scan_quoted(ps, ']', false) < 0)
            return -1;
        t->type = T_DLIT;
    } else {
        switch (c) {
        case '.': t->type = T_DOT; break;
        case '<': t->type = T_LT; break;
        case '>': t->type = T_GT; break;
        case ':': t->type = T_COLON; break;
        case ';': t->type = T_SEMI; break;
        case '@': t->type = T_AT; break;
        case ',': t->type = T_COMMA; break;
        default: t->type = T_BAD; break;
        }
        ps->pos++;
    }
    t->end = ps->pos;
    return 0;
}

#define NEXT(ps)                                                           \
    do {                                                                   \
        if (lex_next(ps) < 0)                                              \
            return R_FATAL;                                                \
    } while (0)

static bool is_word(enum tok_type type)
{
    return type == T_ATOM || type == T_QSTR || type == T_DOT;
}

/* A domain starting at the lookahead: atoms and single dots with nothing
 * between them, or a clean domain literal. *end_r: where it ends. */
static int parse_domain(struct parser *ps, size_t *end_r)
{
    if (ps->t.type == T_DLIT) {
        if (!ps->t.clean)
            return R_BAD;
        *end_r = ps->t.end;
        NEXT(ps);
        return R_ADDR;
    }
    if (ps->t.type != T_ATOM)
        return R_BAD;
    *end_r = ps->t.end;
    NEXT(ps);
    while (ps->t.type == T_DOT && !ps->t.gap) {
        NEXT(ps);
        if (ps->t.type != T_ATOM || ps->t.gap)
            return R_BAD;
        *end_r = ps->t.end;
        NEXT(ps);
    }
    return R_ADDR;
}

/* local-part "@" domain starting at the lookahead (CFWS before it is
 * fine, none inside). */
static int parse_addr_spec(struct parser *ps, size_t *start_r, size_t *end_r)
{
    if (!is_word(ps->t.type))
        return R_BAD;
    *start_r = ps->t.start;
    do {
        if (ps->t.type == T_QSTR && !ps->t.clean)
            return R_BAD;
        NEXT(ps);
    } while (is_word(ps->t.type) && !ps->t.gap);
    if (ps->t.type != T_AT || ps->t.gap)
        return R_BAD;
    NEXT(ps);
    if (ps->t.gap)
        return R_BAD;
    return parse_domain(ps, end_r);
}

/*
 * One list element starting at the lookahead (not ',', ';' or the end):
 * R_ADDR with the address in [*start_r, *end_r) and the lookahead just
 * after it, R_GROUP after a group's ':', R_BAD with the lookahead at the
 * offending token and *in_angle_r telling whether it is inside "<...>",
 * or R_FATAL.
 */
static int parse_element(struct parser *ps, bool in_group, size_t *start_r,
                         size_t *end_r, bool *in_angle_r)
{
    size_t first = ps->t.start, words = 0, dummy;
    bool contiguous = true, clean = true;
    int r;

    *in_angle_r = false;
    /* A phrase: display name, group name or local part, we'll see. */
    while (is_word(ps->t.type)) {
        if (words > 0 && ps->t.gap)
            contiguous = false;
        if (ps->t.type == T_QSTR && !ps->t.clean)
            clean = false;
        words++;
        NEXT(ps);
    }
    if (ps->t.type == T_AT) {
        if (words == 0 || !contiguous || !clean || ps->t.gap)
            return R_BAD;
        NEXT(ps);
        if (ps->t.gap)
            return R_BAD;
        r = parse_domain(ps, end_r);
        if (r != R_ADDR)
            return r;
        *start_r = first;
        if (ps->t.type != T_LT)
            return R_ADDR;
        /* "a@b.test <a@b.test>": taken as a display name. */
    }
    if (ps->t.type == T_LT) {
        *in_angle_r = true;
        NEXT(ps);
        if (ps->t.type == T_AT || ps->t.type == T_COMMA) {
            /* obs-route (RFC 5322 4.4): "@a,@b:" before the addr-spec,
             * read and dropped. */
            for (;;) {
                if (ps->t.type == T_COMMA) {
                    NEXT(ps);
                } else if (ps->t.type == T_AT) {
                    NEXT(ps);
                    r = parse_domain(ps, &dummy);
                    if (r != R_ADDR)
                        return r;
                } else {
                    break;
                }
            }
            if (ps->t.type != T_COLON)
                return R_BAD;
            NEXT(ps);
        }
        r = parse_addr_spec(ps, start_r, end_r);
        if (r != R_ADDR)
            return r;
        if (ps->t.type != T_GT)
            return R_BAD;
        *in_angle_r = false;
        NEXT(ps);
        return R_ADDR;
    }
    if (ps->t.type == T_COLON && words > 0 && !in_group) {
        NEXT(ps);
        return R_GROUP;
    }
    return R_BAD;
}

/* Skips the rest of a bad element, leaving the lookahead at the ',' (or
 * the group's ';') that ends it, or at the end. Inside "<...>" a ',' is
 * part of the element (a source route, or the error). */
static int skip_element(struct parser *ps, bool in_group, bool in_angle)
{
    for (;;) {
        switch (ps->t.type) {
        case T_EOF:
            return in_angle ? R_FATAL : R_BAD;
        case T_LT:
            in_angle = true;
            break;
        case T_GT:
            in_angle = false;
            break;
        case T_COMMA:
            if (!in_angle)
                return R_BAD;
            break;
        case T_SEMI:
            if (!in_angle && in_group)
                return R_BAD;
            break;
        default:
            break;
        }
        NEXT(ps);
    }
}

static int parse_list(struct parser *ps)
{
    bool in_group = false, in_angle;
    size_t start = 0, end = 0;
    int r;

    NEXT(ps);
    for (;;) {
        switch (ps->t.type) {
        case T_EOF:
            if (in_group)
                ps->bad++;
            return 0;
        case T_COMMA:
            NEXT(ps);
            continue;
        case T_SEMI:
            NEXT(ps);
            if (!in_group) {
                ps->bad++;
                if (skip_element(ps, false, false) == R_FATAL)
                    return R_FATAL;
                continue;
            }
            in_group = false;
            /* group = display-name ":" [group-list] ";" [CFWS] */
            if (ps->t.type != T_COMMA && ps->t.type != T_EOF) {
                ps->bad++;
                if (skip_element(ps, false, false) == R_FATAL)
                    return R_FATAL;
            }
            continue;
        default:
            break;
        }
        r = parse_element(ps, in_group, &start, &end, &in_angle);
        if (r == R_FATAL)
            return R_FATAL;
        if (r == R_GROUP) {
            in_group = true;
            continue;
        }
        if (r == R_ADDR &&
            (ps->t.type == T_COMMA || ps->t.type == T_EOF ||
             (ps->t.type == T_SEMI && in_group))) {
            if (end - start > RFC5322_ADDR_MAX)
                return R_FATAL;
            if (ps->cb != NULL)
                ps->cb(ps->p + start, end - start, ps->arg);
            ps->count++;
            continue;
        }
        /* Bad, or an address followed by something else. */
        ps->bad++;
        if (skip_element(ps, in_group, in_angle) == R_FATAL)
            return R_FATAL;
    }
}

long rfc5322_addr_list_ex(const char *value, size_t len, rfc5322_addr_fn cb,
                          void *arg, size_t *bad_r)
{
    struct parser ps;
    int r;

    memset(&ps, 0, sizeof ps);
    ps.p = value;
    ps.len = value != NULL ? len : 0;
    ps.cb = cb;
    ps.arg = arg;
    r = parse_list(&ps);
    if (bad_r != NULL)
        *bad_r = ps.bad;
    return r == R_FATAL ? -1 : ps.count;
}

long rfc5322_addr_list(const char *value, size_t len, rfc5322_addr_fn cb,
                       void *arg)
{
    return rfc5322_addr_list_ex(value, len, cb, arg, NULL);
}
