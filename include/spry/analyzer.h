/*
 * analyzer.h -- DeepSpeed Data Efficiency's data analyzer: difficulty metrics over a token
 * dataset, reduced to the index files the curriculum sampler reads
 * (shared/notes/data_efficiency.md section 3; docs/analyzer.md).
 *
 * Samples. The input is a Megatron/DeepSpeed .bin/.idx token dataset (what `spry prepare`
 * writes). Two sample definitions, chosen by seq_len:
 *   seq_len == 0  one sample = one item of the dataset (a document / sentence), in item order;
 *                 this is the BERT-style view of analyze_data.py (a sample has its own length).
 *   seq_len  > 0  one sample = one packed GPT window: the items concatenated in order, sample i
 *                 is the seq_len + 1 tokens starting at token i * seq_len (Megatron's
 *                 sample_idx with one epoch and no shuffle: consecutive windows overlap by one
 *                 token); n_samples = (n_tokens - 1) / seq_len.
 * Sample ids are these positions 0..N-1 (the ids the sampler uses).
 *
 * Metrics (metric name -> files under <out_dir>/<name>/, DeepSpeed's names):
 *   seqlen               single value: the sample's token count
 *   total_vocab_freq     accumulate: token counts, a vector of vocab_size int64 (a token id
 *                        >= vocab_size is an error naming the sample and the id)
 *   vocab_rarity         single value: sum over the sample's tokens of -ln(freq(w) / sum(freq))
 *                        with freq from a full pass of total_vocab_freq (zero counts replaced
 *                        by 1 before the sum, as Megatron does), summed in double in token
 *                        order and truncated toward zero to int64
 *   seqlen_vocab_rarity  single value: seqlen * C + vocab_rarity, C = 10^(ceil(log10(S *
 *                        max_rarity)) + 1), S = the longest sample, max_rarity = max over the
 *                        vocabulary of -ln p (so length dominates and rarity breaks ties)
 *   user metrics         spry_analyzer_metric with a callback, either type
 * Single-value metrics write <name>_sample_to_metric (N items of 1 value, dataset order),
 * <name>_index_to_metric (row i = [i-th smallest distinct value]), <name>_index_to_sample (row i
 * = ascending sample ids with that value) and <name>_index_to_sample_percentile_merged (rows of
 * index_to_sample concatenated in groups of max(1, rows / 100)). Values use
 * spry_indexed_dtype_fit(min, max), sample ids spry_indexed_dtype_fit(0, N - 1), DeepSpeed's
 * code table. Accumulate metrics write <name>_metric_value: one item, the summed vector, dtype
 * fitted to its min/max. Every file ends with doc_idx [0, count] (close_mmap_dataset_builder).
 *
 * Map/reduce. The sample range [0, N) is split into n_workers ranges, each into n_threads
 * ranges, with DeepSpeed's split_index (np.linspace(a, b, k + 1, dtype=int): boundary i is
 * trunc(a + i * ((b - a) / k)) in double, the last one b). All workers x threads ranges run in
 * this process (OpenMP); the reduce is in memory (as DistributedDataAnalyzer), so no temporary
 * CSV files. Output bytes do not depend on n_workers / n_threads.
 */
#ifndef SPRY_ANALYZER_H
#define SPRY_ANALYZER_H

#include <stdint.h>

#include "spry/status.h"

typedef enum spry_metric_type {
    SPRY_METRIC_SINGLE_VALUE_PER_SAMPLE = 0,   // "single_value_per_sample"
    SPRY_METRIC_ACCUMULATE_VALUE_OVER_SAMPLES, // "accumulate_value_over_samples"
} spry_metric_type;

// A user metric. fn is called once per sample, from several threads at once (it must be
// thread-safe for distinct `out` buffers), with the sample's token ids tokens[n_tokens].
//   single value: write the sample's metric to out[0].
//   accumulate:   add the sample's contribution into out[0 .. accum_len) (this thread's
//                 partial sum, one per OpenMP thread; partial sums are added at the end and
//                 an int64 overflow there is SPRY_ERR_ARG).
// Return SPRY_OK, or an error set with spry_errorf (the analysis stops and returns it).
typedef spry_status (*spry_metric_fn)(void *user, int64_t sample_id, const int32_t *tokens,
                                      int64_t n_tokens, int64_t *out);

typedef struct spry_analyzer_metric {
    const char *name; // file-name stem: [A-Za-z0-9_.-]+, unique
    spry_metric_type type;
    int64_t accum_len; // accumulate: length of the summed vector (>= 1); else ignored
    spry_metric_fn fn;
    void *user;
} spry_analyzer_metric;

typedef struct spry_analyzer_params {
    const char *data_prefix;    // <prefix>.bin/.idx, token dataset (required)
    const char *out_dir;        // output root; <out_dir>/<metric>/ is created (required)
    int64_t seq_len;            // 0: a sample is an item; > 0: packed windows of seq_len + 1 (0)
    // With seq_len > 0: when split is set (e.g. "969,30,1"), the samples are the training
    // loader's (loader.h: the train split's documents, eod_id after each unless -1, sample k =
    // stream[k T, k T + T + 1)), so a curriculum indexes exactly what `spry train` reads
    // (NULL: windows over the whole dataset, no eod).
    const char *split;
    int64_t eod_id; // (-1)
    // With split: >= 0 makes the samples the loader's encoder samples (BERT: documents chunked
    // to seq_len and padded with pad_id, loader.h), and every metric sees a sample's real tokens
    // only (DeepSpeed's BERT metrics: seqlen = count of non-padding). -1: packed samples (-1)
    int64_t pad_id;
    int64_t vocab_size;         // for the vocabulary metrics; 0 = max token id + 1 (0)
    int n_workers;              // >= 1 (1)
    int n_threads;              // threads per worker, >= 1 (1)
    const char *const *builtin; // names of built-in metrics to compute (may be NULL)
    int n_builtin;
    const spry_analyzer_metric *user; // user metrics (may be NULL)
    int n_user;
} spry_analyzer_params;

// Defaults as documented on each field (all pointers NULL).
spry_analyzer_params spry_analyzer_params_default(void);

// True if name is one of the built-in metrics listed in the header comment.
int spry_analyzer_is_builtin(const char *name);

// DeepSpeed's split_index(a, b, k) (a <= b, k >= 1): writes the k + 1 boundaries to
// bounds[k + 1]; part j is [bounds[j], bounds[j + 1]), non-decreasing, bounds[0] = a,
// bounds[k] = b. Returns SPRY_ERR_ARG for a > b or k < 1.
spry_status spry_analyzer_split_index(int64_t a, int64_t b, int k, int64_t *bounds);

// Number of samples the dataset at data_prefix gives for seq_len (see the header comment),
// in *n. Errors from spry_indexed_open, or SPRY_ERR_ARG for seq_len < 0.
spry_status spry_analyzer_count_samples(const char *data_prefix, int64_t seq_len, int64_t *n);

// Runs map and reduce for every requested metric and writes the files described in the header
// comment (each through a temporary name and rename). Returns SPRY_ERR_ARG for bad params
// (message names the field and value), SPRY_ERR_FORMAT for a bad dataset or a token outside
// the vocabulary, SPRY_ERR_IO / SPRY_ERR_NOMEM, or a metric callback's error. Files of
// metrics finished before an error may remain. Never crashes on file contents.
spry_status spry_analyze(const spry_analyzer_params *p);

#endif
