/*
 * cmd_train.c -- `spry train`: train a GPT-2 or BLOOM model on a prepared (.bin/.idx) dataset
 * with a DeepSpeed JSON config; checkpoints, --resume, metrics, progress. Under an MPI launcher
 * (mpirun -n N spry train ...) it trains data-parallel over the N ranks (ZeRO from the config).
 * A rank that fails during setup makes every rank stop with its message; one that fails while
 * training stops the job (MPI_Abort) so that no rank waits forever in a collective.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#if SPRY_HAVE_MPI
#include <mpi.h>
#endif
#include "spry/comm.h"
#include "spry/cpu.h"
#include "spry/ds_config.h"
#include "spry/gemm.h"
#include "spry/loader.h"
#include "spry/techniques.h"
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
            "  --train-tokens N      also stop once N effective tokens are trained on (with random-LTD\n"
            "                        and curriculum truncation, fewer than tokens read), 0 = off (0)\n"
            "  --save-every N        checkpoint every N steps, 0 = only at the end (0)\n"
            "  --resume              continue from DIR/latest\n"
            "  --init DIR            start from a model directory (config.json + model.safetensors)\n"
            "  --model-config FILE   Hugging Face config.json for a new model (else the size options)\n"
            "  --arch NAME           gpt2, bloom or bert for a new model (gpt2); bert trains a masked-LM\n"
            "                        encoder on padded documents, its vocabulary the data's plus\n"
            "                        [PAD] and [MASK]\n"
            "  --layers N            layers (4)\n"
            "  --embd N              width (256)\n"
            "  --heads N             heads (4)\n"
            "  --vocab N             vocabulary size (from --tokenizer, else 50257)\n"
            "  --seq N               sequence length (128)\n"
            "  --tokenizer FILE      tokenizer.json copied into checkpoints (none)\n"
            "  --split S             train/valid/test split of documents (969,30,1)\n"
            "  --eod N               token appended after each document, -1 = none (-1; not with bert)\n"
            "  --threads N           threads per rank, 0 = all cores (0)\n"
            "  --progress auto|line|log  progress display (auto)\n"
            "  --log-dir DIR         ranks other than 0 write their log to DIR/rank<R>.log (none:\n"
            "                        they print errors only)\n"
            "data parallel: mpirun -n N spry train ... runs N ranks; train_batch_size =\n"
            "  micro batch x gradient_accumulation_steps x N, and zero_optimization.stage 0, 1\n"
            "  or 2 in the config shards the optimizer state (1) and the gradients (2)\n");
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

// Stops every rank of the job (a rank failed mid-training, so the others may wait in a
// collective that never completes): only the command line may end the processes.
static void abort_job(void) {
    fflush(stdout), fflush(stderr);
#if SPRY_HAVE_MPI
    MPI_Abort(MPI_COMM_WORLD, 1);
#endif
}

typedef struct train_args {
    const char *data, *config, *out, *init, *model_cfg, *arch, *tokenizer, *split, *progress;
    int64_t     steps, save_every, layers, embd, heads, vocab, seq, eod, threads;
    bool        resume;
    int64_t     train_tokens;
} train_args;

// Ends a setup phase: every rank learns whether one failed. The failing rank and rank 0 print
// the message (others would only repeat it); returns the exit code (0 = go on).
static int phase(spry_comm *comm, spry_status st) {
    bool mine = st != SPRY_OK;
    st        = spry_comm_agree(comm, st, NULL);
    if (!st) return 0;
    if (mine || spry_comm_rank(comm) == 0) fprintf(stderr, "spry train: %s\n", spry_last_error());
    return st == SPRY_ERR_IO || st == SPRY_ERR_COMM ? 1 : 2;
}

static int run_train(spry_comm *comm, const train_args *A) {
    int rank = spry_comm_rank(comm), world = spry_comm_size(comm), rc;
    // the DeepSpeed config (the batch rule takes the world size)
    spry_ds_config cfg;
    spry_status    st;
    if (A->config) {
        st = spry_ds_config_load(A->config, world, &cfg);
    } else {
        char text[1024];
        snprintf(text, sizeof text, k_default_config, (long long)A->steps,
                 (long long)(A->steps / 20 > 1 ? A->steps / 20 : 2));
        st = spry_ds_config_parse(text, "built-in config", world, &cfg);
    }
    if ((rc = phase(comm, st))) {
        if (!st) spry_ds_config_free(&cfg);
        return rc;
    }
    // the model
    spry_model *m = NULL;
    if (A->init) {
        st = spry_model_load_dir(A->init, &m);
    } else {
        spry_model_config mc;
        if (A->model_cfg) {
            st = spry_model_config_load(A->model_cfg, &mc);
        } else {
            int64_t V = A->vocab ? A->vocab : 50257;
            mc        = spry_model_config_gpt2(V, A->seq, A->embd, A->layers, A->heads);
            if (!strcmp(A->arch, "bloom")) mc.arch = SPRY_ARCH_BLOOM, mc.n_positions = 0;
            if (!strcmp(A->arch, "bert")) { // the data's ids, then [PAD] and [MASK]
                mc              = spry_model_config_bert(V + 2, A->seq, A->embd, A->layers, A->heads);
                mc.pad_token_id = V, mc.mask_token_id = V + 1;
            }
            st = spry_model_config_validate(&mc);
        }
        if (!st) st = spry_model_init(&mc, &m);
        if (!st) spry_model_init_weights(m, cfg.seed);
    }
    if ((rc = phase(comm, st))) {
        spry_model_free(m);
        spry_ds_config_free(&cfg);
        return rc;
    }
    // the data: every rank reads the global micro-batch (micro x world rows) and keeps its rows
    spry_loader_params lp = spry_loader_params_default();
    lp.prefix = A->data, lp.split = A->split, lp.seq_len = A->seq, lp.batch_size = cfg.micro_batch * world;
    lp.seed = cfg.seed, lp.eod_id = A->eod;
    if (m->cfg.arch == SPRY_ARCH_BERT) lp.pad_id = m->cfg.pad_token_id; // padded documents
    loader_src ls = {0};
    st            = spry_loader_init(&lp, &ls.l);
    rc            = phase(comm, st) ? 1 : 0;
    if (!rc && world > 1)
        rc = phase(comm, spry_comm_same(comm, "the dataset (samples in the split)", spry_loader_n_samples(ls.l)));
    if (rc) {
        spry_loader_free(ls.l);
        spry_model_free(m);
        spry_ds_config_free(&cfg);
        return rc;
    }
    // the config's techniques (data efficiency: curriculum learning, random-LTD)
    spry_techniques    *tech = NULL;
    spry_techniques_env te   = {.name = A->config ? A->config : "built-in config", .loader = ls.l,
                                .n_layer = m->cfg.n_layer, .seq_len = A->seq, .world = world, .rank = rank,
                                .encoder = m->cfg.arch == SPRY_ARCH_BERT, .pad_id = m->cfg.pad_token_id};
    if ((rc = phase(comm, spry_techniques_init(&cfg, &te, &tech)))) {
        spry_loader_free(ls.l);
        spry_model_free(m);
        spry_ds_config_free(&cfg);
        return rc;
    }
    spry_techniques_adjust_schedule(tech, &cfg.sched);
    spry_trainer_params tp = spry_trainer_params_default();
    tp.out_dir = A->out, tp.n_steps = A->steps, tp.seq_len = A->seq, tp.save_every = A->save_every;
    tp.train_tokens = A->train_tokens;
    tp.n_threads = (int)A->threads, tp.tokenizer = A->tokenizer, tp.comm = comm;
    tp.progress = !strcmp(A->progress, "auto") ? -1 : !strcmp(A->progress, "line");
    spry_batch_source src = spry_techniques_source(
        tech, (spry_batch_source){.self = &ls, .next = src_next, .get_state = src_get, .set_state = src_set});
    spry_trainer *tr = NULL;
    // collective: agrees by itself (the failing rank and rank 0 print; the others would repeat it)
    st = spry_trainer_init(m, &cfg, src, &tp, &tr);
    if (!st) st = spry_techniques_attach(tech, tr);
    if (st) {
        if (world == 1 || rank == 0 || strncmp(spry_last_error(), "rank ", 5))
            fprintf(stderr, "spry train: %s\n", spry_last_error());
        rc = st == SPRY_ERR_IO ? 1 : 2;
    }
    if (!st && A->resume && (rc = phase(comm, spry_trainer_resume(tr, NULL)))) st = SPRY_ERR_ARG;
    if (!st) {
        if (rank == 0) {
            printf("spry train: %s %lld layers, width %lld, %lld heads, %lld parameters; seq %lld, batch %lld x %lld x %d; "
                   "%lld samples/epoch; %s; cpu %s, gemm %s\n",
                   m->cfg.arch == SPRY_ARCH_GPT2 ? "GPT-2" : m->cfg.arch == SPRY_ARCH_BLOOM ? "BLOOM" : "BERT",
                   (long long)m->cfg.n_layer, (long long)m->cfg.n_embd,
                   (long long)m->cfg.n_head, (long long)m->params.n_elem, (long long)A->seq, (long long)cfg.micro_batch,
                   (long long)cfg.grad_accum, world, (long long)spry_loader_n_samples(ls.l),
                   cfg.bf16 ? "bf16" : cfg.fp16 ? "fp16" : "fp32", spry_cpu_summary(), spry_gemm_backend());
            int    nstate = cfg.optim.type == SPRY_OPTIM_SGD ? 1 : 2;
            double mib    = (double)spry_trainer_optim_elems(tr) * 4.0 * nstate / (1 << 20);
            printf("spry train: %d rank%s (%s), ZeRO stage %d: optimizer state %.2f MiB per rank (%.2f MiB for the "
                   "whole model)\n", world, world > 1 ? "s" : "", spry_comm_backend(comm), cfg.zero_stage, mib,
                   (double)m->params.n_elem * 4.0 * nstate / (1 << 20));
            printf("spry train: techniques: %s\n", spry_techniques_summary(tech));
            fflush(stdout);
        }
        st = spry_trainer_run(tr);
        if (st) {
            fprintf(stderr, "spry train: %s\n", spry_last_error());
            // the other ranks may wait in a collective that will never complete: stop the job
            if (world > 1) abort_job();
            rc = 1;
        } else if (rank == 0) {
            printf("spry train: done at step %lld; checkpoint in %s/latest, metrics in %s/metrics.jsonl\n",
                   (long long)spry_trainer_step_index(tr), A->out, A->out);
        }
    }
    spry_trainer_free(tr);
    spry_techniques_free(tech);
    spry_loader_free(ls.l);
    spry_model_free(m);
    spry_ds_config_free(&cfg);
    return rc;
}

int spry_cmd_train(int argc, char **argv) {
    const char *data = NULL, *config = NULL, *out = "runs/train", *init = NULL, *model_cfg = NULL;
    const char *arch = "gpt2", *tokenizer = NULL, *split = "969,30,1", *progress = "auto", *log_dir = NULL;
    int64_t steps = 1000, save_every = 0, layers = 4, embd = 256, heads = 4, vocab = 0, seq = 128;
    int64_t eod = -1, threads = 0, train_tokens = 0;
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
                        : !strcmp(a, "--split") ? &split : !strcmp(a, "--progress") ? &progress
                        : !strcmp(a, "--log-dir") ? &log_dir : NULL;
        int64_t *iv = !strcmp(a, "--steps") ? &steps : !strcmp(a, "--save-every") ? &save_every
                    : !strcmp(a, "--layers") ? &layers : !strcmp(a, "--embd") ? &embd : !strcmp(a, "--heads") ? &heads
                    : !strcmp(a, "--vocab") ? &vocab : !strcmp(a, "--seq") ? &seq : !strcmp(a, "--eod") ? &eod
                    : !strcmp(a, "--threads") ? &threads : !strcmp(a, "--train-tokens") ? &train_tokens : NULL;
        if (sv) {
            if (!v) {
                fprintf(stderr, "spry train: %s needs a value\n", a);
                return 2;
            }
            *sv = v;
        } else if (iv) {
            rc = parse_i64(a, v, iv == &eod ? -1 : iv == &save_every || iv == &threads || iv == &vocab || iv == &train_tokens ? 0 : 1, iv);
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
    if (strcmp(arch, "gpt2") && strcmp(arch, "bloom") && strcmp(arch, "bert")) {
        fprintf(stderr, "spry train: --arch must be gpt2, bloom or bert, got '%s'\n", arch);
        return 2;
    }
    spry_comm *comm = NULL;
    spry_status st  = spry_comm_init(false, &comm);
    if (st) {
        fprintf(stderr, "spry train: %s\n", spry_last_error());
        return 1;
    }
    int rank = spry_comm_rank(comm), world = spry_comm_size(comm);
    if (world > 1 && spry_log_set_rank(rank, log_dir))
        fprintf(stderr, "spry train: rank %d: cannot write its log in %s\n", rank, log_dir);
    int rc = run_train(comm, &(train_args){data, config, out, init, model_cfg, arch, tokenizer, split, progress,
                                            steps, save_every, layers, embd, heads, vocab, seq, eod, threads, resume,
                                            train_tokens});
    spry_comm_free(comm);
    return rc;
}
