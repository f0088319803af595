//! The nn finiteness policy on real data (the 8x8 digits): a NaN or infinity given to the
//! network is refused with `NnError::NonFinite` naming the layer and the first bad index,
//! and nothing changes; training that diverges stops with `NnError::Overflow` naming the
//! layer, the network left as before the failing step with every parameter finite.

mod common;

use common::{load_digits, Digits};
use nnp::nn::{
    Activation, ForwardScratch, MappedWeights, NeuralNetwork, NnError, WeightsFileProblem,
};

const BAD: [f32; 3] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];

/// Every parameter of every layer, as bits (so NaN compares and -0.0 differs from 0.0).
fn param_bits(net: &NeuralNetwork) -> Vec<Vec<u32>> {
    (0..net.layer_count())
        .map(|l| net.layer_params(l).iter().map(|v| v.to_bits()).collect())
        .collect()
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
