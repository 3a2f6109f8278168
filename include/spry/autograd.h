/*
 * autograd.h -- reverse-mode differentiation over the eager tape of a spry_ctx.
 *
 * Ops record nodes while ctx->grad_enabled (see ops.h); spry_backward() seeds d(loss) = 1 and
 * walks the tape newest to oldest, each op's backward ACCUMULATING into its inputs' gradients
 * (parameters: the param store's flat grad buffer; activations: arena tensors created zeroed on
 * first use). Gradients therefore add up across calls until the caller zeroes them, which is
 * gradient accumulation for free. Gradients of intermediate tensors (outputs of recorded ops) are
 * released as soon as their op's backward has consumed them and their buffers are reused, as
 * PyTorch frees non-leaf gradients; leaves (parameters and inputs) keep theirs.
 */
#ifndef SPRY_AUTOGRAD_H
#define SPRY_AUTOGRAD_H

#include "spry/ops.h"

// Backpropagates from a 1-element tensor. Returns the ctx's sticky status (NOMEM if the arena
// could not hold a gradient); with gradients off or nothing recorded it does nothing.
spry_status spry_backward(spry_ctx *ctx, spry_tensor *loss);
// As spry_backward, seeding d(out) with the given gradient (same shape as out, f32).
spry_status spry_backward_with(spry_ctx *ctx, spry_tensor *out, const spry_tensor *dout);

#endif
