/*
 * lm_head.c -- fused LM head + cross entropy: loss = CE(x @ W^T, targets), mean over rows with a
 * target >= 0 (the composition spry_linear + spry_cross_entropy; llm.c fuses its classifier the
 * same way). Why an op of its own: the (N, V) logits of a 50K vocabulary are the largest tensors
 * of a training step (412 MB for 2048 tokens) and would be stored twice (logits and their
 * gradient). Here the rows go through in chunks of R: logits_chunk = x_chunk W^T (GEMM), the
 * row's log-sum-exp and loss, then, when gradients are wanted, dlogits = (softmax - onehot) / n in
 * place, dx_chunk = dlogits W and dW_acc += dlogits^T x_chunk, all while the chunk is hot.
 * Backward only scales: dx += g * dx_saved, dW += g * dW_acc.
 *   x (..., C), w (V, C), targets I32 (...)  ->  (1)
 *   saved[0] dx (N, C) f32, saved[1] dW_acc (V, C) f32, saved[2] w in bf16 (bf16 precision)
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "fastmath.h"
#include "op_def.h"
#include "spry/gemm.h"

spry_tensor *spry_linear_cross_entropy(spry_ctx *ctx, spry_tensor *x, spry_tensor *w,
                                       spry_tensor *targets) {
    if (ctx->status) return spry_op_placeholder();
    int64_t C = x->shape[x->ndim - 1], N = spry_tensor_numel(x) / C, V = w->shape[0];
    SPRY_ASSERT(w->ndim == 2 && w->shape[1] == C, "linear_cross_entropy: w must be (V, %lld): %s",
                (long long)C, spry_shapes2(x, w));
    SPRY_ASSERT(targets->dtype == SPRY_DTYPE_I32 && spry_tensor_numel(targets) == N,
                "linear_cross_entropy: I32 targets with one entry per row: %s", spry_shapes2(x, targets));
    SPRY_ASSERT(spry_tensor_is_contiguous(x) && spry_tensor_is_contiguous(w),
                "linear_cross_entropy: inputs must be contiguous");
    int64_t counted = 0;
    for (int64_t r = 0; r < N; r++) {
        int32_t t = ((const int32_t *)targets->data)[r];
        SPRY_ASSERT(t < V, "linear_cross_entropy: target %d out of range for vocab %lld", t, (long long)V);
        counted += t >= 0;
    }
    bool         grads = ctx->grad_enabled && (spry_needs_grad(x) || spry_needs_grad(w) ||
                                               (x->flags & SPRY_TENSOR_REQUIRES_GRAD));
    spry_tensor *out   = spry_new(ctx, SPRY_DTYPE_F32, 1, SPRY_SHAPE(1));
    spry_tensor *saved[SPRY_MAX_SAVED] = {0};
    if (grads) {
        saved[0] = spry_zeros(ctx, SPRY_DTYPE_F32, 2, SPRY_SHAPE(N, C));
        if (w->flags & SPRY_TENSOR_REQUIRES_GRAD) saved[1] = spry_zeros(ctx, SPRY_DTYPE_F32, 2, w->shape);
    }
    if (ctx->precision == SPRY_PRECISION_BF16) saved[2] = spry_new(ctx, SPRY_DTYPE_BF16, 2, w->shape);
    if (ctx->status) return out;
    spry_op_apply(ctx, SPRY_OP_LINEAR_CROSS_ENTROPY, (spry_tensor *[]){x, w, targets}, 3, out,
                  (int64_t[SPRY_MAX_PARAMS]){counted, grads}, NULL, saved);
    return out;
}

// dx = dlogits W sums over the whole vocabulary (K = V). Given one huge K, oneDNN may split the
// sum across threads, and the result then depends on the thread count (seen on AVX2); feeding K
// in fixed pieces accumulated in order keeps it bit-identical for any thread count.
#define DX_K_CHUNK 8192

// Rows per chunk: about 16M logits (64 MB) at a time, at least 64 rows: within the noise of
// 32M on gpt-mini, and 100 MB less peak memory.
static int64_t chunk_rows(int64_t V) {
    int64_t r = ((int64_t)1 << 24) / V;
    return r < 64 ? 64 : r;
}

__attribute__((target_clones("avx512f", "default")))
static float row_max(const float *x, int64_t V) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < V; j++) m = x[j] > m ? x[j] : m;
    return m;
}

// x[j] <- exp(x[j] - m); returns the sum (vector lanes summed in a fixed order).
__attribute__((target_clones("avx512f", "default")))
static float row_exp_sum(float *x, float m, int64_t V) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < V; j++) {
        float e = spry_expf(x[j] - m);
        x[j]    = e;
        s += e;
    }
    return s;
}

__attribute__((target_clones("avx512f", "default")))
static void row_scale(float *x, float a, int64_t V) {
#pragma omp simd
    for (int64_t j = 0; j < V; j++) x[j] *= a;
}

__attribute__((target_clones("avx512f", "default")))
static void row_scale_bf16(const float *x, float a, uint16_t *y, int64_t V) {
#pragma omp simd
    for (int64_t j = 0; j < V; j++) y[j] = spry_f32_to_bf16(x[j] * a);
}

static void lce_fwd(const spry_node *n, int ith, int nth) {
    (void)ith, (void)nth;
    spry_ctx          *ctx = n->ctx;
    const spry_tensor *x = n->src[0], *w = n->src[1];
    const int32_t     *tg = n->src[2]->data;
    int64_t C = x->shape[x->ndim - 1], N = spry_tensor_numel(x) / C, V = w->shape[0];
    int64_t R = chunk_rows(V), counted = n->ip[0];
    bool    grads = n->ip[1] != 0, bf16 = n->saved[2] != NULL;
    int     T = ctx->n_threads;
    omp_set_num_threads(T);
    spry_arena_mark mark = spry_arena_get_mark(ctx->arena);
    spry_tensor *logits = spry_new(ctx, SPRY_DTYPE_F32, 2, SPRY_SHAPE(R, V));
    spry_tensor *xb = bf16 ? spry_new(ctx, SPRY_DTYPE_BF16, 2, SPRY_SHAPE(R, C)) : NULL;
    spry_tensor *lb = bf16 && grads ? spry_new(ctx, SPRY_DTYPE_BF16, 2, SPRY_SHAPE(R, V)) : NULL;
    double      *rowloss = spry_arena_alloc(ctx->arena, sizeof(double) * (size_t)(N ? N : 1));
    if (ctx->status || !rowloss) {
        if (!ctx->status) ctx->status = spry_errorf(SPRY_ERR_NOMEM, "linear_cross_entropy: out of memory");
        return;
    }
    if (bf16) spry_convert_f32_to_bf16(F32(w), n->saved[2]->data, V * C);
    float scale = counted ? 1.0f / (float)counted : 0.0f;
    for (int64_t r0 = 0; r0 < N; r0 += R) {
        int64_t      rn = N - r0 < R ? N - r0 : R;
        const float *xc = F32(x) + r0 * C;
        float       *lg = F32(logits);
        if (bf16) {
            spry_convert_f32_to_bf16(xc, xb->data, rn * C);
            spry_gemm_bf16(false, true, rn, V, C, 1.0f, xb->data, C, n->saved[2]->data, C, 0.0f, lg, V);
        } else {
            spry_gemm_f32(false, true, rn, V, C, 1.0f, xc, C, F32(w), C, 0.0f, lg, V);
        }
        // per row: max, exp in place with its sum, the loss, then dlogits = (p - onehot) / n
        // (written straight to bf16 when the GEMMs run in bf16)
#pragma omp parallel for num_threads(T) schedule(static)
        for (int64_t r = 0; r < rn; r++) {
            int32_t t   = tg[r0 + r];
            float  *row = lg + r * V;
            float   m   = row_max(row, V);
            float   xt  = t >= 0 ? row[t] : 0.0f;
            float   s   = row_exp_sum(row, m, V);
            float   l   = m + logf(s);
            rowloss[r0 + r] = t >= 0 ? (double)(l - xt) : 0.0;
            if (!grads) continue;
            float a = t >= 0 ? scale / s : 0.0f;
            if (t >= 0) row[t] -= s; // p_t - 1 = (e_t - s) / s
            if (bf16)
                row_scale_bf16(row, a, (uint16_t *)lb->data + r * V, V);
            else
                row_scale(row, a, V);
        }
        if (!grads) continue;
        if (bf16) {
            for (int64_t k0 = 0; k0 < V; k0 += DX_K_CHUNK) // fixed K pieces: see DX_K_CHUNK
                spry_gemm_bf16(false, false, rn, C, V - k0 < DX_K_CHUNK ? V - k0 : DX_K_CHUNK, 1.0f,
                               (uint16_t *)lb->data + k0, V, (uint16_t *)n->saved[2]->data + k0 * C, C,
                               k0 ? 1.0f : 0.0f, F32(n->saved[0]) + r0 * C, C);
            if (n->saved[1])
                spry_gemm_bf16(true, false, V, C, rn, 1.0f, lb->data, V, xb->data, C, 1.0f,
                               F32(n->saved[1]), C);
        } else {
            for (int64_t k0 = 0; k0 < V; k0 += DX_K_CHUNK)
                spry_gemm_f32(false, false, rn, C, V - k0 < DX_K_CHUNK ? V - k0 : DX_K_CHUNK, 1.0f, lg + k0, V,
                              F32(w) + k0 * C, C, k0 ? 1.0f : 0.0f, F32(n->saved[0]) + r0 * C, C);
            if (n->saved[1])
                spry_gemm_f32(true, false, V, C, rn, 1.0f, lg, V, xc, C, 1.0f, F32(n->saved[1]), C);
        }
    }
    double s = 0.0;
    for (int64_t r = 0; r < N; r++) s += rowloss[r];
    F32(n->out)[0] = counted ? (float)(s / (double)counted) : 0.0f;
    spry_arena_rewind(ctx->arena, mark); // the chunk buffers die here; saved[] were allocated before
}

static void lce_bwd(const spry_node *n, int ith, int nth) {
    float g    = F32(n->out->grad)[0];
    bool  half = n->ctx->precision == SPRY_PRECISION_F16; // the scaled activation gradient in f16
    for (int i = 0; i < 2; i++) {
        if (!spry_needs_grad(n->src[i]) || !n->saved[i]) continue;
        float       *d = F32(n->src[i]->grad);
        const float *s = F32(n->saved[i]);
        int64_t      lo, hi;
        spry_split(spry_tensor_numel(n->src[i]), ith, nth, &lo, &hi);
        if (half && i == 0)
            for (int64_t k = lo; k < hi; k++) d[k] += spry_f16_to_f32(spry_f32_to_f16(g * s[k]));
        else
            for (int64_t k = lo; k < hi; k++) d[k] += g * s[k];
    }
}

static void lce_ref(const spry_node *n) {
    const spry_tensor *x = n->src[0], *w = n->src[1];
    int64_t C = x->shape[x->ndim - 1], N = spry_tensor_numel(x) / C, V = w->shape[0], cnt = 0;
    double *lg = malloc(sizeof(double) * (size_t)V), total = 0;
    for (int64_t r = 0; r < N; r++) {
        int32_t t = I32(n->src[2])[r];
        if (t < 0) continue;
        double m = -INFINITY, s = 0;
        for (int64_t v = 0; v < V; v++) {
            double d = 0;
            for (int64_t c = 0; c < C; c++) d += F64(x)[r * C + c] * F64(w)[v * C + c];
            lg[v] = d;
            m     = d > m ? d : m;
        }
        for (int64_t v = 0; v < V; v++) s += exp(lg[v] - m);
        total += m + log(s) - lg[t];
        cnt++;
    }
    free(lg);
    F64(n->out)[0] = cnt ? total / (double)cnt : 0.0;
}

static spry_tensor *lce_build(spry_ctx *ctx, spry_tensor *const *s, const spry_op_test *t) {
    (void)t;
    return spry_linear_cross_entropy(ctx, s[0], s[1], s[2]);
}

static const spry_op_test lce_tests[] = {
    {.label = "2d", .n_src = 3, .dtype = {SPRY_DTYPE_F32, SPRY_DTYPE_F32, SPRY_DTYPE_I32},
     .ndim = {2, 2, 1}, .shape = {{7, 5}, {13, 5}, {7}}, .index_range = 13},
    {.label = "3d-chunks", .n_src = 3, .dtype = {SPRY_DTYPE_F32, SPRY_DTYPE_F32, SPRY_DTYPE_I32},
     .ndim = {3, 2, 2}, .shape = {{2, 150, 6}, {1 << 17, 6}, {2, 150}}, .index_range = 1 << 17,
     .no_fd = 1}, // two chunks; gradients are checked by finite differences on "2d"
};

const spry_op_def spry_opdef_linear_cross_entropy = {
    .name = "linear_cross_entropy", .n_src = 3, .self_threaded = true, .fwd = lce_fwd,
    .bwd = lce_bwd, .ref = lce_ref, .build = lce_build, .tests = lce_tests, .n_tests = 2,
};
