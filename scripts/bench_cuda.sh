#!/usr/bin/env bash
# The native GPU benchmark on a machine with an NVIDIA card, PyTorch and onnx but no Rust
# toolchain (the lent H100/H200): our `diffuse bench` on Vulkan against PyTorch CUDA (f32 and
# bf16 autocast) on the same models and inputs. Needs, beside the checkout:
#   target/release/diffuse   built here (`cargo build --release --bin diffuse`)
#   .gl/libvulkan1_*.deb     the Vulkan loader (apt-get download libvulkan1)
#   .gpu/whl/diffusers-*.whl diffusers and importlib_metadata wheels (pip download)
# Usage: scripts/bench_cuda.sh [bench_native.py options, e.g. --out DIR --runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda_env.sh
python3 scripts/bench_native.py --device gpu --torch-device cuda --no-onnx "$@"
