/*
 * cmd_train.c -- `spry train`: train a GPT-2 or BLOOM model on a prepared (.bin/.idx) dataset
 * with a DeepSpeed JSON config; checkpoints, --resume, metrics, progress.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "spry/cpu.h"
#include "spry/ds_config.h"
#include "spry/gemm.h"
#include "spry/loader.h"
#include "spry/log.h"
#include "spry/hf_checkpoint.h"
#include "spry/trainer.h"

// Used when --config is not given: AdamW, warmup + cosine decay, clipping, bf16 off.
static const char k_default_config[] =
    "{\"train_micro_batch_size_per_gpu\": 8, \"gradient_accumulation_steps\": 1,"
    " \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 1e-3, \"betas\": [0.9, 0.95], \"weight_decay\": 0.1}},"
    " \"scheduler\": {\"type\": \"WarmupCosineLR\", \"params\": {\"total_num_steps\": %lld, \"warmup_num_steps\": %lld,"
    "   \"warmup_type\": \"linear\", \"cos_min_ratio\": 0.1}},"
    " \"gradient_clipping\": 1.0, \"steps_per_print\": 50}";

static void train_usage(FILE *f) {
    fprintf(f,
            "usage: spry train --data PREFIX [options]\n"
            "  --data PREFIX         tokenized dataset (<PREFIX>.bin/.idx from spry prepare) (required)\n"
            "  --config FILE         DeepSpeed JSON config (built-in: micro batch 8, AdamW lr 1e-3,\n"
            "                        betas 0.9/0.95, wd 0.1, WarmupCosineLR, clipping 1.0)\n"
            "  --out DIR             checkpoints and metrics (runs/train)\n"
            "  --steps N             optimizer steps (1000)\n"
            "  --save-every N        checkpoint every N steps, 0 = only at the end (0)\n"
            "  --resume              continue from DIR/latest\n"
            "  --init DIR            start from a model directory (config.json + model.safetensors)\n"
            "  --model-config FILE   Hugging Face config.json for a new model (else the size options)\n"
            "  --arch NAME           gpt2 or bloom for a new model (gpt2)\n"
            "  --layers N            layers (4)\n"
            "  --embd N              width (256)\n"
            "  --heads N             heads (4)\n"
            "  --vocab N             vocabulary size (from --tokenizer, else 50257)\n"
            "  --seq N               sequence length (128)\n"
            "  --tokenizer FILE      tokenizer.json copied into checkpoints (none)\n"
            "  --split S             train/valid/test split of documents (969,30,1)\n"
            "  --eod N               token appended after each document, -1 = none (-1)\n"
            "  --threads N           threads, 0 = all cores (0)\n"
            "  --progress auto|line|log  progress display (auto)\n");
}

typedef struct loader_src {
    spry_loader *l;
} loader_src;

static spry_status src_next(void *self, int32_t *tokens, int64_t B, int64_t T1) {
    (void)B, (void)T1;
    return spry_loader_next(((loader_src *)self)->l, tokens);
}
static int src_get(void *self, int64_t st[8]) {
    spry_loader_pos p = spry_loader_state(((loader_src *)self)->l);
    st[0] = p.epoch, st[1] = p.index;
    return 2;
}
static spry_status src_set(void *self, const int64_t *st, int n) {
    if (n != 2) return spry_errorf(SPRY_ERR_FORMAT, "checkpoint: data_state must hold 2 values, has %d", n);
    return spry_loader_set_state(((loader_src *)self)->l, (spry_loader_pos){.epoch = st[0], .index = st[1]});
}

static int parse_i64(const char *opt, const char *v, int64_t lo, int64_t *out) {
    char *end;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || *end || x < lo) {
        fprintf(stderr, "spry train: %s must be an integer >= %lld, got '%s'\n", opt, (long long)lo, v ? v : "");
        return 2;
    }
    *out = x;
    return 0;
}

int spry_cmd_train(int argc, char **argv) {
    const char *data = NULL, *config = NULL, *out = "runs/train", *init = NULL, *model_cfg = NULL;
    const char *arch = "gpt2", *tokenizer = NULL, *split = "969,30,1", *progress = "auto";
    int64_t steps = 1000, save_every = 0, layers = 4, embd = 256, heads = 4, vocab = 0, seq = 128;
    int64_t eod = -1, threads = 0;
    bool    resume = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            train_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--resume")) {
            resume = true;
            continue;
        }
        const char **sv = !strcmp(a, "--data") ? &data : !strcmp(a, "--config") ? &config : !strcmp(a, "--out") ? &out
                        : !strcmp(a, "--init") ? &init : !strcmp(a, "--model-config") ? &model_cfg
                        : !strcmp(a, "--arch") ? &arch : !strcmp(a, "--tokenizer") ? &tokenizer
                        : !strcmp(a, "--split") ? &split : !strcmp(a, "--progress") ? &progress : NULL;
        int64_t *iv = !strcmp(a, "--steps") ? &steps : !strcmp(a, "--save-every") ? &save_every
                    : !strcmp(a, "--layers") ? &layers : !strcmp(a, "--embd") ? &embd : !strcmp(a, "--heads") ? &heads
                    : !strcmp(a, "--vocab") ? &vocab : !strcmp(a, "--seq") ? &seq : !strcmp(a, "--eod") ? &eod
                    : !strcmp(a, "--threads") ? &threads : NULL;
        if (sv) {
            if (!v) {
                fprintf(stderr, "spry train: %s needs a value\n", a);
                return 2;
            }
            *sv = v;
        } else if (iv) {
            rc = parse_i64(a, v, iv == &eod ? -1 : iv == &save_every || iv == &threads || iv == &vocab ? 0 : 1, iv);
        } else {
            fprintf(stderr, "spry train: unknown option '%s'\n", a);
            train_usage(stderr);
            return 2;
        }
        if (rc) return rc;
        i++;
    }
    if (!data) {
        fprintf(stderr, "spry train: --data PREFIX is required (make one with spry prepare)\n");
        return 2;
    }
    if (strcmp(progress, "auto") && strcmp(progress, "line") && strcmp(progress, "log")) {
        fprintf(stderr, "spry train: --progress must be auto, line or log, got '%s'\n", progress);
        return 2;
    }
    if (strcmp(arch, "gpt2") && strcmp(arch, "bloom")) {
        fprintf(stderr, "spry train: --arch must be gpt2 or bloom, got '%s'\n", arch);
        return 2;
    }
    // the DeepSpeed config
    spry_ds_config cfg;
    spry_status    st;
    if (config) {
        st = spry_ds_config_load(config, 1, &cfg);
    } else {
        char text[1024];
        snprintf(text, sizeof text, k_default_config, (long long)steps, (long long)(steps / 20 > 1 ? steps / 20 : 2));
        st = spry_ds_config_parse(text, "built-in config", 1, &cfg);
    }
    if (st) {
        fprintf(stderr, "spry train: %s\n", spry_last_error());
        return st == SPRY_ERR_IO ? 1 : 2;
    }
    // the model
    spry_model *m = NULL;
    if (init) {
        st = spry_model_load_dir(init, &m);
    } else {
        spry_model_config mc;
        if (model_cfg) {
            st = spry_model_config_load(model_cfg, &mc);
        } else {
            mc = spry_model_config_gpt2(vocab ? vocab : 50257, seq, embd, layers, heads);
            if (!strcmp(arch, "bloom")) mc.arch = SPRY_ARCH_BLOOM, mc.n_positions = 0;
            st = spry_model_config_validate(&mc);
        }
        if (!st) st = spry_model_init(&mc, &m);
        if (!st) spry_model_init_weights(m, cfg.seed);
    }
    if (st) {
        fprintf(stderr, "spry train: %s\n", spry_last_error());
        spry_ds_config_free(&cfg);
        return st == SPRY_ERR_IO ? 1 : 2;
    }
    // the data
    spry_loader_params lp = spry_loader_params_default();
    lp.prefix = data, lp.split = split, lp.seq_len = seq, lp.batch_size = cfg.micro_batch;
    lp.seed = cfg.seed, lp.eod_id = eod;
    loader_src ls = {0};
    st            = spry_loader_init(&lp, &ls.l);
    if (st) {
        fprintf(stderr, "spry train: %s\n", spry_last_error());
        spry_model_free(m);
        spry_ds_config_free(&cfg);
        return 1;
    }
    spry_trainer_params tp = spry_trainer_params_default();
    tp.out_dir = out, tp.n_steps = steps, tp.seq_len = seq, tp.save_every = save_every;
    tp.n_threads = (int)threads, tp.tokenizer = tokenizer;
    tp.progress = !strcmp(progress, "auto") ? -1 : !strcmp(progress, "line");
    spry_batch_source src = {.self = &ls, .next = src_next, .get_state = src_get, .set_state = src_set};
    spry_trainer     *tr  = NULL;
    st = spry_trainer_init(m, &cfg, src, &tp, &tr);
    if (!st && resume) st = spry_trainer_resume(tr, NULL);
    if (!st) {
        printf("spry train: %s %lld layers, width %lld, %lld heads, %lld parameters; seq %lld, batch %lld x %lld; "
               "%lld samples/epoch; %s; cpu %s, gemm %s\n",
               m->cfg.arch == SPRY_ARCH_GPT2 ? "GPT-2" : "BLOOM", (long long)m->cfg.n_layer, (long long)m->cfg.n_embd,
               (long long)m->cfg.n_head, (long long)m->params.n_elem, (long long)seq, (long long)cfg.micro_batch,
               (long long)cfg.grad_accum, (long long)spry_loader_n_samples(ls.l),
               cfg.bf16 ? "bf16" : cfg.fp16 ? "fp16" : "fp32", spry_cpu_summary(), spry_gemm_backend());
        fflush(stdout);
        st = spry_trainer_run(tr);
    }
    if (st) fprintf(stderr, "spry train: %s\n", spry_last_error());
    else printf("spry train: done at step %lld; checkpoint in %s/latest, metrics in %s/metrics.jsonl\n",
                (long long)spry_trainer_step_index(tr), out, out);
    spry_trainer_free(tr);
    spry_loader_free(ls.l);
    spry_model_free(m);
    spry_ds_config_free(&cfg);
    return st ? 1 : 0;
}
