//! The state every view shares, as named context types: a run's frames and status
//! ([`RunState`]) and the selected model with its loading state ([`ModelState`]). The user's
//! inputs are [`super::settings::Inputs`]. Provided by the generate view, read by the others.

use leptos::prelude::*;

use super::engine::{Frame, ModelEntry, ModelInfo, RunSummary};
use super::settings::history_budget;

/// A run's frames and status, shared by the controls, the viewer and the history bar.
#[derive(Clone, Copy)]
pub struct RunState {
    /// The frames of the current run (x_T first), kept for replay: every frame, or every
    /// `stride`-th step (and the latest) once they reach the memory budget.
    pub frames: RwSignal<Vec<Frame>>,
    /// The spacing of the kept steps (1: all of them).
    pub stride: RwSignal<usize>,
    /// The history's memory budget in bytes.
    pub budget: usize,
    /// The frame on screen.
    pub view: RwSignal<usize>,
    pub running: RwSignal<bool>,
    /// Set by Stop; the run loop reads it between steps.
    pub stop: RwSignal<bool>,
    pub summary: RwSignal<Option<RunSummary>>,
    pub error: RwSignal<Option<String>>,
    /// Milliseconds since Generate (wall clock, drawing included).
    pub elapsed_ms: RwSignal<f64>,
    /// Bumped to start or cancel replay (a stale play loop sees a newer number and exits).
    pub play_gen: RwSignal<u32>,
    pub playing: RwSignal<bool>,
    /// Replay speed, frames per second.
    pub fps: RwSignal<u32>,
    /// Bumped by [`RunState::clear`]: a run started in an older epoch drops its frames and
    /// results and stops at its next step.
    pub epoch: RwSignal<u32>,
}

impl RunState {
    pub fn new() -> Self {
        Self {
            frames: RwSignal::new(Vec::new()),
            stride: RwSignal::new(1),
            budget: history_budget(),
            view: RwSignal::new(0),
            running: RwSignal::new(false),
            stop: RwSignal::new(false),
            summary: RwSignal::new(None),
            error: RwSignal::new(None),
            elapsed_ms: RwSignal::new(0.0),
            play_gen: RwSignal::new(0),
            playing: RwSignal::new(false),
            fps: RwSignal::new(30),
            epoch: RwSignal::new(0),
        }
    }

    /// Forgets the run on screen (a new run, another model): frames, summary, error and timing.
    /// A run in progress is told to stop, and what it still sends is dropped.
    pub fn clear(&self) {
        if self.running.get_untracked() {
            self.stop.set(true);
        }
        self.epoch.update(|e| *e += 1);
        self.playing.set(false);
        self.frames.set(Vec::new());
        self.stride.set(1);
        self.view.set(0);
        self.summary.set(None);
        self.error.set(None);
        self.elapsed_ms.set(0.0);
    }

    pub fn step_view(&self, delta: i64) {
        self.playing.set(false);
        let n = self.frames.with_untracked(Vec::len);
        if n == 0 {
            return;
        }
        let v = (self.view.get_untracked() as i64 + delta).clamp(0, n as i64 - 1);
        self.view.set(v as usize);
    }
}

/// A model the user opened from their own files: its picker entry and its loading state.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalModel {
    pub entry: ModelEntry,
    /// None while the files are read and loaded.
    pub info: Option<Result<ModelInfo, String>>,
}

/// The model the picker points at and its loading state.
#[derive(Clone, Copy)]
pub struct ModelState {
    /// The folder opened from the user's files, if any (listed last in the picker).
    pub local: RwSignal<Option<LocalModel>>,
    /// The manifest's models, plus the `?model_url=` folder first when given.
    pub entries: Memo<Vec<ModelEntry>>,
    /// The manifest entry (or the `?model_url=` folder) selected.
    pub entry: Memo<Option<ModelEntry>>,
    /// None while loading; the loaded model or why it failed.
    pub info: RwSignal<Option<Result<ModelInfo, String>>>,
}
