#!/usr/bin/env bash
# Train, export and evaluate the latent model (issue 6) and the super-resolution model (issue 7)
# in the background; re-run to resume.
#
#   setsid nohup training/run_latent.sh >> training/runs/run_latent.log 2>&1 < /dev/null &
#   ... training/run_latent.sh latent     # or `sr`: one lane only
#
# Two lanes, one CPU thread each, at `nice ${STEPWISE_NICE:-10}` (they share the two cores with
# run_all.sh's lanes and whoever compiles Rust):
# - latent: train_vae.py vae-f4 to its max_steps -> --finalize (held-out PSNR, scaling_factor,
#   latent cache runs/vae-f4/latents.pt; redone only when the VAE checkpoint is newer) ->
#   train.py emoji-latent -> export.py -> evaluate.py;
# - sr: train.py emoji-sr -> export.py -> evaluate.py.
# Every stage resumes from training/runs/<name>/checkpoint.pt. Logs: training/runs/<name>/train.log.
# Stop with `kill -TERM <pid>` of the python processes: they checkpoint first.
set -euo pipefail
cd "$(dirname "$0")"
PY="${STEPWISE_VENV:-/root/.cache/stepwise/venv}/bin/python"
NICE="${STEPWISE_NICE:-10}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p runs/vae-f4 runs/emoji-latent runs/emoji-sr

latent() {
  local log=runs/emoji-latent/train.log
  nice -n "$NICE" "$PY" train_vae.py --config vae-f4 --threads 1 >> runs/vae-f4/train.log 2>&1
  if [ ! -f runs/vae-f4/latents.pt ] || [ runs/vae-f4/checkpoint.pt -nt runs/vae-f4/latents.pt ]; then
    nice -n "$NICE" "$PY" train_vae.py --config vae-f4 --finalize >> runs/vae-f4/train.log 2>&1
  fi
  nice -n "$NICE" "$PY" train.py --config emoji-latent --threads 1 --save-every 200 >> "$log" 2>&1
  nice -n "$NICE" "$PY" export.py --config emoji-latent >> "$log" 2>&1
  nice -n "$NICE" "$PY" evaluate.py --model emoji-latent >> "$log" 2>&1
}

sr() {
  local log=runs/emoji-sr/train.log
  nice -n "$NICE" "$PY" train.py --config emoji-sr --threads 1 --save-every 200 >> "$log" 2>&1
  nice -n "$NICE" "$PY" export.py --config emoji-sr >> "$log" 2>&1
  nice -n "$NICE" "$PY" evaluate.py --model emoji-sr >> "$log" 2>&1
}

for lane in "${@:-latent sr}"; do
  for l in $lane; do "$l" & done
done
wait
