#!/usr/bin/env bash
# Media serving benchmark on a random-weight generation-A model of real shapes (0.1B RWKV7 plus the
# SigLIP2-base tower for images, or the Whisper-small encoder for audio; written by
# `modrwkv make-demo-model --vision / --audio`), served with the default encoder settings:
#   0. the encoder alone against the sgemm peak (images: `bench --vision`; audio: the Whisper and
#      WavLM Google Benchmarks, real-time factor),
#   1. time to first token of media + prompt requests (encoder cache off: every item encodes),
#   2. inter-token latency of 8 text streams alone, then while a second client keeps the encoder
#      busy with media requests (items/s from the server's own counter).
#   tools/bench_media.sh image [image file [extra serve flags...]]
#   tools/bench_media.sh audio [audio file [extra serve flags...]]
# BENCH_ENCODER=0 skips step 0.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve-lib.sh
bin=build/bin/modrwkv
lg=build/bin/modrwkv-loadgen
kind=${1:-image}
shift || true
case $kind in
  image)
    file=${1:-tests/golden/image/images/photo_1024x768.jpg}
    model_flags=(--vision siglip2-base)
    label="SigLIP2-base"
    ;;
  audio)
    file=${1:-tests/golden/audio_demo/heldout/clip_000.flac}
    model_flags=(--audio whisper-small)
    label="Whisper-small"
    ;;
  *)
    echo "usage: $0 image|audio [file [serve flags...]]" >&2
    exit 2
    ;;
esac
shift || true
dir=$(mktemp -d)
log=$dir/server.log
trap 'kill "$server" "$bg" 2>/dev/null || true; rm -rf "$dir"' EXIT
server=
bg=

if [[ ${BENCH_ENCODER:-1} == 1 ]]; then
  if [[ $kind == image ]]; then
    echo "## SigLIP2-base/16@384 tower (random weights), images/s"
    "$bin" bench --vision 1,4 --threads 1,2 2>/dev/null
  else
    echo "## Whisper and WavLM encoders (random weights), real-time factor"
    build/bin/whisper_encoder_bench --benchmark_counters_tabular=true 2>/dev/null
    build/bin/wavlm_encoder_bench --benchmark_counters_tabular=true 2>/dev/null
  fi
fi

"$bin" make-demo-model --out "$dir" --shape 0.1b "${model_flags[@]}" --seed 2024 >/dev/null
"$bin" serve --model "$dir" --host 127.0.0.1 --port 0 --metrics-host 127.0.0.1 --metrics-port 0 \
  --encoder-cache-bytes 0 "$@" 2>"$log" &
server=$!
wait_ready "$server" "$log"
echo
echo "## server: 0.1B + $label, default encoder settings${*:+ and $*}"
encoded() { curl -s "127.0.0.1:$metrics/metrics" | awk '/^modrwkv_encoder_items_total /{print $2}'; }

echo
echo "## $kind + prompt, one at a time (16 prompt tokens after the $kind, 16 generated; $(basename "$file"))"
"$lg" --target "127.0.0.1:$port" --concurrency 1 --requests 6 --prompt-tokens 16 --output-tokens 16 \
  --temperature 0 "--$kind" "$file"

echo
echo "## 8 text streams alone (prompt 16, 128 tokens, 32 requests)"
"$lg" --target "127.0.0.1:$port" --concurrency 8 --requests 32 --prompt-tokens 16 --output-tokens 128 \
  --temperature 0

echo
echo "## the same 8 text streams while 2 clients send $kind requests back to back"
"$lg" --target "127.0.0.1:$port" --concurrency 2 --requests 100000 --prompt-tokens 8 --output-tokens 1 \
  --temperature 0 "--$kind" "$file" >/dev/null 2>&1 &
bg=$!
sleep 3  # let the encoder queue fill
before=$(encoded)
t0=$(date +%s.%N)
"$lg" --target "127.0.0.1:$port" --concurrency 8 --requests 32 --prompt-tokens 16 --output-tokens 128 \
  --temperature 0
t1=$(date +%s.%N)
after=$(encoded)
kill "$bg" 2>/dev/null || true
wait "$bg" 2>/dev/null || true
bg=
awk -v a="$after" -v b="$before" -v t0="$t0" -v t1="$t1" -v k="$kind" \
  'BEGIN { printf "%s items encoded meanwhile: %d in %.1f s (%.2f/s)\n", k, a - b, t1 - t0, (a - b) / (t1 - t0) }'
kill -TERM "$server"
wait "$server" || true
server=
