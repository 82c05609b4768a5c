//! "Open your own": the files of a diffusers folder the user picks (`<input webkitdirectory>`) or
//! drops on the page, read with the File API into memory and loaded by the engine. Nothing
//! leaves the browser; only configs and weights are read, so a large folder costs nothing extra.

use std::collections::HashMap;

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use super::engine::{self, ModelEntry, FILES_PREFIX};
use super::settings::{Inputs, LOCAL_MODEL};
use super::state::{LocalModel, ModelState};

#[wasm_bindgen(module = "/src/app/files.js")]
extern "C" {
    #[wasm_bindgen(js_name = pickedFiles)]
    fn picked_files(input: &web_sys::HtmlInputElement) -> js_sys::Array;
    #[wasm_bindgen(js_name = droppedFiles)]
    fn dropped_files(dt: &web_sys::DataTransfer) -> js_sys::Promise;
}

/// The `[path, File]` pairs files.js returns.
fn pairs(arr: &js_sys::Array) -> Vec<(String, web_sys::File)> {
    arr.iter()
        .filter_map(|p| {
            let p: js_sys::Array = p.dyn_into().ok()?;
            Some((p.get(0).as_string()?, p.get(1).dyn_into().ok()?))
        })
        .collect()
}

/// The name of loose files (picked or dropped without a folder around them).
const LOOSE: &str = "your files";
/// The picker's entry while the files are read and loaded.
const READING: &str = "reading your files…";

/// A JS exception's message (a DOMException or Error), else its debug form.
fn js_error(e: JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// The folder's name (the last top folder stripped from the paths) and its model files, read
/// into memory, keyed by their path in the model folder.
async fn read_model_files(
    list: Vec<(String, web_sys::File)>,
) -> Result<(String, HashMap<String, Vec<u8>>), String> {
    let paths: Vec<String> = list.iter().map(|(p, _)| p.clone()).collect();
    let rel = engine::model_relative_paths(&paths);
    let name = paths
        .first()
        .zip(rel.first())
        .and_then(|(full, r)| {
            let parts: Vec<&str> = full.split(['/', '\\']).filter(|s| !s.is_empty()).collect();
            let stripped = parts.len().checked_sub(r.split('/').count())?;
            stripped.checked_sub(1).map(|i| parts[i].to_string())
        })
        .unwrap_or_else(|| LOOSE.to_string());
    let max = crate::model::limits::MAX_WEIGHTS_BYTES as f64;
    let mut files = HashMap::new();
    for (r, (_, f)) in rel.into_iter().zip(list) {
        if !engine::is_model_file(&r) {
            continue;
        }
        if f.size() > max {
            return Err(format!(
                "{r} is {:.0} MB, more than the {:.0} MB a model file may have",
                f.size() / 1e6,
                max / 1e6
            ));
        }
        let buf = JsFuture::from(f.array_buffer())
            .await
            .map_err(|e| format!("reading {r}: {}", js_error(e)))?;
        files.insert(r, js_sys::Uint8Array::new(&buf).to_vec());
    }
    Ok((name, files))
}

/// The "open your own model" button and drop zone, under the model picker.
#[component]
pub fn OpenModel() -> impl IntoView {
    let inputs = expect_context::<Inputs>();
    let models = expect_context::<ModelState>();
    let input_ref = NodeRef::<leptos::html::Input>::new();
    let over = RwSignal::new(false);
    Effect::new(move |_| {
        if let Some(i) = input_ref.get() {
            i.set_webkitdirectory(true);
        }
    });
    let open = move |list: Vec<(String, web_sys::File)>| {
        if list.is_empty() {
            return;
        }
        let entry = |name: &str| ModelEntry {
            name: LOCAL_MODEL.into(),
            // Loose files and the placeholder while reading need no suffix.
            title: if name == LOOSE || name == READING {
                name.to_string()
            } else {
                format!("{name} (your files)")
            },
            path: format!("{FILES_PREFIX}{name}"),
            classes: vec![],
            pixel_peer: None,
        };
        models.local.set(Some(LocalModel {
            entry: entry(READING),
            info: None,
        }));
        // A model picked by hand starts from its own defaults.
        inputs.touched.set(Vec::new());
        inputs.model.set(LOCAL_MODEL.into());
        spawn_local(async move {
            let (name, r) = match read_model_files(list).await {
                Ok((name, files)) => {
                    // Let "loading…" paint before the synchronous weight upload.
                    engine::yield_to_browser(0).await;
                    let r = engine::load_model_from_files(&name, files);
                    (name, r)
                }
                Err(e) => (LOOSE.to_string(), Err(e)),
            };
            let info = r.map_err(|e| format!("Could not open your model “{name}”: {e}"));
            models.local.set(Some(LocalModel {
                entry: entry(&name),
                info: Some(info),
            }));
        });
    };
    let on_drop = move |e: web_sys::DragEvent| {
        e.prevent_default();
        over.set(false);
        let Some(dt) = e.data_transfer() else { return };
        // Read the entries now: the DataTransfer is empty once the handler returns.
        let p = dropped_files(&dt);
        spawn_local(async move {
            match JsFuture::from(p).await {
                Ok(a) => open(pairs(&a.unchecked_into())),
                Err(e) => log::warn!("drop: {}", js_error(e)),
            }
        });
    };
    view! {
        <div class="dropzone" id="model-drop" class:over=move || over.get()
            on:dragover=move |e: web_sys::DragEvent| { e.prevent_default(); over.set(true) }
            on:dragleave=move |_| over.set(false)
            on:drop=on_drop>
            // The input first: its keyboard focus shows as the ring of the label after it.
            <input type="file" id="model-files" class="sr" multiple node_ref=input_ref
                on:change=move |_| {
                    if let Some(i) = input_ref.get() {
                        open(pairs(&picked_files(&i)));
                        i.set_value("");
                    }
                } />
            <label for="model-files" class="file-button">"Open your own model…"</label>
            <span class="muted">"or drop a diffusers folder here (model_index.json, unet/, scheduler/, or a bare UNet folder). Its files stay in this browser."</span>
        </div>
    }
}
