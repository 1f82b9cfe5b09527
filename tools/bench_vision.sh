#!/usr/bin/env bash
# Vision benchmark: the SigLIP2-base/16@384 tower's images/s against the sgemm peak, then a
# random-weight generation-A vision model of real shapes (0.1B RWKV7 + SigLIP2-base tower, written
# by `modrwkv make-demo-model --vision`) served with the default encoder settings:
#   1. time to first token of image + question requests (encoder cache off: every image encodes),
#   2. inter-token latency of 8 text streams alone, then while a second client keeps the encoder
#      busy with image requests (images/s from the server's own counter).
#   tools/bench_vision.sh [image file [extra serve flags...]]   (BENCH_TOWER=0 skips the tower table)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve-lib.sh
bin=build/bin/modrwkv
lg=build/bin/modrwkv-loadgen
img=${1:-tests/golden/image/images/photo_1024x768.jpg}
shift || true
dir=$(mktemp -d)
log=$dir/server.log
trap 'kill "$server" "$bg" 2>/dev/null || true; rm -rf "$dir"' EXIT
server=
bg=

if [[ ${BENCH_TOWER:-1} == 1 ]]; then
  echo "## SigLIP2-base/16@384 tower (random weights), images/s"
  "$bin" bench --vision 1,4 --threads 1,2 2>/dev/null
fi

"$bin" make-demo-model --out "$dir" --shape 0.1b --vision siglip2-base --seed 2024 >/dev/null
"$bin" serve --model "$dir" --host 127.0.0.1 --port 0 --metrics-host 127.0.0.1 --metrics-port 0 \
  --encoder-cache-bytes 0 "$@" 2>"$log" &
server=$!
wait_ready "$server" "$log"
echo
echo "## server: 0.1B + SigLIP2-base, default encoder settings${*:+ and $*}"
encoded() { curl -s "127.0.0.1:$metrics/metrics" | awk '/^modrwkv_encoder_items_total /{print $2}'; }

echo
echo "## image + question, one at a time (16 prompt tokens after the image, 16 generated; $(basename "$img"))"
"$lg" --target "127.0.0.1:$port" --concurrency 1 --requests 6 --prompt-tokens 16 --output-tokens 16 \
  --temperature 0 --image "$img"

echo
echo "## 8 text streams alone (prompt 16, 128 tokens, 32 requests)"
"$lg" --target "127.0.0.1:$port" --concurrency 8 --requests 32 --prompt-tokens 16 --output-tokens 128 \
  --temperature 0

echo
echo "## the same 8 text streams while 2 clients send image requests back to back"
"$lg" --target "127.0.0.1:$port" --concurrency 2 --requests 100000 --prompt-tokens 8 --output-tokens 1 \
  --temperature 0 --image "$img" >/dev/null 2>&1 &
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
awk -v a="$after" -v b="$before" -v t0="$t0" -v t1="$t1" \
  'BEGIN { printf "images encoded meanwhile: %d in %.1f s (%.2f images/s)\n", a - b, t1 - t0, (a - b) / (t1 - t0) }'
kill -TERM "$server"
wait "$server" || true
server=
