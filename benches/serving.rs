//! Serving ForwardData to many peers: a node with a 784-128-10 network answering each peer's
//! requests in a closed loop (a peer sends its next request when its answer arrives), once
//! one request at a time (receive, `handle_message`, `reply`: the baseline) and once through
//! `DistributedNetwork::serve`, which answers the requests waiting together in one batched
//! pass. The two run alternately in the same process, for 1, 8 and 64 peers; beside them,
//! the batched kernel alone at the batch sizes the node forms (the compute bound).
//!
//! `cargo bench --bench serving`. Variables: NNP_BENCH_REPEATS (pairs of runs per peer
//! count, default 3), NNP_BENCH_SECONDS (each run's measured length, default 1),
//! NNP_BENCH_PEERS (comma-separated peer counts, default 1,8,64), NNP_BENCH_MAX_WAIT_US
//! and NNP_BENCH_MAX_BATCH (`BatchConfig::max_wait` and `max_batch` for the batched runs,
//! default their defaults), NNP_BENCH_ONLY=serve (no compute-bound rows).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nnp::net::{ConnId, Engine, EngineConfig, NetEvent};
use nnp::nn::{Activation, ForwardScratch, NeuralNetwork};
use nnp::node::{BatchConfig, Batcher, DistributedNetwork, HandleOutcome, NodeEvent, Served};
use nnp::wire::Message;

const LAYERS: [usize; 3] = [784, 128, 10];

/// The environment variable `name` parsed, or `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).unwrap()
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// `nnp serve`'s network shape for a classifier: sigmoid hidden layer, softmax output.
fn network() -> NeuralNetwork {
    NeuralNetwork::builder(&LAYERS)
        .output_activation(Activation::Softmax)
        .seed(1)
        .build()
        .unwrap()
}

/// A request's input: varied values, the same for every request.
fn sample(k: usize) -> Vec<f32> {
    (0..LAYERS[0])
        .map(|i| ((i * 7 + k * 13) % 29) as f32 / 29.0)
        .collect()
}

/// CPU time so far of the process (all threads) or of the calling thread.
fn cpu_time(clock: rustix::time::ClockId) -> Duration {
    let t = rustix::time::clock_gettime(clock);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn process_cpu() -> Duration {
    cpu_time(rustix::time::ClockId::ProcessCPUTime)
}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// Receive, `handle_message`, `reply`: one request at a time.
    OneAtATime,
    /// `DistributedNetwork::serve`.
    Batched(BatchConfig),
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::OneAtATime => "one at a time",
            Path::Batched(_) => "batched (serve)",
        }
    }
}

/// What one run measured.
struct Run {
    answers_per_s: f64,
    rtt: Histogram<u64>,
    /// Requests per batch (1 for the one-at-a-time path).
    mean_batch: f64,
    /// Process CPU time over wall time while measuring: how many of the cores were busy.
    cores_busy: f64,
    /// CPU time of the node's serving thread per answer, over the whole run.
    serve_cpu_per_answer: Duration,
}

/// The node's receive loop for `path`, until `stop`; returns (batches, requests) answered
/// and the thread's CPU time.
fn serve_loop(
    node: &DistributedNetwork<NeuralNetwork>,
    mut rx: nnp::node::NodeReceiver,
    path: Path,
    stop: &AtomicBool,
) -> (u64, u64, Duration) {
    let poll = Duration::from_millis(20);
    let (mut batches, mut requests) = (0, 0);
    match path {
        Path::OneAtATime => {
            while !stop.load(Ordering::Relaxed) {
                if let Some(NodeEvent::Message(m)) = rx.recv_timeout(poll) {
                    if let Ok(HandleOutcome::Output(output)) = node.handle_message(&m) {
                        let _ = node.reply(&m, &output);
                        batches += 1;
                        requests += 1;
                    }
                }
            }
        }
        Path::Batched(config) => {
            let mut batcher = Batcher::new(config);
            while !stop.load(Ordering::Relaxed) {
                if let Some(Served::Answered(report)) = node.serve(&mut rx, &mut batcher, poll) {
                    batches += 1;
                    requests += report.answered as u64;
                }
            }
        }
    }
    let cpu = cpu_time(rustix::time::ClockId::ThreadCPUTime);
    (batches, requests, cpu)
}

/// `peers` connections from one client thread (an inline engine), each sending its next
/// request as soon as its answer arrives, for `seconds` after a 200 ms warm-up.
fn serve_run(path: Path, peers: usize, seconds: f64) -> Run {
    let (node, rx) = DistributedNetwork::new("server", "127.0.0.1", 0, network()).unwrap();
    let addr = node.start_server().unwrap();
    let node = Arc::new(node);
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (node, stop) = (Arc::clone(&node), Arc::clone(&stop));
        thread::spawn(move || serve_loop(&node, rx, path, &stop))
    };

    let (client_engine, client, mut crx) = Engine::start(EngineConfig::default().inline()).unwrap();
    let conns: Vec<ConnId> = (0..peers).map(|_| client.connect(addr).unwrap()).collect();
    let data = sample(0);
    let request = Message::ForwardData {
        layer_id: 0,
        data: Cow::Borrowed(&data),
    };
    let wait = Duration::from_secs(5);
    let mut sent_at: HashMap<ConnId, Instant> = HashMap::new();
    for &conn in &conns {
        client.send(conn, &request, wait).unwrap();
        sent_at.insert(conn, Instant::now());
    }
    let mut rtt = histogram();
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(seconds);
    let mut cpu_start = None;
    let mut answers = 0u64;
    let measured = loop {
        match crx.recv_timeout(wait).expect("an answer within 5 s") {
            NetEvent::Frame(frame) => {
                let now = Instant::now();
                let conn = frame.conn();
                assert!(
                    matches!(frame.message(), Ok(Message::ForwardData { ref data, .. }) if data.len() == LAYERS[2]),
                    "an answer of {} values",
                    LAYERS[2]
                );
                drop(frame);
                if now >= start {
                    if cpu_start.is_none() {
                        cpu_start = Some((now, process_cpu()));
                    }
                    rtt.record((now - sent_at[&conn]).as_nanos().max(1) as u64)
                        .unwrap();
                    answers += 1;
                }
                if now >= end {
                    break cpu_start.map(|(t, cpu)| (now - t, process_cpu() - cpu));
                }
                client.send(conn, &request, wait).unwrap();
                sent_at.insert(conn, Instant::now());
            }
            NetEvent::Disconnected { cause, .. } => panic!("closed: {cause}"),
            _ => {}
        }
    };
    let (wall, cpu) = measured.expect("answers while measuring");
    stop.store(true, Ordering::Relaxed);
    client_engine.shutdown();
    let (batches, requests, serve_cpu) = server.join().unwrap();
    node.shutdown();
    Run {
        answers_per_s: answers as f64 / wall.as_secs_f64(),
        rtt,
        mean_batch: requests as f64 / batches.max(1) as f64,
        cores_busy: cpu.as_secs_f64() / wall.as_secs_f64(),
        serve_cpu_per_answer: serve_cpu / requests.max(1) as u32,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn print_run(peers: usize, path: Path, run: &Run) {
    let q = |q: f64| us(run.rtt.value_at_quantile(q));
    println!(
        "  {peers:>3} peers  {:<16} {:>9.0} answers/s  p50 {:>7.1} us  p99 {:>8.1} us  p99.9 {:>8.1} us  batch {:>5.1}  cores busy {:.2}  CPU/answer: process {:>5.1} us, serving thread {:>5.2} us",
        path.label(),
        run.answers_per_s,
        q(0.5),
        q(0.99),
        q(0.999),
        run.mean_batch,
        run.cores_busy,
        run.cores_busy / run.answers_per_s * 1e6,
        run.serve_cpu_per_answer.as_secs_f64() * 1e6,
    );
}

/// Samples per second through the network alone, `batch` rows a pass (1: the single-sample
/// kernels a lone request takes), the median of 9 timed runs. With `two_threads`, a second
/// thread that lives through the run takes the second half of each pass's rows (a barrier
/// hands each pass over and back), as a second forward thread in a node would.
fn compute_bound(batch: usize, two_threads: bool) -> f64 {
    let net = network();
    let inputs: Vec<f32> = (0..batch).flat_map(sample).collect();
    let pass = |scratch: &mut ForwardScratch, rows: &[f32]| {
        if rows.len() == LAYERS[0] {
            net.forward_into(rows, scratch).unwrap().len()
        } else {
            net.forward_batch(rows, scratch).unwrap().len()
        }
    };
    let (first, second) = inputs.split_at(batch / 2 * LAYERS[0]);
    let passes = (20_000 / batch).max(20);
    let barrier = Barrier::new(2);
    let done = AtomicBool::new(false);
    let mut rates = Vec::new();
    thread::scope(|s| {
        if two_threads {
            s.spawn(|| {
                let mut scratch = ForwardScratch::new();
                loop {
                    barrier.wait();
                    if done.load(Ordering::Relaxed) {
                        return;
                    }
                    std::hint::black_box(pass(&mut scratch, second));
                    barrier.wait();
                }
            });
        }
        let mut scratch = ForwardScratch::new();
        for _ in 0..9 {
            let t = Instant::now();
            for _ in 0..passes {
                if two_threads {
                    barrier.wait();
                    std::hint::black_box(pass(&mut scratch, first));
                    barrier.wait();
                } else {
                    std::hint::black_box(pass(&mut scratch, &inputs));
                }
            }
            rates.push((passes * batch) as f64 / t.elapsed().as_secs_f64());
        }
        if two_threads {
            done.store(true, Ordering::Relaxed);
            barrier.wait();
        }
    });
    median(rates)
}

fn main() {
    let repeats: usize = env_or("NNP_BENCH_REPEATS", 3);
    let seconds: f64 = env_or("NNP_BENCH_SECONDS", 1.0);
    let max_wait = Duration::from_micros(env_or("NNP_BENCH_MAX_WAIT_US", 0));
    let peer_counts: Vec<usize> = std::env::var("NNP_BENCH_PEERS")
        .unwrap_or_else(|_| "1,8,64".into())
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let max_batch = env_or("NNP_BENCH_MAX_BATCH", BatchConfig::default().max_batch);
    let batched = Path::Batched(BatchConfig {
        max_batch,
        max_wait,
    });
    println!(
        "serving a {}-{}-{} network over loopback: one client thread, each peer a closed loop; {repeats} alternated pairs of {seconds} s runs per peer count, max_batch {max_batch}, max_wait {max_wait:?}",
        LAYERS[0], LAYERS[1], LAYERS[2]
    );
    for &peers in &peer_counts {
        let (mut rates, mut p50s, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..repeats {
            let one = serve_run(Path::OneAtATime, peers, seconds);
            print_run(peers, Path::OneAtATime, &one);
            let many = serve_run(batched, peers, seconds);
            print_run(peers, batched, &many);
            rates.push(many.answers_per_s / one.answers_per_s);
            let q = |r: &Run, q: f64| r.rtt.value_at_quantile(q) as f64;
            p50s.push(q(&many, 0.5) / q(&one, 0.5));
            p99s.push(q(&many, 0.99) / q(&one, 0.99));
        }
        let range = |v: &[f64]| {
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            format!("{lo:.2}x-{hi:.2}x")
        };
        println!(
            "{peers:>3} peers: batched / one at a time, median of {repeats} pairs: answers/s {:.2}x ({}), p50 {:.2}x ({}), p99 {:.2}x ({})",
            median(rates.clone()),
            range(&rates),
            median(p50s.clone()),
            range(&p50s),
            median(p99s.clone()),
            range(&p99s)
        );
    }
    if std::env::var("NNP_BENCH_ONLY").is_ok_and(|v| v == "serve") {
        return;
    }
    println!("compute bound: the network alone, samples/s (median of 9 runs)");
    for batch in [1, 8, 16, 64] {
        println!(
            "  batch {batch:>2}, 1 thread   {:>9.0} samples/s",
            compute_bound(batch, false)
        );
    }
    for batch in [16, 64] {
        println!(
            "  batch {batch:>2}, 2 threads  {:>9.0} samples/s",
            compute_bound(batch, true)
        );
    }
}
