//! Round-trip latency over loopback: NNP beside a raw TCP ping-pong of the same bytes, run in
//! the same process, in blocking and busy-poll modes, plus fixed-rate runs measured from each
//! message's scheduled send time (no coordinated omission) and a run with a 16 MiB WeightSync
//! streaming on the same connection.
//!
//! A TLS section runs the ping-pongs over TLS 1.3 (certificates made at start-up) beside the
//! same engines in plain TCP.
//!
//! `cargo bench --bench rtt` (set NNP_BENCH_ITERS to change the sample count). Sections:
//! NNP_BENCH_ONLY=busy|hol|tls, NNP_BENCH_ENGINE=inline|thread, NNP_BENCH_HOL=<part of a
//! head-of-line run's label>, NNP_BENCH_ECHO=decode (the echo decodes and re-encodes instead
//! of relaying).

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nnp::net::{ConnId, Engine, EngineConfig, EngineHandle, Limits, NetEvent, Receiver};
use nnp::wire::{frame_len, Message, SyncMode, WeightSync};

#[path = "common/tls.rs"]
mod tls;
use tls::{bench_tls, BenchTls};

/// The environment variable `name` parsed, or `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn iters() -> usize {
    env_or("NNP_BENCH_ITERS", 20_000)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).unwrap()
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Prints `h`'s percentiles and their ratios to each baseline (`.1` names it).
fn report(name: &str, h: &Histogram<u64>, bases: &[(&Histogram<u64>, &str)]) {
    let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
    print!(
        "{name:<56} p50 {:>8.1} us  p99 {:>8.1} us  p99.9 {:>8.1} us  max {:>9.1} us",
        us(q(h, 0.5)),
        us(q(h, 0.99)),
        us(q(h, 0.999)),
        us(h.max())
    );
    for (b, base_name) in bases {
        print!(
            "   ratio to {base_name}: p50 {:.2}x  p99 {:.2}x  p99.9 {:.2}x",
            q(h, 0.5) as f64 / q(b, 0.5) as f64,
            q(h, 0.99) as f64 / q(b, 0.99) as f64,
            q(h, 0.999) as f64 / q(b, 0.999) as f64
        );
    }
    println!();
}

/// Raw std TCP ping-pong of `size`-byte messages; `spin` polls non-blocking sockets.
/// `checked`: each message carries the CRC-32 of its bytes after the first 22, computed by
/// the sender and verified by the receiver at both ends, as a hand-rolled sender of NNP
/// frames must (three CRC passes a round trip, like NNP's send, echo receive and receive).
fn raw_ping_pong(size: usize, n: usize, spin: bool, checked: bool) -> Histogram<u64> {
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
            if checked {
                assert!(crc_holds(&buf));
            }
            write_full(&mut s, &buf);
        }
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    c.set_nonblocking(spin).unwrap();
    let mut msg = vec![7u8; size];
    let mut buf = vec![0u8; size];
    let mut h = histogram();
    for i in 0..n + n / 10 {
        let t = Instant::now();
        if checked {
            let crc = crc32fast::hash(&msg[22..]);
            msg[18..22].copy_from_slice(&crc.to_be_bytes());
        }
        write_full(&mut c, &msg);
        assert!(read_full(&mut c, &mut buf));
        if checked {
            assert!(crc_holds(&buf));
        }
        if i >= n / 10 {
            h.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    }
    drop(c);
    server.join().unwrap();
    h
}

/// Whether bytes 18..22 hold the CRC-32 of the bytes after 22 (NNP's header layout).
fn crc_holds(m: &[u8]) -> bool {
    m[18..22] == crc32fast::hash(&m[22..]).to_be_bytes()
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
    /// Background WeightSync payload bytes the server has received.
    bulk_received: Arc<AtomicU64>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(e) = self.echo.take() {
            let _ = e.join();
        }
    }
}

/// The engine settings the head-of-line runs vary.
#[derive(Clone, Copy, Default)]
struct Tuning {
    /// SO_SNDBUF and SO_RCVBUF; `None` leaves the kernel's autotuning.
    send_buffer: Option<usize>,
    recv_buffer: Option<usize>,
    /// `Latency::bulk_rate`.
    bulk_rate: Option<u64>,
    /// `Limits::send_queue_bytes`.
    queue_limit: usize,
}

const AUTOTUNED: Tuning = Tuning {
    send_buffer: None,
    recv_buffer: None,
    bulk_rate: None,
    queue_limit: 64 << 20,
};

fn engine_config(busy: bool, inline: bool, tuning: Tuning) -> EngineConfig {
    let config = EngineConfig::default()
        .socket_buffers(tuning.send_buffer, tuning.recv_buffer)
        .bulk_rate(tuning.bulk_rate)
        .busy_poll(busy)
        .max_payload(17 << 20)
        .limits(Limits {
            send_queue_bytes: tuning.queue_limit,
            ..Limits::default()
        });
    // Inline: no loop thread, the application's thread drives the engine.
    if inline {
        config.inline()
    } else {
        config.threads(1)
    }
}

/// A server engine echoing every frame but the background WeightSync stream, and a client.
fn pair(busy: bool, inline: bool, tuning: Tuning) -> Pair {
    pair_over(busy, inline, tuning, None)
}

/// [`pair`], over TLS if `tls` is given.
fn pair_over(busy: bool, inline: bool, tuning: Tuning, tls: Option<&BenchTls>) -> Pair {
    let mut server_config = engine_config(busy, inline, tuning);
    let mut client_config = engine_config(busy, inline, tuning);
    if let Some(tls) = tls {
        server_config = server_config.tls(tls.server.clone());
        client_config = client_config.tls(tls.client.clone());
    }
    let (server, server_handle, mut server_rx) = Engine::start(server_config).unwrap();
    let addr = server_handle.listen("127.0.0.1:0").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let bulk_received = Arc::new(AtomicU64::new(0));
    let bulk2 = Arc::clone(&bulk_received);
    // The echo passes each frame back as it came (`relay`: one copy, no checksum pass), as
    // the raw echo writes back the bytes it read; NNP_BENCH_ECHO=decode decodes and
    // re-encodes it instead (`message` + `send`).
    let decode = std::env::var("NNP_BENCH_ECHO").is_ok_and(|v| v == "decode");
    let echo = thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            if let Some(NetEvent::Frame(f)) = server_rx.recv_timeout(Duration::from_millis(50)) {
                let msg = f.message().unwrap();
                // Layer 2 WeightSyncs are the background stream: counted, not echoed.
                match &msg {
                    Message::WeightSync(ws) if ws.layer_id == 2 => {
                        bulk2.fetch_add(ws.values.len() as u64 * 4, Ordering::Relaxed);
                    }
                    _ if decode => {
                        let _ = server_handle.send(f.conn(), &msg, Duration::from_secs(5));
                    }
                    _ => {
                        let _ = server_handle.relay(f.conn(), f, Duration::from_secs(5));
                    }
                }
            }
        }
    });
    let (client_engine, client, rx) = Engine::start(client_config).unwrap();
    let conn = client.connect(addr).unwrap();
    Pair {
        _server: server,
        _client: client_engine,
        client,
        rx,
        conn,
        stop,
        echo: Some(echo),
        bulk_received,
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
            _ => {}
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

/// The ping-pongs over TLS 1.3 beside the same engines in plain TCP, in the two settings of
/// the plain rows: blocking with a loop thread, and busy-polled inline. Plain and TLS pairs
/// are measured alternately, twice each, and each pair's histograms are merged.
fn tls_section(forward: &Message<'_>, small: usize, ws: &Message<'_>, n: usize) {
    let tls = bench_tls();
    for (busy, inline, mode) in [
        (false, false, "blocking, 1 loop thread"),
        (true, true, "busy-poll, inline"),
    ] {
        let mut hists = [histogram(), histogram(), histogram(), histogram()];
        for _ in 0..2 {
            for (i, over) in [None, Some(&tls)].into_iter().enumerate() {
                let mut p = pair_over(busy, inline, AUTOTUNED, over);
                hists[i].add(nnp_ping_pong(&mut p, forward, n / 2)).unwrap();
                hists[2 + i].add(nnp_ping_pong(&mut p, ws, n / 8)).unwrap();
            }
        }
        let [plain_small, tls_small, plain_ws, tls_ws] = &hists;
        report(
            &format!("NNP ForwardData(100) {small} B plain ({mode})"),
            plain_small,
            &[],
        );
        report(
            &format!("NNP ForwardData(100) {small} B TLS 1.3 ({mode})"),
            tls_small,
            &[(plain_small, "plain")],
        );
        report(
            &format!("NNP WeightSync(64 KiB) plain ({mode})"),
            plain_ws,
            &[],
        );
        report(
            &format!("NNP WeightSync(64 KiB) TLS 1.3 ({mode})"),
            tls_ws,
            &[(plain_ws, "plain")],
        );
    }
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
        "# rtt: {n} round trips each (after {} warm-up), loopback, 1 event loop per engine, \
         echo: {}",
        n / 10,
        if std::env::var("NNP_BENCH_ECHO").is_ok_and(|v| v == "decode") {
            "message + send"
        } else {
            "relay"
        }
    );

    // NNP_BENCH_ONLY: `hol` runs the head-of-line section alone, `busy` the busy-poll
    // ping-pongs alone.
    let only = std::env::var("NNP_BENCH_ONLY").unwrap_or_default();
    let only_hol = only == "hol";
    let only_busy = only == "busy";
    let only_tls = only == "tls";
    if only.is_empty() || only_tls {
        tls_section(&forward, small, &ws, n);
        if only_tls {
            return;
        }
    }
    for busy in [false, true]
        .into_iter()
        .filter(|&b| !only_hol && (b || !only_busy))
    {
        let mode = if busy { "busy-poll" } else { "blocking" };
        let raw_small = raw_ping_pong(small, n, busy, false);
        report(&format!("raw TCP {small} B ({mode})"), &raw_small, &[]);
        let raw_large = raw_ping_pong(large, n / 4, busy, false);
        report(&format!("raw TCP {large} B ({mode})"), &raw_large, &[]);
        let crc_large = raw_ping_pong(large, n / 4, busy, true);
        report(
            &format!("raw TCP + CRC-32 {large} B ({mode})"),
            &crc_large,
            &[],
        );
        // NNP_BENCH_ENGINE=inline or =thread runs one kind of engine.
        let engines = std::env::var("NNP_BENCH_ENGINE").unwrap_or_default();
        for inline in [false, true]
            .into_iter()
            .filter(|&i| match engines.as_str() {
                "inline" => i,
                "thread" => !i,
                _ => true,
            })
        {
            let engine = if inline { "inline" } else { "1 loop thread" };
            let mut p = pair(busy, inline, AUTOTUNED);
            let h = nnp_ping_pong(&mut p, &forward, n);
            report(
                &format!("NNP ForwardData(100) {small} B ({mode}, {engine})"),
                &h,
                &[(&raw_small, "raw")],
            );
            let h = nnp_ping_pong(&mut p, &ws, n / 4);
            report(
                &format!("NNP WeightSync(64 KiB) ({mode}, {engine})"),
                &h,
                &[(&raw_large, "raw"), (&crc_large, "raw+crc")],
            );
        }
    }

    if only_busy {
        return;
    }
    let mut p = pair(false, false, AUTOTUNED);
    for rate in [10_000u64, 100_000].into_iter().filter(|_| !only_hol) {
        let count = (rate as usize).min(n * 5);
        let h = nnp_fixed_rate(&mut p, rate, count);
        report(&format!("NNP ForwardData fixed rate {rate}/s"), &h, &[]);
    }

    drop(p);

    // ForwardData ping-pong while 16 MiB WeightSyncs stream on the same connection, sent as
    // 64 KiB slices (what the node API does; NNP_BENCH_HOL_SLICE sets the values per slice)
    // so small frames can pass between them, one sync after another with a 10 ms pause.
    // Settings: a loop thread per engine and inline engines with the kernel's autotuned
    // buffers; inline engines with SO_SNDBUF and SO_RCVBUF capped (bounding the bulk bytes
    // between the writer and the reader); both engines with bulk frames paced
    // (`Latency::bulk_rate`, NNP_BENCH_HOL_RATE bytes/s, default 1 GB/s), which bounds
    // the bulk bytes ahead of a small frame and leaves the cores room.
    let rate: u64 = env_or("NNP_BENCH_HOL_RATE", 1_000_000_000);
    // A paced sender's queue is kept short too (1 MiB), so the streaming thread encodes as
    // the frames leave rather than all 16 MiB in one burst that takes a core for
    // milliseconds.
    let paced = Tuning {
        bulk_rate: Some(rate),
        queue_limit: 1 << 20,
        ..AUTOTUNED
    };
    let capped = Tuning {
        send_buffer: Some(64 << 10),
        recv_buffer: Some(64 << 10),
        ..AUTOTUNED
    };
    let gbs = rate as f64 / 1e9;
    let runs = [
        (
            "1 loop thread, autotuned buffers".to_string(),
            false,
            AUTOTUNED,
        ),
        ("inline, autotuned buffers".to_string(), true, AUTOTUNED),
        (
            "inline, SO_SNDBUF+SO_RCVBUF 64 KiB".to_string(),
            true,
            capped,
        ),
        (format!("1 loop thread, paced {gbs:.2} GB/s"), false, paced),
        (format!("inline, paced {gbs:.2} GB/s"), true, paced),
    ];
    let filter = std::env::var("NNP_BENCH_HOL").ok();
    // The machine's own floor: the same ping-pong over raw sockets while raw 16 MiB bursts
    // stream on a second connection (no framing, no checksum, no shared stream: no
    // head-of-line blocking at all), unpaced and paced like the NNP runs.
    for (label, pace) in [("raw, unpaced", None), ("raw, paced", Some(rate))] {
        if filter.as_deref().is_some_and(|f| !label.contains(f)) {
            continue;
        }
        raw_head_of_line(small, n, pace, label);
    }
    for (label, inline, tuning) in runs {
        if filter.as_deref().is_some_and(|f| !label.contains(f)) {
            continue;
        }
        let mut p = pair(false, inline, tuning);
        head_of_line(&mut p, &forward, n, &label);
    }
}

/// Raw TCP ping-pong of `size` bytes, quiet and then while 16 MiB bursts (64 KiB writes,
/// paced at `pace` bytes/s if set, a 10 ms pause after each burst has been read) stream on
/// another connection between the same two threads' process.
fn raw_head_of_line(size: usize, n: usize, pace: Option<u64>, label: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; size];
        while read_full(&mut s, &mut buf) {
            write_full(&mut s, &buf);
        }
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let msg = vec![7u8; size];
    let mut buf = vec![0u8; size];
    let mut round_trip = |c: &mut TcpStream| {
        let t = Instant::now();
        write_full(c, &msg);
        assert!(read_full(c, &mut buf));
        t.elapsed().as_nanos() as u64
    };
    let mut quiet = histogram();
    for i in 0..n + n / 10 {
        let rtt = round_trip(&mut c);
        if i >= n / 10 {
            quiet.record(rtt).unwrap();
        }
    }
    report(&format!("raw {size} B quiet ({label})"), &quiet, &[]);

    let sink_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink_listener.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let sink = {
        let received = Arc::clone(&received);
        thread::spawn(move || {
            let (mut s, _) = sink_listener.accept().unwrap();
            let mut buf = vec![0u8; 128 << 10];
            while let Ok(k) = s.read(&mut buf) {
                if k == 0 {
                    return;
                }
                received.fetch_add(k as u64, Ordering::Relaxed);
            }
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let queued = Arc::new(AtomicU64::new(0));
    let streamer = {
        let (stop, queued, received) = (
            Arc::clone(&stop),
            Arc::clone(&queued),
            Arc::clone(&received),
        );
        thread::spawn(move || {
            let mut s = TcpStream::connect(sink_addr).unwrap();
            let chunk = vec![1u8; 64 << 10];
            let mut due = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..256 {
                    // One chunk of burst, like `Latency::bulk_rate`: a late wake-up
                    // (sleep overshoots by tens of microseconds) is caught up at once.
                    if let Some(rate) = pace {
                        let spacing = Duration::from_secs_f64(chunk.len() as f64 / rate as f64);
                        let now = Instant::now();
                        if due > now {
                            thread::sleep(due - now);
                        }
                        due = due.max(Instant::now().checked_sub(spacing).unwrap_or(due)) + spacing;
                    }
                    queued.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    write_full(&mut s, &chunk);
                }
                while received.load(Ordering::Relaxed) < queued.load(Ordering::Relaxed)
                    && !stop.load(Ordering::Relaxed)
                {
                    thread::sleep(Duration::from_micros(200));
                }
                thread::sleep(Duration::from_millis(env_or("NNP_BENCH_HOL_PAUSE_MS", 10)));
            }
        })
    };
    thread::sleep(Duration::from_millis(50));
    let seconds: f64 = env_or("NNP_BENCH_HOL_SECONDS", 3.0);
    let streaming = || received.load(Ordering::Relaxed) < queued.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut during = histogram();
    while during.len() < (n / 2) as u64 || start.elapsed().as_secs_f64() < seconds {
        let was_streaming = streaming();
        let rtt = round_trip(&mut c);
        if was_streaming || streaming() {
            during.record(rtt).unwrap();
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    streamer.join().unwrap();
    sink.join().unwrap();
    drop(c);
    echo.join().unwrap();
    report(
        &format!("raw {size} B while 16 MiB bursts stream on another socket ({label})"),
        &during,
        &[(&quiet, "quiet")],
    );
    println!(
        "  ({} round trips during bursts in {elapsed:.1} s, {:.2} GB/s of bulk overall)",
        during.len(),
        received.load(Ordering::Relaxed) as f64 / elapsed / 1e9
    );
}

fn head_of_line(p: &mut Pair, forward: &Message<'_>, n: usize, label: &str) {
    let quiet = nnp_ping_pong(p, forward, n);
    report(&format!("NNP ForwardData quiet ({label})"), &quiet, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let pause = Duration::from_millis(env_or("NNP_BENCH_HOL_PAUSE_MS", 10));
    // Payload bytes of background WeightSync queued so far: a sync is in flight while the
    // server has received less.
    let queued = Arc::new(AtomicU64::new(p.bulk_received.load(Ordering::Relaxed)));
    let streamer = {
        let (client, conn, stop) = (p.client.clone(), p.conn, Arc::clone(&stop));
        let (queued, received) = (Arc::clone(&queued), Arc::clone(&p.bulk_received));
        thread::spawn(move || {
            let slice = vec![1.0f32; env_or("NNP_BENCH_HOL_SLICE", 16 * 1024)];
            let rows = 2048u32;
            let cols = 2047u32;
            let total = rows * cols + rows;
            let mut syncs = 0u32;
            let mut in_flight = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
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
                    queued.fetch_add(u64::from(len) * 4, Ordering::Relaxed);
                    client.send(conn, &msg, Duration::from_secs(10)).unwrap();
                    offset += len;
                }
                // The whole sync reaches the server, then a pause: syncs do not pile up in
                // the send queue, and the round trips can be told apart by whether one was
                // in flight.
                while received.load(Ordering::Relaxed) < queued.load(Ordering::Relaxed)
                    && !stop.load(Ordering::Relaxed)
                {
                    thread::sleep(Duration::from_micros(200));
                }
                syncs += 1;
                in_flight += started.elapsed();
                thread::sleep(pause);
            }
            (syncs, in_flight)
        })
    };
    thread::sleep(Duration::from_millis(50));
    // Long enough for dozens of syncs, whatever the sample count.
    let seconds: f64 = env_or("NNP_BENCH_HOL_SECONDS", 3.0);
    let received_before = p.bulk_received.load(Ordering::Relaxed);
    let start = Instant::now();
    let (mut during, mut between) = (histogram(), histogram());
    let streaming =
        |p: &Pair| p.bulk_received.load(Ordering::Relaxed) < queued.load(Ordering::Relaxed);
    while during.len() < (n / 2) as u64 || start.elapsed().as_secs_f64() < seconds {
        let was_streaming = streaming(p);
        let t = Instant::now();
        p.client
            .send(p.conn, forward, Duration::from_secs(10))
            .unwrap();
        let f = next_frame(&mut p.rx);
        let rtt = t.elapsed().as_nanos() as u64;
        drop(f);
        if was_streaming || streaming(p) {
            during.record(rtt).unwrap();
        } else {
            between.record(rtt).unwrap();
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let received = p.bulk_received.load(Ordering::Relaxed) - received_before;
    stop.store(true, Ordering::Relaxed);
    let (syncs, in_flight) = streamer.join().unwrap();
    report(
        &format!("NNP ForwardData while a 16 MiB WeightSync streams ({label})"),
        &during,
        &[(&quiet, "quiet")],
    );
    report(
        &format!("NNP ForwardData between syncs ({label})"),
        &between,
        &[(&quiet, "quiet")],
    );
    println!(
        "  ({} round trips during syncs, {} between, in {elapsed:.1} s; {syncs} syncs, {:.1} ms \
         each from first send to last byte received ({:.2} GB/s), {:.2} GB/s overall)",
        during.len(),
        between.len(),
        in_flight.as_secs_f64() * 1e3 / f64::from(syncs.max(1)),
        f64::from(syncs) * 16.0 * (1 << 20) as f64 / in_flight.as_secs_f64() / 1e9,
        received as f64 / elapsed / 1e9
    );
}
