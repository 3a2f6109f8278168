/*
 * random_ltd.h -- random layerwise token dropping (random-LTD; Yao et al., arXiv 2211.11586,
 * and DeepSpeed's data_routing: RandomLayerTokenDrop + RandomLTDScheduler).
 *
 * The listed layers (explicit 0-based ids) each run on r kept tokens per sample, an independent
 * uniformly random sorted subset per (layer, sample) and micro-batch; the other tokens skip the
 * layer unchanged (model.h's spry_token_route does the gather / block / scatter). The reserved
 * length r grows by DeepSpeed's fixed_linear schedule from min_value to max_value over
 * require_steps optimizer steps, rounded down to a multiple of seq_per_step. Indices come from
 * spry's counter-based RNG keyed by (seed, step, micro-batch, layer, global sample row), so a
 * recomputed forward, a resumed run and any world size draw the same tokens.
 * Evaluation and r >= T are pass-throughs. See docs/random_ltd.md and
 * notes/data_efficiency.md section 4.
 */
#ifndef SPRY_RANDOM_LTD_H
#define SPRY_RANDOM_LTD_H

#include <stdbool.h>
#include <stdint.h>

#include "spry/model.h"
#include "spry/status.h"
#include "spry/trainer.h"

#define SPRY_RANDOM_LTD_MAX_LAYERS 256
#define SPRY_RANDOM_LTD_N_STATE 5

// DeepSpeed's "random_ltd" block (notes 1.3), keys named as in the JSON. DeepSpeed has no
// defaults for most of them (a missing key is an error there); the values from
// spry_random_ltd_params_default() are placeholders that validation rejects where DeepSpeed
// would (-1 = unset).
typedef struct spry_random_ltd_params {
    bool enabled;                 // "enabled" (false): the caller adds the technique only if set
    int64_t total_layer_num;      // "total_layer_num": L of the model (-1)
    int64_t random_ltd_layer_num; // "random_ltd_layer_num": n, must equal n_layer_id (-1)
    int64_t random_ltd_layer_id[SPRY_RANDOM_LTD_MAX_LAYERS]; // "random_ltd_layer_id"
    int64_t n_layer_id;                                      // entries used in random_ltd_layer_id
    const char *model_mask_name;    // "model_mask_name": NULL = no mask (ViT); informational
    const char *model_type;         // "model_type": "decoder" | "encoder" ("decoder")
    const char *hidden_state_order; // "hidden_state_order": "batch_seq_dim" | "seq_batch_dim"
    int64_t min_value;              // "random_ltd_schedule.min_value" (-1)
    int64_t max_value;              // "random_ltd_schedule.max_value" (-1)
    const char *schedule_type;      // "random_ltd_schedule.schedule_type" ("fixed_linear")
    int64_t require_steps;          // "...schedule_config.require_steps" (-1)
    int64_t seq_per_step;           // "...schedule_config.seq_per_step" (-1)
    bool layer_token_lr_enabled;    // "layer_token_lr_schedule.enabled" (false): the LR schedule
                                    // runs on consumed layer-tokens (a stub that raises in DeepSpeed;
                                    // spry_techniques maps it to a token-based schedule)
    int64_t total_layer_tokens;     // "layer_token_lr_schedule.total_layer_tokens" (required if enabled)
    int64_t warmup_layer_tokens;    // "layer_token_lr_schedule.warmup_layer_tokens" (0)
    bool layer_token_warmup_linear; // "layer_token_lr_schedule.warmup_type": "linear" (true) or "log"
    int64_t global_batch_size;      // injected by the engine: train_batch_size (0: unknown)
    uint64_t seed;                  // RNG key of the index draws (the run's seed, 1234)
} spry_random_ltd_params;

typedef struct spry_random_ltd spry_random_ltd;

// Defaults as documented on each field. Pure.
spry_random_ltd_params spry_random_ltd_params_default(void);
// Checks p against a model of n_layer layers (n_layer <= 0: skip the model checks): required keys
// set, layer ids distinct, in range and as many as random_ltd_layer_num, total_layer_num ==
// n_layer, 0 < min <= max, require_steps > 0, seq_per_step > 0, schedule_type "fixed_linear",
// model_type "decoder" (spry's models are causal decoders), and with layer_token_lr on
// 0 <= warmup_layer_tokens < total_layer_tokens.
// SPRY_ERR_CONFIG naming the key and value otherwise.
spry_status spry_random_ltd_params_validate(const spry_random_ltd_params *p, int64_t n_layer);

// Creates the technique state (validates first). *out is NULL on error (SPRY_ERR_CONFIG,
// SPRY_ERR_NOMEM). Free with spry_random_ltd_free. Not thread-safe; one per trainer.
spry_status spry_random_ltd_init(const spry_random_ltd_params *p, int64_t n_layer,
                                 spry_random_ltd **out);
void spry_random_ltd_free(spry_random_ltd *ltd);

// DeepSpeed's fixed_linear reserved length at 0-based optimizer step g (pure):
// min(M, f - f mod p), f = floor(g / R * (M - m) + m).
int64_t spry_random_ltd_schedule_value(const spry_random_ltd_params *p, int64_t g);
// RandomLTDScheduler.update_seq(g): while current < max, current = value(g); once per distinct g,
// consumed_layer_tokens += global_batch_size * (current * n + max * (L - n)). Returns current.
int64_t spry_random_ltd_update(spry_random_ltd *ltd, int64_t g);
// Current reserved length r, consumed layer-tokens, and the step of the last update (-1: none).
int64_t spry_random_ltd_current(const spry_random_ltd *ltd);
int64_t spry_random_ltd_consumed_layer_tokens(const spry_random_ltd *ltd);

// Fills kept (B, r) with a uniformly random subset of r of [0, S), sorted, for every sample b:
// the draw is a pure function of (seed, step, micro, layer, row0 + b) (Knuth's selection sampling
// over counter-based random words). Requires 0 < r <= S.
void spry_random_ltd_sample(uint64_t seed, int64_t step, int64_t micro, int64_t layer, int64_t row0,
                            int64_t B, int64_t S, int64_t r, int32_t *kept);

// The routes of one forward: routes[l] for every model layer l (routes has n_layer entries; the
// unlisted layers get none). Draws indices for the listed layers when training and current < S;
// otherwise leaves every route empty and returns false (pass-through). The index buffer is owned
// by ltd and reused by the next call. SPRY_ERR_NOMEM sets *st (if non-NULL) and returns false.
bool spry_random_ltd_routes(spry_random_ltd *ltd, int64_t step, int64_t micro, int64_t row0,
                            int64_t B, int64_t S, bool training, spry_token_route *routes,
                            spry_status *st);

// Checkpoint state as SPRY_RANDOM_LTD_N_STATE int64 values: current_value, current_steps,
// consumed_layer_tokens, min_value, max_value (DeepSpeed's "random_ltd" checkpoint keys).
int spry_random_ltd_get_state(const spry_random_ltd *ltd, int64_t *state);
// Restores it; SPRY_ERR_FORMAT if n is wrong or min/max differ from the config.
spry_status spry_random_ltd_set_state(spry_random_ltd *ltd, const int64_t *state, int n);

// The technique for spry_trainer_add_technique(tr, *vt, *state): creates the state from p (as
// spry_random_ltd_init; *state is then a spry_random_ltd * the caller may query, owned by the
// trainer once added, freed by vt->free). Its on_forward updates the schedule with the trainer's
// step (0-based, completed steps) and sets fwd->routes / n_routes (pass-through when
// !fwd->training or r >= T); its get_state/set_state put the checkpoint state above into trainer
// checkpoints. Errors as spry_random_ltd_init; *state is NULL then.
spry_status spry_random_ltd_technique(const spry_random_ltd_params *p, int64_t n_layer,
                                      const spry_technique_vt **vt, void **state);

#endif
