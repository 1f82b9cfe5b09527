#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the release build's full suite, then the
# engine's tests under AddressSanitizer + UBSan, then a short run of each fuzz harness.
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

echo "== fuzz harnesses, 20 s each"
./scripts/build.sh fuzz
for f in build-fuzz/bin/*_fuzz; do
  [[ -x "$f" ]] || continue
  name=$(basename "$f")
  corpus="tests/fuzz/corpus/${name%_fuzz}"
  mkdir -p "build-fuzz/corpus/$name"
  dirs=("build-fuzz/corpus/$name")
  [[ -d "$corpus" ]] && dirs+=("$corpus")
  echo "-- $name"
  "$f" -max_total_time=20 -rss_limit_mb=4096 -print_final_stats=1 "${dirs[@]}" 2>&1 | tail -n 3
done
echo "== all tests passed"
