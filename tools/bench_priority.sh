#!/usr/bin/env bash
# Request priorities under load: a batch job keeps the server busy (closed loop, more clients than
# --max-running), while interactive requests arrive at a low rate. Run twice on one server: the
# batch job at priority 0, as the interactive requests (first come, first served), then at -10.
# Reports the interactive requests' TTFT and the batch job's throughput each time
# (modrwkv-loadgen's tables).
#   tools/bench_priority.sh [shape=0.1b] [dtype=bf16] [engine threads=1]
#   tools/bench_priority.sh image [image file]   every request carries an image (0.1B + the
#       SigLIP2-base tower, random weights, encoder cache off): the batch job keeps the media
#       encoder's queue long, which priorities order too
#   tools/bench_priority.sh aging [aging=1s]   starvation: a flood at priority 0 keeps requests
#       waiting for the whole run, a few requests at -5 arrive meanwhile; a server with strict
#       priorities, then one with --priority-aging (0.1B bf16, one engine thread)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve-lib.sh
bin=build/bin/modrwkv
lg=build/bin/modrwkv-loadgen
dir=$(mktemp -d)
log=$dir/server.log
trap 'kill "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT

if [[ ${1:-} == aging ]]; then
  aging=${2:-1s}
  "$bin" make-demo-model --out "$dir" --shape 0.1b --dtype bf16 --seed 2024 >/dev/null
  for flags in "--priority-aging 0" "--priority-aging $aging"; do
    # shellcheck disable=SC2086  # $flags is two words on purpose
    "$bin" serve --model "$dir/model.pth" --host 127.0.0.1 --port 0 --metrics-port -1 \
      --max-running 8 --threads 1 --max-request-priority 0 $flags 2>"$log" &
    server=$!
    wait_ready "$server" "$log"
    echo "## $flags: flood at 0 (16 clients, 64 requests, prompt 64, 128 tokens; --max-running 8),"
    echo "## low at -5 (0.5 requests/s from 3 s on, 4 requests, prompt 32, 16 tokens)"
    "$lg" --target "127.0.0.1:$port" --concurrency 16 --requests 64 --prompt-tokens 64 \
      --output-tokens 128 --temperature 0 >"$dir/flood.txt" &
    flood_pid=$!
    sleep 3
    "$lg" --target "127.0.0.1:$port" --rate 0.5 --requests 4 --prompt-tokens 32 \
      --output-tokens 16 --temperature 0 --priority -5 --seed 7
    wait "$flood_pid"
    echo "-- flood:"
    grep -E '^(completed|output throughput|TTFT|E2E)' "$dir/flood.txt"
    echo
    kill -TERM "$server"
    wait "$server" || true
  done
  exit 0
fi

if [[ ${1:-} == image ]]; then
  image=${2:-tests/golden/image/images/photo_1024x768.jpg}
  "$bin" make-demo-model --out "$dir" --shape 0.1b --vision siglip2-base --seed 2024 >/dev/null
  model=$dir
  serve_flags=(--encoder-cache-bytes 0)
  batch=(--concurrency 8 --requests 24 --prompt-tokens 32 --output-tokens 16 --image "$image")
  interactive=(--rate 0.25 --requests 6 --prompt-tokens 16 --output-tokens 8 --image "$image")
  what="0.1B + SigLIP2-base, every request with an image; batch job: 8 clients, 24 requests
## (prompt 32, 16 tokens); interactive: 0.25 requests/s, 6 requests (prompt 16, 8 tokens)"
else
  shape=${1:-0.1b}
  dtype=${2:-bf16}
  threads=${3:-1}
  "$bin" make-demo-model --out "$dir" --shape "$shape" --dtype "$dtype" --seed 2024 >/dev/null
  model=$dir/model.pth
  serve_flags=(--threads "$threads")
  batch=(--concurrency 16 --requests 48 --prompt-tokens 64 --output-tokens 128)
  interactive=(--rate 0.5 --requests 10 --prompt-tokens 32 --output-tokens 16)
  what="batch job: 16 clients, 48 requests (prompt 64, 128 tokens); interactive: 0.5
## requests/s, 10 requests (all within the batch job) (prompt 32, 16 tokens)"
fi
"$bin" serve --model "$model" --host 127.0.0.1 --port 0 --metrics-port -1 --max-running 8 \
  "${serve_flags[@]}" 2>"$log" &
server=$!
wait_ready "$server" "$log"

for batch_priority in 0 -10; do
  echo "## batch job at priority $batch_priority, interactive at 0; --max-running 8; $what"
  "$lg" --target "127.0.0.1:$port" "${batch[@]}" --temperature 0 --priority "$batch_priority" \
    >"$dir/batch.txt" &
  batch_pid=$!
  sleep 3  # the batch fills the slots and the queues first
  "$lg" --target "127.0.0.1:$port" "${interactive[@]}" --temperature 0 --seed 7
  wait "$batch_pid"
  echo "-- batch job:"
  grep -E '^(completed|output throughput|image throughput|TTFT|E2E)' "$dir/batch.txt"
  echo
done
kill -TERM "$server"
wait "$server" || true
