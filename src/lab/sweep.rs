//! A convergence sweep: from one initial noise x_T, a reference run (DDIM η=0 at 1000 steps by
//! default: the probability-flow ODE solved finely) and, for each chosen sampler, runs at a list
//! of step counts. Each run's final image is compared with the reference's in pixel space
//! (RMSE, what a viewer sees). Deterministic samplers converge to the reference as steps grow;
//! stochastic ones (DDPM, DDIM η>0, Euler-a, SDE solvers) sample another image for every noise
//! path, so they run on several paths (step-noise seeds) from the same x_T and show the spread.
//!
//! Path `p` draws its step noise from seed `seed + p`: path 0 is exactly the run the page's main
//! view makes with `seed`, so any cell of path 0 can be replayed there.

use std::cell::{Cell as StdCell, RefCell};
use std::str::FromStr;

use crate::backend::Backend;
use crate::device::clock::now_ms;
use crate::error::{Error, Result};
use crate::image::pixel_rmse;
use crate::job::{self, Decode, Event, Job, Labels, Mode, Model, Picture};
use crate::pipeline::{Control, NoiseSource};
use crate::sampler::{self, SamplerKind, SamplerOptions, SchedulerConfig};

/// A sampler and, for DDIM, its η: `ddim`, `ddim:0.5`, `euler-a`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerChoice {
    pub kind: SamplerKind,
    /// DDIM's η (0 for the others).
    pub eta: f32,
}

impl SamplerChoice {
    pub fn new(kind: SamplerKind) -> Self {
        Self { kind, eta: 0.0 }
    }

    pub fn ddim(eta: f32) -> Self {
        Self {
            kind: SamplerKind::Ddim,
            eta,
        }
    }

    /// The name `FromStr` reads back: `ddim:0.5`, or the sampler's name.
    pub fn name(&self) -> String {
        if self.kind == SamplerKind::Ddim && self.eta != 0.0 {
            format!("ddim:{}", self.eta)
        } else {
            self.kind.name().to_string()
        }
    }

    /// For people: `ddim η=0`, `ddim η=0.5`, `dpm++2m`.
    pub fn label(&self) -> String {
        if self.kind == SamplerKind::Ddim {
            format!("ddim η={}", self.eta)
        } else {
            self.kind.name().to_string()
        }
    }

    /// Whether the sampler draws fresh noise at each step (then every noise path differs).
    pub fn is_stochastic(&self, config: &SchedulerConfig) -> Result<bool> {
        Ok(sampler::build(self.kind, config, self.eta)?.needs_step_noise())
    }
}

impl std::fmt::Display for SamplerChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for SamplerChoice {
    type Err = Error;
    /// `NAME` or `ddim:ETA` (also `ddim:eta=ETA`); η only for DDIM, in [0, 1].
    fn from_str(s: &str) -> Result<Self> {
        let (name, eta) = match s.split_once(':') {
            Some((n, e)) => (n, Some(e.trim().trim_start_matches("eta="))),
            None => (s, None),
        };
        let kind: SamplerKind = name.parse()?;
        let eta = match eta {
            None => 0.0,
            Some(_) if kind != SamplerKind::Ddim => {
                return Err(Error::input(
                    "sampler",
                    format!("`{s}`: only ddim takes an η (`ddim:0.5`)"),
                ))
            }
            Some(e) => match e.parse::<f32>() {
                Ok(v) if (0.0..=1.0).contains(&v) => v,
                _ => {
                    return Err(Error::input(
                        "sampler",
                        format!("`{s}`: η must be a number from 0 to 1"),
                    ))
                }
            },
        };
        Ok(Self { kind, eta })
    }
}

/// What a sweep runs.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub samplers: Vec<SamplerChoice>,
    /// Step counts, each run by every sampler.
    pub steps: Vec<usize>,
    /// x_T's seed (and path 0's step noise).
    pub seed: u64,
    /// Noise paths per stochastic sampler (deterministic ones run once).
    pub paths: usize,
    pub reference: SamplerChoice,
    pub reference_steps: usize,
    pub batch: usize,
    pub labels: Option<Labels>,
    pub guidance: f32,
    /// DDIM rebuilds ε from the clipped x̂0 (the model's default, as the main view runs it).
    pub use_clipped_model_output: bool,
    /// Keep the x_t and x̂0 path of sample 0 for the runs at this step count and the reference
    /// (for [`super::paths`]); `None` keeps none.
    pub record_paths: Option<usize>,
    /// Spacing, Karras σs, zero-SNR for every run, the reference's included (a sampler whose
    /// class lacks an option set here is refused by name before anything runs).
    pub options: SamplerOptions,
}

/// One run of a sweep, before it runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunSpec {
    pub sampler: SamplerChoice,
    pub steps: usize,
    /// Noise path (0-based); its step noise is seed + path.
    pub path: usize,
    /// Model evaluations (the sampler's timesteps: Heun and PNDM take more than one per step).
    pub evaluations: usize,
}

/// A run's final image and its cost.
#[derive(Clone, Debug)]
pub struct Final {
    pub sampler: SamplerChoice,
    pub steps: usize,
    pub evaluations: usize,
    /// The final image in model space ([-1, 1]), decoded for latent models.
    pub image: Picture,
    /// Wall-clock milliseconds of the run.
    pub ms: f64,
    /// Sample 0's x_t after each step and x̂0 at each step (sample space), when recorded; the
    /// reference's thinned to at most [`MAX_PATH_POINTS`].
    pub trace: Option<Trace>,
}

/// The path of sample 0 through sample space.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// x_T, then x_t after each kept step.
    pub xt: Vec<Vec<f32>>,
    /// x̂0 at each kept step.
    pub x0: Vec<Vec<f32>>,
}

/// The reference's path keeps at most this many points.
pub const MAX_PATH_POINTS: usize = 100;

/// One sampler at one step count on one noise path, against the reference.
#[derive(Clone, Debug)]
pub struct Cell {
    pub run: Final,
    pub path: usize,
    /// Pixel-space RMSE of the final image to the reference's (0..1).
    pub rmse: f64,
}

/// What a sweep reports as it goes; the callback may stop it.
#[derive(Clone, Debug)]
pub enum SweepEvent {
    /// A model evaluation finished: `done` of `total` for the whole sweep, in run `run` of `runs`
    /// (run 0 is the reference).
    Progress {
        run: usize,
        runs: usize,
        done: usize,
        total: usize,
    },
    Reference(Final),
    Cell(Cell),
}

/// Every run's result.
#[derive(Clone, Debug)]
pub struct SweepResult {
    pub reference: Final,
    pub cells: Vec<Cell>,
    /// False when stopped part-way (the cells hold what finished).
    pub complete: bool,
}

/// One sampler's errors per step count: median, min and max over its noise paths.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub sampler: SamplerChoice,
    pub stochastic: bool,
    /// (steps, median, min, max) per step count, ascending.
    pub points: Vec<(usize, f64, f64, f64)>,
    /// The least-squares slope of log RMSE against log steps over the step counts with a
    /// positive median: about −k for a k-th order solver before it meets the reference's own
    /// error; near 0 for a sampler that does not approach the reference.
    pub slope: Option<f64>,
}

impl Sweep {
    /// Checks every sampler and step count against the model's schedule (so a bad step count
    /// fails before any computing), and lists the runs: the reference first.
    pub fn plan(&self, config: &SchedulerConfig) -> Result<Vec<RunSpec>> {
        if self.samplers.is_empty() {
            return Err(Error::input("samplers", "choose at least one sampler"));
        }
        if self.steps.is_empty() {
            return Err(Error::input("steps", "choose at least one step count"));
        }
        if self.batch == 0 {
            return Err(Error::input("batch", "must be at least 1"));
        }
        let spec = |sampler: SamplerChoice, steps: usize, path: usize| -> Result<RunSpec> {
            let config = self.options.apply(sampler.kind, config)?;
            let mut s = sampler::build(sampler.kind, &config, sampler.eta)?;
            s.set_timesteps(steps)?;
            Ok(RunSpec {
                sampler,
                steps,
                path,
                evaluations: s.timesteps().len(),
            })
        };
        let mut runs = vec![spec(self.reference, self.reference_steps, 0)?];
        for &sampler in &self.samplers {
            let paths = if sampler.is_stochastic(config)? {
                self.paths.max(1)
            } else {
                1
            };
            for &steps in &self.steps {
                for path in 0..paths {
                    runs.push(spec(sampler, steps, path)?);
                }
            }
        }
        Ok(runs)
    }

    fn job(&self, run: &RunSpec) -> Job {
        Job {
            sampler: run.sampler.kind,
            steps: run.steps,
            eta: run.sampler.eta,
            use_clipped_model_output: self.use_clipped_model_output,
            noise: NoiseSource::Split {
                init: self.seed,
                steps: self.seed.wrapping_add(run.path as u64),
            },
            seed: self.seed,
            labels: self.labels,
            guidance: self.guidance,
            mode: Mode::Generate { batch: self.batch },
            decode: Decode::Never,
            options: self.options.clone(),
        }
    }
}

/// Runs `sweep` on `model`: the reference, then every planned run, reporting progress after each
/// model evaluation and each finished run. Stopping returns what finished (`complete: false`);
/// stopped during the reference, it is an error (nothing can be compared).
pub async fn run<B, F, Fut>(
    b: &B,
    model: &Model<B>,
    sweep: &Sweep,
    on_event: F,
) -> Result<SweepResult>
where
    B: Backend,
    F: FnMut(SweepEvent) -> Fut,
    Fut: std::future::Future<Output = Control>,
{
    let runs = sweep.plan(&model.scheduler)?;
    let total: usize = runs.iter().map(|r| r.evaluations).sum();
    let runs_n = runs.len();
    // State the job's callback shares with the futures it returns (a future cannot borrow from
    // the closure that made it), as in `job::run`.
    let done = StdCell::new(0usize);
    let stopped = StdCell::new(false);
    let on_event = RefCell::new(on_event);
    let mut reference: Option<Final> = None;
    let mut cells = Vec::new();
    for (i, spec) in runs.iter().enumerate() {
        let record = i == 0 || (sweep.record_paths == Some(spec.steps) && spec.path == 0);
        // The reference's path is thinned; the others keep every step.
        let thin = if i == 0 {
            spec.evaluations.div_ceil(MAX_PATH_POINTS).max(1)
        } else {
            1
        };
        let job = sweep.job(spec);
        let trace = RefCell::new(record.then(Trace::default));
        let t0 = now_ms();
        let (done, stopped, on_event, trace_ref) = (&done, &stopped, &on_event, &trace);
        let out = job::run(b, model, &job, move |ev| {
            let fut = match ev {
                Event::Start(st) => {
                    if let (Some(t), Some(x)) = (trace_ref.borrow_mut().as_mut(), st.sample) {
                        t.xt.push(first_sample(&x, st.shape));
                    }
                    None
                }
                Event::Step(st) => {
                    let ev = &st.event;
                    if let Some(t) = trace_ref.borrow_mut().as_mut() {
                        if (ev.index + 1) % thin == 0 || ev.index + 1 == ev.total {
                            let per = ev.sample.len() / sweep.batch.max(1);
                            t.xt.push(ev.sample[..per].to_vec());
                            t.x0.push(ev.pred_original[..per].to_vec());
                        }
                    }
                    done.set(done.get() + 1);
                    Some((on_event.borrow_mut())(SweepEvent::Progress {
                        run: i,
                        runs: runs_n,
                        done: done.get(),
                        total,
                    }))
                }
            };
            async move {
                let Some(f) = fut else {
                    return Control::Continue;
                };
                let c = f.await;
                if c == Control::Stop {
                    stopped.set(true);
                }
                c
            }
        })
        .await?;
        let partial = |reference: Option<Final>, cells| match reference {
            Some(reference) => Ok(SweepResult {
                reference,
                cells,
                complete: false,
            }),
            None => Err(Error::input("sweep", "stopped during the reference run")),
        };
        if out.cancelled || stopped.get() {
            return partial(reference, cells);
        }
        let image = match out.image {
            Some(img) => img,
            None => Picture {
                data: out.sample,
                shape: out.shape,
            },
        };
        let fin = Final {
            sampler: spec.sampler,
            steps: spec.steps,
            evaluations: spec.evaluations,
            image,
            ms: now_ms() - t0,
            trace: trace.into_inner(),
        };
        let event = match &reference {
            None => {
                reference = Some(fin.clone());
                SweepEvent::Reference(fin)
            }
            Some(r) => {
                let cell = Cell {
                    rmse: pixel_rmse(&fin.image.data, &r.image.data),
                    run: fin,
                    path: spec.path,
                };
                cells.push(cell.clone());
                SweepEvent::Cell(cell)
            }
        };
        let fut = (on_event.borrow_mut())(event);
        if fut.await == Control::Stop && i + 1 < runs.len() {
            return partial(reference, cells);
        }
    }
    Ok(SweepResult {
        reference: reference.expect("the plan starts with the reference"),
        cells,
        complete: true,
    })
}

fn first_sample(x: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let per = shape[1] * shape[2] * shape[3];
    x[..per.min(x.len())].to_vec()
}

/// Per sampler (in the sweep's order), the median and range of its RMSE per step count, and the
/// log–log slope of the medians.
pub fn summarize(result: &SweepResult, config: &SchedulerConfig) -> Vec<Summary> {
    let mut order: Vec<SamplerChoice> = Vec::new();
    for c in &result.cells {
        if !order.contains(&c.run.sampler) {
            order.push(c.run.sampler);
        }
    }
    order
        .into_iter()
        .map(|sampler| {
            let mut steps: Vec<usize> = result
                .cells
                .iter()
                .filter(|c| c.run.sampler == sampler)
                .map(|c| c.run.steps)
                .collect();
            steps.sort_unstable();
            steps.dedup();
            let points: Vec<(usize, f64, f64, f64)> = steps
                .into_iter()
                .map(|k| {
                    let mut v: Vec<f64> = result
                        .cells
                        .iter()
                        .filter(|c| c.run.sampler == sampler && c.run.steps == k)
                        .map(|c| c.rmse)
                        .collect();
                    v.sort_by(f64::total_cmp);
                    let med = if v.len() % 2 == 1 {
                        v[v.len() / 2]
                    } else {
                        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
                    };
                    (k, med, v[0], v[v.len() - 1])
                })
                .collect();
            Summary {
                sampler,
                stochastic: sampler.is_stochastic(config).unwrap_or(false),
                slope: log_log_slope(&points),
                points,
            }
        })
        .collect()
}

/// Least-squares slope of ln(median) against ln(steps), over points with a positive median.
fn log_log_slope(points: &[(usize, f64, f64, f64)]) -> Option<f64> {
    let xy: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.1 > 0.0)
        .map(|p| ((p.0 as f64).ln(), p.1.ln()))
        .collect();
    if xy.len() < 2 {
        return None;
    }
    let n = xy.len() as f64;
    let (mx, my) = (
        xy.iter().map(|p| p.0).sum::<f64>() / n,
        xy.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = xy.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = xy.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_choice_parses() {
        let c: SamplerChoice = "ddim:0.5".parse().unwrap();
        assert_eq!((c.kind, c.eta), (SamplerKind::Ddim, 0.5));
        assert_eq!(c.name().parse::<SamplerChoice>().unwrap(), c);
        let c: SamplerChoice = "ddim:eta=1".parse().unwrap();
        assert_eq!(c.eta, 1.0);
        assert_eq!(
            "euler-a".parse::<SamplerChoice>().unwrap().kind,
            SamplerKind::EulerAncestral
        );
        for bad in ["ddpm:0.5", "ddim:2", "ddim:x", "plms"] {
            let e = bad.parse::<SamplerChoice>().unwrap_err().to_string();
            assert!(e.contains(bad.split(':').next().unwrap()), "{bad}: {e}");
        }
    }

    #[test]
    fn slope_of_a_power_law() {
        let pts: Vec<_> = [5usize, 10, 20, 50]
            .iter()
            .map(|&k| (k, 3.0 / (k as f64).powi(2), 0.0, 0.0))
            .collect();
        assert!((log_log_slope(&pts).unwrap() + 2.0).abs() < 1e-9);
        assert_eq!(log_log_slope(&pts[..1]), None);
    }
}
