#!/usr/bin/env bash
# Serving benchmark of issue 2: installs wrk when missing, then runs bench/serving.py
# with the project's venv. Arguments are passed on (see `bench/run.sh --help`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! command -v wrk >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    # The package index is only refreshed when the plain install fails.
    if ! $sudo apt-get install -y wrk; then
        $sudo apt-get update
        $sudo apt-get install -y wrk
    fi
fi

exec "$root/.venv/bin/python" "$root/bench/serving.py" "$@"
