/*
 * attention.c -- fused multi-head scaled dot-product attention over a fused QKV tensor
 * (torch.nn.functional.scaled_dot_product_attention semantics; BLOOM's ALiBi from Press et al.,
 * "Train Short, Test Long", and HF transformers' build_alibi_tensor).
 *
 *   qkv (B, T, 3C) -> out (B, T, C), D = C / H, scale = 1/sqrt(D)
 *   S_ij = scale * q_i . k_j + slope_h * (j - i)   (ALiBi; HF adds slope*j: same softmax)
 *   P = softmax_j(S) over j <= i when causal;  o_i = sum_j P_ij v_j
 * Backward, from the probabilities P kept by the forward:
 *   dP_ij = do_i . v_j;  dS_ij = scale P_ij (dP_ij - sum_k P_ik dP_ik)
 *   dq_i += sum_j dS_ij k_j;  dk_j += sum_i dS_ij q_i;  dv_j += sum_i P_ij do_i
 * Work splits over (b, h) pairs, which own disjoint slices of every output: no races, and the
 * per-pair arithmetic is the same for any thread count.
 *
 * Per pair, every product is a small GEMM C (=|+=) A B with B row-major and A addressed through
 * two strides, so the A^T products need no copy (attn_gemm_fn: AVX-512 micro-tiles of 6 rows x
 * 64 columns in 24 zmm accumulators, or a portable loop; picked at run time with the row
 * kernels). K (forward) or V (backward) is first transposed into a (D, Tp) scratch, Tp = T
 * rounded up to 16. Rows go in blocks of ATTN_MR; a causal block's columns stop at its last
 * row's diagonal (rounded up to 16 where the columns are the GEMM's vectors).
 *   forward, per query block: S = Q K^T into an (ATTN_MR, Tp) scratch, softmax in place (rows
 *   copied out to P), O = P V.
 *   backward, per chunk of ATTN_QB query rows: per block dP = dO V^T into a (QB, Tp) scratch,
 *   dS in place, dQ += dS K; then, per block of the key rows the chunk reaches, dK += dS^T Q and
 *   dV += P^T dO (dS and P read down their columns through A's strides).
 * saved[0] P (B, H, T, T), only when the node is recorded (else NULL): row i holds [0, jn) of its
 * block, zero past the causal diagonal; the columns beyond are never written nor read. Written
 * with streaming stores, prefetched by the backward.
 * saved[1] the scratch, (n_threads, attn_scratch_floats), allocated by the constructor.
 * saved[2] F32 (B, T) token positions for ALiBi (p.pos as floats), or NULL for 0..T-1. With
 * positions the bias is slope * (pos_j - pos_i): exact integers in f32, so positions 0..T-1 give
 * the same bits as the NULL path.
 * saved[3] I32 (B) key lengths L_b (p.key_len copied), or NULL for T: row b's keys stop at L_b
 * (j < min(i + 1, L_b) when causal), which every loop bound below takes as its T for the key
 * axis; P, dS and the gradients of keys past L_b are never touched (zero contribution).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "fastmath.h"
#include "op_def.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define ATTN_X86 1
#else
#define ATTN_X86 0
#endif

#define ATTN_MR 6              // rows of a micro-tile and of a query / key block
#define ATTN_NR 64             // columns of a micro-tile
#define ATTN_QB (ATTN_MR * 43) // backward query chunk (258 rows), a multiple of ATTN_MR
#ifndef ATTN_PF_BLOCKS
#define ATTN_PF_BLOCKS 2
#endif

// Scratch floats per thread: the transposed K or V, then the backward's dS chunk.
static int64_t attn_scratch_floats(int64_t T, int64_t D) {
    int64_t qb = (T + ATTN_MR - 1) / ATTN_MR * ATTN_MR;
    return (D + (qb < ATTN_QB ? qb : ATTN_QB)) * ((T + 15) / 16 * 16);
}

float spry_alibi_slope(int64_t h, int64_t n_head) {
    // closest power of two p <= n_head: slopes 2^(-8 i / p), i = 1..p; the remaining heads take
    // the odd entries of the sequence for 2p
    int64_t p = 1;
    while (p * 2 <= n_head) p *= 2;
    if (h < p) return (float)pow(2.0, -8.0 * (double)(h + 1) / (double)p);
    int64_t k = h - p; // 0-based among extras
    return (float)pow(2.0, -8.0 * (double)(2 * k + 1) / (double)(2 * p));
}

spry_tensor *spry_attention(spry_ctx *ctx, spry_tensor *qkv, spry_attn_params p) {
    if (ctx->status) return spry_op_placeholder();
    SPRY_ASSERT(qkv->ndim == 3 && qkv->shape[2] % (3 * p.n_head) == 0 && spry_tensor_is_contiguous(qkv),
                "attention: qkv must be contiguous (B, T, 3*C) with C divisible by n_head=%lld",
                (long long)p.n_head);
    int64_t      B = qkv->shape[0], T = qkv->shape[1], C = qkv->shape[2] / 3;
    spry_tensor *out   = spry_new(ctx, SPRY_DTYPE_F32, 3, SPRY_SHAPE(B, T, C));
    // P only when backward will run (the node is recorded)
    bool         keep  = ctx->grad_enabled && (qkv->flags & SPRY_TENSOR_REQUIRES_GRAD);
    spry_tensor *probs =
        keep ? spry_new(ctx, SPRY_DTYPE_F32, 4, SPRY_SHAPE(B, p.n_head, T, T)) : NULL;
    int64_t      nth   = ctx->n_threads > 1 ? ctx->n_threads : 1;
    spry_tensor *scr   = spry_new(ctx, SPRY_DTYPE_F32, 2,
                                  SPRY_SHAPE(nth, attn_scratch_floats(T, C / p.n_head)));
    spry_tensor *posf  = NULL;
    if (p.alibi && p.pos) {
        SPRY_ASSERT(p.pos->dtype == SPRY_DTYPE_I32 && p.pos->ndim == 2 && p.pos->shape[0] == B &&
                        p.pos->shape[1] == T,
                    "attention: pos must be I32 (B, T): %s", spry_shapes2(qkv, p.pos));
        posf = spry_new(ctx, SPRY_DTYPE_F32, 2, SPRY_SHAPE(B, T));
        if (ctx->status) return out;
        for (int64_t i = 0; i < B * T; i++) {
            SPRY_ASSERT(i % T == 0 || I32(p.pos)[i] > I32(p.pos)[i - 1],
                        "attention: positions must increase along each row");
            F32(posf)[i] = (float)I32(p.pos)[i];
        }
    }
    spry_tensor *klen = NULL;
    if (p.key_len) {
        SPRY_ASSERT(p.key_len->dtype == SPRY_DTYPE_I32 && p.key_len->ndim == 1 && p.key_len->shape[0] == B,
                    "attention: key_len must be I32 (B): %s", spry_shapes2(qkv, p.key_len));
        klen = spry_new(ctx, SPRY_DTYPE_I32, 1, &B);
        if (ctx->status) return out;
        for (int64_t b = 0; b < B; b++) {
            SPRY_ASSERT(I32(p.key_len)[b] >= 1 && I32(p.key_len)[b] <= T,
                        "attention: key_len[%lld] = %d outside [1, %lld]", (long long)b,
                        I32(p.key_len)[b], (long long)T);
            I32(klen)[b] = I32(p.key_len)[b];
        }
    }
    if (ctx->status) return out;
    spry_op_apply(ctx, SPRY_OP_ATTENTION, &qkv, 1, out,
                  (int64_t[SPRY_MAX_PARAMS]){p.n_head, p.causal, p.alibi, p.layout}, NULL,
                  (spry_tensor *[SPRY_MAX_SAVED]){probs, scr, posf, klen});
    return out;
}

typedef struct attn_geom {
    int64_t B, T, C, H, D;
    int64_t q_off, k_off, v_off; // offsets of head 0's q/k/v inside a token's 3C row
    int64_t head_step;           // distance between heads inside the row
    bool    causal, alibi;
    float   scale;
} attn_geom;

static attn_geom geom(const spry_node *n) {
    const spry_tensor *x = n->src[0];
    attn_geom g = {.B = x->shape[0], .T = x->shape[1], .C = x->shape[2] / 3, .H = n->ip[0],
                   .causal = n->ip[1] != 0, .alibi = n->ip[2] != 0};
    g.D     = g.C / g.H;
    g.scale = 1.0f / sqrtf((float)g.D);
    if (n->ip[3] == SPRY_QKV_BLOOM) {
        g.q_off = 0, g.k_off = g.D, g.v_off = 2 * g.D, g.head_step = 3 * g.D;
    } else {
        g.q_off = 0, g.k_off = g.C, g.v_off = 2 * g.C, g.head_step = g.D;
    }
    return g;
}

// C[r * ldc + c] (= or, with acc, +=) sum_k A[r * sr + k * sk] B[k * ldb + c], r < M, c < N.
typedef void (*attn_gemm_fn)(int64_t M, int64_t N, int64_t K, const float *A, int64_t sr,
                             int64_t sk, const float *B, int64_t ldb, float *C, int64_t ldc,
                             bool acc);
// dst[d * ld + j] = src[j * row + d] for d < D, j < T; zeros in [T, Tp), Tp = T rounded up to 16.
typedef void (*attn_transpose_fn)(const float *src, int64_t row, int64_t T, int64_t D, float *dst,
                                  int64_t ld);
// Rows i0 .. i0+m-1 of S (scratch rows s + r lds, valid to jn rounded up to 16), jend =
// min(i + 1, T) (causal) or T, T the row's key length: s = scale * s + slope * (j - i) for j < jend, softmax over those; s becomes P
// with zeros in [jend, jn rounded up), and, unless p is NULL, P's rows p + i ldp get [0, jn).
// pos (T floats) or NULL: the ALiBi term is slope * (pos[j] - pos[i]) instead.
typedef void (*attn_softmax_fn)(float *s, int64_t lds, float *p, int64_t ldp, int64_t i0, int m,
                                bool causal, int64_t T, int64_t jn, float scale, float slope,
                                const float *pos);
// dP row in place -> dS row: scale * P (dP - sum_k P dP) for j < jend, zeros up to jn rounded
// up to 16 (p is read below jend only).
typedef void (*attn_dsoftmax_fn)(const float *p, float *ds, int64_t jend, int64_t jn, float scale);

static int64_t attn_up16(int64_t n) { return (n + 15) / 16 * 16; }

// Blocks of 4 rows x 32 columns, the accumulators a small array the compiler keeps in vector
// registers.
__attribute__((target_clones("avx2", "default")))
static void gemm_portable(int64_t M, int64_t N, int64_t K, const float *A, int64_t sr, int64_t sk,
                          const float *B, int64_t ldb, float *C, int64_t ldc, bool acc) {
    enum { RB = 4, CB = 32 };
    for (int64_t r0 = 0; r0 < M; r0 += RB) {
        int64_t m = M - r0 < RB ? M - r0 : RB;
        for (int64_t c0 = 0; c0 < N; c0 += CB) {
            int64_t nn = N - c0 < CB ? N - c0 : CB;
            float   t[RB][CB] = {{0}};
            if (m == RB && nn == CB) {
                for (int64_t k = 0; k < K; k++) {
                    const float *b = B + k * ldb + c0, *a = A + r0 * sr + k * sk;
                    for (int r = 0; r < RB; r++) {
                        float ar = a[r * sr];
                        for (int c = 0; c < CB; c++) t[r][c] += ar * b[c];
                    }
                }
            } else {
                for (int64_t k = 0; k < K; k++) {
                    const float *b = B + k * ldb + c0, *a = A + r0 * sr + k * sk;
                    for (int64_t r = 0; r < m; r++)
                        for (int64_t c = 0; c < nn; c++) t[r][c] += a[r * sr] * b[c];
                }
            }
            for (int64_t r = 0; r < m; r++) {
                float *cr = C + (r0 + r) * ldc + c0;
                if (acc)
                    for (int64_t c = 0; c < nn; c++) cr[c] += t[r][c];
                else
                    for (int64_t c = 0; c < nn; c++) cr[c] = t[r][c];
            }
        }
    }
}

static void transpose_portable(const float *src, int64_t row, int64_t T, int64_t D, float *dst,
                               int64_t ld) {
    for (int64_t j0 = 0; j0 < T; j0 += 16) {
        int64_t j1 = j0 + 16 < T ? j0 + 16 : T;
        for (int64_t d = 0; d < D; d++) {
            for (int64_t j = j0; j < j1; j++) dst[d * ld + j] = src[j * row + d];
            for (int64_t j = j1; j < j0 + 16; j++) dst[d * ld + j] = 0.0f;
        }
    }
}

__attribute__((target_clones("avx2", "default")))
static void softmax_row_portable(float *s, float *p, int64_t i, int64_t jend, int64_t jn,
                                 float scale, float slope, const float *pos) {
    float m = -INFINITY, sum = 0.0f;
    if (pos) {
        for (int64_t j = 0; j < jend; j++) {
            s[j] = scale * s[j] + slope * (pos[j] - pos[i]);
            m    = s[j] > m ? s[j] : m;
        }
    } else {
#pragma omp simd reduction(max : m)
        for (int64_t j = 0; j < jend; j++) {
            s[j] = scale * s[j] + slope * (float)(j - i);
            m    = s[j] > m ? s[j] : m;
        }
    }
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < jend; j++) {
        s[j] = spry_expf(s[j] - m);
        sum += s[j];
    }
    float inv = 1.0f / sum;
    for (int64_t j = 0; j < jend; j++) s[j] *= inv;
    for (int64_t j = jend; j < attn_up16(jn); j++) s[j] = 0.0f;
    if (p)
        for (int64_t j = 0; j < jn; j++) p[j] = s[j];
}

static void softmax_block_portable(float *s, int64_t lds, float *p, int64_t ldp, int64_t i0, int m,
                                   bool causal, int64_t T, int64_t jn, float scale, float slope,
                                   const float *pos) {
    for (int r = 0; r < m; r++)
        softmax_row_portable(s + r * lds, p ? p + (i0 + r) * ldp : NULL, i0 + r,
                             causal && i0 + r + 1 < T ? i0 + r + 1 : T, jn, scale, slope, pos);
}

__attribute__((target_clones("avx2", "default")))
static void dsoftmax_row_portable(const float *p, float *ds, int64_t jend, int64_t jn,
                                  float scale) {
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < jend; j++) dot += p[j] * ds[j];
    for (int64_t j = 0; j < jend; j++) ds[j] = scale * p[j] * (ds[j] - dot);
    for (int64_t j = jend; j < attn_up16(jn); j++) ds[j] = 0.0f;
}

#if ATTN_X86
// AVX-512 kernels. Rows that were just written are re-read only with plain full-vector loads of
// full-vector stores (a masked store does not forward to a later load: a stall per access).
#define ATTN_AVX512 __attribute__((target("avx512f")))

static inline __mmask16 attn_mask(int64_t n) { // the first n lanes, n clamped to [0, 16]
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

// One m x (16 nv) tile, m <= ATTN_MR, nv <= 4; lm masks the last vector's columns. Inlined with
// constant m and nv, the accumulators live in registers.
__attribute__((target("avx512f"), always_inline)) static inline void
tile_avx512(int m, int nv, __mmask16 lm, int64_t K, const float *A, int64_t sr, int64_t sk,
            const float *B, int64_t ldb, float *C, int64_t ldc, bool acc) {
    __m512 c[ATTN_MR][4], b[4];
#pragma GCC unroll 8
    for (int r = 0; r < m; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) c[r][v] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k++) {
        const float *bk = B + k * ldb, *ak = A + k * sk;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            b[v] = v == nv - 1 ? _mm512_maskz_loadu_ps(lm, bk + 16 * v)
                               : _mm512_loadu_ps(bk + 16 * v);
#pragma GCC unroll 8
        for (int r = 0; r < m; r++) {
            __m512 a = _mm512_set1_ps(ak[r * sr]);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) c[r][v] = _mm512_fmadd_ps(a, b[v], c[r][v]);
        }
    }
    bool full = lm == (__mmask16)0xFFFF;
#pragma GCC unroll 8
    for (int r = 0; r < m; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            float *cp = C + r * ldc + 16 * v;
            __m512 x  = c[r][v];
            if (v < nv - 1 || full) {
                if (acc) x = _mm512_add_ps(_mm512_loadu_ps(cp), x);
                _mm512_storeu_ps(cp, x);
            } else {
                if (acc) x = _mm512_add_ps(_mm512_maskz_loadu_ps(lm, cp), x);
                _mm512_mask_storeu_ps(cp, lm, x);
            }
        }
}

ATTN_AVX512 static void gemm_avx512(int64_t M, int64_t N, int64_t K, const float *A, int64_t sr,
                                    int64_t sk, const float *B, int64_t ldb, float *C, int64_t ldc,
                                    bool acc) {
    for (int64_t r0 = 0; r0 < M; r0 += ATTN_MR) {
        int m = M - r0 < ATTN_MR ? (int)(M - r0) : ATTN_MR;
        for (int64_t c0 = 0; c0 < N; c0 += ATTN_NR) {
            int          nn = N - c0 < ATTN_NR ? (int)(N - c0) : ATTN_NR, nv = (nn + 15) / 16;
            __mmask16    lm = attn_mask(nn - 16 * (nv - 1));
            const float *a = A + r0 * sr, *b = B + c0;
            float       *c = C + r0 * ldc + c0;
#define ATTN_T(mm, vv)                                                                             \
    case (mm) * 4 + (vv) - 1: tile_avx512(mm, vv, lm, K, a, sr, sk, b, ldb, c, ldc, acc); break;
#define ATTN_TROW(mm) ATTN_T(mm, 1) ATTN_T(mm, 2) ATTN_T(mm, 3) ATTN_T(mm, 4)
            switch (m * 4 + nv - 1) {
                ATTN_TROW(1) ATTN_TROW(2) ATTN_TROW(3) ATTN_TROW(4) ATTN_TROW(5) ATTN_TROW(6)
            default: break;
            }
#undef ATTN_TROW
#undef ATTN_T
        }
    }
}

// 16 x 16 blocks: rows of src loaded (masked), transposed in registers, stored.
ATTN_AVX512 static void transpose_avx512(const float *src, int64_t row, int64_t T, int64_t D,
                                         float *dst, int64_t ld) {
    for (int64_t j0 = 0; j0 < T; j0 += 16) {
        int64_t nj = T - j0 < 16 ? T - j0 : 16;
        for (int64_t d0 = 0; d0 < D; d0 += 16) {
            int64_t   nd = D - d0 < 16 ? D - d0 : 16;
            __mmask16 md = attn_mask(nd);
            __m512    r[16], t[16];
            for (int a = 0; a < 16; a++)
                r[a] = a < nj ? _mm512_maskz_loadu_ps(md, src + (j0 + a) * row + d0)
                              : _mm512_setzero_ps();
            for (int a = 0; a < 16; a += 2) {
                t[a]     = _mm512_unpacklo_ps(r[a], r[a + 1]);
                t[a + 1] = _mm512_unpackhi_ps(r[a], r[a + 1]);
            }
            // r[a + k]: per 128-bit lane L, column 4L + k of rows a .. a+3
            for (int a = 0; a < 16; a += 4) {
                r[a]     = _mm512_shuffle_ps(t[a], t[a + 2], 0x44);
                r[a + 1] = _mm512_shuffle_ps(t[a], t[a + 2], 0xEE);
                r[a + 2] = _mm512_shuffle_ps(t[a + 1], t[a + 3], 0x44);
                r[a + 3] = _mm512_shuffle_ps(t[a + 1], t[a + 3], 0xEE);
            }
            for (int k = 0; k < 4; k++) {
                __m512 v  = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88);
                __m512 w  = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xDD);
                __m512 v2 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88);
                __m512 w2 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xDD);
                t[k]      = _mm512_shuffle_f32x4(v, v2, 0x88);
                t[8 + k]  = _mm512_shuffle_f32x4(v, v2, 0xDD);
                t[4 + k]  = _mm512_shuffle_f32x4(w, w2, 0x88);
                t[12 + k] = _mm512_shuffle_f32x4(w, w2, 0xDD);
            }
            for (int a = 0; a < nd; a++) _mm512_storeu_ps(dst + (d0 + a) * ld + j0, t[a]);
        }
    }
}


// The block's rows go through each pass together (independent chains, one loop).
ATTN_AVX512 static void softmax_block_avx512(float *s, int64_t lds, float *p, int64_t ldp,
                                             int64_t i0, int m, bool causal, int64_t T,
                                             int64_t jn, float scale, float slope,
                                             const float *pos) {
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 vsc = _mm512_set1_ps(scale), vsl = _mm512_set1_ps(slope);
    __m512       vm[ATTN_MR], vs[ATTN_MR];
    int64_t      jend[ATTN_MR], je = 0;
    for (int r = 0; r < ATTN_MR; r++) { // rows past m stay empty
        jend[r] = r >= m ? 0 : causal && i0 + r + 1 < T ? i0 + r + 1 : T;
        je      = jend[r] > je ? jend[r] : je;
        vm[r]   = _mm512_set1_ps(-INFINITY);
        vs[r]   = _mm512_setzero_ps();
    }
    for (int64_t j = 0; j < je; j += 16) {
        __m512 dj = pos ? _mm512_maskz_loadu_ps(attn_mask(je - j), pos + j)
                        : _mm512_add_ps(iota, _mm512_set1_ps((float)(j - i0)));
#pragma GCC unroll 8
        for (int r = 0; r < ATTN_MR; r++) {
            if (r >= m) break;
            __m512 pi = _mm512_set1_ps(pos ? pos[i0 + r] : (float)r);
            __m512 al = _mm512_mul_ps(vsl, _mm512_sub_ps(dj, pi));
            __m512 x  = _mm512_fmadd_ps(vsc, _mm512_loadu_ps(s + r * lds + j), al);
            _mm512_storeu_ps(s + r * lds + j, x);
            vm[r] = _mm512_mask_max_ps(vm[r], attn_mask(jend[r] - j), vm[r], x);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < ATTN_MR; r++) vm[r] = _mm512_set1_ps(_mm512_reduce_max_ps(vm[r]));
    for (int64_t j = 0; j < je; j += 16) {
#pragma GCC unroll 8
        for (int r = 0; r < ATTN_MR; r++) {
            if (r >= m) break;
            __m512 e = spry_exp16(_mm512_sub_ps(_mm512_loadu_ps(s + r * lds + j), vm[r]));
            e        = _mm512_maskz_mov_ps(attn_mask(jend[r] - j), e);
            _mm512_storeu_ps(s + r * lds + j, e);
            vs[r] = _mm512_add_ps(vs[r], e);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < ATTN_MR; r++) vs[r] = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vs[r]));
    for (int r = 0; r < m; r++) { // P is read again only in backward: streamed out
        float *sr = s + r * lds, *pr = p ? p + (i0 + r) * ldp : NULL;
        for (int64_t j = 0; j < jn; j += 16) {
            __m512 x = _mm512_maskz_mul_ps(attn_mask(jend[r] - j), _mm512_loadu_ps(sr + j), vs[r]);
            _mm512_storeu_ps(sr + j, x);
            if (!pr)
                continue;
            if (jn - j >= 16 && ((uintptr_t)(pr + j) & 63) == 0)
                _mm512_stream_ps(pr + j, x);
            else if (jn - j >= 16)
                _mm512_storeu_ps(pr + j, x);
            else
                _mm512_mask_storeu_ps(pr + j, attn_mask(jn - j), x);
        }
    }
}

ATTN_AVX512 static void dsoftmax_row_avx512(const float *p, float *ds, int64_t jend, int64_t jn,
                                            float scale) {
    __m512 vd = _mm512_setzero_ps();
    for (int64_t j = 0; j < jend; j += 16) {
        __mmask16 mk = attn_mask(jend - j);
        vd = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, p + j),
                             _mm512_maskz_mov_ps(mk, _mm512_loadu_ps(ds + j)), vd);
    }
    __m512 dot = _mm512_set1_ps(_mm512_reduce_add_ps(vd)), vsc = _mm512_set1_ps(scale);
    for (int64_t j = 0; j < jn; j += 16) {
        __mmask16 mk = attn_mask(jend - j);
        __m512    pv = _mm512_mul_ps(vsc, _mm512_maskz_loadu_ps(mk, p + j));
        __m512    d  = _mm512_sub_ps(_mm512_loadu_ps(ds + j), dot);
        _mm512_storeu_ps(ds + j, _mm512_maskz_mul_ps(mk, pv, d));
    }
}
#endif

typedef struct attn_kernels {
    attn_gemm_fn      gemm;
    attn_transpose_fn transpose;
    attn_softmax_fn   softmax_block;
    attn_dsoftmax_fn  dsoftmax_row;
} attn_kernels;

static attn_kernels attn_pick(void) {
#if ATTN_X86 && !defined(ATTN_FORCE_PORTABLE)
    if (__builtin_cpu_supports("avx512f"))
        return (attn_kernels){gemm_avx512, transpose_avx512, softmax_block_avx512,
                              dsoftmax_row_avx512};
#endif
    return (attn_kernels){gemm_portable, transpose_portable, softmax_block_portable,
                          dsoftmax_row_portable};
}

// The scratch has a slot per thread of the ctx; should a kernel be run with more threads, the
// extra ones idle (the split of pairs changes, their arithmetic does not).
static bool attn_slot(const spry_node *n, int *ith, int *nth) {
    int slots = (int)n->saved[1]->shape[0];
    *nth      = *nth < slots ? *nth : slots;
    return *ith < *nth;
}

static void attn_fwd(const spry_node *n, int ith, int nth) {
    if (!attn_slot(n, &ith, &nth)) return;
    attn_geom g = geom(n);
    int64_t   lo, hi, row = 3 * g.C, T = g.T, D = g.D, Tp = attn_up16(T);
    spry_split(g.B * g.H, ith, nth, &lo, &hi);
    attn_kernels kn = attn_pick();
    float       *kt = F32(n->saved[1]) + ith * n->saved[1]->shape[1], *s = kt + D * Tp;
    for (int64_t bh = lo; bh < hi; bh++) {
        int64_t      b = bh / g.H, h = bh % g.H;
        const float *base = F32(n->src[0]) + b * T * row + h * g.head_step;
        const float *q = base + g.q_off, *k = base + g.k_off, *v = base + g.v_off;
        float       *P     = n->saved[0] ? F32(n->saved[0]) + bh * T * T : NULL;
        float       *o     = F32(n->out) + b * T * g.C + h * D;
        float        slope = g.alibi ? spry_alibi_slope(h, g.H) : 0.0f;
        const float *pos   = g.alibi && n->saved[2] ? F32(n->saved[2]) + b * T : NULL;
        int64_t      L     = n->saved[3] ? I32(n->saved[3])[b] : T; // keys of row b
        kn.transpose(k, row, L, D, kt, Tp);
        for (int64_t i0 = 0; i0 < T; i0 += ATTN_MR) {
            int64_t m = T - i0 < ATTN_MR ? T - i0 : ATTN_MR, jn = g.causal && i0 + m < L ? i0 + m : L;
            kn.gemm(m, attn_up16(jn), D, q + i0 * row, row, 1, kt, Tp, s, Tp, false);
            kn.softmax_block(s, Tp, P, T, i0, (int)m, g.causal, L, jn, g.scale, slope, pos);
            kn.gemm(m, D, jn, s, Tp, 1, v, row, o + i0 * g.C, g.C, false);
        }
    }
#if ATTN_X86
    _mm_sfence(); // order the streaming stores of P before the kernel returns
#endif
}

static void attn_bwd(const spry_node *n, int ith, int nth) {
    if (!spry_needs_grad(n->src[0]) || !attn_slot(n, &ith, &nth)) return;
    attn_geom g = geom(n);
    int64_t   lo, hi, row = 3 * g.C, T = g.T, D = g.D, Tp = attn_up16(T);
    spry_split(g.B * g.H, ith, nth, &lo, &hi);
    attn_kernels kn = attn_pick();
    float       *vt = F32(n->saved[1]) + ith * n->saved[1]->shape[1], *ds = vt + D * Tp;
    for (int64_t bh = lo; bh < hi; bh++) {
        int64_t      b = bh / g.H, h = bh % g.H;
        const float *base  = F32(n->src[0]) + b * T * row + h * g.head_step;
        const float *q = base + g.q_off, *k = base + g.k_off, *v = base + g.v_off;
        float       *dbase = F32(n->src[0]->grad) + b * T * row + h * g.head_step;
        float       *dq = dbase + g.q_off, *dk = dbase + g.k_off, *dv = dbase + g.v_off;
        const float *P  = F32(n->saved[0]) + bh * T * T;
        const float *dO = F32(n->out->grad) + b * T * g.C + h * D;
        int64_t      L  = n->saved[3] ? I32(n->saved[3])[b] : T; // keys of row b
        kn.transpose(v, row, L, D, vt, Tp);
        for (int64_t c0 = 0; c0 < T; c0 += ATTN_QB) {
            int64_t c1 = T - c0 < ATTN_QB ? T : c0 + ATTN_QB;
            for (int64_t i0 = c0; i0 < c1; i0 += ATTN_MR) {
                int64_t m = c1 - i0 < ATTN_MR ? c1 - i0 : ATTN_MR;
                int64_t jn = g.causal && i0 + m < L ? i0 + m : L;
                float  *dsr = ds + (i0 - c0) * Tp;
                // P comes from memory: fetch the rows ATTN_PF_BLOCKS blocks ahead
                int64_t pf = i0 + ATTN_PF_BLOCKS * ATTN_MR;
                for (int64_t i = pf; i < pf + ATTN_MR && i < T; i++)
                    for (int64_t j = 0; j < (g.causal && i + 1 < L ? i + 1 : L); j += 16)
                        __builtin_prefetch(P + i * T + j);
                kn.gemm(m, attn_up16(jn), D, dO + i0 * g.C, g.C, 1, vt, Tp, dsr, Tp, false);
                for (int64_t i = i0; i < i0 + m; i++)
                    kn.dsoftmax_row(P + i * T, dsr + (i - i0) * Tp, g.causal && i + 1 < L ? i + 1 : L,
                                    jn, g.scale);
                kn.gemm(m, D, jn, dsr, Tp, 1, k, row, dq + i0 * row, row, true);
            }
            // key rows j meet queries i >= j (causal). Blocks are ATTN_MR-aligned, so the rows of
            // dS and P read here are written (zero above the diagonal) up to the block's end.
            int64_t jmax = g.causal && c1 < L ? c1 : L;
            for (int64_t j0 = 0; j0 < jmax; j0 += ATTN_MR) {
                int64_t m = jmax - j0 < ATTN_MR ? jmax - j0 : ATTN_MR;
                int64_t ks = g.causal && j0 > c0 ? j0 : c0;
                kn.gemm(m, D, c1 - ks, ds + (ks - c0) * Tp + j0, 1, Tp, q + ks * row, row,
                        dk + j0 * row, row, true);
                kn.gemm(m, D, c1 - ks, P + ks * T + j0, 1, T, dO + ks * g.C, g.C, dv + j0 * row,
                        row, true);
            }
        }
    }
}

static void attn_ref(const spry_node *n) {
    attn_geom g   = geom(n);
    int64_t   row = 3 * g.C;
    double    sc  = 1.0 / sqrt((double)g.D);
    double   *S   = malloc((size_t)g.T * sizeof *S);
    for (int64_t b = 0; b < g.B; b++)
        for (int64_t h = 0; h < g.H; h++) {
            const double *base  = F64(n->src[0]) + b * g.T * row + h * g.head_step;
            double        slope = g.alibi ? (double)spry_alibi_slope(h, g.H) : 0.0;
            const float  *pos   = g.alibi && n->saved[2] ? F32(n->saved[2]) + b * g.T : NULL;
            int64_t       L     = n->saved[3] ? I32(n->saved[3])[b] : g.T;
            for (int64_t i = 0; i < g.T; i++) {
                int64_t jend = g.causal && i + 1 < L ? i + 1 : L;
                double  m    = -INFINITY, s = 0;
                for (int64_t j = 0; j < jend; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < g.D; e++) d += base[i * row + g.q_off + e] * base[j * row + g.k_off + e];
                    S[j] = sc * d + slope * (pos ? (double)pos[j] - (double)pos[i] : (double)(j - i));
                    m    = S[j] > m ? S[j] : m;
                }
                for (int64_t j = 0; j < jend; j++) s += (S[j] = exp(S[j] - m));
                for (int64_t e = 0; e < g.D; e++) {
                    double o = 0;
                    for (int64_t j = 0; j < jend; j++) o += S[j] / s * base[j * row + g.v_off + e];
                    F64(n->out)[(b * g.T + i) * g.C + h * g.D + e] = o;
                }
            }
        }
    free(S);
}

// fp[0] > 0: ALiBi over original positions pos[b][t] = fp[0] * t + t * t / 3 + b (a sorted subset
// with uneven gaps, as a token-dropped layer sees). fp[1] > 0: key lengths
// L_b = max(1, T - fp[1] * b) (right padding: row 0 full, the others shorter).
static spry_tensor *attn_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    spry_attn_params p = {.n_head = t->ip[0], .causal = t->ip[1], .alibi = t->ip[2],
                          .layout = (spry_qkv_layout)t->ip[3]};
    if (t->fp[0] > 0) {
        int64_t      B = s[0]->shape[0], T = s[0]->shape[1];
        spry_tensor *pos = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, T));
        if (ctx->status) return pos;
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < T; i++)
                I32(pos)[b * T + i] = (int32_t)((int64_t)t->fp[0] * i + i * i / 3 + b);
        p.pos = pos;
    }
    if (t->fp[1] > 0) {
        int64_t      B = s[0]->shape[0], T = s[0]->shape[1];
        spry_tensor *kl = spry_new(ctx, SPRY_DTYPE_I32, 1, &B);
        if (ctx->status) return kl;
        for (int64_t b = 0; b < B; b++) {
            int64_t L   = T - (int64_t)t->fp[1] * b;
            I32(kl)[b] = (int32_t)(L < 1 ? 1 : L);
        }
        p.key_len = kl;
    }
    return spry_attention(ctx, s[0], p);
}

static const spry_op_test attn_tests[] = {
    {.label = "gpt2-causal", .n_src = 1, .ndim = {3}, .shape = {{2, 5, 18}}, .ip = {3, 1, 0, 0}},
    {.label = "bidir", .n_src = 1, .ndim = {3}, .shape = {{1, 4, 24}}, .ip = {2, 0, 0, 0}},
    {.label = "bloom-alibi", .n_src = 1, .ndim = {3}, .shape = {{2, 6, 30}}, .ip = {5, 1, 1, 1}},
    {.label = "d64", .n_src = 1, .ndim = {3}, .shape = {{1, 9, 384}}, .ip = {2, 1, 0, 0}},
    // the blocked kernels' edges: T not a multiple of the 6-row blocks or 16-lane vectors, D of
    // 64 (one full tile), 20 and 80 (masked vectors), T past the 258-row backward chunk
    {.label = "d64-t37", .n_src = 1, .ndim = {3}, .shape = {{2, 37, 384}}, .ip = {2, 1, 0, 0}},
    {.label = "d20-bidir-alibi", .n_src = 1, .ndim = {3}, .shape = {{2, 19, 120}},
     .ip = {2, 0, 1, 1}},
    {.label = "d80-bloom", .n_src = 1, .ndim = {3}, .shape = {{1, 23, 480}}, .ip = {2, 1, 0, 1}},
    {.label = "t270-chunks", .n_src = 1, .ndim = {3}, .shape = {{1, 270, 48}}, .ip = {2, 1, 1, 0}},
    {.label = "t263-bidir", .n_src = 1, .ndim = {3}, .shape = {{1, 263, 36}}, .ip = {3, 0, 0, 1}},
    // ALiBi over the original positions of kept tokens (random-LTD): gaps, both paths of the
    // row kernels (T past 16 lanes), causal and not
    {.label = "alibi-pos", .n_src = 1, .ndim = {3}, .shape = {{2, 21, 30}}, .ip = {5, 1, 1, 1},
     .fp = {2}},
    {.label = "alibi-pos-bidir", .n_src = 1, .ndim = {3}, .shape = {{2, 7, 24}},
     .ip = {2, 0, 1, 0}, .fp = {3}},
    // key padding (BERT's attention mask): lengths T, T-k, ..., down to a single key; bidirectional
    // and causal, short rows and rows past 16 lanes / the 6-row blocks / the backward chunk
    {.label = "keylen-bidir", .n_src = 1, .ndim = {3}, .shape = {{4, 7, 24}}, .ip = {2, 0, 0, 0},
     .fp = {0, 3}},
    {.label = "keylen-bert-d64", .n_src = 1, .ndim = {3}, .shape = {{3, 37, 384}},
     .ip = {2, 0, 0, 0}, .fp = {0, 13}},
    {.label = "keylen-causal-alibi", .n_src = 1, .ndim = {3}, .shape = {{3, 21, 30}},
     .ip = {5, 1, 1, 1}, .fp = {2, 8}},
    {.label = "keylen-t270", .n_src = 1, .ndim = {3}, .shape = {{2, 270, 48}}, .ip = {2, 0, 0, 0},
     .fp = {0, 101}},
};

const spry_op_def spry_opdef_attention = {
    .name = "attention", .n_src = 1, .fwd = attn_fwd, .bwd = attn_bwd, .ref = attn_ref,
    .build = attn_build, .tests = attn_tests,
    .n_tests = (int)(sizeof attn_tests / sizeof attn_tests[0]),
};
