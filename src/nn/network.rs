//! The dense network: layers as flat parameter vectors, construction, forward passes,
//! weights as data, and federated averaging.
//!
//! Each layer keeps its parameters in one `Vec<f32>`: the weights row-major
//! `[outputs x inputs]`, then the `outputs` biases. That single layout is what the protocol
//! ships (WeightSync slices, BackwardData gradients), what the weights file stores, and what
//! the optimizers walk, so no message needs a gather or scatter.

use super::activation::Activation;
use super::finite::{add_bias_rows, check_given, check_result, first_non_finite};
use super::hebbian::{HebbianLearningMode, HebbianParams, HebbianState};
use super::kernels;
use super::rng::SplitMix64;
use super::NnError;

/// Seed used when none is given, so that two default networks are identical.
pub const DEFAULT_SEED: u64 = 0x4E4E_5000_5EED;

/// Whether a batched layer product of this shape goes through `matrixmultiply::sgemm`
/// (packed, cache-blocked) rather than the register-blocked [`kernels::matmul_nt`].
///
/// Measured with `benches/nn.rs` (PERF.md): the unpacked kernel wins while the batch is
/// small (below 32 rows it beats sgemm at every shape measured, by up to 8x at 4 rows) and
/// while the weights stay in L2 with enough columns to amortise its horizontal sums
/// (`inputs >= 256`, at most 512 KiB of weights, at most 256 rows); beyond that packing pays
/// and sgemm is up to 1.5x faster.
pub fn uses_sgemm(batch: usize, inputs: usize, outputs: usize) -> bool {
    if batch < 32 {
        return false;
    }
    let weight_bytes = inputs.saturating_mul(outputs).saturating_mul(4);
    !(batch <= 256 && inputs >= 256 && weight_bytes <= 512 * 1024)
}

/// One fully connected layer: `y = f(W x + b)`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layer {
    pub(crate) inputs: usize,
    pub(crate) outputs: usize,
    pub(crate) activation: Activation,
    /// Weights row-major `[outputs x inputs]`, then `outputs` biases.
    pub(crate) params: Vec<f32>,
}

impl Layer {
    pub(crate) fn weight_count(&self) -> usize {
        self.inputs * self.outputs
    }
    pub(crate) fn weights(&self) -> &[f32] {
        &self.params[..self.weight_count()]
    }
    pub(crate) fn biases(&self) -> &[f32] {
        &self.params[self.weight_count()..]
    }
    pub(crate) fn view(&self) -> LayerView<'_> {
        LayerView {
            inputs: self.inputs,
            outputs: self.outputs,
            activation: self.activation,
            weights: self.weights(),
            biases: self.biases(),
        }
    }
}

/// A borrowed layer: from an owned network or straight from a mapped weights file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerView<'a> {
    pub(crate) inputs: usize,
    pub(crate) outputs: usize,
    pub(crate) activation: Activation,
    pub(crate) weights: &'a [f32],
    pub(crate) biases: &'a [f32],
}

impl LayerView<'_> {
    /// One sample: `y = f(W x + b)`; `x.len() == inputs`, `y.len() == outputs`.
    ///
    /// False, with the activation not applied, if `W x + b` is not finite (with a finite
    /// `x` and finite parameters: an overflow).
    pub(crate) fn forward(&self, x: &[f32], y: &mut [f32]) -> bool {
        kernels::matvec(self.weights, x, y);
        if !add_bias_rows(y, self.biases) {
            return false;
        }
        self.activation.apply(y);
        true
    }

    /// Row-major batch: `x` is `[batch x inputs]`, `y` is `[batch x outputs]`. False as
    /// [`Self::forward`].
    pub(crate) fn forward_batch(&self, x: &[f32], y: &mut [f32]) -> bool {
        let batch = y.len() / self.outputs;
        if uses_sgemm(batch, self.inputs, self.outputs) {
            kernels::sgemm_nt(x, self.weights, y, self.inputs, self.outputs);
        } else {
            kernels::matmul_nt(x, self.weights, y, self.inputs, self.outputs);
        }
        if !add_bias_rows(y, self.biases) {
            return false;
        }
        self.activation.apply_rows(y, self.outputs);
        true
    }
}

/// Anything that can lend its layers: [`NeuralNetwork`] and [`super::MappedWeights`].
pub(crate) trait LayerSource {
    fn layer_count(&self) -> usize;
    fn layer_view(&self, l: usize) -> LayerView<'_>;
}

/// Reusable buffers for [`NeuralNetwork::forward_into`]: one output vector per layer.
///
/// Sized on first use and then reused, so the hot path does not allocate.
#[derive(Debug, Clone, Default)]
pub struct ForwardScratch {
    pub(crate) outputs: Vec<Vec<f32>>,
}

impl ForwardScratch {
    /// Empty buffers; they grow on the first forward pass.
    pub fn new() -> Self {
        Self::default()
    }

    /// The output of layer `l` from the last forward pass.
    ///
    /// # Panics
    /// If `l` is not a layer of the last network run through this scratch.
    pub fn layer_output(&self, l: usize) -> &[f32] {
        &self.outputs[l]
    }

    fn fit<S: LayerSource + ?Sized>(&mut self, net: &S, batch: usize) {
        let n = net.layer_count();
        self.outputs.resize_with(n, Vec::new);
        for (l, out) in self.outputs.iter_mut().enumerate() {
            let len = net.layer_view(l).outputs * batch;
            if out.len() != len {
                out.resize(len, 0.0);
            }
        }
    }
}

pub(crate) fn forward_into_impl<'s, S: LayerSource + ?Sized>(
    net: &S,
    input: &[f32],
    scratch: &'s mut ForwardScratch,
) -> Result<&'s [f32], NnError> {
    forward_from_impl(net, 0, input, scratch, Rows::One)
}

pub(crate) fn forward_batch_impl<'s, S: LayerSource + ?Sized>(
    net: &S,
    inputs: &[f32],
    scratch: &'s mut ForwardScratch,
) -> Result<&'s [f32], NnError> {
    forward_from_impl(net, 0, inputs, scratch, Rows::Batch)
}

/// What a forward pass is given: one sample (matrix-vector kernels) or a row-major batch
/// (matrix-matrix kernels).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rows {
    One,
    Batch,
}

/// Runs layers `from..` on `input`, what enters layer `from` (0: the network input).
///
/// Refuses a non-finite input ([`NnError::NonFinite`]) and stops at a layer whose
/// `W x + b` overflows ([`NnError::Overflow`], `"pre-activation"`).
///
/// One check does both, fused into each layer's bias addition: are the sums `W x + b`
/// finite? Parameters are always finite (the module's invariant), so:
/// * A NaN or infinity in `x` makes *every* sum of that layer non-finite: each sum takes
///   the product `w_ij x_j` of every input `j`, and `w · NaN` is NaN, `w · ±inf` is ±inf
///   (NaN for `w = 0`), and a NaN or infinity in a sum of otherwise finite terms stays
///   non-finite. The kernels (matvec, matmul_nt, sgemm) compute every product, skipping
///   none. So the input needs no scan of its own on the way in; only when layer `from`'s
///   check fails is the input searched, to tell a bad input from an overflow.
/// * With a finite input, a non-finite sum is an overflow; and every activation maps
///   finite sums to finite outputs (sigmoid and softmax clamp `exp`'s argument, tanh
///   saturates), so each later layer's input is finite again.
pub(crate) fn forward_from_impl<'s, S: LayerSource + ?Sized>(
    net: &S,
    from: usize,
    input: &[f32],
    scratch: &'s mut ForwardScratch,
    rows: Rows,
) -> Result<&'s [f32], NnError> {
    if from >= net.layer_count() {
        return Err(NnError::LayerOutOfRange {
            layer: from,
            layer_count: net.layer_count(),
        });
    }
    let width = net.layer_view(from).inputs;
    let fits = match rows {
        Rows::One => input.len() == width,
        Rows::Batch => input.len() % width == 0,
    };
    if !fits {
        return Err(NnError::InputLength {
            layer: from,
            expected: width,
            got: input.len(),
        });
    }
    scratch.fit(net, input.len() / width);
    for l in from..net.layer_count() {
        let (done, rest) = scratch.outputs.split_at_mut(l);
        let x = if l == from { input } else { &done[l - 1] };
        let finite = match rows {
            Rows::One => net.layer_view(l).forward(x, &mut rest[0]),
            Rows::Batch => net.layer_view(l).forward_batch(x, &mut rest[0]),
        };
        if !finite {
            if l == from {
                check_given("input", from, input)?;
            }
            return Err(NnError::Overflow {
                what: "pre-activation",
                layer: l,
                index: first_non_finite(&rest[0]).unwrap_or(0),
            });
        }
    }
    Ok(scratch.outputs.last().map(Vec::as_slice).unwrap_or(&[]))
}

/// Builds a [`NeuralNetwork`]: sizes, learning rate, Hebbian mode, activations, seed.
///
/// ```
/// use nnp::nn::{Activation, HebbianLearningMode, NeuralNetwork};
/// let net = NeuralNetwork::builder(&[4, 8, 3])
///     .hidden_activation(Activation::Relu)
///     .output_activation(Activation::Softmax)
///     .learning_rate(0.05)
///     .mode(HebbianLearningMode::Oja)
///     .seed(42)
///     .build()
///     .unwrap();
/// assert_eq!(net.layer_sizes(), vec![4, 8, 3]);
/// ```
#[derive(Debug, Clone)]
pub struct NetworkBuilder {
    sizes: Vec<usize>,
    learning_rate: f32,
    mode: HebbianLearningMode,
    seed: u64,
    hidden: Activation,
    output: Activation,
    per_layer: Vec<(usize, Activation)>,
    hebbian: HebbianParams,
}

impl NetworkBuilder {
    /// Learning rate used by [`NeuralNetwork::hebbian_update`] and
    /// [`NeuralNetwork::apply_layer_gradient`] (default 0.1).
    pub fn learning_rate(mut self, lr: f32) -> Self {
        self.learning_rate = lr;
        self
    }
    /// Hebbian rule (default [`HebbianLearningMode::Oja`]).
    pub fn mode(mut self, mode: HebbianLearningMode) -> Self {
        self.mode = mode;
        self
    }
    /// Seed for weight initialisation and shuffling (default [`DEFAULT_SEED`]).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Activation of every hidden layer (default [`Activation::Sigmoid`]).
    pub fn hidden_activation(mut self, a: Activation) -> Self {
        self.hidden = a;
        self
    }
    /// Activation of the output layer (default [`Activation::Sigmoid`]).
    pub fn output_activation(mut self, a: Activation) -> Self {
        self.output = a;
        self
    }
    /// Activation of layer `l` (0 is the first weight layer), overriding the defaults.
    pub fn layer_activation(mut self, l: usize, a: Activation) -> Self {
        self.per_layer.push((l, a));
        self
    }
    /// Rates of the Hebbian machinery (correlation average, BCM threshold).
    pub fn hebbian_params(mut self, p: HebbianParams) -> Self {
        self.hebbian = p;
        self
    }

    /// The network, with Xavier-uniform weights (He-uniform before ReLU) and zero biases.
    pub fn build(self) -> Result<NeuralNetwork, NnError> {
        if self.sizes.len() < 2 || self.sizes.contains(&0) {
            return Err(NnError::InvalidTopology { sizes: self.sizes });
        }
        let count = self.sizes.len() - 1;
        let mut acts: Vec<Activation> = (0..count)
            .map(|l| {
                if l + 1 == count {
                    self.output
                } else {
                    self.hidden
                }
            })
            .collect();
        for &(l, a) in &self.per_layer {
            if l >= count {
                return Err(NnError::LayerOutOfRange {
                    layer: l,
                    layer_count: count,
                });
            }
            acts[l] = a;
        }
        if let Some(l) = acts[..count - 1]
            .iter()
            .position(|a| *a == Activation::Softmax)
        {
            return Err(NnError::SoftmaxNotOutput { layer: l });
        }
        let layers = self
            .sizes
            .windows(2)
            .zip(&acts)
            .map(|(w, &activation)| Layer {
                inputs: w[0],
                outputs: w[1],
                activation,
                params: vec![0.0; w[0] * w[1] + w[1]],
            })
            .collect::<Vec<_>>();
        let hebbian_state = layers.iter().map(HebbianState::new).collect();
        let mut net = NeuralNetwork {
            layers,
            learning_rate: self.learning_rate,
            mode: self.mode,
            hebbian: self.hebbian,
            hebbian_state,
            rng: SplitMix64::new(self.seed),
        };
        net.initialise();
        Ok(net)
    }
}

/// A dense feed-forward network of `f32` layers.
///
/// Backprop, Hebbian rules, training loops and weights files add methods from their own
/// modules (see the [`crate::nn`] table); this type holds the
/// parameters and runs them forward.
#[derive(Debug, Clone)]
pub struct NeuralNetwork {
    pub(crate) layers: Vec<Layer>,
    pub(crate) learning_rate: f32,
    pub(crate) mode: HebbianLearningMode,
    pub(crate) hebbian: HebbianParams,
    pub(crate) hebbian_state: Vec<HebbianState>,
    pub(crate) rng: SplitMix64,
}

impl LayerSource for NeuralNetwork {
    fn layer_count(&self) -> usize {
        self.layers.len()
    }
    fn layer_view(&self, l: usize) -> LayerView<'_> {
        self.layers[l].view()
    }
}

impl NeuralNetwork {
    /// A builder for a network with these layer sizes (input first, output last).
    pub fn builder(sizes: &[usize]) -> NetworkBuilder {
        NetworkBuilder {
            sizes: sizes.to_vec(),
            learning_rate: 0.1,
            mode: HebbianLearningMode::Oja,
            seed: DEFAULT_SEED,
            hidden: Activation::Sigmoid,
            output: Activation::Sigmoid,
            per_layer: Vec::new(),
            hebbian: HebbianParams::default(),
        }
    }

    /// A network with sigmoid layers, seeded with [`DEFAULT_SEED`].
    ///
    /// ```
    /// use nnp::nn::{HebbianLearningMode, NeuralNetwork};
    /// let net = NeuralNetwork::with_layers_and_mode(&[64, 32, 10], 0.1, HebbianLearningMode::Oja);
    /// let (activations, output) = net.forward(&[0.5; 64]).unwrap();
    /// assert_eq!(activations.len(), 3);
    /// assert_eq!(output.len(), 10);
    /// ```
    ///
    /// # Panics
    /// If `sizes` has fewer than two entries or a zero; use [`Self::builder`] to get an
    /// error instead.
    pub fn with_layers_and_mode(
        sizes: &[usize],
        learning_rate: f32,
        mode: HebbianLearningMode,
    ) -> Self {
        Self::builder(sizes)
            .learning_rate(learning_rate)
            .mode(mode)
            .build()
            .expect("with_layers_and_mode: need >= 2 layer sizes, none zero")
    }

    /// Re-initialises all weights from `seed` (biases to zero, Hebbian state cleared).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = SplitMix64::new(seed);
        self.initialise();
        self
    }

    fn initialise(&mut self) {
        for (layer, state) in self.layers.iter_mut().zip(&mut self.hebbian_state) {
            // He-uniform sqrt(6 / in) before ReLU, Xavier-uniform sqrt(6 / (in + out)) else.
            let fan = if layer.activation.prefers_he_init() {
                layer.inputs
            } else {
                layer.inputs + layer.outputs
            };
            let limit = (6.0 / fan as f32).sqrt();
            let n = layer.weight_count();
            for w in &mut layer.params[..n] {
                *w = self.rng.uniform(limit);
            }
            layer.params[n..].fill(0.0);
            *state = HebbianState::new(layer);
        }
    }

    /// A network of layers `layers` of this one (weight layer indices, e.g. `1..3`), with
    /// their parameters and activations, the same learning rate, Hebbian rule and seed, and
    /// fresh Hebbian state: the part of a network one pipeline stage holds. Its layer 0 is
    /// this network's layer `layers.start`.
    ///
    /// ```
    /// use nnp::nn::NeuralNetwork;
    /// let net = NeuralNetwork::builder(&[64, 32, 16, 10]).seed(7).build().unwrap();
    /// let middle = net.sub_network(1..2).unwrap();
    /// assert_eq!(middle.layer_sizes(), vec![32, 16]);
    /// assert_eq!(middle.layer_params(0), net.layer_params(1));
    /// ```
    ///
    /// # Errors
    /// [`NnError::LayerOutOfRange`] for an empty range or one past the last layer.
    pub fn sub_network(&self, layers: std::ops::Range<usize>) -> Result<NeuralNetwork, NnError> {
        if layers.start >= layers.end || layers.end > self.layers.len() {
            return Err(NnError::LayerOutOfRange {
                layer: layers.end.max(layers.start),
                layer_count: self.layers.len(),
            });
        }
        let kept: Vec<Layer> = self.layers[layers].to_vec();
        Ok(NeuralNetwork {
            hebbian_state: kept.iter().map(HebbianState::new).collect(),
            layers: kept,
            learning_rate: self.learning_rate,
            mode: self.mode,
            hebbian: self.hebbian,
            rng: self.rng.clone(),
        })
    }

    /// Number of weight layers (one less than the number of sizes).
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Sizes from input to output, e.g. `[64, 32, 10]`.
    pub fn layer_sizes(&self) -> Vec<usize> {
        let mut v = vec![self.layers[0].inputs];
        v.extend(self.layers.iter().map(|l| l.outputs));
        v
    }

    /// Width of the network input.
    pub fn input_size(&self) -> usize {
        self.layers[0].inputs
    }

    /// Width of the network output.
    pub fn output_size(&self) -> usize {
        self.layers[self.layers.len() - 1].outputs
    }

    /// `(outputs, inputs)` of layer `l`, i.e. (rows, cols) of its weight matrix.
    ///
    /// # Panics
    /// If `l >= layer_count()`.
    pub fn layer_shape(&self, l: usize) -> (usize, usize) {
        (self.layers[l].outputs, self.layers[l].inputs)
    }

    /// Activation of layer `l`.
    ///
    /// # Panics
    /// If `l >= layer_count()`.
    pub fn layer_activation(&self, l: usize) -> Activation {
        self.layers[l].activation
    }

    /// The learning rate used by Hebbian steps and received gradients.
    pub fn learning_rate(&self) -> f32 {
        self.learning_rate
    }

    /// Changes the learning rate.
    pub fn set_learning_rate(&mut self, lr: f32) {
        self.learning_rate = lr;
    }

    /// The Hebbian rule in use.
    pub fn mode(&self) -> HebbianLearningMode {
        self.mode
    }

    /// Changes the Hebbian rule (the running correlations are kept).
    pub fn set_mode(&mut self, mode: HebbianLearningMode) {
        self.mode = mode;
    }

    pub(crate) fn layer_checked(&self, l: usize) -> Result<&Layer, NnError> {
        self.layers.get(l).ok_or(NnError::LayerOutOfRange {
            layer: l,
            layer_count: self.layers.len(),
        })
    }

    pub(crate) fn layer_checked_mut(&mut self, l: usize) -> Result<&mut Layer, NnError> {
        let layer_count = self.layers.len();
        self.layers.get_mut(l).ok_or(NnError::LayerOutOfRange {
            layer: l,
            layer_count,
        })
    }

    // ---- forward ----

    /// Runs one sample forward.
    ///
    /// Returns every layer's activations (index 0 is the input itself, index `l + 1` the
    /// output of layer `l`) and the network output. Allocates; see [`Self::forward_into`]
    /// for the hot path.
    ///
    /// # Errors
    /// [`NnError::InputLength`] for an input of the wrong width; [`NnError::NonFinite`]
    /// (`"input"`, the layer it feeds, the index of the first NaN or infinity) for a
    /// non-finite input; [`NnError::Overflow`] (`"pre-activation"`) if a layer's `W x + b`
    /// overflows `f32`. So an `Ok` output is always finite. The same holds for every
    /// forward method; for a batch the index is into the flat row-major buffer (row
    /// `index / width`).
    pub fn forward(&self, input: &[f32]) -> Result<(Vec<Vec<f32>>, Vec<f32>), NnError> {
        let mut scratch = ForwardScratch::new();
        forward_into_impl(self, input, &mut scratch)?;
        let mut acts = Vec::with_capacity(self.layers.len() + 1);
        acts.push(input.to_vec());
        acts.extend(scratch.outputs);
        let out = acts.last().cloned().unwrap_or_default();
        Ok((acts, out))
    }

    /// Runs one sample forward into `scratch`, returning the output; allocation-free once
    /// `scratch` has been used with this network. Layer outputs stay readable through
    /// [`ForwardScratch::layer_output`]. Errors as [`Self::forward`].
    pub fn forward_into<'s>(
        &self,
        input: &[f32],
        scratch: &'s mut ForwardScratch,
    ) -> Result<&'s [f32], NnError> {
        forward_into_impl(self, input, scratch)
    }

    /// Runs layers `from..` on `input`, the activations entering weight layer `from`
    /// (layer 0: the network input), into `scratch`; returns the network output. This is a
    /// pipeline stage's step: the previous stage sent what its last layer produced.
    ///
    /// ```
    /// use nnp::nn::{ForwardScratch, HebbianLearningMode, NeuralNetwork};
    /// let net = NeuralNetwork::with_layers_and_mode(&[4, 6, 3], 0.1, HebbianLearningMode::Oja);
    /// let (acts, out) = net.forward(&[0.1, 0.2, 0.3, 0.4]).unwrap();
    /// let mut scratch = ForwardScratch::new();
    /// assert_eq!(net.forward_from_into(1, &acts[1], &mut scratch).unwrap(), &out[..]);
    /// ```
    pub fn forward_from_into<'s>(
        &self,
        from: usize,
        input: &[f32],
        scratch: &'s mut ForwardScratch,
    ) -> Result<&'s [f32], NnError> {
        forward_from_impl(self, from, input, scratch, Rows::One)
    }

    /// Runs a row-major batch (`inputs.len()` a multiple of the input width) forward,
    /// returning the row-major `[batch x outputs]` result. Errors as [`Self::forward`],
    /// with indices into the flat `inputs` (or, for an overflow, the layer's
    /// `[batch x outputs]` buffer).
    pub fn forward_batch<'s>(
        &self,
        inputs: &[f32],
        scratch: &'s mut ForwardScratch,
    ) -> Result<&'s [f32], NnError> {
        forward_batch_impl(self, inputs, scratch)
    }

    /// Runs a row-major batch entering weight layer `from` through layers `from..`,
    /// returning `[batch x outputs]`: a pipeline stage fed a ForwardData batch.
    pub fn forward_batch_from<'s>(
        &self,
        from: usize,
        inputs: &[f32],
        scratch: &'s mut ForwardScratch,
    ) -> Result<&'s [f32], NnError> {
        forward_from_impl(self, from, inputs, scratch, Rows::Batch)
    }

    /// Index of the largest output for one sample.
    pub fn predict_class(
        &self,
        input: &[f32],
        scratch: &mut ForwardScratch,
    ) -> Result<usize, NnError> {
        let out = self.forward_into(input, scratch)?;
        Ok(argmax(out))
    }

    // ---- weights as data ----

    /// Weights of layer `l`, row-major `[outputs x inputs]`.
    ///
    /// # Panics
    /// If `l >= layer_count()`.
    pub fn layer_weights(&self, l: usize) -> &[f32] {
        self.layers[l].weights()
    }

    /// Biases of layer `l`.
    ///
    /// # Panics
    /// If `l >= layer_count()`.
    pub fn layer_biases(&self, l: usize) -> &[f32] {
        self.layers[l].biases()
    }

    /// Flat parameters of layer `l`: weights row-major, then biases
    /// (`outputs * inputs + outputs` values).
    ///
    /// # Panics
    /// If `l >= layer_count()`.
    pub fn layer_params(&self, l: usize) -> &[f32] {
        &self.layers[l].params
    }

    /// Replaces the weights of layer `l`. A NaN or infinity is refused
    /// ([`NnError::NonFinite`], `"parameters"`, index into `weights`), changing nothing.
    pub fn set_layer_weights(&mut self, l: usize, weights: &[f32]) -> Result<(), NnError> {
        let layer = self.layer_checked_mut(l)?;
        let n = layer.weight_count();
        if weights.len() != n {
            return Err(NnError::WeightsLength {
                layer: l,
                expected: n,
                got: weights.len(),
            });
        }
        check_given("parameters", l, weights)?;
        layer.params[..n].copy_from_slice(weights);
        Ok(())
    }

    /// Replaces the biases of layer `l`. A NaN or infinity is refused
    /// ([`NnError::NonFinite`], `"parameters"`, index into `biases`), changing nothing.
    pub fn set_layer_biases(&mut self, l: usize, biases: &[f32]) -> Result<(), NnError> {
        let layer = self.layer_checked_mut(l)?;
        let n = layer.weight_count();
        if biases.len() != layer.outputs {
            return Err(NnError::BiasesLength {
                layer: l,
                expected: layer.outputs,
                got: biases.len(),
            });
        }
        check_given("parameters", l, biases)?;
        layer.params[n..].copy_from_slice(biases);
        Ok(())
    }

    /// Writes `values` into layer `l`'s flat parameters starting at element `offset`
    /// (a WeightSync slice). A NaN or infinity is refused ([`NnError::NonFinite`],
    /// `"parameters"`, index into `values`), changing nothing.
    pub fn write_layer_params(
        &mut self,
        l: usize,
        offset: usize,
        values: &[f32],
    ) -> Result<(), NnError> {
        let layer = self.layer_checked_mut(l)?;
        let params = layer.params.len();
        match offset.checked_add(values.len()) {
            Some(end) if end <= params => {
                check_given("parameters", l, values)?;
                layer.params[offset..end].copy_from_slice(values);
                Ok(())
            }
            _ => Err(NnError::ParamsRange {
                layer: l,
                offset,
                len: values.len(),
                params,
            }),
        }
    }

    /// Checks that `other` has the same layer shapes as `self`.
    pub fn check_same_shape(&self, other: &NeuralNetwork) -> Result<(), NnError> {
        compare_shapes(&self.shapes(), &other.shapes())
    }

    /// `(outputs, inputs)` of every layer.
    pub(crate) fn shapes(&self) -> Vec<(usize, usize)> {
        self.layers.iter().map(|l| (l.outputs, l.inputs)).collect()
    }

    /// Federated averaging: the parameters of `members` weighted by their sample counts (u32,
    /// as WeightSync carries them; summed in 64 bits).
    ///
    /// The result takes everything else (activations, learning rate, mode, fresh Hebbian
    /// state) from the first member. Errors if the list is empty, the total count is zero,
    /// or shapes differ, and with [`NnError::Overflow`] (`"parameters"`) if a weighted sum
    /// is not finite (members' parameters are finite, so only near `f32::MAX`).
    pub fn average(members: &[(&NeuralNetwork, u32)]) -> Result<NeuralNetwork, NnError> {
        let Some(&(first, _)) = members.first() else {
            return Err(NnError::NothingToAverage);
        };
        let total: u64 = members.iter().map(|m| u64::from(m.1)).sum();
        if total == 0 {
            return Err(NnError::NothingToAverage);
        }
        for (net, _) in members {
            first.check_same_shape(net)?;
        }
        let mut out = first.clone();
        for (l, layer) in out.layers.iter_mut().enumerate() {
            layer.params.fill(0.0);
            for (net, count) in members {
                let w = (*count as f64 / total as f64) as f32;
                kernels::axpy(w, &net.layers[l].params, &mut layer.params);
            }
            check_result("parameters", l, &layer.params)?;
        }
        for (state, layer) in out.hebbian_state.iter_mut().zip(&out.layers) {
            *state = HebbianState::new(layer);
        }
        Ok(out)
    }

    /// Replaces this network's parameters with the weighted average of itself (weighted
    /// `own_count`) and `others`. Errors as [`Self::average`], changing nothing.
    pub fn average_in(
        &mut self,
        own_count: u32,
        others: &[(&NeuralNetwork, u32)],
    ) -> Result<(), NnError> {
        let mut all = vec![(&*self, own_count)];
        all.extend_from_slice(others);
        let avg = Self::average(&all)?;
        for (dst, src) in self.layers.iter_mut().zip(avg.layers) {
            dst.params = src.params;
        }
        Ok(())
    }
}

/// The first layer whose `(outputs, inputs)` differ between two shape lists (a missing
/// layer counts as `(0, 0)`), as an error.
pub(crate) fn compare_shapes(
    expected: &[(usize, usize)],
    got: &[(usize, usize)],
) -> Result<(), NnError> {
    for l in 0..expected.len().max(got.len()) {
        let a = expected.get(l).copied().unwrap_or((0, 0));
        let b = got.get(l).copied().unwrap_or((0, 0));
        if a != b {
            return Err(NnError::ShapeMismatch {
                layer: l,
                expected: a,
                got: b,
            });
        }
    }
    Ok(())
}

/// Index of the largest value (the first on ties; 0 for an empty slice).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NeuralNetwork {
        NeuralNetwork::builder(&[5, 7, 3])
            .hidden_activation(Activation::Tanh)
            .output_activation(Activation::Softmax)
            .seed(3)
            .build()
            .unwrap()
    }

    #[test]
    fn seeded_construction_is_reproducible() {
        let a = net();
        let b = net();
        assert_eq!(a.layers, b.layers);
        let c = net().with_seed(4);
        assert_ne!(a.layers, c.layers);
        let limit = (6.0f32 / 12.0).sqrt();
        assert!(a.layer_weights(0).iter().all(|w| w.abs() <= limit));
        assert!(a.layer_biases(0).iter().all(|b| *b == 0.0));
    }

    #[test]
    fn bad_topologies_are_errors() {
        assert!(matches!(
            NeuralNetwork::builder(&[3]).build(),
            Err(NnError::InvalidTopology { .. })
        ));
        assert!(matches!(
            NeuralNetwork::builder(&[3, 0, 2]).build(),
            Err(NnError::InvalidTopology { .. })
        ));
        assert!(matches!(
            NeuralNetwork::builder(&[3, 4, 2])
                .hidden_activation(Activation::Softmax)
                .build(),
            Err(NnError::SoftmaxNotOutput { layer: 0 })
        ));
    }

    #[test]
    fn forward_forms_agree() {
        let n = net();
        let x: Vec<f32> = (0..5).map(|i| i as f32 * 0.3 - 0.5).collect();
        let (acts, out) = n.forward(&x).unwrap();
        assert_eq!(acts[0], x);
        assert_eq!(acts.len(), 3);
        assert!((out.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let mut s = ForwardScratch::new();
        assert_eq!(n.forward_into(&x, &mut s).unwrap(), &out[..]);
        assert_eq!(s.layer_output(0), &acts[1][..]);
        // Batches through both matmul paths agree with single samples.
        for batch in [1, 3, 40] {
            assert_eq!(uses_sgemm(batch, 5, 3), batch == 40);
            let xs: Vec<f32> = (0..batch * 5)
                .map(|i| ((i * 7) % 11) as f32 * 0.1 - 0.5)
                .collect();
            let mut bs = ForwardScratch::new();
            let ys = n.forward_batch(&xs, &mut bs).unwrap().to_vec();
            for r in 0..batch {
                let single = n.forward(&xs[r * 5..(r + 1) * 5]).unwrap().1;
                for (a, b) in single.iter().zip(&ys[r * 3..(r + 1) * 3]) {
                    assert!((a - b).abs() < 1e-5);
                }
            }
        }
        assert!(matches!(
            n.forward(&[1.0; 4]),
            Err(NnError::InputLength {
                layer: 0,
                expected: 5,
                got: 4
            })
        ));
        // From a middle layer: what layer 0 produced goes on to the same output, one sample
        // or a batch of them.
        let mut m = ForwardScratch::new();
        assert_eq!(n.forward_from_into(1, &acts[1], &mut m).unwrap(), &out[..]);
        let twice: Vec<f32> = acts[1].iter().chain(&acts[1]).copied().collect();
        let rows = n.forward_batch_from(1, &twice, &mut m).unwrap().to_vec();
        for row in rows.chunks(3) {
            for (a, b) in row.iter().zip(&out) {
                assert!((a - b).abs() < 1e-6);
            }
        }
        let width = acts[1].len();
        assert!(matches!(
            n.forward_from_into(1, &x, &mut m),
            Err(NnError::InputLength { layer: 1, expected, got: 5 }) if expected == width
        ));
        assert!(matches!(
            n.forward_batch_from(2, &x, &mut m),
            Err(NnError::LayerOutOfRange {
                layer: 2,
                layer_count: 2
            })
        ));
    }

    #[test]
    fn weights_as_data() {
        let mut n = net();
        let w: Vec<f32> = (0..35).map(|i| i as f32).collect();
        n.set_layer_weights(0, &w).unwrap();
        n.set_layer_biases(0, &[1.0; 7]).unwrap();
        assert_eq!(n.layer_weights(0), &w[..]);
        assert_eq!(&n.layer_params(0)[35..], &[1.0; 7]);
        n.write_layer_params(0, 33, &[9.0, 9.0, 9.0]).unwrap();
        assert_eq!(&n.layer_params(0)[33..36], &[9.0; 3]);
        assert!(matches!(
            n.write_layer_params(0, 40, &[0.0; 3]),
            Err(NnError::ParamsRange {
                layer: 0,
                offset: 40,
                len: 3,
                params: 42
            })
        ));
        assert!(matches!(
            n.set_layer_weights(0, &w[..3]),
            Err(NnError::WeightsLength { .. })
        ));
        assert!(matches!(
            n.set_layer_biases(2, &[]),
            Err(NnError::LayerOutOfRange {
                layer: 2,
                layer_count: 2
            })
        ));
    }

    #[test]
    fn federated_average_weights_by_samples() {
        let a = net();
        let b = net().with_seed(9);
        let avg = NeuralNetwork::average(&[(&a, 1), (&b, 3)]).unwrap();
        for l in 0..2 {
            for i in 0..a.layer_params(l).len() {
                let want = 0.25 * a.layer_params(l)[i] + 0.75 * b.layer_params(l)[i];
                assert!((avg.layer_params(l)[i] - want).abs() < 1e-6);
            }
        }
        let other = NeuralNetwork::builder(&[5, 6, 3]).build().unwrap();
        assert!(matches!(
            NeuralNetwork::average(&[(&a, 1), (&other, 1)]),
            Err(NnError::ShapeMismatch {
                layer: 0,
                expected: (7, 5),
                got: (6, 5)
            })
        ));
        assert!(matches!(
            NeuralNetwork::average(&[]),
            Err(NnError::NothingToAverage)
        ));
        assert!(matches!(
            NeuralNetwork::average(&[(&a, 0)]),
            Err(NnError::NothingToAverage)
        ));
        let mut c = a.clone();
        c.average_in(1, &[(&b, 1)]).unwrap();
        assert!(
            (c.layer_params(1)[0] - 0.5 * (a.layer_params(1)[0] + b.layer_params(1)[0])).abs()
                < 1e-6
        );
    }
}
