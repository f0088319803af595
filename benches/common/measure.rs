//! What the benches share: their settings from the environment, and latency histograms
//! printed as one line of percentiles.

#![allow(dead_code)] // each bench uses a subset

use hdrhistogram::Histogram;

/// The environment variable `name` parsed, or `default`.
pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A histogram of nanoseconds from 1 ns to 100 s, three significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap()
}

/// Nanoseconds as microseconds.
pub(crate) fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// `name` padded to `width`, then the count and the p50, p99, p99.9 and max in microseconds.
pub(crate) fn line(name: &str, width: usize, h: &Histogram<u64>) {
    println!(
        "{name:<width$} {:>8} samples  p50 {:>9.1} us  p99 {:>9.1} us  p99.9 {:>9.1} us  max {:>10.1} us",
        h.len(),
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max())
    );
}
