/*
 * sample.h -- next-token sampling: greedy, temperature, top-k, top-p (nucleus), seeded.
 * Semantics follow Hugging Face's generate() warpers in this order: temperature, top-k, top-p
 * (keep the smallest set of most likely tokens whose probability reaches top_p, always at least
 * one), min-p (drop tokens below min_p times the most likely one's probability), then a draw
 * from the renormalized distribution with the counter-based RNG, so a seed and a position always
 * give the same token. Penalties (spry_sample_penalize) change the logits first: Hugging Face's
 * repetition penalty over the whole context (divide positive logits by it, multiply negative
 * ones), and OpenAI's frequency and presence penalties over the generated tokens
 * (logit -= frequency * count + presence * [count > 0]).
 */
#ifndef SPRY_SAMPLE_H
#define SPRY_SAMPLE_H

#include <stdint.h>

#include "spry/model.h"
#include "spry/status.h"

typedef struct spry_sample_params {
    float    temperature; // 0 = greedy (1.0)
    int64_t  top_k;       // 0 = off (0)
    float    top_p;       // 1 = off (1.0)
    uint64_t seed;        // (0)
    float    min_p;              // 0 = off (0)
    float    repetition_penalty; // 1 = off (1.0)
    float    frequency_penalty;  // 0 = off (0)
    float    presence_penalty;   // 0 = off (0)
} spry_sample_params;

spry_sample_params spry_sample_params_default(void);

// Picks a token from logits (V) at position pos. scratch holds 2 * V floats + V int32 (caller
// provided, so no allocation). Pure given (logits, params, pos).
int32_t spry_sample(const float *logits, int64_t V, const spry_sample_params *p, uint64_t pos,
                    float *scratch);

// Applies the penalties to logits (V) in place: context[0..n_ctx) is the whole sequence so far,
// of which the last n_gen tokens were generated. counts is scratch for V floats.
void spry_sample_penalize(float *logits, int64_t V, const int32_t *context, int64_t n_ctx,
                          int64_t n_gen, const spry_sample_params *p, float *counts);

// Generates up to n_new tokens after prompt (n_prompt ids) into out (capacity n_prompt + n_new),
// recomputing the forward over the whole window each token (no KV cache), stopping early at
// stop_id (>= 0). Returns the total length through *n_out. Errors: SPRY_ERR_ARG (empty prompt,
// ids out of range), the ctx's sticky error.
spry_status spry_generate(spry_model *m, spry_ctx *ctx, const int32_t *prompt, int64_t n_prompt,
                          int64_t n_new, int32_t stop_id, const spry_sample_params *p, int32_t *out,
                          int64_t *n_out);

#endif
