//! A batching sender for one connection: small frames encoded back to back into one pooled
//! block that reaches the event loop as one command.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::coalesce::{Batch, BATCH_BLOCK};
use super::command::Command;
use super::deadline::Deadline;
use super::error::NetError;
use super::peer::{ConnId, ConnShared};
use super::shared::EngineShared;
use crate::session::may_send;
use crate::wire::{Message, MsgType, HEADER_LEN};

/// Frames larger than this are not batched by a [`Sender`]: they go alone, as with
/// [`EngineHandle::send`](super::EngineHandle::send).
pub const SENDER_BATCH_FRAME_MAX: usize = 16 * 1024;

/// A batching sender for one connection, from [`EngineHandle::sender`](super::EngineHandle::sender): small frames are
/// encoded back to back into one pooled block that reaches the event loop as one command
/// (when the next frame does not fit, on [`Sender::flush`], or when the sender is dropped),
/// so a stream of small frames costs one hand-off, one wake-up and one write per ~64 KiB
/// rather than per frame.
///
/// Frames are held until then: call `flush` when a burst is complete. Every frame is counted
/// in the connection's send queue from the moment it is accepted (a sender reserves the rest
/// of its block, up to an eighth of the queue's limit, at once when the queue has room, and
/// gives back what it did not fill when it hands the block over: the small frames that fill
/// a block cost no atomic operation each, and the reserved room counts in
/// [`PeerStatus::queued_bytes`](super::PeerStatus::queued_bytes) meanwhile), so backpressure is the same as
/// [`EngineHandle::send`](super::EngineHandle::send)'s: [`Sender::send`] waits up to its deadline, and with
/// [`Deadline::Now`] refuses with [`NetError::WouldBlock`] (after handing over what it holds,
/// so the queue can drain). Frames leave in the order they are handed to the loop: a
/// sender's frames keep their order (a WeightSync or a frame larger than
/// [`SENDER_BATCH_FRAME_MAX`] goes alone, after the frames batched before it), and frames held
/// in a sender leave after anything sent on the connection by other means before the flush.
pub struct Sender {
    engine: Arc<EngineShared>,
    conn: Arc<ConnShared>,
    /// The frames held; handed over when the next frame does not fit.
    batch: Option<Batch>,
    /// Send-queue bytes reserved for the rest of the block: frames that fit in it are taken
    /// with no atomic operation and no connection check (those were made when it was
    /// reserved). Given back when the block is handed over.
    credit: usize,
    /// The connection's agreed capabilities when `credit` was reserved (fixed once
    /// established).
    capabilities: u32,
    /// The longest frame the engine sends (header and `max_payload`).
    max_frame: usize,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("conn", &self.conn.id)
            .field("buffered_frames", &self.buffered_frames())
            .finish_non_exhaustive()
    }
}

impl Sender {
    pub(crate) fn new(engine: Arc<EngineShared>, conn: Arc<ConnShared>) -> Self {
        Sender {
            max_frame: HEADER_LEN + engine.config.session.max_payload as usize,
            engine,
            conn,
            batch: None,
            credit: 0,
            capabilities: 0,
        }
    }

    /// The connection.
    pub fn conn(&self) -> ConnId {
        self.conn.id
    }

    /// Frames accepted and not yet handed to the event loop.
    pub fn buffered_frames(&self) -> usize {
        self.batch.as_ref().map_or(0, |b| b.frames() as usize)
    }

    /// Accepts `message`, waiting (up to `deadline`, as for
    /// [`super::EngineHandle::send`]) while the connection's send queue is full. Never drops
    /// a message silently.
    pub fn send(
        &mut self,
        message: &Message<'_>,
        deadline: impl Into<Deadline>,
    ) -> Result<(), NetError> {
        self.send_inner(message, deadline.into().wait())
    }

    fn send_inner(
        &mut self,
        message: &Message<'_>,
        wait: Option<Duration>,
    ) -> Result<(), NetError> {
        if let Some(taken) = self.send_within_credit(message) {
            return taken;
        }
        // The checks and the reservation frame by frame; the credit (if any) is given back
        // first so that it cannot hold the room this frame waits for.
        self.return_credit();
        self.send_checked(message, wait)?;
        if self.batch.is_some() {
            self.reserve_credit();
        }
        Ok(())
    }

    /// Takes `message` into the open block if it is a small data frame of an agreed type
    /// that fits in the credit; `None` if the checked path must decide.
    #[inline]
    fn send_within_credit(&mut self, message: &Message<'_>) -> Option<Result<(), NetError>> {
        // Two plain loads: a close or a shutdown must refuse the frame now, not drop it later.
        if self.credit == 0
            || self.conn.is_closed()
            || self.engine.shut_down.load(Ordering::Relaxed)
        {
            return None;
        }
        let msg_type = message.msg_type();
        if msg_type == MsgType::WeightSync || may_send(self.capabilities, msg_type).is_err() {
            return None;
        }
        // Encoded straight into the credit's room, capped at the longest frame that may be
        // batched (one length computation): a frame that does not fit is refused by the
        // encoder before it writes anything, and takes the checked path.
        let batch = self.batch.as_mut()?;
        let room_len = self.credit.min(SENDER_BATCH_FRAME_MAX).min(self.max_frame);
        let len = batch.push(message, room_len).ok()?;
        self.credit -= len;
        Some(Ok(()))
    }

    /// Reserves the rest of the open block in the send queue (at most an eighth of the
    /// queue's limit, so that a sender holding a few frames leaves others on the connection
    /// their room), if the queue has room for it.
    fn reserve_credit(&mut self) {
        let limit = self.engine.config.limits.send_queue_bytes;
        let held = self.batch.as_ref().map_or(0, Batch::len);
        let rest = (BATCH_BLOCK - held).min(limit / 8);
        if rest > 0 && self.conn.is_established() && self.conn.try_reserve(rest, limit).is_ok() {
            self.credit = rest;
            self.capabilities = self.conn.capabilities();
        }
    }

    /// Gives back the credit not used.
    fn return_credit(&mut self) {
        self.conn.release_queued(std::mem::take(&mut self.credit));
    }

    /// One frame with every check and its own reservation.
    fn send_checked(
        &mut self,
        message: &Message<'_>,
        wait: Option<Duration>,
    ) -> Result<(), NetError> {
        let (msg_type, len) = self.engine.check_message(&self.conn, message)?;
        let limit = self.engine.config.limits.send_queue_bytes;
        if self.conn.try_reserve(len, limit).is_err() {
            self.reserve_or_flush(len, wait)?;
        }
        if len > SENDER_BATCH_FRAME_MAX || msg_type == MsgType::WeightSync {
            if let Err(e) = self.flush() {
                self.conn.release_queued(len);
                return Err(e);
            }
            return self.engine.encode_and_submit(&self.conn, message, len);
        }
        if self
            .batch
            .as_ref()
            .is_some_and(|b| b.len() + len > BATCH_BLOCK)
        {
            if let Err(e) = self.flush() {
                self.conn.release_queued(len);
                return Err(e);
            }
        }
        let batch = self
            .batch
            .get_or_insert_with(|| Batch::new(self.engine.pool.take(BATCH_BLOCK)));
        if let Err(e) = batch.push(message, len) {
            self.conn.release_queued(len);
            return Err(e.into());
        }
        Ok(())
    }

    /// Reserves `len` bytes of a full send queue: waiting (for `wait`) after handing over
    /// what is held, since the queue cannot drain while this sender holds frames.
    fn reserve_or_flush(&mut self, len: usize, wait: Option<Duration>) -> Result<(), NetError> {
        let engine = Arc::clone(&self.engine);
        let conn = Arc::clone(&self.conn);
        let mut flushed = Ok(());
        let reserved = engine.reserve(&conn, len, wait, &mut || flushed = self.flush());
        if let Err(e) = flushed {
            if reserved.is_ok() {
                self.conn.release_queued(len);
            }
            return Err(e);
        }
        if let Err(e) = reserved {
            if matches!(e, NetError::WouldBlock { .. }) {
                // What is held must leave, or the queue this frame waits for never drains.
                self.flush()?;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Hands every frame held to the event loop. Waits while the loop's command queue is
    /// full; fails (releasing the frames) only if the connection closed or the engine shut
    /// down meanwhile.
    pub fn flush(&mut self) -> Result<(), NetError> {
        self.return_credit();
        let Some(batch) = self.batch.take_if(|b| b.frames() > 0) else {
            return Ok(());
        };
        let frame = batch.into_out_frame();
        let len = frame.len;
        let mut command = Command::Send {
            conn: self.conn.id,
            slot: self.conn.slot().unwrap_or(usize::MAX),
            frame,
        };
        let lane = &self.engine.loops[self.conn.loop_index];
        loop {
            // After the frames that plain sends on the connection coalesced before this flush.
            match self.conn.open.sealed(|| lane.submit(command)) {
                Ok(()) => {
                    self.engine.inline.drive(None);
                    return Ok(());
                }
                Err(back) => command = back,
            }
            let stop = if self.engine.shut_down.load(Ordering::Relaxed) {
                Some(NetError::Shutdown)
            } else {
                self.conn.close_cause().map(NetError::Closed)
            };
            if let Some(e) = stop {
                self.conn.release_queued(len);
                return Err(e);
            }
            if !self.engine.inline.drive(Some(Duration::ZERO)) {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            log::debug!("frames held by a sender on {} not sent: {e}", self.conn.id);
        }
    }
}
