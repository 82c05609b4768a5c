//! The denoising loop end to end through `diffuse sample`: golden loops from diffusers with
//! injected noise (tests/fixtures/pipeline, made by make_pipeline_fixtures.py there) on both
//! backends, the visited timesteps, and seeded determinism.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use stepwise::io::{read_tensors, rel_l2};
use stepwise::sampler::{self, SchedulerConfig};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/pipeline"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").exists())
        .collect();
    v.sort();
    assert!(v.len() >= 16, "expected 16 golden loops, found {}", v.len());
    v
}

fn case_args(dir: &Path) -> (Vec<String>, Vec<f32>) {
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let args = case["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let ts = case["timesteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap() as f32)
        .collect();
    (args, ts)
}

fn diffuse(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

fn sample_to(args: &[String], out: &Path, extra: &[&str]) -> Vec<f32> {
    let mut all = vec!["sample".to_string()];
    all.extend_from_slice(args);
    all.extend(["--output".into(), out.display().to_string()]);
    all.extend(extra.iter().map(|s| s.to_string()));
    let o = diffuse(&all);
    assert!(
        o.status.success(),
        "diffuse sample {all:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    read_tensors(&std::fs::read(out).unwrap(), "out").unwrap()["sample"].to_f32()
}

fn golden(device: &str, tol: f64) {
    let tmp =
        std::env::temp_dir().join(format!("stepwise-pipeline-{}-{device}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for dir in cases() {
        let (args, _) = case_args(&dir);
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let noise = dir.join("noise.safetensors").display().to_string();
        let got = sample_to(
            &args,
            &tmp.join(format!("{name}.safetensors")),
            &["--noise", &noise, "--device", device],
        );
        let want = read_tensors(
            &std::fs::read(dir.join("expected.safetensors")).unwrap(),
            "expected",
        )
        .unwrap()["sample"]
            .to_f32();
        let err = rel_l2(&got, &want);
        eprintln!("{device} {name}: rel L2 {err:e}");
        assert!(
            err <= tol,
            "{name} on {device}: relative L2 {err:e} > {tol:e}"
        );
    }
}

#[test]
fn golden_loops_on_cpu() {
    golden("cpu", 1e-3);
}

#[test]
fn golden_loops_on_gpu() {
    common::gpu();
    golden("gpu", 1e-3);
}

#[test]
fn visited_timesteps_equal_diffusers() {
    for dir in cases() {
        let (args, want) = case_args(&dir);
        let get = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .map(|i| args[i + 1].clone())
        };
        let model = root().join(get("--model").unwrap());
        let sched_path = model.join("scheduler/scheduler_config.json");
        let cfg = if sched_path.exists() {
            SchedulerConfig::from_file(&sched_path).unwrap()
        } else {
            SchedulerConfig::default()
        };
        let mut s = sampler::build(get("--sampler").unwrap().parse().unwrap(), &cfg, 0.0).unwrap();
        s.set_timesteps(get("--steps").unwrap().parse().unwrap())
            .unwrap();
        assert_eq!(s.timesteps(), &want[..], "{}", dir.display());
    }
}

#[test]
fn same_seed_same_image_and_different_seed_different_image() {
    let tmp = std::env::temp_dir().join(format!("stepwise-seed-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let base: Vec<String> = [
        "--model",
        "tests/fixtures/unet/attn_multihead",
        "--sampler",
        "euler-a",
        "--steps",
        "4",
    ]
    .map(String::from)
    .to_vec();
    let run = |seed: &str, name: &str| {
        let mut a = base.clone();
        a.extend([
            "--seed".into(),
            seed.into(),
            "--device".into(),
            "cpu".into(),
        ]);
        sample_to(&a, &tmp.join(name), &[])
    };
    let a = run("7", "a.safetensors");
    let b = run("7", "b.safetensors");
    let c = run("8", "c.safetensors");
    assert_eq!(a, b, "the same seed gave different samples");
    assert!(
        rel_l2(&a, &c) > 0.1,
        "different seeds gave (nearly) the same sample"
    );
    // The GPU backend starts from the bit-identical noise and lands on the same image.
    common::gpu();
    let mut g = base.clone();
    g.extend(["--seed".into(), "7".into(), "--device".into(), "gpu".into()]);
    let gpu = sample_to(&g, &tmp.join("g.safetensors"), &[]);
    let err = rel_l2(&gpu, &a);
    assert!(
        err <= 1e-3,
        "CPU and GPU runs of one seed differ: relative L2 {err:e}"
    );
}

#[test]
fn writes_png_grid_and_frames() {
    let tmp = std::env::temp_dir().join(format!("stepwise-png-{}", std::process::id()));
    let frames = tmp.join("frames");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = tmp.join("grid.png");
    let args: Vec<String> = [
        "--model",
        "tests/fixtures/unet/class_scale_shift",
        "--sampler",
        "ddim",
        "--steps",
        "3",
        "--class",
        "4",
        "--batch",
        "4",
        "--device",
        "cpu",
        "--output",
    ]
    .map(String::from)
    .into_iter()
    .chain([
        out.display().to_string(),
        "--frames".into(),
        frames.display().to_string(),
    ])
    .collect();
    let mut full = vec!["sample".to_string()];
    full.extend(args);
    let o = diffuse(&full);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = image::open(&out).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (2 * 16 + 2, 2 * 16 + 2),
        "a 2x2 grid of 16x16 samples with 2-pixel gaps"
    );
    let n = std::fs::read_dir(&frames).unwrap().count();
    assert_eq!(n, 3, "one frame per step");
    let f = image::open(frames.join("step_0000.png")).unwrap();
    assert_eq!(f.width(), 2 * (2 * 16 + 2) + 4, "x_t beside x̂0");
}

#[test]
fn bad_sampler_arguments_are_named() {
    let run = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "sample",
            "--model",
            "tests/fixtures/unet/class_scale_shift",
            "--output",
            "/tmp/x.png",
            "--device",
            "cpu",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        let o = diffuse(&a);
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let e = run(&["--sampler", "ddim", "--steps", "5"]);
    assert!(
        e.contains("--class") && e.contains("class-conditional"),
        "{e}"
    );
    let e = run(&["--sampler", "ddim", "--steps", "0", "--class", "1"]);
    assert!(e.contains("0") && !e.contains("panicked"), "{e}");
    let e = run(&["--sampler", "ddpm", "--steps", "1001", "--class", "1"]);
    assert!(e.contains("1001") && !e.contains("panicked"), "{e}");
}

#[test]
fn a_run_takes_repeated_timesteps_in_order() {
    // Karras σ's on a cosine schedule repeat the first timestep (998 four times at 8 steps).
    // diffusers' DPM-Solver finds its first step index from that timestep, takes the second
    // repeat and runs off the end; a run from noise starts at index 0 and takes all 8 steps.
    let config = r#"{"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "squaredcos_cap_v2",
        "use_karras_sigmas": true, "euler_at_final": true, "solver_type": "heun"}"#;
    let mut s = sampler::build(
        sampler::SamplerKind::DpmSolverMultistep,
        &SchedulerConfig::from_json_str(config).unwrap(),
        0.0,
    )
    .unwrap();
    s.set_timesteps(8).unwrap();
    let ts = s.timesteps().to_vec();
    assert!(
        ts[0] == ts[1],
        "the schedule no longer repeats a timestep: {ts:?}"
    );

    let tmp = std::env::temp_dir().join(format!("stepwise-repeat-{}", std::process::id()));
    let model = tmp.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        let from = root().join("tests/fixtures/unet/attn_multihead").join(f);
        std::fs::copy(from, model.join(f)).unwrap();
    }
    std::fs::write(model.join("scheduler_config.json"), config).unwrap();
    let frames = tmp.join("frames");
    let args: Vec<String> = ["--sampler", "dpm++2m", "--steps", "8", "--device", "cpu"]
        .map(String::from)
        .into_iter()
        .chain(["--model".into(), model.display().to_string()])
        .chain(["--frames".into(), frames.display().to_string()])
        .collect();
    let x = sample_to(&args, &tmp.join("out.safetensors"), &[]);
    assert!(x.iter().all(|v| v.is_finite()));
    assert_eq!(
        std::fs::read_dir(&frames).unwrap().count(),
        8,
        "one frame per step"
    );
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn sampler_options_and_longer_timestep_lists() {
    let tmp = std::env::temp_dir().join(format!("stepwise-options-{}", std::process::id()));
    let frames = tmp.join("frames");
    std::fs::create_dir_all(&tmp).unwrap();
    let base = |sampler: &str, steps: &str| -> Vec<String> {
        [
            "--model",
            "tests/fixtures/unet/attn_multihead",
            "--sampler",
            sampler,
            "--steps",
            steps,
            "--device",
            "cpu",
            "--seed",
            "3",
        ]
        .map(String::from)
        .to_vec()
    };
    // Heun: 3 steps are 5 model calls, 5 step events and 5 frames.
    let mut a = base("heun", "3");
    a.extend(["--frames".into(), frames.display().to_string()]);
    let x = sample_to(&a, &tmp.join("heun.safetensors"), &[]);
    assert!(x.iter().all(|v| v.is_finite()));
    assert_eq!(
        std::fs::read_dir(&frames).unwrap().count(),
        5,
        "one frame per call"
    );
    // Options change the run.
    let plain = sample_to(&base("unipc", "6"), &tmp.join("a.safetensors"), &[]);
    let mut a = base("unipc", "6");
    a.extend(
        [
            "--solver-order",
            "3",
            "--solver-type",
            "bh1",
            "--karras",
            "--spacing",
            "trailing",
            "--zero-snr",
        ]
        .map(String::from),
    );
    let tuned = sample_to(&a, &tmp.join("b.safetensors"), &[]);
    assert!(tuned.iter().all(|v| v.is_finite()));
    assert!(rel_l2(&plain, &tuned) > 1e-3, "the options changed nothing");
    // Options a class does not have are refused by name.
    for (sampler, extra, words) in [
        ("pndm", vec!["--karras"], ["--karras", "use_karras_sigmas"]),
        (
            "heun",
            vec!["--zero-snr"],
            ["--zero-snr", "rescale_betas_zero_snr"],
        ),
        (
            "dpm++2s",
            vec!["--spacing", "leading"],
            ["--spacing", "timestep_spacing"],
        ),
        (
            "ddim",
            vec!["--solver-order", "2"],
            ["--solver-order", "solver_order"],
        ),
        (
            "dpm++2m",
            vec!["--solver-type", "bh2"],
            ["bh2", "midpoint, heun"],
        ),
    ] {
        let mut a = vec!["sample".to_string()];
        a.extend(base(sampler, "4"));
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(["--output".into(), tmp.join("x.png").display().to_string()]);
        let o = diffuse(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{sampler} {extra:?} ran");
        for w in words {
            assert!(
                err.contains(w) && !err.contains("panicked"),
                "{sampler}: {err}"
            );
        }
    }
    std::fs::remove_dir_all(&tmp).ok();
}
