/*
 * model.h -- transformer language models: the decoders GPT-2 and BLOOM, and the BERT encoder
 * with its masked-LM head (Hugging Face's BertForMaskedLM).
 *
 * A model is a config, a parameter store (flat buffers, Hugging Face names without the
 * "transformer." prefix) and per-layer views into it. Linear weights are kept (out, in) like
 * torch.nn.Linear; GPT-2's Conv1D weights are (in, out) in Hugging Face files and are transposed
 * on load and save. Models are described by a Hugging Face config.json and stored as safetensors.
 * BERT's names are Hugging Face's without the "bert." prefix ("embeddings.*", "encoder.layer.N.*")
 * and its head's "cls.predictions.*" as they are.
 */
#ifndef SPRY_MODEL_H
#define SPRY_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "spry/ops.h"
#include "spry/params.h"
#include "spry/status.h"

typedef enum spry_arch {
    SPRY_ARCH_GPT2 = 0, // learned positions, [q|k|v] QKV
    SPRY_ARCH_BLOOM,    // ALiBi, embedding LayerNorm, per-head fused QKV
    SPRY_ARCH_BERT,     // encoder: bidirectional, post-LayerNorm, separate q/k/v, exact GELU, MLM head
} spry_arch;

typedef struct spry_model_config {
    spry_arch arch;
    int64_t   vocab_size;
    int64_t   n_positions; // GPT-2 and BERT (0 for BLOOM)
    int64_t   type_vocab_size; // BERT's token types (2), else 0
    int64_t   pad_token_id;    // BERT: the padding id of right-padded rows (config.json; 0)
    int64_t   mask_token_id;   // BERT: [MASK] for MLM training (spry's key "mask_token_id"; -1 none)
    int64_t   n_embd;      // C
    int64_t   n_layer;     // L
    int64_t   n_head;      // H
    int64_t   n_inner;     // MLP width (4*C by default)
    float     layer_norm_eps;
    float     dropout;     // residual/embedding dropout in training (0 = off)
    float     init_std;    // normal init of weights (0.02)
} spry_model_config;

// A GPT-2 config with the given sizes and Hugging Face defaults for the rest.
spry_model_config spry_model_config_gpt2(int64_t vocab, int64_t n_pos, int64_t C, int64_t L,
                                         int64_t H);
// A BERT config (BertConfig's defaults for the rest: exact GELU, LayerNorm eps 1e-12, 2 types).
spry_model_config spry_model_config_bert(int64_t vocab, int64_t n_pos, int64_t C, int64_t L,
                                         int64_t H);
// The Hugging Face model_type of an architecture: "gpt2", "bloom" or "bert".
const char *spry_model_arch_name(spry_arch arch);
// Reads a Hugging Face config.json (model_type "gpt2", "bloom" or "bert"). Errors name the file, key and
// value (SPRY_ERR_IO, SPRY_ERR_FORMAT, SPRY_ERR_CONFIG).
spry_status spry_model_config_load(const char *path, spry_model_config *cfg);
// Writes a Hugging Face config.json (temporary name + rename).
spry_status spry_model_config_save(const spry_model_config *cfg, const char *path);
// Checks sizes (positive, C divisible by H, ...). SPRY_ERR_CONFIG with the field on failure.
spry_status spry_model_config_validate(const spry_model_config *cfg);

// A block's parameters. GPT-2/BLOOM (pre-LN) use qkv; BERT (post-LN) uses q/k/v, and its ln1 is
// attention.output.LayerNorm (after the attention residual), ln2 output.LayerNorm.
typedef struct spry_block {
    spry_tensor *ln1_w, *ln1_b;   // (C)
    spry_tensor *qkv_w, *qkv_b;   // (3C, C), (3C); NULL for BERT
    spry_tensor *q_w, *q_b, *k_w, *k_b, *v_w, *v_b; // (C, C), (C) each; BERT only
    spry_tensor *proj_w, *proj_b; // (C, C), (C)
    spry_tensor *ln2_w, *ln2_b;   // (C)
    spry_tensor *fc_w, *fc_b;     // (I, C), (I)
    spry_tensor *fc2_w, *fc2_b;   // (C, I), (C)
} spry_block;

typedef struct spry_model {
    spry_model_config cfg;
    spry_params       params;
    spry_tensor      *wte;                  // (V, C), tied with the LM head
    spry_tensor      *wpe;                  // (P, C) GPT-2 and BERT, else NULL
    spry_tensor      *wtt;                  // (type_vocab_size, C) BERT, else NULL
    spry_tensor      *emb_ln_w, *emb_ln_b;  // (C) BLOOM and BERT, else NULL
    spry_tensor      *lnf_w, *lnf_b;        // (C) GPT-2 and BLOOM, else NULL
    // BERT's MLM head: logits = LN(gelu(x W^T + b)) wte^T + mlm_bias
    spry_tensor      *mlm_w, *mlm_b;        // (C, C), (C)
    spry_tensor      *mlm_ln_w, *mlm_ln_b;  // (C)
    spry_tensor      *mlm_bias;             // (V)
    spry_block       *blocks;               // (L)
} spry_model;

// Builds a model with zeroed parameters. Validates the config first. *out is NULL on error.
spry_status spry_model_init(const spry_model_config *cfg, spry_model **out);
void        spry_model_free(spry_model *m);
// GPT-2 / BLOOM initialization: weights N(0, init_std), residual projections
// N(0, init_std / sqrt(2 L)) (GPT-2 paper), biases 0, LayerNorm weight 1. BERT: every weight
// N(0, init_std) (BertPreTrainedModel._init_weights). Counter-based RNG:
// the result depends only on the seed.
void spry_model_init_weights(spry_model *m, uint64_t seed);

// A token route for one layer (the shared token-routing mechanism, DESIGN.md layer 7): the layer
// runs on r kept tokens of each sample instead of all T. kept is I32 (B, r) row-major, each row
// strictly increasing in [0, T). The routed layer gathers the kept rows of its input (B, r, C),
// runs the block on them with a causal r x r mask (order is preserved, so causality among the
// kept tokens is the lower triangle) -- ALiBi uses the kept tokens' original positions, learned
// positions were added at the embedding -- and scatters its output back over a copy of its input
// (DeepSpeed's overwrite semantics: dropped tokens pass through unchanged, with their gradients;
// kept tokens take the layer output). kept == NULL or r >= T: the layer sees all tokens.
typedef struct spry_token_route {
    const int32_t *kept; // (B, r), not owned; must stay valid until the forward returns
    int64_t        r;
} spry_token_route;

// Logits (B, T, V) for ids I32 (B, T), recording the tape when ctx has gradients on. BERT: MLM
// logits of unpadded rows. A GPT-2
// sequence longer than n_positions sets the sticky SPRY_ERR_ARG (check spry_ctx_status).
spry_tensor *spry_model_forward(spry_model *m, spry_ctx *ctx, spry_tensor *ids);
// Mean next-token cross entropy for tokens I32 (B, T+1): inputs tokens[:, :T], targets
// tokens[:, 1:]. Returns a (1) tensor. Uses the fused LM head (spry_linear_cross_entropy), so
// the full logits are never stored; call spry_model_forward for logits.
// BERT: tokens (B, T+1) are right-padded rows (the loader's encoder samples: pad_token_id from
// a row's first pad on, column T always padding); the loss is the masked-LM loss of inputs
// tokens[:, :T] masked by spry_bert_mlm_mask (probability 0.15, keyed by ctx->seed and the
// next ctx->rng_counter, so a resumed or recomputed step masks the same tokens).
spry_tensor *spry_model_loss(spry_model *m, spry_ctx *ctx, const spry_tensor *tokens);
// spry_model_forward / spry_model_loss with per-layer token routes: routes[l] applies to layer l
// for l < n_routes (routes may be NULL, n_routes <= n_layer). With no route taking effect the
// result is bit-identical to the unrouted call. Invalid routes (unsorted, out of range) are
// programmer errors and abort.
spry_tensor *spry_model_forward_ex(spry_model *m, spry_ctx *ctx, spry_tensor *ids,
                                   const spry_token_route *routes, int64_t n_routes);
spry_tensor *spry_model_loss_ex(spry_model *m, spry_ctx *ctx, const spry_tensor *tokens,
                                const spry_token_route *routes, int64_t n_routes);

// An encoder (BERT) batch. Inputs are right-padded: row b's real tokens are [0, key_len[b]),
// which is what Hugging Face's attention_mask of ones then zeros says.
typedef struct spry_encoder_batch {
    spry_tensor *ids;         // I32 (B, T) input ids (with [MASK]s for MLM)
    spry_tensor *labels;      // I32 (B, T) MLM targets, < 0 ignored (HF's -100); loss only
    spry_tensor *token_types; // I32 (B, T) in [0, type_vocab_size), or NULL (all 0)
    spry_tensor *key_len;     // I32 (B) real lengths in [1, T], or NULL (all T)
} spry_encoder_batch;

// BERT MLM logits (B, T, V) for every position (padded ones included, as Hugging Face computes
// them). Routes as in spry_model_forward_ex: a routed encoder layer attends among its kept tokens
// that are real (the attention mask gathered on both axes: with right padding the kept real
// tokens are a prefix of the kept ones). T > n_positions sets the sticky SPRY_ERR_ARG.
spry_tensor *spry_bert_logits(spry_model *m, spry_ctx *ctx, const spry_encoder_batch *b,
                              const spry_token_route *routes, int64_t n_routes);
// BERT masked-LM loss: mean cross entropy over positions with labels >= 0, shape (1); the head
// runs only on those positions. No labelled position sets the sticky SPRY_ERR_ARG.
spry_tensor *spry_bert_mlm_loss(spry_model *m, spry_ctx *ctx, const spry_encoder_batch *b,
                                const spry_token_route *routes, int64_t n_routes);

// BERT's masking for MLM (Devlin et al.; Hugging Face's DataCollatorForLanguageModeling): each
// real token (t < key_len[b]) of ids I32 rows tokens[b * ld + t], t < T, is selected with
// probability p; a selected token becomes its label and its input is mask_id with probability
// 0.8, a uniform id in [0, n_random) with 0.1, itself with 0.1. Other labels are -100. The
// uniforms are Philox(seed, stream, 3 (b T + t) + {0, 1, 2}): the same (seed, stream) masks the
// same tokens. If no token is selected, the first token of row 0 is (so the loss is defined).
// ids, labels: (B, T) row-major.
void spry_bert_mlm_mask(const int32_t *tokens, int64_t B, int64_t ld, int64_t T,
                        const int32_t *key_len, float p, int32_t mask_id, int64_t n_random,
                        uint64_t seed, uint64_t stream, int32_t *ids, int32_t *labels);

// True when parameter `name` (internal name) is stored transposed on disk (GPT-2's Conv1D).
bool spry_model_param_is_conv1d(const spry_model *m, const char *name);
#endif
