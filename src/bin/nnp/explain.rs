//! Error texts that name what they are about: the file, the address, the value.
//!
//! The library's errors say what went wrong; the command line adds where, and words a person
//! reads rather than a Rust `Debug` dump.

use std::path::Path;

use nnp::net::NetError;
use nnp::nn::weights_file::{WEIGHTS_MAGIC, WEIGHTS_VERSION};
use nnp::nn::{NnError, WeightsFileProblem};
use nnp::node::NodeError;

/// An I/O error's text without the ` (os error N)` that the standard library appends:
/// "Connection refused", "No such file or directory".
pub(crate) fn io(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    }
}

/// The socket addresses `value` (given as `flag`) names, or an error naming both.
pub(crate) fn addresses(flag: &str, value: &str) -> Result<Vec<std::net::SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = value
        .to_socket_addrs()
        .map_err(|e| {
            format!(
                "{flag} {value:?} is not an address ({}): give host:port, e.g. 127.0.0.1:7878",
                io(&e)
            )
        })?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{flag} {value:?} resolves to no address"));
    }
    Ok(addrs)
}

/// The first address `value` (given as `flag`) names, or an error naming both.
pub(crate) fn address(flag: &str, value: &str) -> Result<std::net::SocketAddr, String> {
    Ok(addresses(flag, value)?[0])
}

/// A transport error; a socket error as its bare reason.
pub(crate) fn net(e: &NetError) -> String {
    match e {
        NetError::Io(e) => io(e),
        other => other.to_string(),
    }
}

/// A node error; a socket error as its bare reason.
pub(crate) fn node(e: &NodeError) -> String {
    match e {
        NodeError::Net(e) => net(e),
        other => other.to_string(),
    }
}

/// Four bytes as text if they are printable ASCII, else as hex.
fn bytes(b: &[u8]) -> String {
    if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        format!("{:?}", String::from_utf8_lossy(b))
    } else {
        let hex: String = b.iter().map(|c| format!("{c:02x}")).collect();
        format!("the bytes 0x{hex}")
    }
}

/// Why the weights file at `path` could not be read, naming it: "… is not an NNP weights
/// file: it starts with "hell", where a weights file starts with "NNPW" …".
pub(crate) fn weights_file(path: &Path, e: &NnError) -> String {
    let p = path.display();
    if path.is_dir() {
        return format!("{p} is a directory, not a weights file");
    }
    let NnError::WeightsFile { offset, reason } = e else {
        return match e {
            NnError::Io(e) => format!("could not read the weights file {p}: {}", io(e)),
            other => format!("weights file {p}: {other}"),
        };
    };
    match reason {
        WeightsFileProblem::BadMagic(found) => format!(
            "{p} is not an NNP weights file: it starts with {}, where a weights file \
             (docs/WEIGHTS.md, written by `nnp serve --save`) starts with {}",
            bytes(found),
            bytes(&WEIGHTS_MAGIC)
        ),
        WeightsFileProblem::Truncated { len: 0, .. } => {
            format!("{p} is empty: not an NNP weights file")
        }
        WeightsFileProblem::Truncated { needed, len } => format!(
            "{p} is cut short: {len} bytes, where reading it as an NNP weights file needs \
             {needed}"
        ),
        WeightsFileProblem::UnsupportedVersion(v) => format!(
            "{p} is an NNP weights file of version {v}; this nnp reads version {WEIGHTS_VERSION}"
        ),
        WeightsFileProblem::BadLayerCount(n) => format!(
            "{p}: the header gives {n} layers (byte {offset}), which is zero or more than \
             this nnp accepts"
        ),
        WeightsFileProblem::BadLayerShape {
            layer,
            inputs,
            outputs,
        } => format!(
            "{p}: layer {layer} is stored as {inputs} inputs x {outputs} outputs (byte \
             {offset}): a size is zero, or the inputs differ from the previous layer's outputs"
        ),
        WeightsFileProblem::BadActivation { layer, code } => format!(
            "{p}: layer {layer} has activation code {code} (byte {offset}), which names no \
             activation, or softmax on a hidden layer"
        ),
        WeightsFileProblem::ReservedNotZero => {
            format!("{p}: a reserved field (byte {offset}) is not zero")
        }
        other => format!("{p}: malformed weights file at byte {offset}: {other:?}"),
    }
}
