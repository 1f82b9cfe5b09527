#!/usr/bin/python3
"""Checkpoint reader fixtures, made by the real writers (torch.save and the safetensors package).

Writes small files into tests/golden/checkpoint/ plus expected.json (names, dtypes, shapes and every
value as a float, or for the "bad" files a substring the reader's error must contain); the C++ test
tests/engine/checkpoint/checkpoint_golden_test.cc reads them all back.

It also checks the other direction: that files written by our WriteTorchCheckpoint and
WriteSafetensors load in real torch / safetensors. Those files (modrwkv_written.*) are produced by
the C++ test from the "modrwkv_written" spec in expected.json and are committed; the test fails if
the writer's output ever changes. To regenerate everything:

  /usr/bin/python3 tools/golden/gen_checkpoint_fixtures.py           # torch fixtures + expected.json
  MODRWKV_UPDATE_GOLDEN=1 build/bin/checkpoint_golden_test           # our writers' files
  /usr/bin/python3 tools/golden/gen_checkpoint_fixtures.py --verify-only   # torch.load them

Needs torch (Debian: apt-get install python3-torch, i.e. torch 1.13) and the safetensors package
(pip install safetensors).
"""

import argparse
import collections
import io
import json
import os
import sys
import zipfile

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "golden", "checkpoint")

DTYPES = {torch.bfloat16: "bf16", torch.float16: "f16", torch.float32: "f32"}
TORCH_DTYPES = {v: k for k, v in DTYPES.items()}


def describe(state):
    """Expected-json entry for a dict of tensors (non-tensor values are expected to be skipped)."""
    out = {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            continue
        out[name] = {
            "dtype": DTYPES[t.dtype],
            "shape": list(t.shape),
            "values": [float(x) for x in t.detach().float().reshape(-1).tolist()],
        }
    return out


def rnd(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype)


def blinkdl_style_state():
    """A plain dict, as RWKV training scripts save it, covering the layouts the reader must handle."""
    shared = rnd(32, dtype=torch.bfloat16)  # one storage, two views at non-zero offsets
    half_base = rnd(20, dtype=torch.float16)
    param = torch.nn.Parameter(rnd(2, 3))
    return {
        "emb.weight": rnd(8, 4, dtype=torch.bfloat16),
        "blocks.0.att.x_r": rnd(1, 1, 4, dtype=torch.bfloat16),  # [1,1,C]
        "blocks.0.ln1.weight": rnd(4),  # 1-d
        "blocks.0.att.key.weight": rnd(4, 4, dtype=torch.float16),
        "blocks.0.att.r_k": rnd(2, 2),
        "scalar": torch.tensor(3.25),  # 0-d
        "shared.a": shared[4:12].view(2, 4),
        "shared.b": shared[16:32].view(4, 4),
        "half.tail": half_base[5:20].view(3, 5),
        "param": param,
        "empty": torch.zeros(0, 4),
        "not_a_tensor": 7,  # skipped by the reader
    }


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.ln = torch.nn.LayerNorm(3)


def write_torch_fixtures(expected):
    torch.manual_seed(1234)
    state = blinkdl_style_state()
    path = os.path.join(OUT, "torch_state_dict.pth")
    torch.save(state, path)  # archive folder = file stem
    expected["files"]["torch_state_dict.pth"] = {"format": "torch", "tensors": describe(state)}

    # nn.Module.state_dict(): an OrderedDict carrying _metadata (pickled with BUILD), saved to a
    # buffer so the archive folder is "archive".
    torch.manual_seed(99)
    sd = Tiny().to(torch.bfloat16).state_dict()
    buf = io.BytesIO()
    torch.save(sd, buf)
    with open(os.path.join(OUT, "torch_module.pth"), "wb") as f:
        f.write(buf.getvalue())
    expected["files"]["torch_module.pth"] = {"format": "torch", "tensors": describe(sd)}

    # Files the reader must refuse, with the substring its error must contain.
    bad = expected["bad"]
    torch.save({"ok": rnd(2), "steps": torch.arange(4)}, os.path.join(OUT, "bad_int64.pth"))
    bad["bad_int64.pth"] = "tensor steps has dtype int64"
    torch.save({"w": rnd(3, 2).t()}, os.path.join(OUT, "bad_noncontiguous.pth"))
    bad["bad_noncontiguous.pth"] = "tensor w has shape [2,3] with strides (1,2)"

    with zipfile.ZipFile(path) as src:
        infos = src.infolist()
        with zipfile.ZipFile(os.path.join(OUT, "bad_compressed.pth"), "w") as dst:
            for info in infos:
                dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
        bad["bad_compressed.pth"] = "is compressed (method 8)"
        with zipfile.ZipFile(os.path.join(OUT, "bad_missing_storage.pth"), "w") as dst:
            for info in infos:
                if not info.filename.endswith("/data/1"):
                    dst.writestr(info.filename, src.read(info))
        bad["bad_missing_storage.pth"] = "storage entry torch_state_dict/data/1 is missing"


def write_safetensors_fixtures(expected):
    from safetensors.torch import save_file

    torch.manual_seed(7)
    state = {
        "emb.weight": rnd(6, 4, dtype=torch.bfloat16),
        "blocks.0.att.x_k": rnd(1, 1, 4, dtype=torch.bfloat16),
        "blocks.0.att.key.weight": rnd(4, 4, dtype=torch.float16),
        "ln_out.weight": rnd(4),
        "scalar": torch.tensor(-1.5),
    }
    save_file(state, os.path.join(OUT, "safetensors_mixed.safetensors"), metadata={"format": "pt"})
    expected["files"]["safetensors_mixed.safetensors"] = {
        "format": "safetensors", "tensors": describe(state)}
    save_file({"x": torch.ones(2, dtype=torch.float64)},
              os.path.join(OUT, "bad_f64.safetensors"))
    expected["bad"]["bad_f64.safetensors"] = "tensor x has dtype F64"


def modrwkv_written_spec():
    """The tensors our C++ writers put into modrwkv_written.{pth,safetensors}: exact in each dtype."""
    return {
        "a.bf16": {"dtype": "bf16", "shape": [2, 3], "values": [i * 0.5 - 1 for i in range(6)]},
        "b.f16": {"dtype": "f16", "shape": [4], "values": [(i - 2) * 0.25 for i in range(4)]},
        "c.f32": {"dtype": "f32", "shape": [1, 1, 3], "values": [i + 0.125 for i in range(3)]},
        "d.scalar": {"dtype": "f32", "shape": [], "values": [3.5]},
        "e.empty": {"dtype": "f32", "shape": [0, 4], "values": []},
        "f.long": {"dtype": "bf16", "shape": [300], "values": [float(i % 128) for i in range(300)]},
    }


def check_loaded(name, loaded, spec):
    if not isinstance(loaded, dict):
        raise SystemExit(f"{name}: loaded a {type(loaded).__name__}, expected a dict")
    if sorted(loaded.keys()) != sorted(spec.keys()):
        raise SystemExit(f"{name}: names {sorted(loaded.keys())} != {sorted(spec.keys())}")
    for key, want in spec.items():
        t = loaded[key]
        if t.dtype != TORCH_DTYPES[want["dtype"]] or list(t.shape) != want["shape"]:
            raise SystemExit(f"{name}: {key} is {t.dtype}{list(t.shape)}, expected {want}")
        if t.float().reshape(-1).tolist() != want["values"]:
            raise SystemExit(f"{name}: {key} values differ")
        if not t.is_contiguous():
            raise SystemExit(f"{name}: {key} is not contiguous")


def verify_ours(spec):
    """torch.load / safetensors read what our writers produced. Returns False if not yet written."""
    pth = os.path.join(OUT, "modrwkv_written.pth")
    st = os.path.join(OUT, "modrwkv_written.safetensors")
    if not (os.path.exists(pth) and os.path.exists(st)):
        print("modrwkv_written.* not found: run MODRWKV_UPDATE_GOLDEN=1 "
              "build/bin/checkpoint_golden_test, then this script with --verify-only")
        return False
    loaded = torch.load(pth, map_location="cpu")
    if not isinstance(loaded, collections.OrderedDict):
        raise SystemExit(f"modrwkv_written.pth: loaded a {type(loaded).__name__}, "
                         "expected an OrderedDict")
    check_loaded("modrwkv_written.pth", loaded, spec)
    from safetensors.torch import load_file
    check_loaded("modrwkv_written.safetensors", load_file(st), spec)
    print(f"torch {torch.__version__} and safetensors load modrwkv_written.* correctly")
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verify-only", action="store_true",
                    help="only check that torch loads the files our writers produced")
    args = ap.parse_args()
    spec = modrwkv_written_spec()
    if args.verify_only:
        sys.exit(0 if verify_ours(spec) else 1)

    os.makedirs(OUT, exist_ok=True)
    expected = {"generator": f"torch {torch.__version__}", "files": {}, "bad": {},
                "modrwkv_written": spec}
    write_torch_fixtures(expected)
    write_safetensors_fixtures(expected)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote fixtures to {OUT}")
    verify_ours(spec)


if __name__ == "__main__":
    main()
