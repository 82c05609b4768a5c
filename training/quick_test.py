"""Quick end-to-end test of the training side (well under 2 minutes on 2 CPU cores).

    python training/quick_test.py --out DIR

1. trains the `tiny` class-conditional config for 20 steps on 256 Fashion-MNIST images
   (into DIR/run/, removed first so the test is always fresh);
2. exports the EMA weights to DIR/model/ exactly as shipped models are exported
   (pipeline folder, f16 safetensors) and loads it back in diffusers' DDPMPipeline and
   DDIMPipeline;
3. writes the parity fixture for the Rust engine, computed by diffusers in float64 from
   the stored (already f16-rounded) weights:
   - DIR/model/golden.safetensors: `sample` f32 [3,1,32,32], `timestep` i64 [3],
     `class_labels` i64 [3] (one of them the null class 10), `expected` f32 [3,1,32,32];
   - the same split the way tests/fixtures/unet/ lays it out: DIR/model/input.safetensors
     (`sample`, `timestep`, `class_labels`) and DIR/model/expected.safetensors (`sample`).

Exit status 0 means all of that worked; the Rust test then loads DIR/model and compares.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from diffusers import UNet2DModel  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import export  # noqa: E402
import train  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder (DIR/model is the exported model)")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args(argv)
    t0 = time.time()
    torch.set_num_threads(1)
    run, model = args.out / "run", args.out / "model"
    shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(model, ignore_errors=True)

    train.main(["--config", "tiny", "--out", str(run), "--max-steps", str(args.steps), "--subset", "256",
                "--log-every", "5", "--save-every", "1000", "--sample-every", "100000", "--threads", "1"])
    unet, meta = export.load_ema_unet(run / "checkpoint.pt")
    export.export(unet, meta, model, grid=False)
    export.check_loads(model)

    ref = UNet2DModel.from_pretrained(model / "unet").to(torch.float64).eval()
    g = torch.Generator().manual_seed(1234)
    sample = torch.randn(3, 1, 32, 32, generator=g)
    timestep = torch.tensor([0, 500, 999], dtype=torch.int64)
    class_labels = torch.tensor([3, 9, 10], dtype=torch.int64)
    with torch.no_grad():
        expected = ref(sample.double(), timestep, class_labels=class_labels).sample.float()
    assert torch.isfinite(expected).all() and expected.std() > 0, "degenerate golden output"
    save_file({"sample": sample, "timestep": timestep, "class_labels": class_labels, "expected": expected},
              model / "golden.safetensors")
    save_file({"sample": sample, "timestep": timestep, "class_labels": class_labels}, model / "input.safetensors")
    save_file({"sample": expected}, model / "expected.safetensors")
    print(f"quick test OK in {time.time() - t0:.0f} s: model and golden files in {model}")


if __name__ == "__main__":
    main()
