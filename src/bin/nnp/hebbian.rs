//! `nnp hebbian`: one peer of a federated Hebbian mesh on the digits, one peer per process.
//!
//! Each peer holds the digits of some classes (`--classes`), centred by the whole set's mean
//! (assumed known to every peer, as a first federated averaging round would give it), and an
//! Oja layer (Sanger for more than one unit). Peers connect to those started before them
//! (`--connect`), then share the correlations of their shard every round. At the end each
//! prints how close its first unit came to the first principal component of all the digits,
//! beside what its shard alone gives.

use std::path::Path;
use std::time::{Duration, Instant};

use nnp::nn::{Activation, HebbianLearningMode, NeuralNetwork};
use nnp::patterns::hebbian::{shard_correlations, HebbianConfig, HebbianPeer};
use serde_json::json;

use crate::{explain, federated, CliResult};

/// What `nnp hebbian` was asked.
pub(crate) struct HebbianArgs<'a> {
    pub(crate) listen: &'a str,
    pub(crate) connect: &'a [String],
    pub(crate) peers: usize,
    pub(crate) classes: &'a [usize],
    pub(crate) units: usize,
    pub(crate) rounds: usize,
    pub(crate) learning_rate: f32,
    pub(crate) share: Option<f32>,
    pub(crate) data: Option<&'a Path>,
    /// Peer authentication, if asked for.
    pub(crate) auth: Option<std::sync::Arc<nnp::auth::AuthConfig>>,
}

pub(crate) fn run(as_json: bool, args: &HebbianArgs<'_>) -> CliResult {
    let digits = federated::digits(args.data)?;
    let width = digits.features;
    let centred = centre(&digits.inputs, width);
    let shard: Vec<f32> = (0..digits.len())
        .filter(|&i| args.classes.contains(&digits.labels[i]))
        .flat_map(|i| centred[i * width..(i + 1) * width].to_vec())
        .collect();
    if shard.is_empty() {
        return Err(format!("--classes {:?}: no digit of these classes", args.classes).into());
    }
    let samples = shard.len() / width;
    let share = args.share.unwrap_or(samples as f32 / digits.len() as f32);
    let name = format!(
        "hebbian-{}",
        args.classes
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("")
    );
    let (host, port) = explain::address("--listen", args.listen).map(|a| (a.ip(), a.port()))?;
    let mut config = HebbianConfig {
        learning_rate: args.learning_rate,
        share: Some(share),
        ..HebbianConfig::default()
    };
    config.node.engine.session.auth = args.auth.clone();
    let mut peer = HebbianPeer::new(
        &name,
        &host.to_string(),
        port,
        layer(width, args.units, args.learning_rate)?,
        shard.clone(),
        config,
    )?;
    if as_json {
        println!(
            "{}",
            json!({"event": "listening", "peer": name, "addr": peer.local_addr().to_string(),
                   "samples": samples, "share": share})
        );
    } else {
        println!(
            "{name}: listening on {} with {samples} digits of classes {:?}",
            peer.local_addr(),
            args.classes
        );
    }
    for addr in args.connect {
        peer.connect(explain::address("--connect", addr)?)?;
    }
    peer.wait_for_peers(args.peers, Duration::from_secs(30))?;
    let started = Instant::now();
    let mut missed = 0;
    for _ in 0..args.rounds {
        let round = peer.run_round()?;
        missed += round.missed.len();
        if !as_json && (round.round % 25 == 0 || round.round == args.rounds) {
            println!(
                "{name}: round {} with {} peers, {} missed",
                round.round,
                round.heard_from.len(),
                round.missed.len()
            );
        }
    }
    let elapsed = started.elapsed();
    let learned = peer.network().layer_weights(0)[..width].to_vec();
    let traffic = peer.node().metrics().traffic;
    peer.shutdown();

    let component = first_component(&centred, width);
    let together = abs_cosine(&learned, &component);
    let alone = abs_cosine(&alone(&shard, width, args), &component);
    if as_json {
        println!(
            "{}",
            json!({"event": "summary", "peer": name, "rounds": args.rounds,
                   "cos_with_all_data": together, "cos_shard_alone": alone,
                   "missed": missed, "bytes_out": traffic.bytes_out, "bytes_in": traffic.bytes_in,
                   "seconds": elapsed.as_secs_f64()})
        );
    } else {
        println!(
            "{name}: after {} rounds in {:.2} s",
            args.rounds,
            elapsed.as_secs_f64()
        );
        println!("  |cos| with the first principal component of all the digits:");
        println!("    learned with the peers   {together:.4}");
        println!("    this shard alone         {alone:.4}");
        println!(
            "  bytes on the wire        {} out / {} in; sets missed {missed}",
            traffic.bytes_out, traffic.bytes_in
        );
    }
    Ok(())
}

/// The peer's layer: `width -> units`, linear, Oja for one unit and Sanger for more.
fn layer(
    width: usize,
    units: usize,
    rate: f32,
) -> Result<NeuralNetwork, Box<dyn std::error::Error>> {
    let mode = if units == 1 {
        HebbianLearningMode::Oja
    } else {
        HebbianLearningMode::Sanger
    };
    Ok(NeuralNetwork::builder(&[width, units])
        .hidden_activation(Activation::Linear)
        .output_activation(Activation::Linear)
        .mode(mode)
        .learning_rate(rate)
        .seed(5)
        .build()?)
}

/// The shard's own first unit: the same rounds on its correlations alone.
fn alone(shard: &[f32], width: usize, args: &HebbianArgs<'_>) -> Vec<f32> {
    let Ok(mut net) = layer(width, args.units, args.learning_rate) else {
        return vec![0.0; width];
    };
    let (rows, cols) = net.layer_shape(0);
    for _ in 0..args.rounds * 3 {
        let r = shard_correlations(net.layer_weights(0), rows, cols, shard);
        if net
            .integrate_correlations(0, &r, args.learning_rate / 3.0)
            .is_err()
        {
            break;
        }
    }
    net.layer_weights(0)[..width].to_vec()
}

/// The rows minus their mean.
fn centre(rows: &[f32], width: usize) -> Vec<f32> {
    let n = rows.len() / width;
    let mut mean = vec![0.0f64; width];
    for row in rows.chunks_exact(width) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v) / n as f64;
        }
    }
    rows.chunks_exact(width)
        .flat_map(|row| row.iter().zip(&mean).map(|(&v, &m)| v - m as f32))
        .collect()
}

/// The first principal component of centred rows, by power iteration on their covariance.
fn first_component(rows: &[f32], width: usize) -> Vec<f32> {
    let n = rows.len() / width;
    let mut cov = vec![0.0f64; width * width];
    for row in rows.chunks_exact(width) {
        for (i, &a) in row.iter().enumerate() {
            for (j, &b) in row.iter().enumerate() {
                cov[i * width + j] += f64::from(a) * f64::from(b) / n as f64;
            }
        }
    }
    let mut v = vec![1.0f64; width];
    for _ in 0..500 {
        let next: Vec<f64> = cov
            .chunks_exact(width)
            .map(|row| row.iter().zip(&v).map(|(c, x)| c * x).sum())
            .collect();
        let norm = next
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt()
            .max(f64::MIN_POSITIVE);
        v = next.into_iter().map(|x| x / norm).collect();
    }
    v.into_iter().map(|x| x as f32).collect()
}

fn abs_cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    (dot / (norm(a) * norm(b)).max(f64::MIN_POSITIVE)).abs()
}
