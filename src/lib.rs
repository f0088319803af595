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
//!   auth/     keys, key files, what peers sign to authenticate            (no I/O but key files)
//!   session/  handshake, sequence numbers, heartbeats, timeouts           (no I/O, no clock)
//!   net/      mio event loops, buffer pool, rings to the consumer         (the only I/O)
//!   node/     DistributedNetwork: the user API joining net and nn
//!   patterns/ learning across nodes: federated rounds                 (on the node API)
//! ```
//!
//! # Quick start
//!
//! A node hosts a network and listens; another node connects and sends it activations, which
//! the first runs through its network:
//!
//! ```no_run
//! use nnp::nn::{HebbianLearningMode, NeuralNetwork};
//! use nnp::node::{DistributedNetwork, HandleOutcome, NodeEvent};
//!
//! let layers = [4, 8, 2];
//! let network = NeuralNetwork::with_layers_and_mode(&layers, 0.1, HebbianLearningMode::Classic);
//! let (server, inbox) = DistributedNetwork::new("server", "127.0.0.1", 0, network)?;
//! let addr = server.start_server()?;
//!
//! let network = NeuralNetwork::with_layers_and_mode(&layers, 0.1, HebbianLearningMode::Classic);
//! let (client, _client_inbox) = DistributedNetwork::new("client", "127.0.0.1", 0, network)?;
//! let peer = client.connect_to("127.0.0.1", addr.port())?;
//! client.send_forward_data(peer, 0, &[0.1, 0.2, 0.3, 0.4])?;
//!
//! for event in inbox {
//!     // Peers arriving and leaving are events too; only messages need handling.
//!     if let NodeEvent::Message(message) = event {
//!         if let HandleOutcome::Output(output) = server.handle_message(&message)? {
//!             println!("output: {output:?}");
//!             break;
//!         }
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The engine alone ([`net::Engine`]) is a transport for [`wire::Message`]s; the repository's
//! README shows it, and docs/TRANSPORT.md explains its settings. The wire format is specified
//! byte by byte, with test vectors, in docs/PROTOCOL.md in the repository; performance figures
//! are in PERF.md.
//!
//! The `nnp` command line is a separate binary (`src/bin/nnp/`), built with the default `cli`
//! feature; it uses only this crate's public API. Embedders that want the library alone, without
//! the command line's dependencies, depend on it with `default-features = false`.
// Unsafe code lives only in `nn::kernels` (runtime-dispatched AVX2/FMA) and `nn::mapped`
// (the memmap2 view), which allow it locally; CI runs their tests under miri.
#![deny(unsafe_code)]

pub mod auth;
pub mod net;
pub mod nn;
pub mod node;
pub mod patterns;
pub mod session;
pub mod wire;

/// The README's examples, compiled as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
