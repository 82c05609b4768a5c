#!/usr/bin/env bash
# Train the shipped pixel models on a lent GPU (README.md, "Training on a lent GPU").
#
# The machine reaches nothing outside itself and takes 64 MiB of files per call, so the data
# travels in two calls (`gpu_data.py pack .gpu/data` here first; wheels for diffusers in .gpu/whl):
#   call 1 (carry .gpu/whl .gpu/data/fashion):  training/gpu_run.sh fashion
#   call 2 (carry .gpu/data/emoji and training/data/node_modules/emoji-datasource-google/emoji.json,
#   whose category list data.py reads), at once:  training/gpu_run.sh rest
# `fashion` unpacks and starts the fashion lane in its own session (it outlives the call);
# `rest` starts emoji and emoji-sr, waits for all three, exports each from its EMA weights
# and leaves in $OUT one tarball per model: the exported folder, the run's logs and sample
# grids, and a slim checkpoint (model + EMA) to resume from. Each lane starts from the
# CPU-trained export in assets/models/<name>/ (`--init-from`).
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
export STEPWISE_FASHION_DIR=/tmp/data/fashion STEPWISE_CACHE_DIR=/tmp/data/cache
MINUTES=${STEPWISE_GPU_MINUTES:-5.5}
RUNS=/tmp/runs
mkdir -p "$RUNS"

lane() {  # name batch minutes
  mkdir -p "$RUNS/$1"
  setsid nohup python3 train.py --config "$1" --out "$RUNS/$1" --init-from "../assets/models/$1" \
    --batch-size "$2" --max-steps 200000 --max-minutes "$3" --mixed-precision bf16 --threads 4 \
    --save-every 1000 --sample-every 2000 --log-every 200 > "$RUNS/$1/train.log" 2>&1 < /dev/null &
}

case "${1:-}" in
fashion)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site ../.gpu/whl/*.whl
  python3 gpu_data.py unpack ../.gpu/data /tmp/data
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  lane fashion 256 "$(python3 -c "print($MINUTES + 1)")"
  for _ in $(seq 60); do grep -q "^step" "$RUNS/fashion/train.log" && break; sleep 2; done
  cat "$RUNS/fashion/train.log"
  ;;
rest)
  python3 gpu_data.py unpack ../.gpu/data /tmp/data
  lane emoji 256 "$MINUTES"
  lane emoji-sr 128 "$MINUTES"
  sleep 60; tail -n 3 "$RUNS"/*/train.log; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
  while pgrep -f "train.py --config" > /dev/null; do sleep 5; done
  for m in ${STEPWISE_GPU_EXPORT:-fashion emoji emoji-sr}; do
    tail -n 4 "$RUNS/$m/train.log"
    python3 export.py --config "$m" --ckpt "$RUNS/$m/checkpoint.pt" --out "$RUNS/export/$m" || echo "export $m failed"
    python3 - "$RUNS/$m" <<'PY'
import sys, torch
from pathlib import Path
run = Path(sys.argv[1])
ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
for k in ("opt", "lr_sched", "gen"):
    ck.pop(k, None)
torch.save(ck, run / "slim.pt")
PY
    tar -czf "${OUT:-/tmp}/$m.tar.gz" -C "$RUNS" "export/$m" "$m/state.json" "$m/loss.csv" "$m/train.log" "$m/samples" "$m/slim.pt"
  done
  ls -la "${OUT:-/tmp}"
  ;;
*) echo "usage: gpu_run.sh fashion|rest" >&2; exit 2 ;;
esac
