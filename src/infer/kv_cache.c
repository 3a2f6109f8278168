/*
 * kv_cache.c -- incremental decoding over a KV cache (see kv_cache.h). The layer is the same
 * pre-LN block as src/nn/block.c, written out here because attention reads the cache.
 */
#include "spry/kv_cache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "spry/ops.h"
#include "spry/sample.h"

spry_status spry_kv_cache_init(const spry_model *m, int64_t n_ctx, spry_kv_cache **out) {
    *out = NULL;
    const spry_model_config *c = &m->cfg;
    if (n_ctx <= 0 || (c->arch == SPRY_ARCH_GPT2 && n_ctx > c->n_positions))
        return spry_errorf(SPRY_ERR_ARG, "kv cache: n_ctx %lld must be in [1, %lld]", (long long)n_ctx,
                           (long long)(c->arch == SPRY_ARCH_GPT2 ? c->n_positions : n_ctx));
    spry_kv_cache *kv = calloc(1, sizeof *kv);
    size_t         n  = (size_t)(c->n_layer * n_ctx * c->n_embd);
    if (kv) kv->k = malloc(n * sizeof(float)), kv->v = malloc(n * sizeof(float));
    if (!kv || !kv->k || !kv->v) {
        spry_kv_cache_free(kv);
        return spry_errorf(SPRY_ERR_NOMEM, "kv cache: out of memory for %zu floats", 2 * n);
    }
    kv->n_layer = c->n_layer, kv->n_ctx = n_ctx, kv->n_embd = c->n_embd;
    *out = kv;
    return SPRY_OK;
}

void spry_kv_cache_free(spry_kv_cache *kv) {
    if (!kv) return;
    free(kv->k), free(kv->v), free(kv);
}

void spry_kv_cache_clear(spry_kv_cache *kv) { kv->n = 0; }

// Attention of the n new tokens (qkv (n, 3C), absolute positions pos0 + i) over the cache of
// layer l, which already holds their keys and values; out (n, C).
static void cached_attention(const spry_model *m, const spry_kv_cache *kv, int64_t l, const float *qkv,
                             int64_t n, int64_t pos0, float *out, float *scores) {
    const spry_model_config *c = &m->cfg;
    int64_t C = c->n_embd, H = c->n_head, D = C / H;
    bool    bloom = c->arch == SPRY_ARCH_BLOOM;
    float   scale = 1.0f / sqrtf((float)D);
    const float *K = kv->k + l * kv->n_ctx * C, *V = kv->v + l * kv->n_ctx * C;
    for (int64_t i = 0; i < n; i++) {
        int64_t p = pos0 + i;
        for (int64_t h = 0; h < H; h++) {
            const float *q     = qkv + i * 3 * C + (bloom ? h * 3 * D : h * D);
            float        slope = bloom ? spry_alibi_slope(h, H) : 0.0f, mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j <= p; j++) {
                const float *k = K + j * C + h * D;
                float        d = 0;
                for (int64_t e = 0; e < D; e++) d += q[e] * k[e];
                scores[j] = d * scale + slope * (float)(j - p);
                mx        = scores[j] > mx ? scores[j] : mx;
            }
            for (int64_t j = 0; j <= p; j++) sum += (scores[j] = expf(scores[j] - mx));
            float *o = out + i * C + h * D;
            memset(o, 0, sizeof(float) * (size_t)D);
            for (int64_t j = 0; j <= p; j++) {
                const float *v = V + j * C + h * D;
                float        w = scores[j] / sum;
                for (int64_t e = 0; e < D; e++) o[e] += w * v[e];
            }
        }
    }
}

spry_status spry_model_decode(spry_model *m, spry_ctx *ctx, spry_kv_cache *kv, const int32_t *ids,
                              int64_t n, float *logits) {
    const spry_model_config *c = &m->cfg;
    int64_t C = c->n_embd, H = c->n_head, D = C / H, pos0 = kv->n;
    if (n <= 0) return spry_errorf(SPRY_ERR_ARG, "decode: no tokens");
    if (pos0 + n > kv->n_ctx)
        return spry_errorf(SPRY_ERR_ARG, "decode: %lld cached + %lld new tokens exceed the context of %lld",
                           (long long)pos0, (long long)n, (long long)kv->n_ctx);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return spry_errorf(SPRY_ERR_ARG, "decode: token %d out of range for vocab %lld", ids[i],
                               (long long)c->vocab_size);
    bool grad = spry_ctx_set_grad(ctx, false);
    spry_ctx_begin(ctx);
    spry_tensor *tid = spry_new(ctx, SPRY_DTYPE_I32, 2, (int64_t[]){1, n});
    float       *scores = spry_arena_alloc(ctx->arena, sizeof(float) * (size_t)kv->n_ctx);
    if (ctx->status || !scores) {
        spry_ctx_set_grad(ctx, grad);
        return ctx->status ? ctx->status : spry_errorf(SPRY_ERR_NOMEM, "decode: out of memory");
    }
    memcpy(tid->data, ids, sizeof(int32_t) * (size_t)n);
    spry_tensor *x = spry_embedding(ctx, m->wte, tid); // (1, n, C)
    if (c->arch == SPRY_ARCH_GPT2) {
        spry_tensor *pos = spry_new(ctx, SPRY_DTYPE_I32, 1, &n);
        for (int64_t i = 0; !ctx->status && i < n; i++) ((int32_t *)pos->data)[i] = (int32_t)(pos0 + i);
        x = spry_add(ctx, x, spry_embedding(ctx, m->wpe, pos));
    } else {
        x = spry_layernorm(ctx, x, m->emb_ln_w, m->emb_ln_b, c->layer_norm_eps);
    }
    for (int64_t l = 0; l < c->n_layer && !ctx->status; l++) {
        const spry_block *b   = &m->blocks[l];
        spry_tensor      *qkv = spry_linear(ctx, spry_layernorm(ctx, x, b->ln1_w, b->ln1_b, c->layer_norm_eps),
                                            b->qkv_w, b->qkv_b); // (1, n, 3C)
        spry_tensor      *att = spry_new(ctx, SPRY_DTYPE_F32, 3, (int64_t[]){1, n, C});
        if (ctx->status) break;
        const float *q3 = qkv->data;
        for (int64_t i = 0; i < n; i++) // store the new keys and values
            for (int64_t h = 0; h < H; h++) {
                int64_t koff = c->arch == SPRY_ARCH_BLOOM ? h * 3 * D + D : C + h * D;
                int64_t voff = c->arch == SPRY_ARCH_BLOOM ? h * 3 * D + 2 * D : 2 * C + h * D;
                float  *kd = kv->k + (l * kv->n_ctx + pos0 + i) * C + h * D;
                float  *vd = kv->v + (l * kv->n_ctx + pos0 + i) * C + h * D;
                memcpy(kd, q3 + i * 3 * C + koff, sizeof(float) * (size_t)D);
                memcpy(vd, q3 + i * 3 * C + voff, sizeof(float) * (size_t)D);
            }
        cached_attention(m, kv, l, q3, n, pos0, att->data, scores);
        x = spry_add(ctx, x, spry_linear(ctx, att, b->proj_w, b->proj_b));
        spry_tensor *h = spry_gelu(ctx, spry_linear(ctx, spry_layernorm(ctx, x, b->ln2_w, b->ln2_b, c->layer_norm_eps),
                                                    b->fc_w, b->fc_b));
        x = spry_add(ctx, x, spry_linear(ctx, h, b->fc2_w, b->fc2_b));
    }
    spry_status st = spry_ctx_status(ctx);
    if (!st) { // the LM head on the last position only
        spry_tensor last = *x;
        spry_tensor_set_shape(&last, SPRY_DTYPE_F32, 2, (int64_t[]){1, C});
        last.data          = (float *)x->data + (n - 1) * C;
        last.flags         = 0;
        spry_tensor *y     = spry_layernorm(ctx, &last, m->lnf_w, m->lnf_b, c->layer_norm_eps);
        spry_tensor *lg    = spry_linear(ctx, y, m->wte, NULL); // (1, V)
        st = spry_ctx_status(ctx);
        if (!st) memcpy(logits, lg->data, sizeof(float) * (size_t)c->vocab_size);
    }
    if (!st) kv->n += n;
    spry_ctx_set_grad(ctx, grad);
    return st;
}

spry_status spry_generate_cached(spry_model *m, spry_ctx *ctx, spry_kv_cache *kv,
                                 const int32_t *prompt, int64_t n_prompt, int64_t n_new,
                                 int32_t stop_id, const spry_sample_params *p, int32_t *out,
                                 int64_t *n_out) {
    int64_t V = m->cfg.vocab_size;
    *n_out    = 0;
    if (n_prompt <= 0) return spry_errorf(SPRY_ERR_ARG, "generate: the prompt is empty");
    if (n_prompt + n_new > kv->n_ctx)
        return spry_errorf(SPRY_ERR_ARG, "generate: prompt %lld + %lld new tokens exceed the cache of %lld",
                           (long long)n_prompt, (long long)n_new, (long long)kv->n_ctx);
    float *buf = malloc(sizeof(float) * (size_t)(5 * V)); // sampling 3V, logits V, counts V
    if (!buf) return spry_errorf(SPRY_ERR_NOMEM, "generate: out of memory");
    spry_kv_cache_clear(kv);
    memcpy(out, prompt, sizeof(int32_t) * (size_t)n_prompt);
    int64_t     n  = n_prompt;
    float      *lg = buf + 3 * V;
    spry_status st = spry_model_decode(m, ctx, kv, prompt, n_prompt, lg);
    while (!st && n < n_prompt + n_new) {
        spry_sample_penalize(lg, V, out, n, n - n_prompt, p, buf + 4 * V);
        int32_t tok = spry_sample(lg, V, p, (uint64_t)n, buf);
        out[n++]    = tok;
        if (tok == stop_id || n == n_prompt + n_new) break;
        st = spry_model_decode(m, ctx, kv, &tok, 1, lg);
    }
    free(buf);
    *n_out = n;
    return st;
}
