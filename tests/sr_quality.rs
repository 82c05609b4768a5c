//! The shipped super-resolution model beats bicubic upscaling on held-out emoji (issue #7), through
//! `diffuse upscale` as a user runs it: 8 held-out 64×64 emoji (tests/fixtures/sr_heldout, made
//! by make_sr_heldout.py there; never trained on) are box-averaged to 32×32 (the degradation the
//! model inverts), upscaled by `assets/models/emoji-sr` with DDIM, and compared with the truth.
//! `training/evaluate.py --model emoji-sr` measured +4.6 dB over all 708 held-out images
//! (33.2 vs 28.6 dB); this checks at least half that margin on these 8, and that the model alone
//! (no consistency step) is what falls short.

use std::path::Path;
use std::process::Command;

use stepwise::io::{read_tensors, write_tensors};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// PSNR in dB of [-1, 1] images on [0, 1] pixels after clamping, per image.
fn psnr(x: &[f32], truth: &[f32], n: usize) -> Vec<f64> {
    let per = truth.len() / n;
    (0..n)
        .map(|i| {
            let mse: f64 = (0..per)
                .map(|k| {
                    let a = ((x[i * per + k].clamp(-1.0, 1.0) + 1.0) / 2.0) as f64;
                    let b = ((truth[i * per + k] + 1.0) / 2.0) as f64;
                    (a - b) * (a - b)
                })
                .sum::<f64>()
                / per as f64;
            10.0 * (1.0 / mse.max(1e-12)).log10()
        })
        .collect()
}

fn upscale(low: &Path, out: &Path, extra: &[&str]) -> Vec<f32> {
    let o = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .current_dir(root())
        .args(["upscale", "--model", "assets/models/emoji-sr", "--input"])
        .arg(low)
        .args([
            "--sampler",
            "ddim",
            "--eta",
            "0",
            "--steps",
            "20",
            "--seed",
            "0",
        ])
        .args(["--device", "cpu", "--output"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "diffuse upscale failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    read_tensors(&std::fs::read(out).unwrap(), "out").unwrap()["sample"].to_f32()
}

#[test]
fn emoji_sr_beats_bicubic_on_held_out_emoji() {
    let t = read_tensors(
        &std::fs::read(root().join("tests/fixtures/sr_heldout/heldout8.safetensors")).unwrap(),
        "fixture",
    )
    .unwrap();
    let truth = t["image"].to_f32();
    let [n, c, h, w] = t["image"].shape[..] else {
        panic!("shape {:?}", t["image"].shape)
    };
    assert_eq!((n, c, h, w), (8, 3, 64, 64));
    // 2×2 box average: F.interpolate(x, size=32, mode="area").
    let (lh, lw) = (h / 2, w / 2);
    let mut low = vec![0.0f32; n * c * lh * lw];
    for p in 0..n * c {
        for y in 0..lh {
            for x in 0..lw {
                let at = |dy: usize, dx: usize| truth[p * h * w + (2 * y + dy) * w + 2 * x + dx];
                low[p * lh * lw + y * lw + x] = (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 4.0;
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("stepwise-sr-quality-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let low_path = dir.join("low.safetensors");
    std::fs::write(
        &low_path,
        write_tensors(&[("image", &[n, c, lh, lw], &low)]).unwrap(),
    )
    .unwrap();
    let base_path = dir.join("bicubic.safetensors");
    let sr = upscale(
        &low_path,
        &dir.join("sr.safetensors"),
        &["--baseline", base_path.to_str().unwrap()],
    );
    let raw = upscale(
        &low_path,
        &dir.join("raw.safetensors"),
        &["--no-consistency"],
    );
    let bicubic =
        read_tensors(&std::fs::read(&base_path).unwrap(), "baseline").unwrap()["sample"].to_f32();
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let (p_sr, p_bic) = (psnr(&sr, &truth, n), psnr(&bicubic, &truth, n));
    let wins = p_sr.iter().zip(&p_bic).filter(|(a, b)| a > b).count();
    let (m_sr, m_bic, m_raw) = (mean(p_sr), mean(p_bic), mean(psnr(&raw, &truth, n)));
    eprintln!("PSNR on 8 held-out emoji: emoji-sr {m_sr:.2} dB, bicubic {m_bic:.2} dB, model alone {m_raw:.2} dB; sr wins {wins}/8");
    assert!(
        m_sr >= m_bic + 2.0,
        "emoji-sr {m_sr:.2} dB does not beat bicubic {m_bic:.2} dB by 2 dB"
    );
    assert!(
        wins >= 7,
        "emoji-sr beats bicubic on only {wins} of 8 images"
    );
    assert!(
        m_raw < m_sr,
        "the consistency step should help: alone {m_raw:.2} dB, with it {m_sr:.2} dB"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
