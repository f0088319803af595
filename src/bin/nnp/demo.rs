//! `nnp demo`: three nodes on loopback learn the digits together over NNP.
//!
//! A coordinator and two workers. Each round the workers train on their own half of the data
//! (backprop), send their layers to the coordinator as WeightSync (the second one averaging,
//! weighted by sample counts: federated averaging), and get the averaged model back. Then the
//! coordinator asks a worker to classify test images (ForwardData there and back), a worker
//! sends gradients (BackwardData), a worker shares Hebbian correlations (HebbianData), and the
//! coordinator measures round trips. Everything crosses real TCP connections. Then it runs
//! each learning pattern briefly (`nnp demo federated|pipeline|ensemble` run one alone).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nnp::nn::{one_hot, Activation, Adam, HebbianLearningMode, Loss, NeuralNetwork};
use nnp::node::{DistributedNetwork, HandleOutcome, NodeConfig, NodeEvent, NodeReceiver, PeerId};
use nnp::wire::{Message, MsgType, SyncMode};
use serde_json::json;

use crate::{dataset, CliResult};

/// `nnp demo [--quick] [--rounds N] [--data PATH]`: runs the demo and, with `--json`, prints
/// its report as JSON.
pub(crate) fn demo(
    as_json: bool,
    quick: bool,
    rounds: Option<usize>,
    data: Option<&Path>,
) -> CliResult {
    let options = DemoOptions {
        rounds: rounds.unwrap_or(if quick { 3 } else { 10 }),
        epochs_per_round: if quick { 1 } else { 2 },
        // A progress bar redrawn with `\r` only for a person watching a terminal.
        progress: !quick && std::io::stderr().is_terminal(),
        // With --json, standard output holds the JSON summary alone.
        report_to_stderr: as_json,
        data: match data {
            Some(path) => path.to_path_buf(),
            None => dataset::default_digits_path()?,
        },
    };
    let report = run(&options)?;
    // Then each learning pattern briefly, its report beside the one above.
    crate::report::to_stderr(options.report_to_stderr);
    let (epochs, data) = (if quick { 2 } else { 5 }, Some(options.data.as_path()));
    for (name, run) in [
        (
            "federated learning: a coordinator and three workers",
            crate::demo_federated::demo_federated as fn(bool, usize, Option<&Path>) -> CliResult,
        ),
        (
            "a pipeline: three stages, one layer each",
            crate::demo_pipeline::demo_pipeline,
        ),
        (
            "an ensemble: three members asked together",
            crate::demo_ensemble::demo_ensemble,
        ),
    ] {
        crate::report::report!("\nNNP demo, {name}:");
        run(false, epochs, data)?;
    }
    crate::report::to_stderr(false);
    if as_json {
        println!(
            "{}",
            json!({
                "accuracy_per_round": report.accuracy_per_round,
                "remote_accuracy": report.remote_accuracy,
                "remote_matches_local": report.remote_matches_local,
                "frames_out": report.frames_out, "frames_in": report.frames_in,
                "bytes_out": report.bytes_out, "bytes_in": report.bytes_in,
                "rtt_p50_us": report.rtt_p50_us, "rtt_p99_us": report.rtt_p99_us,
            })
        );
    }
    Ok(())
}

/// How long the demo runs.
#[derive(Debug, Clone)]
struct DemoOptions {
    /// Federated rounds.
    rounds: usize,
    /// Local epochs per round.
    epochs_per_round: usize,
    /// Print a progress bar on standard error.
    progress: bool,
    /// Print the human report on standard error rather than standard output.
    report_to_stderr: bool,
    /// The digits data (`data/digits.csv.gz`).
    data: PathBuf,
}

/// What the demo measured.
#[derive(Debug, Clone)]
struct DemoReport {
    /// Coordinator's test accuracy after each round.
    accuracy_per_round: Vec<f32>,
    /// Accuracy of the test images classified remotely by a worker.
    remote_accuracy: f32,
    /// Whether the remote outputs equal the coordinator's own, bit for bit.
    remote_matches_local: bool,
    /// Frames and bytes the coordinator sent and received.
    frames_out: u64,
    /// Frames received.
    frames_in: u64,
    /// Bytes sent.
    bytes_out: u64,
    /// Bytes received.
    bytes_in: u64,
    /// Heartbeat round trip, p50 and p99, in microseconds.
    rtt_p50_us: f64,
    /// p99.
    rtt_p99_us: f64,
    /// Total time.
    elapsed: Duration,
}

type Node = DistributedNetwork<NeuralNetwork>;

const LAYERS: [usize; 3] = [64, 32, 10];
const CLASSES: usize = 10;

fn network() -> NeuralNetwork {
    NeuralNetwork::builder(&LAYERS)
        .learning_rate(0.1)
        .mode(HebbianLearningMode::Oja)
        .hidden_activation(Activation::Tanh)
        .output_activation(Activation::Softmax)
        .seed(7)
        .build()
        .expect("the demo's layer sizes are valid")
}

fn node(
    name: &str,
    local_samples: u32,
) -> Result<(Arc<Node>, NodeReceiver), Box<dyn std::error::Error>> {
    let config = NodeConfig {
        local_samples,
        ..NodeConfig::default()
    };
    let (node, rx) = DistributedNetwork::with_config(name, "127.0.0.1", 0, network(), config)?;
    Ok((Arc::new(node), rx))
}

/// Waits for the next data message, handling it; connection events are skipped.
fn next_data(
    rx: &mut NodeReceiver,
    node: &Node,
) -> Result<(MsgType, PeerId, HandleOutcome), Box<dyn std::error::Error>> {
    loop {
        let event = rx
            .recv_timeout(Duration::from_secs(20))
            .ok_or("no message within 20 s")?;
        match event {
            NodeEvent::Message(m) => {
                let outcome = node.handle_message(&m)?;
                return Ok((m.msg_type(), m.peer(), outcome));
            }
            NodeEvent::PeerDisconnected { peer, cause } => {
                return Err(format!("peer {peer} left: {cause}").into())
            }
            _ => continue,
        }
    }
}

fn progress(on: bool, done: usize, total: usize, accuracy: f32) {
    if on {
        let width = 30;
        let filled = done * width / total.max(1);
        eprint!(
            "\r  federated rounds [{}{}] {done}/{total}  test accuracy {:.3}",
            "=".repeat(filled),
            " ".repeat(width - filled),
            accuracy
        );
        if done == total {
            eprintln!();
        }
        let _ = std::io::stderr().flush();
    }
}

/// Prints a line of the human report where `options` says (standard output, or standard error
/// with `--json`).
macro_rules! say {
    ($options:expr, $($arg:tt)*) => {
        if $options.report_to_stderr {
            eprintln!($($arg)*)
        } else {
            println!($($arg)*)
        }
    };
}

/// Runs the demo, printing what happens.
fn run(options: &DemoOptions) -> Result<DemoReport, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let data = dataset::digits(&options.data)?;
    let (train, test) = data.split(0.25, 0);
    let half: Vec<usize> = (0..train.len()).collect();
    let (a_rows, b_rows) = half.split_at(train.len() / 2);
    let shard_a = train.select(a_rows);
    let shard_b = train.select(b_rows);

    say!(
        options,
        "NNP demo: three nodes on loopback learn handwritten digits (64-32-10) together"
    );
    let (coordinator, mut coord_rx) = node("coordinator", shard_a.len() as u32)?;
    let addr = coordinator.start_server()?;
    let (worker_a, mut a_rx) = node("worker-a", shard_a.len() as u32)?;
    let (worker_b, mut b_rx) = node("worker-b", shard_b.len() as u32)?;
    let a_to_c = worker_a.connect_to("127.0.0.1", addr.port())?;
    let b_to_c = worker_b.connect_to("127.0.0.1", addr.port())?;
    let (mut c_to_a, mut c_to_b) = (None, None);
    while c_to_a.is_none() || c_to_b.is_none() {
        let event = coord_rx
            .recv_timeout(Duration::from_secs(10))
            .ok_or("workers never arrived")?;
        if let NodeEvent::PeerConnected { peer, info } = event {
            match info.name.as_str() {
                "worker-a" => c_to_a = Some(peer),
                "worker-b" => c_to_b = Some(peer),
                _ => {}
            }
        }
    }
    let (c_to_a, c_to_b) = (c_to_a.ok_or("no worker-a")?, c_to_b.ok_or("no worker-b")?);
    say!(
        options,
        "  coordinator on {addr}; worker-a and worker-b connected (handshakes done)"
    );

    // Federated averaging.
    let mut accuracy_per_round = Vec::new();
    let mut optimizers = [Adam::new(0.005), Adam::new(0.005)];
    let layers = LAYERS.len() - 1;
    for round in 0..options.rounds {
        for ((worker, shard), optimizer) in [(&worker_a, &shard_a), (&worker_b, &shard_b)]
            .into_iter()
            .zip(&mut optimizers)
        {
            let targets = one_hot(&shard.labels, CLASSES)?;
            let mut net = worker.network();
            for _ in 0..options.epochs_per_round {
                net.train_epoch(
                    &shard.inputs,
                    &targets,
                    16,
                    Loss::CrossEntropy,
                    true,
                    optimizer,
                )?;
            }
        }
        for l in 0..layers as u16 {
            worker_a.send_weight_sync(a_to_c, l, SyncMode::Replace)?;
        }
        for l in 0..layers as u16 {
            worker_b.send_weight_sync(b_to_c, l, SyncMode::Average)?;
        }
        for _ in 0..2 * layers {
            next_data(&mut coord_rx, &coordinator)?;
        }
        for l in 0..layers as u16 {
            coordinator.broadcast_weight_sync(l, SyncMode::Replace)?;
        }
        for (rx, worker) in [(&mut a_rx, &worker_a), (&mut b_rx, &worker_b)] {
            for _ in 0..layers {
                next_data(rx, worker)?;
            }
        }
        let accuracy = coordinator.network().accuracy(&test.inputs, &test.labels)?;
        accuracy_per_round.push(accuracy);
        progress(options.progress, round + 1, options.rounds, accuracy);
    }
    say!(options,
        "  federated averaging: {} rounds of WeightSync, test accuracy {:.3} -> {:.3} on {} held-out images",
        options.rounds,
        accuracy_per_round.first().copied().unwrap_or(0.0),
        accuracy_per_round.last().copied().unwrap_or(0.0),
        test.len()
    );

    // Remote inference: ForwardData to worker-a, which answers with its output.
    let samples = test.len().min(100);
    let mut right = 0;
    let mut matches = true;
    for i in 0..samples {
        coordinator.send_forward_data(c_to_a, 0, test.row(i))?;
        let (_, from, outcome) = next_data(&mut a_rx, &worker_a)?;
        let HandleOutcome::Output(output) = outcome else {
            return Err("ForwardData gave no output".into());
        };
        worker_a.send_forward_data(from, layers as u16, &output)?;
        let event = coord_rx
            .recv_timeout(Duration::from_secs(10))
            .ok_or("no answer")?;
        let NodeEvent::Message(m) = event else {
            return Err("unexpected answer".into());
        };
        let Message::ForwardData { data, .. } = m.message() else {
            return Err("unexpected answer".into());
        };
        let local = coordinator.network().forward(test.row(i))?.1;
        matches &= data
            .iter()
            .zip(&local)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        let predicted = data
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(k, _)| k);
        right += usize::from(predicted == test.labels[i]);
    }
    let remote_accuracy = right as f32 / samples as f32;
    say!(options,
        "  ForwardData: worker-a classified {samples} test images for the coordinator: accuracy {remote_accuracy:.3}, outputs {} the coordinator's own",
        if matches { "bit-identical to" } else { "DIFFERENT from" }
    );

    // Gradients: worker-b computes them on a batch and the coordinator applies them.
    let batch = test.select(&(0..32).collect::<Vec<_>>());
    let (loss, grads) = worker_b.network().batch_gradients(
        &batch.inputs,
        &one_hot(&batch.labels, CLASSES)?,
        Loss::CrossEntropy,
    )?;
    let before = coordinator.network().layer_params(1).to_vec();
    worker_b.send_backward_data(b_to_c, 1, grads.layer_gradient_flat(1))?;
    next_data(&mut coord_rx, &coordinator)?;
    let moved = coordinator
        .network()
        .layer_params(1)
        .iter()
        .zip(&before)
        .filter(|(a, b)| a != b)
        .count();
    say!(options, "  BackwardData: worker-b's gradients for layer 1 (batch loss {loss:.3}) moved {moved} of the coordinator's {} parameters", before.len());

    // Hebbian: worker-a learns correlations on its data and shares them with worker-b.
    // Oja's rule at the training rate (0.1) diverges on these activations; 0.01 converges.
    {
        let mut net = worker_a.network();
        let training_rate = net.learning_rate();
        net.set_learning_rate(0.01);
        for i in 0..200 {
            net.hebbian_update(shard_a.row(i))?;
        }
        net.set_learning_rate(training_rate);
    }
    let correlations = worker_a.network().layer_correlations(0).to_vec();
    let b_to_a = worker_b
        .connect_to("127.0.0.1", worker_a.start_server()?.port())
        .ok();
    let _ = b_to_a;
    let a_peers = worker_a.peers();
    let a_to_b = a_peers
        .iter()
        .find(|p| p.info.as_ref().is_some_and(|i| i.name == "worker-b"))
        .map(|p| p.conn);
    let a_to_b = match a_to_b {
        Some(p) => p,
        None => wait_for_peer(&mut a_rx, "worker-b")?,
    };
    worker_a.send_hebbian_data(a_to_b, 0, &correlations, 0.01)?;
    let (_, _, outcome) = next_data(&mut b_rx, &worker_b)?;
    say!(options, "  HebbianData: worker-a shared layer 0's correlations ({} values) with worker-b: {outcome:?}", correlations.len());

    // Round trips.
    for _ in 0..50 {
        coordinator.ping(c_to_a)?;
        coordinator.ping(c_to_b)?;
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(20));
    let m = coordinator.metrics();
    let report = DemoReport {
        accuracy_per_round,
        remote_accuracy,
        remote_matches_local: matches,
        frames_out: m.traffic.frames_out,
        frames_in: m.traffic.frames_in,
        bytes_out: m.traffic.bytes_out,
        bytes_in: m.traffic.bytes_in,
        rtt_p50_us: m.rtt_ns.value_at_quantile(0.5) as f64 / 1e3,
        rtt_p99_us: m.rtt_ns.value_at_quantile(0.99) as f64 / 1e3,
        elapsed: started.elapsed(),
    };
    say!(options,
        "  coordinator traffic: {} frames / {} bytes out, {} frames / {} bytes in; heartbeat round trip p50 {:.1} us, p99 {:.1} us ({} samples)",
        report.frames_out, report.bytes_out, report.frames_in, report.bytes_in, report.rtt_p50_us, report.rtt_p99_us, m.rtt_ns.len()
    );
    for p in coordinator.peers() {
        if let Some(info) = &p.info {
            say!(
                options,
                "    peer {} {:<9} at {}: capabilities {:#04x}, rtt {:?}, {} frames in / {} out",
                p.conn,
                info.name,
                p.addr,
                info.capabilities,
                p.rtt.unwrap_or_default(),
                p.traffic.frames_in,
                p.traffic.frames_out
            );
        }
    }
    worker_a.shutdown();
    worker_b.shutdown();
    coordinator.shutdown();
    say!(options, "  done in {:.2} s", report.elapsed.as_secs_f64());
    Ok(report)
}

fn wait_for_peer(rx: &mut NodeReceiver, name: &str) -> Result<PeerId, Box<dyn std::error::Error>> {
    loop {
        let event = rx
            .recv_timeout(Duration::from_secs(10))
            .ok_or("peer never arrived")?;
        if let NodeEvent::PeerConnected { peer, info } = event {
            if info.name == name {
                return Ok(peer);
            }
        }
    }
}
