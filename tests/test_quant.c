// ctest-label: unit
/*
 * test_quant.c -- ggml's Q8_0 / Q4_0 block formats and the decode GEMV (quant.h).
 *
 * (a) Bit-exactness of the quantizers against scripts/ref/gen_quant.py, an independent numpy
 *     float32 implementation of ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref (zeros,
 *     one huge value, negative maxima, +-ties, exact halves, fp16 overflow / subnormal scales,
 *     products rounding onto a boundary where an FMA would differ, random data), for every
 *     instruction set of the Q8_0 quantizer. The fixture is regenerated into
 *     $SPRY_BUILD_DIR/ref/quant.safetensors when missing or older than the script; without
 *     /usr/bin/python3 + numpy the other checks still run and the test exits 77 (skipped).
 *     Hand-computed vectors too: all-zero blocks (Q4_0 keeps ggml's d = -0.0), the nibble
 *     layout, halves rounding away from zero, the sign of d for a negative maximum.
 *     dequantize(quantize(x)) error per element within the block bound: Q8_0 d/2, Q4_0 d/2 but
 *     up to d where 8 d must clamp to 7 d, both plus the fp16 rounding of d times |q|.
 * (b) Every SIMD GEMV kernel (avx2, avx512) against the scalar reference, every format, M = 1,
 *     3, 8, 16, K = 64, 768, 3072 and a tail (100 / 96), N = 67, with and without bias:
 *     |y - y_ref| <= 1e-5 * sum_k |w_k x_k| + 1e-30 (only the f32 summation order differs: the
 *     integer block dots are exact), where w, x are the values the kernel multiplies (dequantized
 *     weights; Q8_0-rounded activations for the block formats). The scalar kernels against a
 *     double-precision dot of those values, same tolerance. With integer data whose blocks all
 *     have d = 1, every path must give the exact integer result.
 * (c) 1 and 2 threads bit-identical, every format and instruction set.
 * (d) Bad arguments return SPRY_ERR_ARG and leave the output untouched; format helpers.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "spry/dtype.h"
#include "spry/quant.h"
#include "spry/rng.h"
#include "spry/safetensors.h"

#define GEN "scripts/ref/gen_quant.py"
#define PY "/usr/bin/python3"
#define TOL 1e-5

static const spry_quant_isa k_isas[] = {SPRY_QUANT_ISA_SCALAR, SPRY_QUANT_ISA_AVX2,
                                        SPRY_QUANT_ISA_AVX512};
#define N_ISA ((int)(sizeof k_isas / sizeof k_isas[0]))

static float f16val(const void *blk) {
    uint16_t h;
    memcpy(&h, blk, 2);
    return spry_f16_to_f32(h);
}

// ------------------------------------------------------------------------------------------------
// (a) the fixture

static int ensure_reference(const char *dir, const char *path) {
    struct stat fs, gs;
    if (stat(path, &fs) == 0 && (stat(GEN, &gs) != 0 || gs.st_mtime <= fs.st_mtime))
        return 0;
    if (system(PY " -c 'import numpy' >/dev/null 2>&1") != 0) {
        fprintf(stderr, "skipped: %s missing and " PY " with numpy is unavailable\n", path);
        return 77;
    }
    char cmd[1200];
    snprintf(cmd, sizeof cmd, PY " " GEN " --out '%s' >/dev/null", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "%s failed\n", cmd);
        return 1;
    }
    return 0;
}

// Compares got with the reference bytes (I32, one per byte); reports the first differing byte.
static bool same_bytes(const uint8_t *got, const spry_st_tensor_info *ref, size_t n,
                       size_t block_bytes, const char *what, const char *isa) {
    if (!ref || ref->dtype != SPRY_DTYPE_I32 || (size_t)ref->numel != n || !ref->aligned) {
        CHECK_MSG(0, "%s: reference bytes missing or malformed", what);
        return false;
    }
    const int32_t *r = ref->data;
    for (size_t i = 0; i < n; i++)
        if (got[i] != (uint8_t)r[i]) {
            CHECK_MSG(0, "%s (%s): block %zu byte %zu is 0x%02x, ggml gives 0x%02x", what, isa,
                      i / block_bytes, i % block_bytes, got[i], (unsigned)r[i]);
            return false;
        }
    g_check_pass++;
    return true;
}

static void check_fixture(spry_safetensors *st) {
    int n_cases      = 0;
    const char *meta = spry_safetensors_meta(st, "n_cases");
    for (int64_t t = 0; t < spry_safetensors_n_tensors(st); t++) {
        const spry_st_tensor_info *xi = spry_safetensors_tensor_at(st, t);
        size_t ln                     = strlen(xi->name);
        if (ln < 2 || strcmp(xi->name + ln - 2, "/x"))
            continue;
        n_cases++;
        char name[128], key[160];
        snprintf(name, sizeof name, "%.*s", (int)(ln - 2), xi->name);
        CHECK(xi->dtype == SPRY_DTYPE_F32 && xi->aligned && xi->numel % 32 == 0);
        const float *x = xi->data;
        int64_t n = xi->numel, nb = n / 32;
        uint8_t *q8 = xmalloc((size_t)nb * 34), *q4 = xmalloc((size_t)nb * 18);
        snprintf(key, sizeof key, "%s/q8", name);
        const spry_st_tensor_info *r8 = spry_safetensors_find(st, key);
        snprintf(key, sizeof key, "%s/q4", name);
        const spry_st_tensor_info *r4 = spry_safetensors_find(st, key);
        for (int i = 0; i < N_ISA; i++) {
            if (!spry_quant_set_isa(k_isas[i]))
                continue;
            const char *isa = spry_quant_isa_name(k_isas[i]);
            memset(q8, 0xA5, (size_t)nb * 34);
            CHECK(spry_quantize_q8_0(x, q8, n) == SPRY_OK);
            snprintf(key, sizeof key, "%s/q8", name);
            same_bytes(q8, r8, (size_t)nb * 34, 34, key, isa);
            memset(q8, 0xA5, (size_t)nb * 34);
            CHECK(spry_quantize_rows(SPRY_WFMT_Q8_0, x, q8, nb, 32, 2) == SPRY_OK);
            same_bytes(q8, r8, (size_t)nb * 34, 34, key, isa);
            memset(q4, 0xA5, (size_t)nb * 18);
            CHECK(spry_quantize_q4_0(x, q4, n) == SPRY_OK);
            snprintf(key, sizeof key, "%s/q4", name);
            same_bytes(q4, r4, (size_t)nb * 18, 18, key, isa);
            memset(q4, 0xA5, (size_t)nb * 18);
            CHECK(spry_quantize_rows(SPRY_WFMT_Q4_0, x, q4, 1, n, 1) == SPRY_OK);
            same_bytes(q4, r4, (size_t)nb * 18, 18, key, isa);
        }
        spry_quant_set_isa(SPRY_QUANT_ISA_AUTO);
        free(q8);
        free(q4);
    }
    CHECK_MSG(meta && atoi(meta) == n_cases && n_cases >= 10, "fixture has %d cases, metadata %s",
              n_cases, meta ? meta : "(none)");
    printf("fixture: %d cases bit-exact to ggml's reference quantizers\n", n_cases);
}

// ------------------------------------------------------------------------------------------------
// (a) hand-computed vectors

static void check_hand_vectors(void) {
    float x[64];
    spry_block_q8_0 b8[2];
    spry_block_q4_0 b4[2];

    // all zeros (and -0.0): Q8_0 d = +0, q = 0; Q4_0 d = 0 / -8 = -0.0 (fp16 0x8000), q = 8
    memset(x, 0, sizeof x);
    x[5] = -0.0f;
    CHECK(spry_quantize_q8_0(x, b8, 64) == SPRY_OK);
    CHECK(spry_quantize_q4_0(x, b4, 64) == SPRY_OK);
    for (int b = 0; b < 2; b++) {
        CHECK(b8[b].d == 0x0000 && b4[b].d == 0x8000);
        for (int j = 0; j < 32; j++)
            CHECK(b8[b].qs[j] == 0);
        for (int j = 0; j < 16; j++)
            CHECK(b4[b].qs[j] == 0x88);
    }

    // Q8_0 with amax = 127: d = 1, q = roundf(x), halves away from zero
    const float h8[8]  = {127.0f, 0.5f, -0.5f, 1.5f, -2.5f, 126.5f, 0.49999997f, -63.5f};
    const int8_t e8[8] = {127, 1, -1, 2, -3, 127, 0, -64};
    memset(x, 0, sizeof x);
    memcpy(x, h8, sizeof h8);
    for (int i = 0; i < N_ISA; i++) {
        if (!spry_quant_set_isa(k_isas[i]))
            continue;
        CHECK(spry_quantize_q8_0(x, b8, 32) == SPRY_OK);
        CHECK(b8[0].d == 0x3C00); // 1.0
        for (int j = 0; j < 8; j++)
            CHECK_MSG(b8[0].qs[j] == e8[j], "%s: q[%d]=%d expected %d",
                      spry_quant_isa_name(k_isas[i]), j, b8[0].qs[j], e8[j]);
    }
    spry_quant_set_isa(SPRY_QUANT_ISA_AUTO);

    // Q4_0 nibble layout: max -8 first, so d = 1 and x = q - 8; q[j] = j % 16 for j < 16 and
    // q[j] = 31 - j above: qs[j] = q[j] | q[j + 16] << 4
    uint8_t qv[32];
    for (int j = 0; j < 32; j++)
        qv[j] = (uint8_t)(j < 16 ? j : 31 - j);
    for (int j = 0; j < 32; j++)
        x[j] = (float)qv[j] - 8.0f;
    CHECK(spry_quantize_q4_0(x, b4, 32) == SPRY_OK);
    CHECK(b4[0].d == 0x3C00);
    for (int j = 0; j < 16; j++)
        CHECK_MSG(b4[0].qs[j] == (uint8_t)(qv[j] | qv[j + 16] << 4), "qs[%d]=0x%02x", j,
                  b4[0].qs[j]);
    float y[32];
    CHECK(spry_dequantize_q4_0(b4, y, 32) == SPRY_OK);
    for (int j = 0; j < 32; j++)
        CHECK(y[j] == x[j]);

    // Q4_0 rounding: d = 1, q = min(15, trunc(x + 8.5))
    const float h4[8]   = {-8.0f, 0.5f, -0.5f, 7.5f, 6.5f, -7.5f, 0.49999997f, 7.0f};
    const uint8_t e4[8] = {0, 9, 8, 15, 15, 1, 9, 15}; // 0.49999997 + 8.5 rounds to 9
    memset(x, 0, sizeof x);
    memcpy(x, h4, sizeof h4);
    CHECK(spry_quantize_q4_0(x, b4, 32) == SPRY_OK);
    for (int j = 0; j < 8; j++)
        CHECK_MSG((b4[0].qs[j] & 15) == e4[j], "q4[%d]", j);
    for (int j = 8; j < 16; j++)
        CHECK(b4[0].qs[j] == 0x88);

    // a negative maximum gives a positive d and q = 0 there; a positive one, negative d
    memset(x, 0, sizeof x);
    x[3] = -6.0f, x[4] = 5.0f, x[32 + 7] = 4.0f, x[32 + 8] = -1.0f;
    CHECK(spry_quantize_q4_0(x, b4, 64) == SPRY_OK);
    CHECK(b4[0].d == spry_f32_to_f16(0.75f) && (b4[0].qs[3] & 15) == 0);
    CHECK(b4[1].d == spry_f32_to_f16(-0.5f) && (b4[1].qs[7] & 15) == 0);
    CHECK((b4[0].qs[4] & 15) == 15); // 5 * (1 / 0.75) + 8.5 = 15.17 -> 15
    CHECK((b4[1].qs[8] & 15) == 10); // -1 * (1 / -0.5) + 8.5 = 10.5 -> 10
}

// dequantize(quantize(x)) within the per-block bound, random data at several scales.
static void check_roundtrip(void) {
    const int64_t n = 64 * 32;
    float *x = xmalloc(n * sizeof(float)), *y = xmalloc(n * sizeof(float));
    uint8_t *q           = xmalloc((size_t)(n / 32) * 34);
    const float scales[] = {1e-4f, 1.0f, 50.0f};
    for (int s = 0; s < 3; s++) {
        spry_rng_fill_normal(x, n, 77, (uint64_t)s, 0.0f, scales[s]);
        CHECK(spry_quantize_q8_0(x, q, n) == SPRY_OK);
        CHECK(spry_dequantize_q8_0(q, y, n) == SPRY_OK);
        int bad = 0;
        for (int64_t b = 0; b < n / 32; b++) {
            float amax = 0;
            for (int j = 0; j < 32; j++)
                amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            float d = amax / 127, d16 = f16val(q + b * 34);
            double bound = 0.5 * d + 127.0 * fabs((double)d - d16) + 1e-6 * amax;
            for (int j = 0; j < 32; j++)
                bad += fabs((double)x[b * 32 + j] - y[b * 32 + j]) > bound;
        }
        CHECK_MSG(bad == 0, "Q8_0 round trip: %d elements beyond d/2 (scale %g)", bad, scales[s]);

        CHECK(spry_quantize_q4_0(x, q, n) == SPRY_OK);
        CHECK(spry_dequantize_q4_0(q, y, n) == SPRY_OK);
        bad = 0;
        for (int64_t b = 0; b < n / 32; b++) {
            float amax = 0, mx = 0;
            for (int j = 0; j < 32; j++)
                if (amax < fabsf(x[b * 32 + j]))
                    amax = fabsf(x[b * 32 + j]), mx = x[b * 32 + j];
            float d = mx / -8, d16 = f16val(q + b * 18);
            for (int j = 0; j < 32; j++) {
                double t     = (double)x[b * 32 + j] / d; // in [-8, 8]
                double e     = t >= 7.5 ? t - 7.0 : 0.5;  // 8 d clamps to 7 d
                double bound = e * fabs(d) + 8.0 * fabs((double)d - d16) + 1e-6 * amax;
                bad += fabs((double)x[b * 32 + j] - y[b * 32 + j]) > bound;
            }
        }
        CHECK_MSG(bad == 0, "Q4_0 round trip: %d elements beyond the bound (scale %g)", bad,
                  scales[s]);
    }
    free(x);
    free(y);
    free(q);
}

// ------------------------------------------------------------------------------------------------
// (b) GEMV kernels

typedef struct gemv_case {
    spry_wfmt fmt;
    int64_t M, K, N;
    float *x, *bias; // (M, K), (N)
    uint8_t *w;      // (N, row bytes)
    float *wv, *xv;  // the values the kernels multiply: (N, K), (M, K)
} gemv_case;

static void case_make(gemv_case *c, spry_wfmt fmt, int64_t M, int64_t K, int64_t N, uint64_t seed) {
    c->fmt = fmt, c->M = M, c->K = K, c->N = N;
    size_t rb = spry_wfmt_row_bytes(fmt, K);
    float *wf = xmalloc((size_t)(N * K) * sizeof(float));
    c->x      = xmalloc((size_t)(M * K) * sizeof(float));
    c->bias   = xmalloc((size_t)N * sizeof(float));
    c->w      = xmalloc((size_t)N * rb);
    c->wv     = xmalloc((size_t)(N * K) * sizeof(float));
    c->xv     = xmalloc((size_t)(M * K) * sizeof(float));
    spry_rng_fill_normal(wf, N * K, seed, 1, 0.0f, 0.05f);
    spry_rng_fill_normal(c->x, M * K, seed, 2, 0.0f, 1.0f);
    spry_rng_fill_normal(c->bias, N, seed, 3, 0.0f, 0.5f);
    SPRY_ASSERT(spry_quantize_rows(fmt, wf, c->w, N, K, 0) == SPRY_OK, "quantize");
    SPRY_ASSERT(spry_dequantize_rows(fmt, c->w, c->wv, N, K) == SPRY_OK, "dequantize");
    if (fmt == SPRY_WFMT_Q8_0 || fmt == SPRY_WFMT_Q4_0) { // activations rounded to Q8_0
        uint8_t *qx = xmalloc((size_t)(M * K / 32) * 34);
        SPRY_ASSERT(spry_quantize_q8_0(c->x, qx, M * K) == SPRY_OK, "quantize x");
        SPRY_ASSERT(spry_dequantize_q8_0(qx, c->xv, M * K) == SPRY_OK, "dequantize x");
        free(qx);
    } else {
        memcpy(c->xv, c->x, (size_t)(M * K) * sizeof(float));
    }
    free(wf);
}

static void case_free(gemv_case *c) {
    free(c->x), free(c->bias), free(c->w), free(c->wv), free(c->xv);
}

static float *run(const gemv_case *c, spry_quant_isa isa, bool bias, int n_threads) {
    float *y = xmalloc((size_t)(c->M * c->N) * sizeof(float));
    SPRY_ASSERT(spry_quant_set_isa(isa), "isa");
    spry_status s =
        spry_gemv(y, c->x, c->w, c->fmt, bias ? c->bias : NULL, c->M, c->K, c->N, n_threads);
    CHECK_MSG(s == SPRY_OK, "spry_gemv: %s", spry_last_error());
    spry_quant_set_isa(SPRY_QUANT_ISA_AUTO);
    return y;
}

// max over outputs of |a - b| / (sum |w x| + 1e-30), b either floats or (when bd) doubles.
static double worst(const gemv_case *c, const float *a, const float *b, const double *bd) {
    double w = 0;
    for (int64_t m = 0; m < c->M; m++)
        for (int64_t n = 0; n < c->N; n++) {
            double sa = 0;
            for (int64_t k = 0; k < c->K; k++)
                sa += fabs((double)c->wv[n * c->K + k] * c->xv[m * c->K + k]);
            double ref = bd ? bd[m * c->N + n] : (double)b[m * c->N + n];
            double e   = fabs((double)a[m * c->N + n] - ref) / (sa + 1e-30);
            if (!(e <= w))
                w = e; // NaN sticks
        }
    return w;
}

static void check_gemv_kernels(void) {
    const int64_t Ms[] = {1, 3, 8, 16}, Ks[] = {64, 768, 3072, 0};
    int n_cmp = 0;
    for (int f = 0; f < SPRY_WFMT_COUNT; f++) {
        double e_ref = 0, e_simd = 0; // worst relative errors seen
        spry_wfmt fmt = (spry_wfmt)f;
        bool block    = spry_wfmt_block(fmt) > 1;
        for (int ki = 0; ki < 4; ki++) {
            int64_t K = Ks[ki] ? Ks[ki] : (block ? 96 : 100); // odd block count / vector tail
            for (int mi = 0; mi < 4; mi++) {
                int64_t M = Ms[mi], N = 67;
                gemv_case c;
                case_make(&c, fmt, M, K, N, (uint64_t)(100 * f + 10 * ki + mi));
                bool bias  = (mi + ki) % 2;
                float *ref = run(&c, SPRY_QUANT_ISA_SCALAR, bias, 1);
                double *dd = xmalloc((size_t)(M * N) * sizeof(double));
                for (int64_t m = 0; m < M; m++)
                    for (int64_t n = 0; n < N; n++) {
                        double s = bias ? c.bias[n] : 0.0;
                        for (int64_t k = 0; k < K; k++)
                            s += (double)c.wv[n * K + k] * c.xv[m * K + k];
                        dd[m * N + n] = s;
                    }
                double e = worst(&c, ref, NULL, dd);
                e_ref    = e > e_ref ? e : e_ref;
                CHECK_MSG(e <= TOL, "%s scalar vs double: M=%lld K=%lld rel err %g",
                          spry_wfmt_name(fmt), (long long)M, (long long)K, e);
                for (int i = 1; i < N_ISA; i++) {
                    if (!spry_quant_isa_available(k_isas[i], fmt))
                        continue;
                    float *y = run(&c, k_isas[i], bias, 1);
                    e        = worst(&c, y, ref, NULL);
                    e_simd   = e > e_simd ? e : e_simd;
                    CHECK_MSG(e <= TOL, "%s %s vs scalar: M=%lld K=%lld rel err %g",
                              spry_wfmt_name(fmt), spry_quant_isa_name(k_isas[i]), (long long)M,
                              (long long)K, e);
                    n_cmp++;
                    free(y);
                }
                free(dd);
                free(ref);
                case_free(&c);
            }
        }
        printf("gemv %-4s: worst |err| / sum|w x|: scalar vs f64 %.2g, SIMD vs scalar %.2g\n",
               spry_wfmt_name(fmt), e_ref, e_simd);
    }
    printf("gemv: %d SIMD kernel runs within %g of the scalar reference (%s)\n", n_cmp, TOL,
           spry_quant_isa_name(spry_quant_isa_used(SPRY_WFMT_Q4_0)));
}

// Integer data with d = 1 in every block: the block dots, their sums and every f32 step are
// exact, so all instruction sets must give the exact integer.
static void check_gemv_exact(void) {
    const int64_t M = 5, K = 160, N = 33;
    float *x = xmalloc((size_t)(M * K) * sizeof(float)), *wf = xmalloc((size_t)(N * K) * 4);
    int64_t *want = xmalloc((size_t)(M * N) * sizeof(int64_t));
    for (int f = SPRY_WFMT_Q8_0; f <= SPRY_WFMT_Q4_0; f++) {
        bool q4 = f == SPRY_WFMT_Q4_0;
        for (int64_t i = 0; i < M * K; i++) {
            uint32_t r[4];
            spry_philox(5, 0, (uint64_t)i, r);
            x[i] = (i % 32 == 7) ? (r[1] & 1 ? 127.0f : -127.0f) : (float)((int)(r[0] % 255) - 127);
        }
        for (int64_t i = 0; i < N * K; i++) {
            uint32_t r[4];
            spry_philox(6, 0, (uint64_t)i, r);
            if (q4)
                wf[i] = i % 32 == 3 ? -8.0f : (float)((int)(r[0] % 16) - 8);
            else
                wf[i] = i % 32 == 11 ? -127.0f : (float)((int)(r[0] % 255) - 127);
        }
        uint8_t *w = xmalloc((size_t)N * spry_wfmt_row_bytes((spry_wfmt)f, K));
        CHECK(spry_quantize_rows((spry_wfmt)f, wf, w, N, K, 1) == SPRY_OK);
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                int64_t s = 0;
                for (int64_t k = 0; k < K; k++)
                    s += (int64_t)x[m * K + k] * (int64_t)wf[n * K + k];
                want[m * N + n] = s;
            }
        float *y = xmalloc((size_t)(M * N) * sizeof(float));
        for (int i = 0; i < N_ISA; i++) {
            if (!spry_quant_isa_available(k_isas[i], (spry_wfmt)f))
                continue;
            spry_quant_set_isa(k_isas[i]);
            CHECK(spry_gemv(y, x, w, (spry_wfmt)f, NULL, M, K, N, 2) == SPRY_OK);
            int bad = 0;
            for (int64_t j = 0; j < M * N; j++)
                bad += y[j] != (float)want[j];
            CHECK_MSG(bad == 0, "%s %s: %d outputs differ from the exact integer dot",
                      spry_wfmt_name((spry_wfmt)f), spry_quant_isa_name(k_isas[i]), bad);
        }
        spry_quant_set_isa(SPRY_QUANT_ISA_AUTO);
        free(y);
        free(w);
    }
    free(x);
    free(wf);
    free(want);
}

// (c) 1 and 2 threads: bit-identical.
static void check_threads(void) {
    for (int f = 0; f < SPRY_WFMT_COUNT; f++) {
        gemv_case c;
        case_make(&c, (spry_wfmt)f, 3, 768, 1001, 900 + (uint64_t)f);
        for (int i = 0; i < N_ISA; i++) {
            if (!spry_quant_isa_available(k_isas[i], (spry_wfmt)f))
                continue;
            float *y1 = run(&c, k_isas[i], true, 1), *y2 = run(&c, k_isas[i], true, 2);
            float *y3 = run(&c, k_isas[i], true, 3);
            CHECK_MSG(!memcmp(y1, y2, (size_t)(c.M * c.N) * sizeof(float)) &&
                          !memcmp(y1, y3, (size_t)(c.M * c.N) * sizeof(float)),
                      "%s %s: 1, 2 and 3 threads differ", spry_wfmt_name(c.fmt),
                      spry_quant_isa_name(k_isas[i]));
            free(y1), free(y2), free(y3);
        }
        case_free(&c);
    }
}

// ------------------------------------------------------------------------------------------------
// (d) arguments and helpers

static void check_args(void) {
    float x[64] = {0}, y[64];
    uint8_t q[4 * 34];
    memset(q, 0x5A, sizeof q);
    const int64_t bad_n[] = {0, -32, 31, 33, 48};
    for (int i = 0; i < 5; i++) {
        CHECK(spry_quantize_q8_0(x, q, bad_n[i]) == SPRY_ERR_ARG);
        CHECK(spry_quantize_q4_0(x, q, bad_n[i]) == SPRY_ERR_ARG);
        CHECK(spry_dequantize_q8_0(q, y, bad_n[i]) == SPRY_ERR_ARG);
        CHECK(spry_dequantize_q4_0(q, y, bad_n[i]) == SPRY_ERR_ARG);
    }
    CHECK(q[0] == 0x5A && q[sizeof q - 1] == 0x5A);
    CHECK(spry_quantize_q8_0(NULL, q, 32) == SPRY_ERR_ARG);
    CHECK(spry_quantize_q4_0(x, NULL, 32) == SPRY_ERR_ARG);
    CHECK(strstr(spry_last_error(), "spry_quantize_q4_0") != NULL);
    CHECK(spry_quantize_rows(SPRY_WFMT_Q8_0, x, q, 1, 48, 1) == SPRY_ERR_ARG);
    CHECK(spry_quantize_rows(SPRY_WFMT_COUNT, x, q, 1, 32, 1) == SPRY_ERR_ARG);
    CHECK(spry_quantize_rows(SPRY_WFMT_F32, x, q, -1, 32, 1) == SPRY_ERR_ARG);
    CHECK(spry_dequantize_rows(SPRY_WFMT_Q4_0, q, y, 1, 0) == SPRY_ERR_ARG);

    for (int i = 0; i < 64; i++)
        y[i] = 42.0f;
    CHECK(spry_gemv(y, x, q, SPRY_WFMT_Q8_0, NULL, 1, 48, 1, 1) == SPRY_ERR_ARG);
    CHECK(spry_gemv(y, x, q, SPRY_WFMT_Q4_0, NULL, 1, 0, 1, 1) == SPRY_ERR_ARG);
    CHECK(spry_gemv(y, x, q, SPRY_WFMT_F32, NULL, 0, 8, 1, 1) == SPRY_ERR_ARG);
    CHECK(spry_gemv(y, x, q, SPRY_WFMT_F32, NULL, 1, 8, 0, 1) == SPRY_ERR_ARG);
    CHECK(spry_gemv(y, x, q, (spry_wfmt)99, NULL, 1, 32, 1, 1) == SPRY_ERR_ARG);
    CHECK(spry_gemv(y, NULL, q, SPRY_WFMT_F32, NULL, 1, 8, 1, 1) == SPRY_ERR_ARG);
    CHECK(spry_gemv(NULL, x, q, SPRY_WFMT_F32, NULL, 1, 8, 1, 1) == SPRY_ERR_ARG);
    CHECK(strstr(spry_last_error(), "spry_gemv") != NULL);
    for (int i = 0; i < 64; i++)
        CHECK(y[i] == 42.0f);

    CHECK(spry_wfmt_row_bytes(SPRY_WFMT_F32, 768) == 3072);
    CHECK(spry_wfmt_row_bytes(SPRY_WFMT_BF16, 768) == 1536);
    CHECK(spry_wfmt_row_bytes(SPRY_WFMT_F16, 7) == 14);
    CHECK(spry_wfmt_row_bytes(SPRY_WFMT_Q8_0, 768) == 816);
    CHECK(spry_wfmt_row_bytes(SPRY_WFMT_Q4_0, 768) == 432);
    CHECK(spry_wfmt_row_bytes(SPRY_WFMT_Q4_0, 48) == 0);
    CHECK(spry_wfmt_row_bytes(SPRY_WFMT_F32, 0) == 0);
    CHECK(spry_wfmt_row_bytes(SPRY_WFMT_COUNT, 32) == 0);
    for (int f = 0; f < SPRY_WFMT_COUNT; f++) {
        CHECK(spry_wfmt_from_name(spry_wfmt_name((spry_wfmt)f)) == f);
        CHECK(spry_wfmt_from_ggml_type(spry_wfmt_ggml_type((spry_wfmt)f)) == f);
    }
    CHECK(spry_wfmt_from_name("Q4_0") == SPRY_WFMT_Q4_0 && spry_wfmt_from_name("q5_k") == -1);
    CHECK(spry_wfmt_ggml_type(SPRY_WFMT_Q8_0) == 8 && spry_wfmt_ggml_type(SPRY_WFMT_BF16) == 30);
    CHECK(spry_wfmt_from_ggml_type(12) == -1);
    CHECK(!spry_quant_set_isa((spry_quant_isa)7));
    CHECK(spry_quant_isa_used(SPRY_WFMT_F32) != SPRY_QUANT_ISA_AUTO);
}

int main(void) {
    const char *bd = getenv("SPRY_BUILD_DIR");
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/ref", bd ? bd : "build");
    snprintf(path, sizeof path, "%s/quant.safetensors", dir);
    printf("kernels: q8_0 %s, q4_0 %s, f32 %s\n",
           spry_quant_isa_name(spry_quant_isa_used(SPRY_WFMT_Q8_0)),
           spry_quant_isa_name(spry_quant_isa_used(SPRY_WFMT_Q4_0)),
           spry_quant_isa_name(spry_quant_isa_used(SPRY_WFMT_F32)));

    check_hand_vectors();
    check_roundtrip();
    check_args();
    check_gemv_exact();
    check_gemv_kernels();
    check_threads();

    int rc = ensure_reference(dir, path);
    if (rc == 0) {
        spry_safetensors *st;
        if (spry_safetensors_open(path, &st) != SPRY_OK) {
            fprintf(stderr, "%s\n", spry_last_error());
            return 1;
        }
        check_fixture(st);
        spry_safetensors_close(st);
    }
    int fail = check_exit();
    if (fail)
        return fail;
    return rc; // 77: everything else passed, but the bit-exactness fixture could not be made
}
