//! The AVX2+FMA instantiation of the generic kernels, chosen at run time.
//!
//! `unsafe` here (allowed by the parent module): calling a `#[target_feature]` function
//! and the `core::arch` intrinsics inside the [`Avx2Fma`] lane type. Every public entry
//! point checks [`available`] first and returns `None`/`false` when the CPU lacks the
//! features (or under miri, which cannot run them), so callers fall back to the portable
//! path.

use core::arch::x86_64::{
    __m256, _mm256_add_ps, _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps,
    _mm256_loadu_ps, _mm256_set1_ps, _mm256_storeu_ps, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32,
    _mm_movehl_ps, _mm_shuffle_ps,
};
use std::sync::atomic::{AtomicU8, Ordering};

use super::{
    axpy_finite_generic, axpy_generic, dot_generic, matmul_nt_generic, matvec_generic, Lanes,
};

/// Eight lanes in one 256-bit register.
///
/// Only instantiated inside the `#[target_feature(enable = "avx2,fma")]` functions below,
/// which are only entered after [`available`] returned true.
#[derive(Clone, Copy)]
struct Avx2Fma(__m256);

impl Lanes for Avx2Fma {
    #[inline(always)]
    fn splat(v: f32) -> Self {
        // SAFETY: only reached from functions compiled with avx2+fma, entered after detection.
        Self(unsafe { _mm256_set1_ps(v) })
    }
    #[inline(always)]
    fn load(s: &[f32; 8]) -> Self {
        // SAFETY: `s` is 32 readable bytes; `loadu` has no alignment requirement; the AVX
        // feature is present (see `splat`).
        Self(unsafe { _mm256_loadu_ps(s.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, s: &mut [f32; 8]) {
        // SAFETY: `s` is 32 writable bytes, exclusively borrowed; unaligned store; AVX present.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: AVX present (see `splat`).
        Self(unsafe { _mm256_add_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn mul_add(self, m: Self, a: Self) -> Self {
        // SAFETY: FMA present (see `splat`).
        Self(unsafe { _mm256_fmadd_ps(self.0, m.0, a.0) })
    }
    #[inline(always)]
    fn sum(self) -> f32 {
        // SAFETY: AVX (and so SSE) present (see `splat`).
        unsafe {
            let lo = _mm256_castps256_ps128(self.0);
            let hi = _mm256_extractf128_ps::<1>(self.0);
            let s = _mm_add_ps(lo, hi);
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
            _mm_cvtss_f32(s)
        }
    }
}

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;
static DETECTED: AtomicU8 = AtomicU8::new(UNKNOWN);

/// True when this CPU has AVX2 and FMA (always false under miri).
pub(super) fn available() -> bool {
    match DETECTED.load(Ordering::Relaxed) {
        YES => true,
        NO => false,
        _ => {
            let yes = !cfg!(miri)
                && std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma");
            DETECTED.store(if yes { YES } else { NO }, Ordering::Relaxed);
            if yes {
                log::debug!("nn kernels: using AVX2+FMA");
            } else {
                log::debug!("nn kernels: using the portable (wide, compile-time) path");
            }
            yes
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_generic::<Avx2Fma>(a, b)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
    axpy_generic::<Avx2Fma>(alpha, x, y)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_finite_avx2(alpha: f32, x: &[f32], y: &mut [f32]) -> bool {
    axpy_finite_generic::<Avx2Fma>(alpha, x, y)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn matvec_avx2(w: &[f32], x: &[f32], y: &mut [f32]) {
    matvec_generic::<Avx2Fma>(w, x, y)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn matmul_nt_avx2(a: &[f32], b: &[f32], c: &mut [f32], k: usize, n: usize) {
    matmul_nt_generic::<Avx2Fma>(a, b, c, k, n)
}

/// AVX2 dot product, or `None` without the features.
#[inline]
pub(super) fn dot(a: &[f32], b: &[f32]) -> Option<f32> {
    if !available() {
        return None;
    }
    // SAFETY: avx2 and fma were detected on this CPU just above.
    Some(unsafe { dot_avx2(a, b) })
}

/// AVX2 axpy; false (and `y` untouched) without the features.
#[inline]
pub(super) fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) -> bool {
    if !available() {
        return false;
    }
    // SAFETY: avx2 and fma were detected on this CPU just above.
    unsafe { axpy_avx2(alpha, x, y) };
    true
}

/// AVX2 checked axpy (whether every result is finite), or `None` (and `y` untouched)
/// without the features.
#[inline]
pub(super) fn axpy_finite(alpha: f32, x: &[f32], y: &mut [f32]) -> Option<bool> {
    if !available() {
        return None;
    }
    // SAFETY: avx2 and fma were detected on this CPU just above.
    Some(unsafe { axpy_finite_avx2(alpha, x, y) })
}

/// AVX2 matrix-vector product; false (and `y` untouched) without the features.
#[inline]
pub(super) fn matvec(w: &[f32], x: &[f32], y: &mut [f32]) -> bool {
    if !available() {
        return false;
    }
    // SAFETY: avx2 and fma were detected on this CPU just above.
    unsafe { matvec_avx2(w, x, y) };
    true
}

/// AVX2 `C = A Bᵀ`; false (and `c` untouched) without the features.
#[inline]
pub(super) fn matmul_nt(a: &[f32], b: &[f32], c: &mut [f32], k: usize, n: usize) -> bool {
    if !available() {
        return false;
    }
    // SAFETY: avx2 and fma were detected on this CPU just above.
    unsafe { matmul_nt_avx2(a, b, c, k, n) };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_is_stable_and_falls_back() {
        let first = available();
        assert_eq!(first, available());
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let want: f32 = a.iter().map(|x| x * x).sum();
        match dot(&a, &a) {
            Some(s) => assert!((s - want).abs() <= 1e-3 * want),
            None => assert!(!first),
        }
        if cfg!(miri) {
            assert!(!first, "miri must take the portable path");
        }
    }
}
