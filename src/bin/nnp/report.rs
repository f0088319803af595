//! Where the pattern demos and `nnp pipeline driver` print: standard output, or standard
//! error while plain `nnp demo --json` runs them and keeps standard output for its one JSON
//! summary.

use std::sync::atomic::{AtomicBool, Ordering};

static TO_STDERR: AtomicBool = AtomicBool::new(false);

/// Sends what [`report!`] prints to standard error (true) or standard output (false).
pub(crate) fn to_stderr(on: bool) {
    TO_STDERR.store(on, Ordering::Relaxed);
}

pub(crate) fn is_stderr() -> bool {
    TO_STDERR.load(Ordering::Relaxed)
}

/// `println!` to wherever [`to_stderr`] last said.
macro_rules! report {
    ($($arg:tt)*) => {
        if $crate::report::is_stderr() {
            eprintln!($($arg)*)
        } else {
            println!($($arg)*)
        }
    };
}
pub(crate) use report;

/// The closing table's traffic line: bytes and frames each way.
pub(crate) fn wire_line(t: &nnp::net::CounterSnapshot) -> String {
    format!(
        "  bytes on the wire    {} out / {} in ({} / {} frames)",
        t.bytes_out, t.bytes_in, t.frames_out, t.frames_in
    )
}
