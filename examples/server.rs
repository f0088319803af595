//! The original design's server: a node that listens, learns from what peers send, and
//! answers ForwardData with its network's output.
//!
//! Run it, then the client in another terminal:
//! `cargo run --example server` / `cargo run --example client`.
//! `RUST_LOG=debug` shows every message, as the original design's logging example does.

use nnp::nn::{HebbianLearningMode, NeuralNetwork};
use nnp::node::{DistributedNetwork, HandleOutcome, NodeEvent};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let network =
        NeuralNetwork::with_layers_and_mode(&[10, 20, 5], 0.1, HebbianLearningMode::Classic);
    let (node, receiver) = DistributedNetwork::new("server", "127.0.0.1", port, network)?;
    let addr = node.start_server()?;
    println!("server listening on {addr}");
    for event in receiver {
        match event {
            NodeEvent::PeerConnected { peer, info } => {
                println!("{} connected from peer {peer}", info.name)
            }
            NodeEvent::PeerDisconnected { peer, cause } => println!("peer {peer} left: {cause}"),
            // A message the network cannot take is refused (the peer is told) and the
            // server carries on.
            NodeEvent::Message(message) => match node.handle_message(&message) {
                Ok(HandleOutcome::Output(output)) => {
                    println!("ForwardData from {}: output {output:?}", message.peer());
                    if let Err(e) = node.send_forward_data(message.peer(), 2, &output) {
                        println!("could not answer {}: {e}", message.peer());
                    }
                }
                Ok(outcome) => println!(
                    "{:?} from {}: {outcome:?}",
                    message.msg_type(),
                    message.peer()
                ),
                Err(e) => println!(
                    "{:?} from {} refused: {e}",
                    message.msg_type(),
                    message.peer()
                ),
            },
            _ => {}
        }
    }
    Ok(())
}
