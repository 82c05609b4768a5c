"""Fresh random models and scheduler configs, checked against diffusers through the fixed CLI.

The golden files under tests/fixtures/ pin chosen cases; this draws new ones on every run, the way
the product is checked from outside: models and scheduler configs that are not in the
repository, through `diffuse forward` and `diffuse sample --noise`.

- UNets: a random UNet2DModel config within what the engine supports (1-4 blocks of any
  kind, conv or resnet resampling, 1-3 layers, groups, head widths, mid block or none, scale-shift, class or timestep
  embeddings, learned time embeddings, centred input, padding 0/1, f32/f16/bf16 weights, legacy
  attention names, odd and non-square sizes), random weights; diffusers' output in float64
  against ours on the CPU (relative L2 <= 1e-4) and on the GPU with each kernel set (<= 1e-3).
- Scheduler configs: a random config of any of the four classes (schedules, spacings, offsets,
  prediction types, clipping, thresholding, zero-SNR rescale, DPM-Solver variants, Karras
  sigmas, ...) driving a random sampler over a small UNet for a random number of steps, with
  noise injected into diffusers' loop; the final samples must agree to relative L2 1e-3 or 30
  times diffusers' own sensitivity to rounding, whichever is larger: the loops run in f32 on
  both sides, and some runs amplify rounding enormously (one DPM-Solver step in noise
  prediction from sigma = 1e4 cancels terms of 1e4 to leave O(1): there diffusers' own f32 and
  f64 runs differ by 6e-4, and one ulp of its f32 log-SNR step moves the result by 1e-2; one
  Euler step from t = 0 of a zero-SNR cosine schedule starts from sigma_0, which 1 - alpha_0
  makes 0.1 % sensitive to one ulp of alpha_0). The sensitivity is measured by running
  diffusers' loop again in float64, and again with every alpha_t one ulp lower. On zero-SNR
  schedules a case may also pass against diffusers' loop with its rescale's square root made
  exact, as the engine computes it: torch's CPU sqrt is up to 0.64 ulp off, which can move a
  Karras timestep by one and the result by a few per cent. Where diffusers' result is not
  finite, ours must say so (an error naming non-finite values); where diffusers refuses a
  config, ours must refuse it too. DDIM at eta = 1 is drawn as 0.5 on cosine and zero-SNR
  schedules, where diffusers' own result can be NaN (the engine's unit test covers it).
- Latent pipelines: a random AutoencoderKL (1-3 blocks, latent channels, scaling and shift
  factors, with or without quant convs and mid attention) with a random UNet on its latents,
  as a pipeline folder; `diffuse sample` on the CPU and the GPU writes `latents` and `image`,
  checked against diffusers' loop and `AutoencoderKL.decode` in the same way.
- SDEdit: `diffuse edit --strength` under a random scheduler config against diffusers' img2img
  loop (get_timesteps, set_begin_index, add_noise at the first kept timestep). Where the
  strength leaves no step (diffusers' pipeline raises), the engine must return the image as is.

  python tests/random_configs_vs_diffusers.py --diffuse target/debug/diffuse [--unets N]
      [--schedulers M] [--latents L] [--edits E] [--seed S]

The seed is printed; --seed S reproduces a run. Exits 1 on any mismatch, listing each case.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
                       EulerAncestralDiscreteScheduler, UNet2DModel)
from diffusers.schedulers import (scheduling_ddim, scheduling_ddpm, scheduling_dpmsolver_multistep,
                                  scheduling_euler_ancestral_discrete)
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import load_file, save_file

diffusers_logging.set_verbosity_error()
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests/fixtures/vae"))
from make_vae_fixtures import save_model  # noqa: E402  (a model folder with rounded weights, legacy names)
SAMPLERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm++2m": DPMSolverMultistepScheduler,
            "euler-a": EulerAncestralDiscreteScheduler}
SCHEDULER_MODULES = [scheduling_ddpm, scheduling_ddim, scheduling_dpmsolver_multistep,
                     scheduling_euler_ancestral_discrete]
SCHEDULER_UNET = ROOT / "tests/fixtures/unet/attn_multihead"


def rel_l2(a, b):
    return float(((a.double() - b.double()).norm() / b.double().norm()).item())


def run_diffuse(args, env=None):
    p = subprocess.run(args, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})
    return p.returncode, p.stderr.strip()


def perturb(model, g):
    """Random init leaves norms at (1, 0): perturb every parameter so each one matters."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def random_unet_config(r):
    n = r.randint(1, 4)
    groups = r.choice([1, 2, 4, 8])
    channels = [groups * r.choice([2, 3, 4, 6, 8]) for _ in range(n)]
    cfg = dict(
        in_channels=r.choice([1, 2, 3, 4, 6]), out_channels=r.choice([1, 3, 4]),
        block_out_channels=channels,
        down_block_types=[r.choice(["DownBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D"])
                          for _ in range(n)],
        up_block_types=[r.choice(["UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"]) for _ in range(n)],
        downsample_type=r.choice(["conv", "resnet"]), upsample_type=r.choice(["conv", "resnet"]),
        layers_per_block=r.randint(1, 3), norm_num_groups=groups,
        center_input_sample=r.random() < 0.3, flip_sin_to_cos=r.random() < 0.5,
        freq_shift=r.choice([0, 1]), downsample_padding=r.choice([0, 1]),
        mid_block_scale_factor=r.choice([1.0, 1.41421356]), norm_eps=r.choice([1e-5, 1e-6]),
        resnet_time_scale_shift=r.choice(["default", "scale_shift"]),
        add_attention=r.random() < 0.7,
        mid_block_type=r.choice(["UNetMidBlock2D", "UNetMidBlock2D", None]),
    )
    head = r.choice([None, groups, 1, 2, 8])
    cfg["attention_head_dim"] = head if head is not None and all(c % head == 0 for c in channels) else None
    if r.random() < 0.3:
        cfg["attn_norm_num_groups"] = r.choice([1, groups])
    if r.random() < 0.25:
        cfg["time_embedding_type"] = "learned"
        cfg["num_train_timesteps"] = 1000
    if r.random() < 0.3:
        cfg["time_embedding_dim"] = r.choice([16, 24, 40])
    c = r.random()
    if c < 0.3:
        cfg["num_class_embeds"] = r.randint(2, 12)
    elif c < 0.4:
        cfg["class_embed_type"] = "timestep"
    return cfg


def check_unet(seed, work, diffuse):
    r = random.Random(seed)
    cfg = random_unet_config(r)
    torch.manual_seed(seed)
    model = UNet2DModel(**cfg).eval()
    g = torch.Generator().manual_seed(seed)
    perturb(model, g)
    dtype = r.choice(["f32", "f32", "f16", "bf16"])
    legacy = r.random() < 0.3
    d = work / f"unet-{seed}"
    save_model(model, d, dtype, legacy, class_name="UNet2DModel")
    m = 2 ** (len(cfg["block_out_channels"]) - 1)
    h, w = m * r.randint(1, max(1, 24 // m)), m * r.randint(1, max(1, 24 // m))
    n = r.randint(1, 3)
    sample = torch.randn(n, cfg["in_channels"], h, w, generator=g)
    if r.random() < 0.5 or cfg.get("time_embedding_type") == "learned":
        timestep = torch.randint(0, 1000, (r.choice([1, n]),), generator=g)
    else:
        timestep = torch.rand(r.choice([1, n]), generator=g) * 999
    inputs = {"sample": sample, "timestep": timestep}
    labels = None
    if cfg.get("num_class_embeds"):
        labels = torch.randint(0, cfg["num_class_embeds"], (n,), generator=g)
    elif cfg.get("class_embed_type") == "timestep":
        labels = torch.randint(0, 1000, (n,), generator=g)
    if labels is not None:
        inputs["class_labels"] = labels
    save_file(inputs, d / "input.safetensors")
    # float64, except where diffusers itself cannot (class_embed_type "timestep" feeds float32
    # projections into the MLP).
    ft = torch.float32 if cfg.get("class_embed_type") == "timestep" else torch.float64
    with torch.no_grad():
        ts = timestep if timestep.dtype == torch.int64 else timestep.to(ft)
        ref = model.to(ft)(sample.to(ft), ts, class_labels=labels).sample.float()
    what = f"unet seed {seed}: {json.dumps(cfg)}, {dtype} weights{', legacy names' if legacy else ''}, input {[n, cfg['in_channels'], h, w]}"
    if not torch.isfinite(ref).all():
        # A degenerate config (block_out_channels[0] = 2 with freq_shift 1 divides by zero in
        # the time embedding): ours must refuse it by name.
        rc, err = run_diffuse([diffuse, "forward", "--model", str(d), "--input", str(d / "input.safetensors"),
                               "--output", str(d / "out.safetensors"), "--device", "cpu"])
        if rc != 0 and "NaN" in err:
            return what, ["diffusers gives NaN; ours refuses: " + err.splitlines()[-1][:120]], []
        return what, [], [f"diffusers' output is not finite; ours: rc {rc}, {err[-300:]}"]
    errors, figures = [], []
    for name, device, env, tol in [("cpu", "cpu", {}, 1e-4), ("gpu", "gpu", {"STEPWISE_KERNELS": "register"}, 1e-3),
                                   ("gpu tiled", "gpu", {"STEPWISE_KERNELS": "tiled"}, 1e-3)]:
        out = d / f"out-{device}-{len(figures)}.safetensors"
        rc, err = run_diffuse([diffuse, "forward", "--model", str(d), "--input", str(d / "input.safetensors"),
                               "--output", str(out), "--device", device], env)
        if rc != 0:
            errors.append(f"{name}: diffuse failed: {err[-300:]}")
            continue
        got = load_file(out)["sample"]
        if got.shape != ref.shape:
            errors.append(f"{name}: shape {tuple(got.shape)}, diffusers {tuple(ref.shape)}")
            continue
        e = rel_l2(got, ref)
        figures.append(f"{name} {e:.1e}")
        if not e <= tol:
            errors.append(f"{name}: relative L2 {e:.2e} > {tol:.0e}")
    return what, figures, errors


def random_scheduler_config(r):
    cls = r.choice(list(SAMPLERS.values()))
    cfg = {"_class_name": cls.__name__, "num_train_timesteps": r.choice([1000, 1000, 500, 100]),
           "beta_schedule": r.choice(["linear", "scaled_linear", "squaredcos_cap_v2"]),
           "prediction_type": r.choice(["epsilon", "epsilon", "v_prediction", "sample"]),
           "timestep_spacing": r.choice(["leading", "trailing", "linspace"]), "steps_offset": r.choice([0, 1])}
    if r.random() < 0.5:
        cfg["beta_start"] = r.choice([0.0001, 0.00085])
        cfg["beta_end"] = r.choice([0.02, 0.012])
    if r.random() < 0.5:
        cfg["clip_sample"] = r.random() < 0.5
        cfg["clip_sample_range"] = r.choice([1.0, 2.0])
    if r.random() < 0.25:
        cfg["thresholding"] = True
        cfg["dynamic_thresholding_ratio"] = r.choice([0.995, 0.9, 0.6])
        cfg["sample_max_value"] = r.choice([1.0, 1.5, 0.8])
    if r.random() < 0.2:
        cfg["rescale_betas_zero_snr"] = True
    if r.random() < 0.3:
        cfg["variance_type"] = r.choice(["fixed_small", "fixed_large", "fixed_small_log"])
    if r.random() < 0.3:
        cfg["set_alpha_to_one"] = r.random() < 0.5
    if r.random() < 0.5:
        algorithm = r.choice(["dpmsolver++", "sde-dpmsolver++", "dpmsolver", "sde-dpmsolver"])
        cfg["algorithm_type"] = algorithm
        cfg["solver_order"] = r.choice([1, 2] if algorithm == "sde-dpmsolver" else [1, 2, 3])
        cfg["solver_type"] = r.choice(["midpoint", "heun"])
        cfg["lower_order_final"] = r.random() < 0.7
        cfg["euler_at_final"] = r.random() < 0.2
        cfg["use_karras_sigmas"] = r.random() < 0.3
        # diffusers refuses final_sigmas_type "zero" for the noise-prediction forms
        cfg["final_sigmas_type"] = "sigma_min" if algorithm in ("dpmsolver", "sde-dpmsolver") else r.choice(["zero", "sigma_min"])
    return cfg


def rescale_zero_terminal_snr_exact(betas):
    """diffusers' rescale_zero_terminal_snr with a correctly rounded square root, as the engine
    computes it. torch's CPU sqrt (MKL's vector math here) is up to 0.64 ulp off, which moves
    the rescaled ᾱ by an ulp or two; where a run rounds a continuous timestep (Karras σ's mapped
    back to t) that can move a timestep by one, and the result by a few per cent."""
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    alphas_bar_sqrt = torch.from_numpy(np.sqrt(alphas_cumprod.numpy()))
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt -= last
    alphas_bar_sqrt *= first / (first - last)
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


def diffusers_loop(cfg, sampler, steps, eta, init, step_noise, unet, nudge=False, image=None, strength=None,
                   exact_sqrt=False):
    """diffusers' sampling loop with our noise injected into its randn_tensor. `nudge` moves
    every ᾱ_t down by one f32 ulp first (how far the result moves measures its sensitivity to
    the schedule's own rounding, which the engine reproduces to an ulp, not bit for bit).
    `exact_sqrt` builds a zero-SNR schedule with a correctly rounded square root (see
    rescale_zero_terminal_snr_exact).

    With `image` and `strength`, SDEdit as StableDiffusionImg2ImgPipeline does it: the last
    int(steps·strength) steps, from add_noise(image, init) at the first of them."""
    if exact_sqrt:
        saved = [(m, m.rescale_zero_terminal_snr) for m in SCHEDULER_MODULES]
        for module, _ in saved:
            module.rescale_zero_terminal_snr = rescale_zero_terminal_snr_exact
        try:
            sched = SAMPLERS[sampler].from_config(cfg)
        finally:
            for module, f in saved:
                module.rescale_zero_terminal_snr = f
    else:
        sched = SAMPLERS[sampler].from_config(cfg)
    if nudge:
        sched.alphas_cumprod = sched.alphas_cumprod * (1 - 2**-24)
    sched.set_timesteps(steps)
    begin = 0
    if strength is not None:
        init_timestep = min(int(steps * strength), steps)  # get_timesteps
        begin = max(steps - init_timestep, 0) * sched.order
        if begin >= len(sched.timesteps):
            raise ValueError(f"strength {strength} of {steps} steps leaves no step (the pipeline refuses it)")
    timesteps = sched.timesteps[begin:]
    if hasattr(sched, "set_begin_index"):
        # Said explicitly, as the engine does (otherwise diffusers finds the first index from the
        # timestep, which fails where Karras sigmas repeat a timestep).
        sched.set_begin_index(begin)
    current = {"i": 0}

    def injected(shape, generator=None, device=None, dtype=None, layout=None):
        return step_noise[current["i"]].clone().reshape(shape)

    for module in SCHEDULER_MODULES:
        if hasattr(module, "randn_tensor"):
            module.randn_tensor = injected
    if strength is None:
        x = init * sched.init_noise_sigma
    else:
        x = sched.add_noise(image, init, timesteps[:1].repeat(image.shape[0]))
    kwargs = {"eta": eta} if sampler == "ddim" else {}
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            current["i"] = i
            x = sched.step(unet(sched.scale_model_input(x, t), t).sample, t, x, **kwargs).prev_sample
    return x


def unet_folder_with_scheduler(d, cfg):
    """A copy of the small fixture UNet with `cfg` as its scheduler_config.json."""
    d.mkdir()
    for f in ["config.json", "diffusion_pytorch_model.safetensors"]:
        shutil.copy(SCHEDULER_UNET / f, d / f)
    (d / "scheduler_config.json").write_text(json.dumps(cfg))
    return d


def judge(what, rc, err, out, cfg, reference):
    """Ours (`diffuse` exited with `rc`, wrote `sample` to `out`) against `reference(f64=False,
    nudge=False, exact_sqrt=False)`, diffusers' loop. The tolerance is 1e-3 or 30 times how far
    diffusers' own result moves in float64 or with every ᾱ one ulp lower; a zero-SNR case may
    also pass against the exact-sqrt schedule (rescale_zero_terminal_snr_exact)."""
    try:
        x = reference()
        x64 = reference(f64=True)
        nudged = reference(nudge=True)
    except Exception as e:  # diffusers refuses (e.g. Euler-a with prediction_type "sample")
        if rc != 0:
            return what, ["both refuse"], []
        return what, [], [f"diffusers refuses ({type(e).__name__}: {e}), ours ran"]
    if not torch.isfinite(x).all():
        if rc != 0 and "non-finite" in err:
            return what, ["diffusers not finite; ours says so"], []
        return what, [], [f"diffusers' result is not finite; ours: rc {rc}, {err[-300:]}"]
    if rc != 0:
        return what, [], [f"diffuse failed: {err[-300:]}"]
    ours = load_file(out)["sample"]
    e = rel_l2(ours, x)
    tol = max(1e-3, 30 * rel_l2(x, x64), 30 * rel_l2(x, nudged))
    if e > tol and cfg.get("rescale_betas_zero_snr"):
        e_exact = rel_l2(ours, reference(exact_sqrt=True))
        if e_exact <= tol:
            return what, [f"{e:.1e}; {e_exact:.1e} with torch's sqrt made exact (tolerance {tol:.0e})"], []
    return what, [f"{e:.1e} (tolerance {tol:.0e})"], [] if e <= tol else [f"relative L2 {e:.2e} > {tol:.1e}"]


def check_edit(seed, work, diffuse, unet, unet64):
    """SDEdit (`diffuse edit --strength`) under a random scheduler config, against diffusers'
    img2img loop: add_noise at the strength's first timestep, then the rest of the schedule."""
    r = random.Random(seed)
    cfg = random_scheduler_config(r)
    sampler = r.choice(list(SAMPLERS))
    steps = r.choice([1, 2, 3, 5, 8, 13, 25])
    strength = r.choice([0.05, 0.3, 0.5, 0.75, 0.9, 1.0])
    eta = r.choice([0.0, 0.5]) if sampler == "ddim" else 0.0
    batch = r.randint(1, 2)
    what = f"edit seed {seed}: {sampler}, {steps} steps, strength {strength}, eta {eta}, batch {batch}, {json.dumps(cfg)}"
    d = unet_folder_with_scheduler(work / f"edit-{seed}", cfg)
    c, hw = unet.config.in_channels, unet.config.sample_size
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, c, hw, hw, generator=g) * 2 - 1
    eps = torch.randn(batch, c, hw, hw, generator=g)
    step_noise = torch.randn(steps, batch, c, hw, hw, generator=g)
    k = steps - max(steps - min(int(steps * strength), steps), 0)  # the steps this run takes
    save_file({"image": image}, d / "image.safetensors")
    save_file({"init": eps.contiguous(), "step_noise": step_noise[:max(k, 1)].contiguous()}, d / "noise.safetensors")
    out = d / "out.safetensors"
    rc, err = run_diffuse([diffuse, "edit", "--model", str(d), "--input", str(d / "image.safetensors"),
                           "--sampler", sampler, "--steps", str(steps), "--strength", str(strength),
                           "--eta", str(eta), "--device", "cpu", "--noise", str(d / "noise.safetensors"),
                           "--output", str(out)])
    if k == 0:
        # No step left (diffusers' img2img pipeline raises here): the engine runs none, and the
        # image comes back unchanged.
        if rc != 0:  # fine where the config itself is one diffusers refuses
            try:
                diffusers_loop(cfg, sampler, steps, eta, eps, step_noise, unet, image=image, strength=1.0)
            except Exception:
                return what, ["no step, and both refuse the config"], []
            return what, [], [f"no step to run, ours failed: {err[-300:]}"]
        e = rel_l2(load_file(out)["sample"], image)
        return what, [f"no step: image back, {e:.0e}"], [] if e == 0 else [f"no step to run, but the image moved by {e:.2e}"]

    def reference(f64=False, **kw):
        if f64:
            return diffusers_loop(cfg, sampler, steps, eta, eps.double(), step_noise.double(), unet64,
                                  image=image.double(), strength=strength, **kw)
        return diffusers_loop(cfg, sampler, steps, eta, eps, step_noise, unet, image=image, strength=strength, **kw)

    return judge(what, rc, err, out, cfg, reference)


def check_scheduler(seed, work, diffuse, unet, unet64):
    r = random.Random(seed)
    cfg = random_scheduler_config(r)
    sampler = r.choice(list(SAMPLERS))
    steps = r.choice([1, 2, 3, 5, 8, 13, 25])
    eta = r.choice([0.0, 0.0, 0.5, 1.0]) if sampler == "ddim" else 0.0
    if eta == 1.0 and (cfg.get("rescale_betas_zero_snr") or cfg["beta_schedule"] == "squaredcos_cap_v2"):
        # diffusers' DDIM can return NaN here: √(1 − ᾱ_prev − σ²) is 0 (zero SNR) or nearly so
        # (the cosine schedule's ᾱ near T) at η = 1, and f32 rounding takes it below 0. The
        # engine clamps that rounding (ddim::tests::eta_one_on_a_zero_snr_schedule_stays_finite).
        eta = 0.5
    batch = r.randint(1, 2)
    what = f"scheduler seed {seed}: {sampler}, {steps} steps, eta {eta}, batch {batch}, {json.dumps(cfg)}"
    d = unet_folder_with_scheduler(work / f"sched-{seed}", cfg)
    c, hw = unet.config.in_channels, unet.config.sample_size
    g = torch.Generator().manual_seed(seed)
    init = torch.randn(batch, c, hw, hw, generator=g)
    step_noise = torch.randn(steps, batch, c, hw, hw, generator=g)
    save_file({"init": init.contiguous(), "step_noise": step_noise.contiguous()}, d / "noise.safetensors")

    out = d / "out.safetensors"
    rc, err = run_diffuse([diffuse, "sample", "--model", str(d), "--sampler", sampler, "--steps", str(steps),
                           "--eta", str(eta), "--batch", str(batch), "--device", "cpu",
                           "--noise", str(d / "noise.safetensors"), "--output", str(out)])
    def reference(f64=False, **kw):
        if f64:
            return diffusers_loop(cfg, sampler, steps, eta, init.double(), step_noise.double(), unet64, **kw)
        return diffusers_loop(cfg, sampler, steps, eta, init, step_noise, unet, **kw)

    return judge(what, rc, err, out, cfg, reference)


def random_vae_config(r):
    n = r.randint(1, 3)
    groups = r.choice([1, 2, 4])
    return dict(
        in_channels=r.choice([1, 3]), out_channels=r.choice([1, 3]), latent_channels=r.randint(1, 4),
        block_out_channels=[groups * r.choice([2, 4, 6]) for _ in range(n)],
        down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
        layers_per_block=r.randint(1, 2), norm_num_groups=groups,
        scaling_factor=r.choice([0.18215, 0.5, 1.3]), shift_factor=r.choice([None, None, 0.1, -0.2]),
        use_quant_conv=r.random() < 0.8, use_post_quant_conv=r.random() < 0.8,
        mid_block_add_attention=r.random() < 0.7,
    )


def check_latent(seed, work, diffuse):
    """A latent pipeline folder (vae/, unet/, scheduler/): our sampling loop and decode through
    diffuse sample (latents and image) against diffusers' loop and AutoencoderKL.decode."""
    r = random.Random(seed)
    vae_cfg = random_vae_config(r)
    unet_cfg = random_unet_config(r)
    # Unconditional, and positional time (diffusers' learned table takes only integer tensors,
    # which Euler-a's float timesteps are not; the UNet cases cover it).
    for key in ["num_class_embeds", "class_embed_type", "time_embedding_type", "num_train_timesteps"]:
        unet_cfg.pop(key, None)
    unet_cfg["in_channels"] = unet_cfg["out_channels"] = vae_cfg["latent_channels"]
    m = 2 ** (len(unet_cfg["block_out_channels"]) - 1)
    side = (m * r.randint(1, max(1, 8 // m)), m * r.randint(1, max(1, 8 // m)))
    unet_cfg["sample_size"] = list(side)
    sched_cfg = {"_class_name": "DDPMScheduler", "beta_schedule": r.choice(["linear", "scaled_linear"]),
                 "prediction_type": r.choice(["epsilon", "v_prediction"]), "clip_sample": False}
    sampler = r.choice(list(SAMPLERS))
    steps, eta, batch = r.choice([1, 3, 6]), r.choice([0.0, 1.0]) if sampler == "ddim" else 0.0, r.randint(1, 2)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    vae, unet = AutoencoderKL(**vae_cfg).eval(), UNet2DModel(**unet_cfg).eval()
    perturb(vae, g)
    perturb(unet, g)
    d = work / f"latent-{seed}"
    dtype = r.choice(["f32", "f16", "bf16"])
    save_model(vae, d / "vae", dtype, r.random() < 0.3)
    save_model(unet, d / "unet", dtype, r.random() < 0.3, class_name="UNet2DModel")
    (d / "scheduler").mkdir()
    (d / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched_cfg))
    (d / "model_index.json").write_text(json.dumps({
        "_class_name": "LDMPipeline", "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDPMScheduler"]}))
    c = vae_cfg["latent_channels"]
    init = torch.randn(batch, c, *side, generator=g)
    step_noise = torch.randn(steps, batch, c, *side, generator=g)
    save_file({"init": init.contiguous(), "step_noise": step_noise.contiguous()}, d / "noise.safetensors")
    what = (f"latent seed {seed}: vae {json.dumps(vae_cfg)}, unet {json.dumps(unet_cfg)}, {sampler}, "
            f"{steps} steps, eta {eta}, batch {batch}, {dtype} weights, {json.dumps(sched_cfg)}")

    def reference(unet, vae, dt):
        x = diffusers_loop(sched_cfg, sampler, steps, eta, init.to(dt), step_noise.to(dt), unet)
        with torch.no_grad():
            image = vae.decode(x / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)).sample
        return x, image

    latents, image = reference(unet, vae, torch.float32)
    finite = bool(torch.isfinite(latents).all() and torch.isfinite(image).all())
    if finite:
        latents64, image64 = reference(unet.double(), vae.double(), torch.float64)
        tol = max(1e-3, 30 * rel_l2(latents, latents64), 30 * rel_l2(image, image64))
    errors, figures = [], []
    for device in ["cpu", "gpu"]:
        out = d / f"out-{device}.safetensors"
        rc, err = run_diffuse([diffuse, "sample", "--model", str(d), "--sampler", sampler, "--steps", str(steps),
                               "--eta", str(eta), "--batch", str(batch), "--device", device,
                               "--noise", str(d / "noise.safetensors"), "--output", str(out)])
        if not finite:
            # A degenerate UNet config (see check_unet): ours must refuse it by name.
            if rc != 0 and "NaN" in err:
                figures.append(f"{device}: diffusers gives NaN; ours refuses")
            else:
                errors.append(f"{device}: diffusers' result is not finite; ours: rc {rc}, {err[-300:]}")
            continue
        if rc != 0:
            errors.append(f"{device}: diffuse failed: {err[-300:]}")
            continue
        got = load_file(out)
        for key, want in [("latents", latents), ("image", image)]:
            if key not in got or got[key].shape != want.shape:
                errors.append(f"{device}: {key} {tuple(got[key].shape) if key in got else 'missing'}, diffusers {tuple(want.shape)}")
                continue
            e = rel_l2(got[key], want)
            figures.append(f"{device} {key} {e:.1e}")
            if not e <= tol:
                errors.append(f"{device}: {key} relative L2 {e:.2e} > {tol:.1e}")
    return what, figures, errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--diffuse", default=str(ROOT / "target/debug/diffuse"))
    ap.add_argument("--unets", type=int, default=6)
    ap.add_argument("--schedulers", type=int, default=16)
    ap.add_argument("--latents", type=int, default=3)
    ap.add_argument("--edits", type=int, default=8)
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else int(time.time() * 1000) % 1_000_000_007
    print(f"seed {seed} (reproduce with --seed {seed})", flush=True)
    torch.set_num_threads(1)
    unet = UNet2DModel.from_pretrained(SCHEDULER_UNET).eval()
    unet64 = UNet2DModel.from_pretrained(SCHEDULER_UNET).eval().double()
    failures = []
    with tempfile.TemporaryDirectory(prefix="stepwise-random-") as tmp:
        work = Path(tmp)
        cases = ([("unet", seed + i) for i in range(a.unets)]
                 + [("scheduler", seed + 10_000 + i) for i in range(a.schedulers)]
                 + [("latent", seed + 20_000 + i) for i in range(a.latents)]
                 + [("edit", seed + 30_000 + i) for i in range(a.edits)])
        for kind, s in cases:
            if kind == "unet":
                what, figures, errors = check_unet(s, work, a.diffuse)
            elif kind == "scheduler":
                what, figures, errors = check_scheduler(s, work, a.diffuse, unet, unet64)
            elif kind == "latent":
                what, figures, errors = check_latent(s, work, a.diffuse)
            else:
                what, figures, errors = check_edit(s, work, a.diffuse, unet, unet64)
            print(("FAIL " if errors else "ok   ") + what + (" -> " + ", ".join(figures) if figures else ""), flush=True)
            for e in errors:
                print("     " + e, flush=True)
            if errors:
                failures.append(what)
    print(f"{len(failures)} of {len(cases)} random cases differ from diffusers")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
