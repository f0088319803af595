//! Splitting a labelled data set among workers, evenly or skewed by label (non-IID), the way
//! federated learning is tested: real devices each see mostly their own kinds of data.

/// How samples are dealt to shards.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Partition {
    /// Every sample to a shard chosen evenly at random: each shard sees every class alike.
    Iid,
    /// Class `c` belongs to shard `c % shards`; each of its samples goes there with
    /// probability `own`, else to one of the other shards evenly.
    LabelSkew {
        /// The share of a class kept by its own shard, 0.0 to 1.0.
        own: f32,
    },
}

/// The indices of the samples (by their `labels`) that shard `shard` of `shards` gets, in
/// order. Seeded: the same arguments always give the same shard, and the shards of one
/// `shards` count are disjoint and together hold every sample.
pub fn partition(labels: &[usize], shard: usize, shards: usize, how: Partition) -> Vec<usize> {
    let shards = shards.max(1);
    (0..labels.len())
        .filter(|&i| {
            let r = mix(i as u64);
            let to = match how {
                Partition::Iid => (r % shards as u64) as usize,
                Partition::LabelSkew { own } => {
                    let owner = labels[i] % shards;
                    let u = (r >> 11) as f64 / (1u64 << 53) as f64;
                    if shards == 1 || u < f64::from(own) {
                        owner
                    } else {
                        let other = (r % (shards as u64 - 1)) as usize;
                        (owner + 1 + other) % shards
                    }
                }
            };
            to == shard
        })
        .collect()
}

/// splitmix64: a fixed, well-spread function of the sample index.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_cover_everything_and_skew_by_label() {
        let labels: Vec<usize> = (0..3000).map(|i| i % 10).collect();
        for how in [Partition::Iid, Partition::LabelSkew { own: 0.8 }] {
            let mut seen = vec![0; labels.len()];
            for k in 0..3 {
                for i in partition(&labels, k, 3, how) {
                    seen[i] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{how:?}");
        }
        let shard = partition(&labels, 1, 3, Partition::LabelSkew { own: 0.8 });
        let own = shard.iter().filter(|&&i| labels[i] % 3 == 1).count();
        let share = own as f64 / shard.len() as f64;
        // Its classes are 3 of 10: 0.3 * 0.8 kept, against 0.7 * 0.1 dealt from the others.
        assert!(share > 0.7, "shard 1 holds {share} of its own classes");
        let iid = partition(&labels, 1, 3, Partition::Iid);
        let own = iid.iter().filter(|&&i| labels[i] % 3 == 1).count();
        let share = own as f64 / iid.len() as f64;
        assert!((0.25..0.35).contains(&share), "IID shard 1: {share}");
    }
}
