"""Measure sample quality of an exported model folder.

    python evaluate.py --model fashion          # assets/models/fashion, 1000 samples
    python evaluate.py --model emoji --n 1000

Feature space: a small CNN classifier trained once per dataset on the real training set
(fashion: the 10 classes; emoji: the 10 emoji.json categories) and committed as
training/classifier/<dataset>.safetensors (+ .json with its held-out accuracy). Its 128-d
penultimate activations replace Inception's for FID, which is meaningless at 32x32 grey.

Reported (and written to <model>/metrics.json, the model card and the README table):
- FID(generated, held-out) over n generated samples (DDIM 25 steps, eta 1, seed 0 by default);
- the floor: FID(n real training images, held-out), same n, so the sample-size bias matches;
- fashion: classifier accuracy on class-conditional samples (n/10 per class) at the
  shipped guidance scale, beside the classifier's accuracy on real held-out images;
- emoji: nearest-neighbour RMS pixel distance (in [0,1]) of each sample to the training
  set, against the same for held-out images; a model that memorises has sample distances
  far below the held-out ones.
- emoji-latent (64x64): the emoji metrics on its samples downsampled to 32x32 with Lanczos (how
  the 32x32 dataset was made from the same 64x64 PNGs, so FID is comparable with `emoji`'s), plus
  the VAE's held-out reconstruction PSNR (from train_vae.py --finalize);
- emoji-sr: PSNR and SSIM against the real 64x64 held-out images, of the model's output and of
  bicubic upscaling of the same 32x32 input, on the first n held-out emoji (all 708 by default).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import UNet2DModel
from safetensors.torch import load_file, save_file

from configs import guidance_of
from data import load, to_model_range
from sampling import sample

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLS_DIR = HERE / "classifier"
DATASET_OF = {"fashion": "fashion", "emoji": "emoji", "tiny": "fashion", "emoji-latent": "emoji"}


class Classifier(nn.Module):
    """~0.1 M parameters: 3 conv stages with BatchNorm, global pooling, 128-d features."""

    def __init__(self, in_ch: int, n_cls: int = 10):
        super().__init__()

        def stage(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Sequential(stage(in_ch, 16), stage(16, 32), stage(32, 64),
                                  nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(128, n_cls)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def train_classifier(dataset: str, epochs: int, seed: int = 0, name: str | None = None,
                     balanced: bool = False, shift: int = 0) -> Classifier:
    """Train and save `classifier/<name>.safetensors` (+ .json). `balanced`: batches drawn with
    every class equally likely (the emoji categories are 60 % People & Body); `shift`: random
    translations by up to that many pixels (edges replicated), on top of the emoji flips."""
    name = name or dataset
    tr, ho = load(dataset, "train"), load(dataset, "heldout")
    torch.manual_seed(seed)
    m = Classifier(tr.images.shape[1])
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=1e-4)
    n, b = len(tr), 128
    total = epochs * (n // b)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=total)
    g = torch.Generator().manual_seed(seed)
    n_cls = len(tr.class_names)
    w = (1.0 / torch.bincount(tr.labels, minlength=n_cls).clamp(min=1).float())[tr.labels]
    m.train()
    t0 = time.time()
    for ep in range(epochs):
        perm = torch.randperm(n, generator=g)
        if balanced:
            perm = torch.multinomial(w, n, replacement=True, generator=g)
        for i in range(n // b):
            idx = perm[i * b:(i + 1) * b]
            x = to_model_range(tr.images[idx])
            if dataset == "emoji":
                flip = torch.rand(b, generator=g) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
            if shift:
                x = F.pad(x, (shift,) * 4, mode="replicate")
                dx, dy = torch.randint(0, 2 * shift + 1, (2,), generator=g).tolist()
                x = x[..., dy:dy + tr.images.shape[2], dx:dx + tr.images.shape[3]]
            loss = F.cross_entropy(m(x), tr.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"classifier {name} epoch {ep + 1}/{epochs} loss {loss.item():.3f} ({time.time() - t0:.0f} s)",
              flush=True)
    m.eval()
    acc = accuracy(m, to_model_range(ho.images), ho.labels)
    per = per_class_accuracy(m, to_model_range(ho.images), ho.labels, n_cls)
    CLS_DIR.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, CLS_DIR / f"{name}.safetensors")
    meta = {"dataset": dataset, "epochs": epochs, "seed": seed, "heldout_accuracy": round(acc, 4),
            "train_seconds": round(time.time() - t0), "classes": tr.class_names}
    if balanced or shift:
        meta.update(balanced=balanced, shift=shift,
                    heldout_per_class={c: round(a, 3) for c, a in zip(tr.class_names, per)},
                    heldout_balanced_accuracy=round(sum(per) / n_cls, 4))
    (CLS_DIR / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"classifier {name}: held-out accuracy {acc:.4f}, per class {[round(a, 3) for a in per]}")
    return m


@torch.no_grad()
def per_class_accuracy(m, x, y, n_cls: int) -> list[float]:
    """Recall of each class (nan for a class absent from y)."""
    p = batched(m, x).argmax(1)
    return [(p[y == c] == c).float().mean().item() for c in range(n_cls)]


# The classifiers: name -> how train_classifier makes it. `emoji` gives the FID features of every
# emoji model (kept as it is so FIDs stay comparable); `emoji-category` scores category-conditional
# samples (issue 36: class-balanced batches and shifts, because `emoji` recognises People & Body
# 99 % of the time and Activities never).
CLASSIFIERS = {
    "fashion": dict(dataset="fashion", epochs=3),
    "emoji": dict(dataset="emoji", epochs=8),
    "emoji-category": dict(dataset="emoji", epochs=int(os.environ.get("STEPWISE_CLS_EPOCHS", 20)),
                           balanced=True, shift=2),
}


def get_classifier(name: str) -> tuple[Classifier, dict]:
    path = CLS_DIR / f"{name}.safetensors"
    if not path.exists():
        train_classifier(name=name, **CLASSIFIERS[name])
    meta = json.loads((CLS_DIR / f"{name}.json").read_text())
    m = Classifier(1 if meta["dataset"] == "fashion" else 3)
    m.load_state_dict(load_file(path))
    return m.eval(), meta


def proportional_labels(train_labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n labels with the training split's class frequencies (largest remainder), shuffled by seed."""
    freq = torch.bincount(train_labels).double() / len(train_labels)
    k = (freq * n).floor().long()
    rest = (freq * n - k).argsort(descending=True)[: n - int(k.sum())]
    k[rest] += 1
    y = torch.arange(len(k)).repeat_interleave(k)
    return y[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]


@torch.no_grad()
def batched(fn, x, b=500):
    return torch.cat([fn(x[i:i + b]) for i in range(0, len(x), b)])


@torch.no_grad()
def accuracy(m, x, y) -> float:
    return (batched(m, x).argmax(1) == y).float().mean().item()


def fid(f1: torch.Tensor, f2) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017):
    |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), with Tr (S1 S2)^1/2 computed as the sum of
    square roots of the eigenvalues of S1^1/2 S2 S1^1/2 (symmetric, so eigh is exact)."""
    f1 = f1.double()
    mu1, s1 = f1.mean(0), torch.cov(f1.T)
    if isinstance(f2, dict):  # precomputed {"mean", "cov"} (classifier/<dataset>.heldout.safetensors)
        mu2, s2 = f2["mean"].double(), f2["cov"].double()
    else:
        f2 = f2.double()
        mu2, s2 = f2.mean(0), torch.cov(f2.T)
    w, v = torch.linalg.eigh(s1)
    r1 = (v * w.clamp(min=0).sqrt()) @ v.T
    tr_sqrt = torch.linalg.eigvalsh(r1 @ s2 @ r1).clamp(min=0).sqrt().sum()
    return ((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * tr_sqrt).item()


def nn_dist(queries: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """RMS pixel distance (images in [0, 1]) from each query to its nearest reference."""
    q = queries.flatten(1).float()
    r = ref.flatten(1).float()
    r2 = r.square().sum(1)
    out = []
    for i in range(0, len(q), 256):
        d2 = q[i:i + 256].square().sum(1, keepdim=True) + r2[None] - 2 * q[i:i + 256] @ r.T
        out.append(d2.min(1).values.clamp(min=0))
    return (torch.cat(out) / q.shape[1]).sqrt()


def lanczos32(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] [N, 3, 64, 64] -> [-1, 1] [N, 3, 32, 32], via uint8 and PIL Lanczos like data.load_emoji."""
    import numpy as np
    from PIL import Image
    from data import to_uint8
    u8 = to_uint8(x).permute(0, 2, 3, 1).numpy()
    out = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.Resampling.LANCZOS)) for im in u8])
    return to_model_range(torch.from_numpy(out).permute(0, 3, 1, 2))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) of [-1, 1] images measured on [0, 1]: 11x11 Gaussian window,
    sigma 1.5, K1 0.01, K2 0.03, per channel over the valid region, averaged."""
    x, y = (x.clamp(-1, 1).double() + 1) / 2, (y.clamp(-1, 1).double() + 1) / 2
    c = x.shape[1]
    g = torch.exp(-(torch.arange(11, dtype=torch.float64) - 5) ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).expand(c, 1, 11, 11)
    f = lambda t: F.conv2d(t, w, groups=c)  # noqa: E731
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return m.flatten(1).mean(1).float()


def evaluate_sr(model_dir: Path, n: int | None, steps: int, seed: int, eta: float) -> dict:
    from data import box_consistency, sr_condition, sr_lowres
    from train_vae import psnr
    info = json.loads((model_dir / "stepwise.json").read_text())
    from export import GRID_DEVICE
    unet = UNet2DModel.from_pretrained(model_dir / "unet").float().eval().to(GRID_DEVICE)
    sched_cfg = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    truth = to_model_range(load("emoji64", "heldout").images)
    truth = truth[:n] if n else truth
    low = sr_lowres(truth)
    cond = sr_condition(low)
    t0 = time.time()
    x = sample(unet, sched_cfg, len(truth), steps=steps, seed=seed, batch=100, eta=eta, cond=cond,
               consistent_with=low).clamp(-1, 1)
    sample_s = time.time() - t0
    raw = sample(unet, sched_cfg, len(truth), steps=steps, seed=seed, batch=100, eta=eta,
                 cond=cond).clamp(-1, 1)
    bic = cond.clamp(-1, 1)
    bic_proj = box_consistency(cond, low).clamp(-1, 1)
    p_sr, p_raw, p_bic, p_bp = psnr(x, truth), psnr(raw, truth), psnr(bic, truth), psnr(bic_proj, truth)
    s_sr, s_raw, s_bic = ssim(x, truth), ssim(raw, truth), ssim(bic, truth)
    res = {"model": info["name"], "n_samples": len(truth), "ddim_steps": steps, "eta": eta, "seed": seed,
           "train_steps": info["train_steps"], "sampling_seconds": round(sample_s),
           "psnr_sr": p_sr.mean().item(), "psnr_sr_without_consistency": p_raw.mean().item(),
           "psnr_bicubic": p_bic.mean().item(), "psnr_bicubic_consistent": p_bp.mean().item(),
           "ssim_sr": s_sr.mean().item(), "ssim_sr_without_consistency": s_raw.mean().item(),
           "ssim_bicubic": s_bic.mean().item(),
           "frac_psnr_above_bicubic": (p_sr > p_bic).float().mean().item(),
           "margin_over_bicubic_db": (p_sr - p_bic).mean().item()}
    res["table"] = {
        "PSNR vs real 64x64, model with consistency (shipped sampling) (dB)": f"{res['psnr_sr']:.2f}",
        "PSNR, model alone (no consistency) (dB)": f"{res['psnr_sr_without_consistency']:.2f}",
        "PSNR, bicubic upscaling (dB)": f"{res['psnr_bicubic']:.2f}",
        "PSNR, bicubic made consistent (one projection) (dB)": f"{res['psnr_bicubic_consistent']:.2f}",
        "SSIM, model with consistency / alone": f"{res['ssim_sr']:.4f} / {res['ssim_sr_without_consistency']:.4f}",
        "SSIM, bicubic upscaling": f"{res['ssim_bicubic']:.4f}",
        "held-out images where the model's PSNR beats bicubic": f"{res['frac_psnr_above_bicubic']:.1%}",
        "mean margin over bicubic (dB)": f"{res['margin_over_bicubic_db']:+.2f}",
    }
    res["notes"] = (f"Held-out emoji at 64x64 (the first {len(truth)} of the split, never trained on); input = "
                    f"`F.interpolate(x64, size=32, mode='area')`; bicubic = `F.interpolate(lowres32, scale_factor=2, "
                    f"mode='bicubic', align_corners=False)` clamped to [-1, 1]; consistency = before every DDIM step "
                    f"the x0 implied by the model is shifted, per 2x2 block, to average down to the input "
                    f"(`data.box_consistency`, what the app and `diffuse upscale` do by default). PSNR on [0, 1] "
                    f"pixels, mean over images; SSIM with an 11x11 Gaussian window (sigma 1.5). Sampling (with "
                    f"consistency) took {sample_s:.0f} s on 1 CPU thread.")
    return res


def evaluate(model_dir: Path, n: int, steps: int, seed: int, guidance: float | None, eta: float = 1.0) -> dict:
    info = json.loads((model_dir / "stepwise.json").read_text())
    kind = info.get("kind", "pixel")
    if kind == "super-resolution":
        return evaluate_sr(model_dir, None if n == 1000 else n, steps, seed, eta)
    dataset = DATASET_OF[info["name"]]
    clf, clf_meta = get_classifier(dataset)
    unet = UNet2DModel.from_pretrained(model_dir / "unet").float().eval()
    sched_cfg = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    tr = load(dataset, "train")
    try:
        ho = load(dataset, "heldout")
        ho_x = to_model_range(ho.images)
    except FileNotFoundError:
        # The device run carries Fashion-MNIST's training set only (64 MiB per call): FID then uses the
        # held-out features' mean and covariance committed beside the classifier (heldout_stats.py).
        if dataset != "fashion":
            raise
        ho, ho_x = None, None
    from export import GRID_DEVICE, sample_latent_images
    unet = unet.to(GRID_DEVICE)  # a GPU when there is one (the device run), else the CPU as before
    w = (guidance_of(info) if guidance is None else guidance) if info["conditional"] else None

    def draw(labels, n_, seed_):
        if kind == "latent":
            return lanczos32(sample_latent_images(model_dir, n_, steps=steps, seed=seed_, eta=eta, labels=labels,
                                                  guidance_scale=w or 1.0))
        return sample(unet, sched_cfg, n_, labels=labels, guidance_scale=w or 1.0, steps=steps, seed=seed_,
                      batch=100, eta=eta)

    t0 = time.time()
    y = None
    if info["conditional"] and dataset == "fashion":
        y = torch.arange(n) % 10
    elif info["conditional"]:
        # Emoji categories are unbalanced (People & Body 60 %): for FID against the held-out set, the
        # labels follow the training split's category frequencies (largest remainder, then shuffled).
        y = proportional_labels(tr.labels, n, seed)
    x = draw(y, n, seed)
    sample_s = time.time() - t0
    x = x.clamp(-1, 1)
    g = torch.Generator().manual_seed(seed)
    real = to_model_range(tr.images[torch.randperm(len(tr), generator=g)[:n]])
    f_gen, f_real = (batched(clf.features, v) for v in (x, real))
    f_ho = batched(clf.features, ho_x) if ho_x is not None else \
        load_file(CLS_DIR / f"{dataset}.heldout.safetensors")
    table = {
        f"FID vs held-out ({dataset} classifier features)": f"{fid(f_gen, f_ho):.2f}",
        f"floor: FID of {n} real training images vs held-out": f"{fid(f_real, f_ho):.2f}",
    }
    res = {"model": info["name"], "n_samples": n, "ddim_steps": steps, "eta": eta, "seed": seed,
           "train_steps": info["train_steps"], "sampling_seconds": round(sample_s),
           "fid": fid(f_gen, f_ho), "fid_floor": fid(f_real, f_ho),
           "classifier_heldout_accuracy": clf_meta["heldout_accuracy"]}
    if info["conditional"] and dataset == "emoji":
        # Category-conditional emoji (issue 36): a class-balanced set, n_per samples of each category,
        # scored by the class-balanced category classifier (the FID classifier rarely says Activities).
        cat, cat_meta = get_classifier("emoji-category")
        n_per = max(1, n // 20)
        yb = torch.arange(10).repeat_interleave(n_per)
        xb = draw(yb, len(yb), seed + 1).clamp(-1, 1)
        per = per_class_accuracy(cat, xb, yb, 10)
        names = tr.class_names
        content = [a for c, a in zip(names, per) if c != "Component"]
        res.update(guidance_scale=w, category_accuracy=sum(per) / 10, category_accuracy_no_component=
                   sum(content) / len(content), category_per_class=dict(zip(names, per)),
                   category_samples_per_class=n_per,
                   category_classifier_heldout_balanced=cat_meta.get("heldout_balanced_accuracy"))
        table[f"category classifier recognises the asked category, {n_per} samples x 10 (guidance {w})"] = \
            f"{res['category_accuracy']:.1%} (without Component: {res['category_accuracy_no_component']:.1%})"
        table["per category"] = ", ".join(f"{c} {a:.0%}" for c, a in zip(names, per))
        table["category classifier on real held-out emoji (balanced over categories)"] = \
            f"{cat_meta.get('heldout_balanced_accuracy', float('nan')):.1%}"
    if info["conditional"] and dataset == "fashion":
        acc = accuracy(clf, x, y)
        res.update(guidance_scale=w, class_accuracy=acc)
        table[f"classifier accuracy on class-conditional samples (guidance {w})"] = f"{acc:.1%}"
        table["classifier accuracy on real held-out images (reference)"] = f"{clf_meta['heldout_accuracy']:.1%}"
    if dataset == "emoji":
        to01 = lambda t: (t + 1) / 2  # noqa: E731
        tr01 = to01(to_model_range(tr.images))
        d_gen = nn_dist(to01(x), tr01)
        d_ho = nn_dist(to01(ho_x), tr01)
        q = lambda d, p: d.quantile(p).item()  # noqa: E731
        res.update(nn_gen_median=q(d_gen, 0.5), nn_gen_p05=q(d_gen, 0.05),
                   nn_heldout_median=q(d_ho, 0.5), nn_heldout_p05=q(d_ho, 0.05),
                   frac_closer_than_heldout_p01=(d_gen < q(d_ho, 0.01)).float().mean().item())
        table["NN distance sample->train, median / 5th pct (RMS, [0,1] pixels)"] = \
            f"{res['nn_gen_median']:.3f} / {res['nn_gen_p05']:.3f}"
        table["NN distance held-out->train, median / 5th pct"] = \
            f"{res['nn_heldout_median']:.3f} / {res['nn_heldout_p05']:.3f}"
        table["samples closer to train than 99% of held-out images"] = f"{res['frac_closer_than_heldout_p01']:.1%}"
    where = "1 CPU thread" if GRID_DEVICE == "cpu" else torch.cuda.get_device_name()
    res["notes"] = (f"Classifier: training/classifier/{dataset}.safetensors, held-out accuracy "
                    f"{clf_meta['heldout_accuracy']:.1%}. Sampling took {sample_s:.0f} s on {where}.")
    if y is not None and dataset == "emoji":
        res["notes"] += (" FID samples are category-conditional with the training split's category frequencies; "
                         "the category score uses a separate class-balanced set and "
                         "training/classifier/emoji-category.safetensors.")
    if kind == "latent":
        v = info["vae"]
        res.update(vae_heldout_psnr=v["heldout_psnr_db"])
        table[f"VAE reconstruction PSNR, {v['heldout_n']} held-out emoji at 64x64 (dB)"] = \
            f"{v['heldout_psnr_db']:.2f} (median {v['heldout_psnr_median_db']:.2f})"
        res["notes"] += (" The 64x64 samples (latent DDIM, then VAE decode) are downsampled to 32x32 with Lanczos, "
                         "as the 32x32 emoji dataset was made, so the classifier (trained at 32x32) and the "
                         "nearest-neighbour check compare them with the 32x32 train/held-out sets; FID is then "
                         "comparable with the pixel `emoji` model's.")
    res["table"] = table
    return res


def update_readme(res: dict) -> None:
    """Replace this model's block between markers in training/README.md."""
    readme = HERE / "README.md"
    if not readme.exists():
        return
    name = res["model"]
    body = "\n".join([f"**{name}** (train step {res['train_steps']}, {res['n_samples']} samples, "
                      f"DDIM {res['ddim_steps']}, eta {res.get('eta', 0)}, seed {res['seed']}; "
                      f"`evaluate.py --model {name}`):", "", "| metric | value |", "|---|---|"] +
                     [f"| {k} | {v} |" for k, v in res["table"].items()])
    start, end = f"<!-- metrics:{name} -->", f"<!-- /metrics:{name} -->"
    text = readme.read_text()
    block = f"{start}\n{body}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a name under assets/models/ or a folder path")
    p.add_argument("--n", type=int, default=1000,
                   help="samples (emoji-sr: held-out images, all 708 unless given)")
    p.add_argument("--steps", type=int, default=25,
                   help="DDIM steps (25 by default: 1000 guided samples at 50 steps take ~40 min of one "
                        "busy CPU core; the app's default is 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eta", type=float, default=None,
                   help="DDIM eta (default: the model's stepwise.json defaults.eta, else 1: "
                        "stochastic, DDPM-like, gives clean backgrounds on these small models, 0 leaves speckle "
                        "noise; 0 for emoji-sr)")
    p.add_argument("--guidance", type=float, default=None, help="override the shipped guidance scale")
    p.add_argument("--sweep", default=None,
                   help="comma-separated guidance scales: print FID and accuracy for each (implies --dry)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dry", action="store_true", help="print only; do not write metrics.json/card/README")
    p.add_argument("--train-classifier", choices=sorted(CLASSIFIERS), default=None,
                   help="(re)train and save that dataset's classifier, then exit")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.train_classifier:
        train_classifier(name=args.train_classifier, **CLASSIFIERS[args.train_classifier])
        return
    model_dir = Path(args.model)
    if not model_dir.exists():
        model_dir = REPO / "assets" / "models" / args.model
    if args.sweep:
        for w in map(float, args.sweep.split(",")):
            r = evaluate(model_dir, args.n, args.steps, args.seed, w, args.eta if args.eta is not None else 1.0)
            print(f"guidance {w}: FID {r['fid']:.2f} (floor {r['fid_floor']:.2f}), "
                  f"class accuracy {r['class_accuracy']:.1%}", flush=True)
        return
    info = json.loads((model_dir / "stepwise.json").read_text())
    eta = args.eta if args.eta is not None else info.get("defaults", {}).get("eta", 1.0)
    res = evaluate(model_dir, args.n, args.steps, args.seed, args.guidance, eta)
    print(json.dumps(res, indent=1))
    if not args.dry:
        (model_dir / "metrics.json").write_text(json.dumps(res, indent=1) + "\n")
        import export
        export.write_any_card(model_dir)
        if model_dir.resolve().parent == (REPO / "assets" / "models").resolve():
            update_readme(res)


if __name__ == "__main__":
    main()
