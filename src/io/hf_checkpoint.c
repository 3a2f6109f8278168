/*
 * hf_checkpoint.c -- GPT-2 / BLOOM / BERT weights in Hugging Face's safetensors layout (see
 * hf_checkpoint.h): names with or without the "transformer." (BERT: "bert.") prefix, f32/bf16/f16
 * on read, GPT-2's Conv1D weights (in, out) on disk and (out, in) in memory. BERT's MLM head
 * ("cls.predictions.*") has no prefix; its decoder is tied to the word embeddings and not stored.
 */
#include "spry/hf_checkpoint.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "spry/dtype.h"
#include "spry/fs.h"
#include "spry/safetensors.h"

typedef struct named_param {
    const char  *name;  // internal name (no prefix)
    spry_tensor *t;
    bool         conv1d;
} named_param;

// Visits every parameter with its Conv1D flag (true only for GPT-2's block weights).
static int64_t list_params(const spry_model *m, named_param *out) {
    bool    gpt2 = m->cfg.arch == SPRY_ARCH_GPT2;
    int64_t n    = 0;
    for (int64_t i = 0; i < m->params.n_items; i++) {
        const spry_tensor *t    = &m->params.items[i].t;
        bool               conv = gpt2 && spry_model_param_is_conv1d(m, t->name);
        out[n++] = (named_param){.name = t->name, .t = (spry_tensor *)t, .conv1d = conv};
    }
    return n;
}

// The name a parameter has in a Hugging Face file (save_pretrained's prefixes).
static void file_name(const spry_model *m, const char *name, char *buf, size_t n) {
    if (m->cfg.arch != SPRY_ARCH_BERT)
        snprintf(buf, n, "transformer.%s", name);
    else if (!strncmp(name, "cls.", 4))
        snprintf(buf, n, "%s", name);
    else
        snprintf(buf, n, "bert.%s", name);
}

static float load_elem(const spry_st_tensor_info *info, int64_t i) {
    switch (info->dtype) {
    case SPRY_DTYPE_F32: {
        float v;
        memcpy(&v, (const char *)info->data + 4 * i, 4);
        return v;
    }
    case SPRY_DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, (const char *)info->data + 2 * i, 2);
        return spry_bf16_to_f32(h);
    }
    default: {
        uint16_t h;
        memcpy(&h, (const char *)info->data + 2 * i, 2);
        return spry_f16_to_f32(h);
    }
    }
}

// Copies every parameter of m from the first of the n open files holding it (HF names, with or
// without "transformer."), Conv1D matrices transposed, F32/BF16/F16 converted. label names the
// checkpoint in messages.
static spry_status load_from(spry_model *m, spry_safetensors *const *files, int n_files, const char *label) {
    named_param *ps = malloc(sizeof *ps * (size_t)m->params.n_items);
    if (!ps) return spry_errorf(SPRY_ERR_NOMEM, "out of memory");
    int64_t     n = list_params(m, ps);
    spry_status rc = SPRY_OK;
    for (int64_t i = 0; i < n && !rc; i++) {
        char full[96];
        file_name(m, ps[i].name, full, sizeof full);
        const spry_st_tensor_info *info = NULL;
        for (int f = 0; f < n_files && !info; f++) {
            info = spry_safetensors_find(files[f], full);
            if (!info) info = spry_safetensors_find(files[f], ps[i].name);
        }
        if (!info) {
            rc = spry_errorf(SPRY_ERR_FORMAT, "%s: tensor \"%s\" is missing. HINT: is config.json for this checkpoint?",
                             label, full);
            break;
        }
        if (info->dtype != SPRY_DTYPE_F32 && info->dtype != SPRY_DTYPE_BF16 && info->dtype != SPRY_DTYPE_F16) {
            rc = spry_errorf(SPRY_ERR_FORMAT, "%s: tensor \"%s\" has dtype %s; expected F32, BF16 or F16",
                             label, info->name, info->st_dtype);
            break;
        }
        spry_tensor *t = ps[i].t;
        bool shape_ok  = info->ndim == t->ndim;
        for (int d = 0; shape_ok && d < t->ndim; d++)
            shape_ok = info->shape[d] == t->shape[ps[i].conv1d ? t->ndim - 1 - d : d];
        if (!shape_ok) {
            rc = spry_errorf(SPRY_ERR_FORMAT, "%s: tensor \"%s\" has the wrong shape for this config (ndim %d)%s",
                             label, info->name, info->ndim, ps[i].conv1d ? " (Conv1D layout (in, out) expected)" : "");
            break;
        }
        float  *dst = t->data;
        int64_t rows = t->ndim == 2 ? t->shape[0] : 1, cols = t->shape[t->ndim - 1];
        if (ps[i].conv1d) // file (in=cols, out=rows) -> (out, in)
            for (int64_t r = 0; r < rows; r++)
                for (int64_t c = 0; c < cols; c++) dst[r * cols + c] = load_elem(info, c * rows + r);
        else
            for (int64_t k = 0; k < rows * cols; k++) dst[k] = load_elem(info, k);
    }
    free(ps);
    return rc;
}

spry_status spry_model_load_weights(spry_model *m, const char *path) {
    spry_safetensors *st;
    SPRY_TRY(spry_safetensors_open(path, &st));
    spry_status rc = load_from(m, &st, 1, path);
    spry_safetensors_close(st);
    return rc;
}

// Hugging Face's sharded layout: model.safetensors.index.json maps every tensor name to a shard
// file in the same directory ({"weight_map": {"name": "model-00001-of-00002.safetensors"}}).
static spry_status load_sharded(spry_model *m, const char *dir, const char *index_path) {
    char       *text = NULL;
    spry_status rc   = spry_read_file(index_path, (size_t)64 << 20, &text, NULL);
    if (rc) return rc;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *wm = j ? cJSON_GetObjectItemCaseSensitive(j, "weight_map") : NULL;
    if (!cJSON_IsObject(wm) || !wm->child) {
        cJSON_Delete(j);
        return spry_errorf(SPRY_ERR_FORMAT, "%s: \"weight_map\" missing or empty", index_path);
    }
    enum { MAX_SHARDS = 4096 };
    const char       *names[MAX_SHARDS];
    spry_safetensors *files[MAX_SHARDS];
    int               nf = 0;
    for (const cJSON *it = wm->child; it && !rc; it = it->next) {
        if (!cJSON_IsString(it) || !it->valuestring[0] || strchr(it->valuestring, '/')) {
            rc = spry_errorf(SPRY_ERR_FORMAT, "%s: weight_map[\"%s\"] is not a file name in this directory",
                             index_path, it->string);
            break;
        }
        bool seen = false;
        for (int f = 0; f < nf && !seen; f++) seen = !strcmp(names[f], it->valuestring);
        if (seen) continue;
        if (nf == MAX_SHARDS) {
            rc = spry_errorf(SPRY_ERR_FORMAT, "%s: more than %d shard files", index_path, MAX_SHARDS);
            break;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, it->valuestring);
        rc = spry_safetensors_open(path, &files[nf]);
        if (!rc) names[nf++] = it->valuestring;
    }
    if (!rc) rc = load_from(m, files, nf, index_path);
    for (int f = 0; f < nf; f++) spry_safetensors_close(files[f]);
    cJSON_Delete(j);
    return rc;
}

spry_status spry_model_save_weights(const spry_model *m, const char *path) {
    int64_t        np    = m->params.n_items;
    named_param   *ps    = malloc(sizeof *ps * (size_t)np);
    spry_st_entry *ents  = calloc((size_t)np, sizeof *ents);
    char         (*names)[96] = malloc(sizeof *names * (size_t)np);
    float        **tmp   = calloc((size_t)np, sizeof *tmp);
    int64_t       (*shapes)[2] = malloc(sizeof *shapes * (size_t)np);
    spry_status    rc    = (ps && ents && names && tmp && shapes) ? SPRY_OK : spry_errorf(SPRY_ERR_NOMEM, "out of memory");
    int64_t        n     = rc ? 0 : list_params(m, ps);
    for (int64_t i = 0; i < n && !rc; i++) {
        const spry_tensor *t = ps[i].t;
        file_name(m, ps[i].name, names[i], sizeof names[i]);
        const void *data = t->data;
        shapes[i][0] = t->shape[0];
        shapes[i][1] = t->ndim == 2 ? t->shape[1] : 0;
        if (ps[i].conv1d) {
            int64_t rows = t->shape[0], cols = t->shape[1];
            tmp[i] = malloc(sizeof(float) * (size_t)(rows * cols));
            if (!tmp[i]) {
                rc = spry_errorf(SPRY_ERR_NOMEM, "out of memory");
                break;
            }
            for (int64_t r = 0; r < rows; r++)
                for (int64_t c = 0; c < cols; c++) tmp[i][c * rows + r] = ((const float *)t->data)[r * cols + c];
            data         = tmp[i];
            shapes[i][0] = cols;
            shapes[i][1] = rows;
        }
        ents[i] = (spry_st_entry){.name = names[i], .dtype = SPRY_DTYPE_F32, .ndim = t->ndim,
                                  .shape = shapes[i], .data = data};
    }
    if (!rc) {
        const char *meta[] = {"format", "pt"};
        rc = spry_safetensors_write(path, ents, n, meta, 1);
    }
    for (int64_t i = 0; tmp && i < np; i++) free(tmp[i]);
    free(tmp), free(ps), free(ents), free(names), free(shapes);
    return rc;
}

spry_status spry_model_load_dir(const char *dir, spry_model **out) {
    char              path[4096];
    spry_model_config cfg;
    *out = NULL;
    snprintf(path, sizeof path, "%s/config.json", dir);
    SPRY_TRY(spry_model_config_load(path, &cfg));
    spry_model *m;
    SPRY_TRY(spry_model_init(&cfg, &m));
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct stat sb;
    spry_status st;
    if (stat(path, &sb) != 0) { // no single file: the sharded layout, if there is an index
        char index[4200];
        snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
        st = stat(index, &sb) == 0 ? load_sharded(m, dir, index) : spry_model_load_weights(m, path);
    } else {
        st = spry_model_load_weights(m, path);
    }
    if (st) {
        spry_model_free(m);
        return st;
    }
    *out = m;
    return SPRY_OK;
}
