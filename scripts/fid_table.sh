#!/usr/bin/env bash
# The README's FID-vs-steps table: `diffuse eval` (the model cards' protocol: n samples, n/10 a
# class at the model's guidance, classifier-space FID against the held-out set, beside the floor)
# for each sampler at each step count, on one model.
#
#   scripts/fid_table.sh [MODEL_DIR] [OUT_DIR]     # default assets/models/fashion, target/fid_table
#
# Samplers and steps: SAMPLERS="ddpm ddim dpm++2m euler-a unipc" STEPS="10 20 50 100" N=200.
# About 30 minutes on 2 cores for the default table. Rows already in OUT_DIR are kept (resumable).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-assets/models/fashion}
OUT=${2:-target/fid_table}
SAMPLERS=${SAMPLERS:-ddpm ddim dpm++2m euler-a unipc}
STEPS=${STEPS:-10 20 50 100}
N=${N:-200}
mkdir -p "$OUT"
cargo build --release --quiet --bin diffuse
for s in $SAMPLERS; do
  for k in $STEPS; do
    f="$OUT/$(echo "$s" | tr '+' 'p')_$k.json"
    [ -s "$f" ] && continue
    target/release/diffuse eval --model "$MODEL" --sampler "$s" --steps "$k" --n "$N" --device cpu --output "$f"
  done
done
python3 - "$OUT" "$SAMPLERS" "$STEPS" <<'PY'
import json, sys, pathlib
out, samplers, steps = pathlib.Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split()
rows = {}
for s in samplers:
    for k in steps:
        p = out / f"{s.replace('+', 'p')}_{k}.json"
        if p.exists():
            rows[(s, k)] = json.loads(p.read_text())
any_row = next(iter(rows.values()))
print(f"FID (n = {any_row['n']}, floor {any_row['floor_fid']:.2f}) / % recognised, guidance {any_row['guidance']}")
print("| sampler | " + " | ".join(f"{k} steps" for k in steps) + " |")
print("|---|" + "---|" * len(steps))
for s in samplers:
    cells = []
    for k in steps:
        r = rows.get((s, k))
        acc = f" / {r['accuracy'] * 100:.1f} %" if r and r.get("accuracy") is not None else ""
        cells.append(f"{r['fid']:.1f}{acc}" if r else "–")
    print(f"| {s} | " + " | ".join(cells) + " |")
PY
