//! Federated Hebbian learning: three nodes, each holding digits of its own classes only,
//! share the Hebbian correlations of their data (HebbianData) and each integrates the others'
//! with its own, so that an Oja layer learns the first principal component of all the data,
//! which no shard alone gives.

mod common;

use std::time::Duration;

use common::{abs_cosine, load_digits, load_pca};
use nnp::nn::{Activation, HebbianLearningMode, NeuralNetwork};
use nnp::node::{DistributedNetwork, NodeEvent, NodeReceiver, PeerId};

/// The learning rate each node gives its correlations, and the rounds of exchange.
const ETA: f32 = 0.5;
const ROUNDS: usize = 150;

fn oja_layer() -> NeuralNetwork {
    NeuralNetwork::builder(&[64, 1])
        .hidden_activation(Activation::Linear)
        .output_activation(Activation::Linear)
        .mode(HebbianLearningMode::Oja)
        .learning_rate(ETA)
        .seed(5)
        .build()
        .unwrap()
}

/// `E[y x]` over `rows` (width 64) for the one-unit layer `w`: the HebbianData a node sends.
fn correlations(w: &[f32], rows: &[f32]) -> Vec<f32> {
    let n = rows.len() / 64;
    let mut r = vec![0.0f64; 64];
    for x in rows.chunks_exact(64) {
        let y: f32 = w.iter().zip(x).map(|(a, b)| a * b).sum();
        for (ri, xi) in r.iter_mut().zip(x) {
            *ri += f64::from(y * xi);
        }
    }
    r.iter().map(|v| (*v / n as f64) as f32).collect()
}

/// The globally centred digits dealt by label: 0-3, 4-6, 7-9.
fn shards() -> Vec<Vec<f32>> {
    let d = load_digits();
    let x = d.centred();
    let groups: [&[usize]; 3] = [&[0, 1, 2, 3], &[4, 5, 6], &[7, 8, 9]];
    groups
        .iter()
        .map(|labels| {
            (0..d.len())
                .filter(|&i| labels.contains(&d.y[i]))
                .flat_map(|i| x[i * 64..(i + 1) * 64].to_vec())
                .collect()
        })
        .collect()
}

/// Oja on one shard's correlations alone, as many rounds: the shard's own component.
fn alone(shard: &[f32]) -> Vec<f32> {
    let mut net = oja_layer();
    for _ in 0..ROUNDS * 3 {
        let r = correlations(net.layer_weights(0), shard);
        net.integrate_correlations(0, &r, ETA / 3.0).unwrap();
    }
    net.layer_weights(0).to_vec()
}

/// The next HebbianData message (connection events skipped).
fn next_message(rx: &mut NodeReceiver) -> nnp::node::NetworkMessage {
    loop {
        match rx.recv_timeout(Duration::from_secs(10)).expect("a message") {
            NodeEvent::Message(m) => return m,
            NodeEvent::PeerDisconnected { cause, .. } => panic!("a peer left: {cause}"),
            _ => {}
        }
    }
}

/// Waits for the peer named `name` to connect; its id.
fn accepted(rx: &mut NodeReceiver, name: &str) -> PeerId {
    loop {
        match rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the peer connects")
        {
            NodeEvent::PeerConnected { peer, info } if info.name == name => return peer,
            _ => {}
        }
    }
}

#[test]
fn three_nodes_sharing_correlations_find_the_component_no_shard_has() {
    let pca = load_pca();
    let shards = shards();
    let total: usize = shards.iter().map(|s| s.len()).sum();
    let names = ["a", "b", "c"];
    let mut nodes: Vec<(DistributedNetwork<NeuralNetwork>, NodeReceiver)> = names
        .iter()
        .map(|name| DistributedNetwork::new(name, "127.0.0.1", 0, oja_layer()).unwrap())
        .collect();
    let ports: Vec<u16> = nodes
        .iter()
        .map(|(node, _)| node.start_server().unwrap().port())
        .collect();
    // A full mesh: a connects to b and c, b to c. peers[i][j]: node i's id for node j.
    let mut peers = [[None::<PeerId>; 3]; 3];
    for i in 0..3 {
        for j in i + 1..3 {
            peers[i][j] = Some(nodes[i].0.connect_to("127.0.0.1", ports[j]).unwrap());
            peers[j][i] = Some(accepted(&mut nodes[j].1, names[i]));
        }
    }
    for round in 0..ROUNDS {
        // Each node sends its data's correlations, weighted by its share of the samples,
        // and applies them itself.
        for (i, shard) in shards.iter().enumerate() {
            let node = &nodes[i].0;
            let r = correlations(node.network().layer_weights(0), shard);
            let eta = ETA * shard.len() as f32 / total as f32;
            for peer in peers[i].iter().flatten() {
                node.send_hebbian_data(*peer, 0, &r, eta).unwrap();
            }
            node.network().integrate_correlations(0, &r, eta).unwrap();
        }
        // Then integrates the other two's.
        for (node, rx) in &mut nodes {
            for _ in 0..2 {
                let message = next_message(rx);
                node.handle_message(&message)
                    .unwrap_or_else(|e| panic!("round {round}: {e}"));
            }
        }
    }
    for (name, (node, _)) in names.iter().zip(&nodes) {
        let cos = abs_cosine(node.network().layer_weights(0), &pca[0]);
        println!("node {name}: |cos| with the first principal component of all the data {cos:.4}");
        assert!(cos >= 0.99, "node {name}: |cos| {cos}");
    }
    // Each shard alone learns its own component, not the whole data's.
    for (k, shard) in shards.iter().enumerate() {
        let cos = abs_cosine(&alone(shard), &pca[0]);
        println!("shard {k} alone: |cos| {cos:.4}");
        assert!(cos < 0.95, "shard {k} alone: |cos| {cos}");
    }
}
