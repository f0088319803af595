//! Sockets as the engine wants them: buffer sizes set before the SYN, listeners that pass them on.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::config::EngineConfig;

/// Applies the configured socket buffer sizes (best effort: a refusal is logged, not fatal).
pub(crate) fn tune_socket(socket: &impl std::os::fd::AsFd, config: &EngineConfig) {
    let socket = socket2::SockRef::from(socket);
    if let Some(size) = config.latency.socket_send_buffer {
        if let Err(e) = socket.set_send_buffer_size(size) {
            log::debug!("SO_SNDBUF {size} refused: {e}");
        }
    }
    if let Some(size) = config.latency.socket_recv_buffer {
        if let Err(e) = socket.set_recv_buffer_size(size) {
            log::debug!("SO_RCVBUF {size} refused: {e}");
        }
    }
}

/// A listening socket with the configured buffer sizes set before `listen`, so that accepted
/// connections inherit them and their window is sized by them from the SYN on.
pub(crate) fn bind_listener(
    addr: SocketAddr,
    config: &EngineConfig,
) -> io::Result<mio::net::TcpListener> {
    let socket = tcp_socket(addr, config)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// A TCP socket for `addr`'s family with the configured buffer sizes.
fn tcp_socket(addr: SocketAddr, config: &EngineConfig) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    tune_socket(&socket, config);
    Ok(socket)
}

/// A connected socket with the configured buffer sizes set before the SYN.
pub(crate) fn connect_socket(
    addr: &SocketAddr,
    timeout: Duration,
    config: &EngineConfig,
) -> io::Result<std::net::TcpStream> {
    let socket = tcp_socket(*addr, config)?;
    socket.connect_timeout(&(*addr).into(), timeout)?;
    Ok(socket.into())
}
