#!/usr/bin/env bash
# Issue 36's device run: every lane side by side on one lent GPU (H200: 16 cores, 128 GB), each
# trained from scratch with the scaled recipe (configs.py `<model>-<size>`: cosine LR, EMA, bf16),
# exported from its EMA weights into a diffusers folder, evaluated, and tarred into $OUT.
#
# The working tree (~34 MB tracked) plus the carried data and wheels must stay under 64 MiB per
# call, and Fashion-MNIST (22.7 MB xz) + the 64x64 emoji (13.4 MB) + diffusers (6.4 MB) do not fit
# in one, so the run is two calls, the second made at once while the machine is still warm:
#
#   here, once:  python training/gpu_data.py pack .gpu/data   (and the wheels in .gpu/whl: README.md)
#   call 1, carry [".gpu/whl", ".gpu/data/emoji"]:   training/device_run.sh start     (~40 s)
#       installs diffusers, unpacks the emoji, starts the emoji, latent and SR lanes (detached:
#       they outlive the call) and fixes the common training deadline (STEPWISE_TRAIN_MIN from now)
#   call 2, carry [".gpu/data/fashion"]:             training/device_run.sh finish    (~8.5 min)
#       unpacks Fashion-MNIST, starts the fashion lane, waits for every lane (train to the deadline,
#       export, evaluate), and leaves one <lane>.tar.gz per lane and logs.tar.gz in $OUT
#   (when everything fits in one call, `finish` alone does both.)
#
# STEPWISE_SMOKE=1 runs the same path on the CPU with the venv's Python: 5 steps per lane at batch 4,
# fp32, a 64-image latent cache, 2-step grids, 40-sample evaluations, into /tmp/stepwise-smoke.
#
# Environment: STEPWISE_LANES (default below), STEPWISE_TRAIN_MIN (training minutes from the start
# call, default 6), STEPWISE_VAE_FRAC (share of the latent lane's time for its VAE, 0.4),
# STEPWISE_CALL_S (seconds `finish` may take before it collects what exists, 560).
set -uo pipefail
cd "$(dirname "$0")"
HERE=$(pwd)
GPU_DIR=${STEPWISE_GPU_DIR:-../.gpu}  # the carried wheels and data
SMOKE=${STEPWISE_SMOKE:-0}
LANES=${STEPWISE_LANES:-"emoji-s emoji-m emoji-l emoji-latent-m emoji-sr-m fashion-m"}
if [ "$SMOKE" = 1 ]; then
  WORK=${STEPWISE_WORK:-/tmp/stepwise-smoke}
  PY=${PY:-${STEPWISE_VENV:-/root/.cache/stepwise/venv}/bin/python}
  OUT=${OUT:-$WORK/out}
  MP=no THREADS=1
else
  WORK=${STEPWISE_WORK:-/tmp/stepwise-dev}
  PY=${PY:-python3}
  MP=bf16 THREADS=2
fi
RUNS=$WORK/runs RES=$WORK/results LOGS=$WORK/logs
mkdir -p "$RUNS" "$RES" "$LOGS" "$WORK/lanes"
export PYTHONUNBUFFERED=1 STEPWISE_FASHION_DIR=$WORK/data/fashion STEPWISE_CACHE_DIR=$WORK/data/cache
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
now() { date +%s; }
log() { echo "[$(date -u +%H:%M:%S)] $*"; }

minutes_left() {  # training minutes until the common deadline (smoke: plenty; steps stop it)
  if [ "$SMOKE" = 1 ]; then echo 60; return; fi
  "$PY" -c "print(max(0.5, ($(cat "$WORK/deadline") - $(now)) / 60))"
}

train_flags() {  # name
  if [ "$SMOKE" = 1 ]; then
    echo "--max-steps 5 --batch-size 4 --log-every 1 --save-every 5 --sample-every 100000 --threads 1"
  else
    echo "--log-every 200 --save-every 2000 --sample-every 2000 --threads $THREADS"
  fi
}

# One lane: train -> export (EMA, f16) -> evaluate -> $RES/<name>.tar.gz. Runs detached.
lane() {
  local name=$1 run=$RUNS/$1 exp=$RUNS/export/$1 vae=$RUNS/vae-f4-long extra=()
  mkdir -p "$run" "$RUNS/export"
  local eval_flags="" grid_flags=""
  [ "$SMOKE" = 1 ] && eval_flags="--n 40 --steps 2" && grid_flags="--grid-steps 2"
  case $name in
  emoji-latent-*)
    local vmin; vmin=$("$PY" -c "print($(minutes_left) * ${STEPWISE_VAE_FRAC:-0.4})")
    local vflags="--max-minutes $vmin --mixed-precision $MP --threads $THREADS --save-every 1000 --eval-every 1000 --log-every 100"
    [ "$SMOKE" = 1 ] && vflags="--max-steps 5 --batch-size 4 --threads 1 --eval-every 5 --log-every 1"
    log "$name: VAE vae-f4-long for $vmin min"
    "$PY" train_vae.py --config vae-f4-long --out "$vae" $vflags || return 1
    log "$name: finalize (centring, latent cache)"
    "$PY" train_vae.py --config vae-f4-long --out "$vae" --finalize --threads $THREADS \
      $([ "$SMOKE" = 1 ] && echo "--subset 64") || return 1
    extra=(--vae-run "$vae")
    ;;
  esac
  local m; m=$(minutes_left)
  log "$name: train for $m min"
  "$PY" train.py --config "$name" --out "$run" --max-minutes "$m" --mixed-precision $MP \
    $(train_flags "$name") "${extra[@]}" || return 1
  log "$name: export"
  "$PY" export.py --config "$name" --ckpt "$run/checkpoint.pt" --out "$exp" $grid_flags "${extra[@]}" || return 1
  log "$name: evaluate"
  "$PY" evaluate.py --model "$exp" $eval_flags --threads $THREADS > "$run/evaluate.log" 2>&1 \
    || { tail -20 "$run/evaluate.log"; return 1; }
  "$PY" -c "import json; print(json.dumps(json.load(open('$exp/metrics.json'))['table'], indent=1))"
}

run_lane() {  # name: the detached process of one lane
  local name=$1 st=0
  lane "$name" || st=$?
  local files=("export/$name" "$name/state.json" "$name/loss.csv" "$name/samples" "$name/evaluate.log")
  [[ $name == emoji-latent-* ]] && files+=(vae-f4-long/vae.json vae-f4-long/latent_stats.json vae-f4-long/loss.csv vae-f4-long/samples)
  local have=()
  for f in "${files[@]}"; do [ -e "$RUNS/$f" ] && have+=("$f"); done
  tar -czf "$RES/$name.tar.gz.tmp" -C "$RUNS" "${have[@]}" && mv "$RES/$name.tar.gz.tmp" "$RES/$name.tar.gz"
  [ $st = 0 ] && touch "$WORK/lanes/$name.done" || touch "$WORK/lanes/$name.failed"
  log "$name: lane ended with status $st"
}

setup() {  # wheels, data, deadline
  if ! "$PY" -c "import diffusers" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$GPU_DIR"/whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  [ -d "$GPU_DIR/data" ] && "$PY" gpu_data.py unpack "$GPU_DIR/data" "$WORK/data" | tail -c 300
  [ -f "$WORK/deadline" ] || echo $(( $(now) + ${STEPWISE_TRAIN_MIN:-6} * 60 )) > "$WORK/deadline"
  if [ "$SMOKE" != 1 ] && [ ! -f "$LOGS/gpu.csv" ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOGS/gpu_info.csv"
    setsid nohup nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw --format=csv -l 15 \
      > "$LOGS/gpu.csv" 2>&1 < /dev/null &
  fi
}

start_ready_lanes() {  # every lane whose data is here and that has not started
  for name in $LANES; do
    [ -e "$WORK/lanes/$name.started" ] && continue
    case $name in
    fashion-*) [ -f "$WORK/data/fashion/train-images-idx3-ubyte.gz" ] || continue ;;
    *) [ -f "$WORK/data/cache/emoji_train_32.npz" ] || continue ;;
    esac
    touch "$WORK/lanes/$name.started"
    log "starting lane $name"
    setsid nohup bash "$HERE/device_run.sh" lane "$name" > "$LOGS/$name.log" 2>&1 < /dev/null &
  done
}

collect() {  # $OUT: one tar per lane (as far as it got) + logs.tar.gz
  mkdir -p "$OUT"
  for name in $LANES; do
    [ -f "$RES/$name.tar.gz" ] && cp "$RES/$name.tar.gz" "$OUT/"
  done
  for name in $LANES; do  # a lane still running: its logs and loss so far
    [ -f "$RES/$name.tar.gz" ] || echo "lane $name did not finish" >> "$LOGS/summary.txt"
  done
  cp -r "$RUNS"/*/state.json "$LOGS/" 2>/dev/null
  for name in $LANES; do
    [ -f "$RUNS/export/$name/metrics.json" ] && cp "$RUNS/export/$name/metrics.json" "$LOGS/$name.metrics.json"
    [ -f "$RUNS/$name/loss.csv" ] && cp "$RUNS/$name/loss.csv" "$LOGS/$name.loss.csv"
  done
  tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs lanes
  ls -la "$OUT"
  find "$OUT" -type f -size +16M -exec echo "WARNING: over 16 MiB, will not come back:" {} \;
}

case "${1:-}" in
lane) run_lane "$2" ;;
start)
  setup; start_ready_lanes
  sleep 20; tail -n 3 "$LOGS"/*.log
  ;;
finish|all)
  t0=$(now)
  setup; start_ready_lanes
  limit=$(( t0 + ${STEPWISE_CALL_S:-560} ))
  while [ "$(now)" -lt "$limit" ]; do
    pending=0
    for name in $LANES; do
      [ -e "$WORK/lanes/$name.done" ] || [ -e "$WORK/lanes/$name.failed" ] || pending=1
    done
    [ $pending = 0 ] && break
    sleep 5
  done
  for f in "$LOGS"/*.log; do echo "== $f"; tail -n 25 "$f"; done
  ls "$WORK/lanes"
  collect
  ;;
*) echo "usage: device_run.sh start|finish|all (STEPWISE_SMOKE=1: on the CPU)" >&2; exit 2 ;;
esac
