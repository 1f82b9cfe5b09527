#!/usr/bin/env python3
"""Seeded random RWKV7 weights, bit-identical to engine/random_weights.cc.

Spec: docs/random-weights.md (this file implements it exactly; the C++ side implements the same).

Needs only numpy. Works with any python3 that has numpy (the golden scripts use Debian's
/usr/bin/python3, which has python3-numpy and python3-torch).

API
  make_weights(n_layer, n_embd, vocab, seed) -> OrderedDict[str, np.ndarray(float32)]
      BlinkDL names and shapes, in the order BlinkDL checkpoints list them; includes the unused
      layer-0 v0/v1/v2 tensors.
  lora_dims(n_embd) -> (Dw, Da, Dv, Dg)
  to_bf16_rounded(arr) -> float32 array whose values are bf16 (round to nearest even)
  to_fla(state_dict) -> OrderedDict with Hugging Face "fla" names (layer-0 v0/v1/v2 omitted)

Self-check:  python3 tools/golden/random_weights.py   (prints the values quoted in README.md)
"""
from collections import OrderedDict
import math
import sys

import numpy as np

_M64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_CHUNK = 1 << 22  # elements per vectorised chunk (bounds temporary memory)


def splitmix64_int(x):
    """Scalar splitmix64 on a Python int (reference, exact)."""
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & _M64
    return h


def _splitmix64_vec(z):
    """In-place-ish vectorised splitmix64 on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z ^= z >> np.uint64(30)
        z *= _MUL1
        z ^= z >> np.uint64(27)
        z *= _MUL2
        z ^= z >> np.uint64(31)
    return z


def uniform_tensor(name, shape, lo, hi, seed):
    """value_i = float32(lo + (hi - lo) * u_i), u_i = (splitmix64(key + i) >> 40) * 2^-24."""
    key = splitmix64_int((seed & _M64) ^ fnv1a64(name))
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    out = np.empty(n, dtype=np.float32)
    lo = float(lo)
    hi = float(hi)
    span = hi - lo  # float64, as in the spec
    key_u = np.uint64(key)
    scale = 2.0 ** -24
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        idx = np.arange(start, stop, dtype=np.uint64)
        with np.errstate(over="ignore"):
            z = idx + key_u  # wraps mod 2^64
        z = _splitmix64_vec(z)
        u = (z >> np.uint64(40)).astype(np.float64) * scale  # exact
        # two separate float64 operations (no fused multiply-add), then one rounding to float32
        v = u * span
        v += lo
        out[start:stop] = v.astype(np.float32)
    return out.reshape(shape)


def _round_half_even(x):
    return int(round(x))  # Python's round: half to even


def lora_dims(C):
    dw = max(32, _round_half_even(1.8 * math.sqrt(C) / 32) * 32)
    da = dw
    dv = max(32, _round_half_even(1.3 * math.sqrt(C) / 32) * 32)
    dg = max(32, _round_half_even(0.6 * C ** 0.8 / 32) * 32)
    return dw, da, dv, dg


def _s(n):
    return 1.0 / math.sqrt(n)


def weight_specs(n_layer, n_embd, vocab):
    """[(name, shape, lo, hi)] in BlinkDL checkpoint order."""
    L, C, V = n_layer, n_embd, vocab
    assert C % 64 == 0, "n_embd must be a multiple of 64"
    N = 64
    H = C // N
    F = 4 * C
    dw, da, dv, dg = lora_dims(C)
    specs = [("emb.weight", (V, C), -1.0, 1.0)]
    for i in range(L):
        b = f"blocks.{i}."
        a = b + "att."
        if i == 0:
            specs += [(b + "ln0.weight", (C,), 0.8, 1.2), (b + "ln0.bias", (C,), -0.1, 0.1)]
        specs += [
            (b + "ln1.weight", (C,), 0.8, 1.2), (b + "ln1.bias", (C,), -0.1, 0.1),
            (b + "ln2.weight", (C,), 0.8, 1.2), (b + "ln2.bias", (C,), -0.1, 0.1),
        ]
        for x in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            specs.append((a + x, (1, 1, C), 0.0, 1.0))
        specs += [
            (a + "w0", (1, 1, C), -2.0, 2.0),
            (a + "w1", (C, dw), -_s(C), _s(C)),
            (a + "w2", (dw, C), -_s(dw), _s(dw)),
            (a + "a0", (1, 1, C), -1.0, 1.0),
            (a + "a1", (C, da), -_s(C), _s(C)),
            (a + "a2", (da, C), -_s(da), _s(da)),
            (a + "v0", (1, 1, C), -1.0, 1.0),
            (a + "v1", (C, dv), -_s(C), _s(C)),
            (a + "v2", (dv, C), -_s(dv), _s(dv)),
            (a + "g1", (C, dg), -_s(C), _s(C)),
            (a + "g2", (dg, C), -_s(dg), _s(dg)),
            (a + "k_k", (1, 1, C), 0.5, 1.0),
            (a + "k_a", (1, 1, C), 0.5, 1.5),
            (a + "r_k", (H, N), -0.5, 0.5),
        ]
        for p in ("receptance", "key", "value", "output"):
            specs.append((a + p + ".weight", (C, C), -_s(C), _s(C)))
        specs += [
            (a + "ln_x.weight", (C,), 0.8, 1.2), (a + "ln_x.bias", (C,), -0.1, 0.1),
            (b + "ffn.x_k", (1, 1, C), 0.0, 1.0),
            (b + "ffn.key.weight", (F, C), -_s(C), _s(C)),
            (b + "ffn.value.weight", (C, F), -_s(F), _s(F)),
        ]
    specs += [
        ("ln_out.weight", (C,), 0.8, 1.2), ("ln_out.bias", (C,), -0.1, 0.1),
        ("head.weight", (V, C), -_s(C), _s(C)),
    ]
    return specs


def make_weights(n_layer, n_embd, vocab, seed):
    sd = OrderedDict()
    for name, shape, lo, hi in weight_specs(n_layer, n_embd, vocab):
        sd[name] = uniform_tensor(name, shape, lo, hi, seed)
    return sd


def to_bf16_rounded(arr):
    """Round float32 values to bf16 (round to nearest, ties to even); return them as float32."""
    a = np.ascontiguousarray(arr, dtype=np.float32)
    bits = a.view(np.uint32)
    with np.errstate(over="ignore"):
        rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    # NaNs stay NaNs (quiet); none occur in generated weights
    nan = np.isnan(a)
    if nan.any():
        rounded = np.where(nan, (bits | np.uint32(0x00400000)) & np.uint32(0xFFFF0000), rounded)
    return rounded.view(np.float32).reshape(a.shape)


def bf16_bits(arr):
    """uint16 bf16 bit patterns of an array whose values are already bf16-exact (or to be rounded)."""
    r = to_bf16_rounded(arr)
    return (r.view(np.uint32) >> np.uint32(16)).astype(np.uint16)


def to_fla(state_dict):
    """BlinkDL names -> Hugging Face "fla" names (see tools/golden/README.md for the table)."""
    out = OrderedDict()
    for name, t in state_dict.items():
        t = np.asarray(t)
        if name == "emb.weight":
            out["model.embeddings.weight"] = t
            continue
        if name.startswith("ln_out."):
            out["model.norm." + name[len("ln_out."):]] = t
            continue
        if name == "head.weight":
            out["lm_head.weight"] = t
            continue
        assert name.startswith("blocks."), name
        _, idx, rest = name.split(".", 2)
        pre = f"model.layers.{idx}."
        if rest.startswith(("ln0.", "ln1.", "ln2.")):
            ln, pw = rest.split(".", 1)
            out[pre + {"ln0": "pre_norm", "ln1": "attn_norm", "ln2": "ffn_norm"}[ln] + "." + pw] = t
        elif rest.startswith("att."):
            r = rest[len("att."):]
            ap = pre + "attn."
            if idx == "0" and r in ("v0", "v1", "v2"):
                continue  # unused in layer 0; fla checkpoints do not have them
            if r in ("receptance.weight", "key.weight", "value.weight", "output.weight"):
                p = r.split(".")[0]
                out[ap + {"receptance": "r_proj", "key": "k_proj", "value": "v_proj",
                          "output": "o_proj"}[p] + ".weight"] = t
            elif r.startswith("ln_x."):
                out[ap + "g_norm." + r[len("ln_x."):]] = t
            elif len(r) == 2 and r[0] in "wavg" and r[1] in "012":
                x, k = r[0], r[1]
                if k == "1":
                    out[ap + f"{x}_lora.lora.0.weight"] = np.ascontiguousarray(t.T)
                elif k == "2":
                    out[ap + f"{x}_lora.lora.2.weight"] = np.ascontiguousarray(t.T)
                else:
                    out[ap + f"{x}_lora.lora.2.bias"] = np.ascontiguousarray(t.reshape(-1))
            elif r in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
                out[ap + r] = t.reshape(1, 1, -1)
            elif r in ("k_k", "k_a"):
                out[ap + r] = np.ascontiguousarray(t.reshape(-1))
            elif r == "r_k":
                out[ap + r] = t
            else:
                raise KeyError(name)
        elif rest.startswith("ffn."):
            out[pre + rest] = t
        else:
            raise KeyError(name)
    return out


def _self_check():
    sd = make_weights(2, 128, 1024, 1)
    # scalar cross-check of the vectorised generator against the exact integer reference
    for name in ("emb.weight", "blocks.0.att.w1", "head.weight"):
        lo, hi = {"emb.weight": (-1.0, 1.0)}.get(name, (-_s(128), _s(128)))
        key = splitmix64_int(1 ^ fnv1a64(name))
        flat = sd[name].reshape(-1)
        for i in (0, 1, 2, 3, flat.size - 1):
            u = (splitmix64_int((key + i) & _M64) >> 40) * 2.0 ** -24
            assert np.float32(lo + (hi - lo) * u) == flat[i], (name, i)
    print("seed 1, L2 C128 V1024")
    print("lora dims C128:", lora_dims(128), " C768:", lora_dims(768), " C1024:", lora_dims(1024))
    for name in ("emb.weight", "blocks.0.att.w1"):
        v = sd[name].reshape(-1)[:4]
        print(f"{name}[:4] =", " ".join(repr(float(x)) for x in v),
              "  bits:", " ".join(f"0x{int(b):08x}" for b in v.view(np.uint32)))
        vb = to_bf16_rounded(v)
        print("  bf16-rounded =", " ".join(repr(float(x)) for x in vb),
              "  bits:", " ".join(f"0x{int(b):04x}" for b in bf16_bits(v)))
    print("fnv1a64('emb.weight') = 0x%016x" % fnv1a64("emb.weight"))
    print("key('emb.weight', seed 1) = 0x%016x" % splitmix64_int(1 ^ fnv1a64("emb.weight")))
    tot = sum(float(np.sum(t, dtype=np.float64)) for t in sd.values())
    print("sum of all tensors (float64) = %.17g" % tot, " tensors:", len(sd),
          " values:", sum(t.size for t in sd.values()))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--time":
        import time
        t0 = time.time()
        w = make_weights(12, 768, 65536, 2024)
        print("0.1B: %d values in %.1f s" % (sum(t.size for t in w.values()), time.time() - t0))
    else:
        _self_check()
