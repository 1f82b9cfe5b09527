"""The audio demo model: a tiny Whisper encoder + generation-A SpeechAdapter + the tiny RWKV7 of
vision_demo_model.py.

Front end and truncation as JL-er/WorldRWKV generation A (world/encoder/whisper_encoder.py):
WhisperFeatureExtractor with its 30 s padding (3000 mel frames), encoder over all 1500 positions,
keep the first sum(attention_mask)//2 + 1 rows, SpeechAdapter = Conv1d(d, 2C, k3, s2, padding 2)
-> Linear(2C, 2C) -> ReLU -> Linear(2C, C). The rows are prepended to the prompt embeddings, then
blocks.0.ln0 runs over everything (as for images).
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
from transformers.models.whisper.modeling_whisper import WhisperEncoder

import vision_demo_model as vm

ADAPTER_PREFIX = vm.ADAPTER_PREFIX
FULL_FRAMES = 3000  # 30 s of mel frames, what the encoder is built for


def encoder_config(d_model=64, layers=2, heads=2):
    # The decoder is not used by ModRWKV; it is kept minimal (1 layer, 64-entry vocabulary) so
    # that the folder loads with WhisperForConditionalGeneration like a released checkpoint.
    return WhisperConfig(
        vocab_size=64, num_mel_bins=80, d_model=d_model,
        encoder_layers=layers, encoder_attention_heads=heads, encoder_ffn_dim=4 * d_model,
        decoder_layers=1, decoder_attention_heads=heads, decoder_ffn_dim=4 * d_model,
        max_source_positions=1500, max_target_positions=32,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3,
        suppress_tokens=None, begin_suppress_tokens=None, forced_decoder_ids=None,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        activation_function="gelu", scale_embedding=False,
        # transformers' default 0.02 is tuned for d_model 768+; at 64 the conv features start
        # 10x below the sinusoidal positions and the encoder output barely depends on the audio.
        init_std=0.1,
    )


def feature_extractor():
    return WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160,
                                   chunk_length=30, n_fft=400, padding_value=0.0)


def log_mel(fe, audio):
    """float32 16 kHz mono -> (mel [80, 3000] float32, mask sum = ceil(samples/160) capped 3000),
    exactly the official call (30 s padding)."""
    out = fe(audio, sampling_rate=16000, return_tensors="np", return_attention_mask=True)
    return out["input_features"][0], int(out["attention_mask"].sum())


def log_mel_compact(fe, audio):
    """The same features stored compactly: (frames [80, n] with n = mask + 4, fill value of the
    remaining frames, mask sum). Padding the waveform to a little past its end instead of 30 s
    gives the same frames: the padded zeros are log10(1e-10) = -10, below the global max - 8."""
    m = min(FULL_FRAMES, math.ceil(len(audio) / 160))
    pad = (len(audio) // 160 + 10) * 160
    feat = fe(audio, sampling_rate=16000, return_tensors="np", padding="max_length",
              max_length=pad)["input_features"][0]
    n = min(feat.shape[1], m + 4)
    return feat[:, :n].copy(), float(feat[0, -1]), m


def expand_mel(frames, fill, width=FULL_FRAMES):
    out = np.full((80, width), fill, dtype=np.float32)
    n = min(width, frames.shape[1])
    out[:, :n] = frames[:, :n]
    return out


def encoder_rows(mask_sum):
    return mask_sum // 2 + 1


def adapter_rows(n_enc):
    return (n_enc + 4 - 3) // 2 + 1


class SpeechAdapter(nn.Module):
    """Generation A's SpeechAdapter (world/encoder/whisper_encoder.py), hidden = 2C."""

    def __init__(self, encoder_dim, project_dim, padding=2):
        super().__init__()
        hidden = 2 * project_dim
        self.conv = nn.Conv1d(encoder_dim, hidden, kernel_size=3, stride=2, padding=padding)
        self.proj = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, project_dim))

    def forward(self, x):
        return self.proj(self.conv(x.permute(0, 2, 1)).permute(0, 2, 1))


def encoder_forward(enc, mel):
    """WhisperEncoder forward on [B, 80, W] mel frames for any even W <= 3000 (transformers
    insists on W = 3000; with W = 3000 this is exactly its forward). Shorter W is only used as a
    cheaper training approximation (fewer padding positions to attend to)."""
    x = F.gelu(enc.conv1(mel))
    x = F.gelu(enc.conv2(x)).permute(0, 2, 1)
    x = x + enc.embed_positions.weight[: x.shape[1]]
    for layer in enc.layers:
        x = layer(x, None, layer_head_mask=None)[0]
    return enc.layer_norm(x)


class AudioDemoModel(nn.Module):
    def __init__(self, enc_config, c, n_layer, token_ids=None):
        super().__init__()
        self.enc_config = enc_config
        self.encoder = WhisperEncoder(enc_config)
        self.adapter = SpeechAdapter(enc_config.d_model, c)
        self.rwkv = vm.RWKV7(c, n_layer, token_ids)

    def audio_rows(self, mel, n_enc):
        """mel [B, 80, W], all clips with the same encoder row count n_enc -> adapter rows."""
        h = encoder_forward(self.encoder, mel)[:, :n_enc]
        return self.adapter(h)

    def export_state_dict(self, dtype=torch.bfloat16):
        out = {}
        for k, v in self.rwkv.state_dict().items():
            if k in ("emb.weight", "head.weight"):
                full = torch.zeros(vm.VOCAB_SIZE, self.rwkv.c)
                full[torch.tensor(self.rwkv.token_ids)] = v.detach().float()
                v = full
            out[k] = v.detach().to(dtype).contiguous().clone()
        for k, v in self.adapter.state_dict().items():
            out[ADAPTER_PREFIX + k] = v.detach().to(dtype).contiguous().clone()
        return out

    def load_export(self, sd):
        rw = {k: v.float() for k, v in sd.items() if not k.startswith("modality.")}
        ad = {k[len(ADAPTER_PREFIX):]: v.float() for k, v in sd.items() if k.startswith(ADAPTER_PREFIX)}
        self.rwkv.load_state_dict(rw, strict=True)
        self.adapter.load_state_dict(ad, strict=True)

    def save_encoder(self, path):
        """save_pretrained of a WhisperForConditionalGeneration holding this encoder (keys
        model.encoder.*, as released Whisper folders; the tiny decoder is unused)."""
        torch.manual_seed(1234)
        full = WhisperForConditionalGeneration(self.enc_config)
        full.model.encoder.load_state_dict(self.encoder.state_dict())
        full.save_pretrained(path, safe_serialization=True)
