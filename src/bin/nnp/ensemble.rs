//! `nnp ensemble`: asks member nodes (`nnp serve --weights FILE`) to classify the held-out
//! digits, combines their answers, and reports the ensemble's accuracy beside each member's
//! own on the same answers; `nnp ensemble train` trains a member on its shard of the rest
//! and writes its weights file.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use nnp::nn::{one_hot, Adam, FitConfig, Loss};
use nnp::patterns::ensemble::{Combine, Ensemble, EnsembleConfig, EnsembleError};
use nnp::patterns::federated::{partition, Partition};
use serde_json::json;

use crate::federated::{digits, network};
use crate::{explain, CliResult};

/// The seed of the held-out split, as `nnp federated`'s.
const SPLIT_SEED: u64 = 0;
/// The share of the data `nnp ensemble train` holds out, and `nnp ensemble` evaluates on.
const HELD_OUT: f64 = 0.25;

/// What `nnp ensemble train` was asked.
pub(crate) struct TrainArgs<'a> {
    pub(crate) shard: (usize, usize),
    pub(crate) save: &'a Path,
    pub(crate) epochs: usize,
    pub(crate) seed: Option<u64>,
    pub(crate) layers: &'a [usize],
    pub(crate) data: Option<&'a Path>,
}

/// `nnp ensemble train`: a 64-32-10 network (ReLU, softmax, Adam) trained on shard K of N of
/// the digits outside the held-out quarter, saved to `--save`.
pub(crate) fn train(as_json: bool, args: &TrainArgs<'_>) -> CliResult {
    let (k, n) = args.shard;
    let (train, test) = digits(args.data)?.split(HELD_OUT, SPLIT_SEED);
    let shard = train.select(&partition(&train.labels, k - 1, n, Partition::Iid));
    let mut net = network(args.layers, args.seed.unwrap_or(100 + k as u64))?;
    let config = FitConfig {
        epochs: args.epochs,
        batch_size: 16,
        loss: Loss::CrossEntropy,
        shuffle: true,
    };
    let targets = one_hot(&shard.labels, 10)?;
    let losses = net.fit(&shard.inputs, &targets, &config, &mut Adam::new(0.01))?;
    let accuracy = net.accuracy(&test.inputs, &test.labels)?;
    net.save_weights(args.save).map_err(|e| {
        format!(
            "--save: could not write {}: {}",
            args.save.display(),
            match &e {
                nnp::nn::NnError::Io(e) => explain::io(e),
                other => other.to_string(),
            }
        )
    })?;
    let loss = losses.last().copied().unwrap_or(f32::NAN);
    if as_json {
        println!(
            "{}",
            json!({"event": "trained", "shard": format!("{k}/{n}"), "samples": shard.len(),
                   "epochs": args.epochs, "loss": loss, "accuracy": accuracy,
                   "saved": args.save.display().to_string()})
        );
    } else {
        println!(
            "member {k}/{n}: {} samples, {} epochs, loss {loss:.4}, held-out accuracy {accuracy:.3}; saved to {}",
            shard.len(),
            args.epochs,
            args.save.display()
        );
    }
    Ok(())
}

/// What `nnp ensemble` was asked.
pub(crate) struct EnsembleArgs<'a> {
    pub(crate) members: &'a [String],
    pub(crate) deadline: Duration,
    pub(crate) combine: Combine,
    pub(crate) batch: usize,
    pub(crate) held_out: f64,
    pub(crate) data: Option<&'a Path>,
    /// Peer authentication, if asked for.
    pub(crate) auth: Option<std::sync::Arc<nnp::auth::AuthConfig>>,
    pub(crate) tls: &'a crate::tls::TlsClientArgs,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Correct rows out of those answered.
#[derive(Default, Clone, Copy)]
struct Score {
    correct: usize,
    rows: usize,
}

impl Score {
    fn add(&mut self, predictions: impl Iterator<Item = usize>, labels: &[usize]) {
        for (p, &l) in predictions.zip(labels) {
            self.correct += usize::from(p == l);
            self.rows += 1;
        }
    }

    fn accuracy(self) -> f32 {
        if self.rows == 0 {
            0.0
        } else {
            self.correct as f32 / self.rows as f32
        }
    }
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
        .unwrap_or(0)
}

pub(crate) fn ensemble(as_json: bool, args: &EnsembleArgs<'_>) -> CliResult {
    if !(0.0..=1.0).contains(&args.held_out) || args.held_out == 0.0 {
        return Err(format!(
            "--held-out {}: expected a fraction in (0, 1] (1: every row)",
            args.held_out
        )
        .into());
    }
    if args.batch == 0 {
        return Err("--batch 0: expected at least one row per request".into());
    }
    let members: Vec<SocketAddr> = args
        .members
        .iter()
        .map(|m| explain::address("--members", m))
        .collect::<Result<_, _>>()?;
    if members.is_empty() {
        return Err("--members: give at least one HOST:PORT".into());
    }
    let (_, test) = digits(args.data)?.split(args.held_out, SPLIT_SEED);
    let defaults = EnsembleConfig::default();
    let mut config = EnsembleConfig {
        deadline: args.deadline,
        combine: args.combine,
        engine: args.tls.apply(defaults.engine.clone())?,
        ..defaults
    };
    config.engine.session.auth = args.auth.clone();
    let mut ensemble = Ensemble::connect(&members, config)?;

    let mut combined = Score::default();
    let mut each = vec![Score::default(); members.len()];
    let (mut requests, mut incomplete, mut unanswered) = (0usize, 0usize, 0usize);
    let mut latency = Vec::new();
    let width = test.features;
    for (chunk, labels) in test
        .inputs
        .chunks(args.batch * width)
        .zip(test.labels.chunks(args.batch))
    {
        requests += 1;
        match ensemble.predict_rows(chunk, labels.len()) {
            Ok(answer) => {
                latency.push(answer.elapsed);
                incomplete += usize::from(!answer.left_out().is_empty());
                combined.add(answer.predictions.iter().copied(), labels);
                for (score, member) in each.iter_mut().zip(&answer.members) {
                    if let Ok(out) = member {
                        score.add(out.chunks_exact(answer.classes).map(argmax), labels);
                    }
                }
                for (i, why) in answer.left_out() {
                    log::info!("request {requests}: {} left out, {why}", members[i]);
                }
            }
            Err(EnsembleError::NoAnswer { left_out }) => {
                incomplete += 1;
                unanswered += labels.len();
                for (addr, why) in left_out {
                    log::warn!("request {requests}: no answer; {addr} {why}");
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let traffic = ensemble.node().metrics().traffic;
    ensemble.shutdown();

    latency.sort();
    let pick = |q: f64| {
        latency
            .get(((latency.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let (p50, p99, max) = (pick(0.5), pick(0.99), pick(1.0));
    let best = each.iter().map(|s| s.accuracy()).fold(0.0f32, f32::max);
    let combine = args.combine.name();
    // A member that never answered has no accuracy (null, or "-").
    let accuracy = |s: &Score| (s.rows > 0).then(|| s.accuracy());
    let shown = |a: Option<f32>| a.map_or_else(|| "-".to_owned(), |a| format!("{a:.3}"));
    if as_json {
        for (addr, score) in members.iter().zip(&each) {
            println!(
                "{}",
                json!({"event": "member", "member": addr.to_string(),
                       "accuracy": accuracy(score), "rows": score.rows})
            );
        }
        println!(
            "{}",
            json!({
                "event": "summary", "combine": combine, "members": members.len(),
                "accuracy": accuracy(&combined), "rows": combined.rows,
                "best_member_accuracy": best, "held_out": test.len(),
                "requests": requests, "requests_with_left_out": incomplete,
                "unanswered_rows": unanswered, "deadline_ms": ms(args.deadline),
                "latency_p50_ms": ms(p50), "latency_p99_ms": ms(p99), "latency_max_ms": ms(max),
                "bytes_out": traffic.bytes_out, "bytes_in": traffic.bytes_in,
            })
        );
    } else {
        println!(
            "ensemble of {} members, {combine}, deadline {} ms, {} held-out images in {requests} requests:",
            members.len(),
            args.deadline.as_millis(),
            test.len()
        );
        println!("  {:<24} {:>8}  {:>9}", "member", "accuracy", "answered");
        for (addr, score) in members.iter().zip(&each) {
            println!(
                "  {:<24} {:>8}  {:>9}",
                addr.to_string(),
                shown(accuracy(score)),
                format!("{}/{}", score.rows, test.len())
            );
        }
        println!(
            "  {:<24} {:>8}  {:>9}",
            format!("ensemble ({combine})"),
            shown(accuracy(&combined)),
            format!("{}/{}", combined.rows, test.len())
        );
        println!(
            "  requests with a member left out: {incomplete}; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(p50),
            ms(p99),
            ms(max)
        );
        println!(
            "  bytes on the wire: {} out / {} in",
            traffic.bytes_out, traffic.bytes_in
        );
    }
    Ok(())
}
