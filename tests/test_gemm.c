// ctest-label: unit
/*
 * test_gemm.c -- spry_gemm_f32 / spry_gemm_bf16 against a double-precision reference.
 *
 * Every available implementation (oneDNN, OpenBLAS, scalar) x both dtypes x all four transpose
 * combinations x minimal and padded leading dimensions x (alpha, beta) in {1, 0.5} x {0, 1, 0.25},
 * over odd shapes (1, 3, 17, 64, 129) and zero-size ones. beta == 0 calls start from a NaN-filled
 * C (C must not be read); padding columns of C must stay untouched. Then 1 vs 2 OpenMP threads
 * on (2048, 768, 768), (256, 256, 64), a dW-like (768, 768, 2048) and a long-K (64, 64, 4096):
 * whether the results are bit-identical is printed, not checked (it depends on the backend's
 * blocking), while both are checked against sampled reference entries.
 */
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spry/dtype.h"
#include "spry/gemm.h"

static int n_fail = 0;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            if (n_fail < 20) {                                                                     \
                fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);           \
                fprintf(stderr, __VA_ARGS__);                                                      \
                fputc('\n', stderr);                                                               \
            }                                                                                      \
            n_fail++;                                                                              \
        }                                                                                          \
    } while (0)

// splitmix64: a reproducible uniform in [-1, 1)
static uint64_t rng_state = 0x5eed;
static float rand_unit(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

// A stored matrix of rows x ld floats, filled with values that are exact in bf16 when bf16.
typedef struct mat {
    float    *f;  // (rows, ld)
    uint16_t *h;  // (rows, ld), the bf16 bits of f
    int64_t   rows, cols, ld;
} mat;

static mat mat_random(int64_t rows, int64_t cols, int64_t ld) {
    mat m = {.rows = rows, .cols = cols, .ld = ld};
    size_t n = (size_t)(rows * ld) + 1; // +1: never malloc(0)
    m.f = malloc(n * sizeof(float));
    m.h = malloc(n * sizeof(uint16_t));
    if (!m.f || !m.h) abort();
    for (size_t i = 0; i < n; i++) {
        m.h[i] = spry_f32_to_bf16(rand_unit());
        m.f[i] = spry_bf16_to_f32(m.h[i]);
    }
    return m;
}

static void mat_free(mat *m) {
    free(m->f);
    free(m->h);
}

// op(X)(r, c) of a stored matrix
static double op_at(const mat *x, bool t, int64_t r, int64_t c) {
    return t ? x->f[c * x->ld + r] : x->f[r * x->ld + c];
}

// Checks C (after) against alpha * op(A) op(B) + beta * C0 in double, entry (i, j), with a
// tolerance relative to alpha * sum |a||b| + |beta c0|. C0 is the C before the call.
static bool check_entry(const mat *a, bool ta, const mat *b, bool tb, int64_t K, float alpha,
                        float beta, float c0, float c, int64_t i, int64_t j, double rel) {
    double ref = 0.0, mag = 0.0;
    for (int64_t k = 0; k < K; k++) {
        double p = op_at(a, ta, i, k) * op_at(b, tb, k, j);
        ref += p;
        mag += fabs(p);
    }
    ref *= alpha;
    mag *= fabs(alpha);
    if (beta != 0.0f) {
        ref += (double)beta * c0;
        mag += fabs((double)beta * c0);
    }
    return fabs((double)c - ref) <= rel * mag + 1e-30;
}

typedef struct run_cfg {
    bool           bf16;
    bool           ta, tb;
    int64_t        M, N, K;
    int64_t        pad; // extra leading-dimension elements
    float          alpha, beta;
} run_cfg;

// One call, fully checked. Returns the number of failed entries.
static int run_one(const run_cfg *r) {
    const int64_t M = r->M, N = r->N, K = r->K;
    const int64_t a_rows = r->ta ? K : M, a_cols = r->ta ? M : K;
    const int64_t b_rows = r->tb ? N : K, b_cols = r->tb ? K : N;
    mat a = mat_random(a_rows, a_cols, a_cols + r->pad);
    mat b = mat_random(b_rows, b_cols, b_cols + 2 * r->pad);
    mat c = mat_random(M, N, N + 3 * r->pad);
    const int64_t nc = M * c.ld + 1;
    float *c0 = malloc((size_t)nc * sizeof(float));
    if (!c0) abort();
    if (r->beta == 0.0f) {
        for (int64_t i = 0; i < nc; i++) c.f[i] = NAN; // beta == 0: C must not be read
    }
    memcpy(c0, c.f, (size_t)nc * sizeof(float));
    if (r->bf16) {
        spry_gemm_bf16(r->ta, r->tb, M, N, K, r->alpha, a.h, a.ld, b.h, b.ld, r->beta, c.f, c.ld);
    } else {
        spry_gemm_f32(r->ta, r->tb, M, N, K, r->alpha, a.f, a.ld, b.f, b.ld, r->beta, c.f, c.ld);
    }
    int bad = 0;
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < c.ld; j++) {
            const float got = c.f[i * c.ld + j], was = c0[i * c.ld + j];
            bool ok;
            if (j >= N) {
                ok = memcmp(&got, &was, sizeof got) == 0; // padding untouched
            } else {
                ok = check_entry(&a, r->ta, &b, r->tb, K, r->alpha, r->beta, was, got, i, j,
                                 1e-5);
            }
            if (!ok && bad++ == 0) {
                CHECK(ok, "%s %s ta=%d tb=%d M=%lld N=%lld K=%lld pad=%lld alpha=%g beta=%g: "
                      "C[%lld,%lld]=%.9g", spry_gemm_backend(), r->bf16 ? "bf16" : "f32",
                      (int)r->ta, (int)r->tb, (long long)M, (long long)N, (long long)K,
                      (long long)r->pad, (double)r->alpha, (double)r->beta, (long long)i,
                      (long long)j, (double)got);
            }
        }
    }
    free(c0);
    mat_free(&a);
    mat_free(&b);
    mat_free(&c);
    return bad;
}

static const int64_t shapes[][3] = {
    {1, 1, 1},    {1, 17, 3},   {3, 1, 17},   {17, 3, 1},    {3, 3, 3},     {64, 64, 64},
    {129, 17, 64}, {17, 129, 3}, {1, 129, 129}, {129, 1, 129}, {129, 129, 1}, {3, 64, 129},
    {64, 3, 17},  {129, 129, 129},
    {0, 3, 4},    {3, 0, 4},    {3, 4, 0},    {0, 0, 0},
};
static const float alphas[] = {1.0f, 0.5f};
static const float betas[] = {0.0f, 1.0f, 0.25f};

static void test_reference(void) {
    const double t0 = omp_get_wtime();
    int n_call = 0, n_bad = 0;
    for (int dt = 0; dt < 2; dt++)
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int t = 0; t < 4; t++)
    for (int64_t pad = 0; pad <= 5; pad += 5)
    for (size_t ai = 0; ai < sizeof alphas / sizeof alphas[0]; ai++)
    for (size_t bi = 0; bi < sizeof betas / sizeof betas[0]; bi++) {
        run_cfg r = {
            .bf16 = dt == 1, .ta = t & 1, .tb = (t >> 1) & 1,
            .M = shapes[s][0], .N = shapes[s][1], .K = shapes[s][2], .pad = pad,
            .alpha = alphas[ai], .beta = betas[bi],
        };
        n_bad += run_one(&r) != 0;
        n_call++;
    }
    printf("  %-8s %d calls, %d with wrong entries (%.2f s)\n", spry_gemm_backend(), n_call, n_bad,
           omp_get_wtime() - t0);
}

// 1 vs 2 threads: reports bit-identity, checks sampled entries against the reference.
static void test_threads(int64_t M, int64_t N, int64_t K, bool ta, bool tb, bool bf16) {
    const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K;
    const int64_t b_rows = tb ? N : K, b_cols = tb ? K : N;
    mat a = mat_random(a_rows, a_cols, a_cols);
    mat b = mat_random(b_rows, b_cols, b_cols);
    float *c[2];
    for (int t = 0; t < 2; t++) {
        c[t] = malloc((size_t)(M * N) * sizeof(float));
        if (!c[t]) abort();
        omp_set_num_threads(t + 1);
        if (bf16) {
            spry_gemm_bf16(ta, tb, M, N, K, 1.0f, a.h, a_cols, b.h, b_cols, 0.0f, c[t], N);
        } else {
            spry_gemm_f32(ta, tb, M, N, K, 1.0f, a.f, a_cols, b.f, b_cols, 0.0f, c[t], N);
        }
    }
    int64_t n_diff = 0;
    double max_diff = 0.0;
    for (int64_t i = 0; i < M * N; i++) {
        if (memcmp(&c[0][i], &c[1][i], sizeof(float)) != 0) n_diff++;
        max_diff = fmax(max_diff, fabs((double)c[0][i] - c[1][i]));
    }
    for (int s = 0; s < 64; s++) {
        const int64_t i = (int64_t)((rand_unit() + 1.0f) * 0.5f * (float)(M - 1));
        const int64_t j = (int64_t)((rand_unit() + 1.0f) * 0.5f * (float)(N - 1));
        for (int t = 0; t < 2; t++) {
            CHECK(check_entry(&a, ta, &b, tb, K, 1.0f, 0.0f, 0.0f, c[t][i * N + j], i, j, 1e-5),
                  "%s threads=%d (%lld,%lld,%lld) C[%lld,%lld]", spry_gemm_backend(), t + 1,
                  (long long)M, (long long)N, (long long)K, (long long)i, (long long)j);
        }
    }
    printf("  %-8s %-4s %5lldx%5lldx%5lld ta=%d tb=%d: 1 vs 2 threads %s", spry_gemm_backend(),
           bf16 ? "bf16" : "f32", (long long)M, (long long)N, (long long)K, (int)ta, (int)tb,
           n_diff == 0 ? "BIT-IDENTICAL" : "DIFFER");
    if (n_diff) printf(" (%lld of %lld entries, max |diff| %.3g)", (long long)n_diff,
                       (long long)(M * N), max_diff);
    printf("\n");
    free(c[0]);
    free(c[1]);
    mat_free(&a);
    mat_free(&b);
}

int main(void) {
    const spry_gemm_impl impls[] = {SPRY_GEMM_IMPL_ONEDNN, SPRY_GEMM_IMPL_OPENBLAS,
                                    SPRY_GEMM_IMPL_SCALAR};
    const int max_threads = omp_get_max_threads();
    printf("default backend: %s\n", spry_gemm_backend());
    CHECK(!spry_gemm_set_impl((spry_gemm_impl)99), "an unknown implementation was accepted");

    printf("reference checks (%d threads):\n", max_threads);
    for (size_t i = 0; i < sizeof impls / sizeof impls[0]; i++) {
        if (!spry_gemm_set_impl(impls[i])) {
            printf("  implementation %d not available, skipped\n", (int)impls[i]);
            continue;
        }
        test_reference();
    }

    printf("determinism:\n");
    static const int64_t det_shapes[][3] = {
        {2048, 768, 768}, {256, 256, 64}, {768, 768, 2048}, {64, 64, 4096},
    };
    static const bool det_trans[][2] = {{false, false}, {false, true}, {true, false}};
    for (size_t i = 0; i < sizeof impls / sizeof impls[0]; i++) {
        if (impls[i] == SPRY_GEMM_IMPL_SCALAR || !spry_gemm_set_impl(impls[i])) continue;
        // OpenBLAS: the two shapes asked about, untransposed (its result is the same for all)
        const bool all = impls[i] == SPRY_GEMM_IMPL_ONEDNN;
        const double t0 = omp_get_wtime();
        for (int dt = 0; dt < 2; dt++)
        for (size_t s = 0; s < (all ? sizeof det_shapes / sizeof det_shapes[0] : 2); s++)
        for (size_t t = 0; t < (all ? 3 : 1); t++) {
            test_threads(det_shapes[s][0], det_shapes[s][1], det_shapes[s][2], det_trans[t][0],
                         det_trans[t][1], dt == 1);
        }
        printf("  (%.2f s)\n", omp_get_wtime() - t0);
    }
    omp_set_num_threads(max_threads);

    // The cache is reusable after a clear.
    if (spry_gemm_set_impl(SPRY_GEMM_IMPL_ONEDNN)) {
        printf("oneDNN primitives cached: %lld\n", (long long)spry_gemm_cache_size());
        spry_gemm_cache_clear();
        CHECK(spry_gemm_cache_size() == 0, "cache not empty after clear");
        run_cfg r = {.M = 17, .N = 3, .K = 64, .alpha = 1.0f};
        CHECK(run_one(&r) == 0, "after cache clear");
        CHECK(spry_gemm_cache_size() == 1, "cache size %lld", (long long)spry_gemm_cache_size());
        // Every alpha is a key: past the cache's cap, primitives are made per call, still right.
        int n_bad = 0;
        for (int i = 0; i < 1100; i++) {
            float a = 1.0f + (float)i, b = 3.0f, c = -1.0f;
            spry_gemm_f32(false, false, 1, 1, 1, 0.5f + (float)i, &a, 1, &b, 1, 0.0f, &c, 1);
            n_bad += c != (0.5f + (float)i) * a * b;
        }
        CHECK(n_bad == 0, "%d wrong results with many alphas", n_bad);
        CHECK(spry_gemm_cache_size() == 1024, "cache size %lld after 1101 keys (cap 1024)",
              (long long)spry_gemm_cache_size());
        spry_gemm_cache_clear();
    }
    spry_gemm_set_impl(SPRY_GEMM_IMPL_AUTO);

    if (n_fail) {
        fprintf(stderr, "test_gemm: %d checks failed\n", n_fail);
        return 1;
    }
    printf("test_gemm: ok\n");
    return 0;
}
