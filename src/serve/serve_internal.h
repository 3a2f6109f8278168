/*
 * serve_internal.h -- the pieces of the HTTP server (serve.h) shared between its files:
 *   sbuf.c      a growable byte buffer and a JSON string writer (invalid UTF-8 -> U+FFFD);
 *   stop_text.c generated text with stop strings: holds back a tail that may start a stop string;
 *   metrics.c   counters and latency histograms, rendered as Prometheus text;
 *   api.c       OpenAI request parsing and validation, the chat template, response JSON;
 *   server.c    libmicrohttpd routing, auth, bodies, streaming, the engine thread.
 */
#ifndef SPRY_SERVE_INTERNAL_H
#define SPRY_SERVE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "spry/engine.h"
#include "spry/sample.h"
#include "spry/tokenizer.h"

// ---------------------------------------------------------------------------------------------
// sbuf.c

// A growable byte buffer. Zero-initialize; an allocation failure sets oom (sticky) and later
// appends do nothing, so callers check oom once at the end.
typedef struct sbuf {
    char  *p;   // NUL-terminated while n > 0 and !oom
    size_t n, cap;
    bool   oom;
} sbuf;

void sb_put(sbuf *b, const void *s, size_t n);
void sb_puts(sbuf *b, const char *s);
void sb_printf(sbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
// Appends s[0..n) as a quoted JSON string: control characters escaped, well-formed UTF-8 kept,
// every byte of an ill-formed sequence written as \ufffd. s may be NULL (writes null).
void sb_json_str(sbuf *b, const char *s, size_t n);
// sb_json_str of a NUL-terminated string, or null when s is NULL.
void sb_json_cstr(sbuf *b, const char *s);
void sb_free(sbuf *b);
// Hands the bytes to the caller (malloc'd, NUL-terminated; "" when empty) and resets b, or
// NULL if b hit oom (b is freed either way).
char *sb_take(sbuf *b, size_t *len);

// ---------------------------------------------------------------------------------------------
// stop_text.c

// The text generated for one request. Bytes [0, released) can be sent: none of them can start a
// stop string; [released, len) is a tail that is a proper prefix of some stop string.
typedef struct serve_text {
    char  *buf;
    size_t len, cap, released;
} serve_text;

// Appends s[0..n) and looks for the stop strings (empty ones are ignored). On a match the text is
// cut where the earliest match begins, everything left is released and 1 is returned; else the
// release point moves past every byte that cannot begin a stop string and 0 is returned. -1 when
// out of memory (t unchanged).
int  serve_text_append(serve_text *t, const char *s, size_t n, char *const *stops, int n_stops);
void serve_text_release_all(serve_text *t);
void serve_text_free(serve_text *t);

// ---------------------------------------------------------------------------------------------
// metrics.c

#define SERVE_HIST_MAX 24

typedef struct serve_hist {
    const double *le; // upper bounds, ascending (n of them; +Inf is implicit)
    int           n;
    uint64_t      counts[SERVE_HIST_MAX + 1]; // per bucket (not cumulative); last: above le[n-1]
    double        sum;
    uint64_t      count;
} serve_hist;

enum {
    SERVE_END_STOP = 0,
    SERVE_END_LENGTH,
    SERVE_END_CANCELLED,
    SERVE_END_ERROR,
    SERVE_END_COUNT
};

typedef struct serve_metrics {
    serve_hist ttft, itl, e2e;
    int64_t    requests;                     // generation requests accepted
    int64_t    prompt_tokens, gen_tokens;    // of accepted requests / delivered
    int64_t    finished[SERVE_END_COUNT];    // by reason
    int64_t    rejected_full;                // 503 for a full queue
    int64_t    http[16];                     // responses by status (see metrics.c)
} serve_metrics;

void serve_metrics_init(serve_metrics *m);
void serve_hist_observe(serve_hist *h, double v);
void serve_metrics_count_status(serve_metrics *m, unsigned status);
// Prometheus text exposition (version 0.0.4) of m and the engine's stats (st NULL before attach).
void serve_metrics_render(const serve_metrics *m, const spry_engine_stats *st, bool ready,
                          int64_t pending, sbuf *out);

// ---------------------------------------------------------------------------------------------
// api.c

// An error to answer with: OpenAI's {"error": {"message", "type", "param", "code"}}.
typedef struct api_error {
    int         status;    // HTTP status
    const char *type;      // "invalid_request_error", ...
    const char *param;     // the request field at fault, or NULL
    const char *code;      // OpenAI-style code string, or NULL
    char        message[512];
} api_error;

// Fills e and returns false (for `return api_fail(...)`).
bool api_fail(api_error *e, int status, const char *type, const char *param, const char *code,
              const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 6, 7)))
#endif
    ;

#define SERVE_MAX_STOPS 4 // per request, as OpenAI
#define SERVE_MAX_TEMPLATE_STOPS 4

// A chat template: text = prefix + message(role, content) for each message + generation.
typedef struct serve_template {
    char *prefix, *message, *generation;
    char *stop[SERVE_MAX_TEMPLATE_STOPS];
    int   n_stop;
} serve_template;

// Parses a template from JSON text ({"message": "<|{role}|>\n{content}\n", "generation":
// "<|assistant|>\n", "prefix": "", "stop": []}); json NULL gives that default. Returns false with
// a message in err (param "chat_template") when malformed.
bool serve_template_parse(const char *json, serve_template *t, api_error *err);
void serve_template_free(serve_template *t);

// A parsed generation request (/v1/completions or /v1/chat/completions).
typedef struct serve_gen {
    bool               chat;
    char              *model;       // echoed model id (malloc'd), NULL: the server's id
    char              *text;        // prompt text to encode (malloc'd), NULL when ids are given
    bool               parse_special; // encode special tokens in text (completions: yes)
    spry_tokens        ids;         // prompt ids when given as ids
    int64_t            max_tokens;  // -1: absent
    spry_sample_params sp;
    bool               has_seed;
    char              *stop[SERVE_MAX_STOPS + SERVE_MAX_TEMPLATE_STOPS]; // malloc'd
    int                n_stop;
    bool               stream, include_usage;
} serve_gen;

// Reads and validates every field of a request body (root: parsed JSON). Unknown fields are
// ignored; null means absent. Returns false with err filled (status 400, param named).
bool serve_parse_gen(const cJSON *root, bool chat, const serve_template *tmpl, serve_gen *g,
                     api_error *err);
void serve_gen_free(serve_gen *g);

// Response bodies. finish: "stop", "length" or NULL (null in JSON).
void api_json_error(sbuf *b, const api_error *e);
void api_json_completion(sbuf *b, bool chat, const char *id, int64_t created, const char *model,
                         const char *text, size_t len, const char *finish, int64_t n_prompt,
                         int64_t n_gen);
// One SSE event "data: {...}\n\n". role: the chat role delta (first chunk). usage_null: the
// chunk carries "usage": null (OpenAI does so on every chunk when include_usage is set).
void api_sse_chunk(sbuf *b, bool chat, const char *id, int64_t created, const char *model,
                   bool role, const char *text, size_t len, const char *finish, bool usage_null);
void api_sse_usage(sbuf *b, bool chat, const char *id, int64_t created, const char *model,
                   int64_t n_prompt, int64_t n_gen);

#endif
