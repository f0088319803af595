//! Work handed to an event loop by the application or by another loop, and the queue and
//! waker it arrives through.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use mio::net::TcpListener;
use mio::{Token, Waker};

use super::admission::AdmissionTicket;
use super::frame::OutFrame;
use super::peer::{ConnId, ConnShared};
use super::stream::Stream;
use crate::session::Role;
use crate::wire::DisconnectReason;

/// The token of every loop's (and the receiver's) waker.
pub(crate) const WAKER: Token = Token(usize::MAX);

/// Work handed to a loop by the application or by another loop.
pub(crate) enum Command {
    /// Take over a connected socket.
    Adopt {
        stream: Stream,
        role: Role,
        shared: Arc<ConnShared>,
        /// An accepted connection's place under the connection limits.
        ticket: Option<AdmissionTicket>,
    },
    /// Send an encoded frame (its bytes are already counted in the queue).
    Send {
        conn: ConnId,
        slot: usize,
        frame: OutFrame,
    },
    /// Send the oldest of the connection's open blocks (its bytes are already counted).
    SendOpen { conn: ConnId, slot: usize },
    /// Close gracefully.
    Close {
        conn: ConnId,
        slot: usize,
        reason: DisconnectReason,
        message: String,
    },
    /// Refuse a received data frame (an Error APPLICATION; the session stays open).
    Refuse {
        conn: ConnId,
        slot: usize,
        sequence: u64,
        reason: String,
    },
    /// Measure the round trip now.
    Heartbeat { conn: ConnId, slot: usize },
    /// Accept connections from this listener.
    Listen(TcpListener),
    /// Stop the loop.
    Shutdown,
}

/// The application's side of a loop: where to put commands and how to wake it.
pub(crate) struct LoopHandle {
    pub(crate) commands: ArrayQueue<Command>,
    pub(crate) waker: Waker,
    /// Set while the loop sleeps in the poll, so senders wake it only then.
    pub(crate) sleeping: AtomicBool,
}

impl LoopHandle {
    /// Queues a command and wakes the loop if it sleeps. Gives the command back if full.
    pub(crate) fn submit(&self, command: Command) -> Result<(), Command> {
        self.commands.push(command)?;
        fence(Ordering::SeqCst);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            if let Err(e) = self.waker.wake() {
                log::error!("could not wake an event loop: {e}");
            }
        }
        Ok(())
    }

    /// Wakes the loop if it sleeps, with no command: it looks at what changed (the
    /// addresses its listeners filter) on its next turn.
    pub(crate) fn wake(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            if let Err(e) = self.waker.wake() {
                log::error!("could not wake an event loop: {e}");
            }
        }
    }
}
