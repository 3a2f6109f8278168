/*
 * main.c -- the `spry` command line: one binary, one file per subcommand (cmd_<name>.c), each a
 * thin shell over the library. Exit codes: 0 ok, 1 runtime error, 2 usage error.
 * How to add a subcommand: write cmd_<name>.c with `int spry_cmd_<name>(int argc, char **argv)`,
 * declare it in commands.h and add a row to k_commands below.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command k_commands[] = {
    {"demo", spry_cmd_demo, "train a tiny GPT on built-in text, save, reload, generate"},
    {"prepare", spry_cmd_prepare, "tokenize text/jsonl/Brown corpus into a .bin/.idx dataset"},
    {"analyze", spry_cmd_analyze, "data analyzer: difficulty metrics and index files (DeepSpeed)"},
    {"tokenizer", spry_cmd_tokenizer, "tokenizer tools: 'spry tokenizer train' learns a byte-level BPE"},
    {"tokenize", spry_cmd_tokenize, "text on stdin -> token ids as a JSON array"},
    {"train", spry_cmd_train, "train a GPT-2/BLOOM model on a prepared dataset (DeepSpeed config)"},
    {"eval", spry_cmd_eval, "validation loss and perplexity of a model on a dataset split"},
    {"generate", spry_cmd_generate, "prompt -> text (greedy, temperature, top-k, top-p)"},
    {"plot", spry_cmd_plot, "SVG curves (loss, lr, throughput) of one or more runs"},
    {"serve", spry_cmd_serve, "OpenAI-compatible HTTP server (completions, chat, streaming, metrics)"},
    {"convert", spry_cmd_convert, "Hugging Face directory <-> GGUF (f32, f16, bf16, q8_0, q4_0)"},
    {"quantize", spry_cmd_quantize, "a model to a Q8_0 or Q4_0 GGUF that llama.cpp and spry serve load"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: spry <command> [options]   (spry <command> --help for its options)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        fprintf(f, "  %-10s %s\n", k_commands[i].name, k_commands[i].summary);
    fprintf(f, "\noptions:\n  -h, --help  show this help\n\n"
               "environment: SPRY_LOG_LEVEL=error|warn|info|debug (info), SPRY_PROFILE=1 prints "
               "per-op times\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        exit(argc < 2 ? 2 : 0);
    }
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        if (!strcmp(argv[1], k_commands[i].name)) exit(k_commands[i].run(argc - 1, argv + 1));
    fprintf(stderr, "spry: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    exit(2);
}
