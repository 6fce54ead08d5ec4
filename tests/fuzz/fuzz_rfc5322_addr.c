/*
 * Fuzz target for proto/rfc5322_addr.
 *
 * Input: the header value. Checked, abort() on violation: no crash or
 * read past the value (an exact-size copy); every address reported is a
 * slice of the value, 3..RFC5322_ADDR_MAX octets, holds an '@' and no
 * control octet (so no CR/LF can reach an envelope); a non-negative return
 * is the number of callbacks; appending ", z@z.test" (which closes nothing
 * that was open) gives the same addresses plus that one, the same bad
 * count, or -1 again.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/rfc5322_addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seen {
    const char *base;
    size_t len;
    size_t *off, *alen;
    size_t n, cap;
};

static void on_addr(const char *addr, size_t len, void *arg)
{
    struct seen *s = arg;
    size_t k;
    bool at = false;

    if (addr < s->base || len > s->len ||
        (size_t)(addr - s->base) > s->len - len)
        abort();
    if (len < 3 || len > RFC5322_ADDR_MAX)
        abort();
    for (k = 0; k < len; k++) {
        unsigned char c = (unsigned char)addr[k];
        if (c < 0x20 || c == 0x7f)
            abort();
        if (c == '@')
            at = true;
    }
    if (!at || s->n >= s->cap)
        abort();
    s->off[s->n] = (size_t)(addr - s->base);
    s->alen[s->n] = len;
    s->n++;
}

static long run(const char *in, size_t len, struct seen *s, size_t *bad_r)
{
    char *copy = malloc(len ? len : 1);
    long r;

    if (copy == NULL)
        abort();
    memcpy(copy, in, len);
    s->base = copy;
    s->len = len;
    s->n = 0;
    /* An address takes at least 3 octets and one more to separate it. */
    s->cap = len / 2 + 2;
    s->off = malloc(s->cap * sizeof *s->off);
    s->alen = malloc(s->cap * sizeof *s->alen);
    if (s->off == NULL || s->alen == NULL)
        abort();
    r = rfc5322_addr_list_ex(copy, len, on_addr, s, bad_r);
    free(copy);
    if (r >= 0 && (size_t)r != s->n)
        abort();
    if (r < -1)
        abort();
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char tail[] = ", z@z.test";
    struct seen a, b;
    size_t bad_a, bad_b, k;
    long ra, rb;
    char *ext;

    ra = run((const char *)data, size, &a, &bad_a);
    if (rfc5322_addr_list((const char *)data, size, NULL, NULL) != ra)
        abort();

    ext = malloc(size + sizeof tail);
    if (ext == NULL)
        abort();
    memcpy(ext, data, size);
    memcpy(ext + size, tail, sizeof tail - 1);
    rb = run(ext, size + sizeof tail - 1, &b, &bad_b);
    if (ra < 0) {
        if (rb != -1 || b.n != a.n)
            abort();
    } else {
        if (rb != ra + 1 || bad_b != bad_a || b.n != a.n + 1)
            abort();
        if (b.off[a.n] != size + 2 || b.alen[a.n] != 8)
            abort();
    }
    for (k = 0; k < a.n; k++)
        if (a.off[k] != b.off[k] || a.alen[k] != b.alen[k])
            abort();
    free(ext);
    free(a.off);
    free(a.alen);
    free(b.off);
    free(b.alen);
    return 0;
}
