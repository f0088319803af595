//! Reading: the connections that may have bytes, and the frames parked until the receiver's
//! ring has room.

use super::*;

impl EventLoop {
    /// Reads the connections that may have bytes. `for_consumer` (an application thread
    /// drives the loop, as an inline engine's does): a connection's reading stops once small
    /// frames are in the ring, so that the thread returns to take them rather than reading
    /// on through a bulk stream behind them.
    pub(super) fn service_reads(&mut self, now: Instant, for_consumer: bool) {
        self.retry_paused();
        if self.read_again.is_empty() {
            return;
        }
        let spare = self.spare_keys.pop().unwrap_or_default();
        let mut keys = std::mem::replace(&mut self.read_again, spare);
        let engine = Arc::clone(&self.context);
        let rx_budget = Arc::clone(&self.rx_budget);
        let cx = ReadContext {
            pool: &engine.pool,
            rx_budget: &rx_budget,
            rx_limit: engine.config.limits.rx_in_flight_bytes,
            rx_conn_limit: engine.config.limits.rx_in_flight_per_conn,
            now,
            traffic: &engine.metrics.traffic,
            refusals: &engine.metrics.refusals_received,
            keep_rx: engine.config.latency.busy_poll,
            rate_limit: engine.config.limits.rate_limit.as_ref(),
            limits: &engine.metrics.limits,
        };
        let mut closing = Vec::new();
        for &key in &keys {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.read_closed {
                continue;
            }
            // Each read's frames go to the ring before the next read, so that a fast stream
            // is read several times per turn while the consumer keeps up.
            let mut rounds = 0;
            let mut pushed_small = false;
            let (outcome, is_paused) = loop {
                let outcome = self.conns[key].read(&cx);
                // The session's news first: a handshake completed in this read is
                // established (and announced) before the frames that followed it are handed
                // on.
                self.after_session(key);
                let conn = &mut self.conns[key];
                let mut parked = std::mem::take(&mut conn.parked);
                pushed_small |= self.push_parked(&mut parked);
                let conn = &mut self.conns[key];
                let is_paused = !parked.is_empty();
                conn.parked = parked;
                rounds += 1;
                let budget_left = conn.may_receive(&cx);
                if matches!(outcome, Ok(ReadOutcome::Paused))
                    && !is_paused
                    && budget_left
                    && !conn.read_closed
                {
                    if rounds < READ_ROUNDS && !(for_consumer && pushed_small) {
                        continue;
                    }
                    break (Ok(ReadOutcome::MoreLater), false);
                }
                break (outcome, is_paused);
            };
            match outcome {
                Ok(ReadOutcome::MoreLater) if !is_paused => self.read_again.push(key),
                Ok(ReadOutcome::Paused) | Ok(ReadOutcome::MoreLater) => self.paused.push(key),
                Ok(ReadOutcome::Drained) => {
                    if is_paused {
                        self.paused.push(key);
                    }
                }
                Ok(ReadOutcome::Eof) => {
                    // A half-close: the peer may still read the answers to what it sent.
                    let conn = &mut self.conns[key];
                    conn.read_closed = true;
                    if conn.may_linger() && !self.context.config.linger.is_zero() {
                        conn.half_closed_at = Some(now);
                        self.lingering.push(key);
                    } else {
                        closing.push((key, CloseCause::Eof));
                    }
                }
                Err(e) => closing.push((key, self.stream_failed(key, &e))),
            }
        }
        keys.clear();
        self.spare_keys.push(keys);
        for (key, cause) in closing {
            self.finish(key, cause);
        }
    }

    /// Hands parked frames to the consumer, in order, until a ring is full: WeightSync frames
    /// go to the bulk ring, which the receiver drains only when the main ring is empty, so a
    /// large transfer does not hold up small frames on the receiving side either.
    /// Returns whether any small frame went to the main ring.
    pub(super) fn push_parked(&mut self, parked: &mut VecDeque<Delivery>) -> bool {
        let mut pushed_small = false;
        while let Some(delivery) = parked.pop_front() {
            match delivery {
                Delivery::Event(NetEvent::Frame(frame))
                    if frame.msg_type() == MsgType::WeightSync =>
                {
                    if let Err(rtrb::PushError::Full(NetEvent::Frame(frame))) =
                        self.bulk_out.push(NetEvent::Frame(frame))
                    {
                        parked.push_front(Delivery::Event(NetEvent::Frame(frame)));
                        break;
                    }
                }
                delivery => {
                    if !self.backlog.is_empty() {
                        parked.push_front(delivery);
                        break;
                    }
                    if let Err(rtrb::PushError::Full(delivery)) = self.events_out.push(delivery) {
                        parked.push_front(delivery);
                        break;
                    }
                    pushed_small = true;
                }
            }
            self.pushed = true;
        }
        pushed_small
    }

    pub(super) fn retry_paused(&mut self) {
        while let Some(delivery) = self.backlog.pop_front() {
            if let Err(rtrb::PushError::Full(delivery)) = self.events_out.push(delivery) {
                self.backlog.push_front(delivery);
                break;
            }
            self.pushed = true;
        }
        if self.paused.is_empty() {
            return;
        }
        // Parked frames go first; a connection with nothing parked left reads again.
        for key in std::mem::take(&mut self.paused) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let mut parked = std::mem::take(&mut conn.parked);
            self.push_parked(&mut parked);
            let conn = &mut self.conns[key];
            conn.parked = parked;
            if conn.parked.is_empty() && !conn.read_closed {
                self.read_again.push(key);
            } else if !conn.parked.is_empty() {
                self.paused.push(key);
            }
        }
        self.paused.sort_unstable();
        self.paused.dedup();
    }
}
