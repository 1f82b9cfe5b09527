#!/usr/bin/env bash
# The service end to end on the built-in demo models: installs what is missing, builds, starts
# `modrwkv serve` on the trained vision demo (assets/vision-demo), asks it about shipped example
# images through `modrwkv client chat --image` (once more from a state-tuned initial state that
# adds where the shape is), shows health and a few metrics, drains the server
# with SIGTERM; then serves the trained speech demo (assets/audio-demo) and transcribes its example
# clips (WAV, FLAC, MP3, Ogg) through `modrwkv client generate --audio`; then serves the trained
# forecaster (assets/ts-demo) and forecasts two held-out series through `modrwkv client forecast`
# (with its quantile band), next to what really happened; then streams a reply from the random-weight text demo model (its
# text is noise).
#   scripts/demo-serve.sh ["question about the pictures"]
# The demo model knows three questions: "What shape is in the picture?", "What color is the
# shape?" and "Where is the shape?".
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve-lib.sh
./scripts/install-deps.sh
./scripts/build.sh release
bin=build/bin/modrwkv
vision=assets/vision-demo
question=${1:-What shape is in the picture?}

log=$(mktemp)
server=
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
"$bin" serve --model "$vision" --host 127.0.0.1 --port 0 \
  --initial-state "detailed=$vision/states/detailed.pth" \
  --metrics-host 127.0.0.1 --metrics-port 0 --max-running 8 2>"$log" &
server=$!
wait_ready "$server" "$log"
echo "---- vision demo ready on 127.0.0.1:$port (metrics on :$metrics)"
echo "---- readiness: $("$bin" client health --target "127.0.0.1:$port")"
for image in "$vision"/examples/*.{png,jpg}; do
  echo "---- $(basename "$image"): $question"
  echo "$question" |
    "$bin" client chat --target "127.0.0.1:$port" --image "$image" --temperature 0 --usage
done
# A state-tuned start (assets/vision-demo/states/detailed.pth: only the initial state was trained,
# every weight frozen): the same weights now add where the shape is.
examples=("$vision"/examples/*.png)
image=${examples[0]}
echo "---- $(basename "$image") from the tuned initial state 'detailed': What shape is in the picture?"
echo "What shape is in the picture?" |
  "$bin" client chat --target "127.0.0.1:$port" --image "$image" --temperature 0 \
    --initial-state detailed
echo "---- a few metrics"
if command -v curl >/dev/null; then
  curl -s "127.0.0.1:$metrics/metrics" |
    grep -E '^modrwkv_(encoder_items_total|image_rows_per_request_count|generated_tokens_total) '
fi
echo "---- SIGTERM: drain and exit"
kill -TERM "$server"
wait "$server" && echo "server exited with 0"

audio=assets/audio-demo
"$bin" serve --model "$audio" --host 127.0.0.1 --port 0 --metrics-port -1 --max-running 8 \
  2>"$log" &
server=$!
wait_ready "$server" "$log"
echo "---- speech demo ready: transcribing its example clips (spoken words in the file names)"
for clip in "$audio"/examples/*.{wav,flac,mp3,ogg}; do
  echo "---- $(basename "$clip")"
  "$bin" client generate --target "127.0.0.1:$port" --audio "$clip" \
    --prompt "$(printf '\026Assistant:')" --stop "$(printf '\027')" --temperature 0 \
    --max-tokens 16 --usage
done
kill -TERM "$server"
wait "$server" && echo "server exited with 0"

ts=assets/ts-demo
heldout=tests/golden/ts_demo/heldout
"$bin" serve --model "$ts" --host 127.0.0.1 --port 0 --metrics-port -1 2>"$log" &
server=$!
wait_ready "$server" "$log"
echo "---- forecaster ready: the next 12 steps of held-out series (the forecast and its 0.1 / 0.5 /"
echo "     0.9 quantiles), next to what happened"
for name in airline co2; do
  echo "---- $name (forecast, quantiles | actual)"
  paste -d '|' \
    <("$bin" client forecast --target "127.0.0.1:$port" --csv "$heldout/${name}_input.csv" \
      --quantiles) \
    "$heldout/${name}_target.csv"
done
kill -TERM "$server"
wait "$server" && echo "server exited with 0"

demo=build/demo-model
[[ -f $demo/model.pth ]] || "$bin" make-demo-model --out "$demo" >/dev/null
"$bin" serve --model "$demo/model.pth" --host 127.0.0.1 --port 0 --metrics-port -1 \
  --max-running 8 2>"$log" &
server=$!
wait_ready "$server" "$log"
echo "---- text demo (random weights: the text is noise; the path is real)"
"$bin" client generate --target "127.0.0.1:$port" --prompt "User: hi" --max-tokens 32 --seed 1 \
  --usage
kill -TERM "$server"
wait "$server" && echo "server exited with 0"
