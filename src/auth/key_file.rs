//! Key files: an Ed25519 private key in PKCS#8 PEM (as `openssl genpkey -algorithm ed25519`
//! writes it), a shared key as hex, and allowed-peers files (one hex public key a line, `#`
//! comments). Errors name the file and the line, never the key.

use std::fmt;
use std::path::{Path, PathBuf};

use ring::rand::SecureRandom;

use super::{NodeKey, PreSharedKey, PublicKey};

/// A key file that could not be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The file's content is not what it should hold.
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line (from 1), if the fault is on one.
        line: Option<usize>,
        /// What is wrong, for a person.
        reason: &'static str,
    },
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            KeyFileError::Invalid {
                path,
                line: Some(line),
                reason,
            } => write!(f, "{}:{line}: {reason}", path.display()),
            KeyFileError::Invalid { path, reason, .. } => {
                write!(f, "{}: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for KeyFileError {}

fn read(path: &Path) -> Result<String, KeyFileError> {
    std::fs::read_to_string(path).map_err(|error| KeyFileError::Io {
        path: path.to_owned(),
        error,
    })
}

fn invalid(path: &Path, line: Option<usize>, reason: &'static str) -> KeyFileError {
    KeyFileError::Invalid {
        path: path.to_owned(),
        line,
        reason,
    }
}

/// The DER of a PKCS#8 version 1 Ed25519 private key before its 32-byte seed (RFC 8410), the
/// form OpenSSL writes.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl NodeKey {
    /// Reads an Ed25519 private key from a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem_file(path: &Path) -> Result<NodeKey, KeyFileError> {
        let text = read(path)?;
        let block = pem::parse(text.trim())
            .map_err(|_| invalid(path, None, "not a PEM file (-----BEGIN PRIVATE KEY-----)"))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(invalid(path, None, "the PEM block is not a PRIVATE KEY"));
        }
        NodeKey::from_pkcs8(block.contents()).map_err(|reason| invalid(path, None, reason))
    }
}

impl PreSharedKey {
    /// Reads a shared key from a file holding it as hex (64 digits or more, one line).
    pub fn from_hex_file(path: &Path) -> Result<PreSharedKey, KeyFileError> {
        let text = read(path)?;
        let hex = text.trim();
        if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                path,
                None,
                "a pre-shared key file holds hex digits",
            ));
        }
        let secret: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0))
            .collect();
        PreSharedKey::new(&secret).map_err(|reason| invalid(path, None, reason))
    }
}

/// Reads an allowed-peers file: one public key a line as 64 hex digits, blank lines and text
/// after `#` ignored.
pub fn read_allowed_peers(path: &Path) -> Result<Vec<PublicKey>, KeyFileError> {
    let text = read(path)?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if !line.is_empty() {
            keys.push(
                line.parse()
                    .map_err(|reason| invalid(path, Some(i + 1), reason))?,
            );
        }
    }
    Ok(keys)
}

/// A new random Ed25519 private key as PKCS#8 PEM (the form OpenSSL writes), and its public
/// key.
pub fn generate_key_pem() -> Result<(String, PublicKey), ring::error::Unspecified> {
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut seed)?;
    let mut der = PKCS8_V1_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    let public = NodeKey::from_seed(&seed).public_key();
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
    Ok((pem, public))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_reads_back_with_its_public_key() {
        let dir = std::env::temp_dir().join(format!("nnp-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.pem");
        let (pem, public) = generate_key_pem().unwrap();
        std::fs::write(&path, pem).unwrap();
        assert_eq!(NodeKey::from_pem_file(&path).unwrap().public_key(), public);

        let peers = dir.join("peers");
        std::fs::write(&peers, format!("# the cluster\n\n{public}  # node a\n")).unwrap();
        assert_eq!(read_allowed_peers(&peers).unwrap(), vec![public]);
        std::fs::write(&peers, "abc\n").unwrap();
        let err = read_allowed_peers(&peers).unwrap_err().to_string();
        assert!(err.contains("peers:1:"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_openssl_key_file_reads() {
        // `openssl genpkey -algorithm ed25519` output (RFC 8410 section 10.3's example key).
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
                   -----END PRIVATE KEY-----\n";
        let path = std::env::temp_dir().join(format!("nnp-openssl-{}.pem", std::process::id()));
        std::fs::write(&path, pem).unwrap();
        let key = NodeKey::from_pem_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            key.public_key().to_string(),
            "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"
        );
        let debug = format!("{key:?}");
        assert!(!debug.contains("d4ee72dbf913"), "{debug}");
    }
}
