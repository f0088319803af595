//! The handwritten digits set the demo learns, read at run time from `data/digits.csv.gz`.
//!
//! UCI "Optical Recognition of Handwritten Digits" (test part, as distributed with
//! scikit-learn; CC BY 4.0, Alpaydin & Kaynak 1998): 1797 8x8 images, pixels 0..16, labels
//! 0..9, as a gzip-compressed CSV of 64 pixel values then the label, one image a row. Pixels
//! are scaled to 0..1.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where the data is in a checkout of the repository.
const RELATIVE_PATH: &str = "data/digits.csv.gz";

/// The same file in the source tree this binary was built from.
const BUILT_FROM_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz");

/// The data file to use without `--data`: `data/digits.csv.gz` under the current directory
/// (a checkout, as with `cargo run`), or else in the source tree the binary was built from
/// (as after `cargo install --path .`).
pub(crate) fn default_digits_path() -> Result<PathBuf, DatasetError> {
    [RELATIVE_PATH, BUILT_FROM_PATH]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .ok_or(DatasetError::NotFound)
}

/// A labelled data set, inputs row-major.
#[derive(Debug, Clone)]
pub(crate) struct Dataset {
    /// `len() * features` inputs, row-major.
    pub(crate) inputs: Vec<f32>,
    /// One label per row.
    pub(crate) labels: Vec<usize>,
    /// Inputs per row.
    pub(crate) features: usize,
    /// Distinct labels.
    pub(crate) classes: usize,
}

impl Dataset {
    /// Rows.
    pub(crate) fn len(&self) -> usize {
        self.labels.len()
    }

    /// Row `i`'s inputs.
    pub(crate) fn row(&self, i: usize) -> &[f32] {
        &self.inputs[i * self.features..(i + 1) * self.features]
    }

    /// The rows at `indices`, in that order.
    pub(crate) fn select(&self, indices: &[usize]) -> Dataset {
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
    pub(crate) fn split(&self, test_fraction: f64, seed: u64) -> (Dataset, Dataset) {
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

/// Why the data could not be read.
#[derive(Debug)]
pub(crate) enum DatasetError {
    /// No `--data` and no file at either default place.
    NotFound,
    /// Opening, decompressing or reading the file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// A row is not 64 numbers and a label.
    BadRow {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

impl fmt::Display for DatasetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetError::NotFound => write!(
                f,
                "the digits data is neither at {RELATIVE_PATH} nor at {BUILT_FROM_PATH}; \
                 give its path with --data PATH"
            ),
            DatasetError::Io { path, error } => write!(
                f,
                "could not read the digits data {}: {error}",
                path.display()
            ),
            DatasetError::BadRow { path, line } => write!(
                f,
                "{} line {line} is not 64 pixels and a label",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DatasetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DatasetError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The digits in the gzip-compressed CSV at `path`, pixels scaled by 1/16.
pub(crate) fn digits(path: &Path) -> Result<Dataset, DatasetError> {
    let io = |error| DatasetError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(io)?;
    let bad_row = |n: usize| DatasetError::BadRow {
        path: path.to_path_buf(),
        line: n + 1,
    };
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
            .map_err(|_| bad_row(n))?;
        if values.len() != 65 || !(0.0..=9.0).contains(&values[64]) {
            return Err(bad_row(n));
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
        let d = digits(Path::new(BUILT_FROM_PATH)).unwrap();
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

    #[test]
    fn errors_name_the_file() {
        let missing = Path::new("no/such/digits.csv.gz");
        let e = digits(missing).unwrap_err().to_string();
        assert!(e.contains("no/such/digits.csv.gz"), "{e}");
        let not_gzip = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
        let e = digits(not_gzip).unwrap_err().to_string();
        assert!(e.contains("Cargo.toml"), "{e}");
    }
}
