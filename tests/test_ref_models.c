// ctest-label: ref
/*
 * test_ref_models.c -- GPT-2, BLOOM and BERT against PyTorch golden files (llm.c's test_gpt2 idea,
 * with a failing exit code). scripts/ref/gen_models.py (Debian python3-torch, float64) writes,
 * per architecture, config.json + model.safetensors (initial weights) + ref.safetensors; ctest
 * runs it first (fixture "ref"). Checked, for the tiny 2-layer configs:
 *   logits and loss, every parameter gradient, and 10 AdamW steps with gradient clipping
 *   (the loss before each step and every parameter after the last). BERT: the masked-LM loss of
 *   a right-padded batch with token types (attention_mask -> key lengths), logits at every
 *   position. A gradient that is zero in exact arithmetic (BERT's key bias: softmax does not see
 *   it) is checked by its absolute size instead of its NMSE.
 * Exit 77 (skipped) when the golden files are absent (python3-torch not installed).
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "spry/autograd.h"
#include "spry/hf_checkpoint.h"
#include "spry/model.h"
#include "spry/optim.h"
#include "spry/safetensors.h"

#define LOGITS_NMSE 1e-10
#define GRAD_NMSE   1e-8
#define LOSS_TOL    2e-6
#define FINAL_ATOL  2e-5 // after 10 steps of lr 1e-3: Adam's sign-like updates of ~0 gradients

// NMSE of our (out, in) tensor against a reference stored in file layout.
static double compare(const spry_tensor *ours, const float *theirs, bool transposed) {
    int64_t n = spry_tensor_numel(ours), rows = ours->ndim == 2 ? ours->shape[0] : 1;
    int64_t cols = ours->shape[ours->ndim - 1];
    double  num = 0, den = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double a = ((const float *)ours->data)[r * cols + c];
            double b = theirs[transposed ? c * rows + r : r * cols + c];
            num += (a - b) * (a - b);
            den += b * b;
        }
    // an exactly-zero reference (rounding noise below 1e-12 per element): absolute
    return den > 1e-24 * (double)n ? num / den : num;
}

static double max_abs(const spry_tensor *ours, const float *theirs, bool transposed) {
    int64_t rows = ours->ndim == 2 ? ours->shape[0] : 1, cols = ours->shape[ours->ndim - 1];
    double  m    = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double d = fabs((double)((const float *)ours->data)[r * cols + c] -
                            theirs[transposed ? c * rows + r : r * cols + c]);
            m        = d > m ? d : m;
        }
    return m;
}

static const float *ref_f32(spry_safetensors *ref, const char *name) {
    const spry_st_tensor_info *info = spry_safetensors_find(ref, name);
    CHECK_MSG(info != NULL && info->dtype == SPRY_DTYPE_F32, "reference tensor %s missing", name);
    return info ? info->data : NULL;
}

// The reference's name of a parameter: Hugging Face's file name (model.c's names plus the prefix).
static void ref_name(const spry_model *m, const char *what, const char *pname, char *buf, size_t n) {
    if (m->cfg.arch == SPRY_ARCH_BERT)
        snprintf(buf, n, "%s%s%s", what, strncmp(pname, "cls.", 4) ? "bert." : "", pname);
    else
        snprintf(buf, n, "%stransformer.%s", what, pname);
}

// NMSE of logits against the reference tensor `name` (checked against LOGITS_NMSE).
static double check_logits(spry_safetensors *ref, const char *name, const spry_tensor *logits, const char *what) {
    int64_t      n  = spry_tensor_numel(logits);
    const float *rl = ref_f32(ref, name);
    double      *d  = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; rl && i < n; i++) d[i] = rl[i];
    double e = rl ? check_nmse(logits->data, d, (long)n) : 1;
    free(d);
    CHECK_MSG(e < LOGITS_NMSE, "%s: logits NMSE %.3g", what, e);
    return e;
}

// Every parameter gradient against the reference's `<prefix><file name>` (GRAD_NMSE); the worst.
static double check_grads(spry_model *m, spry_safetensors *ref, const char *prefix, const char *what) {
    double worst = 0;
    for (int64_t i = 0; i < m->params.n_items; i++) {
        spry_param *p = &m->params.items[i];
        char        name[128];
        ref_name(m, prefix, p->t.name, name, sizeof name);
        const float *rg = ref_f32(ref, name);
        if (!rg) continue;
        double ge = compare(&p->grad_t, rg, spry_model_param_is_conv1d(m, p->t.name));
        worst     = ge > worst ? ge : worst;
        CHECK_MSG(ge < GRAD_NMSE, "%s: gradient of %s NMSE %.3g", what, p->t.name, ge);
    }
    return worst;
}

// BERT's batch from the reference: tokens, labels, token types, attention_mask -> key lengths.
static void bert_batch(spry_ctx *ctx, spry_safetensors *ref, spry_tensor *tokens, spry_encoder_batch *eb) {
    static spry_tensor labels, types, mask;
    CHECK(spry_safetensors_get(ref, "labels", &labels) == SPRY_OK);
    CHECK(spry_safetensors_get(ref, "token_type_ids", &types) == SPRY_OK);
    CHECK(spry_safetensors_get(ref, "attention_mask", &mask) == SPRY_OK);
    int64_t      B = tokens->shape[0], T = tokens->shape[1];
    spry_tensor *kl = spry_new(ctx, SPRY_DTYPE_I32, 1, &B);
    for (int64_t b = 0; b < B; b++) {
        int32_t n = 0;
        for (int64_t t = 0; t < T; t++) n += ((int32_t *)mask.data)[b * T + t];
        ((int32_t *)kl->data)[b] = n;
    }
    *eb = (spry_encoder_batch){.ids = tokens, .labels = &labels, .token_types = &types, .key_len = kl};
}

// random-LTD on the encoder (layer 1 of 2 on 5 of 7 tokens, row 1 keeping its two padded
// positions) against DeepSpeed's semantics in PyTorch (mask gathered on rows and columns): the
// logits, the loss and every gradient, before any update.
static void check_bert_ltd(spry_model *m, spry_safetensors *ref, spry_tensor *tokens) {
    spry_tensor kept;
    CHECK(spry_safetensors_get(ref, "ltd.kept", &kept) == SPRY_OK);
    spry_token_route routes[2] = {{0}, {.kept = kept.data, .r = kept.shape[1]}};
    spry_ctx *ctx = spry_ctx_init(1 << 22, 2);
    spry_params_zero_grad(&m->params);
    spry_ctx_begin(ctx);
    spry_encoder_batch eb;
    bert_batch(ctx, ref, tokens, &eb);
    spry_tensor *loss = spry_bert_mlm_loss(m, ctx, &eb, routes, 2);
    spry_backward(ctx, loss);
    CHECK(spry_ctx_status(ctx) == SPRY_OK);
    const float *rloss = ref_f32(ref, "ltd.loss");
    if (rloss) CHECK_NEAR(((float *)loss->data)[0], rloss[0], LOSS_TOL);
    double worst = check_grads(m, ref, "ltd.grad.", "bert random-LTD");
    spry_ctx_set_grad(ctx, false);
    double e = check_logits(ref, "ltd.logits", spry_bert_logits(m, ctx, &eb, routes, 2), "bert random-LTD");
    printf("bert random-LTD (encoder, gathered padding mask): loss %.7f (ref %.7f), logits NMSE %.2e, worst gradient NMSE %.2e\n",
           (double)((float *)loss->data)[0], rloss ? (double)rloss[0] : 0.0, e, worst);
    spry_params_zero_grad(&m->params);
    spry_ctx_free(ctx);
}

static void check_arch(const char *dir, const char *arch) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, arch);
    spry_model *m;
    spry_status st = spry_model_load_dir(path, &m);
    CHECK_MSG(st == SPRY_OK, "%s: %s", arch, spry_last_error());
    if (st) return;
    snprintf(path, sizeof path, "%s/%s/ref.safetensors", dir, arch);
    spry_safetensors *ref;
    st = spry_safetensors_open(path, &ref);
    CHECK_MSG(st == SPRY_OK, "%s", spry_last_error());
    if (st) return;
    spry_tensor tokens;
    CHECK(spry_safetensors_get(ref, "tokens", &tokens) == SPRY_OK);

    spry_ctx *ctx = spry_ctx_init(1 << 22, 2);
    spry_optim_params op = spry_optim_params_default(SPRY_OPTIM_ADAMW);
    op.lr = 1e-3f, op.weight_decay = 0.1f;
    spry_optim *opt;
    CHECK(spry_optim_init(&m->params, &op, &opt) == SPRY_OK);
    const float *ref_losses = ref_f32(ref, "adamw.losses");
    bool bert = m->cfg.arch == SPRY_ARCH_BERT;
    if (bert) check_bert_ltd(m, ref, &tokens);
    for (int step = 0; step < 10; step++) {
        spry_ctx_begin(ctx);
        spry_params_zero_grad(&m->params);
        spry_encoder_batch eb = {0};
        if (bert) bert_batch(ctx, ref, &tokens, &eb);
        spry_tensor *loss = bert ? spry_bert_mlm_loss(m, ctx, &eb, NULL, 0) : spry_model_loss(m, ctx, &tokens);
        spry_backward(ctx, loss);
        CHECK(spry_ctx_status(ctx) == SPRY_OK);
        float l = ((float *)loss->data)[0];
        if (step == 0) {
            // logits (a forward without tape), loss and every gradient before any update
            spry_ctx_set_grad(ctx, false);
            spry_tensor *logits;
            if (bert) {
                logits = spry_bert_logits(m, ctx, &eb, NULL, 0);
            } else {
                spry_tensor *ids = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(tokens.shape[0], tokens.shape[1] - 1));
                for (int64_t b = 0; b < ids->shape[0]; b++)
                    for (int64_t t = 0; t < ids->shape[1]; t++)
                        ((int32_t *)ids->data)[b * ids->shape[1] + t] = ((int32_t *)tokens.data)[b * tokens.shape[1] + t];
                logits = spry_model_forward(m, ctx, ids);
            }
            spry_ctx_set_grad(ctx, true);
            double       e     = check_logits(ref, "logits", logits, arch);
            const float *rloss = ref_f32(ref, "loss");
            if (rloss) CHECK_NEAR(l, rloss[0], LOSS_TOL);
            double worst = check_grads(m, ref, "grad.", arch);
            printf("%s: loss %.7f (ref %.7f), logits NMSE %.2e, worst gradient NMSE %.2e over %lld tensors\n",
                   arch, (double)l, rloss ? (double)rloss[0] : 0.0, e, worst, (long long)m->params.n_items);
        }
        if (ref_losses) CHECK_MSG(fabs(l - ref_losses[step]) < LOSS_TOL, "%s: step %d loss %.7f ref %.7f",
                                  arch, step, (double)l, (double)ref_losses[step]);
        spry_clip_grad_norm(&m->params, 1.0f);
        spry_optim_step(opt, op.lr);
    }
    double worst = 0;
    for (int64_t i = 0; i < m->params.n_items; i++) {
        spry_param *p = &m->params.items[i];
        char        name[128];
        ref_name(m, "adamw.final.", p->t.name, name, sizeof name);
        const float *rf = ref_f32(ref, name);
        if (!rf) continue;
        double d = max_abs(&p->t, rf, spry_model_param_is_conv1d(m, p->t.name));
        worst    = d > worst ? d : worst;
        CHECK_MSG(d < FINAL_ATOL, "%s: parameter %s after 10 AdamW steps: max |diff| %.3g", arch, p->t.name, d);
    }
    printf("%s: 10 AdamW steps: final loss %.7f, worst parameter max|diff| %.2e\n", arch,
           ref_losses ? (double)ref_losses[9] : 0.0, worst);
    spry_optim_free(opt);
    spry_ctx_free(ctx);
    spry_safetensors_close(ref);
    spry_model_free(m);
}

int main(void) {
    const char *bd = getenv("SPRY_BUILD_DIR");
    char        dir[1024], probe[1100];
    snprintf(dir, sizeof dir, "%s/ref", bd ? bd : "build");
    snprintf(probe, sizeof probe, "%s/gpt2/ref.safetensors", dir);
    FILE *f = fopen(probe, "rb");
    if (!f) {
        fprintf(stderr, "skipped: %s missing (run scripts/ref/gen_models.py; needs python3-torch)\n", probe);
        return 77;
    }
    fclose(f);
    check_arch(dir, "gpt2");
    check_arch(dir, "bloom");
    check_arch(dir, "bert");
    return check_exit();
}
