//! `diffuse`: the native CLI over the same engine as the web app, for scripts, parity checks and
//! benchmarks.

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;

    use clap::{Parser, Subcommand, ValueEnum};
    use stepwise::cpu::CpuBackend;
    use stepwise::defaults::Requested;
    use stepwise::gpu::GpuBackend;
    use stepwise::io::{read_tensors, write_tensors};
    use stepwise::job::{self, Decode, Event, Job, Labels, Mode, Model};
    use stepwise::model::loader::{load_unet_files, DirSource};
    use stepwise::model::UNet2DConfig;
    use stepwise::model::UNet2DModel;
    use stepwise::pipeline::{Control, NoiseSource};
    use stepwise::sampler::{self, SamplerKind, SamplerOptions, SchedulerConfig, TimestepSpacing};
    use stepwise::{Backend, Error, Result, Tensor};

    // edit, inpaint, upscale: src/bin/cli/edit.rs
    mod edit;
    // sweep, eval: src/bin/cli/lab.rs
    mod lab;

    #[derive(Parser)]
    #[command(
        name = "diffuse",
        version,
        about = "Run diffusers UNet2DModel folders on the GPU (wgpu) or the CPU"
    )]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
    enum Device {
        /// WebGPU-class GPU through wgpu (Vulkan/Metal/DX12); set WGPU_BACKEND to choose the API.
        Gpu,
        /// The CPU reference backend.
        Cpu,
    }

    #[derive(Subcommand)]
    enum Command {
        /// One UNet forward pass: reads `sample`, `timestep` (and `class_labels`) from --input,
        /// writes the model output as `sample` to --output.
        Forward {
            /// A diffusers pipeline folder (model_index.json, unet/) or a bare UNet folder.
            #[arg(long)]
            model: PathBuf,
            /// .safetensors with `sample` [N,C,H,W], `timestep` [N] (f32 or i64), `class_labels` [N] (i64).
            #[arg(long)]
            input: PathBuf,
            /// .safetensors to write, holding `sample`.
            #[arg(long)]
            output: PathBuf,
            #[arg(long, value_enum, default_value_t = Device::Gpu)]
            device: Device,
        },
        /// Runs the reverse process and writes the final image (PNG grid) or the final sample
        /// (`.safetensors`, key `sample`, model space, before any clamping).
        Sample(SampleArgs),
        /// SDEdit: noises --input to the timestep --strength selects and denoises it from there.
        Edit(edit::EditArgs),
        /// RePaint inpainting: regenerates the white region of --mask, keeps the rest of --input.
        Inpaint(edit::InpaintArgs),
        /// Super-resolution with a conditional UNet (in_channels = 2 × out_channels): --input is
        /// the low-resolution image, the output has the model's sample_size.
        Upscale(edit::UpscaleArgs),
        /// Times UNet forward passes (each read back) and prints the median ms per pass, on the
        /// GPU, the CPU reference, or both and their ratio (the numbers in BENCHMARKS.md).
        Bench(BenchArgs),
        /// Sampler convergence: from one noise, a fine reference run and each sampler at each
        /// step count; prints and writes each final image's RMSE to the reference.
        Sweep(lab::SweepArgs),
        /// Scores one sampler setting as the model cards do: classifier-space FID against
        /// held-out data beside the floor, and class accuracy for class-conditional models.
        Eval(lab::EvalArgs),
    }

    #[derive(clap::Args)]
    struct SampleArgs {
        #[arg(long)]
        model: PathBuf,
        /// ddpm, ddim, dpm++2m, euler-a, dpm++2m-sde, unipc, dpm++2s, deis, heun, lms or pndm
        /// (any of them on any model's training schedule). Default: the model's (`stepwise.json`
        /// `defaults`), else its scheduler config's class.
        #[arg(long)]
        sampler: Option<SamplerKind>,
        /// Number of denoising steps (1 to the model's num_train_timesteps). Default: the
        /// model's, else 50 (1000 for DDPM), as diffusers' pipelines.
        #[arg(long)]
        steps: Option<usize>,
        /// DDIM's η: 0 is deterministic, 1 is DDPM-like. Default: the model's, else 0.
        #[arg(long)]
        eta: Option<f32>,
        /// Classifier-free guidance scale for class-conditional models (1 = no guidance).
        /// Default: the model's, else 1.
        #[arg(long)]
        guidance: Option<f32>,
        /// DDIM: rebuild ε from the clipped x̂0 (diffusers' `use_clipped_model_output`).
        /// Default: the model's, else off (diffusers' default).
        #[arg(long)]
        clipped_model_output: bool,
        /// Timestep spacing: leading, linspace or trailing (Lin et al. 2023, table 2), over the
        /// scheduler config's `timestep_spacing` (every sampler but dpm++2s).
        #[arg(long)]
        spacing: Option<TimestepSpacing>,
        /// Karras σ's (`use_karras_sigmas`): the DPM-Solvers, unipc, deis, heun, lms.
        #[arg(long)]
        karras: bool,
        /// Rescale β to zero terminal SNR (`rescale_betas_zero_snr`, Lin et al. 2023): ddpm,
        /// ddim, dpm++2m, dpm++2m-sde, euler-a, unipc.
        #[arg(long)]
        zero_snr: bool,
        /// Solver order 1–3 (`solver_order`): the DPM-Solvers, unipc, deis.
        #[arg(long)]
        solver_order: Option<usize>,
        /// `solver_type`: midpoint or heun (the DPM-Solvers), bh1 or bh2 (unipc).
        #[arg(long)]
        solver_type: Option<String>,
        /// The class to draw, for class-conditional models.
        #[arg(long)]
        class: Option<i64>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// .safetensors with `init` (N×C×H×W) and, for stochastic samplers, `step_noise` (K×N×C×H×W).
        #[arg(long)]
        noise: Option<PathBuf>,
        /// OUT.png (image grid) or OUT.safetensors (`sample`).
        #[arg(long)]
        output: PathBuf,
        /// Writes one PNG per step (x_t beside x̂0) into this folder.
        #[arg(long)]
        frames: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Device::Gpu)]
        device: Device,
    }

    pub fn main() -> ExitCode {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
        let cli = Cli::parse();
        let result = match cli.command {
            Command::Forward {
                model,
                input,
                output,
                device,
            } => forward(&model, &input, &output, device),
            Command::Bench(args) => bench(&args),
            Command::Sweep(args) => lab::sweep_main(&args),
            Command::Eval(args) => lab::eval_main(&args),
            Command::Edit(args) => edit::main(edit::Task::Edit(args)),
            Command::Inpaint(args) => edit::main(edit::Task::Inpaint(args)),
            Command::Upscale(args) => edit::main(edit::Task::Upscale(args)),
            Command::Sample(args) => match args.device {
                Device::Cpu => sample(&CpuBackend, &args),
                Device::Gpu => {
                    pollster::block_on(GpuBackend::new()).and_then(|g| sample(&g, &args))
                }
            },
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("diffuse: error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn read(path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })
    }

    fn write(path: &Path, bytes: &[u8]) -> Result<()> {
        std::fs::write(path, bytes).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })
    }

    fn forward(model: &Path, input: &Path, output: &Path, device: Device) -> Result<()> {
        let inputs = read_tensors(&read(input)?, &input.display().to_string())?;
        let get = |name: &str| {
            inputs
                .get(name)
                .ok_or_else(|| Error::input(name, format!("missing from {}", input.display())))
        };
        let sample = get("sample")?;
        let timesteps = get("timestep")?.to_f32();
        let labels = inputs
            .get("class_labels")
            .map(|t| t.to_i64("class_labels"))
            .transpose()?;
        let files = load_unet_files(&DirSource(model.to_path_buf()))?;
        let sample_data = sample.to_f32();
        let out = match device {
            Device::Cpu => run(
                &CpuBackend,
                &files,
                &sample.shape,
                &sample_data,
                &timesteps,
                labels.as_deref(),
            )?,
            Device::Gpu => {
                let gpu = pollster::block_on(GpuBackend::new())?;
                log::info!("GPU: {}", gpu.name());
                run(
                    &gpu,
                    &files,
                    &sample.shape,
                    &sample_data,
                    &timesteps,
                    labels.as_deref(),
                )?
            }
        };
        write(output, &write_tensors(&[("sample", &out.0, &out.1)])?)
    }

    fn run<B: Backend>(
        b: &B,
        files: &stepwise::model::loader::UNetFiles,
        shape: &[usize],
        sample: &[f32],
        timesteps: &[f32],
        labels: Option<&[i64]>,
    ) -> Result<(Vec<usize>, Vec<f32>)> {
        let unet = UNet2DModel::load(b, files.config.clone(), &files.weights)?;
        unet.check_inputs(shape, timesteps, labels)?;
        let x = b.upload(shape, sample)?;
        let y = unet.forward(b, &x, timesteps, labels)?;
        let data = pollster::block_on(b.download(&y))?;
        Ok((y.shape().to_vec(), data))
    }

    fn save_png(path: &Path, w: usize, h: usize, rgba: Vec<u8>) -> Result<()> {
        let img = image::RgbaImage::from_raw(w as u32, h as u32, rgba)
            .ok_or_else(|| Error::Other("image buffer size".into()))?;
        img.save(path)
            .map_err(|e| Error::Other(format!("writing {}: {e}", path.display())))
    }

    /// The noise of a run of `steps` steps on `shape`: seeded, or `init` and `step_noise` read
    /// from a .safetensors file (checked against the run).
    pub(crate) fn noise_source(
        path: Option<&Path>,
        seed: u64,
        shape: [usize; 4],
        steps: usize,
    ) -> Result<NoiseSource> {
        let Some(p) = path else {
            return Ok(NoiseSource::Seeded(seed));
        };
        let t = read_tensors(&read(p)?, &p.display().to_string())?;
        let init = t
            .get("init")
            .ok_or_else(|| Error::input("init", format!("missing from {}", p.display())))?;
        if init.shape != shape {
            return Err(Error::input(
                "init",
                format!("shape {:?}, the run samples {shape:?}", init.shape),
            ));
        }
        let len: usize = shape.iter().product();
        let step_noise = t.get("step_noise").map(|s| s.to_f32());
        if let Some(s) = &step_noise {
            if s.len() < steps * len {
                return Err(Error::input(
                    "step_noise",
                    format!("{} values, {steps} steps need {}", s.len(), steps * len),
                ));
            }
        }
        Ok(NoiseSource::Injected {
            init: init.to_f32(),
            step_noise,
        })
    }

    /// `--class` against the model: required by class-conditional models, refused by others.
    pub(crate) fn labels(cfg: &UNet2DConfig, class: Option<i64>) -> Result<Option<Labels>> {
        match (cfg.num_class_embeds, class) {
            (Some(_), Some(c)) => Ok(Some(Labels::Same(c))),
            (Some(_), None) => Err(Error::input(
                "--class",
                "required: the model is class-conditional",
            )),
            (None, Some(_)) => Err(Error::input(
                "--class",
                "the model is not class-conditional",
            )),
            (None, None) => Ok(None),
        }
    }

    /// Creates the `--frames` folder.
    pub(crate) fn frames_dir(dir: Option<&Path>) -> Result<()> {
        match dir {
            Some(dir) => std::fs::create_dir_all(dir).map_err(|e| Error::Io {
                path: dir.display().to_string(),
                source: e,
            }),
            None => Ok(()),
        }
    }

    fn sample<B: Backend>(b: &B, a: &SampleArgs) -> Result<()> {
        let files = load_unet_files(&DirSource(a.model.clone()))?;
        let sched_cfg = match &files.scheduler_config {
            Some(text) => SchedulerConfig::from_json_str(text)?,
            None => SchedulerConfig::default(),
        };
        let settings = files.defaults.resolve(
            Requested {
                sampler: a.sampler,
                steps: a.steps,
                eta: a.eta,
                guidance: a.guidance,
                use_clipped_model_output: a.clipped_model_output.then_some(true),
            },
            || Ok(sched_cfg.default_kind()?),
        )?;
        log::info!("run settings: {settings:?}");
        let options = SamplerOptions {
            spacing: a.spacing,
            karras: a.karras,
            zero_snr: a.zero_snr,
            solver_order: a.solver_order,
            solver_type: a.solver_type.clone(),
        };
        let sched_cfg = options.apply(settings.sampler, &sched_cfg)?;
        // Checked before any weight is loaded.
        sampler::build(settings.sampler, &sched_cfg, settings.eta)?
            .set_timesteps(settings.steps)?;
        let cfg = &files.config;
        let vae = stepwise::latent::load_vae(b, &DirSource(a.model.clone()), cfg)?;
        let (h, w) = stepwise::edit::sample_hw(cfg)?;
        let shape = [a.batch, cfg.in_channels, h, w];
        let job = Job {
            sampler: settings.sampler,
            steps: settings.steps,
            eta: settings.eta,
            use_clipped_model_output: settings.use_clipped_model_output,
            noise: noise_source(a.noise.as_deref(), a.seed, shape, settings.steps)?,
            seed: a.seed,
            labels: labels(cfg, a.class)?,
            guidance: settings.guidance,
            mode: Mode::Generate { batch: a.batch },
            decode: if a.frames.is_some() {
                Decode::Every
            } else {
                Decode::Never
            },
            // Already written into `sched_cfg` (checked above, before the weights load).
            options: SamplerOptions::default(),
        };
        frames_dir(a.frames.as_deref())?;
        let model = Model {
            unet: UNet2DModel::load(b, files.config.clone(), &files.weights)?,
            vae,
            scheduler: sched_cfg,
        };
        let frames = a.frames.clone();
        let mut frame_error = None;
        let out = pollster::block_on(job::run(b, &model, &job, |ev| {
            if let (Some(dir), Event::Step(st)) = (&frames, ev) {
                let ev = &st.event;
                let frame = match &st.decoded {
                    // A latent model's step: the latent channels of x_t (sample 0) beside the
                    // decoded x̂0 grid.
                    Some(d) => side_by_side(&[
                        stepwise::latent::channel_panels_rgba(&ev.sample, shape, 0),
                        stepwise::image::grid_rgba(&d.picture.data, d.picture.shape),
                    ]),
                    None => pixel_frame(&ev.sample, &ev.pred_original, shape),
                };
                let (fw, fh, rgba) = frame;
                if let Err(e) =
                    save_png(&dir.join(format!("step_{:04}.png", ev.index)), fw, fh, rgba)
                {
                    frame_error = Some(e);
                }
            }
            let stop = if frame_error.is_some() {
                Control::Stop
            } else {
                Control::Continue
            };
            async move { stop }
        }))?;
        if let Some(e) = frame_error {
            return Err(e);
        }
        let ext = a
            .output
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let bad_ext = || {
            Err(Error::input(
                "--output",
                format!("{} must end in .png or .safetensors", a.output.display()),
            ))
        };
        match (&out.image, ext.as_str()) {
            (Some(img), "safetensors") => write(
                &a.output,
                &write_tensors(&[
                    ("latents", &shape, &out.sample),
                    ("sample", &shape, &out.sample),
                    ("image", &img.shape, &img.data),
                ])?,
            ),
            (Some(img), "png") => {
                let (gw, gh, rgba) = stepwise::image::grid_rgba(&img.data, img.shape);
                save_png(&a.output, gw, gh, rgba)
            }
            (None, "safetensors") => write(
                &a.output,
                &write_tensors(&[("sample", &shape, &out.sample)])?,
            ),
            (None, "png") => {
                let (gw, gh, rgba) = stepwise::image::grid_rgba(&out.sample, shape);
                save_png(&a.output, gw, gh, rgba)
            }
            _ => bad_ext(),
        }
    }

    /// x_t beside x̂0 (every sample of the batch), 4 pixels apart.
    fn pixel_frame(xt: &[f32], x0: &[f32], shape: [usize; 4]) -> (usize, usize, Vec<u8>) {
        let (gw, gh, xt) = stepwise::image::grid_rgba(xt, shape);
        let (_, _, x0) = stepwise::image::grid_rgba(x0, shape);
        side_by_side(&[(gw, gh, xt), (gw, gh, x0)])
    }

    /// Images placed left to right, 4 pixels apart, top-aligned on black.
    fn side_by_side(parts: &[(usize, usize, Vec<u8>)]) -> (usize, usize, Vec<u8>) {
        let gap = 4;
        let fw = parts.iter().map(|p| p.0).sum::<usize>() + gap * (parts.len() - 1);
        let fh = parts.iter().map(|p| p.1).max().unwrap_or(0);
        let mut rgba = vec![0u8; fw * fh * 4];
        let mut ox = 0;
        for (w, h, px) in parts {
            for y in 0..*h {
                rgba[(y * fw + ox) * 4..(y * fw + ox + w) * 4]
                    .copy_from_slice(&px[y * w * 4..(y + 1) * w * 4]);
            }
            ox += w + gap;
        }
        (fw, fh, rgba)
    }

    #[derive(clap::Args)]
    struct BenchArgs {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Timed passes per backend (after one warm-up pass).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// One backend only; both when absent.
        #[arg(long, value_enum)]
        device: Option<Device>,
        /// A `bench_input_b{N}.json` from training/export_onnx.py: run its input and check
        /// the output against PyTorch's before timing (the peers check the same file).
        #[arg(long)]
        check: Option<PathBuf>,
        /// Also print one `RESULT {json}` line per backend for scripts.
        #[arg(long)]
        json: bool,
        /// Threads for the CPU backend (default: every core, or `STEPWISE_THREADS`).
        #[arg(long)]
        threads: Option<usize>,
    }

    /// The benchmark's input: the seeded one from export_onnx.py (with PyTorch's output to check
    /// against), or seeded noise at t = 500 with class 0.
    struct BenchInput {
        shape: [usize; 4],
        sample: Vec<f32>,
        timesteps: Vec<f32>,
        labels: Option<Vec<i64>>,
        expected: Option<Vec<f32>>,
    }

    fn bench_input(args: &BenchArgs, cfg: &stepwise::model::UNet2DConfig) -> Result<BenchInput> {
        let Some(path) = &args.check else {
            let (h, w) = cfg.sample_size.map(|s| s.hw()).unwrap_or((32, 32));
            let shape = [args.batch, cfg.in_channels, h, w];
            return Ok(BenchInput {
                shape,
                sample: stepwise::noise::randn(0, 0, shape.iter().product()),
                timesteps: vec![500.0],
                labels: cfg.num_class_embeds.map(|_| vec![0; args.batch]),
                expected: None,
            });
        };
        let bad = |what: &str| Error::Other(format!("{}: {what}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(&e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
        let floats = |p: &str| -> Result<Vec<f32>> {
            v.pointer(p)
                .and_then(|a| a.as_array())
                .ok_or_else(|| bad(&format!("no {p}")))?
                .iter()
                .map(|x| x.as_f64().map(|x| x as f32).ok_or_else(|| bad(p)))
                .collect()
        };
        let dims: Vec<usize> = v
            .pointer("/inputs/sample/shape")
            .and_then(|a| a.as_array())
            .ok_or_else(|| bad("no /inputs/sample/shape"))?
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as usize))
            .collect();
        let shape: [usize; 4] = dims
            .try_into()
            .map_err(|_| bad("the sample shape is not 4-D"))?;
        let labels = match v.pointer("/inputs/class_labels/data") {
            Some(_) => Some(
                floats("/inputs/class_labels/data")?
                    .into_iter()
                    .map(|x| x as i64)
                    .collect(),
            ),
            None => None,
        };
        Ok(BenchInput {
            shape,
            sample: floats("/inputs/sample/data")?,
            timesteps: floats("/inputs/timestep/data")?,
            labels,
            expected: Some(floats("/expected/data")?),
        })
    }

    /// Per-pass milliseconds of `runs` forward passes (each read back, so the GPU work is
    /// finished), after one warm-up pass whose output is checked against `input.expected`
    /// (relative L2 within `tol`).
    fn time_forward<B: Backend>(
        b: &B,
        files: &stepwise::model::loader::UNetFiles,
        input: &BenchInput,
        runs: usize,
        tol: f64,
    ) -> Result<Timing> {
        let unet = UNet2DModel::load(b, files.config.clone(), &files.weights)?;
        let x = b.upload(&input.shape, &input.sample)?;
        // The whole forward, and the part before the download: on the GPU that is the host's
        // time to record and submit the commands, the overhead that is left when kernels are fast.
        let pass = || -> Result<(Vec<f32>, f64, Option<f64>)> {
            let start = std::time::Instant::now();
            let cpu0 = thread_cpu_ms();
            let y = unet.forward(b, &x, &input.timesteps, input.labels.as_deref())?;
            let record = start.elapsed().as_secs_f64() * 1000.0;
            let out = pollster::block_on(b.download(&y))?;
            let host = cpu0.zip(thread_cpu_ms()).map(|(a, b)| b - a);
            Ok((out, record, host))
        };
        let (first, ..) = pass()?;
        let err = input
            .expected
            .as_ref()
            .map(|want| stepwise::io::rel_l2(&first, want));
        if let Some(e) = err {
            if e.is_nan() || e > tol {
                return Err(Error::Other(format!(
                    "{}: output differs from PyTorch's (relative L2 {e:e} > {tol:e}); not timing it",
                    b.name()
                )));
            }
        }
        let mut t = Timing {
            times: Vec::with_capacity(runs),
            record: Vec::with_capacity(runs),
            host: Vec::with_capacity(runs),
            err,
        };
        for _ in 0..runs {
            let start = std::time::Instant::now();
            let (_, record, host) = pass()?;
            t.times.push(start.elapsed().as_secs_f64() * 1000.0);
            t.record.push(record);
            t.host.extend(host);
        }
        Ok(t)
    }

    /// With `STEPWISE_PROFILE=1`: GPU time per kernel per forward, from timestamp queries.
    fn print_profile(gpu: &GpuBackend, forwards: usize) {
        if !stepwise::gpu::profile::requested() {
            return;
        }
        let Some(p) = &gpu.ctx.profiler else {
            println!("profile: this adapter has no timestamp queries inside passes");
            return;
        };
        let kernels = p.report();
        let total: f64 = kernels.iter().map(|k| k.ms).sum();
        let f = forwards as f64;
        println!(
            "GPU time per forward, {forwards} forwards, each dispatch timed alone: {:.3} ms",
            total / f
        );
        for k in kernels {
            println!(
                "  {:<22} {:>5} dispatches {:>9.3} ms {:>5.1} %",
                k.entry,
                k.dispatches / forwards as u64,
                k.ms / f,
                100.0 * k.ms / total
            );
        }
    }

    /// CPU time this thread has used, in ms (Unix): a forward's host cost, whichever part of
    /// it (recording, encoding, submitting, mapping) does the work, and without the waits.
    fn thread_cpu_ms() -> Option<f64> {
        #[cfg(unix)]
        {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid out-pointer; the clock id is a constant libc knows.
            let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            (rc == 0).then(|| ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6)
        }
        #[cfg(not(unix))]
        None
    }

    /// Milliseconds per forward, the host's part of each (before the download), and the check.
    struct Timing {
        times: Vec<f64>,
        record: Vec<f64>,
        /// This thread's CPU time per forward (empty where unsupported).
        host: Vec<f64>,
        err: Option<f64>,
    }

    fn median(v: &[f64]) -> f64 {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }

    fn bench(args: &BenchArgs) -> Result<()> {
        let files = load_unet_files(&DirSource(args.model.to_path_buf()))?;
        let input = bench_input(args, &files.config)?;
        let params: usize = files
            .weights
            .keys()
            .filter_map(|k| files.weights.shape_of(k))
            .map(|s| s.iter().product::<usize>())
            .sum();
        println!(
            "model {} ({:.2}M params), input {:?}, {} runs",
            args.model.display(),
            params as f64 / 1e6,
            input.shape,
            args.runs
        );
        let report = |name: &str, label: &str, t: Timing| {
            let Timing {
                times,
                record,
                host,
                err,
            } = t;
            let m = median(&times);
            let lo = times.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = times.iter().copied().fold(0.0, f64::max);
            let rec = median(&record);
            let cpu = (!host.is_empty()).then(|| median(&host));
            let check = err.map_or(String::new(), |e| format!(", rel L2 vs PyTorch {e:.1e}"));
            let cpu_txt = cpu.map_or(String::new(), |c| format!(", host CPU {c:.2}"));
            println!(
                "{name}  {m:>10.2} ms/forward median (min {lo:.2}, max {hi:.2}; host record \
                 {rec:.2}{cpu_txt}; {label}{check})"
            );
            if args.json {
                println!(
                    "RESULT {}",
                    serde_json::json!({
                        "backend": name, "adapter": label, "batch": input.shape[0],
                        "median_ms": m, "min_ms": lo, "max_ms": hi, "runs": times.len(),
                        "record_ms": rec, "host_cpu_ms": cpu, "rel_l2": err,
                    })
                );
            }
            m
        };
        let g = match args.device {
            Some(Device::Cpu) => None,
            _ => {
                let gpu = pollster::block_on(GpuBackend::new())?;
                // f16 arithmetic costs about 1e-3 per forward (BENCHMARKS.md): checked at 1e-2.
                let f16_arith = gpu.ctx.f16_arith.get() && gpu.ctx.tiled.get();
                let tol = if f16_arith { 1e-2 } else { 1e-3 };
                let t = time_forward(&gpu, &files, &input, args.runs, tol)?;
                let m = report("gpu", &gpu.name(), t);
                println!(
                    "gpu buffers held: {:.1} MiB (weights, pooled activations, readback)",
                    gpu.ctx.bytes_held() as f64 / (1 << 20) as f64
                );
                print_profile(&gpu, args.runs + 1);
                Some(m)
            }
        };
        let c = match args.device {
            Some(Device::Gpu) => None,
            _ => {
                if let Some(t) = args.threads {
                    stepwise::cpu::threads::init(t).map_err(Error::Other)?;
                }
                let threads = stepwise::cpu::threads::count();
                let t = time_forward(&CpuBackend, &files, &input, args.runs, 1e-3)?;
                let label = format!("{}, {threads} thread(s)", CpuBackend.name());
                Some(report("cpu", &label, t))
            }
        };
        if let (Some(g), Some(c)) = (g, c) {
            println!("gpu/cpu speed ratio: {:.2}x", c / g);
        }
        Ok(())
    }
}
