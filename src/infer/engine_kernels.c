/*
 * engine_kernels.c -- LayerNorm, linear and GELU rows for the serving engine (see engine_kernels.h).
 *
 * The linear kernels work on weights packed in panels of 32 output columns (K-major; f32, f16
 * widened on load, or bf16 in k pairs for vdpbf16ps): each k feeds a 6-row x 32-column tile of
 * accumulators from two vector loads and one broadcast per row, so every output element is a
 * single chain over k in order, whatever M is. Q8_0/Q4_0 weights go through spry_gemv (quant.h),
 * whose per-row arithmetic does not depend on M either.
 */
#include "infer/engine_kernels.h"

#include <immintrin.h>
#include <math.h>

#include "ops/fastmath.h"
#include "spry/cpu.h"

static void layernorm_scalar(const float *x, const float *w, const float *b, float *y, int64_t C, float eps) {
    double s = 0, ss = 0;
    for (int64_t i = 0; i < C; i++) s += x[i];
    double mean = s / (double)C;
    for (int64_t i = 0; i < C; i++) ss += ((double)x[i] - mean) * ((double)x[i] - mean);
    float rstd = (float)(1.0 / sqrt(ss / (double)C + (double)eps)), mu = (float)mean;
    for (int64_t i = 0; i < C; i++) y[i] = (x[i] - mu) * rstd * w[i] + b[i];
}

// The same statistics in double, 8 lanes wide (two chains of 8 per 16 inputs, lanes added at the
// end), and the output in f32 16 lanes wide: a decode step runs 25 LayerNorms of one row serially.
__attribute__((target("avx512f"))) static void layernorm_avx512(const float *x, const float *w, const float *b,
                                                                float *y, int64_t C, float eps) {
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd(), lo, hi;
#define WIDEN16(i) /* x[i .. i + 15] (zero past C) as doubles lo, hi */                                   \
    do {                                                                                                   \
        __m512 v_ = _mm512_maskz_loadu_ps(spry_eng_tail16(C, i), x + (i));                                          \
        lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v_));                                                  \
        hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v_), 1)));           \
    } while (0)
    for (int64_t i = 0; i < C; i += 16) {
        WIDEN16(i);
        a0 = _mm512_add_pd(a0, lo), a1 = _mm512_add_pd(a1, hi);
    }
    const double  mean = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1)) / (double)C;
    const __m512d mv   = _mm512_set1_pd(mean);
    a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    for (int64_t i = 0; i < C; i += 16) {
        WIDEN16(i);
        __mmask16 m  = spry_eng_tail16(C, i);
        __m512d   d0 = _mm512_maskz_sub_pd((__mmask8)m, lo, mv), d1 = _mm512_maskz_sub_pd((__mmask8)(m >> 8), hi, mv);
        a0 = _mm512_fmadd_pd(d0, d0, a0), a1 = _mm512_fmadd_pd(d1, d1, a1);
    }
#undef WIDEN16
    const double ss   = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
    const __m512 rstd = _mm512_set1_ps((float)(1.0 / sqrt(ss / (double)C + (double)eps))), mu = _mm512_set1_ps((float)mean);
    for (int64_t i = 0; i < C; i += 16) {
        __mmask16 m = spry_eng_tail16(C, i);
        __m512    t = _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mu), rstd),
                                    _mm512_maskz_loadu_ps(m, w + i));
        _mm512_mask_storeu_ps(y + i, m, _mm512_add_ps(t, _mm512_maskz_loadu_ps(m, b + i)));
    }
}

void spry_eng_layernorm(const float *x, const float *w, const float *b, float *y, int64_t C, float eps) {
    if (spry_cpu_detect().avx512f) layernorm_avx512(x, w, b, y, C, eps);
    else layernorm_scalar(x, w, b, y, C, eps);
}

static inline float gelu1(float v) {
    return 0.5f * v * (1.0f + spry_tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
}
// The epilogue blocks (nr, nc), ldy floats a row: compiled for AVX-512 (the loops vectorized 16
// wide) and for the baseline, the copy chosen at load time. Static, called through the wrappers
// below, as in dtype.c (clang 14 resolves target_clones only within the file).
__attribute__((target_clones("avx512f", "default"))) static void gelu_block(float *y, int64_t ldy, int64_t nr,
                                                                            int64_t nc) {
    for (int64_t r = 0; r < nr; r++)
        for (int64_t j = 0; j < nc; j++) y[r * ldy + j] = gelu1(y[r * ldy + j]);
}

__attribute__((target_clones("avx512f", "default"))) static void add_block(float *restrict res,
                                                                           const float *restrict y, int64_t ldy,
                                                                           int64_t nr, int64_t nc) {
    for (int64_t r = 0; r < nr; r++)
        for (int64_t j = 0; j < nc; j++) res[r * ldy + j] += y[r * ldy + j];
}

void spry_eng_gelu_block(float *y, int64_t ldy, int64_t nr, int64_t nc) { gelu_block(y, ldy, nr, nc); }
void spry_eng_add_block(float *res, const float *y, int64_t ldy, int64_t nr, int64_t nc) {
    add_block(res, y, ldy, nr, nc);
}

#define AVX512 __attribute__((target("avx512f")))

#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))

// Rounds to bf16, nearest even (as vcvtne2ps2bf16; the inputs are finite). Scalar: it is O(M K)
// next to the O(M K N) products, and clang 14 cannot lower the vector conversion here.
static void round_rows_bf16(const float *X, int64_t n, uint16_t *xb) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        __builtin_memcpy(&u, X + i, 4);
        xb[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
}

/* ---- packed f32: outer-product tiles ----------------------------------------------------------
 * For each k, two 16-wide loads of the panel (32 columns) and one broadcast per row feed 2 FMAs
 * per row: a 6 x 32 tile keeps 12 accumulators, and each accumulator lane is one output element
 * summed over k in order. */

int64_t spry_eng_packed_size(int64_t N, int64_t K) { return (N + 31) / 32 * 32 * K; }

void spry_eng_pack_f32(const float *W, int64_t N, int64_t K, float *Wp) {
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < (N + 31) / 32; p++)
        for (int64_t k = 0; k < K; k++)
            for (int64_t c = 0; c < 32; c++) {
                int64_t j                 = p * 32 + c;
                Wp[(p * K + k) * 32 + c] = j < N ? W[j * K + k] : 0.0f;
            }
}

AVX512 __attribute__((always_inline)) static inline void ptile(const float *X, int64_t K, const float *Wp,
                                                               const float *bias, int64_t N, float *Y, int64_t r0,
                                                               int RT, int64_t j0, __mmask16 m0, __mmask16 m1) {
    __m512 a0[6], a1[6];
    for (int r = 0; r < RT; r++) a0[r] = _mm512_setzero_ps(), a1[r] = _mm512_setzero_ps();
    const float *x = X + r0 * K;
    for (int64_t k = 0; k < K; k++) {
        __m512 w0 = _mm512_loadu_ps(Wp + k * 32), w1 = _mm512_loadu_ps(Wp + k * 32 + 16);
        for (int r = 0; r < RT; r++) {
            __m512 xb = _mm512_set1_ps(x[r * K + k]);
            a0[r]     = _mm512_fmadd_ps(xb, w0, a0[r]);
            a1[r]     = _mm512_fmadd_ps(xb, w1, a1[r]);
        }
    }
    __m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias + j0) : _mm512_setzero_ps();
    __m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + j0 + 16) : _mm512_setzero_ps();
    for (int r = 0; r < RT; r++) {
        _mm512_mask_storeu_ps(Y + (r0 + r) * N + j0, m0, _mm512_add_ps(a0[r], b0));
        _mm512_mask_storeu_ps(Y + (r0 + r) * N + j0 + 16, m1, _mm512_add_ps(a1[r], b1));
    }
}

AVX512 static void panel_avx512(const float *X, int64_t M, int64_t K, const float *Wp, const float *bias, int64_t N,
                                float *Y, int64_t p) {
    int64_t   j0 = p * 32, nc = N - j0 < 32 ? N - j0 : 32;
    __mmask16 m0 = nc >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nc) - 1);
    __mmask16 m1 = nc >= 32 ? (__mmask16)0xffff : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1) : 0;
    const float *wp = Wp + p * K * 32;
    for (int64_t r0 = 0; r0 < M; r0 += 6) {
        switch (M - r0 < 6 ? (int)(M - r0) : 6) {
        case 6: ptile(X, K, wp, bias, N, Y, r0, 6, j0, m0, m1); break;
        case 5: ptile(X, K, wp, bias, N, Y, r0, 5, j0, m0, m1); break;
        case 4: ptile(X, K, wp, bias, N, Y, r0, 4, j0, m0, m1); break;
        case 3: ptile(X, K, wp, bias, N, Y, r0, 3, j0, m0, m1); break;
        case 2: ptile(X, K, wp, bias, N, Y, r0, 2, j0, m0, m1); break;
        default: ptile(X, K, wp, bias, N, Y, r0, 1, j0, m0, m1); break;
        }
    }
}

static void panel_scalar(const float *X, int64_t M, int64_t K, const float *Wp, const float *bias, int64_t N,
                         float *Y, int64_t p) {
    const float *wp = Wp + p * K * 32;
    for (int64_t r = 0; r < M; r++)
        for (int64_t c = 0; c < 32 && p * 32 + c < N; c++) {
            float s = 0;
            for (int64_t k = 0; k < K; k++) s += X[r * K + k] * wp[k * 32 + c];
            Y[r * N + p * 32 + c] = s + (bias ? bias[p * 32 + c] : 0.0f);
        }
}

// Panel p's columns of Y (all M rows) to the epilogue, if any.
static inline void panel_epi(spry_tile_fn epi, void *user, float *Y, int64_t M, int64_t N, int64_t p) {
    if (epi) epi(user, Y, N, 0, M, p * 32, N - p * 32 < 32 ? N - p * 32 : 32);
}

void spry_eng_linear_packed(const float *X, int64_t M, int64_t K, const float *Wp, const float *bias, int64_t N,
                            float *Y, spry_tile_fn epi, void *user) {
    bool avx = spry_cpu_detect().avx512f;
#pragma omp parallel for schedule(guided) // as spry_qgemm: a slowed core does not hold the join
    for (int64_t p = 0; p < (N + 31) / 32; p++) {
        if (avx) panel_avx512(X, M, K, Wp, bias, N, Y, p);
        else panel_scalar(X, M, K, Wp, bias, N, Y, p);
        panel_epi(epi, user, Y, M, N, p);
    }
}

/* ---- packed bf16: outer-product tiles with vdpbf16ps ---------------------------------------- */

int64_t spry_eng_packed_bf16_size(int64_t N, int64_t K) { return (N + 31) / 32 * 32 * ((K + 1) / 2 * 2); }

void spry_eng_pack_bf16(const uint16_t *W, int64_t N, int64_t K, uint16_t *Wb) {
    int64_t K2 = (K + 1) / 2;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < (N + 31) / 32; p++)
        for (int64_t kk = 0; kk < K2; kk++)
            for (int64_t c = 0; c < 32; c++)
                for (int64_t h = 0; h < 2; h++) {
                    int64_t j = p * 32 + c, k = 2 * kk + h;
                    Wb[((p * K2 + kk) * 32 + c) * 2 + h] = j < N && k < K ? W[j * K + k] : 0;
                }
}

AVX512BF16 __attribute__((always_inline)) static inline void ptile_bf16(const uint16_t *xb, int64_t K,
                                                                      const uint16_t *Wb, const float *bias,
                                                                      int64_t N, float *Y, int64_t r0, int RT,
                                                                      int64_t j0, __mmask16 m0, __mmask16 m1) {
    // two accumulator sets, even and odd k pairs, so that even a 1-row tile has four independent
    // chains; the sets are added at the end in the same order for every tile height
    __m512 a0[6], a1[6], c0[6], c1[6];
    for (int r = 0; r < RT; r++)
        a0[r] = _mm512_setzero_ps(), a1[r] = _mm512_setzero_ps(), c0[r] = _mm512_setzero_ps(),
        c1[r] = _mm512_setzero_ps();
    const uint16_t *x = xb + r0 * K;
    int64_t         K2 = (K + 1) / 2, kk = 0;
    for (; kk + 1 < K2; kk += 2) {
        __m512bh w0 = (__m512bh)_mm512_loadu_si512((const void *)(Wb + kk * 64));
        __m512bh w1 = (__m512bh)_mm512_loadu_si512((const void *)(Wb + kk * 64 + 32));
        __m512bh w2 = (__m512bh)_mm512_loadu_si512((const void *)(Wb + kk * 64 + 64));
        __m512bh w3 = (__m512bh)_mm512_loadu_si512((const void *)(Wb + kk * 64 + 96));
        for (int r = 0; r < RT; r++) {
            const uint16_t *xr = x + r * K + 2 * kk;
            uint32_t        p0, p1 = xr[2]; // little-endian pairs: one 32-bit broadcast load each
            __builtin_memcpy(&p0, xr, 4);
            if (2 * kk + 3 < K) __builtin_memcpy(&p1, xr + 2, 4);
            __m512bh        x0 = (__m512bh)_mm512_set1_epi32((int)p0), x1 = (__m512bh)_mm512_set1_epi32((int)p1);
            a0[r]              = _mm512_dpbf16_ps(a0[r], x0, w0);
            a1[r]              = _mm512_dpbf16_ps(a1[r], x0, w1);
            c0[r]              = _mm512_dpbf16_ps(c0[r], x1, w2);
            c1[r]              = _mm512_dpbf16_ps(c1[r], x1, w3);
        }
    }
    for (; kk < K2; kk++) {
        __m512bh w0 = (__m512bh)_mm512_loadu_si512((const void *)(Wb + kk * 64));
        __m512bh w1 = (__m512bh)_mm512_loadu_si512((const void *)(Wb + kk * 64 + 32));
        for (int r = 0; r < RT; r++) {
            const uint16_t *xr   = x + r * K + 2 * kk;
            uint32_t        pair = (uint32_t)xr[0] | (2 * kk + 1 < K ? (uint32_t)xr[1] << 16 : 0u);
            __m512bh        xv   = (__m512bh)_mm512_set1_epi32((int)pair);
            a0[r]                = _mm512_dpbf16_ps(a0[r], xv, w0);
            a1[r]                = _mm512_dpbf16_ps(a1[r], xv, w1);
        }
    }
    for (int r = 0; r < RT; r++) a0[r] = _mm512_add_ps(a0[r], c0[r]), a1[r] = _mm512_add_ps(a1[r], c1[r]);
    __m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias + j0) : _mm512_setzero_ps();
    __m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + j0 + 16) : _mm512_setzero_ps();
    for (int r = 0; r < RT; r++) {
        _mm512_mask_storeu_ps(Y + (r0 + r) * N + j0, m0, _mm512_add_ps(a0[r], b0));
        _mm512_mask_storeu_ps(Y + (r0 + r) * N + j0 + 16, m1, _mm512_add_ps(a1[r], b1));
    }
}

AVX512BF16 static void panel_bf16(const uint16_t *xb, int64_t M, int64_t K, const uint16_t *Wb, const float *bias,
                                  int64_t N, float *Y, int64_t p) {
    int64_t   j0 = p * 32, nc = N - j0 < 32 ? N - j0 : 32;
    __mmask16 m0 = nc >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nc) - 1);
    __mmask16 m1 = nc >= 32 ? (__mmask16)0xffff : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1) : 0;
    const uint16_t *wp = Wb + p * ((K + 1) / 2) * 64;
    for (int64_t r0 = 0; r0 < M; r0 += 6) {
        switch (M - r0 < 6 ? (int)(M - r0) : 6) {
        case 6: ptile_bf16(xb, K, wp, bias, N, Y, r0, 6, j0, m0, m1); break;
        case 5: ptile_bf16(xb, K, wp, bias, N, Y, r0, 5, j0, m0, m1); break;
        case 4: ptile_bf16(xb, K, wp, bias, N, Y, r0, 4, j0, m0, m1); break;
        case 3: ptile_bf16(xb, K, wp, bias, N, Y, r0, 3, j0, m0, m1); break;
        case 2: ptile_bf16(xb, K, wp, bias, N, Y, r0, 2, j0, m0, m1); break;
        default: ptile_bf16(xb, K, wp, bias, N, Y, r0, 1, j0, m0, m1); break;
        }
    }
}

bool spry_eng_linear_packed_bf16(const float *X, int64_t M, int64_t K, const uint16_t *Wb, const float *bias,
                                 int64_t N, float *Y, uint16_t *xb, spry_tile_fn epi, void *user) {
    spry_cpu_features f = spry_cpu_detect();
    if (!f.avx512f || !f.avx512bw || !f.avx512bf16) return false;
    round_rows_bf16(X, M * K, xb);
#pragma omp parallel for schedule(guided) // as spry_qgemm: a slowed core does not hold the join
    for (int64_t p = 0; p < (N + 31) / 32; p++) {
        panel_bf16(xb, M, K, Wb, bias, N, Y, p);
        panel_epi(epi, user, Y, M, N, p);
    }
    return true;
}

/* ---- packed f16: the f32 tiles on widened halves --------------------------------------------- */

void spry_eng_pack_f16(const uint16_t *W, int64_t N, int64_t K, uint16_t *Wh) {
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < (N + 31) / 32; p++)
        for (int64_t k = 0; k < K; k++)
            for (int64_t c = 0; c < 32; c++) {
                int64_t j                 = p * 32 + c;
                Wh[(p * K + k) * 32 + c] = j < N ? W[j * K + k] : 0;
            }
}

AVX512 __attribute__((always_inline)) static inline void ptile_f16(const float *X, int64_t K, const uint16_t *Wh,
                                                                   const float *bias, int64_t N, float *Y, int64_t r0,
                                                                   int RT, int64_t j0, __mmask16 m0, __mmask16 m1) {
    // even and odd k in two accumulator sets (four chains even for one row), added at the end
    __m512 a0[6], a1[6], c0[6], c1[6];
    for (int r = 0; r < RT; r++)
        a0[r] = _mm512_setzero_ps(), a1[r] = _mm512_setzero_ps(), c0[r] = _mm512_setzero_ps(),
        c1[r] = _mm512_setzero_ps();
    const float *x = X + r0 * K;
    int64_t      k = 0;
    for (; k + 1 < K; k += 2) {
        __m512 w0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(Wh + k * 32)));
        __m512 w1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(Wh + k * 32 + 16)));
        __m512 w2 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(Wh + k * 32 + 32)));
        __m512 w3 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(Wh + k * 32 + 48)));
        for (int r = 0; r < RT; r++) {
            __m512 x0 = _mm512_set1_ps(x[r * K + k]), x1 = _mm512_set1_ps(x[r * K + k + 1]);
            a0[r]     = _mm512_fmadd_ps(x0, w0, a0[r]);
            a1[r]     = _mm512_fmadd_ps(x0, w1, a1[r]);
            c0[r]     = _mm512_fmadd_ps(x1, w2, c0[r]);
            c1[r]     = _mm512_fmadd_ps(x1, w3, c1[r]);
        }
    }
    for (; k < K; k++) {
        __m512 w0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(Wh + k * 32)));
        __m512 w1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(Wh + k * 32 + 16)));
        for (int r = 0; r < RT; r++) {
            __m512 xb = _mm512_set1_ps(x[r * K + k]);
            a0[r]     = _mm512_fmadd_ps(xb, w0, a0[r]);
            a1[r]     = _mm512_fmadd_ps(xb, w1, a1[r]);
        }
    }
    for (int r = 0; r < RT; r++) a0[r] = _mm512_add_ps(a0[r], c0[r]), a1[r] = _mm512_add_ps(a1[r], c1[r]);
    __m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias + j0) : _mm512_setzero_ps();
    __m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + j0 + 16) : _mm512_setzero_ps();
    for (int r = 0; r < RT; r++) {
        _mm512_mask_storeu_ps(Y + (r0 + r) * N + j0, m0, _mm512_add_ps(a0[r], b0));
        _mm512_mask_storeu_ps(Y + (r0 + r) * N + j0 + 16, m1, _mm512_add_ps(a1[r], b1));
    }
}

AVX512 static void panel_f16(const float *X, int64_t M, int64_t K, const uint16_t *Wh, const float *bias, int64_t N,
                             float *Y, int64_t p) {
    int64_t   j0 = p * 32, nc = N - j0 < 32 ? N - j0 : 32;
    __mmask16 m0 = nc >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nc) - 1);
    __mmask16 m1 = nc >= 32 ? (__mmask16)0xffff : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1) : 0;
    const uint16_t *wp = Wh + p * K * 32;
    for (int64_t r0 = 0; r0 < M; r0 += 6) {
        switch (M - r0 < 6 ? (int)(M - r0) : 6) {
        case 6: ptile_f16(X, K, wp, bias, N, Y, r0, 6, j0, m0, m1); break;
        case 5: ptile_f16(X, K, wp, bias, N, Y, r0, 5, j0, m0, m1); break;
        case 4: ptile_f16(X, K, wp, bias, N, Y, r0, 4, j0, m0, m1); break;
        case 3: ptile_f16(X, K, wp, bias, N, Y, r0, 3, j0, m0, m1); break;
        case 2: ptile_f16(X, K, wp, bias, N, Y, r0, 2, j0, m0, m1); break;
        default: ptile_f16(X, K, wp, bias, N, Y, r0, 1, j0, m0, m1); break;
        }
    }
}

bool spry_eng_linear_packed_f16(const float *X, int64_t M, int64_t K, const uint16_t *Wh, const float *bias,
                                int64_t N, float *Y, spry_tile_fn epi, void *user) {
    if (!spry_cpu_detect().avx512f) return false;
#pragma omp parallel for schedule(guided) // as spry_qgemm: a slowed core does not hold the join
    for (int64_t p = 0; p < (N + 31) / 32; p++) {
        panel_f16(X, M, K, Wh, bias, N, Y, p);
        panel_epi(epi, user, Y, M, N, p);
    }
    return true;
}
