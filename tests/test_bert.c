/*
 * test_bert.c -- the BERT encoder's own contracts (its numerics against PyTorch are in
 * test_ref_models.c):
 *   MLM masking: selection rate 0.15 and the 80/10/10 split within 5 binomial sigmas, only real
 *   tokens selected, labels equal the original tokens, reproducible by (seed, stream);
 *   padding: keys past key_len do not matter (garbage there, or the rows trimmed, give the
 *   same loss), the loss from right-padded rows equals the explicit masked batch;
 *   random-LTD's no-mask mode (rows without padding, key_len NULL) equals the full-length mask,
 *   and a route keeping every token equals no route;
 *   config.json: bert round trip with pad/mask ids, clear errors.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "spry/autograd.h"
#include "spry/model.h"
#include "spry/rng.h"

static void test_mask_stats(void) {
    enum { B = 64, T = 128, V = 1000 };
    int32_t *tok = malloc(sizeof(int32_t) * B * (T + 1)), kl[B];
    int32_t *ids = malloc(sizeof(int32_t) * B * T), *lab = malloc(sizeof(int32_t) * B * T);
    int32_t *ids2 = malloc(sizeof(int32_t) * B * T), *lab2 = malloc(sizeof(int32_t) * B * T);
    int64_t  real = 0;
    for (int b = 0; b < B; b++) {
        kl[b] = 1 + (int32_t)(spry_rng_uniform(7, 1, (uint64_t)b) * T);
        real += kl[b];
        for (int t = 0; t <= T; t++) tok[b * (T + 1) + t] = t < kl[b] ? (int32_t)((b * 31 + t * 7) % (V - 2)) : V - 2;
    }
    spry_bert_mlm_mask(tok, B, T + 1, T, kl, 0.15f, V - 1, V - 2, 42, 5, ids, lab);
    int64_t sel = 0, masked = 0, same = 0, other = 0, past = 0, wrong = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int32_t o = tok[b * (T + 1) + t], i = ids[b * T + t], l = lab[b * T + t];
            if (l < 0) {
                wrong += i != o || l != -100;
                continue;
            }
            sel++;
            past += t >= kl[b];
            wrong += l != o;
            if (i == V - 1) masked++;
            else if (i == o) same++;
            else other++, wrong += i < 0 || i >= V - 2;
        }
    // binomial bounds: 5 sigma
    double ps = 0.15 * (double)real, ss = sqrt(ps * 0.85);
    CHECK_MSG(fabs((double)sel - ps) < 5 * ss, "selected %lld of %lld real tokens (expected %.0f)", (long long)sel, (long long)real, ps);
    double pm = 0.8 * (double)sel, sm = sqrt(pm * 0.2), pr = 0.1 * (double)sel, sr = sqrt(pr * 0.9);
    CHECK_MSG(fabs((double)masked - pm) < 5 * sm, "[MASK] %lld of %lld", (long long)masked, (long long)sel);
    // "same" also catches random draws that hit the original id (probability 1 / (V - 2))
    CHECK_MSG(fabs((double)same - pr) < 5 * sr + 3, "kept %lld of %lld", (long long)same, (long long)sel);
    CHECK_MSG(fabs((double)other - pr) < 5 * sr + 3, "random %lld of %lld", (long long)other, (long long)sel);
    CHECK_MSG(past == 0 && wrong == 0, "%lld selected padding, %lld wrong labels/ids", (long long)past, (long long)wrong);
    printf("mlm mask: %lld of %lld real tokens selected (%.4f): [MASK] %.3f, random %.3f, kept %.3f\n", (long long)sel,
           (long long)real, (double)sel / (double)real, (double)masked / (double)sel, (double)other / (double)sel,
           (double)same / (double)sel);
    spry_bert_mlm_mask(tok, B, T + 1, T, kl, 0.15f, V - 1, V - 2, 42, 5, ids2, lab2);
    CHECK(!memcmp(ids, ids2, sizeof(int32_t) * B * T) && !memcmp(lab, lab2, sizeof(int32_t) * B * T));
    spry_bert_mlm_mask(tok, B, T + 1, T, kl, 0.15f, V - 1, V - 2, 42, 6, ids2, lab2);
    CHECK(memcmp(lab, lab2, sizeof(int32_t) * B * T) != 0);
    // nothing selected (p = 0): the first token of row 0 is, so the loss is defined
    spry_bert_mlm_mask(tok, B, T + 1, T, kl, 0.0f, V - 1, V - 2, 42, 5, ids2, lab2);
    int64_t n = 0;
    for (int i = 0; i < B * T; i++) n += lab2[i] >= 0;
    CHECK(n == 1 && lab2[0] == tok[0] && ids2[0] == V - 1);
    free(tok), free(ids), free(lab), free(ids2), free(lab2);
}

static spry_model *tiny_bert(void) {
    spry_model_config c = spry_model_config_bert(50, 16, 24, 2, 3);
    c.pad_token_id = 48, c.mask_token_id = 49;
    spry_model *m = NULL;
    CHECK(spry_model_init(&c, &m) == SPRY_OK);
    if (m) spry_model_init_weights(m, 3);
    return m;
}

// The loss of rows (B, T1) through spry_model_loss with a fixed ctx seed and counter.
static float rows_loss(spry_model *m, spry_ctx *ctx, const int32_t *rows, int64_t B, int64_t T1) {
    spry_ctx_begin(ctx);
    ctx->seed = 11, ctx->rng_counter = 77;
    spry_tensor *t = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, T1));
    memcpy(t->data, rows, sizeof(int32_t) * (size_t)(B * T1));
    spry_tensor *loss = spry_model_loss(m, ctx, t);
    CHECK(spry_ctx_status(ctx) == SPRY_OK);
    return spry_ctx_status(ctx) ? NAN : ((float *)loss->data)[0];
}

static void test_padding(void) {
    spry_model *m = tiny_bert();
    if (!m) return;
    spry_ctx *ctx = spry_ctx_init(1 << 22, 2);
    spry_ctx_set_grad(ctx, false);
    enum { B = 3, T = 12 };
    int32_t len[B] = {12, 5, 9}, rows[B * (T + 1)];
    for (int b = 0; b < B; b++)
        for (int t = 0; t <= T; t++) rows[b * (T + 1) + t] = t < len[b] ? (b * 13 + t * 5) % 47 : 48;
    float full = rows_loss(m, ctx, rows, B, T + 1);
    // the same rows through the explicit API: mask with the stream spry_model_loss uses
    spry_ctx_begin(ctx);
    spry_tensor *ids = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, T)), *lab = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, T));
    spry_tensor *kl  = spry_new(ctx, SPRY_DTYPE_I32, 1, SPRY_SHAPE(B));
    memcpy(kl->data, len, sizeof len);
    spry_bert_mlm_mask(rows, B, T + 1, T, len, 0.15f, 49, 48, 11, 77 | (1ull << 61), ids->data, lab->data);
    spry_tensor *l2 = spry_bert_mlm_loss(m, ctx, &(spry_encoder_batch){.ids = ids, .labels = lab, .key_len = kl}, NULL, 0);
    CHECK(spry_ctx_status(ctx) == SPRY_OK);
    CHECK_NEAR(((float *)l2->data)[0], full, 1e-6 * fabs(full));
    // garbage in the padded key positions changes nothing (as long as the inputs stay the same)
    spry_tensor *ids_g = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, T));
    memcpy(ids_g->data, ids->data, sizeof(int32_t) * B * T);
    for (int b = 0; b < B; b++)
        for (int t = len[b]; t < T; t++) ((int32_t *)ids_g->data)[b * T + t] = (t * 17 + b) % 47;
    spry_tensor *l3 = spry_bert_mlm_loss(m, ctx, &(spry_encoder_batch){.ids = ids_g, .labels = lab, .key_len = kl}, NULL, 0);
    CHECK_MSG(fabsf(((float *)l3->data)[0] - ((float *)l2->data)[0]) <= 1e-6f * fabsf(full), "padded keys leak: %.9g vs %.9g",
              (double)((float *)l3->data)[0], (double)((float *)l2->data)[0]);
    // trimmed to the longest row with the same masks: the same loss (the padding trim is exact)
    int64_t      Tt = 9;
    spry_tensor *ids_t = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B - 1, Tt)), *lab_t = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B - 1, Tt));
    spry_tensor *kl_t  = spry_new(ctx, SPRY_DTYPE_I32, 1, SPRY_SHAPE(B - 1));
    for (int b = 1; b < B; b++) { // rows 1 and 2 (lengths 5 and 9)
        memcpy((int32_t *)ids_t->data + (b - 1) * Tt, (int32_t *)ids->data + b * T, sizeof(int32_t) * Tt);
        memcpy((int32_t *)lab_t->data + (b - 1) * Tt, (int32_t *)lab->data + b * T, sizeof(int32_t) * Tt);
        ((int32_t *)kl_t->data)[b - 1] = len[b];
    }
    spry_tensor *ids_p = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B - 1, T)), *lab_p = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B - 1, T));
    memcpy(ids_p->data, (int32_t *)ids->data + T, sizeof(int32_t) * (B - 1) * T);
    memcpy(lab_p->data, (int32_t *)lab->data + T, sizeof(int32_t) * (B - 1) * T);
    spry_tensor *lt = spry_bert_mlm_loss(m, ctx, &(spry_encoder_batch){.ids = ids_t, .labels = lab_t, .key_len = kl_t}, NULL, 0);
    spry_tensor *lp = spry_bert_mlm_loss(m, ctx, &(spry_encoder_batch){.ids = ids_p, .labels = lab_p, .key_len = kl_t}, NULL, 0);
    CHECK(spry_ctx_status(ctx) == SPRY_OK);
    CHECK_NEAR(((float *)lt->data)[0], ((float *)lp->data)[0], 1e-6 * fabs(((float *)lp->data)[0]));
    printf("padding: loss %.7f from rows = %.7f explicit; trimmed %.7f = padded %.7f\n", (double)full,
           (double)((float *)l2->data)[0], (double)((float *)lt->data)[0], (double)((float *)lp->data)[0]);
    // a BERT model refuses to generate; no mask id is a clear error
    m->cfg.mask_token_id = -1;
    spry_ctx_begin(ctx);
    spry_tensor *t = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, T + 1));
    memcpy(t->data, rows, sizeof rows);
    (void)spry_model_loss(m, ctx, t);
    CHECK(spry_ctx_status(ctx) == SPRY_ERR_CONFIG && strstr(spry_last_error(), "mask_token_id"));
    spry_ctx_free(ctx);
    spry_model_free(m);
}

static void test_routes(void) {
    spry_model *m = tiny_bert();
    if (!m) return;
    spry_ctx *ctx = spry_ctx_init(1 << 22, 2);
    spry_ctx_set_grad(ctx, false);
    enum { B = 2, T = 10, R = 6 };
    spry_tensor *ids = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, T)), *full = spry_new(ctx, SPRY_DTYPE_I32, 1, SPRY_SHAPE(B));
    for (int i = 0; i < B * T; i++) ((int32_t *)ids->data)[i] = (i * 11) % 47;
    ((int32_t *)full->data)[0] = ((int32_t *)full->data)[1] = T;
    int32_t          kept[B * R] = {0, 1, 4, 5, 8, 9, 2, 3, 4, 6, 7, 9}, all[B * T];
    for (int i = 0; i < B * T; i++) all[i] = i % T;
    spry_token_route rt[2] = {{.kept = kept, .r = R}, {0}};
    spry_tensor *a = spry_bert_logits(m, ctx, &(spry_encoder_batch){.ids = ids}, rt, 2);
    spry_tensor *b = spry_bert_logits(m, ctx, &(spry_encoder_batch){.ids = ids, .key_len = full}, rt, 2);
    CHECK(spry_ctx_status(ctx) == SPRY_OK && !memcmp(a->data, b->data, spry_tensor_nbytes(a)));
    spry_token_route whole[1] = {{.kept = all, .r = T}};
    spry_tensor *c = spry_bert_logits(m, ctx, &(spry_encoder_batch){.ids = ids}, whole, 1);
    spry_tensor *d = spry_bert_logits(m, ctx, &(spry_encoder_batch){.ids = ids}, NULL, 0);
    CHECK(spry_ctx_status(ctx) == SPRY_OK && !memcmp(c->data, d->data, spry_tensor_nbytes(c)));
    CHECK(memcmp(a->data, d->data, spry_tensor_nbytes(a)) != 0); // the route does change the output
    spry_ctx_free(ctx);
    spry_model_free(m);
}

static void test_config(void) {
    char dir[] = "/tmp/spry_test_bert_XXXXXX", path[128];
    if (!mkdtemp(dir)) return;
    snprintf(path, sizeof path, "%s/config.json", dir);
    spry_model_config c = spry_model_config_bert(50, 16, 24, 2, 3), r;
    c.pad_token_id = 48, c.mask_token_id = 49, c.n_inner = 44;
    CHECK(spry_model_config_save(&c, path) == SPRY_OK);
    CHECK(spry_model_config_load(path, &r) == SPRY_OK);
    CHECK(r.arch == SPRY_ARCH_BERT && r.vocab_size == 50 && r.n_positions == 16 && r.n_embd == 24 && r.n_layer == 2 &&
          r.n_head == 3 && r.n_inner == 44 && r.type_vocab_size == 2 && r.pad_token_id == 48 && r.mask_token_id == 49 &&
          r.layer_norm_eps == 1e-12f);
    const char *bad[][2] = {
        {"{\"model_type\": \"bert\", \"vocab_size\": 10, \"hidden_size\": 8, \"num_hidden_layers\": 1, "
         "\"num_attention_heads\": 2, \"max_position_embeddings\": 8, \"hidden_act\": \"relu\"}", "hidden_act"},
        {"{\"model_type\": \"bert\", \"vocab_size\": 10, \"hidden_size\": 8, \"num_hidden_layers\": 1, "
         "\"num_attention_heads\": 2}", "max_position_embeddings"},
        {"{\"model_type\": \"bert\", \"vocab_size\": 10, \"hidden_size\": 8, \"num_hidden_layers\": 1, "
         "\"num_attention_heads\": 2, \"max_position_embeddings\": 8, \"pad_token_id\": 10}", "pad_token_id"},
        {"{\"model_type\": \"bert\", \"vocab_size\": 10, \"hidden_size\": 8, \"num_hidden_layers\": 1, "
         "\"num_attention_heads\": 2, \"max_position_embeddings\": 8, \"position_embedding_type\": \"relative_key\"}",
         "position_embedding_type"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        FILE *f = fopen(path, "w");
        fputs(bad[i][0], f);
        fclose(f);
        CHECK(spry_model_config_load(path, &r) != SPRY_OK);
        CHECK_MSG(strstr(spry_last_error(), bad[i][1]) && strstr(spry_last_error(), path), "%s", spry_last_error());
    }
    unlink(path);
    rmdir(dir);
}

int main(void) {
    test_mask_stats();
    test_padding();
    test_routes();
    test_config();
    return check_exit();
}
