#!/usr/bin/env bash
# Runs a Python end-to-end test (default openai_client_test.py) with the `openai` and
# `jsonschema` packages from PyPI, in a virtual environment kept under ~/.cache (made on first
# use; tests only, never the product's runtime).
#   tests/e2e/run_openai_client_test.sh path/to/modrwkv [test_script.py]
set -euo pipefail
readonly OPENAI_VERSION=3.60.0 JSONSCHEMA_VERSION=4.23.0
venv="${MODRWKV_PY_CACHE:-$HOME/.cache/modrwkv}/py-openai-$OPENAI_VERSION-jsonschema-$JSONSCHEMA_VERSION"
# Two tests run this script in parallel: the first makes the environment, the other waits for it
# (on a fresh machine both would otherwise build it in the same folder at once).
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import openai, jsonschema" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "openai==$OPENAI_VERSION" "jsonschema==$JSONSCHEMA_VERSION"
fi
flock -u 9
exec 9>&-
exec "$venv/bin/python" -W error::ResourceWarning "$(dirname "$0")/${2:-openai_client_test.py}" --cli "$1"
