//! How the coordinator turns the workers' weights into the next global weights.
//!
//! FedAvg weighs every worker by its sample count; it is the best estimate when every worker
//! is honest, and one worker sending garbage moves it anywhere. The coordinate-wise median and
//! trimmed mean look at each parameter's values across workers and ignore the extremes, so a
//! minority of garbage workers cannot drag a parameter outside the honest workers' range. Krum
//! looks at whole models instead: it keeps the one update closest to its nearest neighbours,
//! so an update far from every other (garbage) is never chosen.

/// How a round's weights are combined, parameter by parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Aggregator {
    /// The mean weighted by each worker's sample count (McMahan et al.'s FedAvg).
    FedAvg,
    /// The median of the workers' values (the mean of the middle two for an even count);
    /// sample counts are ignored.
    Median,
    /// The mean after dropping, at each end, `ceil(trim * workers)` values (never so many that
    /// none is left); sample counts are ignored. `trim` 0.2 drops one of three workers' values
    /// at each end.
    TrimmedMean {
        /// The fraction dropped at each end, 0.0 to 0.5.
        trim: f32,
    },
    /// Krum (Blanchard et al., 2017): each update is scored by the summed squared distances,
    /// over the whole model, to its `n - byzantine - 2` nearest other updates, and the update
    /// with the lowest score becomes the global model as it is; sample counts are ignored.
    /// Tolerates `byzantine` garbage workers out of `n > 2 x byzantine + 2`; with fewer
    /// updates the nearest one neighbour counts.
    Krum {
        /// Garbage workers to tolerate.
        byzantine: usize,
    },
}

impl Aggregator {
    /// The name used on the command line and in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Aggregator::FedAvg => "fedavg",
            Aggregator::Median => "median",
            Aggregator::TrimmedMean { .. } => "trimmed-mean",
            Aggregator::Krum { .. } => "krum",
        }
    }

    /// For an aggregator that picks one whole update (Krum), which: the index into
    /// `models`, each a worker's layers. `None` for the aggregators that combine parameter by
    /// parameter ([`Aggregator::combine`]), or when there is no update.
    pub fn pick(&self, models: &[&[Vec<f32>]]) -> Option<usize> {
        let Aggregator::Krum { byzantine } = *self else {
            return None;
        };
        let n = models.len();
        if n <= 2 {
            return (n > 0).then_some(0);
        }
        let distance = |a: &[Vec<f32>], b: &[Vec<f32>]| -> f64 {
            a.iter()
                .zip(b)
                .flat_map(|(x, y)| x.iter().zip(y))
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                .sum()
        };
        let neighbours = n.saturating_sub(byzantine + 2).max(1);
        (0..n)
            .map(|i| {
                let mut d: Vec<f64> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| distance(models[i], models[j]))
                    .collect();
                d.sort_by(f64::total_cmp);
                (d[..neighbours].iter().sum::<f64>(), i)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, i)| i)
    }

    /// Combines one layer's parameters from every update `(values, samples)`; all `values`
    /// have the same length. `None` when there is no update. Krum, which picks a whole
    /// update ([`Aggregator::pick`]), combines a lone layer as the median does.
    pub fn combine(&self, updates: &[(&[f32], u32)]) -> Option<Vec<f32>> {
        let len = updates.first()?.0.len();
        debug_assert!(updates.iter().all(|(v, _)| v.len() == len));
        Some(match self {
            Aggregator::FedAvg => weighted_mean(updates, len),
            Aggregator::Krum { .. } => return Aggregator::Median.combine(updates),
            Aggregator::Median | Aggregator::TrimmedMean { .. } => {
                let n = updates.len();
                let cut = match self {
                    Aggregator::TrimmedMean { trim } => {
                        let cut = (trim.clamp(0.0, 0.5) * n as f32).ceil() as usize;
                        cut.min((n - 1) / 2)
                    }
                    _ => 0,
                };
                let mut column = Vec::with_capacity(n);
                (0..len)
                    .map(|i| {
                        column.clear();
                        column.extend(updates.iter().map(|(v, _)| v[i]));
                        column.sort_unstable_by(f32::total_cmp);
                        match self {
                            Aggregator::Median => median(&column),
                            _ => mean(&column[cut..n - cut]),
                        }
                    })
                    .collect()
            }
        })
    }
}

impl std::str::FromStr for Aggregator {
    type Err = String;

    /// `fedavg`, `median`, `trimmed-mean` (trimming 0.2 at each end) or `krum` (tolerating
    /// one garbage worker).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "fedavg" => Ok(Aggregator::FedAvg),
            "median" => Ok(Aggregator::Median),
            "trimmed-mean" => Ok(Aggregator::TrimmedMean { trim: 0.2 }),
            "krum" => Ok(Aggregator::Krum { byzantine: 1 }),
            other => Err(format!(
                "unknown aggregator {other:?}: fedavg, median, trimmed-mean or krum"
            )),
        }
    }
}

/// The sample-weighted mean; equal weights when every count is zero.
fn weighted_mean(updates: &[(&[f32], u32)], len: usize) -> Vec<f32> {
    let total: u64 = updates.iter().map(|&(_, n)| u64::from(n)).sum();
    let weight = |n: u32| {
        if total == 0 {
            1.0 / updates.len() as f64
        } else {
            f64::from(n) / total as f64
        }
    };
    let mut sum = vec![0.0f64; len];
    for &(values, n) in updates {
        let w = weight(n);
        for (s, &v) in sum.iter_mut().zip(values) {
            *s += f64::from(v) * w;
        }
    }
    sum.into_iter().map(|s| s as f32).collect()
}

fn median(sorted: &[f32]) -> f32 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        mean(&sorted[n / 2 - 1..n / 2 + 1])
    }
}

fn mean(values: &[f32]) -> f32 {
    (values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn krum_picks_an_honest_model_and_never_the_garbage_one() {
        let honest: Vec<Vec<Vec<f32>>> = (0..4)
            .map(|k| vec![vec![1.0 + 0.01 * k as f32, -1.0], vec![0.5]])
            .collect();
        let garbage = vec![vec![1e3f32, 1e3], vec![-1e3]];
        for at in 0..5 {
            let mut models: Vec<&[Vec<f32>]> = honest.iter().map(|m| &m[..]).collect();
            models.insert(at, &garbage);
            let picked = Aggregator::Krum { byzantine: 1 }.pick(&models).unwrap();
            assert_ne!(picked, at, "Krum picked the garbage model at {at}");
            // The most central honest model: 1.01 or 1.02 in the first parameter.
            let first = models[picked][0][0];
            assert!((1.005..1.025).contains(&first), "picked {first}");
        }
        assert_eq!(Aggregator::FedAvg.pick(&[&honest[0]]), None);
    }

    #[test]
    fn fedavg_weighs_by_samples() {
        let a = [1.0f32, 10.0];
        let b = [4.0f32, 40.0];
        let out = Aggregator::FedAvg.combine(&[(&a, 1), (&b, 2)]).unwrap();
        assert_eq!(out, vec![3.0, 30.0]);
    }

    #[test]
    fn median_and_trimmed_mean_ignore_one_garbage_worker_of_three() {
        let honest = [[1.0f32, -2.0], [2.0, -1.0]];
        let garbage = [1e6f32, -1e6];
        let updates = [
            (&honest[0][..], 100),
            (&garbage[..], 100),
            (&honest[1][..], 100),
        ];
        for aggregator in [Aggregator::Median, Aggregator::TrimmedMean { trim: 0.2 }] {
            let out = aggregator.combine(&updates).unwrap();
            for (i, v) in out.iter().enumerate() {
                let (lo, hi) = (
                    honest[0][i].min(honest[1][i]),
                    honest[0][i].max(honest[1][i]),
                );
                assert!((lo..=hi).contains(v), "{aggregator:?} [{i}] = {v}");
            }
        }
        let fedavg = Aggregator::FedAvg.combine(&updates).unwrap();
        assert!(fedavg[0] > 1e5, "FedAvg follows the garbage: {fedavg:?}");
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let v: Vec<[f32; 1]> = vec![[4.0], [1.0], [3.0], [2.0]];
        let updates: Vec<(&[f32], u32)> = v.iter().map(|x| (&x[..], 1)).collect();
        assert_eq!(Aggregator::Median.combine(&updates), Some(vec![2.5]));
        // Trimming 0.2 of four drops one at each end: the same two remain.
        let trimmed = Aggregator::TrimmedMean { trim: 0.2 }.combine(&updates);
        assert_eq!(trimmed, Some(vec![2.5]));
    }

    #[test]
    fn trimming_always_leaves_a_value_and_no_update_gives_none() {
        let v = [[5.0f32], [7.0]];
        let updates: Vec<(&[f32], u32)> = v.iter().map(|x| (&x[..], 1)).collect();
        let out = Aggregator::TrimmedMean { trim: 0.5 }.combine(&updates);
        assert_eq!(out, Some(vec![6.0]));
        assert_eq!(Aggregator::Median.combine(&[]), None);
        assert_eq!(
            "Trimmed-Mean".parse(),
            Ok(Aggregator::TrimmedMean { trim: 0.2 })
        );
        assert_eq!("krum".parse(), Ok(Aggregator::Krum { byzantine: 1 }));
        assert!("bulyan"
            .parse::<Aggregator>()
            .unwrap_err()
            .contains("bulyan"));
    }
}
