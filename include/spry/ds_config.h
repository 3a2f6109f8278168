/*
 * ds_config.h -- DeepSpeed's JSON training config (https://www.deepspeed.ai/docs/config-json/),
 * the keys spry's trainer honours, with DeepSpeed's defaults:
 *   train_batch_size / train_micro_batch_size_per_gpu / gradient_accumulation_steps
 *     (DeepSpeed's rule: train = micro * accumulation * world size; any two determine the third),
 *   optimizer {type: Adam | AdamW | SGD, params: lr, betas, eps, weight_decay, adam_w_mode,
 *     momentum, dampening, nesterov}  ("Adam" is AdamW unless adam_w_mode is false, as in
 *     DeepSpeed's FusedAdam),
 *   scheduler {type: WarmupLR | WarmupDecayLR | WarmupCosineLR, params: ...} (schedule.h; spry
 *     adds warmup_num_tokens / total_num_tokens: progress counted in effective training tokens,
 *     as Megatron's --lr-warmup-tokens / --lr-decay-tokens),
 *   gradient_clipping (0 = off), bf16 {enabled}, fp16 {enabled, loss_scale, initial_scale_power,
 *   loss_scale_window, hysteresis, consecutive_hysteresis, min_loss_scale}, steps_per_print,
 *   seed, csv_monitor {enabled, output_path, job_name},
 *   zero_optimization {stage: 0 | 1 | 2, reduce_bucket_size (5e8), allgather_bucket_size (5e8),
 *     overlap_comm (false)} (data_parallel.h; stage 3 and offload are refused / warned about).
 * Unknown keys are warned about by name; keys of DeepSpeed features that spry does not act on
 * are warned about as ignored; a wrong type or value is an error naming the key and the value.
 * Technique sections stay available as JSON (spry_ds_config.root) for the technique registry.
 */
#ifndef SPRY_DS_CONFIG_H
#define SPRY_DS_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "spry/optim.h"
#include "spry/schedule.h"
#include "spry/status.h"

typedef struct spry_ds_config {
    int64_t           train_batch_size;
    int64_t           micro_batch; // train_micro_batch_size_per_gpu
    int64_t           grad_accum;  // gradient_accumulation_steps
    spry_optim_params optim;       // defaults: Adam(W) lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 0
    spry_lr_schedule  sched;       // constant at optim.lr when no scheduler is given
    double            gradient_clipping;
    bool              bf16, fp16;
    double            loss_scale;        // 0 = dynamic
    int               initial_scale_power; // 16
    int64_t           loss_scale_window;   // 1000
    int               hysteresis;          // 2
    bool              consecutive_hysteresis;
    double            min_loss_scale;      // 1
    int64_t           steps_per_print;     // 10
    uint64_t          seed;                // 1234
    bool              csv_enabled;
    char              csv_output_path[512]; // ""
    char              csv_job_name[128];    // "DeepSpeedJobName"
    int               zero_stage;            // zero_optimization.stage (0)
    int64_t           reduce_bucket_size;    // elements (5e8)
    int64_t           allgather_bucket_size; // elements (5e8)
    bool              overlap_comm;          // false
    int               n_warnings;           // unknown/ignored keys reported
    void             *root;                 // the parsed cJSON tree (owned)
} spry_ds_config;

// The config DeepSpeed would use for {} plus train_micro_batch_size_per_gpu = 1.
void spry_ds_config_default(spry_ds_config *cfg);
// Parses JSON text; `name` (a file name) prefixes messages. world_size enters the batch rule.
// On error returns SPRY_ERR_CONFIG / SPRY_ERR_FORMAT with "name: key: message (value)" and
// leaves *cfg freed. Warnings go to the log.
spry_status spry_ds_config_parse(const char *text, const char *name, int world_size,
                                 spry_ds_config *cfg);
// Reads and parses a file (SPRY_ERR_IO if unreadable).
spry_status spry_ds_config_load(const char *path, int world_size, spry_ds_config *cfg);
void        spry_ds_config_free(spry_ds_config *cfg);

#endif
