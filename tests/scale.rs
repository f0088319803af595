//! 9,000 idle connections held by one server, the clients in another process.
//!
//! Ignored by default (it takes a few seconds and 18,000 file descriptors); `.ci/run` runs it
//! with `cargo test --release -- --ignored`. It prints the server's user-space memory per idle
//! connection, which must stay at or under 1 KiB: an idle connection holds no pooled buffer.

mod common;

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::memory::resident_bytes;
use nnp::net::{Engine, EngineConfig, Limits};
use nnp::session::SessionConfig;
use nnp::wire::{capabilities, encode_frame, Hello, Message, HEADER_LEN};

const CONNECTIONS: usize = 9_000;
const CHILD_ENV: &str = "NNP_SCALE_CLIENT_OF";

/// The client process: opens the connections, handshakes each, then waits for stdin to close.
fn run_client(addr: &str) {
    let hello = Message::Handshake(Hello {
        node_id: 1,
        min_version: 1,
        max_version: 1,
        capabilities: capabilities::ALL,
        layer_sizes: Cow::Borrowed(&[]),
        name: Cow::Borrowed("idle"),
    });
    let mut frame = Vec::new();
    encode_frame(&hello, 0, &mut frame).unwrap();
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&frame).unwrap();
        conns.push(s);
    }
    for s in &mut conns {
        let mut header = [0u8; HEADER_LEN];
        s.read_exact(&mut header).unwrap();
        assert_eq!(header[5], 0x02, "a HandshakeAck comes back");
        let len = u32::from_be_bytes(header[6..10].try_into().unwrap()) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
    }
    println!("ready");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
#[ignore = "scale test: run with --ignored (CI does)"]
fn nine_thousand_idle_connections_cost_under_a_kib_each() {
    if let Ok(addr) = std::env::var(CHILD_ENV) {
        run_client(&addr);
        return;
    }
    let config = EngineConfig::default()
        .threads(2)
        .session(SessionConfig {
            name: "scale".into(),
            heartbeat_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            ..SessionConfig::default()
        })
        // Every client comes from 127.0.0.1: the per-address default (1,000) would turn
        // most of them away.
        .limits(Limits {
            max_connections_per_address: CONNECTIONS,
            ..Limits::default()
        });
    let (_engine, handle, rx) = Engine::start(config).unwrap();
    // The application drains its events, as a real one does.
    let drain = std::thread::spawn(move || rx.for_each(drop));
    let addr = handle.listen("127.0.0.1:0").unwrap();
    // Warm up: one connection's worth of lazily built structures before the baseline.
    std::thread::sleep(Duration::from_millis(100));
    let before = resident_bytes();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "nine_thousand_idle_connections_cost_under_a_kib_each",
            "--nocapture",
        ])
        .env(CHILD_ENV, addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut buf = [0u8; 256];
    while !seen.contains("ready") {
        assert!(
            Instant::now() < deadline,
            "the client process never got ready"
        );
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "the client process ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Counted from the metrics: `peers()` builds a status for every connection, and 9,000 of
    // them every 50 ms would leave the test's own garbage in the resident figure.
    let open = || {
        let m = handle.metrics();
        m.connections_opened - m.connections_closed
    };
    let wait = Instant::now() + Duration::from_secs(30);
    while open() < CONNECTIONS as u64 && Instant::now() < wait {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the handshakes finish and the loops' idle sweep run once.
    std::thread::sleep(Duration::from_millis(200));
    let after = resident_bytes();
    let established = handle.peers().iter().filter(|p| p.info.is_some()).count();
    let pooled = handle.pool().bytes_in_use();
    let free_blocks = handle.pool().free_blocks();
    drop(child.stdin.take());
    let _ = child.wait();
    drop(_engine);
    let _ = drain.join();
    let per_conn = after.saturating_sub(before) as f64 / CONNECTIONS as f64;
    println!(
        "scale: {established} idle connections established; resident {} -> {} KiB; {per_conn:.0} bytes per connection; pool blocks in use: {pooled} bytes; free blocks the pool keeps per class: {free_blocks:?}",
        before / 1024,
        after / 1024,
    );
    assert_eq!(established, CONNECTIONS);
    assert_eq!(pooled, 0, "idle connections hold no pooled block");
    assert!(
        per_conn <= 1024.0,
        "{per_conn:.0} bytes per idle connection"
    );
}
