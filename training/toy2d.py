"""Train the 2D toy ε-models of the "Paths" view: a small MLP per data set (two moons, swiss roll).

    PY=~/.cache/stepwise/venv/bin/python
    $PY training/toy2d.py                      # both data sets -> assets/toy2d/<name>/
    $PY training/toy2d.py --only moons --steps 2000

Each model is an MLP on [x, y, timestep embedding(t)] -> ε̂ (diffusers' `get_timestep_embedding`,
3 hidden layers of 128 with SiLU), trained with the DDPM loss ||ε − ε̂(√ᾱ_t x₀ + √(1−ᾱ_t) ε, t)||²
under diffusers' `DDPMScheduler` (linear β from 1e-4 to 0.02, 1000 steps, `clip_sample` off since
the data leave [−1, 1]). The Rust side (`src/toy2d/`) reads:

- `assets/toy2d/<name>/model.safetensors`: f32 EMA weights `hidden.{0,1,2}.{weight,bias}`,
  `out.{weight,bias}` (torch's [out, in] layout);
- `config.json`: the layer sizes and embedding parameters (`model`), the data's generating
  parameters (`data`, which `src/toy2d/distribution.rs` samples with the same formulas) and what
  training did (`training`);
- `scheduler_config.json`: the scheduler, as diffusers saves it.

It also writes `tests/fixtures/toy2d/mlp_forward.json`: the moons model's outputs on a few fixed
(x, y, t), computed here in float32, which `tests/toy2d.rs` compares with the Rust forward.

Data are drawn fresh every batch (the generators are cheap), so there is no epoch and no
overfitting to a finite set. Everything is seeded (torch.manual_seed), and runs on CPU with two
threads: about a minute per model on two cores.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.models.embeddings import get_timestep_embedding
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL = {
    "kind": "mlp",
    "in_features": 2,
    "time_embedding_dim": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0.0,
    "max_period": 10000.0,
    "hidden": [128, 128, 128],
    "activation": "silu",
    "out_features": 2,
}

# The generating parameters; src/toy2d/distribution.rs implements the same formulas.
DATA = {
    # sklearn's make_moons with θ ~ U(0, π) instead of a linspace: outer (cos θ, sin θ),
    # inner (1 − cos θ, 0.5 − sin θ), each with probability 1/2, plus noise·z, then
    # (p − center)·scale.
    "moons": {"kind": "moons", "noise": 0.05, "center": [0.5, 0.25], "scale": 1.2},
    # sklearn's make_swiss_roll in 2D: τ = 1.5π(1 + 2u), u ~ U(0, 1), p = (τ cos τ, τ sin τ)
    # + noise·z, then p·scale.
    "swiss_roll": {"kind": "swiss_roll", "noise": 0.4, "scale": 0.15},
}


def sample_data(cfg: dict, n: int, g: torch.Generator) -> torch.Tensor:
    if cfg["kind"] == "moons":
        theta = torch.rand(n, generator=g) * math.pi
        inner = torch.rand(n, generator=g) < 0.5
        x = torch.where(inner, 1.0 - torch.cos(theta), torch.cos(theta))
        y = torch.where(inner, 0.5 - torch.sin(theta), torch.sin(theta))
        p = torch.stack([x, y], 1) + cfg["noise"] * torch.randn(n, 2, generator=g)
        return (p - torch.tensor(cfg["center"])) * cfg["scale"]
    if cfg["kind"] == "swiss_roll":
        tau = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=g))
        p = torch.stack([tau * torch.cos(tau), tau * torch.sin(tau)], 1)
        p = p + cfg["noise"] * torch.randn(n, 2, generator=g)
        return p * cfg["scale"]
    raise ValueError(f"unknown data kind {cfg['kind']}")


class ToyMLP(torch.nn.Module):
    """ε̂(x, t) = out(silu(hidden_2(silu(hidden_1(silu(hidden_0([x, emb(t)])))))))."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        widths = [cfg["in_features"] + cfg["time_embedding_dim"], *cfg["hidden"]]
        self.hidden = torch.nn.ModuleList(
            torch.nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])
        )
        self.out = torch.nn.Linear(widths[-1], cfg["out_features"])

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        emb = get_timestep_embedding(
            t.float(),
            c["time_embedding_dim"],
            flip_sin_to_cos=c["flip_sin_to_cos"],
            downscale_freq_shift=c["freq_shift"],
            max_period=c["max_period"],
        )
        h = torch.cat([x, emb], dim=-1)
        for layer in self.hidden:
            h = F.silu(layer(h))
        return self.out(h)


def scheduler() -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        clip_sample=False,
        prediction_type="epsilon",
    )


@torch.no_grad()
def ddim_sample(model: torch.nn.Module, n: int, steps: int, g: torch.Generator) -> torch.Tensor:
    """DDIM η = 0 (Song et al. 2021, eq. 12) on the training ᾱ, for the log's quality number."""
    abar = scheduler().alphas_cumprod.double()
    ts = torch.arange(0, steps) * (1000 // steps)
    x = torch.randn(n, 2, generator=g).double()
    for i in reversed(range(steps)):
        t = int(ts[i])
        a, a_prev = abar[t], (abar[int(ts[i - 1])] if i > 0 else torch.tensor(1.0).double())
        eps = model(x.float(), torch.full((n,), t)).double()
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x.float()


def mean_nearest(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over a of the distance to the nearest point of b."""
    return torch.cdist(a, b).min(dim=1).values.mean().item()


def train(name: str, steps: int, batch: int, lr: float, seed: int) -> dict:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    data = DATA[name]
    sched = scheduler()
    abar = sched.alphas_cumprod  # float32, as the Rust side computes it
    model = ToyMLP(MODEL)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    warmup = 200
    lr_at = lambda s: lr * min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps))
    t0 = time.time()
    running = None
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        x0 = sample_data(data, batch, g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        eps = torch.randn(batch, 2, generator=g)
        a = abar[t][:, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = F.mse_loss(model(xt, t), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        running = loss.item() if running is None else 0.99 * running + 0.01 * loss.item()
        if step % 1000 == 0 or step == steps - 1:
            print(f"{name} step {step:6d} loss {running:.4f} ({time.time() - t0:.0f} s)", flush=True)
    seconds = time.time() - t0
    ge = torch.Generator().manual_seed(seed + 1)
    fake = ddim_sample(ema, 2000, 50, ge)
    real = sample_data(data, 20000, ge)
    quality = {
        "ddim50_mean_nearest_fake_to_real": round(mean_nearest(fake, real), 4),
        "ddim50_mean_nearest_real_to_fake": round(mean_nearest(real[:2000], fake), 4),
    }
    print(f"{name}: {seconds:.0f} s, {quality}", flush=True)
    return {
        "ema": ema,
        "training": {
            "steps": steps,
            "batch": batch,
            "lr": lr,
            "schedule": "linear warm-up 200 steps, cosine decay",
            "ema_decay": 0.999,
            "seed": seed,
            "seconds": round(seconds, 1),
            "final_loss": round(running, 5),
            "threads": torch.get_num_threads(),
            **quality,
        },
    }


def export(name: str, result: dict) -> None:
    out = os.path.join(ROOT, "assets", "toy2d", name)
    os.makedirs(out, exist_ok=True)
    ema = result["ema"]
    tensors = {k: v.detach().float().contiguous() for k, v in ema.state_dict().items()}
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    os.chmod(os.path.join(out, "model.safetensors"), 0o644)
    config = {"model": MODEL, "data": DATA[name], "training": result["training"]}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    scheduler().save_config(out)


@torch.no_grad()
def write_fixture(name: str) -> None:
    """The Rust-vs-PyTorch forward check: fixed inputs, float32 outputs of the exported weights."""
    from safetensors.torch import load_file

    model = ToyMLP(MODEL)
    model.load_state_dict(load_file(os.path.join(ROOT, "assets", "toy2d", name, "model.safetensors")))
    inputs = [
        [0.0, 0.0, 0.0],
        [0.7, -0.3, 1.0],
        [-1.2, 0.4, 12.5],
        [0.3, 0.9, 100.0],
        [1.5, -1.1, 333.0],
        [-0.2, -0.6, 500.0],
        [2.0, 2.0, 750.25],
        [-2.5, 1.0, 999.0],
    ]
    x = torch.tensor([[a, b] for a, b, _ in inputs])
    t = torch.tensor([c for _, _, c in inputs])
    y = model(x, t)
    out_dir = os.path.join(ROOT, "tests", "fixtures", "toy2d")
    os.makedirs(out_dir, exist_ok=True)
    # The generators' moments, from a million points each: the Rust generators must match them.
    g = torch.Generator().manual_seed(1234)
    data_stats = {}
    for data_name, cfg in sorted(DATA.items()):
        pts = sample_data(cfg, 1_000_000, g).double()
        data_stats[data_name] = {
            "n": pts.shape[0],
            "mean": [round(v, 5) for v in pts.mean(0).tolist()],
            "cov": [[round(v, 5) for v in row] for row in torch.cov(pts.T).tolist()],
        }
    fixture = {
        "made_by": "training/toy2d.py (write_fixture; `--fixture-only` rewrites just this file)",
        "model": f"assets/toy2d/{name}",
        "inputs": inputs,
        "outputs": [[float(v) for v in row] for row in y.tolist()],
        "data_stats": data_stats,
    }
    with open(os.path.join(out_dir, "mlp_forward.json"), "w") as f:
        json.dump(fixture, f, indent=2)
        f.write("\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=sorted(DATA), help="train one data set")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fixture-only", action="store_true", help="only rewrite the test fixture")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.fixture_only:
        write_fixture("moons")
        return
    for name in [args.only] if args.only else sorted(DATA):
        export(name, train(name, args.steps, args.batch, args.lr, args.seed))
    if args.only in (None, "moons"):
        write_fixture("moons")


if __name__ == "__main__":
    main()
