#!/usr/bin/python3
"""data_efficiency.py BUILD [--quick] -- the small-scale reproduction of DeepSpeed Data Efficiency
(curriculum learning + random-LTD; shared notes section 5.3 with the issue's corrections), run by
`make bench-data-efficiency`. Results: BUILD/bench-data-efficiency/ and docs/data_efficiency.md.

Design (what the issue asks, and why):
  corpus    FOLDOC (Debian dict-foldoc), one dictionary entry per document, 5.6 MB of English;
            a 2048-token byte-level BPE (spry tokenizer train); split 95/5 by documents.
  model     GPT-2, 4 layers, width 128, 4 heads, context 128, fp32 (~0.8M parameters).
  budget    E effective tokens (notes 4.6: CL- and LTD-aware) for the 100% runs, EPOCHS epochs of
            the training split, so the baseline ends past its fast phase; 67% and 50% budgets.
  LR        WarmupCosineLR on effective tokens (warm-up 2% of the budget, cosine to 10%);
            the baseline's peak LR is swept first (LR_SWEEP, extended upwards while the best is its top value) and the best one used everywhere
            (no 1/data-fraction scaling, which flatters reduced budgets); LR-stress runs at 4x.
  configs   base, cl (vocab_rarity percentile 1->100 fixed_root 2 + seqlen_truncate 16->128 over
            40% of the steps), ltd (layers 1..2, 32->128 over 70%), cl+ltd; each at 100/67/50%.
  controls  base-samesteps: the baseline with CL+LTD's number of optimizer steps at the same
            token budget (smaller batch); cl/ltd with min = max must equal base bit for bit.
  seeds     SEEDS paired seeds per configuration, compared seed by seed.
  threads   two single-thread jobs side by side, measured first against one two-thread job
            (calibrate(): aggregate tokens/s of both layouts, printed as a RESULT line).
Prints a table per config and budget (mean, std, per seed), the wall-clock per run, the LTD step
time against the FLOP model, the smallest CL+LTD budget matching the tuned baseline
(interpolated), and RESULT lines; writes results.json and SVG plots.
"""
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
QUICK = "--quick" in sys.argv
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(BUILD, "bench-data-efficiency")
SPRY = os.path.join(BUILD, "spry")
SEQ, LAYERS, EMBD, HEADS, VOCAB, MICRO = 128, 4, 128, 4, 2048, 16
EPOCHS = 0.02 if QUICK else float(os.environ.get("SPRY_DE_EPOCHS", "3"))
SEEDS = [1] if QUICK else [1, 2, 3]
LR_SWEEP = [1e-3] if QUICK else [5e-4, 1e-3, 2e-3, 4e-3]
BUDGETS = [1.0, 0.5] if QUICK else [1.0, 0.67, 0.5]
# runs are cached per budget in epochs (a finished run's result.json is reused when the harness restarts)
RUNS = os.path.join(OUT, f"runs-e{EPOCHS:g}")
# the controls (same-steps baseline, LR stress): SPRY_DE_CONTROL_SEEDS of the seeds (all by default)
STRESS_SEEDS = SEEDS[:int(os.environ.get("SPRY_DE_CONTROL_SEEDS", len(SEEDS)))]


def log(*a):
    print(*a, flush=True)


def sh(args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        log("FAILED:", " ".join(args))
        log(r.stdout[-2000:], r.stderr[-2000:])
        raise SystemExit(1)
    return r.stdout


# ---- data ----------------------------------------------------------------------------------------

def prepare_data():
    os.makedirs(OUT, exist_ok=True)
    data = os.path.join(OUT, "foldoc")
    if os.path.exists(data + ".idx"):
        return data
    import gzip
    raw = gzip.open("/usr/share/dictd/foldoc.dict.dz", "rt", encoding="utf-8", errors="replace").read()
    entries, cur = [], []
    for line in raw.split("\n"):  # an entry: a headword at column 0, then indented lines
        if line and not line[0].isspace():
            if cur:
                entries.append("\n".join(cur).strip())
            cur = [line]
        else:
            cur.append(line)
    if cur:
        entries.append("\n".join(cur).strip())
    entries = [e for e in entries if e and not e.startswith("00-database")]
    with open(data + ".jsonl", "w") as f:
        for e in entries:
            f.write(json.dumps({"text": e}) + "\n")
    with open(data + ".txt", "w") as f:
        f.write("\n\n".join(entries))
    sh([SPRY, "tokenizer", "train", "--input", data + ".txt", "--vocab-size", str(VOCAB), "--quiet",
        "--out", os.path.join(OUT, "tokenizer.json")])
    sh([SPRY, "prepare", "--input", data + ".jsonl", "--format", "jsonl", "--eod", "--tokenizer",
        os.path.join(OUT, "tokenizer.json"), "--out", data])
    log(f"corpus: {len(entries)} FOLDOC entries -> {data}.bin/.idx")
    return data


# ---- runs ----------------------------------------------------------------------------------------

def analyze(data):
    out = os.path.join(OUT, "analysis")
    if not os.path.exists(os.path.join(out, "vocab_rarity", "vocab_rarity_index_to_metric.idx")):
        sh([SPRY, "analyze", "--data", data, "--out", out, "--metrics", "vocab_rarity", "--seq-len", str(SEQ),
            "--split", SPLIT, "--eod", str(EOD), "--vocab-size", str(VOCAB), "--threads", "2"])
    return os.path.join(out, "vocab_rarity", "vocab_rarity_")


def config(run, an):
    """The DeepSpeed config of one run (dict)."""
    E = run["budget_tokens"]
    c = {"train_micro_batch_size_per_gpu": run["micro"], "steps_per_print": 1000, "seed": run["seed"],
         "optimizer": {"type": "AdamW", "params": {"lr": run["lr"], "betas": [0.9, 0.95], "weight_decay": 0.1}},
         "gradient_clipping": 1.0,
         "scheduler": {"type": "WarmupCosineLR", "params": {"warmup_type": "linear", "warmup_num_tokens": 0.02 * E,
                                                             "total_num_tokens": E, "cos_min_ratio": 0.1}}}
    de = {"enabled": True, "seed": run["seed"]}
    n = run["sched_steps"]  # the baseline's step count at this budget: schedule lengths follow it
    if run["cl"]:
        lo_voc, lo_seq = (100, SEQ) if run.get("minmax") else (1, 16)
        de["data_sampling"] = {"enabled": True, "curriculum_learning": {"enabled": True, "data_cluster_path": OUT + "/clusters",
            "curriculum_metrics": {
                "voc": {"index_to_sample_path": an + "index_to_sample_percentile_merged", "index_to_metric_path": an + "index_to_metric",
                        "difficulty_type": "percentile", "clustering_type": "schedule_based", "min_difficulty": lo_voc,
                        "max_difficulty": 100, "schedule_type": "fixed_root",
                        "schedule_config": {"total_curriculum_step": max(1, int(0.4 * n)), "difficulty_step": 1, "root_degree": 2}},
                "seqlen_truncate": {"difficulty_type": "value", "clustering_type": "single_cluster", "min_difficulty": lo_seq,
                        "max_difficulty": SEQ, "schedule_type": "fixed_linear",
                        "schedule_config": {"total_curriculum_step": max(1, int(0.4 * n)), "difficulty_step": 8}}}}}
    if run["ltd"]:
        lo = SEQ if run.get("minmax") else 32
        de["data_routing"] = {"enabled": True, "random_ltd": {"enabled": True, "total_layer_num": LAYERS,
            "random_ltd_layer_num": LAYERS - 2, "random_ltd_layer_id": list(range(1, LAYERS - 1)),
            "model_mask_name": "attention_mask", "model_type": "decoder", "hidden_state_order": "batch_seq_dim",
            "random_ltd_schedule": {"min_value": lo, "max_value": SEQ, "schedule_type": "fixed_linear",
                                    "schedule_config": {"require_steps": max(1, int(0.7 * n)), "seq_per_step": 8}}}}
    c["data_efficiency"] = de
    return c


def train_run(run, data, an):
    d = os.path.join(RUNS, run["name"])
    res = os.path.join(d, "result.json")
    if os.path.exists(res):
        return json.load(open(res))
    import shutil
    shutil.rmtree(d, ignore_errors=True)  # a run stopped half-way starts again
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "ds.json")
    json.dump(config(run, an), open(cfg, "w"), indent=1)
    t0 = time.time()
    sh([SPRY, "train", "--data", data, "--config", cfg, "--steps", str(10 * run["sched_steps"] + 100),
        "--train-tokens", str(run["budget_tokens"]), "--layers", str(LAYERS), "--embd", str(EMBD), "--heads", str(HEADS),
        "--seq", str(SEQ), "--vocab", str(VOCAB), "--split", SPLIT, "--eod", str(EOD), "--threads", "1",
        "--progress", "log", "--out", d])
    wall = time.time() - t0
    m = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
    step = m[-1]["step"]
    ev = json.loads(sh([SPRY, "eval", "--model", os.path.join(d, "step_%d" % step), "--data", data, "--split", SPLIT,
                        "--eod", str(EOD), "--seq", str(SEQ), "--threads", "1"]).strip().splitlines()[-1])
    r = dict(run, steps=step, wall_s=wall, val_loss=ev["loss"], tokens=m[-1]["tokens"], eff_tokens=m[-1]["eff_tokens"],
             losses=[x["loss"] for x in m],
             # per-step time from the trainer's own rate (tokens of the step / its tokens_per_s): no start-up
             step_s=statistics.mean((x["tokens"] - (m[i - 1]["tokens"] if i else 0)) / max(x["tokens_per_s"], 1e-9)
                                    for i, x in enumerate(m)))
    json.dump(r, open(res, "w"))
    log(f"  {run['name']:28s} steps {step:5d}  val {ev['loss']:.4f}  wall {wall:6.1f} s")
    return r


def calibrate(data):
    """Aggregate training tokens/s of one 2-thread job against two 1-thread jobs side by side."""
    d = os.path.join(OUT, "calibrate")
    cfg = os.path.join(OUT, "calibrate.json")
    json.dump({"train_micro_batch_size_per_gpu": MICRO, "steps_per_print": 1000}, open(cfg, "w"))

    def job(name, threads):
        sh([SPRY, "train", "--data", data, "--config", cfg, "--steps", "60", "--layers", str(LAYERS), "--embd", str(EMBD),
            "--heads", str(HEADS), "--seq", str(SEQ), "--vocab", str(VOCAB), "--split", SPLIT, "--threads", str(threads),
            "--progress", "log", "--out", os.path.join(d, name)])
        m = [json.loads(l) for l in open(os.path.join(d, name, "metrics.jsonl"))][10:]  # past the warm-up
        return sum(x["tokens_per_s"] for x in m) / len(m)

    import shutil
    shutil.rmtree(d, ignore_errors=True)
    one = job("t2", 2)
    with ThreadPoolExecutor(max_workers=2) as ex:
        two = sum(ex.map(lambda n: job(n, 1), ["a", "b"]))
    log(f"RESULT threads_two_1thread_jobs spry={two:.0f} one_2thread_job={one:.0f} ratio={two / one:.3f} unit=tokens/s")


def run_all(runs, data, an, jobs):
    with ThreadPoolExecutor(max_workers=jobs) as ex:
        return list(ex.map(lambda r: train_run(r, data, an), runs))


def stats(v):
    return (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0)


def main():
    global SPLIT, EOD
    SPLIT, EOD = "95,5,0", 0
    t_start = time.time()
    log(f"== machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; quick={QUICK}")
    data = prepare_data()
    tok = json.load(open(os.path.join(OUT, "tokenizer.json")))
    EOD = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|endoftext|>")
    an = analyze(data)
    # the training split's tokens: one epoch
    n_train = int(sh([SPRY, "analyze", "--data", data, "--out", os.path.join(OUT, "count"), "--metrics", "seqlen",
                      "--seq-len", str(SEQ), "--split", SPLIT, "--eod", str(EOD)]).split()[2])
    epoch_tokens = n_train * SEQ
    E = int(EPOCHS * epoch_tokens)
    steps100 = E // (MICRO * SEQ)
    log(f"budget: {EPOCHS} epochs of {n_train} samples = {E} effective tokens, {steps100} baseline steps at 100%")

    def run(name, cl, ltd, frac, lr, seed, micro=MICRO, **kw):
        b = int(E * frac)
        return dict(name=name, cl=cl, ltd=ltd, frac=frac, lr=lr, seed=seed, micro=micro, budget_tokens=b,
                    sched_steps=max(1, b // (MICRO * SEQ)), **kw)

    calibrate(data)
    # 2. the baseline's LR sweep (seed 1, 100%)
    log("== LR sweep of the 100% baseline")
    sweep = run_all([run(f"base-100-lr{lr:g}-s1", False, False, 1.0, lr, 1) for lr in LR_SWEEP], data, an, 2)
    best = min(sweep, key=lambda r: r["val_loss"])["lr"]
    while not QUICK and best == max(r["lr"] for r in sweep) and best < 0.05:  # best at the top edge: extend
        LR_SWEEP.append(2 * best)
        sweep += run_all([run(f"base-100-lr{2 * best:g}-s1", False, False, 1.0, 2 * best, 1)], data, an, 1)
        best = min(sweep, key=lambda r: r["val_loss"])["lr"]
    log(f"best peak LR {best:g}")
    # 3. configurations x budgets x seeds (paired seeds), min = max controls, LR stress
    runs = []
    for frac in BUDGETS:
        for name, cl, ltd in [("base", False, False), ("cl", True, False), ("ltd", False, True), ("clltd", True, True)]:
            for s in SEEDS:
                runs.append(run(f"{name}-{int(round(frac * 100))}-lr{best:g}-s{s}", cl, ltd, frac, best, s))
    runs.append(run(f"ltdminmax-100-lr{best:g}-s1", False, True, 1.0, best, 1, minmax=True))
    for s in STRESS_SEEDS:
        runs.append(run(f"base-100-lr{4 * best:g}-s{s}", False, False, 1.0, 4 * best, s))
        runs.append(run(f"cl-100-lr{4 * best:g}-s{s}", True, False, 1.0, 4 * best, s))
    log(f"== {len(runs)} runs, 2 at a time, 1 thread each")
    res = {r["name"]: r for r in sweep}
    for r in run_all(runs, data, an, 2):
        res[r["name"]] = r
    # 4. same-steps control: the baseline with CL+LTD's step count at the same budget (smaller batch)
    ctl = []
    for s in STRESS_SEEDS:
        k = res[f"clltd-100-lr{best:g}-s{s}"]["steps"]
        micro = max(1, round(E / (k * SEQ)))
        ctl.append(run(f"base-samesteps-100-lr{best:g}-s{s}", False, False, 1.0, best, s, micro=micro))
    for r in run_all(ctl, data, an, 2):
        res[r["name"]] = r
    report(res, best, E, steps100, time.time() - t_start)


def report(res, best, E, steps100, wall):
    out = {"budget_tokens": E, "baseline_steps": steps100, "best_lr": best, "runs": res}
    json.dump(out, open(os.path.join(OUT, "results.json"), "w"), indent=1)
    log("\n== LR sweep (100% baseline, seed 1): " +
        ", ".join(f"lr {r['lr']:g}: {r['val_loss']:.4f}" for r in res.values() if "lr" in r and r["name"].startswith("base-100-lr") and r["seed"] == 1 and r["lr"] in LR_SWEEP))
    log("\n| config | budget | val loss mean ± std | per seed | steps | wall s/run |")
    log("|---|---|---|---|---|---|")
    table = {}
    for frac in BUDGETS:
        for name in ["base", "cl", "ltd", "clltd"]:
            rs = [res[f"{name}-{int(round(frac * 100))}-lr{best:g}-s{s}"] for s in SEEDS]
            m, sd = stats([r["val_loss"] for r in rs])
            table[(name, frac)] = (m, sd, rs)
            log(f"| {name} | {int(round(frac * 100))}% | {m:.4f} ± {sd:.4f} | " + " ".join(f"{r['val_loss']:.4f}" for r in rs)
                + f" | {statistics.mean(r['steps'] for r in rs):.0f} | {statistics.mean(r['wall_s'] for r in rs):.0f} |")
    base100 = table[("base", 1.0)]
    log("")
    for name in ["cl", "ltd", "clltd"]:
        for frac in BUDGETS:
            m, sd, rs = table[(name, frac)]
            d = [r["val_loss"] - b["val_loss"] for r, b in zip(rs, base100[2])]
            dm, dsd = stats(d)
            log(f"RESULT val_loss_{name}_{int(round(frac * 100))} spry={m:.4f} base_100={base100[0]:.4f} "
                f"ratio={m / base100[0]:.4f} unit=nats (paired diff {dm:+.4f} ± {dsd:.4f})")
    # smallest CL+LTD budget matching the 100% baseline (linear interpolation in budget)
    pts = sorted((f, table[("clltd", f)][0]) for f in BUDGETS)
    match = None
    for (f0, l0), (f1, l1) in zip(pts, pts[1:]):
        if (l0 - base100[0]) * (l1 - base100[0]) <= 0 and l1 != l0:
            match = f0 + (base100[0] - l0) * (f1 - f0) / (l1 - l0)
    if match is None and pts[0][1] <= base100[0]:
        match = pts[0][0]
    log(f"RESULT clltd_budget_matching_base100 spry={match if match is not None else float('nan'):.3f} "
        f"paper=0.5 unit=fraction_of_budget (nan: CL+LTD never reached the baseline)")
    # random-LTD step time against the FLOP model: layer part (2T + 4r)/(6T) per routed layer
    # (per-step FLOPs: rows x [12 C^2 ((L - n) T + n r) + V C T]; the mean r/T of a run follows from its
    # effective/actual token ratio (L - n + n r/T) / L)
    b, l = table[("base", 1.0)][2], table[("ltd", 1.0)][2]
    n_r = LAYERS - 2
    rt = statistics.mean((r["eff_tokens"] / r["tokens"] * LAYERS - (LAYERS - n_r)) / n_r for r in l)
    model = (12 * EMBD * EMBD * (LAYERS - n_r + n_r * rt) + VOCAB * EMBD) / (12 * EMBD * EMBD * LAYERS + VOCAB * EMBD)
    t_l, t_b = statistics.mean(r["step_s"] for r in l), statistics.mean(r["step_s"] for r in b)
    log(f"RESULT ltd_step_time spry={t_l:.4f} base={t_b:.4f} ratio={t_l / t_b:.3f} unit=s_per_step "
        f"(FLOP model {model:.3f} at mean r/T {rt:.2f})")
    for frac in BUDGETS:  # per budget too: runs of one budget ran at about the same time (same load)
        tb, tl = (statistics.mean(r["step_s"] for r in table[(n, frac)][2]) for n in ("base", "ltd"))
        log(f"RESULT ltd_step_time_{int(round(frac * 100))} spry={tl:.4f} base={tb:.4f} ratio={tl / tb:.3f} unit=s_per_step")
    mm, bs = res[f"ltdminmax-100-lr{best:g}-s1"], res[f"base-100-lr{best:g}-s1"]
    log(f"control: random-LTD min = max vs baseline, seed 1: {'bit-identical' if mm['losses'] == bs['losses'] else 'DIFFERENT'} losses")
    ss = [res[f"base-samesteps-100-lr{best:g}-s{s}"]["val_loss"] for s in STRESS_SEEDS]
    log(f"RESULT val_loss_base_samesteps_100 spry={statistics.mean(ss):.4f} base_100={base100[0]:.4f} "
        f"ratio={statistics.mean(ss) / base100[0]:.4f} unit=nats (clltd_100 {table[('clltd', 1.0)][0]:.4f})")
    st_b = [res[f"base-100-lr{4 * best:g}-s{s}"]["val_loss"] for s in STRESS_SEEDS]
    st_c = [res[f"cl-100-lr{4 * best:g}-s{s}"]["val_loss"] for s in STRESS_SEEDS]
    log(f"RESULT val_loss_lr_stress_cl spry={statistics.mean(st_c):.4f} base={statistics.mean(st_b):.4f} "
        f"ratio={statistics.mean(st_c) / statistics.mean(st_b):.4f} unit=nats (peak LR {4 * best:g})")
    # curves of seed 1 at the 100% budget on the effective-token axis, and the schedules' effect on tokens
    dirs = [os.path.join(RUNS, f"{n}-100-lr{best:g}-s1") for n in ["base", "cl", "ltd", "clltd"]]
    sh([SPRY, "plot", "--x", "eff_tokens", "--metrics", "loss,lr", "--title",
        "training loss, seed 1, 100% budget: base, CL, random-LTD, CL+LTD", "--out", os.path.join(OUT, "loss.svg")] + dirs)
    sh([SPRY, "plot", "--x", "step", "--metrics", "tokens,eff_tokens", "--title",
        "tokens read and effective tokens per step (CL truncation, random-LTD)", "--out", os.path.join(OUT, "tokens.svg")] + dirs)
    log(f"plots: {OUT}/loss.svg, {OUT}/tokens.svg")
    log(f"== done in {wall / 60:.1f} min")


if __name__ == "__main__":
    main()
