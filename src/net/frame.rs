//! Frames in flight: received frames as views into shared blocks, outgoing frames in blocks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::pool::Block;
use super::ConnId;
use crate::wire::{parse_payload, Header, Message, MsgType, ProtocolError, HEADER_LEN};

/// A block of received bytes shared by the frames read into it; counts against the event
/// loop's budget of received-but-unreleased bytes until the last frame is dropped.
#[derive(Debug)]
pub(crate) struct RxBlock {
    block: Block,
    budget: Arc<AtomicUsize>,
}

impl RxBlock {
    pub(crate) fn new(block: Block, budget: Arc<AtomicUsize>) -> RxBlock {
        budget.fetch_add(block.capacity(), Ordering::Relaxed);
        RxBlock { block, budget }
    }
}

impl Drop for RxBlock {
    fn drop(&mut self) {
        self.budget
            .fetch_sub(self.block.capacity(), Ordering::Relaxed);
    }
}

/// A whole, checksum-verified frame received on a connection, viewed in place in the pooled
/// block it was read into. The block returns to the pool when its last frame is dropped, so
/// hold frames only as long as their data is needed.
#[derive(Debug, Clone)]
pub struct ReceivedFrame {
    block: Arc<RxBlock>,
    start: u32,
    len: u32,
    msg_type: MsgType,
    conn: ConnId,
}

impl ReceivedFrame {
    pub(crate) fn new(
        block: Arc<RxBlock>,
        start: usize,
        len: usize,
        msg_type: MsgType,
        conn: ConnId,
    ) -> Self {
        ReceivedFrame {
            block,
            start: start as u32,
            len: len as u32,
            msg_type,
            conn,
        }
    }

    /// The connection it arrived on.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The whole frame, header included.
    pub fn bytes(&self) -> &[u8] {
        let start = self.start as usize;
        &self.block.block.bytes()[start..start + self.len as usize]
    }

    /// The frame's header.
    pub fn header(&self) -> &Header {
        Header::ref_from_buf(self.bytes()).expect("a received frame holds a whole header")
    }

    /// The (validated) message type.
    pub fn msg_type(&self) -> MsgType {
        self.msg_type
    }

    /// The sender's sequence number.
    pub fn sequence(&self) -> u64 {
        self.header().sequence()
    }

    /// The message, its f32 data borrowed from the pooled block (no copy on an aligned,
    /// little-endian host).
    pub fn message(&self) -> Result<Message<'_>, ProtocolError> {
        parse_payload(self.msg_type, &self.bytes()[HEADER_LEN..])
    }
}

/// An encoded frame waiting to be written; its sequence number is patched in when it takes
/// its place in the connection's wire order.
#[derive(Debug)]
pub(crate) struct OutFrame {
    pub(crate) block: Block,
    pub(crate) len: usize,
    pub(crate) msg_type: MsgType,
}

impl OutFrame {
    /// Whether the frame goes in the bulk lane, behind which small frames may overtake.
    pub(crate) fn is_bulk(&self) -> bool {
        self.msg_type == MsgType::WeightSync || self.len > super::BULK_THRESHOLD
    }

    pub(crate) fn set_sequence(&mut self, sequence: u64) {
        self.block.bytes_mut()[10..18].copy_from_slice(&sequence.to_be_bytes());
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.block.bytes()[..self.len]
    }
}
