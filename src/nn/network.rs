//! The network: layers, forward pass, backpropagation with SGD and momentum, Hebbian rules.

// Row and column index loops mirror the update equations; iterator chains would hide them.
#![allow(clippy::needless_range_loop)]

use super::kernels::{dot, matmul_bias, matvec_bias};

/// A layer's activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// 1 / (1 + e^-x)
    Sigmoid,
    /// tanh(x)
    Tanh,
    /// max(0, x)
    Relu,
    /// x
    Linear,
    /// e^x_i / sum e^x_j (output layer; trained with cross-entropy)
    Softmax,
}

/// Which Hebbian rule [`NeuralNetwork::hebbian_update`] applies, with `y = W x` (the layer's
/// linear response, rectified for BCM) and learning rate `eta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HebbianLearningMode {
    /// Hebb's rule with weight decay: `dW = eta (y x^T - lambda W)`, `lambda = 0.1`; the decay
    /// keeps the weights bounded.
    Classic,
    /// Oja's rule: `dW_ij = eta y_i (x_j - y_i W_ij)`; a row converges to the unit-norm first
    /// principal direction of its input.
    Oja,
    /// Sanger's generalized Hebbian algorithm: `dW_ij = eta y_i (x_j - sum_{k<=i} y_k W_kj)`;
    /// row `i` converges to the `i`-th principal direction.
    Sanger,
    /// Bienenstock-Cooper-Munro: `dW_ij = eta y_i (y_i - theta_i) x_j` with `y = max(0, W x)`
    /// and the sliding threshold `theta_i <- theta_i + tau (y_i^2 - theta_i)`, `tau = 0.1`,
    /// which tracks `E[y_i^2]` and makes the neuron selective.
    Bcm,
    /// Winner-take-all: the unit `k` nearest the input (largest `W_k . x - |W_k|^2 / 2`)
    /// learns, `dW_k = eta (x - W_k)`; the rows become cluster centres. The losers move at
    /// `eta / 100` (leaky learning), so that no unit is left dead far from the data.
    Competitive,
    /// Anti-Hebbian: `dW = -eta y x^T`; it removes the output's response along the input's
    /// directions of variance (decorrelating, and in the limit silencing, the output).
    AntiHebbian,
}

/// How much slower the losers of a competitive step learn than the winner.
const COMPETITIVE_LEAK: f32 = 0.01;

/// BCM's threshold rate: faster than the weights move, or the rule runs away.
const BCM_TAU: f32 = 0.1;

/// One weight layer: `rows` outputs, `cols` inputs.
#[derive(Debug, Clone)]
struct Layer {
    rows: usize,
    cols: usize,
    /// `rows * cols` weights row-major, then `rows` biases.
    params: Vec<f32>,
    /// SGD's velocity, or Adam's first moment.
    velocity: Vec<f32>,
    /// Adam's second moment.
    second_moment: Vec<f32>,
    activation: Activation,
    /// Running average of `y x^T` (`rows x cols`), what HebbianData carries.
    correlations: Vec<f32>,
    /// BCM's sliding thresholds, one per output.
    thresholds: Vec<f32>,
}

impl Layer {
    /// One step of `mode` for input `x` (see [`HebbianLearningMode`] for the equations).
    fn hebbian_step(&mut self, x: &[f32], eta: f32, mode: HebbianLearningMode) {
        let (rows, cols) = (self.rows, self.cols);
        let mut y: Vec<f32> = (0..rows)
            .map(|i| dot(&self.weights()[i * cols..(i + 1) * cols], x))
            .collect();
        if mode == HebbianLearningMode::Bcm {
            y.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        for i in 0..rows {
            for j in 0..cols {
                let c = &mut self.correlations[i * cols + j];
                *c = 0.99 * *c + 0.01 * y[i] * x[j];
            }
        }
        let w = &mut self.params[..rows * cols];
        match mode {
            HebbianLearningMode::Classic => {
                for i in 0..rows {
                    for j in 0..cols {
                        let wij = &mut w[i * cols + j];
                        *wij += eta * (y[i] * x[j] - 0.1 * *wij);
                    }
                }
            }
            HebbianLearningMode::Oja => {
                for i in 0..rows {
                    for j in 0..cols {
                        let wij = &mut w[i * cols + j];
                        *wij += eta * y[i] * (x[j] - y[i] * *wij);
                    }
                }
            }
            HebbianLearningMode::Sanger => {
                // residual = x - sum_{k<=i} y_k W_k, built up row by row from the old rows.
                let mut residual = x.to_vec();
                for i in 0..rows {
                    let row = &mut w[i * cols..(i + 1) * cols];
                    for (r, wk) in residual.iter_mut().zip(row.iter()) {
                        *r -= y[i] * wk;
                    }
                    for (wij, r) in row.iter_mut().zip(&residual) {
                        *wij += eta * y[i] * r;
                    }
                }
            }
            HebbianLearningMode::Bcm => {
                for i in 0..rows {
                    let theta = &mut self.thresholds[i];
                    *theta += BCM_TAU * (y[i] * y[i] - *theta);
                    let gain = eta * y[i] * (y[i] - *theta);
                    for (wij, xj) in w[i * cols..(i + 1) * cols].iter_mut().zip(x) {
                        *wij += gain * xj;
                    }
                }
            }
            HebbianLearningMode::Competitive => {
                // The nearest unit wins: the largest `W_k . x - |W_k|^2 / 2`, which is the
                // dot product made fair between rows of different lengths.
                let winner = (0..rows)
                    .map(|k| {
                        let row = &w[k * cols..(k + 1) * cols];
                        y[k] - 0.5 * dot(row, row)
                    })
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map_or(0, |(k, _)| k);
                for k in 0..rows {
                    let rate = if k == winner {
                        eta
                    } else {
                        eta * COMPETITIVE_LEAK
                    };
                    for (wkj, xj) in w[k * cols..(k + 1) * cols].iter_mut().zip(x) {
                        *wkj += rate * (xj - *wkj);
                    }
                }
            }
            HebbianLearningMode::AntiHebbian => {
                for i in 0..rows {
                    for j in 0..cols {
                        w[i * cols + j] -= eta * y[i] * x[j];
                    }
                }
            }
        }
    }

    fn weights(&self) -> &[f32] {
        &self.params[..self.rows * self.cols]
    }

    fn biases(&self) -> &[f32] {
        &self.params[self.rows * self.cols..]
    }

    /// `out = W x + b`, then the activation.
    fn forward(&self, x: &[f32], out: &mut [f32]) {
        matvec_bias(self.weights(), self.cols, x, self.biases(), out);
        activate(self.activation, out);
    }
}

fn activate(activation: Activation, v: &mut [f32]) {
    match activation {
        Activation::Sigmoid => v.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
        Activation::Tanh => v.iter_mut().for_each(|x| *x = x.tanh()),
        Activation::Relu => v.iter_mut().for_each(|x| *x = x.max(0.0)),
        Activation::Linear => {}
        Activation::Softmax => {
            let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            v.iter_mut().for_each(|x| {
                *x = (*x - max).exp();
                sum += *x;
            });
            v.iter_mut().for_each(|x| *x /= sum);
        }
    }
}

/// The derivative of the activation at output `y`, for the hidden layers.
fn derivative(activation: Activation, y: f32) -> f32 {
    match activation {
        Activation::Sigmoid => y * (1.0 - y),
        Activation::Tanh => 1.0 - y * y,
        Activation::Relu => {
            if y > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::Linear | Activation::Softmax => 1.0,
    }
}

/// Why networks could not be combined.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NnError {
    /// Nothing to average.
    NoNetworks,
    /// A network's layer sizes differ from the first one's.
    ShapeMismatch {
        /// Index of the offending network.
        index: usize,
        /// The first network's sizes.
        expected: Vec<usize>,
        /// Its sizes.
        found: Vec<usize>,
    },
    /// The sample counts add up to zero.
    NoSamples,
}

impl std::fmt::Display for NnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NnError::NoNetworks => write!(f, "no networks to average"),
            NnError::ShapeMismatch {
                index,
                expected,
                found,
            } => write!(
                f,
                "network {index} has layers {found:?}, the first has {expected:?}: only equal shapes average"
            ),
            NnError::NoSamples => write!(f, "the sample counts add up to zero"),
        }
    }
}

impl std::error::Error for NnError {}

/// How gradients change the weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// `v <- momentum v - lr g; w <- w + v`.
    Sgd {
        /// Momentum, 0 for plain SGD.
        momentum: f32,
    },
    /// Adam with bias correction: `m <- b1 m + (1-b1) g`, `v <- b2 v + (1-b2) g^2`,
    /// `w <- w - lr m^ / (sqrt(v^) + eps)`.
    Adam {
        /// First-moment decay (0.9).
        beta1: f32,
        /// Second-moment decay (0.999).
        beta2: f32,
        /// Denominator guard (1e-8).
        epsilon: f32,
    },
}

impl Optimizer {
    /// Adam with the usual constants.
    pub const ADAM: Optimizer = Optimizer::Adam {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
    };
}

/// A dense feed-forward network.
#[derive(Debug, Clone)]
pub struct NeuralNetwork {
    sizes: Vec<usize>,
    layers: Vec<Layer>,
    learning_rate: f32,
    optimizer: Optimizer,
    /// Optimizer steps taken (Adam's bias correction).
    step: u32,
    mode: HebbianLearningMode,
}

/// splitmix64: a small, seeded, reproducible source for weight initialisation.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl NeuralNetwork {
    /// A network with the given neuron counts (input first), learning rate and Hebbian rule:
    /// tanh hidden layers, a softmax output, seed 0.
    pub fn with_layers_and_mode(
        sizes: &[usize],
        learning_rate: f32,
        mode: HebbianLearningMode,
    ) -> Self {
        Self::with_seed(sizes, learning_rate, mode, 0)
    }

    /// [`NeuralNetwork::with_layers_and_mode`] with an explicit initialisation seed.
    pub fn with_seed(
        sizes: &[usize],
        learning_rate: f32,
        mode: HebbianLearningMode,
        seed: u64,
    ) -> Self {
        assert!(
            sizes.len() >= 2 && sizes.iter().all(|&s| s > 0),
            "at least two non-empty layers"
        );
        let mut state = seed;
        let count = sizes.len() - 1;
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(l, w)| {
                let (cols, rows) = (w[0], w[1]);
                let scale = (6.0 / (rows + cols) as f32).sqrt();
                let mut params: Vec<f32> = (0..rows * cols)
                    .map(|_| {
                        ((splitmix(&mut state) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
                            * scale
                    })
                    .collect();
                params.resize(rows * cols + rows, 0.0);
                Layer {
                    rows,
                    cols,
                    velocity: vec![0.0; params.len()],
                    second_moment: vec![0.0; params.len()],
                    params,
                    activation: if l + 1 == count {
                        Activation::Softmax
                    } else {
                        Activation::Tanh
                    },
                    correlations: vec![0.0; rows * cols],
                    thresholds: vec![0.0; rows],
                }
            })
            .collect();
        NeuralNetwork {
            sizes: sizes.to_vec(),
            layers,
            learning_rate,
            optimizer: Optimizer::Sgd { momentum: 0.9 },
            step: 0,
            mode,
        }
    }

    /// Neuron counts, input first.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// Weight layers.
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// `(rows, cols)` of a weight layer.
    pub fn layer_shape(&self, layer: usize) -> (usize, usize) {
        (self.layers[layer].rows, self.layers[layer].cols)
    }

    /// The learning rate.
    pub fn learning_rate(&self) -> f32 {
        self.learning_rate
    }

    /// Every layer's output and the network's output.
    pub fn forward(&self, input: &[f32]) -> (Vec<Vec<f32>>, Vec<f32>) {
        let mut activations = Vec::with_capacity(self.layers.len());
        let mut x = input.to_vec();
        for layer in &self.layers {
            let mut out = vec![0.0; layer.rows];
            layer.forward(&x, &mut out);
            activations.push(out.clone());
            x = out;
        }
        (activations, x)
    }

    /// The output for an input that enters at weight layer `layer`.
    pub fn forward_from(&self, layer: usize, input: &[f32]) -> Vec<f32> {
        let mut x = input.to_vec();
        for l in &self.layers[layer..] {
            let mut out = vec![0.0; l.rows];
            l.forward(&x, &mut out);
            x = out;
        }
        x
    }

    /// The outputs for a batch of inputs (`batch x inputs`, row-major), as `batch x outputs`:
    /// what a ForwardData batch from the wire feeds.
    pub fn forward_batch(&self, inputs: &[f32]) -> Vec<f32> {
        let batch = inputs.len() / self.sizes[0];
        let mut x = inputs[..batch * self.sizes[0]].to_vec();
        for layer in &self.layers {
            let mut out = vec![0.0; batch * layer.rows];
            matmul_bias(
                layer.weights(),
                layer.rows,
                layer.cols,
                &x,
                layer.biases(),
                &mut out,
            );
            for row in out.chunks_mut(layer.rows) {
                activate(layer.activation, row);
            }
            x = out;
        }
        x
    }

    /// The predicted class of an input.
    pub fn predict(&self, input: &[f32]) -> usize {
        let (_, out) = self.forward(input);
        out.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i)
    }

    /// Fraction of rows (`inputs` row-major) whose predicted class is the label.
    pub fn accuracy(&self, inputs: &[f32], labels: &[usize]) -> f32 {
        let n = self.sizes[0];
        let right = labels
            .iter()
            .enumerate()
            .filter(|(i, &l)| self.predict(&inputs[i * n..(i + 1) * n]) == l)
            .count();
        right as f32 / labels.len().max(1) as f32
    }

    /// Softmax cross-entropy gradients averaged over a batch, per layer in the parameter
    /// layout (weights row-major, then biases), and the mean loss. The output layer should be
    /// softmax (then `dL/dz = y - onehot(label)`).
    pub fn gradients(&self, inputs: &[f32], labels: &[usize]) -> (Vec<Vec<f32>>, f32) {
        let outputs = self.sizes[self.sizes.len() - 1];
        self.batch_gradients(inputs, labels.len(), |s, y| {
            let label = labels[s].min(outputs - 1);
            let mut delta = y.to_vec();
            delta[label] -= 1.0;
            (delta, -y[label].max(1e-12).ln())
        })
    }

    /// Mean squared error gradients (`L = 1/2 |y - t|^2` per sample) for row-major `targets`
    /// (`batch x outputs`), through whatever the output activation is.
    pub fn gradients_mse(&self, inputs: &[f32], targets: &[f32]) -> (Vec<Vec<f32>>, f32) {
        let outputs = self.sizes[self.sizes.len() - 1];
        let activation = self.layers[self.layers.len() - 1].activation;
        self.batch_gradients(inputs, targets.len() / outputs, |s, y| {
            let t = &targets[s * outputs..(s + 1) * outputs];
            let g: Vec<f32> = y.iter().zip(t).map(|(a, b)| a - b).collect();
            let loss = 0.5 * g.iter().map(|v| v * v).sum::<f32>();
            let delta = if activation == Activation::Softmax {
                // The softmax Jacobian: dz_i = y_i (g_i - sum_j g_j y_j).
                let gy: f32 = g.iter().zip(y).map(|(a, b)| a * b).sum();
                y.iter().zip(&g).map(|(yi, gi)| yi * (gi - gy)).collect()
            } else {
                g.iter()
                    .zip(y)
                    .map(|(gi, yi)| gi * derivative(activation, *yi))
                    .collect()
            };
            (delta, loss)
        })
    }

    /// Backpropagates `output_delta(sample, output) -> (dL/dz of the output layer, loss)` over
    /// a batch; returns the mean gradients and the mean loss.
    fn batch_gradients(
        &self,
        inputs: &[f32],
        batch: usize,
        output_delta: impl Fn(usize, &[f32]) -> (Vec<f32>, f32),
    ) -> (Vec<Vec<f32>>, f32) {
        let n = self.sizes[0];
        let mut grads: Vec<Vec<f32>> = self
            .layers
            .iter()
            .map(|l| vec![0.0; l.params.len()])
            .collect();
        let mut loss = 0.0;
        for s in 0..batch {
            let x = &inputs[s * n..(s + 1) * n];
            let (acts, out) = self.forward(x);
            let (mut delta, sample_loss) = output_delta(s, &out);
            loss += sample_loss;
            for l in (0..self.layers.len()).rev() {
                let layer = &self.layers[l];
                let input = if l == 0 { x } else { &acts[l - 1][..] };
                let g = &mut grads[l];
                for i in 0..layer.rows {
                    let row = &mut g[i * layer.cols..(i + 1) * layer.cols];
                    row.iter_mut()
                        .zip(input)
                        .for_each(|(gw, xi)| *gw += delta[i] * xi);
                    g[layer.rows * layer.cols + i] += delta[i];
                }
                if l > 0 {
                    let prev = &self.layers[l - 1];
                    let mut next = vec![0.0; layer.cols];
                    for i in 0..layer.rows {
                        let row = &layer.weights()[i * layer.cols..(i + 1) * layer.cols];
                        next.iter_mut()
                            .zip(row)
                            .for_each(|(n, w)| *n += w * delta[i]);
                    }
                    for (j, d) in next.iter_mut().enumerate() {
                        *d *= derivative(prev.activation, acts[l - 1][j]);
                    }
                    delta = next;
                }
            }
        }
        let scale = 1.0 / batch.max(1) as f32;
        grads.iter_mut().flatten().for_each(|g| *g *= scale);
        (grads, loss * scale)
    }

    /// Federated averaging: the parameters of `networks`, each weighted by its sample count.
    /// The result takes everything else (activations, optimizer, rule) from the first.
    pub fn average(networks: &[(&NeuralNetwork, u32)]) -> Result<NeuralNetwork, NnError> {
        let (first, _) = networks.first().ok_or(NnError::NoNetworks)?;
        for (index, (net, _)) in networks.iter().enumerate() {
            if net.sizes != first.sizes {
                return Err(NnError::ShapeMismatch {
                    index,
                    expected: first.sizes.clone(),
                    found: net.sizes.clone(),
                });
            }
        }
        let total: f64 = networks.iter().map(|(_, n)| f64::from(*n)).sum();
        if total == 0.0 {
            return Err(NnError::NoSamples);
        }
        let mut result = (*first).clone();
        for (l, layer) in result.layers.iter_mut().enumerate() {
            for (k, p) in layer.params.iter_mut().enumerate() {
                *p = networks
                    .iter()
                    .map(|(net, n)| f64::from(net.layers[l].params[k]) * f64::from(*n))
                    .sum::<f64>() as f32
                    / total as f32;
            }
        }
        Ok(result)
    }

    /// Sets a layer's activation (softmax belongs on the output layer only).
    pub fn set_activation(&mut self, layer: usize, activation: Activation) {
        self.layers[layer].activation = activation;
    }

    /// A layer's activation.
    pub fn activation(&self, layer: usize) -> Activation {
        self.layers[layer].activation
    }

    /// Chooses how gradients are applied.
    pub fn set_optimizer(&mut self, optimizer: Optimizer) {
        self.optimizer = optimizer;
        self.step = 0;
        for l in &mut self.layers {
            l.velocity.iter_mut().for_each(|v| *v = 0.0);
            l.second_moment.iter_mut().for_each(|v| *v = 0.0);
        }
    }

    /// One optimizer step on a layer from a gradient in the parameter layout (SGD with
    /// momentum, or Adam). Returns false (and changes nothing) if the length is wrong.
    pub fn apply_layer_gradient(&mut self, layer: usize, gradient: &[f32]) -> bool {
        let lr = self.learning_rate;
        let optimizer = self.optimizer;
        let step = self.step + 1;
        let Some(l) = self.layers.get_mut(layer) else {
            return false;
        };
        if gradient.len() != l.params.len() {
            return false;
        }
        match optimizer {
            Optimizer::Sgd { momentum } => {
                for ((p, v), g) in l.params.iter_mut().zip(&mut l.velocity).zip(gradient) {
                    *v = momentum * *v - lr * g;
                    *p += *v;
                }
            }
            Optimizer::Adam {
                beta1,
                beta2,
                epsilon,
            } => {
                let c1 = 1.0 - beta1.powi(step as i32);
                let c2 = 1.0 - beta2.powi(step as i32);
                for (((p, m), v), g) in l
                    .params
                    .iter_mut()
                    .zip(&mut l.velocity)
                    .zip(&mut l.second_moment)
                    .zip(gradient)
                {
                    *m = beta1 * *m + (1.0 - beta1) * g;
                    *v = beta2 * *v + (1.0 - beta2) * g * g;
                    *p -= lr * (*m / c1) / ((*v / c2).sqrt() + epsilon);
                }
            }
        }
        if layer + 1 == self.layers.len() {
            self.step = step;
        }
        true
    }

    /// One mini-batch step; returns the batch's loss.
    pub fn train_batch(&mut self, inputs: &[f32], labels: &[usize]) -> f32 {
        let (grads, loss) = self.gradients(inputs, labels);
        for (l, g) in grads.iter().enumerate() {
            self.apply_layer_gradient(l, g);
        }
        loss
    }

    /// One epoch of mini-batches over the rows in `order`; returns the mean loss.
    pub fn train_epoch(
        &mut self,
        inputs: &[f32],
        labels: &[usize],
        batch: usize,
        order: &[usize],
    ) -> f32 {
        let n = self.sizes[0];
        let mut total = 0.0;
        let mut xs = Vec::with_capacity(batch * n);
        let mut ys = Vec::with_capacity(batch);
        for chunk in order.chunks(batch.max(1)) {
            xs.clear();
            ys.clear();
            for &i in chunk {
                xs.extend_from_slice(&inputs[i * n..(i + 1) * n]);
                ys.push(labels[i]);
            }
            total += self.train_batch(&xs, &ys) * chunk.len() as f32;
        }
        total / order.len().max(1) as f32
    }

    /// A layer's parameters: weights row-major, then biases.
    pub fn params(&self, layer: usize) -> &[f32] {
        &self.layers[layer].params
    }

    /// Overwrites parameters `offset..` of a layer; false if they do not fit.
    pub fn write_params(&mut self, layer: usize, offset: usize, values: &[f32]) -> bool {
        match self
            .layers
            .get_mut(layer)
            .and_then(|l| l.params.get_mut(offset..offset + values.len()))
        {
            Some(window) => {
                window.copy_from_slice(values);
                true
            }
            None => false,
        }
    }

    /// A layer's running correlations `E[y x^T]` (`rows x cols`), what HebbianData carries.
    pub fn correlations(&self, layer: usize) -> &[f32] {
        &self.layers[layer].correlations
    }

    /// One Hebbian step on every layer for one input (each layer's linear response to the
    /// previous layer's output); also updates the running correlations.
    pub fn hebbian_update(&mut self, input: &[f32]) {
        let mut x = input.to_vec();
        let (eta, mode) = (self.learning_rate, self.mode);
        for layer in &mut self.layers {
            layer.hebbian_step(&x, eta, mode);
            let mut out = vec![0.0; layer.rows];
            layer.forward(&x, &mut out);
            x = out;
        }
    }

    /// A layer's BCM thresholds (`theta`, one per output; zero for other rules).
    pub fn thresholds(&self, layer: usize) -> &[f32] {
        &self.layers[layer].thresholds
    }

    /// Blends received correlations `C` (an estimate of `E[y x^T]`) into a layer's running
    /// matrix and applies the rule's expected weight change from them: Classic
    /// `dW = eta (C - 0.1 W)`, AntiHebbian `dW = -eta C`, and for the normalising rules (Oja,
    /// Sanger, BCM, Competitive, whose exact updates need more than `C`) Oja's expectation
    /// `dW_i = eta (C_i - (W_i . C_i) W_i)`. False if the length is wrong.
    pub fn integrate_correlations(
        &mut self,
        layer: usize,
        correlations: &[f32],
        learning_rate: f32,
    ) -> bool {
        let mode = self.mode;
        let Some(l) = self.layers.get_mut(layer) else {
            return false;
        };
        if correlations.len() != l.rows * l.cols {
            return false;
        }
        for (c, r) in l.correlations.iter_mut().zip(correlations) {
            *c = 0.5 * (*c + r);
        }
        for i in 0..l.rows {
            let row = i * l.cols..(i + 1) * l.cols;
            let projection = match mode {
                HebbianLearningMode::Classic => 0.0,
                _ => dot(&l.params[row.clone()], &correlations[row.clone()]),
            };
            for j in row {
                let w = l.params[j];
                l.params[j] += learning_rate
                    * match mode {
                        HebbianLearningMode::Classic => correlations[j] - 0.1 * w,
                        HebbianLearningMode::AntiHebbian => -correlations[j],
                        _ => correlations[j] - projection * w,
                    };
            }
        }
        true
    }
}
