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
        for (int j = 0; j < JT; j++) _mm_prefetch((const char *)(W + (j0 + j) * K + k + 512), _MM_HINT_T0);
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

// All M rows against weight rows [4 jb, 4 jb + 4): the work of one OpenMP iteration. A separate
// function because OpenMP's outlined bodies do not inherit target attributes (clang).
AVX512 static void block_avx512(const float *X, int64_t M, int64_t K, const float *W, const float *bias, int64_t N,
                                float *Y, int64_t jb) {
    int64_t j0 = jb * 4;
    int     JT = N - j0 < 4 ? (int)(N - j0) : 4;
    for (int64_t r0 = 0; r0 < M; r0 += 4) {
        int RT = M - r0 < 4 ? (int)(M - r0) : 4;
        // constant tile sizes let the compiler keep the accumulators in registers
        if (JT == 4) {
            switch (RT) {
            case 4: tile(X, K, W, bias, N, Y, r0, 4, j0, 4); break;
            case 3: tile(X, K, W, bias, N, Y, r0, 3, j0, 4); break;
            case 2: tile(X, K, W, bias, N, Y, r0, 2, j0, 4); break;
            default: tile(X, K, W, bias, N, Y, r0, 1, j0, 4); break;
            }
        } else {
            for (int r = 0; r < RT; r++)
                for (int j = 0; j < JT; j++) tile(X, K, W, bias, N, Y, r0 + r, 1, j0 + j, 1);
        }
    }
}

static void linear_avx512(const float *X, int64_t M, int64_t K, const float *W, const float *bias, int64_t N,
                          float *Y) {
    // columns in chunks of 4 weight rows; every thread streams its weight rows once per 4 rows of X
#pragma omp parallel for schedule(static)
    for (int64_t jb = 0; jb < (N + 3) / 4; jb++) block_avx512(X, M, K, W, bias, N, Y, jb);
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

/* ---- bf16 weights: vdpbf16ps tiles ------------------------------------------------------------
 * The same tiling as the f32 kernel; each step takes 32 values of k (16 pairs) from a row of X
 * (rounded to bf16 once per call) and 4 weight rows, and a masked step takes the tail. */

#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))

AVX512BF16 __attribute__((always_inline)) static inline void tile_bf16(const uint16_t *X, int64_t K,
                                                                     const uint16_t *W, const float *bias,
                                                                     int64_t N, float *Y, int64_t r0, int RT,
                                                                     int64_t j0, int JT) {
    __m512 acc[4][4];
    for (int r = 0; r < RT; r++)
        for (int j = 0; j < JT; j++) acc[r][j] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 32) {
        __mmask32 mk = K - k >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << (K - k)) - 1);
        __m512bh  w[4], x[4];
        for (int j = 0; j < JT; j++) _mm_prefetch((const char *)(W + (j0 + j) * K + k + 512), _MM_HINT_T0);
        for (int j = 0; j < JT; j++) w[j] = (__m512bh)_mm512_maskz_loadu_epi16(mk, W + (j0 + j) * K + k);
        for (int r = 0; r < RT; r++) x[r] = (__m512bh)_mm512_maskz_loadu_epi16(mk, X + (r0 + r) * K + k);
        for (int r = 0; r < RT; r++)
            for (int j = 0; j < JT; j++) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], x[r], w[j]);
    }
    for (int r = 0; r < RT; r++)
        for (int j = 0; j < JT; j++) Y[(r0 + r) * N + j0 + j] = hsum16(acc[r][j]) + (bias ? bias[j0 + j] : 0.0f);
}

// Rounds to bf16, nearest even (as vcvtne2ps2bf16; the inputs are finite). Scalar: it is O(M K)
// next to the O(M K N) products, and clang 14 cannot lower the vector conversion here.
static void round_rows_bf16(const float *X, int64_t n, uint16_t *xb) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        __builtin_memcpy(&u, X + i, 4);
        xb[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
}

AVX512BF16 static void block_bf16(const uint16_t *xb, int64_t M, int64_t K, const uint16_t *W, const float *bias,
                                  int64_t N, float *Y, int64_t jb) {
    int64_t j0 = jb * 4;
    int     JT = N - j0 < 4 ? (int)(N - j0) : 4;
    for (int64_t r0 = 0; r0 < M; r0 += 4) {
        int RT = M - r0 < 4 ? (int)(M - r0) : 4;
        if (JT == 4) {
            switch (RT) {
            case 4: tile_bf16(xb, K, W, bias, N, Y, r0, 4, j0, 4); break;
            case 3: tile_bf16(xb, K, W, bias, N, Y, r0, 3, j0, 4); break;
            case 2: tile_bf16(xb, K, W, bias, N, Y, r0, 2, j0, 4); break;
            default: tile_bf16(xb, K, W, bias, N, Y, r0, 1, j0, 4); break;
            }
        } else {
            for (int r = 0; r < RT; r++)
                for (int j = 0; j < JT; j++) tile_bf16(xb, K, W, bias, N, Y, r0 + r, 1, j0 + j, 1);
        }
    }
}

static void linear_bf16(const float *X, int64_t M, int64_t K, const uint16_t *W, const float *bias, int64_t N,
                        float *Y, uint16_t *xb) {
    round_rows_bf16(X, M * K, xb);
#pragma omp parallel for schedule(static)
    for (int64_t jb = 0; jb < (N + 3) / 4; jb++) block_bf16(xb, M, K, W, bias, N, Y, jb);
}

bool spry_eng_linear_bf16(const float *X, int64_t M, int64_t K, const uint16_t *W, const float *bias, int64_t N,
                          float *Y, uint16_t *xb) {
    spry_cpu_features f = spry_cpu_detect();
    if (!f.avx512f || !f.avx512bw || !f.avx512bf16) return false;
    linear_bf16(X, M, K, W, bias, N, Y, xb);
    return true;
}
