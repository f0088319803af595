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
//! rustls's unbuffered API runs the handshake on our buffers: socket bytes are read into an
//! inbox of ours and handed to rustls where they lie, and its records are encoded into an
//! outbox of ours that goes to the socket in one system call. Once the handshake is
//! complete, rustls hands its traffic keys over and [`super::tls_record`] seals and opens
//! the records itself, in place: a byte written is copied once, into the outbox, where it
//! is encrypted; a byte read is decrypted in the inbox and copied once, into the caller's
//! buffer (what does not fit stays there for the next read). The inbox starts at 64 KiB
//! and grows to 256 KiB while reads fill it (a bulk transfer: a quarter of the system
//! calls); every buffer is freed when the connection goes idle.

use std::io::{self, IoSlice, Read, Write};

use mio::net::TcpStream;
use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    UnbufferedStatus, WriteTraffic,
};

use super::stream::{ByteStream, TlsFailure};
use super::tls_record::{self, Alert, Fatal, Kernel, Opened, Records};

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
    /// rustls, until the handshake completes ...
    session: Option<Session>,
    /// ... then our record layer with its keys.
    records: Option<Box<Records>>,
    /// Why the session failed, for every call after the one that saw it.
    failed: Option<String>,
    /// Socket bytes not consumed yet: `inbox[start..end]` (rustls may keep parts of a
    /// handshake message there between calls; our record layer, a record in part). Freed
    /// when the connection goes idle.
    inbox: Vec<u8>,
    start: usize,
    end: usize,
    /// Plaintext of a record opened in the inbox, not yet read: `inbox[opened]`, before
    /// `start`.
    opened: std::ops::Range<usize>,
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
/// `$none` once the record layer is ours.
macro_rules! process {
    ($self:ident, $status:ident => $body:expr, else $none:expr) => {{
        let input = &mut $self.inbox[$self.start..$self.end];
        match &mut $self.session {
            Some(Session::Client(c)) => {
                let $status = c.process_tls_records(input);
                $body
            }
            Some(Session::Server(s)) => {
                let $status = s.process_tls_records(input);
                $body
            }
            None => $none,
        }
    }};
}

impl TlsStream {
    /// Wraps a connected (or connecting) socket; the handshake runs as the connection reads
    /// and writes (a client's first flight is sent at the first write or flush).
    pub(crate) fn new(socket: TcpStream, session: Session) -> io::Result<TlsStream> {
        let mut stream = TlsStream {
            session: Some(session),
            records: None,
            failed: None,
            inbox: Vec::new(),
            start: 0,
            end: 0,
            opened: 0..0,
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
        let (discard, step) = process!(
            self,
            status => io.on_status(status, sink),
            else (0, Ok(Step::NeedInput { writable: true }))
        );
        self.start += discard;
        match step {
            Ok(step) => {
                if matches!(step, Step::PeerClosed | Step::Closed) {
                    self.io.peer_closed = true;
                }
                if matches!(step, Step::NeedInput { writable: true }) {
                    self.take_over()?;
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
            let (discard, more) = process!(self, status => io.encode_only(status), else (0, false));
            self.start += discard;
            if !more {
                break;
            }
        }
        if let Err(e) = self.io.flush() {
            log::trace!("TLS alert not sent: {e}");
        }
    }

    /// Once the handshake is complete, takes its keys from rustls for our record layer
    /// (rustls has then processed every whole record in the inbox).
    fn take_over(&mut self) -> io::Result<()> {
        let handshaking = match &self.session {
            Some(Session::Client(c)) => c.is_handshaking(),
            Some(Session::Server(s)) => s.is_handshaking(),
            None => return Ok(()),
        };
        if handshaking {
            return Ok(());
        }
        let taken = match self.session.take() {
            Some(Session::Client(c)) => c
                .dangerous_into_kernel_connection()
                .map(|(secrets, k)| (secrets, Kernel::Client(k))),
            Some(Session::Server(s)) => s
                .dangerous_into_kernel_connection()
                .map(|(secrets, k)| (secrets, Kernel::Server(k))),
            None => return Ok(()),
        };
        match taken.and_then(|(secrets, kernel)| Records::new(kernel, secrets)) {
            Ok(records) => {
                self.records = Some(Box::new(records));
                Ok(())
            }
            Err(e) => {
                let reason = format!("TLS keys not taken over from rustls: {e}");
                self.failed = Some(reason.clone());
                Err(tls_error(reason))
            }
        }
    }

    /// Copies plaintext opened in the inbox into `buf`; returns the bytes copied.
    fn take_opened(&mut self, buf: &mut [u8]) -> usize {
        let k = self.opened.len().min(buf.len());
        if k == 0 {
            return 0;
        }
        let from = self.opened.start;
        buf[..k].copy_from_slice(&self.inbox[from..from + k]);
        self.opened.start += k;
        k
    }

    /// Reads through our record layer: opens the whole records in the inbox in place,
    /// reading the socket for more, until `buf` is full or the socket is empty.
    fn read_records(&mut self, buf: &mut [u8], mut filled: usize) -> io::Result<usize> {
        filled += self.take_opened(&mut buf[filled..]);
        loop {
            while filled < buf.len() && !self.io.peer_closed {
                let Some(records) = self.records.as_mut() else {
                    return Ok(filled);
                };
                let input = &mut self.inbox[self.start..self.end];
                let len = match Records::record_len(input) {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    Err(fatal) => return Err(self.fail(fatal)),
                };
                match records.open(&mut input[..len]) {
                    Ok(Opened::Data(range)) => {
                        self.opened = self.start + range.start..self.start + range.end;
                        self.start += len;
                        filled += self.take_opened(&mut buf[filled..]);
                    }
                    Ok(Opened::Handshake) => {
                        self.start += len;
                        if records.owes_key_update() {
                            // Sent with the next write if the socket does not take it now.
                            self.seal_key_update()?;
                            self.io.flush()?;
                        }
                    }
                    Ok(Opened::PeerClosed) => {
                        self.start += len;
                        self.io.peer_closed = true;
                    }
                    Err(fatal) => return Err(self.fail(fatal)),
                }
            }
            if filled == buf.len() || self.io.peer_closed {
                return Ok(filled);
            }
            if !self.fill_inbox()? {
                return if filled > 0 || self.io.eof {
                    Ok(filled)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
        }
    }

    /// Seals up to [`WRITE_LIMIT`] bytes of `bufs` into records of at most 16 KiB in the
    /// outbox (small pieces gathered into one) and sends them; returns the bytes taken.
    fn write_records(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(WRITE_LIMIT);
        if total == 0 {
            return Ok(0);
        }
        if self.records.as_ref().is_some_and(|r| r.owes_key_update()) {
            self.seal_key_update()?;
        }
        let Some(records) = self.records.as_mut() else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        let io = &mut self.io;
        io.reserve_out(total + total.div_ceil(RECORD) * tls_record::OVERHEAD);
        let mut pieces = bufs.iter().map(|b| &b[..]);
        let mut piece: &[u8] = &[];
        let mut left = total;
        while left > 0 {
            let n = left.min(RECORD);
            let record = &mut io.out[io.out_end..io.out_end + n + tls_record::OVERHEAD];
            let mut at = tls_record::HEADER;
            while at < tls_record::HEADER + n {
                if piece.is_empty() {
                    piece = pieces.next().unwrap_or_default();
                    continue;
                }
                let k = piece.len().min(tls_record::HEADER + n - at);
                record[at..at + k].copy_from_slice(&piece[..k]);
                piece = &piece[k..];
                at += k;
            }
            if let Err(fatal) = records.seal(record, tls_record::DATA) {
                return Err(self.fail(fatal));
            }
            io.out_end += n + tls_record::OVERHEAD;
            left -= n;
        }
        self.io.flush()?;
        Ok(total)
    }

    /// Seals a key update into the outbox and moves to the next key.
    fn seal_key_update(&mut self) -> io::Result<()> {
        let Some(records) = self.records.as_mut() else {
            return Ok(());
        };
        let io = &mut self.io;
        io.reserve_out(tls_record::KEY_UPDATE_RECORD);
        let record = &mut io.out[io.out_end..io.out_end + tls_record::KEY_UPDATE_RECORD];
        match records.seal_key_update(record) {
            Ok(()) => {
                io.out_end += tls_record::KEY_UPDATE_RECORD;
                Ok(())
            }
            Err(fatal) => Err(self.fail(fatal)),
        }
    }

    /// Seals `alert` into the outbox.
    fn seal_alert(&mut self, alert: Alert) -> Result<(), Fatal> {
        let Some(records) = self.records.as_mut() else {
            return Ok(());
        };
        let io = &mut self.io;
        io.reserve_out(tls_record::ALERT_RECORD);
        let record = &mut io.out[io.out_end..io.out_end + tls_record::ALERT_RECORD];
        records.seal_alert(record, alert)?;
        io.out_end += tls_record::ALERT_RECORD;
        Ok(())
    }

    /// Ends the session on `fatal`: its alert sent if the socket takes it now, the keys
    /// dropped; returns the error that carries it (every later call returns it again).
    fn fail(&mut self, fatal: Fatal) -> io::Error {
        if let Some(alert) = fatal.alert {
            match self.seal_alert(alert) {
                Ok(()) => {
                    if let Err(e) = self.io.flush() {
                        log::trace!("TLS alert not sent: {e}");
                    }
                }
                Err(e) => log::trace!("TLS alert not sealed: {}", e.reason),
            }
        }
        self.records = None;
        self.opened = 0..0;
        self.failed = Some(fatal.reason.clone());
        tls_error(fatal.reason)
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
            debug_assert!(self.opened.is_empty(), "opened plaintext moved");
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
    tls_error(e.to_string())
}

/// A failure of the session, as the error that carries it.
fn tls_error(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, TlsFailure(reason))
}

impl ByteStream for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(reason) = &self.failed {
            return Err(tls_error(reason.clone()));
        }
        let mut filled = self.io.take_plain(buf);
        if filled == buf.len() || self.io.peer_closed {
            return Ok(filled);
        }
        // Each call may read the socket again, as a read on TCP would.
        self.io.drained = false;
        if self.records.is_some() {
            return self.read_records(buf, filled);
        }
        loop {
            let mut sink = Sink::new(&mut buf[filled..]);
            let step = self.step(&mut sink)?;
            filled += sink.filled;
            match step {
                Step::Progress | Step::Sent => {}
                // The peer's close_notify: the clean end of its stream.
                Step::PeerClosed | Step::Closed => return Ok(filled),
                Step::NeedInput { .. } => {
                    if self.records.is_some() {
                        return self.read_records(buf, filled);
                    }
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
        if let Some(reason) = &self.failed {
            return Err(tls_error(reason.clone()));
        }
        if self.records.is_some() {
            return self.write_records(bufs);
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
        if let Some(records) = &mut self.records {
            records.release_idle_memory();
        }
        if self.start == self.end && self.opened.is_empty() {
            self.opened = 0..0;
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
        if self.records.is_some() {
            if let Err(e) = self.seal_alert(Alert::CloseNotify) {
                log::trace!("close_notify not sealed: {}", e.reason);
            }
            self.records = None;
            self.failed = Some("the TLS session was closed".into());
            if let Err(e) = self.io.flush() {
                log::trace!("close_notify not sent: {e}");
            }
            return;
        }
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

#[cfg(test)]
mod tests {
    //! Our record layer against rustls' own (a peer that never takes its keys over), and
    //! against records sealed by hand from the peer's extracted keys.

    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
    use rustls::crypto::ring::cipher_suite;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ConnectionTrafficSecrets, RootCertStore, ServerConfig};

    use super::*;

    fn configs(suite: rustls::SupportedCipherSuite) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = certified.cert.der().clone();
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![suite];
        let provider = Arc::new(provider);
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        server.enable_secret_extraction = true;
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.enable_secret_extraction = true;
        (Arc::new(server), Arc::new(client))
    }

    /// Our client stream connected to a listener whose accepted socket `peer` drives.
    fn connect<T: Send + 'static>(
        client: Arc<ClientConfig>,
        peer: impl FnOnce(std::net::TcpStream) -> T + Send + 'static,
    ) -> (TlsStream, thread::JoinHandle<T>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            peer(socket)
        });
        let socket = TcpStream::from_std(std::net::TcpStream::connect(addr).unwrap());
        let name = ServerName::try_from("localhost").unwrap();
        let session = UnbufferedClientConnection::new(client, name).unwrap();
        let mut stream = TlsStream::new(socket, Session::Client(session)).unwrap();
        // The first flight, as the event loop sends it once the socket is writable.
        retry(|| match stream.flush_pending()? {
            true => Ok(()),
            false => Err(io::ErrorKind::WouldBlock.into()),
        })
        .unwrap();
        (stream, peer)
    }

    /// Runs `op` until it makes progress, waiting out `WouldBlock` (a test has no poll).
    fn retry<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match op() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no progress in 10 s");
                    thread::sleep(Duration::from_micros(200));
                }
                other => return other,
            }
        }
    }

    fn write_all(stream: &mut TlsStream, pieces: &[&[u8]]) {
        let mut bufs: Vec<&[u8]> = pieces.to_vec();
        while bufs.iter().any(|b| !b.is_empty()) {
            let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
            let mut n = retry(|| stream.write_vectored(&slices)).unwrap();
            for b in &mut bufs {
                let k = n.min(b.len());
                *b = &b[k..];
                n -= k;
            }
        }
        retry(|| match stream.flush_pending()? {
            true => Ok(()),
            false => Err(io::ErrorKind::WouldBlock.into()),
        })
        .unwrap();
    }

    fn read_exact(stream: &mut TlsStream, len: usize) -> Vec<u8> {
        let mut got = vec![0; len];
        let mut filled = 0;
        while filled < len {
            let n = retry(|| stream.read(&mut got[filled..])).unwrap();
            assert!(n > 0, "the stream ended after {filled} of {len} bytes");
            filled += n;
        }
        got
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn records_interoperate_with_rustls_across_key_updates_both_ways() {
        for suite in [
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            let (server, client) = configs(suite);
            let (go, wait) = std::sync::mpsc::channel::<()>();
            // rustls' buffered server, its own record layer: echoes what it is sent, first
            // once as it is, then after a key update of its own.
            let (mut ours, peer) = connect(client, move |socket| {
                let session = rustls::ServerConnection::new(server).unwrap();
                let mut tls = rustls::StreamOwned::new(session, socket);
                let mut first = vec![0; 100_004];
                tls.read_exact(&mut first).unwrap();
                tls.write_all(&first).unwrap();
                wait.recv().unwrap();
                tls.conn.refresh_traffic_keys().unwrap();
                tls.write_all(&first[..50_000]).unwrap();
                let mut rest = vec![0; 3 * 40_000];
                tls.read_exact(&mut rest).unwrap();
                tls.write_all(&rest).unwrap();
                tls.flush().unwrap();
                (first, rest)
            });
            let first = pattern(100_004, 1);
            // Pieces of every size, gathered into records.
            write_all(
                &mut ours,
                &[
                    &first[..3],
                    &first[3..70_003],
                    &first[70_003..70_004],
                    &first[70_004..],
                ],
            );
            assert_eq!(read_exact(&mut ours, first.len()), first, "{suite:?}");
            assert!(ours.records.is_some(), "the record layer was taken over");
            // An idle connection gives its buffers back and reads on.
            ours.release_idle_memory();
            assert_eq!(ours.inbox.capacity(), 0, "the inbox was given back");
            go.send(()).unwrap();
            // The peer's key update: read under its next key.
            assert_eq!(read_exact(&mut ours, 50_000), first[..50_000], "{suite:?}");
            let (_, rx) = ours.records.as_ref().unwrap().sequence_numbers();
            assert!(rx < 10, "the receive key was updated ({rx} records on it)");
            // Our key updates: one due before each write (of three records).
            let rest = pattern(3 * 40_000, 7);
            for part in rest.chunks(40_000) {
                ours.records.as_mut().unwrap().update_key_after(0);
                write_all(&mut ours, &[part]);
            }
            let (tx, _) = ours.records.as_ref().unwrap().sequence_numbers();
            assert_eq!(tx, 3, "the last write's records on a fresh key");
            assert_eq!(read_exact(&mut ours, rest.len()), rest, "{suite:?}");
            let (first_seen, rest_seen) = peer.join().unwrap();
            assert_eq!(first_seen, first);
            assert_eq!(rest_seen, rest);
        }
    }

    /// A peer that completes the handshake with rustls and then seals records by hand.
    struct HandPeer {
        socket: std::net::TcpStream,
        tx: (LessSafeKey, [u8; 12], u64),
        rx: (LessSafeKey, [u8; 12], u64),
    }

    fn keys(secrets: ConnectionTrafficSecrets, seq: u64) -> (LessSafeKey, [u8; 12], u64) {
        let ConnectionTrafficSecrets::Aes128Gcm { key, iv } = secrets else {
            panic!("AES-128-GCM was the only suite offered");
        };
        let key = UnboundKey::new(&aead::AES_128_GCM, key.as_ref()).unwrap();
        (LessSafeKey::new(key), iv.as_ref().try_into().unwrap(), seq)
    }

    fn nonce(iv: &[u8; 12], seq: u64) -> Nonce {
        let mut n = *iv;
        for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
            *b ^= s;
        }
        Nonce::assume_unique_for_key(n)
    }

    impl HandPeer {
        fn accept(server: Arc<ServerConfig>, socket: std::net::TcpStream) -> HandPeer {
            let mut session = rustls::ServerConnection::new(server).unwrap();
            let mut socket = socket;
            while session.is_handshaking() || session.wants_write() {
                session.complete_io(&mut socket).unwrap();
            }
            #[allow(deprecated)]
            let secrets = session.dangerous_extract_secrets().unwrap();
            HandPeer {
                socket,
                tx: keys(secrets.tx.1, secrets.tx.0),
                rx: keys(secrets.rx.1, secrets.rx.0),
            }
        }

        fn seal(&mut self, plaintext: &[u8], content_type: u8) -> Vec<u8> {
            let len = (plaintext.len() + 1 + 16) as u16;
            let header = [23, 3, 3, (len >> 8) as u8, len as u8];
            let mut body = plaintext.to_vec();
            body.push(content_type);
            let (key, iv, seq) = &mut self.tx;
            key.seal_in_place_append_tag(nonce(iv, *seq), Aad::from(header), &mut body)
                .unwrap();
            *seq += 1;
            [&header[..], &body].concat()
        }

        /// The next record from our side, opened: (content type, plaintext).
        fn open(&mut self) -> (u8, Vec<u8>) {
            let mut header = [0; 5];
            self.socket.read_exact(&mut header).unwrap();
            let mut body = vec![0; usize::from(u16::from_be_bytes([header[3], header[4]]))];
            self.socket.read_exact(&mut body).unwrap();
            let (key, iv, seq) = &mut self.rx;
            let plain = key
                .open_in_place(nonce(iv, *seq), Aad::from(header), &mut body)
                .unwrap()
                .to_vec();
            *seq += 1;
            let (content_type, plain) = plain.split_last().unwrap();
            (*content_type, plain.to_vec())
        }
    }

    /// Sends `hostile` after a good record; returns what our side read and the error it
    /// then returned, and the alert the peer received.
    fn hostile(hostile: fn(&mut HandPeer) -> Vec<u8>) -> (Vec<u8>, io::Error, (u8, Vec<u8>)) {
        let (server, client) = configs(cipher_suite::TLS13_AES_128_GCM_SHA256);
        let (mut ours, peer) = connect(client, move |socket| {
            let mut peer = HandPeer::accept(server, socket);
            let mut records = peer.seal(b"good", 23);
            records.extend(hostile(&mut peer));
            peer.socket.write_all(&records).unwrap();
            peer.open()
        });
        let good = read_exact(&mut ours, 4);
        let mut buf = [0; 64];
        let err = retry(|| ours.read(&mut buf)).unwrap_err();
        // Every later call says the same.
        let again = ours.write(b"more").unwrap_err();
        assert_eq!(again.to_string(), err.to_string());
        (good, err, peer.join().unwrap())
    }

    #[test]
    fn a_forged_record_ends_the_session_with_bad_record_mac() {
        let (good, err, alert) = hostile(|peer| {
            let mut record = peer.seal(b"forged", 23);
            record[7] ^= 1;
            record
        });
        assert_eq!(good, b"good");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("integrity"), "{err}");
        assert_eq!(alert, (21, vec![2, 20]), "a fatal bad_record_mac alert");
    }

    #[test]
    fn an_oversized_or_unprotected_record_is_refused_with_its_alert() {
        let (_, err, alert) = hostile(|_| vec![23, 3, 3, 0x48, 0x01]);
        assert!(err.to_string().contains("over the limit"), "{err}");
        assert_eq!(alert, (21, vec![2, 22]), "a fatal record_overflow alert");
        let (_, err, alert) = hostile(|_| vec![22, 3, 3, 0, 4, 1, 0, 0, 0]);
        assert!(err.to_string().contains("unprotected"), "{err}");
        assert_eq!(alert, (21, vec![2, 10]), "a fatal unexpected_message alert");
        let (_, err, alert) = hostile(|peer| peer.seal(&[99, 0, 0, 0], 22));
        assert!(err.to_string().contains("message 99"), "{err}");
        assert_eq!(alert, (21, vec![2, 10]), "a fatal unexpected_message alert");
    }

    #[test]
    fn a_close_notify_ends_the_stream_cleanly_and_ours_reaches_the_peer() {
        let (server, client) = configs(cipher_suite::TLS13_AES_128_GCM_SHA256);
        let (mut ours, peer) = connect(client, move |socket| {
            let mut peer = HandPeer::accept(server, socket);
            let mut records = peer.seal(b"last words", 23);
            records.extend(peer.seal(&[1, 0], 21));
            peer.socket.write_all(&records).unwrap();
            peer.open()
        });
        assert_eq!(read_exact(&mut ours, 10), b"last words");
        let mut buf = [0; 16];
        assert_eq!(retry(|| ours.read(&mut buf)).unwrap(), 0, "a clean end");
        ours.close();
        assert_eq!(peer.join().unwrap(), (21, vec![1, 0]), "our close_notify");
        let after = ours.write(b"late").unwrap_err();
        assert!(after.to_string().contains("closed"), "{after}");
    }
}
