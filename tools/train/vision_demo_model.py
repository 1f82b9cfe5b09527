"""The vision demo model: a tiny SigLIP vision tower + generation-A VisualAdapter + a tiny RWKV7.

Modules and parameter names follow the official code (BlinkDL RWKV-v7, JL-er/WorldRWKV generation A),
so the exported state dict loads like a released ModRWKV checkpoint. The RWKV7 forward is written
in plain torch with a sequential WKV loop (the prompts are ~90 rows).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel
from transformers.image_utils import PILImageResampling

HEAD_SIZE = 64
VOCAB_SIZE = 65536
ADAPTER_PREFIX = "modality.world_encoder.adapter."


def encoder_config(image_size=64, patch_size=16, hidden=96, layers=3, heads=4, mlp=384):
    return SiglipVisionConfig(
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_channels=3,
        image_size=image_size,
        patch_size=patch_size,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
        attention_dropout=0.0,
    )


def image_processor(image_size=64):
    # As google/siglip2-base-patch16-384's preprocessor_config.json: bilinear resize straight to a
    # square (resample=2; the class default would be bicubic), x/255, mean = std = 0.5.
    return SiglipImageProcessor(size={"height": image_size, "width": image_size},
                                resample=PILImageResampling.BILINEAR)


class VisualAdapter(nn.Module):
    """Generation A's adapter: y = proj(x); out = y + pre_norm(y)."""

    def __init__(self, encoder_dim, project_dim, hidden_dim):
        super().__init__()
        self.pre_norm = nn.LayerNorm(project_dim)
        self.proj = nn.Sequential(
            nn.Linear(encoder_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, project_dim)
        )

    def forward(self, x):
        x = self.proj(x)
        return x + self.pre_norm(x)


def _ortho(shape, gain):
    t = torch.empty(shape)
    nn.init.orthogonal_(t, gain=gain)
    return t


def _lora_dim(c, factor):
    return max(32, int(round((factor * (c**0.5)) / 32) * 32))


class TimeMix(nn.Module):
    def __init__(self, c, layer_id, n_layer):
        super().__init__()
        self.layer_id = layer_id
        h = c // HEAD_SIZE
        self.n_head = h
        r01 = layer_id / (n_layer - 1) if n_layer > 1 else 0.0
        r10 = 1.0 - layer_id / n_layer
        ddd = (torch.arange(c, dtype=torch.float32) / c).view(1, 1, c)
        self.x_r = nn.Parameter(1.0 - ddd.pow(0.2 * r10))
        self.x_w = nn.Parameter(1.0 - ddd.pow(0.9 * r10))
        self.x_k = nn.Parameter(1.0 - ddd.pow(0.7 * r10))
        self.x_v = nn.Parameter(1.0 - ddd.pow(0.7 * r10))
        self.x_a = nn.Parameter(1.0 - ddd.pow(0.9 * r10))
        self.x_g = nn.Parameter(1.0 - ddd.pow(0.2 * r10))
        n = torch.arange(c, dtype=torch.float32)
        linear = n / (c - 1) - 0.5
        zig = ((n % HEAD_SIZE) - (HEAD_SIZE - 1) / 2) / ((HEAD_SIZE - 1) / 2)
        zig = zig * zig.abs()
        www = -6 + 6 * (n / (c - 1)) ** (1 + 1 * r01**0.3)
        dw, da, dv, dg = (_lora_dim(c, f) for f in (2.5, 2.5, 1.7, 5.0))
        self.w0 = nn.Parameter((www + 0.5 + zig * 2.5).view(1, 1, c))
        self.w1 = nn.Parameter(torch.zeros(c, dw))
        self.w2 = nn.Parameter(_ortho((dw, c), 0.1))
        self.a0 = nn.Parameter((torch.zeros(c) - 0.19 + zig * 0.3 + linear * 0.4).view(1, 1, c))
        self.a1 = nn.Parameter(torch.zeros(c, da))
        self.a2 = nn.Parameter(_ortho((da, c), 0.1))
        self.v0 = nn.Parameter((torch.zeros(c) + 0.73 - linear * 0.4).view(1, 1, c))
        self.v1 = nn.Parameter(torch.zeros(c, dv))
        self.v2 = nn.Parameter(_ortho((dv, c), 0.1))
        self.g1 = nn.Parameter(_ortho((c, dg), 1.0))
        self.g2 = nn.Parameter(_ortho((dg, c), 1.0))
        self.k_k = nn.Parameter((torch.zeros(c) + 0.71 - linear * 0.1).view(1, 1, c))
        self.k_a = nn.Parameter(torch.zeros(1, 1, c) + 1.02)
        self.r_k = nn.Parameter(torch.zeros(h, HEAD_SIZE) - 0.04)
        self.receptance = nn.Linear(c, c, bias=False)
        self.key = nn.Linear(c, c, bias=False)
        self.value = nn.Linear(c, c, bias=False)
        self.output = nn.Linear(c, c, bias=False)
        self.ln_x = nn.GroupNorm(h, c, eps=64e-5)
        s = c**-0.5
        nn.init.uniform_(self.receptance.weight, -0.5 * s, 0.5 * s)
        # Deviations from the official init (output zero, g1 zero, g2 gain 0.1, keys
        # +-0.05/sqrt(C)), all tuned for long runs: with them the attention path is silent at the
        # start and this short run never learns to read the image rows (gradients into the
        # encoder stay ~1e-5). The official init uses +-0.05/sqrt(C) here, tuned for long runs; with this short run the
        # tiny keys leave the image rows' state contribution under GroupNorm's eps and training
        # stalls at the image-blind loss, so keys start at the receptance scale.
        nn.init.uniform_(self.key.weight, -0.5 * s, 0.5 * s)
        nn.init.uniform_(self.value.weight, -0.5 * s, 0.5 * s)
        nn.init.uniform_(self.output.weight, -0.5 * s, 0.5 * s)
        with torch.no_grad():
            self.ln_x.weight.fill_(((1 + layer_id) / n_layer) ** 0.7)

    def forward(self, x, x_prev, v_first, state):
        """x [B,T,C], x_prev [B,C], v_first [B,T,C] or None, state [B,H,N(v),N(k)] fp32."""
        b, t, c = x.shape
        h, n = self.n_head, HEAD_SIZE
        xx = torch.cat([x_prev.unsqueeze(1), x[:, :-1]], dim=1) - x
        xr, xw, xk = x + xx * self.x_r, x + xx * self.x_w, x + xx * self.x_k
        xv, xa, xg = x + xx * self.x_v, x + xx * self.x_a, x + xx * self.x_g
        r = self.receptance(xr)
        w = torch.tanh(xw @ self.w1) @ self.w2
        k = self.key(xk)
        v = self.value(xv)
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        kk = F.normalize((k * self.k_k).view(b, t, h, n), dim=-1, p=2.0).view(b, t, c)
        k = k * (1 + (a - 1) * self.k_a)
        if self.layer_id == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        w = torch.exp(-0.606531 * torch.sigmoid(self.w0 + w))  # 0.606531 = exp(-0.5)
        r4, w4, k4, v4 = (z.view(b, t, h, n) for z in (r, w, k, v))
        kk4, a4 = kk.view(b, t, h, n), a.view(b, t, h, n)
        ys = []
        for i in range(t):
            # S[i][j] (i: value dim, j: key dim); sa uses the old state.
            sa = state @ (-kk4[:, i]).unsqueeze(-1)  # [B,H,N,1]
            state = (
                state * w4[:, i].unsqueeze(-2)
                + sa @ (kk4[:, i] * a4[:, i]).unsqueeze(-2)
                + v4[:, i].unsqueeze(-1) @ k4[:, i].unsqueeze(-2)
            )
            ys.append((state @ r4[:, i].unsqueeze(-1)).squeeze(-1))
        y = torch.stack(ys, dim=1).reshape(b * t, c)
        y = F.group_norm(y, h, self.ln_x.weight, self.ln_x.bias, eps=64e-5).view(b, t, c)
        bonus = (r4 * k4 * self.r_k).sum(dim=-1, keepdim=True) * v4
        y = y + bonus.reshape(b, t, c)
        return self.output(y * g), x[:, -1], v_first, state


class ChannelMix(nn.Module):
    def __init__(self, c, layer_id, n_layer):
        super().__init__()
        r10 = 1.0 - layer_id / n_layer
        ddd = (torch.arange(c, dtype=torch.float32) / c).view(1, 1, c)
        self.x_k = nn.Parameter(1.0 - ddd.pow(r10**4))
        self.key = nn.Linear(c, 4 * c, bias=False)
        self.value = nn.Linear(4 * c, c, bias=False)
        s = c**-0.5
        nn.init.uniform_(self.key.weight, -0.5 * s, 0.5 * s)
        nn.init.zeros_(self.value.weight)

    def forward(self, x, x_prev):
        xx = torch.cat([x_prev.unsqueeze(1), x[:, :-1]], dim=1) - x
        k = torch.relu(self.key(x + xx * self.x_k)) ** 2
        return self.value(k), x[:, -1]


class Block(nn.Module):
    def __init__(self, c, layer_id, n_layer):
        super().__init__()
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(c)
        self.ln1 = nn.LayerNorm(c)
        self.ln2 = nn.LayerNorm(c)
        self.att = TimeMix(c, layer_id, n_layer)
        self.ffn = ChannelMix(c, layer_id, n_layer)


class RWKV7(nn.Module):
    """RWKV7 with BlinkDL parameter names. emb/head hold only the rows of `token_ids`
    (all other rows are zero in the exported checkpoint); token_ids=None means the full vocab."""

    def __init__(self, c, n_layer, token_ids=None):
        super().__init__()
        self.c, self.n_layer = c, n_layer
        ids = list(range(VOCAB_SIZE)) if token_ids is None else sorted(set(token_ids))
        self.token_ids = ids
        rows = len(ids)
        lookup = torch.full((VOCAB_SIZE,), -1, dtype=torch.long)
        lookup[torch.tensor(ids)] = torch.arange(rows)
        self.register_buffer("row_of", lookup, persistent=False)
        self.emb = nn.Embedding(rows, c)
        nn.init.uniform_(self.emb.weight, -1e-4, 1e-4)
        self.blocks = nn.ModuleList([Block(c, i, n_layer) for i in range(n_layer)])
        self.ln_out = nn.LayerNorm(c)
        self.head = nn.Linear(c, rows, bias=False)
        nn.init.orthogonal_(self.head.weight, gain=0.5)

    def embed(self, tokens):
        rows = self.row_of[tokens]
        if (rows < 0).any():
            raise ValueError("token outside the trained vocabulary")
        return self.emb(rows)

    def zero_state(self, b, device=None):
        h = self.c // HEAD_SIZE
        return [
            (torch.zeros(b, self.c, device=device),
             torch.zeros(b, h, HEAD_SIZE, HEAD_SIZE, device=device),
             torch.zeros(b, self.c, device=device))
            for _ in range(self.n_layer)
        ]

    def forward(self, x, state=None, apply_ln0=True):
        """x: input rows [B,T,C] (image rows and/or token embeddings). Returns (hidden [B,T,C]
        after ln_out, new state). ln0 runs over the whole input sequence, as in generation A."""
        if state is None:
            state = self.zero_state(x.shape[0], x.device)
        if apply_ln0:
            x = self.blocks[0].ln0(x)
        v_first = None
        new_state = []
        for blk, (att_prev, wkv, ffn_prev) in zip(self.blocks, state):
            dx, att_last, v_first, wkv = blk.att(blk.ln1(x), att_prev, v_first, wkv)
            x = x + dx
            dx, ffn_last = blk.ffn(blk.ln2(x), ffn_prev)
            x = x + dx
            new_state.append((att_last, wkv, ffn_last))
        return self.ln_out(x), new_state

    def logits(self, hidden):
        return self.head(hidden)


class VisionDemoModel(nn.Module):
    def __init__(self, enc_config, c, n_layer, adapter_hidden, token_ids=None):
        super().__init__()
        self.encoder = SiglipVisionModel(enc_config)
        self.adapter = VisualAdapter(enc_config.hidden_size, c, adapter_hidden)
        self.rwkv = RWKV7(c, n_layer, token_ids)

    def image_rows(self, pixel_values):
        """pixel_values [B,3,S,S] (SiglipImageProcessor output) -> adapter rows [B,P,C]."""
        feats = self.encoder(pixel_values=pixel_values).last_hidden_state
        return self.adapter(feats)

    def export_state_dict(self, dtype=torch.bfloat16):
        """Generation-A checkpoint: bare RWKV7 keys (full 65536-row emb/head) + adapter keys."""
        out = {}
        for k, v in self.rwkv.state_dict().items():
            if k in ("emb.weight", "head.weight"):
                full = torch.zeros(VOCAB_SIZE, self.rwkv.c)
                full[torch.tensor(self.rwkv.token_ids)] = v.detach().float()
                v = full
            out[k] = v.detach().to(dtype).contiguous().clone()
        for k, v in self.adapter.state_dict().items():
            out[ADAPTER_PREFIX + k] = v.detach().to(dtype).contiguous().clone()
        return out

    def load_export(self, sd):
        """Loads an exported checkpoint (as float32) into a full-vocab model."""
        rw = {k: v.float() for k, v in sd.items() if not k.startswith("modality.")}
        ad = {k[len(ADAPTER_PREFIX):]: v.float() for k, v in sd.items() if k.startswith(ADAPTER_PREFIX)}
        self.rwkv.load_state_dict(rw, strict=True)
        self.adapter.load_state_dict(ad, strict=True)
