/*
 * trainer.c -- the training loop, metrics and checkpoints (see trainer.h). Names no technique.
 */
#define _POSIX_C_SOURCE 200809L
#include "spry/hf_checkpoint.h"
#include "spry/trainer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "spry/autograd.h"
#include "spry/log.h"
#include "spry/safetensors.h"
#include "spry/schedule.h"

#define MAX_TECHNIQUES 16

struct spry_trainer {
    spry_model         *model;
    spry_ds_config      cfg;
    spry_trainer_params p;
    spry_batch_source   src;
    spry_optim         *optim;
    spry_loss_scaler    scaler;
    spry_ctx           *ctx;
    int32_t            *tokens; // (micro_batch, T+1)
    int64_t             step, samples, n_tokens, skipped;
    double              lr;
    float               last_grad_norm;
    const spry_technique_vt *tech[MAX_TECHNIQUES];
    void                    *tech_state[MAX_TECHNIQUES];
    int                      n_tech;
    char                     out_dir[1024];
    char                     tok_path[1600]; // tokenizer carried over from a resumed checkpoint
};

#define HOOKS(tr, hook, ...)                                                                       \
    for (int hk_ = 0; hk_ < (tr)->n_tech; hk_++)                                                   \
        if ((tr)->tech[hk_]->hook) (tr)->tech[hk_]->hook((tr)->tech_state[hk_], (tr), __VA_ARGS__)
#define HOOKS0(tr, hook)                                                                           \
    for (int hk_ = 0; hk_ < (tr)->n_tech; hk_++)                                                   \
        if ((tr)->tech[hk_]->hook) (tr)->tech[hk_]->hook((tr)->tech_state[hk_], (tr))

spry_trainer_params spry_trainer_params_default(void) {
    return (spry_trainer_params){.out_dir = "runs/train", .n_steps = 1000, .progress = -1};
}

static spry_status mkdir_p(const char *path) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *q = buf + 1; *q; q++)
        if (*q == '/') {
            *q = 0;
            if (mkdir(buf, 0755) && errno != EEXIST)
                return spry_errorf(SPRY_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
            *q = '/';
        }
    if (mkdir(buf, 0755) && errno != EEXIST)
        return spry_errorf(SPRY_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
    return SPRY_OK;
}

spry_status spry_trainer_init(spry_model *m, const spry_ds_config *cfg, spry_batch_source src,
                              const spry_trainer_params *p, spry_trainer **out) {
    *out = NULL;
    int64_t T = p->seq_len ? p->seq_len : (m->cfg.n_positions ? m->cfg.n_positions : 1024);
    if (m->cfg.arch == SPRY_ARCH_GPT2 && T > m->cfg.n_positions)
        return spry_errorf(SPRY_ERR_CONFIG, "seq_len %lld exceeds the model's n_positions %lld",
                           (long long)T, (long long)m->cfg.n_positions);
    if (p->n_steps < 0) return spry_errorf(SPRY_ERR_CONFIG, "steps must be >= 0, got %lld", (long long)p->n_steps);
    spry_trainer *tr = calloc(1, sizeof *tr);
    if (!tr) return spry_errorf(SPRY_ERR_NOMEM, "out of memory");
    tr->model     = m;
    tr->cfg       = *cfg;
    tr->cfg.root  = NULL; // not owned
    tr->p         = *p;
    tr->p.seq_len = T;
    tr->src       = src;
    snprintf(tr->out_dir, sizeof tr->out_dir, "%s", p->out_dir ? p->out_dir : "runs/train");
    tr->p.out_dir = tr->out_dir;
    spry_status st = mkdir_p(tr->out_dir);
    if (!st) st = spry_optim_init(&m->params, &cfg->optim, &tr->optim);
    tr->ctx    = st ? NULL : spry_ctx_init((size_t)64 << 20, p->n_threads);
    tr->tokens = malloc(sizeof(int32_t) * (size_t)(cfg->micro_batch * (T + 1)));
    if (!st && (!tr->ctx || !tr->tokens)) st = spry_errorf(SPRY_ERR_NOMEM, "out of memory");
    if (st) {
        spry_trainer_free(tr);
        return st;
    }
    tr->ctx->seed = cfg->seed;
    tr->scaler    = cfg->fp16 ? spry_loss_scaler_init(cfg->loss_scale, cfg->initial_scale_power,
                                                      cfg->loss_scale_window, cfg->hysteresis,
                                                      cfg->consecutive_hysteresis, cfg->min_loss_scale)
                              : spry_loss_scaler_init(1.0, 0, 1, 1, false, 1.0);
    *out = tr;
    return SPRY_OK;
}

void spry_trainer_free(spry_trainer *tr) {
    if (!tr) return;
    for (int i = 0; i < tr->n_tech; i++)
        if (tr->tech[i]->free) tr->tech[i]->free(tr->tech_state[i]);
    spry_optim_free(tr->optim);
    spry_ctx_free(tr->ctx);
    free(tr->tokens);
    free(tr);
}

spry_status spry_trainer_add_technique(spry_trainer *tr, const spry_technique_vt *vt, void *state) {
    if (tr->n_tech == MAX_TECHNIQUES)
        return spry_errorf(SPRY_ERR_UNSUPPORTED, "more than %d techniques", MAX_TECHNIQUES);
    tr->tech[tr->n_tech]       = vt;
    tr->tech_state[tr->n_tech] = state;
    tr->n_tech++;
    return SPRY_OK;
}

int64_t     spry_trainer_step_index(const spry_trainer *tr) { return tr->step; }
double      spry_trainer_lr(const spry_trainer *tr) { return tr->lr; }
spry_model *spry_trainer_model(spry_trainer *tr) { return tr->model; }
spry_ctx   *spry_trainer_ctx(spry_trainer *tr) { return tr->ctx; }

/* ---- one step ----------------------------------------------------------------------------- */

spry_status spry_trainer_step(spry_trainer *tr, float *loss_out, bool *skipped) {
    const spry_ds_config *c = &tr->cfg;
    int64_t B = c->micro_batch, T1 = tr->p.seq_len + 1;
    spry_params *P = &tr->model->params;
    spry_params_zero_grad(P);
    double      loss_sum = 0;
    spry_tensor tokens   = {0};
    spry_tensor_set_shape(&tokens, SPRY_DTYPE_I32, 2, (int64_t[]){B, T1});
    tokens.data = tr->tokens;
    float scale = (float)tr->scaler.scale;
    for (int64_t micro = 0; micro < c->grad_accum; micro++) {
        SPRY_TRY(tr->src.next(tr->src.self, tr->tokens, B, T1));
        for (int64_t i = 0; i < B * T1; i++)
            if (tr->tokens[i] < 0 || tr->tokens[i] >= tr->model->cfg.vocab_size)
                return spry_errorf(SPRY_ERR_FORMAT, "data: token id %d out of range for vocab_size %lld. "
                                   "HINT: the dataset was tokenized with a different tokenizer",
                                   tr->tokens[i], (long long)tr->model->cfg.vocab_size);
        spry_batch batch = {.tokens = &tokens, .step = tr->step};
        HOOKS(tr, on_batch, &batch);
        spry_ctx_begin(tr->ctx);
        spry_fwd_opts fwd = {.precision = c->bf16 ? SPRY_PRECISION_BF16 : c->fp16 ? SPRY_PRECISION_F16 : SPRY_PRECISION_F32};
        HOOKS(tr, on_forward, &fwd);
        tr->ctx->precision    = fwd.precision;
        spry_loss_terms terms = {.n = 1, .weight = {1.0f}, .name = {"lm"}};
        terms.t[0]            = spry_model_loss(tr->model, tr->ctx, batch.tokens);
        HOOKS(tr, on_loss, &terms);
        SPRY_TRY(spry_ctx_status(tr->ctx));
        loss_sum += ((float *)terms.t[0]->data)[0];
        // total = sum_k weight_k * term_k, one backward seeded with scale / accumulation
        spry_tensor *total = terms.weight[0] == 1.0f ? terms.t[0] : spry_scale(tr->ctx, terms.t[0], terms.weight[0]);
        for (int k = 1; k < terms.n; k++)
            total = spry_add(tr->ctx, total, spry_scale(tr->ctx, terms.t[k], terms.weight[k]));
        float       g = scale / (float)c->grad_accum;
        spry_tensor d = {.dtype = SPRY_DTYPE_F32, .ndim = 1, .shape = {1}, .stride = {4}, .data = &g};
        SPRY_TRY(spry_backward_with(tr->ctx, total, &d));
        tr->samples += B;
        tr->n_tokens += B * (T1 - 1);
    }
    *loss_out = (float)(loss_sum / (double)c->grad_accum);
    // DeepSpeed's timing: this step uses the schedule at last_batch_iteration = step - 1
    tr->lr = spry_schedule_lr(&c->sched, tr->step - 1);
    bool overflow = false;
    if (c->fp16) {
        overflow = spry_has_inf_or_nan(P->grads, P->n_elem);
        spry_loss_scaler_update(&tr->scaler, overflow);
        if (tr->scaler.at_min_overflow)
            return spry_errorf(SPRY_ERR_ARG, "fp16: gradient overflow at the minimum loss scale %g. "
                               "HINT: lower the learning rate or use bf16", tr->scaler.min_scale);
        if (!overflow && scale != 1.0f) {
            float inv = 1.0f / scale;
#pragma omp parallel for schedule(static)
            for (int64_t i = 0; i < P->n_elem; i++) P->grads[i] *= inv;
        }
    }
    *skipped = overflow;
    if (!overflow) {
        tr->last_grad_norm = spry_clip_grad_norm(P, (float)c->gradient_clipping);
        spry_optim_step(tr->optim, (float)tr->lr);
    } else {
        tr->skipped++;
    }
    HOOKS0(tr, on_step_end);
    tr->step++;
    return SPRY_OK;
}

/* ---- metrics ------------------------------------------------------------------------------ */

// DeepSpeed's csv_monitor layout: <output_path>/<job_name>/<event with / -> _>.csv, header
// "step,<last part of the event name>", step = samples seen.
static void csv_event(spry_trainer *tr, const char *event, double value) {
    if (!tr->cfg.csv_enabled) return;
    char dir[1200], path[1600], file[256], header[128];
    snprintf(dir, sizeof dir, "%s%s%s", tr->cfg.csv_output_path, tr->cfg.csv_output_path[0] ? "/" : "",
             tr->cfg.csv_job_name);
    if (mkdir_p(dir)) return;
    snprintf(file, sizeof file, "%s", event);
    for (char *q = file; *q; q++)
        if (*q == '/' || *q == ' ') *q = '_';
    const char *last = strrchr(event, '/');
    snprintf(header, sizeof header, "%s", last ? last + 1 : event);
    snprintf(path, sizeof path, "%s/%s.csv", dir, file);
    bool  fresh = access(path, F_OK) != 0;
    FILE *f     = fopen(path, "a");
    if (!f) return;
    if (fresh) fprintf(f, "step,%s\n", header);
    fprintf(f, "%lld,%.9g\n", (long long)tr->samples, value);
    fclose(f);
}

static void log_metrics(spry_trainer *tr, float loss, double tps, bool skipped) {
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.jsonl", tr->out_dir);
    FILE *f = fopen(path, "a");
    if (f) {
        fprintf(f, "{\"step\": %lld, \"samples\": %lld, \"tokens\": %lld, \"loss\": %.6f, \"lr\": %.6g, "
                   "\"grad_norm\": %.4f, \"tokens_per_s\": %.1f, \"loss_scale\": %g, \"skipped\": %s}\n",
                (long long)tr->step, (long long)tr->samples, (long long)tr->n_tokens, (double)loss, tr->lr,
                (double)tr->last_grad_norm, tps, tr->scaler.scale, skipped ? "true" : "false");
        fclose(f);
    }
    csv_event(tr, "Train/Samples/train_loss", loss);
    csv_event(tr, "Train/Samples/lr", tr->lr);
    if (tr->cfg.fp16) csv_event(tr, "Train/Samples/loss_scale", tr->scaler.scale);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// metrics.jsonl holds one line per step of this run: a fresh run starts it anew, a resumed run
// keeps the lines up to its checkpoint's step (steps after it were lost with the killed run and
// are about to be recomputed).
static void trim_metrics(spry_trainer *tr) {
    char path[1100], tmp[1200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", tr->out_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *in = fopen(path, "r");
    if (!in) return;
    FILE *out = fopen(tmp, "w");
    if (!out) {
        fclose(in);
        return;
    }
    char line[1024];
    while (tr->step > 0 && fgets(line, sizeof line, in)) {
        long long st = -1;
        if (sscanf(line, "{\"step\": %lld", &st) == 1 && st <= tr->step) fputs(line, out);
    }
    fclose(in);
    if (fclose(out) == 0) rename(tmp, path);
    else unlink(tmp);
}

spry_status spry_trainer_run(spry_trainer *tr) {
    trim_metrics(tr);
    bool   tty = tr->p.progress < 0 ? isatty(fileno(stderr)) : tr->p.progress == 1;
    double t0 = now(), tlast = t0;
    int64_t first = tr->step, tok_last = tr->n_tokens;
    while (tr->step < tr->p.n_steps) {
        float loss;
        bool  skipped;
        SPRY_TRY(spry_trainer_step(tr, &loss, &skipped));
        double t = now(), tps = (double)(tr->n_tokens - tok_last) / fmax(t - tlast, 1e-9);
        tlast = t, tok_last = tr->n_tokens;
        log_metrics(tr, loss, tps, skipped);
        double avg_rate = (double)(tr->step - first) / fmax(t - t0, 1e-9);
        double eta      = (double)(tr->p.n_steps - tr->step) / fmax(avg_rate, 1e-9);
        if (tty)
            fprintf(stderr, "\rstep %6lld/%lld  loss %.4f  lr %.2e  %8.0f tok/s  ETA %5.0fs%s ", (long long)tr->step,
                    (long long)tr->p.n_steps, (double)loss, tr->lr, tps, eta, skipped ? "  (skipped: overflow)" : "");
        else if (tr->step % tr->cfg.steps_per_print == 0 || tr->step == tr->p.n_steps)
            SPRY_LOG_INFO("step %lld/%lld loss %.4f lr %.3e grad_norm %.3f tokens/s %.0f eta_s %.0f%s",
                          (long long)tr->step, (long long)tr->p.n_steps, (double)loss, tr->lr,
                          (double)tr->last_grad_norm, tps, eta, skipped ? " skipped (fp16 overflow)" : "");
        if (tr->p.save_every > 0 && tr->step % tr->p.save_every == 0 && tr->step < tr->p.n_steps)
            SPRY_TRY(spry_trainer_save(tr));
        if (tr->p.stop_after > 0 && tr->step >= tr->p.stop_after) {
            if (tty) fputc('\n', stderr);
            return SPRY_OK;
        }
    }
    if (tty) fputc('\n', stderr);
    return spry_trainer_save(tr);
}

/* ---- checkpoints -------------------------------------------------------------------------- */

static spry_status fsync_path(const char *path, bool dir) {
    int fd = open(path, dir ? O_RDONLY : O_RDWR);
    if (fd < 0) return spry_errorf(SPRY_ERR_IO, "%s: cannot open for fsync: %s", path, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    return rc && !dir ? spry_errorf(SPRY_ERR_IO, "%s: fsync: %s", path, strerror(errno)) : SPRY_OK;
}

static spry_status write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return spry_errorf(SPRY_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    bool ok = fputs(text, f) >= 0;
    ok      = (fflush(f) == 0) && ok;
    ok      = (fsync(fileno(f)) == 0) && ok;
    ok      = (fclose(f) == 0) && ok;
    return ok ? SPRY_OK : spry_errorf(SPRY_ERR_IO, "%s: write failed: %s", path, strerror(errno));
}

static spry_status copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb");
    if (!in) return spry_errorf(SPRY_ERR_IO, "%s: cannot read: %s", from, strerror(errno));
    FILE *o = fopen(to, "wb");
    if (!o) {
        fclose(in);
        return spry_errorf(SPRY_ERR_IO, "%s: cannot write: %s", to, strerror(errno));
    }
    char   buf[1 << 16];
    size_t n;
    bool   ok = true;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) ok = ok && fwrite(buf, 1, n, o) == n;
    fclose(in);
    ok = (fflush(o) == 0) && (fsync(fileno(o)) == 0) && ok;
    ok = (fclose(o) == 0) && ok;
    return ok ? SPRY_OK : spry_errorf(SPRY_ERR_IO, "%s: write failed", to);
}

static void remove_dir(const char *dir) {
    static const char *files[] = {"model.safetensors", "config.json", "optimizer.safetensors",
                                  "trainer_state.json", "tokenizer.json"};
    char p[1400];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

spry_status spry_trainer_save(spry_trainer *tr) {
    char tmp[1200], final[1200], path[1400], name[64];
    snprintf(name, sizeof name, "step_%lld", (long long)tr->step);
    snprintf(final, sizeof final, "%s/%s", tr->out_dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp.%d", tr->out_dir, name, (int)getpid());
    remove_dir(tmp);
    if (mkdir(tmp, 0755)) return spry_errorf(SPRY_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    spry_status st;
    snprintf(path, sizeof path, "%s/config.json", tmp);
    st = spry_model_config_save(&tr->model->cfg, path);
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    if (!st) st = spry_model_save_weights(tr->model, path);
    if (!st) {
        spry_params *P = &tr->model->params;
        int64_t      n = P->n_elem;
        spry_st_entry e[2] = {{.name = "exp_avg", .dtype = SPRY_DTYPE_F32, .ndim = 1, .shape = &n, .data = tr->optim->m},
                              {.name = "exp_avg_sq", .dtype = SPRY_DTYPE_F32, .ndim = 1, .shape = &n, .data = tr->optim->v}};
        char steps[32], type[8];
        snprintf(steps, sizeof steps, "%lld", (long long)tr->optim->step);
        snprintf(type, sizeof type, "%d", (int)tr->optim->p.type);
        const char *meta[] = {"optimizer_step", steps, "optimizer_type", type};
        snprintf(path, sizeof path, "%s/optimizer.safetensors", tmp);
        st = spry_safetensors_write(path, e, tr->optim->v ? 2 : 1, meta, 2);
    }
    if (!st) {
        cJSON  *j = cJSON_CreateObject();
        int64_t ls[8];
        int     nls = tr->src.get_state ? tr->src.get_state(tr->src.self, ls) : 0;
        cJSON_AddNumberToObject(j, "step", (double)tr->step);
        cJSON_AddNumberToObject(j, "samples", (double)tr->samples);
        cJSON_AddNumberToObject(j, "tokens", (double)tr->n_tokens);
        cJSON_AddNumberToObject(j, "skipped_steps", (double)tr->skipped);
        cJSON_AddNumberToObject(j, "rng_seed", (double)tr->ctx->seed);
        cJSON_AddNumberToObject(j, "rng_counter", (double)tr->ctx->rng_counter);
        cJSON *lsj = cJSON_AddArrayToObject(j, "data_state");
        for (int i = 0; i < nls; i++) cJSON_AddItemToArray(lsj, cJSON_CreateNumber((double)ls[i]));
        cJSON *sc = cJSON_AddObjectToObject(j, "loss_scaler");
        cJSON_AddNumberToObject(sc, "scale", tr->scaler.scale);
        cJSON_AddNumberToObject(sc, "delayed_shift", tr->scaler.delayed_shift);
        cJSON_AddNumberToObject(sc, "iter", (double)tr->scaler.iter);
        cJSON_AddNumberToObject(sc, "last_overflow_iter", (double)tr->scaler.last_overflow_iter);
        char *text = cJSON_Print(j);
        cJSON_Delete(j);
        snprintf(path, sizeof path, "%s/trainer_state.json", tmp);
        st = text ? write_text(path, text) : spry_errorf(SPRY_ERR_NOMEM, "out of memory");
        free(text);
    }
    if (!st && tr->p.tokenizer) {
        snprintf(path, sizeof path, "%s/tokenizer.json", tmp);
        st = copy_file(tr->p.tokenizer, path);
    }
    if (!st) st = fsync_path(tmp, true);
    if (!st) {
        remove_dir(final); // an older checkpoint of the same step (a rerun)
        if (rename(tmp, final))
            st = spry_errorf(SPRY_ERR_IO, "%s: cannot rename to %s: %s", tmp, final, strerror(errno));
    }
    if (!st) {
        char latest[1200], ltmp[1300];
        snprintf(latest, sizeof latest, "%s/latest", tr->out_dir);
        snprintf(ltmp, sizeof ltmp, "%s/.latest.tmp.%d", tr->out_dir, (int)getpid());
        char line[80];
        snprintf(line, sizeof line, "%s\n", name);
        st = write_text(ltmp, line);
        if (!st && rename(ltmp, latest)) st = spry_errorf(SPRY_ERR_IO, "%s: rename: %s", latest, strerror(errno));
        if (!st) st = fsync_path(tr->out_dir, true);
    }
    if (st) remove_dir(tmp);
    else SPRY_LOG_INFO("saved checkpoint %s", final);
    return st;
}

static spry_status read_small(const char *path, char *buf, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return spry_errorf(errno == ENOENT ? SPRY_ERR_NOT_FOUND : SPRY_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    size_t k = fread(buf, 1, n - 1, f);
    fclose(f);
    buf[k] = 0;
    return SPRY_OK;
}

static spry_status json_i64(const char *path, const cJSON *j, const char *key, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsNumber(v)) return spry_errorf(SPRY_ERR_FORMAT, "%s: missing number \"%s\"", path, key);
    *out = (int64_t)v->valuedouble;
    return SPRY_OK;
}

spry_status spry_trainer_resume(spry_trainer *tr, const char *dir_in) {
    char dir[1400], path[1600];
    if (dir_in) {
        snprintf(dir, sizeof dir, "%s", dir_in);
    } else {
        char line[256];
        snprintf(path, sizeof path, "%s/latest", tr->out_dir);
        SPRY_TRY(read_small(path, line, sizeof line));
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0] || strchr(line, '/'))
            return spry_errorf(SPRY_ERR_FORMAT, "%s: bad checkpoint name \"%s\"", path, line);
        snprintf(dir, sizeof dir, "%s/%s", tr->out_dir, line);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    SPRY_TRY(spry_model_load_weights(tr->model, path));
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    spry_safetensors *st;
    SPRY_TRY(spry_safetensors_open(path, &st));
    spry_status rc = SPRY_OK;
    const char *names[2] = {"exp_avg", "exp_avg_sq"};
    float      *dst[2]   = {tr->optim->m, tr->optim->v};
    for (int i = 0; i < 2 && !rc; i++) {
        if (!dst[i]) continue;
        const spry_st_tensor_info *info = spry_safetensors_find(st, names[i]);
        if (!info || info->dtype != SPRY_DTYPE_F32 || info->numel != tr->model->params.n_elem)
            rc = spry_errorf(SPRY_ERR_FORMAT, "%s: \"%s\" missing or of the wrong size for this model", path, names[i]);
        else
            memcpy(dst[i], info->data, info->nbytes);
    }
    const char *os = spry_safetensors_meta(st, "optimizer_step");
    if (!rc && !os) rc = spry_errorf(SPRY_ERR_FORMAT, "%s: metadata \"optimizer_step\" missing", path);
    if (!rc) tr->optim->step = strtoll(os, NULL, 10);
    spry_safetensors_close(st);
    SPRY_TRY(rc);
    char *text = malloc(1 << 16);
    if (!text) return spry_errorf(SPRY_ERR_NOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    rc = read_small(path, text, 1 << 16);
    cJSON *j = rc ? NULL : cJSON_Parse(text);
    free(text);
    if (!rc && !j) rc = spry_errorf(SPRY_ERR_FORMAT, "%s: not valid JSON", path);
    int64_t rng_counter = 0, seed = 0, lsi = 0, lso = 0, ds = 0;
    if (!rc) rc = json_i64(path, j, "step", &tr->step);
    if (!rc) rc = json_i64(path, j, "samples", &tr->samples);
    if (!rc) rc = json_i64(path, j, "tokens", &tr->n_tokens);
    if (!rc) rc = json_i64(path, j, "skipped_steps", &tr->skipped);
    if (!rc) rc = json_i64(path, j, "rng_counter", &rng_counter);
    if (!rc) rc = json_i64(path, j, "rng_seed", &seed);
    const cJSON *sc = j ? cJSON_GetObjectItemCaseSensitive(j, "loss_scaler") : NULL;
    if (!rc) rc = json_i64(path, sc, "iter", &lsi);
    if (!rc) rc = json_i64(path, sc, "last_overflow_iter", &lso);
    if (!rc) rc = json_i64(path, sc, "delayed_shift", &ds);
    if (!rc) {
        const cJSON *scale = cJSON_GetObjectItemCaseSensitive(sc, "scale");
        tr->scaler.scale   = cJSON_IsNumber(scale) ? scale->valuedouble : tr->scaler.scale;
        tr->scaler.iter = lsi, tr->scaler.last_overflow_iter = lso, tr->scaler.delayed_shift = (int)ds;
        tr->ctx->rng_counter = (uint64_t)rng_counter;
        tr->ctx->seed        = (uint64_t)seed;
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "data_state");
        int64_t      ls[8];
        int          n = 0;
        for (const cJSON *it = d ? d->child : NULL; it && n < 8; it = it->next) ls[n++] = (int64_t)it->valuedouble;
        if (tr->src.set_state) rc = tr->src.set_state(tr->src.self, ls, n);
    }
    cJSON_Delete(j);
    if (!rc && !tr->p.tokenizer) { // keep carrying the tokenizer the checkpoint was saved with
        snprintf(tr->tok_path, sizeof tr->tok_path, "%s/tokenizer.json", dir);
        FILE *f = fopen(tr->tok_path, "rb");
        if (f) fclose(f), tr->p.tokenizer = tr->tok_path;
    }
    if (!rc) SPRY_LOG_INFO("resumed from %s at step %lld", dir, (long long)tr->step);
    return rc;
}
