/*
 * trainer.c -- the training loop, metrics and checkpoints (see trainer.h). Names no technique.
 */
#define _POSIX_C_SOURCE 200809L
#include "spry/hf_checkpoint.h"
#include "spry/trainer.h"

#include <cjson/cJSON.h>
#include <dirent.h>
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
#include "spry/data_parallel.h"
#include "spry/fs.h"
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
    spry_comm          *comm;   // the job (owned when we opened the single-process one)
    bool                own_comm;
    int                 rank, world;
    spry_dp            *dp;
    double              comm_s;  // seconds in collectives during the last step
    int32_t            *tokens; // (world * micro_batch, T+1): the global micro-batch
    int64_t             step, samples, n_tokens, skipped;
    int64_t             eff_tokens; // effective tokens (see spry_trainer_eff_tokens)
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

// FNV-1a, for comparing configs across ranks.
static int64_t hash_text(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; s && *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return (int64_t)(h >> 1);
}

// Every rank must train the same thing: the settings that shape the job are compared to rank 0's.
static spry_status agree_settings(spry_trainer *tr, const spry_ds_config *cfg, const spry_model *m) {
    char   *text = cfg->root ? cJSON_PrintUnformatted(cfg->root) : NULL;
    int64_t h    = hash_text(text);
    free(text);
    SPRY_TRY(spry_comm_same(tr->comm, "the DeepSpeed config (hash of its JSON)", h));
    SPRY_TRY(spry_comm_same(tr->comm, "train_batch_size", cfg->train_batch_size));
    SPRY_TRY(spry_comm_same(tr->comm, "train_micro_batch_size_per_gpu", cfg->micro_batch));
    SPRY_TRY(spry_comm_same(tr->comm, "steps", tr->p.n_steps));
    SPRY_TRY(spry_comm_same(tr->comm, "seq_len", tr->p.seq_len));
    SPRY_TRY(spry_comm_same(tr->comm, "the number of parameters", m->params.n_elem));
    return SPRY_OK;
}

spry_status spry_trainer_init(spry_model *m, const spry_ds_config *cfg, spry_batch_source src,
                              const spry_trainer_params *p, spry_trainer **out) {
    *out = NULL;
    int64_t     T  = p->seq_len ? p->seq_len : (m->cfg.n_positions ? m->cfg.n_positions : 1024);
    spry_status st = SPRY_OK;
    if (m->cfg.arch != SPRY_ARCH_BLOOM && T > m->cfg.n_positions)
        st = spry_errorf(SPRY_ERR_CONFIG, "seq_len %lld exceeds the model's n_positions %lld", (long long)T,
                         (long long)m->cfg.n_positions);
    else if (p->n_steps < 0)
        st = spry_errorf(SPRY_ERR_CONFIG, "steps must be >= 0, got %lld", (long long)p->n_steps);
    // with several ranks, a rank that cannot start stops the others here, before any other collective
    if (p->comm && spry_comm_size(p->comm) > 1) st = spry_comm_agree(p->comm, st, NULL);
    if (st) return st;
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
    tr->comm = p->comm;
    if (!tr->comm) st = spry_comm_init(true, &tr->comm), tr->own_comm = true;
    tr->rank  = tr->comm ? spry_comm_rank(tr->comm) : 0;
    tr->world = tr->comm ? spry_comm_size(tr->comm) : 1;
    if (!st && tr->rank == 0) st = spry_mkdir_p(tr->out_dir);
    if (tr->world > 1) st = spry_comm_agree(tr->comm, st, NULL);
    if (!st && tr->world > 1) st = agree_settings(tr, cfg, m);
    spry_dp_params dpp = {.stage = cfg->zero_stage, .bucket_elems = cfg->reduce_bucket_size, .overlap = cfg->overlap_comm};
    if (!st) st = spry_dp_init(tr->comm, &m->params, &dpp, &tr->dp);
    int64_t lo = 0, hi = 0;
    if (!st) spry_dp_partition(tr->dp, tr->rank, &lo, &hi);
    if (!st) st = spry_optim_init_range(&m->params, &cfg->optim, lo, hi, &tr->optim);
    // every rank starts from rank 0's weights (DeepSpeed broadcasts the model at start too)
    if (!st && tr->world > 1)
        st = spry_comm_broadcast(tr->comm, m->params.values, sizeof(float) * (size_t)m->params.n_elem, 0);
    tr->ctx    = st ? NULL : spry_ctx_init((size_t)64 << 20, p->n_threads);
    tr->tokens = malloc(sizeof(int32_t) * (size_t)(tr->world * cfg->micro_batch * (T + 1)));
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
    spry_dp_free(tr->dp);
    if (tr->own_comm) spry_comm_free(tr->comm);
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
int64_t     spry_trainer_eff_tokens(const spry_trainer *tr) { return tr->eff_tokens; }
double      spry_trainer_lr(const spry_trainer *tr) { return tr->lr; }
spry_model *spry_trainer_model(spry_trainer *tr) { return tr->model; }
spry_ctx   *spry_trainer_ctx(spry_trainer *tr) { return tr->ctx; }
int64_t     spry_trainer_optim_elems(const spry_trainer *tr) { return tr->optim->hi - tr->optim->lo; }

/* ---- one step ----------------------------------------------------------------------------- */

spry_status spry_trainer_step(spry_trainer *tr, float *loss_out, bool *skipped) {
    const spry_ds_config *c = &tr->cfg;
    int64_t B = c->micro_batch, T1 = tr->p.seq_len + 1, W = tr->world;
    spry_params *P = &tr->model->params;
    spry_params_zero_grad(P);
    spry_comm_take_time(tr->comm);
    int64_t tok_before = tr->eff_tokens;
    double      loss_sum = 0;
    spry_tensor tokens   = {0};
    int32_t    *mine     = tr->tokens + tr->rank * B * T1; // this rank's rows of the global micro-batch
    spry_tensor_set_shape(&tokens, SPRY_DTYPE_I32, 2, (int64_t[]){B, T1});
    tokens.data = mine;
    float scale = (float)tr->scaler.scale;
    for (int64_t micro = 0; micro < c->grad_accum; micro++) {
        SPRY_TRY(tr->src.next(tr->src.self, tr->tokens, W * B, T1));
        for (int64_t i = 0; i < B * T1; i++)
            if (mine[i] < 0 || mine[i] >= tr->model->cfg.vocab_size)
                return spry_errorf(SPRY_ERR_FORMAT, "data: token id %d out of range for vocab_size %lld. "
                                   "HINT: the dataset was tokenized with a different tokenizer",
                                   mine[i], (long long)tr->model->cfg.vocab_size);
        spry_tensor_set_shape(&tokens, SPRY_DTYPE_I32, 2, (int64_t[]){B, T1}); // on_batch hooks may reshape it
        tokens.data      = mine;
        spry_batch batch = {.tokens = &tokens, .step = tr->step};
        HOOKS(tr, on_batch, &batch);
        spry_ctx_begin(tr->ctx);
        // random ops follow the global micro-batch index: the same masks for any world size
        tr->ctx->rng_counter = (uint64_t)(((tr->step * c->grad_accum + micro) * W + tr->rank) << 12);
        spry_fwd_opts fwd = {.precision = c->bf16 ? SPRY_PRECISION_BF16 : c->fp16 ? SPRY_PRECISION_F16 : SPRY_PRECISION_F32,
                             .micro = micro, .row0 = tr->rank * B, .batch = batch.tokens->shape[0],
                             .seq_len = batch.tokens->shape[1] - 1, .training = true,
                             .eff_seq_len = batch.tokens->shape[1] - 1};
        HOOKS(tr, on_forward, &fwd);
        tr->ctx->precision    = fwd.precision;
        spry_loss_terms terms = {.n = 1, .weight = {1.0f}, .name = {"lm"}};
        terms.t[0] = spry_model_loss_ex(tr->model, tr->ctx, batch.tokens, fwd.routes, fwd.n_routes);
        HOOKS(tr, on_loss, &terms);
        SPRY_TRY(spry_ctx_status(tr->ctx));
        loss_sum += ((float *)terms.t[0]->data)[0];
        // total = sum_k weight_k * term_k, one backward seeded with scale / accumulation
        spry_tensor *total = terms.weight[0] == 1.0f ? terms.t[0] : spry_scale(tr->ctx, terms.t[0], terms.weight[0]);
        for (int k = 1; k < terms.n; k++)
            total = spry_add(tr->ctx, total, spry_scale(tr->ctx, terms.t[k], terms.weight[k]));
        float       g = scale / (float)c->grad_accum;
        spry_tensor d = {.dtype = SPRY_DTYPE_F32, .ndim = 1, .shape = {1}, .stride = {4}, .data = &g};
        if (micro == c->grad_accum - 1) SPRY_TRY(spry_dp_arm(tr->dp, tr->ctx));
        spry_status bst = spry_backward_with(tr->ctx, total, &d);
        if (bst) {
            spry_dp_reduce(tr->dp, tr->ctx); // unhooks; the step is abandoned
            return bst;
        }
        tr->samples += W * B;
        tr->n_tokens += W * B * (batch.tokens->shape[1] - 1); // after any truncating hook
        tr->eff_tokens += W * batch.tokens->shape[0] * fwd.eff_seq_len;
    }
    // gradients: the mean over ranks (stage 2: of this rank's partition)
    SPRY_TRY(spry_dp_reduce(tr->dp, tr->ctx));
    if (W > 1) SPRY_TRY(spry_comm_allreduce(tr->comm, &loss_sum, 1, SPRY_DTYPE_F64, SPRY_REDUCE_SUM));
    *loss_out = (float)(loss_sum / (double)(c->grad_accum * W));
    // DeepSpeed's timing: this step uses the schedule at last_batch_iteration = step - 1
    // (a token-based schedule: at the effective tokens consumed before this step)
    tr->lr = c->sched.by_tokens ? spry_schedule_lr_tokens(&c->sched, (double)tok_before)
                                : spry_schedule_lr(&c->sched, tr->step - 1);
    bool overflow = false;
    if (c->fp16) {
        SPRY_TRY(spry_dp_overflow(tr->dp, &overflow));
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
        SPRY_TRY(spry_dp_clip(tr->dp, (float)c->gradient_clipping, &tr->last_grad_norm));
        spry_optim_step(tr->optim, (float)tr->lr);
        SPRY_TRY(spry_dp_gather_params(tr->dp));
    } else {
        tr->skipped++;
    }
    HOOKS0(tr, on_step_end);
    tr->step++;
    tr->comm_s = spry_comm_take_time(tr->comm);
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
    if (spry_mkdir_p(dir)) return;
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
    if (tr->rank != 0) return;
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.jsonl", tr->out_dir);
    FILE *f = fopen(path, "a");
    if (f) {
        fprintf(f, "{\"step\": %lld, \"samples\": %lld, \"tokens\": %lld, \"loss\": %.6f, \"lr\": %.6g, "
                   "\"grad_norm\": %.4f, \"tokens_per_s\": %.1f, \"loss_scale\": %g, \"skipped\": %s, "
                   "\"comm_s\": %.6f, \"eff_tokens\": %lld}\n",
                (long long)tr->step, (long long)tr->samples, (long long)tr->n_tokens, (double)loss, tr->lr,
                (double)tr->last_grad_norm, tps, tr->scaler.scale, skipped ? "true" : "false", tr->comm_s,
                (long long)tr->eff_tokens);
        fclose(f);
    }
    csv_event(tr, "Train/Samples/train_loss", loss);
    csv_event(tr, "Train/Samples/lr", tr->lr);
    if (tr->cfg.fp16) csv_event(tr, "Train/Samples/loss_scale", tr->scaler.scale);
}

// metrics.jsonl holds one line per step of this run: a fresh run starts it anew, a resumed run
// keeps the lines up to its checkpoint's step (steps after it were lost with the killed run and
// are about to be recomputed).
static void trim_metrics(spry_trainer *tr) {
    if (tr->rank != 0) return;
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
    bool   quiet = tr->rank != 0; // rank 0 speaks for the job
    double t0 = spry_now(), tlast = t0;
    int64_t first = tr->step, tok_last = tr->n_tokens, eff_first = tr->eff_tokens;
    while (tr->step < tr->p.n_steps) {
        float loss;
        bool  skipped;
        SPRY_TRY(spry_trainer_step(tr, &loss, &skipped));
        double t = spry_now(), tps = (double)(tr->n_tokens - tok_last) / fmax(t - tlast, 1e-9);
        tlast = t, tok_last = tr->n_tokens;
        log_metrics(tr, loss, tps, skipped);
        double avg_rate = (double)(tr->step - first) / fmax(t - t0, 1e-9);
        double eta      = (double)(tr->p.n_steps - tr->step) / fmax(avg_rate, 1e-9);
        if (tr->p.train_tokens > 0) { // a token budget may end the run first
            double eff_rate = (double)(tr->eff_tokens - eff_first) / fmax(t - t0, 1e-9);
            eta = fmin(eta, (double)(tr->p.train_tokens - tr->eff_tokens) / fmax(eff_rate, 1e-9));
        }
        if (quiet)
            ;
        else if (tty)
            fprintf(stderr, "\rstep %6lld/%lld  loss %.4f  lr %.2e  %8.0f tok/s  ETA %5.0fs%s ", (long long)tr->step,
                    (long long)tr->p.n_steps, (double)loss, tr->lr, tps, eta, skipped ? "  (skipped: overflow)" : "");
        else if (tr->step % tr->cfg.steps_per_print == 0 || tr->step == tr->p.n_steps)
            SPRY_LOG_INFO("step %lld/%lld loss %.4f lr %.3e grad_norm %.3f tokens/s %.0f eta_s %.0f%s",
                          (long long)tr->step, (long long)tr->p.n_steps, (double)loss, tr->lr,
                          (double)tr->last_grad_norm, tps, eta, skipped ? " skipped (fp16 overflow)" : "");
        if (tr->p.save_every > 0 && tr->step % tr->p.save_every == 0 && tr->step < tr->p.n_steps)
            SPRY_TRY(spry_trainer_save(tr));
        if (tr->p.train_tokens > 0 && tr->eff_tokens >= tr->p.train_tokens) break; // token budget spent
        if (tr->p.stop_after > 0 && tr->step >= tr->p.stop_after) {
            if (tty && !quiet) fputc('\n', stderr);
            return SPRY_OK;
        }
    }
    if (tty && !quiet) fputc('\n', stderr);
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

// Removes a checkpoint directory: its files (one level; checkpoints hold no subdirectories).
static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    char           p[1600];
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(dir);
}

// The optimizer state file of a rank: one file for stage 0 (rank 0), one per rank otherwise.
static void optim_file_name(const spry_trainer *tr, int r, char *out, size_t n) {
    if (tr->cfg.zero_stage == 0 || tr->world == 1) snprintf(out, n, "optimizer.safetensors");
    else snprintf(out, n, "optimizer-%05d-of-%05d.safetensors", r, tr->world);
}

// This rank's optimizer state: exp_avg (and exp_avg_sq) of its range [lo, hi), with the range in
// the metadata, so that a run with another world size or stage can take the pieces it needs.
static spry_status save_optimizer(spry_trainer *tr, const char *dir) {
    if (tr->cfg.zero_stage == 0 && tr->rank != 0) return SPRY_OK;
    const spry_optim *o = tr->optim;
    int64_t           n = o->hi - o->lo;
    spry_st_entry e[2] = {{.name = "exp_avg", .dtype = SPRY_DTYPE_F32, .ndim = 1, .shape = &n, .data = o->m},
                          {.name = "exp_avg_sq", .dtype = SPRY_DTYPE_F32, .ndim = 1, .shape = &n, .data = o->v}};
    char steps[32], type[8], lo[32], hi[32], total[32], name[64], path[1400];
    snprintf(steps, sizeof steps, "%lld", (long long)o->step);
    snprintf(type, sizeof type, "%d", (int)o->p.type);
    snprintf(lo, sizeof lo, "%lld", (long long)o->lo);
    snprintf(hi, sizeof hi, "%lld", (long long)o->hi);
    snprintf(total, sizeof total, "%lld", (long long)tr->model->params.n_elem);
    const char *meta[] = {"optimizer_step", steps, "optimizer_type", type, "range_lo", lo, "range_hi", hi,
                          "n_elem", total};
    optim_file_name(tr, tr->rank, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return spry_safetensors_write(path, e, o->v ? 2 : 1, meta, 5);
}

static spry_status save_state(spry_trainer *tr, const char *dir) {
    cJSON  *j = cJSON_CreateObject();
    int64_t ls[8];
    int     nls = tr->src.get_state ? tr->src.get_state(tr->src.self, ls) : 0;
    cJSON_AddNumberToObject(j, "step", (double)tr->step);
    cJSON_AddNumberToObject(j, "samples", (double)tr->samples);
    cJSON_AddNumberToObject(j, "tokens", (double)tr->n_tokens);
    cJSON_AddNumberToObject(j, "eff_tokens", (double)tr->eff_tokens);
    cJSON_AddNumberToObject(j, "skipped_steps", (double)tr->skipped);
    cJSON_AddNumberToObject(j, "rng_seed", (double)tr->ctx->seed);
    cJSON_AddNumberToObject(j, "rng_counter", (double)tr->ctx->rng_counter);
    cJSON_AddNumberToObject(j, "world_size", tr->world);
    cJSON_AddNumberToObject(j, "zero_stage", tr->cfg.zero_stage);
    cJSON *files = cJSON_AddArrayToObject(j, "optimizer_files");
    for (int r = 0; r < (tr->cfg.zero_stage == 0 ? 1 : tr->world); r++) {
        char    name[64];
        int64_t lo, hi;
        optim_file_name(tr, r, name, sizeof name);
        spry_dp_partition(tr->dp, r, &lo, &hi);
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "file", name);
        cJSON_AddNumberToObject(f, "lo", (double)lo);
        cJSON_AddNumberToObject(f, "hi", (double)hi);
        cJSON_AddItemToArray(files, f);
    }
    cJSON *lsj = cJSON_AddArrayToObject(j, "data_state");
    for (int i = 0; i < nls; i++) cJSON_AddItemToArray(lsj, cJSON_CreateNumber((double)ls[i]));
    cJSON *tsj = cJSON_AddObjectToObject(j, "technique_state");
    for (int t = 0; t < tr->n_tech; t++) {
        int64_t ts[SPRY_TECHNIQUE_MAX_STATE];
        if (!tr->tech[t]->get_state) continue;
        int    nts = tr->tech[t]->get_state(tr->tech_state[t], ts);
        cJSON *a   = cJSON_AddArrayToObject(tsj, tr->tech[t]->name);
        for (int i = 0; i < nts && i < SPRY_TECHNIQUE_MAX_STATE; i++)
            cJSON_AddItemToArray(a, cJSON_CreateNumber((double)ts[i]));
    }
    cJSON *sc = cJSON_AddObjectToObject(j, "loss_scaler");
    cJSON_AddNumberToObject(sc, "scale", tr->scaler.scale);
    cJSON_AddNumberToObject(sc, "delayed_shift", tr->scaler.delayed_shift);
    cJSON_AddNumberToObject(sc, "iter", (double)tr->scaler.iter);
    cJSON_AddNumberToObject(sc, "last_overflow_iter", (double)tr->scaler.last_overflow_iter);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    char path[1400];
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    spry_status st = text ? write_text(path, text) : spry_errorf(SPRY_ERR_NOMEM, "out of memory");
    free(text);
    return st;
}

// Collective with several ranks: rank 0 makes the temporary directory and writes the model and
// the state, every rank its optimizer partition; rank 0 renames and moves `latest` only after
// all ranks reported success, so a failure anywhere leaves the previous checkpoint current.
spry_status spry_trainer_save(spry_trainer *tr) {
    char tmp[1200], final[1200], path[1400], name[64];
    snprintf(name, sizeof name, "step_%lld", (long long)tr->step);
    snprintf(final, sizeof final, "%s/%s", tr->out_dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp.%d", tr->out_dir, name, (int)getpid());
    bool        lead = tr->rank == 0, many = tr->world > 1;
    spry_status st   = SPRY_OK;
    if (many) st = spry_comm_broadcast(tr->comm, tmp, sizeof tmp, 0); // rank 0's pid names it
    if (!st && lead) {
        remove_dir(tmp);
        if (mkdir(tmp, 0755)) st = spry_errorf(SPRY_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    }
    if (many) st = spry_comm_agree(tr->comm, st, NULL);
    if (st) return st;
    if (lead) {
        snprintf(path, sizeof path, "%s/config.json", tmp);
        st = spry_model_config_save(&tr->model->cfg, path);
        snprintf(path, sizeof path, "%s/model.safetensors", tmp);
        if (!st) st = spry_model_save_weights(tr->model, path);
    }
    if (!st) st = save_optimizer(tr, tmp);
    if (many) st = spry_comm_agree(tr->comm, st, NULL);
    if (lead && !st) st = save_state(tr, tmp);
    if (lead && !st && tr->p.tokenizer) {
        snprintf(path, sizeof path, "%s/tokenizer.json", tmp);
        st = copy_file(tr->p.tokenizer, path);
    }
    if (lead && !st) st = fsync_path(tmp, true);
    if (lead && !st) {
        remove_dir(final); // an older checkpoint of the same step (a rerun)
        if (rename(tmp, final))
            st = spry_errorf(SPRY_ERR_IO, "%s: cannot rename to %s: %s", tmp, final, strerror(errno));
    }
    if (lead && !st) {
        char latest[1200], ltmp[1300];
        snprintf(latest, sizeof latest, "%s/latest", tr->out_dir);
        snprintf(ltmp, sizeof ltmp, "%s/.latest.tmp.%d", tr->out_dir, (int)getpid());
        char line[80];
        snprintf(line, sizeof line, "%s\n", name);
        st = write_text(ltmp, line);
        if (!st && rename(ltmp, latest)) st = spry_errorf(SPRY_ERR_IO, "%s: rename: %s", latest, strerror(errno));
        if (!st) st = fsync_path(tr->out_dir, true);
    }
    if (lead && st) remove_dir(tmp);
    if (many) st = spry_comm_agree(tr->comm, st, NULL);
    if (!st && lead) SPRY_LOG_INFO("saved checkpoint %s", final);
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

// Copies the part of one optimizer file's range [flo, fhi) that falls in this rank's range.
static spry_status load_optimizer_piece(spry_trainer *tr, const char *path, int64_t flo, int64_t fhi, int64_t *got) {
    spry_optim       *o  = tr->optim;
    spry_safetensors *st = NULL;
    SPRY_TRY(spry_safetensors_open(path, &st));
    spry_status rc       = SPRY_OK;
    const char *names[2] = {"exp_avg", "exp_avg_sq"};
    float      *dst[2]   = {o->m, o->v};
    int64_t     lo = flo > o->lo ? flo : o->lo, hi = fhi < o->hi ? fhi : o->hi;
    for (int i = 0; i < 2 && !rc; i++) {
        if (!dst[i]) continue;
        const spry_st_tensor_info *info = spry_safetensors_find(st, names[i]);
        if (!info || info->dtype != SPRY_DTYPE_F32 || info->numel != fhi - flo)
            rc = spry_errorf(SPRY_ERR_FORMAT, "%s: \"%s\" missing or not %lld f32 values (its range [%lld, %lld))",
                             path, names[i], (long long)(fhi - flo), (long long)flo, (long long)fhi);
        else if (hi > lo)
            memcpy(dst[i] + (lo - o->lo), (const float *)info->data + (lo - flo), sizeof(float) * (size_t)(hi - lo));
    }
    const char *os = spry_safetensors_meta(st, "optimizer_step");
    if (!rc && !os) rc = spry_errorf(SPRY_ERR_FORMAT, "%s: metadata \"optimizer_step\" missing", path);
    if (!rc) o->step = strtoll(os, NULL, 10);
    spry_safetensors_close(st);
    if (!rc && hi > lo) *got += hi - lo;
    return rc;
}

// Reads this rank's optimizer partition from the files listed in trainer_state.json (written at
// any world size and stage); a checkpoint without the list has one file for everything.
static spry_status load_optimizer(spry_trainer *tr, const char *dir, const cJSON *state) {
    char        path[1600], state_path[1600];
    int64_t     n = tr->model->params.n_elem, got = 0, want = tr->optim->hi - tr->optim->lo;
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(state, "optimizer_files");
    snprintf(state_path, sizeof state_path, "%s/trainer_state.json", dir);
    if (!files) {
        snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
        SPRY_TRY(load_optimizer_piece(tr, path, 0, n, &got));
    } else {
        if (!cJSON_IsArray(files))
            return spry_errorf(SPRY_ERR_FORMAT, "%s: \"optimizer_files\" is not an array", state_path);
        int64_t covered = 0;
        for (const cJSON *f = files->child; f; f = f->next) {
            const cJSON *file = cJSON_GetObjectItemCaseSensitive(f, "file");
            int64_t      lo = -1, hi = -1;
            SPRY_TRY(json_i64(state_path, f, "lo", &lo));
            SPRY_TRY(json_i64(state_path, f, "hi", &hi));
            if (!cJSON_IsString(file) || strchr(file->valuestring, '/') || lo != covered || hi < lo || hi > n)
                return spry_errorf(SPRY_ERR_FORMAT, "%s: optimizer_files: bad entry (file, range [%lld, %lld) after %lld "
                                   "of %lld elements)", state_path, (long long)lo, (long long)hi, (long long)covered,
                                   (long long)n);
            covered = hi;
            if (hi <= tr->optim->lo || lo >= tr->optim->hi) continue;
            snprintf(path, sizeof path, "%s/%s", dir, file->valuestring);
            SPRY_TRY(load_optimizer_piece(tr, path, lo, hi, &got));
        }
        if (covered != n)
            return spry_errorf(SPRY_ERR_FORMAT, "%s: optimizer_files cover %lld of the model's %lld parameters",
                               state_path, (long long)covered, (long long)n);
    }
    if (got != want)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: optimizer state for %lld of this rank's %lld elements", dir,
                           (long long)got, (long long)want);
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
    char *text = malloc(1 << 16);
    if (!text) return spry_errorf(SPRY_ERR_NOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    spry_status rc = read_small(path, text, 1 << 16);
    cJSON *j = rc ? NULL : cJSON_Parse(text);
    free(text);
    if (!rc && !j) rc = spry_errorf(SPRY_ERR_FORMAT, "%s: not valid JSON", path);
    int64_t rng_counter = 0, seed = 0, lsi = 0, lso = 0, ds = 0;
    if (!rc) rc = json_i64(path, j, "step", &tr->step);
    if (!rc) rc = json_i64(path, j, "samples", &tr->samples);
    if (!rc) rc = json_i64(path, j, "tokens", &tr->n_tokens);
    tr->eff_tokens = tr->n_tokens; // checkpoints before the counter existed
    if (!rc && cJSON_GetObjectItemCaseSensitive(j, "eff_tokens")) rc = json_i64(path, j, "eff_tokens", &tr->eff_tokens);
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
        const cJSON *tsj = cJSON_GetObjectItemCaseSensitive(j, "technique_state");
        for (int t = 0; !rc && t < tr->n_tech; t++) {
            const cJSON *a = tsj ? cJSON_GetObjectItemCaseSensitive(tsj, tr->tech[t]->name) : NULL;
            if (!a || !tr->tech[t]->set_state) continue;
            int64_t ts[SPRY_TECHNIQUE_MAX_STATE];
            int     nts = 0;
            for (const cJSON *it = a->child; it && nts < SPRY_TECHNIQUE_MAX_STATE; it = it->next)
                ts[nts++] = (int64_t)it->valuedouble;
            rc = tr->tech[t]->set_state(tr->tech_state[t], ts, nts);
        }
    }
    if (!rc) rc = load_optimizer(tr, dir, j);
    cJSON_Delete(j);
    if (!rc && !tr->p.tokenizer) { // keep carrying the tokenizer the checkpoint was saved with
        snprintf(tr->tok_path, sizeof tr->tok_path, "%s/tokenizer.json", dir);
        FILE *f = fopen(tr->tok_path, "rb");
        if (f) fclose(f), tr->p.tokenizer = tr->tok_path;
    }
    if (!rc) SPRY_LOG_INFO("resumed from %s at step %lld", dir, (long long)tr->step);
    return rc;
}
