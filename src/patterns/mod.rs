//! Learning patterns built on the node API: several processes, each a
//! [`crate::node::DistributedNetwork`], learning one model together over NNP.
//!
//! * [`federated`]: a coordinator and workers; the workers' data never leaves them, only
//!   weights cross the wire (WeightSync), and the coordinator aggregates them each round.
//! * [`hebbian`]: peers in a full mesh share the Hebbian correlations of their data
//!   (HebbianData), so that a Hebbian layer learns the structure of all of it.
//! * [`ensemble`]: one input to N member nodes, their outputs combined (mean of probabilities
//!   or majority vote); a member that misses the deadline is left out of that answer.
//! * [`pipeline`]: the layers of one network on different nodes; activations go forward and
//!   gradients back in micro-batches, on a GPipe or 1F1B schedule.

pub mod ensemble;
pub mod federated;
pub mod hebbian;
pub mod pipeline;
