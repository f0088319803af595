//! The binary weights file: layout, writer, and validating parser.
//!
//! # Layout (version 1, all integers and floats little-endian)
//!
//! ```text
//! offset  size      field
//! 0       4         magic "NNPW"
//! 4       4         version (u32) = 1
//! 8       4         layer count L (u32), 1..=4096
//! 12      4         reserved (u32) = 0
//! 16      16 * L    per layer: inputs (u32), outputs (u32), activation code (u32),
//!                   reserved (u32) = 0
//! ...               zero padding to a multiple of 64
//! then, per layer in order:
//!                   weights: outputs * inputs f32, row-major [outputs x inputs]
//!                   zero padding to a multiple of 64
//!                   biases: outputs f32
//!                   zero padding to a multiple of 64
//! ```
//!
//! Activation codes: 0 linear, 1 sigmoid, 2 tanh, 3 relu, 4 softmax (output layer only).
//! Every layer's inputs equal the previous layer's outputs. Every array starts at a
//! multiple of 64 bytes from the start of the file, so a page-aligned mapping can be
//! viewed as `&[f32]` in place (see [`super::MappedWeights`]); the file length is the end
//! of the last (padded) array, and bytes past it are ignored. The same text is in
//! docs/WEIGHTS.md.
//!
//! The parser checks every field and every size (with overflow-checked arithmetic) before
//! anything is read from the arrays; a bad file gives [`NnError::WeightsFile`], never a
//! panic. It then reads every weight and bias once and refuses a NaN or infinity
//! ([`WeightsFileProblem::NonFinite`], at the value's byte offset), as everything else that
//! brings parameters into a network does (see [`crate::nn`]).

use std::path::Path;

use super::activation::Activation;
use super::network::NeuralNetwork;
use super::{NnError, WeightsFileProblem};

/// The four bytes every weights file starts with.
pub const WEIGHTS_MAGIC: [u8; 4] = *b"NNPW";
/// The layout version this crate writes and reads.
pub const WEIGHTS_VERSION: u32 = 1;
/// Arrays start at multiples of this many bytes.
pub const WEIGHTS_ALIGN: usize = 64;
/// Most layers a file may declare (caps the header before anything is allocated).
pub const MAX_LAYERS: u32 = 4096;

const HEADER: usize = 16;
const RECORD: usize = 16;

/// One layer as the file describes it; offsets in bytes from the start of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LayerEntry {
    pub(crate) inputs: usize,
    pub(crate) outputs: usize,
    pub(crate) activation: Activation,
    pub(crate) weights_offset: usize,
    pub(crate) biases_offset: usize,
}

/// A validated layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WeightsLayout {
    pub(crate) layers: Vec<LayerEntry>,
    /// Bytes the layout covers (a multiple of 64).
    pub(crate) len: usize,
}

fn pad(n: u64) -> u64 {
    n.div_ceil(WEIGHTS_ALIGN as u64) * WEIGHTS_ALIGN as u64
}

fn pad128(n: u128) -> u128 {
    n.div_ceil(WEIGHTS_ALIGN as u128) * WEIGHTS_ALIGN as u128
}

fn bad(offset: usize, reason: WeightsFileProblem) -> NnError {
    NnError::WeightsFile { offset, reason }
}

fn u32_at(bytes: &[u8], offset: usize) -> Result<u32, NnError> {
    let b = bytes.get(offset..offset + 4).ok_or(bad(
        offset,
        WeightsFileProblem::Truncated {
            needed: offset as u64 + 4,
            len: bytes.len() as u64,
        },
    ))?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Validates the header and sizes of a weights file held in `bytes`.
pub(crate) fn parse_layout(bytes: &[u8]) -> Result<WeightsLayout, NnError> {
    let magic = bytes.get(..4).ok_or(bad(
        0,
        WeightsFileProblem::Truncated {
            needed: HEADER as u64,
            len: bytes.len() as u64,
        },
    ))?;
    if magic != WEIGHTS_MAGIC {
        return Err(bad(
            0,
            WeightsFileProblem::BadMagic([magic[0], magic[1], magic[2], magic[3]]),
        ));
    }
    let version = u32_at(bytes, 4)?;
    if version != WEIGHTS_VERSION {
        return Err(bad(4, WeightsFileProblem::UnsupportedVersion(version)));
    }
    let count = u32_at(bytes, 8)?;
    if count == 0 || count > MAX_LAYERS {
        return Err(bad(8, WeightsFileProblem::BadLayerCount(count)));
    }
    if u32_at(bytes, 12)? != 0 {
        return Err(bad(12, WeightsFileProblem::ReservedNotZero));
    }
    let count = count as usize;
    let header_end = HEADER + RECORD * count;
    if bytes.len() < header_end {
        return Err(bad(
            HEADER,
            WeightsFileProblem::Truncated {
                needed: header_end as u64,
                len: bytes.len() as u64,
            },
        ));
    }
    let mut offset = pad(header_end as u64);
    let mut layers = Vec::with_capacity(count);
    let mut prev_outputs = None;
    for l in 0..count {
        let rec = HEADER + RECORD * l;
        let inputs = u32_at(bytes, rec)?;
        let outputs = u32_at(bytes, rec + 4)?;
        let code = u32_at(bytes, rec + 8)?;
        if u32_at(bytes, rec + 12)? != 0 {
            return Err(bad(rec + 12, WeightsFileProblem::ReservedNotZero));
        }
        if inputs == 0 || outputs == 0 || prev_outputs.is_some_and(|p| p != inputs) {
            return Err(bad(
                rec,
                WeightsFileProblem::BadLayerShape {
                    layer: l,
                    inputs,
                    outputs,
                },
            ));
        }
        prev_outputs = Some(outputs);
        let activation = match Activation::from_code(code) {
            Some(Activation::Softmax) if l + 1 != count => None,
            a => a,
        }
        .ok_or(bad(
            rec + 8,
            WeightsFileProblem::BadActivation { layer: l, code },
        ))?;
        // In u128: 4 * u32 * u32 plus an offset below the file length cannot overflow, and
        // the running offset is checked against the length after every layer.
        let weights_offset = offset;
        let biases_offset = pad128(weights_offset as u128 + 4 * inputs as u128 * outputs as u128);
        let end = pad128(biases_offset + 4 * outputs as u128);
        if end > bytes.len() as u128 {
            return Err(bad(
                weights_offset.min(usize::MAX as u64) as usize,
                WeightsFileProblem::Truncated {
                    needed: end.min(u64::MAX as u128) as u64,
                    len: bytes.len() as u64,
                },
            ));
        }
        offset = end as u64;
        layers.push(LayerEntry {
            inputs: inputs as usize,
            outputs: outputs as usize,
            activation,
            weights_offset: weights_offset as usize,
            biases_offset: biases_offset as usize,
        });
    }
    check_finite(bytes, &layers)?;
    Ok(WeightsLayout {
        layers,
        len: offset as usize,
    })
}

/// Refuses the first weight or bias whose exponent bits are all ones (NaN, ±infinity).
fn check_finite(bytes: &[u8], layers: &[LayerEntry]) -> Result<(), NnError> {
    const EXPONENT: u32 = 0x7f80_0000;
    for (l, e) in layers.iter().enumerate() {
        let weights = e.inputs * e.outputs;
        for (first, offset, n) in [
            (0, e.weights_offset, weights),
            (weights, e.biases_offset, e.outputs),
        ] {
            let arr = &bytes[offset..offset + 4 * n];
            let bits = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & EXPONENT;
            // Branch-free over blocks so that it vectorises; searched only on a hit.
            let hit = arr
                .chunks(4 * 64)
                .position(|block| {
                    block
                        .chunks_exact(4)
                        .fold(0, |acc, b| acc | u32::from(bits(b) == EXPONENT))
                        != 0
                })
                .and_then(|_| arr.chunks_exact(4).position(|b| bits(b) == EXPONENT));
            if let Some(i) = hit {
                return Err(bad(
                    offset + 4 * i,
                    WeightsFileProblem::NonFinite {
                        layer: l,
                        index: first + i,
                    },
                ));
            }
        }
    }
    Ok(())
}

/// Reads `n` little-endian f32 at `offset` (already validated) into `out`.
pub(crate) fn read_f32s(bytes: &[u8], offset: usize, n: usize, out: &mut Vec<f32>) {
    out.extend(
        bytes[offset..offset + 4 * n]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
}

impl NeuralNetwork {
    /// The weights file (version 1 layout above) of this network.
    pub fn to_weights_bytes(&self) -> Vec<u8> {
        let count = self.layers.len();
        let mut out = Vec::new();
        out.extend_from_slice(&WEIGHTS_MAGIC);
        out.extend_from_slice(&WEIGHTS_VERSION.to_le_bytes());
        out.extend_from_slice(&(count as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for layer in &self.layers {
            for v in [
                layer.inputs as u32,
                layer.outputs as u32,
                layer.activation.code(),
                0,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        let align = |out: &mut Vec<u8>| out.resize(pad(out.len() as u64) as usize, 0);
        align(&mut out);
        for layer in &self.layers {
            for arr in [layer.weights(), layer.biases()] {
                out.extend(arr.iter().flat_map(|v| v.to_le_bytes()));
                align(&mut out);
            }
        }
        out
    }

    /// Writes the weights file to `path`.
    pub fn save_weights(&self, path: impl AsRef<Path>) -> Result<(), NnError> {
        std::fs::write(path, self.to_weights_bytes())?;
        Ok(())
    }

    /// A network with the weights, biases and activations of a weights file held in
    /// memory (copied), learning rate 0.1, Oja mode and the default seed; set those after.
    pub fn from_weights_bytes(bytes: &[u8]) -> Result<NeuralNetwork, NnError> {
        let layout = parse_layout(bytes)?;
        let mut sizes = vec![layout.layers[0].inputs];
        sizes.extend(layout.layers.iter().map(|l| l.outputs));
        let mut builder = NeuralNetwork::builder(&sizes);
        for (l, e) in layout.layers.iter().enumerate() {
            builder = builder.layer_activation(l, e.activation);
        }
        let mut net = builder.build()?;
        for (layer, e) in net.layers.iter_mut().zip(&layout.layers) {
            layer.params.clear();
            read_f32s(
                bytes,
                e.weights_offset,
                e.inputs * e.outputs,
                &mut layer.params,
            );
            read_f32s(bytes, e.biases_offset, e.outputs, &mut layer.params);
        }
        Ok(net)
    }
}

/// The fuzz target `weights_file` (and its stable corpus replay): a weights file is input
/// from someone else. Checks that any bytes give a network or an error, never a panic; that
/// the owned and the view parsers agree; and that an accepted file holds only finite
/// values, round-trips exactly and runs forward to the same bits through both (or to the
/// same overflow error: finite weights can still be too large for `W x + b`).
#[doc(hidden)]
pub fn fuzz_weights_file(data: &[u8]) {
    let owned = NeuralNetwork::from_weights_bytes(data);
    let view = super::MappedWeights::from_bytes(data);
    let (net, view) = match (owned, view) {
        (Ok(net), Ok(view)) => (net, view),
        (Err(_), Err(_)) => return,
        (a, b) => panic!("the parsers disagree: {:?} vs {:?}", a.is_ok(), b.is_ok()),
    };
    assert_eq!(net.layer_sizes(), view.layer_sizes());
    let again =
        NeuralNetwork::from_weights_bytes(&net.to_weights_bytes()).expect("a written file parses");
    for l in 0..net.layer_count() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(net.layer_params(l).iter().all(|v| v.is_finite()));
        assert_eq!(bits(net.layer_params(l)), bits(again.layer_params(l)));
        assert_eq!(bits(net.layer_weights(l)), bits(view.layer_weights(l)));
        assert_eq!(net.layer_activation(l), view.layer_activation(l));
    }
    let input: Vec<f32> = (0..net.input_size()).map(|i| i as f32 * 0.25).collect();
    let mut a = super::ForwardScratch::new();
    let mut b = super::ForwardScratch::new();
    match (
        net.forward_into(&input, &mut a),
        view.forward_into(&input, &mut b),
    ) {
        (Ok(x), Ok(y)) => {
            assert!(x.iter().all(|v| v.is_finite()));
            assert!(x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
        (
            Err(NnError::Overflow { layer, index, .. }),
            Err(NnError::Overflow {
                layer: l2,
                index: i2,
                ..
            }),
        ) => assert_eq!((layer, index), (l2, i2)),
        (x, y) => panic!("forward passes disagree: {x:?} vs {y:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Activation, NeuralNetwork};

    fn sample() -> NeuralNetwork {
        NeuralNetwork::builder(&[5, 3, 2])
            .hidden_activation(Activation::Relu)
            .output_activation(Activation::Softmax)
            .seed(8)
            .build()
            .unwrap()
    }

    #[test]
    fn layout_is_as_documented() {
        let b = sample().to_weights_bytes();
        assert_eq!(&b[..4], b"NNPW");
        assert_eq!(u32_at(&b, 4).unwrap(), 1);
        assert_eq!(u32_at(&b, 8).unwrap(), 2);
        assert_eq!(u32_at(&b, 16).unwrap(), 5);
        assert_eq!(u32_at(&b, 20).unwrap(), 3);
        assert_eq!(u32_at(&b, 24).unwrap(), 3); // relu
        assert_eq!(u32_at(&b, 40).unwrap(), 4); // softmax
        let layout = parse_layout(&b).unwrap();
        // header 16 + 2 * 16 = 48 -> 64; weights 60 B -> 128; biases 12 B -> 192; ...
        assert_eq!(layout.layers[0].weights_offset, 64);
        assert_eq!(layout.layers[0].biases_offset, 128);
        assert_eq!(layout.layers[1].weights_offset, 192);
        assert_eq!(layout.layers[1].biases_offset, 256);
        assert_eq!(layout.len, 320);
        assert_eq!(b.len(), 320);
    }

    #[test]
    fn round_trip_is_exact() {
        let n = sample();
        let m = NeuralNetwork::from_weights_bytes(&n.to_weights_bytes()).unwrap();
        assert_eq!(n.layers, m.layers);
    }

    #[test]
    fn test_parse_bad_files() {
        let good = sample().to_weights_bytes();
        let problem = |b: &[u8]| match NeuralNetwork::from_weights_bytes(b) {
            Err(NnError::WeightsFile { reason, .. }) => reason,
            other => panic!("expected a weights-file error, got {other:?}"),
        };
        assert!(matches!(problem(&[]), WeightsFileProblem::Truncated { .. }));
        let mut b = good.clone();
        b[0] = b'X';
        assert!(matches!(problem(&b), WeightsFileProblem::BadMagic(_)));
        let mut b = good.clone();
        b[4] = 2;
        assert_eq!(problem(&b), WeightsFileProblem::UnsupportedVersion(2));
        let mut b = good.clone();
        b[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(problem(&b), WeightsFileProblem::BadLayerCount(0));
        let mut b = good.clone();
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(problem(&b), WeightsFileProblem::BadLayerCount(u32::MAX));
        let mut b = good.clone();
        b[32..36].copy_from_slice(&4u32.to_le_bytes()); // layer 1 inputs != layer 0 outputs
        assert!(matches!(
            problem(&b),
            WeightsFileProblem::BadLayerShape { layer: 1, .. }
        ));
        let mut b = good.clone();
        b[24..28].copy_from_slice(&4u32.to_le_bytes()); // softmax on a hidden layer
        assert_eq!(
            problem(&b),
            WeightsFileProblem::BadActivation { layer: 0, code: 4 }
        );
        let mut b = good.clone();
        b[40..44].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(
            problem(&b),
            WeightsFileProblem::BadActivation { layer: 1, code: 9 }
        );
        let mut b = good.clone();
        b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        b[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        b[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(problem(&b), WeightsFileProblem::Truncated { .. }));
        let mut b = good.clone();
        b[12] = 1;
        assert_eq!(problem(&b), WeightsFileProblem::ReservedNotZero);
        for cut in [3, 15, 40, 100, 319] {
            assert!(
                matches!(problem(&good[..cut]), WeightsFileProblem::Truncated { .. }),
                "cut {cut}"
            );
        }
    }
}
