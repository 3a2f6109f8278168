/*
 * loader.h -- GPT-style training batches from an indexed dataset of tokenized documents.
 *
 * Split: the dataset's DOCUMENTS are split train/valid/test by weights such as "949,50,1" with
 * exactly the arithmetic of Megatron's get_train_valid_test_split_ (megatron/data/
 * dataset_utils.py; docs/data.md has it). Packing: the split's documents, in file order, are
 * concatenated into one token stream, each non-empty document followed by eod_id when one is
 * given (Megatron's --append-eod); sample k is stream[k*T, k*T + T + 1) with T = seq_len, so
 * consecutive samples overlap by one token as in Megatron's GPTDataset, and an epoch has
 * (n_tokens - 1) / T samples (the tail that does not fill a sample is dropped). Shuffle: each
 * epoch visits the samples in a Fisher-Yates permutation drawn from the counter-based RNG
 * (key = seed, stream = epoch), so the order depends only on (seed, epoch) and a position
 * (epoch, index) restores the exact continuation. A batch that runs past the end of an epoch
 * continues with the next epoch's order.
 *
 * Encoder samples (pad_id >= 0, BERT): no packing. Every non-empty document of the split is cut
 * into chunks of at most T tokens, in file order; sample k is chunk k written right-padded with
 * pad_id to T + 1 tokens (column T is always padding), so a row's real tokens end at its first
 * pad_id. Shuffling and positions work as above.
 */
#ifndef SPRY_LOADER_H
#define SPRY_LOADER_H

#include <stdbool.h>
#include <stdint.h>

#include "spry/indexed.h"
#include "spry/status.h"

typedef enum spry_loader_split {
    SPRY_LOADER_SPLIT_TRAIN = 0,
    SPRY_LOADER_SPLIT_VALID,
    SPRY_LOADER_SPLIT_TEST,
} spry_loader_split;

typedef struct spry_loader_params {
    const char         *prefix;     // dataset path prefix (<prefix>.bin / <prefix>.idx)
    const spry_indexed *dataset;    // if non-NULL, used instead of opening prefix (borrowed:
                                    // must outlive the loader; lets loaders share one mapping)
    spry_indexed_table  table;      // code table for opening prefix (default AUTO)
    const char         *split;      // train/valid/test weights, default "969, 30, 1" (Megatron's)
    spry_loader_split   which;      // which of the three splits to iterate (default TRAIN)
    int64_t             seq_len;    // T: each sample has T + 1 tokens (default 1024)
    int64_t             batch_size; // B (default 8)
    uint64_t            seed;       // shuffle seed (default 1234, Megatron's --seed)
    int64_t             eod_id;     // appended after each document; -1 = none (default)
    bool                shuffle;    // shuffle samples each epoch (default true)
    int64_t             pad_id;     // >= 0: encoder samples padded with it (no eod); -1 (default)
} spry_loader_params;

// A position in the sample sequence: the next sample is the index-th of epoch `epoch`'s order.
// Saving it in a checkpoint and passing it to spry_loader_set_state resumes exactly.
typedef struct spry_loader_pos {
    int64_t epoch; // >= 0
    int64_t index; // in [0, n_samples)
} spry_loader_pos;

typedef struct spry_loader spry_loader; // opaque

// The defaults listed above (prefix and dataset NULL).
spry_loader_params spry_loader_params_default(void);

// Megatron's get_train_valid_test_split_: parses weights (up to three numbers separated by ','
// or '/', blanks allowed around them, missing ones taken as 0) and fills bounds[0..3] so split
// s is the documents [bounds[s], bounds[s+1]) of n_docs (bounds[0] = 0, bounds[3] = n_docs).
// Each weight is normalized by the sum, part s gets round-half-even(w_s * n_docs) documents and
// the rounding excess is taken off every boundary after the first. Where Megatron would give a
// negative boundary (possible only with a zero first weight, e.g. "0,1,1" on 3 documents),
// boundaries are clamped to keep 0 <= b0 <= b1 <= b2 <= b3. Returns SPRY_ERR_ARG (message names
// the string and the bad weight) for a non-numeric, negative or non-finite weight, an empty
// string or weight, more than three weights, or an all-zero sum; n_docs must be >= 0.
spry_status spry_loader_split_bounds(const char *split, int64_t n_docs, int64_t bounds[4]);

// Opens (or borrows) the dataset, computes the split, the packed stream's item offsets and the
// first epoch's order; allocates everything spry_loader_next needs (no allocation afterwards).
// Returns SPRY_ERR_ARG for bad params (seq_len < 1, batch_size < 1, eod_id > INT32_MAX, a bad
// split string, a selected split with no documents, or a split whose stream has <= seq_len
// tokens, i.e. not one sample; the message names the value and has a HINT), any error of
// spry_indexed_open, SPRY_ERR_UNSUPPORTED for a float dataset, SPRY_ERR_NOMEM; *out = NULL then.
// The loader starts at position {0, 0}. Not thread-safe: one loader per thread.
spry_status spry_loader_init(const spry_loader_params *params, spry_loader **out);

// Fills tokens (B, T+1) row-major with the next B samples (inputs are [:, :T], targets [:, 1:])
// and advances the position, wrapping into the next epoch (with its own order) as needed.
// Returns SPRY_ERR_FORMAT if the data holds a value that is not a token id (negative or above
// INT32_MAX; the message names the file, item and value); the position is then unchanged.
spry_status spry_loader_next(spry_loader *l, int32_t *tokens);

// Writes sample k (0 <= k < n_samples, unshuffled stream order; asserts otherwise) into
// tokens (T+1,). Does not move the position. Errors as spry_loader_next.
spry_status spry_loader_sample(const spry_loader *l, int64_t k, int32_t *tokens);

// The current position (of the next sample to be served).
spry_loader_pos spry_loader_state(const spry_loader *l);

// Moves to pos. Returns SPRY_ERR_ARG (naming the value and n_samples) if pos.epoch < 0 or
// pos.index is not in [0, n_samples); the position is then unchanged. A checkpoint written
// with a different dataset, split, seq_len or seed does not resume the same stream; the caller
// should store and compare those (spry_loader_n_samples helps detect a changed dataset).
spry_status spry_loader_set_state(spry_loader *l, spry_loader_pos pos);

int64_t spry_loader_n_samples(const spry_loader *l); // samples per epoch
int64_t spry_loader_n_tokens(const spry_loader *l);  // tokens in the split's stream (with eods)
// The split's documents [*first, *end) in the dataset's document numbering.
void spry_loader_doc_range(const spry_loader *l, int64_t *first, int64_t *end);

// Frees the loader (and the dataset if it opened it). l may be NULL.
void spry_loader_free(spry_loader *l);

#endif
