//! The engine: its event-loop threads, the application's handle, and the receiver.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use mio::{Events, Poll, Token, Waker};

use super::event_loop::{Command, EventLoop, LoopHandle, WAKER};
use super::frame::{OutFrame, ReceivedFrame};
use super::metrics::{EngineMetrics, MetricsSnapshot};
use super::peer::{CloseCause, ConnId, ConnShared, PeerStatus};
use super::pool::BufferPool;
use super::stream::{ByteStream, PlainTcp};
use crate::session::{PeerInfo, Role, SessionConfig};
use crate::wire::{encode_frame, frame_len, DisconnectReason, Message, MsgType, ProtocolError};

/// How an engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Event-loop threads (default: one per core).
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
}

impl EngineShared {
    fn new_conn(&self, addr: SocketAddr) -> Arc<ConnShared> {
        let id = ConnId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let loop_index = self.next_loop.fetch_add(1, Ordering::Relaxed) % self.loops.len();
        let shared = Arc::new(ConnShared::new(id, addr, loop_index));
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
            threads.push(
                std::thread::Builder::new()
                    .name(format!("nnp-loop-{index}"))
                    .spawn(move || event_loop.run())?,
            );
        }
        let handle = EngineHandle { shared };
        let receiver = Receiver {
            rings,
            bulk_rings,
            draining_bulk: None,
            last_event: Instant::now(),
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
        let listener = mio::net::TcpListener::bind(addr)?;
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
        log::info!("listening on {local}");
        Ok(local)
    }

    /// Connects to `addr` and completes the handshake; blocks until then.
    pub fn connect(&self, addr: impl ToSocketAddrs) -> Result<ConnId, NetError> {
        self.check_running()?;
        let timeout = self.shared.config.connect_timeout;
        let mut last_error = None;
        for addr in addr.to_socket_addrs()? {
            match std::net::TcpStream::connect_timeout(&addr, timeout) {
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
        if shared.wait_until(timeout, ConnShared::is_established) {
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
        let msg_type = message.msg_type();
        if let Some(cause) = shared.is_closed().then(|| shared.close_cause()).flatten() {
            return Err(NetError::Closed(cause));
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
        let len = frame_len(message)?;
        if len > crate::wire::HEADER_LEN + self.shared.config.max_payload as usize {
            return Err(NetError::Protocol(ProtocolError::FrameTooLarge {
                length: (len - crate::wire::HEADER_LEN) as u32,
                max: self.shared.config.max_payload,
            }));
        }
        let limit = self.shared.config.send_queue_limit;
        let deadline = wait.map(|w| Instant::now() + w);
        while let Err(queued) = shared.try_reserve(len, limit) {
            let Some(deadline) = deadline else {
                return Err(NetError::WouldBlock { queued, limit });
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NetError::Timeout(wait.unwrap_or_default()));
            }
            if !shared.wait_until(left, |s| s.queued() + len <= limit || s.queued() == 0) {
                if let Some(cause) = shared.close_cause() {
                    return Err(NetError::Closed(cause));
                }
            }
        }
        let mut block = self.shared.pool.take(len);
        let mut dst = &mut block.bytes_mut()[..len];
        if let Err(e) = encode_frame(message, 0, &mut dst) {
            shared.release_queued(len);
            return Err(e.into());
        }
        let frame = OutFrame {
            block,
            len,
            msg_type,
        };
        let command = Command::Send {
            conn: shared.id,
            slot: shared.slot().unwrap_or(usize::MAX),
            frame,
        };
        if self.shared.loops[shared.loop_index]
            .submit(command)
            .is_err()
        {
            shared.release_queued(len);
            return Err(NetError::WouldBlock {
                queued: shared.queued(),
                limit,
            });
        }
        Ok(())
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

/// Applies the configured socket options (best effort: a refusal is logged, not fatal).
pub(crate) fn tune_socket(socket: &impl std::os::fd::AsFd, config: &EngineConfig) {
    if let Some(size) = config.socket_send_buffer {
        if let Err(e) = socket2::SockRef::from(socket).set_send_buffer_size(size) {
            log::debug!("SO_SNDBUF {size} refused: {e}");
        }
    }
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

/// Where the engine's events arrive: one ring per event loop, drained in turn. Blocks in a
/// mio poll (woken by the loops' `Waker`) or, in busy-poll mode, spins.
///
/// WeightSync frames travel in a bulk ring that is drained only when the main rings are
/// empty, so small frames overtake a large transfer. Order is kept within each ring, and a
/// connection's Disconnected event still comes after all of its frames.
pub struct Receiver {
    rings: Vec<rtrb::Consumer<NetEvent>>,
    bulk_rings: Vec<rtrb::Consumer<NetEvent>>,
    /// A Disconnected event held back until its loop's bulk ring is drained.
    draining_bulk: Option<(usize, NetEvent)>,
    /// When the last event was taken (for adaptive spinning).
    last_event: Instant,
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
    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<NetEvent> {
        if let Some((index, _)) = &self.draining_bulk {
            if let Ok(event) = self.bulk_rings[*index].pop() {
                return Some(event);
            }
            return self.draining_bulk.take().map(|(_, event)| event);
        }
        let n = self.rings.len();
        for i in 0..n {
            let index = (self.next + i) % n;
            if let Ok(event) = self.rings[index].pop() {
                self.next = index;
                if matches!(event, NetEvent::Disconnected { .. })
                    && !self.bulk_rings[index].is_empty()
                {
                    // Frames pushed before the close come first.
                    self.draining_bulk = Some((index, event));
                    return self.try_recv();
                }
                return Some(event);
            }
        }
        for i in 0..n {
            let index = (self.next + i) % n;
            if let Ok(event) = self.bulk_rings[index].pop() {
                return Some(event);
            }
        }
        None
    }

    fn all_empty(&self) -> bool {
        self.draining_bulk.is_none()
            && self.rings.iter().all(|r| r.is_empty())
            && self.bulk_rings.iter().all(|r| r.is_empty())
    }

    /// The next event, waiting at most `timeout`. `None` on timeout or once the engine has
    /// shut down and every event was taken.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<NetEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.try_recv() {
                self.last_event = Instant::now();
                return Some(event);
            }
            if self.rings.iter().all(|r| r.is_abandoned()) {
                return self.try_recv();
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
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
            let wait = (deadline - now).min(Duration::from_millis(100));
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
