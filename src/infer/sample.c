/*
 * sample.c -- sampling and a simple generation loop (see sample.h).
 */
#include "spry/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "spry/rng.h"

spry_sample_params spry_sample_params_default(void) {
    return (spry_sample_params){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 0,
                                .min_p = 0.0f, .repetition_penalty = 1.0f};
}

// Sorts indices by descending probability (ties by index: deterministic). Heap-free insertion
// into the top-k prefix when k is small, otherwise qsort.
static const float *g_sort_p;
static int cmp_desc(const void *a, const void *b) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (g_sort_p[i] != g_sort_p[j]) return g_sort_p[i] > g_sort_p[j] ? -1 : 1;
    return i < j ? -1 : 1;
}

int32_t spry_sample(const float *logits, int64_t V, const spry_sample_params *p, uint64_t pos,
                    float *scratch) {
    int64_t best = 0;
    for (int64_t v = 1; v < V; v++) best = logits[v] > logits[best] ? v : best;
    if (p->temperature <= 0.0f) return (int32_t)best;
    float   *prob = scratch;
    int32_t *idx  = (int32_t *)(scratch + 2 * V);
    double   s    = 0;
    for (int64_t v = 0; v < V; v++) {
        prob[v] = expf((logits[v] - logits[best]) / p->temperature);
        s += prob[v];
    }
    for (int64_t v = 0; v < V; v++) prob[v] = (float)(prob[v] / s), idx[v] = (int32_t)v;
    g_sort_p = prob; // single-threaded use; generation is sequential
    qsort(idx, (size_t)V, sizeof *idx, cmp_desc);
    int64_t keep = V;
    if (p->top_k > 0 && p->top_k < keep) keep = p->top_k;
    if (p->top_p < 1.0f) {
        double c = 0;
        for (int64_t i = 0; i < keep; i++) {
            c += prob[idx[i]];
            if (c >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        float floor_p = p->min_p * prob[idx[0]];
        int64_t k = 1;
        while (k < keep && prob[idx[k]] >= floor_p) k++;
        keep = k;
    }
    double total = 0;
    for (int64_t i = 0; i < keep; i++) total += prob[idx[i]];
    double u = spry_rng_uniform(p->seed, 0x5a3d1e, pos) * total, c = 0;
    for (int64_t i = 0; i < keep; i++) {
        c += prob[idx[i]];
        if (u < c) return idx[i];
    }
    return idx[keep - 1];
}

void spry_sample_penalize(float *logits, int64_t V, const int32_t *context, int64_t n_ctx,
                          int64_t n_gen, const spry_sample_params *p, float *counts) {
    if (p->repetition_penalty != 1.0f && p->repetition_penalty > 0.0f) {
        memset(counts, 0, sizeof(float) * (size_t)V);
        for (int64_t i = 0; i < n_ctx; i++)
            if (context[i] >= 0 && context[i] < V && counts[context[i]] == 0.0f) {
                float *l = &logits[context[i]];
                *l       = *l > 0 ? *l / p->repetition_penalty : *l * p->repetition_penalty;
                counts[context[i]] = 1.0f;
            }
    }
    if (p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f) {
        memset(counts, 0, sizeof(float) * (size_t)V);
        for (int64_t i = n_ctx - n_gen; i < n_ctx; i++)
            if (i >= 0 && context[i] >= 0 && context[i] < V) counts[context[i]] += 1.0f;
        for (int64_t v = 0; v < V; v++)
            if (counts[v] > 0) logits[v] -= p->frequency_penalty * counts[v] + p->presence_penalty;
    }
}

spry_status spry_generate(spry_model *m, spry_ctx *ctx, const int32_t *prompt, int64_t n_prompt,
                          int64_t n_new, int32_t stop_id, const spry_sample_params *p, int32_t *out,
                          int64_t *n_out) {
    int64_t V = m->cfg.vocab_size, ctx_len = m->cfg.n_positions ? m->cfg.n_positions : 2048;
    if (n_prompt <= 0) return spry_errorf(SPRY_ERR_ARG, "generate: the prompt is empty");
    for (int64_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= V)
            return spry_errorf(SPRY_ERR_ARG, "generate: prompt token %d out of range for vocab %lld",
                               prompt[i], (long long)V);
    memcpy(out, prompt, sizeof(int32_t) * (size_t)n_prompt);
    float *scratch = malloc(sizeof(float) * (size_t)(5 * V)); // sampling 3V, logits V, counts V
    if (!scratch) return spry_errorf(SPRY_ERR_NOMEM, "generate: out of memory");
    bool        grad = spry_ctx_set_grad(ctx, false);
    int64_t     n    = n_prompt;
    spry_status st   = SPRY_OK;
    while (n < n_prompt + n_new) {
        int64_t start = n > ctx_len ? n - ctx_len : 0, T = n - start;
        spry_ctx_begin(ctx);
        spry_tensor *ids = spry_new(ctx, SPRY_DTYPE_I32, 2, (int64_t[]){1, T});
        if ((st = spry_ctx_status(ctx))) break;
        memcpy(ids->data, out + start, sizeof(int32_t) * (size_t)T);
        spry_tensor *logits = spry_model_forward(m, ctx, ids);
        if ((st = spry_ctx_status(ctx))) break;
        float *row = scratch + 3 * V;
        memcpy(row, (const float *)logits->data + (T - 1) * V, sizeof(float) * (size_t)V);
        spry_sample_penalize(row, V, out, n, n - n_prompt, p, scratch + 4 * V);
        int32_t tok = spry_sample(row, V, p, (uint64_t)n, scratch);
        out[n++]    = tok;
        if (tok == stop_id) break;
    }
    spry_ctx_set_grad(ctx, grad);
    free(scratch);
    *n_out = n;
    return st;
}
