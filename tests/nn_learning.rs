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

/// Central finite differences of `loss` against the analytic gradients, at a few
/// parameters of every layer.
fn check_gradients(
    net: &NeuralNetwork,
    grads: &[Vec<f32>],
    loss: impl Fn(&NeuralNetwork) -> f64,
    what: &str,
) {
    for (layer, g) in grads.iter().enumerate() {
        for &k in &[0, 7, g.len() / 2, g.len() - 1] {
            let h = 1e-2f32;
            let (mut plus, mut minus) = (net.clone(), net.clone());
            let p = net.params(layer)[k];
            plus.write_params(layer, k, &[p + h]);
            minus.write_params(layer, k, &[p - h]);
            let numeric = (loss(&plus) - loss(&minus)) / (2.0 * h as f64);
            assert!(
                (numeric - g[k] as f64).abs() < 2e-3 + 0.05 * numeric.abs(),
                "{what}: layer {layer} param {k}: analytic {} numeric {numeric}",
                g[k]
            );
        }
    }
}

#[test]
fn gradients_match_finite_differences_for_every_activation_and_both_losses() {
    use nnp::nn::Activation;
    let data = dataset::digits().unwrap();
    let (x, y) = (&data.inputs[..64 * 4], &data.labels[..4]);
    let targets: Vec<f32> = (0..4 * 10).map(|i| ((i * 7) % 10) as f32 / 10.0).collect();
    for hidden in [
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Relu,
        Activation::Linear,
    ] {
        for output in [Activation::Softmax, Activation::Sigmoid, Activation::Linear] {
            let mut net = NeuralNetwork::with_seed(&[64, 6, 10], 0.1, HebbianLearningMode::Oja, 3);
            net.set_activation(0, hidden);
            net.set_activation(1, output);
            let out = |n: &NeuralNetwork, s: usize| n.forward(&x[s * 64..(s + 1) * 64]).1;
            if output == Activation::Softmax {
                let (grads, _) = net.gradients(x, y);
                let ce = |n: &NeuralNetwork| -> f64 {
                    (0..4).map(|s| -(out(n, s)[y[s]] as f64).ln()).sum::<f64>() / 4.0
                };
                check_gradients(
                    &net,
                    &grads,
                    ce,
                    &format!("cross-entropy, {hidden:?} hidden"),
                );
            }
            let (grads, _) = net.gradients_mse(x, &targets);
            let mse = |n: &NeuralNetwork| -> f64 {
                (0..4)
                    .map(|s| {
                        out(n, s)
                            .iter()
                            .zip(&targets[s * 10..(s + 1) * 10])
                            .map(|(a, b)| 0.5 * ((a - b) as f64).powi(2))
                            .sum::<f64>()
                    })
                    .sum::<f64>()
                    / 4.0
            };
            check_gradients(
                &net,
                &grads,
                mse,
                &format!("MSE, {hidden:?} hidden, {output:?} output"),
            );
        }
    }
}

#[test]
fn adam_also_learns_the_digits() {
    let data = dataset::digits().unwrap();
    let (train, test) = data.split(0.25, 0);
    let mut net = NeuralNetwork::with_seed(&[64, 32, 10], 0.003, HebbianLearningMode::Oja, 2);
    net.set_optimizer(nnp::nn::Optimizer::ADAM);
    for epoch in 0..30 {
        net.train_epoch(
            &train.inputs,
            &train.labels,
            16,
            &shuffled(train.len(), epoch),
        );
    }
    let accuracy = net.accuracy(&test.inputs, &test.labels);
    assert!(accuracy >= 0.96, "held-out accuracy with Adam {accuracy}");
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

/// The digits with every pixel's mean removed.
fn centred_digits() -> Vec<Vec<f32>> {
    let data = dataset::digits().unwrap();
    let n = data.len();
    let mut mean = vec![0f32; 64];
    for i in 0..n {
        mean.iter_mut()
            .zip(data.row(i))
            .for_each(|(m, v)| *m += v / n as f32);
    }
    (0..n)
        .map(|i| data.row(i).iter().zip(&mean).map(|(v, m)| v - m).collect())
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn sangers_rule_finds_the_top_three_principal_components() {
    let centred = centred_digits();
    let mut net = NeuralNetwork::with_seed(&[64, 3], 0.002, HebbianLearningMode::Sanger, 11);
    for epoch in 0..150 {
        for i in shuffled(centred.len(), epoch) {
            net.hebbian_update(&centred[i]);
        }
    }
    let pcs = principal_components();
    for (k, pc) in pcs.iter().enumerate().take(3) {
        let row = &net.params(0)[k * 64..(k + 1) * 64];
        let c = cosine(row, pc).abs();
        assert!(c >= 0.95, "component {}: |cosine| {c}", k + 1);
    }
}

#[test]
fn bcm_threshold_tracks_the_mean_squared_response_and_stays_bounded() {
    let data = dataset::digits().unwrap();
    let mut net = NeuralNetwork::with_seed(&[64, 4], 0.0005, HebbianLearningMode::Bcm, 4);
    for epoch in 0..20 {
        for i in shuffled(data.len(), epoch) {
            net.hebbian_update(data.row(i));
        }
    }
    // The threshold is a running average over the last few inputs: average it over one more
    // epoch, during which the weights barely move.
    let mut theta_mean = [0f32; 4];
    for i in shuffled(data.len(), 99) {
        net.hebbian_update(data.row(i));
        for (m, t) in theta_mean.iter_mut().zip(net.thresholds(0)) {
            *m += t / data.len() as f32;
        }
    }
    let w = net.params(0)[..4 * 64].to_vec();
    assert!(
        w.iter().all(|v| v.is_finite() && v.abs() < 10.0),
        "weights bounded"
    );
    for i in 0..4 {
        let row = &w[i * 64..(i + 1) * 64];
        let ys: Vec<f32> = (0..data.len())
            .map(|s| {
                row.iter()
                    .zip(data.row(s))
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
                    .max(0.0)
            })
            .collect();
        let mean_sq = ys.iter().map(|y| y * y).sum::<f32>() / ys.len() as f32;
        let theta = theta_mean[i];
        assert!(mean_sq > 1e-4, "unit {i} responds");
        assert!(
            (theta - mean_sq).abs() <= 0.2 * mean_sq,
            "unit {i}: mean theta {theta} vs E[y^2] {mean_sq}"
        );
        // Selectivity: the unit answers strongly to a minority of the inputs.
        let strong = ys.iter().filter(|&&y| y > theta.sqrt()).count() as f32 / ys.len() as f32;
        assert!(
            strong < 0.5,
            "unit {i} answers above sqrt(theta) for {strong} of the inputs"
        );
    }
}

#[test]
fn competitive_learning_clusters_beat_chance_purity() {
    let data = dataset::digits().unwrap();
    let units = 20;
    let mut net = NeuralNetwork::with_seed(&[64, units], 0.05, HebbianLearningMode::Competitive, 9);
    for epoch in 0..15 {
        for i in shuffled(data.len(), epoch) {
            net.hebbian_update(data.row(i));
        }
    }
    let w = net.params(0)[..units * 64].to_vec();
    let winner = |x: &[f32]| {
        (0..units)
            .map(|u| {
                -w[u * 64..(u + 1) * 64]
                    .iter()
                    .zip(x)
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f32>()
            })
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap()
            .0
    };
    let mut counts = vec![[0usize; 10]; units];
    for i in 0..data.len() {
        counts[winner(data.row(i))][data.labels[i]] += 1;
    }
    let pure: usize = counts.iter().map(|c| *c.iter().max().unwrap()).sum();
    let purity = pure as f32 / data.len() as f32;
    // Chance: every cluster labelled with the most common digit, about 0.10.
    assert!(purity >= 0.5, "cluster purity {purity}");
}

#[test]
fn anti_hebbian_learning_silences_the_output_along_the_data() {
    let centred = centred_digits();
    let mut net = NeuralNetwork::with_seed(&[64, 4], 0.01, HebbianLearningMode::AntiHebbian, 6);
    let variance = |net: &NeuralNetwork| -> f32 {
        let w = &net.params(0)[..4 * 64];
        centred
            .iter()
            .map(|x| {
                (0..4)
                    .map(|i| {
                        w[i * 64..(i + 1) * 64]
                            .iter()
                            .zip(x)
                            .map(|(a, b)| a * b)
                            .sum::<f32>()
                            .powi(2)
                    })
                    .sum::<f32>()
            })
            .sum::<f32>()
            / centred.len() as f32
    };
    let before = variance(&net);
    for epoch in 0..10 {
        for i in shuffled(centred.len(), epoch) {
            net.hebbian_update(&centred[i]);
        }
    }
    let after = variance(&net);
    assert!(after < before / 10.0, "output variance {before} -> {after}");
    assert!(net.params(0).iter().all(|v| v.is_finite()));
}

#[test]
fn batched_forward_agrees_with_forward_per_sample() {
    let data = dataset::digits().unwrap();
    let net = NeuralNetwork::with_seed(&[64, 32, 10], 0.1, HebbianLearningMode::Oja, 8);
    let rows = 37;
    let batch = net.forward_batch(&data.inputs[..rows * 64]);
    for s in 0..rows {
        let single = net.forward(data.row(s)).1;
        for (b, o) in batch[s * 10..(s + 1) * 10].iter().zip(&single) {
            assert!((b - o).abs() < 1e-5, "sample {s}: {b} vs {o}");
        }
    }
}

#[test]
fn federated_average_weighs_by_samples_and_checks_shapes() {
    use nnp::nn::NnError;
    let a = NeuralNetwork::with_seed(&[4, 3, 2], 0.1, HebbianLearningMode::Oja, 1);
    let b = NeuralNetwork::with_seed(&[4, 3, 2], 0.1, HebbianLearningMode::Oja, 2);
    let avg = NeuralNetwork::average(&[(&a, 1), (&b, 3)]).unwrap();
    for l in 0..2 {
        for ((m, x), y) in avg.params(l).iter().zip(a.params(l)).zip(b.params(l)) {
            assert!((m - (0.25 * x + 0.75 * y)).abs() < 1e-6);
        }
    }
    let c = NeuralNetwork::with_seed(&[4, 5, 2], 0.1, HebbianLearningMode::Oja, 3);
    assert!(matches!(
        NeuralNetwork::average(&[(&a, 1), (&c, 1)]),
        Err(NnError::ShapeMismatch { index: 1, .. })
    ));
    assert_eq!(
        NeuralNetwork::average(&[]).unwrap_err(),
        NnError::NoNetworks
    );
    assert_eq!(
        NeuralNetwork::average(&[(&a, 0)]).unwrap_err(),
        NnError::NoSamples
    );
}
