//! Which backend the page computes on (WebGPU on a real GPU, else the CPU backend and its
//! workers), and the GPU device's state: precision, loss, buffer statistics.

use std::rc::Rc;

use super::*;
use crate::cpu::CpuBackend;
use crate::gpu::GpuBackend;

/// Which backend runs, for the header and the CPU note.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendInfo {
    pub gpu: bool,
    /// The header's short line: "GPU: adapter" or "CPU (N threads, SIMD)".
    pub summary: String,
    /// The technical line behind it: "GPU: adapter (api, type)" or "CPU backend on N threads,
    /// SIMD (why, with WebGPU's own error where it failed)".
    pub description: String,
    /// The CPU runs although WebGPU opened: its adapter is itself a CPU implementation.
    pub software_gpu: bool,
    /// Why the CPU runs instead of WebGPU (None on the GPU).
    pub cpu_reason: Option<CpuReason>,
}

/// Why the page computes on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuReason {
    /// `?backend=cpu`.
    Requested,
    /// The browser has no `navigator.gpu`.
    NoWebGpu,
    /// WebGPU's adapter is a software one (SwiftShader), slower than our CPU kernels.
    SoftwareGpu,
    /// WebGPU is there but no adapter or device opened.
    Failed,
}

/// Which backend the page asked for (`?backend=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// WebGPU where an adapter opens on a real GPU, else the CPU backend.
    Auto,
    /// `?backend=cpu`.
    Cpu,
    /// `?backend=gpu`: WebGPU on any adapter, software ones included.
    Gpu,
}

impl Choice {
    /// The page URL's `?backend=cpu|gpu`; anything else is [`Choice::Auto`].
    pub fn from_url() -> Self {
        match crate::app::settings::param("backend").as_deref() {
            Some("cpu") => Choice::Cpu,
            Some("gpu") => Choice::Gpu,
            _ => Choice::Auto,
        }
    }
}

/// Picks the backend once per page: WebGPU when the browser has it and an adapter opens on a
/// GPU, otherwise the CPU backend. A CPU adapter (SwiftShader, a browser's fallback where
/// it has no usable GPU) gives way to the CPU backend unless `?backend=gpu` asks for it: there
/// a drawn fashion step (guidance's pair) took 2.1 s through WebGPU and 44–52 ms on the CPU
/// backend (BENCHMARKS.md).
pub async fn init_backend(choice: Choice) -> BackendInfo {
    let (compute, info) = if choice == Choice::Cpu {
        (
            Compute::Cpu(CpuBackend),
            cpu_info("requested with ?backend=cpu".into(), CpuReason::Requested),
        )
    } else if !crate::app::has_webgpu() {
        (
            Compute::Cpu(CpuBackend),
            cpu_info("this browser has no WebGPU".into(), CpuReason::NoWebGpu),
        )
    } else {
        match GpuBackend::new().await {
            Ok(g) => {
                // wgpu passes on only GPUAdapterInfo's description (empty on SwiftShader); ask
                // the browser for the vendor and architecture too.
                let wgpu = g.ctx.describe();
                let browser = crate::app::browser_adapter_info().await;
                let adapter = match &browser {
                    // SwiftShader: "google swiftshader (BrowserWebGpu, Cpu)".
                    Some(b) => match wgpu.strip_prefix("unnamed adapter ") {
                        Some(api) => format!("{b} {api}"),
                        None => format!("{b} · {wgpu}"),
                    },
                    None => wgpu.clone(),
                };
                // The header names the GPU only: the browser's words, else wgpu's without its
                // "(BrowserWebGpu, Gpu)" tail.
                let short = browser.unwrap_or_else(|| {
                    let name = wgpu.rsplit_once(" (").map_or(wgpu.as_str(), |(n, _)| n);
                    match name {
                        "unnamed adapter" | "" => "WebGPU".to_string(),
                        n => n.to_string(),
                    }
                });
                let software = g.ctx.adapter_info.device_type == wgpu::DeviceType::Cpu;
                if software && choice == Choice::Auto {
                    drop(g);
                    (
                        Compute::Cpu(CpuBackend),
                        cpu_info(
                            format!(
                                "WebGPU's adapter, {adapter}, runs on the CPU; ?backend=gpu uses it"
                            ),
                            CpuReason::SoftwareGpu,
                        ),
                    )
                } else {
                    let precision = precision(&g);
                    (
                        Compute::Gpu(g),
                        BackendInfo {
                            gpu: true,
                            summary: format!("GPU: {short}{precision}"),
                            description: format!("GPU: {adapter}{precision}"),
                            software_gpu: false,
                            cpu_reason: None,
                        },
                    )
                }
            }
            Err(e) => (
                Compute::Cpu(CpuBackend),
                cpu_info(format!("WebGPU failed: {e}"), CpuReason::Failed),
            ),
        }
    };
    COMPUTE.with(|c| *c.borrow_mut() = Some(Rc::new(compute)));
    forget_models(|_| true);
    DESCRIPTION.with(|d| d.borrow_mut().clone_from(&info.description));
    info
}

/// `?precision=f16`: the GPU keeps weights as f16 where the adapter has `shader-f16` (half the
/// memory; exact for the shipped models, which are stored as f16; ARCHITECTURE.md);
/// `?precision=f16-arith` also multiplies and sums in f16 in real GPUs' convolutions (about 1e-3
/// per forward, BENCHMARKS.md). Returns what the adapter line adds: what is on, or why not.
fn precision(g: &GpuBackend) -> &'static str {
    let arith = match crate::app::settings::param("precision").as_deref() {
        Some("f16") => false,
        Some("f16-arith") => true,
        _ => return "",
    };
    if !g.ctx.shader_f16 {
        return if arith {
            " (f32 weights: ?precision=f16-arith needs shader-f16, which this adapter lacks)"
        } else {
            " (f32 weights: ?precision=f16 needs shader-f16, which this adapter lacks)"
        };
    }
    g.ctx.f16_weights.set(true);
    g.ctx.f16_arith.set(arith);
    if arith && g.ctx.tiled.get() {
        ", f16 weights and convolution arithmetic"
    } else {
        ", f16 weights"
    }
}

/// Why the page's GPU device was lost, if it was (a run then fails with "GPU device lost").
pub fn device_lost() -> Option<String> {
    COMPUTE.with(|c| match c.borrow().as_deref() {
        Some(Compute::Gpu(g)) => g.ctx.lost_reason(),
        _ => None,
    })
}

/// Why the device was lost, for a run that just failed on the GPU backend. The browser reports a
/// loss through a promise that may settle after the failed call it caused (a readback's
/// `map_async` fails first), so a failed GPU run waits up to a second for that report before its
/// error is taken as something else.
pub async fn device_lost_after_error() -> Option<String> {
    if !COMPUTE.with(|c| matches!(c.borrow().as_deref(), Some(Compute::Gpu(_)))) {
        return None;
    }
    for _ in 0..20 {
        if let Some(why) = device_lost() {
            return Some(why);
        }
        super::yield_to_browser(50).await;
    }
    device_lost()
}

/// Buffers created, buffers pooled, and the pool's (size in bytes, count) pairs.
pub struct GpuStats {
    pub created: u64,
    pub pooled: usize,
    pub pooled_by_size: Vec<(u64, usize)>,
    /// Bytes in every storage and readback buffer that exists (in use or pooled).
    pub bytes_held: u64,
}

/// GPU buffers created so far and those idle in the pool (the soak test's leak check; only
/// with `?debug=gpu`, as `window.stepwiseStats()`).
pub fn gpu_stats() -> Option<GpuStats> {
    COMPUTE.with(|c| match c.borrow().as_deref() {
        Some(Compute::Gpu(g)) => Some(GpuStats {
            created: g.ctx.buffers_created(),
            pooled: g.ctx.pooled_buffers(),
            pooled_by_size: g.ctx.pooled_sizes(),
            bytes_held: g.ctx.bytes_held(),
        }),
        _ => None,
    })
}

/// Loses the GPU device on purpose (`device.destroy()`), for the reliability tests: exposed as
/// `window.stepwiseLoseDevice()` only with `?debug=gpu`.
pub fn lose_device() -> bool {
    COMPUTE.with(|c| match c.borrow().as_deref() {
        Some(Compute::Gpu(g)) => {
            g.ctx.destroy();
            true
        }
        _ => false,
    })
}

/// Starts the CPU backend's workers and says how many threads it has.
fn cpu_info(why: String, reason: CpuReason) -> BackendInfo {
    let threads = crate::model::workers::start();
    let on = if threads == 1 {
        "1 thread".to_string()
    } else {
        format!("{threads} threads")
    };
    let simd = crate::cpu::WASM_SIMD;
    BackendInfo {
        gpu: false,
        summary: format!("CPU ({on}, {simd})"),
        description: format!("CPU backend on {on}, {simd} ({why})"),
        software_gpu: reason == CpuReason::SoftwareGpu,
        cpu_reason: Some(reason),
    }
}
