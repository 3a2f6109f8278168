#!/usr/bin/python3
"""gen_quant.py - ggml Q8_0 / Q4_0 reference bytes for tests/test_quant.c.

    /usr/bin/python3 scripts/ref/gen_quant.py --out DIR

An independent implementation of ggml's quantize_row_q8_0_ref and quantize_row_q4_0_ref
(ggml/src/ggml-quants.c) in numpy float32 arithmetic, one IEEE operation at a time in
ggml's order (so no fused multiply-add can sneak in), with fp16 scales rounded to nearest
even by numpy's float32 -> float16 cast:

    Q8_0  amax = max |x|; d = amax / 127; id = d ? 1/d : 0; q = roundf(x * id)
          (roundf: halves away from zero); block = fp16 d, int8 q[32]        (34 bytes)
    Q4_0  max = the first x of largest |x| (strict <, so +0.0 when all are zero);
          d = max / -8; id = d ? 1/d : 0; q = min(15, trunc(x * id + 8.5));
          block = fp16 d, u8 qs[16] with qs[j] = q[j] | q[j + 16] << 4      (18 bytes)

Writes DIR/quant.safetensors: for each case "<name>/x" (F32, the input) and "<name>/q8",
"<name>/q4" (I32, one block byte per element, little-endian fp16 first). Metadata
"n_cases" counts the cases. Cases: zeros (with -0.0), one huge value per block,
negative maxima, +-ties of the largest magnitude, exact halves, fp16 overflow and
subnormal scales, products that round onto a rounding boundary (an FMA would land on the
other side), and random normal data at several scales.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

F = np.float32
QK = 32


def f16_bits(d):
    """float32 scalar -> uint16 IEEE half bits, round to nearest even (inf on overflow)."""
    with np.errstate(over="ignore"):
        return int(np.array([d], dtype=np.float32).astype(np.float16).view(np.uint16)[0])


def round_away(p):
    """C roundf on a float32 array: nearest integer, halves away from zero (exact)."""
    t = np.trunc(p)
    r = p - t  # exact
    return t + (r >= F(0.5)).astype(np.float32) - (r <= F(-0.5)).astype(np.float32)


def q8_0(x):
    out = bytearray()
    for b in range(len(x) // QK):
        xb = x[b * QK:(b + 1) * QK]
        amax = F(0.0)
        for v in xb:
            amax = max(amax, F(abs(v)))
        d = F(amax / F(127))
        idv = F(F(1.0) / d) if d != 0 else F(0.0)
        q = round_away((xb * idv).astype(np.float32)).astype(np.int64)
        assert np.all(np.abs(q) <= 127)
        out += f16_bits(d).to_bytes(2, "little")
        out += bytes(int(v) & 0xFF for v in q)
    return out


def q4_0(x):
    out = bytearray()
    for b in range(len(x) // QK):
        xb = x[b * QK:(b + 1) * QK]
        amax, mx = F(0.0), F(0.0)
        for v in xb:
            if amax < abs(v):
                amax, mx = F(abs(v)), F(v)
        d = F(mx / F(-8))
        idv = F(F(1.0) / d) if d != 0 else F(0.0)
        p = (xb * idv).astype(np.float32)
        v = (p + F(8.5)).astype(np.float32)
        q = np.minimum(15, np.trunc(v).astype(np.int64))
        assert np.all(q >= 0)
        out += f16_bits(d).to_bytes(2, "little")
        out += bytes(int(q[j] | (q[j + 16] << 4)) for j in range(16))
    return out


def boundary_traps(rng, n_blocks, q4):
    """Blocks whose x * id rounds (in float32) exactly onto a rounding boundary although the exact
    product lies beside it, chosen so that a fused multiply-add gives another quant: roundf of
    k + 0.5 for Q8_0 (a frac taken from the exact product is below one half), the truncation of
    x * id + 8.5 at a small integer for Q4_0 (the fused sum stays below the integer)."""
    blocks = []
    while len(blocks) < n_blocks:
        amax = F(rng.uniform(0.5, 4.0))
        xb = (rng.uniform(-1, 1, QK) * 0.9 * amax).astype(np.float32)
        xb[0] = -amax if q4 else amax
        d = F(xb[0] / F(-8)) if q4 else F(amax / F(127))
        idv = F(F(1.0) / d)
        found = 0
        for j in range(1, QK):
            t = F(rng.integers(-7, -4) + 0.5) if q4 else F(rng.integers(-120, 120) + 0.5)
            cand = F(t / idv)
            for _ in range(8):
                cand = np.nextafter(cand, F(np.inf), dtype=np.float32)
            for _ in range(16):
                cand = np.nextafter(cand, F(-np.inf), dtype=np.float32)
                p = F(cand * idv)
                exact = float(cand) * float(idv)  # exact: 24 x 24 bits fit a double
                if p != t or exact == float(t) or abs(cand) >= amax:
                    continue
                if q4:
                    plain = np.trunc(F(p + F(8.5)))
                    fused = np.trunc(F(exact + 8.5))
                else:
                    plain = round_away(np.array([p], np.float32))[0]
                    tr = np.trunc(p)
                    fr = exact - float(tr)
                    fused = tr + (1 if fr >= 0.5 else 0) - (1 if fr <= -0.5 else 0)
                if plain != fused:
                    xb[j] = cand
                    found += 1
                    break
        if found >= 4:
            blocks.append(xb)
    return np.concatenate(blocks)


def make_cases():
    rng = np.random.default_rng(20240607)
    cases = {}
    z = np.zeros(2 * QK, np.float32)
    z[3] = F(-0.0)
    z[40] = F(-0.0)
    cases["zeros"] = z

    h = (rng.standard_normal(3 * QK) * 1e-3).astype(np.float32)
    h[5], h[QK + 31], h[2 * QK + 16] = F(3.0e4), F(-1.25e3), F(7.0)
    cases["huge"] = h

    n = rng.uniform(-1, 1, 2 * QK).astype(np.float32)
    n[9], n[QK + 20] = F(-5.5), F(-0.75)  # largest magnitude negative: d > 0 for Q4_0
    cases["negmax"] = n

    t = rng.uniform(-1, 1, 2 * QK).astype(np.float32)
    t[2], t[7] = F(-3.0), F(3.0)  # tie, negative first: Q4_0 keeps -3
    t[QK + 1], t[QK + 30] = F(2.0), F(-2.0)  # tie, positive first: Q4_0 keeps +2
    cases["ties"] = t

    # d = 1 exactly (amax 127 for Q8_0, max -8 for Q4_0): x * id are the inputs themselves
    hq8 = np.array([127, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -126.5, 0.49999997,
                    -0.49999997, 3.5000002, 63.5, -63.5, 100.5, 0.0] + [k + 0.5 for k in range(16)],
                   np.float32)
    hq4 = np.array([-8, 0.5, -0.5, 1.5, -1.5, 6.5, -6.5, 7.5, 7.9999995, -7.5, 0.49999997,
                    -0.49999997, 3.5, -3.5, 5.5, -5.5] + [k - 7.5 for k in range(16)], np.float32)
    cases["halves_q8"] = hq8
    cases["halves_q4"] = hq4

    o = rng.standard_normal(2 * QK).astype(np.float32)
    o[0] = F(1.0e7)  # Q8_0 d = 78740 -> fp16 inf; Q4_0 d = -1.25e6 -> -inf
    cases["f16_overflow"] = o

    s = (rng.standard_normal(2 * QK) * 1e-5).astype(np.float32)  # fp16 subnormal scales
    s[QK:] = (rng.standard_normal(QK) * 1e-7).astype(np.float32)  # scale flushes to 0 in fp16
    cases["f16_subnormal"] = s

    cases["trap_q8"] = boundary_traps(rng, 4, q4=False)
    cases["trap_q4"] = boundary_traps(rng, 4, q4=True)

    for name, scale in (("rand_small", 1e-3), ("rand_unit", 1.0), ("rand_big", 300.0)):
        cases[name] = (rng.standard_normal(64 * QK) * scale).astype(np.float32)
    u = rng.uniform(-2, 2, 32 * QK).astype(np.float32)
    cases["rand_uniform"] = u
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tensors = {}
    cases = make_cases()
    with np.errstate(over="ignore"):
        for name, x in cases.items():
            assert x.dtype == np.float32 and len(x) % QK == 0
            tensors[name + "/x"] = x
            tensors[name + "/q8"] = np.frombuffer(bytes(q8_0(x)), np.uint8).astype(np.int32)
            tensors[name + "/q4"] = np.frombuffer(bytes(q4_0(x)), np.uint8).astype(np.int32)
    path = os.path.join(args.out, "quant.safetensors")
    st.save(path, tensors, {"n_cases": len(cases), "generator": "scripts/ref/gen_quant.py"})
    print(f"wrote {path}: {len(cases)} cases")


if __name__ == "__main__":
    main()
