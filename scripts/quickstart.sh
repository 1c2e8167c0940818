#!/usr/bin/env bash
# The main job: install, start the platform, deploy a real model and predict with it.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

if ! mlplatform status >/dev/null 2>&1; then
  mlplatform up --detach
fi
eval "$(mlplatform env)"
python examples/quickstart.py
echo
echo "The platform keeps running: 'mlplatform status', 'mlplatform down' (with .venv/bin on PATH)."
