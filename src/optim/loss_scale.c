/*
 * loss_scale.c -- DeepSpeed's dynamic loss scaler (see loss_scale.h).
 */
#include "spry/loss_scale.h"

#include <math.h>

spry_loss_scaler spry_loss_scaler_init(double loss_scale, int initial_scale_power, int64_t window,
                                       int hysteresis, bool consecutive_hysteresis,
                                       double min_scale) {
    spry_loss_scaler s = {.dynamic = loss_scale == 0.0, .min_scale = min_scale, .window = window,
                          .hysteresis = hysteresis, .consecutive_hysteresis = consecutive_hysteresis,
                          .delayed_shift = hysteresis, .last_overflow_iter = -1};
    s.scale = s.dynamic ? ldexp(1.0, initial_scale_power) : loss_scale;
    return s;
}

bool spry_loss_scaler_update(spry_loss_scaler *s, bool overflow) {
    if (!s->dynamic) {
        s->iter++;
        return overflow;
    }
    if (overflow) {
        if (s->hysteresis == 1 || s->delayed_shift == 1) {
            if (s->scale == s->min_scale) s->at_min_overflow = true;
            s->scale = fmax(s->scale / 2.0, s->min_scale);
        } else {
            s->delayed_shift--;
        }
        s->last_overflow_iter = s->iter;
    } else {
        if (s->consecutive_hysteresis) s->delayed_shift = s->hysteresis;
        int64_t stable = (s->iter - s->last_overflow_iter) - 1;
        if (stable > 0 && stable % s->window == 0) {
            if (!s->consecutive_hysteresis) s->delayed_shift = s->hysteresis;
            s->scale *= 2.0;
        }
    }
    s->iter++;
    return overflow;
}

bool spry_has_inf_or_nan(const float *x, int64_t n) {
    int bad = 0;
#pragma omp parallel for reduction(| : bad) schedule(static)
    for (int64_t i = 0; i < n; i++) bad |= !isfinite(x[i]);
    return bad != 0;
}
