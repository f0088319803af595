//! Frames in flight: received frames as views into shared blocks, outgoing frames in blocks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::peer::ConnShared;
use super::pool::{Block, BufferPool};
use super::ConnId;
use crate::session::TypeTally;
use crate::wire::{
    encode_frame, encode_layer_frame, parse_payload, Header, Message, MsgType, ProtocolError,
    HEADER_LEN,
};

/// A block of received bytes shared by the frames read into it; counts against the event
/// loop's and its connection's budgets of received-but-unreleased bytes until the last frame
/// is dropped.
#[derive(Debug)]
pub(crate) struct RxBlock {
    block: Block,
    budgets: RxBudgets,
}

/// The counters of received bytes handed on and not yet released: the loop's (all its
/// connections) and one connection's.
#[derive(Debug, Clone)]
pub(crate) struct RxBudgets {
    pub(crate) event_loop: Arc<AtomicUsize>,
    pub(crate) conn: Arc<ConnShared>,
}

impl RxBudgets {
    fn add(&self, bytes: usize) {
        self.event_loop.fetch_add(bytes, Ordering::Relaxed);
        self.conn.rx_held.fetch_add(bytes, Ordering::Relaxed);
    }

    fn sub(&self, bytes: usize) {
        self.event_loop.fetch_sub(bytes, Ordering::Relaxed);
        self.conn.rx_held.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl RxBlock {
    pub(crate) fn new(block: Block, budgets: RxBudgets) -> RxBlock {
        budgets.add(block.capacity());
        RxBlock { block, budgets }
    }

    /// The block, no longer counted as received-and-unreleased.
    fn into_block(mut self) -> Block {
        let empty = self.block.empty_sibling();
        let block = std::mem::replace(&mut self.block, empty);
        self.budgets.sub(block.capacity());
        block
    }
}

impl Drop for RxBlock {
    fn drop(&mut self) {
        self.budgets.sub(self.block.capacity());
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

    /// The frame as a view, for code that takes frames lent by [`super::Receiver::poll`]
    /// and frames kept alike.
    pub fn view(&self) -> FrameView<'_> {
        FrameView {
            block: &self.block,
            start: self.start,
            len: self.len,
            msg_type: self.msg_type,
            conn: self.conn,
        }
    }

    /// The connection it arrived on.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The whole frame, header included.
    pub fn bytes(&self) -> &[u8] {
        self.view().bytes()
    }

    /// The frame's header.
    pub fn header(&self) -> &Header {
        self.view().header()
    }

    /// The (validated) message type.
    pub fn msg_type(&self) -> MsgType {
        self.msg_type
    }

    /// The sender's sequence number.
    pub fn sequence(&self) -> u64 {
        self.view().sequence()
    }

    /// The message, its f32 data borrowed from the pooled block (no copy on an aligned,
    /// little-endian host).
    pub fn message(&self) -> Result<Message<'_>, ProtocolError> {
        self.view().message()
    }

    /// The frame as an outgoing one, in its own block, if no other frame shares the block
    /// (no copy); the frame back otherwise.
    pub(crate) fn into_out_frame(self) -> Result<OutFrame, ReceivedFrame> {
        let ReceivedFrame {
            block,
            start,
            len,
            msg_type,
            conn,
        } = self;
        match Arc::try_unwrap(block) {
            Ok(rx) => Ok(OutFrame {
                block: rx.into_block(),
                start: start as usize,
                len: len as usize,
                msg_type,
                frames: 1,
                stride: None,
            }),
            Err(block) => Err(ReceivedFrame {
                block,
                start,
                len,
                msg_type,
                conn,
            }),
        }
    }
}

/// A received frame lent for the length of a call by [`super::Receiver::poll`]: the same
/// whole, checksum-verified frame as a [`ReceivedFrame`], viewed in its pooled block without
/// taking a share of the block. [`FrameView::to_received`] keeps it past the call.
#[derive(Debug, Clone, Copy)]
pub struct FrameView<'a> {
    block: &'a Arc<RxBlock>,
    start: u32,
    len: u32,
    msg_type: MsgType,
    conn: ConnId,
}

impl<'a> FrameView<'a> {
    /// The connection it arrived on.
    pub fn conn(self) -> ConnId {
        self.conn
    }

    /// The whole frame, header included.
    pub fn bytes(self) -> &'a [u8] {
        let start = self.start as usize;
        &self.block.block.bytes()[start..start + self.len as usize]
    }

    /// The frame's header.
    pub fn header(self) -> &'a Header {
        Header::ref_from_buf(self.bytes()).expect("a received frame holds a whole header")
    }

    /// The (validated) message type.
    pub fn msg_type(self) -> MsgType {
        self.msg_type
    }

    /// The sender's sequence number.
    pub fn sequence(self) -> u64 {
        self.header().sequence()
    }

    /// The message, its f32 data borrowed from the pooled block (no copy on an aligned,
    /// little-endian host).
    pub fn message(self) -> Result<Message<'a>, ProtocolError> {
        parse_payload(self.msg_type, &self.bytes()[HEADER_LEN..])
    }

    /// The frame, kept: it holds a share of its block until dropped.
    pub fn to_received(self) -> ReceivedFrame {
        ReceivedFrame {
            block: Arc::clone(self.block),
            start: self.start,
            len: self.len,
            msg_type: self.msg_type,
            conn: self.conn,
        }
    }
}

/// Encodes `message` at the front of `dst` (a pooled block's room) and returns its length:
/// the streaming small frames through the slice encoder, everything else through
/// [`encode_frame`].
#[inline]
pub(crate) fn encode_into(
    message: &Message<'_>,
    sequence: u64,
    dst: &mut [u8],
) -> Result<usize, ProtocolError> {
    match encode_layer_frame(message, sequence, dst) {
        Some(len) => Ok(len),
        None => encode_frame(message, sequence, &mut &mut dst[..]),
    }
}

/// Encoded frames waiting to be written: one frame, or (from a [`super::Sender`]) several small
/// data frames back to back in one block. Sequence numbers are patched in when the frames take
/// their place in the connection's wire order.
#[derive(Debug)]
pub(crate) struct OutFrame {
    pub(crate) block: Block,
    /// Where the first frame starts in the block (a relayed frame stays where it was read).
    start: usize,
    /// Bytes of the block in use (all frames), from `start`.
    pub(crate) len: usize,
    /// The type of the first frame (every frame of a batch is a small data frame).
    pub(crate) msg_type: MsgType,
    /// Frames in the block.
    pub(crate) frames: u32,
    /// Set when every frame in the block is of `msg_type` and this many bytes long (a
    /// [`super::Sender`] streaming one kind of frame), so that numbering them needs neither a
    /// walk through their headers nor a check per frame.
    stride: Option<usize>,
}

impl OutFrame {
    /// One frame.
    pub(crate) fn single(block: Block, len: usize, msg_type: MsgType) -> OutFrame {
        OutFrame::batch(block, len, msg_type, 1)
    }

    /// `message`, `len` bytes long ([`crate::wire::frame_len`]), encoded into a pooled block
    /// of its own with `sequence` (0 for an application frame: it is numbered when it takes
    /// its place in wire order).
    pub(crate) fn encode(
        pool: &BufferPool,
        message: &Message<'_>,
        sequence: u64,
        len: usize,
    ) -> Result<OutFrame, ProtocolError> {
        let mut block = pool.take(len);
        encode_into(message, sequence, &mut block.bytes_mut()[..len])?;
        Ok(OutFrame::single(block, len, message.msg_type()))
    }

    /// `frames` small data frames back to back from the start of the block, the first of
    /// type `msg_type`.
    pub(crate) fn batch(block: Block, len: usize, msg_type: MsgType, frames: u32) -> OutFrame {
        OutFrame {
            block,
            start: 0,
            len,
            msg_type,
            frames,
            stride: None,
        }
    }

    /// [`OutFrame::batch`] of `frames` frames all of type `msg_type` and `stride` bytes long.
    pub(crate) fn uniform_batch(
        block: Block,
        msg_type: MsgType,
        frames: u32,
        stride: usize,
    ) -> OutFrame {
        let mut batch = OutFrame::batch(block, frames as usize * stride, msg_type, frames);
        batch.stride = Some(stride);
        batch
    }

    /// Whether the frame goes in the bulk lane, behind which small frames may overtake.
    pub(crate) fn is_bulk(&self) -> bool {
        Self::is_bulk_frame(self.msg_type, self.frames, self.len)
    }

    /// Whether `frames` frames of `len` bytes, the first of type `msg_type`, go in the bulk
    /// lane: a lone WeightSync, or a lone frame over the bulk threshold.
    pub(crate) fn is_bulk_frame(msg_type: MsgType, frames: u32, len: usize) -> bool {
        frames == 1 && (msg_type == MsgType::WeightSync || len > super::BULK_THRESHOLD)
    }

    pub(crate) fn set_sequence(&mut self, sequence: u64) {
        let frame = &mut self.block.bytes_mut()[self.start..];
        if let Some(header) = Header::mut_from_buf(frame) {
            header.set_sequence(sequence);
        }
    }

    /// The frames' offsets, lengths and types, walked through their headers.
    fn each_frame(&self) -> impl Iterator<Item = (usize, usize, Option<MsgType>)> + '_ {
        let bytes = self.bytes();
        let mut pos = 0;
        std::iter::from_fn(move || {
            let header = Header::ref_from_buf(bytes.get(pos..)?)?;
            let len = HEADER_LEN + header.payload_len() as usize;
            let at = pos;
            pos += len;
            Some((at, len, MsgType::from_u8(bytes[at + 5])))
        })
    }

    /// Gives every frame in the block the session's next data sequence number. Nothing is
    /// taken unless every frame may be sent.
    pub(crate) fn assign_sequences(
        &mut self,
        session: &mut crate::session::Session,
    ) -> Result<(), ProtocolError> {
        if self.frames == 1 {
            let seq = session.next_send_sequence(self.msg_type)?;
            self.set_sequence(seq);
            return Ok(());
        }
        if let Some(stride) = self.stride {
            let first = session.next_send_sequences(self.msg_type, u64::from(self.frames))?;
            let bytes = &mut self.block.bytes_mut()[self.start..self.start + self.len];
            for (frame, seq) in bytes.chunks_exact_mut(stride).zip(first..) {
                if let Some(header) = Header::mut_from_buf(frame) {
                    header.set_sequence(seq);
                }
            }
            return Ok(());
        }
        // Check every frame first (a type checked once per run of equal types), then number
        // them: a batch is sent whole or not at all.
        let mut checked = None;
        let mut count = 0;
        for (at, _, msg_type) in self.each_frame() {
            let msg_type = msg_type.ok_or(ProtocolError::UnknownMessageType {
                msg_type: self.bytes()[at + 5],
            })?;
            if checked != Some(msg_type) {
                session.check_send(msg_type)?;
                checked = Some(msg_type);
            }
            count += 1;
        }
        debug_assert_eq!(count, self.frames);
        let mut at = 0;
        while at < self.len {
            let bytes = &mut self.block.bytes_mut()[self.start..];
            let msg_type = MsgType::from_u8(bytes[at + 5]).expect("checked above");
            let payload = u32::from_be_bytes(bytes[at + 6..at + 10].try_into().expect("4 bytes"));
            let seq = session.next_send_sequence(msg_type)?;
            bytes[at + 10..at + 18].copy_from_slice(&seq.to_be_bytes());
            at += HEADER_LEN + payload as usize;
        }
        Ok(())
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.block.bytes()[self.start..self.start + self.len]
    }

    /// Counts the block's frames by type: a lone frame or a uniform batch at once, a mixed
    /// batch through its headers.
    pub(crate) fn tally(&self, tally: &mut TypeTally) {
        if self.frames == 1 || self.stride.is_some() {
            tally.add(self.msg_type, u64::from(self.frames), self.len as u64);
            return;
        }
        for (_, len, msg_type) in self.each_frame() {
            tally.add(msg_type.unwrap_or(self.msg_type), 1, len as u64);
        }
    }
}

/// What a loop hands to the receiver through its main ring.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// One event (a connection change, or a frame).
    Event(super::NetEvent),
    /// Small data frames of one read.
    Batch(FrameBatch),
}

/// Small data frames of one connection read into one block, handed to the receiver as one
/// ring entry and given out one by one.
#[derive(Debug)]
pub(crate) struct FrameBatch {
    pub(crate) block: Arc<RxBlock>,
    /// Offset, length and type of each frame, in arrival order.
    pub(crate) frames: Vec<(u32, u32, MsgType)>,
    /// The next frame to give out.
    pub(crate) next: usize,
    pub(crate) conn: ConnId,
}

impl FrameBatch {
    /// The next frame of the batch, a view sharing its block.
    pub(crate) fn pop(&mut self) -> Option<ReceivedFrame> {
        let frame = self.view(self.next)?.to_received();
        self.next += 1;
        Some(frame)
    }

    /// Frame `i` of the batch, viewed in its block.
    fn view(&self, i: usize) -> Option<FrameView<'_>> {
        let &(start, len, msg_type) = self.frames.get(i)?;
        Some(FrameView {
            block: &self.block,
            start,
            len,
            msg_type,
            conn: self.conn,
        })
    }

    /// Lends up to `max` of the next frames to `f`, in order; returns how many. A frame counts
    /// as given out before `f` sees it (a panicking `f` does not see it again).
    pub(crate) fn lend(&mut self, max: usize, mut f: impl FnMut(FrameView<'_>)) -> usize {
        let first = self.next;
        while self.next - first < max && self.next < self.frames.len() {
            self.next += 1;
            f(self.view(self.next - 1).expect("in the batch"));
        }
        self.next - first
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.next >= self.frames.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::BufferPool;
    use crate::session::{Role, Session, SessionConfig};
    use crate::wire::{encode_frame, frame_len};

    /// A client session past its handshake (its Handshake took sequence 0).
    fn established() -> Session {
        let now = std::time::Instant::now();
        let config = Arc::new(SessionConfig::default());
        let mut client = Session::new(Role::Initiator, Arc::clone(&config), now);
        let mut server = Session::new(Role::Acceptor, config, now);
        while let Some((seq, msg)) = client.poll_transmit() {
            server.handle_frame(now, seq, &msg).unwrap();
        }
        while let Some((seq, msg)) = server.poll_transmit() {
            client.handle_frame(now, seq, &msg).unwrap();
        }
        client
    }

    #[test]
    fn a_uniform_batch_is_numbered_as_a_walk_through_its_headers_numbers_it() {
        let pool = BufferPool::new();
        let data = [0.5f32; 100];
        let msg = Message::ForwardData {
            layer_id: 2,
            data: std::borrow::Cow::Borrowed(&data),
        };
        let len = frame_len(&msg).unwrap();
        let frames = 150;
        let batch = || {
            let mut block = pool.take(frames * len);
            for i in 0..frames {
                let at = i * len;
                encode_frame(&msg, 0, &mut &mut block.bytes_mut()[at..at + len]).unwrap();
            }
            block
        };
        let mut walked = OutFrame::batch(batch(), frames * len, MsgType::ForwardData, 150);
        let mut uniform = OutFrame::uniform_batch(batch(), MsgType::ForwardData, 150, len);
        assert_eq!(uniform.len, walked.len);
        let (mut a, mut b) = (established(), established());
        walked.assign_sequences(&mut a).unwrap();
        uniform.assign_sequences(&mut b).unwrap();
        assert_eq!(uniform.bytes(), walked.bytes());
        let sequences: Vec<u64> = uniform
            .each_frame()
            .map(|(at, _, _)| {
                let header = Header::ref_from_buf(&uniform.bytes()[at..]).unwrap();
                header.sequence()
            })
            .collect();
        assert_eq!(sequences, (1..=150).collect::<Vec<u64>>());
        assert_eq!(b.next_send_sequence(MsgType::ForwardData), Ok(151));
        // Frames still decode: the sequence is outside the checksum.
        let (frame, _) = crate::wire::decode_frame(&uniform.bytes()[len..], 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!((frame.sequence, frame.message), (2, msg));
    }

    #[test]
    fn a_frame_alone_in_its_block_becomes_an_outgoing_frame_without_a_copy() {
        let pool = BufferPool::new();
        let budget = Arc::new(AtomicUsize::new(0));
        let data = [1.5f32, -2.0, 3.25];
        let msg = Message::ForwardData {
            layer_id: 9,
            data: std::borrow::Cow::Borrowed(&data),
        };
        let len = frame_len(&msg).unwrap();
        // The frame sits after 64 bytes of something else, as a later frame of a read does.
        let mut block = pool.take(4096);
        encode_frame(&msg, 41, &mut &mut block.bytes_mut()[64..64 + len]).unwrap();
        let storage = block.bytes().as_ptr();
        let conn = Arc::new(ConnShared::new(
            ConnId(3),
            "127.0.0.1:1".parse().unwrap(),
            0,
            1 << 20,
        ));
        let budgets = RxBudgets {
            event_loop: Arc::clone(&budget),
            conn: Arc::clone(&conn),
        };
        let rx = Arc::new(RxBlock::new(block, budgets));
        assert_eq!(budget.load(Ordering::Relaxed), 4096);
        assert_eq!(conn.rx_held.load(Ordering::Relaxed), 4096);
        let frame = ReceivedFrame::new(rx, 64, len, MsgType::ForwardData, ConnId(3));

        // A second view shares the block: the frame comes back, untouched.
        let other = frame.clone();
        let frame = frame.into_out_frame().unwrap_err();
        assert_eq!(frame.sequence(), 41);
        drop(other);

        let mut out = frame.into_out_frame().unwrap();
        assert_eq!(
            out.block.bytes().as_ptr(),
            storage,
            "the block moved, not copied"
        );
        assert_eq!(
            (
                budget.load(Ordering::Relaxed),
                conn.rx_held.load(Ordering::Relaxed)
            ),
            (0, 0),
            "no longer counted as received"
        );
        out.set_sequence(7);
        let (decoded, used) = crate::wire::decode_frame(out.bytes(), 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(used, len);
        assert_eq!(decoded.sequence, 7);
        assert_eq!(decoded.message, msg);
        assert!(pool.bytes_in_use() >= 4096);
        drop(out);
        assert_eq!(pool.bytes_in_use(), 0);
    }
}
