//! Speed measured in the page: latent against pixel steps, and forward passes for the browser
//! benchmark.

use super::*;
use crate::backend::Backend;
use crate::cpu::CpuBackend;
use crate::device::clock::now_ms;
use crate::model::UNet2DModel;

/// Latent against pixel diffusion on this device: median milliseconds of one UNet step of each
/// at the same output size, and of one decode.
#[derive(Clone, Debug, PartialEq)]
pub struct SpeedReport {
    /// The latent UNet's sample `[C, h, w]` and the image size `[C, H, W]`.
    pub latent_shape: [usize; 3],
    pub image_shape: [usize; 3],
    pub latent_step_ms: f64,
    pub decode_ms: f64,
    pub pixel_step_ms: f64,
}

/// Median of `runs` timed calls of `f` after one warm-up (each call reads its result back, so
/// the GPU work is finished).
async fn median_ms<Fut: std::future::Future<Output = Result<(), String>>>(
    runs: usize,
    mut f: impl FnMut() -> Fut,
) -> Result<f64, String> {
    f().await?;
    let mut t = time_runs(runs, f).await?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// The wall time in ms of each of `runs` calls of `f` (no warm-up), yielding to the browser
/// between calls, outside the timed part.
async fn time_runs<T, Fut: std::future::Future<Output = Result<T, String>>>(
    runs: usize,
    mut f: impl FnMut() -> Fut,
) -> Result<Vec<f64>, String> {
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = now_ms();
        f().await?;
        t.push(now_ms() - t0);
        yield_to_browser(0).await;
    }
    Ok(t)
}

async fn speed_on<B: Backend>(
    b: &B,
    latent: &Loaded<B>,
    pixel: &Loaded<B>,
    info: &ModelInfo,
) -> Result<SpeedReport, String> {
    let l = info.latent.as_ref().ok_or("not a latent model")?;
    let vae = latent.vae.as_ref().ok_or("not a latent model")?;
    let err = |e: crate::Error| e.to_string();
    let lshape = [1, info.channels, info.height, info.width];
    let ishape = [1, l.image_channels, l.image_height, l.image_width];
    let pix_c = pixel.unet.config.in_channels;
    let pshape = [1, pix_c, l.image_height, l.image_width];
    let labels = |u: &UNet2DModel<B>| u.config.num_class_embeds.map(|_| vec![0i64]);
    let z = b
        .upload(&lshape, &crate::noise::randn(1, 0, lshape.iter().product()))
        .map_err(err)?;
    let x = b
        .upload(&pshape, &crate::noise::randn(2, 0, pshape.iter().product()))
        .map_err(err)?;
    let runs = 5;
    let latent_step_ms = median_ms(runs, || async {
        let y = latent
            .unet
            .forward(b, &z, &[500.0], labels(&latent.unet).as_deref())
            .map_err(err)?;
        b.download(&y).await.map(|_| ()).map_err(err)
    })
    .await?;
    let decode_ms = median_ms(runs, || async {
        let y = vae.decode_latents(b, &z).map_err(err)?;
        b.download(&y).await.map(|_| ()).map_err(err)
    })
    .await?;
    let pixel_step_ms = median_ms(runs, || async {
        let y = pixel
            .unet
            .forward(b, &x, &[500.0], labels(&pixel.unet).as_deref())
            .map_err(err)?;
        b.download(&y).await.map(|_| ()).map_err(err)
    })
    .await?;
    Ok(SpeedReport {
        latent_shape: [lshape[1], lshape[2], lshape[3]],
        image_shape: [ishape[1], ishape[2], ishape[3]],
        latent_step_ms,
        decode_ms,
        pixel_step_ms,
    })
}

/// Times the latent model at `latent_url` against the pixel model at `pixel_url` (both already
/// loaded), the pixel UNet run at the latent model's output size.
pub async fn measure_speed(
    latent_url: &str,
    info: &ModelInfo,
    pixel_url: &str,
) -> Result<SpeedReport, String> {
    let compute = COMPUTE
        .with(|c| c.borrow().clone())
        .ok_or("the backend is not ready yet")?;
    let get = |u: &str| {
        MODELS
            .with(|m| m.borrow().get(u.trim_end_matches('/')).cloned())
            .ok_or_else(|| format!("model {u} is not loaded"))
    };
    let (lat, pix) = (get(latent_url)?, get(pixel_url)?);
    match (&*compute, &*lat, &*pix) {
        (Compute::Gpu(b), Net::Gpu(l), Net::Gpu(p)) => speed_on(b, l, p, info).await,
        (Compute::Cpu(b), Net::Cpu(l), Net::Cpu(p)) => speed_on(b, l, p, info).await,
        _ => Err("the models were loaded on another backend; reload the page".into()),
    }
}

/// What one [`bench_forward`] call measured.
pub struct BenchResult {
    /// The page's backend as the header shows it (the adapter, or why the CPU runs).
    pub backend: String,
    /// The first (warm-up) forward's output, for checking against a reference.
    pub output: Vec<f32>,
    /// Wall time of each timed forward after the warm-up, in ms.
    pub ms: Vec<f64>,
    /// The threads the batch was split over: 1 on WebGPU and for one image; on the CPU, the
    /// page's and its workers' that still worked after the last forward (at most one per image).
    pub threads: usize,
    /// The part of each before the download: recording and submitting the commands on WebGPU
    /// (the page's own overhead, which a faster GPU does not shrink), all of it on the CPU.
    pub record_ms: Vec<f64>,
}

/// The issue 8 benchmark (`window.stepwiseBench`, only with `?debug=bench`): loads the model
/// at `model_url` on the page's backend (once; cached like any model), then runs its UNet on
/// `sample` (`shape` = N×C×H×W) `1 + runs` times. Each forward uploads the sample, runs the
/// UNet and reads the output back, as an onnxruntime `session.run` with host tensors does.
pub async fn bench_forward(
    model_url: &str,
    sample: Vec<f32>,
    shape: Vec<usize>,
    timesteps: Vec<f32>,
    labels: Option<Vec<i64>>,
    runs: usize,
) -> Result<BenchResult, String> {
    // The page picks its backend asynchronously at start; wait for it (up to a minute).
    for _ in 0..600 {
        if COMPUTE.with(|c| c.borrow().is_some()) {
            break;
        }
        yield_to_browser(100).await;
    }
    // Cached after the first call, like any model the page loads.
    load_model(model_url, false).await?;
    let (compute, net) = loaded(model_url)?;
    let labels = labels.as_deref();
    let ((output, ms, record_ms), threads) = match (&*compute, &*net) {
        (Compute::Gpu(b), Net::Gpu(l)) => (
            forward_timed(b, &l.unet, &shape, &sample, &timesteps, labels, runs).await?,
            1,
        ),
        (Compute::Cpu(b), Net::Cpu(l)) => (
            forward_timed(b, &l.unet, &shape, &sample, &timesteps, labels, runs).await?,
            if shape.first().is_some_and(|&n| n > 1) && l.unet.workers.is_some() {
                crate::model::workers::threads().min(shape[0])
            } else {
                1
            },
        ),
        _ => return Err("the model was loaded on another backend; reload the page".into()),
    };
    Ok(BenchResult {
        backend: DESCRIPTION.with(|d| d.borrow().clone()),
        threads,
        output,
        ms,
        record_ms,
    })
}

/// One warm-up forward (its output returned) and `runs` timed ones, each read back.
async fn forward_timed<B: Backend>(
    b: &B,
    unet: &UNet2DModel<B>,
    shape: &[usize],
    sample: &[f32],
    timesteps: &[f32],
    labels: Option<&[i64]>,
    runs: usize,
) -> Result<(Vec<f32>, Vec<f64>, Vec<f64>), String> {
    let err = |e: crate::Error| e.to_string();
    let record = std::cell::RefCell::new(Vec::with_capacity(runs + 1));
    // The CPU's forward is all recording; in the browser it may split among the CPU workers.
    let cpu = (b as &dyn std::any::Any).is::<CpuBackend>();
    let once = || async {
        let t0 = now_ms();
        let x = b.upload(shape, sample).map_err(err)?;
        if cpu {
            let y = unet
                .forward_host(b, &x, timesteps, labels)
                .await
                .map_err(err)?;
            record.borrow_mut().push(now_ms() - t0);
            return Ok(y);
        }
        let y = unet.forward(b, &x, timesteps, labels).map_err(err)?;
        record.borrow_mut().push(now_ms() - t0);
        b.download(&y).await.map_err(err)
    };
    let output = once().await?;
    let ms = time_runs(runs, once).await?;
    let record_ms = record.into_inner().split_off(1);
    Ok((output, ms, record_ms))
}
