#!/usr/bin/env python3
"""Golden fixtures of the Whisper encoder (encoders/speech/whisper_*), from transformers.

Run: /work/venv-tf/bin/python tools/golden/gen_whisper_fixtures.py   (transformers 4.44.2, torch 1.13)
Writes tests/golden/whisper/ (see tools/golden/README.md, "Whisper encoder"); about 1.5 minutes on
two cores (the medium shape dominates).

Weights are the seeded generator of docs/random-weights.md (random_weights.uniform_tensor) with the
ranges of weight_specs() below, mirrored by encoders/speech/whisper_random.cc, so the C++ tests can
rebuild encoders too large to commit (whisper-small 88M, whisper-medium 307M encoder parameters)
from a seed.
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

from transformers import (WhisperConfig, WhisperFeatureExtractor,  # noqa: E402
                          WhisperForConditionalGeneration, WhisperModel)
from transformers.models.whisper.modeling_whisper import WhisperEncoder  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "golden", "whisper")


def _s(n):
    return 1.0 / math.sqrt(n)


def weight_specs(c):
    """[(bare WhisperEncoder name, shape, lo, hi)], in the order of whisper_random.cc."""
    d, f, m = c.d_model, c.encoder_ffn_dim, c.num_mel_bins
    ln = lambda name: [(name + ".weight", (d,), 0.8, 1.2), (name + ".bias", (d,), -0.1, 0.1)]

    def lin(name, o, i, bias=True):
        w = [(name + ".weight", (o, i), -_s(i), _s(i))]
        return w + [(name + ".bias", (o,), -0.1, 0.1)] if bias else w

    specs = [("conv1.weight", (d, m, 3), -_s(3 * m), _s(3 * m)),
             ("conv1.bias", (d,), -0.1, 0.1),
             ("conv2.weight", (d, d, 3), -_s(3 * d), _s(3 * d)),
             ("conv2.bias", (d,), -0.1, 0.1),
             ("embed_positions.weight", (c.max_source_positions, d), -1.0, 1.0)]
    for i in range(c.encoder_layers):
        pre = f"layers.{i}."
        specs += lin(pre + "self_attn.k_proj", d, d, bias=False)
        specs += lin(pre + "self_attn.v_proj", d, d)
        specs += lin(pre + "self_attn.q_proj", d, d)
        specs += lin(pre + "self_attn.out_proj", d, d)
        specs += ln(pre + "self_attn_layer_norm")
        specs += lin(pre + "fc1", f, d)
        specs += lin(pre + "fc2", d, f)
        specs += ln(pre + "final_layer_norm")
    specs += ln("layer_norm")
    return specs


def make_weights(c, seed):
    return OrderedDict((n, uniform_tensor(n, s, lo, hi, seed)) for n, s, lo, hi in weight_specs(c))


def mel(c, batch, seed):
    return uniform_tensor("mel", (batch, c.num_mel_bins, 2 * c.max_source_positions), -1.0, 1.0,
                          seed)


def load_encoder(encoder, c, seed):
    sd = make_weights(c, seed)
    missing, unexpected = encoder.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()},
                                                  strict=True)
    assert not missing and not unexpected, (missing, unexpected)


def run(encoder, x):
    with torch.no_grad():
        return encoder(torch.from_numpy(x)).last_hidden_state.numpy()


def write_bin(name, arr):
    arr = np.ascontiguousarray(arr, dtype="<f4")
    arr.tofile(os.path.join(OUT, name))
    return {"file": name, "shape": list(arr.shape)}


def tiny(manifest):
    # A whisper-like model small enough to commit three times; the decoder is as small as
    # WhisperConfig allows (its keys must be ignored by the loader).
    common = dict(num_mel_bins=80, d_model=48, encoder_layers=2, encoder_attention_heads=3,
                  encoder_ffn_dim=96, max_source_positions=24, decoder_layers=1,
                  decoder_attention_heads=3, decoder_ffn_dim=32, vocab_size=64,
                  max_target_positions=8, pad_token_id=0, bos_token_id=0, eos_token_id=0,
                  decoder_start_token_id=0, begin_suppress_tokens=None)
    c = WhisperConfig(**common)
    seed = 21
    folders = {}
    # WhisperForConditionalGeneration: model.encoder.* in model.safetensors.
    cg = WhisperForConditionalGeneration(c).float().eval()
    load_encoder(cg.model.encoder, c, seed)
    cg.save_pretrained(os.path.join(OUT, "tiny_cond_gen"))
    folders["tiny_cond_gen"] = "WhisperForConditionalGeneration, model.safetensors, model.encoder.*"
    # WhisperModel: encoder.* in pytorch_model.bin.
    wm = WhisperModel(c).float().eval()
    load_encoder(wm.encoder, c, seed)
    wm.save_pretrained(os.path.join(OUT, "tiny_model_bin"), safe_serialization=False)
    folders["tiny_model_bin"] = "WhisperModel, pytorch_model.bin, encoder.*"
    # WhisperEncoder alone: bare keys in model.safetensors.
    enc = WhisperEncoder(c).float().eval()
    load_encoder(enc, c, seed)
    enc.save_pretrained(os.path.join(OUT, "tiny_encoder"))
    folders["tiny_encoder"] = "WhisperEncoder, model.safetensors, bare keys"
    x = mel(c, 2, seed)
    out = run(enc, x)
    assert np.array_equal(out, run(wm.encoder, x)) and np.array_equal(out, run(cg.model.encoder, x))
    manifest["tiny"] = {"folders": folders, "seed": seed,
                        "mel": write_bin("tiny_mel.bin", x),
                        "last_hidden_state": write_bin("tiny_last_hidden_state.bin", out)}


def real_shape(manifest, name, seed, **shape):
    c = WhisperConfig(**shape)
    enc = WhisperEncoder(c).float().eval()
    load_encoder(enc, c, seed)
    out = run(enc, mel(c, 1, seed))[0]  # [1500, D]
    rows = [0, 1, 700, 1234, 1499]
    manifest[name] = {
        "seed": seed, "config": shape, "rows_checked": rows,
        "rows": write_bin(f"{name}_rows.bin", out[rows]),
        "row_sums": write_bin(f"{name}_row_sums.bin", out.astype(np.float64).sum(1)),
        "row_abs_sums": write_bin(f"{name}_row_abs_sums.bin",
                                  np.abs(out.astype(np.float64)).sum(1))}


def truncation(manifest):
    """The front end's valid-frame count (attention mask sum) for a few clip lengths, and the
    encoder rows ModRWKV keeps: the first sum(mask) // 2 + 1 (at most 1500)."""
    fe = WhisperFeatureExtractor()
    cases = []
    for samples in (1, 159, 160, 161, 16000, 123456, 479999, 480000, 480001, 800000):
        f = fe(np.zeros(samples, dtype=np.float32), sampling_rate=16000,
               return_attention_mask=True, return_tensors="np")
        assert f["input_features"].shape[-1] == 3000
        valid = int(f["attention_mask"].sum())
        enc = np.zeros((1, 1500, 1))
        kept = enc[:, :valid // 2 + 1].shape[1]
        cases.append({"samples": samples, "valid_mel_frames": valid, "kept_frames": kept})
    manifest["truncation"] = cases


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    manifest = {"generator": "tools/golden/gen_whisper_fixtures.py",
                "transformers": __import__("transformers").__version__,
                "torch": torch.__version__}
    tiny(manifest)
    truncation(manifest)
    real_shape(manifest, "whisper_small", 2026, d_model=768, encoder_layers=12,
               encoder_attention_heads=12, encoder_ffn_dim=3072)
    real_shape(manifest, "whisper_medium", 2027, d_model=1024, encoder_layers=24,
               encoder_attention_heads=16, encoder_ffn_dim=4096)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
