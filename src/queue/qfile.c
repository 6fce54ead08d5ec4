/* qfile: see qfile.h and doc/queue.md for the format. */
#include "queue/qfile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/xalloc.h"

/* CRC-32 (IEEE 802.3, as zlib), four bits at a time: small, no tables to
 * build at run time, and fast enough for envelopes and state records. */
uint32_t qfile_crc32(uint32_t crc, const void *p, size_t n)
{
    static const uint32_t t[16] = {
        0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4,
        0x4db26158, 0x5005713c, 0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
        0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c};
    const unsigned char *c = p;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= c[i];
        crc = (crc >> 4) ^ t[crc & 15];
        crc = (crc >> 4) ^ t[crc & 15];
    }
    return ~crc;
}

bool qfile_id_valid(const char *id)
{
    size_t n = 0;
    if (id == NULL)
        return false;
    for (; id[n] != '\0'; n++) {
        char c = id[n];
        if (n >= QUEUE_ID_SIZE - 1)
            return false;
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
              (c >= 'a' && c <= 'z')))
            return false;
    }
    return n > 0;
}

/* ---- big-endian integers ---- */

static void put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint16_t get_u16(const unsigned char *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* ---- envelope encoding ---- */

static int enc_fail(struct buf *out, size_t oldlen, int err)
{
    out->len = oldlen;
    if (out->data != NULL)
        out->data[oldlen] = '\0';
    errno = err;
    return -1;
}

static int rec_head(struct buf *out, char type, size_t len)
{
    unsigned char h[5];
    if (len > UINT32_MAX)
        return -1;
    h[0] = (unsigned char)type;
    put_u32(h + 1, (uint32_t)len);
    return buf_append(out, h, sizeof(h));
}

static int rec_u32(struct buf *out, char type, uint32_t v)
{
    unsigned char b[4];
    put_u32(b, v);
    if (rec_head(out, type, 4) < 0)
        return -1;
    return buf_append(out, b, 4);
}

/* -1 with *toolong set for a string beyond the cap, -1 alone for the buf. */
static int rec_str(struct buf *out, char type, const char *s, bool *toolong)
{
    size_t n = strlen(s != NULL ? s : "");
    if (n > QFILE_STR_MAX) {
        *toolong = true;
        return -1;
    }
    if (rec_head(out, type, n) < 0)
        return -1;
    return buf_append(out, s != NULL ? s : "", n);
}

static int lstr(struct buf *out, const char *s, size_t n)
{
    unsigned char b[4];
    put_u32(b, (uint32_t)n);
    if (buf_append(out, b, 4) < 0)
        return -1;
    return buf_append(out, s, n);
}

static int rec_rcpt(struct buf *out, const struct queue_rcpt *r, bool *bad)
{
    const char *a = r->address != NULL ? r->address : "";
    const char *o = r->orcpt != NULL ? r->orcpt : "";
    const char *s = r->status != NULL ? r->status : "";
    size_t an = strlen(a), on = strlen(o), sn = strlen(s);
    if (an > QFILE_STR_MAX || on > QFILE_STR_MAX || sn > QFILE_STR_MAX ||
        (unsigned)r->state > QUEUE_RCPT_FAILED) {
        *bad = true;
        return -1;
    }
    size_t len = 4 + 1 + 12 + an + on + sn; /* bounded: 3 * 65535 + 17 */
    unsigned char h[5];
    if (rec_head(out, 'P', len) < 0)
        return -1;
    put_u32(h, r->notify);
    h[4] = (unsigned char)r->state;
    if (buf_append(out, h, 5) < 0 || lstr(out, a, an) < 0 ||
        lstr(out, o, on) < 0 || lstr(out, s, sn) < 0)
        return -1;
    return 0;
}

int qfile_env_encode(const struct queue_env *env, struct buf *out)
{
    size_t start = out->len;
    bool bad = false;
    unsigned char t[8];
    if (!qfile_id_valid(env->id) || env->nrcpts > QFILE_RCPTS_MAX ||
        (env->nrcpts > 0 && env->rcpts == NULL))
        return enc_fail(out, start, EINVAL);
    put_u64(t, (uint64_t)env->created);
    if (rec_u32(out, 'V', QFILE_VERSION) < 0 ||
        rec_str(out, 'I', env->id, &bad) < 0 ||
        rec_str(out, 'S', env->sender, &bad) < 0 ||
        rec_head(out, 'T', 8) < 0 || buf_append(out, t, 8) < 0 ||
        rec_u32(out, 'F', env->flags) < 0 ||
        rec_u32(out, 'R', (uint32_t)env->ret) < 0 ||
        rec_str(out, 'E', env->envid, &bad) < 0 ||
        rec_str(out, 'A', env->client_addr, &bad) < 0 ||
        rec_str(out, 'H', env->client_helo, &bad) < 0 ||
        rec_str(out, 'N', env->session_id, &bad) < 0 ||
        rec_str(out, 'U', env->auth_user, &bad) < 0 ||
        rec_u32(out, 'C', (uint32_t)env->nrcpts) < 0)
        return enc_fail(out, start, bad ? EINVAL : EFBIG);
    for (size_t i = 0; i < env->nrcpts; i++)
        if (rec_rcpt(out, &env->rcpts[i], &bad) < 0)
            return enc_fail(out, start, bad ? EINVAL : EFBIG);
    if (rec_head(out, 'Z', 0) < 0)
        return enc_fail(out, start, EFBIG);
    if (out->len - start > QFILE_ENV_MAX)
        return enc_fail(out, start, EFBIG);
    return 0;
}

/* ---- envelope decoding ---- */

struct rd {
    const unsigned char *p;
    size_t len, off;
};

/* Next record, which must be of type `type`; its payload in *pl, *pln. */
static bool rd_rec(struct rd *r, char type, const unsigned char **pl,
                   size_t *pln)
{
    if (r->len - r->off < 5 || r->p[r->off] != (unsigned char)type)
        return false;
    size_t n = get_u32(r->p + r->off + 1);
    if (n > r->len - r->off - 5)
        return false;
    *pl = r->p + r->off + 5;
    *pln = n;
    r->off += 5 + n;
    return true;
}

static bool rd_u32(struct rd *r, char type, uint32_t *v)
{
    const unsigned char *pl;
    size_t n;
    if (!rd_rec(r, type, &pl, &n) || n != 4)
        return false;
    *v = get_u32(pl);
    return true;
}

static char *dup_str(const unsigned char *p, size_t n)
{
    if (n > QFILE_STR_MAX || memchr(p, '\0', n) != NULL)
        return NULL;
    return xstrndup((const char *)p, n);
}

static bool rd_str(struct rd *r, char type, char **s)
{
    const unsigned char *pl;
    size_t n;
    if (!rd_rec(r, type, &pl, &n))
        return false;
    *s = dup_str(pl, n);
    return *s != NULL;
}

/* A length-prefixed string inside a P record. */
static bool sub_str(const unsigned char *p, size_t len, size_t *off, char **s)
{
    if (len - *off < 4)
        return false;
    size_t n = get_u32(p + *off);
    if (n > len - *off - 4)
        return false;
    *s = dup_str(p + *off + 4, n);
    *off += 4 + n;
    return *s != NULL;
}

static bool rd_rcpt(struct rd *r, struct queue_rcpt *rc)
{
    const unsigned char *pl;
    size_t n, off = 5;
    if (!rd_rec(r, 'P', &pl, &n) || n < 17)
        return false;
    rc->notify = get_u32(pl);
    if (pl[4] > QUEUE_RCPT_FAILED)
        return false;
    rc->state = (enum queue_rcpt_state)pl[4];
    if (!sub_str(pl, n, &off, &rc->address) ||
        !sub_str(pl, n, &off, &rc->orcpt) ||
        !sub_str(pl, n, &off, &rc->status))
        return false;
    return off == n;
}

int qfile_env_decode(const void *p, size_t len, struct queue_env **env_r)
{
    struct rd r = {p, len, 0};
    struct queue_env *env = xcalloc(1, sizeof(*env));
    const unsigned char *pl;
    size_t n;
    uint32_t v, flags, ret, count;
    char *id = NULL;

    *env_r = NULL;
    if (!rd_u32(&r, 'V', &v) || v != QFILE_VERSION)
        goto bad;
    if (!rd_str(&r, 'I', &id) || !qfile_id_valid(id))
        goto bad;
    memcpy(env->id, id, strlen(id) + 1);
    if (!rd_str(&r, 'S', &env->sender))
        goto bad;
    if (!rd_rec(&r, 'T', &pl, &n) || n != 8)
        goto bad;
    env->created = (int64_t)get_u64(pl);
    if (!rd_u32(&r, 'F', &flags) || !rd_u32(&r, 'R', &ret))
        goto bad;
    env->flags = flags;
    env->ret = (int)(int32_t)ret;
    if (!rd_str(&r, 'E', &env->envid) || !rd_str(&r, 'A', &env->client_addr) ||
        !rd_str(&r, 'H', &env->client_helo) ||
        !rd_str(&r, 'N', &env->session_id) ||
        !rd_str(&r, 'U', &env->auth_user))
        goto bad;
    if (!rd_u32(&r, 'C', &count) || count > QFILE_RCPTS_MAX)
        goto bad;
    /* Each P record is at least 22 bytes: a count that cannot fit in what
     * remains is refused before anything is allocated for it. */
    if (count > (len - r.off) / 22)
        goto bad;
    if (count > 0)
        env->rcpts = xcalloc(count, sizeof(*env->rcpts));
    for (uint32_t i = 0; i < count; i++) {
        env->nrcpts = i + 1; /* so queue_env_free frees what was set */
        if (!rd_rcpt(&r, &env->rcpts[i]))
            goto bad;
    }
    env->nrcpts = count;
    if (!rd_rec(&r, 'Z', &pl, &n) || n != 0 || r.off != len)
        goto bad;
    free(id);
    *env_r = env;
    return 0;
bad:
    free(id);
    queue_env_free(env);
    errno = EBADMSG;
    return -1;
}

void queue_env_free(struct queue_env *env)
{
    if (env == NULL)
        return;
    free(env->sender);
    free(env->envid);
    free(env->client_addr);
    free(env->client_helo);
    free(env->session_id);
    free(env->auth_user);
    for (size_t i = 0; env->rcpts != NULL && i < env->nrcpts; i++) {
        free(env->rcpts[i].address);
        free(env->rcpts[i].orcpt);
        free(env->rcpts[i].status);
    }
    free(env->rcpts);
    free(env);
}

static char *dup_or_empty(const char *s)
{
    return xstrdup(s != NULL ? s : "");
}

struct queue_env *qfile_env_dup(const struct queue_env *env)
{
    struct queue_env *d = xcalloc(1, sizeof(*d));
    memcpy(d->id, env->id, sizeof(d->id));
    d->id[QUEUE_ID_SIZE - 1] = '\0';
    d->sender = dup_or_empty(env->sender);
    d->created = env->created;
    d->flags = env->flags;
    d->ret = env->ret;
    d->envid = dup_or_empty(env->envid);
    d->client_addr = dup_or_empty(env->client_addr);
    d->client_helo = dup_or_empty(env->client_helo);
    d->session_id = dup_or_empty(env->session_id);
    d->auth_user = dup_or_empty(env->auth_user);
    d->body_size = env->body_size;
    d->attempts = env->attempts;
    if (env->nrcpts > 0) {
        d->rcpts = xreallocarray(NULL, env->nrcpts, sizeof(*d->rcpts));
        d->nrcpts = env->nrcpts;
        for (size_t i = 0; i < env->nrcpts; i++) {
            const struct queue_rcpt *s = &env->rcpts[i];
            d->rcpts[i].address = dup_or_empty(s->address);
            d->rcpts[i].orcpt = dup_or_empty(s->orcpt);
            d->rcpts[i].notify = s->notify;
            d->rcpts[i].state = s->state;
            d->rcpts[i].status = dup_or_empty(s->status);
        }
    }
    return d;
}

static bool str_eq(const char *a, const char *b)
{
    return strcmp(a != NULL ? a : "", b != NULL ? b : "") == 0;
}

bool qfile_env_equal(const struct queue_env *a, const struct queue_env *b)
{
    if (strncmp(a->id, b->id, QUEUE_ID_SIZE) != 0 ||
        !str_eq(a->sender, b->sender) || a->created != b->created ||
        a->flags != b->flags || a->ret != b->ret ||
        !str_eq(a->envid, b->envid) || !str_eq(a->client_addr, b->client_addr) ||
        !str_eq(a->client_helo, b->client_helo) ||
        !str_eq(a->session_id, b->session_id) ||
        !str_eq(a->auth_user, b->auth_user) || a->nrcpts != b->nrcpts ||
        a->body_size != b->body_size || a->attempts != b->attempts)
        return false;
    for (size_t i = 0; i < a->nrcpts; i++) {
        const struct queue_rcpt *x = &a->rcpts[i], *y = &b->rcpts[i];
        if (!str_eq(x->address, y->address) || !str_eq(x->orcpt, y->orcpt) ||
            x->notify != y->notify || x->state != y->state ||
            !str_eq(x->status, y->status))
            return false;
    }
    return true;
}

/* ---- footer ---- */

#define FOOTER_MAGIC_V1 "EQFOOT01"
#define FOOTER_MAGIC_V2 "EQFOOT02"

void qfile_footer_make(uint64_t body_len, uint32_t body_crc, const void *env,
                       size_t env_len, struct qfile_footer *f_r)
{
    f_r->body_len = body_len;
    f_r->env_off = QFILE_HEADER_SIZE + body_len;
    f_r->env_len = env_len;
    f_r->env_crc = qfile_crc32(0, env, env_len);
    f_r->version = 2;
    f_r->body_crc = body_crc;
}

/* Bytes 8-15: version 1 the body offset (always 16), version 2 the body's
 * CRC-32 and four zero bytes (the offset is implied). */
void qfile_footer_encode(const struct qfile_footer *f,
                         unsigned char out[QFILE_FOOTER_SIZE])
{
    if (f->version == 1) {
        memcpy(out, FOOTER_MAGIC_V1, 8);
        put_u64(out + 8, QFILE_HEADER_SIZE);
    } else {
        memcpy(out, FOOTER_MAGIC_V2, 8);
        put_u32(out + 8, f->body_crc);
        put_u32(out + 12, 0);
    }
    put_u64(out + 16, f->body_len);
    put_u64(out + 24, f->env_off);
    put_u64(out + 32, f->env_len);
    put_u32(out + 40, f->env_crc);
    put_u32(out + 44, qfile_crc32(0, out, 44));
}

int qfile_footer_decode(const unsigned char p[QFILE_FOOTER_SIZE],
                        uint64_t file_size, struct qfile_footer *f_r)
{
    uint64_t body_off = QFILE_HEADER_SIZE, end;
    struct qfile_footer f = {.body_len = get_u64(p + 16), .env_off = get_u64(p + 24),
                             .env_len = get_u64(p + 32), .env_crc = get_u32(p + 40)};
    bool known = true;
    if (memcmp(p, FOOTER_MAGIC_V1, 8) == 0) {
        f.version = 1;
        body_off = get_u64(p + 8);
    } else if (memcmp(p, FOOTER_MAGIC_V2, 8) == 0) {
        f.version = 2;
        f.body_crc = get_u32(p + 8);
        known = get_u32(p + 12) == 0;
    } else {
        known = false;
    }
    if (!known || get_u32(p + 44) != qfile_crc32(0, p, 44) ||
        body_off != QFILE_HEADER_SIZE || f.env_len > QFILE_ENV_MAX ||
        __builtin_add_overflow(body_off, f.body_len, &end) ||
        end != f.env_off ||
        __builtin_add_overflow(end, f.env_len, &end) ||
        __builtin_add_overflow(end, (uint64_t)QFILE_FOOTER_SIZE, &end) ||
        end != file_size) {
        errno = EBADMSG;
        return -1;
    }
    *f_r = f;
    return 0;
}

int qfile_parse(const void *file, size_t len, struct queue_env **env_r,
                struct qfile_footer *f_r)
{
    const unsigned char *p = file;
    struct qfile_footer f;
    *env_r = NULL;
    if (len < QFILE_HEADER_SIZE + QFILE_FOOTER_SIZE ||
        memcmp(p, QFILE_HEADER, QFILE_HEADER_SIZE) != 0 ||
        qfile_footer_decode(p + len - QFILE_FOOTER_SIZE, len, &f) < 0) {
        errno = EBADMSG;
        return -1;
    }
    /* The footer matched len, so env_off + env_len <= len. */
    const unsigned char *env = p + f.env_off;
    if (qfile_crc32(0, env, (size_t)f.env_len) != f.env_crc ||
        (f.version == 2 &&
         qfile_crc32(0, p + QFILE_HEADER_SIZE, (size_t)f.body_len) != f.body_crc)) {
        errno = EBADMSG;
        return -1;
    }
    if (qfile_env_decode(env, (size_t)f.env_len, env_r) < 0)
        return -1;
    (*env_r)->body_size = f.body_len;
    if (f_r != NULL)
        *f_r = f;
    return 0;
}

/* ---- per-recipient state records ---- */

int qfile_st_encode(size_t index, enum queue_rcpt_state state,
                    const char *status, size_t status_len, struct buf *out)
{
    unsigned char h[9], c[4];
    if (index > UINT32_MAX || (unsigned)state > QUEUE_RCPT_FAILED ||
        status_len > QFILE_STATUS_MAX ||
        (status_len > 0 && memchr(status, '\0', status_len) != NULL)) {
        errno = EINVAL;
        return -1;
    }
    size_t start = out->len;
    h[0] = 's';
    h[1] = 't';
    put_u32(h + 2, (uint32_t)index);
    h[6] = (unsigned char)state;
    put_u16(h + 7, (uint16_t)status_len);
    uint32_t crc = qfile_crc32(0, h, sizeof(h));
    crc = qfile_crc32(crc, status, status_len);
    put_u32(c, crc);
    if (buf_append(out, h, sizeof(h)) < 0 ||
        buf_append(out, status_len > 0 ? status : "", status_len) < 0 ||
        buf_append(out, c, 4) < 0)
        return enc_fail(out, start, EFBIG);
    return 0;
}

int qfile_st_decode(const void *p, size_t len, struct qfile_st_rec *rec_r,
                    size_t *used_r)
{
    const unsigned char *c = p;
    /* A prefix of a valid record is "need more"; anything that cannot
     * start one is invalid at once. */
    if ((len >= 1 && c[0] != 's') || (len >= 2 && c[1] != 't'))
        return -1;
    if (len < 9)
        return 0;
    size_t sn = get_u16(c + 7);
    if (c[6] > QUEUE_RCPT_FAILED || sn > QFILE_STATUS_MAX)
        return -1;
    if (len < QFILE_ST_REC_MIN + sn)
        return 0;
    if (get_u32(c + 9 + sn) != qfile_crc32(0, c, 9 + sn) ||
        memchr(c + 9, '\0', sn) != NULL)
        return -1;
    rec_r->index = get_u32(c + 2);
    rec_r->state = (enum queue_rcpt_state)c[6];
    rec_r->status = (const char *)c + 9;
    rec_r->status_len = sn;
    *used_r = QFILE_ST_REC_MIN + sn;
    return 1;
}
