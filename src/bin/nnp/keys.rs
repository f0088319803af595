//! Keys on the command line: `nnp keygen`, and the options every command that listens or
//! connects takes to authenticate its peers.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nnp::auth::{
    generate_key_pem, read_allowed_peers, AuthConfig, Credential, NodeKey, PreSharedKey,
};
use serde_json::json;

use crate::CliResult;

/// Peer authentication: with a key, every peer must prove its own (within the handshake
/// deadline) and this node proves its.
#[derive(clap::Args, Clone, Default)]
pub(crate) struct AuthArgs {
    /// This node's Ed25519 private key, PKCS#8 PEM (from `nnp keygen` or `openssl genpkey
    /// -algorithm ed25519`): peers must authenticate, and this node proves itself with it.
    #[arg(long, value_name = "PATH", conflicts_with = "psk_file")]
    auth_key: Option<PathBuf>,
    /// Accept only peers whose public key is in this file (64 hex digits a line, `#`
    /// comments): the clients a server lets in, the server a client expects.
    #[arg(long, value_name = "PATH", requires = "auth_key")]
    allowed_peers: Option<PathBuf>,
    /// A key shared by every node of the cluster (a file of at least 64 hex digits, from
    /// `nnp keygen --psk`): peers must prove they hold it.
    #[arg(long, value_name = "PATH")]
    psk_file: Option<PathBuf>,
}

impl AuthArgs {
    /// The authentication settings these options ask for, read from their files.
    pub(crate) fn config(&self) -> Result<Option<Arc<AuthConfig>>, Box<dyn std::error::Error>> {
        let credential = match (&self.auth_key, &self.psk_file) {
            (Some(path), _) => Credential::Ed25519(NodeKey::from_pem_file(path)?),
            (None, Some(path)) => Credential::PreShared(PreSharedKey::from_hex_file(path)?),
            (None, None) => return Ok(None),
        };
        let mut config = AuthConfig::new(credential);
        if let Some(path) = &self.allowed_peers {
            config = config.allowed_peers(read_allowed_peers(path)?);
        }
        Ok(Some(Arc::new(config)))
    }
}

/// `nnp keygen`: writes a new private key to `out` (owner-only), its public key to
/// `out.pub`, and prints the public key; with `psk`, a new shared key as hex.
pub(crate) fn keygen(as_json: bool, out: &Path, psk: bool) -> CliResult {
    let rng = ring::rand::SystemRandom::new();
    let (secret, public) = if psk {
        let mut key = [0u8; 32];
        ring::rand::SecureRandom::fill(&rng, &mut key)
            .map_err(|_| "the system's random generator failed")?;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        (format!("{hex}\n"), None)
    } else {
        let (pem, public) =
            generate_key_pem().map_err(|_| "the system's random generator failed")?;
        (pem, Some(public))
    };
    write_private(out, secret.as_bytes())
        .map_err(|e| format!("could not write {}: {e}", out.display()))?;
    let public_path = public.map(|key| {
        let mut path = out.as_os_str().to_owned();
        path.push(".pub");
        (PathBuf::from(path), key)
    });
    if let Some((path, key)) = &public_path {
        std::fs::write(path, format!("{key}\n"))
            .map_err(|e| format!("could not write {}: {e}", path.display()))?;
    }
    if as_json {
        println!(
            "{}",
            json!({
                "private_key": out,
                "public_key": public.map(|k| k.to_string()),
                "public_key_file": public_path.as_ref().map(|(p, _)| p),
            })
        );
    } else if let Some((path, key)) = &public_path {
        println!("{key}");
        eprintln!(
            "private key in {}, public key in {} (add it to the peers' --allowed-peers files)",
            out.display(),
            path.display()
        );
    } else {
        eprintln!(
            "shared key in {} (give it to every node: --psk-file)",
            out.display()
        );
    }
    Ok(())
}

/// Creates `path` readable by its owner only (where the platform has modes), refusing to
/// overwrite a file.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}
