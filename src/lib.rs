//! # NNP: the Neural Network Protocol
//!
//! A low-level binary protocol over TCP, and the engine that speaks it, for real-time exchange
//! of neural-network data: forward activations, backprop gradients, Hebbian correlations and
//! weight syncs.
//!
//! The crate is built in layers, each unaware of the one above it:
//!
//! ```text
//!   nn/       dense network, SIMD kernels, Hebbian rules, weights files   (no wire, no I/O
//!             but weights files; unsafe only in nn::kernels and nn::mapped)
//!   wire/     frame header, payload views, streaming codec                (no I/O, no clock)
//! ```
#![deny(unsafe_code)]

pub mod nn;
pub mod wire;
