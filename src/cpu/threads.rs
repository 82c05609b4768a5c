//! How the CPU backend spreads an op over threads: natively, rayon's pool (the one the caller is
//! `install`ed in, else the global one: `RAYON_NUM_THREADS` or every core); in the browser, one
//! thread (wasm without shared memory has no threads to give).
//!
//! Only the large ops split: the direct convolution ([`crate::ops::conv2d::direct`]) by images or
//! by output channels, and the GEMMs through the `gemm` crate's own rayon support. A split never
//! changes a result: every output element is summed in the same order on any thread count.

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    /// Set while this thread runs work that is already one of several side by side.
    static ALONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Threads an op may use now: one inside [`alone`].
pub fn count() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    {
        if ALONE.get() {
            1
        } else {
            rayon::current_num_threads()
        }
    }
    #[cfg(target_arch = "wasm32")]
    {
        1
    }
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

/// Runs `f` on every item, on up to [`count`] threads.
pub fn for_each<T: Send>(items: &mut [T], f: impl Fn(&mut T) + Sync + Send) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        if items.len() > 1 {
            items.par_iter_mut().for_each(f);
            return;
        }
    }
    items.iter_mut().for_each(f);
}

/// The `gemm` crate's parallelism for one product of `macs` multiply-adds: its own threads only
/// past [`crate::ops::conv2d::direct::PARALLEL_MACS`], the size from which a split can gain here.
pub fn gemm_parallelism(macs: usize) -> gemm::Parallelism {
    #[cfg(not(target_arch = "wasm32"))]
    {
        match count() {
            n if n > 1 && macs >= crate::ops::conv2d::direct::PARALLEL_MACS => {
                gemm::Parallelism::Rayon(n)
            }
            _ => gemm::Parallelism::None,
        }
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = macs;
        gemm::Parallelism::None
    }
}
