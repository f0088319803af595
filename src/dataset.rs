//! The handwritten digits set, shipped inside the crate for the demo and the learning tests.
//!
//! UCI "Optical Recognition of Handwritten Digits" (test part, as distributed with
//! scikit-learn; CC BY 4.0, Alpaydin & Kaynak 1998): 1797 8x8 images, pixels 0..16, labels
//! 0..9. Pixels are scaled to 0..1.

use std::io::Read;

/// The gzip-compressed CSV: 64 pixel values then the label, one image a row.
pub const DIGITS_CSV_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");

/// A labelled data set, inputs row-major.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `len() * features` inputs, row-major.
    pub inputs: Vec<f32>,
    /// One label per row.
    pub labels: Vec<usize>,
    /// Inputs per row.
    pub features: usize,
    /// Distinct labels.
    pub classes: usize,
}

impl Dataset {
    /// Rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Row `i`'s inputs.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.inputs[i * self.features..(i + 1) * self.features]
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut inputs = Vec::with_capacity(indices.len() * self.features);
        for &i in indices {
            inputs.extend_from_slice(self.row(i));
        }
        Dataset {
            inputs,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            features: self.features,
            classes: self.classes,
        }
    }

    /// A seeded split: every class is divided `test_fraction` to the second set (stratified).
    pub fn split(&self, test_fraction: f64, seed: u64) -> (Dataset, Dataset) {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for class in 0..self.classes {
            let mut idx: Vec<usize> = (0..self.len())
                .filter(|&i| self.labels[i] == class)
                .collect();
            for i in (1..idx.len()).rev() {
                idx.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            let n_test = (idx.len() as f64 * test_fraction).round() as usize;
            test.extend_from_slice(&idx[..n_test]);
            train.extend_from_slice(&idx[n_test..]);
        }
        train.sort_unstable();
        test.sort_unstable();
        (self.select(&train), self.select(&test))
    }
}

/// `0..n` in a seeded random order (Fisher-Yates over xorshift64), for epochs and splits.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order
}

/// Why the data could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum DatasetError {
    /// Decompression or reading failed.
    Io(std::io::Error),
    /// A row is not 64 numbers and a label.
    BadRow {
        /// 1-based line number.
        line: usize,
    },
}

impl std::fmt::Display for DatasetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatasetError::Io(e) => write!(f, "could not read the digits data: {e}"),
            DatasetError::BadRow { line } => {
                write!(f, "digits data line {line} is not 64 pixels and a label")
            }
        }
    }
}

impl std::error::Error for DatasetError {}

/// The digits, pixels scaled by 1/16.
pub fn digits() -> Result<Dataset, DatasetError> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .map_err(DatasetError::Io)?;
    let mut inputs = Vec::with_capacity(1797 * 64);
    let mut labels = Vec::with_capacity(1797);
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let values: Vec<f32> = line
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|_| DatasetError::BadRow { line: n + 1 })?;
        if values.len() != 65 || !(0.0..=9.0).contains(&values[64]) {
            return Err(DatasetError::BadRow { line: n + 1 });
        }
        inputs.extend(values[..64].iter().map(|v| v / 16.0));
        labels.push(values[64] as usize);
    }
    Ok(Dataset {
        inputs,
        labels,
        features: 64,
        classes: 10,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_load_whole_and_split_stratified() {
        let d = digits().unwrap();
        assert_eq!(d.len(), 1797);
        assert_eq!(d.inputs.len(), 1797 * 64);
        assert!(d.inputs.iter().all(|&p| (0.0..=1.0).contains(&p)));
        let mut counts = [0usize; 10];
        d.labels.iter().for_each(|&l| counts[l] += 1);
        assert!(
            counts.iter().all(|&c| (170..=190).contains(&c)),
            "{counts:?}"
        );
        let (train, test) = d.split(0.25, 0);
        assert_eq!(train.len() + test.len(), 1797);
        assert!((440..=460).contains(&test.len()));
        let (_, again) = d.split(0.25, 0);
        assert_eq!(test.labels, again.labels, "the split is seeded");
    }
}
