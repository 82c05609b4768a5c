//! The lab view's adapter to [`crate::lab`]: a sweep on the page's backend and loaded model,
//! whose events become plain drawable data (images as RGBA, distances, progress), and the PCA
//! of the recorded paths.

use std::cell::RefCell;

use super::run::{yield_to_browser, Image};
use super::*;
use crate::backend::Backend;
use crate::image::difference_grid_rgba;
use crate::job::Labels;
use crate::lab::sweep::{self, Sweep, SweepEvent};
use crate::lab::{project, SamplerChoice};
use crate::pipeline::Control;

/// What the lab's controls ask for.
#[derive(Clone, Debug, PartialEq)]
pub struct LabParams {
    pub samplers: Vec<SamplerChoice>,
    pub steps: Vec<usize>,
    pub reference: SamplerChoice,
    pub reference_steps: usize,
    pub paths: usize,
    pub seed: u64,
    /// The label of sample 0 (−1: the seed picks one), for class-conditional models.
    pub class: i64,
    pub guidance: f32,
    /// Keep the x_t / x̂0 path of the runs at this step count (for the PCA plot).
    pub record_paths: Option<usize>,
    /// The timestep spacing of every run (`None`: the model's).
    pub spacing: Option<crate::sampler::TimestepSpacing>,
}

/// One finished run, drawable.
#[derive(Clone, Debug)]
pub struct LabCell {
    pub sampler: SamplerChoice,
    pub steps: usize,
    pub evaluations: usize,
    pub path: usize,
    pub rmse: f64,
    pub ms: f64,
    pub image: Image,
    /// |image − reference| as a heat map.
    pub diff: Image,
}

/// What a sweep reports to the view.
#[derive(Clone, Debug)]
pub enum LabEvent {
    Progress {
        done: usize,
        total: usize,
        run: usize,
        runs: usize,
    },
    Reference {
        image: Image,
        ms: f64,
    },
    Cell(LabCell),
}

/// One run's path in the PCA plane: x_t after each step and x̂0 at each step.
#[derive(Clone, Debug, PartialEq)]
pub struct LabPath {
    pub label: String,
    pub xt: Vec<[f64; 2]>,
    pub x0: Vec<[f64; 2]>,
}

/// The recorded paths projected on their two principal directions, with the variance each
/// direction explains.
#[derive(Clone, Debug, PartialEq)]
pub struct LabPaths {
    pub paths: Vec<LabPath>,
    pub explained: [f64; 2],
}

/// The whole sweep: complete or stopped, and the paths when recorded.
#[derive(Clone, Debug)]
pub struct LabSummary {
    pub complete: bool,
    pub paths: Option<LabPaths>,
}

/// Runs a sweep on the model loaded from `url`; `on_event` returns false to stop.
pub async fn lab_sweep(
    url: &str,
    info: &ModelInfo,
    p: &LabParams,
    on_event: impl FnMut(LabEvent) -> bool,
) -> Result<LabSummary, String> {
    let (compute, net) = loaded(url)?;
    match (&*compute, &*net) {
        (Compute::Gpu(b), Net::Gpu(l)) => sweep_on(b, l, info, p, on_event).await,
        (Compute::Cpu(b), Net::Cpu(l)) => sweep_on(b, l, info, p, on_event).await,
        _ => Err("the model was loaded on another backend; reload the page".into()),
    }
}

async fn sweep_on<B: Backend, F: FnMut(LabEvent) -> bool>(
    b: &B,
    net: &Loaded<B>,
    info: &ModelInfo,
    p: &LabParams,
    on_event: F,
) -> Result<LabSummary, String> {
    let labels = info.num_class_embeds.map(|k| {
        let real = (k.max(2) - 1) as i64;
        if p.class >= 0 {
            Labels::Same(p.class)
        } else {
            Labels::Same((p.seed % real as u64) as i64)
        }
    });
    let spec = Sweep {
        samplers: p.samplers.clone(),
        steps: p.steps.clone(),
        seed: p.seed,
        paths: p.paths,
        reference: p.reference,
        reference_steps: p.reference_steps,
        batch: 1,
        labels,
        guidance: p.guidance,
        use_clipped_model_output: info.defaults.use_clipped_model_output.unwrap_or(false),
        record_paths: p.record_paths,
        options: crate::sampler::SamplerOptions {
            spacing: p.spacing,
            ..Default::default()
        },
    };
    let on_event = RefCell::new(on_event);
    let reference = RefCell::new(None::<Vec<f32>>);
    let (on_event, reference_ref) = (&on_event, &reference);
    let result = sweep::run(b, net, &spec, |ev| async move {
        let out = match ev {
            SweepEvent::Progress {
                run,
                runs,
                done,
                total,
            } => LabEvent::Progress {
                done,
                total,
                run,
                runs,
            },
            SweepEvent::Reference(r) => {
                *reference_ref.borrow_mut() = Some(r.image.data.clone());
                LabEvent::Reference {
                    image: Image::grid(&r.image.data, r.image.shape),
                    ms: r.ms,
                }
            }
            SweepEvent::Cell(c) => {
                let img = &c.run.image;
                let diff = reference_ref.borrow().as_ref().map(|r| {
                    let (width, height, rgba) = difference_grid_rgba(&img.data, r, img.shape, 0.25);
                    Image {
                        width,
                        height,
                        rgba: std::sync::Arc::new(rgba),
                    }
                });
                LabEvent::Cell(LabCell {
                    sampler: c.run.sampler,
                    steps: c.run.steps,
                    evaluations: c.run.evaluations,
                    path: c.path,
                    rmse: c.rmse,
                    ms: c.run.ms,
                    image: Image::grid(&img.data, img.shape),
                    diff: diff.unwrap_or_else(|| Image::grid(&img.data, img.shape)),
                })
            }
        };
        // Progress comes after every model evaluation: let the browser paint and take the
        // Stop button's click.
        let keep = (on_event.borrow_mut())(out);
        yield_to_browser(0).await;
        if keep {
            Control::Continue
        } else {
            Control::Stop
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    let paths = record_paths(&result);
    Ok(LabSummary {
        complete: result.complete,
        paths,
    })
}

/// The recorded traces (the reference's and path 0 of each sampler at the recorded step count)
/// projected onto the two principal directions of all their points.
fn record_paths(result: &sweep::SweepResult) -> Option<LabPaths> {
    let mut runs: Vec<(String, &sweep::Trace)> = Vec::new();
    if let Some(t) = &result.reference.trace {
        runs.push((format!("reference ({} steps)", result.reference.steps), t));
    }
    for c in &result.cells {
        if let Some(t) = &c.run.trace {
            runs.push((format!("{} {}", c.run.sampler.label(), c.run.steps), t));
        }
    }
    if runs.len() < 2 {
        return None;
    }
    let points: Vec<&[f32]> = runs
        .iter()
        .flat_map(|(_, t)| t.xt.iter().chain(&t.x0).map(Vec::as_slice))
        .collect();
    let proj = project(&points)?;
    Some(LabPaths {
        explained: proj.explained,
        paths: runs
            .into_iter()
            .map(|(label, t)| LabPath {
                label,
                xt: t.xt.iter().map(|x| proj.apply(x)).collect(),
                x0: t.x0.iter().map(|x| proj.apply(x)).collect(),
            })
            .collect(),
    })
}
