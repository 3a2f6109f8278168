/*
 * backward.c -- the tape walk (see autograd.h).
 */
#include <string.h>

#include "ops/op_def.h"
#include "spry/autograd.h"

static bool ensure_grad(spry_ctx *ctx, spry_tensor *t) {
    if (t->grad) return true;
    spry_tensor *g = spry_zeros(ctx, SPRY_DTYPE_F32, t->ndim, t->shape);
    if (ctx->status != SPRY_OK) return false;
    t->grad = g;
    return true;
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
