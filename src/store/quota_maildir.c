/*
 * quota_maildir: the Maildir backend's side of quota (doc/store.md
 * "Quota"): a user's usage over every folder, from the indexes (the
 * server) or from the files alone (tools), and the quota warning state,
 * the file `estafeta.quota` in the user's INBOX Maildir.
 *
 * The state file holds one line, "estafeta-quota 1 <armed|due|sent>
 * <max-bytes> <max-messages>". It is read and changed under flock() on the
 * file itself, held while the warning is delivered, so two deliveries to
 * one user (threads or processes) never both warn. It is rewritten in
 * place (it is a few dozen octets) and fsync'd; a torn write after a crash
 * reads as garbage, which counts as "armed": at worst a second warning,
 * never a lost refusal.
 *
 * SECURITY: every directory is reached with md_walk (or, for the lockless
 * peek, from the checked directory cache, the state file named relative to
 * the INBOX's new/) and every file opened O_NOFOLLOW relative to it; folder
 * names read from the user's Maildir are used as one path component only.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/fsutil.h"
#include "lib/xalloc.h"
#include "store/store_backend.h"

#define QUOTA_STATE_FILE MD_QUOTA_STATE_FILE
#define QUOTA_STATE_MAX 128

/* Calls fn for the INBOX and every Maildir++ folder of the user (every
 * ".Name" directory, also one made by another tool); a missing folder is
 * skipped. A user without a Maildir yet has nothing: 0. */
static int md_each_folder(struct mdstore *s, const char *user,
                          int (*fn)(struct mdstore *s, const struct mdpath *p,
                                    uint64_t *bytes, uint64_t *msgs),
                          uint64_t *bytes_r, uint64_t *messages_r)
{
    struct mdpath p;
    if (md_names(user, NULL, &p) < 0)
        return -1;
    int rootfd = md_walk(s, &p);
    if (rootfd < 0)
        return errno == ENOENT ? 0 : -1;
    char **names = NULL;
    size_t nn = 0;
    int r = fs_dir_names(rootfd, &names, &nn);
    close(rootfd);
    if (r < 0)
        return -1;
    uint64_t bytes = 0, msgs = 0;
    r = fn(s, &p, &bytes, &msgs);
    if (r < 0 && errno == ENOENT)
        r = 0;
    for (size_t i = 0; r == 0 && i < nn; i++) {
        const char *nm = names[i];
        size_t len = strlen(nm);
        if (nm[0] != '.' || len < 2 || len >= sizeof(p.folder) ||
            strcmp(nm, "..") == 0)
            continue;
        memcpy(p.folder, nm, len + 1);
        if (fn(s, &p, &bytes, &msgs) < 0 && errno != ENOENT && errno != ENOTDIR)
            r = -1;
    }
    fs_names_free(names, nn);
    if (r < 0)
        return -1;
    *bytes_r = bytes;
    *messages_r = msgs;
    return 0;
}

int md_quota_usage(struct store *st, const char *user, uint64_t *bytes_r,
                   uint64_t *messages_r)
{
    return md_each_folder((struct mdstore *)st, user, md_folder_usage, bytes_r,
                          messages_r);
}

/* A folder's regular files in new/ and cur/ (dot files are not messages),
 * without the index: nothing is written. */
static int md_folder_files(struct mdstore *s, const struct mdpath *p,
                           uint64_t *bytes, uint64_t *msgs)
{
    int dfd = md_walk(s, p);
    if (dfd < 0)
        return -1;
    int r = 0;
    for (int d = 0; r == 0 && d < 2; d++) {
        int sub = fs_open_subdir(dfd, d ? "cur" : "new");
        if (sub < 0) {
            r = -1;
            break;
        }
        char **names;
        size_t n;
        if (fs_dir_names(sub, &names, &n) < 0) {
            fs_close_keep_errno(sub);
            r = -1;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            struct stat sb;
            if (names[i][0] == '.' ||
                fstatat(sub, names[i], &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
                !S_ISREG(sb.st_mode))
                continue;
            *bytes += (uint64_t)sb.st_size;
            (*msgs)++;
        }
        fs_names_free(names, n);
        close(sub);
    }
    fs_close_keep_errno(dfd);
    return r;
}

int md_quota_usage_files(struct store *st, const char *user, uint64_t *bytes_r,
                         uint64_t *messages_r)
{
    return md_each_folder((struct mdstore *)st, user, md_folder_files, bytes_r,
                          messages_r);
}

/* ---- the warning state ---- */

static const char *const QWARN_NAMES[] = {"armed", "due", "sent"};

static void qstate_parse(const char *text, struct store_qstate *st)
{
    char word[16];
    unsigned long long b, m;
    int version;
    *st = (struct store_qstate){STORE_QWARN_ARMED, 0, 0};
    if (sscanf(text, "estafeta-quota %d %15s %llu %llu", &version, word, &b,
               &m) != 4 ||
        version != 1)
        return;
    for (int i = 0; i < 3; i++)
        if (strcmp(word, QWARN_NAMES[i]) == 0) {
            st->state = (enum store_qwarn)i;
            st->max_bytes = b;
            st->max_messages = m;
        }
}

static int qstate_read(int fd, struct store_qstate *st)
{
    char text[QUOTA_STATE_MAX + 1];
    ssize_t n;
    while ((n = pread(fd, text, QUOTA_STATE_MAX, 0)) < 0 && errno == EINTR)
        ;
    if (n < 0)
        return -1;
    text[n] = '\0';
    qstate_parse(text, st);
    return 0;
}

/* The user's INBOX directory, created if asked. */
static int qstate_dir(struct mdstore *s, const char *user, bool create)
{
    struct mdpath p;
    if (md_names(user, NULL, &p) < 0)
        return -1;
    int dfd = md_walk(s, &p);
    if (dfd < 0 && errno == ENOENT && create && md_create(s, &p) == 0)
        dfd = md_walk(s, &p);
    return dfd;
}

int md_quota_state_peek_at(int dirfd, const char *rel,
                           struct store_qstate *st_r)
{
    int fd = openat(dirfd, rel,
                    O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -1;
    struct stat sb;
    int r = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) ? qstate_read(fd, st_r)
                                                       : (errno = EIO, -1);
    fs_close_keep_errno(fd);
    return r;
}

int md_quota_state_peek(struct store *st, const char *user,
                        struct store_qstate *st_r)
{
    struct mdstore *s = (struct mdstore *)st;
    struct mdpath p;
    if (md_names(user, NULL, &p) < 0)
        return -1;
    /* The INBOX's directories as delivery holds them (checked, or walked
     * without creating anything); else (no Maildir, or one without tmp/
     * or new/) the long way, as before the cache. */
    struct md_dir *d = md_dir_get(s, &p, false);
    if (d != NULL) {
        int r = md_quota_state_peek_at(d->newfd, "../" QUOTA_STATE_FILE, st_r);
        int err = errno;
        md_dir_put(s, d, false);
        errno = err;
        return r;
    }
    int dfd = qstate_dir(s, user, false);
    if (dfd < 0)
        return -1;
    int r = md_quota_state_peek_at(dfd, QUOTA_STATE_FILE, st_r);
    fs_close_keep_errno(dfd);
    return r;
}

struct md_qlock {
    int fd;
};

int md_quota_state_lock(struct store *st, const char *user, bool create,
                        void **h_r, struct store_qstate *st_r)
{
    int dfd = qstate_dir((struct mdstore *)st, user, create);
    if (dfd < 0)
        return -1;
    int fd = openat(dfd, QUOTA_STATE_FILE,
                    O_RDWR | (create ? O_CREAT : 0) | O_NOFOLLOW | O_NONBLOCK |
                        O_CLOEXEC | O_NOCTTY,
                    0600);
    fs_close_keep_errno(dfd);
    if (fd < 0)
        return -1;
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        errno = EIO;
        return -1;
    }
    int r;
    while ((r = flock(fd, LOCK_EX)) < 0 && errno == EINTR)
        ;
    if (r < 0 || qstate_read(fd, st_r) < 0) {
        fs_close_keep_errno(fd);
        return -1;
    }
    struct md_qlock *h = xcalloc(1, sizeof(*h));
    h->fd = fd;
    *h_r = h;
    return 0;
}

int md_quota_state_unlock(void *hv, const struct store_qstate *st)
{
    struct md_qlock *h = hv;
    int r = 0;
    if (st != NULL) {
        char text[QUOTA_STATE_MAX];
        int n = snprintf(text, sizeof(text), "estafeta-quota 1 %s %" PRIu64
                         " %" PRIu64 "\n", QWARN_NAMES[st->state],
                         st->max_bytes, st->max_messages);
        ssize_t w = n > 0 && (size_t)n < sizeof(text)
                        ? pwrite(h->fd, text, (size_t)n, 0)
                        : (errno = EOVERFLOW, -1);
        if (w >= 0 && w != n)
            errno = EIO; /* short write: a full disk */
        if (w != n || ftruncate(h->fd, n) < 0 || fsync(h->fd) < 0)
            r = -1;
    }
    int err = errno;
    close(h->fd); /* releases the lock */
    free(h);
    errno = err;
    return r;
}
