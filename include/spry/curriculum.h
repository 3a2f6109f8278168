/*
 * curriculum.h -- DeepSpeed Data Efficiency: the `data_efficiency` config tree, the curriculum
 * scheduler and the curriculum data sampler (Li et al., arXiv 2212.03597; DeepSpeed's
 * runtime/data_pipeline/{config.py,curriculum_scheduler.py,data_sampling/data_sampler.py}).
 *
 * Config: DeepSpeed's keys and defaults (notes/data_efficiency.md 1.1-1.3); wrong types and
 * missing required keys are SPRY_ERR_CONFIG naming the key and value. CL is on iff
 * data_sampling.curriculum_learning.enabled and random-LTD iff data_routing.random_ltd.enabled
 * (DeepSpeed's behaviour); a child switched on under a parent switched off is warned about. The
 * legacy top-level "curriculum_learning" block (curriculum_type "seqlen") is translated into a
 * single_cluster value metric named "seqlen_truncate" (see docs/curriculum.md).
 *
 * Sampler: value / percentile clusters built from the analyzer's index files, incremental
 * (one schedule_based metric) or intersection (several) clustering, size-weighted cluster draws,
 * per-cluster cursors that loop-fill (reshuffling at every wrap), a shuffled global batch of
 * micro x dp x grad_accum ids, DeepSpeed's data-parallel slicing, the difficulties returned with
 * each batch, and a checkpoint state (a flat int64 array incl. the sampler's own RNG) that resumes
 * exactly. Docs: docs/curriculum.md.
 */
#ifndef SPRY_CURRICULUM_H
#define SPRY_CURRICULUM_H

#include <stdbool.h>
#include <stdint.h>

#include "spry/ds_config.h"
#include "spry/random_ltd.h"
#include "spry/status.h"

#define SPRY_CL_MAX_METRICS 8   // curriculum_metrics entries
#define SPRY_CL_MAX_LEVELS  256 // fixed_discrete difficulty levels
#define SPRY_CL_NAME_MAX    64
#define SPRY_CL_PATH_MAX    512

// ---------------------------------------------------------------------------------------------
// Scheduler.

typedef enum spry_cl_schedule_type {
    SPRY_CL_SCHEDULE_FIXED_LINEAR = 0,
    SPRY_CL_SCHEDULE_FIXED_ROOT,
    SPRY_CL_SCHEDULE_FIXED_DISCRETE,
    SPRY_CL_SCHEDULE_CUSTOM,
} spry_cl_schedule_type;

// A custom pacing function: the difficulty at curriculum step t (>= 1).
typedef int64_t (*spry_cl_custom_fn)(void *user, int64_t t);

typedef struct spry_cl_schedule {
    spry_cl_schedule_type type;
    int64_t min_difficulty, max_difficulty;  // m, M
    int64_t total_curriculum_step;           // T (linear, root)
    int64_t difficulty_step;                 // q (linear, root)
    int64_t root_degree;                     // k (root; 1 for linear)
    int64_t difficulty[SPRY_CL_MAX_LEVELS];  // fixed_discrete D, n_levels entries
    int64_t max_step[SPRY_CL_MAX_LEVELS];    // fixed_discrete S, n_levels - 1 entries
    int     n_levels;
    bool    clamp_min;      // spry's fix: d = max(d, m) (true); false = DeepSpeed's exact values
    spry_cl_custom_fn custom; // SPRY_CL_SCHEDULE_CUSTOM
    void   *custom_user;
} spry_cl_schedule;

// The difficulty at curriculum step t (pure): fixed_root d = min(M, f - f mod q),
// f = floor((t/T)^(1/k) (M - m) + m) in double (fixed_linear: k = 1), then max(d, m) if clamp_min;
// fixed_discrete D[i] for the first i with t <= S[i], D[last] past S[last]; custom: custom(t)
// (min_difficulty if no callback is set). The schedule must be valid (as parsed).
int64_t spry_cl_schedule_value(const spry_cl_schedule *s, int64_t t);

// DeepSpeed's CurriculumScheduler: current starts at min_difficulty; update(t) re-evaluates
// only while current < max_difficulty (stop-at-max) and returns current.
typedef struct spry_cl_scheduler {
    spry_cl_schedule s;
    int64_t          current;
} spry_cl_scheduler;

void    spry_cl_scheduler_init(spry_cl_scheduler *sc, const spry_cl_schedule *s);
int64_t spry_cl_scheduler_update(spry_cl_scheduler *sc, int64_t t);

// ---------------------------------------------------------------------------------------------
// Config.

typedef enum spry_cl_difficulty_type {
    SPRY_CL_DIFFICULTY_VALUE = 0,  // eligible when metric value <= difficulty
    SPRY_CL_DIFFICULTY_PERCENTILE, // eligible when rank < difficulty / max of the data
} spry_cl_difficulty_type;

typedef enum spry_cl_clustering_type {
    SPRY_CL_CLUSTERING_SCHEDULE_BASED = 0, // clusters from the index files
    SPRY_CL_CLUSTERING_SINGLE_CLUSTER,     // all data; the difficulty is only reported
} spry_cl_clustering_type;

// One curriculum_metrics.<name> entry (notes 1.2).
typedef struct spry_cl_metric {
    char                    name[SPRY_CL_NAME_MAX];
    char                    index_to_sample_path[SPRY_CL_PATH_MAX]; // prefix (no .bin/.idx)
    char                    index_to_metric_path[SPRY_CL_PATH_MAX]; // value-based only
    spry_cl_difficulty_type difficulty_type;
    spry_cl_clustering_type clustering_type;
    spry_cl_schedule        schedule;
} spry_cl_metric;

// The parsed data_efficiency tree (DeepSpeed's defaults in parentheses).
typedef struct spry_data_efficiency_config {
    bool     enabled;                // data_efficiency.enabled (false; informational)
    uint64_t seed;                   // data_efficiency.seed (1234): the sampler's RNG seed
    bool     data_sampling_enabled;  // data_sampling.enabled (false; informational)
    int64_t  num_epochs;             // data_sampling.num_epochs (1000)
    int64_t  num_workers;            // data_sampling.num_workers (0)
    bool     pin_memory;             // data_sampling.pin_memory (false)
    bool     cl_enabled;             // curriculum_learning.enabled (false): CL on
    char     data_cluster_path[SPRY_CL_PATH_MAX]; // (""; parsed, clusters stay in memory)
    spry_cl_metric metrics[SPRY_CL_MAX_METRICS];  // in config order
    int      n_metrics;
    bool     legacy;                 // the legacy top-level block was translated into metrics
    bool     data_routing_enabled;   // data_routing.enabled (false; informational)
    // data_routing.random_ltd, for random_ltd.h (enabled false unless given). String fields point
    // to string literals except model_mask_name, which points into ltd_model_mask_name below
    // (re-point it after copying this struct).
    spry_random_ltd_params random_ltd;
    char     ltd_model_mask_name[128];
    int      n_warnings;
} spry_data_efficiency_config;

// DeepSpeed's defaults (everything off). Pure.
void spry_data_efficiency_config_default(spry_data_efficiency_config *cfg);

// Parses the "data_efficiency" object and the legacy "curriculum_learning" object of a DeepSpeed
// config's top-level cJSON object (root, a `const cJSON *`; NULL or absent blocks give the
// defaults). name prefixes messages. Errors: SPRY_ERR_CONFIG with "name: key.path: problem
// (value)" for a wrong type, a missing required key of an enabled feature, an unknown
// enum string, inconsistent values (min > max, list lengths) or too many metrics/levels; *cfg
// then holds defaults. Warnings (parent/child enabled mismatch, legacy block, difficulty_step
// not a multiple of 8 for seqlen metrics) go to the log and count in n_warnings.
spry_status spry_data_efficiency_parse_json(const void *root, const char *name,
                                            spry_data_efficiency_config *cfg);
// The same on a DeepSpeed config already parsed by ds_config.h (uses ds->root).
spry_status spry_data_efficiency_from_ds_config(const spry_ds_config *ds, const char *name,
                                                spry_data_efficiency_config *cfg);
// The same on JSON text (SPRY_ERR_FORMAT if it is not a JSON object).
spry_status spry_data_efficiency_parse(const char *text, const char *name,
                                       spry_data_efficiency_config *cfg);

// ---------------------------------------------------------------------------------------------
// Sampler.

typedef struct spry_cl_sampler spry_cl_sampler; // opaque

typedef struct spry_cl_sampler_params {
    int64_t n_samples;   // dataset length N (sample ids 0..N-1, the analyzer's order)
    int64_t micro_batch; // train_micro_batch_size_per_gpu
    int64_t dp_size;     // data-parallel world size (1)
    int64_t dp_rank;     // this rank (0)
    int64_t grad_accum;  // gradient_accumulation_steps (1)
    bool    drop_last;   // dataloader_drop_last (false); only matters for partial chunks
} spry_cl_sampler_params;

spry_cl_sampler_params spry_cl_sampler_params_default(void);

// Creates the sampler for cfg's metrics (cfg->cl_enabled must be true and n_metrics >= 1) over
// a dataset of p->n_samples samples; opens and loads the index files of schedule_based metrics
// (<index_to_sample_path> rows of sample ids; for value metrics <index_to_metric_path> rows of
// one value each, as many rows, strictly ascending). Every id must lie in [0, N). Errors:
// SPRY_ERR_CONFIG (bad params or config), SPRY_ERR_IO / SPRY_ERR_FORMAT (index files, the message
// names the file, row and value), SPRY_ERR_NOMEM; *out = NULL then. The index files are read
// once and closed. Not thread-safe; one per process (every rank builds the same batches, so no
// broadcast is needed).
spry_status spry_cl_sampler_init(const spry_data_efficiency_config *cfg,
                                 const spry_cl_sampler_params *p, spry_cl_sampler **out);
void        spry_cl_sampler_free(spry_cl_sampler *s); // s may be NULL

// Sets the pacing function of the metric called `metric` (schedule_type "custom" or any other:
// it then replaces the built-in one). SPRY_ERR_NOT_FOUND naming the metric if there is none.
spry_status spry_cl_sampler_set_custom_schedule(spry_cl_sampler *s, const char *metric,
                                                spry_cl_custom_fn fn, void *user);

// The next chunk of the current global batch: micro_batch x dp_size sample ids (all ranks' rows
// of one micro-step, rank r's rows are spry_cl_dp_slice(n, dp, r)). When the global batch is used
// up, the curriculum step advances (t = 1 for the first global batch), the schedulers update,
// a new cluster is built if a difficulty changed, and G = micro x dp x grad_accum ids are drawn.
// ids needs room for micro_batch x dp_size entries; *n gets the count (0 once num_epochs x N
// samples were consumed). difficulties (may be NULL) gets the n_metrics difficulties the chunk
// was drawn at (config order) and *step (may be NULL) its curriculum step. Errors:
// SPRY_ERR_CONFIG when a custom schedule has no callback (the sampler is unchanged then) or
// when no sample is eligible at the new step's difficulties (the message names them; the
// step has advanced, the sampler may only be freed or restored with set_state).
spry_status spry_cl_sampler_next_chunk(spry_cl_sampler *s, int64_t *ids, int64_t *n,
                                       int64_t *difficulties, int64_t *step);
// As next_chunk, but writes only this rank's slice (micro_batch entries at most).
spry_status spry_cl_sampler_next(spry_cl_sampler *s, int64_t *ids, int64_t *n,
                                 int64_t *difficulties, int64_t *step);

// Introspection (for tests and logs).
int     spry_cl_sampler_n_metrics(const spry_cl_sampler *s);
int64_t spry_cl_sampler_global_batch(const spry_cl_sampler *s);   // G
int64_t spry_cl_sampler_curriculum_step(const spry_cl_sampler *s);
int64_t spry_cl_sampler_consumed(const spry_cl_sampler *s);
int     spry_cl_sampler_n_clusters(const spry_cl_sampler *s);
// Cluster c (0 <= c < n_clusters, asserts otherwise): its ids in current (shuffled) order.
const int64_t *spry_cl_sampler_cluster(const spry_cl_sampler *s, int c, int64_t *size);

// Checkpoint state: a flat int64 array (version, N, G, step, consumed, RNG state, the current
// global batch and position, difficulties, every cluster's ids and cursor). Its length is
// spry_cl_sampler_state_size() (O(N + clusters)); get_state writes it into buf (cap entries) and
// returns the count, or -1 if cap is too small. set_state restores a state saved by a sampler
// with the same config, N and G: SPRY_ERR_FORMAT naming the field otherwise, the sampler is
// unchanged then. The next batches equal those of an uninterrupted run.
int64_t     spry_cl_sampler_state_size(const spry_cl_sampler *s);
int64_t     spry_cl_sampler_get_state(const spry_cl_sampler *s, int64_t *buf, int64_t cap);
spry_status spry_cl_sampler_set_state(spry_cl_sampler *s, const int64_t *buf, int64_t n);

// DeepSpeed's data-parallel slice of a chunk of len ids for rank r of dp: [start, end) with
// start = round(r len / dp), end = round((r+1) len / dp), ties to even (Python's round). Pure.
void spry_cl_dp_slice(int64_t len, int64_t dp, int64_t r, int64_t *start, int64_t *end);

// ---------------------------------------------------------------------------------------------
// Post-processing helpers (Megatron's callbacks; notes 2.3). Pure.

// GPT seqlen_truncate: in (B, T1) with T1 = S + 1 tokens per row; keeps the first s + 1 tokens of
// every row when s < S (else all). Writes out (B, T1') and returns T1' = min(s + 1, T1). out may
// equal in. s < 1 is treated as 1.
int64_t spry_cl_seqlen_truncate(const int32_t *in, int64_t B, int64_t T1, int64_t s, int32_t *out);

// GPT seqlen_reshape: for s < S, rows of in[:, :L] (L = floor(T1 / (s+1)) (s+1)) cut into chunks
// of s + 1, then the last s + 1 tokens of every row; keeps the first
// num_row = min(ceil(B T1 / (s+1)), rows) rows, minus one if num_row > 1 and odd. out needs room
// for spry_cl_seqlen_reshape_capacity(B, T1, s) tokens; returns the row count, *T1_out = s + 1.
// For s >= S copies in and returns B (*T1_out = T1).
int64_t spry_cl_seqlen_reshape_capacity(int64_t B, int64_t T1, int64_t s);
int64_t spry_cl_seqlen_reshape(const int32_t *in, int64_t B, int64_t T1, int64_t s, int32_t *out,
                               int64_t *T1_out);

// BERT padding trim: the longest real length over the B rows of tokens (B, T) (a row's real
// length is one past its last token != pad_id), rounded up to a multiple of 8, at most T. Under
// data parallelism take the MAX of this over ranks before truncating.
int64_t spry_cl_pad_trim_len(const int32_t *tokens, int64_t B, int64_t T, int32_t pad_id);

#endif
