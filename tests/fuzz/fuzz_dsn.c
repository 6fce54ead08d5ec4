/*
 * Fuzz target for proto/dsn: arbitrary recipient fields and an arbitrary
 * original; every report line must end in CRLF within DSN_LINE_MAX, and the
 * copy filter must give the same result fed whole or split.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "proto/dsn.h"
static char *take(const uint8_t **p, size_t *n) {
    /* NUL-separated string from the input */
    const uint8_t *z = memchr(*p, 0, *n);
    size_t l = z ? (size_t)(z - *p) : *n;
    char *s = malloc(l + 1); memcpy(s, *p, l); s[l] = 0;
    *p += z ? l + 1 : l; *n -= z ? l + 1 : l;
    return s;
}
static void check_lines(const char *p, size_t n) {
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r') { if (i + 1 >= n || p[i+1] != '\n') abort(); i++; col = 0; continue; }
        if (p[i] == '\n') abort();
        if (++col > DSN_LINE_MAX) abort();
    }
    if (n < 2 || p[n-2] != '\r' || p[n-1] != '\n') abort();
}
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4) return 0;
    uint8_t f = data[0], g = data[1], split = data[2]; uint8_t mx = data[3];
    const uint8_t *p = data + 4; size_t n = size - 4;
    char *s[8];
    for (int i = 0; i < 8; i++) s[i] = take(&p, &n);
    struct dsn_rcpt rc[2] = {
        {.address = s[0], .orcpt = s[1], .action = (enum dsn_action)(f % 6), .status = (f & 8) ? s[2] : NULL,
         .remote_mta = s[3], .diagnostic = s[4], .last_attempt = (int64_t)g * 1000000, .retry_until = (int64_t)g << 30},
        {.address = s[5], .action = (enum dsn_action)(g % 5), .diagnostic = s[6]},
    };
    char b[DSN_BOUNDARY_SIZE]; unsigned char rnd[DSN_RANDOM_BYTES] = {0}; rnd[0] = f; dsn_boundary(rnd, b);
    struct dsn_report r = {.hostname = s[7], .queue_id = s[2], .sender = s[5], .envid = s[1], .client_helo = s[3],
        .client_addr = s[6], .arrival = (int64_t)f << 28, .now = 5, .smtputf8 = f & 16, .eightbit = f & 32,
        .ret = (enum dsn_return)(g % 5), .header_cut = g & 64, .boundary = b, .message_id = s[4], .rcpts = rc, .nrcpts = 2};
    struct buf out; buf_init(&out, 1 << 24);
    if (dsn_write_head(&r, &out) != 0) abort();
    check_lines(out.data, out.len);
    /* the copy: whole vs split */
    bool hdr = f & 64; uint64_t max = mx * 3;
    struct dsn_copy c1, c2; dsn_copy_init(&c1, hdr, max, b); dsn_copy_init(&c2, hdr, max, b);
    char *o1 = malloc(n + 2), *o2 = malloc(n + 2); size_t l1, l2a, l2b;
    dsn_copy_feed(&c1, (const char *)p, n, o1, &l1);
    size_t cut = n ? split % (n + 1) : 0;
    dsn_copy_feed(&c2, (const char *)p, cut, o2, &l2a);
    dsn_copy_feed(&c2, (const char *)p + cut, n - cut, o2 + l2a, &l2b);
    if (l1 != l2a + l2b || memcmp(o1, o2, l1) != 0 || c1.cut != c2.cut || c1.over != c2.over ||
        c1.boundary_seen != c2.boundary_seen || c1.eightbit != c2.eightbit || c1.done != c2.done) abort();
    if (l1 > (hdr || true ? max : n)) abort();
    buf_append(&out, o1, l1);
    if (dsn_write_end(&r, &c1, &out) != 0) abort();
    if (out.data[out.len-1] != '\n' || out.data[out.len-2] != '\r') abort();
    buf_free(&out); free(o1); free(o2);
    for (int i = 0; i < 8; i++) free(s[i]);
    return 0;
}
