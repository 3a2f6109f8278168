/*
 * bench_util.h -- the timing helpers every benchmark shares: a monotonic clock (core spry_now)
 * and the median of repeated measurements.
 */
#ifndef SPRY_BENCH_UTIL_H
#define SPRY_BENCH_UTIL_H

#include <stdlib.h>

#include "spry/fs.h"

static inline double now(void) { return spry_now(); }

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The median of v[0..n) (sorts v in place; the mean of the middle two for even n).
static inline double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#endif
