/*
 * bounce: a DSN about a queued message, committed as a new queued message.
 * Contract in bounce.h; the text is proto/dsn.c's, this file only supplies
 * what is not pure (the clock, random tokens, the queue).
 *
 * One attempt writes the head, streams the original through dsn_copy and
 * commits. Three things found only while streaming make it abort the
 * queue message (nothing is left) and start again, at most a few times:
 *  - the original turned out larger than bounce-size (env->body_size was
 *    0 or stale): again with headers only, saying so in part 1;
 *  - the header section passed header-section: again, saying so;
 *  - the boundary occurs in the original (cannot happen by chance with
 *    142 random bits, and nobody can know the boundary in advance): again
 *    with a new one, so the report's structure never depends on luck.
 */
#include "relay/bounce.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/xalloc.h"
#include "proto/dsn.h"
#include "proto/smtp_cmd.h"
#include "lib/random.h"

#define BOUNCE_CHUNK 65536u
#define BOUNCE_ATTEMPTS 4

bool bounce_wanted(unsigned notify, enum bounce_action action)
{
    return dsn_wanted(notify, (enum dsn_action)action);
}

const char *bounce_action_name(enum bounce_action action)
{
    return dsn_action_name((enum dsn_action)action);
}

static enum dsn_action map_action(enum bounce_action a)
{
    switch (a) {
    case BOUNCE_FAILED: return DSN_FAILED;
    case BOUNCE_DELAYED: return DSN_DELAYED;
    case BOUNCE_DELIVERED: return DSN_DELIVERED;
    case BOUNCE_RELAYED: return DSN_RELAYED;
    case BOUNCE_EXPANDED: return DSN_EXPANDED;
    }
    return DSN_FAILED;
}

enum attempt_result { A_OK, A_ERROR, A_TOO_BIG, A_CUT, A_BOUNDARY };

struct attempt {
    struct queue *q;
    const struct queue_env *env;
    struct dsn_report *r;
    size_t header_max;
    unsigned char *in;      /* BOUNCE_CHUNK */
    char *out;              /* BOUNCE_CHUNK + DSN_COPY_SLACK */
};

/* Writes b to m and empties it. */
static int flush(struct queue_msg *m, struct buf *b)
{
    if (b->len > 0 && queue_msg_write(m, b->data, b->len) < 0)
        return -1;
    buf_reset(b);
    return 0;
}

static int write_head(struct queue_msg *m, const struct dsn_report *r,
                      bool *eightbit_r)
{
    struct dsn_writer w;
    struct buf b;
    int rc = 0;
    buf_init(&b, 4 * BOUNCE_CHUNK);
    dsn_writer_init(&w, r);
    for (;;) {
        int n = dsn_writer_next(&w, &b);
        if (n == 0)
            break;
        if (n < 0 && b.len == 0) {
            /* A piece larger than the whole buffer: dsn.h bounds them far
             * below, so this is a bug, not input. */
            errno = EFBIG;
            rc = -1;
            break;
        }
        if ((n < 0 || b.len >= BOUNCE_CHUNK) && flush(m, &b) < 0) {
            rc = -1;
            break;
        }
    }
    if (rc == 0)
        rc = flush(m, &b);
    *eightbit_r = dsn_writer_8bit(&w);
    buf_free(&b);
    return rc;
}

/* Streams the original through c into m. */
static int copy_original(struct attempt *a, struct queue_msg *m, struct dsn_copy *c)
{
    struct queue_body *body;
    if (queue_body_open(a->q, a->env->id, &body) < 0)
        return -1;
    int rc = 0;
    while (!c->done) {
        ssize_t n = queue_body_read(body, a->in, BOUNCE_CHUNK);
        if (n < 0) {
            rc = -1;
            break;
        }
        if (n == 0)
            break;
        size_t o;
        dsn_copy_feed(c, (const char *)a->in, (size_t)n, a->out, &o);
        if (o > 0 && queue_msg_write(m, a->out, o) < 0) {
            rc = -1;
            break;
        }
    }
    int saved = errno;
    queue_body_close(body);
    errno = saved;
    return rc;
}

static enum attempt_result attempt_one(struct attempt *a, char newid_r[QUEUE_ID_SIZE])
{
    unsigned char rnd[DSN_RANDOM_BYTES + 18];
    char boundary[DSN_BOUNDARY_SIZE], msgid[DSN_TOKEN_MAX];
    random_fill_unique(rnd, sizeof(rnd));
    dsn_boundary(rnd, boundary);
    dsn_token(rnd + DSN_RANDOM_BYTES, 18, msgid, sizeof(msgid));
    a->r->boundary = boundary;
    a->r->message_id = msgid;

    struct queue_msg *m;
    if (queue_msg_open(a->q, &m) < 0)
        return A_ERROR;
    bool head8 = false;
    struct dsn_copy c;
    bool full = a->r->ret == DSN_RETURN_FULL;
    dsn_copy_init(&c, !full, full ? a->r->bounce_size : a->header_max, boundary);
    struct buf tail;
    buf_init(&tail, 256);
    enum attempt_result res = A_ERROR;
    if (write_head(m, a->r, &head8) < 0 || copy_original(a, m, &c) < 0)
        goto fail;
    if (c.boundary_seen) {
        res = A_BOUNDARY;
        goto fail;
    }
    if (c.over) {
        res = A_TOO_BIG;
        goto fail;
    }
    if (c.cut && !a->r->header_cut) {
        res = A_CUT;
        goto fail;
    }
    if (dsn_write_end(a->r, &c, &tail) < 0 || flush(m, &tail) < 0)
        goto fail;
    buf_free(&tail);

    struct queue_rcpt qr = {
        .address = a->env->sender, .orcpt = (char *)"", .notify = SMTP_NOTIFY_NEVER,
        .state = QUEUE_RCPT_PENDING, .status = (char *)"",
    };
    struct queue_env ne = {
        .sender = (char *)"",
        .created = (int64_t)time(NULL),
        .flags = (a->r->smtputf8 ? QUEUE_F_SMTPUTF8 : 0u) |
                 (head8 || c.eightbit ? QUEUE_F_8BITMIME : 0u),
        .ret = SMTP_RET_UNSPEC,
        .envid = (char *)"",
        .client_addr = (char *)"",
        .client_helo = (char *)"",
        .session_id = (char *)"",
        .auth_user = (char *)"",
        .rcpts = &qr,
        .nrcpts = 1,
    };
    snprintf(newid_r, QUEUE_ID_SIZE, "%s", queue_msg_id(m));
    int result = 0;
    /* queue_commit consumes m whatever happens; a failed commit leaves
     * nothing behind. */
    if (queue_commit(a->q, &m, &ne, 1, &result) < 0) {
        newid_r[0] = '\0';
        errno = result != 0 ? result : EIO;
        return A_ERROR;
    }
    return A_OK;

fail:;
    int saved = errno;
    buf_free(&tail);
    queue_msg_abort(m);
    errno = saved;
    return res;
}

int bounce_send(struct queue *q, const struct config *cfg, const struct queue_env *env,
                const struct bounce_rcpt *rcpts, size_t n, char newid_r[QUEUE_ID_SIZE])
{
    newid_r[0] = '\0';
    if (env->sender == NULL || env->sender[0] == '\0' || n == 0)
        return 0;

    struct dsn_rcpt *dr = xcalloc(n, sizeof(*dr));
    for (size_t i = 0; i < n; i++)
        dr[i] = (struct dsn_rcpt){
            .address = rcpts[i].address,
            .orcpt = rcpts[i].orcpt,
            .action = map_action(rcpts[i].action),
            .status = rcpts[i].status,
            .remote_mta = rcpts[i].remote_mta,
            .diagnostic = rcpts[i].diagnostic,
            .last_attempt = rcpts[i].last_attempt,
            .retry_until = rcpts[i].retry_until,
        };
    enum dsn_kind kind = dsn_kind_of(dr, n);
    size_t bounce_size = cfg->limits[LIM_BOUNCE_SIZE];
    struct dsn_report r = {
        .hostname = cfg->hostname,
        .queue_id = env->id,
        .sender = env->sender,
        .envid = env->envid,
        .client_helo = env->client_helo,
        .client_addr = env->client_addr,
        .arrival = env->created,
        .now = (int64_t)time(NULL),
        .smtputf8 = (env->flags & QUEUE_F_SMTPUTF8) != 0,
        .eightbit = (env->flags & (QUEUE_F_SMTPUTF8 | QUEUE_F_8BITMIME |
                                   QUEUE_F_BINARYMIME)) != 0,
        .ret = dsn_return_mode(env->ret, kind,
                               (env->flags & QUEUE_F_BINARYMIME) != 0,
                               env->body_size, bounce_size),
        .bounce_size = bounce_size,
        .header_max = cfg->limits[LIM_HEADER_SECTION],
        .rcpts = dr,
        .nrcpts = n,
    };
    struct attempt a = {
        .q = q, .env = env, .r = &r, .header_max = r.header_max,
        .in = xmalloc(BOUNCE_CHUNK), .out = xmalloc(BOUNCE_CHUNK + DSN_COPY_SLACK),
    };
    enum attempt_result res = A_ERROR;
    for (int i = 0; i < BOUNCE_ATTEMPTS; i++) {
        res = attempt_one(&a, newid_r);
        if (res == A_TOO_BIG)
            r.ret = DSN_RETURN_HDRS_SIZE;
        else if (res == A_CUT)
            r.header_cut = true;
        else if (res != A_BOUNDARY)
            break;
    }
    /* Success is logged by the callers, with their context; a failure here
     * too, since the delay-warning path may just retry later. */
    int saved = errno;
    if (res != A_OK) {
        if (res != A_ERROR)
            saved = EAGAIN; /* only the astronomically unlikely boundary case */
        log_kv(LOG_ERR, "bounce.failed", "qid", env->id, "error", strerror(saved),
               NULL);
        newid_r[0] = '\0';
    }
    free(a.in);
    free(a.out);
    free(dr);
    errno = saved;
    return res == A_OK ? 0 : -1;
}
