//! Hebbian learning: local, label-free weight rules, and the running correlations that
//! peers exchange.
//!
//! # What a rule sees
//! For a layer with weights `W` (rows `w_i`), input `x` and biases ignored, every rule uses
//! the **linear response** `y = W x` (no bias, no activation), so that the classical
//! results (Oja → first principal component, Sanger → the leading ones) hold whatever the
//! layer's activation is. [`HebbianLearningMode::Competitive`] instead uses the one-hot
//! winner. [`NeuralNetwork::hebbian_update`] applies the rule to every layer in turn; the
//! next layer's input is this layer's usual output `f(W x + b)`, computed with the weights
//! before the update.
//!
//! # Correlations as data
//! Each layer keeps `C ← (1-α) C + α y xᵀ`, an exponential moving average of the response
//! times the input (`α` = [`HebbianParams::correlation_rate`]), row-major
//! `[outputs x inputs]`: the payload of a HebbianData message (layer id, learning rate,
//! rows, cols, correlations). [`NeuralNetwork::integrate_correlations`] blends a received
//! matrix into the running one and applies the rule's expected (batch) weight change
//! computed from it.
//!
//! # Non-finite values
//! Both steps refuse a NaN or infinity in what they are given (the input, the received
//! correlations, the learning rate: [`NnError::NonFinite`]) and compute the new weights and
//! state before committing them: if any would be non-finite (a diverging learning rate)
//! they return [`NnError::Overflow`] naming the layer, and the network is unchanged.

use super::finite::{check_given, check_result, surely_finite};
use super::kernels;
use super::network::{Layer, NeuralNetwork};
use super::NnError;

/// The Hebbian rule applied by [`NeuralNetwork::hebbian_update`].
///
/// `η` is the network's learning rate, `y = W x` the linear response, `w_i` row `i` of `W`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HebbianLearningMode {
    /// Plain Hebb with row normalisation: `w_i ← w_i + η y_i x`, then
    /// `w_i ← w_i · min(1, m / ‖w_i‖)` with `m` = [`HebbianParams::max_row_norm`], so weights
    /// stay bounded (pure Hebb grows without limit).
    Classic,
    /// Oja's rule: `Δw_i = η y_i (x - y_i w_i)`. A single unit converges to the unit-norm
    /// first principal component of zero-mean inputs.
    Oja,
    /// Sanger's generalised Hebbian algorithm:
    /// `Δw_i = η y_i (x - Σ_{k≤i} y_k w_k)`. Row `i` converges to the `i`-th principal
    /// component (rows in order of decreasing variance).
    Sanger,
    /// Bienenstock–Cooper–Munro: `Δw_i = η y_i (y_i - θ_i) x` with a sliding threshold
    /// `θ_i ← θ_i + τ (y_i² - θ_i)` (`τ` = [`HebbianParams::bcm_threshold_rate`]), so `θ_i`
    /// tracks `E[y_i²]`. Units become selective: they respond to few input patterns.
    Bcm,
    /// Winner-take-all competitive learning: the unit `k = argmin_i ‖x - w_i‖` moves
    /// towards the input, `Δw_k = η (x - w_k)`; the others do not change. Rows become
    /// cluster prototypes. Here `y` is the one-hot winner.
    Competitive,
    /// Anti-Hebbian decorrelation between outputs: `Δw_i = -η y_i Σ_{k≠i} y_k w_k`, i.e.
    /// `ΔW = -η offdiag(y yᵀ) W`. Co-active outputs weaken each other's shared input
    /// directions until `E[y_i y_k] = 0` for `i ≠ k`: outputs become decorrelated.
    AntiHebbian,
}

impl HebbianLearningMode {
    /// Every rule, in declaration order.
    pub const ALL: [HebbianLearningMode; 6] = [
        Self::Classic,
        Self::Oja,
        Self::Sanger,
        Self::Bcm,
        Self::Competitive,
        Self::AntiHebbian,
    ];

    /// The rule's name in lower case, as configuration and the command line spell it
    /// (`classic`, `oja`, `sanger`, `bcm`, `competitive`, `anti-hebbian`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Oja => "oja",
            Self::Sanger => "sanger",
            Self::Bcm => "bcm",
            Self::Competitive => "competitive",
            Self::AntiHebbian => "anti-hebbian",
        }
    }
}

impl std::str::FromStr for HebbianLearningMode {
    type Err = String;

    /// Parses [`HebbianLearningMode::name`], ignoring case.
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|m| m.name()).collect();
                format!("unknown Hebbian rule {s:?}: one of {}", names.join(", "))
            })
    }
}

/// Rates of the Hebbian machinery other than the learning rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HebbianParams {
    /// `α` in the running correlation `C ← (1-α) C + α y xᵀ` (default 0.01).
    pub correlation_rate: f32,
    /// `τ` in the BCM threshold `θ ← θ + τ (y² - θ)` (default 0.01).
    pub bcm_threshold_rate: f32,
    /// Row-norm bound of [`HebbianLearningMode::Classic`] (default 1).
    pub max_row_norm: f32,
}

impl Default for HebbianParams {
    fn default() -> Self {
        Self {
            correlation_rate: 0.01,
            bcm_threshold_rate: 0.01,
            max_row_norm: 1.0,
        }
    }
}

/// Per-layer Hebbian state.
#[derive(Debug, Clone)]
pub(crate) struct HebbianState {
    /// Running `E[y xᵀ]`, row-major `[outputs x inputs]`.
    correlations: Vec<f32>,
    /// BCM thresholds `θ_i`.
    threshold: Vec<f32>,
    /// Competitive: running win frequency of each unit.
    win_rate: Vec<f32>,
    /// Where the next step is computed before it is checked and swapped in.
    next: Next,
}

/// A layer's next parameters (weights and biases) and Hebbian state, computed from the
/// current ones and swapped in only once every layer's are finite. Kept between steps so a
/// step allocates nothing; a clone starts empty (it is scratch, not state).
#[derive(Debug, Default)]
struct Next {
    params: Vec<f32>,
    correlations: Vec<f32>,
    threshold: Vec<f32>,
    win_rate: Vec<f32>,
}

impl Clone for Next {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl HebbianState {
    pub(crate) fn new(layer: &Layer) -> Self {
        Self {
            correlations: vec![0.0; layer.weight_count()],
            threshold: vec![0.0; layer.outputs],
            win_rate: vec![1.0 / layer.outputs as f32; layer.outputs],
            next: Next::default(),
        }
    }

    /// Swaps the computed step in: `layer`'s parameters and this state become the next ones.
    fn commit(&mut self, layer: &mut Layer) {
        let n = &mut self.next;
        std::mem::swap(&mut layer.params, &mut n.params);
        std::mem::swap(&mut self.correlations, &mut n.correlations);
        std::mem::swap(&mut self.threshold, &mut n.threshold);
        std::mem::swap(&mut self.win_rate, &mut n.win_rate);
    }

    /// Refuses a computed step holding a NaN or infinity ([`NnError::Overflow`]).
    ///
    /// `seen_finite` says whether every value was already seen finite as it was computed;
    /// only if not is the step searched here.
    fn check_next(&self, l: usize, weights: usize, seen_finite: bool) -> Result<(), NnError> {
        if seen_finite {
            return Ok(());
        }
        check_result("thresholds", l, &self.next.threshold)?;
        check_result("parameters", l, &self.next.params[..weights])?;
        check_result("correlations", l, &self.next.correlations)
    }
}

/// Scratch for one step.
#[derive(Debug, Default)]
struct Buffers {
    x: Vec<f32>,
    y: Vec<f32>,
    next: Vec<f32>,
    s: Vec<f32>,
}

fn clamp_row_norms(w: &mut [f32], cols: usize, max: f32) {
    for row in w.chunks_exact_mut(cols) {
        let n = kernels::dot(row, row).sqrt();
        if n > max {
            let f = max / n;
            row.iter_mut().for_each(|v| *v *= f);
        }
    }
}

fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| (a - b) * (a - b)).sum()
}

/// From this row width up, Hebbian steps check each row in the pass that computes it
/// rather than each layer after (measured: at 64 columns the per-row call costs more than
/// the row; at 784 the extra pass over a layer costs more than the calls).
const FUSED_CHECK_COLS: usize = 256;

/// `y += alpha * x`, and whether every result is finite when `check` (else `true`, for a
/// check later).
fn axpy_rows(check: bool, alpha: f32, x: &[f32], y: &mut [f32]) -> bool {
    if check {
        kernels::axpy_finite(alpha, x, y)
    } else {
        kernels::axpy(alpha, x, y);
        true
    }
}

/// Rows `(new, old, y_i)`: a layer's next weight rows beside its current ones and the
/// unit's response.
fn row_pairs<'a>(
    new: &'a mut [f32],
    old: &'a [f32],
    y: &'a [f32],
    cols: usize,
) -> impl Iterator<Item = (&'a mut [f32], &'a [f32], f32)> + 'a {
    new.chunks_exact_mut(cols)
        .zip(old.chunks_exact(cols))
        .zip(y)
        .map(|((new, old), y)| (new, old, *y))
}

/// `dst = src * f` (the out-of-place form of an in-place `*v *= f`, same values).
fn scale_into(dst: &mut [f32], src: &[f32], f: f32) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s * f;
    }
}

impl NeuralNetwork {
    /// One Hebbian step of the current [`HebbianLearningMode`] on every layer, for one
    /// input sample (see the module docs for what each layer sees).
    ///
    /// A NaN or infinity in `input` (or a non-finite learning rate) is refused
    /// ([`NnError::NonFinite`]); a step that would make a weight or the Hebbian state
    /// non-finite stops with [`NnError::Overflow`] (`"parameters"`, `"correlations"`,
    /// `"thresholds"`). Either way the network is unchanged: every layer's step is computed
    /// into buffers of its own, from the current weights, and swapped in once all are
    /// finite.
    pub fn hebbian_update(&mut self, input: &[f32]) -> Result<(), NnError> {
        let iw = self.input_size();
        if input.len() != iw {
            return Err(NnError::InputLength {
                layer: 0,
                expected: iw,
                got: input.len(),
            });
        }
        check_given("input", 0, input)?;
        check_given("learning rate", 0, &[self.learning_rate])?;
        let mut b = Buffers::default();
        b.x.extend_from_slice(input);
        let eta = self.learning_rate;
        let mode = self.mode;
        let p = self.hebbian;
        for (l, (layer, state)) in self.layers.iter().zip(&mut self.hebbian_state).enumerate() {
            let (rows, cols) = (layer.outputs, layer.inputs);
            b.y.resize(rows, 0.0);
            kernels::matvec(layer.weights(), &b.x, &mut b.y);
            // The next layer's input, from the weights before this step.
            b.next.clear();
            b.next
                .extend(b.y.iter().zip(layer.biases()).map(|(y, b)| y + b));
            layer.activation.apply(&mut b.next);
            let next = &mut state.next;
            next.params.resize(layer.params.len(), 0.0);
            next.threshold.clone_from(&state.threshold);
            next.win_rate.clone_from(&state.win_rate);
            let (w, biases) = next.params.split_at_mut(rows * cols);
            biases.copy_from_slice(layer.biases());
            let old = layer.weights();
            // Every value computed is checked before anything is committed: on wide rows by
            // each row's last operation itself (`axpy_finite`, in the same pass); on narrow
            // ones, where a call per row costs more than the row, by one pass per layer.
            let fused = cols >= FUSED_CHECK_COLS;
            let mut ok = true;
            match mode {
                HebbianLearningMode::Classic => {
                    for (row, old, y) in row_pairs(w, old, &b.y, cols) {
                        row.copy_from_slice(old);
                        ok &= axpy_rows(fused, eta * y, &b.x, row);
                    }
                    // Finite rows stay finite: a norm that overflows scales its row by 0.
                    clamp_row_norms(w, cols, p.max_row_norm);
                }
                HebbianLearningMode::Oja => {
                    for (row, old, y) in row_pairs(w, old, &b.y, cols) {
                        scale_into(row, old, 1.0 - eta * y * y);
                        ok &= axpy_rows(fused, eta * y, &b.x, row);
                    }
                }
                HebbianLearningMode::Sanger => {
                    // residual r = x - Σ_{k<i} y_k w_k (old weights), updated row by row.
                    b.s.clear();
                    b.s.extend_from_slice(&b.x);
                    for (row, old, y) in row_pairs(w, old, &b.y, cols) {
                        kernels::axpy(-y, old, &mut b.s);
                        row.copy_from_slice(old);
                        ok &= axpy_rows(fused, eta * y, &b.s, row);
                    }
                }
                HebbianLearningMode::Bcm => {
                    for ((row, old, y), th) in
                        row_pairs(w, old, &b.y, cols).zip(&mut next.threshold)
                    {
                        row.copy_from_slice(old);
                        ok &= axpy_rows(fused, eta * y * (y - *th), &b.x, row);
                        *th += p.bcm_threshold_rate * (y * y - *th);
                        ok &= th.is_finite();
                    }
                }
                HebbianLearningMode::Competitive => {
                    let mut best = (0, f32::INFINITY);
                    for (i, row) in old.chunks_exact(cols).enumerate() {
                        let d = squared_distance(row, &b.x);
                        if d < best.1 {
                            best = (i, d);
                        }
                    }
                    w.copy_from_slice(old);
                    let row = &mut w[best.0 * cols..(best.0 + 1) * cols];
                    row.iter_mut().for_each(|v| *v *= 1.0 - eta);
                    ok = axpy_rows(fused, eta, &b.x, row);
                    b.y.fill(0.0);
                    b.y[best.0] = 1.0;
                    let a = p.correlation_rate;
                    for (r, y) in next.win_rate.iter_mut().zip(&b.y) {
                        *r += a * (y - *r);
                    }
                }
                HebbianLearningMode::AntiHebbian => {
                    // s = Wᵀ y (old weights); Δw_i = -η y_i (s - y_i w_i).
                    b.s.clear();
                    b.s.resize(cols, 0.0);
                    for (row, y) in old.chunks_exact(cols).zip(&b.y) {
                        kernels::axpy(*y, row, &mut b.s);
                    }
                    for (row, old, y) in row_pairs(w, old, &b.y, cols) {
                        scale_into(row, old, 1.0 + eta * y * y);
                        ok &= axpy_rows(fused, -eta * y, &b.s, row);
                    }
                }
            }
            let a = p.correlation_rate;
            next.correlations.resize(state.correlations.len(), 0.0);
            for ((crow, old), y) in next
                .correlations
                .chunks_exact_mut(cols)
                .zip(state.correlations.chunks_exact(cols))
                .zip(&b.y)
            {
                scale_into(crow, old, 1.0 - a);
                ok &= axpy_rows(fused, a * y, &b.x, crow);
            }
            if !fused {
                ok = ok
                    && surely_finite(&next.params[..rows * cols])
                    && surely_finite(&next.correlations);
            }
            state.check_next(l, rows * cols, ok)?;
            std::mem::swap(&mut b.x, &mut b.next);
        }
        for (layer, state) in self.layers.iter_mut().zip(&mut self.hebbian_state) {
            state.commit(layer);
        }
        Ok(())
    }

    /// The running correlation `E[y xᵀ]` of layer `l`, row-major `[outputs x inputs]`
    /// (the HebbianData payload).
    ///
    /// # Panics
    /// If `l >= layer_count()`.
    pub fn layer_correlations(&self, l: usize) -> &[f32] {
        &self.hebbian_state[l].correlations
    }

    /// The BCM thresholds `θ_i` of layer `l` (tracking `E[y_i²]`).
    ///
    /// # Panics
    /// If `l >= layer_count()`.
    pub fn bcm_thresholds(&self, l: usize) -> &[f32] {
        &self.hebbian_state[l].threshold
    }

    /// Integrates correlations `R` received for layer `l` (row-major `[outputs x inputs]`,
    /// e.g. from a peer's HebbianData) with the sender's `learning_rate` `η`.
    ///
    /// First `C ← (1-α) C + α R`; then the rule's expected weight change, written with
    /// `R ≈ E[y xᵀ]` and `P = R Wᵀ ≈ E[y yᵀ]` (since `y = W x`), `q_i = P_ii ≈ E[y_i²]`:
    ///
    /// * Classic: `W += η R`, then the row-norm bound.
    /// * Oja: `w_i += η (r_i - q_i w_i)`.
    /// * Sanger: `w_i += η (r_i - Σ_{k≤i} P_ik w_k)`.
    /// * BCM: `w_i += η (√q_i - θ_i) r_i`, then `θ_i ← θ_i + τ (q_i - θ_i)`. This is a
    ///   mean-field approximation (`y_i² x ≈ √q_i · y_i x`): the exact rule needs third-order
    ///   statistics that a correlation matrix does not carry.
    /// * Competitive: `w_i += η (r_i - p_i w_i)` with `p_i` this network's running win rate
    ///   of unit `i` (`r_i = E[[i wins] x]`, so the fixed point is the cluster mean).
    /// * AntiHebbian: `w_i -= η Σ_{k≠i} P_ik w_k`.
    ///
    /// A NaN or infinity in `correlations` or `learning_rate` is refused
    /// ([`NnError::NonFinite`]: `"correlations"`, `"learning rate"`); an update that would
    /// make a weight or the layer's Hebbian state non-finite stops with
    /// [`NnError::Overflow`]. Either way nothing is changed.
    pub fn integrate_correlations(
        &mut self,
        l: usize,
        correlations: &[f32],
        learning_rate: f32,
    ) -> Result<(), NnError> {
        let layer = self.layer_checked(l)?;
        let (rows, cols) = (layer.outputs, layer.inputs);
        if correlations.len() != rows * cols {
            return Err(NnError::CorrelationsLength {
                layer: l,
                expected: rows * cols,
                got: correlations.len(),
            });
        }
        check_given("correlations", l, correlations)?;
        check_given("learning rate", l, &[learning_rate])?;
        let eta = learning_rate;
        let p = self.hebbian;
        let mode = self.mode;
        let layer = &mut self.layers[l];
        let state = &mut self.hebbian_state[l];
        // Computed into the layer's next buffers, from the current weights and state.
        let next = &mut state.next;
        let a = p.correlation_rate;
        next.correlations.clear();
        next.correlations.extend(
            state
                .correlations
                .iter()
                .zip(correlations)
                .map(|(c, r)| c + a * (r - c)),
        );
        next.threshold.clone_from(&state.threshold);
        next.win_rate.clone_from(&state.win_rate);
        next.params.clone_from(&layer.params);
        let old = layer.weights();
        let w = &mut next.params[..rows * cols];
        // P_ik = r_i · w_k (old weights).
        let mut pm = vec![0.0; rows * rows];
        if !matches!(
            mode,
            HebbianLearningMode::Classic | HebbianLearningMode::Competitive
        ) {
            kernels::matmul_nt(correlations, old, &mut pm, cols, rows);
        }
        let r_row = |i: usize| &correlations[i * cols..(i + 1) * cols];
        let w_row = |i: usize| &old[i * cols..(i + 1) * cols];
        for (i, row) in w.chunks_exact_mut(cols).enumerate() {
            match mode {
                HebbianLearningMode::Classic => kernels::axpy(eta, r_row(i), row),
                HebbianLearningMode::Oja => {
                    kernels::axpy(eta, r_row(i), row);
                    kernels::axpy(-eta * pm[i * rows + i], w_row(i), row);
                }
                HebbianLearningMode::Sanger => {
                    kernels::axpy(eta, r_row(i), row);
                    for k in 0..=i {
                        kernels::axpy(-eta * pm[i * rows + k], w_row(k), row);
                    }
                }
                HebbianLearningMode::Bcm => {
                    let q = pm[i * rows + i].max(0.0);
                    let th = &mut next.threshold[i];
                    kernels::axpy(eta * (q.sqrt() - *th), r_row(i), row);
                    *th += p.bcm_threshold_rate * (q - *th);
                }
                HebbianLearningMode::Competitive => {
                    kernels::axpy(eta, r_row(i), row);
                    kernels::axpy(-eta * state.win_rate[i], w_row(i), row);
                }
                HebbianLearningMode::AntiHebbian => {
                    for k in (0..rows).filter(|&k| k != i) {
                        kernels::axpy(-eta * pm[i * rows + k], w_row(k), row);
                    }
                }
            }
        }
        if mode == HebbianLearningMode::Classic {
            clamp_row_norms(w, cols, p.max_row_norm);
        }
        state.check_next(l, rows * cols, false)?;
        state.commit(layer);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mode_names_round_trip() {
        for mode in HebbianLearningMode::ALL {
            assert_eq!(mode.name().parse::<HebbianLearningMode>(), Ok(mode));
        }
        assert_eq!("OJA".parse(), Ok(HebbianLearningMode::Oja));
        let err = "hebb".parse::<HebbianLearningMode>().unwrap_err();
        assert!(err.contains("anti-hebbian"), "{err}");
    }

    use super::*;
    use crate::nn::{Activation, NeuralNetwork};

    fn net(mode: HebbianLearningMode, sizes: &[usize]) -> NeuralNetwork {
        NeuralNetwork::builder(sizes)
            .hidden_activation(Activation::Linear)
            .output_activation(Activation::Linear)
            .mode(mode)
            .learning_rate(0.05)
            .seed(2)
            .build()
            .unwrap()
    }

    #[test]
    fn correlations_track_y_x() {
        let mut n = net(HebbianLearningMode::Oja, &[3, 2]);
        n.hebbian = HebbianParams {
            correlation_rate: 1.0,
            ..HebbianParams::default()
        };
        let x = [1.0, 2.0, -1.0];
        let (_, y) = n.forward(&x).unwrap();
        n.hebbian_update(&x).unwrap();
        let c = n.layer_correlations(0);
        for i in 0..2 {
            for j in 0..3 {
                assert!((c[i * 3 + j] - y[i] * x[j]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn every_mode_steps_and_integrates() {
        use HebbianLearningMode::*;
        for mode in [Classic, Oja, Sanger, Bcm, Competitive, AntiHebbian] {
            let mut n = net(mode, &[4, 3, 2]);
            let before = n.layer_params(0).to_vec();
            for k in 0..10 {
                n.hebbian_update(&[0.5, -0.25 * k as f32, 0.1, 1.0])
                    .unwrap();
            }
            assert_ne!(n.layer_params(0), &before[..], "{mode:?}");
            let c = n.layer_correlations(1).to_vec();
            let before = n.layer_params(1).to_vec();
            n.integrate_correlations(1, &c, 0.1).unwrap();
            assert!(n.layer_params(1).iter().all(|v| v.is_finite()));
            assert_ne!(n.layer_params(1), &before[..], "{mode:?}");
            assert!(matches!(
                n.integrate_correlations(1, &c[1..], 0.1),
                Err(NnError::CorrelationsLength {
                    layer: 1,
                    expected: 6,
                    got: 5
                })
            ));
            assert!(matches!(
                n.hebbian_update(&[0.0; 3]),
                Err(NnError::InputLength {
                    layer: 0,
                    expected: 4,
                    got: 3
                })
            ));
        }
    }

    #[test]
    fn oja_batch_form_matches_stochastic_average() {
        // With C = y xᵀ of one sample, integrating it equals one stochastic Oja step.
        let mut a = net(HebbianLearningMode::Oja, &[3, 1]);
        let mut b = a.clone();
        let x = [0.3, -0.2, 0.5];
        let (_, y) = a.forward(&x).unwrap();
        let c: Vec<f32> = x.iter().map(|v| v * y[0]).collect();
        a.hebbian_update(&x).unwrap();
        b.integrate_correlations(0, &c, 0.05).unwrap();
        for (p, q) in a.layer_weights(0).iter().zip(b.layer_weights(0)) {
            assert!((p - q).abs() < 1e-6);
        }
    }
}
