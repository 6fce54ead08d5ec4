/*
 * fuzz_qfile: the queue file decoders (src/queue/qfile.c) on arbitrary
 * bytes. Never a crash or an over-read; and the invariants of the format:
 *  - the envelope encoding is canonical: decode(x) ok => encode(decode(x))
 *    is x byte for byte, and decoding that again gives an equal envelope;
 *  - a whole file that parses has an envelope that decodes on its own;
 *  - a state record that decodes re-encodes to the same bytes, and every
 *    strict prefix of it is "need more", never a record;
 *  - a footer that decodes re-encodes to the same 48 bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "queue/qfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_env(const uint8_t *data, size_t size)
{
    struct queue_env *e = NULL, *e2 = NULL;
    if (qfile_env_decode(data, size, &e) < 0) {
        if (e != NULL)
            abort();
        return;
    }
    struct buf b;
    buf_init(&b, QFILE_ENV_MAX);
    if (qfile_env_encode(e, &b) < 0)
        abort();
    if (b.len != size || memcmp(b.data, data, size) != 0)
        abort();
    if (qfile_env_decode(b.data, b.len, &e2) < 0 || !qfile_env_equal(e, e2))
        abort();
    struct queue_env *d = qfile_env_dup(e);
    if (!qfile_env_equal(e, d))
        abort();
    queue_env_free(d);
    queue_env_free(e2);
    queue_env_free(e);
    buf_free(&b);
}

static void check_file(const uint8_t *data, size_t size)
{
    struct queue_env *e = NULL, *e2 = NULL;
    struct qfile_footer f;
    if (qfile_parse(data, size, &e, &f) < 0)
        return;
    if (f.env_off + f.env_len + QFILE_FOOTER_SIZE != size ||
        e->body_size != f.body_len)
        abort();
    if (qfile_env_decode(data + f.env_off, (size_t)f.env_len, &e2) < 0)
        abort();
    e2->body_size = f.body_len;
    if (!qfile_env_equal(e, e2))
        abort();
    queue_env_free(e2);
    queue_env_free(e);
}

static void check_st(const uint8_t *data, size_t size)
{
    size_t pos = 0, used;
    struct qfile_st_rec r;
    struct buf b;
    buf_init(&b, QFILE_ST_REC_MAX);
    for (;;) {
        int d = qfile_st_decode(data + pos, size - pos, &r, &used);
        if (d != 1)
            break;
        if (used < QFILE_ST_REC_MIN || used > size - pos)
            abort();
        /* Trickle: every strict prefix is "need more". */
        for (size_t k = 0; k < used; k++) {
            struct qfile_st_rec r2;
            size_t u2;
            if (qfile_st_decode(data + pos, k, &r2, &u2) != 0)
                abort();
        }
        buf_reset(&b);
        if (qfile_st_encode(r.index, r.state, r.status, r.status_len, &b) < 0 ||
            b.len != used || memcmp(b.data, data + pos, used) != 0)
            abort();
        pos += used;
    }
    buf_free(&b);
}

static void check_footer(const uint8_t *data, size_t size)
{
    struct qfile_footer f;
    unsigned char out[QFILE_FOOTER_SIZE];
    if (size < QFILE_FOOTER_SIZE)
        return;
    /* Against the input's own size and against the size it claims. */
    uint64_t sizes[2] = {size, 0};
    for (int i = 0; i < 2; i++) {
        if (qfile_footer_decode(data, sizes[i], &f) < 0) {
            if (i == 0) {
                /* learn the claimed size from the raw fields */
                uint64_t off = 0, len = 0;
                for (int j = 0; j < 8; j++) {
                    off = off << 8 | data[24 + j];
                    len = len << 8 | data[32 + j];
                }
                sizes[1] = off + len + QFILE_FOOTER_SIZE;
            }
            continue;
        }
        qfile_footer_encode(&f, out);
        if (memcmp(out, data, QFILE_FOOTER_SIZE) != 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Every decoder on every input, and once more one byte in, so a
     * mutation that inserts a byte in front is not wasted. */
    check_env(data, size);
    check_file(data, size);
    check_st(data, size);
    check_footer(data, size);
    if (size > 0) {
        check_env(data + 1, size - 1);
        check_st(data + 1, size - 1);
    }
    return 0;
}
