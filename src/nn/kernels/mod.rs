//! Numeric kernels: dot, axpy, matrix-vector, matrix-matrix, activations.
//!
//! Every kernel here is written once, generic over `Lanes` (eight `f32` lanes), and
//! instantiated twice:
//!
//! * with [`wide::f32x8`], which picks its instructions when the crate is compiled. On the
//!   default `x86_64` target that is SSE2, since nobody sets `RUSTFLAGS` for a library. This
//!   portable path is also what miri runs and what other architectures get.
//! * on `x86_64`, with a 256-bit AVX2+FMA lane type inside `#[target_feature]` wrappers
//!   (the `x86` submodule), chosen at run time with `is_x86_feature_detected!`. The generic kernels are
//!   `#[inline(always)]`, so the wrapper compiles them with the wide instructions.
//!
//! The public functions dispatch; [`portable`] exposes the SSE2/portable instantiation so
//! benches and tests can compare the two. Lengths need not be multiples of eight: each kernel
//! finishes with a scalar tail. Elementwise activations use `wide::f32x8` only: they are
//! linear in the layer width and never the bottleneck next to the matrix products.
//!
//! Results of the two paths differ in rounding only (FMA rounds once, the SSE2 path twice).
//!
//! `unsafe` in this module is confined to the `x86` submodule (target-feature calls and
//! intrinsics) and [`sgemm_nt`] (the call into `matrixmultiply`); each block says why it holds.
#![allow(unsafe_code)]
// Register blocks index several fixed-size arrays in lockstep; indices read clearer there.
#![allow(clippy::needless_range_loop)]

use wide::f32x8;

#[cfg(target_arch = "x86_64")]
mod x86;

/// Eight `f32` lanes: the operations the generic kernels need.
pub(crate) trait Lanes: Copy {
    /// All lanes set to `v`.
    fn splat(v: f32) -> Self;
    /// Loads eight values.
    fn load(s: &[f32; 8]) -> Self;
    /// Stores eight values.
    fn store(self, s: &mut [f32; 8]);
    /// Lane-wise sum.
    fn add(self, o: Self) -> Self;
    /// `self * m + a`, fused where the instruction set has it.
    fn mul_add(self, m: Self, a: Self) -> Self;
    /// Sum of the eight lanes.
    fn sum(self) -> f32;
}

impl Lanes for f32x8 {
    #[inline(always)]
    fn splat(v: f32) -> Self {
        f32x8::splat(v)
    }
    #[inline(always)]
    fn load(s: &[f32; 8]) -> Self {
        f32x8::new(*s)
    }
    #[inline(always)]
    fn store(self, s: &mut [f32; 8]) {
        *s = self.to_array();
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    fn mul_add(self, m: Self, a: Self) -> Self {
        f32x8::mul_add(self, m, a)
    }
    #[inline(always)]
    fn sum(self) -> f32 {
        self.reduce_add()
    }
}

/// Views an exact chunk of eight as an array (the length check folds away after
/// `chunks_exact(8)`).
#[inline(always)]
fn lanes<L: Lanes>(s: &[f32]) -> L {
    L::load(s.try_into().expect("chunk of eight"))
}

#[inline(always)]
fn store_lanes<L: Lanes>(v: L, s: &mut [f32]) {
    v.store(s.try_into().expect("chunk of eight"));
}

/// Generic dot product over the common prefix of `a` and `b`.
#[inline(always)]
pub(crate) fn dot_generic<L: Lanes>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [L::splat(0.0); 4];
    let mut ca = a.chunks_exact(32);
    let mut cb = b.chunks_exact(32);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..4 {
            let r = 8 * k..8 * k + 8;
            acc[k] = lanes::<L>(&x[r.clone()]).mul_add(lanes(&y[r]), acc[k]);
        }
    }
    let mut ca8 = ca.remainder().chunks_exact(8);
    let mut cb8 = cb.remainder().chunks_exact(8);
    for (x, y) in (&mut ca8).zip(&mut cb8) {
        acc[0] = lanes::<L>(x).mul_add(lanes(y), acc[0]);
    }
    let mut s = acc[0].add(acc[1]).add(acc[2].add(acc[3])).sum();
    for (x, y) in ca8.remainder().iter().zip(cb8.remainder()) {
        s += x * y;
    }
    s
}

/// Generic `y += alpha * x` over the common prefix.
#[inline(always)]
pub(crate) fn axpy_generic<L: Lanes>(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    let va = L::splat(alpha);
    let mut cx = x.chunks_exact(8);
    let mut cy = y.chunks_exact_mut(8);
    for (xs, ys) in (&mut cx).zip(&mut cy) {
        let r = lanes::<L>(xs).mul_add(va, lanes(ys));
        store_lanes(r, ys);
    }
    for (xs, ys) in cx.remainder().iter().zip(cy.into_remainder()) {
        *ys += alpha * xs;
    }
}

/// Generic `y += alpha * x` over the common prefix, returning whether every result is
/// finite. The values written are exactly [`axpy_generic`]'s (same fused operation per
/// element, same eight-wide body and scalar tail); alongside, each result `r` is folded
/// into `acc = r * 0 + acc`, which stays `±0` while every `r` is finite and becomes NaN for
/// good at the first NaN or infinity (`inf * 0` is NaN). Four accumulators, so the fold's
/// latency does not bound the loop.
#[inline(always)]
pub(crate) fn axpy_finite_generic<L: Lanes>(alpha: f32, x: &[f32], y: &mut [f32]) -> bool {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    let va = L::splat(alpha);
    let zero = L::splat(0.0);
    let mut acc = [zero; 4];
    let mut cx = x.chunks_exact(32);
    let mut cy = y.chunks_exact_mut(32);
    for (xs, ys) in (&mut cx).zip(&mut cy) {
        for k in 0..4 {
            let r = 8 * k..8 * k + 8;
            let v = lanes::<L>(&xs[r.clone()]).mul_add(va, lanes(&ys[r.clone()]));
            store_lanes(v, &mut ys[r]);
            acc[k] = v.mul_add(zero, acc[k]);
        }
    }
    let mut cx8 = cx.remainder().chunks_exact(8);
    let mut cy8 = cy.into_remainder().chunks_exact_mut(8);
    for (xs, ys) in (&mut cx8).zip(&mut cy8) {
        let v = lanes::<L>(xs).mul_add(va, lanes(ys));
        store_lanes(v, ys);
        acc[0] = v.mul_add(zero, acc[0]);
    }
    let mut tail = 0.0f32;
    for (xs, ys) in cx8.remainder().iter().zip(cy8.into_remainder()) {
        *ys += alpha * xs;
        tail += *ys * 0.0;
    }
    acc[0].add(acc[1]).add(acc[2].add(acc[3])).sum() + tail == 0.0
}

/// Four dot products of rows `r` against one `x`, eight accumulators for latency hiding.
#[inline(always)]
fn dot4<L: Lanes>(r: [&[f32]; 4], x: &[f32]) -> [f32; 4] {
    let n = x.len();
    let mut acc = [[L::splat(0.0); 2]; 4];
    let full = n / 16 * 16;
    let mut i = 0;
    while i < full {
        let x0: L = lanes(&x[i..i + 8]);
        let x1: L = lanes(&x[i + 8..i + 16]);
        for k in 0..4 {
            acc[k][0] = lanes::<L>(&r[k][i..i + 8]).mul_add(x0, acc[k][0]);
            acc[k][1] = lanes::<L>(&r[k][i + 8..i + 16]).mul_add(x1, acc[k][1]);
        }
        i += 16;
    }
    if i + 8 <= n {
        let x0: L = lanes(&x[i..i + 8]);
        for k in 0..4 {
            acc[k][0] = lanes::<L>(&r[k][i..i + 8]).mul_add(x0, acc[k][0]);
        }
        i += 8;
    }
    let mut out = [0.0; 4];
    for k in 0..4 {
        out[k] = acc[k][0].add(acc[k][1]).sum();
        for j in i..n {
            out[k] += r[k][j] * x[j];
        }
    }
    out
}

/// Generic `y = W x` with `W` row-major `[y.len() x x.len()]`.
#[inline(always)]
pub(crate) fn matvec_generic<L: Lanes>(w: &[f32], x: &[f32], y: &mut [f32]) {
    let n = x.len();
    if n == 0 {
        y.fill(0.0);
        return;
    }
    let w = &w[..n * y.len()];
    let mut wb = w.chunks_exact(4 * n);
    let mut yb = y.chunks_exact_mut(4);
    for (block, ys) in (&mut wb).zip(&mut yb) {
        let (r0, rest) = block.split_at(n);
        let (r1, rest) = rest.split_at(n);
        let (r2, r3) = rest.split_at(n);
        ys.copy_from_slice(&dot4::<L>([r0, r1, r2, r3], x));
    }
    for (row, yo) in wb.remainder().chunks_exact(n).zip(yb.into_remainder()) {
        *yo = dot_generic::<L>(row, x);
    }
}

/// 2 x 4 register block of `C = A Bᵀ`: rows `a` of A against rows `b` of B.
#[inline(always)]
fn block2x4<L: Lanes>(a: [&[f32]; 2], b: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let k = a[0].len();
    let mut acc = [[L::splat(0.0); 4]; 2];
    let full = k / 8 * 8;
    let mut i = 0;
    while i < full {
        let a0: L = lanes(&a[0][i..i + 8]);
        let a1: L = lanes(&a[1][i..i + 8]);
        for j in 0..4 {
            let bj: L = lanes(&b[j][i..i + 8]);
            acc[0][j] = a0.mul_add(bj, acc[0][j]);
            acc[1][j] = a1.mul_add(bj, acc[1][j]);
        }
        i += 8;
    }
    let mut out = [[0.0; 4]; 2];
    for r in 0..2 {
        for j in 0..4 {
            let mut s = acc[r][j].sum();
            for t in i..k {
                s += a[r][t] * b[j][t];
            }
            out[r][j] = s;
        }
    }
    out
}

/// Generic `C = A Bᵀ`: A row-major `[m x k]`, B row-major `[n x k]`, C row-major `[m x n]`,
/// with `m = c.len() / n`.
#[inline(always)]
pub(crate) fn matmul_nt_generic<L: Lanes>(a: &[f32], b: &[f32], c: &mut [f32], k: usize, n: usize) {
    if n == 0 {
        return;
    }
    let m = c.len() / n;
    if k == 0 {
        c.fill(0.0);
        return;
    }
    let nb = n / 4 * 4;
    let mut row = 0;
    while row + 2 <= m {
        let a0 = &a[row * k..(row + 1) * k];
        let a1 = &a[(row + 1) * k..(row + 2) * k];
        let mut j = 0;
        while j < nb {
            let bs = [
                &b[j * k..(j + 1) * k],
                &b[(j + 1) * k..(j + 2) * k],
                &b[(j + 2) * k..(j + 3) * k],
                &b[(j + 3) * k..(j + 4) * k],
            ];
            let r = block2x4::<L>([a0, a1], bs);
            c[row * n + j..row * n + j + 4].copy_from_slice(&r[0]);
            c[(row + 1) * n + j..(row + 1) * n + j + 4].copy_from_slice(&r[1]);
            j += 4;
        }
        for j in nb..n {
            let bj = &b[j * k..(j + 1) * k];
            c[row * n + j] = dot_generic::<L>(a0, bj);
            c[(row + 1) * n + j] = dot_generic::<L>(a1, bj);
        }
        row += 2;
    }
    if row < m {
        matvec_generic::<L>(
            &b[..n * k],
            &a[row * k..(row + 1) * k],
            &mut c[row * n..(row + 1) * n],
        );
    }
}

/// True when the wide (AVX2+FMA) path is taken on this machine.
pub fn wide_instructions_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Dot product `Σ a[i] b[i]`.
///
/// # Panics
/// If the lengths differ.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = x86::dot(a, b) {
        return s;
    }
    dot_generic::<f32x8>(a, b)
}

/// `y += alpha * x`.
///
/// # Panics
/// If the lengths differ.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if x86::axpy(alpha, x, y) {
        return;
    }
    axpy_generic::<f32x8>(alpha, x, y)
}

/// `y += alpha * x`, returning whether every result is finite (not NaN, not ±infinity):
/// the same values as [`axpy`], with the finiteness check fused into the same pass.
///
/// # Panics
/// If the lengths differ.
pub fn axpy_finite(alpha: f32, x: &[f32], y: &mut [f32]) -> bool {
    assert_eq!(x.len(), y.len(), "axpy_finite: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if let Some(finite) = x86::axpy_finite(alpha, x, y) {
        return finite;
    }
    axpy_finite_generic::<f32x8>(alpha, x, y)
}

/// `y = W x`, with `W` row-major `[y.len() x x.len()]`.
///
/// # Panics
/// If `w.len() != y.len() * x.len()`.
pub fn matvec(w: &[f32], x: &[f32], y: &mut [f32]) {
    assert_eq!(w.len(), x.len() * y.len(), "matvec: shape mismatch");
    #[cfg(target_arch = "x86_64")]
    if x86::matvec(w, x, y) {
        return;
    }
    matvec_generic::<f32x8>(w, x, y)
}

/// `C = A Bᵀ`: `a` row-major `[m x k]`, `b` row-major `[n x k]`, `c` row-major `[m x n]`.
///
/// This is the batched layer product (samples times weight rows). It is a plain register-
/// blocked kernel without packing; [`crate::nn`] uses `matrixmultiply::sgemm` for large
/// batches, where packing pays (see PERF.md).
///
/// # Panics
/// If the slice lengths do not match `m`, `k`, `n` (with `m = c.len() / n`).
pub fn matmul_nt(a: &[f32], b: &[f32], c: &mut [f32], k: usize, n: usize) {
    check_matmul(a, b, c, k, n);
    #[cfg(target_arch = "x86_64")]
    if x86::matmul_nt(a, b, c, k, n) {
        return;
    }
    matmul_nt_generic::<f32x8>(a, b, c, k, n)
}

/// `C = A Bᵀ` through `matrixmultiply::sgemm` (packed, cache-blocked, runtime-dispatched
/// AVX/FMA/AVX-512 microkernels). Same shapes and panics as [`matmul_nt`].
pub fn sgemm_nt(a: &[f32], b: &[f32], c: &mut [f32], k: usize, n: usize) {
    check_matmul(a, b, c, k, n);
    if n == 0 {
        return;
    }
    let m = c.len() / n;
    if m == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    let (k_i, n_i) = (k as isize, n as isize);
    // SAFETY: `check_matmul` established a.len() == m*k, b.len() == n*k, c.len() == m*n.
    // A is read as m x k with strides (k, 1); B as the k x n matrix Bᵀ with strides (1, k),
    // i.e. element (t, j) at j*k + t < n*k; C is written as m x n with strides (n, 1). All
    // indices stay inside their slices, `c` is exclusively borrowed and does not alias `a`/`b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k_i,
            1,
            b.as_ptr(),
            1,
            k_i,
            0.0,
            c.as_mut_ptr(),
            n_i,
            1,
        );
    }
}

fn check_matmul(a: &[f32], b: &[f32], c: &[f32], k: usize, n: usize) {
    assert!(n > 0 || c.is_empty(), "matmul_nt: n = 0 with non-empty c");
    let m = c.len().checked_div(n).unwrap_or(0);
    assert_eq!(c.len(), m * n, "matmul_nt: c is not m x n");
    assert_eq!(a.len(), m * k, "matmul_nt: a is not m x k");
    assert_eq!(b.len(), n * k, "matmul_nt: b is not n x k");
}

/// The same kernels instantiated with `wide::f32x8` only: SSE2 on a default `x86_64` build.
///
/// For comparison in benches and tests; the dispatching functions in the parent module are
/// never slower.
pub mod portable {
    use super::*;

    /// Portable [`super::dot`].
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot: length mismatch");
        dot_generic::<f32x8>(a, b)
    }

    /// Portable [`super::axpy`].
    pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), y.len(), "axpy: length mismatch");
        axpy_generic::<f32x8>(alpha, x, y)
    }

    /// Portable [`super::matvec`].
    pub fn matvec(w: &[f32], x: &[f32], y: &mut [f32]) {
        assert_eq!(w.len(), x.len() * y.len(), "matvec: shape mismatch");
        matvec_generic::<f32x8>(w, x, y)
    }

    /// Portable [`super::matmul_nt`].
    pub fn matmul_nt(a: &[f32], b: &[f32], c: &mut [f32], k: usize, n: usize) {
        check_matmul(a, b, c, k, n);
        matmul_nt_generic::<f32x8>(a, b, c, k, n)
    }
}

// ---- elementwise: activations and derivatives (wide::f32x8, scalar tail) ----

/// Applies `f` to eight lanes at a time and `g` to the tail.
#[inline(always)]
fn map_inplace(v: &mut [f32], f: impl Fn(f32x8) -> f32x8, g: impl Fn(f32) -> f32) {
    let mut c = v.chunks_exact_mut(8);
    for ch in &mut c {
        let r = f(lanes::<f32x8>(ch));
        store_lanes(r, ch);
    }
    for x in c.into_remainder() {
        *x = g(*x);
    }
}

/// Inputs to `exp` are clamped here so that huge arguments give 0 or 1, never NaN.
const EXP_CLAMP: f32 = 88.0;

/// Logistic sigmoid `1 / (1 + e^-x)`, in place.
pub fn sigmoid(v: &mut [f32]) {
    let one = f32x8::splat(1.0);
    let lo = f32x8::splat(-EXP_CLAMP);
    let hi = f32x8::splat(EXP_CLAMP);
    map_inplace(
        v,
        |x| one / (one + (-x.fast_clamp(lo, hi)).exp()),
        |x| 1.0 / (1.0 + (-x.clamp(-EXP_CLAMP, EXP_CLAMP)).exp()),
    );
}

/// Hyperbolic tangent, in place.
pub fn tanh(v: &mut [f32]) {
    // tanh saturates to ±1 in f32 well before |x| = 10; clamping keeps `wide`'s
    // polynomial in range.
    let lo = f32x8::splat(-10.0);
    let hi = f32x8::splat(10.0);
    map_inplace(v, |x| x.fast_clamp(lo, hi).tanh(), f32::tanh);
}

/// Rectified linear unit `max(0, x)`, in place.
pub fn relu(v: &mut [f32]) {
    let zero = f32x8::splat(0.0);
    map_inplace(v, |x| x.fast_max(zero), |x| x.max(0.0));
}

/// Softmax `e^(x_i - max) / Σ e^(x_j - max)`, in place. An empty slice is left as is.
pub fn softmax(v: &mut [f32]) {
    let Some(max) = v.iter().copied().reduce(f32::max) else {
        return;
    };
    let m = f32x8::splat(max);
    let lo = f32x8::splat(-EXP_CLAMP);
    map_inplace(
        v,
        |x| (x - m).fast_max(lo).exp(),
        |x| (x - max).max(-EXP_CLAMP).exp(),
    );
    let sum: f32 = v.iter().sum();
    let inv = 1.0 / sum;
    let vi = f32x8::splat(inv);
    map_inplace(v, |x| x * vi, |x| x * inv);
}

/// Applies `f(y, d)` lane-wise to `d`, reading `y` alongside.
#[inline(always)]
fn zip_map(
    y: &[f32],
    d: &mut [f32],
    f: impl Fn(f32x8, f32x8) -> f32x8,
    g: impl Fn(f32, f32) -> f32,
) {
    assert_eq!(y.len(), d.len(), "derivative: length mismatch");
    let mut cy = y.chunks_exact(8);
    let mut cd = d.chunks_exact_mut(8);
    for (ys, ds) in (&mut cy).zip(&mut cd) {
        let r = f(lanes(ys), lanes(ds));
        store_lanes(r, ds);
    }
    for (ys, ds) in cy.remainder().iter().zip(cd.into_remainder()) {
        *ds = g(*ys, *ds);
    }
}

/// `d *= y (1 - y)`: sigmoid derivative written in terms of the sigmoid's output `y`.
pub fn mul_sigmoid_derivative(y: &[f32], d: &mut [f32]) {
    let one = f32x8::splat(1.0);
    zip_map(y, d, |y, d| d * y * (one - y), |y, d| d * y * (1.0 - y));
}

/// `d *= 1 - y²`: tanh derivative in terms of its output `y`.
pub fn mul_tanh_derivative(y: &[f32], d: &mut [f32]) {
    let one = f32x8::splat(1.0);
    zip_map(y, d, |y, d| d * (one - y * y), |y, d| d * (1.0 - y * y));
}

/// `d = 0` where `y <= 0`: ReLU derivative in terms of its output `y`.
pub fn mul_relu_derivative(y: &[f32], d: &mut [f32]) {
    let zero = f32x8::splat(0.0);
    zip_map(
        y,
        d,
        |y, d| y.simd_gt(zero).select(d, zero),
        |y, d| if y > 0.0 { d } else { 0.0 },
    );
}

/// `d = y ⊙ (d - (d·y))`: the softmax Jacobian (symmetric) applied to `d`, in terms of the
/// softmax output `y`.
pub fn mul_softmax_jacobian(y: &[f32], d: &mut [f32]) {
    assert_eq!(y.len(), d.len(), "derivative: length mismatch");
    let s = dot(y, d);
    let vs = f32x8::splat(s);
    zip_map(y, d, |y, d| y * (d - vs), |y, d| y * (d - s));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Relative tolerance for sums of products: f32 accumulation order differs from the
    /// reference, so errors grow with length and magnitude of the terms.
    fn close(got: f32, want: f64, scale: f64) -> bool {
        (got as f64 - want).abs() <= 1e-5 * (1.0 + scale)
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: if cfg!(miri) { 3 } else { 256 },
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    fn vec_f32(len: usize) -> impl Strategy<Value = Vec<f32>> {
        proptest::collection::vec(-1.0f32..1.0, len)
    }

    fn pair() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
        (0usize..200).prop_flat_map(|n| (vec_f32(n), vec_f32(n)))
    }

    fn ref_dot(a: &[f32], b: &[f32]) -> (f64, f64) {
        let s = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let scale = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 * *y as f64).abs())
            .sum();
        (s, scale)
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn dot_matches_reference((a, b) in pair()) {
            let (want, scale) = ref_dot(&a, &b);
            prop_assert!(close(dot(&a, &b), want, scale));
            prop_assert!(close(portable::dot(&a, &b), want, scale));
        }

        #[test]
        fn axpy_matches_reference((x, y) in pair(), alpha in -2.0f32..2.0) {
            let want: Vec<f64> = x.iter().zip(&y).map(|(x, y)| *y as f64 + alpha as f64 * *x as f64).collect();
            let mut y1 = y.clone();
            axpy(alpha, &x, &mut y1);
            let mut y2 = y.clone();
            portable::axpy(alpha, &x, &mut y2);
            for i in 0..want.len() {
                prop_assert!(close(y1[i], want[i], 2.0));
                prop_assert!(close(y2[i], want[i], 2.0));
            }
        }

        #[test]
        fn axpy_finite_writes_axpy_and_flags_non_finite_results(
            (x, y) in pair(), alpha in -2.0f32..2.0, bad in 0usize..200, which in 0usize..3
        ) {
            let mut y1 = y.clone();
            axpy(alpha, &x, &mut y1);
            let mut y2 = y.clone();
            prop_assert!(axpy_finite(alpha, &x, &mut y2));
            prop_assert_eq!(
                y1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                y2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            let mut y3 = y.clone();
            prop_assert!(axpy_finite_generic::<f32x8>(alpha, &x, &mut y3));
            if !x.is_empty() {
                // One non-finite input anywhere (body or tail) gives a non-finite result.
                let mut x = x.clone();
                let at = bad % x.len();
                x[at] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][which];
                let mut y4 = y.clone();
                prop_assert!(!axpy_finite(alpha.max(0.5), &x, &mut y4));
                let mut y5 = y.clone();
                prop_assert!(!axpy_finite_generic::<f32x8>(alpha.max(0.5), &x, &mut y5));
                // An overflow of finite values is caught too.
                let mut y6 = vec![f32::MAX; x.len()];
                let ones = vec![1.0; x.len()];
                prop_assert!(!axpy_finite(f32::MAX, &ones, &mut y6));
            }
        }

        #[test]
        fn matvec_matches_reference(
            (rows, x, w) in (0usize..20, 0usize..200).prop_flat_map(|(r, n)| (Just(r), vec_f32(n), vec_f32(r * n)))
        ) {
            let mut y1 = vec![f32::NAN; rows];
            let mut y2 = vec![f32::NAN; rows];
            matvec(&w, &x, &mut y1);
            portable::matvec(&w, &x, &mut y2);
            for o in 0..rows {
                let (want, scale) = ref_dot(&w[o * x.len()..(o + 1) * x.len()], &x);
                prop_assert!(close(y1[o], want, scale));
                prop_assert!(close(y2[o], want, scale));
            }
        }

        #[test]
        fn matmul_matches_reference(
            (m, n, k, a, b) in (0usize..7, 1usize..11, 0usize..200)
                .prop_flat_map(|(m, n, k)| (Just(m), Just(n), Just(k), vec_f32(m * k), vec_f32(n * k)))
        ) {
            let mut c1 = vec![f32::NAN; m * n];
            let mut c2 = vec![f32::NAN; m * n];
            matmul_nt(&a, &b, &mut c1, k, n);
            portable::matmul_nt(&a, &b, &mut c2, k, n);
            let mut c3 = vec![f32::NAN; m * n];
            sgemm_nt(&a, &b, &mut c3, k, n);
            for i in 0..m {
                for j in 0..n {
                    let (want, scale) = ref_dot(&a[i * k..(i + 1) * k], &b[j * k..(j + 1) * k]);
                    prop_assert!(close(c1[i * n + j], want, scale));
                    prop_assert!(close(c2[i * n + j], want, scale));
                    prop_assert!(close(c3[i * n + j], want, scale));
                }
            }
        }

        #[test]
        fn activations_match_reference(v in (0usize..200).prop_flat_map(|n| proptest::collection::vec(-20.0f32..20.0, n))) {
            // Tolerance: 2e-6 absolute for bounded outputs (sigmoid, tanh, softmax entries),
            // exact for relu.
            let mut s = v.clone();
            sigmoid(&mut s);
            let mut t = v.clone();
            tanh(&mut t);
            let mut r = v.clone();
            relu(&mut r);
            let mut sm = v.clone();
            softmax(&mut sm);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, |m, x| m.max(x as f64));
            let z: f64 = v.iter().map(|x| (*x as f64 - max).exp()).sum();
            for i in 0..v.len() {
                let x = v[i] as f64;
                prop_assert!((s[i] as f64 - 1.0 / (1.0 + (-x).exp())).abs() <= 2e-6);
                prop_assert!((t[i] as f64 - x.tanh()).abs() <= 2e-6);
                prop_assert_eq!(r[i], v[i].max(0.0));
                prop_assert!((sm[i] as f64 - (x - max).exp() / z).abs() <= 2e-6);
            }
        }

        #[test]
        fn derivatives_match_reference((y, d) in pair()) {
            let mut a = d.clone();
            mul_sigmoid_derivative(&y, &mut a);
            let mut b = d.clone();
            mul_tanh_derivative(&y, &mut b);
            let mut c = d.clone();
            mul_relu_derivative(&y, &mut c);
            let mut e = d.clone();
            mul_softmax_jacobian(&y, &mut e);
            let s: f64 = y.iter().zip(&d).map(|(y, d)| *y as f64 * *d as f64).sum();
            for i in 0..y.len() {
                let (yi, di) = (y[i] as f64, d[i] as f64);
                prop_assert!((a[i] as f64 - di * yi * (1.0 - yi)).abs() <= 1e-6);
                prop_assert!((b[i] as f64 - di * (1.0 - yi * yi)).abs() <= 1e-6);
                prop_assert_eq!(c[i], if y[i] > 0.0 { d[i] } else { 0.0 });
                prop_assert!((e[i] as f64 - yi * (di - s)).abs() <= 1e-5);
            }
        }
    }

    #[test]
    fn activations_saturate_without_nan() {
        let mut v = vec![
            -1e30,
            -500.0,
            500.0,
            1e30,
            f32::MAX,
            f32::MIN,
            0.0,
            1.0,
            -1e30,
        ];
        let mut s = v.clone();
        sigmoid(&mut s);
        assert!(s.iter().all(|x| (0.0..=1.0).contains(x)));
        tanh(&mut v);
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
        let mut sm = vec![1e30f32, 0.0, -1e30, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0];
        softmax(&mut sm);
        assert!((sm.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
