#!/usr/bin/env bash
# The service end to end on the built-in demo model: installs what is missing, builds, writes the
# small random-weight checkpoint, starts `modrwkv serve`, streams a reply through
# `modrwkv client generate`, shows health and a few metrics, then drains the server with SIGTERM.
#   scripts/demo-serve.sh ["prompt"]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh release
bin=build/bin/modrwkv
demo=build/demo-model
[[ -f $demo/model.pth ]] || "$bin" make-demo-model --out "$demo"

log=$(mktemp)
"$bin" serve --model "$demo/model.pth" --host 127.0.0.1 --port 0 \
  --metrics-host 127.0.0.1 --metrics-port 0 --max-running 8 2>"$log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT

# Port 0 = any free port; the server says which in its "listening" log line.
for _ in $(seq 1 600); do
  grep -q 'msg=ready' "$log" && break
  kill -0 "$server" 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
port=$(grep -o 'grpc_port=[0-9]*' "$log" | head -1 | cut -d= -f2)
metrics=$(grep -o 'metrics_port=[0-9]*' "$log" | head -1 | cut -d= -f2)
echo "---- server ready on 127.0.0.1:$port (metrics on :$metrics)"
echo "---- readiness: $("$bin" client health --target "127.0.0.1:$port")"
echo "---- client generate (random weights: the text is noise; the path is real)"
"$bin" client generate --target "127.0.0.1:$port" \
  --prompt "${1:-User: hi}" --max-tokens 64 --seed 1 --usage
echo "---- a few metrics"
if command -v curl >/dev/null; then
  curl -s "127.0.0.1:$metrics/metrics" |
    grep -E '^modrwkv_(generated_tokens_total|prompt_tokens_total|requests_finished_total\{reason="length"\}|state_slots_total) '
fi
echo "---- SIGTERM: drain and exit"
kill -TERM "$server"
wait "$server" && echo "server exited with 0"
echo "---- server log"
cat "$log"
