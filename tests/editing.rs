//! Image editing end to end through `diffuse edit`, `diffuse inpaint` and `diffuse upscale` on
//! both backends: SDEdit and super-resolution loops from diffusers with injected noise, bicubic
//! against PyTorch, strength 0 and 1, the known region under inpainting, and the error messages.
//! Fixtures: tests/fixtures/editing, made by make_editing_fixtures.py there.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use stepwise::edit::{self, resize_bicubic};
use stepwise::io::{read_tensors, rel_l2, write_tensors};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/editing")
}

/// A fresh scratch folder per test.
fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stepwise-editing-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn diffuse(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Runs `diffuse <args> --output out` and returns `sample` and its shape.
fn run_to(args: &[String], out: &Path) -> (Vec<f32>, Vec<usize>) {
    let mut all = args.to_vec();
    all.extend(["--output".into(), out.display().to_string()]);
    let o = diffuse(&all);
    assert!(
        o.status.success(),
        "diffuse {all:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let t = read_tensors(&std::fs::read(out).unwrap(), "out").unwrap();
    (t["sample"].to_f32(), t["sample"].shape.clone())
}

fn tensor(path: &Path, key: &str) -> (Vec<f32>, Vec<usize>) {
    let t = read_tensors(&std::fs::read(path).unwrap(), "fixture").unwrap();
    (t[key].to_f32(), t[key].shape.clone())
}

fn image() -> Vec<f32> {
    tensor(&fixtures().join("image.safetensors"), "image").0
}

#[test]
fn bicubic_matches_pytorch() {
    let t = read_tensors(
        &std::fs::read(fixtures().join("bicubic.safetensors")).unwrap(),
        "bicubic",
    )
    .unwrap();
    let mut k = 0;
    while let Some(input) = t.get(&format!("in_{k}")) {
        let want = &t[&format!("out_{k}")];
        let s = &input.shape;
        let got = resize_bicubic(
            &input.to_f32(),
            [s[0], s[1], s[2], s[3]],
            want.shape[2],
            want.shape[3],
        );
        let want = want.to_f32();
        assert_eq!(got.len(), want.len());
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("bicubic case {k} {s:?}: max abs error {err:e}");
        // Measured ≤ 8.4e-7 (values in [-1.3, 1.3]; f32 rounding in a different order).
        assert!(err <= 4e-6, "case {k}: max abs error {err:e}");
        k += 1;
    }
    assert_eq!(k, 4, "four bicubic cases");
}

/// Each golden case (a folder with case.json) under fixtures/editing starting with `prefix`.
fn golden(prefix: &str, command: &str, device: &str, tol: f64) {
    let tmp = scratch(&format!("golden-{prefix}-{device}"));
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.join("case.json").exists()
                && p.file_name().unwrap().to_string_lossy().starts_with(prefix)
        })
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 2, "golden cases for {prefix}: {dirs:?}");
    for dir in dirs {
        let case: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
        let mut args = vec![command.to_string()];
        args.extend(
            case["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string()),
        );
        args.extend([
            "--noise".into(),
            dir.join("noise.safetensors").display().to_string(),
            "--device".into(),
            device.into(),
        ]);
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let (got, shape) = run_to(&args, &tmp.join(format!("{name}.safetensors")));
        let (want, want_shape) = tensor(&dir.join("expected.safetensors"), "sample");
        assert_eq!(shape, want_shape, "{name}");
        let err = rel_l2(&got, &want);
        eprintln!("{device} {name}: rel L2 {err:e}");
        assert!(
            err <= tol,
            "{name} on {device}: relative L2 {err:e} > {tol:e}"
        );
    }
}

#[test]
fn sdedit_matches_diffusers_on_cpu() {
    golden("sdedit_", "edit", "cpu", 1e-4);
}

#[test]
fn sdedit_matches_diffusers_on_gpu() {
    common::gpu();
    golden("sdedit_", "edit", "gpu", 1e-3);
}

#[test]
fn upscale_matches_diffusers_on_cpu() {
    golden("sr_", "upscale", "cpu", 1e-4);
}

#[test]
fn upscale_matches_diffusers_on_gpu() {
    common::gpu();
    golden("sr_", "upscale", "gpu", 1e-3);
}

fn edit_args(input: &str, sampler: &str, strength: &str, device: &str) -> Vec<String> {
    strings(&[
        "edit",
        "--model",
        "tests/fixtures/unet/attn_multihead",
        "--input",
        input,
        "--sampler",
        sampler,
        "--steps",
        "10",
        "--strength",
        strength,
        "--seed",
        "5",
        "--device",
        device,
    ])
}

fn strength_zero(device: &str) {
    let tmp = scratch(&format!("zero-{device}"));
    let input = fixtures().join("image.safetensors").display().to_string();
    let (got, shape) = run_to(
        &edit_args(&input, "ddpm", "0", device),
        &tmp.join("out.safetensors"),
    );
    assert_eq!(shape, vec![1, 3, 16, 16]);
    assert_eq!(got, image(), "strength 0 must return the input exactly");
    // A PNG goes through 8 bits and back unchanged.
    let png = tmp.join("in.png");
    let rgba: Vec<u8> = (0..16 * 16 * 4)
        .map(|i| {
            if i % 4 == 3 {
                255
            } else {
                (i * 37 % 251) as u8
            }
        })
        .collect();
    image::RgbaImage::from_raw(16, 16, rgba.clone())
        .unwrap()
        .save(&png)
        .unwrap();
    let out = tmp.join("out.png");
    let mut args = edit_args(&png.display().to_string(), "euler-a", "0.0", device);
    args.extend(["--output".into(), out.display().to_string()]);
    let o = diffuse(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(image::open(&out).unwrap().to_rgba8().into_raw(), rgba);
}

#[test]
fn strength_zero_returns_the_input_on_cpu() {
    strength_zero("cpu");
}

#[test]
fn strength_zero_returns_the_input_on_gpu() {
    common::gpu();
    strength_zero("gpu");
}

/// Strength 1 starts from √ᾱ_t·x₀ + √(1−ᾱ_t)·ε at the first timestep (t = 900 here, √ᾱ_t ≈ 0.017),
/// so two different inputs under one seed end (nearly) in the same place; a mid strength stays
/// closer to its input. DDPM, because its fresh noise at every step washes out what is left of
/// the input: deterministic DDIM is an ODE that carries the 1.7% back out (measured: outputs
/// 0.34 apart for inputs 1.8 apart, against 0.0056 with DDPM).
fn strength_one(device: &str) {
    let tmp = scratch(&format!("one-{device}"));
    let a_path = fixtures().join("image.safetensors");
    let a = image();
    let b: Vec<f32> = a.iter().map(|v| -0.8 * v).collect();
    let b_path = tmp.join("b.safetensors");
    std::fs::write(
        &b_path,
        write_tensors(&[("image", &[1, 3, 16, 16], &b)]).unwrap(),
    )
    .unwrap();
    let run = |input: &Path, strength: &str, name: &str| {
        run_to(
            &edit_args(&input.display().to_string(), "ddpm", strength, device),
            &tmp.join(name),
        )
        .0
    };
    let from_a = run(&a_path, "1", "a1.safetensors");
    let from_b = run(&b_path, "1", "b1.safetensors");
    let inputs_apart = rel_l2(&b, &a);
    let outputs_apart = rel_l2(&from_b, &from_a);
    eprintln!(
        "{device}: inputs rel L2 {inputs_apart:.3}, strength-1 outputs rel L2 {outputs_apart:.4}"
    );
    // Measured 0.0056 on both backends.
    assert!(
        outputs_apart < 0.01,
        "strength 1 kept too much of the input: outputs {outputs_apart} apart (inputs {inputs_apart})"
    );
    let mid = run(&a_path, "0.3", "a03.safetensors");
    let (d_mid, d_one) = (rel_l2(&mid, &a), rel_l2(&from_a, &a));
    eprintln!("{device}: distance to the input: strength 0.3 {d_mid:.3}, strength 1 {d_one:.3}");
    // Measured 0.98 against 1.54 (the random UNet's x̂₀ is far from any image).
    assert!(
        d_mid < 0.8 * d_one,
        "strength 0.3 ({d_mid}) is not closer to the input than strength 1 ({d_one})"
    );
}

#[test]
fn strength_one_nearly_ignores_the_input_on_cpu() {
    strength_one("cpu");
}

#[test]
fn strength_one_nearly_ignores_the_input_on_gpu() {
    common::gpu();
    strength_one("gpu");
}

/// The left half (columns < 8) is regenerated, the right half kept.
fn half_mask() -> Vec<f32> {
    (0..16 * 16)
        .map(|p| if p % 16 < 8 { 1.0 } else { 0.0 })
        .collect()
}

fn inpaint_args(sampler: &str, resample: &str, mask: &Path, device: &str) -> Vec<String> {
    strings(&[
        "inpaint",
        "--model",
        "tests/fixtures/unet/attn_multihead",
        "--input",
        "tests/fixtures/editing/image.safetensors",
        "--sampler",
        sampler,
        "--steps",
        "6",
        "--seed",
        "9",
        "--resample",
        resample,
        "--device",
        device,
        "--mask",
        &mask.display().to_string(),
    ])
}

fn known_region_kept(device: &str) {
    let tmp = scratch(&format!("inpaint-{device}"));
    // The same mask as a PNG (white = regenerate) and as a .safetensors.
    let png = tmp.join("mask.png");
    let grey: Vec<u8> = half_mask().iter().map(|&m| (m * 255.0) as u8).collect();
    image::GrayImage::from_raw(16, 16, grey)
        .unwrap()
        .save(&png)
        .unwrap();
    let st = tmp.join("mask.safetensors");
    std::fs::write(
        &st,
        write_tensors(&[("mask", &[1, 1, 16, 16], &half_mask())]).unwrap(),
    )
    .unwrap();
    let x0 = image();
    let mask = half_mask();
    for (sampler, resample, mask_file) in [
        ("ddim", "1", &png),
        ("ddpm", "2", &st),
        ("dpm++2m", "2", &png),
        ("euler-a", "3", &st),
    ] {
        let (got, shape) = run_to(
            &inpaint_args(sampler, resample, mask_file, device),
            &tmp.join(format!("{sampler}.safetensors")),
        );
        assert_eq!(shape, vec![1, 3, 16, 16]);
        let mut changed = 0.0f64;
        for (i, (&g, &x)) in got.iter().zip(&x0).enumerate() {
            if mask[i % 256] == 0.0 {
                assert_eq!(
                    g.to_bits(),
                    x.to_bits(),
                    "{sampler} r={resample}: known element {i} changed ({g} vs {x})"
                );
            } else {
                changed += f64::from((g - x).abs());
            }
        }
        let mean = changed / (3.0 * 128.0);
        eprintln!("{device} {sampler} r={resample}: mean |Δ| in the masked region {mean:.3}");
        assert!(
            mean > 0.1,
            "{sampler}: the masked region barely changed (mean |Δ| {mean})"
        );
    }
}

#[test]
fn inpainting_keeps_the_known_region_on_cpu() {
    known_region_kept("cpu");
}

#[test]
fn inpainting_keeps_the_known_region_on_gpu() {
    common::gpu();
    known_region_kept("gpu");
}

#[test]
fn inpainting_is_reproducible_and_resampling_matters() {
    let tmp = scratch("inpaint-seed");
    let mask = tmp.join("mask.safetensors");
    std::fs::write(
        &mask,
        write_tensors(&[("mask", &[1, 1, 16, 16], &half_mask())]).unwrap(),
    )
    .unwrap();
    let run = |sampler: &str, r: &str, name: &str| {
        run_to(&inpaint_args(sampler, r, &mask, "cpu"), &tmp.join(name)).0
    };
    let a = run("ddpm", "1", "a.safetensors");
    let b = run("ddpm", "1", "b.safetensors");
    assert_eq!(a, b, "one seed, two different results");
    let c = run("ddpm", "3", "c.safetensors");
    let d = rel_l2(&c, &a);
    eprintln!("resample 3 vs 1: rel L2 {d:.3}");
    assert!(d > 0.01, "resampling changed nothing (rel L2 {d})");
    // GPU and CPU agree on a resampled, stochastic run of one seed.
    common::gpu();
    let g = run_to(
        &inpaint_args("ddpm", "3", &mask, "gpu"),
        &tmp.join("g.safetensors"),
    )
    .0;
    let e = rel_l2(&g, &c);
    eprintln!("resample 3, gpu vs cpu: rel L2 {e:e}");
    assert!(e <= 1e-3, "GPU and CPU inpainting differ: rel L2 {e:e}");
}

/// A seeded upscale from a PNG on both backends: they agree, the output has the model's size,
/// and --baseline writes the bicubic upscaling of the input.
#[test]
fn upscale_agrees_between_cpu_and_gpu() {
    let tmp = scratch("upscale");
    let (low, _) = tensor(&fixtures().join("lowres.safetensors"), "image");
    let grey: Vec<u8> = low.iter().map(|&v| stepwise::image::to_u8(v)).collect();
    let png = tmp.join("low.png");
    image::GrayImage::from_raw(8, 8, grey.clone())
        .unwrap()
        .save(&png)
        .unwrap();
    let run = |device: &str| {
        let baseline = tmp.join(format!("bicubic-{device}.safetensors"));
        let args = strings(&[
            "upscale",
            "--model",
            "tests/fixtures/editing/sr_unet",
            "--input",
            &png.display().to_string(),
            "--sampler",
            "euler-a",
            "--steps",
            "5",
            "--seed",
            "3",
            "--device",
            device,
            "--baseline",
            &baseline.display().to_string(),
        ]);
        let (out, shape) = run_to(&args, &tmp.join(format!("sr-{device}.safetensors")));
        assert_eq!(shape, vec![1, 1, 16, 16]);
        (out, tensor(&baseline, "sample"))
    };
    let (cpu, (base, base_shape)) = run("cpu");
    common::gpu();
    let (gpu, _) = run("gpu");
    let err = rel_l2(&gpu, &cpu);
    eprintln!("upscale gpu vs cpu: rel L2 {err:e}");
    assert!(err <= 1e-3, "GPU and CPU upscales differ: rel L2 {err:e}");
    assert_eq!(base_shape, vec![1, 1, 16, 16]);
    let pixels: Vec<f32> = grey.iter().map(|&v| edit::from_u8(v)).collect();
    assert_eq!(base, resize_bicubic(&pixels, [1, 1, 8, 8], 16, 16));
    assert!(
        rel_l2(&cpu, &base) > 0.01,
        "the upscale is just the bicubic baseline"
    );
}

#[test]
fn bad_inputs_are_named_errors() {
    let tmp = scratch("errors");
    let fail = |args: &[&str]| {
        let o = diffuse(&strings(args));
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("diffuse: error: ") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        err
    };
    let out = tmp.join("out.png").display().to_string();
    let model = "tests/fixtures/unet/attn_multihead";
    let img = "tests/fixtures/editing/image.safetensors";
    let base = |cmd: &'static str, input: &'static str| {
        vec![
            cmd,
            "--model",
            model,
            "--input",
            input,
            "--sampler",
            "ddim",
            "--steps",
            "4",
            "--device",
            "cpu",
        ]
    };
    let with = |mut v: Vec<&'static str>, extra: &[&'static str], out: &str| {
        v.extend_from_slice(extra);
        let mut s = strings(&v);
        s.extend(["--output".into(), out.to_string()]);
        s
    };
    let fail_s = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        fail(&refs)
    };

    let e = fail_s(with(base("edit", "no/such/file.png"), &[], &out));
    assert!(e.contains("no/such/file.png"), "{e}");
    let e = fail_s(with(base("edit", img), &["--strength", "1.5"], &out));
    assert!(e.contains("strength") && e.contains("1.5"), "{e}");
    let e = fail_s(with(base("edit", img), &["--strength", "-0.1"], &out));
    assert!(e.contains("strength"), "{e}");

    // Wrong channel count and wrong size.
    let four = tmp.join("four.safetensors");
    std::fs::write(
        &four,
        write_tensors(&[("image", &[1, 4, 16, 16], &[0.0; 1024])]).unwrap(),
    )
    .unwrap();
    let e = fail_s(
        with(base("edit", "x"), &[], &out)
            .into_iter()
            .map(|a| {
                if a == "x" {
                    four.display().to_string()
                } else {
                    a
                }
            })
            .collect(),
    );
    assert!(e.contains("4 channels") && e.contains('3'), "{e}");
    let small = tmp.join("small.png");
    image::RgbImage::new(8, 8).save(&small).unwrap();
    let swap = |args: Vec<String>, from: &str, to: &Path| -> Vec<String> {
        args.into_iter()
            .map(|a| {
                if a == from {
                    to.display().to_string()
                } else {
                    a
                }
            })
            .collect()
    };
    let e = fail_s(swap(with(base("edit", "x"), &[], &out), "x", &small));
    assert!(e.contains("8×8") && e.contains("16×16"), "{e}");

    // Inpainting masks.
    let e = fail_s(swap(
        with(base("inpaint", img), &["--mask", "m"], &out),
        "m",
        &small,
    ));
    assert!(
        e.contains("mask") && e.contains("8×8") && e.contains("16×16"),
        "{e}"
    );
    let e = fail_s(with(base("inpaint", img), &["--mask", "no/mask.png"], &out));
    assert!(e.contains("no/mask.png"), "{e}");
    let e = fail_s(with(base("inpaint", img), &["--mask", img], &out));
    assert!(e.contains("mask") && e.contains("missing"), "{e}");
    let mask = tmp.join("mask.safetensors");
    std::fs::write(
        &mask,
        write_tensors(&[("mask", &[1, 1, 16, 16], &half_mask())]).unwrap(),
    )
    .unwrap();
    let e = fail_s(swap(
        with(
            base("inpaint", img),
            &["--mask", "m", "--resample", "0"],
            &out,
        ),
        "m",
        &mask,
    ));
    assert!(e.contains("--resample") && e.contains("at least 1"), "{e}");

    // Upscale: not an SR model; a size that does not divide the sample size; SR model in edit.
    let e = fail_s(swap(with(base("upscale", "x"), &[], &out), "x", &small));
    assert!(e.contains("super-resolution"), "{e}");
    let odd = tmp.join("odd.png");
    image::GrayImage::new(6, 6).save(&odd).unwrap();
    let sr = |cmd: &'static str, input: &Path| {
        let mut v = strings(&[
            cmd,
            "--model",
            "tests/fixtures/editing/sr_unet",
            "--sampler",
            "ddim",
            "--steps",
            "3",
            "--device",
            "cpu",
            "--output",
            &out,
            "--input",
        ]);
        v.push(input.display().to_string());
        v
    };
    let e = fail_s(sr("upscale", &odd));
    assert!(e.contains("6×6") && e.contains("16×16"), "{e}");
    let e = fail_s(sr("edit", &small));
    assert!(e.contains("super-resolution"), "{e}");

    // Bad output extension.
    let e = fail_s(with(base("edit", img), &[], "out.jpg"));
    assert!(e.contains("out.jpg") && e.contains(".png"), "{e}");
}

/// The library API: one event per step of the run (not per resampling attempt), indices from 0
/// and the run's own total; SDEdit reports only the steps it takes.
fn events_per_step<B: stepwise::Backend>(b: &B) {
    use stepwise::model::loader::{load_unet_files, DirSource};
    use stepwise::model::UNet2DModel;
    use stepwise::pipeline::{Control, NoiseSource};
    use stepwise::sampler::{self, SamplerKind, SchedulerConfig};

    let files = load_unet_files(&DirSource(
        root().join("tests/fixtures/unet/attn_multihead"),
    ))
    .unwrap();
    let unet = UNet2DModel::load(b, files.config.clone(), &files.weights).unwrap();
    let x0 = image();
    let shape = [1, 3, 16, 16];
    let noise = NoiseSource::Seeded(4);
    let mut sched = sampler::build(
        SamplerKind::EulerAncestral,
        &SchedulerConfig::default(),
        0.0,
    )
    .unwrap();
    sched.set_timesteps(10).unwrap();
    let mut seen = Vec::new();
    let out = pollster::block_on(edit::img2img(
        b,
        &unet,
        sched.as_mut(),
        &x0,
        shape,
        0.6,
        &noise,
        None,
        |ev| {
            seen.push((ev.index, ev.total, ev.timestep));
            async { Control::Continue }
        },
    ))
    .unwrap();
    let want: Vec<(usize, usize, f32)> = sched.timesteps()[4..]
        .iter()
        .enumerate()
        .map(|(i, &t)| (i, 6, t))
        .collect();
    assert_eq!(seen, want);
    assert_eq!(out.completed_steps, 6);

    let mut sched = sampler::build(SamplerKind::Ddim, &SchedulerConfig::default(), 0.0).unwrap();
    sched.set_timesteps(4).unwrap();
    let mask = edit::Mask::from_values(&half_mask(), &[1, 1, 16, 16], shape).unwrap();
    let settings = edit::Inpaint {
        mask: &mask,
        resample: 3,
        seed: 1,
    };
    let mut events = 0;
    let out = pollster::block_on(edit::inpaint(
        b,
        &unet,
        sched.as_mut(),
        &x0,
        shape,
        &settings,
        &noise,
        None,
        |ev| {
            assert_eq!((ev.index, ev.total), (events, 4));
            events += 1;
            async { Control::Continue }
        },
    ))
    .unwrap();
    assert_eq!((events, out.completed_steps), (4, 4));
}

#[test]
fn one_event_per_step_on_cpu() {
    events_per_step(&stepwise::cpu::CpuBackend);
}

#[test]
fn one_event_per_step_on_gpu() {
    events_per_step(&common::gpu());
}
