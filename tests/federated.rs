//! Federated learning over real sockets on loopback: a coordinator and workers on threads
//! (the library), then as separate `nnp` processes (the command line), on the digits set.

mod common;

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use common::process::Processes;
use common::proxy::{Faults, Proxy};
use common::{load_digits, stratified_split, Digits};
use nnp::nn::{Activation, NeuralNetwork};
use nnp::node::DistributedNetwork;
use nnp::patterns::federated::{
    partition, Aggregator, Coordinator, CoordinatorConfig, Partition, Poison, Worker, WorkerConfig,
};

const LAYERS: [usize; 3] = [64, 32, 10];

fn network(seed: u64) -> NeuralNetwork {
    NeuralNetwork::builder(&LAYERS)
        .hidden_activation(Activation::Relu)
        .output_activation(Activation::Softmax)
        .seed(seed)
        .build()
        .unwrap()
}

/// The digits split 75/25 (stratified), the training part dealt to `shards` workers.
struct Split {
    shards: Vec<(Vec<f32>, Vec<usize>)>,
    test: (Vec<f32>, Vec<usize>),
}

fn split(d: &Digits, shards: usize, how: Partition) -> Split {
    let (train, test) = stratified_split(&d.y, 3);
    let train_labels: Vec<usize> = train.iter().map(|&i| d.y[i]).collect();
    let shards = (0..shards)
        .map(|k| {
            let mine: Vec<usize> = partition(&train_labels, k, shards, how)
                .into_iter()
                .map(|j| train[j])
                .collect();
            d.select(&mine)
        })
        .collect();
    Split {
        shards,
        test: d.select(&test),
    }
}

/// A coordinator on loopback that needs `min_workers` and waits `deadline` for their weights.
fn coordinator(min_workers: usize, deadline: Duration) -> Coordinator {
    let config = CoordinatorConfig {
        min_workers,
        round_deadline: deadline,
        ..CoordinatorConfig::default()
    };
    Coordinator::new("127.0.0.1", 0, network(1), config).unwrap()
}

/// A worker on its own thread, taking part until the coordinator leaves.
fn spawn_worker(
    name: String,
    addr: SocketAddr,
    (inputs, labels): (Vec<f32>, Vec<usize>),
    seed: u64,
    config: WorkerConfig,
) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut worker =
            Worker::connect(&name, addr, network(seed), inputs, &labels, config).unwrap();
        worker.run().unwrap()
    })
}

/// Runs up to `rounds` rounds with one worker per shard (the last one `poison`ed if given),
/// stopping early once the held-out accuracy reaches `stop_at`; returns the accuracy after
/// each round.
fn federate(
    data: &Split,
    aggregator: Aggregator,
    epochs: usize,
    rounds: usize,
    poison: Option<Poison>,
    stop_at: f32,
) -> Vec<f32> {
    let config = CoordinatorConfig {
        min_workers: data.shards.len(),
        aggregator,
        ..CoordinatorConfig::default()
    };
    let mut coordinator = Coordinator::new("127.0.0.1", 0, network(1), config).unwrap();
    let addr = coordinator.local_addr();
    let last = data.shards.len() - 1;
    let workers: Vec<_> = data
        .shards
        .iter()
        .enumerate()
        .map(|(k, shard)| {
            let config = WorkerConfig {
                epochs,
                poison: if k == last { poison } else { None },
                ..WorkerConfig::default()
            };
            spawn_worker(
                format!("worker-{k}"),
                addr,
                shard.clone(),
                10 + k as u64,
                config,
            )
        })
        .collect();
    let mut accuracy = Vec::new();
    for _ in 0..rounds {
        let report = coordinator.run_round().unwrap();
        assert!(report.aggregated, "{report:?}");
        assert_eq!(report.contributors.len(), data.shards.len(), "{report:?}");
        let (x, y) = &data.test;
        accuracy.push(coordinator.network().accuracy(x, y).unwrap());
        if *accuracy.last().unwrap() >= stop_at {
            break;
        }
    }
    coordinator.shutdown();
    for w in workers {
        assert_eq!(w.join().unwrap(), accuracy.len());
    }
    accuracy
}

#[test]
fn three_workers_on_label_skewed_shards_reach_95_percent() {
    let d = load_digits();
    let data = split(&d, 3, Partition::LabelSkew { own: 0.8 });
    // Each worker holds mostly its own three or four classes.
    for (k, (_, labels)) in data.shards.iter().enumerate() {
        let own = labels.iter().filter(|&&l| l % 3 == k).count();
        assert!(
            own * 10 > labels.len() * 7,
            "shard {k}: {own} of {}",
            labels.len()
        );
    }
    let accuracy = federate(&data, Aggregator::FedAvg, 2, 30, None, 0.95);
    println!("FedAvg, non-IID, 3 workers: accuracy per round {accuracy:.3?}");
    let last = *accuracy.last().unwrap();
    assert!(last >= 0.95, "after {} rounds: {last}", accuracy.len());
}

#[test]
fn a_robust_aggregator_survives_a_poisoned_worker_that_wrecks_fedavg() {
    let d = load_digits();
    let data = split(&d, 3, Partition::Iid);
    let poison = Some(Poison::Scale(-4.0));
    let rounds = 12;
    let fedavg = federate(&data, Aggregator::FedAvg, 2, rounds, poison, 2.0);
    let median = federate(&data, Aggregator::Median, 2, rounds, poison, 2.0);
    let trimmed = federate(
        &data,
        Aggregator::TrimmedMean { trim: 0.2 },
        2,
        rounds,
        poison,
        2.0,
    );
    let krum = federate(
        &data,
        Aggregator::Krum { byzantine: 1 },
        2,
        rounds,
        poison,
        2.0,
    );
    println!("one worker sends its weights x -4, accuracy per round:");
    println!(
        "  fedavg       {fedavg:.3?}\n  median       {median:.3?}\n  trimmed-mean {trimmed:.3?}\n  krum         {krum:.3?}"
    );
    let (fedavg, median, trimmed, krum) = (
        fedavg[rounds - 1],
        median[rounds - 1],
        trimmed[rounds - 1],
        krum[rounds - 1],
    );
    assert!(median >= 0.93, "median: {median}");
    assert!(trimmed >= 0.93, "trimmed mean: {trimmed}");
    assert!(krum >= 0.93, "krum: {krum}");
    assert!(
        fedavg < median - 0.2,
        "FedAvg {fedavg} should fall well below the median's {median}"
    );
}

/// How far the global weights move in one round of one worker with FedProx's `mu`.
fn one_round_moves_the_model(shard: &(Vec<f32>, Vec<usize>), mu: f32) -> f32 {
    let mut coordinator =
        Coordinator::new("127.0.0.1", 0, network(1), CoordinatorConfig::default()).unwrap();
    let before: Vec<f32> = (0..2)
        .flat_map(|l| coordinator.network().layer_params(l).to_vec())
        .collect();
    let config = WorkerConfig {
        epochs: 3,
        proximal_mu: mu,
        ..WorkerConfig::default()
    };
    let worker = spawn_worker(
        "w".into(),
        coordinator.local_addr(),
        shard.clone(),
        5,
        config,
    );
    assert!(coordinator.run_round().unwrap().aggregated);
    let after: Vec<f32> = (0..2)
        .flat_map(|l| coordinator.network().layer_params(l).to_vec())
        .collect();
    coordinator.shutdown();
    worker.join().unwrap();
    let squared: f32 = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    squared.sqrt()
}

#[test]
fn with_a_fraction_the_workers_take_turns_and_the_model_still_learns() {
    let d = load_digits();
    let data = split(&d, 3, Partition::Iid);
    let config = CoordinatorConfig {
        min_workers: 1,
        // ceil(0.3 x 3) = 1 worker a round.
        fraction: 0.3,
        ..CoordinatorConfig::default()
    };
    let mut coordinator = Coordinator::new("127.0.0.1", 0, network(1), config).unwrap();
    let addr = coordinator.local_addr();
    let workers: Vec<_> = (0..3)
        .map(|k| {
            spawn_worker(
                format!("worker-{k}"),
                addr,
                data.shards[k].clone(),
                10 + k as u64,
                WorkerConfig::default(),
            )
        })
        .collect();
    coordinator
        .wait_for_workers(3, Duration::from_secs(10))
        .unwrap();
    let (x, y) = &data.test;
    let before = coordinator.network().accuracy(x, y).unwrap();
    let mut asked = Vec::new();
    for _ in 0..6 {
        let report = coordinator.run_round().unwrap();
        assert!(report.aggregated, "{report:?}");
        assert_eq!(report.contributors.len(), 1, "{report:?}");
        assert!(report.left_out.is_empty(), "{report:?}");
        asked.push(report.contributors[0].name.clone());
    }
    let after = coordinator.network().accuracy(x, y).unwrap();
    coordinator.shutdown();
    // Each worker trained in two of the six rounds, never twice in a row.
    for k in 0..3 {
        let name = format!("worker-{k}");
        assert_eq!(asked.iter().filter(|n| **n == name).count(), 2, "{asked:?}");
    }
    assert!(asked.windows(2).all(|w| w[0] != w[1]), "{asked:?}");
    for w in workers {
        assert_eq!(w.join().unwrap(), 2);
    }
    println!("accuracy {before:.3} -> {after:.3} over {asked:?}");
    assert!(after > before + 0.3, "{before} -> {after}");
}

/// A worker on its own thread that reports how its run ended instead of panicking.
fn spawn_fallible_worker(
    name: &str,
    addr: SocketAddr,
    (inputs, labels): (Vec<f32>, Vec<usize>),
    seed: u64,
) -> JoinHandle<Result<usize, nnp::patterns::federated::FederatedError>> {
    let name = name.to_string();
    std::thread::spawn(move || {
        let mut worker = Worker::connect(
            &name,
            addr,
            network(seed),
            inputs,
            &labels,
            WorkerConfig::default(),
        )?;
        worker.run()
    })
}

#[test]
fn a_worker_behind_a_slow_link_is_waited_for_and_contributes_every_round() {
    let d = load_digits();
    let data = split(&d, 2, Partition::Iid);
    let config = CoordinatorConfig {
        min_workers: 2,
        ..CoordinatorConfig::default()
    };
    let mut coordinator = Coordinator::new("127.0.0.1", 0, network(1), config).unwrap();
    let delay = Duration::from_millis(40);
    let proxy = Proxy::start(
        coordinator.local_addr(),
        Faults {
            delay,
            ..Faults::default()
        },
    );
    let near = spawn_worker(
        "near".into(),
        coordinator.local_addr(),
        data.shards[0].clone(),
        10,
        WorkerConfig::default(),
    );
    let far = spawn_worker(
        "far".into(),
        proxy.addr(),
        data.shards[1].clone(),
        11,
        WorkerConfig::default(),
    );
    for _ in 0..3 {
        let report = coordinator.run_round().unwrap();
        assert_eq!(report.contributors.len(), 2, "{report:?}");
        // The far worker's weights crossed the delayed link both ways.
        assert!(report.duration >= 2 * delay, "{:?}", report.duration);
    }
    coordinator.shutdown();
    assert_eq!(near.join().unwrap(), 3);
    assert_eq!(far.join().unwrap(), 3);
}

#[test]
fn a_link_cut_mid_frame_leaves_its_worker_out_at_once_and_a_new_one_rejoins() {
    let d = load_digits();
    let data = split(&d, 3, Partition::Iid);
    let deadline = Duration::from_secs(20);
    let mut coordinator = coordinator(2, deadline);
    let addr = coordinator.local_addr();
    // One set of weights is 2,410 f32 (9,640 bytes) in two frames: a cut after 14,800 bytes
    // from the worker falls inside the first frame of its second answer.
    let proxy = Proxy::start(
        addr,
        Faults {
            cut_upstream_after: Some(14_800),
            ..Faults::default()
        },
    );
    let steady: Vec<_> = (0..2)
        .map(|k| {
            spawn_worker(
                format!("worker-{k}"),
                addr,
                data.shards[k].clone(),
                10 + k as u64,
                WorkerConfig::default(),
            )
        })
        .collect();
    let cut = spawn_fallible_worker("worker-2", proxy.addr(), data.shards[2].clone(), 12);
    coordinator
        .wait_for_workers(3, Duration::from_secs(10))
        .unwrap();

    let first = coordinator.run_round().unwrap();
    assert_eq!(first.contributors.len(), 3, "{first:?}");
    let second = coordinator.run_round().unwrap();
    assert_eq!(proxy.cuts(), 1);
    let left_out: Vec<_> = second.left_out.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(left_out, ["worker-2"], "{second:?}");
    assert_eq!(second.contributors.len(), 2, "{second:?}");
    assert!(second.aggregated, "{second:?}");
    // Dropped when its connection closed, not at the deadline.
    assert!(second.duration < deadline / 2, "{:?}", second.duration);
    let ended = cut.join().unwrap();
    println!("the cut worker's run ended with {ended:?}");

    // A worker on the same shard connects afresh and is sent the current weights.
    let again = spawn_worker(
        "worker-2-again".into(),
        addr,
        data.shards[2].clone(),
        12,
        WorkerConfig::default(),
    );
    coordinator
        .wait_for_workers(3, Duration::from_secs(10))
        .unwrap();
    let mut accuracy = 0.0;
    for _ in 0..8 {
        let report = coordinator.run_round().unwrap();
        assert_eq!(report.contributors.len(), 3, "{report:?}");
        let (x, y) = &data.test;
        accuracy = coordinator.network().accuracy(x, y).unwrap();
    }
    coordinator.shutdown();
    for w in steady {
        assert_eq!(w.join().unwrap(), 10);
    }
    assert_eq!(again.join().unwrap(), 8);
    println!("accuracy after the cut and 8 more rounds: {accuracy:.3}");
    assert!(accuracy >= 0.9, "{accuracy}");
}

#[test]
fn the_proximal_term_keeps_a_worker_near_the_global_weights() {
    let d = load_digits();
    let data = split(&d, 3, Partition::LabelSkew { own: 0.8 });
    let plain = one_round_moves_the_model(&data.shards[0], 0.0);
    let prox = one_round_moves_the_model(&data.shards[0], 1.0);
    println!("one round moved the weights by {plain:.3} (mu 0), {prox:.3} (mu 1)");
    assert!(prox < plain * 0.8, "mu 1: {prox}, mu 0: {plain}");
}

#[test]
fn a_silent_worker_is_left_out_at_the_deadline_and_a_departed_one_at_once() {
    let d = load_digits();
    let data = split(&d, 1, Partition::Iid);
    let deadline = Duration::from_millis(800);
    let mut coordinator = coordinator(1, deadline);
    let addr = coordinator.local_addr();
    let honest = spawn_worker(
        "honest".into(),
        addr,
        data.shards[0].clone(),
        5,
        WorkerConfig::default(),
    );
    // A node with the model's layers that never answers the weights it is sent.
    let (silent, _inbox) = DistributedNetwork::new("silent", "127.0.0.1", 0, network(2)).unwrap();
    silent.connect_to("127.0.0.1", addr.port()).unwrap();
    coordinator
        .wait_for_workers(2, Duration::from_secs(10))
        .unwrap();

    let report = coordinator.run_round().unwrap();
    let names = |c: &[nnp::patterns::federated::Contribution]| {
        c.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(&report.contributors), ["honest"], "{report:?}");
    assert_eq!(names(&report.left_out), ["silent"], "{report:?}");
    assert!(report.aggregated);
    // Left out at the deadline, not waited for beyond it (generous slack for a loaded host).
    assert!(report.duration >= deadline, "{:?}", report.duration);
    assert!(
        report.duration < deadline + Duration::from_secs(2),
        "{:?}",
        report.duration
    );

    // The silent node leaves during the next round: the round ends without waiting for the
    // deadline, and it is no longer a worker afterwards.
    let silent = std::sync::Arc::new(silent);
    let leaving = std::sync::Arc::clone(&silent);
    let leaver = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        leaving.shutdown();
    });
    let report = coordinator.run_round().unwrap();
    leaver.join().unwrap();
    assert_eq!(names(&report.contributors), ["honest"], "{report:?}");
    assert_eq!(names(&report.left_out), ["silent"], "{report:?}");
    assert!(report.duration < deadline, "{:?}", report.duration);
    let report = coordinator.run_round().unwrap();
    assert!(report.left_out.is_empty(), "{report:?}");
    assert_eq!(coordinator.rounds(), 3);
    coordinator.shutdown();
    assert_eq!(honest.join().unwrap(), 3);
}

/// Reads the coordinator's JSON lines, one at a time.
struct JsonLines(std::io::Lines<std::io::BufReader<std::process::ChildStdout>>);

impl JsonLines {
    fn next(&mut self) -> serde_json::Value {
        let line = self
            .0
            .next()
            .expect("the coordinator ended its output early")
            .unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }
}

fn nnp_worker(addr: &str, shard: usize) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_nnp"))
        .args([
            "--json",
            "federated",
            "worker",
            "--connect",
            addr,
            "--noniid",
        ])
        .args(["--shard", &format!("{shard}/3"), "--epochs", "2"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn worker_processes_learn_survive_a_sigkill_and_rejoin() {
    use std::io::BufRead;
    let (rounds, deadline_ms) = (30u64, 3000.0);
    let mut coordinator = std::process::Command::new(env!("CARGO_BIN_EXE_nnp"))
        .args([
            "--json",
            "federated",
            "coordinator",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--workers", "3", "--rounds", &rounds.to_string()])
        .args(["--deadline-ms", "3000", "--pause-ms", "100"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = JsonLines(std::io::BufReader::new(coordinator.stdout.take().unwrap()).lines());
    let mut processes = Processes(vec![coordinator]);
    let listening = lines.next();
    assert_eq!(listening["event"], "listening", "{listening}");
    let addr = listening["addr"].as_str().unwrap().to_owned();
    for k in 1..=3 {
        processes.0.push(nnp_worker(&addr, k));
    }

    let (mut killed_at, mut restarted_at) = (None, None);
    let mut reports = Vec::new();
    let summary = loop {
        let line = lines.next();
        if line["event"] == "summary" {
            break line;
        }
        assert_eq!(line["event"], "round", "{line}");
        let round = line["round"].as_u64().unwrap();
        if round == 2 {
            // SIGKILL: the worker gets no chance to say goodbye.
            processes.0[3].kill().unwrap();
            processes.0[3].wait().unwrap();
            killed_at = Some(round);
        }
        if round == 4 {
            processes.0.push(nnp_worker(&addr, 3));
            restarted_at = Some(round);
        }
        reports.push(line);
    };
    let (killed_at, restarted_at) = (killed_at.unwrap(), restarted_at.unwrap());
    assert_eq!(reports.len() as u64, rounds);
    let has_worker_3 = |r: &serde_json::Value| {
        r["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == "worker-3")
    };
    for r in &reports {
        let ms = r["round_ms"].as_f64().unwrap();
        // A round that waited for the dead worker would last the whole deadline: it is
        // dropped as soon as its connection closes instead.
        assert!(ms < deadline_ms, "no round waits on a dead worker: {r}");
        assert!(r["aggregated"].as_bool().unwrap(), "{r}");
    }
    // Between the kill and the restart, the rounds go on with the two others.
    let between = &reports[killed_at as usize..restarted_at as usize];
    assert!(
        between
            .iter()
            .any(|r| !has_worker_3(r) && r["workers"].as_array().unwrap().len() == 2),
        "{between:?}"
    );
    // The restarted worker is sent the current weights and contributes again.
    let rejoined = reports[restarted_at as usize..]
        .iter()
        .filter(|r| has_worker_3(r))
        .count();
    assert!(
        rejoined >= 5,
        "worker-3 contributed to {rejoined} rounds after its restart"
    );
    let accuracy = summary["accuracy"].as_f64().unwrap();
    println!(
        "processes: accuracy {accuracy:.3}, worker-3 back for {rejoined} rounds, round p50 {:.1} ms, max {:.1} ms, {} bytes out / {} in",
        summary["round_p50_ms"], summary["round_max_ms"], summary["bytes_out"], summary["bytes_in"]
    );
    assert!(accuracy >= 0.95, "{summary}");
    assert!(processes.0[0].wait().unwrap().success());
    // The workers leave when the coordinator does.
    for k in [1, 2, 4] {
        assert!(
            processes.0[k].wait().unwrap().success(),
            "worker process {k}"
        );
    }
}

/// Runs `nnp federated` with 3 IID worker processes, the third one `--poison random`, and
/// returns the coordinator's closing summary.
fn poisoned_run(aggregator: &str) -> serde_json::Value {
    use std::io::BufRead;
    let mut coordinator = std::process::Command::new(env!("CARGO_BIN_EXE_nnp"))
        .args([
            "--json",
            "federated",
            "coordinator",
            "--listen",
            "127.0.0.1:0",
        ])
        .args([
            "--workers",
            "3",
            "--rounds",
            "12",
            "--aggregator",
            aggregator,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = JsonLines(std::io::BufReader::new(coordinator.stdout.take().unwrap()).lines());
    let mut processes = Processes(vec![coordinator]);
    let addr = lines.next()["addr"].as_str().unwrap().to_owned();
    for k in 1..=3 {
        let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_nnp"));
        worker
            .args(["federated", "worker", "--connect", &addr])
            .args(["--shard", &format!("{k}/3")])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(std::process::Stdio::null());
        if k == 3 {
            worker.args(["--poison", "random"]);
        }
        processes.0.push(worker.spawn().unwrap());
    }
    loop {
        let line = lines.next();
        if line["event"] == "summary" {
            for child in &mut processes.0 {
                assert!(child.wait().unwrap().success());
            }
            return line;
        }
    }
}

#[test]
fn the_median_keeps_a_poisoned_worker_process_from_wrecking_the_model() {
    let median = poisoned_run("median")["accuracy"].as_f64().unwrap();
    let fedavg = poisoned_run("fedavg")["accuracy"].as_f64().unwrap();
    println!("one worker process --poison random: median {median:.3}, fedavg {fedavg:.3}");
    assert!(median >= 0.93, "median: {median}");
    assert!(fedavg < median - 0.2, "fedavg {fedavg}, median {median}");
}

#[test]
fn a_worker_slower_than_the_deadline_never_has_a_late_answer_taken_for_a_fresh_one() {
    let d = load_digits();
    let data = split(&d, 2, Partition::Iid);
    let deadline = Duration::from_millis(50);
    let config = CoordinatorConfig {
        min_workers: 1,
        round_deadline: deadline,
        ..CoordinatorConfig::default()
    };
    let mut coordinator = Coordinator::new("127.0.0.1", 0, network(1), config).unwrap();
    let addr = coordinator.local_addr();
    let fast = spawn_worker(
        "fast".into(),
        addr,
        data.shards[0].clone(),
        5,
        WorkerConfig::default(),
    );
    // About 0.7 ms an epoch here: each answer comes about four deadlines after its weights
    // were sent, so it arrives during a later round, answering an earlier one.
    let slow_config = WorkerConfig {
        epochs: 300,
        ..WorkerConfig::default()
    };
    let slow = spawn_worker("slow".into(), addr, data.shards[1].clone(), 6, slow_config);
    coordinator
        .wait_for_workers(2, Duration::from_secs(10))
        .unwrap();
    for _ in 0..16 {
        let report = coordinator.run_round().unwrap();
        let names: Vec<&str> = report
            .contributors
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["fast"], "{report:?}");
        assert_eq!(report.left_out.len(), 1, "{report:?}");
    }
    coordinator.shutdown();
    assert_eq!(fast.join().unwrap(), 16);
    // It answered the sets it finished while the coordinator was there, and stopped cleanly
    // once the coordinator had gone.
    let answered = slow.join().unwrap();
    assert!((1..16).contains(&answered), "{answered}");
}
