//! Device, queue, pipeline cache, buffer pool, uniform ring and readback.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// One WGSL source file: its name (for labels and the cache) and text.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
    /// Read-only storage inputs bound at `@binding(1..=inputs)`; the output is `@binding(inputs+1)`.
    pub inputs: u32,
}

/// Uniform parameter blocks are bound in 256-byte windows (WebGPU's default
/// `minUniformBufferOffsetAlignment`).
const UNIFORM_SLOT: u64 = 256;
const UNIFORM_RING: u64 = 1 << 18;
/// Cached bind groups kept at most (a UNet step uses one to two hundred).
const BIND_GROUP_CACHE: usize = 4096;

/// Idle storage buffers by size. Ordered sets, taken smallest first: a step makes the same
/// requests in the same order from the same idle set, so it gets the same buffers every time
/// (a stack would hand them out permuted step after step) and its cached bind groups match.
type Pool = Rc<RefCell<HashMap<u64, BTreeSet<wgpu::Buffer>>>>;

/// A storage buffer that returns to the pool when its last tensor drops.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    pool: Pool,
}

impl PooledBuffer {
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("present until drop")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.pool
                .borrow_mut()
                .entry(b.size())
                .or_default()
                .insert(b);
        }
    }
}

/// The long-lived GPU state, built once per page or process.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter_info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// Kernels for real GPUs: convolutions as the workgroup-memory implicit GEMM
    /// (`conv2d_tiled`), split-K for convolutions and matmuls whose outputs are too small to
    /// fill the card, and a workgroup per softmax row. Off, everything runs the barrier-free register-tiled kernels that software
    /// rasterisers need. Chosen by adapter ([`tiled_kernels`]); tests set it to check both.
    pub tiled: Cell<bool>,
    /// The device has `shader-f16` (requested wherever the adapter offers it).
    pub shader_f16: bool,
    /// Convolution and linear weights are uploaded as f16 ([`Backend::upload_weight`]): half the
    /// memory and the weight traffic, products and sums still in f32. Needs `shader_f16`; off
    /// by default (natively `STEPWISE_PRECISION=f16` turns it on, in the page
    /// `?precision=f16`; the accuracy is in BENCHMARKS.md; `f16-arith` turns on [`Self::f16_arith`]
    /// too).
    ///
    /// [`Backend::upload_weight`]: crate::backend::Backend::upload_weight
    pub f16_weights: Cell<bool>,
    /// With f16 weights, `conv2d_tiled` (real GPUs' convolution) also multiplies and sums in f16:
    /// f16 tiles, each K step's 16 products summed in f16, then added to f32 sums
    /// (`ops::conv2d::SHADER_F16_ARITH`). Off by default (natively `STEPWISE_PRECISION=f16-arith`,
    /// in the page `?precision=f16-arith`; the accuracy is in BENCHMARKS.md).
    pub f16_arith: Cell<bool>,
    modules: RefCell<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: RefCell<HashMap<(&'static str, &'static str), Rc<wgpu::ComputePipeline>>>,
    layouts: RefCell<HashMap<u32, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>>,
    pool: Pool,
    encoder: RefCell<Option<wgpu::CommandEncoder>>,
    /// The compute pass open on `encoder`: dispatches share it until a copy or the submit ends
    /// it (one pass per step instead of one per op).
    pass: RefCell<Option<wgpu::ComputePass<'static>>>,
    /// Bind groups by (layout, buffers bound): pooled buffers come back every step, so a step's
    /// bind groups are made once. The op's parameters are not part of it: the uniform window
    /// is a dynamic offset. Cleared when buffers are released ([`Self::trim_pool`]) or it grows
    /// past [`BIND_GROUP_CACHE`].
    bind_groups: RefCell<HashMap<(u32, Vec<wgpu::Buffer>), wgpu::BindGroup>>,
    bind_groups_made: Cell<u64>,
    uniforms: RefCell<Vec<u8>>,
    uniform_ring: wgpu::Buffer,
    /// Bound to optional inputs that an op does not use (bias, residual).
    dummy: wgpu::Buffer,
    errors: Arc<Mutex<Vec<String>>>,
    /// Set by the error handler when the device reports out-of-memory.
    oom: Arc<AtomicBool>,
    lost: Arc<Mutex<Option<String>>>,
    dispatches: Cell<u64>,
    created: Cell<u64>,
    held: Cell<u64>,
    /// Inside `loading`: allocations bypass the pool.
    loading: Cell<bool>,
    readback: RefCell<HashMap<u64, Vec<wgpu::Buffer>>>,
    /// Per-kernel GPU time, when asked for (`STEPWISE_PROFILE=1`) and the adapter has timestamps.
    #[cfg(not(target_arch = "wasm32"))]
    pub profiler: Option<super::profile::Profiler>,
}

/// Which kernels run: the tiled / split-K ones on real GPUs, the register-tiled ones on CPU
/// adapters (lavapipe, SwiftShader), where workgroup barriers cost more than they save
/// (BENCHMARKS.md). Natively `STEPWISE_KERNELS=tiled|register` overrides it, for benchmarks.
fn tiled_kernels(info: &wgpu::AdapterInfo) -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    if let Ok(v) = std::env::var("STEPWISE_KERNELS") {
        return v == "tiled";
    }
    info.device_type != wgpu::DeviceType::Cpu
}

/// (f16 weights, f16 arithmetic): natively `STEPWISE_PRECISION=f16` asks for weights
/// (convolutions', linear layers') stored as f16, `f16-arith` for those and f16 arithmetic in the
/// tiled convolution (`f32`, the default, for neither); an adapter without `shader-f16` is then
/// an error rather than a silent f32 run.
fn precision(shader_f16: bool, adapter: &str) -> Result<(bool, bool)> {
    #[cfg(not(target_arch = "wasm32"))]
    if let Ok(v) = std::env::var("STEPWISE_PRECISION") {
        return match v.as_str() {
            "f32" | "" => Ok((false, false)),
            "f16" | "f16-arith" if !shader_f16 => Err(Error::Gpu(format!(
                "STEPWISE_PRECISION={v} needs the shader-f16 feature, which {adapter} lacks"
            ))),
            "f16" => Ok((true, false)),
            "f16-arith" => Ok((true, true)),
            other => Err(Error::Gpu(format!(
                "STEPWISE_PRECISION={other}: expected f32, f16 or f16-arith"
            ))),
        };
    }
    let _ = (shader_f16, adapter);
    Ok((false, false))
}

impl GpuContext {
    /// Requests an adapter and a device with WebGPU's default limits (so what runs natively also
    /// runs in any browser). `WGPU_BACKEND` (e.g. `vulkan`) selects the native API.
    pub async fn new() -> Result<Self> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter(e.to_string()))?;
        let limits = wgpu::Limits::default();
        // Timestamp queries only when profiling: a device asks for no more than it uses.
        #[cfg(not(target_arch = "wasm32"))]
        let profile = super::profile::requested()
            && adapter
                .features()
                .contains(super::profile::Profiler::FEATURES);
        #[cfg(not(target_arch = "wasm32"))]
        let features = if profile {
            super::profile::Profiler::FEATURES
        } else {
            wgpu::Features::empty()
        };
        #[cfg(target_arch = "wasm32")]
        let features = wgpu::Features::empty();
        // f16 weights when asked for (`precision`) and in the kernel tests.
        let features = features | (adapter.features() & wgpu::Features::SHADER_F16);
        let shader_f16 = features.contains(wgpu::Features::SHADER_F16);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("stepwise"),
                required_limits: limits.clone(),
                required_features: features,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter(format!("request_device: {e}")))?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        let oom: Arc<AtomicBool> = Arc::default();
        let oom_sink = oom.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let msg = match &e {
                wgpu::Error::OutOfMemory { .. } => {
                    oom_sink.store(true, Ordering::Relaxed);
                    format!("the GPU ran out of memory ({e}); a smaller batch or model needs less, and the next run starts from freed memory")
                }
                _ => e.to_string(),
            };
            if let Ok(mut v) = sink.lock() {
                v.push(msg);
            }
        }));
        let lost: Arc<Mutex<Option<String>>> = Arc::default();
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut l) = lost_sink.lock() {
                *l = Some(format!("{reason:?}: {msg}"));
            }
        });
        let uniform_ring = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("uniform ring"),
            size: UNIFORM_RING,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("unused optional input"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let (f16_weights, f16_arith) = precision(shader_f16, &adapter.get_info().name)?;
        Ok(Self {
            tiled: Cell::new(tiled_kernels(&adapter.get_info())),
            shader_f16,
            f16_weights: Cell::new(f16_weights),
            f16_arith: Cell::new(f16_arith),
            adapter_info: adapter.get_info(),
            limits,
            modules: RefCell::default(),
            pipelines: RefCell::default(),
            layouts: RefCell::default(),
            pool: Pool::default(),
            encoder: RefCell::new(None),
            pass: RefCell::new(None),
            bind_groups: RefCell::default(),
            bind_groups_made: Cell::new(0),
            uniforms: RefCell::default(),
            uniform_ring,
            dummy,
            errors,
            oom,
            lost,
            dispatches: Cell::new(0),
            created: Cell::new(0),
            held: Cell::new(0),
            loading: Cell::new(false),
            readback: RefCell::default(),
            #[cfg(not(target_arch = "wasm32"))]
            profiler: profile.then(|| super::profile::Profiler::new(&device, &queue)),
            device,
            queue,
        })
    }

    /// "name, driver, driver info, vendor:device (backend, device type)" with only the fields the
    /// adapter fills in: in the browser wgpu has only GPUAdapterInfo's description, which
    /// SwiftShader leaves empty ("unnamed adapter (BrowserWebGpu, Cpu)" then).
    pub fn describe(&self) -> String {
        let i = &self.adapter_info;
        let mut parts: Vec<String> = [&i.name, &i.driver, &i.driver_info]
            .into_iter()
            .filter(|s| !s.trim().is_empty())
            .cloned()
            .collect();
        if i.vendor != 0 || i.device != 0 {
            parts.push(format!("{:04x}:{:04x}", i.vendor, i.device));
        }
        if parts.is_empty() {
            parts.push("unnamed adapter".into());
        }
        format!(
            "{} ({:?}, {:?})",
            parts.join(", "),
            i.backend,
            i.device_type
        )
    }

    /// Total compute dispatches recorded so far (benchmarks use it).
    pub fn dispatch_count(&self) -> u64 {
        self.dispatches.get()
    }

    /// Why the device was lost, once it has been (then every later call fails: make a new one).
    pub fn lost_reason(&self) -> Option<String> {
        self.lost.lock().ok().and_then(|l| l.clone())
    }

    /// Destroys the device, as a driver reset or an unplugged GPU would: the reliability tests'
    /// way to lose it on purpose (`device.destroy()` in the browser).
    pub fn destroy(&self) {
        self.device.destroy();
    }

    /// Fails if the device was lost or a validation error was raised since the last check.
    pub fn check(&self) -> Result<()> {
        if let Some(reason) = self.lost.lock().ok().and_then(|l| l.clone()) {
            return Err(Error::DeviceLost(reason));
        }
        let mut errs = self
            .errors
            .lock()
            .map_err(|_| Error::Gpu("error log poisoned".into()))?;
        if !errs.is_empty() {
            let msg = errs.join("; ");
            errs.clear();
            return Err(Error::Gpu(msg));
        }
        Ok(())
    }

    /// Buffers waiting in the pool for reuse (storage and readback).
    pub fn pooled_buffers(&self) -> usize {
        self.pool
            .borrow()
            .values()
            .map(BTreeSet::len)
            .sum::<usize>()
            + self.readback.borrow().values().map(Vec::len).sum::<usize>()
    }

    /// The pool's idle buffers by size in bytes, storage and readback together (the soak test
    /// reports it when buffers are created after warm-up).
    pub fn pooled_sizes(&self) -> Vec<(u64, usize)> {
        let mut m: std::collections::BTreeMap<u64, usize> = Default::default();
        for (k, v) in self.pool.borrow().iter() {
            *m.entry(*k).or_default() += v.len();
        }
        for (k, v) in self.readback.borrow().iter() {
            *m.entry(*k).or_default() += v.len();
        }
        m.into_iter().filter(|(_, n)| *n > 0).collect()
    }

    /// Releases every idle buffer in the pool to the driver (after a model is dropped, its
    /// weights' sizes may never be asked for again).
    pub fn trim_pool(&self) {
        let mut freed: Vec<wgpu::Buffer> = self
            .pool
            .borrow_mut()
            .drain()
            .flat_map(|(_, v)| v)
            .collect();
        freed.extend(self.readback.borrow_mut().drain().flat_map(|(_, v)| v));
        let bytes: u64 = freed.iter().map(|b| b.size()).sum();
        self.held.set(self.held.get() - bytes);
        // Bind groups may name the buffers about to be destroyed (and keep dropped ones alive).
        self.bind_groups.borrow_mut().clear();
        for b in freed {
            b.destroy();
        }
    }

    /// Bind groups created so far (tests check that a repeated step makes none).
    pub fn bind_groups_created(&self) -> u64 {
        self.bind_groups_made.get()
    }

    /// Runs `f` (a model load) with fresh buffers: weights live as long as their model, and
    /// taking the pool's activation buffers for them would make the next run allocate again.
    pub fn loading<T>(&self, f: impl FnOnce() -> T) -> T {
        let was = self.loading.replace(true);
        let out = f();
        self.loading.set(was);
        out
    }

    /// Bytes in all storage and readback buffers that exist now (in use or pooled).
    pub fn bytes_held(&self) -> u64 {
        self.held.get()
    }

    /// Storage and readback buffers created so far (tests check that steps reuse the pool).
    pub fn buffers_created(&self) -> u64 {
        self.created.get()
    }

    /// A storage buffer of at least `bytes`, from the pool when one of that size is free.
    pub fn alloc(&self, bytes: u64) -> Result<Rc<PooledBuffer>> {
        let size = bytes.max(4).next_multiple_of(4);
        if size > self.limits.max_storage_buffer_binding_size {
            return Err(Error::Gpu(format!(
                "a {size}-byte tensor exceeds the device's max storage binding of {} bytes (WebGPU's default limit); a smaller batch or image size fits",
                self.limits.max_storage_buffer_binding_size
            )));
        }
        // After an out-of-memory error the pool may hold the buffer whose creation failed (an
        // invalid handle): release everything idle before the next run allocates.
        if self.oom.swap(false, Ordering::Relaxed) {
            self.trim_pool();
        }
        let reused = if self.loading.get() {
            None
        } else {
            self.pool
                .borrow_mut()
                .get_mut(&size)
                .and_then(BTreeSet::pop_first)
        };
        let buffer = reused.unwrap_or_else(|| {
            self.created.set(self.created.get() + 1);
            self.held.set(self.held.get() + size);
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("tensor"),
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        Ok(Rc::new(PooledBuffer {
            buffer: Some(buffer),
            pool: self.pool.clone(),
        }))
    }

    /// Writes host data into a buffer. Pending commands are submitted first so that the write
    /// cannot overtake earlier ops that still read the (pooled, reused) buffer.
    pub fn write<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, data: &[T]) {
        if self.encoder.borrow().is_some() {
            self.flush();
        }
        if !data.is_empty() {
            self.queue
                .write_buffer(buffer, 0, bytemuck::cast_slice(data));
        }
    }

    fn layout(&self, inputs: u32) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        let mut layouts = self.layouts.borrow_mut();
        layouts
            .entry(inputs)
            .or_insert_with(|| {
                let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
                    binding,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                };
                let mut entries = vec![wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: true,
                        min_binding_size: wgpu::BufferSize::new(UNIFORM_SLOT),
                    },
                    count: None,
                }];
                entries.extend((1..=inputs).map(|b| storage(b, true)));
                entries.push(storage(inputs + 1, false));
                let bgl = self
                    .device
                    .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                        label: Some("op layout"),
                        entries: &entries,
                    });
                let pl = self
                    .device
                    .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: Some("op pipeline layout"),
                        bind_group_layouts: &[Some(&bgl)],
                        immediate_size: 0,
                    });
                (bgl, pl)
            })
            .clone()
    }

    fn pipeline(&self, shader: Shader, entry: &'static str) -> Rc<wgpu::ComputePipeline> {
        if let Some(p) = self.pipelines.borrow().get(&(shader.name, entry)) {
            return p.clone();
        }
        let (_, layout) = self.layout(shader.inputs);
        let mut modules = self.modules.borrow_mut();
        let module = modules.entry(shader.name).or_insert_with(|| {
            self.device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(shader.source.into()),
                })
        });
        let label = format!("{}::{entry}", shader.name);
        let pipeline = Rc::new(self.device.create_compute_pipeline(
            &wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&layout),
                module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            },
        ));
        self.pipelines
            .borrow_mut()
            .insert((shader.name, entry), pipeline.clone());
        pipeline
    }

    /// Records one dispatch of `shader::entry` with `params` as its uniform block. `inputs` are
    /// bound in order (`None` binds a dummy buffer), then `output`.
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        shader: Shader,
        entry: &'static str,
        params: &P,
        inputs: &[Option<&wgpu::Buffer>],
        output: &wgpu::Buffer,
        workgroups: [u32; 3],
    ) -> Result<()> {
        debug_assert_eq!(inputs.len() as u32, shader.inputs);
        let bytes = bytemuck::bytes_of(params);
        assert!(
            bytes.len() as u64 <= UNIFORM_SLOT,
            "op parameters exceed one uniform slot"
        );
        let max = self.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(Error::Gpu(format!(
                "{}::{entry}: dispatch {workgroups:?} exceeds {max} workgroups per dimension",
                shader.name
            )));
        }
        if workgroups.contains(&0) {
            return Ok(());
        }
        if self.uniforms.borrow().len() as u64 + UNIFORM_SLOT > UNIFORM_RING || self.profiler_full()
        {
            self.flush();
        }
        let pipeline = self.pipeline(shader, entry);
        let (bgl, _) = self.layout(shader.inputs);
        let offset = {
            let mut u = self.uniforms.borrow_mut();
            let offset = u.len() as u64;
            u.extend_from_slice(bytes);
            u.resize((offset + UNIFORM_SLOT) as usize, 0);
            offset
        };
        let bind_group = self.bind_group(shader.inputs, &bgl, inputs, output);
        let mut pass = self.pass.borrow_mut();
        let pass = pass.get_or_insert_with(|| {
            let mut enc = self.encoder.borrow_mut();
            let enc = enc.get_or_insert_with(|| {
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("ops") })
            });
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("ops"),
                timestamp_writes: None,
            })
            .forget_lifetime()
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[offset as u32]);
        let run = |pass: &mut wgpu::ComputePass<'_>| {
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2])
        };
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(p) = &self.profiler {
            p.bracket(pass, entry, run);
        } else {
            run(pass);
        }
        #[cfg(target_arch = "wasm32")]
        run(pass);
        self.dispatches.set(self.dispatches.get() + 1);
        Ok(())
    }

    /// The bind group of `inputs` (absent ones bound to the dummy) and `output`, from the cache.
    fn bind_group(
        &self,
        n_inputs: u32,
        bgl: &wgpu::BindGroupLayout,
        inputs: &[Option<&wgpu::Buffer>],
        output: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        let buffers: Vec<wgpu::Buffer> = inputs
            .iter()
            .map(|b| b.unwrap_or(&self.dummy).clone())
            .chain([output.clone()])
            .collect();
        let key = (n_inputs, buffers);
        if let Some(bg) = self.bind_groups.borrow().get(&key) {
            return bg.clone();
        }
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.uniform_ring,
                offset: 0,
                size: wgpu::BufferSize::new(UNIFORM_SLOT),
            }),
        }];
        entries.extend(key.1.iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32 + 1,
            resource: b.as_entire_binding(),
        }));
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("op"),
            layout: bgl,
            entries: &entries,
        });
        self.bind_groups_made.set(self.bind_groups_made.get() + 1);
        let mut cache = self.bind_groups.borrow_mut();
        if cache.len() >= BIND_GROUP_CACHE {
            cache.clear();
        }
        cache.insert(key, bg.clone());
        bg
    }

    /// Ends the open compute pass, if any, so that the encoder can record something else.
    fn end_pass(&self) {
        self.pass.borrow_mut().take();
    }

    /// Records a buffer-to-buffer copy.
    pub fn copy(
        &self,
        src: &wgpu::Buffer,
        src_off: u64,
        dst: &wgpu::Buffer,
        dst_off: u64,
        bytes: u64,
    ) {
        self.end_pass();
        let mut enc = self.encoder.borrow_mut();
        let enc = enc.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("ops") })
        });
        enc.copy_buffer_to_buffer(src, src_off, dst, dst_off, bytes);
    }

    /// Writes the staged uniforms and submits the pending commands.
    pub fn flush(&self) {
        self.end_pass();
        #[allow(unused_mut)]
        let mut enc = self.encoder.borrow_mut().take();
        #[cfg(not(target_arch = "wasm32"))]
        if let (Some(p), Some(enc)) = (&self.profiler, enc.as_mut()) {
            p.resolve(enc);
        }
        {
            let mut u = self.uniforms.borrow_mut();
            if !u.is_empty() {
                self.queue.write_buffer(&self.uniform_ring, 0, &u);
                u.clear();
            }
        }
        if let Some(enc) = enc {
            self.queue.submit([enc.finish()]);
        }
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(p) = &self.profiler {
            if let Err(e) = p.collect(&self.device) {
                if let Ok(mut v) = self.errors.lock() {
                    v.push(format!("profiler: {e}"));
                }
            }
        }
    }

    /// The profiler has no room for another dispatch before a submit.
    fn profiler_full(&self) -> bool {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(p) = &self.profiler {
            return p.full();
        }
        false
    }

    /// Reads `bytes` from the start of `buffer`. On wasm this awaits the browser; natively it
    /// polls the device (never call `device.poll` on wasm: WebGPU maps from its event loop).
    pub async fn read(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<f32>> {
        let size = bytes.max(4);
        let reused = self
            .readback
            .borrow_mut()
            .get_mut(&size)
            .and_then(|v| v.pop());
        let staging = reused.unwrap_or_else(|| {
            self.created.set(self.created.get() + 1);
            self.held.set(self.held.get() + size);
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        self.copy(buffer, 0, &staging, 0, size);
        self.flush();
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("poll: {e}")))?;
        let mapped = rx
            .await
            .map_err(|_| Error::DeviceLost("readback callback dropped".into()))?;
        self.check()?;
        mapped.map_err(|e| Error::Gpu(format!("map_async: {e}")))?;
        let data = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| Error::Gpu(format!("get_mapped_range: {e}")))?;
            bytemuck::cast_slice::<u8, f32>(&view[..bytes as usize]).to_vec()
        };
        staging.unmap();
        self.readback
            .borrow_mut()
            .entry(size)
            .or_default()
            .push(staging);
        Ok(data)
    }
}
