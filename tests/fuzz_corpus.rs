//! Replays every file in fuzz/corpus/<target>/ through the function its fuzz target calls, on
//! stable Rust, so that seeds and past crashers stay fixed.
//!
//! The seed files are written by `cargo run --example write_fuzz_corpus`
//! (examples/write_fuzz_corpus.rs).

use std::fs;
use std::path::{Path, PathBuf};

use nnp::wire::fuzzing;

type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 5] = [
    ("decode_frame", fuzzing::decode_frame),
    ("stream_decoder", fuzzing::stream_decoder),
    ("round_trip", fuzzing::round_trip),
    ("weights_file", nnp::nn::weights_file::fuzz_weights_file),
    ("session", nnp::session::fuzzing::session),
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn replay_corpus() {
    for (target, run) in TARGETS {
        let dir = corpus_dir(target);
        let mut count = 0;
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_file() {
                let data = fs::read(&path).unwrap();
                let result = std::panic::catch_unwind(|| run(&data));
                assert!(result.is_ok(), "{target}: {} fails", path.display());
                count += 1;
            }
        }
        assert!(count >= 5, "{target}: only {count} corpus files");
    }
}
