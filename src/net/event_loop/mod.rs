//! One event-loop thread: a mio `Poll`, its connections, its command queue and its ring.
//!
//! Each turn: drain the commands (frames to send, connections to adopt or close), read the
//! connections that are readable, hand the data frames to the consumer's ring, let the
//! sessions tick, write everything queued, then sleep in `epoll_wait` until a socket, a
//! command or a timer wakes the loop. The loop never blocks on anything but the poll.
//! Connections whose next bulk frame waits for its pace sit in a list with the earliest due
//! time, which a timerfd turns into a wake-up (epoll's own timeout is in milliseconds).
//!
//! The turn and the commands are here; taking connections in, reading and writing are in
//! the submodules of those names.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

mod accept;
mod reads;
mod writes;

use super::command::{Command, LoopHandle, WAKER};
use super::connection::{Connection, Flushed, Pace, ReadContext, ReadOutcome};
use super::context::LoopContext;
use super::event::NetEvent;
use super::frame::{Delivery, OutFrame};
use super::metrics::LimitCounters;
use super::peer::{CloseCause, ConnId, ConnShared};
use super::socket::tune_socket;
use super::stream::{self, ByteStream, TlsFailure};
use super::timer::Timer;
use crate::session::{Role, Session, SessionEvent};
use crate::wire::{DisconnectReason, Message, MsgType, ProtocolError};

pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
const PACE_TIMER: Token = Token(usize::MAX - 2);
/// How often every session's timers are checked, at the most.
const TICK: Duration = Duration::from_millis(50);
/// Reads (each handed on before the next) per connection per loop turn.
const READ_ROUNDS: usize = 8;
/// Bytes written per connection per loop turn (bulk beyond it waits for the next turn), so
/// that a loop that streams a large transfer still reads and hands on replies promptly.
const WRITE_BUDGET: usize = 64 * 1024;
/// Bytes of a message written straight from the caller's memory in one call: a 64 KiB weight
/// slice with its head goes whole.
const DIRECT_BUDGET: usize = 2 * WRITE_BUDGET;
/// Time spent accepting connections in one loop turn, at the most (checked after each): a
/// wave of connections is taken in over several turns, with the established connections
/// read and written between them.
const ACCEPT_BUDGET: Duration = Duration::from_micros(200);
/// Time spent on expired session timers in one loop turn, at the most (checked after each):
/// a thousand handshakes that time out together are closed (an Error frame written, the
/// socket closed: tens of microseconds each) over several turns, with the live connections
/// served between them.
const TIMEOUT_BUDGET: Duration = Duration::from_micros(200);
/// A busy-polled inline loop with at most this many connections reads them directly each
/// turn rather than asking epoll first.
const DIRECT_READ_MAX: usize = 8;
/// ... and polls epoll (listeners, writability, wake-ups) once per this many turns.
const DIRECT_POLL_EVERY: u32 = 16;

pub(crate) struct EventLoop {
    index: usize,
    poll: Poll,
    handle: Arc<LoopHandle>,
    context: Arc<LoopContext>,
    events_out: rtrb::Producer<Delivery>,
    bulk_out: rtrb::Producer<NetEvent>,
    /// Events that did not fit in the ring.
    backlog: VecDeque<Delivery>,
    conns: Slab<Connection>,
    listeners: Vec<TcpListener>,
    /// A listener may hold connections not yet accepted (a turn took its share).
    accept_more: bool,
    /// The generation of the admission's filtered addresses the listeners carry the filter
    /// of (`None`: to be set, as for a new listener).
    filter_applied: Option<u64>,
    /// Whether the listeners have carried a filter, which accepted sockets inherit.
    filter_carried: bool,
    /// Connections whose session timer had expired at the last tick, not yet handled.
    timed_out: Vec<usize>,
    /// Connections that may have more to read.
    read_again: Vec<usize>,
    /// Connections with frames parked for the ring.
    paused: Vec<usize>,
    /// Connections with something to write.
    dirty: Vec<usize>,
    /// Connections whose next bulk frame waits for its pace, and the earliest due time.
    paced: Vec<usize>,
    pace_due: Option<Instant>,
    /// Wakes a sleeping loop at `pace_due` (created when the engine paces bulk frames).
    pace_timer: Option<Timer>,
    rx_budget: Arc<AtomicUsize>,
    pushed: bool,
    last_tick: Instant,
    /// When the loop last had something to do (for adaptive spinning).
    last_work: Instant,
    /// Turns since the last epoll in direct-read mode.
    direct_turns: u32,
    /// Emptied key lists kept for reuse, so a turn allocates nothing.
    spare_keys: Vec<Vec<usize>>,
    /// Connections whose peer half-closed, open for the answers until their linger ends.
    lingering: Vec<usize>,
    /// Connections whose session closed, with when: each is dropped once its last frames
    /// (the Disconnect or Error among them) are written, or once the linger has passed
    /// without their being written (a peer that does not read cannot hold a connection, and
    /// the memory of its queue, for ever).
    closing: Vec<(usize, ConnId, Instant)>,
}

impl EventLoop {
    pub(crate) fn new(
        index: usize,
        poll: Poll,
        handle: Arc<LoopHandle>,
        context: Arc<LoopContext>,
        events_out: rtrb::Producer<Delivery>,
        bulk_out: rtrb::Producer<NetEvent>,
    ) -> Self {
        let pace_timer = context
            .config
            .latency
            .bulk_rate
            .filter(|_| !context.config.latency.busy_poll)
            .and_then(|_| match Timer::new(poll.registry(), PACE_TIMER) {
                Ok(timer) => Some(timer),
                Err(e) => {
                    log::warn!("no pacing timer ({e}): paced frames wait for the next poll");
                    None
                }
            });
        EventLoop {
            index,
            poll,
            handle,
            context,
            events_out,
            bulk_out,
            backlog: VecDeque::new(),
            conns: Slab::new(),
            listeners: Vec::new(),
            accept_more: false,
            filter_applied: None,
            filter_carried: false,
            timed_out: Vec::new(),
            read_again: Vec::new(),
            paused: Vec::new(),
            dirty: Vec::new(),
            paced: Vec::new(),
            pace_due: None,
            pace_timer,
            rx_budget: Arc::new(AtomicUsize::new(0)),
            pushed: false,
            last_tick: Instant::now(),
            last_work: Instant::now(),
            direct_turns: 0,
            spare_keys: Vec::new(),
            lingering: Vec::new(),
            closing: Vec::new(),
        }
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        while self.turn(&mut events, None, false) {}
        self.shutdown();
    }

    /// One turn: commands, reads, timers, writes, then a poll for readiness (waiting at most
    /// `max_wait` on top of the loop's own limit). Returns false when the loop must stop.
    /// `inline` (the application's thread drives the loop) also services what the poll found
    /// before returning, so that a frame that arrived is in the ring when the turn ends.
    pub(crate) fn turn(
        &mut self,
        events: &mut Events,
        max_wait: Option<Duration>,
        inline: bool,
    ) -> bool {
        let busy = self.context.config.latency.busy_poll;
        if !self.drain_commands() {
            return false;
        }
        self.refresh_filter();
        // Busy-polling an inline engine with few connections: read them directly, as a
        // spinning raw socket does, so that a reply costs one `read` rather than an
        // `epoll_wait` and a `read`; epoll is still asked every few turns.
        let direct = busy && inline && self.conns.len() <= DIRECT_READ_MAX;
        if direct {
            for (key, conn) in self.conns.iter() {
                if !conn.read_closed && conn.parked.is_empty() && !self.read_again.contains(&key) {
                    self.read_again.push(key);
                }
            }
        }
        if self.accept_more {
            self.accept_all();
        }
        let now = Instant::now();
        self.service_reads(now, inline);
        if now.duration_since(self.last_tick) >= TICK {
            self.tick(now);
        }
        if !self.timed_out.is_empty() {
            self.handle_timeouts(now);
        }
        self.release_paced(now);
        self.flush_dirty(now, WRITE_BUDGET);
        self.wake_consumer();
        if direct {
            self.direct_turns += 1;
            if self.direct_turns < DIRECT_POLL_EVERY {
                return true;
            }
            self.direct_turns = 0;
        }

        // Adaptive spinning: right after work, the next event tends to follow within
        // microseconds (a reply, the next frame), and a blocking poll would pay a
        // sleep and a wake-up for it. Yielding keeps the core for whoever produces it.
        let spinning =
            now.duration_since(self.last_work) < self.context.config.latency.spin_before_sleep;
        let more = !self.read_again.is_empty()
            || !self.dirty.is_empty()
            || self.accept_more
            || !self.timed_out.is_empty();
        let mut timeout = if busy || spinning || more {
            Duration::ZERO
        } else if !self.paused.is_empty() || !self.backlog.is_empty() {
            Duration::from_micros(200)
        } else {
            TICK
        };
        if let Some(max) = max_wait {
            timeout = timeout.min(max);
        }
        if let Some(due) = self.pace_due {
            let wait = due.saturating_duration_since(Instant::now());
            if wait < timeout {
                match self.pace_timer.as_mut().map(|t| t.arm(wait)) {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        log::warn!("pacing timer failed ({e}): polling instead");
                        self.pace_timer = None;
                        timeout = wait;
                    }
                    None => timeout = wait,
                }
            }
        }
        if !timeout.is_zero() {
            self.handle.sleeping.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if !self.handle.commands.is_empty() || self.filter_stale() {
                self.handle.sleeping.store(false, Ordering::SeqCst);
                return true;
            }
        }
        let polled = self.poll.poll(events, Some(timeout));
        if !events.is_empty() || !self.handle.commands.is_empty() {
            self.last_work = Instant::now();
        } else if (busy || spinning) && !(busy && inline) {
            std::thread::yield_now();
        }
        self.handle.sleeping.store(false, Ordering::SeqCst);
        if let Err(e) = polled {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("event loop {} poll failed: {e}", self.index);
                return false;
            }
            return true;
        }
        let mut found = false;
        for event in events.iter() {
            match event.token() {
                WAKER => {}
                LISTENER => self.accept_all(),
                PACE_TIMER => {
                    if let Some(timer) = self.pace_timer.as_mut() {
                        timer.acknowledge();
                    }
                    found = true;
                }
                Token(key) => {
                    found = true;
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        self.read_again.push(key);
                    }
                    if event.is_read_closed() {
                        // The end of stream came with this edge: no later edge will announce
                        // it, so the reads must go on to it.
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.peer_finished = true;
                        }
                    }
                    if event.is_writable() {
                        self.dirty.push(key);
                    }
                }
            }
        }
        if inline && found {
            let now = Instant::now();
            self.service_reads(now, inline);
            self.release_paced(now);
            self.flush_dirty(now, WRITE_BUDGET);
            self.wake_consumer();
        }
        true
    }

    /// Returns false when the loop must stop.
    fn drain_commands(&mut self) -> bool {
        while let Some(command) = self.handle.commands.pop() {
            match command {
                Command::Adopt {
                    stream,
                    role,
                    shared,
                    ticket,
                } => self.adopt(stream, role, shared, ticket),
                Command::Send { conn, slot, frame } => match self.slot_of(conn, slot) {
                    Some(key) => {
                        self.conns[key].enqueue(frame);
                        self.dirty.push(key);
                    }
                    None => log::debug!("frame for closed connection {conn} dropped"),
                },
                Command::SendOpen { conn, slot } => match self.slot_of(conn, slot) {
                    Some(key) => {
                        if let Some(frame) = self.conns[key].shared.open.take() {
                            self.conns[key].enqueue(frame);
                            self.dirty.push(key);
                        }
                    }
                    None => log::debug!("frames for closed connection {conn} dropped"),
                },
                Command::Close {
                    conn,
                    slot,
                    reason,
                    message,
                } => {
                    if let Some(key) = self.slot_of(conn, slot) {
                        self.conns[key].commit_queued();
                        self.conns[key].session.close(reason, &message);
                        self.after_session(key);
                    }
                }
                Command::Refuse {
                    conn,
                    slot,
                    sequence,
                    reason,
                } => {
                    if let Some(key) = self.slot_of(conn, slot) {
                        // After every frame the application queued before it.
                        self.conns[key].commit_queued();
                        self.conns[key].session.refuse(sequence, &reason);
                        self.context
                            .metrics
                            .refusals_sent
                            .fetch_add(1, Ordering::Relaxed);
                        self.after_session(key);
                    }
                }
                Command::Heartbeat { conn, slot } => {
                    if let Some(key) = self.slot_of(conn, slot) {
                        self.conns[key].session.send_heartbeat(Instant::now());
                        self.after_session(key);
                    }
                }
                Command::Listen(mut listener) => {
                    match self
                        .poll
                        .registry()
                        .register(&mut listener, LISTENER, Interest::READABLE)
                    {
                        Ok(()) => {
                            self.listeners.push(listener);
                            self.filter_applied = None;
                            self.refresh_filter();
                        }
                        Err(e) => log::error!("could not register a listener: {e}"),
                    }
                }
                Command::Shutdown => return false,
            }
        }
        true
    }

    /// The slab key of an open connection of this loop (ids are never reused, slab keys are:
    /// the id check keeps a stale command from reaching a newer connection).
    fn slot_of(&self, conn: ConnId, slot: usize) -> Option<usize> {
        self.conns
            .get(slot)
            .filter(|c| c.shared.id == conn)
            .map(|_| slot)
    }

    /// Moves a connection's session output along: events to the consumer, control frames to
    /// the wire, and the connection to its end if the session closed.
    fn after_session(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.take_control_frames(&self.context.pool);
        if conn.wants_write() {
            self.dirty.push(key);
        }
        while let Some(event) = conn.session.poll_event() {
            match event {
                SessionEvent::Established(info) => {
                    conn.shared.set_established(info.clone());
                    let event = NetEvent::Connected {
                        conn: conn.shared.id,
                        addr: conn.shared.addr,
                        peer: Box::new(info),
                    };
                    push_event(&mut self.events_out, &mut self.backlog, event);
                    self.pushed = true;
                }
                SessionEvent::RoundTrip(rtt) => {
                    conn.shared.set_rtt(rtt);
                    self.context.metrics.record_rtt(rtt);
                }
                SessionEvent::Closed { reason, error } => {
                    if let Some(e) = &error {
                        if !matches!(e, ProtocolError::Remote { .. }) {
                            self.context.metrics.count_error(e);
                        }
                        if matches!(e, ProtocolError::IdleTimeout { .. })
                            && !conn.shared.is_established()
                        {
                            LimitCounters::count(&self.context.metrics.limits.handshake_timeout);
                            log::warn!(
                                "peer {} ({}) did not complete its handshake within {:?}: closed",
                                conn.shared.addr,
                                conn.shared.id,
                                self.context.session_config.handshake_timeout
                            );
                        }
                        if e.code() == crate::wire::ErrorCode::AUTHENTICATION_FAILED {
                            log::warn!("{}: {e}", conn.shared.addr);
                        }
                    }
                    let cause = match error {
                        Some(e) => CloseCause::Protocol(e),
                        None => CloseCause::Disconnect(reason),
                    };
                    conn.shared.set_closed(cause);
                    self.closing.push((key, conn.shared.id, Instant::now()));
                    self.dirty.push(key);
                }
            }
        }
    }

    /// Removes a connection and tells the consumer.
    fn finish(&mut self, key: usize, cause: CloseCause) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        if conn.admitted
            && self
                .context
                .admission
                .release(conn.shared.addr.ip(), conn.rate.take())
        {
            // Its address enters the listeners' filter: at once, before the socket's close
            // lets the peer reconnect.
            LimitCounters::count(&self.context.metrics.limits.rate_filtered);
            self.refresh_filter();
            for (i, handle) in self.context.loops.iter().enumerate() {
                if i != self.index {
                    handle.wake();
                }
            }
        }
        conn.stream.close();
        let _ = self.poll.registry().deregister(conn.stream.socket());
        conn.discard_queues();
        // Frames already accepted still reach the consumer, before the close.
        let mut parked = std::mem::take(&mut conn.parked);
        self.push_parked(&mut parked);
        for delivery in parked {
            push_delivery(&mut self.events_out, &mut self.backlog, delivery);
        }
        conn.shared.set_closed(cause.clone());
        let cause = conn.shared.close_cause().unwrap_or(cause);
        log::debug!("connection {} closed: {cause}", conn.shared.id);
        self.context.forget(conn.shared.id);
        self.context
            .metrics
            .connections_closed
            .fetch_add(1, Ordering::Relaxed);
        let event = NetEvent::Disconnected {
            conn: conn.shared.id,
            cause,
        };
        push_event(&mut self.events_out, &mut self.backlog, event);
        self.pushed = true;
    }

    /// Counts a stream's failure and names it, logging it once with the peer's address.
    fn stream_failed(&self, key: usize, e: &io::Error) -> CloseCause {
        self.context.metrics.count_stream_failure(e);
        match TlsFailure::of(e) {
            Some(failure) => {
                if let Some(conn) = self.conns.get(key) {
                    log::warn!(
                        "TLS with {} (connection {}) failed: {failure}",
                        conn.shared.addr,
                        conn.shared.id
                    );
                }
                CloseCause::Tls(failure.0.clone())
            }
            None => CloseCause::Io(e.kind()),
        }
    }

    fn tick(&mut self, now: Instant) {
        self.last_tick = now;
        self.context.pool.trim();
        if !self.listeners.is_empty() {
            self.context.admission.expire_penalties(now);
            self.refresh_filter();
        }
        self.end_lingering(now);
        self.end_closing(now);
        let limits = &self.context.config.limits;
        let slow_consumer_timeout = limits.slow_consumer_timeout;
        // A send queue this full makes senders wait (they are woken only below it).
        let queue_full_at = limits.send_queue_bytes - limits.send_queue_bytes / 8;
        self.timed_out.clear();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            conn.release_idle_memory(now);
            if conn.session.poll_timeout().is_some_and(|t| t <= now) {
                self.timed_out.push(key);
            }
            if let Some(timeout) = slow_consumer_timeout {
                if !conn.session.is_closed() && conn.backed_up(now, queue_full_at, timeout) {
                    self.cut_off_slow_consumer(key, timeout);
                }
            }
        }
    }

    /// Handles the expired session timers found at the last tick for [`TIMEOUT_BUDGET`] at
    /// the most; the rest wait for the next turn.
    fn handle_timeouts(&mut self, now: Instant) {
        let started = Instant::now();
        while let Some(key) = self.timed_out.pop() {
            // The key may have been closed, or reused by a newer connection, since the tick:
            // only a timer that is still due is handled.
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.session.poll_timeout().is_some_and(|t| t <= now) {
                conn.session.handle_timeout(now);
                self.after_session(key);
                if started.elapsed() >= TIMEOUT_BUDGET {
                    break;
                }
            }
        }
    }

    /// Closes a connection whose peer has not been reading for `timeout`: its unsent frames
    /// are dropped and a Disconnect OVERLOADED queued (it leaves if the peer ever reads
    /// again; the linger bounds the wait for it).
    fn cut_off_slow_consumer(&mut self, key: usize, timeout: Duration) {
        let conn = &mut self.conns[key];
        log::warn!(
            "peer {} ({}) has not read what this node sends it for {timeout:?} ({} bytes \
             queued): disconnected as a slow consumer (OVERLOADED)",
            conn.shared.addr,
            conn.shared.id,
            conn.shared.queued()
        );
        LimitCounters::count(&self.context.metrics.limits.slow_consumer);
        conn.drop_unsent();
        conn.session.close(
            DisconnectReason::OVERLOADED,
            "slow consumer: what this node sends is not being read",
        );
        self.after_session(key);
    }

    /// Drops the closed connections whose last frames have not been written within the
    /// linger: their peer is not reading.
    fn end_closing(&mut self, now: Instant) {
        let linger = self.context.config.linger;
        let mut i = 0;
        while i < self.closing.len() {
            let (key, id, since) = self.closing[i];
            let open = self.conns.get(key).is_some_and(|c| c.shared.id == id);
            if open && now.duration_since(since) < linger {
                i += 1;
                continue;
            }
            self.closing.swap_remove(i);
            if open {
                let conn = &self.conns[key];
                log::debug!(
                    "connection {id} closed with frames its peer did not read within {linger:?}: dropped"
                );
                let cause = conn.shared.close_cause().unwrap_or(CloseCause::Eof);
                self.finish(key, cause);
            }
        }
    }

    /// Closes the half-closed connections whose linger has passed with nothing left to
    /// write: a Disconnect NORMAL (the peer may still read), then the close.
    fn end_lingering(&mut self, now: Instant) {
        let linger = self.context.config.linger;
        let mut i = 0;
        while i < self.lingering.len() {
            let key = self.lingering[i];
            let Some(conn) = self.conns.get_mut(key) else {
                self.lingering.swap_remove(i);
                continue;
            };
            let since = conn.half_closed_at.unwrap_or(now);
            if now.duration_since(since) < linger || conn.wants_write() {
                i += 1;
                continue;
            }
            self.lingering.swap_remove(i);
            conn.session
                .close(DisconnectReason::NORMAL, "the peer closed its side");
            self.after_session(key);
            self.flush_dirty(now, usize::MAX);
            self.finish(key, CloseCause::Eof);
        }
    }

    fn wake_consumer(&mut self) {
        if std::mem::take(&mut self.pushed) {
            self.context.wake_consumer();
        }
    }

    pub(crate) fn shutdown(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.conns[key].commit_queued();
            self.conns[key]
                .session
                .close(DisconnectReason::SHUTDOWN, "node shutting down");
            self.after_session(key);
        }
        self.flush_dirty(Instant::now(), usize::MAX);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.finish(key, CloseCause::Shutdown);
        }
        while let Some(event) = self.backlog.pop_front() {
            if self.events_out.push(event).is_err() {
                break;
            }
        }
        self.context.wake_consumer();
    }
}

/// Pushes an event to the ring, or to the backlog when the ring is full (events other than
/// frames are rare and must not be lost).
fn push_event(ring: &mut rtrb::Producer<Delivery>, backlog: &mut VecDeque<Delivery>, e: NetEvent) {
    push_delivery(ring, backlog, Delivery::Event(e));
}

fn push_delivery(
    ring: &mut rtrb::Producer<Delivery>,
    backlog: &mut VecDeque<Delivery>,
    d: Delivery,
) {
    if !backlog.is_empty() {
        backlog.push_back(d);
        return;
    }
    if let Err(rtrb::PushError::Full(d)) = ring.push(d) {
        backlog.push_back(d);
    }
}
