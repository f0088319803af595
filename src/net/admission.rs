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
//! turned away at once until that second has passed, before it costs a session; meanwhile
//! the listening sockets drop its connections before they are even accepted
//! ([`super::syn_filter`]), and what comes through (before the filter is on, past its
//! [`super::syn_filter::MAX_FILTERED`] addresses, or where the kernel refuses filters) is
//! turned away here.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::metrics::LimitCounters;
use super::rate::RateLimiter;
use super::syn_filter::Penalties;
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
    /// The addresses turned away for their rate that the listeners' filter names.
    penalties: Penalties,
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
    /// Changes whenever the set of [`Penalties`] does: a loop whose listeners carry the
    /// filter of another generation builds it again.
    filter_generation: AtomicU64,
    /// Whether the kernel's refusal of a filter was logged.
    filter_refusal_logged: AtomicBool,
    /// Set when the kernel refuses socket filters: the penalty is then applied after
    /// `accept` only.
    filter_off: AtomicBool,
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
            filter_generation: AtomicU64::new(0),
            filter_refusal_logged: AtomicBool::new(false),
            filter_off: AtomicBool::new(false),
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
    /// limiter for the address's next connection if it ended owing. True if the connection
    /// was closed for its rate and its address now enters the listeners' filter for the
    /// rest of that second (logged here, once).
    pub(crate) fn release(&self, ip: IpAddr, limiter: Option<Box<RateLimiter>>) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut filtered = false;
        if let Some(limiter) = limiter {
            let now = Instant::now();
            if limiter.owes(now) {
                if counts.owed.len() >= MAX_OWED {
                    counts.owed.retain(|_, (l, _)| l.owes(now));
                }
                if counts.owed.len() < MAX_OWED {
                    let until = limiter
                        .penalty_until(now)
                        .filter(|_| !self.filter_off.load(Ordering::Relaxed));
                    if let Some(until) = until {
                        filtered = counts.penalties.enter(ip, until);
                        if filtered {
                            self.filter_generation.fetch_add(1, Ordering::Release);
                            log::warn!(
                                "{ip} turned away for {} ms: a connection from it was closed \
                                 for keeping on over the rate limit (its connections meanwhile \
                                 are dropped before they are accepted, or turned away after, \
                                 and not logged)",
                                until.saturating_duration_since(now).as_millis()
                            );
                        }
                    }
                    counts.owed.insert(ip, (limiter, filtered));
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
        filtered
    }

    /// Ends the penalties due by `now` in the listeners' filter.
    pub(crate) fn expire_penalties(&self, now: Instant) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.penalties.expire(now) {
            self.filter_generation.fetch_add(1, Ordering::Release);
        }
    }

    /// The generation of the set of addresses the listeners' filter names.
    pub(crate) fn filter_generation(&self) -> u64 {
        self.filter_generation.load(Ordering::Acquire)
    }

    /// The addresses the listeners' filter names, and their generation.
    pub(crate) fn filtered(&self) -> (u64, Vec<IpAddr>) {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        (self.filter_generation(), counts.penalties.addresses())
    }

    /// Notes that the kernel refused the listeners' filter (logged once); the addresses it
    /// would have named are turned away after `accept`. A program too large for the
    /// socket's option memory (ENOMEM, `net.core.optmem_max`) leaves the next, smaller set
    /// a chance; any other refusal (a kernel or a sandbox without socket filters) turns the
    /// filter off for good.
    pub(crate) fn filter_refused(&self, local: Option<SocketAddr>, e: &std::io::Error) {
        if !self.filter_refusal_logged.swap(true, Ordering::Relaxed) {
            let local = local.map_or_else(|| "a listener".to_string(), |a| a.to_string());
            log::warn!(
                "the socket filter on {local} was refused ({e}): addresses turned away for \
                 their rate are turned away after accepting their connections instead (not \
                 logged again)"
            );
        }
        const ENOMEM: i32 = 12;
        if e.raw_os_error() != Some(ENOMEM) && !self.filter_off.swap(true, Ordering::Relaxed) {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            counts.penalties = Penalties::default();
            self.filter_generation.fetch_add(1, Ordering::Release);
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
        assert!(admission.release(a.ip(), Some(limiter)));
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

    fn closed_for_rate() -> Box<RateLimiter> {
        let mut limiter = flooded(2);
        while limiter.admit(Instant::now(), 1, 100) != crate::net::rate::Verdict::Close {}
        limiter
    }

    #[test]
    fn an_address_closed_for_its_rate_enters_the_filter_once_until_its_second_ends() {
        let counters = LimitCounters::default();
        let admission = Admission::new(10, 10);
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1000".parse().unwrap();
        assert_eq!(admission.filtered(), (0, vec![]));
        // Owing, but not closed for its rate: not filtered.
        admission.admit(b, &counters).unwrap().settle();
        assert!(!admission.release(b.ip(), Some(flooded(1000))));
        admission.admit(a, &counters).unwrap().settle();
        admission.admit(a, &counters).unwrap().settle();
        assert!(admission.release(a.ip(), Some(closed_for_rate())));
        let (generation, addresses) = admission.filtered();
        assert_eq!(addresses, [a.ip()]);
        assert_eq!(admission.filter_generation(), generation);
        // Its other connection closed likewise changes nothing.
        assert!(!admission.release(a.ip(), Some(closed_for_rate())));
        assert_eq!(admission.filter_generation(), generation);
        admission.expire_penalties(Instant::now());
        assert_eq!(admission.filtered(), (generation, vec![a.ip()]));
        admission.expire_penalties(Instant::now() + std::time::Duration::from_secs(1));
        assert_eq!(admission.filtered(), (generation + 1, vec![]));
    }

    #[test]
    fn a_kernel_that_refuses_filters_turns_them_off_unless_the_program_was_too_large() {
        let counters = LimitCounters::default();
        let admission = Admission::new(10, 10);
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        admission.admit(a, &counters).unwrap().settle();
        assert!(admission.release(a.ip(), Some(closed_for_rate())));
        let (generation, _) = admission.filtered();
        admission.filter_refused(None, &std::io::Error::from_raw_os_error(12));
        assert_eq!(admission.filtered(), (generation, vec![a.ip()]));
        admission.filter_refused(None, &std::io::Error::from_raw_os_error(1));
        assert_eq!(admission.filtered(), (generation + 1, vec![]));
        // The address is still turned away, after accept.
        assert_eq!(admission.admit(a, &counters).unwrap_err(), Refusal::Rate);
        let b: SocketAddr = "10.0.0.2:1000".parse().unwrap();
        admission.admit(b, &counters).unwrap().settle();
        assert!(!admission.release(b.ip(), Some(closed_for_rate())));
        assert!(admission.filtered().1.is_empty());
    }
}
