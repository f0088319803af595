//! `DistributedNetwork`: a neural network that exchanges its data with peers over NNP.
//!
//! This is the API of the original design, joining the transport engine ([`crate::net`]) and
//! a [`Model`] (by default the crate's dense network). Sending is plain method calls from any
//! thread; receiving is a [`NodeReceiver`] that yields [`NodeEvent`]s: peers arriving and
//! leaving, and [`NetworkMessage`]s, received frames whose f32 data is still in the pooled
//! receive buffer. [`DistributedNetwork::handle_message`] then does the learning work a
//! message asks for, reading the data in place.
//!
//! A node that answers ForwardData for many peers runs [`DistributedNetwork::serve`] in its
//! receive loop: the requests waiting together are answered by one batched forward pass
//! (the `batching` module), and every other event comes back in order.

mod averaging;
mod batching;
mod message;
mod model;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use crate::wire::SyncMode;
pub use batching::{BatchConfig, Batcher, ForwardFailure, ForwardReport, Served};
pub use message::{NetworkMessage, NodeEvent, PeerId};
pub use model::{Model, ModelError};

use averaging::Averaging;

use crate::net::{
    Deadline, Engine, EngineConfig, EngineHandle, MetricsSnapshot, NetError, NetEvent, PeerStatus,
    Receiver,
};
use crate::session::SessionConfig;
use crate::wire::{capabilities, DisconnectReason, Message, ProtocolError, WeightSync};

/// Parameters per WeightSync frame: a layer of any size leaves in frames of at most 64 KiB,
/// so small frames can pass between them.
pub const WEIGHT_SYNC_CHUNK: usize = 16 * 1024 - 8;

/// Why a node operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum NodeError {
    /// The transport refused or failed.
    Net(NetError),
    /// The message broke the protocol.
    Protocol(ProtocolError),
    /// The message does not fit the local network.
    Model(ModelError),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::Net(e) => write!(f, "{e}"),
            NodeError::Protocol(e) => write!(f, "{e}"),
            NodeError::Model(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for NodeError {}

impl From<NetError> for NodeError {
    fn from(e: NetError) -> Self {
        NodeError::Net(e)
    }
}

impl From<ProtocolError> for NodeError {
    fn from(e: ProtocolError) -> Self {
        NodeError::Protocol(e)
    }
}

impl From<ModelError> for NodeError {
    fn from(e: ModelError) -> Self {
        NodeError::Model(e)
    }
}

/// How a node runs, beyond its name and address.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Capabilities offered to peers.
    pub capabilities: u32,
    /// The engine's settings (its session name, id and layer sizes are filled by the node;
    /// peer authentication is `engine.session.auth`).
    pub engine: EngineConfig,
    /// How long a blocking send waits for room in a full queue.
    pub send_timeout: Duration,
    /// Samples the local network has learnt from at the start: what its weight syncs carry,
    /// and its own weight when it averages others' (see
    /// [`DistributedNetwork::set_sample_count`]).
    pub local_samples: u32,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            capabilities: capabilities::ALL,
            engine: EngineConfig::default().threads(1),
            send_timeout: Duration::from_secs(10),
            local_samples: 1,
        }
    }
}

/// What [`DistributedNetwork::handle_message`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum HandleOutcome {
    /// ForwardData ran through the local network; here is its output (send it on, or back).
    Output(Vec<f32>),
    /// BackwardData's gradients were applied to a layer.
    GradientApplied {
        /// The layer.
        layer: usize,
    },
    /// HebbianData was integrated into a layer.
    CorrelationsIntegrated {
        /// The layer.
        layer: usize,
    },
    /// WeightSync replaced or averaged parameters of a layer.
    WeightsUpdated {
        /// The layer.
        layer: usize,
        /// First parameter written.
        offset: usize,
        /// How many.
        count: usize,
    },
}

/// A node: a network, a transport engine, and its peers.
pub struct DistributedNetwork<M: Model> {
    name: String,
    listen_on: String,
    engine: Mutex<Option<Engine>>,
    handle: EngineHandle,
    network: Arc<Mutex<M>>,
    config: NodeConfig,
    /// Samples behind each parameter averaged in this round.
    averaging: Mutex<Averaging>,
}

impl<M: Model> std::fmt::Debug for DistributedNetwork<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedNetwork")
            .field("name", &self.name)
            .field("listen_on", &self.listen_on)
            .finish_non_exhaustive()
    }
}

impl<M: Model> DistributedNetwork<M> {
    /// A node named `name` that will listen on `host:port` (port 0: any free port) and hosts
    /// `network`. Returns the node and the receiver of its events.
    pub fn new(
        name: &str,
        host: &str,
        port: u16,
        network: M,
    ) -> Result<(Self, NodeReceiver), NodeError> {
        Self::with_config(name, host, port, network, NodeConfig::default())
    }

    /// [`DistributedNetwork::new`] with explicit settings.
    pub fn with_config(
        name: &str,
        host: &str,
        port: u16,
        network: M,
        config: NodeConfig,
    ) -> Result<(Self, NodeReceiver), NodeError> {
        let mut engine_config = config.engine.clone();
        engine_config.session = SessionConfig {
            node_id: random_node_id(name),
            name: name.to_owned(),
            capabilities: config.capabilities,
            layer_sizes: network.layer_sizes().iter().map(|&s| s as u32).collect(),
            ..engine_config.session
        };
        let (engine, handle, receiver) =
            Engine::start(engine_config).map_err(|e| NodeError::Net(NetError::Io(e)))?;
        let node = DistributedNetwork {
            name: name.to_owned(),
            listen_on: format!("{host}:{port}"),
            engine: Mutex::new(Some(engine)),
            handle,
            network: Arc::new(Mutex::new(network)),
            averaging: Mutex::new(Averaging::new(config.local_samples)),
            config,
        };
        Ok((node, NodeReceiver { inner: receiver }))
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts listening; returns the bound address (useful with port 0).
    pub fn start_server(&self) -> Result<SocketAddr, NodeError> {
        let addr = self.handle.listen(self.listen_on.as_str())?;
        log::info!("node {:?} listening on {addr}", self.name);
        Ok(addr)
    }

    /// Connects to a node and completes the handshake; returns the peer's id.
    pub fn connect_to(&self, host: &str, port: u16) -> Result<PeerId, NodeError> {
        let peer = self.handle.connect((host, port))?;
        log::info!(
            "node {:?} connected to {host}:{port} as peer {peer}",
            self.name
        );
        Ok(peer)
    }

    fn send(&self, peer: PeerId, message: &Message<'_>) -> Result<(), NodeError> {
        log::debug!("{} -> {peer}: {:?}", self.name, message.msg_type());
        Ok(self.handle.send(peer, message, self.config.send_timeout)?)
    }

    /// Answers a ForwardData `request` with the network's `output` (as ForwardData on the
    /// output layer, docs/PROTOCOL.md "What a node answers") without ever waiting: a node
    /// serving many peers must not stall on one. If the peer's send queue is full (it does not
    /// read what it asked for), the peer is disconnected as a slow consumer (Disconnect
    /// OVERLOADED, logged) and the error returned; the other peers are not held up.
    pub fn reply(&self, request: &NetworkMessage, output: &[f32]) -> Result<(), NodeError> {
        let output_layer = self.network().layer_sizes().len() - 1;
        self.answer(request.peer(), output_layer as u16, output)
    }

    /// [`DistributedNetwork::reply`] to `peer` with `output`, the activations of layer
    /// `output_layer` (the network's output).
    fn answer(&self, peer: PeerId, output_layer: u16, output: &[f32]) -> Result<(), NodeError> {
        let answer = Message::ForwardData {
            layer_id: output_layer,
            data: Cow::Borrowed(output),
        };
        match self.handle.send(peer, &answer, Deadline::Now) {
            Err(NetError::WouldBlock { queued, limit }) => {
                log::warn!(
                    "{}: {peer} does not read its answers ({queued} of {limit} bytes queued): disconnected as a slow consumer",
                    self.name
                );
                self.handle.close(
                    peer,
                    DisconnectReason::OVERLOADED,
                    "slow consumer: the answers to your requests are not being read",
                );
                Err(NetError::WouldBlock { queued, limit }.into())
            }
            other => Ok(other?),
        }
    }

    /// Sends activations for `layer_id` (0: the peer's input).
    pub fn send_forward_data(
        &self,
        peer: PeerId,
        layer_id: u16,
        data: &[f32],
    ) -> Result<(), NodeError> {
        self.send(
            peer,
            &Message::ForwardData {
                layer_id,
                data: Cow::Borrowed(data),
            },
        )
    }

    /// Sends gradients for `layer_id`.
    pub fn send_backward_data(
        &self,
        peer: PeerId,
        layer_id: u16,
        data: &[f32],
    ) -> Result<(), NodeError> {
        self.send(
            peer,
            &Message::BackwardData {
                layer_id,
                data: Cow::Borrowed(data),
            },
        )
    }

    /// Sends a layer's Hebbian correlations (`rows x cols` of the local layer `layer_id`).
    pub fn send_hebbian_data(
        &self,
        peer: PeerId,
        layer_id: u16,
        correlations: &[f32],
        learning_rate: f32,
    ) -> Result<(), NodeError> {
        let (rows, cols) = self.network().layer_shape(layer_id as usize)?;
        self.send(
            peer,
            &Message::HebbianData {
                layer_id,
                learning_rate,
                rows: rows as u32,
                cols: cols as u32,
                correlations: Cow::Borrowed(correlations),
            },
        )
    }

    /// Sends the local layer's parameters in frames of at most [`WEIGHT_SYNC_CHUNK`] values.
    pub fn send_weight_sync(
        &self,
        peer: PeerId,
        layer_id: u16,
        mode: SyncMode,
    ) -> Result<(), NodeError> {
        let (rows, cols, params) = {
            let network = self.network();
            let (rows, cols) = network.layer_shape(layer_id as usize)?;
            (rows, cols, network.params(layer_id as usize)?)
        };
        for (i, chunk) in params.chunks(WEIGHT_SYNC_CHUNK).enumerate() {
            let message = Message::WeightSync(WeightSync {
                layer_id,
                mode,
                rows: rows as u32,
                cols: cols as u32,
                offset: (i * WEIGHT_SYNC_CHUNK) as u32,
                sample_count: self.sample_count(),
                values: Cow::Borrowed(chunk),
            });
            self.send(peer, &message)?;
        }
        Ok(())
    }

    fn broadcast(
        &self,
        each: impl Fn(PeerId) -> Result<(), NodeError>,
    ) -> Result<usize, NodeError> {
        let mut sent = 0;
        for peer in self.handle.peers().into_iter().filter(|p| p.info.is_some()) {
            each(peer.conn)?;
            sent += 1;
        }
        Ok(sent)
    }

    /// [`DistributedNetwork::send_forward_data`] to every established peer; returns how many.
    pub fn broadcast_forward_data(&self, layer_id: u16, data: &[f32]) -> Result<usize, NodeError> {
        self.broadcast(|p| self.send_forward_data(p, layer_id, data))
    }

    /// [`DistributedNetwork::send_backward_data`] to every established peer.
    pub fn broadcast_backward_data(&self, layer_id: u16, data: &[f32]) -> Result<usize, NodeError> {
        self.broadcast(|p| self.send_backward_data(p, layer_id, data))
    }

    /// [`DistributedNetwork::send_hebbian_data`] to every established peer.
    pub fn broadcast_hebbian_data(
        &self,
        layer_id: u16,
        correlations: &[f32],
        learning_rate: f32,
    ) -> Result<usize, NodeError> {
        self.broadcast(|p| self.send_hebbian_data(p, layer_id, correlations, learning_rate))
    }

    /// [`DistributedNetwork::send_weight_sync`] to every established peer.
    pub fn broadcast_weight_sync(&self, layer_id: u16, mode: SyncMode) -> Result<usize, NodeError> {
        self.broadcast(|p| self.send_weight_sync(p, layer_id, mode))
    }

    /// Closes the connection to `peer` with a Disconnect frame.
    pub fn disconnect(&self, peer: PeerId) {
        self.handle
            .close(peer, DisconnectReason::NORMAL, "disconnect requested");
    }

    /// The connected peers: name, address, agreed capabilities, round-trip time, traffic.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.handle.peers()
    }

    /// Measures the round trip to `peer` now (the result shows in [`DistributedNetwork::peers`]).
    pub fn ping(&self, peer: PeerId) -> Result<(), NodeError> {
        Ok(self.handle.ping(peer)?)
    }

    /// The transport's counters and round-trip histogram.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.handle.metrics()
    }

    /// The hosted network, locked.
    pub fn network(&self) -> MutexGuard<'_, M> {
        self.network.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The samples the local network stands for: what its weight syncs carry.
    pub fn sample_count(&self) -> u32 {
        self.averaging().own()
    }

    /// Sets the samples the local network stands for (after local training, say) and begins
    /// a new averaging round: the weight syncs averaged in from now on (`SyncMode::Average`)
    /// are weighed against this count and each other's, so that after any number of members
    /// the network is their weighted mean.
    pub fn set_sample_count(&self, samples: u32) {
        self.averaging().restart(samples);
    }

    fn averaging(&self) -> MutexGuard<'_, Averaging> {
        self.averaging.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The transport handle, for what the node API does not cover.
    pub fn engine(&self) -> &EngineHandle {
        &self.handle
    }

    /// Does what a received message asks of the local network, reading its data in place.
    ///
    /// A message the network cannot take (a layer it does not have, a shape that does not
    /// fit, non-finite values) is refused: the peer is told which message and why (an Error
    /// APPLICATION, docs/PROTOCOL.md rule 6; it sees [`NodeEvent::Refused`]), the connection
    /// stays open, and the error comes back here too. A server loop logs it and carries on.
    ///
    /// A ForwardData runs alone through the network, and its output comes back here to send
    /// on or back ([`DistributedNetwork::reply`]); [`DistributedNetwork::serve`] answers
    /// ForwardData requests from many peers in batches.
    pub fn handle_message(&self, message: &NetworkMessage) -> Result<HandleOutcome, NodeError> {
        let outcome = self.apply(message);
        if let Err(e) = &outcome {
            self.refuse(message, e);
        }
        outcome
    }

    /// Tells the sender of `message` that it was refused, and why.
    fn refuse(&self, message: &NetworkMessage, error: &NodeError) {
        let (peer, sequence) = (message.peer(), message.sequence());
        log::debug!(
            "{} refuses message {sequence} from {peer}: {error}",
            self.name
        );
        if let Err(refusal) = self.handle.refuse(peer, sequence, &error.to_string()) {
            log::debug!("could not tell {peer} of the refusal: {refusal}");
        }
    }

    /// Runs one ForwardData's `data` from weight layer `layer` to the output, refusing before
    /// any compute a batch whose answer would not fit in a frame.
    fn forward(&self, network: &mut M, layer: usize, data: &[f32]) -> Result<Vec<f32>, NodeError> {
        self.check_work_fits(network, layer, data.len())?;
        Ok(network.forward_from(layer, data)?)
    }

    /// Refuses, before any compute or allocation, a ForwardData batch whose activations or
    /// answer would not fit in one frame: `values` inputs entering weight layer `layer` are
    /// `values / cols` rows, and each layer after it holds rows times its width.
    fn check_work_fits(&self, network: &M, layer: usize, values: usize) -> Result<(), NodeError> {
        let (_, cols) = network.layer_shape(layer)?;
        let sizes = network.layer_sizes();
        let widest = sizes[layer + 1..].iter().copied().max().unwrap_or(0);
        let rows = values / cols.max(1);
        let cap = self.handle.config().session.max_payload as usize;
        let bytes = rows.saturating_mul(widest).saturating_mul(4);
        if bytes > cap {
            return Err(ModelError::Rejected {
                layer,
                reason: format!(
                    "{rows} rows would need {bytes} bytes of activations, over the {cap}-byte frame cap: send fewer rows per message"
                ),
            }
            .into());
        }
        Ok(())
    }

    fn apply(&self, message: &NetworkMessage) -> Result<HandleOutcome, NodeError> {
        let view = message.message();
        let mut network = self.network();
        let outcome = match &view {
            Message::ForwardData { layer_id, data } => {
                HandleOutcome::Output(self.forward(&mut network, *layer_id as usize, data)?)
            }
            Message::BackwardData { layer_id, data } => {
                let layer = *layer_id as usize;
                network.apply_gradient(layer, data)?;
                HandleOutcome::GradientApplied { layer }
            }
            Message::HebbianData {
                layer_id,
                learning_rate,
                rows,
                cols,
                correlations,
            } => {
                let layer = *layer_id as usize;
                check_shape(
                    &*network,
                    layer,
                    (*rows, *cols),
                    "correlations",
                    correlations.len(),
                )?;
                network.integrate_correlations(layer, correlations, *learning_rate)?;
                HandleOutcome::CorrelationsIntegrated { layer }
            }
            Message::WeightSync(WeightSync {
                layer_id,
                mode,
                rows,
                cols,
                offset,
                sample_count,
                values,
            }) => {
                let layer = *layer_id as usize;
                let claimed = (*rows as usize) * (*cols as usize);
                check_shape(&*network, layer, (*rows, *cols), "layer weights", claimed)?;
                let offset = *offset as usize;
                match mode {
                    SyncMode::Replace => network.write_params(layer, offset, values)?,
                    SyncMode::Average => {
                        let params = network.params(layer)?.len();
                        let runs = self
                            .averaging()
                            .weigh(layer, params, offset, values.len(), *sample_count)
                            .ok_or_else(|| ModelError::ShapeMismatch {
                                layer,
                                expected: format!("at most {params} parameters"),
                                got: offset + values.len(),
                            })?;
                        for (start, end, share) in runs {
                            let part = &values[start - offset..end - offset];
                            network.average_params(layer, start, part, share)?;
                        }
                    }
                }
                HandleOutcome::WeightsUpdated {
                    layer,
                    offset,
                    count: values.len(),
                }
            }
            // A NetworkMessage holds a data frame: the control messages never get here.
            other => {
                return Err(ProtocolError::UnexpectedMessage {
                    msg_type: other.msg_type(),
                    state: "established (only data messages reach the application)",
                }
                .into())
            }
        };
        log::debug!(
            "{} handled {:?} from {}",
            self.name,
            message.msg_type(),
            message.peer()
        );
        Ok(outcome)
    }

    /// Closes every connection with a Disconnect and stops the engine.
    pub fn shutdown(&self) {
        if let Some(engine) = self.engine.lock().unwrap_or_else(|e| e.into_inner()).take() {
            engine.shutdown();
        }
    }
}

impl<M: Model> Drop for DistributedNetwork<M> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A node id that differs between processes and nodes (no randomness source needed).
fn random_node_id(name: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(name.as_bytes());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Where a node's events arrive: data messages, and peers arriving and leaving.
///
/// [`NodeReceiver::recv_timeout`] waits for the next event at most as long as it is told
/// (`Duration::ZERO`: only takes one that is waiting); as an [`Iterator`], the receiver waits
/// for each event as long as it takes, and ends once the node has shut down.
pub struct NodeReceiver {
    inner: Receiver,
}

impl std::fmt::Debug for NodeReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeReceiver").finish_non_exhaustive()
    }
}

impl NodeReceiver {
    fn convert(event: NetEvent) -> Option<NodeEvent> {
        match event {
            NetEvent::Frame(frame) => {
                let (conn, msg_type) = (frame.conn(), frame.msg_type());
                let message = NetworkMessage::new(frame);
                if message.is_none() {
                    log::warn!("dropping a {msg_type:?} frame from {conn}: not a data message");
                }
                message.map(NodeEvent::Message)
            }
            NetEvent::Connected { conn, peer, .. } => Some(NodeEvent::PeerConnected {
                peer: conn,
                info: peer,
            }),
            NetEvent::Refused {
                conn,
                sequence,
                reason,
            } => Some(NodeEvent::Refused {
                peer: conn,
                sequence,
                reason,
            }),
            NetEvent::Disconnected { conn, cause } => {
                Some(NodeEvent::PeerDisconnected { peer: conn, cause })
            }
        }
    }

    /// The next event if one is waiting, without touching the receiver's adaptive spinning
    /// (what [`DistributedNetwork::serve`] drains into a batch).
    fn try_recv(&mut self) -> Option<NodeEvent> {
        loop {
            if let Some(event) = Self::convert(self.inner.try_recv()?) {
                return Some(event);
            }
        }
    }

    /// The next event, waiting at most `timeout` (`Duration::ZERO`: the next event if one
    /// is waiting). `None` on timeout, or once the node has shut down and every event was
    /// taken.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<NodeEvent> {
        // No clock read on the way of a stream of events: the engine hands the application
        // data frames only, so the first event nearly always converts.
        if let Some(event) = Self::convert(self.inner.recv_timeout(timeout)?) {
            return Some(event);
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let event = self.inner.recv_timeout(left)?;
            if let Some(event) = Self::convert(event) {
                return Some(event);
            }
        }
    }
}

impl Iterator for NodeReceiver {
    type Item = NodeEvent;

    /// The next event, waiting as long as it takes; `None` once the node has shut down and
    /// every event was taken.
    fn next(&mut self) -> Option<NodeEvent> {
        loop {
            if let Some(event) = Self::convert(self.inner.next()?) {
                return Some(event);
            }
        }
    }
}

/// Checks that a message's `rows x cols` matches the local layer; `what` and `got` describe
/// the message's side for the error.
fn check_shape(
    network: &impl Model,
    layer: usize,
    (rows, cols): (u32, u32),
    what: &str,
    got: usize,
) -> Result<(), NodeError> {
    let shape = network.layer_shape(layer)?;
    if shape != (rows as usize, cols as usize) {
        return Err(ModelError::ShapeMismatch {
            layer,
            expected: format!("{}x{} {what}", shape.0, shape.1),
            got,
        }
        .into());
    }
    Ok(())
}
