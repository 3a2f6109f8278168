/*
 * server.c -- the HTTP server of serve.h on libmicrohttpd
 * (https://www.gnu.org/software/libmicrohttpd/).
 *
 * Threads. libmicrohttpd runs one thread per connection (MHD_USE_THREAD_PER_CONNECTION, bounded
 * by max_connections), so a connection may block while its request generates without holding
 * up any other; the engine thread loops spry_engine_step / spry_engine_wait_work and is the only
 * caller of step. Token callbacks run on the engine thread: each one detokenizes (streaming, so
 * UTF-8 split across tokens is held), appends to the request's text, matches stop strings (a
 * match cancels the request in the engine at once) and signals the request's condition variable.
 * The connection thread sends what was released: an SSE chunk per wake-up when streaming, one
 * JSON body at the end otherwise.
 *
 * Locking. One mutex `mu` guards every request's state, the live-request list and the metrics.
 * Engine calls (submit, cancel, stats) are never made while holding mu, so there is no lock-order
 * cycle with the engine's own lock.
 *
 * Lifetime of a request (sreq): two references, the connection's and the engine's. The engine's
 * goes with the final callback (finish != NONE); the connection's when the non-streaming handler
 * returns or when libmicrohttpd frees a streaming response (which also cancels an unfinished
 * request: that is how a client that disconnects frees its KV blocks). A waiting connection
 * checks every 100 ms whether its peer has closed the socket, so a disconnect is noticed even
 * while the request is queued and produces no tokens.
 *
 * Timeouts. Idle connections and slow request bodies time out after timeout_s; once a body is
 * complete the connection's timeout is lifted until the response is done (a request may queue or
 * generate for a long time), then restored.
 */
#define _POSIX_C_SOURCE 200809L
#include "spry/serve.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "serve/serve_internal.h"
#include "spry/log.h"

#define WAKE_S 0.1 // how often a waiting connection checks its socket and the shutdown flag

typedef struct sreq sreq;

struct spry_server {
    spry_server_params p;
    char              *host, *api_key, *model_id; // copies of p's strings
    serve_template     tmpl;
    struct MHD_Daemon *mhd;
    int                port;
    time_t             started;
    // set by attach (before `ready`), read-only afterwards
    atomic_bool           ready;
    spry_model           *model;
    const spry_tokenizer *tok;
    spry_engine          *engine;
    int64_t               n_ctx, n_vocab, max_seqs;
    int32_t               eos;
    pthread_t             engine_thread;
    bool                  engine_started;
    atomic_bool           engine_stop;
    // guarded by mu
    pthread_mutex_t mu;
    bool            stopping;
    sreq           *live;       // every request not yet freed
    int64_t         n_pending;  // submitted to the engine and not finished
    serve_metrics   metrics;
    uint64_t        rng;
};

struct sreq {
    sreq        *prev, *next; // the live list
    spry_server *srv;
    int          refs;
    int64_t      id; // the engine's
    bool         chat, stream, include_usage;
    char        *model;
    char         id_str[48];
    int64_t      created;
    int64_t      n_prompt, n_gen;
    char        *stop[SERVE_MAX_STOPS + SERVE_MAX_TEMPLATE_STOPS];
    int          n_stop;
    spry_tokenizer_stream *ds;
    serve_text   text;
    size_t       n_sent;   // bytes of text already sent (streaming)
    int          finish;   // SERVE_END_*, valid once ended
    bool         stopped;  // a stop string matched (ended before the engine's final callback)
    bool         done;     // the engine's final callback came
    pthread_cond_t cv;
    double       t_arrival, t_last, t_checked;
    // streaming
    bool         role_sent, all_sent;
    sbuf         out;
    size_t       out_off;
    int          fd;       // the connection's socket, to notice a peer that left
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t next_rand(spry_server *s) { // splitmix64; caller holds mu
    uint64_t z = (s->rng += 0x9E3779B97F4A7C15ull);
    z          = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z          = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static char *dup_or_null(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s);
    char  *p = malloc(n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}

// Whether the peer of socket fd has closed its side (or the socket failed).
static bool peer_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int           k  = poll(&pf, 1, 0);
    if (k <= 0) return false;
    if (pf.revents & (POLLERR | POLLNVAL)) return true;
    if (pf.revents & (POLLIN | POLLHUP)) {
        char    c;
        ssize_t r = recv(fd, &c, 1, MSG_PEEK);
        return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
    return false;
}

// Waits on r->cv for up to WAKE_S; returns false when the peer left (checked every WAKE_S, however
// often the condition is signalled). Called with mu held.
static bool wait_or_gone(spry_server *s, sreq *r) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)(WAKE_S * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&r->cv, &s->mu, &ts);
    double now = now_s();
    if (now - r->t_checked < WAKE_S) return true;
    r->t_checked = now;
    pthread_mutex_unlock(&s->mu);
    bool gone = peer_gone(r->fd);
    pthread_mutex_lock(&s->mu);
    return !gone;
}

// ---------------------------------------------------------------------------------------------
// Requests

static void req_free(sreq *r) {
    spry_tokenizer_stream_free(r->ds);
    serve_text_free(&r->text);
    sb_free(&r->out);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->model);
    pthread_cond_destroy(&r->cv);
    free(r);
}

static void req_release(sreq *r) {
    spry_server *s = r->srv;
    pthread_mutex_lock(&s->mu);
    bool last = --r->refs == 0;
    if (last) {
        if (r->prev) r->prev->next = r->next;
        else s->live = r->next;
        if (r->next) r->next->prev = r->prev;
    }
    pthread_mutex_unlock(&s->mu);
    if (last) req_free(r);
}

static const char *finish_name(int f) {
    return f == SERVE_END_STOP ? "stop" : f == SERVE_END_LENGTH ? "length" : NULL;
}

// The engine's token callback (engine thread).
static void on_token(void *user, int64_t id, int32_t token, spry_finish f) {
    sreq        *r      = user;
    spry_server *s      = r->srv;
    double       now    = now_s();
    bool         cancel = false;
    pthread_mutex_lock(&s->mu);
    if (token >= 0 && !r->stopped) {
        r->n_gen++;
        s->metrics.gen_tokens++;
        serve_hist_observe(r->n_gen == 1 ? &s->metrics.ttft : &s->metrics.itl,
                           now - (r->n_gen == 1 ? r->t_arrival : r->t_last));
        r->t_last = now;
        const char *bytes;
        size_t      n;
        // the stop id itself is not text; an id the tokenizer lacks (model padding) has none
        if (f != SPRY_FINISH_STOP &&
            spry_tokenizer_stream_push(r->ds, token, &bytes, &n) == SPRY_OK) {
            int m = serve_text_append(&r->text, bytes, n, r->stop, r->n_stop);
            if (m != 0) {
                r->stopped = true;
                r->finish  = m > 0 ? SERVE_END_STOP : SERVE_END_ERROR;
                serve_text_release_all(&r->text);
                cancel = f == SPRY_FINISH_NONE;
            }
        }
    }
    if (f != SPRY_FINISH_NONE) {
        if (!r->stopped) {
            r->finish = f == SPRY_FINISH_STOP     ? SERVE_END_STOP
                        : f == SPRY_FINISH_LENGTH ? SERVE_END_LENGTH
                        : f == SPRY_FINISH_ERROR  ? SERVE_END_ERROR
                                                  : SERVE_END_CANCELLED;
            const char *bytes;
            size_t      n;
            spry_tokenizer_stream_flush(r->ds, &bytes, &n);
            if (serve_text_append(&r->text, bytes, n, r->stop, r->n_stop) < 0)
                r->finish = SERVE_END_ERROR;
            serve_text_release_all(&r->text);
        }
        r->done = true;
        s->metrics.finished[r->finish]++;
        serve_hist_observe(&s->metrics.e2e, now - r->t_arrival);
        s->n_pending--;
    }
    if (r->stream || r->done || r->stopped)
        pthread_cond_signal(&r->cv); // a JSON reply waits for the end
    pthread_mutex_unlock(&s->mu);
    if (cancel) spry_engine_cancel(s->engine, id);
    if (f != SPRY_FINISH_NONE) req_release(r);
}

static void *engine_main(void *arg) {
    spry_server *s = arg;
    while (!atomic_load(&s->engine_stop)) {
        bool        busy = false;
        spry_status st   = spry_engine_step(s->engine, &busy);
        if (st) SPRY_LOG_WARN("serve: engine step: %s", spry_last_error());
        if (!busy) spry_engine_wait_work(s->engine, WAKE_S);
    }
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Responses

typedef struct conn_state {
    int    route;
    char  *body;
    size_t len, cap;
    bool   too_big; // the body passed max_body: dropped, 413 at its end
    bool   timeout_lifted;
} conn_state;

static enum MHD_Result send_body(spry_server *s, struct MHD_Connection *c, unsigned status,
                                 const char *ctype, char *body, size_t len, const char *hname,
                                 const char *hval) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
    if (hname) MHD_add_response_header(resp, hname, hval);
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    pthread_mutex_lock(&s->mu);
    serve_metrics_count_status(&s->metrics, status);
    pthread_mutex_unlock(&s->mu);
    return ret;
}

static enum MHD_Result send_json(spry_server *s, struct MHD_Connection *c, unsigned status, sbuf *b,
                                 const char *hname, const char *hval) {
    size_t len;
    char  *body = sb_take(b, &len);
    if (!body) {
        static const char oom[] = "{\"error\": {\"message\": \"out of memory\", \"type\": "
                                  "\"server_error\", \"param\": null, \"code\": null}}";
        body = malloc(sizeof oom);
        if (!body) return MHD_NO;
        memcpy(body, oom, sizeof oom);
        len = sizeof oom - 1, status = 500;
    }
    return send_body(s, c, status, "application/json", body, len, hname, hval);
}

static enum MHD_Result send_error(spry_server *s, struct MHD_Connection *c, const api_error *e) {
    sbuf b = {0};
    api_json_error(&b, e);
    if (e->status == 503) return send_json(s, c, 503, &b, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    return send_json(s, c, (unsigned)e->status, &b, NULL, NULL);
}

static enum MHD_Result fail(spry_server *s, struct MHD_Connection *c, int status, const char *type,
                            const char *param, const char *code, const char *msg) {
    api_error e;
    api_fail(&e, status, type, param, code, "%s", msg);
    return send_error(s, c, &e);
}

// ---------------------------------------------------------------------------------------------
// Routes

enum {
    R_HEALTH = 1,
    R_MODELS,
    R_MODEL,
    R_METRICS,
    R_COMPLETIONS,
    R_CHAT,
    R_TOKENIZE,
    R_DETOKENIZE
};

typedef struct route {
    const char *path;   // exact path; R_MODEL matches "/v1/models/<id>"
    const char *method; // "GET" or "POST"
    int         id;
    bool        public_; // no API key needed
} route;

static const route k_routes[] = {
    {"/health", "GET", R_HEALTH, true},
    {"/v1/health", "GET", R_HEALTH, true},
    {"/v1/models", "GET", R_MODELS, true},
    {"/models", "GET", R_MODELS, true},
    {"/v1/models/", "GET", R_MODEL, true},
    {"/metrics", "GET", R_METRICS, false},
    {"/v1/completions", "POST", R_COMPLETIONS, false},
    {"/completions", "POST", R_COMPLETIONS, false},
    {"/v1/chat/completions", "POST", R_CHAT, false},
    {"/chat/completions", "POST", R_CHAT, false},
    {"/tokenize", "POST", R_TOKENIZE, false},
    {"/detokenize", "POST", R_DETOKENIZE, false},
};
#define N_ROUTES (int)(sizeof k_routes / sizeof k_routes[0])

static const route *find_route(const char *url) {
    for (int i = 0; i < N_ROUTES; i++) {
        const route *r = &k_routes[i];
        if (r->id == R_MODEL ? !strncmp(url, r->path, strlen(r->path)) && url[strlen(r->path)]
                             : !strcmp(url, r->path))
            return r;
    }
    return NULL;
}

static bool authorized(const spry_server *s, struct MHD_Connection *c) {
    if (!s->api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    h += 7;
    while (*h == ' ') h++;
    size_t n = strlen(h), m = strlen(s->api_key);
    unsigned diff = n != m;
    for (size_t i = 0; i < n && i < m; i++) diff |= (unsigned char)(h[i] ^ s->api_key[i]);
    return diff == 0;
}

static enum MHD_Result not_ready(spry_server *s, struct MHD_Connection *c) {
    return fail(s, c, 503, "unavailable_error", NULL, NULL, "Loading model");
}

static enum MHD_Result handle_health(spry_server *s, struct MHD_Connection *c) {
    if (!atomic_load(&s->ready)) return not_ready(s, c);
    sbuf b = {0};
    sb_puts(&b, "{\"status\": \"ok\"}");
    return send_json(s, c, 200, &b, NULL, NULL);
}

static void model_object(spry_server *s, sbuf *b) {
    const spry_model_config *cfg = &s->model->cfg;
    sb_puts(b, "{\"id\": ");
    sb_json_cstr(b, s->model_id);
    sb_printf(b,
              ", \"object\": \"model\", \"created\": %lld, \"owned_by\": \"spry\", \"meta\": "
              "{\"arch\": \"%s\", \"n_vocab\": %lld, \"n_ctx\": %lld, \"n_ctx_train\": %lld, "
              "\"n_embd\": %lld, \"n_layer\": %lld, \"n_head\": %lld, \"n_params\": %lld}}",
              (long long)s->started, spry_model_arch_name(cfg->arch),
              (long long)cfg->vocab_size, (long long)s->n_ctx, (long long)cfg->n_positions,
              (long long)cfg->n_embd, (long long)cfg->n_layer, (long long)cfg->n_head,
              (long long)s->model->params.n_elem);
}

static enum MHD_Result handle_models(spry_server *s, struct MHD_Connection *c, const char *url) {
    if (!atomic_load(&s->ready)) return not_ready(s, c);
    sbuf b = {0};
    if (url) { // /v1/models/<id>
        const char *id = url + strlen("/v1/models/");
        if (strcmp(id, s->model_id)) {
            api_error e;
            api_fail(&e, 404, "invalid_request_error", "model", "model_not_found",
                     "The model '%.200s' does not exist", id);
            return send_error(s, c, &e);
        }
        model_object(s, &b);
    } else {
        sb_puts(&b, "{\"object\": \"list\", \"data\": [");
        model_object(s, &b);
        sb_puts(&b, "]}");
    }
    return send_json(s, c, 200, &b, NULL, NULL);
}

static enum MHD_Result handle_metrics(spry_server *s, struct MHD_Connection *c) {
    spry_engine_stats st;
    bool              ready = atomic_load(&s->ready);
    if (ready) spry_engine_stats_get(s->engine, &st);
    sbuf b = {0};
    pthread_mutex_lock(&s->mu);
    serve_metrics_render(&s->metrics, ready ? &st : NULL, ready, s->n_pending, &b);
    pthread_mutex_unlock(&s->mu);
    size_t len;
    char  *body = sb_take(&b, &len);
    if (!body) return fail(s, c, 500, "server_error", NULL, NULL, "out of memory");
    return send_body(s, c, 200, "text/plain; version=0.0.4; charset=utf-8", body, len, NULL, NULL);
}

// Parses the body as a JSON object; on failure answers 400 and returns NULL.
static cJSON *parse_body(spry_server *s, struct MHD_Connection *c, conn_state *cs,
                         enum MHD_Result *ret) {
    const char *end  = NULL;
    cJSON      *root = cs->body ? cJSON_ParseWithLengthOpts(cs->body, cs->len, &end, false) : NULL;
    if (root && end) // only whitespace may follow the value
        while (end < cs->body + cs->len &&
               (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
            end++;
    if (!root || end != cs->body + cs->len) {
        cJSON_Delete(root);
        api_error e;
        if (!cs->len)
            api_fail(&e, 400, "invalid_request_error", NULL, NULL,
                     "The request body is empty; a JSON object was expected.");
        else
            api_fail(&e, 400, "invalid_request_error", NULL, NULL,
                     "We could not parse the JSON body of your request (error near byte %lld of "
                     "%lld). The API expects a JSON payload.",
                     (long long)((end                   ? end
                                  : cJSON_GetErrorPtr() ? cJSON_GetErrorPtr()
                                                        : cs->body) -
                                 cs->body),
                     (long long)cs->len);
        *ret = send_error(s, c, &e);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        *ret = fail(s, c, 400, "invalid_request_error", NULL, NULL,
                    "The request body must be a JSON object.");
        return NULL;
    }
    return root;
}

static enum MHD_Result handle_tokenize(spry_server *s, struct MHD_Connection *c, conn_state *cs) {
    enum MHD_Result ret;
    cJSON          *root = parse_body(s, c, cs, &ret);
    if (!root) return ret;
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(root, "content");
    const cJSON *ps      = cJSON_GetObjectItemCaseSensitive(root, "parse_special");
    const cJSON *wp      = cJSON_GetObjectItemCaseSensitive(root, "with_pieces");
    if (!cJSON_IsString(content) || (ps && !cJSON_IsBool(ps) && !cJSON_IsNull(ps)) ||
        (wp && !cJSON_IsBool(wp) && !cJSON_IsNull(wp))) {
        cJSON_Delete(root);
        return fail(s, c, 400, "invalid_request_error",
                    !cJSON_IsString(content)  ? "content"
                    : ps && !cJSON_IsBool(ps) ? "parse_special"
                                              : "with_pieces",
                    "invalid_type",
                    "/tokenize expects {\"content\": string, \"parse_special\": bool (true), "
                    "\"with_pieces\": bool (false)}");
    }
    spry_encode_params ep = spry_encode_params_default();
    ep.parse_special      = !cJSON_IsFalse(ps);
    bool        pieces    = cJSON_IsTrue(wp);
    spry_tokens ids       = {0};
    spry_status st        = spry_tokenizer_encode(s->tok, content->valuestring,
                                                  strlen(content->valuestring), &ep, &ids);
    cJSON_Delete(root);
    if (st) {
        spry_tokens_free(&ids);
        return fail(s, c, st == SPRY_ERR_ARG ? 400 : 500,
                    st == SPRY_ERR_ARG ? "invalid_request_error" : "server_error", "content", NULL,
                    spry_last_error());
    }
    sbuf b = {0};
    sb_puts(&b, "{\"tokens\": [");
    for (int64_t i = 0; i < ids.n; i++) {
        if (pieces) {
            size_t      n;
            const char *p = spry_tokenizer_token_bytes(s->tok, ids.ids[i], &n);
            sb_printf(&b, "%s{\"id\": %d, \"piece\": ", i ? ", " : "", ids.ids[i]);
            sb_json_str(&b, p ? p : "", p ? n : 0);
            sb_puts(&b, "}");
        } else {
            sb_printf(&b, "%s%d", i ? ", " : "", ids.ids[i]);
        }
    }
    sb_puts(&b, "]}");
    spry_tokens_free(&ids);
    return send_json(s, c, 200, &b, NULL, NULL);
}

static enum MHD_Result handle_detokenize(spry_server *s, struct MHD_Connection *c, conn_state *cs) {
    enum MHD_Result ret;
    cJSON          *root = parse_body(s, c, cs, &ret);
    if (!root) return ret;
    const cJSON *toks = cJSON_GetObjectItemCaseSensitive(root, "tokens");
    spry_tokens  ids  = {0};
    bool         ok   = cJSON_IsArray(toks);
    for (const cJSON *v = ok ? toks->child : NULL; v && ok; v = v->next)
        ok = cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 2147483648.0 &&
             v->valuedouble == (double)(int32_t)v->valuedouble &&
             spry_tokens_push(&ids, (int32_t)v->valuedouble) == SPRY_OK;
    cJSON_Delete(root);
    if (!ok) {
        spry_tokens_free(&ids);
        return fail(s, c, 400, "invalid_request_error", "tokens", "invalid_type",
                    "/detokenize expects {\"tokens\": [integer token ids]}");
    }
    char       *text = NULL;
    size_t      len  = 0;
    spry_status st   = spry_tokenizer_decode(s->tok, ids.ids, ids.n, false, &text, &len);
    spry_tokens_free(&ids);
    if (st) {
        free(text);
        return fail(s, c, st == SPRY_ERR_ARG ? 400 : 500,
                    st == SPRY_ERR_ARG ? "invalid_request_error" : "server_error", "tokens", NULL,
                    spry_last_error());
    }
    sbuf b = {0};
    sb_puts(&b, "{\"content\": ");
    sb_json_str(&b, text, len);
    sb_puts(&b, "}");
    free(text);
    return send_json(s, c, 200, &b, NULL, NULL);
}

// ---------------------------------------------------------------------------------------------
// Generation

// Appends the SSE events that r's state allows; true if any. Called with mu held.
static bool sse_produce(spry_server *s, sreq *r) {
    (void)s;
    size_t before = r->out.n;
    bool   ended  = r->done || r->stopped;
    if (r->chat && !r->role_sent) {
        api_sse_chunk(&r->out, true, r->id_str, r->created, r->model, true, NULL, 0, NULL,
                      r->include_usage);
        r->role_sent = true;
    }
    if (r->n_sent < r->text.released) {
        api_sse_chunk(&r->out, r->chat, r->id_str, r->created, r->model, false,
                      r->text.buf + r->n_sent, r->text.released - r->n_sent, NULL,
                      r->include_usage);
        r->n_sent = r->text.released;
    }
    if (ended && !r->all_sent) {
        if (r->finish == SERVE_END_ERROR || r->finish == SERVE_END_CANCELLED) {
            api_error e;
            api_fail(&e, 500, "server_error", NULL, NULL,
                     "generation failed: the engine reported an error");
            sb_puts(&r->out, "data: ");
            api_json_error(&r->out, &e);
            sb_puts(&r->out, "\n\n");
        } else {
            if (r->chat)
                api_sse_chunk(&r->out, true, r->id_str, r->created, r->model, false, NULL, 0,
                              finish_name(r->finish), r->include_usage);
            else
                api_sse_chunk(&r->out, false, r->id_str, r->created, r->model, false, "", 0,
                              finish_name(r->finish), r->include_usage);
            if (r->include_usage)
                api_sse_usage(&r->out, r->chat, r->id_str, r->created, r->model, r->n_prompt,
                              r->n_gen);
        }
        sb_puts(&r->out, "data: [DONE]\n\n");
        r->all_sent = true;
    }
    return r->out.n > before || r->out.oom;
}

// libmicrohttpd's content reader for a streaming response: blocks (this connection's own thread)
// until there is something to send.
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    sreq        *r = cls;
    spry_server *s = r->srv;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (r->out.oom || s->stopping) break;
        if (r->out_off < r->out.n) {
            size_t k = r->out.n - r->out_off < max ? r->out.n - r->out_off : max;
            memcpy(buf, r->out.p + r->out_off, k);
            r->out_off += k;
            if (r->out_off == r->out.n) r->out.n = r->out_off = 0;
            pthread_mutex_unlock(&s->mu);
            return (ssize_t)k;
        }
        if (r->all_sent) {
            pthread_mutex_unlock(&s->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (sse_produce(s, r)) continue;
        if (!wait_or_gone(s, r)) break;
    }
    pthread_mutex_unlock(&s->mu);
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

// libmicrohttpd frees the streaming response: the stream ended or the client went away.
static void sse_free(void *cls) {
    sreq        *r = cls;
    spry_server *s = r->srv;
    pthread_mutex_lock(&s->mu);
    bool cancel = !r->done && !r->stopped;
    pthread_mutex_unlock(&s->mu);
    if (cancel) spry_engine_cancel(s->engine, r->id);
    req_release(r);
}

static const char *const k_eos_names[] = {"<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"};

// Encodes the prompt, checks the context, creates and submits the request. On failure answers
// and returns NULL (*ret set).
static sreq *submit(spry_server *s, struct MHD_Connection *c, serve_gen *g, enum MHD_Result *ret) {
    api_error e;
    if (g->text) {
        spry_encode_params ep = spry_encode_params_default();
        ep.parse_special      = g->parse_special;
        if (spry_tokenizer_encode(s->tok, g->text, strlen(g->text), &ep, &g->ids)) {
            *ret = fail(s, c, 400, "invalid_request_error", g->chat ? "messages" : "prompt", NULL,
                        spry_last_error());
            return NULL;
        }
    }
    if (g->ids.n == 0) { // an empty prompt starts from the end-of-text token, as OpenAI's does
        if (s->eos < 0 || spry_tokens_push(&g->ids, s->eos)) {
            *ret = fail(
                s, c, 400, "invalid_request_error", "prompt", "invalid_value",
                "The prompt is empty (and the tokenizer has no end-of-text token to start from).");
            return NULL;
        }
    }
    for (int64_t i = 0; i < g->ids.n; i++)
        if (g->ids.ids[i] >= s->n_vocab) {
            api_fail(&e, 400, "invalid_request_error", "prompt", "invalid_value",
                     "Token id %d at position %lld is out of the model's vocabulary (0..%lld).",
                     g->ids.ids[i], (long long)i, (long long)s->n_vocab - 1);
            *ret = send_error(s, c, &e);
            return NULL;
        }
    int64_t n = g->ids.n, room = s->n_ctx - n, mt = g->max_tokens;
    if (mt < 0)
        mt = g->chat ? room : (s->p.default_max_tokens < room ? s->p.default_max_tokens : room);
    if (mt < 1) mt = 1;
    if (n + mt > s->n_ctx) {
        if (g->chat)
            api_fail(
                &e, 400, "invalid_request_error", "messages", "context_length_exceeded",
                "This model's maximum context length is %lld tokens. However, you requested "
                "%lld tokens (%lld in the messages, %lld in the completion). Please reduce the "
                "length of the messages or completion.",
                (long long)s->n_ctx, (long long)(n + mt), (long long)n, (long long)mt);
        else
            api_fail(&e, 400, "invalid_request_error",
                     n >= s->n_ctx || g->max_tokens < 0 ? "prompt" : "max_tokens",
                     "context_length_exceeded",
                     "This model's maximum context length is %lld tokens, however you requested "
                     "%lld tokens (%lld in your prompt; %lld for the completion). Please reduce "
                     "your prompt; or completion length.",
                     (long long)s->n_ctx, (long long)(n + mt), (long long)n, (long long)mt);
        *ret = send_error(s, c, &e);
        return NULL;
    }
    sreq *r = calloc(1, sizeof *r);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    bool cv_ok = r && pthread_cond_init(&r->cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!cv_ok || spry_tokenizer_stream_init(s->tok, true, &r->ds) ||
        !(r->model = dup_or_null(g->model ? g->model : s->model_id))) {
        if (r && cv_ok) req_free(r);
        else free(r);
        *ret = fail(s, c, 500, "server_error", NULL, NULL, "out of memory");
        return NULL;
    }
    r->srv = s, r->chat = g->chat, r->stream = g->stream,
    r->include_usage = g->stream && g->include_usage;
    r->n_prompt = n, r->created = (int64_t)time(NULL), r->t_arrival = r->t_checked = now_s(),
    r->fd = -1;
    for (int i = 0; i < g->n_stop; i++) r->stop[i] = g->stop[i], g->stop[i] = NULL;
    r->n_stop = g->n_stop, g->n_stop = 0;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) r->fd = ci->connect_fd;

    pthread_mutex_lock(&s->mu);
    bool full = s->n_pending >= s->p.max_queue + s->max_seqs;
    if (s->stopping || full) {
        if (full) s->metrics.rejected_full++;
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        *ret = fail(s, c, 503, "unavailable_error", NULL, s->stopping ? NULL : "overloaded",
                    s->stopping ? "The server is shutting down." :
                    "The server is busy: too many requests are waiting. Retry later.");
        return NULL;
    }
    uint64_t rnd = next_rand(s);
    snprintf(r->id_str, sizeof r->id_str, "%s%016llx%08llx", g->chat ? "chatcmpl-" : "cmpl-",
             (unsigned long long)rnd, (unsigned long long)(next_rand(s) >> 32));
    if (!g->has_seed) g->sp.seed = next_rand(s);
    r->refs = 2; // the connection's and the engine's
    r->next = s->live;
    if (s->live) s->live->prev = r;
    s->live = r;
    s->n_pending++;
    s->metrics.requests++;
    s->metrics.prompt_tokens += n;
    pthread_mutex_unlock(&s->mu);

    spry_request req = {.prompt = g->ids.ids, .n_prompt = n, .max_tokens = mt, .sample = g->sp,
                        .stop_ids = s->eos >= 0 ? &s->eos : NULL, .n_stop_ids = s->eos >= 0,
                        .on_token = on_token, .user = r};
    spry_status st = spry_engine_submit(s->engine, &req, &r->id);
    if (st) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", spry_last_error());
        pthread_mutex_lock(&s->mu);
        s->n_pending--;
        s->metrics.requests--;
        s->metrics.prompt_tokens -= n;
        r->refs = 1;
        pthread_mutex_unlock(&s->mu);
        req_release(r);
        *ret = fail(s, c, st == SPRY_ERR_ARG ? 400 : 500,
                    st == SPRY_ERR_ARG ? "invalid_request_error" : "server_error", NULL, NULL, msg);
        return NULL;
    }
    return r;
}

static enum MHD_Result handle_generate(spry_server *s, struct MHD_Connection *c, conn_state *cs,
                                       bool chat) {
    enum MHD_Result ret;
    cJSON          *root = parse_body(s, c, cs, &ret);
    if (!root) return ret;
    serve_gen g;
    api_error e;
    bool      ok = serve_parse_gen(root, chat, &s->tmpl, &g, &e);
    cJSON_Delete(root);
    if (!ok) {
        serve_gen_free(&g);
        return send_error(s, c, &e);
    }
    sreq *r = submit(s, c, &g, &ret);
    serve_gen_free(&g);
    if (!r) return ret;

    if (r->stream) {
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024,
                                                                      sse_read, r, sse_free);
        if (!resp) {
            sse_free(r);
            return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
        ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp); // sse_free runs when libmicrohttpd is done with it
        pthread_mutex_lock(&s->mu);
        serve_metrics_count_status(&s->metrics, 200);
        pthread_mutex_unlock(&s->mu);
        return ret;
    }

    pthread_mutex_lock(&s->mu);
    bool here = true;
    while (!(r->done || r->stopped) && here) here = !s->stopping && wait_or_gone(s, r);
    if (!(r->done || r->stopped)) { // the client left, or the server stops
        pthread_mutex_unlock(&s->mu);
        spry_engine_cancel(s->engine, r->id);
        req_release(r);
        return MHD_NO;
    }
    sbuf b   = {0};
    int  fin = r->finish;
    if (fin != SERVE_END_ERROR && fin != SERVE_END_CANCELLED)
        api_json_completion(&b, r->chat, r->id_str, r->created, r->model,
                            r->text.buf ? r->text.buf : "", r->text.len, finish_name(fin),
                            r->n_prompt, r->n_gen);
    pthread_mutex_unlock(&s->mu);
    req_release(r);
    if (fin == SERVE_END_ERROR || fin == SERVE_END_CANCELLED) {
        sb_free(&b);
        return fail(s, c, 500, "server_error", NULL, NULL,
                    "generation failed: the engine reported an error (see the server log)");
    }
    return send_json(s, c, 200, &b, NULL, NULL);
}

// ---------------------------------------------------------------------------------------------
// libmicrohttpd callbacks

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)version;
    spry_server *s  = cls;
    conn_state  *cs = *con_cls;
    if (!cs) { // headers are in; the body (if any) follows in later calls
        if (!(cs = calloc(1, sizeof *cs))) return MHD_NO;
        *con_cls = cs;
        if (!strcmp(method, "OPTIONS")) { // CORS preflight, no auth
            struct MHD_Response *resp =
                MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
            if (!resp) return MHD_NO;
            MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
            MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
            MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                    "Authorization, Content-Type");
            enum MHD_Result ret = MHD_queue_response(c, 204, resp);
            MHD_destroy_response(resp);
            pthread_mutex_lock(&s->mu);
            serve_metrics_count_status(&s->metrics, 204);
            pthread_mutex_unlock(&s->mu);
            return ret;
        }
        const route *rt = find_route(url);
        if (!rt) {
            api_error e;
            api_fail(&e, 404, "not_found_error", NULL, NULL, "Unknown route: %s %.200s", method,
                     url);
            return send_error(s, c, &e);
        }
        bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
        if (get != !strcmp(rt->method, "GET") || (!get && strcmp(method, "POST"))) {
            api_error e;
            api_fail(&e, 405, "invalid_request_error", NULL, "method_not_allowed",
                     "Method %s is not allowed on %.200s; use %s.", method, url, rt->method);
            sbuf b = {0};
            api_json_error(&b, &e);
            return send_json(s, c, 405, &b, MHD_HTTP_HEADER_ALLOW, rt->method);
        }
        if (!rt->public_ && !authorized(s, c))
            return fail(s, c, 401, "authentication_error", NULL, "invalid_api_key",
                        "Invalid API key: send 'Authorization: Bearer <key>'.");
        cs->route = rt->id;
        // answers wait for the end of the request (the next call), else libmicrohttpd closes
        // the connection after them; only refusals are sent at once
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->p.max_body) {
            api_error e;
            api_fail(&e, 413, "invalid_request_error", NULL, "request_too_large",
                     "The request body (%s bytes) exceeds the limit of %zu bytes.", cl,
                     s->p.max_body);
            return send_error(s, c, &e);
        }
        return MHD_YES;
    }
    if (*upload_size) { // a piece of the body
        size_t n = *upload_size;
        *upload_size = 0;
        if (cs->too_big || cs->len + n > s->p.max_body) {
            // a chunked body (no Content-Length) grew too large: libmicrohttpd cannot answer in
            // the middle of a body, so the rest is read and dropped (up to 4x the limit, then the
            // connection is closed) and 413 follows at its end
            if (!cs->too_big) free(cs->body), cs->body = NULL, cs->cap = 0;
            cs->too_big = true;
            cs->len += n;
            return cs->len / 4 > s->p.max_body ? MHD_NO : MHD_YES;
        }
        if (cs->len + n + 1 > cs->cap) {
            size_t cap = cs->cap ? cs->cap : 4096;
            while (cap < cs->len + n + 1) cap *= 2;
            char *p = realloc(cs->body, cap);
            if (!p) return MHD_NO;
            cs->body = p, cs->cap = cap;
        }
        memcpy(cs->body + cs->len, upload, n);
        cs->len += n;
        cs->body[cs->len] = 0;
        return MHD_YES;
    }
    // the whole body is in
    if (cs->too_big) {
        api_error e;
        api_fail(&e, 413, "invalid_request_error", NULL, "request_too_large",
                 "The request body exceeds the limit of %zu bytes.", s->p.max_body);
        return send_error(s, c, &e);
    }
    if (cs->route == R_HEALTH) return handle_health(s, c);
    if (cs->route == R_MODELS) return handle_models(s, c, NULL);
    if (cs->route == R_MODEL) return handle_models(s, c, url);
    if (cs->route == R_METRICS) return handle_metrics(s, c);
    bool model_route = cs->route == R_COMPLETIONS || cs->route == R_CHAT ||
                       cs->route == R_TOKENIZE || cs->route == R_DETOKENIZE;
    if (model_route && !atomic_load(&s->ready)) return not_ready(s, c);
    if (cs->route == R_TOKENIZE) return handle_tokenize(s, c, cs);
    if (cs->route == R_DETOKENIZE) return handle_detokenize(s, c, cs);
    if (cs->route == R_COMPLETIONS || cs->route == R_CHAT) {
        // a request may queue and generate for long: no idle timeout until it is answered
        MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
        cs->timeout_lifted = true;
        return handle_generate(s, c, cs, cs->route == R_CHAT);
    }
    return MHD_NO; // unreachable: every route answered
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)toe;
    spry_server *s  = cls;
    conn_state  *cs = *con_cls;
    if (!cs) return;
    if (cs->timeout_lifted)
        MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, s->p.timeout_s);
    free(cs->body);
    free(cs);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = 0;
    SPRY_LOG_DEBUG("serve: libmicrohttpd: %s", msg);
}

// ---------------------------------------------------------------------------------------------
// Life cycle

spry_server_params spry_server_params_default(void) {
    return (spry_server_params){.host = "127.0.0.1", .port = 8080, .api_key = NULL,
                                .max_body = (size_t)1 << 20, .max_queue = 128,
                                .max_connections = 512, .timeout_s = 60, .model_id = "spry",
                                .chat_template = NULL, .default_max_tokens = 16};
}

spry_status spry_server_start(const spry_server_params *p, spry_server **out) {
    *out = NULL;
    if (!p->host || !*p->host || p->port < 0 || p->port > 65535 || p->max_body < 2 ||
        p->max_queue < 0 || p->max_connections < 1 || !p->model_id || !*p->model_id ||
        p->default_max_tokens < 1)
        return spry_errorf(
            SPRY_ERR_ARG,
            "serve: bad parameters (host '%s', port %d, max_body %zu, max_queue %lld, "
            "max_connections %d, default_max_tokens %lld)",
            p->host ? p->host : "(null)", p->port, p->max_body, (long long)p->max_queue,
            p->max_connections, (long long)p->default_max_tokens);
    spry_server *s = calloc(1, sizeof *s);
    if (!s) return spry_errorf(SPRY_ERR_NOMEM, "serve: out of memory");
    s->p = *p;
    s->host     = dup_or_null(p->host);
    s->api_key  = p->api_key && *p->api_key ? dup_or_null(p->api_key) : NULL;
    s->model_id = dup_or_null(p->model_id);
    s->eos      = -1;
    s->started  = time(NULL);
    s->rng =
        (uint64_t)time(NULL) * 0x2545F4914F6CDD1Dull ^ (uint64_t)(uintptr_t)s ^ (uint64_t)getpid();
    atomic_init(&s->ready, false);
    atomic_init(&s->engine_stop, false);
    pthread_mutex_init(&s->mu, NULL);
    serve_metrics_init(&s->metrics);
    api_error e;
    if (!s->host || !s->model_id || (p->api_key && *p->api_key && !s->api_key)) {
        spry_server_stop(s);
        return spry_errorf(SPRY_ERR_NOMEM, "serve: out of memory");
    }
    if (!serve_template_parse(p->chat_template, &s->tmpl, &e)) {
        spry_server_stop(s);
        return spry_errorf(SPRY_ERR_ARG, "serve: chat template: %s", e.message);
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai   = NULL;
    char             port[16];
    snprintf(port, sizeof port, "%d", p->port);
    int gai = getaddrinfo(p->host, port, &hints, &ai);
    if (gai || !ai) {
        spry_server_stop(s);
        return spry_errorf(SPRY_ERR_IO, "serve: cannot resolve host '%s': %s", p->host,
                           gai_strerror(gai));
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_AUTO | MHD_USE_ERROR_LOG | MHD_USE_ITC;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->mhd = MHD_start_daemon(flags, (uint16_t)p->port, NULL, NULL, on_request, s,
                              MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned int)p->max_connections,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)p->timeout_s,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                              MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->mhd) {
        spry_server_stop(s);
        return spry_errorf(SPRY_ERR_IO,
                           "serve: cannot listen on %s:%d (in use, or not an address of this "
                           "machine). HINT: choose another --port or --host",
                           p->host, p->port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di && di->port ? di->port : p->port;
    *out    = s;
    return SPRY_OK;
}

spry_status spry_server_attach(spry_server *s, spry_model *m, const spry_tokenizer *tok,
                               const spry_engine_params *ep) {
    if (s->engine) return spry_errorf(SPRY_ERR_ARG, "serve: a model is already attached");
    if (spry_tokenizer_n_vocab(tok) > m->cfg.vocab_size)
        return spry_errorf(SPRY_ERR_ARG,
                           "serve: the tokenizer has %d tokens but the model's vocab_size is %lld. "
                           "HINT: use the tokenizer the model was trained with",
                           spry_tokenizer_n_vocab(tok), (long long)m->cfg.vocab_size);
    spry_engine *e;
    SPRY_TRY(spry_engine_init(m, ep, &e));
    s->model   = m;
    s->tok     = tok;
    s->engine  = e;
    s->n_ctx   = spry_engine_n_ctx(e);
    s->n_vocab = m->cfg.vocab_size;
    s->max_seqs = ep->max_seqs;
    for (size_t i = 0; i < sizeof k_eos_names / sizeof *k_eos_names && s->eos < 0; i++)
        s->eos = spry_tokenizer_special_id(tok, k_eos_names[i]);
    if (pthread_create(&s->engine_thread, NULL, engine_main, s)) {
        spry_engine_free(e);
        s->engine = NULL;
        return spry_errorf(SPRY_ERR_NOMEM, "serve: cannot start the engine thread");
    }
    s->engine_started = true;
    atomic_store(&s->ready, true);
    return SPRY_OK;
}

int spry_server_port(const spry_server *s) { return s->port; }

int64_t spry_server_n_ctx(const spry_server *s) { return s->n_ctx; }

void spry_server_stop(spry_server *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    for (sreq *r = s->live; r; r = r->next) pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->mhd) MHD_stop_daemon(s->mhd); // joins every connection thread
    if (s->engine_started) {
        atomic_store(&s->engine_stop, true);
        pthread_join(s->engine_thread, NULL);
    }
    spry_engine_free(s->engine); // pending requests are dropped without callbacks
    for (sreq *r = s->live, *n; r; r = n) n = r->next, req_free(r);
    serve_template_free(&s->tmpl);
    pthread_mutex_destroy(&s->mu);
    free(s->host), free(s->api_key), free(s->model_id);
    free(s);
}
