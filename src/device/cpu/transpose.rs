//! Strided 2-D transposes for the CPU convolution's channels-last round trip, in 4×4 register
//! blocks (SSE shuffles natively, simd128 in the browser, scalar elsewhere and at the edges).

/// `dst[j·ds + i] = src[i·ss + j] + add[j]` (`add` absent: + 0) for `i < rows`, `j < cols`.
///
/// # Panics
/// When `src` or `dst` is too short for the strides given.
pub fn transpose(
    src: &[f32],
    ss: usize,
    [rows, cols]: [usize; 2],
    dst: &mut [f32],
    ds: usize,
    add: Option<&[f32]>,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        src.len() > (rows - 1) * ss + cols - 1,
        "transpose: source too short"
    );
    assert!(
        dst.len() > (cols - 1) * ds + rows - 1,
        "transpose: destination too short"
    );
    let addend = |j: usize| add.map_or(0.0, |a| a[j]);
    let (rows4, cols4) = (rows & !3, cols & !3);
    for j0 in (0..cols4).step_by(4) {
        let a = [addend(j0), addend(j0 + 1), addend(j0 + 2), addend(j0 + 3)];
        for i0 in (0..rows4).step_by(4) {
            // SAFETY: rows i0..i0+4 ≤ rows and columns j0..j0+4 ≤ cols, inside both slices by
            // the asserts above.
            unsafe {
                block4(
                    src.as_ptr().add(i0 * ss + j0),
                    ss,
                    dst.as_mut_ptr().add(j0 * ds + i0),
                    ds,
                    a,
                )
            };
        }
    }
    // Edges: the last rows % 4 rows, and the last cols % 4 columns.
    for j in 0..cols {
        let a = addend(j);
        let from = if j < cols4 { rows4 } else { 0 };
        for i in from..rows {
            dst[j * ds + i] = src[i * ss + j] + a;
        }
    }
}

/// One 4×4 block.
///
/// # Safety
/// `src + i·ss + j` and `dst + j·ds + i` for `i, j < 4` must be valid.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block4(src: *const f32, ss: usize, dst: *mut f32, ds: usize, add: [f32; 4]) {
    use std::arch::x86_64::*;
    // SAFETY: SSE is part of x86_64; the pointers are valid by the caller's contract.
    unsafe {
        let r0 = _mm_loadu_ps(src);
        let r1 = _mm_loadu_ps(src.add(ss));
        let r2 = _mm_loadu_ps(src.add(2 * ss));
        let r3 = _mm_loadu_ps(src.add(3 * ss));
        let t0 = _mm_unpacklo_ps(r0, r1);
        let t1 = _mm_unpacklo_ps(r2, r3);
        let t2 = _mm_unpackhi_ps(r0, r1);
        let t3 = _mm_unpackhi_ps(r2, r3);
        let c0 = _mm_movelh_ps(t0, t1);
        let c1 = _mm_movehl_ps(t1, t0);
        let c2 = _mm_movelh_ps(t2, t3);
        let c3 = _mm_movehl_ps(t3, t2);
        _mm_storeu_ps(dst, _mm_add_ps(c0, _mm_set1_ps(add[0])));
        _mm_storeu_ps(dst.add(ds), _mm_add_ps(c1, _mm_set1_ps(add[1])));
        _mm_storeu_ps(dst.add(2 * ds), _mm_add_ps(c2, _mm_set1_ps(add[2])));
        _mm_storeu_ps(dst.add(3 * ds), _mm_add_ps(c3, _mm_set1_ps(add[3])));
    }
}

/// One 4×4 block.
///
/// # Safety
/// `src + i·ss + j` and `dst + j·ds + i` for `i, j < 4` must be valid.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
unsafe fn block4(src: *const f32, ss: usize, dst: *mut f32, ds: usize, add: [f32; 4]) {
    use std::arch::wasm32::*;
    // SAFETY: the pointers are valid by the caller's contract; unaligned loads are allowed.
    unsafe {
        let r0 = v128_load(src as *const v128);
        let r1 = v128_load(src.add(ss) as *const v128);
        let r2 = v128_load(src.add(2 * ss) as *const v128);
        let r3 = v128_load(src.add(3 * ss) as *const v128);
        let t0 = i32x4_shuffle::<0, 4, 1, 5>(r0, r1);
        let t1 = i32x4_shuffle::<0, 4, 1, 5>(r2, r3);
        let t2 = i32x4_shuffle::<2, 6, 3, 7>(r0, r1);
        let t3 = i32x4_shuffle::<2, 6, 3, 7>(r2, r3);
        let c0 = i64x2_shuffle::<0, 2>(t0, t1);
        let c1 = i64x2_shuffle::<1, 3>(t0, t1);
        let c2 = i64x2_shuffle::<0, 2>(t2, t3);
        let c3 = i64x2_shuffle::<1, 3>(t2, t3);
        v128_store(dst as *mut v128, f32x4_add(c0, f32x4_splat(add[0])));
        v128_store(dst.add(ds) as *mut v128, f32x4_add(c1, f32x4_splat(add[1])));
        v128_store(
            dst.add(2 * ds) as *mut v128,
            f32x4_add(c2, f32x4_splat(add[2])),
        );
        v128_store(
            dst.add(3 * ds) as *mut v128,
            f32x4_add(c3, f32x4_splat(add[3])),
        );
    }
}

/// One 4×4 block.
///
/// # Safety
/// `src + i·ss + j` and `dst + j·ds + i` for `i, j < 4` must be valid.
#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
#[inline(always)]
unsafe fn block4(src: *const f32, ss: usize, dst: *mut f32, ds: usize, add: [f32; 4]) {
    for j in 0..4 {
        for i in 0..4 {
            // SAFETY: by the caller's contract.
            unsafe { *dst.add(j * ds + i) = *src.add(i * ss + j) + add[j] };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition_at_every_edge() {
        for (rows, cols) in [(1, 1), (4, 4), (5, 3), (7, 9), (8, 16), (13, 6)] {
            let (ss, ds) = (cols + 3, rows + 2);
            let src: Vec<f32> = (0..rows * ss).map(|v| v as f32 * 0.5).collect();
            let add: Vec<f32> = (0..cols).map(|v| 100.0 * v as f32).collect();
            for with_add in [false, true] {
                let mut dst = vec![f32::NAN; cols * ds];
                let a = with_add.then_some(&add[..]);
                transpose(&src, ss, [rows, cols], &mut dst, ds, a);
                for i in 0..rows {
                    for j in 0..cols {
                        let want = src[i * ss + j] + if with_add { add[j] } else { 0.0 };
                        assert_eq!(dst[j * ds + i], want, "{rows}x{cols} at ({i},{j})");
                    }
                }
                // The gaps between destination rows are left alone.
                assert!(
                    (0..cols).all(|j| dst[j * ds + rows..(j + 1) * ds].iter().all(|v| v.is_nan()))
                );
            }
        }
    }
}
