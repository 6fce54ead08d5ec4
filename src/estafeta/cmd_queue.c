/*
 * cmd_queue.c: `estafeta queue ACTION`, the administrator's hands on the
 * queue, and mailq(1) (`mailq` and `sendmail -bp` arrive here as
 * `queue list`).
 *
 *   list [ID...]       what is waiting, in Postfix's mailq format (held
 *                      messages marked '!'), or --json
 *   show ID            one message: every envelope field, each recipient's
 *                      state, then its headers (--body: the whole message)
 *   flush              retry now: SIGUSR1 to the server (doc/queue.md)
 *   hold               out of the active queue (queue_hold)
 *   release            back into it, then SIGUSR1
 *   delete             queue_remove, active or held
 *   bounce             every pending recipient marked failed; the server
 *                      sends the DSN when it next loads the message
 *
 * Selection: ids as arguments; --sender ADDR, --recipient ADDR, --domain
 * DOMAIN (each repeatable: any of one kind, all of different kinds; domains
 * compare case-insensitively, local parts exactly; --sender '' is the null
 * sender; recipients match only while not delivered); --held (held ones
 * only). flush, hold, release, delete and bounce want ids, a selector or
 * --all: a mistyped command must not empty the queue.
 *
 * Privilege: the queue belongs to the run-as user (else to the owner of the
 * queue directory). Root switches to that user before opening the queue, so
 * anything created (a .st record, hold/) stays the server's. Another user
 * may only read (list, show), and only if the files let them.
 *
 * The server is reached through <data-dir>/estafeta.pid: SIGUSR1 makes it
 * rescan msg/ and retry every deferred message now. The pid is trusted only
 * if that process exists and is named like us (a stale pid file must not
 * signal an unrelated process, for which SIGUSR1 is fatal).
 *
 * Exit status (sysexits.h): 0 done; 64 usage; 66 an id given is not in the
 * queue (the others are still acted on); 74 a queue or output error; 75 the
 * server is not running for flush or release (the queue change itself is
 * made); 77 not allowed; 78 configuration.
 *
 * Output is for terminals: every string that came from a peer (addresses,
 * remote replies, headers) is printed with control characters and invalid
 * UTF-8 replaced by '?'; --json escapes instead (invalid UTF-8 becomes
 * U+FFFD), so nothing a sender chose can drive the admin's terminal.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "conf/config.h"
#include "estafeta/cmd.h"
#include "estafeta/serve.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "proto/smtp_cmd.h"
#include "queue/queue.h"

#define Q_BOUNCE_STATUS "550 5.0.0 message bounced by the administrator"
#define Q_PATH_MAX 4096

static const char queue_usage_text[] =
    "usage: estafeta queue list [ID...] [--held] [SELECTORS] [--json]\n"
    "       estafeta queue show ID [--body] [--json]\n"
    "       estafeta queue flush|hold|release|delete|bounce "
    "ID...|SELECTORS|--all [--json]\n"
    "\n"
    "  list     the queue, as mailq(1) prints it ('!' after a held id)\n"
    "  show     one message: envelope, recipients' states, headers\n"
    "  flush    ask the running server to retry now\n"
    "  hold     take messages out of delivery; release puts them back\n"
    "  delete   remove messages (no bounce)\n"
    "  bounce   fail every pending recipient; the server returns the\n"
    "           message to its sender\n"
    "\n"
    "SELECTORS (repeatable; one kind matches any, kinds combine):\n"
    "  --sender ADDR      envelope sender ('' for the null sender)\n"
    "  --recipient ADDR   a recipient not yet delivered\n"
    "  --domain DOMAIN    a recipient domain, not yet delivered\n"
    "  --held             held messages only\n"
    "  --all              every message (needed when nothing else selects)\n"
    "\n"
    "  --body             show: the whole message, not only its headers\n"
    "  --json             machine-readable output\n"
    "  -c, --config FILE  configuration (default: $ESTAFETA_CONFIG, else\n"
    "                     " CONFIG_SYSTEM_PATH " if it exists)\n"
    "  --data-dir DIR     override data-dir (default: $ESTAFETA_DATA)\n"
    "\n"
    "Exit: 0 ok, 64 usage, 66 no such message, 74 I/O error,\n"
    "75 server not running (flush, release), 77 permission, 78 config.\n";

enum q_action { QA_LIST, QA_SHOW, QA_FLUSH, QA_HOLD, QA_RELEASE, QA_DELETE,
                QA_BOUNCE };

static const struct {
    const char *name;
    enum q_action action;
    bool writes;          /* changes the queue: run-as user or root only */
} q_actions[] = {
    {"list", QA_LIST, false},     {"show", QA_SHOW, false},
    {"flush", QA_FLUSH, true},    {"hold", QA_HOLD, true},
    {"release", QA_RELEASE, true}, {"delete", QA_DELETE, true},
    {"bounce", QA_BOUNCE, true},
};

struct q_strs {
    const char **v;
    size_t n;
};

struct q_opts {
    const char *config_path, *data_dir;
    bool json, all, held_only, body;
    struct q_strs senders, rcpts, domains;
    struct q_strs args;   /* the action, then ids */
};

/* One selected message. env is NULL for a file that exists but does not
 * parse (corrupt): it can still be held, released or deleted. */
struct q_item {
    char id[QUEUE_ID_SIZE];
    struct queue_env *env;
    bool held;
};

static void strs_add(struct q_strs *s, const char *p)
{
    s->v = xreallocarray(s->v, s->n + 1, sizeof(*s->v));
    s->v[s->n++] = p;
}

/* ================= text out: terminal-safe or JSON ================= */

/*
 * Length of the UTF-8 sequence at p[0..n): 1-4 with its code point in
 * *cp_r; 0 if p holds only the valid start of one (more bytes needed);
 * -1 if it is not valid UTF-8 (overlong, surrogate, > U+10FFFF, stray
 * continuation byte): the caller replaces one byte and goes on.
 */
static int utf8_seq(const unsigned char *p, size_t n, uint32_t *cp_r)
{
    unsigned c = p[0];
    size_t need;
    uint32_t cp;
    unsigned lo = 0x80, hi = 0xbf;  /* allowed range of the second byte */
    if (c < 0x80) {
        *cp_r = c;
        return 1;
    }
    if (c < 0xc2 || c > 0xf4)
        return -1;
    if (c < 0xe0) {
        need = 2;
        cp = c & 0x1f;
    } else if (c < 0xf0) {
        need = 3;
        cp = c & 0x0f;
        if (c == 0xe0)
            lo = 0xa0;          /* overlong */
        else if (c == 0xed)
            hi = 0x9f;          /* surrogates */
    } else {
        need = 4;
        cp = c & 0x07;
        if (c == 0xf0)
            lo = 0x90;          /* overlong */
        else if (c == 0xf4)
            hi = 0x8f;          /* beyond U+10FFFF */
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n)
            return 0;
        unsigned d = p[i];
        if (i == 1 ? (d < lo || d > hi) : (d & 0xc0) != 0x80)
            return -1;
        cp = (cp << 6) | (d & 0x3f);
    }
    *cp_r = cp;
    return (int)need;
}

struct q_text {
    FILE *f;
    bool json;        /* JSON string contents (no quotes) */
    bool oneline;     /* text: newline and tab are replaced too */
    bool headers;     /* stop at the first empty line (*stop set) */
    size_t linelen;   /* bytes on the current line, CR and LF excepted */
    bool stop;
};

/* Characters that would let text steer a terminal or reorder what it shows:
 * C0 and C1 controls, DEL, and the bidirectional overrides. */
static bool q_unsafe_cp(uint32_t cp)
{
    return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0) ||
           (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

static void q_emit(struct q_text *t, const unsigned char *seq, int len,
                   uint32_t cp)
{
    if (t->json) {
        if (len < 0)
            fputs("\\ufffd", t->f);
        else if (cp == '"')
            fputs("\\\"", t->f);
        else if (cp == '\\')
            fputs("\\\\", t->f);
        else if (cp == '\n')
            fputs("\\n", t->f);
        else if (cp == '\r')
            fputs("\\r", t->f);
        else if (cp == '\t')
            fputs("\\t", t->f);
        else if (cp < 0x20)
            fprintf(t->f, "\\u%04x", (unsigned)cp);
        else
            fwrite(seq, 1, (size_t)len, t->f);
        return;
    }
    if (len < 0) {
        fputc('?', t->f);
    } else if (cp == '\r') {
        if (t->oneline)
            fputc('?', t->f);
        /* else: CRLF line ends are printed as LF */
    } else if ((cp == '\n' || cp == '\t') && !t->oneline) {
        fputc((int)cp, t->f);
    } else if (q_unsafe_cp(cp)) {
        fputc('?', t->f);
    } else {
        fwrite(seq, 1, (size_t)len, t->f);
    }
}

/*
 * Prints p[0..n) through t. Returns the bytes consumed: all of them when
 * `final`, else it may leave the start of an incomplete UTF-8 sequence at
 * the end for the caller to prepend to the next chunk. In headers mode it
 * stops after the line ending the header section (t->stop).
 */
static size_t q_text_put(struct q_text *t, const unsigned char *p, size_t n,
                         bool final)
{
    size_t i = 0;
    while (i < n && !t->stop) {
        uint32_t cp = 0;
        int len = utf8_seq(p + i, n - i, &cp);
        if (len == 0 && !final)
            return i;
        if (len <= 0)
            len = -1;
        if (t->headers && len == 1 && t->linelen == 0 && cp == '\r') {
            /* CR LF on its own: the empty line ending the headers. */
            if (i + 1 == n && !final)
                return i;
            if (i + 1 < n && p[i + 1] == '\n')
                cp = '\n', i++;
        }
        if (t->headers && len == 1 && cp == '\n' && t->linelen == 0) {
            t->stop = true; /* the empty line: not part of the headers */
            return n;
        }
        q_emit(t, p + i, len, cp);
        if (len == 1 && cp == '\n')
            t->linelen = 0;
        else if (!(len == 1 && cp == '\r'))
            t->linelen++;
        i += len < 0 ? 1 : (size_t)len;
    }
    return t->stop ? n : i;
}

/* A whole C string, terminal-safe on one line. */
static void q_put(FILE *f, const char *s)
{
    struct q_text t = {.f = f, .oneline = true};
    q_text_put(&t, (const unsigned char *)s, strlen(s), true);
}

/* A whole C string as a JSON string, quotes included. */
static void q_json_str(FILE *f, const char *s)
{
    struct q_text t = {.f = f, .json = true};
    fputc('"', f);
    q_text_put(&t, (const unsigned char *)s, strlen(s), true);
    fputc('"', f);
}

/* ================= selection ================= */

/* local@domain: local parts exactly, domains without regard to ASCII case
 * (RFC 5321 2.4). The null sender equals only itself. */
static bool q_addr_eq(const char *a, const char *b)
{
    const char *at_a = strrchr(a, '@'), *at_b = strrchr(b, '@');
    if (at_a == NULL || at_b == NULL)
        return strcmp(a, b) == 0;
    size_t la = (size_t)(at_a - a), lb = (size_t)(at_b - b);
    return la == lb && memcmp(a, b, la) == 0 && strcasecmp(at_a + 1, at_b + 1) == 0;
}

static bool q_domain_eq(const char *addr, const char *domain)
{
    const char *at = strrchr(addr, '@');
    return at != NULL && strcasecmp(at + 1, domain) == 0;
}

static bool q_any_rcpt(const struct queue_env *env, const struct q_strs *want,
                       bool (*eq)(const char *, const char *))
{
    for (size_t i = 0; i < env->nrcpts; i++) {
        if (env->rcpts[i].state == QUEUE_RCPT_DONE)
            continue;
        for (size_t k = 0; k < want->n; k++)
            if (eq(env->rcpts[i].address, want->v[k]))
                return true;
    }
    return false;
}

static bool q_has_addr_selectors(const struct q_opts *o)
{
    return o->senders.n > 0 || o->rcpts.n > 0 || o->domains.n > 0;
}

static bool q_matches(const struct q_opts *o, const struct q_item *it)
{
    if (o->held_only && !it->held)
        return false;
    if (!q_has_addr_selectors(o))
        return true;
    if (it->env == NULL)
        return false; /* corrupt: only by id, --held or --all */
    if (o->senders.n > 0) {
        bool any = false;
        for (size_t k = 0; k < o->senders.n && !any; k++)
            any = q_addr_eq(it->env->sender, o->senders.v[k]);
        if (!any)
            return false;
    }
    if (o->rcpts.n > 0 && !q_any_rcpt(it->env, &o->rcpts, q_addr_eq))
        return false;
    if (o->domains.n > 0 && !q_any_rcpt(it->env, &o->domains, q_domain_eq))
        return false;
    return true;
}

/*
 * Reads id: 0 with *it filled (it->env NULL for a corrupt file); 1 not in
 * the queue (ENOENT, or not an id at all); -1 an I/O error (reported).
 */
static int q_load(struct queue *q, const char *id, struct q_item *it)
{
    memset(it, 0, sizeof(*it));
    int r = queue_load_any(q, id, &it->env, &it->held);
    if (r == -1 && (errno == ENOENT || errno == EINVAL))
        return 1;
    if (r == -1) {
        fprintf(stderr, "estafeta queue: %s: %s\n", id, strerror(errno));
        return -1;
    }
    if (r == -2)
        it->env = NULL;
    snprintf(it->id, sizeof(it->id), "%s", id);
    return 0;
}

struct q_ids {
    char **v;
    size_t n, cap;
};

static void q_collect(const char *id, void *arg)
{
    struct q_ids *ids = arg;
    if (ids->n == ids->cap) {
        ids->cap = ids->cap > 0 ? ids->cap * 2 : 64;
        ids->v = xreallocarray(ids->v, ids->cap, sizeof(*ids->v));
    }
    ids->v[ids->n++] = xstrdup(id);
}

static int q_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One pass over the selected messages, and what it has seen. */
struct q_walk {
    struct queue *q;
    const struct q_opts *o;
    enum q_action a;
    const char *cmd;
    FILE *out;
    size_t seen;        /* messages handled */
    uint64_t bytes;     /* list: their sizes */
    size_t done;        /* actions: messages changed */
    size_t bounced;     /* bounce: recipients marked failed */
    size_t missing;     /* ids given that are not in the queue */
    bool error;         /* an I/O error was reported */
};

static void q_handle(struct q_walk *w, struct q_item *it);

/*
 * Calls q_handle for each selected message, one loaded at a time (a big
 * queue costs only its list of ids): the ids given, in their order (unknown
 * ones reported and counted), else every message, active and held, in id
 * (= arrival) order; in both cases only those the selectors match.
 */
static void q_walk(struct q_walk *w)
{
    struct q_ids ids = {NULL, 0, 0};
    const struct q_opts *o = w->o;
    bool given = o->args.n > 1;
    if (given) {
        for (size_t i = 1; i < o->args.n; i++)
            q_collect(o->args.v[i], &ids);
    } else {
        if (queue_list(w->q, q_collect, &ids) < 0 ||
            queue_list_held(w->q, q_collect, &ids) < 0) {
            fprintf(stderr, "estafeta queue %s: cannot list the queue: %s\n", w->cmd,
                    strerror(errno));
            w->error = true;
        }
        if (ids.n > 0)
            qsort(ids.v, ids.n, sizeof(*ids.v), q_cmp_str);
    }
    for (size_t i = 0; i < ids.n; i++) {
        /* The same id twice: given twice, or listed in msg/ and in hold/
         * because it was held or released between the two listings. */
        bool dup = false;
        for (size_t k = given ? 0 : (i > 0 ? i - 1 : 0); k < i && !dup; k++)
            dup = strcmp(ids.v[k], ids.v[i]) == 0;
        if (dup)
            continue;
        struct q_item it;
        int r = q_load(w->q, ids.v[i], &it);
        if (r < 0) {
            w->error = true;
        } else if (r == 1 && given) {
            w->missing++;
            fprintf(stderr, "estafeta queue %s: ", w->cmd);
            q_put(stderr, ids.v[i]);
            fprintf(stderr, ": no such message in the queue\n");
        } else if (r == 0) {
            /* (r == 1 when listed: delivered since the listing) */
            if (q_matches(o, &it))
                q_handle(w, &it);
            queue_env_free(it.env);
        }
    }
    for (size_t i = 0; i < ids.n; i++)
        free(ids.v[i]);
    free(ids.v);
}

/* ================= list ================= */

static const char *q_state_name(enum queue_rcpt_state st)
{
    switch (st) {
    case QUEUE_RCPT_PENDING:
        return "pending";
    case QUEUE_RCPT_DONE:
        return "done";
    case QUEUE_RCPT_FAILED:
        return "failed";
    }
    return "unknown";
}

/* "Mon Jan  8 10:00:00", asctime()'s first 19 characters, local time. */
static void q_asctime(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (localtime_r(&tt, &tm) == NULL ||
        strftime(out, 32, "%a %b %e %H:%M:%S", &tm) == 0)
        snprintf(out, 32, "??");
}

/*
 * Postfix's mailq format (postqueue's showq_compat), which scripts and
 * monitoring parse:
 *   -Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------
 *   <id><status> <size> <arrival>  <sender>
 *   <76-column right-aligned "(reason)" when it changes>
 *                                            <recipient>
 * status ' ' queued or '!' held; a blank line between messages; then
 * "-- N Kbytes in M Requests." or "Mail queue is empty". Recipients shown
 * are those not delivered yet (a failed one waits for its bounce).
 */
static void q_list_human_item(struct q_walk *w, const struct q_item *it)
{
    FILE *f = w->out;
    char idst[QUEUE_ID_SIZE + 2], when[32];
    if (w->seen == 0)
        fprintf(f, "%-11s %7s %-20s %s\n", "-Queue ID-", "--Size--",
                "----Arrival Time----", "-Sender/Recipient-------");
    else
        fputc('\n', f);
    snprintf(idst, sizeof(idst), "%s%c", it->id, it->held ? '!' : ' ');
    if (it->env == NULL) {
        fprintf(f, "%-11s %7s %-20s (corrupt queue file: set aside at the "
                   "next server start)\n", idst, "?", "??");
        return;
    }
    const struct queue_env *env = it->env;
    w->bytes += env->body_size;
    q_asctime(env->created, when);
    fprintf(f, "%-11s %7llu %-20s ", idst, (unsigned long long)env->body_size, when);
    q_put(f, env->sender[0] != '\0' ? env->sender : "MAILER-DAEMON");
    fputc('\n', f);
    const char *reason = NULL;
    for (size_t k = 0; k < env->nrcpts; k++) {
        const struct queue_rcpt *r = &env->rcpts[k];
        if (r->state == QUEUE_RCPT_DONE)
            continue;
        if (r->status[0] != '\0' && (reason == NULL || strcmp(reason, r->status) != 0)) {
            size_t len = strlen(r->status);
            fprintf(f, "%*s(", len < 76 ? (int)(76 - len) : 0, "");
            q_put(f, r->status);
            fputs(")\n", f);
            reason = r->status;
        }
        fprintf(f, "%-11s %7s %-20s ", "", "", "");
        q_put(f, r->address);
        fputc('\n', f);
    }
}

static void q_list_human_end(struct q_walk *w)
{
    if (w->seen == 0)
        fputs("Mail queue is empty\n", w->out);
    else
        fprintf(w->out, "\n-- %llu Kbytes in %zu Request%s.\n",
                (unsigned long long)(w->bytes / 1024), w->seen,
                w->seen == 1 ? "" : "s");
}

static void q_json_rcpts(FILE *f, const struct queue_env *env, bool full)
{
    fputs("[", f);
    for (size_t k = 0; k < env->nrcpts; k++) {
        const struct queue_rcpt *r = &env->rcpts[k];
        fputs(k > 0 ? ", {\"address\": " : "{\"address\": ", f);
        q_json_str(f, r->address);
        fprintf(f, ", \"state\": \"%s\", \"status\": ", q_state_name(r->state));
        q_json_str(f, r->status);
        if (full) {
            fputs(", \"orcpt\": ", f);
            q_json_str(f, r->orcpt);
            fputs(", \"notify\": [", f);
            static const struct {
                unsigned bit;
                const char *name;
            } nb[] = {{SMTP_NOTIFY_NEVER, "NEVER"},
                      {SMTP_NOTIFY_SUCCESS, "SUCCESS"},
                      {SMTP_NOTIFY_FAILURE, "FAILURE"},
                      {SMTP_NOTIFY_DELAY, "DELAY"}};
            bool first = true;
            for (size_t b = 0; b < sizeof(nb) / sizeof(nb[0]); b++) {
                if (r->notify & nb[b].bit) {
                    fprintf(f, "%s\"%s\"", first ? "" : ", ", nb[b].name);
                    first = false;
                }
            }
            fputs("]", f);
        }
        fputs("}", f);
    }
    fputs("]", f);
}

/* The fields list --json and show --json share. */
static void q_json_common(FILE *f, const struct q_item *it)
{
    fputs("{\"id\": ", f);
    q_json_str(f, it->id);
    fprintf(f, ", \"held\": %s", it->held ? "true" : "false");
    if (it->env == NULL) {
        fputs(", \"corrupt\": true", f);
        return;
    }
    const struct queue_env *env = it->env;
    fprintf(f, ", \"size\": %llu, \"arrival\": %lld, \"sender\": ",
            (unsigned long long)env->body_size, (long long)env->created);
    q_json_str(f, env->sender);
    fprintf(f, ", \"attempts\": %u", env->attempts);
}

static void q_list_json_item(struct q_walk *w, const struct q_item *it)
{
    fputs(w->seen > 0 ? ",\n " : "[\n ", w->out);
    q_json_common(w->out, it);
    if (it->env != NULL) {
        fputs(", \"recipients\": ", w->out);
        q_json_rcpts(w->out, it->env, false);
    }
    fputs("}", w->out);
}

/* ================= show ================= */

static const char *q_ret_name(int ret)
{
    switch (ret) {
    case SMTP_RET_FULL:
        return "FULL";
    case SMTP_RET_HDRS:
        return "HDRS";
    default:
        return "";
    }
}

/*
 * The message's headers (or all of it) through t. 0, or -1 with errno on a
 * read error. The incomplete end of a UTF-8 sequence is carried from one
 * read to the next so that a character split by a read is not mangled.
 */
static int q_pump(struct queue *q, const char *id, struct q_text *t)
{
    struct queue_body *b;
    if (queue_body_open_any(q, id, &b, NULL) < 0)
        return -1;
    unsigned char buf[8192 + 4];
    size_t have = 0;
    int rc = 0;
    while (!t->stop) {
        ssize_t r = queue_body_read(b, buf + have, sizeof(buf) - have);
        if (r < 0) {
            rc = -1;
            break;
        }
        if (r == 0) {
            q_text_put(t, buf, have, true);
            break;
        }
        have += (size_t)r;
        size_t used = q_text_put(t, buf, have, false);
        memmove(buf, buf + used, have - used);
        have -= used;
    }
    int saved = errno;
    queue_body_close(b);
    errno = saved;
    return rc;
}

static void q_show_human(FILE *f, struct queue *q, const struct q_item *it,
                         bool body, int *err)
{
    const struct queue_env *env = it->env;
    char when[32];
    fprintf(f, "*** ENVELOPE ***\n");
    fprintf(f, "id: %s\nstate: %s\n", it->id, it->held ? "held" : "active");
    q_asctime(env->created, when);
    fprintf(f, "arrival: %s (%lld)\n", when, (long long)env->created);
    fprintf(f, "size: %llu\n", (unsigned long long)env->body_size);
    fputs("sender: <", f);
    q_put(f, env->sender);
    fprintf(f, ">\nattempts: %u\nflags:%s%s%s%s\n", env->attempts,
            env->flags & QUEUE_F_SMTPUTF8 ? " SMTPUTF8" : "",
            env->flags & QUEUE_F_8BITMIME ? " 8BITMIME" : "",
            env->flags & QUEUE_F_BINARYMIME ? " BINARYMIME" : "",
            env->flags == 0 ? " -" : "");
    fprintf(f, "ret: %s\n", env->ret != 0 ? q_ret_name(env->ret) : "-");
    static const char *const labels[] = {"envid", "client-address", "client-helo",
                                         "session", "auth-user"};
    const char *vals[] = {env->envid, env->client_addr, env->client_helo,
                          env->session_id, env->auth_user};
    for (size_t i = 0; i < 5; i++) {
        fprintf(f, "%s: ", labels[i]);
        q_put(f, vals[i][0] != '\0' ? vals[i] : "-");
        fputc('\n', f);
    }
    fprintf(f, "recipients: %zu\n", env->nrcpts);
    for (size_t k = 0; k < env->nrcpts; k++) {
        const struct queue_rcpt *r = &env->rcpts[k];
        fprintf(f, "  %-7s <", q_state_name(r->state));
        q_put(f, r->address);
        fputc('>', f);
        if (r->status[0] != '\0') {
            fputs(" (", f);
            q_put(f, r->status);
            fputc(')', f);
        }
        if (r->orcpt[0] != '\0') {
            fputs(" orcpt=", f);
            q_put(f, r->orcpt);
        }
        if (r->notify != 0)
            fprintf(f, " notify=%s%s%s%s", r->notify & SMTP_NOTIFY_NEVER ? "NEVER," : "",
                    r->notify & SMTP_NOTIFY_SUCCESS ? "SUCCESS," : "",
                    r->notify & SMTP_NOTIFY_FAILURE ? "FAILURE," : "",
                    r->notify & SMTP_NOTIFY_DELAY ? "DELAY," : "");
        fputc('\n', f);
    }
    fprintf(f, "*** %s ***\n", body ? "MESSAGE" : "HEADERS");
    struct q_text t = {.f = f, .headers = !body};
    if (q_pump(q, it->id, &t) < 0) {
        fflush(f);
        fprintf(stderr, "estafeta queue show: %s: cannot read the message: %s\n",
                it->id, strerror(errno));
        *err = 1;
    }
    if (t.linelen > 0)
        fputc('\n', f); /* a message that does not end with a line end */
}

static void q_show_json(FILE *f, struct queue *q, const struct q_item *it,
                        bool body, int *err)
{
    const struct queue_env *env = it->env;
    q_json_common(f, it);
    static const struct {
        unsigned bit;
        const char *name;
    } fl[] = {{QUEUE_F_SMTPUTF8, "SMTPUTF8"},
              {QUEUE_F_8BITMIME, "8BITMIME"},
              {QUEUE_F_BINARYMIME, "BINARYMIME"}};
    fputs(",\n \"flags\": [", f);
    const char *sep = "";
    for (size_t i = 0; i < sizeof(fl) / sizeof(fl[0]); i++) {
        if (env->flags & fl[i].bit) {
            fprintf(f, "%s\"%s\"", sep, fl[i].name);
            sep = ", ";
        }
    }
    fputs("]", f);
    fputs(", \"ret\": ", f);
    if (env->ret != 0)
        fprintf(f, "\"%s\"", q_ret_name(env->ret));
    else
        fputs("null", f);
    fputs(",\n \"envid\": ", f);
    q_json_str(f, env->envid);
    fputs(", \"client_address\": ", f);
    q_json_str(f, env->client_addr);
    fputs(", \"client_helo\": ", f);
    q_json_str(f, env->client_helo);
    fputs(", \"session\": ", f);
    q_json_str(f, env->session_id);
    fputs(", \"auth_user\": ", f);
    q_json_str(f, env->auth_user);
    fputs(",\n \"recipients\": ", f);
    q_json_rcpts(f, env, true);
    fprintf(f, ",\n \"%s\": \"", body ? "message" : "headers");
    struct q_text t = {.f = f, .json = true, .headers = !body};
    if (q_pump(q, it->id, &t) < 0) {
        fflush(f);
        fprintf(stderr, "estafeta queue show: %s: cannot read the message: %s\n",
                it->id, strerror(errno));
        *err = 1;
    }
    fputs("\"}\n", f);
}

/* ================= the running server ================= */

/* The pid file names a live process that is an estafeta (by its name in
 * /proc, when there is a /proc): a stale file must not make us signal an
 * unrelated process, for which SIGUSR1 is fatal. */
static bool q_is_estafeta(long pid)
{
    char path[64], comm[64], self[Q_PATH_MAX];
    snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return access("/proc/self", F_OK) != 0; /* no /proc: cannot tell */
    bool ok = fgets(comm, sizeof(comm), f) != NULL;
    fclose(f);
    if (!ok)
        return false;
    comm[strcspn(comm, "\n")] = '\0';
    if (strcmp(comm, "estafeta") == 0)
        return true;
    /* Installed under another name: the same name as our program's (the
     * kernel keeps 15 characters of it). */
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return false;
    self[n] = '\0';
    const char *base = strrchr(self, '/');
    char want[16];
    snprintf(want, sizeof(want), "%.15s", base != NULL ? base + 1 : self);
    return strcmp(comm, want) == 0;
}

/* SIGUSR1 to the server: 0 sent (pid in *pid_r), 1 not running, -1 not
 * allowed (errno). */
static int q_poke_server(const char *data_dir, long *pid_r)
{
    char path[Q_PATH_MAX], text[64];
    *pid_r = 0;
    if ((size_t)snprintf(path, sizeof(path), "%s/estafeta.pid", data_dir) >= sizeof(path))
        return 1;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return 1;
    ssize_t n = read(fd, text, sizeof(text) - 1);
    close(fd);
    if (n <= 0)
        return 1;
    text[n] = '\0';
    char *end;
    errno = 0;
    long pid = strtol(text, &end, 10);
    if (errno != 0 || end == text || pid <= 1 || pid > INT32_MAX ||
        strspn(end, " \t\r\n") != strlen(end))
        return 1;
    /* Named first: a pid reused by another user's process is "not
     * running", not "not allowed". */
    if (!q_is_estafeta(pid))
        return 1;
    if (kill((pid_t)pid, SIGUSR1) < 0)
        return errno == ESRCH ? 1 : -1;
    *pid_r = pid;
    return 0;
}

/* ================= privileges ================= */

/*
 * Becomes the queue's owner (see the top of the file). Returns 0, or an
 * exit status after saying why.
 */
static int q_become_owner(const struct config *cfg, const char *qdir,
                          const char *cmd, bool writes)
{
    struct passwd *pw = NULL;
    uid_t uid = 0;
    gid_t gid = 0;
    bool known = false;
    if (cfg->run_as != NULL) {
        pw = getpwnam(cfg->run_as);
        if (pw == NULL) {
            fprintf(stderr, "estafeta queue %s: run-as user '%s' does not exist\n",
                    cmd, cfg->run_as);
            return EX_CONFIG;
        }
        uid = pw->pw_uid;
        gid = pw->pw_gid;
        known = true;
    } else {
        struct stat st;
        if (stat(qdir, &st) == 0 && st.st_uid != 0) {
            uid = st.st_uid;
            gid = st.st_gid;
            pw = getpwuid(uid);
            known = true;
        }
    }
    if (geteuid() == 0) {
        if (!known || uid == 0)
            return 0;
        int r = pw != NULL ? initgroups(pw->pw_name, gid) : setgroups(0, NULL);
        if (r < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
            fprintf(stderr, "estafeta queue %s: cannot switch to the queue's owner "
                            "(uid %ld): %s\n", cmd, (long)uid, strerror(errno));
            return EX_OSERR;
        }
        if (setuid(0) == 0) {
            fprintf(stderr, "estafeta queue %s: privileges could not be dropped\n",
                    cmd);
            return EX_OSERR;
        }
        return 0;
    }
    if (!known || geteuid() == uid || !writes)
        return 0;
    if (pw != NULL)
        fprintf(stderr, "estafeta queue %s: permission denied: the queue belongs to "
                        "%s; run this as root or as %s\n", cmd, pw->pw_name,
                pw->pw_name);
    else
        fprintf(stderr, "estafeta queue %s: permission denied: the queue belongs "
                        "to uid %ld; run this as root or as that user\n", cmd,
                (long)uid);
    return EX_NOPERM;
}

/* ================= actions ================= */

static const char *q_done_word(enum q_action a)
{
    switch (a) {
    case QA_FLUSH:
        return "queued for immediate delivery";
    case QA_HOLD:
        return "placed on hold";
    case QA_RELEASE:
        return "released from hold";
    case QA_DELETE:
        return "deleted";
    case QA_BOUNCE:
        return "bounced";
    default:
        return "";
    }
}

/*
 * One message's outcome, printed as it happens: result "done" (nrcpt:
 * recipients bounced, or -1), "skipped" or "error" with a reason. Errors
 * are also said on stderr, with errno's text.
 */
static void q_outcome(struct q_walk *w, const char *id, const char *result,
                      const char *reason, long nrcpt)
{
    FILE *f = w->out;
    if (strcmp(result, "error") == 0) {
        fprintf(stderr, "estafeta queue %s: %s: %s: %s\n", w->cmd, id, reason,
                strerror(errno));
        w->error = true;
    } else if (strcmp(result, "done") == 0) {
        w->done++;
    }
    if (w->o->json) {
        fprintf(f, "%s{\"id\": \"%s\", \"result\": \"%s\"", w->seen > 0 ? ",\n " : "\n ",
                id, result);
        if (reason != NULL) {
            fputs(", \"reason\": ", f);
            q_json_str(f, reason);
        }
        if (nrcpt >= 0)
            fprintf(f, ", \"recipients\": %ld", nrcpt);
        fputs("}", f);
    } else if (reason != NULL) {
        fprintf(f, "%s: %s: %s\n", id, result, reason);
    } else if (nrcpt >= 0) {
        fprintf(f, "%s: %s (%ld recipient%s)\n", id, q_done_word(w->a), nrcpt,
                nrcpt == 1 ? "" : "s");
    } else {
        fprintf(f, "%s: %s\n", id, q_done_word(w->a));
    }
}

/* EBUSY from the queue: only the server changes its accept log
 * (doc/queue.md). */
#define Q_IN_LOG "being delivered (in the accept log; the server delivers it, " \
                 "or recovers it when it starts): try again in a moment"

/* bounce: every pending recipient failed, so the server returns the message
 * to its sender (a DSN) when it next loads it. A held message is released
 * first: the server must see it to send the bounce. */
static void q_bounce(struct q_walk *w, struct q_item *it)
{
    size_t n = 0, failed = 0;
    for (size_t k = 0; k < it->env->nrcpts; k++)
        n += it->env->rcpts[k].state == QUEUE_RCPT_PENDING;
    if (n == 0) {
        q_outcome(w, it->id, "skipped", "no pending recipient", -1);
        return;
    }
    if (it->held && queue_release(w->q, it->id) < 0) {
        q_outcome(w, it->id, "error", "cannot release it to bounce it", -1);
        return;
    }
    for (size_t k = 0; k < it->env->nrcpts; k++) {
        if (it->env->rcpts[k].state != QUEUE_RCPT_PENDING)
            continue;
        if (queue_rcpt_update(w->q, it->id, k, QUEUE_RCPT_FAILED, Q_BOUNCE_STATUS) < 0) {
            if (errno == EBUSY && failed == 0) {
                q_outcome(w, it->id, "skipped", Q_IN_LOG, -1);
                return;
            }
            break;
        }
        failed++;
    }
    w->bounced += failed;
    if (failed == n)
        q_outcome(w, it->id, "done", NULL, (long)failed);
    else
        q_outcome(w, it->id, "error", "cannot record the bounce", (long)failed);
}

/* A change made by queue_hold/release/remove: done, gone meanwhile, or an
 * error. */
static void q_changed(struct q_walk *w, const char *id, int r, const char *what)
{
    if (r == 0)
        q_outcome(w, id, "done", NULL, -1);
    else if (errno == ENOENT)
        q_outcome(w, id, "skipped", "left the queue meanwhile", -1);
    else if (errno == EBUSY) /* in the server's accept log (doc/queue.md) */
        q_outcome(w, id, "skipped", Q_IN_LOG, -1);
    else
        q_outcome(w, id, "error", what, -1);
}

static void q_act(struct q_walk *w, struct q_item *it)
{
    switch (w->a) {
    case QA_FLUSH:
        if (it->held)
            q_outcome(w, it->id, "skipped", "held (release it first)", -1);
        else
            q_outcome(w, it->id, "done", NULL, -1);
        break;
    case QA_HOLD:
        if (it->held)
            q_outcome(w, it->id, "skipped", "already held", -1);
        else
            q_changed(w, it->id, queue_hold(w->q, it->id), "cannot hold it");
        break;
    case QA_RELEASE:
        if (!it->held)
            q_outcome(w, it->id, "skipped", "not held", -1);
        else
            q_changed(w, it->id, queue_release(w->q, it->id), "cannot release it");
        break;
    case QA_DELETE:
        q_changed(w, it->id, queue_remove(w->q, it->id), "cannot delete it");
        break;
    case QA_BOUNCE:
        if (it->env == NULL)
            q_outcome(w, it->id, "skipped", "corrupt queue file", -1);
        else
            q_bounce(w, it);
        break;
    case QA_LIST:
    case QA_SHOW:
        break;
    }
}

static void q_show(struct q_walk *w, struct q_item *it)
{
    int rerr = 0;
    if (it->env == NULL) {
        fprintf(stderr, "estafeta queue show: %s: corrupt queue file (set aside at "
                        "the next server start)\n", it->id);
        w->error = true;
    } else if (w->o->json) {
        q_show_json(w->out, w->q, it, w->o->body, &rerr);
    } else {
        q_show_human(w->out, w->q, it, w->o->body, &rerr);
    }
    if (rerr != 0)
        w->error = true;
}

static void q_handle(struct q_walk *w, struct q_item *it)
{
    if (w->a == QA_LIST && w->o->json)
        q_list_json_item(w, it);
    else if (w->a == QA_LIST)
        q_list_human_item(w, it);
    else if (w->a == QA_SHOW)
        q_show(w, it);
    else
        q_act(w, it);
    w->seen++;
}

/* After an action: the summary, and the server's part. poked: 0 the server
 * was signalled (pid), 1 not running, -1 not allowed, -2 not tried. */
static void q_act_end(struct q_walk *w, int poked, long pid)
{
    FILE *f = w->out;
    if (w->o->json) {
        fprintf(f, "%s], \"done\": %zu", w->seen > 0 ? "\n " : "", w->done);
        if (w->a == QA_BOUNCE)
            fprintf(f, ", \"recipients_bounced\": %zu", w->bounced);
        if (poked != -2)
            fprintf(f, ", \"server_signalled\": %s", poked == 0 ? "true" : "false");
        fputs("}\n", f);
        return;
    }
    fprintf(f, "%s: %zu message%s %s", w->cmd, w->done, w->done == 1 ? "" : "s",
            q_done_word(w->a));
    if (w->a == QA_BOUNCE)
        fprintf(f, " (%zu recipient%s)", w->bounced, w->bounced == 1 ? "" : "s");
    fputc('\n', f);
    if (poked == 0)
        fprintf(f, "%s: the server (pid %ld) was asked to run the queue\n", w->cmd, pid);
}

/* ================= main ================= */

static int q_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int q_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("estafeta queue: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n", stderr);
    fputs(queue_usage_text, stderr);
    return EX_USAGE;
}

enum {
    OPT_DATA_DIR = 256,
    OPT_JSON,
    OPT_ALL,
    OPT_HELD,
    OPT_BODY,
    OPT_SENDER,
    OPT_RECIPIENT,
    OPT_DOMAIN,
};

/* "<addr>" -> "addr"; anything else as it is. A copy. */
static char *q_unbracket(const char *a)
{
    size_t n = strlen(a);
    if (n >= 2 && a[0] == '<' && a[n - 1] == '>')
        return xstrndup(a + 1, n - 2);
    return xstrdup(a);
}

/* 0, or an exit status (after the message). */
static int q_parse(int argc, char **argv, struct q_opts *o)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"json", no_argument, NULL, OPT_JSON},
        {"all", no_argument, NULL, OPT_ALL},
        {"held", no_argument, NULL, OPT_HELD},
        {"body", no_argument, NULL, OPT_BODY},
        {"sender", required_argument, NULL, OPT_SENDER},
        {"recipient", required_argument, NULL, OPT_RECIPIENT},
        {"domain", required_argument, NULL, OPT_DOMAIN},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 0; /* glibc: full re-initialisation (permutation state too) */
    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        const char *a = optarg;
        switch (c) {
        case 'c':
            o->config_path = a;
            break;
        case OPT_DATA_DIR:
            o->data_dir = a;
            break;
        case OPT_JSON:
            o->json = true;
            break;
        case OPT_ALL:
            o->all = true;
            break;
        case OPT_HELD:
            o->held_only = true;
            break;
        case OPT_BODY:
            o->body = true;
            break;
        case OPT_SENDER:
            /* "<addr>" as in SMTP; "" or "<>" is the null sender */
            strs_add(&o->senders, q_unbracket(a));
            break;
        case OPT_RECIPIENT:
            strs_add(&o->rcpts, q_unbracket(a));
            if (o->rcpts.v[o->rcpts.n - 1][0] == '\0')
                return q_usage_error("empty --recipient");
            break;
        case OPT_DOMAIN:
            if (a[0] == '@')
                a++;
            if (a[0] == '\0' || strchr(a, '@') != NULL)
                return q_usage_error("--domain wants a domain, not '%s'", optarg);
            strs_add(&o->domains, xstrdup(a));
            break;
        case 'h':
            fputs(queue_usage_text, stdout);
            return -1;
        default:
            return q_usage_error("unknown option or missing value: %s",
                                 argv[optind - 1]);
        }
    }
    for (int i = optind; i < argc; i++)
        strs_add(&o->args, argv[i]);
    return 0;
}

static void q_opts_free(struct q_opts *o)
{
    struct q_strs *owned[] = {&o->senders, &o->rcpts, &o->domains};
    for (size_t k = 0; k < 3; k++) {
        for (size_t i = 0; i < owned[k]->n; i++)
            free((char *)owned[k]->v[i]);
        free(owned[k]->v);
    }
    free(o->args.v);
}

/* After parsing: the action and whether its arguments make sense. */
static int q_check_args(const struct q_opts *o, size_t *act_r)
{
    if (o->args.n == 0)
        return q_usage_error("which action?");
    size_t k;
    for (k = 0; k < sizeof(q_actions) / sizeof(q_actions[0]); k++)
        if (strcmp(o->args.v[0], q_actions[k].name) == 0)
            break;
    if (k == sizeof(q_actions) / sizeof(q_actions[0]))
        return q_usage_error("unknown action '%s'", o->args.v[0]);
    *act_r = k;
    enum q_action a = q_actions[k].action;
    bool selectors = q_has_addr_selectors(o) || o->held_only;
    if (a == QA_SHOW && (o->args.n != 2 || selectors || o->all))
        return q_usage_error("show takes exactly one message id");
    if (o->body && a != QA_SHOW)
        return q_usage_error("--body goes with show");
    if (q_actions[k].writes && o->args.n == 1 && !selectors && !o->all)
        return q_usage_error("%s: give message ids, a selector (--sender, "
                             "--recipient, --domain, --held) or --all",
                             o->args.v[0]);
    return 0;
}

int cmd_queue(int argc, char **argv)
{
    struct q_opts o;
    memset(&o, 0, sizeof(o));
    size_t ak = 0;
    int ex = q_parse(argc, argv, &o);
    if (ex == 0)
        ex = q_check_args(&o, &ak);
    if (ex != 0) {
        q_opts_free(&o);
        return ex < 0 ? 0 : ex;
    }
    enum q_action a = q_actions[ak].action;
    const char *cmd = q_actions[ak].name;
    /* The queue's own notices (queue.held ...) are for the server's log;
     * here only what went wrong. */
    log_set_level(LOG_WARN);

    struct buf err;
    buf_init(&err, 4096);
    struct config *cfg = cmd_load_config_norefs(o.config_path, o.data_dir, &err);
    if (cfg == NULL) {
        fprintf(stderr, "estafeta queue: %s\n", buf_cstr(&err));
        buf_free(&err);
        q_opts_free(&o);
        return EX_CONFIG;
    }
    char qdir[Q_PATH_MAX];
    if ((size_t)snprintf(qdir, sizeof(qdir), "%s/queue", cfg->data_dir) >= sizeof(qdir)) {
        fprintf(stderr, "estafeta queue: data-dir path too long\n");
        ex = EX_CONFIG;
        goto out;
    }
    if ((ex = q_become_owner(cfg, qdir, cmd, q_actions[ak].writes)) != 0)
        goto out;

    struct stat st;
    if (!q_actions[ak].writes && stat(qdir, &st) < 0 && errno == ENOENT) {
        /* Never created (the server has not run yet): nothing queued; not
         * created from here either, by a user who may not own it. */
        if (a == QA_SHOW) {
            fputs("estafeta queue show: ", stderr);
            q_put(stderr, o.args.v[1]);
            fputs(": no such message in the queue\n", stderr);
            ex = EX_NOINPUT;
        } else if (o.json) {
            fputs("[]\n", stdout);
        } else {
            fputs("Mail queue is empty\n", stdout);
        }
        goto out;
    }
    struct queue *q = queue_fs_open(qdir, &err);
    if (q == NULL) {
        bool perm = errno == EACCES || errno == EPERM;
        fprintf(stderr, "estafeta queue %s: cannot %s the queue: %s\n", cmd,
                q_actions[ak].writes ? "open" : "read", buf_cstr(&err));
        if (perm && cfg->run_as != NULL)
            fprintf(stderr, "estafeta queue %s: run this as root or as %s\n", cmd,
                    cfg->run_as);
        ex = perm ? EX_NOPERM : EX_IOERR;
        goto out;
    }

    struct q_walk w = {.q = q, .o = &o, .a = a, .cmd = cmd, .out = stdout};
    if (q_actions[ak].writes && o.json)
        fprintf(stdout, "{\"action\": \"%s\", \"messages\": [", cmd);
    q_walk(&w);
    if (a == QA_LIST && o.json) {
        fputs(w.seen > 0 ? "\n]\n" : "[]\n", stdout);
    } else if (a == QA_LIST) {
        q_list_human_end(&w);
    } else if (a != QA_SHOW) {
        /* flush asks for a queue run even when nothing was selected (an
         * empty --all); release and bounce only when they changed
         * something. */
        int poked = -2, perr = 0;
        long pid = 0;
        if ((a == QA_FLUSH && (w.done > 0 || o.args.n == 1)) ||
            ((a == QA_RELEASE || a == QA_BOUNCE) && w.done > 0)) {
            poked = q_poke_server(cfg->data_dir, &pid);
            perr = errno;
        }
        q_act_end(&w, poked, pid);
        fflush(stdout);
        if (poked == 1)
            fprintf(stderr, "estafeta queue %s: the server is not running: %s\n", cmd,
                    a == QA_FLUSH   ? "nothing was flushed"
                    : a == QA_BOUNCE ? "the bounces are sent when it starts"
                                     : "the messages are delivered when it starts");
        if (poked == -1)
            fprintf(stderr, "estafeta queue %s: cannot signal the server (pid file "
                            "%s/estafeta.pid): %s\n", cmd, cfg->data_dir,
                    strerror(perr));
        /* bounce needs no signal to take effect: the server sends the
         * bounces when it next loads the messages, at the latest at start. */
        if (a != QA_BOUNCE && poked == 1)
            ex = EX_TEMPFAIL;
        if (a != QA_BOUNCE && poked == -1)
            ex = EX_NOPERM;
    }
    if (w.error)
        ex = EX_IOERR;
    else if (w.missing > 0)
        ex = EX_NOINPUT;
    queue_close(q);
out:
    if (fflush(stdout) != 0 && ex == 0)
        ex = EX_IOERR;
    buf_free(&err);
    config_free(cfg);
    q_opts_free(&o);
    return ex;
}
