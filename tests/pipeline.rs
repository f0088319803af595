//! Pipelines over real sockets on loopback: stages on threads (the library), then as
//! separate `nnp` processes (the command line), on the digits set.

mod common;

use std::net::SocketAddr;
use std::ops::Range;
use std::thread::JoinHandle;

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
