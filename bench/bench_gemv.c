/*
 * bench_gemv.c -- the decode GEMV (spry_gemv, quant.h) against the machine's memory bandwidth,
 * 2 threads, M = 1 (one token).
 *
 * Decode reads every weight once per token, so the bound of a GEMV is weight bytes / read
 * bandwidth (notes/inference_serving.md 6.1, 6.3). Measured in the same run:
 *   read   a streaming sum over a 512 MiB f32 buffer, 2 threads (each its half);
 *   triad  a[i] = b[i] + s c[i] over three 256 MiB arrays (STREAM's count: 12 bytes / element).
 * Then, for GPT-2 124M's decode shapes (K x N: attn qkv 768x2304, attn proj 768x768, mlp fc
 * 768x3072, mlp proj 3072x768, LM head 768x50257) and each weight format, the median time per
 * call, cycling through copies of the matrix that together exceed 256 MiB so every call streams
 * from DRAM as in a real model (no cache reuse between calls); effective GB/s = weight bytes /
 * time. f32 also runs OpenBLAS cblas_sgemv (2 threads) as a peer; 768x3072 also runs spry's
 * scalar kernels (spry_quant_set_isa) to show what the SIMD kernels buy.
 * Finally the whole model per token: 12 layers x 4 matrices + the LM head, M = 1, median ms per
 * token (bound = its bytes / read bandwidth).
 * Lines: `RESULT gemv_<fmt>_<K>x<N> spry=<GB/s> bound=<read GB/s> ratio=... unit=GB/s` and
 * `RESULT gemv_gpt2_124m_<fmt>_token_ms_lower_better spry=<ms> bound=<ms> ratio=... unit=ms`.
 * Usage: bench_gemv [seconds per measurement] (default 0.4).
 */
#define _POSIX_C_SOURCE 200809L
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "spry/cpu.h"
#include "spry/quant.h"
#include "spry/rng.h"

#include "bench_util.h"

enum { N_THREAD = 2, N_SHAPE = 5, N_LAYER = 12 };
#define FOOTPRINT ((size_t)256 << 20) // bytes of matrix copies cycled through per measurement

typedef struct shape {
    const char *name;
    int64_t K, N;
} shape;

static const shape k_shapes[N_SHAPE] = {
    {"attn_qkv", 768, 2304}, {"attn_proj", 768, 768}, {"mlp_fc", 768, 3072},
    {"mlp_proj", 3072, 768}, {"lm_head", 768, 50257},
};

static void *xalloc(size_t n) {
    void *p = aligned_alloc(64, (n + 63) & ~(size_t)63);
    if (!p) {
        fprintf(stderr, "bench_gemv: cannot allocate %zu bytes\n", n);
        exit(1);
    }
    return p;
}

// ------------------------------------------------------------------------------------------------
// Memory bandwidth

__attribute__((target("avx512f"))) static float sum_avx512(const float *a, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_add_ps(s0, _mm512_load_ps(a + i));
        s1 = _mm512_add_ps(s1, _mm512_load_ps(a + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_load_ps(a + i + 32));
        s3 = _mm512_add_ps(s3, _mm512_load_ps(a + i + 48));
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; i < n; i++)
        s += a[i];
    return s;
}

__attribute__((target("avx2"))) static float sum_avx2(const float *a, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_load_ps(a + i));
        s1 = _mm256_add_ps(s1, _mm256_load_ps(a + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_load_ps(a + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_load_ps(a + i + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    float s = 0;
    for (int k = 0; k < 8; k++)
        s += t[k];
    for (; i < n; i++)
        s += a[i];
    return s;
}

static float sum_any(const float *a, int64_t n) {
    spry_cpu_features f = spry_cpu_detect();
    if (f.avx512f)
        return sum_avx512(a, n);
    if (f.avx2)
        return sum_avx2(a, n);
    float s = 0;
    for (int64_t i = 0; i < n; i++)
        s += a[i];
    return s;
}

__attribute__((target("avx512f"))) static void triad_avx512(float *a, const float *b,
                                                            const float *c, float s, int64_t n) {
    __m512 vs = _mm512_set1_ps(s);
    for (int64_t i = 0; i < n; i += 16)
        _mm512_stream_ps(a + i, _mm512_fmadd_ps(vs, _mm512_load_ps(c + i), _mm512_load_ps(b + i)));
}

static void triad_any(float *a, const float *b, const float *c, float s, int64_t n) {
    if (spry_cpu_detect().avx512f && n % 16 == 0) {
        triad_avx512(a, b, c, s, n);
        _mm_sfence();
        return;
    }
    for (int64_t i = 0; i < n; i++)
        a[i] = b[i] + s * c[i];
}

static volatile float g_sink;

// Read GB/s: 2 threads sum their halves of a (n floats); median of reps.
static double read_bw(const float *a, int64_t n, int reps, double *best) {
    double t[32];
    *best = 0;
    for (int r = 0; r < reps; r++) {
        float part[N_THREAD] = {0};
        double t0            = now();
#pragma omp parallel num_threads(N_THREAD)
        {
            int id = omp_get_thread_num(), nt = omp_get_num_threads();
            int64_t i0 = n * id / nt / 64 * 64, i1 = id == nt - 1 ? n : n * (id + 1) / nt / 64 * 64;
            part[id] = sum_any(a + i0, i1 - i0);
        }
        t[r]     = now() - t0;
        g_sink   = part[0] + part[1];
        double g = (double)n * 4 / t[r] / 1e9;
        if (g > *best)
            *best = g;
    }
    return (double)n * 4 / median(t, reps) / 1e9;
}

static double triad_bw(float *a, const float *b, const float *c, int64_t n, int reps) {
    double t[32];
    for (int r = 0; r < reps; r++) {
        double t0 = now();
#pragma omp parallel num_threads(N_THREAD)
        {
            int id = omp_get_thread_num(), nt = omp_get_num_threads();
            int64_t i0 = n * id / nt / 64 * 64, i1 = id == nt - 1 ? n : n * (id + 1) / nt / 64 * 64;
            triad_any(a + i0, b + i0, c + i0, 0.5f, i1 - i0);
        }
        t[r] = now() - t0;
    }
    g_sink = a[n / 3];
    return (double)n * 12 / median(t, reps) / 1e9;
}

// ------------------------------------------------------------------------------------------------
// GEMV timing

// Median seconds per call of y = x W^T over `copies` copies of W (each mat bytes), cycling.
static double time_gemv(const uint8_t *w, size_t mat, int copies, spry_wfmt fmt, const shape *s,
                        const float *x, float *y, double seconds, bool openblas) {
    enum { MAX_CALLS = 4000 };
    static double t[MAX_CALLS];
    int n = 0;
    for (int i = 0; i < 3; i++) // warm-up (threads, page tables)
        spry_gemv(y, x, w + (size_t)i % copies * mat, fmt, NULL, 1, s->K, s->N, N_THREAD);
    double start = now();
    while (n < MAX_CALLS && (n < 15 || now() - start < seconds)) {
        const uint8_t *wc = w + (size_t)(n % copies) * mat;
        double t0         = now();
        if (openblas)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)s->N, (int)s->K, 1.0f, (const float *)wc,
                        (int)s->K, x, 1, 0.0f, y, 1);
        else
            spry_gemv(y, x, wc, fmt, NULL, 1, s->K, s->N, N_THREAD);
        t[n++] = now() - t0;
    }
    return median(t, n);
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 0.4;
    if (secs <= 0)
        secs = 0.4;
    omp_set_num_threads(N_THREAD);
    openblas_set_num_threads(N_THREAD);
    printf("bench_gemv: %d threads, cpu: %s\n", N_THREAD, spry_cpu_summary());
    printf("kernels:");
    for (int f = 0; f < SPRY_WFMT_COUNT; f++)
        printf(" %s=%s", spry_wfmt_name((spry_wfmt)f),
               spry_quant_isa_name(spry_quant_isa_used((spry_wfmt)f)));
    printf("\n\n");

    // -- bandwidth
    const int64_t n_read = ((int64_t)512 << 20) / 4, n_tri = ((int64_t)256 << 20) / 4;
    float *buf = xalloc((size_t)n_read * 4);
#pragma omp parallel for num_threads(N_THREAD) schedule(static)
    for (int64_t i = 0; i < n_read; i++)
        buf[i] = (float)(i & 1023) * 1e-3f; // first touch
    double read_best, read = read_bw(buf, n_read, 9, &read_best);
    free(buf);
    float *ta = xalloc((size_t)n_tri * 4), *tb = xalloc((size_t)n_tri * 4),
          *tc = xalloc((size_t)n_tri * 4);
#pragma omp parallel for num_threads(N_THREAD) schedule(static)
    for (int64_t i = 0; i < n_tri; i++)
        ta[i] = 0.0f, tb[i] = 1.0f, tc[i] = 2.0f;
    double triad = triad_bw(ta, tb, tc, n_tri, 7);
    free(ta), free(tb), free(tc);
    printf("memory: read %.2f GB/s (median of 9, best %.2f), triad %.2f GB/s (2 threads)\n\n", read,
           read_best, triad);

    // -- f32 masters of the five shapes, random N(0, 0.02)
    float *master[N_SHAPE];
    float x[3072];
    spry_rng_fill_normal(x, 3072, 1, 0, 0.0f, 1.0f);
    for (int s = 0; s < N_SHAPE; s++) {
        master[s] = xalloc((size_t)(k_shapes[s].K * k_shapes[s].N) * 4);
        spry_rng_fill_normal(master[s], k_shapes[s].K * k_shapes[s].N, 2, (uint64_t)s, 0.0f, 0.02f);
    }
    float *y = xalloc(50257 * 4);

    // -- per shape and format
    printf("%-5s %-10s %-11s %10s %10s %10s %8s %12s %12s\n", "fmt", "matrix", "K x N", "MB",
           "us/call", "GB/s", "ratio", "openblas", "scalar");
    double gbs[SPRY_WFMT_COUNT][N_SHAPE];
    for (int f = 0; f < SPRY_WFMT_COUNT; f++) {
        spry_wfmt fmt = (spry_wfmt)f;
        for (int s = 0; s < N_SHAPE; s++) {
            const shape *sh = &k_shapes[s];
            size_t mat      = (size_t)sh->N * spry_wfmt_row_bytes(fmt, sh->K);
            int copies      = (int)((FOOTPRINT + mat - 1) / mat);
            if (copies < 2)
                copies = 2;
            uint8_t *w = xalloc(mat * (size_t)copies);
            if (spry_quantize_rows(fmt, master[s], w, sh->N, sh->K, N_THREAD) != SPRY_OK) {
                fprintf(stderr, "quantize failed\n");
                return 1;
            }
            for (int c = 1; c < copies; c++)
                memcpy(w + (size_t)c * mat, w, mat);
            double t    = time_gemv(w, mat, copies, fmt, sh, x, y, secs, false);
            gbs[f][s]   = (double)mat / t / 1e9;
            char ob[32] = "", sc[32] = "";
            if (fmt == SPRY_WFMT_F32) {
                double to = time_gemv(w, mat, copies, fmt, sh, x, y, secs, true);
                snprintf(ob, sizeof ob, "%.2f GB/s", (double)mat / to / 1e9);
            }
            if (s == 2) { // 768x3072: the scalar reference kernels
                spry_quant_set_isa(SPRY_QUANT_ISA_SCALAR);
                double ts = time_gemv(w, mat, copies, fmt, sh, x, y, secs / 2, false);
                spry_quant_set_isa(SPRY_QUANT_ISA_AUTO);
                snprintf(sc, sizeof sc, "%.2f GB/s", (double)mat / ts / 1e9);
            }
            char kn[32];
            snprintf(kn, sizeof kn, "%lldx%lld", (long long)sh->K, (long long)sh->N);
            printf("%-5s %-10s %-11s %10.2f %10.1f %10.2f %8.2f %12s %12s\n", spry_wfmt_name(fmt),
                   sh->name, kn, (double)mat / 1e6, t * 1e6, gbs[f][s], gbs[f][s] / read, ob, sc);
            fflush(stdout);
            free(w);
        }
    }

    // -- the whole model, one token
    printf("\nGPT-2 124M decode, M = 1 (12 x {qkv, proj, fc, mlp proj} + LM head):\n");
    printf("%-5s %10s %10s %10s %10s %10s\n", "fmt", "MB/token", "ms/token", "tok/s", "GB/s",
           "bound ms");
    double tok_ms[SPRY_WFMT_COUNT], tok_bound[SPRY_WFMT_COUNT];
    for (int f = 0; f < SPRY_WFMT_COUNT; f++) {
        spry_wfmt fmt = (spry_wfmt)f;
        size_t mat[N_SHAPE], total = 0;
        for (int s = 0; s < N_SHAPE; s++) {
            mat[s] = (size_t)k_shapes[s].N * spry_wfmt_row_bytes(fmt, k_shapes[s].K);
            total += mat[s] * (s == 4 ? 1 : N_LAYER);
        }
        uint8_t *model = xalloc(total), *p = model, *layer[N_LAYER][4], *head = NULL;
        for (int s = 0; s < N_SHAPE; s++) {
            int reps = s == 4 ? 1 : N_LAYER;
            spry_quantize_rows(fmt, master[s], p, k_shapes[s].N, k_shapes[s].K, N_THREAD);
            for (int l = 0; l < reps; l++) {
                if (l)
                    memcpy(p + (size_t)l * mat[s], p, mat[s]);
                if (s < 4)
                    layer[l][s] = p + (size_t)l * mat[s];
            }
            if (s == 4)
                head = p;
            p += (size_t)reps * mat[s];
        }
        enum { MAX_TOK = 400 };
        static double t[MAX_TOK];
        int n        = 0;
        double start = now();
        for (int warm = 0; n < MAX_TOK && (n < 10 || now() - start < 2 * secs); warm++) {
            double t0 = now();
            for (int l = 0; l < N_LAYER; l++)
                for (int s = 0; s < 4; s++)
                    spry_gemv(y, x, layer[l][s], fmt, NULL, 1, k_shapes[s].K, k_shapes[s].N,
                              N_THREAD);
            spry_gemv(y, x, head, fmt, NULL, 1, 768, 50257, N_THREAD);
            if (warm >= 2)
                t[n++] = now() - t0;
        }
        double ms    = median(t, n) * 1e3;
        tok_ms[f]    = ms;
        tok_bound[f] = (double)total / (read * 1e9) * 1e3;
        printf("%-5s %10.1f %10.2f %10.1f %10.2f %10.2f\n", spry_wfmt_name(fmt), total / 1e6, ms,
               1e3 / ms, (double)total / (ms * 1e-3) / 1e9, tok_bound[f]);
        fflush(stdout);
        free(model);
    }
    printf("\n");
    for (int f = 0; f < SPRY_WFMT_COUNT; f++)
        for (int s = 0; s < N_SHAPE; s++)
            printf("RESULT gemv_%s_%lldx%lld spry=%.2f bound=%.2f ratio=%.3f unit=GB/s\n",
                   spry_wfmt_name((spry_wfmt)f), (long long)k_shapes[s].K, (long long)k_shapes[s].N,
                   gbs[f][s], read, gbs[f][s] / read);
    for (int f = 0; f < SPRY_WFMT_COUNT; f++)
        printf("RESULT gemv_gpt2_124m_%s_token_ms_lower_better spry=%.3f bound=%.3f ratio=%.3f "
               "unit=ms\n",
               spry_wfmt_name((spry_wfmt)f), tok_ms[f], tok_bound[f], tok_ms[f] / tok_bound[f]);
    for (int s = 0; s < N_SHAPE; s++)
        free(master[s]);
    free(y);
    return 0;
}
