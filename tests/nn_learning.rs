//! Learning on real data: the 8x8 digits set (data/digits.csv.gz) for backprop and the
//! Hebbian rules, plus synthetic data for the properties BCM and anti-Hebbian learning are
//! known for.

mod common;

use common::{abs_cosine, load_digits, load_pca, permutation, stratified_split};
use nnp::nn::{
    one_hot, Activation, Adam, FitConfig, HebbianLearningMode, HebbianParams, Loss, NeuralNetwork,
};

fn linear_net(sizes: &[usize], mode: HebbianLearningMode, lr: f32, seed: u64) -> NeuralNetwork {
    NeuralNetwork::builder(sizes)
        .hidden_activation(Activation::Linear)
        .output_activation(Activation::Linear)
        .mode(mode)
        .learning_rate(lr)
        .seed(seed)
        .build()
        .unwrap()
}

/// Runs `epochs` Hebbian epochs over the rows of `x` (width 64), reshuffled every epoch,
/// with the learning rate decaying as `lr0 / (1 + epoch / half)`.
fn hebbian_epochs(net: &mut NeuralNetwork, x: &[f32], epochs: usize, lr0: f32, half: f32) {
    let n = x.len() / 64;
    for e in 0..epochs {
        net.set_learning_rate(lr0 / (1.0 + e as f32 / half));
        for i in permutation(n, 1000 + e as u64) {
            net.hebbian_update(&x[i * 64..(i + 1) * 64]).unwrap();
        }
    }
}

/// 64-64(ReLU)-10(softmax), Adam, 30 epochs, on a seeded stratified 75/25 split.
///
/// The held-out accuracy depends on the split: with this configuration the final-epoch
/// accuracy was 0.970, 0.986, 0.986, 0.970 and 0.991 for split seeds 1, 2, 3, 7, 11. The
/// test uses seed 3 and asserts the required 0.97.
#[test]
fn backprop_reaches_97_percent_on_held_out_digits() {
    let d = load_digits();
    let (train, test) = stratified_split(&d.y, 3);
    let (xtr, ytr) = d.select(&train);
    let (xte, yte) = d.select(&test);
    let mut net = NeuralNetwork::builder(&[64, 64, 10])
        .hidden_activation(Activation::Relu)
        .output_activation(Activation::Softmax)
        .seed(3)
        .build()
        .unwrap();
    let cfg = FitConfig {
        epochs: 30,
        batch_size: 16,
        loss: Loss::CrossEntropy,
        shuffle: true,
    };
    net.fit(
        &xtr,
        &one_hot(&ytr, 10).unwrap(),
        &cfg,
        &mut Adam::new(0.01),
    )
    .unwrap();
    let acc = net.accuracy(&xte, &yte).unwrap();
    println!("held-out accuracy {acc} on {} samples", yte.len());
    assert!(acc >= 0.97, "held-out accuracy {acc}");
}

#[test]
fn oja_finds_the_first_principal_component() {
    let d = load_digits();
    let x = d.centred();
    let pca = load_pca();
    let mut net = linear_net(&[64, 1], HebbianLearningMode::Oja, 0.0, 1);
    hebbian_epochs(&mut net, &x, 40, 0.02, 4.0);
    let cos = abs_cosine(net.layer_weights(0), &pca[0]);
    let norm: f32 = net
        .layer_weights(0)
        .iter()
        .map(|w| w * w)
        .sum::<f32>()
        .sqrt();
    println!("Oja: |cos| with PC1 = {cos}, |w| = {norm}");
    assert!(cos >= 0.99, "|cos| {cos}");
    assert!(
        (norm - 1.0).abs() < 0.05,
        "Oja's weight vector is unit norm, got {norm}"
    );
}

#[test]
fn sanger_finds_the_top_three_components() {
    let d = load_digits();
    let x = d.centred();
    let pca = load_pca();
    let mut net = linear_net(&[64, 3], HebbianLearningMode::Sanger, 0.0, 2);
    hebbian_epochs(&mut net, &x, 60, 0.02, 4.0);
    for (k, pc) in pca.iter().enumerate().take(3) {
        let cos = abs_cosine(&net.layer_weights(0)[k * 64..(k + 1) * 64], pc);
        println!("Sanger: |cos| row {k} with PC{} = {cos}", k + 1);
        assert!(cos >= 0.95, "component {k}: |cos| {cos}");
    }
}

/// Purity: the fraction of samples whose cluster's majority label is their own.
fn purity(assign: &[usize], labels: &[usize], clusters: usize) -> f32 {
    let mut counts = vec![[0usize; 10]; clusters];
    for (&c, &l) in assign.iter().zip(labels) {
        counts[c][l] += 1;
    }
    counts
        .iter()
        .map(|c| *c.iter().max().unwrap())
        .sum::<usize>() as f32
        / labels.len() as f32
}

#[test]
fn competitive_clusters_beat_chance_purity() {
    // Margin asserted: purity >= chance purity + 0.40, where chance purity is that of the
    // same cluster sizes with labels shuffled (about 0.11 here).
    let d = load_digits();
    let k = 10;
    let mut net = linear_net(&[64, k], HebbianLearningMode::Competitive, 0.0, 3);
    // Prototypes start at k random samples (as in k-means), so no unit starts dead.
    let start = permutation(d.len(), 99);
    let mut init = Vec::new();
    for &i in &start[..k] {
        init.extend_from_slice(d.row(i));
    }
    net.set_layer_weights(0, &init).unwrap();
    hebbian_epochs(&mut net, &d.x, 20, 0.1, 2.0);
    let w = net.layer_weights(0);
    let assign: Vec<usize> = (0..d.len())
        .map(|i| {
            let x = d.row(i);
            (0..k)
                .min_by(|&a, &b| {
                    let da: f32 = w[a * 64..(a + 1) * 64]
                        .iter()
                        .zip(x)
                        .map(|(w, x)| (w - x) * (w - x))
                        .sum();
                    let db: f32 = w[b * 64..(b + 1) * 64]
                        .iter()
                        .zip(x)
                        .map(|(w, x)| (w - x) * (w - x))
                        .sum();
                    da.total_cmp(&db)
                })
                .unwrap()
        })
        .collect();
    let got = purity(&assign, &d.y, k);
    let chance: f32 = (0..5)
        .map(|s| {
            let p = permutation(d.len(), 500 + s);
            let shuffled: Vec<usize> = p.iter().map(|&i| d.y[i]).collect();
            purity(&assign, &shuffled, k)
        })
        .sum::<f32>()
        / 5.0;
    println!("competitive purity {got}, chance {chance}");
    assert!(got >= chance + 0.40, "purity {got} vs chance {chance}");
}

#[test]
fn classic_hebb_stays_bounded_over_100k_steps() {
    let d = load_digits();
    let mut net = linear_net(&[64, 8], HebbianLearningMode::Classic, 0.1, 4);
    for step in 0..100_000 {
        net.hebbian_update(d.row(step % d.len())).unwrap();
    }
    let w = net.layer_weights(0);
    assert!(w.iter().all(|v| v.is_finite()));
    for row in w.chunks_exact(64) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(norm <= 1.0 + 1e-4, "row norm {norm}");
    }
    // Bounded yet still Hebbian: rows align with the dominant (mean) input direction.
    let mean: Vec<f32> = (0..64)
        .map(|j| (0..d.len()).map(|i| d.row(i)[j]).sum::<f32>())
        .collect();
    assert!(abs_cosine(&w[..64], &mean) > 0.9);
}

#[test]
fn bcm_becomes_selective_and_its_threshold_tracks_mean_square_response() {
    // Four non-negative, linearly independent patterns, presented at random. BCM's stable
    // states respond to exactly one pattern (y = θ) and to none of the others (y = 0).
    let patterns: [[f32; 8]; 4] = [
        [1.0, 0.8, 0.2, 0.0, 0.1, 0.0, 0.3, 0.0],
        [0.0, 0.3, 1.0, 0.7, 0.0, 0.2, 0.0, 0.1],
        [0.2, 0.0, 0.0, 0.3, 1.0, 0.6, 0.0, 0.0],
        [0.0, 0.1, 0.0, 0.0, 0.2, 0.5, 1.0, 0.9],
    ];
    let mut net = NeuralNetwork::builder(&[8, 3])
        .output_activation(Activation::Linear)
        .mode(HebbianLearningMode::Bcm)
        .learning_rate(0.005)
        .hebbian_params(HebbianParams {
            bcm_threshold_rate: 0.2,
            ..HebbianParams::default()
        })
        .seed(5)
        .build()
        .unwrap();
    // Start from small positive weights, so every unit responds a little to everything.
    let w0: Vec<f32> = net
        .layer_weights(0)
        .iter()
        .map(|w| 0.1 + 0.05 * w.abs())
        .collect();
    net.set_layer_weights(0, &w0).unwrap();
    let order = permutation(40_000, 6);
    for &k in &order {
        net.hebbian_update(&patterns[k % 4]).unwrap();
    }
    for unit in 0..3 {
        let w = &net.layer_weights(0)[unit * 8..(unit + 1) * 8];
        let mut y: Vec<f32> = patterns
            .iter()
            .map(|p| p.iter().zip(w).map(|(a, b)| a * b).sum())
            .collect();
        let mean_sq = y.iter().map(|v| v * v).sum::<f32>() / 4.0;
        let theta = net.bcm_thresholds(0)[unit];
        y.sort_by(|a, b| b.total_cmp(a));
        println!("BCM unit {unit}: responses {y:?}, θ {theta}, E[y²] {mean_sq}");
        // Selective: the best pattern drives the unit at least 10x more than any other.
        assert!(
            y[0] > 0.5 && y[1].abs() < 0.1 * y[0],
            "unit {unit} responses {y:?}"
        );
        // The sliding threshold tracks E[y²] (within 15%: it is a noisy running average).
        assert!(
            (theta - mean_sq).abs() <= 0.15 * mean_sq,
            "θ {theta} vs E[y²] {mean_sq}"
        );
    }
}

/// Mean |correlation| between distinct outputs of layer 0 over the data.
fn mean_offdiag_correlation(net: &NeuralNetwork, x: &[f32]) -> f32 {
    let k = net.layer_shape(0).0;
    let outs: Vec<Vec<f32>> = x
        .chunks_exact(64)
        .map(|r| net.forward(r).unwrap().1)
        .collect();
    let n = outs.len() as f64;
    let mean: Vec<f64> = (0..k)
        .map(|i| outs.iter().map(|o| o[i] as f64).sum::<f64>() / n)
        .collect();
    let cov = |i: usize, j: usize| {
        outs.iter()
            .map(|o| (o[i] as f64 - mean[i]) * (o[j] as f64 - mean[j]))
            .sum::<f64>()
            / n
    };
    let mut total = 0.0;
    let mut pairs = 0;
    for i in 0..k {
        for j in 0..i {
            total += (cov(i, j) / (cov(i, i) * cov(j, j)).sqrt()).abs();
            pairs += 1;
        }
    }
    (total / pairs as f64) as f32
}

#[test]
fn anti_hebbian_decorrelates_outputs() {
    let d = load_digits();
    let x = d.centred();
    let mut net = linear_net(&[64, 4], HebbianLearningMode::AntiHebbian, 0.0, 7);
    let before = mean_offdiag_correlation(&net, &x);
    hebbian_epochs(&mut net, &x, 10, 0.02, 3.0);
    let after = mean_offdiag_correlation(&net, &x);
    println!("anti-Hebbian: mean |corr| between outputs {before} -> {after}");
    assert!(before > 0.2, "the start should be correlated: {before}");
    assert!(after < 0.05, "outputs still correlated: {after}");
    // Decorrelated, not silenced.
    let var: f32 = x
        .chunks_exact(64)
        .map(|r| net.forward(r).unwrap().1[0].powi(2))
        .sum::<f32>()
        / d.len() as f32;
    assert!(var > 1e-3, "output variance {var}");
}
