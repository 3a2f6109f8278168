/*
 * ops.h -- the execution context and the op constructors.
 *
 * Eager execution with a tape (STYLE.md section 6): spry_matmul(ctx, ...) checks shapes,
 * allocates its output in the step arena, runs the forward kernel at once and, when gradients
 * are on and an input requires one, records a node that spry_backward() (autograd.h) walks in
 * reverse. With gradients off nothing is recorded. Shapes follow PyTorch: the last dimension is
 * contiguous, linear weights are (out, in), y = x @ W^T + b.
 *
 * Errors inside ops are sticky: if the arena cannot grow, the op sets ctx->status and returns a
 * placeholder; later ops are no-ops; callers check spry_ctx_status() once per step.
 * Shape mismatches are programmer errors and abort with both shapes in the message.
 */
#ifndef SPRY_OPS_H
#define SPRY_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "spry/arena.h"
#include "spry/status.h"
#include "spry/tensor.h"

#define SPRY_MAX_SRC    4
#define SPRY_MAX_SAVED  4
#define SPRY_MAX_PARAMS 4

typedef struct spry_ctx  spry_ctx;
typedef struct spry_node spry_node;

// One recorded op application.
struct spry_node {
    int          op;                     // index into spry_op_defs
    int          n_src;
    spry_tensor *src[SPRY_MAX_SRC];
    spry_tensor *out;
    spry_tensor *saved[SPRY_MAX_SAVED];  // op-specific state kept for backward
    int64_t      ip[SPRY_MAX_PARAMS];    // integer params
    float        fp[SPRY_MAX_PARAMS];    // float params
    spry_ctx    *ctx;
    spry_node   *prev;                   // tape order, newest first
};

// Precision of matrix products (DeepSpeed's "bf16": {"enabled": true}): bf16 inputs with f32
// accumulation; everything else stays f32.
// SPRY_PRECISION_F16 (DeepSpeed's "fp16"): matmul inputs and activation gradients are rounded to
// IEEE half (values beyond 65504 become inf, which dynamic loss scaling detects) and multiplied
// in f32 -- the CPUs spry targets have no f16 GEMM, so the arithmetic is emulated.
typedef enum spry_precision {
    SPRY_PRECISION_F32 = 0,
    SPRY_PRECISION_BF16,
    SPRY_PRECISION_F16,
} spry_precision;

struct spry_ctx {
    spry_arena    *arena;        // step lifetime
    spry_node     *tape;         // newest node, or NULL
    int64_t        n_nodes;
    bool           grad_enabled; // record nodes (training) or not (inference)
    spry_status    status;       // sticky
    int            n_threads;
    spry_precision precision;
    uint64_t       seed;         // dropout and other random ops
    uint64_t       rng_counter;  // advanced by each random op; part of the checkpoint state
    // gradient buffers of intermediate tensors released during backward, reused by size
    struct { size_t bytes; void *data; } grad_pool[64];
    int            n_grad_pool;
    // called after each node's backward has run (NULL: none); data-parallel training starts the
    // reduction of a gradient bucket here as soon as its last parameter's gradient is complete
    void (*on_backward_node)(void *user, const spry_node *n);
    void *on_backward_user;
};

// Creates a context with a step arena of initial chunk size arena_bytes. NULL on OOM.
spry_ctx *spry_ctx_init(size_t arena_bytes, int n_threads);
void      spry_ctx_free(spry_ctx *ctx);
// Starts a step: resets the arena, clears the tape and the sticky status.
void spry_ctx_begin(spry_ctx *ctx);
// The sticky status of the step (SPRY_OK if no op failed).
spry_status spry_ctx_status(const spry_ctx *ctx);
// Turns recording on/off; returns the previous setting.
bool spry_ctx_set_grad(spry_ctx *ctx, bool enabled);

// New arena tensor for this step (sticky NOMEM on failure: returns a placeholder).
spry_tensor *spry_new(spry_ctx *ctx, spry_dtype dt, int ndim, const int64_t *shape);
spry_tensor *spry_zeros(spry_ctx *ctx, spry_dtype dt, int ndim, const int64_t *shape);
// Prints per-op forward/backward wall time to stderr (collected when SPRY_PROFILE is set).
void spry_op_profile_print(void);
// The placeholder ops return after a sticky error: a 1-element f32 tensor in static storage.
spry_tensor *spry_op_placeholder(void);

/* ---- the op constructors --------------------------------------------------------------------
 * All inputs contiguous f32 unless stated; outputs are new contiguous tensors. */

// a @ op(b): a (..., M, K); b (..., K, N) with the same leading dims, or b 2-D and shared.
// transpose_b: b is given as (..., N, K).
spry_tensor *spry_matmul(spry_ctx *ctx, spry_tensor *a, spry_tensor *b, bool transpose_b);
// x (..., in) @ w^T + bias: w (out, in), bias (out) or NULL -> (..., out).
spry_tensor *spry_linear(spry_ctx *ctx, spry_tensor *x, spry_tensor *w, spry_tensor *bias);
// Elementwise with broadcasting of b over leading dims: b's shape is a suffix of a's.
spry_tensor *spry_add(spry_ctx *ctx, spry_tensor *a, spry_tensor *b);
spry_tensor *spry_mul(spry_ctx *ctx, spry_tensor *a, spry_tensor *b);
spry_tensor *spry_scale(spry_ctx *ctx, spry_tensor *a, float s);
// Sum / mean of all elements -> shape (1).
spry_tensor *spry_sum(spry_ctx *ctx, spry_tensor *a);
spry_tensor *spry_mean(spry_ctx *ctx, spry_tensor *a);
// LayerNorm over the last dim: x (..., C), w (C), b (C).
spry_tensor *spry_layernorm(spry_ctx *ctx, spry_tensor *x, spry_tensor *w, spry_tensor *b,
                            float eps);
// GELU, tanh approximation (torch.nn.functional.gelu(x, approximate="tanh")).
spry_tensor *spry_gelu(spry_ctx *ctx, spry_tensor *x);
// GELU, exact: x Phi(x) (torch.nn.functional.gelu(x), BERT's "gelu").
spry_tensor *spry_gelu_erf(spry_ctx *ctx, spry_tensor *x);
// Softmax over the last dim.
spry_tensor *spry_softmax(spry_ctx *ctx, spry_tensor *x);

// Layout of the fused QKV projection output (B, T, 3*C) that spry_attention reads.
typedef enum spry_qkv_layout {
    SPRY_QKV_GPT2  = 0, // [q | k | v], each (H, D): GPT-2's c_attn
    SPRY_QKV_BLOOM = 1, // per head [q_h | k_h | v_h]: BLOOM's query_key_value, view (H, 3, D)
} spry_qkv_layout;

typedef struct spry_attn_params {
    int64_t         n_head;
    bool            causal;
    bool            alibi;  // add slope_h * (j - i) to the scores (Press et al., BLOOM)
    spry_qkv_layout layout;
    // I32 (B, T) or NULL: the positions of the T tokens in their original sequence, strictly
    // increasing per row (a token-dropped layer sees a sorted subset). ALiBi then adds
    // slope_h * (pos[j] - pos[i]); the causal mask stays j <= i (the order of the rows). NULL
    // means 0..T-1. Ignored without alibi.
    const spry_tensor *pos;
    // I32 (B) or NULL: row b attends only to keys j < key_len[b], 1 <= key_len[b] <= T -- an
    // encoder's right padding (BERT's attention_mask, whose masked keys get zero probability).
    // Query rows past key_len[b] are computed all the same (their outputs are the model's to
    // ignore). NULL: all T keys (with causal: j <= i).
    const spry_tensor *key_len;
} spry_attn_params;

// Multi-head scaled dot-product attention, fused: qkv (B, T, 3*C) -> (B, T, C), heads
// concatenated. Scores scaled by 1/sqrt(D), D = C / n_head. p.pos (with alibi) must be I32
// (B, T) and outlive the step (it is copied into the arena as floats).
spry_tensor *spry_attention(spry_ctx *ctx, spry_tensor *qkv, spry_attn_params p);
// ALiBi slope of head h of n_head (BLOOM's build_alibi_tensor, incl. non-power-of-2 counts).
float spry_alibi_slope(int64_t h, int64_t n_head);

// Rows of table (V, C) picked by ids (I32, any shape S) -> (S..., C). Out-of-range ids are
// programmer errors here; loaders validate user data.
spry_tensor *spry_embedding(spry_ctx *ctx, spry_tensor *table, spry_tensor *ids);
// Fused log-softmax + negative log-likelihood: logits (N, V) or (..., V), targets I32 of the
// leading shape; targets < 0 are ignored. Returns the mean loss over counted rows, shape (1).
spry_tensor *spry_cross_entropy(spry_ctx *ctx, spry_tensor *logits, spry_tensor *targets);
// Fused LM head + cross entropy: CE(x @ w^T, targets) without materializing all logits.
// x (..., C), w (V, C), targets I32 of x's leading shape (< 0 ignored) -> mean loss (1).
// Gradients for x and w are computed during the forward (chunk by chunk) and scaled in backward.
spry_tensor *spry_linear_cross_entropy(spry_ctx *ctx, spry_tensor *x, spry_tensor *w,
                                       spry_tensor *targets);
// Inverted dropout with probability p (seeded from ctx->seed and ctx->rng_counter); identity
// when p == 0 or gradients are off.
spry_tensor *spry_dropout(spry_ctx *ctx, spry_tensor *x, float p);
// Token-axis gather: x (B, T, C), idx I32 (B, K) -> (B, K, C).
spry_tensor *spry_gather_rows(spry_ctx *ctx, spry_tensor *x, spry_tensor *idx);
// Token-axis scatter (overwrite): out = x with out[b, idx[b,k], :] = y[b, k, :]. Indices within a
// row must be distinct. x (B, T, C), idx (B, K), y (B, K, C) -> (B, T, C).
spry_tensor *spry_scatter_rows(spry_ctx *ctx, spry_tensor *x, spry_tensor *idx, spry_tensor *y);
// Concatenation along the last dim (torch.cat(xs, dim=-1)): n (1..SPRY_MAX_SRC) contiguous F32
// tensors with equal leading dims -> (..., sum of last dims).
spry_tensor *spry_concat(spry_ctx *ctx, spry_tensor *const *xs, int n);
// Same data, new shape (numel must match).
spry_tensor *spry_reshape(spry_ctx *ctx, spry_tensor *x, int ndim, const int64_t *shape);

#endif
