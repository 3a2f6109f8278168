/*
 * bert.c -- the BERT encoder and its masked-LM head: the forward of Hugging Face's
 * BertForMaskedLM (parameters and init live in model.c's tables).
 *
 *   x = LN_emb(word[ids] + type[token_types] + pos[0..T))     then dropout
 *   per layer (post-LN, bidirectional, keys j < key_len[b]):  nn/block.h's encoder block
 *   logits = LN_mlm(gelu_erf(x W_mlm^T + b_mlm)) word^T + mlm_bias   (decoder tied to word)
 *
 * Hugging Face's attention_mask is right padding here (ones then zeros, as its tokenizers pad):
 * key_len[b] = number of ones. A routed layer (random-LTD, model_type "encoder") gathers its kept
 * tokens and attends among those that are real: DeepSpeed gathers the (B, 1, S, S) mask on rows
 * and columns (notes 4.4), and with right padding the kept real tokens are the first
 * count(kept < key_len) kept ones, so the gathered mask is that count as a key length.
 */
#include <string.h>

#include "bert.h"
#include "nn/block.h"
#include "spry/model.h"
#include "spry/rng.h"

spry_model_config spry_model_config_bert(int64_t vocab, int64_t n_pos, int64_t C, int64_t L,
                                         int64_t H) {
    return (spry_model_config){.arch = SPRY_ARCH_BERT, .vocab_size = vocab, .n_positions = n_pos,
                               .type_vocab_size = 2, .n_embd = C, .n_layer = L, .n_head = H,
                               .n_inner = 4 * C, .layer_norm_eps = 1e-12f, .init_std = 0.02f,
                               .mask_token_id = -1};
}

// Encoder layer l on the kept tokens of its route: gather (B, r, C), the block with the gathered
// key lengths, scatter back over x (B, T, C) (dropped tokens pass through).
static spry_tensor *routed_encoder_block(spry_ctx *ctx, const spry_model *m, int64_t l, spry_tensor *x,
                                         const spry_attn_params *ap, const spry_token_route *rt) {
    int64_t      B = x->shape[0], r = rt->r;
    spry_tensor *idx = spry_route_index(ctx, rt, B, x->shape[1], (int)l); // (B, r)
    spry_tensor *kl  = ap->key_len ? spry_new(ctx, SPRY_DTYPE_I32, 1, &B) : NULL;
    if (ctx->status) return idx;
    for (int64_t b = 0; kl && b < B; b++) { // kept indices increase: the real ones come first
        int32_t real = 0;
        while (real < r && rt->kept[b * r + real] < ((const int32_t *)ap->key_len->data)[b]) real++;
        // no real token kept: the row's outputs are padding's, ignored; one key keeps softmax finite
        ((int32_t *)kl->data)[b] = real > 0 ? real : 1;
    }
    spry_attn_params apr = *ap;
    apr.key_len          = kl;
    spry_tensor *part = spry_gather_rows(ctx, x, idx); // (B, r, C)
    spry_tensor_set_name(part, "blk.%d.kept", (int)l);
    spry_tensor *y = spry_encoder_block_forward(ctx, &m->blocks[l], part, &apr, m->cfg.layer_norm_eps,
                                                m->cfg.dropout, (int)l); // (B, r, C)
    return spry_scatter_rows(ctx, x, idx, y);                           // (B, T, C)
}

// The encoder's last hidden states (B, T, C).
static spry_tensor *bert_hidden(spry_model *m, spry_ctx *ctx, const spry_encoder_batch *in,
                                const spry_token_route *routes, int64_t n_routes) {
    const spry_model_config *c   = &m->cfg;
    const spry_tensor       *ids = in->ids;
    SPRY_ASSERT(c->arch == SPRY_ARCH_BERT, "bert: the model is not an encoder");
    SPRY_ASSERT(ids->ndim == 2 && ids->dtype == SPRY_DTYPE_I32, "bert: ids must be I32 (B, T)");
    int64_t B = ids->shape[0], T = ids->shape[1];
    if (T > c->n_positions) { // a user-chosen length: an error, not an abort
        ctx->status = spry_errorf(SPRY_ERR_ARG, "sequence length %lld exceeds the model's max_position_embeddings %lld",
                                  (long long)T, (long long)c->n_positions);
        return spry_op_placeholder();
    }
    SPRY_ASSERT(!in->token_types || (in->token_types->dtype == SPRY_DTYPE_I32 &&
                                     spry_tensor_same_shape(in->token_types, ids)),
                "bert: token_types must be I32 (B, T)");
    SPRY_ASSERT(!in->key_len || (in->key_len->dtype == SPRY_DTYPE_I32 && in->key_len->ndim == 1 &&
                                 in->key_len->shape[0] == B),
                "bert: key_len must be I32 (B)");
    spry_tensor *pos = spry_new(ctx, SPRY_DTYPE_I32, 1, &T);
    spry_tensor *tt  = in->token_types ? in->token_types : spry_zeros(ctx, SPRY_DTYPE_I32, 2, ids->shape);
    if (ctx->status) return pos;
    for (int64_t t = 0; t < T; t++) ((int32_t *)pos->data)[t] = (int32_t)t;
    // Hugging Face's order: (word + type) + position
    spry_tensor *x = spry_add(ctx, spry_embedding(ctx, m->wte, in->ids), spry_embedding(ctx, m->wtt, tt));
    x              = spry_add(ctx, x, spry_embedding(ctx, m->wpe, pos)); // (B, T, C) + (T, C)
    x              = spry_dropout(ctx, spry_layernorm(ctx, x, m->emb_ln_w, m->emb_ln_b, c->layer_norm_eps), c->dropout);
    spry_tensor_set_name(x, "embed");
    spry_attn_params ap = {.n_head = c->n_head, .causal = false, .layout = SPRY_QKV_GPT2, .key_len = in->key_len};
    SPRY_ASSERT(n_routes <= c->n_layer && (routes || n_routes == 0),
                "bert: %lld routes for %lld layers", (long long)n_routes, (long long)c->n_layer);
    for (int64_t l = 0; l < c->n_layer; l++) {
        const spry_token_route *rt = l < n_routes ? &routes[l] : NULL;
        if (rt && rt->kept && rt->r > 0 && rt->r < T)
            x = routed_encoder_block(ctx, m, l, x, &ap, rt);
        else
            x = spry_encoder_block_forward(ctx, &m->blocks[l], x, &ap, c->layer_norm_eps, c->dropout, (int)l);
    }
    return x;
}

// The MLM head's transform: LN(gelu_erf(x W^T + b)), x (..., C) -> (..., C).
static spry_tensor *mlm_transform(spry_model *m, spry_ctx *ctx, spry_tensor *x) {
    spry_tensor *h = spry_gelu_erf(ctx, spry_linear(ctx, x, m->mlm_w, m->mlm_b));
    h              = spry_layernorm(ctx, h, m->mlm_ln_w, m->mlm_ln_b, m->cfg.layer_norm_eps);
    spry_tensor_set_name(h, "mlm");
    return h;
}

spry_tensor *spry_bert_logits(spry_model *m, spry_ctx *ctx, const spry_encoder_batch *b,
                              const spry_token_route *routes, int64_t n_routes) {
    if (ctx->status) return spry_op_placeholder();
    spry_tensor *h      = mlm_transform(m, ctx, bert_hidden(m, ctx, b, routes, n_routes));
    spry_tensor *logits = spry_linear(ctx, h, m->wte, m->mlm_bias); // (B, T, V)
    spry_tensor_set_name(logits, "logits");
    return logits;
}

spry_tensor *spry_bert_mlm_loss(spry_model *m, spry_ctx *ctx, const spry_encoder_batch *b,
                                const spry_token_route *routes, int64_t n_routes) {
    if (ctx->status) return spry_op_placeholder();
    SPRY_ASSERT(b->labels && b->labels->dtype == SPRY_DTYPE_I32 && spry_tensor_same_shape(b->labels, b->ids),
                "bert: labels must be I32 (B, T)");
    int64_t        BT = spry_tensor_numel(b->ids), n = 0;
    const int32_t *lab = b->labels->data;
    for (int64_t i = 0; i < BT; i++) n += lab[i] >= 0;
    if (n == 0) {
        ctx->status = spry_errorf(SPRY_ERR_ARG, "bert: no labelled (masked) position in the batch");
        return spry_op_placeholder();
    }
    // the head runs on the labelled positions only: (1, BT, C) -> gather (1, n, C)
    spry_tensor *idx = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(1, n));
    spry_tensor *tgt = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(1, n));
    spry_tensor *x   = bert_hidden(m, ctx, b, routes, n_routes); // (B, T, C)
    if (ctx->status) return idx;
    for (int64_t i = 0, k = 0; i < BT; i++)
        if (lab[i] >= 0) {
            SPRY_ASSERT(lab[i] < m->cfg.vocab_size, "bert: label %d out of range", lab[i]);
            ((int32_t *)idx->data)[k] = (int32_t)i;
            ((int32_t *)tgt->data)[k++] = lab[i];
        }
    spry_tensor *flat = spry_reshape(ctx, x, 3, SPRY_SHAPE(1, BT, m->cfg.n_embd));
    spry_tensor *h    = mlm_transform(m, ctx, spry_gather_rows(ctx, flat, idx)); // (1, n, C)
    return spry_cross_entropy(ctx, spry_linear(ctx, h, m->wte, m->mlm_bias), tgt);
}

void spry_bert_mlm_mask(const int32_t *tokens, int64_t B, int64_t ld, int64_t T,
                        const int32_t *key_len, float p, int32_t mask_id, int64_t n_random,
                        uint64_t seed, uint64_t stream, int32_t *ids, int32_t *labels) {
    int64_t n_sel = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            int32_t  tok = tokens[b * ld + t];
            uint64_t i   = 3 * (uint64_t)(b * T + t);
            ids[b * T + t]    = tok;
            labels[b * T + t] = -100;
            if (t >= key_len[b] || spry_rng_uniform(seed, stream, i) >= p) continue;
            labels[b * T + t] = tok;
            n_sel++;
            float u = spry_rng_uniform(seed, stream, i + 1);
            if (u < 0.8f)
                ids[b * T + t] = mask_id;
            else if (u < 0.9f) {
                int64_t r      = (int64_t)(spry_rng_uniform(seed, stream, i + 2) * (float)n_random);
                ids[b * T + t] = (int32_t)(r < n_random ? r : n_random - 1);
            }
        }
    if (n_sel == 0 && B > 0 && T > 0) {
        labels[0] = tokens[0];
        ids[0]    = mask_id;
    }
}

spry_tensor *spry_bert_loss_from_rows(spry_model *m, spry_ctx *ctx, const spry_tensor *tokens,
                                      const spry_token_route *routes, int64_t n_routes) {
    const spry_model_config *c = &m->cfg;
    if (c->mask_token_id < 0) {
        ctx->status = spry_errorf(SPRY_ERR_CONFIG, "BERT masked-LM training needs mask_token_id in the model config");
        return spry_op_placeholder();
    }
    int64_t      B = tokens->shape[0], T1 = tokens->shape[1], T = T1 - 1;
    spry_tensor *ids = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, T));
    spry_tensor *lab = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, T));
    spry_tensor *kl  = spry_new(ctx, SPRY_DTYPE_I32, 1, &B);
    if (ctx->status) return ids;
    const int32_t *tok = tokens->data;
    for (int64_t b = 0; b < B; b++) { // real tokens: up to the row's first padding
        int64_t n = 0;
        while (n < T && tok[b * T1 + n] != (int32_t)c->pad_token_id) n++;
        ((int32_t *)kl->data)[b] = (int32_t)(n > 0 ? n : 1);
    }
    // random replacements are drawn from the ids below the special ones spry train appends
    int64_t n_random = c->pad_token_id < c->mask_token_id ? c->pad_token_id : c->mask_token_id;
    spry_bert_mlm_mask(tok, B, T1, T, kl->data, 0.15f, (int32_t)c->mask_token_id,
                       n_random > 0 ? n_random : c->vocab_size, ctx->seed,
                       (uint64_t)ctx->rng_counter++ | (1ull << 61), ids->data, lab->data);
    return spry_bert_mlm_loss(m, ctx, &(spry_encoder_batch){.ids = ids, .labels = lab, .key_len = kl},
                              routes, n_routes);
}
