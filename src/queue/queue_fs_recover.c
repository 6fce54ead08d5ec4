/*
 * queue_fs_recover: queue_recover for the fs backend (doc/queue.md
 * "Recovery", steps 0-5): the accept log, incoming/, msg/ and hold/ brought
 * back to the states the rest of queue_fs.c relies on.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/fsutil.h"
#include "lib/log.h"
#include "queue/qfile.h"
#include "queue/queue_fs_int.h"
#include "queue/queue_log.h"

static void recover_incoming(struct fsq *fq)
{
    char **names;
    size_t n;
    if (fs_dir_names(fq->infd, &names, &n) < 0) {
        log_kv(LOG_ERR, "queue.recover.error", "dir", "incoming", "error",
               strerror(errno), NULL);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        log_kv(LOG_WARN, "queue.recover.incomplete", "id", names[i], NULL);
        if (unlinkat(fq->infd, names[i], 0) < 0)
            log_kv(LOG_ERR, "queue.recover.error", "id", names[i], "error",
                   strerror(errno), NULL);
    }
    if (n > 0)
        fsync(fq->infd);
    fs_names_free(names, n);
}

/* Validates <id> in dirfd; sets a corrupt one aside. True if it did. */
static bool recover_msg(struct fsq *fq, int dirfd, const char *id,
                        bool check_body)
{
    const char *why = NULL;
    struct queue_env *env;
    int fd = openat(dirfd, id, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    int r;
    if (fd < 0) {
        if (errno == ENOENT)
            return false;
        if (errno != ELOOP) {
            log_kv(LOG_ERR, "queue.recover.error", "id", id, "error",
                   strerror(errno), NULL);
            return false;
        }
        why = "symbolic link";
        r = -2;
    } else {
        /* After a crash a body page may not have reached the disk: only
         * here is the whole body read against its CRC (not at each load). */
        r = fsq_read_valid(fd, id, check_body, &env, &why);
        fs_close_keep_errno(fd);
    }
    if (r == 0) {
        queue_env_free(env);
        return false;
    }
    if (r == -1) {
        log_kv(LOG_ERR, "queue.recover.error", "id", id, "error",
               strerror(errno), NULL);
        return false;
    }
    if (fsq_set_aside_from(fq, dirfd, id, why) < 0)
        log_kv(LOG_ERR, "queue.recover.error", "id", id, "error",
               strerror(errno), NULL);
    return true;
}

/* Cuts a torn tail off dirfd/<id>.st (beside its message). */
static void recover_torn(int dirfd, const char *id, const char *name)
{
    uint64_t valid;
    bool torn;
    int fd = openat(dirfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT)
            log_kv(LOG_ERR, "queue.recover.error", "id", id, "error",
                   strerror(errno), NULL);
        return;
    }
    if (fsq_read_st(fd, id, NULL, &valid, &torn) == 0 && torn) {
        log_kv(LOG_WARN, "queue.recover.torn_state", "id", id, NULL);
        if (ftruncate(fd, (off_t)valid) < 0 || fsync(fd) < 0)
            log_kv(LOG_ERR, "queue.recover.error", "id", id, "error",
                   strerror(errno), NULL);
    }
    close(fd);
}

/*
 * <id>.st in `here`: beside its message (torn tail cut), moved to `other`
 * where its message is (or deleted if a state file is already there), or an
 * orphan (deleted). Sets *here_changed / *other_changed.
 */
static void recover_st(int here, int other, const char *name,
                       bool *here_changed, bool *other_changed)
{
    char id[QUEUE_ID_SIZE];
    size_t len = strlen(name);
    memcpy(id, name, len - 3);
    id[len - 3] = '\0';
    if (!fsq_exists_at(here, name))
        return; /* gone with its message to corrupt/ */
    if (fsq_exists_at(here, id)) {
        recover_torn(here, id, name);
        return;
    }
    if (fsq_exists_at(other, id)) {
        if (fsq_exists_at(other, name)) {
            log_kv(LOG_WARN, "queue.recover.stray_state", "id", id, NULL);
            if (unlinkat(here, name, 0) < 0 && errno != ENOENT)
                log_kv(LOG_ERR, "queue.recover.error", "id", id, "error",
                       strerror(errno), NULL);
            *here_changed = true;
            return;
        }
        log_kv(LOG_WARN, "queue.recover.state_moved", "id", id, NULL);
        if (renameat(here, name, other, name) < 0) {
            log_kv(LOG_ERR, "queue.recover.error", "id", id, "error",
                   strerror(errno), NULL);
            return;
        }
        *here_changed = *other_changed = true;
        recover_torn(other, id, name);
        return;
    }
    log_kv(LOG_WARN, "queue.recover.orphan_state", "id", id, NULL);
    if (unlinkat(here, name, 0) < 0 && errno != ENOENT)
        log_kv(LOG_ERR, "queue.recover.error", "id", id, "error",
               strerror(errno), NULL);
    *here_changed = true;
}

static bool is_st_name(const char *name)
{
    size_t len = strlen(name);
    char id[QUEUE_ID_SIZE];
    if (len < 4 || len - 3 >= QUEUE_ID_SIZE || strcmp(name + len - 3, ".st") != 0)
        return false;
    memcpy(id, name, len - 3);
    id[len - 3] = '\0';
    return qfile_id_valid(id);
}

static void log_unknown(char **names, size_t n, const char *dir)
{
    for (size_t i = 0; i < n; i++)
        if (!qfile_id_valid(names[i]) && !is_st_name(names[i]))
            log_kv(LOG_WARN, "queue.recover.unknown", "dir", dir, "name",
                   names[i], NULL);
}

/* doc/queue.md "Recovery of the log": a live record that is not a file yet
 * becomes one (flushed by recover_log_flush for all at once). */
static int recover_log_copy(const char *id, const struct qlog_ref *ref, void *arg)
{
    struct fsq *fq = arg;
    if (fsq_exists_at(fq->holdfd, id) || fsq_exists_at(fq->badfd, id))
        return 0;
    if (fsq_log_copy(fq, id, ref, fq->msgfd, false) == 0)
        return 0;
    if (errno == EBADMSG && ref->last) {
        /* The append a crash cut short (a kill in the middle of pwritev):
         * its client had no 250, like a file left in incoming/. */
        log_kv(LOG_WARN, "queue.recover.incomplete", "dir", "log", "id", id, NULL);
        return 0;
    }
    if (errno == EBADMSG) {
        /* Torn by the crash (never acknowledged: its batch's fdatasync had
         * not returned), with whole records after it: kept for the admin,
         * never delivered. */
        log_kv(LOG_WARN, "queue.recover.torn_record", "id", id, NULL);
        if (fsq_log_copy(fq, id, ref, fq->badfd, false) == 0)
            return 0;
    }
    log_kv(LOG_ERR, "queue.recover.error", "dir", "log", "id", id, "error",
           strerror(errno), NULL);
    return -1;
}

static int recover_log_flush(void *arg)
{
    struct fsq *fq = arg;
    return syncfs(fq->msgfd);
}

/* doc/queue.md "Recovery", steps 0-5. */
int fsq_recover(struct queue *q)
{
    struct fsq *fq = FSQ(q);
    char **mnames, **hnames;
    size_t mn, hn;
    bool mchanged = false, hchanged = false;

    /* After a clean stop everything was flushed: no body page can be
     * missing, and bodies are not read (doc/queue.md "Recovery"). The
     * marker goes first, durably, so a crash from now on is seen. */
    bool clean = fsq_exists_at(fq->dirfd, FSQ_CLEAN_MARKER);
    if (clean && (unlinkat(fq->dirfd, FSQ_CLEAN_MARKER, 0) < 0 ||
                  fsync(fq->dirfd) < 0))
        return -1;
    qlog_set_owner(fq->log);
    if (qlog_recover(fq->log, recover_log_copy, recover_log_flush, fq) < 0)
        return -1;
    recover_incoming(fq);
    if (fs_dir_names(fq->msgfd, &mnames, &mn) < 0)
        return -1;
    if (fs_dir_names(fq->holdfd, &hnames, &hn) < 0) {
        int saved = errno;
        fs_names_free(mnames, mn);
        errno = saved;
        return -1;
    }
    /* Messages first, so a set-aside message takes its .st along before the
     * state files are looked at. */
    for (size_t i = 0; i < mn; i++)
        if (qfile_id_valid(mnames[i]) && recover_msg(fq, fq->msgfd, mnames[i], !clean))
            mchanged = true;
    for (size_t i = 0; i < hn; i++)
        if (qfile_id_valid(hnames[i]) && recover_msg(fq, fq->holdfd, hnames[i], !clean))
            hchanged = true;
    /* In both directories (a rename not atomic on this filesystem): the
     * held copy stays; both are the same committed file. */
    for (size_t i = 0; i < mn; i++) {
        if (!qfile_id_valid(mnames[i]) || !fsq_exists_at(fq->holdfd, mnames[i]) ||
            !fsq_exists_at(fq->msgfd, mnames[i]))
            continue;
        log_kv(LOG_WARN, "queue.recover.duplicate", "id", mnames[i], NULL);
        if (unlinkat(fq->msgfd, mnames[i], 0) < 0)
            log_kv(LOG_ERR, "queue.recover.error", "id", mnames[i], "error",
                   strerror(errno), NULL);
        mchanged = true;
    }
    for (size_t i = 0; i < mn; i++)
        if (is_st_name(mnames[i]))
            recover_st(fq->msgfd, fq->holdfd, mnames[i], &mchanged, &hchanged);
    for (size_t i = 0; i < hn; i++)
        if (is_st_name(hnames[i]))
            recover_st(fq->holdfd, fq->msgfd, hnames[i], &hchanged, &mchanged);
    log_unknown(mnames, mn, "msg");
    log_unknown(hnames, hn, "hold");
    fs_names_free(mnames, mn);
    fs_names_free(hnames, hn);
    if (mchanged && fsync(fq->msgfd) < 0)
        return -1;
    if (hchanged && fsync(fq->holdfd) < 0)
        return -1;
    return 0;
}
