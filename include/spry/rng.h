/*
 * rng.h -- a counter-based RNG (Philox-4x32-10, Salmon et al., SC'11).
 *
 * The value at (key, counter) depends on nothing else, so any element of any random tensor can
 * be regenerated independently: results are identical for every thread count, and a run resumed
 * from a checkpoint draws the same numbers (the state is just the key and a counter).
 */
#ifndef SPRY_RNG_H
#define SPRY_RNG_H

#include <stdint.h>

// Four 32-bit random words for (key, counter). Pure function.
void spry_philox(uint64_t key, uint64_t counter_hi, uint64_t counter_lo, uint32_t out[4]);

// Uniform float in [0, 1) for element i of stream (key, stream). Pure function.
float spry_rng_uniform(uint64_t key, uint64_t stream, uint64_t i);
// Standard normal (Box-Muller) for element i of stream (key, stream). Pure function.
float spry_rng_normal(uint64_t key, uint64_t stream, uint64_t i);

// Fill helpers: x[i] = f(key, stream, i) for i in [0, n).
void spry_rng_fill_uniform(float *x, int64_t n, uint64_t key, uint64_t stream, float lo, float hi);
void spry_rng_fill_normal(float *x, int64_t n, uint64_t key, uint64_t stream, float mean, float std);

#endif
