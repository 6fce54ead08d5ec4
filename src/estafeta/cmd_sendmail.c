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
#include "estafeta/sendmail_msg.h"
#include "estafeta/serve.h"
#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/xalloc.h"
#include "proto/rfc5322_addr.h"

#define SM "estafeta sendmail"
/* RFC 5321 4.5.3.2: 5 minutes for command replies, 10 for the final one */
#define SM_TIMEOUT_CMD_MS (300 * 1000)
#define SM_TIMEOUT_FINAL_MS (600 * 1000)
#define SM_REPLY_LINE_MAX 1024      /* longer reply lines are cut (RFC: 512) */
#define SM_REPLY_LINES_MAX 100
#define SM_REPLY_TEXT_MAX 8192

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
        size_t olen;
        ssize_t got = sm_read_normalized(n, in, out, &olen);
        if (got < 0) {
            sm_err("cannot read standard input: %s: message NOT sent",
                   strerror(errno));
            *ex_r = EX_IOERR;
            r = -3;
            break;
        }
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
        self = sm_addr_clean(pw->pw_name, strlen(pw->pw_name), domain,
                          r.path_max, &why);
    }
    if (o->sender != NULL) {
        const char *s = o->sender;
        size_t len = strlen(s);
        while (len > 0 && sm_is_wsp(*s))
            s++, len--;
        while (len > 0 && sm_is_wsp(s[len - 1]))
            len--;
        if (len >= 2 && s[0] == '<' && s[len - 1] == '>')
            s++, len -= 2;
        if (len == 0) {
            sender = xstrdup("");
        } else {
            const char *why;
            sender = sm_addr_clean(s, len, domain, r.path_max, &why);
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
        sm_arg_list(&r, o->rcpt_args[i]);
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
    if (sm_head_read(&h, &n, hmax) < 0) {
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
    sm_head_fields(&h, &r, o->extract, &info);
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
    if (sm_rcpts_finish(&r) < 0) {
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
        const char *why = addr != NULL ? sm_from_line(&from, o->fullname, addr)
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
    sm_rcpts_free(&r);
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
            ssize_t got = sm_read_some(0, b, SM_CHUNK);
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
