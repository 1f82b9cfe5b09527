"""Synthetic "coloured shape on a background" images with templated questions and answers.

Everything is deterministic from a seed: the same seed gives the same images and answers.
Used to train and test the vision demo model (tools/train/train_vision_demo.py).
"""

import io
import math
import random

import numpy as np

from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle", "cross"]

# Well separated hues; each channel is jittered a little per image.
COLORS = {
    "red": (215, 30, 30),
    "green": (30, 160, 50),
    "blue": (35, 75, 225),
    "yellow": (240, 215, 25),
    "purple": (140, 45, 185),
    "orange": (250, 135, 20),
}
COLOR_NAMES = list(COLORS)

# (row, col) of the 3x3 grid -> answer to "Where is the shape?".
POSITIONS = [
    "In the top left corner.", "At the top.", "In the top right corner.",
    "On the left.", "In the center.", "On the right.",
    "In the bottom left corner.", "At the bottom.", "In the bottom right corner.",
]

# Background base grey level range per kind.
BACKGROUNDS = {
    "white": (238, 255),
    "light grey": (185, 215),
    "dark grey": (50, 85),
    "black": (0, 25),
}
BACKGROUND_NAMES = list(BACKGROUNDS)

Q_SHAPE = "What shape is in the picture?"
Q_COLOR = "What color is the shape?"
Q_WHERE = "Where is the shape?"
QUESTIONS = [Q_SHAPE, Q_COLOR, Q_WHERE]


def answer(spec, question):
    """The one correct answer for a sample and a question."""
    if question == Q_SHAPE:
        article = "An" if spec["color"][0] in "aeiou" else "A"
        return f"{article} {spec['color']} {spec['shape']}."
    if question == Q_COLOR:
        return spec["color"].capitalize() + "."
    if question == Q_WHERE:
        return POSITIONS[spec["pos"]]
    raise ValueError(f"unknown question {question!r}; expected one of {QUESTIONS}")


def sample_spec(rng):
    """Draws the labels and the geometry of one image from rng (a random.Random)."""
    w = rng.randint(80, 200)
    h = rng.randint(80, 200)
    # Keep the aspect ratio within 3:4 .. 4:3 so shapes stay recognisable after the square resize.
    while not 0.75 <= w / h <= 4 / 3:
        h = rng.randint(80, 200)
    return {
        "shape": rng.choice(SHAPES),
        "color": rng.choice(COLOR_NAMES),
        "pos": rng.randrange(9),
        "bg": rng.choice(BACKGROUND_NAMES),
        "w": w,
        "h": h,
        "seed": rng.getrandbits(32),
    }


def _background(spec, rng):
    w, h = spec["w"], spec["h"]
    lo, hi = BACKGROUNDS[spec["bg"]]
    base = rng.uniform(lo, hi)
    # A mild linear gradient in a random direction plus pixel noise.
    amp = rng.uniform(0, 18)
    ang = rng.uniform(0, 2 * math.pi)
    gx, gy = math.cos(ang) * amp, math.sin(ang) * amp
    noise = rng.uniform(0, 6)
    nrng = np.random.default_rng(rng.getrandbits(32))
    xs = (np.arange(w, dtype=np.float64) / w - 0.5)[None, :]
    ys = (np.arange(h, dtype=np.float64) / h - 0.5)[:, None]
    v = base + gx * xs + gy * ys + nrng.normal(0, 1, (h, w)) * noise
    c = np.clip(np.rint(v), 0, 255).astype(np.uint8)
    img = Image.fromarray(np.stack([c, c, c], axis=-1), "RGB")
    return img


def render(spec):
    """The PIL RGB image for a spec (deterministic)."""
    rng = random.Random(spec["seed"])
    img = _background(spec, rng)
    w, h = spec["w"], spec["h"]
    row, col = divmod(spec["pos"], 3)
    cx = ((col + 0.5) / 3 + rng.uniform(-0.04, 0.04)) * w
    cy = ((row + 0.5) / 3 + rng.uniform(-0.04, 0.04)) * h
    r = rng.uniform(0.09, 0.13) * min(w, h)
    color = tuple(max(0, min(255, c + rng.randint(-15, 15))) for c in COLORS[spec["color"]])
    d = ImageDraw.Draw(img)
    shape = spec["shape"]
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif shape == "square":
        s = r * 0.9
        d.rectangle([cx - s, cy - s, cx + s, cy + s], fill=color)
    elif shape == "triangle":
        rot = rng.uniform(-0.15, 0.15)
        pts = []
        for k in range(3):
            a = -math.pi / 2 + rot + k * 2 * math.pi / 3
            pts.append((cx + r * 1.15 * math.cos(a), cy + r * 1.15 * math.sin(a) + r * 0.15))
        d.polygon(pts, fill=color)
    elif shape == "cross":
        t = r * 0.36
        d.rectangle([cx - r, cy - t, cx + r, cy + t], fill=color)
        d.rectangle([cx - t, cy - r, cx + t, cy + r], fill=color)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return img


def jpeg_roundtrip(img, quality):
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def iter_generate(seed, count):
    """Yields count (spec, image) pairs from seed; about half the images went through JPEG."""
    rng = random.Random(seed)
    for _ in range(count):
        spec = sample_spec(rng)
        img = render(spec)
        if rng.random() < 0.5:
            spec["jpeg_quality"] = rng.randint(75, 95)
            img = jpeg_roundtrip(img, spec["jpeg_quality"])
        yield spec, img


def generate(seed, count):
    """count (spec, image) pairs from seed (the list of iter_generate)."""
    return list(iter_generate(seed, count))
