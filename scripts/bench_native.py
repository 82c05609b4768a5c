#!/usr/bin/env python3
"""Native benchmark of issue 8: `diffuse bench` (our GPU and CPU backends) against onnxruntime
(CPU) and PyTorch on the same models, the same input and the same machine, in one run.

    scripts/bench.sh native [--runs N] [--models fashion,emoji,...] [--batch 1 4]
                            [--device both|gpu|cpu] [--torch-device cpu|cuda] [--threads T]

(`scripts/bench.sh` runs this with the project's venv.) For every model and batch it exports the
UNet to ONNX once (training/export_onnx.py, cached in target/onnx/), then runs, each checking its
output against PyTorch float32 before timing:

  diffuse bench --device gpu|cpu --check ... --json     our backends
  training/bench_peers.py                               PyTorch and onnxruntime (CPU)

and prints a table of median ms per forward with the ratios ours/peer (below 1 means we are
faster), and writes every figure to target/bench/native-<date>.json. Models: the shipped ones
(assets/models/*) and `cifar10`, google/ddpm-cifar10-32's architecture with random weights
(target/fixtures/cifar10_like, made by tests/fixtures/unet/make_cifar10_like.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
MODELS = {
    "fashion": ROOT / "assets/models/fashion",
    "emoji": ROOT / "assets/models/emoji",
    "emoji-latent": ROOT / "assets/models/emoji-latent",
    "emoji-sr": ROOT / "assets/models/emoji-sr",
    "cifar10": ROOT / "target/fixtures/cifar10_like",
}


def run(cmd: list[str], **kw) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{p.stdout}\n{p.stderr}")
    return p.stdout


def results(out: str) -> list[dict]:
    return [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--models", default="fashion,emoji,emoji-latent,emoji-sr,cifar10")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--device", choices=["both", "gpu", "cpu"], default="both")
    ap.add_argument("--torch-device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for every backend: ours, onnxruntime's intra-op, PyTorch's")
    ap.add_argument("--no-onnx", action="store_true", help="skip onnxruntime (PyTorch only)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch (onnxruntime only)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure each model and batch this many times, ours and the peers in "
                         "turn, and report the median of the rounds' medians (a noisy machine)")
    ap.add_argument("--diffuse", default=str(ROOT / "target/release/diffuse"))
    ap.add_argument("--out", type=Path, default=ROOT / "target/bench")
    a = ap.parse_args()

    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", "/tmp/stepwise-runtime")
    Path(env["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True)
    rows = []
    for name in a.models.split(","):
        model = MODELS[name]
        if name == "cifar10" and not (model / "config.json").exists():
            run([PY, str(ROOT / "tests/fixtures/unet/make_cifar10_like.py"), str(model)])
        onnx = ROOT / "target/onnx" / name
        missing = [b for b in a.batch if not (onnx / f"unet_b{b}.onnx").exists()]
        if missing:
            run([PY, "export_onnx.py", str(model), str(onnx), "--batch", *map(str, missing)],
                cwd=ROOT / "training")
        for b in a.batch:
            check = onnx / f"bench_input_b{b}.json"
            rounds: dict[str, list[dict]] = {}
            devices = ["gpu", "cpu"] if a.device == "both" else [a.device]
            for _ in range(a.rounds):
                got = []
                for d in devices:
                    got += results(run([a.diffuse, "bench", "--model", str(model), "--batch",
                                        str(b), "--runs", str(a.runs), "--device", d, "--check",
                                        str(check), "--threads", str(a.threads), "--json"],
                                       env=env))
                got += results(run([PY, "bench_peers.py", str(model), str(onnx), "--batch",
                                    str(b), "--runs", str(a.runs), "--threads", str(a.threads),
                                    "--device", a.torch_device]
                                   + (["--skip-onnx"] if a.no_onnx else [])
                                   + (["--skip-torch"] if a.no_torch else []),
                                   cwd=ROOT / "training", env=env))
                for r in got:
                    rounds.setdefault(r["backend"], []).append(r)
            got = []
            for backend, rs in rounds.items():
                r = dict(rs[0])
                r["round_medians_ms"] = [x["median_ms"] for x in rs]
                r["median_ms"] = statistics.median(r["round_medians_ms"])
                r["min_ms"] = min(x["min_ms"] for x in rs)
                r["max_ms"] = max(x["max_ms"] for x in rs)
                got.append(r)
            flops = json.loads(check.read_text()).get("flops")
            for r in got:
                r["model"] = name
                if flops:
                    r["gflops"] = flops / r["median_ms"] / 1e6
            rows += got
            by = {r["backend"]: r for r in got}
            line = f"{name:<13} b{b}  " + "  ".join(
                f"{k} {v['median_ms']:.2f}" for k, v in by.items())
            print(line, flush=True)

    # The table: one line per model and batch, ratios ours / peer.
    peers = [("cpu", "onnxruntime"), ("cpu", "torch-cpu"), ("gpu", "torch-cuda"),
             ("gpu", "torch-cuda-bf16"), ("gpu", "onnxruntime")]
    keys = []
    for r in rows:
        if r["backend"] not in keys:
            keys.append(r["backend"])
    print()
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs; date {dt.date.today()}; "
          f"median of {a.runs} runs" + (f", median of {a.rounds} alternating rounds" if a.rounds > 1 else "") + f"; every CPU backend at {a.threads} thread(s)")
    for r in rows:
        if r["backend"] in ("gpu",):
            print(f"GPU adapter: {r['adapter']}")
            break
    head = ["model", "batch"] + [f"{k} ms (GFLOP/s)" for k in keys] + [
        f"{o}/{p}" for o, p in peers if o in keys and p in keys]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    groups: dict[tuple, dict] = {}
    for r in rows:
        groups.setdefault((r["model"], r["batch"]), {})[r["backend"]] = r
    for (m, b), g in groups.items():
        cells = [m, str(b)]
        cells += [f"{g[k]['median_ms']:.2f}" + (f" ({g[k]['gflops']:.1f})" if "gflops" in g[k] else "")
                  if k in g else "—" for k in keys]
        cells += [f"{g[o]['median_ms'] / g[p]['median_ms']:.2f}×" for o, p in peers
                  if o in keys and p in keys]
        print("| " + " | ".join(cells) + " |")
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"native-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps({"machine": cpu_name(), "cpus": os.cpu_count(),
                                "date": str(dt.date.today()), "runs": a.runs, "rounds": a.rounds,
                                "threads": a.threads, "rows": rows}, indent=1))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
