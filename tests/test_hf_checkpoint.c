// ctest-label: unit
/*
 * test_hf_checkpoint.c -- Hugging Face model directories: a single model.safetensors and the
 * sharded layout (model.safetensors.index.json + model-0000N-of-0000M.safetensors) load to the
 * same parameters, bit for bit, for GPT-2 (Conv1D transposes) and BLOOM; a shard that is missing,
 * a weight_map entry that is not a file name, and an index without weight_map are errors naming
 * the file.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "spry/hf_checkpoint.h"
#include "spry/safetensors.h"

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) fputs(text, f), fclose(f);
}

static void test_shards(spry_arch arch, const char *dir) {
    spry_model_config c = spry_model_config_gpt2(97, 32, 48, 2, 3);
    if (arch == SPRY_ARCH_BLOOM) c.arch = SPRY_ARCH_BLOOM, c.n_positions = 0;
    spry_model *m = NULL;
    CHECK(spry_model_init(&c, &m) == SPRY_OK);
    if (!m) return;
    spry_model_init_weights(m, 9);
    char path[512], single[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK(spry_model_config_save(&m->cfg, path) == SPRY_OK);
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    CHECK(spry_model_save_weights(m, single) == SPRY_OK);
    // split the file's tensors over two shards (even / odd positions) and index them
    spry_safetensors *st = NULL;
    CHECK(spry_safetensors_open(single, &st) == SPRY_OK);
    int64_t        n = st ? spry_safetensors_n_tensors(st) : 0;
    spry_st_entry *e[2];
    int64_t        ne[2] = {0, 0};
    e[0] = calloc((size_t)n + 1, sizeof(spry_st_entry)), e[1] = calloc((size_t)n + 1, sizeof(spry_st_entry));
    size_t cap = 64 + (size_t)n * 160;
    char  *index = malloc(cap);
    size_t len   = (size_t)snprintf(index, cap, "{\"metadata\": {}, \"weight_map\": {");
    for (int64_t i = 0; i < n; i++) {
        const spry_st_tensor_info *t = spry_safetensors_tensor_at(st, i);
        int                        s = (int)(i % 2);
        e[s][ne[s]++] = (spry_st_entry){t->name, t->dtype, t->ndim, t->shape, t->data};
        len += (size_t)snprintf(index + len, cap - len, "%s\"%s\": \"model-%05d-of-00002.safetensors\"", i ? ", " : "",
                                t->name, s + 1);
    }
    snprintf(index + len, cap - len, "}}");
    for (int s = 0; s < 2; s++) {
        snprintf(path, sizeof path, "%s/model-%05d-of-00002.safetensors", dir, s + 1);
        CHECK(spry_safetensors_write(path, e[s], ne[s], NULL, 0) == SPRY_OK);
    }
    spry_safetensors_close(st);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_text(path, index);
    CHECK(unlink(single) == 0);
    spry_model *r = NULL;
    CHECK_MSG(spry_model_load_dir(dir, &r) == SPRY_OK, "%s", spry_last_error());
    CHECK(r && r->params.n_elem == m->params.n_elem &&
          !memcmp(r->params.values, m->params.values, sizeof(float) * (size_t)m->params.n_elem));
    spry_model_free(r);
    // errors: a missing shard, a path in the weight map, no weight map
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    char moved[600];
    snprintf(moved, sizeof moved, "%s.away", path);
    CHECK(rename(path, moved) == 0);
    CHECK(spry_model_load_dir(dir, &r) == SPRY_ERR_IO && r == NULL && strstr(spry_last_error(), "00002-of-00002"));
    CHECK(rename(moved, path) == 0);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_text(path, "{\"weight_map\": {\"h.0.ln_1.weight\": \"../x.safetensors\"}}");
    CHECK(spry_model_load_dir(dir, &r) == SPRY_ERR_FORMAT && strstr(spry_last_error(), "index.json"));
    write_text(path, "{\"metadata\": {}}");
    CHECK(spry_model_load_dir(dir, &r) == SPRY_ERR_FORMAT && strstr(spry_last_error(), "weight_map"));
    write_text(path, index);
    CHECK(spry_model_load_dir(dir, &r) == SPRY_OK);
    spry_model_free(r);
    printf("%s: %lld tensors in 2 shards load bit for bit; errors named\n", arch == SPRY_ARCH_GPT2 ? "gpt2" : "bloom",
           (long long)n);
    for (int s = 0; s < 2; s++) {
        snprintf(path, sizeof path, "%s/model-%05d-of-00002.safetensors", dir, s + 1);
        unlink(path);
    }
    unlink(path);
    free(e[0]), free(e[1]), free(index);
    spry_model_free(m);
}

int main(void) {
    char dir[] = "/tmp/spry_hf_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    test_shards(SPRY_ARCH_GPT2, dir);
    test_shards(SPRY_ARCH_BLOOM, dir);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return check_exit();
}
