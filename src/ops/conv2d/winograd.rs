//! Winograd's minimal filtering F(2×2, 3×3) for the CPU backend's 3×3 stride-1 'same'
//! convolutions (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).
//!
//! A 2×2 block of outputs depends on a 4×4 tile `d` of the padded input. With the weight `g`
//! transformed once into `U = G g Gᵀ` and each tile into `V = Bᵀ d B` (4×4 values, the
//! positions ξ), the block is `Aᵀ [Σ_ci U[co, ci] ⊙ V[ci]] A`: 16 multiply-adds per input
//! channel where the direct convolution needs 36, 2.25× fewer. The sum over the input channels
//! is, for each ξ, a GEMM `M[ξ] (Co × T) = U[ξ] (Co × Ci) · V[ξ] (Ci × T)` over `T` tiles, and
//! that GEMM is the direct convolution's microkernel ([`super::direct`]) on a 1×1
//! "convolution" of a one-row image `T` pixels wide: the same SIMD code (AVX2 + FMA natively,
//! wasm's SIMD128 or relaxed SIMD in a browser). `Bᵀ` and `Aᵀ` hold only 0 and ±1, and `G`'s
//! halves are applied to the weight once, in f64, so the result differs from the direct
//! convolution's by rounding alone (relative L2 against PyTorch 2.9e-7 on `fashion`, 2.7e-7
//! direct).
//!
//! Per image: every input channel is copied with a zero border, normalised where a group norm
//! precedes the convolution ([`super::direct::Prologue`]), its rows split into even and odd
//! columns so that a vector of tiles reads its four columns as they lie ([`pad_channel`]).
//! Then, one band of tile rows at a time (sized so that its `V` and `M` stay in L2,
//! [`BAND_BYTES`]): (1) the input transform into `V`, `[16][Ci][tiles]`; (2) the 16 GEMMs into
//! `M`, `[16][Co][tiles]`; (3) the output transform with the bias, channel term, residual and
//! scale ([`super::direct::Epilogue`]). On several threads a batch that divides among them runs
//! whole images per thread; else an image's tile rows split evenly among the threads, or, with
//! fewer bands than threads, each band's steps: its input channels, then its positions ξ (each thread reads
//! only its ξ's weights), then its output channels. Every split gives the same bits.
//!
//! Where it runs ([`applies`]): 3×3, stride 1, padding 1, at least [`MIN_CHANNELS`] in and out,
//! the width a multiple of 8 and at least [`MIN_TILES`] blocks; the direct convolution runs the
//! rest.

use super::direct::{self, Epilogue, Geometry, Part, Prologue, Simd, Span};
use crate::cpu::{pool, threads};
use crate::ops::groupnorm;

/// Transform positions: a 4×4 tile.
pub const POSITIONS: usize = 16;

/// Images with fewer 2×2 output blocks than this run the direct convolution: the GEMMs' rows
/// would be too short to pay for the transforms.
pub const MIN_TILES: usize = 16;

/// Convolutions with fewer input or output channels than this run the direct convolution: the
/// transforms cost about as much per channel and pixel as the GEMMs save, and the GEMMs' sums
/// over the input channels are too short to run at speed. `examples/cpu_conv` (BENCHMARKS.md):
/// 3 channels (a UNet's first and last convolutions) ran 0.7–0.8× as fast as the direct kernel,
/// 16 (emoji-sr's 64×64 layers) 0.9–0.96×, 32 1.2×, 64–256 1.3–1.9×.
pub const MIN_CHANNELS: usize = 32;

/// `G`, the weight transform of F(2, 3) (4 × 3).
const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// The transforms' vectors: 8 lanes where they divide a tile row's `half` tiles, else 4 ([`applies`]
/// makes it a multiple of 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lanes {
    #[cfg(target_arch = "x86_64")]
    Avx,
    #[cfg(target_arch = "x86_64")]
    Sse,
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    Simd128,
}

impl Lanes {
    /// For tile rows of `half` tiles, on a CPU where [`applies`] found SIMD.
    fn of(half: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        return if half.is_multiple_of(8) {
            Lanes::Avx
        } else {
            Lanes::Sse
        };
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        return {
            let _ = half;
            Lanes::Simd128
        };
        #[allow(unreachable_code)]
        {
            let _ = half;
            unreachable!("winograd: applies() needs SIMD")
        }
    }
}

/// Runs `$f::<S>($args)` with the [`Simd`] type of `$lanes`, compiled for its features.
macro_rules! with_lanes {
    ($lanes:expr, $f:ident($($arg:expr),* $(,)?)) => {{
        // SAFETY: [`applies`] found SIMD, so this CPU has AVX2 and FMA (x86) or this build has
        // SIMD128 (wasm); the functions check their operands' lengths.
        #[allow(unused_unsafe)]
        unsafe {
            match $lanes {
                #[cfg(target_arch = "x86_64")]
                Lanes::Avx => x86::$f::<direct::x86::Avx<1>>($($arg),*),
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
    use super::{Simd, POSITIONS};

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pad_channel<S: Simd>(
        x: &[f32],
        w: usize,
        affine: Option<([f32; 2], bool)>,
        plane: &mut [f32],
        pp: &mut [f32],
    ) {
        super::pad_channel::<S>(x, w, affine, plane, pp)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn input_channel<S: Simd>(pp: &[f32], half: usize, v: &mut [&mut [f32]; POSITIONS]) {
        super::input_channel::<S>(pp, half, v)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn output_channel<S: Simd>(
        m: &[&[f32]; POSITIONS],
        w: usize,
        init: f32,
        residual: Option<&[f32]>,
        scale: f32,
        out: &mut [f32],
    ) {
        super::output_channel::<S>(m, w, init, residual, scale, out)
    }
}

/// Whether F(2×2, 3×3) runs this convolution on this CPU: a 3×3 kernel, stride 1, one pixel of
/// padding on every side, [`MIN_CHANNELS`] in and out, an even height and a width of whole
/// 8-pixel runs (4 tiles, the narrowest vector), at least [`MIN_TILES`] blocks, and SIMD for the
/// GEMMs (AVX2 + FMA natively, SIMD128 in a browser).
pub fn applies(g: &Geometry) -> bool {
    let [_, _, h, w] = g.x;
    let fits = g.k == [3, 3] && g.stride == 1 && g.pad == [1; 4];
    let channels = g.x[1] >= MIN_CHANNELS && g.co >= MIN_CHANNELS;
    fits && channels
        && h.is_multiple_of(2)
        && w.is_multiple_of(8)
        && h * w / 4 >= MIN_TILES
        && direct::width(1, 4).is_some()
}

/// The length of [`pack_weight`]'s output.
pub fn packed_len(co: usize, ci: usize) -> usize {
    POSITIONS * direct::packed_len(co, ci, 1)
}

/// The weight `[Co, Ci, 3, 3]` transformed, `U[ξ] = G g Gᵀ` per channel pair, each position's
/// `[Co, Ci]` matrix in the order the microkernel reads it ([`direct::pack_weight`] of a 1×1
/// kernel), position after position.
pub fn pack_weight(w: &[f32], ws: &[usize]) -> Vec<f32> {
    let (co, ci) = (ws[0], ws[1]);
    assert_eq!(&ws[2..], [3, 3], "winograd weight");
    let mut u = vec![vec![0f32; co * ci]; POSITIONS];
    for (pair, g) in w.chunks_exact(9).enumerate() {
        // G g, 4 × 3, then (G g) Gᵀ, 4 × 4.
        let mut gg = [[0f64; 3]; 4];
        for (a, row) in gg.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|i| G[a][i] * g[i * 3 + j] as f64).sum();
            }
        }
        for a in 0..4 {
            for b in 0..4 {
                let v: f64 = (0..3).map(|j| gg[a][j] * G[b][j]).sum();
                u[a * 4 + b][pair] = v as f32;
            }
        }
    }
    let mut packed = Vec::with_capacity(packed_len(co, ci));
    for u in &u {
        packed.extend(direct::pack_weight(u, &[co, ci, 1, 1]));
    }
    packed
}

/// Bytes of `V` and `M` one band of tile rows keeps, so that they stay in a core's L2 (512 KiB on
/// the EPYC of BENCHMARKS.md) beside the padded input's rows and the weights the GEMMs stream:
/// a whole 32×32 image's would not (512 KiB each at 32 channels), and the transforms' stores and
/// the GEMMs' loads would go to L3.
const BAND_BYTES: usize = 192 << 10;

/// Tile rows per band for `ci` input and `co` output channels and tile rows of `half` tiles: as
/// many as [`BAND_BYTES`] holds, at least one, rounded up to a whole number of pairs of 8-lane
/// vectors (the microkernel's widest tile) where a row is not one.
fn band_rows(ci: usize, co: usize, half: usize, rows: usize) -> usize {
    let per_row = POSITIONS * (ci + co) * half * 4;
    let band = (BAND_BYTES / per_row).max(1);
    // Whole pairs of 8-lane vectors, the microkernel's widest tile (`half` is a multiple of 4).
    let step = match half % 16 {
        0 => 1,
        8 => 2,
        _ => 4,
    };
    band.next_multiple_of(step).min(rows)
}

/// Runs the convolution into `out` (`[N, Co, H, W]`, every element written), with `packed`
/// from [`pack_weight`].
///
/// # Panics
/// Where F(2×2, 3×3) does not apply ([`applies`]), or an operand's length does not match `g`.
pub fn conv(
    x: &[f32],
    g: &Geometry,
    packed: &[f32],
    norm: Option<Prologue<'_>>,
    e: Epilogue<'_>,
    out: &mut [f32],
) {
    let [n, ci, h, w] = g.x;
    let co = g.co;
    let (image, out_image) = (ci * h * w, co * h * w);
    assert!(applies(g), "winograd geometry");
    assert_eq!(x.len(), n * image, "winograd input");
    assert_eq!(out.len(), n * out_image, "winograd output");
    assert_eq!(packed.len(), packed_len(co, ci), "winograd weight");
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
    let plan = Plan::new(g);
    let x_of = |b: usize| &x[b * image..(b + 1) * image];
    let norm_of = |b: usize| norm.map(|p| p.of_image(b, ci));
    let e_of = |b: usize| e.of_image(b, co, out_image);
    if n.is_multiple_of(threads) {
        // Whole images per thread (on one thread: every image).
        direct::whole_images(out, out_image, threads, |b0, o| {
            let mut pp = pool::take(ci * plan.padded);
            for (b, ob) in (b0..).zip(o.chunks_mut(out_image)) {
                pad_image(x_of(b), g, norm_of(b), 1, &mut pp);
                // SAFETY: `ob` is this image's output, this thread's alone.
                unsafe {
                    bands(
                        &pp,
                        &plan,
                        packed,
                        e_of(b),
                        (0, plan.rows),
                        1,
                        ob.as_mut_ptr(),
                    )
                };
            }
            pool::give(pp);
        });
    } else {
        // One image at a time on every thread: its tile rows split evenly among the threads
        // (each running its share in bands) where there are bands enough, else each band's
        // three steps.
        let mut pp = pool::take(ci * plan.padded);
        for (b, ob) in out.chunks_mut(out_image).enumerate() {
            pad_image(x_of(b), g, norm_of(b), threads, &mut pp);
            let o = ob.as_mut_ptr();
            if plan.bands >= threads {
                // SAFETY: as below; each thread writes its own tile rows.
                let o = unsafe { threads::Shared::new(o) };
                let mut runs = [(0, 0); direct::MAX_PARTS];
                for (run, r) in runs.iter_mut().zip(ranges(plan.rows, threads)) {
                    *run = r;
                }
                threads::for_each(&mut runs[..threads], |run| {
                    // SAFETY: the runs of tile rows are disjoint, so are the rows they write.
                    unsafe { bands(&pp, &plan, packed, e_of(b), *run, 1, o.get()) };
                });
            } else {
                // SAFETY: `ob` is this image's output, borrowed for the call.
                unsafe { bands(&pp, &plan, packed, e_of(b), (0, plan.rows), threads, o) };
            }
        }
        pool::give(pp);
    }
}

/// A convolution's sizes as its steps need them.
struct Plan {
    g: Geometry,
    /// Tiles per tile row (`W/2`) and tile rows (`H/2`).
    half: usize,
    rows: usize,
    /// Tile rows per band ([`band_rows`]) and bands.
    band: usize,
    bands: usize,
    /// One channel's padded plane ([`pad_channel`]).
    padded: usize,
    lanes: Lanes,
}

impl Plan {
    fn new(g: &Geometry) -> Self {
        let [_, ci, h, w] = g.x;
        let (half, rows) = (w / 2, h / 2);
        let band = band_rows(ci, g.co, half, rows);
        Self {
            g: *g,
            half,
            rows,
            band,
            bands: rows.div_ceil(band),
            padded: padded_len(h, w),
            lanes: Lanes::of(half),
        }
    }
}

/// How many bands [`conv`] splits an image of `g` into, for the tests of its thread splits.
#[cfg(test)]
pub(super) fn band_count(g: &Geometry) -> usize {
    Plan::new(g).bands
}

/// `0..len` in `k` runs of about equal length.
fn ranges(len: usize, k: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..k).map(move |i| (i * len / k, (i + 1) * len / k))
}

/// One image's input channels (`x`, `[Ci, H, W]`) padded into `pp` ([`pad_channel`], one plane
/// per channel), normalised by `norm` as they are copied, on `k` threads.
fn pad_image(x: &[f32], g: &Geometry, norm: Option<(&[[f32; 2]], bool)>, k: usize, pp: &mut [f32]) {
    let [_, ci, h, w] = g.x;
    let padded = padded_len(h, w);
    let mut runs: [(usize, &mut [f32]); direct::MAX_PARTS] = Default::default();
    let k = k.min(ci);
    let mut rest = &mut pp[..ci * padded];
    for (run, (c0, c1)) in runs.iter_mut().zip(ranges(ci, k)) {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut((c1 - c0) * padded);
        *run = (c0, head);
        rest = tail;
    }
    let lanes = Lanes::of(w / 2);
    threads::for_each(&mut runs[..k], |(c0, pp)| {
        let mut plane = pool::take(h * w);
        for (c, pc) in (*c0..).zip(pp.chunks_exact_mut(padded)) {
            let affine = norm.map(|(ab, silu)| (ab[c], silu));
            let x = &x[c * h * w..][..h * w];
            with_lanes!(lanes, pad_channel(x, w, affine, &mut plane, pc));
        }
        pool::give(plane);
    });
}

/// Tile rows `t0..t1` of one image in bands of [`Plan::band`] rows, from its padded input `pp`
/// ([`pad_image`]) into its output at `out` (`[Co, H, W]`), each band's steps split among `k`
/// threads.
///
/// # Safety
/// `out` points to the image's whole output, and no other thread touches these tile rows'
/// pixels while this runs.
unsafe fn bands(
    pp: &[f32],
    plan: &Plan,
    packed: &[f32],
    e: Epilogue<'_>,
    (t0, t1): (usize, usize),
    k: usize,
    out: *mut f32,
) {
    let [_, ci, _, _] = plan.g.x;
    let co = plan.g.co;
    let most = plan.band * plan.half;
    let (mut v, mut m) = (
        pool::take(POSITIONS * ci * most),
        pool::take(POSITIONS * co * most),
    );
    for start in (t0..t1).step_by(plan.band) {
        let ty = (start, (start + plan.band).min(t1));
        let tiles = (ty.1 - ty.0) * plan.half;
        let (v, m) = (
            &mut v[..POSITIONS * ci * tiles],
            &mut m[..POSITIONS * co * tiles],
        );
        // SAFETY: passed on from the caller.
        unsafe { band_conv(pp, plan, packed, e, ty, (v, m), k, out) };
    }
    pool::give(v);
    pool::give(m);
}

/// Splits each of `slabs`' `chunk`-long slabs (one per position) into the `k` parts of
/// [`ranges`]`(rows, k)`, a slab being `rows` rows: part `i` gets its rows of every slab.
fn split_slabs(
    slabs: &mut [f32],
    chunk: usize,
    rows: usize,
    k: usize,
) -> [[&mut [f32]; POSITIONS]; direct::MAX_PARTS] {
    let row = chunk / rows;
    let mut parts: [[&mut [f32]; POSITIONS]; direct::MAX_PARTS] = Default::default();
    for (xi, mut slab) in slabs.chunks_exact_mut(chunk).enumerate() {
        for (part, (r0, r1)) in parts.iter_mut().zip(ranges(rows, k)) {
            let (head, tail) = std::mem::take(&mut slab).split_at_mut((r1 - r0) * row);
            part[xi] = head;
            slab = tail;
        }
    }
    parts
}

/// Tile rows `ty.0..ty.1` of one image: the input transform into `V` (`[16][Ci][tiles]`), the
/// 16 GEMMs into `M` (`[16][Co][tiles]`), the output transform into `out` (the image's
/// `[Co, H, W]`, these tile rows' pixel rows of every channel), each step split among `k`
/// threads: by input channels, positions, output channels.
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
    (v, m): (&mut [f32], &mut [f32]),
    k: usize,
    out: *mut f32,
) {
    let [_, ci, h, w] = plan.g.x;
    let co = plan.g.co;
    let (half, lanes) = (plan.half, plan.lanes);
    let tiles = (ty.1 - ty.0) * half;
    let plane = h * w;
    // (1) The input transform, input channels split among the threads. A band's tile rows read
    // padded rows 2·ty.0 … 2·ty.1 + 1.
    let rows = (2 * ty.0 * (w + 2), (2 * ty.1 + 2) * (w + 2));
    let k_in = k.min(ci);
    let mut v_parts = split_slabs(v, ci * tiles, ci, k_in);
    let mut jobs: [(usize, usize, [&mut [f32]; POSITIONS]); direct::MAX_PARTS] = Default::default();
    for ((job, r), vp) in jobs.iter_mut().zip(ranges(ci, k_in)).zip(&mut v_parts) {
        *job = (r.0, r.1, std::mem::take(vp));
    }
    threads::for_each(&mut jobs[..k_in], |(c0, c1, vp)| {
        for c in *c0..*c1 {
            let at = (c - *c0) * tiles;
            let mut dst: [&mut [f32]; POSITIONS] = Default::default();
            for (d, slab) in dst.iter_mut().zip(vp.iter_mut()) {
                *d = &mut slab[at..at + tiles];
            }
            let pc = &pp[c * plan.padded..][rows.0..rows.1];
            with_lanes!(lanes, input_channel(pc, half, &mut dst));
        }
    });
    // (2) The GEMMs, positions split among the threads, each in one pass over the input
    // channels: a band's V (`ci × tiles` per position) is in L2 already, and one pass saves
    // the accumulators' loads and stores between passes.
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
    let all = Part {
        span: Span {
            first: 0,
            count: direct::blocks(co).count(),
        },
        vectors: (0, direct::vectors(width, 1, tiles)),
    };
    let mut slots: [(usize, &mut [f32]); POSITIONS] = Default::default();
    for (xi, (slot, mx)) in slots
        .iter_mut()
        .zip(m.chunks_exact_mut(co * tiles))
        .enumerate()
    {
        *slot = (xi, mx);
    }
    let mut groups: [&mut [(usize, &mut [f32])]; direct::MAX_PARTS] = Default::default();
    let k_gemm = k.min(POSITIONS);
    let mut rest = &mut slots[..];
    for (group, (a, b)) in groups.iter_mut().zip(ranges(POSITIONS, k_gemm)) {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(b - a);
        *group = head;
        rest = tail;
    }
    threads::for_each(&mut groups[..k_gemm], |group| {
        for (xi, mx) in group.iter_mut() {
            let q = &v[*xi * ci * tiles..][..ci * tiles];
            let u = &packed[*xi * u_len..][..u_len];
            // SAFETY: `width` is this CPU's (`direct::width`); `q`, `u` and the slab hold this
            // 1×1 geometry's operands, and the slab is this thread's alone.
            unsafe {
                direct::run_kernel(width, q, &gemm, u, all, ci, Epilogue::NONE, mx.as_mut_ptr())
            };
        }
    });
    // (3) The output transform, output channels split among the threads; channel c's rows
    // 2·ty.0 … 2·ty.1 of `out`.
    let m = &*m;
    let k_out = k.min(co);
    let mut runs = [(0, 0); direct::MAX_PARTS];
    for (run, r) in runs.iter_mut().zip(ranges(co, k_out)) {
        *run = r;
    }
    // SAFETY: the threads write disjoint channels' rows; the caller promised the rows are ours.
    let o = unsafe { threads::Shared::new(out) };
    let (first, len) = (2 * ty.0 * w, 2 * (ty.1 - ty.0) * w);
    threads::for_each(&mut runs[..k_out], |&mut (c0, c1)| {
        for c in c0..c1 {
            let src: [&[f32]; POSITIONS] =
                std::array::from_fn(|xi| &m[(xi * co + c) * tiles..][..tiles]);
            let init = e.bias.map_or(0.0, |b| b[c]) + e.channel_add.map_or(0.0, |a| a[c]);
            let residual = e.residual.map(|r| &r[c * plane + first..][..len]);
            // SAFETY: channel c's rows of this band, written by this thread alone.
            let oc = unsafe { std::slice::from_raw_parts_mut(o.get().add(c * plane + first), len) };
            with_lanes!(lanes, output_channel(&src, w, init, residual, e.scale, oc));
        }
    });
}

/// The length of [`pad_channel`]'s plane for an `h × w` image.
fn padded_len(h: usize, w: usize) -> usize {
    (h + 2) * (w + 2)
}

/// One input channel (`x`, `H × W`, row length `w`) into `pp`, `H + 2` rows of `W + 2` with a
/// zero row above and below, normalised by `affine` first (into `plane`, `H × W` values, in one
/// pass: per row, the call and its SiLU's setup cost as much as a 32-value row).
/// Each row is split by the parity of its padded column `p` (image column `p − 1`):
/// `[even p: W/2 + 1 values | odd p: W/2 + 1 values]`, so that [`input_channel`] finds a tile's
/// four columns as four runs of consecutive values.
///
/// # Safety
/// The CPU has `S`'s features; `W/2` is a multiple of `S::LANES`.
#[inline(always)]
unsafe fn pad_channel<S: Simd>(
    x: &[f32],
    w: usize,
    affine: Option<([f32; 2], bool)>,
    plane: &mut [f32],
    pp: &mut [f32],
) {
    let (l, half) = (S::LANES, w / 2);
    let wp = w + 2;
    let h = x.len() / w;
    assert!(half.is_multiple_of(l) && pp.len() == (h + 2) * wp && plane.len() == x.len());
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
        let (even, odd) = dst.split_at_mut(half + 1);
        // Image column 2i is padded column 2i + 1 (odd, at i); 2i + 1 is 2i + 2 (even, at i + 1).
        even[0] = 0.0;
        odd[half] = 0.0;
        let (e, o, p) = (even.as_mut_ptr().add(1), odd.as_mut_ptr(), src.as_ptr());
        for i in (0..half).step_by(l) {
            let (a, b) = S::unzip(S::load(p.add(2 * i)), S::load(p.add(2 * i + l)));
            S::store(o.add(i), a);
            S::store(e.add(i), b);
        }
    }
}

/// One input channel's tiles, `Bᵀ d B`, from its padded rows `pp` ([`pad_channel`]; the band's,
/// `2·rows + 2` of them) into `v[ξ]` (`rows · half` values each, tile row after tile row),
/// `S::LANES` tiles at a time: tile `tx` reads padded columns `2tx … 2tx + 3`, which are
/// `even[tx], odd[tx], even[tx + 1], odd[tx + 1]`, so that both of `Bᵀ`'s passes (down the rows,
/// then across) run on whole vectors loaded as they lie.
///
/// # Safety
/// The CPU has `S`'s features; `half` is a multiple of `S::LANES`.
#[inline(always)]
unsafe fn input_channel<S: Simd>(pp: &[f32], half: usize, v: &mut [&mut [f32]; POSITIONS]) {
    let l = S::LANES;
    let wp = 2 * half + 2;
    let h = pp.len() / wp - 2;
    let tiles = h / 2 * half;
    assert!(half.is_multiple_of(l) && pp.len() == (h + 2) * wp);
    assert!(v.iter().all(|v| v.len() == tiles), "winograd tiles");
    let vp = v.each_mut().map(|v| v.as_mut_ptr());
    let p = pp.as_ptr();
    for ty in 0..h / 2 {
        for tx in (0..half).step_by(l) {
            // Padded columns 2tx + 0…3 of the tile's rows 2ty + 0…3.
            let r: [[S::V; 4]; 4] = std::array::from_fn(|k| {
                let even = p.add((2 * ty + k) * wp + tx);
                let odd = even.add(half + 1);
                [
                    S::load(even),
                    S::load(odd),
                    S::load(even.add(1)),
                    S::load(odd.add(1)),
                ]
            });
            let at = ty * half + tx;
            for a in 0..4 {
                // Bᵀ down (d0 − d2, d1 + d2, d2 − d1, d1 − d3), then across.
                let e: [S::V; 4] = std::array::from_fn(|j| match a {
                    0 => S::sub(r[0][j], r[2][j]),
                    1 => S::add(r[1][j], r[2][j]),
                    2 => S::sub(r[2][j], r[1][j]),
                    _ => S::sub(r[1][j], r[3][j]),
                });
                S::store(vp[4 * a].add(at), S::sub(e[0], e[2]));
                S::store(vp[4 * a + 1].add(at), S::add(e[1], e[2]));
                S::store(vp[4 * a + 2].add(at), S::sub(e[2], e[1]));
                S::store(vp[4 * a + 3].add(at), S::sub(e[1], e[3]));
            }
        }
    }
}

/// One output channel from its 16 GEMM rows `m` (`T` values each): `Aᵀ m A` per tile, each 2×2
/// block written into `out` (the channel's `H × W` plane, row length `w`) as `(residual + (block
/// + init)) · scale`, `S::LANES` tiles at a time, their left and right columns interleaved with
/// [`Simd::zip`].
///
/// # Safety
/// The CPU has `S`'s features; `w / 2` is a multiple of `S::LANES`.
#[inline(always)]
unsafe fn output_channel<S: Simd>(
    m: &[&[f32]; POSITIONS],
    w: usize,
    init: f32,
    residual: Option<&[f32]>,
    scale: f32,
    out: &mut [f32],
) {
    let l = S::LANES;
    let half = w / 2;
    let h = out.len() / w;
    let tiles = h / 2 * half;
    assert!(half.is_multiple_of(l) && out.len() == h * w);
    assert!(m.iter().all(|m| m.len() == tiles), "winograd tiles");
    assert!(residual.is_none_or(|r| r.len() == out.len()));
    let (init, scale_v) = (S::splat(init), S::splat(scale));
    let o = out.as_mut_ptr();
    for ty in 0..h / 2 {
        for tx in (0..half).step_by(l) {
            let at = ty * half + tx;
            let mv: [S::V; POSITIONS] = std::array::from_fn(|xi| S::load(m[xi].as_ptr().add(at)));
            // Aᵀ across each row a (m0 + m1 + m2, m1 − m2 − m3), then down.
            let s0: [S::V; 4] =
                std::array::from_fn(|a| S::add(S::add(mv[4 * a], mv[4 * a + 1]), mv[4 * a + 2]));
            let s1: [S::V; 4] = std::array::from_fn(|a| {
                S::sub(S::sub(mv[4 * a + 1], mv[4 * a + 2]), mv[4 * a + 3])
            });
            let down = |s: [S::V; 4]| {
                (
                    S::add(S::add(s[0], s[1]), s[2]),
                    S::sub(S::sub(s[1], s[2]), s[3]),
                )
            };
            // y[i][j]: the block's row i, column j.
            let ((y00, y10), (y01, y11)) = (down(s0), down(s1));
            for (i, (left, right)) in [(y00, y01), (y10, y11)].into_iter().enumerate() {
                let (a, b) = S::zip(left, right);
                let row = (2 * ty + i) * w + 2 * tx;
                for (k, v) in [a, b].into_iter().enumerate() {
                    let at = row + k * l;
                    let mut v = S::add(v, init);
                    if let Some(r) = residual {
                        v = S::add(S::load(r.as_ptr().add(at)), v);
                    }
                    if scale != 1.0 {
                        v = S::mul(v, scale_v);
                    }
                    S::store(o.add(at), v);
                }
            }
        }
    }
}
