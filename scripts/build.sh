#!/usr/bin/env bash
# Configures and builds a preset (default: release) into its build folder.
#   scripts/build.sh [preset] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
shift || true
cmake --preset "$preset" "$@" >/dev/null
cmake --build --preset "$preset" -j"$(nproc)"
