/*
 * tokenizer_io.c -- reading and writing tokenizers: Hugging Face tokenizer.json, OpenAI's GPT-2
 * encoder.json + vocab.bpe pair, and the spec strings spry_tokenizer_load accepts.
 *
 * tokenizer.json (huggingface/tokenizers, tokenizer/serialization.rs): checked field by field;
 * what spry cannot run exactly is refused with SPRY_ERR_UNSUPPORTED naming the field and value
 * rather than run differently. Accepted: normalizer null (or an empty Sequence); pre_tokenizer
 * ByteLevel, Split with the GPT-2 or the BLOOM regex (behavior Isolated, invert false), or a
 * Sequence of those holding a ByteLevel; model BPE (vocab, merges as "a b" strings or [a, b]
 * pairs, dropout null/0, no subword prefix/suffix, ignore_merges); added_tokens; post_processor
 * null or ByteLevel; decoder null or ByteLevel. truncation and padding are ignored (spry's
 * callers do their own). vocab.bpe: an optional "#version" first line, then "a b" per line;
 * blank lines are skipped.
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spry/fs.h"
#include "text/tokenizer_internal.h"
#include "text/unicode.h"

// ---------------------------------------------------------------------------------------------
// Files

// A whole file (spry_read_file); a missing file is an I/O error here, as for every input.
static spry_status read_file(const char *path, char **buf, size_t *len) {
    spry_status st = spry_read_file(path, 0, buf, len);
    return st == SPRY_ERR_NOT_FOUND ? SPRY_ERR_IO : st;
}

static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool is_file(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

// ---------------------------------------------------------------------------------------------
// JSON helpers

static const char *json_kind(const cJSON *j) {
    if (!j) return "nothing";
    if (cJSON_IsNull(j)) return "null";
    if (cJSON_IsBool(j)) return cJSON_IsTrue(j) ? "true" : "false";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsObject(j)) return "an object";
    return "an invalid value";
}

// An integer id in [0, INT32_MAX - 1).
static bool json_id(const cJSON *j, int32_t *id) {
    if (!cJSON_IsNumber(j)) return false;
    double v = j->valuedouble;
    if (!(v >= 0 && v < (double)INT32_MAX - 1) || v != floor(v)) return false;
    *id = (int32_t)v;
    return true;
}

// Optional bool field: absent or null gives def.
static spry_status json_bool(const spry_tokenizer *t, const cJSON *obj, const char *key, bool def,
                             const char *where, bool *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return SPRY_OK;
    }
    if (!cJSON_IsBool(j))
        return spry_errorf(SPRY_ERR_FORMAT, "%s: %s.%s: expected true or false, got %s", t->name,
                           where, key, json_kind(j));
    *out = cJSON_IsTrue(j);
    return SPRY_OK;
}

static const char *json_type(const cJSON *obj) {
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(obj, "type");
    return cJSON_IsString(ty) ? ty->valuestring : NULL;
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json

static spry_status parse_pretok(spry_tokenizer *t, const cJSON *pt, const char *where, int depth) {
    if (!cJSON_IsObject(pt))
        return spry_errorf(SPRY_ERR_FORMAT, "%s: %s: expected an object, got %s", t->name, where,
                           json_kind(pt));
    const char *ty = json_type(pt);
    if (!ty) return spry_errorf(SPRY_ERR_FORMAT, "%s: %s.type: missing or not a string", t->name, where);
    if (!strcmp(ty, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers");
        if (!cJSON_IsArray(list))
            return spry_errorf(SPRY_ERR_FORMAT, "%s: %s.pretokenizers: expected an array, got %s",
                               t->name, where, json_kind(list));
        if (depth > 4)
            return spry_errorf(SPRY_ERR_UNSUPPORTED, "%s: %s: Sequence nested too deeply", t->name, where);
        int i = 0;
        for (const cJSON *e = list->child; e; e = e->next, i++) {
            char w[256];
            snprintf(w, sizeof w, "%s.pretokenizers[%d]", where, i);
            SPRY_TRY(parse_pretok(t, e, w, depth + 1));
        }
        return SPRY_OK;
    }
    if (t->n_steps == TOK_MAX_STEPS)
        return spry_errorf(SPRY_ERR_UNSUPPORTED, "%s: %s: more than %d pre-tokenizers", t->name,
                           where, TOK_MAX_STEPS);
    tok_step *st = &t->steps[t->n_steps];
    if (!strcmp(ty, "ByteLevel")) {
        bool prefix = false, regex = false;
        SPRY_TRY(json_bool(t, pt, "add_prefix_space", true, where, &prefix));
        SPRY_TRY(json_bool(t, pt, "use_regex", true, where, &regex));
        *st = (tok_step){.split = regex ? SPRY_PRETOK_GPT2 : SPRY_PRETOK_NONE,
                         .prefix_space = prefix, .byte_level = true};
        t->n_steps++;
        return SPRY_OK;
    }
    if (!strcmp(ty, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(pt, "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *p = re ? re : str;
        if (!cJSON_IsObject(pat) || !cJSON_IsString(p))
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: %s.pattern: expected {\"Regex\": \"...\"} or {\"String\": \"...\"}",
                               t->name, where);
        uint8_t k = SPRY_PRETOK_NONE;
        if (re && !strcmp(p->valuestring, spry_pretok_gpt2_regex)) k = SPRY_PRETOK_GPT2;
        if (re && !strcmp(p->valuestring, spry_pretok_bloom_regex)) k = SPRY_PRETOK_BLOOM;
        if (k == SPRY_PRETOK_NONE)
            return spry_errorf(SPRY_ERR_UNSUPPORTED,
                               "%s: %s.pattern.%s: unsupported pattern \"%s\" (spry runs the GPT-2 "
                               "and BLOOM regexes)",
                               t->name, where, re ? "Regex" : "String", p->valuestring);
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(pt, "behavior");
        if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated"))
            return spry_errorf(SPRY_ERR_UNSUPPORTED,
                               "%s: %s.behavior: \"%s\" is not supported (only \"Isolated\")", t->name,
                               where, cJSON_IsString(beh) ? beh->valuestring : json_kind(beh));
        bool invert = false;
        SPRY_TRY(json_bool(t, pt, "invert", false, where, &invert));
        if (invert)
            return spry_errorf(SPRY_ERR_UNSUPPORTED, "%s: %s.invert: true is not supported", t->name, where);
        *st = (tok_step){.split = k, .prefix_space = false, .byte_level = false};
        t->n_steps++;
        return SPRY_OK;
    }
    return spry_errorf(SPRY_ERR_UNSUPPORTED,
                       "%s: %s.type: \"%s\" is not supported (spry runs ByteLevel, Split with the "
                       "GPT-2 or BLOOM regex, and Sequence)",
                       t->name, where, ty);
}

// Checks an optional component whose type must be one of the allowed ones (NULL-terminated).
static spry_status check_component(const spry_tokenizer *t, const cJSON *root, const char *key,
                                   const char *const *allowed) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!c || cJSON_IsNull(c)) return SPRY_OK;
    if (!cJSON_IsObject(c))
        return spry_errorf(SPRY_ERR_FORMAT, "%s: %s: expected an object or null, got %s", t->name,
                           key, json_kind(c));
    const char *ty = json_type(c);
    if (!ty) return spry_errorf(SPRY_ERR_FORMAT, "%s: %s.type: missing or not a string", t->name, key);
    for (int i = 0; allowed[i]; i++)
        if (!strcmp(ty, allowed[i])) return SPRY_OK;
    if (!strcmp(ty, "Sequence")) { // allow an empty Sequence (a no-op)
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(c, "normalizers");
        if (!l) l = cJSON_GetObjectItemCaseSensitive(c, "decoders");
        if (!l) l = cJSON_GetObjectItemCaseSensitive(c, "processors");
        if (cJSON_IsArray(l) && cJSON_GetArraySize(l) == 0) return SPRY_OK;
    }
    return spry_errorf(SPRY_ERR_UNSUPPORTED, "%s: %s.type: \"%s\" is not supported", t->name, key, ty);
}

static spry_status parse_model_fields(spry_tokenizer *t, const cJSON *model) {
    const char *ty = json_type(model);
    const cJSON *tyj = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (tyj && !ty)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: model.type: expected a string, got %s", t->name,
                           json_kind(tyj));
    if (ty && strcmp(ty, "BPE"))
        return spry_errorf(SPRY_ERR_UNSUPPORTED,
                           "%s: model.type: \"%s\" is not supported (spry runs byte-level BPE)",
                           t->name, ty);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (d && !cJSON_IsNull(d) && !(cJSON_IsNumber(d) && d->valuedouble == 0))
        return spry_errorf(SPRY_ERR_UNSUPPORTED, "%s: model.dropout: %g is not supported (null or 0)",
                           t->name, cJSON_IsNumber(d) ? d->valuedouble : NAN);
    const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(model, affix[i]);
        if (a && !cJSON_IsNull(a) && !(cJSON_IsString(a) && a->valuestring[0] == 0))
            return spry_errorf(SPRY_ERR_UNSUPPORTED, "%s: model.%s: \"%s\" is not supported (null or \"\")",
                               t->name, affix[i], cJSON_IsString(a) ? a->valuestring : json_kind(a));
    }
    return json_bool(t, model, "ignore_merges", false, "model", &t->ignore_merges);
}

static spry_status parse_added(spry_tokenizer *t, const cJSON *added) {
    int i = 0;
    for (const cJSON *e = added ? added->child : NULL; e; e = e->next, i++) {
        char w[64];
        snprintf(w, sizeof w, "added_tokens[%d]", i);
        if (!cJSON_IsObject(e))
            return spry_errorf(SPRY_ERR_FORMAT, "%s: %s: expected an object, got %s", t->name, w, json_kind(e));
        tok_added a = {0};
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!json_id(id, &a.id))
            return spry_errorf(SPRY_ERR_FORMAT, "%s: %s.id: expected an integer id, got %s", t->name,
                               w, json_kind(id));
        if (!cJSON_IsString(content))
            return spry_errorf(SPRY_ERR_FORMAT, "%s: %s.content: expected a string, got %s", t->name,
                               w, json_kind(content));
        a.content = content->valuestring, a.len = strlen(content->valuestring);
        SPRY_TRY(json_bool(t, e, "special", false, w, &a.special));
        SPRY_TRY(json_bool(t, e, "single_word", false, w, &a.single_word));
        SPRY_TRY(json_bool(t, e, "lstrip", false, w, &a.lstrip));
        SPRY_TRY(json_bool(t, e, "rstrip", false, w, &a.rstrip));
        SPRY_TRY(json_bool(t, e, "normalized", !a.special, w, &a.normalized));
        SPRY_TRY(tok_add_added(t, &a, w));
    }
    return SPRY_OK;
}

static spry_status parse_merges(spry_tokenizer *t, const cJSON *merges) {
    int i = 0;
    for (const cJSON *e = merges->child; e; e = e->next, i++) {
        char w[64];
        snprintf(w, sizeof w, "model.merges[%d]", i);
        if (cJSON_IsString(e)) {
            const char *s = e->valuestring, *sp = strchr(s, ' ');
            if (!sp || sp == s || sp[1] == 0 || strchr(sp + 1, ' '))
                return spry_errorf(SPRY_ERR_FORMAT,
                                   "%s: %s: \"%s\" is not two tokens separated by one space",
                                   t->name, w, s);
            SPRY_TRY(tok_add_merge(t, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), w));
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            const char *a = e->child->valuestring, *b = e->child->next->valuestring;
            SPRY_TRY(tok_add_merge(t, a, strlen(a), b, strlen(b), w));
        } else {
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: %s: expected \"a b\" or [\"a\", \"b\"], got %s", t->name, w,
                               json_kind(e));
        }
    }
    return SPRY_OK;
}

// Ids may leave holes, but not absurd ones (a corrupt id must not allocate gigabytes).
static spry_status check_max_id(const spry_tokenizer *t, int32_t max_id, int64_t n_entries, const char *where) {
    if ((int64_t)max_id >= 2 * n_entries + 1024)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: %s: id %d is far beyond the %lld tokens given", t->name, where,
                           max_id, (long long)n_entries);
    return SPRY_OK;
}

static spry_status parse_root(spry_tokenizer *t, const cJSON *root) {
    if (!cJSON_IsObject(root))
        return spry_errorf(SPRY_ERR_FORMAT, "%s: expected a JSON object, got %s", t->name, json_kind(root));
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model))
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: model: missing or not an object (got %s); HINT: is this a Hugging "
                           "Face tokenizer.json?",
                           t->name, json_kind(model));
    SPRY_TRY(parse_model_fields(t, model));
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab))
        return spry_errorf(SPRY_ERR_FORMAT, "%s: model.vocab: expected an object of token -> id, got %s",
                           t->name, json_kind(vocab));
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsArray(merges))
        return spry_errorf(SPRY_ERR_FORMAT, "%s: model.merges: expected an array, got %s", t->name,
                           json_kind(merges));
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added))
        return spry_errorf(SPRY_ERR_FORMAT, "%s: added_tokens: expected an array, got %s", t->name,
                           json_kind(added));
    if (added && cJSON_IsNull(added)) added = NULL;
    // Ids: one past the largest of the vocabulary and the added tokens.
    int32_t max_id = -1;
    int64_t n_entries = 0;
    for (const cJSON *e = vocab->child; e; e = e->next, n_entries++) {
        int32_t id;
        if (!json_id(e, &id))
            return spry_errorf(SPRY_ERR_FORMAT, "%s: model.vocab[\"%s\"]: expected an integer id >= 0, got %s",
                               t->name, e->string, json_kind(e));
        if (id > max_id) max_id = id;
    }
    for (const cJSON *e = added ? added->child : NULL; e; e = e->next, n_entries++) {
        int32_t id;
        if (json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id) && id > max_id) max_id = id;
    }
    SPRY_TRY(check_max_id(t, max_id, n_entries, "model.vocab"));
    SPRY_TRY(tok_alloc_vocab(t, max_id + 1));
    for (const cJSON *e = vocab->child; e; e = e->next) {
        char w[64];
        snprintf(w, sizeof w, "model.vocab");
        SPRY_TRY(tok_set_key(t, (int32_t)e->valuedouble, e->string, strlen(e->string), w));
    }
    SPRY_TRY(parse_added(t, added));
    SPRY_TRY(tok_index_vocab(t));
    SPRY_TRY(parse_merges(t, merges));

    const char *norm_ok[] = {NULL};
    const char *post_ok[] = {"ByteLevel", NULL};
    const char *dec_ok[] = {"ByteLevel", NULL};
    SPRY_TRY(check_component(t, root, "normalizer", norm_ok));
    SPRY_TRY(check_component(t, root, "post_processor", post_ok));
    SPRY_TRY(check_component(t, root, "decoder", dec_ok));
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (pt && !cJSON_IsNull(pt)) SPRY_TRY(parse_pretok(t, pt, "pre_tokenizer", 0));
    bool byte_level = false;
    for (int i = 0; i < t->n_steps; i++) byte_level |= t->steps[i].byte_level;
    if (!byte_level)
        return spry_errorf(SPRY_ERR_UNSUPPORTED,
                           "%s: pre_tokenizer: no ByteLevel component (spry runs byte-level BPE only)",
                           t->name);
    t->ws = SPRY_UC_WS_UNI;
    return tok_finish(t);
}

spry_status spry_tokenizer_parse_json(const char *json, size_t len, const char *name,
                                      spry_tokenizer **out) {
    *out = NULL;
    spry_tokenizer *t = tok_new(name);
    if (!t) return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", name ? name : "tokenizer.json");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        spry_status st = spry_errorf(SPRY_ERR_FORMAT, "%s: not valid JSON (error near byte %zu of %zu)",
                                     t->name, at, len);
        spry_tokenizer_free(t);
        return st;
    }
    spry_status st = parse_root(t, root);
    cJSON_Delete(root);
    if (st != SPRY_OK) {
        spry_tokenizer_free(t);
        return st;
    }
    *out = t;
    return SPRY_OK;
}

spry_status spry_tokenizer_load_json(const char *path, spry_tokenizer **out) {
    *out = NULL;
    char  *buf;
    size_t len;
    SPRY_TRY(read_file(path, &buf, &len));
    spry_status st = spry_tokenizer_parse_json(buf, len, path, out);
    free(buf);
    return st;
}

// ---------------------------------------------------------------------------------------------
// encoder.json + vocab.bpe

static spry_status parse_vocab_bpe(spry_tokenizer *t, const char *path, char *text, size_t len) {
    size_t line_no = 0;
    for (size_t pos = 0; pos < len;) {
        char  *line = text + pos;
        char  *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos += n + (nl ? 1 : 0);
        line_no++;
        if (line_no == 1 && n >= 8 && !memcmp(line, "#version", 8)) continue;
        // Split on ASCII whitespace, as encoder.py's str.split() does.
        const char *part[3];
        size_t      plen[3];
        int         np = 0;
        for (size_t i = 0; i < n;) {
            while (i < n && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\f' || line[i] == '\v')) i++;
            if (i == n) break;
            size_t j = i;
            while (j < n && !(line[j] == ' ' || line[j] == '\t' || line[j] == '\r' || line[j] == '\f' || line[j] == '\v')) j++;
            if (np < 3) part[np] = line + i, plen[np] = j - i;
            np++;
            i = j;
        }
        if (np == 0) continue;
        char w[64];
        snprintf(w, sizeof w, "line %zu", line_no);
        if (np != 2) {
            // Name the file itself, not the tokenizer (the encoder.json).
            return spry_errorf(SPRY_ERR_FORMAT, "%s:%zu: expected two tokens separated by a space, got \"%.*s\"",
                               path, line_no, (int)(n > 80 ? 80 : n), line);
        }
        spry_status st = tok_add_merge(t, part[0], plen[0], part[1], plen[1], w);
        if (st != SPRY_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", spry_last_error());
            return spry_errorf(st, "%s (merges from %s:%zu)", msg, path, line_no);
        }
    }
    return SPRY_OK;
}

spry_status spry_tokenizer_load_gpt2(const char *encoder_json, const char *vocab_bpe,
                                     spry_tokenizer **out) {
    *out = NULL;
    char  *enc = NULL, *bpe = NULL;
    size_t enc_len, bpe_len;
    SPRY_TRY(read_file(encoder_json, &enc, &enc_len));
    spry_status st = read_file(vocab_bpe, &bpe, &bpe_len);
    if (st != SPRY_OK) {
        free(enc);
        return st;
    }
    spry_tokenizer *t = tok_new(encoder_json);
    cJSON          *root = NULL;
    if (!t) {
        st = spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", encoder_json);
        goto done;
    }
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(enc, enc_len, &end, 0);
    if (!root) {
        st = spry_errorf(SPRY_ERR_FORMAT, "%s: not valid JSON (error near byte %zu of %zu)", encoder_json,
                         end && end >= enc ? (size_t)(end - enc) : 0, enc_len);
        goto done;
    }
    if (!cJSON_IsObject(root)) {
        st = spry_errorf(SPRY_ERR_FORMAT, "%s: expected an object of token -> id, got %s",
                         encoder_json, json_kind(root));
        goto done;
    }
    int32_t max_id = -1;
    int64_t n_entries = 0;
    for (const cJSON *e = root->child; e; e = e->next, n_entries++) {
        int32_t id;
        if (!json_id(e, &id)) {
            st = spry_errorf(SPRY_ERR_FORMAT, "%s: [\"%s\"]: expected an integer id >= 0, got %s",
                             encoder_json, e->string, json_kind(e));
            goto done;
        }
        if (id > max_id) max_id = id;
    }
    if ((st = check_max_id(t, max_id, n_entries, "ids")) != SPRY_OK) goto done;
    if ((st = tok_alloc_vocab(t, max_id + 1)) != SPRY_OK) goto done;
    for (const cJSON *e = root->child; e; e = e->next)
        if ((st = tok_set_key(t, (int32_t)e->valuedouble, e->string, strlen(e->string), "vocabulary")) != SPRY_OK)
            goto done;
    const cJSON *eot = cJSON_GetObjectItemCaseSensitive(root, "<|endoftext|>");
    if (eot) {
        tok_added a = {.id = (int32_t)eot->valuedouble, .content = "<|endoftext|>", .len = 13,
                       .special = true, .normalized = true};
        if ((st = tok_add_added(t, &a, "<|endoftext|>")) != SPRY_OK) goto done;
    }
    if ((st = tok_index_vocab(t)) != SPRY_OK) goto done;
    if ((st = parse_vocab_bpe(t, vocab_bpe, bpe, bpe_len)) != SPRY_OK) goto done;
    t->steps[0] = (tok_step){.split = SPRY_PRETOK_GPT2, .prefix_space = false, .byte_level = true};
    t->n_steps = 1;
    t->ws = SPRY_UC_WS_JS;
    st = tok_finish(t);
done:
    cJSON_Delete(root);
    free(enc);
    free(bpe);
    if (st != SPRY_OK) {
        spry_tokenizer_free(t);
        return st;
    }
    *out = t;
    return SPRY_OK;
}

// ---------------------------------------------------------------------------------------------
// spry_tokenizer_load

static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char  *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t o = a;
    if (a && dir[a - 1] != '/') p[o++] = '/';
    memcpy(p + o, name, b + 1);
    return p;
}

static spry_status load_pair_in(const char *dir, spry_tokenizer **out, bool *found) {
    char *enc = path_join(dir, "encoder.json"), *bpe = path_join(dir, "vocab.bpe");
    spry_status st = SPRY_OK;
    *found = false;
    if (!enc || !bpe) st = spry_errorf(SPRY_ERR_NOMEM, "out of memory");
    else if (is_file(enc) && is_file(bpe)) {
        *found = true;
        st = spry_tokenizer_load_gpt2(enc, bpe, out);
    }
    free(enc);
    free(bpe);
    return st;
}

spry_status spry_tokenizer_load(const char *spec, spry_tokenizer **out) {
    *out = NULL;
    if (!spec || !*spec) return spry_errorf(SPRY_ERR_ARG, "tokenizer: empty path");
    const char *comma = strchr(spec, ',');
    if (comma && !is_file(spec) && !is_dir(spec)) {
        size_t n = (size_t)(comma - spec);
        char  *enc = malloc(n + 1);
        if (!enc) return spry_errorf(SPRY_ERR_NOMEM, "out of memory");
        memcpy(enc, spec, n);
        enc[n] = 0;
        spry_status st = spry_tokenizer_load_gpt2(enc, comma + 1, out);
        free(enc);
        return st;
    }
    if (is_dir(spec)) {
        char *tj = path_join(spec, "tokenizer.json");
        if (!tj) return spry_errorf(SPRY_ERR_NOMEM, "out of memory");
        if (is_file(tj)) {
            spry_status st = spry_tokenizer_load_json(tj, out);
            free(tj);
            return st;
        }
        free(tj);
        bool found;
        SPRY_TRY(load_pair_in(spec, out, &found));
        if (found) return SPRY_OK;
        return spry_errorf(SPRY_ERR_NOT_FOUND,
                           "%s: directory has neither tokenizer.json nor encoder.json + vocab.bpe", spec);
    }
    if (!is_file(spec)) return spry_errorf(SPRY_ERR_IO, "%s: cannot open: %s", spec, strerror(ENOENT));
    // encoder.json with vocab.bpe beside it?
    const char *base = strrchr(spec, '/');
    base = base ? base + 1 : spec;
    if (!strcmp(base, "encoder.json")) {
        char *dir = strdup(spec);
        if (!dir) return spry_errorf(SPRY_ERR_NOMEM, "out of memory");
        dir[base - spec] = 0;
        bool found;
        spry_status st = load_pair_in(*dir ? dir : ".", out, &found);
        free(dir);
        if (st != SPRY_OK || found) return st;
        return spry_errorf(SPRY_ERR_NOT_FOUND, "%s: no vocab.bpe beside it; HINT: give ENCODER.json,VOCAB.bpe", spec);
    }
    return spry_tokenizer_load_json(spec, out);
}

// ---------------------------------------------------------------------------------------------
// Saving as tokenizer.json

static void put_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p == '\t') fputs("\\t", f);
        else if (*p == '\r') fputs("\\r", f);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static const char *tf(bool b) { return b ? "true" : "false"; }

static void put_step(FILE *f, const tok_step *s) {
    if (s->byte_level) {
        fprintf(f, "{\"type\": \"ByteLevel\", \"add_prefix_space\": %s, \"trim_offsets\": true, "
                   "\"use_regex\": %s}",
                tf(s->prefix_space), tf(s->split == SPRY_PRETOK_GPT2));
        return;
    }
    fputs("{\"type\": \"Split\", \"pattern\": {\"Regex\": ", f);
    put_str(f, s->split == SPRY_PRETOK_BLOOM ? spry_pretok_bloom_regex : spry_pretok_gpt2_regex);
    fputs("}, \"behavior\": \"Isolated\", \"invert\": false}", f);
}

static void write_json(const spry_tokenizer *t, FILE *f) {
    fputs("{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n", f);
    fputs("  \"added_tokens\": [", f);
    for (int i = 0; i < t->n_added; i++) {
        const tok_added *a = &t->added[i];
        fprintf(f, "%s\n    {\"id\": %d, \"content\": ", i ? "," : "", a->id);
        put_str(f, a->content);
        fprintf(f, ", \"single_word\": %s, \"lstrip\": %s, \"rstrip\": %s, \"normalized\": %s, "
                   "\"special\": %s}",
                tf(a->single_word), tf(a->lstrip), tf(a->rstrip), tf(a->normalized), tf(a->special));
    }
    fputs(t->n_added ? "\n  ],\n" : "],\n", f);
    fputs("  \"normalizer\": null,\n  \"pre_tokenizer\": ", f);
    if (t->n_steps == 1) {
        put_step(f, &t->steps[0]);
    } else {
        fputs("{\"type\": \"Sequence\", \"pretokenizers\": [", f);
        for (int i = 0; i < t->n_steps; i++) {
            if (i) fputs(", ", f);
            put_step(f, &t->steps[i]);
        }
        fputs("]}", f);
    }
    fputs(",\n  \"post_processor\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, "
          "\"trim_offsets\": false, \"use_regex\": true},\n"
          "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": "
          "true, \"use_regex\": true},\n",
          f);
    fprintf(f, "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": "
               "null,\n    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
               "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n");
    if (t->ignore_merges) fputs("    \"ignore_merges\": true,\n", f);
    fputs("    \"vocab\": {", f);
    bool first = true;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (t->key_off[id] < 0) continue;
        fputs(first ? "\n      " : ",\n      ", f);
        put_str(f, t->keys + t->key_off[id]);
        fprintf(f, ": %d", id);
        first = false;
    }
    fputs(first ? "},\n" : "\n    },\n", f);
    // "a b" strings unless a token holds a space (then the [a, b] form).
    bool pairs = false;
    for (int32_t r = 0; r < t->n_merges && !pairs; r++)
        pairs = strchr(t->keys + t->key_off[t->merge_ab[2 * r]], ' ') ||
                strchr(t->keys + t->key_off[t->merge_ab[2 * r + 1]], ' ');
    fputs("    \"merges\": [", f);
    for (int32_t r = 0; r < t->n_merges; r++) {
        const char *a = t->keys + t->key_off[t->merge_ab[2 * r]];
        const char *b = t->keys + t->key_off[t->merge_ab[2 * r + 1]];
        fputs(r ? ",\n      " : "\n      ", f);
        if (pairs) {
            fputc('[', f);
            put_str(f, a);
            fputs(", ", f);
            put_str(f, b);
            fputc(']', f);
        } else {
            size_t la = strlen(a), lb = strlen(b);
            char   sbuf[512];
            char  *m = la + lb + 2 <= sizeof sbuf ? sbuf : malloc(la + lb + 2);
            if (!m) { // cannot happen in practice; fall back to the pair form for this entry
                fputc('[', f), put_str(f, a), fputs(", ", f), put_str(f, b), fputc(']', f);
                continue;
            }
            memcpy(m, a, la);
            m[la] = ' ';
            memcpy(m + la + 1, b, lb + 1);
            put_str(f, m);
            if (m != sbuf) free(m);
        }
    }
    fputs(t->n_merges ? "\n    ]\n  }\n}\n" : "]\n  }\n}\n", f);
}

spry_status spry_tokenizer_save(const spry_tokenizer *t, const char *path) {
    size_t n = strlen(path);
    char  *tmp = malloc(n + 32);
    if (!tmp) return spry_errorf(SPRY_ERR_NOMEM, "out of memory");
    snprintf(tmp, n + 32, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        spry_status st = spry_errorf(SPRY_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    write_json(t, f);
    int bad = ferror(f);
    bad |= fflush(f) != 0;
    bad |= fsync(fileno(f)) != 0 && errno != EINVAL;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        spry_status st = spry_errorf(SPRY_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        remove(tmp);
        free(tmp);
        return st;
    }
    free(tmp);
    return SPRY_OK;
}
