//! Finiteness checks: how the module's policy (see [`crate::nn`]) is enforced.
//!
//! An `f32` is NaN or ±infinity exactly when its eight exponent bits are all ones. Loops
//! that produce values check them on the way, ORing that test (or, inside float loops,
//! `v * 0 != 0`) without a branch, which the compiler vectorises (a plain
//! `iter().all(|v| v.is_finite())` exits early on every element and stays scalar). A
//! slice given as a whole is checked with one dot product (see [`first_non_finite`]), and
//! only searched, block by block, when that fails.

use super::NnError;

const EXPONENT: u32 = 0x7f80_0000;
const BLOCK: usize = 64;

/// All ones if `v` is NaN or ±infinity, else 0: OR it over a loop to check without a
/// branch. (A mask rather than 0/1: it is what a vector compare yields, so the compiler
/// keeps the compare result as is instead of narrowing it to one bit per lane.)
#[inline(always)]
pub(crate) fn non_finite_mask(v: f32) -> u32 {
    0u32.wrapping_sub(u32::from(v.to_bits() & EXPONENT == EXPONENT))
}

#[inline(always)]
fn any_non_finite(x: &[f32]) -> bool {
    x.iter().fold(0, |acc, &v| acc | non_finite_mask(v)) != 0
}

/// True if every value of `x` is finite, by one dot product `x · x` (see
/// [`first_non_finite`]); false if one may not be, which [`first_non_finite`] then decides.
#[inline]
pub(crate) fn surely_finite(x: &[f32]) -> bool {
    super::kernels::dot(x, x).is_finite()
}

/// Index of the first NaN or infinity in `x`.
///
/// Fast path: `x · x` through the dispatched dot kernel (AVX2/FMA where the CPU has it,
/// several times the speed of a bit test compiled for the default SSE2 target). It is
/// finite only if every value is: NaN and infinity propagate through a product and a sum,
/// and squares have no sign to cancel an infinity. It can also be infinite with every
/// value finite (squares past `f32::MAX`), so a non-finite result falls back to the exact
/// search below.
#[inline]
pub(crate) fn first_non_finite(x: &[f32]) -> Option<usize> {
    // A short slice is searched directly: cheaper than the kernel call.
    if x.len() >= 32 && surely_finite(x) {
        return None;
    }
    let mut blocks = x.chunks_exact(BLOCK);
    for (b, block) in (&mut blocks).enumerate() {
        if any_non_finite(block) {
            return block
                .iter()
                .position(|v| !v.is_finite())
                .map(|i| b * BLOCK + i);
        }
    }
    let tail = blocks.remainder();
    let start = x.len() - tail.len();
    tail.iter().position(|v| !v.is_finite()).map(|i| start + i)
}

/// Refuses data given to the network: [`NnError::NonFinite`] at its first NaN or infinity.
#[inline]
pub(crate) fn check_given(what: &'static str, layer: usize, x: &[f32]) -> Result<(), NnError> {
    match first_non_finite(x) {
        None => Ok(()),
        Some(index) => Err(NnError::NonFinite {
            what,
            layer,
            index,
            value: x[index],
        }),
    }
}

/// Stops a computation whose result `x` is not finite: [`NnError::Overflow`] at the first
/// NaN or infinity.
#[inline]
pub(crate) fn check_result(what: &'static str, layer: usize, x: &[f32]) -> Result<(), NnError> {
    match first_non_finite(x) {
        None => Ok(()),
        Some(index) => Err(NnError::Overflow { what, layer, index }),
    }
}

/// Adds `bias` to every row of the row-major `y` (rows of `bias.len()`), returning whether
/// every sum is finite: the forward pass's check, fused into a loop it runs anyway.
#[inline]
pub(crate) fn add_bias_rows(y: &mut [f32], bias: &[f32]) -> bool {
    let mut bad = 0;
    for row in y.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
            bad |= non_finite_mask(*v);
        }
    }
    bad == 0
}

/// `y + alpha * x` through [`super::kernels::axpy`], computed first into a small buffer to
/// see whether every result is finite, and written into `y` only then; otherwise the index
/// of the first non-finite result, with `y` unchanged. Both passes use the same kernel on
/// blocks that start at multiples of eight, so the check sees the very values written.
pub(crate) fn axpy_if_finite(alpha: f32, x: &[f32], y: &mut [f32]) -> Result<(), usize> {
    const CHUNK: usize = 256;
    let mut buf = [0.0f32; CHUNK];
    for (c, (xs, ys)) in x.chunks(CHUNK).zip(y.chunks(CHUNK)).enumerate() {
        let tmp = &mut buf[..ys.len()];
        tmp.copy_from_slice(ys);
        super::kernels::axpy(alpha, xs, tmp);
        if let Some(i) = first_non_finite(tmp) {
            return Err(c * CHUNK + i);
        }
    }
    super::kernels::axpy(alpha, x, y);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_non_finite_value_anywhere() {
        for len in [0usize, 1, 7, 63, 64, 65, 200] {
            let x: Vec<f32> = (0..len).map(|i| i as f32 - 3.5).collect();
            assert_eq!(first_non_finite(&x), None);
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
                for at in [0, len / 2, len.saturating_sub(1)] {
                    if at >= len {
                        continue;
                    }
                    let mut y = x.clone();
                    y[at] = bad;
                    if at + 1 < len {
                        y[len - 1] = f32::NAN;
                    }
                    assert_eq!(first_non_finite(&y), Some(at), "len {len} at {at}");
                }
            }
        }
        // The largest finite values, subnormals and signed zeros are finite.
        let edge = [f32::MAX, f32::MIN, f32::MIN_POSITIVE, 1e-45, -0.0, 0.0];
        assert_eq!(first_non_finite(&edge), None);
    }

    #[test]
    fn bias_rows_and_checked_axpy() {
        let mut y = vec![1.0, 2.0, 3.0, 4.0];
        assert!(add_bias_rows(&mut y, &[0.5, -0.5]));
        assert_eq!(y, [1.5, 1.5, 3.5, 3.5]);
        let mut y = vec![f32::MAX, 0.0, 0.0, 0.0];
        assert!(!add_bias_rows(&mut y, &[f32::MAX, 0.0]));

        let x: Vec<f32> = (0..600).map(|i| i as f32).collect();
        let mut y = vec![1.0; 600];
        axpy_if_finite(2.0, &x, &mut y).unwrap();
        assert!(y
            .iter()
            .enumerate()
            .all(|(i, v)| *v == 1.0 + 2.0 * i as f32));
        let mut big = vec![0.0; 600];
        big[300] = f32::MAX;
        let before = y.clone();
        assert_eq!(axpy_if_finite(f32::MAX, &big, &mut y), Err(300));
        assert_eq!(y, before);
    }
}
