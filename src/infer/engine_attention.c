/*
 * engine_attention.c -- single-pass attention of the serving engine over the paged KV cache (see
 * engine_kernels.h): one query row, or a group of up to SPRY_ENG_ATTEND_GROUP rows of the same
 * sequence and head; and the transposed store of a group's keys (spry_eng_store_keys).
 *
 * Keys are visited in chunks of at most 16, cut at KV blocks and at the query's last position.
 * Per chunk and query: the 16 scores side by side (four FMA chains over d, by d mod 4, added
 * pairwise), the new maximum, e^(score - max), the chunk's weighted values summed on their own
 * (two FMA chains per 16 columns, even and odd keys), the weights' sum in hsum16's tree, then one
 * merge into the running sums, rescaled by e^(old max - new max) (exactly 1 when the maximum
 * stays). That sequence of operations depends only on the query's own keys, whatever group it
 * is computed in:
 *   - group_avx512 (1, 2 or 4 queries) loads each key vector once per pair of queries (the values
 *     once per query, from L1), the lanes past a query's own keys masked out of its arithmetic;
 *   - lanes16_avx512 (5 to 16 queries) puts one query in each vector lane and broadcasts keys and
 *     values element by element, running the same operations lane by lane (the chunk's maximum
 *     and sums become vertical operations over 16 key vectors).
 * So grouped prefill rows and one-row decode give the same bits (the engine's batch invariance;
 * tests/test_attention.c). The scalar path (no AVX-512) runs the same steps one query at a time,
 * in another summation order.
 */
#include <immintrin.h>
#include <math.h>

#include "infer/engine_kernels.h"
#include "ops/fastmath.h"
#include "spry/cpu.h"
#include "spry/dtype.h"

#define AVX512 __attribute__((target("avx512f,avx512bw")))
#define INLINE __attribute__((always_inline)) static inline

// Where a query's keys and values are, and how it scores them.
typedef struct att_src {
    spry_eng_kv kv;
    int64_t     D;
    float       scale, slope;
} att_src;

// Element i of a cache half (f16 or f32) as a float.
static inline float kv_at(const void *base, size_t i, bool half) {
    return half ? spry_f16_to_f32(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

// Bytes per cache element.
static inline size_t kv_es(const spry_eng_kv *kv) { return kv->half ? 2 : 4; }

// The cache half of pool block b (keys: which = 0).
static inline const void *kv_block(const spry_eng_kv *kv, int32_t b, int which) {
    size_t off = (size_t)b * kv->bstride * kv_es(kv);
    return (const char *)(which ? kv->vbase : kv->kbase) + off;
}

/* ---- scalar -------------------------------------------------------------------------------- */

// One chunk of n keys (Kt: d-major with stride bt; V rows vstride apart) folded into the state
// (mx, sum, out) of query q; rel0 = position of the chunk's first key minus the query's.
// Kt and V point at the block's first key and value; the chunk starts at key t0 of the block.
static void chunk_scalar(const att_src *A, const float *q, const void *Kt, const void *V, int64_t t0, int64_t n,
                         int64_t rel0, float *out, float *mx, float *sum) {
    const int64_t bt = A->kv.bt, vs = A->kv.vstride;
    const bool    hf = A->kv.half;
    float s[16], cm = -INFINITY;
    for (int64_t t = 0; t < n; t++) {
        float acc[4] = {0, 0, 0, 0};
        for (int64_t d = 0; d < A->D; d++) acc[d % 4] += q[d] * kv_at(Kt, (size_t)(d * bt + t0 + t), hf);
        s[t] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) * A->scale + A->slope * (float)(rel0 + t);
        cm   = s[t] > cm ? s[t] : cm;
    }
    float nm = cm > *mx ? cm : *mx, f = expf(*mx - nm), ws = 0;
    *mx      = nm;
    for (int64_t t = 0; t < n; t++) s[t] = expf(s[t] - nm), ws += s[t]; // the keys' weights
    float tmp[256]; // the chunk's weighted values, 256 columns at a time
    for (int64_t d0 = 0; d0 < A->D; d0 += 256) {
        int64_t nd = A->D - d0 < 256 ? A->D - d0 : 256;
        for (int64_t d = 0; d < nd; d++) tmp[d] = 0;
        for (int64_t t = 0; t < n; t++)
            for (int64_t d = 0; d < nd; d++) tmp[d] += s[t] * kv_at(V, (size_t)((t0 + t) * vs + d0 + d), hf);
        for (int64_t d = 0; d < nd; d++) out[d0 + d] = fmaf(out[d0 + d], f, tmp[d]);
    }
    *sum = *sum * f + ws;
}

static void attend_scalar(const att_src *A, const float *q, int64_t nk, float *out) {
    float mx = -INFINITY, sum = 0;
    for (int64_t d = 0; d < A->D; d++) out[d] = 0;
    for (int64_t j0 = 0; j0 < nk; j0 += A->kv.bt) {
        int32_t     b  = A->kv.table[j0 / A->kv.bt];
        const void *Kt = kv_block(&A->kv, b, 0), *V = kv_block(&A->kv, b, 1);
        int64_t     nj = nk - j0 < A->kv.bt ? nk - j0 : A->kv.bt;
        for (int64_t t = 0; t < nj; t += 16)
            chunk_scalar(A, q, Kt, V, t, nj - t < 16 ? nj - t : 16, j0 + t - (nk - 1), out, &mx, &sum);
    }
    float inv = 1.0f / sum;
    for (int64_t d = 0; d < A->D; d++) out[d] *= inv;
}

/* ---- AVX-512 ------------------------------------------------------------------------------- */

#define GMAX 4 // queries of group_avx512 (more go to lanes16_avx512)
#define PF_CHUNKS 2 // prefetch distance of one-row decode, in chunks

// 16 cache elements from p + i (f16 widened, or f32), lanes outside m read as zero.
AVX512 INLINE __m512 load16(const void *p, int64_t i, __mmask16 m, bool half) {
    return half ? _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_maskz_loadu_epi16((__mmask32)m, (const uint16_t *)p + i)))
                : _mm512_maskz_loadu_ps(m, (const float *)p + i);
}

// The sum of the 16 lanes of w in every lane, in one fixed order: lanes i and i + 8, then those
// sums i and i + 4, then i and i + 2, then i and i + 1 (lanes16_avx512 adds its key vectors in the
// same tree; compilers' reduce intrinsics do not promise an order).
AVX512 INLINE __m512 hsum16(__m512 w) {
    w = _mm512_add_ps(w, _mm512_shuffle_f32x4(w, w, _MM_SHUFFLE(1, 0, 3, 2)));
    w = _mm512_add_ps(w, _mm512_shuffle_f32x4(w, w, _MM_SHUFFLE(2, 3, 0, 1)));
    w = _mm512_add_ps(w, _mm512_permute_ps(w, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm512_add_ps(w, _mm512_permute_ps(w, _MM_SHUFFLE(2, 3, 0, 1)));
}

// Asks for the keys and values of the 16 positions from x (D columns).
INLINE void prefetch_chunk(const spry_eng_kv *kv, int64_t x, int64_t D) {
    const int64_t bt = kv->bt;
    const size_t  es = kv_es(kv);
    const char   *K  = (const char *)kv_block(kv, kv->table[x / bt], 0) + (size_t)(x % bt) * es;
    const char   *V  = (const char *)kv_block(kv, kv->table[x / bt], 1) + (size_t)((x % bt) * kv->vstride) * es;
    for (int64_t d = 0; d < D; d++) _mm_prefetch(K + (size_t)(d * bt) * es, _MM_HINT_T0);
    for (size_t i = 0; i < (size_t)(16 * kv->vstride) * es; i += 64) _mm_prefetch(V + i, _MM_HINT_T0);
}

// G queries q[g] of one sequence and head with nk[g] keys each (G, DC constants after inlining;
// D <= 16 DC). Per query: the running maximum mx and sum, and the weighted values o, DC vectors
// of 16 columns, all in registers. Each chunk loads a key vector once per pair of queries (with
// the lanes of the query that sees the most keys; a query's other lanes are masked out of its
// scores, so its weights are zero there and its sums take exactly the operations they take alone).
AVX512 INLINE void group_avx512(const att_src *A, int G, const float *const *q, const int64_t *nk, float *const *out,
                                int DC, bool half) {
    const int64_t bt = A->kv.bt, D = A->D, vs = A->kv.vstride;
    const size_t  es = half ? 2 : 4; // kv_es, folded: half is a constant here
    const __m512  lane = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __mmask16     dm[8];
#pragma GCC unroll 8
    for (int i = 0; i < DC; i++) {
        // columns past D: masked to zero, never stored
        dm[i]        = spry_eng_tail16(D, 16 * i);
    }
    float   mx[GMAX];
    __m512  sum[GMAX]; // the running sum of weights, in every lane
    __m512  o[GMAX][8];
    int64_t nk_max = 0;
#pragma GCC unroll 4
    for (int g = 0; g < G; g++) {
        mx[g] = -INFINITY, sum[g] = _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int i = 0; i < DC; i++) o[g][i] = _mm512_setzero_ps();
        nk_max = nk[g] > nk_max ? nk[g] : nk_max;
    }
    if (G == 1) // the first chunks' misses overlap too (chunks are 16 keys unless cut by a block)
        spry_eng_attend_prefetch(&A->kv, nk_max, D);
    for (int64_t j0 = 0; j0 < nk_max; j0 += bt) {
        const char *Kb = kv_block(&A->kv, A->kv.table[j0 / bt], 0);
        const char *Vb = kv_block(&A->kv, A->kv.table[j0 / bt], 1);
        for (int64_t t0 = 0; t0 < bt && j0 + t0 < nk_max; t0 += 16) {
            const int64_t start = j0 + t0, cend = j0 + bt < start + 16 ? j0 + bt : start + 16;
            const char   *Kt = Kb + (size_t)t0 * es, *V = Vb + (size_t)(t0 * vs) * es;
            // one-row decode reads the keys and values from memory (the weights streamed since
            // evicted them): the chunk PF_CHUNKS ahead is requested while this one computes
            if (G == 1 && start + PF_CHUNKS * 16 < nk_max) prefetch_chunk(&A->kv, start + PF_CHUNKS * 16, D);
            __mmask16     live[GMAX], any = 0;
            int64_t       n_max = 0;
#pragma GCC unroll 4
            for (int g = 0; g < G; g++) {
                int64_t n = (cend < nk[g] ? cend : nk[g]) - start;
                n       = n > 0 ? n : 0;
                live[g] = spry_eng_tail16(n, 0);
                any |= live[g];
                n_max = n > n_max ? n : n_max;
            }
            // scores, two queries per pass over the keys; four chains over d (d mod 4)
            __m512 sv[GMAX];
#pragma GCC unroll 2
            for (int gp = 0; gp < G; gp += 2) {
                const int np = G - gp < 2 ? G - gp : 2;
                __m512    acc[2][4];
#pragma GCC unroll 2
                for (int u = 0; u < np; u++)
#pragma GCC unroll 4
                    for (int i = 0; i < 4; i++) acc[u][i] = _mm512_setzero_ps();
                int64_t d = 0;
                for (; d + 4 <= D; d += 4) {
                    __m512 k[4];
#pragma GCC unroll 4
                    for (int i = 0; i < 4; i++) k[i] = load16(Kt, (d + i) * bt, any, half);
#pragma GCC unroll 2
                    for (int u = 0; u < np; u++)
#pragma GCC unroll 4
                        for (int i = 0; i < 4; i++)
                            acc[u][i] = _mm512_fmadd_ps(_mm512_set1_ps(q[gp + u][d + i]), k[i], acc[u][i]);
                }
                for (; d < D; d++) {
                    __m512 k = load16(Kt, d * bt, any, half);
#pragma GCC unroll 2
                    for (int u = 0; u < np; u++)
                        acc[u][d % 4] = _mm512_fmadd_ps(_mm512_set1_ps(q[gp + u][d]), k, acc[u][d % 4]);
                }
#pragma GCC unroll 2
                for (int u = 0; u < np; u++) {
                    const int g   = gp + u;
                    __m512    dot = _mm512_add_ps(_mm512_add_ps(acc[u][0], acc[u][1]), _mm512_add_ps(acc[u][2], acc[u][3]));
                    __m512    pos = _mm512_add_ps(_mm512_set1_ps((float)(start - (nk[g] - 1))), lane);
                    sv[g]         = _mm512_mask_blend_ps(live[g], _mm512_set1_ps(-INFINITY),
                                                         _mm512_fmadd_ps(_mm512_set1_ps(A->slope), pos,
                                                                         _mm512_mul_ps(dot, _mm512_set1_ps(A->scale))));
                }
            }
            // per query: the new maximum, e^(score - max), the chunk's weighted values summed on
            // their own (even and odd keys in two chains), then one merge into the running sums,
            // rescaled by f = e^(old max - new max) (exactly 1 when the maximum stays): the only
            // dependence between chunks is the maximum and one FMA per vector, so chunks overlap
#pragma GCC unroll 4
            for (int g = 0; g < G; g++) {
                if (!live[g]) continue;
                const float cm = _mm512_reduce_max_ps(sv[g]), nm = cm > mx[g] ? cm : mx[g];
                // spry_exp16, not expf: a call would spill every live vector register (the ABI
                // keeps none across calls); exp16(0) = 1 exactly, and the first chunk's e^-inf is
                // clamped to ~1e-38, which multiplies zeros
                const __m512 f = spry_exp16(_mm512_set1_ps(mx[g] - nm));
                const __m512 w = _mm512_maskz_mov_ps(live[g], spry_exp16(_mm512_sub_ps(sv[g], _mm512_set1_ps(nm))));
                mx[g]          = nm;
                __m512 va[8], vb[8];
#pragma GCC unroll 8
                for (int i = 0; i < DC; i++) va[i] = vb[i] = _mm512_setzero_ps();
                int64_t t = 0;
                for (; t + 2 <= n_max; t += 2) { // w is 0 past the query's keys
                    __m512 w0 = _mm512_permutexvar_ps(_mm512_set1_epi32((int)t), w);
                    __m512 w1 = _mm512_permutexvar_ps(_mm512_set1_epi32((int)t + 1), w);
#pragma GCC unroll 8
                    for (int i = 0; i < DC; i++) {
                        va[i] = _mm512_fmadd_ps(w0, load16(V, t * vs + 16 * i, dm[i], half), va[i]);
                        vb[i] = _mm512_fmadd_ps(w1, load16(V, (t + 1) * vs + 16 * i, dm[i], half), vb[i]);
                    }
                }
                if (t < n_max) {
                    __m512 w0 = _mm512_permutexvar_ps(_mm512_set1_epi32((int)t), w);
#pragma GCC unroll 8
                    for (int i = 0; i < DC; i++) va[i] = _mm512_fmadd_ps(w0, load16(V, t * vs + 16 * i, dm[i], half), va[i]);
                }
                sum[g] = _mm512_fmadd_ps(sum[g], f, hsum16(w));
#pragma GCC unroll 8
                for (int i = 0; i < DC; i++) o[g][i] = _mm512_fmadd_ps(o[g][i], f, _mm512_add_ps(va[i], vb[i]));
            }
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < G; g++) {
        __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), sum[g]);
#pragma GCC unroll 8
        for (int i = 0; i < DC; i++) _mm512_mask_storeu_ps(out[g] + 16 * i, dm[i], _mm512_mul_ps(o[g][i], inv));
    }
}

// r[i] (16 floats each) := the columns of the 16 x 16 block whose rows they held.
AVX512 INLINE void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i]     = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i]     = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    // r[4a + b] now holds, in 128-bit lane c, element 4c + b of rows 4a .. 4a + 3
    for (int b = 0; b < 4; b++) {
        __m512 x0 = _mm512_shuffle_f32x4(r[b], r[4 + b], _MM_SHUFFLE(2, 0, 2, 0));
        __m512 x1 = _mm512_shuffle_f32x4(r[b], r[4 + b], _MM_SHUFFLE(3, 1, 3, 1));
        __m512 x2 = _mm512_shuffle_f32x4(r[8 + b], r[12 + b], _MM_SHUFFLE(2, 0, 2, 0));
        __m512 x3 = _mm512_shuffle_f32x4(r[8 + b], r[12 + b], _MM_SHUFFLE(3, 1, 3, 1));
        t[b]      = _mm512_shuffle_f32x4(x0, x2, _MM_SHUFFLE(2, 0, 2, 0));
        t[8 + b]  = _mm512_shuffle_f32x4(x0, x2, _MM_SHUFFLE(3, 1, 3, 1));
        t[4 + b]  = _mm512_shuffle_f32x4(x1, x3, _MM_SHUFFLE(2, 0, 2, 0));
        t[12 + b] = _mm512_shuffle_f32x4(x1, x3, _MM_SHUFFLE(3, 1, 3, 1));
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

// Up to 16 queries of one sequence and head at once, one per lane (lanes past G idle): each lane
// runs, for its query, the operations group_avx512 runs for that query alone, in the same order --
// the scores as four chains over d (d mod 4) added pairwise, scaled and ALiBi-shifted; the chunk's
// maximum; e^(score - max) with dead keys' weights 0; the weights summed in hsum16's tree; the
// values as two chains (even and odd keys) merged with one FMA -- so every lane's bits are its
// query's bits alone. Chunks past a lane's keys change nothing in it (weights 0, rescale exactly 1).
// Keys and values are broadcast one element at a time against 16 queries, so the chunk's softmax
// bookkeeping runs once per 16 queries and needs no horizontal reductions. An f16 chunk is
// widened once into f32 copies (exact). D <= 128.
AVX512 INLINE void lanes16_avx512(const att_src *A, int G, const float *const *q, const int64_t *nk,
                                  float *const *out, bool half) {
    const int64_t bt = A->kv.bt, D = A->D, vs = A->kv.vstride;
    const size_t  es = half ? 2 : 4; // kv_es, folded: half is a constant here
    __attribute__((aligned(64))) float qt[128][16], o[128][16], kst[128][16], vst[16][128];
    int32_t nki[16];
    int64_t nk_max = 0;
    for (int g = 0; g < 16; g++) {
        nki[g] = g < G ? (int32_t)nk[g] : 0;
        nk_max = nki[g] > nk_max ? nki[g] : nk_max;
    }
    for (int64_t d0 = 0; d0 < D; d0 += 16) { // qt[d][g] = q[g][d], 16 x 16 blocks
        const __mmask16 m = spry_eng_tail16(D, d0);
        __m512          r[16];
        for (int g = 0; g < 16; g++) r[g] = g < G ? _mm512_maskz_loadu_ps(m, q[g] + d0) : _mm512_setzero_ps();
        transpose16(r);
        for (int i = 0; i < 16 && d0 + i < D; i++) _mm512_store_ps(qt[d0 + i], r[i]);
    }
    for (int64_t d = 0; d < D; d++) _mm512_store_ps(o[d], _mm512_setzero_ps());
    const __m512i nkv  = _mm512_loadu_si512(nki);
    const __m512  nkm1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(nkv, _mm512_set1_epi32(1)));
    const __m512  scale = _mm512_set1_ps(A->scale), slope = _mm512_set1_ps(A->slope);
    __m512        mx = _mm512_set1_ps(-INFINITY), sum = _mm512_setzero_ps();
    for (int64_t j0 = 0; j0 < nk_max; j0 += bt) {
        const char *Kb = kv_block(&A->kv, A->kv.table[j0 / bt], 0);
        const char *Vb = kv_block(&A->kv, A->kv.table[j0 / bt], 1);
        for (int64_t t0 = 0; t0 < bt && j0 + t0 < nk_max; t0 += 16) {
            const int64_t start = j0 + t0, cend = j0 + bt < start + 16 ? j0 + bt : start + 16;
            const int64_t n_max = (cend < nk_max ? cend : nk_max) - start; // keys any lane sees
            const float  *K = (const float *)(Kb + (size_t)t0 * es), *V = (const float *)(Vb + (size_t)(t0 * vs) * es);
            int64_t       ks = bt, vsf = vs; // element strides of K's rows (d) and V's rows (keys)
            if (half) {
                const __mmask16 km = spry_eng_tail16(n_max, 0);
                for (int64_t d = 0; d < D; d++) _mm512_store_ps(kst[d], load16(K, d * bt, km, true));
                for (int64_t t = 0; t < n_max; t++)
                    for (int64_t d = 0; d < D; d += 16) {
                        __mmask16 m = spry_eng_tail16(D, d);
                        _mm512_storeu_ps(vst[t] + d, load16(V, t * vs + d, m, true));
                    }
                K = kst[0], V = vst[0], ks = 16, vsf = 128;
            }
            // scores of keys kt (lanes: queries), four keys at a time
            __m512 S[16] = {0}; // scores of keys 0 .. n_max - 1 (lanes: queries)
            for (int64_t tb = 0; tb < n_max; tb += 4) {
                __m512 acc[4][4];
#pragma GCC unroll 4
                for (int kk = 0; kk < 4; kk++)
#pragma GCC unroll 4
                    for (int i = 0; i < 4; i++) acc[kk][i] = _mm512_setzero_ps();
                const int64_t nt = n_max - tb < 4 ? n_max - tb : 4;
                int64_t       d  = 0;
                for (; d + 4 <= D; d += 4)
#pragma GCC unroll 4
                    for (int i = 0; i < 4; i++) {
                        __m512 qv = _mm512_load_ps(qt[d + i]);
#pragma GCC unroll 4
                        for (int kk = 0; kk < 4; kk++)
                            if (kk < nt)
                                acc[kk][i] = _mm512_fmadd_ps(_mm512_set1_ps(K[(d + i) * ks + tb + kk]), qv, acc[kk][i]);
                    }
                for (; d < D; d++) {
                    __m512 qv = _mm512_load_ps(qt[d]);
                    for (int kk = 0; kk < nt; kk++)
                        acc[kk][d % 4] = _mm512_fmadd_ps(_mm512_set1_ps(K[d * ks + tb + kk]), qv, acc[kk][d % 4]);
                }
#pragma GCC unroll 4
                for (int kk = 0; kk < 4; kk++) {
                    if (kk >= nt) break;
                    const int64_t   kt   = tb + kk;
                    const __m512    dot  = _mm512_add_ps(_mm512_add_ps(acc[kk][0], acc[kk][1]),
                                                         _mm512_add_ps(acc[kk][2], acc[kk][3]));
                    const __m512    pos  = _mm512_sub_ps(_mm512_set1_ps((float)(start + kt)), nkm1);
                    const __mmask16 live = _mm512_cmpgt_epi32_mask(nkv, _mm512_set1_epi32((int32_t)(start + kt)));
                    S[kt] = _mm512_mask_blend_ps(live, _mm512_set1_ps(-INFINITY),
                                                 _mm512_fmadd_ps(slope, pos, _mm512_mul_ps(dot, scale)));
                }
            }
            // the maximum, the weights (0 for dead keys and keys past n_max) and their sum
            __m512 cm = _mm512_set1_ps(-INFINITY);
            for (int64_t kt = 0; kt < n_max; kt++) cm = _mm512_max_ps(cm, S[kt]); // exact in any order
            const __m512 nm = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(cm, mx, _CMP_GT_OQ), mx, cm);
            const __m512 f  = spry_exp16(_mm512_sub_ps(mx, nm));
            mx              = nm;
            __m512 W[16];
            for (int64_t kt = 0; kt < 16; kt++)
                W[kt] = kt < n_max ? _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(S[kt], _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ),
                                                         spry_exp16(_mm512_sub_ps(S[kt], nm)))
                                   : _mm512_setzero_ps();
            __m512 a[8];
            for (int i = 0; i < 8; i++) a[i] = _mm512_add_ps(W[i], W[i + 8]);
            for (int i = 0; i < 4; i++) a[i] = _mm512_add_ps(a[i], a[i + 4]);
            for (int i = 0; i < 2; i++) a[i] = _mm512_add_ps(a[i], a[i + 2]);
            sum = _mm512_fmadd_ps(sum, f, _mm512_add_ps(a[0], a[1]));
            // the values: per column d, even and odd keys in two chains, then the merge
            for (int64_t d = 0; d < D; d++) {
                __m512  va = _mm512_setzero_ps(), vb = _mm512_setzero_ps();
                int64_t t  = 0;
                for (; t + 2 <= n_max; t += 2) {
                    va = _mm512_fmadd_ps(W[t], _mm512_set1_ps(V[t * vsf + d]), va);
                    vb = _mm512_fmadd_ps(W[t + 1], _mm512_set1_ps(V[(t + 1) * vsf + d]), vb);
                }
                if (t < n_max) va = _mm512_fmadd_ps(W[t], _mm512_set1_ps(V[t * vsf + d]), va);
                _mm512_store_ps(o[d], _mm512_fmadd_ps(_mm512_load_ps(o[d]), f, _mm512_add_ps(va, vb)));
            }
        }
    }
    const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), sum);
    for (int64_t d0 = 0; d0 < D; d0 += 16) { // back to rows, 16 x 16 blocks
        const __mmask16 m = spry_eng_tail16(D, d0);
        __m512          r[16];
        for (int i = 0; i < 16; i++) r[i] = d0 + i < D ? _mm512_mul_ps(_mm512_load_ps(o[d0 + i]), inv) : _mm512_setzero_ps();
        transpose16(r);
        for (int g = 0; g < G; g++) _mm512_mask_storeu_ps(out[g] + d0, m, r[g]);
    }
}

// group_avx512's kernels: groups of 1, 2 or 4 queries with 32 or 64 columns (D <= 64; a group of
// 3 runs as 2 + 1), and one query at a time with 128 columns (64 < D <= 128), each for f32 and f16
// caches (larger groups go to lanes16_avx512). Columns past D are masked to zero and change no
// output bit. D <= 128.
AVX512 INLINE void group_dispatch_h(const att_src *A, int G, const float *const *q, const int64_t *nk, float *const *out,
                                    bool half) {
    const int64_t D = A->D;
    if (D > 64) {
        for (int g = 0; g < G; g++) group_avx512(A, 1, q + g, nk + g, out + g, 8, half);
        return;
    }
    for (int g0 = 0; g0 < G;) {
        int n = G - g0 >= 4 ? 4 : G - g0 >= 2 ? 2 : 1;
        if (D <= 32) {
            if (n == 4) group_avx512(A, 4, q + g0, nk + g0, out + g0, 2, half);
            else if (n == 2) group_avx512(A, 2, q + g0, nk + g0, out + g0, 2, half);
            else group_avx512(A, 1, q + g0, nk + g0, out + g0, 2, half);
        } else {
            if (n == 4) group_avx512(A, 4, q + g0, nk + g0, out + g0, 4, half);
            else if (n == 2) group_avx512(A, 2, q + g0, nk + g0, out + g0, 4, half);
            else group_avx512(A, 1, q + g0, nk + g0, out + g0, 4, half);
        }
        g0 += n;
    }
}

AVX512 static void group_f32(const att_src *A, int G, const float *const *q, const int64_t *nk, float *const *out) {
    if (G > GMAX) lanes16_avx512(A, G, q, nk, out, false);
    else group_dispatch_h(A, G, q, nk, out, false);
}

AVX512 static void group_f16(const att_src *A, int G, const float *const *q, const int64_t *nk, float *const *out) {
    if (G > GMAX) lanes16_avx512(A, G, q, nk, out, true);
    else group_dispatch_h(A, G, q, nk, out, true);
}

void spry_eng_attend_group(int G, const float *const *q, const int64_t *nk, float *const *out, const spry_eng_kv *kv,
                           int64_t D, float scale, float slope) {
    const att_src     A = {*kv, D, scale, slope};
    spry_cpu_features f = spry_cpu_detect();
    if (G >= 1 && G <= SPRY_ENG_ATTEND_GROUP && D <= 128 && f.avx512f && f.avx512bw) {
        (kv->half ? group_f16 : group_f32)(&A, G, q, nk, out);
        return;
    }
    for (int g = 0; g < G; g++) attend_scalar(&A, q[g], nk[g], out[g]);
}

AVX512 static void store_keys_avx512(const float *k, size_t kstride, int64_t n, void *dst, int64_t bt, int64_t D,
                                     bool half) {
    if (n == 1) { // one row (decode): widened or copied 16 columns at a time, then one store per slot
        for (int64_t d0 = 0; d0 < D; d0 += 16) {
            const __mmask16 m = spry_eng_tail16(D, d0);
            const int64_t   nd = D - d0 < 16 ? D - d0 : 16;
            if (half) {
                __attribute__((aligned(32))) uint16_t h[16];
                __m512 x = _mm512_maskz_loadu_ps(m, k + d0);
                _mm256_store_si256((__m256i *)h, _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
                for (int64_t i = 0; i < nd; i++) ((uint16_t *)dst)[(d0 + i) * bt] = h[i];
            } else {
                for (int64_t i = 0; i < nd; i++) ((float *)dst)[(d0 + i) * bt] = k[d0 + i];
            }
        }
        return;
    }
    const __mmask16 nm = spry_eng_tail16(n, 0); // the n slots written
    for (int64_t d0 = 0; d0 < D; d0 += 16) {
        const __mmask16 m = spry_eng_tail16(D, d0);
        __m512          r[16];
        for (int i = 0; i < 16; i++) r[i] = i < n ? _mm512_maskz_loadu_ps(m, k + (size_t)i * kstride + d0) : _mm512_setzero_ps();
        transpose16(r); // r[i]: column d0 + i of the n rows
        for (int i = 0; i < 16 && d0 + i < D; i++) {
            if (half) {
                __m256i h = _mm512_cvtps_ph(r[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                _mm512_mask_storeu_epi16((uint16_t *)dst + (d0 + i) * bt, (__mmask32)nm, _mm512_castsi256_si512(h));
            } else {
                _mm512_mask_storeu_ps((float *)dst + (d0 + i) * bt, nm, r[i]);
            }
        }
    }
}

void spry_eng_store_keys(const float *k, size_t kstride, int64_t n, void *dst, int64_t bt, int64_t D, bool half) {
    spry_cpu_features f = spry_cpu_detect();
    if (f.avx512f && f.avx512bw) {
        store_keys_avx512(k, kstride, n, dst, bt, D, half);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < D; d++) {
            float x = k[(size_t)i * kstride + (size_t)d];
            if (half) ((uint16_t *)dst)[d * bt + i] = spry_f32_to_f16(x);
            else ((float *)dst)[d * bt + i] = x;
        }
}

void spry_eng_attend_prefetch(const spry_eng_kv *kv, int64_t nk, int64_t D) {
    for (int64_t x = 0; x < PF_CHUNKS * 16 && x < nk; x += 16) prefetch_chunk(kv, x, D);
}

void spry_eng_attend(const float *q, const spry_eng_kv *kv, int64_t nk, int64_t D, float scale, float slope,
                     float *out) {
    spry_eng_attend_group(1, &q, &nk, &out, kv, D, scale, slope);
}
