/*
 * softmax.c -- softmax over the last dim (torch.softmax(x, -1)) and the fused
 * log-softmax + NLL loss (torch.nn.functional.cross_entropy, reduction="mean",
 * ignore_index = any negative target).
 *
 * softmax backward: dx = y * (g - sum(g * y)).
 * cross entropy keeps each row's log-sum-exp (saved[0], (N)); backward recomputes
 * softmax = exp(x - lse) and adds g/n_counted * (softmax - onehot(target)).
 */
#include <math.h>

#include "fastmath.h"
#include "op_def.h"

spry_tensor *spry_softmax(spry_ctx *ctx, spry_tensor *x) {
    if (ctx->status) return spry_op_placeholder();
    SPRY_ASSERT(spry_tensor_is_contiguous(x), "softmax: input must be contiguous");
    spry_tensor *out = spry_new(ctx, SPRY_DTYPE_F32, x->ndim, x->shape);
    spry_op_apply(ctx, SPRY_OP_SOFTMAX, &x, 1, out, NULL, NULL, NULL);
    return out;
}

__attribute__((target_clones("avx512f", "default")))
static void softmax_row(const float *x, float *y, int64_t V) {
    float m = -INFINITY;
    for (int64_t j = 0; j < V; j++) m = x[j] > m ? x[j] : m;
    float s = 0.0f;
    for (int64_t j = 0; j < V; j++) {
        y[j] = spry_expf(x[j] - m);
        s += y[j];
    }
    float inv = 1.0f / s;
    for (int64_t j = 0; j < V; j++) y[j] *= inv;
}

static void softmax_fwd(const spry_node *n, int ith, int nth) {
    int64_t V = n->out->shape[n->out->ndim - 1], N = spry_tensor_numel(n->out) / V, lo, hi;
    spry_split(N, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) softmax_row(F32(n->src[0]) + r * V, F32(n->out) + r * V, V);
}

static void softmax_bwd(const spry_node *n, int ith, int nth) {
    if (!spry_needs_grad(n->src[0])) return;
    int64_t V = n->out->shape[n->out->ndim - 1], N = spry_tensor_numel(n->out) / V, lo, hi;
    spry_split(N, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *y = F32(n->out) + r * V, *g = F32(n->out->grad) + r * V;
        float       *dx = F32(n->src[0]->grad) + r * V, dot = 0.0f;
        for (int64_t j = 0; j < V; j++) dot += g[j] * y[j];
        for (int64_t j = 0; j < V; j++) dx[j] += y[j] * (g[j] - dot);
    }
}

static void softmax_ref(const spry_node *n) {
    int64_t V = n->out->shape[n->out->ndim - 1], N = spry_tensor_numel(n->out) / V;
    for (int64_t r = 0; r < N; r++) {
        const double *x = F64(n->src[0]) + r * V;
        double       *y = F64(n->out) + r * V, m = -INFINITY, s = 0;
        for (int64_t j = 0; j < V; j++) m = x[j] > m ? x[j] : m;
        for (int64_t j = 0; j < V; j++) s += exp(x[j] - m);
        for (int64_t j = 0; j < V; j++) y[j] = exp(x[j] - m) / s;
    }
}

static spry_tensor *softmax_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    (void)t;
    return spry_softmax(ctx, s[0]);
}

static const spry_op_test softmax_tests[] = {
    {.label = "2d", .n_src = 1, .ndim = {2}, .shape = {{6, 11}}},
    {.label = "wide", .n_src = 1, .ndim = {3}, .shape = {{2, 2, 301}}},
};

const spry_op_def spry_opdef_softmax = {
    .name = "softmax", .n_src = 1, .fwd = softmax_fwd, .bwd = softmax_bwd, .ref = softmax_ref,
    .build = softmax_build, .tests = softmax_tests, .n_tests = 2,
};

/* ---- cross entropy ------------------------------------------------------------------------ */

spry_tensor *spry_cross_entropy(spry_ctx *ctx, spry_tensor *logits, spry_tensor *targets) {
    if (ctx->status) return spry_op_placeholder();
    int64_t V = logits->shape[logits->ndim - 1], N = spry_tensor_numel(logits) / V;
    SPRY_ASSERT(targets->dtype == SPRY_DTYPE_I32 && spry_tensor_numel(targets) == N,
                "cross_entropy: targets must be I32 with one entry per row: %s",
                spry_shapes2(logits, targets));
    SPRY_ASSERT(spry_tensor_is_contiguous(logits), "cross_entropy: logits must be contiguous");
    int64_t counted = 0;
    for (int64_t r = 0; r < N; r++) {
        int32_t t = I32(targets)[r];
        SPRY_ASSERT(t < V, "cross_entropy: target %d out of range for vocab %lld", t, (long long)V);
        counted += t >= 0;
    }
    spry_tensor *out  = spry_new(ctx, SPRY_DTYPE_F32, 1, SPRY_SHAPE(1));
    spry_tensor *lse  = spry_new(ctx, SPRY_DTYPE_F32, 1, &N);
    spry_tensor *rowl = spry_new(ctx, SPRY_DTYPE_F32, 1, &N);
    spry_op_apply(ctx, SPRY_OP_CROSS_ENTROPY, (spry_tensor *[]){logits, targets}, 2, out,
                  (int64_t[SPRY_MAX_PARAMS]){counted}, NULL, (spry_tensor *[SPRY_MAX_SAVED]){lse, rowl});
    return out;
}

__attribute__((target_clones("avx512f", "default")))
static float row_lse(const float *x, int64_t V) {
    float m = -INFINITY;
    for (int64_t j = 0; j < V; j++) m = x[j] > m ? x[j] : m;
    float s = 0.0f;
    for (int64_t j = 0; j < V; j++) s += spry_expf(x[j] - m);
    return m + logf(s);
}

static void ce_fwd(const spry_node *n, int ith, int nth) {
    const spry_tensor *x = n->src[0];
    int64_t V = x->shape[x->ndim - 1], N = spry_tensor_numel(x) / V, lo, hi;
    spry_split(N, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        int32_t t             = I32(n->src[1])[r];
        float   l             = row_lse(F32(x) + r * V, V);
        F32(n->saved[0])[r]   = l;
        F32(n->saved[1])[r]   = t >= 0 ? l - F32(x)[r * V + t] : 0.0f;
    }
#pragma omp barrier
    if (ith == 0) {
        double s = 0.0;
        for (int64_t r = 0; r < N; r++) s += F32(n->saved[1])[r];
        F32(n->out)[0] = n->ip[0] ? (float)(s / (double)n->ip[0]) : 0.0f;
    }
}

__attribute__((target_clones("avx512f", "default")))
static void ce_bwd_row(const float *x, float *dx, float lse, float g, int64_t V) {
    for (int64_t j = 0; j < V; j++) dx[j] += g * spry_expf(x[j] - lse);
}

static void ce_bwd(const spry_node *n, int ith, int nth) {
    const spry_tensor *x = n->src[0];
    if (!spry_needs_grad(x) || n->ip[0] == 0) return;
    int64_t V = x->shape[x->ndim - 1], N = spry_tensor_numel(x) / V, lo, hi;
    float   g = F32(n->out->grad)[0] / (float)n->ip[0];
    spry_split(N, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        int32_t t = I32(n->src[1])[r];
        if (t < 0) continue;
        ce_bwd_row(F32(x) + r * V, F32(x->grad) + r * V, F32(n->saved[0])[r], g, V);
        F32(x->grad)[r * V + t] -= g;
    }
}

static void ce_ref(const spry_node *n) {
    const spry_tensor *x = n->src[0];
    int64_t V = x->shape[x->ndim - 1], N = spry_tensor_numel(x) / V, cnt = 0;
    double  total = 0;
    for (int64_t r = 0; r < N; r++) {
        int32_t t = I32(n->src[1])[r];
        if (t < 0) continue;
        const double *xr = F64(x) + r * V;
        double        m = -INFINITY, s = 0;
        for (int64_t j = 0; j < V; j++) m = xr[j] > m ? xr[j] : m;
        for (int64_t j = 0; j < V; j++) s += exp(xr[j] - m);
        total += m + log(s) - xr[t];
        cnt++;
    }
    F64(n->out)[0] = cnt ? total / (double)cnt : 0.0;
}

static spry_tensor *ce_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    (void)t;
    return spry_cross_entropy(ctx, s[0], s[1]);
}

static const spry_op_test ce_tests[] = {
    {.label = "2d", .n_src = 2, .dtype = {SPRY_DTYPE_F32, SPRY_DTYPE_I32}, .ndim = {2, 1},
     .shape = {{7, 13}, {7}}, .index_range = 13},
    {.label = "3d", .n_src = 2, .dtype = {SPRY_DTYPE_F32, SPRY_DTYPE_I32}, .ndim = {3, 2},
     .shape = {{2, 5, 101}, {2, 5}}, .index_range = 101},
};

const spry_op_def spry_opdef_cross_entropy = {
    .name = "cross_entropy", .n_src = 2, .fwd = ce_fwd, .bwd = ce_bwd, .ref = ce_ref,
    .build = ce_build, .tests = ce_tests, .n_tests = 2,
};
