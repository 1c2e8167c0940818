#!/usr/bin/env bash
# Benchmarks of issues 2 and 4: installs wrk when missing, then runs bench/serving.py
# (the default) or, with `runtimes` as the first argument, bench/runtimes.py with the
# project's venv. Other arguments are passed on (see `bench/run.sh [runtimes] --help`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

script="serving"
if [ "${1:-}" = "runtimes" ]; then
    script="runtimes"
    shift
fi

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

exec "$root/.venv/bin/python" "$root/bench/$script.py" "$@"
