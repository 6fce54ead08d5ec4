/*
 * qfile: the queue file format (doc/queue.md), as pure functions: no I/O,
 * no globals. queue_fs.c writes and reads files with these; the fuzz target
 * feeds them arbitrary bytes.
 *
 * A queue file is: QFILE_HEADER, the body, the envelope records, the footer.
 * Nothing is found by scanning for a delimiter: every length is explicit and
 * checked, so no byte a client sends can change the file's meaning.
 *
 * Contract:
 *  - qfile_env_encode appends the canonical envelope encoding to out.
 *    0, or -1 with errno EINVAL (a field beyond QFILE_STR_MAX, too many
 *    recipients, a bad id or state) or EFBIG (out's cap or QFILE_ENV_MAX).
 *  - qfile_env_decode parses exactly len bytes; 0 with a new envelope in
 *    *env_r (free with queue_env_free), or -1 (EBADMSG) for anything that is
 *    not a canonical encoding. Never reads outside p[0..len), never
 *    allocates more than a small multiple of len.
 *    Canonical: decode(x) succeeding implies encode(decode(x)) == x.
 *  - qfile_footer_make: a version 2 footer, with the CRC-32 of the body the
 *    caller computed while writing it (qfile_crc32 or zlib's crc32: the same
 *    function).
 *  - qfile_footer_encode/decode: the fixed 48-byte footer (version 1 or 2,
 *    as f->version says); decode checks its magic and CRC and that it is
 *    consistent with the file's size: -1 if not. Checking the body against
 *    body_crc is the reader's business (it means reading the body).
 *  - qfile_parse: a whole file in memory (tests, fuzzing): header, footer,
 *    envelope CRC, body CRC (version 2), decode. 0 or -1.
 *  - qfile_st_encode/decode: the per-recipient state records of <id>.st.
 *    decode returns 1 (a record; its status points into p, not
 *    NUL-terminated), 0 (p holds only the start of a record: need more, or
 *    a torn tail at end of file), -1 (not a valid record).
 */
#ifndef ESTAFETA_QUEUE_QFILE_H
#define ESTAFETA_QUEUE_QFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "queue/queue.h"

#define QFILE_HEADER "ESTAFETA-QUEUE1\n"
#define QFILE_HEADER_SIZE 16u
#define QFILE_FOOTER_SIZE 48u
#define QFILE_VERSION 1u
/* Caps on what a queue file may hold; generous next to lib/limits.h (a
 * path is 256, an ORCPT 500, recipients at most 100000) so that any message
 * smtpd accepts fits, and small enough that a damaged file cannot make the
 * reader allocate without bound. */
#define QFILE_STR_MAX 65535u
#define QFILE_STATUS_MAX 4096u
#define QFILE_RCPTS_MAX 200000u
#define QFILE_ENV_MAX (64u * 1024u * 1024u)
#define QFILE_ST_REC_MIN 13u
#define QFILE_ST_REC_MAX (QFILE_ST_REC_MIN + QFILE_STATUS_MAX)

struct qfile_footer {
    uint64_t body_len;
    uint64_t env_off;    /* QFILE_HEADER_SIZE + body_len */
    uint64_t env_len;
    uint32_t env_crc;
    unsigned version;    /* 1: no body CRC (older files); 2: body_crc */
    uint32_t body_crc;   /* version 2: CRC-32 of the body (as zlib's) */
};

struct qfile_st_rec {
    uint32_t index;
    enum queue_rcpt_state state;
    const char *status;  /* points into the decoded bytes */
    size_t status_len;
};

uint32_t qfile_crc32(uint32_t crc, const void *p, size_t n);
/* 1..23 chars of [0-9A-Za-z]. */
bool qfile_id_valid(const char *id);

int qfile_env_encode(const struct queue_env *env, struct buf *out);
int qfile_env_decode(const void *p, size_t len, struct queue_env **env_r);
/* Deep copy / field-by-field comparison (body_size and attempts included). */
struct queue_env *qfile_env_dup(const struct queue_env *env);
bool qfile_env_equal(const struct queue_env *a, const struct queue_env *b);

void qfile_footer_make(uint64_t body_len, uint32_t body_crc, const void *env,
                       size_t env_len, struct qfile_footer *f_r);
void qfile_footer_encode(const struct qfile_footer *f,
                         unsigned char out[QFILE_FOOTER_SIZE]);
int qfile_footer_decode(const unsigned char p[QFILE_FOOTER_SIZE],
                        uint64_t file_size, struct qfile_footer *f_r);

int qfile_parse(const void *file, size_t len, struct queue_env **env_r,
                struct qfile_footer *f_r);

int qfile_st_encode(size_t index, enum queue_rcpt_state state,
                    const char *status, size_t status_len, struct buf *out);
int qfile_st_decode(const void *p, size_t len, struct qfile_st_rec *rec_r,
                    size_t *used_r);

#endif
