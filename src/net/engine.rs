//! The engine: its event-loop threads, the application's handle, and the receiver.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use mio::{Events, Poll, Token, Waker};

use super::event_loop::{Command, EventLoop, LoopHandle, WAKER};
use super::frame::{encode_into, Delivery, FrameBatch, FrameView, OutFrame, ReceivedFrame};
use super::metrics::{EngineMetrics, MetricsSnapshot};
use super::peer::{CloseCause, ConnId, ConnShared, PeerStatus};
use super::pool::Block;
use super::pool::BufferPool;
use super::stream::{ByteStream, PlainTcp};
use crate::session::{PeerInfo, Role, SessionConfig};
use crate::wire::{encode_frame, frame_len, DisconnectReason, Message, MsgType, ProtocolError};

/// How an engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Event-loop threads (default: one per core). Zero runs the engine inline: no thread
    /// of its own, one event loop driven by the application's calls (the receiver's
    /// `recv`/`try_recv` poll the sockets, sends write straight to the socket when they can).
    /// An inline engine makes progress only while some thread calls into it (a sender that
    /// stops calling waits in [`EngineHandle::wait_sent`] first); with
    /// `busy_poll`, a round trip crosses two threads where a threaded engine crosses four.
    pub event_loops: usize,
    /// What this node says in its handshakes, and the session timers.
    pub session: SessionConfig,
    /// Largest payload accepted, checked before any buffer grows.
    pub max_payload: u32,
    /// Bytes a connection's send queue may hold before `try_send` refuses.
    pub send_queue_limit: usize,
    /// Received bytes an event loop may have handed out and not yet had back before it
    /// stops reading.
    pub rx_in_flight_limit: usize,
    /// Events the ring from each loop to the receiver holds.
    pub event_ring_capacity: usize,
    /// Commands each loop's queue holds.
    pub command_queue_capacity: usize,
    /// Spin instead of sleeping, in the loops and in the receiver: lowest latency, one core
    /// per thread.
    pub busy_poll: bool,
    /// How long a loop or the receiver keeps polling (yielding the core between polls) after
    /// its last event before it sleeps: a reply that comes within this window costs no
    /// wake-up. Zero sleeps at once.
    pub spin_before_sleep: Duration,
    /// How long `connect` waits for the TCP connection and the handshake.
    pub connect_timeout: Duration,
    /// The kernel send buffer per socket (SO_SNDBUF); `None` leaves the kernel's autotuning.
    /// A small buffer bounds how long a bulk transfer already handed to the kernel delays a
    /// small frame queued after it.
    pub socket_send_buffer: Option<usize>,
    /// The kernel receive buffer per socket (SO_RCVBUF, set before the connection opens, so
    /// the window is sized by it); `None` leaves the kernel's autotuning. With
    /// `socket_send_buffer` it bounds the bulk bytes the kernel holds between a sender and a
    /// reader, which is what a small frame behind a bulk transfer waits for: a latency-first
    /// setting, at a cost in bulk throughput (PERF.md measures both).
    pub socket_recv_buffer: Option<usize>,
    /// Paces bulk frames (WeightSync, and any frame over 64 KiB) on each connection at this
    /// many bytes per second, spaced one frame at a time; small frames are never paced and
    /// overtake waiting bulk. `None` (the default) sends bulk as fast as the socket takes it.
    /// TCP delivers in order, so a small frame waits behind every bulk byte already handed to
    /// the kernel, and a full-speed bulk stream also takes the cores latency-critical threads
    /// need: pacing bounds both, at the cost of the bulk rate (PERF.md measures the trade).
    pub bulk_rate: Option<u64>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            event_loops: std::thread::available_parallelism().map_or(1, |n| n.get()),
            session: SessionConfig::default(),
            max_payload: crate::wire::DEFAULT_MAX_PAYLOAD,
            send_queue_limit: 8 * 1024 * 1024,
            rx_in_flight_limit: 64 * 1024 * 1024,
            event_ring_capacity: 16 * 1024,
            command_queue_capacity: 64 * 1024,
            busy_poll: false,
            spin_before_sleep: Duration::from_micros(50),
            connect_timeout: Duration::from_secs(10),
            socket_send_buffer: None,
            socket_recv_buffer: None,
            bulk_rate: None,
        }
    }
}

/// What the engine tells the application.
#[derive(Debug)]
pub enum NetEvent {
    /// A handshake completed.
    Connected {
        /// The connection.
        conn: ConnId,
        /// Its remote address.
        addr: SocketAddr,
        /// What the peer said about itself, and what was agreed.
        peer: Box<PeerInfo>,
    },
    /// A data frame (ForwardData, BackwardData, HebbianData, WeightSync).
    Frame(ReceivedFrame),
    /// A connection ended. Every frame it delivered came before this event.
    Disconnected {
        /// The connection.
        conn: ConnId,
        /// Why.
        cause: CloseCause,
    },
}

/// What [`Receiver::poll`] hands its handler.
#[derive(Debug)]
pub enum Polled<'a> {
    /// A data frame, lent for the call.
    Frame(FrameView<'a>),
    /// A connection change: [`NetEvent::Connected`] or [`NetEvent::Disconnected`], never a
    /// [`NetEvent::Frame`] (frames come as [`Polled::Frame`]).
    Event(NetEvent),
}

/// Hands one event to a [`Receiver::poll`] handler, a frame as a view.
fn hand_over(event: NetEvent, handler: &mut impl FnMut(Polled<'_>)) {
    match event {
        NetEvent::Frame(frame) => handler(Polled::Frame(frame.view())),
        other => handler(Polled::Event(other)),
    }
}

/// Why a send or a connect did not happen.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetError {
    /// The socket layer failed.
    Io(io::Error),
    /// No open connection has this id (closed, or never existed).
    UnknownConnection(ConnId),
    /// The connection's send queue is full: try again after it drains, or use the blocking
    /// `send`.
    WouldBlock {
        /// Bytes queued.
        queued: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The handshake has not completed yet.
    NotEstablished(ConnId),
    /// The message is not allowed (a capability not agreed, a control type...).
    Protocol(ProtocolError),
    /// The connection closed (during a connect or a blocking send).
    Closed(CloseCause),
    /// The connect or the handshake took longer than the timeout.
    Timeout(Duration),
    /// The engine has shut down.
    Shutdown,
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::Io(e) => write!(f, "I/O error: {e}"),
            NetError::UnknownConnection(c) => write!(f, "no open connection {c}"),
            NetError::WouldBlock { queued, limit } => write!(
                f,
                "send queue full ({queued} of {limit} bytes): the peer reads slower than we send; retry later or use a blocking send"
            ),
            NetError::NotEstablished(c) => write!(f, "connection {c} has not completed its handshake"),
            NetError::Protocol(e) => write!(f, "{e}"),
            NetError::Closed(cause) => write!(f, "connection closed: {cause}"),
            NetError::Timeout(d) => write!(f, "timed out after {d:?}"),
            NetError::Shutdown => write!(f, "the engine has shut down"),
        }
    }
}

impl std::error::Error for NetError {}

impl From<io::Error> for NetError {
    fn from(e: io::Error) -> Self {
        NetError::Io(e)
    }
}

impl From<ProtocolError> for NetError {
    fn from(e: ProtocolError) -> Self {
        NetError::Protocol(e)
    }
}

/// State shared by the loops and every handle.
pub(crate) struct EngineShared {
    pub(crate) config: EngineConfig,
    pub(crate) session_config: Arc<SessionConfig>,
    pub(crate) pool: BufferPool,
    pub(crate) metrics: EngineMetrics,
    loops: Vec<Arc<LoopHandle>>,
    conns: RwLock<HashMap<ConnId, Arc<ConnShared>>>,
    next_id: AtomicU64,
    next_loop: AtomicUsize,
    consumer_waker: Waker,
    consumer_sleeping: AtomicBool,
    shut_down: AtomicBool,
    /// Whether the engine runs inline (`event_loops: 0`).
    is_inline: bool,
    /// The inline engine's loop, driven by whichever application thread takes the lock;
    /// `None` for a threaded engine, and once stopped.
    inline: Mutex<Option<Box<InlineLoop>>>,
    /// Set while the receiver waits for the inline loop's lock: senders then leave their
    /// commands for it rather than taking the lock themselves.
    receiver_waiting: AtomicBool,
}

/// An event loop run on the application's threads.
struct InlineLoop {
    event_loop: EventLoop,
    events: Events,
}

impl EngineShared {
    fn new_conn(&self, addr: SocketAddr) -> Arc<ConnShared> {
        let id = ConnId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let loop_index = self.next_loop.fetch_add(1, Ordering::Relaxed) % self.loops.len();
        let shared = Arc::new(ConnShared::new(
            id,
            addr,
            loop_index,
            self.config.send_queue_limit,
        ));
        self.conns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&shared));
        shared
    }

    pub(crate) fn forget(&self, id: ConnId) {
        self.conns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    fn conn(&self, id: ConnId) -> Option<Arc<ConnShared>> {
        self.conns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Spreads an accepted connection over the loops.
    pub(crate) fn dispatch_accepted(
        &self,
        stream: Box<dyn ByteStream>,
        addr: SocketAddr,
        here: &mut EventLoop,
    ) {
        let shared = self.new_conn(addr);
        if shared.loop_index == here.index() {
            here.adopt_local(stream, shared);
            return;
        }
        let command = Command::Adopt {
            stream,
            role: Role::Acceptor,
            shared: Arc::clone(&shared),
        };
        if self.loops[shared.loop_index].submit(command).is_err() {
            log::warn!(
                "event loop {} is saturated: connection from {addr} dropped",
                shared.loop_index
            );
            shared.set_closed(CloseCause::Shutdown);
            self.forget(shared.id);
        }
    }

    /// Checks that `message` may be sent on the connection now; returns its type and frame
    /// length.
    fn check_message(
        &self,
        shared: &ConnShared,
        message: &Message<'_>,
    ) -> Result<(MsgType, usize), NetError> {
        let msg_type = message.msg_type();
        self.check_sendable(shared, msg_type)?;
        let len = frame_len(message)?;
        self.check_len(len)?;
        Ok((msg_type, len))
    }

    /// Whether a data frame of `msg_type` may go out on the connection now.
    fn check_sendable(&self, shared: &ConnShared, msg_type: MsgType) -> Result<(), NetError> {
        if let Some(cause) = shared.is_closed().then(|| shared.close_cause()).flatten() {
            return Err(NetError::Closed(cause));
        }
        if self.shut_down.load(Ordering::Relaxed) {
            return Err(NetError::Shutdown);
        }
        if !shared.is_established() {
            return Err(NetError::NotEstablished(shared.id));
        }
        match msg_type.required_capability() {
            None => {
                return Err(NetError::Protocol(ProtocolError::UnexpectedMessage {
                    msg_type,
                    state: "established (control frames are the session's own)",
                }))
            }
            Some(capability) if shared.capabilities() & capability == 0 => {
                return Err(NetError::Protocol(ProtocolError::CapabilityNotAgreed {
                    msg_type,
                    capability,
                }))
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn check_len(&self, len: usize) -> Result<(), NetError> {
        if len > crate::wire::HEADER_LEN + self.config.max_payload as usize {
            return Err(NetError::Protocol(ProtocolError::FrameTooLarge {
                length: (len - crate::wire::HEADER_LEN) as u32,
                max: self.config.max_payload,
            }));
        }
        Ok(())
    }

    /// Reserves `len` bytes of the connection's send queue: at once or `WouldBlock` without
    /// `wait`, else waiting for room. `before_wait` runs once before the first wait (a
    /// sender hands over what it holds, so that the queue can drain).
    fn reserve(
        &self,
        shared: &ConnShared,
        len: usize,
        wait: Option<Duration>,
        before_wait: &mut dyn FnMut(),
    ) -> Result<(), NetError> {
        let limit = self.config.send_queue_limit;
        let mut deadline = None;
        while let Err(queued) = shared.try_reserve(len, limit) {
            let Some(wait) = wait else {
                return Err(NetError::WouldBlock { queued, limit });
            };
            let deadline = *deadline.get_or_insert_with(|| {
                before_wait();
                Instant::now() + wait
            });
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NetError::Timeout(wait));
            }
            if !self.wait_for(shared, left, |s| {
                s.queued() + len <= limit || s.queued() == 0
            }) {
                if let Some(cause) = shared.close_cause() {
                    return Err(NetError::Closed(cause));
                }
            }
        }
        Ok(())
    }

    /// Encodes one frame into its own block and queues it (its `len` bytes already
    /// reserved; released on failure).
    fn encode_and_submit(
        &self,
        shared: &ConnShared,
        message: &Message<'_>,
        len: usize,
    ) -> Result<(), NetError> {
        if let Some(sent) = self.send_direct(shared, message, len) {
            return sent;
        }
        match OutFrame::encode(&self.pool, message, 0, len) {
            Ok(frame) => self.submit(shared, frame),
            Err(e) => {
                shared.release_queued(len);
                Err(e.into())
            }
        }
    }

    /// Sends `message` (its `len` bytes reserved) through the inline loop if this thread can
    /// take it now: straight from the caller's memory when the connection has nothing queued,
    /// so the values are neither copied nor encoded into a block. `None` when the engine is
    /// threaded or another thread drives the loop: queue it the ordinary way.
    fn send_direct(
        &self,
        shared: &ConnShared,
        message: &Message<'_>,
        len: usize,
    ) -> Option<Result<(), NetError>> {
        let guard = self.inline_for_sender()?;
        guard.as_ref()?;
        let slot = shared.slot().unwrap_or(usize::MAX);
        let mut sent = Ok(());
        Self::run_inline(guard, |l| {
            let (running, outcome) = l.event_loop.send_message_now(shared.id, slot, message, len);
            sent = outcome.map_err(NetError::from);
            running
        });
        Some(sent)
    }

    /// Queues a received frame (its bytes already reserved): header, payload and checksum
    /// as they came; the sequence number is patched when the frame takes its place in the
    /// connection's wire order. The frame's own block goes if nothing else shares it, else
    /// the frame is copied into a new one.
    fn relay_submit(&self, shared: &ConnShared, frame: ReceivedFrame) -> Result<(), NetError> {
        let out = frame.into_out_frame().unwrap_or_else(|frame| {
            let bytes = frame.bytes();
            let mut block = self.pool.take(bytes.len());
            block.bytes_mut()[..bytes.len()].copy_from_slice(bytes);
            OutFrame::single(block, bytes.len(), frame.msg_type())
        });
        self.submit(shared, out)
    }

    /// Queues an encoded frame whose bytes are reserved (released on failure).
    fn submit(&self, shared: &ConnShared, frame: OutFrame) -> Result<(), NetError> {
        let len = frame.len;
        let slot = shared.slot().unwrap_or(usize::MAX);
        let Some(frame) = self.send_inline_now(shared.id, slot, frame) else {
            return Ok(());
        };
        let command = Command::Send {
            conn: shared.id,
            slot,
            frame,
        };
        if self.loops[shared.loop_index].submit(command).is_err() {
            shared.release_queued(len);
            return Err(NetError::WouldBlock {
                queued: shared.queued(),
                limit: self.config.send_queue_limit,
            });
        }
        self.drive_inline(None);
        Ok(())
    }

    /// Hands `frame` straight to an inline loop and writes, if this thread can take the loop
    /// now; gives the frame back otherwise (a threaded engine, a busy or stopped loop, a
    /// waiting receiver), for the command queue.
    fn send_inline_now(&self, conn: ConnId, slot: usize, frame: OutFrame) -> Option<OutFrame> {
        match self.inline_for_sender() {
            Some(guard) if guard.is_some() => {
                Self::run_inline(guard, |l| l.event_loop.send_now(Some((conn, slot, frame))));
                None
            }
            _ => Some(frame),
        }
    }

    /// Runs the inline loop on this thread if no other thread is: a send pass (commands,
    /// then writes) for `None`, a whole turn waiting at most `max_wait` otherwise. Returns
    /// false if the engine is threaded, stopped, or another thread is driving it.
    fn drive_inline(&self, max_wait: Option<Duration>) -> bool {
        let Some(guard) = self.inline_for_sender() else {
            return false;
        };
        Self::run_inline(guard, |l| match max_wait {
            None => l.event_loop.send_now(None),
            Some(wait) => l.event_loop.turn(&mut l.events, Some(wait), true),
        });
        true
    }

    /// The inline loop's lock for a sending thread: only if the engine is inline, nobody
    /// holds it, and the receiver is not waiting for it (it drives next, the queued commands
    /// included: a stream of sends must not keep it from the lock while a reply waits in a
    /// socket).
    fn inline_for_sender(&self) -> Option<MutexGuard<'_, Option<Box<InlineLoop>>>> {
        if !self.is_inline || self.receiver_waiting.load(Ordering::Relaxed) {
            return None;
        }
        match self.inline.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Runs a whole turn of the inline loop (waiting at most `max_wait`) on the receiving
    /// thread, waiting for the lock if another thread holds it: the others hold it for a
    /// send pass or a bounded wait, and the receiver must not sleep meanwhile with a reply
    /// unread in the socket that nobody else will read.
    fn drive_inline_for_receiver(&self, max_wait: Duration) -> bool {
        if !self.is_inline {
            return false;
        }
        let guard = match self.inline.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                self.receiver_waiting.store(true, Ordering::Relaxed);
                let guard = self.inline.lock().unwrap_or_else(|p| p.into_inner());
                self.receiver_waiting.store(false, Ordering::Relaxed);
                guard
            }
        };
        Self::run_inline(guard, |l| {
            l.event_loop.turn(&mut l.events, Some(max_wait), true)
        });
        true
    }

    /// Runs `work` on the inline loop (if it has not stopped), and stops the loop when
    /// `work` says so.
    fn run_inline(
        mut guard: MutexGuard<'_, Option<Box<InlineLoop>>>,
        work: impl FnOnce(&mut InlineLoop) -> bool,
    ) {
        let Some(inline) = guard.as_mut() else {
            return;
        };
        if !work(inline) {
            if let Some(mut stopped) = guard.take() {
                stopped.event_loop.shutdown();
            }
        }
    }

    /// Waits until `ready` holds for the connection, it closes, or `timeout` passes; an
    /// inline engine is driven meanwhile.
    fn wait_for(
        &self,
        conn: &ConnShared,
        timeout: Duration,
        ready: impl Fn(&ConnShared) -> bool,
    ) -> bool {
        if !self.is_inline {
            return conn.wait_until(timeout, ready);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if ready(conn) {
                return true;
            }
            if conn.is_closed() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let slice = (deadline - now).min(Duration::from_millis(1));
            if !self.drive_inline(Some(slice)) {
                conn.wait_until(slice, &ready);
            }
        }
    }

    pub(crate) fn wake_consumer(&self) {
        fence(Ordering::SeqCst);
        if self.consumer_sleeping.swap(false, Ordering::SeqCst) {
            if let Err(e) = self.consumer_waker.wake() {
                log::error!("could not wake the receiver: {e}");
            }
        }
    }
}

/// The engine's threads. Dropping it shuts the engine down.
pub struct Engine {
    handle: EngineHandle,
    threads: Vec<JoinHandle<()>>,
}

impl Engine {
    /// Starts the event loops. Returns the engine (keep it alive), a handle for sending, and
    /// the receiver of events.
    pub fn start(config: EngineConfig) -> io::Result<(Engine, EngineHandle, Receiver)> {
        let loop_count = config.event_loops.max(1);
        let consumer_poll = Poll::new()?;
        let consumer_waker = Waker::new(consumer_poll.registry(), WAKER)?;
        let mut polls = Vec::new();
        let mut loops = Vec::new();
        for _ in 0..loop_count {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            loops.push(Arc::new(LoopHandle {
                commands: ArrayQueue::new(config.command_queue_capacity.max(16)),
                waker,
                sleeping: AtomicBool::new(false),
            }));
            polls.push(poll);
        }
        let shared = Arc::new(EngineShared {
            session_config: Arc::new(config.session.clone()),
            pool: BufferPool::new(),
            metrics: EngineMetrics::default(),
            loops: loops.clone(),
            conns: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            next_loop: AtomicUsize::new(0),
            consumer_waker,
            consumer_sleeping: AtomicBool::new(false),
            shut_down: AtomicBool::new(false),
            is_inline: config.event_loops == 0,
            inline: Mutex::new(None),
            receiver_waiting: AtomicBool::new(false),
            config,
        });
        let mut rings = Vec::new();
        let mut bulk_rings = Vec::new();
        let mut threads = Vec::new();
        for (index, poll) in polls.into_iter().enumerate() {
            let (producer, consumer) =
                rtrb::RingBuffer::new(shared.config.event_ring_capacity.max(16));
            let (bulk_producer, bulk_consumer) =
                rtrb::RingBuffer::new(shared.config.event_ring_capacity.max(16));
            rings.push(consumer);
            bulk_rings.push(bulk_consumer);
            let event_loop = EventLoop::new(
                index,
                poll,
                Arc::clone(&loops[index]),
                Arc::clone(&shared),
                producer,
                bulk_producer,
            );
            if shared.is_inline {
                // Kept by the engine until it stops (the loop holds the engine's state: the
                // stop breaks that cycle).
                *shared.inline.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Box::new(InlineLoop {
                        event_loop,
                        events: Events::with_capacity(1024),
                    }));
                continue;
            }
            threads.push(
                std::thread::Builder::new()
                    .name(format!("nnp-loop-{index}"))
                    .spawn(move || event_loop.run())?,
            );
        }
        let handle = EngineHandle { shared };
        let receiver = Receiver {
            rings,
            batch: None,
            bulk_rings,
            draining_bulk: None,
            last_event: Instant::now(),
            got_events: false,
            next: 0,
            poll: consumer_poll,
            events: Events::with_capacity(8),
            shared: Arc::clone(&handle.shared),
        };
        Ok((
            Engine {
                handle: handle.clone(),
                threads,
            },
            handle,
            receiver,
        ))
    }

    /// Closes every connection with a Disconnect and stops the loops.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.handle.shared.shut_down.store(true, Ordering::SeqCst);
        if self.handle.shared.is_inline {
            let stopped = self
                .handle
                .shared
                .inline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(mut inline) = stopped {
                inline.event_loop.shutdown();
            }
            return;
        }
        for l in &self.handle.shared.loops {
            while l.submit(Command::Shutdown).is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends, connects and inspects; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<EngineShared>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle").finish_non_exhaustive()
    }
}

impl EngineHandle {
    fn check_running(&self) -> Result<(), NetError> {
        if self.shared.shut_down.load(Ordering::Relaxed) {
            return Err(NetError::Shutdown);
        }
        Ok(())
    }

    /// Listens on `addr` (port 0 picks a free port); returns the bound address.
    pub fn listen(&self, addr: impl ToSocketAddrs) -> Result<SocketAddr, NetError> {
        self.check_running()?;
        let addr = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on")
        })?;
        let listener = bind_listener(addr, &self.shared.config)?;
        let local = listener.local_addr()?;
        let index = self.shared.next_loop.fetch_add(1, Ordering::Relaxed) % self.shared.loops.len();
        if self.shared.loops[index]
            .submit(Command::Listen(listener))
            .is_err()
        {
            return Err(NetError::WouldBlock {
                queued: 0,
                limit: 0,
            });
        }
        self.shared.drive_inline(None);
        log::info!("listening on {local}");
        Ok(local)
    }

    /// Connects to `addr` and completes the handshake; blocks until then.
    pub fn connect(&self, addr: impl ToSocketAddrs) -> Result<ConnId, NetError> {
        self.check_running()?;
        let timeout = self.shared.config.connect_timeout;
        let mut last_error = None;
        for addr in addr.to_socket_addrs()? {
            match connect_socket(&addr, timeout, &self.shared.config) {
                Ok(stream) => return self.adopt_connected(stream, addr, timeout),
                Err(e) => last_error = Some(e),
            }
        }
        Err(NetError::Io(last_error.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to")
        })))
    }

    fn adopt_connected(
        &self,
        stream: std::net::TcpStream,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<ConnId, NetError> {
        stream.set_nodelay(true)?;
        tune_socket(&stream, &self.shared.config);
        stream.set_nonblocking(true)?;
        let stream = mio::net::TcpStream::from_std(stream);
        let shared = self.shared.new_conn(addr);
        let command = Command::Adopt {
            stream: Box::new(PlainTcp(stream)),
            role: Role::Initiator,
            shared: Arc::clone(&shared),
        };
        if self.shared.loops[shared.loop_index]
            .submit(command)
            .is_err()
        {
            self.shared.forget(shared.id);
            return Err(NetError::WouldBlock {
                queued: 0,
                limit: 0,
            });
        }
        if self
            .shared
            .wait_for(&shared, timeout, ConnShared::is_established)
        {
            log::info!("connected to {addr} as {}", shared.id);
            return Ok(shared.id);
        }
        match shared.close_cause() {
            Some(cause) => Err(NetError::Closed(cause)),
            None => {
                self.close(shared.id, DisconnectReason::NORMAL, "handshake timed out");
                Err(NetError::Timeout(timeout))
            }
        }
    }

    /// Queues `message` on `conn` at once, or fails with [`NetError::WouldBlock`] if the
    /// connection's send queue is full. Never drops a message silently.
    pub fn try_send(&self, conn: ConnId, message: &Message<'_>) -> Result<(), NetError> {
        let shared = self
            .shared
            .conn(conn)
            .ok_or(NetError::UnknownConnection(conn))?;
        self.send_on(&shared, message, None)
    }

    /// Queues `message`, waiting (at most `timeout`) while the send queue is full.
    pub fn send(
        &self,
        conn: ConnId,
        message: &Message<'_>,
        timeout: Duration,
    ) -> Result<(), NetError> {
        let shared = self
            .shared
            .conn(conn)
            .ok_or(NetError::UnknownConnection(conn))?;
        self.send_on(&shared, message, Some(timeout))
    }

    fn send_on(
        &self,
        shared: &Arc<ConnShared>,
        message: &Message<'_>,
        wait: Option<Duration>,
    ) -> Result<(), NetError> {
        let (_, len) = self.shared.check_message(shared, message)?;
        self.shared.reserve(shared, len, wait, &mut || {})?;
        self.shared.encode_and_submit(shared, message, len)
    }

    /// Sends a received data frame on `conn` as it came (type, payload and checksum; the
    /// sequence number is `conn`'s own), waiting (at most `timeout`) while the send queue is
    /// full. A pipeline stage, an echo or a broadcaster passes frames on this way without
    /// decoding and re-encoding them: no checksum pass, and no copy when no other frame
    /// shares the frame's read block (the block itself is queued), one copy otherwise. To
    /// send one frame to several connections, relay clones of it (a clone is a view of the
    /// same block). `conn` may be the frame's own connection or another; its peer must have
    /// agreed the frame type's capability.
    pub fn relay(
        &self,
        conn: ConnId,
        frame: ReceivedFrame,
        timeout: Duration,
    ) -> Result<(), NetError> {
        self.relay_on(conn, frame, Some(timeout))
    }

    /// [`EngineHandle::relay`] without waiting: `WouldBlock` when the send queue is full.
    pub fn try_relay(&self, conn: ConnId, frame: ReceivedFrame) -> Result<(), NetError> {
        self.relay_on(conn, frame, None)
    }

    fn relay_on(
        &self,
        conn: ConnId,
        frame: ReceivedFrame,
        wait: Option<Duration>,
    ) -> Result<(), NetError> {
        let shared = self
            .shared
            .conn(conn)
            .ok_or(NetError::UnknownConnection(conn))?;
        let len = frame.bytes().len();
        self.shared.check_sendable(&shared, frame.msg_type())?;
        self.shared.check_len(len)?;
        self.shared.reserve(&shared, len, wait, &mut || {})?;
        self.shared.relay_submit(&shared, frame)
    }

    /// A batching sender for `conn`: it encodes small frames back to back into one pooled
    /// block and hands the block to the event loop as one command when it is full or
    /// flushed, so a stream of small frames costs one hand-off and one write per ~64 KiB.
    pub fn sender(&self, conn: ConnId) -> Result<Sender, NetError> {
        let shared = self
            .shared
            .conn(conn)
            .ok_or(NetError::UnknownConnection(conn))?;
        Ok(Sender {
            max_frame: crate::wire::HEADER_LEN + self.shared.config.max_payload as usize,
            engine: Arc::clone(&self.shared),
            conn: shared,
            block: None,
            len: 0,
            frames: 0,
            first_type: MsgType::ForwardData,
            stride: None,
            credit: 0,
            capabilities: 0,
        })
    }

    /// Queues every message on `conn`, in order, as few hand-offs to the event loop as
    /// possible (see [`Sender`]), waiting at most `timeout` for room per message. On an error
    /// the messages before the failing one are queued, the rest are not; returns how many
    /// were queued otherwise.
    pub fn send_batch(
        &self,
        conn: ConnId,
        messages: &[Message<'_>],
        timeout: Duration,
    ) -> Result<usize, NetError> {
        let mut sender = self.sender(conn)?;
        for message in messages {
            sender.send(message, timeout)?;
        }
        sender.flush()?;
        Ok(messages.len())
    }

    /// Waits (at most `timeout`) until everything queued on `conn` has been handed to the
    /// kernel, driving an inline engine meanwhile: an inline engine writes only while some
    /// thread calls into it, so a sender that is about to stop calling (or to exit) waits
    /// here first. Frames held in a [`Sender`] count once it flushes them.
    pub fn wait_sent(&self, conn: ConnId, timeout: Duration) -> Result<(), NetError> {
        let shared = self
            .shared
            .conn(conn)
            .ok_or(NetError::UnknownConnection(conn))?;
        if self.shared.wait_for(&shared, timeout, |s| s.queued() == 0) {
            return Ok(());
        }
        match shared.close_cause() {
            Some(cause) => Err(NetError::Closed(cause)),
            None => Err(NetError::Timeout(timeout)),
        }
    }

    /// Closes `conn` gracefully with a Disconnect frame.
    pub fn close(&self, conn: ConnId, reason: DisconnectReason, message: &str) {
        if let Some(shared) = self.shared.conn(conn) {
            let command = Command::Close {
                conn,
                slot: shared.slot().unwrap_or(usize::MAX),
                reason,
                message: message.to_owned(),
            };
            if self.shared.loops[shared.loop_index]
                .submit(command)
                .is_err()
            {
                log::warn!("could not queue the close of {conn}: its loop is saturated");
            }
            self.shared.drive_inline(None);
        }
    }

    /// Sends a heartbeat on `conn` now; its reply updates the connection's round-trip time.
    pub fn ping(&self, conn: ConnId) -> Result<(), NetError> {
        let shared = self
            .shared
            .conn(conn)
            .ok_or(NetError::UnknownConnection(conn))?;
        let _ = self.shared.loops[shared.loop_index].submit(Command::Heartbeat {
            conn,
            slot: shared.slot().unwrap_or(usize::MAX),
        });
        self.shared.drive_inline(None);
        Ok(())
    }

    /// The open connections.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let conns = self.shared.conns.read().unwrap_or_else(|e| e.into_inner());
        let mut peers: Vec<PeerStatus> = conns.values().map(|s| status(s)).collect();
        peers.sort_by_key(|p| p.conn);
        peers
    }

    /// One connection's status.
    pub fn peer(&self, conn: ConnId) -> Option<PeerStatus> {
        self.shared.conn(conn).map(|s| status(&s))
    }

    /// Engine-wide counters and the round-trip histogram.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// The buffer pool (for its occupancy figures).
    pub fn pool(&self) -> &BufferPool {
        &self.shared.pool
    }

    /// The sending limits in force.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Encodes one message type's frame length, for callers that size their own batches.
    pub fn frame_len(message: &Message<'_>) -> Result<usize, NetError> {
        Ok(frame_len(message)?)
    }

    /// Whether this type needs a capability agreed with `conn`'s peer, and if so whether it is.
    pub fn can_send(&self, conn: ConnId, msg_type: MsgType) -> bool {
        self.shared.conn(conn).is_some_and(|s| {
            msg_type
                .required_capability()
                .is_some_and(|c| s.capabilities() & c != 0)
        })
    }
}

/// Applies the configured socket buffer sizes (best effort: a refusal is logged, not fatal).
pub(crate) fn tune_socket(socket: &impl std::os::fd::AsFd, config: &EngineConfig) {
    let socket = socket2::SockRef::from(socket);
    if let Some(size) = config.socket_send_buffer {
        if let Err(e) = socket.set_send_buffer_size(size) {
            log::debug!("SO_SNDBUF {size} refused: {e}");
        }
    }
    if let Some(size) = config.socket_recv_buffer {
        if let Err(e) = socket.set_recv_buffer_size(size) {
            log::debug!("SO_RCVBUF {size} refused: {e}");
        }
    }
}

/// A listening socket with the configured buffer sizes set before `listen`, so that accepted
/// connections inherit them and their window is sized by them from the SYN on.
fn bind_listener(addr: SocketAddr, config: &EngineConfig) -> io::Result<mio::net::TcpListener> {
    let socket = tcp_socket(addr, config)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// A TCP socket for `addr`'s family with the configured buffer sizes.
fn tcp_socket(addr: SocketAddr, config: &EngineConfig) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    tune_socket(&socket, config);
    Ok(socket)
}

/// A connected socket with the configured buffer sizes set before the SYN.
fn connect_socket(
    addr: &SocketAddr,
    timeout: Duration,
    config: &EngineConfig,
) -> io::Result<std::net::TcpStream> {
    let socket = tcp_socket(*addr, config)?;
    socket.connect_timeout(&(*addr).into(), timeout)?;
    Ok(socket.into())
}

fn status(shared: &ConnShared) -> PeerStatus {
    PeerStatus {
        conn: shared.id,
        addr: shared.addr,
        info: shared.info(),
        rtt: shared.rtt(),
        queued_bytes: shared.queued(),
        traffic: shared.counters(),
    }
}

/// Frames larger than this are not batched by a [`Sender`]: they go alone, as with
/// [`EngineHandle::send`].
pub const SENDER_BATCH_FRAME_MAX: usize = 16 * 1024;
/// The block a [`Sender`] encodes into: it hands it over when the next frame does not fit.
const SENDER_BLOCK: usize = 64 * 1024;

/// A batching sender for one connection, from [`EngineHandle::sender`]: small frames are
/// encoded back to back into one pooled block that reaches the event loop as one command
/// (when the next frame does not fit, on [`Sender::flush`], or when the sender is dropped),
/// so a stream of small frames costs one hand-off, one wake-up and one write per ~64 KiB
/// rather than per frame.
///
/// Frames are held until then: call `flush` when a burst is complete. Every frame is counted
/// in the connection's send queue from the moment it is accepted (a sender reserves the rest
/// of its block, up to an eighth of the queue's limit, at once when the queue has room, and
/// gives back what it did not fill when it hands the block over: the small frames that fill
/// a block cost no atomic operation each, and the reserved room counts in
/// [`PeerStatus::queued_bytes`] meanwhile), so backpressure is the same as
/// [`EngineHandle::try_send`]'s: [`Sender::try_send`] refuses with
/// [`NetError::WouldBlock`] (after handing over what it holds, so the queue can drain) and
/// [`Sender::send`] waits. Frames leave in the order they are handed to the loop: a
/// sender's frames keep their order (a WeightSync or a frame larger than
/// [`SENDER_BATCH_FRAME_MAX`] goes alone, after the frames batched before it), and frames held
/// in a sender leave after anything sent on the connection by other means before the flush.
pub struct Sender {
    engine: Arc<EngineShared>,
    conn: Arc<ConnShared>,
    block: Option<Block>,
    len: usize,
    frames: u32,
    first_type: MsgType,
    /// The length of every frame held, while they are all of `first_type` and one length.
    stride: Option<usize>,
    /// Send-queue bytes reserved for the rest of the block: frames that fit in it are taken
    /// with no atomic operation and no connection check (those were made when it was
    /// reserved). Given back when the block is handed over.
    credit: usize,
    /// The connection's agreed capabilities when `credit` was reserved (fixed once
    /// established).
    capabilities: u32,
    /// The longest frame the engine sends (header and `max_payload`).
    max_frame: usize,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("conn", &self.conn.id)
            .field("buffered_frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// The connection.
    pub fn conn(&self) -> ConnId {
        self.conn.id
    }

    /// Frames accepted and not yet handed to the event loop.
    pub fn buffered_frames(&self) -> usize {
        self.frames as usize
    }

    /// Accepts `message` at once, or fails with [`NetError::WouldBlock`] if the connection's
    /// send queue is full. Never drops a message silently.
    pub fn try_send(&mut self, message: &Message<'_>) -> Result<(), NetError> {
        self.send_inner(message, None)
    }

    /// Accepts `message`, waiting (at most `timeout`) while the send queue is full.
    pub fn send(&mut self, message: &Message<'_>, timeout: Duration) -> Result<(), NetError> {
        self.send_inner(message, Some(timeout))
    }

    fn send_inner(
        &mut self,
        message: &Message<'_>,
        wait: Option<Duration>,
    ) -> Result<(), NetError> {
        if let Some(taken) = self.send_within_credit(message) {
            return taken;
        }
        // The checks and the reservation frame by frame; the credit (if any) is given back
        // first so that it cannot hold the room this frame waits for.
        self.return_credit();
        self.send_checked(message, wait)?;
        if self.block.is_some() {
            self.reserve_credit();
        }
        Ok(())
    }

    /// Takes `message` into the open block if it is a small data frame of an agreed type
    /// that fits in the credit; `None` if the checked path must decide.
    #[inline]
    fn send_within_credit(&mut self, message: &Message<'_>) -> Option<Result<(), NetError>> {
        // Two plain loads: a close or a shutdown must refuse the frame now, not drop it later.
        if self.credit == 0
            || self.conn.is_closed()
            || self.engine.shut_down.load(Ordering::Relaxed)
        {
            return None;
        }
        let msg_type = message.msg_type();
        let capability = msg_type.required_capability()?;
        if self.capabilities & capability == 0 || msg_type == MsgType::WeightSync {
            return None;
        }
        // Encoded straight into the credit's room, capped at the longest frame that may be
        // batched (one length computation): a frame that does not fit is refused by the
        // encoder before it writes anything, and takes the checked path.
        let block = self.block.as_mut()?;
        let room_len = self.credit.min(SENDER_BATCH_FRAME_MAX).min(self.max_frame);
        let room = &mut block.bytes_mut()[self.len..self.len + room_len];
        let len = encode_into(message, 0, room).ok()?;
        self.credit -= len;
        self.held(msg_type, len);
        Some(Ok(()))
    }

    /// Reserves the rest of the open block in the send queue (at most an eighth of the
    /// queue's limit, so that a sender holding a few frames leaves others on the connection
    /// their room), if the queue has room for it.
    fn reserve_credit(&mut self) {
        let limit = self.engine.config.send_queue_limit;
        let rest = (SENDER_BLOCK - self.len).min(limit / 8);
        if rest > 0 && self.conn.is_established() && self.conn.try_reserve(rest, limit).is_ok() {
            self.credit = rest;
            self.capabilities = self.conn.capabilities();
        }
    }

    /// Gives back the credit not used.
    fn return_credit(&mut self) {
        self.conn.release_queued(std::mem::take(&mut self.credit));
    }

    /// Counts a frame of `len` bytes just encoded at the end of the block.
    #[inline]
    fn held(&mut self, msg_type: MsgType, len: usize) {
        if self.frames == 0 {
            self.first_type = msg_type;
            self.stride = Some(len);
        } else if self.stride != Some(len) || msg_type != self.first_type {
            self.stride = None;
        }
        self.len += len;
        self.frames += 1;
    }

    /// One frame with every check and its own reservation.
    fn send_checked(
        &mut self,
        message: &Message<'_>,
        wait: Option<Duration>,
    ) -> Result<(), NetError> {
        let (msg_type, len) = self.engine.check_message(&self.conn, message)?;
        let limit = self.engine.config.send_queue_limit;
        if self.conn.try_reserve(len, limit).is_err() {
            self.reserve_or_flush(len, wait)?;
        }
        if len > SENDER_BATCH_FRAME_MAX || msg_type == MsgType::WeightSync {
            if let Err(e) = self.flush() {
                self.conn.release_queued(len);
                return Err(e);
            }
            return self.engine.encode_and_submit(&self.conn, message, len);
        }
        if self.len + len > SENDER_BLOCK {
            if let Err(e) = self.flush() {
                self.conn.release_queued(len);
                return Err(e);
            }
        }
        let block = self
            .block
            .get_or_insert_with(|| self.engine.pool.take(SENDER_BLOCK));
        let mut dst = &mut block.bytes_mut()[self.len..self.len + len];
        if let Err(e) = encode_frame(message, 0, &mut dst) {
            self.conn.release_queued(len);
            return Err(e.into());
        }
        self.held(msg_type, len);
        Ok(())
    }

    /// Reserves `len` bytes of a full send queue: waiting (for `wait`) after handing over
    /// what is held, since the queue cannot drain while this sender holds frames.
    fn reserve_or_flush(&mut self, len: usize, wait: Option<Duration>) -> Result<(), NetError> {
        let engine = Arc::clone(&self.engine);
        let conn = Arc::clone(&self.conn);
        let mut flushed = Ok(());
        let reserved = engine.reserve(&conn, len, wait, &mut || flushed = self.flush());
        if let Err(e) = flushed {
            if reserved.is_ok() {
                self.conn.release_queued(len);
            }
            return Err(e);
        }
        if let Err(e) = reserved {
            if matches!(e, NetError::WouldBlock { .. }) {
                // What is held must leave, or the queue this frame waits for never drains.
                self.flush()?;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Hands every frame held to the event loop. Waits while the loop's command queue is
    /// full; fails (releasing the frames) only if the connection closed or the engine shut
    /// down meanwhile.
    pub fn flush(&mut self) -> Result<(), NetError> {
        self.return_credit();
        if self.frames == 0 {
            return Ok(());
        }
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        let (len, frames) = (
            std::mem::take(&mut self.len),
            std::mem::take(&mut self.frames),
        );
        let frame = match self.stride.take() {
            Some(stride) => {
                debug_assert_eq!(len, frames as usize * stride);
                OutFrame::uniform_batch(block, self.first_type, frames, stride)
            }
            None => OutFrame::batch(block, len, self.first_type, frames),
        };
        let len = frame.len;
        let mut command = Command::Send {
            conn: self.conn.id,
            slot: self.conn.slot().unwrap_or(usize::MAX),
            frame,
        };
        let lane = &self.engine.loops[self.conn.loop_index];
        loop {
            match lane.submit(command) {
                Ok(()) => {
                    self.engine.drive_inline(None);
                    return Ok(());
                }
                Err(back) => command = back,
            }
            let stop = if self.engine.shut_down.load(Ordering::Relaxed) {
                Some(NetError::Shutdown)
            } else {
                self.conn.close_cause().map(NetError::Closed)
            };
            if let Some(e) = stop {
                self.conn.release_queued(len);
                return Err(e);
            }
            if !self.engine.drive_inline(Some(Duration::ZERO)) {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            log::debug!("frames held by a sender on {} not sent: {e}", self.conn.id);
        }
    }
}

/// Where the engine's events arrive: one ring per event loop, drained in turn. Blocks in a
/// mio poll (woken by the loops' `Waker`) or, in busy-poll mode, spins.
///
/// WeightSync frames travel in a bulk ring that is drained only when the main rings are
/// empty, so small frames overtake a large transfer. Order is kept within each ring, and a
/// connection's Disconnected event still comes after all of its frames.
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
    /// The next event if one is waiting. An inline engine is polled once (without waiting)
    /// when nothing is.
    pub fn try_recv(&mut self) -> Option<NetEvent> {
        if self.shared.is_inline && self.all_empty() {
            self.shared.drive_inline(Some(Duration::ZERO));
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

    /// Moves up to `max` waiting events into `out` without blocking; returns how many. Small
    /// frames arrive from the loops in batches (one per socket read), and this takes them
    /// with no synchronisation per frame.
    pub fn drain_into(&mut self, out: &mut Vec<NetEvent>, max: usize) -> usize {
        let mut taken = 0;
        while taken < max {
            // The batch in hand first, frame after frame, with no other checks.
            if let Some(batch) = &mut self.batch {
                while taken < max {
                    let Some(frame) = batch.pop() else {
                        break;
                    };
                    out.push(NetEvent::Frame(frame));
                    taken += 1;
                }
                if batch.is_empty() {
                    self.batch = None;
                }
                continue;
            }
            let Some(event) = self.try_recv() else {
                break;
            };
            out.push(event);
            taken += 1;
        }
        self.got_events |= taken > 0;
        taken
    }

    /// Waits (at most `timeout`) for at least one event, then moves up to `max` waiting
    /// events into `out`; returns how many (0 on timeout or once the engine has shut down and
    /// every event was taken).
    pub fn recv_batch(&mut self, out: &mut Vec<NetEvent>, max: usize, timeout: Duration) -> usize {
        if max == 0 {
            return 0;
        }
        match self.recv_timeout(timeout) {
            Some(event) => {
                out.push(event);
                1 + self.drain_into(out, max - 1)
            }
            None => 0,
        }
    }

    /// Waits (at most `timeout`; `Duration::ZERO` does not wait, though an inline engine still
    /// gets one turn of its loop) for at least one event, then
    /// hands up to `max` waiting events to `handler`, in the order [`Receiver::recv_timeout`]
    /// gives them; returns how many (0 on timeout or once the engine has shut down and every
    /// event was taken).
    ///
    /// Frames are lent as [`FrameView`]s for the length of the handler's call: after the first
    /// frame of each batch, the small frames that arrive in batches are handed over with no
    /// atomic operation and no event built per frame, the cheapest way to consume a stream.
    /// [`FrameView::to_received`] keeps a frame; it shares its block with the receiver until
    /// the handler returns, so relaying it ([`EngineHandle::relay`]) copies it: a stage that
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
            if now >= deadline && (driven || !self.shared.is_inline) {
                return None;
            }
            if self.shared.is_inline {
                driven = true;
                // Drive the loop here, once the thread driving it (if any) is done.
                self.shared
                    .drive_inline_for_receiver(deadline.saturating_duration_since(now));
                continue;
            }
            if self.shared.config.busy_poll
                || self.last_event.elapsed() < self.shared.config.spin_before_sleep
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
            let cap = if self.shared.is_inline {
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
    pub fn recv(&mut self) -> Option<NetEvent> {
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

impl Iterator for Receiver {
    type Item = NetEvent;

    fn next(&mut self) -> Option<NetEvent> {
        self.recv()
    }
}
