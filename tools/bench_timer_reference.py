"""The official Timer module's encoder speed, the reference for `modrwkv bench --series` on a
model made with `make-demo-model --time-series --series-encoder timer` (docs/benchmarks.md,
"The Timer encoder"): sktime's TimerModel in timer-base-84m's shape, random weights, one thread,
series of 512 / 4,096 / 32,768 steps (5 / 42 / 341 patches of 96).

  OMP_NUM_THREADS=1 taskset -c 1 /work/venv-tf/bin/python tools/bench_timer_reference.py
  taskset -c 1 build/bin/modrwkv bench --series 512,4096,32768 --model DIR --threads 1
(the venv of tools/train/README.md). Pin both: torch.set_num_threads(1) alone still keeps a second
core busy.
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "train"))
import timeseries_model as tsm  # noqa: E402


def main():
    torch.set_num_threads(1)
    enc = tsm.timer_encoder(96, 1024, 8, 8, 2048).eval()
    for steps in (512, 4096, 32768):
        r = steps // 96
        x = torch.randn(1, r, 96)
        with torch.no_grad():
            enc(x)  # warm-up
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 3 or n < 2:
                enc(x)
                n += 1
            dt = (time.perf_counter() - t0) / n
        print(f"steps {steps} patches {r}: {1 / dt:.2f} series/s, {r / dt:.1f} rows/s "
              f"({dt * 1e3:.1f} ms)", flush=True)


if __name__ == "__main__":
    main()
