#!/usr/bin/env python3
"""Checks the overlapped-launch contract of the CUDA backend (engine/cuda/launch.cuh).

Kernels are launched with programmatic dependent launch: a kernel may start while the one before
it still runs, so every kernel must call WaitForPredecessor() before it reads what an earlier
kernel wrote or writes anything. A kernel that forgets races with its predecessor, silently and
only on sm_90 GPUs, where CI cannot run it. So it is checked at the source, on every machine:

  - every __global__ function in engine/cuda/*.cu and encoders/cuda/*.cu calls WaitForPredecessor() in its body, unless
    the line before it says `// plain launch: <why>` (launched with <<<>>>, ordinary stream order);
  - a `<<<` launch appears only for such a kernel: the others go through Launch().

It checks that the call is there, not where: the wait must still come before the kernel's first
dependent read or write (review). Exits 1 listing each violation."""
import pathlib
import re
import sys

GLOBAL = re.compile(r"__global__\s")
PLAIN = "// plain launch:"
NAME = re.compile(r"(\w+)\s*\(")
LAUNCH_BOUNDS = re.compile(r"[\w\s]*__launch_bounds__\s*\([^)]*\)")


def kernels(text: str):
    """(name, body, plain) for each __global__ function definition in `text`."""
    for m in GLOBAL.finditer(text):
        start = m.end()
        bounds = LAUNCH_BOUNDS.match(text, start)
        if bounds:
            start = bounds.end()
        # The kernel's name: the first identifier followed by its parameter list.
        named = NAME.search(text, start)
        if not named:
            continue
        name, open_paren = named.group(1), named.end() - 1
        brace = text.find("{", open_paren)
        semicolon = text.find(";", open_paren)
        if brace < 0 or (0 <= semicolon < brace):
            continue  # a declaration
        depth, i = 0, brace
        while i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
            if depth == 0:
                break
        # The mark is on the line above the kernel (or above its `template <...>` line).
        above = text[:text.rfind("\n", 0, m.start()) + 1].splitlines()
        while above and above[-1].lstrip().startswith("template"):
            above.pop()
        plain = bool(above) and PLAIN in above[-1]
        yield name, text[brace:i], plain


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    bad, checked, plain_kernels = [], 0, set()
    for f in sorted([*(root / "engine" / "cuda").glob("*.cu"), *(root / "encoders" / "cuda").glob("*.cu")]):
        text = f.read_text(errors="replace")
        rel = f.relative_to(root)
        for name, body, plain in kernels(text):
            checked += 1
            if plain:
                plain_kernels.add(name)
            elif "WaitForPredecessor()" not in body:
                bad.append(f"{rel}: kernel {name} never calls WaitForPredecessor() "
                           f"(launch.cuh's contract), nor is it marked '{PLAIN} ...'")
        for n, line in enumerate(text.splitlines(), 1):
            if "<<<" in line and not any(k in line for k in plain_kernels):
                bad.append(f"{rel}:{n}: a <<<>>> launch of a kernel not marked '{PLAIN} ...': "
                           "launch it through Launch()")
    if checked == 0:
        bad.append("no __global__ function found under engine/cuda: the check is broken")
    for b in bad:
        print(b)
    print(f"check_cuda_launches: {checked} kernels, {len(plain_kernels)} launched plainly, "
          f"{len(bad)} violations")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
