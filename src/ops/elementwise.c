/*
 * elementwise.c -- add, mul, scale (broadcast over leading dims), GELU (tanh approximation) and
 * dropout. PyTorch: torch.add / torch.mul / torch.nn.functional.gelu(approximate="tanh") /
 * torch.nn.functional.dropout. Broadcasting: b's shape is a suffix of a's, so b repeats with
 * period nb = numel(b); its gradient sums over the repeats, split by column for determinism.
 */
#include <math.h>

#include "fastmath.h"
#include "op_def.h"
#include "spry/rng.h"

static void check_suffix(const spry_tensor *a, const spry_tensor *b, const char *op) {
    bool ok = b->ndim <= a->ndim;
    for (int i = 0; ok && i < b->ndim; i++)
        ok = b->shape[b->ndim - 1 - i] == a->shape[a->ndim - 1 - i];
    SPRY_ASSERT(ok, "%s: shape of b must be a suffix of a's: %s", op, spry_shapes2(a, b));
    SPRY_ASSERT(spry_tensor_is_contiguous(a) && spry_tensor_is_contiguous(b),
                "%s: inputs must be contiguous", op);
}

/* ---- add ---------------------------------------------------------------------------------- */

static spry_tensor *binary(spry_ctx *ctx, spry_op op, spry_tensor *a, spry_tensor *b,
                           const char *name) {
    if (ctx->status) return spry_op_placeholder();
    check_suffix(a, b, name);
    spry_tensor *out = spry_new(ctx, SPRY_DTYPE_F32, a->ndim, a->shape);
    spry_op_apply(ctx, op, (spry_tensor *[]){a, b}, 2, out, NULL, NULL, NULL);
    return out;
}

spry_tensor *spry_add(spry_ctx *ctx, spry_tensor *a, spry_tensor *b) {
    return binary(ctx, SPRY_OP_ADD, a, b, "add");
}

static void add_fwd(const spry_node *n, int ith, int nth) {
    const float *a = F32(n->src[0]), *b = F32(n->src[1]);
    float       *y  = F32(n->out);
    int64_t      nb = spry_tensor_numel(n->src[1]), rows = spry_tensor_numel(n->src[0]) / nb;
    int64_t      lo, hi;
    spry_split(rows, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++)
        for (int64_t j = 0; j < nb; j++) y[r * nb + j] = a[r * nb + j] + b[j];
}

// d(sum over repeats) for a broadcast input: db[j] += sum_r g[r, j] (* w[r, j] if w).
static void reduce_repeats(const float *g, const float *w, float *db, int64_t rows, int64_t nb,
                           int ith, int nth) {
    int64_t lo, hi;
    spry_split(nb, ith, nth, &lo, &hi);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = lo; j < hi; j++) db[j] += g[r * nb + j] * (w ? w[r * nb + j] : 1.0f);
}

static void add_bwd(const spry_node *n, int ith, int nth) {
    const float *g  = F32(n->out->grad);
    int64_t      nb = spry_tensor_numel(n->src[1]), na = spry_tensor_numel(n->src[0]);
    if (spry_needs_grad(n->src[0])) {
        float  *da = F32(n->src[0]->grad);
        int64_t lo, hi;
        spry_split(na, ith, nth, &lo, &hi);
        for (int64_t i = lo; i < hi; i++) da[i] += g[i];
    }
#pragma omp barrier
    if (spry_needs_grad(n->src[1])) reduce_repeats(g, NULL, F32(n->src[1]->grad), na / nb, nb, ith, nth);
}

static void add_ref(const spry_node *n) {
    int64_t nb = spry_tensor_numel(n->src[1]), na = spry_tensor_numel(n->src[0]);
    for (int64_t i = 0; i < na; i++) F64(n->out)[i] = F64(n->src[0])[i] + F64(n->src[1])[i % nb];
}

static spry_tensor *add_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    (void)t;
    return spry_add(ctx, s[0], s[1]);
}

static const spry_op_test add_tests[] = {
    {.label = "same", .n_src = 2, .ndim = {2, 2}, .shape = {{3, 5}, {3, 5}}},
    {.label = "bcast", .n_src = 2, .ndim = {3, 1}, .shape = {{2, 3, 7}, {7}}},
    {.label = "bcast2", .n_src = 2, .ndim = {3, 2}, .shape = {{4, 3, 5}, {3, 5}}},
};

const spry_op_def spry_opdef_add = {
    .name = "add", .n_src = 2, .fwd = add_fwd, .bwd = add_bwd, .ref = add_ref,
    .build = add_build, .tests = add_tests, .n_tests = 3,
};

/* ---- mul ---------------------------------------------------------------------------------- */

spry_tensor *spry_mul(spry_ctx *ctx, spry_tensor *a, spry_tensor *b) {
    return binary(ctx, SPRY_OP_MUL, a, b, "mul");
}

static void mul_fwd(const spry_node *n, int ith, int nth) {
    const float *a = F32(n->src[0]), *b = F32(n->src[1]);
    float       *y  = F32(n->out);
    int64_t      nb = spry_tensor_numel(n->src[1]), rows = spry_tensor_numel(n->src[0]) / nb;
    int64_t      lo, hi;
    spry_split(rows, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++)
        for (int64_t j = 0; j < nb; j++) y[r * nb + j] = a[r * nb + j] * b[j];
}

static void mul_bwd(const spry_node *n, int ith, int nth) {
    const float *g = F32(n->out->grad), *a = F32(n->src[0]), *b = F32(n->src[1]);
    int64_t      nb = spry_tensor_numel(n->src[1]), na = spry_tensor_numel(n->src[0]);
    if (spry_needs_grad(n->src[0])) {
        float  *da = F32(n->src[0]->grad);
        int64_t lo, hi;
        spry_split(na / nb, ith, nth, &lo, &hi);
        for (int64_t r = lo; r < hi; r++)
            for (int64_t j = 0; j < nb; j++) da[r * nb + j] += g[r * nb + j] * b[j];
    }
#pragma omp barrier
    if (spry_needs_grad(n->src[1])) reduce_repeats(g, a, F32(n->src[1]->grad), na / nb, nb, ith, nth);
}

static void mul_ref(const spry_node *n) {
    int64_t nb = spry_tensor_numel(n->src[1]), na = spry_tensor_numel(n->src[0]);
    for (int64_t i = 0; i < na; i++) F64(n->out)[i] = F64(n->src[0])[i] * F64(n->src[1])[i % nb];
}

static spry_tensor *mul_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    (void)t;
    return spry_mul(ctx, s[0], s[1]);
}

const spry_op_def spry_opdef_mul = {
    .name = "mul", .n_src = 2, .fwd = mul_fwd, .bwd = mul_bwd, .ref = mul_ref,
    .build = mul_build, .tests = add_tests, .n_tests = 3,
};

/* ---- scale -------------------------------------------------------------------------------- */

spry_tensor *spry_scale(spry_ctx *ctx, spry_tensor *a, float s) {
    if (ctx->status) return spry_op_placeholder();
    SPRY_ASSERT(spry_tensor_is_contiguous(a), "scale: input must be contiguous");
    spry_tensor *out = spry_new(ctx, SPRY_DTYPE_F32, a->ndim, a->shape);
    spry_op_apply(ctx, SPRY_OP_SCALE, &a, 1, out, NULL, (float[SPRY_MAX_PARAMS]){s}, NULL);
    return out;
}

static void scale_fwd(const spry_node *n, int ith, int nth) {
    int64_t lo, hi;
    spry_split(spry_tensor_numel(n->out), ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) F32(n->out)[i] = F32(n->src[0])[i] * n->fp[0];
}

static void scale_bwd(const spry_node *n, int ith, int nth) {
    if (!spry_needs_grad(n->src[0])) return;
    int64_t lo, hi;
    spry_split(spry_tensor_numel(n->out), ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) F32(n->src[0]->grad)[i] += F32(n->out->grad)[i] * n->fp[0];
}

static void scale_ref(const spry_node *n) {
    for (int64_t i = 0; i < spry_tensor_numel(n->out); i++)
        F64(n->out)[i] = F64(n->src[0])[i] * (double)n->fp[0];
}

static spry_tensor *scale_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    return spry_scale(ctx, s[0], t->fp[0]);
}

static const spry_op_test scale_tests[] = {
    {.label = "x0.37", .n_src = 1, .ndim = {2}, .shape = {{5, 3}}, .fp = {0.37f}},
};

const spry_op_def spry_opdef_scale = {
    .name = "scale", .n_src = 1, .fwd = scale_fwd, .bwd = scale_bwd, .ref = scale_ref,
    .build = scale_build, .tests = scale_tests, .n_tests = 1,
};

/* ---- gelu (tanh approximation, or exact) ---------------------------------------------------
 * ip[0] = 0, tanh (GPT-2's gelu_new, BLOOM):
 *   y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
 *   dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
 * ip[0] = 1, exact (BERT's "gelu", torch's default):
 *   y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2));  dy/dx = Phi(x) + x exp(-x^2 / 2) / sqrt(2 pi) */

#define GELU_K 0.7978845608028654f
#define GELU_C 0.044715f

spry_tensor *spry_gelu(spry_ctx *ctx, spry_tensor *x) {
    if (ctx->status) return spry_op_placeholder();
    SPRY_ASSERT(spry_tensor_is_contiguous(x), "gelu: input must be contiguous");
    spry_tensor *out = spry_new(ctx, SPRY_DTYPE_F32, x->ndim, x->shape);
    spry_op_apply(ctx, SPRY_OP_GELU, &x, 1, out, NULL, NULL, NULL);
    return out;
}

spry_tensor *spry_gelu_erf(spry_ctx *ctx, spry_tensor *x) {
    if (ctx->status) return spry_op_placeholder();
    SPRY_ASSERT(spry_tensor_is_contiguous(x), "gelu: input must be contiguous");
    spry_tensor *out = spry_new(ctx, SPRY_DTYPE_F32, x->ndim, x->shape);
    spry_op_apply(ctx, SPRY_OP_GELU, &x, 1, out, (int64_t[SPRY_MAX_PARAMS]){1}, NULL, NULL);
    return out;
}

#define GELU_RSQRT2   0.70710678118654752f
#define GELU_RSQRT2PI 0.39894228040143268f

static void gelu_erf_rows(const float *x, float *y, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * GELU_RSQRT2));
}

static void gelu_erf_bwd_rows(const float *x, const float *g, float *dx, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) {
        float v = x[i];
        dx[i] += g[i] * (0.5f * (1.0f + erff(v * GELU_RSQRT2)) + v * expf(-0.5f * v * v) * GELU_RSQRT2PI);
    }
}

__attribute__((target_clones("avx512f", "default")))
static void gelu_rows(const float *x, float *y, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) {
        float v = x[i];
        y[i]    = 0.5f * v * (1.0f + spry_tanhf(GELU_K * (v + GELU_C * v * v * v)));
    }
}

static void gelu_fwd(const spry_node *n, int ith, int nth) {
    int64_t lo, hi;
    spry_split(spry_tensor_numel(n->out), ith, nth, &lo, &hi);
    (n->ip[0] ? gelu_erf_rows : gelu_rows)(F32(n->src[0]), F32(n->out), lo, hi);
}

__attribute__((target_clones("avx512f", "default")))
static void gelu_bwd_rows(const float *x, const float *g, float *dx, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) {
        float v = x[i];
        float t = spry_tanhf(GELU_K * (v + GELU_C * v * v * v));
        float d = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * GELU_K * (1.0f + 3.0f * GELU_C * v * v);
        dx[i] += g[i] * d;
    }
}

static void gelu_bwd(const spry_node *n, int ith, int nth) {
    if (!spry_needs_grad(n->src[0])) return;
    int64_t lo, hi;
    spry_split(spry_tensor_numel(n->out), ith, nth, &lo, &hi);
    (n->ip[0] ? gelu_erf_bwd_rows : gelu_bwd_rows)(F32(n->src[0]), F32(n->out->grad),
                                                   F32(n->src[0]->grad), lo, hi);
}

static void gelu_ref(const spry_node *n) {
    for (int64_t i = 0; i < spry_tensor_numel(n->out); i++) {
        double v = F64(n->src[0])[i];
        F64(n->out)[i] = n->ip[0] ? 0.5 * v * (1.0 + erf(v / sqrt(2.0)))
                                  : 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    }
}

static spry_tensor *gelu_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    return t->ip[0] ? spry_gelu_erf(ctx, s[0]) : spry_gelu(ctx, s[0]);
}

static const spry_op_test gelu_tests[] = {
    {.label = "2d", .n_src = 1, .ndim = {2}, .shape = {{7, 13}}},
    {.label = "big", .n_src = 1, .ndim = {1}, .shape = {{1031}}},
    {.label = "erf", .n_src = 1, .ndim = {2}, .shape = {{5, 19}}, .ip = {1}},
};

const spry_op_def spry_opdef_gelu = {
    .name = "gelu", .n_src = 1, .fwd = gelu_fwd, .bwd = gelu_bwd, .ref = gelu_ref,
    .build = gelu_build, .tests = gelu_tests, .n_tests = 3,
};

/* ---- dropout ------------------------------------------------------------------------------
 * Inverted dropout: keep element i with probability 1-p, scaled by 1/(1-p). The keep decision
 * for element i is Philox(seed, stream, i), so it is independent of threads and is regenerated
 * (not stored) by backward and by the reference. fp[0] = p, ip[0] = stream. */

spry_tensor *spry_dropout(spry_ctx *ctx, spry_tensor *x, float p) {
    if (ctx->status) return spry_op_placeholder();
    if (p <= 0.0f || !ctx->grad_enabled) return x;
    SPRY_ASSERT(p < 1.0f && spry_tensor_is_contiguous(x), "dropout: p=%g must be < 1", (double)p);
    spry_tensor *out    = spry_new(ctx, SPRY_DTYPE_F32, x->ndim, x->shape);
    int64_t      stream = (int64_t)ctx->rng_counter++;
    spry_op_apply(ctx, SPRY_OP_DROPOUT, &x, 1, out, (int64_t[SPRY_MAX_PARAMS]){stream},
                  (float[SPRY_MAX_PARAMS]){p}, NULL);
    return out;
}

static inline float keep_scale(const spry_node *n, int64_t i) {
    float u = spry_rng_uniform(n->ctx->seed, (uint64_t)n->ip[0] | (1ull << 62), (uint64_t)i);
    return u >= n->fp[0] ? 1.0f / (1.0f - n->fp[0]) : 0.0f;
}

static void dropout_fwd(const spry_node *n, int ith, int nth) {
    int64_t lo, hi;
    spry_split(spry_tensor_numel(n->out), ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) F32(n->out)[i] = F32(n->src[0])[i] * keep_scale(n, i);
}

static void dropout_bwd(const spry_node *n, int ith, int nth) {
    if (!spry_needs_grad(n->src[0])) return;
    int64_t lo, hi;
    spry_split(spry_tensor_numel(n->out), ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) F32(n->src[0]->grad)[i] += F32(n->out->grad)[i] * keep_scale(n, i);
}

static void dropout_ref(const spry_node *n) {
    for (int64_t i = 0; i < spry_tensor_numel(n->out); i++)
        F64(n->out)[i] = F64(n->src[0])[i] * (double)keep_scale(n, i);
}

static spry_tensor *dropout_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    return spry_dropout(ctx, s[0], t->fp[0]);
}

static const spry_op_test dropout_tests[] = {
    {.label = "p0.3", .n_src = 1, .ndim = {2}, .shape = {{9, 17}}, .fp = {0.3f}},
};

const spry_op_def spry_opdef_dropout = {
    .name = "dropout", .n_src = 1, .fwd = dropout_fwd, .bwd = dropout_bwd, .ref = dropout_ref,
    .build = dropout_build, .tests = dropout_tests, .n_tests = 1,
};
