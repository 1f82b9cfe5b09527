#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the release build's full suite, the
# engine's tests under AddressSanitizer + UBSan, the concurrent parts under ThreadSanitizer, and a
# short run of each fuzz harness.
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --quick    release build and tests only
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

./scripts/install-deps.sh

echo "== release build and tests"
./scripts/build.sh release
ctest --preset release -j"$(nproc)"

if ((quick)); then exit 0; fi

echo "== ASan + UBSan: engine and CLI tests (the 0.1B-shape golden cases are left to release)"
./scripts/build.sh asan
ASAN_OPTIONS=detect_leaks=1 ctest --preset asan -j"$(nproc)" -E 'm01b'

echo "== ThreadSanitizer: the thread pool, the batch step and the scheduler"
cmake --preset tsan >/dev/null
cmake --build build-tsan -j"$(nproc)" --target scheduler_test cpu_model_test kernels_test
ctest --test-dir build-tsan --output-on-failure -R 'Scheduler|CpuModel|KernelIsa'

echo "== fuzz harnesses, 20 s each"
cmake --preset fuzz >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzzers
for f in build-fuzz/bin/*_fuzz; do
  [[ -x "$f" ]] || continue
  name=$(basename "$f")
  mkdir -p "build-fuzz/corpus/$name"
  dirs=("build-fuzz/corpus/$name")  # new inputs go to the first folder; the rest are seeds
  [[ $name != tokenizer_fuzz ]] && dirs+=(tests/golden/checkpoint tests/golden/rwkv7/micro)
  [[ -d tests/fuzz/seeds/$name ]] && dirs+=("tests/fuzz/seeds/$name")  # make_seeds.py
  echo "-- $name"
  "$f" -max_total_time=20 -rss_limit_mb=4096 -print_final_stats=1 "${dirs[@]}" 2>&1 | tail -n 3
done
echo "== all tests passed"
