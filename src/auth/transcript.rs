//! What each side signs: the transcript of an authenticated handshake.
//!
//! 168 bytes, all fixed-length fields (docs/PROTOCOL.md, "Authentication"):
//! a 16-byte label naming the signer's side, the scheme, the agreed version and capabilities,
//! both node ids, then the client's key and nonce and the server's key and nonce. The label
//! keeps one side's proof from being sent back as the other's; the nonces make every
//! transcript new; the server's key and id bind the proof to the server it was made for.

use crate::wire::AuthScheme;

/// The transcript's length in bytes.
pub const TRANSCRIPT_LEN: usize = 168;

/// The label of the accepting side's proof.
pub const SERVER_LABEL: &[u8; 16] = b"NNP auth server\0";
/// The label of the connecting side's proof.
pub const CLIENT_LABEL: &[u8; 16] = b"NNP auth client\0";

/// Everything both sides know once the keys and nonces have crossed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The scheme both use.
    pub scheme: AuthScheme,
    /// The agreed protocol version.
    pub version: u8,
    /// The agreed capabilities.
    pub capabilities: u32,
    /// The connecting side's node id.
    pub client_node_id: u64,
    /// The accepting side's node id.
    pub server_node_id: u64,
    /// The connecting side's public key (zero with a shared key).
    pub client_key: [u8; 32],
    /// The connecting side's nonce.
    pub client_nonce: [u8; 32],
    /// The accepting side's public key (zero with a shared key).
    pub server_key: [u8; 32],
    /// The accepting side's nonce.
    pub server_nonce: [u8; 32],
}

impl Exchange {
    /// The bytes the side named by `label` proves possession over.
    pub fn transcript(&self, label: &[u8; 16]) -> [u8; TRANSCRIPT_LEN] {
        let mut out = [0u8; TRANSCRIPT_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(label);
        put(&[self.scheme as u8, self.version, 0, 0]);
        put(&self.capabilities.to_le_bytes());
        put(&self.client_node_id.to_le_bytes());
        put(&self.server_node_id.to_le_bytes());
        put(&self.client_key);
        put(&self.client_nonce);
        put(&self.server_key);
        put(&self.server_nonce);
        debug_assert_eq!(at, TRANSCRIPT_LEN);
        out
    }
}
