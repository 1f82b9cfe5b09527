#!/usr/bin/env python3
"""Checks that the engine's layers include only the layers below them (docs/engine.md, "Layers").

Static libraries do not fail at link time on a call that goes the wrong way, so the direction is
checked at the source: every `#include "engine/<layer>/..."` in engine/<layer>/, encoders/ and the
CUDA backend must name an allowed layer. Exits 1 listing each violation."""
import pathlib
import re
import sys

ALLOWED = {
    "base": set(),
    "text": {"base"},
    "grammar": {"base"},
    "sampling": {"grammar", "base"},
    "model": {"sampling", "base"},
    "checkpoint": {"base"},
    "cpu": {"model", "sampling", "base"},
    "cuda": {"model", "sampling", "cpu", "base"},  # cpu: its thread pool runs the samplers
    "loader": {"model", "sampling", "checkpoint", "cpu", "cuda", "base"},
    "serving": {"model", "text", "sampling", "base"},
}
# Outside engine/: encoders use the lower layers as libraries (the CPU backend's GEMM and thread
# pool, the checkpoint readers, the loader for a bundle's language model), never the scheduler;
# encoders/cuda runs the towers' layers on the CUDA backend's cuBLAS, streams and LayerNorm.
OUTSIDE = {"encoders": {"model", "sampling", "base", "checkpoint", "cpu", "cuda", "loader", "text"}}

INCLUDE = re.compile(r'#include\s+"engine/([a-z_]+)/')


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    bad = []
    checked = 0
    for layer, allowed in list(ALLOWED.items()) + list(OUTSIDE.items()):
        folder = root / "engine" / layer if layer in ALLOWED else root / layer
        for f in sorted(folder.rglob("*")):
            if f.suffix not in (".h", ".cc", ".cu", ".cuh"):
                continue
            checked += 1
            for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
                m = INCLUDE.match(line.strip())
                if m and m.group(1) != layer and m.group(1) not in allowed:
                    bad.append(f"{f.relative_to(root)}:{n}: {layer}/ may not include "
                               f"engine/{m.group(1)}/ (allowed: {sorted(allowed) or 'none'})")
    for b in bad:
        print(b)
    print(f"check_layers: {checked} files, {len(bad)} violations")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
