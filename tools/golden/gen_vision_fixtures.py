#!/usr/bin/env python3
"""Golden fixtures of the SigLIP and CLIP vision towers (encoders/vision), from transformers.

Run: /work/venv-tf/bin/python tools/golden/gen_vision_fixtures.py   (transformers 4.44.2, torch 1.13)
Writes tests/golden/vision/ (see tools/golden/README.md, "Vision towers").

Weights are the seeded generator of docs/random-weights.md (random_weights.uniform_tensor) with the
ranges of weight_specs() below, mirrored by encoders/vision/random_vit.cc, so the C++ tests can
rebuild towers too large to commit (siglip2-base/16@384: 93M parameters) from a seed.
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
from transformers import (CLIPVisionConfig, CLIPVisionModel, SiglipConfig,  # noqa: E402
                          SiglipVisionConfig, SiglipVisionModel)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "golden", "vision")


def _s(n):
    return 1.0 / math.sqrt(n)


def weight_specs(clip, c):
    """[(bare name, shape, lo, hi)], in the order of encoders/vision/random_vit.cc."""
    d, f, ch, p = c.hidden_size, c.intermediate_size, c.num_channels, c.patch_size
    n_pos = (c.image_size // p) ** 2 + (1 if clip else 0)
    specs = []
    ln = lambda name: [(name + ".weight", (d,), 0.8, 1.2), (name + ".bias", (d,), -0.1, 0.1)]
    lin = lambda name, o, i: [(name + ".weight", (o, i), -_s(i), _s(i)),
                              (name + ".bias", (o,), -0.1, 0.1)]
    if clip:
        specs.append(("embeddings.class_embedding", (d,), -1.0, 1.0))
    specs.append(("embeddings.patch_embedding.weight", (d, ch, p, p), -_s(ch * p * p),
                  _s(ch * p * p)))
    if not clip:
        specs.append(("embeddings.patch_embedding.bias", (d,), -0.1, 0.1))
    specs.append(("embeddings.position_embedding.weight", (n_pos, d), -0.5, 0.5))
    if clip:
        specs += ln("pre_layrnorm")
    for i in range(c.num_hidden_layers):
        pre = f"encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            specs += lin(pre + "self_attn." + proj, d, d)
        specs += ln(pre + "layer_norm1")
        specs += lin(pre + "mlp.fc1", f, d)
        specs += lin(pre + "mlp.fc2", d, f)
        specs += ln(pre + "layer_norm2")
    specs += ln("post_layernorm")
    return specs


def make_weights(clip, c, seed):
    return OrderedDict((n, uniform_tensor(n, s, lo, hi, seed)) for n, s, lo, hi in weight_specs(clip, c))


def pixels(c, batch, seed):
    return uniform_tensor("pixels", (batch, c.num_channels, c.image_size, c.image_size), -1.0, 1.0,
                          seed)


def build(clip, c, seed):
    model = (CLIPVisionModel if clip else SiglipVisionModel)(c).float().eval()
    sd = make_weights(clip, c, seed)
    missing, unexpected = model.vision_model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith("head.") for k in missing), missing  # SigLIP's pooling head: unused
    return model, sd


def run(model, px, **kw):
    with torch.no_grad():
        return model(pixel_values=torch.from_numpy(px), **kw)


def write_bin(name, arr):
    arr = np.ascontiguousarray(arr, dtype="<f4")
    arr.tofile(os.path.join(OUT, name))
    return {"file": name, "shape": list(arr.shape)}


def small_siglip(manifest):
    c = SiglipVisionConfig(image_size=32, patch_size=8, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=2)
    model, sd = build(False, c, 11)
    model.save_pretrained(os.path.join(OUT, "siglip_small"))  # config.json + model.safetensors
    model.save_pretrained(os.path.join(OUT, "siglip_small_bin"), safe_serialization=False)
    # A full SiglipModel-style folder: model_type "siglip", vision_model.* plus text-tower keys.
    full = os.path.join(OUT, "siglip_small_full")
    os.makedirs(full, exist_ok=True)
    SiglipConfig(text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                              "num_attention_heads": 2, "vocab_size": 100},
                 vision_config=c.to_dict()).save_pretrained(full)
    tensors = {"vision_model." + k: v for k, v in sd.items()}
    tensors["text_model.embeddings.token_embedding.weight"] = uniform_tensor(
        "text", (100, 32), -1.0, 1.0, 11)
    tensors["logit_scale"] = np.array([2.3], dtype=np.float32)
    tensors["logit_bias"] = np.array([-10.0], dtype=np.float32)
    save_file(tensors, os.path.join(full, "model.safetensors"), metadata={"format": "pt"})
    px = pixels(c, 2, 11)
    out = run(model, px).last_hidden_state.numpy()
    manifest["siglip_small"] = {
        "folders": ["siglip_small", "siglip_small_bin", "siglip_small_full"], "seed": 11,
        "pixels": write_bin("siglip_small_pixels.bin", px),
        "last_hidden_state": write_bin("siglip_small_last_hidden_state.bin", out)}


def small_clip(manifest):
    c = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=3, num_attention_heads=2)
    model, _ = build(True, c, 12)
    model.save_pretrained(os.path.join(OUT, "clip_small"))
    px = pixels(c, 2, 12)
    res = run(model, px, output_hidden_states=True)
    assert torch.equal(res.hidden_states[-1], res.last_hidden_state)  # no post_layernorm
    manifest["clip_small"] = {
        "folder": "clip_small", "seed": 12,
        "pixels": write_bin("clip_small_pixels.bin", px),
        "last_hidden_state": write_bin("clip_small_last_hidden_state.bin",
                                       res.last_hidden_state.numpy()),
        "hidden_states_minus_2": write_bin("clip_small_hidden_states_m2.bin",
                                           res.hidden_states[-2].numpy()),
        "hidden_states_0": write_bin("clip_small_hidden_states_0.bin",
                                     res.hidden_states[0].numpy())}


def siglip2_base(manifest):
    # google/siglip2-base-patch16-384's vision tower shape; weights and pixels from seed 2025.
    c = SiglipVisionConfig(image_size=384, patch_size=16)
    model, _ = build(False, c, 2025)
    px = pixels(c, 1, 2025)
    out = run(model, px).last_hidden_state.numpy()[0]  # [576, 768]
    rows = [0, 1, 100, 287, 575]
    manifest["siglip2_base"] = {
        "seed": 2025, "image_size": 384, "patch_size": 16, "rows_checked": rows,
        "rows": write_bin("siglip2_base_rows.bin", out[rows]),
        "row_sums": write_bin("siglip2_base_row_sums.bin", out.astype(np.float64).sum(1)),
        "row_abs_sums": write_bin("siglip2_base_row_abs_sums.bin",
                                  np.abs(out.astype(np.float64)).sum(1))}


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    manifest = {"generator": "tools/golden/gen_vision_fixtures.py",
                "transformers": __import__("transformers").__version__,
                "torch": torch.__version__}
    small_siglip(manifest)
    small_clip(manifest)
    siglip2_base(manifest)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
