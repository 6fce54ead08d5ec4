/*
 * libfault: an LD_PRELOAD shim for fault-injection tests (the SQLite
 * discipline: make write, fsync and rename fail where they are called, and
 * check that the client never gets a 250 for a message that is not safe).
 *
 * The test names a control file in ESTAFETA_FAULT_FILE. Before each
 * intercepted call the shim reads it (so a test can switch faults on and off
 * while the server runs). Its content is one line of words:
 *
 *   write=ENOSPC    write()/pwrite()/writev()/pwritev() on regular files fail
 *                   with ENOSPC
 *   fsync=EIO       fsync()/fdatasync()/syncfs() fail with EIO (files and directories)
 *   rename=EIO      rename()/renameat()/renameat2() and linkat() fail with
 *                   EIO: every call that gives a finished file its name
 *
 * Writes are failed only on regular files, so sockets, pipes and the log
 * (stderr) keep working. With no control file, or an empty one, nothing is injected.
 * Test-only: built into build/<variant>/libfault.so, never into estafeta.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* Reads the control file with raw syscalls so the shim never recurses. */
static int fault_for(const char *what)
{
    const char *path = getenv("ESTAFETA_FAULT_FILE");
    if (path == NULL)
        return 0;
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char text[256];
    long n = syscall(SYS_read, fd, text, sizeof(text) - 1);
    syscall(SYS_close, fd);
    if (n <= 0)
        return 0;
    text[n] = '\0';
    size_t wl = strlen(what);
    for (char *p = text; (p = strstr(p, what)) != NULL; p += wl) {
        if ((p == text || p[-1] == ' ' || p[-1] == '\n') && p[wl] == '=') {
            const char *e = p + wl + 1;
            if (strncmp(e, "ENOSPC", 6) == 0)
                return ENOSPC;
            if (strncmp(e, "EIO", 3) == 0)
                return EIO;
            if (strncmp(e, "EDQUOT", 6) == 0)
                return EDQUOT;
        }
    }
    return 0;
}

static int is_regular(int fd)
{
    struct stat st;
    return syscall(SYS_fstat, fd, &st) == 0 && S_ISREG(st.st_mode);
}

ssize_t write(int fd, const void *buf, size_t n)
{
    int e;
    if (is_regular(fd) && (e = fault_for("write")) != 0) {
        errno = e;
        return -1;
    }
    return syscall(SYS_write, fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    int e;
    if (is_regular(fd) && (e = fault_for("write")) != 0) {
        errno = e;
        return -1;
    }
    return syscall(SYS_pwrite64, fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    int e;
    if (is_regular(fd) && (e = fault_for("write")) != 0) {
        errno = e;
        return -1;
    }
    return syscall(SYS_writev, fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    int e;
    if (is_regular(fd) && (e = fault_for("write")) != 0) {
        errno = e;
        return -1;
    }
    /* The kernel takes the offset as two longs (low, high). */
    return syscall(SYS_pwritev, fd, iov, cnt, (long)off, 0L);
}

int fsync(int fd)
{
    int e;
    if ((e = fault_for("fsync")) != 0) {
        errno = e;
        return -1;
    }
    return (int)syscall(SYS_fsync, fd);
}

int syncfs(int fd)
{
    int e;
    if ((e = fault_for("fsync")) != 0) {
        errno = e;
        return -1;
    }
    return (int)syscall(SYS_syncfs, fd);
}

int fdatasync(int fd)
{
    int e;
    if ((e = fault_for("fsync")) != 0) {
        errno = e;
        return -1;
    }
    return (int)syscall(SYS_fdatasync, fd);
}

int rename(const char *from, const char *to)
{
    int e;
    if ((e = fault_for("rename")) != 0) {
        errno = e;
        return -1;
    }
    return (int)syscall(SYS_renameat, AT_FDCWD, from, AT_FDCWD, to);
}

int renameat(int olddirfd, const char *from, int newdirfd, const char *to)
{
    int e;
    if ((e = fault_for("rename")) != 0) {
        errno = e;
        return -1;
    }
    return (int)syscall(SYS_renameat, olddirfd, from, newdirfd, to);
}

int renameat2(int olddirfd, const char *from, int newdirfd, const char *to,
              unsigned int flags)
{
    int e;
    if ((e = fault_for("rename")) != 0) {
        errno = e;
        return -1;
    }
    return (int)syscall(SYS_renameat2, olddirfd, from, newdirfd, to, flags);
}

int linkat(int olddirfd, const char *from, int newdirfd, const char *to, int flags)
{
    int e;
    if ((e = fault_for("rename")) != 0) {
        errno = e;
        return -1;
    }
    return (int)syscall(SYS_linkat, olddirfd, from, newdirfd, to, flags);
}
