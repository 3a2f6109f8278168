/*
 * schedule.h -- learning-rate schedules with DeepSpeed's names, parameters and exact formulas
 * (deepspeed/runtime/lr_schedules.py): WarmupLR, WarmupDecayLR, WarmupCosineLR, plus constant.
 *
 * DeepSpeed's timing: the scheduler is stepped after each optimizer step, and before the first
 * step it is at last_batch_iteration = -1. So optimizer step k (0-based) uses
 * spry_schedule_lr(s, k - 1): at k = 0 WarmupLR/WarmupDecayLR give warmup_min_lr and
 * WarmupCosineLR gives 0. gamma during warmup (it < W, W = max(2, warmup_num_steps)):
 *   log:    ln(it + 1) / ln(W)        linear: it / W
 * WarmupLR:       lr = min + (max - min) * (it < W ? gamma : 1)
 * WarmupDecayLR:  after warmup gamma = max(0, (total - it) / max(1, total - W))
 * WarmupCosineLR: lr = base * ratio; warmup ratio = min_ratio + gamma * (1 - min_ratio); after
 *   warmup p = min(1, (it - W + 1) / max(1, total - W)),
 *   ratio = max(0, cos_min_ratio + (1 - cos_min_ratio) * (1 + cos(pi p)) / 2)
 *
 * Token-based progress (Megatron's --lr-warmup-tokens / --lr-decay-tokens, which the data
 * efficiency papers' runs used; shared/notes/data_efficiency.md 4.6): with by_tokens the same
 * schedules run on a count of (effective) training tokens t instead of the step: W_t =
 * warmup_num_tokens, T_t = total_num_tokens, and, continuous in t,
 *   warmup gamma:   log: ln(t + 1) / ln(W_t)     linear: t / W_t          (t < W_t)
 *   WarmupDecayLR:  gamma = max(0, (T_t - t) / (T_t - W_t))                 (t >= W_t)
 *   WarmupCosineLR: p = min(1, (t - W_t) / (T_t - W_t)), ratio as above       (t >= W_t)
 * so WarmupCosineLR with warmup_type linear, warmup_min_ratio 0 and cos_min_ratio = min/max is
 * Megatron's token schedule: max_lr t / W_t, then min + (max - min) (1 + cos(pi p)) / 2.
 */
#ifndef SPRY_SCHEDULE_H
#define SPRY_SCHEDULE_H

#include <stdbool.h>
#include <stdint.h>

typedef enum spry_lr_kind {
    SPRY_LR_CONSTANT = 0,
    SPRY_LR_WARMUP,        // "WarmupLR"
    SPRY_LR_WARMUP_DECAY,  // "WarmupDecayLR"
    SPRY_LR_WARMUP_COSINE, // "WarmupCosineLR"
} spry_lr_kind;

typedef struct spry_lr_schedule {
    spry_lr_kind kind;
    double       base_lr;          // the optimizer's lr (constant, cosine base, default max)
    double       warmup_min_lr;    // 0
    double       warmup_max_lr;    // base_lr when not given
    int64_t      warmup_num_steps; // 1000 (DeepSpeed uses max(2, this))
    bool         warmup_linear;    // warmup_type "linear" (default "log")
    int64_t      total_num_steps;  // WarmupDecayLR / WarmupCosineLR
    double       warmup_min_ratio; // WarmupCosineLR: 0
    double       cos_min_ratio;    // WarmupCosineLR: 0.0001
    bool         by_tokens;        // progress in tokens (spry_schedule_lr_tokens), not steps (false)
    double       warmup_num_tokens; // W_t (by_tokens; >= 1)
    double       total_num_tokens;  // T_t (by_tokens; > W_t for the decaying kinds)
} spry_lr_schedule;

// A schedule of the given kind with DeepSpeed's defaults and base learning rate lr.
spry_lr_schedule spry_lr_schedule_default(spry_lr_kind kind, double lr);
// The kind for a DeepSpeed scheduler type name; returns false if unknown.
bool spry_lr_kind_from_name(const char *name, spry_lr_kind *kind);
// Learning rate at last_batch_iteration `it` (it = -1 before the first scheduler step). Pure.
double spry_schedule_lr(const spry_lr_schedule *s, int64_t it);
// Learning rate after `tokens` (effective) training tokens, for a by_tokens schedule (formulas
// above; tokens < 0 is treated as 0). Pure. On a step-based schedule it returns the it = -1 value.
double spry_schedule_lr_tokens(const spry_lr_schedule *s, double tokens);

#endif
