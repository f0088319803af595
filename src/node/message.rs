//! What a node's receiver yields: [`NodeEvent`]s, peers arriving and leaving, and
//! [`NetworkMessage`]s whose f32 data is still in the receive buffer.

use crate::net::{CloseCause, ConnId, ReceivedFrame};
use crate::session::PeerInfo;
use crate::wire::checked::data_message;
use crate::wire::{Message, MsgType, HEADER_LEN};

/// Identifies a connected peer.
pub type PeerId = ConnId;

/// What a node's [`super::NodeReceiver`] yields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A peer completed its handshake: from now on messages can go to it and come from it.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// What it said about itself (name, layer sizes), and what was agreed.
        info: Box<PeerInfo>,
    },
    /// A data message from a peer.
    Message(NetworkMessage),
    /// A peer refused one of the messages this node sent it (a layer it does not have, a
    /// shape that does not fit); the connection stays open.
    Refused {
        /// The peer.
        peer: PeerId,
        /// The refused message's sequence number on this node's connection, if the peer
        /// named it.
        sequence: Option<u64>,
        /// Why, in the peer's words.
        reason: String,
    },
    /// A peer went away; every message it sent came before this event.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
        /// Why.
        cause: CloseCause,
    },
}

impl NodeEvent {
    /// The peer the event is about.
    pub fn peer(&self) -> PeerId {
        match self {
            NodeEvent::PeerConnected { peer, .. }
            | NodeEvent::Refused { peer, .. }
            | NodeEvent::PeerDisconnected { peer, .. } => *peer,
            NodeEvent::Message(message) => message.peer(),
        }
    }
}

/// A data message received from a peer (ForwardData, BackwardData, HebbianData or
/// WeightSync): the received frame itself, still in the pooled receive buffer, which goes
/// back to the pool once the message and its clones are dropped.
///
/// The session checked the frame completely (header, checksum, and payload with
/// [`crate::wire::check_payload`], the rules of [`crate::wire::parse_payload`]) before it
/// reached the application; [`NetworkMessage::message`] builds the typed view without
/// checking it again.
#[derive(Clone)]
pub struct NetworkMessage {
    frame: ReceivedFrame,
}

impl NetworkMessage {
    /// The message in a received frame; `None` if it is not a data frame (the engine hands
    /// the application data frames only).
    pub(crate) fn new(frame: ReceivedFrame) -> Option<NetworkMessage> {
        frame
            .msg_type()
            .is_data()
            .then_some(NetworkMessage { frame })
    }

    /// The peer it came from.
    pub fn peer(&self) -> PeerId {
        self.frame.conn()
    }

    /// Its type: ForwardData, BackwardData, HebbianData or WeightSync.
    pub fn msg_type(&self) -> MsgType {
        self.frame.msg_type()
    }

    /// The sender's sequence number.
    pub fn sequence(&self) -> u64 {
        self.frame.sequence()
    }

    /// The message, its f32 data borrowed in place from the receive buffer
    /// ([`std::borrow::Cow::Borrowed`]) on a little-endian host when the frame is 4-byte
    /// aligned, as the engine's buffers keep it; copied otherwise.
    ///
    /// Each call reads the fixed fields and casts the values again (no copy on the fast path,
    /// no allocation); nothing is checked again. Keep the result rather than calling this in a
    /// loop.
    pub fn message(&self) -> Message<'_> {
        data_message(self.msg_type(), &self.frame.bytes()[HEADER_LEN..])
    }
}

impl std::fmt::Debug for NetworkMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkMessage")
            .field("peer", &self.peer())
            .field("msg_type", &self.msg_type())
            .field("sequence", &self.sequence())
            .field("frame_len", &self.frame.bytes().len())
            .finish()
    }
}
