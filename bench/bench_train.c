/*
 * bench_train.c -- spry's half of the training-throughput benchmark (bench/train.sh runs it next
 * to bench/train_pytorch.py). GPT-2 shapes, random tokens, AdamW (lr 3e-4, wd 0.1), gradient
 * clipping 1.0, fp32 or bf16 matmuls. Prints one line:
 *   SPRY model=<m> precision=<p> tokens_per_s=<x> peak_rss_mb=<y> threads=<t> gemm_gflops=<g>
 * gemm_gflops counts the matmul FLOPs of a step (6 * tokens * matmul params + attention) over the
 * measured step time: the achieved rate of the whole step, not of GEMM alone.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "spry/autograd.h"
#include "spry/cpu.h"
#include "spry/gemm.h"
#include "spry/model.h"
#include "spry/optim.h"
#include "spry/rng.h"

#include "bench_util.h"

int main(int argc, char **argv) {
    const char *model = "gpt-mini", *prec = "fp32";
    int         steps = 10, threads = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--precision")) prec = argv[i + 1];
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bench_train [--model gpt-mini|gpt2-124m (gpt-mini)] "
                            "[--precision fp32|bf16 (fp32)] [--steps N (10)] [--threads N (2)]\n");
            return 2;
        }
    }
    int64_t L = 6, H = 6, C = 384, T = 256, B = 8, V = 50257;
    if (!strcmp(model, "gpt2-124m")) L = 12, H = 12, C = 768, B = 4;
    spry_model_config cfg = spry_model_config_gpt2(V, 1024, C, L, H);
    spry_model       *m;
    if (spry_model_init(&cfg, &m)) {
        fprintf(stderr, "bench_train: %s\n", spry_last_error());
        return 1;
    }
    spry_model_init_weights(m, 1);
    spry_ctx *ctx  = spry_ctx_init((size_t)1 << 28, threads);
    ctx->precision = !strcmp(prec, "bf16") ? SPRY_PRECISION_BF16 : SPRY_PRECISION_F32;
    spry_optim_params op = spry_optim_params_default(SPRY_OPTIM_ADAMW);
    op.lr = 3e-4f, op.weight_decay = 0.1f;
    spry_optim *opt;
    if (spry_optim_init(&m->params, &op, &opt)) return 1;
    spry_tensor tokens = {0};
    int32_t    *tok    = malloc(sizeof(int32_t) * (size_t)(B * (T + 1)));
    spry_tensor_set_shape(&tokens, SPRY_DTYPE_I32, 2, (int64_t[]){B, T + 1});
    tokens.data = tok;
    double t0 = 0, loss = 0;
    for (int s = 0; s < steps + 2; s++) {
        if (s == 2) t0 = now();
        for (int64_t i = 0; i < B * (T + 1); i++)
            tok[i] = (int32_t)(spry_rng_uniform(7, (uint64_t)s, (uint64_t)i) * (float)V);
        spry_ctx_begin(ctx);
        spry_params_zero_grad(&m->params);
        spry_tensor *l = spry_model_loss(m, ctx, &tokens);
        spry_backward(ctx, l);
        if (spry_ctx_status(ctx)) {
            fprintf(stderr, "bench_train: %s\n", spry_last_error());
            return 1;
        }
        spry_clip_grad_norm(&m->params, 1.0f);
        spry_optim_step(opt, op.lr);
        loss = ((float *)l->data)[0];
    }
    double dt = now() - t0;
    double tps = (double)(B * T * steps) / dt;
    // matmul FLOPs per token: 6 * (12 C^2 L + V C) + attention 6 * L * T * C (causal half of 12)
    double flops_tok = 6.0 * (12.0 * (double)(C * C * L) + (double)(V * C)) + 6.0 * (double)(L * T * C);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("SPRY model=%s precision=%s tokens_per_s=%.1f peak_rss_mb=%.0f threads=%d "
           "gemm_gflops=%.1f loss=%.4f arena_high_water_mb=%.0f gemm=%s cpu=%s\n",
           model, prec, tps, (double)ru.ru_maxrss / 1024.0, threads, flops_tok * tps / 1e9, loss,
           (double)spry_arena_high_water(ctx->arena) / 1048576.0, spry_gemm_backend(),
           spry_cpu_summary());
    spry_op_profile_print();
    spry_optim_free(opt);
    spry_ctx_free(ctx);
    spry_model_free(m);
    free(tok);
    return 0;
}
