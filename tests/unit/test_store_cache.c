/* Tests of the Maildir store's directory cache (doc/store.md "The
 * directory cache"): deliveries through cached directories land exactly
 * once, and a folder removed, renamed, replaced or reached through a new
 * symbolic link is never used from the cache. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "proto/pop3.h"
#include "store/mailbox.h"
#include "store/store.h"
#include "store/store_backend.h"

/* ---- helpers ---- */
#include "store/mailbox.h"
#include "store_testlib.h"

#define USER "alice@example.org"

/* ---- the directory cache (doc/store.md "The directory cache") ---- */

/* Files in dir whose whole content is text (-1: no such directory). */
static int count_text(const char *dir, const char *text)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[8192];
        struct buf f;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (fs_read_file(path, 1 << 16, &f) == 0) {
            if (f.len == strlen(text) && memcmp(f.data, text, f.len) == 0)
                n++;
            buf_free(&f);
        }
    }
    closedir(d);
    return n;
}

static int open_fds(void)
{
    return dir_list("/proc/self/fd", NULL, 0);
}

#define CBOXES 300 /* more than MD_DIRCACHE_MAX */
#define CTHREADS 8

struct cthr {
    struct store *s;
    int id, ok;
};

/* Each thread walks all mailboxes from its own starting point, so that
 * threads meet on one mailbox and evict entries others are using. */
static void *cache_thread(void *arg)
{
    struct cthr *t = arg;
    for (int k = 0; k < CBOXES; k++) {
        int box = (k + t->id * (CBOXES / CTHREADS)) % CBOXES;
        char mbox[64], text[96];
        snprintf(mbox, sizeof(mbox), "u%d@example.org", box);
        snprintf(text, sizeof(text), "box %d thread %d\r\n", box, t->id);
        const char *folder = t->id % 3 == 2 ? "Lists" : NULL;
        if (deliver(t->s, mbox, folder, text, NULL, 0) == 0)
            t->ok++;
    }
    return NULL;
}

TEST(maildir_cache_many_threads)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    int fds = open_fds();
    struct store *s = store_maildir_new(root, "h");
    pthread_t th[CTHREADS];
    struct cthr t[CTHREADS];
    for (int i = 0; i < CTHREADS; i++) {
        t[i] = (struct cthr){s, i, 0};
        CHECK(pthread_create(&th[i], NULL, cache_thread, &t[i]) == 0);
    }
    int ok = 0;
    for (int i = 0; i < CTHREADS; i++) {
        pthread_join(th[i], NULL);
        ok += t[i].ok;
    }
    CHECK_EQ_INT(ok, CBOXES * CTHREADS);
    /* Every message exactly once, in the right folder, nothing left in
     * tmp/. */
    for (int box = 0; box < CBOXES; box++) {
        char dir[4096], sub[4200], text[96];
        snprintf(dir, sizeof(dir), "%s/example.org/u%d", root, box);
        int inbox = 0, lists = 0;
        for (int id = 0; id < CTHREADS; id++) {
            snprintf(text, sizeof(text), "box %d thread %d\r\n", box, id);
            snprintf(sub, sizeof(sub), "%s/%s", dir,
                     id % 3 == 2 ? ".Lists/new" : "new");
            CHECK_EQ_INT(count_text(sub, text), 1);
            *(id % 3 == 2 ? &lists : &inbox) += 1;
        }
        snprintf(sub, sizeof(sub), "%s/new", dir);
        CHECK_EQ_INT(dir_list(sub, NULL, 0), inbox);
        snprintf(sub, sizeof(sub), "%s/.Lists/new", dir);
        CHECK_EQ_INT(dir_list(sub, NULL, 0), lists);
        snprintf(sub, sizeof(sub), "%s/tmp", dir);
        CHECK_EQ_INT(dir_list(sub, NULL, 0), 0);
    }
    store_free(s);
    CHECK_EQ_INT(open_fds(), fds); /* every cached directory closed */
    rm_rf(root);
    free(root);
}

/* A mailbox removed by another process (estafeta user del: rm -r) between
 * two deliveries: the second message goes into a Maildir made afresh. The
 * same for its tmp/ alone, its new/ replaced, the whole domain and the
 * whole root. */
TEST(maildir_cache_mailbox_removed)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char dir[4096], newd[4200], path[8400];
    box_dir(root, "", dir, sizeof(dir));
    box_dir(root, "new", newd, sizeof(newd));
    CHECK(deliver(s, USER, NULL, "one\r\n", NULL, 0) == 0);
    rm_rf(dir);
    CHECK(deliver(s, USER, NULL, "two\r\n", NULL, 0) == 0);
    CHECK_EQ_INT(dir_list(newd, NULL, 0), 1);
    CHECK_EQ_INT(count_text(newd, "two\r\n"), 1);
    /* tmp/ alone: a delivery makes its file unnamed in new/ (O_TMPFILE)
     * and does not need it; where it does (a filesystem without O_TMPFILE)
     * the create fails with ENOENT and the walk makes tmp/ again. Either
     * way the message lands. */
    snprintf(path, sizeof(path), "%s/tmp", dir);
    rm_rf(path);
    CHECK(deliver(s, USER, NULL, "three\r\n", NULL, 0) == 0);
    CHECK_EQ_INT(count_text(newd, "three\r\n"), 1);
    /* new/ replaced by another directory: the new one gets it. */
    snprintf(path, sizeof(path), "%s/new.old", dir);
    CHECK(rename(newd, path) == 0);
    CHECK(mkdir(newd, 0700) == 0);
    CHECK(deliver(s, USER, NULL, "four\r\n", NULL, 0) == 0);
    CHECK_EQ_INT(dir_list(newd, NULL, 0), 1);
    CHECK_EQ_INT(count_text(newd, "four\r\n"), 1);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 2);
    /* The domain, then the whole root. */
    snprintf(path, sizeof(path), "%s/example.org", root);
    rm_rf(path);
    CHECK(deliver(s, USER, NULL, "five\r\n", NULL, 0) == 0);
    CHECK_EQ_INT(dir_list(newd, NULL, 0), 1);
    CHECK_EQ_INT(count_text(newd, "five\r\n"), 1);
    rm_rf(root);
    CHECK(deliver(s, USER, NULL, "six\r\n", NULL, 0) == 0);
    CHECK_EQ_INT(dir_list(newd, NULL, 0), 1);
    CHECK_EQ_INT(count_text(newd, "six\r\n"), 1);
    /* A folder too: removed, it comes back with its maildirfolder. */
    CHECK(deliver(s, USER, "Sent", "seven\r\n", NULL, 0) == 0);
    snprintf(path, sizeof(path), "%s/.Sent", dir);
    rm_rf(path);
    CHECK(deliver(s, USER, "Sent", "eight\r\n", NULL, 0) == 0);
    snprintf(path, sizeof(path), "%s/.Sent/new", dir);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 1);
    CHECK_EQ_INT(count_text(path, "eight\r\n"), 1);
    snprintf(path, sizeof(path), "%s/.Sent/maildirfolder", dir);
    CHECK(access(path, F_OK) == 0);
    store_free(s);
    rm_rf(root);
    free(root);
}

/* A mailbox renamed away by an admin: never a message into the renamed
 * one; into the directory now at the name, or a new one. A symbolic link
 * put at the name (even to the very directory the cache holds) is refused
 * as the walk refuses it. */
TEST(maildir_cache_mailbox_renamed)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char dir[4096], newd[4200], old[4200], oldnew[4300], path[8400];
    box_dir(root, "", dir, sizeof(dir));
    box_dir(root, "new", newd, sizeof(newd));
    snprintf(old, sizeof(old), "%s.old", dir);
    snprintf(oldnew, sizeof(oldnew), "%s/new", old);
    CHECK(deliver(s, USER, NULL, "one\r\n", NULL, 0) == 0);
    CHECK(rename(dir, old) == 0);
    /* Replaced by a Maildir made by hand. */
    static const char *const subs[] = {"", "/cur", "/new", "/tmp"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof(path), "%s%s", dir, subs[i]);
        CHECK(mkdir(path, 0700) == 0);
    }
    CHECK(deliver(s, USER, NULL, "two\r\n", NULL, 0) == 0);
    CHECK_EQ_INT(dir_list(newd, NULL, 0), 1);
    CHECK_EQ_INT(count_text(newd, "two\r\n"), 1);
    CHECK_EQ_INT(dir_list(oldnew, NULL, 0), 1);
    /* Renamed away, nothing in its place: made afresh. */
    rm_rf(old);
    CHECK(rename(dir, old) == 0);
    CHECK(deliver(s, USER, NULL, "three\r\n", NULL, 0) == 0);
    CHECK_EQ_INT(dir_list(newd, NULL, 0), 1);
    CHECK_EQ_INT(count_text(newd, "three\r\n"), 1);
    CHECK_EQ_INT(dir_list(oldnew, NULL, 0), 1);
    /* Moved away and linked back: the path leads to the directory the
     * cache holds, but through a link, which the walk never follows. */
    rm_rf(old);
    CHECK(rename(dir, old) == 0);
    CHECK(symlink(old, dir) == 0);
    errno = 0;
    CHECK(deliver(s, USER, NULL, "four\r\n", NULL, 0) == -1);
    CHECK(errno == ELOOP || errno == ENOTDIR);
    CHECK_EQ_INT(dir_list(oldnew, NULL, 0), 1);
    CHECK_EQ_INT(count_text(oldnew, "four\r\n"), 0);
    /* The same for a parent: the domain moved and linked back. */
    CHECK(unlink(dir) == 0);
    CHECK(rename(old, dir) == 0);
    CHECK(deliver(s, USER, NULL, "five\r\n", NULL, 0) == 0);
    char dom[4096], domold[4200];
    snprintf(dom, sizeof(dom), "%s/example.org", root);
    snprintf(domold, sizeof(domold), "%s/elsewhere", root);
    CHECK(rename(dom, domold) == 0);
    CHECK(symlink(domold, dom) == 0);
    CHECK(deliver(s, USER, NULL, "six\r\n", NULL, 0) == -1);
    snprintf(path, sizeof(path), "%s/alice/new", domold);
    CHECK_EQ_INT(count_text(path, "six\r\n"), 0);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 2);
    /* A folder renamed away: made afresh. */
    CHECK(unlink(dom) == 0);
    CHECK(rename(domold, dom) == 0);
    CHECK(deliver(s, USER, "Sent", "seven\r\n", NULL, 0) == 0);
    char sent[4200], sentold[4300];
    box_dir(root, ".Sent", sent, sizeof(sent));
    snprintf(sentold, sizeof(sentold), "%s/.Sent.old", dir);
    CHECK(rename(sent, sentold) == 0);
    CHECK(deliver(s, USER, "Sent", "eight\r\n", NULL, 0) == 0);
    snprintf(path, sizeof(path), "%s/new", sent);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 1);
    CHECK_EQ_INT(count_text(path, "eight\r\n"), 1);
    snprintf(path, sizeof(path), "%s/new", sentold);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 1);
    store_free(s);
    rm_rf(root);
    free(root);
}

/* The configured root may be a symbolic link (the walk opens it as
 * given); pointed elsewhere, the next delivery follows it, as the walk
 * would. */
TEST(maildir_cache_root_repointed)
{
    char *base = make_tmpdir();
    if (base == NULL)
        return;
    char link[4096], a[4200], b[4200], path[8400];
    snprintf(link, sizeof(link), "%s/mail", base);
    snprintf(a, sizeof(a), "%s/a", base);
    snprintf(b, sizeof(b), "%s/b", base);
    CHECK(mkdir(a, 0700) == 0 && mkdir(b, 0700) == 0);
    CHECK(symlink(a, link) == 0);
    struct store *s = store_maildir_new(link, "h");
    CHECK(deliver(s, USER, NULL, "one\r\n", NULL, 0) == 0);
    CHECK(unlink(link) == 0 && symlink(b, link) == 0);
    CHECK(deliver(s, USER, NULL, "two\r\n", NULL, 0) == 0);
    snprintf(path, sizeof(path), "%s/example.org/alice/new", a);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 1);
    CHECK_EQ_INT(count_text(path, "one\r\n"), 1);
    snprintf(path, sizeof(path), "%s/example.org/alice/new", b);
    CHECK_EQ_INT(dir_list(path, NULL, 0), 1);
    CHECK_EQ_INT(count_text(path, "two\r\n"), 1);
    store_free(s);
    rm_rf(base);
    free(base);
}

/* The UIDs of the messages of an open mailbox, in snapshot order, as
 * "uid:text;" (text: the file's content without CRLF). */
static void uid_list(struct store_mailbox *mb, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < store_mailbox_count(mb) && o < cap; i++) {
        char buf[64] = "";
        int fd;
        if (store_msg_open(mb, i, &fd) == 0) {
            ssize_t k = read(fd, buf, sizeof(buf) - 1);
            close(fd);
            buf[k > 2 ? k - 2 : 0] = '\0';
        }
        o += (size_t)snprintf(out + o, cap - o, "%u:%s;",
                              (unsigned)store_mailbox_msg(mb, i)->uid, buf);
    }
}

/* With an index, deliveries through the cache give each file its row at
 * once, in delivery order, and a reader sees them. */
TEST(maildir_cache_index)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char idx[4096], dump[4096], want[4096], uid[3][STORE_UID_SIZE], got[512];
    CHECK(store_user_create(s, USER) == 0);
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0); /* the index */
    for (int i = 0; i < 3; i++) {
        char text[16];
        snprintf(text, sizeof(text), "m%d\r\n", i);
        CHECK(deliver(s, USER, NULL, text, uid[i], sizeof(uid[i])) == 0);
    }
    box_dir(root, "estafeta.index", idx, sizeof(idx));
    long next = 0;
    CHECK(index_dump(idx, dump, sizeof(dump), &next) == 0);
    snprintf(want, sizeof(want), "1:%s;2:%s;3:%s;", uid[0], uid[1], uid[2]);
    CHECK_EQ_STR(dump, want);
    CHECK_EQ_INT(next, 4);
    if (mb != NULL) {
        CHECK(store_mailbox_refresh(mb) == 0);
        uid_list(mb, got, sizeof(got));
        CHECK_EQ_STR(got, "1:m0;2:m1;3:m2;");
        store_mailbox_close(mb);
    }
    store_free(s);
    rm_rf(root);
    free(root);
}

/* The index made by a reader between deliveries: both messages visible,
 * with UIDs in order. And the race delivery leaves open (no index when it
 * looked, one before its rename): the file gets its UID at the reader's
 * next sync, once. */
TEST(maildir_index_created_between)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char idx[4096], aside[4200], dump[4096], got[512];
    box_dir(root, "estafeta.index", idx, sizeof(idx));
    snprintf(aside, sizeof(aside), "%s.aside", idx);
    CHECK(deliver(s, USER, NULL, "a\r\n", NULL, 0) == 0);
    CHECK(access(idx, F_OK) == -1); /* delivery makes none */
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    store_mailbox_close(mb);
    CHECK(deliver(s, USER, NULL, "b\r\n", NULL, 0) == 0);
    long next = 0;
    CHECK(index_dump(idx, dump, sizeof(dump), &next) == 0);
    CHECK_EQ_INT(next, 3); /* b's row came with its delivery */
    mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb == NULL)
        goto out;
    uid_list(mb, got, sizeof(got));
    CHECK_EQ_STR(got, "1:a;2:b;");
    /* The race: the index hidden while c is delivered (as if it did not
     * exist yet when the delivery looked), back before d. */
    CHECK(rename(idx, aside) == 0);
    CHECK(deliver(s, USER, NULL, "c\r\n", NULL, 0) == 0);
    CHECK(rename(aside, idx) == 0);
    CHECK(deliver(s, USER, NULL, "d\r\n", NULL, 0) == 0);
    CHECK(store_mailbox_refresh(mb) == 0);
    uid_list(mb, got, sizeof(got));
    /* d got UID 3 with its delivery; c its UID at this sync. */
    CHECK_EQ_STR(got, "1:a;2:b;3:d;4:c;");
    CHECK_EQ_INT(store_mailbox_uidnext(mb), 5);
    store_mailbox_close(mb);
    mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb != NULL) {
        uid_list(mb, got, sizeof(got));
        CHECK_EQ_STR(got, "1:a;2:b;3:d;4:c;");
    }
out:
    store_mailbox_close(mb);
    store_free(s);
    rm_rf(root);
    free(root);
}

/* The index connection kept with the cache entry: it stays open between
 * deliveries (its WAL is not checkpointed away after each one), and an
 * index rebuilt meanwhile (renamed aside with its WAL and shared memory,
 * as md_index_aside does, and made afresh by a reader) is never written
 * through the old connection: the next delivery's row is in the new index
 * at once, the old one is untouched, and closing the stale connection
 * leaves the new index's WAL alone. */
TEST(maildir_index_connection_kept)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char idx[4096], wal[4200], shm[4200], old[4200], oldwal[4200], oldshm[4200];
    char dump[4096], want[4096], uid[4][STORE_UID_SIZE], got[512];
    box_dir(root, "estafeta.index", idx, sizeof(idx));
    snprintf(wal, sizeof(wal), "%s-wal", idx);
    snprintf(shm, sizeof(shm), "%s-shm", idx);
    snprintf(old, sizeof(old), "%s.damaged", idx);
    snprintf(oldwal, sizeof(oldwal), "%s.damaged-wal", idx);
    snprintf(oldshm, sizeof(oldshm), "%s.damaged-shm", idx);
    CHECK(deliver(s, USER, NULL, "a\r\n", uid[0], sizeof(uid[0])) == 0);
    struct store_mailbox *mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    store_mailbox_close(mb); /* the last connection: WAL checkpointed, gone */
    CHECK(access(wal, F_OK) == -1);
    CHECK(deliver(s, USER, NULL, "b\r\n", uid[1], sizeof(uid[1])) == 0);
    CHECK(access(wal, F_OK) == 0); /* the delivery's connection is kept */
    CHECK(deliver(s, USER, NULL, "c\r\n", uid[2], sizeof(uid[2])) == 0);
    long next = 0;
    CHECK(index_dump(idx, dump, sizeof(dump), &next) == 0);
    snprintf(want, sizeof(want), "1:%s;2:%s;3:%s;", uid[0], uid[1], uid[2]);
    CHECK_EQ_STR(dump, want);
    CHECK_EQ_INT(next, 4);
    /* A rebuild: the index and its files aside, a reader makes a new one
     * (every file numbered afresh, in name order). */
    CHECK(rename(idx, old) == 0);
    CHECK(rename(wal, oldwal) == 0);
    CHECK(rename(shm, oldshm) == 0 || errno == ENOENT);
    mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    CHECK(deliver(s, USER, NULL, "d\r\n", uid[3], sizeof(uid[3])) == 0);
    CHECK(index_dump(idx, dump, sizeof(dump), &next) == 0);
    CHECK(strstr(dump, uid[3]) != NULL); /* d's row came with it */
    CHECK_EQ_INT(next, 5);
    CHECK(index_dump(old, dump, sizeof(dump), &next) == 0);
    CHECK_EQ_STR(dump, want); /* the old index got nothing */
    CHECK_EQ_INT(next, 4);
    if (mb != NULL) {
        CHECK(store_mailbox_refresh(mb) == 0);
        uid_list(mb, got, sizeof(got));
        CHECK_EQ_STR(got, "1:a;2:b;3:c;4:d;");
        store_mailbox_close(mb);
    }
    store_free(s); /* closes the kept connection: the last one */
    s = store_maildir_new(root, "h");
    mb = NULL;
    CHECK(store_mailbox_open(s, USER, NULL, 0, &mb) == 0);
    if (mb != NULL) {
        uid_list(mb, got, sizeof(got));
        CHECK_EQ_STR(got, "1:a;2:b;3:c;4:d;");
        CHECK_EQ_INT(store_mailbox_uidnext(mb), 5);
        store_mailbox_close(mb);
    }
    store_free(s);
    rm_rf(root);
    free(root);
}

/* At most MD_INDEX_KEEP_MAX index connections are kept (a quarter of the
 * cache's entries when the descriptor limit makes it smaller): after
 * deliveries into more indexed mailboxes than that, with no reader, the
 * WAL files that remain (a connection's, while it is open) are exactly
 * that many, and every delivery still got its row. */
TEST(maildir_index_connections_bounded)
{
    enum { BOXES = MD_INDEX_KEEP_MAX + 8 };
    struct rlimit rl;
    size_t cap = MD_DIRCACHE_MAX;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur / 16 < cap)
        cap = (size_t)(rl.rlim_cur / 16);
    size_t want = cap / 4 < MD_INDEX_KEEP_MAX ? cap / 4 : MD_INDEX_KEEP_MAX;
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char mbox[64], path[4096], dump[512];
    for (int i = 0; i < BOXES; i++) {
        snprintf(mbox, sizeof(mbox), "u%d@example.org", i);
        CHECK(deliver(s, mbox, NULL, "a\r\n", NULL, 0) == 0);
        struct store_mailbox *mb = NULL;
        CHECK(store_mailbox_open(s, mbox, NULL, 0, &mb) == 0); /* the index */
        store_mailbox_close(mb);
    }
    for (int i = 0; i < BOXES; i++) {
        snprintf(mbox, sizeof(mbox), "u%d@example.org", i);
        CHECK(deliver(s, mbox, NULL, "b\r\n", NULL, 0) == 0);
    }
    size_t wals = 0;
    for (int i = 0; i < BOXES; i++) {
        snprintf(path, sizeof(path), "%s/example.org/u%d/estafeta.index-wal", root, i);
        wals += access(path, F_OK) == 0;
    }
    CHECK_EQ_INT(wals, want);
    store_free(s); /* closes them: the last connection takes its WAL */
    wals = 0;
    for (int i = 0; i < BOXES; i++) {
        snprintf(path, sizeof(path), "%s/example.org/u%d/estafeta.index-wal", root, i);
        wals += access(path, F_OK) == 0;
    }
    CHECK_EQ_INT(wals, 0);
    /* Every delivery got its row, kept connection or not. */
    for (int i = 0; i < BOXES; i++) {
        snprintf(path, sizeof(path), "%s/example.org/u%d/estafeta.index", root, i);
        long next = 0;
        CHECK(index_dump(path, dump, sizeof(dump), &next) == 0);
        CHECK_EQ_INT(next, 3);
    }
    rm_rf(root);
    free(root);
}

/* The warning state is read through the cached directories, also for a
 * delivery into a folder (the state is in the INBOX Maildir). */

/* Names carry the delivering process's pid, also in a child forked after
 * the parent delivered (the pid is remembered, and forgotten at fork). */
TEST(maildir_name_pid_after_fork)
{
    char *root = make_tmpdir();
    if (root == NULL)
        return;
    struct store *s = store_maildir_new(root, "h");
    char uid[STORE_UID_SIZE], want[64];
    CHECK(deliver(s, USER, NULL, "p\r\n", uid, sizeof(uid)) == 0);
    snprintf(want, sizeof(want), "P%ldQ", (long)getpid());
    CHECK(strstr(uid, want) != NULL);
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        char u[STORE_UID_SIZE] = "";
        deliver(s, USER, NULL, "c\r\n", u, sizeof(u));
        ssize_t w = write(pfd[1], u, strlen(u) + 1);
        store_free(s); /* nothing lost, for valgrind in the child too */
        free(root);
        _exit(w > 0 ? 0 : 1);
    }
    close(pfd[1]);
    char child[STORE_UID_SIZE] = "";
    ssize_t k = read(pfd[0], child, sizeof(child) - 1);
    close(pfd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(k > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    snprintf(want, sizeof(want), "P%ldQ", (long)pid);
    CHECK(strstr(child, want) != NULL);
    store_free(s);
    rm_rf(root);
    free(root);
}

/* ---- CRLF sizes in the Maildir index ---- */

/* A file of another tool with LF line ends: vsize is what POP3 RETR sends
 * (CRLF), size what the disk holds; the index keeps vsize, so it is read
 * once; our own deliveries carry W= and equal S=. */

int main(void)
{
    RUN(maildir_cache_many_threads);
    RUN(maildir_cache_mailbox_removed);
    RUN(maildir_cache_mailbox_renamed);
    RUN(maildir_cache_root_repointed);
    RUN(maildir_cache_index);
    RUN(maildir_index_created_between);
    RUN(maildir_index_connection_kept);
    RUN(maildir_index_connections_bounded);
    RUN(maildir_name_pid_after_fork);
    return harness_done("test_store_cache");
}
