/*
 * cmd_sendmail.c: `estafeta sendmail` and `mailq` (sendmail.h,
 * estafeta-sendmail(8)).
 *
 * An SMTP client of the server's local UNIX socket, nothing more: the
 * server does every check and every fix-up (Date:, Message-ID:, Bcc:
 * removal); this side only turns what a local program writes (LF line
 * ends, a lone "." line, recipients on the command line or in To:/Cc:/Bcc:)
 * into an SMTP transaction, and turns the server's verdict into an exit
 * status. It never needs privileges: the configuration is parsed with
 * config_parse() (config_load() would read the users file, which an
 * ordinary user cannot), and the socket lives in data-dir/public/.
 *
 * Memory: only the header section is held (capped by header-section, needed
 * for -t and -F); the body is streamed to the socket in 64 KiB pieces.
 *
 * All or nothing: if the server refuses any recipient, the transaction is
 * abandoned, so the caller's exit status covers the whole message (there is
 * no local queue to bounce from).
 *
 * SECURITY: addresses and the full name come from the caller and end up in
 * SMTP commands and a header line: control characters (CR, LF, NUL) are
 * refused, never passed on. No argument reaches a shell.
 */
#include "estafeta/sendmail.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sysexits.h>
#include <unistd.h>

#include "conf/config.h"
#include "estafeta/serve.h"
#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/xalloc.h"
#include "proto/rfc5322_addr.h"

#define SM "estafeta sendmail"
#define SM_CHUNK ((size_t)64 * 1024)
/* RFC 5321 4.5.3.2: 5 minutes for command replies, 10 for the final one */
#define SM_TIMEOUT_CMD_MS (300 * 1000)
#define SM_TIMEOUT_FINAL_MS (600 * 1000)
#define SM_REPLY_LINE_MAX 1024      /* longer reply lines are cut (RFC: 512) */
#define SM_REPLY_LINES_MAX 100
#define SM_REPLY_TEXT_MAX 8192
#define SM_FULLNAME_MAX 256

static void sm_usage(FILE *f)
{
    fprintf(f,
            "usage: estafeta sendmail [-t] [-i] [-f sender] [-F name] "
            "[-C file] [-v] [--] [recipient ...]\n"
            "       estafeta sendmail -bs | -bp\n"
            "       mailq\n"
            "\n"
            "Reads a message from standard input and hands it to the running\n"
            "estafeta server over its local socket. See estafeta-sendmail(8).\n");
}

__attribute__((format(printf, 1, 2)))
static void sm_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(SM ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ------------------------------------------------------------ options */

enum sm_mode { MODE_DELIVER, MODE_SMTP, MODE_LIST };

struct sm_opts {
    const char *config_path;
    const char *data_dir;
    const char *sender;         /* -f/-r as given, NULL = default */
    const char *fullname;       /* -F, NULL = none */
    bool extract;               /* -t */
    bool dots_ok;               /* -i / -oi */
    bool verbose;               /* -v */
    enum sm_mode mode;
    char **rcpt_args;           /* owned array of pointers into argv */
    size_t nrcpt_args;
};

/* -oX: the sendmail options programs pass. Returns false if unknown. */
static bool sm_o_option(struct sm_opts *o, const char *v)
{
    switch (v[0]) {
    case 'i':
        if (v[1] != '\0')
            return false;
        o->dots_ok = true;
        return true;
    case 'm': case '7': case '8':
        return v[1] == '\0';
    case 'e':   /* error mode: errors always go to stderr and the exit status */
        return v[1] != '\0' && strchr("mepqw", v[1]) != NULL && v[2] == '\0';
    case 'd':   /* delivery mode: the server always queues */
        return v[1] != '\0' && strchr("bdiq", v[1]) != NULL && v[2] == '\0';
    case 'Q': case 'A': case 'L': case 'B':   /* queue dir, alias file, log
                                                 level, body type: the
                                                 server's business */
        return true;
    default:
        return false;
    }
}

static int sm_b_option(struct sm_opts *o, const char *v)
{
    if (strcmp(v, "m") == 0) {
        o->mode = MODE_DELIVER;
        return 0;
    }
    if (strcmp(v, "s") == 0) {
        o->mode = MODE_SMTP;
        return 0;
    }
    if (strcmp(v, "p") == 0) {
        o->mode = MODE_LIST;
        return 0;
    }
    if (v[0] == 'v')
        sm_err("-bv (verify addresses) is not supported: the server decides "
               "on each address when mail is sent");
    else if (v[0] == 'd' || v[0] == 'D')
        sm_err("-b%s: the server is started with 'estafeta serve'", v);
    else if (v[0] == 'i')
        sm_err("-bi: there is no alias database to rebuild; aliases are read "
               "from the configuration (check it with 'estafeta check-config')");
    else
        sm_err("-b%s: mode not supported (supported: -bm, -bs, -bp)", v);
    return EX_USAGE;
}

/* Parses sendmail's flags (getopt-style clusters, options anywhere until
 * "--"). Returns 0, -1 after --help (exit 0), or an exit status. */
static int sm_parse(int argc, char **argv, struct sm_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->rcpt_args = xcalloc(argc > 0 ? (size_t)argc : 1, sizeof(*o->rcpt_args));
    bool only_args = false;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_args || a[0] != '-' || a[1] == '\0') {
            o->rcpt_args[o->nrcpt_args++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_args = true;
            continue;
        }
        if (a[1] == '-') {
            const char **dst = NULL;
            const char *val = NULL;
            if (strcmp(a, "--help") == 0) {
                sm_usage(stdout);
                return -1;
            } else if (strcmp(a, "--config") == 0) {
                dst = &o->config_path;
            } else if (strncmp(a, "--config=", 9) == 0) {
                dst = &o->config_path;
                val = a + 9;
            } else if (strcmp(a, "--data-dir") == 0) {
                dst = &o->data_dir;
            } else if (strncmp(a, "--data-dir=", 11) == 0) {
                dst = &o->data_dir;
                val = a + 11;
            } else {
                sm_err("unknown option '%s'", a);
                sm_usage(stderr);
                return EX_USAGE;
            }
            if (val == NULL) {
                if (i + 1 >= argc) {
                    sm_err("option '%s' needs a value", a);
                    return EX_USAGE;
                }
                val = argv[++i];
            }
            *dst = val;
            continue;
        }
        for (const char *p = a + 1; *p != '\0';) {
            char f = *p++;
            if (strchr("tivUGnm", f) != NULL) {
                if (f == 't')
                    o->extract = true;
                else if (f == 'i')
                    o->dots_ok = true;
                else if (f == 'v')
                    o->verbose = true;
                continue;
            }
            if (strchr("frFCBNRVXLhOApob", f) == NULL) {
                if (f == 'q')
                    sm_err("-q: the server runs its queue by itself "
                           "(see 'estafeta queue list')");
                else
                    sm_err("unknown flag '-%c'%s", f,
                           f == 'c' ? " (the configuration is -C FILE)" : "");
                sm_usage(stderr);
                return EX_USAGE;
            }
            /* a flag with a value: the rest of this word, or the next one */
            const char *val = p;
            if (*val == '\0') {
                if (i + 1 >= argc) {
                    sm_err("flag '-%c' needs a value", f);
                    return EX_USAGE;
                }
                val = argv[++i];
            }
            switch (f) {
            case 'f': case 'r':
                o->sender = val;
                break;
            case 'F':
                o->fullname = val;
                break;
            case 'C':
                o->config_path = val;
                break;
            case 'o':
                if (!sm_o_option(o, val)) {
                    sm_err("unknown option '-o%s'", val);
                    return EX_USAGE;
                }
                break;
            case 'b': {
                int r = sm_b_option(o, val);
                if (r != 0)
                    return r;
                break;
            }
            default:    /* -B -N -R -V -X -L -h -O -A -p: accepted, ignored */
                break;
            }
            break;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ configuration */

/* base "/" rel; rel absolute is returned as is (as config_load does). */
static char *sm_path_join(const char *base, const char *rel)
{
    if (rel[0] == '/')
        return xstrdup(rel);
    while (rel[0] == '.' && rel[1] == '/')
        rel += 2 + strspn(rel + 2, "/");
    size_t blen = strlen(base);
    while (blen > 1 && base[blen - 1] == '/')
        blen--;
    if (rel[0] == '\0' || strcmp(rel, ".") == 0)
        return xstrndup(base, blen);
    size_t rlen = strlen(rel), n;
    if (!size_add(blen, rlen, &n) || !size_add(n, 2, &n))
        abort();
    char *p = xmalloc(n);
    snprintf(p, n, "%.*s/%.*s",
             blen > 0 && base[blen - 1] == '/' ? 0 : (int)blen, base,
             (int)rlen, rel);   /* base "/": "/rel", not "//rel" */
    return p;
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* The configuration with data_dir and local_socket resolved like
 * config_load() does, without reading users or aliases files. NULL after
 * printing why (exit EX_CONFIG). */
static struct config *sm_config(const struct sm_opts *o)
{
    const char *path = config_choose_path(o->config_path);
    struct buf err;
    buf_init(&err, 4096);
    struct config *cfg;
    if (path == NULL) {
        cfg = config_parse(config_embedded_default,
                           strlen(config_embedded_default),
                           "(embedded default)", &err);
    } else {
        struct buf text;
        if (fs_read_file(path, CONFIG_FILE_MAX, &text) < 0) {
            sm_err("cannot read the configuration %s: %s", path,
                   errno == EFBIG ? "larger than 16 MiB" : strerror(errno));
            buf_free(&err);
            return NULL;
        }
        cfg = config_parse(text.data != NULL ? text.data : "", text.len, path,
                           &err);
        buf_free(&text);
    }
    if (cfg == NULL) {
        sm_err("%s", buf_cstr(&err));
        buf_free(&err);
        return NULL;
    }
    buf_free(&err);
    const char *dd = o->data_dir != NULL && o->data_dir[0] != '\0'
                         ? o->data_dir : env_nonempty("ESTAFETA_DATA");
    if (dd != NULL) {
        free(cfg->data_dir);
        cfg->data_dir = xstrdup(dd);
    }
    if (cfg->data_dir == NULL) {
        sm_err("%s: no data-dir: set 'data-dir' or ESTAFETA_DATA", cfg->source);
        goto fail;
    }
    if (cfg->data_dir[0] != '/') {
        char *cwd = getcwd(NULL, 0);
        if (cwd == NULL) {
            sm_err("data-dir '%s' is relative and the current directory is "
                   "unknown: %s", cfg->data_dir, strerror(errno));
            goto fail;
        }
        char *abs = sm_path_join(cwd, cfg->data_dir);
        free(cwd);
        free(cfg->data_dir);
        cfg->data_dir = abs;
    } else {
        char *clean = sm_path_join(cfg->data_dir, ".");
        free(cfg->data_dir);
        cfg->data_dir = clean;
    }
    if (cfg->local_socket == NULL) {
        cfg->local_socket = sm_path_join(cfg->data_dir, "public/submit.sock");
    } else if (cfg->local_socket[0] == '\0') {
        sm_err("%s: local-socket is 'none': the server takes no local "
               "submissions", cfg->source);
        goto fail;
    } else {
        char *p = sm_path_join(cfg->data_dir, cfg->local_socket);
        free(cfg->local_socket);
        cfg->local_socket = p;
    }
    return cfg;
fail:
    config_free(cfg);
    return NULL;
}

/* ------------------------------------------------------------ addresses */

struct rcpts {
    char **v;
    size_t n;
    size_t max;             /* LIM_SMTP_RECIPIENTS, checked at the end */
    size_t path_max;        /* LIM_PATH: "<address>" */
    const char *domain;     /* for unqualified addresses */
    const char *err;        /* first problem, static text */
    char *err_addr;         /* the address it concerns (owned) */
};

/* Validates one address (already without display name and angle brackets,
 * trimmed): no control character, no space or '<' '>' outside a quoted
 * local part, qualified with the primary domain when it has no '@'.
 * Returns the malloc'd address or NULL with *why_r set. */
static char *addr_clean(const char *a, size_t len, const char *domain,
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
    char *addr = addr_clean(a, len, r->domain, r->path_max, &why);
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
static int rcpts_finish(struct rcpts *r)
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

static void rcpts_free(struct rcpts *r)
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

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* One command-line element: "addr", "<addr>" or "Name <addr>". */
static void arg_element(struct rcpts *r, const char *s, size_t len)
{
    while (len > 0 && is_wsp(s[0]))
        s++, len--;
    while (len > 0 && is_wsp(s[len - 1]))
        len--;
    if (len == 0)
        return;     /* "a@b," : empty list elements are ignored */
    bool inq = false;
    for (size_t i = 0; i < len; i++) {
        if (inq) {
            if (s[i] == '\\' && i + 1 < len)
                i++;
            else if (s[i] == '"')
                inq = false;
        } else if (s[i] == '"') {
            inq = true;
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
static void arg_list(struct rcpts *r, const char *s)
{
    size_t start = 0, i;
    bool inq = false, angle = false;
    for (i = 0; s[i] != '\0'; i++) {
        if (inq) {
            if (s[i] == '\\' && s[i + 1] != '\0')
                i++;
            else if (s[i] == '"')
                inq = false;
        } else if (s[i] == '"') {
            inq = true;
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

/* Line-end normalizer for what local programs write: LF, CRLF and a bare
 * CR each become CRLF, a last line without an end gets one, and (without
 * -i) a line holding only "." ends the input. Output is at most 2 bytes per
 * input byte, plus 2 at finish. */
struct norm {
    bool dots_ok;
    bool bol;       /* the output is at the beginning of a line */
    bool cr;        /* a CR is pending (is it CRLF or bare?) */
    bool dot;       /* a "." at the beginning of a line is held */
    bool ended;     /* the lone "." line was seen */
};

static void norm_feed(struct norm *n, const char *in, size_t len, char *out,
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

static void norm_finish(struct norm *n, char *out, size_t *out_len_r)
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
static ssize_t read_some(int fd, char *p, size_t n)
{
    for (;;) {
        ssize_t r = read(fd, p, n);
        if (r >= 0 || errno != EINTR)
            return r;
    }
}

/* The header section of the message as normalized, and what follows it
 * that was read along. */
struct head {
    struct buf pre;     /* normalized bytes read so far */
    size_t pos;         /* next line to look at */
    size_t skip;        /* bytes of a leading "From " line, dropped */
    size_t end;         /* offset where the header fields end */
    bool done;          /* end is known */
    bool need_blank;    /* the header ended at a non-header line: insert an
                           empty line before it */
    bool any_field;
    bool too_big;       /* no end within header-section: sent unchanged */
    bool eof;           /* standard input is finished (or the lone dot) */
};

/* A field line: a name of printable ASCII but ':', optional WSP, ':'. */
static bool is_field_line(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && s[i] > ' ' && s[i] < 0x7f && s[i] != ':')
        i++;
    if (i == 0)
        return false;
    while (i < len && is_wsp(s[i]))
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
        } else if (is_wsp(d[start]) && h->any_field) {
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
static int head_read(struct head *h, struct norm *n, size_t hmax)
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
        ssize_t r = read_some(0, in, SM_CHUNK);
        size_t olen;
        if (r < 0) {
            rc = -1;
            break;
        }
        if (r == 0)
            norm_finish(n, out, &olen);
        else
            norm_feed(n, in, (size_t)r, out, &olen);
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

struct head_info {
    bool has_from;
    const char *bad_field;  /* a To/Cc/Bcc field whose addresses cannot all
                               be read */
    const char *bad_why;    /* and why */
};

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
    arg_list(tmp, v);
    return tmp->err;
}

/* Looks at every field in [skip, end): From: present?, and for -t the
 * recipients of To:, Cc:, Bcc: (added to r). */
static void head_fields(const struct head *h, struct rcpts *r, bool extract,
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
        } while (pos < h->end && is_wsp(d[pos]));
        const char *colon = memchr(d + fstart, ':', pos - fstart);
        if (colon == NULL)
            continue;
        size_t nlen = (size_t)(colon - (d + fstart));
        while (nlen > 0 && is_wsp(d[fstart + nlen - 1]))
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
        rcpts_free(&tmp);
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
static const char *from_line(struct buf *out, const char *name,
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

/* ------------------------------------------------------------ SMTP client */

struct smtp {
    int fd;
    bool verbose;
    char in[4096];
    size_t in_len, in_pos;
    struct buf text;        /* the last reply, lines joined with "\n" */
    const char *err;        /* why the last call failed (-1) */
    int err_errno;
    bool utf8;              /* EHLO offered SMTPUTF8 */
};

/* Connects to the socket; a path longer than sun_path is reached through
 * its directory's /proc/self/fd entry. fd or -1/errno. */
static int sm_connect(const char *path)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    int dirfd = -1;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        const char *slash = strrchr(path, '/');
        char *dir = xstrndup(path, slash != NULL && slash != path
                                       ? (size_t)(slash - path) : 1);
        dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        free(dir);
        if (dirfd < 0)
            return -1;
        int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s",
                         dirfd, slash != NULL ? slash + 1 : path);
        if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
            close(dirfd);
            errno = ENAMETOOLONG;
            return -1;
        }
    } else {
        memcpy(sa.sun_path, path, strlen(path) + 1);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = fd < 0 ? -1 : connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    int saved = errno;
    if (dirfd >= 0)
        close(dirfd);
    if (rc < 0) {
        if (fd >= 0)
            close(fd);
        errno = saved;
        return -1;
    }
    /* the server reads what we send; if it stops for 5 minutes, give up */
    struct timeval tv = {SM_TIMEOUT_CMD_MS / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

static int smtp_fail(struct smtp *c, const char *why, int e)
{
    c->err = why;
    c->err_errno = e;
    return -1;
}

static int smtp_write(struct smtp *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return smtp_fail(c, errno == EAGAIN ? "timeout writing to the server"
                                                : "cannot write to the server",
                             errno == EAGAIN ? 0 : errno);
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

__attribute__((format(printf, 2, 3)))
static int smtp_cmd(struct smtp *c, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line) - 2)
        return smtp_fail(c, "command too long", 0);
    if (c->verbose)
        fprintf(stderr, ">>> %s\n", line);
    memcpy(line + n, "\r\n", 2);
    return smtp_write(c, line, (size_t)n + 2);
}

/* One byte of the server's output; -1 on close, error or timeout. */
static int smtp_getc(struct smtp *c, int timeout_ms)
{
    if (c->in_pos == c->in_len) {
        struct pollfd p = {c->fd, POLLIN, 0};
        int r;
        while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
            ;
        if (r == 0)
            return smtp_fail(c, "timeout waiting for the server", 0);
        ssize_t n;
        while ((n = recv(c->fd, c->in, sizeof(c->in), 0)) < 0 && errno == EINTR)
            ;
        if (n <= 0)
            return smtp_fail(c, "the server closed the connection",
                             n < 0 ? errno : 0);
        c->in_len = (size_t)n;
        c->in_pos = 0;
    }
    return (unsigned char)c->in[c->in_pos++];
}

/* Reads one (multi-line) reply: its code, or -1 (c->err says why). The
 * text is kept in c->text, capped; each line is cut at SM_REPLY_LINE_MAX. */
static int smtp_reply(struct smtp *c, int timeout_ms)
{
    buf_reset(&c->text);
    int code = -1;
    for (int nlines = 0;; nlines++) {
        if (nlines >= SM_REPLY_LINES_MAX)
            return smtp_fail(c, "reply with too many lines", 0);
        char line[SM_REPLY_LINE_MAX + 1];
        size_t len = 0;
        for (;;) {
            int ch = smtp_getc(c, timeout_ms);
            if (ch < 0)
                return -1;
            if (ch == '\n')
                break;
            if (len < SM_REPLY_LINE_MAX)
                line[len++] = (char)ch;
        }
        if (len > 0 && line[len - 1] == '\r')
            len--;
        line[len] = '\0';
        for (size_t i = 0; i < len; i++)    /* printed on a terminal later */
            if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
                line[i] = '?';
        if (c->verbose)
            fprintf(stderr, "<<< %s\n", line);
        if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
            line[1] > '9' || line[2] < '0' || line[2] > '9' ||
            (len > 3 && line[3] != ' ' && line[3] != '-'))
            return smtp_fail(c, "malformed reply from the server", 0);
        int lc = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        if (code >= 0 && lc != code)
            return smtp_fail(c, "malformed reply from the server", 0);
        code = lc;
        if (c->text.len > 0)
            buf_putc(&c->text, '\n');
        buf_append(&c->text, line, len);    /* capped: the rest is dropped */
        if (nlines > 0 && len > 4 && strcasecmp(line + 4, "SMTPUTF8") == 0)
            c->utf8 = true;
        if (len == 3 || line[3] == ' ')
            return code;
    }
}

static void smtp_quit(struct smtp *c)
{
    if (smtp_cmd(c, "QUIT") == 0)
        (void)smtp_reply(c, 5000);
}

/* Reports a lost connection: EX_TEMPFAIL. */
static int lost(const struct smtp *c, const char *sock)
{
    if (c->err_errno != 0)
        sm_err("%s (%s: %s): message NOT sent", c->err, sock,
               strerror(c->err_errno));
    else
        sm_err("%s (%s): message NOT sent", c->err, sock);
    return EX_TEMPFAIL;
}

/* Reports a refusal; ex5 is the status for a 5xx. */
static int refused(const struct smtp *c, const char *what, int code, int ex5)
{
    sm_err("the server refused %s: message NOT sent", what);
    fprintf(stderr, "%s\n", buf_cstr(&c->text));
    if (code >= 400 && code < 500)
        return EX_TEMPFAIL;
    return code >= 500 ? ex5 : EX_UNAVAILABLE;
}

static int smtp_open(struct smtp *c, const char *sock, bool verbose)
{
    memset(c, 0, sizeof(*c));
    c->verbose = verbose;
    buf_init(&c->text, SM_REPLY_TEXT_MAX);
    c->fd = sm_connect(sock);
    if (c->fd < 0) {
        sm_err("server not running (cannot connect to %s: %s): message NOT sent",
               sock, strerror(errno));
        return EX_TEMPFAIL;
    }
    return 0;
}

static void smtp_close(struct smtp *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    buf_free(&c->text);
}

/* Greeting and EHLO. 0 or an exit status. */
static int smtp_hello(struct smtp *c, const char *sock)
{
    int code = smtp_reply(c, SM_TIMEOUT_CMD_MS);
    if (code < 0)
        return lost(c, sock);
    if (code != 220)
        return refused(c, "the session", code, EX_UNAVAILABLE);
    if (smtp_cmd(c, "EHLO localhost") < 0)
        return lost(c, sock);
    code = smtp_reply(c, SM_TIMEOUT_CMD_MS);
    if (code < 0)
        return lost(c, sock);
    if (code != 250)
        return refused(c, "EHLO", code, EX_UNAVAILABLE);
    return 0;
}

/* ------------------------------------------------------------ the data */

/* Dot-stuffs normalized (CRLF-only) message bytes onto the socket and
 * counts them against message-size. */
struct dwriter {
    struct smtp *c;
    char out[2 * 8192];
    size_t len;
    bool bol;
    uint64_t size;
    uint64_t max;
};

static int dw_flush(struct dwriter *w)
{
    int r = smtp_write(w->c, w->out, w->len);
    w->len = 0;
    return r;
}

/* 0, -1 write error (w->c->err), -2 over message-size. */
static int dw_put(struct dwriter *w, const char *p, size_t n)
{
    if (n > w->max - w->size)
        return -2;
    w->size += n;
    for (size_t i = 0; i < n; i++) {
        if (w->len + 2 > sizeof(w->out) && dw_flush(w) < 0)
            return -1;
        if (w->bol && p[i] == '.')
            w->out[w->len++] = '.';
        w->out[w->len++] = p[i];
        w->bol = p[i] == '\n';
    }
    return 0;
}

/* Everything after the 354: the header (with the From: line and the
 * separator when needed), what was read with it, then the rest of stdin. */
static int send_body(struct dwriter *w, struct head *h, struct norm *n,
                     const struct buf *from, int *ex_r)
{
    const char *d = h->pre.data != NULL ? h->pre.data : "";
    int r = dw_put(w, d + h->skip, h->end - h->skip);
    if (r == 0 && from->len > 0)
        r = dw_put(w, from->data, from->len);
    if (r == 0 && h->need_blank)
        r = dw_put(w, "\r\n", 2);
    if (r == 0)
        r = dw_put(w, d + h->end, h->pre.len - h->end);
    char *in = xmalloc(SM_CHUNK), *out = xmalloc(2 * SM_CHUNK + 8);
    bool eof = h->eof;
    while (r == 0 && !eof) {
        ssize_t got = read_some(0, in, SM_CHUNK);
        size_t olen;
        if (got < 0) {
            sm_err("cannot read standard input: %s: message NOT sent",
                   strerror(errno));
            *ex_r = EX_IOERR;
            r = -3;
            break;
        }
        if (got == 0)
            norm_finish(n, out, &olen);
        else
            norm_feed(n, in, (size_t)got, out, &olen);
        eof = got == 0 || n->ended;
        r = dw_put(w, out, olen);
    }
    free(in);
    free(out);
    if (r == 0)
        r = dw_flush(w);
    if (r == -2) {
        sm_err("message larger than message-size (%llu octets): message NOT "
               "sent", (unsigned long long)w->max);
        *ex_r = EX_DATAERR;
    }
    return r;
}

static bool has_8bit(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s >= 0x80)
            return true;
    return false;
}

/* The SMTP transaction over the socket. Returns the exit status. */
static int sm_transact(const char *sock, bool verbose, const char *sender,
                       const struct rcpts *r, struct head *h, struct norm *n,
                       const struct buf *from, uint64_t max_size)
{
    struct smtp c;
    int ex = smtp_open(&c, sock, verbose);
    if (ex != 0)
        return ex;
    ex = smtp_hello(&c, sock);
    if (ex != 0)
        goto out;
    bool utf8 = has_8bit(sender);
    for (size_t i = 0; i < r->n; i++)
        utf8 = utf8 || has_8bit(r->v[i]);
    int code;
    if (smtp_cmd(&c, "MAIL FROM:<%s>%s", sender,
                 utf8 && c.utf8 ? " SMTPUTF8" : "") < 0 ||
        (code = smtp_reply(&c, SM_TIMEOUT_CMD_MS)) < 0) {
        ex = lost(&c, sock);
        goto out;
    }
    if (code != 250) {
        char what[400];
        snprintf(what, sizeof(what), "the sender <%s>", sender);
        ex = refused(&c, what, code, EX_UNAVAILABLE);
        goto quit;
    }
    for (size_t i = 0; i < r->n; i++) {
        if (smtp_cmd(&c, "RCPT TO:<%s>", r->v[i]) < 0 ||
            (code = smtp_reply(&c, SM_TIMEOUT_CMD_MS)) < 0) {
            ex = lost(&c, sock);
            goto out;
        }
        if (code != 250 && code != 251) {
            char what[400];
            snprintf(what, sizeof(what), "the recipient <%s>", r->v[i]);
            ex = refused(&c, what, code, EX_NOUSER);
            goto quit;
        }
    }
    if (smtp_cmd(&c, "DATA") < 0 || (code = smtp_reply(&c, SM_TIMEOUT_CMD_MS)) < 0) {
        ex = lost(&c, sock);
        goto out;
    }
    if (code != 354) {
        ex = refused(&c, "DATA", code, EX_DATAERR);
        goto quit;
    }
    struct dwriter w = {.c = &c, .bol = true, .max = max_size};
    int sr = send_body(&w, h, n, from, &ex);
    if (sr == -1) {
        /* the server may have said why before it stopped reading */
        struct smtp saved = {.err = c.err, .err_errno = c.err_errno};
        code = smtp_reply(&c, 1000);
        ex = code >= 0 ? refused(&c, "the message", code, EX_DATAERR)
                       : lost(&saved, sock);
        goto out;
    }
    if (sr < 0)
        goto out;   /* closing without the final dot abandons the message */
    if (verbose)
        fprintf(stderr, ">>> (%llu octets of message)\n",
                (unsigned long long)w.size);
    if (smtp_cmd(&c, ".") < 0 || (code = smtp_reply(&c, SM_TIMEOUT_FINAL_MS)) < 0) {
        ex = lost(&c, sock);
        goto out;
    }
    if (code != 250) {
        ex = refused(&c, "the message", code, EX_DATAERR);
        goto quit;
    }
    ex = 0;
quit:
    smtp_quit(&c);
out:
    smtp_close(&c);
    return ex;
}

/* ------------------------------------------------------------ modes */

static const char *primary_domain(const struct config *cfg, char *host,
                                  size_t hostlen)
{
    if (cfg->ndomains > 0)
        return cfg->domains[0].name;
    if (cfg->hostname != NULL)
        return cfg->hostname;
    if (gethostname(host, hostlen) == 0 && host[0] != '\0') {
        host[hostlen - 1] = '\0';
        return host;
    }
    return "localhost";
}

static int sm_deliver(const struct sm_opts *o, const struct config *cfg)
{
    char host[256];
    const char *domain = primary_domain(cfg, host, sizeof(host));
    struct rcpts r = {.max = cfg->limits[LIM_SMTP_RECIPIENTS],
                      .path_max = cfg->limits[LIM_PATH], .domain = domain};
    char *sender = NULL, *self = NULL;
    struct head h;
    memset(&h, 0, sizeof(h));
    struct buf from;
    buf_init(&from, 4096);
    int ex;

    /* the caller's own address: the default sender, and From: for -F */
    struct passwd *pw = getpwuid(getuid());
    if (pw != NULL && pw->pw_name != NULL) {
        const char *why;
        self = addr_clean(pw->pw_name, strlen(pw->pw_name), domain,
                          r.path_max, &why);
    }
    if (o->sender != NULL) {
        const char *s = o->sender;
        size_t len = strlen(s);
        while (len > 0 && is_wsp(*s))
            s++, len--;
        while (len > 0 && is_wsp(s[len - 1]))
            len--;
        if (len >= 2 && s[0] == '<' && s[len - 1] == '>')
            s++, len -= 2;
        if (len == 0) {
            sender = xstrdup("");
        } else {
            const char *why;
            sender = addr_clean(s, len, domain, r.path_max, &why);
            if (sender == NULL) {
                sm_err("bad sender '%s': %s", o->sender, why);
                ex = EX_USAGE;
                goto out;
            }
        }
    } else if (self != NULL) {
        sender = xstrdup(self);
    } else {
        sm_err("no login name for uid %lu: give the sender with -f",
               (unsigned long)getuid());
        ex = EX_USAGE;
        goto out;
    }
    for (size_t i = 0; i < o->nrcpt_args && r.err == NULL; i++)
        arg_list(&r, o->rcpt_args[i]);
    if (r.err != NULL) {
        sm_err("bad recipient '%s': %s", r.err_addr, r.err);
        ex = EX_USAGE;
        goto out;
    }
    if (r.n == 0 && !o->extract) {
        sm_err("no recipients (give them as arguments, or use -t)");
        ex = EX_USAGE;
        goto out;
    }

    struct norm n = {.dots_ok = o->dots_ok, .bol = true};
    size_t hmax = cfg->limits[LIM_HEADER_SECTION];
    if (head_read(&h, &n, hmax) < 0) {
        sm_err("cannot read standard input: %s: message NOT sent",
               strerror(errno));
        ex = EX_IOERR;
        goto out;
    }
    if (h.too_big && o->extract) {
        sm_err("header section larger than header-section (%zu octets): "
               "cannot read its recipients for -t: message NOT sent", hmax);
        ex = EX_DATAERR;
        goto out;
    }
    struct head_info info;
    head_fields(&h, &r, o->extract, &info);
    if (r.err != NULL) {
        sm_err("bad recipient '%s' in the header: %s: message NOT sent",
               r.err_addr, r.err);
        ex = EX_DATAERR;
        goto out;
    }
    if (info.bad_field != NULL) {
        sm_err("cannot read every address of the %s: field (%s): message "
               "NOT sent", info.bad_field, info.bad_why);
        ex = EX_DATAERR;
        goto out;
    }
    if (rcpts_finish(&r) < 0) {
        sm_err("%s (%zu): message NOT sent", r.err, r.max);
        ex = EX_USAGE;
        goto out;
    }
    if (r.n == 0) {
        sm_err("no recipients (none as arguments, none in To:, Cc: or Bcc:)");
        ex = EX_USAGE;
        goto out;
    }
    if (o->fullname != NULL && !info.has_from && !h.too_big) {
        const char *addr = sender[0] != '\0' ? sender : self;
        const char *why = addr != NULL ? from_line(&from, o->fullname, addr)
                                       : "no address for the From: field";
        if (why != NULL) {
            sm_err("-F: %s", why);
            ex = EX_USAGE;
            goto out;
        }
    }
    ex = sm_transact(cfg->local_socket, o->verbose, sender, &r, &h, &n, &from,
                     cfg->limits[LIM_MESSAGE_SIZE]);
out:
    buf_free(&from);
    buf_free(&h.pre);
    rcpts_free(&r);
    free(sender);
    free(self);
    return ex;
}

/* -bs: bytes between stdin/stdout and the socket until one side closes.
 * After standard input ends, the server's remaining replies are still
 * copied until it closes (or stays silent for 10 minutes). */
static int sm_relay(const struct config *cfg)
{
    const char *sock = cfg->local_socket;
    int fd = sm_connect(sock);
    if (fd < 0) {
        sm_err("server not running (cannot connect to %s: %s)", sock,
               strerror(errno));
        return EX_TEMPFAIL;
    }
    char *b = xmalloc(SM_CHUNK);
    bool in_open = true;
    int ex = 0;
    for (;;) {
        struct pollfd p[2] = {{in_open ? 0 : -1, POLLIN, 0}, {fd, POLLIN, 0}};
        int r = poll(p, 2, in_open ? -1 : SM_TIMEOUT_FINAL_MS);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (p[1].revents != 0) {
            ssize_t got = recv(fd, b, SM_CHUNK, 0);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0)
                break;
            if (fs_write_all(1, b, (size_t)got) < 0) {
                ex = EX_IOERR;
                break;
            }
        }
        if (in_open && p[0].revents != 0) {
            ssize_t got = read_some(0, b, SM_CHUNK);
            if (got <= 0) {
                in_open = false;
                shutdown(fd, SHUT_WR);
                continue;
            }
            for (size_t off = 0; off < (size_t)got;) {
                ssize_t wr = send(fd, b + off, (size_t)got - off, MSG_NOSIGNAL);
                if (wr < 0 && errno == EINTR)
                    continue;
                if (wr < 0) {
                    in_open = false;    /* the server went away: read what
                                           it said, then stop */
                    break;
                }
                off += (size_t)wr;
            }
        }
    }
    free(b);
    close(fd);
    return ex;
}

/* -bp: the same as `estafeta queue list`. */
static int sm_list(const struct sm_opts *o)
{
    char *argv[8];
    int argc = 0;
    argv[argc++] = (char *)"queue";
    if (o->config_path != NULL) {
        argv[argc++] = (char *)"--config";
        argv[argc++] = (char *)o->config_path;
    }
    if (o->data_dir != NULL) {
        argv[argc++] = (char *)"--data-dir";
        argv[argc++] = (char *)o->data_dir;
    }
    argv[argc++] = (char *)"list";
    argv[argc] = NULL;
    return cmd_queue(argc, argv);
}

int cmd_sendmail(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    struct sm_opts o;
    int ex = sm_parse(argc, argv, &o);
    if (ex != 0) {
        free(o.rcpt_args);
        return ex < 0 ? 0 : ex;
    }
    if (o.mode == MODE_LIST) {
        ex = sm_list(&o);
        free(o.rcpt_args);
        return ex;
    }
    struct config *cfg = sm_config(&o);
    if (cfg == NULL) {
        free(o.rcpt_args);
        return EX_CONFIG;
    }
    if (o.mode == MODE_SMTP)
        ex = sm_relay(cfg);
    else
        ex = sm_deliver(&o, cfg);
    config_free(cfg);
    free(o.rcpt_args);
    return ex;
}

int cmd_mailq(int argc, char **argv)
{
    /* mailq [flags] = sendmail -bp [flags] */
    char **v = xcalloc((size_t)argc + 2, sizeof(*v));
    v[0] = argc > 0 ? argv[0] : (char *)"mailq";
    v[1] = (char *)"-bp";
    for (int i = 1; i < argc; i++)
        v[i + 1] = argv[i];
    int ex = cmd_sendmail(argc + 1, v);
    free(v);
    return ex;
}
