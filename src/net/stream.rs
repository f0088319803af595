//! The byte-stream seam between a socket and the codec.
//!
//! A connection reads and writes through [`ByteStream`], never through the socket directly, so
//! that a TLS session can later sit between the two without the codec or the session knowing.
//! Crate-private until an implementation other than plain TCP exists.

use std::io::{self, IoSlice, Read, Write};

use mio::net::TcpStream;

/// A bidirectional, non-blocking byte stream over a registered TCP socket.
pub(crate) trait ByteStream: Send {
    /// Reads plaintext bytes; `Ok(0)` means the peer closed, `WouldBlock` means wait.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes plaintext bytes from several buffers at once.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Writes plaintext bytes from one buffer (a plain `send` costs less than a one-buffer
    /// `writev`: no iovec to import).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }
    /// The socket to register with the event loop.
    fn socket(&mut self) -> &mut TcpStream;
}

/// Plain TCP: the stream is the socket.
#[derive(Debug)]
pub(crate) struct PlainTcp(pub(crate) TcpStream);

impl ByteStream for PlainTcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn socket(&mut self) -> &mut TcpStream {
        &mut self.0
    }
}
