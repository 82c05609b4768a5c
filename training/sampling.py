"""Sampling with diffusers' DDIMScheduler, with classifier-free guidance for class-conditional
UNets (which diffusers' DDIMPipeline cannot pass labels to), and sample-grid PNGs.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDIMScheduler, UNet2DModel
from PIL import Image

from data import NULL_CLASS, box_consistency, to_uint8


@torch.no_grad()
def sample(unet: UNet2DModel, scheduler_config, n: int, labels: torch.Tensor | None = None,
           guidance_scale: float = 1.0, steps: int = 50, seed: int = 0, batch: int = 250,
           eta: float = 0.0, cond: torch.Tensor | None = None,
           consistent_with: torch.Tensor | None = None) -> torch.Tensor:
    """Returns n samples, shape [n, C, H, W] (C = out_channels), float32 on CPU: images in
    [-1, 1], or scaled latents for a latent UNet (decode them with the VAE).

    `cond` [n, C', H, W], if given, is concatenated to x_t along channels at every step (the
    super-resolution model's upsampled low-resolution image, as in LDMSuperResolutionPipeline).

    `consistent_with` [n, C, h, w], if given, is the low-resolution image the x0 implied by each
    model output is made to average down to before the step (`data.box_consistency`; the
    super-resolution sampling the app and `diffuse upscale` do by default). Epsilon and
    v_prediction models.

    Guidance (Ho & Salimans 2022): eps = eps(x, null) + w * (eps(x, y) - eps(x, null)).
    w = 1 is plain conditional sampling; labels=None samples an unconditional UNet.
    """
    sched = DDIMScheduler.from_config(scheduler_config)
    sched.set_timesteps(steps)
    v_pred = sched.config.prediction_type == "v_prediction"
    dev = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    cfg = unet.config
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, batch):
        b = min(batch, n - i)
        x = torch.randn(b, cfg.out_channels, cfg.sample_size, cfg.sample_size, generator=g)
        x = x.to(dev)
        y = labels[i:i + b].to(dev) if labels is not None else None
        c = cond[i:i + b].to(dev) if cond is not None else None
        low = consistent_with[i:i + b].to(dev) if consistent_with is not None else None
        for t in sched.timesteps:
            tt = t.expand(b).to(dev) if t.dim() == 0 else t
            if c is not None:
                eps = unet(torch.cat([x, c], 1).to(dtype), tt).sample.float()
            elif y is None:
                eps = unet(x.to(dtype), tt).sample.float()
            elif guidance_scale == 1.0:
                eps = unet(x.to(dtype), tt, class_labels=y).sample.float()
            else:
                both = unet(torch.cat([x, x]).to(dtype), torch.cat([tt, tt]),
                            class_labels=torch.cat([y, torch.full_like(y, NULL_CLASS)])).sample.float()
                eps_c, eps_u = both.chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            if low is not None:
                # eps is the model output: the noise, or v for a v_prediction model (issue 36's SR).
                abar = sched.alphas_cumprod[int(t)].to(dev)
                a, s = abar.sqrt(), (1 - abar).sqrt()
                if v_pred:
                    x0 = box_consistency(a * x - s * eps, low)
                    eps = (a * x - x0) / s
                else:
                    x0 = box_consistency((x - s * eps) / a, low)
                    eps = (x - a * x0) / s
            x = sched.step(eps, t, x, eta=eta, generator=g).prev_sample
        out.append(x.float().cpu())
    return torch.cat(out)


def grid_png(x: torch.Tensor, path, nrow: int, scale: int = 2) -> None:
    """Save [-1, 1] images [N, C, H, W] as one PNG grid with 2-pixel gutters."""
    u8 = to_uint8(x).numpy()
    n, c, h, w = u8.shape
    ncol = (n + nrow - 1) // nrow
    pad = 2
    canvas = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        img = u8[i].transpose(1, 2, 0)
        if c == 1:
            img = np.repeat(img, 3, axis=2)
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y0:y0 + h, x0:x0 + w] = img
    im = Image.fromarray(canvas)
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    im.save(path)
