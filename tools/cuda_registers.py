#!/usr/bin/env python3
"""Registers, spills and shared memory of every CUDA kernel, from ptxas, without a GPU.

A kernel that spills keeps part of its working set in local memory (L1, then L2): a loop that
spills runs at a fraction of its rate, and nothing at run time says so. ptxas reports it at
compile time, so this runs on any machine with nvcc:

  tools/cuda_registers.py [--arch sm_90] [--nvcc PATH] [--all]

It compiles engine/cuda/*.cu and encoders/cuda/*.cu for one architecture with `-Xptxas -v` and
prints one line per kernel (demangled, shortened): registers, spill stores / loads in bytes,
static shared memory. Without --all it lists the kernels that spill and counts the rest. Where a
spill sits (a hot loop or a kernel's prologue) takes the disassembly: cuobjdump -sass, STL / LDL.
Exits 1 if a file does not compile."""
import argparse
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    return out.stdout.splitlines() if out.returncode == 0 else names


def shorten(name: str) -> str:
    name = re.sub(r"modrwkv::(cuda|encoders)::(\(anonymous namespace\)::)?", "", name)
    return name if len(name) <= 90 else name[:87] + "..."


def kernels(source: pathlib.Path, arch: str, nvcc: str, obj: pathlib.Path):
    """(mangled name, registers, spill stores, spill loads, smem) per kernel of `source`."""
    cmd = [nvcc, "-std=c++20", "-O3", f"-arch={arch}", f"-I{ROOT}", "-Xptxas", "-v", "-c",
           str(source), "-o", str(obj)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"{source}: nvcc failed\n{run.stderr}")
    current, spills = None, (0, 0)
    for line in run.stderr.splitlines():
        if m := ENTRY.search(line):
            current, spills = m.group(1), (0, 0)
        elif (m := SPILL.search(line)) and current:
            spills = (int(m.group(1)), int(m.group(2)))
        elif (m := USED.search(line)) and current:
            yield current, int(m.group(1)), *spills, int(m.group(2) or 0)
            current = None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--nvcc", default="/usr/local/cuda/bin/nvcc")
    parser.add_argument("--all", action="store_true", help="list every kernel, not only spills")
    args = parser.parse_args()
    sources = sorted((ROOT / "engine/cuda").glob("*.cu")) + sorted(
        (ROOT / "encoders/cuda").glob("*.cu"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for source in sources:
            for k in kernels(source, args.arch, args.nvcc, pathlib.Path(tmp) / "k.o"):
                rows.append((source.name, *k))
    names = demangle([r[1] for r in rows])
    spilling = [r for r in rows if r[3] or r[4]]
    shown = rows if args.all else spilling
    print(f"{'file':18} {'regs':>4} {'spill st/ld':>11} {'smem':>6}  kernel ({args.arch})")
    for r, name in zip(rows, names):
        if r in shown:
            print(f"{r[0]:18} {r[2]:4} {r[3]:5}/{r[4]:<5} {r[5]:6}  {shorten(name)}")
    print(f"{len(rows)} kernels, {len(spilling)} spill")
    return 0


if __name__ == "__main__":
    sys.exit(main())
