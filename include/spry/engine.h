/*
 * engine.h -- the serving engine: many sequences generated together with iteration-level
 * (continuous) batching over a paged KV cache with prefix caching (Orca, OSDI'22; vLLM, SOSP'23).
 *
 * A request (prompt ids, sampling parameters, max_tokens) is queued by spry_engine_submit from
 * any thread. spry_engine_step, called in a loop by one thread, runs one model iteration:
 *   1. every running sequence that is generating gets one new token (decode first);
 *   2. sequences still reading their prompt get a chunk of it, then waiting requests are admitted
 *      in arrival order (FCFS), while the step's token budget, max_seqs and free KV blocks allow;
 *      a prompt whose leading full blocks were computed before (same tokens) reuses those blocks;
 *   3. one forward pass over all those tokens (token-wise matrices batched, attention per
 *      sequence through its block table), logits only where a token is sampled;
 *   4. sampling, then the callback of each sequence with its new token; finished sequences (stop
 *      id, max_tokens, context full, cancelled) free their blocks.
 * When a decoding sequence needs a block and none is free, the most recently admitted sequence
 * is preempted: its blocks are freed and it waits at the head of the queue to be recomputed.
 *
 * Results do not depend on the batch: each row of every matrix product, each attention row and
 * each sampled token is computed the same way whatever else runs in the step, so N concurrent
 * greedy requests produce exactly the tokens of N sequential ones.
 */
#ifndef SPRY_ENGINE_H
#define SPRY_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "spry/model.h"
#include "spry/quant.h"
#include "spry/sample.h"
#include "spry/status.h"

typedef struct spry_engine spry_engine;

// How the KV cache stores keys and values.
typedef enum spry_kv_type {
    SPRY_KV_AUTO = 0, // f32 for f32 weights, else f16 (llama.cpp's default cache type)
    SPRY_KV_F32,
    SPRY_KV_F16,      // IEEE half: half the cache memory and the attention's reads; values past
                      // +-65504 become infinite
} spry_kv_type;

typedef struct spry_engine_params {
    int64_t n_ctx;            // tokens per sequence, prompt + generated (0: n_positions, or 2048 for BLOOM)
    int64_t block_tokens;     // tokens per KV block (16)
    int64_t n_blocks;         // KV blocks in the pool (0: enough for max_seqs full contexts)
    int     max_seqs;         // sequences running at once (32)
    int64_t max_batch_tokens; // tokens per step: decode tokens + prompt chunks (512)
    bool    prefix_cache;     // reuse computed full blocks of identical prompt prefixes (true)
    int     n_threads;        // 0: all cores
    spry_wfmt weight_format;  // matrices (and the LM head) as f32, bf16, f16, q8_0 or q4_0 (f32)
    spry_kv_type kv_type;     // the KV cache's element type (AUTO)
    // Optional matrices read in place (NULL: none): mapped_rows[4 l + 0..3] the QKV, attention
    // output, MLP up and MLP down rows of layer l, mapped_rows[4 L] the LM head, each (N, K) rows
    // in weight_format's row layout (quant.h; GGUF's for Q8_0/Q4_0), e.g. pointers into an mmapped
    // GGUF file (spry_gguf_engine_rows) that the caller keeps open while the engine lives. Used
    // for q8_0 and q4_0; NULL entries, and other formats, are converted from the model.
    const void *const *mapped_rows;
    // Gives the memory of the model's layer matrices (QKV, projections, MLP) back to the OS once
    // the engine holds its own (packed, converted or mapped) copies: they read as zeros afterwards,
    // so the model then serves this engine only (false).
    bool release_model_matrices;
} spry_engine_params;

spry_engine_params spry_engine_params_default(void);

typedef enum spry_finish {
    SPRY_FINISH_NONE = 0, // more tokens follow
    SPRY_FINISH_STOP,     // a stop id was sampled (it is delivered with this reason)
    SPRY_FINISH_LENGTH,   // max_tokens reached, or the context is full
    SPRY_FINISH_CANCELLED,
    SPRY_FINISH_ERROR,    // the step failed; token is -1
} spry_finish;

// Called on the stepping thread for every generated token (token -1 with CANCELLED/ERROR).
// The callback may call spry_engine_cancel; it must not call spry_engine_step.
typedef void (*spry_token_fn)(void *user, int64_t req_id, int32_t token, spry_finish finish);

typedef struct spry_request {
    const int32_t     *prompt;    // (n_prompt) ids, copied by submit
    int64_t            n_prompt;
    int64_t            max_tokens; // tokens to generate at most (>= 1)
    spry_sample_params sample;     // temperature, top_k, top_p, min_p, penalties, seed
    const int32_t     *stop_ids;   // generation ends after any of these (may be NULL)
    int                n_stop_ids;
    spry_token_fn      on_token;
    void              *user;
} spry_request;

typedef struct spry_engine_stats {
    int64_t running, waiting;            // sequences now
    int64_t kv_blocks_used, kv_blocks_total, kv_blocks_cached; // cached: free but holding a prefix
    int64_t prompt_tokens, generated_tokens;                   // totals since init
    int64_t prefix_queries, prefix_hits;                       // in blocks
    int64_t preemptions, requests_finished, steps;
} spry_engine_stats;

// An engine over model m (not owned; f32 weights of a training/HF model). With a weight_format
// other than f32 the four matrices of every layer and the LM head are converted at init
// (spry_quantize_rows; Q8_0/Q4_0 need widths that are multiples of 32); embeddings, norms and
// biases stay f32. SPRY_ERR_ARG for bad params (the message names the field and value),
// SPRY_ERR_NOMEM for the KV pool or the converted weights. *out NULL on error.
spry_status spry_engine_init(spry_model *m, const spry_engine_params *p, spry_engine **out);
// Frees the engine; pending requests are dropped without callbacks.
void spry_engine_free(spry_engine *e);

// Queues a request; *id identifies it in callbacks. Thread safe. SPRY_ERR_ARG (nothing queued)
// for an empty prompt, an id out of the vocabulary, max_tokens < 1, or prompt + max_tokens above
// n_ctx (the message gives both numbers, as OpenAI's "maximum context length" error does).
spry_status spry_engine_submit(spry_engine *e, const spry_request *r, int64_t *id);
// Cancels a request (waiting or running): its callback gets CANCELLED at the next step and its
// blocks are freed. Thread safe; unknown or finished ids are ignored.
void spry_engine_cancel(spry_engine *e, int64_t id);
// One iteration (see above). *busy is true while requests are running or waiting. When the
// forward pass fails (SPRY_ERR_NOMEM for a kernel's scratch) the step's requests finish with
// SPRY_FINISH_ERROR, their blocks come back, and the status is returned; the engine stays usable.
spry_status spry_engine_step(spry_engine *e, bool *busy);
// Blocks until a request is queued or `seconds` pass (for an idle stepping loop). Thread safe.
void spry_engine_wait_work(spry_engine *e, double seconds);
// A snapshot of the counters. Thread safe.
void spry_engine_stats_get(spry_engine *e, spry_engine_stats *s);
// Logits (n, V) of every position of ids (n <= n_ctx) through the engine's own forward pass and
// KV blocks (prefill with logits everywhere): for tests, evaluation and scoring. Not while
// another thread steps. SPRY_ERR_ARG for bad ids or n; SPRY_ERR_NOMEM when no blocks are free.
spry_status spry_engine_score(spry_engine *e, const int32_t *ids, int64_t n, float *logits);
// The model's context as the engine sees it (n_ctx).
int64_t spry_engine_n_ctx(const spry_engine *e);

#endif
