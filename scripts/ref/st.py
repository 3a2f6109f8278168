"""st.py - a minimal safetensors writer and reader (pure python + numpy).

File layout (https://github.com/huggingface/safetensors):
    u64 little-endian N | N bytes of JSON header | data
The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
(offsets relative to the start of the data) and may hold "__metadata__", a map of
string to string. The header is padded with spaces to a multiple of 8 bytes, so
the data starts 8-byte aligned. Tensors are written in name order, contiguous,
little-endian, row-major.

Supported dtypes: F32, I32, I64, BF16.

    save(path, tensors, metadata=None)
        tensors: name -> numpy array (float32/int32/int64), torch tensor
        (float32/int32/int64/bfloat16) or ("BF16", uint16 numpy array of raw bits).
        Other dtypes (float64 included) are refused: cast on purpose.
    load(path, bf16="f32") -> (tensors, metadata)
        BF16 tensors come back widened to float32 (exact), or as raw uint16 bits
        with bf16="raw".

Command line: python3 st.py FILE...  lists each file's header.
"""

import json
import struct
import sys

import numpy as np

_NP = {"F32": np.dtype("<f4"), "I32": np.dtype("<i4"), "I64": np.dtype("<i8"),
       "BF16": np.dtype("<u2")}
_FROM_NP = {np.dtype("float32"): "F32", np.dtype("int32"): "I32",
            np.dtype("int64"): "I64"}


def bf16_bits(x):
    """float32 array -> uint16 bf16 bits, round to nearest even (NaN kept quiet)."""
    u = np.ascontiguousarray(x, dtype="<f4").view("<u4").astype(np.uint64)
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    r = np.where(nan, (u >> 16) | 0x40, r)
    return r.astype("<u2")


def _to_entry(name, t):
    if isinstance(t, tuple):
        tag, arr = t
        if tag != "BF16":
            raise TypeError(f"{name}: tagged tuple must be ('BF16', uint16 array)")
        arr = np.ascontiguousarray(arr, dtype="<u2")
        return "BF16", arr.shape, arr.tobytes()
    if type(t).__module__.startswith("torch"):
        import torch
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            arr = t.view(torch.int16).numpy().view("<u2")
            return "BF16", arr.shape, arr.tobytes()
        t = t.numpy()
    arr = np.asarray(t)
    tag = _FROM_NP.get(arr.dtype)
    if tag is None:
        raise TypeError(f"{name}: dtype {arr.dtype} not supported (F32/I32/I64/BF16)")
    arr = np.ascontiguousarray(arr, dtype=_NP[tag])
    return tag, arr.shape, arr.tobytes()


def save(path, tensors, metadata=None):
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    off = 0
    for name in sorted(tensors):
        if name == "__metadata__":
            raise ValueError("reserved name __metadata__")
        tag, shape, data = _to_entry(name, tensors[name])
        header[name] = {"dtype": tag, "shape": [int(s) for s in shape],
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n).decode("utf-8")), 8 + n


def load(path, bf16="f32"):
    header, start = read_header(path)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    end_max = 0
    for name, e in header.items():
        tag = e["dtype"]
        if tag not in _NP:
            raise ValueError(f"{name}: unsupported dtype {tag}")
        b, en = e["data_offsets"]
        shape = tuple(e["shape"])
        n = int(np.prod(shape, dtype=np.int64))
        if en - b != n * _NP[tag].itemsize or en > len(data):
            raise ValueError(f"{name}: bad data_offsets {e['data_offsets']}")
        end_max = max(end_max, en)
        arr = np.frombuffer(data[b:en], dtype=_NP[tag]).reshape(shape)
        if tag == "BF16" and bf16 == "f32":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.copy()
    if end_max != len(data):
        raise ValueError(f"{path}: {len(data) - end_max} trailing bytes")
    return out, meta


def _selftest():
    import os
    import tempfile
    rng = np.random.default_rng(0)
    t = {"a": rng.standard_normal((3, 5)).astype(np.float32),
         "b": np.arange(7, dtype=np.int32),
         "c": np.arange(6, dtype=np.int64).reshape(2, 3),
         "d": ("BF16", bf16_bits(np.array([1.0, -2.5, 3.14159], np.float32))),
         "e": np.zeros((0, 4), np.float32)}
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.safetensors")
        save(p, t, {"k": "v"})
        got, meta = load(p)
        assert meta == {"k": "v"}
        assert (got["a"] == t["a"]).all() and (got["b"] == t["b"]).all()
        assert (got["c"] == t["c"]).all() and got["e"].shape == (0, 4)
        assert got["d"].tolist() == [1.0, -2.5, 3.140625], got["d"]
        _, start = read_header(p)
        assert start % 8 == 0
    print("st.py selftest ok")


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "--selftest":
        _selftest()
        sys.exit(0)
    for p in sys.argv[1:]:
        header, _ = read_header(p)
        meta = header.pop("__metadata__", None)
        print(p)
        if meta:
            for k in sorted(meta):
                print(f"  # {k} = {meta[k]}")
        for name in sorted(header):
            e = header[name]
            print(f"  {name:48s} {e['dtype']:5s} {tuple(e['shape'])}")
