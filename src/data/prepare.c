/*
 * prepare.c -- text to an indexed dataset (see prepare.h).
 */
#define _DEFAULT_SOURCE
#include "spry/prepare.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "spry/indexed.h"

spry_prepare_params spry_prepare_params_default(void) {
    return (spry_prepare_params){.format = SPRY_PREPARE_TEXT, .json_key = "text"};
}

char *spry_brown_to_text(const char *s, size_t n, size_t *len) {
    char  *out = malloc(n + 2);
    size_t k = 0, i = 0;
    if (!out) return NULL;
    while (i < n) {
        // one line = one sentence
        size_t e = i;
        while (e < n && s[e] != '\n') e++;
        bool any = false;
        size_t j = i;
        while (j < e) {
            while (j < e && (s[j] == ' ' || s[j] == '\t' || s[j] == '\r')) j++;
            size_t t = j;
            while (t < e && s[t] != ' ' && s[t] != '\t' && s[t] != '\r') t++;
            if (t > j) {
                size_t cut = t;
                for (size_t q = t; q > j; q--)
                    if (s[q - 1] == '/') {
                        cut = q - 1;
                        break;
                    }
                if (any) out[k++] = ' ';
                memcpy(out + k, s + j, cut - j);
                k += cut - j;
                any = true;
            }
            j = t;
        }
        if (any) out[k++] = '\n';
        i = e + 1;
    }
    out[k] = 0;
    *len   = k;
    return out;
}

/* ---- input files -------------------------------------------------------------------------- */

typedef struct file_list {
    char  **paths;
    int64_t n, cap;
} file_list;

static spry_status list_add(file_list *l, const char *p) {
    if (l->n == l->cap) {
        l->cap     = l->cap ? 2 * l->cap : 64;
        char **np  = realloc(l->paths, sizeof(char *) * (size_t)l->cap);
        if (!np) return spry_errorf(SPRY_ERR_NOMEM, "out of memory listing inputs");
        l->paths = np;
    }
    l->paths[l->n] = strdup(p);
    if (!l->paths[l->n]) return spry_errorf(SPRY_ERR_NOMEM, "out of memory listing inputs");
    l->n++;
    return SPRY_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static bool brown_name(const char *base) {
    return strlen(base) == 4 && base[0] == 'c' && base[1] >= 'a' && base[1] <= 'r' && base[2] >= '0' &&
           base[2] <= '9' && base[3] >= '0' && base[3] <= '9';
}

static spry_status walk(file_list *l, const char *path, spry_prepare_format fmt, int depth) {
    struct stat sb;
    if (stat(path, &sb)) return spry_errorf(SPRY_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    if (S_ISREG(sb.st_mode)) {
        const char *base = strrchr(path, '/');
        base             = base ? base + 1 : path;
        if (fmt == SPRY_PREPARE_BROWN && depth > 0 && !brown_name(base)) return SPRY_OK;
        return list_add(l, path);
    }
    if (!S_ISDIR(sb.st_mode)) return SPRY_OK;
    if (depth > 32) return spry_errorf(SPRY_ERR_ARG, "%s: directories nested too deeply", path);
    DIR *d = opendir(path);
    if (!d) return spry_errorf(SPRY_ERR_IO, "%s: cannot open directory: %s", path, strerror(errno));
    file_list sub = {0};
    spry_status st = SPRY_OK;
    for (struct dirent *e; !st && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue; // hidden files, . and ..
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        st = list_add(&sub, p);
    }
    closedir(d);
    if (sub.n) qsort(sub.paths, (size_t)sub.n, sizeof(char *), cmp_str);
    for (int64_t i = 0; i < sub.n; i++) {
        if (!st) st = walk(l, sub.paths[i], fmt, depth + 1);
        free(sub.paths[i]);
    }
    free(sub.paths);
    return st;
}

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, k = 0;
    char  *buf = malloc(cap + 1);
    for (size_t r; buf && (r = fread(buf + k, 1, cap - k, f)) > 0;) {
        k += r;
        if (k == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb, cap *= 2;
        }
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return NULL;
    }
    if (buf) buf[k] = 0, *n = k;
    return buf;
}

/* ---- documents in batches ----------------------------------------------------------------- */

typedef struct doc {
    char       *text;
    size_t      len;
    spry_tokens ids;
} doc;

typedef struct batch {
    doc    *docs;
    int64_t n, cap;
    size_t  bytes;
} batch;

static spry_status batch_add(batch *b, char *text, size_t len) {
    if (b->n == b->cap) {
        b->cap  = b->cap ? 2 * b->cap : 256;
        doc *nd = realloc(b->docs, sizeof(doc) * (size_t)b->cap);
        if (!nd) {
            free(text);
            return spry_errorf(SPRY_ERR_NOMEM, "out of memory");
        }
        b->docs = nd;
    }
    b->docs[b->n++] = (doc){.text = text, .len = len};
    b->bytes += len;
    return SPRY_OK;
}

static spry_status flush(const spry_tokenizer *tok, const spry_prepare_params *p, batch *b,
                         spry_indexed_builder *out, spry_prepare_stats *stats, int32_t eod, FILE *text_out) {
    int         nth = p->n_threads > 0 ? p->n_threads : omp_get_max_threads();
    spry_status st  = SPRY_OK;
    for (int64_t i = 0; text_out && i < b->n; i++) {
        bool ok = fwrite(b->docs[i].text, 1, b->docs[i].len, text_out) == b->docs[i].len && fputc('\n', text_out) != EOF;
        if (!ok) st = spry_errorf(SPRY_ERR_IO, "%s: write failed: %s", p->text_out, strerror(errno));
    }
    if (!out) {
        for (int64_t i = 0; i < b->n; i++) free(b->docs[i].text), stats->n_docs++;
        b->n = 0, b->bytes = 0;
        return st;
    }
#pragma omp parallel num_threads(nth)
    {
        spry_tokenizer_cache *cache = NULL;
        spry_tokenizer_cache_init(1 << 16, &cache);
        spry_encode_params ep = spry_encode_params_default();
        ep.cache              = cache;
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < b->n; i++) {
            spry_status s = spry_tokenizer_encode(tok, b->docs[i].text, b->docs[i].len, &ep, &b->docs[i].ids);
            if (!s && eod >= 0) s = spry_tokens_push(&b->docs[i].ids, eod);
            if (s) {
#pragma omp critical
                st = s;
            }
        }
        spry_tokenizer_cache_free(cache);
    }
    for (int64_t i = 0; i < b->n; i++) {
        if (!st) st = spry_indexed_builder_add_item_i32(out, b->docs[i].ids.ids, b->docs[i].ids.n);
        if (!st) st = spry_indexed_builder_end_document(out);
        if (!st) stats->n_tokens += b->docs[i].ids.n, stats->n_docs++;
        free(b->docs[i].text);
        spry_tokens_free(&b->docs[i].ids);
    }
    b->n = 0, b->bytes = 0;
    return st;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

spry_status spry_prepare(const spry_tokenizer *tok, const spry_prepare_params *p,
                         spry_prepare_stats *stats) {
    memset(stats, 0, sizeof *stats);
    double t0 = now();
    if (p->n_inputs <= 0) return spry_errorf(SPRY_ERR_ARG, "prepare: no inputs given");
    if (!p->out_prefix && !p->text_out) return spry_errorf(SPRY_ERR_ARG, "prepare: no output given");
    if (p->out_prefix && !tok) return spry_errorf(SPRY_ERR_ARG, "prepare: a tokenizer is needed for a dataset");
    int32_t eod = -1;
    if (p->append_eod) {
        eod = spry_tokenizer_special_id(tok, "<|endoftext|>");
        if (eod < 0) eod = spry_tokenizer_vocab_id(tok, "<|endoftext|>");
        if (eod < 0)
            return spry_errorf(SPRY_ERR_ARG, "prepare: the tokenizer has no <|endoftext|> token for --eod. "
                                             "HINT: train it with --special \"<|endoftext|>\"");
    }
    file_list   files = {0};
    spry_status st    = SPRY_OK;
    for (int i = 0; i < p->n_inputs && !st; i++) st = walk(&files, p->inputs[i], p->format, 0);
    if (!st && files.n == 0) st = spry_errorf(SPRY_ERR_ARG, "prepare: no input files found in %s%s", p->inputs[0],
                                              p->n_inputs > 1 ? " ..." : "");
    spry_indexed_builder *out = NULL;
    FILE                 *text_out = NULL;
    if (!st && p->text_out && !(text_out = fopen(p->text_out, "wb")))
        st = spry_errorf(SPRY_ERR_IO, "%s: cannot write: %s", p->text_out, strerror(errno));
    if (!st && p->out_prefix)
        st = spry_indexed_builder_init(p->out_prefix, spry_indexed_dtype_for_vocab(spry_tokenizer_n_vocab(tok)),
                                       SPRY_INDEXED_TABLE_AUTO, &out);
    batch b = {0};
    for (int64_t f = 0; f < files.n && !st; f++) {
        size_t n;
        char  *text = read_all(files.paths[f], &n);
        if (!text) {
            st = spry_errorf(SPRY_ERR_IO, "%s: cannot read: %s", files.paths[f], strerror(errno));
            break;
        }
        stats->n_files++, stats->n_bytes += (int64_t)n;
        if (p->format == SPRY_PREPARE_TEXT) {
            st = batch_add(&b, text, n);
        } else if (p->format == SPRY_PREPARE_BROWN) {
            size_t len;
            char  *plain = spry_brown_to_text(text, n, &len);
            free(text);
            st = plain ? batch_add(&b, plain, len) : spry_errorf(SPRY_ERR_NOMEM, "out of memory");
        } else {
            int64_t line = 0;
            for (char *s = text, *e; !st && *s; s = *e ? e + 1 : e) {
                e = strchr(s, '\n');
                if (!e) e = s + strlen(s);
                line++;
                char save = *e;
                *e        = 0;
                bool blank = strspn(s, " \t\r") == (size_t)(e - s);
                if (!blank) {
                    cJSON       *j = cJSON_Parse(s);
                    const cJSON *v = j ? cJSON_GetObjectItemCaseSensitive(j, p->json_key) : NULL;
                    if (!j)
                        st = spry_errorf(SPRY_ERR_FORMAT, "%s:%lld: not valid JSON", files.paths[f], (long long)line);
                    else if (!cJSON_IsString(v))
                        st = spry_errorf(SPRY_ERR_FORMAT, "%s:%lld: no string field \"%s\"", files.paths[f],
                                         (long long)line, p->json_key);
                    else {
                        char *d = strdup(v->valuestring);
                        st      = d ? batch_add(&b, d, strlen(d)) : spry_errorf(SPRY_ERR_NOMEM, "out of memory");
                    }
                    cJSON_Delete(j);
                }
                *e = save;
            }
            free(text);
        }
        if (!st && (b.bytes > (32u << 20) || b.n >= 65536)) st = flush(tok, p, &b, out, stats, eod, text_out);
    }
    if (!st && b.n) st = flush(tok, p, &b, out, stats, eod, text_out);
    for (int64_t i = 0; i < b.n; i++) free(b.docs[i].text), spry_tokens_free(&b.docs[i].ids);
    free(b.docs);
    if (!st && stats->n_docs == 0) st = spry_errorf(SPRY_ERR_ARG, "prepare: the inputs hold no documents");
    if (!st && out) st = spry_indexed_builder_finalize(out);
    spry_indexed_builder_free(out);
    if (text_out && fclose(text_out) && !st)
        st = spry_errorf(SPRY_ERR_IO, "%s: write failed: %s", p->text_out, strerror(errno));
    for (int64_t i = 0; i < files.n; i++) free(files.paths[i]);
    free(files.paths);
    stats->seconds = now() - t0;
    return st;
}
