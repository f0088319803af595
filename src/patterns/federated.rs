//! Federated learning: a [`Coordinator`] and any number of [`Worker`]s, each worker's data
//! never leaving it.
//!
//! Every round the coordinator sends the current global weights to each connected worker
//! (WeightSync `Replace`, every layer, in frames of at most
//! [`crate::node::WEIGHT_SYNC_CHUNK`] values, so a model of any size crosses), each worker
//! trains some local epochs on its own data (optionally with FedProx's proximal term,
//! [`WorkerConfig::proximal_mu`]) and sends its weights back with its sample count in the same
//! frames, and the coordinator combines them with an [`Aggregator`]: FedAvg, or a
//! coordinate-wise median or trimmed mean that one worker sending garbage cannot wreck.
//!
//! The coordinator collects each worker's weights apart (not through the node's running
//! average) so that robust aggregators can see every worker's value of every parameter. A
//! round has a deadline: a worker whose weights are not all in by then is left out of that
//! round and never waited for beyond it; a worker that disconnects is dropped at once, and one
//! that connects (or reconnects) is sent the current weights at the next round.
//!
//! ```no_run
//! use std::time::Duration;
//! use nnp::nn::NeuralNetwork;
//! use nnp::patterns::federated::{Coordinator, CoordinatorConfig, Worker, WorkerConfig};
//!
//! let network = || NeuralNetwork::builder(&[64, 32, 10]).seed(1).build();
//! let config = CoordinatorConfig { min_workers: 1, ..CoordinatorConfig::default() };
//! let mut coordinator = Coordinator::new("127.0.0.1", 0, network()?, config)?;
//! let addr = coordinator.local_addr();
//! std::thread::spawn(move || -> Result<(), nnp::patterns::federated::FederatedError> {
//!     let (inputs, labels) = (vec![0.0; 64 * 4], vec![0, 1, 2, 3]); // the worker's own data
//!     let mut worker = Worker::connect("worker-1", addr, network()?, inputs, &labels,
//!                                      WorkerConfig::default())?;
//!     worker.run()?; // until the coordinator leaves
//!     Ok(())
//! });
//! for _ in 0..10 {
//!     let report = coordinator.run_round()?;
//!     println!("round {}: {} workers", report.round, report.contributors.len());
//! }
//! coordinator.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod aggregate;
mod coordinator;
mod partition;
mod proximal;
mod worker;

use std::time::Duration;

pub use aggregate::Aggregator;
pub use coordinator::{Contribution, Coordinator, CoordinatorConfig, RoundReport};
pub use partition::{partition, Partition};
pub use worker::{Poison, Worker, WorkerConfig, WorkerRound};

use crate::nn::NnError;
use crate::node::NodeError;

/// Why a federated operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum FederatedError {
    /// The node (transport or protocol) failed.
    Node(NodeError),
    /// Local training or the worker's data failed.
    Nn(NnError),
    /// Fewer workers than a round needs were connected within the join timeout.
    NotEnoughWorkers {
        /// Workers connected.
        connected: usize,
        /// Workers the round needs.
        needed: usize,
        /// How long the round waited for them.
        waited: Duration,
    },
    /// A worker could not reach its coordinator.
    NoCoordinator {
        /// The coordinator's address.
        addr: String,
        /// How long the worker tried.
        waited: Duration,
        /// The last attempt's error.
        last: NodeError,
    },
}

impl std::fmt::Display for FederatedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FederatedError::Node(e) => write!(f, "{e}"),
            FederatedError::Nn(e) => write!(f, "local training: {e}"),
            FederatedError::NotEnoughWorkers {
                connected,
                needed,
                waited,
            } => write!(
                f,
                "{connected} workers connected within {waited:?}, the round needs {needed}"
            ),
            FederatedError::NoCoordinator { addr, waited, last } => {
                write!(f, "no coordinator at {addr} within {waited:?}: {last}")
            }
        }
    }
}

impl std::error::Error for FederatedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FederatedError::Node(e) | FederatedError::NoCoordinator { last: e, .. } => Some(e),
            FederatedError::Nn(e) => Some(e),
            FederatedError::NotEnoughWorkers { .. } => None,
        }
    }
}

impl From<NodeError> for FederatedError {
    fn from(e: NodeError) -> Self {
        FederatedError::Node(e)
    }
}

impl From<NnError> for FederatedError {
    fn from(e: NnError) -> Self {
        FederatedError::Nn(e)
    }
}
