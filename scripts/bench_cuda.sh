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
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    if [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; break; fi
done
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site WGPU_BACKEND=vulkan PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv
python3 scripts/bench_native.py --device gpu --torch-device cuda --no-onnx "$@"
