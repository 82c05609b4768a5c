"""The page's cost per model size (issue 36): export a randomly initialised folder of every scaled
config (`configs.UNETS["<model>-<size>"]`) into target/sizes/<config>/ and time its UNet forward in
the Rust engine's CPU backend (`diffuse bench`), at batch 1 (unguided) and batch 2 (what one guided
step costs: the conditional and the null-class pass together).

    python sizes.py                       # all sizes -> target/sizes/, table on stdout + sizes.json
    python sizes.py --only emoji-m --runs 5 --threads 2

The default run's time is steps x ms per forward at the batch the page runs (2 with guidance) with
the shipped model's default sampler and step count (configs.PAGE_DEFAULTS); a latent model adds one
VAE decode, not counted here. Weights are random: the cost of a forward does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import torch

import configs

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def export_random(name: str, out: Path) -> int:
    torch.manual_seed(0)
    unet = configs.make_unet(name).half()
    unet.save_pretrained(out / "unet", safe_serialization=True)
    configs.make_scheduler(name).save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "DDPMPipeline", "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}, indent=2) + "\n")
    return sum(p.numel() for p in unet.parameters())


def bench(model: Path, batch: int, runs: int, threads: int, repeats: int) -> float:
    """Best median ms/forward over `repeats` runs of `diffuse bench` (the machine is shared)."""
    best = float("inf")
    for _ in range(repeats):
        out = subprocess.run([str(REPO / "target" / "release" / "diffuse"), "bench", "--model", str(model),
                              "--batch", str(batch), "--runs", str(runs), "--device", "cpu",
                              "--threads", str(threads)], capture_output=True, text=True, check=True).stdout
        best = min(best, float(re.search(r"cpu\s+([\d.]+) ms/forward median", out).group(1)))
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "target" / "sizes")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    names = args.only or [n for n in configs.UNETS if configs.base_name(n) != n]
    rows = []
    for name in names:
        folder = args.out / name
        params = export_random(name, folder)
        base = configs.base_name(name)
        d = configs.PAGE_DEFAULTS[base]
        guided = configs.UNETS[name].get("num_class_embeds") is not None
        ms1 = bench(folder, 1, args.runs, args.threads, args.repeats)
        ms2 = bench(folder, 2, args.runs, args.threads, args.repeats) if guided else None
        per_step = ms2 if guided else ms1
        row = dict(config=name, params_m=round(params / 1e6, 2), f16_mb=round(params * 2 / 1e6, 1),
                   ms_b1=ms1, ms_b2=ms2, sampler=d["sampler"], steps=d["steps"], guided=guided,
                   default_run_s=round(d["steps"] * per_step / 1000, 2))
        rows.append(row)
        print(json.dumps(row), flush=True)
    (args.out / "sizes.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n| config | UNet | params | f16 | ms/forward b1 | b2 (one guided step) | default run | its time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        u = configs.UNETS[r["config"]]
        arch = f"{tuple(u['block_out_channels'])} lpb {u['layers_per_block']}"
        b2 = f"{r['ms_b2']:.1f}" if r["ms_b2"] is not None else "—"
        run = f"{r['sampler'].upper()} {r['steps']}{' guided' if r['guided'] else ''}"
        print(f"| {r['config']} | {arch} | {r['params_m']} M | {r['f16_mb']} MB | {r['ms_b1']:.1f} | {b2} | {run} | "
              f"{r['default_run_s']:.2f} s |")


if __name__ == "__main__":
    main()
