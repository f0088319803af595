//! Round-trip latency over loopback: NNP beside a raw TCP ping-pong of the same bytes, run in
//! the same process, in blocking and busy-poll modes, plus fixed-rate runs measured from each
//! message's scheduled send time (no coordinated omission) and a run with a 16 MiB WeightSync
//! streaming on the same connection.
//!
//! `cargo bench --bench rtt` (set NNP_BENCH_ITERS to change the sample count).

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nnp::net::{ConnId, Engine, EngineConfig, EngineHandle, NetEvent, Receiver};
use nnp::wire::{frame_len, Message, SyncMode, WeightSync};

fn iters() -> usize {
    std::env::var("NNP_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).unwrap()
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn report(name: &str, h: &Histogram<u64>, base: Option<&Histogram<u64>>) {
    let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
    print!(
        "{name:<56} p50 {:>8.1} us  p99 {:>8.1} us  p99.9 {:>8.1} us  max {:>9.1} us",
        us(q(h, 0.5)),
        us(q(h, 0.99)),
        us(q(h, 0.999)),
        us(h.max())
    );
    if let Some(b) = base {
        print!(
            "   ratio to raw: p50 {:.2}x  p99 {:.2}x  p99.9 {:.2}x",
            q(h, 0.5) as f64 / q(b, 0.5) as f64,
            q(h, 0.99) as f64 / q(b, 0.99) as f64,
            q(h, 0.999) as f64 / q(b, 0.999) as f64
        );
    }
    println!();
}

/// Raw std TCP ping-pong of `size`-byte messages; `spin` polls non-blocking sockets.
fn raw_ping_pong(size: usize, n: usize, spin: bool) -> Histogram<u64> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        s.set_nonblocking(spin).unwrap();
        let mut buf = vec![0u8; size];
        loop {
            if !read_full(&mut s, &mut buf) {
                return;
            }
            write_full(&mut s, &buf);
        }
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    c.set_nonblocking(spin).unwrap();
    let msg = vec![7u8; size];
    let mut buf = vec![0u8; size];
    let mut h = histogram();
    for i in 0..n + n / 10 {
        let t = Instant::now();
        write_full(&mut c, &msg);
        assert!(read_full(&mut c, &mut buf));
        if i >= n / 10 {
            h.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    }
    drop(c);
    server.join().unwrap();
    h
}

fn read_full(s: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => return false,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(_) => return false,
        }
    }
    true
}

fn write_full(s: &mut TcpStream, buf: &[u8]) {
    let mut put = 0;
    while put < buf.len() {
        match s.write(&buf[put..]) {
            Ok(k) => put += k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => panic!("{e}"),
        }
    }
}

struct Pair {
    _server: Engine,
    _client: Engine,
    client: EngineHandle,
    rx: Receiver,
    conn: ConnId,
    stop: Arc<AtomicBool>,
    echo: Option<thread::JoinHandle<()>>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(e) = self.echo.take() {
            let _ = e.join();
        }
    }
}

fn engine_config(busy: bool, inline: bool, send_buffer: Option<usize>) -> EngineConfig {
    EngineConfig {
        socket_send_buffer: send_buffer,
        // Inline: no loop thread, the application's thread drives the engine.
        event_loops: if inline { 0 } else { 1 },
        busy_poll: busy,
        max_payload: 17 << 20,
        send_queue_limit: 64 << 20,
        ..EngineConfig::default()
    }
}

/// A server engine echoing every frame but the background WeightSync stream, and a client.
fn pair(busy: bool, inline: bool, send_buffer: Option<usize>) -> Pair {
    let (server, server_handle, mut server_rx) =
        Engine::start(engine_config(busy, inline, send_buffer)).unwrap();
    let addr = server_handle.listen("127.0.0.1:0").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let echo = thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            if let Some(NetEvent::Frame(f)) = server_rx.recv_timeout(Duration::from_millis(50)) {
                let msg = f.message().unwrap();
                // Layer 2 WeightSyncs are the background stream: consumed, not echoed.
                if !matches!(&msg, Message::WeightSync(ws) if ws.layer_id == 2) {
                    let _ = server_handle.send(f.conn(), &msg, Duration::from_secs(5));
                }
            }
        }
    });
    let (client_engine, client, rx) =
        Engine::start(engine_config(busy, inline, send_buffer)).unwrap();
    let conn = client.connect(addr).unwrap();
    Pair {
        _server: server,
        _client: client_engine,
        client,
        rx,
        conn,
        stop,
        echo: Some(echo),
    }
}

fn next_frame(rx: &mut Receiver) -> nnp::net::ReceivedFrame {
    loop {
        match rx
            .recv_timeout(Duration::from_secs(10))
            .expect("echo within 10 s")
        {
            NetEvent::Frame(f) => return f,
            NetEvent::Disconnected { cause, .. } => panic!("closed: {cause}"),
            NetEvent::Connected { .. } => {}
        }
    }
}

fn nnp_ping_pong(p: &mut Pair, msg: &Message<'_>, n: usize) -> Histogram<u64> {
    let mut h = histogram();
    for i in 0..n + n / 10 {
        let t = Instant::now();
        p.client.send(p.conn, msg, Duration::from_secs(10)).unwrap();
        let f = next_frame(&mut p.rx);
        if i >= n / 10 {
            h.record(t.elapsed().as_nanos() as u64).unwrap();
        }
        drop(f);
    }
    h
}

/// Sends at a fixed rate from one thread and measures each echo from its scheduled time.
fn nnp_fixed_rate(p: &mut Pair, rate: u64, n: usize) -> Histogram<u64> {
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now() + Duration::from_millis(10);
    let client = p.client.clone();
    let conn = p.conn;
    let sender = thread::spawn(move || {
        let mut data = vec![0.0f32; 100];
        for i in 0..n {
            let due = start + period * i as u32;
            // Sleep most of the wait, then yield: a spinning harness on a 2-core machine
            // would steal the core the engine needs.
            let now = Instant::now();
            if due > now + Duration::from_micros(200) {
                thread::sleep(due - now - Duration::from_micros(100));
            }
            while Instant::now() < due {
                thread::yield_now();
            }
            data[0] = f32::from_bits(i as u32);
            let msg = Message::ForwardData {
                layer_id: 0,
                data: Cow::Borrowed(&data),
            };
            client.send(conn, &msg, Duration::from_secs(10)).unwrap();
        }
    });
    let mut h = histogram();
    for _ in 0..n {
        let f = next_frame(&mut p.rx);
        let now = Instant::now();
        if let Ok(Message::ForwardData { data, .. }) = f.message() {
            let i = data[0].to_bits();
            let due = start + period * i;
            h.record(now.saturating_duration_since(due).as_nanos().max(1) as u64)
                .unwrap();
        }
    }
    sender.join().unwrap();
    h
}

fn main() {
    let n = iters();
    let forward_data = vec![0.25f32; 100];
    let forward = Message::ForwardData {
        layer_id: 0,
        data: Cow::Borrowed(&forward_data),
    };
    let small = frame_len(&forward).unwrap();
    let ws_values = vec![0.5f32; 64 * 1024 / 4 - 6];
    let ws = Message::WeightSync(WeightSync {
        layer_id: 1,
        mode: SyncMode::Replace,
        rows: 1,
        cols: ws_values.len() as u32 - 1,
        offset: 0,
        sample_count: 1,
        values: Cow::Borrowed(&ws_values),
    });
    let large = frame_len(&ws).unwrap();
    println!(
        "# rtt: {n} round trips each (after {} warm-up), loopback, 1 event loop per engine",
        n / 10
    );

    let only_hol = std::env::var("NNP_BENCH_ONLY").is_ok_and(|v| v == "hol");
    for busy in [false, true].into_iter().filter(|_| !only_hol) {
        let mode = if busy { "busy-poll" } else { "blocking" };
        let raw_small = raw_ping_pong(small, n, busy);
        report(&format!("raw TCP {small} B ({mode})"), &raw_small, None);
        let raw_large = raw_ping_pong(large, n / 4, busy);
        report(&format!("raw TCP {large} B ({mode})"), &raw_large, None);
        for inline in [false, true] {
            let engine = if inline { "inline" } else { "1 loop thread" };
            let mut p = pair(busy, inline, None);
            let h = nnp_ping_pong(&mut p, &forward, n);
            report(
                &format!("NNP ForwardData(100) {small} B ({mode}, {engine})"),
                &h,
                Some(&raw_small),
            );
            let h = nnp_ping_pong(&mut p, &ws, n / 4);
            report(
                &format!("NNP WeightSync(64 KiB) ({mode}, {engine})"),
                &h,
                Some(&raw_large),
            );
        }
    }

    let mut p = pair(false, false, None);
    for rate in [10_000u64, 100_000].into_iter().filter(|_| !only_hol) {
        let count = (rate as usize).min(n * 5);
        let h = nnp_fixed_rate(&mut p, rate, count);
        report(&format!("NNP ForwardData fixed rate {rate}/s"), &h, None);
    }

    // ForwardData ping-pong while 16 MiB WeightSyncs stream on the same connection, sent as
    // 64 KiB slices (what the node API does) so small frames can pass between them, one
    // sync after another with a 10 ms pause: with the kernel's autotuned send buffer, then
    // with SO_SNDBUF capped at 256 KiB, which bounds the bulk bytes a small frame can queue
    // behind in the kernel.
    head_of_line(&mut p, &forward, n, "autotuned SO_SNDBUF");
    drop(p);
    let mut p = pair(false, false, Some(256 << 10));
    head_of_line(&mut p, &forward, n, "SO_SNDBUF 256 KiB");
}

fn head_of_line(p: &mut Pair, forward: &Message<'_>, n: usize, label: &str) {
    let quiet = nnp_ping_pong(p, forward, n);
    report(&format!("NNP ForwardData quiet ({label})"), &quiet, None);
    let stop = Arc::new(AtomicBool::new(false));
    let streamer = {
        let (client, conn, stop) = (p.client.clone(), p.conn, Arc::clone(&stop));
        thread::spawn(move || {
            let slice = vec![1.0f32; 16 * 1024];
            let rows = 2048u32;
            let cols = 2047u32;
            let total = rows * cols + rows;
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut offset = 0u32;
                while offset < total && !stop.load(Ordering::Relaxed) {
                    let len = (total - offset).min(slice.len() as u32);
                    let msg = Message::WeightSync(WeightSync {
                        layer_id: 2,
                        mode: SyncMode::Replace,
                        rows,
                        cols,
                        offset,
                        sample_count: 1,
                        values: Cow::Borrowed(&slice[..len as usize]),
                    });
                    client.send(conn, &msg, Duration::from_secs(10)).unwrap();
                    offset += len;
                    sent += u64::from(len) * 4;
                }
                // One 16 MiB sync every ~20 ms (about 0.8 GB/s): a weight sync in flight
                // most of the time, without starving the two cores the whole test shares.
                thread::sleep(Duration::from_millis(10));
            }
            sent
        })
    };
    thread::sleep(Duration::from_millis(50));
    let busy = nnp_ping_pong(p, forward, n / 2);
    stop.store(true, Ordering::Relaxed);
    let streamed = streamer.join().unwrap();
    report(
        &format!("NNP ForwardData beside 16 MiB WeightSyncs ({label})"),
        &busy,
        Some(&quiet),
    );
    println!(
        "  (streamed {:.1} MiB of WeightSync meanwhile; ratio column is to the quiet run)",
        streamed as f64 / (1 << 20) as f64
    );
}
