//! Fuzz target: see `nnp::wire::fuzzing::decode_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nnp::wire::fuzzing::decode_frame(data));
