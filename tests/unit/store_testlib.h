/*
 * store_testlib: helpers shared by the store's unit tests (test_store.c,
 * test_store_cache.c, test_store_usage.c, test_mailbox.c), on top of
 * testlib.h. Static inline, so a test that uses only some of
 * them compiles without warnings.
 */
#ifndef ESTAFETA_TESTS_STORE_TESTLIB_H
#define ESTAFETA_TESTS_STORE_TESTLIB_H

#include <dirent.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "testlib.h"
#include "lib/fsutil.h"
#include "lib/xalloc.h"
#include "store/store.h"

/* Number of entries of a directory and the first name (if any). */
static inline int dir_list(const char *path, char *first, size_t cap)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *de;
    if (first != NULL && cap > 0)
        first[0] = '\0';
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (n == 0 && first != NULL)
            snprintf(first, cap, "%s", de->d_name);
        n++;
    }
    closedir(d);
    return n;
}

/* A reader over a memory buffer, handing out at most `step` bytes a call,
 * failing (-1, EIO) after fail_after bytes if fail_after is set. */
struct src {
    const unsigned char *p;
    size_t len, off, step;
    size_t fail_after;
    int fail;
};

static inline ssize_t src_read(void *arg, void *p, size_t n)
{
    struct src *s = arg;
    if (s->fail && s->off >= s->fail_after) {
        errno = EIO;
        return -1;
    }
    size_t k = s->len - s->off;
    if (k > n)
        k = n;
    if (k > s->step)
        k = s->step;
    memcpy(p, s->p + s->off, k);
    s->off += k;
    return (ssize_t)k;
}

static inline int index_dump(const char *path, char *out, size_t cap, long *next_r)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    out[0] = '\0';
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT uid, uniq FROM messages ORDER BY uid",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return -1;
    }
    size_t o = 0;
    while (sqlite3_step(st) == SQLITE_ROW && o < cap)
        o += (size_t)snprintf(out + o, cap - o, "%lld:%s;",
                              (long long)sqlite3_column_int64(st, 0),
                              (const char *)sqlite3_column_text(st, 1));
    sqlite3_finalize(st);
    *next_r = -1;
    if (sqlite3_prepare_v2(db, "SELECT uidnext FROM meta", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        *next_r = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return 0;
}

static inline int deliver(struct store *s, const char *mbox, const char *folder,
                   const char *text, char *uid, size_t cap)
{
    size_t len = strlen(text);
    struct src src = {(const unsigned char *)text, len, 0, len ? len : 1, 0, 0};
    return store_deliver(s, mbox, folder, "", 0, src_read, &src, uid, cap);
}

static inline void box_dir(const char *root, const char *sub, char *out, size_t cap)
{
    snprintf(out, cap, "%s/example.org/alice%s%s", root, sub[0] ? "/" : "",
             sub);
}

static inline void put_file(const char *dir, const char *name, const char *text)
{
    char path[8192];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    CHECK(fs_write_file_atomic(path, text, strlen(text), 0600) == 0);
}

#endif
