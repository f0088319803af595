//! Rate limits on what one peer sends: frames and bytes per second, with a burst allowance.
//!
//! The rule is the generic cell rate algorithm (GCRA), as the `governor` crate implements
//! it: each unit (a frame, a byte) pushes a theoretical arrival time (TAT) forward by
//! `1 / rate`; a frame conforms if, after paying its cost, the TAT is at most `burst` ahead
//! of now. The state is one instant per limit, touched only by the connection's own loop, so
//! there is no need for `governor`'s atomics, keyed maps or clocks: a few lines here, fed
//! with the loop's `now` like the session is.
//!
//! A frame larger than the byte burst would never conform; it is let through when nothing
//! is owed (the TAT has passed), and its cost then holds the next frames back, so a limit
//! below the frame size slows a peer down rather than shutting it out.

use std::time::{Duration, Instant};

use super::config::RateLimit;

/// One GCRA limit: `rate` units per second, at most `burst` ahead of schedule.
#[derive(Debug, Clone)]
struct Gcra {
    rate: u64,
    burst: Duration,
    /// The theoretical arrival time: when the units paid for so far are due.
    tat: Instant,
}

impl Gcra {
    fn new(rate: u64, burst: Duration, now: Instant) -> Self {
        Gcra {
            rate: rate.max(1),
            burst,
            tat: now,
        }
    }

    /// The TAT after `cost` units at `now`, if they conform.
    fn check(&self, now: Instant, cost: u64) -> Option<Instant> {
        let nanos = u128::from(cost) * 1_000_000_000 / u128::from(self.rate);
        let spacing = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        let next = self.tat.max(now).checked_add(spacing)?;
        let conforms = self.tat <= now || next.saturating_duration_since(now) <= self.burst;
        conforms.then_some(next)
    }
}

/// What [`RateLimiter::admit`] decided about a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limits: take it.
    Admit,
    /// Over the limits: refuse it (the peer may slow down and carry on).
    Refuse,
    /// Over the limits, and the peer kept on past the bound: close the connection.
    Close,
}

/// One peer's rate limits, and how many of its frames were refused lately.
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    frames: Option<Gcra>,
    bytes: Option<Gcra>,
    close_after: u32,
    /// The start of the current one-second window of refusals, and the refusals in it.
    window: Instant,
    refused_in_window: u32,
    /// Whether the first refusal was logged (once per connection).
    pub(crate) logged: bool,
}

impl RateLimiter {
    pub(crate) fn new(limit: &RateLimit, now: Instant) -> Self {
        RateLimiter {
            frames: limit
                .frames_per_second
                .map(|rate| Gcra::new(rate, limit.burst, now)),
            bytes: limit
                .bytes_per_second
                .map(|rate| Gcra::new(rate, limit.burst, now)),
            close_after: limit.close_after_refusals,
            window: now,
            refused_in_window: 0,
            logged: false,
        }
    }

    /// Whether the peer still owes anything at `now`: frames or bytes ahead of the rates, or
    /// refusals within the current window. A limiter that owes nothing is as good as new.
    pub(crate) fn owes(&self, now: Instant) -> bool {
        let ahead = |g: &Option<Gcra>| g.as_ref().is_some_and(|g| g.tat > now);
        ahead(&self.frames) || ahead(&self.bytes) || self.refusing(now).is_some()
    }

    /// Whether the peer was over the refusal bound within the last second at `now`, i.e. a
    /// connection of it was closed for keeping on and the window has not yet ended.
    pub(crate) fn closed_for_rate(&self, now: Instant) -> bool {
        self.refusing(now)
            .is_some_and(|refused| refused > self.close_after)
    }

    /// When the window in which the peer was closed for keeping on ends, if it has not
    /// ended at `now`: until then its address is turned away.
    pub(crate) fn penalty_until(&self, now: Instant) -> Option<Instant> {
        self.closed_for_rate(now)
            .then(|| self.window + Duration::from_secs(1))
    }

    /// The refusals of the current window, if it has not ended at `now`.
    fn refusing(&self, now: Instant) -> Option<u32> {
        (self.refused_in_window > 0
            && now.saturating_duration_since(self.window) < Duration::from_secs(1))
        .then_some(self.refused_in_window)
    }

    /// Charges `frames` frames of `bytes` bytes in all, received at `now`, if both limits
    /// let them through; otherwise charges nothing and counts them as refused.
    pub(crate) fn admit(&mut self, now: Instant, frames: u64, bytes: u64) -> Verdict {
        let frames_tat = match &self.frames {
            Some(g) => g.check(now, frames).map(Some),
            None => Some(None),
        };
        let bytes_tat = match &self.bytes {
            Some(g) => g.check(now, bytes).map(Some),
            None => Some(None),
        };
        if let (Some(f), Some(b)) = (frames_tat, bytes_tat) {
            if let (Some(g), Some(tat)) = (self.frames.as_mut(), f) {
                g.tat = tat;
            }
            if let (Some(g), Some(tat)) = (self.bytes.as_mut(), b) {
                g.tat = tat;
            }
            return Verdict::Admit;
        }
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.refused_in_window = 0;
        }
        self.refused_in_window = self
            .refused_in_window
            .saturating_add(u32::try_from(frames).unwrap_or(u32::MAX));
        if self.refused_in_window > self.close_after {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(frames: Option<u64>, bytes: Option<u64>, burst_ms: u64) -> RateLimit {
        RateLimit {
            frames_per_second: frames,
            bytes_per_second: bytes,
            burst: Duration::from_millis(burst_ms),
            close_after_refusals: 100,
        }
    }

    #[test]
    fn a_burst_passes_then_frames_pass_at_the_rate() {
        let t0 = Instant::now();
        // 100 frames/s, 100 ms of burst: 10 frames at once.
        let mut r = RateLimiter::new(&limit(Some(100), None, 100), t0);
        let admitted = (0..20)
            .filter(|_| r.admit(t0, 1, 50) == Verdict::Admit)
            .count();
        assert_eq!(admitted, 10);
        // 10 ms later one more frame is due, not two.
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(r.admit(t1, 1, 50), Verdict::Admit);
        assert_eq!(r.admit(t1, 1, 50), Verdict::Refuse);
        // A quiet second earns the burst back, no more.
        let t2 = t1 + Duration::from_secs(1);
        let admitted = (0..20)
            .filter(|_| r.admit(t2, 1, 50) == Verdict::Admit)
            .count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn bytes_are_limited_and_a_refused_frame_costs_nothing() {
        let t0 = Instant::now();
        // 1,000 bytes/s, 1 s of burst; frames unlimited.
        let mut r = RateLimiter::new(&limit(None, Some(1000), 1000), t0);
        assert_eq!(r.admit(t0, 1, 600), Verdict::Admit);
        assert_eq!(r.admit(t0, 1, 600), Verdict::Refuse);
        // The refused 600 bytes were not charged: 400 still fit.
        assert_eq!(r.admit(t0, 1, 400), Verdict::Admit);
    }

    #[test]
    fn a_frame_larger_than_the_burst_passes_when_nothing_is_owed_and_holds_the_next_back() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(&limit(None, Some(1000), 100), t0);
        assert_eq!(r.admit(t0, 1, 5000), Verdict::Admit);
        // It cost five seconds at 1,000 bytes/s.
        assert_eq!(r.admit(t0 + Duration::from_secs(4), 1, 10), Verdict::Refuse);
        assert_eq!(r.admit(t0 + Duration::from_secs(5), 1, 10), Verdict::Admit);
    }

    #[test]
    fn a_peer_that_keeps_on_past_the_bound_within_a_second_is_closed() {
        let t0 = Instant::now();
        let ten = RateLimit {
            close_after_refusals: 10,
            ..limit(Some(1), None, 0)
        };
        let mut r = RateLimiter::new(&ten, t0);
        assert_eq!(r.admit(t0, 1, 1), Verdict::Admit);
        for _ in 0..10 {
            assert_eq!(r.admit(t0, 1, 1), Verdict::Refuse);
        }
        assert_eq!(r.admit(t0, 1, 1), Verdict::Close);
        // Refusals spread over seconds do not add up.
        let mut r = RateLimiter::new(&ten, t0);
        for s in 0..30 {
            let t = t0 + Duration::from_millis(s * 1100);
            for _ in 0..10 {
                assert_ne!(r.admit(t, 1, 1), Verdict::Close);
            }
        }
    }

    #[test]
    fn a_limiter_owes_while_ahead_or_refusing_and_is_closed_for_the_rest_of_the_second() {
        let t0 = Instant::now();
        let ten = RateLimit {
            close_after_refusals: 10,
            ..limit(Some(100), None, 50)
        };
        let mut r = RateLimiter::new(&ten, t0);
        assert!(!r.owes(t0));
        // Five frames at 100/s put it 50 ms ahead.
        for _ in 0..5 {
            assert_eq!(r.admit(t0, 1, 1), Verdict::Admit);
        }
        assert!(r.owes(t0));
        assert!(!r.owes(t0 + Duration::from_millis(51)));
        assert!(!r.closed_for_rate(t0));
        while r.admit(t0, 1, 1) != Verdict::Close {}
        assert!(r.closed_for_rate(t0 + Duration::from_millis(999)));
        assert_eq!(r.penalty_until(t0), Some(t0 + Duration::from_secs(1)));
        assert_eq!(r.penalty_until(t0 + Duration::from_secs(1)), None);
        assert!(r.owes(t0 + Duration::from_millis(999)));
        assert!(!r.closed_for_rate(t0 + Duration::from_secs(1)));
        assert!(!r.owes(t0 + Duration::from_secs(1)));
    }
}
