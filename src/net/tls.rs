//! TLS 1.3 in the byte-stream seam: rustls between a non-blocking socket and the frames.
//!
//! The connection above reads and writes plaintext as it would on plain TCP; this stream
//! moves TLS records between rustls and the socket. Three things differ from a socket and
//! are handled here, so that the event loop needs no TLS knowledge:
//! - a read may consume socket bytes and yield no plaintext (a handshake message, a key
//!   update): it goes on reading until plaintext comes or the socket is empty, so a short or
//!   `WouldBlock` read still means "the socket is drained" as it does on TCP;
//! - reading may leave records to send (the handshake's next flight, an alert): they are
//!   written at once, and what the socket does not take waits for
//!   [`ByteStream::flush_pending`], which the loop calls whenever the socket is writable;
//! - a write is encrypted at once (at most [`WRITE_LIMIT`] bytes of it) and its records
//!   written; a write that finds earlier records still unsent sends those first and takes
//!   nothing new until they are out, so the stream holds at most one write's records.
//!   Plaintext written before the handshake completes is held (up to the same limit) and
//!   encrypted by the read that completes it.
//!
//! rustls's unbuffered API works on our buffers: socket bytes are read into an inbox of
//! ours and decrypted where they lie; rustls hands each record's plaintext over in a buffer
//! of its own (rustls 0.23 still copies it out of the inbox), from which it is copied into
//! the caller's buffer (what does not fit is kept for the next read). Records are
//! encrypted into an outbox of ours that goes to the socket in one system call. The
//! buffered API also copied every received byte into a deframing buffer of its own, 4 KiB
//! per call. The inbox starts at 64 KiB and grows to 256 KiB while reads fill it (a bulk
//! transfer: a quarter of the system calls); every buffer is freed when the connection
//! goes idle.

use std::io::{self, IoSlice, Read, Write};

use mio::net::TcpStream;
use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    UnbufferedStatus, WriteTraffic,
};

use super::stream::{ByteStream, TlsFailure};

/// Socket bytes read per system call, at first ...
const INBOX: usize = 64 * 1024;
/// ... and once a read has filled the inbox.
const BULK_INBOX: usize = 256 * 1024;
/// Plaintext a write takes (it is encrypted into records at once).
const WRITE_LIMIT: usize = 256 * 1024;
/// The plaintext of a full TLS record: writes are cut into records of this size, small
/// pieces gathered into one.
const RECORD: usize = 16 * 1024;
/// The most a record adds to its plaintext (header, content type, AEAD tag).
const RECORD_OVERHEAD: usize = 5 + 1 + 16;
/// Process steps `close` takes at most to reach the state that can send a close_notify.
const CLOSE_STEPS: usize = 64;

/// The rustls session of either side.
pub(crate) enum Session {
    /// We connected.
    Client(UnbufferedClientConnection),
    /// We accepted.
    Server(UnbufferedServerConnection),
}

/// A TLS session over a registered TCP socket.
pub(crate) struct TlsStream {
    session: Session,
    /// Socket bytes rustls has not discarded yet: `inbox[start..end]` (it may keep parts of
    /// a handshake message there between calls). Freed when the connection goes idle.
    inbox: Vec<u8>,
    start: usize,
    end: usize,
    io: Io,
}

/// Everything but the session and its input, so that a state borrowing those can use it.
struct Io {
    socket: TcpStream,
    /// Records for the socket: `out[out_start..out_end]`.
    out: Vec<u8>,
    out_start: usize,
    out_end: usize,
    /// Decrypted plaintext not yet read: `plain[plain_start..]`.
    plain: Vec<u8>,
    plain_start: usize,
    /// Plaintext written before the handshake completed.
    early: Vec<u8>,
    /// Small pieces of a write gathered into one record.
    staging: Vec<u8>,
    /// The last socket read was short: the socket is empty until its next readiness edge.
    drained: bool,
    /// The socket reported its end.
    eof: bool,
    /// The peer's close_notify came: its stream has ended.
    peer_closed: bool,
}

/// Where the plaintext of a process step goes, and what it may send.
struct Sink<'a, 'b> {
    /// Plaintext read lands here, `buf[..filled]`; what does not fit goes to `Io::plain`.
    buf: &'a mut [u8],
    filled: usize,
    /// Plaintext to encrypt once the session may send it; `taken` says how much was.
    bufs: &'a [IoSlice<'b>],
    taken: Option<usize>,
    /// Encrypt a close_notify once the session may send it; `closed` says it was.
    close: bool,
    closed: bool,
    /// Write the records a step produces to the socket at once.
    send: bool,
}

impl<'a> Sink<'a, '_> {
    fn new(buf: &'a mut [u8]) -> Self {
        Sink {
            buf,
            filled: 0,
            bufs: &[],
            taken: None,
            close: false,
            closed: false,
            send: true,
        }
    }
}

/// What a process step came to.
enum Step {
    /// Something was done (plaintext read, records encoded): step again.
    Progress,
    /// The records encoded were written, as far as the socket took them: step again.
    Sent,
    /// rustls needs more socket bytes; `writable`: the handshake is complete.
    NeedInput { writable: bool },
    /// The peer's close_notify: no more plaintext will come.
    PeerClosed,
    /// Both sides sent their close_notify.
    Closed,
}

/// Why a process step failed.
enum Failure {
    /// rustls refused the peer's bytes (or ours): the session is over, an alert is due.
    Tls(rustls::Error),
    /// The socket failed, or an encryption rustls refused (already the error to return).
    Io(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

/// Runs `$body` on the outcome of one `process_tls_records` over the inbox, whichever side
/// the session is.
macro_rules! process {
    ($self:ident, $status:ident => $body:expr) => {{
        let input = &mut $self.inbox[$self.start..$self.end];
        match &mut $self.session {
            Session::Client(c) => {
                let $status = c.process_tls_records(input);
                $body
            }
            Session::Server(s) => {
                let $status = s.process_tls_records(input);
                $body
            }
        }
    }};
}

impl TlsStream {
    /// Wraps a connected (or connecting) socket; the handshake runs as the connection reads
    /// and writes (a client's first flight is sent at the first write or flush).
    pub(crate) fn new(socket: TcpStream, session: Session) -> io::Result<TlsStream> {
        let mut stream = TlsStream {
            session,
            inbox: Vec::new(),
            start: 0,
            end: 0,
            io: Io {
                socket,
                out: Vec::new(),
                out_start: 0,
                out_end: 0,
                plain: Vec::new(),
                plain_start: 0,
                early: Vec::new(),
                staging: Vec::new(),
                drained: false,
                eof: false,
                peer_closed: false,
            },
        };
        // A client's first flight, into the outbox (the socket may still be connecting).
        loop {
            let mut sink = Sink::new(&mut []);
            sink.send = false;
            match stream.step(&mut sink)? {
                Step::Progress => {}
                _ => return Ok(stream),
            }
        }
    }

    /// One `process_tls_records` over the inbox, its state handled; a failure is returned
    /// as the error that carries it, after the alert for the peer is sent if it can be.
    fn step(&mut self, sink: &mut Sink<'_, '_>) -> io::Result<Step> {
        let io = &mut self.io;
        let (discard, step) = process!(self, status => io.on_status(status, sink));
        self.start += discard;
        match step {
            Ok(step) => {
                if matches!(step, Step::PeerClosed | Step::Closed) {
                    self.io.peer_closed = true;
                }
                Ok(step)
            }
            Err(Failure::Tls(e)) => {
                self.send_alert();
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    TlsFailure(e.to_string()),
                ))
            }
            Err(Failure::Io(e)) => Err(e),
        }
    }

    /// Sends the alert rustls queued on a failure, if the socket takes it now.
    fn send_alert(&mut self) {
        for _ in 0..4 {
            let io = &mut self.io;
            let (discard, more) = process!(self, status => io.encode_only(status));
            self.start += discard;
            if !more {
                break;
            }
        }
        if let Err(e) = self.io.flush() {
            log::trace!("TLS alert not sent: {e}");
        }
    }

    /// Reads socket bytes into the inbox after what rustls holds. `Ok(false)`: nothing to
    /// read now.
    fn fill_inbox(&mut self) -> io::Result<bool> {
        if self.io.drained || self.io.eof {
            return Ok(false);
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            // A cut record (or parts of a handshake message) to the front.
            self.inbox.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.inbox.len() < INBOX {
            self.inbox.resize(INBOX, 0);
        } else if self.end == self.inbox.len() {
            // Bytes rustls holds fill the inbox: only a handshake message near its size
            // limit does that (records are at most 16 KiB).
            if self.inbox.len() >= BULK_INBOX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    TlsFailure("TLS input larger than the inbox without a record".into()),
                ));
            }
            self.inbox.resize(BULK_INBOX, 0);
        }
        let room = self.inbox.len() - self.end;
        loop {
            match self.io.socket.read(&mut self.inbox[self.end..]) {
                Ok(0) => {
                    self.io.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    self.io.drained = n < room;
                    if n == room && self.inbox.len() < BULK_INBOX {
                        self.inbox.resize(BULK_INBOX, 0);
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.io.drained = true;
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Io {
    /// Handles one state of the session; returns the bytes to discard from the input.
    fn on_status<D>(
        &mut self,
        status: UnbufferedStatus<'_, '_, D>,
        sink: &mut Sink<'_, '_>,
    ) -> (usize, Result<Step, Failure>) {
        let UnbufferedStatus { discard, state } = status;
        let step = match state {
            Err(e) => Err(Failure::Tls(e)),
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                let mut step = Ok(Step::Progress);
                while let Some(record) = traffic.next_record() {
                    match record {
                        Ok(record) => self.deliver(record.payload, sink),
                        Err(e) => {
                            step = Err(Failure::Tls(e));
                            break;
                        }
                    }
                }
                step
            }
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                self.encode(&mut encode);
                Ok(Step::Progress)
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                // The records are in our outbox, which owns them from here.
                transmit.done();
                if sink.send {
                    self.flush().map(|_| Step::Sent).map_err(Failure::Io)
                } else {
                    Ok(Step::Progress)
                }
            }
            Ok(ConnectionState::BlockedHandshake) => Ok(Step::NeedInput { writable: false }),
            Ok(ConnectionState::WriteTraffic(mut traffic)) => self
                .on_write_traffic(&mut traffic, sink)
                .map(|()| Step::NeedInput { writable: true })
                .map_err(Failure::Io),
            Ok(ConnectionState::PeerClosed) => Ok(Step::PeerClosed),
            Ok(ConnectionState::Closed) => Ok(Step::Closed),
            // The server configurations accept no early data, so rustls offers none.
            Ok(state) => Err(Failure::Tls(rustls::Error::General(format!(
                "unexpected TLS state {state:?}"
            )))),
        };
        (discard, step)
    }

    /// Encodes the handshake (or alert) records rustls has ready into the outbox.
    fn encode<D>(&mut self, encode: &mut EncodeTlsData<'_, D>) {
        loop {
            match encode.encode(&mut self.out[self.out_end..]) {
                Ok(n) => self.out_end += n,
                Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                    self.reserve_out(required_size);
                    continue;
                }
                Err(EncodeError::AlreadyEncoded) => {}
            }
            break;
        }
    }

    /// After a failure: encodes the alert rustls queued into the outbox. `false`: nothing
    /// more to encode.
    fn encode_only<D>(&mut self, status: UnbufferedStatus<'_, '_, D>) -> (usize, bool) {
        let more = match status.state {
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                self.encode(&mut encode);
                true
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                false
            }
            _ => false,
        };
        (status.discard, more)
    }

    /// The session may send application data: encrypts what was written before the
    /// handshake completed, then the sink's plaintext and close_notify, and sends them.
    fn on_write_traffic<D>(
        &mut self,
        traffic: &mut WriteTraffic<'_, D>,
        sink: &mut Sink<'_, '_>,
    ) -> io::Result<()> {
        let mut sealed = false;
        if !self.early.is_empty() {
            let early = std::mem::take(&mut self.early);
            self.encrypt(traffic, &early)?;
            sealed = true;
        }
        if !sink.bufs.is_empty() {
            sink.taken = Some(self.encrypt_vectored(traffic, sink.bufs)?);
            sealed = true;
        }
        if sink.close && !sink.closed {
            loop {
                match traffic.queue_close_notify(&mut self.out[self.out_end..]) {
                    Ok(n) => self.out_end += n,
                    Err(EncryptError::InsufficientSize(InsufficientSizeError {
                        required_size,
                    })) => {
                        self.reserve_out(required_size);
                        continue;
                    }
                    Err(e) => return Err(failure(e)),
                }
                break;
            }
            sink.closed = true;
            sealed = true;
        }
        if sealed && sink.send {
            self.flush()?;
        }
        Ok(())
    }

    /// Encrypts up to [`WRITE_LIMIT`] bytes of `bufs` in records of [`RECORD`] bytes
    /// (small pieces gathered into one); returns the bytes taken.
    fn encrypt_vectored<D>(
        &mut self,
        traffic: &mut WriteTraffic<'_, D>,
        bufs: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(WRITE_LIMIT);
        self.reserve_out(total + (total / RECORD + 2) * RECORD_OVERHEAD);
        let mut taken = 0;
        let mut staging = std::mem::take(&mut self.staging);
        staging.clear();
        for buf in bufs {
            let mut rest = &buf[..buf.len().min(WRITE_LIMIT - taken)];
            taken += rest.len();
            while !rest.is_empty() {
                if staging.is_empty() && rest.len() >= RECORD {
                    let whole = rest.len() / RECORD * RECORD;
                    self.encrypt(traffic, &rest[..whole])?;
                    rest = &rest[whole..];
                } else {
                    let k = (RECORD - staging.len()).min(rest.len());
                    staging.extend_from_slice(&rest[..k]);
                    rest = &rest[k..];
                    if staging.len() == RECORD {
                        self.encrypt(traffic, &staging)?;
                        staging.clear();
                    }
                }
            }
            if taken == WRITE_LIMIT {
                break;
            }
        }
        if !staging.is_empty() {
            self.encrypt(traffic, &staging)?;
            staging.clear();
        }
        self.staging = staging;
        Ok(taken)
    }

    /// Encrypts `plaintext` into the outbox.
    fn encrypt<D>(
        &mut self,
        traffic: &mut WriteTraffic<'_, D>,
        plaintext: &[u8],
    ) -> io::Result<()> {
        self.reserve_out(plaintext.len() + (plaintext.len() / RECORD + 1) * RECORD_OVERHEAD);
        loop {
            match traffic.encrypt(plaintext, &mut self.out[self.out_end..]) {
                Ok(n) => {
                    self.out_end += n;
                    return Ok(());
                }
                // Records rustls queued itself (a key update) go first.
                Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                    self.reserve_out(required_size)
                }
                Err(e) => return Err(failure(e)),
            }
        }
    }

    /// Makes room for `more` bytes at the end of the outbox.
    fn reserve_out(&mut self, more: usize) {
        if self.out_start == self.out_end {
            self.out_start = 0;
            self.out_end = 0;
        }
        if self.out.len() - self.out_end < more {
            let len = (self.out_end + more).max(self.out.len() * 2);
            self.out.resize(len, 0);
        }
    }

    /// Copies a record's plaintext into the sink's buffer, the rest into `plain`.
    fn deliver(&mut self, payload: &[u8], sink: &mut Sink<'_, '_>) {
        let k = (sink.buf.len() - sink.filled).min(payload.len());
        sink.buf[sink.filled..sink.filled + k].copy_from_slice(&payload[..k]);
        sink.filled += k;
        self.plain.extend_from_slice(&payload[k..]);
    }

    /// Copies held plaintext into `buf`; returns the bytes copied.
    fn take_plain(&mut self, buf: &mut [u8]) -> usize {
        let held = &self.plain[self.plain_start..];
        let k = held.len().min(buf.len());
        buf[..k].copy_from_slice(&held[..k]);
        self.plain_start += k;
        if self.plain_start == self.plain.len() {
            self.plain.clear();
            self.plain_start = 0;
        }
        k
    }

    /// Writes the outbox to the socket; `Ok(true)` when it is empty.
    fn flush(&mut self) -> io::Result<bool> {
        while self.out_start < self.out_end {
            match self.socket.write(&self.out[self.out_start..self.out_end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_start += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out_start = 0;
        self.out_end = 0;
        Ok(true)
    }
}

/// An encryption rustls refused (its keys exhausted), as the error that carries it.
fn failure(e: EncryptError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, TlsFailure(e.to_string()))
}

impl ByteStream for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = self.io.take_plain(buf);
        if filled == buf.len() || self.io.peer_closed {
            return Ok(filled);
        }
        // Each call may read the socket again, as a read on TCP would.
        self.io.drained = false;
        loop {
            let mut sink = Sink::new(&mut buf[filled..]);
            let step = self.step(&mut sink)?;
            filled += sink.filled;
            match step {
                Step::Progress | Step::Sent => {}
                // The peer's close_notify: the clean end of its stream.
                Step::PeerClosed | Step::Closed => return Ok(filled),
                Step::NeedInput { .. } => {
                    if self.fill_inbox()? {
                        continue;
                    }
                    // The socket ended without a close_notify: an end of stream all the
                    // same (the frames above carry their own checks, a cut frame is seen
                    // there).
                    return if filled > 0 || self.io.eof {
                        Ok(filled)
                    } else {
                        Err(io::ErrorKind::WouldBlock.into())
                    };
                }
            }
            if filled == buf.len() {
                return Ok(filled);
            }
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.flush_pending()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        loop {
            let mut sink = Sink::new(&mut []);
            sink.bufs = bufs;
            let step = self.step(&mut sink)?;
            if let Some(taken) = sink.taken {
                return Ok(taken);
            }
            match step {
                Step::Progress | Step::PeerClosed => {}
                Step::Sent => {
                    if self.io.out_start < self.io.out_end {
                        // Records of the session's own (a handshake message) still unsent.
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                }
                Step::NeedInput { .. } => {
                    // Before the handshake completes plaintext is held up to the limit;
                    // the rest waits for the read that completes the handshake.
                    let early = &mut self.io.early;
                    let mut taken = 0;
                    for buf in bufs {
                        let k = buf.len().min(WRITE_LIMIT - early.len());
                        early.extend_from_slice(&buf[..k]);
                        taken += k;
                    }
                    return if taken == 0 {
                        Err(io::ErrorKind::WouldBlock.into())
                    } else {
                        Ok(taken)
                    };
                }
                Step::Closed => return Err(io::ErrorKind::BrokenPipe.into()),
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn flush_pending(&mut self) -> io::Result<bool> {
        self.io.flush()
    }

    fn release_idle_memory(&mut self) {
        if self.start == self.end {
            self.inbox = Vec::new();
            self.start = 0;
            self.end = 0;
        }
        if self.io.out_start == self.io.out_end {
            self.io.out = Vec::new();
            self.io.out_start = 0;
            self.io.out_end = 0;
        }
        if self.io.plain_start == self.io.plain.len() {
            self.io.plain = Vec::new();
            self.io.plain_start = 0;
        }
        if self.io.early.is_empty() {
            self.io.early = Vec::new();
        }
        self.io.staging = Vec::new();
    }

    fn close(&mut self) {
        for _ in 0..CLOSE_STEPS {
            // Plaintext still arriving is of no use now: it lands in `plain` and is dropped.
            let mut sink = Sink::new(&mut []);
            sink.close = true;
            match self.step(&mut sink) {
                Ok(Step::Progress | Step::Sent | Step::PeerClosed) if !sink.closed => {}
                Ok(Step::NeedInput { writable: false }) => {
                    log::trace!("close_notify not sent: the handshake is not complete");
                    break;
                }
                Ok(_) => break,
                Err(e) => {
                    log::trace!("close_notify not sent: {e}");
                    break;
                }
            }
        }
        self.io.plain = Vec::new();
        self.io.plain_start = 0;
        if let Err(e) = self.io.flush() {
            log::trace!("close_notify not sent: {e}");
        }
    }

    fn socket(&mut self) -> &mut TcpStream {
        &mut self.io.socket
    }
}
