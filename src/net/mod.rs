//! The transport engine: mio event loops, pooled buffers, and the lock-free hand-off.
//!
//! ```text
//!   application threads ────send/Sender──► command queue ──► event loop k ──writev──► socket
//!        (encode into pooled blocks)        (ArrayQueue + Waker)   (mio Poll, sessions)
//!   Receiver ◄── rtrb ring per loop ◄── ReceivedFrame views into pooled read blocks ◄── socket
//! ```
//!
//! This is the only layer that does I/O. Each event loop is one thread with one mio `Poll`;
//! accepted connections are spread over the loops. Frames are checked and parsed in place in
//! the block they were read into and handed on as views; the block goes back to the pool when
//! the last view is dropped. Nothing grows without bound: send queues are capped in bytes
//! (a send waits up to its `Deadline`, or refuses), the rings are bounded, and a loop whose consumer is
//! behind stops reading.
//!
//! An inline engine (`Driver::Inline`) has no loop thread: the calling threads take turns
//! driving its one loop, and a `send` that finds its connection's queue empty writes the frame
//! from the caller's memory (head encoded on the stack; the values of a frame over 1 KiB
//! handed to `writev` in place), queuing only what the socket does not take.

mod admission;
mod coalesce;
mod command;
mod config;
mod connection;
mod context;
mod deadline;
mod engine;
mod error;
mod event;
mod event_loop;
mod exposition;
mod frame;
mod handle;
mod inline;
mod metrics;
mod metrics_endpoint;
mod pacing;
mod peer;
mod pool;
mod rate;
mod receiver;
mod sender;
mod shared;
mod socket;
mod stream;
mod syn_filter;
mod timer;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tls")]
mod tls_config;
#[cfg(feature = "tls")]
mod tls_record;

pub use config::{Driver, EngineConfig, Latency, Limits, RateLimit};
pub use deadline::Deadline;
pub use engine::Engine;
pub use error::NetError;
pub use event::{NetEvent, Polled};
pub use exposition::{prometheus_text, PROMETHEUS_CONTENT_TYPE};
pub use frame::{FrameView, ReceivedFrame};
pub use handle::EngineHandle;
pub use metrics::{new_rtt_histogram, CounterSnapshot, LimitRefusals, MetricsSnapshot};
pub use metrics_endpoint::MetricsEndpoint;
pub use peer::{CloseCause, ConnId, ConnState, PeerStatus};
pub use pool::BufferPool;
pub use receiver::Receiver;
pub use sender::{Sender, SENDER_BATCH_FRAME_MAX};
#[cfg(feature = "tls")]
pub use tls_config::{TlsClient, TlsConfig, TlsError, TlsServer};

/// Frames longer than this go in the bulk lane.
pub(crate) const BULK_THRESHOLD: usize = 64 * 1024;
