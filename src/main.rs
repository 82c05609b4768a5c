//! The web app's entry point (built for wasm32 by Trunk): panic hook, logging, mount the app.

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    let _ = console_log::init_with_level(log::Level::Info);
    stepwise::app::mount();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("stepwise-app is the browser build; serve it with scripts/serve.sh (or use the `diffuse` CLI natively)");
    std::process::exit(2);
}
