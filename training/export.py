"""Export a run's EMA weights as a diffusers pipeline folder, f16, with a model card.

    python export.py --config fashion        # runs/fashion/checkpoint.pt -> assets/models/fashion/
    python export.py --config emoji-latent   # + runs/vae-f4 -> assets/models/emoji-latent/ (issue 6)
    python export.py --config emoji-sr       # -> assets/models/emoji-sr/ (issue 7)

Writes `model_index.json` (DDPMPipeline), `unet/config.json`,
`unet/diffusion_pytorch_model.safetensors` (f16), `scheduler/scheduler_config.json`
(DDPMScheduler), `stepwise.json` (what the app needs beyond diffusers: guidance scale, class
names, null class), `samples.png` and `MODEL_CARD.md`. The folder is then checked by loading
it with diffusers' DDPMPipeline and DDIMPipeline and sampling two steps.

`emoji-latent` adds `vae/` (AutoencoderKL, f16, `scaling_factor` in its config.json) and
`pipeline_latent_ddpm.py` (diffusers has no stock pipeline with components vae/unet/scheduler;
see that file); `emoji-sr` is a DDPMPipeline folder whose UNet takes 6 channels (x_t and the
bicubic-upsampled low-resolution image), so it loads in DDPMPipeline but samples only through
`sampling.sample(..., cond=...)` (or the app), not through `pipe()`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMPipeline, DDPMPipeline, DiffusionPipeline, UNet2DModel

import configs
from data import EMOJI_CATEGORIES, FASHION_CLASSES, NULL_CLASS
from sampling import grid_png, sample

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

DATA_NOTES = {
    "fashion": (
        "Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), 60,000 training images of 10 clothing classes, "
        "28x28 grey, zero-padded to 32x32, from Debian's `dataset-fashion-mnist` package. Licence: MIT "
        "(Zalando SE). Held-out set for metrics: the official 10,000-image test set."),
    "emoji": (
        "Emoji images from the npm packages `emoji-datasource-google` 16.0.0 (Noto Emoji, Apache License 2.0, "
        "Google) and `emoji-datasource-twitter` 16.0.0 (Twemoji graphics, CC-BY 4.0, Twitter/X and contributors), "
        "64x64 RGBA composited on white and downsampled to 32x32 (Lanczos); every skin-tone variant included. "
        "Held-out set: 10% of base emoji (with all their variants), chosen by a hash of the code point, "
        "never trained on. Generated images are derivatives of CC-BY-4.0 and Apache-2.0 artwork: attribute "
        "Twemoji (https://github.com/jdecked/twemoji) and Noto Emoji (https://github.com/googlefonts/noto-emoji)."),
    "emoji-latent": (
        "The same emoji (Noto Emoji, Apache License 2.0, and Twemoji, CC-BY 4.0, from the npm packages "
        "`emoji-datasource-google` / `-twitter` 16.0.0) at their native 64x64, composited on white; the same "
        "held-out split (10% of base emoji, all variants, by a hash of the code point), used for both the "
        "autoencoder and the latent UNet. Attribute Twemoji (https://github.com/jdecked/twemoji) and Noto Emoji "
        "(https://github.com/googlefonts/noto-emoji) when using generated images."),
    "emoji-sr": (
        "The same emoji (Noto Emoji, Apache License 2.0, and Twemoji, CC-BY 4.0, from the npm packages "
        "`emoji-datasource-google` / `-twitter` 16.0.0) at their native 64x64, composited on white; training "
        "pairs are (64x64 image, its 32x32 area-downsampled version). Same held-out split as `emoji`. Attribute "
        "Twemoji (https://github.com/jdecked/twemoji) and Noto Emoji (https://github.com/googlefonts/noto-emoji)."),
    "tiny": "A small subset of Fashion-MNIST (MIT), for the quick parity test only.",
}


def load_ema_unet(ckpt_path: Path) -> tuple[UNet2DModel, dict]:
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    unet = UNet2DModel(**ck["unet_config"])
    unet.load_state_dict(ck["ema"])
    meta = {k: ck[k] for k in ("config", "train", "step", "train_seconds", "images_seen", "threads", "world_size")}
    meta.update({k: ck.get(k) for k in ("device", "mixed_precision", "init_from")})
    return unet.eval(), meta


def _where(meta: dict) -> dict:
    """Device facts for stepwise.json; empty for CPU runs, whose cards say so in words."""
    if (meta.get("device") or "cpu") == "cpu":
        return {}
    out = {k: meta.get(k) for k in ("device", "mixed_precision", "world_size", "init_from")}
    out["batch_size"] = meta["train"]["batch_size"]
    return out


def _precision(info: dict) -> str:
    return "bf16 autocast" if info.get("mixed_precision") == "bf16" else "fp32"


def _compute(info: dict) -> str:
    """The card's compute line: where the run trained (stepwise.json, from its checkpoint)."""
    dev = info.get("device") or "cpu"
    if dev == "cpu":
        return (f"Compute: {info['train_hours']} wall-clock hours of training on {info['threads']} CPU thread(s) "
                "of a 2-core AMD EPYC\n(AVX2) shared with a Rust compile and the other training lanes, no GPU.")
    init = info.get("init_from")
    start = (f", starting from the earlier CPU-trained export of `assets/models/{Path(init).name}/` (its EMA "
             "weights, fresh optimiser)") if init else ""
    return (f"Compute: {info['train_hours']} wall-clock hours on {info.get('world_size') or 1} {dev} "
            f"({info.get('mixed_precision') or 'no'} mixed precision){start}; "
            "see training/README.md, \"Training on a lent GPU\".")


GRID_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # where samples.png is sampled


def class_names_of(tcfg: dict) -> list[str]:
    """A conditional model's class names: Fashion-MNIST's, or the emoji.json categories."""
    return FASHION_CLASSES if tcfg["dataset"] == "fashion" else list(EMOJI_CATEGORIES)


def _config_facts(meta: dict) -> dict:
    """stepwise.json keys naming the training config when it is not the shipped name (issue 36's
    `<model>-<size>` configs), and its recipe."""
    name, tcfg = meta["config"], meta["train"]
    if configs.base_name(name) == name:
        return {}
    return {"config": name, "prediction_type": tcfg.get("prediction", "epsilon"),
            "lr_schedule": tcfg.get("lr_schedule", "constant")}


def export(unet: UNet2DModel, meta: dict, out: Path, grid: bool = True, grid_steps: int = 50) -> None:
    out.mkdir(parents=True, exist_ok=True)
    name = meta["config"]
    base = configs.base_name(name)
    tcfg = meta["train"]
    pipe = DDPMPipeline(unet=unet.half(), scheduler=configs.make_scheduler(name))
    pipe.save_pretrained(out, safe_serialization=True)
    unet.float()
    conditional = configs.is_conditional(unet)
    info = {
        "name": base,
        **_config_facts(meta),
        "conditional": conditional,
        "class_names": class_names_of(tcfg) if conditional else [],
        "null_class": NULL_CLASS if conditional else None,
        "defaults": dict(configs.PAGE_DEFAULTS[base], **({"guidance": tcfg["guidance_scale"]} if conditional else {})),
        "train_steps": meta["step"],
        "images_seen": meta["images_seen"],
        "train_hours": round(meta["train_seconds"] / 3600, 2),
        "threads": meta.get("threads"),
        **_where(meta),
    }
    (out / "stepwise.json").write_text(json.dumps(info, indent=1) + "\n")
    if grid:
        # Sample from the exported f16 weights (upcast), i.e. exactly what ships.
        shipped = UNet2DModel.from_pretrained(out / "unet").float().eval().to(GRID_DEVICE)
        if conditional:
            y = torch.arange(10).repeat(8)
            x = sample(shipped, pipe.scheduler.config, len(y), labels=y,
                       guidance_scale=configs.guidance_of(info), steps=grid_steps, seed=0, eta=1.0)
        else:
            x = sample(shipped, pipe.scheduler.config, 80, steps=grid_steps, seed=0, eta=1.0)
        grid_png(x, out / "samples.png", nrow=10, scale=3)
    write_model_card(out)


def check_loads(out: Path) -> None:
    """The folder must load in diffusers' own pipelines unchanged, and sample."""
    for cls in (DDPMPipeline, DDIMPipeline):
        pipe = cls.from_pretrained(out, dtype=torch.float32)
        unet = pipe.unet
        if unet.config.num_class_embeds is None:
            img = pipe(batch_size=1, num_inference_steps=2, output_type="np").images
            assert img.shape[1:] == (unet.config.sample_size, unet.config.sample_size, unet.config.in_channels), img.shape
        else:
            # DDPMPipeline.__call__ cannot pass class labels (diffusers raises "class_labels should be
            # provided"), so run the loaded components with labels, as the app does.
            x = torch.randn(2, unet.config.in_channels, 32, 32)
            eps = unet(x, torch.tensor([999, 999]), class_labels=torch.tensor([0, NULL_CLASS])).sample
            pipe.scheduler.set_timesteps(2)
            pipe.scheduler.step(eps, pipe.scheduler.timesteps[0], x)
    print(f"{out}: loads in DDPMPipeline and DDIMPipeline")


def _fmt_metrics(m: dict) -> str:
    if not m:
        return "Not evaluated yet: run `python training/evaluate.py --model <name>`."
    lines = [f"Measured by `training/evaluate.py` on {m['n_samples']} samples, DDIM {m['ddim_steps']} steps "
             f"(eta {m.get('eta', 0)}), seed {m['seed']}, evaluated at train step {m.get('train_steps', '?')}.", "",
             "| metric | value |", "|---|---|"]
    for k, v in m["table"].items():
        lines.append(f"| {k} | {v} |")
    if m.get("notes"):
        lines += ["", m["notes"]]
    return "\n".join(lines)


def write_model_card(out: Path) -> None:
    info = json.loads((out / "stepwise.json").read_text())
    ucfg = json.loads((out / "unet" / "config.json").read_text())
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    name = info["name"]
    nparams = sum(t.numel() for t in UNet2DModel.from_pretrained(out / "unet").parameters())
    size_mb = (out / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size / 1e6
    tcfg = configs.TRAIN.get(info.get("config", name), {})
    cond = (f"Class-conditional: `class_labels` 0-9 are {', '.join(info['class_names'])}; label {info['null_class']} "
            f"is the null class for classifier-free guidance (labels dropped to it with probability "
            f"{tcfg.get('cond_drop')} in training). Shipped guidance scale: **{configs.guidance_of(info)}** "
            f"(eps = eps_null + w (eps_class - eps_null)).") if info["conditional"] else "Unconditional."
    status = ""
    if tcfg and info["train_steps"] < tcfg["max_steps"] and not info.get("device"):
        status = (f"\n**Early checkpoint**: step {info['train_steps']} of the config's {tcfg['max_steps']}; the loss is "
                  f"still falling. `training/run_all.sh` resumes training, then re-exports and re-evaluates.")
    card = f"""# `{name}`: a {ucfg['sample_size']}x{ucfg['sample_size']} DDPM for stepwise

![samples](samples.png)

`samples.png`: {_grid_note(info)}

## Data
{DATA_NOTES.get(name, '')}

## Architecture
diffusers `UNet2DModel`, {nparams/1e6:.2f} M parameters ({size_mb:.1f} MB as f16 safetensors):
{ucfg['in_channels']} channel(s) in and out, `block_out_channels` {tuple(ucfg['block_out_channels'])},
`layers_per_block` {ucfg['layers_per_block']}, `down_block_types` {tuple(ucfg['down_block_types'])},
`up_block_types` {tuple(ucfg['up_block_types'])}, `UNetMidBlock2D` with attention,
`norm_num_groups` {ucfg['norm_num_groups']}, `attention_head_dim` {ucfg['attention_head_dim']}.
{cond}

Scheduler: `DDPMScheduler`, 1000 training steps, linear betas 1e-4..0.02, {_prediction(out)}.
`stepwise.json` holds what the app needs beyond diffusers, and the run defaults the page and
`diffuse sample` start from (see "At the page's defaults").

## Training
`training/train.py --config {info.get('config', name)}`: AdamW lr {tcfg.get('lr')} ({tcfg.get('warmup')} warm-up steps, then
{_schedule(tcfg)}), batch {info.get('batch_size', tcfg.get('batch_size'))}, gradient clipping 1.0, EMA of the weights (decay
min({tcfg.get('ema_decay')}, (1+step)/(10+step))), MSE on the noise, {_precision(info)}{', random horizontal flips' if tcfg.get('hflip') else ''}.
Exported from the EMA weights at step **{info['train_steps']}** ({info['images_seen']:,} images seen).
{status}

{_compute(info)}

## Metrics
{_fmt_metrics(metrics)}
"""
    (out / "MODEL_CARD.md").write_text(card)


# ---------------------------------------------------------------- latent model (issue 6)

def _prediction(out: Path) -> str:
    cfg = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    return {"v_prediction": "v-prediction (`prediction_type` \"v_prediction\")"}.get(
        cfg.get("prediction_type", "epsilon"), "epsilon prediction")


def _schedule(tcfg: dict) -> str:
    if tcfg.get("lr_schedule") == "cosine":
        return (f"cosine decay to {tcfg.get('lr_min', 0)} over the run (its steps, or the wall-clock budget "
                f"of a time-bounded GPU run)")
    return "constant"


def _hours(meta) -> float:
    return round(meta["train_seconds"] / 3600, 2)


def export_latent(unet: UNet2DModel, meta: dict, out: Path, grid: bool = True, vae_run: Path | None = None,
                  grid_steps: int = 50) -> None:
    """`unet` trained on the latents of `vae_run` (default runs/<train.vae>) -> a pipeline folder with
    vae/, unet/, scheduler/ and the custom pipeline file."""
    from train_vae import load_vae
    tcfg = meta["train"]
    vae_run = vae_run or HERE / "runs" / tcfg["vae"]
    vck = torch.load(vae_run / "checkpoint.pt", map_location="cpu", weights_only=False)
    if vck["step"] != tcfg["vae_step"]:
        raise SystemExit(f"the UNet trained on latents of VAE step {tcfg['vae_step']} but {vae_run} is at step "
                         f"{vck['step']}: export needs the VAE the latents came from")
    vae_metrics = json.loads((vae_run / "vae.json").read_text())
    vae = load_vae(vae_run)
    vae.register_to_config(scaling_factor=float(tcfg["scaling_factor"]))
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("vae", "unet", "scheduler"):
        shutil.rmtree(out / sub, ignore_errors=True)
    vae.half().save_pretrained(out / "vae", safe_serialization=True)
    unet.half().save_pretrained(out / "unet", safe_serialization=True)
    configs.make_scheduler(meta["config"]).save_pretrained(out / "scheduler")
    shutil.copy(HERE / "pipeline_latent_ddpm.py", out / "pipeline_latent_ddpm.py")
    import diffusers
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": ["pipeline_latent_ddpm", "LatentDDPMPipeline"],
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "DDPMScheduler"],
        "unet": ["diffusers", "UNet2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }, indent=2) + "\n")
    conditional = configs.is_conditional(unet)
    base = configs.base_name(meta["config"])
    info = {
        "name": base, **_config_facts(meta), "kind": "latent", "conditional": conditional,
        "class_names": class_names_of(tcfg) if conditional else [],
        "null_class": NULL_CLASS if conditional else None,
        "defaults": dict(configs.PAGE_DEFAULTS[base], **({"guidance": tcfg["guidance_scale"]} if conditional else {})),
        "train_steps": meta["step"], "images_seen": meta["images_seen"], "train_hours": _hours(meta),
        "threads": meta.get("threads"),
        "scaling_factor": float(tcfg["scaling_factor"]),
        "vae": {k: vae_metrics[k] for k in ("config", "step", "images_seen", "train_hours", "latent_shape",
                                             "heldout_psnr_db", "heldout_psnr_median_db", "heldout_n",
                                             "bicubic_from_32_psnr_db", "decode_images_per_s", "threads")},
    }
    info["vae"]["train"] = vck["train"]
    if "centred_from" in vae_metrics:
        # Issue 36: the per-channel standardisation folded into vae/ (train_vae.centre_vae).
        info["vae"]["centred_from"] = vae_metrics["centred_from"]
    (out / "stepwise.json").write_text(json.dumps(info, indent=1) + "\n")
    if grid:
        y = torch.arange(10).repeat(8) if conditional else None
        x = sample_latent_images(out, 80, steps=grid_steps, seed=0, eta=1.0, labels=y,
                                 guidance_scale=configs.guidance_of(info))
        grid_png(x, out / "samples.png", nrow=10, scale=1)
    write_latent_card(out)


@torch.no_grad()
def sample_latent_images(folder: Path, n: int, steps: int, seed: int, eta: float, batch: int = 100,
                         labels: torch.Tensor | None = None, guidance_scale: float = 1.0,
                         device: str | None = None) -> torch.Tensor:
    """n images [-1, 1] from an exported latent folder's f16 weights (upcast): DDIM in latent space
    (class-conditional with guidance when `labels` are given), then vae.decode(latents / scaling_factor)."""
    dev = device or GRID_DEVICE
    unet = UNet2DModel.from_pretrained(folder / "unet").float().eval().to(dev)
    vae = AutoencoderKL.from_pretrained(folder / "vae").float().eval().to(dev)
    sched_cfg = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    z = sample(unet, sched_cfg, n, labels=labels, guidance_scale=guidance_scale, steps=steps, seed=seed, eta=eta,
               batch=batch)
    return torch.cat([vae.decode(z[i:i + batch].to(dev) / vae.config.scaling_factor).sample.cpu()
                      for i in range(0, n, batch)]).clamp(-1, 1)


def check_loads_latent(out: Path) -> None:
    AutoencoderKL.from_pretrained(out, subfolder="vae")
    UNet2DModel.from_pretrained(out, subfolder="unet")
    pipe = DiffusionPipeline.from_pretrained(out, trust_remote_code=True, dtype=torch.float32)
    assert type(pipe).__name__ == "LatentDDPMPipeline", type(pipe)
    if pipe.unet.config.num_class_embeds is not None:
        img = pipe(batch_size=2, num_inference_steps=2, output_type="np", class_labels=torch.tensor([0, 5]),
                   guidance_scale=2.0).images
        assert img.shape == (2, 64, 64, 3), img.shape
    img = pipe(batch_size=1, num_inference_steps=2, output_type="np").images
    assert img.shape == (1, 64, 64, 3), img.shape
    print(f"{out}: vae/ and unet/ load in diffusers; DiffusionPipeline.from_pretrained(trust_remote_code=True) samples")


def _latent_cond(info: dict, tcfg: dict) -> str:
    if not info["conditional"]:
        return "Unconditional."
    return (f"Class-conditional on the emoji.json category: `class_labels` 0-9 are {', '.join(info['class_names'])}; "
            f"label {info['null_class']} is the null class (labels dropped to it with probability "
            f"{tcfg.get('cond_drop')} in training); guidance **{configs.guidance_of(info)}**.")


def _latent_centring(info: dict) -> str:
    c = info["vae"].get("centred_from")
    if not c:
        return ("the scaled latents are not confined to [-1, 1] (per-channel means -1.3..-0.25, stds 0.28..1.31 with "
                "one global `scaling_factor`), so clipping the predicted x0 there, right for pixels, turns samples "
                "into texture.")
    fmt = lambda xs: " / ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    return ("latents are not confined to [-1, 1]. They are **centred per channel**: the VAE's raw latents (means "
            f"{fmt(c['channel_mean'])}, stds {fmt(c['channel_std'])}) are standardised by a per-channel affine map "
            "folded into `quant_conv` and `post_quant_conv` (`training/train_vae.py`, `centre_vae`), so `vae/` is a "
            "stock `AutoencoderKL` whose latents have zero mean and unit std per channel (`scaling_factor` ~1, no "
            "`shift_factor`), and decoding is unchanged.")


def write_latent_card(out: Path) -> None:
    info = json.loads((out / "stepwise.json").read_text())
    ucfg = json.loads((out / "unet" / "config.json").read_text())
    vcfg = json.loads((out / "vae" / "config.json").read_text())
    v = info["vae"]
    vt = v["train"]
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    n_unet = sum(t.numel() for t in UNet2DModel.from_pretrained(out / "unet").parameters())
    n_vae = sum(t.numel() for t in AutoencoderKL.from_pretrained(out / "vae").parameters())
    mb = lambda sub: (out / sub / "diffusion_pytorch_model.safetensors").stat().st_size / 1e6  # noqa: E731
    tcfg = configs.TRAIN.get(info.get("config", info["name"]), {})
    c, h = v["latent_shape"][0], v["latent_shape"][1]
    f = 64 // h
    status = ""
    if tcfg and info["train_steps"] < tcfg["max_steps"] and not info.get("device"):
        status = (f"\n**Early checkpoint**: UNet step {info['train_steps']} of the config's {tcfg['max_steps']}; the loss "
                  f"is still falling. `training/run_latent.sh` resumes training, then re-exports and re-evaluates.")
    card = f"""# `{info['name']}`: latent diffusion on 64x64 emoji for stepwise

![samples](samples.png)

`samples.png`: {_grid_note(info)}

## Data
{DATA_NOTES.get(info['name'], '')}

## Architecture
Two diffusers models, both built only from block types the stepwise engine implements:

- `vae/`: `AutoencoderKL`, {n_vae / 1e6:.2f} M parameters ({mb('vae'):.1f} MB f16): `block_out_channels`
  {tuple(vcfg['block_out_channels'])} (`DownEncoderBlock2D` / `UpDecoderBlock2D`, `layers_per_block`
  {vcfg['layers_per_block']}, mid block with attention), `norm_num_groups` {vcfg['norm_num_groups']},
  **{c} latent channels at {h}x{h}** (downsampling factor {f}: 64x64x3 = 12,288 values -> {c * h * h:,}),
  `scaling_factor` **{vcfg['scaling_factor']:.4f}** = 1 / std of sampled training latents.
- `unet/`: `UNet2DModel`, {n_unet / 1e6:.2f} M parameters ({mb('unet'):.1f} MB f16), {ucfg['in_channels']} channels in and
  out at {ucfg['sample_size']}x{ucfg['sample_size']}, `block_out_channels` {tuple(ucfg['block_out_channels'])},
  `layers_per_block` {ucfg['layers_per_block']}, `down_block_types` {tuple(ucfg['down_block_types'])},
  `up_block_types` {tuple(ucfg['up_block_types'])}, `norm_num_groups` {ucfg['norm_num_groups']},
  `attention_head_dim` {ucfg['attention_head_dim']}. {_latent_cond(info, tcfg)}
- `scheduler/`: `DDPMScheduler`, 1000 steps, linear betas 1e-4..0.02, epsilon prediction (on the scaled
  latents), **`clip_sample` false**: {_latent_centring(info)} The page's defaults: see "At the page's defaults".

Generation: latents ~ N(0, I) [B, {c}, {h}, {h}] -> denoise -> `image = vae.decode(latents / scaling_factor).sample`
(in [-1, 1]).

## Loading in diffusers
```python
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DModel
vae = AutoencoderKL.from_pretrained(path, subfolder="vae")
unet = UNet2DModel.from_pretrained(path, subfolder="unet")
pipe = DiffusionPipeline.from_pretrained(path, trust_remote_code=True)   # LatentDDPMPipeline
images = pipe(batch_size=4, num_inference_steps=50, eta=1.0).images
```
diffusers 0.42 has no stock pipeline whose components are exactly `vae`, `unet`, `scheduler`
(`LDMPipeline` calls its autoencoder `vqvae`; `DiTPipeline` wants a transformer), so
`model_index.json` names `pipeline_latent_ddpm.LatentDDPMPipeline`, the ~40-line file in this
folder (`LDMPipeline.__call__` with `vqvae` renamed `vae`); diffusers loads it from the folder when
given `trust_remote_code=True`. Without that flag, load the three components as above (or
`LDMPipeline(vqvae=vae, unet=unet, scheduler=scheduler)`, which divides by the same `scaling_factor`).

## Training
1. **Autoencoder** (`training/train_vae.py --config {v['config']}`): L1 reconstruction + KL weight
   {vt['kl_weight']} (Stable Diffusion's weight relative to summed losses; no perceptual or adversarial loss: no
   pretrained networks could be downloaded), AdamW lr {vt['lr']}, batch {vt['batch_size']}, random horizontal flips,
   fp32, {v['step']:,} steps ({v['images_seen']:,} images, {v['train_hours']} h).
   **Held-out reconstruction PSNR: {v['heldout_psnr_db']} dB** (mean over the {v['heldout_n']} held-out emoji, posterior
   mode, median {v['heldout_psnr_median_db']} dB; for scale, bicubic 2x upscaling of the 32x32 area-downsampled image scores
   {v['bicubic_from_32_psnr_db']} dB). Decoding: {v['decode_images_per_s']} images/s on one CPU thread (PyTorch).
2. **Latent UNet** (`training/train.py --config {info['name']}`): DDPM on
   `vae.encode(x).latent_dist.sample() * scaling_factor`, the posterior mean/std of every training image and its
   mirror image cached once (`train_vae.py --finalize`) and re-sampled every batch. AdamW lr {tcfg.get('lr')}
   ({tcfg.get('warmup')} warm-up steps), batch {info.get('batch_size', tcfg.get('batch_size'))}, gradient clipping 1.0, EMA (decay
   min({tcfg.get('ema_decay')}, (1+step)/(10+step))), MSE on the noise, fp32. Exported from the EMA weights at step
   **{info['train_steps']}** ({info['images_seen']:,} latents seen).
{status}

Compute: VAE {v['train_hours']} h + UNet {info['train_hours']} h wall-clock of one CPU thread each on a 2-core AMD
EPYC (AVX2) shared with other training lanes and a Rust compile, no GPU.

## Metrics
{_fmt_metrics(metrics)}
"""
    (out / "MODEL_CARD.md").write_text(card)


# ---------------------------------------------------------------- super-resolution (issue 7)

def export_sr(unet: UNet2DModel, meta: dict, out: Path, grid: bool = True, grid_steps: int = 50) -> None:
    from data import load, sr_condition, sr_lowres, to_model_range
    out.mkdir(parents=True, exist_ok=True)
    pipe = DDPMPipeline(unet=unet.half(), scheduler=configs.make_scheduler(meta["config"]))
    pipe.save_pretrained(out, safe_serialization=True)
    unet.float()
    info = {
        "name": configs.base_name(meta["config"]), **_config_facts(meta), "kind": "super-resolution",
        "conditional": False, "class_names": [], "null_class": None,
        "defaults": configs.PAGE_DEFAULTS[configs.base_name(meta["config"])],
        "scale": 2, "input_size": 32, "output_size": 64,
        "condition": "unet input = cat([x_t, F.interpolate(lowres32, scale_factor=2, mode='bicubic', "
                     "align_corners=False)], dim=1), lowres32 in [-1, 1]",
        "train_steps": meta["step"], "images_seen": meta["images_seen"], "train_hours": _hours(meta),
        "threads": meta.get("threads"),
        **_where(meta),
    }
    (out / "stepwise.json").write_text(json.dumps(info, indent=1) + "\n")
    if grid:
        shipped = UNet2DModel.from_pretrained(out / "unet").float().eval().to(GRID_DEVICE)
        truth = to_model_range(load("emoji64", "heldout").images[:20])
        low = sr_lowres(truth)
        cond = sr_condition(low)
        x = sample(shipped, pipe.scheduler.config, 20, steps=grid_steps, seed=0, eta=0.0, cond=cond,
                   consistent_with=low)
        rows = [torch.cat([a[i:i + 10] for a in (cond, x, truth)]) for i in (0, 10)]
        grid_png(torch.cat(rows), out / "samples.png", nrow=10, scale=1)
    write_sr_card(out)


def check_loads_sr(out: Path) -> None:
    from data import sr_condition
    for cls in (DDPMPipeline, DDIMPipeline):
        pipe = cls.from_pretrained(out, dtype=torch.float32)
        assert pipe.unet.config.in_channels == 6 and pipe.unet.config.out_channels == 3
        x = torch.randn(1, 3, 64, 64)
        lo = sr_condition(torch.zeros(1, 3, 32, 32))
        eps = pipe.unet(torch.cat([x, lo], 1), torch.tensor([999])).sample
        pipe.scheduler.set_timesteps(2)
        pipe.scheduler.step(eps, pipe.scheduler.timesteps[0], x)
    print(f"{out}: loads in DDPMPipeline and DDIMPipeline (UNet run with the low-resolution condition)")


def write_sr_card(out: Path) -> None:
    info = json.loads((out / "stepwise.json").read_text())
    ucfg = json.loads((out / "unet" / "config.json").read_text())
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    nparams = sum(t.numel() for t in UNet2DModel.from_pretrained(out / "unet").parameters())
    size_mb = (out / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size / 1e6
    tcfg = configs.TRAIN.get(info.get("config", info["name"]), {})
    status = ""
    if tcfg and info["train_steps"] < tcfg["max_steps"] and not info.get("device"):
        status = (f"\n**Early checkpoint**: step {info['train_steps']} of the config's {tcfg['max_steps']}; the loss is "
                  f"still falling. `training/run_latent.sh` resumes training, then re-exports and re-evaluates.")
    card = f"""# `{info['name']}`: 32x32 -> 64x64 super-resolution diffusion for stepwise

![samples](samples.png)

`samples.png`, for 20 held-out emoji (never trained on), in groups of three rows: the 32x32 input upscaled
bicubically (what the model is conditioned on), the model's 64x64 output (DDIM 50 steps, eta 0, seed 0, shipped
f16 weights, with the consistency step below), the real 64x64 image.

## Data
{DATA_NOTES.get(info['name'], '')}

## The conditioning contract
A diffusers `UNet2DModel` with {ucfg['in_channels']} input channels, as in `LDMSuperResolutionPipeline`
(but in pixel space): at every denoising step

```python
lowres_up = F.interpolate(lowres32, scale_factor=2, mode="bicubic", align_corners=False)  # [B,3,64,64], not clamped
eps = unet(torch.cat([x_t, lowres_up], dim=1), t).sample                                 # x_t: [B,3,64,64]
```

with `lowres32` the 32x32 RGB image in [-1, 1] (e.g. a sample of the `emoji` model). PyTorch's bicubic is
Keys' cubic convolution with A = -0.75, sampling at source coordinate (i + 0.5) / 2 - 0.5 for output pixel i
and clamping source indices to the image (edge pixels replicated); the result is not clamped. In training,
`lowres32 = F.interpolate(x64, size=32, mode="area")` (2x2 box average) of the 64x64 image
(`training/data.py`: `sr_lowres`, `sr_condition`). The output x_0 is the 64x64 image in [-1, 1].

**Consistency (on by default in the app and `diffuse upscale`).** Before every sampler step, the x_0
implied by the model's output is shifted, per 2x2 block, so that it averages down to `lowres32`
(`data.box_consistency`; the projection A+y + (I - A+A)x0 of DDNM, Wang et al. 2023, for A the box average),
and the step uses the matching epsilon. The model supplies the detail, the input fixes the colours: alone,
this small eps-prediction model drifts in overall brightness (see the metrics). `sample(..., consistent_with=lowres32)`
does it in Python; `diffuse upscale --no-consistency` turns it off.

## Architecture
`UNet2DModel`, {nparams / 1e6:.2f} M parameters ({size_mb:.1f} MB f16): {ucfg['in_channels']} channels in,
{ucfg['out_channels']} out, {ucfg['sample_size']}x{ucfg['sample_size']}, `block_out_channels` {tuple(ucfg['block_out_channels'])},
`layers_per_block` {ucfg['layers_per_block']}, `down_block_types` {tuple(ucfg['down_block_types'])},
`up_block_types` {tuple(ucfg['up_block_types'])}, `norm_num_groups` {ucfg['norm_num_groups']},
`attention_head_dim` {ucfg['attention_head_dim']}. Thin at 64x64 because a 64x64 level costs 4x a 32x32 one.

Scheduler: `DDPMScheduler`, 1000 steps, linear betas 1e-4..0.02, {_prediction(out)}. Sample with DDIM;
eta 0 (deterministic) is what the metrics use and what `stepwise.json` recommends.

## Loading in diffusers
`DDPMPipeline.from_pretrained(path)` / `DDIMPipeline.from_pretrained(path)` load it (`model_index.json` says
DDPMPipeline; diffusers has no pixel-space super-resolution pipeline: `LDMSuperResolutionPipeline` needs a
`vqvae`), but their `__call__` cannot pass the condition, so run the loaded `unet` and `scheduler` with the
concatenation above (`training/sampling.py`: `sample(unet, scheduler.config, n, cond=lowres_up)`).

## Training
`training/train.py --config {info.get('config', info['name'])}`: AdamW lr {tcfg.get('lr')} ({tcfg.get('warmup')} warm-up steps, then
{_schedule(tcfg)}), batch
{info.get('batch_size', tcfg.get('batch_size'))}, gradient clipping 1.0, EMA (decay min({tcfg.get('ema_decay')}, (1+step)/(10+step))), MSE on
{'v' if tcfg.get('prediction') == 'v_prediction' else 'the noise'}, random horizontal flips (of the pair), {_precision(info)}. Exported from the EMA weights at step
**{info['train_steps']}** ({info['images_seen']:,} images seen).
{status}

{_compute(info)}

## Metrics
{_fmt_metrics(metrics)}
"""
    (out / "MODEL_CARD.md").write_text(card)


SAMPLER_NAMES = {"ddim": "DDIM", "ddpm": "DDPM", "dpm++2m": "DPM-Solver++ 2M", "euler-a": "Euler ancestral"}


def describe_defaults(d: dict) -> str:
    """`stepwise.json`'s `defaults` in words."""
    parts = [f"{SAMPLER_NAMES[d['sampler']]}, {d['steps']} steps"]
    if d["sampler"] == "ddim":
        parts.append(f"η {d.get('eta', 0.0):g}")
    if "guidance" in d:
        parts.append(f"guidance {d['guidance']:g}")
    if d.get("use_clipped_model_output"):
        parts.append("ε rebuilt from the clipped x̂0 (`use_clipped_model_output`)")
    return ", ".join(parts)


def _grid_note(info: dict) -> str:
    d = info.get("defaults")
    if not d:
        return "from the shipped f16 weights, seed 0."
    return (f"at the page's defaults ({describe_defaults(d)}), from the shipped f16 weights through the Rust "
            f"engine, seed 0{', one column per class' if info['conditional'] else ''} "
            f"(`training/sampler_table.py --model {info['name']} --grid`).")


def defaults_section(out: Path) -> str:
    """The card's section on the run defaults and the sampler table they were chosen from."""
    info = json.loads((out / "stepwise.json").read_text())
    d = info.get("defaults")
    if not d:
        return ""
    lines = ["## At the page's defaults", "",
             f"The page and `diffuse sample` (without `--sampler/--steps/--eta/--guidance`) start from "
             f"`stepwise.json`'s `defaults`: **{describe_defaults(d)}**.", ""]
    note = configs.VIEWER_NOTES.get(info["name"])
    if note:
        lines += [note, ""]
    table = out / "sampler_table.json"
    if table.exists():
        from sampler_table import markdown
        res = json.loads(table.read_text())
        at = [r for r in res["rows"] if r["sampler"] == d["sampler"] and r["steps"] == d["steps"]
              and (d["sampler"] != "ddim" or abs(r["eta"] - d.get("eta", 0.0)) < 1e-6)
              and r["clip"] in ("shipped", "clip+eps" if d.get("use_clipped_model_output") else "clip", "noclip")]
        if at:
            r = at[0]
            acc = f", {r['accuracy']:.1%} recognised as the requested class" if "accuracy" in r else ""
            lines += [f"At these defaults: FID **{r['fid']:.2f}** (floor {res['floor_fid']:.2f}){acc}.", ""]
        lines += ["### Samplers, steps and x̂0 clipping", "",
                  markdown(res, f"training/sampler_table.py --model {info['name']}").rstrip(), ""]
    return "\n".join(lines)


def write_any_card(out: Path) -> None:
    kind = json.loads((out / "stepwise.json").read_text()).get("kind", "pixel")
    {"latent": write_latent_card, "super-resolution": write_sr_card}.get(kind, write_model_card)(out)
    section = defaults_section(out)
    if section:
        card = out / "MODEL_CARD.md"
        card.write_text(card.read_text().rstrip() + "\n\n" + section)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(configs.UNETS))
    p.add_argument("--check", type=Path, nargs="*", default=None,
                   help="only check that these exported folders load in DDPMPipeline/DDIMPipeline")
    p.add_argument("--ckpt", type=Path, default=None, help="default training/runs/<config>/checkpoint.pt")
    p.add_argument("--out", type=Path, default=None, help="default assets/models/<config>/")
    p.add_argument("--no-grid", action="store_true")
    p.add_argument("--grid-steps", type=int, default=50, help="DDIM steps of samples.png (the smoke run uses 2)")
    p.add_argument("--vae-run", type=Path, default=None, help="latent configs: default training/runs/<config's vae>")
    args = p.parse_args(argv)
    if args.check is not None:
        for d in args.check or [REPO / "assets" / "models" / n for n in ("fashion", "emoji", "emoji-latent",
                                                                          "emoji-sr")]:
            if not d.exists():
                print(f"{d}: not exported yet")
                continue
            kind = json.loads((d / "stepwise.json").read_text()).get("kind", "pixel")
            {"latent": check_loads_latent, "super-resolution": check_loads_sr}.get(kind, check_loads)(d)
        return
    if args.config is None:
        p.error("--config is required (or --check)")
    ckpt = args.ckpt or HERE / "runs" / args.config / "checkpoint.pt"
    out = args.out or REPO / "assets" / "models" / args.config
    unet, meta = load_ema_unet(ckpt)
    if meta["train"]["dataset"] == "emoji-latent":
        export_latent(unet, meta, out, grid=not args.no_grid, vae_run=args.vae_run, grid_steps=args.grid_steps)
        check_loads_latent(out)
    elif meta["train"].get("sr"):
        export_sr(unet, meta, out, grid=not args.no_grid, grid_steps=args.grid_steps)
        check_loads_sr(out)
    else:
        export(unet, meta, out, grid=not args.no_grid, grid_steps=args.grid_steps)
        check_loads(out)


if __name__ == "__main__":
    main()
