//! Counters and round-trip histograms: relaxed atomics on the hot path, merged on demand.
//!
//! Counting by message type costs a plain add per frame into a [`TypeTally`] the reading or
//! writing code owns; the shared atomics are touched once per read or write call, for the
//! types that call saw. [`super::exposition`] renders a snapshot in Prometheus' text format.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::session::TypeTally;
use crate::wire::{MsgType, ProtocolError};

/// Number of error-kind slots: one per wire [`crate::wire::ErrorCode`] up to 15, plus I/O.
const ERROR_KINDS: usize = 16;
/// The slot counting I/O errors (resets, refused connections...).
pub(crate) const IO_ERROR_SLOT: usize = 0;

/// Frame and byte counters of one connection or of the whole engine.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
}

impl Counters {
    pub(crate) fn add_in(&self, frames: u64, bytes: u64) {
        self.frames_in.fetch_add(frames, Relaxed);
        self.bytes_in.fetch_add(bytes, Relaxed);
    }

    pub(crate) fn add_out(&self, frames: u64, bytes: u64) {
        self.frames_out.fetch_add(frames, Relaxed);
        self.bytes_out.fetch_add(bytes, Relaxed);
    }

    /// A plain copy of the counters.
    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            frames_in: self.frames_in.load(Relaxed),
            frames_out: self.frames_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
        }
    }
}

/// Frames and bytes in each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
}

/// Frames and bytes of whole frames, by type, in one direction.
#[derive(Debug, Default)]
#[repr(align(128))] // Its own cache lines: one loop reads while another writes.
pub(crate) struct TypeCounters {
    frames: [AtomicU64; MsgType::ALL.len()],
    bytes: [AtomicU64; MsgType::ALL.len()],
}

impl TypeCounters {
    fn add(&self, tally: &TypeTally) {
        for (msg_type, frames, bytes) in tally.iter() {
            self.frames[msg_type.index()].fetch_add(frames, Relaxed);
            self.bytes[msg_type.index()].fetch_add(bytes, Relaxed);
        }
    }
}

/// The engine's traffic: bytes and frames as they cross the sockets, and whole frames by type.
#[derive(Debug, Default)]
pub(crate) struct EngineTraffic {
    all: Counters,
    types_in: TypeCounters,
    types_out: TypeCounters,
}

impl EngineTraffic {
    pub(crate) fn add_in(&self, frames: u64, bytes: u64) {
        self.all.add_in(frames, bytes);
    }

    pub(crate) fn add_out(&self, frames: u64, bytes: u64) {
        self.all.add_out(frames, bytes);
    }

    /// Whole frames received, by type.
    pub(crate) fn add_types_in(&self, tally: &TypeTally) {
        self.types_in.add(tally);
    }

    /// Frames sent, by type (a frame's bytes count once all of them have left).
    pub(crate) fn add_types_out(&self, tally: &TypeTally) {
        self.types_out.add(tally);
    }

    fn by_type(&self) -> [CounterSnapshot; MsgType::ALL.len()] {
        std::array::from_fn(|i| CounterSnapshot {
            frames_in: self.types_in.frames[i].load(Relaxed),
            frames_out: self.types_out.frames[i].load(Relaxed),
            bytes_in: self.types_in.bytes[i].load(Relaxed),
            bytes_out: self.types_out.bytes[i].load(Relaxed),
        })
    }
}

/// Engine-wide metrics.
#[derive(Debug)]
pub(crate) struct EngineMetrics {
    pub(crate) traffic: EngineTraffic,
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connections_closed: AtomicU64,
    /// Data frames this node refused (Error APPLICATION sent).
    pub(crate) refusals_sent: AtomicU64,
    /// Data frames peers refused (Error APPLICATION received).
    pub(crate) refusals_received: AtomicU64,
    errors: [AtomicU64; ERROR_KINDS],
    rtt_ns: Mutex<Histogram<u64>>,
    /// Connections whose TLS session failed.
    pub(crate) tls_failures: AtomicU64,
    /// What the engine's limits refused.
    pub(crate) limits: LimitCounters,
}

/// What the engine's limits refused, one counter per limit ([`super::Limits`],
/// [`crate::session::SessionConfig::handshake_timeout`]).
#[derive(Debug, Default)]
pub(crate) struct LimitCounters {
    pub(crate) max_connections: AtomicU64,
    pub(crate) max_connections_per_address: AtomicU64,
    pub(crate) handshake_timeout: AtomicU64,
    pub(crate) slow_consumer: AtomicU64,
    pub(crate) rate_refused: AtomicU64,
    pub(crate) rate_closed: AtomicU64,
    pub(crate) rate_penalty: AtomicU64,
    pub(crate) rate_filtered: AtomicU64,
}

impl LimitCounters {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LimitRefusals {
        LimitRefusals {
            max_connections: self.max_connections.load(Relaxed),
            max_connections_per_address: self.max_connections_per_address.load(Relaxed),
            handshake_timeout: self.handshake_timeout.load(Relaxed),
            slow_consumer: self.slow_consumer.load(Relaxed),
            rate_refused: self.rate_refused.load(Relaxed),
            rate_closed: self.rate_closed.load(Relaxed),
            rate_penalty: self.rate_penalty.load(Relaxed),
            rate_filtered: self.rate_filtered.load(Relaxed),
        }
    }
}

/// What the engine's limits refused since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitRefusals {
    /// Connections refused because [`super::Limits::max_connections`] were open.
    pub max_connections: u64,
    /// Connections refused because [`super::Limits::max_connections_per_address`] from
    /// their address were open.
    pub max_connections_per_address: u64,
    /// Connections closed because their handshake did not complete within
    /// [`crate::session::SessionConfig::handshake_timeout`].
    pub handshake_timeout: u64,
    /// Connections closed as slow consumers ([`super::Limits::slow_consumer_timeout`]).
    pub slow_consumer: u64,
    /// Data frames refused over a peer's [`super::RateLimit`].
    pub rate_refused: u64,
    /// Connections closed for keeping on over their [`super::RateLimit`].
    pub rate_closed: u64,
    /// Connections turned away because one from their address was closed for keeping on
    /// over its [`super::RateLimit`] within the last second.
    pub rate_penalty: u64,
    /// Addresses whose connections the listening sockets dropped before accepting them
    /// (a socket filter), for the rest of the second in which a connection from each was
    /// closed for keeping on over its [`super::RateLimit`]: counted as each enters the
    /// filter. What a filter drops is not counted one by one (the kernel drops it).
    pub rate_filtered: u64,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics {
            traffic: EngineTraffic::default(),
            connections_opened: AtomicU64::new(0),
            connections_closed: AtomicU64::new(0),
            refusals_sent: AtomicU64::new(0),
            refusals_received: AtomicU64::new(0),
            errors: Default::default(),
            rtt_ns: Mutex::new(new_rtt_histogram()),
            limits: LimitCounters::default(),
            tls_failures: AtomicU64::new(0),
        }
    }
}

/// A histogram of round-trip times in nanoseconds, 1 ns to 100 s, 3 significant figures.
pub fn new_rtt_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("constant bounds are valid")
}

impl EngineMetrics {
    pub(crate) fn count_error(&self, error: &ProtocolError) {
        let slot = usize::from(error.code().0).min(ERROR_KINDS - 1);
        self.errors[slot].fetch_add(1, Relaxed);
    }

    pub(crate) fn count_io_error(&self) {
        self.errors[IO_ERROR_SLOT].fetch_add(1, Relaxed);
    }

    /// Counts a failed stream: a TLS failure as such, anything else as an I/O error.
    pub(crate) fn count_stream_failure(&self, e: &std::io::Error) {
        if super::stream::TlsFailure::of(e).is_some() {
            self.tls_failures.fetch_add(1, Relaxed);
        } else {
            self.count_io_error();
        }
    }

    pub(crate) fn record_rtt(&self, rtt: Duration) {
        let ns = (rtt.as_nanos() as u64).clamp(1, 100_000_000_000);
        if let Ok(mut h) = self.rtt_ns.lock() {
            let _ = h.record(ns);
        }
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let rtt = self
            .rtt_ns
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| new_rtt_histogram());
        MetricsSnapshot {
            traffic: self.traffic.all.snapshot(),
            by_type: self.traffic.by_type(),
            connections_opened: self.connections_opened.load(Relaxed),
            connections_closed: self.connections_closed.load(Relaxed),
            refusals_sent: self.refusals_sent.load(Relaxed),
            refusals_received: self.refusals_received.load(Relaxed),
            errors_by_code: std::array::from_fn(|i| self.errors[i].load(Relaxed)),
            rtt_ns: rtt,
            limit_refusals: self.limits.snapshot(),
            tls_failures: self.tls_failures.load(Relaxed),
        }
    }
}

/// A copy of the engine's metrics at one moment.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    /// Frames and bytes over all connections (bytes as they cross the sockets, frames once
    /// whole).
    pub traffic: CounterSnapshot,
    /// Whole frames and their bytes by type, indexed by [`MsgType::index`] (see
    /// [`MetricsSnapshot::of_type`]). A frame sent counts once all its bytes have left.
    pub by_type: [CounterSnapshot; MsgType::ALL.len()],
    /// Connections accepted or connected.
    pub connections_opened: u64,
    /// Connections closed.
    pub connections_closed: u64,
    /// Data frames this node refused (an Error APPLICATION sent; the connection stayed open).
    pub refusals_sent: u64,
    /// Data frames peers refused.
    pub refusals_received: u64,
    /// Errors by wire error code (`errors_by_code[5]` counts checksum mismatches); slot 0
    /// counts I/O errors.
    pub errors_by_code: [u64; ERROR_KINDS],
    /// Heartbeat round-trip times in nanoseconds.
    pub rtt_ns: Histogram<u64>,
    /// What the engine's limits refused.
    pub limit_refusals: LimitRefusals,
    /// Connections whose TLS session failed (a certificate not trusted or missing, an alert
    /// from the peer); not counted in `errors_by_code`.
    pub tls_failures: u64,
}

impl MetricsSnapshot {
    /// Frames and bytes of one type, in and out.
    pub fn of_type(&self, msg_type: MsgType) -> CounterSnapshot {
        self.by_type[msg_type.index()]
    }

    /// Errors of every kind.
    pub fn total_errors(&self) -> u64 {
        self.errors_by_code.iter().sum()
    }
}
