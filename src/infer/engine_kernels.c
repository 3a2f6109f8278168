/*
 * engine_kernels.c -- LayerNorm, linear and GELU rows for the serving engine (see engine_kernels.h).
 *
 * The linear kernel tiles 4 rows x 4 weight rows (16 AVX-512 accumulators) and keeps, for every
 * output element, the same sequence of operations as a 1 x 1 tile: 16-lane partial sums over K
 * in steps of 16, a masked tail, then a fixed horizontal sum. Tiles only share loads.
 */
#include "infer/engine_kernels.h"

#include <immintrin.h>
#include <math.h>

#include "ops/fastmath.h"
#include "spry/cpu.h"

void spry_eng_layernorm(const float *x, const float *w, const float *b, float *y, int64_t C, float eps) {
    double s = 0, ss = 0;
    for (int64_t i = 0; i < C; i++) s += x[i];
    double mean = s / (double)C;
    for (int64_t i = 0; i < C; i++) ss += ((double)x[i] - mean) * ((double)x[i] - mean);
    float rstd = (float)(1.0 / sqrt(ss / (double)C + (double)eps)), mu = (float)mean;
    for (int64_t i = 0; i < C; i++) y[i] = (x[i] - mu) * rstd * w[i] + b[i];
}

void spry_eng_gelu(float *x, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        x[i]    = 0.5f * v * (1.0f + spry_tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    }
}

/* ---- linear -------------------------------------------------------------------------------- */

#define AVX512 __attribute__((target("avx512f")))

AVX512 static inline float hsum16(__m512 v) {
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    b        = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b        = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
}

// Y[r][j] for r in [r0, r0 + RT), j in [j0, j0 + JT): RT, JT <= 4.
AVX512 __attribute__((always_inline)) static inline void tile(const float *X, int64_t K, const float *W,
                                                              const float *bias, int64_t N, float *Y, int64_t r0,
                                                              int RT, int64_t j0, int JT) {
    __m512 acc[4][4];
    for (int r = 0; r < RT; r++)
        for (int j = 0; j < JT; j++) acc[r][j] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 w[4], x[4];
        for (int j = 0; j < JT; j++) w[j] = _mm512_loadu_ps(W + (j0 + j) * K + k);
        for (int r = 0; r < RT; r++) x[r] = _mm512_loadu_ps(X + (r0 + r) * K + k);
        for (int r = 0; r < RT; r++)
            for (int j = 0; j < JT; j++) acc[r][j] = _mm512_fmadd_ps(x[r], w[j], acc[r][j]);
    }
    if (k < K) {
        __mmask16 mk = (__mmask16)((1u << (K - k)) - 1);
        __m512    w[4], x[4];
        for (int j = 0; j < JT; j++) w[j] = _mm512_maskz_loadu_ps(mk, W + (j0 + j) * K + k);
        for (int r = 0; r < RT; r++) x[r] = _mm512_maskz_loadu_ps(mk, X + (r0 + r) * K + k);
        for (int r = 0; r < RT; r++)
            for (int j = 0; j < JT; j++) acc[r][j] = _mm512_fmadd_ps(x[r], w[j], acc[r][j]);
    }
    for (int r = 0; r < RT; r++)
        for (int j = 0; j < JT; j++) Y[(r0 + r) * N + j0 + j] = hsum16(acc[r][j]) + (bias ? bias[j0 + j] : 0.0f);
}

AVX512 static void linear_avx512(const float *X, int64_t M, int64_t K, const float *W, const float *bias, int64_t N,
                                 float *Y) {
    // columns in chunks of 4 weight rows; every thread streams its weight rows once per 4 rows of X
#pragma omp parallel for schedule(static)
    for (int64_t jb = 0; jb < (N + 3) / 4; jb++) {
        int64_t j0 = jb * 4;
        int     JT = N - j0 < 4 ? (int)(N - j0) : 4;
        for (int64_t r0 = 0; r0 < M; r0 += 4) {
            int RT = M - r0 < 4 ? (int)(M - r0) : 4;
            if (RT == 4 && JT == 4) tile(X, K, W, bias, N, Y, r0, 4, j0, 4);
            else tile(X, K, W, bias, N, Y, r0, RT, j0, JT);
        }
    }
}

static void linear_scalar(const float *X, int64_t M, int64_t K, const float *W, const float *bias, int64_t N,
                          float *Y) {
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < N; j++)
        for (int64_t r = 0; r < M; r++) {
            float acc[16] = {0};
            for (int64_t k = 0; k < K; k++) acc[k % 16] += X[r * K + k] * W[j * K + k];
            float s = 0;
            for (int i = 0; i < 16; i++) s += acc[i];
            Y[r * N + j] = s + (bias ? bias[j] : 0.0f);
        }
}

void spry_eng_linear(const float *X, int64_t M, int64_t K, const float *W, const float *bias, int64_t N, float *Y) {
    if (spry_cpu_detect().avx512f) linear_avx512(X, M, K, W, bias, N, Y);
    else linear_scalar(X, M, K, W, bias, N, Y);
}
