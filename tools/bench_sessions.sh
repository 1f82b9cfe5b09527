#!/usr/bin/env bash
# What the shared session tier costs a conversation: closed-loop clients, each sending its
# requests as turns on its own session (modrwkv-loadgen --sessions), against one server run three
# ways — no shared tier; --shared-sessions (sessions move to Redis only on a drain); and
# --shared-session-write-through (every turn's state stored in Redis before the turn's answer,
# and each turn first checks the local copy's generation there). A local redis-server (Debian's)
# on loopback. Reports each run's loadgen table and, with write-through, the mean time a turn's
# answer waited for its store (modrwkv_shared_session_store_seconds).
#   tools/bench_sessions.sh [shape=0.1b] [dtype=bf16] [engine threads=1] [clients=1] [turns=32]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve-lib.sh
shape=${1:-0.1b}
dtype=${2:-bf16}
threads=${3:-1}
clients=${4:-1}
turns=${5:-32}
bin=build/bin/modrwkv
lg=build/bin/modrwkv-loadgen
dir=$(mktemp -d)
server=
redis=
trap 'kill "$server" "$redis" 2>/dev/null || true; rm -rf "$dir"' EXIT

"$bin" make-demo-model --out "$dir" --shape "$shape" --dtype "$dtype" --seed 2024 >/dev/null
redis_port=$((20000 + RANDOM % 20000))
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
redis=$!
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

for mode in none move write-through; do
  args=()
  [ "$mode" != none ] && args+=(--shared-sessions "redis://127.0.0.1:$redis_port")
  [ "$mode" = write-through ] && args+=(--shared-session-write-through)
  log=$dir/server-$mode.log
  "$bin" serve --model "$dir/model.pth" --threads "$threads" --host 127.0.0.1 --port 0 \
    --metrics-port 0 --metrics-host 127.0.0.1 --max-running 8 "${args[@]}" 2>"$log" &
  server=$!
  wait_ready "$server" "$log"
  echo "## shared tier: $mode ($shape $dtype, $clients client(s), $turns turns of 32 prompt + 16 output tokens)"
  "$lg" --target "127.0.0.1:$port" --sessions --concurrency "$clients" --requests "$turns" \
    --prompt-tokens 32 --output-tokens 16 --temperature 0 |
    grep -E '^(completed|output throughput|TTFT|E2E|first error)'
  if [ "$mode" = write-through ]; then
    curl -s "http://127.0.0.1:$metrics/metrics" |
      awk '/^modrwkv_shared_session_store_seconds_sum/ {s = $2} /^modrwkv_shared_session_store_seconds_count/ {n = $2}
           END {if (n > 0) printf "store  ms  mean %8.2f over %d stores (the turn'"'"'s answer waits for it)\n", 1000 * s / n, n}'
  fi
  kill -TERM "$server"
  wait "$server" || true
  echo
done
