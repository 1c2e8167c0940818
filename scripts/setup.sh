#!/usr/bin/env bash
# Install mlplatform and its test tools into .venv inside the checkout (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "Error: Python 3.11 or newer is needed (found $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
echo "installed: $(.venv/bin/mlplatform --version 2>/dev/null || .venv/bin/python -c 'import mlplatform; print("mlplatform", mlplatform.__version__)')"
