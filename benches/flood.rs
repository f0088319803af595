//! A node's round trip to a healthy client while another client floods it: pipelined
//! ForwardData requests written as fast as the socket takes them, answers never read, and a
//! new connection (and flood) as soon as the node cuts the flooder off. Beside the same
//! client's round trip on the quiet node, in the same process; plus how long new clients
//! take to connect during the flood.
//!
//! The node is what `nnp serve` runs: `DistributedNetwork` with its default settings, a
//! loop taking each message, `handle_message`, and `reply`.
//!
//! `cargo bench --bench flood` (NNP_BENCH_SECONDS: the flood's length, 10 by default;
//! NNP_BENCH_ITERS: the quiet round trips, 20,000 by default).

#[path = "common/measure.rs"]
mod measure;

use std::borrow::Cow;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use measure::{env_or, histogram, line};
use nnp::nn::{HebbianLearningMode, NeuralNetwork};
use nnp::node::{DistributedNetwork, HandleOutcome, NodeEvent, NodeReceiver, PeerId};
use nnp::wire::{capabilities, encode_frame, Hello, Message};

/// The environment variable `name` parsed, or `default`.
const LAYERS: [usize; 3] = [64, 32, 10];

fn network() -> NeuralNetwork {
    NeuralNetwork::with_layers_and_mode(&LAYERS, 0.1, HebbianLearningMode::Classic)
}

/// Connects, says hello, and writes pipelined requests until the node closes the connection
/// or `stop` is set; then again, until `stop`. Returns the connections made.
fn flood(addr: SocketAddr, stop: &AtomicBool) -> usize {
    let mut connections = 0;
    let inputs = vec![0.5f32; LAYERS[0]];
    let mut burst = Vec::new();
    // 64 requests, renumbered before each write.
    for k in 0..64u64 {
        let request = Message::ForwardData {
            layer_id: 0,
            data: Cow::Borrowed(&inputs),
        };
        encode_frame(&request, 1 + k, &mut burst).unwrap();
    }
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut socket) = TcpStream::connect(addr) else {
            thread::sleep(Duration::from_millis(1));
            continue;
        };
        connections += 1;
        socket
            .set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut hello = Vec::new();
        let message = Message::Handshake(Hello {
            node_id: 9,
            min_version: 1,
            max_version: 1,
            capabilities: capabilities::ALL,
            layer_sizes: Cow::Owned(vec![LAYERS[0] as u32]),
            name: Cow::Borrowed("flooder"),
        });
        encode_frame(&message, 0, &mut hello).unwrap();
        if socket.write_all(&hello).is_err() {
            continue;
        }
        let frame = burst.len() / 64;
        let (mut sequence, mut written) = (1u64, burst.len());
        while !stop.load(Ordering::Relaxed) {
            if written == burst.len() {
                // Numbered on, as a conforming sender does (a replayed number is refused),
                // and each burst written whole, however many writes it takes.
                for at in (0..burst.len()).step_by(frame) {
                    burst[at + 10..at + 18].copy_from_slice(&sequence.to_be_bytes());
                    sequence += 1;
                }
                written = 0;
            }
            match socket.write(&burst[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break, // cut off by the node
            }
        }
    }
    connections
}

/// One round trip from `client` to the node's `peer`.
fn round_trip(
    client: &DistributedNetwork<NeuralNetwork>,
    events: &mut NodeReceiver,
    peer: PeerId,
    inputs: &[f32],
) -> u64 {
    let start = Instant::now();
    client.send_forward_data(peer, 0, inputs).unwrap();
    loop {
        match events.recv_timeout(Duration::from_secs(60)) {
            Some(NodeEvent::Message(_)) => return start.elapsed().as_nanos().max(1) as u64,
            Some(NodeEvent::PeerDisconnected { cause, .. }) => {
                panic!("healthy client cut off: {cause}")
            }
            Some(_) => {}
            None => panic!("no answer within 60 s"),
        }
    }
}

fn main() {
    let flood_for = Duration::from_secs_f64(env_or("NNP_BENCH_SECONDS", 10.0));
    let quiet_iters: usize = env_or("NNP_BENCH_ITERS", 20_000);

    let (server, server_events) =
        DistributedNetwork::new("server", "127.0.0.1", 0, network()).unwrap();
    let addr = server.start_server().unwrap();
    let server = Arc::new(server);
    let serving = Arc::clone(&server);
    let overloaded = Arc::new(AtomicUsize::new(0));
    let cut = Arc::clone(&overloaded);
    let serve = thread::spawn(move || {
        for event in server_events {
            if let NodeEvent::Message(m) = event {
                if let Ok(HandleOutcome::Output(output)) = serving.handle_message(&m) {
                    if serving.reply(&m, &output).is_err() {
                        cut.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    });

    let (client, mut events) =
        DistributedNetwork::new("healthy", "127.0.0.1", 0, network()).unwrap();
    let peer = client.connect_to("127.0.0.1", addr.port()).unwrap();
    let inputs: Vec<f32> = (0..LAYERS[0]).map(|i| i as f32 / 64.0).collect();
    for _ in 0..quiet_iters / 10 {
        round_trip(&client, &mut events, peer, &inputs);
    }
    let mut quiet = histogram();
    for _ in 0..quiet_iters {
        quiet
            .record(round_trip(&client, &mut events, peer, &inputs))
            .unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let flooding = Arc::clone(&stop);
    let flooder = thread::spawn(move || flood(addr, &flooding));
    let mut flooded = histogram();
    let mut connects = histogram();
    let started = Instant::now();
    let mut next_connect = started;
    let mut newcomers = Vec::new();
    while started.elapsed() < flood_for {
        flooded
            .record(round_trip(&client, &mut events, peer, &inputs))
            .unwrap();
        if Instant::now() >= next_connect {
            // A new client every 250 ms, kept open: it must complete its handshake.
            next_connect += Duration::from_millis(250);
            let (newcomer, newcomer_events) =
                DistributedNetwork::new("newcomer", "127.0.0.1", 0, network()).unwrap();
            let t = Instant::now();
            newcomer
                .connect_to("127.0.0.1", addr.port())
                .expect("a new client completes its handshake during the flood");
            connects
                .record(t.elapsed().as_nanos().max(1) as u64)
                .unwrap();
            newcomers.push((newcomer, newcomer_events));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flood_connections = flooder.join().unwrap();
    let closed = server.metrics().connections_closed;

    println!(
        "# a node ({LAYERS:?}, default settings) answering a healthy client, quiet and while another client floods for {:.0} s without reading",
        flood_for.as_secs_f64()
    );
    line("round trip, quiet", 40, &quiet);
    line("round trip, during the flood", 40, &flooded);
    line("new client's connect, during the flood", 40, &connects);
    println!(
        "flood / quiet: p50 {:.2}x  p99 {:.2}x  p99.9 {:.2}x   flooder connections {flood_connections}, slow-consumer cut-offs {}, connections closed {closed}",
        flooded.value_at_quantile(0.5) as f64 / quiet.value_at_quantile(0.5) as f64,
        flooded.value_at_quantile(0.99) as f64 / quiet.value_at_quantile(0.99) as f64,
        flooded.value_at_quantile(0.999) as f64 / quiet.value_at_quantile(0.999) as f64,
        overloaded.load(Ordering::Relaxed),
    );
    drop(newcomers);
    server.shutdown();
    let _ = serve.join();
}
