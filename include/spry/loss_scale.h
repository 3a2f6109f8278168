/*
 * loss_scale.h -- fp16 loss scaling with DeepSpeed's semantics (DynamicLossScaler in
 * deepspeed/runtime/fp16/loss_scaler.py): the loss is multiplied by `scale` before backward; if
 * any gradient is inf/NaN the step is skipped and, once `hysteresis` overflows have used up the
 * delay, the scale halves (not below min_scale); a clean step whose distance to the last overflow
 * minus one is a positive multiple of `window` doubles it (the current DeepSpeed rule; older
 * releases used the distance itself). A static scale (loss_scale > 0) never changes.
 */
#ifndef SPRY_LOSS_SCALE_H
#define SPRY_LOSS_SCALE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct spry_loss_scaler {
    bool    dynamic;
    double  scale;              // current scale
    double  min_scale;          // min_loss_scale (1)
    int64_t window;             // loss_scale_window (1000)
    int     hysteresis;         // hysteresis (2)
    bool    consecutive_hysteresis; // consecutive_hysteresis (false)
    int     delayed_shift;      // overflows still tolerated before halving
    int64_t iter;               // steps seen (cur_iter)
    int64_t last_overflow_iter; // -1 before any overflow
    bool    at_min_overflow;    // an overflow happened at min_scale (DeepSpeed raises here)
} spry_loss_scaler;

// DeepSpeed's fp16 block: loss_scale (0 = dynamic), initial_scale_power, loss_scale_window,
// hysteresis, consecutive_hysteresis, min_loss_scale.
spry_loss_scaler spry_loss_scaler_init(double loss_scale, int initial_scale_power, int64_t window,
                                       int hysteresis, bool consecutive_hysteresis,
                                       double min_scale);
// Records one step's outcome and updates the scale. Returns true when the step must be skipped
// (overflow).
bool spry_loss_scaler_update(spry_loss_scaler *s, bool overflow);
// True when any of the n values is inf or NaN.
bool spry_has_inf_or_nan(const float *x, int64_t n);

#endif
