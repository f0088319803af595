//! A peer that asks and never reads its answers cannot stall a node for everyone: the node
//! answers without waiting, disconnects the slow consumer (Disconnect OVERLOADED) once its
//! queue is full, and keeps serving the others and accepting new peers, whether it answers
//! one request at a time or in batches.

use std::borrow::Cow;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nnp::net::{EngineConfig, Limits};
use nnp::nn::{HebbianLearningMode, NeuralNetwork};
use nnp::node::{
    BatchConfig, Batcher, DistributedNetwork, HandleOutcome, NodeConfig, NodeEvent, Served,
};
use nnp::wire::{capabilities, encode_frame, Hello, Message};

/// Four inputs, 2,000 outputs: each 38-byte request gets an 8 KB answer.
fn net() -> NeuralNetwork {
    NeuralNetwork::with_layers_and_mode(&[4, 2000], 0.1, HebbianLearningMode::Classic)
}

/// Writes a handshake and then ForwardData requests as fast as the socket takes them, never
/// reading, until the node closes the connection or `stop` is set; returns how many requests
/// A connection to `addr` with a small receive buffer: answers the peer does not read fill
/// it at once, as they would a peer that stopped reading long ago.
fn reluctant_reader(addr: std::net::SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

/// The flooder's handshake, encoded.
fn hello_bytes() -> Vec<u8> {
    let hello = Message::Handshake(Hello {
        node_id: 9,
        min_version: 1,
        max_version: 1,
        capabilities: capabilities::ALL,
        layer_sizes: Cow::Owned(vec![4]),
        name: Cow::Borrowed("flooder"),
    });
    let mut bytes = Vec::new();
    encode_frame(&hello, 0, &mut bytes).unwrap();
    bytes
}

/// went out.
fn flood(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> usize {
    let mut socket = reluctant_reader(addr);
    socket
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    socket.write_all(&hello_bytes()).unwrap();
    let mut sent = 0;
    // A burst is written whole, however many writes it takes: the stream stays valid.
    let (mut burst, mut written) = (Vec::new(), 0);
    while !stop.load(Ordering::Relaxed) {
        if written == burst.len() {
            burst.clear();
            written = 0;
            for k in 0..64u64 {
                let request = Message::ForwardData {
                    layer_id: 0,
                    data: Cow::Borrowed(&[0.5, 0.25, 0.125, 1.0]),
                };
                encode_frame(&request, 1 + sent as u64 + k, &mut burst).unwrap();
            }
            sent += 64;
        }
        match socket.write(&burst[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => break, // closed by the node
        }
    }
    sent
}

#[test]
fn a_peer_that_never_reads_is_disconnected_and_the_others_are_served() {
    never_reading_peer_is_cut_off(false);
}

#[test]
fn a_batching_node_disconnects_a_peer_that_never_reads_and_serves_the_others() {
    never_reading_peer_is_cut_off(true);
}

/// A flooder that never reads and a healthy client against a node answering one request at
/// a time (`handle_message`, `reply`) or in batches (`serve`).
fn never_reading_peer_is_cut_off(batched: bool) {
    let config = NodeConfig {
        engine: EngineConfig::default().threads(1).limits(Limits {
            send_queue_bytes: 256 << 10,
            ..Limits::default()
        }),
        ..NodeConfig::default()
    };
    let (server, rx) =
        DistributedNetwork::with_config("server", "127.0.0.1", 0, net(), config).unwrap();
    let addr = server.start_server().unwrap();
    let server = Arc::new(server);
    let serving = Arc::clone(&server);
    let done = Arc::new(AtomicBool::new(false));
    let serving_done = Arc::clone(&done);
    let serve = std::thread::spawn(move || {
        let done = serving_done;
        let mut overloaded = 0;
        if batched {
            let mut rx = rx;
            let mut batcher = Batcher::new(BatchConfig::default());
            loop {
                match serving.serve(&mut rx, &mut batcher, Duration::from_millis(50)) {
                    Some(Served::Answered(report)) => overloaded += report.unsent.len(),
                    Some(_) => {}
                    None if done.load(Ordering::Relaxed) => break,
                    None => {}
                }
            }
            return overloaded;
        }
        for event in rx {
            if let NodeEvent::Message(m) = event {
                if let Ok(HandleOutcome::Output(output)) = serving.handle_message(&m) {
                    if serving.reply(&m, &output).is_err() {
                        overloaded += 1;
                    }
                }
            }
        }
        overloaded
    });

    let stop = Arc::new(AtomicBool::new(false));
    let flooding = Arc::clone(&stop);
    let flooder = std::thread::spawn(move || flood(addr, flooding));

    // A healthy client, connected while the flood runs, gets every answer.
    std::thread::sleep(Duration::from_millis(200));
    let (client, mut client_rx) = DistributedNetwork::new("client", "127.0.0.1", 0, net()).unwrap();
    let peer = client.connect_to("127.0.0.1", addr.port()).unwrap();
    let started = Instant::now();
    for round in 0..200 {
        client
            .send_forward_data(peer, 0, &[round as f32, 0.0, 1.0, 2.0])
            .unwrap();
        loop {
            match client_rx.recv_timeout(Duration::from_secs(5)) {
                Some(NodeEvent::Message(m)) => {
                    let Message::ForwardData { data, .. } = m.message() else {
                        panic!("an answer")
                    };
                    assert_eq!(data.len(), 2000);
                    break;
                }
                Some(NodeEvent::PeerDisconnected { cause, .. }) => panic!("closed: {cause}"),
                Some(_) => {}
                None => panic!("round {round}: no answer within 5 s while a peer floods"),
            }
        }
    }
    let healthy = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent = flooder.join().unwrap();
    let metrics = server.metrics();
    eprintln!(
        "200 healthy round trips in {healthy:?} while the flooder sent {sent} requests; connections closed: {}",
        metrics.connections_closed
    );
    // The flooder was cut off as a slow consumer; the healthy client is still connected.
    assert!(
        server
            .peers()
            .iter()
            .all(|p| p.info.as_ref().is_none_or(|i| i.name != "flooder")),
        "the flooder is disconnected"
    );
    assert!(server
        .peers()
        .iter()
        .any(|p| p.info.as_ref().is_some_and(|i| i.name == "client")));
    done.store(true, Ordering::Relaxed);
    server.shutdown();
    assert!(
        serve.join().unwrap() >= 1,
        "the slow consumer was refused room at least once"
    );
}

/// A peer cut off as a slow consumer that goes on writing and not reading cannot keep its
/// connection, and the answers queued for it, for ever: once the linger passes with the last
/// frames unwritten, the node drops the connection and the peer's writes fail.
#[test]
fn a_cut_off_peer_that_does_not_read_is_dropped_after_the_linger() {
    let mut engine = EngineConfig::default().threads(1);
    engine.linger = Duration::from_millis(300);
    let config = NodeConfig {
        engine,
        ..NodeConfig::default()
    };
    // Small answers: millions of them queue before the peer is found not to read.
    let network =
        NeuralNetwork::with_layers_and_mode(&[4, 32, 10], 0.1, HebbianLearningMode::Classic);
    let (server, rx) =
        DistributedNetwork::with_config("server", "127.0.0.1", 0, network, config).unwrap();
    let addr = server.start_server().unwrap();
    let server = Arc::new(server);
    let serving = Arc::clone(&server);
    let serve = std::thread::spawn(move || {
        for event in rx {
            if let NodeEvent::Message(m) = event {
                if let Ok(HandleOutcome::Output(output)) = serving.handle_message(&m) {
                    let _ = serving.reply(&m, &output);
                }
            }
        }
    });
    // The flooder never stops by itself: it returns only when its writes fail.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(flood(addr, Arc::new(AtomicBool::new(false))));
    });
    let sent = finished
        .recv_timeout(Duration::from_secs(30))
        .expect("the node drops the connection of a peer that does not read");
    assert!(sent > 0);
    assert!(server
        .peers()
        .iter()
        .all(|p| p.info.as_ref().is_none_or(|i| i.name != "flooder")));
    server.shutdown();
    serve.join().unwrap();
}
