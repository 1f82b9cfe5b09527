#!/usr/bin/env bash
# Serving benchmark on a random-weight model of a real shape: the engine's own batch-1 and
# batch-32 decode next to the same traffic through `modrwkv serve` driven by modrwkv-loadgen,
# plus decode speed after long contexts (the RNN's constant cost per token). The comparison runs
# decode greedily, as the engine bench does; one more run shows temperature-1 sampling's cost.
#   tools/bench_server.sh [shape=0.1b] [dtype=bf16] [engine threads=1]
# The server's engine gets THREADS threads; gRPC and the load generator use the rest.
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

echo "## engine (modrwkv bench), $shape $dtype, $threads thread(s)"
"$bin" bench --model "$dir/model.pth" --dtype "$dtype" --threads "$threads" --batches 1,32 \
  --decode-steps 32 --prompt-len 16 2>/dev/null | grep -E '^\|'

"$bin" serve --model "$dir/model.pth" --threads "$threads" --host 127.0.0.1 --port 0 \
  --metrics-port -1 --max-running 32 2>"$log" &
server=$!
wait_ready "$server" "$log"

echo
echo "## server, single stream (prompt 16, 128 tokens, 8 requests)"
"$lg" --target "127.0.0.1:$port" --concurrency 1 --requests 8 --prompt-tokens 16 --output-tokens 128 \
  --temperature 0
echo
echo "## server, concurrency 32 (prompt 16, 64 tokens, 96 requests: prefill is ~18% of the work)"
"$lg" --target "127.0.0.1:$port" --concurrency 32 --requests 96 --prompt-tokens 16 --output-tokens 64 \
  --temperature 0
echo
echo "## server, concurrency 32 (prompt 16, 256 tokens, 96 requests: decode-dominated)"
"$lg" --target "127.0.0.1:$port" --concurrency 32 --requests 96 --prompt-tokens 16 --output-tokens 256 \
  --temperature 0
echo
echo "## server, concurrency 32 (prompt 16, 256 tokens, 96 requests, temperature 1)"
"$lg" --target "127.0.0.1:$port" --concurrency 32 --requests 96 --prompt-tokens 16 --output-tokens 256
kill -TERM "$server"
wait "$server" || true

echo
echo "## decode after long contexts (engine, batch 1)"
"$bin" bench --model "$dir/model.pth" --dtype "$dtype" --threads "$threads" \
  --contexts 1024,8192,65536 --decode-steps 32 2>/dev/null | grep -E '^\|'
