#!/usr/bin/env bash
# The in-browser benchmark on a real GPU (nothing here has measured one yet: every browser
# WebGPU figure in BENCHMARKS.md is SwiftShader, i.e. the CPU). Runs bench/browser.mjs, and then
# bench/page.mjs, in the e2e harness's headless Chromium with WebGPU on the machine's GPU through
# Vulkan instead of SwiftShader (STEPWISE_CHROMIUM_GPU_ARGS replaces the harness's WebGPU flags),
# and stops with an error, before timing anything, where WebGPU's adapter is a CPU implementation
# (SwiftShader, llvmpipe, a fallback adapter: browser.mjs --require-gpu).
#
#   scripts/bench_gpu_browser.sh [browser.mjs options]     # e.g. --rounds 3 --runs 5
#   STEPWISE_GPU_PAGE=0 scripts/bench_gpu_browser.sh ...   # without the page benchmark
#   STEPWISE_CHROMIUM_GPU_ARGS='...' scripts/bench_gpu_browser.sh   # other flags (e.g. --use-angle=gl)
#
# Needs dist/ (trunk build --release, or scripts/bench.sh browser once), tools/node_modules and
# the ONNX exports (browser.mjs makes them with the project's venv when missing), a Chromium that
# sees the GPU (CHROMIUM=/path to use another binary) and the GPU's Vulkan driver.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/tools/node_modules/.bin:$PATH"
export STEPWISE_CHROMIUM_GPU_ARGS=${STEPWISE_CHROMIUM_GPU_ARGS:---enable-unsafe-webgpu --enable-features=Vulkan --use-angle=vulkan --ignore-gpu-blocklist}
if [[ "$STEPWISE_CHROMIUM_GPU_ARGS" == *swiftshader* ]]; then
    echo "bench_gpu_browser.sh: STEPWISE_CHROMIUM_GPU_ARGS asks for SwiftShader; this script is for a real GPU" >&2
    exit 2
fi
[[ -f dist/index.html ]] || { echo "bench_gpu_browser.sh: no dist/: run trunk build --release first" >&2; exit 2; }
command -v vulkaninfo >/dev/null && vulkaninfo --summary 2>/dev/null | grep -E 'deviceName|deviceType' || true
stamp=$(date -u +%Y-%m-%d-%H-%M)
# ours on WebGPU against ort-web's WebGPU EP (the CPU rows measure the CPU, which this is not for).
node bench/browser.mjs --require-gpu --rows ours-webgpu,ort-webgpu --out "target/bench/browser-gpu-$stamp.json" "$@"
if [[ "${STEPWISE_GPU_PAGE:-1}" != 0 ]]; then
    node bench/page.mjs --backends auto,gpu --out "target/bench/page-gpu-$stamp.json"
fi
