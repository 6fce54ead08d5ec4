/*
 * A minimal unit test harness: one binary per tests/unit/test_*.c.
 *
 *   TEST(name) { CHECK(x == 1); CHECK_EQ_STR(a, b); CHECK_EQ_INT(a, b); }
 *   int main(void) { RUN(name); return harness_done("test_foo"); }
 *
 * A failed CHECK prints file:line and the expression and marks the current
 * test failed (it keeps going). harness_done prints "name: N passed, M failed"
 * and returns the exit status.
 */
#ifndef ESTAFETA_TESTS_HARNESS_H
#define ESTAFETA_TESTS_HARNESS_H

#include <stdio.h>
#include <string.h>

static int harness_pass, harness_fail, harness_cur_failed;

#define TEST(name) static void name(void)

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,         \
                    __LINE__, #cond);                                      \
            harness_cur_failed = 1;                                        \
        }                                                                  \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                 \
    do {                                                                   \
        long long va_ = (long long)(a), vb_ = (long long)(b);              \
        if (va_ != vb_) {                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", \
                    __FILE__, __LINE__, #a, #b, va_, vb_);                 \
            harness_cur_failed = 1;                                        \
        }                                                                  \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                 \
    do {                                                                   \
        const char *sa_ = (a), *sb_ = (b);                                 \
        if (sa_ == NULL || sb_ == NULL || strcmp(sa_, sb_) != 0) {         \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", \
                    __FILE__, __LINE__, #a, #b, sa_ ? sa_ : "(null)",      \
                    sb_ ? sb_ : "(null)");                                 \
            harness_cur_failed = 1;                                        \
        }                                                                  \
    } while (0)

#define RUN(name)                                                          \
    do {                                                                   \
        harness_cur_failed = 0;                                            \
        name();                                                            \
        if (harness_cur_failed) {                                          \
            harness_fail++;                                                \
            fprintf(stderr, "FAIL %s\n", #name);                           \
        } else {                                                           \
            harness_pass++;                                                \
        }                                                                  \
    } while (0)

static inline int harness_done(const char *suite)
{
    printf("%s: %d passed, %d failed\n", suite, harness_pass, harness_fail);
    return harness_fail ? 1 : 0;
}

#endif
