//! Ensembles over real sockets on loopback: three members trained on different shards of the
//! digits, on threads (the library) and as `nnp serve` processes (the command line).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::process::Processes;
use common::{load_digits, stratified_split};
use nnp::nn::{one_hot, Activation, Adam, FitConfig, Loss, NeuralNetwork};
use nnp::node::{DistributedNetwork, HandleOutcome, NodeEvent};
use nnp::patterns::ensemble::{Combine, Ensemble, EnsembleConfig, LeftOut};

/// Three members, each trained on its own third of the training quarter-split, with its own
/// seed; and the held-out rows.
struct Trained {
    members: Vec<NeuralNetwork>,
    test: (Vec<f32>, Vec<usize>),
}

fn train_members() -> Trained {
    let d = load_digits();
    let (train, test) = stratified_split(&d.y, 3);
    let members = (0..3)
        .map(|k| {
            let mine: Vec<usize> = train.iter().copied().skip(k).step_by(3).collect();
            let (x, y) = d.select(&mine);
            let mut net = NeuralNetwork::builder(&[64, 32, 10])
                .hidden_activation(Activation::Relu)
                .output_activation(Activation::Softmax)
                .seed(20 + k as u64)
                .build()
                .unwrap();
            let config = FitConfig {
                epochs: 20,
                batch_size: 16,
                loss: Loss::CrossEntropy,
                shuffle: true,
            };
            net.fit(&x, &one_hot(&y, 10).unwrap(), &config, &mut Adam::new(0.01))
                .unwrap();
            net
        })
        .collect();
    Trained {
        members,
        test: d.select(&test),
    }
}

/// A member node on its own thread: answers each ForwardData with its network's output,
/// after `delay_ms` (changeable while it runs), until it is shut down.
struct Member {
    node: Arc<DistributedNetwork<NeuralNetwork>>,
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

fn spawn_member(name: &str, network: NeuralNetwork) -> Member {
    spawn_member_on(name, network, 0)
}

/// [`spawn_member`] listening on `port` (0: any free port).
fn spawn_member_on(name: &str, network: NeuralNetwork, port: u16) -> Member {
    let (node, events) = DistributedNetwork::new(name, "127.0.0.1", port, network).unwrap();
    let addr = node.start_server().unwrap();
    let node = Arc::new(node);
    let delay_ms = Arc::new(AtomicU64::new(0));
    let thread = {
        let (node, delay_ms) = (Arc::clone(&node), Arc::clone(&delay_ms));
        std::thread::spawn(move || {
            for event in events {
                let NodeEvent::Message(message) = event else {
                    continue;
                };
                std::thread::sleep(Duration::from_millis(delay_ms.load(Ordering::SeqCst)));
                // A request that does not fit is refused by handle_message itself.
                if let Ok(HandleOutcome::Output(out)) = node.handle_message(&message) {
                    let _ = node.reply(&message, &out);
                }
            }
        })
    };
    Member {
        node,
        addr,
        delay_ms,
        thread,
    }
}

fn spawn_members(networks: &[NeuralNetwork]) -> Vec<Member> {
    networks
        .iter()
        .enumerate()
        .map(|(k, n)| spawn_member(&format!("member-{k}"), n.clone()))
        .collect()
}

fn stop(members: Vec<Member>) {
    for m in members {
        m.node.shutdown();
        m.thread.join().unwrap();
    }
}

fn row(x: &[f32], i: usize) -> &[f32] {
    &x[i * 64..(i + 1) * 64]
}

/// The network's own output for one row.
fn local_output(network: &NeuralNetwork, input: &[f32]) -> Vec<f32> {
    network.forward(input).unwrap().1
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-4, "{what}: {got:?} vs {want:?}");
    }
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
        .unwrap()
}

/// Held-out accuracy of the ensemble and of each member from the members' own outputs in
/// the same answers, in requests of `batch` rows.
fn evaluate(
    ensemble: &mut Ensemble,
    (x, y): &(Vec<f32>, Vec<usize>),
    batch: usize,
) -> (f32, Vec<f32>) {
    let (mut correct, mut each) = (0usize, vec![0usize; 3]);
    for (inputs, labels) in x.chunks(batch * 64).zip(y.chunks(batch)) {
        let answer = ensemble.predict_rows(inputs, labels.len()).unwrap();
        assert_eq!(answer.answered(), vec![0, 1, 2], "{:?}", answer.left_out());
        correct += answer
            .predictions
            .iter()
            .zip(labels)
            .filter(|(p, l)| p == l)
            .count();
        for (k, member) in answer.members.iter().enumerate() {
            let out = member.as_ref().unwrap();
            each[k] += out
                .chunks_exact(10)
                .map(argmax)
                .zip(labels)
                .filter(|(p, l)| p == *l)
                .count();
        }
    }
    let n = y.len() as f32;
    (
        correct as f32 / n,
        each.iter().map(|&c| c as f32 / n).collect(),
    )
}

#[test]
fn three_members_combined_are_at_least_as_accurate_as_the_best_alone() {
    let trained = train_members();
    let members = spawn_members(&trained.members);
    let addrs: Vec<SocketAddr> = members.iter().map(|m| m.addr).collect();
    let (x, y) = &trained.test;
    let alone: Vec<f32> = trained
        .members
        .iter()
        .map(|n| n.accuracy(x, y).unwrap())
        .collect();
    let best = alone.iter().copied().fold(0.0, f32::max);
    for combine in [Combine::MeanProbability, Combine::MajorityVote] {
        let config = EnsembleConfig {
            combine,
            deadline: Duration::from_secs(5),
            ..EnsembleConfig::default()
        };
        let mut ensemble = Ensemble::connect(&addrs, config).unwrap();
        let (combined, each) = evaluate(&mut ensemble, &trained.test, 32);
        println!(
            "{}: ensemble {combined:.3}, members over the wire {each:?}, alone {alone:?} ({} rows)",
            combine.name(),
            y.len()
        );
        // The members' answers are their own networks' outputs.
        for (over_wire, local) in each.iter().zip(&alone) {
            assert!((over_wire - local).abs() < 1e-6, "{each:?} vs {alone:?}");
        }
        assert!(combined >= best, "{}: {combined} < {best}", combine.name());
        ensemble.shutdown();
    }
    stop(members);
}

#[test]
fn with_a_member_stopped_answers_keep_coming_from_the_other_two() {
    let trained = train_members();
    let mut members = spawn_members(&trained.members);
    let addrs: Vec<SocketAddr> = members.iter().map(|m| m.addr).collect();
    let deadline = Duration::from_millis(300);
    // Generous for a loaded machine: a request that waited on the stopped member would take
    // the deadline, one that waited on reconnecting could take the connect timeout (1 s).
    let slack = Duration::from_millis(700);
    let config = EnsembleConfig {
        deadline,
        reconnect_every: Duration::from_millis(50),
        ..EnsembleConfig::default()
    };
    let mut ensemble = Ensemble::connect(&addrs, config).unwrap();
    let (x, _) = &trained.test;
    let stop_at = 20;
    let mut after = 0;
    for i in 0..80 {
        if i == stop_at {
            let m = members.remove(0);
            m.node.shutdown();
            m.thread.join().unwrap();
        }
        let input = row(x, i);
        let answer = ensemble.predict(input).unwrap();
        assert!(
            answer.elapsed <= deadline + slack,
            "request {i} took {:?}",
            answer.elapsed
        );
        let answered = answer.answered();
        if i < stop_at {
            assert_eq!(
                answered,
                vec![0, 1, 2],
                "request {i}: {:?}",
                answer.left_out()
            );
        } else {
            assert_eq!(answered, vec![1, 2], "request {i}: {:?}", answer.left_out());
            let why = &answer.members[0].as_ref().unwrap_err();
            assert!(
                matches!(why, LeftOut::Disconnected | LeftOut::NotConnected),
                "request {i}: {why}"
            );
            after += 1;
        }
        // Each answer combined is that member's output for this very row, and the mean is
        // theirs.
        let mut mean = vec![0.0f32; 10];
        for &k in &answered {
            let want = local_output(&trained.members[k], input);
            assert_close(
                answer.members[k].as_ref().unwrap(),
                &want,
                &format!("request {i}, member {k}"),
            );
            for (m, w) in mean.iter_mut().zip(&want) {
                *m += w / answered.len() as f32;
            }
        }
        assert_close(&answer.scores, &mean, &format!("request {i}, the mean"));
    }
    assert_eq!(after, 60);
    ensemble.shutdown();
    stop(members);
}

#[test]
fn a_member_that_comes_back_on_its_address_is_asked_again() {
    let trained = train_members();
    let mut members = spawn_members(&trained.members[..2]);
    let addrs: Vec<SocketAddr> = members.iter().map(|m| m.addr).collect();
    let config = EnsembleConfig {
        deadline: Duration::from_secs(5),
        reconnect_every: Duration::from_millis(20),
        ..EnsembleConfig::default()
    };
    let mut ensemble = Ensemble::connect(&addrs, config).unwrap();
    let (x, _) = &trained.test;
    let gone = members.remove(1);
    gone.node.shutdown();
    gone.thread.join().unwrap();
    let mut answered = Vec::new();
    for i in 0..40 {
        if i == 10 {
            members.push(spawn_member_on(
                "member-1-again",
                trained.members[1].clone(),
                addrs[1].port(),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
        let input = row(x, i);
        let answer = ensemble.predict(input).unwrap();
        if let Ok(out) = &answer.members[1] {
            assert!(i >= 10, "request {i}: answered while stopped");
            let want = local_output(&trained.members[1], input);
            assert_close(out, &want, &format!("request {i}"));
        }
        answered.push(answer.answered());
    }
    assert!(answered[1..10].iter().all(|a| a == &[0]), "{answered:?}");
    // Tried again every 20 ms: back well before the last requests.
    assert!(answered[30..].iter().all(|a| a == &[0, 1]), "{answered:?}");
    ensemble.shutdown();
    stop(members);
}

#[test]
fn a_slow_member_is_left_out_and_its_late_answers_are_never_taken_for_fresh_ones() {
    let trained = train_members();
    let members = spawn_members(&trained.members);
    let addrs: Vec<SocketAddr> = members.iter().map(|m| m.addr).collect();
    let config = EnsembleConfig {
        deadline: Duration::from_millis(40),
        ..EnsembleConfig::default()
    };
    let mut ensemble = Ensemble::connect(&addrs, config).unwrap();
    let (x, _) = &trained.test;
    members[2].delay_ms.store(100, Ordering::SeqCst);
    let (mut missed, mut behind, mut back) = (0, 0, 0);
    for i in 0..60 {
        if i == 20 {
            members[2].delay_ms.store(0, Ordering::SeqCst);
        }
        // Requests spaced out (the others answer in well under a millisecond), so that the
        // slow member's late answers arrive during later requests.
        std::thread::sleep(Duration::from_millis(10));
        let input = row(x, i);
        let answer = ensemble.predict(input).unwrap();
        assert!(answer.answered().starts_with(&[0, 1]), "request {i}");
        match &answer.members[2] {
            // Whenever the slow member is in an answer, it is its answer to this row: an
            // answer to an earlier row would differ (every row is a different image).
            Ok(out) => {
                assert_close(
                    out,
                    &local_output(&trained.members[2], input),
                    &format!("request {i}"),
                );
                back += usize::from(i >= 20);
                assert!(
                    i >= 20,
                    "request {i}: the slow member answered within 40 ms"
                );
            }
            Err(LeftOut::Deadline) => missed += 1,
            Err(LeftOut::Behind) => behind += 1,
            Err(other) => panic!("request {i}: {other}"),
        }
    }
    println!("slow member: missed {missed}, not asked while behind {behind}, back for {back}");
    assert!(
        missed >= 2 && behind >= 1,
        "missed {missed}, behind {behind}"
    );
    assert!(
        back >= 30,
        "the member answered {back} of the 40 requests once fast again"
    );
    ensemble.shutdown();
    stop(members);
}

#[test]
fn a_member_that_refuses_is_left_out_with_its_reason() {
    let trained = train_members();
    // 64 inputs are not a whole number of its 48-wide rows.
    let narrow = NeuralNetwork::builder(&[48, 10]).seed(1).build().unwrap();
    let members = vec![
        spawn_member("member-0", trained.members[0].clone()),
        spawn_member("narrow", narrow),
    ];
    let addrs: Vec<SocketAddr> = members.iter().map(|m| m.addr).collect();
    let config = EnsembleConfig {
        deadline: Duration::from_secs(5),
        ..EnsembleConfig::default()
    };
    let mut ensemble = Ensemble::connect(&addrs, config).unwrap();
    for i in 0..3 {
        let answer = ensemble.predict(row(&trained.test.0, i)).unwrap();
        assert_eq!(answer.answered(), vec![0]);
        // Refused at once, not at the 5 s deadline.
        assert!(
            answer.elapsed < Duration::from_secs(5),
            "{:?}",
            answer.elapsed
        );
        match &answer.members[1] {
            Err(LeftOut::Refused(reason)) => assert!(reason.contains("48"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    ensemble.shutdown();
    stop(members);
}

/// `nnp serve --weights path` on a free port; returns the process and its address.
fn nnp_serve(weights: &std::path::Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nnp"))
        .args(["--json", "serve", "--port", "0", "--weights"])
        .arg(weights)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let start: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    let addr = start["listening"].as_str().unwrap().to_owned();
    (child, addr)
}

/// Runs `nnp --json` with `args` in the source tree (for the shipped digits); returns its
/// JSON lines.
fn nnp_json(args: &[&str]) -> Vec<serde_json::Value> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nnp"))
        .arg("--json")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "nnp {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn nnp_ensemble(members: &[String], deadline_ms: u64) -> Vec<serde_json::Value> {
    let (members, deadline) = (members.join(","), deadline_ms.to_string());
    nnp_json(&[
        "ensemble",
        "--members",
        &members,
        "--deadline-ms",
        &deadline,
    ])
}

#[test]
fn serve_processes_answer_nnp_ensemble_and_two_carry_on_without_the_third() {
    let dir = std::env::temp_dir().join(format!("nnp-ensemble-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut processes = Processes(Vec::new());
    let (mut addrs, mut trained) = (Vec::new(), Vec::new());
    for k in 1..=3 {
        let path = dir.join(format!("member-{k}.nnpw"));
        let shard = format!("{k}/3");
        let path_text = path.to_str().unwrap();
        let line = nnp_json(&["ensemble", "train", "--shard", &shard, "--save", path_text]);
        trained.push(line[0]["accuracy"].as_f64().unwrap());
        let (child, addr) = nnp_serve(&path);
        processes.0.push(child);
        addrs.push(addr);
    }

    let lines = nnp_ensemble(&addrs, 2000);
    let summary = lines.last().unwrap();
    println!("three processes: {summary}");
    assert_eq!(summary["event"], "summary");
    let held_out = summary["held_out"].as_u64().unwrap();
    assert!(held_out > 400, "{summary}");
    assert_eq!(summary["rows"], held_out);
    assert_eq!(summary["requests_with_left_out"], 0, "{summary}");
    let accuracy = summary["accuracy"].as_f64().unwrap();
    let best = summary["best_member_accuracy"].as_f64().unwrap();
    assert!(accuracy >= best, "{summary}");
    // Each member's accuracy over the wire is the one its training measured on the same
    // held-out images.
    for (line, alone) in lines[..3].iter().zip(&trained) {
        assert!(
            (line["accuracy"].as_f64().unwrap() - alone).abs() < 1e-6,
            "{line} vs {alone}"
        );
    }

    // One member killed outright: every request is answered by the other two.
    processes.0[1].kill().unwrap();
    processes.0[1].wait().unwrap();
    let deadline_ms = 300;
    let lines = nnp_ensemble(&addrs, deadline_ms);
    let summary = lines.last().unwrap();
    println!("one process killed: {summary}");
    assert_eq!(lines[1]["rows"], 0, "{}", lines[1]);
    assert!(lines[1]["accuracy"].is_null(), "{}", lines[1]);
    assert_eq!(summary["rows"], held_out, "{summary}");
    assert_eq!(summary["unanswered_rows"], 0, "{summary}");
    let max_ms = summary["latency_max_ms"].as_f64().unwrap();
    assert!(max_ms <= deadline_ms as f64 + 700.0, "{summary}");
    assert!(summary["accuracy"].as_f64().unwrap() >= 0.9, "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}
