/*
 * buf: a growable byte buffer with a hard maximum fixed at creation
 * (curl's dynbuf, Dovecot's buffer_create_dynamic_max).
 *
 * Contract:
 *  - buf_init(b, max): empty buffer that will never hold more than max bytes.
 *  - buf_append/buf_appendf/buf_putc return 0, or -1 when the result would
 *    exceed max; on -1 the buffer is unchanged. They never return -1 for
 *    memory (allocation failure aborts, see xalloc.h).
 *  - data is always followed by a NUL byte that is not counted in len, so a
 *    buffer holding text can be used as a C string (it may hold NULs too).
 *  - buf_consume(b, n) drops n <= len bytes from the front.
 *  - buf_free releases memory; the buffer may be reused after buf_init.
 */
#ifndef ESTAFETA_LIB_BUF_H
#define ESTAFETA_LIB_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
    char *data;      /* NULL until the first append */
    size_t len;      /* bytes in use */
    size_t alloc;    /* bytes allocated (>= len + 1 when data != NULL) */
    size_t max;      /* hard cap on len */
};

void buf_init(struct buf *b, size_t max);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_appends(struct buf *b, const char *s);
int buf_putc(struct buf *b, char c);
int buf_appendf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int buf_vappendf(struct buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
void buf_consume(struct buf *b, size_t n);
/* Returns the text (never NULL: "" for an empty buffer). */
const char *buf_cstr(const struct buf *b);

#endif
