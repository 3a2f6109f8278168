/*
 * schedule.c -- DeepSpeed's learning-rate schedules (see schedule.h for the formulas).
 */
#include "spry/schedule.h"

#include <math.h>
#include <string.h>

spry_lr_schedule spry_lr_schedule_default(spry_lr_kind kind, double lr) {
    return (spry_lr_schedule){.kind = kind, .base_lr = lr, .warmup_min_lr = 0.0,
                              .warmup_max_lr = lr, .warmup_num_steps = 1000,
                              .total_num_steps = 0, .warmup_min_ratio = 0.0, .cos_min_ratio = 1e-4};
}

bool spry_lr_kind_from_name(const char *name, spry_lr_kind *kind) {
    static const struct { const char *name; spry_lr_kind kind; } k_names[] = {
        {"WarmupLR", SPRY_LR_WARMUP}, {"WarmupDecayLR", SPRY_LR_WARMUP_DECAY},
        {"WarmupCosineLR", SPRY_LR_WARMUP_COSINE}, {"Constant", SPRY_LR_CONSTANT}};
    for (size_t i = 0; i < sizeof k_names / sizeof k_names[0]; i++)
        if (!strcmp(name, k_names[i].name)) {
            *kind = k_names[i].kind;
            return true;
        }
    return false;
}

static double warmup_gamma(const spry_lr_schedule *s, int64_t it, int64_t W) {
    return s->warmup_linear ? (double)it / (double)W : log((double)(it + 1)) / log((double)W);
}

double spry_schedule_lr(const spry_lr_schedule *s, int64_t it) {
    int64_t W = s->warmup_num_steps < 2 ? 2 : s->warmup_num_steps;
    switch (s->kind) {
    case SPRY_LR_CONSTANT: return s->base_lr;
    case SPRY_LR_WARMUP:
    case SPRY_LR_WARMUP_DECAY: {
        if (it < 0) return s->warmup_min_lr;
        double gamma;
        if (it < W)
            gamma = warmup_gamma(s, it, W);
        else if (s->kind == SPRY_LR_WARMUP)
            gamma = 1.0;
        else {
            double den = (double)(s->total_num_steps - W);
            gamma      = fmax(0.0, (double)(s->total_num_steps - it) / fmax(1.0, den));
        }
        return s->warmup_min_lr + (s->warmup_max_lr - s->warmup_min_lr) * gamma;
    }
    case SPRY_LR_WARMUP_COSINE: {
        if (it < 0) return 0.0;
        double ratio;
        if (it < W) {
            ratio = s->warmup_min_ratio + warmup_gamma(s, it, W) * (1.0 - s->warmup_min_ratio);
        } else {
            double real_total = (double)(s->total_num_steps - W);
            double p          = fmin(1.0, (double)(it - W + 1) / fmax(1.0, real_total));
            ratio = fmax(0.0, s->cos_min_ratio + (1.0 - s->cos_min_ratio) * (1.0 + cos(3.14159265358979323846 * p)) / 2.0);
        }
        return s->base_lr * ratio;
    }
    }
    return s->base_lr;
}

double spry_schedule_lr_tokens(const spry_lr_schedule *s, double t) {
    if (!s->by_tokens) return spry_schedule_lr(s, -1);
    t          = t < 0 ? 0 : t;
    double W   = s->warmup_num_tokens < 1 ? 1 : s->warmup_num_tokens;
    double T   = s->total_num_tokens;
    double gam = s->warmup_linear ? t / W : log(t + 1.0) / log(W > 1 ? W : 2);
    switch (s->kind) {
    case SPRY_LR_CONSTANT: return s->base_lr;
    case SPRY_LR_WARMUP:
    case SPRY_LR_WARMUP_DECAY: {
        double gamma = t < W ? gam : s->kind == SPRY_LR_WARMUP ? 1.0 : fmax(0.0, (T - t) / fmax(1.0, T - W));
        return s->warmup_min_lr + (s->warmup_max_lr - s->warmup_min_lr) * gamma;
    }
    case SPRY_LR_WARMUP_COSINE: {
        double ratio;
        if (t < W) {
            ratio = s->warmup_min_ratio + gam * (1.0 - s->warmup_min_ratio);
        } else {
            double p = fmin(1.0, (t - W) / fmax(1.0, T - W));
            ratio = fmax(0.0, s->cos_min_ratio + (1.0 - s->cos_min_ratio) * (1.0 + cos(3.14159265358979323846 * p)) / 2.0);
        }
        return s->base_lr * ratio;
    }
    }
    return s->base_lr;
}
