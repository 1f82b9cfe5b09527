#!/usr/bin/python3
"""modrwkv against the official `rwkv` package, side by side in one run, on the same weights.

Runs `modrwkv bench` and tools/bench_reference.py (which needs Debian's python3-torch and the
`rwkv` package; see tools/golden/README.md) for each thread count, one after the other, pinned to
the same CPUs with taskset, and prints one markdown table with the ratios. CI does not run this.

  /usr/bin/python3 tools/bench_compare.py --threads 1,2 --shapes 0.1b,0.4b --dtypes f32,bf16
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modrwkv", default=os.path.join(HERE, "..", "build", "bin", "modrwkv"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--shapes", default="0.1b,0.4b")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--decode", type=int, default=64, help="decode tokens (reference) / steps (modrwkv)")
    ap.add_argument("--json", default=None, help="write the merged results here")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in [int(x) for x in args.threads.split(",")]:
            cpus = ",".join(str(i) for i in range(t))
            ours_json = os.path.join(tmp, f"ours{t}.json")
            ref_json = os.path.join(tmp, f"ref{t}.json")
            run(["taskset", "-c", cpus, args.modrwkv, "bench", "--shape", args.shapes, "--dtype",
                 args.dtypes, "--threads", str(t), "--batches", "1", "--decode-steps",
                 str(args.decode), "--json", ours_json])
            ref_dtypes = ",".join("fp32" if d == "f32" else d for d in args.dtypes.split(","))
            run(["taskset", "-c", cpus, sys.executable, os.path.join(HERE, "bench_reference.py"),
                 "--shapes", args.shapes, "--dtypes", ref_dtypes, "--threads", str(t),
                 "--decode", str(args.decode), "--json", ref_json])
            ours = json.load(open(ours_json))
            ref = json.load(open(ref_json))
            for o in ours["results"]:
                rd = "fp32" if o["dtype"] == "f32" else o["dtype"]
                r = next(x for x in ref["results"] if x["shape"] == o["shape"] and x["dtype"] == rd)
                rows.append({"shape": o["shape"], "dtype": o["dtype"], "threads": t,
                             "ours_prefill": o["prefill_tps"], "ref_prefill": r["prefill_tok_s"],
                             "ours_decode": o["decode_tps"]["1"], "ref_decode": r["decode_tok_s"],
                             "roofline": o["roofline_tps"]})
    print("| model | weights | threads | modrwkv prefill t/s | official prefill t/s | ratio |"
          " modrwkv decode t/s | official decode t/s | ratio | decode roofline t/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['dtype']} | {r['threads']} | {r['ours_prefill']:.1f} | "
              f"{r['ref_prefill']:.1f} | {r['ours_prefill'] / r['ref_prefill']:.2f}x | "
              f"{r['ours_decode']:.1f} | {r['ref_decode']:.1f} | "
              f"{r['ours_decode'] / r['ref_decode']:.2f}x | {r['roofline']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
