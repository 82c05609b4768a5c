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
    use stepwise::gpu::GpuBackend;
    use stepwise::io::{read_tensors, write_tensors};
    use stepwise::model::loader::{load_unet_files, DirSource};
    use stepwise::model::UNet2DModel;
    use stepwise::{Backend, Error, Result, Tensor};

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
}
