//! The metrics a node exposes: its counters match the frames a client really sent and
//! received, the HTTP endpoint's text passes `promtool check metrics`, and `nnp serve
//! --metrics` with `nnp stats` show the same to a person.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pcap::required_tool;
use common::traffic::{bad_checksum, count_by_type, every_type, open_session, TestNode};
use nnp::net::MetricsEndpoint;
use nnp::wire::MsgType;

fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// The value of the sample `series` (name and labels exactly as rendered).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

fn type_label(code: u8) -> &'static str {
    match code {
        0x01 => "handshake",
        0x02 => "handshake_ack",
        0x10 => "forward_data",
        0x11 => "backward_data",
        0x12 => "hebbian_data",
        0x13 => "weight_sync",
        0x20 => "heartbeat",
        0x21 => "disconnect",
        0x03 => "auth",
        _ => "error",
    }
}

#[test]
fn the_endpoint_counts_what_a_client_sent_and_received_and_passes_promtool() {
    let node = TestNode::start();
    let endpoint = MetricsEndpoint::start("127.0.0.1:0", node.engine.clone()).unwrap();
    let full = every_type(node.addr);
    let corrupt = bad_checksum(node.addr);
    // Both sessions are over once the node has closed them and counted the close.
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.engine.metrics().connections_closed < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _idle = open_session(node.addr);
    // The loop counts a frame just after its write: the client may read it first.
    let acks = || {
        node.engine
            .metrics()
            .of_type(MsgType::HandshakeAck)
            .frames_out
    };
    while acks() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }

    let (head, text) = get(endpoint.local_addr(), "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );

    let sent: Vec<Vec<u8>> = full.sent.iter().chain(&corrupt.sent).cloned().collect();
    let received: Vec<Vec<u8>> = full
        .received
        .iter()
        .chain(&corrupt.received)
        .cloned()
        .collect();
    // The corrupt frame was never taken in whole: the node counts what it accepted.
    let accepted: Vec<Vec<u8>> = sent
        .iter()
        .filter(|f| !std::ptr::eq(*f, &sent[full.sent.len() + 1]))
        .cloned()
        .collect();
    // The idle session's Handshake and HandshakeAck come on top.
    let hello_in = &full.sent[0];
    let hello_out = &full.received[0];
    for (t, frames, bytes) in count_by_type(&accepted) {
        let label = type_label(t as u8);
        let (extra_frames, extra_bytes) = match label {
            "handshake" => (1.0, hello_in.len() as f64),
            _ => (0.0, 0.0),
        };
        let series = format!("nnp_frames_received_total{{type=\"{label}\"}}");
        assert_eq!(
            sample(&text, &series),
            frames as f64 + extra_frames,
            "{series}"
        );
        let series = format!("nnp_received_bytes_total{{type=\"{label}\"}}");
        assert_eq!(
            sample(&text, &series),
            bytes as f64 + extra_bytes,
            "{series}"
        );
    }
    for (t, frames, bytes) in count_by_type(&received) {
        let label = type_label(t as u8);
        let (extra_frames, extra_bytes) = match label {
            "handshake_ack" => (1.0, hello_out.len() as f64),
            _ => (0.0, 0.0),
        };
        let series = format!("nnp_frames_sent_total{{type=\"{label}\"}}");
        assert_eq!(
            sample(&text, &series),
            frames as f64 + extra_frames,
            "{series}"
        );
        let series = format!("nnp_sent_bytes_total{{type=\"{label}\"}}");
        assert_eq!(
            sample(&text, &series),
            bytes as f64 + extra_bytes,
            "{series}"
        );
    }
    assert_eq!(sample(&text, "nnp_refusals_sent_total"), 1.0);
    assert_eq!(
        sample(&text, "nnp_errors_total{code=\"checksum_mismatch\"}"),
        1.0
    );
    assert_eq!(sample(&text, "nnp_connections_opened_total"), 3.0);
    assert_eq!(sample(&text, "nnp_connections_closed_total"), 2.0);
    assert_eq!(sample(&text, "nnp_connections{state=\"established\"}"), 1.0);
    assert!(
        text.contains("nnp_peer_info{conn=\""),
        "the open session has its series"
    );

    let (head, _) = get(endpoint.local_addr(), "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    if let Some(promtool) = required_tool("promtool", "prometheus") {
        let mut check = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "promtool: {report}\n{text}"
        );
    }
}

#[test]
fn nnp_serve_exposes_metrics_that_nnp_stats_prints() {
    let nnp = env!("CARGO_BIN_EXE_nnp");
    let mut serve = Command::new(nnp)
        .args([
            "serve",
            "--port",
            "0",
            "--layers",
            "4,3,2",
            "--metrics",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let listening = lines.next().unwrap().unwrap();
    let metrics = lines.next().unwrap().unwrap();
    let node: SocketAddr = listening
        .strip_prefix("listening on ")
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let endpoint = metrics
        .strip_prefix("metrics at http://")
        .and_then(|m| m.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{metrics}"))
        .to_owned();
    let full = every_type(node);
    let _idle = open_session(node);

    let table = Command::new(nnp)
        .args(["stats", &endpoint])
        .output()
        .unwrap();
    let table_text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{table:?}");
    let forward = table_text
        .lines()
        .find(|l| l.starts_with("forward_data"))
        .unwrap_or_else(|| panic!("{table_text}"));
    let words: Vec<&str> = forward.split_whitespace().collect();
    assert_eq!(words[1], "2", "two ForwardData in: {forward}");
    assert_eq!(words[2], "1", "one answer out: {forward}");
    assert!(table_text.contains("refusals: 1 sent"), "{table_text}");
    assert!(table_text.contains("established"), "{table_text}");

    let json = Command::new(nnp)
        .args(["stats", "--json", &format!("http://{endpoint}/metrics")])
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let hebbian = value["metrics"]["nnp_frames_received_total"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["labels"]["type"] == "hebbian_data")
        .unwrap()["value"]
        .clone();
    assert_eq!(hebbian, 1.0);
    assert_eq!(full.sent.len(), 8);
    serve.kill().unwrap();
    serve.wait().unwrap();
}
