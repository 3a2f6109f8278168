#!/usr/bin/python3
"""train_pytorch.py - the PyTorch half of the GPT-2 training-throughput benchmark.

    OMP_WAIT_POLICY=passive /usr/bin/python3 bench/train_pytorch.py \
        --model gpt-mini --precision fp32 --steps 10 --threads 2

Trains the GPT-2 architecture of scripts/ref/gen_models.py (HF layout, Conv1D weights,
attention as matmul + causal mask + softmax as nanoGPT writes it: torch 1.13 has no
F.scaled_dot_product_attention) on random token batches with AdamW (lr 3e-4, weight
decay 0.1 on matrices/embeddings only) and global-norm clipping 1.0. Runs --warmup
untimed steps, then --steps timed ones, and prints exactly one line on stdout:

    PYTORCH model=<m> precision=<p> tokens_per_s=<x> peak_rss_mb=<y> threads=<t> omp_wait_policy=<env>

tokens_per_s = B*T*steps / seconds of the timed steps; peak_rss_mb = ru_maxrss / 1024.
bf16 = torch.cpu.amp.autocast(dtype=torch.bfloat16) around forward + loss; master
weights, gradients and optimizer state stay fp32 (the usual mixed-precision recipe).
OMP_WAIT_POLICY is read by libgomp at start-up, so it must be set in the environment.
"""

import argparse
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "ref"))
from gen_models import GPT2LMHeadModel, param_groups  # noqa: E402

MODELS = {
    "gpt-mini":  dict(n_layer=6, n_head=6, n_embd=384, T=256, B=8),
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768, T=256, B=4),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt-mini", choices=sorted(MODELS))
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true", help="per-step times on stderr")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    m = MODELS[a.model]
    cfg = dict(vocab_size=50257, n_positions=1024, n_embd=m["n_embd"],
               n_layer=m["n_layer"], n_head=m["n_head"], layer_norm_epsilon=1e-5)
    B, T = m["B"], m["T"]
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=3e-4)  # betas (0.9, 0.999), eps 1e-8
    V = cfg["vocab_size"]

    def step():
        x = torch.randint(0, V, (B, T + 1))
        inp, tgt = x[:, :T], x[:, 1:]
        if a.precision == "bf16":
            with torch.cpu.amp.autocast(dtype=torch.bfloat16):
                logits = model(inp)
                loss = F.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1))
        else:
            logits = model(inp)
            loss = F.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    for i in range(a.warmup):
        t0 = time.perf_counter()
        l = step()
        if a.verbose:
            print(f"warmup {i} loss {l:.4f} {time.perf_counter() - t0:.3f}s", file=sys.stderr)
    t_start = time.perf_counter()
    for i in range(a.steps):
        t0 = time.perf_counter()
        l = step()
        if a.verbose:
            print(f"step {i} loss {l:.4f} {time.perf_counter() - t0:.3f}s", file=sys.stderr)
    dt = time.perf_counter() - t_start
    tps = B * T * a.steps / dt
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"PYTORCH model={a.model} precision={a.precision} tokens_per_s={tps:.1f} "
          f"peak_rss_mb={rss_mb:.1f} threads={a.threads} "
          f"omp_wait_policy={os.environ.get('OMP_WAIT_POLICY', 'unset')}")


if __name__ == "__main__":
    main()
