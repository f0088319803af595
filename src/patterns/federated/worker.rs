//! A worker: receives the global weights, trains on its own data, sends its weights back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::proximal::Proximal;
use super::FederatedError;
use crate::net::NetError;
use crate::nn::{one_hot, Adam, Loss, NeuralNetwork};
use crate::node::{
    DistributedNetwork, NodeConfig, NodeError, NodeEvent, NodeReceiver, PeerId, SyncMode,
};
use crate::wire::MsgType;

/// Garbage a worker sends instead of its trained weights: the attack robust aggregators are
/// for, to test and demonstrate them.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Poison {
    /// Every trained parameter multiplied by this factor.
    Scale(f32),
    /// Every parameter replaced by a value drawn evenly from `-amplitude..amplitude`.
    Random {
        /// The largest magnitude.
        amplitude: f32,
    },
}

/// How a worker trains each round.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Local epochs over the worker's data per round.
    pub epochs: usize,
    /// Samples per gradient step.
    pub batch_size: usize,
    /// Adam's step size (the optimizer's moments carry over from round to round).
    pub learning_rate: f32,
    /// FedProx's `mu`: the local loss gets `mu / 2 * |w - w_global|^2`, keeping the worker
    /// near the round's global weights (for label-skewed data; 0.01 to 1 are usual). 0 is
    /// plain local training.
    pub proximal_mu: f32,
    /// Send garbage instead of the trained weights.
    pub poison: Option<Poison>,
    /// How long [`Worker::connect`] keeps trying to reach the coordinator.
    pub connect_timeout: Duration,
    /// The node's settings. The default closes the connection as soon as the coordinator's
    /// end of stream arrives (`linger` zero), so a worker whose coordinator died stops at once.
    pub node: NodeConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            epochs: 1,
            batch_size: 16,
            learning_rate: 0.01,
            proximal_mu: 0.0,
            poison: None,
            connect_timeout: Duration::from_secs(10),
            node: NodeConfig {
                engine: crate::net::EngineConfig {
                    linger: Duration::ZERO,
                    ..NodeConfig::default().engine
                },
                ..NodeConfig::default()
            },
        }
    }
}

/// What a worker did in one round.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRound {
    /// Rounds this worker has taken part in, this one included.
    pub round: usize,
    /// The mean training loss of the last local epoch.
    pub loss: f32,
    /// The local training's time.
    pub training: Duration,
}

/// A federated worker: a node connected to the coordinator, with its own data.
pub struct Worker {
    node: DistributedNetwork<NeuralNetwork>,
    events: NodeReceiver,
    coordinator: PeerId,
    inputs: Vec<f32>,
    targets: Vec<f32>,
    optimizer: Proximal<Adam>,
    config: WorkerConfig,
    /// Parameters in a full set of weights, and how many of the set in progress are in.
    total: usize,
    received: usize,
    rounds: usize,
    rng: u64,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.node.name())
            .field("rounds", &self.rounds)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Connects worker `name` to the coordinator at `addr`, retrying for
    /// `config.connect_timeout`. `network` must have the coordinator's layer sizes (its
    /// weights are replaced every round; its seed drives the shuffling). `inputs` are the
    /// worker's samples row-major, `labels` their classes.
    pub fn connect(
        name: &str,
        addr: SocketAddr,
        network: NeuralNetwork,
        inputs: Vec<f32>,
        labels: &[usize],
        config: WorkerConfig,
    ) -> Result<Worker, FederatedError> {
        let targets = one_hot(labels, network.output_size())?;
        // Refuses data of the wrong width before any round.
        let samples = network.sample_count(&inputs, &targets)?;
        let total = (0..network.layer_count())
            .map(|l| network.layer_params(l).len())
            .sum();
        let node_config = NodeConfig {
            local_samples: samples as u32,
            ..config.node.clone()
        };
        let (node, events) =
            DistributedNetwork::with_config(name, "127.0.0.1", 0, network, node_config)?;
        let host = addr.ip().to_string();
        let started = Instant::now();
        let coordinator = loop {
            match node.connect_to(&host, addr.port()) {
                Ok(peer) => break peer,
                Err(last) if started.elapsed() >= config.connect_timeout => {
                    return Err(FederatedError::NoCoordinator {
                        addr: addr.to_string(),
                        waited: started.elapsed(),
                        last,
                    })
                }
                Err(e) => {
                    log::debug!("{name}: coordinator {addr} not there yet: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        Ok(Worker {
            node,
            events,
            coordinator,
            inputs,
            targets,
            optimizer: Proximal::new(Adam::new(config.learning_rate), config.proximal_mu),
            rng: 0x2545_F491_4F6C_DD1D ^ samples as u64,
            config,
            total,
            received: 0,
            rounds: 0,
        })
    }

    /// The node underneath.
    pub fn node(&self) -> &DistributedNetwork<NeuralNetwork> {
        &self.node
    }

    /// Waits for the coordinator's next full set of weights, trains on them and sends the
    /// result back. `None` once the coordinator has gone.
    pub fn next_round(&mut self) -> Result<Option<WorkerRound>, FederatedError> {
        loop {
            let Some(event) = self.events.next() else {
                return Ok(None);
            };
            match event {
                NodeEvent::PeerDisconnected { peer, cause } if peer == self.coordinator => {
                    log::info!("{}: the coordinator left: {cause}", self.node.name());
                    return Ok(None);
                }
                NodeEvent::Message(message)
                    if message.peer() == self.coordinator
                        && message.msg_type() == MsgType::WeightSync =>
                {
                    if let crate::node::HandleOutcome::WeightsUpdated { count, .. } =
                        self.node.handle_message(&message)?
                    {
                        self.received += count;
                    }
                    if self.received >= self.total {
                        self.received = 0;
                        return self.train_and_answer();
                    }
                }
                NodeEvent::Message(message) => log::warn!(
                    "{}: ignoring {:?} from {}",
                    self.node.name(),
                    message.msg_type(),
                    message.peer()
                ),
                _ => {}
            }
        }
    }

    /// Takes part in rounds until the coordinator leaves; returns how many.
    pub fn run(&mut self) -> Result<usize, FederatedError> {
        while self.next_round()?.is_some() {}
        Ok(self.rounds)
    }

    /// Trains on the weights just received and sends the result; `None` if the coordinator
    /// went away meanwhile.
    fn train_and_answer(&mut self) -> Result<Option<WorkerRound>, FederatedError> {
        let started = Instant::now();
        let mut loss = f32::NAN;
        {
            let mut network = self.node.network();
            self.optimizer.anchor_at(&network);
            for _ in 0..self.config.epochs {
                loss = network.train_epoch(
                    &self.inputs,
                    &self.targets,
                    self.config.batch_size,
                    Loss::CrossEntropy,
                    true,
                    &mut self.optimizer,
                )?;
            }
            if let Some(poison) = self.config.poison {
                for layer in 0..network.layer_count() {
                    let mut params = network.layer_params(layer).to_vec();
                    for p in &mut params {
                        *p = match poison {
                            Poison::Scale(factor) => *p * factor,
                            Poison::Random { amplitude } => amplitude * next_uniform(&mut self.rng),
                        };
                    }
                    network.write_layer_params(layer, 0, &params)?;
                }
            }
        }
        let training = started.elapsed();
        let layers = self.node.network().layer_count();
        for layer in 0..layers {
            match self
                .node
                .send_weight_sync(self.coordinator, layer as u16, SyncMode::Replace)
            {
                Ok(()) => {}
                Err(NodeError::Net(
                    NetError::UnknownConnection(_) | NetError::Closed(_) | NetError::Shutdown,
                )) => {
                    log::info!(
                        "{}: the coordinator left while this worker trained",
                        self.node.name()
                    );
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.rounds += 1;
        Ok(Some(WorkerRound {
            round: self.rounds,
            loss,
            training,
        }))
    }
}

/// A value in `-1..1` from a xorshift64 state.
fn next_uniform(state: &mut u64) -> f32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    ((*state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}
