//! Optimizers that turn [`Gradients`] into parameter changes: SGD with momentum, and Adam.
//!
//! Each keeps its state (velocity, moments) shaped like the network, created on the first
//! step, so one optimizer value belongs to one network.

use super::backprop::Gradients;
use super::network::NeuralNetwork;
use super::NnError;

/// One parameter update from gradients.
pub trait Optimizer {
    /// Updates `net`'s parameters from `grads` (same shapes, else an error and no change).
    fn step(&mut self, net: &mut NeuralNetwork, grads: &Gradients) -> Result<(), NnError>;
}

fn shapes(net: &NeuralNetwork) -> Vec<(usize, usize)> {
    net.layers.iter().map(|l| (l.outputs, l.inputs)).collect()
}

fn zeros(net: &NeuralNetwork) -> Vec<Vec<f32>> {
    net.layers
        .iter()
        .map(|l| vec![0.0; l.params.len()])
        .collect()
}

/// Stochastic gradient descent with (heavy-ball) momentum:
/// `v ← μ v + g`, `θ ← θ - η v`.
#[derive(Debug, Clone)]
pub struct Sgd {
    /// Step size η.
    pub learning_rate: f32,
    /// Momentum μ in `[0, 1)`; 0 is plain SGD.
    pub momentum: f32,
    velocity: Vec<Vec<f32>>,
}

impl Sgd {
    /// SGD with step size `learning_rate` and momentum `momentum`.
    pub fn new(learning_rate: f32, momentum: f32) -> Self {
        Self {
            learning_rate,
            momentum,
            velocity: Vec::new(),
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, net: &mut NeuralNetwork, grads: &Gradients) -> Result<(), NnError> {
        grads.check_shapes(&shapes(net))?;
        if self.velocity.len() != net.layers.len() {
            self.velocity = zeros(net);
        }
        let (lr, mu) = (self.learning_rate, self.momentum);
        for ((layer, v), g) in net
            .layers
            .iter_mut()
            .zip(&mut self.velocity)
            .zip(grads.layers())
        {
            for ((p, v), g) in layer.params.iter_mut().zip(v.iter_mut()).zip(g) {
                *v = mu * *v + g;
                *p -= lr * *v;
            }
        }
        Ok(())
    }
}

/// Adam (Kingma & Ba 2015): `m ← β₁m + (1-β₁)g`, `v ← β₂v + (1-β₂)g²`,
/// `θ ← θ - η m̂ / (√v̂ + ε)` with bias-corrected `m̂ = m / (1-β₁ᵗ)`, `v̂ = v / (1-β₂ᵗ)`.
#[derive(Debug, Clone)]
pub struct Adam {
    /// Step size η.
    pub learning_rate: f32,
    /// First-moment decay β₁ (default 0.9).
    pub beta1: f32,
    /// Second-moment decay β₂ (default 0.999).
    pub beta2: f32,
    /// ε in the denominator (default 1e-8).
    pub epsilon: f32,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    t: i32,
}

impl Adam {
    /// Adam with step size `learning_rate` and the usual defaults for the rest.
    pub fn new(learning_rate: f32) -> Self {
        Self {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            m: Vec::new(),
            v: Vec::new(),
            t: 0,
        }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, net: &mut NeuralNetwork, grads: &Gradients) -> Result<(), NnError> {
        grads.check_shapes(&shapes(net))?;
        if self.m.len() != net.layers.len() {
            self.m = zeros(net);
            self.v = zeros(net);
            self.t = 0;
        }
        self.t = self.t.saturating_add(1);
        let (b1, b2, eps) = (self.beta1, self.beta2, self.epsilon);
        let c1 = 1.0 / (1.0 - b1.powi(self.t));
        let c2 = 1.0 / (1.0 - b2.powi(self.t));
        let lr = self.learning_rate;
        for (((layer, m), v), g) in net
            .layers
            .iter_mut()
            .zip(&mut self.m)
            .zip(&mut self.v)
            .zip(grads.layers())
        {
            for (((p, m), v), g) in layer
                .params
                .iter_mut()
                .zip(m.iter_mut())
                .zip(v.iter_mut())
                .zip(g)
            {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= lr * (*m * c1) / ((*v * c2).sqrt() + eps);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Activation, Loss};

    fn descends(opt: &mut dyn Optimizer) {
        let mut net = NeuralNetwork::builder(&[2, 1])
            .output_activation(Activation::Linear)
            .build()
            .unwrap();
        let x = [1.0, -2.0];
        let t = [3.0];
        let first = net.backward(&x, &t, Loss::MeanSquaredError).unwrap().0;
        for _ in 0..200 {
            let (_, g) = net.backward(&x, &t, Loss::MeanSquaredError).unwrap();
            opt.step(&mut net, &g).unwrap();
        }
        let last = net.backward(&x, &t, Loss::MeanSquaredError).unwrap().0;
        assert!(last < 1e-3 * first, "{first} -> {last}");
    }

    #[test]
    fn sgd_and_adam_minimise_a_quadratic() {
        descends(&mut Sgd::new(0.05, 0.9));
        descends(&mut Adam::new(0.05));
    }

    #[test]
    fn wrong_shapes_are_rejected() {
        let mut a = NeuralNetwork::builder(&[2, 1]).build().unwrap();
        let b = NeuralNetwork::builder(&[3, 1]).build().unwrap();
        let g = Gradients::zeros_like(&b);
        assert!(matches!(
            Sgd::new(0.1, 0.0).step(&mut a, &g),
            Err(NnError::ShapeMismatch { layer: 0, .. })
        ));
    }
}
