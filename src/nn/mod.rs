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
pub use backprop::{BackpropScratch, Gradients, Loss};
pub use error::{NnError, WeightsFileProblem};
pub use hebbian::{HebbianLearningMode, HebbianParams};
pub use mapped::MappedWeights;
pub use network::{
    argmax, uses_sgemm, ForwardScratch, NetworkBuilder, NeuralNetwork, DEFAULT_SEED,
};
pub use optim::{Adam, Optimizer, Sgd};
pub use train::{one_hot, FitConfig};
