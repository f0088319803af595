//! What a node's receiver yields: [`NetworkMessage`], its f32 data still in the receive buffer.

use std::ops::Deref;

use crate::net::{CloseCause, ConnId, ReceivedFrame};
use crate::session::PeerInfo;
use crate::wire::checked::data_message;
use crate::wire::{Message, MsgType, ProtocolError, SyncMode, HEADER_LEN};

/// f32 values received from a peer, viewed in place in the pooled receive buffer (or, for a
/// misaligned frame or a big-endian host, copied once). Dereferences to `&[f32]`; dropping the
/// last view of a buffer returns it to the pool.
#[derive(Debug, Clone)]
pub struct F32View {
    inner: F32Storage,
}

#[derive(Debug, Clone)]
enum F32Storage {
    InFrame {
        frame: ReceivedFrame,
        start: usize,
        len: usize,
    },
    Owned(Vec<f32>),
}

impl F32View {
    /// Values held in an owned vector (for messages built locally).
    pub fn owned(values: Vec<f32>) -> F32View {
        F32View {
            inner: F32Storage::Owned(values),
        }
    }

    /// Whether the values are read straight from the receive buffer.
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.inner, F32Storage::InFrame { .. })
    }

    fn from_cow(frame: &ReceivedFrame, values: std::borrow::Cow<'_, [f32]>) -> F32View {
        match values {
            std::borrow::Cow::Borrowed(slice) => {
                let base = frame.bytes().as_ptr() as usize;
                let start = slice.as_ptr() as usize - base;
                F32View {
                    inner: F32Storage::InFrame {
                        frame: frame.clone(),
                        start,
                        len: slice.len(),
                    },
                }
            }
            std::borrow::Cow::Owned(v) => F32View::owned(v),
        }
    }
}

impl Deref for F32View {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &self.inner {
            F32Storage::InFrame { frame, start, len } => {
                let bytes = &frame.bytes()[*start..*start + *len * 4];
                // The frame was parsed in place once already, so the cast succeeds.
                bytemuck::try_cast_slice(bytes).unwrap_or(&[])
            }
            F32Storage::Owned(v) => v,
        }
    }
}

impl PartialEq<[f32]> for F32View {
    fn eq(&self, other: &[f32]) -> bool {
        **self == *other
    }
}

/// Identifies a connected peer.
pub type PeerId = ConnId;

/// One message received by a node, in the shape of the original design.
#[derive(Debug, Clone)]
pub struct NetworkMessage {
    /// The peer it came from.
    pub peer: PeerId,
    /// Its type.
    pub msg_type: MsgType,
    /// The sender's sequence number (0 for connection events).
    pub sequence: u64,
    /// What it carries.
    pub payload: MessagePayload,
}

/// The content of a [`NetworkMessage`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum MessagePayload {
    /// A peer completed its handshake (`msg_type` is Handshake).
    PeerConnected(Box<PeerInfo>),
    /// Activations for a layer.
    ForwardData {
        /// The layer the data enters (0: the network's input).
        layer_id: u16,
        /// The activations.
        data: F32View,
    },
    /// Gradients for a layer.
    BackwardData {
        /// The layer.
        layer_id: u16,
        /// Weight gradients row-major then bias gradients, or the gradient with respect to
        /// the layer's input.
        data: F32View,
    },
    /// A layer's Hebbian correlations.
    HebbianData {
        /// The layer.
        layer_id: u16,
        /// The learning rate to apply them with.
        learning_rate: f32,
        /// Output count.
        rows: u32,
        /// Input count.
        cols: u32,
        /// `rows * cols` correlations, row-major.
        correlations: F32View,
    },
    /// A slice of a layer's parameters.
    WeightSync {
        /// The layer.
        layer_id: u16,
        /// Replace or average.
        mode: SyncMode,
        /// Output count.
        rows: u32,
        /// Input count.
        cols: u32,
        /// First parameter carried.
        offset: u32,
        /// Samples behind the weights.
        sample_count: u32,
        /// The parameters.
        values: F32View,
    },
    /// A peer went away (`msg_type` is Disconnect).
    PeerDisconnected(CloseCause),
}

impl NetworkMessage {
    /// Converts a received data frame, keeping its f32 data in place.
    pub fn from_frame(frame: &ReceivedFrame) -> Result<NetworkMessage, ProtocolError> {
        let msg_type = frame.msg_type();
        if !msg_type.is_data() {
            return Err(ProtocolError::UnexpectedMessage {
                msg_type,
                state: "established (only data frames reach the application)",
            });
        }
        // The session checked the payload before handing the frame on.
        let message = data_message(msg_type, &frame.bytes()[HEADER_LEN..]);
        let payload = match message {
            Message::ForwardData { layer_id, data } => MessagePayload::ForwardData {
                layer_id,
                data: F32View::from_cow(frame, data),
            },
            Message::BackwardData { layer_id, data } => MessagePayload::BackwardData {
                layer_id,
                data: F32View::from_cow(frame, data),
            },
            Message::HebbianData {
                layer_id,
                learning_rate,
                rows,
                cols,
                correlations,
            } => MessagePayload::HebbianData {
                layer_id,
                learning_rate,
                rows,
                cols,
                correlations: F32View::from_cow(frame, correlations),
            },
            Message::WeightSync(ws) => MessagePayload::WeightSync {
                layer_id: ws.layer_id,
                mode: ws.mode,
                rows: ws.rows,
                cols: ws.cols,
                offset: ws.offset,
                sample_count: ws.sample_count,
                values: F32View::from_cow(frame, ws.values),
            },
            other => {
                return Err(ProtocolError::UnexpectedMessage {
                    msg_type: other.msg_type(),
                    state: "established (only data frames reach the application)",
                })
            }
        };
        Ok(NetworkMessage {
            peer: frame.conn(),
            msg_type: frame.msg_type(),
            sequence: frame.sequence(),
            payload,
        })
    }
}
