//! One connection inside an event loop: its stream, session, read block and write lanes.
//!
//! Reading: bytes land in a pooled block; whole frames are checked (header, CRC) and parsed in
//! place, fed to the session, and data frames are handed on as [`ReceivedFrame`] views that
//! share the block. The unfinished tail moves to a fresh block, so an idle connection holds no
//! block at all. A frame larger than a pool block gets a block of its own size, announced by
//! its header (already checked against the length cap).
//!
//! Writing: application frames wait in two lanes, urgent (small data) and bulk (WeightSync and
//! anything large). Frames move into wire order (and get their sequence number) urgent first,
//! then one bulk frame at a time, so a large transfer delays a small frame by about one bulk
//! frame; with a bulk rate configured, bulk frames are also spaced out in time (see
//! [`super::pacing`]). Everything in wire order leaves in as few `writev` calls as the socket
//! allows.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::RateLimit;
use super::frame::{Delivery, FrameBatch, OutFrame, ReceivedFrame, RxBlock, RxBudgets};
use super::metrics::{EngineTraffic, LimitCounters};
use super::pacing::Pacer;
use super::peer::ConnShared;
use super::pool::{Block, BufferPool, SIZE_CLASSES};
use super::rate::{RateLimiter, Verdict};
use super::stream::{ByteStream, Stream};
use super::NetEvent;
use crate::session::{Inbound, Lane, Session, TypeTally};
use crate::wire::{
    frame_len, split_frame, DisconnectReason, Header, Message, MsgType, ProtocolError,
};

/// Bytes in wire order below which the next frames are scheduled.
const WIRE_LOW_WATER: usize = 64 * 1024;
/// Buffers handed to one `writev`.
const MAX_IOVECS: usize = 128;
/// Frames up to this long are written directly from one stack buffer.
const SMALL_DIRECT_FRAME: usize = 1024;
/// Reads per connection per loop turn, so one busy peer cannot starve the others.
const READS_PER_TURN: usize = 8;

/// Why a connection's reading stopped for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// The socket has no more bytes (wait for readiness).
    Drained,
    /// More may be there: come back next turn.
    MoreLater,
    /// The consumer is behind: frames are parked until the ring has room.
    Paused,
    /// The peer closed the stream.
    Eof,
}

/// How far a flush got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Everything queued left.
    All,
    /// The socket is full: wait for it to be writable.
    Blocked,
    /// The byte budget ran out with the socket still taking bytes: come back next turn.
    Budget,
    /// Everything scheduled left; the next bulk frame may leave at this instant.
    Paced(Instant),
}

/// Outgoing frames: two lanes waiting, and the frames in wire order.
#[derive(Default)]
struct Lanes {
    urgent: VecDeque<OutFrame>,
    bulk: VecDeque<OutFrame>,
    wire: VecDeque<OutFrame>,
    /// Bytes of the first wire frame already written.
    wire_offset: usize,
    /// Bytes in wire order, not yet written.
    wire_bytes: usize,
    /// Spaces bulk frames out when the engine has a bulk rate.
    pacer: Option<Pacer>,
    /// Since when the peer has not been taking what the node sends it (see
    /// [`Connection::backed_up`]), and the bytes written at the last check. Here rather than
    /// in the connection: only a connection with frames waiting can be backed up, and an
    /// idle one holds no lanes.
    backed_up_since: Option<Instant>,
    bytes_out_seen: u64,
}

impl Lanes {
    fn is_empty(&self) -> bool {
        self.wire.is_empty() && self.urgent.is_empty() && self.bulk.is_empty()
    }

    /// Whether dropping these lanes loses nothing: empty, and no bulk frame's spacing still
    /// running (a fresh pacer would let the next one leave at once).
    fn is_disposable(&self, now: Instant) -> bool {
        self.is_empty() && self.pacer.as_ref().is_none_or(|p| p.ready(now).is_ok())
    }
}

pub(crate) struct Connection {
    pub(crate) stream: Stream,
    pub(crate) session: Session,
    pub(crate) shared: Arc<ConnShared>,
    rx: Option<Block>,
    rx_start: usize,
    rx_filled: usize,
    /// Data frames parsed but not yet accepted by the rings: batches of small frames, and
    /// WeightSync frames one by one (as `Delivery::Event(NetEvent::Frame)`).
    pub(crate) parked: VecDeque<Delivery>,
    /// The write lanes, boxed and freed when idle: most connections are idle most of the time.
    out: Option<Box<Lanes>>,
    /// Set once the read side failed or ended: stop reading.
    pub(crate) read_closed: bool,
    /// When the peer closed its sending side (a half-close), if it did and the connection
    /// stays open for the answers to what it sent.
    pub(crate) half_closed_at: Option<Instant>,
    /// The poll reported the peer's end of stream: read on to it even after a short read.
    pub(crate) peer_finished: bool,
    /// An accepted connection holding a place under the connection limits, which the loop
    /// gives back when it removes the connection.
    pub(crate) admitted: bool,
    /// The peer's rate limits, from its first data frame (when the engine has them), or
    /// those its address's last connection left owing.
    pub(crate) rate: Option<Box<RateLimiter>>,
    /// The last flush stopped at a full socket.
    socket_full: bool,
}

/// The clock and the bulk rate a flush schedules by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    pub(crate) now: Instant,
    /// Bytes per second for bulk frames; `None` sends them as fast as the socket takes them.
    pub(crate) bulk_rate: Option<u64>,
}

/// What the connection needs from its loop while reading.
pub(crate) struct ReadContext<'a> {
    pub(crate) pool: &'a BufferPool,
    pub(crate) rx_budget: &'a Arc<AtomicUsize>,
    pub(crate) rx_limit: usize,
    /// The most one connection may hold of `rx_limit`.
    pub(crate) rx_conn_limit: usize,
    pub(crate) now: Instant,
    pub(crate) traffic: &'a EngineTraffic,
    /// Counts the peers' refusals of our frames.
    pub(crate) refusals: &'a AtomicU64,
    /// Keep an empty read block when the socket runs dry (busy polling reads again at once;
    /// the loop's tick releases it when the connection goes quiet).
    pub(crate) keep_rx: bool,
    /// The per-peer rate limit, if any.
    pub(crate) rate_limit: Option<&'a RateLimit>,
    /// Counts what the limits refused.
    pub(crate) limits: &'a LimitCounters,
}

/// Bytes `write` put in the socket, retried on EINTR; 0 on any other error (the frame stays
/// queued, and the flush that meets the error again closes the connection).
fn written_once(mut write: impl FnMut() -> io::Result<usize>, msg_type: MsgType) -> usize {
    loop {
        match write() {
            Ok(n) => return n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::trace!("direct write of a {msg_type:?} frame: {e}");
                return 0;
            }
        }
    }
}

impl Connection {
    pub(crate) fn new(stream: Stream, session: Session, shared: Arc<ConnShared>) -> Self {
        Connection {
            stream,
            session,
            shared,
            rx: None,
            rx_start: 0,
            rx_filled: 0,
            parked: VecDeque::new(),
            out: None,
            read_closed: false,
            half_closed_at: None,
            peer_finished: false,
            admitted: false,
            rate: None,
            socket_full: false,
        }
    }

    /// Reads and parses until the socket is drained, the turn's share is used, or the
    /// consumer is behind. Data frames are appended to `parked`, for the loop to push.
    /// Protocol errors close the session (which queues its Error frame); an I/O error is
    /// returned.
    pub(crate) fn read(&mut self, cx: &ReadContext<'_>) -> io::Result<ReadOutcome> {
        for _ in 0..READS_PER_TURN {
            if !self.parked.is_empty() || !self.may_receive(cx) {
                return Ok(ReadOutcome::Paused);
            }
            // Until the handshake completes a peer has earned only a small block: a
            // handshake is a few hundred bytes, and an unknown peer must not cost the node
            // a full read block (larger frames grow the block as their bytes arrive).
            let size = if self.session.is_established() {
                SIZE_CLASSES[SIZE_CLASSES.len() - 1]
            } else {
                SIZE_CLASSES[1]
            };
            let block = self.rx.get_or_insert_with(|| cx.pool.take(size));
            let room = &mut block.bytes_mut()[self.rx_filled..];
            let asked = room.len();
            let n = match self.stream.read(room) {
                Ok(0) => return Ok(ReadOutcome::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !cx.keep_rx {
                        self.release_empty_rx();
                    }
                    return Ok(ReadOutcome::Drained);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.read_closed = true;
                    return Err(e);
                }
            };
            self.rx_filled += n;
            self.shared.counters.add_in(0, n as u64);
            cx.traffic.add_in(0, n as u64);
            self.parse(cx);
            if self.read_closed {
                return Ok(ReadOutcome::Drained);
            }
            if n < asked && !self.peer_finished {
                // A short read emptied the socket: bytes arriving later raise a new edge, so
                // the read that would only say WouldBlock is saved (tokio does the same).
                return Ok(ReadOutcome::Drained);
            }
        }
        Ok(ReadOutcome::MoreLater)
    }

    /// Whether the loop's and the connection's budgets of received bytes the application
    /// has not released leave room to read more.
    pub(crate) fn may_receive(&self, cx: &ReadContext<'_>) -> bool {
        cx.rx_budget.load(Ordering::Relaxed) <= cx.rx_limit
            && self.shared.rx_held.load(Ordering::Relaxed) <= cx.rx_conn_limit
    }

    /// Whether the peer's end of stream may be a half-close to linger on: the session is
    /// established and open, and no frame was cut off (a peer that stops mid-frame is gone).
    pub(crate) fn may_linger(&self) -> bool {
        self.session.is_established()
            && !self.session.is_closed()
            && self.rx_filled == self.rx_start
    }

    fn release_empty_rx(&mut self) {
        if self.rx_filled == self.rx_start {
            self.rx = None;
            self.rx_start = 0;
            self.rx_filled = 0;
        }
    }

    /// Parses the whole frames in the read block.
    fn parse(&mut self, cx: &ReadContext<'_>) {
        let Some(block) = self.rx.as_ref() else {
            return;
        };
        // Data frames as they parse: small ones become one batch (this Vec is the batch's),
        // WeightSync frames go one by one to the bulk ring.
        // A refusal from the peer (rare) keeps its place among the small frames: it is
        // noted with the number of small frames before it.
        let mut small: Vec<(u32, u32, MsgType)> = Vec::new();
        let mut bulk: Vec<(usize, usize)> = Vec::new();
        let mut refusals: Vec<(usize, NetEvent)> = Vec::new();
        let start = self.rx_start;
        let conn = self.shared.id;
        let bytes = &block.bytes()[start..self.rx_filled];
        // Data frames over the peer's rate limit: their sequence numbers, to refuse.
        let mut over_rate: Vec<u64> = Vec::new();
        let mut rate_close = false;
        let (mut data_frames, mut data_bytes) = (0u64, 0u64);
        let rate = &mut self.rate;
        let progress = self.session.read(cx.now, bytes, |inbound| {
            if let (Inbound::Data(frame), Some(limit)) = (&inbound, cx.rate_limit) {
                data_frames += 1;
                data_bytes += frame.len as u64;
                if rate_close {
                    return;
                }
                let limiter = rate.get_or_insert_with(|| Box::new(RateLimiter::new(limit, cx.now)));
                match limiter.admit(cx.now, 1, frame.len as u64) {
                    Verdict::Admit => {}
                    Verdict::Refuse => {
                        let header = Header::ref_from_buf(&bytes[frame.start..])
                            .expect("a checked frame has a header");
                        over_rate.push(header.sequence());
                        return;
                    }
                    Verdict::Close => {
                        rate_close = true;
                        return;
                    }
                }
            }
            match inbound {
                Inbound::Data(frame) if frame.lane() == Lane::Bulk => {
                    bulk.push((start + frame.start, frame.len))
                }
                Inbound::Data(frame) => small.push((
                    (start + frame.start) as u32,
                    frame.len as u32,
                    frame.msg_type,
                )),
                Inbound::Refused { sequence, reason } => refusals.push((
                    small.len(),
                    NetEvent::Refused {
                        conn,
                        sequence,
                        reason,
                    },
                )),
            }
        });
        if !refusals.is_empty() {
            cx.refusals
                .fetch_add(refusals.len() as u64, Ordering::Relaxed);
        }
        self.shared.counters.add_in(progress.frames, 0);
        cx.traffic.add_in(progress.frames, 0);
        cx.traffic.add_types_in(&progress.by_type);
        if let Some(limiter) = self.rate.as_mut() {
            // Control frames count towards the limits too (the session has already answered
            // them; over the limit they count towards closing).
            let control_frames = progress.frames - data_frames;
            let all_bytes: u64 = progress.by_type.iter().map(|(_, _, b)| b).sum();
            if control_frames > 0
                && limiter.admit(cx.now, control_frames, all_bytes - data_bytes) == Verdict::Close
            {
                rate_close = true;
            }
            self.limit_rate(cx, over_rate, rate_close);
        }
        if self.session.is_closed() {
            self.read_closed = true;
        }
        let pos = start + progress.consumed;
        let needed = progress.needed;
        self.rx_start = pos;
        let tail = self.rx_filled - pos;
        if !small.is_empty() || !bulk.is_empty() {
            // Share the block with the frames; carry the unfinished tail to a fresh block.
            let block = self.rx.take().expect("block present");
            let fresh = (tail > 0).then(|| {
                let mut b = cx
                    .pool
                    .take(needed.max(SIZE_CLASSES[SIZE_CLASSES.len() - 1]));
                b.bytes_mut()[..tail].copy_from_slice(&block.bytes()[pos..self.rx_filled]);
                b
            });
            let budgets = RxBudgets {
                event_loop: Arc::clone(cx.rx_budget),
                conn: Arc::clone(&self.shared),
            };
            let shared = Arc::new(RxBlock::new(block, budgets));
            let batch = |frames| {
                Delivery::Batch(FrameBatch {
                    block: Arc::clone(&shared),
                    frames,
                    next: 0,
                    conn,
                })
            };
            // The small frames in batches, cut where a refusal came between them.
            let mut rest = small;
            let mut taken = 0;
            for (before, refusal) in refusals.drain(..) {
                let after = rest.split_off(before - taken);
                if !rest.is_empty() {
                    self.parked.push_back(batch(rest));
                }
                self.parked.push_back(Delivery::Event(refusal));
                taken = before;
                rest = after;
            }
            if !rest.is_empty() {
                self.parked.push_back(batch(rest));
            }
            self.parked.extend(bulk.into_iter().map(|(start, len)| {
                Delivery::Event(NetEvent::Frame(ReceivedFrame::new(
                    Arc::clone(&shared),
                    start,
                    len,
                    MsgType::WeightSync,
                    self.shared.id,
                )))
            }));
            self.rx = fresh;
            self.rx_start = 0;
            self.rx_filled = tail;
        } else if tail == 0 {
            self.parked
                .extend(refusals.drain(..).map(|(_, r)| Delivery::Event(r)));
            self.rx = None;
            self.rx_start = 0;
            self.rx_filled = 0;
        } else if let Some(block) = self.rx.as_mut() {
            self.parked
                .extend(refusals.drain(..).map(|(_, r)| Delivery::Event(r)));
            if pos + needed > block.capacity() {
                // The unfinished frame does not fit where it is: move it to the front of a
                // block big enough for all of it.
                if needed <= block.capacity() {
                    block.bytes_mut().copy_within(pos..self.rx_filled, 0);
                } else {
                    let mut bigger = cx.pool.take(needed);
                    bigger.bytes_mut()[..tail].copy_from_slice(&block.bytes()[pos..self.rx_filled]);
                    *block = bigger;
                }
                self.rx_start = 0;
                self.rx_filled = tail;
            }
        }
    }

    /// Refuses the data frames `over_rate` (Error APPLICATION, the session stays open), or
    /// closes a peer that kept on over its rate limit (Disconnect OVERLOADED); counts both
    /// and logs the first of each on this connection.
    fn limit_rate(&mut self, cx: &ReadContext<'_>, over_rate: Vec<u64>, close: bool) {
        let Some(limiter) = self.rate.as_mut() else {
            return;
        };
        let addr = self.shared.addr;
        if !over_rate.is_empty() || close {
            if !std::mem::replace(&mut limiter.logged, true) {
                log::warn!(
                    "peer {addr} ({}) is over its rate limit: its data frames are refused \
                     (counted, not logged, from now on)",
                    self.shared.id
                );
            }
            cx.limits
                .rate_refused
                .fetch_add(over_rate.len() as u64, Ordering::Relaxed);
            for sequence in over_rate {
                self.session
                    .refuse(sequence, "over this node's rate limit: send more slowly");
            }
        }
        if close && !self.session.is_closed() {
            log::warn!(
                "peer {addr} ({}) kept on over its rate limit: disconnected (OVERLOADED)",
                self.shared.id
            );
            LimitCounters::count(&cx.limits.rate_closed);
            self.session.close(
                DisconnectReason::OVERLOADED,
                "too many frames over this node's rate limit",
            );
        }
    }

    /// Whether the peer has not been taking what the node sends it for `timeout`: at each
    /// check (the loop's tick) the socket was full and either nothing was written since the
    /// previous check or the send queue was at least `full_at` bytes (sends to it would
    /// wait). One check that finds it otherwise starts the clock again.
    pub(crate) fn backed_up(&mut self, now: Instant, full_at: usize, timeout: Duration) -> bool {
        let written = self.shared.counters.bytes_out.load(Ordering::Relaxed);
        let (socket_full, queued) = (self.socket_full, self.shared.queued());
        let Some(lanes) = self.out.as_deref_mut() else {
            return false;
        };
        let stalled = written == lanes.bytes_out_seen && !lanes.is_empty();
        lanes.bytes_out_seen = written;
        if !(socket_full && (stalled || queued >= full_at)) {
            lanes.backed_up_since = None;
            return false;
        }
        let since = *lanes.backed_up_since.get_or_insert(now);
        now.duration_since(since) >= timeout
    }

    /// Drops the application frames not yet in wire order (a slow consumer is being cut
    /// off: what it did not read will not reach it).
    pub(crate) fn drop_unsent(&mut self) {
        if let Some(lanes) = self.out.as_deref_mut() {
            let dropped: usize = lanes
                .urgent
                .drain(..)
                .chain(lanes.bulk.drain(..))
                .map(|f| f.len)
                .sum();
            self.shared.release_queued(dropped);
        }
    }

    fn lanes(&mut self) -> &mut Lanes {
        self.out.get_or_insert_with(Box::default)
    }

    /// Queues an application frame (already counted in the shared queued bytes).
    pub(crate) fn enqueue(&mut self, frame: OutFrame) {
        let lanes = self.lanes();
        if frame.is_bulk() {
            lanes.bulk.push_back(frame);
        } else {
            lanes.urgent.push_back(frame);
        }
    }

    /// Encodes the session's control frames straight into wire order.
    pub(crate) fn take_control_frames(&mut self, pool: &BufferPool) {
        while let Some((sequence, message)) = self.session.poll_transmit() {
            if let Err(e) = self.push_control(pool, sequence, &message) {
                log::warn!("could not encode a control frame: {e}");
            }
        }
    }

    fn push_control(
        &mut self,
        pool: &BufferPool,
        sequence: u64,
        message: &Message<'_>,
    ) -> Result<(), ProtocolError> {
        let frame = OutFrame::encode(pool, message, sequence, frame_len(message)?)?;
        let lanes = self.lanes();
        lanes.wire_bytes += frame.len;
        lanes.wire.push_back(frame);
        Ok(())
    }

    /// Writes `message` from the caller's memory if nothing is queued ahead of it (no control
    /// frame, no application frame, no bulk frame held back by the pace): the head is encoded
    /// on the stack and the values go to `writev` where they are, at most `budget` bytes of
    /// the frame. What the socket does not take is copied into a pooled block and left in
    /// wire order for the next flush (a write error included: the flush meets it again and
    /// closes the connection). Returns `Ok(false)`, doing nothing, when the message must be
    /// queued the ordinary way (something is queued, the pace holds bulk back, or the values
    /// cannot be written in place). Its `len` bytes must be reserved in the send queue.
    pub(crate) fn write_direct(
        &mut self,
        message: &Message<'_>,
        len: usize,
        pool: &BufferPool,
        pace: Pace,
        traffic: &EngineTraffic,
        budget: usize,
    ) -> Result<bool, ProtocolError> {
        let msg_type = message.msg_type();
        self.take_control_frames(pool);
        let paced = pace.bulk_rate.is_some() && OutFrame::is_bulk_frame(msg_type, 1, len);
        if paced || self.wants_write() {
            return Ok(false);
        }
        // Big-endian hosts and control messages have no values to leave in place.
        let Some(mut parts) = split_frame(message, 0)? else {
            return Ok(false);
        };
        parts.set_sequence(self.session.next_send_sequence(msg_type)?);
        debug_assert_eq!(parts.len(), len);
        let mut left = budget.max(1);
        let slices = parts.pieces().map(|piece| {
            let keep = piece.len().min(left);
            left -= keep;
            IoSlice::new(&piece[..keep])
        });
        let stream = &mut self.stream;
        let written = if len <= SMALL_DIRECT_FRAME {
            // A small frame goes out of one stack buffer with a plain write: copying it costs
            // less than the kernel's import of an iovec array.
            let mut small = [0u8; SMALL_DIRECT_FRAME];
            parts.copy_into(0, &mut small[..len]);
            written_once(|| stream.write(&small[..len]), msg_type)
        } else {
            written_once(|| stream.write_vectored(&slices), msg_type)
        };
        if written > 0 {
            let frames = u64::from(written == len);
            self.session.on_sent(pace.now);
            self.shared.counters.add_out(frames, written as u64);
            traffic.add_out(frames, written as u64);
            let mut sent = TypeTally::default();
            sent.add(msg_type, frames, written as u64);
            traffic.add_types_out(&sent);
        }
        if written == len {
            self.shared.release_queued(len);
            return Ok(true);
        }
        // The unwritten tail becomes a frame in wire order (already numbered); the written
        // part leaves the send queue now, the tail when it is written.
        let tail = len - written;
        let mut block = pool.take(tail);
        parts.copy_into(written, &mut block.bytes_mut()[..tail]);
        self.shared.release_queued(written);
        let lanes = self.lanes();
        lanes.wire_bytes += tail;
        lanes
            .wire
            .push_back(OutFrame::single(block, tail, msg_type));
        Ok(true)
    }

    /// Gives every queued frame its place in wire order, so that a close queued next leaves
    /// after them: frames accepted before a close are not lost.
    pub(crate) fn commit_queued(&mut self) {
        if let Some(lanes) = self.out.as_deref_mut() {
            let unpaced = Pace {
                now: Instant::now(),
                bulk_rate: None,
            };
            Self::schedule(lanes, &mut self.session, &self.shared, usize::MAX, unpaced);
        }
    }

    /// Moves queued frames into wire order while the wire is shorter than `low_water`:
    /// urgent first, then one bulk frame if the pace allows. Returns when the next bulk
    /// frame may leave, if the pace held one back.
    fn schedule(
        lanes: &mut Lanes,
        session: &mut Session,
        shared: &ConnShared,
        low_water: usize,
        pace: Pace,
    ) -> Option<Instant> {
        while lanes.wire_bytes < low_water {
            let mut frame = match lanes.urgent.pop_front() {
                Some(frame) => frame,
                None => {
                    let len = lanes.bulk.front()?.len;
                    if let Some(rate) = pace.bulk_rate {
                        let pacer = lanes.pacer.get_or_insert_with(|| Pacer::new(rate));
                        if let Err(at) = pacer.ready(pace.now) {
                            return Some(at);
                        }
                        pacer.on_departure(pace.now, len);
                    }
                    lanes.bulk.pop_front().expect("front exists")
                }
            };
            match frame.assign_sequences(session) {
                Ok(()) => {
                    lanes.wire_bytes += frame.len;
                    lanes.wire.push_back(frame);
                }
                Err(e) => {
                    log::debug!(
                        "dropping {} queued frame(s) ({:?} first): {e}",
                        frame.frames,
                        frame.msg_type
                    );
                    shared.release_queued(frame.len);
                }
            }
        }
        None
    }

    /// Whether anything waits to be written.
    pub(crate) fn wants_write(&self) -> bool {
        self.out.as_ref().is_some_and(|l| !l.is_empty())
    }

    /// Writes as much as the socket takes, or about `budget` bytes (a write in progress is
    /// finished): a thread that must also read the replies does not spend a turn copying
    /// megabytes of bulk into the kernel.
    pub(crate) fn flush(
        &mut self,
        pace: Pace,
        traffic: &EngineTraffic,
        budget: usize,
    ) -> io::Result<Flushed> {
        let Some(lanes) = self.out.as_deref_mut() else {
            // Nothing queued here, but the stream may hold records of its own (TLS).
            let flushed = self.stream.flush_pending()?;
            self.socket_full = !flushed;
            return Ok(if flushed {
                Flushed::All
            } else {
                Flushed::Blocked
            });
        };
        let now = pace.now;
        let mut left = budget;
        loop {
            let paced =
                Self::schedule(lanes, &mut self.session, &self.shared, WIRE_LOW_WATER, pace);
            if lanes.wire.is_empty() {
                if !self.stream.flush_pending()? {
                    self.socket_full = true;
                    return Ok(Flushed::Blocked);
                }
                self.socket_full = false;
                return Ok(paced.map_or(Flushed::All, Flushed::Paced));
            }
            if left == 0 {
                return Ok(Flushed::Budget);
            }
            let result = if lanes.wire.len() == 1 {
                // The common case of a lone frame, without filling an iovec array.
                let bytes = &lanes.wire[0].bytes()[lanes.wire_offset..];
                self.stream.write(bytes)
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                for (i, frame) in lanes.wire.iter().take(MAX_IOVECS).enumerate() {
                    let skip = if i == 0 { lanes.wire_offset } else { 0 };
                    slices[i] = IoSlice::new(&frame.bytes()[skip..]);
                    count += 1;
                }
                self.stream.write_vectored(&slices[..count])
            };
            let written = match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.socket_full = true;
                    return Ok(Flushed::Blocked);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            left = left.saturating_sub(written);
            self.session.on_sent(now);
            let mut sent = TypeTally::default();
            let (frames, bytes) = Self::consume_written(lanes, &self.shared, written, &mut sent);
            self.shared.counters.add_out(frames, bytes);
            traffic.add_out(frames, bytes);
            traffic.add_types_out(&sent);
        }
    }

    fn consume_written(
        lanes: &mut Lanes,
        shared: &ConnShared,
        mut written: usize,
        sent: &mut TypeTally,
    ) -> (u64, u64) {
        let mut frames = 0;
        let bytes = written as u64;
        while written > 0 {
            let front = lanes
                .wire
                .front()
                .expect("written bytes belong to queued frames");
            let left = front.len - lanes.wire_offset;
            if written < left {
                lanes.wire_offset += written;
                break;
            }
            written -= left;
            lanes.wire_offset = 0;
            let frame = lanes.wire.pop_front().expect("front exists");
            lanes.wire_bytes -= frame.len;
            frames += u64::from(frame.frames);
            frame.tally(sent);
            if frame.msg_type.is_data() {
                shared.release_queued(frame.len);
            }
        }
        (frames, bytes)
    }

    /// Frees every buffer of a connection with nothing in flight, so that an idle
    /// connection costs only its bookkeeping.
    pub(crate) fn release_idle_memory(&mut self, now: Instant) {
        if self.out.as_ref().is_some_and(|l| l.is_disposable(now)) {
            self.out = None;
        }
        if self.parked.is_empty() {
            self.parked = VecDeque::new();
        }
        self.release_empty_rx();
        self.stream.release_idle_memory();
        self.session.release_idle_memory();
    }

    /// Releases every queued application frame (the connection is going away).
    pub(crate) fn discard_queues(&mut self) {
        if let Some(mut lanes) = self.out.take() {
            let queued: usize = lanes
                .urgent
                .drain(..)
                .chain(lanes.bulk.drain(..))
                .map(|f| f.len)
                .sum();
            self.shared.release_queued(queued);
        }
    }
}
