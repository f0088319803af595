//! The one error type of the `nn` layer.
//!
//! Every variant says which layer (where one is involved), what was expected and what was
//! given, so a peer's bad message can be reported precisely. Nothing in `nn` panics on
//! sizes that come from outside (messages, files); it returns one of these.
//!
//! Two variants carry the module's finiteness policy (see [`crate::nn`]):
//! [`NnError::NonFinite`] refuses a NaN or infinity that was *given* to the network, and
//! [`NnError::Overflow`] stops a computation on finite data whose result would not be
//! finite. Either way nothing was changed.

use std::fmt;

/// What went wrong in a network operation.
#[derive(Debug)]
#[non_exhaustive]
pub enum NnError {
    /// A topology needs at least two sizes (input and output), none of them zero.
    InvalidTopology {
        /// The sizes given.
        sizes: Vec<usize>,
    },
    /// A layer index past the last layer.
    LayerOutOfRange {
        /// The index asked for.
        layer: usize,
        /// How many layers the network has.
        layer_count: usize,
    },
    /// An input vector (or batch row) of the wrong length for the layer it feeds.
    InputLength {
        /// The layer the input feeds (0 for the network input).
        layer: usize,
        /// The layer's input width (or a multiple of it, for a batch).
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A target or output-gradient vector of the wrong length.
    TargetLength {
        /// The layer whose output it matches.
        layer: usize,
        /// The layer's output width (or a multiple of it, for a batch).
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A weight matrix of the wrong element count (`outputs x inputs`).
    WeightsLength {
        /// The layer.
        layer: usize,
        /// `outputs * inputs`.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A bias vector of the wrong length.
    BiasesLength {
        /// The layer.
        layer: usize,
        /// The layer's output width.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A slice written into a layer's flat parameters runs past their end.
    ParamsRange {
        /// The layer.
        layer: usize,
        /// The element offset of the slice.
        offset: usize,
        /// The slice length.
        len: usize,
        /// The layer's parameter count (`outputs * inputs + outputs`).
        params: usize,
    },
    /// A flat gradient vector of the wrong length (`outputs * inputs + outputs`).
    GradientLength {
        /// The layer.
        layer: usize,
        /// The expected length.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A correlation matrix of the wrong shape (`outputs x inputs`).
    CorrelationsLength {
        /// The layer.
        layer: usize,
        /// `outputs * inputs`.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// Labels do not match the number of samples, or a label is not a class of the output.
    Labels {
        /// The number of samples in the inputs.
        samples: usize,
        /// The number of labels given.
        labels: usize,
        /// The number of classes (output width).
        classes: usize,
    },
    /// Softmax is only allowed on the output layer.
    SoftmaxNotOutput {
        /// The hidden layer that asked for it.
        layer: usize,
    },
    /// Two networks (or a network and a gradient/optimizer state) differ in shape.
    ShapeMismatch {
        /// The first layer that differs.
        layer: usize,
        /// `(outputs, inputs)` expected.
        expected: (usize, usize),
        /// `(outputs, inputs)` found.
        got: (usize, usize),
    },
    /// Averaging needs at least one network and a positive total sample count.
    NothingToAverage,
    /// A batch size of zero.
    ZeroBatchSize,
    /// A weights file is malformed; see the message for which field.
    WeightsFile {
        /// Byte offset of the offending field.
        offset: usize,
        /// What is wrong there.
        reason: WeightsFileProblem,
    },
    /// Reading, writing or mapping a weights file failed.
    Io(std::io::Error),
    /// A value given to the network is NaN or ±infinity. Refused before anything was
    /// changed.
    ///
    /// `index` is the position of the first such value in the slice that was passed: for a
    /// row-major batch or data set, the index into the flat buffer (its row is
    /// `index / width`, its column `index % width`, with `width` the input width for
    /// `"input"` and the output width for `"target"`).
    NonFinite {
        /// What the value was: `"input"`, `"target"`, `"gradient"`, `"output"` (a layer
        /// output handed to [`NeuralNetwork::layer_backward`]), `"correlations"`,
        /// `"learning rate"` or `"parameters"`.
        ///
        /// [`NeuralNetwork::layer_backward`]: super::NeuralNetwork::layer_backward
        what: &'static str,
        /// The layer the data was for (the layer an input feeds; the output layer for a
        /// target).
        layer: usize,
        /// Index of the first non-finite value in the slice given.
        index: usize,
        /// That value (NaN, `inf` or `-inf`).
        value: f32,
    },
    /// A computation on finite values overflowed `f32`: the result would have been NaN or
    /// ±infinity, so it was stopped and nothing was changed (the network's parameters are as
    /// they were before the step).
    ///
    /// In training this is divergence (lower the learning rate); in a forward pass, inputs
    /// or weights so large that `W x + b` exceeds `f32::MAX`.
    Overflow {
        /// What would have become non-finite: `"parameters"` (an update: optimizer step,
        /// received gradient, Hebbian step, averaging; index into the layer's flat
        /// parameters, weights then biases), `"gradient"` (backprop; index into the layer's
        /// flat gradient), `"pre-activation"` (a forward pass; index into the layer's output
        /// buffer, `row * outputs + unit` for a batch), `"correlations"` or `"thresholds"`
        /// (Hebbian state).
        what: &'static str,
        /// The layer.
        layer: usize,
        /// Index of the first value that overflowed.
        index: usize,
    },
}

/// What is wrong in a weights file (see docs/WEIGHTS.md).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeightsFileProblem {
    /// The file is shorter than its header or its arrays say.
    Truncated {
        /// Bytes the layout needs.
        needed: u64,
        /// Bytes present.
        len: u64,
    },
    /// The first four bytes are not `NNPW`.
    BadMagic([u8; 4]),
    /// A version this reader does not know.
    UnsupportedVersion(u32),
    /// Zero layers, or more than the reader accepts.
    BadLayerCount(u32),
    /// A layer with a zero size, or whose input does not match the previous output.
    BadLayerShape {
        /// The layer.
        layer: usize,
        /// Its input width as stored.
        inputs: u32,
        /// Its output width as stored.
        outputs: u32,
    },
    /// An activation code that names no activation, or softmax on a hidden layer.
    BadActivation {
        /// The layer.
        layer: usize,
        /// The stored code.
        code: u32,
    },
    /// A reserved field that is not zero.
    ReservedNotZero,
    /// A weight or bias that is NaN or ±infinity (the error's offset is its byte offset).
    NonFinite {
        /// The layer.
        layer: usize,
        /// Index into the layer's flat parameters: weights row-major, then biases.
        index: usize,
    },
}

impl fmt::Display for NnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use NnError::*;
        match self {
            InvalidTopology { sizes } => {
                write!(f, "invalid topology {sizes:?}: need >= 2 sizes, none zero")
            }
            LayerOutOfRange { layer, layer_count } => {
                write!(f, "layer {layer} out of range (network has {layer_count})")
            }
            InputLength {
                layer,
                expected,
                got,
            } => {
                write!(f, "layer {layer}: input length {got}, expected {expected}")
            }
            TargetLength {
                layer,
                expected,
                got,
            } => {
                write!(f, "layer {layer}: target length {got}, expected {expected}")
            }
            WeightsLength {
                layer,
                expected,
                got,
            } => {
                write!(f, "layer {layer}: {got} weights, expected {expected}")
            }
            BiasesLength {
                layer,
                expected,
                got,
            } => {
                write!(f, "layer {layer}: {got} biases, expected {expected}")
            }
            ParamsRange {
                layer,
                offset,
                len,
                params,
            } => write!(
                f,
                "layer {layer}: slice at {offset} of length {len} exceeds {params} parameters"
            ),
            GradientLength {
                layer,
                expected,
                got,
            } => {
                write!(
                    f,
                    "layer {layer}: gradient length {got}, expected {expected}"
                )
            }
            CorrelationsLength {
                layer,
                expected,
                got,
            } => {
                write!(
                    f,
                    "layer {layer}: correlations length {got}, expected {expected}"
                )
            }
            Labels {
                samples,
                labels,
                classes,
            } => write!(
                f,
                "{labels} labels for {samples} samples, or a label outside 0..{classes}"
            ),
            SoftmaxNotOutput { layer } => {
                write!(f, "layer {layer}: softmax only on the output layer")
            }
            ShapeMismatch {
                layer,
                expected,
                got,
            } => {
                write!(f, "layer {layer}: shape {got:?}, expected {expected:?}")
            }
            NothingToAverage => write!(f, "nothing to average (no networks or zero samples)"),
            ZeroBatchSize => write!(f, "batch size is zero"),
            WeightsFile { offset, reason } => {
                write!(f, "weights file at byte {offset}: {reason:?}")
            }
            Io(e) => write!(f, "weights file I/O: {e}"),
            NonFinite {
                what,
                layer,
                index,
                value,
            } => write!(
                f,
                "layer {layer}: {what} at index {index} is {value}; NaN and infinity are refused \
                 (for a batch the index is into the flat row-major buffer), nothing was changed"
            ),
            Overflow { what, layer, index } => write!(
                f,
                "layer {layer}: {what} at index {index} would overflow f32 to NaN or infinity; \
                 stopped before any change (training diverges: lower the learning rate; \
                 or the data or weights are too large)"
            ),
        }
    }
}

impl std::error::Error for NnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NnError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for NnError {
    fn from(e: std::io::Error) -> Self {
        NnError::Io(e)
    }
}
