//! `nnp federated coordinator|worker`: federated learning on the digits, one role per process.
//!
//! The coordinator holds the held-out quarter of the digits and the global model; each worker
//! holds its shard of the other three quarters (`--shard K/N`, evenly or `--noniid`) and never
//! sends a sample, only weights. Both sides split the data the same seeded way, so a worker
//! needs nothing from the coordinator but its address.

use std::path::Path;
use std::time::{Duration, Instant};

use nnp::nn::{Activation, NeuralNetwork};
use nnp::patterns::federated::{
    partition, Aggregator, Coordinator, CoordinatorConfig, Partition, Poison, Worker, WorkerConfig,
};
use serde_json::json;

use crate::{dataset, explain, CliResult};

/// The seed of the held-out split, shared by every role.
const SPLIT_SEED: u64 = 0;
/// The share of the data held out for the coordinator's evaluation.
const HELD_OUT: f64 = 0.25;

/// What `nnp federated coordinator` was asked.
pub(crate) struct CoordinatorArgs<'a> {
    pub(crate) listen: &'a str,
    pub(crate) workers: usize,
    pub(crate) min_workers: usize,
    pub(crate) fraction: f64,
    pub(crate) rounds: usize,
    pub(crate) deadline: Duration,
    pub(crate) pause: Duration,
    pub(crate) aggregator: Aggregator,
    pub(crate) layers: &'a [usize],
    pub(crate) data: Option<&'a Path>,
    /// Peer authentication, if asked for.
    pub(crate) auth: Option<std::sync::Arc<nnp::auth::AuthConfig>>,
}

/// What `nnp federated worker` was asked.
pub(crate) struct WorkerArgs<'a> {
    pub(crate) connect: &'a str,
    pub(crate) shard: (usize, usize),
    pub(crate) noniid: bool,
    pub(crate) epochs: usize,
    pub(crate) proximal_mu: f32,
    pub(crate) poison: Option<Poison>,
    pub(crate) layers: &'a [usize],
    pub(crate) data: Option<&'a Path>,
    /// Peer authentication, if asked for.
    pub(crate) auth: Option<std::sync::Arc<nnp::auth::AuthConfig>>,
    pub(crate) tls: &'a crate::tls::TlsClientArgs,
}

/// The model every role builds: ReLU hidden layers, a softmax output.
pub(crate) fn network(
    layers: &[usize],
    seed: u64,
) -> Result<NeuralNetwork, Box<dyn std::error::Error>> {
    if layers.first() != Some(&64) || layers.last() != Some(&10) {
        return Err(
            format!("--layers {layers:?}: the digits need 64 inputs and 10 outputs").into(),
        );
    }
    Ok(NeuralNetwork::builder(layers)
        .hidden_activation(Activation::Relu)
        .output_activation(Activation::Softmax)
        .seed(seed)
        .build()?)
}

pub(crate) fn digits(data: Option<&Path>) -> Result<dataset::Dataset, Box<dyn std::error::Error>> {
    Ok(match data {
        Some(path) => dataset::digits(path)?,
        None => dataset::digits(&dataset::default_digits_path()?)?,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `nnp federated coordinator`: waits for `--workers`, runs `--rounds`, prints a line per
/// round and a closing table (with --json, a JSON object per line and nothing else).
pub(crate) fn coordinator(as_json: bool, args: &CoordinatorArgs<'_>) -> CliResult {
    let (_, test) = digits(args.data)?.split(HELD_OUT, SPLIT_SEED);
    let addr = explain::address("--listen", args.listen)?;
    let mut config = CoordinatorConfig {
        min_workers: args.min_workers,
        fraction: args.fraction,
        round_deadline: args.deadline,
        aggregator: args.aggregator,
        ..CoordinatorConfig::default()
    };
    config.engine.session.auth = args.auth.clone();
    let mut coordinator = Coordinator::new(
        &addr.ip().to_string(),
        addr.port(),
        network(args.layers, 1)?,
        config,
    )?;
    let bound = coordinator.local_addr();
    if as_json {
        println!(
            "{}",
            json!({"event": "listening", "addr": bound.to_string()})
        );
    } else {
        println!(
            "coordinator listening on {bound}: waiting for {} workers, then {} rounds ({}, deadline {} ms)",
            args.workers,
            args.rounds,
            args.aggregator.name(),
            args.deadline.as_millis()
        );
    }
    coordinator.wait_for_workers(args.workers, Duration::from_secs(60))?;

    let started = Instant::now();
    let mut accuracy = Vec::with_capacity(args.rounds);
    let mut round_times = Vec::with_capacity(args.rounds);
    let mut incomplete = 0;
    for round in 1..=args.rounds {
        let report = coordinator.run_round()?;
        let acc = coordinator.network().accuracy(&test.inputs, &test.labels)?;
        accuracy.push(acc);
        round_times.push(report.duration);
        incomplete += usize::from(!report.left_out.is_empty());
        let names = |c: &[nnp::patterns::federated::Contribution]| -> Vec<String> {
            c.iter().map(|c| c.name.clone()).collect()
        };
        let traffic = coordinator.node().metrics().traffic;
        if as_json {
            println!(
                "{}",
                json!({
                    "event": "round", "round": round, "rounds": args.rounds,
                    "workers": names(&report.contributors), "left_out": names(&report.left_out),
                    "samples": report.contributors.iter().map(|c| c.samples).sum::<u32>(),
                    "aggregated": report.aggregated, "accuracy": acc,
                    "round_ms": ms(report.duration), "joining_ms": ms(report.joining),
                    "bytes_out": traffic.bytes_out, "bytes_in": traffic.bytes_in,
                })
            );
        } else {
            let left_out = if report.left_out.is_empty() {
                String::new()
            } else {
                format!("  left out: {}", names(&report.left_out).join(", "))
            };
            println!(
                "round {round:>3}/{}  workers {}  accuracy {acc:.3}  {:>7.1} ms{}{left_out}",
                args.rounds,
                report.contributors.len(),
                ms(report.duration),
                if report.aggregated {
                    ""
                } else {
                    "  (too few workers: weights kept)"
                },
            );
        }
        if round < args.rounds {
            std::thread::sleep(args.pause);
        }
    }
    let metrics = coordinator.node().metrics();
    coordinator.shutdown();

    let mut sorted = round_times.clone();
    sorted.sort();
    let p50 = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let max = sorted.last().copied().unwrap_or_default();
    let last = accuracy.last().copied().unwrap_or(0.0);
    let best = accuracy.iter().copied().fold(0.0f32, f32::max);
    let t = metrics.traffic;
    if as_json {
        println!(
            "{}",
            json!({
                "event": "summary", "rounds": args.rounds, "aggregator": args.aggregator.name(),
                "accuracy": last, "best_accuracy": best,
                "rounds_with_left_out": incomplete,
                "bytes_out": t.bytes_out, "bytes_in": t.bytes_in,
                "frames_out": t.frames_out, "frames_in": t.frames_in,
                "round_p50_ms": ms(p50), "round_max_ms": ms(max),
                "elapsed_ms": ms(started.elapsed()),
            })
        );
    } else {
        println!(
            "federated learning, {} rounds, {}:",
            args.rounds,
            args.aggregator.name()
        );
        println!(
            "  held-out accuracy    {last:.3} (best {best:.3}, {} images)",
            test.len()
        );
        println!("{}", crate::report::wire_line(&t));
        println!(
            "  round time           p50 {:.1} ms, max {:.1} ms",
            ms(p50),
            ms(max)
        );
        println!("  rounds with a worker left out: {incomplete}");
        println!(
            "  total                {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `nnp federated worker`: trains on its shard every round until the coordinator leaves.
pub(crate) fn worker(as_json: bool, args: &WorkerArgs<'_>) -> CliResult {
    let (k, n) = args.shard;
    let (train, _) = digits(args.data)?.split(HELD_OUT, SPLIT_SEED);
    let how = if args.noniid {
        Partition::LabelSkew { own: 0.8 }
    } else {
        Partition::Iid
    };
    let shard = train.select(&partition(&train.labels, k - 1, n, how));
    let name = format!("worker-{k}");
    let mut config = WorkerConfig {
        epochs: args.epochs,
        proximal_mu: args.proximal_mu,
        poison: args.poison,
        ..WorkerConfig::default()
    };
    config.node.engine.session.auth = args.auth.clone();
    config.node.engine = args.tls.apply(config.node.engine.clone())?;
    let mut worker = Worker::connect(
        &name,
        explain::address("--connect", args.connect)?,
        network(args.layers, 100 + k as u64)?,
        shard.inputs,
        &shard.labels,
        config,
    )?;
    if as_json {
        println!(
            "{}",
            json!({"event": "joined", "worker": name, "samples": shard.labels.len()})
        );
    } else {
        println!(
            "{name}: {} samples, connected to {}",
            shard.labels.len(),
            args.connect
        );
    }
    while let Some(round) = worker.next_round()? {
        if as_json {
            println!(
                "{}",
                json!({"event": "round", "worker": name, "round": round.round,
                       "loss": round.loss, "training_ms": ms(round.training)})
            );
        } else {
            println!(
                "{name}: round {} loss {:.4}, trained in {:.1} ms",
                round.round,
                round.loss,
                ms(round.training)
            );
        }
    }
    Ok(())
}

/// `--shard K/N`: shard K (from 1) of N.
pub(crate) fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("{s:?}: expected K/N with 1 <= K <= N, e.g. 2/3");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (
        k.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if k == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

/// `--fraction F`: the share of the workers asked each round, above 0 and at most 1.
pub(crate) fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!(
            "{s:?}: expected a share above 0 and at most 1, e.g. 0.5"
        )),
    }
}

/// `--poison scale|random`: what a poisoned worker sends instead of its weights.
pub(crate) fn parse_poison(s: &str) -> Result<Poison, String> {
    match s {
        "scale" => Ok(Poison::Scale(-4.0)),
        "random" => Ok(Poison::Random { amplitude: 4.0 }),
        _ => Err(format!(
            "{s:?}: expected scale (weights x -4) or random (uniform in -4..4)"
        )),
    }
}
