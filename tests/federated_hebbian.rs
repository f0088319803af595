//! Federated Hebbian learning (`nnp::patterns::hebbian`): three peers, each holding digits of
//! its own classes only, share the Hebbian correlations of their data (HebbianData) and each
//! integrates the others' with its own, so that an Oja layer learns the first principal
//! component of all the data, which no shard alone gives; then the same as three `nnp hebbian`
//! processes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::Processes;
use common::{abs_cosine, load_digits, load_pca};
use nnp::nn::{Activation, HebbianLearningMode, NeuralNetwork};
use nnp::patterns::hebbian::{shard_correlations, HebbianConfig, HebbianPeer};

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
        let r = shard_correlations(net.layer_weights(0), 1, 64, shard);
        net.integrate_correlations(0, &r, ETA / 3.0).unwrap();
    }
    net.layer_weights(0).to_vec()
}

#[test]
fn three_peers_sharing_correlations_find_the_component_no_shard_has() {
    let pca = load_pca();
    let shards = shards();
    let total: usize = shards.iter().map(|s| s.len()).sum();
    let names = ["a", "b", "c"];
    let mut peers: Vec<HebbianPeer> = names
        .iter()
        .zip(&shards)
        .map(|(name, shard)| {
            let config = HebbianConfig {
                learning_rate: ETA,
                share: Some(shard.len() as f32 / total as f32),
                ..HebbianConfig::default()
            };
            HebbianPeer::new(name, "127.0.0.1", 0, oja_layer(), shard.clone(), config).unwrap()
        })
        .collect();
    // A full mesh: each peer connects to those made before it.
    let addrs: Vec<_> = peers.iter().map(HebbianPeer::local_addr).collect();
    for (i, peer) in peers.iter_mut().enumerate() {
        for &addr in &addrs[..i] {
            peer.connect(addr).unwrap();
        }
    }
    let done = std::sync::Arc::new(std::sync::Barrier::new(peers.len()));
    let threads: Vec<_> = peers
        .into_iter()
        .map(|mut peer| {
            let done = std::sync::Arc::clone(&done);
            std::thread::spawn(move || {
                peer.wait_for_peers(2, Duration::from_secs(10)).unwrap();
                for _ in 0..ROUNDS {
                    let round = peer.run_round().unwrap();
                    assert_eq!(round.heard_from.len(), 2, "{round:?}");
                }
                let weights = peer.network().layer_weights(0).to_vec();
                // Leaving waits for the others to finish their last round.
                done.wait();
                peer.shutdown();
                weights
            })
        })
        .collect();
    for (name, thread) in names.iter().zip(threads) {
        let cos = abs_cosine(&thread.join().unwrap(), &pca[0]);
        println!("peer {name}: |cos| with the first principal component of all the data {cos:.4}");
        assert!(cos >= 0.99, "peer {name}: |cos| {cos}");
    }
    // Each shard alone learns its own component, not the whole data's.
    for (k, shard) in shards.iter().enumerate() {
        let cos = abs_cosine(&alone(shard), &pca[0]);
        println!("shard {k} alone: |cos| {cos:.4}");
        assert!(cos < 0.95, "shard {k} alone: |cos| {cos}");
    }
}

#[test]
fn a_peer_that_misses_the_round_timeout_is_left_out_and_counted_later() {
    let shards = shards();
    let config = HebbianConfig {
        round_timeout: Duration::from_millis(300),
        ..HebbianConfig::default()
    };
    let mut a = HebbianPeer::new(
        "a",
        "127.0.0.1",
        0,
        oja_layer(),
        shards[0].clone(),
        config.clone(),
    )
    .unwrap();
    let mut b =
        HebbianPeer::new("b", "127.0.0.1", 0, oja_layer(), shards[1].clone(), config).unwrap();
    b.connect(a.local_addr()).unwrap();
    a.wait_for_peers(1, Duration::from_secs(10)).unwrap();
    b.wait_for_peers(1, Duration::from_secs(10)).unwrap();
    // b has not run its round: a waits the timeout, then carries on without it.
    let first = a.run_round().unwrap();
    assert_eq!(first.missed, ["b"], "{first:?}");
    assert!(first.heard_from.is_empty(), "{first:?}");
    // b's first set, sent now, is the one a integrates in its second round.
    let b_first = b.run_round().unwrap();
    assert_eq!(b_first.heard_from, ["a"], "{b_first:?}");
    let second = a.run_round().unwrap();
    assert_eq!(second.heard_from, ["b"], "{second:?}");
    assert_eq!(second.rate, 0.25, "an equal share of two peers: {second:?}");
}

/// `nnp hebbian --json` holding `classes`, connected to `connect`; its stdout lines.
fn nnp_hebbian(
    classes: &str,
    connect: &[String],
    running: &mut Processes,
) -> std::io::Lines<BufReader<std::process::ChildStdout>> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nnp"));
    command
        .args(["--json", "hebbian", "--classes", classes])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for addr in connect {
        command.args(["--connect", addr]);
    }
    let mut child = command.spawn().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    running.0.push(child);
    lines
}

fn json_line(
    lines: &mut std::io::Lines<BufReader<std::process::ChildStdout>>,
) -> serde_json::Value {
    let line = lines.next().expect("a line").unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn three_peer_processes_find_the_component_of_all_the_digits() {
    let mut running = Processes(Vec::new());
    let mut outputs = Vec::new();
    let mut addrs: Vec<String> = Vec::new();
    for classes in ["0,1,2,3", "4,5,6", "7,8,9"] {
        let mut lines = nnp_hebbian(classes, &addrs, &mut running);
        let listening = json_line(&mut lines);
        assert_eq!(listening["event"], "listening", "{listening}");
        addrs.push(listening["addr"].as_str().unwrap().to_owned());
        outputs.push(lines);
    }
    for mut lines in outputs {
        let summary = json_line(&mut lines);
        println!("{summary}");
        assert_eq!(summary["event"], "summary", "{summary}");
        assert_eq!(summary["missed"], 0, "{summary}");
        let together = summary["cos_with_all_data"].as_f64().unwrap();
        let alone = summary["cos_shard_alone"].as_f64().unwrap();
        assert!(together >= 0.99, "{summary}");
        assert!(alone < together - 0.1, "{summary}");
    }
}
