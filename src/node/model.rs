//! What a node needs from the network it hosts: the operations the four data messages drive.
//!
//! [`crate::nn::NeuralNetwork`] implements it; so can any model a user brings.

/// A model's answer when a message does not fit it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelError {
    /// No layer with this index.
    UnknownLayer {
        /// The layer asked for.
        layer: usize,
        /// How many weight layers the model has.
        layers: usize,
    },
    /// The data's length does not fit the layer.
    ShapeMismatch {
        /// The layer.
        layer: usize,
        /// What was expected, for a person ("784 inputs", "100480 parameters").
        expected: String,
        /// The length received.
        got: usize,
    },
    /// The model refused the data for another reason, given in words.
    Rejected {
        /// The layer.
        layer: usize,
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelError::UnknownLayer { layer, layers } => {
                write!(
                    f,
                    "layer {layer} does not exist: the network has {layers} weight layers"
                )
            }
            ModelError::ShapeMismatch {
                layer,
                expected,
                got,
            } => write!(f, "layer {layer} expects {expected}, got {got} values"),
            ModelError::Rejected { layer, reason } => {
                write!(f, "layer {layer} refused the data: {reason}")
            }
        }
    }
}

impl std::error::Error for ModelError {}

/// The operations behind ForwardData, BackwardData, HebbianData and WeightSync.
///
/// Layers are weight layers, numbered from 0; layer `l` maps `sizes[l]` inputs (`cols`) to
/// `sizes[l + 1]` outputs (`rows`). A layer's parameters are its weights row-major
/// (`rows x cols`) followed by its `rows` biases.
pub trait Model: Send + 'static {
    /// Neuron counts, input first.
    fn layer_sizes(&self) -> Vec<usize>;

    /// Runs the network from weight layer `layer` (0: the input) to the output. `input` is
    /// one sample or a row-major batch of several (a multiple of the layer's input width);
    /// the output is one row per sample.
    fn forward_from(&mut self, layer: usize, input: &[f32]) -> Result<Vec<f32>, ModelError>;

    /// Applies parameter gradients (weights row-major, then biases) to a layer.
    fn apply_gradient(&mut self, layer: usize, gradient: &[f32]) -> Result<(), ModelError>;

    /// Blends received Hebbian correlations (`rows x cols`) into a layer and applies the
    /// model's Hebbian rule with them.
    fn integrate_correlations(
        &mut self,
        layer: usize,
        correlations: &[f32],
        learning_rate: f32,
    ) -> Result<(), ModelError>;

    /// The layer's running Hebbian correlations (`rows x cols`, row-major).
    fn correlations(&self, layer: usize) -> Result<Vec<f32>, ModelError>;

    /// The layer's parameters: weights row-major, then biases.
    fn params(&self, layer: usize) -> Result<Vec<f32>, ModelError>;

    /// Overwrites parameters `offset..offset + values.len()` of a layer.
    fn write_params(
        &mut self,
        layer: usize,
        offset: usize,
        values: &[f32],
    ) -> Result<(), ModelError>;

    /// Averages parameters `offset..` with `values`, giving `values` the weight `remote_share`
    /// (its sample count over the total).
    fn average_params(
        &mut self,
        layer: usize,
        offset: usize,
        values: &[f32],
        remote_share: f32,
    ) -> Result<(), ModelError> {
        let mut local = self.params(layer)?;
        let end = offset + values.len();
        let Some(window) = local.get_mut(offset..end) else {
            return Err(ModelError::ShapeMismatch {
                layer,
                expected: format!("at most {} parameters", local.len()),
                got: end,
            });
        };
        for (w, r) in window.iter_mut().zip(values) {
            *w += (r - *w) * remote_share;
        }
        self.write_params(layer, offset, &local[offset..end])
    }

    /// `(rows, cols)` of weight layer `layer`.
    fn layer_shape(&self, layer: usize) -> Result<(usize, usize), ModelError> {
        let sizes = self.layer_sizes();
        if layer + 1 >= sizes.len() {
            return Err(ModelError::UnknownLayer {
                layer,
                layers: sizes.len().saturating_sub(1),
            });
        }
        Ok((sizes[layer + 1], sizes[layer]))
    }
}

impl Model for crate::nn::NeuralNetwork {
    fn layer_sizes(&self) -> Vec<usize> {
        crate::nn::NeuralNetwork::layer_sizes(self)
    }

    fn forward_from(&mut self, layer: usize, input: &[f32]) -> Result<Vec<f32>, ModelError> {
        check_layer(self, layer)?;
        let (_, cols) = crate::nn::NeuralNetwork::layer_shape(self, layer);
        if input.is_empty() {
            return Err(ModelError::ShapeMismatch {
                layer,
                expected: format!("a multiple of {cols} inputs"),
                got: 0,
            });
        }
        let mut scratch = crate::nn::ForwardScratch::new();
        let out = if input.len() == cols {
            self.forward_from_into(layer, input, &mut scratch)
        } else {
            self.forward_batch_from(layer, input, &mut scratch)
        };
        Ok(out.map_err(|e| from_nn(layer, e))?.to_vec())
    }

    fn apply_gradient(&mut self, layer: usize, gradient: &[f32]) -> Result<(), ModelError> {
        self.apply_layer_gradient(layer, gradient)
            .map_err(|e| from_nn(layer, e))
    }

    fn integrate_correlations(
        &mut self,
        layer: usize,
        correlations: &[f32],
        learning_rate: f32,
    ) -> Result<(), ModelError> {
        crate::nn::NeuralNetwork::integrate_correlations(self, layer, correlations, learning_rate)
            .map_err(|e| from_nn(layer, e))
    }

    fn correlations(&self, layer: usize) -> Result<Vec<f32>, ModelError> {
        check_layer(self, layer)?;
        Ok(self.layer_correlations(layer).to_vec())
    }

    fn params(&self, layer: usize) -> Result<Vec<f32>, ModelError> {
        check_layer(self, layer)?;
        Ok(self.layer_params(layer).to_vec())
    }

    fn write_params(
        &mut self,
        layer: usize,
        offset: usize,
        values: &[f32],
    ) -> Result<(), ModelError> {
        self.write_layer_params(layer, offset, values)
            .map_err(|e| from_nn(layer, e))
    }
}

fn check_layer(network: &crate::nn::NeuralNetwork, layer: usize) -> Result<(), ModelError> {
    if layer >= network.layer_count() {
        return Err(ModelError::UnknownLayer {
            layer,
            layers: network.layer_count(),
        });
    }
    Ok(())
}

/// The network's own error, in the model's terms: a missing layer, or data that does not fit.
fn from_nn(layer: usize, error: crate::nn::NnError) -> ModelError {
    use crate::nn::NnError;
    match error {
        NnError::LayerOutOfRange { layer, layer_count } => ModelError::UnknownLayer {
            layer,
            layers: layer_count,
        },
        NnError::InputLength { expected, got, .. } => ModelError::ShapeMismatch {
            layer,
            expected: format!("{expected} inputs"),
            got,
        },
        NnError::GradientLength { expected, got, .. } => ModelError::ShapeMismatch {
            layer,
            expected: format!("{expected} parameter gradients"),
            got,
        },
        NnError::CorrelationsLength { expected, got, .. } => ModelError::ShapeMismatch {
            layer,
            expected: format!("{expected} correlations"),
            got,
        },
        NnError::ParamsRange {
            offset,
            len,
            params,
            ..
        } => ModelError::ShapeMismatch {
            layer,
            expected: format!("at most {params} parameters"),
            got: offset.saturating_add(len),
        },
        other => ModelError::Rejected {
            layer,
            reason: other.to_string(),
        },
    }
}
