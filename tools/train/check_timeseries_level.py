"""How a time-series model folder forecasts Nile-like series, without touching the held-out tails:
nile's two validation windows before the tail (MSE / naive, forecast spread) and 300 generated
local-level series (timeseries_data._local_level, seed 777; 88 steps in, 12 out).

  /work/venv-tf/bin/python tools/train/check_timeseries_level.py --model assets/ts-demo
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timeseries_data as data  # noqa: E402
import timeseries_model as tsm  # noqa: E402

H = data.HORIZON


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--series", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = tsm.load_model_dir(args.model)
    nile = next(s for s in data.heldout_series() if s["name"] == "nile")["values"]
    for w in (1, 2):
        x, y = data.split(nile[:len(nile) - w * H], 96)
        f = tsm.forecast(model, x)[:, 0]
        ratio = np.mean((f - y) ** 2) / np.mean((x[-1] - y) ** 2)
        print(f"nile validation {w}: MSE / naive {ratio:.3f}, forecast sd {f.std():.1f} "
              f"(input sd {x.std():.1f})")
    rng = np.random.default_rng(777)
    to_naive, to_mean = [], []
    for _ in range(args.series):
        v = data._local_level(rng, 88 + H) * 100 + 900
        x, y = v[:88], v[88:]
        err = np.mean((tsm.forecast(model, x)[:, 0] - y) ** 2)
        to_naive.append(err / np.mean((x[-1] - y) ** 2))
        to_mean.append(err / np.mean((x[-10:].mean() - y) ** 2))
    print(f"{args.series} local-level series: geomean MSE / naive "
          f"{np.exp(np.mean(np.log(to_naive))):.3f} "
          f"(beats it on {np.mean(np.less(to_naive, 1)):.2f}), / mean of the last 10 inputs "
          f"{np.exp(np.mean(np.log(to_mean))):.3f}")


if __name__ == "__main__":
    sys.exit(main())
