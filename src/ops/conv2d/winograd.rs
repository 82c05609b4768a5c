//! Winograd's minimal filtering F(m×m, 3×3) for the CPU backend's 3×3 stride-1 'same'
//! convolutions (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015), with
//! output blocks of 2×2 ([`Tile::F2`]) or 4×4 ([`Tile::F4`]).
//!
//! An m×m block of outputs depends on an α×α tile `d` (α = m + 2) of the padded input. With the
//! weight `g` transformed once into `U = G g Gᵀ` and each tile into `V = Bᵀ d B` (α×α values,
//! the positions ξ), the block is `Aᵀ [Σ_ci U[co, ci] ⊙ V[ci]] A`: α² multiply-adds per input
//! channel where the direct convolution needs 9·m², 2.25× fewer for F(2×2) (16 for 4 outputs)
//! and 4× fewer for F(4×4) (36 for 16). The sum over the input channels is, for each ξ, a GEMM
//! `M[ξ] (Co × T) = U[ξ] (Co × Ci) · V[ξ] (Ci × T)` over `T` tiles, and that GEMM is the direct
//! convolution's microkernel ([`super::direct`]) on a 1×1 "convolution" of a one-row image `T`
//! pixels wide: the same SIMD code (AVX2 + FMA natively, wasm's SIMD128 or relaxed SIMD in a
//! browser). `G` is applied to the weight once, in f64. F(2×2)'s `Bᵀ` and `Aᵀ` hold only 0 and
//! ±1, so its result differs from the direct convolution's by rounding alone (relative L2
//! against PyTorch 2.9e-7 on `fashion`, 2.7e-7 direct); F(4×4)'s hold up to ±8 and its `G`
//! 1/6 and 1/24, which costs about a decimal digit (BENCHMARKS.md).
//!
//! Per image: every input channel is copied with a zero border, normalised where a group norm
//! precedes the convolution ([`super::direct::Prologue`]), its rows split into m phases by
//! column (`p mod m`), so that a vector of tiles reads each of its α columns as consecutive
//! values ([`pad_channel`]). Then, one band of tile rows at a time (sized so that its `V` and
//! `M` stay in L2, [`BAND_BYTES`]): (1) the input transform into `V`, `[α²][Ci][tiles]`; (2)
//! the α² GEMMs into `M`, `[α²][Co][tiles]`; (3) the output transform with the bias, channel
//! term, residual and scale ([`super::direct::Epilogue`]). On several threads a batch that
//! divides among them runs whole images per thread; else an image's tile rows split evenly
//! among the threads, or, with fewer bands than threads, its output channels (each thread
//! transforming the whole input, so that a band's steps need no join between them). Every split
//! gives the same bits.
//!
//! Where it runs ([`tile`]): 3×3, stride 1, padding 1, at least [`MIN_CHANNELS`] in and out, at
//! least [`MIN_TILES`] blocks, F(4×4) where the image is 16×16 or more and its sides divide
//! (height by 4, width by 16), F(2×2) where they divide by 2 and 8; the direct convolution runs
//! the rest.

use super::direct::{self, Epilogue, Geometry, Part, Prologue, Simd, Span};
use crate::device::cpu::{pool, threads};
use crate::ops::groupnorm;

/// The output block each tile computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    /// F(2×2, 3×3): 4×4 tiles, 16 positions.
    F2,
    /// F(4×4, 3×3): 6×6 tiles, 36 positions.
    F4,
}

impl Tile {
    /// The output block's side, m.
    pub const fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Transform positions: α² for tiles of α = m + 2.
    pub const fn positions(self) -> usize {
        (self.m() + 2) * (self.m() + 2)
    }

    /// `G`, the weight transform of F(m, 3) (α × 3).
    fn g(self) -> &'static [[f64; 3]] {
        match self {
            Tile::F2 => &[
                [1.0, 0.0, 0.0],
                [0.5, 0.5, 0.5],
                [0.5, -0.5, 0.5],
                [0.0, 0.0, 1.0],
            ],
            Tile::F4 => &[
                [1.0 / 4.0, 0.0, 0.0],
                [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
                [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
                [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
                [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
                [0.0, 0.0, 1.0],
            ],
        }
    }
}

/// The most positions of any [`Tile`].
const MAX_POSITIONS: usize = 36;

/// One slab per position (only the first [`Tile::positions`] are used).
type Slabs<'a> = [&'a mut [f32]; MAX_POSITIONS];

fn no_slabs<'a>() -> Slabs<'a> {
    std::array::from_fn(|_| Default::default())
}

/// Images with fewer output blocks than this run a smaller tile or the direct convolution: the
/// GEMMs' rows would be too short to pay for the transforms.
pub const MIN_TILES: usize = 16;

/// Convolutions with fewer input or output channels than this run the direct convolution: the
/// transforms cost about as much per channel and pixel as the GEMMs save, and the GEMMs' sums
/// over the input channels are too short to run at speed. `examples/cpu_conv` (BENCHMARKS.md):
/// 3 channels (a UNet's first and last convolutions) ran 0.7–0.8× as fast as the direct kernel,
/// 16 (emoji-sr's 64×64 layers) 0.9–0.96×, 32 1.2×, 64–256 1.3–1.9× (F(2×2)).
pub const MIN_CHANNELS: usize = 32;

/// The transforms' vectors: 8 lanes where they divide a tile row's tiles; 8 lanes over two tile
/// rows of 4 tiles (a 16×16 image's F(4×4) tiles, an 8×8 image's F(2×2) ones), which on 4 lanes
/// ran the transforms at half the width; else 4 ([`fits`] makes a tile row a multiple of 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lanes {
    #[cfg(target_arch = "x86_64")]
    Avx,
    #[cfg(target_arch = "x86_64")]
    AvxRowPairs,
    #[cfg(target_arch = "x86_64")]
    Sse,
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    Simd128,
}

impl Lanes {
    /// For `rows` tile rows of `per_row` tiles, on a CPU where [`fits`] found SIMD.
    fn of(per_row: usize, rows: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        return if per_row.is_multiple_of(8) {
            Lanes::Avx
        } else if per_row == 4 && rows.is_multiple_of(2) {
            Lanes::AvxRowPairs
        } else {
            Lanes::Sse
        };
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        return {
            let _ = (per_row, rows);
            Lanes::Simd128
        };
        #[allow(unreachable_code)]
        {
            let _ = (per_row, rows);
            unreachable!("winograd: fits() needs SIMD")
        }
    }

    /// Tile rows per vector: 2 for [`Lanes::AvxRowPairs`], else 1.
    fn rows(self) -> usize {
        #[cfg(target_arch = "x86_64")]
        if self == Lanes::AvxRowPairs {
            return 2;
        }
        1
    }

    /// The lanes [`pad_channel`] runs at: its rows are image rows, one at a time.
    fn of_rows(self) -> Self {
        #[cfg(target_arch = "x86_64")]
        if self == Lanes::AvxRowPairs {
            return Lanes::Sse;
        }
        self
    }
}

/// Runs `$f::<S>($args)` with the [`Simd`] type of `$lanes`, compiled for its features.
macro_rules! with_lanes {
    ($lanes:expr, $f:ident($($arg:expr),* $(,)?)) => {{
        // SAFETY: [`fits`] found SIMD, so this CPU has AVX2 and FMA (x86) or this build has
        // SIMD128 (wasm); the functions check their operands' lengths.
        #[allow(unused_unsafe)]
        unsafe {
            match $lanes {
                #[cfg(target_arch = "x86_64")]
                Lanes::Avx => x86::$f::<direct::x86::Avx<1>>($($arg),*),
                #[cfg(target_arch = "x86_64")]
                Lanes::AvxRowPairs => x86::$f::<direct::x86::Avx<2>>($($arg),*),
                #[cfg(target_arch = "x86_64")]
                Lanes::Sse => x86::$f::<direct::x86::Sse>($($arg),*),
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                Lanes::Simd128 => $f::<direct::wasm::Simd128>($($arg),*),
            }
        }
    }};
}

/// The transforms compiled for AVX2 + FMA, whichever vector type `S` they use.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Simd, Tile};

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pad_channel<S: Simd>(
        tile: Tile,
        x: &[f32],
        w: usize,
        affine: Option<([f32; 2], bool)>,
        plane: &mut [f32],
        pp: &mut [f32],
    ) {
        super::pad_channel::<S>(tile, x, w, affine, plane, pp)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn input_channel<S: Simd>(
        tile: Tile,
        pp: &[f32],
        per_row: usize,
        v: &mut [&mut [f32]],
        at: usize,
    ) {
        super::input_channel::<S>(tile, pp, per_row, v, at)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn output_channel<S: Simd>(
        tile: Tile,
        m: (&[f32], usize, usize),
        w: usize,
        init: f32,
        residual: Option<&[f32]>,
        scale: f32,
        out: &mut [f32],
    ) {
        super::output_channel::<S>(tile, m, w, init, residual, scale, out)
    }
}

/// Whether `tile` can run this convolution on this CPU: a 3×3 kernel, stride 1, one pixel of
/// padding on every side, [`MIN_CHANNELS`] in and out, a height of whole blocks and a width of
/// whole runs of 4 blocks (the narrowest vector), at least [`MIN_TILES`] blocks, and SIMD for
/// the GEMMs (AVX2 + FMA natively, SIMD128 in a browser).
pub fn fits(g: &Geometry, tile: Tile) -> bool {
    let [_, _, h, w] = g.x;
    let m = tile.m();
    let kernel = g.k == [3, 3] && g.stride == 1 && g.pad == [1; 4];
    let channels = g.x[1] >= MIN_CHANNELS && g.co >= MIN_CHANNELS;
    kernel
        && channels
        && h.is_multiple_of(m)
        && w.is_multiple_of(4 * m)
        && (h / m) * (w / m) >= MIN_TILES
        && direct::width(1, 4).is_some()
}

/// The tile that runs this convolution, if Winograd does: F(4×4) where it [`fits`], else
/// F(2×2) where that does.
pub fn tile(g: &Geometry) -> Option<Tile> {
    [Tile::F4, Tile::F2].into_iter().find(|&t| fits(g, t))
}

/// The length of [`pack_weight`]'s output.
pub fn packed_len(co: usize, ci: usize, tile: Tile) -> usize {
    tile.positions() * direct::packed_len(co, ci, 1)
}

/// The weight `[Co, Ci, 3, 3]` transformed for `tile`, `U[ξ] = G g Gᵀ` per channel pair, each
/// position's `[Co, Ci]` matrix in the order the microkernel reads it ([`direct::pack_weight`]
/// of a 1×1 kernel), position after position.
pub fn pack_weight(w: &[f32], ws: &[usize], tile: Tile) -> Vec<f32> {
    let (co, ci) = (ws[0], ws[1]);
    assert_eq!(&ws[2..], [3, 3], "winograd weight");
    let (g_t, alpha) = (tile.g(), tile.m() + 2);
    let mut u = vec![vec![0f32; co * ci]; tile.positions()];
    for (pair, g) in w.chunks_exact(9).enumerate() {
        // G g, α × 3, then (G g) Gᵀ, α × α.
        let gg: Vec<[f64; 3]> = g_t
            .iter()
            .map(|row| std::array::from_fn(|j| (0..3).map(|i| row[i] * g[i * 3 + j] as f64).sum()))
            .collect();
        for a in 0..alpha {
            for b in 0..alpha {
                let v: f64 = (0..3).map(|j| gg[a][j] * g_t[b][j]).sum();
                u[a * alpha + b][pair] = v as f32;
            }
        }
    }
    let mut packed = Vec::with_capacity(packed_len(co, ci, tile));
    for u in &u {
        packed.extend(direct::pack_weight(u, &[co, ci, 1, 1]));
    }
    packed
}

/// Bytes of `V` and `M` one band of tile rows keeps, so that they stay in a core's L2 (512 KiB on
/// the EPYC of BENCHMARKS.md) beside the padded input's rows and the weights the GEMMs stream:
/// a whole 32×32 image's would not (512 KiB each at 32 channels, F(2×2)), and the transforms'
/// stores and the GEMMs' loads would go to L3.
const BAND_BYTES: usize = 192 << 10;

/// Tile rows per band for `ci` input and `co` output channels, tile rows of `per_row` tiles and
/// `positions` positions: as many as [`BAND_BYTES`] holds, at least one, rounded up to a whole
/// number of pairs of 8-lane vectors (the microkernel's widest tile) where a row is not one.
fn band_rows(ci: usize, co: usize, per_row: usize, rows: usize, positions: usize) -> usize {
    let per_band_row = positions * (ci + co) * per_row * 4;
    let band = (BAND_BYTES / per_band_row).max(1);
    // Whole pairs of 8-lane vectors, the microkernel's widest tile (`per_row` is a multiple of 4).
    let step = match per_row % 16 {
        0 => 1,
        8 => 2,
        _ => 4,
    };
    band.next_multiple_of(step).min(rows)
}

/// Runs the convolution with `tile` into `out` (`[N, Co, H, W]`, every element written), with
/// `packed` from [`pack_weight`] for that tile.
///
/// # Panics
/// Where `tile` does not fit ([`fits`]), or an operand's length does not match `g`.
pub fn conv(
    x: &[f32],
    g: &Geometry,
    tile: Tile,
    packed: &[f32],
    norm: Option<Prologue<'_>>,
    e: Epilogue<'_>,
    out: &mut [f32],
) {
    let [n, ci, h, w] = g.x;
    let co = g.co;
    let (image, out_image) = (ci * h * w, co * h * w);
    assert!(fits(g, tile), "winograd geometry");
    assert_eq!(x.len(), n * image, "winograd input");
    assert_eq!(out.len(), n * out_image, "winograd output");
    assert_eq!(packed.len(), packed_len(co, ci, tile), "winograd weight");
    assert!(
        norm.is_none_or(|p| p.affine.len() == n * ci),
        "winograd prologue"
    );
    assert!(e.bias.is_none_or(|b| b.len() == co));
    assert!(e.channel_add.is_none_or(|a| a.len() == n * co));
    assert!(e.residual.is_none_or(|r| r.len() == out.len()));
    let threads = match threads::count().min(direct::MAX_PARTS) {
        t if t > 1 && out.len() * ci * 9 >= direct::PARALLEL_MACS => t,
        _ => 1,
    };
    let plan = Plan::new(g, tile);
    let x_of = |b: usize| &x[b * image..(b + 1) * image];
    let norm_of = |b: usize| norm.map(|p| p.of_image(b, ci));
    let e_of = |b: usize| e.of_image(b, co, out_image);
    let all = all_channels(co);
    if n.is_multiple_of(threads) {
        // Whole images per thread (on one thread: every image).
        direct::whole_images(out, out_image, threads, |b0, o| {
            let mut pp = pool::take(ci * plan.padded);
            for (b, ob) in (b0..).zip(o.chunks_mut(out_image)) {
                pad_image(x_of(b), &plan, norm_of(b), 1, &mut pp);
                // SAFETY: `ob` is this image's output, this thread's alone.
                unsafe {
                    bands(
                        &pp,
                        &plan,
                        packed,
                        e_of(b),
                        (0, plan.rows),
                        all,
                        ob.as_mut_ptr(),
                    )
                };
            }
            pool::give(pp);
        });
    } else {
        // One image at a time on every thread: its tile rows split evenly among the threads
        // (each running its share in bands) where there are bands enough, else its output
        // channels, each thread transforming the whole input (a band's input transform is
        // about 2/Co of its GEMMs' work) so that the band's three steps need no join between
        // them.
        let mut pp = pool::take(ci * plan.padded);
        for (b, ob) in out.chunks_mut(out_image).enumerate() {
            pad_image(x_of(b), &plan, norm_of(b), threads, &mut pp);
            // SAFETY: as below; each thread writes its own tile rows or channels.
            let o = unsafe { threads::Shared::new(ob.as_mut_ptr()) };
            let mut jobs = [((0, 0), all); direct::MAX_PARTS];
            let k = if plan.bands >= threads {
                // Whole vectors' tile rows (pairs for [`Lanes::AvxRowPairs`]) per thread.
                let step = plan.lanes.rows();
                for (job, (a, b)) in jobs.iter_mut().zip(ranges(plan.rows / step, threads)) {
                    job.0 = (a * step, b * step);
                }
                threads
            } else {
                let (spans, k) = direct::split(co, threads);
                for (job, span) in jobs.iter_mut().zip(&spans[..k]) {
                    *job = ((0, plan.rows), *span);
                }
                k
            };
            threads::for_each(&mut jobs[..k], |&mut (run, span)| {
                // SAFETY: the jobs' runs of tile rows, or their channels, are disjoint, so are
                // the outputs they write.
                unsafe { bands(&pp, &plan, packed, e_of(b), run, span, o.get()) };
            });
        }
        pool::give(pp);
    }
}

/// A convolution's sizes as its steps need them.
struct Plan {
    g: Geometry,
    tile: Tile,
    /// The block's side m, and the tile's positions α².
    m: usize,
    positions: usize,
    /// Tiles per tile row (`W/m`) and tile rows (`H/m`).
    per_row: usize,
    rows: usize,
    /// A padded row's length: m phases of `W/m + 1` values ([`pad_channel`]).
    wp: usize,
    /// Tile rows per band ([`band_rows`]) and bands.
    band: usize,
    bands: usize,
    /// One channel's padded plane, `(H + 2) · wp`.
    padded: usize,
    lanes: Lanes,
}

impl Plan {
    fn new(g: &Geometry, tile: Tile) -> Self {
        let [_, ci, h, w] = g.x;
        let (m, positions) = (tile.m(), tile.positions());
        let (per_row, rows) = (w / m, h / m);
        let wp = m * (per_row + 1);
        let band = band_rows(ci, g.co, per_row, rows, positions);
        Self {
            g: *g,
            tile,
            m,
            positions,
            per_row,
            rows,
            wp,
            band,
            bands: rows.div_ceil(band),
            padded: (h + 2) * wp,
            lanes: Lanes::of(per_row, rows),
        }
    }
}

/// How many bands [`conv`] splits an image of `g` into with `tile`, for the tests of its thread
/// splits.
#[cfg(test)]
pub(super) fn band_count(g: &Geometry, tile: Tile) -> usize {
    Plan::new(g, tile).bands
}

/// Whether [`conv`]'s transforms run two tile rows per vector for `g` with `tile`, for the tests.
#[cfg(test)]
pub(super) fn row_pairs(g: &Geometry, tile: Tile) -> bool {
    Plan::new(g, tile).lanes.rows() == 2
}

/// `0..len` in `k` runs of about equal length.
fn ranges(len: usize, k: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..k).map(move |i| (i * len / k, (i + 1) * len / k))
}

/// One image's input channels (`x`, `[Ci, H, W]`) padded into `pp` ([`pad_channel`], one plane
/// per channel), normalised by `norm` as they are copied, on `k` threads.
fn pad_image(x: &[f32], plan: &Plan, norm: Option<(&[[f32; 2]], bool)>, k: usize, pp: &mut [f32]) {
    let [_, ci, h, w] = plan.g.x;
    let padded = plan.padded;
    let mut runs: [(usize, &mut [f32]); direct::MAX_PARTS] = Default::default();
    let k = k.min(ci);
    let mut rest = &mut pp[..ci * padded];
    for (run, (c0, c1)) in runs.iter_mut().zip(ranges(ci, k)) {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut((c1 - c0) * padded);
        *run = (c0, head);
        rest = tail;
    }
    let (lanes, tile) = (plan.lanes.of_rows(), plan.tile);
    threads::for_each(&mut runs[..k], |(c0, pp)| {
        let mut plane = pool::take(h * w);
        for (c, pc) in (*c0..).zip(pp.chunks_exact_mut(padded)) {
            let affine = norm.map(|(ab, silu)| (ab[c], silu));
            let x = &x[c * h * w..][..h * w];
            with_lanes!(lanes, pad_channel(tile, x, w, affine, &mut plane, pc));
        }
        pool::give(plane);
    });
}

/// Tile rows `t0..t1` of one image in bands of [`Plan::band`] rows, from its padded input `pp`
/// ([`pad_image`]) into the output channels of `span` ([`direct::blocks`]) at `out` (the image's
/// `[Co, H, W]`), on this thread.
///
/// # Safety
/// `out` points to the image's whole output, and no other thread touches these tile rows'
/// pixels of these channels while this runs.
unsafe fn bands(
    pp: &[f32],
    plan: &Plan,
    packed: &[f32],
    e: Epilogue<'_>,
    (t0, t1): (usize, usize),
    span: Span,
    out: *mut f32,
) {
    let [_, ci, _, _] = plan.g.x;
    let (co, positions) = (plan.g.co, plan.positions);
    let most = plan.band * plan.per_row;
    let (mut v, mut m) = (
        pool::take(positions * ci * most),
        pool::take(positions * co * most),
    );
    for start in (t0..t1).step_by(plan.band) {
        let ty = (start, (start + plan.band).min(t1));
        let tiles = (ty.1 - ty.0) * plan.per_row;
        let (v, m) = (
            &mut v[..positions * ci * tiles],
            &mut m[..positions * co * tiles],
        );
        // SAFETY: passed on from the caller.
        unsafe { band_conv(pp, plan, packed, e, ty, span, (v, m), out) };
    }
    pool::give(v);
    pool::give(m);
}

/// Every one of `co` channels' [`direct::blocks`].
fn all_channels(co: usize) -> Span {
    Span {
        first: 0,
        count: direct::blocks(co).count(),
    }
}

/// Tile rows `ty.0..ty.1` of one image, output channels `span`: the input transform of every
/// input channel into `V` (`[α²][Ci][tiles]`), the α² GEMMs of `span`'s channels into their rows
/// of `M` (`[α²][Co][tiles]`), each in one pass over the input channels (a band's V, `ci × tiles`
/// per position, is in L2 already, and one pass saves the accumulators' loads and stores between
/// passes), then those channels' output transform into `out` (the image's `[Co, H, W]`, these
/// tile rows' pixel rows).
///
/// # Safety
/// As [`bands`]'.
#[allow(clippy::too_many_arguments)]
unsafe fn band_conv(
    pp: &[f32],
    plan: &Plan,
    packed: &[f32],
    e: Epilogue<'_>,
    ty: (usize, usize),
    span: Span,
    (v, m): (&mut [f32], &mut [f32]),
    out: *mut f32,
) {
    let [_, ci, h, w] = plan.g.x;
    let co = plan.g.co;
    let (per_row, lanes, tile, positions) = (plan.per_row, plan.lanes, plan.tile, plan.positions);
    let tiles = (ty.1 - ty.0) * per_row;
    // (1) The input transform. A band's tile rows read padded rows m·ty.0 … m·ty.1 + 1.
    let rows = (plan.m * ty.0 * plan.wp, (plan.m * ty.1 + 2) * plan.wp);
    let mut slabs = no_slabs();
    for (slab, vx) in slabs.iter_mut().zip(v.chunks_exact_mut(ci * tiles)) {
        *slab = vx;
    }
    for c in 0..ci {
        let pc = &pp[c * plan.padded..][rows.0..rows.1];
        with_lanes!(
            lanes,
            input_channel(tile, pc, per_row, &mut slabs[..positions], c * tiles)
        );
    }
    // (2) The GEMMs.
    let v = &*v;
    let gemm = Geometry {
        x: [1, ci, 1, tiles],
        co,
        k: [1, 1],
        stride: 1,
        pad: [0; 4],
    };
    let width = direct::width(1, tiles).expect("a band is a whole number of vectors");
    let u_len = direct::packed_len(co, ci, 1);
    let part = Part {
        span,
        vectors: (0, direct::vectors(width, 1, tiles)),
    };
    for (xi, mx) in m.chunks_exact_mut(co * tiles).enumerate() {
        let q = &v[xi * ci * tiles..][..ci * tiles];
        let u = &packed[xi * u_len..][..u_len];
        // SAFETY: `width` is this CPU's (`direct::width`); `q`, `u` and the slab hold this 1×1
        // geometry's operands.
        unsafe {
            direct::run_kernel(
                width,
                q,
                &gemm,
                u,
                part,
                ci,
                Epilogue::NONE,
                mx.as_mut_ptr(),
            )
        };
    }
    // (3) The output transform: channel c's rows m·ty.0 … m·ty.1 of `out`.
    let m = &*m;
    let plane = h * w;
    let (first, len) = (plan.m * ty.0 * w, plan.m * (ty.1 - ty.0) * w);
    let (c0, c1) = span.channels(co);
    for c in c0..c1 {
        let init = e.bias.map_or(0.0, |b| b[c]) + e.channel_add.map_or(0.0, |a| a[c]);
        let residual = e.residual.map(|r| &r[c * plane + first..][..len]);
        // SAFETY: channel c's rows of this band, the caller promised, are ours alone.
        let oc = unsafe { std::slice::from_raw_parts_mut(out.add(c * plane + first), len) };
        with_lanes!(
            lanes,
            output_channel(
                tile,
                (m, co * tiles, c * tiles),
                w,
                init,
                residual,
                e.scale,
                oc
            )
        );
    }
}

/// One input channel (`x`, `H × W`, row length `w`) into `pp`, `H + 2` rows with a zero row
/// above and below, normalised by `affine` first (into `plane`, `H × W` values, in one pass:
/// per row, the call and its SiLU's setup cost as much as a 32-value row). Each row is split by
/// its padded column `p` (image column `p − 1`) into m phases of `W/m + 1` values, phase
/// `p mod m` holding column `p` at `p / m`, so that [`input_channel`] finds a tile's α columns
/// as α runs of consecutive values. The slots past the padded row are zero.
///
/// # Safety
/// The CPU has `S`'s features; `W/m` is a multiple of `S::LANES`.
#[inline(always)]
unsafe fn pad_channel<S: Simd>(
    tile: Tile,
    x: &[f32],
    w: usize,
    affine: Option<([f32; 2], bool)>,
    plane: &mut [f32],
    pp: &mut [f32],
) {
    let (l, m) = (S::LANES, tile.m());
    let q = w / m + 1;
    let wp = m * q;
    let h = x.len() / w;
    assert!((w / m).is_multiple_of(l) && pp.len() == (h + 2) * wp && plane.len() == x.len());
    let x = match affine {
        Some((ab, silu)) => {
            groupnorm::apply_row(x, plane, ab, silu);
            &*plane
        }
        None => x,
    };
    pp[..wp].fill(0.0);
    pp[(h + 1) * wp..].fill(0.0);
    for (src, dst) in x.chunks_exact(w).zip(pp[wp..].chunks_exact_mut(wp)) {
        let (d, p) = (dst.as_mut_ptr(), src.as_ptr());
        // Phase j's slot i holds padded column m·i + j, image column m·i + j − 1.
        let at = |j: usize, i: usize| d.add(j * q + i);
        match tile {
            Tile::F2 => {
                // Image column 2i is padded column 2i + 1 (odd, at i); 2i + 1 is 2i + 2 (even,
                // at i + 1).
                *at(0, 0) = 0.0;
                *at(1, q - 1) = 0.0;
                for i in (0..q - 1).step_by(l) {
                    let (a, b) = S::unzip(S::load(p.add(2 * i)), S::load(p.add(2 * i + l)));
                    S::store(at(1, i), a);
                    S::store(at(0, i + 1), b);
                }
            }
            Tile::F4 => {
                // Image column 4i + r is padded column 4i + r + 1: phase r + 1 at i, or for
                // r = 3 phase 0 at i + 1.
                *at(0, 0) = 0.0;
                for j in 1..4 {
                    *at(j, q - 1) = 0.0;
                }
                for i in (0..q - 1).step_by(l) {
                    let c = p.add(4 * i);
                    let (e0, o0) = S::unzip(S::load(c), S::load(c.add(l)));
                    let (e1, o1) = S::unzip(S::load(c.add(2 * l)), S::load(c.add(3 * l)));
                    let (r0, r2) = S::unzip(e0, e1);
                    let (r1, r3) = S::unzip(o0, o1);
                    S::store(at(1, i), r0);
                    S::store(at(2, i), r1);
                    S::store(at(3, i), r2);
                    S::store(at(0, i + 1), r3);
                }
            }
        }
    }
}

/// One input channel's tiles, `Bᵀ d B`, from its padded rows `pp` ([`pad_channel`]; the band's,
/// `m·rows + 2` of them) into `v[ξ][at..]` (`rows · per_row` values each, tile row after tile
/// row), `S::LANES` tiles at a time ([`input_tiles`]).
///
/// # Safety
/// The CPU has `S`'s features; `per_row` is a multiple of `S::LANES / S::ROWS` (equal to it for
/// two rows, whose count is then even).
#[inline(always)]
unsafe fn input_channel<S: Simd>(
    tile: Tile,
    pp: &[f32],
    per_row: usize,
    v: &mut [&mut [f32]],
    at: usize,
) {
    let (l, m, pair) = (S::LANES / S::ROWS, tile.m(), S::ROWS == 2);
    let wp = m * (per_row + 1);
    let h = pp.len() / wp - 2;
    let (rows, tiles) = (h / m, h / m * per_row);
    assert!(per_row.is_multiple_of(l) && pp.len() == (h + 2) * wp);
    assert!(!pair || (per_row == l && rows.is_multiple_of(2)));
    assert!(v.len() == tile.positions() && v.iter().all(|v| v.len() >= at + tiles));
    let mut vp = [std::ptr::null_mut(); MAX_POSITIONS];
    for (vp, v) in vp.iter_mut().zip(v.iter_mut()) {
        *vp = v.as_mut_ptr().add(at);
    }
    match tile {
        Tile::F2 => input_tiles::<S, 4>(pp.as_ptr(), per_row, rows, &vp),
        Tile::F4 => input_tiles::<S, 6>(pp.as_ptr(), per_row, rows, &vp),
    }
}

/// [`input_channel`]'s loop for tiles of `A` = m + 2: tile `tx` reads padded columns
/// `m·tx … m·tx + A − 1`, column `m·tx + j` being phase `j mod m`'s slot `tx + j / m`, so that
/// both of `Bᵀ`'s passes (down the rows, then across) run on whole vectors loaded as they lie;
/// position ξ = `A·a + b` goes to `vp[ξ]`. With `S::ROWS` = 2 a vector holds two tile rows of
/// `per_row = LANES / 2` tiles, the second's half loaded `m` padded rows further on.
///
/// Plain loops rather than `array::from_fn`: its closures pass through core's generic wrappers,
/// compiled without AVX, and there the intrinsics stopped inlining (2× slower forwards).
///
/// # Safety
/// As [`input_channel`]'s, which checked the lengths.
#[inline(always)]
unsafe fn input_tiles<S: Simd, const A: usize>(
    p: *const f32,
    per_row: usize,
    rows: usize,
    vp: &[*mut f32; MAX_POSITIONS],
) {
    let (l, m) = (S::LANES / S::ROWS, A - 2);
    let q = per_row + 1;
    let wp = m * q;
    // From one tile row to the next: m padded rows.
    let next = m * wp;
    let zero = S::splat(0.0);
    for ty in (0..rows).step_by(S::ROWS) {
        for tx in (0..per_row).step_by(l) {
            // Bᵀ down each of the tile's columns m·tx + j (rows m·ty + 0…A−1), then across.
            let mut down = [[zero; A]; A];
            for (j, dj) in down.iter_mut().enumerate() {
                let col = p.add(m * ty * wp + (j % m) * q + tx + j / m);
                let mut d = [zero; A];
                for (k, d) in d.iter_mut().enumerate() {
                    *d = load_rows::<S>(col.add(k * wp), next);
                }
                *dj = b_t::<S, A>(d);
            }
            let at = ty * per_row + tx;
            for a in 0..A {
                let mut t = [zero; A];
                for (t, dj) in t.iter_mut().zip(&down) {
                    *t = dj[a];
                }
                for (b, &v) in b_t::<S, A>(t).iter().enumerate() {
                    S::store(vp[A * a + b].add(at), v);
                }
            }
        }
    }
}

/// `S::LANES` values at `at`, or with two tile rows per vector (`S::ROWS` = 2) half from `at`
/// and half from `at + next`, the next tile row's.
#[inline(always)]
unsafe fn load_rows<S: Simd>(at: *const f32, next: usize) -> S::V {
    match S::ROWS {
        2 => S::load2(at, at.add(next)),
        _ => S::load(at),
    }
}

/// `Bᵀ d` for tiles of `A` values: [`bt4`] or [`bt6`].
#[inline(always)]
unsafe fn b_t<S: Simd, const A: usize>(d: [S::V; A]) -> [S::V; A] {
    let mut r = d;
    match A {
        4 => r.copy_from_slice(&bt4::<S>([d[0], d[1], d[2], d[3]])),
        6 => r.copy_from_slice(&bt6::<S>([d[0], d[1], d[2], d[3], d[4], d[5]])),
        _ => unreachable!("winograd tiles are 4 or 6 wide"),
    }
    r
}

/// `Aᵀ m` for tiles of `A` values, `M` = A − 2 out: [`at4`] or [`at6`].
#[inline(always)]
unsafe fn a_t<S: Simd, const A: usize, const M: usize>(m: [S::V; A]) -> [S::V; M] {
    let mut r = [m[0]; M];
    match A {
        4 => r.copy_from_slice(&at4::<S>([m[0], m[1], m[2], m[3]])),
        6 => r.copy_from_slice(&at6::<S>([m[0], m[1], m[2], m[3], m[4], m[5]])),
        _ => unreachable!("winograd tiles are 4 or 6 wide"),
    }
    r
}

/// F(2, 3)'s `Bᵀ d`: `(d0 − d2, d1 + d2, d2 − d1, d1 − d3)`.
#[inline(always)]
unsafe fn bt4<S: Simd>(d: [S::V; 4]) -> [S::V; 4] {
    [
        S::sub(d[0], d[2]),
        S::add(d[1], d[2]),
        S::sub(d[2], d[1]),
        S::sub(d[1], d[3]),
    ]
}

/// F(4, 3)'s `Bᵀ d`, the rows of `Bᵀ` being `(4, 0, −5, 0, 1, 0)`, `(0, −4, −4, 1, 1, 0)`,
/// `(0, 4, −4, −1, 1, 0)`, `(0, −2, −1, 2, 1, 0)`, `(0, 2, −1, −2, 1, 0)`, `(0, 4, 0, −5, 0, 1)`.
#[inline(always)]
unsafe fn bt6<S: Simd>(d: [S::V; 6]) -> [S::V; 6] {
    let (four, five, two) = (S::splat(4.0), S::splat(-5.0), S::splat(2.0));
    let minus_four = S::splat(-4.0);
    let (d12, d34) = (S::add(d[1], d[2]), S::add(d[3], d[4]));
    let (d1m2, d4m3) = (S::sub(d[1], d[2]), S::sub(d[4], d[3]));
    let (d4m2, d3m1) = (S::sub(d[4], d[2]), S::sub(d[3], d[1]));
    let two_d3m1 = S::mul(two, d3m1);
    [
        S::mul_add(four, d[0], S::mul_add(five, d[2], d[4])),
        S::mul_add(minus_four, d12, d34),
        S::mul_add(four, d1m2, d4m3),
        S::add(d4m2, two_d3m1),
        S::sub(d4m2, two_d3m1),
        S::mul_add(four, d[1], S::mul_add(five, d[3], d[5])),
    ]
}

/// F(2, 3)'s `Aᵀ m`: `(m0 + m1 + m2, m1 − m2 − m3)`.
#[inline(always)]
unsafe fn at4<S: Simd>(m: [S::V; 4]) -> [S::V; 2] {
    [
        S::add(S::add(m[0], m[1]), m[2]),
        S::sub(S::sub(m[1], m[2]), m[3]),
    ]
}

/// F(4, 3)'s `Aᵀ m`, the rows of `Aᵀ` being `(1, 1, 1, 1, 1, 0)`, `(0, 1, −1, 2, −2, 0)`,
/// `(0, 1, 1, 4, 4, 0)`, `(0, 1, −1, 8, −8, 1)`.
#[inline(always)]
unsafe fn at6<S: Simd>(m: [S::V; 6]) -> [S::V; 4] {
    let (a, b) = (S::add(m[1], m[2]), S::sub(m[1], m[2]));
    let (c, d) = (S::add(m[3], m[4]), S::sub(m[3], m[4]));
    [
        S::add(S::add(m[0], a), c),
        S::mul_add(S::splat(2.0), d, b),
        S::mul_add(S::splat(4.0), c, a),
        S::add(S::mul_add(S::splat(8.0), d, b), m[5]),
    ]
}

/// One output channel from its α² GEMM rows (`T` values each, row ξ at `m.0[ξ·m.1 + m.2..]`):
/// `Aᵀ m A` per tile, each m×m block written into `out` (the channel's `H × W` plane, row length
/// `w`) as `(residual + (block + init)) · scale`, `S::LANES` tiles at a time ([`output_tiles`]).
///
/// # Safety
/// The CPU has `S`'s features; `w / m` is a multiple of `S::LANES / S::ROWS` (equal to it for two
/// rows, whose count is then even).
#[inline(always)]
unsafe fn output_channel<S: Simd>(
    tile: Tile,
    (m, stride, first): (&[f32], usize, usize),
    w: usize,
    init: f32,
    residual: Option<&[f32]>,
    scale: f32,
    out: &mut [f32],
) {
    let (l, mb, pair) = (S::LANES, tile.m(), S::ROWS == 2);
    let per_row = w / mb;
    let h = out.len() / w;
    let (rows, tiles) = (h / mb, h / mb * per_row);
    assert!(per_row.is_multiple_of(l / S::ROWS) && out.len() == h * w);
    assert!(!pair || (per_row == l / 2 && rows.is_multiple_of(2)));
    assert!((tile.positions() - 1) * stride + first + tiles <= m.len());
    assert!(residual.is_none_or(|r| r.len() == out.len()));
    let mut mp = [std::ptr::null(); MAX_POSITIONS];
    for (xi, mp) in mp.iter_mut().enumerate().take(tile.positions()) {
        *mp = m.as_ptr().add(xi * stride + first);
    }
    let e = (init, residual, scale);
    match tile {
        Tile::F2 => output_tiles::<S, 4, 2>(&mp, w, rows, e, out),
        Tile::F4 => output_tiles::<S, 6, 4>(&mp, w, rows, e, out),
    }
}

/// [`output_channel`]'s loop for tiles of `A` values and blocks of `M` = A − 2: `Aᵀ` across each
/// row, then down each column; a block row's `M` columns interleaved with [`Simd::zip`] (for 4,
/// `(c0 c2, c1 c3)` then those pairs) into `M` vectors of pixels. With `S::ROWS` = 2 (two tile
/// rows per vector, each a whole image row of blocks), the interleaved vectors' first half is the
/// upper tile row's pixel row, the second half the lower's. Plain loops, as in [`input_tiles`].
///
/// # Safety
/// As [`output_channel`]'s, which checked the lengths.
#[inline(always)]
unsafe fn output_tiles<S: Simd, const A: usize, const M: usize>(
    mp: &[*const f32; MAX_POSITIONS],
    w: usize,
    rows: usize,
    (init, residual, scale): (f32, Option<&[f32]>, f32),
    out: &mut [f32],
) {
    let (l, per_row) = (S::LANES, w / M);
    let (init, scale_v, zero) = (S::splat(init), S::splat(scale), S::splat(0.0));
    let o = out.as_mut_ptr();
    // Adds the epilogue to the `S::LANES` outputs at `at` and stores them.
    let put = |at: usize, v: S::V| {
        let mut v = S::add(v, init);
        if let Some(r) = residual {
            v = S::add(S::load(r.as_ptr().add(at)), v);
        }
        if scale != 1.0 {
            v = S::mul(v, scale_v);
        }
        S::store(o.add(at), v);
    };
    for ty in (0..rows).step_by(S::ROWS) {
        for tx in (0..per_row).step_by(l / S::ROWS) {
            let at = ty * per_row + tx;
            let mut across = [[zero; M]; A];
            for (a, ra) in across.iter_mut().enumerate() {
                let mut t = [zero; A];
                for (b, t) in t.iter_mut().enumerate() {
                    *t = S::load(mp[A * a + b].add(at));
                }
                *ra = a_t::<S, A, M>(t);
            }
            // y[j][i]: the block's row i, column j.
            let mut y = [[zero; M]; M];
            for (j, yj) in y.iter_mut().enumerate() {
                let mut t = [zero; A];
                for (t, ra) in t.iter_mut().zip(&across) {
                    *t = ra[j];
                }
                *yj = a_t::<S, A, M>(t);
            }
            for i in 0..M {
                let mut cols = [zero; M];
                for (c, yj) in cols.iter_mut().zip(&y) {
                    *c = yj[i];
                }
                let row = (M * ty + i) * w + M * tx;
                for (k, v) in interleave::<S, M>(cols).into_iter().enumerate() {
                    // For two tile rows, the second half is a block's height down.
                    let at = match S::ROWS {
                        2 => row + (k / (M / 2)) * M * w + (k % (M / 2)) * l,
                        _ => row + k * l,
                    };
                    put(at, v);
                }
            }
        }
    }
}

/// `M` vectors of `S::LANES` blocks' columns 0…M−1, as `M` vectors of pixels: lane by lane, the
/// blocks' `M` columns side by side.
#[inline(always)]
unsafe fn interleave<S: Simd, const M: usize>(c: [S::V; M]) -> [S::V; M] {
    let mut r = c;
    match M {
        2 => {
            let (a, b) = S::zip(c[0], c[1]);
            r[0] = a;
            r[1] = b;
        }
        4 => {
            let (p0, p1) = S::zip(c[0], c[2]);
            let (q0, q1) = S::zip(c[1], c[3]);
            let ((o0, o1), (o2, o3)) = (S::zip(p0, q0), S::zip(p1, q1));
            r.copy_from_slice(&[o0, o1, o2, o3]);
        }
        _ => unreachable!("winograd blocks are 2 or 4 wide"),
    }
    r
}
