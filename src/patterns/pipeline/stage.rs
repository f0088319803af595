//! A stage: some consecutive layers of the network, serving one driver at a time.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use super::sync::{send_layers, LayerSet};
use super::PipelineError;
use crate::net::NetError;
use crate::nn::{
    BackpropScratch, ForwardScratch, Gradients, Loss, NeuralNetwork, NnError, Optimizer,
    OutputGradient, Sgd,
};
use crate::node::{DistributedNetwork, NodeConfig, NodeEvent, NodeReceiver, PeerId};
use crate::wire::Message;

/// How a stage learns.
#[derive(Debug, Clone)]
pub struct StageConfig {
    /// SGD's step size (every stage of a pipeline should use the same).
    pub learning_rate: f32,
    /// SGD's momentum in `[0, 1)`; 0 is plain SGD. A restarted stage starts it from zero.
    pub momentum: f32,
    /// The node's settings. The default closes a connection as soon as the driver's end of
    /// stream arrives (`linger` zero), so a stage is ready for the next driver at once.
    pub node: NodeConfig,
}

impl Default for StageConfig {
    fn default() -> Self {
        StageConfig {
            learning_rate: 0.05,
            momentum: 0.9,
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

/// A pipeline stage: a node hosting weight layers `first..end` of a network, listening for a
/// [`super::Driver`].
pub struct Stage {
    node: DistributedNetwork<NeuralNetwork>,
    events: NodeReceiver,
    addr: SocketAddr,
    first: usize,
    /// Whether this stage ends the network (its output is the network's, the loss is here).
    last: bool,
    optimizer: Sgd,
    grads: Gradients,
    scratch: BackpropScratch,
    forward: ForwardScratch,
    /// The inputs of the micro-batches gone forward and not yet backward, oldest first.
    stash: VecDeque<Vec<f32>>,
    /// Samples whose gradients are in `grads`.
    samples: usize,
    steps: u32,
    restore: LayerSet,
    driver: Option<PeerId>,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("addr", &self.addr)
            .field("first", &self.first)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl Stage {
    /// A stage holding weight layers `layers` of `network` (its parameters and activations;
    /// build the same network with the same seed in every stage), listening on `listen`
    /// (`host:port`, port 0 for any).
    pub fn bind(
        listen: &str,
        network: &NeuralNetwork,
        layers: Range<usize>,
        config: StageConfig,
    ) -> Result<Stage, PipelineError> {
        let first = layers.start;
        let last = layers.end == network.layer_count();
        let part = network.sub_network(layers.clone())?;
        let grads = Gradients::zeros_like(&part);
        let lens: Vec<usize> = (0..part.layer_count())
            .map(|l| part.layer_params(l).len())
            .collect();
        let (host, port) = match listen.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().unwrap_or(0)),
            None => (listen, 0),
        };
        let name = format!("stage-{}-{}", layers.start, layers.end);
        let (node, events) =
            DistributedNetwork::with_config(&name, host, port, part, config.node.clone())?;
        let addr = node.start_server()?;
        Ok(Stage {
            node,
            events,
            addr,
            first,
            last,
            optimizer: Sgd::new(config.learning_rate, config.momentum),
            grads,
            scratch: BackpropScratch::new(),
            forward: ForwardScratch::new(),
            stash: VecDeque::new(),
            samples: 0,
            steps: 0,
            restore: LayerSet::new(first, &lens),
            driver: None,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node underneath (its hosted network is the stage's layers, numbered from 0).
    pub fn node(&self) -> &DistributedNetwork<NeuralNetwork> {
        &self.node
    }

    /// Steps this stage has applied (or was given with the driver's weights).
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// Serves drivers, one after another, until the node shuts down.
    pub fn run(&mut self) -> Result<(), PipelineError> {
        while self.serve_driver()? {}
        Ok(())
    }

    /// Serves the next driver until it disconnects: true then, false once the node has shut
    /// down. A message that does not fit is refused to the driver (it sees why) and the
    /// stage carries on.
    pub fn serve_driver(&mut self) -> Result<bool, PipelineError> {
        loop {
            let Some(event) = self.events.next() else {
                return Ok(false);
            };
            match event {
                NodeEvent::PeerConnected { peer, .. } => {
                    if let Some(old) = self.driver.replace(peer) {
                        log::warn!("{}: a new driver replaces {old}", self.node.name());
                        self.node.disconnect(old);
                    }
                    self.drop_step();
                    match self.send_weights(peer) {
                        // A driver that left at once (it saw the stages do not chain) is
                        // gone before its weights: its disconnection comes next.
                        Err(NetError::UnknownConnection(_) | NetError::Closed(_)) => {
                            log::debug!(
                                "{}: the driver {peer} left before its weights",
                                self.node.name()
                            );
                        }
                        result => result.map_err(|e| PipelineError::Node(e.into()))?,
                    }
                }
                NodeEvent::PeerDisconnected { peer, cause } if Some(peer) == self.driver => {
                    log::info!("{}: the driver left: {cause}", self.node.name());
                    self.driver = None;
                    self.drop_step();
                    return Ok(true);
                }
                NodeEvent::Message(message) if Some(message.peer()) == self.driver => {
                    let peer = message.peer();
                    if let Err(reason) = self.handle(peer, &message.message()) {
                        log::warn!("{}: refusing: {reason}", self.node.name());
                        if let Err(e) = self.node.engine().refuse(peer, message.sequence(), &reason)
                        {
                            log::debug!("could not tell {peer} of the refusal: {e}");
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Does what one message of the driver asks; `Err` is the reason to refuse it.
    fn handle(&mut self, peer: PeerId, message: &Message<'_>) -> Result<(), String> {
        let (end, widths) = {
            let net = self.node.network();
            (
                self.first + net.layer_count(),
                (net.input_size(), net.output_size()),
            )
        };
        match message {
            Message::ForwardData { layer_id, data } if *layer_id as usize == self.first => {
                let rows = rows_of(data, widths.0, "input")?;
                let mut out = Vec::with_capacity(rows * widths.1);
                {
                    let net = self.node.network();
                    for x in data.chunks_exact(widths.0) {
                        out.extend_from_slice(
                            net.forward_into(x, &mut self.forward)
                                .map_err(|e| e.to_string())?,
                        );
                    }
                }
                self.stash.push_back(data.to_vec());
                self.send(
                    peer,
                    Message::ForwardData {
                        layer_id: end as u16,
                        data: Cow::Owned(out),
                    },
                )
            }
            Message::BackwardData { layer_id, data }
                if *layer_id as usize == end && data.is_empty() =>
            {
                self.apply_step().map_err(|e| e.to_string())?;
                self.send_weights(peer).map_err(|e| e.to_string())
            }
            Message::BackwardData { layer_id, data } if *layer_id as usize == end => {
                let rows = rows_of(data, widths.1, "gradient")?;
                let Some(inputs) = self.stash.pop_front() else {
                    return Err("a backward pass with no forward pass waiting for it".into());
                };
                if inputs.len() != rows * widths.0 {
                    self.stash.push_front(inputs);
                    return Err(format!(
                        "{rows} rows of output gradient for a micro-batch of {} rows",
                        self.stash[0].len() / widths.0
                    ));
                }
                let mut back = Vec::with_capacity(inputs.len());
                {
                    let net = self.node.network();
                    for (x, g) in inputs
                        .chunks_exact(widths.0)
                        .zip(data.chunks_exact(widths.1))
                    {
                        let start = if self.last {
                            OutputGradient::Target {
                                loss: Loss::CrossEntropy,
                                target: g,
                            }
                        } else {
                            OutputGradient::Output(g)
                        };
                        net.backward_accumulate_from(x, start, &mut self.scratch, &mut self.grads)
                            .map_err(|e| e.to_string())?;
                        back.extend_from_slice(self.scratch.input_gradient());
                    }
                }
                self.samples += rows;
                self.send(
                    peer,
                    Message::BackwardData {
                        layer_id: self.first as u16,
                        data: Cow::Owned(back),
                    },
                )
            }
            Message::WeightSync(sync) => {
                if self.restore.take(sync)? {
                    self.drop_step();
                    let mut net = self.node.network();
                    for (l, params) in self.restore.layers.iter().enumerate() {
                        net.write_layer_params(l, 0, params)
                            .map_err(|e| e.to_string())?;
                    }
                    drop(net);
                    self.steps = self.restore.step;
                    self.optimizer =
                        Sgd::new(self.optimizer.learning_rate, self.optimizer.momentum);
                    self.send_weights(peer).map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            other => Err(format!(
                "{:?} for layer {:?}: this stage holds layers {}..{end}",
                other.msg_type(),
                layer_of(other),
                self.first
            )),
        }
    }

    /// Applies the mean of the gradients gathered since the last step.
    fn apply_step(&mut self) -> Result<(), NnError> {
        if self.samples > 0 {
            self.grads.scale(1.0 / self.samples as f32);
            let mut net = self.node.network();
            self.optimizer.step(&mut net, &self.grads)?;
        }
        self.steps += 1;
        self.grads.zero();
        self.samples = 0;
        self.stash.clear();
        Ok(())
    }

    /// Forgets the step in progress: its micro-batches and gradients.
    fn drop_step(&mut self) {
        self.stash.clear();
        self.grads.zero();
        self.samples = 0;
        self.restore.restart();
    }

    fn send(&self, peer: PeerId, message: Message<'_>) -> Result<(), String> {
        self.node
            .engine()
            .send(peer, &message, Duration::from_secs(10))
            .map_err(|e| e.to_string())
    }

    /// Reports this stage's layers to the driver.
    fn send_weights(&self, peer: PeerId) -> Result<(), NetError> {
        let net = self.node.network();
        let layers: Vec<(&[f32], (usize, usize))> = (0..net.layer_count())
            .map(|l| (net.layer_params(l), net.layer_shape(l)))
            .collect();
        send_layers(
            self.node.engine(),
            peer,
            self.first,
            &layers,
            self.steps,
            Duration::from_secs(10),
        )
    }
}

/// How many rows of `width` values `data` holds.
fn rows_of(data: &[f32], width: usize, what: &str) -> Result<usize, String> {
    if data.is_empty() || data.len() % width != 0 {
        return Err(format!(
            "{} {what} values are not whole rows of {width}",
            data.len()
        ));
    }
    Ok(data.len() / width)
}

fn layer_of(message: &Message<'_>) -> Option<u16> {
    match message {
        Message::ForwardData { layer_id, .. }
        | Message::BackwardData { layer_id, .. }
        | Message::HebbianData { layer_id, .. } => Some(*layer_id),
        Message::WeightSync(sync) => Some(sync.layer_id),
        _ => None,
    }
}
