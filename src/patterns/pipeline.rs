//! Pipelines: the layers of one network on different nodes, trained together.
//!
//! Each [`Stage`] holds a range of the network's weight layers (64→32 on A, 32→16 on B,
//! 16→10 on C) and listens; a [`Driver`] holds the data, connects to every stage, and routes
//! a step's traffic between them, as Petals' client does: no stage talks to another, so a
//! stage that dies is one connection the driver sees close, and one that comes back needs only
//! the driver's address book.
//!
//! A step trains on one mini-batch, cut into micro-batches that flow through the stages on a
//! [`Schedule`] (GPipe: every forward, then every backward; 1F1B: each stage alternates once
//! the pipeline is full). Per micro-batch, on the wire (layer ids are the whole network's):
//!
//! | driver → stage (layers `f..e` of `L`) | the stage | answers |
//! |---|---|---|
//! | ForwardData, layer `f`: input rows | runs its layers, keeps the input | ForwardData, layer `e`: output rows |
//! | BackwardData, layer `e`: `∂L/∂output` rows, or for the last stage (`e = L`) the targets | recomputes its layers (GPipe's re-materialisation), adds its parameter gradients; the last stage's loss (softmax cross-entropy) starts the pass | BackwardData, layer `f`: `∂L/∂input` rows |
//! | BackwardData, layer `e`, no values: the step's micro-batches are done | applies the mean of its gradients (SGD) | WeightSync `Replace` of its layers |
//! | WeightSync `Replace` of its layers | takes these weights, drops any step in progress | WeightSync of its layers |
//!
//! Each stage computes, sample by sample, exactly what [`NeuralNetwork::train_epoch`] computes
//! for its layers with [`crate::nn::Sgd`], in the same order, so a synchronous pipeline
//! gives the weights of the whole network trained in one process with the same seed, to the
//! last bit on one machine (the tests allow `1e-5`).
//!
//! The driver keeps the weights every stage committed at its last step (the WeightSync
//! answers). A stage that disconnects, or stays silent past
//! [`DriverConfig::stage_timeout`], ends the step with [`PipelineError::StageLost`] or
//! [`PipelineError::StageSilent`], naming the stage and the step; [`Driver::resume`] then
//! reconnects it, gives every stage the weights of the last completed step, and the step can
//! be run again. Every stage then starts SGD's momentum afresh; nothing else is lost.
//!
//! ```no_run
//! use nnp::nn::{Activation, NeuralNetwork};
//! use nnp::patterns::pipeline::{Driver, DriverConfig, Stage, StageConfig};
//!
//! let network = NeuralNetwork::builder(&[64, 32, 16, 10])
//!     .hidden_activation(Activation::Relu)
//!     .output_activation(Activation::Softmax)
//!     .seed(1)
//!     .build()?;
//! let mut addrs = Vec::new();
//! for layers in [0..1, 1..2, 2..3] {
//!     let mut stage = Stage::bind("127.0.0.1:0", &network, layers, StageConfig::default())?;
//!     addrs.push(stage.local_addr());
//!     std::thread::spawn(move || stage.run());
//! }
//! let mut driver = Driver::connect(&addrs, DriverConfig::default())?;
//! let (inputs, targets) = (vec![0.5; 32 * 64], vec![0.1; 32 * 10]);
//! let report = driver.step(&inputs, &targets)?;
//! println!("step {}: loss {:.3}, bubble {:.2}", report.step, report.loss, report.bubble);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`NeuralNetwork::train_epoch`]: crate::nn::NeuralNetwork::train_epoch

mod driver;
mod schedule;
mod stage;
mod sync;

use std::net::SocketAddr;
use std::time::Duration;

pub use driver::{Driver, DriverConfig, StepReport};
pub use schedule::Schedule;
pub use stage::{Stage, StageConfig};

use crate::nn::NnError;
use crate::node::NodeError;

/// Why a pipeline operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PipelineError {
    /// The node (transport or protocol) failed outside any one stage.
    Node(NodeError),
    /// The stage's network refused its layers or data.
    Nn(NnError),
    /// A stage could not be reached.
    NoStage {
        /// The stage (0 is the first).
        stage: usize,
        /// Its address.
        addr: SocketAddr,
        /// How long the driver tried.
        waited: Duration,
        /// The last attempt's error.
        last: NodeError,
    },
    /// A stage's connection closed, or a send to it failed, during a step.
    StageLost {
        /// The stage (0 is the first).
        stage: usize,
        /// Its address.
        addr: SocketAddr,
        /// The step that was running (the first is 1).
        step: u64,
        /// Why, as the transport saw it.
        cause: String,
    },
    /// A stage owed answers and sent nothing for [`DriverConfig::stage_timeout`].
    StageSilent {
        /// The stage (0 is the first).
        stage: usize,
        /// Its address.
        addr: SocketAddr,
        /// The step that was running (the first is 1).
        step: u64,
        /// How long the driver waited.
        waited: Duration,
    },
    /// A stage refused a message of the step.
    Refused {
        /// The stage (0 is the first).
        stage: usize,
        /// Its address.
        addr: SocketAddr,
        /// The step that was running.
        step: u64,
        /// The stage's reason.
        reason: String,
    },
    /// The stages do not chain into one network (or a batch does not fit it).
    Mismatch {
        /// The stage that does not fit the one before it (or the batch, for 0).
        stage: usize,
        /// What does not fit.
        reason: String,
    },
}

impl std::fmt::Display for PipelineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PipelineError::Node(e) => write!(f, "{e}"),
            PipelineError::Nn(e) => write!(f, "stage network: {e}"),
            PipelineError::NoStage {
                stage,
                addr,
                waited,
                last,
            } => write!(
                f,
                "stage {stage} ({addr}) unreachable for {waited:?}: {last}"
            ),
            PipelineError::StageLost {
                stage,
                addr,
                step,
                cause,
            } => write!(f, "stage {stage} ({addr}) lost at step {step}: {cause}"),
            PipelineError::StageSilent {
                stage,
                addr,
                step,
                waited,
            } => write!(
                f,
                "stage {stage} ({addr}) silent for {waited:?} at step {step}"
            ),
            PipelineError::Refused {
                stage,
                addr,
                step,
                reason,
            } => write!(
                f,
                "stage {stage} ({addr}) refused a message at step {step}: {reason}"
            ),
            PipelineError::Mismatch { stage, reason } => write!(f, "stage {stage}: {reason}"),
        }
    }
}

impl std::error::Error for PipelineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PipelineError::Node(e) | PipelineError::NoStage { last: e, .. } => Some(e),
            PipelineError::Nn(e) => Some(e),
            _ => None,
        }
    }
}

impl PipelineError {
    /// The stage a failure is about, if it is about one: what [`Driver::resume`] waits for.
    pub fn stage(&self) -> Option<usize> {
        match self {
            PipelineError::NoStage { stage, .. }
            | PipelineError::StageLost { stage, .. }
            | PipelineError::StageSilent { stage, .. }
            | PipelineError::Refused { stage, .. } => Some(*stage),
            _ => None,
        }
    }
}

impl From<NodeError> for PipelineError {
    fn from(e: NodeError) -> Self {
        PipelineError::Node(e)
    }
}

impl From<NnError> for PipelineError {
    fn from(e: NnError) -> Self {
        PipelineError::Nn(e)
    }
}
