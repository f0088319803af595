//! A stage's layers as WeightSync frames, numbered as layers of the whole network: how a stage
//! reports the weights it committed and how the driver gives them back.

use std::borrow::Cow;
use std::time::Duration;

use crate::net::{EngineHandle, NetError};
use crate::node::{PeerId, SyncMode, WEIGHT_SYNC_CHUNK};
use crate::wire::{Message, WeightSync};

/// Sends `layers` (each flat: weights row-major, then biases; `shapes` their `(rows, cols)`)
/// as layers `first..` of the whole network, `step` in the sample-count field.
pub(crate) fn send_layers(
    handle: &EngineHandle,
    peer: PeerId,
    first: usize,
    layers: &[(&[f32], (usize, usize))],
    step: u32,
    timeout: Duration,
) -> Result<(), NetError> {
    for (i, (params, (rows, cols))) in layers.iter().enumerate() {
        for (k, chunk) in params.chunks(WEIGHT_SYNC_CHUNK).enumerate() {
            let message = Message::WeightSync(WeightSync {
                layer_id: (first + i) as u16,
                mode: SyncMode::Replace,
                rows: *rows as u32,
                cols: *cols as u32,
                offset: (k * WEIGHT_SYNC_CHUNK) as u32,
                sample_count: step,
                values: Cow::Borrowed(chunk),
            });
            handle.send(peer, &message, timeout)?;
        }
    }
    Ok(())
}

/// A set of layers `first..first + lens.len()` arriving in WeightSync frames.
#[derive(Debug, Clone)]
pub(crate) struct LayerSet {
    pub(crate) first: usize,
    pub(crate) layers: Vec<Vec<f32>>,
    pub(crate) step: u32,
    received: usize,
    total: usize,
}

impl LayerSet {
    pub(crate) fn new(first: usize, lens: &[usize]) -> LayerSet {
        LayerSet {
            first,
            layers: lens.iter().map(|&n| vec![0.0; n]).collect(),
            step: 0,
            received: 0,
            total: lens.iter().sum(),
        }
    }

    /// Takes one frame; `Err` names what does not fit. True once the whole set is in (and
    /// then starts counting the next set).
    pub(crate) fn take(&mut self, sync: &WeightSync<'_>) -> Result<bool, String> {
        let layer = (sync.layer_id as usize).checked_sub(self.first);
        let offset = sync.offset as usize;
        let Some(params) = layer.and_then(|l| self.layers.get_mut(l)) else {
            return Err(format!(
                "layer {} is not one of layers {}..{}",
                sync.layer_id,
                self.first,
                self.first + self.layers.len()
            ));
        };
        let Some(window) = params.get_mut(offset..offset + sync.values.len()) else {
            return Err(format!(
                "values {offset}..{} of layer {}, which has {} parameters",
                offset + sync.values.len(),
                sync.layer_id,
                params.len()
            ));
        };
        window.copy_from_slice(&sync.values);
        self.step = sync.sample_count;
        self.received += sync.values.len();
        if self.received >= self.total {
            self.received = 0;
            return Ok(true);
        }
        Ok(false)
    }

    /// Forgets a set partly received.
    pub(crate) fn restart(&mut self) {
        self.received = 0;
    }
}
