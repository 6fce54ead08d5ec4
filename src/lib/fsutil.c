/* fsutil: see fsutil.h for the contract. */
#include "lib/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/xalloc.h"

int fs_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

ssize_t fs_read_upto(int fd, void *p, size_t cap)
{
    char *c = p;
    size_t got = 0;
    while (got < cap) {
        ssize_t r = read(fd, c + got, cap - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int fs_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int r = fsync(fd);
    fs_close_keep_errno(fd);
    return r;
}

/* Directory part of path into out ("." when there is none). */
static void fs_dirname(const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(out, cap, ".");
    } else if (slash == path) {
        snprintf(out, cap, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= cap)
            n = cap - 1;
        memcpy(out, path, n);
        out[n] = '\0';
    }
}

int fs_mkdir_p(const char *path, mode_t mode)
{
    char tmp[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, len + 1);
    struct stat st;
    if (stat(tmp, &st) == 0)
        return S_ISDIR(st.st_mode) ? 0 : (errno = ENOTDIR, -1);
    for (size_t i = 1; i <= len; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0')
            continue;
        char saved = tmp[i];
        tmp[i] = '\0';
        if (mkdir(tmp, mode) == 0) {
            char parent[PATH_MAX];
            fs_dirname(tmp, parent, sizeof(parent));
            if (fs_fsync_dir(parent) < 0)
                return -1;
        } else if (errno != EEXIST) {
            return -1;
        }
        tmp[i] = saved;
    }
    return 0;
}

int fs_read_file(const char *path, size_t max, struct buf *buf_r)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    buf_init(buf_r, max);
    char chunk[8192];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        if (n == 0)
            break;
        if (buf_append(buf_r, chunk, (size_t)n) < 0) {
            errno = EFBIG;
            goto fail;
        }
    }
    close(fd);
    return 0;
fail:;
    int saved = errno;
    close(fd);
    buf_free(buf_r);
    errno = saved;
    return -1;
}

int fs_write_file_atomic(const char *path, const void *p, size_t n, mode_t mode)
{
    char tmp[PATH_MAX], dir[PATH_MAX];
    int len = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    if (len < 0 || (size_t)len >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return -1;
    if (fs_write_all(fd, p, n) < 0 || fsync(fd) < 0) {
        int saved = errno;
        close(fd);
        unlink(tmp);
        errno = saved;
        return -1;
    }
    if (close(fd) < 0 || rename(tmp, path) < 0) {
        int saved = errno;
        unlink(tmp);
        errno = saved;
        return -1;
    }
    fs_dirname(path, dir, sizeof(dir));
    return fs_fsync_dir(dir);
}

int fs_create_synced(int dirfd, const char *name, mode_t mode)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    if (fsync(fd) < 0) {
        fs_close_keep_errno(fd);
        return -1;
    }
    return close(fd);
}

int fs_open_subdir(int dirfd, const char *name)
{
    return openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

void fs_close_keep_errno(int fd)
{
    int saved = errno;
    close(fd);
    errno = saved;
}

int fs_dir_names(int dirfd, char ***names_r, size_t *n_r)
{
    /* A descriptor of our own: closedir() closes it, and reading does not
     * move the caller's offset. */
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        fs_close_keep_errno(fd);
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = xreallocarray(names, cap, sizeof(*names));
        }
        names[n++] = xstrdup(de->d_name);
        errno = 0;
    }
    int err = errno;
    closedir(d);
    if (err != 0) {
        fs_names_free(names, n);
        errno = err;
        return -1;
    }
    *names_r = names;
    *n_r = n;
    return 0;
}

void fs_names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}
