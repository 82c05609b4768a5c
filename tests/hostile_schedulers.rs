//! Broken and hostile `scheduler_config.json` files (a model folder from anywhere carries one):
//! every sampler built from them, over a whole run, either refuses with an error that names the
//! problem or runs. Never a panic, and never a hang.

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::{json, Value};
use stepwise::sampler::{build, SamplerKind, SchedulerConfig};

/// Values no config should hold, and edge values a config may hold.
fn hostile_numbers() -> Vec<Value> {
    vec![
        json!(0),
        json!(-1),
        json!(-0.5),
        json!(1e-30),
        json!(1.5),
        json!(2),
        json!(1e30),
        json!(4294967297u64),
        json!("NaN"),
        json!("Infinity"),
        json!("-Infinity"),
    ]
}

fn fields() -> Vec<(&'static str, Vec<Value>)> {
    let mut f: Vec<(&'static str, Vec<Value>)> = [
        "beta_start",
        "beta_end",
        "clip_sample_range",
        "dynamic_thresholding_ratio",
        "sample_max_value",
        "lambda_min_clipped",
    ]
    .into_iter()
    .map(|k| (k, hostile_numbers()))
    .collect();
    f.extend([
        (
            "num_train_timesteps",
            vec![json!(0), json!(1), json!(2), json!(3), json!(100_000_000)],
        ),
        ("steps_offset", vec![json!(-5), json!(999), json!(5000)]),
        ("solver_order", vec![json!(0), json!(4), json!(100)]),
        (
            "trained_betas",
            vec![
                json!([]),
                json!([0.5]),
                json!([0.0, 0.0, 0.0]),
                json!([1.0, 1.0, 1.0, 1.0]),
                json!([-0.5, 0.2, 0.3]),
                json!([2.0, 0.1, 0.1]),
            ],
        ),
        (
            "beta_schedule",
            vec![json!("sigmoid"), json!(""), json!("squaredcos_cap_v2")],
        ),
        (
            "timestep_spacing",
            vec![
                json!("leading"),
                json!("trailing"),
                json!("linspace"),
                json!("x"),
            ],
        ),
        (
            "prediction_type",
            vec![json!("sample"), json!("v_prediction"), json!("flow")],
        ),
        (
            "variance_type",
            vec![
                json!("fixed_large_log"),
                json!("learned"),
                json!("learned_range"),
                json!("fixed_small_log"),
            ],
        ),
    ]);
    f
}

/// The companion flags under which each field's value is actually used.
fn bases() -> Vec<Value> {
    vec![
        json!({}),
        json!({"clip_sample": true, "thresholding": true}),
        json!({"rescale_betas_zero_snr": true, "timestep_spacing": "trailing"}),
        json!({"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": true, "solver_order": 3}),
        json!({"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "num_train_timesteps": 4}),
    ]
}

/// What a run that completed ended on.
struct Completed {
    x: Vec<f32>,
    /// A timestep the schedule holds twice in a row, if any.
    repeated: Option<f32>,
}

/// A full run of `kind` at `steps` steps with a stand-in model; the final sample or the first
/// error.
fn run(config: &SchedulerConfig, kind: SamplerKind, steps: usize) -> Result<Completed, String> {
    let mut s = build(kind, config, 0.7).map_err(|e| e.to_string())?;
    s.set_timesteps(steps).map_err(|e| e.to_string())?;
    s.set_num_images(2);
    let len = 2 * 3 * 4;
    let mut x: Vec<f32> = (0..len)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.4 * s.init_noise_sigma())
        .collect();
    let noise: Vec<f32> = (0..len)
        .map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.5)
        .collect();
    let timesteps = s.timesteps().to_vec();
    let repeated = timesteps.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]);
    for t in timesteps {
        let model_in = s.scale_model_input(&x, t).map_err(|e| e.to_string())?;
        let out: Vec<f32> = model_in.iter().map(|v| 0.9 * v + 0.1).collect();
        x = s
            .step(&out, t, &x, Some(&noise))
            .map_err(|e| e.to_string())?
            .prev_sample;
    }
    Ok(Completed { x, repeated })
}

/// The classes of completed runs known to end on NaN (RELIABILITY.md, "Hostile scheduler
/// configs"): open sampler bugs, each found by this test's finiteness check. In the app the
/// pipeline's non-finite guard stops such a run with a message naming the step. Any other
/// non-finite run fails the test.
fn known_non_finite(
    kind: SamplerKind,
    steps: usize,
    cfg: &Value,
    repeated: Option<f32>,
) -> Option<&'static str> {
    use SamplerKind::*;
    let is = |k: &str, v: Value| cfg.get(k) == Some(&v);
    if repeated.is_some() {
        // diffusers too: DPMSolverMultistepScheduler().set_timesteps(1000) holds t = 500 twice
        // (linspace spacing rounds two points onto it), and the multistep update divides by the
        // zero λ step between them.
        return Some("the schedule repeats a timestep (as many steps as training timesteps)");
    }
    if steps == 1000
        && is("rescale_betas_zero_snr", json!(true))
        && matches!(kind, EulerAncestral | DpmSolverSde | Deis | Lms)
    {
        return Some("zero terminal SNR (σ = ∞ at t = T − 1) stepped at every training timestep");
    }
    if steps == 1000
        && (is("beta_end", json!(0)) || is("beta_end", json!(1e-30)))
        && matches!(kind, Lms | DpmSolverSinglestep | Deis)
    {
        return Some("a β schedule ending at 0: the last training timesteps share one σ");
    }
    if kind == DpmSolverSinglestep && steps == 2 && is("num_train_timesteps", json!(4)) {
        return Some("single-step DPM-Solver, 2 steps of a 4-timestep schedule flattened or clipped by lambda_min_clipped");
    }
    None
}

#[test]
fn hostile_scheduler_configs_never_panic() {
    let mut panics = Vec::new();
    let mut non_finite = Vec::new();
    let mut known_counts = std::collections::BTreeMap::new();
    let mut runs = 0;
    let mut refused = 0;
    for base in bases() {
        for (field, values) in fields() {
            for value in values {
                let mut cfg = base.clone();
                cfg[field] = value.clone();
                let text = cfg
                    .to_string()
                    .replace("\"NaN\"", "NaN")
                    .replace("\"Infinity\"", "Infinity");
                let text = text.replace("\"-Infinity\"", "-Infinity");
                let config = match SchedulerConfig::from_json_str(&text) {
                    Ok(c) => c,
                    Err(e) => {
                        assert!(!e.to_string().is_empty());
                        refused += 1;
                        continue;
                    }
                };
                for kind in SamplerKind::ALL {
                    for steps in [1, 2, 7, 1000] {
                        let result = catch_unwind(AssertUnwindSafe(|| run(&config, kind, steps)));
                        match result {
                            Err(_) => panics.push(format!("{kind:?}, {steps} steps, {text}")),
                            Ok(Err(msg)) => {
                                assert!(!msg.is_empty());
                                refused += 1;
                            }
                            // A run that completes must end on finite values: the sampler either
                            // refuses the config or produces numbers (the page's non-finite guard
                            // is for the model's output, not the sampler's arithmetic).
                            Ok(Ok(done)) => {
                                runs += 1;
                                let bad = done.x.iter().position(|v| !v.is_finite());
                                let known = bad.and_then(|_| {
                                    known_non_finite(kind, steps, &cfg, done.repeated)
                                });
                                if let Some(class) = known {
                                    *known_counts.entry(class).or_insert(0usize) += 1;
                                } else if let Some(i) = bad {
                                    let rep = done
                                        .repeated
                                        .map_or(String::new(), |t| format!(" (repeats t = {t})"));
                                    non_finite.push(format!(
                                        "{kind:?}, {steps} steps{rep}, {text}: x[{i}] = {}",
                                        done.x[i]
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    eprintln!("{runs} runs completed, {refused} refused with an error");
    for (class, n) in &known_counts {
        eprintln!("  {n} completed on NaN, a known class: {class}");
    }
    assert!(
        panics.is_empty(),
        "{} configs panicked:\n{}",
        panics.len(),
        panics.join("\n")
    );
    assert!(
        non_finite.is_empty(),
        "{} of {runs} completed runs ended on non-finite values outside the known classes:\n{}",
        non_finite.len(),
        non_finite.join("\n")
    );
    assert!(
        runs > 100 && refused > 100,
        "runs {runs}, refused {refused}"
    );
}

/// Configs as diffusers saves them for models of other noise processes (google/ncsnpp-*,
/// openai/diffusers-cd_*, EDM and flow-matching models): a β schedule read from them would be the
/// default one, so they are refused by class, naming it; DDPM-family classes are read as before.
#[test]
fn schedulers_of_other_noise_processes_are_named() {
    let other = [
        json!({"_class_name": "ScoreSdeVeScheduler", "num_train_timesteps": 2000,
               "sigma_max": 348.0, "sigma_min": 0.01, "snr": 0.15, "sampling_eps": 1e-5}),
        json!({"_class_name": "CMStochasticIterativeScheduler", "num_train_timesteps": 40,
               "sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5, "s_noise": 1.0,
               "rho": 7.0, "clip_denoised": true}),
        json!({"_class_name": "EDMEulerScheduler", "sigma_min": 0.002, "sigma_max": 80.0,
               "sigma_data": 0.5, "num_train_timesteps": 1000, "prediction_type": "epsilon"}),
        json!({"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
               "shift": 3.0}),
        // An IPNDM config holds `trained_betas: null`, which is no β schedule either.
        json!({"_class_name": "IPNDMScheduler", "num_train_timesteps": 1000, "trained_betas": null}),
        // A class this engine has never heard of, with nothing to read a schedule from.
        json!({"_class_name": "MyOwnScheduler", "num_train_timesteps": 1000, "sigma_max": 10.0}),
    ];
    for cfg in other {
        let class = cfg["_class_name"].as_str().unwrap().to_string();
        let e = SchedulerConfig::from_json_str(&cfg.to_string())
            .expect_err(&class)
            .to_string();
        assert!(
            e.contains(&class) && e.contains("not a DDPM-family"),
            "{class}: {e}"
        );
    }
    let ddpm_family = [
        // Stable Diffusion's, and a bare one taking PNDM's defaults (diffusers' own βs).
        json!({"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
               "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
               "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1}),
        json!({"_class_name": "PNDMScheduler"}),
        json!({"_class_name": "UniPCMultistepScheduler", "solver_order": 2}),
        // An unknown class with a β schedule is read as from_config would read it.
        json!({"_class_name": "MyOwnScheduler", "beta_schedule": "squaredcos_cap_v2"}),
        json!({"num_train_timesteps": 1000}),
    ];
    for cfg in ddpm_family {
        let config = SchedulerConfig::from_json_str(&cfg.to_string()).expect("a β schedule");
        run(&config, SamplerKind::Ddim, 7).unwrap();
    }
}
