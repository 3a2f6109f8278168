/*
 * norm.c -- LayerNorm over the last dim (torch.nn.functional.layer_norm), with llm.c's
 * forward/backward pair: forward keeps mean and rstd per row (saved[0], saved[1], (N)) for
 * backward.  y = (x - mean) * rstd * w + b, rstd = 1/sqrt(var + eps), biased variance.
 * dx = rstd * (g*w - mean(g*w) - xhat * mean(g*w*xhat));  dw += sum_rows g*xhat;  db += sum_rows g.
 */
#include <math.h>

#include "op_def.h"

spry_tensor *spry_layernorm(spry_ctx *ctx, spry_tensor *x, spry_tensor *w, spry_tensor *b,
                            float eps) {
    if (ctx->status) return spry_op_placeholder();
    int64_t C = x->shape[x->ndim - 1];
    SPRY_ASSERT(w->ndim == 1 && w->shape[0] == C && b->ndim == 1 && b->shape[0] == C,
                "layernorm: weight/bias must be (%lld): %s", (long long)C, spry_shapes2(x, w));
    SPRY_ASSERT(spry_tensor_is_contiguous(x), "layernorm: input must be contiguous");
    int64_t      N     = spry_tensor_numel(x) / C;
    spry_tensor *out   = spry_new(ctx, SPRY_DTYPE_F32, x->ndim, x->shape);
    spry_tensor *mean  = spry_new(ctx, SPRY_DTYPE_F32, 1, &N);
    spry_tensor *rstd  = spry_new(ctx, SPRY_DTYPE_F32, 1, &N);
    spry_op_apply(ctx, SPRY_OP_LAYERNORM, (spry_tensor *[]){x, w, b}, 3, out, NULL,
                  (float[SPRY_MAX_PARAMS]){eps}, (spry_tensor *[SPRY_MAX_SAVED]){mean, rstd});
    return out;
}

__attribute__((target_clones("avx512f", "default")))
static void ln_rows(const float *x, const float *w, const float *b, float *y, float *mean,
                    float *rstd, int64_t C, float eps, int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; r++) {
        const float *xr = x + r * C;
        float       *yr = y + r * C;
        float        m  = 0.0f;
        for (int64_t i = 0; i < C; i++) m += xr[i];
        m /= (float)C;
        float v = 0.0f;
        for (int64_t i = 0; i < C; i++) v += (xr[i] - m) * (xr[i] - m);
        v /= (float)C;
        float s = 1.0f / sqrtf(v + eps);
        for (int64_t i = 0; i < C; i++) yr[i] = (xr[i] - m) * s * w[i] + b[i];
        mean[r] = m;
        rstd[r] = s;
    }
}

static void ln_fwd(const spry_node *n, int ith, int nth) {
    int64_t C = n->src[0]->shape[n->src[0]->ndim - 1], N = spry_tensor_numel(n->src[0]) / C;
    int64_t lo, hi;
    spry_split(N, ith, nth, &lo, &hi);
    ln_rows(F32(n->src[0]), F32(n->src[1]), F32(n->src[2]), F32(n->out), F32(n->saved[0]),
            F32(n->saved[1]), C, n->fp[0], lo, hi);
}

__attribute__((target_clones("avx512f", "default")))
static void ln_bwd_rows(const float *x, const float *w, const float *g, const float *mean,
                        const float *rstd, float *dx, int64_t C, int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; r++) {
        const float *xr = x + r * C, *gr = g + r * C;
        float        m = mean[r], s = rstd[r], a = 0.0f, bsum = 0.0f;
        for (int64_t i = 0; i < C; i++) {
            float gw = gr[i] * w[i];
            a += gw;
            bsum += gw * (xr[i] - m) * s;
        }
        a /= (float)C;
        bsum /= (float)C;
        float *dr = dx + r * C;
        for (int64_t i = 0; i < C; i++) dr[i] += s * (gr[i] * w[i] - a - (xr[i] - m) * s * bsum);
    }
}

static void ln_bwd(const spry_node *n, int ith, int nth) {
    const spry_tensor *x = n->src[0];
    int64_t C = x->shape[x->ndim - 1], N = spry_tensor_numel(x) / C;
    const float *g = F32(n->out->grad), *mean = F32(n->saved[0]), *rstd = F32(n->saved[1]);
    int64_t lo, hi;
    if (spry_needs_grad(x)) {
        spry_split(N, ith, nth, &lo, &hi);
        ln_bwd_rows(F32(x), F32(n->src[1]), g, mean, rstd, F32(x->grad), C, lo, hi);
    }
    // dw, db: columns split across threads, rows summed in order (deterministic)
    spry_split(C, ith, nth, &lo, &hi);
    float *dw = spry_needs_grad(n->src[1]) ? F32(n->src[1]->grad) : NULL;
    float *db = spry_needs_grad(n->src[2]) ? F32(n->src[2]->grad) : NULL;
    if (!dw && !db) return;
    for (int64_t r = 0; r < N; r++) {
        const float *xr = F32(x) + r * C, *gr = g + r * C;
        for (int64_t i = lo; i < hi; i++) {
            if (dw) dw[i] += gr[i] * (xr[i] - mean[r]) * rstd[r];
            if (db) db[i] += gr[i];
        }
    }
}

static void ln_ref(const spry_node *n) {
    const spry_tensor *x = n->src[0];
    int64_t C = x->shape[x->ndim - 1], N = spry_tensor_numel(x) / C;
    for (int64_t r = 0; r < N; r++) {
        const double *xr = F64(x) + r * C;
        double        m = 0, v = 0;
        for (int64_t i = 0; i < C; i++) m += xr[i];
        m /= (double)C;
        for (int64_t i = 0; i < C; i++) v += (xr[i] - m) * (xr[i] - m);
        v /= (double)C;
        double s = 1.0 / sqrt(v + (double)n->fp[0]);
        for (int64_t i = 0; i < C; i++)
            F64(n->out)[r * C + i] = (xr[i] - m) * s * F64(n->src[1])[i] + F64(n->src[2])[i];
    }
}

static spry_tensor *ln_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    return spry_layernorm(ctx, s[0], s[1], s[2], t->fp[0]);
}

static const spry_op_test ln_tests[] = {
    {.label = "2d", .n_src = 3, .ndim = {2, 1, 1}, .shape = {{5, 7}, {7}, {7}}, .fp = {1e-5f}},
    {.label = "3d", .n_src = 3, .ndim = {3, 1, 1}, .shape = {{2, 3, 33}, {33}, {33}}, .fp = {1e-5f}},
};

const spry_op_def spry_opdef_layernorm = {
    .name = "layernorm", .n_src = 3, .fwd = ln_fwd, .bwd = ln_bwd, .ref = ln_ref,
    .build = ln_build, .tests = ln_tests, .n_tests = 2,
};
