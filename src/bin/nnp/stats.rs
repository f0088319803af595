//! `nnp stats ADDR`: a node's metrics endpoint (`nnp serve --metrics ADDR`) read once and
//! printed as tables for a person, or as JSON.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::json;

use crate::{explain, CliResult};

/// One sample of the text format: name, labels, value.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

pub(crate) fn stats(as_json: bool, addr: &str, timeout: Duration) -> CliResult {
    let (host, path) = split_address(addr);
    let text = fetch(host, path, timeout)?;
    let samples = parse(&text).map_err(|e| format!("{addr}: not Prometheus text: {e}"))?;
    if as_json {
        let mut by_name: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
        for s in &samples {
            by_name
                .entry(&s.name)
                .or_default()
                .push(json!({ "labels": s.labels, "value": finite(s.value) }));
        }
        println!("{}", json!({ "address": addr, "metrics": by_name }));
        return Ok(());
    }
    print_tables(addr, &samples);
    Ok(())
}

fn finite(v: f64) -> serde_json::Value {
    if v.is_finite() {
        json!(v)
    } else {
        serde_json::Value::Null
    }
}

/// `host:port`, `host:port/path` or `http://host:port/path`: the host and the path
/// (`/metrics` if none is given).
fn split_address(addr: &str) -> (&str, &str) {
    let rest = addr.strip_prefix("http://").unwrap_or(addr);
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    }
}

fn fetch(host: &str, path: &str, timeout: Duration) -> Result<String, String> {
    let target = host
        .to_socket_addrs()
        .map_err(|e| format!("{host}: not an address: {}", explain::io(&e)))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| format!("could not connect to {host}: {}", explain::io(&e)))?;
    let io = |e: std::io::Error| format!("{host}: {}", explain::io(&e));
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(io)?;
    let response =
        String::from_utf8(response).map_err(|_| format!("{host}: a response that is not UTF-8"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{host}: not an HTTP response"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{host}{path}: {status}"));
    }
    Ok(body.to_owned())
}

/// The samples of Prometheus' text format (comments skipped).
fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| format!("line {}: {what}: {line}", n + 1);
        let (name_and_labels, value) = line.rsplit_once(' ').ok_or_else(|| bad("no value"))?;
        let value: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| bad("a value that is not a number"))?,
        };
        let (name, labels) = match name_and_labels.split_once('{') {
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| bad("labels not closed"))?;
                (name, parse_labels(body).ok_or_else(|| bad("bad labels"))?)
            }
            None => (name_and_labels, BTreeMap::new()),
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(samples)
}

fn parse_labels(body: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            return Some(labels);
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim().to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

fn get<'a>(samples: &'a [Sample], name: &str) -> impl Iterator<Item = &'a Sample> + 'a {
    let name = name.to_owned();
    samples.iter().filter(move |s| s.name == name)
}

fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    get(samples, name)
        .find(|s| label.is_none_or(|(k, v)| s.label(k) == v))
        .map_or(0.0, |s| s.value)
}

fn duration(seconds: f64) -> String {
    if seconds.is_nan() {
        "-".to_owned()
    } else if seconds < 1e-3 {
        format!("{:.1} us", seconds * 1e6)
    } else if seconds < 1.0 {
        format!("{:.2} ms", seconds * 1e3)
    } else {
        format!("{seconds:.2} s")
    }
}

fn print_tables(addr: &str, samples: &[Sample]) {
    println!("metrics of {addr}");
    println!();
    println!(
        "{:<14} {:>12} {:>12} {:>14} {:>14}",
        "type", "frames in", "frames out", "bytes in", "bytes out"
    );
    for s in get(samples, "nnp_frames_received_total") {
        let t = s.label("type");
        let of = |name| value(samples, name, Some(("type", t)));
        println!(
            "{t:<14} {:>12} {:>12} {:>14} {:>14}",
            s.value,
            of("nnp_frames_sent_total"),
            of("nnp_received_bytes_total"),
            of("nnp_sent_bytes_total")
        );
    }
    println!();
    let errors: Vec<String> = get(samples, "nnp_errors_total")
        .filter(|s| s.value > 0.0)
        .map(|s| format!("{} {}", s.label("code"), s.value))
        .collect();
    println!(
        "errors: {}",
        if errors.is_empty() {
            "none".to_owned()
        } else {
            errors.join(", ")
        }
    );
    println!(
        "refusals: {} sent, {} received",
        value(samples, "nnp_refusals_sent_total", None),
        value(samples, "nnp_refusals_received_total", None)
    );
    println!(
        "connections: {} opened, {} closed; open now: {} established, {} handshaking; {} bytes queued to send",
        value(samples, "nnp_connections_opened_total", None),
        value(samples, "nnp_connections_closed_total", None),
        value(samples, "nnp_connections", Some(("state", "established"))),
        value(samples, "nnp_connections", Some(("state", "handshaking"))),
        value(samples, "nnp_send_queue_bytes", None),
    );
    let q = |q: &str| {
        duration(value(
            samples,
            "nnp_heartbeat_rtt_seconds",
            Some(("quantile", q)),
        ))
    };
    println!(
        "heartbeat round trips: {} measured; p50 {}, p90 {}, p99 {}, p99.9 {}; standard deviation {}",
        value(samples, "nnp_heartbeat_rtt_seconds_count", None),
        q("0.5"),
        q("0.9"),
        q("0.99"),
        q("0.999"),
        duration(value(samples, "nnp_heartbeat_rtt_stddev_seconds", None)),
    );
    let peers: Vec<&Sample> = get(samples, "nnp_peer_info").collect();
    println!();
    if peers.is_empty() {
        println!("no open connections");
        return;
    }
    println!(
        "{:<6} {:<22} {:<16} {:<12} {:>10} {:>10} {:>12} {:>12} {:>8} {:>10} {:>10}",
        "conn",
        "address",
        "name",
        "state",
        "frames in",
        "frames out",
        "bytes in",
        "bytes out",
        "queued",
        "rtt",
        "jitter"
    );
    for p in peers {
        let conn = p.label("conn");
        let of = |name| {
            get(samples, name)
                .find(|s| s.label("conn") == conn)
                .map(|s| s.value)
        };
        let n = |name| of(name).unwrap_or(0.0);
        println!(
            "{conn:<6} {:<22} {:<16} {:<12} {:>10} {:>10} {:>12} {:>12} {:>8} {:>10} {:>10}",
            p.label("addr"),
            p.label("name"),
            p.label("state"),
            n("nnp_peer_frames_received_total"),
            n("nnp_peer_frames_sent_total"),
            n("nnp_peer_received_bytes_total"),
            n("nnp_peer_sent_bytes_total"),
            n("nnp_peer_send_queue_bytes"),
            duration(of("nnp_peer_rtt_seconds").unwrap_or(f64::NAN)),
            duration(of("nnp_peer_rtt_jitter_seconds").unwrap_or(f64::NAN)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_with_escaped_labels() {
        let text = "# HELP x y\n# TYPE x counter\nx{a=\"1\",b=\"q\\\"z\"} 3\ny NaN\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].label("b"), "q\"z");
        assert_eq!(samples[0].value, 3.0);
        assert!(samples[1].value.is_nan());
    }

    #[test]
    fn an_address_may_be_a_url() {
        assert_eq!(
            split_address("127.0.0.1:9100"),
            ("127.0.0.1:9100", "/metrics")
        );
        assert_eq!(split_address("http://h:1/m"), ("h:1", "/m"));
    }
}
