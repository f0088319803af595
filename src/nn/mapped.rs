//! Weights files viewed in place: [`MappedWeights`] maps a file with `memmap2` and runs
//! forward passes straight from the mapping.
//!
//! On a little-endian host the mapping (page-aligned, every array at a multiple of 64
//! bytes) is viewed as `&[f32]` with `bytemuck`, without a copy. On a big-endian host, or
//! when the bytes come from memory rather than a file, the arrays are decoded once into an
//! aligned `Vec<f32>`; the API is the same.
//!
//! This is one of the two modules allowed `unsafe`, for `Mmap::map` only.
#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use super::activation::Activation;
use super::hebbian::HebbianLearningMode;
use super::network::{
    forward_batch_impl, forward_into_impl, ForwardScratch, LayerSource, LayerView, NeuralNetwork,
};
use super::weights_file::{parse_layout, WeightsLayout};
use super::NnError;

#[derive(Debug)]
enum Backing {
    /// The file mapping, viewed as f32 in place.
    Mapped(Mmap),
    /// The whole file decoded to f32 (same element indices as the mapping would have).
    Decoded(Vec<f32>),
}

/// A validated weights file whose arrays are read in place.
#[derive(Debug)]
pub struct MappedWeights {
    backing: Backing,
    layout: WeightsLayout,
}

fn decode_all(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

impl MappedWeights {
    /// Maps and validates the weights file at `path`. Validation reads every weight and
    /// bias once (a NaN or infinity is refused), so the whole mapping is paged in here.
    ///
    /// The file must not be truncated or rewritten by anyone while the value lives: the
    /// mapping is shared with the file, as with any memory map.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NnError> {
        let file = File::open(path)?;
        // SAFETY: the mapping is read-only and only ever read through `&[u8]`/`&[f32]` views
        // that live no longer than `self`. Concurrent modification of the file by another
        // process would break that; the documented contract above forbids it, as memmap2
        // requires. Miri cannot run this (no mmap): its test is ignored there.
        let map = unsafe { Mmap::map(&file)? };
        let layout = parse_layout(&map)?;
        let backing = if cfg!(target_endian = "little")
            && bytemuck::try_cast_slice::<u8, f32>(&map[..layout.len]).is_ok()
        {
            Backing::Mapped(map)
        } else {
            log::debug!("weights file: decoding (big-endian host or unaligned mapping)");
            Backing::Decoded(decode_all(&map[..layout.len]))
        };
        Ok(Self { backing, layout })
    }

    /// Validates a weights file held in memory and decodes its arrays into an aligned
    /// buffer (one copy).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NnError> {
        let layout = parse_layout(bytes)?;
        Ok(Self {
            backing: Backing::Decoded(decode_all(&bytes[..layout.len])),
            layout,
        })
    }

    /// True when the arrays are viewed in the file mapping without a copy.
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.backing, Backing::Mapped(_))
    }

    fn floats(&self) -> &[f32] {
        match &self.backing {
            // Checked castable in `open`; the mapping does not change afterwards.
            Backing::Mapped(m) => bytemuck::cast_slice(&m[..self.layout.len]),
            Backing::Decoded(v) => v,
        }
    }

    /// Number of weight layers.
    pub fn layer_count(&self) -> usize {
        self.layout.layers.len()
    }

    /// Sizes from input to output.
    pub fn layer_sizes(&self) -> Vec<usize> {
        let mut v = vec![self.layout.layers[0].inputs];
        v.extend(self.layout.layers.iter().map(|l| l.outputs));
        v
    }

    /// Activation of layer `l`.
    ///
    /// # Panics
    /// If `l >= layer_count()`.
    pub fn layer_activation(&self, l: usize) -> Activation {
        self.layout.layers[l].activation
    }

    /// Weights of layer `l`, row-major `[outputs x inputs]`, borrowed from the file.
    ///
    /// # Panics
    /// If `l >= layer_count()`.
    pub fn layer_weights(&self, l: usize) -> &[f32] {
        let e = &self.layout.layers[l];
        let start = e.weights_offset / 4;
        &self.floats()[start..start + e.inputs * e.outputs]
    }

    /// Biases of layer `l`, borrowed from the file.
    ///
    /// # Panics
    /// If `l >= layer_count()`.
    pub fn layer_biases(&self, l: usize) -> &[f32] {
        let e = &self.layout.layers[l];
        let start = e.biases_offset / 4;
        &self.floats()[start..start + e.outputs]
    }

    /// One sample forward, reading the weights in place; same results, bit for bit, as
    /// [`NeuralNetwork::forward_into`] on the same weights.
    pub fn forward_into<'s>(
        &self,
        input: &[f32],
        scratch: &'s mut ForwardScratch,
    ) -> Result<&'s [f32], NnError> {
        forward_into_impl(self, input, scratch)
    }

    /// A row-major batch forward, reading the weights in place.
    pub fn forward_batch<'s>(
        &self,
        inputs: &[f32],
        scratch: &'s mut ForwardScratch,
    ) -> Result<&'s [f32], NnError> {
        forward_batch_impl(self, inputs, scratch)
    }

    /// An owned network with these weights and the given learning rate and Hebbian mode.
    pub fn to_network(
        &self,
        learning_rate: f32,
        mode: HebbianLearningMode,
    ) -> Result<NeuralNetwork, NnError> {
        let mut b = NeuralNetwork::builder(&self.layer_sizes())
            .learning_rate(learning_rate)
            .mode(mode);
        for l in 0..self.layer_count() {
            b = b.layer_activation(l, self.layer_activation(l));
        }
        let mut net = b.build()?;
        for l in 0..self.layer_count() {
            net.set_layer_weights(l, self.layer_weights(l))?;
            net.set_layer_biases(l, self.layer_biases(l))?;
        }
        Ok(net)
    }
}

impl LayerSource for MappedWeights {
    fn layer_count(&self) -> usize {
        self.layout.layers.len()
    }
    fn layer_view(&self, l: usize) -> LayerView<'_> {
        let e = &self.layout.layers[l];
        LayerView {
            inputs: e.inputs,
            outputs: e.outputs,
            activation: e.activation,
            weights: self.layer_weights(l),
            biases: self.layer_biases(l),
        }
    }
}

impl NeuralNetwork {
    /// Loads a weights file through a memory map into an owned network (learning rate 0.1,
    /// Oja mode, as [`NeuralNetwork::from_weights_bytes`]).
    pub fn load_weights(path: impl AsRef<Path>) -> Result<NeuralNetwork, NnError> {
        MappedWeights::open(path)?.to_network(0.1, HebbianLearningMode::Oja)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NeuralNetwork {
        NeuralNetwork::builder(&[13, 9, 4])
            .hidden_activation(Activation::Tanh)
            .output_activation(Activation::Softmax)
            .seed(21)
            .build()
            .unwrap()
    }

    /// Bit-identical outputs. Under miri only approximately: miri deliberately perturbs
    /// transcendental functions (`exp`, `tanh`) by a few ULP at random on every call.
    fn assert_same(a: &[f32], b: &[f32]) {
        if cfg!(miri) {
            assert!(
                a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5),
                "{a:?} vs {b:?}"
            );
        } else {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(a), bits(b));
        }
        assert_eq!(a.len(), b.len());
    }

    fn check_identical(n: &NeuralNetwork, m: &MappedWeights) {
        let x: Vec<f32> = (0..13).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut s1 = ForwardScratch::new();
        let mut s2 = ForwardScratch::new();
        let a = n.forward_into(&x, &mut s1).unwrap().to_vec();
        assert_same(&a, m.forward_into(&x, &mut s2).unwrap());
        let xs: Vec<f32> = (0..13 * 6).map(|i| (i as f32 * 0.11).cos()).collect();
        let a = n.forward_batch(&xs, &mut s1).unwrap().to_vec();
        assert_same(&a, m.forward_batch(&xs, &mut s2).unwrap());
        for l in 0..2 {
            assert_eq!(m.layer_weights(l), n.layer_weights(l));
            assert_eq!(m.layer_biases(l), n.layer_biases(l));
        }
    }

    #[test]
    fn from_bytes_forward_is_bit_identical() {
        let n = net();
        let m = MappedWeights::from_bytes(&n.to_weights_bytes()).unwrap();
        assert!(!m.is_zero_copy());
        check_identical(&n, &m);
        let back = m.to_network(0.1, HebbianLearningMode::Oja).unwrap();
        assert_eq!(back.layers, n.layers);
        assert!(MappedWeights::from_bytes(b"NNPW").is_err());
    }

    // Miri cannot mmap files (and runs with file-system isolation).
    #[test]
    #[cfg_attr(miri, ignore)]
    fn mapped_file_forward_is_bit_identical() {
        let n = net();
        let path = std::env::temp_dir().join(format!("nnp-mapped-{}.nnpw", std::process::id()));
        n.save_weights(&path).unwrap();
        let m = MappedWeights::open(&path).unwrap();
        assert_eq!(m.is_zero_copy(), cfg!(target_endian = "little"));
        check_identical(&n, &m);
        let loaded = NeuralNetwork::load_weights(&path).unwrap();
        assert_eq!(loaded.layers, n.layers);
        drop(m);
        std::fs::write(&path, b"NNPW\x02\0\0\0").unwrap();
        assert!(matches!(
            MappedWeights::open(&path),
            Err(NnError::WeightsFile { offset: 4, .. })
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(MappedWeights::open(&path), Err(NnError::Io(_))));
    }
}
