"""Deterministic synthetic speech for the audio demo: espeak-ng clips of digit strings and a small
word set (each word spoken separately and joined with random pauses, so the word boundaries are
known), several voices / speeds / pitches, random silence, gain and noise at a random SNR,
resampled to 16 kHz mono and quantised to 16 bit (as a file would be).

  spec = sample_spec(random.Random(seed)); wave_int16 = render(spec)

Transcripts are lower-case words separated by single spaces.
"""

import io
import random
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SR = 16000
ESPEAK_SR = 22050
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
WORDS = ["red", "green", "blue", "yellow", "black", "white",
         "up", "down", "left", "right", "forward", "back",
         "yes", "no", "stop", "go", "on", "off", "open", "close", "start", "hello",
         "ten", "twenty", "hundred"]
VOCAB = DIGITS + WORDS  # CTC classes 1..len(VOCAB); 0 is the blank
VOICES = ["en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan"]
VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5"]
MAX_SECONDS = 3.6


def sample_spec(rng):
    if rng.random() < 0.55:
        words = [rng.choice(DIGITS) for _ in range(rng.randint(2, 5))]
    else:
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 3))]
    voice = rng.choice(VOICES)
    var = rng.choice(VARIANTS)
    return {
        "text": " ".join(words),
        "voice": voice + ("+" + var if var else ""),
        "speed": rng.randint(140, 210),
        "pitch": rng.randint(25, 75),
        "gaps": [rng.uniform(0.0, 0.12) for _ in words[1:]],  # silence between words, s
        "lead": rng.uniform(0.05, 0.35),
        "tail": rng.uniform(0.05, 0.3),
        "gain": rng.uniform(0.15, 0.9),  # peak amplitude of the speech
        "snr_db": rng.uniform(5.0, 30.0),
        "noise": rng.choice(["white", "pink", "brown"]),
        "noise_seed": rng.randrange(1 << 30),
    }


def espeak(text, voice, speed, pitch):
    raw = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                          "--stdout", text],
                         check=True, capture_output=True).stdout
    # espeak writes a WAV header with an unknown length to stdout: take the data chunk directly.
    pos = raw.find(b"data")
    pcm = np.frombuffer(raw[pos + 8:], dtype="<i2").astype(np.float64) / 32768.0
    return pcm


def resample(x, sr_in, sr_out):
    """Band-limited FFT resampling (as scipy.signal.resample)."""
    n_out = int(round(len(x) * sr_out / sr_in))
    spec = np.fft.rfft(x)
    keep = n_out // 2 + 1
    out = np.zeros(keep, dtype=complex)
    m = min(keep, len(spec))
    out[:m] = spec[:m]
    return np.fft.irfft(out, n_out) * (n_out / len(x))


def trim(x, thr=1e-3):
    idx = np.nonzero(np.abs(x) > thr)[0]
    return x[idx[0]: idx[-1] + 1] if len(idx) else x


def colored_noise(kind, n, rng):
    w = rng.standard_normal(n)
    if kind == "white":
        return w
    f = np.fft.rfftfreq(n, 1.0 / SR)
    f[0] = f[1]
    shape = 1.0 / np.sqrt(f) if kind == "pink" else 1.0 / f
    shape[f < 40] = 0.0
    y = np.fft.irfft(np.fft.rfft(w) * shape, n)
    return y / (y.std() + 1e-12)


def render(spec):
    """-> int16 numpy array at 16 kHz, or None if the clip is longer than MAX_SECONDS. Each word
    is spoken separately (same voice, speed, pitch) and the words are joined with the spec's
    gaps, so that the word boundaries are known: spec["spans"] = [(start s, end s, word)]."""
    parts, spans, t = [], [], spec["lead"]
    words = spec["text"].split()
    for i, word in enumerate(words):
        w = trim(resample(trim(espeak(word, spec["voice"], spec["speed"], spec["pitch"])),
                          ESPEAK_SR, SR))
        if i:
            gap = np.zeros(int(spec["gaps"][i - 1] * SR))
            parts.append(gap)
            t += len(gap) / SR
        parts.append(w)
        spans.append((t, t + len(w) / SR, word))
        t += len(w) / SR
    x = np.concatenate(parts)
    x = x / (np.abs(x).max() + 1e-9) * spec["gain"]
    x = np.concatenate([np.zeros(int(spec["lead"] * SR)), x, np.zeros(int(spec["tail"] * SR))])
    if len(x) > MAX_SECONDS * SR:
        return None
    spec["spans"] = spans
    rng = np.random.default_rng(spec["noise_seed"])
    speech_rms = np.sqrt(np.mean(trim(x) ** 2))
    noise = colored_noise(spec["noise"], len(x), rng)
    x = x + noise * speech_rms / (10 ** (spec["snr_db"] / 20))
    return np.clip(np.rint(x * 32767), -32768, 32767).astype(np.int16)


def iter_generate(seed, count, threads=4):
    """Yields (spec, int16 wave) for `count` clips of the random stream `seed` (specs drawn in
    order; clips over MAX_SECONDS are skipped; rendering runs espeak-ng in a few threads)."""
    rng = random.Random(seed)
    made = 0
    with ThreadPoolExecutor(threads) as pool:
        while made < count:
            specs = [sample_spec(rng) for _ in range(64)]
            for spec, w in zip(specs, pool.map(render, specs)):
                if w is None or made >= count:
                    continue
                made += 1
                yield spec, w


def write_wav(path, pcm):
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SR)
        f.writeframes(pcm.astype("<i2").tobytes())


def read_audio(path):
    """Any container ffmpeg reads -> float32 16 kHz mono in [-1, 1] (s16 decode)."""
    if path.endswith(".wav"):
        with wave.open(path, "rb") as f:
            assert f.getframerate() == SR and f.getnchannels() == 1 and f.getsampwidth() == 2
            pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    else:
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-f", "s16le", "-ac", "1",
                              "-ar", str(SR), "-"], check=True, capture_output=True).stdout
        pcm = np.frombuffer(raw, dtype="<i2")
    return pcm.astype(np.float32) / 32768.0
