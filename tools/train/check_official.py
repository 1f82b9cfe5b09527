"""Checks the shipped vision demo checkpoint against the official generation-A inference code.

Runs JL-er/WorldRWKV@afb131a infer/rwkv/model.py (read from the local mirror) on image rows +
prompt, the way its forward() splices them (prepend, then ln0 over everything), and compares the
final logits with tools/train/vision_demo_model.py.

  /work/venv-tf/bin/python tools/train/check_official.py [--model assets/vision-demo]
"""

import argparse
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vision_demo_model as vm  # noqa: E402
from transformers import SiglipImageProcessor, SiglipVisionModel  # noqa: E402

MIRROR = "/work/.mirror/JL-er+WorldRWKV/repo"
GEN_A = "afb131ad34a2fd243a8f54e5e303f590cbe3648d"
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def official_rwkv_class():
    src = subprocess.check_output(["git", "-C", MIRROR, "show", f"{GEN_A}:infer/rwkv/model.py"])
    d = tempfile.mkdtemp()
    os.makedirs(os.path.join(d, "infer", "rwkv"))
    for p in ("infer/__init__.py", "infer/rwkv/__init__.py"):
        open(os.path.join(d, p), "w").close()
    with open(os.path.join(d, "infer", "rwkv", "model.py"), "wb") as f:
        f.write(src)
    os.environ["RWKV_JIT_ON"] = "0"
    os.environ["RWKV_CUDA_ON"] = "0"
    sys.path.insert(0, d)
    from infer.rwkv.model import RWKV  # noqa: E402

    return RWKV


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(REPO, "assets", "vision-demo"))
    args = ap.parse_args()
    sd = torch.load(os.path.join(args.model, "rwkv-0.pth"))
    enc = SiglipVisionModel.from_pretrained(os.path.join(args.model, "encoder")).eval()
    proc = SiglipImageProcessor.from_pretrained(os.path.join(args.model, "encoder"))
    ex = os.path.join(args.model, "examples")
    img = Image.open(os.path.join(ex, sorted(f for f in os.listdir(ex) if f[-3:] in "pngjpg")[0]))
    pix = torch.from_numpy(proc(img.convert("RGB"), return_tensors="np")["pixel_values"])
    toks = [23, 24281, 59, 30031, 39654, 4600, 4596, 22590, 52467, 64, 24, 23, 5585, 41693, 59]

    c = sd["emb.weight"].shape[1]
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    hidden = sd[vm.ADAPTER_PREFIX + "proj.0.weight"].shape[0]
    m = vm.VisionDemoModel(enc.config, c, n_layer, hidden)
    m.encoder = enc
    m.load_export(sd)
    with torch.no_grad():
        rows = m.image_rows(pix)
        x = torch.cat([rows, m.rwkv.emb(torch.tensor([toks]))], 1)
        h, _ = m.rwkv(x)
        mine = m.rwkv.logits(h)[0, -1]

        ref_model = official_rwkv_class()(
            model={k: v.float().clone() for k, v in sd.items() if not k.startswith("modality.")},
            strategy="cpu fp32")
        z = ref_model.z
        xo = F.layer_norm(x[0], (c,), weight=z["blocks.0.ln0.weight"], bias=z["blocks.0.ln0.bias"])
        state = []
        for _ in range(n_layer):
            state += [torch.zeros(c), torch.zeros(c // 64, 64, 64), torch.zeros(c)]
        ref, _ = ref_model.forward_seq(xo, state, False)
    diff = (mine - ref).abs().max().item()
    print(f"image rows {rows.shape[1]}, max |logit diff| vs official = {diff:.3g}, "
          f"argmax {mine.argmax().item()} vs {ref.argmax().item()}")
    sys.exit(0 if diff < 1e-3 and mine.argmax() == ref.argmax() else 1)


if __name__ == "__main__":
    main()
