//! Direct convolution for the CPU backend: no unfolding, no transposes and no GEMM packing.
//!
//! Each image is copied into a zero-padded buffer whose rows interleave the channels, each row
//! split by phase for stride 2 (`q[y][c][phase][i] = x_padded[c][y][stride·i + phase]`), so that
//! the taps of `LANES` consecutive output pixels are always `LANES` consecutive values and a walk
//! over the input channels of one kernel row reads consecutive memory; a group norm (and SiLU)
//! that precedes the convolution is applied in that copy ([`Prologue`]). A microkernel call
//! then computes [`RC`] (or, to end a channel count, [`RC_SMALL`]) output channels × 2 vectors
//! of output pixels with every accumulator in a register over all of `K = Ci·kh·kw` (one
//! broadcast weight per channel and 2 unaligned loads per tap), and stores NCHW with the bias,
//! channel term, residual and scale applied. It is MLAS's
//! and oneDNN's direct convolution, with pixels rather than channels in the vector lanes, so
//! that input and output stay in the NCHW layout the rest of the backend uses.
//!
//! SIMD: AVX2 + FMA natively (8 lanes; two rows of 4 for 4×4 layers, read from a second copy,
//! [`pair_rows`], in which both rows of a tap lie side by side; 4 lanes for other rows of 4k),
//! 128-bit SIMD in the browser (4 lanes); where none applies [`width`] is `None` and the GEMM
//! paths of the parent module run.
//!
//! Threads (natively, [`crate::device::cpu::threads`]): whole images per thread where the batch divides
//! among them; otherwise, one image at a time, every thread makes a run of the copy's rows and
//! then computes a range of pixel vectors (or, with few vectors, a run of channel blocks).

use crate::device::cpu::{pool, threads};
use crate::ops::groupnorm;

/// Input channels per pass over the output: a pass's three rows of a 34-pixel-wide image (13 KiB)
/// and its weights (7 KiB) stay in a 32 KiB L1 data cache.
pub const KC: usize = 32;
/// Output channels per microkernel call: 6 channels × 2 pixel vectors = 12 accumulators, which
/// with 2 loaded vectors and a broadcast weight fit AVX2's 16 registers.
pub const RC: usize = 6;
/// The smaller block that [`blocks`] ends a channel count with, so that 16, 32, 64 and 128
/// channels compute no padding channel (blocks of 6 alone would waste 11 % at 16 and 32).
pub const RC_SMALL: usize = 4;

/// How `co` output channels split into microkernel blocks: `(first channel, block size)`, blocks
/// of [`RC`] then at most two of [`RC_SMALL`]; only the last block may run past `co`.
pub fn blocks(co: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut six = match co % RC {
        // One block of 6 more, its last channel padding.
        5 => co / RC + 1,
        // Two blocks of 4 in place of one of 6 and one of 2.
        2 if co > RC => co / RC - 1,
        // Exact, or one block of 4 at the end.
        _ => co / RC,
    };
    let mut c = 0;
    std::iter::from_fn(move || {
        if c >= co {
            return None;
        }
        let r = if six > 0 {
            six -= 1;
            RC
        } else {
            RC_SMALL
        };
        c += r;
        Some((c - r, r))
    })
}

/// The length of [`pack_weight`]'s output.
pub fn packed_len(co: usize, ci: usize, taps: usize) -> usize {
    blocks(co).map(|(_, r)| r).sum::<usize>() * ci * taps
}
/// The largest kernel (taps) and stride it runs.
pub const MAX_TAPS: usize = 49;
pub const MAX_STRIDE: usize = 4;

/// The epilogue's operands, as in [`crate::backend::ConvEpilogue`]: `out = (residual + (conv +
/// bias + channel_add[n, c])) · scale`.
#[derive(Clone, Copy)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub channel_add: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
    pub scale: f32,
}

impl<'a> Epilogue<'a> {
    /// Bias 0, no channel term or residual, scale 1.
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: None,
        channel_add: None,
        residual: None,
        scale: 1.0,
    };

    /// Image `b`'s operands, from a batch's (`co` channels and `len` output values per image).
    pub(super) fn of_image(self, b: usize, co: usize, len: usize) -> Epilogue<'a> {
        Epilogue {
            channel_add: self.channel_add.map(|a| &a[b * co..(b + 1) * co]),
            residual: self.residual.map(|r| &r[b * len..(b + 1) * len]),
            ..self
        }
    }
}

/// A per-channel affine (and SiLU) applied to the input as it is copied: the group
/// normalisation that precedes a ResnetBlock2D's convolutions, fused so that it costs no pass of
/// its own (the padding stays zero, as it is around the normalised tensor).
#[derive(Clone, Copy)]
pub struct Prologue<'a> {
    /// `[N·Ci]` pairs `[a, b]`: image `n`'s channel `c` reads as `x·a + b`
    /// ([`crate::ops::groupnorm::channel_affine`]).
    pub affine: &'a [[f32; 2]],
    pub silu: bool,
}

impl<'a> Prologue<'a> {
    /// Image `b`'s pairs (`ci` per image) and whether SiLU follows.
    pub(super) fn of_image(self, b: usize, ci: usize) -> (&'a [[f32; 2]], bool) {
        (&self.affine[b * ci..(b + 1) * ci], self.silu)
    }
}

/// For a batch of images that divides among `threads`: runs `f(b0, share)` on each thread, where
/// `share` is the output of images `b0…` (`len` values each), the thread's equal share of `out`.
pub(super) fn whole_images(
    out: &mut [f32],
    len: usize,
    threads: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    let per = out.len() / len / threads;
    let mut parts: [Option<(usize, &mut [f32])>; MAX_PARTS] = Default::default();
    for (i, (slot, o)) in parts.iter_mut().zip(out.chunks_mut(per * len)).enumerate() {
        *slot = Some((i * per, o));
    }
    threads::for_each(&mut parts[..threads], |slot| {
        if let Some((b0, o)) = slot.take() {
            f(b0, o)
        }
    });
}

/// The weight `[Co, Ci, kh, kw]` in the order the microkernel reads it: for each of
/// [`blocks`]`(Co)` in turn, `[Ci][kh·kw][block size]`, the last block padded with zero channels.
pub fn pack_weight(w: &[f32], ws: &[usize]) -> Vec<f32> {
    let (co, ci, taps) = (ws[0], ws[1], ws[2] * ws[3]);
    let mut packed = vec![0f32; packed_len(co, ci, taps)];
    let mut at = 0;
    for (co0, rc) in blocks(co) {
        let block = &mut packed[at..at + ci * taps * rc];
        for (r, o) in (co0..co.min(co0 + rc)).enumerate() {
            for c in 0..ci {
                for t in 0..taps {
                    block[(c * taps + t) * rc + r] = w[(o * ci + c) * taps + t];
                }
            }
        }
        at += block.len();
    }
    packed
}

/// How the kernel puts output pixels in vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// 8 consecutive pixels of a row (AVX2 + FMA).
    Avx,
    /// Two rows of 4 pixels in one 8-lane vector (AVX2 + FMA), for 4×4-pixel layers.
    AvxRowPairs,
    /// 4 consecutive pixels of a row: SSE with FMA natively, wasm's 128-bit SIMD in a browser.
    Four,
}

/// The vectorisation this CPU runs an `ho × wo` output at, if any: its rows must be a whole
/// number of vectors.
pub fn width(ho: usize, wo: usize) -> Option<Width> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return if wo.is_multiple_of(8) {
                Some(Width::Avx)
            } else if wo == 4 && ho.is_multiple_of(2) {
                Some(Width::AvxRowPairs)
            } else {
                wo.is_multiple_of(4).then_some(Width::Four)
            };
        }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        if wo.is_multiple_of(4) {
            return Some(Width::Four);
        }
    }
    let _ = (ho, wo);
    None
}

/// The convolution's geometry.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    /// Input `[N, Ci, H, W]`.
    pub x: [usize; 4],
    /// Output channels and kernel size.
    pub co: usize,
    pub k: [usize; 2],
    pub stride: usize,
    /// Top, left, bottom, right.
    pub pad: [usize; 4],
}

impl Geometry {
    /// From an input `[N, Ci, H, W]`, a weight `[Co, Ci, kh, kw]` and the parameters, as
    /// [`super::out_shape`] accepted them.
    pub fn new(xs: &[usize], ws: &[usize], p: crate::backend::Conv2dParams) -> Self {
        Self {
            x: [xs[0], xs[1], xs[2], xs[3]],
            co: ws[0],
            k: [ws[2], ws[3]],
            stride: p.stride,
            pad: p.pad,
        }
    }

    fn out(&self) -> [usize; 2] {
        let (hp, wp) = self.padded();
        [
            (hp - self.k[0]) / self.stride + 1,
            (wp - self.k[1]) / self.stride + 1,
        ]
    }

    fn padded(&self) -> (usize, usize) {
        (
            self.x[2] + self.pad[0] + self.pad[2],
            self.x[3] + self.pad[1] + self.pad[3],
        )
    }

    /// Columns per phase plane.
    fn wq(&self) -> usize {
        self.padded().1.div_ceil(self.stride)
    }
}

/// Copies one image `x` (`[Ci, H, W]`) into `q`, `[Hp, Ci, stride, Wq]`: each padded row of every
/// channel and phase, channels side by side, so that a tile's walk over the input channels of one
/// kernel row reads consecutive memory. Zero where the padding is. With `norm` (this image's
/// `[Ci]` pairs of a [`Prologue`]), each value is normalised as it is copied. Only padded rows
/// `y0..y1` (`q` holds just those), so that threads can share the copy.
#[inline(always)]
fn prepare(
    x: &[f32],
    g: &Geometry,
    norm: Option<(&[[f32; 2]], bool)>,
    (y0, y1): (usize, usize),
    q: &mut [f32],
) {
    let [_, ci, h, w] = g.x;
    let (s, wq) = (g.stride, g.wq());
    // One channel's phases of one row.
    let seg = s * wq;
    // Per phase: the first image column in it, where that column lands, and how many follow
    // (padded column `col` of phase `ph` is `s·i + ph`, at i = col / s).
    let mut phases = [[0usize; 3]; MAX_STRIDE];
    for (ph, p) in phases.iter_mut().enumerate().take(s) {
        let first = (ph + s - g.pad[1] % s) % s;
        let len = if first < w {
            (w - first).div_ceil(s)
        } else {
            0
        };
        *p = [first, (first + g.pad[1]) / s, len];
    }
    let row_len = ci * seg;
    assert_eq!(q.len(), (y1 - y0) * row_len, "direct conv copy rows");
    // Zero rows above and below the image.
    let image_rows = g.pad[0]..g.pad[0] + h;
    for (y, row) in (y0..y1).zip(q.chunks_exact_mut(row_len)) {
        if !image_rows.contains(&y) {
            row.fill(0.0);
        }
    }
    // Channels in groups of 8, so that the reads are a few streams, not one per channel.
    for c0 in (0..ci).step_by(8) {
        for y in y0.max(image_rows.start)..y1.min(image_rows.end) {
            let iy = y - g.pad[0];
            let qrow = &mut q[(y - y0) * row_len..][..row_len];
            for c in c0..(c0 + 8).min(ci) {
                let src = &x[(c * h + iy) * w..][..w];
                let qseg = &mut qrow[c * seg..(c + 1) * seg];
                for (&[first, at, len], row) in phases[..s].iter().zip(qseg.chunks_exact_mut(wq)) {
                    row[..at].fill(0.0);
                    row[at + len..].fill(0.0);
                    if len == 0 {
                        continue;
                    }
                    let row = &mut row[at..at + len];
                    match (s, norm) {
                        (1, None) => row.copy_from_slice(src),
                        // Two loops, not a branch per element, so that each vectorises.
                        (1, Some((ab, true))) => {
                            for (v, &x) in row.iter_mut().zip(src) {
                                *v = groupnorm::apply(x, ab[c], true);
                            }
                        }
                        (1, Some((ab, false))) => {
                            for (v, &x) in row.iter_mut().zip(src) {
                                *v = groupnorm::apply(x, ab[c], false);
                            }
                        }
                        // Strided convolutions (the downsamplers) follow no norm in a UNet:
                        // these loops only need to be right.
                        _ => {
                            let src = src[first..].iter().step_by(s);
                            for (v, &x) in row.iter_mut().zip(src) {
                                *v = match norm {
                                    Some((ab, silu)) => groupnorm::apply(x, ab[c], silu),
                                    None => x,
                                };
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The length of [`pair_rows`]'s copy at `width` (none but for row pairs).
fn pair_len(g: &Geometry, width: Width) -> usize {
    match width {
        Width::AvxRowPairs => (g.padded().0 - g.stride) * g.x[1] * g.k[1] * 8,
        _ => 0,
    }
}

/// For [`Width::AvxRowPairs`] (outputs 4 pixels wide): from [`prepare`]'s copy `q`, per input row
/// `y`, channel `c` and kernel column `kx`, the 8 values a vector of output rows `oy`, `oy + 1`
/// reads at that tap, `[xp[y][kx + s·i], xp[y + s][kx + s·i]]` for `i < 4`, so that the kernel
/// loads them in one go (an unaligned pair of 128-bit halves costs an insert per load).
fn pair_rows(q: &[f32], g: &Geometry, out: &mut [f32]) {
    let (ci, s, wq, kw) = (g.x[1], g.stride, g.wq(), g.k[1]);
    let rs = ci * s * wq;
    let mut o = out.chunks_exact_mut(8);
    for y in 0..g.padded().0 - s {
        for c in 0..ci {
            for kx in 0..kw {
                let src = y * rs + (c * s + kx % s) * wq + kx / s;
                let o = o.next().expect("pair_len covers every row");
                o[..4].copy_from_slice(&q[src..src + 4]);
                o[4..].copy_from_slice(&q[src + s * rs..][..4]);
            }
        }
    }
}

/// The most parts a convolution splits into across threads ([`crate::device::cpu::threads`]).
pub const MAX_PARTS: usize = 16;
/// Convolutions with fewer multiply-adds run on one thread: a split costs 1–4 µs
/// ([`crate::device::cpu::threads`]), and 2^19 multiply-adds take about 13 µs on one core.
pub const PARALLEL_MACS: usize = 1 << 19;

/// Weights of this many bytes and more come from memory rather than a core's L2 (1 MiB here):
/// see [`weights_bound`].
pub const BIG_WEIGHTS: usize = 1 << 19;

/// Whether one image's convolution on several threads should split its output channels rather
/// than its pixels: where the weights are big ([`BIG_WEIGHTS`]) and outweigh the image (more
/// weights per output channel, `Ci·kh·kw`, than input values per channel, `H·W`). A pixel split
/// has every thread read all the weights, a channel split every thread all of the (shared, cached)
/// image copy. google/ddpm-cifar10-32's 128–256-channel layers at 32×32 and below are such:
/// their 143 MB of weights stream from memory at every forward, and a channel split gained 3–22 %
/// per forward on two threads (BENCHMARKS.md, "Seventh part"), where the shipped models' small
/// layers lost up to 20 % to it.
pub(super) fn weights_bound(g: &Geometry) -> bool {
    let [_, ci, h, w] = g.x;
    let per_channel = ci * g.k[0] * g.k[1];
    g.co * per_channel * 4 >= BIG_WEIGHTS && g.co * g.k[0] * g.k[1] > h * w
}

/// Runs the convolution into `out` (`[N, Co, Ho, Wo]`, every element written) at `width` (from
/// [`width`]), with `packed` from [`pack_weight`].
///
/// On several threads it splits by images where they divide evenly among the threads (each
/// thread copies its own), else, one image at a time, by runs of output-channel blocks (the
/// image copied once and read by every thread). Either way each output element is summed in
/// the same order as on one thread.
///
/// # Panics
/// When `width` is not the one [`width`] returns for this output on this CPU, or an operand's
/// length does not match `g`.
pub fn conv(
    x: &[f32],
    g: &Geometry,
    packed: &[f32],
    norm: Option<Prologue<'_>>,
    e: Epilogue<'_>,
    width: Width,
    out: &mut [f32],
) {
    let [n, ci, h, w] = g.x;
    let [ho, wo] = g.out();
    let taps = g.k[0] * g.k[1];
    assert_eq!(x.len(), g.x.iter().product::<usize>(), "direct conv input");
    assert_eq!(out.len(), n * g.co * ho * wo, "direct conv output");
    assert_eq!(
        packed.len(),
        packed_len(g.co, ci, taps),
        "direct conv weight"
    );
    assert!(
        norm.is_none_or(|p| p.affine.len() == n * ci),
        "direct conv prologue"
    );
    assert!(e.bias.is_none_or(|b| b.len() == g.co));
    assert!(e.channel_add.is_none_or(|a| a.len() == n * g.co));
    assert!(e.residual.is_none_or(|r| r.len() == out.len()));
    assert_eq!(self::width(ho, wo), Some(width), "direct conv width");
    assert!(taps <= MAX_TAPS, "direct conv kernel size");
    assert!((1..=MAX_STRIDE).contains(&g.stride), "direct conv stride");
    let (image, out_image) = (ci * h * w, g.co * ho * wo);
    let threads = match threads::count().min(MAX_PARTS) {
        t if t > 1 && out.len() * ci * taps >= PARALLEL_MACS => t,
        _ => 1,
    };
    let q_len = ci * g.stride * g.padded().0 * g.wq() + pair_len(g, width);
    // Image `b`'s input, prologue and epilogue.
    let x_of = |b: usize| &x[b * image..(b + 1) * image];
    let norm_of = |b: usize| norm.map(|p| p.of_image(b, ci));
    let e_of = |b: usize| e.of_image(b, g.co, out_image);
    let all = Span {
        first: 0,
        count: blocks(g.co).count(),
    };
    let nv = vectors(width, ho, wo);
    if n.is_multiple_of(threads) {
        // Whole images per thread (on one thread: every image), each copied just before it
        // runs, so that its copy is still in L2 when the kernel reads it.
        whole_images(out, out_image, threads, |b0, o| {
            let mut q = pool::take(q_len);
            for (b, ob) in (b0..).zip(o.chunks_mut(out_image)) {
                let whole = [Part {
                    span: all,
                    vectors: (0, nv),
                }];
                let (xb, nb, eb) = (x_of(b), norm_of(b), e_of(b));
                image_conv(xb, g, packed, nb, eb, width, &mut q, &whole, ob);
            }
            pool::give(q);
        });
    } else {
        // One image at a time, copied once; its pixel vectors split among the threads where
        // there are enough of them, else its output-channel blocks.
        let mut parts = [Part::default(); MAX_PARTS];
        let k = if nv >= 4 * threads && !weights_bound(g) {
            for (i, p) in parts.iter_mut().take(threads).enumerate() {
                *p = Part {
                    span: all,
                    vectors: (i * nv / threads, (i + 1) * nv / threads),
                };
            }
            threads
        } else {
            let (spans, k) = split(g.co, threads);
            for (p, &span) in parts.iter_mut().zip(&spans[..k]) {
                *p = Part {
                    span,
                    vectors: (0, nv),
                };
            }
            k
        };
        let mut q = pool::take(q_len);
        for (b, ob) in out.chunks_mut(out_image).enumerate() {
            let (xb, nb, eb) = (x_of(b), norm_of(b), e_of(b));
            image_conv(xb, g, packed, nb, eb, width, &mut q, &parts[..k], ob);
        }
        pool::give(q);
    }
}

/// How many pixel vectors the kernel computes per output channel at `width`.
pub(super) fn vectors(width: Width, ho: usize, wo: usize) -> usize {
    match width {
        Width::Avx => ho * (wo / 8),
        Width::AvxRowPairs => (ho / 2) * (wo / 4),
        Width::Four => ho * (wo / 4),
    }
}

/// One thread's share of one image's output: the channels of `span`'s blocks at pixel vectors
/// `vectors.0..vectors.1`. The parts of an image never share an output element.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Part {
    pub span: Span,
    pub vectors: (usize, usize),
}

/// A run of consecutive [`blocks`]: `count` of them from the `first`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Span {
    pub first: usize,
    pub count: usize,
}

impl Span {
    /// The output channels it computes, `c0..c1` (without the last block's padding).
    pub(super) fn channels(self, co: usize) -> (usize, usize) {
        let mut b = blocks(co).skip(self.first);
        let (c0, _) = b.next().expect("a span's first block exists");
        let (last, rc) = blocks(co)
            .nth(self.first + self.count - 1)
            .expect("in range");
        (c0, co.min(last + rc))
    }
}

/// `co` channels' blocks in at most `parts` runs of about equal channel counts; the second value
/// says how many runs there are.
pub(super) fn split(co: usize, parts: usize) -> ([Span; MAX_PARTS], usize) {
    let mut spans = [Span::default(); MAX_PARTS];
    let (mut k, mut at) = (0, usize::MAX);
    for (i, (c0, rc)) in blocks(co).enumerate() {
        // The part the block's middle channel falls in.
        let p = ((2 * c0 + rc) * parts / (2 * co)).min(parts - 1);
        if p != at {
            spans[k] = Span { first: i, count: 0 };
            (k, at) = (k + 1, p);
        }
        spans[k - 1].count += 1;
    }
    (spans, k)
}

/// One image: copies it into `q` (normalised by `norm`), then computes each part into `out`
/// (the image's `[Co, Ho, Wo]`, every element written by exactly one part), one thread per
/// part. `e` is this image's epilogue.
#[allow(clippy::too_many_arguments)]
fn image_conv(
    x: &[f32],
    g: &Geometry,
    packed: &[f32],
    norm: Option<(&[[f32; 2]], bool)>,
    e: Epilogue<'_>,
    width: Width,
    q: &mut [f32],
    parts: &[Part],
    out: &mut [f32],
) {
    let [ho, wo] = g.out();
    assert_eq!(out.len(), g.co * ho * wo, "direct conv image output");
    let nv = vectors(width, ho, wo);
    assert!(parts.len() <= MAX_PARTS, "direct conv parts");
    // Soundness of the shared `out` below: no two parts may write one element.
    for (i, a) in parts.iter().enumerate() {
        assert!(
            a.vectors.0 <= a.vectors.1 && a.vectors.1 <= nv,
            "direct conv part"
        );
        for b in &parts[i + 1..] {
            let blocks = a.span.first < b.span.first + b.span.count
                && b.span.first < a.span.first + a.span.count;
            let pixels = a.vectors.0 < b.vectors.1 && b.vectors.0 < a.vectors.1;
            assert!(!(blocks && pixels), "direct conv parts overlap");
        }
    }
    // The copy: its padded rows in as many runs as there are parts, one per thread.
    let hp = g.padded().0;
    let row_len = g.x[1] * g.stride * g.wq();
    let mut runs: [((usize, usize), &mut [f32]); MAX_PARTS] = Default::default();
    let k = parts.len().clamp(1, hp);
    let mut rest = &mut q[..hp * row_len];
    for (i, run) in runs.iter_mut().take(k).enumerate() {
        let rows = (i * hp / k, (i + 1) * hp / k);
        let (head, tail) = std::mem::take(&mut rest).split_at_mut((rows.1 - rows.0) * row_len);
        *run = (rows, head);
        rest = tail;
    }
    threads::for_each(&mut runs[..k], |(rows, q)| {
        // SAFETY: `width` exists only where this CPU has its features ([`conv`] checked it and
        // the operands' lengths); the x86 widths all need AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            x86::prepare(x, g, norm, *rows, q)
        };
        #[cfg(not(target_arch = "x86_64"))]
        prepare(x, g, norm, *rows, q);
    });
    if width == Width::AvxRowPairs {
        let (qm, qp) = q.split_at_mut(hp * row_len);
        pair_rows(qm, g, qp);
    }
    let q = &*q;
    // SAFETY: the parts write disjoint elements (checked above), and the threads join before
    // `out`'s borrow ends.
    let o = unsafe { threads::Shared::new(out.as_mut_ptr()) };
    let mut local = [Part::default(); MAX_PARTS];
    local[..parts.len()].copy_from_slice(parts);
    threads::for_each(&mut local[..parts.len()], |&mut p| {
        // SAFETY: as above; `out` holds the image's output, and this part writes only its own
        // channels × vectors of it; `width` is this CPU's ([`conv`] checked it).
        unsafe { run_kernel(width, q, g, packed, p, KC, e, o.get()) }
    });
}

/// [`kernel`] at `width`, compiled for the CPU features that width needs: the one dispatch of
/// the direct convolution and of [`super::winograd`]'s GEMMs.
///
/// # Safety
/// As [`kernel`]'s, and `width` is one [`width`] returns on this CPU.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn run_kernel(
    width: Width,
    q: &[f32],
    g: &Geometry,
    packed: &[f32],
    part: Part,
    pass: usize,
    e: Epilogue<'_>,
    out: *mut f32,
) {
    // SAFETY: passed on from the caller; the x86 widths all need AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        match width {
            Width::Avx => x86::kernel::<x86::Avx<1>>(q, g, packed, part, pass, e, out),
            Width::AvxRowPairs => x86::kernel::<x86::Avx<2>>(q, g, packed, part, pass, e, out),
            Width::Four => x86::kernel::<x86::Sse>(q, g, packed, part, pass, e, out),
        }
    }
    // SAFETY: as above.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    unsafe {
        let _ = width;
        kernel::<wasm::Simd128>(q, g, packed, part, pass, e, out)
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )))]
    {
        let _ = (width, q, g, packed, part, pass, e, out);
        panic!("direct conv: no SIMD on this target");
    }
}

/// The vector operations the microkernel (and [`super::winograd`]'s transforms) need.
pub(super) trait Simd {
    const LANES: usize;
    /// Output rows per vector: 1, or 2 for [`Width::AvxRowPairs`].
    const ROWS: usize = 1;
    type V: Copy;
    unsafe fn splat(v: f32) -> Self::V;
    /// `LANES` values from `p`, unaligned.
    unsafe fn load(p: *const f32) -> Self::V;
    /// `LANES / 2` values from `lo`, then `LANES / 2` from `hi`, unaligned: two rows' runs in
    /// one vector ([`super::winograd`]'s transforms of two tile rows of 4 tiles).
    unsafe fn load2(lo: *const f32, hi: *const f32) -> Self::V {
        let mut v = [0f32; 16];
        let half = Self::LANES / 2;
        std::ptr::copy_nonoverlapping(lo, v.as_mut_ptr(), half);
        std::ptr::copy_nonoverlapping(hi, v.as_mut_ptr().add(half), half);
        Self::load(v.as_ptr())
    }
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a · b + c`.
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// The lanes of `a` then `b` (`x0 … x2L−1`), split into the even ones and the odd ones.
    unsafe fn unzip(a: Self::V, b: Self::V) -> (Self::V, Self::V);
    /// The inverse of [`Simd::unzip`]: `a0 b0 a1 b1 …` in two vectors.
    unsafe fn zip(a: Self::V, b: Self::V) -> (Self::V, Self::V);
}

/// Where a pixel vector reads its taps (in `q`) and writes its outputs (in the output plane).
#[derive(Clone, Copy)]
struct Vector {
    src: usize,
    dst: usize,
}

/// One part of one image into `out`, the image's `[Co, Ho, Wo]` output, from `q` as
/// [`image_conv`] left it, `pass` input channels at a time ([`KC`]); `e` is the image's epilogue.
///
/// # Safety
/// The CPU has `S`'s features; `out` points to the image's whole output, of which no other
/// thread writes `part`'s elements while this runs.
#[inline(always)]
pub(super) unsafe fn kernel<S: Simd>(
    q: &[f32],
    g: &Geometry,
    packed: &[f32],
    part: Part,
    pass: usize,
    e: Epilogue<'_>,
    out: *mut f32,
) {
    let ci = g.x[1];
    let [ho, wo] = g.out();
    let (s, wq) = (g.stride, g.wq());
    let [kh, kw] = g.k;
    // Row pairs read the copy [`pair_rows`] makes of [`prepare`]'s: both rows of a tap in one
    // load. Its rows hold, per channel, one group of 8 per kernel column.
    let pairs = S::ROWS == 2;
    let (q, qp) = q.split_at(ci * s * g.padded().0 * wq);
    let xb = if pairs { qp.as_ptr() } else { q.as_ptr() };
    // One padded input row of every channel, and from one input channel to the next.
    let (rs, cs) = if pairs {
        (ci * kw * 8, kw * 8)
    } else {
        (ci * s * wq, s * wq)
    };
    // Tap (ky, kx) of an output pixel whose first tap is at q[i] is at q[i + taps[ky·kw + kx]].
    let mut taps = [0usize; MAX_TAPS];
    let ntaps = kh * kw;
    let taps = &mut taps[..ntaps];
    for ky in 0..kh {
        for kx in 0..kw {
            taps[ky * kw + kx] = if pairs {
                ky * rs + kx * 8
            } else {
                ky * rs + (kx % s) * wq + kx / s
            };
        }
    }
    let plane = ho * wo;
    // A vector is ROWS output rows × `cols` pixels; with two rows, they are whole rows, so that
    // the vector is consecutive in the output too.
    let cols = S::LANES / S::ROWS;
    let per_row = wo / cols;
    let vectors = ho / S::ROWS * per_row;
    let vector = |i: usize| {
        let (oy, ox) = (i / per_row * S::ROWS, (i % per_row) * cols);
        Vector {
            src: s * oy * rs + ox,
            dst: oy * wo + ox,
        }
    };
    let span = part.span;
    let (v0, v1) = part.vectors;
    assert!(v1 <= vectors, "direct conv part");
    assert!(e.residual.is_none_or(|r| r.len() == g.co * plane));
    // The weights from this part's first channel on (the blocks before it are whole).
    let (c0, _) = span.channels(g.co);
    let packed = &packed[c0 * ci * ntaps..];
    // Input channels in passes (of [`KC`] for the convolution), so that a pass's rows and
    // weights stay in L1; the passes after the first add to the output, the last applies the
    // epilogue.
    for k0 in (0..ci).step_by(pass) {
        let kc = pass.min(ci - k0);
        let (first, last) = (k0 == 0, k0 + kc == ci);
        let xc = xb.add(k0 * cs);
        let mut w = packed.as_ptr();
        for (co0, rc) in blocks(g.co).skip(span.first).take(span.count) {
            let valid = rc.min(g.co - co0);
            let mut init = [0f32; RC];
            for (r, v) in init.iter_mut().enumerate().take(valid) {
                *v = e.bias.map_or(0.0, |t| t[co0 + r]) + e.channel_add.map_or(0.0, |t| t[co0 + r]);
            }
            let ob = co0 * plane;
            let wc = w.add(k0 * ntaps * rc);
            w = w.add(ci * ntaps * rc);
            let mut i = v0;
            while i < v1 {
                macro_rules! tile {
                    ($r:expr, $v:literal) => {{
                        let vs: [Vector; $v] = std::array::from_fn(|j| vector(i + j));
                        let dst = vs.map(|v| ob + v.dst);
                        let acc = if first {
                            splat::<S, $v, { $r }>(&init)
                        } else {
                            load::<S, $v, { $r }>(out, dst, plane, valid)
                        };
                        let src = vs.map(|v| v.src);
                        let acc = tile::<S, $v, { $r }>(acc, xc, src, cs, kc, taps, wc);
                        let e = if last { e } else { Epilogue::NONE };
                        store::<S, $v, { $r }>(&acc, dst, plane, valid, e, out);
                        i += $v;
                    }};
                }
                match (rc, v1 - i) {
                    (RC, 1) => tile!(RC, 1),
                    (RC, _) => tile!(RC, 2),
                    (_, 1) => tile!(RC_SMALL, 1),
                    _ => tile!(RC_SMALL, 2),
                }
            }
        }
    }
}

/// Adds `kc` input channels' taps to `acc` (`R` channels × `V` pixel vectors).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<S: Simd, const V: usize, const R: usize>(
    mut acc: [[S::V; V]; R],
    x: *const f32,
    src: [usize; V],
    cs: usize,
    kc: usize,
    taps: &[usize],
    w: *const f32,
) -> [[S::V; V]; R] {
    let mut wp = w;
    for c in 0..kc {
        let xc = x.add(c * cs);
        for &t in taps {
            let mut xv = [S::splat(0.0); V];
            for (xv, &o) in xv.iter_mut().zip(&src) {
                *xv = S::load(xc.add(o + t));
            }
            for a in acc.iter_mut() {
                let wv = S::splat(*wp);
                wp = wp.add(1);
                for (a, &xv) in a.iter_mut().zip(&xv) {
                    *a = S::mul_add(wv, xv, *a);
                }
            }
        }
    }
    acc
}

/// A tile's starting sums: `init[r]` in every lane of channel `r`.
#[inline(always)]
unsafe fn splat<S: Simd, const V: usize, const R: usize>(init: &[f32; RC]) -> [[S::V; V]; R] {
    let mut acc = [[S::splat(0.0); V]; R];
    for (a, &v) in acc.iter_mut().zip(init) {
        *a = [S::splat(v); V];
    }
    acc
}

/// A tile's partial sums back from the output: its first `valid` channels (the rest are zero
/// and never stored).
#[inline(always)]
unsafe fn load<S: Simd, const V: usize, const R: usize>(
    out: *const f32,
    dst: [usize; V],
    plane: usize,
    valid: usize,
) -> [[S::V; V]; R] {
    let mut acc = [[S::splat(0.0); V]; R];
    for (r, a) in acc.iter_mut().enumerate().take(valid) {
        for (a, &d) in a.iter_mut().zip(&dst) {
            *a = S::load(out.add(d + r * plane));
        }
    }
    acc
}

/// Writes the first `valid` channels of a tile at `dst` (channel stride `plane`), adding the
/// residual and scaling.
#[inline(always)]
unsafe fn store<S: Simd, const V: usize, const R: usize>(
    acc: &[[S::V; V]; R],
    dst: [usize; V],
    plane: usize,
    valid: usize,
    e: Epilogue<'_>,
    out: *mut f32,
) {
    let scale = S::splat(e.scale);
    for (r, a) in acc.iter().enumerate().take(valid) {
        for (&v, &d) in a.iter().zip(&dst) {
            let at = d + r * plane;
            let mut v = v;
            if let Some(res) = e.residual {
                v = S::add(S::load(res.as_ptr().add(at)), v);
            }
            if e.scale != 1.0 {
                v = S::mul(v, scale);
            }
            S::store(out.add(at), v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::{Epilogue, Geometry, Part, Simd};
    use std::arch::x86_64::*;

    /// 8 lanes: 8 pixels of one row, or (`ROWS` = 2) 4 pixels of each of two rows.
    pub struct Avx<const ROWS: usize>;
    impl<const R: usize> Simd for Avx<R> {
        const LANES: usize = 8;
        const ROWS: usize = R;
        type V = __m256;
        #[inline(always)]
        unsafe fn splat(v: f32) -> __m256 {
            _mm256_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn load2(lo: *const f32, hi: *const f32) -> __m256 {
            _mm256_loadu2_m128(hi, lo)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            _mm256_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn mul_add(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            _mm256_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            _mm256_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            _mm256_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn unzip(a: __m256, b: __m256) -> (__m256, __m256) {
            // Within each 128-bit half: a's evens then b's (a0 a2 b0 b2 | a4 a6 b4 b6); then the
            // middle 64-bit quarters swap.
            let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let odd = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
            let fix = |v: __m256| {
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
            };
            (fix(even), fix(odd))
        }
        #[inline(always)]
        unsafe fn zip(a: __m256, b: __m256) -> (__m256, __m256) {
            // a0 b0 a1 b1 | a4 b4 a5 b5 and a2 b2 a3 b3 | a6 b6 a7 b7, then their halves paired.
            let (lo, hi) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
            (
                _mm256_permute2f128_ps::<0x20>(lo, hi),
                _mm256_permute2f128_ps::<0x31>(lo, hi),
            )
        }
    }

    /// 4 lanes with FMA, for rows of 4 pixels.
    pub struct Sse;
    impl Simd for Sse {
        const LANES: usize = 4;
        type V = __m128;
        #[inline(always)]
        unsafe fn splat(v: f32) -> __m128 {
            _mm_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m128 {
            _mm_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m128) {
            _mm_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn mul_add(a: __m128, b: __m128, c: __m128) -> __m128 {
            _mm_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn add(a: __m128, b: __m128) -> __m128 {
            _mm_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m128, b: __m128) -> __m128 {
            _mm_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: __m128, b: __m128) -> __m128 {
            _mm_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn unzip(a: __m128, b: __m128) -> (__m128, __m128) {
            (
                _mm_shuffle_ps::<0b10_00_10_00>(a, b),
                _mm_shuffle_ps::<0b11_01_11_01>(a, b),
            )
        }
        #[inline(always)]
        unsafe fn zip(a: __m128, b: __m128) -> (__m128, __m128) {
            (_mm_unpacklo_ps(a, b), _mm_unpackhi_ps(a, b))
        }
    }

    /// [`super::prepare`] compiled for AVX2 + FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn prepare(
        x: &[f32],
        g: &Geometry,
        norm: Option<(&[[f32; 2]], bool)>,
        rows: (usize, usize),
        q: &mut [f32],
    ) {
        super::prepare(x, g, norm, rows, q)
    }

    /// [`kernel`] compiled for AVX2 + FMA, whichever vector type `S` it uses.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel<S: Simd>(
        q: &[f32],
        g: &Geometry,
        w: &[f32],
        part: Part,
        pass: usize,
        e: Epilogue<'_>,
        out: *mut f32,
    ) {
        super::kernel::<S>(q, g, w, part, pass, e, out)
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(super) mod wasm {
    use super::Simd;
    use std::arch::wasm32::*;

    /// wasm's 128-bit SIMD. Its multiply-add is a multiply and an add, which on x86 also needs a
    /// register for the product: with 12 accumulators, 2 pixel vectors and the weight, V8 (15
    /// xmm registers to allocate) spills one accumulator per tap. The relaxed-SIMD build
    /// (`scripts/wasm_relaxed.mjs`) uses `relaxed_madd`, one fused instruction where the CPU has
    /// FMA (rounded once or twice: either is within the tests' tolerances).
    pub struct Simd128;
    impl Simd for Simd128 {
        const LANES: usize = 4;
        type V = v128;
        #[inline(always)]
        unsafe fn splat(v: f32) -> v128 {
            f32x4_splat(v)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> v128 {
            v128_load(p.cast())
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: v128) {
            v128_store(p.cast(), v)
        }
        #[inline(always)]
        unsafe fn mul_add(a: v128, b: v128, c: v128) -> v128 {
            #[cfg(target_feature = "relaxed-simd")]
            return f32x4_relaxed_madd(a, b, c);
            #[cfg(not(target_feature = "relaxed-simd"))]
            f32x4_add(f32x4_mul(a, b), c)
        }
        #[inline(always)]
        unsafe fn add(a: v128, b: v128) -> v128 {
            f32x4_add(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: v128, b: v128) -> v128 {
            f32x4_sub(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: v128, b: v128) -> v128 {
            f32x4_mul(a, b)
        }
        #[inline(always)]
        unsafe fn unzip(a: v128, b: v128) -> (v128, v128) {
            (
                i32x4_shuffle::<0, 2, 4, 6>(a, b),
                i32x4_shuffle::<1, 3, 5, 7>(a, b),
            )
        }
        #[inline(always)]
        unsafe fn zip(a: v128, b: v128) -> (v128, v128) {
            (
                i32x4_shuffle::<0, 4, 1, 5>(a, b),
                i32x4_shuffle::<2, 6, 3, 7>(a, b),
            )
        }
    }
}
