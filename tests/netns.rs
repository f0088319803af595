//! Across hosts: `nnp serve` in one Linux network namespace and `nnp bench` in another, joined
//! by a veth pair whose both ends are rate-limited to 100 Mbit/s with `tc ... tbf`, so the
//! traffic crosses a real (if virtual) link with its own addresses, not loopback. Checks that
//! every request is answered across the link, that the rate the link allowed is the rate seen
//! (the bytes went through the limiter), and prints the figures beside loopback's.
//!
//! A federated run puts its coordinator and each of its three worker processes on hosts of their
//! own: four namespaces, each joined by its own rate-limited veth pair to a bridge in a fifth
//! (the switch), and must learn as it does on loopback. A pipeline puts its driver and each of
//! its three stage processes on hosts of their own the same way, and must end with the weights
//! it reaches on loopback.
//!
//! Needs root and iproute2; ignored by default (`cargo test --release --test netns --
//! --ignored --nocapture`, which `.ci/run` runs). Where namespaces cannot be made it says why
//! and passes without running.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The link's rate, in bits per second.
const LINK_BITS: f64 = 100e6;

/// Runs `command`; an error with its words and stderr unless it succeeds.
fn run(mut command: Command) -> Result<(), String> {
    let words = format!("{command:?}");
    let out = command.output().map_err(|e| format!("{words}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{words}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<(), String> {
    let mut command = Command::new("ip");
    command.args(args);
    run(command)
}

fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<(), String> {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns, program]).args(args);
    run(command)
}

/// The `nnp` binary, run inside namespace `ns` if given.
fn nnp_in(ns: Option<&str>) -> Command {
    let nnp = env!("CARGO_BIN_EXE_nnp");
    match ns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns, nnp]);
            command
        }
        None => Command::new(nnp),
    }
}

/// Two namespaces joined by a rate-limited veth pair; removed on drop.
struct Link {
    server_ns: String,
    client_ns: String,
    server_ip: String,
}

impl Link {
    fn new() -> Result<Link, String> {
        // Unique per link: tests of one process run in parallel.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = (std::process::id() % 100_000) * 10 + NEXT.fetch_add(1, Ordering::Relaxed) % 10;
        let link = Link {
            server_ns: format!("nnp-srv-{id}"),
            client_ns: format!("nnp-cli-{id}"),
            server_ip: format!("10.77.{}.1", id % 250),
        };
        let client_ip = format!("10.77.{}.2", id % 250);
        let (veth_s, veth_c) = (format!("nnps{id}"), format!("nnpc{id}"));
        ip(&["netns", "add", &link.server_ns])?;
        ip(&["netns", "add", &link.client_ns])?;
        ip(&[
            "link",
            "add",
            &veth_s,
            "netns",
            &link.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &veth_c,
            "netns",
            &link.client_ns,
        ])?;
        for (ns, dev, addr) in [
            (&link.server_ns, &veth_s, &link.server_ip),
            (&link.client_ns, &veth_c, &client_ip),
        ] {
            in_ns(
                ns,
                "ip",
                &["addr", "add", &format!("{addr}/24"), "dev", dev],
            )?;
            in_ns(ns, "ip", &["link", "set", dev, "up"])?;
            in_ns(ns, "ip", &["link", "set", "lo", "up"])?;
            in_ns(
                ns,
                "tc",
                &[
                    "qdisc", "add", "dev", dev, "root", "tbf", "rate", "100mbit", "burst",
                    "32kbit", "latency", "50ms",
                ],
            )?;
        }
        Ok(link)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and so the pair.
        let _ = ip(&["netns", "del", &self.server_ns]);
        let _ = ip(&["netns", "del", &self.client_ns]);
    }
}

/// Hosts on one switch: each host a namespace whose veth pair leads to a bridge in the
/// switch's namespace, rate-limited to 100 Mbit/s both ways (on the host's end and on the
/// switch's port); removed on drop. Every host reaches every other through the bridge.
struct Lan {
    switch: String,
    hosts: Vec<String>,
    ips: Vec<String>,
}

impl Lan {
    fn new(count: usize) -> Result<Lan, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = (std::process::id() % 10_000) * 10 + NEXT.fetch_add(1, Ordering::Relaxed) % 10;
        let mut lan = Lan {
            switch: format!("nnp-sw-{id}"),
            hosts: Vec::new(),
            ips: Vec::new(),
        };
        ip(&["netns", "add", &lan.switch])?;
        in_ns(&lan.switch, "ip", &["link", "add", "br0", "type", "bridge"])?;
        in_ns(&lan.switch, "ip", &["link", "set", "br0", "up"])?;
        let limit = |ns: &str, dev: &str| {
            in_ns(
                ns,
                "tc",
                &[
                    "qdisc", "add", "dev", dev, "root", "tbf", "rate", "100mbit", "burst",
                    "32kbit", "latency", "50ms",
                ],
            )
        };
        for k in 0..count {
            let host = format!("nnp-h{k}-{id}");
            let addr = format!("10.78.{}.{}", id % 250, k + 1);
            let (inside, port) = (format!("nnph{k}x{id}"), format!("nnpp{k}x{id}"));
            ip(&["netns", "add", &host])?;
            lan.hosts.push(host.clone());
            ip(&[
                "link",
                "add",
                &inside,
                "netns",
                &host,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &lan.switch,
            ])?;
            in_ns(&lan.switch, "ip", &["link", "set", &port, "master", "br0"])?;
            in_ns(&lan.switch, "ip", &["link", "set", &port, "up"])?;
            limit(&lan.switch, &port)?;
            in_ns(
                &host,
                "ip",
                &["addr", "add", &format!("{addr}/24"), "dev", &inside],
            )?;
            in_ns(&host, "ip", &["link", "set", &inside, "up"])?;
            in_ns(&host, "ip", &["link", "set", "lo", "up"])?;
            limit(&host, &inside)?;
            lan.ips.push(addr);
        }
        Ok(lan)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain([&self.switch]) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A child process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `nnp serve` on `host` (inside `ns` if given); returns it and the address it printed.
fn serve(ns: Option<&str>, host: &str) -> (Running, String) {
    let mut command = nnp_in(ns);
    let mut child = command
        .args([
            "serve", "--host", host, "--port", "0", "--layers", "64,32,10",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (Running(child), addr)
}

/// `nnp bench WHAT --to addr --values 64 --json` (inside `ns` if given); its JSON report.
fn bench(ns: Option<&str>, what: &str, to: &str, count: &str) -> serde_json::Value {
    let mut command = nnp_in(ns);
    let out = command
        .args([
            "bench", what, "--to", to, "--values", "64", "--count", count, "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nnp bench {what} --to {to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
#[ignore = "needs root and iproute2: makes two network namespaces joined by a veth pair"]
fn a_node_serves_a_client_in_another_namespace_over_a_rate_limited_link() {
    let link = match Link::new() {
        Ok(link) => link,
        Err(why) => {
            eprintln!("SKIPPED: network namespaces cannot be made here ({why})");
            return;
        }
    };
    let (_server, addr) = serve(Some(&link.server_ns), &link.server_ip);
    assert!(addr.starts_with(&link.server_ip), "{addr}");

    let across = bench(Some(&link.client_ns), "throughput", &addr, "20000");
    assert_eq!(across["messages"], 20000, "{across}");
    let frame_bytes = across["frame_bytes"].as_f64().unwrap();
    let rate = across["messages_per_s"].as_f64().unwrap();
    let link_bytes = LINK_BITS / 8.0;
    // Every request was answered, at no more than the link carries: the bytes went through
    // the limiter, not around it.
    assert!(
        rate * frame_bytes <= link_bytes * 1.15,
        "{rate:.0} requests/s of {frame_bytes} bytes is more than a 100 Mbit/s link carries"
    );
    let rtt = bench(Some(&link.client_ns), "rtt", &addr, "2000");

    let (_local, local_addr) = serve(None, "127.0.0.1");
    let local = bench(None, "throughput", &local_addr, "20000");
    let local_rate = local["messages_per_s"].as_f64().unwrap();
    eprintln!(
        "across a 100 Mbit/s veth link: {rate:.0} requests/s answered ({:.1} Mbit/s of requests, {:.0}% of the link), rtt p50 {} us p99 {} us; on loopback {local_rate:.0} requests/s",
        rate * frame_bytes * 8.0 / 1e6,
        100.0 * rate * frame_bytes / link_bytes,
        rtt["rtt"]["p50_us"],
        rtt["rtt"]["p99_us"],
    );
}

/// `nnp federated` with its coordinator on the first host of `lan` and its three worker
/// processes (label-skewed shards) on the next three, or all on loopback without `lan`;
/// returns the coordinator's summary line.
fn federated_run(lan: Option<&Lan>) -> serde_json::Value {
    let listen = match lan {
        Some(lan) => format!("{}:0", lan.ips[0]),
        None => "127.0.0.1:0".to_owned(),
    };
    let host = |k: usize| lan.map(|l| l.hosts[k].as_str());
    let mut coordinator = nnp_in(host(0))
        .args(["--json", "federated", "coordinator", "--listen", &listen])
        .args(["--workers", "3", "--rounds", "12", "--deadline-ms", "20000"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(coordinator.stdout.take().unwrap()).lines();
    let mut running = vec![Running(coordinator)];
    let mut next = move || -> serde_json::Value {
        let line = lines.next().expect("the coordinator reports").unwrap();
        serde_json::from_str(&line).unwrap()
    };
    let addr = next()["addr"].as_str().unwrap().to_owned();
    for k in 1..=3 {
        let worker = nnp_in(host(k))
            .args(["federated", "worker", "--connect", &addr, "--noniid"])
            .args(["--shard", &format!("{k}/3")])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        running.push(Running(worker));
    }
    loop {
        let line = next();
        if line["event"] == "summary" {
            return line;
        }
    }
}

#[test]
#[ignore = "needs root and iproute2: makes five network namespaces joined by veth pairs"]
fn federated_learning_across_namespaces_learns_as_on_loopback() {
    let lan = match Lan::new(4) {
        Ok(lan) => lan,
        Err(why) => {
            eprintln!("SKIPPED: network namespaces cannot be made here ({why})");
            return;
        }
    };
    let across = federated_run(Some(&lan));
    let local = federated_run(None);
    let accuracy = |s: &serde_json::Value| s["accuracy"].as_f64().unwrap();
    for (name, summary) in [("across the link", &across), ("on loopback", &local)] {
        assert!(accuracy(summary) >= 0.95, "{name}: {summary}");
        assert_eq!(summary["rounds_with_left_out"], 0, "{name}: {summary}");
    }
    assert!(
        (accuracy(&across) - accuracy(&local)).abs() <= 0.02,
        "across {across}, loopback {local}"
    );
    // What the link needs for the bytes of a round, against what a round took.
    let bytes = across["bytes_out"].as_f64().unwrap() + across["bytes_in"].as_f64().unwrap();
    let per_round = bytes / across["rounds"].as_f64().unwrap();
    eprintln!(
        "federated, 3 workers, 12 rounds, each process on its own host: accuracy {:.3} across 100 Mbit/s links, {:.3} on loopback; a round p50 {:.1} ms across (the coordinator's link needs {:.2} ms for its {:.0} bytes, both ways), {:.1} ms on loopback",
        accuracy(&across),
        accuracy(&local),
        across["round_p50_ms"].as_f64().unwrap(),
        per_round * 8.0 / LINK_BITS * 1e3,
        per_round,
        local["round_p50_ms"].as_f64().unwrap(),
    );
}

/// `nnp pipeline` with its driver on the first host of `lan` and its three stage processes on
/// the next three (so every activation and gradient crosses two links), or all on loopback
/// without `lan`; returns the driver's summary line.
fn pipeline_run(lan: Option<&Lan>) -> serde_json::Value {
    let host = |k: usize| lan.map(|l| l.hosts[k].as_str());
    let mut running = Vec::new();
    let mut addrs = Vec::new();
    for (k, range) in [(1, "0..1"), (2, "1..2"), (3, "2..3")] {
        let ip = lan.map_or("127.0.0.1", |l| l.ips[k].as_str());
        let mut stage = nnp_in(host(k))
            .args([
                "--json",
                "pipeline",
                "stage",
                "--listen",
                &format!("{ip}:0"),
            ])
            .args(["--range", range])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(stage.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let listening: serde_json::Value = serde_json::from_str(&line).unwrap();
        addrs.push(listening["addr"].as_str().unwrap().to_owned());
        running.push(Running(stage));
    }
    let out = nnp_in(host(0))
        .args(["--json", "pipeline", "driver", "--stages", &addrs.join(",")])
        .args(["--epochs", "10", "--compare-local"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "nnp pipeline driver");
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
#[ignore = "needs root and iproute2: makes five network namespaces joined by veth pairs"]
fn a_pipeline_across_namespaces_trains_exactly_as_on_loopback() {
    let lan = match Lan::new(4) {
        Ok(lan) => lan,
        Err(why) => {
            eprintln!("SKIPPED: network namespaces cannot be made here ({why})");
            return;
        }
    };
    let across = pipeline_run(Some(&lan));
    let local = pipeline_run(None);
    for (name, summary) in [("across the link", &across), ("on loopback", &local)] {
        assert_eq!(summary["event"], "summary", "{name}: {summary}");
        assert_eq!(summary["max_abs_diff"], 0.0, "{name}: {summary}");
        assert_eq!(summary["stage_failures"], 0, "{name}: {summary}");
    }
    // The same steps on the same data from the same seed: the same weights, so the same
    // accuracy to the last digit.
    assert_eq!(
        across["accuracy"], local["accuracy"],
        "across {across}, loopback {local}"
    );
    let steps = across["steps"].as_f64().unwrap();
    // Everything goes through the driver's link, whose directions have limiters of their
    // own: the busier one bounds a step.
    let bytes = across["bytes_out"]
        .as_f64()
        .unwrap()
        .max(across["bytes_in"].as_f64().unwrap());
    eprintln!(
        "pipeline, 3 stages, {steps} steps: accuracy {:.3} on both; a step p50 {:.2} ms across a 100 Mbit/s link (the driver's link needs {:.2} ms for the {:.0} bytes of its busier direction), {:.2} ms on loopback; {:.0} samples/s across, {:.0} on loopback",
        across["accuracy"].as_f64().unwrap(),
        across["step_p50_ms"].as_f64().unwrap(),
        bytes / steps * 8.0 / LINK_BITS * 1e3,
        bytes / steps,
        local["step_p50_ms"].as_f64().unwrap(),
        across["samples_per_s"].as_f64().unwrap(),
        local["samples_per_s"].as_f64().unwrap(),
    );
}
