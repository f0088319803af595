//! How a message is shown: one line for people (`summarize`) or JSON (`to_json`).

use nnp::wire::{capabilities, Message};
use serde_json::json;

fn preview(values: &[f32]) -> String {
    let shown: Vec<String> = values.iter().take(4).map(|v| format!("{v}")).collect();
    let more = if values.len() > 4 { ", ..." } else { "" };
    format!("[{}{more}]", shown.join(", "))
}

/// Bytes as lowercase hex (an Auth frame's keys, nonces and proofs are public).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A one-line description of a message, for people.
pub(crate) fn summarize(message: &Message<'_>) -> String {
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
        Message::Auth(a) => format!(
            "Auth step={:?} scheme={:?} key={} nonce={} proof={}",
            a.step,
            a.scheme,
            hex(&a.key),
            hex(&a.nonce),
            hex(&a.proof)
        ),
    }
}

/// The message as JSON (every field; f32 arrays in full).
pub(crate) fn to_json(message: &Message<'_>) -> serde_json::Value {
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
        Message::Auth(a) => json!({
            "type": t, "step": format!("{:?}", a.step), "scheme": format!("{:?}", a.scheme),
            "key": hex(&a.key), "nonce": hex(&a.nonce), "proof": hex(&a.proof),
        }),
    }
}
