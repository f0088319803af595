//! Counters and round-trip histograms: relaxed atomics on the hot path, merged on demand.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::wire::ProtocolError;

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

/// Engine-wide metrics.
#[derive(Debug)]
pub(crate) struct EngineMetrics {
    pub(crate) traffic: Counters,
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connections_closed: AtomicU64,
    /// Data frames this node refused (Error APPLICATION sent).
    pub(crate) refusals_sent: AtomicU64,
    /// Data frames peers refused (Error APPLICATION received).
    pub(crate) refusals_received: AtomicU64,
    errors: [AtomicU64; ERROR_KINDS],
    rtt_ns: Mutex<Histogram<u64>>,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics {
            traffic: Counters::default(),
            connections_opened: AtomicU64::new(0),
            connections_closed: AtomicU64::new(0),
            refusals_sent: AtomicU64::new(0),
            refusals_received: AtomicU64::new(0),
            errors: Default::default(),
            rtt_ns: Mutex::new(new_rtt_histogram()),
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
            traffic: self.traffic.snapshot(),
            connections_opened: self.connections_opened.load(Relaxed),
            connections_closed: self.connections_closed.load(Relaxed),
            refusals_sent: self.refusals_sent.load(Relaxed),
            refusals_received: self.refusals_received.load(Relaxed),
            errors_by_code: std::array::from_fn(|i| self.errors[i].load(Relaxed)),
            rtt_ns: rtt,
        }
    }
}

/// A copy of the engine's metrics at one moment.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    /// Frames and bytes over all connections.
    pub traffic: CounterSnapshot,
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
}

impl MetricsSnapshot {
    /// Errors of every kind.
    pub fn total_errors(&self) -> u64 {
        self.errors_by_code.iter().sum()
    }
}
