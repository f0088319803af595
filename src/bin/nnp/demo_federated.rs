//! `nnp demo federated`: a coordinator and three workers on loopback, each worker holding
//! mostly its own digits (label-skewed shards); the same as `nnp federated coordinator|worker`
//! in separate processes, here on threads of one.

use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use nnp::patterns::federated::{
    partition, Coordinator, CoordinatorConfig, Partition, Worker, WorkerConfig,
};
use serde_json::json;

use crate::federated::{digits, network};
use crate::report::report;
use crate::CliResult;

const LAYERS: [usize; 3] = [64, 32, 10];
const WORKERS: usize = 3;

/// Runs `rounds` federated rounds, printing a line per round and a closing table.
pub(crate) fn demo_federated(as_json: bool, rounds: usize, data: Option<&Path>) -> CliResult {
    let (train, test) = digits(data)?.split(0.25, 0);
    let config = CoordinatorConfig {
        min_workers: WORKERS,
        ..CoordinatorConfig::default()
    };
    let mut coordinator = Coordinator::new("127.0.0.1", 0, network(&LAYERS, 1)?, config)?;
    let addr = coordinator.local_addr();
    let mut workers = Vec::new();
    for k in 0..WORKERS {
        let shard = train.select(&partition(
            &train.labels,
            k,
            WORKERS,
            Partition::LabelSkew { own: 0.8 },
        ));
        let net = network(&LAYERS, 100 + k as u64)?;
        let config = WorkerConfig {
            epochs: 2,
            ..WorkerConfig::default()
        };
        workers.push(std::thread::spawn(move || -> Result<usize, String> {
            let name = format!("worker-{}", k + 1);
            let mut worker = Worker::connect(&name, addr, net, shard.inputs, &shard.labels, config)
                .map_err(|e| e.to_string())?;
            worker.run().map_err(|e| e.to_string())
        }));
    }
    if !as_json {
        report!(
            "coordinator on {addr}, {WORKERS} workers on label-skewed shards of the digits (64-32-10, 2 local epochs a round)"
        );
    }
    coordinator.wait_for_workers(WORKERS, Duration::from_secs(10))?;
    let mut round_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut accuracy = 0.0;
    for round in 1..=rounds {
        let report = coordinator.run_round()?;
        accuracy = coordinator.network().accuracy(&test.inputs, &test.labels)?;
        round_us.saturating_record(report.duration.as_micros() as u64);
        let ms = report.duration.as_secs_f64() * 1e3;
        if as_json {
            report!(
                "{}",
                json!({"event": "round", "round": round, "accuracy": accuracy,
                       "workers": report.contributors.len(), "round_ms": ms})
            );
        } else {
            report!(
                "round {round:>3}/{rounds}  workers {}  accuracy {accuracy:.3}  {ms:>6.1} ms",
                report.contributors.len()
            );
        }
    }
    let metrics = coordinator.node().metrics();
    coordinator.shutdown();
    for worker in workers {
        worker.join().map_err(|_| "a worker thread panicked")??;
    }
    let t = metrics.traffic;
    let q = |p: f64| round_us.value_at_quantile(p) as f64 / 1e3;
    if as_json {
        report!(
            "{}",
            json!({"event": "summary", "pattern": "federated", "accuracy": accuracy,
                   "rounds": rounds, "bytes_out": t.bytes_out, "bytes_in": t.bytes_in,
                   "round_p50_ms": q(0.5), "round_p99_ms": q(0.99)})
        );
    } else {
        report!("federated learning, {WORKERS} workers, {rounds} rounds, fedavg:");
        report!(
            "  held-out accuracy    {accuracy:.3} ({} images)",
            test.len()
        );
        report!("{}", crate::report::wire_line(&t));
        report!(
            "  round trip (weights out, trained weights back): p50 {:.2} ms, p99 {:.2} ms",
            q(0.5),
            q(0.99)
        );
    }
    Ok(())
}
