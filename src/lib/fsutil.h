/*
 * fsutil: the few filesystem steps the durability rules are made of.
 *
 *  - fs_write_all(fd, p, n): write() until done, retrying EINTR. 0 or -1/errno.
 *  - fs_read_upto(fd, p, cap): read() until end of file or cap octets,
 *    retrying EINTR: the count (cap when there may be more), or -1/errno.
 *  - fs_fsync_dir(path): open the directory and fsync it, so a rename or
 *    create inside it is durable (doc/queue.md). 0 or -1/errno.
 *  - fs_mkdir_p(path, mode): create path and missing parents; an existing
 *    directory is fine. 0 or -1/errno. Parents created are fsync'd in their
 *    own parents so a new mailbox survives a crash.
 *  - fs_read_file(path, max, buf_r): whole file into a buf capped at max
 *    (-1 with EFBIG when larger).
 *  - fs_write_file_atomic(path, p, n, mode): temp file in the same directory,
 *    write, fsync, rename over path, fsync the directory.
 *  - fs_open_subdir(dirfd, name): the directory name inside dirfd, never
 *    through a symbolic link (O_NOFOLLOW): the one step of walking a tree
 *    one level at a time. A descriptor, or -1/errno (ELOOP or ENOTDIR for a
 *    link, ENOTDIR for a file).
 *  - fs_create_synced(dirfd, name, mode): the file name in dirfd (AT_FDCWD
 *    for a path) created if missing, never through a symbolic link, and
 *    fsync'd: a marker file whose existence is what counts. The directory
 *    entry is the caller's to make durable (fsync the directory). 0 or
 *    -1/errno.
 *  - fs_close_keep_errno(fd): close(fd) on an error path without losing the
 *    errno that explains the error.
 *  - fs_dir_names(dirfd, names_r, n_r): every name in the directory dirfd
 *    but "." and "..", read completely (so the caller may then change the
 *    directory) into a malloc'd array of malloc'd strings, freed with
 *    fs_names_free(names, n). 0, or -1/errno if the directory cannot be
 *    opened or read to the end (nothing is returned then). dirfd stays open.
 */
#ifndef ESTAFETA_LIB_FSUTIL_H
#define ESTAFETA_LIB_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "lib/buf.h"

int fs_write_all(int fd, const void *p, size_t n);
ssize_t fs_read_upto(int fd, void *p, size_t cap);
int fs_fsync_dir(const char *path);
int fs_mkdir_p(const char *path, mode_t mode);
int fs_read_file(const char *path, size_t max, struct buf *buf_r);
int fs_write_file_atomic(const char *path, const void *p, size_t n, mode_t mode);
int fs_open_subdir(int dirfd, const char *name);
int fs_create_synced(int dirfd, const char *name, mode_t mode);
void fs_close_keep_errno(int fd);
int fs_dir_names(int dirfd, char ***names_r, size_t *n_r);
void fs_names_free(char **names, size_t n);

#endif
