"""Unconditional latent DDPM/DDIM pipeline with components named `vae`, `unet`, `scheduler`.

diffusers 0.42 has no stock pipeline with exactly these components (`LDMPipeline` names its
autoencoder `vqvae`, `DiTPipeline` takes a transformer), so `export.py` copies this file into
`assets/models/emoji-latent/` and names it in `model_index.json`
(`"_class_name": ["pipeline_latent_ddpm", "LatentDDPMPipeline"]`), which diffusers' custom
pipeline loader resolves from the folder itself:

    pipe = DiffusionPipeline.from_pretrained("assets/models/emoji-latent", trust_remote_code=True)
    images = pipe(batch_size=4, num_inference_steps=50).images

It is `LDMPipeline.__call__` with `vqvae` renamed to `vae`: latents ~ N(0, I) of shape
[B, unet.in_channels, unet.sample_size, unet.sample_size], denoised by the scheduler, then
image = vae.decode(latents / vae.config.scaling_factor).sample.

Class-conditional UNets (`num_class_embeds`, issue 36's emoji categories, the last label being the
null class) take `class_labels` (one per image) and `guidance_scale`:
eps = eps(null) + w (eps(label) - eps(null)).
"""

from __future__ import annotations

import inspect

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.schedulers import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor


class LatentDDPMPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "unet->vae"

    def __init__(self, vae: AutoencoderKL, unet: UNet2DModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, generator: torch.Generator | None = None, eta: float = 0.0,
                 num_inference_steps: int = 50, output_type: str = "pil", return_dict: bool = True,
                 class_labels: torch.Tensor | None = None, guidance_scale: float = 1.0):
        cfg = self.unet.config
        if cfg.num_class_embeds is not None and class_labels is None:
            class_labels = torch.full((batch_size,), cfg.num_class_embeds - 1)  # the null class
        if class_labels is not None:
            class_labels = torch.as_tensor(class_labels, device=self.device).reshape(batch_size)
            null = torch.full_like(class_labels, cfg.num_class_embeds - 1)
        latents = randn_tensor((batch_size, cfg.in_channels, cfg.sample_size, cfg.sample_size),
                               generator=generator, device=self.device, dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps)
        latents = latents * self.scheduler.init_noise_sigma
        params = set(inspect.signature(self.scheduler.step).parameters)
        extra = {k: v for k, v in (("eta", eta), ("generator", generator)) if k in params}
        for t in self.progress_bar(self.scheduler.timesteps):
            x = self.scheduler.scale_model_input(latents, t)
            if class_labels is None:
                eps = self.unet(x, t).sample
            elif guidance_scale == 1.0:
                eps = self.unet(x, t, class_labels=class_labels).sample
            else:
                e_c, e_u = self.unet(torch.cat([x, x]), t, class_labels=torch.cat([class_labels, null])).sample.chunk(2)
                eps = e_u + guidance_scale * (e_c - e_u)
            latents = self.scheduler.step(eps, t, latents, **extra).prev_sample
        image = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        image = (image / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy()
        if output_type == "pil":
            image = self.numpy_to_pil(image)
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)
