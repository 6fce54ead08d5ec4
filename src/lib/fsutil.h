/*
 * fsutil: the few filesystem steps the durability rules are made of.
 *
 *  - fs_write_all(fd, p, n): write() until done, retrying EINTR. 0 or -1/errno.
 *  - fs_fsync_dir(path): open the directory and fsync it, so a rename or
 *    create inside it is durable (doc/queue.md). 0 or -1/errno.
 *  - fs_mkdir_p(path, mode): create path and missing parents; an existing
 *    directory is fine. 0 or -1/errno. Parents created are fsync'd in their
 *    own parents so a new mailbox survives a crash.
 *  - fs_read_file(path, max, buf_r): whole file into a buf capped at max
 *    (-1 with EFBIG when larger).
 *  - fs_write_file_atomic(path, p, n, mode): temp file in the same directory,
 *    write, fsync, rename over path, fsync the directory.
 */
#ifndef ESTAFETA_LIB_FSUTIL_H
#define ESTAFETA_LIB_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "lib/buf.h"

int fs_write_all(int fd, const void *p, size_t n);
int fs_fsync_dir(const char *path);
int fs_mkdir_p(const char *path, mode_t mode);
int fs_read_file(const char *path, size_t max, struct buf *buf_r);
int fs_write_file_atomic(const char *path, const void *p, size_t n, mode_t mode);

#endif
