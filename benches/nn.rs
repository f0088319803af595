//! nn throughput: forward GFLOP/s beside matrixmultiply's sgemm on the same shapes, the
//! runtime-dispatched AVX2/FMA kernels beside the SSE2-only (portable `wide`) build of the
//! same kernels, and time to train the digits set to 0.97 held-out accuracy.
//!
//! `cargo bench --bench nn`. Every figure is the median of several timed runs; ratios are
//! against a baseline measured in the same run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Instant;

use nnp::nn::{
    kernels, one_hot, uses_sgemm, Activation, Adam, ForwardScratch, Loss, NeuralNetwork,
};

const RUNS: usize = 9;

/// Median seconds per call of `f`, each run repeating it enough to last ~20 ms.
fn median_secs(mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    f();
    let once = t.elapsed().as_secs_f64().max(1e-7);
    let reps = ((0.02 / once) as usize).clamp(1, 1_000_000);
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                / (1u32 << 24) as f32
                - 0.5
        })
        .collect()
}

fn gflops(b: usize, i: usize, o: usize, secs: f64) -> f64 {
    2.0 * (b * i * o) as f64 / secs / 1e9
}

fn forward_vs_sgemm() {
    println!("## forward (Linear layer: matmul + bias) vs matrixmultiply::sgemm, same shapes");
    println!(
        "{:>14} {:>12} {:>12} {:>8}",
        "b x in x out", "nn GFLOP/s", "sgemm", "ratio"
    );
    for (b, i, o) in [
        (1, 784, 128),
        (32, 100, 100),
        (64, 784, 128),
        (256, 512, 512),
    ] {
        let net = NeuralNetwork::builder(&[i, o])
            .output_activation(Activation::Linear)
            .build()
            .unwrap();
        let x = data(b * i, 1);
        let mut scratch = ForwardScratch::new();
        let t_nn = if b == 1 {
            median_secs(|| {
                black_box(net.forward_into(black_box(&x), &mut scratch).unwrap());
            })
        } else {
            median_secs(|| {
                black_box(net.forward_batch(black_box(&x), &mut scratch).unwrap());
            })
        };
        let mut c = vec![0.0; b * o];
        let w = net.layer_weights(0).to_vec();
        let t_sg = median_secs(|| kernels::sgemm_nt(black_box(&x), &w, &mut c, i, o));
        let (g_nn, g_sg) = (gflops(b, i, o, t_nn), gflops(b, i, o, t_sg));
        let path = match (b, uses_sgemm(b, i, o)) {
            (1, _) => "matvec",
            (_, true) => "sgemm",
            (_, false) => "matmul_nt",
        };
        println!(
            "{:>14} {:>12.1} {:>12.1} {:>7.2}x  via {path}",
            format!("{b}x{i}x{o}"),
            g_nn,
            g_sg,
            g_nn / g_sg
        );
    }
}

fn dispatch_vs_sse2() {
    println!();
    println!(
        "## kernels: runtime dispatch (AVX2+FMA available: {}) vs SSE2-only build of the same code",
        kernels::wide_instructions_available()
    );
    println!(
        "{:>26} {:>12} {:>12} {:>8}",
        "kernel", "dispatch", "SSE2", "ratio"
    );
    let (i, o) = (784, 128);
    let w = data(i * o, 2);
    let x = data(i, 3);
    let mut y = vec![0.0; o];
    let t_d = median_secs(|| kernels::matvec(&w, black_box(&x), &mut y));
    let t_p = median_secs(|| kernels::portable::matvec(&w, black_box(&x), &mut y));
    let (gd, gp) = (gflops(1, i, o, t_d), gflops(1, i, o, t_p));
    println!(
        "{:>26} {:>12.1} {:>12.1} {:>7.2}x",
        "matvec 784x128",
        gd,
        gp,
        gd / gp
    );
    let a = data(4096, 4);
    let t_d = median_secs(|| {
        black_box(kernels::dot(black_box(&a), &a));
    });
    let t_p = median_secs(|| {
        black_box(kernels::portable::dot(black_box(&a), &a));
    });
    let (gd, gp) = (2.0 * 4096.0 / t_d / 1e9, 2.0 * 4096.0 / t_p / 1e9);
    println!(
        "{:>26} {:>12.1} {:>12.1} {:>7.2}x",
        "dot 4096",
        gd,
        gp,
        gd / gp
    );
    for (b, i, o) in [
        (4, 784, 128),
        (32, 100, 100),
        (64, 784, 128),
        (256, 512, 512),
        (256, 784, 128),
        (1024, 784, 128),
        (64, 512, 512),
        (128, 512, 512),
        (256, 100, 100),
        (1024, 100, 100),
        (16, 1024, 1024),
        (64, 256, 256),
    ] {
        let a = data(b * i, 5);
        let w = data(o * i, 6);
        let mut c = vec![0.0; b * o];
        let t_d = median_secs(|| kernels::matmul_nt(black_box(&a), &w, &mut c, i, o));
        let t_p = median_secs(|| kernels::portable::matmul_nt(black_box(&a), &w, &mut c, i, o));
        let t_s = median_secs(|| kernels::sgemm_nt(black_box(&a), &w, &mut c, i, o));
        let (gd, gp, gs) = (
            gflops(b, i, o, t_d),
            gflops(b, i, o, t_p),
            gflops(b, i, o, t_s),
        );
        println!(
            "{:>26} {:>12.1} {:>12.1} {:>7.2}x   (sgemm {:.1}, own/sgemm {:.2}x)",
            format!("matmul_nt {b}x{i}x{o}"),
            gd,
            gp,
            gd / gp,
            gs,
            gd / gs
        );
    }
}

fn digits_to_97() {
    println!();
    println!("## digits: 64-64(ReLU)-10(softmax), Adam 0.01, batch 16, split seed 3 (75/25)");
    let d = common::load_digits();
    let (train, test) = common::stratified_split(&d.y, 3);
    let (xtr, ytr) = d.select(&train);
    let (xte, yte) = d.select(&test);
    let ttr = one_hot(&ytr, 10).unwrap();
    let mut times = Vec::new();
    let mut epochs_needed = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        let mut net = NeuralNetwork::builder(&[64, 64, 10])
            .hidden_activation(Activation::Relu)
            .output_activation(Activation::Softmax)
            .seed(3)
            .build()
            .unwrap();
        let mut opt = Adam::new(0.01);
        let mut epochs = 0;
        loop {
            net.train_epoch(&xtr, &ttr, 16, Loss::CrossEntropy, true, &mut opt)
                .unwrap();
            epochs += 1;
            if net.accuracy(&xte, &yte).unwrap() >= 0.97 || epochs == 100 {
                break;
            }
        }
        times.push(t.elapsed().as_secs_f64());
        epochs_needed = epochs;
    }
    times.sort_by(f64::total_cmp);
    let per_epoch = times[RUNS / 2] / epochs_needed as f64;
    println!(
        "time to >= 0.97 held-out: {:.1} ms median ({} epochs incl. evaluation, {:.2} ms/epoch); sklearn reference 0.7 s -> {:.3}x of it",
        times[RUNS / 2] * 1e3,
        epochs_needed,
        per_epoch * 1e3,
        times[RUNS / 2] / 0.7
    );
}

fn main() {
    forward_vs_sgemm();
    dispatch_vs_sse2();
    digits_to_97();
}
