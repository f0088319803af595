//! FedProx's proximal term: local training pulled towards the round's global weights.
//!
//! On label-skewed data each worker's local optimum lies far from the others'; several local
//! epochs carry its weights there, and the average of such far-apart weights learns slowly.
//! FedProx (Li et al., 2020) adds `mu / 2 * |w - w_global|^2` to each worker's loss, that is
//! `mu * (w - w_global)` to its gradient, so a worker strays from the global model only as
//! far as its data is worth. `mu` 0 is plain FedAvg local training.

use crate::nn::{Gradients, NeuralNetwork, NnError, Optimizer};

/// An optimizer whose gradients get `mu * (w - anchor)` added before the inner step.
pub(super) struct Proximal<O> {
    pub(super) inner: O,
    pub(super) mu: f32,
    /// The global weights the round began with, per layer.
    anchor: Vec<Vec<f32>>,
    /// The gradients with the term added (kept to avoid an allocation per step).
    pulled: Option<Gradients>,
}

impl<O: Optimizer> Proximal<O> {
    pub(super) fn new(inner: O, mu: f32) -> Self {
        Proximal {
            inner,
            mu,
            anchor: Vec::new(),
            pulled: None,
        }
    }

    /// Takes `net`'s weights as the anchor for the steps until the next call.
    pub(super) fn anchor_at(&mut self, net: &NeuralNetwork) {
        self.anchor = (0..net.layer_count())
            .map(|l| net.layer_params(l).to_vec())
            .collect();
    }
}

impl<O: Optimizer> Optimizer for Proximal<O> {
    fn step(&mut self, net: &mut NeuralNetwork, grads: &Gradients) -> Result<(), NnError> {
        if self.mu == 0.0 || self.anchor.len() != net.layer_count() {
            return self.inner.step(net, grads);
        }
        let pulled = self.pulled.get_or_insert_with(|| grads.clone());
        if pulled.layer_count() != grads.layer_count() {
            *pulled = grads.clone();
        }
        for (l, anchor) in self.anchor.iter().enumerate() {
            pulled.set_layer_gradient(l, grads.layer_gradient_flat(l))?;
            let g = pulled.layer_gradient_flat_mut(l);
            for ((g, &w), &a) in g.iter_mut().zip(net.layer_params(l)).zip(anchor) {
                *g += self.mu * (w - a);
            }
        }
        self.inner.step(net, pulled)
    }
}
