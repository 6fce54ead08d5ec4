/*
 * quota_maildir: the Maildir backend's side of quota (doc/store.md
 * "Quota"): a user's usage over every folder, from the indexes (the
 * server) or from the files alone (tools), and the quota warning state,
 * the file `estafeta.quota` in the user's INBOX Maildir; and the running
 * total of the usage, `estafeta.usage` beside it (doc/store.md "The usage
 * file"): "estafeta-usage 1", then lines "<bytes> <messages>" (signed
 * changes) that add up to the usage.
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
#include <time.h>
#include <unistd.h>

#include "lib/fsutil.h"
#include "lib/xalloc.h"
#include "store/store_backend.h"

#define QUOTA_STATE_FILE MD_QUOTA_STATE_FILE
#define QUOTA_STATE_MAX 128

#define USAGE_MAGIC "estafeta-usage 1\n"
/* Beyond this the total is read again from the folders: about 400 changes
 * (Maildir++ recalculates its maildirsize at the same size). */
#define USAGE_MAX 5120
/* A total nobody changed for this long is read again too: it is when the
 * mailbox is quiet that other programs' changes would stay unseen. */
#define USAGE_MAX_AGE (15 * 60)

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

/* ---- the usage file ---- */

/* One signed decimal of up to 18 digits, then `stop`. */
static bool usage_number(const char **q, const char *end, char stop,
                         int64_t *v_r)
{
    const char *c = *q;
    bool neg = c < end && *c == '-';
    if (neg)
        c++;
    int64_t v = 0;
    int digits = 0;
    for (; c < end && *c >= '0' && *c <= '9'; c++) {
        if (++digits > 18)
            return false;
        v = v * 10 + (*c - '0');
    }
    if (digits == 0 || c >= end || *c != stop)
        return false;
    *v_r = neg ? -v : v;
    *q = c + 1;
    return true;
}

/* The sum of the lines of a whole file's text; false if it is not a
 * usage file, has a torn line, or sums below zero. */
static bool usage_parse(const char *text, size_t len, uint64_t *bytes_r,
                        uint64_t *msgs_r)
{
    size_t ml = strlen(USAGE_MAGIC);
    if (len < ml || memcmp(text, USAGE_MAGIC, ml) != 0)
        return false;
    int64_t bytes = 0, msgs = 0;
    for (const char *q = text + ml, *end = text + len; q < end;) {
        int64_t b, m;
        if (!usage_number(&q, end, ' ', &b) || !usage_number(&q, end, '\n', &m))
            return false;
        if (__builtin_add_overflow(bytes, b, &bytes) ||
            __builtin_add_overflow(msgs, m, &msgs))
            return false;
    }
    if (bytes < 0 || msgs < 0)
        return false;
    *bytes_r = (uint64_t)bytes;
    *msgs_r = (uint64_t)msgs;
    return true;
}

/* A usage file to trust and keep up: a regular file of one link, under
 * USAGE_MAX (appends stop there, so a larger one no longer follows the
 * mail), changed in the last USAGE_MAX_AGE seconds (and not far in the
 * future). */
static bool usage_trusted(const struct stat *sb, time_t now)
{
    return S_ISREG(sb->st_mode) && sb->st_nlink == 1 && sb->st_size < USAGE_MAX &&
           sb->st_mtime <= now + 60 && now - sb->st_mtime <= USAGE_MAX_AGE;
}

/* The user's INBOX as delivery holds it (the directory cache; nothing
 * created): NULL with errno (ENOENT: no Maildir yet). */
static struct md_dir *inbox_get(struct mdstore *s, const char *user)
{
    struct mdpath p;
    if (md_names(user, NULL, &p) < 0)
        return NULL;
    return md_dir_get(s, &p, false);
}

/* `rel` under dirfd: ../estafeta.usage from the INBOX's new/, and so on. */
static const char *usage_rel(bool from_new, bool in_folder)
{
    if (from_new)
        return in_folder ? "../../" MD_USAGE_FILE : "../" MD_USAGE_FILE;
    return in_folder ? "../" MD_USAGE_FILE : MD_USAGE_FILE;
}

int md_quota_usage_cached(struct store *st, const char *user, uint64_t *bytes_r,
                          uint64_t *messages_r)
{
    struct mdstore *s = (struct mdstore *)st;
    struct md_dir *d = inbox_get(s, user);
    if (d == NULL)
        return -1;
    int fd = openat(d->newfd, usage_rel(true, false),
                    O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    int err = errno;
    md_dir_put(s, d, false);
    if (fd < 0) {
        errno = err;
        return -1;
    }
    char text[USAGE_MAX + 1];
    struct stat sb;
    ssize_t n = -1;
    time_t now = time(NULL);
    if (fstat(fd, &sb) == 0 && usage_trusted(&sb, now))
        n = fs_read_upto(fd, text, sizeof(text));
    close(fd);
    if (n < 0 || (size_t)n >= USAGE_MAX ||
        !usage_parse(text, (size_t)n, bytes_r, messages_r)) {
        errno = ESTALE;
        return -1;
    }
    return 0;
}

/*
 * An exact reading replaces the total in two steps, so that a change made
 * while the folders are read is never lost (doc/store.md "The usage
 * file"). Before: a placeholder that the parser refuses ("?") goes in the
 * file's place, and it is kept open. After: the total goes in its place
 * only if the placeholder is still the file there and nothing was
 * appended to it; else the placeholder stays, and the next check reads
 * the folders again. Each step writes a temporary file in the INBOX's
 * tmp/ and renames it over the file: not fsync'd, a cache.
 */
struct usage_claim {
    struct md_dir *d; /* the INBOX, held */
    int fd;           /* the placeholder, open */
    struct stat sb;   /* as it was made */
};

/* Writes text to a temporary file in d's tmp/ and renames it over the
 * usage file; the new file's descriptor (open for reading) when keep_fd,
 * else 0; -1 on failure (nothing renamed). */
static int usage_replace(struct mdstore *s, struct md_dir *d, const char *text,
                         bool keep_fd)
{
    char name[96];
    snprintf(name, sizeof(name), MD_USAGE_FILE ".%ld.%lu", (long)getpid(),
             atomic_fetch_add(&s->counter, 1));
    int fd = openat(d->tmpfd, name,
                    O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (fs_write_all(fd, text, strlen(text)) < 0 ||
        renameat(d->tmpfd, name, d->newfd, usage_rel(true, false)) < 0) {
        unlinkat(d->tmpfd, name, 0);
        close(fd);
        return -1;
    }
    if (keep_fd)
        return fd;
    return close(fd) < 0 ? -1 : 0;
}

static bool usage_claim(struct mdstore *s, const char *user, struct usage_claim *c)
{
    c->fd = -1;
    if ((c->d = inbox_get(s, user)) == NULL)
        return false;
    c->fd = usage_replace(s, c->d, USAGE_MAGIC "?\n", true);
    if (c->fd < 0 || fstat(c->fd, &c->sb) < 0) {
        if (c->fd >= 0)
            close(c->fd);
        md_dir_put(s, c->d, false);
        return false;
    }
    return true;
}

/* The exact total in place of the placeholder, if it is untouched; the
 * claim is given back either way. */
static void usage_finish(struct mdstore *s, struct usage_claim *c, bool ok,
                         uint64_t bytes, uint64_t msgs)
{
    struct stat now, there;
    char text[96];
    if (ok && bytes <= INT64_MAX && msgs <= INT64_MAX &&
        fstat(c->fd, &now) == 0 && now.st_size == c->sb.st_size &&
        fstatat(c->d->newfd, usage_rel(true, false), &there, AT_SYMLINK_NOFOLLOW) == 0 &&
        there.st_dev == c->sb.st_dev && there.st_ino == c->sb.st_ino) {
        snprintf(text, sizeof(text), USAGE_MAGIC "%" PRIu64 " %" PRIu64 "\n", bytes,
                 msgs);
        (void)usage_replace(s, c->d, text, false);
    }
    close(c->fd);
    md_dir_put(s, c->d, false);
}

void md_usage_add(int dirfd, bool from_new, bool in_folder, int64_t bytes,
                  int64_t msgs)
{
    const char *rel = usage_rel(from_new, in_folder);
    int fd = openat(dirfd, rel,
                    O_WRONLY | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC |
                        O_NOCTTY);
    if (fd < 0)
        return; /* none kept: nothing to keep up */
    struct stat sb;
    char line[48];
    /* One write, so concurrent appends never mix. None to a file the
     * reader no longer trusts (too large, or too old: the append would
     * make an old total look fresh). A line that did not go in whole (a
     * full disk) leaves a total that is wrong: the file goes, and the next
     * check reads the folders. */
    int len = snprintf(line, sizeof(line), "%" PRId64 " %" PRId64 "\n", bytes, msgs);
    if (fstat(fd, &sb) == 0 && usage_trusted(&sb, time(NULL)) &&
        write(fd, line, (size_t)len) != len)
        unlinkat(dirfd, rel, 0);
    close(fd);
}

int md_quota_usage(struct store *st, const char *user, uint64_t *bytes_r,
                   uint64_t *messages_r)
{
    struct mdstore *s = (struct mdstore *)st;
    struct usage_claim c;
    bool claimed = usage_claim(s, user, &c);
    int r = md_each_folder(s, user, md_folder_usage, bytes_r, messages_r);
    if (claimed)
        usage_finish(s, &c, r == 0, *bytes_r, *messages_r);
    return r;
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
    /* The INBOX's directories as delivery holds them (checked, or walked
     * without creating anything); else (no Maildir, or one without tmp/
     * or new/) the long way, as before the cache. */
    struct md_dir *d = inbox_get(s, user);
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
