//! `nnp demo ensemble`: three member nodes on loopback, each trained on its own third of the
//! digits, asked together; the same as `nnp ensemble train`, `nnp serve` and `nnp ensemble`
//! in separate processes, here on threads of one.

use std::path::Path;
use std::sync::Arc;

use hdrhistogram::Histogram;
use nnp::nn::{argmax, one_hot, Adam, FitConfig, Loss};
use nnp::node::{DistributedNetwork, HandleOutcome, NodeEvent};
use nnp::patterns::ensemble::{Ensemble, EnsembleConfig};
use nnp::patterns::federated::{partition, Partition};
use serde_json::json;

use crate::federated::{digits, network};
use crate::report::report;
use crate::CliResult;

const LAYERS: [usize; 3] = [64, 32, 10];
const MEMBERS: usize = 3;
/// Rows per request.
const BATCH: usize = 64;

/// Trains the members for `epochs`, serves them, and classifies the held-out digits with
/// them, printing a line per request and a closing table.
pub(crate) fn demo_ensemble(as_json: bool, epochs: usize, data: Option<&Path>) -> CliResult {
    let (train, test) = digits(data)?.split(0.25, 0);
    let mut nodes = Vec::new();
    let mut threads = Vec::new();
    let mut addrs = Vec::new();
    for k in 0..MEMBERS {
        let shard = train.select(&partition(&train.labels, k, MEMBERS, Partition::Iid));
        let mut net = network(&LAYERS, 100 + k as u64)?;
        let config = FitConfig {
            epochs,
            batch_size: 16,
            loss: Loss::CrossEntropy,
            shuffle: true,
        };
        net.fit(
            &shard.inputs,
            &one_hot(&shard.labels, 10)?,
            &config,
            &mut Adam::new(0.01),
        )?;
        let (node, events) =
            DistributedNetwork::new(&format!("member-{}", k + 1), "127.0.0.1", 0, net)?;
        addrs.push(node.start_server()?);
        let node = Arc::new(node);
        let serving = Arc::clone(&node);
        threads.push(std::thread::spawn(move || {
            for event in events {
                if let NodeEvent::Message(message) = event {
                    if let Ok(HandleOutcome::Output(out)) = serving.handle_message(&message) {
                        let _ = serving.reply(&message, &out);
                    }
                }
            }
        }));
        nodes.push(node);
        if !as_json {
            report!(
                "member {} on {}: trained {epochs} epochs on {} digits",
                k + 1,
                addrs[k],
                shard.labels.len()
            );
        }
    }
    let mut ensemble = Ensemble::connect(&addrs, EnsembleConfig::default())?;
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut hits, mut member_hits, mut requests) = (0, [0usize; MEMBERS], 0);
    for (r, rows) in test.labels.chunks(BATCH).enumerate() {
        let start = r * BATCH;
        let inputs = &test.inputs[start * 64..(start + rows.len()) * 64];
        let answer = ensemble.predict_rows(inputs, rows.len())?;
        latency_us.saturating_record(answer.elapsed.as_micros() as u64);
        requests += 1;
        let right = answer
            .predictions
            .iter()
            .zip(rows)
            .filter(|(p, l)| p == l)
            .count();
        hits += right;
        for (m, outputs) in answer.members.iter().enumerate() {
            if let Ok(out) = outputs {
                member_hits[m] += out
                    .chunks_exact(10)
                    .zip(rows)
                    .filter(|(o, &l)| argmax(o) == l)
                    .count();
            }
        }
        let ms = answer.elapsed.as_secs_f64() * 1e3;
        if as_json {
            report!(
                "{}",
                json!({"event": "request", "request": requests, "rows": rows.len(),
                       "correct": right, "answered": answer.answered().len(), "ms": ms})
            );
        } else {
            report!(
                "request {requests:>2}: {} rows, {right} right, {} members answered, {ms:.2} ms",
                rows.len(),
                answer.answered().len()
            );
        }
    }
    let metrics = ensemble.node().metrics();
    drop(ensemble);
    for node in &nodes {
        node.shutdown();
    }
    for thread in threads {
        thread.join().map_err(|_| "a member thread panicked")?;
    }
    let n = test.labels.len() as f64;
    let accuracy = hits as f64 / n;
    let members: Vec<f64> = member_hits.iter().map(|&h| h as f64 / n).collect();
    let q = |p: f64| latency_us.value_at_quantile(p) as f64 / 1e3;
    let t = metrics.traffic;
    if as_json {
        report!(
            "{}",
            json!({"event": "summary", "pattern": "ensemble", "accuracy": accuracy,
                   "member_accuracy": members, "requests": requests,
                   "bytes_out": t.bytes_out, "bytes_in": t.bytes_in,
                   "latency_p50_ms": q(0.5), "latency_p99_ms": q(0.99)})
        );
    } else {
        report!("ensemble of {MEMBERS} members, mean of probabilities, {requests} requests:");
        for (m, a) in members.iter().enumerate() {
            report!("  member {}             accuracy {a:.3}", m + 1);
        }
        report!("  ensemble             accuracy {accuracy:.3}");
        report!("{}", crate::report::wire_line(&t));
        report!(
            "  round trip (request to combined answer): p50 {:.2} ms, p99 {:.2} ms",
            q(0.5),
            q(0.99)
        );
    }
    Ok(())
}
