//! `diffuse sweep` and `diffuse eval`: the sampler lab (stepwise::lab) from the command line. A
//! sweep measures how each sampler's final image approaches a fine reference run from the same
//! noise as its step count grows; eval scores many samples of one sampler setting as the model
//! cards do (classifier-space FID against held-out data, class accuracy).

use std::path::{Path, PathBuf};

use serde_json::json;
use stepwise::defaults::{ModelDefaults, Requested};
use stepwise::job::{self, Decode, Job, Labels, Mode, Model};
use stepwise::lab::eval::{downsample, Classifier, HeldOut};
use stepwise::lab::sweep::{self, summarize, Sweep, SweepEvent};
use stepwise::lab::SamplerChoice;
use stepwise::model::loader::{load_unet_files, DirSource};
use stepwise::model::UNet2DModel;
use stepwise::pipeline::{Control, NoiseSource};
use stepwise::sampler::{SamplerOptions, SchedulerConfig, TimestepSpacing};
use stepwise::{Backend, Error, Result};

use super::{save_png, write, Device};

#[derive(clap::Args)]
pub struct SweepArgs {
    /// A diffusers pipeline folder (model_index.json, unet/) or a bare UNet folder.
    #[arg(long)]
    model: PathBuf,
    /// Samplers to sweep, comma-separated: ddpm, ddim, dpm++2m, euler-a, … ; `ddim:0.5` is DDIM
    /// with η 0.5.
    #[arg(long, value_delimiter = ',', required = true)]
    samplers: Vec<SamplerChoice>,
    /// Step counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "5,10,20,50,100")]
    steps: Vec<usize>,
    /// x_T's seed; stochastic samplers' noise paths use seed, seed+1, …
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The reference sampler (default DDIM η=0: the probability-flow ODE).
    #[arg(long, default_value = "ddim")]
    reference: SamplerChoice,
    /// The reference's step count.
    #[arg(long, default_value_t = 1000)]
    reference_steps: usize,
    /// Noise paths per stochastic sampler (their spread).
    #[arg(long, default_value_t = 3)]
    paths: usize,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// The class for class-conditional models (default: spread over the batch).
    #[arg(long)]
    class: Option<i64>,
    /// Classifier-free guidance scale. Default: the model's, else 1.
    #[arg(long)]
    guidance: Option<f32>,
    /// timestep_spacing for every run (leading, trailing, linspace). Default: the config's.
    #[arg(long)]
    spacing: Option<TimestepSpacing>,
    /// Karras σs for every run (σ-space and DPM-Solver/UniPC/DEIS samplers only).
    #[arg(long)]
    karras: bool,
    /// Zero-terminal-SNR rescaled βs for every run.
    #[arg(long)]
    zero_snr: bool,
    /// sweep.json: every run's distance to the reference, and per sampler the median and range
    /// per step count with the log–log slope.
    #[arg(long)]
    output: PathBuf,
    /// A PNG grid: one row per sampler (noise path 0), the reference first, then each step
    /// count; under each image its difference from the reference (black = equal).
    #[arg(long)]
    png: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Device::Gpu)]
    device: Device,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    model: PathBuf,
    /// The sampler (`ddim:0.5` for DDIM with η 0.5). Default: the model's.
    #[arg(long)]
    sampler: Option<SamplerChoice>,
    /// Steps. Default: the model's, else 50 (1000 for DDPM).
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale. Default: the model's, else 1.
    #[arg(long)]
    guidance: Option<f32>,
    /// DDIM: rebuild ε from the clipped x̂0. Default: the model's, else off.
    #[arg(long)]
    clipped_model_output: bool,
    /// Samples (class-conditional models: n / classes per class).
    #[arg(long, default_value_t = 200)]
    n: usize,
    /// Seeds: class c draws with seed + c; unconditional chunks of 50 with seed + chunk.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The classifier (`.safetensors` with `.json`, `.heldout.safetensors` and `.heldout.json`
    /// beside it). Default: training/classifier/fashion for 1-channel models, emoji for 3.
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Writes the scores as JSON.
    #[arg(long)]
    output: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Device::Gpu)]
    device: Device,
}

/// A model folder opened for running, with its defaults.
struct Opened<B: Backend> {
    model: Model<B>,
    defaults: ModelDefaults,
}

fn open<B: Backend>(b: &B, dir: &Path) -> Result<Opened<B>> {
    let files = load_unet_files(&DirSource(dir.to_path_buf()))?;
    let scheduler = match &files.scheduler_config {
        Some(text) => SchedulerConfig::from_json_str(text)?,
        None => SchedulerConfig::default(),
    };
    let vae = stepwise::latent::load_vae(b, &DirSource(dir.to_path_buf()), &files.config)?;
    Ok(Opened {
        model: Model {
            unet: UNet2DModel::load(b, files.config.clone(), &files.weights)?,
            vae,
            scheduler,
        },
        defaults: files.defaults,
    })
}

pub fn sweep_main(a: &SweepArgs) -> Result<()> {
    match a.device {
        Device::Cpu => run_sweep(&stepwise::cpu::CpuBackend, a),
        Device::Gpu => {
            let g = pollster::block_on(stepwise::gpu::GpuBackend::new())?;
            run_sweep(&g, a)
        }
    }
}

pub fn eval_main(a: &EvalArgs) -> Result<()> {
    match a.device {
        Device::Cpu => run_eval(&stepwise::cpu::CpuBackend, a),
        Device::Gpu => {
            let g = pollster::block_on(stepwise::gpu::GpuBackend::new())?;
            run_eval(&g, a)
        }
    }
}

fn class_labels<B: Backend>(model: &Model<B>, class: Option<i64>) -> Result<Option<Labels>> {
    match (model.unet.config.num_class_embeds, class) {
        (Some(_), Some(c)) => Ok(Some(Labels::Same(c))),
        (Some(_), None) => Ok(Some(Labels::Spread)),
        (None, Some(_)) => Err(Error::input(
            "--class",
            "the model is not class-conditional",
        )),
        (None, None) => Ok(None),
    }
}

fn run_sweep<B: Backend>(b: &B, a: &SweepArgs) -> Result<()> {
    let opened = open(b, &a.model)?;
    let model = &opened.model;
    let settings = opened.defaults.resolve(
        Requested {
            guidance: a.guidance,
            ..Requested::default()
        },
        || Ok(model.scheduler.default_kind()?),
    )?;
    let spec = Sweep {
        samplers: a.samplers.clone(),
        steps: a.steps.clone(),
        seed: a.seed,
        paths: a.paths,
        reference: a.reference,
        reference_steps: a.reference_steps,
        batch: a.batch,
        labels: class_labels(model, a.class)?,
        guidance: settings.guidance,
        use_clipped_model_output: settings.use_clipped_model_output,
        record_paths: None,
        options: SamplerOptions {
            spacing: a.spacing,
            karras: a.karras,
            zero_snr: a.zero_snr,
            ..SamplerOptions::default()
        },
    };
    let plan = spec.plan(&model.scheduler)?;
    let total: usize = plan.iter().map(|r| r.evaluations).sum();
    eprintln!(
        "sweep: {} runs, {total} model evaluations (the reference: {} at {} steps)",
        plan.len(),
        a.reference.label(),
        a.reference_steps
    );
    let result = pollster::block_on(sweep::run(b, model, &spec, |ev| {
        match &ev {
            SweepEvent::Reference(r) => {
                eprintln!(
                    "reference {} {} steps: {:.1} s",
                    r.sampler.label(),
                    r.steps,
                    r.ms / 1e3
                )
            }
            SweepEvent::Cell(c) => eprintln!(
                "{:>12} {:>5} steps path {}: RMSE {:.5}  ({:.1} s)",
                c.run.sampler.label(),
                c.run.steps,
                c.path,
                c.rmse,
                c.run.ms / 1e3
            ),
            SweepEvent::Progress { .. } => {}
        }
        async { Control::Continue }
    }))?;
    let summary = summarize(&result, &model.scheduler);
    // The table: median RMSE per sampler and step count.
    print!("{:>14}", "RMSE to ref");
    for k in &a.steps {
        print!(" {:>9}", format!("{k} st"));
    }
    println!("    slope");
    for s in &summary {
        print!("{:>14}", s.sampler.label());
        for k in &a.steps {
            match s.points.iter().find(|p| p.0 == *k) {
                Some(p) => print!(" {:>9.5}", p.1),
                None => print!(" {:>9}", "-"),
            }
        }
        println!("    {}", s.slope.map_or("-".into(), |v| format!("{v:+.2}")));
    }
    let out = json!({
        "model": a.model.display().to_string(),
        "seed": a.seed,
        "paths": a.paths,
        "batch": a.batch,
        "guidance": spec.guidance,
        "use_clipped_model_output": spec.use_clipped_model_output,
        "spacing": a.spacing.map(|s| format!("{s:?}").to_lowercase()),
        "karras": a.karras,
        "zero_snr": a.zero_snr,
        "distance": "RMSE of the final images in pixel units (model space clamped to [-1, 1], halved: 0..1)",
        "reference": {
            "sampler": result.reference.sampler.name(),
            "label": result.reference.sampler.label(),
            "steps": result.reference.steps,
            "evaluations": result.reference.evaluations,
            "ms": result.reference.ms,
        },
        "cells": result.cells.iter().map(|c| json!({
            "sampler": c.run.sampler.name(),
            "label": c.run.sampler.label(),
            "eta": c.run.sampler.eta,
            "steps": c.run.steps,
            "evaluations": c.run.evaluations,
            "path": c.path,
            "rmse": c.rmse,
            "ms": c.run.ms,
        })).collect::<Vec<_>>(),
        "summary": summary.iter().map(|s| json!({
            "sampler": s.sampler.name(),
            "label": s.sampler.label(),
            "stochastic": s.stochastic,
            "slope": s.slope,
            "points": s.points.iter().map(|p| json!({
                "steps": p.0, "median": p.1, "min": p.2, "max": p.3,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&out).map_err(|e| Error::Other(e.to_string()))?;
    write(&a.output, text.as_bytes())?;
    if let Some(png) = &a.png {
        let (w, h, rgba) = sweep_grid(&result, &a.steps);
        save_png(png, w, h, rgba)?;
    }
    Ok(())
}

/// Rows of tiles, 4 pixels apart on black: per sampler (path 0) the reference then each step
/// count, and beneath that row each image's difference from the reference. Small images are
/// enlarged (nearest neighbour) to at least 64 pixels.
fn sweep_grid(result: &sweep::SweepResult, steps: &[usize]) -> (usize, usize, Vec<u8>) {
    let r = &result.reference.image;
    let (tw, th, _) = stepwise::image::grid_rgba(&r.data, r.shape);
    let scale = 64usize.div_ceil(tw.max(th)).max(1);
    let (cw, ch) = (tw * scale, th * scale);
    let gap = 4;
    let mut samplers: Vec<SamplerChoice> = Vec::new();
    for c in &result.cells {
        if !samplers.contains(&c.run.sampler) {
            samplers.push(c.run.sampler);
        }
    }
    let cols = steps.len() + 1;
    let rows = samplers.len() * 2;
    let (gw, gh) = (cols * (cw + gap) + gap, rows * (ch + gap) + gap);
    let mut out = vec![0u8; gw * gh * 4];
    out.chunks_exact_mut(4).for_each(|p| p[3] = 255);
    let mut put = |row: usize, col: usize, (w, h, rgba): (usize, usize, Vec<u8>)| {
        let (ox, oy) = (gap + col * (cw + gap), gap + row * (ch + gap));
        for y in 0..h * scale {
            for x in 0..w * scale {
                let s = ((y / scale) * w + x / scale) * 4;
                let d = ((oy + y) * gw + ox + x) * 4;
                out[d..d + 4].copy_from_slice(&rgba[s..s + 4]);
            }
        }
    };
    for (i, s) in samplers.iter().enumerate() {
        put(2 * i, 0, stepwise::image::grid_rgba(&r.data, r.shape));
        for (j, k) in steps.iter().enumerate() {
            let Some(c) = result
                .cells
                .iter()
                .find(|c| c.run.sampler == *s && c.run.steps == *k && c.path == 0)
            else {
                continue;
            };
            let img = &c.run.image;
            put(
                2 * i,
                j + 1,
                stepwise::image::grid_rgba(&img.data, img.shape),
            );
            put(
                2 * i + 1,
                j + 1,
                stepwise::image::difference_grid_rgba(&img.data, &r.data, img.shape, 0.25),
            );
        }
    }
    (gw, gh, out)
}

fn default_classifier(channels: usize) -> Result<PathBuf> {
    let name = match channels {
        1 => "fashion",
        3 => "emoji",
        c => {
            return Err(Error::input(
                "--classifier",
                format!("no default classifier for {c}-channel images: pass --classifier"),
            ))
        }
    };
    let p = PathBuf::from(format!("training/classifier/{name}.safetensors"));
    if p.exists() {
        Ok(p)
    } else {
        Err(Error::input(
            "--classifier",
            format!(
                "{} not found (run from the repository root, or pass --classifier)",
                p.display()
            ),
        ))
    }
}

fn run_eval<B: Backend>(b: &B, a: &EvalArgs) -> Result<()> {
    let opened = open(b, &a.model)?;
    let model = &opened.model;
    let settings = opened.defaults.resolve(
        Requested {
            sampler: a.sampler.map(|s| s.kind),
            steps: a.steps,
            eta: a.sampler.map(|s| s.eta),
            guidance: a.guidance,
            use_clipped_model_output: a.clipped_model_output.then_some(true),
        },
        || Ok(model.scheduler.default_kind()?),
    )?;
    let image_channels = match &model.vae {
        Some(v) => v.config.out_channels,
        None => model.unet.config.out_channels,
    };
    let cls_path = match &a.classifier {
        Some(p) => p.clone(),
        None => default_classifier(image_channels)?,
    };
    let clf = Classifier::load(&cls_path)?;
    let held = HeldOut::load(&cls_path)?;
    if a.n < 2 {
        return Err(Error::input("--n", "FID needs at least 2 samples"));
    }
    let conditional = model.unet.config.num_class_embeds;
    // The batches: (labels, batch, seed), as training/sampler_table.py draws them.
    let jobs: Vec<(Option<i64>, usize, u64)> = match conditional {
        Some(k) => {
            let classes = k.max(2) - 1;
            let per = a.n / classes;
            if per == 0 {
                return Err(Error::input(
                    "--n",
                    format!("at least one sample per class: {classes} or more"),
                ));
            }
            (0..classes)
                .map(|c| (Some(c as i64), per, a.seed + c as u64))
                .collect()
        }
        None => (0..a.n.div_ceil(50))
            .map(|i| (None, 50.min(a.n - i * 50), a.seed + i as u64))
            .collect(),
    };
    let t0 = std::time::Instant::now();
    let mut features = Vec::new();
    let (mut correct, mut counted) = (0usize, 0usize);
    let mut evaluations = 0usize;
    for (label, batch, seed) in &jobs {
        let job = Job {
            sampler: settings.sampler,
            steps: settings.steps,
            eta: settings.eta,
            use_clipped_model_output: settings.use_clipped_model_output,
            noise: NoiseSource::Seeded(*seed),
            seed: *seed,
            labels: label.map(Labels::Same),
            guidance: settings.guidance,
            mode: Mode::Generate { batch: *batch },
            decode: Decode::Never,
            options: Default::default(),
        };
        evaluations = job.scheduler(&model.scheduler)?.timesteps().len();
        let out = pollster::block_on(job::run(b, model, &job, |_| async { Control::Continue }))?;
        let (mut data, mut shape) = match out.image {
            Some(img) => (img.data, img.shape),
            None => (out.sample, out.shape),
        };
        data.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0));
        if shape[2] != clf.image_size {
            let factor = shape[2] / clf.image_size;
            if factor < 2 || shape[2] != factor * clf.image_size || shape[3] != shape[2] {
                return Err(Error::input(
                    "model",
                    format!(
                        "samples are {}×{}, the classifier takes {s}×{s}",
                        shape[3],
                        shape[2],
                        s = clf.image_size
                    ),
                ));
            }
            (data, shape) = downsample(&data, shape, factor);
        }
        let f = clf.features(&data, shape)?;
        if let Some(c) = label {
            let logits = clf.logits(&f);
            let k = clf.classes.len().max(1);
            for row in logits.chunks_exact(k) {
                let arg = row
                    .iter()
                    .enumerate()
                    .max_by(|x, y| x.1.total_cmp(y.1))
                    .map_or(0, |(i, _)| i);
                correct += usize::from(arg as i64 == *c);
                counted += 1;
            }
        }
        features.extend(f);
        eprintln!(
            "  {} samples{} ({:.0} s)",
            features.len() / clf.features,
            label.map_or(String::new(), |c| format!(", class {c}")),
            t0.elapsed().as_secs_f64()
        );
    }
    let n = features.len() / clf.features;
    let fid = held.fid(&features)?;
    let floor = held.floors.get(&n).copied();
    let accuracy = (counted > 0).then(|| correct as f64 / counted as f64);
    let label = SamplerChoice {
        kind: settings.sampler,
        eta: settings.eta,
    }
    .label();
    println!(
        "{label}, {} steps ({evaluations} model evaluations), guidance {}: FID {fid:.2} over {n} samples (floor at this n: {}){}",
        settings.steps,
        settings.guidance,
        floor.map_or("not tabulated".into(), |f| format!("{f:.2}")),
        accuracy.map_or(String::new(), |x| format!(", {:.1} % recognised", x * 100.0)),
    );
    if let Some(path) = &a.output {
        let out = json!({
            "model": a.model.display().to_string(),
            "sampler": settings.sampler.name(),
            "eta": settings.eta,
            "steps": settings.steps,
            "evaluations": evaluations,
            "guidance": settings.guidance,
            "use_clipped_model_output": settings.use_clipped_model_output,
            "n": n,
            "seed": a.seed,
            "fid": fid,
            "floor_fid": floor,
            "accuracy": accuracy,
            "classifier": cls_path.display().to_string(),
            "seconds": t0.elapsed().as_secs_f64(),
        });
        let text = serde_json::to_string_pretty(&out).map_err(|e| Error::Other(e.to_string()))?;
        write(path, text.as_bytes())?;
    }
    Ok(())
}
