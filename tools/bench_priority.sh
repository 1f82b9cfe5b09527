#!/usr/bin/env bash
# Request priorities under load: a batch job keeps the server's batch full and its queue long
# (closed loop, more clients than --max-running), while interactive requests arrive at a low
# rate. Run twice on one server: the batch job at priority 0, as the interactive requests (first
# come, first served), then at -10. Reports the interactive requests' TTFT and the batch job's
# throughput each time (modrwkv-loadgen's tables).
#   tools/bench_priority.sh [shape=0.1b] [dtype=bf16] [engine threads=1]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve-lib.sh
shape=${1:-0.1b}
dtype=${2:-bf16}
threads=${3:-1}
bin=build/bin/modrwkv
lg=build/bin/modrwkv-loadgen
dir=$(mktemp -d)
log=$dir/server.log
trap 'kill "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT

"$bin" make-demo-model --out "$dir" --shape "$shape" --dtype "$dtype" --seed 2024 >/dev/null
"$bin" serve --model "$dir/model.pth" --threads "$threads" --host 127.0.0.1 --port 0 \
  --metrics-port -1 --max-running 8 2>"$log" &
server=$!
wait_ready "$server" "$log"

for batch_priority in 0 -10; do
  echo "## batch job at priority $batch_priority: 16 clients, 48 requests (prompt 64, 128 tokens);"
  echo "## interactive at priority 0: 0.5 requests/s, 10 requests (all within the batch job) (prompt 32, 16 tokens); --max-running 8"
  "$lg" --target "127.0.0.1:$port" --concurrency 16 --requests 48 --prompt-tokens 64 \
    --output-tokens 128 --temperature 0 --priority "$batch_priority" >"$dir/batch.txt" &
  batch=$!
  sleep 3  # the batch fills the slots and the queue first
  "$lg" --target "127.0.0.1:$port" --rate 0.5 --requests 10 --prompt-tokens 32 \
    --output-tokens 16 --temperature 0 --seed 7
  wait "$batch"
  echo "-- batch job:"
  grep -E '^(completed|output throughput|TTFT|E2E)' "$dir/batch.txt"
  echo
done
kill -TERM "$server"
wait "$server" || true
