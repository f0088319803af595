//! Fuzz target: see `nnp::session::fuzzing::session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nnp::session::fuzzing::session(data));
