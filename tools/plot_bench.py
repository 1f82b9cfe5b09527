#!/usr/bin/env python3
"""Plots the side-by-side results of tools/bench_compare.py --json (one thread count).

  python3 tools/plot_bench.py docs/bench-data/2026-11-29-compare-1t2t.json --threads 1 \
      --out docs/img/modrwkv-vs-official-1t.png
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows = [r for r in json.load(open(args.json)) if r["threads"] == args.threads]
    labels = [f"{r['shape']} {r['dtype']}" for r in rows]
    x = range(len(rows))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    w = 0.27
    a.bar([i - w for i in x], [r["ours_decode"] for r in rows], w, label="modrwkv")
    a.bar(list(x), [r["ref_decode"] for r in rows], w, label="official rwkv (torch)")
    a.bar([i + w for i in x], [r["roofline"] for r in rows], w, label="bandwidth roofline",
          color="lightgray")
    a.set_title(f"decode, batch 1, {args.threads} thread(s)")
    a.set_ylabel("tokens/s")
    b.bar([i - w / 2 for i in x], [r["ours_prefill"] for r in rows], w, label="modrwkv")
    b.bar([i + w / 2 for i in x], [r["ref_prefill"] for r in rows], w, label="official rwkv (torch)")
    b.set_title(f"prefill, 512-token prompt, {args.threads} thread(s)")
    for ax in (a, b):
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
