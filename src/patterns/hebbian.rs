//! Federated Hebbian learning: peers that each hold a shard of the data share the Hebbian
//! correlations of their shard (HebbianData), never a sample, so that a Hebbian layer (Oja,
//! Sanger, ...) learns the structure of all the data, which no shard alone shows: with digits
//! dealt by class, each shard's first principal component differs from the whole set's, and
//! the peers' shared one matches the whole set's.
//!
//! Every round each [`HebbianPeer`] computes `E[y xᵀ]` over its shard for its layer's current
//! weights (`y = W x`, [`shard_correlations`]), sends it to every connected peer with its
//! learning rate, integrates it itself
//! ([`crate::nn::NeuralNetwork::integrate_correlations`]), then integrates the one set each
//! peer sent for the round, with the rate that peer sent. A peer's rate is the shared base
//! rate times its share of the samples ([`HebbianConfig::share`]), so the sum over the peers
//! is the expected update over all the data. The peers form a full mesh (each connects to
//! those started before it); rounds keep step because each peer waits for one set from every
//! other before its next round, up to [`HebbianConfig::round_timeout`] (a peer that misses it
//! is left out of that round, and its late set counts in the next).
//!
//! The layer is the network's first; data rows are `inputs` wide, centred by the caller (the
//! components are those of the data as given).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use crate::nn::{NeuralNetwork, NnError};
use crate::node::{DistributedNetwork, NodeConfig, NodeError, NodeEvent, NodeReceiver, PeerId};
use crate::wire::Message;

/// How a peer takes part.
#[derive(Debug, Clone)]
pub struct HebbianConfig {
    /// The base learning rate `η` every peer shares.
    pub learning_rate: f32,
    /// This peer's share of all the peers' samples, 0 to 1: its rate is `η x share`. `None`
    /// gives every peer an equal share (`1 / (peers + 1)` each round), right when the shards
    /// are of equal size.
    pub share: Option<f32>,
    /// How long a round waits for the other peers' correlations.
    pub round_timeout: Duration,
    /// The node's settings.
    pub node: NodeConfig,
}

impl Default for HebbianConfig {
    fn default() -> Self {
        HebbianConfig {
            learning_rate: 0.5,
            share: None,
            round_timeout: Duration::from_secs(10),
            node: NodeConfig::default(),
        }
    }
}

/// Why a federated Hebbian operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum HebbianError {
    /// The node (transport or protocol) failed.
    Node(NodeError),
    /// The network refused the data or the correlations.
    Nn(NnError),
    /// The shard is not a whole number of rows of the layer's input width.
    ShardShape {
        /// Values given.
        values: usize,
        /// The layer's input width.
        inputs: usize,
    },
    /// Fewer peers than asked for connected in time.
    NotEnoughPeers {
        /// Peers connected.
        connected: usize,
        /// Peers wanted.
        wanted: usize,
        /// How long it waited.
        waited: Duration,
    },
}

impl std::fmt::Display for HebbianError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HebbianError::Node(e) => write!(f, "{e}"),
            HebbianError::Nn(e) => write!(f, "{e}"),
            HebbianError::ShardShape { values, inputs } => write!(
                f,
                "the shard has {values} values, not a whole number of rows of {inputs} inputs"
            ),
            HebbianError::NotEnoughPeers {
                connected,
                wanted,
                waited,
            } => write!(
                f,
                "{connected} peers connected within {waited:?}, {wanted} wanted"
            ),
        }
    }
}

impl std::error::Error for HebbianError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HebbianError::Node(e) => Some(e),
            HebbianError::Nn(e) => Some(e),
            _ => None,
        }
    }
}

impl From<NodeError> for HebbianError {
    fn from(e: NodeError) -> Self {
        HebbianError::Node(e)
    }
}

impl From<NnError> for HebbianError {
    fn from(e: NnError) -> Self {
        HebbianError::Nn(e)
    }
}

/// What a round did.
#[derive(Debug, Clone, PartialEq)]
pub struct HebbianRound {
    /// The round, from 1.
    pub round: usize,
    /// The peers whose correlations were integrated this round, by name.
    pub heard_from: Vec<String>,
    /// The connected peers that sent none in time.
    pub missed: Vec<String>,
    /// The rate this peer sent and applied to its own correlations.
    pub rate: f32,
}

/// Correlation sets a peer may have waiting before the oldest is dropped: one per round is
/// the norm; more means it runs ahead, and its sets are not kept without bound.
const MAX_WAITING: usize = 16;

struct PeerSlot {
    name: String,
    /// Disconnected: kept only until its sets already received are integrated.
    gone: bool,
    /// Received sets not yet integrated, oldest first, each with its rate.
    waiting: VecDeque<(Vec<f32>, f32)>,
}

/// One peer of a federated Hebbian mesh: a node, its layer and its shard.
pub struct HebbianPeer {
    node: DistributedNetwork<NeuralNetwork>,
    events: NodeReceiver,
    shard: Vec<f32>,
    config: HebbianConfig,
    addr: SocketAddr,
    peers: BTreeMap<PeerId, PeerSlot>,
    round: usize,
}

impl std::fmt::Debug for HebbianPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HebbianPeer")
            .field("addr", &self.addr)
            .field("round", &self.round)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl HebbianPeer {
    /// A peer named `name` listening on `host:port` (port 0: any free port), training the
    /// first layer of `network` on `shard` (row-major, the layer's input width).
    pub fn new(
        name: &str,
        host: &str,
        port: u16,
        network: NeuralNetwork,
        shard: Vec<f32>,
        config: HebbianConfig,
    ) -> Result<HebbianPeer, HebbianError> {
        let inputs = network.layer_shape(0).1;
        if shard.is_empty() || shard.len() % inputs != 0 {
            return Err(HebbianError::ShardShape {
                values: shard.len(),
                inputs,
            });
        }
        let (node, events) =
            DistributedNetwork::with_config(name, host, port, network, config.node.clone())?;
        let addr = node.start_server()?;
        Ok(HebbianPeer {
            node,
            events,
            shard,
            config,
            addr,
            peers: BTreeMap::new(),
            round: 0,
        })
    }

    /// The address other peers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The layer's network, locked.
    pub fn network(&self) -> MutexGuard<'_, NeuralNetwork> {
        self.node.network()
    }

    /// The node underneath: its peers and traffic metrics.
    pub fn node(&self) -> &DistributedNetwork<NeuralNetwork> {
        &self.node
    }

    /// Connects to another peer.
    pub fn connect(&mut self, addr: SocketAddr) -> Result<PeerId, HebbianError> {
        let peer = self.node.connect_to(&addr.ip().to_string(), addr.port())?;
        self.peers.entry(peer).or_insert_with(|| PeerSlot {
            name: addr.to_string(),
            gone: false,
            waiting: VecDeque::new(),
        });
        Ok(peer)
    }

    /// Connected peers, by name.
    pub fn peers(&mut self) -> Vec<String> {
        while self.next_event(Duration::ZERO) {}
        self.peers
            .values()
            .filter(|s| !s.gone)
            .map(|s| s.name.clone())
            .collect()
    }

    /// Waits until `count` peers are connected, at most `timeout`.
    pub fn wait_for_peers(&mut self, count: usize, timeout: Duration) -> Result<(), HebbianError> {
        let started = Instant::now();
        while self.next_event(Duration::ZERO) {}
        while self.connected() < count {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(HebbianError::NotEnoughPeers {
                    connected: self.connected(),
                    wanted: count,
                    waited: started.elapsed(),
                });
            }
            self.next_event(left);
        }
        Ok(())
    }

    /// One round: sends this shard's correlations to every peer, integrates them, then
    /// integrates one set from each peer that sent one within the round timeout.
    pub fn run_round(&mut self) -> Result<HebbianRound, HebbianError> {
        self.round += 1;
        while self.next_event(Duration::ZERO) {}
        let share = self
            .config
            .share
            .unwrap_or(1.0 / (self.connected() + 1) as f32);
        let rate = self.config.learning_rate * share;
        let own = {
            let network = self.node.network();
            let (rows, cols) = network.layer_shape(0);
            shard_correlations(network.layer_weights(0), rows, cols, &self.shard)
        };
        let peers: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| !s.gone)
            .map(|(&p, _)| p)
            .collect();
        for peer in peers {
            if let Err(e) = self.node.send_hebbian_data(peer, 0, &own, rate) {
                log::warn!(
                    "round {}: could not send the correlations to {peer}: {e}; disconnected",
                    self.round
                );
                self.node.disconnect(peer);
                self.peers.remove(&peer);
            }
        }
        self.node.network().integrate_correlations(0, &own, rate)?;

        let deadline = Instant::now() + self.config.round_timeout;
        loop {
            let waiting = self.peers.values().any(|s| !s.gone && s.waiting.is_empty());
            let left = deadline.saturating_duration_since(Instant::now());
            if !waiting || left.is_zero() {
                break;
            }
            self.next_event(left);
        }
        let (mut heard_from, mut missed) = (Vec::new(), Vec::new());
        let mut network = self.node.network();
        for slot in self.peers.values_mut() {
            match slot.waiting.pop_front() {
                Some((values, rate)) => {
                    network.integrate_correlations(0, &values, rate)?;
                    heard_from.push(slot.name.clone());
                }
                None if !slot.gone => missed.push(slot.name.clone()),
                None => {}
            }
        }
        self.peers.retain(|_, s| !s.gone || !s.waiting.is_empty());
        Ok(HebbianRound {
            round: self.round,
            heard_from,
            missed,
            rate,
        })
    }

    fn connected(&self) -> usize {
        self.peers.values().filter(|s| !s.gone).count()
    }

    /// Closes every connection and stops the node.
    pub fn shutdown(&self) {
        self.node.shutdown();
    }

    /// Waits at most `timeout` for one event and handles it; false if none came.
    fn next_event(&mut self, timeout: Duration) -> bool {
        let Some(event) = self.events.recv_timeout(timeout) else {
            return false;
        };
        match event {
            NodeEvent::PeerConnected { peer, info } => {
                let slot = self.peers.entry(peer).or_insert_with(|| PeerSlot {
                    name: String::new(),
                    gone: false,
                    waiting: VecDeque::new(),
                });
                slot.name.clone_from(&info.name);
            }
            NodeEvent::PeerDisconnected { peer, cause } => {
                // Sets it sent before it left still count, in the rounds to come.
                if let Some(slot) = self.peers.get_mut(&peer) {
                    log::info!("peer {:?} ({peer}) left: {cause}", slot.name);
                    slot.gone = true;
                    if slot.waiting.is_empty() {
                        self.peers.remove(&peer);
                    }
                }
            }
            NodeEvent::Message(message) => {
                let peer = message.peer();
                let Some(slot) = self.peers.get_mut(&peer) else {
                    return true;
                };
                let shape = self.node.network().layer_shape(0);
                match message.message() {
                    Message::HebbianData {
                        layer_id: 0,
                        rows,
                        cols,
                        learning_rate,
                        correlations,
                    } if (rows as usize, cols as usize) == shape => {
                        if slot.waiting.len() == MAX_WAITING {
                            log::warn!(
                                "peer {:?} is {MAX_WAITING} rounds ahead: its oldest set is dropped",
                                slot.name
                            );
                            slot.waiting.pop_front();
                        }
                        slot.waiting
                            .push_back((correlations.into_owned(), learning_rate));
                    }
                    other => log::warn!(
                        "peer {:?} sent {:?} that does not fit layer 0 ({}x{}): ignored",
                        slot.name,
                        other.msg_type(),
                        shape.0,
                        shape.1
                    ),
                }
            }
            NodeEvent::Refused { peer, reason, .. } => {
                log::warn!("peer {peer} refused the correlations: {reason}");
            }
        }
        true
    }
}

/// `E[y xᵀ]` over the rows of `shard` for the layer `weights` (`rows x cols`, row-major;
/// `y = W x`, no bias nor activation, as the Hebbian rules assume): the HebbianData a peer
/// sends, row-major `rows x cols`.
pub fn shard_correlations(weights: &[f32], rows: usize, cols: usize, shard: &[f32]) -> Vec<f32> {
    let n = shard.len() / cols;
    let mut sum = vec![0.0f64; rows * cols];
    let mut y = vec![0.0f32; rows];
    for x in shard.chunks_exact(cols) {
        for (yi, w) in y.iter_mut().zip(weights.chunks_exact(cols)) {
            *yi = w.iter().zip(x).map(|(a, b)| a * b).sum();
        }
        for (row, &yi) in sum.chunks_exact_mut(cols).zip(&y) {
            for (s, &xj) in row.iter_mut().zip(x) {
                *s += f64::from(yi * xj);
            }
        }
    }
    sum.iter().map(|v| (*v / n.max(1) as f64) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_correlations_are_the_mean_of_y_x_transposed() {
        // W = [[1, 0], [1, 1]]; x = (1, 2) and (3, -1): y = (1, 3) and (3, 2).
        let w = [1.0, 0.0, 1.0, 1.0];
        let shard = [1.0, 2.0, 3.0, -1.0];
        let r = shard_correlations(&w, 2, 2, &shard);
        // Row i is E[y_i x]: ((1*1 + 3*3)/2, (1*2 + 3*-1)/2), ((3*1 + 2*3)/2, (3*2 + 2*-1)/2).
        assert_eq!(r, vec![5.0, -0.5, 4.5, 2.0]);
    }
}
