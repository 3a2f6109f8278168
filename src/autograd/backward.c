/*
 * backward.c -- the tape walk (see autograd.h).
 */
#include <string.h>

#include "ops/op_def.h"
#include "spry/autograd.h"

// A zeroed f32 gradient for t: a buffer of the same size released earlier in this backward
// pass if there is one (layers repeat shapes, so activation gradients live about one layer),
// else fresh arena memory.
static bool ensure_grad(spry_ctx *ctx, spry_tensor *t) {
    if (t->grad) return true;
    size_t bytes = spry_dtype_nbytes(SPRY_DTYPE_F32, spry_tensor_numel(t));
    for (int i = ctx->n_grad_pool - 1; i >= 0; i--) {
        if (ctx->grad_pool[i].bytes != bytes) continue;
        spry_tensor *g = spry_arena_alloc(ctx->arena, sizeof *g);
        if (!g) break;
        memset(g, 0, sizeof *g);
        spry_tensor_set_shape(g, SPRY_DTYPE_F32, t->ndim, t->shape);
        g->data = ctx->grad_pool[i].data;
        memset(g->data, 0, bytes);
        ctx->grad_pool[i] = ctx->grad_pool[--ctx->n_grad_pool];
        t->grad           = g;
        return true;
    }
    spry_tensor *g = spry_zeros(ctx, SPRY_DTYPE_F32, t->ndim, t->shape);
    if (ctx->status != SPRY_OK) return false;
    t->grad = g;
    return true;
}

// After its node ran, nobody reads an intermediate's gradient again (its consumers are newer
// and already done): hand the buffer back for reuse, as PyTorch frees non-leaf gradients.
static void release_grad(spry_ctx *ctx, spry_tensor *t) {
    if (!t->grad || (t->flags & SPRY_TENSOR_PARAM)) return;
    if (ctx->n_grad_pool < (int)(sizeof ctx->grad_pool / sizeof ctx->grad_pool[0])) {
        ctx->grad_pool[ctx->n_grad_pool].bytes = spry_tensor_nbytes(t->grad);
        ctx->grad_pool[ctx->n_grad_pool].data  = t->grad->data;
        ctx->n_grad_pool++;
    }
    t->grad = NULL;
}

spry_status spry_backward_with(spry_ctx *ctx, spry_tensor *out, const spry_tensor *dout) {
    if (ctx->status != SPRY_OK) return ctx->status;
    if (!(out->flags & SPRY_TENSOR_REQUIRES_GRAD)) return SPRY_OK;
    if (!ensure_grad(ctx, out)) return ctx->status;
    const float *d = dout->data;
    float       *g = out->grad->data;
    for (int64_t i = 0, n = spry_tensor_numel(out); i < n; i++) g[i] += d[i];
    for (spry_node *n = ctx->tape; n; n = n->prev) {
        if (!n->out->grad) continue; // nothing flowed into this node
        for (int i = 0; i < n->n_src; i++) {
            spry_tensor *s = n->src[i];
            if (s && (s->flags & SPRY_TENSOR_REQUIRES_GRAD) && !ensure_grad(ctx, s))
                return ctx->status;
        }
        spry_op_run(n, spry_op_defs[n->op]->bwd);
        release_grad(ctx, n->out);
        if (ctx->on_backward_node) ctx->on_backward_node(ctx->on_backward_user, n);
    }
    return ctx->status;
}

spry_status spry_backward(spry_ctx *ctx, spry_tensor *loss) {
    SPRY_ASSERT(spry_tensor_numel(loss) == 1, "backward from a tensor of %lld elements",
                (long long)spry_tensor_numel(loss));
    float       one = 1.0f;
    spry_tensor d   = {.dtype = SPRY_DTYPE_F32, .ndim = 1, .shape = {1}, .stride = {4}, .data = &one};
    return spry_backward_with(ctx, loss, &d);
}
