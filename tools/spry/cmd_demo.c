/*
 * cmd_demo.c -- `spry demo`: the core engine end to end on built-in text. Trains a tiny
 * byte-level GPT-2 (vocab 256) with AdamW, warmup + cosine learning rate and gradient clipping,
 * shows progress, saves it as a Hugging Face directory (config.json + model.safetensors), loads it
 * back, checks the reloaded model gives the same loss, and prints a greedy sample.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "spry/autograd.h"
#include "spry/cpu.h"
#include "spry/gemm.h"
#include "spry/hf_checkpoint.h"
#include "spry/model.h"
#include "spry/optim.h"
#include "spry/rng.h"

static const char k_text[] =
    "The river ran past the mill and under the old stone bridge, and the children of the village "
    "came down to the water every evening to watch the light fade behind the hills. The miller "
    "kept bread for them, and the baker kept honey, and the smith kept stories about the long "
    "winter when the river froze and the mill stood still. In the spring the water rose again, "
    "the wheel turned, the stones ground the grain, and the village ate well. The children grew "
    "up and some of them left along the river road, and some of them stayed to keep the mill, "
    "the bread, the honey and the stories for the children who came after them. ";

typedef struct demo_opts {
    int         steps, threads, layers, embd, heads, seq, batch;
    float       lr;
    bool        bf16;
    uint64_t    seed;
    const char *out;
} demo_opts;

static void demo_usage(FILE *f) {
    fprintf(f,
            "usage: spry demo [options]\n"
            "  --steps N     training steps (300)\n"
            "  --threads N   threads (2)\n"
            "  --layers N    transformer layers (2)\n"
            "  --embd N      width (64)\n"
            "  --heads N     attention heads (4)\n"
            "  --seq N       sequence length (64)\n"
            "  --batch N     sequences per step (8)\n"
            "  --lr X        peak learning rate (3e-3)\n"
            "  --bf16        bf16 matmuls with fp32 master weights (off)\n"
            "  --seed N      seed (1)\n"
            "  --out DIR     where the model is saved (runs/demo)\n");
}

static int parse(int argc, char **argv, demo_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            demo_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--bf16")) {
            o->bf16 = true;
            continue;
        }
        int *iv = !strcmp(a, "--steps") ? &o->steps : !strcmp(a, "--threads") ? &o->threads
                : !strcmp(a, "--layers") ? &o->layers : !strcmp(a, "--embd") ? &o->embd
                : !strcmp(a, "--heads") ? &o->heads : !strcmp(a, "--seq") ? &o->seq
                : !strcmp(a, "--batch") ? &o->batch : NULL;
        if (!v && (iv || !strcmp(a, "--lr") || !strcmp(a, "--seed") || !strcmp(a, "--out"))) {
            fprintf(stderr, "spry demo: option %s needs a value\n", a);
            return 2;
        }
        char *end = NULL;
        if (iv) {
            long x = strtol(v, &end, 10);
            if (*end || x <= 0 || x > 1000000) {
                fprintf(stderr, "spry demo: %s must be a positive integer, got '%s'\n", a, v);
                return 2;
            }
            *iv = (int)x;
        } else if (!strcmp(a, "--lr")) {
            o->lr = strtof(v, &end);
            if (*end || !(o->lr > 0)) {
                fprintf(stderr, "spry demo: --lr must be a positive number, got '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--seed")) {
            o->seed = strtoull(v, &end, 10);
            if (*end) {
                fprintf(stderr, "spry demo: --seed must be an integer, got '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--out")) {
            o->out = v;
        } else {
            fprintf(stderr, "spry demo: unknown option '%s'\n", a);
            demo_usage(stderr);
            return 2;
        }
        i++;
    }
    return -1;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// A batch of byte windows (B, T+1) at positions drawn from the counter-based RNG.
static void fill_batch(int32_t *tok, int B, int T, uint64_t seed, uint64_t step) {
    int64_t n = (int64_t)sizeof k_text - 1;
    for (int b = 0; b < B; b++) {
        int64_t start = (int64_t)(spry_rng_uniform(seed, step, (uint64_t)b) * (float)(n - T - 1));
        for (int t = 0; t <= T; t++) tok[b * (T + 1) + t] = (unsigned char)k_text[start + t];
    }
}

static float eval_loss(spry_model *m, spry_ctx *ctx, spry_tensor *tokens) {
    bool g = spry_ctx_set_grad(ctx, false);
    spry_ctx_begin(ctx);
    float l = ((float *)spry_model_loss(m, ctx, tokens)->data)[0];
    spry_ctx_set_grad(ctx, g);
    return l;
}

int spry_cmd_demo(int argc, char **argv) {
    demo_opts o = {.steps = 300, .threads = 2, .layers = 2, .embd = 64, .heads = 4, .seq = 64,
                   .batch = 8, .lr = 3e-3f, .seed = 1, .out = "runs/demo"};
    int rc = parse(argc, argv, &o);
    if (rc >= 0) return rc;
    spry_model_config cfg = spry_model_config_gpt2(256, o.seq, o.embd, o.layers, o.heads);
    spry_model       *m;
    if (spry_model_init(&cfg, &m)) {
        fprintf(stderr, "spry demo: %s\n", spry_last_error());
        return 2;
    }
    spry_model_init_weights(m, o.seed);
    spry_ctx *ctx  = spry_ctx_init((size_t)16 << 20, o.threads);
    ctx->precision = o.bf16 ? SPRY_PRECISION_BF16 : SPRY_PRECISION_F32;
    spry_optim_params op = spry_optim_params_default(SPRY_OPTIM_ADAMW);
    op.weight_decay = 0.1f;
    spry_optim *opt;
    if (!ctx || spry_optim_init(&m->params, &op, &opt)) {
        fprintf(stderr, "spry demo: out of memory\n");
        return 1;
    }
    int32_t    *tok = malloc(sizeof(int32_t) * (size_t)(o.batch * (o.seq + 1)));
    spry_tensor tokens = {0};
    spry_tensor_set_shape(&tokens, SPRY_DTYPE_I32, 2, (int64_t[]){o.batch, o.seq + 1});
    tokens.data = tok;
    printf("spry demo: GPT-2 %d layers, width %d, %d heads, %lld parameters, %s, %d threads\n"
           "spry demo: cpu: %s; gemm: %s\n",
           o.layers, o.embd, o.heads, (long long)m->params.n_elem, o.bf16 ? "bf16" : "fp32", o.threads,
           spry_cpu_summary(), spry_gemm_backend());
    bool   tty = isatty(fileno(stderr));
    double t0 = now();
    int    warm = o.steps / 10 > 0 ? o.steps / 10 : 1;
    float  loss = 0;
    for (int s = 0; s < o.steps; s++) {
        fill_batch(tok, o.batch, o.seq, o.seed, (uint64_t)s);
        spry_ctx_begin(ctx);
        spry_params_zero_grad(&m->params);
        spry_tensor *l = spry_model_loss(m, ctx, &tokens);
        spry_backward(ctx, l);
        if (spry_ctx_status(ctx)) {
            fprintf(stderr, "\nspry demo: %s\n", spry_last_error());
            return 1;
        }
        float gn = spry_clip_grad_norm(&m->params, 1.0f);
        float lr = s < warm ? o.lr * (float)(s + 1) / (float)warm
                            : o.lr * 0.5f * (1.0f + cosf(3.14159265f * (float)(s - warm) / (float)(o.steps - warm)));
        spry_optim_step(opt, lr);
        loss = ((float *)l->data)[0];
        double el = now() - t0, tps = (double)(s + 1) * o.batch * o.seq / el;
        double eta = el / (s + 1) * (o.steps - s - 1);
        if (tty)
            fprintf(stderr, "\rstep %5d/%d  loss %.4f  lr %.2e  |g| %.2f  %8.0f tok/s  ETA %4.0fs ", s + 1,
                    o.steps, (double)loss, (double)lr, (double)gn, tps, eta);
        else if ((s + 1) % 25 == 0 || s == 0 || s + 1 == o.steps)
            fprintf(stderr, "step %d/%d loss %.4f lr %.2e grad_norm %.2f tok/s %.0f eta_s %.0f\n", s + 1,
                    o.steps, (double)loss, (double)lr, (double)gn, tps, eta);
    }
    if (tty) fputc('\n', stderr);
    // save as a Hugging Face directory, load it back, compare
    char path[4096];
    snprintf(path, sizeof path, "%s", o.out); // mkdir -p
    for (char *q = path + 1;; q++) {
        bool end = *q == 0;
        if (*q == '/' || end) {
            *q = 0;
            if (mkdir(path, 0755) && errno != EEXIST) {
                fprintf(stderr, "spry demo: cannot create %s: %s\n", path, strerror(errno));
                return 1;
            }
            if (end) break;
            *q = '/';
        }
    }
    snprintf(path, sizeof path, "%s/config.json", o.out);
    spry_status st = spry_model_config_save(&m->cfg, path);
    snprintf(path, sizeof path, "%s/model.safetensors", o.out);
    if (!st) st = spry_model_save_weights(m, path);
    spry_model *m2 = NULL;
    if (!st) st = spry_model_load_dir(o.out, &m2);
    if (st) {
        fprintf(stderr, "spry demo: %s\n", spry_last_error());
        return 1;
    }
    fill_batch(tok, o.batch, o.seq, o.seed + 1, 0);
    float l1 = eval_loss(m, ctx, &tokens), l2 = eval_loss(m2, ctx, &tokens);
    printf("spry demo: trained %d steps in %.1fs, final loss %.4f; saved to %s; reloaded loss %.6f %s %.6f\n",
           o.steps, now() - t0, (double)loss, o.out, (double)l2, l1 == l2 ? "==" : "!=", (double)l1);
    // greedy sample
    const char *prompt = "The children ";
    int         n      = (int)strlen(prompt), total = o.seq;
    char        text[4096];
    memcpy(text, prompt, (size_t)n);
    spry_ctx_set_grad(ctx, false);
    for (int i = n; i < total; i++) {
        spry_ctx_begin(ctx);
        spry_tensor *ids = spry_new(ctx, SPRY_DTYPE_I32, 2, (int64_t[]){1, i});
        for (int t = 0; t < i; t++) ((int32_t *)ids->data)[t] = (unsigned char)text[t];
        spry_tensor *logits = spry_model_forward(m2, ctx, ids);
        const float *last   = (const float *)logits->data + (int64_t)(i - 1) * 256;
        int          best   = 0;
        for (int v = 1; v < 256; v++) best = last[v] > last[best] ? v : best;
        text[i] = (char)(best >= 32 && best < 127 ? best : '?');
    }
    text[total] = 0;
    printf("sample: %s\n", text);
    spry_model_free(m2);
    spry_optim_free(opt);
    spry_ctx_free(ctx);
    spry_model_free(m);
    free(tok);
    return l1 == l2 ? 0 : 1;
}
