//! A one-shot timer an event loop can sleep on with microsecond precision.
//!
//! `epoll_wait` (and so mio's `Poll::poll`) takes its timeout in milliseconds, rounded up;
//! pacing bulk frames tens of microseconds apart needs finer wake-ups than that. A Linux
//! timerfd registered with the loop's `Poll` becomes readable at the instant it was armed
//! for, whatever the poll's own timeout.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};

pub(crate) struct Timer {
    fd: OwnedFd,
}

impl Timer {
    /// A disarmed timer registered with `registry` under `token`.
    pub(crate) fn new(registry: &Registry, token: Token) -> io::Result<Self> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(Timer { fd })
    }

    /// Fires once, `after` from now (re-arming replaces the previous expiry).
    pub(crate) fn arm(&mut self, after: Duration) -> io::Result<()> {
        // A zero it_value disarms a timerfd; the shortest real expiry is 1 ns.
        let after = after.max(Duration::from_nanos(1));
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(after.subsec_nanos()),
            },
        };
        timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec)?;
        Ok(())
    }

    /// Acknowledges an expiry reported by the poll (reads the count, so the next expiry is a
    /// new edge).
    pub(crate) fn acknowledge(&mut self) {
        let mut count = [0u8; 8];
        // WouldBlock (no expiry pending) is as good as a read.
        let _ = rustix::io::read(&self.fd, &mut count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Instant;

    #[test]
    fn an_armed_timer_wakes_the_poll_after_its_delay_and_not_before() {
        let mut poll = Poll::new().unwrap();
        let token = Token(7);
        let mut timer = Timer::new(poll.registry(), token).unwrap();
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty(), "a disarmed timer fired");
        let start = Instant::now();
        timer.arm(Duration::from_micros(300)).unwrap();
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(start.elapsed() >= Duration::from_micros(300));
        assert!(events.iter().any(|e| e.token() == token && e.is_readable()));
        timer.acknowledge();
        // Acknowledged and not re-armed: no further wake-up.
        poll.poll(&mut events, Some(Duration::from_millis(20)))
            .unwrap();
        assert!(events.iter().all(|e| e.token() != token));
    }
}
