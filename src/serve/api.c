/*
 * api.c -- the OpenAI API surface: request fields of /v1/completions and /v1/chat/completions
 * read and validated (https://platform.openai.com/docs/api-reference/completions and .../chat),
 * the chat template, and the response bodies (JSON objects and SSE chunks) shaped as OpenAI's.
 *
 * Decisions (docs/serving.md lists them for users):
 *   - null means absent for every field; unknown fields are ignored; a field of the wrong type
 *     or out of range is a 400 naming it (OpenAI answers 400 where FastAPI servers answer 422).
 *   - Fields spry cannot honour are refused rather than silently dropped: n != 1, best_of > 1,
 *     echo, logprobs, suffix, a non-empty logit_bias.
 *   - A completion prompt is text (special tokens in it are matched, as HF and llama.cpp do), a
 *     list of token ids, or a one-element list of either; chat content is never parsed for special
 *     tokens, so a user cannot inject control tokens through a message.
 *   - max_tokens: completions default to the server's (16, OpenAI's default); chat without
 *     max_tokens / max_completion_tokens generates until a stop or the context is full.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/serve_internal.h"

bool api_fail(api_error *e, int status, const char *type, const char *param, const char *code,
              const char *fmt, ...) {
    e->status = status;
    e->type   = type;
    e->param  = param;
    e->code   = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return false;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char  *p = malloc(n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}

static const char *type_name(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "null";
}

static bool bad_type(api_error *e, const char *param, const char *want, const cJSON *v) {
    return api_fail(e, 400, "invalid_request_error", param, "invalid_type",
                    "Invalid type for '%s': expected %s, but got %s instead.", param, want,
                    type_name(v));
}

// The field key of obj, NULL when absent or null.
static const cJSON *field(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static bool is_int(const cJSON *v, double lo, double hi) {
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) &&
           v->valuedouble == floor(v->valuedouble) && v->valuedouble >= lo && v->valuedouble <= hi;
}

// A number field in [lo, hi] (lo exclusive when lo_open). Absent: *out unchanged.
static bool get_num(const cJSON *obj, const char *key, double lo, bool lo_open, double hi,
                    float *out, api_error *e) {
    const cJSON *v = field(obj, key);
    if (!v) return true;
    if (!cJSON_IsNumber(v)) return bad_type(e, key, "a number", v);
    double x = v->valuedouble;
    if (!isfinite(x) || x > hi || (lo_open ? x <= lo : x < lo))
        return api_fail(e, 400, "invalid_request_error", key, "invalid_value",
                        "Invalid value for '%s': %g is not in %s%g, %g].", key, x,
                        lo_open ? "(" : "[", lo, hi);
    *out = (float)x;
    return true;
}

// An integer field in [lo, hi]. Absent: *out unchanged.
static bool get_int(const cJSON *obj, const char *key, double lo, double hi, int64_t *out,
                    api_error *e) {
    const cJSON *v = field(obj, key);
    if (!v) return true;
    if (!cJSON_IsNumber(v)) return bad_type(e, key, "an integer", v);
    if (!is_int(v, lo, hi))
        return api_fail(e, 400, "invalid_request_error", key, "invalid_value",
                        "Invalid value for '%s': expected an integer in [%.0f, %.0f], got %g.", key,
                        lo, hi, v->valuedouble);
    *out = (int64_t)v->valuedouble;
    return true;
}

static bool get_bool(const cJSON *obj, const char *key, bool *out, api_error *e) {
    const cJSON *v = field(obj, key);
    if (!v) return true;
    if (!cJSON_IsBool(v)) return bad_type(e, key, "a boolean", v);
    *out = cJSON_IsTrue(v);
    return true;
}

// ---------------------------------------------------------------------------------------------
// Chat template

static const char k_default_template[] =
    "{\"prefix\": \"\", \"message\": \"<|{role}|>\\n{content}\\n\", "
    "\"generation\": \"<|assistant|>\\n\", \"stop\": []}";

void serve_template_free(serve_template *t) {
    free(t->prefix), free(t->message), free(t->generation);
    for (int i = 0; i < t->n_stop; i++) free(t->stop[i]);
    memset(t, 0, sizeof *t);
}

bool serve_template_parse(const char *json, serve_template *t, api_error *e) {
    memset(t, 0, sizeof *t);
    cJSON *root = cJSON_Parse(json ? json : k_default_template);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return api_fail(e, 400, "invalid_request_error", "chat_template", NULL,
                        "the chat template is not a JSON object");
    }
    static const char *const keys[3] = {"prefix", "message", "generation"};
    char **dst[3] = {&t->prefix, &t->message, &t->generation};
    bool   ok     = true;
    for (int i = 0; i < 3 && ok; i++) {
        const cJSON *v = field(root, keys[i]);
        if (v && !cJSON_IsString(v)) ok = bad_type(e, keys[i], "a string", v);
        else if (!(*dst[i] = dup_str(v ? v->valuestring : i == 1 ? "{content}" : "")))
            ok = api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    const cJSON *stop = field(root, "stop");
    if (ok && stop && (!cJSON_IsArray(stop) || cJSON_GetArraySize(stop) > SERVE_MAX_TEMPLATE_STOPS))
        ok = api_fail(e, 400, "invalid_request_error", "stop", NULL,
                      "the template's stop must be an array of at most %d strings",
                      SERVE_MAX_TEMPLATE_STOPS);
    for (const cJSON *s = stop ? stop->child : NULL; ok && s; s = s->next) {
        if (!cJSON_IsString(s)) ok = bad_type(e, "stop", "a string", s);
        else if (*s->valuestring && !(t->stop[t->n_stop++] = dup_str(s->valuestring)))
            ok = api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    cJSON_Delete(root);
    if (!ok) serve_template_free(t);
    return ok;
}

// Appends tmpl with {role} and {content} replaced.
static void fill(sbuf *b, const char *tmpl, const char *role, const char *content,
                 size_t n_content) {
    for (const char *p = tmpl; *p;) {
        if (!strncmp(p, "{role}", 6)) {
            sb_puts(b, role);
            p += 6;
        } else if (!strncmp(p, "{content}", 9)) {
            sb_put(b, content, n_content);
            p += 9;
        } else {
            sb_put(b, p, 1);
            p++;
        }
    }
}

// The text of a message's content: a string, null, or an array of {"type": "text", "text"} parts.
static bool content_text(const cJSON *c, int i, sbuf *out, api_error *e) {
    if (!c) return true;
    if (cJSON_IsString(c)) {
        sb_puts(out, c->valuestring);
        return true;
    }
    if (cJSON_IsArray(c)) {
        for (const cJSON *part = c->child; part; part = part->next) {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
            if (!cJSON_IsObject(part) || !cJSON_IsString(type) ||
                strcmp(type->valuestring, "text") || !cJSON_IsString(text))
                return api_fail(e, 400, "invalid_request_error", "messages", "invalid_value",
                                "messages[%d].content: only text parts {\"type\": \"text\", "
                                "\"text\": ...} are supported",
                                i);
            sb_puts(out, text->valuestring);
        }
        return true;
    }
    return api_fail(e, 400, "invalid_request_error", "messages", "invalid_type",
                    "messages[%d].content must be a string or an array of text parts, got %s", i,
                    type_name(c));
}

static char *render_chat(const serve_template *t, const cJSON *msgs, api_error *e) {
    if (!msgs) {
        api_fail(e, 400, "invalid_request_error", "messages", "missing_required_parameter",
                 "Missing required parameter: 'messages'.");
        return NULL;
    }
    if (!cJSON_IsArray(msgs) || !msgs->child) {
        api_fail(e, 400, "invalid_request_error", "messages", "invalid_value",
                 "'messages' must be a non-empty array of {\"role\", \"content\"} objects.");
        return NULL;
    }
    sbuf b = {0};
    sb_puts(&b, t->prefix);
    int i = 0;
    for (const cJSON *m = msgs->child; m; m = m->next, i++) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role) || !*role->valuestring) {
            api_fail(e, 400, "invalid_request_error", "messages", "invalid_value",
                     "messages[%d] must be an object with a non-empty string 'role'", i);
            sb_free(&b);
            return NULL;
        }
        sbuf c = {0};
        if (!content_text(field(m, "content"), i, &c, e)) {
            sb_free(&c), sb_free(&b);
            return NULL;
        }
        fill(&b, t->message, role->valuestring, c.p ? c.p : "", c.n);
        sb_free(&c);
    }
    sb_puts(&b, t->generation);
    char *s = sb_take(&b, NULL);
    if (!s) api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    return s;
}

// ---------------------------------------------------------------------------------------------
// Requests

void serve_gen_free(serve_gen *g) {
    free(g->model);
    free(g->text);
    spry_tokens_free(&g->ids);
    for (int i = 0; i < g->n_stop; i++) free(g->stop[i]);
    memset(g, 0, sizeof *g);
}

// A list of token ids (every element an integer id).
static bool read_ids(const cJSON *arr, spry_tokens *out, api_error *e) {
    for (const cJSON *v = arr->child; v; v = v->next) {
        if (!is_int(v, 0, 2147483647.0))
            return api_fail(e, 400, "invalid_request_error", "prompt", "invalid_value",
                            "'prompt' must be a string, an array of token ids (integers >= 0), or "
                            "an array holding one of those");
        if (spry_tokens_push(out, (int32_t)v->valuedouble))
            return api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    return true;
}

static bool all_numbers(const cJSON *arr) {
    for (const cJSON *v = arr->child; v; v = v->next)
        if (!cJSON_IsNumber(v)) return false;
    return true;
}

static bool read_prompt(const cJSON *root, serve_gen *g, api_error *e) {
    const cJSON *p = field(root, "prompt");
    if (!p)
        return api_fail(e, 400, "invalid_request_error", "prompt", "missing_required_parameter",
                        "Missing required parameter: 'prompt'.");
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && !cJSON_IsNumber(p->child)) {
        p = p->child; // ["text"] or [[ids]]
        if (!cJSON_IsString(p) && !cJSON_IsArray(p))
            return bad_type(e, "prompt", "a string or an array of token ids", p);
    } else if (cJSON_IsArray(p) && p->child && !all_numbers(p)) {
        return api_fail(e, 400, "invalid_request_error", "prompt", "invalid_value",
                        "'prompt' holds %d prompts; spry serves one prompt per request (use a "
                        "string, an array of token ids, or an array holding one of those)",
                        cJSON_GetArraySize(p));
    }
    if (cJSON_IsString(p)) {
        g->text          = dup_str(p->valuestring);
        g->parse_special = true;
        if (!g->text) return api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        return true;
    }
    if (!cJSON_IsArray(p)) return bad_type(e, "prompt", "a string or an array of token ids", p);
    if (!read_ids(p, &g->ids, e)) return false;
    if (g->ids.n == 0)
        return api_fail(e, 400, "invalid_request_error", "prompt", "invalid_value",
                        "'prompt' must not be an empty array of token ids");
    return true;
}

static bool read_stop(const cJSON *root, serve_gen *g, api_error *e) {
    const cJSON *s = field(root, "stop");
    if (!s) return true;
    if (cJSON_IsString(s)) {
        if (*s->valuestring && !(g->stop[g->n_stop++] = dup_str(s->valuestring)))
            return api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        return true;
    }
    if (!cJSON_IsArray(s)) return bad_type(e, "stop", "a string or an array of strings", s);
    if (cJSON_GetArraySize(s) > SERVE_MAX_STOPS)
        return api_fail(e, 400, "invalid_request_error", "stop", "invalid_value",
                        "Invalid value for 'stop': at most %d stop sequences, got %d.",
                        SERVE_MAX_STOPS, cJSON_GetArraySize(s));
    for (const cJSON *v = s->child; v; v = v->next) {
        if (!cJSON_IsString(v)) return bad_type(e, "stop", "an array of strings", s);
        if (*v->valuestring && !(g->stop[g->n_stop++] = dup_str(v->valuestring)))
            return api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    return true;
}

// Fields spry does not implement are refused unless they ask for the default.
static bool refuse_unsupported(const cJSON *root, bool chat, api_error *e) {
    const cJSON *v;
    int64_t      n = 1;
    if (!get_int(root, "n", 1, 1e9, &n, e)) return false;
    if (n != 1)
        return api_fail(e, 400, "invalid_request_error", "n", "invalid_value",
                        "Invalid value for 'n': only one completion choice is supported (n = 1), "
                        "got %lld.",
                        (long long)n);
    int64_t best_of = 1;
    if (!chat && !get_int(root, "best_of", 1, 1e9, &best_of, e)) return false;
    if (best_of != 1)
        return api_fail(e, 400, "invalid_request_error", "best_of", "unsupported_value",
                        "Unsupported value for 'best_of': only 1 is supported.");
    bool echo = false;
    if (!chat && !get_bool(root, "echo", &echo, e)) return false;
    if (echo)
        return api_fail(e, 400, "invalid_request_error", "echo", "unsupported_value",
                        "Unsupported parameter: 'echo' is not supported.");
    if ((v = field(root, "logprobs")) && !(cJSON_IsFalse(v) || is_int(v, 0, 0)))
        return api_fail(e, 400, "invalid_request_error", "logprobs", "unsupported_value",
                        "Unsupported parameter: 'logprobs' is not supported.");
    if (!chat && (v = field(root, "suffix")) && !(cJSON_IsString(v) && !*v->valuestring))
        return api_fail(e, 400, "invalid_request_error", "suffix", "unsupported_value",
                        "Unsupported parameter: 'suffix' is not supported.");
    if ((v = field(root, "logit_bias")) && !(cJSON_IsObject(v) && !v->child))
        return api_fail(e, 400, "invalid_request_error", "logit_bias", "unsupported_value",
                        "Unsupported parameter: 'logit_bias' is not supported.");
    return true;
}

bool serve_parse_gen(const cJSON *root, bool chat, const serve_template *tmpl, serve_gen *g,
                     api_error *e) {
    memset(g, 0, sizeof *g);
    g->chat       = chat;
    g->max_tokens = -1;
    g->sp         = spry_sample_params_default();
    if (!cJSON_IsObject(root))
        return api_fail(e, 400, "invalid_request_error", NULL, NULL,
                        "The request body must be a JSON object.");
    const cJSON *v;
    if ((v = field(root, "model"))) {
        if (!cJSON_IsString(v)) return bad_type(e, "model", "a string", v);
        if (!(g->model = dup_str(v->valuestring)))
            return api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    if ((v = field(root, "user")) && !cJSON_IsString(v)) return bad_type(e, "user", "a string", v);
    if (!refuse_unsupported(root, chat, e)) return false;
    if (chat) {
        if (!(g->text = render_chat(tmpl, field(root, "messages"), e))) return false;
        for (int i = 0; i < tmpl->n_stop; i++)
            if (!(g->stop[g->n_stop++] = dup_str(tmpl->stop[i])))
                return api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    } else if (!read_prompt(root, g, e)) {
        return false;
    }
    const char *mt_key = chat && field(root, "max_completion_tokens") ? "max_completion_tokens"
                                                                      : "max_tokens";
    if (!get_int(root, mt_key, 1, 1e12, &g->max_tokens, e)) return false;
    int64_t top_k = 0, seed = 0;
    if (!get_num(root, "temperature", 0, false, 2, &g->sp.temperature, e) ||
        !get_num(root, "top_p", 0, true, 1, &g->sp.top_p, e) ||
        !get_int(root, "top_k", -1, 1e9, &top_k, e) ||
        !get_num(root, "min_p", 0, false, 1, &g->sp.min_p, e) ||
        !get_num(root, "presence_penalty", -2, false, 2, &g->sp.presence_penalty, e) ||
        !get_num(root, "frequency_penalty", -2, false, 2, &g->sp.frequency_penalty, e) ||
        !get_num(root, "repetition_penalty", 0, true, 10, &g->sp.repetition_penalty, e))
        return false;
    g->sp.top_k = top_k < 0 ? 0 : top_k; // -1: off (vLLM's convention)
    if (field(root, "seed")) {
        if (!get_int(root, "seed", -9007199254740991.0, 9007199254740991.0, &seed, e)) return false;
        g->sp.seed  = (uint64_t)seed;
        g->has_seed = true;
    }
    if (!read_stop(root, g, e) || !get_bool(root, "stream", &g->stream, e)) return false;
    if ((v = field(root, "stream_options"))) {
        if (!cJSON_IsObject(v)) return bad_type(e, "stream_options", "an object", v);
        if (!get_bool(v, "include_usage", &g->include_usage, e)) {
            e->param = "stream_options";
            return false;
        }
    }
    return true;
}

// ---------------------------------------------------------------------------------------------
// Responses

void api_json_error(sbuf *b, const api_error *e) {
    sb_puts(b, "{\"error\": {\"message\": ");
    sb_json_cstr(b, e->message);
    sb_puts(b, ", \"type\": ");
    sb_json_cstr(b, e->type ? e->type : "server_error");
    sb_puts(b, ", \"param\": ");
    sb_json_cstr(b, e->param);
    sb_puts(b, ", \"code\": ");
    sb_json_cstr(b, e->code);
    sb_puts(b, "}}");
}

static void head(sbuf *b, const char *object, const char *id, int64_t created, const char *model) {
    sb_puts(b, "{\"id\": ");
    sb_json_cstr(b, id);
    sb_printf(b, ", \"object\": \"%s\", \"created\": %lld, \"model\": ", object,
              (long long)created);
    sb_json_cstr(b, model);
}

static void usage(sbuf *b, int64_t n_prompt, int64_t n_gen) {
    sb_printf(b, "{\"prompt_tokens\": %lld, \"completion_tokens\": %lld, \"total_tokens\": %lld}",
              (long long)n_prompt, (long long)n_gen, (long long)(n_prompt + n_gen));
}

void api_json_completion(sbuf *b, bool chat, const char *id, int64_t created, const char *model,
                         const char *text, size_t len, const char *finish, int64_t n_prompt,
                         int64_t n_gen) {
    head(b, chat ? "chat.completion" : "text_completion", id, created, model);
    sb_puts(b, ", \"choices\": [{\"index\": 0, ");
    if (chat) {
        sb_puts(b, "\"message\": {\"role\": \"assistant\", \"content\": ");
        sb_json_str(b, text, len);
        sb_puts(b, "}");
    } else {
        sb_puts(b, "\"text\": ");
        sb_json_str(b, text, len);
    }
    sb_puts(b, ", \"logprobs\": null, \"finish_reason\": ");
    sb_json_cstr(b, finish);
    sb_puts(b, "}], \"usage\": ");
    usage(b, n_prompt, n_gen);
    sb_puts(b, "}");
}

void api_sse_chunk(sbuf *b, bool chat, const char *id, int64_t created, const char *model,
                   bool role, const char *text, size_t len, const char *finish, bool usage_null) {
    sb_puts(b, "data: ");
    head(b, chat ? "chat.completion.chunk" : "text_completion", id, created, model);
    sb_puts(b, ", \"choices\": [{\"index\": 0, ");
    if (chat) {
        sb_puts(b, "\"delta\": {");
        if (role) sb_puts(b, "\"role\": \"assistant\", \"content\": \"\"");
        else if (text) {
            sb_puts(b, "\"content\": ");
            sb_json_str(b, text, len);
        }
        sb_puts(b, "}");
    } else {
        sb_puts(b, "\"text\": ");
        sb_json_str(b, text ? text : "", text ? len : 0);
    }
    sb_puts(b, ", \"logprobs\": null, \"finish_reason\": ");
    sb_json_cstr(b, finish);
    sb_puts(b, "}]");
    if (usage_null) sb_puts(b, ", \"usage\": null");
    sb_puts(b, "}\n\n");
}

void api_sse_usage(sbuf *b, bool chat, const char *id, int64_t created, const char *model,
                   int64_t n_prompt, int64_t n_gen) {
    sb_puts(b, "data: ");
    head(b, chat ? "chat.completion.chunk" : "text_completion", id, created, model);
    sb_puts(b, ", \"choices\": [], \"usage\": ");
    usage(b, n_prompt, n_gen);
    sb_puts(b, "}\n\n");
}
