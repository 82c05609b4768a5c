"""Quick end-to-end check of the issue 6/7 training code (latent model and super-resolution).

    python training/quick_test_latent.py --out DIR

1. trains `vae-tiny` for 10 steps on 64 emoji (64x64), finalizes it on 64 images (PSNR,
   scaling_factor, latent cache);
2. trains `latent-tiny` on those latents for 5 steps, exports DIR/latent/ exactly like
   assets/models/emoji-latent/ and loads it (AutoencoderKL/UNet2DModel subfolders and
   DiffusionPipeline with trust_remote_code, 2 sampling steps);
   then `latent-c-tiny` (class-conditional, issue 36) the same way; `vae-tiny` centres its latents;
3. trains `sr-tiny` (and `sr-v-tiny`, v-prediction) for 5 steps, exports DIR/sr/ like assets/models/emoji-sr/, loads it in
   DDPMPipeline/DDIMPipeline and runs the UNet with the condition.

Exit status 0 means all of that worked. Takes ~30 s on an idle 2-core machine.
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

import export  # noqa: E402
import train  # noqa: E402
import train_vae  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    t0 = time.time()
    torch.set_num_threads(1)
    shutil.rmtree(args.out, ignore_errors=True)
    vae_run = args.out / "vae-run"
    train_vae.main(["--config", "vae-tiny", "--out", str(vae_run), "--subset", "64", "--eval-every", "10",
                    "--log-every", "5"])
    res = train_vae.finalize(vae_run, threads=1, subset=64)
    assert res["scaling_factor"] > 0 and res["latent_shape"] == [4, 16, 16], res

    common = ["--subset", "64", "--log-every", "5", "--save-every", "1000", "--sample-every", "100000"]
    train.main(["--config", "latent-tiny", "--out", str(args.out / "latent-run"), "--vae-run", str(vae_run)] + common)
    unet, meta = export.load_ema_unet(args.out / "latent-run" / "checkpoint.pt")
    export.export_latent(unet, meta, args.out / "latent", grid=False, vae_run=vae_run)
    export.check_loads_latent(args.out / "latent")

    # Issue 36: centred latents (vae-tiny folds its per-channel stats into the VAE) under a
    # category-conditional latent UNet, and v-prediction super-resolution.
    assert abs(res["latent_mean"]) < 0.1 and abs(res["latent_std"] - 1) < 0.1, res
    train.main(["--config", "latent-c-tiny", "--out", str(args.out / "latent-c-run"), "--vae-run", str(vae_run)]
               + common)
    unet, meta = export.load_ema_unet(args.out / "latent-c-run" / "checkpoint.pt")
    export.export_latent(unet, meta, args.out / "latent-c", grid=False, vae_run=vae_run)
    export.check_loads_latent(args.out / "latent-c")
    for cfg, sub in (("sr-tiny", "sr"), ("sr-v-tiny", "sr-v")):
        train.main(["--config", cfg, "--out", str(args.out / f"{sub}-run")] + common)
        unet, meta = export.load_ema_unet(args.out / f"{sub}-run" / "checkpoint.pt")
        export.export_sr(unet, meta, args.out / sub, grid=False)
        export.check_loads_sr(args.out / sub)
    print(f"quick latent/SR test OK in {time.time() - t0:.0f} s: {args.out / 'latent'}, {args.out / 'sr'}")


if __name__ == "__main__":
    main()
