//! Mini-batch training over a row-major data set.
//!
//! Inputs are one `&[f32]` of `samples x input_width`, targets one `&[f32]` of
//! `samples x output_width` (use [`one_hot`] for class labels), the layout a data set has
//! on disk or on the wire, so no per-sample `Vec` is built.

use super::backprop::{BackpropScratch, Gradients, Loss};
use super::finite::{check_given, check_result};
use super::network::{argmax, ForwardScratch, NeuralNetwork};
use super::optim::Optimizer;
use super::NnError;

/// Settings for [`NeuralNetwork::fit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitConfig {
    /// Passes over the data.
    pub epochs: usize,
    /// Samples per gradient step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Loss to minimise.
    pub loss: Loss,
    /// Whether to reshuffle the sample order every epoch (from the network's seed).
    pub shuffle: bool,
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 32,
            loss: Loss::CrossEntropy,
            shuffle: true,
        }
    }
}

/// One-hot rows for class `labels` out of `classes`.
pub fn one_hot(labels: &[usize], classes: usize) -> Result<Vec<f32>, NnError> {
    if labels.iter().any(|&l| l >= classes) {
        return Err(NnError::Labels {
            samples: labels.len(),
            labels: labels.len(),
            classes,
        });
    }
    let mut v = vec![0.0; labels.len() * classes];
    for (row, &l) in v.chunks_exact_mut(classes).zip(labels) {
        row[l] = 1.0;
    }
    Ok(v)
}

impl NeuralNetwork {
    pub(crate) fn sample_count(&self, inputs: &[f32], targets: &[f32]) -> Result<usize, NnError> {
        let (iw, ow) = (self.input_size(), self.output_size());
        if inputs.len() % iw != 0 {
            return Err(NnError::InputLength {
                layer: 0,
                expected: iw,
                got: inputs.len(),
            });
        }
        let n = inputs.len() / iw;
        if targets.len() != n * ow {
            return Err(NnError::TargetLength {
                layer: self.layer_count() - 1,
                expected: n * ow,
                got: targets.len(),
            });
        }
        Ok(n)
    }

    /// Refuses a NaN or infinity anywhere in a data set ([`NnError::NonFinite`], index into
    /// the flat buffer).
    pub(crate) fn check_data(&self, inputs: &[f32], targets: &[f32]) -> Result<(), NnError> {
        check_given("input", 0, inputs)?;
        check_given("target", self.layer_count() - 1, targets)
    }

    /// [`NnError::Overflow`] (`"parameters"`) at the first non-finite parameter.
    fn check_params(&self) -> Result<(), NnError> {
        for (l, layer) in self.layers.iter().enumerate() {
            check_result("parameters", l, &layer.params)?;
        }
        Ok(())
    }

    /// One pass over the data in mini-batches of `batch_size`; each batch's mean gradient
    /// goes to `optimizer`. Returns the mean loss over the epoch (measured during it).
    ///
    /// # Non-finite values
    /// * A NaN or infinity anywhere in `inputs` or `targets` is refused before anything
    ///   changes: [`NnError::NonFinite`] with `what` `"input"` or `"target"` and `index` into
    ///   the flat buffer (the row is `index / width`).
    /// * Divergence stops the epoch with [`NnError::Overflow`] naming the layer: a forward
    ///   pass whose `W x + b` overflows (`"pre-activation"`), a batch gradient that
    ///   overflows (`"gradient"`), or a step that would make a parameter (or an optimizer
    ///   moment) non-finite (`"parameters"`). [`Sgd`] and [`Adam`] check their update
    ///   before writing it, so **the network and the optimizer are left exactly as they
    ///   were before the failing step**, every parameter finite; the steps before it are
    ///   kept. An [`Optimizer`] of your own must do the same (its contract); if it does
    ///   not, training still stops with an error naming the layer (the next forward pass
    ///   fails, or the check at the end of the epoch does), but the bad step is not undone.
    ///
    /// [`Sgd`]: super::Sgd
    /// [`Adam`]: super::Adam
    pub fn train_epoch(
        &mut self,
        inputs: &[f32],
        targets: &[f32],
        batch_size: usize,
        loss: Loss,
        shuffle: bool,
        optimizer: &mut dyn Optimizer,
    ) -> Result<f32, NnError> {
        if batch_size == 0 {
            return Err(NnError::ZeroBatchSize);
        }
        let n = self.sample_count(inputs, targets)?;
        self.check_data(inputs, targets)?;
        let mut order: Vec<usize> = (0..n).collect();
        if shuffle {
            self.rng.shuffle(&mut order);
        }
        let mut grads = Gradients::zeros_like(self);
        let mut scratch = BackpropScratch::new();
        let mut total = 0.0f64;
        for batch in order.chunks(batch_size) {
            grads.zero();
            total += self.accumulate_rows(
                inputs,
                targets,
                batch.iter().copied(),
                loss,
                &mut scratch,
                &mut grads,
            )?;
            grads.scale(1.0 / batch.len() as f32);
            optimizer.step(self, &grads).map_err(|e| match e {
                // Computed here from finite data: the gradient overflowed.
                NnError::NonFinite {
                    what: "gradient",
                    layer,
                    index,
                    ..
                } => NnError::Overflow {
                    what: "gradient",
                    layer,
                    index,
                },
                e => e,
            })?;
        }
        // Sgd and Adam never leave a non-finite parameter. An optimizer of the caller's own
        // that did would be caught by the next batch's forward passes (a non-finite weight
        // or bias makes its unit's `W x + b` non-finite whatever the input); this catches
        // its last step.
        self.check_params()?;
        Ok((total / n.max(1) as f64) as f32)
    }

    /// [`Self::train_epoch`] `config.epochs` times; returns each epoch's mean loss.
    ///
    /// # Non-finite values
    /// As [`Self::train_epoch`]: a NaN or infinity in `inputs` or `targets` is refused
    /// ([`NnError::NonFinite`], `index` into the flat buffer) before the first step, so the
    /// network is unchanged; training that diverges stops with [`NnError::Overflow`] naming
    /// the layer, the network as it was before the failing step (with [`Sgd`] or [`Adam`])
    /// and every parameter finite.
    ///
    /// [`Sgd`]: super::Sgd
    /// [`Adam`]: super::Adam
    pub fn fit(
        &mut self,
        inputs: &[f32],
        targets: &[f32],
        config: &FitConfig,
        optimizer: &mut dyn Optimizer,
    ) -> Result<Vec<f32>, NnError> {
        let mut losses = Vec::with_capacity(config.epochs);
        for epoch in 0..config.epochs {
            let l = self.train_epoch(
                inputs,
                targets,
                config.batch_size,
                config.loss,
                config.shuffle,
                optimizer,
            )?;
            log::debug!("epoch {epoch}: mean loss {l}");
            losses.push(l);
        }
        Ok(losses)
    }

    /// Fraction of samples whose largest output is at their label.
    pub fn accuracy(&self, inputs: &[f32], labels: &[usize]) -> Result<f32, NnError> {
        let iw = self.input_size();
        if inputs.len() % iw != 0 {
            return Err(NnError::InputLength {
                layer: 0,
                expected: iw,
                got: inputs.len(),
            });
        }
        let n = inputs.len() / iw;
        if labels.len() != n {
            return Err(NnError::Labels {
                samples: n,
                labels: labels.len(),
                classes: self.output_size(),
            });
        }
        let mut scratch = ForwardScratch::new();
        let out = self.forward_batch(inputs, &mut scratch)?;
        let ow = self.output_size();
        let hits = out
            .chunks_exact(ow)
            .zip(labels)
            .filter(|(row, &l)| argmax(row) == l)
            .count();
        Ok(hits as f32 / n.max(1) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Activation, Adam};

    #[test]
    fn learns_xor() {
        let x = [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
        let labels = [0, 1, 1, 0];
        let t = one_hot(&labels, 2).unwrap();
        let mut net = NeuralNetwork::builder(&[2, 8, 2])
            .hidden_activation(Activation::Tanh)
            .output_activation(Activation::Softmax)
            .seed(1)
            .build()
            .unwrap();
        let cfg = FitConfig {
            epochs: 300,
            batch_size: 4,
            ..FitConfig::default()
        };
        let losses = net.fit(&x, &t, &cfg, &mut Adam::new(0.05)).unwrap();
        assert!(losses.last().unwrap() < &0.05, "{:?}", losses.last());
        assert_eq!(net.accuracy(&x, &labels).unwrap(), 1.0);
    }

    #[test]
    fn bad_data_shapes_are_errors() {
        let mut net = NeuralNetwork::builder(&[2, 2]).build().unwrap();
        let mut opt = Adam::new(0.1);
        assert!(matches!(
            net.train_epoch(
                &[0.0; 3],
                &[0.0; 2],
                1,
                Loss::MeanSquaredError,
                false,
                &mut opt
            ),
            Err(NnError::InputLength { .. })
        ));
        assert!(matches!(
            net.train_epoch(
                &[0.0; 4],
                &[0.0; 2],
                1,
                Loss::MeanSquaredError,
                false,
                &mut opt
            ),
            Err(NnError::TargetLength { .. })
        ));
        assert!(matches!(
            net.train_epoch(
                &[0.0; 4],
                &[0.0; 4],
                0,
                Loss::MeanSquaredError,
                false,
                &mut opt
            ),
            Err(NnError::ZeroBatchSize)
        ));
        assert!(matches!(one_hot(&[2], 2), Err(NnError::Labels { .. })));
    }
}
