/*
 * check.h -- a tiny test framework (Redis testhelp.h style): CHECK, CHECK_NEAR, CHECK_NMSE.
 * Each failure prints file:line and the values; check_exit() returns non-zero if any failed, so
 * `return check_exit();` ends every test's main.
 */
#ifndef SPRY_CHECK_H
#define SPRY_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int g_check_fail, g_check_pass;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            g_check_pass++;                                                                        \
        } else {                                                                                   \
            g_check_fail++;                                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (cond) {                                                                                \
            g_check_pass++;                                                                        \
        } else {                                                                                   \
            g_check_fail++;                                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double check_a_ = (double)(a), check_b_ = (double)(b);                                     \
        CHECK_MSG(fabs(check_a_ - check_b_) <= (tol), "%s=%.9g %s=%.9g tol=%g", #a, check_a_, #b,  \
                  check_b_, (double)(tol));                                                        \
    } while (0)

// Normalized mean squared error sum((a-b)^2) / sum(b^2) (ggml's test-backend-ops measure).
static inline double check_nmse(const float *a, const double *b, long n) {
    double num = 0, den = 0;
    for (long i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += b[i] * b[i];
    }
    return den > 0 ? num / den : num;
}

// malloc(n) (at least 1 byte) for test data; a test that runs out of memory stops here.
static inline void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

static inline int check_exit(void) {
    printf("%d passed, %d failed\n", g_check_pass, g_check_fail);
    return g_check_fail ? 1 : 0;
}

#endif
