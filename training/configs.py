"""Model and training configurations: one entry per shipped model, plus `tiny` for the quick test.

Only standard diffusers block types are used (DownBlock2D, AttnDownBlock2D, UNetMidBlock2D,
UpBlock2D, AttnUpBlock2D) because the Rust engine implements exactly those. Sizes come from
the compute study in README.md: 2 CPU cores (AVX2, no AVX-512/AMX), ~2 hours per model.
"""

from __future__ import annotations

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel

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
    # Issue 6: DDPM in the 4x16x16 latent space of the `vae-f4` autoencoder (emoji at 64x64).
    # (32, 64, 128) at 16x16 costs ~1/3 of the 32x32 pixel `emoji` UNet per step (H*W*C^2 per
    # level) while its output is 64x64; (64, 128, 128) trained at a third of the speed here.
    "emoji-latent": dict(
        sample_size=16, in_channels=4, out_channels=4,
        block_out_channels=(32, 64, 128), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=32,
    ),
    # Issue 7: 32->64 super-resolution. Input = [x_t (3), lowres_up (3)] (data.sr_condition), output
    # the noise (3). Thin at 64x64 (16 channels) because that level costs 4x a 32x32 one.
    "emoji-sr": dict(
        sample_size=64, in_channels=6, out_channels=3,
        block_out_channels=(16, 32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=32,
    ),
    # Tiny stand-ins for quick_test_latent.py.
    "latent-tiny": dict(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=8,
    ),
    "sr-tiny": dict(
        sample_size=64, in_channels=6, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=8,
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


# ---------------------------------------------------------------- issue 36: a recipe that scales
# Sizes of the 32x32 pixel UNets (block_out_channels, layers_per_block); attention at 8x8 and in the
# mid block as before. "s" is today's shipped 1.1 M network; the page's cost per size (random
# weights through the Rust engine, `sizes.py`) is in README.md, "Sizes".
PIXEL_SIZES = {
    "s": ((32, 64, 64), 1),        # 1.1 M: the shipped fashion / emoji
    "m": ((64, 128, 128), 1),      # 4.4 M
    "l": ((64, 128, 128), 2),      # 6.5 M
    "xl": ((64, 128, 256), 2),     # 15.7 M
}
# The latent UNet at 16x16 (attention at 8x8, 4x4 and mid, as the shipped emoji-latent).
LATENT_SIZES = {
    "s": ((32, 64, 128), 1),       # 2.8 M: the shipped emoji-latent
    "m": ((64, 128, 128), 1),
    "l": ((64, 128, 256), 2),
}
# The 64x64 super-resolution UNet (attention at 8x8 and mid).
SR_SIZES = {
    "s": ((16, 32, 64, 64), 1),    # 1.1 M: the shipped emoji-sr
    "m": ((32, 64, 128, 128), 1),
}


def pixel_unet(size: str, channels: int, classes: int | None) -> dict:
    ch, lpb = PIXEL_SIZES[size]
    return dict(sample_size=32, in_channels=channels, out_channels=channels, block_out_channels=ch,
                layers_per_block=lpb, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8,
                attention_head_dim=32, **({"num_class_embeds": classes + 1} if classes else {}))


def latent_unet(size: str, classes: int | None) -> dict:
    ch, lpb = LATENT_SIZES[size]
    return dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=ch, layers_per_block=lpb,
                down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
                attention_head_dim=32, **({"num_class_embeds": classes + 1} if classes else {}))


def sr_unet(size: str) -> dict:
    ch, lpb = SR_SIZES[size]
    return dict(sample_size=64, in_channels=6, out_channels=3, block_out_channels=ch, layers_per_block=lpb,
                down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8,
                attention_head_dim=32)


# The scaled configs, `<model>-<size>`: fashion (10 classes), emoji conditioned on its 10 emoji.json
# categories (data.EMOJI_CATEGORIES; null class 10 for classifier-free guidance), the latent UNet
# (categories too) on the centred latents of `vae-f4-long`, and v-prediction super-resolution.
for _sz in PIXEL_SIZES:
    UNETS[f"fashion-{_sz}"] = pixel_unet(_sz, 1, 10)
    UNETS[f"emoji-{_sz}"] = pixel_unet(_sz, 3, 10)
for _sz in LATENT_SIZES:
    UNETS[f"emoji-latent-{_sz}"] = latent_unet(_sz, 10)
for _sz in SR_SIZES:
    UNETS[f"emoji-sr-{_sz}"] = sr_unet(_sz)
UNETS["sr-v-tiny"] = UNETS["sr-tiny"]
UNETS["latent-c-tiny"] = dict(UNETS["latent-tiny"], num_class_embeds=11)

TRAIN = {
    "fashion": dict(dataset="fashion", batch_size=32, lr=1e-3, warmup=200, max_steps=12000,
                    ema_decay=0.999, cond_drop=0.1, hflip=False, guidance_scale=2.0),
    "emoji": dict(dataset="emoji", batch_size=32, lr=1e-3, warmup=200, max_steps=12000,
                  ema_decay=0.999, cond_drop=0.0, hflip=True, guidance_scale=1.0),
    # Latent: `dataset` is the cached posterior (mean, std) of every training image (and its mirror
    # image) under the `vae` run; each batch samples z = (mean + std * noise) * scaling_factor.
    "emoji-latent": dict(dataset="emoji-latent", vae="vae-f4", batch_size=32, lr=1e-3, warmup=200,
                         max_steps=12000, ema_decay=0.999, cond_drop=0.0, hflip=True, guidance_scale=1.0),
    # Super-resolution: x0 = the 64x64 image, conditioned on data.sr_condition(x0).
    "emoji-sr": dict(dataset="emoji64", sr=True, batch_size=16, lr=1e-3, warmup=200, max_steps=12000,
                     ema_decay=0.999, cond_drop=0.0, hflip=True, guidance_scale=1.0),
    "latent-tiny": dict(dataset="emoji-latent", vae="vae-tiny", batch_size=8, lr=1e-3, warmup=0, max_steps=5,
                        ema_decay=0.9, cond_drop=0.0, hflip=True, guidance_scale=1.0),
    "sr-tiny": dict(dataset="emoji64", sr=True, batch_size=4, lr=1e-3, warmup=0, max_steps=5,
                    ema_decay=0.9, cond_drop=0.0, hflip=True, guidance_scale=1.0),
    "tiny": dict(dataset="fashion", batch_size=16, lr=1e-3, warmup=0, max_steps=20,
                 ema_decay=0.9, cond_drop=0.1, hflip=False, guidance_scale=2.0),
}


# Issue 36 recipe: warm-up then cosine decay to lr_min (`lr_schedule`: "cosine"; the shipped configs
# keep "constant" so their checkpoints resume unchanged), EMA 0.9995, batch sizes for one process
# on a GPU (train.py's --batch-size overrides; the CPU smoke run uses 4). When a run is stopped by
# --max-minutes, the cosine follows the fraction of that time used (whichever of steps or time is
# further along), so a wall-clock-bounded GPU run ends at lr_min. `prediction`: "epsilon" or
# "v_prediction" (the scheduler's prediction_type; the loss target is then sched.get_velocity).
def _scaled(dataset, batch, **kw):
    return dict(dict(dataset=dataset, batch_size=batch, lr=1e-3, warmup=500, max_steps=200000,
                     lr_schedule="cosine", lr_min=1e-5, ema_decay=0.9995, cond_drop=0.1, hflip=True,
                     guidance_scale=2.0, prediction="epsilon"), **kw)


for _sz in PIXEL_SIZES:
    TRAIN[f"fashion-{_sz}"] = _scaled("fashion", 512, hflip=False)
    TRAIN[f"emoji-{_sz}"] = _scaled("emoji", 512)
for _sz in LATENT_SIZES:
    TRAIN[f"emoji-latent-{_sz}"] = _scaled("emoji-latent", 512, vae="vae-f4-long")
for _sz in SR_SIZES:
    TRAIN[f"emoji-sr-{_sz}"] = _scaled("emoji64", 128, sr=True, cond_drop=0.0, guidance_scale=1.0,
                                       prediction="v_prediction")
TRAIN["sr-v-tiny"] = dict(TRAIN["sr-tiny"], prediction="v_prediction")
TRAIN["latent-c-tiny"] = dict(TRAIN["latent-tiny"], cond_drop=0.1, lr_schedule="cosine", lr_min=1e-5)

# AutoencoderKL for issue 6: only DownEncoderBlock2D / UpDecoderBlock2D (what the Rust engine
# implements), mid block with attention (diffusers' default), 4 latent channels, emoji at 64x64.
# The factor (f4: 4x16x16 latents, f8: 4x8x8) was chosen by the study in README.md.
def _vae(ch):
    return dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
                down_block_types=("DownEncoderBlock2D",) * len(ch), up_block_types=("UpDecoderBlock2D",) * len(ch),
                block_out_channels=ch, layers_per_block=1, norm_num_groups=8)


VAES = {
    "vae-f4": _vae((16, 32, 64)),
    "vae-f8": _vae((16, 32, 64, 64)),
    "vae-tiny": _vae((8, 8, 16)),
    # Issue 36: the f4 architecture trained for longer (on a GPU), its latents centred per channel
    # (`centre_latents`: train_vae.py --finalize folds the per-channel mean/std into quant_conv and
    # post_quant_conv, so the exported VAE's latents have zero mean and unit std per channel and stock
    # diffusers / the Rust engine need no per-channel shift).
    "vae-f4-long": _vae((16, 32, 64)),
}
# L1 reconstruction (mean over pixels) + kl_weight * KL (sum over latent elements, mean over batch,
# divided by the pixels per image), i.e. Stable Diffusion's 1e-6 weight on summed losses.
VAE_TRAIN = {
    "vae-f4": dict(dataset="emoji64", batch_size=16, lr=5e-4, warmup=100, max_steps=1200, kl_weight=1e-6, hflip=True),
    "vae-f8": dict(dataset="emoji64", batch_size=16, lr=5e-4, warmup=100, max_steps=4000, kl_weight=1e-6, hflip=True),
    "vae-tiny": dict(dataset="emoji64", batch_size=8, lr=1e-3, warmup=0, max_steps=10, kl_weight=1e-6, hflip=True,
                     centre_latents=True),
    "vae-f4-long": dict(dataset="emoji64", batch_size=64, lr=1e-3, warmup=200, max_steps=100000, kl_weight=1e-6,
                        hflip=True, lr_schedule="cosine", lr_min=1e-5, centre_latents=True),
}


def make_vae(name: str) -> AutoencoderKL:
    return AutoencoderKL(**VAES[name])


# Standard DDPM (Ho et al. 2020): 1000 steps, linear betas 1e-4..0.02, epsilon prediction.
SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                 prediction_type="epsilon", clip_sample=True)


def make_unet(name: str) -> UNet2DModel:
    return UNet2DModel(**UNETS[name])


# What the page and `diffuse sample` start from for each shipped model (stepwise.json's
# `defaults`, read by both), chosen from the model card's sampler table
# (training/sampler_table.py): the sampler and step count with the best FID that keeps the page's
# default run near 3 s on 2 CPU cores. fashion: DDIM eta 0 converges only with eps rebuilt from the
# clipped x0 (`use_clipped_model_output`); with diffusers' default mix it gets worse with steps.
# emoji: the deterministic samplers (DDIM eta 0, DPM-Solver++) do not converge on this small
# model; DDPM does, and reaches the FID floor's neighbourhood at 100 steps. emoji-latent: the
# same, with DDPM at 50 steps within 1 FID point of 100 (and a VAE decode on top of each step).
PAGE_DEFAULTS = {
    "fashion": {"sampler": "ddim", "steps": 50, "eta": 0.0, "guidance": 2.0, "use_clipped_model_output": True},
    "emoji": {"sampler": "ddpm", "steps": 100},
    "emoji-latent": {"sampler": "ddpm", "steps": 50},
    "emoji-sr": {"sampler": "ddim", "steps": 50, "eta": 0.0},
    "tiny": {"sampler": "ddim", "steps": 50, "eta": 0.0, "guidance": 2.0},
    # quick_test_latent.py's stand-ins
    "latent-tiny": {"sampler": "ddpm", "steps": 50},
    "latent-c-tiny": {"sampler": "ddpm", "steps": 50},
    "sr-tiny": {"sampler": "ddim", "steps": 50, "eta": 0.0},
    "sr-v-tiny": {"sampler": "ddim", "steps": 50, "eta": 0.0},
}


# What a viewer will see at those defaults, in a sentence for the model card (from its table
# and its samples.png, looked at).
VIEWER_NOTES = {
    "fashion": "What you will see: clean, recognisable garments of the class you pick; the evaluation "
               "classifier recognises about as many of them as of real photos. With diffusers' default "
               "clipping (ε kept as the model gave it) DDIM at 50 steps drew swollen, smeared shapes: "
               "the table's `clip` rows. Identical rows are one update: DDIM at η = 1 with ε rebuilt is "
               "DDPM's step, and without clipping Euler ancestral's, from the same noise.",
    "emoji": "What you will see: emoji-like faces, hearts and tiles, many of them blobs; the model is small "
             "and briefly trained. Only the stochastic samplers converge on it: DDIM with η = 0 and "
             "DPM-Solver++ leave speckle and get worse with more steps (the table), so the default is DDPM.",
    "emoji-latent": "What you will see: softer emoji than the pixel model's, faces and round shapes more often "
                    "than anything else; the VAE (25 dB) blurs fine detail. As with `emoji`, the deterministic "
                    "samplers do not converge on this model (FID rises with steps), so the default is DDPM. "
                    "DDIM at η = 1, DDPM and Euler ancestral give the same samples here (the same update for "
                    "this unclipped schedule, from the same noise).",
}


def guidance_of(info: dict) -> float:
    """The shipped guidance scale of a stepwise.json."""
    return float(info.get("defaults", {}).get("guidance", 1.0))


def make_scheduler(name: str | None = None) -> DDPMScheduler:
    """Latent models get clip_sample=False (as Stable Diffusion): scaled latents are not confined to
    [-1, 1] (here per-channel means reach -1.3), and clipping the predicted x0 there wrecks samples.
    `prediction` configs (issue 36: emoji-sr-*) set prediction_type."""
    cfg = dict(SCHEDULER)
    tcfg = TRAIN.get(name, {}) if name is not None else {}
    if tcfg.get("dataset") == "emoji-latent":
        cfg["clip_sample"] = False
    cfg["prediction_type"] = tcfg.get("prediction", "epsilon")
    return DDPMScheduler(**cfg)


def base_name(name: str) -> str:
    """The shipped model a config trains: "emoji-m" -> "emoji", "emoji-latent-s" -> "emoji-latent"."""
    for base in ("emoji-latent", "emoji-sr", "fashion", "emoji"):
        if name == base or (name.startswith(base + "-") and name[len(base) + 1:] in
                            {**PIXEL_SIZES, **LATENT_SIZES, **SR_SIZES}):
            return base
    return name


def is_conditional(name_or_unet) -> bool:
    cfg = UNETS[name_or_unet] if isinstance(name_or_unet, str) else name_or_unet.config
    return cfg.get("num_class_embeds") is not None
