//! Taking connections in: accepting from listeners (or turning away those over the
//! connection limits), placing each on its loop, and adopting a socket with a new session.
//! The listeners' socket filter, which drops the connections of addresses under the rate
//! penalty before they are accepted, is kept up to date here.

use super::*;
use crate::net::admission::AdmissionTicket;
use crate::net::stream::Stream;
use crate::net::syn_filter;

impl EventLoop {
    pub(super) fn adopt(
        &mut self,
        mut stream: Stream,
        role: Role,
        shared: Arc<ConnShared>,
        ticket: Option<AdmissionTicket>,
    ) {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            stream.socket(),
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("could not register connection {}: {e}", shared.id);
            shared.set_closed(CloseCause::Io(e.kind()));
            return;
        }
        let session = Session::new(
            role,
            Arc::clone(&self.context.session_config),
            Instant::now(),
        );
        log::debug!(
            "loop {}: connection {} from {} adopted",
            self.index,
            shared.id,
            shared.addr
        );
        shared.set_slot(key);
        let mut connection = Connection::new(stream, session, shared);
        if let Some(ticket) = ticket {
            connection.rate = ticket.settle();
            connection.admitted = true;
        }
        entry.insert(connection);
        self.context
            .metrics
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        self.after_session(key);
        // Bytes may have arrived before registration.
        self.read_again.push(key);
    }

    /// Accepts what the listeners hold for [`ACCEPT_BUDGET`] at the most: a listener left
    /// with connections is taken up again on the next turn (its readiness edge is spent).
    pub(super) fn accept_all(&mut self) {
        self.accept_more = false;
        self.refresh_filter();
        let started = Instant::now();
        for i in 0..self.listeners.len() {
            loop {
                if started.elapsed() >= ACCEPT_BUDGET {
                    self.accept_more = true;
                    return;
                }
                match self.listeners[i].accept() {
                    Ok((socket, addr)) => {
                        let counters = &self.context.metrics.limits;
                        let ticket = match self.context.admission.admit(addr, counters) {
                            Ok(ticket) => ticket,
                            Err(refusal) => {
                                self.context.admission.turn_away(socket, refusal);
                                continue;
                            }
                        };
                        if self.filter_carried {
                            // The socket inherited its listener's filter when the kernel
                            // created it. That filter names other addresses than its peer
                            // (the handshake's last ACK passed it) but would run on every
                            // segment the connection receives, and in the moment between
                            // that ACK's check and the socket's creation the listener's
                            // filter may have changed to one that names the peer, whose
                            // penalty may end before this accept. One setsockopt per
                            // connection, on a node that has filtered, rules both out.
                            if let Err(e) = syn_filter::detach_inherited(&socket) {
                                log::debug!("filter inherited by {addr}'s socket kept: {e}");
                            }
                        }
                        tune_socket(&socket, &self.context.config);
                        if let Err(e) = socket.set_nodelay(true) {
                            log::warn!("TCP_NODELAY failed for {addr}: {e}");
                        }
                        match stream::accepted(socket, &self.context.config) {
                            Ok(stream) => self.dispatch_accepted(stream, addr, ticket),
                            Err(e) => {
                                log::warn!("connection from {addr} dropped: {e}");
                                self.context.metrics.count_stream_failure(&e);
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // Out of file descriptors and the like: try again on the next event.
                        log::warn!("accept failed: {e}");
                        self.context.metrics.count_io_error();
                        break;
                    }
                }
            }
        }
    }

    /// Gives the listeners the filter for the addresses now under the rate penalty, if
    /// that set changed since they were given one; without addresses, none.
    pub(super) fn refresh_filter(&mut self) {
        if !self.filter_stale() {
            return;
        }
        let admission = &self.context.admission;
        let (generation, addresses) = admission.filtered();
        self.filter_applied = Some(generation);
        let program = syn_filter::program(&addresses);
        for listener in &self.listeners {
            if let Err(e) = syn_filter::apply(listener, program.as_deref()) {
                // A listener left with a former program would drop addresses no longer
                // under the penalty.
                let _ = syn_filter::apply(listener, None);
                admission.filter_refused(listener.local_addr().ok(), &e);
            } else if program.is_some() {
                self.filter_carried = true;
            }
        }
        log::debug!(
            "loop {}: listeners filter {} addresses",
            self.index,
            addresses.len()
        );
    }

    /// Whether the listeners' filter is not the one for the addresses now under the
    /// penalty.
    pub(super) fn filter_stale(&self) -> bool {
        !self.listeners.is_empty()
            && self.filter_applied != Some(self.context.admission.filter_generation())
    }

    /// Places an accepted connection on its loop: this one, or another through its queue.
    pub(super) fn dispatch_accepted(
        &mut self,
        stream: Stream,
        addr: SocketAddr,
        ticket: AdmissionTicket,
    ) {
        let shared = self.context.new_conn(addr);
        if shared.loop_index == self.index {
            self.adopt(stream, Role::Acceptor, shared, Some(ticket));
            return;
        }
        let command = Command::Adopt {
            stream,
            role: Role::Acceptor,
            shared: Arc::clone(&shared),
            ticket: Some(ticket),
        };
        if self.context.loops[shared.loop_index]
            .submit(command)
            .is_err()
        {
            log::warn!(
                "event loop {} is saturated: connection from {addr} dropped",
                shared.loop_index
            );
            shared.set_closed(CloseCause::Shutdown);
            self.context.forget(shared.id);
        }
    }
}
