//! Fuzz target: see `nnp::wire::fuzzing::round_trip`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nnp::wire::fuzzing::round_trip(data));
