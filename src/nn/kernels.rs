//! The f32 kernels under the network: dot product, matrix-vector and batched products.
//!
//! `wide::f32x8` lanes with a scalar tail, correct for every length. `wide` picks its
//! instructions when the crate is compiled: SSE2 (two 4-lane halves) on the default x86-64
//! target, AVX2/FMA with `RUSTFLAGS="-C target-cpu=native"` (or `x86-64-v3`).

use wide::f32x8;

/// `sum a_i b_i`; the lengths must match (the shorter one bounds the sum).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [f32x8::ZERO; 4];
    let chunks = n / 32;
    for c in 0..chunks {
        for (k, lane) in acc.iter_mut().enumerate() {
            let i = c * 32 + k * 8;
            let x = f32x8::from(<[f32; 8]>::try_from(&a[i..i + 8]).expect("8 lanes"));
            let y = f32x8::from(<[f32; 8]>::try_from(&b[i..i + 8]).expect("8 lanes"));
            *lane = x.mul_add(y, *lane);
        }
    }
    let mut i = chunks * 32;
    while i + 8 <= n {
        let x = f32x8::from(<[f32; 8]>::try_from(&a[i..i + 8]).expect("8 lanes"));
        let y = f32x8::from(<[f32; 8]>::try_from(&b[i..i + 8]).expect("8 lanes"));
        acc[0] = x.mul_add(y, acc[0]);
        i += 8;
    }
    let total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    let mut sum = total.reduce_add();
    for k in i..n {
        sum += a[k] * b[k];
    }
    sum
}

/// `out = W x + b` for a row-major `rows x cols` matrix `W`.
pub fn matvec_bias(w: &[f32], cols: usize, x: &[f32], bias: &[f32], out: &mut [f32]) {
    for (i, (o, b)) in out.iter_mut().zip(bias).enumerate() {
        *o = dot(&w[i * cols..(i + 1) * cols], x) + b;
    }
}

/// Batches from this size go to matrixmultiply's sgemm, measured faster there
/// (`cargo bench --bench nn`); a single sample stays with [`matvec_bias`].
pub const GEMM_MIN_BATCH: usize = 2;

/// `out[s] = W x[s] + b` for a row-major batch of inputs (`batch x cols`), output
/// `batch x rows`: sgemm for batches of [`GEMM_MIN_BATCH`] or more, the `wide` kernel below.
pub fn matmul_bias(w: &[f32], rows: usize, cols: usize, xs: &[f32], bias: &[f32], out: &mut [f32]) {
    let batch = xs.len() / cols.max(1);
    if batch >= GEMM_MIN_BATCH {
        super::gemm::batch_affine(w, rows, cols, xs, batch, bias, out);
    } else {
        matmul_bias_wide(w, rows, cols, xs, bias, out);
    }
}

/// [`matmul_bias`] with the `wide` kernel only: four samples share each pass over a weight
/// row.
pub fn matmul_bias_wide(
    w: &[f32],
    rows: usize,
    cols: usize,
    xs: &[f32],
    bias: &[f32],
    out: &mut [f32],
) {
    let batch = xs.len() / cols.max(1);
    let mut s = 0;
    while s + 4 <= batch {
        let x: [&[f32]; 4] = std::array::from_fn(|k| &xs[(s + k) * cols..(s + k + 1) * cols]);
        for i in 0..rows {
            let row = &w[i * cols..(i + 1) * cols];
            for k in 0..4 {
                out[(s + k) * rows + i] = dot(row, x[k]) + bias[i];
            }
        }
        s += 4;
    }
    for s in s..batch {
        let x = &xs[s * cols..(s + 1) * cols];
        matvec_bias(w, cols, x, bias, &mut out[s * rows..(s + 1) * rows]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scalar_dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }

    proptest! {
        #[test]
        fn dot_matches_scalar_for_every_length(v in proptest::collection::vec(-10.0f32..10.0, 0..200)) {
            let w: Vec<f32> = v.iter().map(|x| x * 0.5 - 1.0).collect();
            let expected = scalar_dot(&v, &w);
            let tolerance = 1e-4 * (1.0 + v.iter().zip(&w).map(|(a, b)| f64::from((a * b).abs())).sum::<f64>());
            prop_assert!((f64::from(dot(&v, &w)) - expected).abs() <= tolerance);
        }

        #[test]
        fn matmul_matches_matvec(rows in 1usize..9, cols in 1usize..40, batch in 0usize..11) {
            let w: Vec<f32> = (0..rows * cols).map(|i| (i % 7) as f32 - 3.0).collect();
            let b: Vec<f32> = (0..rows).map(|i| i as f32).collect();
            let xs: Vec<f32> = (0..batch * cols).map(|i| (i % 5) as f32 * 0.25).collect();
            let mut out = vec![0.0; batch * rows];
            let mut wide_out = vec![0.0; batch * rows];
            matmul_bias(&w, rows, cols, &xs, &b, &mut out);
            matmul_bias_wide(&w, rows, cols, &xs, &b, &mut wide_out);
            for s in 0..batch {
                let mut one = vec![0.0; rows];
                matvec_bias(&w, cols, &xs[s * cols..(s + 1) * cols], &b, &mut one);
                prop_assert_eq!(&wide_out[s * rows..(s + 1) * rows], &one[..]);
                for (a, e) in out[s * rows..(s + 1) * rows].iter().zip(&one) {
                    prop_assert!((a - e).abs() <= 1e-3 * (1.0 + e.abs()));
                }
            }
        }
    }
}
