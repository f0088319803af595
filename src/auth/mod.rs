//! Peer authentication without certificates: what a node proves itself with, and whom it
//! accepts.
//!
//! Each node holds an Ed25519 key pair ([`NodeKey`]), or all nodes of a cluster share a secret
//! ([`PreSharedKey`]). During the handshake both sides send a fresh random nonce and prove
//! possession of their key over a transcript that holds both nonces, both keys and both node
//! ids ([`transcript`]), so a recorded exchange cannot be replayed and an exchange meant for
//! another node does not verify. The session ([`crate::session`]) runs the exchange; this
//! module holds the keys, the transcript and the key files. docs/PROTOCOL.md gives the bytes.
//!
//! Secrets never reach a log: [`NodeKey`], [`PreSharedKey`] and [`AuthConfig`] print only
//! public keys.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use ring::rand::SecureRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::wire::AuthScheme;

mod key_file;
pub mod transcript;

pub use key_file::{generate_key_pem, read_allowed_peers, KeyFileError};

/// An Ed25519 public key, the identity of a node.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Display for PublicKey {
    /// 64 lowercase hex digits, the form of an allowed-peers file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = &'static str;

    /// 64 hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err("a public key is 64 hex digits");
        }
        let mut key = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let digits = core::str::from_utf8(pair).map_err(|_| "not a hex digit")?;
            key[i] = u8::from_str_radix(digits, 16).map_err(|_| "not a hex digit")?;
        }
        Ok(PublicKey(key))
    }
}

/// A node's Ed25519 key pair. Its `Debug` shows the public key only.
pub struct NodeKey {
    pair: Ed25519KeyPair,
}

impl NodeKey {
    /// The key pair of a 32-byte Ed25519 seed (the secret key).
    pub fn from_seed(seed: &[u8; 32]) -> NodeKey {
        let pair =
            Ed25519KeyPair::from_seed_unchecked(seed).expect("any 32 bytes are an Ed25519 seed");
        NodeKey { pair }
    }

    /// The key pair of a PKCS#8 document (DER), version 1 as OpenSSL writes it or version 2.
    pub fn from_pkcs8(der: &[u8]) -> Result<NodeKey, &'static str> {
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(|pair| NodeKey { pair })
            .map_err(|_| "not an Ed25519 private key in PKCS#8")
    }

    /// The public half, which peers put in their allowed lists.
    pub fn public_key(&self) -> PublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(key)
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// A secret shared by every node of a cluster (at least 32 bytes). Its `Debug` shows nothing
/// of it.
pub struct PreSharedKey {
    key: ring::hmac::Key,
}

impl PreSharedKey {
    /// The shortest secret accepted, in bytes.
    pub const MIN_LEN: usize = 32;

    /// A key from its secret bytes; refused if shorter than [`PreSharedKey::MIN_LEN`].
    pub fn new(secret: &[u8]) -> Result<PreSharedKey, &'static str> {
        if secret.len() < Self::MIN_LEN {
            return Err("a pre-shared key is at least 32 bytes (64 hex digits)");
        }
        Ok(PreSharedKey {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        })
    }
}

impl fmt::Debug for PreSharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PreSharedKey(..)")
    }
}

/// What a node proves itself with.
#[derive(Debug)]
pub enum Credential {
    /// Its own Ed25519 key pair.
    Ed25519(NodeKey),
    /// The cluster's shared secret.
    PreShared(PreSharedKey),
}

/// Where nonces come from: the system's secure random generator, or (tests only) one fixed
/// value, so that an exchange can be written down as a test vector.
enum Nonces {
    System(ring::rand::SystemRandom),
    #[cfg_attr(not(any(test, fuzzing, feature = "fuzzing")), allow(dead_code))]
    Fixed([u8; 32]),
}

/// A node's authentication settings: its credential and, optionally, the peers it accepts.
/// Put it in [`crate::session::SessionConfig::auth`]; a node with one requires every peer
/// to authenticate, in both directions.
pub struct AuthConfig {
    credential: Credential,
    allowed_peers: Option<Vec<PublicKey>>,
    nonces: Nonces,
}

impl AuthConfig {
    /// Authenticates with `credential`, accepting any peer that proves its key (Ed25519: set
    /// [`AuthConfig::allowed_peers`] to choose whom; a shared key is its own allowance).
    pub fn new(credential: Credential) -> AuthConfig {
        AuthConfig {
            credential,
            allowed_peers: None,
            nonces: Nonces::System(ring::rand::SystemRandom::new()),
        }
    }

    /// Accepts only peers whose Ed25519 public key is in `keys`: on an accepting node the
    /// clients it lets in, on a connecting node the server it expects (like a pinned key).
    pub fn allowed_peers(mut self, keys: Vec<PublicKey>) -> AuthConfig {
        self.allowed_peers = Some(keys);
        self
    }

    /// Uses `nonce` for every exchange instead of a random one. Tests only: a fixed nonce on
    /// both sides lets a recorded exchange be replayed.
    #[cfg(any(test, fuzzing, feature = "fuzzing"))]
    #[doc(hidden)]
    pub fn fixed_nonce(mut self, nonce: [u8; 32]) -> AuthConfig {
        self.nonces = Nonces::Fixed(nonce);
        self
    }

    /// The scheme this credential proves with.
    pub fn scheme(&self) -> AuthScheme {
        match self.credential {
            Credential::Ed25519(_) => AuthScheme::Ed25519,
            Credential::PreShared(_) => AuthScheme::PreSharedKey,
        }
    }

    /// The key this node shows its peers (zero for a shared key, which shows none).
    pub fn public_key(&self) -> [u8; 32] {
        match &self.credential {
            Credential::Ed25519(key) => key.public_key().0,
            Credential::PreShared(_) => [0; 32],
        }
    }

    /// Whether a peer showing `key` may go on (an Ed25519 key on the allowed list, if any).
    pub fn allows(&self, key: &[u8; 32]) -> bool {
        match (&self.credential, &self.allowed_peers) {
            (Credential::Ed25519(_), Some(list)) => list.iter().any(|k| &k.0 == key),
            _ => true,
        }
    }

    /// A fresh nonce.
    pub fn nonce(&self) -> [u8; 32] {
        match &self.nonces {
            Nonces::System(rng) => {
                let mut nonce = [0u8; 32];
                // ring's SystemRandom reads the OS generator; it fails only if the OS has none.
                rng.fill(&mut nonce)
                    .expect("the operating system's random generator failed");
                nonce
            }
            Nonces::Fixed(nonce) => *nonce,
        }
    }

    /// This node's proof over `transcript`: an Ed25519 signature, or an HMAC-SHA256 tag
    /// followed by 32 zeros.
    pub fn prove(&self, transcript: &[u8]) -> [u8; 64] {
        match &self.credential {
            Credential::Ed25519(key) => key.sign(transcript),
            Credential::PreShared(psk) => {
                let mut out = [0u8; 64];
                out[..32].copy_from_slice(ring::hmac::sign(&psk.key, transcript).as_ref());
                out
            }
        }
    }

    /// Whether `proof` is the peer's proof over `transcript`, made with `peer_key` (Ed25519)
    /// or with the shared key.
    pub fn verify(&self, peer_key: &[u8; 32], transcript: &[u8], proof: &[u8; 64]) -> bool {
        match &self.credential {
            Credential::Ed25519(_) => {
                ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, peer_key)
                    .verify(transcript, proof)
                    .is_ok()
            }
            Credential::PreShared(psk) => {
                proof[32..].iter().all(|&b| b == 0)
                    && ring::hmac::verify(&psk.key, transcript, &proof[..32]).is_ok()
            }
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("credential", &self.credential)
            .field("allowed_peers", &self.allowed_peers.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

/// Shared settings, as a session config holds them.
pub type SharedAuthConfig = Arc<AuthConfig>;
