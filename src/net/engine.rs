//! The engine: starting its event loops (threads, or one inline loop) and stopping them.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use mio::{Poll, Waker};

use super::command::{Command, LoopHandle, WAKER};
use super::config::EngineConfig;
use super::context::LoopContext;
use super::event_loop::EventLoop;
use super::handle::EngineHandle;
use super::receiver::Receiver;
use super::shared::EngineShared;

/// The engine's threads. Dropping it shuts the engine down.
pub struct Engine {
    handle: EngineHandle,
    threads: Vec<JoinHandle<()>>,
}

impl Engine {
    /// Starts the event loops. Returns the engine (keep it alive), a handle for sending, and
    /// the receiver of events.
    pub fn start(config: EngineConfig) -> io::Result<(Engine, EngineHandle, Receiver)> {
        let loop_count = config.loop_count();
        let consumer_poll = Poll::new()?;
        let consumer_waker = Waker::new(consumer_poll.registry(), WAKER)?;
        let mut polls = Vec::new();
        let mut loops = Vec::new();
        for _ in 0..loop_count {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            loops.push(Arc::new(LoopHandle {
                commands: ArrayQueue::new(config.limits.command_queue_capacity.max(16)),
                waker,
                sleeping: AtomicBool::new(false),
            }));
            polls.push(poll);
        }
        let inline = config.is_inline();
        let ring_capacity = config.limits.event_ring_capacity.max(16);
        let context = Arc::new(LoopContext::new(config, loops.clone(), consumer_waker));
        let shared = Arc::new(EngineShared::new(Arc::clone(&context), inline));
        let mut rings = Vec::new();
        let mut bulk_rings = Vec::new();
        let mut threads = Vec::new();
        for (index, poll) in polls.into_iter().enumerate() {
            let (producer, consumer) = rtrb::RingBuffer::new(ring_capacity);
            let (bulk_producer, bulk_consumer) = rtrb::RingBuffer::new(ring_capacity);
            rings.push(consumer);
            bulk_rings.push(bulk_consumer);
            let event_loop = EventLoop::new(
                index,
                poll,
                Arc::clone(&loops[index]),
                Arc::clone(&context),
                producer,
                bulk_producer,
            );
            if inline {
                shared.inline.install(event_loop);
                continue;
            }
            threads.push(
                std::thread::Builder::new()
                    .name(format!("nnp-loop-{index}"))
                    .spawn(move || event_loop.run())?,
            );
        }
        let handle = EngineHandle::new(Arc::clone(&shared));
        let receiver = Receiver::new(rings, bulk_rings, consumer_poll, shared);
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
        let shared = self.handle.shared();
        shared.shut_down.store(true, Ordering::SeqCst);
        if shared.is_inline() {
            shared.inline.stop();
            return;
        }
        for l in &shared.loops {
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
