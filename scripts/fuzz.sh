#!/usr/bin/env bash
# Builds the libFuzzer harnesses (the `fuzz` preset: clang, ASan + UBSan, everything
# instrumented for coverage at -O2) and runs each one for a while on its seeds and its corpus,
# as many at a time as there are CPUs.
#   scripts/fuzz.sh [seconds [jobs]]   seconds per harness (default 20: what CI runs); jobs
#                                      running at once (default: the CPUs)
#   FUZZ_ONLY='zip_fuzz pickle_fuzz' scripts/fuzz.sh 600   only these harnesses
#   FUZZ_PRESET=asan scripts/fuzz.sh   the harnesses of the asan preset's build instead (what CI
#                                      runs: that build is there already; -O1, coverage on the
#                                      fuzzed sources only: tests/CMakeLists.txt)
# The corpus each one grows is kept in build-<preset>/corpus/<harness> and is where the next run
# starts; a crash leaves its input in build-<preset>/artifacts/ (<harness>-crash-*, -leak-*,
# -timeout-*), named in the log.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
jobs=${2:-$(nproc)}
preset=${FUZZ_PRESET:-fuzz}
dir=build-$preset

cmake --preset "$preset" >/dev/null
cmake --build "$dir" -j"$(nproc)" --target fuzzers
# Seed messages of the request-conversion harness are kept as text protos; encode them.
rm -rf "$dir/seeds" && mkdir -p "$dir/seeds/convert_fuzz"
for t in tests/fuzz/textproto_seeds/convert_fuzz/*.txtpb; do
  type=modrwkv.v1.GenerateRequest
  [[ $(basename "$t") == chat_* ]] && type=modrwkv.v1.ChatRequest
  protoc -Iproto --encode="$type" proto/modrwkv/v1/inference.proto <"$t" \
    >"$dir/seeds/convert_fuzz/$(basename "$t" .txtpb).bin"
done
# The harnesses run `jobs` at a time (each one single-threaded, its time its own), in batches; each one's output goes to its log, of which the last lines are printed, the
# whole log when it fails (a crash's report and the input that caused it).
mkdir -p "$dir/logs" "$dir/artifacts"
batch_pids=() batch_names=() fuzz_failed=()
finish_batch() {
  local i name
  for i in "${!batch_pids[@]}"; do
    name=${batch_names[$i]}
    echo "-- $name"
    if wait "${batch_pids[$i]}"; then
      tail -n 3 "$dir/logs/$name.log"
    else
      cat "$dir/logs/$name.log"
      fuzz_failed+=("$name")
    fi
  done
  batch_pids=() batch_names=()
}
for f in "$dir"/bin/*_fuzz; do
  [[ -x "$f" ]] || continue
  name=$(basename "$f")
  [[ -z "${FUZZ_ONLY:-}" || " $FUZZ_ONLY " == *" $name "* ]] || continue
  mkdir -p "$dir/corpus/$name"
  dirs=("$dir/corpus/$name")  # new inputs go to the first folder; the rest are seeds
  case $name in
    pickle_fuzz | safetensors_fuzz | zip_fuzz) dirs+=(tests/golden/checkpoint tests/golden/rwkv7/micro) ;;
    image_decode_fuzz) dirs+=(tests/golden/image/images tests/golden/image/bad) ;;
    audio_decode_fuzz) dirs+=(tests/golden/audio/files tests/golden/audio/bad) ;;
  esac
  [[ -d tests/fuzz/seeds/$name ]] && dirs+=("tests/fuzz/seeds/$name")  # make_seeds.py
  [[ -d $dir/seeds/$name ]] && dirs+=("$dir/seeds/$name")  # encoded text protos
  "$f" -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/$name-" "${dirs[@]}" \
    >"$dir/logs/$name.log" 2>&1 &
  batch_pids+=($!) batch_names+=("$name")
  if ((${#batch_pids[@]} >= jobs)); then finish_batch; fi
done
finish_batch
if ((${#fuzz_failed[@]} > 0)); then
  echo "fuzz harnesses failed: ${fuzz_failed[*]}"
  exit 1
fi