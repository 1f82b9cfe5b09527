#!/work/venv-tf/bin/python
"""Golden fixtures for encoders/adapter: the official ModRWKV adapter modules, small and seeded.

The module classes below copy the official definitions (same submodule names, nn.Sequential
indices, LayerNorm defaults, conv settings), so their state dicts carry the official key names:
  generation A (JL-er/WorldRWKV afb131ad) world/encoder/siglip_encoder.py VisualAdapter (hidden 4C),
    clip_encoder.py VisualAdapter (hidden 2C), speech_encoder.py / whisper_encoder.py SpeechAdapter;
  the earlier generation A (JL-er/WorldRWKV 6c39cdb) speech_encoder.py SpeechAdapter (conv ->
    torch nn.TransformerEncoderLayer -> linear);
  generation B (JL-er/WorldRWKV HEAD 0881058) world/projector/test.py VisualAdapter (use_conv);
  generation C (Joluck/WorldRWKV c0597a8) lg_train/projector/modules.py VlProj, ModalityProjector.
Deviations, all of sizes only: small widths; SpeechAdapter's padding is a parameter (the official
class hard-codes 2; 0 is the earlier variant); the paper's conv compression changes the gen B conv's
kernel/stride; ModalityProjector's input width is encoder_dim * 16 instead of the hard-coded
12288 (= 768 * 4 * 4); the earlier SpeechAdapter's conv width (3072), head count (8) and
dim_feedforward (4096) are parameters, and one case runs the same layer with norm_first and GELU
(the chain's options; not an official configuration). MultiheadAttention's biases (zero at init)
and every LayerNorm's weight and bias are randomised so that they are tested.

Writes tests/golden/adapter/: <case>.safetensors (state dict under the official prefix, f32),
<case>_input.bin, <case>_output.bin (f32 little-endian, [rows][dim]) and manifest.json.
Run: /work/venv-tf/bin/python tools/golden/gen_adapter_fixtures.py
"""
import json
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file
from transformers.activations import GELUActivation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "golden", "adapter")


# ---- generation A: world/encoder/siglip_encoder.py (hidden 4C) and clip_encoder.py (hidden 2C)
class VisualAdapterA(nn.Module):
    def __init__(self, encoder_dim, project_dim, hidden_dim=None, hidden_mult=4):
        super().__init__()
        self.encoder_dim = encoder_dim
        self.project_dim = project_dim
        self.hidden_dim = hidden_dim
        if self.hidden_dim == None:
            self.hidden_dim = project_dim * hidden_mult
        self.pre_norm = nn.LayerNorm(self.project_dim)
        self.proj = nn.Sequential(
            nn.Linear(self.encoder_dim, self.hidden_dim),
            nn.ReLU(),
            nn.Linear(self.hidden_dim, self.project_dim),
        )

    def forward(self, x):
        x = self.proj(x)
        return x + self.pre_norm(x)


# ---- generation A: world/encoder/speech_encoder.py SpeechAdapter (whisper_encoder.py: the same)
class SpeechAdapter(nn.Module):
    def __init__(self, encoder_dim, project_dim, hidden_dim=None, padding=2):
        super(SpeechAdapter, self).__init__()
        self.encoder_dim = encoder_dim
        self.project_dim = project_dim
        self.hidden_dim = hidden_dim
        if self.hidden_dim == None:
            self.hidden_dim = project_dim * 2
        self.conv = nn.Conv1d(in_channels=self.encoder_dim, out_channels=self.hidden_dim,
                              kernel_size=3, stride=2, padding=padding)
        self.proj = nn.Sequential(
            nn.Linear(self.hidden_dim, self.hidden_dim),
            nn.ReLU(),
            nn.Linear(self.hidden_dim, self.project_dim),
        )

    def forward(self, x):
        x = x.permute(0, 2, 1)
        x = self.conv(x).permute(0, 2, 1)
        x = self.proj(x)
        return x


# ---- earlier generation A: world/encoder/speech_encoder.py SpeechAdapter at 6c39cdb
class SpeechAdapterTransformer(nn.Module):
    def __init__(self, input_dim, output_dim, width=3072, nhead=8, dim_feedforward=4096,
                 norm_first=False, activation="relu"):
        super(SpeechAdapterTransformer, self).__init__()
        self.encoder_dim = input_dim  # not in the official class: read by main()
        self.conv = nn.Conv1d(in_channels=input_dim, out_channels=width, kernel_size=3, stride=2)
        self.transformer = nn.TransformerEncoderLayer(d_model=width, nhead=nhead,
                                                      dim_feedforward=dim_feedforward,
                                                      norm_first=norm_first, activation=activation)
        self.linear = nn.Linear(width, output_dim)

    def forward(self, x):
        # x shape: (batch_size, seq_len, input_dim)
        x = x.permute(0, 2, 1)
        x = self.conv(x)
        x = x.permute(2, 0, 1)  # Transformer expects (seq_len, batch_size, input_dim)
        x = self.transformer(x)
        x = x.permute(1, 0, 2)  # Back to (batch_size, seq_len, input_dim)
        x = self.linear(x)
        return x


# ---- generation B: world/projector/test.py VisualAdapter (kernel/stride: the paper's ablation)
class VisualAdapterB(nn.Module):
    def __init__(self, encoder_dim, project_dim, hidden_dim=None, use_conv=False, kernel_size=3,
                 stride=2):
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
                                  kernel_size=kernel_size, stride=stride)

    def forward(self, x):
        if self.use_conv:
            x = self.conv(x.permute(0, 2, 1)).permute(0, 2, 1)
        x = self.mlp(x)
        return x + self.pre_norm(x)


# ---- generation C: lg_train/projector/modules.py VlProj ("auto_siglip2")
class VlProj(nn.Module):
    def __init__(self, encoder_dim, project_dim, hidden_dim=None, use_conv=False):
        super().__init__()
        self.encoder_dim = encoder_dim
        self.project_dim = project_dim
        self.hidden_dim = hidden_dim
        self.use_conv = use_conv
        if self.hidden_dim == None:
            self.hidden_dim = project_dim * 4
        self.pre_norm = nn.LayerNorm(self.project_dim)  # constructed, never applied
        self.mlp = nn.Sequential(
            nn.Linear(self.encoder_dim, self.hidden_dim),
            GELUActivation(),
            nn.Linear(self.hidden_dim, self.project_dim),
        )
        self.conv = nn.Conv1d(in_channels=encoder_dim, out_channels=encoder_dim, bias=False,
                              kernel_size=6, stride=5)

    def forward(self, x):
        x = self.conv(x.permute(0, 2, 1)).permute(0, 2, 1)
        x = self.mlp(x)
        return x


# ---- generation C: lg_train/projector/modules.py ModalityProjector ("siglip2")
class ModalityProjector(nn.Module):
    def __init__(self, encoder_dim, project_dim, hidden_dim=None, use_conv=False):
        super().__init__()
        self.scale_factor = 4
        self.input_dim = encoder_dim * self.scale_factor ** 2  # official: 12288 = 768 * 16
        self.output_dim = project_dim
        self.proj = nn.Linear(self.input_dim, self.output_dim, bias=False)

    def pixel_shuffle(self, x):
        bsz, seq, embed_dim = x.size()
        seq_root = int(seq ** 0.5)
        assert seq_root ** 2 == seq
        assert seq_root % self.scale_factor == 0
        height = width = seq_root
        x = x.view(bsz, height, width, embed_dim)
        h_out = height // self.scale_factor
        w_out = width // self.scale_factor
        x = x.reshape(bsz, h_out, self.scale_factor, w_out, self.scale_factor, embed_dim)
        x = x.permute(0, 1, 3, 2, 4, 5).contiguous()
        x = x.reshape(bsz, h_out * w_out, embed_dim * self.scale_factor ** 2)
        return x

    def forward(self, x):
        x = self.pixel_shuffle(x)
        x = self.proj(x)
        return x


A_PREFIX = "modality.world_encoder.adapter."
B_PREFIX = "proj."

# The chain of the pre-norm / GELU variant, as a manifest would write it.
PRENORM_GELU_CHAIN = [
    {"op": "conv1d", "weights": "conv", "kernel": 3, "stride": 2, "padding": 0, "bias": True},
    {"op": "transformer_encoder_layer", "weights": "transformer", "heads": 4,
     "activation": "gelu", "norm_first": True},
    {"op": "linear", "weights": "linear"},
]

# name, preset (C++ function that builds the same chain, or the chain itself as JSON), prefix,
# module factory, input rows
CASES = [
    ("vision_a", "VisionAdapterA()", A_PREFIX, lambda: VisualAdapterA(20, 24), 10),
    ("vision_a_clip", "VisionAdapterA()", A_PREFIX, lambda: VisualAdapterA(20, 24, hidden_mult=2), 7),
    ("vision_b", "VisionAdapterB(false)", B_PREFIX, lambda: VisualAdapterB(20, 24), 10),
    ("vision_b_conv", "VisionAdapterB(true)", B_PREFIX,
     lambda: VisualAdapterB(20, 24, use_conv=True), 17),
    ("speech_a_pad2", "SpeechAdapterA(2)", A_PREFIX, lambda: SpeechAdapter(20, 24, padding=2), 13),
    ("speech_a_pad0", "SpeechAdapterA(0)", A_PREFIX, lambda: SpeechAdapter(20, 24, padding=0), 13),
    ("conv_k3s2", "ConvCompressionAdapter(3, 2)", B_PREFIX,
     lambda: VisualAdapterB(20, 24, use_conv=True, kernel_size=3, stride=2), 25),
    ("conv_k4s3", "ConvCompressionAdapter(4, 3)", B_PREFIX,
     lambda: VisualAdapterB(20, 24, use_conv=True, kernel_size=4, stride=3), 25),
    ("conv_k5s4", "ConvCompressionAdapter(5, 4)", B_PREFIX,
     lambda: VisualAdapterB(20, 24, use_conv=True, kernel_size=5, stride=4), 25),
    ("conv_projector_c", "ConvProjectorC()", B_PREFIX, lambda: VlProj(20, 24), 26),
    ("pixel_shuffle_c", "PixelShuffleProjectorC()", B_PREFIX, lambda: ModalityProjector(12, 24), 64),
    ("speech_a_transformer_h4", "SpeechAdapterATransformer(4)", A_PREFIX,
     lambda: SpeechAdapterTransformer(48, 32, width=64, nhead=4, dim_feedforward=96), 23),
    ("speech_a_transformer", "SpeechAdapterATransformer(8)", A_PREFIX,
     lambda: SpeechAdapterTransformer(48, 32, width=64, nhead=8, dim_feedforward=96), 23),
    ("speech_a_transformer_prenorm_gelu", PRENORM_GELU_CHAIN, A_PREFIX,
     lambda: SpeechAdapterTransformer(48, 32, width=64, nhead=4, dim_feedforward=96,
                                      norm_first=True, activation="gelu"), 23),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    manifest = {"generator": "tools/golden/gen_adapter_fixtures.py",
                "torch": torch.__version__, "dtype": "f32", "cases": []}
    for i, (name, preset, prefix, make, rows) in enumerate(CASES):
        torch.manual_seed(1000 + i)
        m = make().eval()
        with torch.no_grad():
            # LayerNorm defaults (ones, zeros) would not test gamma/beta: randomise them.
            for mod in m.modules():
                if isinstance(mod, nn.LayerNorm):
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.uniform_(-0.2, 0.2)
                if isinstance(mod, nn.MultiheadAttention):  # its biases start at zero
                    mod.in_proj_bias.uniform_(-0.2, 0.2)
                    mod.out_proj.bias.uniform_(-0.2, 0.2)
            in_dim = m.encoder_dim if hasattr(m, "encoder_dim") else m.input_dim // 16
            x = torch.randn(1, rows, in_dim)
            y = m(x)
        sd = {prefix + k: v.detach().contiguous().clone() for k, v in m.state_dict().items()}
        save_file(sd, os.path.join(OUT, name + ".safetensors"))
        x[0].numpy().astype("<f4").tofile(os.path.join(OUT, name + "_input.bin"))
        y[0].numpy().astype("<f4").tofile(os.path.join(OUT, name + "_output.bin"))
        case = {"name": name}
        case["chain" if isinstance(preset, list) else "preset"] = preset
        case.update({
            "prefix": prefix, "module": type(m).__name__,
            "input_rows": rows, "input_dim": in_dim,
            "output_rows": int(y.shape[1]), "output_dim": int(y.shape[2]),
            "keys": {k: list(v.shape) for k, v in sd.items()},
            "output_max_abs": float(y.abs().max()),
        })
        manifest["cases"].append(case)
        print(f"{name}: [{rows},{in_dim}] -> [{y.shape[1]},{y.shape[2]}]  keys {list(sd)}")
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
