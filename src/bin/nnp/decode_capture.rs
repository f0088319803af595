//! `nnp decode capture.pcap`: the NNP frames of every TCP connection in a capture, both
//! directions interleaved by time, with what a reader of the protocol would want flagged:
//! sequence gaps and replays, checksum mismatches, payloads that break their layout, bytes
//! the capture lost, and the capabilities the handshake agreed.

use std::net::SocketAddr;

use nnp::wire::{capabilities, parse_payload, Header, MsgType, HEADER_LEN, MAGIC};
use serde_json::json;

use crate::capture::{tcp_connections, Connection, Direction};
use crate::describe::{summarize, to_json};
use crate::CliResult;

/// What was found at one place of one direction's byte stream.
struct Item {
    /// 0: client to server, 1: server to client.
    direction: usize,
    offset: usize,
    len: usize,
    time: f64,
    kind: ItemKind,
    /// Problems found, for a person (empty: a good frame).
    flags: Vec<String>,
}

enum ItemKind {
    /// A frame whose header made sense (its payload may still be bad: see the flags).
    Frame {
        sequence: u64,
        msg_type: MsgType,
        summary: String,
        json: serde_json::Value,
    },
    /// Bytes that are not a frame, up to the next magic.
    Garbage,
    /// The stream ends inside a frame.
    Truncated,
}

pub(crate) fn decode_capture(
    as_json: bool,
    source: &str,
    bytes: &[u8],
    max_payload: u32,
) -> CliResult {
    let connections = tcp_connections(bytes).map_err(|e| format!("{source}: {e}"))?;
    let mut problems = 0;
    let mut frames = 0;
    let mut shown = 0;
    for conn in &connections {
        let items: Vec<Item> = (0..2)
            .flat_map(|d| walk(&conn.directions[d], d, max_payload))
            .collect();
        if !items
            .iter()
            .any(|i| matches!(i.kind, ItemKind::Frame { .. }))
        {
            continue; // Not NNP.
        }
        shown += 1;
        let mut items = items;
        // Interleave the directions by the time each frame was whole; a direction keeps its
        // own order.
        items.sort_by(|a, b| {
            a.time
                .total_cmp(&b.time)
                .then(a.direction.cmp(&b.direction))
        });
        let agreed = agreed(&items);
        let conn_problems: usize = items.iter().filter(|i| !i.flags.is_empty()).count()
            + conn.directions.iter().map(|d| d.holes.len()).sum::<usize>();
        problems += conn_problems;
        frames += items
            .iter()
            .filter(|i| matches!(i.kind, ItemKind::Frame { .. }))
            .count();
        print_connection(as_json, shown, conn, &items, agreed.as_ref(), conn_problems);
    }
    if !as_json {
        println!(
            "{shown} NNP connection{} of {} TCP connections, {frames} frames, {problems} flagged",
            if shown == 1 { "" } else { "s" },
            connections.len()
        );
    }
    if problems > 0 {
        return Err(format!(
            "{source}: {problems} flagged item{} among {frames} frames (sequence gaps or replays, \
             checksum or payload errors, garbage, truncated frames, lost bytes)",
            if problems == 1 { "" } else { "s" }
        )
        .into());
    }
    Ok(())
}

/// The version and capabilities of the connection's HandshakeAck, if it has one.
fn agreed(items: &[Item]) -> Option<(u8, u32)> {
    items.iter().find_map(|i| match &i.kind {
        ItemKind::Frame {
            msg_type: MsgType::HandshakeAck,
            json,
            ..
        } => Some((
            json["max_version"].as_u64()? as u8,
            json["capabilities"].as_u64()? as u32,
        )),
        _ => None,
    })
}

fn capability_names(caps: u32) -> Vec<&'static str> {
    capabilities::names(caps).collect()
}

fn print_connection(
    as_json: bool,
    number: usize,
    conn: &Connection,
    items: &[Item],
    agreed: Option<&(u8, u32)>,
    problems: usize,
) {
    let ends = |d: usize| -> (SocketAddr, SocketAddr) {
        if d == 0 {
            (conn.client, conn.server)
        } else {
            (conn.server, conn.client)
        }
    };
    if as_json {
        println!(
            "{}",
            json!({
                "connection": number,
                "client": conn.client.to_string(),
                "server": conn.server.to_string(),
                "agreed": agreed.map(|&(version, caps)| json!({
                    "version": version,
                    "capabilities": caps,
                    "capability_names": capability_names(caps),
                })),
                "frames": items.iter().filter(|i| matches!(i.kind, ItemKind::Frame { .. })).count(),
                "flagged": problems,
                "lost_bytes": conn.directions.iter().map(|d| json!(d.holes.iter().map(|&(at, n)| json!({"offset": at, "bytes": n})).collect::<Vec<_>>())).collect::<Vec<_>>(),
            })
        );
    } else {
        println!("connection {number}: {} -> {}", conn.client, conn.server);
        match agreed {
            Some(&(version, caps)) => println!(
                "  agreed: version {version}, capabilities 0x{caps:02x} ({})",
                capability_names(caps).join(", ")
            ),
            None => println!("  no HandshakeAck in the capture"),
        }
        for (d, dir) in conn.directions.iter().enumerate() {
            for &(at, n) in &dir.holes {
                let (from, to) = ends(d);
                println!("  LOST {n} bytes of {from} -> {to} at offset {at} (not in the capture)");
            }
        }
    }
    let first_time = items.first().map_or(0.0, |i| i.time);
    for item in items {
        let (from, to) = ends(item.direction);
        let arrow = if item.direction == 0 { "->" } else { "<-" };
        if as_json {
            let mut line = json!({
                "connection": number,
                "from": from.to_string(),
                "to": to.to_string(),
                "time": item.time,
                "offset": item.offset,
                "length": item.len,
                "flags": item.flags,
            });
            match &item.kind {
                ItemKind::Frame {
                    sequence,
                    msg_type,
                    json,
                    ..
                } => {
                    line["sequence"] = json!(sequence);
                    line["type"] = json!(format!("{msg_type:?}"));
                    line["message"] = json.clone();
                }
                ItemKind::Garbage => line["garbage"] = json!(true),
                ItemKind::Truncated => line["truncated"] = json!(true),
            }
            println!("{line}");
        } else {
            let what = match &item.kind {
                ItemKind::Frame {
                    sequence, summary, ..
                } => format!("seq {sequence:<6} {summary}"),
                ItemKind::Garbage => "GARBAGE".to_owned(),
                ItemKind::Truncated => "TRUNCATED frame at the end of the stream".to_owned(),
            };
            let flags = if item.flags.is_empty() {
                String::new()
            } else {
                format!("  [{}]", item.flags.join("; "))
            };
            println!(
                "  {:>10.6} {arrow} {:>7} B  {what}{flags}",
                item.time - first_time,
                item.len
            );
        }
    }
}

/// The frames of one direction, with their flags.
fn walk(dir: &Direction, direction: usize, max_payload: u32) -> Vec<Item> {
    let bytes = &dir.bytes;
    let mut items = Vec::new();
    let mut expected: u64 = 0;
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < HEADER_LEN {
            let kind = if MAGIC.starts_with(&rest[..rest.len().min(4)]) {
                ItemKind::Truncated
            } else {
                ItemKind::Garbage
            };
            items.push(item(dir, direction, pos, rest.len(), kind, vec![]));
            break;
        }
        let header = Header::ref_from_buf(rest).expect("22 bytes are a header");
        let msg_type = match header.validate(max_payload) {
            Ok(t) => t,
            Err(e) => {
                let next = next_magic(bytes, pos + 1).unwrap_or(bytes.len());
                items.push(item(
                    dir,
                    direction,
                    pos,
                    next - pos,
                    ItemKind::Garbage,
                    vec![e.to_string()],
                ));
                pos = next;
                continue;
            }
        };
        let len = HEADER_LEN + header.payload_len() as usize;
        if rest.len() < len {
            items.push(item(
                dir,
                direction,
                pos,
                rest.len(),
                ItemKind::Truncated,
                vec![format!("{} of its {len} bytes", rest.len())],
            ));
            break;
        }
        let mut flags = Vec::new();
        let sequence = header.sequence();
        if sequence > expected {
            flags.push(format!(
                "GAP: sequence {sequence}, expected {expected} ({} frame{} missing)",
                sequence - expected,
                if sequence - expected == 1 { "" } else { "s" }
            ));
            expected = sequence + 1;
        } else if sequence < expected {
            flags.push(format!(
                "REPLAY: sequence {sequence} again (expected {expected})"
            ));
        } else {
            expected += 1;
        }
        let payload = &rest[HEADER_LEN..len];
        let crc = crc32fast::hash(payload);
        if crc != header.checksum() {
            flags.push(format!(
                "CHECKSUM MISMATCH: header 0x{:08x}, payload 0x{crc:08x}",
                header.checksum()
            ));
        }
        if len % 4 != 0 {
            flags.push(format!("MALFORMED: {len} bytes is not a multiple of 4"));
        }
        let (summary, json) = match parse_payload(msg_type, payload) {
            Ok(message) => (summarize(&message), to_json(&message)),
            Err(e) => {
                flags.push(format!("MALFORMED: {e}"));
                (format!("{msg_type:?} (payload unreadable)"), json!(null))
            }
        };
        items.push(item(
            dir,
            direction,
            pos,
            len,
            ItemKind::Frame {
                sequence,
                msg_type,
                summary,
                json,
            },
            flags,
        ));
        pos += len;
    }
    items
}

fn item(
    dir: &Direction,
    direction: usize,
    offset: usize,
    len: usize,
    kind: ItemKind,
    flags: Vec<String>,
) -> Item {
    let flags = match kind {
        ItemKind::Garbage if flags.is_empty() => vec!["GARBAGE".to_owned()],
        ItemKind::Garbage => flags.into_iter().map(|f| format!("GARBAGE: {f}")).collect(),
        ItemKind::Truncated if flags.is_empty() => vec!["TRUNCATED".to_owned()],
        ItemKind::Truncated => flags
            .into_iter()
            .map(|f| format!("TRUNCATED: {f}"))
            .collect(),
        ItemKind::Frame { .. } => flags,
    };
    Item {
        direction,
        offset,
        len,
        time: dir.time_at(offset + len),
        kind,
        flags,
    }
}

fn next_magic(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(MAGIC.len())
        .position(|w| w == MAGIC)
        .map(|i| from + i)
}
