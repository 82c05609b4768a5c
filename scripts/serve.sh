#!/usr/bin/env bash
# Builds the web app and serves it at http://127.0.0.1:8080, installing whatever is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh app
export PATH="$HOME/.cargo/bin:$PWD/tools/node_modules/.bin:$PATH"
exec trunk serve --release "$@"
