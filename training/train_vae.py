"""Train the AutoencoderKL of the latent model (issue 6) on emoji at 64x64, then measure it and
cache the latents the latent UNet trains on.

    python train_vae.py --config vae-f4               # train (resumes runs/vae-f4/checkpoint.pt)
    python train_vae.py --config vae-f4 --finalize    # PSNR, scaling_factor, latent cache

Training: L1 reconstruction + kl_weight * KL (configs.VAE_TRAIN), AdamW, random horizontal
flips, checkpoint every --save-every steps and on SIGTERM/SIGINT. Every --eval-every steps the
held-out PSNR of the posterior mode on a fixed 256-image held-out subset goes into loss.csv
(step, loss, l1, kl, lr, images/s, train_seconds, heldout_psnr) and a reconstruction grid into
samples/ (rows: held-out originals, reconstructions).

--finalize writes into the run folder:
- `vae.json`: held-out PSNR over all held-out emoji (mode of the posterior, decoded, clamped),
  the `scaling_factor` = 1 / std of sampled training latents (Stable Diffusion's recipe), the
  encode/decode speed;
- `latents.pt`: the posterior mean and std of every training image and of its mirror image,
  float16 [N, 2, C, h, w] each, which `train.py --config emoji-latent` samples from.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

import configs
from data import load, to_model_range
from sampling import grid_png
from train import save_atomic

HERE = Path(__file__).resolve().parent


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of [-1, 1] images, measured on [0, 1] (peak 1)."""
    mse = ((x.clamp(-1, 1) - y.clamp(-1, 1)) / 2).square().flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    out = []
    for i in range(0, len(x), batch):
        z = vae.encode(x[i:i + batch]).latent_dist.mode()
        out.append(vae.decode(z).sample.clamp(-1, 1))
    return torch.cat(out)


def load_vae(run: Path, centred: bool = True) -> AutoencoderKL:
    """The run's VAE; with `centred` and a `latent_stats.json` from --finalize for this checkpoint's
    step, with the per-channel centring folded in (`centre_vae`)."""
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    vae = AutoencoderKL(**ck["vae_config"])
    vae.load_state_dict(ck["model"])
    stats_path = run / "latent_stats.json"
    if centred and stats_path.exists():
        st = json.loads(stats_path.read_text())
        if st["vae_step"] != ck["step"]:
            raise SystemExit(f"{stats_path} is for VAE step {st['vae_step']} but the checkpoint is at step "
                             f"{ck['step']}: run train_vae.py --finalize again")
        centre_vae(vae, torch.tensor(st["channel_mean"]), torch.tensor(st["channel_std"]))
    return vae.eval()


@torch.no_grad()
def centre_vae(vae: AutoencoderKL, mean: torch.Tensor, std: torch.Tensor) -> AutoencoderKL:
    """Fold a per-channel standardisation of the latents into the VAE (issue 36): afterwards the
    encoder's posterior is that of z' = (z - mean) / std and the decoder takes z', i.e.

        quant_conv:      mean' = (mean_z - m) / s,  logvar' = logvar - 2 log s
        post_quant_conv: W' = W diag(s),  b' = b + W m

    so the exported AutoencoderKL (stock diffusers, `scaling_factor` ~1, no `shift_factor`) has
    centred, unit-variance latents, which the Rust engine's scalar scaling_factor / shift_factor
    could not express per channel. Decoding is unchanged: decode(z') == old decode(s z' + m)."""
    assert vae.config.use_quant_conv and vae.config.use_post_quant_conv
    lc = vae.config.latent_channels
    q, pq = vae.quant_conv, vae.post_quant_conv
    m, s = mean.to(q.weight), std.to(q.weight)
    q.weight[:lc] /= s[:, None, None, None]
    q.bias[:lc] = (q.bias[:lc] - m) / s
    q.bias[lc:] -= 2 * s.log()
    pq.bias += (pq.weight[:, :, 0, 0] @ m)
    pq.weight *= s[None, :, None, None]
    return vae


@torch.no_grad()
def finalize(run: Path, threads: int, subset: int | None = None, device: str = "cpu") -> dict:
    torch.set_num_threads(threads)
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    tr, ho = load("emoji64", "train"), load("emoji64", "heldout")
    if subset:
        tr, ho = tr.subset(subset), ho.subset(subset)
    dev = torch.device(device)
    stats = None
    (run / "latent_stats.json").unlink(missing_ok=True)
    if ck["train"].get("centre_latents"):
        # Per-channel mean / std of one sampled latent per training image (and its mirror image).
        raw = load_vae(run, centred=False).to(dev)
        g = torch.Generator().manual_seed(1)
        zs = []
        for i in range(0, len(tr), 256):
            xb = to_model_range(tr.images[i:i + 256]).to(dev)
            for xx in (xb, xb.flip(3)):
                d = raw.encode(xx).latent_dist
                zs.append((d.mean + d.std * torch.randn(d.mean.shape, generator=g).to(dev)).cpu())
        z = torch.cat(zs).transpose(0, 1).flatten(1)
        stats = {"vae_step": ck["step"], "channel_mean": z.mean(1).tolist(), "channel_std": z.std(1).tolist()}
        (run / "latent_stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    vae = load_vae(run).to(dev)
    xh = to_model_range(ho.images).to(dev)
    t0 = time.time()
    rec = reconstruct(vae, xh)
    rec_s = time.time() - t0
    p = psnr(rec, xh).cpu()
    xh = xh.cpu()
    # Bicubic 2x of the 32x32 area-downsampled image, for scale: what a 4x smaller image keeps.
    from data import sr_condition, sr_lowres
    p_bic = psnr(sr_condition(sr_lowres(xh)), xh)
    # Latent cache: posterior of every training image and of its mirror image.
    xt = to_model_range(tr.images)
    means, stds, samples = [], [], []
    g = torch.Generator().manual_seed(0)
    for i in range(0, len(xt), 64):
        xb = xt[i:i + 64].to(dev)
        mm, ss = [], []
        for flip in (False, True):
            d = vae.encode(xb.flip(3) if flip else xb).latent_dist
            mean_, std_ = d.mean.cpu(), d.std.cpu()
            mm.append(mean_)
            ss.append(std_)
            if not flip:
                samples.append(mean_ + std_ * torch.randn(mean_.shape, generator=g))
        means.append(torch.stack(mm, 1))
        stds.append(torch.stack(ss, 1))
    mean, std = torch.cat(means), torch.cat(stds)
    z = torch.cat(samples)
    scaling = 1.0 / z.flatten().std().item()
    torch.save({"mean": mean.half(), "std": std.half(), "scaling_factor": scaling, "vae_step": ck["step"]},
               run / "latents.pt")
    vae = vae.cpu()  # the decode speed is one CPU thread's, as before
    t0 = time.time()
    zz = torch.randn(64, *z.shape[1:])
    vae.decode(zz)
    dec_ips = 64 / (time.time() - t0)
    res = {
        "config": ck["config"], "step": ck["step"], "images_seen": ck["images_seen"],
        "train_hours": round(ck["train_seconds"] / 3600, 3),
        "latent_shape": list(z.shape[1:]),
        "heldout_psnr_db": round(p.mean().item(), 2), "heldout_psnr_median_db": round(p.median().item(), 2),
        "heldout_n": len(xh),
        "bicubic_from_32_psnr_db": round(p_bic.mean().item(), 2),
        "scaling_factor": scaling,
        "latent_mean": z.mean().item(), "latent_std": z.std().item(),
        "reconstruct_images_per_s": round(len(xh) / rec_s, 1), "decode_images_per_s": round(dec_ips, 1),
        "threads": threads,
        "latent_channel_mean": z.transpose(0, 1).flatten(1).mean(1).tolist(),
        "latent_channel_std": z.transpose(0, 1).flatten(1).std(1).tolist(),
    }
    if stats is not None:
        res["centred_from"] = {"channel_mean": stats["channel_mean"], "channel_std": stats["channel_std"]}
    (run / "vae.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return res


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, choices=sorted(configs.VAES))
    p.add_argument("--out", type=Path, default=None, help="run folder (default training/runs/<config>)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--subset", type=int, default=None)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--finalize", action="store_true", help="only measure, compute scaling_factor and cache latents")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16"], help="bf16 autocast (GPUs)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    out = args.out or HERE / "runs" / args.config
    if args.finalize:
        return finalize(out, args.threads, args.subset, args.device)
    tcfg = dict(configs.VAE_TRAIN[args.config])
    if args.max_steps is not None:
        tcfg["max_steps"] = args.max_steps
    if args.batch_size is not None:
        tcfg["batch_size"] = args.batch_size
    dev = torch.device(args.device)
    torch.set_num_threads(args.threads)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    data = load(tcfg["dataset"], "train")
    if args.subset:
        data = data.subset(args.subset)
    images = data.images
    ho = to_model_range(load(tcfg["dataset"], "heldout").images)
    ho = ho[torch.randperm(len(ho), generator=torch.Generator().manual_seed(0))[:256]].to(dev)

    torch.manual_seed(args.seed)
    vae = configs.make_vae(args.config)
    opt = torch.optim.AdamW(vae.parameters(), lr=tcfg["lr"], weight_decay=0.0)
    warmup = tcfg["warmup"]
    progress = {"time": 0.0}

    def lr_factor(s: int) -> float:  # as train.py: warm-up, then constant or cosine (steps or time)
        w = min(1.0, (s + 1) / warmup) if warmup else 1.0
        if tcfg.get("lr_schedule", "constant") != "cosine":
            return w
        frac = min(1.0, max(s / tcfg["max_steps"], progress["time"]))
        lo = tcfg.get("lr_min", 0.0) / tcfg["lr"]
        return w * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * frac)))
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    step, train_seconds, images_seen = 0, 0.0, 0
    gen = torch.Generator().manual_seed(args.seed)
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        vae.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        lr_sched.load_state_dict(ck["lr_sched"])
        step, train_seconds, images_seen = ck["step"], ck["train_seconds"], ck["images_seen"]
        gen.set_state(ck["gen"])
        print(f"resumed {ckpt_path} at step {step}")
    vae.to(dev)

    stop = {"flag": False}

    def on_signal(signum, _frame):
        stop["flag"] = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def checkpoint():
        save_atomic({"config": args.config, "vae_config": dict(configs.VAES[args.config]), "train": tcfg,
                     "model": {k: v.cpu() for k, v in vae.state_dict().items()}, "device": str(dev),
                     "mixed_precision": args.mixed_precision, "opt": opt.state_dict(), "lr_sched": lr_sched.state_dict(),
                     "step": step, "train_seconds": train_seconds, "images_seen": images_seen,
                     "gen": gen.get_state(), "threads": args.threads}, ckpt_path)
        (out / "state.json").write_text(json.dumps({
            "config": args.config, "step": step, "images_seen": images_seen,
            "train_hours": round(train_seconds / 3600, 3), "threads": args.threads, "train": tcfg}, indent=1))

    def evaluate() -> float:
        vae.eval()
        rec = reconstruct(vae, ho)
        vae.train()
        grid_png(torch.cat([ho[:10], rec[:10], ho[10:20], rec[10:20]]).cpu(),
                 out / "samples" / f"step_{step:06d}.png", nrow=10)
        return psnr(rec, ho).mean().item()

    log_path = out / "loss.csv"
    if not log_path.exists():
        log_path.write_text("step,loss,l1,kl,lr,images_per_s,train_seconds,heldout_psnr\n")
    t_start = t_log = time.time()
    start_step = step
    acc = {"loss": 0.0, "l1": 0.0, "kl": 0.0, "n": 0}
    b = tcfg["batch_size"]
    n_train = images.shape[0]
    n_pix = images[0].numel()
    vae.train()
    print(f"{args.config}: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M params, {n_train} images, "
          f"batch {b}, steps {step}->{tcfg['max_steps']}", flush=True)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.mixed_precision == "bf16")
    while step < tcfg["max_steps"] and not stop["flag"]:
        t0 = time.time()
        if args.max_minutes is not None:
            progress["time"] = (time.time() - t_start) / (args.max_minutes * 60)
        idx = torch.randint(n_train, (b,), generator=gen)
        x = to_model_range(images[idx])
        if tcfg["hflip"]:
            flip = torch.rand(b, generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        x = x.to(dev)
        with amp:
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(dev)
            rec = vae.decode(z).sample
        l1 = (rec.float() - x).abs().mean()
        kl = post.kl().float().mean() / n_pix
        loss = l1 + tcfg["kl_weight"] * kl
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        images_seen += b
        train_seconds += time.time() - t0
        for k, v in (("loss", loss), ("l1", l1), ("kl", kl)):
            acc[k] = acc[k] + v.detach()  # summed on the device; read at log time (no per-step sync)
        acc["n"] += 1
        if step % args.log_every == 0 or step % args.eval_every == 0:
            acc.update({k: float(acc[k]) for k in ("loss", "l1", "kl")})
            if not math.isfinite(acc["loss"]):
                raise RuntimeError(f"loss is {acc['loss'] / acc['n']} at step {step}")
            p = evaluate() if step % args.eval_every == 0 else float("nan")
            dt = time.time() - t_log
            n = acc["n"]
            with log_path.open("a") as f:
                f.write(f"{step},{acc['loss'] / n:.5f},{acc['l1'] / n:.5f},{acc['kl'] / n:.4f},"
                        f"{lr_sched.get_last_lr()[0]:.2e},{n * b / dt:.1f},{train_seconds:.0f},{p:.2f}\n")
            print(f"step {step} loss {acc['loss'] / n:.4f} kl {acc['kl'] / n:.3f} {n * b / dt:.1f} img/s"
                  + (f" held-out PSNR {p:.2f} dB" if p == p else ""), flush=True)
            t_log, acc = time.time(), {"loss": 0.0, "l1": 0.0, "kl": 0.0, "n": 0}
        if step % args.save_every == 0:
            checkpoint()
        if args.max_minutes is not None and time.time() - t_start > args.max_minutes * 60:
            break
    if step != start_step:  # an unchanged checkpoint keeps its mtime (run_latent.sh compares it with latents.pt)
        checkpoint()
    print(f"stopped at step {step} ({train_seconds / 3600:.2f} h of training)")
    return step


if __name__ == "__main__":
    main()
