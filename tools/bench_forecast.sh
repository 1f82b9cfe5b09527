#!/usr/bin/env bash
# Forecast serving benchmark: the 0.1B RWKV7 shape with the demo's time-series modules (random
# weights, `make-demo-model --time-series`; or the Timer with SERIES_ENCODER=timer), one series of
# STEPS steps (default 512):
#   1. the engine alone: `bench --series STEPS` (encoder + prefill + head, in process),
#   2. the same series through `modrwkv serve` and `client forecast`, REPEAT times (encoder cache
#      off: every call encodes), the server's total_time per call and the client's wall time,
# so that the server's overhead over the engine reads off the same minute.
#   tools/bench_forecast.sh [extra serve flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve-lib.sh
bin=build/bin/modrwkv
steps=${STEPS:-512}
repeat=${REPEAT:-5}
threads=${THREADS:-1}
dir=$(mktemp -d)
log=$dir/server.log
trap 'kill "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT
server=
"$bin" make-demo-model --out "$dir" --shape 0.1b --time-series \
  --series-encoder "${SERIES_ENCODER:-wavenet}" --seed 2024 >/dev/null
awk -v n="$steps" 'BEGIN { print "value"; for (t = 0; t < n; t++) printf "%.6f\n", 100 + 10 * sin(t * 0.5236) + t * 0.01 }' >"$dir/series.csv"

echo "## engine alone: bench --series $steps --threads $threads"
"$bin" bench --series "$steps" --model "$dir" --threads "$threads" 2>/dev/null | tail -n 3

"$bin" serve --model "$dir" --host 127.0.0.1 --port 0 --metrics-host 127.0.0.1 --metrics-port 0 \
  --threads "$threads" --encoder-cache-bytes 0 "$@" 2>"$log" &
server=$!
wait_ready "$server" "$log"
echo
echo "## server (--threads $threads${*:+ $*}): client forecast, $repeat calls"
for i in $(seq "$repeat"); do
  t0=$(date +%s.%N)
  "$bin" client forecast --target "127.0.0.1:$port" --csv "$dir/series.csv" --usage 2>&1 >/dev/null |
    tr '\n' ' '
  echo "| client wall $(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.3f", a - b }') s"
done
