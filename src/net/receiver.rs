//! Where the engine's events arrive: the rings from every loop, drained in turn.

use std::io;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::event::{NetEvent, Polled};
use super::frame::{Delivery, FrameBatch};
use super::shared::EngineShared;

/// Where the engine's events arrive: one ring per event loop, drained in turn. Blocks in a
/// mio poll (woken by the loops' `Waker`) or, in busy-poll mode, spins.
///
/// WeightSync frames travel in a bulk ring that is drained only when the main rings are
/// empty, so small frames overtake a large transfer. Order is kept within each ring, and a
/// connection's Disconnected event still comes after all of its frames.
///
/// Three ways to take events: [`Receiver::recv_timeout`] one at a time, [`Receiver::poll`]
/// for streams (frames lent in place, the cheapest), and the iterator (`for event in
/// receiver`), which waits as long as it takes and ends once the engine has shut down.
pub struct Receiver {
    rings: Vec<rtrb::Consumer<Delivery>>,
    /// The batch of small frames being given out.
    batch: Option<FrameBatch>,
    bulk_rings: Vec<rtrb::Consumer<NetEvent>>,
    /// A Disconnected event held back until its loop's bulk ring is drained.
    draining_bulk: Option<(usize, NetEvent)>,
    /// When the last event was taken (for adaptive spinning).
    last_event: Instant,
    /// Events were taken since `last_event` was last set.
    got_events: bool,
    next: usize,
    poll: Poll,
    events: Events,
    shared: Arc<EngineShared>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl Receiver {
    pub(crate) fn new(
        rings: Vec<rtrb::Consumer<Delivery>>,
        bulk_rings: Vec<rtrb::Consumer<NetEvent>>,
        poll: Poll,
        shared: Arc<EngineShared>,
    ) -> Self {
        Receiver {
            rings,
            batch: None,
            bulk_rings,
            draining_bulk: None,
            last_event: Instant::now(),
            got_events: false,
            next: 0,
            poll,
            events: Events::with_capacity(8),
            shared,
        }
    }

    /// The next event if one is waiting. An inline engine is polled once (without waiting)
    /// when nothing is. Unlike a zero-timeout [`Receiver::recv_timeout`], it leaves the
    /// adaptive spinning's clock alone: a consumer that drains what is waiting (a node
    /// gathering a batch) and then works still spins for the full window after its work.
    pub(crate) fn try_recv(&mut self) -> Option<NetEvent> {
        if self.shared.is_inline() && self.all_empty() {
            self.shared.inline.drive(Some(Duration::ZERO));
        }
        self.next_event()
    }

    fn next_event(&mut self) -> Option<NetEvent> {
        if let Some(batch) = &mut self.batch {
            if let Some(frame) = batch.pop() {
                if batch.is_empty() {
                    self.batch = None;
                }
                return Some(NetEvent::Frame(frame));
            }
            self.batch = None;
        }
        if let Some((index, _)) = &self.draining_bulk {
            if let Ok(event) = self.bulk_rings[*index].pop() {
                return Some(event);
            }
            return self.draining_bulk.take().map(|(_, event)| event);
        }
        let n = self.rings.len();
        for i in 0..n {
            let index = (self.next + i) % n;
            let Ok(delivery) = self.rings[index].pop() else {
                continue;
            };
            self.next = index;
            let event = match delivery {
                Delivery::Batch(batch) => {
                    self.batch = Some(batch);
                    return self.next_event();
                }
                Delivery::Event(event) => event,
            };
            if matches!(event, NetEvent::Disconnected { .. }) && !self.bulk_rings[index].is_empty()
            {
                // Frames pushed before the close come first.
                self.draining_bulk = Some((index, event));
                return self.next_event();
            }
            return Some(event);
        }
        for i in 0..n {
            let index = (self.next + i) % n;
            if let Ok(event) = self.bulk_rings[index].pop() {
                return Some(event);
            }
        }
        None
    }

    /// Waits (at most `timeout`; `Duration::ZERO` does not wait, though an inline engine still
    /// gets one turn of its loop) for at least one event, then
    /// hands up to `max` waiting events to `handler`, in the order [`Receiver::recv_timeout`]
    /// gives them; returns how many (0 on timeout or once the engine has shut down and every
    /// event was taken).
    ///
    /// Frames are lent as [`FrameView`](super::FrameView)s for the length of the handler's call: after the first
    /// frame of each batch, the small frames that arrive in batches are handed over with no
    /// atomic operation and no event built per frame, the cheapest way to consume a stream.
    /// [`FrameView::to_received`](super::FrameView::to_received) keeps a frame; it shares its block with the receiver until
    /// the handler returns, so relaying it ([`EngineHandle::relay`](super::EngineHandle::relay)) copies it: a stage that
    /// relays large frames takes them through [`Receiver::recv_timeout`], which hands a frame
    /// alone in its block over without a copy. Connection changes come as
    /// [`Polled::Event`].
    pub fn poll(
        &mut self,
        max: usize,
        timeout: Duration,
        mut handler: impl FnMut(Polled<'_>),
    ) -> usize {
        if max == 0 {
            return 0;
        }
        let Some(first) = self.recv_timeout(timeout) else {
            return 0;
        };
        hand_over(first, &mut handler);
        let mut taken = 1;
        while taken < max {
            if let Some(batch) = &mut self.batch {
                taken += batch.lend(max - taken, |frame| handler(Polled::Frame(frame)));
                if batch.is_empty() {
                    self.batch = None;
                }
                continue;
            }
            let Some(event) = self.try_recv() else {
                break;
            };
            hand_over(event, &mut handler);
            taken += 1;
        }
        taken
    }

    fn all_empty(&self) -> bool {
        self.draining_bulk.is_none()
            && self.batch.is_none()
            && self.rings.iter().all(|r| r.is_empty())
            && self.bulk_rings.iter().all(|r| r.is_empty())
    }

    /// The next event, waiting at most `timeout`. `None` on timeout or once the engine has
    /// shut down and every event was taken. An inline engine gets at least one turn of its
    /// loop per call, so a caller polling with a zero timeout keeps it moving.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<NetEvent> {
        // The clock is read only once the rings are empty: a stream of events costs no
        // clock reads, and the end of one stands in for the time of its last event.
        if let Some(event) = self.next_event() {
            self.got_events = true;
            return Some(event);
        }
        let deadline = Instant::now() + timeout;
        // An inline engine moves only while a thread drives it: even a call that may not wait
        // (a zero timeout, a busy-polling caller) gives it one turn before it gives up.
        let mut driven = false;
        loop {
            if let Some(event) = self.next_event() {
                self.got_events = true;
                return Some(event);
            }
            if std::mem::take(&mut self.got_events) {
                self.last_event = Instant::now();
            }
            if self.rings.iter().all(|r| r.is_abandoned()) {
                return self.next_event();
            }
            let now = Instant::now();
            if now >= deadline && (driven || !self.shared.is_inline()) {
                return None;
            }
            if self.shared.is_inline() {
                driven = true;
                // Drive the loop here, once the thread driving it (if any) is done.
                self.shared
                    .inline
                    .drive_for_receiver(deadline.saturating_duration_since(now));
                continue;
            }
            if self.shared.config.latency.busy_poll
                || self.last_event.elapsed() < self.shared.config.latency.spin_before_sleep
            {
                // Yield rather than spin: on a machine with fewer cores than spinning threads
                // a pure spin starves the thread that would produce the event.
                std::thread::yield_now();
                continue;
            }
            self.shared.consumer_sleeping.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if !self.all_empty() {
                self.shared.consumer_sleeping.store(false, Ordering::SeqCst);
                continue;
            }
            let cap = if self.shared.is_inline() {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(100)
            };
            let wait = (deadline - now).min(cap);
            if let Err(e) = self.poll.poll(&mut self.events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("receiver poll failed: {e}");
                }
            }
            self.shared.consumer_sleeping.store(false, Ordering::SeqCst);
            let _ = self.events.iter().any(|e| e.token() == Token(0));
        }
    }

    /// The next event, waiting as long as it takes; `None` once the engine has shut down.
    fn recv(&mut self) -> Option<NetEvent> {
        loop {
            if let Some(event) = self.recv_timeout(Duration::from_secs(3600)) {
                return Some(event);
            }
            if self.rings.iter().all(|r| r.is_abandoned()) {
                return None;
            }
        }
    }
}

/// Waits for each event as long as it takes; ends once the engine has shut down and every
/// event was taken.
impl Iterator for Receiver {
    type Item = NetEvent;

    fn next(&mut self) -> Option<NetEvent> {
        self.recv()
    }
}

/// Hands one event to a [`Receiver::poll`] handler, a frame as a view.
fn hand_over(event: NetEvent, handler: &mut impl FnMut(Polled<'_>)) {
    match event {
        NetEvent::Frame(frame) => handler(Polled::Frame(frame.view())),
        other => handler(Polled::Event(other)),
    }
}
