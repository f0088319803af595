//! The coordinator: holds the global model, runs the rounds, and aggregates what the workers
//! send back, each worker's weights collected apart.
//!
//! A worker answers every full set of weights it is sent with one full set of its own, in
//! order on its connection. The coordinator counts the sets it has sent each worker and not
//! yet had back; a set that arrives while another is still owed is the late answer to an
//! earlier round and is dropped, so no round tag is needed on the wire.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use super::{Aggregator, FederatedError};
use crate::net::EngineConfig;
use crate::nn::NeuralNetwork;
use crate::node::{
    DistributedNetwork, NetworkMessage, NodeConfig, NodeEvent, NodeReceiver, PeerId, SyncMode,
};
use crate::wire::{Message, WeightSync};

/// How the coordinator runs its rounds.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Workers a round needs: it waits (up to `join_timeout`) for this many to be connected
    /// before it starts, and keeps the global weights unchanged if fewer answer in time.
    pub min_workers: usize,
    /// The share of the connected workers asked to train in each round (Flower's
    /// `fraction_fit`), 0.0 to 1.0: `ceil(fraction x connected)` workers, never fewer than
    /// `min_workers` (nor more than are connected). The workers take turns: each round asks
    /// the ones after those the last round asked, in the order they joined, so over rounds
    /// every worker trains equally often. 1.0 (the default) asks every worker every round.
    pub fraction: f64,
    /// How long a round waits for the workers' weights once it has sent its own. A worker
    /// whose weights are not all in by then is left out of the round. Set it above the
    /// slowest worker's local training plus the transfer both ways.
    pub round_deadline: Duration,
    /// How long a round waits for `min_workers` to be connected before it fails with
    /// [`FederatedError::NotEnoughWorkers`].
    pub join_timeout: Duration,
    /// How the workers' weights are combined.
    pub aggregator: Aggregator,
    /// The transport's settings. The default closes a connection as soon as its worker's
    /// end of stream arrives (`linger` zero): a worker that stopped sending, or died, can
    /// send no weights, and a round should not wait for it.
    pub engine: EngineConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            min_workers: 1,
            fraction: 1.0,
            round_deadline: Duration::from_secs(10),
            join_timeout: Duration::from_secs(30),
            aggregator: Aggregator::FedAvg,
            engine: EngineConfig {
                linger: Duration::ZERO,
                ..NodeConfig::default().engine
            },
        }
    }
}

/// A worker's part in a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    /// The connection it is on.
    pub peer: PeerId,
    /// The name it gave in its handshake.
    pub name: String,
    /// The samples its weights were trained on (what it said; 0 for a worker left out).
    pub samples: u32,
}

/// What a round did.
#[derive(Debug, Clone)]
pub struct RoundReport {
    /// The round, from 1.
    pub round: usize,
    /// The workers whose weights were aggregated.
    pub contributors: Vec<Contribution>,
    /// The workers sent the weights whose own did not come back by the deadline (or that
    /// disconnected during the round).
    pub left_out: Vec<Contribution>,
    /// Whether the global weights changed (at least `min_workers` contributed).
    pub aggregated: bool,
    /// Time spent waiting for `min_workers` to be connected.
    pub joining: Duration,
    /// From sending the weights to the new global weights being in place.
    pub duration: Duration,
}

/// A worker's weights as they arrive, and the last full set answering the current round.
struct Slot {
    name: String,
    /// Full sets sent to it and not yet answered.
    owed: u32,
    /// Per layer, the parameters received so far of the set in progress.
    incoming: Vec<Vec<f32>>,
    received: usize,
    samples: u32,
    /// The answer to this round's set.
    fresh: Option<(Vec<Vec<f32>>, u32)>,
}

/// The coordinator of federated rounds: a node hosting the global model.
pub struct Coordinator {
    node: DistributedNetwork<NeuralNetwork>,
    events: NodeReceiver,
    config: CoordinatorConfig,
    addr: SocketAddr,
    /// Each weight layer's `(rows, cols)`.
    shapes: Vec<(usize, usize)>,
    workers: BTreeMap<PeerId, Slot>,
    round: usize,
    /// Where the next round's turn starts in the joined workers, with `fraction` below 1.
    next_turn: usize,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("addr", &self.addr)
            .field("round", &self.round)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// A coordinator listening on `host:port` (port 0: any free port, see
    /// [`Coordinator::local_addr`]) with `network` as the initial global model.
    pub fn new(
        host: &str,
        port: u16,
        network: NeuralNetwork,
        config: CoordinatorConfig,
    ) -> Result<Coordinator, FederatedError> {
        let shapes = (0..network.layer_count())
            .map(|l| network.layer_shape(l))
            .collect();
        let node_config = NodeConfig {
            engine: config.engine.clone(),
            // A worker whose queue stays full is as late as one that does not answer.
            send_timeout: config.round_deadline,
            ..NodeConfig::default()
        };
        let (node, events) =
            DistributedNetwork::with_config("coordinator", host, port, network, node_config)?;
        let addr = node.start_server()?;
        Ok(Coordinator {
            node,
            events,
            config,
            addr,
            shapes,
            workers: BTreeMap::new(),
            round: 0,
            next_turn: 0,
        })
    }

    /// The address workers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The global model, locked.
    pub fn network(&self) -> MutexGuard<'_, NeuralNetwork> {
        self.node.network()
    }

    /// The node underneath: its peers and traffic metrics.
    pub fn node(&self) -> &DistributedNetwork<NeuralNetwork> {
        &self.node
    }

    /// The connected workers, by connection, with their names.
    pub fn workers(&mut self) -> Vec<(PeerId, String)> {
        self.take_waiting_events();
        self.workers
            .iter()
            .map(|(&p, s)| (p, s.name.clone()))
            .collect()
    }

    /// Rounds run so far.
    pub fn rounds(&self) -> usize {
        self.round
    }

    /// Waits until `count` workers are connected, at most `timeout`.
    pub fn wait_for_workers(
        &mut self,
        count: usize,
        timeout: Duration,
    ) -> Result<(), FederatedError> {
        let started = Instant::now();
        self.take_waiting_events();
        while self.workers.len() < count {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(FederatedError::NotEnoughWorkers {
                    connected: self.workers.len(),
                    needed: count,
                    waited: started.elapsed(),
                });
            }
            self.next_event(left);
        }
        Ok(())
    }

    /// Runs one round: waits for `min_workers`, sends the global weights to the workers whose
    /// turn it is (all of them with `fraction` 1.0), collects their weights until every one is
    /// in or the deadline passes, and aggregates.
    pub fn run_round(&mut self) -> Result<RoundReport, FederatedError> {
        let started = Instant::now();
        self.wait_for_workers(self.config.min_workers, self.config.join_timeout)?;
        self.round += 1;
        let joining = started.elapsed();
        let sent_at = Instant::now();
        let deadline = sent_at + self.config.round_deadline;

        let mut asked = Vec::new();
        for peer in self.take_turns() {
            match self.send_weights(peer) {
                Ok(()) => {
                    if let Some(slot) = self.workers.get_mut(&peer) {
                        slot.owed += 1;
                        slot.fresh = None;
                        asked.push((peer, slot.name.clone()));
                    }
                }
                Err(e) => {
                    // Part of a set may have gone: the worker's count of what it received
                    // would no longer match ours. It can connect again and start afresh.
                    log::warn!(
                        "round {}: could not send the weights to worker {peer}: {e}; disconnected",
                        self.round
                    );
                    self.node.disconnect(peer);
                    self.workers.remove(&peer);
                }
            }
        }

        loop {
            let waiting = asked
                .iter()
                .any(|(p, _)| self.workers.get(p).is_some_and(|s| s.fresh.is_none()));
            let left = deadline.saturating_duration_since(Instant::now());
            if !waiting || left.is_zero() {
                break;
            }
            self.next_event(left);
        }

        let (mut contributors, mut left_out, mut updates) = (Vec::new(), Vec::new(), Vec::new());
        for (peer, name) in asked {
            match self.workers.get_mut(&peer).and_then(|s| s.fresh.take()) {
                Some((values, samples)) => {
                    contributors.push(Contribution {
                        peer,
                        name,
                        samples,
                    });
                    updates.push((values, samples));
                }
                None => left_out.push(Contribution {
                    peer,
                    name,
                    samples: 0,
                }),
            }
        }
        for worker in &left_out {
            log::info!(
                "round {}: worker {} ({}) left out: no weights by the deadline",
                self.round,
                worker.name,
                worker.peer
            );
        }
        let aggregated = !updates.is_empty() && updates.len() >= self.config.min_workers;
        if aggregated {
            let mut network = self.node.network();
            let models: Vec<&[Vec<f32>]> = updates.iter().map(|(v, _)| &v[..]).collect();
            if let Some(chosen) = self.config.aggregator.pick(&models) {
                log::debug!(
                    "round {}: {} picked {}'s weights",
                    self.round,
                    self.config.aggregator.name(),
                    contributors[chosen].name
                );
                for (layer, values) in updates[chosen].0.iter().enumerate() {
                    network.write_layer_params(layer, 0, values)?;
                }
            } else {
                for layer in 0..self.shapes.len() {
                    let of_layer: Vec<(&[f32], u32)> = updates
                        .iter()
                        .map(|(values, samples)| (&values[layer][..], *samples))
                        .collect();
                    if let Some(combined) = self.config.aggregator.combine(&of_layer) {
                        network.write_layer_params(layer, 0, &combined)?;
                    }
                }
            }
        }
        Ok(RoundReport {
            round: self.round,
            contributors,
            left_out,
            aggregated,
            joining,
            duration: sent_at.elapsed(),
        })
    }

    /// The workers asked this round: `fraction` of those connected, at least `min_workers`,
    /// starting where the last round's turn ended. Connection ids grow as workers join, so
    /// the map's order is the order of joining.
    fn take_turns(&mut self) -> Vec<PeerId> {
        let peers: Vec<PeerId> = self.workers.keys().copied().collect();
        let wanted = (self.config.fraction.clamp(0.0, 1.0) * peers.len() as f64).ceil() as usize;
        let count = wanted.max(self.config.min_workers).min(peers.len());
        if count == peers.len() {
            return peers;
        }
        let start = self.next_turn % peers.len();
        self.next_turn = start + count;
        peers
            .iter()
            .cycle()
            .skip(start)
            .take(count)
            .copied()
            .collect()
    }

    /// Closes every connection (the workers see the coordinator leave) and stops the node.
    pub fn shutdown(&self) {
        self.node.shutdown();
    }

    fn send_weights(&self, peer: PeerId) -> Result<(), FederatedError> {
        for layer in 0..self.shapes.len() {
            self.node
                .send_weight_sync(peer, layer as u16, SyncMode::Replace)?;
        }
        Ok(())
    }

    /// Handles every event already waiting.
    fn take_waiting_events(&mut self) {
        while self.next_event(Duration::ZERO) {}
    }

    /// Waits at most `timeout` for one event and handles it; false if none came.
    fn next_event(&mut self, timeout: Duration) -> bool {
        let Some(event) = self.events.recv_timeout(timeout) else {
            return false;
        };
        match event {
            NodeEvent::PeerConnected { peer, info } => {
                let sizes: Vec<usize> = info.layer_sizes.iter().map(|&s| s as usize).collect();
                if sizes != self.node.network().layer_sizes() {
                    log::warn!(
                        "worker {:?} ({peer}) has layers {sizes:?}, the model {:?}: disconnected",
                        info.name,
                        self.node.network().layer_sizes()
                    );
                    self.node.disconnect(peer);
                } else {
                    log::info!("worker {:?} joined as {peer}", info.name);
                    self.workers.insert(
                        peer,
                        Slot {
                            name: info.name.clone(),
                            owed: 0,
                            incoming: self
                                .shapes
                                .iter()
                                .map(|&(r, c)| vec![0.0; r * c + r])
                                .collect(),
                            received: 0,
                            samples: 0,
                            fresh: None,
                        },
                    );
                }
            }
            NodeEvent::PeerDisconnected { peer, cause } => {
                if let Some(slot) = self.workers.remove(&peer) {
                    log::info!("worker {:?} ({peer}) left: {cause}", slot.name);
                }
            }
            NodeEvent::Message(message) => self.take_weights(&message),
            NodeEvent::Refused { peer, reason, .. } => {
                log::warn!("worker {peer} refused the weights: {reason}");
            }
        }
        true
    }

    /// Copies one WeightSync frame into its worker's set in progress; a full set answers the
    /// round if it is the last one owed. A frame that does not fit the model disconnects the
    /// worker (its later frames could not be told apart from the next set's).
    fn take_weights(&mut self, message: &NetworkMessage) {
        let peer = message.peer();
        let Some(slot) = self.workers.get_mut(&peer) else {
            return;
        };
        let view = message.message();
        let Message::WeightSync(WeightSync {
            layer_id,
            rows,
            cols,
            offset,
            sample_count,
            values,
            ..
        }) = &view
        else {
            log::warn!(
                "worker {:?} sent {:?}, not weights: ignored",
                slot.name,
                view.msg_type()
            );
            return;
        };
        let (layer, offset) = (*layer_id as usize, *offset as usize);
        let fits = self.shapes.get(layer) == Some(&(*rows as usize, *cols as usize))
            && offset + values.len() <= slot.incoming[layer].len();
        if !fits {
            log::warn!(
                "worker {:?} sent weights for layer {layer} ({rows}x{cols}, {} values at {offset}) that do not fit the model: disconnected",
                slot.name,
                values.len()
            );
            self.node.disconnect(peer);
            self.workers.remove(&peer);
            return;
        }
        slot.incoming[layer][offset..offset + values.len()].copy_from_slice(values);
        slot.received += values.len();
        slot.samples = *sample_count;
        let total: usize = slot.incoming.iter().map(Vec::len).sum();
        if slot.received < total {
            return;
        }
        slot.received = 0;
        slot.owed = slot.owed.saturating_sub(1);
        let finite = slot.incoming.iter().flatten().all(|v| v.is_finite());
        if slot.owed == 0 && finite {
            slot.fresh = Some((slot.incoming.clone(), slot.samples));
        } else if !finite {
            log::warn!(
                "worker {:?} sent non-finite weights: left out of round {}",
                slot.name,
                self.round
            );
        }
    }
}
