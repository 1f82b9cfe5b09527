#!/usr/bin/env bash
# The main job on the built-in demo model: installs what is missing, builds, writes a small
# random-weight RWKV7 checkpoint (its text is random by design) and streams a generation from it.
#   scripts/demo.sh ["prompt"]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh release
demo=build/demo-model
[[ -f $demo/model.pth ]] || build/bin/modrwkv make-demo-model --out "$demo"
build/bin/modrwkv info --model "$demo/model.pth"
echo "---- generate (random weights: the text is noise; the path is real)"
build/bin/modrwkv generate --model "$demo/model.pth" --prompt "${1:-User: hi\n\nAssistant:}" \
  --max-tokens 64 --seed 1 --stats
