//! The one place the network calls unsafe code: matrixmultiply's `sgemm`, behind a safe
//! wrapper that checks every size it passes. Measured faster than our own kernel for batches
//! (`cargo bench --bench nn`); the batch-of-one product stays with the `wide` kernel, which
//! is ten times faster there.
#![allow(unsafe_code)]

/// `out = xs W^T + 1 b^T`: a row-major batch `xs` (`batch x cols`) through a row-major
/// `rows x cols` weight matrix, into `out` (`batch x rows`).
///
/// # Panics
/// If a slice is shorter than its shape says (a caller bug, not input-dependent).
pub(crate) fn batch_affine(
    w: &[f32],
    rows: usize,
    cols: usize,
    xs: &[f32],
    batch: usize,
    bias: &[f32],
    out: &mut [f32],
) {
    assert!(w.len() >= rows * cols, "weights shorter than rows x cols");
    assert!(xs.len() >= batch * cols, "inputs shorter than batch x cols");
    assert!(bias.len() >= rows, "bias shorter than rows");
    assert!(
        out.len() >= batch * rows,
        "output shorter than batch x rows"
    );
    for row in out[..batch * rows].chunks_mut(rows.max(1)) {
        row.copy_from_slice(&bias[..rows]);
    }
    if batch == 0 || rows == 0 || cols == 0 {
        return;
    }
    // SAFETY: the asserts above guarantee that xs holds batch x cols values read with strides
    // (cols, 1), that w holds rows x cols values read as the cols x rows matrix W^T with
    // strides (1, cols), and that out holds batch x rows values written with strides
    // (rows, 1); out is a unique borrow, so it aliases neither input. All strides fit isize
    // because the slices exist.
    unsafe {
        matrixmultiply::sgemm(
            batch,
            cols,
            rows,
            1.0,
            xs.as_ptr(),
            cols as isize,
            1,
            w.as_ptr(),
            1,
            cols as isize,
            1.0,
            out.as_mut_ptr(),
            rows as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_plain_product() {
        let (rows, cols, batch) = (3, 5, 4);
        let w: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 3.0).collect();
        let xs: Vec<f32> = (0..batch * cols).map(|i| (i % 3) as f32).collect();
        let bias = [1.0, -1.0, 0.5];
        let mut out = vec![0.0; batch * rows];
        batch_affine(&w, rows, cols, &xs, batch, &bias, &mut out);
        for s in 0..batch {
            for i in 0..rows {
                let expected: f32 = (0..cols)
                    .map(|j| w[i * cols + j] * xs[s * cols + j])
                    .sum::<f32>()
                    + bias[i];
                assert!((out[s * rows + i] - expected).abs() < 1e-4);
            }
        }
    }

    #[test]
    #[should_panic(expected = "inputs shorter")]
    fn short_input_is_refused_before_any_unsafe_call() {
        let mut out = vec![0.0; 8];
        batch_affine(&[0.0; 6], 2, 3, &[0.0; 5], 2, &[0.0; 2], &mut out);
    }
}
