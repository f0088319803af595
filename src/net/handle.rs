//! The application's handle on an engine: listen, connect, send, relay, close, inspect.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::command::Command;
use super::config::EngineConfig;
use super::deadline::Deadline;
use super::error::NetError;
use super::frame::ReceivedFrame;
use super::metrics::MetricsSnapshot;
use super::peer::{ConnId, ConnShared, PeerStatus};
use super::pool::BufferPool;
use super::sender::Sender;
use super::shared::EngineShared;
use super::socket::{bind_listener, connect_socket, tune_socket};
use super::stream;
use crate::session::Role;
use crate::wire::{DisconnectReason, Message};

/// Sends, connects and inspects; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<EngineShared>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle").finish_non_exhaustive()
    }
}

impl EngineHandle {
    pub(crate) fn new(shared: Arc<EngineShared>) -> Self {
        EngineHandle { shared }
    }

    pub(crate) fn shared(&self) -> &EngineShared {
        &self.shared
    }

    fn check_running(&self) -> Result<(), NetError> {
        if self.shared.shut_down.load(Ordering::Relaxed) {
            return Err(NetError::Shutdown);
        }
        Ok(())
    }

    /// Listens on `addr` (port 0 picks a free port); returns the bound address.
    pub fn listen(&self, addr: impl ToSocketAddrs) -> Result<SocketAddr, NetError> {
        self.check_running()?;
        let addr = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on")
        })?;
        let listener = bind_listener(addr, &self.shared.config)?;
        let local = listener.local_addr()?;
        let index = self.shared.next_loop_index();
        if self.shared.loops[index]
            .submit(Command::Listen(listener))
            .is_err()
        {
            return Err(NetError::CommandQueueFull {
                capacity: self.shared.config.limits.command_queue_capacity,
            });
        }
        self.shared.inline.drive(None);
        log::info!("listening on {local}");
        Ok(local)
    }

    /// Connects to `addr` and completes the handshake; blocks until then.
    pub fn connect(&self, addr: impl ToSocketAddrs) -> Result<ConnId, NetError> {
        self.check_running()?;
        let timeout = self.shared.config.connect_timeout;
        let mut last_error = None;
        for addr in addr.to_socket_addrs()? {
            match connect_socket(&addr, timeout, &self.shared.config) {
                Ok(stream) => return self.adopt_connected(stream, addr, timeout),
                Err(e) => last_error = Some(e),
            }
        }
        Err(NetError::Io(last_error.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to")
        })))
    }

    fn adopt_connected(
        &self,
        stream: std::net::TcpStream,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<ConnId, NetError> {
        stream.set_nodelay(true)?;
        tune_socket(&stream, &self.shared.config);
        stream.set_nonblocking(true)?;
        let stream = mio::net::TcpStream::from_std(stream);
        let stream = stream::connected(stream, addr, &self.shared.config)?;
        let shared = self.shared.new_conn(addr);
        let command = Command::Adopt {
            stream,
            role: Role::Initiator,
            shared: Arc::clone(&shared),
            ticket: None,
        };
        if let Err(e) = self.shared.command(&shared, command) {
            self.shared.forget(shared.id);
            return Err(e);
        }
        if self
            .shared
            .wait_for(&shared, timeout, ConnShared::is_established)
        {
            log::info!("connected to {addr} as {}", shared.id);
            return Ok(shared.id);
        }
        match shared.close_cause() {
            Some(cause) => Err(NetError::Closed(cause)),
            None => {
                self.close(shared.id, DisconnectReason::NORMAL, "handshake timed out");
                Err(NetError::Timeout(timeout))
            }
        }
    }

    /// Queues `message` on `conn`, waiting (up to `deadline`) while the connection's send
    /// queue is full: [`Deadline::Now`] refuses at once with [`NetError::WouldBlock`], a
    /// `Duration` waits at most that long. Never drops a message silently: `Ok` means the
    /// frame is queued in order (or already in the kernel).
    pub fn send(
        &self,
        conn: ConnId,
        message: &Message<'_>,
        deadline: impl Into<Deadline>,
    ) -> Result<(), NetError> {
        let shared = self.shared.open_conn(conn)?;
        self.send_on(&shared, message, deadline.into().wait())
    }

    fn send_on(
        &self,
        shared: &Arc<ConnShared>,
        message: &Message<'_>,
        wait: Option<Duration>,
    ) -> Result<(), NetError> {
        let (_, len) = self.shared.check_message(shared, message)?;
        self.shared.reserve(shared, len, wait, &mut || {})?;
        self.shared.encode_and_submit(shared, message, len)
    }

    /// Sends a received data frame on `conn` as it came (type, payload and checksum; the
    /// sequence number is `conn`'s own), waiting (up to `deadline`, as for
    /// [`EngineHandle::send`]) while the send queue is full. A pipeline stage, an echo or a
    /// broadcaster passes frames on this way without decoding and re-encoding them: no checksum pass, and no copy when no other frame
    /// shares the frame's read block (the block itself is queued), one copy otherwise. To
    /// send one frame to several connections, relay clones of it (a clone is a view of the
    /// same block). `conn` may be the frame's own connection or another; its peer must have
    /// agreed the frame type's capability.
    pub fn relay(
        &self,
        conn: ConnId,
        frame: ReceivedFrame,
        deadline: impl Into<Deadline>,
    ) -> Result<(), NetError> {
        self.relay_on(conn, frame, deadline.into().wait())
    }

    fn relay_on(
        &self,
        conn: ConnId,
        frame: ReceivedFrame,
        wait: Option<Duration>,
    ) -> Result<(), NetError> {
        let shared = self.shared.open_conn(conn)?;
        let len = frame.bytes().len();
        self.shared.check_sendable(&shared, frame.msg_type())?;
        self.shared.check_len(len)?;
        self.shared.reserve(&shared, len, wait, &mut || {})?;
        self.shared.relay_submit(&shared, frame)
    }

    /// A batching sender for `conn`: it encodes small frames back to back into one pooled
    /// block and hands the block to the event loop as one command when it is full or
    /// flushed, so a stream of small frames costs one hand-off and one write per ~64 KiB.
    pub fn sender(&self, conn: ConnId) -> Result<Sender, NetError> {
        let shared = self.shared.open_conn(conn)?;
        Ok(Sender::new(Arc::clone(&self.shared), shared))
    }

    /// Waits (at most `timeout`) until everything queued on `conn` has been handed to the
    /// kernel, driving an inline engine meanwhile: an inline engine writes only while some
    /// thread calls into it, so a sender that is about to stop calling (or to exit) waits
    /// here first. Frames held in a [`Sender`] count once it flushes them.
    pub fn wait_sent(&self, conn: ConnId, timeout: Duration) -> Result<(), NetError> {
        let shared = self.shared.open_conn(conn)?;
        if self.shared.wait_for(&shared, timeout, |s| s.queued() == 0) {
            return Ok(());
        }
        match shared.close_cause() {
            Some(cause) => Err(NetError::Closed(cause)),
            None => Err(NetError::Timeout(timeout)),
        }
    }

    /// Closes `conn` gracefully with a Disconnect frame.
    pub fn close(&self, conn: ConnId, reason: DisconnectReason, message: &str) {
        if let Some(shared) = self.shared.conn(conn) {
            let command = Command::Close {
                conn,
                slot: shared.slot().unwrap_or(usize::MAX),
                reason,
                message: message.to_owned(),
            };
            if let Err(e) = self.shared.command(&shared, command) {
                log::warn!("could not queue the close of {conn}: {e}");
            }
        }
    }

    /// Refuses the data frame numbered `sequence` that `conn`'s peer sent (see
    /// [`ReceivedFrame::sequence`]): the peer gets an Error APPLICATION naming the frame and
    /// `reason`, after every frame already sent on `conn`, and the connection stays open. The
    /// peer's engine reports it as [`super::NetEvent::Refused`]. Use it when the application
    /// cannot take a frame (a layer it does not have, a shape that does not fit), so that the
    /// sender is told rather than left waiting.
    pub fn refuse(&self, conn: ConnId, sequence: u64, reason: &str) -> Result<(), NetError> {
        let shared = self.shared.open_conn(conn)?;
        self.shared.command(
            &shared,
            Command::Refuse {
                conn,
                slot: shared.slot().unwrap_or(usize::MAX),
                sequence,
                reason: reason.to_owned(),
            },
        )
    }

    /// Sends a heartbeat on `conn` now; its reply updates the connection's round-trip time.
    pub fn ping(&self, conn: ConnId) -> Result<(), NetError> {
        let shared = self.shared.open_conn(conn)?;
        self.shared.command(
            &shared,
            Command::Heartbeat {
                conn,
                slot: shared.slot().unwrap_or(usize::MAX),
            },
        )
    }

    /// The open connections.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.shared.statuses()
    }

    /// One connection's status.
    pub fn peer(&self, conn: ConnId) -> Option<PeerStatus> {
        self.shared.conn(conn).map(|s| s.status())
    }

    /// Engine-wide counters and the round-trip histogram.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// The buffer pool (for its occupancy figures).
    pub fn pool(&self) -> &BufferPool {
        &self.shared.pool
    }

    /// The sending limits in force.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }
}
