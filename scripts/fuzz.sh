#!/usr/bin/env bash
# Fuzzes everything the loader reads from untrusted files (issue #9) with cargo fuzz (libFuzzer):
#   scripts/fuzz.sh [SECONDS_FOR_model_folder] [SECONDS_FOR_EACH_OTHER_TARGET]
# Installs the nightly toolchain and cargo-fuzz when missing, unpacks the committed corpus
# (fuzz/corpus.tar.xz), seeds it from the real and broken model folders in tests/fixtures and
# assets, runs the targets, minimises each grown corpus (cargo fuzz cmin), packs it back, and
# prints the executions of each run with the commit it ran on (also appended to fuzz/RESULTS.md).
# The corpus is kept packed because its ~30 MB of mostly-zero weights compress to ~0.5 MB. Targets are built optimised with
# overflow checks and debug assertions on. A crash, hang (> 10 s per input) or out-of-memory
# (> 2 GiB) stops the run and leaves the input under fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MAIN=${1:-600}
OTHER=${2:-60}
export PATH="$HOME/.cargo/bin:$PATH"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

[ -f fuzz/corpus.tar.xz ] && tar -C fuzz -xJf fuzz/corpus.tar.xz
seed() {  # seed <target> <name> <bytes-file>
  mkdir -p "fuzz/corpus/$1" && cp "$3" "fuzz/corpus/$1/seed-$2"
}
tmp=$(mktemp -d)
for d in tests/fixtures/hostile/*/; do
  name=$(basename "$d")
  python3 - "$d" "$tmp/$name" <<'PY'
import struct, sys, pathlib
d = pathlib.Path(sys.argv[1])
cfg = (d / "config.json").read_bytes()[:65535]
w = (d / "diffusion_pytorch_model.safetensors").read_bytes()
pathlib.Path(sys.argv[2]).write_bytes(struct.pack("<H", len(cfg)) + cfg + w)
PY
  seed model_folder "$name" "$tmp/$name"
  seed safetensors_weights "$name" "$d/diffusion_pytorch_model.safetensors"
done
i=0
for f in assets/models/*/scheduler/scheduler_config.json tests/fixtures/*/*/scheduler/scheduler_config.json; do
  [ -f "$f" ] || continue
  i=$((i + 1))
  { printf '\x32\x00'; cat "$f"; } > "$tmp/sched$i"
  seed scheduler_config "$i" "$tmp/sched$i"
done
for f in assets/models/*/stepwise.json tests/fixtures/*/*/stepwise.json; do
  [ -f "$f" ] || continue
  seed stepwise_json "$(basename "$(dirname "$f")")" "$f"
done
for d in assets/toy2d/*/; do
  name=$(basename "$d")
  python3 - "$d" "$tmp/toy-$name" <<'PY'
import struct, sys, pathlib
d = pathlib.Path(sys.argv[1])
cfg = (d / "config.json").read_bytes()[:65535]
pathlib.Path(sys.argv[2]).write_bytes(struct.pack("<H", len(cfg)) + cfg + (d / "model.safetensors").read_bytes())
PY
  seed toy2d_folder "$name" "$tmp/toy-$name"
done
rm -rf "$tmp"
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src fuzz/fuzz_targets || echo -dirty)

run() {  # run <target> <seconds>
  local log="fuzz/$1.log"
  (cd fuzz && cargo +nightly fuzz run "$1" --release --debug-assertions -- \
      -max_total_time="$2" -timeout=10 -rss_limit_mb=2048 -max_len=131072 -print_final_stats=1) \
      > "$log" 2>&1 || { tail -40 "$log"; echo "fuzz target $1 FAILED (see $log, fuzz/artifacts/$1)"; exit 1; }
  local execs files
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  # Keep only the inputs that add coverage, so the committed corpus stays small.
  (cd fuzz && cargo +nightly fuzz cmin "$1" --release --debug-assertions -- -max_len=131072 -rss_limit_mb=2048) \
      >> "$log" 2>&1 || { tail -20 "$log"; echo "cmin of $1 FAILED"; exit 1; }
  files=$(find "fuzz/corpus/$1" -type f | wc -l)
  printf '%s  %-20s %6ss  %12s executions, no crash, hang or OOM  (commit %s, corpus %s inputs)\n' \
      "$(date -u +%F)" "$1" "$2" "$execs" "$commit" "$files" | tee -a fuzz/RESULTS.md
}
run model_folder "$MAIN"
for t in safetensors_weights scheduler_config stepwise_json toy2d_folder; do
  run "$t" "$OTHER"
done
tar -C fuzz --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - corpus \
  | xz -9 -T1 > fuzz/corpus.tar.xz
echo "corpus packed into fuzz/corpus.tar.xz ($(wc -c < fuzz/corpus.tar.xz) bytes)"
