/*
 * block.h -- the transformer blocks (internal to src/).
 *
 * Decoder (GPT-2, BLOOM), pre-LayerNorm, tanh GELU:
 *   x = x + proj(attention(qkv(ln1(x))))
 *   x = x + fc2(gelu(fc(ln2(x))))
 * Encoder (BERT), post-LayerNorm, exact GELU, separate q/k/v projections:
 *   x = ln1(x + proj(attention([q(x) | k(x) | v(x)])))
 *   x = ln2(x + fc2(gelu_erf(fc(x))))
 * with optional dropout on both residual branches.
 */
#ifndef SPRY_NN_BLOCK_H
#define SPRY_NN_BLOCK_H

#include "spry/model.h"

// x (B, T, C) -> (B, T, C) for block il. Intermediates are named "blk.<il>.<what>".
spry_tensor *spry_block_forward(spry_ctx *ctx, const spry_block *blk, spry_tensor *x,
                                const spry_attn_params *ap, float eps, float dropout, int il);

// The encoder block: x (B, T, C) -> (B, T, C); ap carries the key lengths (padding mask).
spry_tensor *spry_encoder_block_forward(spry_ctx *ctx, const spry_block *blk, spry_tensor *x,
                                        const spry_attn_params *ap, float eps, float dropout, int il);

// A layer's token route as an I32 (B, r) index tensor in the step arena (the gather/scatter
// index of a routed block). Unsorted or out-of-range kept indices are programmer errors.
spry_tensor *spry_route_index(spry_ctx *ctx, const spry_token_route *rt, int64_t B, int64_t T, int il);

#endif
