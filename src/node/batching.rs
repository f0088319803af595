//! Dynamic batching: the ForwardData requests waiting in a node's receive rings, from any
//! number of peers, are answered by one batched forward pass.
//!
//! Answering one request at a time costs a node more in per-message work (a lock, buffers,
//! a matrix-vector product that reads every weight once per sample) than in the network's
//! maths; the batched kernels read each weight once for many rows. So
//! [`DistributedNetwork::serve`] takes the first event, then every ForwardData already
//! waiting behind it, up to [`BatchConfig::max_batch`], runs each layer's requests through
//! the network together, and answers each request in the order it came. As in inference
//! servers' dynamic batching, the batch may also wait a bounded time for more requests
//! ([`BatchConfig::max_wait`]), but only once requests are arriving together: a lone request
//! (nothing waiting behind it) is answered at once, with no added wait.
//!
//! Order: gathering stops at the first event that is not a ForwardData (a learning message,
//! a peer arriving or leaving). The batch is answered first, then that event is handled by
//! the next call, so everything is applied in the order it arrived and a weight update never
//! overtakes a request sent before it.
//!
//! A request that cannot join a batch (a layer the network does not have, a length that is
//! not a whole number of rows, an answer too large for a frame) runs alone, the way
//! [`DistributedNetwork::handle_message`] runs it, and is refused with the same reason. If a
//! batched pass fails (a NaN or infinity in some request, an overflow), each of its requests
//! runs again alone, so the bad one is refused with the index into its own data and the
//! others are answered.

use std::time::{Duration, Instant};

use super::{DistributedNetwork, Model, NetworkMessage, NodeError, NodeEvent, NodeReceiver};
use super::{HandleOutcome, PeerId};
use crate::wire::{Message, MsgType, ProtocolError};

/// How a serving node gathers ForwardData requests into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// The most requests answered together (each may carry several rows). Default 16: the
    /// batched kernels run a 784-128-10 network as fast per sample at 8 rows as at 64
    /// (PERF.md, `cargo bench --bench serving`), and a smaller batch sends its answers
    /// sooner, so peers' next requests arrive while it computes the following batch. 0 is
    /// taken as 1.
    pub max_batch: usize,
    /// How long a batch may wait for more requests once they are arriving together (a second
    /// request was already waiting behind the first), counted from the first. Default zero:
    /// take what is waiting and answer it. Raise it (tens of microseconds) only when many
    /// peers each send a request now and then and the compute per request dominates, trading
    /// that much latency for larger batches; a lone request is always answered at once.
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch: 16,
            max_wait: Duration::ZERO,
        }
    }
}

/// The state [`DistributedNetwork::serve`] keeps between calls: its settings, an event that
/// ended the last batch (handled first by the next call), and reusable buffers.
#[derive(Debug, Default)]
pub struct Batcher {
    config: BatchConfig,
    held: Option<NodeEvent>,
    requests: Vec<NetworkMessage>,
    inputs: Vec<f32>,
}

impl Batcher {
    /// A batcher with these settings.
    pub fn new(config: BatchConfig) -> Self {
        Batcher {
            config,
            ..Batcher::default()
        }
    }

    /// Its settings.
    pub fn config(&self) -> BatchConfig {
        self.config
    }

    /// Changes its settings from the next call on (a server that stops after a number of
    /// messages lowers `max_batch` to what is left).
    pub fn set_config(&mut self, config: BatchConfig) {
        self.config = config;
    }
}

/// What one call of [`DistributedNetwork::serve`] did.
#[derive(Debug)]
#[non_exhaustive]
pub enum Served {
    /// ForwardData requests were answered (or refused), each peer's in the order they came.
    Answered(ForwardReport),
    /// A data message other than ForwardData was applied with
    /// [`DistributedNetwork::handle_message`] (a refusal has been sent to the peer).
    Applied {
        /// The message.
        message: NetworkMessage,
        /// What it did, or why it was refused.
        outcome: Result<HandleOutcome, NodeError>,
    },
    /// A peer arrived or left, or refused something this node sent; never a message.
    Event(NodeEvent),
}

/// What became of a batch of ForwardData requests.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ForwardReport {
    /// Requests taken: answered, refused, or with an answer that could not be sent.
    pub requests: usize,
    /// Forward passes run: one per layer asked for (more when a batch would exceed the frame
    /// cap, or a pass failed and its requests ran alone).
    pub passes: usize,
    /// Answers sent.
    pub answered: usize,
    /// Requests the network refused; each sender has been told why.
    pub refused: Vec<ForwardFailure>,
    /// Answers that could not be sent: the peer left, or does not read its answers and was
    /// disconnected as a slow consumer (see [`DistributedNetwork::reply`]).
    pub unsent: Vec<ForwardFailure>,
}

/// A ForwardData request that was refused or could not be answered.
#[derive(Debug)]
#[non_exhaustive]
pub struct ForwardFailure {
    /// Who sent it.
    pub peer: PeerId,
    /// Its sequence number on that peer's connection.
    pub sequence: u64,
    /// Why.
    pub error: NodeError,
}

/// Where a request's answer is: rows of a batched pass's output, or its own output.
enum Computed {
    InPass {
        pass: usize,
        start: usize,
        len: usize,
    },
    Alone(Vec<f32>),
}

/// Requests of one layer run through the network together.
struct Pass {
    layer: usize,
    /// Indices into the batch's requests, with each one's row count.
    members: Vec<(usize, usize)>,
    /// Rows times the widest layer they pass through, over all members.
    values: usize,
}

impl<M: Model> DistributedNetwork<M> {
    /// Takes the next events from `receiver` and serves them: ForwardData requests are
    /// answered in batches, everything else is handled in the order it came. Waits at most
    /// `timeout` for the first event; `None` if none came (or the node has shut down and
    /// every event was taken).
    ///
    /// A ForwardData starts a batch: the requests already waiting behind it join, up to
    /// [`BatchConfig::max_batch`] (and, once two or more came together, those that arrive
    /// within [`BatchConfig::max_wait`] of the first). Each layer's requests go through the
    /// network in one batched pass; each answer goes to its peer as
    /// [`DistributedNetwork::reply`] sends it (never waiting; a slow consumer is
    /// disconnected), in the order the requests came. A request the network cannot take is
    /// refused to its sender, as by [`DistributedNetwork::handle_message`], without holding
    /// up the others. A lone request takes the single-sample path and gets exactly the
    /// answer `handle_message` gives; in a batch, the kernels sum in another order, so each
    /// value may differ from the lone answer's in the last bits (by at most
    /// `1e-5 * (1 + |value|)`, tested).
    ///
    /// Any other data message is applied with [`DistributedNetwork::handle_message`]
    /// ([`Served::Applied`]); peers arriving and leaving come back as [`Served::Event`].
    /// Gathering stops at such an event, which the next call handles first, so every
    /// peer's messages take effect in the order they were sent.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use nnp::nn::{HebbianLearningMode, NeuralNetwork};
    /// use nnp::node::{BatchConfig, Batcher, DistributedNetwork, Served};
    ///
    /// let network =
    ///     NeuralNetwork::with_layers_and_mode(&[784, 128, 10], 0.1, HebbianLearningMode::Oja);
    /// let (node, mut receiver) = DistributedNetwork::new("server", "127.0.0.1", 7878, network)?;
    /// node.start_server()?;
    /// let mut batcher = Batcher::new(BatchConfig::default());
    /// loop {
    ///     match node.serve(&mut receiver, &mut batcher, Duration::from_millis(100)) {
    ///         Some(Served::Answered(report)) => {
    ///             for refused in &report.refused {
    ///                 eprintln!("refused {}: {}", refused.peer, refused.error);
    ///             }
    ///         }
    ///         Some(other) => println!("{other:?}"),
    ///         None => {} // nothing within 100 ms
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn serve(
        &self,
        receiver: &mut NodeReceiver,
        batcher: &mut Batcher,
        timeout: Duration,
    ) -> Option<Served> {
        let first = match batcher.held.take() {
            Some(event) => event,
            None => receiver.recv_timeout(timeout)?,
        };
        let first = match first {
            NodeEvent::Message(m) if m.msg_type() == MsgType::ForwardData => m,
            NodeEvent::Message(message) => {
                let outcome = self.handle_message(&message);
                return Some(Served::Applied { message, outcome });
            }
            other => return Some(Served::Event(other)),
        };
        batcher.requests.clear();
        batcher.requests.push(first);
        let config = batcher.config;
        let started = Instant::now();
        let mut deadline = None;
        while batcher.requests.len() < config.max_batch.max(1) {
            // Requests are arriving together once a second one was waiting: from then on
            // the batch may wait for more, up to `max_wait` after the first.
            if deadline.is_none() && batcher.requests.len() > 1 {
                deadline = Some(started + config.max_wait);
            }
            let next = match deadline {
                None => receiver.try_recv(),
                Some(d) => receiver.recv_timeout(d.saturating_duration_since(Instant::now())),
            };
            match next {
                Some(NodeEvent::Message(m)) if m.msg_type() == MsgType::ForwardData => {
                    batcher.requests.push(m)
                }
                Some(other) => {
                    batcher.held = Some(other);
                    break;
                }
                None => break,
            }
        }
        let report = self.answer_batch(&batcher.requests, &mut batcher.inputs);
        batcher.requests.clear();
        Some(Served::Answered(report))
    }

    /// Computes and sends the answers to `requests` (all ForwardData), in their order.
    fn answer_batch(&self, requests: &[NetworkMessage], inputs: &mut Vec<f32>) -> ForwardReport {
        let sizes = self.network().layer_sizes();
        let output_layer = sizes.len().saturating_sub(1) as u16;
        let output_width = sizes.last().copied().unwrap_or(0);
        let cap = self.handle.config().session.max_payload as usize / 4;
        let views: Vec<Message<'_>> = requests.iter().map(NetworkMessage::message).collect();
        let mut passes: Vec<Pass> = Vec::new();
        let mut results: Vec<Option<Result<Computed, NodeError>>> =
            requests.iter().map(|_| None).collect();
        for (i, view) in views.iter().enumerate() {
            let Message::ForwardData { layer_id, data } = view else {
                continue;
            };
            let layer = *layer_id as usize;
            let Some((rows, values)) = batch_rows(&sizes, layer, data.len()) else {
                continue; // runs alone, and is refused there
            };
            if values > cap {
                continue;
            }
            let joins = passes
                .iter()
                .rposition(|p| p.layer == layer)
                .filter(|&p| passes[p].values + values <= cap);
            match joins {
                Some(p) => {
                    passes[p].members.push((i, rows));
                    passes[p].values += values;
                }
                None => passes.push(Pass {
                    layer,
                    members: vec![(i, rows)],
                    values,
                }),
            }
        }

        let mut report = ForwardReport {
            requests: requests.len(),
            ..ForwardReport::default()
        };
        let mut outputs: Vec<Vec<f32>> = Vec::with_capacity(passes.len());
        for pass in passes.iter().filter(|p| p.members.len() > 1) {
            inputs.clear();
            for &(i, _) in &pass.members {
                if let Message::ForwardData { data, .. } = &views[i] {
                    inputs.extend_from_slice(data);
                }
            }
            let rows: usize = pass.members.iter().map(|&(_, r)| r).sum();
            report.passes += 1;
            // The lock is held for the forward pass alone.
            let out = self.network().forward_from(pass.layer, inputs);
            match out {
                Ok(out) if out.len() == rows * output_width => {
                    let index = outputs.len();
                    let mut start = 0;
                    for &(i, r) in &pass.members {
                        let len = r * output_width;
                        results[i] = Some(Ok(Computed::InPass {
                            pass: index,
                            start,
                            len,
                        }));
                        start += len;
                    }
                    outputs.push(out);
                }
                // One bad request fails the pass: its requests run alone below.
                _ => {}
            }
        }
        for (i, view) in views.iter().enumerate() {
            if results[i].is_some() {
                continue;
            }
            report.passes += 1;
            let computed = match view {
                Message::ForwardData { layer_id, data } => {
                    self.forward(&mut self.network(), *layer_id as usize, data)
                }
                other => Err(ProtocolError::UnexpectedMessage {
                    msg_type: other.msg_type(),
                    state: "answering ForwardData",
                }
                .into()),
            };
            results[i] = Some(computed.map(Computed::Alone));
        }

        for (message, result) in requests.iter().zip(results) {
            let failure = |error| ForwardFailure {
                peer: message.peer(),
                sequence: message.sequence(),
                error,
            };
            // Every request has its result by now: the loop above ran the rest alone.
            let Some(result) = result else { continue };
            let output = match result {
                Ok(Computed::InPass { pass, start, len }) => &outputs[pass][start..start + len],
                Ok(Computed::Alone(ref output)) => &output[..],
                Err(error) => {
                    self.refuse(message, &error);
                    report.refused.push(failure(error));
                    continue;
                }
            };
            match self.answer(message.peer(), output_layer, output) {
                Ok(()) => report.answered += 1,
                Err(error) => report.unsent.push(failure(error)),
            }
        }
        log::debug!(
            "{} answered {} of {} ForwardData requests in {} passes",
            self.name,
            report.answered,
            report.requests,
            report.passes
        );
        report
    }
}

/// The rows a ForwardData of `len` values entering weight layer `layer` holds, and those
/// rows times the widest layer they pass through (input included: what a pass holds per
/// request); `None` if it is not a whole, non-zero number of rows of a layer the network has.
fn batch_rows(sizes: &[usize], layer: usize, len: usize) -> Option<(usize, usize)> {
    let width = *sizes.get(layer).filter(|_| layer + 1 < sizes.len())?;
    if width == 0 || len == 0 || len % width != 0 {
        return None;
    }
    let rows = len / width;
    let widest = sizes[layer..].iter().copied().max().unwrap_or(0);
    Some((rows, rows.saturating_mul(widest)))
}
