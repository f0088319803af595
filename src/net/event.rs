//! What the engine tells the application: connections opening and closing, and frames.

use std::net::SocketAddr;

use super::frame::{FrameView, ReceivedFrame};
use super::peer::{CloseCause, ConnId};
use crate::session::PeerInfo;

/// What the engine tells the application.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetEvent {
    /// A handshake completed.
    Connected {
        /// The connection.
        conn: ConnId,
        /// Its remote address.
        addr: SocketAddr,
        /// What the peer said about itself, and what was agreed.
        peer: Box<PeerInfo>,
    },
    /// A data frame (ForwardData, BackwardData, HebbianData, WeightSync).
    Frame(ReceivedFrame),
    /// The peer's application refused one of our data frames (an Error APPLICATION); the
    /// connection stays open.
    Refused {
        /// The connection.
        conn: ConnId,
        /// The refused frame's sequence number (see [`ReceivedFrame::sequence`] on the
        /// other side), if the peer's text names it.
        sequence: Option<u64>,
        /// Why, in the peer's words.
        reason: String,
    },
    /// A connection ended. Every frame it delivered came before this event.
    Disconnected {
        /// The connection.
        conn: ConnId,
        /// Why.
        cause: CloseCause,
    },
}

/// What [`Receiver::poll`](super::Receiver::poll) hands its handler.
#[derive(Debug)]
pub enum Polled<'a> {
    /// A data frame, lent for the call.
    Frame(FrameView<'a>),
    /// A connection change: [`NetEvent::Connected`] or [`NetEvent::Disconnected`], never a
    /// [`NetEvent::Frame`] (frames come as [`Polled::Frame`]).
    Event(NetEvent),
}
