/*
 * optim.h -- optimizers over a flat parameter store: AdamW, Adam, SGD with momentum, and
 * global-norm gradient clipping. Semantics follow torch.optim (and DeepSpeed's FusedAdam):
 *   Adam:  g += wd * p (L2); m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *          p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
 *   AdamW: p *= 1 - lr * wd (decoupled), then the Adam update without L2.
 *   SGD:   g += wd * p; buf = momentum * buf + (1 - dampening) * g (buf = g on the first step);
 *          p -= lr * (nesterov ? g + momentum * buf : buf)
 * Parameters flagged SPRY_PARAM_NO_DECAY (biases, norms) get no weight decay; frozen ones are
 * skipped (read at every step, so freezing can change during training). State lives in flat
 * buffers parallel to the store's, so a checkpoint is one write.
 */
#ifndef SPRY_OPTIM_H
#define SPRY_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "spry/params.h"
#include "spry/status.h"

typedef enum spry_optim_type {
    SPRY_OPTIM_ADAMW = 0,
    SPRY_OPTIM_ADAM,
    SPRY_OPTIM_SGD,
} spry_optim_type;

typedef struct spry_optim_params {
    spry_optim_type type;
    float           lr;           // default 1e-3
    float           beta1, beta2; // 0.9, 0.999
    float           eps;          // 1e-8
    float           weight_decay; // 0.01 for AdamW, 0 otherwise
    float           momentum;     // SGD: 0
    float           dampening;    // SGD: 0
    bool            nesterov;     // SGD: false
} spry_optim_params;

typedef struct spry_optim {
    spry_optim_params p;
    spry_params      *store;
    int64_t           lo, hi; // the range of the flat buffers this optimizer owns (ZeRO partition)
    float            *m;      // (hi - lo) first moment / SGD momentum buffer
    float            *v;      // (hi - lo) second moment (Adam)
    int64_t           step;   // completed steps
} spry_optim;

spry_optim_params spry_optim_params_default(spry_optim_type type);
// Allocates state for every parameter of the store (after spry_params_alloc). *out NULL on error.
spry_status spry_optim_init(spry_params *store, const spry_optim_params *p, spry_optim **out);
// As spry_optim_init, for the elements [lo, hi) of the flat buffers only (ZeRO's optimizer-state
// partition): state is (hi - lo) elements and spry_optim_step updates only that range, with the
// same bits the full optimizer would give there. 0 <= lo <= hi <= n_elem.
spry_status spry_optim_init_range(spry_params *store, const spry_optim_params *p, int64_t lo, int64_t hi,
                                  spry_optim **out);
void        spry_optim_free(spry_optim *o);
// One update with learning rate lr (the schedule's value). Deterministic for any thread count.
void spry_optim_step(spry_optim *o, float lr);
// Scales all gradients so that their global L2 norm is at most max_norm (no-op if max_norm <= 0)
// and returns the norm before clipping (torch.nn.utils.clip_grad_norm_). Deterministic.
float spry_clip_grad_norm(spry_params *store, float max_norm);

// The norm is summed in fixed chunks of SPRY_NORM_CHUNK elements (each in double, then the
// chunks in order), so a sharded computation reproduces it bit for bit when shards are whole
// chunks. spry_grad_sq_chunks writes part[c - c0] = sum of g[i]^2 over chunk c, c in [c0, c1).
#define SPRY_NORM_CHUNK ((int64_t)1 << 16)
void spry_grad_sq_chunks(const float *g, int64_t n_elem, int64_t c0, int64_t c1, double *part);
// torch's clip coefficient min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0.
float spry_clip_coef(float norm, float max_norm);

#endif
