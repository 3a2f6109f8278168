// ctest-label: unit
/*
 * test_attention.c -- the serving engine's attention over the paged KV cache
 * (spry_eng_attend / spry_eng_attend_group, src/infer/engine_attention.c).
 *
 * (a) Against a double-precision softmax attention (scores q.k * scale + slope * (j - p), ALiBi
 *     slopes included) on a pool of shuffled blocks: |out - ref| <= 1e-5 * (1 + |ref|).
 * (b) Groups: every query of a group of 2 .. 16 (key counts consecutive as in a prefill, or
 *     arbitrary, equal, or in blocks the others do not reach) gives the same bits as alone -- the
 *     engine's batch invariance rests on it. Groups of up to 4 run the grouped kernels, larger ones
 *     one query per lane. D = 10, 64, 100, block sizes 16 and 24 (chunks cut inside a block).
 * (c) The f16 cache: with values that f16 holds exactly, the same bits as the f32 cache (the
 *     loads widen exactly), alone and in groups.
 * (d) spry_eng_store_keys writes 1 .. 16 rows of keys into their d-major slots (f32 and f16
 *     rounded as spry_f32_to_f16) and nothing else.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "infer/engine_kernels.h"
#include "spry/dtype.h"

static uint64_t g_state = 0x2545F4914F6CDD1Dull;
static float frand(void) { // uniform in [-1, 1)
    g_state = g_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_state >> 40) * (1.0 / (1 << 24)) * 2.0 - 1.0);
}

typedef struct pool {
    int64_t  D, bt, C, nblk;
    size_t   bstride;
    float   *mem;
    uint16_t *mem16;       // the same values as IEEE halves
    int32_t  table[64];
    spry_eng_kv kv, kv16; // head 1 of the f32 and f16 pools
} pool;

// A pool of nblk blocks, each (2, bt, C) like the engine's one layer, random keys and values that
// f16 holds exactly (so the f32 and f16 caches hold the same numbers); the sequence's block table
// visits them in a shuffled order; head 1 of C / D heads is used.
static void pool_make(pool *P, int64_t D, int64_t bt, int64_t nblk) {
    P->D = D, P->bt = bt, P->C = 3 * D, P->nblk = nblk, P->bstride = (size_t)(2 * bt * P->C);
    size_t n = P->bstride * (size_t)nblk;
    P->mem = xmalloc(sizeof(float) * n), P->mem16 = xmalloc(sizeof(uint16_t) * n);
    for (size_t i = 0; i < n; i++) P->mem16[i] = spry_f32_to_f16(frand()), P->mem[i] = spry_f16_to_f32(P->mem16[i]);
    for (int64_t j = 0; j < nblk; j++) P->table[j] = (int32_t)((j * 7 + 3) % nblk);
    // head 1's keys: (D, bt) d-major; its values: rows of C
    P->kv   = (spry_eng_kv){P->table, P->mem + D * bt, P->mem + bt * P->C + D, P->bstride, bt, P->C, false};
    P->kv16 = (spry_eng_kv){P->table, P->mem16 + D * bt, P->mem16 + bt * P->C + D, P->bstride, bt, P->C, true};
}

static void reference(const pool *P, const float *q, int64_t nk, float scale, float slope, double *out) {
    double *s = malloc(sizeof(double) * (size_t)nk), mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < nk; j++) {
        const float *Kt = (const float *)P->kv.kbase + (size_t)P->table[j / P->bt] * P->bstride;
        double       d0 = 0;
        for (int64_t d = 0; d < P->D; d++) d0 += (double)q[d] * Kt[d * P->bt + j % P->bt];
        s[j] = d0 * scale + (double)slope * (double)(j - (nk - 1));
        mx   = s[j] > mx ? s[j] : mx;
    }
    for (int64_t d = 0; d < P->D; d++) out[d] = 0;
    for (int64_t j = 0; j < nk; j++) {
        const float *V = (const float *)P->kv.vbase + (size_t)P->table[j / P->bt] * P->bstride + (j % P->bt) * P->C;
        double       w = exp(s[j] - mx);
        sum += w;
        for (int64_t d = 0; d < P->D; d++) out[d] += w * V[d];
    }
    for (int64_t d = 0; d < P->D; d++) out[d] /= sum;
    free(s);
}

static void check_config(int64_t D, int64_t bt, float slope) {
    pool P;
    const int64_t nblk = 12, nmax = nblk * bt;
    pool_make(&P, D, bt, nblk);
    const float scale = 1.0f / sqrtf((float)D);
    const size_t rows = sizeof(float) * (size_t)(D * SPRY_ENG_ATTEND_GROUP);
    float *q = xmalloc(rows), *alone = xmalloc(rows), *grouped = xmalloc(rows), *half = xmalloc(rows);
    double *ref = xmalloc(sizeof(double) * (size_t)D);
    // key counts per case: consecutive (prefill) from 1, 15, 40 and ending at nmax; arbitrary;
    // equal; far apart; single keys among long ones
    int64_t cases[8][SPRY_ENG_ATTEND_GROUP];
    for (int g = 0; g < SPRY_ENG_ATTEND_GROUP; g++) {
        cases[0][g] = 1 + g, cases[1][g] = 15 + g, cases[2][g] = 40 + g;
        cases[3][g] = nmax - (SPRY_ENG_ATTEND_GROUP - 1) + g;
        cases[4][g] = 1 + (g * 37 + 5) % nmax, cases[5][g] = 50;
        cases[6][g] = g % 2 ? 1 + g : nmax - g, cases[7][g] = g % 3 ? 31 + g : 1;
    }
    int far = 0, differ = 0, differ16 = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int G = 1; G <= SPRY_ENG_ATTEND_GROUP; G++) {
            const float *qs[SPRY_ENG_ATTEND_GROUP];
            float       *os[SPRY_ENG_ATTEND_GROUP], *hs[SPRY_ENG_ATTEND_GROUP];
            int64_t      nk[SPRY_ENG_ATTEND_GROUP];
            for (int g = 0; g < G; g++) {
                for (int64_t d = 0; d < D; d++) q[g * D + d] = 2.0f * frand();
                qs[g] = q + g * D, os[g] = grouped + g * D, hs[g] = half + g * D, nk[g] = cases[c][g];
                spry_eng_attend(qs[g], &P.kv, nk[g], D, scale, slope, alone + g * D);
                reference(&P, qs[g], nk[g], scale, slope, ref);
                for (int64_t d = 0; d < D; d++)
                    far += !(fabs(alone[g * D + d] - ref[d]) <= 1e-5 * (1 + fabs(ref[d])));
            }
            spry_eng_attend_group(G, qs, nk, os, &P.kv, D, scale, slope);
            differ += memcmp(grouped, alone, sizeof(float) * (size_t)(G * D)) != 0;
            // the f16 cache widens exactly: the same numbers give the same bits, grouped or not
            spry_eng_attend_group(G, qs, nk, hs, &P.kv16, D, scale, slope);
            differ16 += memcmp(half, alone, sizeof(float) * (size_t)(G * D)) != 0;
        }
    CHECK_MSG(far == 0, "D=%lld bt=%lld slope=%g: %d outputs beyond 1e-5 of the double reference", (long long)D,
              (long long)bt, (double)slope, far);
    CHECK_MSG(differ == 0, "D=%lld bt=%lld slope=%g: %d groups differ from their queries alone", (long long)D,
              (long long)bt, (double)slope, differ);
    CHECK_MSG(differ16 == 0, "D=%lld bt=%lld slope=%g: %d groups over the f16 cache differ from the f32 cache",
              (long long)D, (long long)bt, (double)slope, differ16);
    free(P.mem), free(P.mem16), free(q), free(alone), free(grouped), free(half), free(ref);
}

// spry_eng_store_keys: n rows of keys into d-major slots t0 .. t0 + n - 1 of a block, f32 and f16,
// against the definition; the other slots keep their bytes.
static void check_store_keys(int64_t D, int64_t bt) {
    const size_t kstride = (size_t)(3 * D + 5);
    float    *k   = xmalloc(sizeof(float) * kstride * 16);
    float    *blk = xmalloc(sizeof(float) * (size_t)(D * bt));
    uint16_t *b16 = xmalloc(sizeof(uint16_t) * (size_t)(D * bt));
    int       bad = 0;
    for (size_t i = 0; i < kstride * 16; i++) k[i] = 3.0f * frand();
    for (int64_t n = 1; n <= 16 && n <= bt; n++)
        for (int64_t t0 = 0; t0 + n <= bt; t0 += (bt - n) / 2 + 1) {
            for (int64_t i = 0; i < D * bt; i++) blk[i] = -7.0f, b16[i] = 0x1234;
            spry_eng_store_keys(k, kstride, n, blk + t0, bt, D, false);
            spry_eng_store_keys(k, kstride, n, b16 + t0, bt, D, true);
            for (int64_t d = 0; d < D; d++)
                for (int64_t t = 0; t < bt; t++) {
                    bool   in = t >= t0 && t < t0 + n;
                    float  x  = in ? k[(size_t)(t - t0) * kstride + (size_t)d] : -7.0f;
                    bad += blk[d * bt + t] != x;
                    bad += b16[d * bt + t] != (in ? spry_f32_to_f16(x) : 0x1234);
                }
        }
    CHECK_MSG(bad == 0, "store_keys D=%lld bt=%lld: %d slots wrong", (long long)D, (long long)bt, bad);
    free(k), free(blk), free(b16);
}

int main(void) {
    const int64_t Ds[] = {10, 64, 100}, bts[] = {16, 24};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) {
            check_config(Ds[i], bts[j], 0.0f);
            check_config(Ds[i], bts[j], -0.0625f); // an ALiBi slope
            check_store_keys(Ds[i], bts[j]);
        }
    return check_exit();
}
