"""Export a run's EMA weights as a diffusers pipeline folder, f16, with a model card.

    python export.py --config fashion        # runs/fashion/checkpoint.pt -> assets/models/fashion/

Writes `model_index.json` (DDPMPipeline), `unet/config.json`,
`unet/diffusion_pytorch_model.safetensors` (f16), `scheduler/scheduler_config.json`
(DDPMScheduler), `stepwise.json` (what the app needs beyond diffusers: guidance scale, class
names, null class), `samples.png` and `MODEL_CARD.md`. The folder is then checked by loading
it with diffusers' DDPMPipeline and DDIMPipeline and sampling two steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import DDIMPipeline, DDPMPipeline, UNet2DModel

import configs
from data import FASHION_CLASSES, NULL_CLASS
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
    "tiny": "A small subset of Fashion-MNIST (MIT), for the quick parity test only.",
}


def load_ema_unet(ckpt_path: Path) -> tuple[UNet2DModel, dict]:
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    unet = UNet2DModel(**ck["unet_config"])
    unet.load_state_dict(ck["ema"])
    meta = {k: ck[k] for k in ("config", "train", "step", "train_seconds", "images_seen", "threads", "world_size")}
    return unet.eval(), meta


def export(unet: UNet2DModel, meta: dict, out: Path, grid: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    name = meta["config"]
    tcfg = meta["train"]
    pipe = DDPMPipeline(unet=unet.half(), scheduler=configs.make_scheduler())
    pipe.save_pretrained(out, safe_serialization=True)
    unet.float()
    conditional = configs.is_conditional(unet)
    info = {
        "name": name,
        "conditional": conditional,
        "class_names": FASHION_CLASSES if conditional else [],
        "null_class": NULL_CLASS if conditional else None,
        "guidance_scale": tcfg["guidance_scale"] if conditional else 1.0,
        "default_steps": 50,
        # Stochastic DDIM (eta 1, DDPM-like) gives clean backgrounds; eta 0 leaves speckle
        # noise on these small, briefly trained models (see training/README.md).
        "default_eta": 1.0,
        "train_steps": meta["step"],
        "images_seen": meta["images_seen"],
        "train_hours": round(meta["train_seconds"] / 3600, 2),
        "threads": meta.get("threads"),
    }
    (out / "stepwise.json").write_text(json.dumps(info, indent=1) + "\n")
    if grid:
        # Sample from the exported f16 weights (upcast), i.e. exactly what ships.
        shipped = UNet2DModel.from_pretrained(out / "unet").float().eval()
        if conditional:
            y = torch.arange(10).repeat(8)
            x = sample(shipped, pipe.scheduler.config, len(y), labels=y,
                       guidance_scale=info["guidance_scale"], steps=50, seed=0, eta=1.0)
        else:
            x = sample(shipped, pipe.scheduler.config, 80, steps=50, seed=0, eta=1.0)
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
    tcfg = configs.TRAIN.get(name, {})
    cond = (f"Class-conditional: `class_labels` 0-9 are {', '.join(info['class_names'])}; label {info['null_class']} "
            f"is the null class for classifier-free guidance (labels dropped to it with probability "
            f"{tcfg.get('cond_drop')} in training). Shipped guidance scale: **{info['guidance_scale']}** "
            f"(eps = eps_null + w (eps_class - eps_null)).") if info["conditional"] else "Unconditional."
    status = ""
    if tcfg and info["train_steps"] < tcfg["max_steps"]:
        status = (f"\n**Early checkpoint**: step {info['train_steps']} of the config's {tcfg['max_steps']}; the loss is "
                  f"still falling. `training/run_all.sh` resumes training, then re-exports and re-evaluates.")
    card = f"""# `{name}`: a {ucfg['sample_size']}x{ucfg['sample_size']} DDPM for stepwise

![samples](samples.png)

`samples.png`: 50 DDIM steps (eta 1) from the shipped f16 weights, seed 0{', one column per class at the shipped guidance scale' if info['conditional'] else ''}.

## Data
{DATA_NOTES.get(name, '')}

## Architecture
diffusers `UNet2DModel`, {nparams/1e6:.2f} M parameters ({size_mb:.1f} MB as f16 safetensors):
{ucfg['in_channels']} channel(s) in and out, `block_out_channels` {tuple(ucfg['block_out_channels'])},
`layers_per_block` {ucfg['layers_per_block']}, `down_block_types` {tuple(ucfg['down_block_types'])},
`up_block_types` {tuple(ucfg['up_block_types'])}, `UNetMidBlock2D` with attention,
`norm_num_groups` {ucfg['norm_num_groups']}, `attention_head_dim` {ucfg['attention_head_dim']}.
{cond}

Scheduler: `DDPMScheduler`, 1000 training steps, linear betas 1e-4..0.02, epsilon prediction.
Sample with DDIM (50 steps, eta 1 recommended: eta 0 leaves speckle noise in the background) or DDPM.
`stepwise.json` holds what the app needs beyond diffusers.

## Training
`training/train.py --config {name}`: AdamW lr {tcfg.get('lr')} ({tcfg.get('warmup')} warm-up steps, then
constant), batch {tcfg.get('batch_size')}, gradient clipping 1.0, EMA of the weights (decay
min({tcfg.get('ema_decay')}, (1+step)/(10+step))), MSE on the noise, fp32{', random horizontal flips' if tcfg.get('hflip') else ''}.
Exported from the EMA weights at step **{info['train_steps']}** ({info['images_seen']:,} images seen).
{status}

Compute: {info['train_hours']} wall-clock hours of training on {info['threads']} CPU thread(s) of a 2-core AMD EPYC
(AVX2) shared with a Rust compile and the other model's training, no GPU.

## Metrics
{_fmt_metrics(metrics)}
"""
    (out / "MODEL_CARD.md").write_text(card)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(configs.UNETS))
    p.add_argument("--check", type=Path, nargs="*", default=None,
                   help="only check that these exported folders load in DDPMPipeline/DDIMPipeline")
    p.add_argument("--ckpt", type=Path, default=None, help="default training/runs/<config>/checkpoint.pt")
    p.add_argument("--out", type=Path, default=None, help="default assets/models/<config>/")
    p.add_argument("--no-grid", action="store_true")
    args = p.parse_args(argv)
    if args.check is not None:
        for d in args.check or [REPO / "assets" / "models" / n for n in ("fashion", "emoji")]:
            check_loads(d)
        return
    if args.config is None:
        p.error("--config is required (or --check)")
    ckpt = args.ckpt or HERE / "runs" / args.config / "checkpoint.pt"
    out = args.out or REPO / "assets" / "models" / args.config
    unet, meta = load_ema_unet(ckpt)
    export(unet, meta, out, grid=not args.no_grid)
    check_loads(out)


if __name__ == "__main__":
    main()
