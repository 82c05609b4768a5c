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

alternating: --rounds (default 3) rounds per model and batch, each row (ours per device, PyTorch,
onnxruntime; one process each) in turn, in an order rotated by one per round, each with exactly
one untimed forward (the checked one) before its --runs timed ones. It prints a table of median
ms per forward (the median of the rounds' medians; min-max over all runs in the JSON) with the
ratios ours/peer (below 1 means we are faster), and writes every figure, the order the rows ran
in, the load average at each round's start and what each row's timing `includes` to
target/bench/native-<date>.json. Models: the shipped ones
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
    ap.add_argument("--rounds", type=int, default=3,
                    help="measure each model and batch this many times, every row (ours per "
                         "device, PyTorch, onnxruntime) in turn in an order rotated by one per "
                         "round, and report the median of the rounds' medians")
    ap.add_argument("--diffuse", default=str(ROOT / "target/release/diffuse"))
    ap.add_argument("--out", type=Path, default=ROOT / "target/bench")
    a = ap.parse_args()

    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", "/tmp/stepwise-runtime")
    Path(env["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True)
    # The rows, each one process per round: ours per device, then PyTorch (with its bf16 row on
    # CUDA) and onnxruntime. Every process runs one untimed forward whose output it checks, then
    # --runs timed ones: `diffuse bench` has no other warm-up, so the peers get none either
    # (bench_peers.py --warmup 0).
    kinds = [f"ours-{d}" for d in (["gpu", "cpu"] if a.device == "both" else [a.device])]
    if not a.no_torch:
        kinds.append("torch")
    if not a.no_onnx:
        kinds.append("onnxruntime")
    includes_ours = {
        "gpu": "forward + readback to host: the UNet forward (commands recorded, submitted, run) "
               "and the output downloaded into a host Vec (map + copy); the input uploaded once "
               "before the runs; timed by `diffuse bench` (Instant::now)",
        "cpu": "forward (output already on the host): the UNet forward on the CPU backend, the "
               "output a host Vec; the input made once before the runs; timed by `diffuse bench`",
    }
    rows = []
    order = []
    round_load = []
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

            def row(kind: str) -> list[dict]:
                if kind.startswith("ours-"):
                    d = kind[5:]
                    got = results(run([a.diffuse, "bench", "--model", str(model), "--batch",
                                       str(b), "--runs", str(a.runs), "--device", d, "--check",
                                       str(check), "--threads", str(a.threads), "--json"],
                                      env=env))
                    for r in got:
                        r["includes"] = includes_ours[d]
                    return got
                return results(run([PY, "bench_peers.py", str(model), str(onnx), "--batch",
                                    str(b), "--runs", str(a.runs), "--warmup", "0",
                                    "--threads", str(a.threads), "--device", a.torch_device]
                                   + (["--skip-onnx"] if kind == "torch" else ["--skip-torch"]),
                                   cwd=ROOT / "training", env=env))

            for k in range(a.rounds):
                # Rotated by one each round: A B C, B C A, C A B, …
                turn = kinds[k % len(kinds):] + kinds[:k % len(kinds)]
                load = os.getloadavg()
                round_load.append({"model": name, "batch": b, "round": k + 1, "order": turn,
                                   "loadavg": load})
                print(f"{name} b{b} round {k + 1}/{a.rounds}: {' -> '.join(turn)}; load average "
                      + "/".join(f"{x:.2f}" for x in load), flush=True)
                for kind in turn:
                    order.append({"model": name, "batch": b, "round": k + 1, "row": kind})
                    for r in row(kind):
                        rounds.setdefault(r["backend"], []).append(r)
            got = []
            for backend, rs in rounds.items():
                r = dict(rs[0])
                r.pop("times_ms", None)
                r["round_medians_ms"] = [x["median_ms"] for x in rs]
                # `diffuse bench --json` gives each process's median, min and max, not its runs:
                # every row's figure is the median of its rounds' medians (equal runs per round).
                r["median_ms"] = statistics.median(r["round_medians_ms"])
                r["min_ms"] = min(x["min_ms"] for x in rs)
                r["max_ms"] = max(x["max_ms"] for x in rs)
                if all("times_ms" in x for x in rs):
                    r["times_ms"] = [t for x in rs for t in x["times_ms"]]
                got.append(r)
            flops = json.loads(check.read_text()).get("flops")
            for r in got:
                r["model"] = name
                if flops:
                    r["gflops"] = flops / r["median_ms"] / 1e6
            rows += got
            by = {r["backend"]: r for r in got}
            line = f"{name:<13} b{b}  " + "  ".join(
                f"{k} {v['median_ms']:.2f} ({v['min_ms']:.2f}-{v['max_ms']:.2f}; rounds "
                + "/".join(f"{x:.2f}" for x in v["round_medians_ms"]) + ")"
                for k, v in by.items())
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
          f"median of {a.runs} runs" + (f", median of {a.rounds} alternating rounds (order rotated per round)" if a.rounds > 1 else "") + f"; one untimed checked forward per row and round; every CPU backend at {a.threads} thread(s)")
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
                                "date": str(dt.date.today()), "command": " ".join(sys.argv),
                                "runs": a.runs, "rounds": a.rounds, "warmup": 1,
                                "warmup_note": "one untimed forward per row and round, whose "
                                               "output is checked against PyTorch's",
                                "statistic": "median of the rounds' medians; min and max over "
                                             "every timed run",
                                "threads": a.threads, "order": order, "round_load": round_load,
                                "rows": rows}, indent=1))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
