/*
 * Tests for proto/dsn: the report is generated and parsed back with a small
 * MIME reader of our own (top header, multipart/report boundary, each
 * part's Content-Type, the message/delivery-status groups), field by
 * field; every line is checked for CRLF and length; peer text is checked
 * to be cleaned and folded; the part-3 copy filter is fed split at every
 * position and byte by byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "proto/dsn.h"
#include "proto/smtp_cmd.h"

/* ---- a small MIME reader for the checks ---- */

#define MAXF 48
#define MAXV 2048

struct field {
    char name[64];
    char value[MAXV];   /* unfolded (CRLF removed, white space kept) */
    size_t raw_lines;
};

struct entity {
    struct field f[MAXF];
    size_t nf;
    const char *body;
    size_t body_len;
};

/* Parses a header section then body from p[0..n). false if malformed. */
static bool parse_entity(const char *p, size_t n, struct entity *e)
{
    size_t i = 0;
    e->nf = 0;
    while (i < n) {
        if (n - i >= 2 && p[i] == '\r' && p[i + 1] == '\n') {
            e->body = p + i + 2;
            e->body_len = n - i - 2;
            return true;
        }
        if (p[i] == ' ' || p[i] == '\t') {
            if (e->nf == 0)
                return false;
            /* continuation: append to the previous value */
            struct field *f = &e->f[e->nf - 1];
            const char *eol = memmem(p + i, n - i, "\r\n", 2);
            if (eol == NULL)
                return false;
            size_t l = (size_t)(eol - (p + i)), vl = strlen(f->value);
            if (vl + l >= MAXV)
                return false;
            memcpy(f->value + vl, p + i, l);
            f->value[vl + l] = '\0';
            f->raw_lines++;
            i += l + 2;
            continue;
        }
        const char *colon = memchr(p + i, ':', n - i);
        const char *eol = memmem(p + i, n - i, "\r\n", 2);
        if (colon == NULL || eol == NULL || colon > eol || e->nf == MAXF)
            return false;
        struct field *f = &e->f[e->nf++];
        size_t nl = (size_t)(colon - (p + i));
        if (nl == 0 || nl >= sizeof(f->name))
            return false;
        memcpy(f->name, p + i, nl);
        f->name[nl] = '\0';
        const char *v = colon + 1;
        while (v < eol && *v == ' ')
            v++;
        size_t vl = (size_t)(eol - v);
        if (vl >= MAXV)
            return false;
        memcpy(f->value, v, vl);
        f->value[vl] = '\0';
        f->raw_lines = 1;
        i = (size_t)(eol - p) + 2;
    }
    return false;
}

static const char *get(const struct entity *e, const char *name)
{
    for (size_t i = 0; i < e->nf; i++)
        if (strcasecmp(e->f[i].name, name) == 0)
            return e->f[i].value;
    return NULL;
}

static size_t count(const struct entity *e, const char *name)
{
    size_t c = 0;
    for (size_t i = 0; i < e->nf; i++)
        if (strcasecmp(e->f[i].name, name) == 0)
            c++;
    return c;
}

/* True if the body of e contains s. */
static bool has(const struct entity *e, const char *s)
{
    return memmem(e->body, e->body_len, s, strlen(s)) != NULL;
}

struct span {
    const char *p;
    size_t n;
};

/* The parts of a multipart body; false unless well formed and closed. */
static bool split_parts(const char *body, size_t n, const char *b,
                        struct span *parts, size_t max, size_t *np)
{
    char dash[128], delim[132];
    snprintf(dash, sizeof(dash), "--%s", b);
    snprintf(delim, sizeof(delim), "\r\n--%s", b);
    size_t dl = strlen(delim);
    *np = 0;
    const char *start;
    if (n >= strlen(dash) && memcmp(body, dash, strlen(dash)) == 0)
        start = body;
    else {
        const char *d = memmem(body, n, delim, dl);
        if (d == NULL)
            return false;
        start = d + 2;
    }
    const char *p = start + strlen(dash), *end = body + n;
    for (;;) {
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            return true;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return false;
        p += 2;
        const char *d = memmem(p, (size_t)(end - p), delim, dl);
        if (d == NULL || *np == max)
            return false;
        parts[*np].p = p;
        parts[*np].n = (size_t)(d - p);
        (*np)++;
        p = d + dl;
    }
}

/* The groups of a message/delivery-status body (RFC 3464 2.1). */
static size_t ds_groups(const char *p, size_t n, struct entity *g, size_t max)
{
    size_t k = 0, i = 0;
    while (i < n && k < max) {
        /* each group ends at an empty line or the end of the body */
        const char *e = memmem(p + i, n - i, "\r\n\r\n", 4);
        size_t len = e != NULL ? (size_t)(e - (p + i)) + 2 : n - i;
        char *tmp = malloc(len + 3);
        memcpy(tmp, p + i, len);
        memcpy(tmp + len, "\r\n", 2);
        tmp[len + 2] = '\0';
        if (!parse_entity(tmp, len + 2, &g[k])) {
            free(tmp);
            return SIZE_MAX;
        }
        g[k].body = NULL;
        free(tmp);
        k++;
        i += len + (e != NULL ? 2 : 0);
    }
    return k;
}

/* Every line ends in CRLF, no bare CR or LF, none longer than 998 (the
 * original's own lines are not ours: skip from `skip_from` on). */
static bool lines_ok(const char *p, size_t n, size_t skip_from, size_t skip_to)
{
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        bool ours = i < skip_from || i >= skip_to;
        if (p[i] == '\r') {
            if (i + 1 >= n || p[i + 1] != '\n')
                return false;
            i++;
            col = 0;
            continue;
        }
        if (p[i] == '\n')
            return false;
        col++;
        if (ours && col > DSN_LINE_MAX)
            return false;
    }
    return n >= 2 && p[n - 2] == '\r' && p[n - 1] == '\n';
}

/* ---- building reports ---- */

static const char orig_msg[] =
    "Received: from client.example\r\n"
    "From: Alice <alice@example.test>\r\n"
    "To: bob@example.com\r\n"
    "Subject: hello\r\n"
    "\r\n"
    "Body line 1\r\n"
    "--not-our-boundary\r\n"
    "last line\r\n";

static const unsigned char rnd_a[DSN_RANDOM_BYTES] = {
    11, 22, 33, 44, 55, 66, 77, 88, 99, 110, 121, 132, 143, 154, 165, 176,
    187, 198, 209, 220, 231, 242, 253, 7};

struct built {
    struct buf out;
    char boundary[DSN_BOUNDARY_SIZE];
    size_t orig_at, orig_end;    /* where part 3's content is */
    struct dsn_copy c;
};

static void report_defaults(struct dsn_report *r, const struct dsn_rcpt *rc,
                            size_t n, char *boundary)
{
    dsn_boundary(rnd_a, boundary);
    *r = (struct dsn_report){
        .hostname = "mail.example.test", .queue_id = "0QID42",
        .sender = "alice@example.test", .envid = "", .client_helo = "client.example",
        .client_addr = "192.0.2.1", .arrival = 1794990000, .now = 1795000100,
        .ret = DSN_RETURN_FULL, .bounce_size = 1048576, .header_max = 1048576,
        .boundary = boundary, .message_id = "TokEn123", .rcpts = rc, .nrcpts = n,
    };
}

static void build(struct built *b, struct dsn_report *r, const char *orig, size_t olen)
{
    buf_init(&b->out, 16 * 1024 * 1024);
    snprintf(b->boundary, sizeof(b->boundary), "%s", r->boundary);
    if (dsn_write_head(r, &b->out) != 0)
        abort();
    bool full = r->ret == DSN_RETURN_FULL;
    dsn_copy_init(&b->c, !full, full ? r->bounce_size : r->header_max, r->boundary);
    char *o = malloc(olen + DSN_COPY_SLACK);
    size_t ol;
    dsn_copy_feed(&b->c, orig, olen, o, &ol);
    b->orig_at = b->out.len;
    buf_append(&b->out, o, ol);
    b->orig_end = b->out.len;
    free(o);
    if (dsn_write_end(r, &b->c, &b->out) != 0)
        abort();
}

struct parsed {
    struct entity top;
    struct span parts[4];
    size_t nparts;
    struct entity p[3];
    struct entity groups[16];
    size_t ngroups;
};

static bool parse_report(const struct built *b, struct parsed *ps)
{
    memset(ps, 0, sizeof(*ps));
    if (!parse_entity(b->out.data, b->out.len, &ps->top))
        return false;
    if (!split_parts(ps->top.body, ps->top.body_len, b->boundary, ps->parts, 4,
                     &ps->nparts) || ps->nparts != 3)
        return false;
    for (size_t i = 0; i < 3; i++)
        if (!parse_entity(ps->parts[i].p, ps->parts[i].n, &ps->p[i]))
            return false;
    ps->ngroups = ds_groups(ps->p[1].body, ps->p[1].body_len, ps->groups, 16);
    return ps->ngroups != SIZE_MAX;
}

/* ---- tests ---- */

static const struct dsn_rcpt rc_fail = {
    .address = "bob@example.com", .orcpt = "rfc822;b+2Bo+3Db@example.com",
    .action = DSN_FAILED, .remote_mta = "mx.example.com",
    .diagnostic = "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown",
    .last_attempt = 1795000000,
};

TEST(failure_report_field_by_field)
{
    struct dsn_rcpt rc[2] = {rc_fail, {.address = "carol@example.org", .action = DSN_FAILED,
                                       .diagnostic = "mailbox full"}};
    struct dsn_report r;
    char bnd[DSN_BOUNDARY_SIZE];
    report_defaults(&r, rc, 2, bnd);
    r.envid = "ID+2B1+3D2";
    struct built b;
    build(&b, &r, orig_msg, strlen(orig_msg));
    static struct parsed ps;
    CHECK(parse_report(&b, &ps));
    CHECK(lines_ok(b.out.data, b.out.len, b.orig_at, b.orig_end));

    /* top level */
    CHECK_EQ_STR(get(&ps.top, "From"), "Mail Delivery System <MAILER-DAEMON@mail.example.test>");
    CHECK_EQ_STR(get(&ps.top, "To"), "<alice@example.test>");
    CHECK_EQ_STR(get(&ps.top, "Subject"), "Undelivered Mail Returned to Sender");
    CHECK_EQ_STR(get(&ps.top, "Date"), "Wed, 18 Nov 2026 11:08:20 +0000");
    CHECK_EQ_STR(get(&ps.top, "Message-ID"), "<TokEn123@mail.example.test>");
    CHECK_EQ_STR(get(&ps.top, "Auto-Submitted"), "auto-replied");
    CHECK_EQ_STR(get(&ps.top, "MIME-Version"), "1.0");
    char ct[256];
    snprintf(ct, sizeof(ct), "multipart/report; report-type=delivery-status;\tboundary=\"%s\"", bnd);
    CHECK_EQ_STR(get(&ps.top, "Content-Type"), ct);
    CHECK(get(&ps.top, "Content-Transfer-Encoding") == NULL);
    for (size_t i = 0; i < ps.top.nf; i++)
        CHECK_EQ_INT(count(&ps.top, ps.top.f[i].name), 1);

    /* part 1 */
    CHECK_EQ_STR(get(&ps.p[0], "Content-Type"), "text/plain; charset=us-ascii");
    CHECK(has(&ps.p[0], "\r\n<bob@example.com>: host mx.example.com said:\r\n"
                        "    550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown\r\n"));
    CHECK(has(&ps.p[0], "\r\n<carol@example.org>:\r\n    mailbox full\r\n"));
    CHECK(has(&ps.p[0], "\r\nYour message is attached below.\r\n"));
    CHECK(has(&ps.p[0], "This is the mail system at host mail.example.test.\r\n"));
    CHECK(has(&ps.p[0], "could not be delivered"));
    CHECK(!has(&ps.p[0], "not yet been delivered"));

    /* part 2 */
    CHECK_EQ_STR(get(&ps.p[1], "Content-Type"), "message/delivery-status");
    CHECK_EQ_INT(ps.ngroups, 3);
    struct entity *m = &ps.groups[0];
    CHECK_EQ_STR(m->f[0].name, "Original-Envelope-Id");  /* RFC 3464 2.2 order */
    CHECK_EQ_STR(get(m, "Original-Envelope-Id"), "ID+1=2");
    CHECK_EQ_STR(get(m, "Reporting-MTA"), "dns; mail.example.test");
    CHECK_EQ_STR(get(m, "Received-From-MTA"), "dns; client.example ([192.0.2.1])");
    CHECK_EQ_STR(get(m, "Arrival-Date"), "Wed, 18 Nov 2026 08:20:00 +0000");
    CHECK_EQ_STR(get(m, "X-Estafeta-Queue-ID"), "0QID42");
    struct entity *g = &ps.groups[1];
    CHECK_EQ_STR(g->f[0].name, "Original-Recipient");
    CHECK_EQ_STR(get(g, "Original-Recipient"), "rfc822;b+o=b@example.com");
    CHECK_EQ_STR(get(g, "Final-Recipient"), "rfc822; bob@example.com");
    CHECK_EQ_STR(get(g, "Action"), "failed");
    CHECK_EQ_STR(get(g, "Status"), "5.1.1");
    CHECK_EQ_STR(get(g, "Remote-MTA"), "dns; mx.example.com");
    CHECK_EQ_STR(get(g, "Diagnostic-Code"),
                 "smtp; 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown");
    CHECK_EQ_STR(get(g, "Last-Attempt-Date"), "Wed, 18 Nov 2026 11:06:40 +0000");
    CHECK(get(g, "Will-Retry-Until") == NULL);
    g = &ps.groups[2];
    CHECK(get(g, "Original-Recipient") == NULL);
    CHECK_EQ_STR(get(g, "Final-Recipient"), "rfc822; carol@example.org");
    CHECK_EQ_STR(get(g, "Status"), "5.0.0");
    CHECK_EQ_STR(get(g, "Diagnostic-Code"), "X-Estafeta; mailbox full");
    CHECK(get(g, "Remote-MTA") == NULL);
    CHECK(get(g, "Last-Attempt-Date") == NULL);

    /* part 3: the original, byte for byte */
    CHECK_EQ_STR(get(&ps.p[2], "Content-Type"), "message/rfc822");
    CHECK_EQ_STR(get(&ps.p[2], "Content-Description"), "Undelivered Message");
    CHECK_EQ_INT(ps.p[2].body_len, strlen(orig_msg));
    CHECK(memcmp(ps.p[2].body, orig_msg, strlen(orig_msg)) == 0);
    CHECK(!b.c.boundary_seen && !b.c.eightbit && !b.c.over);
    buf_free(&b.out);
}

TEST(delay_report_headers_only)
{
    struct dsn_rcpt rc = {.address = "bob@example.com", .action = DSN_DELAYED,
                          .remote_mta = "mx.example.com",
                          .diagnostic = "451 4.7.1 greylisted, try later",
                          .last_attempt = 1795000000, .retry_until = 1795400000};
    struct dsn_report r;
    char bnd[DSN_BOUNDARY_SIZE];
    report_defaults(&r, &rc, 1, bnd);
    r.ret = dsn_return_mode(SMTP_RET_FULL, dsn_kind_of(&rc, 1), false, 10, 100);
    CHECK_EQ_INT(r.ret, DSN_RETURN_HDRS_REPORT);
    struct built b;
    build(&b, &r, orig_msg, strlen(orig_msg));
    static struct parsed ps;
    CHECK(parse_report(&b, &ps));
    CHECK(lines_ok(b.out.data, b.out.len, b.orig_at, b.orig_end));
    CHECK_EQ_STR(get(&ps.top, "Subject"), "Delayed Mail (still being retried)");
    CHECK_EQ_STR(get(&ps.p[2], "Content-Type"), "text/rfc822-headers");
    CHECK_EQ_STR(get(&ps.p[2], "Content-Description"), "Message Headers");
    CHECK_EQ_STR(get(&ps.groups[1], "Action"), "delayed");
    CHECK_EQ_STR(get(&ps.groups[1], "Status"), "4.7.1");
    CHECK_EQ_STR(get(&ps.groups[1], "Will-Retry-Until"), "Mon, 23 Nov 2026 02:13:20 +0000");
    CHECK(has(&ps.p[0], "\r\n    It will be retried until Mon, 23 Nov 2026 02:13:20 +0000.\r\n"));
    CHECK(has(&ps.p[0], "\r\nThe header of your message is included below.\r\n"));
    CHECK(has(&ps.p[0], "not yet been delivered"));
    CHECK(!has(&ps.p[0], "could not be delivered"));
    /* the header section without its empty line */
    const char *hdr_end = strstr(orig_msg, "\r\n\r\n");
    size_t hl = (size_t)(hdr_end - orig_msg) + 2;
    CHECK_EQ_INT(ps.p[2].body_len, hl);
    CHECK(memcmp(ps.p[2].body, orig_msg, hl) == 0);
    buf_free(&b.out);
}

TEST(success_and_mixed_subjects)
{
    struct dsn_rcpt rc[3] = {
        {.address = "a@x.test", .action = DSN_DELIVERED},
        {.address = "b@x.test", .action = DSN_RELAYED},
        {.address = "c@x.test", .action = DSN_EXPANDED},
    };
    CHECK_EQ_INT(dsn_kind_of(rc, 3), DSN_KIND_SUCCESS);
    CHECK_EQ_STR(dsn_subject(DSN_KIND_SUCCESS), "Successful Mail Delivery Report");
    rc[1].action = DSN_DELAYED;
    CHECK_EQ_INT(dsn_kind_of(rc, 3), DSN_KIND_DELAY);
    rc[2].action = DSN_FAILED;
    CHECK_EQ_INT(dsn_kind_of(rc, 3), DSN_KIND_FAILURE);  /* failure wins */
    CHECK_EQ_INT(dsn_kind_of(rc, 0), DSN_KIND_SUCCESS);

    struct dsn_rcpt s[3] = {
        {.address = "a@x.test", .action = DSN_DELIVERED},
        {.address = "b@x.test", .action = DSN_RELAYED, .remote_mta = "old.example"},
        {.address = "c@x.test", .action = DSN_EXPANDED},
    };
    struct dsn_report r;
    char bnd[DSN_BOUNDARY_SIZE];
    report_defaults(&r, s, 3, bnd);
    r.ret = DSN_RETURN_HDRS_REPORT;
    struct built b;
    build(&b, &r, orig_msg, strlen(orig_msg));
    static struct parsed ps;
    CHECK(parse_report(&b, &ps));
    CHECK_EQ_STR(get(&ps.top, "Subject"), "Successful Mail Delivery Report");
    CHECK_EQ_INT(ps.ngroups, 4);
    CHECK_EQ_STR(get(&ps.groups[1], "Action"), "delivered");
    CHECK_EQ_STR(get(&ps.groups[2], "Action"), "relayed");
    CHECK_EQ_STR(get(&ps.groups[3], "Action"), "expanded");
    for (int i = 1; i <= 3; i++)
        CHECK_EQ_STR(get(&ps.groups[i], "Status"), "2.0.0");
    CHECK_EQ_STR(get(&ps.p[2], "Content-Description"), "Message Headers");
    CHECK(has(&ps.p[0], "does not send delivery notifications"));
    CHECK(has(&ps.p[0], "<b@x.test>: host old.example\r\n"));
    buf_free(&b.out);
}

TEST(mixed_report_lists_groups_in_order)
{
    struct dsn_rcpt rc[4] = {
        {.address = "d1@x.test", .action = DSN_DELAYED},
        {.address = "f1@x.test", .action = DSN_FAILED},
        {.address = "d2@x.test", .action = DSN_DELAYED},
        {.address = "f2@x.test", .action = DSN_FAILED},
    };
    struct dsn_report r;
    char bnd[DSN_BOUNDARY_SIZE];
    report_defaults(&r, rc, 4, bnd);
    struct built b;
    build(&b, &r, orig_msg, strlen(orig_msg));
    static struct parsed ps;
    CHECK(parse_report(&b, &ps));
    CHECK_EQ_STR(get(&ps.top, "Subject"), "Undelivered Mail Returned to Sender");
    const char *t = ps.p[0].body;
    size_t tl = ps.p[0].body_len;
    const char *f1 = memmem(t, tl, "<f1@x.test>", 11), *f2 = memmem(t, tl, "<f2@x.test>", 11);
    const char *d1 = memmem(t, tl, "<d1@x.test>", 11), *d2 = memmem(t, tl, "<d2@x.test>", 11);
    CHECK(f1 != NULL && f2 != NULL && d1 != NULL && d2 != NULL);
    CHECK(f1 < f2 && f2 < d1 && d1 < d2);
    /* part 2 keeps the caller's order */
    CHECK_EQ_INT(ps.ngroups, 5);
    CHECK_EQ_STR(get(&ps.groups[1], "Final-Recipient"), "rfc822; d1@x.test");
    CHECK_EQ_STR(get(&ps.groups[2], "Final-Recipient"), "rfc822; f1@x.test");
    buf_free(&b.out);
}

TEST(wanted_table)
{
    /* RFC 3461 4.1 */
    CHECK(dsn_wanted(0, DSN_FAILED));
    CHECK(dsn_wanted(0, DSN_DELAYED));
    CHECK(!dsn_wanted(0, DSN_DELIVERED));
    CHECK(!dsn_wanted(0, DSN_RELAYED));
    CHECK(!dsn_wanted(0, DSN_EXPANDED));
    for (int a = DSN_FAILED; a <= DSN_EXPANDED; a++)
        CHECK(!dsn_wanted(SMTP_NOTIFY_NEVER, (enum dsn_action)a));
    CHECK(dsn_wanted(SMTP_NOTIFY_FAILURE, DSN_FAILED));
    CHECK(!dsn_wanted(SMTP_NOTIFY_FAILURE, DSN_DELAYED));
    CHECK(!dsn_wanted(SMTP_NOTIFY_FAILURE, DSN_RELAYED));
    CHECK(dsn_wanted(SMTP_NOTIFY_DELAY, DSN_DELAYED));
    CHECK(!dsn_wanted(SMTP_NOTIFY_DELAY, DSN_FAILED));
    CHECK(dsn_wanted(SMTP_NOTIFY_SUCCESS, DSN_DELIVERED));
    CHECK(dsn_wanted(SMTP_NOTIFY_SUCCESS, DSN_RELAYED));
    CHECK(dsn_wanted(SMTP_NOTIFY_SUCCESS, DSN_EXPANDED));
    CHECK(!dsn_wanted(SMTP_NOTIFY_SUCCESS, DSN_FAILED));
    CHECK(!dsn_wanted(SMTP_NOTIFY_SUCCESS, DSN_DELAYED));
    unsigned all = SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY;
    for (int a = DSN_FAILED; a <= DSN_EXPANDED; a++)
        CHECK(dsn_wanted(all, (enum dsn_action)a));
    CHECK(!dsn_wanted(all | SMTP_NOTIFY_NEVER, DSN_FAILED));
}

TEST(return_mode_table)
{
    CHECK_EQ_INT(dsn_return_mode(SMTP_RET_UNSPEC, DSN_KIND_FAILURE, false, 100, 100), DSN_RETURN_FULL);
    CHECK_EQ_INT(dsn_return_mode(SMTP_RET_FULL, DSN_KIND_FAILURE, false, 100, 100), DSN_RETURN_FULL);
    CHECK_EQ_INT(dsn_return_mode(SMTP_RET_FULL, DSN_KIND_FAILURE, false, 101, 100), DSN_RETURN_HDRS_SIZE);
    CHECK_EQ_INT(dsn_return_mode(SMTP_RET_HDRS, DSN_KIND_FAILURE, false, 1, 100), DSN_RETURN_HDRS);
    CHECK_EQ_INT(dsn_return_mode(SMTP_RET_FULL, DSN_KIND_FAILURE, true, 1, 100), DSN_RETURN_HDRS_BINARY);
    CHECK_EQ_INT(dsn_return_mode(SMTP_RET_FULL, DSN_KIND_DELAY, false, 1, 100), DSN_RETURN_HDRS_REPORT);
    CHECK_EQ_INT(dsn_return_mode(SMTP_RET_FULL, DSN_KIND_SUCCESS, false, 1, 100), DSN_RETURN_HDRS_REPORT);
    CHECK_EQ_INT(dsn_return_mode(SMTP_RET_UNSPEC, DSN_KIND_SUCCESS, false, 1, 100), DSN_RETURN_HDRS_REPORT);
}

TEST(status_rules)
{
    char s[DSN_STATUS_SIZE];
    struct dsn_rcpt r = {.action = DSN_FAILED, .status = "5.2.2", .diagnostic = "550 5.1.1 x"};
    dsn_status_of(&r, s);
    CHECK_EQ_STR(s, "5.2.2");
    r.status = "bogus";
    dsn_status_of(&r, s);
    CHECK_EQ_STR(s, "5.1.1");
    r.status = NULL;
    r.diagnostic = "550-5.7.1 policy";
    dsn_status_of(&r, s);
    CHECK_EQ_STR(s, "5.7.1");
    r.diagnostic = "4.4.7 delivery time expired";
    dsn_status_of(&r, s);
    CHECK_EQ_STR(s, "4.4.7");
    r.diagnostic = "550 no enhanced code here";
    dsn_status_of(&r, s);
    CHECK_EQ_STR(s, "5.0.0");
    r.diagnostic = "550 5.1.1234 too long detail";
    dsn_status_of(&r, s);
    CHECK_EQ_STR(s, "5.0.0");
    r.diagnostic = "550";
    dsn_status_of(&r, s);
    CHECK_EQ_STR(s, "5.0.0");
    r.diagnostic = NULL;
    r.action = DSN_DELAYED;
    dsn_status_of(&r, s);
    CHECK_EQ_STR(s, "4.0.0");
    r.action = DSN_RELAYED;
    dsn_status_of(&r, s);
    CHECK_EQ_STR(s, "2.0.0");
    r.action = (enum dsn_action)77;  /* outside the enum: reported as failed */
    dsn_status_of(&r, s);
    CHECK_EQ_STR(s, "5.0.0");
    CHECK_EQ_STR(dsn_action_name((enum dsn_action)77), "failed");

    CHECK(dsn_status_valid("2.0.0", 5));
    CHECK(dsn_status_valid("5.123.456", 9));
    CHECK(!dsn_status_valid("3.0.0", 5));
    CHECK(!dsn_status_valid("5.0", 3));
    CHECK(!dsn_status_valid("5..0", 4));
    CHECK(!dsn_status_valid("5.0.0.", 6));
    CHECK(!dsn_status_valid("5.1234.0", 8));
    CHECK(!dsn_status_valid("5.0.x", 5));
    CHECK(!dsn_status_valid("", 0));
}

TEST(dates)
{
    char d[DSN_DATE_SIZE];
    dsn_date(0, d);
    CHECK_EQ_STR(d, "Thu, 1 Jan 1970 00:00:00 +0000");
    dsn_date(951782400, d);
    CHECK_EQ_STR(d, "Tue, 29 Feb 2000 00:00:00 +0000");
    dsn_date(1795000100, d);
    CHECK_EQ_STR(d, "Wed, 18 Nov 2026 11:08:20 +0000");
    dsn_date(253402300799LL, d);
    CHECK_EQ_STR(d, "Fri, 31 Dec 9999 23:59:59 +0000");
    dsn_date(-5, d);
    CHECK_EQ_STR(d, "Thu, 1 Jan 1970 00:00:00 +0000");
    dsn_date(INT64_MAX, d);
    CHECK_EQ_STR(d, "Thu, 1 Jan 1970 00:00:00 +0000");
}

TEST(xtext_envid_orcpt)
{
    struct dsn_rcpt rc[4] = {
        {.address = "a@x.test", .orcpt = "rfc822;a+2Bb+20c@x.test", .action = DSN_FAILED},
        {.address = "b@x.test", .orcpt = "rfc822;bad+0Axtext", .action = DSN_FAILED},  /* LF */
        {.address = "c@x.test", .orcpt = "noseparator", .action = DSN_FAILED},
        {.address = "d@x.test", .orcpt = "rfc822;lower+2bhex", .action = DSN_FAILED},
    };
    struct dsn_report r;
    char bnd[DSN_BOUNDARY_SIZE];
    report_defaults(&r, rc, 4, bnd);
    r.envid = "abc+0D+0Adef";  /* decodes to CR LF: left out */
    struct built b;
    build(&b, &r, orig_msg, strlen(orig_msg));
    static struct parsed ps;
    CHECK(parse_report(&b, &ps));
    CHECK(get(&ps.groups[0], "Original-Envelope-Id") == NULL);
    CHECK_EQ_STR(get(&ps.groups[1], "Original-Recipient"), "rfc822;a+b c@x.test");
    CHECK(get(&ps.groups[2], "Original-Recipient") == NULL);
    CHECK(get(&ps.groups[3], "Original-Recipient") == NULL);
    CHECK(get(&ps.groups[4], "Original-Recipient") == NULL);
    CHECK(memmem(b.out.data, b.out.len, "Original-Envelope-Id", 20) == NULL);
    buf_free(&b.out);

    r.envid = "+2B+2B";
    build(&b, &r, orig_msg, strlen(orig_msg));
    CHECK(parse_report(&b, &ps));
    CHECK_EQ_STR(get(&ps.groups[0], "Original-Envelope-Id"), "++");
    buf_free(&b.out);
}

TEST(smtputf8_variant)
{
    struct dsn_rcpt rc = {.address = "jos\xc3\xa9@exampl\xc3\xa9.test", .action = DSN_FAILED,
                          .orcpt = "utf-8;jos\\x{E9}@exampl\\x{E9}.test",
                          .diagnostic = "550 5.1.1 jos\xc3\xa9 unknown \xff\xfe bad"};
    struct dsn_report r;
    char bnd[DSN_BOUNDARY_SIZE];
    report_defaults(&r, &rc, 1, bnd);
    r.smtputf8 = true;
    r.eightbit = true;
    r.sender = "\xc3\xa5sa@example.test";
    const char orig[] = "From: \xc3\xa5sa@example.test\r\nSubject: h\xc3\xa9j\r\n\r\nbody \xc3\xa9\r\n";
    struct built b;
    build(&b, &r, orig, strlen(orig));
    static struct parsed ps;
    CHECK(parse_report(&b, &ps));
    CHECK(lines_ok(b.out.data, b.out.len, b.orig_at, b.orig_end));
    char ct[256];
    snprintf(ct, sizeof(ct), "multipart/report; report-type=global-delivery-status;\tboundary=\"%s\"", bnd);
    CHECK_EQ_STR(get(&ps.top, "Content-Type"), ct);
    CHECK_EQ_STR(get(&ps.top, "Content-Transfer-Encoding"), "8bit");
    CHECK_EQ_STR(get(&ps.top, "To"), "<\xc3\xa5sa@example.test>");
    CHECK_EQ_STR(get(&ps.p[0], "Content-Type"), "text/plain; charset=utf-8");
    CHECK_EQ_STR(get(&ps.p[1], "Content-Type"), "message/global-delivery-status");
    CHECK_EQ_STR(get(&ps.p[2], "Content-Type"), "message/global");
    CHECK_EQ_STR(get(&ps.p[2], "Content-Transfer-Encoding"), "8bit");
    CHECK_EQ_STR(get(&ps.groups[1], "Final-Recipient"), "utf-8; jos\xc3\xa9@exampl\xc3\xa9.test");
    CHECK_EQ_STR(get(&ps.groups[1], "Original-Recipient"), "utf-8;jos\\x{E9}@exampl\\x{E9}.test");
    /* valid UTF-8 kept, invalid octets replaced */
    CHECK_EQ_STR(get(&ps.groups[1], "Diagnostic-Code"), "smtp; 550 5.1.1 jos\xc3\xa9 unknown ?? bad");
    CHECK(b.c.eightbit);
    buf_free(&b.out);

    r.ret = DSN_RETURN_HDRS;
    build(&b, &r, orig, strlen(orig));
    CHECK(parse_report(&b, &ps));
    CHECK_EQ_STR(get(&ps.p[2], "Content-Type"), "message/global-headers");
    buf_free(&b.out);
}

TEST(utf8_address_in_ascii_report)
{
    /* Cannot happen through smtpd (a UTF-8 address needs SMTPUTF8), but a
     * report without SMTPUTF8 must stay ASCII whatever it is given. */
    struct dsn_rcpt rc = {.address = "jos\xc3\xa9+x=y\\z@x.test", .action = DSN_FAILED,
                          .diagnostic = "550 caf\xc3\xa9 \x01\x7f"};
    struct dsn_report r;
    char bnd[DSN_BOUNDARY_SIZE];
    report_defaults(&r, &rc, 1, bnd);
    r.sender = "\xc3\xa5sa@example.test";
    struct built b;
    build(&b, &r, orig_msg, strlen(orig_msg));
    static struct parsed ps;
    CHECK(parse_report(&b, &ps));
    for (size_t i = 0; i < b.orig_at; i++)
        CHECK((unsigned char)b.out.data[i] < 0x80);
    CHECK_EQ_STR(get(&ps.groups[1], "Final-Recipient"),
                 "utf-8; jos\\x{E9}\\x{2B}x\\x{3D}y\\x{5C}z@x.test");
    CHECK_EQ_STR(get(&ps.groups[1], "Diagnostic-Code"), "smtp; 550 caf?? ??");
    CHECK_EQ_STR(get(&ps.top, "To"), "<??sa@example.test>");
    buf_free(&b.out);
}

TEST(hostile_diagnostic_cleaned_capped_folded)
{
    char *longword = malloc(5001);
    memset(longword, 'A', 5000);
    longword[0] = '5';
    longword[1] = '5';
    longword[2] = '0';
    longword[3] = ' ';
    longword[5000] = '\0';
    char spaced[4000];
    size_t k = 0;
    while (k + 8 < sizeof(spaced)) {
        memcpy(spaced + k, "word12 ", 7);
        k += 7;
    }
    spaced[k] = '\0';
    const char forge[] = "550 x\r\nX-Forged: yes\r\n\r\n--=_estafeta_guess\nbare\rcr\ttab";
    struct dsn_rcpt rc[3] = {
        {.address = "a@x.test", .action = DSN_FAILED, .diagnostic = longword,
         .remote_mta = "evil host(with)\"quotes\";x"},
        {.address = "b@x.test", .action = DSN_FAILED, .diagnostic = spaced},
        {.address = "c@x.test", .action = DSN_FAILED, .diagnostic = forge},
    };
    struct dsn_report r;
    char bnd[DSN_BOUNDARY_SIZE];
    report_defaults(&r, rc, 3, bnd);
    r.client_helo = "helo (with\r\n junk)";
    struct built b;
    build(&b, &r, orig_msg, strlen(orig_msg));
    static struct parsed ps;
    CHECK(parse_report(&b, &ps));
    CHECK(lines_ok(b.out.data, b.out.len, b.orig_at, b.orig_end));
    CHECK(memmem(b.out.data, b.orig_at, "\r\nX-Forged", 10) == NULL);
    CHECK(memmem(b.out.data, b.orig_at, "\r\n--=_estafeta_guess", 20) == NULL);
    const char *d0 = get(&ps.groups[1], "Diagnostic-Code");
    CHECK(d0 != NULL && strlen(d0) == strlen("smtp; ") + DSN_DIAG_MAX + 3);
    CHECK(d0 != NULL && strcmp(d0 + strlen(d0) - 3, "...") == 0);
    CHECK_EQ_STR(get(&ps.groups[1], "Remote-MTA"), "dns; evil?host?with??quotes??x");
    CHECK_EQ_STR(get(&ps.groups[0], "Received-From-MTA"), "dns; helo??with???junk? ([192.0.2.1])");
    /* folded at spaces: unfolding gives the text back exactly, and more
     * than one physical line was used */
    const char *d1 = get(&ps.groups[2], "Diagnostic-Code");
    CHECK(d1 != NULL && strncmp(d1, "X-Estafeta; word12 word12", 25) == 0);
    CHECK(d1 != NULL && strlen(d1) == strlen("X-Estafeta; ") + DSN_DIAG_MAX + 3);
    for (size_t i = 0; i < ps.groups[2].nf; i++)
        if (strcmp(ps.groups[2].f[i].name, "Diagnostic-Code") == 0)
            CHECK(ps.groups[2].f[i].raw_lines > 5);
    CHECK_EQ_STR(get(&ps.groups[3], "Diagnostic-Code"),
                 "smtp; 550 x??X-Forged: yes???\?--=_estafeta_guess?bare?cr tab");
    buf_free(&b.out);
    free(longword);
}

TEST(folding_lines_under_limit)
{
    /* Every line of many odd reports stays within 998 and ends in CRLF. */
    char diag[1200];
    for (size_t len = 0; len < sizeof(diag) - 1; len += 37) {
        for (size_t i = 0; i < len; i++)
            diag[i] = (i % 13 == 12) ? ' ' : (char)('a' + i % 26);
        diag[len] = '\0';
        struct dsn_rcpt rc = {.address = "a@x.test", .action = DSN_DELAYED,
                              .diagnostic = diag, .remote_mta = diag, .retry_until = 5};
        struct dsn_report r;
        char bnd[DSN_BOUNDARY_SIZE];
        report_defaults(&r, &rc, 1, bnd);
        r.client_helo = diag;
        struct built b;
        build(&b, &r, orig_msg, strlen(orig_msg));
        static struct parsed ps; /* 2 MB: off the stack (valgrind) */
        CHECK(parse_report(&b, &ps));
        CHECK(lines_ok(b.out.data, b.out.len, b.orig_at, b.orig_end));
        buf_free(&b.out);
    }
}

TEST(received_from_mta_forms)
{
    struct dsn_rcpt rc = {.address = "a@x.test", .action = DSN_FAILED};
    struct dsn_report r;
    char bnd[DSN_BOUNDARY_SIZE];
    report_defaults(&r, &rc, 1, bnd);
    struct built b;
    static struct parsed ps;

    r.client_addr = "uid=1000";  /* local submission */
    build(&b, &r, orig_msg, strlen(orig_msg));
    CHECK(parse_report(&b, &ps));
    CHECK(get(&ps.groups[0], "Received-From-MTA") == NULL);
    buf_free(&b.out);

    r.client_addr = "2001:db8::1";
    build(&b, &r, orig_msg, strlen(orig_msg));
    CHECK(parse_report(&b, &ps));
    CHECK_EQ_STR(get(&ps.groups[0], "Received-From-MTA"), "dns; client.example ([IPv6:2001:db8::1])");
    buf_free(&b.out);

    r.client_addr = "192.0.2.7";
    r.client_helo = "";
    r.arrival = 0;
    r.queue_id = "";
    build(&b, &r, orig_msg, strlen(orig_msg));
    CHECK(parse_report(&b, &ps));
    CHECK_EQ_STR(get(&ps.groups[0], "Received-From-MTA"), "dns; [192.0.2.7]");
    CHECK(get(&ps.groups[0], "Arrival-Date") == NULL);
    CHECK(get(&ps.groups[0], "X-Estafeta-Queue-ID") == NULL);
    CHECK_EQ_INT(ps.groups[0].nf, 2);
    buf_free(&b.out);
}

TEST(notes_in_part1)
{
    struct dsn_rcpt rc = {.address = "a@x.test", .action = DSN_FAILED};
    struct dsn_report r;
    char bnd[DSN_BOUNDARY_SIZE];
    report_defaults(&r, &rc, 1, bnd);
    struct built b;
    static struct parsed ps;
    r.ret = DSN_RETURN_HDRS_SIZE;
    r.bounce_size = 1024;
    r.header_cut = true;
    r.header_max = 65536;
    build(&b, &r, orig_msg, strlen(orig_msg));
    CHECK(parse_report(&b, &ps));
    CHECK(has(&ps.p[0], "larger than 1024 octets"));
    CHECK(has(&ps.p[0], "longer than 65536 octets"));
    CHECK_EQ_STR(get(&ps.p[2], "Content-Type"), "text/rfc822-headers");
    CHECK_EQ_STR(get(&ps.p[2], "Content-Description"), "Undelivered Message Headers");
    buf_free(&b.out);

    r.ret = DSN_RETURN_HDRS_BINARY;
    r.header_cut = false;
    build(&b, &r, orig_msg, strlen(orig_msg));
    CHECK(parse_report(&b, &ps));
    CHECK(has(&ps.p[0], "binary MIME"));
    CHECK(!has(&ps.p[0], "cut short"));
    buf_free(&b.out);
}

TEST(tokens_and_boundary)
{
    char bnd[DSN_BOUNDARY_SIZE];
    dsn_boundary(rnd_a, bnd);
    CHECK_EQ_INT(strlen(bnd), 11 + DSN_RANDOM_BYTES);
    CHECK(strlen(bnd) <= 70);
    CHECK(strncmp(bnd, "=_estafeta_", 11) == 0);
    for (size_t i = 11; i < strlen(bnd); i++)
        CHECK((bnd[i] >= '0' && bnd[i] <= '9') || (bnd[i] >= 'A' && bnd[i] <= 'Z') ||
              (bnd[i] >= 'a' && bnd[i] <= 'z'));
    unsigned char other[DSN_RANDOM_BYTES] = {0};
    char bnd2[DSN_BOUNDARY_SIZE];
    dsn_boundary(other, bnd2);
    CHECK(strcmp(bnd, bnd2) != 0);
    char t[8];
    CHECK_EQ_INT(dsn_token(rnd_a, DSN_RANDOM_BYTES, t, sizeof(t)), 7);
    CHECK_EQ_INT(strlen(t), 7);
    CHECK_EQ_INT(dsn_token(rnd_a, 3, t, 0), 0);
}

/* ---- part 3 copy filter ---- */

struct copy_result {
    char out[4096];
    size_t len;
    struct dsn_copy c;
};

static void copy_cuts(const char *in, size_t len, bool headers, uint64_t max,
                      const char *boundary, const size_t *cuts, size_t ncuts,
                      struct copy_result *res)
{
    dsn_copy_init(&res->c, headers, max, boundary);
    res->len = 0;
    size_t start = 0;
    for (size_t k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : len;
        char *chunk = malloc(end - start + 1);
        char *o = malloc(end - start + DSN_COPY_SLACK);
        memcpy(chunk, in + start, end - start);
        size_t ol;
        dsn_copy_feed(&res->c, chunk, end - start, o, &ol);
        if (ol > end - start + DSN_COPY_SLACK || res->len + ol > sizeof(res->out))
            abort();
        memcpy(res->out + res->len, o, ol);
        res->len += ol;
        free(chunk);
        free(o);
        start = end;
    }
}

static bool same_copy(const struct copy_result *a, const struct copy_result *b)
{
    return a->len == b->len && memcmp(a->out, b->out, a->len) == 0 &&
           a->c.done == b->c.done && a->c.cut == b->c.cut && a->c.over == b->c.over &&
           a->c.eightbit == b->c.eightbit && a->c.boundary_seen == b->c.boundary_seen &&
           a->c.out == b->c.out && a->c.last == b->c.last;
}

/* Whole, split at every position, at every pair of positions (short
 * inputs) and byte by byte: all the same. */
static void check_trickle(const char *in, size_t len, bool headers, uint64_t max,
                          const char *boundary, struct copy_result *whole)
{
    copy_cuts(in, len, headers, max, boundary, NULL, 0, whole);
    struct copy_result *r = malloc(sizeof(*r));
    for (size_t i = 0; i <= len; i++) {
        copy_cuts(in, len, headers, max, boundary, &i, 1, r);
        CHECK(same_copy(whole, r));
        if (len <= 80)
            for (size_t j = i; j <= len; j++) {
                size_t cuts[2] = {i, j};
                copy_cuts(in, len, headers, max, boundary, cuts, 2, r);
                CHECK(same_copy(whole, r));
            }
    }
    size_t *cuts = malloc((len + 1) * sizeof(size_t));
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    copy_cuts(in, len, headers, max, boundary, cuts, len, r);
    CHECK(same_copy(whole, r));
    free(cuts);
    free(r);
}

TEST(copy_headers_only)
{
    struct copy_result w;
    const char m1[] = "A: 1\r\nB: 2\r\n continued\r\n\r\nbody\r\n\r\nmore\r\n";
    check_trickle(m1, strlen(m1), true, 1000, "BND", &w);
    CHECK_EQ_INT(w.len, 24);
    CHECK(memcmp(w.out, "A: 1\r\nB: 2\r\n continued\r\n", 24) == 0);
    CHECK(w.c.done && !w.c.cut);

    /* bare LF empty line ends it too */
    const char m2[] = "A: 1\r\n\nbody\r\n";
    check_trickle(m2, strlen(m2), true, 1000, "BND", &w);
    CHECK_EQ_INT(w.len, 6);

    /* a line starting with a bare CR is not the end */
    const char m3[] = "A: 1\r\n\rX: y\r\n\r\nbody";
    check_trickle(m3, strlen(m3), true, 1000, "BND", &w);
    CHECK_EQ_INT(w.len, 13);
    CHECK(memcmp(w.out, "A: 1\r\n\rX: y\r\n", 13) == 0);

    /* no empty line at all: all of it is header */
    const char m4[] = "A: 1\r\nB: 2";
    check_trickle(m4, strlen(m4), true, 1000, "BND", &w);
    CHECK_EQ_INT(w.len, strlen(m4));
    CHECK(!w.c.done && !w.c.cut);

    /* starts with the empty line: nothing */
    check_trickle("\r\nbody\r\n", 8, true, 1000, "BND", &w);
    CHECK_EQ_INT(w.len, 0);
    CHECK(w.c.done);

    /* the cap: cut with the flag, never more than max octets */
    const char m5[] = "Subject: 0123456789\r\nX: 0123456789\r\n\r\nbody";
    for (uint64_t max = 0; max < strlen(m5); max++) {
        check_trickle(m5, strlen(m5), true, max, "BND", &w);
        CHECK(w.len <= max);
        bool ended = max >= 38;  /* the empty line is at 36..37 */
        CHECK_EQ_INT(w.c.cut, !ended);
    }
    /* a cut right after a CR is completed by dsn_write_end with LF only */
    check_trickle(m5, strlen(m5), true, 20, "BND", &w);
    CHECK_EQ_INT(w.len, 20);
    CHECK(w.c.last == '\r');
    struct dsn_report r = {.boundary = "BND"};
    struct buf e;
    buf_init(&e, 1024);
    CHECK_EQ_INT(dsn_write_end(&r, &w.c, &e), 0);
    CHECK_EQ_STR(buf_cstr(&e), "\n\r\n--BND--\r\n");
    buf_free(&e);
}

TEST(copy_full_and_over)
{
    struct copy_result w;
    const char m[] = "A: 1\r\n\r\nbody \xc3\xa9\r\nend";
    check_trickle(m, strlen(m), false, 1000, "BND", &w);
    CHECK_EQ_INT(w.len, strlen(m));
    CHECK(memcmp(w.out, m, strlen(m)) == 0);
    CHECK(w.c.eightbit && !w.c.over && !w.c.done);
    struct dsn_report r = {.boundary = "BND"};
    struct buf e;
    buf_init(&e, 1024);
    dsn_write_end(&r, &w.c, &e);
    CHECK_EQ_STR(buf_cstr(&e), "\r\n\r\n--BND--\r\n");   /* "end" gets its CRLF */
    buf_reset(&e);
    dsn_write_end(&r, NULL, &e);
    CHECK_EQ_STR(buf_cstr(&e), "\r\n--BND--\r\n");
    buf_free(&e);

    check_trickle(m, strlen(m), false, 10, "BND", &w);
    CHECK_EQ_INT(w.len, 10);
    CHECK(w.c.over && w.c.done);
    check_trickle(m, strlen(m), false, strlen(m), "BND", &w);
    CHECK(!w.c.over);
    check_trickle("", 0, false, 10, "BND", &w);
    CHECK_EQ_INT(w.len, 0);
}

TEST(copy_boundary_detected_anywhere)
{
    char bnd[DSN_BOUNDARY_SIZE];
    dsn_boundary(rnd_a, bnd);
    char m[300];
    struct copy_result w;
    snprintf(m, sizeof(m), "A: 1\r\n\r\nx\r\n--%s\r\nContent-Type: text/html\r\n", bnd);
    check_trickle(m, strlen(m), false, 10000, bnd, &w);
    CHECK(w.c.boundary_seen);
    /* the boundary text anywhere, even without dashes */
    snprintf(m, sizeof(m), "A: %s\r\n\r\n", bnd);
    check_trickle(m, strlen(m), true, 10000, bnd, &w);
    CHECK(w.c.boundary_seen);
    /* but not when the copy stops before it (headers only) */
    snprintf(m, sizeof(m), "A: 1\r\n\r\n%s", bnd);
    check_trickle(m, strlen(m), true, 10000, bnd, &w);
    CHECK(!w.c.boundary_seen);
    /* almost the boundary: no */
    snprintf(m, sizeof(m), "A: 1\r\n\r\n%.*s\r\n", (int)strlen(bnd) - 1, bnd);
    check_trickle(m, strlen(m), false, 10000, bnd, &w);
    CHECK(!w.c.boundary_seen);
}

TEST(boundary_occurs_only_as_delimiters)
{
    /* The report's own delimiters are the only occurrences, even when the
     * original is full of look-alikes. */
    struct dsn_rcpt rc = rc_fail;
    struct dsn_report r;
    char bnd[DSN_BOUNDARY_SIZE];
    report_defaults(&r, &rc, 1, bnd);
    char orig[1024];
    snprintf(orig, sizeof(orig), "Subject: x\r\n\r\n--=_estafeta_\r\n--%.20s\r\n=_estafeta_%.10s\r\n",
             bnd, bnd + 11);
    struct built b;
    build(&b, &r, orig, strlen(orig));
    CHECK(!b.c.boundary_seen);
    size_t n = 0;
    for (const char *p = b.out.data; (p = memmem(p, (size_t)(b.out.data + b.out.len - p),
                                                 bnd, strlen(bnd))) != NULL; p++)
        n++;
    CHECK_EQ_INT(n, 5);  /* the Content-Type parameter, 3 delimiters, the close */
    buf_free(&b.out);
}

TEST(writer_pieces_small_buffer)
{
    /* Pieces are bounded, a full buffer is reported without a partial
     * piece, and flushing between pieces gives the same text. */
    enum { N = 300 };
    struct dsn_rcpt *rc = calloc(N, sizeof(*rc));
    char (*addr)[32] = calloc(N, 32);
    for (size_t i = 0; i < N; i++) {
        snprintf(addr[i], 32, "user%zu@example.com", i);
        rc[i] = rc_fail;
        rc[i].address = addr[i];
        rc[i].action = (enum dsn_action)(i % 5);
    }
    struct dsn_report r;
    char bnd[DSN_BOUNDARY_SIZE];
    report_defaults(&r, rc, N, bnd);
    struct buf whole;
    buf_init(&whole, 64 * 1024 * 1024);
    CHECK_EQ_INT(dsn_write_head(&r, &whole), 0);

    struct buf small, acc;
    buf_init(&small, 4096);
    buf_init(&acc, 64 * 1024 * 1024);
    struct dsn_writer w;
    dsn_writer_init(&w, &r);
    int rc_;
    size_t fulls = 0;
    while ((rc_ = dsn_writer_next(&w, &small)) != 0) {
        if (rc_ < 0) {
            CHECK(small.len > 0);   /* a piece fits an empty 4 KiB buffer */
            fulls++;
            buf_append(&acc, small.data, small.len);
            buf_reset(&small);
        }
    }
    buf_append(&acc, small.data, small.len);
    CHECK(fulls > 0);
    CHECK_EQ_INT(acc.len, whole.len);
    CHECK(acc.len == whole.len && memcmp(acc.data, whole.data, acc.len) == 0);
    CHECK(!dsn_writer_8bit(&w));

    /* all 300 recipients are in part 2 */
    dsn_write_end(&r, NULL, &whole);
    static struct entity top;
    CHECK(parse_entity(whole.data, whole.len, &top));
    struct span parts[4];
    size_t np;
    CHECK(split_parts(top.body, top.body_len, bnd, parts, 4, &np));
    CHECK_EQ_INT(np, 3);
    static struct entity p2;
    CHECK(parse_entity(parts[1].p, parts[1].n, &p2));
    size_t groups = 1;
    for (const char *p = p2.body; (p = memmem(p, (size_t)(p2.body + p2.body_len - p),
                                              "\r\n\r\n", 4)) != NULL; p += 4)
        groups++;
    CHECK_EQ_INT(groups, N + 1);
    buf_free(&whole);
    buf_free(&small);
    buf_free(&acc);
    free(rc);
    free(addr);
}

int main(void)
{
    RUN(failure_report_field_by_field);
    RUN(delay_report_headers_only);
    RUN(success_and_mixed_subjects);
    RUN(mixed_report_lists_groups_in_order);
    RUN(wanted_table);
    RUN(return_mode_table);
    RUN(status_rules);
    RUN(dates);
    RUN(xtext_envid_orcpt);
    RUN(smtputf8_variant);
    RUN(utf8_address_in_ascii_report);
    RUN(hostile_diagnostic_cleaned_capped_folded);
    RUN(folding_lines_under_limit);
    RUN(received_from_mta_forms);
    RUN(notes_in_part1);
    RUN(tokens_and_boundary);
    RUN(copy_headers_only);
    RUN(copy_full_and_over);
    RUN(copy_boundary_detected_anywhere);
    RUN(boundary_occurs_only_as_delimiters);
    RUN(writer_pieces_small_buffer);
    return harness_done("test_dsn");
}
