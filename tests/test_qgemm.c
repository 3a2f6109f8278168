// ctest-label: unit
/*
 * test_qgemm.c -- the packed Q8_0 / Q4_0 GEMM (spry_qpack, spry_qgemm in quant.h).
 *
 * (a) The packed layout (two panels side by side per block), byte by byte, against GGUF's blocks: scales, Q8_0 quants + 128 in
 *     16-column x 4-k groups, Q4_0 bytes in the same groups (low nibble k, high nibble k + 16),
 *     columns past N with scale 0.
 * (b) Against a double-precision reference: y = sum_k w_k x_k + b over the values the kernel
 *     multiplies (dequantized weights, X rounded to Q8_0 and dequantized), within
 *     1e-5 * sum_k |w_k x_k| + 1e-30 (the integer block dots are exact; only the f32 fma chain
 *     over blocks rounds). Integer data whose blocks all have d = 1 must give the exact integers.
 *     N = 1, 32, 37, 67, 100 (panel tails), K = 32, 64, 96, 768, M = 1 .. 40.
 * (c) Bit-identity: the scalar and AVX-512 VNNI kernels, 1 and 2 threads, the whole M at once
 *     and row by row or in chunks of 5 (the engine's batch invariance rests on this).
 * (d) Against spry_gemv (the decode kernel) on the same rows: the same values to f32 rounding.
 * (e) Bad arguments give SPRY_ERR_ARG and leave Y untouched.
 * (f) spry_qgemm_ex's epilogue sees every element of Y exactly once, after its final value.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "spry/dtype.h"
#include "spry/quant.h"
#include "spry/rng.h"

static uint64_t g_state = 0x9E3779B97F4A7C15ull;
static float frand(void) { // uniform in [-1, 1)
    g_state = g_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_state >> 40) * (1.0 / (1 << 24)) * 2.0 - 1.0);
}

// Rows (N, K) of fmt from random f32 data with per-row magnitudes over two decades.
static uint8_t *random_rows(spry_wfmt fmt, int64_t N, int64_t K, float *wf) {
    for (int64_t n = 0; n < N; n++) {
        float s = powf(10.0f, frand());
        for (int64_t k = 0; k < K; k++)
            wf[n * K + k] = s * frand();
    }
    uint8_t *rows = xmalloc(spry_wfmt_row_bytes(fmt, K) * (size_t)N);
    if (spry_quantize_rows(fmt, wf, rows, N, K, 1) != SPRY_OK)
        abort();
    return rows;
}

static uint8_t *packed_of(spry_wfmt fmt, const uint8_t *rows, int64_t N, int64_t K) {
    int64_t sz = spry_qpack_size(fmt, N, K);
    CHECK(sz > 0);
    uint8_t *p = aligned_alloc(64, ((size_t)sz + 63) / 64 * 64);
    if (!p)
        abort();
    CHECK(spry_qpack(fmt, rows, N, K, p, 0) == SPRY_OK);
    return p;
}

static void check_layout(spry_wfmt fmt) {
    const int64_t N = 37, K = 64, nb = K / 32;
    float *wf      = xmalloc(sizeof(float) * N * K);
    uint8_t *rows  = random_rows(fmt, N, K, wf);
    uint8_t *pk    = packed_of(fmt, rows, N, K);
    const bool q4  = fmt == SPRY_WFMT_Q4_0;
    const size_t bb = q4 ? 288 : 544, rb = spry_wfmt_row_bytes(fmt, K);
    CHECK(spry_qpack_size(fmt, N, K) == 4 * nb * (int64_t)bb); // 37 columns: 3 panels, rounded to 4
    int bad = 0;
    for (int64_t p = 0; p < 4; p++)
        for (int64_t b = 0; b < nb; b++)
            for (int c = 0; c < 16; c++) {
                const uint8_t *blk = pk + (((p / 2) * nb + b) * 2 + p % 2) * bb;
                int64_t n          = p * 16 + c;
                uint16_t d;
                memcpy(&d, blk + 2 * c, 2);
                if (n >= N) {
                    bad += d != 0;
                    continue;
                }
                const uint8_t *src = rows + n * rb + b * (q4 ? 18 : 34);
                bad += memcmp(&d, src, 2) != 0;
                for (int k = 0; k < 32; k++) {
                    int g = k / 4, j = k % 4, got, want;
                    if (q4) {
                        got  = (blk[32 + (g & 3) * 64 + c * 4 + j] >> (g < 4 ? 0 : 4)) & 15;
                        want = k < 16 ? src[2 + k] & 15 : src[2 + k - 16] >> 4;
                    } else {
                        got  = blk[32 + g * 64 + c * 4 + j];
                        want = (int8_t)src[2 + k] + 128;
                    }
                    bad += got != want;
                }
            }
    CHECK_MSG(bad == 0, "%s: %d packed values differ from the GGUF blocks", spry_wfmt_name(fmt), bad);
    free(wf), free(rows), free(pk);
}

// The values the kernel multiplies, in double: W dequantized, X through Q8_0 and back.
static void reference(spry_wfmt fmt, const uint8_t *rows, const float *x, const float *bias, int64_t M,
                      int64_t K, int64_t N, double *yref, double *mag) {
    float *wd = xmalloc(sizeof(float) * N * K), *xd = xmalloc(sizeof(float) * M * K);
    spry_block_q8_0 *xb = xmalloc(sizeof(spry_block_q8_0) * M * K / 32);
    if (spry_dequantize_rows(fmt, rows, wd, N, K) || spry_quantize_q8_0(x, xb, M * K) ||
        spry_dequantize_q8_0(xb, xd, M * K))
        abort();
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = bias ? bias[n] : 0, a = 0;
            for (int64_t k = 0; k < K; k++) {
                double t = (double)wd[n * K + k] * xd[m * K + k];
                s += t, a += fabs(t);
            }
            yref[m * N + n] = s, mag[m * N + n] = a;
        }
    free(wd), free(xd), free(xb);
}

static int count_far(const float *y, const double *yref, const double *mag, int64_t n, double tol) {
    int far = 0;
    for (int64_t i = 0; i < n; i++)
        far += !(fabs(y[i] - yref[i]) <= tol * mag[i] + 1e-30);
    return far;
}

// An epilogue that counts how often it sees each element (seen, M x N) and squares the element:
// every element exactly once, and afterwards y_ex = y^2.
typedef struct epi_log {
    int    *seen;
    int64_t M, N;
    int     bad; // blocks outside Y or with the wrong row stride
} epi_log;

static void epi_square(void *user, float *y, int64_t ldy, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
    epi_log *L = user;
    if (ldy != L->N || r0 < 0 || nr < 1 || r0 + nr > L->M || c0 < 0 || nc < 1 || c0 + nc > L->N) {
#pragma omp atomic
        L->bad++;
        return;
    }
    for (int64_t r = r0; r < r0 + nr; r++)
        for (int64_t c = c0; c < c0 + nc; c++) {
            y[r * ldy + c] *= y[r * ldy + c];
#pragma omp atomic
            L->seen[r * L->N + c]++;
        }
}

static void check_case(spry_wfmt fmt, int64_t M, int64_t K, int64_t N, bool with_bias) {
    const char *fn = spry_wfmt_name(fmt);
    float *wf = xmalloc(sizeof(float) * N * K), *x = xmalloc(sizeof(float) * M * K);
    float *bias = xmalloc(sizeof(float) * N);
    for (int64_t i = 0; i < M * K; i++)
        x[i] = frand() * (1 + (float)(i % 7));
    for (int64_t n = 0; n < N; n++)
        bias[n] = frand();
    uint8_t *rows = random_rows(fmt, N, K, wf);
    uint8_t *pk   = packed_of(fmt, rows, N, K);
    const float *b = with_bias ? bias : NULL;
    double *yref = xmalloc(sizeof(double) * M * N), *mag = xmalloc(sizeof(double) * M * N);
    reference(fmt, rows, x, b, M, K, N, yref, mag);

    float *y[7];
    for (int i = 0; i < 7; i++)
        y[i] = xmalloc(sizeof(float) * M * N);
    void *scratch = xmalloc((size_t)spry_qgemm_scratch_size(M, K));
    // 0: best kernel, 2 threads, all rows; 1: one thread; 2: row by row; 3: chunks of 5
    CHECK(spry_qgemm(y[0], x, pk, fmt, b, M, K, N, scratch, 2) == SPRY_OK);
    CHECK(spry_qgemm(y[1], x, pk, fmt, b, M, K, N, NULL, 1) == SPRY_OK);
    for (int64_t m = 0; m < M; m++)
        CHECK(spry_qgemm(y[2] + m * N, x + m * K, pk, fmt, b, 1, K, N, NULL, 2) == SPRY_OK);
    for (int64_t m = 0; m < M; m += 5) {
        int64_t r = M - m < 5 ? M - m : 5;
        CHECK(spry_qgemm(y[3] + m * N, x + m * K, pk, fmt, b, r, K, N, NULL, 2) == SPRY_OK);
    }
    // 4: the scalar kernel; 5: spry_gemv on the rows
    CHECK(spry_quant_set_isa(SPRY_QUANT_ISA_SCALAR));
    CHECK(spry_qgemm(y[4], x, pk, fmt, b, M, K, N, NULL, 2) == SPRY_OK);
    CHECK(spry_quant_set_isa(SPRY_QUANT_ISA_AUTO));
    CHECK(spry_gemv(y[5], x, rows, fmt, b, M, K, N, 2) == SPRY_OK);
    // 6: with an epilogue, which must see every element once, after its final value
    epi_log lg = {xmalloc(sizeof(int) * (size_t)(M * N)), M, N, 0};
    memset(lg.seen, 0, sizeof(int) * (size_t)(M * N));
    CHECK(spry_qgemm_ex(y[6], x, pk, fmt, b, M, K, N, NULL, 2, epi_square, &lg) == SPRY_OK);
    int once = lg.bad == 0, squared = 1;
    for (int64_t i = 0; i < M * N; i++)
        once = once && lg.seen[i] == 1, squared = squared && y[6][i] == y[0][i] * y[0][i];
    CHECK_MSG(once && squared, "%s M=%lld K=%lld N=%lld: the epilogue saw an element %s", fn, (long long)M,
              (long long)K, (long long)N, once ? "before its final value" : "not exactly once");
    free(lg.seen);
    const size_t bytes = sizeof(float) * (size_t)(M * N);
    CHECK_MSG(memcmp(y[0], y[1], bytes) == 0, "%s M=%lld K=%lld N=%lld: 1 and 2 threads differ", fn,
              (long long)M, (long long)K, (long long)N);
    CHECK_MSG(memcmp(y[0], y[2], bytes) == 0, "%s M=%lld K=%lld N=%lld: row by row differs", fn,
              (long long)M, (long long)K, (long long)N);
    CHECK_MSG(memcmp(y[0], y[3], bytes) == 0, "%s M=%lld K=%lld N=%lld: chunks of 5 differ", fn,
              (long long)M, (long long)K, (long long)N);
    CHECK_MSG(memcmp(y[0], y[4], bytes) == 0, "%s M=%lld K=%lld N=%lld: %s and scalar kernels differ",
              fn, (long long)M, (long long)K, (long long)N,
              spry_quant_isa_name(spry_quant_isa_used(fmt)));
    int far_q = count_far(y[0], yref, mag, M * N, 1e-5), far_g = count_far(y[5], yref, mag, M * N, 1e-5);
    CHECK_MSG(far_q == 0, "%s M=%lld K=%lld N=%lld: %d of %lld outputs beyond the tolerance", fn,
              (long long)M, (long long)K, (long long)N, far_q, (long long)(M * N));
    CHECK_MSG(far_g == 0, "%s: gemv beyond the tolerance on %d outputs", fn, far_g);
    for (int i = 0; i < 7; i++)
        free(y[i]);
    free(scratch), free(wf), free(x), free(bias), free(rows), free(pk), free(yref), free(mag);
}

// Integer data, every block holding its maximum magnitude (127 for Q8_0, -8 for Q4_0), so every
// scale is exactly 1 and every output an exact integer.
static void check_exact(spry_wfmt fmt) {
    const int64_t M = 9, K = 96, N = 40;
    const bool q4 = fmt == SPRY_WFMT_Q4_0;
    float *wf = xmalloc(sizeof(float) * N * K), *x = xmalloc(sizeof(float) * M * K);
    for (int64_t i = 0; i < N * K; i++) {
        g_state = g_state * 6364136223846793005ull + 1;
        int r   = (int)((g_state >> 33) % (q4 ? 15 : 255)); // Q4_0: -7..7, Q8_0: -127..127
        wf[i]   = (float)(r - (q4 ? 7 : 127));
        if (i % 32 == 0) // the block's extreme: Q4_0 d = -8 / -8, Q8_0 d = 127 / 127
            wf[i] = q4 ? -8.0f : 127.0f;
    }
    for (int64_t i = 0; i < M * K; i++) {
        g_state = g_state * 6364136223846793005ull + 1;
        x[i]    = i % 32 == 5 ? -127.0f : (float)((int)((g_state >> 33) % 255) - 127);
    }
    uint8_t *rows = xmalloc(spry_wfmt_row_bytes(fmt, K) * N);
    CHECK(spry_quantize_rows(fmt, wf, rows, N, K, 1) == SPRY_OK);
    float *wd = xmalloc(sizeof(float) * N * K);
    CHECK(spry_dequantize_rows(fmt, rows, wd, N, K) == SPRY_OK);
    uint8_t *pk = packed_of(fmt, rows, N, K);
    float *y    = xmalloc(sizeof(float) * M * N);
    CHECK(spry_qgemm(y, x, pk, fmt, NULL, M, K, N, NULL, 2) == SPRY_OK);
    int bad = 0;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++)
                s += (double)wd[n * K + k] * x[m * K + k];
            bad += (double)y[m * N + n] != s;
        }
    CHECK_MSG(bad == 0, "%s: %d integer outputs not exact", spry_wfmt_name(fmt), bad);
    free(wf), free(x), free(rows), free(wd), free(pk), free(y);
}

static void check_args(void) {
    float x[64] = {0}, y[4] = {1, 2, 3, 4}, keep[4] = {1, 2, 3, 4};
    uint8_t w[2 * 544] = {0};
    CHECK(spry_qpack_size(SPRY_WFMT_F32, 2, 64) == 0);
    CHECK(spry_qpack_size(SPRY_WFMT_Q8_0, 2, 48) == 0);
    CHECK(spry_qpack_size(SPRY_WFMT_Q8_0, 0, 64) == 0);
    CHECK(spry_qpack(SPRY_WFMT_BF16, w, 2, 64, w, 1) == SPRY_ERR_ARG);
    CHECK(spry_qpack(SPRY_WFMT_Q8_0, NULL, 2, 64, w, 1) == SPRY_ERR_ARG);
    CHECK(spry_qgemm(y, x, w, SPRY_WFMT_F16, NULL, 1, 64, 2, NULL, 1) == SPRY_ERR_ARG);
    CHECK(spry_qgemm(y, x, w, SPRY_WFMT_Q8_0, NULL, 0, 64, 2, NULL, 1) == SPRY_ERR_ARG);
    CHECK(spry_qgemm(y, x, w, SPRY_WFMT_Q4_0, NULL, 1, 40, 2, NULL, 1) == SPRY_ERR_ARG);
    CHECK(spry_qgemm(y, NULL, w, SPRY_WFMT_Q4_0, NULL, 1, 64, 2, NULL, 1) == SPRY_ERR_ARG);
    CHECK(strstr(spry_last_error(), "spry_qgemm") != NULL);
    CHECK(memcmp(y, keep, sizeof y) == 0);
    CHECK(spry_qgemm_scratch_size(3, 50) == 0);
}

int main(void) {
    printf("kernels: q8_0 %s, q4_0 %s\n", spry_quant_isa_name(spry_quant_isa_used(SPRY_WFMT_Q8_0)),
           spry_quant_isa_name(spry_quant_isa_used(SPRY_WFMT_Q4_0)));
    const spry_wfmt fmts[] = {SPRY_WFMT_Q8_0, SPRY_WFMT_Q4_0};
    const int64_t shapes[][2] = {{1, 32}, {32, 64}, {37, 96}, {67, 768}, {100, 64}}; // (N, K)
    const int64_t Ms[]        = {1, 2, 5, 6, 7, 13, 40};
    for (int f = 0; f < 2; f++) {
        check_layout(fmts[f]);
        check_exact(fmts[f]);
        for (int s = 0; s < 5; s++)
            for (int i = 0; i < 7; i++)
                check_case(fmts[f], Ms[i], shapes[s][1], shapes[s][0], (i + s) % 2 == 0);
    }
    check_args();
    return check_exit();
}
