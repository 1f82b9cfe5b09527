#!/work/venv-tf/bin/python
"""Golden fixtures of the time-series ModRWKV forward (format: docs/models.md, "Time series").

Run: /work/venv-tf/bin/python tools/golden/gen_timeseries_fixtures.py [--mirror DIR]   (~5 s)
Writes tests/golden/timeseries/ (files: tools/golden/README.md, "Time series"); with
--variant quantiles, tests/golden/timeseries_quantiles/: the same model with a head that also
forecasts the 0.1 / 0.5 / 0.9 quantiles, on the change from the last input value
(time_series.quantiles, time_series.baseline "last").

Model: tools/train/timeseries_model.py with c = 2 channels, patch 4, WaveNet width 16, dilations
[1, 2, 4], horizon 6, on tests/golden/rwkv7/micro's RWKV7 (random_weights.py L2 C64 V256 seed 7,
bf16-rounded, stored bf16). The modality tensors are the seeded generator of
docs/random-weights.md (random_weights.uniform_tensor), hashed on the FULL checkpoint key
(e.g. "modality.ts_encoder.embed.weight") with seed 31, stored float32; s(n) = 1/sqrt(n):
  Linear weight [out, in]        (-s(in), s(in))
  Conv1d weight [2d, d, 2]       (-s(2d), s(2d))      (fan-in d * kernel)
  every bias                     (-0.1, 0.1)
Checks asserted: an independent float64 numpy implementation of the spec (this file) matches the
torch model on every intermediate (< 1e-5 relative), and on the case with prompt tokens the
OFFICIAL generation-A forward (JL-er/WorldRWKV afb131ad infer/rwkv/model.py, from the mirror;
`sign` = the adapter rows) gives the same logits as this model's final hidden state @ head.
"""
import argparse
from collections import OrderedDict
import json
import math
import os
import sys

import numpy as np

os.environ["RWKV_JIT_ON"] = "1"
os.environ["RWKV_CUDA_ON"] = "0"

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "golden", "timeseries")
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
from random_weights import make_weights, to_bf16_rounded, uniform_tensor  # noqa: E402
import timeseries_model as tsm  # noqa: E402

L, C, V, LLM_SEED = 2, 64, 256, 7  # = tests/golden/rwkv7/micro
TS_SEED = 31
CH, PATCH, D, DILATIONS, HORIZON, MAX_LENGTH, EPS = 2, 4, 16, [1, 2, 4], 6, 256, 1e-5
QUANTILES, BASELINE = [], "none"  # --variant quantiles: [0.1, 0.5, 0.9], "last"
ENCODER = "wavenet"  # --variant timer: the Timer encoder with TIMER (patch 8, width 32)
TIMER = {"heads": 4, "layers": 2, "ffn": 48, "rope_theta": 10000.0}
GEN_A = "afb131ad34a2fd243a8f54e5e303f590cbe3648d"

# name, steps, prompt (token ids of single bytes: id = byte + 1; the tiny vocabulary has 256 rows)
CASES = [
    ("t32", 32, ""),
    ("t45", 45, ""),            # 45 % 4 = 1: the oldest step is dropped
    ("t7", 7, ""),              # one row; the oldest 3 steps dropped
    ("t45_prompt", 45, "\x16Forecast:"),
]


def _s(n):
    return 1.0 / math.sqrt(n)


def modality_specs():
    """[(checkpoint key, shape, lo, hi)] in checkpoint order."""
    e, a, h = tsm.ENCODER_PREFIX, tsm.ADAPTER_PREFIX, tsm.HEAD_PREFIX
    lin = lambda name, o, i: [(name + ".weight", (o, i), -_s(i), _s(i)),
                              (name + ".bias", (o,), -0.1, 0.1)]
    if ENCODER == "timer":
        specs = [(e + "embed_layer.emb.weight", (D, PATCH), -_s(PATCH), _s(PATCH))]
        norm = lambda name: [(name + ".weight", (D,), 0.8, 1.2), (name + ".bias", (D,), -0.1, 0.1)]
        for i in range(TIMER["layers"]):
            p = f"{e}layers.{i}."
            for w in ("q", "k", "v"):
                specs += lin(f"{p}self_attn.{w}_proj", D, D)
            specs += [(p + "self_attn.o_proj.weight", (D, D), -_s(D), _s(D))]
            F = TIMER["ffn"]
            specs += [(p + "ffn_layer.gate_proj.weight", (F, D), -_s(D), _s(D)),
                      (p + "ffn_layer.up_proj.weight", (F, D), -_s(D), _s(D)),
                      (p + "ffn_layer.down_proj.weight", (D, F), -_s(F), _s(F))]
            specs += norm(p + "norm1") + norm(p + "norm2")
        specs += norm(e + "norm")
        specs += lin(a + "proj.0", 4 * D, D) + lin(a + "proj.2", C, 4 * D)
        specs += lin(h[:-1], (1 + len(QUANTILES)) * HORIZON * CH, C)
        return specs
    specs = lin(e + "embed", D, PATCH * CH)
    for i in range(len(DILATIONS)):
        p = f"{e}layers.{i}."
        specs += [(p + "conv.weight", (2 * D, D, 2), -_s(2 * D), _s(2 * D)),
                  (p + "conv.bias", (2 * D,), -0.1, 0.1)]
        specs += lin(p + "res", D, D) + lin(p + "skip", D, D)
    specs += lin(e + "out", D, D)
    specs += lin(a + "proj.0", 4 * D, D) + lin(a + "proj.2", C, 4 * D)
    specs += lin(h[:-1], (1 + len(QUANTILES)) * HORIZON * CH, C)
    return specs


def series(name, steps):
    """[T, 2] float32: channel 0 ~ 10 + trend + period-12 wave, channel 1 ~ 200 + period-7 wave
    (different scales, so the normalisation matters), plus seeded noise."""
    noise = uniform_tensor("ts_input_" + name, (steps, CH), -1.0, 1.0, TS_SEED).astype(np.float64)
    t = np.arange(steps, dtype=np.float64)
    x = np.stack([10 + 0.05 * t + 3 * np.sin(2 * np.pi * t / 12) + 0.3 * noise[:, 0],
                  200 + 40 * np.cos(2 * np.pi * t / 7) + 5 * noise[:, 1]], axis=1)
    return x.astype(np.float32)


def timer_f64(w, rows, r):
    """The Timer encoder in float64 numpy, written from the published model code's structure
    (encoders/timeseries/timer.h): each channel alone, rows r*CH + ch."""
    e = tsm.ENCODER_PREFIX
    nh, hd = TIMER["heads"], D // TIMER["heads"]
    inv = 1.0 / TIMER["rope_theta"] ** (np.arange(0, hd, 2) / hd)
    ang = np.outer(np.arange(r), inv)
    cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))
    rot = lambda v: v * cos + np.concatenate([-v[:, hd // 2:], v[:, :hd // 2]], 1) * sin

    def ln(v, name):
        mu = v.mean(1, keepdims=True)
        return ((v - mu) / np.sqrt(((v - mu) ** 2).mean(1, keepdims=True) + 1e-5)
                * w[name + ".weight"] + w[name + ".bias"])

    out = np.zeros((r * CH, D))
    mask = np.triu(np.full((r, r), -np.inf), 1)
    for ch in range(CH):
        x = rows.reshape(r, PATCH, CH)[:, :, ch] @ w[e + "embed_layer.emb.weight"].T
        for i in range(TIMER["layers"]):
            p = f"{e}layers.{i}."
            a = p + "self_attn."
            q, k, v = [x @ w[f"{a}{n}_proj.weight"].T + w[f"{a}{n}_proj.bias"] for n in "qkv"]
            att = np.zeros((r, D))
            for hh in range(nh):
                s = slice(hh * hd, (hh + 1) * hd)
                sc = rot(q[:, s]) @ rot(k[:, s]).T / np.sqrt(hd) + mask
                pr = np.exp(sc - sc.max(1, keepdims=True))
                att[:, s] = (pr / pr.sum(1, keepdims=True)) @ v[:, s]
            x = ln(x + att @ w[a + "o_proj.weight"].T, p + "norm1")
            f = p + "ffn_layer."
            g, u = x @ w[f + "gate_proj.weight"].T, x @ w[f + "up_proj.weight"].T
            x = ln(x + (g / (1 + np.exp(-g)) * u) @ w[f + "down_proj.weight"].T, p + "norm2")
        out[ch::CH] = ln(x, e + "norm")
    return out


def reference_f64(sd, x, prompt_ids):
    """Independent float64 numpy forward, written from the format's text (docs/models.md)."""
    w = {k: np.asarray(v.float().numpy() if torch.is_tensor(v) else v, np.float64)
         for k, v in sd.items()}
    vec = lambda k: w[k].reshape(-1)
    out = {}
    x = np.asarray(x, np.float64)
    mean = x.mean(0)
    std = np.sqrt(((x - mean) ** 2).mean(0) + EPS)
    xn = (x - mean) / std
    r = x.shape[0] // PATCH
    rows = xn[x.shape[0] - r * PATCH:].reshape(r, PATCH * CH)
    out.update(mean=mean, std=std, normalized=xn, rows=rows)
    e = tsm.ENCODER_PREFIX
    lin = lambda name, v: v @ w[name + ".weight"].T + w[name + ".bias"]
    if ENCODER == "timer":
        enc = timer_f64(w, rows, r)
    else:
        h = lin(e + "embed", rows)
        skip = np.zeros_like(h)
        for i, dil in enumerate(DILATIONS):
            p = f"{e}layers.{i}."
            wc = w[p + "conv.weight"]  # [2d, d, 2]: tap 0 reads row t - dil, tap 1 row t
            prev = np.vstack([np.zeros((dil, D)), h])[:r]
            z = prev @ wc[:, :, 0].T + h @ wc[:, :, 1].T + w[p + "conv.bias"]
            g = np.tanh(z[:, :D]) / (1 + np.exp(-z[:, D:]))
            h = h + lin(p + "res", g)
            skip = skip + lin(p + "skip", g)
        enc = lin(e + "out", np.maximum(skip, 0))
    a = tsm.ADAPTER_PREFIX
    ad = lin(a + "proj.2", np.maximum(lin(a + "proj.0", enc), 0))
    out.update(encoder=enc, adapter=ad)
    seq = np.vstack([ad] + ([w["emb.weight"][list(prompt_ids)]] if prompt_ids else []))

    def ln(v, wt, b, eps=1e-5):
        mu = v.mean()
        return (v - mu) / np.sqrt(((v - mu) ** 2).mean() + eps) * wt + b

    sig = lambda v: 1.0 / (1.0 + np.exp(-v))
    H, N = C // 64, 64
    st = [[np.zeros(C), np.zeros((H, N, N)), np.zeros(C)] for _ in range(L)]
    hidden = []
    for row in seq:
        x1 = ln(row, w["blocks.0.ln0.weight"], w["blocks.0.ln0.bias"])  # ln0 over every row
        v_first = None
        for i in range(L):
            p = f"blocks.{i}."
            at = p + "att."
            xx = ln(x1, w[p + "ln1.weight"], w[p + "ln1.bias"])
            dx = st[i][0] - xx
            st[i][0] = xx
            xr, xw, xk, xv, xa, xg = [xx + dx * vec(at + n)
                                      for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")]
            rr = w[at + "receptance.weight"] @ xr
            k = w[at + "key.weight"] @ xk
            v = w[at + "value.weight"] @ xv
            ww = vec(at + "w0") + np.tanh(xw @ w[at + "w1"]) @ w[at + "w2"]
            aa = sig(vec(at + "a0") + (xa @ w[at + "a1"]) @ w[at + "a2"])
            gg = sig(xg @ w[at + "g1"]) @ w[at + "g2"]
            kk = (k * vec(at + "k_k")).reshape(H, N)
            kk = (kk / np.maximum(np.linalg.norm(kk, axis=1, keepdims=True), 1e-12)).reshape(-1)
            k = k * (1 + (aa - 1) * vec(at + "k_a"))
            if i == 0:
                v_first = v
            else:
                v = v + (v_first - v) * sig(vec(at + "v0") + (xv @ w[at + "v1"]) @ w[at + "v2"])
            ww = np.exp(-0.606531 * sig(ww))
            S = st[i][1]
            y = np.zeros(C)
            for hh in range(H):
                s = slice(hh * N, (hh + 1) * N)
                sa = S[hh] @ (-kk[s])
                S[hh] = S[hh] * ww[s][None, :] + np.outer(sa, kk[s] * aa[s]) + np.outer(v[s], k[s])
                y[s] = S[hh] @ rr[s]
            yy = y.reshape(H, N)
            mu = yy.mean(1, keepdims=True)
            var = ((yy - mu) ** 2).mean(1, keepdims=True)
            y = (((yy - mu) / np.sqrt(var + 64e-5)).reshape(-1) * w[at + "ln_x.weight"]
                 + w[at + "ln_x.bias"])
            y = y + ((rr * k * vec(at + "r_k")).reshape(H, N).sum(1, keepdims=True)
                     * v.reshape(H, N)).reshape(-1)
            x1 = x1 + w[at + "output.weight"] @ (y * gg)
            xx = ln(x1, w[p + "ln2.weight"], w[p + "ln2.bias"])
            dx = st[i][2] - xx
            st[i][2] = xx
            kx = xx + dx * vec(p + "ffn.x_k")
            x1 = x1 + w[p + "ffn.value.weight"] @ (np.maximum(w[p + "ffn.key.weight"] @ kx, 0) ** 2)
        hidden.append(ln(x1, w["ln_out.weight"], w["ln_out.bias"]))
    hidden = np.array(hidden)
    yall = (w[tsm.HEAD_PREFIX + "weight"] @ hidden[-1] + w[tsm.HEAD_PREFIX + "bias"])
    yall = yall.reshape(1 + len(QUANTILES), HORIZON, CH)
    if BASELINE == "last":
        yall = yall + xn[-1]
    yn = yall[0]
    out.update(hidden=hidden, forecast_normalized=yn, forecast=yn * std + mean)
    if QUANTILES:
        qn = np.sort(yall[1:], axis=0)
        out.update(quantiles_normalized=qn, quantiles=qn * std + mean)
    return out


def max_rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def write_bin(name, arr):
    a = np.ascontiguousarray(np.asarray(arr, dtype="<f4"))
    a.tofile(os.path.join(OUT, name))
    return {"file": name, "shape": list(a.shape)}


def write_csv(name, arr):
    """A header row, one column per channel, float32 values printed exactly (%.9g)."""
    with open(os.path.join(OUT, name), "w") as f:
        f.write(",".join(f"ch{i}" for i in range(arr.shape[1])) + "\n")
        for row in np.asarray(arr, np.float32):
            f.write(",".join("%.9g" % v for v in row) + "\n")
    return name


def official_logits(mirror, ckpt_path, adapter_rows, prompt_ids):
    """Logits of the last row from the official generation-A forward (image rows = `sign`)."""
    sys.path.insert(0, HERE)
    from gen_vision_forward_fixture import load_official
    mod = load_official(mirror, GEN_A, "official_rwkv_gen_a_ts",
                        [("x.to('cuda')", "x.to(sign.device)")])
    weights = torch.load(ckpt_path, map_location="cpu")
    llm = {k: v for k, v in weights.items() if not k.startswith("modality.")}
    model = mod.RWKV(model=llm, strategy="cpu fp32")
    logits, _ = model.forward(list(prompt_ids), None, sign=adapter_rows.unsqueeze(0))
    return logits.float().numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirror", default="/work/.mirror/JL-er+WorldRWKV/repo")
    ap.add_argument("--variant", choices=("plain", "quantiles", "timer"), default="plain")
    args = ap.parse_args()
    global OUT, QUANTILES, BASELINE, ENCODER, PATCH, D
    if args.variant == "quantiles":
        OUT = OUT + "_quantiles"
        QUANTILES, BASELINE = [0.1, 0.5, 0.9], "last"
    if args.variant == "timer":
        OUT = OUT + "_timer"
        ENCODER, PATCH, D = "timer", 8, 32
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)

    sd = OrderedDict((k, torch.from_numpy(to_bf16_rounded(v)).to(torch.bfloat16))
                     for k, v in make_weights(L, C, V, LLM_SEED).items())
    for name, shape, lo, hi in modality_specs():
        sd[name] = torch.from_numpy(uniform_tensor(name, shape, lo, hi, TS_SEED))
    ckpt = os.path.join(OUT, "rwkv-0.pth")
    torch.save(sd, ckpt)
    model = tsm.TimeSeriesModel(channels=CH, patch=PATCH, d=D, dilations=DILATIONS,
                                horizon=HORIZON, c=C, n_layer=L, max_length=MAX_LENGTH, eps=EPS,
                                token_ids=range(V), quantiles=QUANTILES, baseline=BASELINE,
                                encoder=ENCODER, timer=TIMER if ENCODER == "timer" else None)
    manifest_model = model.manifest()
    with open(os.path.join(OUT, "modrwkv-model.json"), "w") as f:
        json.dump(manifest_model, f, indent=2)
        f.write("\n")
    # read back what was written, as a loader would
    loaded = torch.load(ckpt, map_location="cpu")
    model = tsm.model_from_export(loaded, manifest_model)

    manifest = {
        "generator": "tools/golden/gen_timeseries_fixtures.py", "torch": torch.__version__,
        "model": "modrwkv-model.json", "checkpoint": "rwkv-0.pth",
        "llm": {"n_layer": L, "n_embd": C, "vocab_size": V, "seed": LLM_SEED, "dtype": "bf16",
                "same_weights_as": "tests/golden/rwkv7/micro"},
        "modality_seed": TS_SEED,
        "keys": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                 for k, v in loaded.items() if k.startswith("modality.")},
        "cases": [],
    }
    # the quantile variant's backbone and prompt path are the plain one's: its cases skip the
    # official check (no mirror needed) and keep two lengths
    cases = CASES if not QUANTILES else [c for c in CASES if c[0] in ("t45", "t7")]
    if ENCODER == "timer":  # patch 8: t45 has 5 patches (5 steps dropped); t200 25 patches
        cases = [("t45", 45, ""), ("t200", 200, ""), ("t45_prompt", 45, "\x16Forecast:")]
    for name, steps, prompt in cases:
        x = series(name.split("_")[0], steps)
        ids = [b + 1 for b in prompt.encode("utf-8")]
        with torch.no_grad():
            y, tr = model(torch.from_numpy(x).unsqueeze(0), ids or None, trace=True)
        tr = {k: v[0].numpy() for k, v in tr.items()}
        ref = reference_f64(loaded, x, ids)
        errs = {k: max_rel(tr[k].reshape(ref[k].shape), ref[k]) for k in ref}
        assert max(errs.values()) < 1e-5, (name, errs)
        y_api = tsm.forecast(model, x, ids or None)
        assert np.array_equal(y_api, tr["forecast"]), name
        rows_out = steps // PATCH * (CH if ENCODER == "timer" else 1)
        case = {"name": name, "steps": steps, "channels": CH, "rows": rows_out,
                "patches": steps // PATCH,
                "dropped_steps": steps % PATCH,
                "input": write_bin(f"{name}_input.bin", x),
                "input_csv": write_csv(f"{name}_input.csv", x),
                "mean": [float(v) for v in tr["mean"].reshape(-1)],
                "std": [float(v) for v in tr["std"].reshape(-1)],
                "normalized": write_bin(f"{name}_normalized.bin", tr["normalized"]),
                "rows_in": write_bin(f"{name}_rows.bin", tr["rows"]),
                "encoder_rows": write_bin(f"{name}_encoder_rows.bin", tr["encoder"]),
                "adapter_rows": write_bin(f"{name}_adapter_rows.bin", tr["adapter"]),
                "hidden": write_bin(f"{name}_hidden.bin", tr["hidden"]),
                "forecast_normalized": write_bin(f"{name}_forecast_normalized.bin",
                                                 tr["forecast_normalized"]),
                "forecast": write_bin(f"{name}_forecast.bin", tr["forecast"]),
                "forecast_csv": write_csv(f"{name}_forecast.csv", tr["forecast"]),
                "numpy_f64_max_rel_diff": errs}
        if QUANTILES:
            case["quantile_levels"] = QUANTILES
            case["quantiles_normalized"] = write_bin(f"{name}_quantiles_normalized.bin",
                                                     tr["quantiles_normalized"])
            case["quantiles"] = write_bin(f"{name}_quantiles.bin", tr["quantiles"])
        if prompt:
            case["prompt"] = prompt
            case["prompt_ids"] = ids
        if prompt and args.variant == "plain":  # the other variants share its backbone
            logits = tr["hidden"][-1].astype(np.float64) @ loaded["head.weight"].double().numpy().T
            off = official_logits(args.mirror, ckpt, torch.from_numpy(tr["adapter"]), ids)
            case["official_gen_a_logits_max_rel_diff"] = max_rel(logits, off)
            assert case["official_gen_a_logits_max_rel_diff"] < 1e-5, case
        # how much the series moves the forecast (a fixture that ignored it would test nothing):
        # the normalised forecast for the time-reversed series, relative to this one's
        with torch.no_grad():
            _, tr2 = model(torch.from_numpy(x[::-1].copy()).unsqueeze(0), ids or None, trace=True)
        case["series_influence"] = max_rel(tr2["forecast_normalized"][0].numpy()
                                           - tr["forecast_normalized"], tr["forecast_normalized"])
        manifest["cases"].append(case)
        print(f"{name}: T {steps} -> rows {steps // PATCH}, forecast[0] {tr['forecast'][0]}, "
              f"f64 max rel {max(errs.values()):.2e}"
              + (f", official gen A {case['official_gen_a_logits_max_rel_diff']:.2e}"
                 if "official_gen_a_logits_max_rel_diff" in case else ""))
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
