#!/usr/bin/env python3
"""Golden fixtures of the WavLM encoder (encoders/speech/wavlm_*), from transformers' WavLMModel.

Run: /work/venv-tf/bin/python tools/golden/gen_wavlm_fixtures.py   (transformers 4.44.2, torch 1.13)
Writes tests/golden/wavlm/ (see tools/golden/README.md, "WavLM").

Weights are the seeded generator of docs/random-weights.md (random_weights.uniform_tensor) with the
ranges of weight_specs() below, mirrored by encoders/speech/wavlm_random.cc, so the C++ tests can
rebuild models too large to commit (base+: 94M parameters, large: 315M) from a seed.

torch 1.13 has no nn.utils.parametrizations.weight_norm, so transformers stores the positional
convolution as weight_g / weight_v; the torch >= 2.1 names (parametrizations.weight.original0 / 1)
are written by renaming those keys.
"""
from collections import OrderedDict
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from random_weights import uniform_tensor  # noqa: E402

from safetensors.numpy import save_file  # noqa: E402
from transformers import WavLMConfig, WavLMModel  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "golden", "wavlm")
POS = "encoder.pos_conv_embed.conv."


def _s(n):
    return 1.0 / math.sqrt(n)


def weight_specs(c):
    """[(bare name, shape, lo, hi)], in the order of encoders/speech/wavlm_random.cc."""
    d, f, h = c.hidden_size, c.intermediate_size, c.num_attention_heads
    hd, cg, k = d // h, d // c.num_conv_pos_embedding_groups, c.num_conv_pos_embeddings
    specs = []
    ln = lambda name, n: [(name + ".weight", (n,), 0.8, 1.2), (name + ".bias", (n,), -0.1, 0.1)]
    lin = lambda name, o, i: [(name + ".weight", (o, i), -_s(i), _s(i)),
                              (name + ".bias", (o,), -0.1, 0.1)]
    cin = 1
    for i, (cd, ck) in enumerate(zip(c.conv_dim, c.conv_kernel)):
        pre = f"feature_extractor.conv_layers.{i}."
        fan = cin * ck
        specs.append((pre + "conv.weight", (cd, cin, ck), -2 * _s(fan), 2 * _s(fan)))
        if c.conv_bias:
            specs.append((pre + "conv.bias", (cd,), -0.1, 0.1))
        if c.feat_extract_norm == "layer" or i == 0:
            specs += ln(pre + "layer_norm", cd)
        cin = cd
    specs += ln("feature_projection.layer_norm", cin)
    specs += lin("feature_projection.projection", d, cin)
    specs.append((POS + "weight_g", (1, 1, k), 1.0, 2.0))
    specs.append((POS + "weight_v", (d, cg, k), -_s(cg * k), _s(cg * k)))
    specs.append((POS + "bias", (d,), -0.1, 0.1))
    specs += ln("encoder.layer_norm", d)
    for i in range(c.num_hidden_layers):
        pre = f"encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            specs += lin(pre + "attention." + proj, d, d)
        specs.append((pre + "attention.gru_rel_pos_const", (1, h, 1, 1), 0.5, 1.5))
        specs += lin(pre + "attention.gru_rel_pos_linear", 8, hd)
        if i == 0:
            specs.append((pre + "attention.rel_attn_embed.weight", (c.num_buckets, h), -1.0, 1.0))
        specs += ln(pre + "layer_norm", d)
        specs += lin(pre + "feed_forward.intermediate_dense", f, d)
        specs += lin(pre + "feed_forward.output_dense", d, f)
        specs += ln(pre + "final_layer_norm", d)
    return specs


def make_weights(c, seed):
    return OrderedDict((n, uniform_tensor(n, s, lo, hi, seed)) for n, s, lo, hi in weight_specs(c))


def audio(batch, n, seed):
    r = math.sqrt(3.0)
    return uniform_tensor("audio", (batch, n), -r, r, seed)


def build(c, seed):
    model = WavLMModel(c).float().eval()
    sd = make_weights(c, seed)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()},
                                                strict=False)
    assert not unexpected, unexpected
    assert missing == ["masked_spec_embed"], missing
    return model, sd


def run(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).last_hidden_state.numpy()


def new_weight_norm_names(sd):
    out = OrderedDict()
    for k, v in sd.items():
        k = k.replace(POS + "weight_g", POS + "parametrizations.weight.original0")
        k = k.replace(POS + "weight_v", POS + "parametrizations.weight.original1")
        out[k] = v
    return out


def write_bin(name, arr, dtype="<f4"):
    arr = np.ascontiguousarray(arr, dtype=dtype)
    arr.tofile(os.path.join(OUT, name))
    return {"file": name, "shape": list(arr.shape)}


def save_folder(name, c, tensors, fmt):
    """config.json plus the tensors as model.safetensors or pytorch_model.bin (torch.save)."""
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    for old in ("model.safetensors", "pytorch_model.bin"):
        if os.path.exists(os.path.join(folder, old)):
            os.remove(os.path.join(folder, old))
    c.save_pretrained(folder)
    if fmt == "safetensors":
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                  os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()},
                   os.path.join(folder, "pytorch_model.bin"))
    return name


def buckets(c, n):
    """transformers' bucket of every relative position -(n-1) .. n-1 (int32)."""
    attn = WavLMModel(c).encoder.layers[0].attention
    rel = torch.arange(-(n - 1), n, dtype=torch.long)
    return attn._relative_positions_bucket(rel).numpy().astype(np.int32)


SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             conv_dim=[32] * 7)


def small_group(manifest):
    # base+ layout: GroupNorm on conv 0, post-LN blocks; the default 320 buckets / distance 800
    # (99 frames reach the logarithmic buckets from distance 80).
    c = WavLMConfig(**SMALL, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                    feat_extract_norm="group", do_stable_layer_norm=False)
    model, sd = build(c, 21)
    x = audio(2, 32000, 21)
    out = run(model, x)
    sd["masked_spec_embed"] = uniform_tensor("masked_spec_embed", (32,), 0, 1, 21)  # as on the hub
    manifest["group"] = {
        "seed": 21,
        "folders": [save_folder("group", c, sd, "safetensors"),
                    save_folder("group_bin_new_names", c,
                                OrderedDict(("wavlm." + k, v)
                                            for k, v in new_weight_norm_names(sd).items()),
                                "bin")],
        "audio": write_bin("group_audio.bin", x),
        "last_hidden_state": write_bin("group_last_hidden_state.bin", out)}
    manifest["buckets_320_800"] = write_bin("buckets_320_800.bin", buckets(c, 2000), "<i4")


def small_layer(manifest):
    # large layout: LayerNorm after every conv, conv bias, pre-LN "stable" blocks with a final
    # LayerNorm; an odd positional kernel (nothing dropped) and few buckets (saturated at 40).
    c = WavLMConfig(**SMALL, num_conv_pos_embeddings=15, num_conv_pos_embedding_groups=8,
                    feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                    num_buckets=32, max_bucket_distance=40)
    model, sd = build(c, 22)
    x = audio(2, 16000, 22)
    out = run(model, x)
    manifest["layer"] = {
        "seed": 22,
        "folders": [save_folder("layer", c, new_weight_norm_names(sd), "safetensors"),
                    save_folder("layer_bin", c, sd, "bin")],
        "audio": write_bin("layer_audio.bin", x),
        "last_hidden_state": write_bin("layer_last_hidden_state.bin", out)}
    manifest["buckets_32_40"] = write_bin("buckets_32_40.bin", buckets(c, 200), "<i4")


def seeded(manifest, name, c, seed, samples, rows):
    model, _ = build(c, seed)
    out = run(model, audio(1, samples, seed))[0]
    manifest[name] = {
        "seed": seed, "samples": samples, "frames": out.shape[0], "rows_checked": rows,
        "rows": write_bin(name + "_rows.bin", out[rows]),
        "row_sums": write_bin(name + "_row_sums.bin", out.astype(np.float64).sum(1)),
        "row_abs_sums": write_bin(name + "_row_abs_sums.bin",
                                  np.abs(out.astype(np.float64)).sum(1))}


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    manifest = {"generator": "tools/golden/gen_wavlm_fixtures.py",
                "transformers": __import__("transformers").__version__,
                "torch": torch.__version__}
    small_group(manifest)
    small_layer(manifest)
    # microsoft/wavlm-base-plus's shape (WavLMConfig's defaults), a 4 s clip.
    seeded(manifest, "base_plus", WavLMConfig(), 2025, 64000, [0, 1, 100, 198])
    # microsoft/wavlm-large's shape, a 2 s clip.
    large = WavLMConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                        intermediate_size=4096, feat_extract_norm="layer",
                        do_stable_layer_norm=True)
    seeded(manifest, "large", large, 2026, 32000, [0, 1, 50, 98])
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
