//! Fuzz target: see `nnp::wire::fuzzing::stream_decoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nnp::wire::fuzzing::stream_decoder(data));
