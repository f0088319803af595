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
//!   session/  handshake, sequence numbers, heartbeats, timeouts           (no I/O, no clock)
//!   net/      mio event loops, buffer pool, rings to the consumer         (the only I/O)
//!   node/     DistributedNetwork: the user API joining net and nn
//! ```
//!
//! The `nnp` command line is a separate binary (`src/bin/nnp/`), built with the default `cli`
//! feature; it uses only this crate's public API. Embedders that want the library alone, without
//! the command line's dependencies, depend on it with `default-features = false`.
// Unsafe code lives only in `nn::kernels` (runtime-dispatched AVX2/FMA) and `nn::mapped`
// (the memmap2 view), which allow it locally; CI runs their tests under miri.
#![deny(unsafe_code)]

pub mod net;
pub mod nn;
pub mod node;
pub mod session;
pub mod wire;

/// The README's examples, compiled as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
