//! The application side's view of an engine: the loops' context, the inline driver, and the
//! checks and reservations every way of sending goes through.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::command::Command;
use super::context::LoopContext;
use super::error::NetError;
use super::frame::{OutFrame, ReceivedFrame};
use super::inline::InlineDriver;
use super::peer::ConnShared;
use super::sender::SENDER_BATCH_FRAME_MAX;
use crate::session::may_send;
use crate::wire::{frame_len, Message, MsgType, ProtocolError, HEADER_LEN};

/// What every handle, sender and receiver of one engine shares.
pub(crate) struct EngineShared {
    context: Arc<LoopContext>,
    /// Set once the engine is shutting down: every send refuses.
    pub(crate) shut_down: AtomicBool,
    pub(crate) inline: InlineDriver,
}

impl Deref for EngineShared {
    type Target = LoopContext;

    fn deref(&self) -> &LoopContext {
        &self.context
    }
}

impl EngineShared {
    pub(crate) fn new(context: Arc<LoopContext>, inline: bool) -> Self {
        EngineShared {
            context,
            shut_down: AtomicBool::new(false),
            inline: InlineDriver::new(inline),
        }
    }

    /// Whether the engine runs inline.
    pub(crate) fn is_inline(&self) -> bool {
        self.inline.is_enabled()
    }

    /// An open connection, or the error naming it.
    pub(crate) fn open_conn(&self, id: super::peer::ConnId) -> Result<Arc<ConnShared>, NetError> {
        self.conn(id).ok_or(NetError::UnknownConnection(id))
    }

    /// Checks that `message` may be sent on the connection now; returns its type and frame
    /// length.
    pub(crate) fn check_message(
        &self,
        shared: &ConnShared,
        message: &Message<'_>,
    ) -> Result<(MsgType, usize), NetError> {
        let msg_type = message.msg_type();
        self.check_sendable(shared, msg_type)?;
        let len = frame_len(message)?;
        self.check_len(len)?;
        Ok((msg_type, len))
    }

    /// Whether a data frame of `msg_type` may go out on the connection now.
    pub(crate) fn check_sendable(
        &self,
        shared: &ConnShared,
        msg_type: MsgType,
    ) -> Result<(), NetError> {
        if let Some(cause) = shared.is_closed().then(|| shared.close_cause()).flatten() {
            return Err(NetError::Closed(cause));
        }
        if self.shut_down.load(Ordering::Relaxed) {
            return Err(NetError::Shutdown);
        }
        if !shared.is_established() {
            return Err(NetError::NotEstablished(shared.id));
        }
        may_send(shared.capabilities(), msg_type)?;
        Ok(())
    }

    pub(crate) fn check_len(&self, len: usize) -> Result<(), NetError> {
        if len > HEADER_LEN + self.config.session.max_payload as usize {
            return Err(NetError::Protocol(ProtocolError::FrameTooLarge {
                length: (len - HEADER_LEN) as u32,
                max: self.config.session.max_payload,
            }));
        }
        Ok(())
    }

    /// Reserves `len` bytes of the connection's send queue: at once or `WouldBlock` without
    /// `wait`, else waiting for room. `before_wait` runs once before the first wait (a
    /// sender hands over what it holds, so that the queue can drain).
    pub(crate) fn reserve(
        &self,
        shared: &ConnShared,
        len: usize,
        wait: Option<Duration>,
        before_wait: &mut dyn FnMut(),
    ) -> Result<(), NetError> {
        let limit = self.config.limits.send_queue_bytes;
        let mut deadline = None;
        while let Err(queued) = shared.try_reserve(len, limit) {
            let Some(wait) = wait else {
                return Err(NetError::WouldBlock { queued, limit });
            };
            let deadline = *deadline.get_or_insert_with(|| {
                before_wait();
                Instant::now() + wait
            });
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NetError::Timeout(wait));
            }
            if !self.wait_for(shared, left, |s| {
                s.queued() + len <= limit || s.queued() == 0
            }) {
                if let Some(cause) = shared.close_cause() {
                    return Err(NetError::Closed(cause));
                }
            }
        }
        Ok(())
    }

    /// Encodes one frame into its own block and queues it (its `len` bytes already
    /// reserved; released on failure). An inline engine that this thread can drive now
    /// writes it straight from the caller's memory when the connection has nothing queued.
    pub(crate) fn encode_and_submit(
        &self,
        shared: &ConnShared,
        message: &Message<'_>,
        len: usize,
    ) -> Result<(), NetError> {
        if let Some(sent) = self.inline.send_message_now(shared, message, len) {
            return sent.map_err(NetError::from);
        }
        if !self.is_inline() && Self::coalesces(message.msg_type(), len) {
            return self.append_open(shared, message, len);
        }
        match OutFrame::encode(&self.pool, message, 0, len) {
            Ok(frame) => self.submit(shared, frame),
            Err(e) => {
                shared.release_queued(len);
                Err(e.into())
            }
        }
    }

    /// Whether a plain send of a `len`-byte `msg_type` frame joins the connection's open
    /// block (on a loop-thread engine): a small data frame; a WeightSync or a large frame goes
    /// alone, as from a [`super::Sender`].
    fn coalesces(msg_type: MsgType, len: usize) -> bool {
        len <= SENDER_BATCH_FRAME_MAX && msg_type != MsgType::WeightSync
    }

    /// Appends a frame (its `len` bytes reserved; released on failure) to the connection's
    /// open block, announcing a new block to the loop when it opens one.
    fn append_open(
        &self,
        shared: &ConnShared,
        message: &Message<'_>,
        len: usize,
    ) -> Result<(), NetError> {
        let lane = &self.loops[shared.loop_index];
        let appended = shared.open.append(&self.pool, message, len, || {
            let command = Command::SendOpen {
                conn: shared.id,
                slot: shared.slot().unwrap_or(usize::MAX),
            };
            lane.submit(command)
                .map_err(|_| NetError::CommandQueueFull {
                    capacity: self.config.limits.command_queue_capacity,
                })
        });
        if appended.is_err() {
            shared.release_queued(len);
        }
        appended
    }

    /// Queues a received frame (its bytes already reserved): header, payload and checksum
    /// as they came; the sequence number is patched when the frame takes its place in the
    /// connection's wire order. The frame's own block goes if nothing else shares it, else
    /// the frame is copied into a new one.
    pub(crate) fn relay_submit(
        &self,
        shared: &ConnShared,
        frame: ReceivedFrame,
    ) -> Result<(), NetError> {
        let out = frame.into_out_frame().unwrap_or_else(|frame| {
            let bytes = frame.bytes();
            let mut block = self.pool.take(bytes.len());
            block.bytes_mut()[..bytes.len()].copy_from_slice(bytes);
            OutFrame::single(block, bytes.len(), frame.msg_type())
        });
        self.submit(shared, out)
    }

    /// Queues an encoded frame whose bytes are reserved (released on failure).
    pub(crate) fn submit(&self, shared: &ConnShared, frame: OutFrame) -> Result<(), NetError> {
        let len = frame.len;
        let slot = shared.slot().unwrap_or(usize::MAX);
        let Some(frame) = self.inline.send_now(shared.id, slot, frame) else {
            return Ok(());
        };
        let command = Command::Send {
            conn: shared.id,
            slot,
            frame,
        };
        let lane = &self.loops[shared.loop_index];
        if shared.open.sealed(|| lane.submit(command)).is_err() {
            shared.release_queued(len);
            return Err(NetError::CommandQueueFull {
                capacity: self.config.limits.command_queue_capacity,
            });
        }
        self.inline.drive(None);
        Ok(())
    }

    /// Hands `command` to the connection's loop, driving an inline engine after it.
    pub(crate) fn command(&self, shared: &ConnShared, command: Command) -> Result<(), NetError> {
        let lane = &self.loops[shared.loop_index];
        if shared.open.sealed(|| lane.submit(command)).is_err() {
            return Err(NetError::CommandQueueFull {
                capacity: self.config.limits.command_queue_capacity,
            });
        }
        self.inline.drive(None);
        Ok(())
    }

    /// Waits until `ready` holds for the connection, it closes, or `timeout` passes; an
    /// inline engine is driven meanwhile.
    pub(crate) fn wait_for(
        &self,
        conn: &ConnShared,
        timeout: Duration,
        ready: impl Fn(&ConnShared) -> bool,
    ) -> bool {
        if !self.is_inline() {
            return conn.wait_until(timeout, ready);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if ready(conn) {
                return true;
            }
            if conn.is_closed() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let slice = (deadline - now).min(Duration::from_millis(1));
            if !self.inline.drive(Some(slice)) {
                conn.wait_until(slice, &ready);
            }
        }
    }
}
