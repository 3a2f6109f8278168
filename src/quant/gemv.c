/*
 * gemv.c -- the decode GEMV: Y (M, N) = X (M, K) @ W^T + b with W (N, K) in f32, bf16, f16, Q8_0
 * or Q4_0 (see quant.h), for the small M of token-by-token decoding.
 *
 * Decode is memory-bound: every weight byte is read once per token and used M times, so the
 * kernels stream W row by row and compute all M dot products of a row while it is in L1
 * (DeepSpeed-Inference's SBI-GeMM: "every weight byte is loaded once and reused for all batch
 * rows"; notes/inference_serving.md 4.4). Threads own contiguous ranges of output rows (no
 * sharing, no reduction across threads); a row's dot products never depend on the range, so Y
 * is bit-identical for every thread count.
 *
 * Tiles (gemv_tile_fn) run a range of weight rows against R <= GEMV_MR activation rows with the
 * row loop inside each instruction set's code and R a compile-time constant (M <= 8: one tile per
 * thread; larger M: tiles of GEMV_NT weight rows visit every chunk of 8 activation rows while
 * they are in cache; each row's bytes GEMV_PF_BYTES ahead are prefetched first). Per weight row
 * the kernels compute out[r] = W[n] . X[m0 + r]:
 *   scalar  the reference, in ggml's order: f32 sums in k order; for the block formats an
 *           integer dot per block, then sumf += sumi * (d_w * d_x) (Q8_0) or sumi * d_w * d_x
 *           (Q4_0), as ggml_vec_dot_q8_0_q8_0 / ggml_vec_dot_q4_0_q8_0 (generic).
 *   avx2    f32/bf16/f16: 8-lane FMAs, two accumulators per row; blocks: the sign trick
 *           (|w| * (x sign w) through vpmaddubsw + vpmaddwd) per 32-weight block.
 *   avx512  f32/bf16/f16: 16-lane FMAs (bf16 widened by a shift, f16 by vcvtph2ps), two
 *           accumulators per row; blocks: AVX-512 VNNI vpdpbusd on two blocks at once, two
 *           accumulators per row (four blocks per step: one FMA chain is the limit otherwise).
 *           Q8_0 feeds x + 128 as unsigned bytes (prepared once per call) and starts the
 *           accumulator at -128 * (sum of the lane's 4 w), once per weight pair; Q4_0 feeds the
 *           unsigned nibbles q = w + 8 directly and starts the accumulator at -8 * (sum of the
 *           4 x's of the lane), precomputed once per call with X's quantization, so each lane
 *           holds sum (q - 8) x.
 *   The SIMD kernels keep per-lane partial sums: lane ints are converted to f32 and multiplied
 *   by d_w * d_x, and the lanes are added at the end, so their f32 rounding differs from the
 *   scalar order (the integer parts are exact in both).
 * For Q8_0 / Q4_0 X is quantized per row with spry_quantize_q8_0 (the bit-exact ggml reference
 * rounding; ggml-cpu's own AVX activation quantizer rounds halves to even instead, which can
 * move a quant by one on exact ties) and unpacked into a scratch: quants (M, K), scales (M, nb)
 * and (M, nb, 8) repeated per lane, the Q4_0 lane offsets (M, nb, 8), and for Q8_0 the quants
 * plus 128 as unsigned bytes (M, K).
 */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "spry/dtype.h"
#include "spry/quant.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define GEMV_X86 1
#else
#define GEMV_X86 0
#endif

#define GEMV_MR 8                            // activation rows per kernel call
#define GEMV_NT 16                           // weight rows per tile when M > GEMV_MR
#define GEMV_PAR_MIN_BYTES ((size_t)1 << 16) // below this much weight, one thread
// Software prefetch distance of the SIMD tiles: each row's bytes this far ahead are requested
// before the row is computed (the hardware prefetcher alone left bf16 / f16 / Q8_0 at 0.8-0.85 of
// the read bandwidth on the 2-core Zen 5 VM; 8 KiB brought them to ~1.0). Prefetches never fault,
// so running past the end of W is harmless.
#define GEMV_PF_BYTES 8192
#define QK 32 // block size of Q8_0 / Q4_0
#define Q8_BYTES 34
#define Q4_BYTES 18

// The activations as the kernels read them.
typedef struct gemv_act {
    int64_t K, nb;       // nb = K / 32 for the block formats
    const float *x;      // (M, K) f32 activations
    const int8_t *q;     // (M, K) Q8_0 quants of x
    const uint8_t *qu;   // (M, K) the same plus 128, as unsigned bytes (Q8_0 only)
    const float *d;      // (M, nb) the fp16 scales of x's blocks, as f32
    const float *d8;     // (M, nb, 8) the same, each repeated over 8 lanes
    const int32_t *corr; // (M, nb, 8) -8 * (sum of quants 4l..4l+3 of the block), Q4_0 only
} gemv_act;

// A tile: weight rows [0, n_rows) from w (rb bytes apart) against activation rows [m0, m0 + R):
// y[r * ldy + n] = out[r] (+ bias[n]). The row loop sits inside each instruction set's code, with
// R a constant, so the per-row cost is the kernel's alone.
#define GEMV_TILE_ARGS                                                                             \
    const uint8_t *w, size_t rb, int64_t n_rows, const gemv_act *a, int64_t m0, int R, float *y,   \
        int64_t ldy, const float *bias
typedef void (*gemv_tile_fn)(GEMV_TILE_ARGS);

#define GEMV_TILE_CASE(Rc, ROW)                                                                    \
    case Rc:                                                                                       \
        for (int64_t n_ = 0; n_ < n_rows; n_++) {                                                  \
            float out_[GEMV_MR];                                                                   \
            uintptr_t pf_ = (uintptr_t)(w + (size_t)n_ * rb) + GEMV_PF_BYTES; /* may pass W */     \
            for (size_t o_ = 0; o_ < rb; o_ += 64)                                                 \
                _mm_prefetch((const char *)(pf_ + o_), _MM_HINT_T0);                               \
            ROW(w + (size_t)n_ * rb, Rc, out_);                                                    \
            for (int r_ = 0; r_ < Rc; r_++)                                                        \
                y[r_ * ldy + n_] = bias ? out_[r_] + bias[n_] : out_[r_];                          \
        }                                                                                          \
        break;
#define GEMV_TILE_BODY(ROW)                                                                        \
    switch (R) {                                                                                   \
        GEMV_TILE_CASE(1, ROW)                                                                     \
        GEMV_TILE_CASE(2, ROW)                                                                     \
        GEMV_TILE_CASE(3, ROW)                                                                     \
        GEMV_TILE_CASE(4, ROW)                                                                     \
        GEMV_TILE_CASE(5, ROW)                                                                     \
        GEMV_TILE_CASE(6, ROW)                                                                     \
        GEMV_TILE_CASE(7, ROW)                                                                     \
        GEMV_TILE_CASE(8, ROW)                                                                     \
    default:                                                                                       \
        break;                                                                                     \
    }

static inline float half_at(const uint8_t *p) { // fp16 at a possibly unaligned address
    uint16_t h;
    memcpy(&h, p, 2);
    return spry_f16_to_f32(h);
}

// ------------------------------------------------------------------------------------------------
// Scalar reference kernels: out[r] = W row w . X row (m0 + r) for r < R (1 <= R <= GEMV_MR)

static void row_f32_scalar(const uint8_t *w, const gemv_act *a, int64_t m0, int R, float *out) {
    const float *wf = (const float *)w;
    for (int r = 0; r < R; r++) {
        const float *x = a->x + (m0 + r) * a->K;
        float s        = 0.0f;
        for (int64_t k = 0; k < a->K; k++)
            s += wf[k] * x[k];
        out[r] = s;
    }
}

static void row_bf16_scalar(const uint8_t *w, const gemv_act *a, int64_t m0, int R, float *out) {
    const uint16_t *wh = (const uint16_t *)w;
    for (int r = 0; r < R; r++) {
        const float *x = a->x + (m0 + r) * a->K;
        float s        = 0.0f;
        for (int64_t k = 0; k < a->K; k++)
            s += spry_bf16_to_f32(wh[k]) * x[k];
        out[r] = s;
    }
}

static void row_f16_scalar(const uint8_t *w, const gemv_act *a, int64_t m0, int R, float *out) {
    const uint16_t *wh = (const uint16_t *)w;
    for (int r = 0; r < R; r++) {
        const float *x = a->x + (m0 + r) * a->K;
        float s        = 0.0f;
        for (int64_t k = 0; k < a->K; k++)
            s += spry_f16_to_f32(wh[k]) * x[k];
        out[r] = s;
    }
}

static void row_q8_0_scalar(const uint8_t *w, const gemv_act *a, int64_t m0, int R, float *out) {
    for (int r = 0; r < R; r++) {
        const int8_t *xq = a->q + (m0 + r) * a->K;
        const float *xd  = a->d + (m0 + r) * a->nb;
        float s          = 0.0f;
        for (int64_t b = 0; b < a->nb; b++) {
            const uint8_t *blk = w + b * Q8_BYTES;
            const int8_t *wq   = (const int8_t *)(blk + 2);
            int sumi           = 0;
            for (int j = 0; j < QK; j++)
                sumi += wq[j] * xq[b * QK + j];
            s += sumi * (half_at(blk) * xd[b]);
        }
        out[r] = s;
    }
}

static void row_q4_0_scalar(const uint8_t *w, const gemv_act *a, int64_t m0, int R, float *out) {
    for (int r = 0; r < R; r++) {
        const int8_t *xq = a->q + (m0 + r) * a->K;
        const float *xd  = a->d + (m0 + r) * a->nb;
        float s          = 0.0f;
        for (int64_t b = 0; b < a->nb; b++) {
            const uint8_t *blk = w + b * Q4_BYTES;
            const int8_t *xb   = xq + b * QK;
            int sumi0 = 0, sumi1 = 0;
            for (int j = 0; j < QK / 2; j++) {
                sumi0 += ((blk[2 + j] & 0x0F) - 8) * xb[j];
                sumi1 += ((blk[2 + j] >> 4) - 8) * xb[j + QK / 2];
            }
            s += (sumi0 + sumi1) * half_at(blk) * xd[b];
        }
        out[r] = s;
    }
}

#define SCALAR_TILE(name, fn)                                                                      \
    static void name(GEMV_TILE_ARGS) {                                                             \
        for (int64_t n = 0; n < n_rows; n++) {                                                     \
            float out[GEMV_MR];                                                                    \
            fn(w + (size_t)n * rb, a, m0, R, out);                                                 \
            for (int r = 0; r < R; r++)                                                            \
                y[r * ldy + n] = bias ? out[r] + bias[n] : out[r];                                 \
        }                                                                                          \
    }
SCALAR_TILE(tile_f32_scalar, row_f32_scalar)
SCALAR_TILE(tile_bf16_scalar, row_bf16_scalar)
SCALAR_TILE(tile_f16_scalar, row_f16_scalar)
SCALAR_TILE(tile_q8_0_scalar, row_q8_0_scalar)
SCALAR_TILE(tile_q4_0_scalar, row_q4_0_scalar)

#if GEMV_X86
// ------------------------------------------------------------------------------------------------
// AVX-512 kernels

#define AVX512_F __attribute__((target("avx512f,f16c,fma")))
#define AVX512_Q __attribute__((target("avx512f,avx512bw,avx512vnni,f16c,fma")))
#define AVX512_F_INLINE __attribute__((target("avx512f,f16c,fma"), always_inline)) static inline
#define AVX512_Q_INLINE                                                                            \
    __attribute__((target("avx512f,avx512bw,avx512vnni,f16c,fma"), always_inline)) static inline

// 16 weights from element k of a row in format fmt (a compile-time constant after inlining).
AVX512_F_INLINE __m512 load16_avx512(const uint8_t *w, int64_t k, spry_wfmt fmt) {
    if (fmt == SPRY_WFMT_F32)
        return _mm512_loadu_ps((const float *)w + k);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k));
    if (fmt == SPRY_WFMT_F16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); // bf16
}

AVX512_F_INLINE void rows_float_avx512(const uint8_t *w, const gemv_act *a, int64_t m0, int R,
                                       float *out, spry_wfmt fmt) {
    const int64_t K = a->K;
    const float *x  = a->x + m0 * K;
    __m512 acc0[GEMV_MR], acc1[GEMV_MR];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        acc0[r] = acc1[r] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
        __m512 w0 = load16_avx512(w, k, fmt), w1 = load16_avx512(w, k + 16, fmt);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            acc0[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + r * K + k), acc0[r]);
            acc1[r] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + r * K + k + 16), acc1[r]);
        }
    }
    if (k + 16 <= K) {
        __m512 w0 = load16_avx512(w, k, fmt);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
            acc0[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + r * K + k), acc0[r]);
        k += 16;
    }
    if (k < K) { // the last K % 16 weights through a zero-padded copy, activations masked
        int n           = (int)(K - k);
        uint8_t pad[64] = {0};
        size_t es       = fmt == SPRY_WFMT_F32 ? 4 : 2;
        memcpy(pad, w + (size_t)k * es, (size_t)n * es);
        __m512 wt   = load16_avx512(pad, 0, fmt);
        __mmask16 m = (__mmask16)((1u << n) - 1);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
            acc1[r] = _mm512_fmadd_ps(wt, _mm512_maskz_loadu_ps(m, x + r * K + k), acc1[r]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r]));
}

// Two fp16 scales (at p0, p1) as 16 lanes: 8 x d0, then 8 x d1.
AVX512_Q_INLINE __m512 scales2_avx512(const uint8_t *p0, const uint8_t *p1) {
    uint16_t h0, h1;
    memcpy(&h0, p0, 2);
    memcpy(&h1, p1, 2);
    __m128 f          = _mm_cvtph_ps(_mm_cvtsi32_si128((int)((uint32_t)h0 | ((uint32_t)h1 << 16))));
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(f));
}

// Two Q8_0 blocks (b, b + 1) of the weight row against R activation rows, into acc[r].
// vpdpbusd multiplies unsigned by signed bytes: it takes x + 128 (unsigned, prepared once per
// call) times w, starting from -128 * (sum of the lane's 4 w), computed once per weight pair, so
// each lane holds sum x w exactly -- the same integers as the sign trick, one instruction less
// per row.
AVX512_Q_INLINE void q8_0_pair_avx512(const uint8_t *w, const gemv_act *a, int64_t m0, int R,
                                      int64_t b, __m512 *acc) {
    const int64_t K = a->K, nb = a->nb;
    const uint8_t *b0 = w + b * Q8_BYTES, *b1 = b0 + Q8_BYTES;
    const __m512i zero = _mm512_setzero_si512();
    __m512i wv =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 2))),
                           _mm256_loadu_si256((const __m256i *)(b1 + 2)), 1);
    __m512 sw     = scales2_avx512(b0, b1);
    __m512i start = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, _mm512_set1_epi8((char)0x80), wv));
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const int64_t m = m0 + r;
        __m512i xu      = _mm512_loadu_si512(a->qu + m * K + b * QK);
        __m512i dp      = _mm512_dpbusd_epi32(start, xu, wv);
        __m512 s        = _mm512_mul_ps(sw, _mm512_loadu_ps(a->d8 + (m * nb + b) * 8));
        acc[r]          = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), s, acc[r]);
    }
}

// The same for two Q4_0 blocks: unsigned nibbles q = w + 8, the accumulator of vpdpbusd starts
// at the precomputed -8 * (sum of the lane's 4 activations).
AVX512_Q_INLINE void q4_0_pair_avx512(const uint8_t *w, const gemv_act *a, int64_t m0, int R,
                                      int64_t b, __m512 *acc) {
    const int64_t K = a->K, nb = a->nb;
    const uint8_t *b0 = w + b * Q4_BYTES, *b1 = b0 + Q4_BYTES;
    // 128-bit lanes [qs0, qs0, qs1, qs1], lanes 1 and 3 shifted right by 4, masked: the nibbles
    // in element order, block b's elements 0..15, 16..31, then block b + 1's
    const __m512i dup   = _mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3);
    const __m512i shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
    __m256i q01 =
        _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(b0 + 2))),
                                _mm_loadu_si128((const __m128i *)(b1 + 2)), 1);
    __m512i v   = _mm512_permutexvar_epi64(dup, _mm512_castsi256_si512(q01));
    __m512i nib = _mm512_and_si512(_mm512_srlv_epi64(v, shift), _mm512_set1_epi8(0x0F));
    __m512 sw   = scales2_avx512(b0, b1);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const int64_t m = m0 + r;
        __m512i xv      = _mm512_loadu_si512(a->q + m * K + b * QK);
        __m512i c       = _mm512_loadu_si512(a->corr + (m * nb + b) * 8);
        __m512i dp      = _mm512_dpbusd_epi32(c, nib, xv); // sum (q - 8) x per lane
        __m512 s        = _mm512_mul_ps(sw, _mm512_loadu_ps(a->d8 + (m * nb + b) * 8));
        acc[r]          = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), s, acc[r]);
    }
}

// A last odd block, in the low half of the vectors (zeros above).
AVX512_Q_INLINE void q_last_avx512(const uint8_t *w, const gemv_act *a, int64_t m0, int R,
                                   int64_t b, bool q4, __m512 *acc) {
    const int64_t K = a->K, nb = a->nb;
    const uint8_t *b0  = w + b * (q4 ? Q4_BYTES : Q8_BYTES);
    const __m512i zero = _mm512_setzero_si512();
    __m512 sw          = _mm512_set1_ps(half_at(b0));
    __m512i wv;
    if (q4) {
        __m128i qs = _mm_loadu_si128((const __m128i *)(b0 + 2));
        __m256i q2 = _mm256_inserti128_si256(_mm256_castsi128_si256(qs), _mm_srli_epi16(qs, 4), 1);
        wv         = _mm512_inserti64x4(zero, _mm256_and_si256(q2, _mm256_set1_epi8(0x0F)), 0);
    } else {
        wv = _mm512_inserti64x4(zero, _mm256_loadu_si256((const __m256i *)(b0 + 2)), 0);
    }
    __m512i aw    = _mm512_abs_epi8(wv);
    __mmask64 neg = _mm512_movepi8_mask(wv);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const int64_t m = m0 + r;
        __m512i xv      = _mm512_maskz_loadu_epi8(0xffffffffull, a->q + m * K + b * QK);
        __m512i dp;
        if (q4)
            dp = _mm512_dpbusd_epi32(_mm512_maskz_loadu_epi32(0xff, a->corr + (m * nb + b) * 8), wv,
                                     xv);
        else
            dp = _mm512_dpbusd_epi32(zero, aw, _mm512_mask_sub_epi8(xv, neg, zero, xv));
        __m512 s = _mm512_mul_ps(sw, _mm512_maskz_loadu_ps(0xff, a->d8 + (m * nb + b) * 8));
        acc[r]   = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), s, acc[r]);
    }
}

// Four blocks per step into two accumulators per row (the FMA latency chain is the limit with
// one), then a last pair and a last single block.
AVX512_Q_INLINE void rows_q_avx512(const uint8_t *w, const gemv_act *a, int64_t m0, int R,
                                   float *out, bool q4) {
    const int64_t nb = a->nb;
    __m512 acc0[GEMV_MR], acc1[GEMV_MR];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        acc0[r] = acc1[r] = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4) {
        if (q4) {
            q4_0_pair_avx512(w, a, m0, R, b, acc0);
            q4_0_pair_avx512(w, a, m0, R, b + 2, acc1);
        } else {
            q8_0_pair_avx512(w, a, m0, R, b, acc0);
            q8_0_pair_avx512(w, a, m0, R, b + 2, acc1);
        }
    }
    if (b + 2 <= nb) {
        if (q4)
            q4_0_pair_avx512(w, a, m0, R, b, acc0);
        else
            q8_0_pair_avx512(w, a, m0, R, b, acc0);
        b += 2;
    }
    if (b < nb)
        q_last_avx512(w, a, m0, R, b, q4, acc1);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r]));
}

#define ROW_F32_512(wr, Rc, o) rows_float_avx512(wr, a, m0, Rc, o, SPRY_WFMT_F32)
#define ROW_BF16_512(wr, Rc, o) rows_float_avx512(wr, a, m0, Rc, o, SPRY_WFMT_BF16)
#define ROW_F16_512(wr, Rc, o) rows_float_avx512(wr, a, m0, Rc, o, SPRY_WFMT_F16)
#define ROW_Q8_512(wr, Rc, o) rows_q_avx512(wr, a, m0, Rc, o, false)
#define ROW_Q4_512(wr, Rc, o) rows_q_avx512(wr, a, m0, Rc, o, true)

// clang-format off
AVX512_F static void tile_f32_avx512(GEMV_TILE_ARGS) { GEMV_TILE_BODY(ROW_F32_512) }
AVX512_F static void tile_bf16_avx512(GEMV_TILE_ARGS) { GEMV_TILE_BODY(ROW_BF16_512) }
AVX512_F static void tile_f16_avx512(GEMV_TILE_ARGS) { GEMV_TILE_BODY(ROW_F16_512) }
AVX512_Q static void tile_q8_0_avx512(GEMV_TILE_ARGS) { GEMV_TILE_BODY(ROW_Q8_512) }
AVX512_Q static void tile_q4_0_avx512(GEMV_TILE_ARGS) { GEMV_TILE_BODY(ROW_Q4_512) }
// clang-format on

// ------------------------------------------------------------------------------------------------
// AVX2 kernels (16 ymm registers: at most 4 rows of two accumulators at a time)

#define AVX2_MR 4
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) static inline

AVX2_INLINE __m256 load8_avx2(const uint8_t *w, int64_t k, spry_wfmt fmt) {
    if (fmt == SPRY_WFMT_F32)
        return _mm256_loadu_ps((const float *)w + k);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + k));
    if (fmt == SPRY_WFMT_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AVX2_INLINE float hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s        = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s        = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2_INLINE void rows_float_avx2(const uint8_t *w, const gemv_act *a, int64_t m0, int R, float *out,
                                 spry_wfmt fmt) {
    const int64_t K = a->K;
    const float *x  = a->x + m0 * K;
    __m256 acc0[AVX2_MR], acc1[AVX2_MR];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        acc0[r] = acc1[r] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m256 w0 = load8_avx2(w, k, fmt), w1 = load8_avx2(w, k + 8, fmt);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            acc0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + r * K + k), acc0[r]);
            acc1[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + r * K + k + 8), acc1[r]);
        }
    }
    if (k + 8 <= K) {
        __m256 w0 = load8_avx2(w, k, fmt);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            acc0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + r * K + k), acc0[r]);
        k += 8;
    }
    if (k < K) { // zero-padded copies of the last K % 8 weights and activations
        int n           = (int)(K - k);
        uint8_t pad[32] = {0};
        size_t es       = fmt == SPRY_WFMT_F32 ? 4 : 2;
        memcpy(pad, w + (size_t)k * es, (size_t)n * es);
        __m256 wt = load8_avx2(pad, 0, fmt);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            float xp[8] = {0};
            memcpy(xp, x + r * K + k, (size_t)n * sizeof(float));
            acc1[r] = _mm256_fmadd_ps(wt, _mm256_loadu_ps(xp), acc1[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        out[r] = hsum_avx2(_mm256_add_ps(acc0[r], acc1[r]));
}

AVX2_INLINE void rows_q8_0_avx2(const uint8_t *w, const gemv_act *a, int64_t m0, int R,
                                float *out) {
    const int64_t K = a->K, nb = a->nb;
    const int8_t *xq   = a->q + m0 * K;
    const float *d8    = a->d8 + m0 * nb * 8;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[AVX2_MR];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * Q8_BYTES;
        __m256i wv         = _mm256_loadu_si256((const __m256i *)(blk + 2));
        __m256i aw         = _mm256_sign_epi8(wv, wv); // |w| as u8
        __m256 sw          = _mm256_set1_ps(half_at(blk));
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + r * K + b * QK));
            // |w| * (x sign w): pairs of products fit int16 (2 * 128 * 127 < 32768)
            __m256i p16 = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, wv));
            __m256i p32 = _mm256_madd_epi16(p16, ones);
            __m256 s    = _mm256_mul_ps(sw, _mm256_loadu_ps(d8 + r * nb * 8 + b * 8));
            acc[r]      = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), s, acc[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        out[r] = hsum_avx2(acc[r]);
}

AVX2_INLINE void rows_q4_0_avx2(const uint8_t *w, const gemv_act *a, int64_t m0, int R,
                                float *out) {
    const int64_t K = a->K, nb = a->nb;
    const int8_t *xq   = a->q + m0 * K;
    const float *d8    = a->d8 + m0 * nb * 8;
    const int32_t *cr  = a->corr + m0 * nb * 8;
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i lo4  = _mm256_set1_epi8(0x0F);
    __m256 acc[AVX2_MR];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * Q4_BYTES;
        __m128i qs         = _mm_loadu_si128((const __m128i *)(blk + 2));
        __m256i q2  = _mm256_inserti128_si256(_mm256_castsi128_si256(qs), _mm_srli_epi16(qs, 4), 1);
        __m256i nib = _mm256_and_si256(q2, lo4); // elements 0..15, then 16..31
        __m256 sw   = _mm256_set1_ps(half_at(blk));
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const int64_t o = (r * nb + b) * 8;
            __m256i xv      = _mm256_loadu_si256((const __m256i *)(xq + r * K + b * QK));
            __m256i p32     = _mm256_madd_epi16(_mm256_maddubs_epi16(nib, xv), ones);
            p32             = _mm256_add_epi32(p32, _mm256_loadu_si256((const __m256i *)(cr + o)));
            __m256 s        = _mm256_mul_ps(sw, _mm256_loadu_ps(d8 + o));
            acc[r]          = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), s, acc[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        out[r] = hsum_avx2(acc[r]);
}

// R > 4 runs as 4 + (R - 4): the weight row is then read a second time, from L1. Rc is a
// constant after inlining, so only one branch remains.
#define AVX2_SPLIT(ROWC, wr, Rc, o)                                                                \
    do {                                                                                           \
        if ((Rc) <= AVX2_MR) {                                                                     \
            ROWC(wr, m0, (Rc) <= AVX2_MR ? (Rc) : AVX2_MR, o);                                     \
        } else {                                                                                   \
            ROWC(wr, m0, AVX2_MR, o);                                                              \
            ROWC(wr, m0 + AVX2_MR, (Rc) > AVX2_MR ? (Rc)-AVX2_MR : 1, (o) + AVX2_MR);              \
        }                                                                                          \
    } while (0)
#define ROWC_F32_256(wr, m, n, o) rows_float_avx2(wr, a, m, n, o, SPRY_WFMT_F32)
#define ROWC_BF16_256(wr, m, n, o) rows_float_avx2(wr, a, m, n, o, SPRY_WFMT_BF16)
#define ROWC_F16_256(wr, m, n, o) rows_float_avx2(wr, a, m, n, o, SPRY_WFMT_F16)
#define ROWC_Q8_256(wr, m, n, o) rows_q8_0_avx2(wr, a, m, n, o)
#define ROWC_Q4_256(wr, m, n, o) rows_q4_0_avx2(wr, a, m, n, o)
#define ROW_F32_256(wr, Rc, o) AVX2_SPLIT(ROWC_F32_256, wr, Rc, o)
#define ROW_BF16_256(wr, Rc, o) AVX2_SPLIT(ROWC_BF16_256, wr, Rc, o)
#define ROW_F16_256(wr, Rc, o) AVX2_SPLIT(ROWC_F16_256, wr, Rc, o)
#define ROW_Q8_256(wr, Rc, o) AVX2_SPLIT(ROWC_Q8_256, wr, Rc, o)
#define ROW_Q4_256(wr, Rc, o) AVX2_SPLIT(ROWC_Q4_256, wr, Rc, o)

// clang-format off
AVX2 static void tile_f32_avx2(GEMV_TILE_ARGS) { GEMV_TILE_BODY(ROW_F32_256) }
AVX2 static void tile_bf16_avx2(GEMV_TILE_ARGS) { GEMV_TILE_BODY(ROW_BF16_256) }
AVX2 static void tile_f16_avx2(GEMV_TILE_ARGS) { GEMV_TILE_BODY(ROW_F16_256) }
AVX2 static void tile_q8_0_avx2(GEMV_TILE_ARGS) { GEMV_TILE_BODY(ROW_Q8_256) }
AVX2 static void tile_q4_0_avx2(GEMV_TILE_ARGS) { GEMV_TILE_BODY(ROW_Q4_256) }
// clang-format on
#endif // GEMV_X86

// ------------------------------------------------------------------------------------------------
// Kernel table: [isa][fmt], NULL where a build has no such kernel

static const gemv_tile_fn k_tile_fns[SPRY_QUANT_ISA_AVX512 + 1][SPRY_WFMT_COUNT] = {
    [SPRY_QUANT_ISA_SCALAR] = {tile_f32_scalar, tile_bf16_scalar, tile_f16_scalar, tile_q8_0_scalar,
                               tile_q4_0_scalar},
#if GEMV_X86
    [SPRY_QUANT_ISA_AVX2]   = {tile_f32_avx2, tile_bf16_avx2, tile_f16_avx2, tile_q8_0_avx2,
                               tile_q4_0_avx2},
    [SPRY_QUANT_ISA_AVX512] = {tile_f32_avx512, tile_bf16_avx512, tile_f16_avx512, tile_q8_0_avx512,
                               tile_q4_0_avx512},
#endif
};

// ------------------------------------------------------------------------------------------------
// Driver

// Quantizes X (M, K) to Q8_0 and unpacks it into one allocation returned in *mem (free() it).
static spry_status act_prepare(gemv_act *a, const float *x, int64_t M, bool q4, void **mem) {
    const int64_t K = a->K, nb = a->nb, n_blk = M * nb;
    size_t sz_blk = (size_t)n_blk * Q8_BYTES, sz_q = (size_t)(M * K);
    size_t sz_d = (size_t)n_blk * sizeof(float), sz_8 = (size_t)n_blk * 8 * sizeof(float);
    size_t sz_c = q4 ? (size_t)n_blk * 8 * sizeof(int32_t) : 0, sz_u = q4 ? 0 : sz_q;
#define ROUND64(s) (((s) + 63) & ~(size_t)63)
    size_t total = ROUND64(sz_q) + ROUND64(sz_d) + ROUND64(sz_8) + ROUND64(sz_c) + ROUND64(sz_blk) + ROUND64(sz_u);
    uint8_t *p   = aligned_alloc(64, total);
    if (!p)
        return spry_errorf(SPRY_ERR_NOMEM,
                           "spry_gemv: cannot allocate %zu bytes of scratch for "
                           "M=%lld K=%lld",
                           total, (long long)M, (long long)K);
    int8_t *q            = (int8_t *)p;
    float *d             = (float *)(p + ROUND64(sz_q));
    float *d8            = (float *)((uint8_t *)d + ROUND64(sz_d));
    int32_t *c           = (int32_t *)((uint8_t *)d8 + ROUND64(sz_8));
    spry_block_q8_0 *blk = (spry_block_q8_0 *)((uint8_t *)c + ROUND64(sz_c));
    uint8_t *qu          = (uint8_t *)blk + ROUND64(sz_blk);
#undef ROUND64
    spry_status st = spry_quantize_q8_0(x, blk, M * K); // rows are contiguous: one long row
    if (st != SPRY_OK) {
        free(p);
        return st;
    }
    for (int64_t i = 0; i < n_blk; i++) {
        memcpy(q + i * QK, blk[i].qs, QK);
        if (!q4)
            for (int j = 0; j < QK; j++)
                qu[i * QK + j] = (uint8_t)(blk[i].qs[j] + 128);
        d[i] = spry_f16_to_f32(blk[i].d);
        for (int l = 0; l < 8; l++)
            d8[i * 8 + l] = d[i];
        if (q4)
            for (int l = 0; l < 8; l++) {
                const int8_t *g = blk[i].qs + 4 * l;
                c[i * 8 + l]    = -8 * (g[0] + g[1] + g[2] + g[3]);
            }
    }
    a->q = q, a->qu = q4 ? NULL : qu, a->d = d, a->d8 = d8, a->corr = q4 ? c : NULL;
    *mem = p;
    return SPRY_OK;
}

// Output rows [n0, n1) of Y. With M <= GEMV_MR one tile covers the range; otherwise tiles of
// GEMV_NT weight rows go through every chunk of GEMV_MR activation rows while they sit in cache.
static void gemv_range(gemv_tile_fn fn, const uint8_t *w, size_t rb, const gemv_act *a,
                       const float *bias, float *y, int64_t M, int64_t N, int64_t n0, int64_t n1) {
    int64_t nt = M <= GEMV_MR ? n1 - n0 : GEMV_NT;
    for (int64_t t0 = n0; t0 < n1; t0 += nt) {
        int64_t cnt = n1 - t0 < nt ? n1 - t0 : nt;
        for (int64_t m0 = 0; m0 < M; m0 += GEMV_MR) {
            int R = M - m0 < GEMV_MR ? (int)(M - m0) : GEMV_MR;
            fn(w + (size_t)t0 * rb, rb, cnt, a, m0, R, y + m0 * N + t0, N, bias ? bias + t0 : NULL);
        }
    }
}

spry_status spry_gemv(float *y, const float *x, const void *w, spry_wfmt fmt, const float *bias,
                      int64_t M, int64_t K, int64_t N, int n_threads) {
    if ((unsigned)fmt >= SPRY_WFMT_COUNT)
        return spry_errorf(SPRY_ERR_ARG, "spry_gemv: bad weight format %d", (int)fmt);
    if (!y || !x || !w)
        return spry_errorf(SPRY_ERR_ARG, "spry_gemv: NULL pointer");
    const size_t rb = spry_wfmt_row_bytes(fmt, K);
    if (M < 1 || N < 1 || rb == 0)
        return spry_errorf(SPRY_ERR_ARG,
                           "spry_gemv: M=%lld K=%lld N=%lld: need M, N >= 1 and K >= 1 a multiple "
                           "of %lld for %s",
                           (long long)M, (long long)K, (long long)N,
                           (long long)spry_wfmt_block(fmt), spry_wfmt_name(fmt));
    spry_quant_isa isa = spry_quant_isa_used(fmt);
    gemv_tile_fn fn    = k_tile_fns[isa][fmt];
    if (!fn)
        fn = k_tile_fns[SPRY_QUANT_ISA_SCALAR][fmt];

    gemv_act a = {.K = K, .nb = K / QK, .x = x};
    void *mem  = NULL;
    if (fmt == SPRY_WFMT_Q8_0 || fmt == SPRY_WFMT_Q4_0)
        SPRY_TRY(act_prepare(&a, x, M, fmt == SPRY_WFMT_Q4_0, &mem));

    int64_t nt = n_threads > 0 ? n_threads : omp_get_max_threads();
    if ((size_t)N * rb < GEMV_PAR_MIN_BYTES)
        nt = 1;
    if (nt > N)
        nt = N;
    if (nt <= 1) {
        gemv_range(fn, w, rb, &a, bias, y, M, N, 0, N);
    } else {
#pragma omp parallel num_threads((int)nt)
        {
            int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
            gemv_range(fn, w, rb, &a, bias, y, M, N, N * t / T, N * (t + 1) / T);
        }
    }
    free(mem);
    return SPRY_OK;
}
