/*
 * bench_gemm.c -- spry_gemm (oneDNN f32 and bf16) against OpenBLAS cblas_sgemm, 2 threads.
 *
 * GPT-2 small shapes (tokens M = 2048, C = 768; LM head over 1024 tokens, V = 50304): each
 * linear layer Y = X W^T (W stored (out, in), "nt") with its two backward GEMMs, dX = dY W ("nn")
 * and dW = dY^T X ("tn"). GFLOP/s = 2 M N K / best time over several reps after a warmup. A
 * peak loop (independent AVX-512 FMA chains, and AVX512-BF16 dot products when present) gives
 * the machine's ceiling. Ends with `RESULT gemm_<M>x<N>x<K>_<ta><tb>_<dtype> spry=...
 * openblas=... ratio=... unit=GFLOP/s` lines; bf16 lines use OpenBLAS f32 as the baseline
 * (Debian's OpenBLAS has no bf16 GEMM). Usage: bench_gemm [reps] (default 5).
 */
#include <immintrin.h>
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cblas.h>

#include "spry/dtype.h"
#include "spry/gemm.h"

enum { N_THREAD = 2, N_CHAIN = 12 };

// ------------------------------------------------------------------------------------------------
// peak: N_CHAIN independent accumulators, so the loop is bound by FMA throughput, not latency

__attribute__((target("avx512f"))) static float peak_fma_f32(int64_t iters) {
    __m512 acc[N_CHAIN];
    for (int c = 0; c < N_CHAIN; c++) acc[c] = _mm512_set1_ps((float)c);
    const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-6f);
    for (int64_t i = 0; i < iters; i++) {
        for (int c = 0; c < N_CHAIN; c++) acc[c] = _mm512_fmadd_ps(acc[c], x, y);
    }
    __m512 s = acc[0];
    for (int c = 1; c < N_CHAIN; c++) s = _mm512_add_ps(s, acc[c]);
    return _mm512_reduce_add_ps(s);
}

// vdpbf16ps: per f32 lane, two bf16 products added to the accumulator (4 flops)
__attribute__((target("avx512f,avx512bf16"))) static float peak_dot_bf16(int64_t iters) {
    __m512 acc[N_CHAIN];
    for (int c = 0; c < N_CHAIN; c++) acc[c] = _mm512_set1_ps((float)c);
    const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80); // 1.0 in bf16
    const __m512bh y = (__m512bh)_mm512_set1_epi16(0x3380); // 2^-24
    for (int64_t i = 0; i < iters; i++) {
        for (int c = 0; c < N_CHAIN; c++) acc[c] = _mm512_dpbf16_ps(acc[c], x, y);
    }
    __m512 s = acc[0];
    for (int c = 1; c < N_CHAIN; c++) s = _mm512_add_ps(s, acc[c]);
    return _mm512_reduce_add_ps(s);
}

static volatile float peak_sink;

// GFLOP/s of the peak loop on N_THREAD threads (best of 5); kind 0 FMA f32, 1 dot bf16.
static double peak_gflops(int kind) {
    const int64_t iters = 20 * 1000 * 1000;
    const double flops_per_iter = kind == 0 ? N_CHAIN * 16 * 2 : N_CHAIN * 16 * 4;
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = omp_get_wtime();
#pragma omp parallel num_threads(N_THREAD)
        {
            float r = kind == 0 ? peak_fma_f32(iters) : peak_dot_bf16(iters);
            peak_sink = r;
        }
        double t = omp_get_wtime() - t0;
        double g = flops_per_iter * (double)iters * N_THREAD / t * 1e-9;
        if (g > best) best = g;
    }
    return best;
}

// ------------------------------------------------------------------------------------------------
// GEMM timing

typedef struct shape {
    const char *what;
    int64_t     M, N, K;
    bool        ta, tb;
} shape;

// (M tokens, out, in) per layer; forward nt, backward nn (dX) and tn (dW)
#define LAYER(what, M, out, in)                                                                    \
    {what " fwd", M, out, in, false, true}, {what " dX", M, in, out, false, false},               \
    {what " dW", out, in, M, true, false}

static const shape shapes[] = {
    LAYER("attn.proj", 2048, 768, 768),  LAYER("attn.qkv", 2048, 2304, 768),
    LAYER("mlp.fc", 2048, 3072, 768),    LAYER("mlp.proj", 2048, 768, 3072),
    LAYER("lm_head", 1024, 50304, 768),
};

// Timed variant by variant, OpenBLAS last: its pthread pool keeps spinning for a while after a
// call and would slow down whatever runs next on a 2-core machine.
typedef enum variant { V_SPRY_F32, V_SPRY_BF16, V_OPENBLAS_F32, N_VARIANT } variant;

static void run_variant(variant v, const shape *s, const float *a, const uint16_t *ah,
                        const float *b, const uint16_t *bh, float *c) {
    const int64_t lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    switch (v) {
    case V_SPRY_F32:
        spry_gemm_f32(s->ta, s->tb, s->M, s->N, s->K, 1.0f, a, lda, b, ldb, 0.0f, c, s->N);
        break;
    case V_OPENBLAS_F32:
        cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans,
                    s->tb ? CblasTrans : CblasNoTrans, (blasint)s->M, (blasint)s->N,
                    (blasint)s->K, 1.0f, a, (blasint)lda, b, (blasint)ldb, 0.0f, c,
                    (blasint)s->N);
        break;
    case V_SPRY_BF16:
        spry_gemm_bf16(s->ta, s->tb, s->M, s->N, s->K, 1.0f, ah, lda, bh, ldb, 0.0f, c, s->N);
        break;
    default: break;
    }
}

// Best GFLOP/s of timed calls (at least reps of them, and at least 0.25 s) after a warmup call.
static double time_variant(variant v, const shape *s, int reps, const float *a,
                           const uint16_t *ah, const float *b, const uint16_t *bh, float *c) {
    const double flops = 2.0 * (double)s->M * (double)s->N * (double)s->K;
    run_variant(v, s, a, ah, b, bh, c);
    double best = 0.0;
    const double start = omp_get_wtime();
    for (int r = 0; r < reps || omp_get_wtime() - start < 0.25; r++) {
        double t0 = omp_get_wtime();
        run_variant(v, s, a, ah, b, bh, c);
        double g = flops / (omp_get_wtime() - t0) * 1e-9;
        if (g > best) best = g;
    }
    return best;
}

static void fill(float *x, uint16_t *xh, int64_t n, uint32_t seed) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        xh[i] = spry_f32_to_bf16((float)(seed >> 8) / 16777216.0f - 0.5f);
        x[i] = spry_bf16_to_f32(xh[i]);
    }
}

int main(int argc, char **argv) {
    const int reps = argc > 1 ? atoi(argv[1]) : 5;
    if (reps < 1) {
        fprintf(stderr, "usage: bench_gemm [reps >= 1]\n");
        return 2;
    }
    omp_set_num_threads(N_THREAD);
    openblas_set_num_threads(N_THREAD);
    printf("bench_gemm: %d threads, backend %s, best of >= %d reps (>= 0.25 s) after a warmup\n",
           N_THREAD, spry_gemm_backend(), reps);

    double peak_f32 = 0.0, peak_bf16 = 0.0;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) peak_f32 = peak_gflops(0);
    if (__builtin_cpu_supports("avx512bf16")) peak_bf16 = peak_gflops(1);
    printf("peak: AVX-512 FMA f32 %.0f GFLOP/s, AVX512-BF16 dot %.0f GFLOP/s (0: not supported)\n",
           peak_f32, peak_bf16);

    const int n_shape = (int)(sizeof shapes / sizeof shapes[0]);
    int64_t max_a = 0, max_b = 0, max_c = 0;
    for (int i = 0; i < n_shape; i++) {
        const shape *s = &shapes[i];
        if (s->M * s->K > max_a) max_a = s->M * s->K;
        if (s->K * s->N > max_b) max_b = s->K * s->N;
        if (s->M * s->N > max_c) max_c = s->M * s->N;
    }
    float *a = malloc((size_t)max_a * sizeof(float)), *b = malloc((size_t)max_b * sizeof(float));
    float *c = malloc((size_t)max_c * sizeof(float));
    uint16_t *ah = malloc((size_t)max_a * sizeof(uint16_t));
    uint16_t *bh = malloc((size_t)max_b * sizeof(uint16_t));
    if (!a || !b || !c || !ah || !bh) {
        fprintf(stderr, "bench_gemm: out of memory\n");
        return 1;
    }
    fill(a, ah, max_a, 1);
    fill(b, bh, max_b, 2);

    double g[sizeof shapes / sizeof shapes[0]][N_VARIANT];
    for (int v = 0; v < N_VARIANT; v++) {
        for (int i = 0; i < n_shape; i++) {
            g[i][v] = time_variant((variant)v, &shapes[i], reps, a, ah, b, bh, c);
        }
    }
    printf("\n%-15s %-20s %4s %10s %12s %10s %8s %8s\n", "layer", "M x N x K", "op", "spry f32",
           "openblas f32", "spry bf16", "f32/pk", "bf16/pk");
    for (int i = 0; i < n_shape; i++) {
        const shape *s = &shapes[i];
        char dims[64];
        snprintf(dims, sizeof dims, "%lldx%lldx%lld", (long long)s->M, (long long)s->N,
                 (long long)s->K);
        printf("%-15s %-20s %c%c   %10.1f %12.1f %10.1f %7.0f%% %7.0f%%\n", s->what, dims,
               s->ta ? 't' : 'n', s->tb ? 't' : 'n', g[i][V_SPRY_F32], g[i][V_OPENBLAS_F32],
               g[i][V_SPRY_BF16], peak_f32 > 0 ? 100.0 * g[i][V_SPRY_F32] / peak_f32 : 0.0,
               peak_bf16 > 0 ? 100.0 * g[i][V_SPRY_BF16] / peak_bf16 : 0.0);
    }
    printf("(GFLOP/s; f32/pk: spry f32 over the FMA peak, bf16/pk: spry bf16 over the BF16 "
           "peak)\n");
    printf("(spry bf16: A and B bf16, f32 accumulation and C)\n");
    // The peak again: if it moved, another process took cores during the run.
    if (peak_f32 > 0) {
        const double again = peak_gflops(0);
        printf("peak FMA f32 before %.0f, after %.0f GFLOP/s%s\n", peak_f32, again,
               again < 0.9 * peak_f32 || peak_f32 < 0.9 * again
                   ? ": WARNING, the machine was busy; numbers are unreliable"
                   : "");
    }
    printf("\n");

    for (int i = 0; i < n_shape; i++) {
        const shape *s = &shapes[i];
        for (int dt = 0; dt < 2; dt++) {
            const double spry = g[i][dt == 0 ? V_SPRY_F32 : V_SPRY_BF16];
            const double base = g[i][V_OPENBLAS_F32];
            printf("RESULT gemm_%lldx%lldx%lld_%c%c_%s spry=%.1f openblas=%.1f ratio=%.3f "
                   "unit=GFLOP/s\n", (long long)s->M, (long long)s->N, (long long)s->K,
                   s->ta ? 't' : 'n', s->tb ? 't' : 'n', dt == 0 ? "f32" : "bf16", spry, base,
                   spry / base);
        }
    }
    if (peak_f32 > 0) printf("RESULT gemm_peak_fma_f32 spry=%.1f unit=GFLOP/s\n", peak_f32);
    if (peak_bf16 > 0) printf("RESULT gemm_peak_dot_bf16 spry=%.1f unit=GFLOP/s\n", peak_bf16);

    free(a);
    free(b);
    free(c);
    free(ah);
    free(bh);
    spry_gemm_cache_clear();
    return 0;
}
