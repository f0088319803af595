//! A dense feed-forward network on f32: forward passes, backpropagation and Hebbian rules.
//!
//! No wire and no I/O here. Weights are stored per layer row-major (`outputs x inputs`),
//! followed by the biases: exactly the parameter layout WeightSync and BackwardData carry,
//! so received data is applied without reshaping.

mod gemm;
pub mod kernels;
mod network;

pub use network::{Activation, HebbianLearningMode, NeuralNetwork, NnError, Optimizer};
