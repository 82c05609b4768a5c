"""Compute study: training throughput (images/s) of UNet variants on this CPU.

Each row times `--steps` optimizer steps (after 3 warm-up steps) of the real training step:
noise, UNet forward, MSE, backward, AdamW. Results are printed as a Markdown table for
README.md. Keep it short: the whole default study is a few minutes.

    python study.py                      # the default grid
    python study.py --only threads       # one section
    python study.py --only vae           # issue 6: AutoencoderKL factor 4 vs 8 (train and decode speed)
    python study.py --only latent        # issues 6/7: the latent and super-resolution UNets
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import configs

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=8)
p.add_argument("--only", default=None)
args = p.parse_args()


def bench(unet_kw, batch=64, threads=1, bf16=False, channels_last=False, compile_=False):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from diffusers import UNet2DModel
    m = UNet2DModel(**unet_kw)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    fwd = torch.compile(m) if compile_ else m
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    c = unet_kw["in_channels"]
    size = unet_kw.get("sample_size", 32)
    x = torch.randn(batch, c, size, size)
    target = torch.randn(batch, unet_kw.get("out_channels", c), size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (batch,))
    y = torch.randint(0, 11, (batch,)) if unet_kw.get("num_class_embeds") else None

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = fwd(x, t, class_labels=y).sample
        loss = torch.nn.functional.mse_loss(out.float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(3):
        step()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    dt = (time.perf_counter() - t0) / args.steps
    nparam = sum(q.numel() for q in m.parameters())
    return batch / dt, nparam, warm


def row(label, **kw):
    unet = kw.pop("unet")
    ips, n, warm = bench(unet, **kw)
    print(f"| {label} | {n/1e6:.2f} M | {ips:7.1f} | {warm:5.1f} s |", flush=True)


base = configs.UNETS["fashion"]
emoji = configs.UNETS["emoji"]
print(f"torch {torch.__version__}, {os.cpu_count()} logical cores, load avg {os.getloadavg()[0]:.2f}")
print("| variant | params | train img/s | warm-up |")
print("|---|---|---|---|")
sections = {
    "precision": lambda: [
        row("fashion, fp32, 1 thread, b64", unet=base),
        row("fashion, fp32 channels_last, 1 thread, b64", unet=base, channels_last=True),
    ],
    # No AVX512-BF16/AMX on this CPU: bf16 autocast did not finish 3 warm-up steps in 280 s.
    "bf16": lambda: [
        row("fashion, bf16 autocast, 1 thread, b8", unet=base, bf16=True, batch=8),
    ],
    "threads": lambda: [
        row("fashion, fp32, 2 threads, b64", unet=base, threads=2),
    ],
    "batch": lambda: [
        row("fashion, fp32, 1 thread, b32", unet=base, batch=32),
        row("fashion, fp32, 1 thread, b128", unet=base, batch=128),
    ],
    "size": lambda: [
        row("(32,64,64) lpb 2, fp32, 1 thread, b64", unet={**base, "layers_per_block": 2}),
        row("(32,64,128) lpb 1, 1 ch, fp32, 1 thread, b64", unet={**base, "block_out_channels": (32, 64, 128)}),
        row("emoji (32,64,128) lpb 1, 3 ch, fp32, 1 thread, b64", unet=emoji),
    ],
    "compile": lambda: [
        row("fashion, fp32, torch.compile, 1 thread, b64", unet=base, compile_=True),
    ],
}


def vae_row(label, name, batch=16, threads=1):
    """Training img/s (L1 + KL step with AdamW) and decode img/s of an AutoencoderKL config at 64x64."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = configs.make_vae(name)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, 64, 64)

    def step():
        post = m.encode(x).latent_dist
        loss = (m.decode(post.sample()).sample - x).abs().mean() + 1e-6 * post.kl().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    step()
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    tr = 3 * batch / (time.perf_counter() - t0)
    with torch.no_grad():
        z = m.encode(x).latent_dist.mode()
        t0 = time.perf_counter()
        m.decode(z)
        dec = batch / (time.perf_counter() - t0)
    n = sum(q.numel() for q in m.parameters())
    print(f"| {label} | {n/1e6:.2f} M | latents {tuple(z.shape[1:])} | train {tr:.1f} img/s | decode {dec:.1f} img/s |",
          flush=True)


sections["vae"] = lambda: [
    vae_row("vae-f4 (16,32,64)", "vae-f4"),
    vae_row("vae-f8 (16,32,64,64)", "vae-f8"),
]
sections["latent"] = lambda: [
    row("emoji-latent (32,64,128) at 16x16, b32", unet=configs.UNETS["emoji-latent"], batch=32),
    row("(64,128,128) at 16x16, b32", unet={**configs.UNETS["emoji-latent"], "block_out_channels": (64, 128, 128),
                                            "norm_num_groups": 16}, batch=32),
    row("emoji-sr (16,32,64,64) at 64x64, 6 ch in, b16", unet=configs.UNETS["emoji-sr"], batch=16),
    row("emoji (pixel, 32x32), b32", unet=emoji, batch=32),
]
for name, fn in sections.items():
    if args.only == name or (args.only is None and name not in ("bf16", "compile", "vae", "latent")):
        fn()
