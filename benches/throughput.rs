//! One-way streaming throughput over loopback: NNP beside a raw TCP stream of the same bytes
//! written in 64 KiB batches, and beside a hand-rolled stream of the same frames whose writer
//! builds each one (copies its payload in from the message's memory behind a header with its
//! CRC-32) and whose reader checks every CRC: the least any sender and receiver of NNP frames
//! must do, so NNP's ratio to it is the engine's own cost; all in the same process.
//!
//! `cargo bench --bench throughput` (NNP_BENCH_SECONDS scales the run length;
//! NNP_BENCH_FILTER=Forward runs only the streams whose name contains it, NNP_BENCH_RUN=inline
//! only the NNP runs whose label contains it; NNP_BENCH_PROFILE=1 runs the NNP streams alone,
//! with no baseline and no ratio, so that a profile shows only NNP; NNP_BENCH_PAIRS, default 5,
//! is the number of rounds of the closing comparison of plain `send` and the node API with the
//! `Sender`, run back to back in each round). The `Sender` runs receive through
//! `Receiver::poll` (frames lent in place). The runs labelled TLS are the same `Sender` runs
//! over TLS 1.3 (certificates made at start-up), each reported beside its plain run:
//! NNP_BENCH_RUN="Sender, inline" runs a pair.

#[path = "common/tls.rs"]
mod tls;

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use nnp::net::{Engine, EngineConfig, NetEvent, Polled};
use nnp::nn::{HebbianLearningMode, NeuralNetwork};
use nnp::node::{DistributedNetwork, NodeEvent};
use nnp::wire::{encode_frame, frame_len, Message, SyncMode, WeightSync};
use tls::{bench_tls, BenchTls};

/// The environment variable `name` parsed, or `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

struct Rate {
    msgs_per_s: f64,
    gb_per_s: f64,
    /// CPU time per message of the sending and of the receiving thread, in ns: steadier than
    /// the rate on a shared machine (waiting costs nothing, spinning counts).
    cpu_ns: (f64, f64),
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Streams `count` pre-encoded frames over a raw socket in 64 KiB writes; the reader only
/// counts bytes. `checked` (the hand-rolled stream): the writer builds each frame before the
/// write, checksumming the payload where the message holds it, then copying it in behind the
/// header that carries the CRC-32 (checksum first: reading back bytes just copied stalls on
/// store forwarding), and the reader checks every frame's CRC, as a hand-rolled sender and
/// receiver of NNP frames must (no other framing work: the frames are of one length).
fn raw_stream(frame: &[u8], count: usize, checked: bool) -> Rate {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let flen = frame.len();
    let total = flen * count;
    // Named threads, so that a profile (`perf report --sort comm`) tells the sides apart.
    let reader_name = if checked {
        "hand-rolled-reader"
    } else {
        "raw-reader"
    };
    let reader = thread::Builder::new()
        .name(reader_name.into())
        .spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let cpu = thread_cpu();
            // 1 MiB reads: on this machine's loopback a reader asking for exactly 128 or 256 KiB
            // a read streams 424-byte frames at 6-8 M/s, one asking for 1 MiB (or for a size
            // that is not a power of two) at 9-11 M/s; the baseline is the faster reader.
            const READ: usize = 1 << 20;
            let mut buf = vec![0u8; READ + flen];
            let mut got = 0;
            // Bytes at the front of `buf` that are part of a frame not yet whole.
            let mut carry = 0;
            while got < total {
                match s.read(&mut buf[carry..carry + READ]) {
                    Ok(0) => break,
                    Ok(n) => {
                        got += n;
                        if checked {
                            let filled = carry + n;
                            let whole = filled / flen * flen;
                            for f in buf[..whole].chunks_exact(flen) {
                                assert_eq!(f[18..22], crc32fast::hash(&f[22..]).to_be_bytes());
                            }
                            buf.copy_within(whole..filled, 0);
                            carry = filled - whole;
                        }
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            (Instant::now(), thread_cpu() - cpu)
        })
        .unwrap();
    // The message's payload where the application holds it.
    let payload = frame[22..].to_vec();
    let mut batch = Vec::new();
    let per_batch = (64 * 1024 / flen).max(1);
    for _ in 0..per_batch {
        batch.extend_from_slice(frame);
    }
    let mut s = TcpStream::connect(addr).unwrap();
    let start = Instant::now();
    let cpu = thread_cpu();
    let mut sent = 0;
    while sent < count {
        let k = per_batch.min(count - sent);
        if checked {
            for f in batch[..k * flen].chunks_exact_mut(flen) {
                let crc = crc32fast::hash(&payload);
                f[18..22].copy_from_slice(&crc.to_be_bytes());
                f[22..].copy_from_slice(&payload);
            }
        }
        s.write_all(&batch[..k * flen]).unwrap();
        sent += k;
    }
    let send_cpu = thread_cpu() - cpu;
    let (end, recv_cpu) = reader.join().unwrap();
    let secs = (end - start).as_secs_f64();
    Rate {
        msgs_per_s: count as f64 / secs,
        gb_per_s: total as f64 / secs / 1e9,
        cpu_ns: per_message(send_cpu, recv_cpu, count),
    }
}

/// Each side's CPU time per message, in ns.
fn per_message(send: Duration, recv: Duration, count: usize) -> (f64, f64) {
    let ns = |d: Duration| d.as_nanos() as f64 / count as f64;
    (ns(send), ns(recv))
}

/// How the NNP run hands frames to the engine.
#[derive(Clone, Copy, PartialEq)]
enum Api {
    /// `EngineHandle::send`, one frame per call; the receiver takes one event per call.
    PerFrame,
    /// A `Sender` (frames coalesced into 64 KiB blocks) and `Receiver::poll`.
    Batched,
    /// `DistributedNetwork::send_forward_data`, one message per call, received as
    /// `NodeEvent`s one at a time: what a user of the node API meets.
    Node,
}

/// Streams `count` ForwardData messages from one node to another through the node API
/// (default node settings: loop threads).
fn node_stream(data: &[f32], count: usize) -> Rate {
    let network =
        || NeuralNetwork::with_layers_and_mode(&[data.len(), 2], 0.1, HebbianLearningMode::Classic);
    let (server, mut events) =
        DistributedNetwork::new("bench-server", "127.0.0.1", 0, network()).unwrap();
    let addr = server.start_server().unwrap();
    let frame_bytes = frame_len(&Message::ForwardData {
        layer_id: 0,
        data: Cow::Borrowed(data),
    })
    .unwrap();
    let counter = thread::Builder::new()
        .name("node-receiver".into())
        .spawn(move || {
            let cpu = thread_cpu();
            let (mut got, mut bytes) = (0, 0);
            while got < count {
                match events
                    .recv_timeout(Duration::from_secs(20))
                    .expect("messages keep coming")
                {
                    NodeEvent::Message(m) => {
                        drop(m);
                        bytes += frame_bytes;
                        got += 1;
                    }
                    NodeEvent::PeerDisconnected { cause, .. } => panic!("closed: {cause}"),
                    _ => {}
                }
            }
            (Instant::now(), bytes, thread_cpu() - cpu)
        })
        .unwrap();
    let (client, _client_events) =
        DistributedNetwork::new("bench-client", "127.0.0.1", 0, network()).unwrap();
    let peer = client.connect_to("127.0.0.1", addr.port()).unwrap();
    let start = Instant::now();
    let cpu = thread_cpu();
    for _ in 0..count {
        client.send_forward_data(peer, 0, data).unwrap();
    }
    client
        .engine()
        .wait_sent(peer, Duration::from_secs(60))
        .unwrap();
    let send_cpu = thread_cpu() - cpu;
    let (end, bytes, recv_cpu) = counter.join().unwrap();
    let secs = (end - start).as_secs_f64();
    Rate {
        msgs_per_s: count as f64 / secs,
        gb_per_s: bytes as f64 / secs / 1e9,
        cpu_ns: per_message(send_cpu, recv_cpu, count),
    }
}

/// `inline`: engines with no loop thread, driven by the sending and the receiving thread
/// (two threads in all, as the raw stream has); otherwise one loop thread per engine.
/// `tls`: the engines speak TLS 1.3.
fn nnp_stream(
    msg: &Message<'_>,
    count: usize,
    api: Api,
    inline: bool,
    tls: Option<&BenchTls>,
) -> Rate {
    if api == Api::Node {
        let Message::ForwardData { data, .. } = msg else {
            unreachable!("the node runs stream ForwardData")
        };
        return node_stream(data, count);
    }
    let config = EngineConfig::default().max_payload(17 << 20);
    let config = if inline {
        config.inline()
    } else {
        config.threads(1)
    };
    let (server_config, client_config) = match tls {
        Some(tls) => (
            config.clone().tls(tls.server.clone()),
            config.tls(tls.client.clone()),
        ),
        None => (config.clone(), config),
    };
    let (_server, server, mut rx) = Engine::start(server_config).unwrap();
    let addr = server.listen("127.0.0.1:0").unwrap();
    // The counter drives an inline server, so it runs before the connect.
    let counter = thread::Builder::new()
        .name("nnp-receiver".into())
        .spawn(move || {
            let cpu = thread_cpu();
            let mut got = 0;
            let mut bytes = 0;
            let mut events = Vec::with_capacity(1024);
            while got < count {
                match api {
                    Api::PerFrame | Api::Node => events.push(
                        rx.recv_timeout(Duration::from_secs(20))
                            .expect("frames keep coming"),
                    ),
                    Api::Batched => {
                        let n = rx.poll(1024, Duration::from_secs(20), |polled| match polled {
                            Polled::Frame(f) => {
                                bytes += f.bytes().len();
                                got += 1;
                            }
                            Polled::Event(NetEvent::Disconnected { cause, .. }) => {
                                panic!("closed: {cause}")
                            }
                            Polled::Event(_) => {}
                        });
                        assert!(n > 0, "frames keep coming");
                    }
                }
                for event in events.drain(..) {
                    match event {
                        NetEvent::Frame(f) => {
                            bytes += f.bytes().len();
                            got += 1;
                        }
                        NetEvent::Disconnected { cause, .. } => panic!("closed: {cause}"),
                        _ => {}
                    }
                }
            }
            (Instant::now(), bytes, thread_cpu() - cpu)
        })
        .unwrap();
    let (_client, client, _crx) = Engine::start(client_config).unwrap();
    let conn = client.connect(addr).unwrap();
    let start = Instant::now();
    let cpu = thread_cpu();
    match api {
        Api::PerFrame | Api::Node => {
            for _ in 0..count {
                client.send(conn, msg, Duration::from_secs(20)).unwrap();
            }
        }
        Api::Batched => {
            let mut sender = client.sender(conn).unwrap();
            for _ in 0..count {
                sender.send(msg, Duration::from_secs(20)).unwrap();
            }
            sender.flush().unwrap();
        }
    }
    // An inline client writes only while this thread calls into it.
    client.wait_sent(conn, Duration::from_secs(60)).unwrap();
    let send_cpu = thread_cpu() - cpu;
    let (end, bytes, recv_cpu) = counter.join().unwrap();
    let secs = (end - start).as_secs_f64();
    Rate {
        msgs_per_s: count as f64 / secs,
        gb_per_s: bytes as f64 / secs / 1e9,
        cpu_ns: per_message(send_cpu, recv_cpu, count),
    }
}

fn run(name: &str, msg: &Message<'_>, count: usize, tls: &BenchTls) {
    if std::env::var("NNP_BENCH_FILTER").is_ok_and(|f| !name.contains(&f)) {
        return;
    }
    let len = frame_len(msg).unwrap();
    let mut frame = Vec::with_capacity(len);
    encode_frame(msg, 0, &mut frame).unwrap();
    let mut runs = vec![
        (Api::PerFrame, false, false, "send, loop thread"),
        (Api::Batched, false, false, "Sender, loop thread"),
        (Api::Batched, false, true, "Sender, loop thread, TLS"),
        (Api::PerFrame, true, false, "send, inline"),
        (Api::Batched, true, false, "Sender, inline"),
        (Api::Batched, true, true, "Sender, inline, TLS"),
    ];
    if matches!(msg, Message::ForwardData { .. }) {
        runs.insert(3, (Api::Node, false, false, "node API"));
    }
    // Each run's median ratio to the raw stream, for the TLS runs' ratios to plain.
    let mut ratios: Vec<(&str, f64)> = Vec::new();
    let mut cpus: Vec<(&str, (f64, f64))> = Vec::new();
    // The machine is shared and its speed drifts between runs: each NNP run is paired with
    // a raw run just before it, and the median of the pairs' ratios is reported.
    let repeats: usize = env_or("NNP_BENCH_REPEATS", 3);
    let only = std::env::var("NNP_BENCH_RUN").ok();
    let profile = std::env::var("NNP_BENCH_PROFILE").is_ok_and(|p| p == "1");
    for (api, inline, with_tls, label) in runs {
        let tls = with_tls.then_some(tls);
        if only.as_deref().is_some_and(|o| !label.contains(o)) {
            continue;
        }
        if profile {
            for _ in 0..repeats.max(1) {
                let nnp = nnp_stream(msg, count, api, inline, tls);
                println!(
                    "{name:<18} {label:<19} {len:>8} B/frame  NNP {:>11.0} msg/s {:>6.2} GB/s, CPU per message {:.0} ns sending, {:.0} ns receiving (no baseline: NNP_BENCH_PROFILE)",
                    nnp.msgs_per_s, nnp.gb_per_s, nnp.cpu_ns.0, nnp.cpu_ns.1
                );
            }
            continue;
        }
        // Each NNP run beside a raw run and a hand-rolled run, just before.
        let runs: Vec<(Rate, Rate, Rate)> = (0..repeats.max(1))
            .map(|_| {
                (
                    raw_stream(&frame, count, false),
                    raw_stream(&frame, count, true),
                    nnp_stream(msg, count, api, inline, tls),
                )
            })
            .collect();
        // The median of `nnp / base` over the runs, with its run and the range.
        let median = |base: fn(&(Rate, Rate, Rate)) -> &Rate| {
            let mut ratios: Vec<(f64, usize)> = runs
                .iter()
                .enumerate()
                .map(|(i, r)| (r.2.msgs_per_s / base(r).msgs_per_s, i))
                .collect();
            ratios.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (ratio, i) = ratios[ratios.len() / 2];
            (ratio, &runs[i], ratios[0].0, ratios[ratios.len() - 1].0)
        };
        let (ratio, (raw, _, nnp), low, high) = median(|r| &r.0);
        let (hand_ratio, (_, hand, _), hand_low, hand_high) = median(|r| &r.1);
        println!(
            "{name:<18} {label:<19} {len:>8} B/frame  raw {:>11.0} msg/s {:>6.2} GB/s   NNP {:>11.0} msg/s {:>6.2} GB/s   ratio {:.2}x (median of {}; range {:.2}x-{:.2}x)   hand-rolled {:>11.0} msg/s: ratio {:.2}x ({:.2}x-{:.2}x)",
            raw.msgs_per_s,
            raw.gb_per_s,
            nnp.msgs_per_s,
            nnp.gb_per_s,
            ratio,
            runs.len(),
            low,
            high,
            hand.msgs_per_s,
            hand_ratio,
            hand_low,
            hand_high,
        );
        ratios.push((label, ratio));
        // CPU time per message, each side's median over the runs.
        let cpu = |side: fn(&(Rate, Rate, Rate)) -> &Rate| {
            let mut send: Vec<f64> = runs.iter().map(|r| side(r).cpu_ns.0).collect();
            let mut recv: Vec<f64> = runs.iter().map(|r| side(r).cpu_ns.1).collect();
            send.sort_by(f64::total_cmp);
            recv.sort_by(f64::total_cmp);
            (send[send.len() / 2], recv[recv.len() / 2])
        };
        let (raw, hand, nnp) = (cpu(|r| &r.0), cpu(|r| &r.1), cpu(|r| &r.2));
        cpus.push((label, nnp));
        // With a loop thread the writes, reads and checks happen there, uncounted: the NNP
        // figures are then the application threads' alone.
        let whose = if inline {
            ""
        } else {
            " (application threads only: the loop threads' work is not counted)"
        };
        println!(
            "{:<39} CPU ns/message (sending, receiving): raw {:.0}, {:.0}   hand-rolled {:.0}, {:.0}   NNP {:.0}, {:.0}{whose}",
            "", raw.0, raw.1, hand.0, hand.1, nnp.0, nnp.1,
        );
    }
    let ratio_of = |label: &str| ratios.iter().find(|r| r.0 == label).map(|r| r.1);
    for (label, plain) in [
        ("Sender, loop thread, TLS", "Sender, loop thread"),
        ("Sender, inline, TLS", "Sender, inline"),
    ] {
        if let (Some(a), Some(b)) = (ratio_of(label), ratio_of(plain)) {
            println!("{name:<18} {label:<19} {:.2}x plain ({plain})", a / b);
            // The best TLS can do beside this plain run: its CPU per message on each side
            // plus the record layer's least work (one copy and the AEAD), measured here.
            let plain_cpu = cpus.iter().find(|c| c.0 == plain).map(|c| c.1);
            if let (Some((send, recv)), Some(len)) = (plain_cpu, frame_len(msg).ok()) {
                let (seal, open) = record_layer_floor(len);
                let floor = send.max(recv) / (send + seal).max(recv + open);
                println!(
                    "{:<39} floor: one copy and AES-128-GCM alone cost {seal:.0} ns sealing, {open:.0} ns opening a message; with the plain run's CPU at best {floor:.2}x plain",
                    ""
                );
            }
        }
    }
    // What a user who sends one message per call gets, beside the `Sender` of the same
    // engine. The rows above pair each NNP run with raw runs and sit minutes apart, so their
    // quotient carries the raw stream's noise and the machine's drift: here the three are
    // run back to back in each round (`Sender`, plain `send`, node API) and each round's
    // rates are divided directly, the median of the rounds reported.
    let wanted = |label: &str| only.as_deref().is_none_or(|o| label.contains(o));
    let pairs: usize = env_or("NNP_BENCH_PAIRS", 5);
    if profile || pairs == 0 || !wanted("Sender, loop thread") {
        return;
    }
    let mut versus: Vec<(Api, bool, &str, &str)> = Vec::new();
    if wanted("send, loop thread") {
        versus.push((
            Api::PerFrame,
            false,
            "send, loop thread",
            "Sender, loop thread",
        ));
    }
    if matches!(msg, Message::ForwardData { .. }) && wanted("node API") {
        versus.push((Api::Node, false, "node API", "Sender, loop thread"));
    }
    if wanted("send, inline") && wanted("Sender, inline") {
        versus.push((Api::PerFrame, true, "send, inline", "Sender, inline"));
    }
    let mut quotients = vec![Vec::new(); versus.len()];
    for _ in 0..pairs {
        let sender = nnp_stream(msg, count, Api::Batched, false, None).msgs_per_s;
        let sender_inline = versus
            .iter()
            .any(|v| v.1)
            .then(|| nnp_stream(msg, count, Api::Batched, true, None).msgs_per_s);
        for (i, &(api, inline, _, _)) in versus.iter().enumerate() {
            let base = if inline {
                sender_inline.unwrap()
            } else {
                sender
            };
            quotients[i].push(nnp_stream(msg, count, api, inline, None).msgs_per_s / base);
        }
    }
    for ((_, _, label, sender), mut q) in versus.into_iter().zip(quotients) {
        q.sort_by(f64::total_cmp);
        println!(
            "{name:<18} {label:<19} {:.2}x the {sender} (rates in the same round, median of {}; range {:.2}x-{:.2}x)",
            q[q.len() / 2],
            q.len(),
            q[0],
            q[q.len() - 1]
        );
    }
}

/// The least a TLS record layer does per message of `len` bytes, in CPU ns (sealing,
/// opening): copy the plaintext into 16 KiB records and seal them in place with AES-128-GCM;
/// open them in place and copy the plaintext out. Median of 7 rounds of 20 messages.
fn record_layer_floor(len: usize) -> (f64, f64) {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
    const RECORD: usize = 16 * 1024;
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[7; 16]).unwrap());
    let nonce = || Nonce::assume_unique_for_key([1; 12]);
    let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let records = len.div_ceil(RECORD);
    let mut sealed = vec![0u8; len + records * 16];
    let mut out = vec![0u8; len];
    // Each round returns the CPU time of its part that counts.
    let median = |round: &mut dyn FnMut() -> Duration| {
        let mut times: Vec<f64> = (0..7)
            .map(|_| (0..20).map(|_| round()).sum::<Duration>().as_nanos() as f64 / 20.0)
            .collect();
        times.sort_by(f64::total_cmp);
        times[3]
    };
    let seal = median(&mut || {
        let start = thread_cpu();
        for (chunk, record) in plain.chunks(RECORD).zip(sealed.chunks_mut(RECORD + 16)) {
            let (body, tag) = record.split_at_mut(chunk.len());
            body.copy_from_slice(chunk);
            let t = key
                .seal_in_place_separate_tag(nonce(), Aad::empty(), body)
                .unwrap();
            tag.copy_from_slice(t.as_ref());
        }
        thread_cpu() - start
    });
    let pristine = sealed.clone();
    let open = median(&mut || {
        sealed.copy_from_slice(&pristine);
        let start = thread_cpu();
        for (record, piece) in sealed.chunks_mut(RECORD + 16).zip(out.chunks_mut(RECORD)) {
            let opened = key.open_in_place(nonce(), Aad::empty(), record).unwrap();
            piece.copy_from_slice(opened);
        }
        std::hint::black_box(&out);
        thread_cpu() - start
    });
    (seal, open)
}

fn main() {
    let secs: f64 = env_or("NNP_BENCH_SECONDS", 2.0);
    let tls = bench_tls();
    let data = vec![0.5f32; 100];
    let forward = Message::ForwardData {
        layer_id: 0,
        data: Cow::Borrowed(&data),
    };
    run(
        "ForwardData(100)",
        &forward,
        (2_000_000.0 * secs) as usize,
        &tls,
    );
    let values = vec![0.25f32; (1 << 20) / 4];
    let ws = Message::WeightSync(WeightSync {
        layer_id: 0,
        mode: SyncMode::Replace,
        rows: 256,
        cols: 1023,
        offset: 0,
        sample_count: 1,
        values: Cow::Borrowed(&values),
    });
    run("WeightSync(1 MiB)", &ws, (2_000.0 * secs) as usize, &tls);
}
