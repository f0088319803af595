//! The dense network learns from real data: the handwritten digits.

use nnp::dataset::{self, shuffled};
use nnp::nn::{HebbianLearningMode, NeuralNetwork};

#[test]
fn backprop_reaches_97_percent_on_held_out_digits() {
    let data = dataset::digits().unwrap();
    let (train, test) = data.split(0.25, 0);
    let mut net = NeuralNetwork::with_seed(&[64, 32, 10], 0.05, HebbianLearningMode::Oja, 1);
    let before = net.accuracy(&test.inputs, &test.labels);
    for epoch in 0..40 {
        net.train_epoch(
            &train.inputs,
            &train.labels,
            16,
            &shuffled(train.len(), epoch),
        );
    }
    let after = net.accuracy(&test.inputs, &test.labels);
    assert!(
        before < 0.3,
        "an untrained network is near chance: {before}"
    );
    assert!(after >= 0.97, "held-out accuracy {after}");
}

#[test]
fn gradients_match_finite_differences() {
    let data = dataset::digits().unwrap();
    let net = NeuralNetwork::with_seed(&[64, 6, 10], 0.1, HebbianLearningMode::Oja, 3);
    let (x, y) = (&data.inputs[..64 * 4], &data.labels[..4]);
    let (grads, _) = net.gradients(x, y);
    let loss = |n: &NeuralNetwork| -> f64 {
        (0..4)
            .map(|s| -(n.forward(&x[s * 64..(s + 1) * 64]).1[y[s]] as f64).ln())
            .sum::<f64>()
            / 4.0
    };
    for (layer, g) in grads.iter().enumerate() {
        for &k in &[0, 7, g.len() / 2, g.len() - 1] {
            let h = 1e-2f32;
            let mut plus = net.clone();
            let mut minus = net.clone();
            let p = net.params(layer)[k];
            plus.write_params(layer, k, &[p + h]);
            minus.write_params(layer, k, &[p - h]);
            let numeric = (loss(&plus) - loss(&minus)) / (2.0 * h as f64);
            assert!(
                (numeric - g[k] as f64).abs() < 2e-3 + 0.05 * numeric.abs(),
                "layer {layer} param {k}: analytic {} numeric {numeric}",
                g[k]
            );
        }
    }
}

fn principal_components() -> Vec<Vec<f32>> {
    include_str!("fixtures/digits_pcs.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .collect()
}

#[test]
fn ojas_rule_finds_the_first_principal_component() {
    let data = dataset::digits().unwrap();
    let n = data.len();
    let mut mean = vec![0f32; 64];
    for i in 0..n {
        mean.iter_mut()
            .zip(data.row(i))
            .for_each(|(m, v)| *m += v / n as f32);
    }
    let centred: Vec<Vec<f32>> = (0..n)
        .map(|i| data.row(i).iter().zip(&mean).map(|(v, m)| v - m).collect())
        .collect();
    let mut net = NeuralNetwork::with_seed(&[64, 1], 0.002, HebbianLearningMode::Oja, 5);
    for epoch in 0..60 {
        for i in shuffled(n, epoch) {
            net.hebbian_update(&centred[i]);
        }
    }
    let w = &net.params(0)[..64];
    let pc1 = &principal_components()[0];
    let norm = w.iter().map(|v| v * v).sum::<f32>().sqrt();
    let cosine = w.iter().zip(pc1).map(|(a, b)| a * b).sum::<f32>() / norm;
    assert!(
        (norm - 1.0).abs() < 0.05,
        "Oja's rule normalises the weights: {norm}"
    );
    assert!(cosine.abs() >= 0.99, "|cosine| with PC1 = {}", cosine.abs());
}

#[test]
fn classic_hebb_with_decay_stays_bounded() {
    let data = dataset::digits().unwrap();
    let mut net = NeuralNetwork::with_seed(&[64, 8], 0.01, HebbianLearningMode::Classic, 2);
    for step in 0..100_000 {
        net.hebbian_update(data.row(step % data.len()));
    }
    let max = net.params(0).iter().fold(0f32, |m, w| m.max(w.abs()));
    assert!(max.is_finite() && max < 100.0, "largest weight {max}");
}
