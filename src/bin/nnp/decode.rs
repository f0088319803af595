//! `nnp decode`: walk a byte stream, print every frame, report garbage and resynchronise. A
//! packet capture (pcap or pcapng) is read per TCP connection instead
//! ([`crate::decode_capture`]).

use std::io::Read;

use nnp::wire::{decode_frame, MAGIC};
use serde_json::json;

use crate::describe::{summarize, to_json};
use crate::hex::from_hex;
use crate::{explain, CliResult};

pub(crate) fn decode(
    as_json: bool,
    file: Option<&std::path::Path>,
    hex: bool,
    max_payload: u32,
) -> CliResult {
    let source = match file {
        Some(path) => path.display().to_string(),
        None => "standard input".to_owned(),
    };
    let mut raw = Vec::new();
    match file {
        Some(path) => {
            raw = std::fs::read(path)
                .map_err(|e| format!("could not read {source}: {}", explain::io(&e)))?
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut raw)
                .map_err(|e| format!("could not read {source}: {}", explain::io(&e)))?;
        }
    }
    if !hex && crate::capture::is_capture(&raw) {
        return crate::decode_capture::decode_capture(as_json, &source, &raw, max_payload);
    }
    let bytes = if hex {
        let text =
            std::str::from_utf8(&raw).map_err(|e| format!("--hex: {source} is not text: {e}"))?;
        from_hex(text).map_err(|e| format!("--hex: {source} is not hex text: {e}"))?
    } else {
        raw
    };
    let found = scan(&bytes, max_payload);
    let mut bad = 0;
    for item in &found {
        match item {
            Found::Frame {
                offset,
                len,
                sequence,
                summary,
                json,
            } => {
                if as_json {
                    println!(
                        "{}",
                        json!({ "offset": offset, "length": len, "sequence": sequence, "message": json })
                    );
                } else {
                    println!("@{offset:<8} {len:>8} B  seq {sequence:<6} {summary}");
                }
            }
            Found::Garbage { offset, len, error } => {
                bad += 1;
                if as_json {
                    println!(
                        "{}",
                        json!({ "offset": offset, "garbage": len, "error": error })
                    );
                } else {
                    println!("@{offset:<8} {len:>8} B  GARBAGE: {error}");
                }
            }
            Found::Truncated { offset, have } => {
                bad += 1;
                if as_json {
                    println!("{}", json!({ "offset": offset, "truncated": have }));
                } else {
                    println!("@{offset:<8} {have:>8} B  TRUNCATED frame at the end of the input");
                }
            }
        }
    }
    let frames = found.len() - bad;
    if !as_json {
        println!("{frames} frames, {bad} bad regions, {} bytes", bytes.len());
    }
    if bad > 0 {
        return Err(format!(
            "{source}: {bad} bad region{} (garbage or a truncated frame) among {frames} frames",
            if bad == 1 { "" } else { "s" }
        )
        .into());
    }
    Ok(())
}

/// One thing found in a byte stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Found {
    /// A whole, valid frame at `offset`.
    Frame {
        /// Where it starts.
        offset: usize,
        /// Its length in bytes.
        len: usize,
        /// Its sequence number.
        sequence: u64,
        /// A one-line description of the message.
        summary: String,
        /// The same as JSON.
        json: serde_json::Value,
    },
    /// Bytes that are not a valid frame, skipped up to the next magic.
    Garbage {
        /// Where they start.
        offset: usize,
        /// How many were skipped.
        len: usize,
        /// Why the frame at `offset` was refused.
        error: String,
    },
    /// The stream ends inside a frame.
    Truncated {
        /// Where the unfinished frame starts.
        offset: usize,
        /// Bytes present.
        have: usize,
    },
}

/// Decodes every frame in `bytes`; invalid bytes are reported and skipped to the next magic.
pub(crate) fn scan(bytes: &[u8], max_payload: u32) -> Vec<Found> {
    let mut found = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match decode_frame(&bytes[pos..], max_payload) {
            Ok(Some((frame, len))) => {
                found.push(Found::Frame {
                    offset: pos,
                    len,
                    sequence: frame.sequence,
                    summary: summarize(&frame.message),
                    json: to_json(&frame.message),
                });
                pos += len;
            }
            Ok(None) => {
                found.push(Found::Truncated {
                    offset: pos,
                    have: bytes.len() - pos,
                });
                break;
            }
            Err(error) => {
                let next = next_magic(bytes, pos + 1).unwrap_or(bytes.len());
                found.push(Found::Garbage {
                    offset: pos,
                    len: next - pos,
                    error: error.to_string(),
                });
                pos = next;
            }
        }
    }
    found
}

fn next_magic(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(MAGIC.len())
        .position(|w| w == MAGIC)
        .map(|i| from + i)
}
