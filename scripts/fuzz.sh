#!/usr/bin/env bash
# Builds the libFuzzer harnesses (the `fuzz` preset: clang, ASan + UBSan) and runs each one for
# a while on its seeds and its corpus, as many at a time as there are CPUs.
#   scripts/fuzz.sh [seconds [jobs]]   seconds per harness (default 20: what CI runs); jobs
#                                      running at once (default: the CPUs)
#   FUZZ_ONLY='zip_fuzz pickle_fuzz' scripts/fuzz.sh 600   only these harnesses
# The corpus each one grows is kept in build-fuzz/corpus/<harness> and is where the next run
# starts; a crash leaves its input in build-fuzz/artifacts/ (<harness>-crash-*, -leak-*,
# -timeout-*), named in the log.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
jobs=${2:-$(nproc)}

cmake --preset fuzz >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzzers
# Seed messages of the request-conversion harness are kept as text protos; encode them.
rm -rf build-fuzz/seeds && mkdir -p build-fuzz/seeds/convert_fuzz
for t in tests/fuzz/textproto_seeds/convert_fuzz/*.txtpb; do
  type=modrwkv.v1.GenerateRequest
  [[ $(basename "$t") == chat_* ]] && type=modrwkv.v1.ChatRequest
  protoc -Iproto --encode="$type" proto/modrwkv/v1/inference.proto <"$t" \
    >"build-fuzz/seeds/convert_fuzz/$(basename "$t" .txtpb).bin"
done
# The harnesses run `jobs` at a time (each one single-threaded, its time its own), in batches; each one's output goes to its log, of which the last lines are printed, the
# whole log when it fails (a crash's report and the input that caused it).
mkdir -p build-fuzz/logs build-fuzz/artifacts
batch_pids=() batch_names=() fuzz_failed=()
finish_batch() {
  local i name
  for i in "${!batch_pids[@]}"; do
    name=${batch_names[$i]}
    echo "-- $name"
    if wait "${batch_pids[$i]}"; then
      tail -n 3 "build-fuzz/logs/$name.log"
    else
      cat "build-fuzz/logs/$name.log"
      fuzz_failed+=("$name")
    fi
  done
  batch_pids=() batch_names=()
}
for f in build-fuzz/bin/*_fuzz; do
  [[ -x "$f" ]] || continue
  name=$(basename "$f")
  [[ -z "${FUZZ_ONLY:-}" || " $FUZZ_ONLY " == *" $name "* ]] || continue
  mkdir -p "build-fuzz/corpus/$name"
  dirs=("build-fuzz/corpus/$name")  # new inputs go to the first folder; the rest are seeds
  case $name in
    pickle_fuzz | safetensors_fuzz | zip_fuzz) dirs+=(tests/golden/checkpoint tests/golden/rwkv7/micro) ;;
    image_decode_fuzz) dirs+=(tests/golden/image/images tests/golden/image/bad) ;;
    audio_decode_fuzz) dirs+=(tests/golden/audio/files tests/golden/audio/bad) ;;
  esac
  [[ -d tests/fuzz/seeds/$name ]] && dirs+=("tests/fuzz/seeds/$name")  # make_seeds.py
  [[ -d build-fuzz/seeds/$name ]] && dirs+=("build-fuzz/seeds/$name")  # encoded text protos
  "$f" -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="build-fuzz/artifacts/$name-" "${dirs[@]}" \
    >"build-fuzz/logs/$name.log" 2>&1 &
  batch_pids+=($!) batch_names+=("$name")
  if ((${#batch_pids[@]} >= jobs)); then finish_batch; fi
done
finish_batch
if ((${#fuzz_failed[@]} > 0)); then
  echo "fuzz harnesses failed: ${fuzz_failed[*]}"
  exit 1
fi