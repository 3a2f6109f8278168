/*
 * reduce.c -- sum and mean of all elements (torch.sum / torch.mean with no dim) -> shape (1).
 * Accumulated in double in index order by one thread, so the result never depends on the thread
 * count; these reduce losses and small tensors, never hot activations.
 */
#include "op_def.h"

static spry_tensor *reduce_all(spry_ctx *ctx, spry_op op, spry_tensor *a) {
    if (ctx->status) return spry_op_placeholder();
    SPRY_ASSERT(spry_tensor_is_contiguous(a), "sum/mean: input must be contiguous");
    spry_tensor *out = spry_new(ctx, SPRY_DTYPE_F32, 1, SPRY_SHAPE(1));
    spry_op_apply(ctx, op, &a, 1, out, NULL, NULL, NULL);
    return out;
}

spry_tensor *spry_sum(spry_ctx *ctx, spry_tensor *a) { return reduce_all(ctx, SPRY_OP_SUM, a); }
spry_tensor *spry_mean(spry_ctx *ctx, spry_tensor *a) { return reduce_all(ctx, SPRY_OP_MEAN, a); }

static double divisor(const spry_node *n) {
    return n->op == SPRY_OP_MEAN ? (double)spry_tensor_numel(n->src[0]) : 1.0;
}

static void reduce_fwd(const spry_node *n, int ith, int nth) {
    (void)nth;
    if (ith != 0) return;
    double  s = 0.0;
    int64_t m = spry_tensor_numel(n->src[0]);
    for (int64_t i = 0; i < m; i++) s += F32(n->src[0])[i];
    F32(n->out)[0] = (float)(s / divisor(n));
}

static void reduce_bwd(const spry_node *n, int ith, int nth) {
    if (!spry_needs_grad(n->src[0])) return;
    float   g = (float)(F32(n->out->grad)[0] / divisor(n));
    int64_t lo, hi;
    spry_split(spry_tensor_numel(n->src[0]), ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) F32(n->src[0]->grad)[i] += g;
}

static void reduce_ref(const spry_node *n) {
    double s = 0.0;
    for (int64_t i = 0; i < spry_tensor_numel(n->src[0]); i++) s += F64(n->src[0])[i];
    F64(n->out)[0] = s / divisor(n);
}

static spry_tensor *sum_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    (void)t;
    return spry_sum(ctx, s[0]);
}
static spry_tensor *mean_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    (void)t;
    return spry_mean(ctx, s[0]);
}

static const spry_op_test reduce_tests[] = {
    {.label = "3d", .n_src = 1, .ndim = {3}, .shape = {{2, 3, 5}}},
};

const spry_op_def spry_opdef_sum = {
    .name = "sum", .n_src = 1, .fwd = reduce_fwd, .bwd = reduce_bwd, .ref = reduce_ref,
    .build = sum_build, .tests = reduce_tests, .n_tests = 1,
};
const spry_op_def spry_opdef_mean = {
    .name = "mean", .n_src = 1, .fwd = reduce_fwd, .bwd = reduce_bwd, .ref = reduce_ref,
    .build = mean_build, .tests = reduce_tests, .n_tests = 1,
};
