#!/usr/bin/env bash
# Train and export both shipped models in the background; re-run to resume.
#
#   setsid nohup training/run_all.sh > training/runs/run_all.log 2>&1 &
#
# Two lanes run side by side, one CPU thread each (the fastest setting while another job
# uses the other core, see README.md), at `nice ${STEPWISE_NICE:-0}` (set 10 to yield to
# other work on the machine). Each lane resumes
# from training/runs/<name>/checkpoint.pt, trains to the config's max_steps, then exports
# assets/models/<name>/ and evaluates it. Logs: training/runs/<name>/train.log.
set -euo pipefail
cd "$(dirname "$0")"
PY="${STEPWISE_VENV:-/root/.cache/stepwise/venv}/bin/python"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p runs/fashion runs/emoji

lane() {
  local name=$1 nice=$2
  nice -n "$nice" "$PY" train.py --config "$name" --threads 1 --save-every 200 >> "runs/$name/train.log" 2>&1
  nice -n "$nice" "$PY" export.py --config "$name" >> "runs/$name/train.log" 2>&1
  nice -n "$nice" "$PY" evaluate.py --model "$name" >> "runs/$name/train.log" 2>&1
}

lane fashion "${STEPWISE_NICE:-0}" &
lane emoji "${STEPWISE_NICE:-0}" &
wait
