//! An engine without threads of its own: its one event loop is driven by whichever
//! application thread calls into it.
//!
//! Senders take the loop's lock only when nobody holds it (and the receiver is not waiting
//! for it), so a stream of sends never keeps the receiver from a reply waiting in a socket;
//! the receiver waits for the lock, since nobody else will read that reply.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use mio::Events;

use super::event_loop::EventLoop;
use super::frame::OutFrame;
use super::peer::{ConnId, ConnShared};
use crate::wire::{Message, ProtocolError};

/// An event loop run on the application's threads.
struct InlineLoop {
    event_loop: EventLoop,
    events: Events,
}

type Slot = Option<Box<InlineLoop>>;

/// The inline loop (if the engine is inline) and who may drive it.
pub(crate) struct InlineDriver {
    /// Whether the engine runs inline.
    enabled: bool,
    /// The loop, `None` for a threaded engine and once stopped.
    slot: Mutex<Slot>,
    /// Set while the receiver waits for the loop's lock: senders then leave their commands
    /// for it rather than taking the lock themselves.
    receiver_waiting: AtomicBool,
}

impl InlineDriver {
    pub(crate) fn new(enabled: bool) -> Self {
        InlineDriver {
            enabled,
            slot: Mutex::new(None),
            receiver_waiting: AtomicBool::new(false),
        }
    }

    /// Whether the engine runs inline.
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Hands the driver its loop.
    pub(crate) fn install(&self, event_loop: EventLoop) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(InlineLoop {
            event_loop,
            events: Events::with_capacity(1024),
        }));
    }

    /// Stops the loop (closing its connections), waiting for a thread that drives it.
    pub(crate) fn stop(&self) {
        let stopped = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut inline) = stopped {
            inline.event_loop.shutdown();
        }
    }

    /// Writes `message` (its `len` bytes reserved) from the caller's memory if this thread
    /// can take the loop now (see `EventLoop::send_message_now`). `None` when the engine is
    /// threaded or another thread drives the loop: queue it the ordinary way.
    pub(crate) fn send_message_now(
        &self,
        shared: &ConnShared,
        message: &Message<'_>,
        len: usize,
    ) -> Option<Result<(), ProtocolError>> {
        let guard = self.for_sender()?;
        guard.as_ref()?;
        let slot = shared.slot().unwrap_or(usize::MAX);
        let mut sent = Ok(());
        Self::run(guard, |l| {
            let (running, outcome) = l.event_loop.send_message_now(shared.id, slot, message, len);
            sent = outcome;
            running
        });
        Some(sent)
    }

    /// Hands `frame` straight to the loop and writes, if this thread can take the loop now;
    /// gives the frame back otherwise (a threaded engine, a busy or stopped loop, a waiting
    /// receiver), for the command queue.
    pub(crate) fn send_now(&self, conn: ConnId, slot: usize, frame: OutFrame) -> Option<OutFrame> {
        match self.for_sender() {
            Some(guard) if guard.is_some() => {
                Self::run(guard, |l| l.event_loop.send_now(Some((conn, slot, frame))));
                None
            }
            _ => Some(frame),
        }
    }

    /// Runs the loop on this thread if no other thread is: a send pass (commands, then
    /// writes) for `None`, a whole turn waiting at most `max_wait` otherwise. Returns false
    /// if the engine is threaded, stopped, or another thread is driving it.
    pub(crate) fn drive(&self, max_wait: Option<Duration>) -> bool {
        let Some(guard) = self.for_sender() else {
            return false;
        };
        Self::run(guard, |l| match max_wait {
            None => l.event_loop.send_now(None),
            Some(wait) => l.event_loop.turn(&mut l.events, Some(wait), true),
        });
        true
    }

    /// Runs a whole turn of the loop (waiting at most `max_wait`) on the receiving thread,
    /// waiting for the lock if another thread holds it: the others hold it for a send pass or
    /// a bounded wait, and the receiver must not sleep meanwhile with a reply unread in the
    /// socket that nobody else will read.
    pub(crate) fn drive_for_receiver(&self, max_wait: Duration) -> bool {
        if !self.enabled {
            return false;
        }
        let guard = match self.slot.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                self.receiver_waiting.store(true, Ordering::Relaxed);
                let guard = self.slot.lock().unwrap_or_else(|p| p.into_inner());
                self.receiver_waiting.store(false, Ordering::Relaxed);
                guard
            }
        };
        Self::run(guard, |l| {
            l.event_loop.turn(&mut l.events, Some(max_wait), true)
        });
        true
    }

    /// The loop's lock for a sending thread: only if the engine is inline, nobody holds it,
    /// and the receiver is not waiting for it (it drives next, the queued commands included).
    fn for_sender(&self) -> Option<MutexGuard<'_, Slot>> {
        if !self.enabled || self.receiver_waiting.load(Ordering::Relaxed) {
            return None;
        }
        match self.slot.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Runs `work` on the loop (if it has not stopped), and stops the loop when `work` says
    /// so.
    fn run(mut guard: MutexGuard<'_, Slot>, work: impl FnOnce(&mut InlineLoop) -> bool) {
        let Some(inline) = guard.as_mut() else {
            return;
        };
        if !work(inline) {
            if let Some(mut stopped) = guard.take() {
                stopped.event_loop.shutdown();
            }
        }
    }
}
