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
    // The sentence for the user; the panic's message and source location behind "Details".
    let el = |tag: &str, text: &str| {
        let e = doc.create_element(tag).ok()?;
        e.set_text_content(Some(text));
        Some(e)
    };
    let (Ok(div), Some(details), Some(summary), Some(pre)) = (
        doc.create_element("div"),
        el("details", ""),
        el("summary", "Details"),
        el("pre", &info.to_string()),
    ) else {
        return;
    };
    div.set_id("panic");
    let _ = div.set_attribute("role", "alert");
    let _ = div.set_attribute("class", "banner error");
    div.set_text_content(Some(
        "stepwise stopped after an internal error. Reload the page to go on: your settings are in the address bar. ",
    ));
    let _ = details.set_attribute("class", "more");
    let _ = details.append_with_node_2(&summary, &pre);
    let _ = div.append_with_node_1(&details);
    let _ = body.prepend_with_node_1(&div);
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
