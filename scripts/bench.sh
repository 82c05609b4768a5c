#!/usr/bin/env bash
# The benchmarks of BENCHMARKS.md, set-up included. Usage:
#   scripts/bench.sh native [bench_native.py options]   # diffuse bench vs onnxruntime + PyTorch
#   scripts/bench.sh browser [browser.mjs options]      # headless Chromium: ours vs onnxruntime-web
#   scripts/bench.sh page [page.mjs options]            # the page: first step, ms/step, memory, bytes
# (scripts/bench_gpu_browser.sh runs both in Chromium on a real GPU.)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PWD/tools/node_modules/.bin:$PATH"
VENV=${STEPWISE_VENV:-$HOME/.cache/stepwise/venv}
what=${1:-native}
shift || true
case "$what" in
    native)
        scripts/setup.sh python bench test
        cargo build --release --bin diffuse
        export WGPU_BACKEND=${WGPU_BACKEND:-vulkan}
        exec "$VENV/bin/python" scripts/bench_native.py "$@"
        ;;
    browser)
        scripts/setup.sh app test python bench
        trunk build --release
        exec node bench/browser.mjs "$@"
        ;;
    page)
        scripts/setup.sh app test
        trunk build --release
        exec node bench/page.mjs "$@"
        ;;
    *) echo "usage: scripts/bench.sh native|browser|page [options]" >&2; exit 2 ;;
esac
