#!/usr/bin/env bash
# Install configurable-http-proxy (CHP), JupyterHub's default proxy, into a prefix
# inside the repository, and print the path of its binary.
#
# Idempotent: when the pinned version is already there, nothing is fetched. The prefix
# is <repo>/.node unless MLPLATFORM_NODE_PREFIX names another one.
#
# Why CHP and not jupyterhub-traefik-proxy: the platform's Traefik already sits in
# front of every instance, so the hub only needs the simplest proxy for its own
# single-user servers; CHP is what JupyterHub ships with and tests against.
set -euo pipefail

CHP_VERSION="${CHP_VERSION:-5.3.0}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${MLPLATFORM_NODE_PREFIX:-$repo/.node}"
binary="$prefix/node_modules/.bin/configurable-http-proxy"
manifest="$prefix/node_modules/configurable-http-proxy/package.json"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "Error: node and npm are needed for configurable-http-proxy;" \
        "install Node.js 18 or newer (apt-get install nodejs npm)" >&2
    exit 1
fi

installed=""
if [[ -f "$manifest" ]]; then
    installed="$(node -p "require(process.argv[1]).version" "$manifest")"
fi

if [[ "$installed" != "$CHP_VERSION" || ! -x "$binary" ]]; then
    mkdir -p "$prefix"
    # Progress and audit output go to stderr so stdout stays the one path to capture.
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
        "configurable-http-proxy@$CHP_VERSION" >&2
fi

echo "$binary"
