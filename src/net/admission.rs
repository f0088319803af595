//! Admission of accepted connections: how many are open, in all and from each address, and
//! the refusal of one too many.
//!
//! A connection over a limit is told why (a Disconnect OVERLOADED, encoded once when the
//! engine starts and written straight from here into the fresh socket, whose send buffer is
//! empty) and closed at once: it costs the node no pool block, no session and no slot in a
//! loop. An admitted connection holds an [`AdmissionTicket`] that gives its place back when
//! the connection is dropped, however it ends.
//!
//! A peer's rate limit outlives its connection: a connection that ends owing (ahead of the
//! rates, or refused within the last second) leaves its limiter here under its address, and
//! the next connection from that address takes it up, so a flooder gains no fresh burst by
//! reconnecting. An address whose connection was closed for keeping on over its rate is
//! turned away at once until that second has passed, before it costs a session.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::metrics::LimitCounters;
use super::rate::RateLimiter;
use crate::wire::{encode_frame, DisconnectReason, Message};

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` were open.
    Total,
    /// `max_connections_per_address` from its address were open.
    PerAddress,
    /// A connection from its address was closed for keeping on over its rate limit within
    /// the last second.
    Rate,
}

/// Owed rate limiters kept for addresses with no connection open, at the most: past it the
/// ones owing nothing any more are dropped, and a new one is kept only if that made room.
const MAX_OWED: usize = 16 * 1024;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Open connections by address, and whether the address's refusal was logged since it
    /// last had room.
    by_address: HashMap<IpAddr, (usize, bool)>,
    /// Whether a refusal for the total was logged since the total last had room.
    total_logged: bool,
    /// The rate limiters of connections that ended owing, by address, for the next
    /// connection from it, and whether turning a connection away for it was logged.
    owed: HashMap<IpAddr, (Box<RateLimiter>, bool)>,
}

/// The open accepted connections, against the limits.
#[derive(Debug)]
pub(crate) struct Admission {
    max_total: usize,
    max_per_address: usize,
    counts: Mutex<Counts>,
    /// The Disconnect frames written to a refused connection, for each limit.
    refuse_total: Vec<u8>,
    refuse_per_address: Vec<u8>,
    refuse_rate: Vec<u8>,
}

/// A place taken by an admitted connection, given back when dropped: on its way to its loop
/// with the connection. Once the loop holds the connection it keeps only a flag
/// ([`AdmissionTicket::settle`]) and gives the place back itself when it removes the
/// connection ([`Admission::release`]): a few bytes less in every connection.
#[derive(Debug)]
pub(crate) struct AdmissionTicket {
    /// Taken by [`AdmissionTicket::into_place`].
    admission: Option<Arc<Admission>>,
    ip: IpAddr,
    /// The rate limiter the address's last connection left owing.
    carried: Option<Box<RateLimiter>>,
}

impl Drop for AdmissionTicket {
    fn drop(&mut self) {
        if let Some(admission) = &self.admission {
            admission.release(self.ip, self.carried.take());
        }
    }
}

impl AdmissionTicket {
    /// Hands the place to the loop that now holds the connection, which gives it back with
    /// [`Admission::release`] when it removes the connection; returns the rate limiter the
    /// address still owed on, for the connection to go on with.
    pub(crate) fn settle(mut self) -> Option<Box<RateLimiter>> {
        self.admission = None;
        self.carried.take()
    }
}

fn disconnect_frame(text: &str) -> Vec<u8> {
    let message = Message::Disconnect {
        reason: DisconnectReason::OVERLOADED,
        message: Cow::Borrowed(text),
    };
    let mut frame = Vec::new();
    encode_frame(&message, 0, &mut frame).expect("a short Disconnect encodes");
    frame
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Admission {
            max_total,
            max_per_address,
            counts: Mutex::new(Counts::default()),
            refuse_total: disconnect_frame(&format!(
                "too many connections: this node takes {max_total} at once"
            )),
            refuse_per_address: disconnect_frame(&format!(
                "too many connections from your address: this node takes {max_per_address} \
                 from one address at once"
            )),
            refuse_rate: disconnect_frame(
                "a connection from your address was closed for keeping on over this node's \
                 rate limit: wait a second before connecting again",
            ),
        })
    }

    /// Takes a place for a connection from `addr`, or says which limit is reached. A
    /// refusal is logged once per address (and once for the total) until it has room again.
    pub(crate) fn admit(
        self: &Arc<Self>,
        addr: SocketAddr,
        counters: &LimitCounters,
    ) -> Result<AdmissionTicket, Refusal> {
        let ip = addr.ip();
        let mut guard = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let counts = &mut *guard;
        if counts.total >= self.max_total {
            LimitCounters::count(&counters.max_connections);
            if !std::mem::replace(&mut counts.total_logged, true) {
                log::warn!(
                    "connection from {addr} refused: {} connections open, the most this node takes \
                     (further refusals are counted, not logged, until one closes)",
                    self.max_total
                );
            }
            return Err(Refusal::Total);
        }
        let mut carried = None;
        if let Some((limiter, logged)) = counts.owed.remove(&ip) {
            if limiter.closed_for_rate(Instant::now()) {
                LimitCounters::count(&counters.rate_penalty);
                if !logged {
                    log::warn!(
                        "connection from {addr} turned away: a connection from {ip} was closed \
                         for keeping on over the rate limit within the last second (further \
                         ones are counted, not logged)"
                    );
                }
                counts.owed.insert(ip, (limiter, true));
                return Err(Refusal::Rate);
            }
            carried = Some(limiter);
        }
        let entry = counts.by_address.entry(ip).or_insert((0, false));
        if entry.0 >= self.max_per_address {
            if let Some(limiter) = carried {
                counts.owed.insert(ip, (limiter, false));
            }
            LimitCounters::count(&counters.max_connections_per_address);
            if !std::mem::replace(&mut entry.1, true) {
                log::warn!(
                    "connection from {addr} refused: {} connections from {ip} open, the most this \
                     node takes from one address (further refusals from it are counted, not \
                     logged, until one closes)",
                    self.max_per_address
                );
            }
            return Err(Refusal::PerAddress);
        }
        entry.0 += 1;
        counts.total += 1;
        Ok(AdmissionTicket {
            admission: Some(Arc::clone(self)),
            ip,
            carried,
        })
    }

    /// Gives back the place an admitted connection from `ip` held, and keeps its rate
    /// limiter for the address's next connection if it ended owing.
    pub(crate) fn release(&self, ip: IpAddr, limiter: Option<Box<RateLimiter>>) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(limiter) = limiter {
            let now = Instant::now();
            if limiter.owes(now) {
                if counts.owed.len() >= MAX_OWED {
                    counts.owed.retain(|_, (l, _)| l.owes(now));
                }
                if counts.owed.len() < MAX_OWED {
                    counts.owed.insert(ip, (limiter, false));
                }
            }
        }
        counts.total = counts.total.saturating_sub(1);
        counts.total_logged = false;
        if let Some(entry) = counts.by_address.get_mut(&ip) {
            entry.0 = entry.0.saturating_sub(1);
            entry.1 = false;
            if entry.0 == 0 {
                counts.by_address.remove(&ip);
            }
        }
    }

    /// Tells a refused connection why, as far as its fresh socket takes it without waiting,
    /// and closes it. Bytes it already sent are read first (into the stack), so that the
    /// close is a FIN after the Disconnect rather than a reset that could discard it.
    pub(crate) fn turn_away(&self, mut socket: mio::net::TcpStream, refusal: Refusal) {
        let frame = match refusal {
            Refusal::Total => &self.refuse_total,
            Refusal::PerAddress => &self.refuse_per_address,
            Refusal::Rate => &self.refuse_rate,
        };
        let _ = socket.write(frame);
        let _ = socket.shutdown(std::net::Shutdown::Write);
        let mut sink = [0u8; 512];
        for _ in 0..4 {
            match socket.read(&mut sink) {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_in_all_and_per_address_and_given_back_on_drop() {
        let counters = LimitCounters::default();
        let admission = Admission::new(3, 2);
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1000".parse().unwrap();
        let a1 = admission.admit(a, &counters).unwrap();
        let a2 = admission.admit(a, &counters).unwrap();
        assert_eq!(
            admission.admit(a, &counters).unwrap_err(),
            Refusal::PerAddress
        );
        let b1 = admission.admit(b, &counters).unwrap();
        assert_eq!(admission.admit(b, &counters).unwrap_err(), Refusal::Total);
        drop(a1);
        let _a3 = admission.admit(a, &counters).unwrap();
        drop((a2, b1));
        let counts = admission.counts.lock().unwrap();
        assert_eq!(counts.total, 1);
        assert_eq!(counts.by_address.len(), 1);
        drop(counts);
        let refused = counters.snapshot();
        assert_eq!(refused.max_connections, 1);
        assert_eq!(refused.max_connections_per_address, 1);
    }

    fn flooded(close_after: u32) -> Box<RateLimiter> {
        let limit = crate::net::config::RateLimit {
            frames_per_second: Some(10),
            bytes_per_second: None,
            burst: std::time::Duration::from_millis(100),
            close_after_refusals: close_after,
        };
        let now = Instant::now();
        let mut limiter = Box::new(RateLimiter::new(&limit, now));
        for _ in 0..3 {
            limiter.admit(now, 1, 100);
        }
        limiter
    }

    #[test]
    fn a_limiter_that_ends_owing_goes_to_the_address_next_connection() {
        let counters = LimitCounters::default();
        let admission = Admission::new(10, 10);
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1000".parse().unwrap();
        let limiter = flooded(1000);
        assert!(limiter.owes(Instant::now()));
        assert!(admission.admit(a, &counters).unwrap().settle().is_none());
        admission.release(a.ip(), Some(limiter));
        // Another address starts afresh; the same address takes the limiter up, once.
        assert!(admission.admit(b, &counters).unwrap().settle().is_none());
        let carried = admission.admit(a, &counters).unwrap().settle();
        assert!(carried.is_some_and(|l| l.owes(Instant::now())));
        assert!(admission.admit(a, &counters).unwrap().settle().is_none());
        // A limiter that owes nothing is not kept.
        let limit = crate::net::config::RateLimit::default();
        admission.release(
            a.ip(),
            Some(Box::new(RateLimiter::new(&limit, Instant::now()))),
        );
        assert!(admission.counts.lock().unwrap().owed.is_empty());
    }

    #[test]
    fn an_address_closed_for_its_rate_is_turned_away_and_a_dropped_ticket_keeps_the_debt() {
        let counters = LimitCounters::default();
        let admission = Admission::new(10, 10);
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let mut limiter = flooded(2);
        while limiter.admit(Instant::now(), 1, 100) != crate::net::rate::Verdict::Close {}
        drop(admission.admit(a, &counters).unwrap());
        admission.release(a.ip(), Some(limiter));
        assert_eq!(admission.admit(a, &counters).unwrap_err(), Refusal::Rate);
        assert_eq!(admission.admit(a, &counters).unwrap_err(), Refusal::Rate);
        assert_eq!(counters.snapshot().rate_penalty, 2);
        assert_eq!(admission.counts.lock().unwrap().total, 0);
        // A connection admitted with a carried limiter that never reaches its loop gives the
        // limiter back with its place.
        let owing = flooded(1000);
        let mut counts = admission.counts.lock().unwrap();
        counts.owed.insert(a.ip(), (owing, false));
        drop(counts);
        drop(admission.admit(a, &counters).unwrap());
        assert!(admission.counts.lock().unwrap().owed.contains_key(&a.ip()));
    }
}
