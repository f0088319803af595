//! Test (and bench) helpers: the real digits data set and the PCA fixture here; engines over
//! loopback in [`net`], a hand-driven NNP client in [`raw_peer`], recorded sessions with a
//! node in [`traffic`] and the capture files made of them in [`pcap`].
// Every test crate (and benches/nn.rs) compiles this whole module and uses a different subset
// of it; this also covers the submodules.
#![allow(dead_code)]

pub(crate) mod memory;
pub(crate) mod net;
pub(crate) mod pcap;
pub(crate) mod process;
pub(crate) mod proxy;
pub(crate) mod raw_peer;
pub(crate) mod traffic;

use std::io::Read;

/// The 8x8 digits data set (1797 samples): pixels scaled to [0, 1], row-major.
pub(crate) struct Digits {
    /// `n x 64`, pixel / 16.
    pub(crate) x: Vec<f32>,
    /// Labels 0..=9.
    pub(crate) y: Vec<usize>,
}

impl Digits {
    pub(crate) const WIDTH: usize = 64;

    pub(crate) fn len(&self) -> usize {
        self.y.len()
    }

    pub(crate) fn row(&self, i: usize) -> &[f32] {
        &self.x[i * 64..(i + 1) * 64]
    }

    /// Rows `idx` as a new row-major matrix and their labels.
    pub(crate) fn select(&self, idx: &[usize]) -> (Vec<f32>, Vec<usize>) {
        let mut x = Vec::with_capacity(idx.len() * 64);
        for &i in idx {
            x.extend_from_slice(self.row(i));
        }
        (x, idx.iter().map(|&i| self.y[i]).collect())
    }

    /// The data with the per-pixel mean removed.
    pub(crate) fn centred(&self) -> Vec<f32> {
        let n = self.len();
        let mut mean = [0.0f64; 64];
        for i in 0..n {
            for (m, v) in mean.iter_mut().zip(self.row(i)) {
                *m += *v as f64;
            }
        }
        let mut x = self.x.clone();
        for row in x.chunks_exact_mut(64) {
            for (v, m) in row.iter_mut().zip(&mean) {
                *v -= (*m / n as f64) as f32;
            }
        }
        x
    }
}

/// Reads `data/digits.csv.gz` (64 pixels 0..16, then the label, per line).
pub(crate) fn load_digits() -> Digits {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz");
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut x = Vec::new();
    let mut y = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let vals: Vec<f32> = line
            .split(',')
            .map(|v| v.trim().parse().unwrap_or_else(|e| panic!("{path}: {e}")))
            .collect();
        assert_eq!(vals.len(), 65, "{path}: digits row width");
        x.extend(vals[..64].iter().map(|v| v / 16.0));
        y.push(vals[64] as usize);
    }
    assert_eq!(y.len(), 1797, "{path}: rows");
    Digits { x, y }
}

/// The principal components in tests/fixtures/digits_pca.txt (unit vectors, 64 values).
pub(crate) fn load_pca() -> Vec<Vec<f32>> {
    let text = include_str!("../fixtures/digits_pca.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .collect()
}

/// A seeded permutation of `0..n` (xorshift64*; independent of the library's PRNG).
pub(crate) fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut s = seed.max(1);
    let mut next = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// Seeded stratified split: from every class, the first quarter (after shuffling) is held
/// out. Returns (train indices, test indices).
pub(crate) fn stratified_split(y: &[usize], seed: u64) -> (Vec<usize>, Vec<usize>) {
    let perm = permutation(y.len(), seed);
    let mut train = Vec::new();
    let mut test = Vec::new();
    for class in 0..10 {
        let members: Vec<usize> = perm.iter().copied().filter(|&i| y[i] == class).collect();
        let cut = members.len() / 4;
        test.extend_from_slice(&members[..cut]);
        train.extend_from_slice(&members[cut..]);
    }
    (train, test)
}

/// |cos| of the angle between two vectors.
pub(crate) fn abs_cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    (dot / (na * nb)).abs()
}
