/*
 * random_ltd.c -- random layerwise token dropping (see random_ltd.h): DeepSpeed's
 * RandomLTDScheduler (fixed_linear reserved length, consumed layer-tokens, checkpoint state) and
 * the index sampler of deepspeed/ops/random_ltd/dropping_utils.py, replaced by Knuth's selection
 * sampling (Algorithm S) over counter-based random words: O(S) per row, sorted by construction,
 * and a pure function of (seed, step, micro-batch, layer, sample) so recomputation is exact.
 * The gather / block / scatter itself is model.h's token route; this file only decides routes.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "spry/random_ltd.h"
#include "spry/rng.h"

struct spry_random_ltd {
    spry_random_ltd_params p;
    int64_t n_layer;
    int64_t current;          // reserved length r (DeepSpeed current_value)
    int64_t cur_step;         // last step counted (current_steps), -1: none
    int64_t consumed;         // consumed_layer_tokens
    spry_token_route *routes; // (n_layer)
    int32_t *idx;             // (n, B, r) kept indices of the last routes call
    size_t idx_cap;           // elements
};

spry_random_ltd_params spry_random_ltd_params_default(void) {
    return (spry_random_ltd_params){
        .enabled                = false,
        .total_layer_num        = -1,
        .random_ltd_layer_num   = -1,
        .n_layer_id             = 0,
        .model_mask_name        = NULL,
        .model_type             = "decoder",
        .hidden_state_order     = "batch_seq_dim",
        .min_value              = -1,
        .max_value              = -1,
        .schedule_type          = "fixed_linear",
        .require_steps          = -1,
        .seq_per_step           = -1,
        .layer_token_lr_enabled = false,
        .total_layer_tokens     = -1,
        .warmup_layer_tokens    = 0,
        .layer_token_warmup_linear = true,
        .global_batch_size      = 0,
        .seed                   = 1234,
    };
}

spry_status spry_random_ltd_params_validate(const spry_random_ltd_params *p, int64_t n_layer) {
    const char *k = "random_ltd";
    if (p->total_layer_num <= 0)
        return spry_errorf(SPRY_ERR_CONFIG, "%s.total_layer_num: missing or %lld (must be > 0)", k,
                           (long long)p->total_layer_num);
    if (n_layer > 0 && p->total_layer_num != n_layer)
        return spry_errorf(SPRY_ERR_CONFIG,
                           "%s.total_layer_num = %lld but the model has %lld layers", k,
                           (long long)p->total_layer_num, (long long)n_layer);
    if (p->n_layer_id < 0 || p->n_layer_id > SPRY_RANDOM_LTD_MAX_LAYERS)
        return spry_errorf(SPRY_ERR_CONFIG, "%s.random_ltd_layer_id: %lld entries (at most %d)", k,
                           (long long)p->n_layer_id, SPRY_RANDOM_LTD_MAX_LAYERS);
    if (p->random_ltd_layer_num != p->n_layer_id)
        return spry_errorf(
            SPRY_ERR_CONFIG,
            "%s.random_ltd_layer_num = %lld but random_ltd_layer_id lists %lld layers", k,
            (long long)p->random_ltd_layer_num, (long long)p->n_layer_id);
    for (int64_t i = 0; i < p->n_layer_id; i++) {
        int64_t id = p->random_ltd_layer_id[i];
        if (id < 0 || id >= p->total_layer_num)
            return spry_errorf(SPRY_ERR_CONFIG,
                               "%s.random_ltd_layer_id[%lld] = %lld is outside [0, %lld)", k,
                               (long long)i, (long long)id, (long long)p->total_layer_num);
        for (int64_t j = 0; j < i; j++)
            if (p->random_ltd_layer_id[j] == id)
                return spry_errorf(SPRY_ERR_CONFIG, "%s.random_ltd_layer_id lists layer %lld twice",
                                   k, (long long)id);
    }
    if (p->min_value <= 0 || p->max_value < p->min_value)
        return spry_errorf(SPRY_ERR_CONFIG,
                           "%s.random_ltd_schedule: min_value %lld, max_value %lld "
                           "(need 0 < min_value <= max_value)",
                           k, (long long)p->min_value, (long long)p->max_value);
    if (p->require_steps <= 0)
        return spry_errorf(SPRY_ERR_CONFIG,
                           "%s.random_ltd_schedule.schedule_config.require_steps: missing or %lld",
                           k, (long long)p->require_steps);
    if (p->seq_per_step <= 0)
        return spry_errorf(SPRY_ERR_CONFIG,
                           "%s.random_ltd_schedule.schedule_config.seq_per_step: missing or %lld",
                           k, (long long)p->seq_per_step);
    if (!p->schedule_type || strcmp(p->schedule_type, "fixed_linear"))
        return spry_errorf(SPRY_ERR_CONFIG,
                           "%s.random_ltd_schedule.schedule_type \"%s\" is not supported. "
                           "HINT: only \"fixed_linear\" exists (as in DeepSpeed)",
                           k, p->schedule_type ? p->schedule_type : "(null)");
    if (p->model_type && strcmp(p->model_type, "decoder") && strcmp(p->model_type, "encoder"))
        return spry_errorf(SPRY_ERR_CONFIG, "%s.model_type \"%s\" (decoder or encoder)", k, p->model_type);
    if (p->hidden_state_order && strcmp(p->hidden_state_order, "batch_seq_dim") &&
        strcmp(p->hidden_state_order, "seq_batch_dim"))
        return spry_errorf(SPRY_ERR_CONFIG,
                           "%s.hidden_state_order \"%s\" (batch_seq_dim or seq_batch_dim)", k,
                           p->hidden_state_order);
    if (p->layer_token_lr_enabled && (p->total_layer_tokens <= 0 || p->warmup_layer_tokens < 0 ||
                                      p->warmup_layer_tokens >= p->total_layer_tokens))
        return spry_errorf(SPRY_ERR_CONFIG,
                           "%s.layer_token_lr_schedule: total_layer_tokens (%lld) must be > 0 and above "
                           "warmup_layer_tokens (%lld)",
                           k, (long long)p->total_layer_tokens, (long long)p->warmup_layer_tokens);
    return SPRY_OK;
}

spry_status spry_random_ltd_init(const spry_random_ltd_params *p, int64_t n_layer,
                                 spry_random_ltd **out) {
    *out = NULL;
    SPRY_TRY(spry_random_ltd_params_validate(p, n_layer));
    int64_t L            = n_layer > 0 ? n_layer : p->total_layer_num;
    spry_random_ltd *ltd = calloc(1, sizeof *ltd);
    if (ltd)
        ltd->routes = calloc((size_t)L, sizeof *ltd->routes);
    if (!ltd || !ltd->routes) {
        free(ltd);
        return spry_errorf(SPRY_ERR_NOMEM, "out of memory (random_ltd)");
    }
    ltd->p        = *p;
    ltd->n_layer  = L;
    ltd->current  = p->min_value;
    ltd->cur_step = -1;
    *out          = ltd;
    return SPRY_OK;
}

void spry_random_ltd_free(spry_random_ltd *ltd) {
    if (!ltd)
        return;
    free(ltd->routes);
    free(ltd->idx);
    free(ltd);
}

int64_t spry_random_ltd_schedule_value(const spry_random_ltd_params *p, int64_t g) {
    // Python: math.floor((float(g) / R) ** 1.0 * (M - m) + m); the same double operations
    double x  = (double)g / (double)p->require_steps;
    int64_t f = (int64_t)floor(x * (double)(p->max_value - p->min_value) + (double)p->min_value);
    f -= f % p->seq_per_step; // f >= min > 0: C's % agrees with Python's
    return f < p->max_value ? f : p->max_value;
}

int64_t spry_random_ltd_update(spry_random_ltd *ltd, int64_t g) {
    const spry_random_ltd_params *p = &ltd->p;
    if (ltd->current < p->max_value)
        ltd->current = spry_random_ltd_schedule_value(p, g);
    if (g != ltd->cur_step) {
        int64_t n = p->random_ltd_layer_num, L = p->total_layer_num;
        ltd->consumed += p->global_batch_size * (ltd->current * n + p->max_value * (L - n));
        ltd->cur_step = g;
    }
    return ltd->current;
}

int64_t spry_random_ltd_current(const spry_random_ltd *ltd) { return ltd->current; }
int64_t spry_random_ltd_consumed_layer_tokens(const spry_random_ltd *ltd) { return ltd->consumed; }

// splitmix64's finalizer: spreads (step, micro, layer) over the counter's high word
static uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

void spry_random_ltd_sample(uint64_t seed, int64_t step, int64_t micro, int64_t layer, int64_t row0,
                            int64_t B, int64_t S, int64_t r, int32_t *kept) {
    SPRY_ASSERT(r > 0 && r <= S && S <= INT32_MAX, "random_ltd: r = %lld of S = %lld", (long long)r,
                (long long)S);
    uint64_t key = seed ^ 0x4C54442D52414E44ull; // "LTD-RAND": apart from other users of seed
    uint64_t hi  = mix64((uint64_t)step ^ mix64((uint64_t)micro ^ mix64((uint64_t)layer)));
    for (int64_t b = 0; b < B; b++) {
        int32_t *row = kept + b * r;
        int64_t k    = 0;
        uint64_t lo  = (uint64_t)(row0 + b) << 32;
        // Algorithm S: keep position i with probability (r - k) / (S - i), exactly in integers:
        // w / 2^32 < (r - k) / (S - i) for a uniform 32-bit w; certain once r - k == S - i
        for (int64_t i = 0; i < S && k < r; i++) {
            uint32_t w[4];
            spry_philox(key, hi, lo | (uint64_t)i, w);
            if ((uint64_t)w[0] * (uint64_t)(S - i) < ((uint64_t)(r - k) << 32))
                row[k++] = (int32_t)i;
        }
    }
}

bool spry_random_ltd_routes(spry_random_ltd *ltd, int64_t step, int64_t micro, int64_t row0,
                            int64_t B, int64_t S, bool training, spry_token_route *routes,
                            spry_status *st) {
    const spry_random_ltd_params *p = &ltd->p;
    int64_t r = ltd->current, n = p->n_layer_id;
    memset(routes, 0, (size_t)ltd->n_layer * sizeof *routes);
    if (st)
        *st = SPRY_OK;
    if (!training || r >= S || n == 0 || B <= 0)
        return false;
    size_t need = (size_t)(n * B * r);
    if (need > ltd->idx_cap) {
        int32_t *idx = realloc(ltd->idx, need * sizeof *idx);
        if (!idx) {
            if (st)
                *st = spry_errorf(SPRY_ERR_NOMEM, "out of memory (random_ltd indices)");
            return false;
        }
        ltd->idx = idx, ltd->idx_cap = need;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t l     = p->random_ltd_layer_id[i];
        int32_t *kept = ltd->idx + i * B * r;
        spry_random_ltd_sample(p->seed, step, micro, l, row0, B, S, r, kept);
        routes[l] = (spry_token_route){.kept = kept, .r = r};
    }
    return true;
}

int spry_random_ltd_get_state(const spry_random_ltd *ltd, int64_t *state) {
    state[0] = ltd->current;
    state[1] = ltd->cur_step;
    state[2] = ltd->consumed;
    state[3] = ltd->p.min_value;
    state[4] = ltd->p.max_value;
    return SPRY_RANDOM_LTD_N_STATE;
}

spry_status spry_random_ltd_set_state(spry_random_ltd *ltd, const int64_t *state, int n) {
    if (n != SPRY_RANDOM_LTD_N_STATE)
        return spry_errorf(SPRY_ERR_FORMAT, "random_ltd state: %d values, expected %d", n,
                           SPRY_RANDOM_LTD_N_STATE);
    if (state[3] != ltd->p.min_value || state[4] != ltd->p.max_value)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "random_ltd state: saved min/max %lld/%lld differ from the "
                           "config's %lld/%lld",
                           (long long)state[3], (long long)state[4], (long long)ltd->p.min_value,
                           (long long)ltd->p.max_value);
    ltd->current  = state[0];
    ltd->cur_step = state[1];
    ltd->consumed = state[2];
    return SPRY_OK;
}

/* ---- the technique -------------------------------------------------------------------------- */

static void ltd_on_forward(void *st, spry_trainer *tr, spry_fwd_opts *fwd) {
    spry_random_ltd *ltd = st;
    int64_t step         = spry_trainer_step_index(tr);
    if (!fwd->training)
        return;
    spry_random_ltd_update(ltd, step);
    spry_status e = SPRY_OK;
    // effective tokens per row (notes 4.6, Megatron's integer formula): (s (L - n) + min(r, s) n) / L
    int64_t s = fwd->seq_len, r = ltd->current < s ? ltd->current : s, L = ltd->n_layer, n = ltd->p.n_layer_id;
    fwd->eff_seq_len = L > 0 ? (s * (L - n) + r * n) / L : s;
    if (spry_random_ltd_routes(ltd, step, fwd->micro, fwd->row0, fwd->batch, fwd->seq_len, true,
                               ltd->routes, &e)) {
        fwd->routes   = ltd->routes;
        fwd->n_routes = ltd->n_layer;
    } else if (e) {
        spry_trainer_ctx(tr)->status = e; // sticky: the step fails with it
    }
}

static void ltd_free(void *st) { spry_random_ltd_free(st); }
static int ltd_get_state(void *st, int64_t *state) { return spry_random_ltd_get_state(st, state); }
static spry_status ltd_set_state(void *st, const int64_t *state, int n) {
    return spry_random_ltd_set_state(st, state, n);
}

static const spry_technique_vt k_random_ltd_vt = {
    .name       = "random_ltd",
    .on_forward = ltd_on_forward,
    .free       = ltd_free,
    .get_state  = ltd_get_state,
    .set_state  = ltd_set_state,
};

spry_status spry_random_ltd_technique(const spry_random_ltd_params *p, int64_t n_layer,
                                      const spry_technique_vt **vt, void **state) {
    spry_random_ltd *ltd = NULL;
    *state               = NULL;
    SPRY_TRY(spry_random_ltd_init(p, n_layer, &ltd));
    *vt    = &k_random_ltd_vt;
    *state = ltd;
    return SPRY_OK;
}
