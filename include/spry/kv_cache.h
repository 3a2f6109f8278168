/*
 * kv_cache.h -- incremental decoding with a key/value cache (DeepSpeed-Inference's and
 * llama.cpp's KV cache) for GPT-2 and BLOOM, one sequence.
 *
 * spry_model_decode runs the model over new tokens appended after the cached ones: each layer's
 * keys and values for the new positions are stored, attention for a new token reads every cached
 * position up to its own (causal; ALiBi for BLOOM with positions counted from the start), and
 * the LM head runs on the last token only. Prefill is a call with the whole prompt; each decode
 * step is a call with one token. Shares the core's ops (no tape).
 */
#ifndef SPRY_KV_CACHE_H
#define SPRY_KV_CACHE_H

#include <stdint.h>

#include "spry/model.h"
#include "spry/status.h"

typedef struct spry_kv_cache {
    int64_t n_layer, n_ctx, n_embd;
    int64_t n;  // positions filled
    float  *k;  // (L, n_ctx, C): heads side by side, D = C / H each
    float  *v;  // (L, n_ctx, C)
} spry_kv_cache;

// A cache for up to n_ctx positions of model m (n_ctx <= n_positions for GPT-2). SPRY_ERR_ARG
// for a bad n_ctx, SPRY_ERR_NOMEM. *out NULL on error.
spry_status spry_kv_cache_init(const spry_model *m, int64_t n_ctx, spry_kv_cache **out);
void        spry_kv_cache_free(spry_kv_cache *kv);
// Forgets all positions (the memory is kept).
void spry_kv_cache_clear(spry_kv_cache *kv);

// Appends ids[0..n) after the cached positions and writes the logits of the last one to
// logits (V). Errors: SPRY_ERR_ARG when the cache would overflow (nothing is appended) or an id
// is out of range; the ctx's sticky error. Uses ctx's arena (reset here) with gradients off.
spry_status spry_model_decode(spry_model *m, spry_ctx *ctx, spry_kv_cache *kv, const int32_t *ids,
                              int64_t n, float *logits);

// spry_generate (sample.h) over the cache: prefill once, then one token per step, so each new
// token costs one position instead of the whole window. Same arguments and results as
// spry_generate while prompt + n_new fits the cache; SPRY_ERR_ARG otherwise. kv is cleared first.
struct spry_sample_params;
spry_status spry_generate_cached(spry_model *m, spry_ctx *ctx, spry_kv_cache *kv,
                                 const int32_t *prompt, int64_t n_prompt, int64_t n_new,
                                 int32_t stop_id, const struct spry_sample_params *p, int32_t *out,
                                 int64_t *n_out);

#endif
