/*
 * bench_loader.c -- data loading against training: the time spry_loader_next takes per batch
 * and the time of a training step on the same batches (GPT-2 shapes of `make run`: 4 layers,
 * width 256, T 128, B 8, and gpt-mini: 6 layers, width 384, T 256, B 8), as a fraction.
 *   usage: bench_loader PREFIX VOCAB
 * Prints RESULT loader_fraction_<model> spry=<loader s/step> step=<step s> ratio=<fraction>.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "spry/loader.h"
#include "spry/log.h"
#include "spry/trainer.h"

#include "bench_util.h"

typedef struct src {
    spry_loader *l;
} src;
static spry_status next(void *self, int32_t *t, int64_t B, int64_t T1) {
    (void)B, (void)T1;
    return spry_loader_next(((src *)self)->l, t);
}

static int run(const char *prefix, int64_t vocab, const char *name, int64_t L, int64_t C, int64_t H, int64_t T) {
    int64_t            B  = 8;
    spry_loader_params lp = spry_loader_params_default();
    lp.prefix = prefix, lp.seq_len = T, lp.batch_size = B, lp.split = "1,0,0";
    spry_loader *l;
    if (spry_loader_init(&lp, &l)) {
        fprintf(stderr, "bench_loader: %s\n", spry_last_error());
        return 1;
    }
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(B * (T + 1)));
    int      reps = 20000;
    double   t0 = now();
    for (int i = 0; i < reps; i++) spry_loader_next(l, tok);
    double per_batch = (now() - t0) / reps;
    spry_loader_free(l);
    spry_loader_init(&lp, &l);
    spry_model_config mc = spry_model_config_gpt2(vocab, T, C, L, H);
    spry_model       *m;
    spry_model_init(&mc, &m);
    spry_model_init_weights(m, 1);
    spry_ds_config cfg;
    spry_ds_config_parse("{\"train_micro_batch_size_per_gpu\": 8}", "bench", 1, &cfg);
    src                 s  = {l};
    spry_batch_source   bs = {.self = &s, .next = next};
    spry_trainer_params tp = spry_trainer_params_default();
    tp.out_dir = "/tmp/spry_bench_loader", tp.seq_len = T, tp.progress = 0;
    spry_trainer *tr;
    if (spry_trainer_init(m, &cfg, bs, &tp, &tr)) {
        fprintf(stderr, "bench_loader: %s\n", spry_last_error());
        return 1;
    }
    float loss;
    bool  sk;
    spry_trainer_step(tr, &loss, &sk); // warm-up
    int    steps = 3;
    double t1    = now();
    for (int i = 0; i < steps; i++) spry_trainer_step(tr, &loss, &sk);
    double per_step = (now() - t1) / steps;
    printf("%s: loader %.2f us/batch, training step %.1f ms -> loader share %.5f%%\n", name, per_batch * 1e6,
           per_step * 1e3, 100 * per_batch / per_step);
    printf("RESULT loader_fraction_%s spry=%.3g step=%.3g ratio=%.3g unit=s_per_batch_lower_is_better\n", name,
           per_batch, per_step, per_batch / per_step);
    spry_trainer_free(tr);
    spry_ds_config_free(&cfg);
    spry_model_free(m);
    spry_loader_free(l);
    free(tok);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_loader PREFIX VOCAB\n");
        return 2;
    }
    spry_log_set_level(SPRY_LOG_WARN);
    int64_t vocab = atoll(argv[2]);
    return run(argv[1], vocab, "make_run_model", 4, 256, 4, 128) || run(argv[1], vocab, "gpt_mini", 6, 384, 6, 256);
}
