#!/usr/bin/env bash
# Where a GPU forward's time goes, per kernel, for each convolution kernel, on a lent CUDA
# machine (needs what bench_cuda.sh needs). For each model and batch: `diffuse bench` timed
# (median of RUNS) and then profiled (STEPWISE_PROFILE=1: each dispatch bracketed by GPU
# timestamps), once per STEPWISE_KERNELS kernel; the cifar10 architecture's output is also checked
# against diffusers' (made on the machine by make_cifar10_like.py) with each kernel; then
# PyTorch CUDA on the same model and input where a bench input is present.
# Each bench runs once per precision in PRECISIONS (default f32,f16,f16-arith: STEPWISE_PRECISION;
# f16 weights, and f16 arithmetic in the tiled convolution, where the adapter has shader-f16, said
# and skipped where it has not).
# Usage: scripts/profile_gpu.sh [models (default: cifar10,fashion)] [kernels (default:
# register,tiled)]; RUNS=20 by default. Bench inputs (with PyTorch's output to check) are read
# from target/onnx/<model>/bench_input_b<N>.json where present.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v nvidia-smi >/dev/null; then source scripts/cuda_env.sh; fi
MODELS=${1:-cifar10,fashion}
KERNELS=${2:-register,tiled}
RUNS=${RUNS:-20}
PRECISIONS=${PRECISIONS:-f32,f16,f16-arith}
DIFFUSE=${DIFFUSE:-target/release/diffuse}
dir() { if [ "$1" = cifar10 ]; then echo target/fixtures/cifar10_like; else echo "assets/models/$1"; fi; }
if [[ ,$MODELS, == *,cifar10,* ]] && [ ! -f target/fixtures/cifar10_like/config.json ]; then
    python3 tests/fixtures/unet/make_cifar10_like.py target/fixtures/cifar10_like
fi
for m in ${MODELS//,/ }; do
    for k in ${KERNELS//,/ }; do
        if [ "$m" = cifar10 ]; then
            STEPWISE_KERNELS=$k "$DIFFUSE" forward --model "$(dir $m)" --device gpu \
                --input target/fixtures/cifar10_like/input.safetensors --output /tmp/out-$k.safetensors
            python3 - "$k" <<'PY'
import sys
from safetensors.numpy import load_file
got = load_file(f"/tmp/out-{sys.argv[1]}.safetensors")["sample"]
want = load_file("target/fixtures/cifar10_like/expected.safetensors")["sample"]
err = float(((got - want) ** 2).sum() ** 0.5 / (want ** 2).sum() ** 0.5)
print(f"cifar10 {sys.argv[1]}: relative L2 vs diffusers {err:.1e}")
assert err < 1e-3
PY
        fi
        for b in 1 4; do
            check=target/onnx/$m/bench_input_b$b.json
            args=(bench --model "$(dir $m)" --batch $b --device gpu)
            if [ -f "$check" ] && [ "$m" != cifar10 ]; then args+=(--check "$check"); fi
            for p in ${PRECISIONS//,/ }; do
                echo "== $m batch $b conv $k weights $p"
                run=(env STEPWISE_KERNELS="$k" STEPWISE_PRECISION="$p" "$DIFFUSE" "${args[@]}")
                if ! "${run[@]}" --runs "$RUNS" --json; then
                    echo "($m batch $b: no $p run on this adapter)"; continue
                fi
                STEPWISE_PROFILE=1 "${run[@]}" --runs 3
            done
        done
    done
    # PyTorch CUDA (f32 and bf16 autocast) on the same model, where a bench input is here.
    for b in 1 4; do
        if [ -f "target/onnx/$m/bench_input_b$b.json" ]; then
            (cd training && python3 bench_peers.py "../$(dir $m)" "../target/onnx/$m" --batch $b \
                --runs "$RUNS" --device cuda --skip-onnx) || echo "PyTorch peer failed: $m b$b"
        fi
    done
done
