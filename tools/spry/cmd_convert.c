/*
 * cmd_convert.c -- `spry convert` (Hugging Face directory <-> GGUF, any weight type) and
 * `spry quantize` (to Q8_0 / Q4_0 GGUF), thin shells over io/gguf_model.c.
 *
 *   spry convert  --model DIR        --out FILE.gguf [--type f32|f16|bf16|q8_0|q4_0]
 *   spry convert  --model FILE.gguf  --out DIR       (config.json + model.safetensors, f32)
 *   spry quantize --model DIR|FILE.gguf --out FILE.gguf [--type q8_0|q4_0]
 * A GGUF written from a directory holding tokenizer.json carries the tokenizer keys llama.cpp
 * needs (tokenizer.ggml.*); without one the file is written anyway, with a warning.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "spry/gguf.h"
#include "spry/hf_checkpoint.h"
#include "spry/quant.h"
#include "spry/tokenizer.h"

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

static void usage(FILE *f, const char *cmd) {
    if (!strcmp(cmd, "quantize"))
        fprintf(f, "usage: spry quantize --model DIR|FILE.gguf --out FILE.gguf [--type q8_0|q4_0]\n"
                   "  --model PATH   Hugging Face directory (config.json + model.safetensors [+ tokenizer.json])\n"
                   "                 or a GGUF file (required)\n"
                   "  --out FILE     the GGUF to write (required)\n"
                   "  --type T       q8_0 or q4_0 (q8_0); norms, biases and GPT-2's position embeddings stay f32\n");
    else
        fprintf(f, "usage: spry convert --model PATH --out PATH [--type f32|f16|bf16|q8_0|q4_0]\n"
                   "  --model PATH   Hugging Face directory, or a GGUF file (required)\n"
                   "  --out PATH     FILE.gguf: write GGUF (llama.cpp's gpt2/bloom layout); else a directory\n"
                   "                 (config.json + model.safetensors, f32) (required)\n"
                   "  --type T       GGUF matrix type: f32, f16, bf16, q8_0 or q4_0 (f32)\n");
}

static int ggml_type_of(const char *t) {
    return !strcmp(t, "f32") ? SPRY_GGML_TYPE_F32 : !strcmp(t, "f16") ? SPRY_GGML_TYPE_F16
         : !strcmp(t, "bf16") ? SPRY_GGML_TYPE_BF16 : !strcmp(t, "q8_0") ? SPRY_GGML_TYPE_Q8_0
         : !strcmp(t, "q4_0") ? SPRY_GGML_TYPE_Q4_0 : -1;
}

static int run(int argc, char **argv, bool quantize) {
    const char *cmd = quantize ? "quantize" : "convert", *model = NULL, *out = NULL;
    const char *type = quantize ? "q8_0" : "f32";
    for (int i = 1; i < argc; i += 2) { // every option takes a value (--help returns at once)
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout, cmd);
            return 0;
        }
        const char **sv = !strcmp(a, "--model") ? &model : !strcmp(a, "--out") ? &out : !strcmp(a, "--type") ? &type : NULL;
        if (!sv) {
            fprintf(stderr, "spry %s: unknown option '%s'\n", cmd, a);
            usage(stderr, cmd);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "spry %s: %s needs a value\n", cmd, a);
            return 2;
        }
        *sv = v;
    }
    if (!model || !out) {
        fprintf(stderr, "spry %s: --model and --out are required\n", cmd);
        usage(stderr, cmd);
        return 2;
    }
    int wtype = ggml_type_of(type);
    if (wtype < 0 || (quantize && wtype != SPRY_GGML_TYPE_Q8_0 && wtype != SPRY_GGML_TYPE_Q4_0)) {
        fprintf(stderr, "spry %s: --type must be %s, got '%s'\n", cmd,
                quantize ? "q8_0 or q4_0" : "f32, f16, bf16, q8_0 or q4_0", type);
        return 2;
    }
    bool to_gguf = ends_with(out, ".gguf");
    if (quantize && !to_gguf) {
        fprintf(stderr, "spry quantize: --out must name a .gguf file, got '%s'\n", out);
        return 2;
    }
    // the model, and the tokenizer that a Hugging Face directory brings along
    spry_model     *m   = NULL;
    spry_tokenizer *tok = NULL;
    bool            from_gguf = ends_with(model, ".gguf");
    spry_status     st = from_gguf ? spry_gguf_import_model(model, &m) : spry_model_load_dir(model, &m);
    if (!st && !from_gguf) {
        char tpath[1200];
        snprintf(tpath, sizeof tpath, "%s/tokenizer.json", model);
        struct stat sb;
        if (stat(tpath, &sb) == 0) st = spry_tokenizer_load_json(tpath, &tok);
    }
    if (st) {
        fprintf(stderr, "spry %s: %s\n", cmd, spry_last_error());
        spry_model_free(m);
        return st == SPRY_ERR_IO || st == SPRY_ERR_NOT_FOUND ? 1 : 2;
    }
    if (to_gguf) {
        spry_gguf_export_params p = spry_gguf_export_params_default();
        p.wtype = wtype, p.tok = tok;
        if (!tok)
            fprintf(stderr, "spry %s: warning: no tokenizer.json beside the model: the GGUF has no tokenizer keys "
                            "(spry reads it; llama.cpp needs them)\n", cmd);
        st = spry_gguf_export_model(m, out, &p);
    } else {
        char path[1200];
        if (mkdir(out, 0755) && errno != EEXIST) {
            st = spry_errorf(SPRY_ERR_IO, "%s: cannot create directory: %s", out, strerror(errno));
        } else {
            snprintf(path, sizeof path, "%s/config.json", out);
            st = spry_model_config_save(&m->cfg, path);
            snprintf(path, sizeof path, "%s/model.safetensors", out);
            if (!st) st = spry_model_save_weights(m, path);
        }
    }
    if (st) fprintf(stderr, "spry %s: %s\n", cmd, spry_last_error());
    else
        printf("spry %s: %s (%s, %lld parameters) -> %s%s%s\n", cmd, model,
               spry_model_arch_name(m->cfg.arch), (long long)m->params.n_elem, out,
               to_gguf ? " as " : "", to_gguf ? type : "");
    spry_tokenizer_free(tok);
    spry_model_free(m);
    return st ? (st == SPRY_ERR_IO ? 1 : 2) : 0;
}

int spry_cmd_convert(int argc, char **argv) { return run(argc, argv, false); }
int spry_cmd_quantize(int argc, char **argv) { return run(argc, argv, true); }
