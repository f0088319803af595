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
//! - a write is accepted into rustls (at most its buffer limit) and its records written; a
//!   write that finds earlier records still unsent sends those first and takes nothing new
//!   until they are out, so rustls holds at most one write's records.
//!
//! Socket bytes are read into a buffer of our own and handed to rustls from memory: rustls
//! reads a socket 4 KiB at a time, which would cost a bulk transfer a system call per 4 KiB.
//! The buffer starts at 64 KiB and grows to 256 KiB while reads fill it (a bulk transfer:
//! a quarter of the system calls); it is freed when the connection goes idle.

use std::io::{self, IoSlice, Read, Write};

use mio::net::TcpStream;
use rustls::Connection;

use super::stream::{ByteStream, TlsFailure};

/// Socket bytes read per system call, at first ...
const INBOX: usize = 64 * 1024;
/// ... and once a read has filled the inbox.
const BULK_INBOX: usize = 256 * 1024;
/// Plaintext rustls takes per write (it encrypts it into records at once).
const WRITE_LIMIT: usize = 256 * 1024;

/// A TLS session over a registered TCP socket.
pub(crate) struct TlsStream {
    socket: TcpStream,
    tls: Connection,
    /// Socket bytes not yet handed to rustls: `inbox[start..end]`. Freed when the connection
    /// goes idle.
    inbox: Vec<u8>,
    start: usize,
    end: usize,
    /// The last socket read was short: the socket is empty until its next readiness edge.
    drained: bool,
    /// The socket reported its end.
    eof: bool,
}

impl TlsStream {
    /// Wraps a connected socket; the handshake runs as the connection reads and writes (a
    /// client's first flight is sent at the first write or flush).
    pub(crate) fn new(socket: TcpStream, mut tls: Connection) -> TlsStream {
        tls.set_buffer_limit(Some(WRITE_LIMIT));
        TlsStream {
            socket,
            tls,
            inbox: Vec::new(),
            start: 0,
            end: 0,
            drained: false,
            eof: false,
        }
    }

    /// Reads socket bytes into the inbox. `Ok(false)`: nothing to read now.
    fn fill_inbox(&mut self) -> io::Result<bool> {
        if self.drained || self.eof {
            return Ok(false);
        }
        if self.inbox.len() < INBOX {
            self.inbox.resize(INBOX, 0);
        }
        loop {
            match self.socket.read(&mut self.inbox) {
                Ok(0) => {
                    self.eof = true;
                    // Lets rustls tell a close_notify from a truncation.
                    self.tls.read_tls(&mut io::empty())?;
                    return Ok(false);
                }
                Ok(n) => {
                    self.start = 0;
                    self.end = n;
                    self.drained = n < self.inbox.len();
                    if n == self.inbox.len() && n < BULK_INBOX {
                        self.inbox.resize(BULK_INBOX, 0);
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.drained = true;
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Hands inbox bytes to rustls and processes them; sends what processing queued.
    fn process_inbox(&mut self) -> io::Result<()> {
        let taken = self.tls.read_tls(&mut &self.inbox[self.start..self.end])?;
        self.start += taken;
        if let Err(e) = self.tls.process_new_packets() {
            // The alert rustls queued for the peer, if the socket takes it.
            let _ = self.flush_pending();
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                TlsFailure(e.to_string()),
            ));
        }
        self.flush_pending()?;
        Ok(())
    }
}

impl ByteStream for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Each call may read the socket again, as a read on TCP would.
        self.drained = false;
        let mut filled = 0;
        loop {
            match self.tls.reader().read(&mut buf[filled..]) {
                // The peer's close_notify: the clean end of its stream.
                Ok(0) if filled < buf.len() => return Ok(filled),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        return Ok(filled);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket ended without a close_notify: an end of stream all the same
                // (the frames above carry their own checks, a cut frame is seen there).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(e) => return Err(e),
            }
            if self.start == self.end {
                if self.eof {
                    return Ok(filled);
                }
                if !self.fill_inbox()? {
                    if self.eof {
                        continue;
                    }
                    return if filled > 0 {
                        Ok(filled)
                    } else {
                        Err(io::ErrorKind::WouldBlock.into())
                    };
                }
            }
            self.process_inbox()?;
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.flush_pending()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.tls.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            // Before the handshake completes rustls holds plaintext up to its limit; the
            // rest waits for the read that completes the handshake.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.flush_pending()?;
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn flush_pending(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn release_idle_memory(&mut self) {
        if self.start == self.end {
            self.inbox = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    fn close(&mut self) {
        self.tls.send_close_notify();
        if let Err(e) = self.flush_pending() {
            log::trace!("close_notify not sent: {e}");
        }
    }

    fn socket(&mut self) -> &mut TcpStream {
        &mut self.socket
    }
}
