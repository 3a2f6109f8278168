#!/usr/bin/python3
"""infer_pytorch.py - the PyTorch half of the GPT-2 inference-throughput benchmark.

    OMP_WAIT_POLICY=passive /usr/bin/python3 bench/infer_pytorch.py \
        --model gpt2-124m --precision fp32 --threads 2 --pp 256 --tg 128

Runs the GPT-2 architecture of scripts/ref/gen_models.py (HF layout: wte, wpe, per layer
ln_1, c_attn/c_proj as Conv1D [in, out], ln_2, mlp c_fc/c_proj with tanh GELU, ln_f, tied
LM head; attention as matmul + causal mask + softmax, since torch 1.13 has no
F.scaled_dot_product_attention) with random weights (matrices/embeddings N(0, 0.02),
biases 0, LayerNorm weights 1), batch 1, eval mode, under torch.inference_mode(), with a
key/value cache as HF generate uses one. The cache is preallocated per run ([1, heads,
length, head_dim] keys and values per layer, written in place; attention reads the filled
prefix), so no torch.cat per step. Two measurements, llama-bench style:

  pp<N>: prefill of an N-token random prompt into an empty cache: every layer's keys and
         values for all N positions, and the logits of the last position only (ln_f and
         the LM head on that one row). Timed from cache creation to the logits; 1 untimed
         warm-up run, then --pp-runs timed runs, each on a fresh cache;
         pp<N>_tokens_per_s = N / median seconds.
  tg<M>: greedy decoding: a 1-token prompt is run into a fresh cache (untimed) and its
         argmax taken, then M timed decode steps, each feeding the previous token (one
         position, attention over all cached keys/values) and taking the argmax of its
         logits (sampling is inside the timed region). 1 untimed warm-up run, then
         --tg-runs timed runs; tg<M>_tokens_per_s = M / median seconds.

Prints exactly one line on stdout:

    PYTORCH model=<m> precision=<p> pp<N>_tokens_per_s=<x> tg<M>_tokens_per_s=<y> threads=<t> omp_wait_policy=<env> peak_rss_mb=<z>

peak_rss_mb = ru_maxrss / 1024 (the whole process: the interpreter and libtorch, the
weights, the caches and the activations).
bf16 = weights and activations in torch.bfloat16 (model.to(torch.bfloat16): LayerNorm,
softmax, GELU and the matmuls all run in bf16, the usual way to run bf16 inference on
CPU); the model is built with bf16 as the default dtype, so the float32 copy of the
weights never exists and does not inflate peak_rss_mb (as when loading a checkpoint with
torch_dtype=bfloat16). fp32 = everything float32.
OMP_WAIT_POLICY is read by libgomp at start-up, so it must be set in the environment.
"""

import argparse
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "ref"))
from gen_models import GPT2LMHeadModel  # noqa: E402

MODELS = {
    "gpt-mini":  dict(n_layer=6, n_head=6, n_embd=384),
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768),
}


class KVCache:
    """Preallocated per-layer keys/values, [1, heads, capacity, head_dim]."""

    def __init__(self, cfg, capacity, dtype):
        h = cfg["n_head"]
        d = cfg["n_embd"] // h
        self.k = [torch.empty(1, h, capacity, d, dtype=dtype) for _ in range(cfg["n_layer"])]
        self.v = [torch.empty(1, h, capacity, d, dtype=dtype) for _ in range(cfg["n_layer"])]


def attn_cached(attn, x, k_cache, v_cache, pos):
    """GPT2Attention.forward with a cache: x holds positions pos .. pos+t-1."""
    b, t, C = x.shape
    h = attn.n_head
    d = C // h
    q, k, v = attn.c_attn(x).split(C, dim=2)
    q = q.view(b, t, h, d).transpose(1, 2)
    k_cache[:, :, pos:pos + t].copy_(k.view(b, t, h, d).transpose(1, 2))
    v_cache[:, :, pos:pos + t].copy_(v.view(b, t, h, d).transpose(1, 2))
    L = pos + t
    k_all = k_cache[:, :, :L]
    v_all = v_cache[:, :, :L]
    att = torch.matmul(q, k_all.transpose(-1, -2))
    att = att / torch.full([], d ** 0.5, dtype=att.dtype)
    if t > 1:  # a single new token sees every cached position: no mask needed
        att = att.masked_fill(~attn.causal[pos:L, :L], torch.finfo(att.dtype).min)
    att = F.softmax(att, dim=-1)
    y = torch.matmul(att, v_all).transpose(1, 2).reshape(b, t, C)
    return attn.c_proj(y)


def forward_cached(model, idx, cache, pos):
    """Logits [1, V] of the last position of idx, which holds positions pos .. pos+t-1."""
    tr = model.transformer
    t = idx.size(1)
    x = tr.wte(idx) + tr.wpe(torch.arange(pos, pos + t))
    for i, blk in enumerate(tr.h):
        x = x + attn_cached(blk.attn, blk.ln_1(x), cache.k[i], cache.v[i], pos)
        x = x + blk.mlp(blk.ln_2(x))
    x = tr.ln_f(x[:, -1])
    return F.linear(x, tr.wte.weight)   # tied lm_head


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2-124m", choices=sorted(MODELS))
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pp", type=int, default=256, help="prompt tokens of the prefill test")
    ap.add_argument("--tg", type=int, default=128, help="decode steps of the generation test")
    ap.add_argument("--pp-runs", type=int, default=5)
    ap.add_argument("--tg-runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true", help="per-run times on stderr")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    m = MODELS[a.model]
    cfg = dict(vocab_size=50257, n_positions=1024, n_embd=m["n_embd"],
               n_layer=m["n_layer"], n_head=m["n_head"], layer_norm_epsilon=1e-5)
    V = cfg["vocab_size"]
    if a.pp > cfg["n_positions"] or a.tg + 1 > cfg["n_positions"]:
        sys.exit(f"--pp and --tg + 1 must be <= n_positions ({cfg['n_positions']})")
    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32

    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)      # build the weights directly in the target dtype
    model = GPT2LMHeadModel(cfg)
    torch.set_default_dtype(prev)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    model = model.to(dtype)             # a no-op here; bf16 inference as usually written
    model.eval()

    def log(msg):
        if a.verbose:
            print(msg, file=sys.stderr)

    with torch.inference_mode():
        prompt = torch.randint(0, V, (1, a.pp))

        def prefill():
            t0 = time.perf_counter()
            cache = KVCache(cfg, a.pp, dtype)
            logits = forward_cached(model, prompt, cache, 0)
            dt = time.perf_counter() - t0
            assert logits.shape == (1, V)
            return dt

        log(f"pp warmup {prefill():.3f}s")
        pp_times = []
        for i in range(a.pp_runs):
            pp_times.append(prefill())
            log(f"pp run {i} {pp_times[-1]:.3f}s")

        first = torch.randint(0, V, (1, 1))

        def generate():
            cache = KVCache(cfg, 1 + a.tg, dtype)
            nxt = forward_cached(model, first, cache, 0).argmax(-1, keepdim=True)  # [1, 1]
            t0 = time.perf_counter()
            for i in range(a.tg):
                nxt = forward_cached(model, nxt, cache, 1 + i).argmax(-1, keepdim=True)
            dt = time.perf_counter() - t0
            return dt, nxt.item()

        dt, tok = generate()
        log(f"tg warmup {dt:.3f}s (last token {tok})")
        tg_times = []
        for i in range(a.tg_runs):
            dt, tok = generate()
            tg_times.append(dt)
            log(f"tg run {i} {dt:.3f}s (last token {tok})")

    pp_tps = a.pp / statistics.median(pp_times)
    tg_tps = a.tg / statistics.median(tg_times)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"PYTORCH model={a.model} precision={a.precision} "
          f"pp{a.pp}_tokens_per_s={pp_tps:.1f} tg{a.tg}_tokens_per_s={tg_tps:.1f} "
          f"threads={a.threads} omp_wait_policy={os.environ.get('OMP_WAIT_POLICY', 'unset')} "
          f"peak_rss_mb={rss_mb:.1f}")


if __name__ == "__main__":
    main()
