/*
 * gguf_model.c -- spry's GPT-2 and BLOOM models to and from GGUF files in the layout llama.cpp's
 * gpt2 and bloom loaders read (gguf.h; shared/notes/inference_serving.md section 2.2, "Making a
 * GGUF that llama.cpp loads": key names and types, tensor names, ne order).
 *
 * spry keeps every linear weight (out, in) like torch.nn.Linear (GPT-2's Conv1D weights are
 * transposed when a Hugging Face checkpoint is read), which is already ggml's layout: a row-major
 * (out, in) matrix is ne = {in, out}. So export copies GPT-2 matrices as they are; the one
 * re-arrangement is BLOOM's fused QKV, whose rows spry keeps per head ([q_h; k_h; v_h] for each
 * head h, as Hugging Face does) and llama.cpp wants as [Q; K; V] blocks (its converter does the
 * same re-order, weight and bias). F32 tensors are written straight from the parameter store.
 * tokenizer.h has no merge accessor, so the merges are read back from spry_tokenizer_save's
 * tokenizer.json (a temporary file next to the output).
 */
#define _POSIX_C_SOURCE 200809L

#include "spry/fs.h"
#include "spry/gguf.h"
#include "spry/quant.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spry/dtype.h"

// ---------------------------------------------------------------------------------------------
// The tensor table: GGUF name, the spry tensor, whether it is BLOOM's fused QKV. One row per
// tensor in file order; both directions walk it.

typedef struct gguf_param {
    char name[SPRY_GGUF_MAX_NAME];
    spry_tensor *t;
    bool qkv;  // BLOOM's per-head fused QKV (weight or bias): re-ordered
    bool copy; // output.weight: a copy of token_embd.weight (spry ties them)
} gguf_param;

// Fills ps (room for 6 + 12 L entries) and returns the count.
static int64_t list_params(const spry_model *m, gguf_param *ps) {
    bool bloom = m->cfg.arch == SPRY_ARCH_BLOOM;
    int64_t n  = 0;
#define ADD(t_, qkv_, copy_, ...)                                                                  \
    do {                                                                                           \
        snprintf(ps[n].name, sizeof ps[n].name, __VA_ARGS__);                                      \
        ps[n].t    = (t_);                                                                         \
        ps[n].qkv  = (qkv_);                                                                       \
        ps[n].copy = (copy_);                                                                      \
        n++;                                                                                       \
    } while (0)
    ADD(m->wte, false, false, "token_embd.weight");
    if (bloom) {
        ADD(m->emb_ln_w, false, false, "token_embd_norm.weight");
        ADD(m->emb_ln_b, false, false, "token_embd_norm.bias");
    } else {
        ADD(m->wpe, false, false, "position_embd.weight");
    }
    ADD(m->lnf_w, false, false, "output_norm.weight");
    ADD(m->lnf_b, false, false, "output_norm.bias");
    ADD(m->wte, false, true, "output.weight");
    for (int64_t l = 0; l < m->cfg.n_layer; l++) {
        const spry_block *b = &m->blocks[l];
        long long i         = (long long)l;
        ADD(b->ln1_w, false, false, "blk.%lld.attn_norm.weight", i);
        ADD(b->ln1_b, false, false, "blk.%lld.attn_norm.bias", i);
        ADD(b->qkv_w, bloom, false, "blk.%lld.attn_qkv.weight", i);
        ADD(b->qkv_b, bloom, false, "blk.%lld.attn_qkv.bias", i);
        ADD(b->proj_w, false, false, "blk.%lld.attn_output.weight", i);
        ADD(b->proj_b, false, false, "blk.%lld.attn_output.bias", i);
        ADD(b->ln2_w, false, false, "blk.%lld.ffn_norm.weight", i);
        ADD(b->ln2_b, false, false, "blk.%lld.ffn_norm.bias", i);
        ADD(b->fc_w, false, false, "blk.%lld.ffn_up.weight", i);
        ADD(b->fc_b, false, false, "blk.%lld.ffn_up.bias", i);
        ADD(b->fc2_w, false, false, "blk.%lld.ffn_down.weight", i);
        ADD(b->fc2_b, false, false, "blk.%lld.ffn_down.bias", i);
    }
#undef ADD
    return n;
}

// BLOOM's fused QKV rows: spry row h*3D + j*D + d (head h, j = 0 q / 1 k / 2 v) is GGUF row
// j*C + h*D + d. cols = C for the weight, 1 for the bias. to_gguf picks the direction.
static void qkv_reorder(const float *src, float *dst, int64_t H, int64_t D, int64_t cols,
                        bool to_gguf) {
    int64_t C = H * D;
    for (int64_t h = 0; h < H; h++)
        for (int64_t j = 0; j < 3; j++)
            for (int64_t d = 0; d < D; d++) {
                int64_t rs = h * 3 * D + j * D + d, rg = j * C + h * D + d;
                int64_t from = to_gguf ? rs : rg, to = to_gguf ? rg : rs;
                memcpy(dst + to * cols, src + from * cols, (size_t)cols * sizeof(float));
            }
}

static const char *arch_name(spry_arch a) { return a == SPRY_ARCH_BLOOM ? "bloom" : "gpt2"; }

// ---------------------------------------------------------------------------------------------
// Export

spry_gguf_export_params spry_gguf_export_params_default(void) {
    return (spry_gguf_export_params){.wtype          = SPRY_GGML_TYPE_F32,
                                     .tok            = NULL,
                                     .name           = NULL,
                                     .context_length = 0,
                                     .bos_id         = -1,
                                     .eos_id         = -1};
}

// Buffers that must outlive spry_gguf_writer_write (the writer keeps data pointers).
typedef struct tmp_list {
    void **p;
    int64_t n, cap;
} tmp_list;

static void *tmp_alloc(tmp_list *l, size_t bytes) {
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 64;
        void **p    = realloc(l->p, (size_t)cap * sizeof *p);
        if (!p)
            return NULL;
        l->p   = p;
        l->cap = cap;
    }
    void *b = malloc(bytes ? bytes : 1);
    if (b)
        l->p[l->n++] = b;
    return b;
}

static void tmp_free(tmp_list *l) {
    for (int64_t i = 0; i < l->n; i++)
        free(l->p[i]);
    free(l->p);
}

// The tokenizer's merges as "a b" strings in rank order, through its tokenizer.json.
static spry_status tokenizer_merges(const spry_tokenizer *tok, const char *out_path, tmp_list *tl,
                                    const char ***merges, int64_t *n_merges) {
    size_t plen = strlen(out_path) + 48;
    char *tpath = tmp_alloc(tl, plen);
    if (!tpath)
        return spry_errorf(SPRY_ERR_NOMEM, "out of memory");
    snprintf(tpath, plen, "%s.tok.%ld", out_path, (long)getpid());
    spry_status st = spry_tokenizer_save(tok, tpath);
    char *json     = NULL;
    size_t len     = 0;
    if (!st)
        st = spry_read_file(tpath, 0, &json, &len);
    unlink(tpath);
    if (st)
        return st;
    cJSON *root = cJSON_ParseWithLength(json, len);
    free(json);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *arr   = cJSON_GetObjectItemCaseSensitive(model, "merges");
    int64_t n          = cJSON_GetArraySize(arr);
    if (!cJSON_IsArray(arr) || n != spry_tokenizer_n_merges(tok)) {
        cJSON_Delete(root);
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: model.merges of the saved tokenizer is missing or has the wrong "
                           "length (expected %d)",
                           tpath, (int)spry_tokenizer_n_merges(tok));
    }
    const char **ms = tmp_alloc(tl, (size_t)(n + 1) * sizeof *ms);
    if (!ms) {
        cJSON_Delete(root);
        return spry_errorf(SPRY_ERR_NOMEM, "out of memory");
    }
    int64_t r = 0;
    st        = SPRY_OK;
    for (const cJSON *e = arr->child; e && !st; e = e->next, r++) {
        const char *a = NULL, *b = NULL;
        if (cJSON_IsString(e)) {
            a = e->valuestring;
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            a = e->child->valuestring;
            b = e->child->next->valuestring;
            if (strchr(a, ' ') || strchr(b, ' ')) {
                st = spry_errorf(SPRY_ERR_ARG,
                                 "tokenizer merge %lld ('%.40s', '%.40s') holds a space: GGUF's "
                                 "\"a b\" merge strings cannot express it",
                                 (long long)r, a, b);
                break;
            }
        } else {
            st = spry_errorf(SPRY_ERR_FORMAT, "%s: model.merges[%lld] is malformed", tpath,
                             (long long)r);
            break;
        }
        size_t la = strlen(a), lb = b ? strlen(b) : 0;
        char *m = tmp_alloc(tl, la + lb + 2);
        if (!m) {
            st = spry_errorf(SPRY_ERR_NOMEM, "out of memory");
            break;
        }
        memcpy(m, a, la + 1);
        if (b) {
            m[la] = ' ';
            memcpy(m + la + 1, b, lb + 1);
        }
        ms[r] = m;
    }
    cJSON_Delete(root);
    *merges   = ms;
    *n_merges = n;
    return st;
}

// The tokenizer.* keys.
static spry_status put_tokenizer(spry_gguf_writer *w, const spry_model *m, const char *path,
                                 const spry_gguf_export_params *p, tmp_list *tl) {
    const spry_tokenizer *tok = p->tok;
    int64_t V                 = m->cfg.vocab_size;
    int32_t n_tok             = spry_tokenizer_n_vocab(tok);
    bool bloom                = m->cfg.arch == SPRY_ARCH_BLOOM;
    if (n_tok > V)
        return spry_errorf(SPRY_ERR_ARG,
                           "%s: the tokenizer has %d tokens, more than the model's vocab_size "
                           "(%lld)",
                           path, (int)n_tok, (long long)V);
    const char **toks = tmp_alloc(tl, (size_t)V * sizeof *toks);
    int32_t *types    = tmp_alloc(tl, (size_t)V * sizeof *types);
    char *pads        = tmp_alloc(tl, (size_t)V * 32);
    if (!toks || !types || !pads)
        return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", path);
    for (int64_t id = 0; id < V; id++) {
        const char *k = id < n_tok ? spry_tokenizer_vocab_key(tok, (int32_t)id) : NULL;
        if (k) {
            toks[id]  = k;
            types[id] = spry_tokenizer_is_special(tok, (int32_t)id) ? 3 : 1; // CONTROL : NORMAL
        } else { // a hole or the model's padding rows: llama.cpp's converter writes [PAD<i>]
            snprintf(pads + 32 * id, 32, "[PAD%lld]", (long long)id);
            toks[id]  = pads + 32 * id;
            types[id] = 5; // UNUSED
        }
    }
    const char **merges = NULL;
    int64_t n_merges    = 0;
    SPRY_TRY(tokenizer_merges(tok, path, tl, &merges, &n_merges));

    SPRY_TRY(spry_gguf_set_str(w, "tokenizer.ggml.model", "gpt2"));
    SPRY_TRY(spry_gguf_set_str(w, "tokenizer.ggml.pre", bloom ? "bloom" : "gpt-2"));
    SPRY_TRY(spry_gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)V));
    SPRY_TRY(spry_gguf_set_arr(w, "tokenizer.ggml.token_type", SPRY_GGUF_TYPE_INT32, types,
                               (uint64_t)V));
    SPRY_TRY(spry_gguf_set_arr_str(w, "tokenizer.ggml.merges", merges, (uint64_t)n_merges));

    // bos / eos (and BLOOM's unk / pad): explicit ids, else the usual special tokens
    struct {
        const char *key, *tok_gpt2, *tok_bloom;
        int32_t id;
    } ids[] = {
        {"tokenizer.ggml.bos_token_id", "<|endoftext|>", "<s>", p->bos_id},
        {"tokenizer.ggml.eos_token_id", "<|endoftext|>", "</s>", p->eos_id},
        {"tokenizer.ggml.unknown_token_id", NULL, "<unk>", -1},
        {"tokenizer.ggml.padding_token_id", NULL, "<pad>", -1},
    };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        int32_t id    = ids[i].id;
        const char *s = bloom ? ids[i].tok_bloom : ids[i].tok_gpt2;
        if (id < 0 && s) {
            id = spry_tokenizer_special_id(tok, s);
            if (id < 0)
                id = spry_tokenizer_vocab_id(tok, s);
        }
        // a BLOOM-architecture model with a GPT-2-style tokenizer (spry's own): its <|endoftext|>
        // bounds documents, so it is bos/eos (llama.cpp otherwise guesses id 11)
        if (id < 0 && bloom && ids[i].tok_gpt2) {
            id = spry_tokenizer_special_id(tok, ids[i].tok_gpt2);
            if (id < 0)
                id = spry_tokenizer_vocab_id(tok, ids[i].tok_gpt2);
        }
        if (id < 0)
            continue;
        if (id >= V)
            return spry_errorf(SPRY_ERR_ARG, "%s: %s (%d) is not below vocab_size (%lld)", path,
                               ids[i].key, (int)id, (long long)V);
        SPRY_TRY(spry_gguf_set_u32(w, ids[i].key, (uint32_t)id));
    }
    return SPRY_OK;
}

// Adds one parameter as a GGUF tensor: converted / re-ordered into tl when needed.
static spry_status put_param(spry_gguf_writer *w, const spry_model *m, const gguf_param *gp,
                             int wtype, tmp_list *tl, const char *path) {
    const spry_tensor *t = gp->t;
    int64_t numel        = spry_tensor_numel(t);
    int64_t ne[2]        = {t->shape[t->ndim - 1], t->ndim == 2 ? t->shape[0] : 1};
    const float *src     = t->data;
    if (gp->qkv) {
        float *r = tmp_alloc(tl, (size_t)numel * sizeof *r);
        if (!r)
            return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", path);
        int64_t H = m->cfg.n_head, D = m->cfg.n_embd / H;
        qkv_reorder(src, r, H, D, t->ndim == 2 ? t->shape[1] : 1, true);
        src = r;
    }
    // 1-D tensors stay F32; quantized files keep GPT-2's position embeddings F32 as well
    bool quant       = wtype == SPRY_GGML_TYPE_Q8_0 || wtype == SPRY_GGML_TYPE_Q4_0;
    int  type        = t->ndim == 2 && !(quant && !strcmp(gp->name, "position_embd.weight")) ? wtype
                                                                                                : SPRY_GGML_TYPE_F32;
    const void *data = src;
    if (type == SPRY_GGML_TYPE_Q8_0 || type == SPRY_GGML_TYPE_Q4_0) {
        spry_wfmt fmt = type == SPRY_GGML_TYPE_Q8_0 ? SPRY_WFMT_Q8_0 : SPRY_WFMT_Q4_0;
        if (ne[0] % 32)
            return spry_errorf(SPRY_ERR_ARG, "%s: tensor '%s' has rows of %lld values; %s needs multiples of 32",
                               path, gp->name, (long long)ne[0], spry_wfmt_name(fmt));
        void *q = tmp_alloc(tl, spry_wfmt_row_bytes(fmt, ne[0]) * (size_t)ne[1]);
        if (!q)
            return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", path);
        SPRY_TRY(spry_quantize_rows(fmt, src, q, ne[1], ne[0], 0));
        data = q;
    }
    if (type == SPRY_GGML_TYPE_F16 || type == SPRY_GGML_TYPE_BF16) {
        uint16_t *h = tmp_alloc(tl, (size_t)numel * sizeof *h);
        if (!h)
            return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", path);
        if (type == SPRY_GGML_TYPE_F16)
            for (int64_t i = 0; i < numel; i++)
                h[i] = spry_f32_to_f16(src[i]);
        else
            spry_convert_f32_to_bf16(src, h, numel);
        data = h;
    }
    return spry_gguf_add_tensor(w, gp->name, type, (uint32_t)t->ndim, ne, data);
}

static spry_status export_model(spry_gguf_writer *w, const spry_model *m, const char *path,
                                const spry_gguf_export_params *p, tmp_list *tl) {
    const spry_model_config *c = &m->cfg;
    const char *arch           = arch_name(c->arch);
    if (p->wtype != SPRY_GGML_TYPE_F32 && p->wtype != SPRY_GGML_TYPE_F16 &&
        p->wtype != SPRY_GGML_TYPE_BF16 && p->wtype != SPRY_GGML_TYPE_Q8_0 && p->wtype != SPRY_GGML_TYPE_Q4_0)
        return spry_errorf(SPRY_ERR_ARG,
                           "%s: wtype (%d) must be F32 (0), F16 (1), BF16 (30), Q8_0 (8) or Q4_0 (2)",
                           path, p->wtype);
    int64_t ctx = c->arch == SPRY_ARCH_GPT2 ? c->n_positions
                                            : (p->context_length > 0 ? p->context_length : 2048);
    if (ctx > (int64_t)UINT32_MAX)
        return spry_errorf(SPRY_ERR_ARG, "%s: context_length (%lld) does not fit a u32", path,
                           (long long)ctx);
    // llama_ftype: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q8_0 7, MOSTLY_BF16 32
    uint32_t ftype = p->wtype == SPRY_GGML_TYPE_F32 ? 0 : p->wtype == SPRY_GGML_TYPE_F16 ? 1
                   : p->wtype == SPRY_GGML_TYPE_Q4_0 ? 2 : p->wtype == SPRY_GGML_TYPE_Q8_0 ? 7 : 32;
    char key[96];
    SPRY_TRY(spry_gguf_set_str(w, "general.architecture", arch));
    if (p->name)
        SPRY_TRY(spry_gguf_set_str(w, "general.name", p->name));
    SPRY_TRY(spry_gguf_set_u32(w, "general.file_type", ftype));
    if (p->wtype == SPRY_GGML_TYPE_Q8_0 || p->wtype == SPRY_GGML_TYPE_Q4_0) // GGML_QNT_VERSION
        SPRY_TRY(spry_gguf_set_u32(w, "general.quantization_version", 2));
    struct {
        const char *k;
        int64_t v;
    } hp[] = {{"context_length", ctx},
              {"embedding_length", c->n_embd},
              {"feed_forward_length", c->n_inner},
              {"block_count", c->n_layer},
              {"attention.head_count", c->n_head}};
    for (size_t i = 0; i < sizeof hp / sizeof hp[0]; i++) {
        snprintf(key, sizeof key, "%s.%s", arch, hp[i].k);
        SPRY_TRY(spry_gguf_set_u32(w, key, (uint32_t)hp[i].v));
    }
    if (c->arch == SPRY_ARCH_BLOOM) {
        snprintf(key, sizeof key, "%s.attention.head_count_kv", arch);
        SPRY_TRY(spry_gguf_set_u32(w, key, (uint32_t)c->n_head));
    }
    snprintf(key, sizeof key, "%s.attention.layer_norm_epsilon", arch);
    SPRY_TRY(spry_gguf_set_f32(w, key, c->layer_norm_eps));
    if (p->tok)
        SPRY_TRY(put_tokenizer(w, m, path, p, tl));

    gguf_param *ps = tmp_alloc(tl, sizeof *ps * (size_t)(6 + 12 * c->n_layer));
    if (!ps)
        return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", path);
    int64_t n = list_params(m, ps);
    for (int64_t i = 0; i < n; i++)
        SPRY_TRY(put_param(w, m, &ps[i], p->wtype, tl, path));
    return spry_gguf_writer_write(w, path);
}

spry_status spry_gguf_export_model(const spry_model *m, const char *path,
                                   const spry_gguf_export_params *p) {
    spry_gguf_export_params def = spry_gguf_export_params_default();
    if (m->cfg.arch == SPRY_ARCH_BERT)
        return spry_errorf(SPRY_ERR_UNSUPPORTED, "%s: GGUF export supports gpt2 and bloom, not bert", path);
    if (!p)
        p = &def;
    spry_gguf_writer *w;
    SPRY_TRY(spry_gguf_writer_init(&w));
    tmp_list tl    = {0};
    spry_status st = export_model(w, m, path, p, &tl);
    tmp_free(&tl);
    spry_gguf_writer_free(w);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Import

// Element i of a F32 / F16 / BF16 tensor as f32 (the mapping may be unaligned: memcpy).
static float load_elem(const spry_gguf_tensor *t, int64_t i) {
    const unsigned char *p = t->data;
    if (t->type == SPRY_GGML_TYPE_F32) {
        float v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return t->type == SPRY_GGML_TYPE_F16 ? spry_f16_to_f32(h) : spry_bf16_to_f32(h);
}

// Checks t's type and shape against spry tensor want ((rows, cols) = ne {cols, rows}).
static spry_status check_tensor(const char *path, const spry_gguf_tensor *t,
                                const spry_tensor *want) {
    const spry_ggml_type_traits *tt = spry_ggml_type_info(t->type);
    if (t->type != SPRY_GGML_TYPE_F32 && t->type != SPRY_GGML_TYPE_F16 &&
        t->type != SPRY_GGML_TYPE_BF16 && t->type != SPRY_GGML_TYPE_Q8_0 && t->type != SPRY_GGML_TYPE_Q4_0)
        return spry_errorf(SPRY_ERR_UNSUPPORTED,
                           "%s: tensor '%s' has type %s (%d); spry reads F32, F16, BF16, Q8_0 and "
                           "Q4_0 GGUF tensors",
                           path, t->name, tt->name, t->type);
    int64_t e[SPRY_GGUF_MAX_DIMS] = {want->shape[want->ndim - 1],
                                     want->ndim == 2 ? want->shape[0] : 1, 1, 1};
    if (memcmp(e, t->ne, sizeof e) != 0 || t->n_dims > (uint32_t)want->ndim)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: tensor '%s' has ne (%lld, %lld, %lld, %lld) with n_dims %u, "
                           "expected (%lld, %lld) for this model's config",
                           path, t->name, (long long)t->ne[0], (long long)t->ne[1],
                           (long long)t->ne[2], (long long)t->ne[3], t->n_dims, (long long)e[0],
                           (long long)e[1]);
    return SPRY_OK;
}

// A u32 hyperparameter "<arch>.<name>" (strict type, as llama.cpp reads it).
static spry_status get_hp(const spry_gguf *g, const char *arch, const char *name, int64_t *v) {
    char key[96];
    uint32_t u;
    snprintf(key, sizeof key, "%s.%s", arch, name);
    spry_status st = spry_gguf_get_u32(g, key, &u);
    if (st == SPRY_ERR_NOT_FOUND)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: required key '%s' not found", spry_gguf_path(g),
                           key);
    SPRY_TRY(st);
    *v = u;
    return SPRY_OK;
}

// The config from the metadata and token_embd.weight.
static spry_status read_config(const spry_gguf *g, spry_model_config *c) {
    const char *path = spry_gguf_path(g), *arch;
    spry_status st   = spry_gguf_get_str(g, "general.architecture", &arch, NULL);
    if (st == SPRY_ERR_NOT_FOUND)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: required key 'general.architecture' not found",
                           path);
    SPRY_TRY(st);
    bool gpt2 = !strcmp(arch, "gpt2"), bloom = !strcmp(arch, "bloom");
    if (!gpt2 && !bloom)
        return spry_errorf(SPRY_ERR_UNSUPPORTED,
                           "%s: general.architecture ('%.40s') is not gpt2 or bloom", path, arch);
    int64_t ctx = 0, C = 0, I = 0, L = 0, H = 0;
    SPRY_TRY(get_hp(g, arch, "context_length", &ctx));
    SPRY_TRY(get_hp(g, arch, "embedding_length", &C));
    SPRY_TRY(get_hp(g, arch, "feed_forward_length", &I));
    SPRY_TRY(get_hp(g, arch, "block_count", &L));
    SPRY_TRY(get_hp(g, arch, "attention.head_count", &H));
    char key[96];
    snprintf(key, sizeof key, "%s.attention.head_count_kv", arch);
    if (spry_gguf_find_key(g, key) >= 0) {
        int64_t hkv = 0;
        SPRY_TRY(get_hp(g, arch, "attention.head_count_kv", &hkv));
        if (hkv != H)
            return spry_errorf(SPRY_ERR_UNSUPPORTED,
                               "%s: %s (%lld) differs from head_count (%lld): spry's %s has no "
                               "grouped-query attention",
                               path, key, (long long)hkv, (long long)H, arch);
    }
    float eps = 0;
    snprintf(key, sizeof key, "%s.attention.layer_norm_epsilon", arch);
    st = spry_gguf_get_f32(g, key, &eps);
    if (st == SPRY_ERR_NOT_FOUND)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: required key '%s' not found", path, key);
    SPRY_TRY(st);
    if (spry_gguf_find_key(g, "general.file_type") >= 0) {
        uint32_t ft;
        SPRY_TRY(spry_gguf_get_u32(g, "general.file_type", &ft));
    }

    const spry_gguf_tensor *te = spry_gguf_find_tensor(g, "token_embd.weight");
    if (!te)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: tensor 'token_embd.weight' not found", path);
    if (te->ne[0] != C || te->ne[2] != 1 || te->ne[3] != 1)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: tensor 'token_embd.weight' has ne (%lld, %lld, %lld, %lld), "
                           "expected (%lld, vocab)",
                           path, (long long)te->ne[0], (long long)te->ne[1], (long long)te->ne[2],
                           (long long)te->ne[3], (long long)C);
    int64_t V = te->ne[1];
    if (spry_gguf_find_key(g, "tokenizer.ggml.tokens") >= 0) {
        const spry_gguf_kv *kv;
        SPRY_TRY(spry_gguf_get_arr(g, "tokenizer.ggml.tokens", SPRY_GGUF_TYPE_STRING, &kv));
        if ((int64_t)kv->n != V)
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: tokenizer.ggml.tokens has %llu entries but token_embd.weight "
                               "has %lld rows",
                               path, (unsigned long long)kv->n, (long long)V);
    }
    if (gpt2) {
        *c = spry_model_config_gpt2(V, ctx, C, L, H);
    } else {
        *c = (spry_model_config){.arch       = SPRY_ARCH_BLOOM,
                                 .vocab_size = V,
                                 .n_embd     = C,
                                 .n_layer    = L,
                                 .n_head     = H,
                                 .init_std   = 0.02f};
    }
    c->n_inner        = I;
    c->layer_norm_eps = eps;
    return SPRY_OK;
}

static spry_status import_params(const spry_gguf *g, spry_model *m) {
    const char *path = spry_gguf_path(g);
    int64_t np       = 6 + 12 * m->cfg.n_layer;
    gguf_param *ps   = malloc(sizeof *ps * (size_t)np);
    float *tmp       = NULL;
    if (!ps)
        return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", path);
    int64_t n = list_params(m, ps), found = 0;
    spry_status st = SPRY_OK;
    for (int64_t i = 0; i < n && !st; i++) {
        const spry_gguf_tensor *t = spry_gguf_find_tensor(g, ps[i].name);
        if (!t) {
            if (ps[i].copy)
                continue; // output.weight is optional: spry ties it anyway
            st = spry_errorf(SPRY_ERR_FORMAT, "%s: tensor '%s' not found", path, ps[i].name);
            break;
        }
        found++;
        if ((st = check_tensor(path, t, ps[i].t)) != SPRY_OK)
            break;
        spry_tensor *dt = ps[i].t;
        int64_t numel   = spry_tensor_numel(dt);
        float *dst      = dt->data;
        if (ps[i].qkv || ps[i].copy) {
            free(tmp);
            tmp = malloc((size_t)numel * sizeof *tmp);
            if (!tmp) {
                st = spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            dst = tmp;
        }
        if (t->type == SPRY_GGML_TYPE_F32)
            memcpy(dst, t->data, (size_t)numel * sizeof *dst);
        else if (t->type == SPRY_GGML_TYPE_Q8_0 || t->type == SPRY_GGML_TYPE_Q4_0)
            st = spry_dequantize_rows(t->type == SPRY_GGML_TYPE_Q8_0 ? SPRY_WFMT_Q8_0 : SPRY_WFMT_Q4_0, t->data,
                                      dst, t->ne[1], t->ne[0]);
        else
            for (int64_t k = 0; k < numel; k++)
                dst[k] = load_elem(t, k);
        if (ps[i].qkv) {
            int64_t H = m->cfg.n_head, D = m->cfg.n_embd / H;
            qkv_reorder(tmp, dt->data, H, D, dt->ndim == 2 ? dt->shape[1] : 1, false);
        } else if (ps[i].copy && memcmp(tmp, dt->data, (size_t)numel * sizeof *tmp) != 0) {
            st = spry_errorf(SPRY_ERR_UNSUPPORTED,
                             "%s: tensor 'output.weight' differs from 'token_embd.weight': spry's "
                             "models tie the LM head to the token embedding",
                             path);
        }
    }
    if (!st && found != spry_gguf_n_tensors(g)) { // name the first tensor spry has no use for
        for (int64_t k = 0; k < spry_gguf_n_tensors(g); k++) {
            const spry_gguf_tensor *t = spry_gguf_tensor_at(g, k);
            bool use                  = false;
            for (int64_t i = 0; i < n && !use; i++)
                use = !strcmp(ps[i].name, t->name);
            if (!use) {
                st = spry_errorf(SPRY_ERR_FORMAT,
                                 "%s: unexpected tensor '%s' for a %lld-layer %s model", path,
                                 t->name, (long long)m->cfg.n_layer, arch_name(m->cfg.arch));
                break;
            }
        }
    }
    free(tmp);
    free(ps);
    return st;
}

spry_status spry_gguf_import_model(const char *path, spry_model **out) {
    *out = NULL;
    spry_gguf *g;
    SPRY_TRY(spry_gguf_open(path, &g));
    spry_model_config cfg;
    spry_model *m  = NULL;
    spry_status st = read_config(g, &cfg);
    if (!st) {
        st = spry_model_init(&cfg, &m);
        if (st) { // name the file in the config error
            char msg[512];
            snprintf(msg, sizeof msg, "%s", spry_last_error());
            st = spry_errorf(st, "%s: %s", path, msg);
        }
    }
    if (!st)
        st = import_params(g, m);
    spry_gguf_close(g);
    if (st) {
        spry_model_free(m);
        return st;
    }
    *out = m;
    return SPRY_OK;
}

int64_t spry_gguf_engine_rows(const spry_gguf *g, const spry_model *m, spry_wfmt fmt, const void **rows) {
    int64_t L = m->cfg.n_layer, n = 0;
    int     type = fmt == SPRY_WFMT_Q8_0 ? SPRY_GGML_TYPE_Q8_0 : fmt == SPRY_WFMT_Q4_0 ? SPRY_GGML_TYPE_Q4_0 : -1;
    static const char *const names[4] = {"attn_qkv", "attn_output", "ffn_up", "ffn_down"};
    for (int64_t i = 0; i <= 4 * L; i++) {
        rows[i] = NULL;
        if (type < 0 || (i < 4 * L && i % 4 == 0 && m->cfg.arch == SPRY_ARCH_BLOOM)) continue;
        char name[SPRY_GGUF_MAX_NAME];
        const spry_tensor *t;
        if (i < 4 * L) {
            const spry_block *b = &m->blocks[i / 4];
            t                   = (const spry_tensor *[]){b->qkv_w, b->proj_w, b->fc_w, b->fc2_w}[i % 4];
            snprintf(name, sizeof name, "blk.%lld.%s.weight", (long long)(i / 4), names[i % 4]);
        } else {
            t = m->wte;
            snprintf(name, sizeof name, "%s", spry_gguf_find_tensor(g, "output.weight") ? "output.weight" : "token_embd.weight");
        }
        const spry_gguf_tensor *gt = spry_gguf_find_tensor(g, name);
        if (gt && gt->type == type && gt->n_dims == 2 && gt->ne[0] == t->shape[1] && gt->ne[1] == t->shape[0]) {
            rows[i] = gt->data;
            n++;
        }
    }
    return n;
}
