"""The time-series ModRWKV model: instance normalisation, patching, a WaveNet encoder, an adapter,
the RWKV7 backbone of vision_demo_model.py and a forecasting head (format: docs/models.md,
"Time series").

  x [T, c] -> normalise per channel -> drop the oldest T % P steps -> rows [R, P*c] (time-major)
    -> modality.ts_encoder (WaveNet)  [R, d]
    -> modality.ts_adapter            [R, C]  prepended to the prompt's token rows (if any)
    -> blocks.0.ln0 over all rows, RWKV7 blocks, ln_out
    -> modality.ts_head on the last position -> [(1+Q)*H*c] (index (k*H + h)*c + ch: k = 0 the
       point forecast, k = 1..Q the quantiles) -> + the last normalised input value per channel
       (baseline "last", NLinear's) -> quantiles sorted per (h, ch) -> de-normalise -> [H, c]
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

import vision_demo_model as vdm

ENCODER_PREFIX = "modality.ts_encoder."
ADAPTER_PREFIX = "modality.ts_adapter."
HEAD_PREFIX = "modality.ts_head."
DEFAULT_DILATIONS = (1, 2, 4, 8, 1, 2, 4, 8)


class WaveNetLayer(nn.Module):
    """Causal dilated Conv1d over rows (kernel 2, left zero padding = dilation), gated
    tanh * sigmoid, residual and skip projections."""

    def __init__(self, d, dilation):
        super().__init__()
        self.d, self.dilation = d, dilation
        self.conv = nn.Conv1d(d, 2 * d, kernel_size=2, dilation=dilation)  # weight [2d, d, 2]
        self.res = nn.Linear(d, d)
        self.skip = nn.Linear(d, d)

    def forward(self, h):
        """h [B, R, d] -> (h + res(g) [B, R, d], skip(g) [B, R, d])."""
        z = self.conv(F.pad(h.transpose(1, 2), (self.dilation, 0))).transpose(1, 2)  # [B, R, 2d]
        g = torch.tanh(z[..., :self.d]) * torch.sigmoid(z[..., self.d:])
        return h + self.res(g), self.skip(g)


class WaveNetEncoder(nn.Module):
    """embed (Linear per row) -> layers -> out(relu(sum of skips)); one output row per input row."""

    def __init__(self, in_dim, d, dilations):
        super().__init__()
        self.embed = nn.Linear(in_dim, d)
        self.layers = nn.ModuleList([WaveNetLayer(d, int(dl)) for dl in dilations])
        self.out = nn.Linear(d, d)

    def forward(self, rows):
        """rows [B, R, P*c] -> [B, R, d]."""
        h = self.embed(rows)
        skip = torch.zeros_like(h)
        for layer in self.layers:
            h, s = layer(h)
            skip = skip + s
        return self.out(F.relu(skip))


def _sdpa_for_old_torch():
    """sktime's Timer calls F.scaled_dot_product_attention (torch >= 2.0); Debian's torch 1.13
    lacks it. Installs its documented formula, softmax(q k^T / sqrt(d) + mask) v, when absent."""
    if hasattr(F, "scaled_dot_product_attention"):
        return

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
        s = q @ k.transpose(-2, -1) * (scale if scale is not None else q.shape[-1] ** -0.5)
        if attn_mask is not None:
            s = s + attn_mask
        return torch.softmax(s, dim=-1) @ v

    F.scaled_dot_product_attention = sdpa


def timer_encoder(patch, d, layers, heads, ffn, rope_theta=10000.0):
    """The Timer encoder: the official TimerModel (thuml/timer-base-84m's code, as sktime ships
    it in sktime.libs.timer) over the patches of one channel, its last hidden state per patch.
    Its state dict keys are TimerModel's (embed_layer.emb.weight, layers.{i}...., norm.*)."""
    _sdpa_for_old_torch()
    from sktime.libs.timer.configuration_timer import TimerConfig
    from sktime.libs.timer.modeling_timer import TimerModel

    class TimerRowsEncoder(TimerModel):
        def forward(self, rows):
            """rows [B, R, P*c] (time-major, feature t*c + ch) -> [B, R*c, d]: each channel
            encoded alone, output row r*c + ch."""
            b, r, pc = rows.shape
            c = pc // self.config.input_token_len
            x = rows.reshape(b, r, self.config.input_token_len, c).permute(0, 3, 1, 2)
            x = x.reshape(b * c, r * self.config.input_token_len)  # one series per channel
            h = super().forward(input_ids=x, use_cache=False, return_dict=True).last_hidden_state
            return h.reshape(b, c, r, -1).permute(0, 2, 1, 3).reshape(b, r * c, -1)

    cfg = TimerConfig(input_token_len=patch, hidden_size=d, intermediate_size=ffn,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      rope_theta=rope_theta, output_token_lens=[patch], use_cache=False)
    return TimerRowsEncoder(cfg)


class TsAdapter(nn.Module):
    """proj.0 Linear(d, 4d) -> ReLU -> proj.2 Linear(4d, C) (the paper's 4x hidden width)."""

    def __init__(self, d, c, hidden=None):
        super().__init__()
        hidden = 4 * d if hidden is None else hidden
        self.proj = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, c))

    def forward(self, x):
        return self.proj(x)


def normalize(x, eps):
    """x [B, T, c] -> (x_n, mean [B, 1, c], std [B, 1, c]); population variance over T."""
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    std = torch.sqrt(var + eps)
    return (x - mean) / std, mean, std


def to_rows(xn, patch):
    """xn [B, T, c] -> [B, T // P, P*c]: the oldest T % P steps dropped, each row time-major
    (feature t*c + ch)."""
    b, t, c = xn.shape
    r = t // patch
    if r < 1:
        raise ValueError(f"series of {t} steps is shorter than one patch ({patch})")
    return xn[:, t - r * patch:].reshape(b, r, patch * c)


class TimeSeriesModel(nn.Module):
    def __init__(self, channels=1, patch=4, d=32, dilations=DEFAULT_DILATIONS, horizon=12,
                 c=64, n_layer=2, max_length=512, eps=1e-5, token_ids=(0,), adapter_hidden=None,
                 quantiles=(), baseline="none", encoder="wavenet", timer=None):
        """encoder "timer": timer = dict(heads, layers, ffn[, rope_theta]) and the patch is the
        Timer's input_token_len; d its hidden size."""
        super().__init__()
        if baseline not in ("none", "last"):
            raise ValueError(f"baseline {baseline!r}, expected 'none' or 'last'")
        self.quantiles = [float(q) for q in quantiles]
        if any(not 0 < q < 1 for q in self.quantiles) or self.quantiles != sorted(set(
                self.quantiles)):
            raise ValueError(f"quantiles {self.quantiles}: expected increasing values in (0, 1)")
        self.baseline = baseline
        self.channels, self.patch, self.d = channels, patch, d
        self.dilations = [int(x) for x in dilations]
        self.horizon, self.c, self.max_length, self.eps = horizon, c, max_length, eps
        self.encoder_name, self.timer = encoder, dict(timer or {})
        if encoder == "timer":
            self.encoder = timer_encoder(patch, d, self.timer["layers"], self.timer["heads"],
                                         self.timer["ffn"], self.timer.get("rope_theta", 10000.0))
        else:
            self.encoder = WaveNetEncoder(patch * channels, d, self.dilations)
        self.adapter = TsAdapter(d, c, adapter_hidden)
        self.rwkv = vdm.RWKV7(c, n_layer, list(token_ids) if token_ids is not None else None)
        self.head = nn.Linear(c, (1 + len(self.quantiles)) * horizon * channels)

    def head_forward(self, hidden_last, xn, detach_quantiles=False):
        """hidden_last [B, C], xn [B, T, c] -> (point [B, H, c], quantiles [B, Q, H, c]) in
        normalised units; the quantiles sorted along Q (monotone rearrangement: they never
        cross). detach_quantiles (training): the quantile rows see the hidden state as a
        constant, so their loss trains only them, not the network under the head."""
        if detach_quantiles and self.quantiles:
            n = self.horizon * self.channels
            w, b = self.head.weight, self.head.bias
            out = torch.cat([F.linear(hidden_last, w[:n], b[:n]),
                             F.linear(hidden_last.detach(), w[n:], b[n:])], dim=-1)
        else:
            out = self.head(hidden_last)
        out = out.view(xn.shape[0], 1 + len(self.quantiles), self.horizon, self.channels)
        if self.baseline == "last":
            out = out + xn[:, -1:, :].unsqueeze(1)
        return out[:, 0], torch.sort(out[:, 1:], dim=1).values

    def forward(self, x, prompt_ids=None, trace=False):
        """x [B, T, c] raw values -> forecast [B, H, c] (de-normalised); with trace=True also a
        dict of every intermediate. prompt_ids: token ids appended after the series rows."""
        xn, mean, std = normalize(x, self.eps)
        rows = to_rows(xn, self.patch)
        enc = self.encoder(rows)
        ad = self.adapter(enc)
        seq = ad
        if prompt_ids is not None and len(prompt_ids) > 0:
            ids = torch.as_tensor(list(prompt_ids), dtype=torch.long, device=x.device)
            emb = self.rwkv.embed(ids).unsqueeze(0).expand(x.shape[0], -1, -1)
            seq = torch.cat([ad, emb], dim=1)
        hidden, _ = self.rwkv(seq)  # ln0 over all rows; hidden after ln_out [B, rows, C]
        yn, qn = self.head_forward(hidden[:, -1], xn)
        y = yn * std + mean
        q = qn * std.unsqueeze(1) + mean.unsqueeze(1)
        if not trace:
            return (y, q) if self.quantiles else y
        return y, {"mean": mean, "std": std, "normalized": xn, "rows": rows, "encoder": enc,
                   "adapter": ad, "hidden": hidden, "forecast_normalized": yn, "forecast": y,
                   "quantiles_normalized": qn, "quantiles": q}

    def forward_normalized(self, xn, detach_quantiles=False):
        """Training path: xn [B, T, c] already normalised -> (point [B, H, c], quantiles
        [B, Q, H, c]), normalised."""
        hidden, _ = self.rwkv(self.adapter(self.encoder(to_rows(xn, self.patch))))
        return self.head_forward(hidden[:, -1], xn, detach_quantiles)

    def manifest(self, checkpoint="rwkv-0.pth", prompt=""):
        ts = {"encoder": self.encoder_name, "channels": self.channels, "patch": self.patch}
        if self.encoder_name == "timer":
            ts["heads"] = self.timer["heads"]
            if "rope_theta" in self.timer:
                ts["rope_theta"] = self.timer["rope_theta"]
        else:
            ts["dilations"] = self.dilations
        ts.update({"horizon": self.horizon, "max_length": self.max_length, "eps": self.eps})
        if self.quantiles:
            ts["quantiles"] = self.quantiles
        if self.baseline != "none":
            ts["baseline"] = self.baseline
        if prompt:
            ts["prompt"] = prompt
        return {"format": 1, "checkpoint": checkpoint, "time_series": ts}

    def export_state_dict(self, vocab_size=vdm.VOCAB_SIZE, backbone_dtype=torch.bfloat16):
        """RWKV7 keys as BlinkDL names them (emb/head padded with zero rows to vocab_size), in
        backbone_dtype; the three modality prefixes in float32."""
        out = {}
        ids = torch.tensor(self.rwkv.token_ids)
        for k, v in self.rwkv.state_dict().items():
            if k in ("emb.weight", "head.weight"):
                full = torch.zeros(vocab_size, self.c)
                full[ids] = v.detach().float()
                v = full
            out[k] = v.detach().to(backbone_dtype).contiguous().clone()
        for prefix, mod in ((ENCODER_PREFIX, self.encoder), (ADAPTER_PREFIX, self.adapter),
                            (HEAD_PREFIX, self.head)):
            for k, v in mod.state_dict().items():
                out[prefix + k] = v.detach().float().contiguous().clone()
        return out

    def load_export(self, sd):
        """Loads an exported state dict (as float32). emb/head must match this model's rows:
        build the model with token_ids=range(V) for a V-row checkpoint."""
        parts = {"": {}, ENCODER_PREFIX: {}, ADAPTER_PREFIX: {}, HEAD_PREFIX: {}}
        for k, v in sd.items():
            for p in (ENCODER_PREFIX, ADAPTER_PREFIX, HEAD_PREFIX):
                if k.startswith(p):
                    parts[p][k[len(p):]] = v.float()
                    break
            else:
                if k.startswith("modality."):
                    raise KeyError(f"unexpected key {k}")
                parts[""][k] = v.float()
        ids = torch.tensor(self.rwkv.token_ids)
        for k in ("emb.weight", "head.weight"):
            if parts[""][k].shape[0] != len(self.rwkv.token_ids):
                parts[""][k] = parts[""][k][ids]
        self.rwkv.load_state_dict(parts[""], strict=True)
        self.encoder.load_state_dict(parts[ENCODER_PREFIX], strict=True)
        self.adapter.load_state_dict(parts[ADAPTER_PREFIX], strict=True)
        self.head.load_state_dict(parts[HEAD_PREFIX], strict=True)


def model_from_export(sd, manifest):
    """Builds a TimeSeriesModel from an exported state dict and its manifest's dict."""
    ts = manifest["time_series"]
    enc = ts.get("encoder", "wavenet")
    if enc not in ("wavenet", "timer"):
        raise ValueError(f"encoder {enc!r}, expected 'wavenet' or 'timer'")
    emb = sd["emb.weight"]
    c = emb.shape[1]
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    timer = None
    if enc == "timer":
        e = ENCODER_PREFIX
        d = sd[e + "embed_layer.emb.weight"].shape[0]
        timer = {"heads": ts["heads"], "ffn": sd[e + "layers.0.ffn_layer.gate_proj.weight"].shape[0],
                 "layers": 1 + max(int(k[len(e):].split(".")[1]) for k in sd
                                   if k.startswith(e + "layers."))}
        if "rope_theta" in ts:
            timer["rope_theta"] = ts["rope_theta"]
    else:
        d = sd[ENCODER_PREFIX + "embed.weight"].shape[0]
    m = TimeSeriesModel(channels=ts["channels"], patch=ts.get("patch", 4), d=d,
                        dilations=ts.get("dilations", DEFAULT_DILATIONS), horizon=ts["horizon"],
                        c=c, n_layer=n_layer, encoder=enc, timer=timer,
                        max_length=ts["max_length"], eps=ts.get("eps", 1e-5),
                        token_ids=range(emb.shape[0]),
                        adapter_hidden=sd[ADAPTER_PREFIX + "proj.0.weight"].shape[0],
                        quantiles=ts.get("quantiles", ()), baseline=ts.get("baseline", "none"))
    m.load_export(sd)
    return m.eval()


def forecast(model, series, prompt_ids=None, with_quantiles=False):
    """series: array-like [T, c] (or [T] for c = 1) -> forecast [H, c] float32 numpy (with
    with_quantiles: (forecast, quantiles [Q, H, c])).
    Refuses what the server refuses: NaN/Inf, wrong channel count, T < patch, T > max_length."""
    x = torch.as_tensor(series, dtype=torch.float32)
    if x.dim() == 1:
        x = x.unsqueeze(1)
    if x.dim() != 2 or x.shape[1] != model.channels:
        raise ValueError(f"series has shape {list(x.shape)}, expected [T, {model.channels}]")
    if not torch.isfinite(x).all():
        raise ValueError("series has NaN or Inf values")
    if x.shape[0] < model.patch or x.shape[0] > model.max_length:
        raise ValueError(f"series has {x.shape[0]} steps, expected {model.patch}.."
                         f"{model.max_length}")
    with torch.no_grad():
        y, tr = model(x.unsqueeze(0), prompt_ids, trace=True)
    return (y[0].numpy(), tr["quantiles"][0].numpy()) if with_quantiles else y[0].numpy()


def load_model_dir(path):
    """A model folder (modrwkv-model.json + checkpoint) -> (TimeSeriesModel, manifest dict)."""
    import json
    import os
    with open(os.path.join(path, "modrwkv-model.json")) as f:
        manifest = json.load(f)
    if "time_series" not in manifest:
        raise ValueError(f"{path}/modrwkv-model.json has no time_series section")
    sd = torch.load(os.path.join(path, manifest["checkpoint"]), map_location="cpu")
    return model_from_export(sd, manifest), manifest


def read_csv(path):
    """A header row, then one column per channel (a first column that does not parse as a number,
    e.g. a timestamp, is skipped) -> (channel names, values [T, c])."""
    import csv
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], [r for r in rows[1:] if r]

    def numeric(s):
        try:
            float(s)
            return True
        except ValueError:
            return False

    skip = 1 if body and not numeric(body[0][0]) else 0
    return header[skip:], [[float(v) for v in r[skip:]] for r in body]


def main():
    """python tools/train/timeseries_model.py --model assets/ts-demo --csv series.csv
    prints the forecast as CSV (the input's channel header, one row per step) on stdout."""
    import argparse
    import sys
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--csv", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = load_model_dir(args.model)
    names, values = read_csv(args.csv)
    y = forecast(model, values)
    sys.stdout.write(",".join(names) + "\n")
    for row in y:
        sys.stdout.write(",".join("%.9g" % v for v in row) + "\n")


if __name__ == "__main__":
    main()
