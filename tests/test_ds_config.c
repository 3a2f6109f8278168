// ctest-label: unit
/*
 * test_ds_config.c -- the DeepSpeed config parser (defaults, every key, the batch rule, errors
 * naming key and value), the LR schedules against DeepSpeed's formulas evaluated here by hand,
 * and the fp16 dynamic loss scaler's state machine.
 */
#include <math.h>
#include <string.h>

#include "check.h"
#include "spry/ds_config.h"
#include "spry/log.h"
#include "spry/loss_scale.h"

static spry_status parse(const char *json, int world, spry_ds_config *c) {
    return spry_ds_config_parse(json, "t.json", world, c);
}

static void test_defaults_and_keys(void) {
    spry_ds_config c;
    CHECK(parse("{\"train_micro_batch_size_per_gpu\": 4}", 1, &c) == SPRY_OK);
    CHECK(c.train_batch_size == 4 && c.micro_batch == 4 && c.grad_accum == 1);
    CHECK(c.optim.type == SPRY_OPTIM_ADAMW && fabsf(c.optim.lr - 1e-3f) < 1e-9f);
    CHECK(c.optim.beta1 == 0.9f && c.optim.beta2 == 0.999f && c.optim.eps == 1e-8f && c.optim.weight_decay == 0.0f);
    CHECK(c.sched.kind == SPRY_LR_CONSTANT && c.gradient_clipping == 0.0 && !c.bf16 && !c.fp16);
    CHECK(c.loss_scale == 0.0 && c.initial_scale_power == 16 && c.loss_scale_window == 1000 && c.hysteresis == 2);
    CHECK(c.min_loss_scale == 1.0 && !c.consecutive_hysteresis && c.steps_per_print == 10);
    CHECK(!c.csv_enabled && !strcmp(c.csv_job_name, "DeepSpeedJobName") && c.csv_output_path[0] == 0);
    spry_ds_config_free(&c);

    const char *full =
        "{\"train_batch_size\": 32, \"gradient_accumulation_steps\": 2,"
        " \"optimizer\": {\"type\": \"Adam\", \"params\": {\"lr\": 3e-4, \"betas\": [0.8, 0.95], \"eps\": 1e-6,"
        "   \"weight_decay\": 0.1, \"adam_w_mode\": false}},"
        " \"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": {\"warmup_min_lr\": 1e-5, \"warmup_max_lr\": 2e-4,"
        "   \"warmup_num_steps\": 10, \"total_num_steps\": 100, \"warmup_type\": \"linear\"}},"
        " \"gradient_clipping\": 1.0, \"fp16\": {\"enabled\": true, \"loss_scale\": 0, \"initial_scale_power\": 12,"
        "   \"loss_scale_window\": 50, \"hysteresis\": 3, \"consecutive_hysteresis\": true, \"min_loss_scale\": 2},"
        " \"steps_per_print\": 5, \"seed\": 7,"
        " \"csv_monitor\": {\"enabled\": true, \"output_path\": \"out\", \"job_name\": \"j\"}}";
    CHECK(parse(full, 2, &c) == SPRY_OK);
    CHECK(c.train_batch_size == 32 && c.grad_accum == 2 && c.micro_batch == 8);
    CHECK(c.optim.type == SPRY_OPTIM_ADAM && fabsf(c.optim.lr - 3e-4f) < 1e-10f && c.optim.beta1 == 0.8f);
    CHECK(c.optim.beta2 == 0.95f && c.optim.eps == 1e-6f && c.optim.weight_decay == 0.1f);
    CHECK(c.sched.kind == SPRY_LR_WARMUP_DECAY && c.sched.warmup_min_lr == 1e-5 && c.sched.warmup_max_lr == 2e-4);
    CHECK(c.sched.warmup_num_steps == 10 && c.sched.total_num_steps == 100 && c.sched.warmup_linear);
    CHECK(c.gradient_clipping == 1.0 && c.fp16 && c.initial_scale_power == 12 && c.loss_scale_window == 50);
    CHECK(c.hysteresis == 3 && c.consecutive_hysteresis && c.min_loss_scale == 2.0);
    CHECK(c.steps_per_print == 5 && c.seed == 7 && c.csv_enabled && !strcmp(c.csv_output_path, "out"));
    CHECK(!strcmp(c.csv_job_name, "j") && c.n_warnings == 0);
    spry_ds_config_free(&c);

    CHECK(parse("{\"train_batch_size\": 8, \"optimizer\": {\"type\": \"SGD\", \"params\": {\"lr\": 0.1,"
                " \"momentum\": 0.9, \"nesterov\": true}}, \"bf16\": {\"enabled\": true}}", 1, &c) == SPRY_OK);
    CHECK(c.optim.type == SPRY_OPTIM_SGD && c.optim.momentum == 0.9f && c.optim.nesterov && c.bf16);
    spry_ds_config_free(&c);
    // unknown and ignored keys are warnings, not errors
    CHECK(parse("{\"train_batch_size\": 8, \"wall_clock_breakdown\": true, \"bogus\": 1}", 1, &c) == SPRY_OK);
    CHECK(c.n_warnings == 2);
    spry_ds_config_free(&c);
    // zero_optimization: DeepSpeed's defaults, the keys spry acts on, warnings, errors
    CHECK(parse("{\"train_batch_size\": 8}", 1, &c) == SPRY_OK);
    CHECK(c.zero_stage == 0 && c.reduce_bucket_size == 500000000 && c.allgather_bucket_size == 500000000 && !c.overlap_comm);
    spry_ds_config_free(&c);
    CHECK(parse("{\"train_batch_size\": 8, \"zero_optimization\": {\"stage\": 2, \"reduce_bucket_size\": 2e5,"
                " \"allgather_bucket_size\": 3e5, \"overlap_comm\": true, \"contiguous_gradients\": true}}", 1, &c) == SPRY_OK);
    CHECK(c.zero_stage == 2 && c.reduce_bucket_size == 200000 && c.allgather_bucket_size == 300000 && c.overlap_comm);
    CHECK(c.n_warnings == 0);
    spry_ds_config_free(&c);
    CHECK(parse("{\"train_batch_size\": 8, \"zero_optimization\": {\"stage\": 1, \"offload_optimizer\": {},"
                " \"reduce_scatter\": false, \"stagee\": 1}}", 1, &c) == SPRY_OK);
    CHECK(c.zero_stage == 1 && c.n_warnings == 3);
    spry_ds_config_free(&c);
    CHECK(parse("{\"train_batch_size\": 8, \"zero_optimization\": {\"stage\": 3}}", 1, &c) == SPRY_ERR_CONFIG);
    CHECK(strstr(spry_last_error(), "zero_optimization.stage") && strstr(spry_last_error(), "3"));
    CHECK(parse("{\"train_batch_size\": 8, \"zero_optimization\": {\"stage\": \"two\"}}", 1, &c) == SPRY_ERR_CONFIG);
    CHECK(strstr(spry_last_error(), "zero_optimization.stage") && strstr(spry_last_error(), "two"));
    CHECK(parse("{\"train_batch_size\": 8, \"zero_optimization\": {\"overlap_comm\": 1}}", 1, &c) == SPRY_ERR_CONFIG);
    CHECK(strstr(spry_last_error(), "zero_optimization.overlap_comm") != NULL);
    CHECK(parse("{\"train_batch_size\": 8, \"zero_optimization\": [1]}", 1, &c) == SPRY_ERR_CONFIG);
}

static void test_batch_rule(void) {
    spry_ds_config c;
    CHECK(parse("{\"train_batch_size\": 16, \"train_micro_batch_size_per_gpu\": 2}", 2, &c) == SPRY_OK);
    CHECK(c.grad_accum == 4);
    spry_ds_config_free(&c);
    CHECK(parse("{\"train_micro_batch_size_per_gpu\": 3, \"gradient_accumulation_steps\": 5}", 2, &c) == SPRY_OK);
    CHECK(c.train_batch_size == 30);
    spry_ds_config_free(&c);
    CHECK(parse("{\"train_batch_size\": 12, \"gradient_accumulation_steps\": 3}", 1, &c) == SPRY_OK);
    CHECK(c.micro_batch == 4);
    spry_ds_config_free(&c);
    CHECK(parse("{\"train_batch_size\": 10, \"train_micro_batch_size_per_gpu\": 3, \"gradient_accumulation_steps\": 3}", 1, &c) == SPRY_ERR_CONFIG);
    CHECK(strstr(spry_last_error(), "inconsistent") && strstr(spry_last_error(), "10"));
    CHECK(parse("{\"train_batch_size\": 10, \"train_micro_batch_size_per_gpu\": 4}", 1, &c) == SPRY_ERR_CONFIG);
    CHECK(parse("{}", 1, &c) == SPRY_ERR_CONFIG);
    CHECK(strstr(spry_last_error(), "train_batch_size") != NULL);
}

static void expect_error(const char *json, const char *needle1, const char *needle2) {
    spry_ds_config c;
    spry_status    st = parse(json, 1, &c);
    CHECK_MSG(st != SPRY_OK, "accepted: %s", json);
    CHECK_MSG(strstr(spry_last_error(), needle1) && strstr(spry_last_error(), needle2) &&
                  strstr(spry_last_error(), "t.json"),
              "message \"%s\" lacks \"%s\"/\"%s\"", spry_last_error(), needle1, needle2);
}

static void test_errors(void) {
    expect_error("{\"train_batch_size\": \"8\"}", "train_batch_size", "\"8\"");
    expect_error("{\"train_batch_size\": -2}", "train_batch_size", "-2");
    expect_error("{\"train_batch_size\": 2.5}", "train_batch_size", "2.5");
    expect_error("[1, 2]", "not a JSON object", "");
    expect_error("{\"train_batch_size\": 8,", "not a JSON object", "");
    expect_error("{\"train_batch_size\": 8, \"optimizer\": {\"type\": \"Lion\"}}", "optimizer.type", "Lion");
    expect_error("{\"train_batch_size\": 8, \"optimizer\": {\"type\": \"Adam\", \"params\": {\"lr\": \"big\"}}}",
                 "optimizer.params.lr", "big");
    expect_error("{\"train_batch_size\": 8, \"optimizer\": {\"type\": \"Adam\", \"params\": {\"betas\": [0.9]}}}",
                 "optimizer.params.betas", "[0.9]");
    expect_error("{\"train_batch_size\": 8, \"scheduler\": {\"type\": \"OneCycleX\"}}", "scheduler.type", "OneCycleX");
    expect_error("{\"train_batch_size\": 8, \"scheduler\": {\"type\": \"WarmupCosineLR\", \"params\": {}}}",
                 "total_num_steps", "WarmupCosineLR");
    expect_error("{\"train_batch_size\": 8, \"scheduler\": {\"type\": \"WarmupLR\", \"params\": {\"warmup_type\": \"exp\"}}}",
                 "warmup_type", "exp");
    expect_error("{\"train_batch_size\": 8, \"gradient_clipping\": -1}", "gradient_clipping", "-1");
    expect_error("{\"train_batch_size\": 8, \"fp16\": {\"enabled\": \"yes\"}}", "fp16.enabled", "yes");
    expect_error("{\"train_batch_size\": 8, \"fp16\": {\"enabled\": true}, \"bf16\": {\"enabled\": true}}", "bf16", "fp16");
    expect_error("{\"train_batch_size\": 8, \"csv_monitor\": 3}", "csv_monitor", "3");
}

// DeepSpeed's formulas, written out here independently of schedule.c.
static void test_schedules(void) {
    spry_lr_schedule w = spry_lr_schedule_default(SPRY_LR_WARMUP, 1e-3);
    w.warmup_min_lr = 1e-5, w.warmup_max_lr = 1e-3, w.warmup_num_steps = 100;
    CHECK_NEAR(spry_schedule_lr(&w, -1), 1e-5, 1e-15);                       // before the first step
    CHECK_NEAR(spry_schedule_lr(&w, 0), 1e-5, 1e-15);                        // log(1) = 0
    CHECK_NEAR(spry_schedule_lr(&w, 9), 1e-5 + (1e-3 - 1e-5) * log(10.0) / log(100.0), 1e-15);
    CHECK_NEAR(spry_schedule_lr(&w, 99), 1e-5 + (1e-3 - 1e-5) * log(100.0) / log(100.0), 1e-15);
    CHECK_NEAR(spry_schedule_lr(&w, 5000), 1e-3, 1e-15);
    w.warmup_linear = true;
    CHECK_NEAR(spry_schedule_lr(&w, 25), 1e-5 + (1e-3 - 1e-5) * 0.25, 1e-15);
    w.warmup_num_steps = 1; // DeepSpeed uses max(2, warmup_num_steps)
    CHECK_NEAR(spry_schedule_lr(&w, 1), 1e-5 + (1e-3 - 1e-5) * 0.5, 1e-15); // W = 2, linear
    CHECK_NEAR(spry_schedule_lr(&w, 2), 1e-3, 1e-15);
    CHECK_NEAR(spry_schedule_lr(&w, 0), 1e-5, 1e-15);

    spry_lr_schedule d = spry_lr_schedule_default(SPRY_LR_WARMUP_DECAY, 1e-3);
    d.warmup_num_steps = 10, d.total_num_steps = 110, d.warmup_max_lr = 1e-3;
    CHECK_NEAR(spry_schedule_lr(&d, 5), 1e-3 * log(6.0) / log(10.0), 1e-15);
    CHECK_NEAR(spry_schedule_lr(&d, 10), 1e-3 * 100.0 / 100.0, 1e-15);
    CHECK_NEAR(spry_schedule_lr(&d, 60), 1e-3 * 50.0 / 100.0, 1e-15);
    CHECK_NEAR(spry_schedule_lr(&d, 110), 0.0, 1e-15);
    CHECK_NEAR(spry_schedule_lr(&d, 500), 0.0, 1e-15);

    spry_lr_schedule c = spry_lr_schedule_default(SPRY_LR_WARMUP_COSINE, 2e-3);
    c.warmup_num_steps = 10, c.total_num_steps = 110, c.warmup_min_ratio = 0.1, c.cos_min_ratio = 0.01;
    CHECK_NEAR(spry_schedule_lr(&c, -1), 0.0, 1e-15);
    CHECK_NEAR(spry_schedule_lr(&c, 3), 2e-3 * (0.1 + 0.9 * log(4.0) / log(10.0)), 1e-15);
    double pi = 3.14159265358979323846;
    CHECK_NEAR(spry_schedule_lr(&c, 10), 2e-3 * (0.01 + 0.99 * (1 + cos(pi * 1.0 / 100.0)) / 2), 1e-15);
    CHECK_NEAR(spry_schedule_lr(&c, 59), 2e-3 * (0.01 + 0.99 * (1 + cos(pi * 50.0 / 100.0)) / 2), 1e-15);
    CHECK_NEAR(spry_schedule_lr(&c, 109), 2e-3 * 0.01, 1e-15);
    CHECK_NEAR(spry_schedule_lr(&c, 1000), 2e-3 * 0.01, 1e-15); // clamped at the floor
}

static void test_loss_scaler(void) {
    // hysteresis 2: the first overflow only uses up the delay, the second halves the scale
    spry_loss_scaler s = spry_loss_scaler_init(0, 4, 3, 2, false, 1);
    CHECK(s.scale == 16.0);
    CHECK(spry_loss_scaler_update(&s, true) && s.scale == 16.0 && s.delayed_shift == 1);
    CHECK(spry_loss_scaler_update(&s, true) && s.scale == 8.0);
    // iter is now 2, last overflow 1: doubles when (iter - 1) - 1 is a positive multiple of 3
    CHECK(!spry_loss_scaler_update(&s, false) && s.scale == 8.0);  // iter 2: 0
    CHECK(!spry_loss_scaler_update(&s, false) && s.scale == 8.0);  // iter 3: 1
    CHECK(!spry_loss_scaler_update(&s, false) && s.scale == 8.0);  // iter 4: 2
    CHECK(!spry_loss_scaler_update(&s, false) && s.scale == 16.0 && s.delayed_shift == 2); // iter 5: 3
    // min scale
    spry_loss_scaler m = spry_loss_scaler_init(0, 1, 1000, 1, false, 1);
    spry_loss_scaler_update(&m, true);
    CHECK(m.scale == 1.0 && !m.at_min_overflow);
    spry_loss_scaler_update(&m, true);
    CHECK(m.scale == 1.0 && m.at_min_overflow);
    // static
    spry_loss_scaler st = spry_loss_scaler_init(128, 16, 10, 2, false, 1);
    CHECK(!st.dynamic && st.scale == 128.0);
    spry_loss_scaler_update(&st, true);
    CHECK(st.scale == 128.0);
    float v[4] = {1, 2, 3, 4};
    CHECK(!spry_has_inf_or_nan(v, 4));
    v[2] = INFINITY;
    CHECK(spry_has_inf_or_nan(v, 4));
    v[2] = NAN;
    CHECK(spry_has_inf_or_nan(v, 4));
}

// Token-based progress (Megatron's token schedule): values computed by hand from its formulas.
static void test_token_schedules(void) {
    spry_ds_config c;
    CHECK(parse("{\"train_batch_size\": 8, \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 1e-3}}, "
                "\"scheduler\": {\"type\": \"WarmupCosineLR\", \"params\": {\"warmup_type\": \"linear\", "
                "\"warmup_num_tokens\": 1000, \"total_num_tokens\": 11000, \"cos_min_ratio\": 0.1}}}",
                1, &c) == SPRY_OK);
    CHECK(c.sched.by_tokens && c.sched.warmup_num_tokens == 1000 && c.sched.total_num_tokens == 11000);
    // (optim.lr is a float: 1e-10) Megatron: max_lr t / W, then min + (max - min) (1 + cos(pi p)) / 2 with min = 1e-4, max = 1e-3
    CHECK_NEAR(spry_schedule_lr_tokens(&c.sched, 0), 0.0, 1e-10);
    CHECK_NEAR(spry_schedule_lr_tokens(&c.sched, 500), 5e-4, 1e-10);
    CHECK_NEAR(spry_schedule_lr_tokens(&c.sched, 1000), 1e-3, 1e-10);
    CHECK_NEAR(spry_schedule_lr_tokens(&c.sched, 6000), 1e-4 + 9e-4 * 0.5, 1e-10);
    CHECK_NEAR(spry_schedule_lr_tokens(&c.sched, 8500), 1e-4 + 9e-4 * (1 + cos(3.14159265358979323846 * 0.75)) / 2, 1e-10);
    CHECK_NEAR(spry_schedule_lr_tokens(&c.sched, 11000), 1e-4, 1e-10);
    CHECK_NEAR(spry_schedule_lr_tokens(&c.sched, 1e9), 1e-4, 1e-10);
    spry_ds_config_free(&c);

    spry_lr_schedule d = spry_lr_schedule_default(SPRY_LR_WARMUP_DECAY, 1e-3);
    d.by_tokens = true, d.warmup_num_tokens = 100, d.total_num_tokens = 1100;
    CHECK_NEAR(spry_schedule_lr_tokens(&d, 9), 1e-3 * 0.5, 1e-15); // log warmup: ln(10) / ln(100)
    CHECK_NEAR(spry_schedule_lr_tokens(&d, 600), 1e-3 * 0.5, 1e-15);
    CHECK_NEAR(spry_schedule_lr_tokens(&d, 1100), 0.0, 1e-15);
    CHECK_NEAR(spry_schedule_lr_tokens(&d, 5000), 0.0, 1e-15);
    d.by_tokens = false; // a step schedule asked in tokens stays at its first value
    CHECK_NEAR(spry_schedule_lr_tokens(&d, 600), spry_schedule_lr(&d, -1), 1e-15);

    expect_error("{\"train_batch_size\": 8, \"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": "
                 "{\"warmup_num_tokens\": 100}}}", "total_num_tokens", "warmup_num_tokens");
    expect_error("{\"train_batch_size\": 8, \"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": "
                 "{\"warmup_num_tokens\": 100, \"total_num_tokens\": 50}}}", "total_num_tokens", "50");
    expect_error("{\"train_batch_size\": 8, \"scheduler\": {\"type\": \"WarmupLR\", \"params\": "
                 "{\"warmup_num_tokens\": -3}}}", "warmup_num_tokens", "-3");
}

int main(void) {
    spry_log_set_level(SPRY_LOG_ERROR);
    test_defaults_and_keys();
    test_batch_rule();
    test_errors();
    test_schedules();
    test_token_schedules();
    test_loss_scaler();
    return check_exit();
}
