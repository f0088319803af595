//! The session state machine: handshake, sequence numbers, heartbeats, timeouts and closing.
//!
//! Sans-IO, in the manner of quinn-proto: a [`Session`] owns no socket and reads no clock. The
//! I/O layer feeds it what arrives and the current time, and asks it what to send and when to
//! wake it next. That makes every transition testable by feeding messages (see the tests,
//! which drive two sessions against each other in memory).
//!
//! The order of calls, for each connection:
//!
//! 1. [`Session::new`] (an initiator queues its Handshake at once).
//! 2. For each decoded frame: [`Session::handle_frame`]. `Ok(Received::Data)` means the
//!    application should take the message; `Ok(Received::Control)` means the session consumed
//!    it; `Err` means the session failed and has queued an Error frame. For a frame that did not
//!    even decode, call [`Session::abort`] with the codec's error.
//! 3. Before sending application data: [`Session::next_send_sequence`], which refuses data the
//!    session cannot carry (not established, capability not agreed).
//! 4. Whenever the loop turns: [`Session::handle_timeout`] with the current time, then drain
//!    [`Session::poll_transmit`] (control frames with their sequence numbers, in order) and
//!    [`Session::poll_event`]; sleep until [`Session::poll_timeout`] at the latest.
//! 5. Once [`Session::is_closed`] and the control frames are flushed, drop the connection.
//!
//! With [`SessionConfig::auth`] set, the handshake goes on with Auth frames until both sides
//! have proved their keys (`auth.rs`); the session is established only then, and the
//! handshake deadline covers it all.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::{AuthConfig, PublicKey};
use crate::wire::{
    DisconnectReason, ErrorCode, Hello, Message, MsgType, PartialChecksum, ProtocolError, VERSION,
};

mod auth;
#[cfg(any(test, fuzzing, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod inbound;
mod refusal;
mod tally;

pub use inbound::{DataFrame, Inbound, Lane, ReadProgress};
pub use refusal::{parse_refusal, refusal_text};
pub use tally::TypeTally;

/// The default of [`SessionConfig::max_handshake_payload`].
pub const DEFAULT_MAX_HANDSHAKE_PAYLOAD: u32 = 64 * 1024;

/// What a node says about itself in its handshake, how it times a session, and the frame
/// sizes it accepts.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// This node's id (random per process unless set).
    pub node_id: u64,
    /// This node's name.
    pub name: String,
    /// Capabilities offered.
    pub capabilities: u32,
    /// Layer sizes of the local network, input first.
    pub layer_sizes: Vec<u32>,
    /// Lowest protocol version spoken.
    pub min_version: u8,
    /// Highest protocol version spoken.
    pub max_version: u8,
    /// How long a silent connection waits before it sends a heartbeat.
    pub heartbeat_interval: Duration,
    /// How long a peer may stay silent before the session closes.
    pub idle_timeout: Duration,
    /// How long the handshake may take.
    pub handshake_timeout: Duration,
    /// The largest payload a received frame may announce once the handshake is complete
    /// (checked before any buffer grows; also the largest the engine sends).
    pub max_payload: u32,
    /// The largest payload a received frame may announce before the handshake completes:
    /// what an unknown peer can make the node hold for it. A handshake is a few hundred
    /// bytes; raise this only for peers that announce very many layers.
    pub max_handshake_payload: u32,
    /// Peer authentication: with a key, this node offers capability AUTHENTICATION, requires
    /// every peer to prove its key within the handshake deadline, and proves its own. `None`
    /// (the default) sends exactly the handshake of a node without authentication.
    pub auth: Option<Arc<AuthConfig>>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            node_id: 0,
            name: String::new(),
            capabilities: crate::wire::capabilities::ALL,
            layer_sizes: Vec::new(),
            min_version: VERSION,
            max_version: VERSION,
            heartbeat_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_payload: crate::wire::DEFAULT_MAX_PAYLOAD,
            max_handshake_payload: DEFAULT_MAX_HANDSHAKE_PAYLOAD,
            auth: None,
        }
    }
}

/// Which side of the connection this session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Connected out; sends the Handshake.
    Initiator,
    /// Accepted; answers the Handshake.
    Acceptor,
}

/// The peer as learnt from the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's node id.
    pub node_id: u64,
    /// The peer's name.
    pub name: String,
    /// The peer's layer sizes.
    pub layer_sizes: Vec<u32>,
    /// The agreed capabilities (the intersection of both offers).
    pub capabilities: u32,
    /// The agreed protocol version.
    pub version: u8,
    /// The Ed25519 key the peer proved it holds, if the session authenticated with keys
    /// (boxed: every connection keeps its peer's info, and most authenticate without keys).
    pub public_key: Option<Box<PublicKey>>,
}

/// What the session did with a received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A control frame, consumed by the session.
    Control,
    /// A data frame (Forward, Backward, Hebbian, WeightSync) for the application.
    Data,
    /// The peer's application refused one of our data frames (an Error APPLICATION), for the
    /// application, in its place among the data frames; the session stays open.
    Refused {
        /// The refused frame's sequence number, if the peer's text names it.
        sequence: Option<u64>,
        /// Why, in the peer's words.
        reason: String,
    },
}

/// Things that happened, for the application and the metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// The handshake completed.
    Established(PeerInfo),
    /// A heartbeat reply gave a round-trip time.
    RoundTrip(Duration),
    /// The session ended; `error` is set if it ended on a protocol error (ours or the peer's).
    Closed {
        /// Why the session ended.
        reason: DisconnectReason,
        /// The error, if any.
        error: Option<ProtocolError>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Initiator: Handshake queued or sent, waiting for the ack.
    AwaitingAck,
    /// Acceptor: waiting for the peer's Handshake.
    AwaitingHandshake,
    /// Acceptor, authenticating: HandshakeAck sent, waiting for the peer's Auth Challenge.
    AwaitingChallenge,
    /// Acceptor, authenticating: Auth Response sent, waiting for the peer's Auth Proof.
    AwaitingProof,
    /// Initiator, authenticating: HandshakeAck received, waiting for the Auth Response.
    AwaitingResponse,
    Established,
    /// No more frames are accepted; queued control frames may still leave.
    Closed,
}

impl State {
    fn describe(self) -> &'static str {
        match self {
            State::AwaitingAck => "waiting for the handshake ack",
            State::AwaitingHandshake => "waiting for the handshake",
            State::AwaitingChallenge => "waiting for the peer's authentication challenge",
            State::AwaitingProof => "waiting for the peer's authentication proof",
            State::AwaitingResponse => "waiting for the peer's authentication response",
            State::Established => "established",
            State::Closed => "closed",
        }
    }

    /// Whether the handshake (authentication included) is under way.
    fn in_handshake(self) -> bool {
        !matches!(self, State::Established | State::Closed)
    }
}

/// One connection's protocol state. See the module docs for the order of calls.
#[derive(Debug)]
pub struct Session {
    config: std::sync::Arc<SessionConfig>,
    state: State,
    epoch: Instant,
    next_send_seq: u64,
    next_recv_seq: u64,
    last_received: Instant,
    last_sent: Instant,
    /// The agreed capabilities, once established (the rest of [`PeerInfo`] goes out in the
    /// Established event; an idle session keeps no copy).
    agreed_capabilities: u32,
    transmit: VecDeque<Message<'static>>,
    events: VecDeque<SessionEvent>,
    /// The checksum of the unfinished received frame, as far as its bytes have arrived.
    rx_checksum: PartialChecksum,
    /// What an authenticating handshake has learnt so far (boxed: most sessions have none).
    auth: Option<Box<auth::Pending>>,
}

impl Session {
    /// A new session started at `now`. An initiator queues its Handshake.
    pub fn new(role: Role, config: std::sync::Arc<SessionConfig>, now: Instant) -> Session {
        let mut session = Session {
            state: match role {
                Role::Initiator => State::AwaitingAck,
                Role::Acceptor => State::AwaitingHandshake,
            },
            epoch: now,
            next_send_seq: 0,
            next_recv_seq: 0,
            last_received: now,
            last_sent: now,
            agreed_capabilities: 0,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            rx_checksum: PartialChecksum::default(),
            auth: None,
            config,
        };
        if role == Role::Initiator {
            let hello = session.own_hello(
                session.config.min_version,
                session.config.max_version,
                session.offered_capabilities(),
            );
            session.transmit.push_back(Message::Handshake(hello));
            session.send_challenge();
        }
        session
    }

    /// The capabilities this node offers: the configured ones, and AUTHENTICATION with a key.
    fn offered_capabilities(&self) -> u32 {
        match self.config.auth {
            Some(_) => self.config.capabilities | crate::wire::capabilities::AUTHENTICATION,
            None => self.config.capabilities,
        }
    }

    fn own_hello(&self, min_version: u8, max_version: u8, capabilities: u32) -> Hello<'static> {
        Hello {
            node_id: self.config.node_id,
            min_version,
            max_version,
            capabilities,
            layer_sizes: Cow::Owned(self.config.layer_sizes.clone()),
            name: Cow::Owned(self.config.name.clone()),
        }
    }

    /// The agreed capabilities (0 before the handshake completes).
    pub fn agreed_capabilities(&self) -> u32 {
        self.agreed_capabilities
    }

    /// Whether application data can flow.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Whether the session has ended (its last control frames may still be queued).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Takes in one decoded frame received at `now`.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        sequence: u64,
        message: &Message<'_>,
    ) -> Result<Received, ProtocolError> {
        let msg_type = message.msg_type();
        if msg_type.is_data() {
            return self.handle_data_frame(now, sequence, msg_type);
        }
        self.take_sequence(now, sequence, msg_type)?;
        match (self.state, message) {
            (State::AwaitingHandshake, Message::Handshake(hello)) => self.accept(hello),
            (State::AwaitingAck, Message::HandshakeAck(hello)) => self.complete(hello),
            (
                State::AwaitingChallenge | State::AwaitingProof | State::AwaitingResponse,
                Message::Auth(step),
            ) => self.take_auth(step),
            (State::Established, Message::Error { code, message })
                if *code == ErrorCode::APPLICATION =>
            {
                Ok(self.take_refusal(message))
            }
            (_, Message::Error { code, message }) => {
                let error = ProtocolError::Remote {
                    code: *code,
                    message: message.to_string(),
                };
                log::debug!("peer reported error: {error}");
                self.close_quietly(DisconnectReason::PROTOCOL_ERROR, Some(error.clone()));
                Err(error)
            }
            (_, Message::Disconnect { reason, message }) => {
                log::debug!("peer disconnected ({}): {message}", reason.0);
                self.close_quietly(*reason, None);
                Ok(Received::Control)
            }
            (
                State::Established,
                Message::Heartbeat {
                    timestamp_ns,
                    reply,
                },
            ) => {
                if *reply {
                    let sent = self.epoch + Duration::from_nanos(*timestamp_ns);
                    if let Some(rtt) = now.checked_duration_since(sent) {
                        self.events.push_back(SessionEvent::RoundTrip(rtt));
                    }
                } else {
                    self.queue(Message::Heartbeat {
                        timestamp_ns: *timestamp_ns,
                        reply: true,
                    });
                }
                Ok(Received::Control)
            }
            (state, _) => Err(self.abort(ProtocolError::UnexpectedMessage {
                msg_type,
                state: state.describe(),
            })),
        }
    }

    /// [`Session::handle_frame`] for a data frame (ForwardData, BackwardData, HebbianData,
    /// WeightSync) whose payload the caller has checked ([`crate::wire::check_payload`]): the
    /// session needs only its type, so the message need not be built. Any other type is
    /// refused as unexpected (and closes the session).
    pub fn handle_data_frame(
        &mut self,
        now: Instant,
        sequence: u64,
        msg_type: MsgType,
    ) -> Result<Received, ProtocolError> {
        self.take_sequence(now, sequence, msg_type)?;
        if self.state != State::Established || !msg_type.is_data() {
            return Err(self.abort(ProtocolError::UnexpectedMessage {
                msg_type,
                state: self.state.describe(),
            }));
        }
        may_send(self.agreed_capabilities, msg_type).map_err(|e| self.abort(e))?;
        Ok(Received::Data)
    }

    /// Takes the next receive sequence number for a frame of `msg_type`: refused once closed,
    /// and a gap or a repeat closes the session.
    fn take_sequence(
        &mut self,
        now: Instant,
        sequence: u64,
        msg_type: MsgType,
    ) -> Result<(), ProtocolError> {
        if self.state == State::Closed {
            return Err(ProtocolError::UnexpectedMessage {
                msg_type,
                state: self.state.describe(),
            });
        }
        if sequence != self.next_recv_seq {
            return Err(self.abort(ProtocolError::UnexpectedSequence {
                expected: self.next_recv_seq,
                received: sequence,
            }));
        }
        self.next_recv_seq += 1;
        self.last_received = now;
        Ok(())
    }

    fn accept(&mut self, hello: &Hello<'_>) -> Result<Received, ProtocolError> {
        let (ours, theirs) = (
            (self.config.min_version, self.config.max_version),
            (hello.min_version, hello.max_version),
        );
        let version = ours.1.min(theirs.1);
        if version < ours.0.max(theirs.0) {
            return Err(self.abort(ProtocolError::NoCommonVersion { ours, theirs }));
        }
        if self.config.auth.is_some()
            && hello.capabilities & crate::wire::capabilities::AUTHENTICATION == 0
        {
            return Err(self.abort(ProtocolError::AuthenticationFailed {
                reason: "this node requires authentication and the peer did not offer it \
                         (capability AUTHENTICATION, 0x100)",
            }));
        }
        let capabilities = self.offered_capabilities() & hello.capabilities;
        let ack = self.own_hello(version, version, capabilities);
        self.queue(Message::HandshakeAck(ack));
        let peer = peer_info(hello, version, capabilities);
        if self.config.auth.is_some() {
            self.await_challenge(peer);
        } else {
            self.establish(peer);
        }
        Ok(Received::Control)
    }

    fn complete(&mut self, hello: &Hello<'_>) -> Result<Received, ProtocolError> {
        let version = hello.min_version;
        if hello.max_version != version
            || version < self.config.min_version
            || version > self.config.max_version
        {
            return Err(self.abort(ProtocolError::NoCommonVersion {
                ours: (self.config.min_version, self.config.max_version),
                theirs: (hello.min_version, hello.max_version),
            }));
        }
        if hello.capabilities & !self.offered_capabilities() != 0 {
            return Err(self.abort(ProtocolError::MalformedPayload {
                msg_type: MsgType::HandshakeAck,
                reason: "agreed capabilities include bits this node did not offer",
            }));
        }
        let peer = peer_info(hello, version, hello.capabilities);
        if self.config.auth.is_some() {
            if hello.capabilities & crate::wire::capabilities::AUTHENTICATION == 0 {
                return Err(self.abort(ProtocolError::AuthenticationFailed {
                    reason: "the peer did not agree to authenticate (it does not speak it, or \
                             has no key)",
                }));
            }
            self.await_response(peer);
        } else {
            self.establish(peer);
        }
        Ok(Received::Control)
    }

    fn establish(&mut self, peer: PeerInfo) {
        log::debug!(
            "session established with {:?} (id {:#x}), capabilities {:#x}",
            peer.name,
            peer.node_id,
            peer.capabilities
        );
        self.state = State::Established;
        self.agreed_capabilities = peer.capabilities;
        self.events.push_back(SessionEvent::Established(peer));
    }

    /// The sequence number for an application data frame about to be sent, or why it may not
    /// be sent. Data frames and control frames share one sequence per direction, so call this
    /// only when the frame is actually encoded into the outgoing stream.
    pub fn next_send_sequence(&mut self, msg_type: MsgType) -> Result<u64, ProtocolError> {
        self.next_send_sequences(msg_type, 1)
    }

    /// [`Session::next_send_sequence`] for `count` data frames of one type at once: the first
    /// of `count` consecutive numbers, all taken, or none if the type may not be sent.
    pub fn next_send_sequences(
        &mut self,
        msg_type: MsgType,
        count: u64,
    ) -> Result<u64, ProtocolError> {
        self.check_send(msg_type)?;
        let first = self.next_send_seq;
        self.next_send_seq += count;
        Ok(first)
    }

    /// Checks, without taking a sequence number, that a data frame of this type may be sent.
    pub fn check_send(&self, msg_type: MsgType) -> Result<(), ProtocolError> {
        if self.state != State::Established {
            return Err(ProtocolError::UnexpectedMessage {
                msg_type,
                state: self.state.describe(),
            });
        }
        may_send(self.agreed_capabilities, msg_type)
    }

    fn take_send_seq(&mut self) -> u64 {
        let seq = self.next_send_seq;
        self.next_send_seq += 1;
        seq
    }

    /// Records that bytes left at `now` (heartbeats are only sent on a quiet connection).
    pub fn on_sent(&mut self, now: Instant) {
        self.last_sent = now;
    }

    /// Fails the session on `error`: queues an Error frame for the peer (unless the error came
    /// from the peer) and closes. Returns the error, for `Err(session.abort(e))`.
    pub fn abort(&mut self, error: ProtocolError) -> ProtocolError {
        if self.state == State::Closed {
            return error;
        }
        log::debug!("session aborted: {error}");
        if !matches!(error, ProtocolError::Remote { .. }) {
            self.queue(Message::Error {
                code: error.code(),
                message: Cow::Owned(error.to_string()),
            });
        }
        self.close_quietly(DisconnectReason::PROTOCOL_ERROR, Some(error.clone()));
        error
    }

    /// Closes gracefully: queues a Disconnect with `reason` and `message`.
    pub fn close(&mut self, reason: DisconnectReason, message: &str) {
        if self.state == State::Closed {
            return;
        }
        self.queue(Message::Disconnect {
            reason,
            message: Cow::Owned(message.to_owned()),
        });
        self.close_quietly(reason, None);
    }

    fn close_quietly(&mut self, reason: DisconnectReason, error: Option<ProtocolError>) {
        self.state = State::Closed;
        self.events
            .push_back(SessionEvent::Closed { reason, error });
    }

    fn queue(&mut self, message: Message<'static>) {
        self.transmit.push_back(message);
    }

    /// Advances the clock: sends a heartbeat on a quiet connection, closes a silent or
    /// never-established one.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Closed => {}
            state if state.in_handshake() => {
                if now.saturating_duration_since(self.epoch) >= self.config.handshake_timeout {
                    let after_ms = self.config.handshake_timeout.as_millis() as u64;
                    self.abort(ProtocolError::IdleTimeout { after_ms });
                }
            }
            _ => {
                if now.saturating_duration_since(self.last_received) >= self.config.idle_timeout {
                    let after_ms = self.config.idle_timeout.as_millis() as u64;
                    self.close(
                        DisconnectReason::IDLE_TIMEOUT,
                        &format!("no frame received for {after_ms} ms"),
                    );
                    if let Some(SessionEvent::Closed { error, .. }) = self.events.back_mut() {
                        *error = Some(ProtocolError::IdleTimeout { after_ms });
                    }
                } else if now.saturating_duration_since(self.last_sent)
                    >= self.config.heartbeat_interval
                    && !self
                        .transmit
                        .iter()
                        .any(|m| matches!(m, Message::Heartbeat { reply: false, .. }))
                {
                    let timestamp_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
                    self.queue(Message::Heartbeat {
                        timestamp_ns,
                        reply: false,
                    });
                    self.last_sent = now;
                }
            }
        }
    }

    /// Queues a heartbeat now, whatever the interval (for round-trip measurement on demand).
    pub fn send_heartbeat(&mut self, now: Instant) {
        if self.state == State::Established {
            let timestamp_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
            self.queue(Message::Heartbeat {
                timestamp_ns,
                reply: false,
            });
        }
    }

    /// The next control frame to send, with its sequence number.
    pub fn poll_transmit(&mut self) -> Option<(u64, Message<'static>)> {
        let message = self.transmit.pop_front()?;
        Some((self.take_send_seq(), message))
    }

    /// Whether control frames are waiting in [`Session::poll_transmit`].
    pub fn has_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// Frees the queues' capacity if they are empty (for connections that went idle).
    pub fn release_idle_memory(&mut self) {
        if self.transmit.is_empty() {
            self.transmit = VecDeque::new();
        }
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            state if state.in_handshake() => Some(self.epoch + self.config.handshake_timeout),
            _ => Some(
                (self.last_received + self.config.idle_timeout)
                    .min(self.last_sent + self.config.heartbeat_interval),
            ),
        }
    }
}

/// The peer as its Hello describes it, with what the handshake agreed.
fn peer_info(hello: &Hello<'_>, version: u8, capabilities: u32) -> PeerInfo {
    PeerInfo {
        node_id: hello.node_id,
        name: hello.name.to_string(),
        layer_sizes: hello.layer_sizes.to_vec(),
        capabilities,
        version,
        public_key: None,
    }
}

/// The one rule for what an established session may send: a data type whose capability both
/// sides agreed (`agreed`); control frames are the session's own. The engine's handles and
/// senders check it before a frame is queued, with the capabilities the handshake agreed, and
/// the session checks it again when the frame takes its sequence number.
#[inline]
pub fn may_send(agreed: u32, msg_type: MsgType) -> Result<(), ProtocolError> {
    match msg_type.required_capability() {
        None => Err(ProtocolError::UnexpectedMessage {
            msg_type,
            state: "established (control frames are the session's own)",
        }),
        Some(capability) if agreed & capability == 0 => Err(ProtocolError::CapabilityNotAgreed {
            msg_type,
            capability,
        }),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
