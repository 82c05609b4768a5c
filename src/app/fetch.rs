//! Fetching files served beside the app (shipped models, test fixtures): streamed, so that a
//! model's download reports its progress ([`download_progress`]), and for the shipped models
//! (`models/…`) kept in the Cache API, so that a second visit loads them without the network.
//!
//! The cache is revalidated, not trusted: a cached file is used when a `HEAD` request finds the
//! same `ETag` (else `Last-Modified`, else `Content-Length`) on the server, or when the server
//! cannot be reached at all (offline). A retrained model served under the same name is thus
//! downloaded again, and a missing network still finds last visit's copy. Where the browser has
//! no Cache API (an insecure `http:` page other than localhost) files come from the network.

use std::cell::{Cell, RefCell};
use std::fmt;

use leptos::prelude::*;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Why a fetch failed, in a form the page can turn into a sentence for the user.
#[derive(Clone, Debug, PartialEq)]
pub enum FetchError {
    /// No answer: offline, refused, blocked (the browser gives only a `TypeError`).
    Network { url: String, detail: String },
    /// The server answered with an error status (404 is `Ok(None)` instead).
    Http { url: String, status: u16 },
    /// The answer broke off while it was being read.
    Read { url: String, detail: String },
}

impl FetchError {
    /// What went wrong, for a sentence that starts "Could not load …: ".
    pub fn reason(&self) -> String {
        match self {
            FetchError::Network { .. } => {
                "the network failed (are you offline, or is the server down?)".into()
            }
            FetchError::Http { status, .. } => format!("the server answered {status}"),
            FetchError::Read { .. } => "the download broke off (the network failed)".into(),
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Network { url, detail } => {
                write!(f, "fetch {url}: network error ({detail})")
            }
            FetchError::Http { url, status } => write!(f, "fetch {url}: HTTP {status}"),
            FetchError::Read { url, detail } => write!(f, "read {url}: {detail}"),
        }
    }
}

impl From<FetchError> for String {
    fn from(e: FetchError) -> String {
        e.to_string()
    }
}

/// A JS error as one line: its `name: message` (a `TypeError: Failed to fetch`), not the
/// `JsValue(…)` debug dump with its wasm stack.
pub fn js_error(e: &JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return format!("{}: {}", err.name(), err.message());
    }
    e.as_string().unwrap_or_else(|| "unknown error".into())
}

/// Bytes downloaded by the loads in progress, and the sizes they announced.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Download {
    pub received: u64,
    /// The sum of the `Content-Length`s of the files started so far; None once one came
    /// without (a compressed or chunked answer).
    pub total: Option<u64>,
}

impl Download {
    /// "1.2 of 4.4 MB", or "1.2 MB" without a total (kB below a megabyte).
    pub fn describe(&self) -> String {
        let top = self.total.unwrap_or(0).max(self.received);
        let (unit, div) = if top >= 1_000_000 {
            ("MB", 1e6)
        } else {
            ("kB", 1e3)
        };
        let got = self.received as f64 / div;
        match self.total {
            Some(t) => format!(
                "{got:.1} of {:.1} {unit}",
                t.max(self.received) as f64 / div
            ),
            None => format!("{got:.1} {unit}"),
        }
    }
}

thread_local! {
    // Readable by components (it is a plain reference-counted signal, owned by no view); None
    // while nothing is being tracked.
    static PROGRESS: ArcRwSignal<Option<Download>> = ArcRwSignal::new(None);
    // Loads tracking their progress now (the counts restart when the first one begins).
    static TRACKING: Cell<usize> = const { Cell::new(0) };
    // The opened cache; None until first asked for, Some(None) where there is no Cache API.
    static CACHE: RefCell<Option<Option<web_sys::Cache>>> = const { RefCell::new(None) };
}

/// The download progress of the loads under [`track_progress`]: None when none is running.
pub fn download_progress() -> ArcRwSignal<Option<Download>> {
    PROGRESS.with(Clone::clone)
}

/// Counts the bytes every fetch receives into [`download_progress`] until the guard drops.
pub fn track_progress() -> ProgressGuard {
    if TRACKING.with(|t| t.replace(t.get() + 1)) == 0 {
        PROGRESS.with(|p| {
            p.set(Some(Download {
                received: 0,
                total: Some(0),
            }))
        });
    }
    ProgressGuard(())
}

/// Ends a [`track_progress`] when dropped.
pub struct ProgressGuard(());

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        if TRACKING.with(|t| t.replace(t.get().saturating_sub(1))) == 1 {
            PROGRESS.with(|p| p.set(None));
        }
    }
}

/// Counts `received` bytes, and a file's announced `length` when it starts (`Some(None)`: it
/// announced none).
fn progress(received: u64, length: Option<Option<u64>>) {
    if TRACKING.with(Cell::get) == 0 {
        return;
    }
    PROGRESS.with(|p| {
        p.update(|d| {
            if let Some(d) = d {
                d.received += received;
                if let Some(length) = length {
                    d.total = d.total.zip(length).map(|(a, b)| a + b);
                }
            }
        })
    });
}

/// The cache's name: a new app version starts a new cache (and deletes the old ones).
const CACHE_NAME: &str = concat!("stepwise-v", env!("CARGO_PKG_VERSION"));

/// Only the shipped models are cached: fixtures and the examples change with the code.
fn cacheable(url: &str) -> bool {
    url.starts_with("models/") || url.starts_with("./models/")
}

/// The app's cache, opened once; None where the browser has no Cache API or refuses it.
async fn cache() -> Option<web_sys::Cache> {
    if let Some(c) = CACHE.with(|c| c.borrow().clone()) {
        return c;
    }
    let opened = open_cache().await;
    CACHE.with(|c| *c.borrow_mut() = Some(opened.clone()));
    opened
}

async fn open_cache() -> Option<web_sys::Cache> {
    let window = web_sys::window()?;
    // `caches` is undefined in insecure contexts: look before calling.
    let storage = js_sys::Reflect::get(&window, &"caches".into()).ok()?;
    if storage.is_undefined() || storage.is_null() {
        return None;
    }
    let storage: web_sys::CacheStorage = storage.unchecked_into();
    // Drop the caches of earlier versions (their files are fetched again).
    if let Ok(keys) = JsFuture::from(storage.keys()).await {
        for k in js_sys::Array::from(&keys).iter() {
            if let Some(name) = k.as_string() {
                if name.starts_with("stepwise-") && name != CACHE_NAME {
                    let _ = JsFuture::from(storage.delete(&name)).await;
                }
            }
        }
    }
    match JsFuture::from(storage.open(CACHE_NAME)).await {
        Ok(c) => Some(c.unchecked_into()),
        Err(e) => {
            log::warn!("Cache API unavailable: {}", js_error(&e));
            None
        }
    }
}

/// The bytes at `url`, `Ok(None)` on 404. Shipped models come from the Cache API when the
/// server still has the same file or cannot be reached.
pub async fn fetch_bytes(url: &str) -> Result<Option<Vec<u8>>, FetchError> {
    let cache = match cacheable(url) {
        true => cache().await,
        false => None,
    };
    if let Some(cache) = &cache {
        match cached(cache, url).await {
            Cached::Fresh(resp) => {
                let bytes = read_body(url, &resp).await?;
                return Ok(Some(bytes));
            }
            Cached::Gone => return Ok(None),
            Cached::Stale => {}
        }
    }
    let window = web_sys::window().ok_or_else(|| FetchError::Network {
        url: url.into(),
        detail: "no window".into(),
    })?;
    let resp = JsFuture::from(window.fetch_with_str(url))
        .await
        .map_err(|e| FetchError::Network {
            url: url.into(),
            detail: js_error(&e),
        })?;
    let resp: web_sys::Response = resp.dyn_into().map_err(|_| FetchError::Network {
        url: url.into(),
        detail: "not a Response".into(),
    })?;
    if resp.status() == 404 {
        return Ok(None);
    }
    if !resp.ok() {
        return Err(FetchError::Http {
            url: url.into(),
            status: resp.status(),
        });
    }
    // The cache stores a copy of the stream while the page reads the other.
    let stored = match (&cache, resp.clone()) {
        (Some(c), Ok(copy)) => Some(JsFuture::from(c.put_with_str(url, &copy))),
        _ => None,
    };
    let bytes = read_body(url, &resp).await?;
    if let Some(put) = stored {
        // A full disk or a quota only costs the next visit a download.
        if let Err(e) = put.await {
            log::warn!("not cached: {url}: {}", js_error(&e));
        }
    }
    Ok(Some(bytes))
}

enum Cached {
    /// The cached answer, still what the server has (or the server is unreachable).
    Fresh(web_sys::Response),
    /// The server no longer has the file.
    Gone,
    /// Not cached, or the server's copy changed: download it.
    Stale,
}

/// Looks `url` up in the cache and asks the server (`HEAD`) whether it still holds.
async fn cached(cache: &web_sys::Cache, url: &str) -> Cached {
    let Ok(hit) = JsFuture::from(cache.match_with_str(url)).await else {
        return Cached::Stale;
    };
    let Ok(hit) = hit.dyn_into::<web_sys::Response>() else {
        return Cached::Stale;
    };
    let Some(window) = web_sys::window() else {
        return Cached::Fresh(hit);
    };
    let init = web_sys::RequestInit::new();
    init.set_method("HEAD");
    init.set_cache(web_sys::RequestCache::NoStore);
    let head = match JsFuture::from(window.fetch_with_str_and_init(url, &init)).await {
        Ok(r) => r.unchecked_into::<web_sys::Response>(),
        // Offline or blocked: last visit's copy is the best there is.
        Err(_) => return Cached::Fresh(hit),
    };
    if head.status() == 404 {
        let _ = JsFuture::from(cache.delete_with_str(url)).await;
        return Cached::Gone;
    }
    if !head.ok() {
        return Cached::Fresh(hit);
    }
    let header = |r: &web_sys::Response, k: &str| r.headers().get(k).ok().flatten();
    let same = ["etag", "last-modified", "content-length"]
        .into_iter()
        .find_map(|k| match (header(&hit, k), header(&head, k)) {
            (Some(a), Some(b)) => Some(a == b),
            _ => None,
        });
    match same {
        Some(true) => Cached::Fresh(hit),
        _ => Cached::Stale,
    }
}

/// Reads a response's body chunk by chunk, counting the bytes into [`download_progress`].
async fn read_body(url: &str, resp: &web_sys::Response) -> Result<Vec<u8>, FetchError> {
    let read_err = |e: JsValue| FetchError::Read {
        url: url.into(),
        detail: js_error(&e),
    };
    let length = resp
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<u64>().ok());
    progress(0, Some(length));
    let Some(body) = resp.body() else {
        return Ok(Vec::new());
    };
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut out = Vec::with_capacity(length.unwrap_or(0) as usize);
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(read_err)?;
        let done = js_sys::Reflect::get(&chunk, &"done".into())
            .map_err(read_err)?
            .as_bool()
            .unwrap_or(true);
        if done {
            break;
        }
        let value: js_sys::Uint8Array = js_sys::Reflect::get(&chunk, &"value".into())
            .map_err(read_err)?
            .unchecked_into();
        let n = value.length() as usize;
        let start = out.len();
        out.resize(start + n, 0);
        value.copy_to(&mut out[start..]);
        progress(n as u64, None);
    }
    Ok(out)
}
