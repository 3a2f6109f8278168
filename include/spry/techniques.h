/*
 * techniques.h -- the table of training techniques (DESIGN.md layer 7): reads the technique
 * sections of a DeepSpeed config and plugs each enabled technique into the trainer through its
 * hook points and batch source, so the trainer's own source names none of them.
 *
 *   data_efficiency.data_sampling.curriculum_learning   curriculum.h: the sampler becomes the
 *       batch source (sample ids of the training loader, as `spry analyze --split` indexed them);
 *       an on_batch hook applies the seqlen_truncate / seqlen_reshape difficulty and reports the
 *       first metric's difficulty in spry_batch.difficulty
 *   data_efficiency.data_routing.random_ltd            random_ltd.h: token routes per layer
 *
 * How to add a technique: parse its section in techniques_init, keep its state in
 * spry_techniques, and register its spry_technique_vt in spry_techniques_attach.
 */
#ifndef SPRY_TECHNIQUES_H
#define SPRY_TECHNIQUES_H

#include <stdbool.h>
#include <stdint.h>

#include "spry/ds_config.h"
#include "spry/loader.h"
#include "spry/trainer.h"

typedef struct spry_techniques spry_techniques;

typedef struct spry_techniques_env {
    const char  *name;    // the config's file name, for messages
    spry_loader *loader;  // the training samples (not owned; outlives the techniques)
    int64_t      n_layer; // layers of the model
    int64_t      seq_len; // T of the training samples (T + 1 tokens each)
    int          world;   // data-parallel ranks (1)
    int          rank;    // this rank (0)
    bool         encoder; // the model is an encoder (BERT) on right-padded samples
    int64_t      pad_id;  // encoder: the padding id of its samples
} spry_techniques_env;

// Parses cfg's technique sections and builds every enabled technique. SPRY_ERR_CONFIG naming the
// key and value for a bad section, the curriculum's SPRY_ERR_IO / SPRY_ERR_FORMAT for its index
// files, SPRY_ERR_NOMEM; *out = NULL on error. With nothing enabled *out is a valid empty table.
spry_status spry_techniques_init(const spry_ds_config *cfg, const spry_techniques_env *env, spry_techniques **out);
// The batch source to train with: the curriculum's when it is on (reading through env->loader),
// else dflt. Its state is the number of chunks drawn (resume replays the draws: exact).
spry_batch_source spry_techniques_source(spry_techniques *t, spry_batch_source dflt);
// Registers the enabled techniques' hooks with tr (the trainer then owns their hook state; the
// table itself stays owned by the caller and must outlive tr).
spry_status spry_techniques_attach(spry_techniques *t, spry_trainer *tr);
// Lets the techniques change the LR schedule before the trainer copies the config: random-LTD's
// layer_token_lr_schedule runs the config's scheduler on consumed layer-tokens, i.e. effective
// tokens x L (notes 4.6): by_tokens with warmup_num_tokens = warmup_layer_tokens / L and
// total_num_tokens = total_layer_tokens / L (a constant or WarmupLR schedule becomes WarmupDecayLR
// to the optimizer's lr). Other schedules are left as they are.
void spry_techniques_adjust_schedule(const spry_techniques *t, spry_lr_schedule *s);
// One line naming what is on, e.g. "curriculum (voc, seqlen_truncate), random-LTD (layers 1-2)";
// "none" when nothing is.
const char *spry_techniques_summary(const spry_techniques *t);
void        spry_techniques_free(spry_techniques *t); // t may be NULL

#endif
