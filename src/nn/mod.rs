//! The dense network: layers, SIMD kernels, backprop, Hebbian rules, weights files.
//!
//! No wire format and no I/O besides weights files live here: the protocol layers above
//! carry what this module exposes *as data* — activations, flat per-layer gradients
//! (weights row-major `[outputs x inputs]` then biases), Hebbian correlation matrices,
//! parameter slices — and hand received data back through the `apply_*`/`integrate_*`/
//! `write_*` methods.
//!
//! | module | its one job |
//! | --- | --- |
//! | `kernels` | dot, axpy, matvec, matmul, activations: `wide::f32x8` plus runtime AVX2/FMA |
//! | `network` | [`NeuralNetwork`]: construction, forward passes, weights as data, averaging |
//! | `backprop` | [`Loss`], [`Gradients`], per-sample and per-layer backward steps |
//! | `optim` | [`Sgd`] with momentum and [`Adam`] |
//! | `train` | mini-batch epochs over row-major data sets |
//! | `hebbian` | the six [`HebbianLearningMode`]s and correlation exchange |
//! | `weights_file`, `mapped` | the binary weights file and [`MappedWeights`] |
//!
//! Element type is `f32` everywhere. A network is reproducible from its seed.
//!
//! # Non-finite values
//! **Non-finite values are refused at every entry; training stops with
//! [`NnError::Overflow`] before a parameter becomes non-finite.** So a network's parameters
//! are always finite, and a forward pass that returns `Ok` returns finite values.
//!
//! * Everything that takes data refuses a NaN or ±infinity with [`NnError::NonFinite`],
//!   naming what it was (`"input"`, `"target"`, `"gradient"`, `"output"`,
//!   `"correlations"`, `"learning rate"`, `"parameters"`), the layer, and the index of the
//!   first bad value in the slice given (for a batch or a data set, the index into the
//!   flat row-major buffer: row `index / width`). Nothing is changed when it does. That is
//!   the forward passes ([`NeuralNetwork::forward`], `forward_into`, `forward_from_into`,
//!   `forward_batch`, `forward_batch_from`, `predict_class`, `accuracy`, and
//!   [`MappedWeights`]'s), backprop and training (inputs and targets: `backward`,
//!   `backward_accumulate`, `batch_gradients`, `train_epoch`, `fit`), received gradients
//!   ([`NeuralNetwork::apply_layer_gradient`], [`NeuralNetwork::layer_backward`],
//!   [`Gradients::set_layer_gradient`], [`Optimizer::step`]), Hebbian learning
//!   ([`NeuralNetwork::hebbian_update`], [`NeuralNetwork::integrate_correlations`]),
//!   parameter writes (`set_layer_weights`, `set_layer_biases`, `write_layer_params`), and
//!   weights files ([`WeightsFileProblem::NonFinite`]).
//! * A computation on finite values whose result would not be finite returns
//!   [`NnError::Overflow`] naming the layer and the index. A training step, a received
//!   gradient, a Hebbian step or an average that would make a parameter (or an optimizer's
//!   or the Hebbian state) non-finite is computed and checked *before* it is written, so
//!   the network is left as it was before that step; a forward pass whose `W x + b`
//!   overflows stops there (`"pre-activation"`).
//!
//! The checks are branch-free loops the compiler vectorises (a NaN or infinity has all
//! its exponent bits set), fused into passes that run anyway where that pays. A forward
//! pass adds no pass over the data: each layer's check of `W x + b` is fused into its
//! bias addition, and it also catches a bad input, which makes every sum of the first
//! layer non-finite (see `network::forward_from_impl`); the input is searched only once
//! that check has failed. Measured with `benches/nn.rs` and paired runs, the forward pass
//! is as fast as before within the noise (about ±3%); a training epoch costs about 4% more,
//! a Hebbian step 5-10% more on wide layers and up to 40% on tiny ones.
//!
//! # Weights file
//! Little-endian; magic `NNPW`, version 1, layer count, reserved; a 16-byte record per
//! layer (inputs, outputs, activation code, reserved); then each layer's weights and biases
//! as f32 arrays, each starting at a multiple of 64 bytes. Full table in
//! [`weights_file`] and docs/WEIGHTS.md.
//!
//! ```
//! use nnp::nn::{Activation, Adam, FitConfig, Loss, NeuralNetwork, one_hot};
//! let mut net = NeuralNetwork::builder(&[2, 8, 2])
//!     .hidden_activation(Activation::Tanh)
//!     .output_activation(Activation::Softmax)
//!     .seed(1)
//!     .build()?;
//! let x = [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
//! let labels = [0, 1, 1, 0];
//! let cfg = FitConfig { epochs: 300, batch_size: 4, loss: Loss::CrossEntropy, shuffle: true };
//! net.fit(&x, &one_hot(&labels, 2)?, &cfg, &mut Adam::new(0.05))?;
//! assert_eq!(net.accuracy(&x, &labels)?, 1.0);
//! # Ok::<(), nnp::nn::NnError>(())
//! ```

mod activation;
mod backprop;
mod error;
mod finite;
mod hebbian;
// Not part of the API: public only so that the nn bench can time the kernels against sgemm
// and against their portable build.
#[doc(hidden)]
pub mod kernels;
mod mapped;
mod network;
mod optim;
mod rng;
mod train;
pub mod weights_file;

pub use activation::Activation;
pub use backprop::{BackpropScratch, Gradients, Loss, OutputGradient};
pub use error::{NnError, WeightsFileProblem};
pub use hebbian::{HebbianLearningMode, HebbianParams};
pub use mapped::MappedWeights;
pub use network::{
    argmax, uses_sgemm, ForwardScratch, NetworkBuilder, NeuralNetwork, DEFAULT_SEED,
};
pub use optim::{Adam, Optimizer, Sgd};
pub use train::{one_hot, FitConfig};
