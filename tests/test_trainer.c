// ctest-label: unit
/*
 * test_trainer.c -- the training loop: resume is exact (40 steps == 20 + resume + 20, bit for
 * bit, also under dropout and gradient accumulation), hooks run in order, gradient accumulation
 * matches one big micro-batch, fp16 dynamic loss scaling skips overflowing steps and recovers,
 * the learning rate follows the schedule with DeepSpeed's timing, CSV/JSON metrics are written,
 * and a process killed with SIGKILL while saving leaves a loadable checkpoint.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "spry/log.h"
#include "spry/rng.h"
#include "spry/trainer.h"

/* ---- a deterministic batch source: token i of the stream is Philox(7, 0, i) mod V ------------ */
typedef struct synth {
    int64_t pos, vocab;
} synth;

static spry_status synth_next(void *self, int32_t *tokens, int64_t B, int64_t T1) {
    synth *s = self;
    for (int64_t i = 0; i < B * T1; i++) {
        // a learnable pattern: mostly (previous + 1) mod V, sometimes random
        uint64_t k = (uint64_t)(s->pos + i);
        tokens[i]  = spry_rng_uniform(7, 0, k) < 0.8f ? (int32_t)(k % (uint64_t)s->vocab)
                                                      : (int32_t)(spry_rng_uniform(7, 1, k) * (float)s->vocab);
    }
    s->pos += B * T1;
    return SPRY_OK;
}
static int synth_get(void *self, int64_t st[8]) {
    st[0] = ((synth *)self)->pos;
    return 1;
}
static spry_status synth_set(void *self, const int64_t *st, int n) {
    if (n != 1) return spry_errorf(SPRY_ERR_FORMAT, "bad data state");
    ((synth *)self)->pos = st[0];
    return SPRY_OK;
}

static char g_dir[256];

static spry_model *tiny_model(float dropout) {
    spry_model_config mc = spry_model_config_gpt2(37, 16, 24, 2, 3);
    mc.dropout           = dropout;
    spry_model *m;
    CHECK(spry_model_init(&mc, &m) == SPRY_OK);
    spry_model_init_weights(m, 5);
    return m;
}

static const char *k_cfg =
    "{\"train_micro_batch_size_per_gpu\": 2, \"gradient_accumulation_steps\": %d,"
    " \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 3e-3, \"weight_decay\": 0.1}},"
    " \"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": {\"warmup_num_steps\": 5, \"total_num_steps\": 40}},"
    " \"gradient_clipping\": 1.0, \"steps_per_print\": 1000, %s"
    " \"csv_monitor\": {\"enabled\": true, \"output_path\": \"%s\", \"job_name\": \"job\"}}";

static spry_ds_config make_cfg(int accum, const char *extra, const char *out) {
    char json[2048];
    snprintf(json, sizeof json, k_cfg, accum, extra, out);
    spry_ds_config c;
    CHECK_MSG(spry_ds_config_parse(json, "test", 1, &c) == SPRY_OK, "%s", spry_last_error());
    return c;
}

// Runs steps [from, to) of a fresh trainer in out (resuming when from > 0); losses into l[].
static void run(const char *out, int from, int to, float dropout, int accum, float *l) {
    spry_model    *m   = tiny_model(dropout);
    spry_ds_config cfg = make_cfg(accum, "", out);
    synth          s   = {.vocab = 37};
    spry_batch_source src = {.self = &s, .next = synth_next, .get_state = synth_get, .set_state = synth_set};
    spry_trainer_params p = spry_trainer_params_default();
    p.out_dir = out, p.n_steps = 40, p.seq_len = 8, p.n_threads = 2, p.progress = 0;
    spry_trainer *tr;
    CHECK(spry_trainer_init(m, &cfg, src, &p, &tr) == SPRY_OK);
    if (from > 0) CHECK_MSG(spry_trainer_resume(tr, NULL) == SPRY_OK, "%s", spry_last_error());
    CHECK(spry_trainer_step_index(tr) == from);
    for (int k = from; k < to; k++) {
        bool skipped;
        CHECK(spry_trainer_step(tr, &l[k], &skipped) == SPRY_OK && !skipped);
    }
    if (to < 40) CHECK(spry_trainer_save(tr) == SPRY_OK);
    spry_trainer_free(tr);
    spry_ds_config_free(&cfg);
    spry_model_free(m);
}

static void test_resume_exact(float dropout, int accum) {
    char a[300], b[300];
    snprintf(a, sizeof a, "%s/full_%g_%d", g_dir, (double)dropout, accum);
    snprintf(b, sizeof b, "%s/split_%g_%d", g_dir, (double)dropout, accum);
    float la[40], lb[40];
    run(a, 0, 40, dropout, accum, la);
    run(b, 0, 20, dropout, accum, lb);
    run(b, 20, 40, dropout, accum, lb);
    CHECK_MSG(!memcmp(la, lb, sizeof la), "dropout %g accum %d: resumed losses differ (step 20: %.9g vs %.9g)",
              (double)dropout, accum, (double)la[20], (double)lb[20]);
    CHECK_MSG(la[39] < la[0] - 0.2f, "loss did not fall: %.4f -> %.4f", (double)la[0], (double)la[39]);
}

/* ---- hooks -------------------------------------------------------------------------------- */
typedef struct rec {
    char log[256];
    int  n_loss;
} rec;
static void h_batch(void *st, spry_trainer *tr, spry_batch *b) {
    (void)tr, (void)b;
    strcat(((rec *)st)->log, "b");
}
static void h_fwd(void *st, spry_trainer *tr, spry_fwd_opts *f) {
    (void)tr, (void)f;
    strcat(((rec *)st)->log, "f");
}
static void h_loss(void *st, spry_trainer *tr, spry_loss_terms *t) {
    rec *r = st;
    strcat(r->log, "l");
    // an extra term: 0.5 * the task loss again (so the total is 1.5x the task loss)
    t->t[t->n] = t->t[0], t->weight[t->n] = 0.5f, t->name[t->n] = "extra", t->n++;
    r->n_loss++;
    (void)tr;
}
static void h_end(void *st, spry_trainer *tr) {
    (void)tr;
    strcat(((rec *)st)->log, "e");
}
static const spry_technique_vt k_rec_vt = {.name = "recorder", .on_batch = h_batch, .on_forward = h_fwd,
                                           .on_loss = h_loss, .on_step_end = h_end};

static void test_hooks(void) {
    char out[300];
    snprintf(out, sizeof out, "%s/hooks", g_dir);
    spry_model    *m   = tiny_model(0);
    spry_ds_config cfg = make_cfg(2, "", out);
    cfg.optim.lr = 0, cfg.sched.kind = SPRY_LR_CONSTANT, cfg.sched.base_lr = 0;
    cfg.gradient_clipping = 0; // clipping would hide the 1.5x
    synth s = {.vocab = 37};
    spry_batch_source   src = {.self = &s, .next = synth_next};
    spry_trainer_params p   = spry_trainer_params_default();
    p.out_dir = out, p.seq_len = 8, p.progress = 0;
    spry_trainer *tr;
    CHECK(spry_trainer_init(m, &cfg, src, &p, &tr) == SPRY_OK);
    rec r = {{0}, 0};
    CHECK(spry_trainer_add_technique(tr, &k_rec_vt, &r) == SPRY_OK);
    float loss;
    bool  sk;
    CHECK(spry_trainer_step(tr, &loss, &sk) == SPRY_OK);
    CHECK_MSG(!strcmp(r.log, "bflbfle"), "hook order %s", r.log);
    // the extra loss term doubled+half: gradient of wte equals 1.5x the plain one
    float g15 = m->params.grads[0];
    spry_trainer_free(tr);
    spry_trainer *tr2;
    s.pos = 0;
    CHECK(spry_trainer_init(m, &cfg, src, &p, &tr2) == SPRY_OK);
    CHECK(spry_trainer_step(tr2, &loss, &sk) == SPRY_OK);
    float g10 = m->params.grads[0];
    CHECK_MSG(fabsf(g15 - 1.5f * g10) <= 1e-6f * fabsf(g10) + 1e-12f, "loss terms: %g vs 1.5 * %g", (double)g15, (double)g10);
    spry_trainer_free(tr2);
    spry_ds_config_free(&cfg);
    spry_model_free(m);
}

/* ---- gradient accumulation: 2 x 2 == 1 x 4 ------------------------------------------------- */
static void test_accumulation(void) {
    char out[300];
    snprintf(out, sizeof out, "%s/accum", g_dir);
    float grads[2][64];
    for (int v = 0; v < 2; v++) {
        spry_model *m = tiny_model(0);
        char        json[512];
        snprintf(json, sizeof json, "{\"train_batch_size\": 4, \"train_micro_batch_size_per_gpu\": %d}", v ? 4 : 2);
        spry_ds_config cfg;
        CHECK(spry_ds_config_parse(json, "t", 1, &cfg) == SPRY_OK);
        cfg.optim.lr = 0, cfg.sched.base_lr = 0;
        synth               s   = {.vocab = 37};
        spry_batch_source   src = {.self = &s, .next = synth_next};
        spry_trainer_params p   = spry_trainer_params_default();
        p.out_dir = out, p.seq_len = 7, p.progress = 0;
        spry_trainer *tr;
        CHECK(spry_trainer_init(m, &cfg, src, &p, &tr) == SPRY_OK);
        float loss;
        bool  sk;
        CHECK(spry_trainer_step(tr, &loss, &sk) == SPRY_OK);
        memcpy(grads[v], m->params.grads, sizeof grads[v]);
        spry_trainer_free(tr);
        spry_ds_config_free(&cfg);
        spry_model_free(m);
    }
    for (int i = 0; i < 64; i++)
        CHECK_MSG(fabsf(grads[0][i] - grads[1][i]) <= 1e-5f * (fabsf(grads[1][i]) + 1e-3f),
                  "accumulated grad %d: %g vs %g", i, (double)grads[0][i], (double)grads[1][i]);
}

/* ---- fp16 dynamic loss scaling ------------------------------------------------------------ */
static void test_fp16(void) {
    char out[300];
    snprintf(out, sizeof out, "%s/fp16", g_dir);
    spry_model    *m   = tiny_model(0);
    spry_ds_config cfg = make_cfg(1, "\"fp16\": {\"enabled\": true, \"initial_scale_power\": 32, \"hysteresis\": 1,"
                                     " \"loss_scale_window\": 4},", out);
    synth               s   = {.vocab = 37};
    spry_batch_source   src = {.self = &s, .next = synth_next};
    spry_trainer_params p   = spry_trainer_params_default();
    p.out_dir = out, p.seq_len = 8, p.progress = 0;
    spry_trainer *tr;
    CHECK(spry_trainer_init(m, &cfg, src, &p, &tr) == SPRY_OK);
    int   skipped = 0, clean = 0;
    float first = 0, last = 0;
    for (int k = 0; k < 40; k++) {
        float loss;
        bool  sk;
        CHECK(spry_trainer_step(tr, &loss, &sk) == SPRY_OK);
        skipped += sk, clean += !sk;
        if (k == 0) first = loss;
        last = loss;
    }
    CHECK_MSG(skipped > 0 && clean > 20, "fp16: %d skipped, %d clean", skipped, clean);
    CHECK_MSG(isfinite(last) && last < first, "fp16 loss %g -> %g", (double)first, (double)last);
    spry_trainer_free(tr);
    spry_ds_config_free(&cfg);
    spry_model_free(m);
}

/* ---- metrics files ------------------------------------------------------------------------ */
static void test_metrics_files(void) {
    char out[300], path[400], line[512];
    snprintf(out, sizeof out, "%s/metrics", g_dir);
    spry_model    *m   = tiny_model(0);
    spry_ds_config cfg = make_cfg(1, "", out);
    synth               s   = {.vocab = 37};
    spry_batch_source   src = {.self = &s, .next = synth_next, .get_state = synth_get, .set_state = synth_set};
    spry_trainer_params p   = spry_trainer_params_default();
    p.out_dir = out, p.n_steps = 3, p.seq_len = 8, p.progress = 0;
    spry_trainer *tr;
    CHECK(spry_trainer_init(m, &cfg, src, &p, &tr) == SPRY_OK);
    CHECK(spry_trainer_run(tr) == SPRY_OK);
    spry_trainer_free(tr);
    spry_ds_config_free(&cfg);
    spry_model_free(m);
    snprintf(path, sizeof path, "%s/job/Train_Samples_train_loss.csv", out);
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "missing %s", path);
    if (f) {
        CHECK(fgets(line, sizeof line, f) && !strcmp(line, "step,train_loss\n"));
        CHECK(fgets(line, sizeof line, f) && !strncmp(line, "2,", 2)); // step = samples seen
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/job/Train_Samples_lr.csv", out);
    f = fopen(path, "r");
    CHECK(f != NULL);
    if (f) fclose(f);
    snprintf(path, sizeof path, "%s/metrics.jsonl", out);
    f = fopen(path, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f)) n += strstr(line, "\"loss\"") != NULL;
    if (f) fclose(f);
    CHECK_MSG(n == 3, "metrics.jsonl has %d lines", n);
    snprintf(path, sizeof path, "%s/latest", out);
    f = fopen(path, "r");
    CHECK(f && fgets(line, sizeof line, f) && !strcmp(line, "step_3\n"));
    if (f) fclose(f);
}

/* ---- SIGKILL while saving ----------------------------------------------------------------- */
static void test_kill_during_save(void) {
    char out[300];
    snprintf(out, sizeof out, "%s/kill", g_dir);
    float l[40];
    run(out, 0, 2, 0, 1, l); // a first checkpoint exists
    for (int trial = 0; trial < 6; trial++) {
        pid_t pid = fork();
        if (pid == 0) { // child: save over and over until killed
            spry_log_set_level(SPRY_LOG_ERROR);
            spry_model    *m   = tiny_model(0);
            spry_ds_config cfg = make_cfg(1, "", out);
            synth          s   = {.vocab = 37};
            spry_batch_source   src = {.self = &s, .next = synth_next, .get_state = synth_get, .set_state = synth_set};
            spry_trainer_params p   = spry_trainer_params_default();
            p.out_dir = out, p.n_steps = 40, p.seq_len = 8, p.progress = 0;
            spry_trainer *tr;
            if (spry_trainer_init(m, &cfg, src, &p, &tr) || spry_trainer_resume(tr, NULL)) _exit(3);
            for (;;) {
                float loss;
                bool  sk;
                spry_trainer_step(tr, &loss, &sk);
                spry_trainer_save(tr);
            }
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 20000000L + 37000000L * trial};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status));
        // the latest checkpoint must load
        spry_model    *m   = tiny_model(0);
        spry_ds_config cfg = make_cfg(1, "", out);
        synth          s   = {.vocab = 37};
        spry_batch_source   src = {.self = &s, .next = synth_next, .get_state = synth_get, .set_state = synth_set};
        spry_trainer_params p   = spry_trainer_params_default();
        p.out_dir = out, p.n_steps = 40, p.seq_len = 8, p.progress = 0;
        spry_trainer *tr;
        CHECK(spry_trainer_init(m, &cfg, src, &p, &tr) == SPRY_OK);
        spry_status st = spry_trainer_resume(tr, NULL);
        CHECK_MSG(st == SPRY_OK, "trial %d: checkpoint not loadable after SIGKILL: %s", trial, spry_last_error());
        spry_trainer_free(tr);
        spry_ds_config_free(&cfg);
        spry_model_free(m);
    }
}

int main(void) {
    spry_log_set_level(SPRY_LOG_WARN);
    snprintf(g_dir, sizeof g_dir, "/tmp/spry_trainer_XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    test_resume_exact(0.0f, 1);
    test_resume_exact(0.1f, 2);
    test_hooks();
    test_accumulation();
    test_fp16();
    test_metrics_files();
    test_kill_during_save();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (!g_check_fail && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return check_exit();
}
