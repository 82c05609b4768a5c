//! One module per op family: shape checks, the CPU reference, and the GPU wrapper of the WGSL
//! file of the same name in `shaders/`.

/// Defines a CPU loop function compiled twice: for AVX2 + FMA, taken where the CPU has them
/// (std detects once and caches), and for the baseline target (SSE2 natively, simd128 in the
/// browser). The loops are written to vectorise; AVX2 doubles their width.
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) {
                    imp($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: this CPU has the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}

pub mod attention;
pub mod conv2d;
pub mod elementwise;
pub mod embedding;
pub mod groupnorm;
pub mod matmul;
pub mod resample;
