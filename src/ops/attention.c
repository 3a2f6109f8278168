/*
 * attention.c -- fused multi-head scaled dot-product attention over a fused QKV tensor
 * (torch.nn.functional.scaled_dot_product_attention semantics; BLOOM's ALiBi from Press et al.,
 * "Train Short, Test Long", and HF transformers' build_alibi_tensor).
 *
 *   qkv (B, T, 3C) -> out (B, T, C), D = C / H, scale = 1/sqrt(D)
 *   S_ij = scale * q_i . k_j + slope_h * (j - i)   (ALiBi; HF adds slope*j: same softmax)
 *   P = softmax_j(S) over j <= i when causal;  o_i = sum_j P_ij v_j
 * The probabilities P (B, H, T, T) are kept for backward (saved[0]):
 *   dP_ij = do_i . v_j;  dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik)
 *   dq_i = scale sum_j dS_ij k_j;  dk_j += scale dS_ij q_i;  dv_j += P_ij do_i
 * Work splits over (b, h) pairs, which own disjoint slices of every output: no races, and the
 * per-pair arithmetic is the same for any thread count.
 */
#include <math.h>
#include <stdlib.h>

#include "fastmath.h"
#include "op_def.h"

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
    spry_tensor *probs = spry_new(ctx, SPRY_DTYPE_F32, 4, SPRY_SHAPE(B, p.n_head, T, T));
    if (ctx->status) return out;
    spry_op_apply(ctx, SPRY_OP_ATTENTION, &qkv, 1, out,
                  (int64_t[SPRY_MAX_PARAMS]){p.n_head, p.causal, p.alibi, p.layout}, NULL,
                  (spry_tensor *[SPRY_MAX_SAVED]){probs});
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

static inline float dotf(const float *a, const float *b, int64_t n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void attn_fwd(const spry_node *n, int ith, int nth) {
    attn_geom g = geom(n);
    int64_t   lo, hi, row = 3 * g.C;
    spry_split(g.B * g.H, ith, nth, &lo, &hi);
    for (int64_t bh = lo; bh < hi; bh++) {
        int64_t      b = bh / g.H, h = bh % g.H;
        const float *base  = F32(n->src[0]) + b * g.T * row + h * g.head_step;
        float        slope = g.alibi ? spry_alibi_slope(h, g.H) : 0.0f;
        for (int64_t i = 0; i < g.T; i++) {
            float       *P    = F32(n->saved[0]) + (bh * g.T + i) * g.T;
            const float *q    = base + i * row + g.q_off;
            int64_t      jend = g.causal ? i + 1 : g.T;
            float        m    = -INFINITY;
            for (int64_t j = 0; j < jend; j++) {
                P[j] = g.scale * dotf(q, base + j * row + g.k_off, g.D) + slope * (float)(j - i);
                m    = P[j] > m ? P[j] : m;
            }
            float s = 0.0f;
            for (int64_t j = 0; j < jend; j++) {
                P[j] = spry_expf(P[j] - m);
                s += P[j];
            }
            float inv = 1.0f / s;
            for (int64_t j = 0; j < jend; j++) P[j] *= inv;
            for (int64_t j = jend; j < g.T; j++) P[j] = 0.0f;
            float *o = F32(n->out) + (b * g.T + i) * g.C + h * g.D;
            for (int64_t d = 0; d < g.D; d++) o[d] = 0.0f;
            for (int64_t j = 0; j < jend; j++) {
                const float *v = base + j * row + g.v_off;
                float        p = P[j];
#pragma omp simd
                for (int64_t d = 0; d < g.D; d++) o[d] += p * v[d];
            }
        }
    }
}

static void attn_bwd(const spry_node *n, int ith, int nth) {
    if (!spry_needs_grad(n->src[0])) return;
    attn_geom g = geom(n);
    int64_t   lo, hi, row = 3 * g.C;
    spry_split(g.B * g.H, ith, nth, &lo, &hi);
    for (int64_t bh = lo; bh < hi; bh++) {
        int64_t      b = bh / g.H, h = bh % g.H;
        const float *base  = F32(n->src[0]) + b * g.T * row + h * g.head_step;
        float       *dbase = F32(n->src[0]->grad) + b * g.T * row + h * g.head_step;
        for (int64_t i = 0; i < g.T; i++) {
            const float *P    = F32(n->saved[0]) + (bh * g.T + i) * g.T;
            const float *dO   = F32(n->out->grad) + (b * g.T + i) * g.C + h * g.D;
            const float *q    = base + i * row + g.q_off;
            float       *dq   = dbase + i * row + g.q_off;
            int64_t      jend = g.causal ? i + 1 : g.T;
            // dP_ij and the row's sum_k P_ik dP_ik
            float dotsum = 0.0f;
            for (int64_t j = 0; j < jend; j++) dotsum += P[j] * dotf(dO, base + j * row + g.v_off, g.D);
            for (int64_t j = 0; j < jend; j++) {
                const float *k  = base + j * row + g.k_off;
                const float *v  = base + j * row + g.v_off;
                float       *dk = dbase + j * row + g.k_off;
                float       *dv = dbase + j * row + g.v_off;
                float        pj = P[j];
                float        ds = pj * (dotf(dO, v, g.D) - dotsum) * g.scale;
#pragma omp simd
                for (int64_t d = 0; d < g.D; d++) {
                    dq[d] += ds * k[d];
                    dk[d] += ds * q[d];
                    dv[d] += pj * dO[d];
                }
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
            for (int64_t i = 0; i < g.T; i++) {
                int64_t jend = g.causal ? i + 1 : g.T;
                double  m    = -INFINITY, s = 0;
                for (int64_t j = 0; j < jend; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < g.D; e++) d += base[i * row + g.q_off + e] * base[j * row + g.k_off + e];
                    S[j] = sc * d + slope * (double)(j - i);
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

static spry_tensor *attn_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    spry_attn_params p = {.n_head = t->ip[0], .causal = t->ip[1], .alibi = t->ip[2],
                          .layout = (spry_qkv_layout)t->ip[3]};
    return spry_attention(ctx, s[0], p);
}

static const spry_op_test attn_tests[] = {
    {.label = "gpt2-causal", .n_src = 1, .ndim = {3}, .shape = {{2, 5, 18}}, .ip = {3, 1, 0, 0}},
    {.label = "bidir", .n_src = 1, .ndim = {3}, .shape = {{1, 4, 24}}, .ip = {2, 0, 0, 0}},
    {.label = "bloom-alibi", .n_src = 1, .ndim = {3}, .shape = {{2, 6, 30}}, .ip = {5, 1, 1, 1}},
    {.label = "d64", .n_src = 1, .ndim = {3}, .shape = {{1, 9, 384}}, .ip = {2, 1, 0, 0}},
};

const spry_op_def spry_opdef_attention = {
    .name = "attention", .n_src = 1, .fwd = attn_fwd, .bwd = attn_bwd, .ref = attn_ref,
    .build = attn_build, .tests = attn_tests, .n_tests = 4,
};
