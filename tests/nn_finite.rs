//! The nn finiteness policy on real data (the 8x8 digits): a NaN or infinity given to the
//! network is refused with `NnError::NonFinite` naming the layer and the first bad index,
//! and nothing changes; training that diverges stops with `NnError::Overflow` naming the
//! layer, the network left as before the failing step with every parameter finite.

mod common;

use common::{load_digits, Digits};
use nnp::nn::{
    one_hot, Activation, Adam, FitConfig, ForwardScratch, Gradients, HebbianLearningMode, Loss,
    MappedWeights, NeuralNetwork, NnError, Optimizer, Sgd, WeightsFileProblem,
};

const BAD: [f32; 3] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];

/// Every parameter of every layer, as bits (so NaN compares and -0.0 differs from 0.0).
fn param_bits(net: &NeuralNetwork) -> Vec<Vec<u32>> {
    (0..net.layer_count())
        .map(|l| net.layer_params(l).iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// Parameters and Hebbian correlations and thresholds, as bits.
fn state_bits(net: &NeuralNetwork) -> Vec<Vec<u32>> {
    let mut v = param_bits(net);
    for l in 0..net.layer_count() {
        v.push(
            net.layer_correlations(l)
                .iter()
                .map(|x| x.to_bits())
                .collect(),
        );
        v.push(net.bcm_thresholds(l).iter().map(|x| x.to_bits()).collect());
    }
    v
}

fn all_finite(net: &NeuralNetwork) -> bool {
    (0..net.layer_count()).all(|l| net.layer_params(l).iter().all(|v| v.is_finite()))
}

fn classifier(hidden: Activation, seed: u64) -> NeuralNetwork {
    NeuralNetwork::builder(&[64, 32, 10])
        .hidden_activation(hidden)
        .output_activation(Activation::Softmax)
        .seed(seed)
        .build()
        .unwrap()
}

/// Asserts `r` is `NonFinite` with these fields (and the value at that index).
#[track_caller]
fn assert_non_finite<T: std::fmt::Debug>(
    r: Result<T, NnError>,
    what: &str,
    layer: usize,
    index: usize,
    value: f32,
) {
    match r {
        Err(NnError::NonFinite {
            what: w,
            layer: l,
            index: i,
            value: v,
        }) => {
            assert_eq!((w, l, i), (what, layer, index));
            assert_eq!(v.to_bits(), value.to_bits());
        }
        other => {
            panic!("expected NonFinite {{ {what}, layer {layer}, index {index} }}, got {other:?}")
        }
    }
}

/// The digits' first `rows` rows.
fn rows(d: &Digits, rows: usize) -> &[f32] {
    &d.x[..rows * Digits::WIDTH]
}

#[test]
fn the_symptoms_are_gone() {
    // An all-NaN input through ReLU and softmax (which used to hide it as 0 and as a
    // uniform output) is an error, not an ordinary-looking answer.
    let net = NeuralNetwork::builder(&[30, 16, 4])
        .hidden_activation(Activation::Relu)
        .output_activation(Activation::Softmax)
        .build()
        .unwrap();
    assert_non_finite(net.forward(&[f32::NAN; 30]), "input", 0, 0, f32::NAN);
    let err = net.forward(&[f32::NAN; 30]).unwrap_err().to_string();
    assert!(err.contains("layer 0") && err.contains("index 0"), "{err}");
}

#[test]
fn forward_refuses_nan_and_infinity_single_and_batch() {
    let d = load_digits();
    let mut s = ForwardScratch::new();
    for hidden in [Activation::Relu, Activation::Sigmoid, Activation::Tanh] {
        let mut net = classifier(hidden, 5);
        // A weight column of zeros: `0 * inf` and `0 * NaN` are NaN, so a bad value there is
        // still seen (no kernel skips a zero weight).
        let mut w = net.layer_weights(0).to_vec();
        for row in w.chunks_exact_mut(64) {
            row[0] = 0.0;
        }
        net.set_layer_weights(0, &w).unwrap();
        for (k, bad) in BAD.into_iter().enumerate() {
            // One sample: forward, forward_into, predict_class, forward_from_into.
            for col in [0, 1, 37, 63] {
                let mut x = d.row(100 + k).to_vec();
                x[col] = bad;
                assert_non_finite(net.forward(&x), "input", 0, col, bad);
                assert_non_finite(net.forward_into(&x, &mut s), "input", 0, col, bad);
                assert_non_finite(net.predict_class(&x, &mut s), "input", 0, col, bad);
            }
            let hidden_out = net.forward(d.row(3)).unwrap().0[1].clone();
            let mut h = hidden_out.clone();
            h[31] = bad;
            assert_non_finite(net.forward_from_into(1, &h, &mut s), "input", 1, 31, bad);
            // Batches through every product kernel: matmul_nt (small), sgemm (>= 32 rows).
            for batch in [2, 5, 40, 300] {
                assert!(nnp::nn::uses_sgemm(batch, 64, 32) == (batch >= 32));
                let mut x = rows(&d, batch).to_vec();
                let at = (batch - 1) * 64 + 17;
                x[at] = bad;
                let last = x.len() - 1;
                x[last] = f32::NAN; // a later bad value: the first one is named
                assert_non_finite(net.forward_batch(&x, &mut s), "input", 0, at, bad);
                let labels = &d.y[..batch];
                assert_non_finite(net.accuracy(&x, labels), "input", 0, at, bad);
                let hb: Vec<f32> = (0..batch).flat_map(|_| hidden_out.clone()).collect();
                let mut hb = hb;
                hb[batch * 32 - 2] = bad;
                assert_non_finite(
                    net.forward_batch_from(1, &hb, &mut s),
                    "input",
                    1,
                    batch * 32 - 2,
                    bad,
                );
            }
        }
        // The clean data still goes through, and its outputs are finite.
        let out = net.forward_batch(&d.x, &mut s).unwrap();
        assert!(out.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn a_mapped_weights_file_refuses_them_too() {
    let d = load_digits();
    let net = classifier(Activation::Tanh, 6);
    let m = MappedWeights::from_bytes(&net.to_weights_bytes()).unwrap();
    let mut s = ForwardScratch::new();
    let mut x = rows(&d, 3).to_vec();
    x[70] = f32::INFINITY;
    assert_non_finite(m.forward_batch(&x, &mut s), "input", 0, 70, f32::INFINITY);
    assert_non_finite(
        m.forward_into(&x[64..128], &mut s),
        "input",
        0,
        6,
        f32::INFINITY,
    );
}

#[test]
fn forward_overflow_is_an_error_not_a_silent_nan() {
    // Finite inputs so large that `W x + b` overflows f32 (through softmax this used to be
    // a NaN output, or a uniform one).
    let d = load_digits();
    let net = classifier(Activation::Relu, 7);
    let x: Vec<f32> = d.row(0).iter().map(|v| (v + 1.0) * 1e38).collect();
    match net.forward(&x) {
        Err(NnError::Overflow {
            what: "pre-activation",
            layer: 0,
            ..
        }) => {}
        other => panic!("expected an overflow in layer 0, got {other:?}"),
    }
}

/// The digits with one-hot targets, and a row `row` whose pixel `col` is `bad`.
fn poisoned(d: &Digits, row: usize, col: usize, bad: f32) -> (Vec<f32>, Vec<f32>) {
    let mut x = d.x.clone();
    x[row * 64 + col] = bad;
    (x, one_hot(&d.y, 10).unwrap())
}

#[test]
fn fit_refuses_a_nan_in_one_row_and_changes_nothing() {
    let d = load_digits();
    let cfg = FitConfig {
        epochs: 3,
        batch_size: 16,
        loss: Loss::CrossEntropy,
        shuffle: true,
    };
    for (bad, row, col) in [
        (f32::NAN, 1000, 42),
        (f32::INFINITY, 1796, 63),
        (f32::NEG_INFINITY, 0, 0),
    ] {
        let (x, t) = poisoned(&d, row, col, bad);
        let mut net = classifier(Activation::Relu, 8);
        let before = param_bits(&net);
        let r = net.fit(&x, &t, &cfg, &mut Adam::new(0.01));
        assert_non_finite(r, "input", 0, row * 64 + col, bad);
        assert_eq!(param_bits(&net), before, "a refused fit changes nothing");
        // The message names the layer and the index (from which the row follows).
        let e = net.fit(&x, &t, &cfg, &mut Adam::new(0.01)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("index {}", row * 64 + col)), "{msg}");
        // train_epoch and batch_gradients refuse it the same way.
        assert_non_finite(
            net.train_epoch(
                &x,
                &t,
                16,
                Loss::CrossEntropy,
                true,
                &mut Sgd::new(0.1, 0.9),
            ),
            "input",
            0,
            row * 64 + col,
            bad,
        );
        assert_non_finite(
            net.batch_gradients(&x, &t, Loss::CrossEntropy),
            "input",
            0,
            row * 64 + col,
            bad,
        );
        assert_eq!(param_bits(&net), before);
    }
    // A bad target is refused likewise (index into the flat targets, row = index / 10).
    let mut net = classifier(Activation::Relu, 8);
    let before = param_bits(&net);
    let mut t = one_hot(&d.y, 10).unwrap();
    t[123 * 10 + 4] = f32::NAN;
    assert_non_finite(
        net.fit(&d.x, &t, &cfg, &mut Adam::new(0.01)),
        "target",
        1,
        1234,
        f32::NAN,
    );
    assert_non_finite(
        net.backward(d.row(123), &t[1230..1240], Loss::MeanSquaredError),
        "target",
        1,
        4,
        f32::NAN,
    );
    assert_eq!(param_bits(&net), before);
}

/// An optimizer that records the network after every successful step, to check where a
/// failed fit leaves the network.
struct Recording {
    inner: Box<dyn Optimizer>,
    steps: usize,
    last_ok: Vec<Vec<u32>>,
}

impl Optimizer for Recording {
    fn step(&mut self, net: &mut NeuralNetwork, grads: &Gradients) -> Result<(), NnError> {
        self.inner.step(net, grads)?;
        self.steps += 1;
        self.last_ok = param_bits(net);
        Ok(())
    }
}

#[test]
fn diverging_training_stops_naming_a_layer_before_a_parameter_turns_non_finite() {
    let d = load_digits();
    let t = one_hot(&d.y, 10).unwrap();
    let cfg = FitConfig {
        epochs: 5,
        batch_size: 16,
        loss: Loss::CrossEntropy,
        shuffle: true,
    };
    // Learning rate 1e30 (1e36 for Adam, whose step is about its rate in size): ReLU
    // networks blow up until `W x + b` overflows in a forward pass; the tanh network's Adam
    // step itself would overflow a parameter, and is refused. (With tanh, SGD at 1e30
    // saturates the units instead, their gradients vanish and the loss stays finite: a
    // failure, but not a non-finite one.)
    type Make = fn() -> Box<dyn Optimizer>;
    let cases: [(&str, Activation, Make, &str); 4] = [
        (
            "sgd 1e30",
            Activation::Relu,
            || Box::new(Sgd::new(1e30, 0.0)),
            "pre-activation",
        ),
        (
            "sgd 1e30 momentum 0.9",
            Activation::Relu,
            || Box::new(Sgd::new(1e30, 0.9)),
            "pre-activation",
        ),
        (
            "adam 1e30",
            Activation::Relu,
            || Box::new(Adam::new(1e30)),
            "pre-activation",
        ),
        (
            "adam 1e36",
            Activation::Tanh,
            || Box::new(Adam::new(1e36)),
            "parameters",
        ),
    ];
    for (name, hidden, make, expected) in cases {
        let mut net = classifier(hidden, 9);
        let mut opt = Recording {
            inner: make(),
            steps: 0,
            last_ok: param_bits(&net),
        };
        let e = net.fit(&d.x, &t, &cfg, &mut opt).expect_err(name);
        match e {
            NnError::Overflow { what, layer, .. } => {
                assert_eq!(what, expected, "{name}: {e}");
                assert!(layer < 2, "{name}: {e}");
            }
            ref other => panic!("{name}: expected an overflow, got {other:?}"),
        }
        assert!(e.to_string().contains("layer "), "{e}");
        assert!(all_finite(&net), "{name}: every parameter stays finite");
        assert!(opt.steps > 0, "{name}: it trained before it diverged");
        // Exactly the network of the last step that succeeded.
        assert_eq!(
            param_bits(&net),
            opt.last_ok,
            "{name} after {} steps",
            opt.steps
        );
        println!("{name}: {e} after {} good steps", opt.steps);
    }
}

#[test]
fn a_refused_optimizer_step_changes_neither_network_nor_optimizer() {
    let d = load_digits();
    let t = one_hot(&d.y, 10).unwrap();
    let net0 = classifier(Activation::Relu, 10);
    let (_, g) = net0
        .batch_gradients(rows(&d, 32), &t[..320], Loss::CrossEntropy)
        .unwrap();
    // A gradient large enough that g² overflows (Adam's second moment) or that the step
    // does (SGD with a huge rate), and one holding a NaN.
    let mut huge = g.clone();
    huge.layer_gradient_flat_mut(1)[7] = 1e30;
    let mut nan = g.clone();
    nan.layer_gradient_flat_mut(0)[99] = f32::NAN;
    let opts: Vec<Box<dyn Fn() -> Box<dyn Optimizer>>> = vec![
        Box::new(|| Box::new(Adam::new(0.01))),
        Box::new(|| Box::new(Sgd::new(1e10, 0.9))),
    ];
    for make in opts {
        let mut net = net0.clone();
        let mut opt = make();
        opt.step(&mut net, &g).unwrap();
        let after_one = param_bits(&net);
        match opt.step(&mut net, &huge) {
            Err(NnError::Overflow {
                what: "parameters",
                layer: 1,
                index: 7,
            }) => {}
            other => panic!("expected an overflow at layer 1 index 7, got {other:?}"),
        }
        assert_non_finite(opt.step(&mut net, &nan), "gradient", 0, 99, f32::NAN);
        assert_eq!(param_bits(&net), after_one);
        // The optimizer's state did not take the refused steps either: its next step is
        // the one a twin that never saw them takes.
        let mut twin_net = net0.clone();
        let mut twin = make();
        twin.step(&mut twin_net, &g).unwrap();
        twin.step(&mut twin_net, &g).unwrap();
        opt.step(&mut net, &g).unwrap();
        assert_eq!(param_bits(&net), param_bits(&twin_net));
    }
}

#[test]
fn hebbian_steps_refuse_nan_and_divergence_and_change_nothing() {
    let d = load_digits();
    let x = d.centred();
    // Narrow layers (checked a layer at a time) and a 256-wide one alone (checked row by
    // row as each row is computed): four digits side by side make one 256-wide sample.
    for sizes in [&[64, 8, 4][..], &[256, 6]] {
        for mode in HebbianLearningMode::ALL {
            hebbian_case(&x, sizes, mode);
        }
    }
}

fn hebbian_case(x: &[f32], sizes: &[usize], mode: HebbianLearningMode) {
    let w = sizes[0];
    let last = sizes.len() - 2;
    let mut net = NeuralNetwork::builder(sizes)
        .hidden_activation(Activation::Linear)
        .output_activation(Activation::Linear)
        .mode(mode)
        .learning_rate(0.01)
        .seed(11)
        .build()
        .unwrap();
    let sample = |i: usize| &x[i * w..(i + 1) * w];
    for i in 0..200 {
        net.hebbian_update(sample(i)).unwrap();
    }
    let before = state_bits(&net);
    let mut row = sample(200).to_vec();
    row[w - 13] = f32::NAN;
    assert_non_finite(net.hebbian_update(&row), "input", 0, w - 13, f32::NAN);
    assert_eq!(state_bits(&net), before, "{mode:?}");

    // Received correlations with an infinity, or a non-finite rate.
    let mut c = net.layer_correlations(last).to_vec();
    c[10] = f32::INFINITY;
    assert_non_finite(
        net.integrate_correlations(last, &c, 0.01),
        "correlations",
        last,
        10,
        f32::INFINITY,
    );
    let c = net.layer_correlations(0).to_vec();
    assert_non_finite(
        net.integrate_correlations(0, &c, f32::NAN),
        "learning rate",
        0,
        0,
        f32::NAN,
    );
    assert_eq!(state_bits(&net), before, "{mode:?}");

    // A diverging rate: a step would overflow; refused, nothing changed. (Classic bounds
    // its rows' norms, so only a rate that overflows `η y x` itself breaks it.)
    net.set_learning_rate(f32::MAX);
    let mut diverged = None;
    for i in 0..50 {
        let snapshot = state_bits(&net);
        match net.hebbian_update(sample(i)) {
            Ok(()) => assert!(all_finite(&net)),
            Err(e) => {
                assert_eq!(
                    state_bits(&net),
                    snapshot,
                    "{mode:?}: the failed step changed nothing"
                );
                diverged = Some(e);
                break;
            }
        }
    }
    match diverged {
        Some(NnError::Overflow { layer, .. }) => assert!(layer < 2),
        other => panic!("{sizes:?} {mode:?}: expected an overflow, got {other:?}"),
    }
    assert!(all_finite(&net), "{mode:?}");
    let big: Vec<f32> = net.layer_correlations(0).iter().map(|v| v + 1e3).collect();
    let before = state_bits(&net);
    match net.integrate_correlations(0, &big, 1e36) {
        Err(NnError::Overflow { layer: 0, .. }) => {}
        other => panic!("{sizes:?} {mode:?}: expected an overflow in layer 0, got {other:?}"),
    }
    assert_eq!(state_bits(&net), before, "{mode:?}");
}

#[test]
fn parameter_writes_refuse_non_finite_values() {
    let mut net = classifier(Activation::Relu, 12);
    let before = param_bits(&net);
    for bad in BAD {
        let mut w = net.layer_weights(0).to_vec();
        w[500] = bad;
        assert_non_finite(net.set_layer_weights(0, &w), "parameters", 0, 500, bad);
        let mut b = net.layer_biases(1).to_vec();
        b[9] = bad;
        assert_non_finite(net.set_layer_biases(1, &b), "parameters", 1, 9, bad);
        // A WeightSync slice: the index is into the slice sent.
        assert_non_finite(
            net.write_layer_params(0, 100, &[0.5, 0.25, bad]),
            "parameters",
            0,
            2,
            bad,
        );
    }
    assert_eq!(param_bits(&net), before);
    // Finite values still go in.
    net.write_layer_params(0, 100, &[0.5, 0.25, f32::MAX])
        .unwrap();
    assert_eq!(net.layer_params(0)[102], f32::MAX);
}

#[test]
fn received_gradients_refuse_non_finite_values_and_overflow() {
    let d = load_digits();
    let mut net = classifier(Activation::Relu, 12);
    let before = param_bits(&net);
    for bad in BAD {
        let mut g = vec![0.01; net.layer_params(1).len()];
        g[321] = bad;
        assert_non_finite(net.apply_layer_gradient(1, &g), "gradient", 1, 321, bad);
        let mut grads = Gradients::zeros_like(&net);
        assert_non_finite(grads.set_layer_gradient(1, &g), "gradient", 1, 321, bad);
        assert!(grads.layer_gradient_flat(1).iter().all(|v| *v == 0.0));
    }
    assert_eq!(param_bits(&net), before);

    // A received gradient that would overflow a parameter: refused, layer unchanged.
    net.set_learning_rate(1e30);
    let mut g = vec![0.0; net.layer_params(0).len()];
    g[2047] = -1e10;
    match net.apply_layer_gradient(0, &g) {
        Err(NnError::Overflow {
            what: "parameters",
            layer: 0,
            index: 2047,
        }) => {}
        other => panic!("expected an overflow at index 2047, got {other:?}"),
    }
    assert_eq!(param_bits(&net), before);

    // The pipeline's per-layer backward step refuses what a peer sends it.
    let (acts, _) = net.forward(d.row(5)).unwrap();
    let mut grads = vec![0.0; net.layer_params(1).len()];
    let mut gi = vec![0.0; 32];
    let mut go = vec![0.1; 10];
    go[3] = f32::NAN;
    assert_non_finite(
        net.layer_backward(1, &acts[1], &acts[2], &mut go, &mut grads, &mut gi),
        "gradient",
        1,
        3,
        f32::NAN,
    );
    let mut out = acts[2].clone();
    out[0] = f32::INFINITY;
    assert_non_finite(
        net.layer_backward(1, &acts[1], &out, &mut [0.1; 10], &mut grads, &mut gi),
        "output",
        1,
        0,
        f32::INFINITY,
    );
    assert!(grads.iter().all(|v| *v == 0.0) && gi.iter().all(|v| *v == 0.0));
}

#[test]
fn weights_files_with_nan_or_infinity_are_refused() {
    let net = classifier(Activation::Relu, 13);
    let good = net.to_weights_bytes();
    // Layer 1's bias 3: after the header (64 bytes), layer 0's weights (64 * 32 * 4 = 8192)
    // and biases (128), layer 1's weights (32 * 10 * 4 = 1280).
    let offset = 64 + 8192 + 128 + 1280 + 4 * 3;
    assert_eq!(
        f32::from_le_bytes(good[offset..offset + 4].try_into().unwrap()).to_bits(),
        net.layer_biases(1)[3].to_bits()
    );
    for bad in BAD {
        let mut b = good.clone();
        b[offset..offset + 4].copy_from_slice(&bad.to_le_bytes());
        for r in [
            NeuralNetwork::from_weights_bytes(&b).map(|_| ()),
            MappedWeights::from_bytes(&b).map(|_| ()),
        ] {
            match r {
                Err(NnError::WeightsFile {
                    offset: o,
                    reason: WeightsFileProblem::NonFinite { layer: 1, index },
                }) => {
                    assert_eq!(o, offset);
                    assert_eq!(index, 320 + 3);
                }
                other => panic!("expected a non-finite weights-file error, got {other:?}"),
            }
        }
    }
}
