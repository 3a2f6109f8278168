/*
 * model.c -- GPT-2, BLOOM and BERT parameters and initialization; the GPT-2 and BLOOM forward.
 * BERT's forward is in bert.c. Reading and writing Hugging Face checkpoints lives in
 * src/io/hf_checkpoint.c (the io layer sits above the models).
 *
 * The two architectures differ in four places, all visible below: GPT-2 adds learned position
 * embeddings and splits QKV as [q | k | v]; BLOOM normalizes the embeddings, adds ALiBi to the
 * attention scores and interleaves QKV per head. GPT-2's Conv1D weights are (in, out) on disk and
 * (out, in) here. The LM head is tied to the token embedding in both.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bert.h"
#include "nn/block.h"
#include "spry/dtype.h"
#include "spry/model.h"
#include "spry/rng.h"

/* ---- the parameter table ------------------------------------------------------------------
 * One row per block parameter: the Hugging Face name in each architecture (NULL: absent there),
 * its shape, whether the GPT-2 file stores it transposed (Conv1D), and its init. Rows are only
 * ever appended (the init's RNG streams follow the row index). */

typedef enum { SH_C, SH_3C_C, SH_3C, SH_C_C, SH_I_C, SH_I, SH_C_I } shape_kind;
typedef enum { INIT_W, INIT_W_RESID, INIT_ZERO, INIT_ONE } init_kind;

typedef struct block_param {
    const char *gpt2, *bloom, *bert;
    size_t      field;
    shape_kind  shape;
    bool        conv1d;
    init_kind   init;
} block_param;

#define BLK(f) offsetof(spry_block, f)
static const block_param k_block_params[] = {
    {"ln_1.weight", "input_layernorm.weight", "attention.output.LayerNorm.weight", BLK(ln1_w), SH_C, false, INIT_ONE},
    {"ln_1.bias", "input_layernorm.bias", "attention.output.LayerNorm.bias", BLK(ln1_b), SH_C, false, INIT_ZERO},
    {"attn.c_attn.weight", "self_attention.query_key_value.weight", NULL, BLK(qkv_w), SH_3C_C, true, INIT_W},
    {"attn.c_attn.bias", "self_attention.query_key_value.bias", NULL, BLK(qkv_b), SH_3C, false, INIT_ZERO},
    {"attn.c_proj.weight", "self_attention.dense.weight", "attention.output.dense.weight", BLK(proj_w), SH_C_C, true, INIT_W_RESID},
    {"attn.c_proj.bias", "self_attention.dense.bias", "attention.output.dense.bias", BLK(proj_b), SH_C, false, INIT_ZERO},
    {"ln_2.weight", "post_attention_layernorm.weight", "output.LayerNorm.weight", BLK(ln2_w), SH_C, false, INIT_ONE},
    {"ln_2.bias", "post_attention_layernorm.bias", "output.LayerNorm.bias", BLK(ln2_b), SH_C, false, INIT_ZERO},
    {"mlp.c_fc.weight", "mlp.dense_h_to_4h.weight", "intermediate.dense.weight", BLK(fc_w), SH_I_C, true, INIT_W},
    {"mlp.c_fc.bias", "mlp.dense_h_to_4h.bias", "intermediate.dense.bias", BLK(fc_b), SH_I, false, INIT_ZERO},
    {"mlp.c_proj.weight", "mlp.dense_4h_to_h.weight", "output.dense.weight", BLK(fc2_w), SH_C_I, true, INIT_W_RESID},
    {"mlp.c_proj.bias", "mlp.dense_4h_to_h.bias", "output.dense.bias", BLK(fc2_b), SH_C, false, INIT_ZERO},
    {NULL, NULL, "attention.self.query.weight", BLK(q_w), SH_C_C, false, INIT_W},
    {NULL, NULL, "attention.self.query.bias", BLK(q_b), SH_C, false, INIT_ZERO},
    {NULL, NULL, "attention.self.key.weight", BLK(k_w), SH_C_C, false, INIT_W},
    {NULL, NULL, "attention.self.key.bias", BLK(k_b), SH_C, false, INIT_ZERO},
    {NULL, NULL, "attention.self.value.weight", BLK(v_w), SH_C_C, false, INIT_W},
    {NULL, NULL, "attention.self.value.bias", BLK(v_b), SH_C, false, INIT_ZERO},
};
#undef BLK
#define N_BLOCK_PARAMS ((int)(sizeof k_block_params / sizeof k_block_params[0]))

typedef struct top_param {
    const char *gpt2, *bloom, *bert; // NULL: absent in that architecture
    size_t      field;
    int         rows_kind; // 0: (V, C), 1: (P, C), 2: (C), 3: (type_vocab_size, C), 4: (C, C), 5: (V)
    init_kind   init;
} top_param;

#define TOP(f) offsetof(spry_model, f)
static const top_param k_top_params[] = {
    {"wte.weight", "word_embeddings.weight", "embeddings.word_embeddings.weight", TOP(wte), 0, INIT_W},
    {"wpe.weight", NULL, "embeddings.position_embeddings.weight", TOP(wpe), 1, INIT_W},
    {NULL, "word_embeddings_layernorm.weight", "embeddings.LayerNorm.weight", TOP(emb_ln_w), 2, INIT_ONE},
    {NULL, "word_embeddings_layernorm.bias", "embeddings.LayerNorm.bias", TOP(emb_ln_b), 2, INIT_ZERO},
    {"ln_f.weight", "ln_f.weight", NULL, TOP(lnf_w), 2, INIT_ONE},
    {"ln_f.bias", "ln_f.bias", NULL, TOP(lnf_b), 2, INIT_ZERO},
    {NULL, NULL, "embeddings.token_type_embeddings.weight", TOP(wtt), 3, INIT_W},
    {NULL, NULL, "cls.predictions.transform.dense.weight", TOP(mlm_w), 4, INIT_W},
    {NULL, NULL, "cls.predictions.transform.dense.bias", TOP(mlm_b), 2, INIT_ZERO},
    {NULL, NULL, "cls.predictions.transform.LayerNorm.weight", TOP(mlm_ln_w), 2, INIT_ONE},
    {NULL, NULL, "cls.predictions.transform.LayerNorm.bias", TOP(mlm_ln_b), 2, INIT_ZERO},
    {NULL, NULL, "cls.predictions.bias", TOP(mlm_bias), 5, INIT_ZERO},
};
#undef TOP
// The first rows of both tables are GPT-2's and BLOOM's; their RNG streams are kept as they were.
#define N_TOP_DECODER   6
#define N_BLOCK_DECODER 12

static const char *arch_name(const spry_model_config *c, const char *gpt2, const char *bloom,
                             const char *bert) {
    return c->arch == SPRY_ARCH_GPT2 ? gpt2 : c->arch == SPRY_ARCH_BLOOM ? bloom : bert;
}
#define N_TOP_PARAMS ((int)(sizeof k_top_params / sizeof k_top_params[0]))

static spry_tensor **field(void *base, size_t off) { return (spry_tensor **)((char *)base + off); }

static void block_shape(const spry_model_config *c, shape_kind k, int *ndim, int64_t *s) {
    int64_t C = c->n_embd, I = c->n_inner;
    switch (k) {
    case SH_C: *ndim = 1, s[0] = C; break;
    case SH_3C: *ndim = 1, s[0] = 3 * C; break;
    case SH_I: *ndim = 1, s[0] = I; break;
    case SH_3C_C: *ndim = 2, s[0] = 3 * C, s[1] = C; break;
    case SH_C_C: *ndim = 2, s[0] = C, s[1] = C; break;
    case SH_I_C: *ndim = 2, s[0] = I, s[1] = C; break;
    case SH_C_I: *ndim = 2, s[0] = C, s[1] = I; break;
    }
}

spry_status spry_model_init(const spry_model_config *cfg, spry_model **out) {
    *out = NULL;
    SPRY_TRY(spry_model_config_validate(cfg));
    spry_model *m = calloc(1, sizeof *m);
    if (!m) return spry_errorf(SPRY_ERR_NOMEM, "out of memory");
    m->cfg    = *cfg;
    m->blocks = calloc((size_t)cfg->n_layer, sizeof *m->blocks);
    if (!m->blocks) {
        free(m);
        return spry_errorf(SPRY_ERR_NOMEM, "out of memory");
    }
    spry_params_init(&m->params);
    int64_t idx_top[N_TOP_PARAMS], *idx_blk = malloc(sizeof(int64_t) * (size_t)(cfg->n_layer * N_BLOCK_PARAMS));
    spry_status st = idx_blk ? SPRY_OK : SPRY_ERR_NOMEM;
    for (int i = 0; !st && i < N_TOP_PARAMS; i++) {
        const top_param *tp = &k_top_params[i];
        const char *name = arch_name(cfg, tp->gpt2, tp->bloom, tp->bert);
        idx_top[i]       = -1;
        if (!name) continue;
        int64_t rows[] = {cfg->vocab_size, cfg->n_positions, cfg->n_embd, cfg->type_vocab_size,
                          cfg->n_embd, cfg->vocab_size};
        int     kind = tp->rows_kind, nd = kind == 2 || kind == 5 ? 1 : 2;
        int64_t shape[2] = {rows[kind], cfg->n_embd};
        idx_top[i] = spry_params_add(&m->params, name, nd, shape, nd == 1 ? SPRY_PARAM_NO_DECAY : 0);
        if (idx_top[i] < 0) st = (spry_status)idx_top[i];
    }
    for (int64_t l = 0; !st && l < cfg->n_layer; l++)
        for (int k = 0; !st && k < N_BLOCK_PARAMS; k++) {
            const block_param *bp = &k_block_params[k];
            const char        *pn = arch_name(cfg, bp->gpt2, bp->bloom, bp->bert);
            char    name[64];
            int     nd = 0;
            int64_t shape[2] = {0, 0};
            idx_blk[l * N_BLOCK_PARAMS + k] = -1;
            if (!pn) continue;
            snprintf(name, sizeof name, cfg->arch == SPRY_ARCH_BERT ? "encoder.layer.%lld.%s" : "h.%lld.%s",
                     (long long)l, pn);
            block_shape(cfg, k_block_params[k].shape, &nd, shape);
            int64_t i = spry_params_add(&m->params, name, nd, shape, nd == 1 ? SPRY_PARAM_NO_DECAY : 0);
            idx_blk[l * N_BLOCK_PARAMS + k] = i;
            if (i < 0) st = (spry_status)i;
        }
    if (!st) st = spry_params_alloc(&m->params);
    if (st) {
        free(idx_blk);
        spry_model_free(m);
        return st == SPRY_ERR_NOMEM ? spry_errorf(st, "out of memory building the model") : st;
    }
    for (int i = 0; i < N_TOP_PARAMS; i++)
        if (idx_top[i] >= 0) *field(m, k_top_params[i].field) = spry_params_at(&m->params, idx_top[i]);
    for (int64_t l = 0; l < cfg->n_layer; l++)
        for (int k = 0; k < N_BLOCK_PARAMS; k++)
            if (idx_blk[l * N_BLOCK_PARAMS + k] >= 0)
                *field(&m->blocks[l], k_block_params[k].field) =
                    spry_params_at(&m->params, idx_blk[l * N_BLOCK_PARAMS + k]);
    free(idx_blk);
    *out = m;
    return SPRY_OK;
}

void spry_model_free(spry_model *m) {
    if (!m) return;
    spry_params_free(&m->params);
    free(m->blocks);
    free(m);
}

static void init_one(spry_tensor *t, init_kind k, float std, uint64_t seed, uint64_t stream) {
    int64_t n = spry_tensor_numel(t);
    float  *p = t->data;
    if (k == INIT_ZERO || k == INIT_ONE)
        for (int64_t i = 0; i < n; i++) p[i] = k == INIT_ONE ? 1.0f : 0.0f;
    else
        spry_rng_fill_normal(p, n, seed, stream, 0.0f, std);
}

// Streams: decoder rows as they always were (top i, then block l row k at 6 + 12 l + k); the rows
// appended for BERT get streams of their own above 2^32.
void spry_model_init_weights(spry_model *m, uint64_t seed) {
    const spry_model_config *c = &m->cfg;
    float resid_std = c->arch == SPRY_ARCH_BERT ? c->init_std : c->init_std / sqrtf(2.0f * (float)c->n_layer);
    for (int i = 0; i < N_TOP_PARAMS; i++) {
        spry_tensor *t      = *field(m, k_top_params[i].field);
        uint64_t     stream = i < N_TOP_DECODER ? (uint64_t)i : ((uint64_t)1 << 33) + (uint64_t)i;
        if (t) init_one(t, k_top_params[i].init, c->init_std, seed, stream);
    }
    for (int64_t l = 0; l < c->n_layer; l++)
        for (int k = 0; k < N_BLOCK_PARAMS; k++) {
            spry_tensor *t  = *field(&m->blocks[l], k_block_params[k].field);
            init_kind    ik = k_block_params[k].init;
            uint64_t     stream = k < N_BLOCK_DECODER
                                      ? (uint64_t)(N_TOP_DECODER + l * N_BLOCK_DECODER + k)
                                      : ((uint64_t)1 << 32) + (uint64_t)(l * 64 + k);
            if (t) init_one(t, ik, ik == INIT_W_RESID ? resid_std : c->init_std, seed, stream);
        }
}

/* ---- forward ------------------------------------------------------------------------------ */

// Block l on the kept tokens of its route: x (B, T, C) -> gather (B, r, C) -> block -> scatter
// back over x (B, T, C). ALiBi reads the kept tokens' original positions (the indices).
static spry_tensor *routed_block(spry_ctx *ctx, const spry_model *m, int64_t l, spry_tensor *x,
                                 const spry_attn_params *ap, const spry_token_route *rt) {
    const spry_model_config *c = &m->cfg;
    spry_tensor *idx = spry_route_index(ctx, rt, x->shape[0], x->shape[1], (int)l); // (B, r)
    if (ctx->status) return idx;
    spry_attn_params apr = *ap;
    if (apr.alibi) apr.pos = idx;
    spry_tensor *part = spry_gather_rows(ctx, x, idx); // (B, r, C)
    spry_tensor_set_name(part, "blk.%d.kept", (int)l);
    spry_tensor *y = spry_block_forward(ctx, &m->blocks[l], part, &apr, c->layer_norm_eps,
                                        c->dropout, (int)l); // (B, r, C)
    return spry_scatter_rows(ctx, x, idx, y);                // (B, T, C)
}

// Final hidden states (B, T, C) after ln_f.
static spry_tensor *model_hidden(spry_model *m, spry_ctx *ctx, spry_tensor *ids,
                                 const spry_token_route *routes, int64_t n_routes) {
    const spry_model_config *c = &m->cfg;
    SPRY_ASSERT(ids->ndim == 2 && ids->dtype == SPRY_DTYPE_I32, "model: ids must be I32 (B, T)");
    int64_t      T = ids->shape[1];
    spry_tensor *x = spry_embedding(ctx, m->wte, ids); // (B, T, C)
    spry_attn_params ap = {.n_head = c->n_head, .causal = true};
    if (c->arch == SPRY_ARCH_GPT2) {
        if (T > c->n_positions) { // a user-chosen length: an error, not an abort
            ctx->status = spry_errorf(SPRY_ERR_ARG, "sequence length %lld exceeds the model's n_positions %lld",
                                      (long long)T, (long long)c->n_positions);
            return spry_op_placeholder();
        }
        spry_tensor *pos = spry_new(ctx, SPRY_DTYPE_I32, 1, &T);
        if (ctx->status) return pos;
        for (int64_t t = 0; t < T; t++) ((int32_t *)pos->data)[t] = (int32_t)t;
        x = spry_add(ctx, x, spry_embedding(ctx, m->wpe, pos)); // + (T, C)
        x = spry_dropout(ctx, x, c->dropout);
        ap.layout = SPRY_QKV_GPT2;
    } else {
        x         = spry_layernorm(ctx, x, m->emb_ln_w, m->emb_ln_b, c->layer_norm_eps);
        ap.alibi  = true;
        ap.layout = SPRY_QKV_BLOOM;
    }
    spry_tensor_set_name(x, "embed");
    SPRY_ASSERT(n_routes <= c->n_layer && (routes || n_routes == 0),
                "model: %lld routes for %lld layers", (long long)n_routes, (long long)c->n_layer);
    for (int64_t l = 0; l < c->n_layer; l++) {
        const spry_token_route *rt = l < n_routes ? &routes[l] : NULL;
        if (rt && rt->kept && rt->r > 0 && rt->r < T)
            x = routed_block(ctx, m, l, x, &ap, rt);
        else
            x = spry_block_forward(ctx, &m->blocks[l], x, &ap, c->layer_norm_eps, c->dropout, (int)l);
    }
    x = spry_layernorm(ctx, x, m->lnf_w, m->lnf_b, c->layer_norm_eps);
    spry_tensor_set_name(x, "ln_f");
    return x;
}

spry_tensor *spry_model_forward(spry_model *m, spry_ctx *ctx, spry_tensor *ids) {
    return spry_model_forward_ex(m, ctx, ids, NULL, 0);
}

spry_tensor *spry_model_loss(spry_model *m, spry_ctx *ctx, const spry_tensor *tokens) {
    return spry_model_loss_ex(m, ctx, tokens, NULL, 0);
}

spry_tensor *spry_model_forward_ex(spry_model *m, spry_ctx *ctx, spry_tensor *ids,
                                   const spry_token_route *routes, int64_t n_routes) {
    if (ctx->status) return spry_op_placeholder();
    if (m->cfg.arch == SPRY_ARCH_BERT) // MLM logits of an unpadded batch
        return spry_bert_logits(m, ctx, &(spry_encoder_batch){.ids = ids}, routes, n_routes);
    spry_tensor *logits = spry_linear(ctx, model_hidden(m, ctx, ids, routes, n_routes), m->wte, NULL); // (B, T, V)
    spry_tensor_set_name(logits, "logits");
    return logits;
}

spry_tensor *spry_model_loss_ex(spry_model *m, spry_ctx *ctx, const spry_tensor *tokens,
                                const spry_token_route *routes, int64_t n_routes) {
    SPRY_ASSERT(tokens->ndim == 2 && tokens->dtype == SPRY_DTYPE_I32 && tokens->shape[1] >= 2,
                "model: tokens must be I32 (B, T+1)");
    if (ctx->status) return spry_op_placeholder();
    if (m->cfg.arch == SPRY_ARCH_BERT) return spry_bert_loss_from_rows(m, ctx, tokens, routes, n_routes);
    int64_t      B = tokens->shape[0], T = tokens->shape[1] - 1;
    spry_tensor *ids = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, T));
    spry_tensor *tgt = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, T));
    if (ctx->status) return ids;
    const int32_t *tok = tokens->data;
    for (int64_t b = 0; b < B; b++) {
        memcpy((int32_t *)ids->data + b * T, tok + b * (T + 1), (size_t)T * sizeof(int32_t));
        memcpy((int32_t *)tgt->data + b * T, tok + b * (T + 1) + 1, (size_t)T * sizeof(int32_t));
    }
    // the fused LM head + cross entropy never holds all (B, T, V) logits
    return spry_linear_cross_entropy(ctx, model_hidden(m, ctx, ids, routes, n_routes), m->wte, tgt);
}

bool spry_model_param_is_conv1d(const spry_model *m, const char *name) {
    if (m->cfg.arch != SPRY_ARCH_GPT2) return false;
    size_t ln = strlen(name);
    for (int k = 0; k < N_BLOCK_PARAMS; k++) {
        const char *suf = k_block_params[k].gpt2;
        if (!suf) continue;
        size_t ls = strlen(suf);
        if (k_block_params[k].conv1d && ln > ls && !strcmp(name + ln - ls, suf)) return true;
    }
    return false;
}

