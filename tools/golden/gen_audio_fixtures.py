#!/work/venv-tf/bin/python
"""Writes tests/golden/audio/: short clips (espeak-ng speech at 8/16/22.05/44.1/48 kHz, sweeps,
noise; mono, stereo, 3 and 6 channels) encoded to WAV, FLAC, MP3, Ogg Opus, Ogg Vorbis, M4A/AAC and
WebM by the ffmpeg CLI; their 16 kHz mono float32 reference samples; transformers 4.44.2
WhisperFeatureExtractor outputs (input_features + attention_mask) and Wav2Vec2FeatureExtractor
normalisation (the WavLM input) on reference samples. Needs espeak-ng and ffmpeg on PATH.
Deterministic; rerun: /work/venv-tf/bin/python tools/golden/gen_audio_fixtures.py
(see tools/golden/README.md, "Audio decoding and front ends")."""
import json
import pathlib
import shutil
import subprocess
import tempfile
import wave

import numpy as np
from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/golden/audio"

# The reference decode: the ffmpeg CLI with the resampler settings of encoders/audio/audio_decode.cc
# (libswresample defaults, output 16 kHz mono float, downmix matrix normalised to rematrix_maxval 1).
REF_FILTER = "aresample=osr=16000:ochl=mono:osf=flt:rematrix_maxval=1"
BITEXACT = ["-fflags", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1"]


def run(cmd: list, **kw) -> bytes:
    return subprocess.run(cmd, check=True, capture_output=True, **kw).stdout


def write_wav(path: pathlib.Path, x: np.ndarray, rate: int) -> None:
    """int16 PCM WAV with Python's wave module: a plain WAVE_FORMAT_PCM header, so more than two
    channels carry no channel mask (the layout is unspecified)."""
    x = np.atleast_2d(x.T).T if x.ndim == 1 else x  # [n][channels]
    q = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(q.shape[1] if q.ndim == 2 else 1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(q.tobytes())


def pcm16(x: np.ndarray) -> np.ndarray:
    """The float samples an int16 file decodes to (v / 32768), from the same rounding as write_wav."""
    return (np.clip(np.round(x * 32767), -32768, 32767) / 32768.0).astype(np.float32)


def espeak(text: str, voice: str, tmp: pathlib.Path) -> tuple:
    path = tmp / f"espeak_{voice}.wav"
    run(["espeak-ng", "-v", voice, "-s", "190", "-w", str(path), text])
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32768.0
    return x, rate


def resample_cli(x: np.ndarray, rate: int, to: int, tmp: pathlib.Path) -> np.ndarray:
    """Source material at another rate (any good resampler would do; this one is at hand)."""
    src = tmp / "rs_in.wav"
    write_wav(src, x, rate)
    raw = run(["ffmpeg", "-v", "error", "-i", str(src), "-ar", str(to), "-f", "f64le", "-"])
    return np.frombuffer(raw, "<f8").copy()


def sweep(rate: int, seconds: float, f0: float, f1: float, amp: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    k = np.log(f1 / f0) / seconds
    return amp * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)


def noise(rate: int, seconds: float, amp: float, seed: int) -> np.ndarray:
    return amp * np.random.default_rng(seed).standard_normal(int(rate * seconds))


def fit(x: np.ndarray, n: int) -> np.ndarray:
    return np.pad(x, (0, max(0, n - len(x))))[:n]


def synthetic_16k(n: int) -> np.ndarray:
    """The long clip of the Whisper fixtures, reproduced by tests/encoders/audio (SyntheticClip):
    a linear chirp 100 -> 4000 Hz over 32.5 s under a 0.7 Hz tremolo, plus LCG noise, quantised
    to int16 (so both sides agree up to libm's last bit in sin)."""
    t = np.arange(n, dtype=np.float64) / 16000.0
    phase = 2 * np.pi * (100.0 * t + 3900.0 * t * t / (2 * 32.5))
    am = 0.5 + 0.4 * np.sin(2 * np.pi * 0.7 * t)
    state = 12345
    lcg = np.empty(n, dtype=np.float64)
    for i in range(n):
        state = (state * 1664525 + 1013904223) & 0xFFFFFFFF
        lcg[i] = (state >> 8) / 16777216.0 - 0.5
    x = am * 0.5 * np.sin(phase) + 0.02 * lcg
    return (np.round(x * 32767) / 32768.0).astype(np.float32)


def reference_cli(path: pathlib.Path) -> np.ndarray:
    raw = run(["ffmpeg", "-v", "error", "-i", str(path), "-af", REF_FILTER, "-f", "f32le", "-"])
    return np.frombuffer(raw, "<f4").copy()


def probe(path: pathlib.Path) -> dict:
    out = json.loads(run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format",
                          "-show_streams", "-select_streams", "a:0", str(path)]))
    s = out["streams"][0]
    return {"codec": s["codec_name"], "sample_rate": int(s["sample_rate"]),
            "channels": int(s["channels"]), "channel_layout": s.get("channel_layout", ""),
            "container": out["format"]["format_name"],
            "duration": float(out["format"].get("duration", -1))}


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    for sub in ("files", "refs", "whisper", "wavlm", "bad"):
        (OUT / sub).mkdir(parents=True)
    tmp = pathlib.Path(tempfile.mkdtemp())
    speech_a, rate_a = espeak("Hello, audio test.", "en-us", tmp)
    speech_b, _ = espeak("Seven lanterns.", "en-gb", tmp)  # both at espeak's 22050 Hz

    def at(x, rate):
        return resample_cli(x, rate_a, rate, tmp) if rate != rate_a else x

    # name -> (source [n][ch] at rate, rate, output file, ffmpeg encoder arguments)
    clips = {}
    clips["speech_8k_mono.wav"] = (at(speech_a, 8000), 8000, None)
    clips["speech_16k_mono.flac"] = (at(speech_a, 16000), 16000, ["-c:a", "flac"])
    clips["speech_22k_mono.wav"] = (speech_b, rate_a, None)
    s44 = at(speech_a, 44100)
    clips["speech_44k_stereo.mp3"] = (
        np.stack([s44, 0.5 * fit(at(speech_b, 44100), len(s44))
                  + sweep(44100, len(s44) / 44100, 200, 6000, 0.1)], 1),
        44100, ["-c:a", "libmp3lame", "-b:a", "96k"])
    s48 = at(speech_a, 48000)
    clips["speech_48k_mono.opus"] = (s48, 48000, ["-c:a", "libopus", "-b:a", "32k"])
    clips["sweep_44k_stereo.ogg"] = (
        np.stack([sweep(44100, 1.5, 50, 15000, 0.4), sweep(44100, 1.5, 15000, 50, 0.4)], 1),
        44100, ["-c:a", "libvorbis", "-q:a", "3"])
    clips["speech_noise_48k_stereo.m4a"] = (
        np.stack([s48 + noise(48000, len(s48) / 48000, 0.02, 1),
                  0.6 * s48 + noise(48000, len(s48) / 48000, 0.02, 2)], 1),
        48000, ["-c:a", "aac", "-b:a", "64k"])
    clips["speech_48k_stereo.webm"] = (
        np.stack([s48, fit(at(speech_b, 48000), len(s48))], 1), 48000,
        ["-c:a", "libopus", "-b:a", "48k"])
    # Downmix without resampling, so that the expected output is exact: (L + R) / 2 of two loud
    # sines (their sum leaves [-1, 1], which catches an unnormalised downmix).
    t16 = np.arange(8000) / 16000
    clips["downmix_16k_stereo.wav"] = (
        np.stack([0.9 * np.sin(2 * np.pi * 440 * t16), 0.9 * np.sin(2 * np.pi * 440 * t16 + 0.3)],
                 1), 16000, None)
    # Three channels, no channel mask: the decoder averages them (audio_decode.h).
    clips["three_channel_16k.wav"] = (
        np.stack([0.5 * np.sin(2 * np.pi * 300 * t16), 0.5 * np.sin(2 * np.pi * 500 * t16),
                  noise(16000, 0.5, 0.1, 3)], 1), 16000, None)
    # 5.1 FLAC at 48 kHz (FLAC's 6-channel layout is 5.1(side)).
    t48 = np.arange(24000) / 48000
    clips["surround51_48k.flac"] = (
        np.stack([0.3 * np.sin(2 * np.pi * f * t48) for f in (220, 330, 440, 60, 550, 660)], 1),
        48000, ["-c:a", "flac"])
    # A float WAV at 22.05 kHz (WAVE_FORMAT_IEEE_FLOAT).
    clips["speech_22k_f32.wav"] = (speech_b[:rate_a // 2], rate_a, ["-c:a", "pcm_f32le"])

    manifest = {"reference_filter": REF_FILTER, "files": [], "whisper": [], "wavlm": []}
    for name, (x, rate, enc) in clips.items():
        path = OUT / "files" / name
        if enc is None:
            write_wav(path, x, rate)
        else:
            src = tmp / "src.wav"
            write_wav(src, x, rate)
            run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *enc, *BITEXACT, str(path)])
        info = probe(path)
        entry = {"file": f"files/{name}", **info}
        if name == "three_channel_16k.wav":
            ref = pcm16(x).mean(axis=1, dtype=np.float64).astype(np.float32)
            entry["reference_method"] = "numpy mean of the int16 samples / 32768"
        elif name == "downmix_16k_stereo.wav":
            ref = pcm16(x).mean(axis=1, dtype=np.float64).astype(np.float32)
            entry["reference_method"] = "numpy (L + R) / 2 of the int16 samples / 32768"
            assert np.abs(pcm16(x).sum(axis=1)).max() > 1.5  # an unnormalised sum would clip
        else:
            ref = reference_cli(path)
            entry["reference_method"] = "ffmpeg CLI -af " + REF_FILTER
        ref_path = OUT / "refs" / (name.replace(".", "_") + ".f32")
        ref.astype("<f4").tofile(ref_path)
        entry["reference"] = str(ref_path.relative_to(OUT))
        entry["reference_samples"] = int(len(ref))
        manifest["files"].append(entry)
        # Damaged copies, for the fuzzer's seeds and the error tests: the first half, and the
        # middle third of the bytes replaced by a pattern (one WAV stands for all WAVs).
        if name.endswith(".wav") and name != "speech_8k_mono.wav":
            continue
        data = path.read_bytes()
        (OUT / "bad" / f"truncated_{name}").write_bytes(data[:len(data) // 2])
        mid = bytearray(data)
        a, b = len(data) // 3, 2 * len(data) // 3
        mid[a:b] = (bytes(range(256)) * ((b - a) // 256 + 1))[:b - a]
        (OUT / "bad" / f"corrupt_{name}").write_bytes(bytes(mid))

    # A minute of silence in a WebM written to a pipe (no Duration element): the length is known
    # only by decoding it, for the limit enforced while decoding. And the same in FLAC, whose
    # header declares 60 s, for the limit checked from the header.
    silence = tmp / "silence.wav"
    write_wav(silence, np.zeros(16000 * 60), 16000)
    webm = run(["ffmpeg", "-v", "error", "-i", str(silence), "-c:a", "libopus", "-b:a", "16k",
                *BITEXACT, "-f", "webm", "pipe:1"])
    (OUT / "files/silence_60s_noduration.webm").write_bytes(webm)
    run(["ffmpeg", "-v", "error", "-y", "-i", str(silence), "-c:a", "flac", *BITEXACT,
         str(OUT / "files/silence_60s.flac")])
    (OUT / "bad/not_audio.txt").write_bytes(b"This is plain text, not an audio file.\n" * 4)
    (OUT / "bad/empty.wav").write_bytes(b"")

    # ---- Whisper log-mel: transformers' WhisperFeatureExtractor (its torch path) -------------
    def whisper(x: np.ndarray, feature_size: int, name: str, full: bool) -> dict:
        fe = WhisperFeatureExtractor(feature_size=feature_size)
        out = fe(x, sampling_rate=16000, return_attention_mask=True, return_tensors="np")
        feats = out["input_features"][0].astype("<f4")  # [mels][3000]
        valid = int(out["attention_mask"][0].sum())
        assert valid == min(3000, -(-len(x) // 160)), (valid, len(x))
        # Frames past valid + 2 see only padding: one constant value. Store the frames before it.
        keep = 3000 if full else min(3000, valid + 2)
        pad_value = None
        if keep < 3000:
            tail = feats[:, keep:]
            assert np.all(tail == tail[0, 0]), name
            pad_value = float(tail[0, 0])
        path = OUT / "whisper" / f"{name}_{feature_size}.f32"
        np.ascontiguousarray(feats[:, :keep]).tofile(path)
        return {"name": name, "feature_size": feature_size, "samples": int(len(x)),
                "valid_frames": valid, "stored_frames": keep, "pad_value": pad_value,
                "features": str(path.relative_to(OUT))}

    refs = {e["file"]: np.fromfile(OUT / e["reference"], "<f4") for e in manifest["files"]}
    for file, mels in (("files/speech_16k_mono.flac", 80), ("files/speech_44k_stereo.mp3", 80),
                       ("files/speech_48k_mono.opus", 128), ("files/speech_8k_mono.wav", 80)):
        entry = whisper(refs[file], mels, pathlib.Path(file).stem, full=False)
        entry["input"] = next(e["reference"] for e in manifest["files"] if e["file"] == file)
        manifest["whisper"].append(entry)
    long_clip = synthetic_16k(520000)  # 32.5 s
    entry = whisper(long_clip[:480000], 80, "synthetic_30s", full=True)
    entry["input"] = "synthetic:480000"
    manifest["whisper"].append(entry)
    # Longer than 30 s: trimmed to the same first 30 s, so the same features.
    fe = WhisperFeatureExtractor()
    out = fe(long_clip, sampling_rate=16000, return_attention_mask=True, return_tensors="np")
    same = np.fromfile(OUT / entry["features"], "<f4").reshape(80, 3000)
    assert np.array_equal(out["input_features"][0], same) and out["attention_mask"].sum() == 3000
    manifest["whisper"].append(dict(entry, name="synthetic_32s5_trimmed",
                                    input="synthetic:520000", samples=520000))

    # ---- WavLM input: Wav2Vec2FeatureExtractor(do_normalize=True), the hubert-large-ls960-ft
    # extractor the official code falls back to (feature_size 1, 16 kHz, attention mask on).
    w2v = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                   do_normalize=True, return_attention_mask=True)
    for file in ("files/speech_noise_48k_stereo.m4a",):
        x = refs[file]
        y = w2v(x, sampling_rate=16000, return_tensors="np")["input_values"][0].astype("<f4")
        path = OUT / "wavlm" / (pathlib.Path(file).stem + ".f32")
        y.tofile(path)
        manifest["wavlm"].append({
            "input": next(e["reference"] for e in manifest["files"] if e["file"] == file),
            "output": str(path.relative_to(OUT)), "samples": int(len(y))})

    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(tmp)
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
