//! Work is bounded before it is done: a ForwardData batch whose activations would not fit in
//! a frame is refused before any compute or allocation for it. Alone in its test binary, so
//! that the resident memory it measures is its own.

mod common;

use std::time::Duration;

use common::memory::resident_bytes;
use nnp::nn::{HebbianLearningMode, NeuralNetwork};
use nnp::node::{DistributedNetwork, NodeEvent};

#[test]
fn a_batch_whose_answer_would_not_fit_is_refused_before_it_is_computed() {
    // One input, 1,000 outputs: 160,000 rows (a 640 kB request) would answer with 640 MB.
    let net = || NeuralNetwork::with_layers_and_mode(&[1, 1000], 0.1, HebbianLearningMode::Classic);
    let (server, mut server_rx) = DistributedNetwork::new("server", "127.0.0.1", 0, net()).unwrap();
    let addr = server.start_server().unwrap();
    let (client, mut client_rx) = DistributedNetwork::new("client", "127.0.0.1", 0, net()).unwrap();
    let peer = client.connect_to("127.0.0.1", addr.port()).unwrap();
    let request = vec![0.5f32; 160_000];
    // A small batch first, answered, so that every lazily built structure exists.
    client.send_forward_data(peer, 0, &request[..16]).unwrap();
    client.send_forward_data(peer, 0, &request).unwrap();
    let mut outcomes = Vec::new();
    let mut before = 0;
    while outcomes.len() < 2 {
        match server_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("two requests")
        {
            NodeEvent::Message(m) => {
                if outcomes.is_empty() {
                    before = resident_bytes();
                }
                outcomes.push(
                    server
                        .handle_message(&m)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                );
            }
            NodeEvent::PeerDisconnected { cause, .. } => panic!("closed: {cause}"),
            _ => {}
        }
    }
    let after = resident_bytes();
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    let refusal = outcomes[1]
        .as_ref()
        .expect_err("the large batch is refused");
    assert!(refusal.contains("160000 rows"), "{refusal}");
    let grew = after.saturating_sub(before);
    eprintln!(
        "resident memory grew by {} KB for a 640 kB request",
        grew >> 10
    );
    assert!(
        grew < 4 * 640_000,
        "grew by {grew} bytes for a 640 kB request"
    );
    // The sender is told which message and why.
    loop {
        match client_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the refusal")
        {
            NodeEvent::Refused {
                sequence, reason, ..
            } => {
                assert_eq!(sequence, Some(2));
                assert_eq!(&reason, refusal);
                break;
            }
            NodeEvent::PeerDisconnected { cause, .. } => panic!("closed: {cause}"),
            _ => {}
        }
    }
}
