//! What an event loop needs from the engine: the configuration, the buffer pool, the metrics,
//! the registry of connections, the other loops (to hand an accepted connection on) and the
//! receiver's wake-up.
//!
//! The application side ([`super::shared::EngineShared`]) builds on this context; the loops
//! see only this, so that a loop never depends on the handles that drive it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use mio::Waker;

use super::admission::Admission;
use super::command::LoopHandle;
use super::config::EngineConfig;
use super::metrics::EngineMetrics;
use super::peer::{ConnId, ConnShared, PeerStatus};
use super::pool::BufferPool;
use crate::session::SessionConfig;

/// Hashes a [`ConnId`] (a counter the engine assigns, never a peer's input) by one
/// multiplication by 2^64 / phi, which spreads consecutive ids over the table.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// State shared by the loops and every handle.
pub(crate) struct LoopContext {
    pub(crate) config: EngineConfig,
    pub(crate) session_config: Arc<SessionConfig>,
    pub(crate) pool: BufferPool,
    pub(crate) metrics: EngineMetrics,
    /// Every loop's command queue and waker.
    pub(crate) loops: Vec<Arc<LoopHandle>>,
    /// Looked up on every send: connection ids are the engine's own counter, so a
    /// multiplicative hash spreads them without SipHash's cost.
    conns: RwLock<HashMap<ConnId, Arc<ConnShared>, BuildHasherDefault<IdHasher>>>,
    next_id: AtomicU64,
    next_loop: AtomicUsize,
    consumer_waker: Waker,
    /// Set while the receiver sleeps in its poll, so loops wake it only then.
    pub(crate) consumer_sleeping: AtomicBool,
    /// The accepted connections open, against the connection limits.
    pub(crate) admission: Arc<Admission>,
}

impl LoopContext {
    pub(crate) fn new(
        config: EngineConfig,
        loops: Vec<Arc<LoopHandle>>,
        consumer_waker: Waker,
    ) -> Self {
        LoopContext {
            session_config: Arc::new(config.session.clone()),
            pool: BufferPool::new(),
            metrics: EngineMetrics::default(),
            loops,
            conns: RwLock::new(HashMap::default()),
            next_id: AtomicU64::new(1),
            next_loop: AtomicUsize::new(0),
            consumer_waker,
            consumer_sleeping: AtomicBool::new(false),
            admission: Admission::new(
                config.limits.max_connections,
                config.limits.max_connections_per_address,
            ),
            config,
        }
    }

    /// The loop the next connection or listener goes to (round robin).
    pub(crate) fn next_loop_index(&self) -> usize {
        self.next_loop.fetch_add(1, Ordering::Relaxed) % self.loops.len()
    }

    /// Registers a new connection to `addr`, placed on the next loop.
    pub(crate) fn new_conn(&self, addr: SocketAddr) -> Arc<ConnShared> {
        let id = ConnId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let shared = Arc::new(ConnShared::new(
            id,
            addr,
            self.next_loop_index(),
            self.config.limits.send_queue_bytes,
        ));
        self.conns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&shared));
        shared
    }

    /// Drops a closed connection from the registry.
    pub(crate) fn forget(&self, id: ConnId) {
        self.conns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// An open connection.
    pub(crate) fn conn(&self, id: ConnId) -> Option<Arc<ConnShared>> {
        self.conns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// The status of every open connection, in id order.
    pub(crate) fn statuses(&self) -> Vec<PeerStatus> {
        let conns = self.conns.read().unwrap_or_else(|e| e.into_inner());
        let mut peers: Vec<PeerStatus> = conns.values().map(|s| s.status()).collect();
        peers.sort_by_key(|p| p.conn);
        peers
    }

    /// Wakes the receiver if it sleeps.
    pub(crate) fn wake_consumer(&self) {
        fence(Ordering::SeqCst);
        if self.consumer_sleeping.swap(false, Ordering::SeqCst) {
            if let Err(e) = self.consumer_waker.wake() {
                log::error!("could not wake the receiver: {e}");
            }
        }
    }
}
