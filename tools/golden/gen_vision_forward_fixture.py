#!/work/venv-tf/bin/python
"""Whole-forward golden fixture for ModRWKV vision: image -> SigLIP -> adapter -> RWKV7 logits,
computed with the OFFICIAL code of generations A and B.

Builds, seeded and tiny (tests/golden/vision_forward/, format in tools/golden/README.md):
  encoder/   a random SigLIP vision tower (transformers SiglipVisionModel: image 32, patch 8, hidden
             64, 2 layers, 2 heads, MLP 128, no pooling head) with a preprocessor_config.json
             (resize to 32x32 bilinear, x/255, mean/std 0.5)
  rwkv-0.pth generation A: bare RWKV7 keys + modality.world_encoder.adapter.{proj.0,proj.2,pre_norm}
  rwkv-b.pth generation B: llm.* + proj.{mlp.0,mlp.2,pre_norm}.* + encoder.model.* (the tower)
The LLM is tests/golden/rwkv7/micro's (random_weights.py, L2 C64 V256 seed 7, bf16-rounded).
Every weight is bf16-exact and stored as bf16 (as released checkpoints are); all references run
in fp32 ('cpu fp32'), so loading bf16 and computing in f32 is exact.

The official forward: generation A infer/rwkv/model.py (JL-er/WorldRWKV afb131ad) and generation B
infer/rwkv/model.py (HEAD 0881058), `git show`n from the mirror into a temp dir and imported, with
RWKV_JIT_ON=1 and RWKV_CUDA_ON=0. Two literal substitutions make them run here, nothing else:
  A: `x.to('cuda')` (the token rows before the image rows are prepended) -> `x.to(sign.device)`;
  B: the image-pad id 65532 -> 252 (the tiny vocabulary has 256 rows; 250/251/252 stand for
     <|vision_start|>/<|vision_end|>/<|image_pad|>).
The encoder runs as the official SiglipEncoder does (AutoModel.from_pretrained(folder).vision_model,
SiglipImageProcessor.from_pretrained(folder), last_hidden_state), in fp32 on the CPU instead of bf16
on CUDA. Adapters are the official module definitions (copied; as in gen_adapter_fixtures.py).

Run: /work/venv-tf/bin/python tools/golden/gen_vision_forward_fixture.py [--mirror DIR]
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

os.environ["RWKV_JIT_ON"] = "1"
os.environ["RWKV_CUDA_ON"] = "0"

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from PIL import Image  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "golden", "vision_forward")
sys.path.insert(0, HERE)
from random_weights import make_weights, to_bf16_rounded  # noqa: E402

GEN_A = "afb131ad34a2fd243a8f54e5e303f590cbe3648d"
GEN_B = "0881058"
L, C, V, SEED = 2, 64, 256, 7  # = tests/golden/rwkv7/micro
VISION_START, VISION_END, IMAGE_PAD = 250, 251, 252


# generation A world/encoder/siglip_encoder.py VisualAdapter (hidden given: 2C, as released)
class VisualAdapterA(nn.Module):
    def __init__(self, encoder_dim, project_dim, hidden_dim=None):
        super().__init__()
        self.encoder_dim = encoder_dim
        self.project_dim = project_dim
        self.hidden_dim = hidden_dim
        if self.hidden_dim == None:
            self.hidden_dim = project_dim * 4
        self.pre_norm = nn.LayerNorm(self.project_dim)
        self.proj = nn.Sequential(
            nn.Linear(self.encoder_dim, self.hidden_dim),
            nn.ReLU(),
            nn.Linear(self.hidden_dim, self.project_dim),
        )

    def forward(self, x):
        x = self.proj(x)
        return x + self.pre_norm(x)


# generation B world/projector/test.py VisualAdapter (default hidden 4C)
class VisualAdapterB(nn.Module):
    def __init__(self, encoder_dim, project_dim, hidden_dim=None, use_conv=False):
        super().__init__()
        self.encoder_dim = encoder_dim
        self.project_dim = project_dim
        self.hidden_dim = hidden_dim
        self.use_conv = use_conv
        if self.hidden_dim == None:
            self.hidden_dim = project_dim * 4
        self.pre_norm = nn.LayerNorm(self.project_dim)
        self.mlp = nn.Sequential(
            nn.Linear(self.encoder_dim, self.hidden_dim),
            nn.ReLU(),
            nn.Linear(self.hidden_dim, self.project_dim),
        )
        if use_conv:
            self.conv = nn.Conv1d(in_channels=encoder_dim, out_channels=encoder_dim, bias=False,
                                  kernel_size=3, stride=2)

    def forward(self, x):
        if self.use_conv:
            x = self.conv(x.permute(0, 2, 1)).permute(0, 2, 1)
        x = self.mlp(x)
        return x + self.pre_norm(x)


def bf16_params(module, seed):
    """Randomise LayerNorm affine parameters (defaults would not test them), round all to bf16."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_((torch.rand(m.bias.shape, generator=g) - 0.5) * 0.4)
        for p in module.parameters():
            p.copy_(torch.from_numpy(to_bf16_rounded(p.detach().numpy())))


def load_official(mirror, commit, name, substitutions):
    src = subprocess.check_output(["git", "-C", mirror, "show", f"{commit}:infer/rwkv/model.py"],
                                  text=True)
    for old, new in substitutions:
        assert src.count(old) == 1, (commit, old, src.count(old))
        src = src.replace(old, new)
    d = tempfile.mkdtemp(prefix=name)
    path = os.path.join(d, name + ".py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def byte_ids(text):
    """Ids of the world tokenizer's single-byte tokens (id = byte + 1): the tiny vocabulary."""
    return [b + 1 for b in text.encode("utf-8")]


def save_f32(arr, name):
    a = np.ascontiguousarray(np.asarray(arr, dtype="<f4"))
    a.tofile(os.path.join(OUT, name))
    return {"file": name, "shape": list(a.shape)}


def max_rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirror", default="/work/.mirror/JL-er+WorldRWKV/repo")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    from transformers import AutoModel, SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel
    import transformers

    # (a) the vision tower
    torch.manual_seed(SEED)
    cfg = SiglipVisionConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=128, vision_use_head=False)
    tower = SiglipVisionModel(cfg).eval()
    with torch.no_grad():  # HF's init leaves some tensors at zero: draw every one
        g = torch.Generator().manual_seed(SEED + 1)
        for n, p in tower.named_parameters():
            if "layer_norm" in n or "post_layernorm" in n:
                continue
            fan_in = p.shape[-1] if p.dim() > 1 else 64
            p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
    bf16_params(tower, SEED + 2)
    enc_dir = os.path.join(OUT, "encoder")
    tower.to(torch.bfloat16).save_pretrained(enc_dir, safe_serialization=True)
    tower.float()
    SiglipImageProcessor(do_resize=True, size={"height": 32, "width": 32}, resample=2,
                         do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                         image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]).save_pretrained(enc_dir)

    # the image: 48 wide x 40 high (the processor resizes it), gradients plus seeded noise
    rng = np.random.default_rng(SEED)
    yy, xx = np.mgrid[0:40, 0:48]
    img = np.stack([xx * 5, yy * 6, (xx + yy) * 3], -1) + rng.integers(0, 60, (40, 48, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    Image.fromarray(img, "RGB").save(os.path.join(OUT, "image.png"))

    # the official SiglipEncoder path, from the saved folder
    image = Image.open(os.path.join(OUT, "image.png")).convert("RGB")
    model = AutoModel.from_pretrained(enc_dir, torch_dtype=torch.float32).vision_model.eval()
    processor = SiglipImageProcessor.from_pretrained(enc_dir)
    pixels = torch.from_numpy(processor(image)["pixel_values"][0])
    with torch.no_grad():
        feats = model(pixels.unsqueeze(0), output_hidden_states=True).last_hidden_state  # [1,16,64]

    # (b), (c) adapters and checkpoints
    llm = {k: torch.from_numpy(to_bf16_rounded(v)) for k, v in make_weights(L, C, V, SEED).items()}
    torch.manual_seed(SEED + 3)
    adapter_a = VisualAdapterA(64, C, hidden_dim=2 * C).eval()
    bf16_params(adapter_a, SEED + 4)
    torch.manual_seed(SEED + 5)
    adapter_b = VisualAdapterB(64, C).eval()
    bf16_params(adapter_b, SEED + 6)
    bf = lambda t: t.detach().to(torch.bfloat16).contiguous().clone()
    ckpt_a = {k: bf(v) for k, v in llm.items()}
    ckpt_a.update({"modality.world_encoder.adapter." + k: bf(v)
                   for k, v in adapter_a.state_dict().items()})
    ckpt_b = {"llm." + k: bf(v) for k, v in llm.items()}
    ckpt_b.update({"proj." + k: bf(v) for k, v in adapter_b.state_dict().items()})
    ckpt_b.update({"encoder.model." + k: bf(v) for k, v in model.state_dict().items()})
    torch.save(ckpt_a, os.path.join(OUT, "rwkv-0.pth"))
    torch.save(ckpt_b, os.path.join(OUT, "rwkv-b.pth"))

    # generation A, as infer/worldmodel.py (afb131ad) does it
    rwkv_a = load_official(args.mirror, GEN_A, "official_rwkv_gen_a",
                           [("x.to('cuda')", "x.to(sign.device)")])
    weights = torch.load(os.path.join(OUT, "rwkv-0.pth"), map_location="cpu")
    modality = {k.replace("modality.world_encoder.", ""): v for k, v in weights.items()
                if "modality" in k}
    adapter = VisualAdapterA(64, C, hidden_dim=2 * C)
    adapter.load_state_dict({k[len("adapter."):]: v.float() for k, v in modality.items()})
    with torch.no_grad():
        sign_a = adapter.eval()(feats)
    model_a = rwkv_a.RWKV(model=weights, strategy="cpu fp32")
    prompt_a = "\x16User: Hi\x17Assistant:"
    ids_a = byte_ids(prompt_a)
    logits_a, _ = model_a.forward(ids_a, None, full_output=True, sign=sign_a)  # [T, V]
    # how much the image moves the final logits (a fixture that ignored it would test nothing)
    blank_a, _ = model_a.forward(ids_a, None, sign=torch.zeros_like(sign_a))
    influence_a = max_rel(blank_a.numpy(), logits_a[-1].numpy())
    # cross-check: the same module, text only, reproduces the rwkv package's micro fixture
    micro = json.load(open(os.path.join(ROOT, "tests/golden/rwkv7/micro/manifest.json")))
    text_only, _ = model_a.forward(list(micro["prompt"]), None)
    micro_logits = np.fromfile(os.path.join(ROOT, "tests/golden/rwkv7/micro/logits_32.bin"), "<f4")
    micro_rel = max_rel(text_only.numpy(), micro_logits)
    assert micro_rel < 1e-5, micro_rel

    # generation B, as infer/worldmodel.py (HEAD) does it
    rwkv_b = load_official(args.mirror, GEN_B, "official_rwkv_gen_b",
                           [("input_ids == 65532", f"input_ids == {IMAGE_PAD}")])
    weights = torch.load(os.path.join(OUT, "rwkv-b.pth"), map_location="cpu")
    proj_dict, llm_dict = {}, {}
    for k, v in weights.items():
        if k.startswith("proj."):
            proj_dict[k.replace("proj.", "", 1)] = v.float()
        elif k.startswith("llm."):
            llm_dict[k.replace("llm.", "", 1)] = v
    model_b = rwkv_b.RWKV(model=llm_dict, strategy="cpu fp32")
    proj = VisualAdapterB(64, C)
    proj.load_state_dict(proj_dict)
    with torch.no_grad():
        sign_b = proj.eval()(feats)
    n_rows = sign_b.shape[1]
    ids_b = (byte_ids("\x16User:") + [VISION_START] + [IMAGE_PAD] * n_rows + [VISION_END]
             + byte_ids("Hi\x17\x16Assistant:"))
    logits_b, _ = model_b.forward(ids_b, None, full_output=True, sign=sign_b)  # [T, V]
    blank_b, _ = model_b.forward(ids_b, None, sign=torch.zeros_like(sign_b))
    influence_b = max_rel(blank_b.numpy(), logits_b[-1].numpy())
    # the encoder.model.* keys are the tower the logits were computed with
    enc_keys = {k[len("encoder.model."):]: v for k, v in weights.items()
                if k.startswith("encoder.model.")}
    assert all(torch.equal(enc_keys[k].float(), v) for k, v in model.state_dict().items())

    manifest = {
        "generator": "tools/golden/gen_vision_forward_fixture.py",
        "llm": {"n_layer": L, "n_embd": C, "vocab_size": V, "seed": SEED,
                "same_weights_as": "tests/golden/rwkv7/micro"},
        "encoder": {"dir": "encoder", "config": cfg.to_diff_dict(),
                    "features": "last_hidden_state (after post_layernorm)"},
        "image": {"file": "image.png", "width": 48, "height": 40},
        "pixel_values": save_f32(pixels.numpy(), "pixel_values.bin"),
        "encoder_features": save_f32(feats[0].numpy(), "encoder_features.bin"),
        "gen_a": {
            "checkpoint": "rwkv-0.pth",
            "adapter": "modality.world_encoder.adapter.: proj.0 -> relu -> proj.2, y + pre_norm(y)",
            "adapter_output": save_f32(sign_a[0].numpy(), "gen_a_adapter_output.bin"),
            "splice": "prepend: [image rows, token rows], then ln0 over all",
            "prompt": prompt_a, "token_ids": ids_a,
            "logits": save_f32(logits_a.numpy(), "gen_a_logits.bin"),
            "logits_argmax": int(logits_a[-1].argmax()),
            "image_influence": influence_a,
        },
        "gen_b": {
            "checkpoint": "rwkv-b.pth",
            "adapter": "proj.: mlp.0 -> relu -> mlp.2, y + pre_norm(y)",
            "adapter_output": save_f32(sign_b[0].numpy(), "gen_b_adapter_output.bin"),
            "splice": "replace: the image rows take the places of the image_pad ids, then ln0",
            "vision_start_id": VISION_START, "vision_end_id": VISION_END,
            "image_pad_id": IMAGE_PAD, "token_ids": ids_b,
            "logits": save_f32(logits_b.numpy(), "gen_b_logits.bin"),
            "logits_argmax": int(logits_b[-1].argmax()),
            "image_influence": influence_b,
        },
        "reference": {
            "gen_a_forward": f"JL-er/WorldRWKV {GEN_A} infer/rwkv/model.py, 'cpu fp32'",
            "gen_b_forward": f"JL-er/WorldRWKV {GEN_B} infer/rwkv/model.py, 'cpu fp32'",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "gen_a_text_only_vs_micro_logits_32_max_rel_diff": micro_rel,
        },
    }
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(OUT) for fn in fns)
    print(f"gen A argmax {manifest['gen_a']['logits_argmax']} std {float(logits_a[-1].std()):.4f} influence {influence_a:.3f}; "
          f"gen B argmax {manifest['gen_b']['logits_argmax']} std {float(logits_b[-1].std()):.4f} influence {influence_b:.3f}; "
          f"micro cross-check {micro_rel:.2e}; total {total} bytes")


if __name__ == "__main__":
    main()
