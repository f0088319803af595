//! Why a send or a connect did not happen.

use std::io;
use std::time::Duration;

use super::peer::{CloseCause, ConnId};
use crate::wire::ProtocolError;

/// Why a send or a connect did not happen.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetError {
    /// The socket layer failed.
    Io(io::Error),
    /// No open connection has this id (closed, or never existed).
    UnknownConnection(ConnId),
    /// The connection's send queue is full: try again after it drains, or use the blocking
    /// `send`.
    WouldBlock {
        /// Bytes queued.
        queued: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The event loop's command queue is full: the loop is far behind the threads that send
    /// to it. Retry shortly, or raise `command_queue_capacity`.
    CommandQueueFull {
        /// The queue's capacity, in commands.
        capacity: usize,
    },
    /// The handshake has not completed yet.
    NotEstablished(ConnId),
    /// The message is not allowed (a capability not agreed, a control type...).
    Protocol(ProtocolError),
    /// The connection closed (during a connect or a blocking send).
    Closed(CloseCause),
    /// The connect or the handshake took longer than the timeout.
    Timeout(Duration),
    /// The engine has shut down.
    Shutdown,
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::Io(e) => write!(f, "I/O error: {e}"),
            NetError::UnknownConnection(c) => write!(f, "no open connection {c}"),
            NetError::WouldBlock { queued, limit } => write!(
                f,
                "send queue full ({queued} of {limit} bytes): the peer reads slower than we send; retry later or use a blocking send"
            ),
            NetError::CommandQueueFull { capacity } => write!(
                f,
                "the event loop's command queue is full ({capacity} commands): the loop is behind; retry shortly or raise command_queue_capacity"
            ),
            NetError::NotEstablished(c) => write!(f, "connection {c} has not completed its handshake"),
            NetError::Protocol(e) => write!(f, "{e}"),
            NetError::Closed(cause) => write!(f, "connection closed: {cause}"),
            NetError::Timeout(d) => write!(f, "timed out after {d:?}"),
            NetError::Shutdown => write!(f, "the engine has shut down"),
        }
    }
}

impl std::error::Error for NetError {}

impl From<io::Error> for NetError {
    fn from(e: io::Error) -> Self {
        NetError::Io(e)
    }
}

impl From<ProtocolError> for NetError {
    fn from(e: ProtocolError) -> Self {
        NetError::Protocol(e)
    }
}
