//! Weights file end to end: a network trained on the digits is saved, mapped, and run
//! forward from the mapping with bit-identical outputs.

mod common;

use nnp::nn::{one_hot, Activation, Adam, FitConfig, ForwardScratch, MappedWeights, NeuralNetwork};

#[test]
fn saved_mapped_and_loaded_networks_agree_bit_for_bit() {
    let d = common::load_digits();
    let mut net = NeuralNetwork::builder(&[64, 32, 10])
        .hidden_activation(Activation::Tanh)
        .output_activation(Activation::Softmax)
        .seed(12)
        .build()
        .unwrap();
    let cfg = FitConfig {
        epochs: 2,
        ..FitConfig::default()
    };
    net.fit(
        &d.x,
        &one_hot(&d.y, 10).unwrap(),
        &cfg,
        &mut Adam::new(0.01),
    )
    .unwrap();

    let path = std::env::temp_dir().join(format!("nnp-digits-{}.nnpw", std::process::id()));
    net.save_weights(&path).unwrap();
    let mapped = MappedWeights::open(&path).unwrap();
    assert_eq!(mapped.is_zero_copy(), cfg!(target_endian = "little"));
    let loaded = NeuralNetwork::load_weights(&path).unwrap();

    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let (mut s1, mut s2, mut s3) = (
        ForwardScratch::new(),
        ForwardScratch::new(),
        ForwardScratch::new(),
    );
    for i in 0..d.len() {
        let x = d.row(i);
        let want = bits(net.forward_into(x, &mut s1).unwrap());
        assert_eq!(
            bits(mapped.forward_into(x, &mut s2).unwrap()),
            want,
            "sample {i}"
        );
        assert_eq!(
            bits(loaded.forward_into(x, &mut s3).unwrap()),
            want,
            "sample {i}"
        );
    }
    let want = bits(net.forward_batch(&d.x, &mut s1).unwrap());
    assert_eq!(bits(mapped.forward_batch(&d.x, &mut s2).unwrap()), want);
    drop(mapped);
    std::fs::remove_file(&path).unwrap();
}
