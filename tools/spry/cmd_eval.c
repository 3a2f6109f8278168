/*
 * cmd_eval.c -- `spry eval`: validation loss and perplexity of a model directory on a split of a
 * prepared dataset (every sample of the split once, in order, no shuffle).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "spry/loader.h"
#include "spry/hf_checkpoint.h"
#include "spry/model.h"

static void eval_usage(FILE *f) {
    fprintf(f, "usage: spry eval --model DIR --data PREFIX [options]\n"
               "  --model DIR       model directory (config.json + model.safetensors, e.g. runs/train/step_1000)\n"
               "  --data PREFIX     tokenized dataset (<PREFIX>.bin/.idx)\n"
               "  --split S         train/valid/test split of documents (969,30,1)\n"
               "  --which NAME      train, valid or test (valid)\n"
               "  --seq N           sequence length (128)\n"
               "  --batch N         sequences per forward (8)\n"
               "  --max-batches N   stop after N batches, 0 = the whole split (0)\n"
               "  --eod N           token appended after each document, -1 = none (-1)\n"
               "  --threads N       threads, 0 = all cores (0)\n");
}

int spry_cmd_eval(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *split = "969,30,1", *which = "valid";
    long long   seq = 128, batch = 8, max_batches = 0, eod = -1, threads = 0;
    for (int i = 1; i < argc; i += 2) { // every option takes a value
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            eval_usage(stdout);
            return 0;
        }
        const char **sv = !strcmp(a, "--model") ? &model : !strcmp(a, "--data") ? &data
                        : !strcmp(a, "--split") ? &split : !strcmp(a, "--which") ? &which : NULL;
        long long *iv = !strcmp(a, "--seq") ? &seq : !strcmp(a, "--batch") ? &batch
                      : !strcmp(a, "--max-batches") ? &max_batches : !strcmp(a, "--eod") ? &eod
                      : !strcmp(a, "--threads") ? &threads : NULL;
        if ((!sv && !iv) || !v) {
            fprintf(stderr, "spry eval: unknown or incomplete option '%s'\n", a);
            eval_usage(stderr);
            return 2;
        }
        if (sv) *sv = v;
        else {
            char *end;
            *iv = strtoll(v, &end, 10);
            long long lo = iv == &eod ? -1 : iv == &max_batches || iv == &threads ? 0 : 1;
            if (*end || *iv < lo) {
                fprintf(stderr, "spry eval: %s must be an integer >= %lld, got '%s'\n", a, lo, v);
                return 2;
            }
        }
    }
    if (!model || !data) {
        fprintf(stderr, "spry eval: --model DIR and --data PREFIX are required\n");
        return 2;
    }
    spry_loader_split w = !strcmp(which, "train") ? SPRY_LOADER_SPLIT_TRAIN : !strcmp(which, "valid") ? SPRY_LOADER_SPLIT_VALID
                        : !strcmp(which, "test") ? SPRY_LOADER_SPLIT_TEST : (spry_loader_split)-1;
    if ((int)w < 0) {
        fprintf(stderr, "spry eval: --which must be train, valid or test, got '%s'\n", which);
        return 2;
    }
    spry_model *m;
    if (spry_model_load_dir(model, &m)) {
        fprintf(stderr, "spry eval: %s\n", spry_last_error());
        return 1;
    }
    spry_loader_params lp = spry_loader_params_default();
    lp.prefix = data, lp.split = split, lp.which = w, lp.seq_len = seq, lp.batch_size = batch;
    lp.eod_id = eod, lp.shuffle = false;
    if (m->cfg.arch == SPRY_ARCH_BERT) lp.pad_id = m->cfg.pad_token_id, lp.eod_id = -1; // padded documents
    spry_loader *l;
    if (spry_loader_init(&lp, &l)) {
        fprintf(stderr, "spry eval: %s\n", spry_last_error());
        spry_model_free(m);
        return 1;
    }
    int64_t   n_batches = spry_loader_n_samples(l) / batch;
    if (max_batches > 0 && max_batches < n_batches) n_batches = max_batches;
    spry_ctx *ctx = spry_ctx_init((size_t)64 << 20, (int)threads);
    spry_ctx_set_grad(ctx, false);
    int32_t    *tok = malloc(sizeof(int32_t) * (size_t)(batch * (seq + 1)));
    spry_tensor tokens = {0};
    spry_tensor_set_shape(&tokens, SPRY_DTYPE_I32, 2, (int64_t[]){batch, seq + 1});
    tokens.data = tok;
    double sum = 0;
    int    rc  = 0;
    for (int64_t b = 0; b < n_batches && !rc; b++) {
        if (spry_loader_next(l, tok)) {
            fprintf(stderr, "spry eval: %s\n", spry_last_error());
            rc = 1;
            break;
        }
        for (int64_t i = 0; i < batch * (seq + 1); i++)
            if (tok[i] < 0 || tok[i] >= m->cfg.vocab_size) {
                fprintf(stderr, "spry eval: %s: token id %d out of range for the model's vocab_size %lld\n",
                        data, tok[i], (long long)m->cfg.vocab_size);
                rc = 1;
                break;
            }
        if (rc) break;
        spry_ctx_begin(ctx);
        ctx->seed = 1234, ctx->rng_counter = (uint64_t)b; // BERT: the same masks in every evaluation
        spry_tensor *loss = spry_model_loss(m, ctx, &tokens);
        if (spry_ctx_status(ctx)) {
            fprintf(stderr, "spry eval: %s\n", spry_last_error());
            rc = 1;
            break;
        }
        sum += ((float *)loss->data)[0];
    }
    if (!rc && n_batches == 0) {
        fprintf(stderr, "spry eval: the %s split has fewer than %lld samples of %lld tokens\n", which, batch, seq + 1);
        rc = 1;
    }
    if (!rc) {
        double mean = sum / (double)n_batches;
        printf("{\"split\": \"%s\", \"batches\": %lld, \"tokens\": %lld, \"loss\": %.6f, \"perplexity\": %.4f}\n",
               which, (long long)n_batches, (long long)(n_batches * batch * seq), mean, exp(mean));
    }
    free(tok);
    spry_ctx_free(ctx);
    spry_loader_free(l);
    spry_model_free(m);
    return rc;
}
