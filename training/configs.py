"""Model and training configurations: one entry per shipped model, plus `tiny` for the quick test.

Only standard diffusers block types are used (DownBlock2D, AttnDownBlock2D, UNetMidBlock2D,
UpBlock2D, AttnUpBlock2D) because the Rust engine implements exactly those. Sizes come from
the compute study in README.md: 2 CPU cores (AVX2, no AVX-512/AMX), ~2 hours per model.
"""

from __future__ import annotations

from diffusers import DDPMScheduler, UNet2DModel

UNETS = {
    # Class-conditional: labels 0..9 plus the null class 10 for classifier-free guidance.
    "fashion": dict(
        sample_size=32, in_channels=1, out_channels=1,
        block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=32, num_class_embeds=11,
    ),
    "emoji": dict(
        sample_size=32, in_channels=3, out_channels=3,
        block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=32,
    ),
    # A few thousand parameters' worth of every block kind, for the Rust parity test.
    "tiny": dict(
        sample_size=32, in_channels=1, out_channels=1,
        block_out_channels=(8, 16, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=8, num_class_embeds=11,
    ),
}

TRAIN = {
    "fashion": dict(dataset="fashion", batch_size=32, lr=1e-3, warmup=200, max_steps=12000,
                    ema_decay=0.999, cond_drop=0.1, hflip=False, guidance_scale=2.0),
    "emoji": dict(dataset="emoji", batch_size=32, lr=1e-3, warmup=200, max_steps=12000,
                  ema_decay=0.999, cond_drop=0.0, hflip=True, guidance_scale=1.0),
    "tiny": dict(dataset="fashion", batch_size=16, lr=1e-3, warmup=0, max_steps=20,
                 ema_decay=0.9, cond_drop=0.1, hflip=False, guidance_scale=2.0),
}

# Standard DDPM (Ho et al. 2020): 1000 steps, linear betas 1e-4..0.02, epsilon prediction.
SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                 prediction_type="epsilon", clip_sample=True)


def make_unet(name: str) -> UNet2DModel:
    return UNet2DModel(**UNETS[name])


def make_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULER)


def is_conditional(name_or_unet) -> bool:
    cfg = UNETS[name_or_unet] if isinstance(name_or_unet, str) else name_or_unet.config
    return cfg.get("num_class_embeds") is not None
