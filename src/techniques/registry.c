/*
 * registry.c -- the one table of training techniques (see techniques.h): DeepSpeed Data
 * Efficiency's curriculum learning (a batch source + an on_batch hook) and random-LTD (hooks of
 * random_ltd.c), built from the config's data_efficiency tree (curriculum.h parses it).
 *
 * On an encoder (BERT, right-padded rows) the curriculum's post-processing is Megatron's BERT
 * one (notes 2.3): with seqlen_truncate the rows keep s real tokens, else the batch is trimmed to
 * its longest real length rounded up to 8 -- the longest over the global batch, which every rank
 * reads, so all ranks agree as DeepSpeed's MAX all-reduce makes them.
 */
#include "spry/techniques.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spry/curriculum.h"
#include "spry/random_ltd.h"

// The curriculum's batch source and hook state.
typedef struct cl_state {
    spry_cl_sampler       *s;
    spry_cl_sampler_params sp;
    const spry_data_efficiency_config *de; // owned by spry_techniques
    spry_loader           *loader;
    int64_t                chunks;    // chunks drawn (the source's checkpoint state)
    int64_t                diff[SPRY_CL_MAX_METRICS]; // difficulties of the last chunk
    int                    truncate;  // metric index of seqlen_truncate, -1 none
    int                    reshape;   // metric index of seqlen_reshape, -1 none
    int32_t               *reshaped;  // (capacity) rows of a seqlen_reshape batch
    int64_t                cap;
    int64_t               *ids;       // (micro x world)
    int64_t                pad;       // encoder: the padding id, else -1
    int64_t                trim;      // encoder: the global batch's trimmed length (tokens)
} cl_state;

struct spry_techniques {
    spry_data_efficiency_config de;
    cl_state                   *cl;  // NULL: curriculum off
    bool                        ltd; // random-LTD on
    int64_t                     n_layer;
    char                        summary[256];
};

/* ---- curriculum learning ------------------------------------------------------------------ */

static spry_status cl_next(void *self, int32_t *tokens, int64_t B, int64_t T1) {
    cl_state *c = self;
    int64_t   n = 0;
    SPRY_TRY(spry_cl_sampler_next_chunk(c->s, c->ids, &n, c->diff, NULL));
    if (n < B)
        return spry_errorf(SPRY_ERR_ARG, "curriculum: the sampler ran out after %lld samples "
                           "(data_efficiency.data_sampling.num_epochs)", (long long)spry_cl_sampler_consumed(c->s));
    for (int64_t i = 0; i < B; i++) SPRY_TRY(spry_loader_sample(c->loader, c->ids[i], tokens + i * T1));
    // column T1 - 1 is always padding, so the longest real row is <= T1 - 1
    if (c->pad >= 0) c->trim = spry_cl_pad_trim_len(tokens, B, T1, (int32_t)c->pad);
    if (c->trim > T1 - 1) c->trim = T1 - 1;
    c->chunks++;
    return SPRY_OK;
}

static int cl_get_state(void *self, int64_t state[8]) {
    state[0] = ((cl_state *)self)->chunks;
    return 1;
}

// Restores by replaying the draws from a fresh sampler: the sampler is deterministic in its seed,
// so the batches that follow equal those of the uninterrupted run.
static spry_status cl_set_state(void *self, const int64_t *state, int n) {
    cl_state *c = self;
    if (n < 1 || state[0] < 0) return spry_errorf(SPRY_ERR_FORMAT, "curriculum: checkpoint data_state is missing");
    spry_cl_sampler *s = NULL;
    SPRY_TRY(spry_cl_sampler_init(c->de, &c->sp, &s));
    spry_status st = SPRY_OK;
    for (int64_t k = 0; k < state[0] && !st; k++) {
        int64_t got = 0;
        st          = spry_cl_sampler_next_chunk(s, c->ids, &got, c->diff, NULL);
    }
    if (st) {
        spry_cl_sampler_free(s);
        return st;
    }
    spry_cl_sampler_free(c->s);
    c->s = s, c->chunks = state[0];
    return SPRY_OK;
}

// Applies the seqlen difficulty to this rank's rows (Megatron's post-process callback).
static void cl_on_batch(void *st, spry_trainer *tr, spry_batch *b) {
    (void)tr;
    cl_state *c = st;
    b->difficulty = (double)c->diff[0];
    spry_tensor *t = b->tokens;
    int64_t      B = t->shape[0], T1 = t->shape[1];
    if (c->pad >= 0) { // encoder: keep s tokens of every row, then one column of padding
        int64_t s = c->truncate >= 0 ? c->diff[c->truncate] : c->trim;
        s         = s < 1 ? 1 : s > T1 - 1 ? T1 - 1 : s;
        int32_t *d = t->data;
        for (int64_t r = 0; r < B; r++) {
            memmove(d + r * (s + 1), d + r * T1, sizeof(int32_t) * (size_t)s);
            d[r * (s + 1) + s] = (int32_t)c->pad;
        }
        spry_tensor_set_shape(t, SPRY_DTYPE_I32, 2, (int64_t[]){B, s + 1});
    } else if (c->truncate >= 0) {
        int64_t T1n = spry_cl_seqlen_truncate(t->data, B, T1, c->diff[c->truncate], t->data);
        spry_tensor_set_shape(t, SPRY_DTYPE_I32, 2, (int64_t[]){B, T1n});
    } else if (c->reshape >= 0) {
        int64_t T1n = T1, rows = spry_cl_seqlen_reshape(t->data, B, T1, c->diff[c->reshape], c->reshaped, &T1n);
        spry_tensor_set_shape(t, SPRY_DTYPE_I32, 2, (int64_t[]){rows, T1n});
        t->data = c->reshaped;
    }
}

static void cl_free(void *st) { (void)st; } // owned by spry_techniques

static const spry_technique_vt k_cl_vt = {.name = "curriculum", .on_batch = cl_on_batch, .free = cl_free};

static spry_status cl_init(spry_techniques *t, const spry_ds_config *cfg, const spry_techniques_env *env) {
    cl_state *c = calloc(1, sizeof *c);
    if (!c) return spry_errorf(SPRY_ERR_NOMEM, "curriculum: out of memory");
    t->cl = c, c->de = &t->de, c->loader = env->loader, c->truncate = c->reshape = -1;
    c->sp             = spry_cl_sampler_params_default();
    c->sp.n_samples   = spry_loader_n_samples(env->loader);
    c->sp.micro_batch = cfg->micro_batch, c->sp.dp_size = env->world, c->sp.dp_rank = env->rank;
    c->sp.grad_accum  = cfg->grad_accum;
    for (int i = 0; i < t->de.n_metrics; i++) {
        if (!strcmp(t->de.metrics[i].name, "seqlen_truncate")) c->truncate = i;
        if (!strcmp(t->de.metrics[i].name, "seqlen_reshape")) c->reshape = i;
    }
    if (c->truncate >= 0 && c->reshape >= 0)
        return spry_errorf(SPRY_ERR_CONFIG, "%s: curriculum_metrics: seqlen_truncate and seqlen_reshape exclude each "
                           "other", env->name);
    if (env->encoder && c->reshape >= 0)
        return spry_errorf(SPRY_ERR_CONFIG, "%s: curriculum_metrics.seqlen_reshape is GPT's (packed rows); an encoder "
                           "uses seqlen_truncate or the padding trim", env->name);
    c->pad = env->encoder ? env->pad_id : -1;
    c->ids = malloc(sizeof(int64_t) * (size_t)(cfg->micro_batch * env->world));
    if (c->reshape >= 0) {
        int64_t lo  = t->de.metrics[c->reshape].schedule.min_difficulty;
        c->cap      = spry_cl_seqlen_reshape_capacity(cfg->micro_batch, env->seq_len + 1, lo < 1 ? 1 : lo);
        c->reshaped = malloc(sizeof(int32_t) * (size_t)(c->cap > 0 ? c->cap : 1));
    }
    if (!c->ids || (c->reshape >= 0 && !c->reshaped)) return spry_errorf(SPRY_ERR_NOMEM, "curriculum: out of memory");
    return spry_cl_sampler_init(&t->de, &c->sp, &c->s);
}

/* ---- the table ------------------------------------------------------------------------------ */

spry_status spry_techniques_init(const spry_ds_config *cfg, const spry_techniques_env *env, spry_techniques **out) {
    *out               = NULL;
    spry_techniques *t = calloc(1, sizeof *t);
    if (!t) return spry_errorf(SPRY_ERR_NOMEM, "techniques: out of memory");
    t->n_layer     = env->n_layer;
    spry_status st = spry_data_efficiency_from_ds_config(cfg, env->name, &t->de);
    if (!st && t->de.cl_enabled) st = cl_init(t, cfg, env);
    if (!st && t->de.random_ltd.enabled) {
        t->de.random_ltd.seed = cfg->seed;
        st                    = spry_random_ltd_params_validate(&t->de.random_ltd, env->n_layer);
        const char *mt        = t->de.random_ltd.model_type ? t->de.random_ltd.model_type : "decoder";
        if (!st && !strcmp(mt, "encoder") != env->encoder)
            st = spry_errorf(SPRY_ERR_CONFIG,
                             "%s: data_efficiency.data_routing.random_ltd.model_type \"%s\" but the model is %s. "
                             "HINT: \"encoder\" for BERT, \"decoder\" for GPT-2 and BLOOM",
                             env->name, mt, env->encoder ? "an encoder (BERT)" : "a decoder");
        t->ltd                = !st;
    }
    if (st) {
        spry_techniques_free(t);
        return st;
    }
    int n = 0;
    if (t->cl) {
        n += snprintf(t->summary + n, sizeof t->summary - (size_t)n, "curriculum (");
        for (int i = 0; i < t->de.n_metrics && n < (int)sizeof t->summary; i++)
            n += snprintf(t->summary + n, sizeof t->summary - (size_t)n, "%s%s", i ? ", " : "", t->de.metrics[i].name);
        if (n < (int)sizeof t->summary) n += snprintf(t->summary + n, sizeof t->summary - (size_t)n, ")");
    }
    if (t->ltd && n < (int)sizeof t->summary)
        n += snprintf(t->summary + n, sizeof t->summary - (size_t)n, "%srandom-LTD (%lld of %lld layers, %lld -> %lld tokens)",
                      n ? ", " : "", (long long)t->de.random_ltd.n_layer_id, (long long)env->n_layer,
                      (long long)t->de.random_ltd.min_value, (long long)t->de.random_ltd.max_value);
    if (!n) snprintf(t->summary, sizeof t->summary, "none");
    *out = t;
    return SPRY_OK;
}

spry_batch_source spry_techniques_source(spry_techniques *t, spry_batch_source dflt) {
    if (!t || !t->cl) return dflt;
    return (spry_batch_source){.self = t->cl, .next = cl_next, .get_state = cl_get_state, .set_state = cl_set_state};
}

spry_status spry_techniques_attach(spry_techniques *t, spry_trainer *tr) {
    if (t->cl) SPRY_TRY(spry_trainer_add_technique(tr, &k_cl_vt, t->cl));
    if (t->ltd) {
        const spry_technique_vt *vt = NULL;
        void                    *st = NULL;
        SPRY_TRY(spry_random_ltd_technique(&t->de.random_ltd, t->n_layer, &vt, &st));
        spry_status rc = spry_trainer_add_technique(tr, vt, st);
        if (rc) {
            vt->free(st);
            return rc;
        }
    }
    return SPRY_OK;
}

void spry_techniques_adjust_schedule(const spry_techniques *t, spry_lr_schedule *s) {
    if (!t || !t->ltd || !t->de.random_ltd.layer_token_lr_enabled || t->n_layer < 1) return;
    const spry_random_ltd_params *p = &t->de.random_ltd;
    if (s->kind == SPRY_LR_CONSTANT || s->kind == SPRY_LR_WARMUP) {
        double lr = s->kind == SPRY_LR_CONSTANT ? s->base_lr : s->warmup_max_lr, lo = s->warmup_min_lr;
        *s               = spry_lr_schedule_default(SPRY_LR_WARMUP_DECAY, lr);
        s->warmup_min_lr = lo;
    }
    s->by_tokens         = true;
    s->warmup_linear     = p->layer_token_warmup_linear;
    s->warmup_num_tokens = (double)p->warmup_layer_tokens / (double)t->n_layer;
    s->total_num_tokens  = (double)p->total_layer_tokens / (double)t->n_layer;
}

const char *spry_techniques_summary(const spry_techniques *t) { return t ? t->summary : "none"; }

void spry_techniques_free(spry_techniques *t) {
    if (!t) return;
    if (t->cl) {
        spry_cl_sampler_free(t->cl->s);
        free(t->cl->ids), free(t->cl->reshaped), free(t->cl);
    }
    free(t);
}
