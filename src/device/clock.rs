//! A monotonic clock in milliseconds, natively and in the browser (`web-time`).

/// Milliseconds from a monotonic clock, natively and in the browser.
pub fn now_ms() -> f64 {
    thread_local! {
        static START: web_time::Instant = web_time::Instant::now();
    }
    START.with(|s| s.elapsed().as_secs_f64() * 1000.0)
}
