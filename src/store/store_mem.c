/*
 * store_mem: the in-memory store backend for tests. Messages are kept per
 * "local@domain" (INBOX) or "local@domain/Folder" key under one mutex, with
 * the same name validation and the same behaviour on a failing read() as the
 * Maildir backend (doc/store.md, last section), and the mailbox semantics of
 * mailbox.h in their simplest form: UIDs assigned at delivery, snapshots,
 * an exclusive flag per mailbox instead of a lock file, a keyword table per
 * folder (26 slots, like the Maildir letters), and the quota warning state.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/xalloc.h"
#include "store/store_backend.h"

struct mem_msg {
    char *data;
    size_t len;
    uint64_t vsize;
    uint32_t uid;
    char *unique;
    unsigned flags;
    uint32_t keywords; /* bits over the box's kw[] */
    uint64_t modseq;
};

struct mem_box {
    char *key;
    struct mem_msg *msgs; /* by ascending UID */
    size_t n, cap;
    uint32_t uidvalidity, uidnext;
    uint64_t highestmodseq;
    bool locked;
    char *kw[STORE_KEYWORDS_MAX]; /* the folder's keywords by slot */
};

/* A user's quota warning state (memory is this backend's store). */
struct mem_qstate {
    char *user;
    struct store_qstate st;
};

struct memstore {
    struct store base;
    pthread_mutex_t mu;
    struct mem_box *boxes;
    size_t n, cap;
    unsigned long counter;
    uint32_t last_uidvalidity;
    /* Quota warning states, under their own lock, held while a warning is
     * delivered (which takes mu): always qmu before mu. */
    pthread_mutex_t qmu;
    struct mem_qstate *qstates;
    size_t nqstates;
};

struct mem_mailbox {
    struct store_mailbox base;
    char *key;
    bool exclusive;
};

static struct memstore *MS(struct store *s) { return (struct memstore *)s; }

/* Lock held. */
static struct mem_box *find_box(struct memstore *s, const char *key, bool add)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->boxes[i].key, key) == 0)
            return &s->boxes[i];
    if (!add)
        return NULL;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->boxes = xreallocarray(s->boxes, s->cap, sizeof(*s->boxes));
    }
    struct mem_box *b = &s->boxes[s->n++];
    memset(b, 0, sizeof(*b));
    b->key = xstrdup(key);
    /* From the clock, but never the same twice in this store. */
    time_t now = time(NULL);
    uint32_t uv = now > 0 && (uint64_t)now < UINT32_MAX ? (uint32_t)now : 1;
    if (uv <= s->last_uidvalidity)
        uv = s->last_uidvalidity + 1;
    s->last_uidvalidity = uv;
    b->uidvalidity = uv;
    b->uidnext = 1;
    return b;
}

static int mem_quota_state_peek(struct store *st, const char *user,
                                struct store_qstate *st_r);

static int mem_deliver(struct store *st, const char *mailbox, const char *folder,
                       const char *prefix, size_t prefix_len, store_read_fn rd,
                       void *rd_arg, char *uid_r, size_t uid_cap,
                       struct store_qstate *qs_r)
{
    struct memstore *s = MS(st);
    size_t at;
    bool inbox;
    char key[STORE_LOCAL_MAX + STORE_DOMAIN_MAX + STORE_FOLDER_MAX + 4];
    char chunk[16384];
    struct buf content;

    if (store_check_mailbox(mailbox, &at) < 0 ||
        store_check_folder(folder, &inbox) < 0)
        return -1;
    if (inbox)
        snprintf(key, sizeof(key), "%s", mailbox);
    else
        snprintf(key, sizeof(key), "%s/%s", mailbox, folder);
    /* "mem.Q<20 digits>,S=<20 digits>" always fits in 64. */
    if (uid_r != NULL && uid_cap < 64) {
        errno = ERANGE;
        return -1;
    }
    buf_init(&content, SIZE_MAX - 1);
    if (buf_append(&content, prefix_len > 0 ? prefix : "", prefix_len) < 0)
        goto toobig;
    for (;;) {
        ssize_t r = rd(rd_arg, chunk, sizeof(chunk));
        if (r == 0)
            break;
        if (r < 0 || (size_t)r > sizeof(chunk)) {
            int err = r < 0 && errno != 0 ? errno : EIO;
            buf_free(&content);
            errno = err;
            return -1;
        }
        if (buf_append(&content, chunk, (size_t)r) < 0)
            goto toobig;
    }
    pthread_mutex_lock(&s->mu);
    struct mem_box *b = find_box(s, key, true);
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 8;
        b->msgs = xreallocarray(b->msgs, b->cap, sizeof(*b->msgs));
    }
    if (b->uidnext == UINT32_MAX) {
        pthread_mutex_unlock(&s->mu);
        buf_free(&content);
        errno = ENOSPC;
        return -1;
    }
    char name[64];
    unsigned long q = ++s->counter;
    snprintf(name, sizeof(name), "mem.Q%lu,S=%zu", q, content.len);
    struct mem_msg *m = &b->msgs[b->n++];
    m->len = content.len;
    m->data = content.data != NULL ? content.data : xstrdup("");
    struct store_crlf crlf;
    store_crlf_init(&crlf);
    store_crlf_feed(&crlf, m->data, m->len);
    m->vsize = store_crlf_finish(&crlf);
    m->keywords = 0;
    m->uid = b->uidnext++;
    m->unique = xstrdup(name);
    m->flags = 0;
    m->modseq = ++b->highestmodseq;
    pthread_mutex_unlock(&s->mu);
    if (uid_r != NULL)
        snprintf(uid_r, uid_cap, "%s", name);
    if (qs_r != NULL && mem_quota_state_peek(st, mailbox, qs_r) < 0)
        *qs_r = (struct store_qstate){STORE_QWARN_ARMED, 0, 0};
    return 0;
toobig:
    buf_free(&content);
    errno = EFBIG;
    return -1;
}

static int mem_mailbox_path(struct store *st, const char *mailbox, char *out,
                            size_t out_cap)
{
    size_t at;
    (void)st;
    (void)out;
    (void)out_cap;
    if (store_check_mailbox(mailbox, &at) < 0)
        return -1;
    errno = ENOTSUP; /* there is no path in memory */
    return -1;
}

static int mem_clean_tmp(struct store *st, const char *mailbox,
                         const char *folder, long max_age)
{
    size_t at;
    bool inbox;
    (void)st;
    (void)max_age;
    if (store_check_mailbox(mailbox, &at) < 0 ||
        store_check_folder(folder, &inbox) < 0)
        return -1;
    return 0;
}

/* ---- mailbox.h ---- */

static struct mem_mailbox *MMB(struct store_mailbox *mb)
{
    return (struct mem_mailbox *)mb;
}

/* The key of a user's folder, or -1 EINVAL. */
static int mem_key(const char *user, const char *folder, char *key, size_t cap)
{
    size_t at;
    bool inbox;
    if (store_check_mailbox(user, &at) < 0 ||
        store_check_folder(folder, &inbox) < 0)
        return -1;
    if (inbox)
        snprintf(key, cap, "%s", user);
    else
        snprintf(key, cap, "%s/%s", user, folder);
    return 0;
}

#define MEM_KEY_MAX (STORE_LOCAL_MAX + STORE_DOMAIN_MAX + STORE_FOLDER_MAX + 4)

/* Lock held. The message of a UID, or NULL (expunged). */
static struct mem_msg *mem_find_uid(struct mem_box *b, uint32_t uid)
{
    size_t lo = 0, hi = b->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b->msgs[mid].uid == uid)
            return &b->msgs[mid];
        if (b->msgs[mid].uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Lock held: the snapshot's copy of the box's keyword table. */
static void mem_snap_kw(struct store_mailbox *sb, const struct mem_box *b)
{
    for (size_t k = 0; k < STORE_KEYWORDS_MAX; k++) {
        free(sb->kw[k]);
        sb->kw[k] = b->kw[k] != NULL ? xstrdup(b->kw[k]) : NULL;
    }
}

/* Lock held: snapshot entries for the box's messages above the last UID
 * the snapshot has; flags and modseq of the others brought up to date. */
static void mem_snap_merge(struct mem_mailbox *mb, struct mem_box *b)
{
    struct store_mailbox *sb = &mb->base;
    uint32_t last = sb->n > 0 ? sb->msgs[sb->n - 1].uid : 0;
    mem_snap_kw(sb, b);
    for (size_t i = 0; i < sb->n; i++) {
        struct mem_msg *m = mem_find_uid(b, sb->msgs[i].uid);
        if (m != NULL) {
            sb->msgs[i].flags = m->flags;
            sb->msgs[i].keywords = m->keywords;
            sb->msgs[i].modseq = m->modseq;
        }
    }
    for (size_t j = 0; j < b->n; j++) {
        struct mem_msg *m = &b->msgs[j];
        if (m->uid <= last)
            continue;
        if (sb->n == sb->cap) {
            sb->cap = sb->cap ? sb->cap * 2 : 16;
            sb->msgs = xreallocarray(sb->msgs, sb->cap, sizeof(*sb->msgs));
        }
        sb->msgs[sb->n++] = (struct store_msg){
            .uid = m->uid,
            .unique = xstrdup(m->unique),
            .size = m->len,
            .vsize = m->vsize,
            .flags = m->flags,
            .keywords = m->keywords,
            .modseq = m->modseq,
        };
    }
    sb->uidvalidity = b->uidvalidity;
    sb->uidnext = b->uidnext;
}

static void mem_mb_free(struct mem_mailbox *mb)
{
    for (size_t i = 0; i < mb->base.n; i++)
        free((char *)mb->base.msgs[i].unique);
    for (size_t k = 0; k < STORE_KEYWORDS_MAX; k++)
        free(mb->base.kw[k]);
    free(mb->base.msgs);
    free(mb->key);
    free(mb);
}

static int mem_mailbox_open(struct store *st, const char *user,
                            const char *folder, unsigned open_flags,
                            struct store_mailbox **mb_r)
{
    struct memstore *s = MS(st);
    char key[MEM_KEY_MAX];
    if (mem_key(user, folder, key, sizeof(key)) < 0)
        return -1;
    pthread_mutex_lock(&s->mu);
    struct mem_box *b = find_box(s, key, false);
    if (b == NULL || ((open_flags & STORE_OPEN_EXCLUSIVE) && b->locked)) {
        pthread_mutex_unlock(&s->mu);
        errno = b == NULL ? ENOENT : EWOULDBLOCK;
        return -1;
    }
    struct mem_mailbox *mb = xcalloc(1, sizeof(*mb));
    mb->base.store = st;
    mb->key = xstrdup(key);
    if (open_flags & STORE_OPEN_EXCLUSIVE) {
        b->locked = true;
        mb->exclusive = true;
    }
    mem_snap_merge(mb, b);
    pthread_mutex_unlock(&s->mu);
    *mb_r = &mb->base;
    return 0;
}

static void mem_mailbox_close(struct store_mailbox *sb)
{
    struct mem_mailbox *mb = MMB(sb);
    struct memstore *s = MS(sb->store);
    if (mb->exclusive) {
        pthread_mutex_lock(&s->mu);
        struct mem_box *b = find_box(s, mb->key, false);
        if (b != NULL)
            b->locked = false;
        pthread_mutex_unlock(&s->mu);
    }
    mem_mb_free(mb);
}

static int mem_mailbox_refresh(struct store_mailbox *sb)
{
    struct mem_mailbox *mb = MMB(sb);
    struct memstore *s = MS(sb->store);
    pthread_mutex_lock(&s->mu);
    struct mem_box *b = find_box(s, mb->key, false);
    if (b != NULL)
        mem_snap_merge(mb, b);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* A read-only descriptor on a copy of the message: a sealed memfd. */
static int mem_msg_open(struct store_mailbox *sb, size_t i, int *fd_r)
{
    struct mem_mailbox *mb = MMB(sb);
    struct memstore *s = MS(sb->store);
    int fd = memfd_create("estafeta-msg", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -1;
    pthread_mutex_lock(&s->mu);
    struct mem_box *b = find_box(s, mb->key, false);
    struct mem_msg *m = b != NULL ? mem_find_uid(b, sb->msgs[i].uid) : NULL;
    int r = m == NULL ? (errno = ENOENT, -1) : fs_write_all(fd, m->data, m->len);
    pthread_mutex_unlock(&s->mu);
    if (r < 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE |
                                   F_SEAL_SEAL) < 0 ||
        lseek(fd, 0, SEEK_SET) < 0) {
        fs_close_keep_errno(fd);
        return -1;
    }
    *fd_r = fd;
    return 0;
}

static int mem_msg_update_flags(struct store_mailbox *sb, size_t i,
                                enum store_flags_op op, unsigned flags,
                                bool keep_keywords, const char *const *keywords,
                                size_t nkeywords)
{
    struct mem_mailbox *mb = MMB(sb);
    struct memstore *s = MS(sb->store);
    pthread_mutex_lock(&s->mu);
    struct mem_box *b = find_box(s, mb->key, false);
    struct mem_msg *m = b != NULL ? mem_find_uid(b, sb->msgs[i].uid) : NULL;
    if (m == NULL) {
        pthread_mutex_unlock(&s->mu);
        errno = ENOENT;
        return -1;
    }
    /* The slots of the names, adding new ones (not for REMOVE); checked
     * before anything changes, so EMLINK leaves the table as it was. */
    uint32_t want = 0;
    size_t free_slots = 0, fresh = 0;
    for (size_t k = 0; k < STORE_KEYWORDS_MAX; k++)
        free_slots += b->kw[k] == NULL;
    for (size_t j = 0; !keep_keywords && j < nkeywords; j++) {
        bool known = false;
        for (size_t k = 0; k < STORE_KEYWORDS_MAX && !known; k++)
            known = b->kw[k] != NULL && strcasecmp(b->kw[k], keywords[j]) == 0;
        for (size_t p = 0; p < j && !known; p++)
            known = strcasecmp(keywords[p], keywords[j]) == 0;
        fresh += !known && op != STORE_FLAGS_REMOVE;
    }
    if (fresh > free_slots) {
        pthread_mutex_unlock(&s->mu);
        errno = EMLINK;
        return -1;
    }
    for (size_t j = 0; !keep_keywords && j < nkeywords; j++) {
        int slot = -1;
        for (size_t k = 0; k < STORE_KEYWORDS_MAX && slot < 0; k++)
            if (b->kw[k] != NULL && strcasecmp(b->kw[k], keywords[j]) == 0)
                slot = (int)k;
        for (size_t k = 0; slot < 0 && op != STORE_FLAGS_REMOVE &&
                           k < STORE_KEYWORDS_MAX; k++)
            if (b->kw[k] == NULL) {
                b->kw[k] = xstrdup(keywords[j]);
                slot = (int)k;
            }
        if (slot >= 0)
            want |= 1u << slot;
    }
    unsigned nf = op == STORE_FLAGS_SET ? flags
                  : op == STORE_FLAGS_ADD ? m->flags | flags
                                          : m->flags & ~flags;
    uint32_t nk = keep_keywords ? m->keywords
                  : op == STORE_FLAGS_SET ? want
                  : op == STORE_FLAGS_ADD ? m->keywords | want
                                          : m->keywords & ~want;
    if (m->flags != nf || m->keywords != nk) {
        m->flags = nf;
        m->keywords = nk;
        m->modseq = ++b->highestmodseq;
    }
    mem_snap_kw(sb, b);
    sb->msgs[i].flags = m->flags;
    sb->msgs[i].keywords = m->keywords;
    sb->msgs[i].modseq = m->modseq;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int mem_mailbox_expunge(struct store_mailbox *sb, const size_t *idx,
                               size_t n)
{
    struct mem_mailbox *mb = MMB(sb);
    struct memstore *s = MS(sb->store);
    pthread_mutex_lock(&s->mu);
    struct mem_box *b = find_box(s, mb->key, false);
    for (size_t k = 0; b != NULL && k < n; k++) {
        struct mem_msg *m = mem_find_uid(b, sb->msgs[idx[k]].uid);
        if (m == NULL)
            continue;
        free(m->data);
        free(m->unique);
        size_t pos = (size_t)(m - b->msgs);
        memmove(m, m + 1, (b->n - pos - 1) * sizeof(*m));
        b->n--;
        b->highestmodseq++;
    }
    pthread_mutex_unlock(&s->mu);
    size_t w = 0, k = 0;
    for (size_t i = 0; i < sb->n; i++) {
        if (k < n && idx[k] == i) {
            k++;
            free((char *)sb->msgs[i].unique);
            continue;
        }
        sb->msgs[w++] = sb->msgs[i];
    }
    sb->n = w;
    return 0;
}

static int mem_quota_usage(struct store *st, const char *user,
                           uint64_t *bytes_r, uint64_t *messages_r)
{
    struct memstore *s = MS(st);
    size_t at;
    if (store_check_mailbox(user, &at) < 0)
        return -1;
    size_t ulen = strlen(user);
    uint64_t bytes = 0, msgs = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n; i++) {
        const char *k = s->boxes[i].key;
        if (strncmp(k, user, ulen) != 0 || (k[ulen] != '\0' && k[ulen] != '/'))
            continue;
        for (size_t j = 0; j < s->boxes[i].n; j++)
            bytes += s->boxes[i].msgs[j].len;
        msgs += s->boxes[i].n;
    }
    pthread_mutex_unlock(&s->mu);
    *bytes_r = bytes;
    *messages_r = msgs;
    return 0;
}

static int mem_quota_usage_files(struct store *st, const char *user,
                                 uint64_t *bytes_r, uint64_t *messages_r)
{
    return mem_quota_usage(st, user, bytes_r, messages_r);
}

/* qmu held. */
static struct mem_qstate *mem_qfind(struct memstore *s, const char *user,
                                    bool add)
{
    for (size_t i = 0; i < s->nqstates; i++)
        if (strcmp(s->qstates[i].user, user) == 0)
            return &s->qstates[i];
    if (!add)
        return NULL;
    s->qstates = xreallocarray(s->qstates, s->nqstates + 1, sizeof(*s->qstates));
    struct mem_qstate *q = &s->qstates[s->nqstates++];
    q->user = xstrdup(user);
    q->st = (struct store_qstate){STORE_QWARN_ARMED, 0, 0};
    return q;
}

static int mem_quota_state_peek(struct store *st, const char *user,
                                struct store_qstate *st_r)
{
    struct memstore *s = MS(st);
    pthread_mutex_lock(&s->qmu);
    struct mem_qstate *q = mem_qfind(s, user, false);
    if (q != NULL)
        *st_r = q->st;
    pthread_mutex_unlock(&s->qmu);
    if (q == NULL) {
        errno = ENOENT;
        return -1;
    }
    return 0;
}

struct mem_qlock {
    struct memstore *s;
    char *user;
};

static int mem_quota_state_lock(struct store *st, const char *user, bool create,
                                void **h_r, struct store_qstate *st_r)
{
    struct memstore *s = MS(st);
    size_t at;
    if (store_check_mailbox(user, &at) < 0)
        return -1;
    pthread_mutex_lock(&s->qmu);
    struct mem_qstate *q = mem_qfind(s, user, create);
    if (q == NULL) {
        pthread_mutex_unlock(&s->qmu);
        errno = ENOENT;
        return -1;
    }
    *st_r = q->st;
    struct mem_qlock *h = xcalloc(1, sizeof(*h));
    h->s = s;
    h->user = xstrdup(user);
    *h_r = h;
    return 0; /* qmu stays held until unlock */
}

static int mem_quota_state_unlock(void *hv, const struct store_qstate *st)
{
    struct mem_qlock *h = hv;
    if (st != NULL) {
        struct mem_qstate *q = mem_qfind(h->s, h->user, true);
        q->st = *st;
    }
    pthread_mutex_unlock(&h->s->qmu);
    free(h->user);
    free(h);
    return 0;
}

static int mem_user_create(struct store *st, const char *user)
{
    struct memstore *s = MS(st);
    char key[MEM_KEY_MAX];
    if (mem_key(user, NULL, key, sizeof(key)) < 0)
        return -1;
    pthread_mutex_lock(&s->mu);
    find_box(s, key, true);
    for (size_t i = 0; i < STORE_STD_FOLDERS; i++) {
        mem_key(user, store_std_folders[i], key, sizeof(key));
        find_box(s, key, true);
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void mem_free(struct store *st)
{
    struct memstore *s = MS(st);
    for (size_t i = 0; i < s->n; i++) {
        for (size_t j = 0; j < s->boxes[i].n; j++) {
            free(s->boxes[i].msgs[j].data);
            free(s->boxes[i].msgs[j].unique);
        }
        free(s->boxes[i].msgs);
        free(s->boxes[i].key);
        for (size_t k = 0; k < STORE_KEYWORDS_MAX; k++)
            free(s->boxes[i].kw[k]);
    }
    free(s->boxes);
    for (size_t i = 0; i < s->nqstates; i++)
        free(s->qstates[i].user);
    free(s->qstates);
    pthread_mutex_destroy(&s->qmu);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static const struct store_ops mem_ops = {
    .free = mem_free,
    .deliver = mem_deliver,
    .mailbox_path = mem_mailbox_path,
    .clean_tmp = mem_clean_tmp,
    .mailbox_open = mem_mailbox_open,
    .mailbox_close = mem_mailbox_close,
    .mailbox_refresh = mem_mailbox_refresh,
    .msg_open = mem_msg_open,
    .msg_update_flags = mem_msg_update_flags,
    .mailbox_expunge = mem_mailbox_expunge,
    .quota_usage = mem_quota_usage,
    .quota_usage_files = mem_quota_usage_files,
    .user_create = mem_user_create,
    .quota_state_peek = mem_quota_state_peek,
    .quota_state_lock = mem_quota_state_lock,
    .quota_state_unlock = mem_quota_state_unlock,
};

struct store *store_mem_new(void)
{
    struct memstore *s = xcalloc(1, sizeof(*s));
    s->base.ops = &mem_ops;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->qmu, NULL);
    return &s->base;
}

size_t store_mem_count(struct store *st, const char *mailbox)
{
    if (st == NULL || st->ops != &mem_ops || mailbox == NULL)
        return 0;
    struct memstore *s = MS(st);
    pthread_mutex_lock(&s->mu);
    struct mem_box *b = find_box(s, mailbox, false);
    size_t n = b != NULL ? b->n : 0;
    pthread_mutex_unlock(&s->mu);
    return n;
}

char *store_mem_get(struct store *st, const char *mailbox, size_t i,
                    size_t *len_r)
{
    if (st == NULL || st->ops != &mem_ops || mailbox == NULL)
        return NULL;
    struct memstore *s = MS(st);
    char *copy = NULL;
    pthread_mutex_lock(&s->mu);
    struct mem_box *b = find_box(s, mailbox, false);
    if (b != NULL && i < b->n) {
        size_t len = b->msgs[i].len, all;
        if (size_add(len, 1, &all)) {
            copy = xmalloc(all);
            memcpy(copy, b->msgs[i].data, len);
            copy[len] = '\0';
            if (len_r != NULL)
                *len_r = len;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return copy;
}
