/*
 * smtp_param: MAIL FROM / RCPT TO arguments and their ESMTP parameters
 * (RFC 5321 4.1.1.2-3, 4.1.2; RFC 1870 SIZE; RFC 6152 / 3030 BODY;
 * RFC 6531 SMTPUTF8; RFC 3461 DSN and xtext; RFC 4954 AUTH=). Contract in
 * smtp_cmd.h.
 *
 * Order of checks for each parameter, so that the reply names the first
 * real problem: parameters at all without EHLO (555), esmtp-keyword /
 * esmtp-value syntax (501), unknown keyword (555), extension not offered
 * (555), repeated keyword (501), the value's meaning (501; SIZE above the
 * maximum 552). Parameters are handled left to right.
 *
 * ENVID, ORCPT and AUTH are kept as received (xtext) once they are proven
 * to decode to printable US-ASCII: that form cannot carry CR, LF or NUL into
 * the queue (Exim CVE-2020-28026) and is what a relay must pass on.
 */
#include "proto/smtp_cmd.h"

#include <string.h>

static const struct smtp_status
    st_mail_syntax = {501, "5.5.2", "Syntax: MAIL FROM:<address> [parameters]"},
    st_rcpt_syntax = {501, "5.5.2", "Syntax: RCPT TO:<address> [parameters]"},
    st_bad_sender = {501, "5.1.7", "Bad sender address syntax"},
    st_bad_rcpt = {501, "5.1.3", "Bad recipient address syntax"},
    st_long_sender = {553, "5.1.7", "Sender address too long"},
    st_long_rcpt = {553, "5.1.3", "Recipient address too long"},
    st_utf8 = {553, "5.6.7", "Non-ASCII address requires SMTPUTF8"},
    st_no_esmtp = {555, "5.5.4", "Parameters are only allowed after EHLO"},
    st_unsupported = {555, "5.5.4", "Unsupported parameter"},
    st_param_syntax = {501, "5.5.4", "Bad parameter syntax"},
    st_dup = {501, "5.5.4", "Parameter given twice"},
    st_bad_size = {501, "5.5.4", "Bad SIZE value"},
    st_too_big = {552, "5.3.4", "Message size exceeds fixed maximum message size"},
    st_bad_body = {501, "5.5.4", "Bad BODY value"},
    st_bad_smtputf8 = {501, "5.5.4", "SMTPUTF8 takes no value"},
    st_bad_ret = {501, "5.5.4", "Bad RET value"},
    st_bad_envid = {501, "5.5.4", "Bad ENVID value"},
    st_bad_auth = {501, "5.5.4", "Bad AUTH value"},
    st_bad_notify = {501, "5.5.4", "Bad NOTIFY value"},
    st_bad_orcpt = {501, "5.5.4", "Bad ORCPT value"};

static char ascii_upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

/* s[0..n) equals the upper-case word w, ignoring case. */
static bool word_eq(const char *s, size_t n, const char *w)
{
    size_t wl = strlen(w);
    if (n != wl)
        return false;
    for (size_t i = 0; i < n; i++)
        if (ascii_upper(s[i]) != w[i])
            return false;
    return true;
}

static bool is_alnum(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9');
}

static int hex_upper(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long smtp_xtext_decode(const char *in, size_t len, char *out, size_t out_cap)
{
    const unsigned char *u = (const unsigned char *)in;
    size_t o = 0;
    for (size_t i = 0; i < len; ) {
        unsigned v;
        if (u[i] == '+') {
            if (len - i < 3)
                return -1;
            int h = hex_upper(u[i + 1]), l = hex_upper(u[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            v = (unsigned)(h * 16 + l);
            i += 3;
        } else if (u[i] >= 33 && u[i] <= 126 && u[i] != '=') {
            v = u[i];
            i++;
        } else {
            return -1;
        }
        if (v < 0x20 || v > 0x7e)
            return -1;
        if (out != NULL) {
            if (o + 1 >= out_cap)
                return -1;
            out[o] = (char)v;
        }
        o++;
    }
    if (out != NULL) {
        if (out_cap == 0)
            return -1;
        out[o] = '\0';
    }
    return (long)o;
}

/* Validates xtext of 1..max octets as received and copies it into
 * dst[max + 1]. */
static bool xtext_store(const char *v, size_t n, char *dst, size_t max)
{
    if (n == 0 || n > max || smtp_xtext_decode(v, n, NULL, 0) < 0)
        return false;
    memcpy(dst, v, n);
    dst[n] = '\0';
    return true;
}

enum kw {
    KW_SIZE, KW_BODY, KW_SMTPUTF8, KW_RET, KW_ENVID, KW_AUTH,  /* MAIL */
    KW_NOTIFY, KW_ORCPT,                                        /* RCPT */
    KW__COUNT
};

static const char *const kw_names[KW__COUNT] = {
    [KW_SIZE] = "SIZE", [KW_BODY] = "BODY", [KW_SMTPUTF8] = "SMTPUTF8",
    [KW_RET] = "RET", [KW_ENVID] = "ENVID", [KW_AUTH] = "AUTH",
    [KW_NOTIFY] = "NOTIFY", [KW_ORCPT] = "ORCPT",
};

struct param {
    enum kw kw;
    const char *val;      /* NULL when there was no '=' */
    size_t val_len;
};

/*
 * Takes the next parameter from *p (parameters are separated by SP; extra
 * SP is tolerated). Returns NULL with *pm filled, NULL with *done_r at the
 * end, or a reply. first_kw..last_kw are the keywords this command knows.
 */
static const struct smtp_status *param_next(const char **p, const char *end,
                                            const struct smtp_parse_opts *opts,
                                            enum kw first_kw, enum kw last_kw,
                                            unsigned *seen, struct param *pm,
                                            bool *done_r)
{
    const char *s = *p;
    while (s < end && *s == ' ')
        s++;
    *done_r = s == end;
    if (*done_r)
        return NULL;
    if (!opts->esmtp)
        return &st_no_esmtp;

    const char *tok = s;
    while (s < end && *s != ' ')
        s++;
    *p = s;
    size_t tlen = (size_t)(s - tok);
    const char *eq = memchr(tok, '=', tlen);
    size_t klen = eq != NULL ? (size_t)(eq - tok) : tlen;

    /* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
    if (klen == 0 || !is_alnum((unsigned char)tok[0]))
        return &st_param_syntax;
    for (size_t i = 1; i < klen; i++)
        if (!is_alnum((unsigned char)tok[i]) && tok[i] != '-')
            return &st_param_syntax;
    /* esmtp-value = 1*(%d33-60 / %d62-126): no '=', no controls, no 8-bit
     * (RFC 6531 would allow UTF-8 here, but no value we know takes it) */
    const char *val = eq != NULL ? eq + 1 : NULL;
    size_t val_len = eq != NULL ? tlen - klen - 1 : 0;
    if (val != NULL && val_len == 0)
        return &st_param_syntax;
    for (size_t i = 0; i < val_len; i++) {
        unsigned char c = (unsigned char)val[i];
        if (c < 33 || c > 126 || c == '=')
            return &st_param_syntax;
    }

    int kw = -1;
    for (int k = (int)first_kw; k <= (int)last_kw; k++)
        if (word_eq(tok, klen, kw_names[k]))
            kw = k;
    if (kw < 0)
        return &st_unsupported;

    bool offered = true;
    switch ((enum kw)kw) {
    case KW_SMTPUTF8: offered = opts->smtputf8; break;
    case KW_RET: case KW_ENVID: case KW_NOTIFY: case KW_ORCPT:
        offered = opts->dsn;
        break;
    case KW_SIZE: case KW_BODY: case KW_AUTH: case KW__COUNT: break;
    }
    if (!offered)
        return &st_unsupported;
    if (*seen & (1u << kw))
        return &st_dup;
    *seen |= 1u << kw;

    pm->kw = (enum kw)kw;
    pm->val = val;
    pm->val_len = val_len;
    return NULL;
}

/* SIZE=1*20DIGIT; NULL if good, else the reply. */
static const struct smtp_status *size_value(const struct param *pm,
                                            const struct smtp_parse_opts *opts,
                                            uint64_t *size_r)
{
    uint64_t v = 0;
    if (pm->val == NULL || pm->val_len > 20)
        return &st_bad_size;
    for (size_t i = 0; i < pm->val_len; i++) {
        unsigned char c = (unsigned char)pm->val[i];
        if (c < '0' || c > '9')
            return &st_bad_size;
        if (__builtin_mul_overflow(v, 10u, &v) ||
            __builtin_add_overflow(v, (uint64_t)(c - '0'), &v))
            return &st_bad_size;
    }
    if (opts->max_size != 0 && v > opts->max_size)
        return &st_too_big;
    *size_r = v;
    return NULL;
}

/* NOTIFY=NEVER or a comma list of SUCCESS, FAILURE, DELAY (RFC 3461 4.1). */
static bool notify_value(const char *v, size_t n, unsigned *bits_r)
{
    unsigned bits = 0;
    size_t i = 0;
    if (v == NULL)
        return false;
    for (;;) {
        size_t start = i;
        while (i < n && v[i] != ',')
            i++;
        unsigned b;
        if (word_eq(v + start, i - start, "NEVER"))
            b = SMTP_NOTIFY_NEVER;
        else if (word_eq(v + start, i - start, "SUCCESS"))
            b = SMTP_NOTIFY_SUCCESS;
        else if (word_eq(v + start, i - start, "FAILURE"))
            b = SMTP_NOTIFY_FAILURE;
        else if (word_eq(v + start, i - start, "DELAY"))
            b = SMTP_NOTIFY_DELAY;
        else
            return false;
        if (bits & b)
            return false;
        bits |= b;
        if (i == n)
            break;
        i++;                               /* the comma; "A," fails above */
    }
    if ((bits & SMTP_NOTIFY_NEVER) && bits != SMTP_NOTIFY_NEVER)
        return false;
    *bits_r = bits;
    return true;
}

/* ORCPT=addr-type ";" xtext; addr-type is an RFC 822 atom (no specials). */
static bool orcpt_value(const char *v, size_t n, char *dst)
{
    if (v == NULL || n > SMTP_ORCPT_MAX)
        return false;
    const char *semi = memchr(v, ';', n);
    if (semi == NULL || semi == v)
        return false;
    for (const char *c = v; c < semi; c++)
        if (strchr("()<>@,;:\\\".[]", *c) != NULL)
            return false;                  /* value syntax already excluded
                                              controls, SP, '=' and NUL */
    size_t tlen = n - (size_t)(semi - v) - 1;
    if (tlen == 0 || smtp_xtext_decode(semi + 1, tlen, NULL, 0) < 0)
        return false;
    memcpy(dst, v, n);
    dst[n] = '\0';
    return true;
}

/*
 * Common front of MAIL and RCPT: "FROM:" / "TO:" (any case), at most one
 * SP, the path. Leaves *rest_r and *rest_len_r at what follows the path, which
 * is empty or starts with SP.
 */
static const struct smtp_status *
parse_path_arg(const char *arg, size_t len, bool is_mail, unsigned flags,
               struct smtp_addr *a, const char **rest_r, size_t *rest_len_r)
{
    const char *word = is_mail ? "FROM:" : "TO:";
    size_t wl = strlen(word);
    const struct smtp_status *syntax = is_mail ? &st_mail_syntax : &st_rcpt_syntax;

    if (arg == NULL)
        len = 0;
    /* "MAIL  FROM:" (doubled space after the verb) is harmless: skip it. */
    while (len > 0 && *arg == ' ') {
        arg++;
        len--;
    }
    while (len > 0 && (arg[len - 1] == ' ' || arg[len - 1] == '\t'))
        len--;
    if (len < wl || !word_eq(arg, wl, word))
        return syntax;
    arg += wl;
    len -= wl;
    if (len > 0 && *arg == ' ') {
        arg++;
        len--;
    }

    size_t used;
    switch (smtp_path_parse(arg, len, flags, a, &used)) {
    case SMTP_PATH_OK:
        break;
    case SMTP_PATH_SYNTAX:
        return syntax;
    case SMTP_PATH_BAD:
        return is_mail ? &st_bad_sender : &st_bad_rcpt;
    case SMTP_PATH_TOO_LONG:
        return is_mail ? &st_long_sender : &st_long_rcpt;
    case SMTP_PATH_UTF8:
        return &st_utf8;
    }
    if (used < len && arg[used] != ' ')
        return syntax;
    *rest_r = arg + used;
    *rest_len_r = len - used;
    return NULL;
}

/* The meaning of one parameter for one command: NULL, or the reply. */
typedef const struct smtp_status *(*param_apply_fn)(
    const struct param *pm, const struct smtp_parse_opts *opts, void *r);

/*
 * MAIL and RCPT alike: the path (parse_path_arg; SMTP_PATH_ALLOW_UTF8 is
 * added to flags when SMTPUTF8 is offered), then each parameter in turn,
 * checked by param_next against first_kw..last_kw and handed to apply.
 * The first reply wins; NULL when the whole argument is good.
 */
static const struct smtp_status *
parse_cmd_arg(const char *arg, size_t len, const struct smtp_parse_opts *opts,
              bool is_mail, unsigned flags, struct smtp_addr *a,
              enum kw first_kw, enum kw last_kw, param_apply_fn apply, void *r)
{
    const char *rest;
    size_t rest_len;
    unsigned seen = 0;

    flags |= opts->smtputf8 ? SMTP_PATH_ALLOW_UTF8 : 0;
    const struct smtp_status *st =
        parse_path_arg(arg, len, is_mail, flags, a, &rest, &rest_len);
    if (st != NULL)
        return st;

    const char *end = rest + rest_len;
    for (;;) {
        struct param pm;
        bool done;
        st = param_next(&rest, end, opts, first_kw, last_kw, &seen, &pm, &done);
        if (st != NULL || done)
            return st;
        st = apply(&pm, opts, r);
        if (st != NULL)
            return st;
    }
}

static const struct smtp_status *mail_param(const struct param *pm,
                                            const struct smtp_parse_opts *opts,
                                            void *arg)
{
    struct smtp_mail_args *r = arg;
    const struct smtp_status *st;
    switch (pm->kw) {
    case KW_SIZE:
        st = size_value(pm, opts, &r->size);
        if (st != NULL)
            return st;
        r->size_given = true;
        break;
    case KW_BODY:
        if (pm->val == NULL)
            return &st_bad_body;
        if (word_eq(pm->val, pm->val_len, "7BIT"))
            r->body = SMTP_BODY_7BIT;
        else if (word_eq(pm->val, pm->val_len, "8BITMIME"))
            r->body = SMTP_BODY_8BITMIME;
        else if (word_eq(pm->val, pm->val_len, "BINARYMIME")) {
            if (!opts->binarymime)
                return &st_unsupported;
            r->body = SMTP_BODY_BINARYMIME;
        } else
            return &st_bad_body;
        break;
    case KW_SMTPUTF8:
        if (pm->val != NULL)
            return &st_bad_smtputf8;
        r->smtputf8 = true;
        break;
    case KW_RET:
        if (pm->val != NULL && word_eq(pm->val, pm->val_len, "FULL"))
            r->ret = SMTP_RET_FULL;
        else if (pm->val != NULL && word_eq(pm->val, pm->val_len, "HDRS"))
            r->ret = SMTP_RET_HDRS;
        else
            return &st_bad_ret;
        break;
    case KW_ENVID:
        if (pm->val == NULL ||
            !xtext_store(pm->val, pm->val_len, r->envid, SMTP_ENVID_MAX))
            return &st_bad_envid;
        break;
    case KW_AUTH:
        /* "<>" is itself valid xtext, so one check covers both forms. */
        if (pm->val == NULL ||
            !xtext_store(pm->val, pm->val_len, r->auth, SMTP_AUTH_PARAM_MAX))
            return &st_bad_auth;
        break;
    case KW_NOTIFY: case KW_ORCPT: case KW__COUNT:
        return &st_unsupported;        /* not reachable: not in range */
    }
    return NULL;
}

const struct smtp_status *smtp_parse_mail(const char *arg, size_t len,
                                          const struct smtp_parse_opts *opts,
                                          struct smtp_mail_args *r)
{
    memset(r, 0, sizeof *r);
    const struct smtp_status *st =
        parse_cmd_arg(arg, len, opts, true, SMTP_PATH_ALLOW_NULL, &r->from,
                      KW_SIZE, KW_AUTH, mail_param, r);
    if (st != NULL)
        return st;
    /* RFC 6531 3.4: a non-ASCII address needs SMTPUTF8 on this MAIL. */
    if (r->from.utf8 && !r->smtputf8)
        return &st_utf8;
    return NULL;
}

static const struct smtp_status *rcpt_param(const struct param *pm,
                                            const struct smtp_parse_opts *opts,
                                            void *arg)
{
    struct smtp_rcpt_args *r = arg;
    (void)opts;
    switch (pm->kw) {
    case KW_NOTIFY:
        if (!notify_value(pm->val, pm->val_len, &r->notify))
            return &st_bad_notify;
        break;
    case KW_ORCPT:
        if (!orcpt_value(pm->val, pm->val_len, r->orcpt))
            return &st_bad_orcpt;
        break;
    case KW_SIZE: case KW_BODY: case KW_SMTPUTF8: case KW_RET:
    case KW_ENVID: case KW_AUTH: case KW__COUNT:
        return &st_unsupported;        /* not reachable: not in range */
    }
    return NULL;
}

const struct smtp_status *smtp_parse_rcpt(const char *arg, size_t len,
                                          const struct smtp_parse_opts *opts,
                                          struct smtp_rcpt_args *r)
{
    memset(r, 0, sizeof *r);
    return parse_cmd_arg(arg, len, opts, false, SMTP_PATH_ALLOW_POSTMASTER,
                         &r->to, KW_NOTIFY, KW_ORCPT, rcpt_param, r);
}
