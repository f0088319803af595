//! Dense forward throughput in GFLOP/s beside matrixmultiply's sgemm on the same shapes, in
//! the same run, and the time to train the digits to 0.97 held-out accuracy.
//!
//! `cargo bench --bench nn`

use std::time::{Duration, Instant};

use nnp::dataset::{self, shuffled};
use nnp::nn::kernels::{matmul_bias, matmul_bias_wide};
use nnp::nn::{HebbianLearningMode, NeuralNetwork};

/// Median seconds per call of `f` over enough calls to fill about 0.2 s, five times.
fn time(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u32;
    while start.elapsed() < Duration::from_millis(50) {
        f();
        calls += 1;
    }
    let per_round = calls.max(1) * 4;
    let mut samples: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_round {
                f();
            }
            t.elapsed().as_secs_f64() / f64::from(per_round)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[2]
}

fn main() {
    println!(
        "# nn: forward (W x + b) in GFLOP/s, ours vs matrixmultiply::sgemm, same shapes, same run"
    );
    for (batch, inputs, outputs) in [
        (1usize, 784usize, 128usize),
        (32, 100, 100),
        (64, 784, 128),
        (256, 512, 512),
    ] {
        let w: Vec<f32> = (0..inputs * outputs)
            .map(|i| ((i % 13) as f32 - 6.0) * 0.01)
            .collect();
        let b = vec![0.1f32; outputs];
        let x: Vec<f32> = (0..batch * inputs).map(|i| (i % 7) as f32 * 0.1).collect();
        let mut out = vec![0f32; batch * outputs];
        let flops = 2.0 * (batch * inputs * outputs) as f64;
        let ours = time(|| matmul_bias(&w, outputs, inputs, &x, &b, &mut out));
        let mut out3 = vec![0f32; batch * outputs];
        let wide_only = time(|| matmul_bias_wide(&w, outputs, inputs, &x, &b, &mut out3));
        let mut out2 = vec![0f32; batch * outputs];
        let reference = time(|| {
            for row in out2.chunks_mut(outputs) {
                row.copy_from_slice(&b);
            }
            // SAFETY: every pointer and stride describes a live, correctly sized row-major
            // buffer: x is batch x inputs, w (read as its transpose) inputs x outputs through
            // strides (1, inputs), out2 batch x outputs, and nothing aliases out2.
            unsafe {
                matrixmultiply::sgemm(
                    batch,
                    inputs,
                    outputs,
                    1.0,
                    x.as_ptr(),
                    inputs as isize,
                    1,
                    w.as_ptr(),
                    1,
                    inputs as isize,
                    1.0,
                    out2.as_mut_ptr(),
                    outputs as isize,
                    1,
                );
            }
        });
        let max_diff = out
            .iter()
            .zip(&out2)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max_diff < 1e-2, "results agree: {max_diff}");
        println!(
            "{batch:>4} x {inputs:>4} x {outputs:>4}   ours {:>7.2} GFLOP/s (wide kernel alone {:>6.2})   sgemm {:>7.2} GFLOP/s   ratio {:.2}x",
            flops / ours / 1e9,
            flops / wide_only / 1e9,
            flops / reference / 1e9,
            reference / ours
        );
    }

    let data = dataset::digits().unwrap();
    let (train, test) = data.split(0.25, 0);
    let start = Instant::now();
    let mut net = NeuralNetwork::with_seed(&[64, 32, 10], 0.05, HebbianLearningMode::Oja, 1);
    let mut epochs = 0;
    while net.accuracy(&test.inputs, &test.labels) < 0.97 && epochs < 200 {
        net.train_epoch(
            &train.inputs,
            &train.labels,
            16,
            &shuffled(train.len(), epochs),
        );
        epochs += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "digits 64-32-10 to {:.3} held-out accuracy: {epochs} epochs in {elapsed:.3} s (scikit-learn's MLPClassifier, 64 hidden: 0.72 s on this machine)",
        net.accuracy(&test.inputs, &test.labels)
    );
}
