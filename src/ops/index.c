/*
 * index.c -- movement along the token axis: embedding lookup (torch.nn.functional.embedding),
 * gather_rows / scatter_rows (adjoints of each other: token dropping, MoE dispatch) and reshape.
 * Backward kernels that scatter into shared rows split by column, so duplicate indices never
 * race and sums run in index order for any thread count.
 */
#include <string.h>

#include "op_def.h"

/* ---- embedding ---------------------------------------------------------------------------- */

spry_tensor *spry_embedding(spry_ctx *ctx, spry_tensor *table, spry_tensor *ids) {
    if (ctx->status) return spry_op_placeholder();
    SPRY_ASSERT(table->ndim == 2 && ids->dtype == SPRY_DTYPE_I32 && ids->ndim < SPRY_MAX_DIMS,
                "embedding: table (V, C) and I32 ids expected: %s", spry_shapes2(table, ids));
    int64_t shape[SPRY_MAX_DIMS];
    for (int i = 0; i < ids->ndim; i++) shape[i] = ids->shape[i];
    shape[ids->ndim] = table->shape[1];
    for (int64_t i = 0, n = spry_tensor_numel(ids); i < n; i++)
        SPRY_ASSERT(I32(ids)[i] >= 0 && I32(ids)[i] < table->shape[0],
                    "embedding: id %d out of range [0, %lld)", I32(ids)[i], (long long)table->shape[0]);
    spry_tensor *out = spry_new(ctx, SPRY_DTYPE_F32, ids->ndim + 1, shape);
    spry_op_apply(ctx, SPRY_OP_EMBEDDING, (spry_tensor *[]){table, ids}, 2, out, NULL, NULL, NULL);
    return out;
}

static void emb_fwd(const spry_node *n, int ith, int nth) {
    int64_t C = n->src[0]->shape[1], N = spry_tensor_numel(n->src[1]), lo, hi;
    spry_split(N, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++)
        memcpy(F32(n->out) + i * C, F32(n->src[0]) + (int64_t)I32(n->src[1])[i] * C,
               (size_t)C * sizeof(float));
}

static void emb_bwd(const spry_node *n, int ith, int nth) {
    if (!spry_needs_grad(n->src[0])) return;
    int64_t C = n->src[0]->shape[1], N = spry_tensor_numel(n->src[1]), lo, hi;
    spry_split(C, ith, nth, &lo, &hi);
    float *dt = F32(n->src[0]->grad);
    for (int64_t i = 0; i < N; i++) {
        float       *d = dt + (int64_t)I32(n->src[1])[i] * C;
        const float *g = F32(n->out->grad) + i * C;
        for (int64_t j = lo; j < hi; j++) d[j] += g[j];
    }
}

static void emb_ref(const spry_node *n) {
    int64_t C = n->src[0]->shape[1], N = spry_tensor_numel(n->src[1]);
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < C; j++)
            F64(n->out)[i * C + j] = F64(n->src[0])[(int64_t)I32(n->src[1])[i] * C + j];
}

static spry_tensor *emb_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    (void)t;
    return spry_embedding(ctx, s[0], s[1]);
}

static const spry_op_test emb_tests[] = {
    {.label = "2d-ids", .n_src = 2, .dtype = {SPRY_DTYPE_F32, SPRY_DTYPE_I32}, .ndim = {2, 2},
     .shape = {{11, 6}, {3, 5}}, .index_range = 11},
};

const spry_op_def spry_opdef_embedding = {
    .name = "embedding", .n_src = 2, .fwd = emb_fwd, .bwd = emb_bwd, .ref = emb_ref,
    .build = emb_build, .tests = emb_tests, .n_tests = 1,
};

/* ---- gather_rows: x (B, T, C), idx (B, K) -> (B, K, C) -------------------------------------- */

static void check_rows(const spry_tensor *x, const spry_tensor *idx, const char *op) {
    SPRY_ASSERT(x->ndim == 3 && idx->ndim == 2 && idx->dtype == SPRY_DTYPE_I32 &&
                    idx->shape[0] == x->shape[0],
                "%s: x (B, T, C) and I32 idx (B, K) expected: %s", op, spry_shapes2(x, idx));
    for (int64_t i = 0, n = spry_tensor_numel(idx); i < n; i++)
        SPRY_ASSERT(I32(idx)[i] >= 0 && I32(idx)[i] < x->shape[1], "%s: index %d out of range",
                    op, I32(idx)[i]);
}

spry_tensor *spry_gather_rows(spry_ctx *ctx, spry_tensor *x, spry_tensor *idx) {
    if (ctx->status) return spry_op_placeholder();
    check_rows(x, idx, "gather_rows");
    spry_tensor *out = spry_new(ctx, SPRY_DTYPE_F32, 3, SPRY_SHAPE(x->shape[0], idx->shape[1], x->shape[2]));
    spry_op_apply(ctx, SPRY_OP_GATHER_ROWS, (spry_tensor *[]){x, idx}, 2, out, NULL, NULL, NULL);
    return out;
}

static void gather_fwd(const spry_node *n, int ith, int nth) {
    int64_t B = n->out->shape[0], K = n->out->shape[1], C = n->out->shape[2], T = n->src[0]->shape[1];
    int64_t lo, hi;
    spry_split(B * K, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        int64_t b = i / K;
        memcpy(F32(n->out) + i * C, F32(n->src[0]) + (b * T + I32(n->src[1])[i]) * C,
               (size_t)C * sizeof(float));
    }
}

static void gather_bwd(const spry_node *n, int ith, int nth) {
    if (!spry_needs_grad(n->src[0])) return;
    int64_t B = n->out->shape[0], K = n->out->shape[1], C = n->out->shape[2], T = n->src[0]->shape[1];
    int64_t lo, hi;
    spry_split(C, ith, nth, &lo, &hi);
    for (int64_t i = 0; i < B * K; i++) {
        float       *d = F32(n->src[0]->grad) + (i / K * T + I32(n->src[1])[i]) * C;
        const float *g = F32(n->out->grad) + i * C;
        for (int64_t j = lo; j < hi; j++) d[j] += g[j];
    }
}

static void gather_ref(const spry_node *n) {
    int64_t B = n->out->shape[0], K = n->out->shape[1], C = n->out->shape[2], T = n->src[0]->shape[1];
    for (int64_t i = 0; i < B * K; i++)
        for (int64_t j = 0; j < C; j++)
            F64(n->out)[i * C + j] = F64(n->src[0])[(i / K * T + I32(n->src[1])[i]) * C + j];
}

static spry_tensor *gather_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    (void)t;
    return spry_gather_rows(ctx, s[0], s[1]);
}

static const spry_op_test gather_tests[] = {
    {.label = "b2", .n_src = 2, .dtype = {SPRY_DTYPE_F32, SPRY_DTYPE_I32}, .ndim = {3, 2},
     .shape = {{2, 7, 5}, {2, 4}}, .index_range = 7, .distinct_rows = 1},
};

const spry_op_def spry_opdef_gather_rows = {
    .name = "gather_rows", .n_src = 2, .fwd = gather_fwd, .bwd = gather_bwd, .ref = gather_ref,
    .build = gather_build, .tests = gather_tests, .n_tests = 1,
};

/* ---- scatter_rows: out = x, out[b, idx[b,k]] = y[b,k]; saved[0] is a U8 mask (B, T) of the
 * overwritten rows, built by the constructor. */

spry_tensor *spry_scatter_rows(spry_ctx *ctx, spry_tensor *x, spry_tensor *idx, spry_tensor *y) {
    if (ctx->status) return spry_op_placeholder();
    check_rows(x, idx, "scatter_rows");
    SPRY_ASSERT(y->ndim == 3 && y->shape[0] == x->shape[0] && y->shape[1] == idx->shape[1] &&
                    y->shape[2] == x->shape[2],
                "scatter_rows: y must be (B, K, C): %s", spry_shapes2(x, y));
    int64_t      B = x->shape[0], T = x->shape[1], K = idx->shape[1];
    spry_tensor *mask = spry_zeros(ctx, SPRY_DTYPE_U8, 2, SPRY_SHAPE(B, T));
    spry_tensor *out  = spry_new(ctx, SPRY_DTYPE_F32, 3, x->shape);
    if (ctx->status) return out;
    for (int64_t b = 0; b < B; b++)
        for (int64_t k = 0; k < K; k++) {
            uint8_t *m = (uint8_t *)mask->data + b * T + I32(idx)[b * K + k];
            SPRY_ASSERT(!*m, "scatter_rows: index %d repeated in row %lld", I32(idx)[b * K + k],
                        (long long)b);
            *m = 1;
        }
    spry_op_apply(ctx, SPRY_OP_SCATTER_ROWS, (spry_tensor *[]){x, idx, y}, 3, out, NULL, NULL,
                  (spry_tensor *[SPRY_MAX_SAVED]){mask});
    return out;
}

static void scatter_fwd(const spry_node *n, int ith, int nth) {
    int64_t B = n->out->shape[0], T = n->out->shape[1], C = n->out->shape[2], K = n->src[1]->shape[1];
    int64_t lo, hi;
    spry_split(B, ith, nth, &lo, &hi);
    for (int64_t b = lo; b < hi; b++) {
        memcpy(F32(n->out) + b * T * C, F32(n->src[0]) + b * T * C, (size_t)(T * C) * sizeof(float));
        for (int64_t k = 0; k < K; k++)
            memcpy(F32(n->out) + (b * T + I32(n->src[1])[b * K + k]) * C,
                   F32(n->src[2]) + (b * K + k) * C, (size_t)C * sizeof(float));
    }
}

static void scatter_bwd(const spry_node *n, int ith, int nth) {
    int64_t B = n->out->shape[0], T = n->out->shape[1], C = n->out->shape[2], K = n->src[1]->shape[1];
    const uint8_t *mask = n->saved[0]->data;
    const float   *g    = F32(n->out->grad);
    int64_t        lo, hi;
    spry_split(B, ith, nth, &lo, &hi);
    for (int64_t b = lo; b < hi; b++) {
        if (spry_needs_grad(n->src[0]))
            for (int64_t t = 0; t < T; t++) {
                if (mask[b * T + t]) continue;
                float *d = F32(n->src[0]->grad) + (b * T + t) * C;
                for (int64_t j = 0; j < C; j++) d[j] += g[(b * T + t) * C + j];
            }
        if (spry_needs_grad(n->src[2]))
            for (int64_t k = 0; k < K; k++) {
                float       *d  = F32(n->src[2]->grad) + (b * K + k) * C;
                const float *gr = g + (b * T + I32(n->src[1])[b * K + k]) * C;
                for (int64_t j = 0; j < C; j++) d[j] += gr[j];
            }
    }
}

static void scatter_ref(const spry_node *n) {
    int64_t B = n->out->shape[0], T = n->out->shape[1], C = n->out->shape[2], K = n->src[1]->shape[1];
    for (int64_t i = 0; i < B * T * C; i++) F64(n->out)[i] = F64(n->src[0])[i];
    for (int64_t b = 0; b < B; b++)
        for (int64_t k = 0; k < K; k++)
            for (int64_t j = 0; j < C; j++)
                F64(n->out)[(b * T + I32(n->src[1])[b * K + k]) * C + j] = F64(n->src[2])[(b * K + k) * C + j];
}

static spry_tensor *scatter_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    (void)t;
    return spry_scatter_rows(ctx, s[0], s[1], s[2]);
}

static const spry_op_test scatter_tests[] = {
    {.label = "b2", .n_src = 3, .dtype = {SPRY_DTYPE_F32, SPRY_DTYPE_I32, SPRY_DTYPE_F32},
     .ndim = {3, 2, 3}, .shape = {{2, 7, 5}, {2, 3}, {2, 3, 5}}, .index_range = 7, .distinct_rows = 1},
};

const spry_op_def spry_opdef_scatter_rows = {
    .name = "scatter_rows", .n_src = 3, .fwd = scatter_fwd, .bwd = scatter_bwd, .ref = scatter_ref,
    .build = scatter_build, .tests = scatter_tests, .n_tests = 1,
};

/* ---- reshape: zero-copy; out views x's data, backward adds dout into dx ---------------------- */

spry_tensor *spry_reshape(spry_ctx *ctx, spry_tensor *x, int ndim, const int64_t *shape) {
    if (ctx->status) return spry_op_placeholder();
    spry_tensor *out = spry_arena_calloc(ctx->arena, sizeof *out);
    if (!out) return spry_new(ctx, SPRY_DTYPE_F32, 0, NULL); // sets the sticky status
    spry_tensor_set_shape(out, x->dtype, ndim, shape);
    SPRY_ASSERT(spry_tensor_numel(out) == spry_tensor_numel(x) && spry_tensor_is_contiguous(x),
                "reshape: element counts differ or input not contiguous: %s", spry_shapes2(x, out));
    out->data  = x->data;
    out->flags = SPRY_TENSOR_VIEW;
    spry_op_apply(ctx, SPRY_OP_RESHAPE, &x, 1, out, NULL, NULL, NULL);
    return out;
}

static void reshape_fwd(const spry_node *n, int ith, int nth) {
    (void)n, (void)ith, (void)nth; // the output aliases the input
}

static void reshape_bwd(const spry_node *n, int ith, int nth) {
    if (!spry_needs_grad(n->src[0])) return;
    int64_t lo, hi;
    spry_split(spry_tensor_numel(n->out), ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) F32(n->src[0]->grad)[i] += F32(n->out->grad)[i];
}

static void reshape_ref(const spry_node *n) {
    for (int64_t i = 0; i < spry_tensor_numel(n->out); i++) F64(n->out)[i] = F64(n->src[0])[i];
}

static spry_tensor *reshape_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    (void)t;
    return spry_reshape(ctx, s[0], 2, SPRY_SHAPE(6, 5));
}

static const spry_op_test reshape_tests[] = {
    {.label = "3d->2d", .n_src = 1, .ndim = {3}, .shape = {{2, 3, 5}}},
};

const spry_op_def spry_opdef_reshape = {
    .name = "reshape", .n_src = 1, .fwd = reshape_fwd, .bwd = reshape_bwd, .ref = reshape_ref,
    .build = reshape_build, .tests = reshape_tests, .n_tests = 1,
};

/* ---- concat along the last dim: (..., C_i) for i < n -> (..., sum C_i) -----------------------
 * torch.cat(dim=-1). BERT's separate query/key/value projections feed the fused attention this
 * way; backward hands each input its columns. */

spry_tensor *spry_concat(spry_ctx *ctx, spry_tensor *const *xs, int n) {
    if (ctx->status) return spry_op_placeholder();
    SPRY_ASSERT(n >= 1 && n <= SPRY_MAX_SRC, "concat: 1 to %d inputs, got %d", SPRY_MAX_SRC, n);
    int64_t shape[SPRY_MAX_DIMS];
    const spry_tensor *x0 = xs[0];
    for (int d = 0; d < x0->ndim; d++) shape[d] = x0->shape[d];
    shape[x0->ndim - 1] = 0;
    for (int i = 0; i < n; i++) {
        SPRY_ASSERT(xs[i]->dtype == SPRY_DTYPE_F32 && xs[i]->ndim == x0->ndim &&
                        spry_tensor_is_contiguous(xs[i]),
                    "concat: contiguous F32 inputs of one rank expected: %s", spry_shapes2(x0, xs[i]));
        for (int d = 0; d + 1 < x0->ndim; d++)
            SPRY_ASSERT(xs[i]->shape[d] == x0->shape[d], "concat: leading dims differ: %s",
                        spry_shapes2(x0, xs[i]));
        shape[x0->ndim - 1] += xs[i]->shape[x0->ndim - 1];
    }
    spry_tensor *out = spry_new(ctx, SPRY_DTYPE_F32, x0->ndim, shape);
    spry_op_apply(ctx, SPRY_OP_CONCAT, (spry_tensor **)xs, n, out, NULL, NULL, NULL);
    return out;
}

static void concat_fwd(const spry_node *n, int ith, int nth) {
    int64_t Cout = n->out->shape[n->out->ndim - 1], rows = spry_tensor_numel(n->out) / Cout, lo, hi;
    spry_split(rows, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++)
        for (int i = 0, c0 = 0; i < n->n_src; i++) {
            int64_t C = n->src[i]->shape[n->src[i]->ndim - 1];
            memcpy(F32(n->out) + r * Cout + c0, F32(n->src[i]) + r * C, (size_t)C * sizeof(float));
            c0 += (int)C;
        }
}

static void concat_bwd(const spry_node *n, int ith, int nth) {
    int64_t Cout = n->out->shape[n->out->ndim - 1], rows = spry_tensor_numel(n->out) / Cout, lo, hi;
    spry_split(rows, ith, nth, &lo, &hi);
    for (int i = 0, c0 = 0; i < n->n_src; i++) {
        int64_t C = n->src[i]->shape[n->src[i]->ndim - 1];
        if (spry_needs_grad(n->src[i]))
            for (int64_t r = lo; r < hi; r++) {
                float       *d = F32(n->src[i]->grad) + r * C;
                const float *g = F32(n->out->grad) + r * Cout + c0;
                for (int64_t j = 0; j < C; j++) d[j] += g[j];
            }
        c0 += (int)C;
    }
}

static void concat_ref(const spry_node *n) {
    int64_t Cout = n->out->shape[n->out->ndim - 1], rows = spry_tensor_numel(n->out) / Cout;
    for (int64_t r = 0; r < rows; r++)
        for (int i = 0, c0 = 0; i < n->n_src; i++) {
            int64_t C = n->src[i]->shape[n->src[i]->ndim - 1];
            for (int64_t j = 0; j < C; j++) F64(n->out)[r * Cout + c0 + j] = F64(n->src[i])[r * C + j];
            c0 += (int)C;
        }
}

static spry_tensor *concat_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    return spry_concat(ctx, s, t->n_src);
}

static const spry_op_test concat_tests[] = {
    {.label = "qkv", .n_src = 3, .ndim = {3, 3, 3}, .shape = {{2, 5, 6}, {2, 5, 6}, {2, 5, 6}}},
    {.label = "uneven", .n_src = 2, .ndim = {2, 2}, .shape = {{7, 3}, {7, 11}}},
};

const spry_op_def spry_opdef_concat = {
    .name = "concat", .n_src = 3, .fwd = concat_fwd, .bwd = concat_bwd, .ref = concat_ref,
    .build = concat_build, .tests = concat_tests, .n_tests = 2,
};
