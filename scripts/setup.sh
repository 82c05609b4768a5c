#!/usr/bin/env bash
# Installs what building, serving and testing need on a fresh Debian machine; idempotent and
# quick when everything is already there. Usage: scripts/setup.sh [app] [test] [python] [bench]
#   app    : wasm target, trunk, wasm-bindgen-cli (the version in Cargo.lock), wasm-opt (binaryen 132)
#   test   : lavapipe (Vulkan on the CPU), Chromium + chromedriver, playwright-core,
#            onnxruntime-web (the peer in bench/browser.mjs)
#   python : the Python venv for fixtures and training (torch, diffusers, ...) and Fashion-MNIST
#   bench  : onnx and onnxruntime in that venv (the benchmarks' peers)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:$ROOT/tools/node_modules/.bin:$PATH"
VENV=${STEPWISE_VENV:-$HOME/.cache/stepwise/venv}
TRUNK_VERSION=0.21.14
BINARYEN_VERSION=132.0.0
ORT_WEB_VERSION=1.30.0

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

apt_install() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

wasm_bindgen_version() {
    awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock
}

setup_app() {
    rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
    if ! trunk --version 2>/dev/null | grep -q "$TRUNK_VERSION"; then
        log "cargo install trunk $TRUNK_VERSION (several minutes, once)"
        cargo install trunk --version "$TRUNK_VERSION" --locked
    fi
    local wb; wb=$(wasm_bindgen_version)
    if ! wasm-bindgen --version 2>/dev/null | grep -q "$wb"; then
        log "cargo install wasm-bindgen-cli $wb (a few minutes, once)"
        cargo install wasm-bindgen-cli --version "$wb"
    fi
    setup_node
    # Trunk looks for its tools in its cache dir; point it at the ones installed here.
    local cache="$HOME/.cache/trunk"
    mkdir -p "$cache/wasm-opt-version_132/bin" "$cache/wasm-bindgen-$wb"
    ln -sf "$ROOT/tools/node_modules/binaryen/bin/wasm-opt" "$cache/wasm-opt-version_132/bin/wasm-opt"
    ln -sf "$(command -v wasm-bindgen)" "$cache/wasm-bindgen-$wb/wasm-bindgen"
    cargo fetch --quiet
}

setup_node() {
    # onnxruntime-web is bench/'s in-browser peer (bench/browser.mjs); pinned in tools/package.json.
    if [ ! -x tools/node_modules/.bin/wasm-opt ] || [ ! -d tools/node_modules/playwright-core ] \
        || [ ! -d tools/node_modules/axe-core ] \
        || ! grep -q "\"version\": \"$ORT_WEB_VERSION\"" tools/node_modules/onnxruntime-web/package.json 2>/dev/null; then
        log "npm install (binaryen $BINARYEN_VERSION, playwright-core, axe-core, onnxruntime-web $ORT_WEB_VERSION)"
        (cd tools && npm install --no-audit --no-fund --silent)
    fi
}

setup_test() {
    apt_install mesa-vulkan-drivers chromium chromium-driver
    setup_node
}

setup_python() {
    # Training and its end-to-end test (tests/quick_train.rs) read Fashion-MNIST from Debian's
    # package unless STEPWISE_FASHION_DIR points elsewhere.
    [ -n "${STEPWISE_FASHION_DIR:-}" ] || apt_install dataset-fashion-mnist
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch, diffusers, safetensors" 2>/dev/null; then
        log "python venv at $VENV (torch, diffusers; ~1 minute)"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q -r training/requirements.txt
    fi
}

# The benchmarks' peers (BENCHMARKS.md): onnx to export, onnxruntime to run the exports.
setup_bench() {
    setup_python
    if ! "$VENV/bin/python" -c "import onnx, onnxruntime" 2>/dev/null; then
        log "pip install onnx onnxruntime (benchmark peers)"
        "$VENV/bin/pip" install -q onnx==1.23.2 onnxruntime==1.32.0
    fi
}

for what in "${@:-app test python}"; do
    for w in $what; do
        case "$w" in
            app) setup_app ;;
            test) setup_test ;;
            python) setup_python ;;
            bench) setup_bench ;;
            *) echo "unknown setup target $w" >&2; exit 2 ;;
        esac
    done
done
