//! The byte-stream seam between a socket and the codec.
//!
//! A connection reads and writes through [`ByteStream`], never through the socket directly, so
//! that a TLS session (`super::tls`, with the `tls` feature) sits between the two without the
//! codec or the session knowing.

use std::io::{self, IoSlice, Read, Write};

use mio::net::TcpStream;

use super::config::EngineConfig;

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
    /// Writes what the stream holds for the socket beyond the bytes `write` accepted (a TLS
    /// handshake flight, an alert, records the socket did not take whole); `Ok(true)` when
    /// nothing is left. The loop calls it whenever the socket is writable.
    fn flush_pending(&mut self) -> io::Result<bool> {
        Ok(true)
    }
    /// Frees buffers an idle connection does not need.
    fn release_idle_memory(&mut self) {}
    /// Ends the stream's own session before the socket closes (TLS: a close_notify), best
    /// effort.
    fn close(&mut self) {}
    /// The socket to register with the event loop.
    fn socket(&mut self) -> &mut TcpStream;
}

/// A failure of the security layer (TLS: a certificate not trusted, an alert from the peer),
/// carried inside the `io::Error` a stream returns, so that the connection's end can say
/// what it was.
#[derive(Debug)]
pub(crate) struct TlsFailure(pub(crate) String);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}

impl TlsFailure {
    /// The TLS failure an I/O error carries, if it carries one.
    pub(crate) fn of(e: &io::Error) -> Option<&TlsFailure> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<TlsFailure>())
    }
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

/// A connection's stream: plain TCP held in place (an idle connection costs no allocation for
/// it, and a send no virtual call), or a TLS session.
pub(crate) enum Stream {
    /// Plain TCP.
    Plain(PlainTcp),
    /// TLS 1.3 over TCP.
    #[cfg(feature = "tls")]
    Tls(Box<super::tls::TlsStream>),
}

/// Calls `$call` on whichever stream `$self` holds.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Stream::Plain($s) => $call,
            #[cfg(feature = "tls")]
            Stream::Tls($s) => $call,
        }
    };
}

impl ByteStream for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        each!(self, s => s.read(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        each!(self, s => s.write_vectored(bufs))
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        each!(self, s => s.write(buf))
    }

    fn flush_pending(&mut self) -> io::Result<bool> {
        each!(self, s => s.flush_pending())
    }

    fn release_idle_memory(&mut self) {
        each!(self, s => s.release_idle_memory())
    }

    fn close(&mut self) {
        each!(self, s => s.close())
    }

    fn socket(&mut self) -> &mut TcpStream {
        each!(self, s => s.socket())
    }
}

/// The stream for a socket the engine accepted: TLS if the engine accepts with TLS
/// ([`super::TlsConfig::accept`]), else plain TCP.
pub(crate) fn accepted(socket: TcpStream, config: &EngineConfig) -> io::Result<Stream> {
    #[cfg(feature = "tls")]
    if let Some(server) = &config.tls.accept {
        let tls =
            rustls::server::UnbufferedServerConnection::new(std::sync::Arc::clone(&server.config))
                .map_err(|e| io::Error::other(TlsFailure(e.to_string())))?;
        return Ok(Stream::Tls(Box::new(super::tls::TlsStream::new(
            socket,
            super::tls::Session::Server(tls),
        )?)));
    }
    let _ = config;
    Ok(Stream::Plain(PlainTcp(socket)))
}

/// The stream for a socket the engine connected to `addr`: TLS if the engine connects with
/// TLS ([`super::TlsConfig::connect`]), else plain TCP.
pub(crate) fn connected(
    socket: TcpStream,
    addr: std::net::SocketAddr,
    config: &EngineConfig,
) -> io::Result<Stream> {
    #[cfg(feature = "tls")]
    if let Some(client) = &config.tls.connect {
        let name = client.name_for(addr.ip());
        let tls = rustls::client::UnbufferedClientConnection::new(
            std::sync::Arc::clone(&client.config),
            name,
        )
        .map_err(|e| io::Error::other(TlsFailure(e.to_string())))?;
        return Ok(Stream::Tls(Box::new(super::tls::TlsStream::new(
            socket,
            super::tls::Session::Client(tls),
        )?)));
    }
    let _ = (addr, config);
    Ok(Stream::Plain(PlainTcp(socket)))
}
