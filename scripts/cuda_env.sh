# Sourced by the scripts that run on a lent CUDA machine without Rust (bench_cuda.sh,
# profile_gpu.sh): unpacks the carried Vulkan loader, points it at NVIDIA's driver and installs
# the carried Python wheels. Needs .gl/libvulkan1_*.deb and .gpu/whl/*.whl beside the checkout
# (see bench_cuda.sh).
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    if [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; break; fi
done
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site WGPU_BACKEND=vulkan PYTHONUNBUFFERED=1 XDG_RUNTIME_DIR=/tmp/stepwise-runtime
mkdir -p "$XDG_RUNTIME_DIR"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv
