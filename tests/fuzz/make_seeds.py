#!/usr/bin/env python3
"""Writes tests/fuzz/seeds/<harness>/: checkpoints damaged in the ways the readers must refuse
(docs/engine.md, "Checkpoint validation"), as starting points for the fuzzers next to the valid
files of tests/golden. Deterministic; rerun after changing it: python3 tests/fuzz/make_seeds.py"""
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests/golden/checkpoint"
OUT = ROOT / "tests/fuzz/seeds"


def local_header(data: bytes, name: bytes) -> int:
    """Offset of the local header of zip entry `name`."""
    pos = 0
    while True:
        pos = data.index(b"PK\x03\x04", pos)
        nl = struct.unpack_from("<H", data, pos + 26)[0]
        if data[pos + 30:pos + 30 + nl] == name:
            return pos
        pos += 4


def zip_seeds() -> dict:
    torch = (GOLDEN / "torch_state_dict.pth").read_bytes()  # written by torch: data descriptors
    ours = (GOLDEN / "modrwkv_written.pth").read_bytes()  # sizes and CRC in the local header
    out = {}
    pkl = local_header(torch, b"torch_state_dict/data.pkl")
    b = bytearray(torch)
    b[pkl + 30 + 17] ^= 0x20  # local name differs from the central directory's
    out["local_name.pth"] = b
    b = bytearray(torch)
    struct.pack_into("<H", b, pkl + 28, struct.unpack_from("<H", b, pkl + 28)[0] + 2)
    out["local_extra_length.pth"] = b  # moves the data by two bytes
    data0 = local_header(torch, b"torch_state_dict/data/0")
    nl, el = struct.unpack_from("<HH", torch, data0 + 26)
    end = data0 + 30 + nl + el + 64  # data/0 holds 64 bytes; its data descriptor follows
    b = bytearray(torch)
    struct.pack_into("<I", b, end + 8, 65)  # descriptor's compressed size
    out["descriptor_size.pth"] = b
    b = bytearray(torch)
    b[data0 + 30 + nl + el + 5] ^= 0x01  # tensor bytes: only the CRC-32 differs
    out["crc.pth"] = b
    first = local_header(ours, b"archive/data.pkl")
    b = bytearray(ours)
    struct.pack_into("<I", b, first + 18, struct.unpack_from("<I", b, first + 18)[0] + 1)
    out["local_size.pth"] = b
    b = bytearray(ours)
    struct.pack_into("<H", b, first + 8, 8)
    out["local_method.pth"] = b
    return out


def pickle_seeds() -> dict:
    def s(text: bytes) -> bytes:
        return b"X" + struct.pack("<I", len(text)) + text

    rebuild = (b"ctorch._utils\n_rebuild_tensor_v2\n((" + s(b"storage") + b"ctorch\nFloatStorage\n"
               + s(b"0") + s(b"cpu") + b"K\x02tQK\x00K\x02\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR")
    odict = b"ccollections\nOrderedDict\n)R"
    return {
        # A forbidden callable in a value nothing reads, next to a real tensor.
        "unused_global.pkl": b"\x80\x02" + odict + b"(" + s(b"w") + rebuild + s(b"x")
                             + b"cos\nsystem\n(" + s(b"true") + b"tRu.",
        # STACK_GLOBAL (protocol 4) spelling of builtins.eval.
        "stack_global.pkl": b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93(" + s(b"1") + b"tR.",
    }


def safetensors_seeds() -> dict:
    def file(header: dict, data_len: int) -> bytes:
        text = json.dumps(header, separators=(",", ":")).encode()
        return struct.pack("<Q", len(text)) + text + bytes(data_len)

    def f32(n: int, begin: int, end: int) -> dict:
        return {"dtype": "F32", "shape": [n], "data_offsets": [begin, end]}

    return {
        "overlap.safetensors": file({"a": f32(2, 0, 8), "b": f32(2, 4, 12)}, 12),
        "gap.safetensors": file({"a": f32(2, 0, 8), "b": f32(2, 12, 20)}, 20),
        "trailing.safetensors": file({"a": f32(2, 0, 8)}, 12),
        "aliased.safetensors": file({"a": f32(2, 0, 8), "b": f32(2, 0, 8)}, 8),
    }


def image_seeds() -> dict:
    """One tiny image per accepted format and colour layout (PIL, deterministic); the larger
    files of tests/golden/image are seeds as well (scripts/test.sh)."""
    import io
    from PIL import Image

    def enc(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, format=fmt, **kw)
        return b.getvalue()

    rgb = Image.new("RGB", (5, 3))
    rgb.putdata([(i * 40 % 256, i * 90 % 256, 255 - i * 17) for i in range(15)])
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "rgb.jpg": enc(rgb, "JPEG", quality=90),
        "exif6.jpg": enc(rgb, "JPEG", quality=90, exif=exif.tobytes()),
        "progressive.jpg": enc(rgb, "JPEG", progressive=True),
        "cmyk.jpg": enc(rgb.convert("CMYK"), "JPEG"),
        "rgba.png": enc(rgba, "PNG"),
        "grey.png": enc(rgb.convert("L"), "PNG"),
        "palette.png": enc(rgb.convert("P"), "PNG", transparency=1),
        "lossy.webp": enc(rgb, "WEBP", quality=50),
        "lossless.webp": enc(rgba, "WEBP", lossless=True),
        "frame.gif": enc(rgb.convert("P"), "GIF"),
        "rgb.tif": enc(rgb, "TIFF", compression="tiff_lzw"),
        "grey.tif": enc(rgb.convert("L"), "TIFF"),
    }


def series_seeds() -> dict:
    """series_fuzz: byte 0 even = CSV text, odd = a packed series (encoders/timeseries/series.h)."""
    def packed(length: int, channels: int, values) -> bytes:
        return b"\x01MRTS" + struct.pack("<III", 1, length, channels) + struct.pack(
            f"<{len(values)}f", *values)

    golden = (ROOT / "tests/golden/timeseries/t45_input.csv").read_bytes()
    return {
        "golden.csv": b"\x00" + golden,
        "dates.csv": b"\x00date,load\n2024-01-01,1.5\n2024-01-02,2\n2024-01-03,-3e2\n",
        "monthly.csv": b"\x00month,a,b\n2023-11,1,2\n2023-12,3,4\n",
        "datetime_crlf.csv": b"\x00ds,\"temp, C\"\r\n2016-07-01 00:00:00,1\r\n"
                             b"2016-07-01 01:00:00,2\r\n\r\n",
        "decimal_time.csv": b"\x00time,v\n0.5,1\n1.0,2\n1.5,3\n",
        "quoted_multiline.csv": b"\x00\"two\nlines\",\"q\"\"\"\n\"1\",2\n",
        "ragged.csv": b"\x00a,b\n1,2\n3\n",
        "nan.csv": b"\x00a\n1\nnan\n",
        "packed.bin": packed(7, 2, [0.5 * i for i in range(14)]),
        "packed_truncated.bin": packed(7, 2, [0.5 * i for i in range(13)]),
    }


def main() -> None:
    for harness, seeds in (("zip_fuzz", zip_seeds()), ("pickle_fuzz", pickle_seeds()),
                           ("safetensors_fuzz", safetensors_seeds()),
                           ("image_decode_fuzz", image_seeds()), ("series_fuzz", series_seeds())):
        folder = OUT / harness
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (folder / name).write_bytes(bytes(data))


if __name__ == "__main__":
    main()
