//! Writing: the inline engine's send paths, the pace of bulk frames, and flushing every
//! connection with something queued.

use super::*;

impl EventLoop {
    /// The inline engine's send path, without polling: the queued commands (they came
    /// first), then `frame` (if any) straight into its connection, then the writes. Returns
    /// false when the loop must stop.
    pub(crate) fn send_now(&mut self, frame: Option<(ConnId, usize, OutFrame)>) -> bool {
        let running = self.drain_commands();
        if let Some((conn, slot, frame)) = frame {
            match self.slot_of(conn, slot) {
                Some(key) if running => {
                    self.conns[key].enqueue(frame);
                    self.dirty.push(key);
                }
                _ => log::debug!("frame for closed connection {conn} dropped"),
            }
        }
        if !running {
            return false;
        }
        let now = Instant::now();
        self.release_paced(now);
        self.flush_dirty(now, WRITE_BUDGET);
        self.wake_consumer();
        true
    }

    /// The inline engine's send path for a message the caller still holds (its `len` bytes
    /// reserved): the queued commands first, then the message written straight from the
    /// caller's memory if its connection has nothing queued ([`Connection::write_direct`]),
    /// else encoded and queued; then the writes. Returns whether the loop runs on, and the
    /// message's fate: `Err` if the session refused it (its bytes are released).
    pub(crate) fn send_message_now(
        &mut self,
        conn: ConnId,
        slot: usize,
        message: &Message<'_>,
        len: usize,
    ) -> (bool, Result<(), ProtocolError>) {
        let running = self.drain_commands();
        let Some(key) = self.slot_of(conn, slot).filter(|_| running) else {
            log::debug!("message for closed connection {conn} dropped");
            return (running, Ok(()));
        };
        let now = Instant::now();
        let pace = Pace {
            now,
            bulk_rate: self.context.config.latency.bulk_rate,
        };
        let pool = &self.context.pool;
        let traffic = &self.context.metrics.traffic;
        let connection = &mut self.conns[key];
        let outcome =
            match connection.write_direct(message, len, pool, pace, traffic, DIRECT_BUDGET) {
                Ok(true) => Ok(()),
                Ok(false) => {
                    OutFrame::encode(pool, message, 0, len).map(|frame| connection.enqueue(frame))
                }
                Err(e) => Err(e),
            };
        if outcome.is_err() {
            connection.shared.release_queued(len);
        }
        if connection.wants_write() {
            self.dirty.push(key);
        }
        self.release_paced(now);
        self.flush_dirty(now, WRITE_BUDGET);
        self.wake_consumer();
        (true, outcome)
    }

    /// Makes the paced connections dirty again once their due time has come.
    pub(super) fn release_paced(&mut self, now: Instant) {
        if self.pace_due.is_some_and(|due| due <= now) {
            self.pace_due = None;
            self.dirty.append(&mut self.paced);
        }
    }

    /// Writes what the dirty connections queued, about `budget` bytes each at most; those
    /// with more to write stay dirty, those held back by their pace wait in `paced`.
    pub(super) fn flush_dirty(&mut self, now: Instant, budget: usize) {
        if self.dirty.is_empty() {
            return;
        }
        let pace = Pace {
            now,
            bulk_rate: self.context.config.latency.bulk_rate,
        };
        let spare = self.spare_keys.pop().unwrap_or_default();
        let mut keys = std::mem::replace(&mut self.dirty, spare);
        keys.sort_unstable();
        keys.dedup();
        let mut finished = Vec::new();
        for &key in &keys {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            match conn.flush(pace, &self.context.metrics.traffic, budget) {
                Ok(Flushed::All) => {
                    if conn.session.is_closed() {
                        let cause = conn.shared.close_cause().unwrap_or(CloseCause::Eof);
                        finished.push((key, cause));
                    }
                }
                Ok(Flushed::Blocked) => {}
                Ok(Flushed::Budget) => self.dirty.push(key),
                Ok(Flushed::Paced(due)) => {
                    self.paced.push(key);
                    self.pace_due = Some(self.pace_due.map_or(due, |d| d.min(due)));
                }
                Err(e) => {
                    let cause = self.stream_failed(key, &e);
                    finished.push((key, cause));
                }
            }
        }
        keys.clear();
        self.spare_keys.push(keys);
        for (key, cause) in finished {
            self.finish(key, cause);
        }
    }
}
