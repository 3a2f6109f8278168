/*
 * matmul.c -- batched matmul (torch.matmul) and linear (torch.nn.functional.linear:
 * y = x @ W^T + b, W (out, in)). Both run on spry_gemm_* (gemm.h), which threads internally.
 *
 * Under SPRY_PRECISION_BF16 linear converts x and W to bf16 once in forward (kept in saved[] for
 * backward) and dY in backward, multiplies with f32 accumulation and keeps f32 outputs and
 * gradients: DeepSpeed's bf16 mode with fp32 master weights. matmul stays f32.
 * Gradients: dX += dY @ W, dW += dY^T @ X, db += column sums of dY (by column, rows in order).
 */
#include <omp.h>

#include "op_def.h"
#include "spry/gemm.h"

/* ---- matmul: a (..., M, K) @ b (..., K, N) [or b^T given as (..., N, K)] ---------------------- */

spry_tensor *spry_matmul(spry_ctx *ctx, spry_tensor *a, spry_tensor *b, bool transpose_b) {
    if (ctx->status) return spry_op_placeholder();
    SPRY_ASSERT(a->ndim >= 2 && b->ndim >= 2, "matmul: inputs must be at least 2-D: %s",
                spry_shapes2(a, b));
    int64_t M = a->shape[a->ndim - 2], K = a->shape[a->ndim - 1];
    int64_t bK = b->shape[b->ndim - (transpose_b ? 1 : 2)], N = b->shape[b->ndim - (transpose_b ? 2 : 1)];
    bool    shared = b->ndim == 2;
    bool    ok     = bK == K && (shared || b->ndim == a->ndim);
    for (int i = 0; ok && !shared && i < a->ndim - 2; i++) ok = a->shape[i] == b->shape[i];
    SPRY_ASSERT(ok, "matmul: shapes do not match: %s (transpose_b=%d)", spry_shapes2(a, b), transpose_b);
    SPRY_ASSERT(spry_tensor_is_contiguous(a) && spry_tensor_is_contiguous(b),
                "matmul: inputs must be contiguous");
    int64_t shape[SPRY_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++) shape[i] = a->shape[i];
    shape[a->ndim - 1] = N;
    (void)M;
    spry_tensor *out = spry_new(ctx, SPRY_DTYPE_F32, a->ndim, shape);
    spry_op_apply(ctx, SPRY_OP_MATMUL, (spry_tensor *[]){a, b}, 2, out,
                  (int64_t[SPRY_MAX_PARAMS]){transpose_b}, NULL, NULL);
    return out;
}

typedef struct mm_dims {
    int64_t batch, M, K, N;
    bool    shared, tb;
} mm_dims;

static mm_dims mm_get(const spry_node *n) {
    const spry_tensor *a = n->src[0], *b = n->src[1];
    mm_dims d = {.M = a->shape[a->ndim - 2], .K = a->shape[a->ndim - 1], .N = n->out->shape[a->ndim - 1],
                 .shared = b->ndim == 2, .tb = n->ip[0] != 0};
    d.batch   = spry_tensor_numel(a) / (d.M * d.K);
    return d;
}

static void matmul_fwd(const spry_node *n, int ith, int nth) {
    (void)ith, (void)nth;
    omp_set_num_threads(n->ctx->n_threads);
    mm_dims d = mm_get(n);
    for (int64_t i = 0; i < d.batch; i++) {
        const float *b = F32(n->src[1]) + (d.shared ? 0 : i * d.K * d.N);
        spry_gemm_f32(false, d.tb, d.M, d.N, d.K, 1.0f, F32(n->src[0]) + i * d.M * d.K, d.K, b,
                      d.tb ? d.K : d.N, 0.0f, F32(n->out) + i * d.M * d.N, d.N);
    }
}

static void matmul_bwd(const spry_node *n, int ith, int nth) {
    (void)ith, (void)nth;
    omp_set_num_threads(n->ctx->n_threads);
    mm_dims d = mm_get(n);
    for (int64_t i = 0; i < d.batch; i++) {
        const float *g  = F32(n->out->grad) + i * d.M * d.N;
        const float *a  = F32(n->src[0]) + i * d.M * d.K;
        int64_t      bo = d.shared ? 0 : i * d.K * d.N;
        if (spry_needs_grad(n->src[0])) // da (M,K) += g (M,N) @ op(b)^T
            spry_gemm_f32(false, !d.tb, d.M, d.K, d.N, 1.0f, g, d.N, F32(n->src[1]) + bo,
                          d.tb ? d.K : d.N, 1.0f, F32(n->src[0]->grad) + i * d.M * d.K, d.K);
        if (spry_needs_grad(n->src[1])) {
            float *db = F32(n->src[1]->grad) + bo;
            if (d.tb) // db (N,K) += g^T (N,M) @ a (M,K)
                spry_gemm_f32(true, false, d.N, d.K, d.M, 1.0f, g, d.N, a, d.K, 1.0f, db, d.K);
            else      // db (K,N) += a^T (K,M) @ g (M,N)
                spry_gemm_f32(true, false, d.K, d.N, d.M, 1.0f, a, d.K, g, d.N, 1.0f, db, d.N);
        }
    }
}

static void matmul_ref(const spry_node *n) {
    mm_dims d = mm_get(n);
    for (int64_t i = 0; i < d.batch; i++) {
        const double *a = F64(n->src[0]) + i * d.M * d.K;
        const double *b = F64(n->src[1]) + (d.shared ? 0 : i * d.K * d.N);
        for (int64_t r = 0; r < d.M; r++)
            for (int64_t c = 0; c < d.N; c++) {
                double s = 0;
                for (int64_t k = 0; k < d.K; k++) s += a[r * d.K + k] * (d.tb ? b[c * d.K + k] : b[k * d.N + c]);
                F64(n->out)[i * d.M * d.N + r * d.N + c] = s;
            }
    }
}

static spry_tensor *matmul_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    return spry_matmul(ctx, s[0], s[1], t->ip[0] != 0);
}

static const spry_op_test matmul_tests[] = {
    {.label = "2d", .n_src = 2, .ndim = {2, 2}, .shape = {{5, 7}, {7, 3}}},
    {.label = "2d-tb", .n_src = 2, .ndim = {2, 2}, .shape = {{5, 7}, {3, 7}}, .ip = {1}},
    {.label = "batched", .n_src = 2, .ndim = {3, 3}, .shape = {{3, 4, 6}, {3, 6, 5}}},
    {.label = "batched-tb", .n_src = 2, .ndim = {4, 4}, .shape = {{2, 2, 4, 6}, {2, 2, 5, 6}}, .ip = {1}},
    {.label = "shared-b", .n_src = 2, .ndim = {3, 2}, .shape = {{3, 4, 6}, {6, 5}}},
};

const spry_op_def spry_opdef_matmul = {
    .name = "matmul", .n_src = 2, .self_threaded = true, .fwd = matmul_fwd, .bwd = matmul_bwd,
    .ref = matmul_ref, .build = matmul_build, .tests = matmul_tests, .n_tests = 5,
};

/* ---- linear ------------------------------------------------------------------------------- */

spry_tensor *spry_linear(spry_ctx *ctx, spry_tensor *x, spry_tensor *w, spry_tensor *bias) {
    if (ctx->status) return spry_op_placeholder();
    int64_t in = x->shape[x->ndim - 1];
    SPRY_ASSERT(w->ndim == 2 && w->shape[1] == in, "linear: x (..., in) and w (out, in): %s",
                spry_shapes2(x, w));
    SPRY_ASSERT(!bias || (bias->ndim == 1 && bias->shape[0] == w->shape[0]),
                "linear: bias must be (out): %s", spry_shapes2(w, bias));
    SPRY_ASSERT(spry_tensor_is_contiguous(x) && spry_tensor_is_contiguous(w),
                "linear: inputs must be contiguous");
    int64_t shape[SPRY_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = w->shape[0];
    spry_tensor *out   = spry_new(ctx, SPRY_DTYPE_F32, x->ndim, shape);
    spry_tensor *saved[SPRY_MAX_SAVED] = {0};
    if (ctx->precision == SPRY_PRECISION_BF16) {
        saved[0] = spry_new(ctx, SPRY_DTYPE_BF16, x->ndim, x->shape);
        saved[1] = spry_new(ctx, SPRY_DTYPE_BF16, 2, w->shape);
    } else if (ctx->precision == SPRY_PRECISION_F16) { // f16-rounded copies, kept in f32
        saved[0] = spry_new(ctx, SPRY_DTYPE_F32, x->ndim, x->shape);
        saved[1] = spry_new(ctx, SPRY_DTYPE_F32, 2, w->shape);
    }
    if (ctx->status) return out;
    spry_op_apply(ctx, SPRY_OP_LINEAR, (spry_tensor *[]){x, w, bias}, bias ? 3 : 2, out, NULL,
                  NULL, saved);
    return out;
}

static void convert_bf16(const float *x, uint16_t *y, int64_t n, int nth) {
#pragma omp parallel for num_threads(nth) schedule(static)
    for (int64_t c = 0; c < (n + 65535) / 65536; c++) {
        int64_t lo = c * 65536, len = n - lo < 65536 ? n - lo : 65536;
        spry_convert_f32_to_bf16(x + lo, y + lo, len);
    }
}

static void round_f16(const float *x, float *y, int64_t n, int nth) {
#pragma omp parallel for num_threads(nth) schedule(static)
    for (int64_t c = 0; c < (n + 65535) / 65536; c++) {
        int64_t lo = c * 65536, len = n - lo < 65536 ? n - lo : 65536;
        spry_round_f16(x + lo, y + lo, len);
    }
}

static void linear_fwd(const spry_node *n, int ith, int nth) {
    (void)ith, (void)nth;
    int   T  = n->ctx->n_threads;
    omp_set_num_threads(T);
    const spry_tensor *x = n->src[0], *w = n->src[1];
    int64_t in = w->shape[1], out = w->shape[0], N = spry_tensor_numel(x) / in;
    float  *y  = F32(n->out);
    float   beta = 0.0f;
    if (n->n_src > 2 && n->src[2]) { // y rows start as the bias, then y += x W^T
        const float *b = F32(n->src[2]);
#pragma omp parallel for num_threads(T) schedule(static)
        for (int64_t r = 0; r < N; r++)
            for (int64_t j = 0; j < out; j++) y[r * out + j] = b[j];
        beta = 1.0f;
    }
    if (n->saved[0] && n->saved[0]->dtype == SPRY_DTYPE_F32) { // f16 emulation
        round_f16(F32(x), F32(n->saved[0]), N * in, T);
        round_f16(F32(w), F32(n->saved[1]), out * in, T);
        spry_gemm_f32(false, true, N, out, in, 1.0f, F32(n->saved[0]), in, F32(n->saved[1]), in,
                      beta, y, out);
    } else if (n->saved[0]) {
        convert_bf16(F32(x), n->saved[0]->data, N * in, T);
        convert_bf16(F32(w), n->saved[1]->data, out * in, T);
        spry_gemm_bf16(false, true, N, out, in, 1.0f, n->saved[0]->data, in, n->saved[1]->data, in,
                       beta, y, out);
    } else {
        spry_gemm_f32(false, true, N, out, in, 1.0f, F32(x), in, F32(w), in, beta, y, out);
    }
}

static void linear_bwd(const spry_node *n, int ith, int nth) {
    (void)ith, (void)nth;
    int T = n->ctx->n_threads;
    omp_set_num_threads(T);
    spry_tensor *x = n->src[0], *w = n->src[1];
    int64_t      in = w->shape[1], out = w->shape[0], N = spry_tensor_numel(x) / in;
    const float *g  = F32(n->out->grad);
    if (n->saved[0] && n->saved[0]->dtype == SPRY_DTYPE_F32) { // f16 emulation
        spry_tensor *gh = spry_new(n->ctx, SPRY_DTYPE_F32, 2, SPRY_SHAPE(N, out));
        if (n->ctx->status) return;
        round_f16(g, F32(gh), N * out, T);
        if (spry_needs_grad(x))
            spry_gemm_f32(false, false, N, in, out, 1.0f, F32(gh), out, F32(n->saved[1]), in, 1.0f,
                          F32(x->grad), in);
        if (spry_needs_grad(w))
            spry_gemm_f32(true, false, out, in, N, 1.0f, F32(gh), out, F32(n->saved[0]), in, 1.0f,
                          F32(w->grad), in);
    } else if (n->saved[0]) {
        spry_tensor *gb = spry_new(n->ctx, SPRY_DTYPE_BF16, 2, SPRY_SHAPE(N, out));
        if (n->ctx->status) return;
        convert_bf16(g, gb->data, N * out, T);
        if (spry_needs_grad(x))
            spry_gemm_bf16(false, false, N, in, out, 1.0f, gb->data, out, n->saved[1]->data, in,
                           1.0f, F32(x->grad), in);
        if (spry_needs_grad(w))
            spry_gemm_bf16(true, false, out, in, N, 1.0f, gb->data, out, n->saved[0]->data, in,
                           1.0f, F32(w->grad), in);
    } else {
        if (spry_needs_grad(x))
            spry_gemm_f32(false, false, N, in, out, 1.0f, g, out, F32(w), in, 1.0f, F32(x->grad), in);
        if (spry_needs_grad(w))
            spry_gemm_f32(true, false, out, in, N, 1.0f, g, out, F32(x), in, 1.0f, F32(w->grad), in);
    }
    if (n->n_src > 2 && spry_needs_grad(n->src[2])) {
        float *db = F32(n->src[2]->grad);
        // columns in blocks of 16 across threads; rows summed in order
#pragma omp parallel for num_threads(T) schedule(static)
        for (int64_t j0 = 0; j0 < out; j0 += 64) {
            int64_t j1 = j0 + 64 < out ? j0 + 64 : out;
            for (int64_t r = 0; r < N; r++)
                for (int64_t j = j0; j < j1; j++) db[j] += g[r * out + j];
        }
    }
}

static void linear_ref(const spry_node *n) {
    const spry_tensor *x = n->src[0], *w = n->src[1];
    int64_t in = w->shape[1], out = w->shape[0], N = spry_tensor_numel(x) / in;
    for (int64_t r = 0; r < N; r++)
        for (int64_t j = 0; j < out; j++) {
            double s = n->n_src > 2 && n->src[2] ? F64(n->src[2])[j] : 0.0;
            for (int64_t k = 0; k < in; k++) s += F64(x)[r * in + k] * F64(w)[j * in + k];
            F64(n->out)[r * out + j] = s;
        }
}

static spry_tensor *linear_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    return spry_linear(ctx, s[0], s[1], t->n_src > 2 ? s[2] : NULL);
}

static const spry_op_test linear_tests[] = {
    {.label = "bias", .n_src = 3, .ndim = {2, 2, 1}, .shape = {{5, 7}, {3, 7}, {3}}},
    {.label = "3d-bias", .n_src = 3, .ndim = {3, 2, 1}, .shape = {{2, 5, 9}, {70, 9}, {70}}},
    {.label = "nobias", .n_src = 2, .ndim = {3, 2}, .shape = {{2, 3, 4}, {6, 4}}},
};

const spry_op_def spry_opdef_linear = {
    .name = "linear", .n_src = 3, .self_threaded = true, .fwd = linear_fwd, .bwd = linear_bwd,
    .ref = linear_ref, .build = linear_build, .tests = linear_tests, .n_tests = 3,
};
