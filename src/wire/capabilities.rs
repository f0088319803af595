//! Capability bits a node announces in its Handshake; a session agrees on the intersection.

/// Runs forward passes on received activations.
pub const FORWARD_PROPAGATION: u32 = 1 << 0;
/// Accepts and applies gradients.
pub const BACKPROPAGATION: u32 = 1 << 1;
/// Exchanges Hebbian correlation matrices.
pub const HEBBIAN_LEARNING: u32 = 1 << 2;
/// Exchanges layer weights.
pub const WEIGHT_SYNC: u32 = 1 << 3;
/// Analyses correlations between layers.
pub const CORRELATION_ANALYSIS: u32 = 1 << 4;
/// Holds more than one layer.
pub const MULTI_LAYER: u32 = 1 << 5;
/// Answers within real-time bounds.
pub const REAL_TIME: u32 = 1 << 6;
/// Understands compressed payload encodings.
pub const COMPRESSION: u32 = 1 << 7;

/// Authenticates both peers (Auth frames after the handshake, docs/PROTOCOL.md). Offered
/// only by a node configured with a key, so it is not in [`ALL`]: a node without one sends
/// the same Handshake as before the bit existed.
pub const AUTHENTICATION: u32 = 1 << 8;

/// Every capability a node offers by default (all but [`AUTHENTICATION`], which a key turns
/// on).
pub const ALL: u32 = FORWARD_PROPAGATION
    | BACKPROPAGATION
    | HEBBIAN_LEARNING
    | WEIGHT_SYNC
    | CORRELATION_ANALYSIS
    | MULTI_LAYER
    | REAL_TIME
    | COMPRESSION;

/// The names of the bits set in `caps`, lowest bit first (unknown bits are skipped).
pub fn names(caps: u32) -> impl Iterator<Item = &'static str> {
    const NAMES: [&str; 9] = [
        "FORWARD_PROPAGATION",
        "BACKPROPAGATION",
        "HEBBIAN_LEARNING",
        "WEIGHT_SYNC",
        "CORRELATION_ANALYSIS",
        "MULTI_LAYER",
        "REAL_TIME",
        "COMPRESSION",
        "AUTHENTICATION",
    ];
    (0..9)
        .filter(move |i| caps & (1 << i) != 0)
        .map(|i| NAMES[i])
}
