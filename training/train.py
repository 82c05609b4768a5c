"""Train a diffusers UNet2DModel with DDPM (epsilon prediction), EMA, checkpoints and resume.

    python train.py --config fashion                  # CPU, 1 thread, runs/fashion/
    accelerate launch train.py --config emoji         # the same script on several GPUs

Re-running the same command resumes from `<out>/checkpoint.pt` (model, EMA, optimizer, RNG,
step and compute used) and continues to `--max-steps`. SIGTERM/SIGINT save a checkpoint
before exiting. Outputs in `<out>/`: `loss.csv` (step, loss, lr, images/s, seconds),
`samples/step_XXXXXX.png` (EMA sample grids), `checkpoint.pt`, `state.json`.

Class-conditional configs (`num_class_embeds` = 11) train with label dropout: with
probability `cond_drop` the label is replaced by the null class 10, which is what
classifier-free guidance conditions on at sampling time.

Two more kinds of x0 (issues 6 and 7), same loop otherwise:
- latent (`dataset` "emoji-latent"): x0 = (mean + std * noise) * scaling_factor, drawn each
  batch from the posterior cached by `train_vae.py --finalize` (runs/<vae>/latents.pt; the
  mirrored image's posterior for flipped samples); sample grids are decoded with that VAE;
- super-resolution (`sr`): x0 is the 64x64 image and the UNet input is
  cat([x_t, sr_condition(sr_lowres(x0))]) (data.py); grids show bicubic | model | truth rows
  for held-out emoji.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator

import configs
from data import NULL_CLASS, load, sr_condition, sr_lowres, to_model_range
from sampling import grid_png, sample

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, choices=sorted(configs.UNETS))
    p.add_argument("--out", type=Path, default=None, help="run folder (default training/runs/<config>)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="per process")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest while another job uses the other core)")
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"],
                   help="bf16 is for GPUs: on this AVX2 CPU it is >100x slower")
    p.add_argument("--subset", type=int, default=None, help="train on the first N images only")
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--sample-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    p.add_argument("--vae-run", type=Path, default=None,
                   help="latent configs: the VAE run folder with latents.pt (default training/runs/<config's vae>)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from an exported folder's unet/ weights (model and EMA) instead of scratch")
    return p.parse_args(argv)


class Ema:
    """Exponential moving average of the weights, with the usual warm-up
    decay = min(max_decay, (1 + step) / (10 + step)) so early averages are not stuck at init."""

    def __init__(self, model: torch.nn.Module, max_decay: float):
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)
        self.max_decay = max_decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int):
        decay = min(self.max_decay, (1 + step) / (10 + step))
        ema_p = list(self.model.parameters())
        src = [p.detach().float() for p in model.parameters()]
        torch._foreach_lerp_(ema_p, src, 1.0 - decay)


def save_atomic(obj, path: Path):
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(argv)
    tcfg = dict(configs.TRAIN[args.config])
    for k in ("max_steps", "batch_size", "lr"):
        if getattr(args, k) is not None:
            tcfg[k] = getattr(args, k)
    out = args.out or HERE / "runs" / args.config
    torch.set_num_threads(args.threads)

    acc = Accelerator(mixed_precision=args.mixed_precision)
    main_proc = acc.is_main_process
    if main_proc:
        (out / "samples").mkdir(parents=True, exist_ok=True)
    dev = acc.device
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    if dev.type == "cuda":  # fixed shapes: let cuDNN pick its kernels; TF32 for what autocast leaves in f32
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    latent = tcfg["dataset"] == "emoji-latent"
    sr = tcfg.get("sr", False)
    if latent:
        vae_run = args.vae_run or HERE / "runs" / tcfg["vae"]
        cache = torch.load(vae_run / "latents.pt", map_location="cpu")
        lat_mean, lat_std = cache["mean"], cache["std"]  # f16 [N, 2 (mirror), C, h, w]
        tcfg.update(scaling_factor=cache["scaling_factor"], vae_step=cache["vae_step"])
        if args.subset:
            lat_mean, lat_std = lat_mean[:args.subset], lat_std[:args.subset]
        labels = None
        if configs.is_conditional(args.config):
            # The cache holds the training split in data.load's order: its labels line up.
            labels = load("emoji64", "train").labels[:lat_mean.shape[0]]
        images = lat_mean
    else:
        data = load(tcfg["dataset"], "train")
        if args.subset:
            data = data.subset(args.subset)
        images, labels = data.images, data.labels
    conditional = configs.is_conditional(args.config)

    torch.manual_seed(args.seed)
    unet = configs.make_unet(args.config)
    if args.init_from is not None:
        from diffusers import UNet2DModel
        init = UNet2DModel.from_pretrained(args.init_from / "unet")
        unet.load_state_dict({k: v.float() for k, v in init.state_dict().items()})
    sched = configs.make_scheduler(args.config)
    ema = Ema(unet, tcfg["ema_decay"])
    opt = torch.optim.AdamW(unet.parameters(), lr=tcfg["lr"], weight_decay=0.0)
    warmup = tcfg["warmup"]
    # progress["time"]: the fraction of --max-minutes used so far (0 without it); the cosine follows
    # whichever of steps and time is further along (see configs._scaled).
    progress = {"time": 0.0}

    def lr_factor(s: int) -> float:
        w = min(1.0, (s + 1) / warmup) if warmup else 1.0
        if tcfg.get("lr_schedule", "constant") != "cosine":
            return w
        frac = min(1.0, max(s / tcfg["max_steps"], progress["time"]))
        lo = tcfg.get("lr_min", 0.0) / tcfg["lr"]
        return w * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * frac)))
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    prediction = tcfg.get("prediction", "epsilon")

    step, train_seconds, images_seen, wall_before = 0, 0.0, 0, 0.0
    gen = torch.Generator().manual_seed(args.seed * 1000 + acc.process_index)
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        unet.load_state_dict(ck["model"])
        ema.model.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        lr_sched.load_state_dict(ck["lr_sched"])
        step, train_seconds, images_seen = ck["step"], ck["train_seconds"], ck["images_seen"]
        wall_before = ck.get("wall_seconds", 0.0)
        if latent and ck["train"].get("vae_step") != tcfg["vae_step"]:
            raise SystemExit(f"{ckpt_path} trained on latents of VAE step {ck['train'].get('vae_step')}, "
                             f"but {vae_run}/latents.pt is from step {tcfg['vae_step']}: move one of them away")
        gen.set_state(ck["gen"][acc.process_index] if acc.process_index < len(ck["gen"]) else ck["gen"][0])
        acc.print(f"resumed {ckpt_path} at step {step}")

    unet, opt = acc.prepare(unet, opt)
    ema.model.to(dev)

    stop = {"flag": False}

    def on_signal(signum, _frame):
        stop["flag"] = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def checkpoint():
        if not main_proc:
            return
        save_atomic({
            "config": args.config, "unet_config": dict(configs.UNETS[args.config]), "train": tcfg,
            "model": acc.unwrap_model(unet).state_dict(), "ema": ema.model.state_dict(),
            "opt": opt.state_dict(), "lr_sched": lr_sched.state_dict(),
            "step": step, "train_seconds": train_seconds, "images_seen": images_seen,
            "gen": [gen.get_state()], "threads": args.threads,
            "wall_seconds": wall_before + time.time() - t_start, "world_size": acc.num_processes,
            "device": device_name, "mixed_precision": args.mixed_precision,
            "init_from": str(args.init_from) if args.init_from else None,
        }, ckpt_path)
        (out / "state.json").write_text(json.dumps({
            "config": args.config, "step": step, "images_seen": images_seen,
            "train_hours": round(train_seconds / 3600, 3), "threads": args.threads,
            "world_size": acc.num_processes, "device": device_name,
            "mixed_precision": args.mixed_precision, "train": tcfg}, indent=1))

    def sample_grid():
        if not main_proc:
            return
        n_cls = 10
        if latent:
            from train_vae import load_vae
            y = torch.arange(n_cls).repeat(4) if conditional else None
            z = sample(ema.model, sched.config, 40, labels=y, guidance_scale=tcfg["guidance_scale"],
                       steps=20, seed=0, eta=1.0)
            with torch.no_grad():
                x = load_vae(vae_run).to(z.device).decode(z / tcfg["scaling_factor"]).sample
        elif sr:
            truth = to_model_range(load(tcfg["dataset"], "heldout").images[:10])
            cond = sr_condition(sr_lowres(truth))
            x = sample(ema.model, sched.config, 10, steps=20, seed=0, eta=1.0, cond=cond)
            x = torch.cat([cond, x, truth])
        elif conditional:
            y = torch.arange(n_cls).repeat(4)
            x = sample(ema.model, sched.config, len(y), labels=y, guidance_scale=tcfg["guidance_scale"],
                       steps=20, seed=0, eta=1.0)
        else:
            x = sample(ema.model, sched.config, 40, steps=20, seed=0, eta=1.0)
        grid_png(x, out / "samples" / f"step_{step:06d}.png", nrow=n_cls)

    log_path = out / "loss.csv"
    if main_proc and not log_path.exists():
        log_path.write_text("step,loss,lr,images_per_s,train_seconds\n")
    t_start = time.time()
    t_log, loss_acc, n_acc = time.time(), 0.0, 0
    b = tcfg["batch_size"]
    n_train = images.shape[0]
    unet.train()
    acc.print(f"{args.config}: {sum(p.numel() for p in unet.parameters())/1e6:.2f} M params, "
              f"{n_train} images, batch {b} x {acc.num_processes}, steps {step}->{tcfg['max_steps']}")
    # On a GPU the noise and timesteps are drawn there (a host randn of a 512-image batch and its copy
    # cost more than the step of a small UNet); on the CPU they come from `gen` as before, so CPU runs
    # are unchanged and reproducible.
    gen_dev = torch.Generator(device=dev).manual_seed(args.seed * 1000 + 7 + acc.process_index) \
        if dev.type == "cuda" else None
    while step < tcfg["max_steps"] and not stop["flag"]:
        t0 = time.time()
        if args.max_minutes is not None:
            progress["time"] = (wall_before + time.time() - t_start) / (args.max_minutes * 60)
        idx = torch.randint(n_train, (b,), generator=gen)
        if latent:
            k = (torch.rand(b, generator=gen) < 0.5).long() if tcfg["hflip"] else torch.zeros(b, dtype=torch.long)
            m, s = lat_mean[idx, k].float(), lat_std[idx, k].float()
            x0 = (m + s * torch.randn(m.shape, generator=gen)) * tcfg["scaling_factor"]
        else:
            x0 = to_model_range(images[idx])
            if tcfg["hflip"]:
                flip = torch.rand(b, generator=gen) < 0.5
                x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
        x0 = x0.to(dev, non_blocking=True)
        cond = sr_condition(sr_lowres(x0)) if sr else None
        if gen_dev is None:
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen)
            noise, t = noise.to(dev), t.to(dev)
        else:
            noise = torch.randn(x0.shape, generator=gen_dev, device=dev)
            t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen_dev, device=dev)
        y = None
        if conditional:
            y = labels[idx].clone()
            y[torch.rand(b, generator=gen) < tcfg["cond_drop"]] = NULL_CLASS
            y = y.to(dev)
        xt = sched.add_noise(x0, noise, t)
        # epsilon: the model predicts the noise; v_prediction: v = sqrt(abar) noise - sqrt(1 - abar) x0
        # (Salimans & Ho 2022; diffusers' get_velocity), what the scheduler's prediction_type expects.
        target = noise if prediction == "epsilon" else sched.get_velocity(x0, noise, t)
        if cond is not None:
            xt = torch.cat([xt, cond], 1)
        with acc.autocast():
            pred = unet(xt, t, class_labels=y).sample
        loss = F.mse_loss(pred.float(), target)
        acc.backward(loss)
        acc.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        opt.zero_grad(set_to_none=True)
        ema.update(acc.unwrap_model(unet), step)
        step += 1
        images_seen += b * acc.num_processes
        train_seconds += time.time() - t0
        loss_acc = loss_acc + loss.detach()  # no .item() per step: on a GPU it would wait for the step
        n_acc += 1
        if step % args.log_every == 0 and main_proc:
            loss_acc = float(loss_acc)
            if not math.isfinite(loss_acc):
                raise RuntimeError(f"loss is {loss_acc / n_acc} at step {step}")
            dt = time.time() - t_log
            with log_path.open("a") as f:
                f.write(f"{step},{loss_acc / n_acc:.5f},{lr_sched.get_last_lr()[0]:.2e},"
                        f"{n_acc * b * acc.num_processes / dt:.1f},{train_seconds:.0f}\n")
            print(f"step {step} loss {loss_acc / n_acc:.4f} {n_acc * b / dt:.1f} img/s", flush=True)
            t_log, loss_acc, n_acc = time.time(), 0.0, 0
        if step % args.save_every == 0:
            checkpoint()
        if step % args.sample_every == 0:
            sample_grid()
            t_log = time.time()
        if args.max_minutes is not None and time.time() - t_start > args.max_minutes * 60:
            break
        if step == 20 and dev.type == "cuda" and main_proc:
            print(f"cuda memory after 20 steps: {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB", flush=True)
    checkpoint()
    if step >= tcfg["max_steps"] and args.sample_every <= tcfg["max_steps"]:  # (not in the smoke run)
        sample_grid()
    acc.print(f"stopped at step {step} ({train_seconds / 3600:.2f} h of training)")
    return step


if __name__ == "__main__":
    main()
