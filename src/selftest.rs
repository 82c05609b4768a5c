//! The kernel self-test: every GPU op against its CPU reference on fresh random inputs, at sizes
//! that cross the kernels' tile and workgroup boundaries (4×4 register tiles, 64-wide and 8×8
//! workgroups, 256-wide reductions). Native tests (`tests/kernels.rs`, on lavapipe) and the
//! browser test page (`?selftest`, on the browser's WebGPU) run the same checks.

use crate::backend::{Backend, BiasMode, Conv2dParams, ConvEpilogue, MatmulSpec, Strides};
use crate::cpu::{CpuBackend, CpuTensor};
use crate::error::Result;
use crate::gpu::{GpuBackend, GpuTensor};
use crate::io::rel_l2;
use crate::noise;

/// One GPU-vs-CPU comparison.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub rel_l2: f64,
    pub tol: f64,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.rel_l2 <= self.tol
    }
}

/// Shapes come from SplitMix64, data from the project's Philox normals: a seed replays a run.
pub struct TestRng {
    state: u64,
    stream: u64,
    seed: u64,
}

impl TestRng {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed,
            stream: 1000,
            seed,
        }
    }

    /// For unit tests: seeded from `TEST_SEED` when set (to replay a failure), else the clock.
    #[cfg(test)]
    pub fn from_env_or_clock() -> Self {
        let seed = std::env::var("TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            });
        Self::new(seed)
    }

    /// The seed this generator started from (print it with a failure).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo) as u64) as usize
    }

    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        self.stream += 1;
        noise::randn(self.seed, self.stream, n)
    }
}

struct Pair {
    cpu: CpuTensor,
    gpu: GpuTensor,
}

fn pair(g: &GpuBackend, shape: &[usize], data: &[f32]) -> Result<Pair> {
    Ok(Pair {
        cpu: CpuBackend.upload(shape, data)?,
        gpu: g.upload(shape, data)?,
    })
}

/// The f16 weights of `data` on the GPU, and on the CPU the same values (rounded to f16, widened
/// back exactly): a kernel reading them must match the CPU to f32 accuracy.
fn round_f16(data: &[f32]) -> Vec<f32> {
    data.iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect()
}

fn f16_pair(g: &GpuBackend, shape: &[usize], data: &[f32]) -> Result<Pair> {
    Ok(Pair {
        cpu: CpuBackend.upload(shape, &round_f16(data))?,
        gpu: GpuTensor::upload_f16(&g.ctx, shape, data)?,
    })
}

async fn compare(
    g: &GpuBackend,
    name: String,
    want: &CpuTensor,
    got: &GpuTensor,
    tol: f64,
) -> Result<Check> {
    use crate::backend::Tensor;
    if want.shape() != got.shape() {
        return Ok(Check {
            name: format!("{name}: shapes {:?} vs {:?}", want.shape(), got.shape()),
            rel_l2: f64::INFINITY,
            tol,
        });
    }
    let data = g.download(got).await?;
    let err = if data.iter().all(|v| v.is_finite()) {
        rel_l2(&data, want.data())
    } else {
        f64::INFINITY
    };
    Ok(Check {
        name,
        rel_l2: err,
        tol,
    })
}

const TOL: f64 = 1e-5;
/// f16 products and 16-term f16 sums: each rounding is at most 2⁻¹¹ ≈ 4.9e-4 relative.
pub const TOL_F16_ARITH: f64 = 2e-3;

pub async fn conv2d(g: &GpuBackend, r: &mut TestRng) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for case in 0..16 {
        // Cases 12 to 15: 3 × 3 at stride 1, which CPU adapters run in `conv2d_wide3` where
        // outputs are at least 8 wide (12, 13: across its 8-column and 8-channel tiles) and in
        // `conv2d3` where they are narrower (14, 15: across its 4-column and 4-channel tiles).
        let (wide3, narrow3) = (case == 12 || case == 13, case >= 14);
        let three = wide3 || narrow3;
        let k = if case % 3 == 0 && !three { 1 } else { 3 };
        let stride = if case % 2 == 0 || three { 1 } else { 2 };
        // Cases 8 and 9 cross the tiled kernel's 32-channel and 16-deep K tiles; 10 and 11 have
        // K long enough (900-1260) for several K splits.
        let (n, ci, co) = if three {
            (r.range(1, 3), r.range(1, 20), r.range(5, 23))
        } else if (10..12).contains(&case) {
            (r.range(1, 3), r.range(100, 140), r.range(33, 70))
        } else if case >= 8 {
            (r.range(1, 3), r.range(17, 40), r.range(65, 140))
        } else {
            (r.range(1, 3), r.range(1, 20), r.range(1, 23))
        };
        let (h, w) = if wide3 {
            (r.range(3, 12), r.range(9, 30))
        } else if narrow3 {
            (r.range(3, 12), r.range(3, 8))
        } else {
            (r.range(k, 19), r.range(k, 21))
        };
        let pad = match case % 4 {
            0 => [k / 2; 4],
            1 => [0, 0, 1, 1],
            2 => [1, 0, 2, 1],
            _ => [0; 4],
        };
        let p = Conv2dParams { stride, pad };
        let x = pair(g, &[n, ci, h, w], &r.randn(n * ci * h * w))?;
        let wdata = r.randn(co * ci * k * k);
        let wt = pair(g, &[co, ci, k, k], &wdata)?;
        let b = pair(g, &[co], &r.randn(co))?;
        let bias = case % 5 != 4;
        // The fused epilogue (ConvEpilogue) in some cases, against the CPU's separate ops.
        let (with_add, with_res) = (case % 3 == 1, case % 2 == 0);
        let o = crate::ops::conv2d::out_shape(&[n, ci, h, w], &[co, ci, k, k], None, p)?;
        let add = pair(g, &[n, co], &r.randn(n * co))?;
        let res = pair(g, &o, &r.randn(o.iter().product()))?;
        let scale = if with_res { 0.7 } else { 1.0 };
        let reference = |x: &CpuTensor, w: &CpuTensor| -> Result<CpuTensor> {
            let mut want = CpuBackend.conv2d(x, w, bias.then_some(&b.cpu), p)?;
            if with_add {
                want = CpuBackend.channel_modulate(&want, &add.cpu, 0, None)?;
            }
            if with_res {
                want = CpuBackend.add(&res.cpu, &want, scale)?;
            }
            Ok(want)
        };
        let epilogue = ConvEpilogue {
            channel_add: with_add.then_some(&add.gpu),
            residual: with_res.then_some(&res.gpu),
            scale,
        };
        let got = g.conv2d_epilogue(&x.gpu, &wt.gpu, bias.then_some(&b.gpu), p, epilogue)?;
        if (10..12).contains(&case) && crate::ops::conv2d::split_k(&o, ci * k * k).0 < 2 {
            return Err(crate::error::Error::Other(format!(
                "conv2d self-test: case {case} ({o:?}, K {}) should split K",
                ci * k * k
            )));
        }
        let name = format!(
            "conv2d {n}x{ci}x{h}x{w}->{co} k{k} s{stride} pad{pad:?}{}{}",
            if with_add { " +channel" } else { "" },
            if with_res { " +residual" } else { "" }
        );
        out.push(compare(g, name.clone(), &reference(&x.cpu, &wt.cpu)?, &got, TOL).await?);
        // The same kernel reading f16 weights, against the CPU with the weights rounded the
        // same way: widening an f16 is exact, so only the f32 sums' order differs.
        if g.ctx.shader_f16 {
            let w16 = f16_pair(g, &[co, ci, k, k], &wdata)?;
            let want = reference(&x.cpu, &w16.cpu)?;
            let got = g.conv2d_epilogue(&x.gpu, &w16.gpu, bias.then_some(&b.gpu), p, epilogue)?;
            out.push(compare(g, format!("{name} f16 weights"), &want, &got, TOL).await?);
            // f16 arithmetic (the tiled kernel only): against the CPU with the input rounded to
            // f16 as well, what remains is the f16 products and 16-term f16 sums.
            if g.ctx.tiled.get() {
                let x16 = CpuBackend.upload(&[n, ci, h, w], &round_f16(x.cpu.data()))?;
                let want = reference(&x16, &w16.cpu)?;
                g.ctx.f16_arith.set(true);
                let got = g.conv2d_epilogue(&x.gpu, &w16.gpu, bias.then_some(&b.gpu), p, epilogue);
                g.ctx.f16_arith.set(false);
                let name = format!("{name} f16 arithmetic");
                out.push(compare(g, name, &want, &got?, TOL_F16_ARITH).await?);
            }
        }
    }
    Ok(out)
}

pub async fn group_norm(g: &GpuBackend, r: &mut TestRng) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for (case, groups) in [1usize, 2, 4, 8, 32, 3].into_iter().enumerate() {
        let c = groups * r.range(1, 5);
        let (n, h, w) = (r.range(1, 4), r.range(1, 24), r.range(1, 24));
        // Offset activations: the two-pass variance must stay accurate away from zero.
        let x: Vec<f32> = r
            .randn(n * c * h * w)
            .iter()
            .map(|v| v * 3.0 + 5.0)
            .collect();
        let x = pair(g, &[n, c, h, w], &x)?;
        let gamma = pair(g, &[c], &r.randn(c))?;
        let beta = pair(g, &[c], &r.randn(c))?;
        let silu = case % 2 == 0;
        let want = CpuBackend.group_norm(&x.cpu, &gamma.cpu, &beta.cpu, groups, 1e-5, silu)?;
        let got = g.group_norm(&x.gpu, &gamma.gpu, &beta.gpu, groups, 1e-5, silu)?;
        out.push(
            compare(
                g,
                format!("group_norm {n}x{c}x{h}x{w} groups {groups} silu {silu}"),
                &want,
                &got,
                TOL,
            )
            .await?,
        );
    }
    Ok(out)
}

pub async fn matmul(g: &GpuBackend, r: &mut TestRng) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for case in 0..10 {
        // Cases 6-9 have few output rows and a long K: split-K on real GPUs (asserted below), with
        // every bias mode and with and without a residual in the split sum.
        let (m, n, k) = if case >= 6 {
            (r.range(1, 9), r.range(1, 70), r.range(130, 600))
        } else {
            (r.range(1, 70), r.range(1, 70), r.range(1, 50))
        };
        let (outer, inner) = (r.range(1, 3), r.range(1, 4));
        let batch = outer * inner;
        // A is read transposed in even cases, B in odd ones; offsets exercise the views.
        let a = if case % 2 == 0 {
            Strides {
                offset: 3,
                row: 1,
                col: m,
                outer: m * k * inner,
                inner: m * k,
            }
        } else {
            Strides {
                offset: 0,
                row: k,
                col: 1,
                outer: m * k * inner,
                inner: m * k,
            }
        };
        let b = if case % 2 == 1 {
            Strides {
                offset: 0,
                row: 1,
                col: k,
                outer: k * n * inner,
                inner: k * n,
            }
        } else {
            Strides {
                offset: 5,
                row: n,
                col: 1,
                outer: 0,
                inner: k * n,
            }
        };
        let c = Strides {
            offset: 0,
            row: n,
            col: 1,
            outer: m * n * inner,
            inner: m * n,
        };
        let bias_mode = [BiasMode::None, BiasMode::PerRow, BiasMode::PerCol][case % 3];
        let spec = MatmulSpec {
            m,
            n,
            k,
            batch,
            batch_inner: inner,
            a,
            b,
            c,
            alpha: 0.7,
            out_scale: 1.3,
            bias: bias_mode,
        };
        let (a_len, b_len) = (3 + m * k * batch, 5 + k * n * batch);
        let at = pair(g, &[a_len], &r.randn(a_len))?;
        let bdata = r.randn(b_len);
        let bt = pair(g, &[b_len], &bdata)?;
        let blen = if bias_mode == BiasMode::PerRow { m } else { n };
        let bias = pair(g, &[blen], &r.randn(blen))?;
        let shape = [batch, m, n];
        let res = pair(g, &shape, &r.randn(batch * m * n))?;
        let (use_bias, use_res) = (bias_mode != BiasMode::None, case % 4 < 2);
        let want = CpuBackend.matmul(
            &at.cpu,
            &bt.cpu,
            use_bias.then_some(&bias.cpu),
            use_res.then_some(&res.cpu),
            &shape,
            &spec,
        )?;
        let got = g.matmul(
            &at.gpu,
            &bt.gpu,
            use_bias.then_some(&bias.gpu),
            use_res.then_some(&res.gpu),
            &shape,
            &spec,
        )?;
        if case >= 6 && crate::ops::matmul::split_k(&spec).0 < 2 {
            return Err(crate::error::Error::Other(format!(
                "matmul self-test: case {case} ({spec:?}) should split K"
            )));
        }
        let name = format!(
            "matmul m{m} n{n} k{k} batch {outer}x{inner} bias {bias_mode:?} residual {use_res}"
        );
        out.push(compare(g, name.clone(), &want, &got, TOL).await?);
        // B as f16 weights (a linear layer's), against the CPU on the same rounded values.
        if g.ctx.shader_f16 {
            let b16 = f16_pair(g, &[b_len], &bdata)?;
            let (bias_c, bias_g) = (use_bias.then_some(&bias.cpu), use_bias.then_some(&bias.gpu));
            let (res_c, res_g) = (use_res.then_some(&res.cpu), use_res.then_some(&res.gpu));
            let want = CpuBackend.matmul(&at.cpu, &b16.cpu, bias_c, res_c, &shape, &spec)?;
            let got = g.matmul(&at.gpu, &b16.gpu, bias_g, res_g, &shape, &spec)?;
            out.push(compare(g, format!("{name} f16 B"), &want, &got, TOL).await?);
        }
    }
    Ok(out)
}

pub async fn softmax(g: &GpuBackend, r: &mut TestRng) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    // Scale 80 makes exp overflow without the max subtraction.
    for (rows, cols, scale) in [(1usize, 1usize, 1.0f32), (65, 130, 1.0), (200, 257, 80.0)] {
        let x: Vec<f32> = r.randn(rows * cols).iter().map(|v| v * scale).collect();
        let x = pair(g, &[rows, cols], &x)?;
        let want = CpuBackend.softmax_rows(&x.cpu, cols)?;
        let got = g.softmax_rows(&x.gpu, cols)?;
        out.push(
            compare(
                g,
                format!("softmax {rows}x{cols} scale {scale}"),
                &want,
                &got,
                TOL,
            )
            .await?,
        );
    }
    Ok(out)
}

pub async fn elementwise(g: &GpuBackend, r: &mut TestRng) -> Result<Vec<Check>> {
    let (n, c, h, w) = (3, 5, r.range(1, 30), r.range(1, 30));
    let shape = [n, c, h, w];
    let len = n * c * h * w;
    let x: Vec<f32> = r.randn(len).iter().map(|v| v * 20.0).collect();
    let x = pair(g, &shape, &x)?;
    let y = pair(g, &shape, &r.randn(len))?;
    let e = pair(g, &[n, 3 * c], &r.randn(n * 3 * c))?;
    let z = pair(g, &[n, 2, h, w], &r.randn(n * 2 * h * w))?;
    // At least 2 × 2 for the pooling; odd sides drop their last row or column.
    let (hq, wq) = (h + 1, w + 1);
    let q = pair(g, &[n, c, hq, wq], &r.randn(n * c * hq * wq))?;
    let cases = [
        ("silu", CpuBackend.silu(&x.cpu)?, g.silu(&x.gpu)?),
        (
            "add",
            CpuBackend.add(&x.cpu, &y.cpu, 0.5)?,
            g.add(&x.gpu, &y.gpu, 0.5)?,
        ),
        (
            "affine",
            CpuBackend.affine(&x.cpu, 2.0, -1.0)?,
            g.affine(&x.gpu, 2.0, -1.0)?,
        ),
        (
            "modulate shift",
            CpuBackend.channel_modulate(&x.cpu, &e.cpu, 0, None)?,
            g.channel_modulate(&x.gpu, &e.gpu, 0, None)?,
        ),
        (
            "modulate scale_shift",
            CpuBackend.channel_modulate(&x.cpu, &e.cpu, c, Some(2 * c))?,
            g.channel_modulate(&x.gpu, &e.gpu, c, Some(2 * c))?,
        ),
        (
            "concat_channels",
            CpuBackend.concat_channels(&x.cpu, &z.cpu)?,
            g.concat_channels(&x.gpu, &z.gpu)?,
        ),
        (
            "concat_batch",
            CpuBackend.concat_batch(&[x.cpu.clone(), y.cpu.clone()])?,
            g.concat_batch(&[x.gpu.clone(), y.gpu.clone()])?,
        ),
        (
            "upsample_nearest2x",
            CpuBackend.upsample_nearest2x(&x.cpu)?,
            g.upsample_nearest2x(&x.gpu)?,
        ),
        (
            "avg_pool2x2",
            CpuBackend.avg_pool2x2(&q.cpu)?,
            g.avg_pool2x2(&q.gpu)?,
        ),
    ];
    let mut out = Vec::new();
    for (name, want, got) in &cases {
        out.push(compare(g, format!("{name} {n}x{c}x{h}x{w}"), want, got, TOL).await?);
    }
    Ok(out)
}

pub async fn embedding(g: &GpuBackend, r: &mut TestRng) -> Result<Vec<Check>> {
    let n = 70; // crosses one 64-wide workgroup
    let t: Vec<f32> = (0..n).map(|_| r.range(0, 1000) as f32).collect();
    let t = pair(g, &[n], &t)?;
    let mut out = Vec::new();
    for (dim, flip, shift) in [(32usize, true, 0.0f32), (33, false, 1.0), (128, true, 1.0)] {
        let want = CpuBackend.timestep_embedding(&t.cpu, dim, flip, shift)?;
        let got = g.timestep_embedding(&t.gpu, dim, flip, shift)?;
        // After range reduction the arguments agree exactly; what is left is the GPU's sin/cos,
        // which WGSL only requires to be within 2^-11 absolute on [-π, π] (SwiftShader: ~1e-4).
        out.push(
            compare(
                g,
                format!("timestep_embedding n{n} dim {dim} flip {flip} shift {shift}"),
                &want,
                &got,
                1e-3,
            )
            .await?,
        );
    }
    let (vocab, d) = (11, 37);
    let table = pair(g, &[vocab, d], &r.randn(vocab * d))?;
    let ids: Vec<f32> = (0..n).map(|_| r.range(0, vocab) as f32).collect();
    let ids = pair(g, &[n], &ids)?;
    let want = CpuBackend.embedding(&table.cpu, &ids.cpu)?;
    let got = g.embedding(&table.gpu, &ids.gpu)?;
    out.push(
        compare(
            g,
            format!("embedding lookup {n} of {vocab}x{d}"),
            &want,
            &got,
            0.0,
        )
        .await?,
    );
    Ok(out)
}

/// Every family, in order.
pub async fn run_all(g: &GpuBackend, seed: u64) -> Result<Vec<Check>> {
    let mut r = TestRng::new(seed);
    let mut all = Vec::new();
    all.extend(group_norm(g, &mut r).await?);
    all.extend(elementwise(g, &mut r).await?);
    all.extend(embedding(g, &mut r).await?);
    // Both kernel sets, whichever this adapter runs by default: the register-tiled one (CPU
    // adapters) and the tiled / split-K one (real GPUs), so that each is compiled and checked by
    // this browser's WGSL compiler too. Names of the second set end in "(tiled)".
    let default = g.ctx.tiled.get();
    let mut sets = Vec::new();
    for tiled in [false, true] {
        g.ctx.tiled.set(tiled);
        sets.push(kernel_set(g, &mut r).await);
    }
    g.ctx.tiled.set(default);
    for (set, suffix) in sets.into_iter().zip(["", " (tiled)"]) {
        all.extend(set?.into_iter().map(|mut c| {
            c.name.push_str(suffix);
            c
        }));
    }
    Ok(all)
}

/// The checks of the kernels that have a register-tiled and a tiled / split-K form.
async fn kernel_set(g: &GpuBackend, r: &mut TestRng) -> Result<Vec<Check>> {
    let mut out = conv2d(g, r).await?;
    out.extend(matmul(g, r).await?);
    out.extend(softmax(g, r).await?);
    Ok(out)
}
