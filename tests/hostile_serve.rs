//! Hostile clients against a live `nnp serve` process, while a well-behaved client on the same
//! server keeps asking: garbage, a bad checksum, a 4 GiB length, thousands of silent
//! connections, a handshake dribbled a byte at a time, half-closed sockets, a handshake
//! repeated mid-session, a flood above the rate limit and a reader that never reads. Each
//! gets the documented Error or Disconnect and is closed; the well-behaved client loses
//! nothing (every request answered, in order); the server's resident memory stays under a
//! stated bound; every refusal shows in the metrics. Also: the connection limits, in all and
//! per source address.
//!
//! Nothing here is timed: the well-behaved client's round trips during the attacks are
//! measured by `cargo bench --bench flood` (PERF.md).

mod common;

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::process::Processes;
use common::raw_peer::RawPeer;
use nnp::wire::{encode_frame, DisconnectReason, ErrorCode, Header, Message, MsgType, HEADER_LEN};
use zerocopy::IntoBytes;

/// Inputs of the served network; its answers are `OUTPUTS` values (8 KiB each), so that a
/// reader that does not read is soon behind by megabytes.
const INPUTS: usize = 4;
const OUTPUTS: usize = 2048;

/// The server's resident memory may not exceed this, whatever the attacks: its code and
/// network, a pool of read blocks, the bookkeeping of thousands of connections, and the
/// slow consumer's queue (at most `--max-queued-bytes`, 16 MiB). Measured at most: 27 MiB
/// with 2,000 silent connections, 46 MiB with 10,000 (12 MiB quiet).
const RSS_BOUND: usize = 64 << 20;

/// A running `nnp serve`, killed when dropped.
struct Server {
    addr: SocketAddr,
    metrics: SocketAddr,
    pid: u32,
    _process: Processes,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let layers = format!("{INPUTS},{OUTPUTS}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_nnp"))
            .args(["serve", "--port", "0", "--layers", &layers])
            .args(["--metrics", "127.0.0.1:0", "--log", "off"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let listening = lines.next().unwrap().unwrap();
        let metrics = lines.next().unwrap().unwrap();
        let addr = listening
            .strip_prefix("listening on ")
            .and_then(|l| l.split(' ').next())
            .unwrap_or_else(|| panic!("{listening}"))
            .parse()
            .unwrap();
        let metrics = metrics
            .strip_prefix("metrics at http://")
            .and_then(|m| m.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("{metrics}"))
            .parse()
            .unwrap();
        Server {
            addr,
            metrics,
            pid: child.id(),
            _process: Processes(vec![child]),
        }
    }

    /// One counter of `nnp_limit_refusals_total`.
    fn refused(&self, limit: &str) -> u64 {
        self.sample(&format!("nnp_limit_refusals_total{{limit=\"{limit}\"}}"))
    }

    fn sample(&self, series: &str) -> u64 {
        let mut stream = TcpStream::connect(self.metrics).unwrap();
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    /// Waits (at most a minute: a generous bound, not a timing) until `ready`.
    fn wait_for(&self, what: &str, ready: impl Fn(&Server) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready(self) {
            assert!(Instant::now() < deadline, "never happened: {what}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's resident memory in bytes (VmRSS in /proc/<pid>/status).
    fn resident_bytes(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let kib: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }
}

fn request(i: usize) -> Message<'static> {
    let x = (i % 16) as f32;
    Message::ForwardData {
        layer_id: 0,
        data: Cow::Owned(vec![x / 16.0, 1.0 - x / 16.0, x / 4.0, -x / 8.0]),
    }
}

/// A client that asks one question at a time, about a thousand a second (below the rate
/// limit), and checks every answer against the ones it got before the attacks began.
struct WellBehaved {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    worker: thread::JoinHandle<u64>,
}

impl WellBehaved {
    fn start(addr: SocketAddr) -> WellBehaved {
        let mut peer = RawPeer::handshake(addr);
        peer.stream.set_nodelay(true).unwrap();
        // The answers to the sixteen distinct requests, from the quiet server.
        let expected: Vec<Message<'static>> = (0..16)
            .map(|i| {
                peer.send(&request(i));
                let (t, answer) = peer.read_frame().unwrap();
                assert_eq!(t, MsgType::ForwardData, "{answer:?}");
                answer
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let (stop2, answered2) = (Arc::clone(&stop), Arc::clone(&answered));
        let worker = thread::spawn(move || {
            let mut i = 0;
            while !stop2.load(Ordering::Relaxed) {
                peer.send(&request(i));
                let (_, answer) = peer
                    .read_frame()
                    .unwrap_or_else(|| panic!("request {i} unanswered: the connection ended"));
                assert_eq!(answer, expected[i % 16], "answer {i} out of order or wrong");
                i += 1;
                answered2.store(i as u64, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(1));
            }
            i as u64
        });
        WellBehaved {
            stop,
            answered,
            worker,
        }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.worker
            .join()
            .expect("the well-behaved client lost nothing")
    }
}

/// Samples the server's resident memory every 20 ms; the largest seen.
fn watch_memory(server: &Server, stop: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    let pid = server.pid;
    thread::spawn(move || {
        let path = format!("/proc/{pid}/status");
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Ok(status) = std::fs::read_to_string(&path) {
                let kib: usize = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(0);
                max = max.max(kib * 1024);
            }
            thread::sleep(Duration::from_millis(20));
        }
        max
    })
}

/// The Error code a hostile peer got before the close (heartbeats skipped).
fn error_code(peer: &mut RawPeer) -> Option<ErrorCode> {
    peer.error_then_close()
}

/// The Disconnect a peer got last, skipping everything before it.
fn disconnect_reason(peer: &mut RawPeer) -> Option<DisconnectReason> {
    let mut reason = None;
    while let Some((_, msg)) = peer.read_frame() {
        if let Message::Disconnect { reason: r, .. } = msg {
            reason = Some(r);
        }
    }
    reason
}

fn garbage(addr: SocketAddr) {
    let mut peer = RawPeer::connect(addr);
    let mut x = 0x1234_5678u32;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    peer.stream.write_all(&bytes).unwrap();
    assert_eq!(error_code(&mut peer), Some(ErrorCode::BAD_MAGIC));
}

fn bad_checksum(addr: SocketAddr) {
    let mut peer = RawPeer::handshake(addr);
    let mut frame = peer.frame(&request(0));
    *frame.last_mut().unwrap() ^= 0x55;
    peer.stream.write_all(&frame).unwrap();
    assert_eq!(error_code(&mut peer), Some(ErrorCode::CHECKSUM_MISMATCH));
}

/// A header announcing a 4 GiB payload, before and after the handshake.
fn four_gib_length(addr: SocketAddr) {
    let header = Header::new(MsgType::ForwardData, u32::MAX, 1, 0);
    assert_eq!(header.as_bytes().len(), HEADER_LEN);
    let mut peer = RawPeer::handshake(addr);
    peer.stream.write_all(header.as_bytes()).unwrap();
    assert_eq!(error_code(&mut peer), Some(ErrorCode::FRAME_TOO_LARGE));
    let hello = Header::new(MsgType::Handshake, u32::MAX, 0, 0);
    let mut peer = RawPeer::connect(addr);
    peer.stream.write_all(hello.as_bytes()).unwrap();
    assert_eq!(error_code(&mut peer), Some(ErrorCode::FRAME_TOO_LARGE));
}

/// `count` connections that say nothing: each is closed at the handshake deadline with an
/// Error TIMEOUT.
fn silent_connections(server: &Server, count: usize) {
    let before = server.refused("handshake_timeout");
    let mut silent: Vec<RawPeer> = (0..count).map(|_| RawPeer::connect(server.addr)).collect();
    server.wait_for("every silent connection timed out", |s| {
        s.refused("handshake_timeout") >= before + count as u64
    });
    for peer in &mut silent {
        assert_eq!(error_code(peer), Some(ErrorCode::TIMEOUT));
    }
}

/// A handshake dribbled a byte at a time, slower than the deadline allows.
fn one_byte_at_a_time(addr: SocketAddr) {
    let mut peer = RawPeer::connect(addr);
    peer.stream.set_nodelay(true).unwrap();
    let hello = peer.frame(&RawPeer::hello());
    for b in &hello[..3] {
        peer.stream.write_all(&[*b]).unwrap();
        thread::sleep(Duration::from_millis(400));
    }
    assert_eq!(error_code(&mut peer), Some(ErrorCode::TIMEOUT));
}

/// A peer that asks, then closes its sending side, still gets its answer, then a Disconnect
/// NORMAL; peers that close their side before saying anything are simply closed.
fn half_closed(addr: SocketAddr) {
    let mut peer = RawPeer::handshake(addr);
    peer.send(&request(3));
    peer.stream.shutdown(Shutdown::Write).unwrap();
    let (t, _) = peer.read_frame().expect("the answer after a half-close");
    assert_eq!(t, MsgType::ForwardData);
    assert_eq!(disconnect_reason(&mut peer), Some(DisconnectReason::NORMAL));
    let mut mute: Vec<RawPeer> = (0..100).map(|_| RawPeer::connect(addr)).collect();
    for peer in &mut mute {
        peer.stream.shutdown(Shutdown::Write).unwrap();
    }
    for peer in &mut mute {
        assert!(peer.read_frame().is_none());
    }
}

fn handshake_repeated(addr: SocketAddr) {
    let mut peer = RawPeer::handshake(addr);
    peer.send(&request(1));
    peer.send(&RawPeer::hello());
    assert_eq!(error_code(&mut peer), Some(ErrorCode::UNEXPECTED_MESSAGE));
}

/// Requests written as fast as the socket takes them (what comes back read on another
/// thread): the ones over the rate limit are refused, and the flooder is disconnected
/// OVERLOADED.
fn flood_with(mut peer: RawPeer) {
    let mut writer = peer.stream.try_clone().unwrap();
    let mut burst = Vec::new();
    for k in 0..1000u64 {
        encode_frame(&request(k as usize), 1 + k, &mut burst).unwrap();
    }
    let reader = thread::spawn(move || {
        let (mut answers, mut refusals, mut reason) = (0, 0, None);
        while let Some((_, msg)) = peer.read_frame() {
            match msg {
                Message::ForwardData { .. } => answers += 1,
                Message::Error { code, message } => {
                    assert_eq!(code, ErrorCode::APPLICATION, "{message}");
                    assert!(message.contains("rate limit"), "{message}");
                    refusals += 1;
                }
                Message::Disconnect { reason: r, .. } => reason = Some(r),
                other => panic!("{other:?}"),
            }
        }
        (answers, refusals, reason)
    });
    let frame_len = burst.len() / 1000;
    let mut sequence = 1u64;
    'flood: loop {
        for (k, frame) in burst.chunks_mut(frame_len).enumerate() {
            Header::mut_from_buf(frame)
                .unwrap()
                .set_sequence(sequence + k as u64);
        }
        // The sequence is outside the checksum: the frames stay valid.
        if writer.write_all(&burst).is_err() {
            break 'flood;
        }
        sequence += 1000;
        if sequence > 10_000_000 {
            break;
        }
    }
    // The answers to the frames taken may come after the close (then they are not sent).
    let (_answers, refusals, reason) = reader.join().unwrap();
    assert!(refusals > 0);
    assert_eq!(reason, Some(DisconnectReason::OVERLOADED));
}

/// A peer that asks for 8 MB of answers and never reads them: disconnected as a slow
/// consumer; what it finally reads ends with a Disconnect OVERLOADED.
fn never_reads(server: &Server) {
    let before = server.refused("slow_consumer");
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut peer = RawPeer::connect_with(socket.into());
    peer.send(&RawPeer::hello());
    for round in 0..10 {
        for k in 0..100 {
            peer.send(&request(round * 100 + k));
        }
        thread::sleep(Duration::from_millis(100));
    }
    server.wait_for("the reader that never reads is cut off", |s| {
        s.refused("slow_consumer") > before
    });
    assert_eq!(
        disconnect_reason(&mut peer),
        Some(DisconnectReason::OVERLOADED)
    );
}

const SERVE_ARGS: [&str; 18] = [
    "--handshake-timeout",
    "1",
    "--max-payload",
    "65536",
    "--max-queued-bytes",
    "16777216",
    "--slow-consumer-timeout",
    "1",
    "--rate-frames",
    "2000",
    "--rate-burst",
    "0.5",
    "--rate-close-after",
    "500",
    "--max-connections",
    "20000",
    "--max-connections-per-address",
    "20000",
];

fn survive_every_attack(silent: usize) {
    let server = Server::start(&SERVE_ARGS);
    let quiet_rss = server.resident_bytes();
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = watch_memory(&server, Arc::clone(&stop_watch));
    let good = WellBehaved::start(server.addr);

    garbage(server.addr);
    bad_checksum(server.addr);
    four_gib_length(server.addr);
    silent_connections(&server, silent);
    one_byte_at_a_time(server.addr);
    half_closed(server.addr);
    handshake_repeated(server.addr);
    // From an address of its own: the flooder's address is dropped for a second after
    // its close, as the next test shows.
    flood_with(handshaken_from([127, 0, 0, 3], server.addr));
    never_reads(&server);

    let during = good.answered();
    // The well-behaved client is still served after everything.
    server.wait_for("the well-behaved client asks on", |_| {
        good.answered() > during + 100
    });
    let answered = good.finish();
    stop_watch.store(true, Ordering::Relaxed);
    let max_rss = watcher.join().unwrap();
    eprintln!(
        "well-behaved client: {answered} answers, in order; server memory {} MiB quiet, {} MiB \
         at most (bound {} MiB)",
        quiet_rss >> 20,
        max_rss >> 20,
        RSS_BOUND >> 20
    );
    assert!(max_rss < RSS_BOUND, "server memory reached {max_rss} bytes");
    assert!(server.refused("rate_refused") > 0);
    assert!(server.refused("rate_closed") >= 1);
    assert!(server.refused("handshake_timeout") > silent as u64);
    assert!(server.refused("slow_consumer") >= 1);
    assert_eq!(server.refused("max_connections"), 0);
}

#[test]
fn a_live_server_survives_hostile_clients_and_a_well_behaved_one_loses_nothing() {
    survive_every_attack(2000);
}

/// The same with ten thousand silent connections (`cargo test --release -- --ignored`).
#[test]
#[ignore]
fn a_live_server_survives_ten_thousand_silent_connections() {
    survive_every_attack(10_000);
}

/// A connection from `ip` (127.0.0.x: every loopback address is this machine).
fn connect_from(ip: [u8; 4], to: SocketAddr) -> RawPeer {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from = SocketAddr::from((ip, 0));
    socket.bind(&from.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    RawPeer::connect_with(socket.into())
}

fn handshaken_from(ip: [u8; 4], to: SocketAddr) -> RawPeer {
    let mut peer = connect_from(ip, to);
    peer.send(&RawPeer::hello());
    assert_eq!(peer.read_frame().unwrap().0, MsgType::HandshakeAck);
    peer
}

/// A connection the server turned away: a Disconnect OVERLOADED, then the end.
fn assert_turned_away(mut peer: RawPeer) {
    assert_eq!(
        disconnect_reason(&mut peer),
        Some(DisconnectReason::OVERLOADED)
    );
}

#[test]
fn connections_over_the_limits_in_all_and_per_address_are_turned_away() {
    let server = Server::start(&[
        "--max-connections",
        "6",
        "--max-connections-per-address",
        "4",
    ]);
    let mut first: Vec<RawPeer> = (0..4)
        .map(|_| handshaken_from([127, 0, 0, 1], server.addr))
        .collect();
    assert_turned_away(connect_from([127, 0, 0, 1], server.addr));
    let _second: Vec<RawPeer> = (0..2)
        .map(|_| handshaken_from([127, 0, 0, 2], server.addr))
        .collect();
    assert_turned_away(connect_from([127, 0, 0, 3], server.addr));
    assert_eq!(server.refused("max_connections_per_address"), 1);
    assert_eq!(server.refused("max_connections"), 1);

    // A place given back is taken again.
    let gone = first.pop().unwrap();
    gone.stream.shutdown(Shutdown::Both).unwrap();
    drop(gone);
    server.wait_for("the closed connection's place is free", |s| {
        s.sample("nnp_connections_closed_total") >= 1
    });
    let mut again = handshaken_from([127, 0, 0, 1], server.addr);
    again.send(&request(0));
    assert_eq!(again.read_frame().unwrap().0, MsgType::ForwardData);
}

/// A connection from `ip` to `to`, started and not waited for.
fn start_connect_from(ip: [u8; 4], to: SocketAddr) -> socket2::Socket {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    if let Err(e) = socket.connect(&to.into()) {
        // EINPROGRESS
        assert_eq!(e.raw_os_error(), Some(115), "connect from {ip:?}: {e}");
    }
    socket
}

/// Whether a connection started by [`start_connect_from`] completed within `wait`.
fn connected_within(socket: &socket2::Socket, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while socket.peer_addr().is_err() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
    socket.set_nonblocking(false).unwrap();
    true
}

#[test]
fn an_address_closed_for_its_rate_is_dropped_before_accept_for_a_second_and_no_other_is() {
    let server = Server::start(&SERVE_ARGS);
    let flooder = [127, 0, 0, 5];
    let deadline = Instant::now() + Duration::from_secs(30);
    // Right after a flooder is closed for its rate, the listener drops what its address
    // sends: a new connection from it does not complete (a dropped SYN is sent again only a
    // second later), while one from another address does. Retried: a connection that
    // reaches the listener before the filter is on is accepted, and turned away at once.
    let pending = loop {
        assert!(
            Instant::now() < deadline,
            "no connection from the flooder's address was dropped"
        );
        flood_with(handshaken_from(flooder, server.addr));
        let pending = start_connect_from(flooder, server.addr);
        let other = start_connect_from([127, 0, 0, 6], server.addr);
        assert!(connected_within(&other, Duration::from_secs(10)));
        if !connected_within(&pending, Duration::from_millis(300)) {
            break pending;
        }
        assert_turned_away(RawPeer::connect_with(pending.into()));
    };
    // Dropped, not refused: the kernel still tries.
    assert!(pending.take_error().unwrap().is_none());
    assert!(server.refused("rate_filtered") >= 1);
    assert_eq!(server.refused("max_connections_per_address"), 0);
    // Another address is served meanwhile.
    let mut other = handshaken_from([127, 0, 0, 6], server.addr);
    other.send(&request(0));
    assert_eq!(other.read_frame().unwrap().0, MsgType::ForwardData);
    // Once the second has passed, the filter is off: the flooder's pending connection
    // completes with its SYN sent again, and is served, owing nothing.
    assert!(
        connected_within(&pending, Duration::from_secs(10)),
        "the flooder's address is still dropped"
    );
    let mut back = RawPeer::connect_with(pending.into());
    back.send(&RawPeer::hello());
    assert_eq!(back.read_frame().unwrap().0, MsgType::HandshakeAck);
    back.send(&request(1));
    assert_eq!(back.read_frame().unwrap().0, MsgType::ForwardData);
}
