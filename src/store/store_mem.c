/*
 * store_mem: the in-memory store backend for tests. Messages are kept per
 * "local@domain" (INBOX) or "local@domain/Folder" key under one mutex, with
 * the same name validation and the same behaviour on a failing read() as the
 * Maildir backend (doc/store.md, last section), and the mailbox semantics of
 * mailbox.h in their simplest form: UIDs assigned at delivery, snapshots,
 * an exclusive flag per mailbox instead of a lock file.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    uint32_t uid;
    char *unique;
    unsigned flags;
    uint64_t modseq;
};

struct mem_box {
    char *key;
    struct mem_msg *msgs; /* by ascending UID */
    size_t n, cap;
    uint32_t uidvalidity, uidnext;
    uint64_t highestmodseq;
    bool locked;
};

struct memstore {
    struct store base;
    pthread_mutex_t mu;
    struct mem_box *boxes;
    size_t n, cap;
    unsigned long counter;
    uint32_t last_uidvalidity;
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

static int mem_deliver(struct store *st, const char *mailbox, const char *folder,
                       const char *prefix, size_t prefix_len, store_read_fn rd,
                       void *rd_arg, char *uid_r, size_t uid_cap)
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
    m->uid = b->uidnext++;
    m->unique = xstrdup(name);
    m->flags = 0;
    m->modseq = ++b->highestmodseq;
    pthread_mutex_unlock(&s->mu);
    if (uid_r != NULL)
        snprintf(uid_r, uid_cap, "%s", name);
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

/* Lock held: snapshot entries for the box's messages above the last UID
 * the snapshot has; flags and modseq of the others brought up to date. */
static void mem_snap_merge(struct mem_mailbox *mb, struct mem_box *b)
{
    struct store_mailbox *sb = &mb->base;
    uint32_t last = sb->n > 0 ? sb->msgs[sb->n - 1].uid : 0;
    for (size_t i = 0; i < sb->n; i++) {
        struct mem_msg *m = mem_find_uid(b, sb->msgs[i].uid);
        if (m != NULL) {
            sb->msgs[i].flags = m->flags;
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
            .flags = m->flags,
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

static int mem_msg_set_flags(struct store_mailbox *sb, size_t i,
                             unsigned flags)
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
    if (m->flags != flags) {
        m->flags = flags;
        m->modseq = ++b->highestmodseq;
    }
    sb->msgs[i].flags = m->flags;
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
    }
    free(s->boxes);
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
    .msg_set_flags = mem_msg_set_flags,
    .mailbox_expunge = mem_mailbox_expunge,
    .quota_usage = mem_quota_usage,
    .user_create = mem_user_create,
};

struct store *store_mem_new(void)
{
    struct memstore *s = xcalloc(1, sizeof(*s));
    s->base.ops = &mem_ops;
    pthread_mutex_init(&s->mu, NULL);
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
