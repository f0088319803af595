//! Writes the seed corpus of the fuzz targets: one file per seed under
//! `<dir>/<target>/` (`dir` defaults to the committed fuzz/corpus), for `cargo +nightly fuzz`
//! to start from and for tests/fuzz_corpus.rs to replay on stable Rust. The seeds are fixed
//! bytes: running this again over fuzz/corpus changes no committed file (past crashers added
//! there by hand are left as they are).
//!
//! `cargo run --example write_fuzz_corpus [dir]`

use std::fs;
use std::path::{Path, PathBuf};

use nnp::nn::{Activation, HebbianLearningMode, NeuralNetwork};
use nnp::wire::{encode_frame, fuzzing};

fn main() {
    let root = std::env::args_os().nth(1).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"),
        PathBuf::from,
    );
    write_seed_corpus(&root);
    println!("seed corpus written under {}", root.display());
}

/// round_trip seeds: one per message type (the first byte picks it), with some body bytes.
fn message_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for tag in 0u8..10 {
        let mut bytes = vec![tag];
        bytes.extend((1u8..=80).map(|i| i.wrapping_mul(37).wrapping_add(tag)));
        seeds.push((format!("seed-type-{tag}"), bytes));
    }
    // A NaN learning rate and NaN values; a long text with multi-byte characters.
    seeds.push(("seed-nan".into(), [&[4u8, 1, 0][..], &[0xff; 40]].concat()));
    let text = "ünïcødé ✓ 𝄞".repeat(8);
    let mut error = vec![8u8, 6, 0, text.len() as u8, 0];
    error.extend(text.as_bytes());
    seeds.push(("seed-unicode".into(), error));
    seeds
}

fn frame_of(seed: &[u8], sequence: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&fuzzing::message_from_bytes(seed), sequence, &mut out).unwrap();
    out
}

/// Writes every seed under `root`, one folder per fuzz target.
fn write_seed_corpus(root: &Path) {
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = root.join(target);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join(name);
        fs::write(&path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    };
    let seeds = message_seeds();
    let frames: Vec<Vec<u8>> = seeds
        .iter()
        .enumerate()
        .map(|(i, (_, s))| frame_of(s, i as u64))
        .collect();

    for ((name, seed), frame) in seeds.iter().zip(&frames) {
        write("round_trip", name, seed);
        write("decode_frame", name, frame);
    }
    // Bad frames.
    let good = &frames[2]; // ForwardData
    let mut bad = good.clone();
    bad[0] = b'X';
    write("decode_frame", "bad-magic", &bad);
    let mut bad = good.clone();
    bad[4] = 9;
    write("decode_frame", "bad-version", &bad);
    let mut bad = good.clone();
    bad[5] = 0x42;
    write("decode_frame", "bad-type", &bad);
    let mut bad = good[..22].to_vec();
    bad[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
    write("decode_frame", "bad-too-large", &bad);
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    write("decode_frame", "bad-checksum", &bad);
    write("decode_frame", "bad-truncated", &good[..good.len() - 1]);
    let mut bad = frames[7].clone(); // Disconnect: break the padding, fix the CRC
    *bad.last_mut().unwrap() = 1;
    let crc = crc32_bitwise(&bad[22..]);
    bad[18..22].copy_from_slice(&crc.to_be_bytes());
    write("decode_frame", "bad-padding", &bad);

    // Streams: control bytes (see fuzzing::stream_decoder), then frames back to back.
    let stream: Vec<u8> = frames.concat();
    write(
        "stream_decoder",
        "seed-one-chunk",
        &[&[0u8][..], &stream].concat(),
    );
    write(
        "stream_decoder",
        "seed-byte-by-byte",
        &[&[1u8, 0][..], &stream].concat(),
    );
    write(
        "stream_decoder",
        "seed-mixed-chunks",
        &[&[3u8, 6, 0, 99][..], &stream].concat(),
    );
    let mut broken = stream.clone();
    broken[frames[0].len() + frames[1].len() + 30] ^= 0x80;
    write(
        "stream_decoder",
        "bad-checksum-mid-stream",
        &[&[2u8, 21, 4][..], &broken].concat(),
    );
    // Session scripts (see nnp::session::fuzzing): flags pick the roles and keys, then steps.
    // 0 passes the peer's next frame on, 2 shifts its sequence, 3 drops it, 4 injects a
    // message made from bytes, 5 a payload parsed as a type, 6 lets time pass.
    let pass_all = [0u8; 10];
    for (name, flags) in [
        ("seed-plain-acceptor", 0u8),
        ("seed-plain-initiator", 1),
        ("seed-auth-acceptor-friend", 0b0000_1010),
        ("seed-auth-initiator-friend", 0b0000_1011),
        ("seed-auth-acceptor-stranger", 0b0001_1010),
        ("seed-auth-acceptor-no-key", 0b0000_0010),
        ("seed-auth-initiator-plain-server", 0b0000_0011),
        ("seed-psk-acceptor", 0b0010_0110),
        ("seed-psk-initiator-other-key", 0b0010_1111),
    ] {
        write("session", name, &[&[flags][..], &pass_all].concat());
    }
    let forward = &seeds[2].1;
    let mut data_early = vec![0b0000_1010u8, 0, 0, 4, forward.len() as u8];
    data_early.extend_from_slice(forward);
    write("session", "seed-data-before-auth", &data_early);
    write(
        "session",
        "seed-auth-timeout",
        &[0b0000_1010, 0, 6, 60, 0, 0],
    );
    write(
        "session",
        "seed-sequence-shift",
        &[0b0000_1011, 0, 2, 1, 0, 0],
    );
    write(
        "session",
        "seed-dropped-challenge",
        &[0b0000_1010, 0, 3, 0, 0, 6, 60],
    );
    let auth = &seeds[9].1;
    let mut forged = vec![0b0000_1010u8, 0, 0, 4, auth.len() as u8];
    forged.extend_from_slice(auth);
    write("session", "seed-forged-auth", &forged);

    // Weights files: two good ones (a softmax classifier, a one-layer map) and broken copies.
    let classifier = NeuralNetwork::builder(&[5, 4, 3])
        .output_activation(Activation::Softmax)
        .seed(9)
        .build()
        .unwrap()
        .to_weights_bytes();
    let single = NeuralNetwork::with_layers_and_mode(&[2, 1], 0.1, HebbianLearningMode::Oja)
        .to_weights_bytes();
    write("weights_file", "seed-classifier", &classifier);
    write("weights_file", "seed-single-layer", &single);
    write(
        "weights_file",
        "bad-truncated",
        &classifier[..classifier.len() - 4],
    );
    let mut bad = classifier.clone();
    bad[8] = 3; // three layers declared, two described
    write("weights_file", "bad-layer-count", &bad);
    let mut bad = classifier.clone();
    bad[16 + 4] = 7; // layer 0 outputs 7, layer 1 inputs 4
    write("weights_file", "bad-chain", &bad);
    let mut bad = classifier.clone();
    bad[16 + 8] = 4; // softmax on a hidden layer
    write("weights_file", "bad-hidden-softmax", &bad);
    let mut bad = single.clone();
    let len = bad.len();
    bad[len - 64..len - 60].copy_from_slice(&f32::NAN.to_le_bytes());
    write("weights_file", "seed-nan-weight", &bad);

    let half = &stream[..stream.len() / 2];
    write(
        "stream_decoder",
        "seed-truncated",
        &[&[1u8, 13][..], half].concat(),
    );
}

/// CRC-32/IEEE, bit by bit: an independent check of the codec's checksums.
fn crc32_bitwise(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
