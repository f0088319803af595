//! Ensembles: one input to N member nodes, their outputs combined into one answer.
//!
//! An [`Ensemble`] is a client node connected to every member (any node that answers
//! ForwardData on its input layer with ForwardData on its output layer, such as `nnp serve`).
//! [`Ensemble::predict`] sends the same rows to every member it can ask, collects the answers
//! until all are in or the deadline passes, and combines those it has ([`Combine`]): the mean
//! of the members' probabilities, or a majority vote. A member that misses the deadline, has
//! disconnected, or refuses the request is left out of that answer and named in it
//! ([`LeftOut`]); the answer never waits past the deadline for it.
//!
//! No request id travels on the wire: a member answers the ForwardData it is sent in order on
//! its one connection, so the ensemble counts the requests each member still owes and takes an
//! answer as fresh only when it settles the latest request; the late answer to an earlier
//! request is dropped. A member that still owes [`EnsembleConfig::max_in_flight`] answers is
//! not sent more (it is left out as [`LeftOut::Behind`]) until it catches up. A member that
//! disconnected is tried again every [`EnsembleConfig::reconnect_every`].
//!
//! ```no_run
//! use nnp::patterns::ensemble::{Combine, Ensemble, EnsembleConfig};
//!
//! let members = ["127.0.0.1:7001".parse()?, "127.0.0.1:7002".parse()?];
//! let config = EnsembleConfig { combine: Combine::MajorityVote, ..EnsembleConfig::default() };
//! let mut ensemble = Ensemble::connect(&members, config)?;
//! let answer = ensemble.predict(&[0.0; 64])?;
//! println!("class {} from {} members", answer.predictions[0], answer.answered().len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::net::{EngineConfig, NetError};
use crate::nn::NeuralNetwork;
use crate::node::{DistributedNetwork, NodeConfig, NodeError, NodeEvent, NodeReceiver, PeerId};
use crate::wire::Message;

/// How the members' outputs are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Per row, the mean of the members' outputs (their class probabilities); the class is the
    /// largest mean.
    MeanProbability,
    /// Per row, each member votes for its largest output; the class with the most votes wins,
    /// a tie going to the larger summed output, then to the smaller class.
    MajorityVote,
}

impl Combine {
    /// The name the command line uses: `mean` or `vote`.
    pub fn name(self) -> &'static str {
        match self {
            Combine::MeanProbability => "mean",
            Combine::MajorityVote => "vote",
        }
    }
}

impl std::str::FromStr for Combine {
    type Err = String;

    fn from_str(s: &str) -> Result<Combine, String> {
        match s {
            "mean" => Ok(Combine::MeanProbability),
            "vote" => Ok(Combine::MajorityVote),
            _ => Err(format!(
                "{s:?}: expected mean (of probabilities) or vote (majority)"
            )),
        }
    }
}

/// How an ensemble asks its members.
#[derive(Debug, Clone)]
pub struct EnsembleConfig {
    /// How long a request waits for the members' answers; a member whose answer is not in by
    /// then is left out of that answer.
    pub deadline: Duration,
    /// How the answers are combined.
    pub combine: Combine,
    /// Requests a member may owe before it is no longer sent new ones (at least 1).
    pub max_in_flight: u32,
    /// How often a disconnected member is tried again (each try at most `connect_timeout`,
    /// taken at the start of a request).
    pub reconnect_every: Duration,
    /// The transport's settings. The default gives up connecting after a second and closes a
    /// connection as soon as its member's end of stream arrives: a member that stopped can
    /// answer nothing, and a request should not wait for it.
    pub engine: EngineConfig,
}

impl Default for EnsembleConfig {
    fn default() -> Self {
        EnsembleConfig {
            deadline: Duration::from_millis(500),
            combine: Combine::MeanProbability,
            max_in_flight: 1,
            reconnect_every: Duration::from_secs(1),
            engine: EngineConfig {
                linger: Duration::ZERO,
                connect_timeout: Duration::from_secs(1),
                ..NodeConfig::default().engine
            },
        }
    }
}

/// Why a member is not in an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeftOut {
    /// Asked, but its answer was not in by the deadline.
    Deadline,
    /// Not connected (it disconnected earlier, or could not be reached).
    NotConnected,
    /// It disconnected while the request waited.
    Disconnected,
    /// It refused the request, in its words.
    Refused(String),
    /// It still owed [`EnsembleConfig::max_in_flight`] earlier answers, so was not asked.
    Behind,
    /// Its answer did not fit the request (the number of values, or non-finite values).
    BadAnswer(String),
    /// Sending the request failed.
    SendFailed(String),
}

impl std::fmt::Display for LeftOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeftOut::Deadline => write!(f, "missed the deadline"),
            LeftOut::NotConnected => write!(f, "not connected"),
            LeftOut::Disconnected => write!(f, "disconnected"),
            LeftOut::Refused(reason) => write!(f, "refused: {reason}"),
            LeftOut::Behind => write!(f, "still owes earlier answers"),
            LeftOut::BadAnswer(why) => write!(f, "bad answer: {why}"),
            LeftOut::SendFailed(why) => write!(f, "could not be sent the request: {why}"),
        }
    }
}

/// The combined answer to one request.
#[derive(Debug, Clone)]
pub struct EnsembleAnswer {
    /// Rows in the request.
    pub rows: usize,
    /// Outputs per row.
    pub classes: usize,
    /// `rows x classes`: the mean outputs ([`Combine::MeanProbability`]) or the share of the
    /// answering members' votes per class ([`Combine::MajorityVote`]).
    pub scores: Vec<f32>,
    /// The class of each row.
    pub predictions: Vec<usize>,
    /// Per member, in the order given to [`Ensemble::connect`]: its own outputs
    /// (`rows x classes`), or why it is not in this answer.
    pub members: Vec<Result<Vec<f32>, LeftOut>>,
    /// From sending the request to the combined answer.
    pub elapsed: Duration,
}

impl EnsembleAnswer {
    /// The members (indices into [`Ensemble::connect`]'s list) whose outputs were combined.
    pub fn answered(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].is_ok())
            .collect()
    }

    /// The members left out of this answer, and why.
    pub fn left_out(&self) -> Vec<(usize, &LeftOut)> {
        self.members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.as_ref().err().map(|why| (i, why)))
            .collect()
    }
}

/// Why an ensemble operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum EnsembleError {
    /// The ensemble's own node failed.
    Node(NodeError),
    /// No member could be reached at the start.
    NoMembers {
        /// Each member's address and why it could not be reached.
        failures: Vec<(SocketAddr, NodeError)>,
    },
    /// The request is empty or not a whole number of rows.
    Input {
        /// Values given.
        values: usize,
        /// Rows given.
        rows: usize,
    },
    /// No member answered in time.
    NoAnswer {
        /// Why each member is missing.
        left_out: Vec<(SocketAddr, LeftOut)>,
    },
}

impl std::fmt::Display for EnsembleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnsembleError::Node(e) => write!(f, "{e}"),
            EnsembleError::NoMembers { failures } => {
                write!(f, "no member could be reached:")?;
                for (addr, e) in failures {
                    write!(f, " {addr}: {e};")?;
                }
                Ok(())
            }
            EnsembleError::Input { values, rows } => write!(
                f,
                "{values} values are not {rows} rows of equal, non-zero width"
            ),
            EnsembleError::NoAnswer { left_out } => {
                write!(f, "no member answered:")?;
                for (addr, why) in left_out {
                    write!(f, " {addr} {why};")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for EnsembleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EnsembleError::Node(e) => Some(e),
            _ => None,
        }
    }
}

impl From<NodeError> for EnsembleError {
    fn from(e: NodeError) -> Self {
        EnsembleError::Node(e)
    }
}

/// One member, as the ensemble sees it.
struct Member {
    addr: SocketAddr,
    peer: Option<PeerId>,
    /// Requests sent on the current connection and not yet answered (or refused).
    owed: u32,
    /// When it was last tried, while it is not connected.
    last_try: Option<Instant>,
    /// Its part in the request being collected: `None` while awaited (or not asked).
    outcome: Option<Result<Vec<f32>, LeftOut>>,
    /// Asked in the request being collected.
    asked: bool,
}

/// A client of N member nodes that answers with their combined outputs.
pub struct Ensemble {
    node: DistributedNetwork<NeuralNetwork>,
    events: NodeReceiver,
    config: EnsembleConfig,
    members: Vec<Member>,
}

impl std::fmt::Debug for Ensemble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ensemble")
            .field("members", &self.members.len())
            .field("connected", &self.connected())
            .finish_non_exhaustive()
    }
}

impl Ensemble {
    /// Connects to every member. A member that cannot be reached now is tried again later;
    /// fails only if none can be.
    pub fn connect(
        members: &[SocketAddr],
        config: EnsembleConfig,
    ) -> Result<Ensemble, EnsembleError> {
        let node_config = NodeConfig {
            engine: config.engine.clone(),
            // A member whose queue stays full is as late as one that does not answer.
            send_timeout: config.deadline,
            ..NodeConfig::default()
        };
        // The client computes nothing itself; its node hosts a placeholder network.
        let placeholder = NeuralNetwork::builder(&[1, 1]).build().map_err(|e| {
            NodeError::Model(crate::node::ModelError::Rejected {
                layer: 0,
                reason: e.to_string(),
            })
        })?;
        let (node, events) =
            DistributedNetwork::with_config("ensemble", "127.0.0.1", 0, placeholder, node_config)?;
        let mut ensemble = Ensemble {
            node,
            events,
            config,
            members: members
                .iter()
                .map(|&addr| Member {
                    addr,
                    peer: None,
                    owed: 0,
                    last_try: None,
                    outcome: None,
                    asked: false,
                })
                .collect(),
        };
        let mut failures = Vec::new();
        for i in 0..ensemble.members.len() {
            if let Err(e) = ensemble.try_connect(i) {
                failures.push((ensemble.members[i].addr, e));
            }
        }
        if ensemble.connected() == 0 {
            return Err(EnsembleError::NoMembers { failures });
        }
        Ok(ensemble)
    }

    fn try_connect(&mut self, i: usize) -> Result<(), NodeError> {
        let member = &mut self.members[i];
        member.last_try = Some(Instant::now());
        let (host, port) = (member.addr.ip().to_string(), member.addr.port());
        match self.node.connect_to(&host, port) {
            Ok(peer) => {
                member.peer = Some(peer);
                member.owed = 0;
                Ok(())
            }
            Err(e) => {
                log::warn!("ensemble member {} unreachable: {e}", member.addr);
                Err(e)
            }
        }
    }

    /// The members' addresses, in the order given.
    pub fn members(&self) -> Vec<SocketAddr> {
        self.members.iter().map(|m| m.addr).collect()
    }

    /// Members connected now.
    pub fn connected(&self) -> usize {
        self.members.iter().filter(|m| m.peer.is_some()).count()
    }

    /// The node underneath: its peers and traffic metrics.
    pub fn node(&self) -> &DistributedNetwork<NeuralNetwork> {
        &self.node
    }

    /// [`Ensemble::predict_rows`] for one row.
    pub fn predict(&mut self, input: &[f32]) -> Result<EnsembleAnswer, EnsembleError> {
        self.predict_rows(input, 1)
    }

    /// The combined outputs for `rows` rows (`inputs` row-major): sends them to every member
    /// that can be asked, waits until every one asked has answered or the deadline has
    /// passed, and combines the answers in. Fails only if no member answered.
    pub fn predict_rows(
        &mut self,
        inputs: &[f32],
        rows: usize,
    ) -> Result<EnsembleAnswer, EnsembleError> {
        if rows == 0 || inputs.is_empty() || inputs.len() % rows != 0 {
            return Err(EnsembleError::Input {
                values: inputs.len(),
                rows,
            });
        }
        self.take_waiting_events();
        self.reconnect();
        let started = Instant::now();
        let deadline = started + self.config.deadline;
        for i in 0..self.members.len() {
            self.ask(i, inputs);
        }
        loop {
            let waiting = self.members.iter().any(|m| m.outcome.is_none());
            let left = deadline.saturating_duration_since(Instant::now());
            if !waiting || left.is_zero() {
                break;
            }
            if let Some(event) = self.events.recv_timeout(left) {
                self.on_event(event, rows);
            }
        }
        let members: Vec<Result<Vec<f32>, LeftOut>> = self
            .members
            .iter_mut()
            .map(|m| {
                m.asked = false;
                m.outcome.take().unwrap_or(Err(LeftOut::Deadline))
            })
            .collect();
        if !members.iter().any(Result::is_ok) {
            let left_out = self
                .members
                .iter()
                .map(|m| m.addr)
                .zip(members.into_iter().filter_map(Result::err))
                .collect();
            return Err(EnsembleError::NoAnswer { left_out });
        }
        combine(self.config.combine, rows, members, started.elapsed()).ok_or(
            EnsembleError::NoAnswer {
                left_out: Vec::new(),
            },
        )
    }

    /// Sends the request to member `i` if it can be asked, or records why not.
    fn ask(&mut self, i: usize, inputs: &[f32]) {
        let member = &mut self.members[i];
        let Some(peer) = member.peer else {
            member.outcome = Some(Err(LeftOut::NotConnected));
            return;
        };
        if member.owed >= self.config.max_in_flight.max(1) {
            member.outcome = Some(Err(LeftOut::Behind));
            return;
        }
        match self.node.send_forward_data(peer, 0, inputs) {
            Ok(()) => {
                member.owed += 1;
                member.asked = true;
                member.outcome = None;
            }
            Err(e) => {
                // Part of the frame may have gone: drop the connection and start afresh later.
                log::warn!("ensemble member {}: send failed: {e}", member.addr);
                self.node.disconnect(peer);
                member.peer = None;
                // A member that left just before its request is disconnected, whichever of
                // its close and the send the node saw first.
                let left = matches!(e, crate::node::NodeError::Net(NetError::Closed(_)));
                member.outcome = Some(Err(if left {
                    LeftOut::Disconnected
                } else {
                    LeftOut::SendFailed(e.to_string())
                }));
            }
        }
    }

    /// Tries again the members that are not connected and were last tried long enough ago.
    fn reconnect(&mut self) {
        for i in 0..self.members.len() {
            let m = &self.members[i];
            let due = m
                .last_try
                .is_none_or(|t| t.elapsed() >= self.config.reconnect_every);
            if m.peer.is_none() && due && self.try_connect(i).is_ok() {
                log::info!("ensemble member {} reconnected", self.members[i].addr);
            }
        }
    }

    fn take_waiting_events(&mut self) {
        while let Some(event) = self.events.recv_timeout(Duration::ZERO) {
            self.on_event(event, 0);
        }
    }

    fn member_of(&self, peer: PeerId) -> Option<usize> {
        self.members.iter().position(|m| m.peer == Some(peer))
    }

    /// Settles one owed request of the member on `peer`; true if it was the current one.
    fn settle(&mut self, i: usize) -> bool {
        let member = &mut self.members[i];
        member.owed = member.owed.saturating_sub(1);
        member.owed == 0 && member.asked && member.outcome.is_none()
    }

    /// Takes an event; `rows` is the current request's (0: none being collected).
    fn on_event(&mut self, event: NodeEvent, rows: usize) {
        match event {
            NodeEvent::Message(message) => {
                let Some(i) = self.member_of(message.peer()) else {
                    return;
                };
                if !self.settle(i) {
                    log::debug!(
                        "ensemble member {}: a late answer dropped",
                        self.members[i].addr
                    );
                    return;
                }
                let outcome = match message.message() {
                    Message::ForwardData { data, .. } => check_answer(&data, rows),
                    other => Err(LeftOut::BadAnswer(format!(
                        "{:?} instead of ForwardData",
                        other.msg_type()
                    ))),
                };
                self.members[i].outcome = Some(outcome);
            }
            NodeEvent::Refused { peer, reason, .. } => {
                if let Some(i) = self.member_of(peer) {
                    if self.settle(i) {
                        self.members[i].outcome = Some(Err(LeftOut::Refused(reason)));
                    }
                }
            }
            NodeEvent::PeerDisconnected { peer, cause } => {
                if let Some(i) = self.member_of(peer) {
                    let member = &mut self.members[i];
                    log::warn!("ensemble member {} left: {cause}", member.addr);
                    member.peer = None;
                    member.owed = 0;
                    member.last_try = Some(Instant::now());
                    if member.asked && member.outcome.is_none() {
                        member.outcome = Some(Err(LeftOut::Disconnected));
                    }
                }
            }
            _ => {}
        }
    }

    /// Closes every connection.
    pub fn shutdown(&self) {
        self.node.shutdown();
    }
}

/// A member's answer to a request of `rows` rows: a whole number of finite values per row.
fn check_answer(data: &[f32], rows: usize) -> Result<Vec<f32>, LeftOut> {
    if rows == 0 || data.is_empty() || data.len() % rows != 0 {
        return Err(LeftOut::BadAnswer(format!(
            "{} values for {rows} rows",
            data.len()
        )));
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(LeftOut::BadAnswer(format!("value {i} is {}", data[i])));
    }
    Ok(data.to_vec())
}

/// Combines the members' outputs; `None` if none answered. A member whose width differs from
/// the first answering member's is left out.
fn combine(
    how: Combine,
    rows: usize,
    mut members: Vec<Result<Vec<f32>, LeftOut>>,
    elapsed: Duration,
) -> Option<EnsembleAnswer> {
    let width = members.iter().find_map(|m| m.as_ref().ok())?.len();
    for m in &mut members {
        if let Ok(out) = m {
            if out.len() != width {
                *m = Err(LeftOut::BadAnswer(format!(
                    "{} outputs per row, the others {}",
                    out.len() / rows,
                    width / rows
                )));
            }
        }
    }
    let classes = width / rows;
    let answers: Vec<&Vec<f32>> = members.iter().filter_map(|m| m.as_ref().ok()).collect();
    let n = answers.len() as f32;
    let mut mean = vec![0.0f32; width];
    for out in &answers {
        for (m, v) in mean.iter_mut().zip(out.iter()) {
            *m += v / n;
        }
    }
    let (scores, predictions) = match how {
        Combine::MeanProbability => {
            let predictions = mean.chunks_exact(classes).map(argmax).collect();
            (mean, predictions)
        }
        Combine::MajorityVote => {
            let mut votes = vec![0.0f32; width];
            for out in &answers {
                for (r, row) in out.chunks_exact(classes).enumerate() {
                    votes[r * classes + argmax(row)] += 1.0 / n;
                }
            }
            let predictions = votes
                .chunks_exact(classes)
                .zip(mean.chunks_exact(classes))
                .map(|(v, m)| {
                    (0..classes)
                        .max_by(|&a, &b| {
                            v[a].total_cmp(&v[b])
                                .then(m[a].total_cmp(&m[b]))
                                .then(b.cmp(&a))
                        })
                        .unwrap_or(0)
                })
                .collect();
            (votes, predictions)
        }
    };
    Some(EnsembleAnswer {
        rows,
        classes,
        scores,
        predictions,
        members,
        elapsed,
    })
}

/// The index of the largest value (the first of equals).
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_vote_differ_where_one_confident_member_outweighs_two() {
        let members = vec![
            Ok(vec![0.0, 1.0, 0.9, 0.1]),
            Ok(vec![0.45, 0.55, 0.9, 0.1]),
            Ok(vec![0.45, 0.55, 0.2, 0.8]),
            Err(LeftOut::Deadline),
        ];
        let mean = combine(Combine::MeanProbability, 2, members.clone(), Duration::ZERO).unwrap();
        assert_eq!(mean.classes, 2);
        assert_eq!(mean.predictions, vec![1, 0]);
        assert_eq!(mean.answered(), vec![0, 1, 2]);
        assert_eq!(mean.left_out(), vec![(3, &LeftOut::Deadline)]);
        let members = vec![Ok(vec![0.9, 0.1]), Ok(vec![0.4, 0.6]), Ok(vec![0.45, 0.55])];
        let vote = combine(Combine::MajorityVote, 1, members.clone(), Duration::ZERO).unwrap();
        assert_eq!(vote.predictions, vec![1]);
        let mean = combine(Combine::MeanProbability, 1, members, Duration::ZERO).unwrap();
        assert_eq!(mean.predictions, vec![0]);
    }

    #[test]
    fn a_tied_vote_goes_to_the_larger_summed_output() {
        let members = vec![Ok(vec![0.9, 0.1]), Ok(vec![0.4, 0.6])];
        let vote = combine(Combine::MajorityVote, 1, members, Duration::ZERO).unwrap();
        assert_eq!(vote.predictions, vec![0]);
        assert_eq!(vote.scores, vec![0.5, 0.5]);
    }

    #[test]
    fn a_member_of_another_width_is_left_out_and_none_answering_is_none() {
        let members = vec![Ok(vec![0.9, 0.1]), Ok(vec![0.1, 0.2, 0.7])];
        let answer = combine(Combine::MeanProbability, 1, members, Duration::ZERO).unwrap();
        assert_eq!(answer.answered(), vec![0]);
        assert!(matches!(answer.members[1], Err(LeftOut::BadAnswer(_))));
        let none = vec![Err(LeftOut::Deadline), Err(LeftOut::NotConnected)];
        assert!(combine(Combine::MajorityVote, 1, none, Duration::ZERO).is_none());
    }
}
