/*
 * block.c -- the pre-LayerNorm decoder block and the post-LayerNorm encoder block (see
 * block.h). References: Radford et al., "Language Models are Unsupervised Multitask Learners"
 * (GPT-2); BigScience, "BLOOM" (2022); Devlin et al., "BERT" (2019) and Hugging Face's BertLayer.
 */
#include "block.h"

spry_tensor *spry_block_forward(spry_ctx *ctx, const spry_block *b, spry_tensor *x,
                                const spry_attn_params *ap, float eps, float dropout, int il) {
    spry_tensor *h = spry_layernorm(ctx, x, b->ln1_w, b->ln1_b, eps);   // (B, T, C)
    spry_tensor_set_name(h, "blk.%d.ln1", il);
    spry_tensor *qkv = spry_linear(ctx, h, b->qkv_w, b->qkv_b);        // (B, T, 3C)
    spry_tensor_set_name(qkv, "blk.%d.qkv", il);
    spry_tensor *a = spry_attention(ctx, qkv, *ap);                    // (B, T, C)
    spry_tensor_set_name(a, "blk.%d.attn", il);
    a = spry_dropout(ctx, spry_linear(ctx, a, b->proj_w, b->proj_b), dropout);
    x = spry_add(ctx, x, a);
    spry_tensor_set_name(x, "blk.%d.resid_attn", il);
    h = spry_layernorm(ctx, x, b->ln2_w, b->ln2_b, eps);
    h = spry_gelu(ctx, spry_linear(ctx, h, b->fc_w, b->fc_b));          // (B, T, I)
    spry_tensor_set_name(h, "blk.%d.mlp_act", il);
    h = spry_dropout(ctx, spry_linear(ctx, h, b->fc2_w, b->fc2_b), dropout);
    x = spry_add(ctx, x, h);
    spry_tensor_set_name(x, "blk.%d.out", il);
    return x;
}

spry_tensor *spry_encoder_block_forward(spry_ctx *ctx, const spry_block *b, spry_tensor *x,
                                        const spry_attn_params *ap, float eps, float dropout, int il) {
    spry_tensor *qkv = spry_concat(ctx, (spry_tensor *[]){spry_linear(ctx, x, b->q_w, b->q_b),
                                                          spry_linear(ctx, x, b->k_w, b->k_b),
                                                          spry_linear(ctx, x, b->v_w, b->v_b)}, 3); // (B, T, 3C)
    spry_tensor_set_name(qkv, "blk.%d.qkv", il);
    spry_tensor *a = spry_attention(ctx, qkv, *ap);                                  // (B, T, C)
    spry_tensor_set_name(a, "blk.%d.attn", il);
    a = spry_dropout(ctx, spry_linear(ctx, a, b->proj_w, b->proj_b), dropout);
    x = spry_layernorm(ctx, spry_add(ctx, x, a), b->ln1_w, b->ln1_b, eps);
    spry_tensor_set_name(x, "blk.%d.attn_out", il);
    spry_tensor *h = spry_gelu_erf(ctx, spry_linear(ctx, x, b->fc_w, b->fc_b));    // (B, T, I)
    spry_tensor_set_name(h, "blk.%d.mlp_act", il);
    h = spry_dropout(ctx, spry_linear(ctx, h, b->fc2_w, b->fc2_b), dropout);
    x = spry_layernorm(ctx, spry_add(ctx, x, h), b->ln2_w, b->ln2_b, eps);
    spry_tensor_set_name(x, "blk.%d.out", il);
    return x;
}

spry_tensor *spry_route_index(spry_ctx *ctx, const spry_token_route *rt, int64_t B, int64_t T, int il) {
    int64_t      r   = rt->r;
    spry_tensor *idx = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, r)); // (B, r)
    if (ctx->status) return idx;
    for (int64_t i = 0; i < B * r; i++) {
        SPRY_ASSERT(rt->kept[i] >= 0 && rt->kept[i] < T && (i % r == 0 || rt->kept[i] > rt->kept[i - 1]),
                    "model: route of layer %d: kept indices must increase within [0, %lld)", il, (long long)T);
        ((int32_t *)idx->data)[i] = rt->kept[i];
    }
    return idx;
}
