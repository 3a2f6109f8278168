/*
 * trainer.h -- the training loop (STYLE.md section 7), driven by a DeepSpeed config.
 *
 *   for each optimizer step:
 *     for each micro-batch (gradient_accumulation_steps of them):
 *       source.next -> batch                 hooks: on_batch
 *       ctx.begin; fwd opts                  hooks: on_forward
 *       loss terms = [task loss]             hooks: on_loss
 *       backward(sum(terms) * loss_scale / accumulation)
 *     fp16: unscale, skip the step on inf/NaN (dynamic loss scaling)
 *     clip(gradient_clipping); optimizer.step(lr = schedule(step - 1))   (DeepSpeed's timing)
 *                                            hooks: on_step_end
 * Checkpoints (spry_trainer_save) hold the model (safetensors + config.json), the optimizer
 * state, the step/sample/token counters, the RNG counter, the data source's position and the
 * loss scaler, written to a temporary directory that is renamed into place before the `latest`
 * pointer (itself written to a temporary name and renamed) moves to it: a run killed at any
 * moment leaves the previous checkpoint loadable, and a resumed run reproduces the loss sequence
 * of an uninterrupted one exactly.
 * The trainer names no technique: techniques register hooks (spry_trainer_add_technique).
 *
 * Data parallel (params.comm with several ranks; data_parallel.h): each rank runs the micro-
 * batches of its rows, gradients are averaged over ranks (allreduce, or reduce-scatter under
 * ZeRO stage 2), ZeRO stages 1-2 keep optimizer state for one partition per rank. Dropout masks
 * follow the global micro-batch index, so N ranks with accumulation A train like one process with
 * accumulation N*A. Rank 0 prints progress and writes metrics and the model; every rank with an
 * optimizer partition writes it into the same checkpoint directory, which loads at any world size.
 */
#ifndef SPRY_TRAINER_H
#define SPRY_TRAINER_H

#include <stdbool.h>
#include <stdint.h>

#include "spry/comm.h"
#include "spry/ds_config.h"
#include "spry/loss_scale.h"
#include "spry/model.h"
#include "spry/ops.h"
#include "spry/optim.h"

typedef struct spry_trainer spry_trainer;

// Where batches come from. next fills tokens I32 (B, T+1) with the next global micro-batch:
// B = micro_batch x world size rows, of which rank r trains on rows [r micro, (r+1) micro) --
// every rank reads the same stream, so the global batches (and the position saved in a
// checkpoint) do not depend on the number of ranks. state/set_state save and restore the
// position as up to 8 integers (for checkpoints). Any callback returning non-OK stops training.
typedef struct spry_batch_source {
    void *self;
    spry_status (*next)(void *self, int32_t *tokens, int64_t B, int64_t T1);
    int (*get_state)(void *self, int64_t state[8]);   // returns how many values it wrote
    spry_status (*set_state)(void *self, const int64_t *state, int n);
} spry_batch_source;

typedef struct spry_batch {
    spry_tensor *tokens;     // I32 (B, T+1)
    int64_t      step;       // optimizer step this micro-batch belongs to
    double       difficulty; // set by curriculum-style hooks (0 = none)
} spry_batch;

// Per-micro-batch forward options that on_forward hooks may change (weight transforms join here
// with the techniques that need them). The trainer fills the read-only description of the
// micro-batch and passes precision and routes to the model's forward.
typedef struct spry_fwd_opts {
    spry_precision          precision; // matmul precision of this step (from the config's bf16/fp16)
    const spry_token_route *routes;    // per-layer token routes (model.h), or NULL; the hook
    int64_t                 n_routes;  // owns the array, valid until the next on_forward
    // read-only: this micro-batch
    int64_t                 micro;     // index within the optimizer step, 0 .. accumulation-1
    int64_t                 row0;      // global row index of this rank's first row
    int64_t                 batch;     // B rows this rank trains on
    int64_t                 seq_len;   // T of the model input (tokens minus one)
    bool                    training;  // true in the training loop
    // Effective tokens per row of this micro-batch for token-based schedules and termination
    // (shared/notes/data_efficiency.md 4.6; a token-dropping hook lowers it): the trainer
    // starts it at seq_len and adds rows x this value to its effective-token counter.
    int64_t                 eff_seq_len;
} spry_fwd_opts;

#define SPRY_MAX_LOSS_TERMS 8
typedef struct spry_loss_terms {
    spry_tensor *t[SPRY_MAX_LOSS_TERMS]; // each a (1) tensor
    float        weight[SPRY_MAX_LOSS_TERMS];
    const char  *name[SPRY_MAX_LOSS_TERMS];
    int          n;
} spry_loss_terms;

// A technique: any hook may be NULL; hooks run in registration order.
typedef struct spry_technique_vt {
    const char *name;
    void (*on_batch)(void *st, spry_trainer *tr, spry_batch *b);
    void (*on_forward)(void *st, spry_trainer *tr, spry_fwd_opts *fwd);
    void (*on_loss)(void *st, spry_trainer *tr, spry_loss_terms *terms);
    void (*on_step_end)(void *st, spry_trainer *tr);
    void (*free)(void *st);
    // Checkpoint state as up to SPRY_TECHNIQUE_MAX_STATE integers, saved under the technique's
    // name (NULL: none). set_state runs on resume only when the checkpoint holds state of that
    // name; a non-OK return fails the resume.
    int (*get_state)(void *st, int64_t *state);
    spry_status (*set_state)(void *st, const int64_t *state, int n);
} spry_technique_vt;
#define SPRY_TECHNIQUE_MAX_STATE 16

typedef struct spry_trainer_params {
    const char *out_dir;       // checkpoints and metrics ("runs/train")
    int64_t     n_steps;       // optimizer steps in total (1000)
    int64_t     seq_len;       // T (the model's context by default)
    int64_t     save_every;    // checkpoint every N steps; 0: only at the end (0)
    int         n_threads;     // 0: all cores
    int         progress;      // -1 auto (a terminal gets a progress line), 0 log lines, 1 line
    const char *tokenizer;     // tokenizer.json copied into checkpoints (NULL: none)
    int64_t     stop_after;    // stop (without a final save) after this many steps; 0 = off (tests)
    spry_comm  *comm;          // the job's ranks (not owned); NULL: single process
    int64_t     train_tokens;  // stop once this many effective tokens are consumed; 0 = off (0)
} spry_trainer_params;

spry_trainer_params spry_trainer_params_default(void);

// Creates a trainer for model m (not owned) with config cfg (copied; its JSON tree stays owned
// by the caller) and a batch source. Errors: SPRY_ERR_CONFIG (e.g. seq_len > n_positions),
// SPRY_ERR_IO (out_dir), SPRY_ERR_NOMEM. *out is NULL on error. With several ranks it is
// collective: ranks check that they agree on the config, steps, sequence length and model size
// (SPRY_ERR_CONFIG naming the setting otherwise) and take rank 0's initial weights.
spry_status spry_trainer_init(spry_model *m, const spry_ds_config *cfg, spry_batch_source src,
                              const spry_trainer_params *p, spry_trainer **out);
void        spry_trainer_free(spry_trainer *tr);
// Registers a technique (the trainer owns state from then on and calls vt->free on it).
spry_status spry_trainer_add_technique(spry_trainer *tr, const spry_technique_vt *vt, void *state);

// One optimizer step. *loss is the mean task loss over the micro-batches; *skipped is true when
// fp16 overflow skipped the update. Returns the first error (the model is unchanged then).
spry_status spry_trainer_step(spry_trainer *tr, float *loss, bool *skipped);
// Runs until n_steps (resuming from the current step), printing progress, writing metrics and
// checkpoints as configured, and saving at the end.
spry_status spry_trainer_run(spry_trainer *tr);
// Writes a checkpoint <out_dir>/step_<N> and points <out_dir>/latest at it (collective).
spry_status spry_trainer_save(spry_trainer *tr);
// Restores the checkpoint <out_dir>/latest (or dir if non-NULL), saved at any world size and ZeRO
// stage: each rank reads the optimizer state of its own partition. SPRY_ERR_NOT_FOUND if none.
spry_status spry_trainer_resume(spry_trainer *tr, const char *dir);

// Read-only accessors for hooks and tools.
int64_t     spry_trainer_step_index(const spry_trainer *tr);
// Effective tokens consumed so far (each micro-batch's rows x its eff_seq_len): what a
// token-based schedule (scheduler.params.warmup_num_tokens / total_num_tokens) and train_tokens
// count. Without token-dropping or truncating hooks it equals the tokens trained on.
int64_t     spry_trainer_eff_tokens(const spry_trainer *tr);
double      spry_trainer_lr(const spry_trainer *tr);
spry_model *spry_trainer_model(spry_trainer *tr);
spry_ctx   *spry_trainer_ctx(spry_trainer *tr);
// Elements of optimizer state partition held by this rank (all parameters unless ZeRO >= 1).
int64_t     spry_trainer_optim_elems(const spry_trainer *tr);

#endif
