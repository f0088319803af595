//! The original design's client: connects to the example server, sends forward data and
//! Hebbian correlations, and prints the server's answer.
//!
//! `cargo run --example server` first, then `cargo run --example client`.

use std::time::Duration;

use nnp::nn::{HebbianLearningMode, NeuralNetwork};
use nnp::node::{DistributedNetwork, NodeEvent};
use nnp::wire::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let network =
        NeuralNetwork::with_layers_and_mode(&[10, 20, 5], 0.1, HebbianLearningMode::Classic);
    let (node, mut receiver) = DistributedNetwork::new("client", "127.0.0.1", 0, network)?;
    let peer = node.connect_to("127.0.0.1", port)?;
    println!("connected to the server as peer {peer}");

    // Forward activations: the server runs its network on them and answers with the output.
    let input: Vec<f32> = (0..10).map(|i| i as f32 / 10.0).collect();
    node.send_forward_data(peer, 0, &input)?;
    let reply = loop {
        let event = receiver
            .recv_timeout(Duration::from_secs(5))
            .ok_or("no answer from the server")?;
        if let NodeEvent::Message(message) = event {
            if let Message::ForwardData { data, .. } = message.message() {
                break data.to_vec();
            }
        }
    };
    println!("server's output for {input:?}: {reply:?}");

    // Hebbian correlations of layer 0, learnt locally, integrated by the server.
    for k in 0..100 {
        let x: Vec<f32> = (0..10).map(|i| ((i * k) % 7) as f32 / 7.0).collect();
        node.network().hebbian_update(&x)?;
    }
    let correlations = node.network().layer_correlations(0).to_vec();
    node.send_hebbian_data(peer, 0, &correlations, 0.01)?;
    println!(
        "sent layer 0's correlations ({} values)",
        correlations.len()
    );

    for p in node.peers() {
        println!(
            "peer {} at {}: {:?}",
            p.conn,
            p.addr,
            p.info.map(|i| i.name)
        );
    }
    node.disconnect(peer);
    std::thread::sleep(Duration::from_millis(50));
    Ok(())
}
