//! Exports of a run's history beyond the final PNG: the step strip (K evenly spaced frames, x_t
//! over x̂0) and the looping animated GIF (x_t beside x̂0). Pure functions over RGBA buffers, so
//! native tests check them; the app only hands the bytes to the browser as downloads.

use std::borrow::Cow;

/// A borrowed RGBA picture.
#[derive(Clone, Copy, Debug)]
pub struct Rgba<'a> {
    pub width: usize,
    pub height: usize,
    pub data: &'a [u8],
}

/// The background between cells: the app's dark canvas colour.
const BG: [u8; 4] = [7, 8, 10, 255];

/// `k` indices into `n` frames, evenly spaced, first (x_T) and last always included; fewer when
/// there are fewer frames.
pub fn evenly_spaced(n: usize, k: usize) -> Vec<usize> {
    match (n, k.min(n)) {
        (0, _) | (_, 0) => Vec::new(),
        (_, 1) => vec![n - 1],
        (_, k) => (0..k)
            // round(i (n − 1) / (k − 1)): the spacing is ≥ 1, so the indices are distinct.
            .map(|i| (2 * i * (n - 1) + (k - 1)) / (2 * (k - 1)))
            .collect(),
    }
}

/// Nearest-neighbour upscaling by an integer factor, for any number of bytes per pixel (crisp
/// pixels in every export).
pub fn upscale(data: &[u8], w: usize, h: usize, k: usize, bpp: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * k * k);
    for y in 0..h * k {
        for x in 0..w * k {
            let i = ((y / k) * w + x / k) * bpp;
            out.extend_from_slice(&data[i..i + bpp]);
        }
    }
    out
}

/// Lays out rows of pictures: every cell of a row as large as the row's largest picture (pictures
/// sit at the cell's top left), `gap` background pixels between cells and rows and around the
/// edge, everything scaled by `scale`. Returns (width, height, RGBA).
pub fn tile(rows: &[Vec<Rgba>], gap: usize, scale: usize) -> (usize, usize, Vec<u8>) {
    let cell = |row: &Vec<Rgba>| {
        row.iter().fold((0, 0), |(w, h), p| {
            (w.max(p.width * scale), h.max(p.height * scale))
        })
    };
    let width = rows
        .iter()
        .map(|r| r.len() * (cell(r).0 + gap) + gap)
        .max()
        .unwrap_or(0);
    let height = rows.iter().map(|r| cell(r).1 + gap).sum::<usize>() + gap;
    let mut out: Vec<u8> = BG.repeat(width * height);
    let mut y0 = gap;
    for row in rows {
        let (cw, ch) = cell(row);
        for (i, p) in row.iter().enumerate() {
            let big = upscale(p.data, p.width, p.height, scale, 4);
            let (pw, x0) = (p.width * scale, gap + i * (cw + gap));
            for y in 0..p.height * scale {
                let dst = ((y0 + y) * width + x0) * 4;
                out[dst..dst + pw * 4].copy_from_slice(&big[y * pw * 4..(y + 1) * pw * 4]);
            }
        }
        y0 += ch + gap;
    }
    (width, height, out)
}

/// The integer factor that brings `size` pixels up to at least `target` (at most 16).
pub fn scale_for(size: usize, target: usize) -> usize {
    (target / size.max(1)).clamp(1, 16)
}

/// The step strip: the chosen frames' x_t in the top row and x̂0 below, each picture scaled so a
/// cell is at least 96 pixels. `frames` are (x_t, x̂0) pairs in step order.
pub fn step_strip(frames: &[(Rgba, Rgba)]) -> (usize, usize, Vec<u8>) {
    let size = frames
        .iter()
        .flat_map(|(a, b)| [a.width, a.height, b.width, b.height])
        .max()
        .unwrap_or(1);
    let k = scale_for(size, 96);
    let xt = frames.iter().map(|f| f.0).collect();
    let x0 = frames.iter().map(|f| f.1).collect();
    tile(&[xt, x0], 2 * k, k)
}

type GifEncoder = gif::Encoder<Vec<u8>>;

/// At most this many GIF frames: a long run is subsampled evenly.
pub const GIF_MAX_FRAMES: usize = 100;

/// An animated GIF of a run: x_t beside x̂0 for every frame (or `GIF_MAX_FRAMES` evenly spaced),
/// looping, about five seconds long, the last frame held for 1.5 s, scaled up with crisp pixels.
/// Each frame is quantised at its native size (exact palette up to 256 colours, NeuQuant above)
/// and its palette indices are scaled up, so quantisation costs the same at any scale.
pub fn animated_gif(frames: &[(Rgba, Rgba)]) -> Result<Vec<u8>, String> {
    let picks = evenly_spaced(frames.len(), GIF_MAX_FRAMES);
    if picks.is_empty() {
        return Err("no frames to export".into());
    }
    let size = frames
        .iter()
        .flat_map(|(a, b)| [a.height, b.height])
        .max()
        .unwrap_or(1);
    let k = scale_for(size, 256);
    // Centiseconds per frame: ~5 s in all, within what browsers honour (≥ 2 cs).
    let delay = (500 / picks.len()).clamp(2, 10) as u16;
    let err = |e: gif::EncodingError| format!("GIF encoding: {e}");
    // The encoder, made at the first frame, and that frame's size.
    let mut encoder: Option<(GifEncoder, (usize, usize))> = None;
    for (n, &i) in picks.iter().enumerate() {
        let (xt, x0) = frames[i];
        let (w, h, mut rgba) = tile(&[vec![xt, x0]], 2, 1);
        let (gw, gh) = (w * k, h * k);
        let (enc, first) = match &mut encoder {
            Some(e) => e,
            None => {
                if gw > u16::MAX as usize || gh > u16::MAX as usize {
                    return Err(format!("a {gw}×{gh} GIF is larger than the format allows"));
                }
                let mut e =
                    gif::Encoder::new(Vec::new(), gw as u16, gh as u16, &[]).map_err(err)?;
                e.set_repeat(gif::Repeat::Infinite).map_err(err)?;
                encoder.insert((e, (w, h)))
            }
        };
        if (w, h) != *first {
            return Err(format!(
                "frame {i} is {w}×{h}, the first {}×{}: a run's frames must all have one size",
                first.0, first.1
            ));
        }
        let small = gif::Frame::from_rgba_speed(w as u16, h as u16, &mut rgba, 10);
        let frame = gif::Frame {
            width: gw as u16,
            height: gh as u16,
            delay: if n + 1 == picks.len() { 150 } else { delay },
            buffer: Cow::Owned(upscale(&small.buffer, w, h, k, 1)),
            ..small
        };
        enc.write_frame(&frame).map_err(err)?;
    }
    let (enc, _) = encoder.ok_or("no frames to export")?;
    enc.into_inner().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: usize, h: usize, v: [u8; 4]) -> Vec<u8> {
        v.repeat(w * h)
    }

    #[test]
    fn evenly_spaced_keeps_ends_and_is_distinct() {
        assert_eq!(evenly_spaced(0, 10), Vec::<usize>::new());
        assert_eq!(evenly_spaced(1, 10), vec![0]);
        assert_eq!(evenly_spaced(5, 10), vec![0, 1, 2, 3, 4]);
        assert_eq!(
            evenly_spaced(51, 11),
            vec![0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
        );
        assert_eq!(evenly_spaced(1001, 1), vec![1000]);
        for n in 2..300 {
            for k in 2..=12 {
                let v = evenly_spaced(n, k);
                assert_eq!(v.len(), k.min(n));
                assert_eq!((v[0], *v.last().unwrap()), (0, n - 1));
                assert!(v.windows(2).all(|w| w[0] < w[1]), "{n} {k}: {v:?}");
            }
        }
    }

    #[test]
    fn tile_places_scaled_cells_with_gaps() {
        let a = solid(2, 2, [255, 0, 0, 255]);
        let b = solid(2, 2, [0, 255, 0, 255]);
        fn p(data: &[u8]) -> Rgba<'_> {
            Rgba {
                width: 2,
                height: 2,
                data,
            }
        }
        let (w, h, out) = tile(&[vec![p(&a), p(&b)], vec![p(&b)]], 1, 3);
        // Two 6-pixel cells and three 1-pixel gaps across; two rows of 6 and three gaps down.
        assert_eq!((w, h), (15, 15));
        let at = |x: usize, y: usize| &out[(y * w + x) * 4..(y * w + x) * 4 + 4];
        assert_eq!(at(0, 0), BG);
        assert_eq!(at(1, 1), [255, 0, 0, 255]);
        assert_eq!(at(6, 6), [255, 0, 0, 255]);
        assert_eq!(at(7, 1), BG);
        assert_eq!(at(8, 1), [0, 255, 0, 255]);
        assert_eq!(at(1, 8), [0, 255, 0, 255]);
        // The second row has one cell: the rest is background.
        assert_eq!(at(8, 8), BG);
    }

    #[test]
    fn step_strip_has_two_rows_of_k_cells() {
        let imgs: Vec<Vec<u8>> = (0..10u8)
            .map(|i| solid(16, 16, [i * 20, 0, 0, 255]))
            .collect();
        let frames: Vec<(Rgba, Rgba)> = imgs
            .iter()
            .map(|d| {
                let p = Rgba {
                    width: 16,
                    height: 16,
                    data: d,
                };
                (p, p)
            })
            .collect();
        let (w, h, out) = step_strip(&frames);
        // 16 px scaled by 6 = 96, gaps of 12.
        assert_eq!((w, h), (10 * (96 + 12) + 12, 2 * (96 + 12) + 12));
        assert_eq!(out.len(), w * h * 4);
        let x = 12 + 9 * 108 + 50;
        assert_eq!(out[((12 + 108 + 50) * w + x) * 4], 180);
    }

    #[test]
    fn gif_round_trips_frames_palette_and_loop() {
        let imgs: Vec<(Vec<u8>, Vec<u8>)> = (0..3u8)
            .map(|i| {
                (
                    solid(4, 4, [i * 100, 10, 20, 255]),
                    solid(4, 4, [0, i * 50, 0, 255]),
                )
            })
            .collect();
        let frames: Vec<(Rgba, Rgba)> = imgs
            .iter()
            .map(|(a, b)| {
                (
                    Rgba {
                        width: 4,
                        height: 4,
                        data: a,
                    },
                    Rgba {
                        width: 4,
                        height: 4,
                        data: b,
                    },
                )
            })
            .collect();
        let bytes = animated_gif(&frames).unwrap();
        assert_eq!(&bytes[..6], b"GIF89a");
        assert!(bytes.windows(11).any(|w| w == b"NETSCAPE2.0"), "loops");
        let mut opts = gif::DecodeOptions::new();
        opts.set_color_output(gif::ColorOutput::RGBA);
        let mut dec = opts.read_info(bytes.as_slice()).unwrap();
        // 4 + 4 + three 2-pixel gaps = 14 wide, 4 + 2 gaps = 8 high, scaled by 256 / 4 = 64
        // (capped at 16).
        assert_eq!((dec.width(), dec.height()), (14 * 16, 8 * 16));
        let mut n = 0;
        while let Some(f) = dec.read_next_frame().unwrap() {
            let w = f.width as usize;
            let px = |x: usize, y: usize| &f.buffer[(y * w + x) * 4..(y * w + x) * 4 + 4];
            assert_eq!(px(0, 0), BG, "frame {n}");
            assert_eq!(
                px(3 * 16, 3 * 16),
                [n as u8 * 100, 10, 20, 255],
                "frame {n} x_t"
            );
            assert_eq!(
                px(9 * 16, 3 * 16),
                [0, n as u8 * 50, 0, 255],
                "frame {n} x̂0"
            );
            assert_eq!(f.delay, if n == 2 { 150 } else { 10 });
            n += 1;
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn gif_subsamples_long_runs() {
        let img = solid(2, 2, [1, 2, 3, 255]);
        let p = Rgba {
            width: 2,
            height: 2,
            data: &img,
        };
        let frames = vec![(p, p); 1001];
        let bytes = animated_gif(&frames).unwrap();
        let mut dec = gif::DecodeOptions::new()
            .read_info(bytes.as_slice())
            .unwrap();
        let mut n = 0;
        while dec.read_next_frame().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, GIF_MAX_FRAMES);
        assert!(animated_gif(&[]).is_err());
    }
}
