//! Pipelines over real sockets on loopback: stages on threads (the library), then as
//! separate `nnp` processes (the command line), on the digits set.

mod common;

use std::net::SocketAddr;
use std::ops::Range;
use std::thread::JoinHandle;

use common::process::Processes;
use common::{load_digits, permutation, stratified_split};
use nnp::nn::{one_hot, Activation, Loss, NeuralNetwork, Sgd};
use nnp::patterns::pipeline::{Driver, DriverConfig, Schedule, Stage, StageConfig};

const LAYERS: [usize; 4] = [64, 32, 16, 10];
const STAGES: [Range<usize>; 3] = [0..1, 1..2, 2..3];
/// The largest difference allowed between a pipeline's weights and the same network trained
/// in one process. Each stage runs the same kernels on the same values in the same order as
/// local training, so on one machine the two agree to the bit; this leaves room for stages
/// on machines whose kernels round differently.
const TOLERANCE: f32 = 1e-5;

fn network() -> NeuralNetwork {
    NeuralNetwork::builder(&LAYERS)
        .hidden_activation(Activation::Relu)
        .output_activation(Activation::Softmax)
        .seed(1)
        .build()
        .unwrap()
}

/// Three stages on threads, each serving one driver; returns their addresses.
fn stages(config: &StageConfig) -> (Vec<SocketAddr>, Vec<JoinHandle<u32>>) {
    let net = network();
    STAGES
        .iter()
        .map(|range| {
            let mut stage =
                Stage::bind("127.0.0.1:0", &net, range.clone(), config.clone()).unwrap();
            let addr = stage.local_addr();
            let thread = std::thread::spawn(move || {
                stage.serve_driver().unwrap();
                stage.steps()
            });
            (addr, thread)
        })
        .unzip()
}

/// The training and held-out halves of the digits: inputs row-major, one-hot targets, labels.
struct Data {
    train: (Vec<f32>, Vec<f32>),
    test: (Vec<f32>, Vec<usize>),
}

fn data() -> Data {
    let d = load_digits();
    let (train, test) = stratified_split(&d.y, 3);
    // The split lists the training samples class by class: deal them in a seeded order.
    let train: Vec<usize> = permutation(train.len(), 7)
        .into_iter()
        .map(|i| train[i])
        .collect();
    let (x, y) = d.select(&train);
    Data {
        train: (x, one_hot(&y, 10).unwrap()),
        test: d.select(&test),
    }
}

fn max_abs_difference(a: &NeuralNetwork, b: &NeuralNetwork) -> f32 {
    (0..a.layer_count())
        .flat_map(|l| {
            a.layer_params(l)
                .iter()
                .zip(b.layer_params(l))
                .map(|(x, y)| (x - y).abs())
                .collect::<Vec<_>>()
        })
        .fold(0.0, f32::max)
}

#[test]
fn a_synchronous_pipeline_ends_with_the_weights_of_local_training() {
    let data = data();
    let (batch, steps) = (32, 25);
    let (x, t) = (
        &data.train.0[..batch * steps * 64],
        &data.train.1[..batch * steps * 10],
    );
    let config = StageConfig::default();
    let mut local = network();
    let mut sgd = Sgd::new(config.learning_rate, config.momentum);
    local
        .train_epoch(x, t, batch, Loss::CrossEntropy, false, &mut sgd)
        .unwrap();
    for (schedule, micro_batches) in [
        (Schedule::GPipe, 4),
        (Schedule::OneFOneB, 4),
        (Schedule::OneFOneB, 5),
    ] {
        let (addrs, threads) = stages(&config);
        let driver_config = DriverConfig {
            schedule,
            micro_batches,
            ..DriverConfig::default()
        };
        let mut driver = Driver::connect(&addrs, driver_config).unwrap();
        for k in 0..steps {
            let report = driver
                .step(
                    &x[k * batch * 64..(k + 1) * batch * 64],
                    &t[k * batch * 10..(k + 1) * batch * 10],
                )
                .unwrap();
            assert_eq!(report.step, k as u64 + 1);
            assert_eq!(report.samples, batch);
        }
        let mut piped = network();
        driver.weights_into(&mut piped).unwrap();
        driver.shutdown();
        for thread in threads {
            assert_eq!(thread.join().unwrap(), steps as u32);
        }
        let diff = max_abs_difference(&piped, &local);
        println!(
            "{} with {micro_batches} micro-batches: max |pipeline - local| after {steps} steps = {diff:e}",
            schedule.name()
        );
        assert!(diff <= TOLERANCE, "{schedule:?}: {diff}");
        assert!(max_abs_difference(&piped, &network()) > 0.01, "it trained");
    }
}

#[test]
fn three_stages_learn_the_digits_to_97_percent() {
    let data = data();
    let (addrs, threads) = stages(&StageConfig::default());
    let mut driver = Driver::connect(&addrs, DriverConfig::default()).unwrap();
    let batch = 32;
    let samples = data.train.1.len() / 10;
    let mut net = network();
    let (mut accuracy, mut bubbles) = (0.0, Vec::new());
    for epoch in 1..=30 {
        for start in (0..samples).step_by(batch) {
            let end = (start + batch).min(samples);
            let report = driver
                .step(
                    &data.train.0[start * 64..end * 64],
                    &data.train.1[start * 10..end * 10],
                )
                .unwrap();
            bubbles.push((report.bubble, report.ideal_bubble));
        }
        driver.weights_into(&mut net).unwrap();
        accuracy = net.accuracy(&data.test.0, &data.test.1).unwrap();
        if accuracy >= 0.97 {
            println!("epoch {epoch}: held-out accuracy {accuracy:.3}");
            break;
        }
    }
    let mean = bubbles.iter().map(|b| b.0).sum::<f64>() / bubbles.len() as f64;
    println!(
        "{} steps, measured bubble {mean:.3} beside the ideal {:.3}",
        driver.steps(),
        bubbles[0].1
    );
    driver.shutdown();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(accuracy >= 0.97, "held-out accuracy {accuracy}");
}

/// Reads JSON lines from a child's standard output.
struct JsonLines(std::io::Lines<std::io::BufReader<std::process::ChildStdout>>);

impl JsonLines {
    fn next(&mut self) -> serde_json::Value {
        let line = self.0.next().expect("the output ended early").unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }
}

/// `nnp pipeline stage` for weight layers `range`, listening on `listen`; returns the process
/// and the address it listens on.
fn nnp_stage(listen: &str, range: &Range<usize>) -> (std::process::Child, String) {
    nnp_stage_with(listen, range, &[])
}

/// [`nnp_stage`] with `extra` options.
fn nnp_stage_with(
    listen: &str,
    range: &Range<usize>,
    extra: &[&str],
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nnp"))
        .args(["--json", "pipeline", "stage", "--listen", listen])
        .args(["--range", &format!("{}..{}", range.start, range.end)])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = JsonLines(std::io::BufReader::new(child.stdout.take().unwrap()).lines());
    let listening = lines.next();
    assert_eq!(listening["event"], "listening", "{listening}");
    (child, listening["addr"].as_str().unwrap().to_owned())
}

/// Three stage processes and a driver process (`--json`, `args` added); returns the stage
/// processes (killed when dropped), their addresses, and the driver's output.
fn nnp_pipeline(args: &[&str]) -> (Processes, Vec<String>, std::process::Child, JsonLines) {
    use std::io::BufRead;
    let mut processes = Processes(Vec::new());
    let mut addrs = Vec::new();
    for range in &STAGES {
        let (child, addr) = nnp_stage("127.0.0.1:0", range);
        processes.0.push(child);
        addrs.push(addr);
    }
    let mut driver = std::process::Command::new(env!("CARGO_BIN_EXE_nnp"))
        .args(["--json", "pipeline", "driver", "--stages", &addrs.join(",")])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = JsonLines(std::io::BufReader::new(driver.stdout.take().unwrap()).lines());
    (processes, addrs, driver, lines)
}

#[test]
fn three_stage_processes_train_as_one_process_would_and_reach_97_percent() {
    let (_stages, _, mut driver, mut lines) = nnp_pipeline(&["--compare-local"]);
    let summary = loop {
        let line = lines.next();
        if line["event"] == "summary" {
            break line;
        }
        assert_eq!(line["event"], "epoch", "{line}");
    };
    assert!(driver.wait().unwrap().success());
    let diff = summary["max_abs_diff"].as_f64().unwrap();
    let accuracy = summary["accuracy"].as_f64().unwrap();
    println!(
        "processes: {} steps, accuracy {accuracy:.3}, max |pipeline - local| {diff:e}, bubble {:.3} measured beside {:.3} ideal, step p50 {:.2} ms, {:.0} samples/s, {} bytes out / {} in",
        summary["steps"],
        summary["bubble"].as_f64().unwrap(),
        summary["ideal_bubble"].as_f64().unwrap(),
        summary["step_p50_ms"].as_f64().unwrap(),
        summary["samples_per_s"].as_f64().unwrap(),
        summary["bytes_out"],
        summary["bytes_in"]
    );
    assert!(diff <= TOLERANCE as f64, "{summary}");
    assert!(accuracy >= 0.97, "{summary}");
    let (bubble, ideal) = (
        summary["bubble"].as_f64().unwrap(),
        summary["ideal_bubble"].as_f64().unwrap(),
    );
    assert!(bubble > 0.0 && bubble < 1.0 && ideal > 0.3, "{summary}");
}

#[test]
fn a_stage_process_killed_mid_run_is_named_with_its_step_and_training_resumes() {
    let (mut stages, addrs, mut driver, mut lines) = nnp_pipeline(&["--epochs", "12"]);
    let (mut lost, mut resumed, mut epochs) = (None, None, 0);
    let summary = loop {
        let line = lines.next();
        match line["event"].as_str().unwrap() {
            "summary" => break line,
            "epoch" => {
                epochs += 1;
                if epochs == 2 {
                    // SIGKILL: the stage gets no chance to say goodbye; the driver is already
                    // on its next steps.
                    stages.0[1].kill().unwrap();
                    stages.0[1].wait().unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    let (child, _) = nnp_stage(&addrs[1], &STAGES[1]);
                    stages.0[1] = child;
                }
            }
            "stage_lost" => lost = Some(line),
            "resumed" => resumed = Some(line),
            other => panic!("{other}: {line}"),
        }
    };
    assert!(driver.wait().unwrap().success());
    let lost = lost.expect("the driver reported the lost stage");
    let resumed = resumed.expect("the driver resumed");
    println!("{lost}\n{resumed}\n{summary}");
    assert_eq!(lost["stage"], 1, "{lost}");
    let step = lost["step"].as_u64().unwrap();
    let error = lost["error"].as_str().unwrap();
    assert!(
        error.contains("stage 1") && error.contains(&format!("step {step}")),
        "{error}"
    );
    // The failed step is run again from the last completed one.
    assert_eq!(resumed["step"].as_u64().unwrap(), step - 1, "{resumed}");
    assert_eq!(summary["epochs"], 12, "{summary}");
    assert_eq!(summary["stage_failures"], 1, "{summary}");
    let accuracy = summary["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.95, "{summary}");
}

#[test]
fn nnp_demo_pipeline_prints_an_epoch_line_per_epoch_and_a_summary() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nnp"))
        .args(["--json", "demo", "pipeline", "--rounds", "3"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[..3].iter().all(|l| l["event"] == "epoch"),
        "{lines:?}"
    );
    let summary = &lines[3];
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["max_abs_diff"], 0.0, "{summary}");
    assert!(summary["accuracy"].as_f64().unwrap() > 0.5, "{summary}");
    assert!(summary["bytes_out"].as_u64().unwrap() > 0, "{summary}");
}

#[test]
fn stages_that_do_not_chain_are_refused_naming_the_stage() {
    let net = network();
    let mut addrs = Vec::new();
    let mut nodes = Vec::new();
    for range in [0..1, 2..3] {
        let stage = Stage::bind("127.0.0.1:0", &net, range, StageConfig::default()).unwrap();
        addrs.push(stage.local_addr());
        nodes.push(stage);
    }
    let threads: Vec<_> = nodes
        .into_iter()
        .map(|mut s| std::thread::spawn(move || s.serve_driver().unwrap()))
        .collect();
    let err = Driver::connect(&addrs, DriverConfig::default()).unwrap_err();
    assert!(
        matches!(
            err,
            nnp::patterns::pipeline::PipelineError::Mismatch { stage: 1, .. }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("takes 16 inputs, stage 0 gives 32"),
        "{err}"
    );
    for thread in threads {
        assert!(thread.join().unwrap(), "each stage saw the driver leave");
    }
}

#[test]
fn stages_with_a_shared_key_train_only_a_driver_that_holds_it() {
    let dir = std::env::temp_dir().join(format!("nnp-pipeline-psk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("cluster.key");
    let key = key.to_str().unwrap();
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_nnp"))
        .args(["keygen", "--psk", "--out", key])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let mut processes = Processes(Vec::new());
    let mut addrs = Vec::new();
    for range in &STAGES {
        let (child, addr) = nnp_stage_with("127.0.0.1:0", range, &["--psk-file", key]);
        processes.0.push(child);
        addrs.push(addr);
    }
    let driver = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_nnp"))
            .args(["--json", "pipeline", "driver", "--stages", &addrs.join(",")])
            .args(["--steps", "10", "--resume-timeout-ms", "300"])
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    };
    let keyed = driver(&["--psk-file", key]);
    assert!(keyed.status.success(), "{keyed:?}");
    let text = String::from_utf8(keyed.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(summary["event"], "summary", "{summary}");
    assert_eq!(summary["steps"], 10, "{summary}");
    let keyless = driver(&[]);
    assert!(!keyless.status.success(), "{keyless:?}");
    let err = String::from_utf8_lossy(&keyless.stderr);
    assert!(err.contains("authentication"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
