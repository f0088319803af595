//! Pacing of bulk frames: a per-connection rate for WeightSync and other large frames.
//!
//! TCP delivers bytes in order, so a small frame queued behind bulk bytes already in the
//! kernel waits for all of them to be read at the other end; and a bulk stream that runs as
//! fast as the CPU allows takes the cores the latency-critical threads need. Spacing bulk
//! frames out in time bounds both: a small frame waits behind at most about one bulk frame,
//! and the bulk work leaves room on the cores (PERF.md measures the trade against the rate).
//!
//! The rule is the generic cell rate algorithm: each bulk frame has a theoretical departure
//! time, a frame may leave once that time has come, and its length pushes the next one back
//! by `len / rate`. No burst is allowed beyond one frame, which is what bounds the delay.

use std::time::{Duration, Instant};

/// When the next bulk frame may leave, for one connection.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    bytes_per_second: u64,
    /// The earliest departure of the next bulk frame; `None` before the first.
    next: Option<Instant>,
}

impl Pacer {
    /// A pacer for `bytes_per_second` (at least 1).
    pub(crate) fn new(bytes_per_second: u64) -> Self {
        Pacer {
            bytes_per_second: bytes_per_second.max(1),
            next: None,
        }
    }

    /// `Ok` if a bulk frame may leave at `now`, or the instant it may.
    pub(crate) fn ready(&self, now: Instant) -> Result<(), Instant> {
        match self.next {
            Some(at) if at > now => Err(at),
            _ => Ok(()),
        }
    }

    /// Records that a bulk frame of `len` bytes left at `now`.
    pub(crate) fn on_departure(&mut self, now: Instant, len: usize) {
        // An idle spell earns no credit: the next frame is timed from now, not from when
        // the last one was due.
        let from = self.next.map_or(now, |at| at.max(now));
        let nanos = (len as u128 * 1_000_000_000) / u128::from(self.bytes_per_second);
        let spacing = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.next = Some(from + spacing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_frame_leaves_at_once_and_pushes_the_next_back_by_its_length_over_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1_000_000); // 1 MB/s: 1 byte per microsecond
        assert_eq!(p.ready(t0), Ok(()));
        p.on_departure(t0, 65_536);
        let due = t0 + Duration::from_micros(65_536);
        assert_eq!(p.ready(t0), Err(due));
        assert_eq!(p.ready(due - Duration::from_nanos(1)), Err(due));
        assert_eq!(p.ready(due), Ok(()));
    }

    #[test]
    fn frames_leaving_late_are_spaced_from_their_departure_and_idle_time_earns_no_burst() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1_000_000);
        p.on_departure(t0, 1_000);
        // Sent late (the socket was full): the next is timed from this departure.
        let late = t0 + Duration::from_millis(5);
        assert_eq!(p.ready(late), Ok(()));
        p.on_departure(late, 1_000);
        assert_eq!(p.ready(late), Err(late + Duration::from_millis(1)));
        // A second of silence, then two frames: only the first may leave at once.
        let after = late + Duration::from_secs(1);
        assert_eq!(p.ready(after), Ok(()));
        p.on_departure(after, 1_000);
        assert_eq!(p.ready(after), Err(after + Duration::from_millis(1)));
    }

    #[test]
    fn frames_sent_back_to_back_at_their_due_times_keep_the_rate_exactly() {
        let t0 = Instant::now();
        let mut p = Pacer::new(250_000_000);
        let mut now = t0;
        for _ in 0..1_000 {
            now = match p.ready(now) {
                Ok(()) => now,
                Err(at) => at,
            };
            p.on_departure(now, 65_556);
        }
        // 999 gaps of 65,556 bytes at 250 MB/s.
        let expected = Duration::from_nanos(999 * 65_556 * 4);
        assert_eq!(now - t0, expected);
    }

    #[test]
    fn a_zero_rate_is_treated_as_one_byte_per_second_not_a_division_by_zero() {
        let t0 = Instant::now();
        let mut p = Pacer::new(0);
        p.on_departure(t0, 2);
        assert_eq!(p.ready(t0), Err(t0 + Duration::from_secs(2)));
    }
}
