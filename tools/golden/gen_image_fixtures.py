#!/work/venv-tf/bin/python
"""Writes tests/golden/image/: test images of every supported format and the outputs of
transformers' SiglipImageProcessor / CLIPImageProcessor (4.44.2, PIL 9.4) on them, computed from
the same encoded files the C++ tests decode. Deterministic; rerun: /work/venv-tf/bin/python
tools/golden/gen_image_fixtures.py  (see tools/golden/README.md, "Image preprocessing")."""
import io
import json
import pathlib
import shutil
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageOps
from transformers import CLIPImageProcessor, SiglipImageProcessor
from transformers.image_utils import ChannelDimension

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/golden/image"

# google/siglip2-base-patch16-384 and openai/clip-vit-large-patch14-336 as their folders configure
# them (the hub is not reachable here; these are the published files' settings).
SIGLIP2_384 = {
    "do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "SiglipImageProcessor",
    "image_std": [0.5, 0.5, 0.5], "processor_class": "SiglipProcessor", "resample": 2,
    "rescale_factor": 0.00392156862745098, "size": {"height": 384, "width": 384},
}
CLIP_336 = {
    "crop_size": 336, "do_center_crop": True, "do_normalize": True, "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 336,
}
# The same processors at a small size, so that every image gets a compact expected output.
CONFIGS = {
    "siglip2_384": SIGLIP2_384,
    "clip_336": CLIP_336,
    "siglip_64": dict(SIGLIP2_384, size={"height": 64, "width": 64}),
    "clip_64": dict(CLIP_336, size=64, crop_size=64),
}


def processor(cfg: dict):
    kwargs = {k: v for k, v in cfg.items()
              if k not in ("image_processor_type", "feature_extractor_type", "processor_class")}
    if "image_processor_type" in cfg:
        return SiglipImageProcessor(**kwargs)
    return CLIPImageProcessor(**kwargs)


def run(cfg: dict, rgb: Image.Image, raw: bool) -> np.ndarray:
    """pixel_values [3,H,W]; raw=True stops before rescale/normalise (the uint8 resized image).
    input_data_format is given because transformers guesses channels-first for images whose height
    is 1 or 3 (a shape (1, W, 3) array looks like one channel)."""
    p = processor(cfg)
    extra = {"do_rescale": False, "do_normalize": False} if raw else {}
    out = p(images=rgb, return_tensors="np", input_data_format=ChannelDimension.LAST,
            **extra)["pixel_values"][0]
    if raw:
        assert np.all(out == np.round(out)) and out.min() >= 0 and out.max() <= 255
        return out.astype(np.uint8).transpose(1, 2, 0)  # [H][W][3]
    return out.astype("<f4")


# ---- test images: smooth content (compresses well) plus a few hard edges --------------------

def smooth(w: int, h: int, seed: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = x / max(w - 1, 1), y / max(h - 1, 1)
    r = 128 + 110 * np.sin(2 * np.pi * (u * 1.5 + seed * 0.1))
    g = 128 + 110 * np.cos(2 * np.pi * (v * 2.0 + u * 0.5))
    b = 255 * (u * v)
    img = np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    d.rectangle([w // 5, h // 5, w // 2, h // 2], fill=(250, 20, 30))
    d.ellipse([w // 2, h // 3, w * 9 // 10, h * 9 // 10], outline=(0, 0, 0), width=max(1, w // 80))
    d.line([0, h - 1, w - 1, 0], fill=(255, 255, 255), width=max(1, w // 200))
    return np.asarray(pil)


def fnv1a64(data: bytes) -> str:
    """FNV-1a 64 of the decoded RGB bytes (hex), for images too large to store decoded."""
    a = np.frombuffer(data, dtype=np.uint8)
    h = 0xCBF29CE484222325
    for chunk in np.array_split(a, max(1, len(a) // 65536)):
        for b in chunk.tolist():
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, format=fmt, **kw)
    return b.getvalue()


def png_chunk(t: bytes, d: bytes) -> bytes:
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


def png16(arr: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG written by hand (PIL cannot write 16-bit RGB)."""
    h, w = arr.shape[:2]
    rows = arr.reshape(h, -1).astype(">u2").tobytes()
    stride = len(rows) // h
    raw = b"".join(b"\x00" + rows[i * stride:(i + 1) * stride] for i in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw, 9))
            + png_chunk(b"IEND", b""))


def exif_jpeg(img: Image.Image, orientation: int, quality: int = 90) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", quality=quality, exif=exif.tobytes())


def images() -> dict:
    """name -> (encoded bytes, [configs whose expected output is stored])."""
    small = ["siglip_64", "clip_64"]
    out = {}
    rgb = lambda w, h, s=0: Image.fromarray(smooth(w, h, s))
    out["photo_1024x768.jpg"] = (encode(rgb(1024, 768), "JPEG", quality=85),
                                 small + ["siglip2_384"])
    out["big_4000x3000.jpg"] = (encode(rgb(4000, 3000, 1), "JPEG", quality=60),
                                small + ["siglip2_384", "clip_336"])
    out["q95_640x480.jpg"] = (encode(rgb(640, 480, 2), "JPEG", quality=95, subsampling=0), small)
    out["odd_7x5.jpg"] = (encode(rgb(7, 5, 3), "JPEG", quality=90), small)
    out["tall_100x1000.png"] = (encode(rgb(100, 1000, 4), "PNG"), small)
    out["wide_1000x100.png"] = (encode(rgb(1000, 100, 5), "PNG"), small)
    out["tiny_1x1.png"] = (encode(Image.new("RGB", (1, 1), (200, 30, 90)), "PNG"), small)
    out["tiny_2x3.png"] = (encode(rgb(2, 3, 6), "PNG"), small)
    out["same_64x64.png"] = (encode(rgb(64, 64, 7), "PNG"), small)  # no resize at 64
    a = smooth(300, 200, 8)
    alpha = np.tile(np.linspace(0, 255, 300).astype(np.uint8), (200, 1))
    alpha[:50, :] = 0  # fully transparent rows keep their colour (alpha is dropped, not composited)
    out["rgba_300x200.png"] = (encode(Image.fromarray(np.dstack([a, alpha]), "RGBA"), "PNG"), small)
    grey = rgb(257, 129, 9).convert("L")
    out["grey_L_257x129.png"] = (encode(grey, "PNG"), small)
    la = Image.merge("LA", [rgb(128, 96, 10).convert("L"), Image.fromarray(alpha[:96, :128])])
    out["grey_LA_128x96.png"] = (encode(la, "PNG"), small)
    pal = rgb(200, 150, 11).quantize(colors=64)
    out["palette_200x150.png"] = (encode(pal, "PNG"), small)
    out["palette_trns_200x150.png"] = (encode(pal, "PNG", transparency=3), small)
    out["bilevel_64x48.png"] = (encode(rgb(64, 48, 12).convert("1"), "PNG"), small)
    s16 = smooth(96, 64, 13).astype(np.uint32) * 257 + np.arange(96, dtype=np.uint32)[None, :, None]
    out["rgb16_96x64.png"] = (png16(s16.clip(0, 65535), 2), small)
    out["grey16_160x120.png"] = (png16(np.tile(np.arange(160) * 3, (120, 1)), 0), small)
    out["small_160x120.jpg"] = (encode(rgb(160, 120, 24), "JPEG", quality=90), small)
    out["rgba16_96x64.png"] = (png16(np.dstack([s16, s16[:, :, :1] // 2]), 6), small)
    out["lossy_320x240.webp"] = (encode(rgb(320, 240, 14), "WEBP", quality=80), small)
    rgba = Image.fromarray(np.dstack([smooth(200, 200, 15), alpha[:200, :200]]), "RGBA")
    out["lossless_rgba_200x200.webp"] = (encode(rgba, "WEBP", lossless=True, exact=True), small)
    f0, f1 = rgb(160, 120, 16).quantize(colors=32), rgb(160, 120, 17).quantize(colors=32)
    out["anim_160x120.gif"] = (encode(f0, "GIF", save_all=True, append_images=[f1]), small)
    # Known difference (see the mask below): no expected processor outputs.
    out["trns_160x120.gif"] = (encode(f0, "GIF", transparency=5), [])
    out["deflate_150x100.tif"] = (encode(rgb(150, 100, 18), "TIFF", compression="tiff_adobe_deflate"),
                                  small)
    out["rgba_lzw_120x80.tif"] = (encode(rgba.resize((120, 80)), "TIFF", compression="tiff_lzw"), small)
    out["grey_96x64.tif"] = (encode(rgb(96, 64, 19).convert("L"), "TIFF"), small)
    out["cmyk_64x48.jpg"] = (encode(rgb(64, 48, 20).convert("CMYK"), "JPEG", quality=90), small)
    out["exif6_320x240.jpg"] = (exif_jpeg(rgb(320, 240, 21), 6), small)
    out["exif8_240x160.jpg"] = (exif_jpeg(rgb(240, 160, 22), 8), small)
    for o in range(1, 9):  # every orientation, decode only
        out[f"orient{o}_24x16.jpg"] = (exif_jpeg(rgb(24, 16, 23), o, quality=95), [])
    return out


def bad_files(good: dict) -> dict:
    """Inputs the decoder must refuse."""
    def ihdr_png(w, h):
        return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))
    jpg = good["small_160x120.jpg"][0]
    sof = jpg.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    bomb_jpg = bytearray(jpg)
    struct.pack_into(">HH", bomb_jpg, sof + 5, 60000, 60000)
    png = bytearray(good["tall_100x1000.png"][0])
    idat = png.index(b"IDAT")
    for i in range(idat + 40, idat + 80):
        png[i] ^= 0x5A
    return {
        "bomb_30000x30000.png": ihdr_png(30000, 30000),  # 900 M pixels declared in 120 bytes
        "bomb_60000x60000.jpg": bytes(bomb_jpg),
        "truncated.jpg": jpg[: len(jpg) // 2],
        "truncated.png": bytes(good["tall_100x1000.png"][0][:3000]),
        "corrupt_idat.png": bytes(png),
        "not_an_image.txt": b"Hello, this is plain text and not an image at all.\n" * 4,
        "svg_blocked.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>',
    }


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    for sub in ("configs", "images", "expected", "decoded", "bad"):
        (OUT / sub).mkdir(parents=True)
    for name, cfg in CONFIGS.items():
        (OUT / "configs" / f"{name}.json").write_text(json.dumps(cfg, indent=2) + "\n")
    good = images()
    manifest = {"images": [], "normalised": [], "bad": []}
    for name, (data, configs) in good.items():
        (OUT / "images" / name).write_bytes(data)
        im = Image.open(io.BytesIO(data))
        orientation = im.getexif().get(0x0112, 1)
        official = im.convert("RGB")  # the official pipeline: EXIF ignored
        variants = [(False, official)]
        if orientation != 1:
            variants.append((True, ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")))
        entry = {"file": f"images/{name}", "width": im.width, "height": im.height,
                 "mode": im.mode, "exif_orientation": orientation, "decoded": [], "outputs": []}
        for exif, rgb in variants:
            arr = np.asarray(rgb)
            if arr.shape[0] * arr.shape[1] <= 20000:
                path = f"decoded/{name}{'.exif' if exif else ''}.rgb"
                (OUT / path).write_bytes(arr.tobytes())
                entry["decoded"].append({"apply_exif": exif, "file": path, "width": rgb.width,
                                         "height": rgb.height})
            else:
                entry["decoded"].append({"apply_exif": exif, "fnv1a64": fnv1a64(arr.tobytes()),
                                         "width": rgb.width, "height": rgb.height})
            for c in configs:
                out = run(CONFIGS[c], rgb, raw=True)
                path = f"expected/{name}.{c}{'.exif' if exif else ''}.u8"
                (OUT / path).write_bytes(out.tobytes())
                entry["outputs"].append({"config": c, "apply_exif": exif, "file": path,
                                         "height": out.shape[0], "width": out.shape[1]})
        if im.mode == "P" and "transparency" in im.info and name.endswith(".gif"):
            # PIL's convert('RGB') gives a transparent GIF pixel the palette colour of the
            # transparent index; libvips' GIF loader does not expose it. Mark those pixels.
            mask = (np.asarray(im) == im.info["transparency"]).astype(np.uint8)
            entry["transparent_mask"] = f"decoded/{name}.mask"
            (OUT / entry["transparent_mask"]).write_bytes(mask.tobytes())
        manifest["images"].append(entry)
    # Full pipeline (rescale + normalise, channel-planar float32) for a few images.
    for name in ("photo_1024x768.jpg", "rgba_300x200.png", "grey_L_257x129.png"):
        rgb = Image.open(OUT / "images" / name).convert("RGB")
        for c in ("siglip_64", "clip_64"):
            out = run(CONFIGS[c], rgb, raw=False)
            path = f"expected/{name}.{c}.f32"
            (OUT / path).write_bytes(out.tobytes())
            manifest["normalised"].append({"file": f"images/{name}", "config": c, "expected": path,
                                           "shape": list(out.shape)})
    for name, data in bad_files(good).items():
        (OUT / "bad" / name).write_bytes(data)
        manifest["bad"].append(f"bad/{name}")
    manifest["generator"] = {"transformers": __import__("transformers").__version__,
                             "pillow": Image.__version__, "numpy": np.__version__}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
