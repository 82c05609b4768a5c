//! GPU time per kernel from timestamp queries, natively and on request (`STEPWISE_PROFILE=1`,
//! read by [`GpuContext::new`](super::GpuContext::new); `diffuse bench` prints the table).
//!
//! Each dispatch is bracketed by two timestamps inside the compute pass; the submit resolves
//! them and waits for them, so a profiled run is slower than a plain one and only the per-kernel
//! times (not the wall time) are meaningful. Kernels are keyed by shader entry point.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

/// Whether profiling is asked for: `STEPWISE_PROFILE` set to anything but `0`.
pub fn requested() -> bool {
    std::env::var("STEPWISE_PROFILE").is_ok_and(|v| v != "0")
}

/// Timestamps per query set (wgpu's maximum): 2048 dispatches between submits.
const QUERIES: u32 = 4096;

/// Total GPU time and dispatch count of one kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    pub entry: &'static str,
    pub dispatches: u64,
    pub ms: f64,
}

pub struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period: f64,
    /// The entry point of each bracketed dispatch since the last submit.
    pending: RefCell<Vec<&'static str>>,
    totals: RefCell<BTreeMap<&'static str, (u64, f64)>>,
    /// Set while a resolve is recorded and not yet read back.
    resolving: Cell<u32>,
}

impl Profiler {
    /// The features a profiled device needs.
    pub const FEATURES: wgpu::Features =
        wgpu::Features::TIMESTAMP_QUERY.union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);

    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Self {
        let bytes = QUERIES as u64 * 8;
        let buffer = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Self {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: QUERIES,
            }),
            resolve: buffer(
                "timestamp resolve",
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            readback: buffer(
                "timestamp readback",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            period: queue.get_timestamp_period() as f64,
            pending: RefCell::default(),
            totals: RefCell::default(),
            resolving: Cell::new(0),
        }
    }

    /// No room for another bracketed dispatch before the next submit.
    pub fn full(&self) -> bool {
        self.pending.borrow().len() as u32 * 2 >= QUERIES
    }

    /// Records `entry`'s dispatch between two timestamps.
    pub fn bracket(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        entry: &'static str,
        f: impl FnOnce(&mut wgpu::ComputePass<'_>),
    ) {
        let i = self.pending.borrow().len() as u32 * 2;
        pass.write_timestamp(&self.queries, i);
        f(pass);
        pass.write_timestamp(&self.queries, i + 1);
        self.pending.borrow_mut().push(entry);
    }

    /// Records the resolve of this submit's timestamps into `encoder` (after its last pass).
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        let n = self.pending.borrow().len() as u32 * 2;
        if n == 0 {
            return;
        }
        encoder.resolve_query_set(&self.queries, 0..n, &self.resolve, 0);
        encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, n as u64 * 8);
        self.resolving.set(n);
    }

    /// After the submit that carried [`Self::resolve`]: waits for the timestamps and adds them
    /// up per kernel.
    pub fn collect(&self, device: &wgpu::Device) -> Result<(), String> {
        let n = self.resolving.replace(0);
        let entries = std::mem::take(&mut *self.pending.borrow_mut());
        if n == 0 {
            return Ok(());
        }
        let slice = self.readback.slice(..n as u64 * 8);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| format!("poll: {e}"))?;
        rx.recv()
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("timestamp readback: {e}"))?;
        {
            let view = slice.get_mapped_range().map_err(|e| e.to_string())?;
            let ticks: &[u64] = bytemuck::cast_slice(&view);
            let mut totals = self.totals.borrow_mut();
            for (entry, t) in entries.iter().zip(ticks.chunks_exact(2)) {
                let e = totals.entry(entry).or_default();
                e.0 += 1;
                e.1 += t[1].saturating_sub(t[0]) as f64 * self.period * 1e-6;
            }
        }
        self.readback.unmap();
        Ok(())
    }

    /// Per-kernel totals since the last reset, longest first.
    pub fn report(&self) -> Vec<KernelTime> {
        let mut v: Vec<KernelTime> = self
            .totals
            .borrow()
            .iter()
            .map(|(&entry, &(dispatches, ms))| KernelTime {
                entry,
                dispatches,
                ms,
            })
            .collect();
        v.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        v
    }

    pub fn reset(&self) {
        self.totals.borrow_mut().clear();
    }
}
