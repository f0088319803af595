//! Admission of accepted connections: how many are open, in all and from each address, and
//! the refusal of one too many.
//!
//! A connection over a limit is told why (a Disconnect OVERLOADED, encoded once when the
//! engine starts and written straight from here into the fresh socket, whose send buffer is
//! empty) and closed at once: it costs the node no pool block, no session and no slot in a
//! loop. An admitted connection holds an [`AdmissionTicket`] that gives its place back when
//! the connection is dropped, however it ends.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use super::metrics::LimitCounters;
use crate::wire::{encode_frame, DisconnectReason, Message};

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` were open.
    Total,
    /// `max_connections_per_address` from its address were open.
    PerAddress,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Open connections by address, and whether the address's refusal was logged since it
    /// last had room.
    by_address: HashMap<IpAddr, (usize, bool)>,
    /// Whether a refusal for the total was logged since the total last had room.
    total_logged: bool,
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
}

impl Drop for AdmissionTicket {
    fn drop(&mut self) {
        if let Some(admission) = &self.admission {
            admission.release(self.ip);
        }
    }
}

impl AdmissionTicket {
    /// Hands the place to the loop that now holds the connection, which gives it back with
    /// [`Admission::release`] when it removes the connection.
    pub(crate) fn settle(mut self) {
        self.admission = None;
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
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
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
        let entry = counts.by_address.entry(ip).or_insert((0, false));
        if entry.0 >= self.max_per_address {
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
        })
    }

    /// Gives back the place an admitted connection from `ip` held.
    pub(crate) fn release(&self, ip: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
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
}
