/*
 * keywords: IMAP keyword names (store_keyword_valid, mailbox.h) and the
 * Maildir backend's keyword table, Dovecot's `dovecot-keywords` file
 * (doc/store.md "Keywords").
 *
 * The file maps keyword n to the letter 'a'+n of the ":2," info part of
 * message file names, one "n name" line per slot, n from 0 to 25. We read
 * it as Dovecot's maildir-keywords.c does (split at the first space, skip
 * lines without one, an out-of-range number or an empty name) and write it
 * as Dovecot does ("%u %s\n" in slot order, replaced atomically, the mtime
 * always growing because Dovecot rereads the file only when its mtime has
 * changed). Names we would not create ourselves (not an atom, too long)
 * are kept in the table, so a rewrite never drops another tool's entry,
 * but are never reported or matched: they cannot reach an IMAP client.
 *
 * Writers are serialised by the folder index's write lock (the caller
 * holds it), so one fixed temp name suffices; a temp file left by a crash
 * is overwritten by the next write.
 *
 * SECURITY: the file is opened O_NOFOLLOW relative to the folder's
 * directory descriptor, read up to a cap, and every name is checked before
 * it is exposed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/xalloc.h"
#include "store/store_backend.h"

#define KW_TMP_FILE MD_KEYWORDS_FILE ".estafeta-tmp"
/* 26 lines of a number and a name: anything longer is not a file we or
 * Dovecot wrote; what fits is read. */
#define KW_FILE_MAX (64u * 1024)
/* Names kept (not necessarily exposed) from another tool's file. */
#define KW_RAW_MAX 255

bool store_keyword_valid(const char *kw)
{
    if (kw == NULL)
        return false;
    size_t n = strlen(kw);
    if (n == 0 || n > STORE_KEYWORD_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)kw[i];
        /* RFC 3501 9: ATOM-CHAR is any CHAR except atom-specials. */
        if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c) != NULL)
            return false;
    }
    return true;
}

void md_kw_free(struct md_kwtable *t)
{
    for (size_t i = 0; i < STORE_KEYWORDS_MAX; i++) {
        free(t->name[i]);
        t->name[i] = NULL;
    }
}

/* A name worth keeping for a rewrite: no control octet (it is one line of
 * the file), not too long. */
static bool raw_ok(const char *p, size_t n)
{
    if (n == 0 || n > KW_RAW_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
            return false;
    return true;
}

int md_kw_read(int dirfd, struct md_kwtable *t)
{
    memset(t, 0, sizeof(*t));
    int fd = openat(dirfd, MD_KEYWORDS_FILE,
                    O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        errno = EIO;
        return -1;
    }
    struct buf b;
    buf_init(&b, KW_FILE_MAX);
    char chunk[4096];
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof(chunk));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int err = errno;
            buf_free(&b);
            close(fd);
            errno = err;
            return -1;
        }
        if (r == 0)
            break;
        size_t room = KW_FILE_MAX - b.len;
        if (buf_append(&b, chunk, (size_t)r < room ? (size_t)r : room) < 0 ||
            (size_t)r >= room)
            break;
    }
    close(fd);
    const char *p = b.data != NULL ? b.data : "", *end = p + b.len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl != NULL ? nl : end;
        const char *line = p;
        p = nl != NULL ? nl + 1 : end;
        if (le > line && le[-1] == '\r')
            le--;
        const char *sp = memchr(line, ' ', (size_t)(le - line));
        if (sp == NULL || sp == line || sp - line > 2)
            continue;
        unsigned idx = 0;
        bool digits = true;
        for (const char *d = line; d < sp; d++) {
            if (*d < '0' || *d > '9')
                digits = false;
            else
                idx = idx * 10 + (unsigned)(*d - '0');
        }
        const char *name = sp + 1;
        size_t nlen = (size_t)(le - name);
        if (!digits || idx >= STORE_KEYWORDS_MAX || !raw_ok(name, nlen))
            continue;
        /* A later line for the same slot wins, as in Dovecot. */
        free(t->name[idx]);
        t->name[idx] = xstrndup(name, nlen);
    }
    buf_free(&b);
    return 0;
}

int md_kw_lookup(const struct md_kwtable *t, const char *name)
{
    for (int i = 0; i < STORE_KEYWORDS_MAX; i++)
        if (t->name[i] != NULL && store_keyword_valid(t->name[i]) &&
            strcasecmp(t->name[i], name) == 0)
            return i;
    return -1;
}

void md_kw_expose(const struct md_kwtable *t, struct store_mailbox *mb)
{
    for (size_t i = 0; i < STORE_KEYWORDS_MAX; i++) {
        free(mb->kw[i]);
        mb->kw[i] = NULL;
        if (t->name[i] == NULL || !store_keyword_valid(t->name[i]))
            continue;
        /* Of two slots with one name (case aside) the first is it; the
         * other's letter stays in names, unreported. */
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++)
            dup = mb->kw[j] != NULL && strcasecmp(mb->kw[j], t->name[i]) == 0;
        if (!dup)
            mb->kw[i] = xstrdup(t->name[i]);
    }
}

uint32_t md_kw_mask(const struct store_mailbox *mb, const char *letters)
{
    uint32_t m = 0;
    for (const char *c = letters != NULL ? letters : ""; *c != '\0'; c++)
        if (*c >= 'a' && *c <= 'z' && mb->kw[*c - 'a'] != NULL)
            m |= 1u << (*c - 'a');
    return m;
}

int md_kw_write(int dirfd, const struct md_kwtable *t)
{
    struct buf b;
    buf_init(&b, KW_FILE_MAX);
    for (unsigned i = 0; i < STORE_KEYWORDS_MAX; i++)
        if (t->name[i] != NULL)
            buf_appendf(&b, "%u %s\n", i, t->name[i]);
    struct stat old;
    bool had = fstatat(dirfd, MD_KEYWORDS_FILE, &old, AT_SYMLINK_NOFOLLOW) == 0;
    /* O_NONBLOCK: a FIFO planted under the temp name must not hang us. */
    int fd = openat(dirfd, KW_TMP_FILE,
                    O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NONBLOCK |
                        O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) {
        buf_free(&b);
        return -1;
    }
    int err = 0;
    struct stat now;
    if (fstat(fd, &now) < 0)
        err = errno;
    else if (!S_ISREG(now.st_mode))
        err = EIO;
    if (err == 0 && (fs_write_all(fd, b.data != NULL ? b.data : "", b.len) < 0 ||
                     fstat(fd, &now) < 0))
        err = errno;
    /* Dovecot caches the table by mtime (seconds): a rewrite within the
     * second of the last one must still look newer. */
    if (err == 0 && had && now.st_mtim.tv_sec <= old.st_mtim.tv_sec) {
        struct timespec ts[2] = {{0, UTIME_OMIT}, {old.st_mtim.tv_sec + 1, 0}};
        if (futimens(fd, ts) < 0)
            err = errno;
    }
    if (err == 0 && fsync(fd) < 0)
        err = errno;
    if (close(fd) < 0 && err == 0)
        err = errno;
    buf_free(&b);
    if (err == 0 && renameat(dirfd, KW_TMP_FILE, dirfd, MD_KEYWORDS_FILE) < 0)
        err = errno;
    if (err == 0 && fsync(dirfd) < 0)
        err = errno;
    if (err != 0) {
        unlinkat(dirfd, KW_TMP_FILE, 0);
        errno = err;
        return -1;
    }
    return 0;
}
