/*
 * rng.c -- Philox-4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as
 * 1, 2, 3", SC'11) and the uniform/normal maps on top of it (see rng.h).
 */
#include "spry/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
    uint64_t p = (uint64_t)a * b;
    *hi        = (uint32_t)(p >> 32);
    *lo        = (uint32_t)p;
}

void spry_philox(uint64_t key, uint64_t counter_hi, uint64_t counter_lo, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)counter_lo, c1 = (uint32_t)(counter_lo >> 32);
    uint32_t c2 = (uint32_t)counter_hi, c3 = (uint32_t)(counter_hi >> 32);
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo(PHILOX_M0, c0, &hi0, &lo0);
        mulhilo(PHILOX_M1, c2, &hi1, &lo1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

// 24 random bits -> [0, 1)
static inline float u32_to_unit(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

float spry_rng_uniform(uint64_t key, uint64_t stream, uint64_t i) {
    uint32_t r[4];
    spry_philox(key, stream, i, r);
    return u32_to_unit(r[0]);
}

float spry_rng_normal(uint64_t key, uint64_t stream, uint64_t i) {
    uint32_t r[4];
    spry_philox(key, stream, i, r);
    double u1 = ((double)r[0] + 1.0) / 4294967297.0; // (0, 1]
    double u2 = (double)r[1] / 4294967296.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void spry_rng_fill_uniform(float *x, int64_t n, uint64_t key, uint64_t stream, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * spry_rng_uniform(key, stream, (uint64_t)i);
}

void spry_rng_fill_normal(float *x, int64_t n, uint64_t key, uint64_t stream, float mean, float std) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) x[i] = mean + std * spry_rng_normal(key, stream, (uint64_t)i);
}
