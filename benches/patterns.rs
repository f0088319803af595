//! Time per federated round against the local training inside it: a coordinator and 3
//! workers (threads of this process, loopback TCP), 64-32-10 on the digits, IID shards,
//! FedAvg, 2 local epochs a round. The baseline, in the same process just before: the same
//! 2 epochs on one shard with no network at all.
//!
//! A round's time runs from the coordinator sending its weights to the new global weights
//! being in place; the training inside it is the slowest worker's. What is left (sending and
//! receiving 2,410 parameters each way per worker, waking the threads, aggregating) is the
//! protocol's share of the round. With fewer cores than workers the trainings cannot all
//! overlap, so the workers' training summed over the cores is printed too: the least a round
//! can take on this machine.
//!
//! Then pipeline training against the same network trained in one process: three stages
//! (threads of this process, loopback TCP, `nnp::patterns::pipeline`), one layer each of
//! 64-32-16-10, SGD on batches of 32 in 4 micro-batches, GPipe and 1F1B; the baseline, just
//! before, is `train_epoch` on the whole network with the same batches. Each pipeline step
//! carries every micro-batch's activations and gradients through the driver and back, and
//! each stage's weights (WeightSync) back to the driver; the stages also run their forward
//! pass again in the backward pass.
//!
//! `cargo bench --bench patterns`. Variables: NNP_BENCH_ROUNDS (measured rounds, default
//! 200, after 10 unmeasured), NNP_BENCH_EPOCHS (local epochs a round, default 2),
//! NNP_BENCH_PIPELINE_EPOCHS (measured epochs per pipeline run, default 5, after 1
//! unmeasured), NNP_BENCH_PATTERN (`federated`, `pipeline` or both, the default).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nnp::nn::{one_hot, Activation, Adam, Loss, NeuralNetwork, Sgd};
use nnp::patterns::federated::{
    partition, Aggregator, Coordinator, CoordinatorConfig, Partition, Worker, WorkerConfig,
};
use nnp::patterns::pipeline::{Driver, DriverConfig, Schedule, Stage, StageConfig};

const WORKERS: usize = 3;
const WARM_UP: usize = 10;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn network(seed: u64) -> NeuralNetwork {
    NeuralNetwork::builder(&[64, 32, 10])
        .hidden_activation(Activation::Relu)
        .output_activation(Activation::Softmax)
        .seed(seed)
        .build()
        .unwrap()
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn row(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<44} p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    );
}

fn main() {
    let pattern = std::env::var("NNP_BENCH_PATTERN").unwrap_or_default();
    if pattern != "pipeline" {
        federated();
    }
    if pattern != "federated" {
        pipeline();
    }
}

fn pipeline_network() -> NeuralNetwork {
    NeuralNetwork::builder(&[64, 32, 16, 10])
        .hidden_activation(Activation::Relu)
        .output_activation(Activation::Softmax)
        .seed(1)
        .build()
        .unwrap()
}

/// Samples per second: `samples` in `took`.
fn rate(samples: usize, took: Duration) -> f64 {
    samples as f64 / took.as_secs_f64().max(1e-9)
}

fn pipeline() {
    const BATCH: usize = 32;
    let epochs: usize = env_or("NNP_BENCH_PIPELINE_EPOCHS", 5);
    let d = common::load_digits();
    let (train, _) = common::stratified_split(&d.y, 3);
    let order: Vec<usize> = common::permutation(train.len(), 7)
        .into_iter()
        .map(|i| train[i])
        .collect();
    let (x, y) = d.select(&order);
    let t = one_hot(&y, 10).unwrap();
    let n = y.len();
    println!(
        "## pipeline vs one process: 3 stages of 64-32-16-10, SGD, batches of {BATCH} in 4 micro-batches, {epochs} epochs of {n} samples"
    );
    let config = StageConfig::default();
    let mut local = pipeline_network();
    let mut sgd = Sgd::new(config.learning_rate, config.momentum);
    let mut alone = Duration::ZERO;
    for e in 0..=epochs {
        let started = Instant::now();
        local
            .train_epoch(&x, &t, BATCH, Loss::CrossEntropy, false, &mut sgd)
            .unwrap();
        if e > 0 {
            alone += started.elapsed();
        }
    }
    let alone_rate = rate(n * epochs, alone);
    println!(
        "{:<44} {alone_rate:>10.0} samples/s",
        "one process (baseline)"
    );
    for schedule in [Schedule::GPipe, Schedule::OneFOneB] {
        let net = pipeline_network();
        let (addrs, threads): (Vec<_>, Vec<_>) = [0..1, 1..2, 2..3]
            .into_iter()
            .map(|layers| {
                let mut stage = Stage::bind("127.0.0.1:0", &net, layers, config.clone()).unwrap();
                let addr = stage.local_addr();
                (
                    addr,
                    std::thread::spawn(move || stage.serve_driver().unwrap()),
                )
            })
            .unzip();
        let driver_config = DriverConfig {
            schedule,
            micro_batches: 4,
            ..DriverConfig::default()
        };
        let mut driver = Driver::connect(&addrs, driver_config).unwrap();
        let mut steps = histogram();
        let (mut took, mut bubble, mut ideal, mut count) = (Duration::ZERO, 0.0, 0.0, 0);
        let before = driver.node().metrics().traffic;
        for e in 0..=epochs {
            let started = Instant::now();
            for start in (0..n).step_by(BATCH) {
                let end = (start + BATCH).min(n);
                let report = driver
                    .step(&x[start * 64..end * 64], &t[start * 10..end * 10])
                    .unwrap();
                if e > 0 {
                    steps.record(report.duration.as_nanos() as u64).unwrap();
                    bubble += report.bubble;
                    ideal += report.ideal_bubble;
                    count += 1;
                }
            }
            if e > 0 {
                took += started.elapsed();
            }
        }
        let traffic = driver.node().metrics().traffic;
        driver.shutdown();
        for thread in threads {
            thread.join().unwrap();
        }
        let piped = rate(n * epochs, took);
        let name = format!("pipeline, {}", schedule.name());
        println!(
            "{name:<44} {piped:>10.0} samples/s ({:.2}x one process)",
            piped / alone_rate
        );
        row(&format!("  {} step", schedule.name()), &steps);
        println!(
            "  bubble {:.3} measured, {:.3} ideal; driver traffic {:.1} KB out, {:.1} KB in per step",
            bubble / count as f64,
            ideal / count as f64,
            (traffic.bytes_out - before.bytes_out) as f64 / ((epochs + 1) * n.div_ceil(BATCH)) as f64 / 1e3,
            (traffic.bytes_in - before.bytes_in) as f64 / ((epochs + 1) * n.div_ceil(BATCH)) as f64 / 1e3,
        );
    }
}

fn federated() {
    let rounds: usize = env_or("NNP_BENCH_ROUNDS", 200);
    let epochs: usize = env_or("NNP_BENCH_EPOCHS", 2);
    let d = common::load_digits();
    let (train, _) = common::stratified_split(&d.y, 3);
    let labels: Vec<usize> = train.iter().map(|&i| d.y[i]).collect();
    let shards: Vec<(Vec<f32>, Vec<usize>)> = (0..WORKERS)
        .map(|k| {
            let mine: Vec<usize> = partition(&labels, k, WORKERS, Partition::Iid)
                .into_iter()
                .map(|j| train[j])
                .collect();
            d.select(&mine)
        })
        .collect();
    println!(
        "## federated round vs the local training inside it: {WORKERS} workers, 64-32-10, {epochs} epochs of ~{} samples a round, {rounds} rounds",
        shards[0].1.len()
    );

    // Baseline: the same local training alone.
    let (x, y) = &shards[0];
    let targets = one_hot(y, 10).unwrap();
    let mut alone = network(5);
    let mut adam = Adam::new(0.01);
    let mut local = histogram();
    for i in 0..WARM_UP + rounds {
        let started = Instant::now();
        for _ in 0..epochs {
            alone
                .train_epoch(x, &targets, 16, Loss::CrossEntropy, true, &mut adam)
                .unwrap();
        }
        if i >= WARM_UP {
            local.record(started.elapsed().as_nanos() as u64).unwrap();
        }
    }

    let config = CoordinatorConfig {
        min_workers: WORKERS,
        aggregator: Aggregator::FedAvg,
        ..CoordinatorConfig::default()
    };
    let mut coordinator = Coordinator::new("127.0.0.1", 0, network(1), config).unwrap();
    let addr = coordinator.local_addr();
    let workers: Vec<_> = shards
        .into_iter()
        .enumerate()
        .map(|(k, (x, y))| {
            std::thread::spawn(move || {
                let config = WorkerConfig {
                    epochs,
                    ..WorkerConfig::default()
                };
                let mut worker = Worker::connect(
                    &format!("w{k}"),
                    addr,
                    network(10 + k as u64),
                    x,
                    &y,
                    config,
                )
                .unwrap();
                let mut training = Vec::new();
                while let Some(round) = worker.next_round().unwrap() {
                    training.push(round.training);
                }
                training
            })
        })
        .collect();
    coordinator
        .wait_for_workers(WORKERS, Duration::from_secs(10))
        .unwrap();
    let mut round_times = Vec::new();
    let bytes_before = coordinator.node().metrics().traffic;
    for i in 0..WARM_UP + rounds {
        let report = coordinator.run_round().unwrap();
        assert_eq!(report.contributors.len(), WORKERS);
        if i >= WARM_UP {
            round_times.push(report.duration);
        }
    }
    let traffic = coordinator.node().metrics().traffic;
    coordinator.shutdown();
    let training: Vec<Vec<Duration>> = workers.into_iter().map(|w| w.join().unwrap()).collect();

    let (mut round_h, mut inside_h, mut share_h) = (histogram(), histogram(), histogram());
    let mut summed_h = histogram();
    for (r, round) in round_times.iter().enumerate() {
        let slowest = training
            .iter()
            .map(|t| t[WARM_UP + r])
            .max()
            .unwrap_or_default();
        let summed: Duration = training.iter().map(|t| t[WARM_UP + r]).sum();
        summed_h.record(summed.as_nanos() as u64).unwrap();
        round_h.record(round.as_nanos() as u64).unwrap();
        inside_h.record(slowest.as_nanos() as u64).unwrap();
        let share = 1.0 - slowest.as_secs_f64() / round.as_secs_f64().max(1e-9);
        // Per mille, so the histogram holds it.
        share_h
            .record((share.max(0.0) * 1000.0) as u64 + 1)
            .unwrap();
    }
    row("local training alone (baseline)", &local);
    row("federated round", &round_h);
    row("slowest worker's training inside the round", &inside_h);
    // With fewer cores than workers the trainings cannot all overlap: their sum over the
    // cores is the least a round can take.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    row("the workers' training summed", &summed_h);
    println!(
        "{cores} cores: summed training / cores, p50 {:.3} ms",
        ms(summed_h.value_at_quantile(0.5)) / cores.min(WORKERS) as f64
    );
    println!(
        "protocol's share of a round (1 - training / round): p50 {:.1}%, p99 {:.1}%",
        (share_h.value_at_quantile(0.5) - 1) as f64 / 10.0,
        (share_h.value_at_quantile(0.99) - 1) as f64 / 10.0
    );
    println!(
        "round p50 / training alone p50: {:.2}x; coordinator traffic {:.1} KB out, {:.1} KB in per round",
        round_h.value_at_quantile(0.5) as f64 / local.value_at_quantile(0.5) as f64,
        (traffic.bytes_out - bytes_before.bytes_out) as f64 / (WARM_UP + rounds) as f64 / 1e3,
        (traffic.bytes_in - bytes_before.bytes_in) as f64 / (WARM_UP + rounds) as f64 / 1e3,
    );
}
