/*
 * qgemm.c -- Y (M, N) = X (M, K) @ W^T + b with Q8_0 / Q4_0 weights repacked into panels of 16
 * output columns (spry_qpack), for prompt processing and batched decode (see quant.h).
 *
 * spry_gemv streams one weight row at a time and is built for a handful of activation rows; a
 * prefill has hundreds, and there the integer dot products are the work. Here the 16 columns of a
 * panel sit side by side in one vector, so each vpdpbusd (AVX-512 VNNI) does 64 multiply-adds of
 * 16 columns x 4 k against one activation quad broadcast from memory, and a tile of 6 activation
 * rows x 2 panels keeps 12 integer and 12 float accumulators in registers (llama.cpp repacks its
 * Q4_0 for the same reason).
 *
 * The packed layout, panel p (columns 16p .. 16p + 15; the panel count rounded up to even), block
 * b (k = 32b .. 32b + 31), at byte (((p / 2) * nb + b) * 2 + p % 2) * block_bytes (the two panels
 * of a tile side by side per block, so a tile reads one stream):
 *   16 fp16 scales d_w of the columns (zero for columns past N), then
 *   Q8_0: byte g * 64 + c * 4 + j = w[16p + c][32b + 4g + j] + 128 (unsigned), g < 8;
 *   Q4_0: byte h * 64 + c * 4 + j = GGUF's qs[4h + j] of the column's block, h < 4: its low
 *         nibble is q = w + 8 at k = 4h + j, its high nibble q at k = 16 + 4h + j.
 * So block_bytes is 544 (Q8_0) or 288 (Q4_0): 16 times GGUF's 34 and 18 bytes.
 *
 * Arithmetic. X's rows are quantized to Q8_0 as in spry_gemv (spry_quantize_q8_0). vpdpbusd takes
 * unsigned weights times signed activations, so each block's integer dot starts from
 * corr = -128 * sum(x quants) (Q8_0) or -8 * sum(x quants) (Q4_0) and adds u * x quad by quad:
 * the exact integer sum w . x of the block. Then, per output element and block in k order,
 *   acc = fma((float)sumi, d_w * d_x, acc),   y = acc + bias,
 * one chain per element in every kernel (scalar and AVX-512) and for every M, tile and thread
 * count: the output is bit-identical across all of them (tests/test_qgemm.c). The order differs
 * from spry_gemv's lane-parallel sums, so the two agree to f32 rounding only.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "spry/dtype.h"
#include "spry/quant.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define QGEMM_X86 1
#else
#define QGEMM_X86 0
#endif

#define QK 32          // weights per block
#define COLS 16        // columns per panel
#define NR 2           // panels per tile (and the panel count's multiple)
#define MR 6           // activation rows per tile
#define PF_BLOCKS 4    // software prefetch distance, in blocks of a panel
#define PAR_MIN_OPS (1 << 20)

static size_t block_bytes(spry_wfmt fmt) { return fmt == SPRY_WFMT_Q8_0 ? 32 + 512 : 32 + 256; }

static int64_t n_panels(int64_t N) { return (N + COLS * NR - 1) / (COLS * NR) * NR; }

int64_t spry_qpack_size(spry_wfmt fmt, int64_t N, int64_t K) {
    if ((fmt != SPRY_WFMT_Q8_0 && fmt != SPRY_WFMT_Q4_0) || N < 1 || K < QK || K % QK)
        return 0;
    return n_panels(N) * (K / QK) * (int64_t)block_bytes(fmt);
}

spry_status spry_qpack(spry_wfmt fmt, const void *rows, int64_t N, int64_t K, void *packed,
                       int n_threads) {
    int64_t size = spry_qpack_size(fmt, N, K);
    if (size == 0 || !rows || !packed)
        return spry_errorf(SPRY_ERR_ARG,
                           "spry_qpack: format %s, N=%lld K=%lld: need Q8_0 or Q4_0, N >= 1, K a "
                           "positive multiple of 32 and non-NULL pointers",
                           spry_wfmt_name(fmt), (long long)N, (long long)K);
    const bool q4 = fmt == SPRY_WFMT_Q4_0;
    const int64_t nb = K / QK, P = n_panels(N);
    const size_t bb = block_bytes(fmt), rb = spry_wfmt_row_bytes(fmt, K);
    const int nt = n_threads > 0 ? n_threads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t p = 0; p < P; p++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *dst = (uint8_t *)packed + (size_t)(((p / NR) * nb + b) * NR + p % NR) * bb;
            memset(dst, 0, bb);
            for (int c = 0; c < COLS; c++) {
                const int64_t n = p * COLS + c;
                if (n >= N) { // a column past N: scale 0, quants of w = 0
                    if (!q4)
                        for (int g = 0; g < 8; g++)
                            memset(dst + 32 + g * 64 + c * 4, 128, 4);
                    continue;
                }
                const uint8_t *blk = (const uint8_t *)rows + (size_t)n * rb + (size_t)b * spry_wfmt_block_bytes(fmt);
                memcpy(dst + 2 * c, blk, 2); // the fp16 scale
                for (int g = 0; g < (q4 ? 4 : 8); g++)
                    for (int j = 0; j < 4; j++)
                        dst[32 + g * 64 + c * 4 + j] =
                            q4 ? blk[2 + 4 * g + j] : (uint8_t)((int8_t)blk[2 + 4 * g + j] + 128);
            }
        }
    return SPRY_OK;
}

// The activations: X quantized per row to Q8_0 blocks, their scales as f32 and the integer
// starting values of the blocks' dots.
typedef struct qact {
    int64_t nb;
    const spry_block_q8_0 *blk; // (M, nb)
    const float *d;             // (M, nb)
    const int32_t *corr;        // (M, nb) -128 (Q8_0) or -8 (Q4_0) times the sum of the quants
} qact;

// A tile: activation rows [m0, m0 + R) against panels p0, p0 + 1 (columns j0 = 16 p0 onward,
// those below N stored), y rows ldy apart; block b of panel p0 + t at wp + b * bstride + t * pstride.
#define QTILE_ARGS                                                                                 \
    const uint8_t *wp, size_t pstride, size_t bstride, const qact *a, int64_t m0, int R, float *y, \
        int64_t ldy, int64_t j0, int64_t N, const float *bias
typedef void (*qtile_fn)(QTILE_ARGS);

static inline int32_t quad_at(const int8_t *p) { // 4 activation quants as one 32-bit value
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

// ------------------------------------------------------------------------------------------------
// Scalar reference

static void tile_scalar(QTILE_ARGS, bool q4) {
    const int64_t nb = a->nb;
    for (int r = 0; r < R; r++)
        for (int t = 0; t < NR; t++)
            for (int c = 0; c < COLS; c++) {
                const int64_t j = j0 + t * COLS + c;
                if (j >= N)
                    continue;
                float acc = 0.0f;
                for (int64_t b = 0; b < nb; b++) {
                    const uint8_t *wb = wp + t * pstride + (size_t)b * bstride;
                    const int8_t *xq  = a->blk[(m0 + r) * nb + b].qs;
                    uint16_t h;
                    memcpy(&h, wb + 2 * c, 2);
                    int32_t sumi = a->corr[(m0 + r) * nb + b];
                    for (int g = 0; g < 8; g++)
                        for (int i = 0; i < 4; i++) {
                            int u = q4 ? (wb[32 + (g & 3) * 64 + c * 4 + i] >> (g < 4 ? 0 : 4)) & 15
                                       : wb[32 + g * 64 + c * 4 + i];
                            sumi += u * xq[4 * g + i];
                        }
                    acc = fmaf((float)sumi, spry_f16_to_f32(h) * a->d[(m0 + r) * nb + b], acc);
                }
                y[r * ldy + j] = bias ? acc + bias[j] : acc;
            }
}
static void tile_q8_0_scalar(QTILE_ARGS) { tile_scalar(wp, pstride, bstride, a, m0, R, y, ldy, j0, N, bias, false); }
static void tile_q4_0_scalar(QTILE_ARGS) { tile_scalar(wp, pstride, bstride, a, m0, R, y, ldy, j0, N, bias, true); }

#if QGEMM_X86
// ------------------------------------------------------------------------------------------------
// AVX-512 VNNI

#define AVX512_Q __attribute__((target("avx512f,avx512bw,avx512vnni,f16c,fma")))
#define AVX512_Q_INLINE                                                                            \
    __attribute__((target("avx512f,avx512bw,avx512vnni,f16c,fma"), always_inline)) static inline

// Rc activation rows x NR panels; Rc is a constant after inlining, so the accumulators live in
// registers (12 integer + 12 float at Rc = 6).
AVX512_Q_INLINE void tile_avx512(QTILE_ARGS, int Rc, bool q4) {
    (void)R;
    const int64_t nb = a->nb;
    __m512 fa[8][NR];
#pragma GCC unroll 8
    for (int r = 0; r < Rc; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NR; t++)
            fa[r][t] = _mm512_setzero_ps();
    const __m512i lo4 = _mm512_set1_epi8(0x0F);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wb = wp + (size_t)b * bstride;
        for (size_t o = 0; o < bstride; o += 64) // may run past W: prefetches never fault
            _mm_prefetch((const char *)(wb + PF_BLOCKS * bstride + o), _MM_HINT_T0);
        // with one or two rows the eight vpdpbusd of a block would be one latency chain per
        // accumulator: odd quads go to a second one, added after (integer sums: exact either way)
        const bool split = Rc <= 2;
        const int8_t *xq[8];
        __m512i ia[8][NR], ib[8][NR];
#pragma GCC unroll 8
        for (int r = 0; r < Rc; r++) {
            xq[r]     = a->blk[(m0 + r) * nb + b].qs;
            __m512i c = _mm512_set1_epi32(a->corr[(m0 + r) * nb + b]);
#pragma GCC unroll 4
            for (int t = 0; t < NR; t++)
                ia[r][t] = c, ib[r][t] = _mm512_setzero_si512();
        }
        if (q4) {
#pragma GCC unroll 4
            for (int h = 0; h < 4; h++)
#pragma GCC unroll 4
                for (int t = 0; t < NR; t++) {
                    __m512i v  = _mm512_loadu_si512(wb + t * pstride + 32 + h * 64);
                    __m512i lo = _mm512_and_si512(v, lo4);
                    __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
#pragma GCC unroll 8
                    for (int r = 0; r < Rc; r++) {
                        ia[r][t] = _mm512_dpbusd_epi32(ia[r][t], lo, _mm512_set1_epi32(quad_at(xq[r] + 4 * h)));
                        __m512i *acc = split ? &ib[r][t] : &ia[r][t];
                        *acc = _mm512_dpbusd_epi32(*acc, hi, _mm512_set1_epi32(quad_at(xq[r] + 16 + 4 * h)));
                    }
                }
        } else {
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++)
#pragma GCC unroll 4
                for (int t = 0; t < NR; t++) {
                    __m512i v = _mm512_loadu_si512(wb + t * pstride + 32 + g * 64);
#pragma GCC unroll 8
                    for (int r = 0; r < Rc; r++) {
                        __m512i *acc = split && (g & 1) ? &ib[r][t] : &ia[r][t];
                        *acc = _mm512_dpbusd_epi32(*acc, v, _mm512_set1_epi32(quad_at(xq[r] + 4 * g)));
                    }
                }
        }
        if (split)
#pragma GCC unroll 8
            for (int r = 0; r < Rc; r++)
#pragma GCC unroll 4
                for (int t = 0; t < NR; t++)
                    ia[r][t] = _mm512_add_epi32(ia[r][t], ib[r][t]);
        __m512 sw[NR];
#pragma GCC unroll 4
        for (int t = 0; t < NR; t++)
            sw[t] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wb + t * pstride)));
#pragma GCC unroll 8
        for (int r = 0; r < Rc; r++) {
            __m512 dx = _mm512_set1_ps(a->d[(m0 + r) * nb + b]);
#pragma GCC unroll 4
            for (int t = 0; t < NR; t++)
                fa[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[r][t]), _mm512_mul_ps(sw[t], dx), fa[r][t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NR; t++) {
        int64_t j = j0 + t * COLS, live = N - j;
        if (live <= 0)
            break;
        __mmask16 mk = live >= COLS ? (__mmask16)0xFFFF : (__mmask16)((1u << live) - 1);
        __m512 bv    = bias ? _mm512_maskz_loadu_ps(mk, bias + j) : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int r = 0; r < Rc; r++)
            _mm512_mask_storeu_ps(y + r * ldy + j, mk, bias ? _mm512_add_ps(fa[r][t], bv) : fa[r][t]);
    }
}

#define QTILE_CASE(Rc, q4)                                                                         \
    case Rc: tile_avx512(wp, pstride, bstride, a, m0, R, y, ldy, j0, N, bias, Rc <= MR ? Rc : 1, q4); break;
#define QTILE_CASES(q4)                                                                            \
    switch (R) {                                                                                   \
        QTILE_CASE(8, q4) QTILE_CASE(7, q4) QTILE_CASE(6, q4) QTILE_CASE(5, q4)                    \
        QTILE_CASE(4, q4) QTILE_CASE(3, q4) QTILE_CASE(2, q4)                                      \
    default: tile_avx512(wp, pstride, bstride, a, m0, R, y, ldy, j0, N, bias, 1, q4); break;            \
    }
AVX512_Q static void tile_q8_0_avx512(QTILE_ARGS) { QTILE_CASES(false) }
AVX512_Q static void tile_q4_0_avx512(QTILE_ARGS) { QTILE_CASES(true) }
#endif

// ------------------------------------------------------------------------------------------------
// Driver

int64_t spry_qgemm_scratch_size(int64_t M, int64_t K) {
    if (M < 1 || K < QK || K % QK)
        return 0;
    int64_t n = M * (K / QK);
    return n * (int64_t)sizeof(spry_block_q8_0) + n * 8 + 128;
}

#if QGEMM_X86
// Per block of b (nb): d = its scale widened (F16C, exact), corr = -off * (sum of its quants).
__attribute__((target("avx512f,avx512bw,f16c"))) static void block_sums_avx512(const spry_block_q8_0 *b, int64_t nb, int off, float *d, int32_t *corr) {
    for (int64_t i = 0; i < nb; i++) {
        __m512i q = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)b[i].qs));
        __m512i s = _mm512_madd_epi16(q, _mm512_set1_epi16(1)); // pairs summed to 16 int32
        corr[i]   = -off * _mm512_reduce_add_epi32(s);
        d[i]      = _cvtsh_ss(b[i].d);
    }
}
#endif

// Lays out the scratch and fills it from X, rows split over nt threads (each block is quantized
// on its own, so the bytes do not depend on the split).
static void act_prepare(qact *a, const float *x, int64_t M, int64_t K, bool q4, void *scratch, int nt) {
    const int64_t nb = K / QK, n = M * nb;
    uintptr_t p = ((uintptr_t)scratch + 63) & ~(uintptr_t)63;
    spry_block_q8_0 *blk = (spry_block_q8_0 *)p;
    float *d = (float *)((p + (uintptr_t)n * sizeof(spry_block_q8_0) + 63) & ~(uintptr_t)63);
    int32_t *corr = (int32_t *)(d + n);
    const int off = q4 ? 8 : 128;
#if QGEMM_X86
    const bool avx = spry_quant_isa_used(SPRY_WFMT_Q8_0) == SPRY_QUANT_ISA_AVX512;
#endif
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && M >= 8)
    for (int64_t m = 0; m < M; m++) {
        (void)spry_quantize_q8_0(x + m * K, blk + m * nb, K); // arguments checked by the caller
#if QGEMM_X86
        if (avx) {
            block_sums_avx512(blk + m * nb, nb, off, d + m * nb, corr + m * nb);
            continue;
        }
#endif
        for (int64_t i = m * nb; i < (m + 1) * nb; i++) {
            int s = 0;
            for (int j = 0; j < QK; j++)
                s += blk[i].qs[j];
            d[i]    = spry_f16_to_f32(blk[i].d);
            corr[i] = -off * s;
        }
    }
    *a = (qact){.nb = nb, .blk = blk, .d = d, .corr = corr};
}

spry_status spry_qgemm(float *y, const float *x, const void *packed, spry_wfmt fmt, const float *bias,
                       int64_t M, int64_t K, int64_t N, void *scratch, int n_threads) {
    return spry_qgemm_ex(y, x, packed, fmt, bias, M, K, N, scratch, n_threads, NULL, NULL);
}

spry_status spry_qgemm_ex(float *y, const float *x, const void *packed, spry_wfmt fmt, const float *bias,
                          int64_t M, int64_t K, int64_t N, void *scratch, int n_threads, spry_tile_fn epi,
                          void *user) {
    if (spry_qpack_size(fmt, N, K) == 0 || M < 1 || !y || !x || !packed)
        return spry_errorf(SPRY_ERR_ARG,
                           "spry_qgemm: format %s, M=%lld K=%lld N=%lld: need Q8_0 or Q4_0, M, N >= "
                           "1, K a positive multiple of 32 and non-NULL pointers",
                           spry_wfmt_name(fmt), (long long)M, (long long)K, (long long)N);
    const bool q4 = fmt == SPRY_WFMT_Q4_0;
    void *mem     = NULL;
    if (!scratch) {
        size_t sz = (size_t)spry_qgemm_scratch_size(M, K);
        scratch = mem = malloc(sz);
        if (!mem)
            return spry_errorf(SPRY_ERR_NOMEM, "spry_qgemm: cannot allocate %zu bytes of scratch", sz);
    }
    qtile_fn fn = q4 ? tile_q4_0_scalar : tile_q8_0_scalar;
#if QGEMM_X86
    if (spry_quant_isa_used(fmt) == SPRY_QUANT_ISA_AVX512)
        fn = q4 ? tile_q4_0_avx512 : tile_q8_0_avx512;
#endif
    const size_t bb = block_bytes(fmt), gstride = (size_t)(K / QK) * NR * bb; // bytes per tile of panels
    const int64_t G = n_panels(N) / NR; // tiles of NR panels
    int nt = n_threads > 0 ? n_threads : omp_get_max_threads();
    if (M * K * N < PAR_MIN_OPS)
        nt = 1;
    qact a;
    act_prepare(&a, x, M, K, q4, scratch, nt);
    if (nt > G)
        nt = (int)G;
    // guided: long runs of tiles first (each one contiguous stream), short ones at the end, so a
    // core slowed by a neighbour's work does not keep the other waiting at the join
#pragma omp parallel for schedule(guided) num_threads(nt)
    for (int64_t g = 0; g < G; g++) {
        for (int64_t m0 = 0; m0 < M; m0 += MR) {
            int R = M - m0 < MR ? (int)(M - m0) : MR;
            fn((const uint8_t *)packed + (size_t)g * gstride, bb, NR * bb, &a, m0, R, y + m0 * N, N,
               g * NR * COLS, N, bias);
        }
        if (epi) { // the tile's columns, every row (M x 32 floats, still in this core's cache)
            int64_t c0 = g * NR * COLS;
            epi(user, y, N, 0, M, c0, N - c0 < NR * COLS ? N - c0 : NR * COLS);
        }
    }
    free(mem);
    return SPRY_OK;
}
