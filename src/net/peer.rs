//! What a connection shares between its event loop and the application's threads.

use super::coalesce::OpenBlocks;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::metrics::{CounterSnapshot, Counters};
use crate::session::PeerInfo;
use crate::wire::{DisconnectReason, ProtocolError};

/// Identifies a connection for the lifetime of an engine (ids are never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseCause {
    /// A Disconnect frame, sent or received.
    Disconnect(DisconnectReason),
    /// A protocol error, ours or reported by the peer.
    Protocol(ProtocolError),
    /// The socket failed.
    Io(std::io::ErrorKind),
    /// The peer closed the stream without a Disconnect.
    Eof,
    /// The engine shut down.
    Shutdown,
    /// The TLS session failed: the peer's certificate was not trusted, the peer refused ours
    /// (or sent none when one is required), or the peer sent a TLS alert.
    Tls(String),
}

impl std::fmt::Display for CloseCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseCause::Disconnect(r) => write!(f, "disconnected (reason {})", r.0),
            CloseCause::Protocol(e) => write!(f, "protocol error: {e}"),
            CloseCause::Io(k) => write!(f, "I/O error: {k}"),
            CloseCause::Eof => write!(f, "peer closed the connection"),
            CloseCause::Shutdown => write!(f, "engine shut down"),
            CloseCause::Tls(e) => write!(f, "TLS failed: {e}"),
        }
    }
}

const HANDSHAKING: u8 = 0;
const ESTABLISHED: u8 = 1;
const CLOSED: u8 = 2;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnState {
    /// Connected; the handshake has not completed.
    Handshaking,
    /// The handshake completed: data flows.
    Established,
    /// Closed or closing (its last frames may still be leaving).
    Closed,
}

impl ConnState {
    /// The state's name in lower case, as metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            ConnState::Handshaking => "handshaking",
            ConnState::Established => "established",
            ConnState::Closed => "closed",
        }
    }
}

/// A connection's state as the application threads see it.
#[derive(Debug)]
pub(crate) struct ConnShared {
    pub(crate) id: ConnId,
    pub(crate) addr: SocketAddr,
    pub(crate) loop_index: usize,
    /// The connection's slab key in its loop, once adopted.
    slot: AtomicUsize,
    state: AtomicU8,
    capabilities: AtomicU32,
    queued: AtomicUsize,
    pub(crate) counters: Counters,
    last_rtt_ns: AtomicU64,
    /// The round-trip time's variation, smoothed as RFC 3550 smooths interarrival jitter.
    rtt_jitter_ns: AtomicU64,
    info: Mutex<Option<PeerInfo>>,
    /// Boxed: set once, at the end; an open connection pays one pointer for it.
    close_cause: Mutex<Option<Box<CloseCause>>>,
    signal: Mutex<()>,
    changed: Condvar,
    waiters: AtomicUsize,
    /// A release wakes waiting senders only once the queue is down to this (an eighth of its
    /// limit below it), so that a sender that outruns the loop wakes once per eighth of the
    /// queue drained rather than after every write of a 64 KiB block. Waiters re-check at
    /// least every 5 ms, so no wake-up is ever lost: this only decides which releases cut a
    /// wait short. (Half the limit was measured too: it slowed 1 MiB WeightSync streams.)
    wake_below: usize,
    /// Small frames from plain sends, coalescing until the loop takes them.
    pub(crate) open: OpenBlocks,
    /// Bytes of this connection's received frames handed on and not yet released.
    pub(crate) rx_held: AtomicUsize,
}

impl ConnShared {
    pub(crate) fn new(id: ConnId, addr: SocketAddr, loop_index: usize, queue_limit: usize) -> Self {
        ConnShared {
            id,
            addr,
            loop_index,
            slot: AtomicUsize::new(usize::MAX),
            state: AtomicU8::new(HANDSHAKING),
            capabilities: AtomicU32::new(0),
            queued: AtomicUsize::new(0),
            counters: Counters::default(),
            last_rtt_ns: AtomicU64::new(0),
            rtt_jitter_ns: AtomicU64::new(0),
            info: Mutex::new(None),
            close_cause: Mutex::new(None),
            signal: Mutex::new(()),
            changed: Condvar::new(),
            waiters: AtomicUsize::new(0),
            wake_below: queue_limit - queue_limit / 8,
            open: OpenBlocks::default(),
            rx_held: AtomicUsize::new(0),
        }
    }

    pub(crate) fn set_slot(&self, slot: usize) {
        self.slot.store(slot, Ordering::Release);
    }

    pub(crate) fn slot(&self) -> Option<usize> {
        match self.slot.load(Ordering::Acquire) {
            usize::MAX => None,
            slot => Some(slot),
        }
    }

    pub(crate) fn is_established(&self) -> bool {
        self.state.load(Ordering::Acquire) == ESTABLISHED
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLOSED
    }

    pub(crate) fn capabilities(&self) -> u32 {
        self.capabilities.load(Ordering::Relaxed)
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Reserves room for `len` bytes in the send queue, or says how full it is.
    pub(crate) fn try_reserve(&self, len: usize, limit: usize) -> Result<(), usize> {
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        // An empty queue always takes one frame, so a frame larger than the limit can go.
        if before > 0 && before + len > limit {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(before);
        }
        Ok(())
    }

    pub(crate) fn release_queued(&self, len: usize) {
        if len == 0 {
            return;
        }
        let before = self.queued.fetch_sub(len, Ordering::AcqRel);
        if before.saturating_sub(len) <= self.wake_below {
            self.notify();
        }
    }

    pub(crate) fn set_established(&self, info: PeerInfo) {
        self.capabilities
            .store(info.capabilities, Ordering::Relaxed);
        *self.info.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
        self.state.store(ESTABLISHED, Ordering::Release);
        self.notify_all();
    }

    pub(crate) fn set_closed(&self, cause: CloseCause) {
        let mut slot = self.close_cause.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(Box::new(cause));
        }
        drop(slot);
        self.state.store(CLOSED, Ordering::Release);
        self.notify_all();
    }

    pub(crate) fn close_cause(&self) -> Option<CloseCause> {
        self.close_cause
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .cloned()
    }

    pub(crate) fn info(&self) -> Option<PeerInfo> {
        self.info.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records a round trip (only the connection's loop calls this, one heartbeat at a time).
    pub(crate) fn set_rtt(&self, rtt: Duration) {
        let ns = (rtt.as_nanos() as u64).max(1);
        let previous = self.last_rtt_ns.swap(ns, Ordering::Relaxed);
        if previous != 0 {
            // J += (|D| - J) / 16, in integer nanoseconds.
            let jitter = self.rtt_jitter_ns.load(Ordering::Relaxed) as i64;
            let change = ns.abs_diff(previous) as i64;
            let next = jitter + (change - jitter) / 16;
            self.rtt_jitter_ns
                .store(next.max(0) as u64, Ordering::Relaxed);
        }
    }

    /// The smoothed variation of the round-trip time, once two round trips were measured.
    pub(crate) fn rtt_jitter(&self) -> Option<Duration> {
        self.rtt()?;
        Some(Duration::from_nanos(
            self.rtt_jitter_ns.load(Ordering::Relaxed),
        ))
    }

    pub(crate) fn state(&self) -> ConnState {
        match self.state.load(Ordering::Acquire) {
            HANDSHAKING => ConnState::Handshaking,
            ESTABLISHED => ConnState::Established,
            _ => ConnState::Closed,
        }
    }

    pub(crate) fn rtt(&self) -> Option<Duration> {
        match self.last_rtt_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// What the application sees of the connection.
    pub(crate) fn status(&self) -> PeerStatus {
        PeerStatus {
            conn: self.id,
            addr: self.addr,
            state: self.state(),
            info: self.info(),
            rtt: self.rtt(),
            rtt_jitter: self.rtt_jitter(),
            queued_bytes: self.queued(),
            traffic: self.counters(),
        }
    }

    pub(crate) fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    fn notify(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.notify_all();
        }
    }

    fn notify_all(&self) {
        let _guard = self.signal.lock().unwrap_or_else(|e| e.into_inner());
        self.changed.notify_all();
    }

    /// Blocks until `ready()` holds, the timeout passes, or the connection closes.
    pub(crate) fn wait_until(&self, timeout: Duration, ready: impl Fn(&Self) -> bool) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.signal.lock().unwrap_or_else(|e| e.into_inner());
        let result = loop {
            if ready(self) {
                break true;
            }
            if self.is_closed() {
                break false;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                break false;
            }
            // Short waits: a release between the check and the wait is caught on the next turn.
            let wait = (deadline - now).min(Duration::from_millis(5));
            guard = self
                .changed
                .wait_timeout(guard, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

/// A peer as listed by [`super::EngineHandle::peers`].
#[derive(Debug, Clone)]
pub struct PeerStatus {
    /// The connection.
    pub conn: ConnId,
    /// The remote address.
    pub addr: SocketAddr,
    /// Handshaking, established or closing.
    pub state: ConnState,
    /// The handshake's result, once established.
    pub info: Option<PeerInfo>,
    /// The last heartbeat round-trip time.
    pub rtt: Option<Duration>,
    /// How much the round-trip time varies: the mean change between consecutive round
    /// trips, smoothed over about 16 of them (RFC 3550's interarrival jitter). Zero after
    /// the first round trip.
    pub rtt_jitter: Option<Duration>,
    /// Bytes waiting in the send queue.
    pub queued_bytes: usize,
    /// Frames and bytes on this connection.
    pub traffic: CounterSnapshot,
}
