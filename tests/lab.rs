//! The sampler lab: the Rust classifier and FID against PyTorch and training/evaluate.py
//! (tests/fixtures/lab, made by make_eval_fixtures.py there), and `diffuse sweep` / `diffuse eval`
//! end to end on the shipped Fashion-MNIST model, on the CPU and the GPU backend.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::SafeTensors;
use serde_json::Value;
use stepwise::lab::eval::{frechet, mean_cov, Classifier, HeldOut};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f64>) {
    let v = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let data = match v.dtype() {
        safetensors::Dtype::F32 => v
            .data()
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        safetensors::Dtype::F64 => v
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        d => panic!("{name}: dtype {d:?}"),
    };
    (v.shape().to_vec(), data)
}

#[test]
fn classifier_matches_pytorch() {
    let bytes = std::fs::read(root().join("tests/fixtures/lab/eval.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for dataset in ["fashion", "emoji"] {
        let clf =
            Classifier::load(&root().join(format!("training/classifier/{dataset}.safetensors")))
                .unwrap();
        let (shape, images) = fixture(&st, &format!("{dataset}.images"));
        let images: Vec<f32> = images.iter().map(|&x| x as f32).collect();
        let shape: [usize; 4] = shape.try_into().unwrap();
        let feats = clf.features(&images, shape).unwrap();
        let logits = clf.logits(&feats);
        for (what, ours, theirs) in [
            (
                "features",
                feats,
                fixture(&st, &format!("{dataset}.features")).1,
            ),
            (
                "logits",
                logits,
                fixture(&st, &format!("{dataset}.logits")).1,
            ),
        ] {
            assert_eq!(ours.len(), theirs.len(), "{dataset} {what}");
            let scale = theirs.iter().fold(0f64, |m, v| m.max(v.abs()));
            let worst = ours
                .iter()
                .zip(&theirs)
                .fold(0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
            eprintln!("{dataset} {what}: max |Δ| {worst:.2e} of max |x| {scale:.2}");
            assert!(worst <= 1e-4 * scale.max(1.0), "{dataset} {what}: {worst}");
        }
        assert_eq!(clf.classes.len(), 10);
    }
}

#[test]
fn fid_matches_evaluate_py() {
    let bytes = std::fs::read(root().join("tests/fixtures/lab/eval.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (sa, a) = fixture(&st, "fid.a");
    let (_, b) = fixture(&st, "fid.b");
    let (_, want) = fixture(&st, "fid.value");
    let d = sa[1];
    let (m1, c1) = mean_cov(&a, d).unwrap();
    let (m2, c2) = mean_cov(&b, d).unwrap();
    let got = frechet(&m1, &c1, &m2, &c2);
    eprintln!("FID {got} vs evaluate.py {}", want[0]);
    assert!(
        (got - want[0]).abs() <= 1e-9 * want[0].abs(),
        "{got} vs {}",
        want[0]
    );
    // A set against itself is 0.
    assert!(frechet(&m1, &c1, &m1, &c1).abs() < 1e-8);
    // Too few samples is an error, not a NaN.
    assert!(mean_cov(&a[..d], d).is_err());
}

#[test]
fn held_out_stats_load() {
    let h = HeldOut::load(&root().join("training/classifier/fashion.safetensors")).unwrap();
    assert_eq!(
        (h.mean.len(), h.cov.len(), h.count),
        (128, 128 * 128, 10_000)
    );
    // The card's floor at n = 200 (assets/models/fashion/sampler_table.json).
    assert!((h.floors[&200] - 4.1548).abs() < 1e-3, "{:?}", h.floors);
}

fn diffuse() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_diffuse"))
}

fn sweep(device: &str, samplers: &str, steps: &str, reference_steps: &str, out: &Path) -> Value {
    let o = Command::new(diffuse())
        .current_dir(root())
        .args([
            "sweep",
            "--model",
            "assets/models/fashion",
            "--samplers",
            samplers,
            "--steps",
            steps,
            "--reference-steps",
            reference_steps,
            "--seed",
            "3",
            "--paths",
            "2",
            "--device",
            device,
            "--output",
        ])
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "diffuse sweep failed");
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

fn medians(v: &Value, sampler: &str) -> Vec<(u64, f64)> {
    let s = v["summary"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sampler"] == sampler)
        .unwrap_or_else(|| panic!("no {sampler} in the summary"));
    s["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["steps"].as_u64().unwrap(), p["median"].as_f64().unwrap()))
        .collect()
}

#[test]
fn sweep_converges_on_the_cpu() {
    let tmp = std::env::temp_dir().join(format!("stepwise-lab-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let png = tmp.join("grid.png");
    let out = tmp.join("sweep.json");
    let o = Command::new(diffuse())
        .current_dir(root())
        .args([
            "sweep",
            "--model",
            "assets/models/fashion",
            "--samplers",
            "ddim,ddpm,dpm++2m",
            "--steps",
            "5,10,20,50",
            "--reference-steps",
            "250",
            "--seed",
            "3",
            "--paths",
            "2",
            "--device",
            "cpu",
            "--output",
        ])
        .arg(&out)
        .arg("--png")
        .arg(&png)
        .output()
        .unwrap();
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success());
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["summary"].as_array().unwrap().len(), 3);
    // DDIM η=0 approaches the fine DDIM run: the error falls with every step count, by a lot.
    let ddim = medians(&v, "ddim");
    assert!(
        ddim.windows(2).all(|w| w[1].1 < w[0].1),
        "DDIM η=0 error does not fall with steps: {ddim:?}"
    );
    assert!(ddim[3].1 < ddim[0].1 / 4.0, "{ddim:?}");
    // So does DPM-Solver++ (2M), to within the gap between its ODE and DDIM's with clipped x̂0
    // (this model's default).
    let dpm = medians(&v, "dpm++2m");
    assert!(dpm[3].1 < dpm[0].1 / 4.0, "{dpm:?}");
    // DDPM draws another image on each noise path: two paths per step count, and it never
    // approaches the deterministic reference the way the ODE solvers do.
    let ddpm_cells: Vec<&Value> = v["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["sampler"] == "ddpm")
        .collect();
    assert_eq!(ddpm_cells.len(), 8);
    let ddpm = medians(&v, "ddpm");
    assert!(
        ddpm[3].1 > 5.0 * ddim[3].1,
        "ddpm {ddpm:?} vs ddim {ddim:?}"
    );
    // An option a sampler's class lacks is refused by name before anything runs.
    let o = Command::new(diffuse())
        .current_dir(root())
        .args([
            "sweep",
            "--model",
            "assets/models/fashion",
            "--samplers",
            "ddim,dpm++2s",
            "--spacing",
            "trailing",
            "--steps",
            "5",
            "--device",
            "cpu",
            "--output",
        ])
        .arg(tmp.join("refused.json"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("spacing") && err.contains("dpm++2s"),
        "{err}"
    );
    let img = image::open(&png).unwrap();
    // 3 samplers × (image row + difference row), 5 columns of 64-pixel tiles.
    assert_eq!((img.width(), img.height()), (5 * 68 + 4, 6 * 68 + 4));
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn sweep_on_the_gpu_matches_the_cpu() {
    let _gpu = common::gpu();
    let tmp = std::env::temp_dir().join(format!("stepwise-lab-gpu-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let cpu = sweep("cpu", "ddim,euler-a", "5,20", "60", &tmp.join("cpu.json"));
    let gpu = sweep("gpu", "ddim,euler-a", "5,20", "60", &tmp.join("gpu.json"));
    let cells = |v: &Value| -> Vec<f64> {
        v["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["rmse"].as_f64().unwrap())
            .collect()
    };
    let (a, b) = (cells(&cpu), cells(&gpu));
    assert_eq!(a.len(), 2 + 4);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 2e-3 + 0.02 * x, "cpu {a:?} vs gpu {b:?}");
    }
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn eval_scores_like_the_card() {
    // 20 samples (2 a class) at 10 steps: a smoke test of the protocol, not a quality bar; the
    // classifier must still recognise most of them (the card: 98.5 % at this setting, n = 200).
    let tmp = std::env::temp_dir().join(format!("stepwise-eval-{}.json", std::process::id()));
    let o = Command::new(diffuse())
        .current_dir(root())
        .args([
            "eval",
            "--model",
            "assets/models/fashion",
            "--sampler",
            "ddim",
            "--steps",
            "10",
            "--n",
            "20",
            "--device",
            "cpu",
            "--output",
        ])
        .arg(&tmp)
        .output()
        .unwrap();
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success());
    let v: Value = serde_json::from_slice(&std::fs::read(&tmp).unwrap()).unwrap();
    assert_eq!(v["n"], 20);
    assert!(v["accuracy"].as_f64().unwrap() >= 0.8, "{v}");
    let fid = v["fid"].as_f64().unwrap();
    assert!(fid.is_finite() && fid > 0.0, "{v}");
    // A model of the wrong dataset for the classifier is refused by name.
    let o = Command::new(diffuse())
        .current_dir(root())
        .args([
            "eval",
            "--model",
            "assets/models/fashion",
            "--classifier",
            "training/classifier/emoji.safetensors",
            "--n",
            "10",
            "--steps",
            "2",
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("channels"), "{err}");
    std::fs::remove_file(&tmp).ok();
}
