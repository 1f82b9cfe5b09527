#!/usr/bin/env bash
# Callers sharing a server: one caller floods it while another sends a few requests, each with its
# own bearer token. Two workloads, each run on a server with --fair-callers (the default) and on
# one with --no-fair-callers, one after the other on the same machine:
#   decode:  the flood keeps 32 requests going against --max-running 8 (short prompts, 128 tokens
#            out), so most of them wait for a place in the batch: admission decides;
#   prefill: the flood keeps 8 prompts of 2,048 tokens going, all running at once (--max-running
#            16): the prefill budget of each step decides;
#   image:   every request carries an image (0.1B + the SigLIP2-base tower, random weights,
#            encoder cache off); the flood's 8 clients keep the media encoder's queue long: the
#            encoder's queue decides (other caller at 0.25/s).
# The other caller's requests arrive at 0.5/s; its TTFT is the figure. Reports modrwkv-loadgen's
# tables for both callers.
#   tools/bench_callers.sh [shape=0.1b] [dtype=bf16] [engine threads=1] [workloads=decode,prefill]
#   tools/bench_callers.sh 0.1b bf16 1 image
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve-lib.sh
bin=build/bin/modrwkv
lg=build/bin/modrwkv-loadgen
shape=${1:-0.1b}
dtype=${2:-bf16}
threads=${3:-1}
workloads=${4:-decode,prefill}
dir=$(mktemp -d)
log=$dir/server.log
server=
trap 'kill "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT
printf 'flood flood-token-0001\nother other-token-0002\n' >"$dir/tokens"
"$bin" make-demo-model --out "$dir/text" --shape "$shape" --dtype "$dtype" --seed 2024 >/dev/null
image=tests/golden/image/images/photo_1024x768.jpg

for workload in ${workloads//,/ }; do
  model=$dir/text/model.pth
  serve_flags=(--threads "$threads")
  case $workload in
    image)
      [[ -d $dir/vision ]] ||
        "$bin" make-demo-model --out "$dir/vision" --shape 0.1b --vision siglip2-base --seed 2024 >/dev/null
      model=$dir/vision
      serve_flags=(--encoder-cache-bytes 0)  # and all CPUs for the model, as bench_priority.sh
      running=8
      flood=(--concurrency 8 --requests 24 --prompt-tokens 32 --output-tokens 16 --image "$image")
      other=(--rate 0.25 --requests 6 --prompt-tokens 16 --output-tokens 8 --image "$image")
      ;;
    decode)
      running=8
      flood=(--concurrency 32 --requests 64 --prompt-tokens 64 --output-tokens 128)
      other=(--rate 0.5 --requests 10 --prompt-tokens 32 --output-tokens 16)
      ;;
    prefill)
      running=16
      flood=(--concurrency 8 --requests 16 --prompt-tokens 2048 --output-tokens 8)
      other=(--rate 0.5 --requests 10 --prompt-tokens 256 --output-tokens 8)
      ;;
    *) echo "unknown workload $workload" >&2; exit 2 ;;
  esac
  for fair in --fair-callers --no-fair-callers; do
    "$bin" serve --model "$model" --host 127.0.0.1 --port 0 --metrics-port -1 \
      --max-running "$running" --auth-token-file "$dir/tokens" "$fair" "${serve_flags[@]}" \
      2>"$log" &
    server=$!
    wait_ready "$server" "$log"
    echo "## $workload, $fair; $model ${serve_flags[*]} --max-running $running;"
    echo "## flood: ${flood[*]}; other caller: ${other[*]}"
    "$lg" --target "127.0.0.1:$port" --token flood-token-0001 "${flood[@]}" --temperature 0 \
      >"$dir/flood.txt" &
    flood_pid=$!
    sleep 3  # the flood fills the batch and the queue first
    "$lg" --target "127.0.0.1:$port" --token other-token-0002 "${other[@]}" --temperature 0 --seed 7
    wait "$flood_pid"
    echo "-- flood:"
    grep -E '^(completed|output throughput|image throughput|TTFT|E2E)' "$dir/flood.txt"
    echo
    kill -TERM "$server"
    wait "$server" || true
  done
done
