/*
 * optim.c -- AdamW / Adam / SGD over the flat parameter buffers (see optim.h). References:
 * Kingma & Ba 2015; Loshchilov & Hutter 2019 (decoupled weight decay); torch.optim docs.
 */
#include "spry/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

spry_optim_params spry_optim_params_default(spry_optim_type type) {
    return (spry_optim_params){.type = type, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f,
                               .eps = 1e-8f, .weight_decay = type == SPRY_OPTIM_ADAMW ? 0.01f : 0.0f};
}

spry_status spry_optim_init(spry_params *store, const spry_optim_params *p, spry_optim **out) {
    return spry_optim_init_range(store, p, 0, store->n_elem, out);
}

spry_status spry_optim_init_range(spry_params *store, const spry_optim_params *p, int64_t lo, int64_t hi,
                                  spry_optim **out) {
    *out = NULL;
    SPRY_ASSERT(0 <= lo && lo <= hi && hi <= store->n_elem, "optimizer range [%lld, %lld) of %lld",
                (long long)lo, (long long)hi, (long long)store->n_elem);
    spry_optim *o = calloc(1, sizeof *o);
    size_t      n = (size_t)(hi > lo ? hi - lo : 1);
    if (o) {
        o->m = calloc(n, sizeof(float));
        o->v = p->type == SPRY_OPTIM_SGD ? NULL : calloc(n, sizeof(float));
    }
    if (!o || !o->m || (p->type != SPRY_OPTIM_SGD && !o->v)) {
        spry_optim_free(o);
        return spry_errorf(SPRY_ERR_NOMEM, "optimizer: out of memory for %zu parameters", n);
    }
    o->p     = *p;
    o->store = store;
    o->lo = lo, o->hi = hi;
    *out     = o;
    return SPRY_OK;
}

void spry_optim_free(spry_optim *o) {
    if (!o) return;
    free(o->m), free(o->v), free(o);
}

// One parameter's update over [lo, hi) of the flat buffers; decay tells whether weight decay
// applies. Elementwise, so any thread split gives the same bits.
static void update_range(const spry_optim *o, int64_t lo, int64_t hi, bool decay, float lr,
                         float step_size, float inv_sqrt_bc2, bool first) {
    const spry_optim_params *p = &o->p;
    // m and v hold [o->lo, o->hi): shift them so that m[i] is element i's state
    float *w = o->store->values, *g = o->store->grads, *m = o->m - o->lo, *v = o->v ? o->v - o->lo : NULL;
    float  wd = decay ? p->weight_decay : 0.0f;
    if (p->type == SPRY_OPTIM_SGD) {
#pragma omp for schedule(static)
        for (int64_t i = lo; i < hi; i++) {
            float gi = g[i] + wd * w[i];
            if (p->momentum != 0.0f) {
                m[i] = first ? gi : p->momentum * m[i] + (1.0f - p->dampening) * gi;
                gi   = p->nesterov ? gi + p->momentum * m[i] : m[i];
            }
            w[i] -= lr * gi;
        }
        return;
    }
    bool  adamw = p->type == SPRY_OPTIM_ADAMW;
    float b1 = p->beta1, b2 = p->beta2, eps = p->eps;
#pragma omp for schedule(static)
    for (int64_t i = lo; i < hi; i++) {
        float gi = g[i];
        if (adamw)
            w[i] *= 1.0f - lr * wd;
        else
            gi += wd * w[i];
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        w[i] -= step_size * m[i] / (sqrtf(v[i]) * inv_sqrt_bc2 + eps);
    }
}

void spry_optim_step(spry_optim *o, float lr) {
    const spry_optim_params *p = &o->p;
    o->step++;
    double bc1 = 1.0 - pow((double)p->beta1, (double)o->step);
    double bc2 = 1.0 - pow((double)p->beta2, (double)o->step);
    float  step_size = (float)(lr / bc1), inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    bool   first = o->step == 1;
    const spry_params *P = o->store;
    // frozen parameters and the alignment padding between parameters are never touched
#pragma omp parallel
    for (int64_t k = 0; k < P->n_items; k++) {
        const spry_param *it = &P->items[k];
        if (it->pflags & SPRY_PARAM_FROZEN) continue;
        int64_t lo = it->offset, hi = it->offset + spry_tensor_numel(&it->t);
        lo = lo > o->lo ? lo : o->lo;
        hi = hi < o->hi ? hi : o->hi;
        if (lo >= hi) continue;
        update_range(o, lo, hi, !(it->pflags & SPRY_PARAM_NO_DECAY), lr, step_size, inv_sqrt_bc2, first);
    }
}

void spry_grad_sq_chunks(const float *g, int64_t n, int64_t c0, int64_t c1, double *part) {
#pragma omp parallel for schedule(static)
    for (int64_t c = c0; c < c1; c++) {
        double  s  = 0;
        int64_t hi = (c + 1) * SPRY_NORM_CHUNK < n ? (c + 1) * SPRY_NORM_CHUNK : n;
        for (int64_t i = c * SPRY_NORM_CHUNK; i < hi; i++) s += (double)g[i] * g[i];
        part[c - c0] = s;
    }
}

float spry_clip_coef(float norm, float max_norm) {
    // torch.nn.utils.clip_grad_norm_: grads *= min(1, max_norm / (norm + 1e-6))
    double coef = max_norm > 0 ? (double)max_norm / ((double)norm + 1e-6) : 1.0;
    return coef < 1.0 ? (float)coef : 1.0f;
}

float spry_clip_grad_norm(spry_params *store, float max_norm) {
    // fixed chunks summed in double, then in chunk order: thread-count independent
    int64_t n = store->n_elem, nch = (n + SPRY_NORM_CHUNK - 1) / SPRY_NORM_CHUNK;
    double *part = calloc((size_t)(nch ? nch : 1), sizeof *part);
    if (!part) return NAN; // cannot happen for sane sizes; callers see NaN and stop
    spry_grad_sq_chunks(store->grads, n, 0, nch, part);
    double total = 0;
    for (int64_t c = 0; c < nch; c++) total += part[c];
    free(part);
    float norm = (float)sqrt(total);
    float s    = spry_clip_coef(norm, max_norm);
    if (s < 1.0f) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) store->grads[i] *= s;
    }
    return norm;
}
