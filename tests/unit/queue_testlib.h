/*
 * queue_testlib: helpers shared by the queue's unit tests (test_queue.c,
 * test_queue_log.c): envelopes and bodies, queueing and reading back a
 * message, listing, and opening the fs backend with or without the accept
 * log. Static inline, so a test that uses only some of them compiles
 * without warnings.
 */
#ifndef ESTAFETA_TESTS_QUEUE_TESTLIB_H
#define ESTAFETA_TESTS_QUEUE_TESTLIB_H

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "testlib.h"
#include "lib/buf.h"
#include "lib/xalloc.h"
#include "queue/queue.h"

/* Entries in dir/sub, "." and ".." excluded; -1 if it cannot be opened. */
static inline int count_dir(const char *dir, const char *sub)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/%s", dir, sub);
    DIR *d = opendir(p);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static inline void path_of(char *out, size_t cap, const char *dir, const char *sub,
                    const char *name)
{
    snprintf(out, cap, "%s/%s/%s", dir, sub, name);
}

static const char HOSTILE[] = "\r\n.\r\nZ\x01\xff\xfe\x80 QUIT\r\nEQFOOT01";

static inline void fill_env(struct queue_env *e, struct queue_rcpt *r, size_t n)
{
    memset(e, 0, sizeof(*e));
    strcpy(e->id, "ignored");
    e->sender = (char *)"sender@example.org";
    e->created = 1700000000;
    e->flags = QUEUE_F_8BITMIME;
    e->ret = 1;
    e->envid = (char *)HOSTILE;
    e->client_addr = (char *)"192.0.2.1";
    e->client_helo = (char *)"helo\r\nX-Injected: yes";
    e->session_id = (char *)"sid1";
    e->auth_user = (char *)"";
    for (size_t i = 0; i < n; i++) {
        r[i].address = (char *)(i == 0 ? "a@example.org" : i == 1 ? "b@example.org"
                                                                   : "c@example.org");
        r[i].orcpt = (char *)(i == 1 ? "rfc822;b+2Bx@example.org" : "");
        r[i].notify = (unsigned)i;
        r[i].state = QUEUE_RCPT_PENDING;
        r[i].status = (char *)"";
    }
    e->rcpts = r;
    e->nrcpts = n;
}

/* A body with every byte value, bare CR/LF, a fake footer and > 64 KiB. */
static inline size_t make_body(unsigned char **p_r, size_t size)
{
    unsigned char *p = xmalloc(size);
    for (size_t i = 0; i < size; i++)
        p[i] = (unsigned char)(i * 7 + i / 251);
    if (size > 100)
        memcpy(p + 50, "EQFOOT01\r\n.\r\n", 13);
    *p_r = p;
    return size;
}

/* Queue one message with body written in uneven chunks; its id into id_r. */
static inline int queue_one(struct queue *q, const unsigned char *body, size_t len,
                     size_t nrcpts, char id_r[QUEUE_ID_SIZE])
{
    struct queue_msg *m;
    struct queue_env e;
    struct queue_rcpt r[3];
    int res = -99;
    if (queue_msg_open(q, &m) < 0)
        return -1;
    snprintf(id_r, QUEUE_ID_SIZE, "%s", queue_msg_id(m));
    size_t off = 0, step = 1;
    while (off < len) {
        size_t n = step < len - off ? step : len - off;
        if (queue_msg_write(m, body + off, n) < 0) {
            queue_msg_abort(m);
            return -1;
        }
        off += n;
        step = step * 3 + 1; /* 1, 4, 13, ... up to > 64 KiB */
    }
    if (queue_msg_size(m) != len) {
        queue_msg_abort(m);
        return -1;
    }
    fill_env(&e, r, nrcpts);
    int rc = queue_commit(q, &m, &e, 1, &res);
    return rc == 0 && res == 0 ? 0 : -1;
}

static inline int read_body(struct queue *q, const char *id, unsigned char **p_r,
                     size_t *len_r)
{
    struct queue_body *b;
    if (queue_body_open(q, id, &b) < 0)
        return -1;
    size_t cap = 1024, len = 0, chunk = 1;
    unsigned char *p = xmalloc(cap);
    for (;;) {
        if (len + chunk > cap) {
            cap = (len + chunk) * 2;
            p = xrealloc(p, cap);
        }
        ssize_t r = queue_body_read(b, p + len, chunk);
        if (r < 0) {
            free(p);
            queue_body_close(b);
            return -1;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        chunk = chunk % 9000 + 777; /* uneven reads */
    }
    queue_body_close(b);
    *p_r = p;
    *len_r = len;
    return 0;
}

struct idlist {
    char ids[64][QUEUE_ID_SIZE];
    int n;
};

static inline void collect(const char *id, void *arg)
{
    struct idlist *l = arg;
    if (l->n < 64)
        snprintf(l->ids[l->n++], QUEUE_ID_SIZE, "%s", id);
}

/* How many ids lister gives (queue_list, queue_list_held); with want, -1
 * unless want is among them exactly once. */
static inline int list_count_by(struct queue *q,
                                int (*lister)(struct queue *q,
                                              void (*cb)(const char *id, void *arg),
                                              void *arg),
                                const char *want)
{
    struct idlist l = {.n = 0};
    if (lister(q, collect, &l) < 0)
        return -1;
    if (want != NULL) {
        int found = 0;
        for (int i = 0; i < l.n; i++)
            if (strcmp(l.ids[i], want) == 0)
                found++;
        if (found != 1)
            return -1;
    }
    return l.n;
}

static inline int list_count(struct queue *q, const char *want)
{
    return list_count_by(q, queue_list, want);
}

/* With the accept log (the server's default) or without it (every message
 * a file: the file layout the older tests look at). */
static inline struct queue *fs_open_mode(const char *dir, bool with_log)
{
    struct buf err;
    buf_init(&err, 1024);
    struct queue *q = queue_fs_open(dir, &err);
    if (q == NULL)
        fprintf(stderr, "queue_fs_open: %s\n", buf_cstr(&err));
    else if (!with_log)
        queue_fs_tune(q, 0, 64u << 20);
    buf_free(&err);
    return q;
}

static inline struct queue *fs_open(const char *dir) { return fs_open_mode(dir, false); }

/* A fresh queue directory (*dir_r, to be removed by the caller), with the
 * accept log or without; NULL, with nothing left, if either cannot be
 * made. */
static inline struct queue *queue_new_in_tmp(char **dir_r, bool with_log)
{
    *dir_r = make_tmpdir();
    if (*dir_r == NULL)
        return NULL;
    struct queue *q = fs_open_mode(*dir_r, with_log);
    CHECK(q != NULL);
    if (q == NULL) {
        rm_rf(*dir_r);
        free(*dir_r);
        *dir_r = NULL;
    }
    return q;
}

#endif
