/*
 * block.h -- the pre-LayerNorm transformer block shared by GPT-2 and BLOOM (internal to src/).
 *
 *   x = x + proj(attention(qkv(ln1(x))))
 *   x = x + fc2(gelu(fc(ln2(x))))
 * with optional dropout on both residual branches.
 */
#ifndef SPRY_NN_BLOCK_H
#define SPRY_NN_BLOCK_H

#include "spry/model.h"

// x (B, T, C) -> (B, T, C) for block il. Intermediates are named "blk.<il>.<what>".
spry_tensor *spry_block_forward(spry_ctx *ctx, const spry_block *blk, spry_tensor *x,
                                const spry_attn_params *ap, float eps, float dropout, int il);

#endif
