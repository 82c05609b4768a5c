//! The web app's entry point (built for wasm32 by Trunk): panic hook, logging, mount the app.

/// A panic leaves the wasm instance unusable: besides the console trace, say so on the page
/// (`#panic`), so a failure is never a silently frozen canvas.
#[cfg(target_arch = "wasm32")]
fn panic_hook(info: &std::panic::PanicHookInfo) {
    console_error_panic_hook::hook(info);
    let Some(doc) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let Some(body) = doc.body() else { return };
    if doc.get_element_by_id("panic").is_some() {
        return;
    }
    if let Ok(div) = doc.create_element("div") {
        div.set_id("panic");
        let _ = div.set_attribute("role", "alert");
        let _ = div.set_attribute("class", "banner error");
        div.set_text_content(Some(&format!(
            "stepwise stopped after an internal error and must be reloaded (your settings are in the address bar): {info}"
        )));
        let _ = body.prepend_with_node_1(&div);
    }
}

#[cfg(target_arch = "wasm32")]
fn main() {
    std::panic::set_hook(Box::new(panic_hook));
    let _ = console_log::init_with_level(log::Level::Info);
    // In a CPU worker (`stepwise::cpu::workers`) the module runs without a page: the worker
    // script calls `cpu_worker_start` instead.
    if web_sys::window().is_none() {
        return;
    }
    stepwise::app::mount();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("stepwise-app is the browser build; serve it with scripts/serve.sh (or use the `diffuse` CLI natively)");
    std::process::exit(2);
}
