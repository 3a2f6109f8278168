/*
 * engine_kernels.h -- the row kernels of the serving engine's forward pass (engine.c).
 *
 * Every output element is computed by one code path whose arithmetic does not depend on how many
 * rows are processed together or on the thread count, so a sequence's logits are the same in
 * any batch (the engine's batch-invariance promise).
 */
#ifndef SPRY_ENGINE_KERNELS_H
#define SPRY_ENGINE_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spry/quant.h"

// The lanes of a 16-lane vector that hold elements i .. i + 15 of a row of n: all of them, or
// those below n (none past it); an AVX-512 mask.
static inline uint16_t spry_eng_tail16(int64_t n, int64_t i) {
    return n - i >= 16 ? (uint16_t)0xffff : n > i ? (uint16_t)((1u << (n - i)) - 1) : (uint16_t)0;
}

// y (C) = LayerNorm(x (C)) * w + b (biased variance, eps inside the square root).
void spry_eng_layernorm(const float *x, const float *w, const float *b, float *y, int64_t C, float eps);
// The packed f32 layout: W (N, K) as panels of 32 output columns, each K-major:
// Wp[p][k][c] = W[32 p + c][k] (zero beyond N); spry_eng_packed_size(N, K) floats.
int64_t spry_eng_packed_size(int64_t N, int64_t K);
void    spry_eng_pack_f32(const float *W, int64_t N, int64_t K, float *Wp);
// Y (M, N) = X (M, K) @ W^T + bias with W packed: outer-product tiles of 6 rows x 32 columns,
// every Y element one FMA chain over k in order (so independent of M and the thread count).
// Panels of 32 columns are split over the OpenMP threads; epi (NULL: none) gets each finished
// panel, all M rows (spry_tile_fn, quant.h), from the thread that computed it.
void spry_eng_linear_packed(const float *X, int64_t M, int64_t K, const float *Wp, const float *bias, int64_t N,
                            float *Y, spry_tile_fn epi, void *user);
// The packed bf16 layout: panels of 32 columns, k in pairs: Wb[p][k/2][c][k%2] = bf16(W[32p+c][k])
// (zero beyond N and K); spry_eng_packed_bf16_size(N, K) uint16 values. From bf16 rows W (N, K).
int64_t spry_eng_packed_bf16_size(int64_t N, int64_t K);
void    spry_eng_pack_bf16(const uint16_t *W, int64_t N, int64_t K, uint16_t *Wb);
// As spry_eng_linear_packed for bf16 panels on CPUs with AVX512-BF16: X rounded to bf16 into xb
// (M * K scratch), vdpbf16ps over k pairs, f32 sums. False (nothing done) without AVX512-BF16.
bool spry_eng_linear_packed_bf16(const float *X, int64_t M, int64_t K, const uint16_t *Wb, const float *bias,
                                 int64_t N, float *Y, uint16_t *xb, spry_tile_fn epi, void *user);
// The packed f16 layout: as the f32 one, with IEEE half values (from f16 rows W (N, K));
// spry_eng_packed_size(N, K) uint16 values. The product widens them with vcvtph2ps (AVX-512) and
// runs the f32 outer-product tiles; false (nothing done) without AVX-512.
void spry_eng_pack_f16(const uint16_t *W, int64_t N, int64_t K, uint16_t *Wh);
bool spry_eng_linear_packed_f16(const float *X, int64_t M, int64_t K, const uint16_t *Wh, const float *bias,
                                int64_t N, float *Y, spry_tile_fn epi, void *user);
// One head's keys and values of one sequence in the paged KV cache: block j of the sequence
// (positions j bt .. j bt + bt - 1) is pool block table[j], whose keys start bstride elements per
// pool block after kbase, stored d-major (key t's element d at [d * bt + t]), and whose values start
// as far after vbase, row-major (value t's element d at [t * vstride + d]). Elements are IEEE f16
// when half, else f32.
typedef struct spry_eng_kv {
    const int32_t *table;
    const void    *kbase, *vbase;
    size_t         bstride;
    int64_t        bt, vstride;
    bool           half;
} spry_eng_kv;
// Single-pass attention (engine_attention.c) of one query q (D) over its nk keys, positions
// 0 .. nk - 1, of kv. Scores q.k * scale + slope * (position - (nk - 1)) (ALiBi; slope 0 for
// none), an online softmax over chunks of at most 16 keys cut at block boundaries, out (D) = the
// weighted values, f16 elements widened exactly. The arithmetic depends on the query's own keys
// only (batch invariance). AVX-512 (F, BW) with the sums in registers when present and D <= 128,
// else scalar.
void spry_eng_attend(const float *q, const spry_eng_kv *kv, int64_t nk, int64_t D, float scale, float slope, float *out);
// Stores the keys of n <= 16 consecutive positions (row i of k, kstride floats apart, D columns)
// into the d-major cache layout: dst[d * bt + i] = k[i][d] (dst at the first position's slot;
// f16 rounded to nearest even when half, the bits spry_convert_f32_to_f16 gives). AVX-512
// transposes 16 x 16 blocks in registers; the fallback loops.
void spry_eng_store_keys(const float *k, size_t kstride, int64_t n, void *dst, int64_t bt, int64_t D, bool half);
// Asks for the keys and values that spry_eng_attend reads first for nk keys of kv (a hint: lets a
// caller overlap them with other work).
void spry_eng_attend_prefetch(const spry_eng_kv *kv, int64_t nk, int64_t D);
// The most queries spry_eng_attend_group takes at once.
#define SPRY_ENG_ATTEND_GROUP 16
// spry_eng_attend for G (1 .. SPRY_ENG_ATTEND_GROUP) queries q[g] with nk[g] keys each, of the same
// sequence and head (kv), into out[g]: each out[g] has the same bits as spry_eng_attend gives for
// that query alone; the group loads each key vector once per pair of queries.
void spry_eng_attend_group(int G, const float *const *q, const int64_t *nk, float *const *out, const spry_eng_kv *kv,
                           int64_t D, float scale, float slope);
// The linear layers' epilogues, on the calling thread, for a block of nr rows x nc columns of
// row stride ldy: y = gelu_tanh(y) in place, and res += y.
void spry_eng_gelu_block(float *y, int64_t ldy, int64_t nr, int64_t nc);
void spry_eng_add_block(float *res, const float *y, int64_t ldy, int64_t nr, int64_t nc);

#endif
