//! How the CPU backend spreads work over threads: natively, a `micropool` pool whose idle
//! threads spin for a while before they sleep, with the calling thread taking a share; in the
//! browser, one thread (wasm without shared memory has no threads to give).
//!
//! Two levels use it. A forward of several images runs whole forwards on shares of the batch
//! side by side ([`crate::model::UNet2DModel::forward`]), each with its ops [`alone`] on its
//! thread. A forward of one image splits its large convolutions
//! ([`crate::ops::conv2d::direct`]: by pixel rows or output channels) and GEMMs
//! ([`crate::ops::matmul::sgemm`]: by rows). A convolution's split never changes a result (every
//! output element is summed in the same order on any thread count); a GEMM's may round
//! differently, as the `gemm` crate may block fewer rows otherwise.
//!
//! Why not rayon: its idle threads sleep after a few tens of microseconds, and the serial ops
//! between two convolutions (group norm statistics, attention) take longer than that, so each
//! split paid to wake a thread: 30–100 µs on the 2-core VM of BENCHMARKS.md, up to 500 µs when
//! the host was busy, where micropool's split costs 1–4 µs (`examples/cpu_threads`). That is
//! what made batch-1 forwards no faster on two threads than on one.

/// How long an idle pool thread spins before it sleeps, in micropool's spin cycles: about 2 ms
/// here, longer than the serial stretches of a forward, so that a forward's splits find it
/// awake; it costs one core's spinning for 2 ms after the last split.
#[cfg(not(target_arch = "wasm32"))]
const IDLE_SPIN_CYCLES: usize = 100_000;

/// The number of threads of the global pool: `STEPWISE_THREADS`, else every core; set by
/// [`init`] if that runs first.
#[cfg(not(target_arch = "wasm32"))]
static GLOBAL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    /// Set while this thread runs work that is already one of several side by side.
    static ALONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Sets the number of threads (the calling thread included) the CPU backend uses from now on;
/// an error once the pool has started with another count.
pub fn init(threads: usize) -> Result<(), String> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let threads = threads.max(1);
        let got = *GLOBAL.get_or_init(|| start(threads));
        if got != threads {
            return Err(format!("the CPU threads already run with {got} threads"));
        }
    }
    #[cfg(target_arch = "wasm32")]
    let _ = threads;
    Ok(())
}

/// Starts the global pool with `threads - 1` pool threads beside the caller's.
#[cfg(not(target_arch = "wasm32"))]
fn start(threads: usize) -> usize {
    if threads > 1 {
        pool(threads).build_global();
    }
    threads
}

/// A pool of `threads` threads counting the caller: the global one, or [`with_threads`]' own.
#[cfg(not(target_arch = "wasm32"))]
fn pool(threads: usize) -> micropool::ThreadPoolBuilder {
    micropool::ThreadPoolBuilder::default()
        .num_threads(threads.max(2) - 1)
        .idle_spin_cycles(IDLE_SPIN_CYCLES)
}

/// Threads an op may use now, the caller's included: one inside [`alone`].
pub fn count() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    {
        if ALONE.get() {
            1
        } else if INSTALLED.get() {
            micropool::num_threads() + 1
        } else {
            *GLOBAL.get_or_init(|| {
                let from_env = std::env::var("STEPWISE_THREADS").ok();
                let n = from_env
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
                start(n.max(1))
            })
        }
    }
    #[cfg(target_arch = "wasm32")]
    {
        1
    }
}

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    /// Set while this thread runs inside [`with_threads`]' own pool.
    static INSTALLED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` on a pool of `threads` threads (the caller's included), whatever the global count:
/// for tests and benchmarks that compare thread counts in one process.
#[cfg(not(target_arch = "wasm32"))]
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    let pool = pool(threads).build();
    let was = INSTALLED.replace(true);
    let r = if threads <= 1 {
        alone(f)
    } else {
        pool.install(f)
    };
    INSTALLED.set(was);
    r
}

/// Runs `f` with every op on this thread alone: for work that is itself one of several parts
/// running side by side (a share of a batch), where splitting its ops further would only make
/// the threads wait for each other.
pub fn alone<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let was = ALONE.replace(true);
        let r = f();
        ALONE.set(was);
        r
    }
    #[cfg(target_arch = "wasm32")]
    f()
}

/// Runs `f` on every item, on up to [`count`] threads (the caller takes a share).
pub fn for_each<T: Send>(items: &mut [T], f: impl Fn(&mut T) + Sync + Send) {
    #[cfg(not(target_arch = "wasm32"))]
    if count() > 1 {
        split(items, &f);
        return;
    }
    items.iter_mut().for_each(f);
}

/// Halves `items` until one is left, each half on a thread if one is free.
#[cfg(not(target_arch = "wasm32"))]
fn split<T: Send>(items: &mut [T], f: &(impl Fn(&mut T) + Sync)) {
    match items {
        [] => {}
        [one] => f(one),
        _ => {
            let (a, b) = items.split_at_mut(items.len() / 2);
            micropool::join(|| split(a, f), || split(b, f));
        }
    }
}

/// A pointer that threads may share: for parts of one op that write disjoint elements through
/// it (the `gemm` crate and the convolution kernel take raw pointers).
#[derive(Clone, Copy)]
pub struct Shared<P: Copy>(P);

// SAFETY: [`Shared::new`]'s caller promises what makes sharing sound.
unsafe impl<P: Copy> Send for Shared<P> {}
unsafe impl<P: Copy> Sync for Shared<P> {}

impl<P: Copy> Shared<P> {
    /// # Safety
    /// The threads that use it must touch disjoint elements through it (or only read), and
    /// what it points to must outlive them.
    pub unsafe fn new(p: P) -> Self {
        Self(p)
    }

    /// The pointer (a method, so that closures capture the `Send` wrapper, not its field).
    pub fn get(self) -> P {
        self.0
    }
}
