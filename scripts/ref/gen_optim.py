#!/usr/bin/python3
"""gen_optim.py - optimizer traces for tests/test_optim.c.

    /usr/bin/python3 scripts/ref/gen_optim.py --out DIR

Two parameters, a (5, 3) matrix "w" (weight decay applies) and a (3,) bias "b" (no
weight decay), start from seeded float32 values; six seeded float32 gradients are
set by hand (p.grad = ...) before each step. Everything is computed in float64 and
rounded once to float32 when stored, in DIR/optim.safetensors:

    init.w, init.b                 starting values
    grad.step{1..6}.w / .b         the gradient given before step k
    {opt}.step{1..6}.w / .b        the parameters after step k, for opt in
        adamw         AdamW lr 1e-2, betas (0.9, 0.95), eps 1e-8, weight_decay 0.1 on w
        adam          Adam, same, weight_decay 0.05 on w (L2 added to the gradient)
        sgd           SGD lr 1e-2, momentum 0.9, dampening 0, weight_decay 0.01 on w
        sgd_nesterov  the same with nesterov=True
    clip.grad.w / .b, clip.norm, clip.clipped.w / .b
                                   clip_grad_norm_(max_norm=1.0) of a gradient set whose
                                   norm exceeds 1 (the norm returned, the clipped grads)
    clip_small.*                   the same for a set with norm < 1 (left unchanged)

The hyperparameters are repeated in the file's metadata; test_optim.c hard-codes them.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

SEED = 4321
STEPS = 6
LR = 1e-2
BETAS = (0.9, 0.95)
EPS = 1e-8
ADAMW_WD = 0.1
ADAM_WD = 0.05
SGD_WD = 0.01
MOMENTUM = 0.9
CLIP = 1.0
SHAPES = {"w": (5, 3), "b": (3,)}


def f32(t):
    """Rounds to float32 and back to float64: the exact values spry starts from."""
    return t.to(torch.float32).to(torch.float64)


def make_inputs():
    g = torch.Generator().manual_seed(SEED)
    init = {k: f32(torch.randn(s, generator=g, dtype=torch.float64)) for k, s in SHAPES.items()}
    grads = []
    for k in range(STEPS):
        scale = 0.3 + 0.5 * k  # gradients of changing magnitude
        grads.append({n: f32(scale * torch.randn(s, generator=g, dtype=torch.float64))
                      for n, s in SHAPES.items()})
    return init, grads, g


def run(name, make_opt, init, grads, out):
    params = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
    opt = make_opt(params)
    for k in range(STEPS):
        for n, p in params.items():
            p.grad = grads[k][n].clone()
        opt.step()
        for n, p in params.items():
            out[f"{name}.step{k + 1}.{n}"] = p.detach().to(torch.float32)


def clip_case(prefix, g, scale, out):
    grads = {n: f32(scale * torch.randn(s, generator=g, dtype=torch.float64))
             for n, s in SHAPES.items()}
    params = {n: torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for n, s in SHAPES.items()}
    for n, p in params.items():
        p.grad = grads[n].clone()
        out[f"{prefix}.grad.{n}"] = grads[n].to(torch.float32)
    norm = torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm=CLIP)
    out[f"{prefix}.norm"] = norm.reshape(1).to(torch.float32)
    for n, p in params.items():
        out[f"{prefix}.clipped.{n}"] = p.grad.to(torch.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory")
    args = ap.parse_args()
    torch.set_num_threads(1)

    init, grads, g = make_inputs()
    out = {}
    for n in SHAPES:
        out[f"init.{n}"] = init[n].to(torch.float32)
        for k in range(STEPS):
            out[f"grad.step{k + 1}.{n}"] = grads[k][n].to(torch.float32)

    def groups(p, wd):
        return [{"params": [p["w"]], "weight_decay": wd}, {"params": [p["b"]], "weight_decay": 0.0}]

    run("adamw", lambda p: torch.optim.AdamW(groups(p, ADAMW_WD), lr=LR, betas=BETAS, eps=EPS),
        init, grads, out)
    run("adam", lambda p: torch.optim.Adam(groups(p, ADAM_WD), lr=LR, betas=BETAS, eps=EPS),
        init, grads, out)
    run("sgd", lambda p: torch.optim.SGD(groups(p, SGD_WD), lr=LR, momentum=MOMENTUM,
                                         dampening=0.0), init, grads, out)
    run("sgd_nesterov", lambda p: torch.optim.SGD(groups(p, SGD_WD), lr=LR, momentum=MOMENTUM,
                                                  dampening=0.0, nesterov=True),
        init, grads, out)
    clip_case("clip", g, 1.0, out)        # norm ~ 4: scaled down
    clip_case("clip_small", g, 0.1, out)  # norm ~ 0.4: untouched

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "optim.safetensors")
    tmp = f"{path}.tmp.{os.getpid()}"
    meta = dict(seed=SEED, steps=STEPS, lr=LR, betas=BETAS, eps=EPS, adamw_wd=ADAMW_WD,
                adam_wd=ADAM_WD, sgd_wd=SGD_WD, momentum=MOMENTUM, clip=CLIP,
                torch=torch.__version__)
    st.save(tmp, out, meta)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees a partial file
    print(f"wrote {path} ({len(out)} tensors)")


if __name__ == "__main__":
    main()
