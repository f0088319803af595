//! A user-space TCP proxy for the faults a link shows and loopback does not: added delay, and a
//! connection cut in the middle of a frame. (This kernel has no netem; `tc tbf` limits the rate
//! of a veth link but neither delays nor cuts.)
//!
//! Each accepted connection is forwarded to the target by two threads per direction: a reader
//! that stamps every chunk with the time it arrived, and a writer that sends it on `delay` later
//! (pure latency: chunks are not held back by each other's delay, so the rate is the link's).
//! A cut after `n` bytes in one direction forwards exactly `n` bytes of that direction, then
//! closes both sides of the connection at once, as a dead link or a killed host would look.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// What the proxy does to the traffic.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Faults {
    /// Added to every byte's trip, each way.
    pub(crate) delay: Duration,
    /// Cut each connection after this many bytes from the client to the target.
    pub(crate) cut_upstream_after: Option<u64>,
    /// Cut each connection after this many bytes from the target to the client.
    pub(crate) cut_downstream_after: Option<u64>,
}

/// A proxy listening on loopback; stops accepting when dropped (open connections run on until
/// either side closes).
pub(crate) struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    cuts: Arc<AtomicU64>,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards every connection to `target`.
    pub(crate) fn start(target: SocketAddr, faults: Faults) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicU64::new(0));
        let (stop2, cuts2) = (Arc::clone(&stop), Arc::clone(&cuts));
        thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        match TcpStream::connect(target) {
                            Ok(upstream) => relay(client, upstream, faults, Arc::clone(&cuts2)),
                            Err(_) => drop(client),
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => return,
                }
            }
        });
        Proxy { addr, stop, cuts }
    }

    /// Where clients connect.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections cut so far.
    pub(crate) fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay(client: TcpStream, upstream: TcpStream, faults: Faults, cuts: Arc<AtomicU64>) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let ends = [client.try_clone().unwrap(), upstream.try_clone().unwrap()];
    let ends = Arc::new(ends);
    pipe(
        client.try_clone().unwrap(),
        upstream.try_clone().unwrap(),
        faults.delay,
        faults.cut_upstream_after,
        Arc::clone(&ends),
        Arc::clone(&cuts),
    );
    pipe(
        upstream,
        client,
        faults.delay,
        faults.cut_downstream_after,
        ends,
        cuts,
    );
}

/// One direction: `from` to `to`, each chunk `delay` late, cut after `cut` bytes.
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    delay: Duration,
    cut: Option<u64>,
    ends: Arc<[TcpStream; 2]>,
    cuts: Arc<AtomicU64>,
) {
    // `None` marks the cut: everything before it goes on, then both ends close.
    let (tx, rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = cut.unwrap_or(u64::MAX);
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match from.read(&mut buf[..want]) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            left -= n as u64;
            if tx
                .send((Instant::now() + delay, Some(buf[..n].to_vec())))
                .is_err()
            {
                return;
            }
        }
        let _ = tx.send((Instant::now() + delay, None));
    });
    thread::spawn(move || {
        for (due, chunk) in rx {
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                thread::sleep(wait);
            }
            let Some(chunk) = chunk else {
                cuts.fetch_add(1, Ordering::Relaxed);
                for end in ends.iter() {
                    let _ = end.shutdown(Shutdown::Both);
                }
                return;
            };
            if to.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
