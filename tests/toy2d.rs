//! The 2D toys (`src/toy2d/`): the exact mixture ε, sampled with the real samplers, must land on
//! the mixture (moments and per-component mass); the exact ε must be the gradient of the noised
//! log density; the shipped MLPs must decode, match PyTorch's forward, and sample onto their data.
//!
//! Tolerances are stated next to each check, with the measured values they were set from (about
//! three to five standard errors of the Monte Carlo estimate plus the sampler's discretisation
//! error). Each moment test also runs a deliberately wrong model (ε̂ scaled by 0.8) and requires
//! it to fail the same tolerance, so the tolerance is known to catch a wrong score.

use std::path::PathBuf;

use stepwise::sampler::{build, SamplerKind, Scheduler, SchedulerConfig};
use stepwise::toy2d::{
    alpha_bar_at, default_scheduler_config, mean_nearest_distance, run, vector_field, DataConfig,
    EpsModel, ExactEps, Field, GaussianMixture, Grid, Mlp, Toy2dConfig,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sched(kind: SamplerKind, config: &SchedulerConfig, eta: f32) -> Box<dyn Scheduler> {
    build(kind, config, eta).unwrap()
}

fn exact(kind: SamplerKind) -> ExactEps {
    ExactEps {
        mixture: GaussianMixture::page_default(),
        alphas_cumprod: sched(kind, &default_scheduler_config(), 0.0)
            .alphas_cumprod()
            .to_vec(),
    }
}

/// Sample mean and covariance of flat N×2 points, in f64.
fn moments(x: &[f32]) -> ([f64; 2], [[f64; 2]; 2]) {
    let n = (x.len() / 2) as f64;
    let mut m = [0.0; 2];
    for p in x.chunks_exact(2) {
        m[0] += f64::from(p[0]) / n;
        m[1] += f64::from(p[1]) / n;
    }
    let mut c = [[0.0; 2]; 2];
    for p in x.chunks_exact(2) {
        let d = [f64::from(p[0]) - m[0], f64::from(p[1]) - m[1]];
        for i in 0..2 {
            for j in 0..2 {
                c[i][j] += d[i] * d[j] / (n - 1.0);
            }
        }
    }
    (m, c)
}

/// The largest |difference| of the means and of the covariance entries.
fn moment_errors(x: &[f32], mean: [f64; 2], cov: [[f64; 2]; 2]) -> (f64, f64) {
    let (m, c) = moments(x);
    let dm = (m[0] - mean[0]).abs().max((m[1] - mean[1]).abs());
    let dc = (0..4)
        .map(|k| (c[k / 2][k % 2] - cov[k / 2][k % 2]).abs())
        .fold(0.0, f64::max);
    (dm, dc)
}

/// The fraction of points assigned to each component.
fn masses(mix: &GaussianMixture, x: &[f32]) -> Vec<f64> {
    let a = mix.assign(x);
    let mut f = vec![0.0; mix.components.len()];
    for k in &a {
        f[*k] += 1.0 / a.len() as f64;
    }
    f
}

/// ε̂ scaled by `k`: a wrong model the tolerances must reject.
struct Scaled<'a>(&'a dyn EpsModel, f32);

impl EpsModel for Scaled<'_> {
    fn eps(&self, x: &[f32], t: f32) -> Vec<f32> {
        self.0.eps(x, t).into_iter().map(|v| v * self.1).collect()
    }
}

const PARTICLES: usize = 16_000;

/// What a sampled cloud must satisfy: (mean error, covariance error, mass error) tolerances.
struct Tolerance {
    mean: f64,
    cov: f64,
    mass: f64,
}

/// Samples the mixture with `kind` in `steps` steps and returns the three errors against the
/// analytic moments and the reference masses (those of 200 000 exact draws, assigned the same
/// way, so that overlap between components does not count as an error).
fn mixture_errors(
    kind: SamplerKind,
    eta: f32,
    steps: usize,
    model: &dyn EpsModel,
    seed: u64,
) -> [f64; 3] {
    let mix = GaussianMixture::page_default();
    let s = sched(kind, &default_scheduler_config(), eta);
    let paths = run(model, s, steps, PARTICLES, seed).unwrap();
    let x = paths.xs.last().unwrap();
    assert_eq!(paths.xs.len(), paths.timesteps.len() + 1);
    assert_eq!(paths.x0s.len(), paths.timesteps.len());
    assert!(x.iter().all(|v| v.is_finite()), "{kind}: non-finite sample");
    let (dm, dc) = moment_errors(x, mix.mean(), mix.covariance());
    let reference = masses(&mix, &mix.sample(200_000, 99));
    let got = masses(&mix, x);
    let dw = got
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!(
        "{kind} η={eta} {steps} steps: |Δmean| {dm:.4}, |Δcov| {dc:.4}, |Δmass| {dw:.4} \
         (masses {got:.3?} vs {reference:.3?})"
    );
    [dm, dc, dw]
}

fn check(kind: SamplerKind, eta: f32, steps: usize, tol: &Tolerance) {
    let model = exact(kind);
    let [dm, dc, dw] = mixture_errors(kind, eta, steps, &model, 7);
    assert!(
        dm < tol.mean,
        "{kind}: mean off by {dm} (tolerance {})",
        tol.mean
    );
    assert!(
        dc < tol.cov,
        "{kind}: covariance off by {dc} (tolerance {})",
        tol.cov
    );
    assert!(
        dw < tol.mass,
        "{kind}: a component's mass is off by {dw} (tolerance {})",
        tol.mass
    );
    // The same run with ε̂ × 0.8 (a score 20 % too weak) must fail, or the test proves nothing.
    let wrong = Scaled(&model, 0.8);
    let [wm, wc, ww] = mixture_errors(kind, eta, steps, &wrong, 7);
    assert!(
        wm >= tol.mean || wc >= tol.cov || ww >= tol.mass,
        "{kind}: a wrong score passed too ({wm}, {wc}, {ww})"
    );
}

// The mixture's variances are 1.3 and 1.6, so with 16 000 particles one standard error is
// ≈ 0.01 for a mean, ≈ 0.015 for a covariance entry and ≈ 0.003 for a mass of 0.2.
//
// At 50 steps the samplers are not yet converged: all of them come out slightly too narrow
// (measured over seeds 7, 11, 13 at 8000 particles: Δvariance −0.03 to −0.07 for DDIM, −0.06 to
// −0.10 for DDPM and Euler-a), a deficit that goes to the noise floor with more steps (DDIM at
// 200 steps, DDPM at 250: |Δcov| ≤ 0.04). So the tight tolerances are checked at 200/250 steps,
// and 50 steps gets a covariance tolerance that admits the discretisation error.
//
// Measured (seed 7, 16 000 particles), |Δmean| / |Δcov| / |Δmass|:
//   DDIM η=0  50 steps 0.025 / 0.045 / 0.011,   200 steps 0.028 / 0.011 / 0.008;
//   DDPM      50 steps 0.011 / 0.077 / 0.010,   250 steps 0.012 / 0.020 / 0.007;
//   the ε̂ × 0.8 model: |Δcov| 0.19 to 2.2, |Δmass| 0.025 to 0.079 (rejected every time).
const TIGHT: Tolerance = Tolerance {
    mean: 0.04,
    cov: 0.05,
    mass: 0.012,
};

const FIFTY_STEPS: Tolerance = Tolerance {
    mean: 0.04,
    cov: 0.12,
    mass: 0.02,
};

#[test]
fn exact_score_ddim_eta0_lands_on_the_mixture() {
    check(SamplerKind::Ddim, 0.0, 50, &FIFTY_STEPS);
    check(SamplerKind::Ddim, 0.0, 200, &TIGHT);
}

#[test]
fn exact_score_ddpm_lands_on_the_mixture() {
    check(SamplerKind::Ddpm, 1.0, 50, &FIFTY_STEPS);
    check(SamplerKind::Ddpm, 1.0, 250, &TIGHT);
}

/// Every sampler (new ones included, through `SamplerKind::ALL`), σ-space ones too: with a
/// perfect model, 50 steps of any of them must produce the mixture. Measured (seed 11): ddim
/// 0.012 / 0.055 / 0.009, ddpm 0.029 / 0.096 / 0.009, dpm++2m 0.015 / 0.005 / 0.005, euler-a
/// 0.027 / 0.097 / 0.008 (euler-a is DDPM's ancestral step in σ space, and measures the same);
/// the higher-order ones (dpm++2m, dpm++2s, dpm++2m-sde, unipc, deis, heun, lms, pndm) all
/// ≤ 0.016 / 0.017 / 0.006.
#[test]
fn every_sampler_lands_on_the_mixture() {
    let tol = Tolerance {
        mean: 0.05,
        cov: 0.15,
        mass: 0.025,
    };
    let mut failures = Vec::new();
    for kind in SamplerKind::ALL {
        let model = exact(kind);
        let [dm, dc, dw] = mixture_errors(kind, 0.0, 50, &model, 11);
        if dm >= tol.mean || dc >= tol.cov || dw >= tol.mass {
            failures.push(format!(
                "{kind}: Δmean {dm:.4}, Δcov {dc:.4}, Δmass {dw:.4}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "off the mixture:\n{}",
        failures.join("\n")
    );
}

#[test]
fn exact_eps_is_minus_sigma_times_the_gradient_of_log_p_t() {
    let mix = GaussianMixture::page_default();
    let h = 1e-5;
    let mut worst = 0.0f64;
    for &alpha_bar in &[0.9999, 0.98, 0.7, 0.3, 0.05, 4e-5] {
        for &x in &[
            [0.0, 0.0],
            [-1.4, 1.0],
            [1.8, -0.9],
            [0.3, -1.6],
            [3.5, 3.0],
            [-0.7, 0.2],
        ] {
            let lp = |dx: f64, dy: f64| mix.log_density([x[0] + dx, x[1] + dy], alpha_bar);
            let fd = [
                (lp(h, 0.0) - lp(-h, 0.0)) / (2.0 * h),
                (lp(0.0, h) - lp(0.0, -h)) / (2.0 * h),
            ];
            let s = (1.0 - alpha_bar).sqrt();
            let eps = mix.eps(&[x[0] as f32, x[1] as f32], alpha_bar);
            let score = mix.score(x, alpha_bar);
            for i in 0..2 {
                // The analytic score against the finite difference (f64), relative to its size.
                let rel = (score[i] - fd[i]).abs() / fd[i].abs().max(1.0);
                worst = worst.max(rel);
                // ε̂ = −√(1−ᾱ)·∇ln p_t (in f32).
                let want = -s * fd[i];
                assert!(
                    (f64::from(eps[i]) - want).abs() < 1e-4 * want.abs().max(1.0),
                    "ᾱ {alpha_bar}, x {x:?}: ε̂ {} vs −√(1−ᾱ)∇ln p {want}",
                    eps[i]
                );
            }
        }
    }
    // Central differences with h = 1e-5 on an O(1)-curvature function: error ≈ 1e-9.
    println!("worst relative score error vs finite differences: {worst:.2e}");
    assert!(worst < 1e-6, "score vs finite difference: {worst}");
}

#[test]
fn exact_eps_at_the_end_is_almost_the_noise() {
    // At ᾱ_T ≈ 4e-5 p_T is N(0, I) to within √ᾱ_T·|μ| ≈ 0.01, so ε̂(x) ≈ x.
    let model = exact(SamplerKind::Ddpm);
    let x = [0.5f32, -1.2, 2.0, 0.1];
    let e = model.eps(&x, 999.0);
    for (a, b) in e.iter().zip(&x) {
        assert!((a - b).abs() < 0.03, "ε̂ {e:?} vs x {x:?}");
    }
    // Fractional t sits between its neighbours.
    let a = &model.alphas_cumprod;
    let mid = alpha_bar_at(a, 500.5);
    assert!(mid < f64::from(a[500]) && mid > f64::from(a[501]));
}

fn load(name: &str) -> (Toy2dConfig, Mlp, SchedulerConfig) {
    let dir = root().join("assets/toy2d").join(name);
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let config = Toy2dConfig::from_json(&text, "config.json").unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let mlp = Mlp::from_safetensors(&bytes, &config.model, "model.safetensors").unwrap();
    let sched = SchedulerConfig::from_file(dir.join("scheduler_config.json")).unwrap();
    (config, mlp, sched)
}

#[test]
fn shipped_weights_decode_into_the_architecture() {
    for name in ["moons", "swiss_roll"] {
        let dir = root().join("assets/toy2d").join(name);
        for f in ["config.json", "model.safetensors", "scheduler_config.json"] {
            let size = std::fs::metadata(dir.join(f)).unwrap().len();
            assert!(
                size < 300_000,
                "{name}/{f} is {size} bytes (commit-sized: < 300 KB)"
            );
        }
        let (config, mlp, sched) = load(name);
        assert_eq!(config.model.hidden, [128, 128, 128]);
        // [2 + 32 → 128] + 2 × [128 → 128] + [128 → 2], weights and biases.
        let want = (34 * 128 + 128) + 2 * (128 * 128 + 128) + (128 * 2 + 2);
        assert_eq!(mlp.parameters(), want, "{name}");
        // The schedule the Rust samplers derive is the one training used.
        let beta = sched.beta_config().unwrap();
        assert_eq!(beta.num_train_timesteps, 1000);
        assert_eq!(
            sched.clip_sample,
            Some(false),
            "{name}: x̂₀ clipping would cut the data"
        );
        let ours = build(SamplerKind::Ddpm, &default_scheduler_config(), 0.0).unwrap();
        let theirs = build(SamplerKind::Ddpm, &sched, 0.0).unwrap();
        assert_eq!(ours.alphas_cumprod(), theirs.alphas_cumprod());
        assert_eq!(config.data.label().replace(' ', "_"), name);
    }
}

#[derive(serde::Deserialize)]
struct Stats {
    mean: [f64; 2],
    cov: [[f64; 2]; 2],
}

#[derive(serde::Deserialize)]
struct Fixture {
    model: String,
    inputs: Vec<[f32; 3]>,
    outputs: Vec<[f32; 2]>,
    data_stats: std::collections::BTreeMap<String, Stats>,
}

fn fixture() -> Fixture {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/toy2d/mlp_forward.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn mlp_forward_matches_pytorch() {
    let f = fixture();
    let name = f.model.rsplit('/').next().unwrap();
    let (_, mlp, _) = load(name);
    let mut worst = 0.0f32;
    for (inp, want) in f.inputs.iter().zip(&f.outputs) {
        let got = mlp.forward(&inp[..2], &[inp[2]]);
        for (g, w) in got.iter().zip(want) {
            let err = (g - w).abs() / w.abs().max(1.0);
            worst = worst.max(err);
            assert!(
                err < 1e-4,
                "input {inp:?}: Rust {got:?} vs PyTorch {want:?}"
            );
        }
    }
    println!("worst relative difference from PyTorch: {worst:.2e}");
    // The batched path (one t per point) gives the same numbers.
    let x: Vec<f32> = f.inputs.iter().flat_map(|i| [i[0], i[1]]).collect();
    let t: Vec<f32> = f.inputs.iter().map(|i| i[2]).collect();
    let batched = mlp.forward(&x, &t);
    for (k, inp) in f.inputs.iter().enumerate() {
        assert_eq!(
            &batched[2 * k..2 * k + 2],
            &mlp.forward(&inp[..2], &[inp[2]])[..]
        );
    }
}

#[test]
fn rust_data_generators_match_python() {
    // Python's moments are from 10⁶ points; these from 2·10⁵, whose standard error is ≈ 0.0023
    // for a mean and ≈ 0.004 for a covariance entry. Measured: ≤ 0.004 on every moment.
    let f = fixture();
    for name in ["moons", "swiss_roll"] {
        let (config, _, _) = load(name);
        let x = config.data.sample(200_000, 5);
        let s = &f.data_stats[name];
        let (dm, dc) = moment_errors(&x, s.mean, s.cov);
        println!("{name}: data moments vs Python: |Δmean| {dm:.4}, |Δcov| {dc:.4}");
        assert!(dm < 0.012 && dc < 0.02, "{name}: Δmean {dm}, Δcov {dc}");
    }
}

/// The trained MLP's samples lie on the data, and cover it: mean distance from each sample to
/// the nearest of 20 000 real points, and from 2000 real points to the nearest sample.
fn trained_lands_on_data(name: &str, kind: SamplerKind, tol: f64) {
    let (config, mlp, sched_config) = load(name);
    let s = build(kind, &sched_config, 0.0).unwrap();
    let paths = run(&mlp, s, 50, 2000, 3).unwrap();
    let fake = paths.xs.last().unwrap();
    let real = config.data.sample(20_000, 4);
    let to_real = mean_nearest_distance(fake, &real);
    let to_fake = mean_nearest_distance(&real[..4000], fake);
    let (_, cov) = moments(&real);
    let spread = (cov[0][0] + cov[1][1]).sqrt();
    println!(
        "{name} {kind}: sample→data {to_real:.4}, data→sample {to_fake:.4}, spread {spread:.2}"
    );
    assert!(
        to_real < tol,
        "{name} {kind}: samples are {to_real} from the data (tolerance {tol})"
    );
    assert!(
        to_fake < 2.0 * tol,
        "{name} {kind}: data are {to_fake} from the samples"
    );
    // Pure noise, for scale: far outside the tolerance.
    let noise = stepwise::noise::randn(3, 0, 4000);
    assert!(mean_nearest_distance(&noise, &real) > 5.0 * tol);
}

// Measured: moons DDIM sample→data 0.0094, data→sample 0.018; Euler-a 0.0093 / 0.020;
// swiss roll DDIM 0.012 / 0.023. The spread (√ trace of the covariance) is 1.20 and 1.44.
#[test]
fn trained_moons_sample_onto_the_moons() {
    trained_lands_on_data("moons", SamplerKind::Ddim, 0.03);
    // σ space: the model sees scale_model_input's x/√(σ²+1).
    trained_lands_on_data("moons", SamplerKind::EulerAncestral, 0.03);
}

#[test]
fn trained_swiss_roll_samples_onto_the_roll() {
    trained_lands_on_data("swiss_roll", SamplerKind::Ddim, 0.04);
}

#[test]
fn vector_field_points_at_the_data() {
    // At small t, x̂₀ − x at a point just off a component's mean points back towards it.
    let model = exact(SamplerKind::Ddim);
    let t = 50.0;
    let ab = alpha_bar_at(&model.alphas_cumprod, t) as f32;
    let grid = Grid {
        min: [1.6, -1.1],
        max: [2.0, -0.7],
        nx: 2,
        ny: 2,
    };
    let v = vector_field(&model, Field::X0MinusX, t, ab, &grid);
    let p = grid.points();
    let mu = [1.8 * ab.sqrt(), -0.9 * ab.sqrt()];
    for k in 0..4 {
        let to_mean = [mu[0] - p[2 * k], mu[1] - p[2 * k + 1]];
        let dot = v[2 * k] * to_mean[0] + v[2 * k + 1] * to_mean[1];
        assert!(
            dot > 0.0,
            "point {k}: {:?} does not point at the mean",
            &v[2 * k..2 * k + 2]
        );
    }
    // ε̂ points the other way (x̂₀ − x ∝ −ε̂ up to the (1 − √ᾱ)x shrink, tiny at t = 50).
    let e = vector_field(&model, Field::Eps, t, ab, &grid);
    for k in 0..4 {
        assert!(e[2 * k] * v[2 * k] + e[2 * k + 1] * v[2 * k + 1] < 0.0);
    }
}

#[test]
fn the_same_seed_gives_every_sampler_the_same_start() {
    let model = exact(SamplerKind::Ddim);
    let a = run(
        &model,
        sched(SamplerKind::Ddim, &default_scheduler_config(), 0.0),
        10,
        64,
        5,
    )
    .unwrap();
    let b = run(
        &model,
        sched(SamplerKind::Ddpm, &default_scheduler_config(), 1.0),
        10,
        64,
        5,
    )
    .unwrap();
    assert_eq!(a.xs[0], b.xs[0]);
    assert_ne!(a.xs.last(), b.xs.last());
    let _ = DataConfig::Mixture(GaussianMixture::page_default()).sample(4, 1);
}
