/*
 * ds_config.c -- DeepSpeed JSON config parsing and validation (see ds_config.h). The batch rule
 * follows DeepSpeed's DeepSpeedConfig._set_batch_related_parameters and
 * _batch_assertion; defaults follow deepspeed/runtime/constants.py.
 */
#define _DEFAULT_SOURCE
#include "spry/ds_config.h"
#include "spry/fs.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "spry/log.h"

void spry_ds_config_default(spry_ds_config *c) {
    memset(c, 0, sizeof *c);
    c->optim               = spry_optim_params_default(SPRY_OPTIM_ADAMW);
    c->optim.weight_decay  = 0.0f;
    c->sched               = spry_lr_schedule_default(SPRY_LR_CONSTANT, c->optim.lr);
    c->initial_scale_power = 16;
    c->loss_scale_window   = 1000;
    c->hysteresis          = 2;
    c->min_loss_scale      = 1.0;
    c->steps_per_print     = 10;
    c->seed                = 1234;
    c->reduce_bucket_size    = 500000000;
    c->allgather_bucket_size = 500000000;
    snprintf(c->csv_job_name, sizeof c->csv_job_name, "DeepSpeedJobName");
}

void spry_ds_config_free(spry_ds_config *c) {
    if (c->root) cJSON_Delete(c->root);
    c->root = NULL;
}

/* ---- typed getters: each reports "name: key must be ..., got <value>" ---------------------- */

typedef struct parser {
    const char *name;
    char        err[512];
} parser;

static void value_str(const cJSON *v, char *buf, size_t n) {
    char *p = cJSON_PrintUnformatted(v);
    snprintf(buf, n, "%s", p ? p : "?");
    free(p);
}

static spry_status bad(parser *P, const char *key, const char *want, const cJSON *v) {
    char val[128];
    value_str(v, val, sizeof val);
    return spry_errorf(SPRY_ERR_CONFIG, "%s: \"%s\" must be %s, got %s", P->name, key, want, val);
}

static spry_status get_i64(parser *P, const cJSON *obj, const char *key, const char *path,
                           int64_t *out, int64_t lo, bool *present) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (present) *present = v && !cJSON_IsNull(v);
    if (!v || cJSON_IsNull(v)) return SPRY_OK;
    char want[64];
    snprintf(want, sizeof want, "an integer >= %lld", (long long)lo);
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < (double)lo ||
        v->valuedouble > 9.0e15)
        return bad(P, path, want, v);
    *out = (int64_t)v->valuedouble;
    return SPRY_OK;
}

static spry_status get_f64(parser *P, const cJSON *obj, const char *key, const char *path,
                           double *out, double lo, bool *present) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (present) *present = v && !cJSON_IsNull(v);
    if (!v || cJSON_IsNull(v)) return SPRY_OK;
    char want[64];
    snprintf(want, sizeof want, "a number >= %g", lo);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo)
        return bad(P, path, want, v);
    *out = v->valuedouble;
    return SPRY_OK;
}

static spry_status get_bool(parser *P, const cJSON *obj, const char *key, const char *path,
                            bool *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return SPRY_OK;
    if (!cJSON_IsBool(v)) return bad(P, path, "true or false", v);
    *out = cJSON_IsTrue(v);
    return SPRY_OK;
}

static spry_status get_str(parser *P, const cJSON *obj, const char *key, const char *path,
                           char *out, size_t n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return SPRY_OK;
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= n) return bad(P, path, "a (short) string", v);
    snprintf(out, n, "%s", v->valuestring);
    return SPRY_OK;
}

static spry_status check_object(parser *P, const cJSON *v, const char *path) {
    if (v && !cJSON_IsObject(v)) return bad(P, path, "an object", v);
    return SPRY_OK;
}

// Warns about keys of obj not in `known` (NULL-terminated); returns how many.
static int warn_unknown(parser *P, const cJSON *obj, const char *path, const char *const *known) {
    int n = 0;
    for (const cJSON *it = obj ? obj->child : NULL; it; it = it->next) {
        bool ok = false;
        for (int i = 0; known[i] && !ok; i++) ok = !strcmp(it->string, known[i]);
        if (!ok) {
            SPRY_LOG_WARN("%s: unknown key \"%s%s%s\" ignored", P->name, path, *path ? "." : "", it->string);
            n++;
        }
    }
    return n;
}

/* ---- sections ------------------------------------------------------------------------------ */

static spry_status parse_optimizer(parser *P, const cJSON *o, spry_ds_config *c) {
    SPRY_TRY(check_object(P, o, "optimizer"));
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    if (!cJSON_IsString(type)) return bad(P, "optimizer.type", "a string (Adam, AdamW, SGD)", type ? type : o);
    const char *t = type->valuestring;
    spry_optim_type ot;
    if (!strcasecmp(t, "Adam") || !strcasecmp(t, "AdamW"))
        ot = SPRY_OPTIM_ADAMW;
    else if (!strcasecmp(t, "SGD"))
        ot = SPRY_OPTIM_SGD;
    else
        return spry_errorf(SPRY_ERR_CONFIG, "%s: \"optimizer.type\" \"%s\" is not supported (Adam, AdamW, SGD)",
                           P->name, t);
    c->optim = spry_optim_params_default(ot);
    c->optim.weight_decay = 0.0f; // DeepSpeed builds FusedAdam(**params): weight_decay 0 by default
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "params");
    SPRY_TRY(check_object(P, p, "optimizer.params"));
    double lr = c->optim.lr, eps = c->optim.eps, wd = c->optim.weight_decay, mom = 0, damp = 0;
    bool   nesterov = false, adam_w_mode = true;
    SPRY_TRY(get_f64(P, p, "lr", "optimizer.params.lr", &lr, 0, NULL));
    SPRY_TRY(get_f64(P, p, "eps", "optimizer.params.eps", &eps, 0, NULL));
    SPRY_TRY(get_f64(P, p, "weight_decay", "optimizer.params.weight_decay", &wd, 0, NULL));
    SPRY_TRY(get_f64(P, p, "momentum", "optimizer.params.momentum", &mom, 0, NULL));
    SPRY_TRY(get_f64(P, p, "dampening", "optimizer.params.dampening", &damp, 0, NULL));
    SPRY_TRY(get_bool(P, p, "nesterov", "optimizer.params.nesterov", &nesterov));
    SPRY_TRY(get_bool(P, p, "adam_w_mode", "optimizer.params.adam_w_mode", &adam_w_mode));
    const cJSON *betas = cJSON_GetObjectItemCaseSensitive(p, "betas");
    if (betas) {
        if (!cJSON_IsArray(betas) || cJSON_GetArraySize(betas) != 2 ||
            !cJSON_IsNumber(cJSON_GetArrayItem(betas, 0)) || !cJSON_IsNumber(cJSON_GetArrayItem(betas, 1)) ||
            cJSON_GetArrayItem(betas, 0)->valuedouble < 0 || cJSON_GetArrayItem(betas, 0)->valuedouble >= 1 ||
            cJSON_GetArrayItem(betas, 1)->valuedouble < 0 || cJSON_GetArrayItem(betas, 1)->valuedouble >= 1)
            return bad(P, "optimizer.params.betas", "two numbers in [0, 1)", betas);
        c->optim.beta1 = (float)cJSON_GetArrayItem(betas, 0)->valuedouble;
        c->optim.beta2 = (float)cJSON_GetArrayItem(betas, 1)->valuedouble;
    }
    if (ot == SPRY_OPTIM_ADAMW && !adam_w_mode) ot = SPRY_OPTIM_ADAM;
    c->optim.type = ot;
    c->optim.lr = (float)lr, c->optim.eps = (float)eps, c->optim.weight_decay = (float)wd;
    c->optim.momentum = (float)mom, c->optim.dampening = (float)damp, c->optim.nesterov = nesterov;
    static const char *const known_p[] = {"lr", "betas", "eps", "weight_decay", "adam_w_mode", "momentum",
                                          "dampening", "nesterov", "torch_adam", "bias_correction", NULL};
    static const char *const known_o[] = {"type", "params", NULL};
    c->n_warnings += warn_unknown(P, p, "optimizer.params", known_p) + warn_unknown(P, o, "optimizer", known_o);
    return SPRY_OK;
}

static spry_status parse_scheduler(parser *P, const cJSON *s, spry_ds_config *c) {
    SPRY_TRY(check_object(P, s, "scheduler"));
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    spry_lr_kind kind;
    if (!cJSON_IsString(type) || !spry_lr_kind_from_name(type->valuestring, &kind))
        return bad(P, "scheduler.type", "one of WarmupLR, WarmupDecayLR, WarmupCosineLR", type ? type : s);
    c->sched = spry_lr_schedule_default(kind, c->optim.lr);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(s, "params");
    SPRY_TRY(check_object(P, p, "scheduler.params"));
    bool has_total = false;
    SPRY_TRY(get_f64(P, p, "warmup_min_lr", "scheduler.params.warmup_min_lr", &c->sched.warmup_min_lr, 0, NULL));
    SPRY_TRY(get_f64(P, p, "warmup_max_lr", "scheduler.params.warmup_max_lr", &c->sched.warmup_max_lr, 0, NULL));
    SPRY_TRY(get_i64(P, p, "warmup_num_steps", "scheduler.params.warmup_num_steps", &c->sched.warmup_num_steps, 1, NULL));
    SPRY_TRY(get_i64(P, p, "total_num_steps", "scheduler.params.total_num_steps", &c->sched.total_num_steps, 1, &has_total));
    SPRY_TRY(get_f64(P, p, "warmup_min_ratio", "scheduler.params.warmup_min_ratio", &c->sched.warmup_min_ratio, 0, NULL));
    SPRY_TRY(get_f64(P, p, "cos_min_ratio", "scheduler.params.cos_min_ratio", &c->sched.cos_min_ratio, 0, NULL));
    char wt[16] = "log";
    SPRY_TRY(get_str(P, p, "warmup_type", "scheduler.params.warmup_type", wt, sizeof wt));
    if (strcmp(wt, "log") && strcmp(wt, "linear"))
        return spry_errorf(SPRY_ERR_CONFIG, "%s: \"scheduler.params.warmup_type\" must be \"log\" or \"linear\", got \"%s\"",
                           P->name, wt);
    c->sched.warmup_linear = !strcmp(wt, "linear");
    // spry's extension: progress in (effective) tokens, as Megatron's --lr-warmup-tokens /
    // --lr-decay-tokens (schedule.h); either key turns it on, and then both are required
    bool has_wt = false, has_tt = false;
    SPRY_TRY(get_f64(P, p, "warmup_num_tokens", "scheduler.params.warmup_num_tokens", &c->sched.warmup_num_tokens, 1, &has_wt));
    SPRY_TRY(get_f64(P, p, "total_num_tokens", "scheduler.params.total_num_tokens", &c->sched.total_num_tokens, 1, &has_tt));
    if (has_wt || has_tt) {
        if (!has_wt || (!has_tt && kind != SPRY_LR_WARMUP))
            return spry_errorf(SPRY_ERR_CONFIG, "%s: \"scheduler.params.%s\" is required with \"%s\" (token-based %s)",
                               P->name, has_wt ? "total_num_tokens" : "warmup_num_tokens",
                               has_wt ? "warmup_num_tokens" : "total_num_tokens", type->valuestring);
        if (has_tt && kind != SPRY_LR_WARMUP && c->sched.total_num_tokens <= c->sched.warmup_num_tokens)
            return spry_errorf(SPRY_ERR_CONFIG, "%s: \"scheduler.params.total_num_tokens\" (%.17g) must exceed "
                               "warmup_num_tokens (%.17g)", P->name, c->sched.total_num_tokens, c->sched.warmup_num_tokens);
        c->sched.by_tokens = true;
        has_total          = true;
    }
    if ((kind == SPRY_LR_WARMUP_DECAY || kind == SPRY_LR_WARMUP_COSINE) && !has_total)
        return spry_errorf(SPRY_ERR_CONFIG, "%s: \"scheduler.params.total_num_steps\" is required by %s",
                           P->name, type->valuestring);
    static const char *const known_p[] = {"warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "total_num_steps",
                                          "warmup_min_ratio", "cos_min_ratio", "warmup_type", "last_batch_iteration",
                                          "warmup_num_tokens", "total_num_tokens", NULL};
    static const char *const known_s[] = {"type", "params", NULL};
    c->n_warnings += warn_unknown(P, p, "scheduler.params", known_p) + warn_unknown(P, s, "scheduler", known_s);
    return SPRY_OK;
}

static spry_status parse_batch(parser *P, const cJSON *j, int world, spry_ds_config *c) {
    int64_t tb = 0, mb = 0, ga = 0;
    bool    htb, hmb, hga;
    SPRY_TRY(get_i64(P, j, "train_batch_size", "train_batch_size", &tb, 1, &htb));
    SPRY_TRY(get_i64(P, j, "train_micro_batch_size_per_gpu", "train_micro_batch_size_per_gpu", &mb, 1, &hmb));
    SPRY_TRY(get_i64(P, j, "gradient_accumulation_steps", "gradient_accumulation_steps", &ga, 1, &hga));
    if (htb && hmb && hga) {
    } else if (htb && hmb) {
        ga = tb / mb / world;
    } else if (htb && hga) {
        mb = tb / world / ga;
    } else if (hmb && hga) {
        tb = mb * ga * world;
    } else if (htb) {
        ga = 1, mb = tb / world;
    } else if (hmb) {
        ga = 1, tb = mb * world;
    } else {
        return spry_errorf(SPRY_ERR_CONFIG, "%s: either \"train_batch_size\" or \"train_micro_batch_size_per_gpu\" "
                                            "needs to be provided", P->name);
    }
    if (mb <= 0 || ga <= 0 || tb != mb * ga * world)
        return spry_errorf(SPRY_ERR_CONFIG,
                           "%s: batch sizes are inconsistent: train_batch_size %lld != "
                           "train_micro_batch_size_per_gpu %lld * gradient_accumulation_steps %lld * "
                           "world size %d", P->name, (long long)tb, (long long)mb, (long long)ga, world);
    c->train_batch_size = tb, c->micro_batch = mb, c->grad_accum = ga;
    return SPRY_OK;
}

static spry_status parse_precision(parser *P, const cJSON *j, spry_ds_config *c) {
    const cJSON *bf = cJSON_GetObjectItemCaseSensitive(j, "bf16");
    if (!bf) bf = cJSON_GetObjectItemCaseSensitive(j, "bfloat16");
    SPRY_TRY(check_object(P, bf, "bf16"));
    SPRY_TRY(get_bool(P, bf, "enabled", "bf16.enabled", &c->bf16));
    const cJSON *fp = cJSON_GetObjectItemCaseSensitive(j, "fp16");
    SPRY_TRY(check_object(P, fp, "fp16"));
    SPRY_TRY(get_bool(P, fp, "enabled", "fp16.enabled", &c->fp16));
    int64_t isp = c->initial_scale_power, hy = c->hysteresis;
    SPRY_TRY(get_f64(P, fp, "loss_scale", "fp16.loss_scale", &c->loss_scale, 0, NULL));
    SPRY_TRY(get_i64(P, fp, "initial_scale_power", "fp16.initial_scale_power", &isp, 0, NULL));
    SPRY_TRY(get_i64(P, fp, "loss_scale_window", "fp16.loss_scale_window", &c->loss_scale_window, 1, NULL));
    SPRY_TRY(get_i64(P, fp, "hysteresis", "fp16.hysteresis", &hy, 1, NULL));
    SPRY_TRY(get_bool(P, fp, "consecutive_hysteresis", "fp16.consecutive_hysteresis", &c->consecutive_hysteresis));
    SPRY_TRY(get_f64(P, fp, "min_loss_scale", "fp16.min_loss_scale", &c->min_loss_scale, 0, NULL));
    if (isp > 64) return spry_errorf(SPRY_ERR_CONFIG, "%s: \"fp16.initial_scale_power\" must be <= 64, got %lld", P->name, (long long)isp);
    c->initial_scale_power = (int)isp, c->hysteresis = (int)(hy > 1000 ? 1000 : hy);
    if (c->bf16 && c->fp16)
        return spry_errorf(SPRY_ERR_CONFIG, "%s: \"bf16.enabled\" and \"fp16.enabled\" cannot both be true", P->name);
    static const char *const known_bf[] = {"enabled", "immediate_grad_update", "check_grad_overflow", NULL};
    static const char *const known_fp[] = {"enabled", "loss_scale", "initial_scale_power", "loss_scale_window",
                                           "hysteresis", "consecutive_hysteresis", "min_loss_scale", "auto_cast", "fp16_master_weights_and_grads", NULL};
    c->n_warnings += warn_unknown(P, bf, "bf16", known_bf) + warn_unknown(P, fp, "fp16", known_fp);
    return SPRY_OK;
}

// zero_optimization: stage, buckets, overlap (DeepSpeed's keys and defaults); offload and stage-3
// tuning keys are accepted with a warning.
static spry_status parse_zero(parser *P, const cJSON *z, spry_ds_config *c) {
    SPRY_TRY(check_object(P, z, "zero_optimization"));
    int64_t stage = 0;
    SPRY_TRY(get_i64(P, z, "stage", "zero_optimization.stage", &stage, 0, NULL));
    if (stage > 2)
        return spry_errorf(SPRY_ERR_CONFIG, "%s: \"zero_optimization.stage\" %lld is not supported (0, 1 or 2)",
                           P->name, (long long)stage);
    c->zero_stage = (int)stage;
    double rb = (double)c->reduce_bucket_size, ab = (double)c->allgather_bucket_size;
    SPRY_TRY(get_f64(P, z, "reduce_bucket_size", "zero_optimization.reduce_bucket_size", &rb, 1, NULL));
    SPRY_TRY(get_f64(P, z, "allgather_bucket_size", "zero_optimization.allgather_bucket_size", &ab, 1, NULL));
    c->reduce_bucket_size = (int64_t)rb, c->allgather_bucket_size = (int64_t)ab;
    SPRY_TRY(get_bool(P, z, "overlap_comm", "zero_optimization.overlap_comm", &c->overlap_comm));
    bool rs = true, cg = true, ap = true;
    SPRY_TRY(get_bool(P, z, "reduce_scatter", "zero_optimization.reduce_scatter", &rs));
    SPRY_TRY(get_bool(P, z, "contiguous_gradients", "zero_optimization.contiguous_gradients", &cg));
    SPRY_TRY(get_bool(P, z, "allgather_partitions", "zero_optimization.allgather_partitions", &ap));
    if (!rs || !ap) {
        SPRY_LOG_WARN("%s: \"zero_optimization.%s\": false is ignored; spry always %s", P->name,
                      !rs ? "reduce_scatter" : "allgather_partitions",
                      !rs ? "reduce-scatters gradients under stage 2" : "all-gathers the partitions");
        c->n_warnings++;
    }
    static const char *const known[] = {"stage", "reduce_bucket_size", "allgather_bucket_size", "overlap_comm",
                                        "reduce_scatter", "contiguous_gradients", "allgather_partitions",
                                        "load_from_fp32_weights", "elastic_checkpoint", "round_robin_gradients", NULL};
    static const char *const ignored[] = {"offload_optimizer", "offload_param", "cpu_offload", "sub_group_size",
                                          "stage3_max_live_parameters", "stage3_max_reuse_distance",
                                          "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold",
                                          "stage3_gather_16bit_weights_on_model_save", "ignore_unused_parameters", NULL};
    for (const cJSON *it = z ? z->child : NULL; it; it = it->next) {
        bool k = false, ig = false;
        for (int i = 0; known[i] && !k; i++) k = !strcmp(it->string, known[i]);
        for (int i = 0; ignored[i] && !ig; i++) ig = !strcmp(it->string, ignored[i]);
        if (k) continue;
        SPRY_LOG_WARN(ig ? "%s: \"zero_optimization.%s\" is not supported yet; ignored"
                         : "%s: unknown key \"zero_optimization.%s\" ignored", P->name, it->string);
        c->n_warnings++;
    }
    return SPRY_OK;
}

spry_status spry_ds_config_parse(const char *text, const char *name, int world_size,
                                 spry_ds_config *c) {
    parser P = {.name = name ? name : "config"};
    spry_ds_config_default(c);
    cJSON *j = cJSON_Parse(text);
    if (!j || !cJSON_IsObject(j)) {
        const char *at = cJSON_GetErrorPtr();
        char        near[32] = "";
        if (at) snprintf(near, sizeof near, "%.20s", at);
        cJSON_Delete(j);
        return spry_errorf(SPRY_ERR_FORMAT, "%s: not a JSON object%s%s%s", P.name, at ? " (error near \"" : "",
                           near, at ? "\")" : "");
    }
    c->root        = j;
    spry_status st = parse_batch(&P, j, world_size > 0 ? world_size : 1, c);
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(j, "optimizer");
    if (!st && o) st = parse_optimizer(&P, o, c);
    c->sched = spry_lr_schedule_default(SPRY_LR_CONSTANT, c->optim.lr);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "scheduler");
    if (!st && s) st = parse_scheduler(&P, s, c);
    if (!st) st = get_f64(&P, j, "gradient_clipping", "gradient_clipping", &c->gradient_clipping, 0, NULL);
    if (!st) st = parse_precision(&P, j, c);
    if (!st) st = get_i64(&P, j, "steps_per_print", "steps_per_print", &c->steps_per_print, 1, NULL);
    int64_t seed = (int64_t)c->seed;
    if (!st) st = get_i64(&P, j, "seed", "seed", &seed, 0, NULL);
    c->seed = (uint64_t)seed;
    const cJSON *csv = cJSON_GetObjectItemCaseSensitive(j, "csv_monitor");
    if (!st) st = check_object(&P, csv, "csv_monitor");
    if (!st) st = get_bool(&P, csv, "enabled", "csv_monitor.enabled", &c->csv_enabled);
    if (!st) st = get_str(&P, csv, "output_path", "csv_monitor.output_path", c->csv_output_path, sizeof c->csv_output_path);
    if (!st) st = get_str(&P, csv, "job_name", "csv_monitor.job_name", c->csv_job_name, sizeof c->csv_job_name);
    const cJSON *z = cJSON_GetObjectItemCaseSensitive(j, "zero_optimization");
    if (!st && z) st = parse_zero(&P, z, c);
    if (st) {
        spry_ds_config_free(c);
        return st;
    }
    static const char *const known_csv[] = {"enabled", "output_path", "job_name", NULL};
    c->n_warnings += warn_unknown(&P, csv, "csv_monitor", known_csv);
    // DeepSpeed features spry accepts in a config but does not act on here
    static const char *const ignored[] = {"wall_clock_breakdown", "tensorboard", "wandb",
                                          "comms_logger", "activation_checkpointing", "flops_profiler",
                                          "dataloader_drop_last", "prescale_gradients", "gradient_predivide_factor",
                                          "sparse_gradients", "zero_allow_untested_optimizer", "communication_data_type",
                                          "amp", "memory_breakdown", NULL};
    // sections read by the technique registry (later) or by the trainer above
    static const char *const known[] = {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                                        "optimizer", "scheduler", "gradient_clipping", "bf16", "bfloat16", "fp16",
                                        "steps_per_print", "seed", "csv_monitor", "data_efficiency",
                                        "curriculum_learning", "zero_optimization", NULL};
    for (const cJSON *it = j->child; it; it = it->next) {
        bool is_known = false, is_ignored = false;
        for (int i = 0; known[i] && !is_known; i++) is_known = !strcmp(it->string, known[i]);
        for (int i = 0; ignored[i] && !is_ignored; i++) is_ignored = !strcmp(it->string, ignored[i]);
        if (is_ignored) {
            SPRY_LOG_WARN("%s: \"%s\" is a DeepSpeed key spry does not act on yet; ignored", P.name, it->string);
            c->n_warnings++;
        } else if (!is_known) {
            SPRY_LOG_WARN("%s: unknown key \"%s\" ignored", P.name, it->string);
            c->n_warnings++;
        }
    }
    return SPRY_OK;
}

spry_status spry_ds_config_load(const char *path, int world_size, spry_ds_config *c) {
    char       *buf = NULL;
    spry_status st  = spry_read_file(path, (size_t)16 << 20, &buf, NULL);
    if (st == SPRY_ERR_NOT_FOUND) st = SPRY_ERR_IO;
    if (st) return st;
    st = spry_ds_config_parse(buf, path, world_size, c);
    free(buf);
    return st;
}
