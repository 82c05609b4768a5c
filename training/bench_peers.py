"""Native peers for `diffuse bench` (issue 8): onnxruntime and PyTorch on the same model, the same
input and the same machine, each output checked against PyTorch float32 before it is timed.

    python bench_peers.py MODEL_DIR ONNX_DIR --batch N [--runs R] [--threads T] [--device cpu|cuda]

ONNX_DIR holds ``unet_b{N}.onnx`` and ``bench_input_b{N}.json`` from export_onnx.py. Prints one
human line and one ``RESULT {json}`` line per peer (the same format as ``diffuse bench --json``),
with the median, min and max ms of ``--runs`` timed forward passes. Before them each peer runs
one untimed pass whose output is checked, then ``--warmup`` more untimed ones (default 2;
scripts/bench_native.py passes 0, so every row, ours included, has exactly one untimed pass).
Each pass ends with the output on the host, as ours (``diffuse bench``) does: PyTorch on CUDA
copies it back with ``.cpu()``. ``--threads`` sets both peers' intra-op threads (default 1, like
our CPU backend). ``--skip-onnx`` / ``--skip-torch`` run one peer only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from export_onnx import load


def rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    got = got.astype(np.float64).ravel()
    want = want.astype(np.float64).ravel()
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def timed(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def report(name: str, adapter: str, batch: int, times: list[float], err: float,
           includes: str) -> None:
    m = statistics.median(times)
    print(f"{name:<12} {m:>10.2f} ms/forward median (min {min(times):.2f}, max {max(times):.2f}; "
          f"{adapter}, rel L2 vs PyTorch {err:.1e})")
    print("RESULT " + json.dumps({
        "backend": name, "adapter": adapter, "batch": batch, "median_ms": m,
        "min_ms": min(times), "max_ms": max(times), "runs": len(times), "rel_l2": err,
        "times_ms": times, "includes": includes,
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("onnx_dir", type=Path)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2,
                    help="untimed passes after the checked one, before the timed ones")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--skip-onnx", action="store_true", help="PyTorch only")
    ap.add_argument("--skip-torch", action="store_true", help="onnxruntime only")
    a = ap.parse_args()

    rec = json.loads((a.onnx_dir / f"bench_input_b{a.batch}.json").read_text())
    ins = rec["inputs"]
    feeds = {
        "sample": np.asarray(ins["sample"]["data"], np.float32).reshape(ins["sample"]["shape"]),
        "timestep": np.asarray(ins["timestep"]["data"], np.float32),
    }
    if "class_labels" in ins:
        feeds["class_labels"] = np.asarray(ins["class_labels"]["data"], np.int64)
    want = np.asarray(rec["expected"]["data"], np.float32)
    tol = 1e-3

    if not a.skip_torch:
        torch.set_num_threads(a.threads)
        dev = torch.device(a.device)
        unet = load(a.model_dir).to(dev)
        targs = {k: torch.from_numpy(v).to(dev) for k, v in feeds.items()}

        def torch_pass():
            with torch.inference_mode():
                y = unet(targs["sample"], targs["timestep"], class_labels=targs.get("class_labels"),
                         return_dict=False)[0]
            # The output read back to the host, as ours is (a no-op on the CPU); .cpu() waits for
            # the GPU, the synchronize is for clarity.
            y = y.cpu()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return y

        err = rel_l2(torch_pass().float().numpy(), want)
        assert err <= tol, f"PyTorch output differs from the exported reference: {err:e}"
        adapter = (torch.cuda.get_device_name(0) if dev.type == "cuda"
                   else f"torch {torch.__version__} CPU, {a.threads} thread(s)")
        inc = ("forward + readback to host: module forward under inference_mode, the output "
               "copied to a CPU tensor with .cpu() (device to host) and synchronized; inputs on "
               "the GPU once before the runs" if dev.type == "cuda" else
               "forward (output already a CPU tensor): module forward under inference_mode; "
               "inputs made once before the runs")
        report(f"torch-{a.device}", adapter, a.batch, timed(torch_pass, a.runs, a.warmup), err, inc)

        if dev.type == "cuda":
            # The card's own best: bf16 autocast and CUDA graphs are what a tuned PyTorch user runs.
            def torch_bf16():
                with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16):
                    y = unet(targs["sample"], targs["timestep"],
                             class_labels=targs.get("class_labels"), return_dict=False)[0]
                y = y.cpu()
                torch.cuda.synchronize()
                return y

            err16 = rel_l2(torch_bf16().float().numpy(), want)
            report("torch-cuda-bf16", adapter, a.batch, timed(torch_bf16, a.runs, a.warmup), err16,
                   "forward + readback to host: bf16-autocast forward, the output (autocast's "
                   "dtype) copied to a CPU tensor with .cpu() and synchronized; inputs on the GPU "
                   "once")

    if a.skip_onnx:
        return
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(a.onnx_dir / f"unet_b{a.batch}.onnx"), so,
                                providers=["CPUExecutionProvider"])
    err = rel_l2(sess.run(None, feeds)[0], want)
    assert err <= tol, f"onnxruntime output differs from PyTorch's: {err:e}"
    report("onnxruntime", f"onnxruntime {ort.__version__} CPU, {a.threads} thread(s)", a.batch,
           timed(lambda: sess.run(None, feeds), a.runs, a.warmup), err,
           "forward + output on the host: sess.run with numpy inputs, the output returned as a "
           "numpy array (CPU execution provider)")


if __name__ == "__main__":
    main()
