/*
 * cmd_analyze.c -- `spry analyze`: DeepSpeed Data Efficiency's data analyzer over a .bin/.idx
 * token dataset; writes the metric index files the curriculum sampler reads (docs/analyzer.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "spry/analyzer.h"

static void analyze_usage(FILE *f) {
    fprintf(
        f,
        "usage: spry analyze --data PREFIX --out DIR [options]\n"
        "  --data PREFIX     token dataset PREFIX.bin/.idx, e.g. from spry prepare (required)\n"
        "  --out DIR         output root; files go to DIR/<metric>/<metric>_*.bin/.idx (required)\n"
        "  --metrics LIST    comma-separated: seqlen, total_vocab_freq, vocab_rarity,\n"
        "                    seqlen_vocab_rarity (seqlen,vocab_rarity)\n"
        "  --seq-len N       0: a sample is one item (document); N > 0: a sample is a packed\n"
        "                    window of N+1 tokens starting every N tokens (0)\n"
        "  --split S         with --seq-len: the samples `spry train --split S` trains on (the\n"
        "                    train split, packed as its loader packs; give train's --eod too);\n"
        "                    none: windows over the whole dataset (none)\n"
        "  --eod N           with --split: token after each document, -1 = none (-1)\n"
        "  --pad-id N        with --split: the samples `spry train --arch bert` reads (documents\n"
        "                    cut to --seq-len and padded with N, the model's pad_token_id = the\n"
        "                    data's vocabulary size); metrics count real tokens only. -1 = off (-1)\n"
        "  --vocab-size N    vocabulary size for the vocab metrics, 0 = max token id + 1 (0)\n"
        "  --workers N       map workers, DeepSpeed's num_workers (1)\n"
        "  --threads N       threads per worker, DeepSpeed's num_threads (1)\n");
}

static int parse_i64(const char *opt, const char *v, long long lo, long long hi, long long *out) {
    char *end;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) {
        fprintf(stderr, "spry analyze: %s must be an integer in [%lld, %lld], got '%s'\n", opt, lo,
                hi, v);
        return 0;
    }
    *out = x;
    return 1;
}

int spry_cmd_analyze(int argc, char **argv) {
    spry_analyzer_params p = spry_analyzer_params_default();
    const char *metrics    = "seqlen,vocab_rarity";
    for (int i = 1; i < argc; i += 2) { // every option but --help takes a value
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            analyze_usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "spry analyze: unknown or incomplete option '%s'\n", a);
            analyze_usage(stderr);
            return 2;
        }
        long long x;
        if (!strcmp(a, "--data"))
            p.data_prefix = v;
        else if (!strcmp(a, "--out"))
            p.out_dir = v;
        else if (!strcmp(a, "--metrics"))
            metrics = v;
        else if (!strcmp(a, "--split"))
            p.split = v;
        else if (!strcmp(a, "--eod")) {
            if (!parse_i64(a, v, -1, 2147483647LL, &x))
                return 2;
            p.eod_id = x;
        }
        else if (!strcmp(a, "--pad-id")) {
            if (!parse_i64(a, v, -1, 2147483647LL, &x))
                return 2;
            p.pad_id = x;
        }
        else if (!strcmp(a, "--seq-len")) {
            if (!parse_i64(a, v, 0, 2147483646LL, &x))
                return 2;
            p.seq_len = x;
        } else if (!strcmp(a, "--vocab-size")) {
            if (!parse_i64(a, v, 0, 2147483647LL, &x))
                return 2;
            p.vocab_size = x;
        } else if (!strcmp(a, "--workers")) {
            if (!parse_i64(a, v, 1, 4096, &x))
                return 2;
            p.n_workers = (int)x;
        } else if (!strcmp(a, "--threads")) {
            if (!parse_i64(a, v, 1, 4096, &x))
                return 2;
            p.n_threads = (int)x;
        } else {
            fprintf(stderr, "spry analyze: unknown option '%s'\n", a);
            analyze_usage(stderr);
            return 2;
        }
    }
    if (!p.data_prefix || !p.out_dir) {
        fprintf(stderr, "spry analyze: --data and --out are required\n");
        analyze_usage(stderr);
        return 2;
    }
    char buf[1024];
    const char *names[16];
    int n = 0;
    if (strlen(metrics) >= sizeof buf) {
        fprintf(stderr, "spry analyze: --metrics is too long\n");
        return 2;
    }
    strcpy(buf, metrics);
    for (char *tok = buf; tok && *tok;) {
        char *comma = strchr(tok, ',');
        if (comma)
            *comma = '\0';
        if (!*tok) {
            fprintf(stderr, "spry analyze: --metrics: empty metric name in '%s'\n", metrics);
            return 2;
        }
        if (!spry_analyzer_is_builtin(tok)) {
            fprintf(stderr,
                    "spry analyze: --metrics: unknown metric '%s' (seqlen, total_vocab_freq, "
                    "vocab_rarity, seqlen_vocab_rarity)\n",
                    tok);
            return 2;
        }
        if (n == 16) {
            fprintf(stderr, "spry analyze: --metrics: too many metrics\n");
            return 2;
        }
        names[n++] = tok;
        tok        = comma ? comma + 1 : NULL;
    }
    if (!n) {
        fprintf(stderr, "spry analyze: --metrics is empty\n");
        return 2;
    }
    p.builtin = names, p.n_builtin = n;
    int64_t n_samples = 0;
    spry_status st    = spry_analyzer_count_samples(p.data_prefix, p.seq_len, &n_samples);
    if (!st)
        st = spry_analyze(&p);
    if (st) {
        fprintf(stderr, "spry analyze: %s\n", spry_last_error());
        return st == SPRY_ERR_ARG ? 2 : 1;
    }
    printf("spry analyze: %lld samples, %d metric(s), %d worker(s) x %d thread(s) -> %s/\n",
           (long long)n_samples, n, p.n_workers, p.n_threads, p.out_dir);
    return 0;
}
