/*
 * config.c -- Hugging Face config.json for GPT-2, BLOOM and BERT (transformers' GPT2Config,
 * BloomConfig and BertConfig key names: n_embd/n_layer/n_head/n_positions/n_inner/
 * layer_norm_epsilon for GPT-2, hidden_size/n_layer/n_head/layer_norm_epsilon for BLOOM,
 * hidden_size/num_hidden_layers/num_attention_heads/intermediate_size/max_position_embeddings/
 * type_vocab_size/layer_norm_eps for BERT; n_inner null = 4 * C).
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spry/fs.h"
#include "spry/model.h"

spry_model_config spry_model_config_gpt2(int64_t vocab, int64_t n_pos, int64_t C, int64_t L,
                                         int64_t H) {
    return (spry_model_config){.arch = SPRY_ARCH_GPT2, .vocab_size = vocab, .n_positions = n_pos,
                               .n_embd = C, .n_layer = L, .n_head = H, .n_inner = 4 * C,
                               .layer_norm_eps = 1e-5f, .init_std = 0.02f};
}

const char *spry_model_arch_name(spry_arch arch) {
    return arch == SPRY_ARCH_GPT2 ? "gpt2" : arch == SPRY_ARCH_BLOOM ? "bloom" : "bert";
}

spry_status spry_model_config_validate(const spry_model_config *c) {
    struct { const char *k; int64_t v; } pos[] = {
        {"vocab_size", c->vocab_size}, {"n_embd", c->n_embd}, {"n_layer", c->n_layer},
        {"n_head", c->n_head}, {"n_inner", c->n_inner}};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
        if (pos[i].v <= 0 || pos[i].v > (1 << 24))
            return spry_errorf(SPRY_ERR_CONFIG, "model config: %s = %lld must be in [1, 2^24]",
                               pos[i].k, (long long)pos[i].v);
    if (c->n_embd % c->n_head)
        return spry_errorf(SPRY_ERR_CONFIG, "model config: n_embd = %lld is not divisible by n_head = %lld",
                           (long long)c->n_embd, (long long)c->n_head);
    if (c->arch == SPRY_ARCH_BERT && (c->type_vocab_size <= 0 || c->type_vocab_size > (1 << 24)))
        return spry_errorf(SPRY_ERR_CONFIG, "model config: type_vocab_size = %lld must be positive",
                           (long long)c->type_vocab_size);
    if (c->arch == SPRY_ARCH_BERT &&
        (c->pad_token_id < 0 || c->pad_token_id >= c->vocab_size || c->mask_token_id >= c->vocab_size))
        return spry_errorf(SPRY_ERR_CONFIG, "model config: pad_token_id = %lld / mask_token_id = %lld outside the vocabulary (%lld)",
                           (long long)c->pad_token_id, (long long)c->mask_token_id, (long long)c->vocab_size);
    if (c->arch != SPRY_ARCH_BLOOM && (c->n_positions <= 0 || c->n_positions > (1 << 24)))
        return spry_errorf(SPRY_ERR_CONFIG, "model config: n_positions = %lld must be positive",
                           (long long)c->n_positions);
    if (!(c->layer_norm_eps > 0) || !(c->dropout >= 0 && c->dropout < 1))
        return spry_errorf(SPRY_ERR_CONFIG, "model config: layer_norm_epsilon = %g / dropout = %g out of range",
                           (double)c->layer_norm_eps, (double)c->dropout);
    return SPRY_OK;
}

static spry_status get_int(const char *path, const cJSON *j, const char *key, int64_t *v,
                           bool required) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!x || cJSON_IsNull(x)) {
        if (required) return spry_errorf(SPRY_ERR_CONFIG, "%s: missing key \"%s\"", path, key);
        return SPRY_OK;
    }
    if (!cJSON_IsNumber(x) || x->valuedouble != (double)(int64_t)x->valuedouble)
        return spry_errorf(SPRY_ERR_CONFIG, "%s: \"%s\" must be an integer", path, key);
    *v = (int64_t)x->valuedouble;
    return SPRY_OK;
}

static spry_status get_float(const char *path, const cJSON *j, const char *key, float *v) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!x || cJSON_IsNull(x)) return SPRY_OK;
    if (!cJSON_IsNumber(x)) return spry_errorf(SPRY_ERR_CONFIG, "%s: \"%s\" must be a number", path, key);
    *v = (float)x->valuedouble;
    return SPRY_OK;
}

spry_status spry_model_config_load(const char *path, spry_model_config *cfg) {
    char *text = NULL;
    spry_status rs = spry_read_file(path, (size_t)16 << 20, &text, NULL);
    if (rs == SPRY_ERR_NOT_FOUND) rs = SPRY_ERR_IO; // callers (and messages) treat both as unreadable
    if (rs) return rs;
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return spry_errorf(SPRY_ERR_FORMAT, "%s: not a JSON object", path);
    }
    spry_status  st = SPRY_OK;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
    memset(cfg, 0, sizeof *cfg);
    cfg->layer_norm_eps = 1e-5f;
    cfg->init_std       = 0.02f;
    if (!cJSON_IsString(mt)) {
        st = spry_errorf(SPRY_ERR_CONFIG, "%s: missing string \"model_type\" (gpt2, bloom or bert)", path);
    } else if (!strcmp(mt->valuestring, "gpt2")) {
        cfg->arch = SPRY_ARCH_GPT2;
        if (!st) st = get_int(path, j, "vocab_size", &cfg->vocab_size, true);
        if (!st) st = get_int(path, j, "n_positions", &cfg->n_positions, true);
        if (!st) st = get_int(path, j, "n_embd", &cfg->n_embd, true);
        if (!st) st = get_int(path, j, "n_layer", &cfg->n_layer, true);
        if (!st) st = get_int(path, j, "n_head", &cfg->n_head, true);
        cfg->n_inner = 4 * cfg->n_embd;
        if (!st) st = get_int(path, j, "n_inner", &cfg->n_inner, false);
        if (!st) st = get_float(path, j, "resid_pdrop", &cfg->dropout);
        if (!st) st = get_float(path, j, "initializer_range", &cfg->init_std);
    } else if (!strcmp(mt->valuestring, "bloom")) {
        cfg->arch = SPRY_ARCH_BLOOM;
        if (!st) st = get_int(path, j, "vocab_size", &cfg->vocab_size, true);
        if (!st) st = get_int(path, j, "hidden_size", &cfg->n_embd, true);
        if (!st) st = get_int(path, j, "n_layer", &cfg->n_layer, true);
        if (!st) st = get_int(path, j, "n_head", &cfg->n_head, true);
        cfg->n_inner = 4 * cfg->n_embd;
        if (!st) st = get_float(path, j, "hidden_dropout", &cfg->dropout);
        if (!st) st = get_float(path, j, "initializer_range", &cfg->init_std);
        const cJSON *post = cJSON_GetObjectItemCaseSensitive(j, "apply_residual_connection_post_layernorm");
        if (!st && cJSON_IsTrue(post))
            st = spry_errorf(SPRY_ERR_UNSUPPORTED, "%s: apply_residual_connection_post_layernorm = true is not supported", path);
    } else if (!strcmp(mt->valuestring, "bert")) {
        cfg->arch            = SPRY_ARCH_BERT;
        cfg->layer_norm_eps  = 1e-12f;
        cfg->type_vocab_size = 2;
        cfg->mask_token_id   = -1;
        if (!st) st = get_int(path, j, "pad_token_id", &cfg->pad_token_id, false);
        if (!st) st = get_int(path, j, "mask_token_id", &cfg->mask_token_id, false);
        if (!st) st = get_int(path, j, "vocab_size", &cfg->vocab_size, true);
        if (!st) st = get_int(path, j, "hidden_size", &cfg->n_embd, true);
        if (!st) st = get_int(path, j, "num_hidden_layers", &cfg->n_layer, true);
        if (!st) st = get_int(path, j, "num_attention_heads", &cfg->n_head, true);
        if (!st) st = get_int(path, j, "max_position_embeddings", &cfg->n_positions, true);
        cfg->n_inner = 4 * cfg->n_embd;
        if (!st) st = get_int(path, j, "intermediate_size", &cfg->n_inner, false);
        if (!st) st = get_int(path, j, "type_vocab_size", &cfg->type_vocab_size, false);
        if (!st) st = get_float(path, j, "hidden_dropout_prob", &cfg->dropout);
        if (!st) st = get_float(path, j, "initializer_range", &cfg->init_std);
        if (!st) st = get_float(path, j, "layer_norm_eps", &cfg->layer_norm_eps);
        const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "hidden_act");
        const cJSON *pe  = cJSON_GetObjectItemCaseSensitive(j, "position_embedding_type");
        if (!st && act && !(cJSON_IsString(act) && !strcmp(act->valuestring, "gelu")))
            st = spry_errorf(SPRY_ERR_UNSUPPORTED, "%s: hidden_act = %s is not supported (gelu)", path,
                             cJSON_IsString(act) ? act->valuestring : "(not a string)");
        if (!st && pe && !(cJSON_IsString(pe) && !strcmp(pe->valuestring, "absolute")))
            st = spry_errorf(SPRY_ERR_UNSUPPORTED, "%s: position_embedding_type = %s is not supported (absolute)",
                             path, cJSON_IsString(pe) ? pe->valuestring : "(not a string)");
    } else {
        st = spry_errorf(SPRY_ERR_CONFIG, "%s: model_type \"%s\" is not supported (gpt2, bloom, bert)",
                         path, mt->valuestring);
    }
    if (!st && cfg->arch != SPRY_ARCH_BERT) st = get_float(path, j, "layer_norm_epsilon", &cfg->layer_norm_eps);
    cJSON_Delete(j);
    if (!st) {
        st = spry_model_config_validate(cfg);
        if (st) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", spry_last_error());
            spry_errorf(st, "%s: %s", path, msg);
        }
    }
    return st;
}

spry_status spry_model_config_save(const spry_model_config *c, const char *path) {
    cJSON *j = cJSON_CreateObject();
    if (c->arch == SPRY_ARCH_GPT2) {
        cJSON_AddItemToObject(j, "architectures", cJSON_CreateStringArray((const char *[]){"GPT2LMHeadModel"}, 1));
        cJSON_AddStringToObject(j, "model_type", "gpt2");
        cJSON_AddNumberToObject(j, "vocab_size", (double)c->vocab_size);
        cJSON_AddNumberToObject(j, "n_positions", (double)c->n_positions);
        cJSON_AddNumberToObject(j, "n_embd", (double)c->n_embd);
        cJSON_AddNumberToObject(j, "n_layer", (double)c->n_layer);
        cJSON_AddNumberToObject(j, "n_head", (double)c->n_head);
        cJSON_AddNumberToObject(j, "n_inner", (double)c->n_inner);
        cJSON_AddStringToObject(j, "activation_function", "gelu_new");
        cJSON_AddNumberToObject(j, "resid_pdrop", c->dropout);
        cJSON_AddNumberToObject(j, "embd_pdrop", c->dropout);
        cJSON_AddNumberToObject(j, "attn_pdrop", 0.0);
    } else if (c->arch == SPRY_ARCH_BERT) {
        cJSON_AddItemToObject(j, "architectures", cJSON_CreateStringArray((const char *[]){"BertForMaskedLM"}, 1));
        cJSON_AddStringToObject(j, "model_type", "bert");
        cJSON_AddNumberToObject(j, "vocab_size", (double)c->vocab_size);
        cJSON_AddNumberToObject(j, "hidden_size", (double)c->n_embd);
        cJSON_AddNumberToObject(j, "num_hidden_layers", (double)c->n_layer);
        cJSON_AddNumberToObject(j, "num_attention_heads", (double)c->n_head);
        cJSON_AddNumberToObject(j, "intermediate_size", (double)c->n_inner);
        cJSON_AddNumberToObject(j, "max_position_embeddings", (double)c->n_positions);
        cJSON_AddNumberToObject(j, "type_vocab_size", (double)c->type_vocab_size);
        cJSON_AddStringToObject(j, "hidden_act", "gelu");
        cJSON_AddStringToObject(j, "position_embedding_type", "absolute");
        cJSON_AddNumberToObject(j, "hidden_dropout_prob", c->dropout);
        cJSON_AddNumberToObject(j, "attention_probs_dropout_prob", 0.0);
        cJSON_AddNumberToObject(j, "layer_norm_eps", c->layer_norm_eps);
        cJSON_AddNumberToObject(j, "pad_token_id", (double)c->pad_token_id);
        if (c->mask_token_id >= 0) cJSON_AddNumberToObject(j, "mask_token_id", (double)c->mask_token_id);
    } else {
        cJSON_AddItemToObject(j, "architectures", cJSON_CreateStringArray((const char *[]){"BloomForCausalLM"}, 1));
        cJSON_AddStringToObject(j, "model_type", "bloom");
        cJSON_AddNumberToObject(j, "vocab_size", (double)c->vocab_size);
        cJSON_AddNumberToObject(j, "hidden_size", (double)c->n_embd);
        cJSON_AddNumberToObject(j, "n_layer", (double)c->n_layer);
        cJSON_AddNumberToObject(j, "n_head", (double)c->n_head);
        cJSON_AddBoolToObject(j, "apply_residual_connection_post_layernorm", 0);
        cJSON_AddNumberToObject(j, "hidden_dropout", c->dropout);
        cJSON_AddNumberToObject(j, "attention_dropout", 0.0);
    }
    if (c->arch != SPRY_ARCH_BERT) cJSON_AddNumberToObject(j, "layer_norm_epsilon", c->layer_norm_eps);
    cJSON_AddNumberToObject(j, "initializer_range", c->init_std);
    cJSON_AddBoolToObject(j, "tie_word_embeddings", 1);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", path);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    bool  ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f) ok = (fflush(f) == 0) && (fsync(fileno(f)) == 0) && ok, ok = (fclose(f) == 0) && ok;
    free(text);
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return spry_errorf(SPRY_ERR_IO, "%s: cannot write: %s", path, strerror(e));
    }
    return SPRY_OK;
}
