/*
 * fastmath.h -- vectorizable exp/tanh for the kernels (internal).
 *
 * exp: x = n*ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial (Taylor coefficients, max
 * relative error ~2e-7 on the reduced range), 2^n assembled in the exponent bits. Inputs below
 * -87.3 flush to 0 (softmax masks rely on this), above 88.7 saturate. Written branch-free so the
 * compiler vectorizes loops that call it.
 */
#ifndef SPRY_FASTMATH_H
#define SPRY_FASTMATH_H

#include <stdint.h>
#include <string.h>

static inline float spry_expf(float x) {
    x        = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
    // round to nearest by adding and subtracting 1.5 * 2^23 (no SSE4.1 round instruction needed)
    float n  = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r  = x - n * 0.693145751953125f;   // ln2 split in two parts for accuracy
    r        = r - n * 1.428606765330187e-06f;
    float p  = 1.0f / 720.0f;
    p        = p * r + 1.0f / 120.0f;
    p        = p * r + 1.0f / 24.0f;
    p        = p * r + 1.0f / 6.0f;
    p        = p * r + 0.5f;
    p        = p * r + 1.0f;
    p        = p * r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float   s;
    memcpy(&s, &e, sizeof s);
    return p * s;
}

// tanh(u) = 1 - 2 / (e^{2u} + 1), exact at the saturated ends.
static inline float spry_tanhf(float u) { return 1.0f - 2.0f / (spry_expf(2.0f * u) + 1.0f); }


#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
// spry_expf on 16 lanes (inputs clamped to [-87.3, 88.7]; 2^n applied by vscalefps). Callers
// must themselves be compiled for AVX-512F (a target attribute): this inline takes theirs.
__attribute__((target("avx512f"), always_inline)) static inline __m512 spry_exp16(__m512 x) {
    x        = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r        = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p        = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p        = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p        = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p        = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p        = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p        = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}
#endif

#endif
