"""Export a diffusers UNet2DModel folder to ONNX for the peer benchmarks (issue 8).

    python export_onnx.py MODEL_DIR OUT_DIR [--batch N ...]

MODEL_DIR is a pipeline folder (``unet/config.json``) or a bare UNet folder (``config.json``).
For each batch size it writes ``OUT_DIR/unet_b{N}.onnx`` (float32 weights, static shapes, so
both onnxruntime and onnxruntime-web can plan every buffer ahead) whose inputs are

  sample       float32 [N, in_channels, H, W]
  timestep     float32 [N]
  class_labels int64   [N]      (only for class-conditional models)

and whose output ``out`` is the UNet's ``sample``. Beside them ``bench_input_b{N}.json`` holds a
seeded input and PyTorch's float32 output for it (flattened lists), which every peer checks its
own output against before it is timed. The weights are the folder's own: the same bytes our
engine loads, widened to float32 (ONNX peers run f32; so does our engine).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import UNet2DModel
from torch.utils.flop_counter import FlopCounterMode


class Wrapped(torch.nn.Module):
    """UNet2DModel with tensor-only inputs and one tensor output (what ONNX export needs)."""

    def __init__(self, unet: UNet2DModel, conditional: bool):
        super().__init__()
        self.unet = unet
        self.conditional = conditional

    def forward(self, sample, timestep, class_labels=None):
        return self.unet(sample, timestep, class_labels=class_labels, return_dict=False)[0]


def load(model_dir: Path) -> UNet2DModel:
    sub = "unet" if (model_dir / "unet" / "config.json").exists() else None
    unet = UNet2DModel.from_pretrained(model_dir, subfolder=sub, torch_dtype=torch.float32)
    return unet.float().eval()


def bench_input(unet: UNet2DModel, batch: int, seed: int = 0):
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, (list, tuple)) else (cfg.sample_size,) * 2
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, cfg.in_channels, *size, generator=g)
    timestep = torch.full((batch,), 500.0)
    labels = None
    if cfg.num_class_embeds:
        labels = torch.arange(batch, dtype=torch.int64) % cfg.num_class_embeds
    return sample, timestep, labels


def export(model_dir: Path, out_dir: Path, batches: list[int]) -> None:
    unet = load(model_dir)
    conditional = bool(unet.config.num_class_embeds)
    wrapped = Wrapped(unet, conditional).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    for n in batches:
        sample, timestep, labels = bench_input(unet, n)
        args = (sample, timestep, labels) if conditional else (sample, timestep)
        names = ["sample", "timestep"] + (["class_labels"] if conditional else [])
        path = out_dir / f"unet_b{n}.onnx"
        with torch.no_grad():
            with FlopCounterMode(display=False) as fc:
                expected = wrapped(*args)
            torch.onnx.export(
                wrapped,
                args,
                str(path),
                input_names=names,
                output_names=["out"],
                opset_version=17,
                dynamo=False,
            )
        record = {
            "model": str(model_dir),
            "batch": n,
            "inputs": {
                "sample": {"shape": list(sample.shape), "data": sample.flatten().tolist()},
                "timestep": {"shape": list(timestep.shape), "data": timestep.tolist()},
            },
            "expected": {"shape": list(expected.shape), "data": expected.flatten().tolist()},
            "params": sum(p.numel() for p in unet.parameters()),
            # Multiply-adds counted twice, by PyTorch's FlopCounterMode: the GFLOP/s figures.
            "flops": fc.get_total_flops(),
        }
        if conditional:
            record["inputs"]["class_labels"] = {"shape": [n], "data": labels.tolist()}
        (out_dir / f"bench_input_b{n}.json").write_text(json.dumps(record))
        print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    a = ap.parse_args()
    torch.manual_seed(0)
    export(a.model_dir, a.out_dir, a.batch)


if __name__ == "__main__":
    main()
