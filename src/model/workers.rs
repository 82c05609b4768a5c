//! The CPU backend's threads in the browser: Web Workers, each running this same wasm module with
//! its own copy of the model, take shares of a batch the way the native pool's threads do
//! ([`crate::model::UNet2DModel::forward`] natively). Wasm threads proper need shared memory,
//! which takes a nightly `-Z build-std` build and a cross-origin isolated page; workers need
//! neither, but share no memory, so they split only batches: a CPU forward of N ≥ 2 images
//! (classifier-free guidance's pair, a batch of samples, the benchmark's batch 4) runs its first
//! share on the page's thread while each worker runs one of the others.
//!
//! The worker script (`cpu-worker.js`, written by `scripts/csp.mjs` beside the app's loader)
//! imports the app's JS glue, instantiates the compiled module the page sends it (no second
//! download or compile) and hands its messages to [`cpu_worker_start`]. The messages:
//! - page → worker: `{op: "load", key, names, files}` (a model folder's files, its VAE left out),
//!   `{op: "forward", id, key, shape, sample, timesteps, labels}`, `{op: "forget", key}`;
//! - worker → page: `{id, output}` or `{id, error}`.
//!
//! A worker that fails (an error event, an error reply, no reply in time) is not used again and
//! its share is computed on the page's thread, so a run never fails or hangs for want of one:
//! the console says why.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ops::Range;
use std::rc::Rc;

use futures_channel::oneshot;
use js_sys::{Array, Float32Array, Float64Array, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::backend::{Backend, Tensor};
use crate::cpu::{CpuBackend, CpuTensor};
use crate::error::{Error, Result};
use crate::model::loader::{load_unet_files, MemorySource};
use crate::model::UNet2DModel;

/// The most threads (the page's included) a forward is split over by default: each worker holds
/// a copy of the model and its own activations.
const MAX_DEFAULT_THREADS: usize = 4;

/// The worker script, beside `index.html`: the one that imports this module's own JS glue
/// (`scripts/csp.mjs`; the relaxed-SIMD build has its own glue, `scripts/wasm_relaxed.mjs`).
const SCRIPT: &str = if cfg!(target_feature = "relaxed-simd") {
    "./cpu-worker-relaxed.js"
} else {
    "./cpu-worker.js"
};

type Reply = std::result::Result<Vec<f32>, String>;

/// One worker as the page sees it.
struct Helper {
    worker: web_sys::Worker,
    /// Forwards sent and not answered yet, by id.
    pending: Pending,
    /// Why this worker is no longer used, once it failed.
    failed: Rc<RefCell<Option<String>>>,
    _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
    _on_error: Closure<dyn FnMut(web_sys::Event)>,
}

thread_local! {
    /// Threads asked for with [`init`]; `None`: `navigator.hardwareConcurrency`, at most
    /// [`MAX_DEFAULT_THREADS`].
    static WANTED: Cell<Option<usize>> = const { Cell::new(None) };
    /// The workers, started on the first [`share`].
    static HELPERS: RefCell<Option<Rc<Vec<Helper>>>> = const { RefCell::new(None) };
    /// The next model key and forward id.
    static NEXT: Cell<u32> = const { Cell::new(1) };
    /// Forwards split so far, and shares that a worker computed.
    static SPLITS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Forwards split among the workers so far, and the shares workers computed (the rest ran on the
/// page's thread, their own or a failed worker's): the tests' evidence that a run used them.
pub fn splits() -> (u64, u64) {
    SPLITS.with(Cell::get)
}

fn next_id() -> u32 {
    NEXT.with(|n| {
        let id = n.get();
        n.set(id.wrapping_add(1).max(1));
        id
    })
}

/// Sets how many threads (the page's included) CPU forwards use: 1 starts no worker. Takes effect
/// if called before the first model is shared (the app calls it at start, from `?threads=N`).
pub fn init(threads: usize) {
    WANTED.with(|w| w.set(Some(threads.max(1))));
}

/// The threads a CPU forward of a large enough batch runs on now: the page's and every worker
/// that has not failed (the workers start with the first shared model).
pub fn threads() -> usize {
    1 + HELPERS.with(|h| {
        h.borrow().as_ref().map_or(0, |hs| {
            hs.iter().filter(|h| h.failed.borrow().is_none()).count()
        })
    })
}

/// Starts the workers now rather than with the first shared model (the app does when it picks
/// the CPU backend, to say how many threads it has) and returns [`threads`].
pub fn start() -> usize {
    helpers();
    threads()
}

fn wanted_threads() -> usize {
    WANTED.with(Cell::get).unwrap_or_else(|| {
        let cores = web_sys::window().map_or(1.0, |w| w.navigator().hardware_concurrency());
        (cores as usize).clamp(1, MAX_DEFAULT_THREADS)
    })
}

/// The workers, started on the first call (none where the page asked for one thread or the
/// browser refuses to start them: then every forward runs on the page's thread).
fn helpers() -> Rc<Vec<Helper>> {
    if let Some(h) = HELPERS.with(|h| h.borrow().clone()) {
        return h;
    }
    let mut list = Vec::new();
    for i in 1..wanted_threads() {
        match Helper::start() {
            Ok(h) => list.push(h),
            Err(e) => {
                log::warn!(
                    "CPU worker {i} did not start ({e}); the CPU backend uses {i} thread(s)"
                );
                break;
            }
        }
    }
    let list = Rc::new(list);
    HELPERS.with(|h| *h.borrow_mut() = Some(list.clone()));
    list
}

fn js_error(e: JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

type Pending = Rc<RefCell<HashMap<u32, oneshot::Sender<Reply>>>>;

/// Stops using a worker (once; the console says why): its pending forwards get `why`, and their
/// shares, and all later ones, run on the page's thread.
fn give_up(failed: &RefCell<Option<String>>, pending: &Pending, why: String) {
    if failed.borrow().is_none() {
        log::warn!("a CPU worker is no longer used: {why}; its shares run on the page's thread");
        *failed.borrow_mut() = Some(why.clone());
    }
    for (_, tx) in pending.borrow_mut().drain() {
        let _ = tx.send(Err(why.clone()));
    }
}

impl Helper {
    fn start() -> std::result::Result<Self, String> {
        let options = web_sys::WorkerOptions::new();
        options.set_type(web_sys::WorkerType::Module);
        let worker = web_sys::Worker::new_with_options(SCRIPT, &options).map_err(js_error)?;
        let pending: Pending = Rc::default();
        let failed: Rc<RefCell<Option<String>>> = Rc::default();
        let on_message = {
            let (pending, failed) = (pending.clone(), failed.clone());
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                let data = e.data();
                if let Some(why) = field(&data, "failed").as_string() {
                    give_up(&failed, &pending, why);
                    return;
                }
                let Some(id) = field(&data, "id").as_f64() else {
                    return;
                };
                let Some(tx) = pending.borrow_mut().remove(&(id as u32)) else {
                    return; // answered after its time ran out
                };
                let reply = match field(&data, "output").dyn_into::<Float32Array>() {
                    Ok(o) => Ok(o.to_vec()),
                    Err(_) => Err(field(&data, "error")
                        .as_string()
                        .unwrap_or_else(|| "a reply with neither output nor error".into())),
                };
                let _ = tx.send(reply);
            })
        };
        let on_error = {
            let (pending, failed) = (pending.clone(), failed.clone());
            // An ErrorEvent for an exception in the worker; a plain Event where its script did
            // not load (missing, or refused by the page's cross-origin policy).
            Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
                let why = match field(&e, "message").as_string().filter(|m| !m.is_empty()) {
                    Some(m) => format!("the worker failed: {m}"),
                    None => format!("the worker script {SCRIPT} did not load"),
                };
                give_up(&failed, &pending, why);
            })
        };
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        // The module the page runs, compiled already.
        let hello = Object::new();
        let _ = Reflect::set(&hello, &"module".into(), &wasm_bindgen::module());
        worker.post_message(&hello).map_err(js_error)?;
        Ok(Self {
            worker,
            pending,
            failed,
            _on_message: on_message,
            _on_error: on_error,
        })
    }

    fn usable(&self) -> bool {
        self.failed.borrow().is_none()
    }

    fn fail(&self, why: String) {
        give_up(&self.failed, &self.pending, why);
    }

    fn post(&self, message: &Object, transfer: &[JsValue]) {
        let transfer: Array = transfer.iter().collect();
        if let Err(e) = self.worker.post_message_with_transfer(message, &transfer) {
            self.fail(format!("postMessage: {}", js_error(e)));
        }
    }

    /// Sends one share of a forward; the receiver gets the worker's output or why it has none.
    fn send_forward(&self, key: u32, part: &Part) -> oneshot::Receiver<Reply> {
        let id = next_id();
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        let sample = Float32Array::from(part.sample);
        let m = Object::new();
        let set = |k: &str, v: &JsValue| {
            let _ = Reflect::set(&m, &k.into(), v);
        };
        set("op", &"forward".into());
        set("id", &id.into());
        set("key", &key.into());
        set(
            "shape",
            &part
                .shape
                .iter()
                .map(|&d| JsValue::from(d as f64))
                .collect::<Array>(),
        );
        set("sample", &sample);
        set("timesteps", &Float32Array::from(part.timesteps));
        match part.labels {
            Some(l) => set(
                "labels",
                &Float64Array::from(&l.iter().map(|&v| v as f64).collect::<Vec<_>>()[..]),
            ),
            None => set("labels", &JsValue::NULL),
        }
        self.post(&m, &[sample.buffer().into()]);
        rx
    }

    /// Gives up on this worker if the forwards it has now are not all answered within `ms`.
    fn deadline(&self, ms: f64) {
        let Some(window) = web_sys::window() else {
            return;
        };
        let (pending, failed) = (self.pending.clone(), self.failed.clone());
        let ids: Vec<u32> = pending.borrow().keys().copied().collect();
        let late = Closure::once_into_js(move || {
            if ids.iter().any(|id| pending.borrow().contains_key(id)) {
                give_up(
                    &failed,
                    &pending,
                    format!("no reply in {:.1} s", ms / 1000.0),
                );
            }
        });
        let _ = window
            .set_timeout_with_callback_and_timeout_and_arguments_0(late.unchecked_ref(), ms as i32);
    }
}

/// A model's copy in the workers, held by the model ([`UNet2DModel::workers`]): dropping it
/// drops the copies.
#[derive(Debug)]
pub struct Share {
    key: u32,
}

impl Drop for Share {
    fn drop(&mut self) {
        let m = Object::new();
        let _ = Reflect::set(&m, &"op".into(), &"forget".into());
        let _ = Reflect::set(&m, &"key".into(), &self.key.into());
        if let Some(hs) = HELPERS.with(|h| h.borrow().clone()) {
            for h in hs.iter().filter(|h| h.usable()) {
                h.post(&m, &[]);
            }
        }
    }
}

/// Gives every worker (starting them on the first call) a copy of the UNet of the model folder
/// `files` (relative paths as [`MemorySource`] takes them; a VAE is left out). `None` where no
/// worker runs.
pub fn share(files: &HashMap<String, Vec<u8>>) -> Option<Share> {
    let hs = helpers();
    if !hs.iter().any(Helper::usable) {
        return None;
    }
    let key = next_id();
    let (names, arrays): (Array, Array) = files
        .iter()
        .filter(|(k, _)| !k.starts_with("vae/"))
        .map(|(k, v)| {
            (
                JsValue::from(k.as_str()),
                JsValue::from(Uint8Array::from(&v[..])),
            )
        })
        .unzip();
    for h in hs.iter().filter(|h| h.usable()) {
        let m = Object::new();
        let _ = Reflect::set(&m, &"op".into(), &"load".into());
        let _ = Reflect::set(&m, &"key".into(), &key.into());
        let _ = Reflect::set(&m, &"names".into(), &names);
        let _ = Reflect::set(&m, &"files".into(), &arrays);
        h.post(&m, &[]);
    }
    Some(Share { key })
}

/// One share of a batch: its images, borrowed from the whole batch's inputs.
struct Part<'a> {
    range: Range<usize>,
    shape: [usize; 4],
    sample: &'a [f32],
    timesteps: &'a [f32],
    labels: Option<&'a [i64]>,
}

/// A CPU forward of several images on the page's thread and the workers, read back: `None` where
/// this does not apply (another backend, a model not shared, one image, no usable worker, or
/// inputs that [`UNet2DModel::check_inputs`] rejects, whose error the plain forward then gives).
pub async fn forward<B: Backend>(
    model: &UNet2DModel<B>,
    sample: &B::Tensor,
    timesteps: &[f32],
    class_labels: Option<&[i64]>,
) -> Option<Result<Vec<f32>>> {
    use std::any::Any;
    let model = (model as &dyn Any).downcast_ref::<UNet2DModel<CpuBackend>>()?;
    let x = (sample as &dyn Any).downcast_ref::<CpuTensor>()?;
    let key = model.workers.as_ref()?.key;
    let hs = HELPERS.with(|h| h.borrow().clone())?;
    let live: Vec<&Helper> = hs.iter().filter(|h| h.usable()).collect();
    let split = model.batch_split(x.shape(), timesteps, class_labels, live.len() + 1)?;
    let out_image = split.out_image;
    let part = |i: usize| {
        let range = split.range(i);
        let (timesteps, labels) = split.inputs(&range, timesteps, class_labels);
        Part {
            shape: split.shape(&range),
            sample: &x.data()[range.start * split.image..range.end * split.image],
            timesteps,
            labels,
            range,
        }
    };
    // The workers' shares first, so that they run while the page computes its own.
    let sent: Vec<(Part, &Helper, oneshot::Receiver<Reply>)> = (1..split.parts)
        .map(|i| {
            let p = part(i);
            let rx = live[i - 1].send_forward(key, &p);
            (p, live[i - 1], rx)
        })
        .collect();
    let mut out = vec![0.0f32; split.shape[0] * out_image];
    let local = |p: &Part, out: &mut [f32]| -> Result<()> {
        let xs = CpuTensor::new(&p.shape, p.sample.to_vec())?;
        let y = model.forward(&CpuBackend, &xs, p.timesteps, p.labels)?;
        out[p.range.start * out_image..p.range.end * out_image].copy_from_slice(y.data());
        Ok(())
    };
    let t0 = crate::device::clock::now_ms();
    if let Err(e) = local(&part(0), &mut out) {
        return Some(Err(e));
    }
    // A worker runs a share as fast as the page: give it far longer than the page took.
    let wait = ((crate::device::clock::now_ms() - t0) * 20.0).max(10_000.0);
    for (_, h, _) in &sent {
        h.deadline(wait);
    }
    let mut by_workers = 0;
    for (p, h, rx) in sent {
        let want = p.range.len() * out_image;
        let got = match rx.await {
            Ok(Ok(v)) if v.len() == want => Ok(v),
            Ok(Ok(v)) => Err(format!("{} values for a share of {want}", v.len())),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the reply channel closed".into()),
        };
        match got {
            Ok(v) => {
                out[p.range.start * out_image..p.range.end * out_image].copy_from_slice(&v);
                by_workers += 1;
            }
            Err(why) => {
                h.fail(why);
                if let Err(e) = local(&p, &mut out) {
                    return Some(Err(e));
                }
            }
        }
    }
    SPLITS.with(|s| s.set((s.get().0 + 1, s.get().1 + by_workers)));
    Some(Ok(out))
}

// ---- the worker's side ----

thread_local! {
    /// The models this worker holds, by key (or why one did not load).
    static MODELS: RefCell<HashMap<u32, std::result::Result<UNet2DModel<CpuBackend>, String>>> =
        RefCell::new(HashMap::new());
}

/// The worker script's entry: handles `early` (the messages that came while the module was
/// instantiated) and every later message.
#[wasm_bindgen]
pub fn cpu_worker_start(early: Array) {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let on_message =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(|e: web_sys::MessageEvent| {
            handle(e.data())
        });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    for m in early.iter() {
        handle(m);
    }
}

fn field(m: &JsValue, k: &str) -> JsValue {
    Reflect::get(m, &k.into()).unwrap_or(JsValue::UNDEFINED)
}

fn handle(m: JsValue) {
    let key = field(&m, "key").as_f64().unwrap_or(0.0) as u32;
    match field(&m, "op").as_string().as_deref() {
        Some("load") => {
            let model = load(&m).map_err(|e| format!("the worker could not load the model: {e}"));
            MODELS.with(|ms| ms.borrow_mut().insert(key, model));
        }
        Some("forget") => {
            MODELS.with(|ms| ms.borrow_mut().remove(&key));
        }
        Some("forward") => {
            let reply = Object::new();
            let _ = Reflect::set(&reply, &"id".into(), &field(&m, "id"));
            let transfer = Array::new();
            match run(key, &m) {
                Ok(y) => {
                    let out = Float32Array::from(y.data());
                    transfer.push(&out.buffer());
                    let _ = Reflect::set(&reply, &"output".into(), &out);
                }
                Err(e) => {
                    let _ = Reflect::set(&reply, &"error".into(), &e.into());
                }
            }
            let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
            let _ = scope.post_message_with_transfer(&reply, &transfer);
        }
        _ => log::warn!("CPU worker: a message with no known op"),
    }
}

fn load(m: &JsValue) -> std::result::Result<UNet2DModel<CpuBackend>, String> {
    let names = Array::from(&field(m, "names"));
    let arrays = Array::from(&field(m, "files"));
    let files = names
        .iter()
        .zip(arrays.iter())
        .map(|(n, a)| {
            let bytes = a
                .dyn_into::<Uint8Array>()
                .map_err(|_| "a file is not bytes")?;
            Ok((
                n.as_string().ok_or("a file name is not text")?,
                bytes.to_vec(),
            ))
        })
        .collect::<std::result::Result<HashMap<_, _>, &str>>()?;
    let src = MemorySource {
        name: "model".into(),
        files,
    };
    let unet = load_unet_files(&src).map_err(|e| e.to_string())?;
    UNet2DModel::load(&CpuBackend, unet.config, &unet.weights).map_err(|e| e.to_string())
}

fn run(key: u32, m: &JsValue) -> std::result::Result<CpuTensor, String> {
    let shape: Vec<usize> = Array::from(&field(m, "shape"))
        .iter()
        .map(|d| {
            d.as_f64()
                .map(|d| d as usize)
                .ok_or("a shape entry is not a number")
        })
        .collect::<std::result::Result<_, _>>()?;
    let sample = field(m, "sample")
        .dyn_into::<Float32Array>()
        .map_err(|_| "no sample")?;
    let timesteps = field(m, "timesteps")
        .dyn_into::<Float32Array>()
        .map_err(|_| "no timesteps")?;
    let labels = field(m, "labels");
    let labels: Option<Vec<i64>> = labels
        .dyn_into::<Float64Array>()
        .ok()
        .map(|l| l.to_vec().into_iter().map(|v| v as i64).collect());
    let x = CpuTensor::new(&shape, sample.to_vec()).map_err(|e| e.to_string())?;
    MODELS.with(|ms| match ms.borrow().get(&key) {
        Some(Ok(model)) => model
            .forward(&CpuBackend, &x, &timesteps.to_vec(), labels.as_deref())
            .map_err(|e: Error| e.to_string()),
        Some(Err(e)) => Err(e.clone()),
        None => Err(format!("the worker holds no model {key}")),
    })
}
