/*
 * serve.h -- an OpenAI-compatible HTTP/1.1 server over the serving engine (engine.h).
 *
 * Endpoints: POST /v1/completions, POST /v1/chat/completions (JSON or Server-Sent Events),
 * GET /v1/models, GET /health, GET /metrics (Prometheus text), POST /tokenize, POST /detokenize.
 * HTTP runs on libmicrohttpd, one thread per connection (bounded by max_connections), so the
 * HTTP side never waits on the engine's batch; one engine thread loops spry_engine_step and
 * delivers tokens to the connections. A client that disconnects has its request cancelled and
 * its KV blocks freed. Errors are OpenAI-shaped: {"error": {"message", "type", "param", "code"}}.
 * docs/serving.md has the request fields, the status codes, the metric names and the design.
 *
 * Life cycle: spry_server_start (HTTP up; /health answers 503 "Loading model"), then
 * spry_server_attach (the engine starts; /health answers 200), then spry_server_stop.
 * Built only when libmicrohttpd is found (CMake defines SPRY_HAVE_MHD for the CLI then).
 */
#ifndef SPRY_SERVE_H
#define SPRY_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spry/engine.h"
#include "spry/model.h"
#include "spry/status.h"
#include "spry/tokenizer.h"

typedef struct spry_server spry_server;

typedef struct spry_server_params {
    const char *host;            // address to bind, IPv4 or IPv6 literal or name ("127.0.0.1")
    int         port;            // 0: any free port, see spry_server_port (8080)
    const char *api_key;         // Bearer key required on all but /health and /v1/models (NULL)
    size_t      max_body;        // request bodies above this get 413 (1 MiB)
    int64_t     max_queue;       // requests waiting beyond max_seqs before 503 (128)
    int         max_connections; // open connections = HTTP threads (512)
    unsigned    timeout_s;       // idle connection / slow request timeout, 0 = none (60)
    const char *model_id;        // the id /v1/models lists and responses echo by default ("spry")
    const char *chat_template;   // JSON text of a chat template (docs/serving.md), NULL: default
    int64_t     default_max_tokens; // completions without max_tokens (16, as OpenAI)
} spry_server_params;

spry_server_params spry_server_params_default(void);

// Binds host:port and starts answering HTTP: until spry_server_attach, /health answers 503 and
// every model route 503 "Loading model". Strings in p are copied. Returns SPRY_ERR_ARG for bad
// params or an unparsable chat template (the message names the field), SPRY_ERR_IO when the
// address cannot be bound (message names it), SPRY_ERR_NOMEM. *out NULL on error.
spry_status spry_server_start(const spry_server_params *p, spry_server **out);

// Serves model m (f32 weights, not owned, must outlive the server) with tokenizer tok (not
// owned, likewise): creates the engine with ep and starts the engine thread. Generation stops at
// the tokenizer's end-of-text token when it has one ("<|endoftext|>", "</s>" or "<eos>").
// Returns SPRY_ERR_ARG (tokenizer larger than the model's vocabulary, bad ep: the engine's
// message), SPRY_ERR_NOMEM, or SPRY_ERR_ARG if already attached; the server keeps answering
// 503 on error. Call once, from the thread that started the server.
spry_status spry_server_attach(spry_server *s, spry_model *m, const spry_tokenizer *tok,
                               const spry_engine_params *ep);

// The bound port (the chosen one when params.port was 0).
int spry_server_port(const spry_server *s);

// The context length requests are admitted against (0 before attach).
int64_t spry_server_n_ctx(const spry_server *s);

// Stops accepting, ends every open request (streams end, waiting requests are cancelled), joins
// the HTTP and engine threads and frees everything. s may be NULL. Not thread safe with other
// calls on s.
void spry_server_stop(spry_server *s);

#endif
