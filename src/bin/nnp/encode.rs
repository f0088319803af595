//! `nnp encode`: build one frame from arguments and print it as hex.

use nnp::wire::{encode_frame, frame_len, Message};
use serde_json::json;

use crate::describe::to_json;
use crate::hex::to_hex;
use crate::CliResult;

pub(crate) fn encode(as_json: bool, msg: &Message<'_>, sequence: u64) -> CliResult {
    let mut out = Vec::with_capacity(frame_len(msg)?);
    encode_frame(msg, sequence, &mut out)?;
    if as_json {
        println!("{}", json!({ "hex": to_hex(&out), "frame": to_json(msg) }));
    } else {
        println!("{}", to_hex(&out));
    }
    Ok(())
}
