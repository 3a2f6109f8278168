/*
 * loader.c -- packs an indexed dataset's documents into GPT training samples of seq_len + 1
 * tokens, with Megatron's train/valid/test split arithmetic and a per-epoch seeded shuffle that
 * resumes exactly from (epoch, index). See loader.h and docs/data.md.
 *
 * References: Megatron-LM megatron/data/dataset_utils.py get_train_valid_test_split_ (split),
 * megatron/data/gpt_dataset.py _build_sample_idx (samples of seq_length + 1 tokens that overlap
 * by one; (tokens - 1) // seq_length samples). Unlike Megatron, documents are not reordered
 * between epochs: the packing is fixed and the sample order is reshuffled, which keeps a
 * position two integers and makes every sample reconstructible from its index.
 *
 * Cost per sample: one binary search over the split's item offsets, then a copy/convert of
 * T + 1 tokens straight out of the .bin mapping; nothing is allocated after init.
 */
#include "spry/loader.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "spry/rng.h"

// Counter high word of the shuffle draws: "LOAD" in the top half keeps them apart from other
// users of the same seed (weight init, dropout) that count streams from 0.
#define SHUFFLE_STREAM_TAG ((uint64_t)0x4c4f4144u << 32)

struct spry_loader {
    spry_indexed       *owned; // the dataset if the loader opened it
    const spry_indexed *ds;
    int64_t             T, B;
    uint64_t            seed;
    int64_t             eod; // -1: none
    bool                shuffle;
    int64_t             doc_first, doc_end;   // the split's documents
    int64_t             item_first, n_items;  // the split's items [item_first, +n_items)
    int64_t            *cum;                  // (n_items + 1,) stream offset of each item
    int64_t             n_tokens, n_samples;
    int64_t             pad;        // encoder samples: the padding id; -1: packed GPT samples
    int64_t            *enc_start;  // encoder: (n_samples,) stream position of each sample
    int32_t            *enc_len;    // encoder: (n_samples,) its real tokens, 1..T
    int64_t            *perm;       // (n_samples,) sample order of epoch perm_epoch (shuffle)
    int64_t             perm_epoch; // -1: none yet
    spry_loader_pos     pos;
};

static const char *const k_split_names[3] = {"train", "valid", "test"};

spry_loader_params spry_loader_params_default(void) {
    return (spry_loader_params){
        .prefix     = NULL,
        .dataset    = NULL,
        .table      = SPRY_INDEXED_TABLE_AUTO,
        .split      = "969, 30, 1",
        .which      = SPRY_LOADER_SPLIT_TRAIN,
        .seq_len    = 1024,
        .batch_size = 8,
        .seed       = 1234,
        .eod_id     = -1,
        .shuffle    = true,
        .pad_id     = -1,
    };
}

// ---------------------------------------------------------------------------------------------
// Split arithmetic (Megatron's get_train_valid_test_split_).

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Parses s[0..n) (a Python float() of a token: blanks around a number) into *w.
static spry_status parse_weight(const char *split, const char *s, size_t n, double *w) {
    while (n > 0 && is_blank(*s)) s++, n--;
    while (n > 0 && is_blank(s[n - 1])) n--;
    char buf[64];
    if (n == 0 || n >= sizeof buf)
        return spry_errorf(SPRY_ERR_ARG,
                           "split \"%s\": weight \"%.*s\" is empty or too long HINT: three "
                           "non-negative numbers such as \"949,50,1\"",
                           split, (int)(n < 40 ? n : 40), s);
    memcpy(buf, s, n);
    buf[n]    = '\0';
    char *end = NULL;
    errno     = 0;
    double v  = strtod(buf, &end);
    if (end != buf + n || errno == ERANGE || !isfinite(v))
        return spry_errorf(SPRY_ERR_ARG,
                           "split \"%s\": weight \"%s\" is not a finite number HINT: three "
                           "non-negative numbers such as \"949,50,1\"",
                           split, buf);
    if (v < 0)
        return spry_errorf(SPRY_ERR_ARG, "split \"%s\": weight \"%s\" is negative", split, buf);
    *w = v;
    return SPRY_OK;
}

spry_status spry_loader_split_bounds(const char *split, int64_t n_docs, int64_t bounds[4]) {
    if (split == NULL) return spry_errorf(SPRY_ERR_ARG, "split string is NULL");
    SPRY_ASSERT(n_docs >= 0, "n_docs = %lld", (long long)n_docs);
    // Separator as in Megatron: ',' if present, else '/', else a single weight.
    char        sep = strchr(split, ',') ? ',' : strchr(split, '/') ? '/' : '\0';
    double      w[3] = {0, 0, 0};
    int         n_w  = 0;
    const char *s    = split;
    for (;;) {
        const char *e = sep ? strchr(s, sep) : NULL;
        size_t      n = e ? (size_t)(e - s) : strlen(s);
        if (n_w == 3)
            return spry_errorf(SPRY_ERR_ARG,
                               "split \"%s\": more than three weights (train, valid, test)",
                               split);
        SPRY_TRY(parse_weight(split, s, n, &w[n_w]));
        n_w++;
        if (e == NULL) break;
        s = e + 1;
    }
    double sum = w[0] + w[1] + w[2]; // missing weights stay 0, as Megatron pads them
    if (!(sum > 0))
        return spry_errorf(SPRY_ERR_ARG, "split \"%s\": the weights sum to 0", split);
    bounds[0] = 0;
    for (int i = 0; i < 3; i++) {
        // Python's int(round(x)) rounds half to even, as nearbyint does in the default mode.
        double part   = nearbyint((w[i] / sum) * (double)n_docs);
        bounds[i + 1] = bounds[i] + (int64_t)part;
    }
    int64_t diff = bounds[3] - n_docs;
    for (int i = 1; i < 4; i++) bounds[i] -= diff;
    // Megatron can produce a negative boundary in degenerate cases; keep them ordered.
    for (int i = 1; i < 4; i++) {
        if (bounds[i] < bounds[i - 1]) bounds[i] = bounds[i - 1];
        if (bounds[i] > n_docs) bounds[i] = n_docs;
    }
    bounds[3] = n_docs;
    return SPRY_OK;
}

// ---------------------------------------------------------------------------------------------
// Shuffle: Fisher-Yates over the epoch's samples, j drawn from 64 Philox bits.

static void make_perm(spry_loader *l, int64_t epoch) {
    int64_t *p = l->perm, n = l->n_samples;
    for (int64_t k = 0; k < n; k++) p[k] = k;
    for (int64_t k = n - 1; k > 0; k--) {
        uint32_t r[4];
        spry_philox(l->seed, SHUFFLE_STREAM_TAG | (uint64_t)epoch, (uint64_t)k, r);
        uint64_t x = ((uint64_t)r[0] << 32) | r[1];
        int64_t  j = (int64_t)(x % (uint64_t)(k + 1)); // bias <= n / 2^64: negligible
        int64_t  t = p[k];
        p[k]       = p[j];
        p[j]       = t;
    }
    l->perm_epoch = epoch;
}

// ---------------------------------------------------------------------------------------------
// Init / free.

void spry_loader_free(spry_loader *l) {
    if (l == NULL) return;
    spry_indexed_close(l->owned);
    free(l->cum);
    free(l->enc_start);
    free(l->enc_len);
    free(l->perm);
    free(l);
}

static spry_status check_params(const spry_loader_params *p) {
    if (p->seq_len < 1)
        return spry_errorf(SPRY_ERR_ARG, "loader: seq_len = %lld must be >= 1",
                           (long long)p->seq_len);
    if (p->batch_size < 1)
        return spry_errorf(SPRY_ERR_ARG, "loader: batch_size = %lld must be >= 1",
                           (long long)p->batch_size);
    if (p->eod_id < -1 || p->eod_id > INT32_MAX)
        return spry_errorf(SPRY_ERR_ARG,
                           "loader: eod_id = %lld must be a token id in [0, 2147483647] or -1 "
                           "(none)",
                           (long long)p->eod_id);
    if ((unsigned)p->which > (unsigned)SPRY_LOADER_SPLIT_TEST)
        return spry_errorf(SPRY_ERR_ARG, "loader: which = %d is not train (0), valid (1) or "
                                         "test (2)",
                           (int)p->which);
    if (p->pad_id < -1 || p->pad_id > INT32_MAX || (p->pad_id >= 0 && p->eod_id >= 0))
        return spry_errorf(SPRY_ERR_ARG,
                           "loader: pad_id = %lld with eod_id = %lld: encoder samples are padded "
                           "documents (pad_id a token id, no eod) HINT: drop --eod for an encoder",
                           (long long)p->pad_id, (long long)p->eod_id);
    if (p->dataset == NULL && p->prefix == NULL)
        return spry_errorf(SPRY_ERR_ARG, "loader: neither a dataset prefix nor a dataset given");
    return SPRY_OK;
}

// Builds l->cum: stream offsets of the split's items; an eod follows the last item of every
// document that has at least one token.
static spry_status build_stream(spry_loader *l) {
    const spry_indexed *ds = l->ds;
    int64_t             first, end, f2, e2;
    spry_indexed_doc_range(ds, l->doc_first, &first, &e2);
    spry_indexed_doc_range(ds, l->doc_end - 1, &f2, &end);
    l->item_first = first;
    l->n_items    = end - first;
    l->cum        = malloc((size_t)(l->n_items + 1) * sizeof *l->cum);
    if (l->cum == NULL)
        return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory for %lld item offsets",
                           spry_indexed_prefix(ds), (long long)l->n_items);
    int64_t pos = 0;
    l->cum[0]   = 0;
    for (int64_t d = l->doc_first; d < l->doc_end; d++) {
        int64_t a, b, doc_tokens = 0;
        spry_indexed_doc_range(ds, d, &a, &b);
        for (int64_t i = a; i < b; i++) {
            int64_t n;
            (void)spry_indexed_item(ds, i, &n);
            doc_tokens += n;
            pos += n;
            if (i == b - 1 && doc_tokens > 0 && l->eod >= 0) pos++;
            l->cum[i - first + 1] = pos;
        }
    }
    l->n_tokens = pos;
    return SPRY_OK;
}

// Encoder samples: every non-empty document cut into chunks of at most T tokens, in order.
static spry_status build_encoder_samples(spry_loader *l) {
    const spry_indexed *ds = l->ds;
    int64_t             n  = 0;
    for (int pass = 0; pass < 2; pass++) {
        n = 0;
        for (int64_t d = l->doc_first; d < l->doc_end; d++) {
            int64_t a, b;
            spry_indexed_doc_range(ds, d, &a, &b);
            int64_t p0 = l->cum[a - l->item_first], p1 = l->cum[b - l->item_first];
            for (int64_t p = p0; p < p1; p += l->T, n++)
                if (pass) {
                    l->enc_start[n] = p;
                    l->enc_len[n]   = (int32_t)(p1 - p < l->T ? p1 - p : l->T);
                }
        }
        if (!pass) {
            l->enc_start = malloc((size_t)(n > 0 ? n : 1) * sizeof *l->enc_start);
            l->enc_len   = malloc((size_t)(n > 0 ? n : 1) * sizeof *l->enc_len);
            if (!l->enc_start || !l->enc_len)
                return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory for %lld samples", spry_indexed_prefix(ds),
                                   (long long)n);
        }
    }
    l->n_samples = n;
    return SPRY_OK;
}

spry_status spry_loader_init(const spry_loader_params *params, spry_loader **out) {
    *out = NULL;
    SPRY_TRY(check_params(params));
    spry_loader *l = calloc(1, sizeof *l);
    if (l == NULL) return spry_errorf(SPRY_ERR_NOMEM, "loader: out of memory");
    l->T          = params->seq_len;
    l->B          = params->batch_size;
    l->seed       = params->seed;
    l->eod        = params->eod_id;
    l->pad        = params->pad_id;
    l->shuffle    = params->shuffle;
    l->perm_epoch = -1;
    spry_status s = SPRY_OK;
    if (params->dataset) {
        l->ds = params->dataset;
    } else {
        s = spry_indexed_open(params->prefix, params->table, &l->owned);
        if (s != SPRY_OK) goto fail;
        l->ds = l->owned;
    }
    const spry_indexed *ds  = l->ds;
    const char         *pre = spry_indexed_prefix(ds);
    spry_indexed_dtype  dt  = spry_indexed_elem_dtype(ds);
    if (dt == SPRY_INDEXED_DTYPE_F32 || dt == SPRY_INDEXED_DTYPE_F64) {
        s = spry_errorf(SPRY_ERR_UNSUPPORTED,
                        "%s: dtype %s (code %d) holds no token ids HINT: if this is a DeepSpeed "
                        "file, open it with the DeepSpeed table",
                        pre, spry_indexed_dtype_name(dt), spry_indexed_code(ds));
        goto fail;
    }

    int64_t n_docs = spry_indexed_n_docs(ds), bounds[4];
    s              = spry_loader_split_bounds(params->split, n_docs, bounds);
    if (s != SPRY_OK) goto fail;
    l->doc_first = bounds[params->which];
    l->doc_end   = bounds[params->which + 1];
    if (l->doc_end <= l->doc_first) {
        s = spry_errorf(SPRY_ERR_ARG,
                        "%s: split \"%s\" leaves the %s split no documents (it gets [%lld, "
                        "%lld) of %lld) HINT: give it a larger weight or use more documents",
                        pre, params->split, k_split_names[params->which], (long long)l->doc_first,
                        (long long)l->doc_end, (long long)n_docs);
        goto fail;
    }
    s = build_stream(l);
    if (s != SPRY_OK) goto fail;
    if (l->pad >= 0) {
        s = build_encoder_samples(l);
        if (s != SPRY_OK) goto fail;
        if (l->n_samples == 0) {
            s = spry_errorf(SPRY_ERR_ARG, "%s: the %s split (documents [%lld, %lld)) has no tokens",
                            pre, k_split_names[params->which], (long long)l->doc_first, (long long)l->doc_end);
            goto fail;
        }
    } else if (l->n_tokens <= l->T) {
        s = spry_errorf(SPRY_ERR_ARG,
                        "%s: seq_len = %lld is larger than the data: the %s split (documents "
                        "[%lld, %lld)) has %lld tokens, one sample needs %lld HINT: lower "
                        "seq_len or use more data",
                        pre, (long long)l->T, k_split_names[params->which],
                        (long long)l->doc_first, (long long)l->doc_end, (long long)l->n_tokens,
                        (long long)(l->T + 1));
        goto fail;
    }
    if (l->pad < 0) l->n_samples = (l->n_tokens - 1) / l->T;
    if (l->shuffle) {
        l->perm = malloc((size_t)l->n_samples * sizeof *l->perm);
        if (l->perm == NULL) {
            s = spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory for %lld samples", pre,
                            (long long)l->n_samples);
            goto fail;
        }
        make_perm(l, 0);
    }
    *out = l;
    return SPRY_OK;
fail:
    spry_loader_free(l);
    return s;
}

// ---------------------------------------------------------------------------------------------
// Samples.

// Reads the stream's tokens [p, p + rem) (eods included) into tokens.
static spry_status read_stream(const spry_loader *l, int64_t p, int64_t rem, int32_t *tokens) {
    // The item holding stream position p: the last i with cum[i] <= p (skips empty items).
    int64_t lo = 0, hi = l->n_items; // cum[lo] <= p < cum[hi]
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (l->cum[mid] <= p)
            lo = mid;
        else
            hi = mid;
    }
    int64_t i = lo;
    while (rem > 0) {
        int64_t len;
        (void)spry_indexed_item(l->ds, l->item_first + i, &len);
        int64_t off = p - l->cum[i];
        if (off < len) {
            int64_t m = len - off < rem ? len - off : rem;
            SPRY_TRY(spry_indexed_read_tokens(l->ds, l->item_first + i, off, m, tokens));
            tokens += m;
            p += m;
            rem -= m;
        } else { // the eod after the document's last item
            *tokens++ = (int32_t)l->eod;
            p++;
            rem--;
        }
        while (rem > 0 && p == l->cum[i + 1]) i++;
    }
    return SPRY_OK;
}

spry_status spry_loader_sample(const spry_loader *l, int64_t k, int32_t *tokens) {
    SPRY_ASSERT(k >= 0 && k < l->n_samples, "sample %lld of %lld", (long long)k,
                (long long)l->n_samples);
    if (l->pad < 0) return read_stream(l, k * l->T, l->T + 1, tokens);
    int64_t n = l->enc_len[k];
    for (int64_t t = n; t <= l->T; t++) tokens[t] = (int32_t)l->pad;
    return read_stream(l, l->enc_start[k], n, tokens);
}

spry_status spry_loader_next(spry_loader *l, int32_t *tokens) {
    spry_loader_pos pos = l->pos;
    for (int64_t b = 0; b < l->B; b++) {
        int64_t k = pos.index;
        if (l->shuffle) {
            if (l->perm_epoch != pos.epoch) make_perm(l, pos.epoch);
            k = l->perm[pos.index];
        }
        SPRY_TRY(spry_loader_sample(l, k, tokens + b * (l->T + 1)));
        if (++pos.index == l->n_samples) {
            pos.epoch++;
            pos.index = 0;
        }
    }
    l->pos = pos;
    return SPRY_OK;
}

spry_loader_pos spry_loader_state(const spry_loader *l) { return l->pos; }

spry_status spry_loader_set_state(spry_loader *l, spry_loader_pos pos) {
    if (pos.epoch < 0 || pos.index < 0 || pos.index >= l->n_samples)
        return spry_errorf(SPRY_ERR_ARG,
                           "%s: loader position {epoch %lld, index %lld} is invalid: epoch must "
                           "be >= 0 and index in [0, %lld) HINT: was the checkpoint written for "
                           "another dataset, split or seq_len?",
                           spry_indexed_prefix(l->ds), (long long)pos.epoch,
                           (long long)pos.index, (long long)l->n_samples);
    l->pos = pos;
    return SPRY_OK;
}

int64_t spry_loader_n_samples(const spry_loader *l) { return l->n_samples; }
int64_t spry_loader_n_tokens(const spry_loader *l) { return l->n_tokens; }
void spry_loader_doc_range(const spry_loader *l, int64_t *first, int64_t *end) {
    *first = l->doc_first;
    *end   = l->doc_end;
}
