//! Backpropagation: losses, per-layer gradients as data, and the layer-local backward step
//! that pipeline stages exchange.
//!
//! Gradients use the same flat layout as the parameters (weights row-major
//! `[outputs x inputs]`, then biases), which is also the BackwardData payload: for layer `l`
//! the vector [`Gradients::layer_gradient_flat`] is what goes on the wire, and
//! [`NeuralNetwork::apply_layer_gradient`] is what the receiver does with it.

use super::activation::Activation;
use super::finite::{axpy_if_finite, check_given, check_result};
use super::kernels;
use super::network::{compare_shapes, forward_into_impl, ForwardScratch, Layer, NeuralNetwork};
use super::NnError;

/// Smallest probability fed to `ln` in the cross-entropy, so a zero output gives a large
/// finite loss instead of infinity.
const MIN_PROB: f32 = 1e-12;

/// The loss minimised by backprop, per sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Loss {
    /// `L = ½ Σ_i (y_i - t_i)²`, so `∂L/∂y = y - t`.
    MeanSquaredError,
    /// `L = -Σ_i t_i ln y_i` (targets one-hot or a distribution). With a softmax output the
    /// output delta is exactly `y - t`; with other outputs `∂L/∂y = -t / y` is passed through
    /// the activation's derivative.
    CrossEntropy,
}

impl Loss {
    /// The loss of output `y` against target `t`.
    pub fn value(self, y: &[f32], t: &[f32]) -> f32 {
        match self {
            Loss::MeanSquaredError => {
                0.5 * y.iter().zip(t).map(|(y, t)| (y - t) * (y - t)).sum::<f32>()
            }
            Loss::CrossEntropy => -y
                .iter()
                .zip(t)
                .map(|(y, t)| t * y.max(MIN_PROB).ln())
                .sum::<f32>(),
        }
    }

    /// Writes `∂L/∂z` of the output layer (pre-activation) into `delta`.
    pub fn output_delta(self, activation: Activation, y: &[f32], t: &[f32], delta: &mut [f32]) {
        match (self, activation) {
            (Loss::CrossEntropy, Activation::Softmax) => {
                for ((d, y), t) in delta.iter_mut().zip(y).zip(t) {
                    *d = y - t;
                }
            }
            (Loss::CrossEntropy, a) => {
                for ((d, y), t) in delta.iter_mut().zip(y).zip(t) {
                    *d = -t / y.max(MIN_PROB);
                }
                a.backprop(y, delta);
            }
            (Loss::MeanSquaredError, a) => {
                for ((d, y), t) in delta.iter_mut().zip(y).zip(t) {
                    *d = y - t;
                }
                a.backprop(y, delta);
            }
        }
    }
}

/// Where a backward pass starts: see [`NeuralNetwork::backward_accumulate_from`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutputGradient<'a> {
    /// The loss of the network's output against `target`: the whole network, or the last
    /// stage of a pipeline (with a softmax output and cross-entropy the output delta is
    /// exactly `y - t`).
    Target {
        /// The loss.
        loss: Loss,
        /// The sample's target, one value per output.
        target: &'a [f32],
    },
    /// `∂L/∂output`, one value per output: what the next stage of a pipeline sent back.
    Output(&'a [f32]),
}

/// Per-layer parameter gradients, flat like the parameters: weights row-major
/// `[outputs x inputs]`, then biases.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients {
    layers: Vec<Vec<f32>>,
    shapes: Vec<(usize, usize)>,
}

impl Gradients {
    /// Zero gradients shaped like `net`.
    pub fn zeros_like(net: &NeuralNetwork) -> Self {
        Self {
            layers: net
                .layers
                .iter()
                .map(|l| vec![0.0; l.params.len()])
                .collect(),
            shapes: net.layers.iter().map(|l| (l.outputs, l.inputs)).collect(),
        }
    }

    /// Number of layers.
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// `(outputs, inputs)` of layer `l`.
    ///
    /// # Panics
    /// If `l >= layer_count()`.
    pub fn layer_shape(&self, l: usize) -> (usize, usize) {
        self.shapes[l]
    }

    /// Sets every gradient to zero.
    pub fn zero(&mut self) {
        self.layers.iter_mut().for_each(|g| g.fill(0.0));
    }

    /// Multiplies every gradient by `factor` (e.g. `1 / batch`).
    pub fn scale(&mut self, factor: f32) {
        self.layers.iter_mut().flatten().for_each(|g| *g *= factor);
    }

    /// The BackwardData payload of layer `l`: weight gradients row-major, then bias
    /// gradients (`outputs * inputs + outputs` values).
    ///
    /// # Panics
    /// If `l >= layer_count()`.
    pub fn layer_gradient_flat(&self, l: usize) -> &[f32] {
        &self.layers[l]
    }

    /// Mutable flat gradient of layer `l`.
    ///
    /// # Panics
    /// If `l >= layer_count()`.
    pub fn layer_gradient_flat_mut(&mut self, l: usize) -> &mut [f32] {
        &mut self.layers[l]
    }

    /// Weight gradients of layer `l`, row-major `[outputs x inputs]`.
    ///
    /// # Panics
    /// If `l >= layer_count()`.
    pub fn layer_weight_gradients(&self, l: usize) -> &[f32] {
        let (o, i) = self.shapes[l];
        &self.layers[l][..o * i]
    }

    /// Bias gradients of layer `l`.
    ///
    /// # Panics
    /// If `l >= layer_count()`.
    pub fn layer_bias_gradients(&self, l: usize) -> &[f32] {
        let (o, i) = self.shapes[l];
        &self.layers[l][o * i..]
    }

    /// Replaces layer `l`'s gradient with a received flat vector. A NaN or infinity is
    /// refused ([`NnError::NonFinite`], `"gradient"`), changing nothing.
    pub fn set_layer_gradient(&mut self, l: usize, flat: &[f32]) -> Result<(), NnError> {
        let layer_count = self.layers.len();
        let g = self.layers.get_mut(l).ok_or(NnError::LayerOutOfRange {
            layer: l,
            layer_count,
        })?;
        if flat.len() != g.len() {
            return Err(NnError::GradientLength {
                layer: l,
                expected: g.len(),
                got: flat.len(),
            });
        }
        check_given("gradient", l, flat)?;
        g.copy_from_slice(flat);
        Ok(())
    }

    /// Adds `other` (same shapes) into `self`.
    ///
    /// Gradients are not checked for finiteness as they are combined; what applies them
    /// (the optimizers, [`NeuralNetwork::apply_layer_gradient`]) refuses a non-finite one.
    pub fn accumulate(&mut self, other: &Gradients) -> Result<(), NnError> {
        self.check_shapes(&other.shapes)?;
        for (a, b) in self.layers.iter_mut().zip(&other.layers) {
            kernels::axpy(1.0, b, a);
        }
        Ok(())
    }

    pub(crate) fn check_shapes(&self, shapes: &[(usize, usize)]) -> Result<(), NnError> {
        compare_shapes(&self.shapes, shapes)
    }

    pub(crate) fn layers(&self) -> &[Vec<f32>] {
        &self.layers
    }

    /// [`NnError::Overflow`] (`"gradient"`) at the first layer holding a NaN or infinity:
    /// for gradients computed here from finite data.
    pub(crate) fn check_computed(&self) -> Result<(), NnError> {
        for (l, g) in self.layers.iter().enumerate() {
            check_result("gradient", l, g)?;
        }
        Ok(())
    }
}

/// Reusable buffers for [`NeuralNetwork::backward_accumulate`].
#[derive(Debug, Clone, Default)]
pub struct BackpropScratch {
    forward: ForwardScratch,
    deltas: Vec<Vec<f32>>,
    input_gradient: Vec<f32>,
}

impl BackpropScratch {
    /// Empty buffers; they grow on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// `∂L/∂x` for the network input of the last backward pass.
    pub fn input_gradient(&self) -> &[f32] {
        &self.input_gradient
    }

    /// The forward pass of the last backward pass (layer outputs).
    pub fn forward(&self) -> &ForwardScratch {
        &self.forward
    }
}

/// Accumulates the parameter gradient of `layer` for one sample with pre-activation delta
/// `delta` and input `x`, and writes `Wᵀ delta` into `grad_input` if given.
fn layer_backward_delta(
    layer: &Layer,
    x: &[f32],
    delta: &[f32],
    grads: &mut [f32],
    grad_input: Option<&mut [f32]>,
) {
    let n = layer.weight_count();
    let (gw, gb) = grads.split_at_mut(n);
    for ((row, d), b) in gw
        .chunks_exact_mut(layer.inputs)
        .zip(delta)
        .zip(gb.iter_mut())
    {
        if *d != 0.0 {
            kernels::axpy(*d, x, row);
        }
        *b += d;
    }
    if let Some(gi) = grad_input {
        gi.fill(0.0);
        for (w, d) in layer.weights().chunks_exact(layer.inputs).zip(delta) {
            if *d != 0.0 {
                kernels::axpy(*d, w, gi);
            }
        }
    }
}

impl NeuralNetwork {
    /// Loss and gradients for one sample (allocating form of
    /// [`Self::backward_accumulate`]). Errors as that, and with [`NnError::Overflow`]
    /// (`"gradient"`) if a gradient overflowed.
    pub fn backward(
        &self,
        input: &[f32],
        target: &[f32],
        loss: Loss,
    ) -> Result<(f32, Gradients), NnError> {
        let mut g = Gradients::zeros_like(self);
        let mut s = BackpropScratch::new();
        let l = self.backward_accumulate(input, target, loss, &mut s, &mut g)?;
        g.check_computed()?;
        Ok((l, g))
    }

    /// Mean loss and mean gradients over a row-major batch (`inputs`: `n x input width`,
    /// `targets`: `n x output width`): what a BackwardData message carries, one layer's
    /// [`Gradients::layer_gradient_flat`] at a time.
    ///
    /// A NaN or infinity in `inputs` or `targets` is refused ([`NnError::NonFinite`], index
    /// into the flat buffer); a gradient that overflows gives [`NnError::Overflow`].
    pub fn batch_gradients(
        &self,
        inputs: &[f32],
        targets: &[f32],
        loss: Loss,
    ) -> Result<(f32, Gradients), NnError> {
        let n = self.sample_count(inputs, targets)?;
        self.check_data(inputs, targets)?;
        let mut g = Gradients::zeros_like(self);
        let mut s = BackpropScratch::new();
        let total = self.accumulate_rows(inputs, targets, 0..n, loss, &mut s, &mut g)?;
        if n > 0 {
            g.scale(1.0 / n as f32);
        }
        g.check_computed()?;
        Ok(((total / n.max(1) as f64) as f32, g))
    }

    /// [`Self::backward_accumulate`] for the samples `rows` of a row-major data set (whose
    /// shape the caller has checked); returns the summed loss.
    pub(crate) fn accumulate_rows(
        &self,
        inputs: &[f32],
        targets: &[f32],
        rows: impl IntoIterator<Item = usize>,
        loss: Loss,
        scratch: &mut BackpropScratch,
        grads: &mut Gradients,
    ) -> Result<f64, NnError> {
        let (iw, ow) = (self.input_size(), self.output_size());
        let mut total = 0.0f64;
        for i in rows {
            total += self.backward_accumulate(
                &inputs[i * iw..(i + 1) * iw],
                &targets[i * ow..(i + 1) * ow],
                loss,
                scratch,
                grads,
            )? as f64;
        }
        Ok(total)
    }

    /// Runs one sample forward and backward, *adding* its parameter gradients into `grads`
    /// and leaving `∂L/∂input` in [`BackpropScratch::input_gradient`]. Returns the loss.
    ///
    /// A NaN or infinity in `input` or `target` is refused ([`NnError::NonFinite`]) and a
    /// forward pass that overflows stops with [`NnError::Overflow`], both before `grads` is
    /// touched. The sums added into `grads` are not checked here (that would cost a pass
    /// over all gradients per sample): whatever applies them refuses non-finite ones (an
    /// optimizer's step, before it writes anything; [`Self::train_epoch`] reports that as
    /// [`NnError::Overflow`], `"gradient"`).
    pub fn backward_accumulate(
        &self,
        input: &[f32],
        target: &[f32],
        loss: Loss,
        scratch: &mut BackpropScratch,
        grads: &mut Gradients,
    ) -> Result<f32, NnError> {
        self.backward_accumulate_from(
            input,
            OutputGradient::Target { loss, target },
            scratch,
            grads,
        )
    }

    /// [`Self::backward_accumulate`] for a network that may be only some layers of a larger
    /// one (a pipeline stage, see [`Self::sub_network`]): the backward pass starts from
    /// `gradient`, the loss against targets at the real output, or `∂L/∂output` as the next
    /// stage sent it back. Adds the parameter gradients into `grads`, leaves `∂L/∂input` (what
    /// the previous stage needs) in [`BackpropScratch::input_gradient`], and returns the loss
    /// (0 for [`OutputGradient::Output`]).
    ///
    /// The forward pass is run again here from `input` (a stage keeps only its inputs between
    /// its forward and backward passes), with the same kernels as [`Self::forward_into`], so
    /// a network split into stages computes exactly what the whole network computes.
    ///
    /// Errors as [`Self::backward_accumulate`]; a non-finite output gradient is refused
    /// ([`NnError::NonFinite`], `"gradient"`), a wrong-length one with
    /// [`NnError::TargetLength`].
    pub fn backward_accumulate_from(
        &self,
        input: &[f32],
        gradient: OutputGradient<'_>,
        scratch: &mut BackpropScratch,
        grads: &mut Gradients,
    ) -> Result<f32, NnError> {
        let last = self.layers.len() - 1;
        let out_w = self.layers[last].outputs;
        let (given, what) = match gradient {
            OutputGradient::Target { target, .. } => (target, "target"),
            OutputGradient::Output(g) => (g, "gradient"),
        };
        if given.len() != out_w {
            return Err(NnError::TargetLength {
                layer: last,
                expected: out_w,
                got: given.len(),
            });
        }
        check_given(what, last, given)?;
        if grads
            .shapes
            .iter()
            .copied()
            .ne(self.layers.iter().map(|l| (l.outputs, l.inputs)))
        {
            grads.check_shapes(&self.shapes())?;
        }
        forward_into_impl(self, input, &mut scratch.forward)?;
        let outs = &scratch.forward.outputs;
        scratch.deltas.resize_with(self.layers.len(), Vec::new);
        for (d, l) in scratch.deltas.iter_mut().zip(&self.layers) {
            d.resize(l.outputs, 0.0);
        }
        scratch.input_gradient.resize(self.layers[0].inputs, 0.0);
        let y = &outs[last];
        let value = match gradient {
            OutputGradient::Target { loss, target } => {
                loss.output_delta(
                    self.layers[last].activation,
                    y,
                    target,
                    &mut scratch.deltas[last],
                );
                loss.value(y, target)
            }
            OutputGradient::Output(g) => {
                scratch.deltas[last].copy_from_slice(g);
                self.layers[last]
                    .activation
                    .backprop(y, &mut scratch.deltas[last]);
                0.0
            }
        };
        for l in (0..=last).rev() {
            let layer = &self.layers[l];
            let x = if l == 0 { input } else { &outs[l - 1] };
            let (below, here) = scratch.deltas.split_at_mut(l);
            let gi = if l == 0 {
                &mut scratch.input_gradient[..]
            } else {
                &mut below[l - 1][..]
            };
            layer_backward_delta(layer, x, &here[0], &mut grads.layers[l], Some(gi));
            if l > 0 {
                self.layers[l - 1]
                    .activation
                    .backprop(&outs[l - 1], &mut below[l - 1]);
            }
        }
        Ok(value)
    }

    /// The backward step of one layer, for pipeline stages that hold only some layers.
    ///
    /// Given the layer's `input`, its `output` (after activation) and `grad_output`
    /// (`∂L/∂output`, overwritten with `∂L/∂z`, the pre-activation gradient), adds the
    /// layer's parameter gradient into `grads` (flat, `outputs * inputs + outputs`) and
    /// writes `∂L/∂input` into `grad_input`, which the previous stage needs.
    ///
    /// A NaN or infinity in `input`, `output` or `grad_output` is refused
    /// ([`NnError::NonFinite`]: `"input"`, `"output"`, `"gradient"`) before anything is
    /// written. What is written is not checked: the next stage refuses a non-finite
    /// `grad_input` as its `grad_output`, and [`Self::apply_layer_gradient`] or an optimizer
    /// refuses non-finite `grads`.
    pub fn layer_backward(
        &self,
        l: usize,
        input: &[f32],
        output: &[f32],
        grad_output: &mut [f32],
        grads: &mut [f32],
        grad_input: &mut [f32],
    ) -> Result<(), NnError> {
        let layer = self.layer_checked(l)?;
        if input.len() != layer.inputs {
            return Err(NnError::InputLength {
                layer: l,
                expected: layer.inputs,
                got: input.len(),
            });
        }
        if grad_input.len() != layer.inputs {
            return Err(NnError::InputLength {
                layer: l,
                expected: layer.inputs,
                got: grad_input.len(),
            });
        }
        for v in [output.len(), grad_output.len()] {
            if v != layer.outputs {
                return Err(NnError::TargetLength {
                    layer: l,
                    expected: layer.outputs,
                    got: v,
                });
            }
        }
        if grads.len() != layer.params.len() {
            return Err(NnError::GradientLength {
                layer: l,
                expected: layer.params.len(),
                got: grads.len(),
            });
        }
        check_given("input", l, input)?;
        check_given("output", l, output)?;
        check_given("gradient", l, grad_output)?;
        layer.activation.backprop(output, grad_output);
        layer_backward_delta(layer, input, grad_output, grads, Some(grad_input));
        Ok(())
    }

    /// Applies a received flat gradient to layer `l` by plain SGD:
    /// `params -= learning_rate * gradient`.
    ///
    /// A NaN or infinity in `gradient` is refused ([`NnError::NonFinite`], `"gradient"`);
    /// a step that would make a parameter non-finite (a diverging learning rate) stops with
    /// [`NnError::Overflow`] (`"parameters"`). Either way the layer is unchanged.
    pub fn apply_layer_gradient(&mut self, l: usize, gradient: &[f32]) -> Result<(), NnError> {
        let lr = self.learning_rate;
        let layer = self.layer_checked_mut(l)?;
        if gradient.len() != layer.params.len() {
            return Err(NnError::GradientLength {
                layer: l,
                expected: layer.params.len(),
                got: gradient.len(),
            });
        }
        check_given("gradient", l, gradient)?;
        axpy_if_finite(-lr, gradient, &mut layer.params).map_err(|index| NnError::Overflow {
            what: "parameters",
            layer: l,
            index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::rng::SplitMix64;

    /// Central finite differences in f32 with step `EPS`: truncation error O(EPS²), rounding
    /// error about 1e-7 / EPS. Tolerance: 3e-3 absolute + 3e-2 relative.
    const EPS: f32 = 2e-3;

    fn check(net: &NeuralNetwork, x: &[f32], t: &[f32], loss: Loss) {
        let (_, g) = net.backward(x, t, loss).unwrap();
        let f = |n: &NeuralNetwork, x: &[f32]| loss.value(&n.forward(x).unwrap().1, t);
        let tol = |a: f32, b: f32| (a - b).abs() <= 3e-3 + 3e-2 * a.abs().max(b.abs());
        for l in 0..net.layer_count() {
            for i in 0..net.layer_params(l).len() {
                let mut p = net.clone();
                let v = p.layer_params(l)[i];
                p.write_layer_params(l, i, &[v + EPS]).unwrap();
                let up = f(&p, x);
                p.write_layer_params(l, i, &[v - EPS]).unwrap();
                let down = f(&p, x);
                let fd = (up - down) / (2.0 * EPS);
                let an = g.layer_gradient_flat(l)[i];
                assert!(
                    tol(an, fd),
                    "{loss:?} layer {l} param {i}: analytic {an}, numeric {fd}"
                );
            }
        }
        // Input gradient.
        let mut s = BackpropScratch::new();
        let mut g2 = Gradients::zeros_like(net);
        net.backward_accumulate(x, t, loss, &mut s, &mut g2)
            .unwrap();
        for i in 0..x.len() {
            let mut xp = x.to_vec();
            xp[i] += EPS;
            let up = f(net, &xp);
            xp[i] -= 2.0 * EPS;
            let down = f(net, &xp);
            let fd = (up - down) / (2.0 * EPS);
            let an = s.input_gradient()[i];
            assert!(
                tol(an, fd),
                "{loss:?} input {i}: analytic {an}, numeric {fd}"
            );
        }
    }

    #[test]
    fn finite_difference_gradients_every_activation_and_loss() {
        use Activation::*;
        let mut rng = SplitMix64::new(11);
        let x: Vec<f32> = (0..4).map(|_| rng.uniform(1.0)).collect();
        let t_reg: Vec<f32> = (0..3).map(|_| rng.next_f32()).collect();
        let t_cls = [0.0, 1.0, 0.0];
        for hidden in [Sigmoid, Tanh, Relu, Linear] {
            for output in [Sigmoid, Tanh, Relu, Linear, Softmax] {
                let net = NeuralNetwork::builder(&[4, 5, 3])
                    .hidden_activation(hidden)
                    .output_activation(output)
                    .seed(5)
                    .build()
                    .unwrap();
                // Non-zero biases so ReLU units are not all on one side of the kink by chance.
                let mut net = net;
                net.set_layer_biases(0, &[0.1, -0.2, 0.3, 0.05, -0.1])
                    .unwrap();
                net.set_layer_biases(1, &[0.2, 0.1, 0.3]).unwrap();
                check(&net, &x, &t_reg, Loss::MeanSquaredError);
                if matches!(output, Sigmoid | Softmax) {
                    check(&net, &x, &t_cls, Loss::CrossEntropy);
                }
            }
        }
    }

    #[test]
    fn two_halves_backpropagate_exactly_as_the_whole_network() {
        let net = NeuralNetwork::builder(&[4, 6, 5, 3])
            .hidden_activation(Activation::Relu)
            .output_activation(Activation::Softmax)
            .seed(2)
            .build()
            .unwrap();
        let (x, t) = ([0.1, -0.4, 0.7, 0.2], [0.0, 1.0, 0.0]);
        let mut whole = Gradients::zeros_like(&net);
        let mut s = BackpropScratch::new();
        let loss = net
            .backward_accumulate(&x, &t, Loss::CrossEntropy, &mut s, &mut whole)
            .unwrap();
        let (front, back) = (
            net.sub_network(0..1).unwrap(),
            net.sub_network(1..3).unwrap(),
        );
        let hidden = front.forward(&x).unwrap().1;
        let mut gb = Gradients::zeros_like(&back);
        let mut sb = BackpropScratch::new();
        let target = OutputGradient::Target {
            loss: Loss::CrossEntropy,
            target: &t,
        };
        let back_loss = back
            .backward_accumulate_from(&hidden, target, &mut sb, &mut gb)
            .unwrap();
        let mut gf = Gradients::zeros_like(&front);
        let mut sf = BackpropScratch::new();
        let front_loss = front
            .backward_accumulate_from(
                &x,
                OutputGradient::Output(sb.input_gradient()),
                &mut sf,
                &mut gf,
            )
            .unwrap();
        assert_eq!((back_loss, front_loss), (loss, 0.0));
        assert_eq!(gf.layer_gradient_flat(0), whole.layer_gradient_flat(0));
        assert_eq!(gb.layer_gradient_flat(0), whole.layer_gradient_flat(1));
        assert_eq!(gb.layer_gradient_flat(1), whole.layer_gradient_flat(2));
        assert_eq!(sf.input_gradient(), s.input_gradient());
        assert!(matches!(
            net.sub_network(2..4),
            Err(NnError::LayerOutOfRange {
                layer: 4,
                layer_count: 3
            })
        ));
        assert!(matches!(
            back.backward_accumulate_from(
                &hidden,
                OutputGradient::Output(&[f32::NAN; 3]),
                &mut sb,
                &mut gb
            ),
            Err(NnError::NonFinite {
                what: "gradient",
                ..
            })
        ));
    }

    #[test]
    fn layer_backward_matches_network_backward() {
        let net = NeuralNetwork::builder(&[4, 6, 3])
            .hidden_activation(Activation::Tanh)
            .output_activation(Activation::Linear)
            .build()
            .unwrap();
        let x = [0.1, -0.4, 0.7, 0.2];
        let t = [1.0, 0.0, -1.0];
        let (_, g) = net.backward(&x, &t, Loss::MeanSquaredError).unwrap();
        let (acts, y) = net.forward(&x).unwrap();
        let mut d: Vec<f32> = y.iter().zip(&t).map(|(y, t)| y - t).collect();
        let mut g1 = vec![0.0; net.layer_params(1).len()];
        let mut gi1 = vec![0.0; 6];
        net.layer_backward(1, &acts[1], &acts[2], &mut d, &mut g1, &mut gi1)
            .unwrap();
        let mut g0 = vec![0.0; net.layer_params(0).len()];
        let mut gi0 = vec![0.0; 4];
        net.layer_backward(0, &acts[0], &acts[1], &mut gi1, &mut g0, &mut gi0)
            .unwrap();
        assert_eq!(g.layer_gradient_flat(1), &g1[..]);
        for (a, b) in g.layer_gradient_flat(0).iter().zip(&g0) {
            assert!((a - b).abs() < 1e-6);
        }
        assert!(matches!(
            net.layer_backward(0, &acts[0], &acts[1], &mut [0.0; 5], &mut g0, &mut gi0),
            Err(NnError::TargetLength {
                layer: 0,
                expected: 6,
                got: 5
            })
        ));
    }

    #[test]
    fn apply_layer_gradient_is_sgd_and_checks_length() {
        let mut net = NeuralNetwork::builder(&[2, 2])
            .learning_rate(0.5)
            .build()
            .unwrap();
        let before = net.layer_params(0).to_vec();
        net.apply_layer_gradient(0, &[1.0; 6]).unwrap();
        for (a, b) in net.layer_params(0).iter().zip(&before) {
            assert!((a - (b - 0.5)).abs() < 1e-7);
        }
        assert!(matches!(
            net.apply_layer_gradient(0, &[1.0; 5]),
            Err(NnError::GradientLength {
                layer: 0,
                expected: 6,
                got: 5
            })
        ));
    }
}
