/*
 * bert.h -- the BERT side of spry_model_loss_ex (internal to src/models).
 */
#ifndef SPRY_MODELS_BERT_H
#define SPRY_MODELS_BERT_H

#include "spry/model.h"

// The masked-LM loss of right-padded rows tokens I32 (B, T+1) (model.h, spry_model_loss).
spry_tensor *spry_bert_loss_from_rows(spry_model *m, spry_ctx *ctx, const spry_tensor *tokens,
                                      const spry_token_route *routes, int64_t n_routes);

#endif
