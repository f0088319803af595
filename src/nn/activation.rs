//! Activation functions per layer, their derivatives, and their codes in weights files.
//!
//! Derivatives are written in terms of the layer's *output*, so backprop needs only the
//! stored activations, not the pre-activations.

use super::kernels;

/// The nonlinearity a layer applies after `W x + b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Activation {
    /// `y = 1 / (1 + e^-z)`.
    Sigmoid,
    /// `y = tanh z`.
    Tanh,
    /// `y = max(0, z)`.
    Relu,
    /// `y = z`.
    Linear,
    /// `y_i = e^z_i / Σ_j e^z_j`; only allowed on the output layer.
    Softmax,
}

impl Activation {
    /// The code stored in weights files (docs/WEIGHTS.md).
    pub fn code(self) -> u32 {
        match self {
            Activation::Linear => 0,
            Activation::Sigmoid => 1,
            Activation::Tanh => 2,
            Activation::Relu => 3,
            Activation::Softmax => 4,
        }
    }

    /// The activation stored under `code`, if any.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => Activation::Linear,
            1 => Activation::Sigmoid,
            2 => Activation::Tanh,
            3 => Activation::Relu,
            4 => Activation::Softmax,
            _ => return None,
        })
    }

    /// Applies the activation in place to one sample's pre-activations.
    pub fn apply(self, z: &mut [f32]) {
        match self {
            Activation::Sigmoid => kernels::sigmoid(z),
            Activation::Tanh => kernels::tanh(z),
            Activation::Relu => kernels::relu(z),
            Activation::Linear => {}
            Activation::Softmax => kernels::softmax(z),
        }
    }

    /// Applies the activation to each row of a row-major batch with `width` columns.
    pub fn apply_rows(self, z: &mut [f32], width: usize) {
        match self {
            Activation::Softmax => z.chunks_exact_mut(width).for_each(kernels::softmax),
            // Elementwise: the whole batch at once.
            other => other.apply(z),
        }
    }

    /// Turns `d = ∂L/∂y` into `∂L/∂z` in place, given the output `y` (Jacobian-vector
    /// product; for softmax the full Jacobian).
    pub fn backprop(self, y: &[f32], d: &mut [f32]) {
        match self {
            Activation::Sigmoid => kernels::mul_sigmoid_derivative(y, d),
            Activation::Tanh => kernels::mul_tanh_derivative(y, d),
            Activation::Relu => kernels::mul_relu_derivative(y, d),
            Activation::Linear => {}
            Activation::Softmax => kernels::mul_softmax_jacobian(y, d),
        }
    }

    /// Whether He initialisation suits it better than Xavier.
    pub(crate) fn prefers_he_init(self) -> bool {
        matches!(self, Activation::Relu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for a in [
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Relu,
            Activation::Linear,
            Activation::Softmax,
        ] {
            assert_eq!(Activation::from_code(a.code()), Some(a));
        }
        assert_eq!(Activation::from_code(5), None);
    }
}
