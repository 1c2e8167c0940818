#!/usr/bin/env bash
# The test command: install, lint, type-check, run the whole suite against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# The docker runtime's tests need an engine; the JupyterHub tests need its proxy.
./scripts/ensure-docker.sh
./scripts/ensure-node-proxy.sh >/dev/null

ruff check src tests bench examples
ruff format --check src tests bench examples
mypy
pytest "$@"
