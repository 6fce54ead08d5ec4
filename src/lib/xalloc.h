/*
 * xalloc: allocation that never returns NULL, and size arithmetic that
 * cannot wrap.
 *
 * Contract: xmalloc/xcalloc/xrealloc/xstrdup abort the process with a log
 * line when memory is exhausted (a mail server that cannot allocate a few
 * bytes cannot make progress safely; every *peer-controlled* size is bounded
 * long before this by lib/limits.h). size_add/size_mul return false on
 * overflow and leave *r unspecified; every size computed from input goes
 * through them (qmail's 32-bit length overflows are the lesson).
 */
#ifndef ESTAFETA_LIB_XALLOC_H
#define ESTAFETA_LIB_XALLOC_H

#include <stdbool.h>
#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Allocate nmemb*size with overflow check; aborts on overflow like OOM. */
void *xreallocarray(void *p, size_t nmemb, size_t size);

static inline bool size_add(size_t a, size_t b, size_t *r)
{
    return !__builtin_add_overflow(a, b, r);
}

static inline bool size_mul(size_t a, size_t b, size_t *r)
{
    return !__builtin_mul_overflow(a, b, r);
}

#endif
