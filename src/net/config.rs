//! How an engine runs: threads or inline, limits, latency and pacing.

use std::time::Duration;

use crate::session::SessionConfig;

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
