/*
 * curriculum.c -- the data_efficiency config tree and the curriculum scheduler (curriculum.h).
 * Mirrors DeepSpeed's runtime/data_pipeline/config.py, constants.py and curriculum_scheduler.py
 * (notes/data_efficiency.md 1 and 2.1-2.2). Decisions: the child switches decide (as in
 * DeepSpeed) and a parent switched off is warned about; unknown difficulty/clustering/schedule
 * strings are errors (DeepSpeed treats unknown clustering types as schedule_based); the legacy
 * top-level curriculum_learning block becomes a "seqlen_truncate" single_cluster value metric.
 */
#include "spry/curriculum.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "spry/log.h"

// ---------------------------------------------------------------------------------------------
// Scheduler.

int64_t spry_cl_schedule_value(const spry_cl_schedule *s, int64_t t) {
    int64_t m = s->min_difficulty, M = s->max_difficulty, d;
    switch (s->type) {
    case SPRY_CL_SCHEDULE_FIXED_DISCRETE: {
        int last = s->n_levels - 1;
        if (last <= 0 || t > s->max_step[last - 1]) return s->difficulty[last > 0 ? last : 0];
        for (int i = 0; i < last; i++)
            if (t <= s->max_step[i]) return s->difficulty[i];
        return s->difficulty[last];
    }
    case SPRY_CL_SCHEDULE_CUSTOM:
        return s->custom ? s->custom(s->custom_user, t) : m;
    case SPRY_CL_SCHEDULE_FIXED_LINEAR:
    case SPRY_CL_SCHEDULE_FIXED_ROOT:
    default: {
        double k = s->type == SPRY_CL_SCHEDULE_FIXED_ROOT ? (double)s->root_degree : 1.0;
        double f = floor(pow((double)t / (double)s->total_curriculum_step, 1.0 / k) *
                             (double)(M - m) + (double)m);
        if (f != f) f = (double)m; // NaN (only from an invalid schedule)
        if (f > 9.0e18) f = 9.0e18;
        if (f < -9.0e18) f = -9.0e18;
        int64_t fi = (int64_t)f, q = s->difficulty_step > 0 ? s->difficulty_step : 1;
        int64_t r  = fi % q;
        if (r < 0) r += q; // Python's %
        d = fi - r;
        if (d > M) d = M;
        if (s->clamp_min && d < m) d = m;
        return d;
    }
    }
}

void spry_cl_scheduler_init(spry_cl_scheduler *sc, const spry_cl_schedule *s) {
    sc->s       = *s;
    sc->current = s->min_difficulty;
}

int64_t spry_cl_scheduler_update(spry_cl_scheduler *sc, int64_t t) {
    if (sc->current < sc->s.max_difficulty) sc->current = spry_cl_schedule_value(&sc->s, t);
    return sc->current;
}

// ---------------------------------------------------------------------------------------------
// JSON helpers. `path` is the dotted key path of the object; messages read "name: path.key: ...".

static spry_status get_bool(const cJSON *o, const char *name, const char *path, const char *key,
                            bool def, bool *out) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    *out           = def;
    if (!v || cJSON_IsNull(v)) return SPRY_OK;
    if (!cJSON_IsBool(v)) {
        char *txt = cJSON_PrintUnformatted(v);
        spry_status st = spry_errorf(SPRY_ERR_CONFIG, "%s: %s.%s: expected true or false (%s)",
                                     name, path, key, txt ? txt : "?");
        cJSON_free(txt);
        return st;
    }
    *out = cJSON_IsTrue(v);
    return SPRY_OK;
}

static spry_status int_of(const cJSON *v, const char *name, const char *path, const char *key,
                          int64_t *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        fabs(v->valuedouble) > 9.0e15) {
        char *txt = cJSON_PrintUnformatted(v);
        spry_status st = spry_errorf(SPRY_ERR_CONFIG, "%s: %s.%s: expected an integer (%s)", name,
                                     path, key, txt ? txt : "?");
        cJSON_free(txt);
        return st;
    }
    *out = (int64_t)v->valuedouble;
    return SPRY_OK;
}

// required: a missing key is an error; else *out = def.
static spry_status get_int(const cJSON *o, const char *name, const char *path, const char *key,
                           bool required, int64_t def, int64_t *out) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    *out           = def;
    if (!v || cJSON_IsNull(v)) {
        if (required)
            return spry_errorf(SPRY_ERR_CONFIG, "%s: %s.%s: missing (required)", name, path, key);
        return SPRY_OK;
    }
    return int_of(v, name, path, key, out);
}

// Copies a string value into out (cap bytes); NULL / absent gives "" (or an error if required).
static spry_status get_str(const cJSON *o, const char *name, const char *path, const char *key,
                           bool required, char *out, size_t cap) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    out[0]         = '\0';
    if (!v || cJSON_IsNull(v)) {
        if (required)
            return spry_errorf(SPRY_ERR_CONFIG, "%s: %s.%s: missing (required)", name, path, key);
        return SPRY_OK;
    }
    if (!cJSON_IsString(v)) {
        char *txt = cJSON_PrintUnformatted(v);
        spry_status st = spry_errorf(SPRY_ERR_CONFIG, "%s: %s.%s: expected a string (%s)", name,
                                     path, key, txt ? txt : "?");
        cJSON_free(txt);
        return st;
    }
    if (strlen(v->valuestring) >= cap)
        return spry_errorf(SPRY_ERR_CONFIG, "%s: %s.%s: longer than %zu bytes (\"%.40s...\")",
                           name, path, key, cap - 1, v->valuestring);
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    return SPRY_OK;
}

static spry_status get_obj(const cJSON *o, const char *name, const char *path, const char *key,
                           const cJSON **out) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    *out           = NULL;
    if (!v || cJSON_IsNull(v)) return SPRY_OK;
    if (!cJSON_IsObject(v))
        return spry_errorf(SPRY_ERR_CONFIG, "%s: %s.%s: expected an object", name, path, key);
    *out = v;
    return SPRY_OK;
}

static spry_status get_int_list(const cJSON *o, const char *name, const char *path,
                                const char *key, int64_t *out, int cap, int *n) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    *n             = 0;
    if (!v || cJSON_IsNull(v))
        return spry_errorf(SPRY_ERR_CONFIG, "%s: %s.%s: missing (required)", name, path, key);
    if (!cJSON_IsArray(v))
        return spry_errorf(SPRY_ERR_CONFIG, "%s: %s.%s: expected a list of integers", name, path,
                           key);
    int len = cJSON_GetArraySize(v);
    if (len > cap)
        return spry_errorf(SPRY_ERR_CONFIG, "%s: %s.%s: %d entries (at most %d)", name, path, key,
                           len, cap);
    int           i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        char k[96];
        snprintf(k, sizeof k, "%s[%d]", key, i);
        SPRY_TRY(int_of(e, name, path, k, &out[i]));
        i++;
    }
    *n = i;
    return SPRY_OK;
}

static void warn(spry_data_efficiency_config *cfg, const char *fmt, const char *name,
                 const char *a, const char *b) {
    char msg[2048];
    snprintf(msg, sizeof msg, fmt, name, a, b);
    SPRY_LOG_WARN("%s", msg);
    cfg->n_warnings++;
}

// A child feature switched on under a parent whose "enabled" is false (DeepSpeed ignores it).
static void warn_parent(spry_data_efficiency_config *cfg, const char *name, const char *child, const char *parent,
                        const char *feature) {
    SPRY_LOG_WARN("%s: %s is true but %s.enabled is false (DeepSpeed ignores the parent switch; %s is on)", name,
                  child, parent, feature);
    cfg->n_warnings++;
}

// ---------------------------------------------------------------------------------------------
// Schedules and metrics.

// min/max_difficulty, schedule_type, schedule_config of o (path names o).
static spry_status parse_schedule(const cJSON *o, const char *name, const char *path,
                                  spry_cl_schedule *s) {
    char type[32], cpath[SPRY_CL_PATH_MAX + 32];
    memset(s, 0, sizeof *s);
    s->clamp_min = true;
    SPRY_TRY(get_int(o, name, path, "min_difficulty", true, 0, &s->min_difficulty));
    SPRY_TRY(get_int(o, name, path, "max_difficulty", true, 0, &s->max_difficulty));
    if (s->min_difficulty > s->max_difficulty)
        return spry_errorf(SPRY_ERR_CONFIG, "%s: %s: min_difficulty %lld > max_difficulty %lld",
                           name, path, (long long)s->min_difficulty, (long long)s->max_difficulty);
    SPRY_TRY(get_bool(o, name, path, "spry_clamp_min_difficulty", true, &s->clamp_min));
    SPRY_TRY(get_str(o, name, path, "schedule_type", true, type, sizeof type));
    const cJSON *sc = NULL;
    SPRY_TRY(get_obj(o, name, path, "schedule_config", &sc));
    snprintf(cpath, sizeof cpath, "%s.schedule_config", path);
    if (!strcmp(type, "fixed_linear") || !strcmp(type, "fixed_root")) {
        bool root = !strcmp(type, "fixed_root");
        s->type   = root ? SPRY_CL_SCHEDULE_FIXED_ROOT : SPRY_CL_SCHEDULE_FIXED_LINEAR;
        SPRY_TRY(get_int(sc, name, cpath, "total_curriculum_step", true, 0,
                         &s->total_curriculum_step));
        SPRY_TRY(get_int(sc, name, cpath, "difficulty_step", true, 0, &s->difficulty_step));
        SPRY_TRY(get_int(sc, name, cpath, "root_degree", root, 1, &s->root_degree));
        if (!root) s->root_degree = 1;
        if (s->total_curriculum_step <= 0)
            return spry_errorf(SPRY_ERR_CONFIG, "%s: %s.total_curriculum_step: must be > 0 (%lld)",
                               name, cpath, (long long)s->total_curriculum_step);
        if (s->difficulty_step <= 0)
            return spry_errorf(SPRY_ERR_CONFIG, "%s: %s.difficulty_step: must be > 0 (%lld)", name,
                               cpath, (long long)s->difficulty_step);
        if (s->root_degree <= 0)
            return spry_errorf(SPRY_ERR_CONFIG, "%s: %s.root_degree: must be > 0 (%lld)", name,
                               cpath, (long long)s->root_degree);
    } else if (!strcmp(type, "fixed_discrete")) {
        int nd = 0, ns = 0;
        s->type = SPRY_CL_SCHEDULE_FIXED_DISCRETE;
        SPRY_TRY(get_int_list(sc, name, cpath, "difficulty", s->difficulty, SPRY_CL_MAX_LEVELS,
                              &nd));
        SPRY_TRY(get_int_list(sc, name, cpath, "max_step", s->max_step, SPRY_CL_MAX_LEVELS - 1,
                              &ns));
        if (nd == 0 || ns == 0 || nd != ns + 1)
            return spry_errorf(SPRY_ERR_CONFIG,
                               "%s: %s: difficulty has %d entries and max_step %d; both must be "
                               "non-empty and len(difficulty) == len(max_step) + 1",
                               name, cpath, nd, ns);
        s->n_levels = nd;
    } else if (!strcmp(type, "custom")) {
        s->type = SPRY_CL_SCHEDULE_CUSTOM;
    } else {
        return spry_errorf(SPRY_ERR_CONFIG,
                           "%s: %s.schedule_type: unsupported curriculum schedule type \"%s\" "
                           "(fixed_linear, fixed_root, fixed_discrete or custom)",
                           name, path, type);
    }
    return SPRY_OK;
}

static spry_status parse_metric(const cJSON *o, const char *name, const char *path,
                                const char *mname, spry_data_efficiency_config *cfg,
                                spry_cl_metric *m) {
    char dt[32], ct[32];
    memset(m, 0, sizeof *m);
    if (strlen(mname) >= SPRY_CL_NAME_MAX)
        return spry_errorf(SPRY_ERR_CONFIG, "%s: %s: metric name longer than %d bytes", name, path,
                           SPRY_CL_NAME_MAX - 1);
    memcpy(m->name, mname, strlen(mname) + 1);
    if (!cJSON_IsObject(o))
        return spry_errorf(SPRY_ERR_CONFIG, "%s: %s: expected an object", name, path);
    SPRY_TRY(get_str(o, name, path, "difficulty_type", true, dt, sizeof dt));
    if (!strcmp(dt, "value")) m->difficulty_type = SPRY_CL_DIFFICULTY_VALUE;
    else if (!strcmp(dt, "percentile")) m->difficulty_type = SPRY_CL_DIFFICULTY_PERCENTILE;
    else
        return spry_errorf(SPRY_ERR_CONFIG,
                           "%s: %s.difficulty_type: \"%s\" (expected \"value\" or \"percentile\")",
                           name, path, dt);
    SPRY_TRY(get_str(o, name, path, "clustering_type", true, ct, sizeof ct));
    if (!strcmp(ct, "schedule_based")) m->clustering_type = SPRY_CL_CLUSTERING_SCHEDULE_BASED;
    else if (!strcmp(ct, "single_cluster")) m->clustering_type = SPRY_CL_CLUSTERING_SINGLE_CLUSTER;
    else
        return spry_errorf(SPRY_ERR_CONFIG,
                           "%s: %s.clustering_type: \"%s\" (expected \"schedule_based\" or "
                           "\"single_cluster\")",
                           name, path, ct);
    bool need_index = m->clustering_type == SPRY_CL_CLUSTERING_SCHEDULE_BASED;
    SPRY_TRY(get_str(o, name, path, "index_to_sample_path", need_index, m->index_to_sample_path,
                     sizeof m->index_to_sample_path));
    SPRY_TRY(get_str(o, name, path, "index_to_metric_path",
                     need_index && m->difficulty_type == SPRY_CL_DIFFICULTY_VALUE,
                     m->index_to_metric_path, sizeof m->index_to_metric_path));
    SPRY_TRY(parse_schedule(o, name, path, &m->schedule));
    if (m->difficulty_type == SPRY_CL_DIFFICULTY_PERCENTILE &&
        (m->schedule.max_difficulty <= 0 || m->schedule.min_difficulty < 0))
        return spry_errorf(SPRY_ERR_CONFIG,
                           "%s: %s: percentile difficulties need 0 <= min_difficulty <= "
                           "max_difficulty and max_difficulty > 0 (%lld, %lld)",
                           name, path, (long long)m->schedule.min_difficulty,
                           (long long)m->schedule.max_difficulty);
    if (strstr(mname, "seqlen") && m->schedule.difficulty_step % 8 != 0 &&
        m->schedule.type <= SPRY_CL_SCHEDULE_FIXED_ROOT)
        warn(cfg, "%s: %s.schedule_config.difficulty_step is not a multiple of 8 (slower "
                  "matmuls on odd sequence lengths)%s%s",
             name, path, "");
    return SPRY_OK;
}

static spry_status parse_ltd(const cJSON *o, const char *name, const char *path,
                             spry_data_efficiency_config *cfg) {
    spry_random_ltd_params *p = &cfg->random_ltd;
    char                    buf[64], spath[SPRY_CL_PATH_MAX], cpath[SPRY_CL_PATH_MAX + 32];
    int                     n = 0;
    SPRY_TRY(get_int(o, name, path, "total_layer_num", true, -1, &p->total_layer_num));
    SPRY_TRY(get_int(o, name, path, "random_ltd_layer_num", true, -1, &p->random_ltd_layer_num));
    SPRY_TRY(get_int_list(o, name, path, "random_ltd_layer_id", p->random_ltd_layer_id,
                          SPRY_RANDOM_LTD_MAX_LAYERS, &n));
    p->n_layer_id = n;
    SPRY_TRY(get_str(o, name, path, "model_mask_name", false, cfg->ltd_model_mask_name,
                     sizeof cfg->ltd_model_mask_name));
    p->model_mask_name = cfg->ltd_model_mask_name[0] ? cfg->ltd_model_mask_name : NULL;
    SPRY_TRY(get_str(o, name, path, "model_type", true, buf, sizeof buf));
    if (!strcmp(buf, "decoder")) p->model_type = "decoder";
    else if (!strcmp(buf, "encoder")) p->model_type = "encoder";
    else
        return spry_errorf(SPRY_ERR_CONFIG,
                           "%s: %s.model_type: \"%s\" (expected \"decoder\" or \"encoder\")", name,
                           path, buf);
    SPRY_TRY(get_str(o, name, path, "hidden_state_order", true, buf, sizeof buf));
    if (!strcmp(buf, "batch_seq_dim")) p->hidden_state_order = "batch_seq_dim";
    else if (!strcmp(buf, "seq_batch_dim")) p->hidden_state_order = "seq_batch_dim";
    else
        return spry_errorf(SPRY_ERR_CONFIG,
                           "%s: %s.hidden_state_order: \"%s\" (expected \"batch_seq_dim\" or "
                           "\"seq_batch_dim\")",
                           name, path, buf);
    const cJSON *rs = NULL, *sc = NULL, *lt = NULL;
    SPRY_TRY(get_obj(o, name, path, "random_ltd_schedule", &rs));
    snprintf(spath, sizeof spath, "%s.random_ltd_schedule", path);
    if (!rs)
        return spry_errorf(SPRY_ERR_CONFIG, "%s: %s: missing (required)", name, spath);
    SPRY_TRY(get_int(rs, name, spath, "min_value", true, -1, &p->min_value));
    SPRY_TRY(get_int(rs, name, spath, "max_value", true, -1, &p->max_value));
    SPRY_TRY(get_str(rs, name, spath, "schedule_type", true, buf, sizeof buf));
    if (strcmp(buf, "fixed_linear"))
        return spry_errorf(SPRY_ERR_CONFIG,
                           "%s: %s.schedule_type: \"%s\" (only \"fixed_linear\" is implemented, "
                           "as in DeepSpeed)",
                           name, spath, buf);
    p->schedule_type = "fixed_linear";
    SPRY_TRY(get_obj(rs, name, spath, "schedule_config", &sc));
    snprintf(cpath, sizeof cpath, "%s.schedule_config", spath);
    SPRY_TRY(get_int(sc, name, cpath, "require_steps", true, -1, &p->require_steps));
    SPRY_TRY(get_int(sc, name, cpath, "seq_per_step", true, -1, &p->seq_per_step));
    SPRY_TRY(get_obj(o, name, path, "layer_token_lr_schedule", &lt));
    snprintf(spath, sizeof spath, "%s.layer_token_lr_schedule", path);
    SPRY_TRY(get_bool(lt, name, spath, "enabled", false, &p->layer_token_lr_enabled));
    if (p->layer_token_lr_enabled) { // DeepSpeed defines these keys but raises; spry runs them
        SPRY_TRY(get_int(lt, name, spath, "total_layer_tokens", true, -1, &p->total_layer_tokens));
        SPRY_TRY(get_int(lt, name, spath, "warmup_layer_tokens", false, 0, &p->warmup_layer_tokens));
        SPRY_TRY(get_str(lt, name, spath, "warmup_type", false, buf, sizeof buf));
        if (buf[0] && strcmp(buf, "linear") && strcmp(buf, "log"))
            return spry_errorf(SPRY_ERR_CONFIG, "%s: %s.warmup_type: \"%s\" (linear or log)", name, spath, buf);
        p->layer_token_warmup_linear = !buf[0] || !strcmp(buf, "linear");
    }
    return SPRY_OK;
}

void spry_data_efficiency_config_default(spry_data_efficiency_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->seed       = 1234;
    cfg->num_epochs = 1000;
    cfg->random_ltd = spry_random_ltd_params_default();
}

static spry_status parse_all(const cJSON *root, const char *name,
                             spry_data_efficiency_config *cfg) {
    const cJSON *de = NULL, *ds = NULL, *cl = NULL, *cm = NULL, *dr = NULL, *ltd = NULL, *leg = NULL;
    int64_t      seed = 1234;
    if (root && !cJSON_IsObject(root))
        return spry_errorf(SPRY_ERR_CONFIG, "%s: the config is not a JSON object", name);
    SPRY_TRY(get_obj(root, name, "(top)", "data_efficiency", &de));
    SPRY_TRY(get_bool(de, name, "data_efficiency", "enabled", false, &cfg->enabled));
    SPRY_TRY(get_int(de, name, "data_efficiency", "seed", false, 1234, &seed));
    cfg->seed = (uint64_t)seed;
    cfg->random_ltd.seed = cfg->seed;

    const char *p1 = "data_efficiency.data_sampling";
    SPRY_TRY(get_obj(de, name, "data_efficiency", "data_sampling", &ds));
    SPRY_TRY(get_bool(ds, name, p1, "enabled", false, &cfg->data_sampling_enabled));
    SPRY_TRY(get_int(ds, name, p1, "num_epochs", false, 1000, &cfg->num_epochs));
    SPRY_TRY(get_int(ds, name, p1, "num_workers", false, 0, &cfg->num_workers));
    SPRY_TRY(get_bool(ds, name, p1, "pin_memory", false, &cfg->pin_memory));
    if (cfg->num_epochs <= 0)
        return spry_errorf(SPRY_ERR_CONFIG, "%s: %s.num_epochs: must be > 0 (%lld)", name, p1,
                           (long long)cfg->num_epochs);
    if (cfg->num_workers < 0)
        return spry_errorf(SPRY_ERR_CONFIG, "%s: %s.num_workers: must be >= 0 (%lld)", name, p1,
                           (long long)cfg->num_workers);
    const char *p2 = "data_efficiency.data_sampling.curriculum_learning";
    SPRY_TRY(get_obj(ds, name, p1, "curriculum_learning", &cl));
    SPRY_TRY(get_bool(cl, name, p2, "enabled", false, &cfg->cl_enabled));
    if (cfg->cl_enabled) {
        char path[SPRY_CL_PATH_MAX];
        SPRY_TRY(get_str(cl, name, p2, "data_cluster_path", false, cfg->data_cluster_path,
                         sizeof cfg->data_cluster_path));
        SPRY_TRY(get_obj(cl, name, p2, "curriculum_metrics", &cm));
        if (!cm || !cm->child)
            return spry_errorf(SPRY_ERR_CONFIG,
                               "%s: %s.curriculum_metrics: missing or empty (required when "
                               "curriculum learning is enabled)",
                               name, p2);
        const cJSON *m;
        cJSON_ArrayForEach(m, cm) {
            if (cfg->n_metrics == SPRY_CL_MAX_METRICS)
                return spry_errorf(SPRY_ERR_CONFIG, "%s: %s.curriculum_metrics: more than %d metrics",
                                   name, p2, SPRY_CL_MAX_METRICS);
            snprintf(path, sizeof path, "%s.curriculum_metrics.%s", p2, m->string ? m->string : "");
            SPRY_TRY(parse_metric(m, name, path, m->string ? m->string : "", cfg,
                                  &cfg->metrics[cfg->n_metrics]));
            cfg->n_metrics++;
        }
        if (!cfg->data_sampling_enabled) warn_parent(cfg, name, p2, p1, "curriculum learning");
        if (!cfg->enabled) warn_parent(cfg, name, p2, "data_efficiency", "curriculum learning");
    }

    const char *p3 = "data_efficiency.data_routing";
    const char *p4 = "data_efficiency.data_routing.random_ltd";
    SPRY_TRY(get_obj(de, name, "data_efficiency", "data_routing", &dr));
    SPRY_TRY(get_bool(dr, name, p3, "enabled", false, &cfg->data_routing_enabled));
    SPRY_TRY(get_obj(dr, name, p3, "random_ltd", &ltd));
    SPRY_TRY(get_bool(ltd, name, p4, "enabled", false, &cfg->random_ltd.enabled));
    if (cfg->random_ltd.enabled) {
        SPRY_TRY(parse_ltd(ltd, name, p4, cfg));
        if (!cfg->data_routing_enabled) warn_parent(cfg, name, p4, p3, "random-LTD");
        if (!cfg->enabled) warn_parent(cfg, name, p4, "data_efficiency", "random-LTD");
    }

    // Legacy block: {enabled, curriculum_type: "seqlen", min/max_difficulty, schedule_*}.
    SPRY_TRY(get_obj(root, name, "(top)", "curriculum_learning", &leg));
    bool leg_on = false;
    SPRY_TRY(get_bool(leg, name, "curriculum_learning", "enabled", false, &leg_on));
    if (leg_on) {
        char type[32];
        SPRY_TRY(get_str(leg, name, "curriculum_learning", "curriculum_type", true, type,
                         sizeof type));
        if (strcmp(type, "seqlen"))
            return spry_errorf(SPRY_ERR_CONFIG,
                               "%s: curriculum_learning.curriculum_type: \"%s\" (the legacy block "
                               "supports only \"seqlen\"; use data_efficiency.data_sampling."
                               "curriculum_learning for other metrics)",
                               name, type);
        for (int i = 0; i < cfg->n_metrics; i++)
            if (!strcmp(cfg->metrics[i].name, "seqlen_truncate"))
                return spry_errorf(SPRY_ERR_CONFIG,
                                   "%s: curriculum_learning: the legacy seqlen block and the "
                                   "metric data_efficiency...curriculum_metrics.seqlen_truncate "
                                   "are both enabled; keep one",
                                   name);
        if (cfg->n_metrics == SPRY_CL_MAX_METRICS)
            return spry_errorf(SPRY_ERR_CONFIG, "%s: curriculum_learning: too many metrics", name);
        spry_cl_metric *m = &cfg->metrics[cfg->n_metrics];
        memset(m, 0, sizeof *m);
        snprintf(m->name, sizeof m->name, "seqlen_truncate");
        m->difficulty_type = SPRY_CL_DIFFICULTY_VALUE;
        m->clustering_type = SPRY_CL_CLUSTERING_SINGLE_CLUSTER;
        SPRY_TRY(parse_schedule(leg, name, "curriculum_learning", &m->schedule));
        cfg->n_metrics++;
        cfg->cl_enabled = true;
        cfg->legacy     = true;
        warn(cfg, "%s: %s: the legacy block is deprecated (removed from DeepSpeed); translated "
                  "into the single_cluster metric \"seqlen_truncate\"%s",
             name, "curriculum_learning", "");
    }
    return SPRY_OK;
}

spry_status spry_data_efficiency_parse_json(const void *root, const char *name,
                                            spry_data_efficiency_config *cfg) {
    spry_data_efficiency_config_default(cfg);
    spry_status st = parse_all((const cJSON *)root, name ? name : "config", cfg);
    if (st != SPRY_OK) spry_data_efficiency_config_default(cfg);
    return st;
}

spry_status spry_data_efficiency_from_ds_config(const spry_ds_config *ds, const char *name,
                                                spry_data_efficiency_config *cfg) {
    spry_status st = spry_data_efficiency_parse_json(ds->root, name, cfg);
    if (st == SPRY_OK) cfg->random_ltd.global_batch_size = ds->train_batch_size;
    return st;
}

spry_status spry_data_efficiency_parse(const char *text, const char *name,
                                       spry_data_efficiency_config *cfg) {
    spry_data_efficiency_config_default(cfg);
    cJSON *root = cJSON_Parse(text ? text : "");
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return spry_errorf(SPRY_ERR_FORMAT, "%s: not a JSON object", name ? name : "config");
    }
    spry_status st = spry_data_efficiency_parse_json(root, name, cfg);
    cJSON_Delete(root);
    return st;
}
