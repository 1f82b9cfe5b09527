"""Checks the shipped audio demo against the official generation-A code (local JL-er/WorldRWKV
mirror, commit afb131a): world/encoder/whisper_encoder.py (front end, truncation, SpeechAdapter)
and infer/rwkv/model.py (RWKV7 forward_seq with the rows prepended, then ln0), and compares the
audio rows and the final logits with tools/train/audio_demo_model.py.

  /work/venv-tf/bin/python tools/train/check_official_audio.py [--model assets/audio-demo]

Two textual changes to the official encoder file so that it runs here: WhisperProcessor ->
WhisperFeatureExtractor (the folder has no Whisper tokenizer; the processor's audio call is the
feature extractor's), and its bfloat16 input cast -> float32 (the check runs in float32).
"""

import argparse
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import audio_data as data  # noqa: E402
import audio_demo_model as am  # noqa: E402
import check_official  # noqa: E402
from transformers import WhisperFeatureExtractor  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROMPT_TOKENS = [23, 5585, 41693, 59]  # "\x16Assistant:"


def official_whisper_encoder_class():
    src = subprocess.check_output(["git", "-C", check_official.MIRROR, "show",
                                   f"{check_official.GEN_A}:world/encoder/whisper_encoder.py"]).decode()
    src = src.replace("from transformers import WhisperProcessor, WhisperForConditionalGeneration",
                      "from transformers import WhisperFeatureExtractor as WhisperProcessor, "
                      "WhisperForConditionalGeneration")
    src = src.replace("dtype=torch.bfloat16", "dtype=torch.float32")
    assert "WhisperFeatureExtractor as WhisperProcessor" in src and "bfloat16" not in src
    d = tempfile.mkdtemp()
    path = os.path.join(d, "official_whisper_encoder.py")
    with open(path, "w") as f:
        f.write(src)
    sys.path.insert(0, d)
    import official_whisper_encoder  # noqa: E402

    return official_whisper_encoder.WhisperEncoder


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(REPO, "assets", "audio-demo"))
    ap.add_argument("--clip", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sd = torch.load(os.path.join(args.model, "rwkv-0.pth"))
    enc_dir = os.path.join(args.model, "encoder")
    clip = args.clip
    if not clip:
        ex = os.path.join(args.model, "examples")
        clip = os.path.join(ex, sorted(f for f in os.listdir(ex) if f.endswith(".wav"))[0])
    audio = data.read_audio(clip)
    c = sd["emb.weight"].shape[1]
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))

    # Official encoder + adapter, loaded as infer/worldmodel.py does.
    Official = official_whisper_encoder_class()
    off = Official(enc_dir, project_dim=c, device="cpu").eval()
    modality = {k.replace("modality.world_encoder.", ""): v.float() for k, v in sd.items()
                if "modality" in k}
    missing, unexpected = off.load_state_dict(modality, strict=False)
    assert not unexpected and all(not k.startswith("adapter.") for k in missing), (missing, unexpected)

    # This repository's pipeline.
    from transformers import WhisperForConditionalGeneration
    full = WhisperForConditionalGeneration.from_pretrained(enc_dir)
    m = am.AudioDemoModel(full.config, c, n_layer)
    m.encoder = full.model.encoder.eval()
    m.load_export(sd)
    m.eval()
    fe = WhisperFeatureExtractor.from_pretrained(enc_dir)
    with torch.no_grad():
        ref_rows = off(audio)
        mel, mask = am.log_mel(fe, audio)
        n_enc = am.encoder_rows(mask)
        rows = m.audio_rows(torch.from_numpy(mel).unsqueeze(0), n_enc)
        row_diff = (rows - ref_rows).abs().max().item()
        x = torch.cat([rows, m.rwkv.emb(torch.tensor([PROMPT_TOKENS]))], 1)
        h, _ = m.rwkv(x)
        mine = m.rwkv.logits(h)[0, -1]

        ref_model = check_official.official_rwkv_class()(
            model={k: v.float().clone() for k, v in sd.items() if not k.startswith("modality.")},
            strategy="cpu fp32")
        z = ref_model.z
        xo = torch.cat([ref_rows[0], z["emb.weight"][PROMPT_TOKENS]], 0)
        xo = F.layer_norm(xo, (c,), weight=z["blocks.0.ln0.weight"], bias=z["blocks.0.ln0.bias"])
        state = []
        for _ in range(n_layer):
            state += [torch.zeros(c), torch.zeros(c // 64, 64, 64), torch.zeros(c)]
        ref, _ = ref_model.forward_seq(xo, state, False)
    diff = (mine - ref).abs().max().item()
    print(f"{os.path.basename(clip)}: mask {mask}, encoder rows {n_enc}, audio rows "
          f"{rows.shape[1]} (official {ref_rows.shape[1]}), max |row diff| {row_diff:.3g}, "
          f"max |logit diff| vs official = {diff:.3g}, argmax {mine.argmax().item()} vs "
          f"{ref.argmax().item()}")
    ok = rows.shape == ref_rows.shape and row_diff < 1e-4 and diff < 1e-3 and mine.argmax() == ref.argmax()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
