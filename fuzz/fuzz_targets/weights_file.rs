//! Fuzz target: see `nnp::nn::weights_file::fuzz_weights_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nnp::nn::weights_file::fuzz_weights_file(data));
