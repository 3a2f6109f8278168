/*
 * hf_checkpoint.h -- GPT-2, BLOOM and BERT models to and from Hugging Face checkpoint directories:
 * config.json (model.h) + model.safetensors with Hugging Face's tensor names and layouts.
 */
#ifndef SPRY_HF_CHECKPOINT_H
#define SPRY_HF_CHECKPOINT_H

#include "spry/model.h"
#include "spry/status.h"

// Loads parameters from a Hugging Face safetensors file (names with or without the
// "transformer." prefix, BERT's "bert."; f32, bf16 or f16 tensors). Every parameter must be present with its
// exact shape; errors name the file and tensor.
spry_status spry_model_load_weights(spry_model *m, const char *path);
// Saves parameters as safetensors with Hugging Face names ("transformer." prefix, BERT's "bert."
// but for its "cls." head) and layouts.
spry_status spry_model_save_weights(const spry_model *m, const char *path);
// Loads <dir>/config.json and <dir>/model.safetensors.
spry_status spry_model_load_dir(const char *dir, spry_model **out);

#endif
