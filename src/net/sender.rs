//! A batching sender for one connection: small frames encoded back to back into one pooled
//! block that reaches the event loop as one command.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::command::Command;
use super::deadline::Deadline;
use super::error::NetError;
use super::frame::{encode_into, OutFrame};
use super::peer::{ConnId, ConnShared};
use super::pool::Block;
use super::shared::EngineShared;
use crate::session::may_send;
use crate::wire::{encode_frame, Message, MsgType, HEADER_LEN};

/// Frames larger than this are not batched by a [`Sender`]: they go alone, as with
/// [`EngineHandle::send`](super::EngineHandle::send).
pub const SENDER_BATCH_FRAME_MAX: usize = 16 * 1024;
/// The block a [`Sender`] encodes into: it hands it over when the next frame does not fit.
const SENDER_BLOCK: usize = 64 * 1024;

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
    block: Option<Block>,
    len: usize,
    frames: u32,
    first_type: MsgType,
    /// The length of every frame held, while they are all of `first_type` and one length.
    stride: Option<usize>,
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
            .field("buffered_frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl Sender {
    pub(crate) fn new(engine: Arc<EngineShared>, conn: Arc<ConnShared>) -> Self {
        Sender {
            max_frame: HEADER_LEN + engine.config.session.max_payload as usize,
            engine,
            conn,
            block: None,
            len: 0,
            frames: 0,
            first_type: MsgType::ForwardData,
            stride: None,
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
        self.frames as usize
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
        if self.block.is_some() {
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
        let block = self.block.as_mut()?;
        let room_len = self.credit.min(SENDER_BATCH_FRAME_MAX).min(self.max_frame);
        let room = &mut block.bytes_mut()[self.len..self.len + room_len];
        let len = encode_into(message, 0, room).ok()?;
        self.credit -= len;
        self.held(msg_type, len);
        Some(Ok(()))
    }

    /// Reserves the rest of the open block in the send queue (at most an eighth of the
    /// queue's limit, so that a sender holding a few frames leaves others on the connection
    /// their room), if the queue has room for it.
    fn reserve_credit(&mut self) {
        let limit = self.engine.config.limits.send_queue_bytes;
        let rest = (SENDER_BLOCK - self.len).min(limit / 8);
        if rest > 0 && self.conn.is_established() && self.conn.try_reserve(rest, limit).is_ok() {
            self.credit = rest;
            self.capabilities = self.conn.capabilities();
        }
    }

    /// Gives back the credit not used.
    fn return_credit(&mut self) {
        self.conn.release_queued(std::mem::take(&mut self.credit));
    }

    /// Counts a frame of `len` bytes just encoded at the end of the block.
    #[inline]
    fn held(&mut self, msg_type: MsgType, len: usize) {
        if self.frames == 0 {
            self.first_type = msg_type;
            self.stride = Some(len);
        } else if self.stride != Some(len) || msg_type != self.first_type {
            self.stride = None;
        }
        self.len += len;
        self.frames += 1;
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
        if self.len + len > SENDER_BLOCK {
            if let Err(e) = self.flush() {
                self.conn.release_queued(len);
                return Err(e);
            }
        }
        let block = self
            .block
            .get_or_insert_with(|| self.engine.pool.take(SENDER_BLOCK));
        let mut dst = &mut block.bytes_mut()[self.len..self.len + len];
        if let Err(e) = encode_frame(message, 0, &mut dst) {
            self.conn.release_queued(len);
            return Err(e.into());
        }
        self.held(msg_type, len);
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
        if self.frames == 0 {
            return Ok(());
        }
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        let (len, frames) = (
            std::mem::take(&mut self.len),
            std::mem::take(&mut self.frames),
        );
        let frame = match self.stride.take() {
            Some(stride) => {
                debug_assert_eq!(len, frames as usize * stride);
                OutFrame::uniform_batch(block, self.first_type, frames, stride)
            }
            None => OutFrame::batch(block, len, self.first_type, frames),
        };
        let len = frame.len;
        let mut command = Command::Send {
            conn: self.conn.id,
            slot: self.conn.slot().unwrap_or(usize::MAX),
            frame,
        };
        let lane = &self.engine.loops[self.conn.loop_index];
        loop {
            match lane.submit(command) {
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
