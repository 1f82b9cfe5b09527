#!/usr/bin/python3
"""Generate RWKV7 golden fixtures (tests/golden/rwkv7/<config>/) with the official `rwkv` package.

Environment (what was used; see tools/golden/README.md):
  * Debian 12's /usr/bin/python3 (3.11) with apt packages python3-torch (1.13, CPU) and python3-numpy
    (the pyenv python3 on PATH lacks torch; always run this with /usr/bin/python3).
  * The official package from PyPI, without dependencies, plus safetensors:
        /usr/bin/python3 -m pip install --break-system-packages --no-deps rwkv safetensors
    (used: rwkv 0.8.32, safetensors 0.8.0). Without pip: `pip download rwkv --no-deps -d DIR`,
    unzip the wheel and pass --rwkv-path DIR (it is put at the front of sys.path).
  * RWKV_V7_ON=1 selects class RWKV_x070; RWKV_JIT_ON=1; RWKV_CUDA_ON=0.
  * rwkv 0.8.x calls torch.load(..., mmap=True), which torch 1.13 lacks: torch.load is wrapped to
    drop the `mmap` keyword.

Usage:
  /usr/bin/python3 tools/golden/gen_rwkv7_golden.py                 # all configs
  /usr/bin/python3 tools/golden/gen_rwkv7_golden.py micro tiny_f32   # a subset
  options: --out tests/golden/rwkv7  --rwkv-path DIR  --threads N

Reference procedure per config: the seeded weights (tools/golden/random_weights.py; bf16 configs
rounded to bf16 and stored as fp32) are torch.save'd to a temporary .pth, loaded with
RWKV(model=<path without .pth>, strategy='cpu fp32'); `out, state = model.forward(prompt, None)`
(forward_seq over the 32-token prompt), then `out, state = model.forward([tok], state)` per decode
token. Logits after the prompt and after each decode token are written as raw little-endian
float32; the state after all tokens as "full" (micro/tiny) or "summary" (m01b). As a self-check the
same tokens are also run one at a time from a zero state, and the largest relative difference of the
logits is recorded (must be < 1e-5); and an independent float64 numpy implementation of the
documented RWKV7 formulas (numpy_reference below) must agree with the official logits to < 1e-5
relative (max |diff| / max |logit|).
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import random_weights as rw  # noqa: E402

CONFIGS = {
    # name: (n_layer, n_embd, vocab, seed, dtype, state_layout, write_model_files)
    "micro": (2, 64, 256, 7, "bf16", "full", True),
    "tiny_f32": (2, 128, 1024, 1, "f32", "full", False),
    "tiny_bf16": (2, 128, 1024, 1, "bf16", "full", False),
    "m01b_f32": (12, 768, 65536, 2024, "f32", "summary", False),
    "m01b_bf16": (12, 768, 65536, 2024, "bf16", "summary", False),
}
N_PROMPT = 32
N_DECODE = 3


def setup_rwkv(rwkv_path=None):
    os.environ["RWKV_V7_ON"] = "1"
    os.environ["RWKV_JIT_ON"] = "1"
    os.environ["RWKV_CUDA_ON"] = "0"
    if rwkv_path:
        sys.path.insert(0, rwkv_path)
    import torch
    orig_load = torch.load

    def load_no_mmap(*args, **kwargs):
        kwargs.pop("mmap", None)  # torch 1.13 has no mmap keyword
        return orig_load(*args, **kwargs)

    torch.load = load_no_mmap
    from rwkv.model import RWKV  # noqa: E402
    return torch, RWKV


def tokens_for(seed, vocab):
    g = random.Random(seed + 1)
    ids = [g.randrange(1, vocab) for _ in range(N_PROMPT + N_DECODE)]
    return ids[:N_PROMPT], ids[N_PROMPT:]


def save_pth(torch, sd, path, dtype):
    tsd = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dtype).contiguous() for k, v in sd.items()}
    torch.save(tsd, path)


def logits_np(out):
    return out.detach().float().cpu().numpy().astype(np.float32).reshape(-1)


def rel_diff(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def part_summary(a):
    a = np.asarray(a, np.float32).reshape(-1)
    a64 = a.astype(np.float64)
    return {"sum": float(a64.sum()), "sumsq": float((a64 * a64).sum()),
            "head": [float(x) for x in a[:16]]}


def numpy_reference(sd, tokens, n_layer, n_embd):
    """Independent float64 numpy RWKV7 (formulas of /work/shared/ARCHITECTURE.md, one token at a
    time). Returns (logits after each of the last N_DECODE+1 tokens, final state as in the official
    layout). Used only to cross-check the official package's output."""
    L, C = n_layer, n_embd
    H, N = C // 64, 64
    w = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    vec = lambda k: w[k].reshape(-1)

    def ln(x, wt, b, eps=1e-5):
        mu = x.mean()
        var = ((x - mu) ** 2).mean()
        return (x - mu) / np.sqrt(var + eps) * wt + b

    def sig(x):
        return 1.0 / (1.0 + np.exp(-x))

    st = [[np.zeros(C), np.zeros((H, N, N)), np.zeros(C)] for _ in range(L)]
    outs = []
    for ti, tok in enumerate(tokens):
        x = ln(w["emb.weight"][tok], w["blocks.0.ln0.weight"], w["blocks.0.ln0.bias"])
        v_first = None
        for i in range(L):
            p = f"blocks.{i}."
            a = p + "att."
            xx = ln(x, w[p + "ln1.weight"], w[p + "ln1.bias"])
            dx = st[i][0] - xx
            st[i][0] = xx
            xr, xw, xk, xv, xa, xg = [xx + dx * vec(a + n) for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")]
            r = w[a + "receptance.weight"] @ xr
            k = w[a + "key.weight"] @ xk
            v = w[a + "value.weight"] @ xv
            ww = vec(a + "w0") + np.tanh(xw @ w[a + "w1"]) @ w[a + "w2"]
            aa = sig(vec(a + "a0") + (xa @ w[a + "a1"]) @ w[a + "a2"])
            gg = sig(xg @ w[a + "g1"]) @ w[a + "g2"]
            kk = (k * vec(a + "k_k")).reshape(H, N)
            kk = (kk / np.maximum(np.linalg.norm(kk, axis=1, keepdims=True), 1e-12)).reshape(-1)
            k = k * (1 + (aa - 1) * vec(a + "k_a"))
            if i == 0:
                v_first = v
            else:
                v = v + (v_first - v) * sig(vec(a + "v0") + (xv @ w[a + "v1"]) @ w[a + "v2"])
            ww = np.exp(-0.606531 * sig(ww))
            S = st[i][1]
            y = np.zeros(C)
            for h in range(H):
                s = slice(h * N, (h + 1) * N)
                sa = S[h] @ (-kk[s])
                S[h] = S[h] * ww[s][None, :] + np.outer(sa, kk[s] * aa[s]) + np.outer(v[s], k[s])
                y[s] = S[h] @ r[s]
            yy = y.reshape(H, N)
            mu = yy.mean(1, keepdims=True)
            var = ((yy - mu) ** 2).mean(1, keepdims=True)
            y = ((yy - mu) / np.sqrt(var + 64e-5)).reshape(-1) * w[a + "ln_x.weight"] + w[a + "ln_x.bias"]
            y = y + ((r * k * vec(a + "r_k")).reshape(H, N).sum(1, keepdims=True) * v.reshape(H, N)).reshape(-1)
            x = x + w[a + "output.weight"] @ (y * gg)
            xx = ln(x, w[p + "ln2.weight"], w[p + "ln2.bias"])
            dx = st[i][2] - xx
            st[i][2] = xx
            kx = xx + dx * vec(p + "ffn.x_k")
            x = x + w[p + "ffn.value.weight"] @ (np.maximum(w[p + "ffn.key.weight"] @ kx, 0.0) ** 2)
        if ti + 1 >= N_PROMPT:
            outs.append(w["head.weight"] @ ln(x, w["ln_out.weight"], w["ln_out.bias"]))
    return outs, [t for s3 in st for t in s3]


def run_config(torch, RWKV, name, sd_f32, out_root, tmpdir):
    L, C, V, seed, dtype, layout, write_model = CONFIGS[name]
    H, N = C // 64, 64
    t0 = time.time()
    sd = sd_f32 if dtype == "f32" else {k: rw.to_bf16_rounded(v) for k, v in sd_f32.items()}
    odir = os.path.join(out_root, name)
    os.makedirs(odir, exist_ok=True)
    manifest = {"config": {"n_layer": L, "n_embd": C, "vocab_size": V, "seed": seed, "dtype": dtype}}

    if write_model:
        # The model as BlinkDL ships it: torch.save of a state dict of bf16 tensors, BlinkDL names.
        save_pth(torch, sd, os.path.join(odir, "model.pth"), torch.bfloat16)
        # The same weights with Hugging Face "fla" names, bf16 safetensors.
        from safetensors.torch import save_file
        fla = rw.to_fla(sd)
        save_file({k: torch.from_numpy(np.ascontiguousarray(v)).to(torch.bfloat16).contiguous()
                   for k, v in fla.items()},
                  os.path.join(odir, "model.safetensors"), metadata={"format": "pt"})
        os.chmod(os.path.join(odir, "model.safetensors"), 0o644)
        # verify both files read back to exactly the bf16-rounded weights
        from safetensors.torch import load_file
        back = torch.load(os.path.join(odir, "model.pth"), map_location="cpu")
        assert list(back.keys()) == list(sd.keys())
        for k, v in sd.items():
            assert back[k].dtype == torch.bfloat16 and tuple(back[k].shape) == v.shape, k
            assert np.array_equal(back[k].float().numpy(), v), k
        sback = load_file(os.path.join(odir, "model.safetensors"))
        assert set(sback.keys()) == set(fla.keys())
        for k, v in fla.items():
            assert np.array_equal(sback[k].float().numpy(), v), k
        manifest["model_files"] = {"pth": "model.pth", "safetensors": "model.safetensors"}

    prompt, decode = tokens_for(seed, V)
    manifest["prompt"] = prompt
    manifest["decode"] = decode

    # reference weights for the official package: fp32 values (bf16-exact for bf16 configs)
    base = os.path.join(tmpdir, name)
    save_pth(torch, sd, base + ".pth", torch.float32)
    model = RWKV(model=base, strategy="cpu fp32")
    os.remove(base + ".pth")

    # prefill (forward_seq) then decode one token at a time
    logits = []
    out, state = model.forward(prompt, None)
    logits.append(logits_np(out))
    for tok in decode:
        out, state = model.forward([tok], state)
        logits.append(logits_np(out))
    state_np = [s.detach().float().cpu().numpy().astype(np.float32) for s in state]

    # self-check: every token through forward_one from a zero state
    st = None
    one = []
    for i, tok in enumerate(prompt + decode):
        o, st = model.forward([tok], st)
        if i + 1 >= N_PROMPT:
            one.append(logits_np(o))
    max_rel = max(rel_diff(a, b) for a, b in zip(one, logits))
    st_rel = max(rel_diff(a.detach().float().numpy(), b) for a, b in zip(st, state_np))
    print(f"[{name}] prefill+decode vs token-by-token: logits max rel diff {max_rel:.3g}, "
          f"state max rel diff {st_rel:.3g}")
    assert max_rel < 1e-5, max_rel

    # independent cross-check: float64 numpy implementation of the documented formulas
    np_logits, np_state = numpy_reference(sd, prompt + decode, L, C)
    np_rel = max(rel_diff(b, a) for a, b in zip(np_logits, logits))
    np_st_rel = max(rel_diff(b, a) for a, b in zip(np_state, state_np))
    print(f"[{name}] official fp32 vs numpy float64 reference: logits max rel diff {np_rel:.3g}, "
          f"state max rel diff {np_st_rel:.3g}")
    assert np_rel < 1e-5, np_rel

    entries = []
    for i, lg in enumerate(logits):
        n = N_PROMPT + i
        fn = f"logits_{n}.bin"
        lg.astype("<f4").tofile(os.path.join(odir, fn))
        entries.append({"tokens_consumed": n, "file": fn, "std": float(np.std(lg.astype(np.float64))),
                        "argmax": int(np.argmax(lg))})
    manifest["logits"] = entries
    manifest["logits_std"] = float(np.std(logits[0].astype(np.float64)))

    if layout == "full":
        parts = []
        for i in range(L):
            parts += [state_np[3 * i].reshape(C), state_np[3 * i + 1].reshape(H * N * N),
                      state_np[3 * i + 2].reshape(C)]
        np.concatenate(parts).astype("<f4").tofile(os.path.join(odir, "state.bin"))
        manifest["state"] = {"file": "state.bin", "layout": "full",
                             "order": "per layer: att_shift [C], wkv [H][N_v][N_k], ffn_shift [C]",
                             "n_head": H, "head_size": N, "tokens_consumed": N_PROMPT + N_DECODE}
    else:
        manifest["state"] = {"layout": "summary", "n_head": H, "head_size": N,
                             "tokens_consumed": N_PROMPT + N_DECODE}
        manifest["state_summary"] = [
            {"att_shift": part_summary(state_np[3 * i]), "wkv": part_summary(state_np[3 * i + 1]),
             "ffn_shift": part_summary(state_np[3 * i + 2])} for i in range(L)]

    import importlib.metadata as md
    manifest["reference"] = {
        "package": "rwkv " + md.version("rwkv"), "class": "RWKV_x070", "strategy": "cpu fp32",
        "torch": torch.__version__, "weights": "tools/golden/random_weights.py (docs/random-weights.md)",
        "prefill_vs_token_by_token_max_rel_diff": max_rel,
        "prefill_vs_token_by_token_state_max_rel_diff": st_rel,
        "numpy_f64_vs_reference_logits_max_rel_diff": np_rel,
        "numpy_f64_vs_reference_state_max_rel_diff": np_st_rel,
        "weights_sum_f64": float(sum(np.sum(v, dtype=np.float64) for v in sd.values())),
    }
    with open(os.path.join(odir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"[{name}] logits std {manifest['logits_std']:.6g}, argmax after prompt "
          f"{entries[0]['argmax']}, {time.time() - t0:.1f} s -> {odir}")
    del model
    return manifest


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="*", default=list(CONFIGS))
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "golden", "rwkv7"))
    ap.add_argument("--rwkv-path", default=None, help="directory holding an unzipped rwkv wheel")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    torch, RWKV = setup_rwkv(args.rwkv_path)
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            L, C, V, seed = CONFIGS[name][:4]
            key = (L, C, V, seed)
            if key not in cache:
                cache.clear()
                t0 = time.time()
                cache[key] = rw.make_weights(L, C, V, seed)
                print(f"weights L{L} C{C} V{V} seed {seed}: {time.time() - t0:.1f} s")
            run_config(torch, RWKV, name, cache[key], args.out, tmp)


if __name__ == "__main__":
    main()
