/*
 * store_mem: the in-memory store backend for tests. Messages are kept per
 * "local@domain" (INBOX) or "local@domain/Folder" key under one mutex, with
 * the same name validation and the same behaviour on a failing read() as the
 * Maildir backend (doc/store.md, last section).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/xalloc.h"
#include "store/store_backend.h"

struct mem_msg {
    char *data;
    size_t len;
};

struct mem_box {
    char *key;
    struct mem_msg *msgs;
    size_t n, cap;
};

struct memstore {
    struct store base;
    pthread_mutex_t mu;
    struct mem_box *boxes;
    size_t n, cap;
    unsigned long counter;
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
    b->msgs[b->n].len = content.len;
    b->msgs[b->n].data = content.data != NULL ? content.data : xstrdup("");
    b->n++;
    unsigned long q = ++s->counter;
    pthread_mutex_unlock(&s->mu);
    if (uid_r != NULL)
        snprintf(uid_r, uid_cap, "mem.Q%lu,S=%zu", q, content.len);
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

static void mem_free(struct store *st)
{
    struct memstore *s = MS(st);
    for (size_t i = 0; i < s->n; i++) {
        for (size_t j = 0; j < s->boxes[i].n; j++)
            free(s->boxes[i].msgs[j].data);
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
