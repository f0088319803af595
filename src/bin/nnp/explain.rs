//! Error texts that name what they are about: the file, the address, the value.
//!
//! The library's errors say what went wrong; the command line adds where, and words a person
//! reads rather than a Rust `Debug` dump.

/// An I/O error's text without the ` (os error N)` that the standard library appends:
/// "Connection refused", "No such file or directory".
pub(crate) fn io(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    }
}
