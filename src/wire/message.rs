//! Typed messages: what each frame's payload means, borrowed from the bytes it arrived in.
//!
//! Payload integers are little-endian, like the f32 data. Every payload starts with a 2-byte
//! field, so that after the 22-byte header everything that follows sits 4-byte aligned counted
//! from the frame's first byte; f32 arrays are then reinterpreted in place (bytemuck) when the
//! buffer is aligned and the host little-endian, and copied otherwise ([`F32s`]).
//! docs/PROTOCOL.md gives every layout byte by byte.

use std::borrow::Cow;

use super::error::{DisconnectReason, ErrorCode};
use super::header::MsgType;

/// f32 values from a payload: borrowed in place on the fast path, copied when the buffer is
/// misaligned or the host big-endian.
pub type F32s<'a> = Cow<'a, [f32]>;

/// u32 values from a payload (layer sizes), borrowed or copied like [`F32s`].
pub type U32s<'a> = Cow<'a, [u32]>;

/// The body of Handshake and HandshakeAck: who a node is and what it can do.
///
/// In a Handshake, `min_version..=max_version` is the range the sender speaks and
/// `capabilities` what it offers. In a HandshakeAck, both versions are the accepted one and
/// `capabilities` the agreed set (the intersection).
#[derive(Debug, Clone, PartialEq)]
pub struct Hello<'a> {
    /// A random id the node picks at start-up, to tell nodes with equal names apart.
    pub node_id: u64,
    /// Lowest protocol version spoken.
    pub min_version: u8,
    /// Highest protocol version spoken.
    pub max_version: u8,
    /// Capability bits ([`super::capabilities`]).
    pub capabilities: u32,
    /// Sizes of the node's layers, input first.
    pub layer_sizes: U32s<'a>,
    /// The node's name, UTF-8, at most 65535 bytes.
    pub name: Cow<'a, str>,
}

/// Which step of peer authentication an Auth frame is (docs/PROTOCOL.md, "Authentication").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum AuthStep {
    /// Connecting side, after its Handshake: its public key and its nonce.
    Challenge = 1,
    /// Accepting side: its public key, its nonce, and its proof over the transcript.
    Response = 2,
    /// Connecting side: its proof over the transcript.
    Proof = 3,
}

/// How an Auth frame proves possession of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AuthScheme {
    /// Each node has an Ed25519 key pair; the proof is a 64-byte signature.
    Ed25519 = 1,
    /// The nodes share a secret key; the proof is a 32-byte HMAC-SHA256 tag (then 32 zeros),
    /// and the key fields are zero.
    PreSharedKey = 2,
}

/// The body of an Auth frame: one step of the exchange. Fields a step does not use are zero.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    /// Which step.
    pub step: AuthStep,
    /// How the proof is made.
    pub scheme: AuthScheme,
    /// The sender's public key (Challenge, Response), zero otherwise.
    pub key: [u8; 32],
    /// The sender's fresh random nonce (Challenge, Response), zero otherwise.
    pub nonce: [u8; 32],
    /// The sender's signature or tag over the transcript (Response, Proof), zero otherwise.
    pub proof: [u8; 64],
}

impl core::fmt::Debug for Auth {
    // Public keys, nonces and signatures are not secrets, but 128 bytes of hex help nobody
    // reading a log: their first bytes identify them.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Auth")
            .field("step", &self.step)
            .field("scheme", &self.scheme)
            .field("key", &format_args!("{:02x?}..", &self.key[..4]))
            .field("nonce", &format_args!("{:02x?}..", &self.nonce[..4]))
            .field("proof", &format_args!("{:02x?}..", &self.proof[..4]))
            .finish()
    }
}

/// How a receiver applies a WeightSync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SyncMode {
    /// Overwrite the parameters.
    Replace = 0,
    /// Average with the local parameters, weighted by sample counts (federated averaging).
    Average = 1,
}

/// A slice of one layer's parameters.
///
/// A layer of `rows` outputs and `cols` inputs has `rows * cols + rows` parameters: the weights
/// row-major, then the biases. `values` holds parameters `offset..offset + values.len()`, so a
/// layer of any size travels in bounded frames.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightSync<'a> {
    /// The layer (0 = first weight layer).
    pub layer_id: u16,
    /// How to apply it.
    pub mode: SyncMode,
    /// Output count of the layer.
    pub rows: u32,
    /// Input count of the layer.
    pub cols: u32,
    /// Index of the first parameter carried.
    pub offset: u32,
    /// Samples behind these weights, for weighted averaging.
    pub sample_count: u32,
    /// The parameters.
    pub values: F32s<'a>,
}

/// One NNP message, its payload borrowed from the frame it was decoded from.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    /// Opens a session.
    Handshake(Hello<'a>),
    /// Accepts a session.
    HandshakeAck(Hello<'a>),
    /// Activations of a layer (or the input, layer 0).
    ForwardData {
        /// The layer.
        layer_id: u16,
        /// The activations.
        data: F32s<'a>,
    },
    /// Gradients for a layer: either the layer's parameter gradients (weights row-major, then
    /// biases: `rows * cols + rows` values) or, in a pipeline, the gradient with respect to
    /// the layer's input (`cols` values). The two lengths can never be equal.
    BackwardData {
        /// The layer.
        layer_id: u16,
        /// The gradients.
        data: F32s<'a>,
    },
    /// A layer's Hebbian correlation matrix, row-major `rows x cols`.
    HebbianData {
        /// The layer.
        layer_id: u16,
        /// The learning rate the receiver should apply them with.
        learning_rate: f32,
        /// Output count.
        rows: u32,
        /// Input count.
        cols: u32,
        /// `rows * cols` correlations.
        correlations: F32s<'a>,
    },
    /// A slice of a layer's parameters.
    WeightSync(WeightSync<'a>),
    /// Liveness; a reply echoes the timestamp it answers, which gives the round-trip time.
    Heartbeat {
        /// Sender's clock in nanoseconds (or, in a reply, the echoed value).
        timestamp_ns: u64,
        /// Whether this answers a heartbeat.
        reply: bool,
    },
    /// Graceful close.
    Disconnect {
        /// Why.
        reason: DisconnectReason,
        /// For a person.
        message: Cow<'a, str>,
    },
    /// An error report; the sender closes after it.
    Error {
        /// What kind of error.
        code: ErrorCode,
        /// For a person.
        message: Cow<'a, str>,
    },
    /// A step of peer authentication (boxed: it is rare and 132 bytes long).
    Auth(Box<Auth>),
}

impl Message<'_> {
    /// The wire type of this message.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Message::Handshake(_) => MsgType::Handshake,
            Message::HandshakeAck(_) => MsgType::HandshakeAck,
            Message::ForwardData { .. } => MsgType::ForwardData,
            Message::BackwardData { .. } => MsgType::BackwardData,
            Message::HebbianData { .. } => MsgType::HebbianData,
            Message::WeightSync(_) => MsgType::WeightSync,
            Message::Heartbeat { .. } => MsgType::Heartbeat,
            Message::Disconnect { .. } => MsgType::Disconnect,
            Message::Error { .. } => MsgType::Error,
            Message::Auth(_) => MsgType::Auth,
        }
    }

    /// This message with everything it borrows copied, free of the buffer it came from.
    pub fn into_owned(self) -> Message<'static> {
        fn hello(h: Hello<'_>) -> Hello<'static> {
            Hello {
                node_id: h.node_id,
                min_version: h.min_version,
                max_version: h.max_version,
                capabilities: h.capabilities,
                layer_sizes: Cow::Owned(h.layer_sizes.into_owned()),
                name: Cow::Owned(h.name.into_owned()),
            }
        }
        let own = |d: F32s<'_>| -> F32s<'static> { Cow::Owned(d.into_owned()) };
        match self {
            Message::Handshake(h) => Message::Handshake(hello(h)),
            Message::HandshakeAck(h) => Message::HandshakeAck(hello(h)),
            Message::ForwardData { layer_id, data } => Message::ForwardData {
                layer_id,
                data: own(data),
            },
            Message::BackwardData { layer_id, data } => Message::BackwardData {
                layer_id,
                data: own(data),
            },
            Message::HebbianData {
                layer_id,
                learning_rate,
                rows,
                cols,
                correlations,
            } => Message::HebbianData {
                layer_id,
                learning_rate,
                rows,
                cols,
                correlations: own(correlations),
            },
            Message::WeightSync(w) => Message::WeightSync(WeightSync {
                values: own(w.values),
                ..w
            }),
            Message::Heartbeat {
                timestamp_ns,
                reply,
            } => Message::Heartbeat {
                timestamp_ns,
                reply,
            },
            Message::Disconnect { reason, message } => Message::Disconnect {
                reason,
                message: Cow::Owned(message.into_owned()),
            },
            Message::Error { code, message } => Message::Error {
                code,
                message: Cow::Owned(message.into_owned()),
            },
            Message::Auth(auth) => Message::Auth(auth),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_vectors::*;
    use crate::wire::{decode_frame, DEFAULT_MAX_PAYLOAD};

    #[test]
    fn test_into_owned() {
        for (bytes, _, message) in expected() {
            let owned = {
                let copy = bytes.to_vec();
                let (frame, _) = decode_frame(&copy, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
                frame.message.into_owned()
            };
            assert_eq!(owned, message);
        }
    }
}
