//! Captures of real NNP traffic read by standard tools and by `nnp decode`.
//!
//! A node on loopback serves a client that sends every message type; another client sends a
//! frame with a bad checksum. Every byte each side sent goes into a capture file written here,
//! cut into TCP segments on purpose: two frames in one segment, one frame split across three
//! (the first cut inside its header). A third, made-up connection replays one of the client's
//! frames. Wireshark's dissector (tools/wireshark/nnp.lua, run by tshark) must show every
//! field as the codec sent it and flag the bad checksum; `nnp decode` must report the same
//! frames, the agreed capabilities, the bad checksum and the replay.

mod common;

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::pcap::{pcap, pcapng, required_tool, scratch_dir, Conversation, Dir};
use common::traffic::{bad_checksum, every_type, Recorded, TestNode};
use nnp::wire::{parse_payload, Header, Message, MsgType, HEADER_LEN};
use serde_json::Value;

struct Fixture {
    pcap: PathBuf,
    pcapng: PathBuf,
    /// The session with every type.
    full: Recorded,
    /// The session with the bad checksum.
    corrupt: Recorded,
    /// The made-up connection with a replayed frame.
    replay: Conversation,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let node = TestNode::start();
        let full = every_type(node.addr);
        let corrupt = bad_checksum(node.addr);
        drop(node);

        let s = &full.sent;
        let mut a = Conversation::new(full.client, full.server);
        a.segment(Dir::ToServer, &s[0])
            .segment(Dir::ToClient, &full.received[0])
            // Two frames in one segment.
            .segment(Dir::ToServer, &[&s[1][..], &s[2][..]].concat())
            // One frame across three segments, cut inside its header, sharing its last
            // segment with the start of the next frame.
            .segment(Dir::ToServer, &s[3][..10])
            .segment(Dir::ToServer, &[&s[3][10..], &s[4][..30]].concat())
            .segment(Dir::ToServer, &s[4][30..])
            .segment(Dir::ToServer, &s[5])
            .segment(Dir::ToServer, &s[6]);
        for frame in &full.received[1..] {
            a.segment(Dir::ToClient, frame);
        }
        for frame in &s[7..] {
            a.segment(Dir::ToServer, frame);
        }

        let mut b = Conversation::new(corrupt.client, corrupt.server);
        b.segment(Dir::ToServer, &corrupt.sent[0])
            .segment(Dir::ToClient, &corrupt.received[0])
            .segment(Dir::ToServer, &corrupt.sent[1]);
        for frame in &corrupt.received[1..] {
            b.segment(Dir::ToClient, frame);
        }

        // The first ForwardData (sequence 1) spliced in again after the BackwardData.
        let mut replay = Conversation::new(
            "127.0.0.3:41000".parse().unwrap(),
            "127.0.0.3:7878".parse().unwrap(),
        );
        replay
            .segment(Dir::ToServer, &s[0])
            .segment(Dir::ToClient, &full.received[0]);
        for frame in [&s[1], &s[2], &s[1], &s[3]] {
            replay.segment(Dir::ToServer, frame);
        }

        let packets: Vec<Vec<u8>> = [&a, &b, &replay].iter().flat_map(|c| c.packets()).collect();
        let dir = scratch_dir("capture");
        let (pcap_path, pcapng_path) = (dir.join("nnp.pcap"), dir.join("nnp.pcapng"));
        std::fs::write(&pcap_path, pcap(&packets)).unwrap();
        std::fs::write(&pcapng_path, pcapng(&packets)).unwrap();
        Fixture {
            pcap: pcap_path,
            pcapng: pcapng_path,
            full,
            corrupt,
            replay,
        }
    })
}

// ---- Wireshark ------------------------------------------------------------------------------

/// Every value of `key` anywhere under `tree` (tshark nests bit fields in `*_tree` objects;
/// with --no-duplicate-keys a repeated field is an array).
fn values_of(tree: &Value, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, key: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == key {
                        match v {
                            Value::String(s) => out.push(s.clone()),
                            Value::Array(items) => out
                                .extend(items.iter().filter_map(|i| i.as_str().map(str::to_owned))),
                            _ => {}
                        }
                    } else {
                        walk(v, key, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, key, out)),
            _ => {}
        }
    }
    walk(tree, key, &mut out);
    out
}

fn one(tree: &Value, key: &str) -> String {
    let v = values_of(tree, key);
    assert_eq!(v.len(), 1, "{key} in {tree:#}");
    v[0].clone()
}

fn int(text: &str) -> u64 {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
        None => text
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {text}")),
    }
}

fn assert_int(tree: &Value, key: &str, expected: u64) {
    assert_eq!(int(&one(tree, key)), expected, "{key} in {tree:#}");
}

fn assert_floats(tree: &Value, key: &str, expected: &[f32]) {
    let shown: Vec<f64> = values_of(tree, key)
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(shown.len(), expected.len(), "{key} in {tree:#}");
    for (s, e) in shown.iter().zip(expected) {
        assert!(
            (s - f64::from(*e)).abs() <= 1e-6 * f64::from(e.abs()).max(1.0),
            "{key}: {s} vs {e}"
        );
    }
}

/// Checks that the dissector's tree for one frame shows every field of `frame`.
fn assert_dissected(tree: &Value, frame: &[u8]) {
    let header = Header::ref_from_buf(frame).unwrap();
    let msg_type = MsgType::from_u8(frame[5]).unwrap();
    assert_int(tree, "nnp.version", 1);
    assert_int(tree, "nnp.type", u64::from(frame[5]));
    assert_int(tree, "nnp.length", u64::from(header.payload_len()));
    assert_int(tree, "nnp.seq", header.sequence());
    assert_int(tree, "nnp.checksum", u64::from(header.checksum()));
    assert_int(tree, "nnp.checksum.status", 1);
    let message = parse_payload(msg_type, &frame[HEADER_LEN..]).unwrap();
    match &message {
        Message::Handshake(h) | Message::HandshakeAck(h) => {
            assert_int(tree, "nnp.hello.name_len", h.name.len() as u64);
            assert_int(tree, "nnp.hello.node_id", h.node_id);
            assert_int(tree, "nnp.hello.capabilities", u64::from(h.capabilities));
            assert_int(tree, "nnp.hello.min_version", u64::from(h.min_version));
            assert_int(tree, "nnp.hello.max_version", u64::from(h.max_version));
            assert_int(tree, "nnp.hello.layer_count", h.layer_sizes.len() as u64);
            let sizes: Vec<u64> = values_of(tree, "nnp.hello.layer_size")
                .iter()
                .map(|s| int(s))
                .collect();
            let expected: Vec<u64> = h.layer_sizes.iter().map(|&s| u64::from(s)).collect();
            assert_eq!(sizes, expected);
            assert_eq!(one(tree, "nnp.hello.name"), h.name);
            // Each capability bit is a field of its own.
            assert_int(
                tree,
                "nnp.hello.capabilities.forward_propagation",
                u64::from(h.capabilities & 1),
            );
        }
        Message::ForwardData { layer_id, data } => {
            assert_int(tree, "nnp.forward.layer_id", u64::from(*layer_id));
            assert_floats(tree, "nnp.forward.value", data);
        }
        Message::BackwardData { layer_id, data } => {
            assert_int(tree, "nnp.backward.layer_id", u64::from(*layer_id));
            assert_floats(tree, "nnp.backward.value", data);
        }
        Message::HebbianData {
            layer_id,
            learning_rate,
            rows,
            cols,
            correlations,
        } => {
            assert_int(tree, "nnp.hebbian.layer_id", u64::from(*layer_id));
            assert_floats(tree, "nnp.hebbian.learning_rate", &[*learning_rate]);
            assert_int(tree, "nnp.hebbian.rows", u64::from(*rows));
            assert_int(tree, "nnp.hebbian.cols", u64::from(*cols));
            assert_floats(tree, "nnp.hebbian.correlation", correlations);
        }
        Message::WeightSync(ws) => {
            assert_int(tree, "nnp.weight_sync.layer_id", u64::from(ws.layer_id));
            assert_int(tree, "nnp.weight_sync.encoding", 0);
            assert_int(
                tree,
                "nnp.weight_sync.mode",
                u64::from(frame[HEADER_LEN + 3]),
            );
            assert_int(tree, "nnp.weight_sync.rows", u64::from(ws.rows));
            assert_int(tree, "nnp.weight_sync.cols", u64::from(ws.cols));
            assert_int(tree, "nnp.weight_sync.offset", u64::from(ws.offset));
            assert_int(
                tree,
                "nnp.weight_sync.sample_count",
                u64::from(ws.sample_count),
            );
            assert_floats(tree, "nnp.weight_sync.value", &ws.values);
        }
        Message::Heartbeat {
            timestamp_ns,
            reply,
        } => {
            assert_int(tree, "nnp.heartbeat.timestamp_ns", *timestamp_ns);
            assert_int(tree, "nnp.heartbeat.reply", u64::from(*reply));
        }
        Message::Disconnect { reason, message } => {
            assert_int(tree, "nnp.disconnect.reason", u64::from(reason.0));
            assert_eq!(one(tree, "nnp.disconnect.text"), *message);
        }
        Message::Error { code, message } => {
            assert_int(tree, "nnp.error.code", u64::from(code.0));
            assert_eq!(one(tree, "nnp.error.text"), *message);
        }
        Message::Auth(_) => panic!("the captured node holds no key: no Auth frame passes"),
    }
}

/// An NNP tree with the TCP ports its segment was sent from and to.
type Tree = ((u16, u16), Value);

/// tshark's NNP trees in order; and the number of NNP frames in each packet that had any.
fn tshark_trees(tshark: &PathBuf, capture: &PathBuf) -> (Vec<Tree>, Vec<usize>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/wireshark/nnp.lua");
    let out = Command::new(tshark)
        .args(["-X", &format!("lua_script:{script}"), "-r"])
        .arg(capture)
        .args(["-T", "json", "--no-duplicate-keys"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark failed: {stderr}");
    assert!(
        !stderr.contains("Lua"),
        "the dissector reported an error: {stderr}"
    );
    let packets: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut trees = Vec::new();
    let mut per_packet = Vec::new();
    for packet in &packets {
        let layers = &packet["_source"]["layers"];
        let Some(nnp) = layers.get("nnp") else {
            continue;
        };
        let ports = (
            int(&one(&layers["tcp"], "tcp.srcport")) as u16,
            int(&one(&layers["tcp"], "tcp.dstport")) as u16,
        );
        let frames: Vec<Value> = match nnp {
            Value::Array(items) => items.clone(),
            tree => vec![tree.clone()],
        };
        per_packet.push(frames.len());
        trees.extend(frames.into_iter().map(|t| (ports, t)));
    }
    (trees, per_packet)
}

fn from(trees: &[Tree], src: SocketAddrV4, dst: SocketAddrV4) -> Vec<&Value> {
    trees
        .iter()
        .filter(|(ports, _)| *ports == (src.port(), dst.port()))
        .map(|(_, t)| t)
        .collect()
}

#[test]
fn wireshark_shows_every_field_as_the_codec_sent_it_and_flags_the_bad_checksum() {
    let Some(tshark) = required_tool("tshark", "tshark") else {
        return;
    };
    let f = fixture();
    for capture in [&f.pcap, &f.pcapng] {
        let (trees, per_packet) = tshark_trees(&tshark, capture);
        let (c, s) = (f.full.client, f.full.server);
        let sent = from(&trees, c, s);
        assert_eq!(sent.len(), f.full.sent.len(), "client frames dissected");
        for (tree, frame) in sent.iter().zip(&f.full.sent) {
            assert_dissected(tree, frame);
        }
        let received = from(&trees, s, c);
        assert_eq!(
            received.len(),
            f.full.received.len(),
            "node frames dissected"
        );
        for (tree, frame) in received.iter().zip(&f.full.received) {
            assert_dissected(tree, frame);
        }
        let types: Vec<u64> = sent
            .iter()
            .chain(&received)
            .map(|t| int(&one(t, "nnp.type")))
            .collect();
        // Auth frames pass only between nodes that hold keys; this node holds none.
        for t in MsgType::ALL.into_iter().filter(|t| *t != MsgType::Auth) {
            assert!(types.contains(&(t as u64)), "{t:?} is in the capture");
        }
        assert!(
            per_packet.contains(&2),
            "two frames of one segment: {per_packet:?}"
        );

        // The bad checksum: flagged, with expert info; the rest of the frame still shown.
        let corrupt = from(&trees, f.corrupt.client, f.corrupt.server);
        assert_eq!(corrupt.len(), 2);
        assert_int(corrupt[0], "nnp.checksum.status", 1);
        assert_int(corrupt[1], "nnp.checksum.status", 0);
        assert_int(corrupt[1], "nnp.forward.layer_id", 0);
        assert!(
            corrupt[1].to_string().contains("Bad checksum"),
            "{:#}",
            corrupt[1]
        );
        let replies = from(&trees, f.corrupt.server, f.corrupt.client);
        assert!(
            replies
                .iter()
                .any(|t| values_of(t, "nnp.error.code") == ["5"]),
            "the node's CHECKSUM_MISMATCH"
        );
    }
}

// ---- nnp decode -----------------------------------------------------------------------------

fn nnp_decode(capture: &PathBuf) -> (bool, Vec<Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_nnp"))
        .args(["decode", "--json"])
        .arg(capture)
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.success(), lines)
}

/// `nnp decode`'s frame lines of connection `n` sent from `src`.
fn decoded(lines: &[Value], n: u64, src: SocketAddrV4) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| l["connection"] == n && l.get("from").is_some())
        .filter(|l| l["from"] == src.to_string())
        .collect()
}

fn assert_same_frames(lines: &[&Value], frames: &[Vec<u8>]) {
    assert_eq!(lines.len(), frames.len());
    for (line, frame) in lines.iter().zip(frames) {
        let header = Header::ref_from_buf(frame).unwrap();
        let msg_type = MsgType::from_u8(frame[5]).unwrap();
        assert_eq!(line["sequence"], header.sequence(), "{line}");
        assert_eq!(line["type"], format!("{msg_type:?}"), "{line}");
        assert_eq!(line["length"], frame.len(), "{line}");
    }
}

#[test]
fn nnp_decode_reads_the_capture_per_connection_and_flags_the_checksum_and_the_replay() {
    let f = fixture();
    let (ok, lines) = nnp_decode(&f.pcap);
    assert!(!ok, "flagged items make the exit status 1");
    let headers: Vec<&Value> = lines.iter().filter(|l| l.get("client").is_some()).collect();
    assert_eq!(headers.len(), 3, "{headers:?}");

    // The clean session: every frame both ways, nothing flagged, the agreed capabilities.
    assert_eq!(headers[0]["flagged"], 0);
    assert_same_frames(&decoded(&lines, 1, f.full.client), &f.full.sent);
    assert_same_frames(&decoded(&lines, 1, f.full.server), &f.full.received);
    let Message::HandshakeAck(ack) =
        parse_payload(MsgType::HandshakeAck, &f.full.received[0][HEADER_LEN..]).unwrap()
    else {
        panic!("the node's first frame is its HandshakeAck");
    };
    assert_eq!(headers[0]["agreed"]["capabilities"], ack.capabilities);
    assert_eq!(headers[0]["agreed"]["version"], 1);

    // The bad checksum, flagged on the client's ForwardData only.
    let corrupt = decoded(&lines, 2, f.corrupt.client);
    assert_same_frames(&corrupt, &f.corrupt.sent);
    assert_eq!(corrupt[0]["flags"], serde_json::json!([]));
    let flags = corrupt[1]["flags"].to_string();
    assert!(flags.contains("CHECKSUM MISMATCH"), "{flags}");

    // The replay: the frame with sequence 1 seen again after sequence 2.
    let replay = decoded(&lines, 3, f.replay.client);
    let flagged: Vec<&&Value> = replay
        .iter()
        .filter(|l| l["flags"] != serde_json::json!([]))
        .collect();
    assert_eq!(flagged.len(), 1, "{replay:?}");
    assert_eq!(flagged[0]["sequence"], 1);
    assert!(flagged[0]["flags"][0]
        .as_str()
        .unwrap()
        .starts_with("REPLAY: sequence 1 again (expected 3)"));
    assert_eq!(headers[2]["flagged"], 1);

    // pcapng: the same report.
    let (ok_ng, lines_ng) = nnp_decode(&f.pcapng);
    assert_eq!((ok_ng, &lines_ng), (ok, &lines));
}
