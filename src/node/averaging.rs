//! Weighted averaging of the weight syncs that arrive in `SyncMode::Average`.
//!
//! Every parameter keeps the number of samples already behind it: the node's own count at the
//! start of a round, plus each member's count as its values are averaged in. A value `r`
//! from a member with `n` samples moves a parameter `w` backed by `t` samples to
//! `w + (r - w) * n / (t + n)`, and the parameter is then backed by `t + n`. That is the
//! running weighted mean, so after any number of members, in any order and in chunks of any
//! size, the parameters equal `nn::NeuralNetwork::average` of all of them weighted by their
//! counts.

use std::collections::HashMap;

/// Samples behind each parameter of each layer averaged since the round began.
#[derive(Debug)]
pub(super) struct Averaging {
    /// The node's own sample count: what its parameters are backed by when a round begins.
    own: u32,
    /// Per layer, per parameter, the samples behind it (absent: `own` for every parameter).
    backing: HashMap<usize, Vec<u64>>,
}

impl Averaging {
    pub(super) fn new(own: u32) -> Self {
        Averaging {
            own,
            backing: HashMap::new(),
        }
    }

    /// The node's own sample count.
    pub(super) fn own(&self) -> u32 {
        self.own
    }

    /// Begins a new round with the node's own parameters backed by `own` samples.
    pub(super) fn restart(&mut self, own: u32) {
        self.own = own;
        self.backing.clear();
    }

    /// The shares to average a member's `len` values at `offset` of a layer of `params`
    /// parameters with, as runs `(start, end, share)` of equal share covering the window, and
    /// counts the member's `samples` behind them. `None` if the window runs past the layer
    /// (nothing is counted).
    pub(super) fn weigh(
        &mut self,
        layer: usize,
        params: usize,
        offset: usize,
        len: usize,
        samples: u32,
    ) -> Option<Vec<(usize, usize, f32)>> {
        let end = offset.checked_add(len).filter(|&end| end <= params)?;
        let own = u64::from(self.own);
        let backing = self
            .backing
            .entry(layer)
            .or_insert_with(|| vec![own; params]);
        if backing.len() != params {
            *backing = vec![own; params];
        }
        let samples = u64::from(samples);
        let mut runs: Vec<(usize, usize, f32)> = Vec::new();
        for (i, behind) in backing[offset..end].iter_mut().enumerate() {
            let total = *behind + samples;
            let share = if total == 0 {
                0.5
            } else {
                (samples as f64 / total as f64) as f32
            };
            *behind = total;
            match runs.last_mut() {
                Some((_, run_end, run_share)) if *run_share == share => *run_end = offset + i + 1,
                _ => runs.push((offset + i, offset + i + 1, share)),
            }
        }
        Some(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies one member's values to `params` as the node does.
    fn apply(avg: &mut Averaging, params: &mut [f32], offset: usize, values: &[f32], n: u32) {
        let runs = avg.weigh(0, params.len(), offset, values.len(), n).unwrap();
        for (start, end, share) in runs {
            for i in start..end {
                params[i] += (values[i - offset] - params[i]) * share;
            }
        }
    }

    #[test]
    fn any_number_of_members_in_any_chunks_give_the_weighted_mean() {
        let own = [1.0f32, 2.0, 3.0, 4.0];
        let members = [
            ([5.0f32, 6.0, 7.0, 8.0], 3u32),
            ([0.0, 0.0, 9.0, 1.0], 2),
            ([2.0; 4], 5),
        ];
        let mut params = own;
        let mut avg = Averaging::new(2);
        // Member 0 whole, member 1 in two chunks around member 2's whole sync.
        apply(&mut avg, &mut params, 0, &members[0].0, members[0].1);
        apply(&mut avg, &mut params, 0, &members[1].0[..2], members[1].1);
        apply(&mut avg, &mut params, 0, &members[2].0, members[2].1);
        apply(&mut avg, &mut params, 2, &members[1].0[2..], members[1].1);
        for i in 0..4 {
            let sum = own[i] as f64 * 2.0
                + members
                    .iter()
                    .map(|(v, n)| v[i] as f64 * *n as f64)
                    .sum::<f64>();
            let mean = sum / (2 + 3 + 2 + 5) as f64;
            assert!(
                (params[i] as f64 - mean).abs() < 1e-5,
                "{i}: {} vs {mean}",
                params[i]
            );
        }
    }

    #[test]
    fn a_window_past_the_layer_counts_nothing_and_a_restart_forgets_the_round() {
        let mut avg = Averaging::new(1);
        assert!(avg.weigh(0, 4, 3, 2, 1).is_none());
        assert_eq!(avg.weigh(0, 4, 0, 4, 1), Some(vec![(0, 4, 0.5)]));
        assert_eq!(avg.weigh(0, 4, 0, 4, 2), Some(vec![(0, 4, 0.5)]));
        avg.restart(3);
        assert_eq!(avg.own(), 3);
        assert_eq!(avg.weigh(0, 4, 0, 4, 1), Some(vec![(0, 4, 0.25)]));
    }
}
