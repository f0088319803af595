//! The one error type of the `nn` layer.
//!
//! Every variant says which layer (where one is involved), what was expected and what was
//! given, so a peer's bad message can be reported precisely. Nothing in `nn` panics on
//! sizes that come from outside (messages, files); it returns one of these.

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
