//! The driver: holds the data, connects to every stage, runs steps on a schedule.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::schedule::{Action, Schedule, StepPlan};
use super::sync::{send_layers, LayerSet};
use super::PipelineError;
use crate::net::EngineConfig;
use crate::nn::{argmax, Loss, NeuralNetwork};
use crate::node::{DistributedNetwork, NodeConfig, NodeEvent, NodeReceiver, PeerId};
use crate::wire::Message;

/// How a driver runs its steps.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Micro-batches per step (at most the batch's rows are used). More shrink the bubble,
    /// `(S - 1) / (M + S - 1)` for `S` stages, at the cost of more, smaller messages.
    pub micro_batches: usize,
    /// The order of forward and backward passes.
    pub schedule: Schedule,
    /// How long a stage that owes answers may stay silent before the step fails with
    /// [`PipelineError::StageSilent`].
    pub stage_timeout: Duration,
    /// How long [`Driver::connect`] and [`Driver::resume`] keep trying to reach a stage.
    pub connect_timeout: Duration,
    /// The transport's settings. The default gives up a connection attempt after a second and
    /// closes a connection as soon as its stage's end of stream arrives.
    pub engine: EngineConfig,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            micro_batches: 4,
            schedule: Schedule::OneFOneB,
            stage_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            engine: EngineConfig {
                linger: Duration::ZERO,
                connect_timeout: Duration::from_secs(1),
                ..NodeConfig::default().engine
            },
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// Steps completed, this one included.
    pub step: u64,
    /// Samples in the step's batch.
    pub samples: usize,
    /// Micro-batches it was cut into.
    pub micro_batches: usize,
    /// The mean loss over the batch (softmax cross-entropy, before the update).
    pub loss: f32,
    /// The batch's samples whose largest output was at their target's largest value.
    pub correct: usize,
    /// From the first message sent to the last weights received.
    pub duration: Duration,
    /// The measured bubble: the share of the pipeline's time (first forward sent to last
    /// backward answered) in which a stage had no work, over all stages. A stage counts as
    /// busy while it owes the driver an answer, so transport time counts as busy.
    pub bubble: f64,
    /// The bubble of an ideal pipeline with equal stages, `(S - 1) / (M + S - 1)`.
    pub ideal_bubble: f64,
}

/// One stage as the driver sees it.
#[derive(Debug)]
struct Link {
    addr: SocketAddr,
    peer: Option<PeerId>,
    first: usize,
    /// Input and output width.
    widths: (usize, usize),
    /// `(rows, cols)` of each layer.
    shapes: Vec<(usize, usize)>,
    /// The weights it committed at the last completed step.
    committed: Vec<Vec<f32>>,
    incoming: LayerSet,
}

/// The driver of a pipeline: connected to every [`super::Stage`], in order.
pub struct Driver {
    node: DistributedNetwork<NeuralNetwork>,
    events: NodeReceiver,
    config: DriverConfig,
    links: Vec<Link>,
    steps: u64,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("stages", &self.links.len())
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

/// A step's micro-batches: row ranges of the batch, and the data waiting at each stage.
struct StepData<'a> {
    inputs: &'a [f32],
    targets: &'a [f32],
    rows: Vec<std::ops::Range<usize>>,
    /// `forward[s][m]`: micro-batch `m`'s input to stage `s` (stage 0 reads `inputs`).
    forward: Vec<Vec<Vec<f32>>>,
    /// `backward[s][m]`: its output gradient from stage `s + 1` (the last reads `targets`).
    backward: Vec<Vec<Vec<f32>>>,
}

impl Driver {
    /// Connects to the stages at `stages`, in pipeline order, and receives their weights.
    /// Fails if one cannot be reached within `config.connect_timeout`, or if the stages'
    /// widths do not chain.
    pub fn connect(stages: &[SocketAddr], config: DriverConfig) -> Result<Driver, PipelineError> {
        let node_config = NodeConfig {
            engine: config.engine.clone(),
            send_timeout: config.stage_timeout,
            ..NodeConfig::default()
        };
        // The driver computes nothing itself; its node hosts a placeholder network.
        let placeholder = NeuralNetwork::builder(&[1, 1]).build()?;
        let (node, events) =
            DistributedNetwork::with_config("driver", "127.0.0.1", 0, placeholder, node_config)?;
        let mut driver = Driver {
            node,
            events,
            config,
            links: Vec::with_capacity(stages.len()),
            steps: 0,
        };
        let mut first = 0;
        for (s, &addr) in stages.iter().enumerate() {
            let peer = driver.reach(s, addr)?;
            let sizes: Vec<usize> = driver
                .node
                .engine()
                .peer(peer)
                .and_then(|p| p.info)
                .map(|i| i.layer_sizes.iter().map(|&n| n as usize).collect())
                .unwrap_or_default();
            if sizes.len() < 2 {
                return Err(PipelineError::Mismatch {
                    stage: s,
                    reason: format!("{addr} announced layer sizes {sizes:?}"),
                });
            }
            if let Some(before) = driver.links.last() {
                if before.widths.1 != sizes[0] {
                    return Err(PipelineError::Mismatch {
                        stage: s,
                        reason: format!(
                            "{addr} takes {} inputs, stage {} gives {}",
                            sizes[0],
                            s - 1,
                            before.widths.1
                        ),
                    });
                }
            }
            let shapes: Vec<(usize, usize)> = sizes.windows(2).map(|w| (w[1], w[0])).collect();
            let lens: Vec<usize> = shapes.iter().map(|(r, c)| r * c + r).collect();
            driver.links.push(Link {
                addr,
                peer: Some(peer),
                first,
                widths: (sizes[0], sizes[sizes.len() - 1]),
                committed: lens.iter().map(|&n| vec![0.0; n]).collect(),
                incoming: LayerSet::new(first, &lens),
                shapes,
            });
            first += sizes.len() - 1;
        }
        let all: Vec<usize> = (0..driver.links.len()).collect();
        driver.await_weights(&all, true)?;
        Ok(driver)
    }

    /// Connects to stage `s`, retrying for `connect_timeout`.
    fn reach(&self, s: usize, addr: SocketAddr) -> Result<PeerId, PipelineError> {
        let started = Instant::now();
        let host = addr.ip().to_string();
        loop {
            match self.node.connect_to(&host, addr.port()) {
                Ok(peer) => return Ok(peer),
                Err(last) if started.elapsed() >= self.config.connect_timeout => {
                    return Err(PipelineError::NoStage {
                        stage: s,
                        addr,
                        waited: started.elapsed(),
                        last,
                    })
                }
                Err(e) => {
                    log::debug!("stage {s} at {addr} not there yet: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// The number of stages.
    pub fn stage_count(&self) -> usize {
        self.links.len()
    }

    /// Steps completed.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The node underneath (its metrics count the bytes on the wire).
    pub fn node(&self) -> &DistributedNetwork<NeuralNetwork> {
        &self.node
    }

    /// Writes the weights every stage committed at the last completed step into `network`
    /// (the whole network, its layers numbered as the stages number them).
    pub fn weights_into(&self, network: &mut NeuralNetwork) -> Result<(), PipelineError> {
        for link in &self.links {
            for (i, params) in link.committed.iter().enumerate() {
                network.write_layer_params(link.first + i, 0, params)?;
            }
        }
        Ok(())
    }

    /// One synchronous training step on a batch: `inputs` row-major (the first stage's
    /// width), `targets` one row per input (the last stage's width, e.g. one-hot).
    ///
    /// On an error naming a stage, the step is abandoned (no stage has its weights yet, or
    /// some have: [`Driver::resume`] sets every stage back to the last completed step).
    pub fn step(&mut self, inputs: &[f32], targets: &[f32]) -> Result<StepReport, PipelineError> {
        let (in_w, out_w) = (
            self.links[0].widths.0,
            self.links[self.links.len() - 1].widths.1,
        );
        if inputs.is_empty()
            || inputs.len() % in_w != 0
            || targets.len() != inputs.len() / in_w * out_w
        {
            return Err(PipelineError::Mismatch {
                stage: 0,
                reason: format!(
                    "a batch of {} input and {} target values is not whole rows of {in_w} and {out_w}",
                    inputs.len(),
                    targets.len()
                ),
            });
        }
        let samples = inputs.len() / in_w;
        let micro = self.config.micro_batches.clamp(1, samples);
        let stages = self.links.len();
        let rows = (0..micro)
            .map(|m| (m * samples / micro)..((m + 1) * samples / micro))
            .collect();
        let mut data = StepData {
            inputs,
            targets,
            rows,
            forward: vec![vec![Vec::new(); micro]; stages],
            backward: vec![vec![Vec::new(); micro]; stages],
        };
        let step = self.steps + 1;
        let mut plan = StepPlan::new(self.config.schedule, stages, micro);
        let started = Instant::now();
        let mut busy = vec![Duration::ZERO; stages];
        let mut busy_since: Vec<Option<Instant>> = vec![None; stages];
        let mut pipeline_time = None;
        let mut committed = vec![false; stages];
        let (mut loss, mut correct) = (0.0f64, 0usize);
        for link in &mut self.links {
            link.incoming.restart();
        }
        loop {
            for action in plan.next_actions() {
                let s = match action {
                    Action::Forward { stage, .. }
                    | Action::Backward { stage, .. }
                    | Action::Step { stage } => stage,
                };
                self.send_action(action, &data, step)?;
                if plan.owed(s) > 0 && busy_since[s].is_none() {
                    busy_since[s] = Some(Instant::now());
                }
            }
            if pipeline_time.is_none() && plan.backwards_done() {
                pipeline_time = Some(started.elapsed());
            }
            // A stage's weights travel on the bulk lane and may overtake its last answers on
            // the small one: the step ends when both are in.
            if committed.iter().all(|&c| c) && (0..stages).all(|s| plan.owed(s) == 0) {
                break;
            }
            let event = self.next_event(&plan, step)?;
            let (s, message) = match event {
                Some(pair) => pair,
                None => continue,
            };
            let view = message.message();
            match view {
                Message::ForwardData { data: out, .. } => {
                    let Some(m) = plan.forward_answered(s) else {
                        return Err(self.refused(s, step, "an answer to no forward pass"));
                    };
                    if s + 1 < stages {
                        data.forward[s + 1][m] = out.to_vec();
                    } else {
                        let r = data.rows[m].clone();
                        let t = &targets[r.start * out_w..r.end * out_w];
                        for (y, t) in out.chunks_exact(out_w).zip(t.chunks_exact(out_w)) {
                            loss += Loss::CrossEntropy.value(y, t) as f64;
                            correct += usize::from(argmax(y) == argmax(t));
                        }
                    }
                }
                Message::BackwardData { data: grad, .. } => {
                    let Some(m) = plan.backward_answered(s) else {
                        return Err(self.refused(s, step, "an answer to no backward pass"));
                    };
                    if s > 0 {
                        data.backward[s - 1][m] = grad.to_vec();
                    }
                }
                Message::WeightSync(sync) => match self.links[s].incoming.take(&sync) {
                    Ok(true) => committed[s] = true,
                    Ok(false) => {}
                    Err(reason) => return Err(self.refused(s, step, &reason)),
                },
                _ => {}
            }
            if plan.owed(s) == 0 {
                if let Some(since) = busy_since[s].take() {
                    busy[s] += since.elapsed();
                }
            }
        }
        for link in &mut self.links {
            std::mem::swap(&mut link.committed, &mut link.incoming.layers);
        }
        self.steps = step;
        let pipeline_time = pipeline_time.unwrap_or_else(|| started.elapsed());
        let busy_total: f64 = busy.iter().map(Duration::as_secs_f64).sum();
        let bubble =
            (1.0 - busy_total / (stages as f64 * pipeline_time.as_secs_f64()).max(1e-12)).max(0.0);
        Ok(StepReport {
            step,
            samples,
            micro_batches: micro,
            loss: (loss / samples as f64) as f32,
            correct,
            duration: started.elapsed(),
            bubble,
            ideal_bubble: (stages - 1) as f64 / (micro + stages - 1) as f64,
        })
    }

    /// Sends what the schedule says.
    fn send_action(
        &mut self,
        action: Action,
        data: &StepData<'_>,
        step: u64,
    ) -> Result<(), PipelineError> {
        let last = self.links.len() - 1;
        let (s, message) = match action {
            Action::Forward { stage, micro } => {
                let link = &self.links[stage];
                let values: &[f32] = if stage == 0 {
                    let r = data.rows[micro].clone();
                    &data.inputs[r.start * link.widths.0..r.end * link.widths.0]
                } else {
                    &data.forward[stage][micro]
                };
                (
                    stage,
                    Message::ForwardData {
                        layer_id: link.first as u16,
                        data: values.into(),
                    },
                )
            }
            Action::Backward { stage, micro } => {
                let link = &self.links[stage];
                let values: &[f32] = if stage == last {
                    let r = data.rows[micro].clone();
                    &data.targets[r.start * link.widths.1..r.end * link.widths.1]
                } else {
                    &data.backward[stage][micro]
                };
                (
                    stage,
                    Message::BackwardData {
                        layer_id: (link.first + link.shapes.len()) as u16,
                        data: values.into(),
                    },
                )
            }
            Action::Step { stage } => {
                let link = &self.links[stage];
                (
                    stage,
                    Message::BackwardData {
                        layer_id: (link.first + link.shapes.len()) as u16,
                        data: (&[][..]).into(),
                    },
                )
            }
        };
        let link = &self.links[s];
        let Some(peer) = link.peer else {
            return Err(self.lost(s, step, "not connected".into()));
        };
        let sent = self
            .node
            .engine()
            .send(peer, &message, self.config.stage_timeout);
        sent.map_err(|e| {
            // Part of a frame may have gone: drop the connection, and resume makes a new one.
            self.node.disconnect(peer);
            self.links[s].peer = None;
            self.lost(s, step, format!("send failed: {e}"))
        })
    }

    /// The next message from a stage, or `None` for an event that needs nothing; a stage
    /// lost, refusing, or silent is an error.
    fn next_event(
        &mut self,
        plan: &StepPlan,
        step: u64,
    ) -> Result<Option<(usize, crate::node::NetworkMessage)>, PipelineError> {
        let waited = Instant::now();
        let Some(event) = self.events.recv_timeout(self.config.stage_timeout) else {
            let s = (0..self.links.len())
                .find(|&s| plan.owed(s) > 0)
                .unwrap_or(self.links.len() - 1);
            return Err(PipelineError::StageSilent {
                stage: s,
                addr: self.links[s].addr,
                step,
                waited: waited.elapsed(),
            });
        };
        let stage_of = |peer| self.links.iter().position(|l| l.peer == Some(peer));
        match event {
            NodeEvent::Message(message) => Ok(stage_of(message.peer()).map(|s| (s, message))),
            NodeEvent::PeerDisconnected { peer, cause } => match stage_of(peer) {
                Some(s) => {
                    self.links[s].peer = None;
                    Err(self.lost(s, step, cause.to_string()))
                }
                None => Ok(None),
            },
            NodeEvent::Refused { peer, reason, .. } => match stage_of(peer) {
                Some(s) => Err(self.refused(s, step, &reason)),
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    fn lost(&self, s: usize, step: u64, cause: String) -> PipelineError {
        PipelineError::StageLost {
            stage: s,
            addr: self.links[s].addr,
            step,
            cause,
        }
    }

    fn refused(&self, s: usize, step: u64, reason: &str) -> PipelineError {
        PipelineError::Refused {
            stage: s,
            addr: self.links[s].addr,
            step,
            reason: reason.to_owned(),
        }
    }

    /// After a failed step: reconnects every stage that is not connected (retrying for
    /// `connect_timeout` each), then gives every stage the weights of the last completed
    /// step and waits until each has them. The failed step can then be run again.
    pub fn resume(&mut self) -> Result<(), PipelineError> {
        let mut returning = Vec::new();
        for s in 0..self.links.len() {
            if self.links[s].peer.is_none() {
                let peer = self.reach(s, self.links[s].addr)?;
                self.links[s].peer = Some(peer);
                returning.push(s);
            }
        }
        // A returning stage first reports the weights it started with.
        self.await_weights(&returning, false)?;
        for (s, link) in self.links.iter().enumerate() {
            let Some(peer) = link.peer else { continue };
            let layers: Vec<(&[f32], (usize, usize))> = link
                .committed
                .iter()
                .map(Vec::as_slice)
                .zip(link.shapes.iter().copied())
                .collect();
            send_layers(
                self.node.engine(),
                peer,
                link.first,
                &layers,
                self.steps as u32,
                self.config.stage_timeout,
            )
            .map_err(|e| self.lost(s, self.steps + 1, format!("send failed: {e}")))?;
        }
        // Each stage answers with the weights it now has: the committed ones.
        let all: Vec<usize> = (0..self.links.len()).collect();
        self.await_weights(&all, false)?;
        log::info!("pipeline resumed at step {}", self.steps);
        Ok(())
    }

    /// Waits until each stage in `stages` has sent a whole set of weights, which become its
    /// committed weights if `commit`; other messages from them (answers to an abandoned step)
    /// are dropped.
    fn await_weights(&mut self, stages: &[usize], commit: bool) -> Result<(), PipelineError> {
        let mut waiting: Vec<usize> = stages.to_vec();
        for &s in stages {
            self.links[s].incoming.restart();
        }
        let step = self.steps + 1;
        while let Some(&s) = waiting.first() {
            let started = Instant::now();
            let Some(event) = self.events.recv_timeout(self.config.stage_timeout) else {
                return Err(PipelineError::StageSilent {
                    stage: s,
                    addr: self.links[s].addr,
                    step,
                    waited: started.elapsed(),
                });
            };
            let Some(s) = self.links.iter().position(|l| Some(event.peer()) == l.peer) else {
                continue;
            };
            match event {
                NodeEvent::Message(message) => {
                    if let Message::WeightSync(sync) = message.message() {
                        match self.links[s].incoming.take(&sync) {
                            Ok(true) => {
                                let link = &mut self.links[s];
                                if commit {
                                    link.committed.clone_from(&link.incoming.layers);
                                }
                                waiting.retain(|&w| w != s);
                            }
                            Ok(false) => {}
                            Err(reason) => return Err(self.refused(s, step, &reason)),
                        }
                    }
                }
                NodeEvent::PeerDisconnected { cause, .. } => {
                    self.links[s].peer = None;
                    return Err(self.lost(s, step, cause.to_string()));
                }
                NodeEvent::Refused { reason, .. } => return Err(self.refused(s, step, &reason)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Closes every connection and stops the node.
    pub fn shutdown(&self) {
        self.node.shutdown();
    }
}
