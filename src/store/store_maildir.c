/*
 * store_maildir: the Maildir backend's delivery (the default store, the
 * source of truth), the name validation shared by the backends, and the
 * dispatch of store.h and mailbox.h. Layout, unique names, the index and the
 * crash-safety argument of every step are in doc/store.md; this file and
 * mailbox_maildir.c (mailboxes, the index) implement it.
 *
 * SECURITY: mailbox and folder names are validated against a small
 * whitelist before they become path components, and directories are opened
 * one level at a time with O_NOFOLLOW (or taken from the directory cache,
 * dircache_maildir.c, only after a check that refuses a folder moved,
 * replaced or now reached through a link), so neither a hostile name nor a
 * symbolic link inside the store can make a delivery write elsewhere.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/xalloc.h"
#include "lib/random.h"
#include "store/index_sqlite.h"
#include "store/store_backend.h"

/* ================= dispatch (store.h) ================= */

void store_free(struct store *s)
{
    if (s != NULL)
        s->ops->free(s);
}

int store_deliver_peek(struct store *s, const char *mailbox, const char *folder,
                       const char *prefix, size_t prefix_len, store_read_fn read,
                       void *read_arg, char *uid_r, size_t uid_cap,
                       struct store_qstate *qs_r)
{
    struct store_qstate qs = {STORE_QWARN_ARMED, 0, 0};
    /* qs_r NULL: no peek (the quota warning holds the state's lock). */
    if (s->ops->deliver_begin == NULL)
        return s->ops->deliver(s, mailbox, folder, prefix, prefix_len, read,
                               read_arg, uid_r, uid_cap, qs_r);
    struct store_commit c = {.p = NULL};
    /* A uid_r too small is refused before anything is written. */
    if (s->ops->deliver_begin(s, NULL, mailbox, folder, prefix, prefix_len, read,
                              read_arg, uid_r != NULL ? uid_cap : 0, &c.p) < 0)
        return -1;
    c.p->mailbox = NULL;
    s->ops->deliver_commit(s, NULL, &c, &qs, 1);
    if (c.err != 0) {
        errno = c.err;
        return -1;
    }
    if (uid_r != NULL)
        snprintf(uid_r, uid_cap, "%s", c.uid);
    if (qs_r != NULL)
        *qs_r = qs;
    return 0;
}

int store_deliver(struct store *s, const char *mailbox, const char *folder,
                  const char *prefix, size_t prefix_len, store_read_fn read,
                  void *read_arg, char *uid_r, size_t uid_cap)
{
    struct store_qstate qs;
    int r = store_deliver_peek(s, mailbox, folder, prefix, prefix_len, read,
                               read_arg, uid_r, uid_cap, &qs);
    if (r == 0) {
        int err = errno;
        store_quota_delivered(s, mailbox, &qs);
        errno = err;
    }
    return r;
}

/* The batch steps for a backend that cannot split them (the in-memory
 * one): begin keeps the message in memory, commit delivers it whole. */
struct store_pending_buf {
    struct store_pending base;
    char *folder;
    struct buf content;
};

static ssize_t store_read_nothing(void *arg, void *p, size_t n)
{
    (void)arg;
    (void)p;
    (void)n;
    return 0;
}

static int store_begin_buffered(struct store *s, const char *folder,
                                const char *prefix, size_t prefix_len,
                                store_read_fn read, void *read_arg,
                                struct store_pending **p_r)
{
    struct store_pending_buf *pb = xcalloc(1, sizeof(*pb));
    pb->base.store = s;
    pb->folder = folder != NULL ? xstrdup(folder) : NULL;
    buf_init(&pb->content, SIZE_MAX - 1);
    char chunk[16384];
    int err = 0;
    if (buf_append(&pb->content, prefix_len > 0 ? prefix : "", prefix_len) < 0)
        err = EFBIG;
    while (err == 0) {
        ssize_t r = read(read_arg, chunk, sizeof(chunk));
        if (r == 0)
            break;
        if (r < 0 || (size_t)r > sizeof(chunk))
            err = r < 0 && errno != 0 ? errno : EIO;
        else if (buf_append(&pb->content, chunk, (size_t)r) < 0)
            err = EFBIG;
    }
    if (err != 0) {
        buf_free(&pb->content);
        free(pb->folder);
        free(pb);
        errno = err;
        return -1;
    }
    *p_r = &pb->base;
    return 0;
}

static void store_commit_buffered(struct store *s, struct store_commit *v,
                                  struct store_qstate *qs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct store_pending_buf *pb = (struct store_pending_buf *)v[i].p;
        v[i].err = 0;
        if (s->ops->deliver(s, pb->base.mailbox, pb->folder, pb->content.data,
                            pb->content.len, store_read_nothing, NULL, v[i].uid,
                            sizeof(v[i].uid), &qs[i]) < 0)
            v[i].err = errno != 0 ? errno : EIO;
        buf_free(&pb->content);
        free(pb->folder);
        free(pb);
    }
}

int store_deliver_begin(struct store *s, struct store_flush *fl,
                        const char *mailbox, const char *folder,
                        const char *prefix, size_t prefix_len,
                        store_read_fn read, void *read_arg,
                        struct store_pending **p_r)
{
    *p_r = NULL;
    int r = s->ops->deliver_begin != NULL
                ? s->ops->deliver_begin(s, fl, mailbox, folder, prefix,
                                        prefix_len, read, read_arg, 0, p_r)
                : store_begin_buffered(s, folder, prefix, prefix_len, read,
                                       read_arg, p_r);
    if (r == 0)
        (*p_r)->mailbox = xstrdup(mailbox);
    return r;
}

void store_deliver_commit(struct store *s, struct store_flush *fl,
                          struct store_commit *v, size_t n)
{
    if (n == 0)
        return;
    struct store_qstate *qs = xcalloc(n, sizeof(*qs));
    char **boxes = xcalloc(n, sizeof(*boxes));
    for (size_t i = 0; i < n; i++) {
        boxes[i] = v[i].p->mailbox;
        qs[i] = (struct store_qstate){STORE_QWARN_ARMED, 0, 0};
    }
    if (s->ops->deliver_commit != NULL)
        s->ops->deliver_commit(s, fl, v, qs, n);
    else
        store_commit_buffered(s, v, qs, n);
    for (size_t i = 0; i < n; i++) {
        v[i].p = NULL;
        if (v[i].err == 0)
            store_quota_delivered(s, boxes[i], &qs[i]);
        free(boxes[i]);
    }
    free(boxes);
    free(qs);
}

void store_deliver_abort(struct store_pending *p)
{
    if (p == NULL)
        return;
    char *mailbox = p->mailbox;
    struct store *s = p->store;
    if (s->ops->deliver_abort != NULL) {
        s->ops->deliver_abort(p);
    } else {
        struct store_pending_buf *pb = (struct store_pending_buf *)p;
        buf_free(&pb->content);
        free(pb->folder);
        free(pb);
    }
    free(mailbox);
}

int store_mailbox_path(struct store *s, const char *mailbox, char *out,
                       size_t out_cap)
{
    return s->ops->mailbox_path(s, mailbox, out, out_cap);
}

int store_clean_tmp(struct store *s, const char *mailbox, const char *folder,
                    long max_age)
{
    return s->ops->clean_tmp(s, mailbox, folder, max_age);
}

/* ---- mailbox.h ---- */

int store_mailbox_open(struct store *s, const char *user, const char *folder,
                       unsigned open_flags, struct store_mailbox **mb_r)
{
    *mb_r = NULL;
    if ((open_flags & ~STORE_OPEN_EXCLUSIVE) != 0) {
        errno = EINVAL;
        return -1;
    }
    return s->ops->mailbox_open(s, user, folder, open_flags, mb_r);
}

void store_mailbox_close(struct store_mailbox *mb)
{
    if (mb != NULL)
        mb->store->ops->mailbox_close(mb);
}

uint32_t store_mailbox_uidvalidity(const struct store_mailbox *mb)
{
    return mb->uidvalidity;
}

uint32_t store_mailbox_uidnext(const struct store_mailbox *mb)
{
    return mb->uidnext;
}

size_t store_mailbox_count(const struct store_mailbox *mb)
{
    return mb->n;
}

const struct store_msg *store_mailbox_msg(const struct store_mailbox *mb,
                                          size_t i)
{
    return i < mb->n ? &mb->msgs[i] : NULL;
}

int store_mailbox_refresh(struct store_mailbox *mb)
{
    return mb->store->ops->mailbox_refresh(mb);
}

int store_msg_open(struct store_mailbox *mb, size_t i, int *fd_r)
{
    *fd_r = -1;
    if (i >= mb->n) {
        errno = EINVAL;
        return -1;
    }
    return mb->store->ops->msg_open(mb, i, fd_r);
}

int store_msg_set_flags(struct store_mailbox *mb, size_t i, unsigned flags)
{
    if (i >= mb->n || (flags & ~STORE_F_ALL) != 0) {
        errno = EINVAL;
        return -1;
    }
    return mb->store->ops->msg_update_flags(mb, i, STORE_FLAGS_SET, flags, true,
                                            NULL, 0);
}

int store_msg_update_flags(struct store_mailbox *mb, size_t i,
                           enum store_flags_op op, unsigned flags,
                           const char *const *keywords, size_t nkeywords)
{
    if (i >= mb->n || (flags & ~STORE_F_ALL) != 0 ||
        (op != STORE_FLAGS_SET && op != STORE_FLAGS_ADD &&
         op != STORE_FLAGS_REMOVE) ||
        (nkeywords > 0 && keywords == NULL)) {
        errno = EINVAL;
        return -1;
    }
    for (size_t k = 0; k < nkeywords; k++)
        if (!store_keyword_valid(keywords[k])) {
            errno = EINVAL;
            return -1;
        }
    return mb->store->ops->msg_update_flags(mb, i, op, flags, false, keywords,
                                            nkeywords);
}

const char *store_mailbox_keyword(const struct store_mailbox *mb, size_t n)
{
    return n < STORE_KEYWORDS_MAX ? mb->kw[n] : NULL;
}

size_t store_msg_keywords(const struct store_mailbox *mb, size_t i,
                          const char **names_r)
{
    size_t k = 0;
    if (i >= mb->n)
        return 0;
    for (size_t n = 0; n < STORE_KEYWORDS_MAX; n++)
        if ((mb->msgs[i].keywords & (1u << n)) && mb->kw[n] != NULL)
            names_r[k++] = mb->kw[n];
    return k;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int store_mailbox_expunge(struct store_mailbox *mb, const size_t *idx, size_t n)
{
    if (n == 0)
        return 0;
    if (idx == NULL || n > mb->n) {
        errno = EINVAL;
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (idx[i] >= mb->n) {
            errno = EINVAL;
            return -1;
        }
    /* The backends get the numbers sorted and without duplicates. */
    size_t *sorted = xreallocarray(NULL, n, sizeof(*sorted));
    memcpy(sorted, idx, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), cmp_size);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || sorted[k - 1] != sorted[i])
            sorted[k++] = sorted[i];
    int r = mb->store->ops->mailbox_expunge(mb, sorted, k);
    int err = errno;
    free(sorted);
    errno = err;
    return r;
}

int store_quota_usage(struct store *s, const char *user, uint64_t *bytes_r,
                      uint64_t *messages_r)
{
    *bytes_r = 0;
    *messages_r = 0;
    return s->ops->quota_usage(s, user, bytes_r, messages_r);
}

int store_quota_usage_cached(struct store *s, const char *user,
                             uint64_t *bytes_r, uint64_t *messages_r)
{
    if (s->ops->quota_usage_cached == NULL) {
        errno = ENOTSUP;
        return -1;
    }
    return s->ops->quota_usage_cached(s, user, bytes_r, messages_r);
}

int store_quota_usage_files(struct store *s, const char *user,
                            uint64_t *bytes_r, uint64_t *messages_r)
{
    *bytes_r = 0;
    *messages_r = 0;
    return s->ops->quota_usage_files(s, user, bytes_r, messages_r);
}

int store_user_create(struct store *s, const char *user)
{
    return s->ops->user_create(s, user);
}

const char *const store_std_folders[STORE_STD_FOLDERS] = {
    "Sent", "Drafts", "Trash", "Junk", "Archive",
};

/* ================= CRLF size ================= */

void store_crlf_init(struct store_crlf *c)
{
    *c = (struct store_crlf){0, false, true};
}

/* Every octet counts one, and the two kinds of lone line end one more
 * each: a LF without its CR, a CR without its LF. So the count is the
 * length plus those, found with memchr (it scans a word or a vector at a
 * time: this was the top user-space symbol in the delivery of 100 KiB
 * messages when it looked at every octet). A CR that ends a piece is
 * judged by the first octet of the next piece, or by finish. */
void store_crlf_feed(struct store_crlf *c, const void *p, size_t len)
{
    if (len == 0)
        return;
    const unsigned char *b = p, *end = b + len;
    uint64_t lone = 0;
    if (c->cr && b[0] != '\n')
        lone++;
    for (const unsigned char *q = b;
         q < end && (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++)
        if (q > b ? q[-1] != '\r' : !c->cr)
            lone++;
    for (const unsigned char *q = b;
         q < end && (q = memchr(q, '\r', (size_t)(end - q))) != NULL; q++)
        if (q + 1 < end && q[1] != '\n')
            lone++;
    c->n += (uint64_t)len + lone;
    c->cr = end[-1] == '\r';
    c->bol = end[-1] == '\n';
}

uint64_t store_crlf_finish(const struct store_crlf *c)
{
    if (c->cr) /* a last lone CR gets its LF */
        return c->n + 1;
    return c->bol ? c->n : c->n + 2; /* the unended last line gets CRLF */
}

int store_crlf_fd(int fd, uint64_t *vsize_r)
{
    char chunk[16384];
    struct store_crlf c;
    store_crlf_init(&c);
    for (;;) {
        ssize_t r = fs_read_upto(fd, chunk, sizeof(chunk));
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        store_crlf_feed(&c, chunk, (size_t)r);
    }
    *vsize_r = store_crlf_finish(&c);
    return 0;
}

/* ================= name validation ================= */

static bool part_ok(const char *p, size_t n, size_t max, bool local)
{
    if (n == 0 || n > max || p[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' ||
                  (local && (c == '_' || c == '+' || c == '='));
        if (!ok || (c == '.' && i + 1 < n && p[i + 1] == '.'))
            return false;
    }
    return true;
}

int store_check_mailbox(const char *mailbox, size_t *at_r)
{
    const char *at = mailbox != NULL ? strchr(mailbox, '@') : NULL;
    if (at == NULL || strchr(at + 1, '@') != NULL ||
        !part_ok(mailbox, (size_t)(at - mailbox), STORE_LOCAL_MAX, true) ||
        !part_ok(at + 1, strlen(at + 1), STORE_DOMAIN_MAX, false)) {
        errno = EINVAL;
        return -1;
    }
    *at_r = (size_t)(at - mailbox);
    return 0;
}

int store_check_folder(const char *folder, bool *inbox_r)
{
    *inbox_r = folder == NULL || strcasecmp(folder, "INBOX") == 0;
    if (*inbox_r)
        return 0;
    size_t n = strlen(folder);
    /* Every hierarchy level non-empty: no leading, trailing or double '.'. */
    if (n == 0 || n > STORE_FOLDER_MAX || folder[0] == '.' ||
        folder[n - 1] == '.' || strstr(folder, "..") != NULL)
        goto bad;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)folder[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == ' ' || c == '-' || c == '_' ||
              c == '.'))
            goto bad;
    }
    return 0;
bad:
    errno = EINVAL;
    return -1;
}

/* ================= Maildir backend ================= */

#define HOST_MAX MD_HOST_MAX

static struct mdstore *MD(struct store *s) { return (struct mdstore *)s; }

int md_names(const char *mailbox, const char *folder, struct mdpath *p)
{
    size_t at;
    bool inbox;
    if (store_check_mailbox(mailbox, &at) < 0 ||
        store_check_folder(folder, &inbox) < 0)
        return -1;
    memcpy(p->local, mailbox, at);
    p->local[at] = '\0';
    snprintf(p->domain, sizeof(p->domain), "%s", mailbox + at + 1);
    if (inbox)
        p->folder[0] = '\0';
    else
        snprintf(p->folder, sizeof(p->folder), ".%s", folder);
    return 0;
}

/* The Maildir spec escapes '/' and ':' as octal; so do we, and everything
 * else that could confuse a name parser (',' starts S=). */
static void escape_host(const char *h, char out[HOST_MAX + 1])
{
    size_t o = 0;
    for (; *h != '\0'; h++) {
        unsigned char c = (unsigned char)*h;
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
        size_t need = plain ? 1 : 4;
        if (o + need > HOST_MAX)
            break;
        if (plain)
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, 5, "\\%03o", c);
    }
    out[o] = '\0';
}

/* Opens root/domain/local[/.folder] one level at a time, never following a
 * symbolic link below root; the Maildir's directory fd, or -1. */
int md_walk(struct mdstore *s, const struct mdpath *p)
{
    const char *comp[3] = {p->domain, p->local, p->folder};
    int fd = open(s->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    for (int i = 0; i < 3 && fd >= 0 && comp[i][0] != '\0'; i++) {
        int next = fs_open_subdir(fd, comp[i]);
        fs_close_keep_errno(fd);
        fd = next;
    }
    return fd;
}

static int mkpath(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int mkpath(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* cur, new, tmp in that order (fs_mkdir_p makes each durable before the
 * next), so an existing tmp/ implies a complete Maildir. */
static int md_create_dirs(const char *dir)
{
    static const char *const subs[] = {"cur", "new", "tmp"};
    char path[PATH_MAX];
    for (int i = 0; i < 3; i++)
        if (mkpath(path, sizeof(path), "%s/%s", dir, subs[i]) < 0 ||
            fs_mkdir_p(path, 0700) < 0)
            return -1;
    return 0;
}

int md_create(struct mdstore *s, const struct mdpath *p)
{
    char dir[PATH_MAX], path[PATH_MAX];
    if (mkpath(dir, sizeof(dir), "%s/%s/%s", s->root, p->domain, p->local) < 0 ||
        md_create_dirs(dir) < 0)
        return -1;
    if (p->folder[0] == '\0')
        return 0;
    /* Maildir++: the folder, its maildirfolder marker, then its subdirs. */
    if (mkpath(dir, sizeof(dir), "%s/%s/%s/%s", s->root, p->domain, p->local,
               p->folder) < 0 ||
        fs_mkdir_p(dir, 0700) < 0 ||
        mkpath(path, sizeof(path), "%s/maildirfolder", dir) < 0)
        return -1;
    if (fs_create_synced(AT_FDCWD, path, 0600) < 0 || fs_fsync_dir(dir) < 0)
        return -1;
    return md_create_dirs(dir);
}

static int md_mailbox_path(struct store *st, const char *mailbox, char *out,
                           size_t out_cap)
{
    struct mdpath p;
    if (md_names(mailbox, NULL, &p) < 0)
        return -1;
    int n = snprintf(out, out_cap, "%s/%s/%s", MD(st)->root, p.domain, p.local);
    if (n < 0 || (size_t)n >= out_cap) {
        errno = ERANGE;
        return -1;
    }
    return 0;
}

static int md_clean_tmp(struct store *st, const char *mailbox,
                        const char *folder, long max_age)
{
    struct mdpath p;
    if (md_names(mailbox, folder, &p) < 0)
        return -1;
    int fd = md_walk(MD(st), &p);
    int tfd = fd >= 0 ? fs_open_subdir(fd, "tmp") : -1;
    if (fd >= 0)
        fs_close_keep_errno(fd);
    if (tfd < 0)
        return errno == ENOENT ? 0 : -1;
    /* Names first, then unlinks: readdir is not disturbed by our changes. */
    char **names;
    size_t n;
    if (fs_dir_names(tfd, &names, &n) < 0) {
        fs_close_keep_errno(tfd);
        return -1;
    }
    time_t now = time(NULL);
    int removed = 0;
    for (size_t i = 0; i < n; i++) {
        struct stat sb;
        if (fstatat(tfd, names[i], &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISREG(sb.st_mode) && now - sb.st_mtime > (time_t)max_age &&
            unlinkat(tfd, names[i], 0) == 0 && removed < INT_MAX)
            removed++;
    }
    fs_names_free(names, n);
    close(tfd);
    return removed;
}

static void md_free(struct store *st)
{
    struct mdstore *s = MD(st);
    md_dircache_free(s->dcache);
    free(s->root);
    free(s);
}

static const struct store_ops md_ops = {
    .free = md_free,
    .deliver_begin = md_deliver_begin,
    .deliver_commit = md_deliver_commit,
    .deliver_abort = md_deliver_abort,
    .mailbox_path = md_mailbox_path,
    .clean_tmp = md_clean_tmp,
    .mailbox_open = md_mailbox_open,
    .mailbox_close = md_mailbox_close,
    .mailbox_refresh = md_mailbox_refresh,
    .msg_open = md_msg_open,
    .msg_update_flags = md_msg_update_flags,
    .mailbox_expunge = md_mailbox_expunge,
    .quota_usage = md_quota_usage,
    .quota_usage_cached = md_quota_usage_cached,
    .quota_usage_files = md_quota_usage_files,
    .user_create = md_user_create,
    .quota_state_peek = md_quota_state_peek,
    .quota_state_lock = md_quota_state_lock,
    .quota_state_unlock = md_quota_state_unlock,
};

struct store *store_maildir_new(const char *root, const char *hostname)
{
    char cwd[PATH_MAX], host[256];
    struct mdstore *s = xcalloc(1, sizeof(*s));
    s->base.ops = &md_ops;
    if (root[0] == '/') {
        s->root = xstrdup(root);
    } else {
        if (getcwd(cwd, sizeof(cwd)) == NULL) {
            free(s);
            return NULL;
        }
        size_t len = strlen(cwd) + 1 + strlen(root) + 1;
        s->root = xmalloc(len);
        snprintf(s->root, len, "%s/%s", cwd, root);
    }
    if (hostname == NULL || hostname[0] == '\0') {
        if (gethostname(host, sizeof(host)) < 0 || host[0] == '\0')
            snprintf(host, sizeof(host), "localhost");
        host[sizeof(host) - 1] = '\0';
        hostname = host;
    }
    escape_host(hostname, s->host);
    if (s->host[0] == '\0')
        snprintf(s->host, sizeof(s->host), "localhost");
    atomic_init(&s->counter, 0);
    s->dcache = md_dircache_new();
    return &s->base;
}
