//! Optimizers that turn [`Gradients`] into parameter changes: SGD with momentum, and Adam.
//!
//! Each keeps its state (velocity, moments) shaped like the network, created on the first
//! step, so one optimizer value belongs to one network.
//!
//! A step is computed into buffers of the optimizer's own, checked, and only then swapped
//! in (the network's parameter vectors and the optimizer's buffers trade places, so
//! committing copies nothing): a non-finite gradient or a diverging update leaves both the
//! network and the optimizer as they were.

use super::backprop::Gradients;
use super::network::NeuralNetwork;
use super::NnError;

/// One parameter update from gradients.
///
/// # Contract
/// On an error, `step` changes nothing: neither `net` nor the optimizer's own state. A
/// non-finite gradient is refused ([`NnError::NonFinite`], `"gradient"`) and an update that
/// would make a parameter, or the optimizer's state, non-finite stops with
/// [`NnError::Overflow`] (`"parameters"`, the first such index of the first such layer).
/// [`Sgd`] and [`Adam`] compute the whole update into buffers of their own, check it, and
/// only then swap it in; [`NeuralNetwork::train_epoch`] relies on this to leave the network
/// as it was before a diverging step.
pub trait Optimizer {
    /// Updates `net`'s parameters from `grads` (same shapes, else an error and no change).
    fn step(&mut self, net: &mut NeuralNetwork, grads: &Gradients) -> Result<(), NnError>;
}

fn shapes(net: &NeuralNetwork) -> Vec<(usize, usize)> {
    net.layers.iter().map(|l| (l.outputs, l.inputs)).collect()
}

/// Whether `state` (one vector per layer) is shaped like `net`'s parameters.
fn fits(state: &[Vec<f32>], net: &NeuralNetwork) -> bool {
    state.len() == net.layers.len()
        && state
            .iter()
            .zip(&net.layers)
            .all(|(s, l)| s.len() == l.params.len())
}

fn zeros(net: &NeuralNetwork) -> Vec<Vec<f32>> {
    net.layers
        .iter()
        .map(|l| vec![0.0; l.params.len()])
        .collect()
}

/// 1 unless `a` and `b` are both finite: `x * 0` is `±0` for a finite `x` and NaN for NaN
/// or ±infinity. Written in floats, not as a bit test, because inside the optimizers'
/// float loops this is the form the compiler vectorises (a bit-test mask there kept the
/// whole loop scalar, 2.5x slower).
#[inline(always)]
fn not_finite2(a: f32, b: f32) -> u32 {
    u32::from(a * 0.0 + b * 0.0 != 0.0)
}

/// The error for a layer whose step produced a non-finite value, found on the slow path:
/// the gradient given, if it is the cause; else the first non-finite result.
fn step_error(layer: usize, gradient: &[f32], results: &[&[f32]]) -> NnError {
    if let Some(index) = gradient.iter().position(|g| !g.is_finite()) {
        return NnError::NonFinite {
            what: "gradient",
            layer,
            index,
            value: gradient[index],
        };
    }
    let n = results.iter().map(|a| a.len()).min().unwrap_or(0);
    NnError::Overflow {
        what: "parameters",
        layer,
        index: (0..n)
            .find(|&i| results.iter().any(|a| !a[i].is_finite()))
            .unwrap_or(0),
    }
}

/// Gives `net` the parameters computed into `next`, keeping its old buffers for the next
/// step.
fn swap_params(net: &mut NeuralNetwork, next: &mut [Vec<f32>]) {
    for (layer, p) in net.layers.iter_mut().zip(next) {
        std::mem::swap(&mut layer.params, p);
    }
}

/// One layer's SGD step from parameters `p`, velocity `v` and gradient `g` into `np`, `nv`;
/// nonzero if a result is not finite.
///
/// Checking `p'` is enough: a non-finite `v'` (or gradient) makes `p' = p - η v'`
/// non-finite too (even for `η = 0`, as `0 · inf` is NaN). A function of its own so that
/// its slices are parameters, which the compiler knows do not alias, and vectorises.
fn sgd_layer(
    [lr, mu]: [f32; 2],
    p: &[f32],
    v: &[f32],
    g: &[f32],
    np: &mut [f32],
    nv: &mut [f32],
) -> u32 {
    let n = p.len();
    let (v, g, np, nv) = (&v[..n], &g[..n], &mut np[..n], &mut nv[..n]);
    let mut bad = 0;
    for i in 0..n {
        let v1 = mu * v[i] + g[i];
        let p1 = p[i] - lr * v1;
        nv[i] = v1;
        np[i] = p1;
        bad |= not_finite2(p1, p1);
    }
    bad
}

struct AdamConstants {
    b1: f32,
    b2: f32,
    eps: f32,
    /// Bias corrections `1 / (1 - β₁ᵗ)`, `1 / (1 - β₂ᵗ)`.
    c1: f32,
    c2: f32,
    lr: f32,
}

/// One layer's Adam step from parameters, moments and gradient `[p, m, v, g]` into
/// `[np, nm, nv]`; nonzero if a result is not finite.
///
/// Checking `p'` and `v'` is enough: a non-finite `m'` (or gradient) makes `p'` non-finite,
/// while an overflowing `v'` (`g²` past `f32::MAX`) would only freeze `p'` (`m / inf = 0`)
/// and so is checked itself. A function of its own for the reason [`sgd_layer`] is.
fn adam_layer(k: &AdamConstants, [p, m, v, g]: [&[f32]; 4], [np, nm, nv]: [&mut [f32]; 3]) -> u32 {
    let n = p.len();
    let (m, v, g) = (&m[..n], &v[..n], &g[..n]);
    let (np, nm, nv) = (&mut np[..n], &mut nm[..n], &mut nv[..n]);
    let mut bad = 0;
    for i in 0..n {
        let m1 = k.b1 * m[i] + (1.0 - k.b1) * g[i];
        let v1 = k.b2 * v[i] + (1.0 - k.b2) * g[i] * g[i];
        let p1 = p[i] - k.lr * (m1 * k.c1) / ((v1 * k.c2).sqrt() + k.eps);
        nm[i] = m1;
        nv[i] = v1;
        np[i] = p1;
        bad |= not_finite2(p1, v1);
    }
    bad
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
    /// The step being computed: parameters and velocity, swapped in once all are finite.
    next_params: Vec<Vec<f32>>,
    next_velocity: Vec<Vec<f32>>,
}

impl Sgd {
    /// SGD with step size `learning_rate` and momentum `momentum`.
    pub fn new(learning_rate: f32, momentum: f32) -> Self {
        Self {
            learning_rate,
            momentum,
            velocity: Vec::new(),
            next_params: Vec::new(),
            next_velocity: Vec::new(),
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, net: &mut NeuralNetwork, grads: &Gradients) -> Result<(), NnError> {
        grads.check_shapes(&shapes(net))?;
        if !fits(&self.velocity, net) {
            self.velocity = zeros(net);
            self.next_params = zeros(net);
            self.next_velocity = zeros(net);
        }
        let (lr, mu) = (self.learning_rate, self.momentum);
        for (l, ((((layer, v), g), np), nv)) in net
            .layers
            .iter()
            .zip(&self.velocity)
            .zip(grads.layers())
            .zip(&mut self.next_params)
            .zip(&mut self.next_velocity)
            .enumerate()
        {
            if sgd_layer([lr, mu], &layer.params, v, g, np, nv) != 0 {
                return Err(step_error(l, g, &[np, nv]));
            }
        }
        std::mem::swap(&mut self.velocity, &mut self.next_velocity);
        swap_params(net, &mut self.next_params);
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
    /// The step being computed: parameters and moments, swapped in once all are finite.
    next_params: Vec<Vec<f32>>,
    next_m: Vec<Vec<f32>>,
    next_v: Vec<Vec<f32>>,
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
            next_params: Vec::new(),
            next_m: Vec::new(),
            next_v: Vec::new(),
        }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, net: &mut NeuralNetwork, grads: &Gradients) -> Result<(), NnError> {
        grads.check_shapes(&shapes(net))?;
        if !fits(&self.m, net) {
            self.m = zeros(net);
            self.v = zeros(net);
            self.t = 0;
            self.next_params = zeros(net);
            self.next_m = zeros(net);
            self.next_v = zeros(net);
        }
        let t = self.t.saturating_add(1);
        let (b1, b2) = (self.beta1, self.beta2);
        let k = AdamConstants {
            b1,
            b2,
            eps: self.epsilon,
            c1: 1.0 / (1.0 - b1.powi(t)),
            c2: 1.0 / (1.0 - b2.powi(t)),
            lr: self.learning_rate,
        };
        for (l, (((((layer, m), v), g), np), (nm, nv))) in net
            .layers
            .iter()
            .zip(&self.m)
            .zip(&self.v)
            .zip(grads.layers())
            .zip(&mut self.next_params)
            .zip(self.next_m.iter_mut().zip(&mut self.next_v))
            .enumerate()
        {
            if adam_layer(&k, [&layer.params, m, v, g], [np, nm, nv]) != 0 {
                return Err(step_error(l, g, &[np, nm, nv]));
            }
        }
        self.t = t;
        std::mem::swap(&mut self.m, &mut self.next_m);
        std::mem::swap(&mut self.v, &mut self.next_v);
        swap_params(net, &mut self.next_params);
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
