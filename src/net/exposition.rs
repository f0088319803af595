//! The engine's metrics in Prometheus' text exposition format (version 0.0.4), so that any
//! Prometheus server, or `promtool`, can read a node's counters.
//!
//! Totals carry a `type` label (one series per message type, zeros included, so that rates
//! exist before the first frame of a type) or a `code` label; each open connection gets its
//! own series labelled `conn`, `addr` and `name`. Per-connection series do not split by type:
//! ten types times four counters per peer would multiply the series a scrape carries by the
//! number of peers, and the per-type totals answer the same questions. docs/METRICS.md lists
//! every name.

use std::fmt::Write as _;
use std::time::Duration;

use super::metrics::MetricsSnapshot;
use super::peer::{ConnState, PeerStatus};
use crate::wire::MsgType;

/// The content type of [`prometheus_text`]'s output, for an HTTP response.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The quantiles the round-trip summary reports.
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// Renders `metrics` (totals) and `peers` (one set of series per connection) in Prometheus'
/// text format, every name prefixed `nnp_`. Take both from the same engine:
/// [`super::EngineHandle::metrics`] and [`super::EngineHandle::peers`].
pub fn prometheus_text(metrics: &MetricsSnapshot, peers: &[PeerStatus]) -> String {
    let mut out = Exposition::default();
    let types = || {
        MsgType::ALL
            .into_iter()
            .map(|t| (type_label(t), metrics.of_type(t)))
    };
    out.family(
        "nnp_frames_received_total",
        "counter",
        "Whole frames received, by message type.",
    );
    for (name, c) in types() {
        out.sample("nnp_frames_received_total", &[("type", name)], c.frames_in);
    }
    out.family(
        "nnp_frames_sent_total",
        "counter",
        "Frames sent (all their bytes written to the socket), by message type.",
    );
    for (name, c) in types() {
        out.sample("nnp_frames_sent_total", &[("type", name)], c.frames_out);
    }
    out.family(
        "nnp_received_bytes_total",
        "counter",
        "Bytes of whole frames received, headers included, by message type.",
    );
    for (name, c) in types() {
        out.sample("nnp_received_bytes_total", &[("type", name)], c.bytes_in);
    }
    out.family(
        "nnp_sent_bytes_total",
        "counter",
        "Bytes of frames sent, headers included, by message type.",
    );
    for (name, c) in types() {
        out.sample("nnp_sent_bytes_total", &[("type", name)], c.bytes_out);
    }

    out.family(
        "nnp_errors_total",
        "counter",
        "Errors that ended a connection: protocol errors by wire error code (ours or the \
         peer's), and socket errors (code=\"io\").",
    );
    for (slot, &count) in metrics.errors_by_code.iter().enumerate() {
        match error_label(slot) {
            Some(code) => out.sample("nnp_errors_total", &[("code", code)], count),
            None if count > 0 => {
                out.sample("nnp_errors_total", &[("code", &format!("{slot}"))], count)
            }
            None => {}
        }
    }
    out.counter(
        "nnp_refusals_sent_total",
        "Data frames this node refused (an Error APPLICATION sent; the connection stayed open).",
        metrics.refusals_sent,
    );
    out.counter(
        "nnp_refusals_received_total",
        "Data frames of this node that peers refused.",
        metrics.refusals_received,
    );
    out.counter(
        "nnp_connections_opened_total",
        "Connections accepted or connected.",
        metrics.connections_opened,
    );
    out.counter(
        "nnp_connections_closed_total",
        "Connections closed.",
        metrics.connections_closed,
    );
    out.family(
        "nnp_limit_refusals_total",
        "counter",
        "What the limits refused: connections over max_connections or \
         max_connections_per_address, handshakes past their deadline, slow consumers closed, \
         data frames over a peer's rate limit (rate_refused), peers closed for keeping on \
         over it (rate_closed), connections turned away for a second after such a close from \
         their address (rate_penalty), addresses whose connections the listeners dropped \
         before accepting them for that second (rate_filtered).",
    );
    let refused = &metrics.limit_refusals;
    for (limit, count) in [
        ("max_connections", refused.max_connections),
        (
            "max_connections_per_address",
            refused.max_connections_per_address,
        ),
        ("handshake_timeout", refused.handshake_timeout),
        ("slow_consumer", refused.slow_consumer),
        ("rate_refused", refused.rate_refused),
        ("rate_closed", refused.rate_closed),
        ("rate_penalty", refused.rate_penalty),
        ("rate_filtered", refused.rate_filtered),
    ] {
        out.sample("nnp_limit_refusals_total", &[("limit", limit)], count);
    }
    out.counter(
        "nnp_tls_failures_total",
        "Connections whose TLS session failed (a certificate not trusted or missing, a TLS \
         alert from the peer).",
        metrics.tls_failures,
    );

    out.family("nnp_connections", "gauge", "Open connections by state.");
    for state in [
        ConnState::Handshaking,
        ConnState::Established,
        ConnState::Closed,
    ] {
        let n = peers.iter().filter(|p| p.state == state).count();
        out.sample("nnp_connections", &[("state", state.name())], n as u64);
    }
    out.family(
        "nnp_send_queue_bytes",
        "gauge",
        "Bytes waiting in the send queues of all connections.",
    );
    let queued: usize = peers.iter().map(|p| p.queued_bytes).sum();
    out.sample("nnp_send_queue_bytes", &[], queued as u64);

    let rtt = &metrics.rtt_ns;
    out.family(
        "nnp_heartbeat_rtt_seconds",
        "summary",
        "Heartbeat round-trip times over all connections since the engine started.",
    );
    for q in QUANTILES {
        let value = if rtt.is_empty() {
            f64::NAN
        } else {
            ns_to_seconds(rtt.value_at_quantile(q))
        };
        out.sample_f64(
            "nnp_heartbeat_rtt_seconds",
            &[("quantile", &q.to_string())],
            value,
        );
    }
    out.sample_f64(
        "nnp_heartbeat_rtt_seconds_sum",
        &[],
        rtt.mean() * rtt.len() as f64 / 1e9,
    );
    out.sample("nnp_heartbeat_rtt_seconds_count", &[], rtt.len());
    out.family(
        "nnp_heartbeat_rtt_stddev_seconds",
        "gauge",
        "Standard deviation of the heartbeat round-trip times over all connections.",
    );
    let stddev = if rtt.is_empty() {
        f64::NAN
    } else {
        rtt.stdev() / 1e9
    };
    out.sample_f64("nnp_heartbeat_rtt_stddev_seconds", &[], stddev);

    peer_series(&mut out, peers);
    out.text
}

/// The series of each open connection.
fn peer_series(out: &mut Exposition, peers: &[PeerStatus]) {
    let labels: Vec<[(&str, String); 3]> = peers
        .iter()
        .map(|p| {
            [
                ("conn", p.conn.0.to_string()),
                ("addr", p.addr.to_string()),
                (
                    "name",
                    p.info.as_ref().map_or(String::new(), |i| i.name.clone()),
                ),
            ]
        })
        .collect();
    let with = |i: usize| -> [(&str, &str); 3] {
        let l = &labels[i];
        [(l[0].0, &l[0].1), (l[1].0, &l[1].1), (l[2].0, &l[2].1)]
    };
    out.family(
        "nnp_peer_info",
        "gauge",
        "One series per open connection: its state, and the agreed capability bits and \
         version once established.",
    );
    for (i, p) in peers.iter().enumerate() {
        let [a, b, c] = with(i);
        let capabilities = p
            .info
            .as_ref()
            .map_or(String::new(), |i| format!("0x{:02x}", i.capabilities));
        let version = p
            .info
            .as_ref()
            .map_or(String::new(), |i| i.version.to_string());
        out.sample(
            "nnp_peer_info",
            &[
                a,
                b,
                c,
                ("state", p.state.name()),
                ("capabilities", &capabilities),
                ("version", &version),
            ],
            1,
        );
    }
    type Field = fn(&PeerStatus) -> u64;
    let counters: [(&str, &str, Field); 4] = [
        (
            "nnp_peer_frames_received_total",
            "Whole frames received on the connection.",
            |p| p.traffic.frames_in,
        ),
        (
            "nnp_peer_frames_sent_total",
            "Frames sent on the connection.",
            |p| p.traffic.frames_out,
        ),
        (
            "nnp_peer_received_bytes_total",
            "Bytes read from the connection's socket.",
            |p| p.traffic.bytes_in,
        ),
        (
            "nnp_peer_sent_bytes_total",
            "Bytes written to the connection's socket.",
            |p| p.traffic.bytes_out,
        ),
    ];
    for (name, help, field) in counters {
        out.family(name, "counter", help);
        for (i, p) in peers.iter().enumerate() {
            out.sample(name, &with(i), field(p));
        }
    }
    out.family(
        "nnp_peer_send_queue_bytes",
        "gauge",
        "Bytes waiting in the connection's send queue.",
    );
    for (i, p) in peers.iter().enumerate() {
        out.sample("nnp_peer_send_queue_bytes", &with(i), p.queued_bytes as u64);
    }
    out.family(
        "nnp_peer_rtt_seconds",
        "gauge",
        "The connection's last heartbeat round-trip time (absent before the first).",
    );
    for (i, p) in peers.iter().enumerate() {
        if let Some(rtt) = p.rtt {
            out.sample_f64("nnp_peer_rtt_seconds", &with(i), seconds(rtt));
        }
    }
    out.family(
        "nnp_peer_rtt_jitter_seconds",
        "gauge",
        "How much the connection's round-trip time varies: the change between consecutive \
         round trips, smoothed over about 16 (RFC 3550's interarrival jitter).",
    );
    for (i, p) in peers.iter().enumerate() {
        if let Some(jitter) = p.rtt_jitter {
            out.sample_f64("nnp_peer_rtt_jitter_seconds", &with(i), seconds(jitter));
        }
    }
}

/// The text being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    fn labels(&mut self, labels: &[(&str, &str)]) {
        if labels.is_empty() {
            return;
        }
        self.text.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            let _ = write!(self.text, "{key}=\"{}\"", escape_label(value));
        }
        self.text.push('}');
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.text.push_str(name);
        self.labels(labels);
        let _ = writeln!(self.text, " {value}");
    }

    fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        self.labels(labels);
        if value.is_nan() {
            self.text.push_str(" NaN\n");
        } else {
            let _ = writeln!(self.text, " {value}");
        }
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ns_to_seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The `type` label of a message type.
pub(crate) fn type_label(t: MsgType) -> &'static str {
    match t {
        MsgType::Handshake => "handshake",
        MsgType::HandshakeAck => "handshake_ack",
        MsgType::ForwardData => "forward_data",
        MsgType::BackwardData => "backward_data",
        MsgType::HebbianData => "hebbian_data",
        MsgType::WeightSync => "weight_sync",
        MsgType::Heartbeat => "heartbeat",
        MsgType::Disconnect => "disconnect",
        MsgType::Error => "error",
        MsgType::Auth => "auth",
    }
}

/// The `code` label of an error slot of [`MetricsSnapshot::errors_by_code`], for the codes
/// of protocol version 1 and socket errors.
fn error_label(slot: usize) -> Option<&'static str> {
    Some(match slot {
        0 => "io",
        1 => "bad_magic",
        2 => "unsupported_version",
        3 => "unknown_message_type",
        4 => "frame_too_large",
        5 => "checksum_mismatch",
        6 => "malformed_payload",
        7 => "sequence_error",
        8 => "unexpected_message",
        9 => "capability_not_agreed",
        10 => "timeout",
        11 => "application",
        12 => "authentication_failed",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::metrics::EngineMetrics;
    use crate::session::TypeTally;

    #[test]
    fn every_type_has_its_series_and_counts_show() {
        let metrics = EngineMetrics::default();
        let mut tally = TypeTally::default();
        tally.add(MsgType::ForwardData, 3, 1272);
        metrics.traffic.add_types_in(&tally);
        metrics.record_rtt(Duration::from_micros(40));
        let text = prometheus_text(&metrics.snapshot(), &[]);
        assert!(text.contains("nnp_frames_received_total{type=\"forward_data\"} 3\n"));
        assert!(text.contains("nnp_received_bytes_total{type=\"forward_data\"} 1272\n"));
        assert!(text.contains("nnp_frames_sent_total{type=\"weight_sync\"} 0\n"));
        assert!(text.contains("nnp_errors_total{code=\"checksum_mismatch\"} 0\n"));
        assert!(text.contains("nnp_heartbeat_rtt_seconds_count 1\n"));
        assert!(text.contains("nnp_heartbeat_rtt_seconds{quantile=\"0.5\"} 0.0000400"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
