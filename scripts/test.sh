#!/usr/bin/env bash
# Runs every test, installing what is missing (lavapipe, Chromium, the Python venv, the wasm
# toolchain). GPU tests run on a real WGSL backend: lavapipe (Vulkan on the CPU) natively and
# SwiftShader in headless Chromium. Nothing is skipped: a missing GPU or browser fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
scripts/setup.sh app test python
export PATH="$HOME/.cargo/bin:$ROOT/tools/node_modules/.bin:$PATH"
export WGPU_BACKEND=${WGPU_BACKEND:-vulkan}
# lavapipe's loader wants a runtime dir; CI environments often have none.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/stepwise-runtime}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo clippy --lib --bin stepwise-app --target wasm32-unknown-unknown --quiet -- -D warnings
# The relaxed-SIMD module's code (scripts/wasm_relaxed.mjs builds it in its own target directory).
CARGO_ENCODED_RUSTFLAGS=-Ctarget-feature=+simd128,+relaxed-simd cargo clippy --lib --bin stepwise-app \
  --target wasm32-unknown-unknown --target-dir target/wasm-relaxed --quiet -- -D warnings

step "Rust tests (CPU reference, lavapipe GPU, golden parity, hostile inputs, samplers)"
cargo test --all-targets

step "sample quality: the shipped fashion model at the page's defaults (issue 34)"
# The evaluation classifier must recognise >= 95 % of 200 samples (20 a class) drawn as the page
# draws them, and DDIM (eta 0) at 50 steps must not be worse than at 10 (training/sampler_table.py).
cargo build --release --quiet --bin diffuse
STEPWISE_THREADS=2 "${STEPWISE_VENV:-$HOME/.cache/stepwise/venv}/bin/python" training/sampler_table.py \
  --model fashion --quick --check

step "browser build"
trunk build --release

step "browser tests (headless Chromium, WebGPU on SwiftShader)"
# The soak test's full 200 runs take ~25 minutes on SwiftShader; the suite runs 72 of them
# (RELIABILITY.md's figures: SOAK_RUNS=200 node --test tests/e2e/soak.test.mjs).
SOAK_RUNS=${SOAK_RUNS:-72} node --test tests/e2e/
