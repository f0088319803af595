//! `nnp decode`: walk a byte stream, print every frame, report garbage and resynchronise.

use serde_json::json;

use crate::wire::{capabilities, decode_frame, Message, MAGIC};

/// One thing found in a byte stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
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
pub fn scan(bytes: &[u8], max_payload: u32) -> Vec<Found> {
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

fn preview(values: &[f32]) -> String {
    let shown: Vec<String> = values.iter().take(4).map(|v| format!("{v}")).collect();
    let more = if values.len() > 4 { ", ..." } else { "" };
    format!("[{}{more}]", shown.join(", "))
}

/// A one-line description of a message, for people.
pub fn summarize(message: &Message<'_>) -> String {
    match message {
        Message::Handshake(h) | Message::HandshakeAck(h) => format!(
            "{:?} name={:?} node_id={:#x} versions={}..={} capabilities={} layers={:?}",
            message.msg_type(),
            h.name,
            h.node_id,
            h.min_version,
            h.max_version,
            capabilities::names(h.capabilities)
                .collect::<Vec<_>>()
                .join("|"),
            &*h.layer_sizes
        ),
        Message::ForwardData { layer_id, data } | Message::BackwardData { layer_id, data } => {
            format!(
                "{:?} layer={layer_id} values={} {}",
                message.msg_type(),
                data.len(),
                preview(data)
            )
        }
        Message::HebbianData {
            layer_id,
            learning_rate,
            rows,
            cols,
            correlations,
        } => format!(
            "HebbianData layer={layer_id} lr={learning_rate} {rows}x{cols} {}",
            preview(correlations)
        ),
        Message::WeightSync(ws) => format!(
            "WeightSync layer={} mode={:?} {}x{} offset={} values={} samples={} {}",
            ws.layer_id,
            ws.mode,
            ws.rows,
            ws.cols,
            ws.offset,
            ws.values.len(),
            ws.sample_count,
            preview(&ws.values)
        ),
        Message::Heartbeat {
            timestamp_ns,
            reply,
        } => format!("Heartbeat timestamp_ns={timestamp_ns} reply={reply}"),
        Message::Disconnect { reason, message } => {
            format!("Disconnect reason={} message={message:?}", reason.0)
        }
        Message::Error { code, message } => format!("Error code={} message={message:?}", code.0),
    }
}

/// The message as JSON (every field; f32 arrays in full).
pub fn to_json(message: &Message<'_>) -> serde_json::Value {
    let t = format!("{:?}", message.msg_type());
    match message {
        Message::Handshake(h) | Message::HandshakeAck(h) => json!({
            "type": t, "name": h.name, "node_id": h.node_id, "min_version": h.min_version,
            "max_version": h.max_version, "capabilities": h.capabilities,
            "layer_sizes": &*h.layer_sizes,
        }),
        Message::ForwardData { layer_id, data } | Message::BackwardData { layer_id, data } => {
            json!({ "type": t, "layer_id": layer_id, "data": &**data })
        }
        Message::HebbianData {
            layer_id,
            learning_rate,
            rows,
            cols,
            correlations,
        } => json!({
            "type": t, "layer_id": layer_id, "learning_rate": learning_rate, "rows": rows,
            "cols": cols, "correlations": &**correlations,
        }),
        Message::WeightSync(ws) => json!({
            "type": t, "layer_id": ws.layer_id, "mode": format!("{:?}", ws.mode), "rows": ws.rows,
            "cols": ws.cols, "offset": ws.offset, "sample_count": ws.sample_count,
            "values": &*ws.values,
        }),
        Message::Heartbeat {
            timestamp_ns,
            reply,
        } => json!({ "type": t, "timestamp_ns": timestamp_ns, "reply": reply }),
        Message::Disconnect { reason, message } => {
            json!({ "type": t, "reason": reason.0, "message": message })
        }
        Message::Error { code, message } => {
            json!({ "type": t, "code": code.0, "message": message })
        }
    }
}

/// Hex of `bytes`, two digits a byte, no separators.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex text; whitespace is ignored.
pub fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            u8::from_str_radix(s, 16).map_err(|_| format!("not hex: {s:?}"))
        })
        .collect()
}
