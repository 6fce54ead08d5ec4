/*
 * Tests for relay/bounce with the in-memory queue (and once with the fs
 * queue): the committed DSN's envelope, what part 3 holds for RET=HDRS,
 * RET=FULL, over bounce-size (also when the caller's body_size is stale),
 * a cut header section, SMTPUTF8/8BITMIME flags, never a DSN about a DSN,
 * and queue failures that must leave nothing behind.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "conf/config.h"
#include "harness.h"
#include "lib/buf.h"
#include "lib/limits.h"
#include "proto/smtp_cmd.h"
#include "queue/queue.h"
#include "relay/bounce.h"

static struct config test_cfg;

static const struct config *cfg_reset(void)
{
    memset(&test_cfg, 0, sizeof(test_cfg));
    test_cfg.hostname = (char *)"mail.example.test";
    for (int i = 0; i < LIM__COUNT; i++)
        test_cfg.limits[i] = limit_table[i].def;
    return &test_cfg;
}

static void count_cb(const char *id, void *arg)
{
    (void)id;
    (*(int *)arg)++;
}

static int queued(struct queue *q)
{
    int n = 0;
    queue_list(q, count_cb, &n);
    return n;
}

/* Queues an original from alice with two recipients; returns its loaded
 * envelope (body_size set). */
static struct queue_env *enqueue(struct queue *q, const char *sender, const char *body,
                                 size_t len, int ret, unsigned flags, const char *envid)
{
    struct queue_msg *m;
    if (queue_msg_open(q, &m) < 0)
        abort();
    char id[QUEUE_ID_SIZE];
    snprintf(id, sizeof(id), "%s", queue_msg_id(m));
    /* in pieces, as smtpd writes */
    for (size_t off = 0; off < len; off += 70000) {
        size_t n = len - off < 70000 ? len - off : 70000;
        if (queue_msg_write(m, body + off, n) < 0)
            abort();
    }
    struct queue_rcpt r[2] = {
        {.address = (char *)"bob@example.com", .orcpt = (char *)"rfc822;bob+2Bx@example.com",
         .notify = SMTP_NOTIFY_FAILURE, .status = (char *)""},
        {.address = (char *)"carol@example.org", .orcpt = (char *)"", .status = (char *)""},
    };
    struct queue_env env = {
        .sender = (char *)sender, .created = (int64_t)time(NULL) - 3600,
        .flags = flags, .ret = ret, .envid = (char *)envid,
        .client_addr = (char *)"192.0.2.1", .client_helo = (char *)"client.example",
        .session_id = (char *)"s1", .auth_user = (char *)"", .rcpts = r, .nrcpts = 2,
    };
    int result;
    if (queue_commit(q, &m, &env, 1, &result) < 0)
        abort();
    struct queue_env *e;
    if (queue_load(q, id, &e) < 0)
        abort();
    return e;
}

static void read_body(struct queue *q, const char *id, struct buf *out)
{
    struct queue_body *b;
    buf_init(out, 256 * 1024 * 1024);
    if (queue_body_open(q, id, &b) < 0)
        abort();
    char chunk[8192];
    ssize_t n;
    while ((n = queue_body_read(b, chunk, sizeof(chunk))) > 0)
        buf_append(out, chunk, (size_t)n);
    queue_body_close(b);
}

/* ---- a minimal reader of the DSN: header fields and the three parts ---- */

struct part {
    const char *p;       /* whole part: its header and content */
    size_t n;
    const char *content;
    size_t content_len;
};

/* Value of field `name` (first line only, enough for our checks) in the
 * header section at p (ending at the first empty line), into v. */
static bool header_get(const char *p, size_t n, const char *name, char *v, size_t cap)
{
    size_t nl = strlen(name);
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    size_t hn = end != NULL ? (size_t)(end - p) + 2 : n;
    for (size_t i = 0; i < hn; ) {
        const char *eol = memmem(p + i, hn - i, "\r\n", 2);
        size_t ll = eol != NULL ? (size_t)(eol - (p + i)) : hn - i;
        if (ll > nl && strncasecmp(p + i, name, nl) == 0 && p[i + nl] == ':') {
            const char *s = p + i + nl + 1;
            while (*s == ' ')
                s++;
            size_t vl = (size_t)(p + i + ll - s);
            if (vl >= cap)
                return false;
            memcpy(v, s, vl);
            v[vl] = '\0';
            return true;
        }
        i += ll + 2;
    }
    return false;
}

static bool split3(const struct buf *dsn, struct part parts[3])
{
    char ct[512], delim[128];
    const char *b;
    if (!header_get(dsn->data, dsn->len, "Content-Type", ct, sizeof(ct)))
        return false;
    /* the boundary is on the continuation line */
    const char *cte = memmem(dsn->data, dsn->len, "boundary=\"", 10);
    if (cte == NULL)
        return false;
    b = cte + 10;
    const char *q = strchr(b, '"');
    if (q == NULL || q - b > 100)
        return false;
    snprintf(delim, sizeof(delim), "\r\n--%.*s", (int)(q - b), b);
    size_t dl = strlen(delim);
    const char *p = memmem(dsn->data, dsn->len, delim, dl);
    const char *end = dsn->data + dsn->len;
    for (int k = 0; k < 3; k++) {
        if (p == NULL || end - p < (ptrdiff_t)dl + 2 || memcmp(p + dl, "\r\n", 2) != 0)
            return false;
        p += dl + 2;
        const char *nx = memmem(p, (size_t)(end - p), delim, dl);
        if (nx == NULL)
            return false;
        parts[k].p = p;
        parts[k].n = (size_t)(nx - p);
        const char *hend = memmem(p, parts[k].n, "\r\n\r\n", 4);
        if (hend == NULL)
            return false;
        parts[k].content = hend + 4;
        parts[k].content_len = (size_t)(nx - (hend + 4));
        p = nx;
    }
    /* the close, and nothing after it but CRLF */
    return end - p == (ptrdiff_t)dl + 4 && memcmp(p + dl, "--\r\n", 4) == 0;
}

static bool part_has(const struct part *pt, const char *s)
{
    return memmem(pt->content, pt->content_len, s, strlen(s)) != NULL;
}

static const char original[] =
    "Received: from client.example ([192.0.2.1])\r\n"
    "From: Alice <alice@example.test>\r\n"
    "To: bob@example.com, carol@example.org\r\n"
    "Subject: report\r\n"
    "\r\n"
    "line 1\r\n"
    ".\r\n"
    "last\r\n";

static struct bounce_rcpt failed_bob = {
    .address = "bob@example.com", .orcpt = "rfc822;bob+2Bx@example.com",
    .action = BOUNCE_FAILED, .remote_mta = "mx.example.com",
    .diagnostic = "550 5.1.1 <bob@example.com>: no such user", .last_attempt = 1795000000,
};

/* The DSN's envelope: null sender, one recipient (the original sender),
 * NOTIFY=NEVER, nothing else carried over. */
static void check_envelope(struct queue *q, const char *id, const char *to, unsigned flags)
{
    struct queue_env *e;
    CHECK_EQ_INT(queue_load(q, id, &e), 0);
    if (e == NULL)
        return;
    CHECK_EQ_STR(e->sender, "");
    CHECK_EQ_INT(e->nrcpts, 1);
    CHECK_EQ_STR(e->rcpts[0].address, to);
    CHECK_EQ_INT(e->rcpts[0].notify, SMTP_NOTIFY_NEVER);
    CHECK_EQ_STR(e->rcpts[0].orcpt, "");
    CHECK_EQ_INT(e->rcpts[0].state, QUEUE_RCPT_PENDING);
    CHECK_EQ_INT(e->ret, SMTP_RET_UNSPEC);
    CHECK_EQ_STR(e->envid, "");
    CHECK_EQ_STR(e->auth_user, "");
    CHECK_EQ_INT(e->flags, flags);
    CHECK(e->created >= (int64_t)time(NULL) - 60 && e->created <= (int64_t)time(NULL) + 1);
    queue_env_free(e);
}

TEST(failure_returns_full_message)
{
    const struct config *cfg = cfg_reset();
    struct queue *q = queue_mem_new();
    struct queue_env *env = enqueue(q, "alice@example.test", original, strlen(original),
                                    SMTP_RET_UNSPEC, 0, "ENV+2B1");
    char id[QUEUE_ID_SIZE] = "x";
    CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 1, id), 0);
    CHECK(id[0] != '\0' && strcmp(id, env->id) != 0);
    CHECK_EQ_INT(queued(q), 2);
    check_envelope(q, id, "alice@example.test", 0);
    struct buf dsn;
    read_body(q, id, &dsn);
    char v[512];
    CHECK(header_get(dsn.data, dsn.len, "Subject", v, sizeof(v)));
    CHECK_EQ_STR(v, "Undelivered Mail Returned to Sender");
    CHECK(header_get(dsn.data, dsn.len, "To", v, sizeof(v)));
    CHECK_EQ_STR(v, "<alice@example.test>");
    CHECK(header_get(dsn.data, dsn.len, "Auto-Submitted", v, sizeof(v)));
    CHECK_EQ_STR(v, "auto-replied");
    CHECK(header_get(dsn.data, dsn.len, "Message-ID", v, sizeof(v)));
    CHECK(strlen(v) > 20 && strstr(v, "@mail.example.test>") != NULL);
    struct part pt[3];
    CHECK(split3(&dsn, pt));
    CHECK(header_get(pt[1].p, pt[1].n, "Content-Type", v, sizeof(v)));
    CHECK_EQ_STR(v, "message/delivery-status");
    CHECK(part_has(&pt[1], "Original-Envelope-Id: ENV+1\r\n"));
    CHECK(part_has(&pt[1], "Original-Recipient: rfc822;bob+x@example.com\r\n"));
    CHECK(part_has(&pt[1], "Final-Recipient: rfc822; bob@example.com\r\nAction: failed\r\n"
                           "Status: 5.1.1\r\nRemote-MTA: dns; mx.example.com\r\n"));
    CHECK(part_has(&pt[1], "Received-From-MTA: dns; client.example ([192.0.2.1])\r\n"));
    char xq[64];
    snprintf(xq, sizeof(xq), "X-Estafeta-Queue-ID: %s\r\n", env->id);
    CHECK(part_has(&pt[1], xq));
    CHECK(header_get(pt[2].p, pt[2].n, "Content-Type", v, sizeof(v)));
    CHECK_EQ_STR(v, "message/rfc822");
    CHECK_EQ_INT(pt[2].content_len, strlen(original));
    CHECK(pt[2].content_len == strlen(original) &&
          memcmp(pt[2].content, original, strlen(original)) == 0);
    buf_free(&dsn);

    /* RET=FULL said explicitly: the same */
    queue_env_free(env);
    env = enqueue(q, "alice@example.test", original, strlen(original), SMTP_RET_FULL, 0, "");
    CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 1, id), 0);
    read_body(q, id, &dsn);
    CHECK(split3(&dsn, pt));
    CHECK(header_get(pt[2].p, pt[2].n, "Content-Type", v, sizeof(v)));
    CHECK_EQ_STR(v, "message/rfc822");
    CHECK(!part_has(&pt[1], "Original-Envelope-Id"));
    buf_free(&dsn);
    queue_env_free(env);
    queue_close(q);
}

TEST(ret_hdrs_returns_header_section)
{
    const struct config *cfg = cfg_reset();
    struct queue *q = queue_mem_new();
    struct queue_env *env = enqueue(q, "alice@example.test", original, strlen(original),
                                    SMTP_RET_HDRS, 0, "");
    char id[QUEUE_ID_SIZE];
    CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 1, id), 0);
    struct buf dsn;
    read_body(q, id, &dsn);
    struct part pt[3];
    CHECK(split3(&dsn, pt));
    char v[256];
    CHECK(header_get(pt[2].p, pt[2].n, "Content-Type", v, sizeof(v)));
    CHECK_EQ_STR(v, "text/rfc822-headers");
    size_t hl = (size_t)(strstr(original, "\r\n\r\n") - original) + 2;
    CHECK_EQ_INT(pt[2].content_len, hl);
    CHECK(memcmp(pt[2].content, original, hl) == 0);
    CHECK(!part_has(&pt[2], "line 1"));
    CHECK(part_has(&pt[0], "The header of your message is included below."));
    buf_free(&dsn);
    queue_env_free(env);
    queue_close(q);
}

TEST(over_bounce_size_returns_headers)
{
    struct config *cfg = (struct config *)cfg_reset();
    cfg->limits[LIM_BOUNCE_SIZE] = 1024;
    struct queue *q = queue_mem_new();
    size_t len = 5000;
    char *big = malloc(len + 1);
    size_t hl = strlen("Subject: big\r\n\r\n");
    memcpy(big, "Subject: big\r\n\r\n", hl);
    for (size_t i = hl; i < len; i++)
        big[i] = (i % 50 == 49) ? '\n' : (i % 50 == 48) ? '\r' : 'x';
    big[len] = '\0';
    struct queue_env *env = enqueue(q, "alice@example.test", big, len, SMTP_RET_FULL, 0, "");
    for (int stale = 0; stale < 2; stale++) {
        /* second round: the caller's body_size is stale (0), the copy
         * notices the size itself and starts again with headers */
        if (stale)
            env->body_size = 0;
        char id[QUEUE_ID_SIZE];
        int before = queued(q);
        CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 1, id), 0);
        CHECK_EQ_INT(queued(q), before + 1);
        struct buf dsn;
        read_body(q, id, &dsn);
        struct part pt[3];
        CHECK(split3(&dsn, pt));
        char v[256];
        CHECK(header_get(pt[2].p, pt[2].n, "Content-Type", v, sizeof(v)));
        CHECK_EQ_STR(v, "text/rfc822-headers");
        CHECK_EQ_INT(pt[2].content_len, hl - 2);
        CHECK(part_has(&pt[0], "larger than 1024 octets"));
        CHECK(dsn.len < 4000);
        buf_free(&dsn);
    }
    free(big);
    queue_env_free(env);
    queue_close(q);
}

TEST(delay_and_success_reports_carry_headers_only)
{
    const struct config *cfg = cfg_reset();
    struct queue *q = queue_mem_new();
    struct queue_env *env = enqueue(q, "alice@example.test", original, strlen(original),
                                    SMTP_RET_FULL, 0, "");
    struct bounce_rcpt d = {.address = "carol@example.org", .action = BOUNCE_DELAYED,
                            .diagnostic = "451 4.4.1 connection timed out",
                            .retry_until = (int64_t)time(NULL) + 86400};
    char id[QUEUE_ID_SIZE], v[256];
    CHECK_EQ_INT(bounce_send(q, cfg, env, &d, 1, id), 0);
    struct buf dsn;
    read_body(q, id, &dsn);
    CHECK(header_get(dsn.data, dsn.len, "Subject", v, sizeof(v)));
    CHECK_EQ_STR(v, "Delayed Mail (still being retried)");
    struct part pt[3];
    CHECK(split3(&dsn, pt));
    CHECK(header_get(pt[2].p, pt[2].n, "Content-Type", v, sizeof(v)));
    CHECK_EQ_STR(v, "text/rfc822-headers");
    CHECK(part_has(&pt[1], "Action: delayed\r\nStatus: 4.4.1\r\n"));
    CHECK(part_has(&pt[1], "Will-Retry-Until: "));
    buf_free(&dsn);

    struct bounce_rcpt s = {.address = "bob@example.com", .action = BOUNCE_RELAYED,
                            .remote_mta = "old.example.com", .diagnostic = "250 2.0.0 Ok"};
    CHECK_EQ_INT(bounce_send(q, cfg, env, &s, 1, id), 0);
    read_body(q, id, &dsn);
    CHECK(header_get(dsn.data, dsn.len, "Subject", v, sizeof(v)));
    CHECK_EQ_STR(v, "Successful Mail Delivery Report");
    CHECK(split3(&dsn, pt));
    CHECK(header_get(pt[2].p, pt[2].n, "Content-Type", v, sizeof(v)));
    CHECK_EQ_STR(v, "text/rfc822-headers");
    CHECK(part_has(&pt[1], "Action: relayed\r\nStatus: 2.0.0\r\n"));
    buf_free(&dsn);

    /* mixed: failure wins, and the whole message comes back */
    struct bounce_rcpt mix[2] = {d, failed_bob};
    CHECK_EQ_INT(bounce_send(q, cfg, env, mix, 2, id), 0);
    read_body(q, id, &dsn);
    CHECK(header_get(dsn.data, dsn.len, "Subject", v, sizeof(v)));
    CHECK_EQ_STR(v, "Undelivered Mail Returned to Sender");
    CHECK(split3(&dsn, pt));
    CHECK(header_get(pt[2].p, pt[2].n, "Content-Type", v, sizeof(v)));
    CHECK_EQ_STR(v, "message/rfc822");
    buf_free(&dsn);
    queue_env_free(env);
    queue_close(q);
}

TEST(never_a_dsn_about_a_dsn)
{
    const struct config *cfg = cfg_reset();
    struct queue *q = queue_mem_new();
    struct queue_env *env = enqueue(q, "", original, strlen(original), SMTP_RET_FULL, 0, "");
    char id[QUEUE_ID_SIZE] = "junk";
    CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 1, id), 0);
    CHECK_EQ_STR(id, "");
    CHECK_EQ_INT(queued(q), 1);
    queue_env_free(env);

    env = enqueue(q, "alice@example.test", original, strlen(original), SMTP_RET_FULL, 0, "");
    snprintf(id, sizeof(id), "junk");
    CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 0, id), 0);
    CHECK_EQ_STR(id, "");
    CHECK_EQ_INT(queued(q), 2);

    /* and the DSN itself, bounced, gives nothing */
    CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 1, id), 0);
    CHECK_EQ_INT(queued(q), 3);
    struct queue_env *dsn_env;
    CHECK_EQ_INT(queue_load(q, id, &dsn_env), 0);
    char id2[QUEUE_ID_SIZE] = "junk";
    CHECK_EQ_INT(bounce_send(q, cfg, dsn_env, &failed_bob, 1, id2), 0);
    CHECK_EQ_STR(id2, "");
    CHECK_EQ_INT(queued(q), 3);
    queue_env_free(dsn_env);
    queue_env_free(env);
    queue_close(q);
}

TEST(queue_failures_leave_nothing)
{
    const struct config *cfg = cfg_reset();
    struct queue *q = queue_mem_new();
    struct queue_env *env = enqueue(q, "alice@example.test", original, strlen(original),
                                    SMTP_RET_FULL, 0, "");
    struct { unsigned op; int err; } cases[] = {
        {QUEUE_MEM_FAIL_COMMIT, EIO},
        {QUEUE_MEM_FAIL_WRITE, EDQUOT},
        {QUEUE_MEM_FAIL_OPEN, ENOSPC},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        queue_mem_fail(q, cases[i].op, cases[i].err);
        char id[QUEUE_ID_SIZE] = "junk";
        errno = 0;
        CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 1, id), -1);
        CHECK_EQ_INT(errno, cases[i].err);
        CHECK_EQ_STR(id, "");
        queue_mem_fail(q, 0, 0);
        CHECK_EQ_INT(queued(q), 1);
    }
    /* the original is gone (removed meanwhile): an error, nothing queued */
    CHECK_EQ_INT(queue_remove(q, env->id), 0);
    char id[QUEUE_ID_SIZE];
    errno = 0;
    CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 1, id), -1);
    CHECK_EQ_INT(errno, ENOENT);
    CHECK_EQ_INT(queued(q), 0);
    /* and with the failure cleared it works again */
    queue_env_free(env);
    env = enqueue(q, "alice@example.test", original, strlen(original), SMTP_RET_FULL, 0, "");
    CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 1, id), 0);
    CHECK_EQ_INT(queued(q), 2);
    queue_env_free(env);
    queue_close(q);
}

TEST(smtputf8_and_8bit_flags)
{
    const struct config *cfg = cfg_reset();
    struct queue *q = queue_mem_new();
    const char u8[] = "From: \xc3\xa5sa@example.test\r\nSubject: h\xc3\xa9j\r\n\r\nbody \xc3\xa9\r\n";
    struct queue_env *env = enqueue(q, "\xc3\xa5sa@example.test", u8, strlen(u8),
                                    SMTP_RET_FULL, QUEUE_F_SMTPUTF8 | QUEUE_F_8BITMIME, "");
    char id[QUEUE_ID_SIZE], v[256];
    CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 1, id), 0);
    check_envelope(q, id, "\xc3\xa5sa@example.test", QUEUE_F_SMTPUTF8 | QUEUE_F_8BITMIME);
    struct buf dsn;
    read_body(q, id, &dsn);
    struct part pt[3];
    CHECK(split3(&dsn, pt));
    CHECK(header_get(pt[1].p, pt[1].n, "Content-Type", v, sizeof(v)));
    CHECK_EQ_STR(v, "message/global-delivery-status");
    CHECK(header_get(pt[2].p, pt[2].n, "Content-Type", v, sizeof(v)));
    CHECK_EQ_STR(v, "message/global");
    CHECK(header_get(dsn.data, dsn.len, "To", v, sizeof(v)));
    CHECK_EQ_STR(v, "<\xc3\xa5sa@example.test>");
    buf_free(&dsn);
    queue_env_free(env);

    /* 8BITMIME original, ASCII sender: 8BITMIME only, part 3 labelled 8bit */
    const char b8[] = "Subject: x\r\n\r\ncaf\xc3\xa9\r\n";
    env = enqueue(q, "alice@example.test", b8, strlen(b8), SMTP_RET_FULL, QUEUE_F_8BITMIME, "");
    CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 1, id), 0);
    check_envelope(q, id, "alice@example.test", QUEUE_F_8BITMIME);
    read_body(q, id, &dsn);
    CHECK(split3(&dsn, pt));
    CHECK(header_get(pt[2].p, pt[2].n, "Content-Transfer-Encoding", v, sizeof(v)));
    CHECK_EQ_STR(v, "8bit");
    CHECK(header_get(dsn.data, dsn.len, "Content-Transfer-Encoding", v, sizeof(v)));
    CHECK_EQ_STR(v, "8bit");
    buf_free(&dsn);

    /* the same with RET=HDRS: no 8-bit octet goes out, no 8BITMIME */
    queue_env_free(env);
    env = enqueue(q, "alice@example.test", b8, strlen(b8), SMTP_RET_HDRS, QUEUE_F_8BITMIME, "");
    CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 1, id), 0);
    check_envelope(q, id, "alice@example.test", 0);
    queue_env_free(env);

    /* BINARYMIME: headers only, said so */
    env = enqueue(q, "alice@example.test", b8, strlen(b8), SMTP_RET_FULL, QUEUE_F_BINARYMIME, "");
    CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 1, id), 0);
    read_body(q, id, &dsn);
    CHECK(split3(&dsn, pt));
    CHECK(header_get(pt[2].p, pt[2].n, "Content-Type", v, sizeof(v)));
    CHECK_EQ_STR(v, "text/rfc822-headers");
    CHECK(part_has(&pt[0], "binary MIME"));
    buf_free(&dsn);
    queue_env_free(env);
    queue_close(q);
}

TEST(header_section_cut)
{
    struct config *cfg = (struct config *)cfg_reset();
    cfg->limits[LIM_HEADER_SECTION] = 200;
    struct queue *q = queue_mem_new();
    char big[2000];
    size_t n = 0;
    while (n < 1500)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "X-Filler-%zu: abcdefghij\r\n", n);
    n += (size_t)snprintf(big + n, sizeof(big) - n, "\r\nbody\r\n");
    struct queue_env *env = enqueue(q, "alice@example.test", big, n, SMTP_RET_HDRS, 0, "");
    char id[QUEUE_ID_SIZE];
    CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 1, id), 0);
    CHECK_EQ_INT(queued(q), 2);
    struct buf dsn;
    read_body(q, id, &dsn);
    struct part pt[3];
    CHECK(split3(&dsn, pt));
    CHECK(pt[2].content_len <= 202);
    CHECK(memcmp(pt[2].content, big, 150) == 0);
    CHECK(part_has(&pt[0], "longer than 200 octets and is cut short"));
    buf_free(&dsn);
    queue_env_free(env);
    queue_close(q);
}

TEST(many_recipients_streamed)
{
    const struct config *cfg = cfg_reset();
    struct queue *q = queue_mem_new();
    struct queue_env *env = enqueue(q, "alice@example.test", original, strlen(original),
                                    SMTP_RET_UNSPEC, 0, "");
    enum { N = 3000 };
    struct bounce_rcpt *r = calloc(N, sizeof(*r));
    char (*addr)[40] = calloc(N, 40);
    for (size_t i = 0; i < N; i++) {
        snprintf(addr[i], 40, "user%zu@example.com", i);
        r[i] = failed_bob;
        r[i].address = addr[i];
    }
    char id[QUEUE_ID_SIZE];
    CHECK_EQ_INT(bounce_send(q, cfg, env, r, N, id), 0);
    struct buf dsn;
    read_body(q, id, &dsn);
    CHECK(dsn.len > 4 * 65536);   /* several flushes of the head */
    struct part pt[3];
    CHECK(split3(&dsn, pt));
    CHECK(part_has(&pt[1], "Final-Recipient: rfc822; user0@example.com\r\n"));
    CHECK(part_has(&pt[1], "Final-Recipient: rfc822; user2999@example.com\r\n"));
    CHECK(pt[2].content_len == strlen(original));
    buf_free(&dsn);
    free(r);
    free(addr);
    queue_env_free(env);
    queue_close(q);
}

TEST(large_original_fs_queue)
{
    /* 3 MiB returned whole (bounce-size raised) through the fs backend:
     * byte-exact, and the message was streamed chunk by chunk. */
    struct config *cfg = (struct config *)cfg_reset();
    cfg->limits[LIM_BOUNCE_SIZE] = 4 * 1024 * 1024;
    char dir[] = "/tmp/estafeta-bounce-XXXXXX";
    if (mkdtemp(dir) == NULL)
        abort();
    struct buf err;
    buf_init(&err, 1024);
    struct queue *q = queue_fs_open(dir, &err);
    CHECK(q != NULL);
    if (q == NULL)
        return;
    size_t len = 3 * 1024 * 1024;
    char *big = malloc(len);
    const char head[] = "Subject: large\r\n\r\n";
    memcpy(big, head, sizeof(head) - 1);
    for (size_t i = sizeof(head) - 1; i < len; i++)
        big[i] = (i % 76 == 74) ? '\r' : (i % 76 == 75) ? '\n' : (char)('A' + i % 26);
    big[len - 2] = '\r';
    big[len - 1] = '\n';
    struct queue_env *env = enqueue(q, "alice@example.test", big, len, SMTP_RET_FULL, 0, "");
    CHECK_EQ_INT(env->body_size, len);
    char id[QUEUE_ID_SIZE];
    CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 1, id), 0);
    check_envelope(q, id, "alice@example.test", 0);
    struct buf dsn;
    read_body(q, id, &dsn);
    struct part pt[3];
    CHECK(split3(&dsn, pt));
    CHECK_EQ_INT(pt[2].content_len, len);
    CHECK(pt[2].content_len == len && memcmp(pt[2].content, big, len) == 0);
    buf_free(&dsn);
    /* a queue failure halfway leaves nothing in the fs queue either: the
     * original removed makes the body open fail after the head is written */
    CHECK_EQ_INT(queue_remove(q, env->id), 0);
    CHECK_EQ_INT(bounce_send(q, cfg, env, &failed_bob, 1, id), -1);
    CHECK_EQ_INT(queued(q), 1);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A %s/incoming)\"", dir);
    CHECK_EQ_INT(system(cmd), 0);
    queue_env_free(env);
    queue_close(q);
    buf_free(&err);
    free(big);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

TEST(wanted_and_names)
{
    CHECK(bounce_wanted(0, BOUNCE_FAILED));
    CHECK(bounce_wanted(0, BOUNCE_DELAYED));
    CHECK(!bounce_wanted(0, BOUNCE_DELIVERED));
    CHECK(!bounce_wanted(SMTP_NOTIFY_NEVER, BOUNCE_FAILED));
    CHECK(!bounce_wanted(SMTP_NOTIFY_FAILURE, BOUNCE_DELAYED));
    CHECK(bounce_wanted(SMTP_NOTIFY_SUCCESS, BOUNCE_RELAYED));
    CHECK(!bounce_wanted(SMTP_NOTIFY_SUCCESS, BOUNCE_FAILED));
    CHECK(bounce_wanted(SMTP_NOTIFY_DELAY | SMTP_NOTIFY_FAILURE, BOUNCE_DELAYED));
    CHECK_EQ_STR(bounce_action_name(BOUNCE_FAILED), "failed");
    CHECK_EQ_STR(bounce_action_name(BOUNCE_DELAYED), "delayed");
    CHECK_EQ_STR(bounce_action_name(BOUNCE_DELIVERED), "delivered");
    CHECK_EQ_STR(bounce_action_name(BOUNCE_RELAYED), "relayed");
    CHECK_EQ_STR(bounce_action_name(BOUNCE_EXPANDED), "expanded");
}

int main(void)
{
    RUN(failure_returns_full_message);
    RUN(ret_hdrs_returns_header_section);
    RUN(over_bounce_size_returns_headers);
    RUN(delay_and_success_reports_carry_headers_only);
    RUN(never_a_dsn_about_a_dsn);
    RUN(queue_failures_leave_nothing);
    RUN(smtputf8_and_8bit_flags);
    RUN(header_section_cut);
    RUN(many_recipients_streamed);
    RUN(large_original_fs_queue);
    RUN(wanted_and_names);
    return harness_done("test_bounce");
}
