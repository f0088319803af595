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
