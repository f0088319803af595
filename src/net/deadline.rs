//! How long a send may wait for room in a full send queue.

use std::time::Duration;

/// How long a send may wait while the connection's send queue is full. A `Duration` converts
/// into [`Deadline::Within`], so `send(conn, &message, Duration::from_millis(5))` reads as it
/// means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Do not wait: a full queue refuses with [`super::NetError::WouldBlock`] at once.
    Now,
    /// Wait at most this long for room, then fail with [`super::NetError::Timeout`].
    Within(Duration),
}

impl From<Duration> for Deadline {
    fn from(wait: Duration) -> Self {
        Deadline::Within(wait)
    }
}

impl Deadline {
    /// The longest wait, `None` for [`Deadline::Now`].
    pub(crate) fn wait(self) -> Option<Duration> {
        match self {
            Deadline::Now => None,
            Deadline::Within(wait) => Some(wait),
        }
    }
}
