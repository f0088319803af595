//! How an engine runs: who drives its loops, what it bounds, and what it trades for latency.
//!
//! The defaults suit a node serving many peers on a multi-core machine: one loop thread per
//! core, bounded queues, sleeping rather than spinning. Each knob's documentation says when to
//! change it; docs/TRANSPORT.md walks through the trade-offs with measured figures.

use std::time::Duration;

use crate::session::SessionConfig;

/// How an engine runs: build one from [`EngineConfig::default`] and the setters below, e.g.
/// `EngineConfig::default().inline().busy_poll(true)` for the lowest round trip between two
/// processes.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Who runs the event loops.
    pub driver: Driver,
    /// What this node says in its handshakes, the session timers, and the frame sizes it
    /// accepts ([`SessionConfig::max_payload`] also caps what it sends).
    pub session: SessionConfig,
    /// Bounds on queues and memory.
    pub limits: Limits,
    /// Latency against CPU time and bulk throughput.
    pub latency: Latency,
    /// How long `connect` waits for the TCP connection and the handshake.
    pub connect_timeout: Duration,
    /// How long a connection whose peer closed its sending side (a TCP half-close) stays
    /// open, at least, for the answers to what the peer sent before it: every frame received
    /// before the end of stream is delivered, and what the application sends back within
    /// this time (and whatever is still queued then) reaches the peer before a Disconnect.
    /// Zero closes at the end of stream.
    pub linger: Duration,
    /// TLS for accepted and outgoing connections; none by default (plain TCP).
    #[cfg(feature = "tls")]
    pub tls: super::TlsConfig,
}

/// Who runs an engine's event loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// This many loop threads of the engine's own (at least one); connections are spread
    /// over them. The default is one per core: a node serving many peers. A round trip
    /// crosses four threads (two per side).
    Threads(usize),
    /// No thread of its own: one event loop driven by the application's calls (receiving
    /// polls the sockets; a send writes straight to the socket when it can, from the
    /// caller's memory). The lowest round trip and the fastest small-frame stream for one
    /// or a few connections, but the engine makes progress only while some thread calls
    /// into it: a sender that is about to stop calling waits in
    /// [`super::EngineHandle::wait_sent`] first.
    Inline,
}

/// Bounds on an engine's queues and memory: nothing grows without them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes a connection's send queue may hold before a send waits (or, with
    /// [`super::Deadline::Now`], refuses). Larger absorbs longer bursts to a slow peer; smaller
    /// bounds the memory and the queueing delay per connection.
    pub send_queue_bytes: usize,
    /// Received bytes an event loop may have handed to the application and not yet had back
    /// before it stops reading (backpressure to the peers). Raise it if the application
    /// holds many large frames at once.
    pub rx_in_flight_bytes: usize,
    /// The share of `rx_in_flight_bytes` one connection may hold: a connection whose
    /// received frames the application has not yet released reach this stops being read,
    /// while the loop's other connections are read on. One peer that sends faster than the
    /// application takes its frames cannot take the others' share of the budget (nor put
    /// more than this many bytes of its frames ahead of theirs in the receiver).
    pub rx_in_flight_per_conn: usize,
    /// Events the ring from each loop to the receiver holds.
    pub event_ring_capacity: usize,
    /// Commands each loop's queue holds; a full queue refuses with
    /// [`super::NetError::CommandQueueFull`].
    pub command_queue_capacity: usize,
    /// Accepted connections open at once; one more is told Disconnect OVERLOADED and closed
    /// at once, before it costs a buffer. Connections this node opens do not count. Keep it
    /// below the process's file-descriptor limit (`ulimit -n`).
    pub max_connections: usize,
    /// Accepted connections open at once from one IP address (the same refusal): one host
    /// cannot take every slot. Raise it for many peers behind one address (a NAT, a proxy).
    pub max_connections_per_address: usize,
    /// How long a connection may stay backed up (its peer not reading: the socket is full
    /// and either nothing was written since the last check or the send queue is full, so
    /// sends to it would wait) before it is closed with Disconnect OVERLOADED, its queued
    /// frames dropped. `None` lets sends wait (or refuse) for as long as the peer lags.
    /// Shorter frees a stuck peer's memory and unblocks its senders sooner; longer forgives
    /// longer pauses (a peer's garbage-collection stall, a slow link).
    pub slow_consumer_timeout: Option<Duration>,
    /// What one peer may send per second once its handshake is done; `None` (the default):
    /// no limit. See [`RateLimit`].
    pub rate_limit: Option<RateLimit>,
}

/// A per-peer limit on the frames and bytes it sends, with a burst allowance (the generic
/// cell rate algorithm, as the `governor` crate applies it). A data frame over the limit is
/// refused (an Error APPLICATION naming it, docs/PROTOCOL.md "Limits"; the session stays
/// open); a peer with more than `close_after_refusals` frames refused within one second is
/// closed with Disconnect OVERLOADED. Control frames count towards the limit, and towards
/// the refusals when over it, but are not refused one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Frames per second (`None`: not limited).
    pub frames_per_second: Option<u64>,
    /// Bytes per second, headers included (`None`: not limited). A frame larger than the
    /// burst's bytes passes when the peer owes nothing, then holds its next frames back.
    pub bytes_per_second: Option<u64>,
    /// How far ahead of the rates a peer may get: a peer quiet for this long may send this
    /// long's worth at once.
    pub burst: Duration,
    /// Refused frames within one second after which the peer is closed.
    pub close_after_refusals: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            frames_per_second: None,
            bytes_per_second: None,
            burst: Duration::from_secs(1),
            close_after_refusals: 1000,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            send_queue_bytes: 8 * 1024 * 1024,
            rx_in_flight_bytes: 64 * 1024 * 1024,
            rx_in_flight_per_conn: 8 * 1024 * 1024,
            event_ring_capacity: 16 * 1024,
            command_queue_capacity: 64 * 1024,
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            slow_consumer_timeout: Some(Duration::from_secs(10)),
            rate_limit: None,
        }
    }
}

/// What an engine trades for latency.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Spin instead of sleeping, in the loops and in the receiver: the lowest latency, at one
    /// core per spinning thread. Only where cores are to spare.
    pub busy_poll: bool,
    /// How long a loop or the receiver keeps polling (yielding the core between polls) after
    /// its last event before it sleeps: a reply that comes within this window costs no
    /// wake-up. Zero sleeps at once (least CPU).
    pub spin_before_sleep: Duration,
    /// The kernel send buffer per socket (SO_SNDBUF); `None` leaves the kernel's autotuning.
    /// A small buffer bounds how long a bulk transfer already handed to the kernel delays a
    /// small frame queued after it, at a cost in bulk throughput.
    pub socket_send_buffer: Option<usize>,
    /// The kernel receive buffer per socket (SO_RCVBUF, set before the connection opens, so
    /// the window is sized by it); `None` leaves the kernel's autotuning. With
    /// `socket_send_buffer` it bounds the bulk bytes queued between a sender and a reader,
    /// which is what a small frame behind a bulk transfer waits for.
    pub socket_recv_buffer: Option<usize>,
    /// Paces bulk frames (WeightSync, and any frame over 64 KiB) on each connection at this
    /// many bytes per second; small frames are never paced and overtake waiting bulk. `None`
    /// sends bulk as fast as the socket takes it. TCP delivers in order, so a small frame
    /// waits behind every bulk byte already in the kernel: pacing bounds that wait when small
    /// frames share a connection with weight syncs, at the cost of the bulk rate.
    pub bulk_rate: Option<u64>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            driver: Driver::Threads(std::thread::available_parallelism().map_or(1, |n| n.get())),
            session: SessionConfig::default(),
            limits: Limits::default(),
            latency: Latency {
                spin_before_sleep: Duration::from_micros(50),
                ..Latency::default()
            },
            connect_timeout: Duration::from_secs(10),
            linger: Duration::from_secs(2),
            #[cfg(feature = "tls")]
            tls: super::TlsConfig::default(),
        }
    }
}

impl EngineConfig {
    /// This many loop threads ([`Driver::Threads`]).
    pub fn threads(mut self, loops: usize) -> Self {
        self.driver = Driver::Threads(loops.max(1));
        self
    }

    /// No loop thread ([`Driver::Inline`]).
    pub fn inline(mut self) -> Self {
        self.driver = Driver::Inline;
        self
    }

    /// The session settings (name, capabilities, timers, frame sizes).
    pub fn session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }

    /// This node's name, said in its handshakes.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.session.name = name.into();
        self
    }

    /// The largest payload sent or accepted ([`SessionConfig::max_payload`]).
    pub fn max_payload(mut self, bytes: u32) -> Self {
        self.session.max_payload = bytes;
        self
    }

    /// The queue and memory bounds.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Spin instead of sleeping ([`Latency::busy_poll`]).
    pub fn busy_poll(mut self, on: bool) -> Self {
        self.latency.busy_poll = on;
        self
    }

    /// The kernel's socket buffers ([`Latency::socket_send_buffer`],
    /// [`Latency::socket_recv_buffer`]).
    pub fn socket_buffers(mut self, send: Option<usize>, recv: Option<usize>) -> Self {
        self.latency.socket_send_buffer = send;
        self.latency.socket_recv_buffer = recv;
        self
    }

    /// Paces bulk frames at `bytes_per_second` ([`Latency::bulk_rate`]).
    pub fn bulk_rate(mut self, bytes_per_second: Option<u64>) -> Self {
        self.latency.bulk_rate = bytes_per_second;
        self
    }

    /// How long `connect` waits.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// TLS 1.3 for accepted connections, outgoing ones, or both ([`super::TlsConfig`]).
    /// Encryption costs CPU time on both sides; docs/TRANSPORT.md gives the measured cost.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: super::TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// Whether the engine runs inline.
    pub(crate) fn is_inline(&self) -> bool {
        self.driver == Driver::Inline
    }

    /// How many event loops the engine runs.
    pub(crate) fn loop_count(&self) -> usize {
        match self.driver {
            Driver::Threads(n) => n.max(1),
            Driver::Inline => 1,
        }
    }
}
